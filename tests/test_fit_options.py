"""fit/evaluate options: sample and class weights, weighted metrics, multi-output dict losses and
their History names, steps_per_execution, and the data inputs (Dataset, PyDataset, generators)."""

import numpy as np
import pytest

import kgraph as keras
from kgraph import callbacks, layers


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((45, 3)).astype("float32")
    y = rng.standard_normal((45, 2)).astype("float32")
    w = rng.uniform(0.0, 2.0, 45).astype("float32")
    return x, y, w


def linear_model(lr=0.05, **compile_kwargs):
    model = keras.Sequential([keras.Input((3,)), layers.Dense(2, kernel_initializer="glorot_uniform", name="head")])
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse", **compile_kwargs)
    return model


@pytest.fixture(scope="module")
def weighted_model():
    keras.utils.set_random_seed(1)
    return linear_model(metrics=["mae"], weighted_metrics=["mae", "mse"])


def test_evaluate_sample_weight_matches_numpy(weighted_model, regression):
    x, y, w = regression
    model = weighted_model
    kernel, bias = model.get_weights()
    error = x @ kernel + bias - y
    per_sample_mse = (error ** 2).mean(-1)
    per_sample_mae = np.abs(error).mean(-1)
    # "sum_over_batch_size": sum(w * loss) / number of samples, batch by batch, and the loss tracker
    # weights each batch by its size, so the epoch loss is mean(w * loss) over all samples.
    logs = model.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "mae", "weighted_mae", "mse"}
    assert logs["loss"] == pytest.approx(np.mean(w * per_sample_mse), rel=1e-5)
    assert logs["mae"] == pytest.approx(per_sample_mae.mean(), rel=1e-5)
    assert logs["weighted_mae"] == pytest.approx(np.sum(w * per_sample_mae) / w.sum(), rel=1e-5)
    assert logs["mse"] == pytest.approx(np.sum(w * per_sample_mse) / w.sum(), rel=1e-5)
    # one batch: the same formulas; and without weights the weighted metrics are plain means
    got = model.test_on_batch(x[:10], y[:10], sample_weight=w[:10], return_dict=True)
    assert got["loss"] == pytest.approx(np.mean(w[:10] * per_sample_mse[:10]), rel=1e-5)
    plain = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert plain["loss"] == pytest.approx(per_sample_mse.mean(), rel=1e-5)
    assert plain["weighted_mae"] == pytest.approx(per_sample_mae.mean(), rel=1e-5)


def test_keras_agrees_on_weighted_evaluate(weighted_model, regression):
    """Optional second oracle: Keras 3 itself (skipped when it is not installed)."""
    keras_real = pytest.importorskip("keras")
    x, y, w = regression
    reference = keras_real.Sequential([keras_real.Input((3,)), keras_real.layers.Dense(2)])
    reference.compile(optimizer="sgd", loss="mse", metrics=["mae"], weighted_metrics=["mae", "mse"])
    reference.set_weights(weighted_model.get_weights())
    expected = reference.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0, return_dict=True)
    got = weighted_model.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0, return_dict=True)
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(float(expected[key]), rel=1e-5)


def test_class_weight_scales_each_sample_in_the_sgd_step():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((24, 4)).astype("float32")
    labels = rng.integers(0, 3, 24).astype("int32")
    class_weight = {0: 0.5, 1: 2.0, 2: 1.0}
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kernel, bias = (v.astype(np.float64) for v in model.get_weights())
    history = model.fit(x, labels, batch_size=24, epochs=1, shuffle=False, verbose=0, class_weight=class_weight)
    # numpy oracle: weighted softmax crossentropy over the batch, divided by the batch size
    weights = np.array([class_weight[int(c)] for c in labels])
    logits = x.astype(np.float64) @ kernel + bias
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    onehot = np.eye(3)[labels]
    loss = np.mean(weights * -np.log(probs[np.arange(24), labels]))
    dlogits = weights[:, None] * (probs - onehot) / 24
    assert history.history["loss"][0] == pytest.approx(loss, rel=1e-5)
    new_kernel, new_bias = model.get_weights()
    np.testing.assert_allclose(new_kernel, kernel - 0.1 * x.T.astype(np.float64) @ dlogits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_bias, bias - 0.1 * dlogits.sum(0), rtol=1e-5, atol=1e-6)
    # one-hot targets: the class is the argmax
    again = keras.Sequential([keras.Input((4,)), layers.Dense(3)])
    again.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    again.set_weights([kernel.astype("float32"), bias.astype("float32")])
    history = again.fit(x, onehot.astype("float32"), batch_size=24, shuffle=False, verbose=0,
                        class_weight=class_weight)
    assert history.history["loss"][0] == pytest.approx(loss, rel=1e-5)


def test_weight_errors_are_keras_errors(regression):
    x, y, w = regression
    model = linear_model()
    with pytest.raises(ValueError, match="class_weight.*sample_weight.*same time"):
        model.fit(x, y, sample_weight=w, class_weight={0: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="class_weight must be a dict"):
        model.fit(x, y, class_weight=[1.0, 2.0], verbose=0)
    with pytest.raises(ValueError, match="cardinality"):
        model.fit(x, y, sample_weight=w[:10], verbose=0)
    with pytest.raises(ValueError, match="steps_per_execution"):
        model.compile(optimizer="sgd", loss="mse", steps_per_execution=0)


# -- multi-output -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_headed():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((4,), name="features")
    hidden = layers.Dense(8, activation="tanh", name="hidden")(inputs)
    out_a = layers.Dense(1, name="out_a")(hidden)
    out_b = layers.Dense(3, name="out_b")(hidden)
    model = keras.Model(inputs, {"out_a": out_a, "out_b": out_b})
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss={"out_a": "mse", "out_b": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
                  loss_weights={"out_a": 1.0, "out_b": 0.5},
                  metrics={"out_a": ["mae"], "out_b": ["accuracy"]}, weighted_metrics={"out_b": ["accuracy"]})
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 4)).astype("float32")
    targets = {"out_a": x.sum(-1, keepdims=True), "out_b": (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1)}
    return model, x, targets


def test_multi_output_dict_losses_and_history_names(two_headed):
    model, x, targets = two_headed
    weights = {"out_a": np.linspace(0.0, 1.0, 40).astype("float32"), "out_b": np.ones(40, "float32")}
    history = model.fit(x, targets, sample_weight=weights, epochs=4, batch_size=10, verbose=0)
    # the names Keras 3.15 gives (checked against Keras with the same compile arguments)
    assert set(history.history) == {"loss", "out_a_loss", "out_a_mae", "out_b_accuracy", "out_b_loss",
                                    "out_b_weighted_accuracy"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    predictions = model.predict(x, verbose=0)
    error_a = (predictions["out_a"] - targets["out_a"])[:, 0]
    logits = predictions["out_b"].astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    ce = -(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))[np.arange(40), targets["out_b"]]
    w_a = weights["out_a"]
    logs = model.evaluate(x, targets, sample_weight=weights, batch_size=40, verbose=0, return_dict=True)
    assert logs["out_a_loss"] == pytest.approx(np.mean(w_a * error_a ** 2), rel=1e-4)
    assert logs["out_b_loss"] == pytest.approx(np.mean(ce), rel=1e-4)
    assert logs["loss"] == pytest.approx(np.mean(w_a * error_a ** 2) + 0.5 * np.mean(ce), rel=1e-4)
    assert logs["out_a_mae"] == pytest.approx(np.mean(np.abs(error_a)), rel=1e-4)
    # one samplewise array applies to both outputs; a non-samplewise one is refused
    same = model.evaluate(x, targets, sample_weight=w_a, batch_size=40, verbose=0, return_dict=True)
    assert same["out_b_loss"] == pytest.approx(np.mean(w_a * ce), rel=1e-4)
    with pytest.raises(ValueError, match="one scalar score per sample"):
        model.evaluate(x, targets, sample_weight=np.ones((40, 2)), verbose=0)
    with pytest.raises(ValueError, match="only supported for Models with a single output"):
        model.fit(x, targets, class_weight={0: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="match no output"):
        model.evaluate(x, targets, sample_weight={"nope": w_a}, verbose=0)


# -- steps_per_execution ---------------------------------------------------------------------------------
def test_steps_per_execution_same_weights_and_hook_counts(regression):
    x, y, _ = regression

    class Counter(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.begins, self.ends = [], []

        def on_train_batch_begin(self, batch, logs=None):
            self.begins.append(batch)

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(batch)

    results = {}
    for per_execution in (1, 3):
        keras.utils.set_random_seed(7)
        model = linear_model(steps_per_execution=per_execution)
        counter = Counter()
        model.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0, callbacks=[counter])
        results[per_execution] = (model.get_weights(), counter)
    for a, b in zip(results[1][0], results[3][0]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # 9 batches per epoch: one hook call per execution of 3 steps
    assert results[3][1].begins == [0, 3, 6] * 2 and results[3][1].ends == [2, 5, 8] * 2
    assert results[1][1].ends == list(range(9)) * 2


# -- data inputs -----------------------------------------------------------------------------------------
class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, y, batch_size
        self.epochs_ended = 0

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]

    def on_epoch_end(self):
        self.epochs_ended += 1


def _fit_weights(x, seed=11, **kwargs):
    keras.utils.set_random_seed(seed)
    model = linear_model()
    history = model.fit(x, epochs=2, verbose=0, **kwargs)
    return model, history


def test_dataset_pydataset_and_generator_train_like_arrays(regression):
    x, y, _ = regression
    reference, _ = _fit_weights(x, y=y, batch_size=10, shuffle=False)
    expected = reference.get_weights()
    dataset = keras.data.Dataset.from_tensor_slices((x, y)).batch(10)
    batches = Batches(x, y, 10, workers=3, max_queue_size=2)

    def generator():
        while True:
            for start in range(0, 45, 10):
                yield x[start:start + 10], y[start:start + 10]

    sources = {"dataset": (dataset, {}), "pydataset": (batches, {"shuffle": False}),
               "generator": (generator(), {"steps_per_epoch": 5})}
    for name, (source, kwargs) in sources.items():
        model, history = _fit_weights(source, **kwargs)
        assert len(history.history["loss"]) == 2, name
        for a, b in zip(model.get_weights(), expected):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)
        # one compiled step serves the full batches and the last partial one (batch dim None)
        assert len(model._compiled_functions) == 1, name
    assert batches.epochs_ended == 2
    np.testing.assert_allclose(reference.predict(dataset, verbose=0), reference.predict(x, verbose=0), rtol=1e-6)
    assert reference.evaluate(batches, verbose=0) == pytest.approx(reference.evaluate(x, y, verbose=0), rel=1e-6)


def test_steps_per_epoch_continues_through_the_arrays(regression):
    x, y, _ = regression
    keras.utils.set_random_seed(12)
    continued = linear_model()
    continued.fit(x[:40], y[:40], batch_size=10, epochs=3, steps_per_epoch=3, shuffle=False, verbose=0)
    keras.utils.set_random_seed(12)
    stepped = linear_model()
    for index in [0, 1, 2, 3, 0, 1, 2, 3, 0]:  # 4 batches per pass; epochs of 3 steps run on
        stepped.train_on_batch(x[index * 10:index * 10 + 10], y[index * 10:index * 10 + 10])
    for a, b in zip(continued.get_weights(), stepped.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_validation_inputs_and_freq(regression):
    x, y, w = regression
    model = linear_model()
    val = keras.data.Dataset.from_tensor_slices((x[:20], y[:20], w[:20])).batch(8)
    history = model.fit(x, y, epochs=4, verbose=0, validation_data=val, validation_freq=2)
    assert len(history.history["loss"]) == 4 and len(history.history["val_loss"]) == 2
    expected = model.evaluate(x[:20], y[:20], sample_weight=w[:20], verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(expected, rel=1e-5)
    history = model.fit(x, y, epochs=2, verbose=0, validation_data=(x[:20], y[:20]), validation_freq=[2])
    assert len(history.history["val_loss"]) == 1
    history = model.fit(x, y, epochs=1, verbose=0, validation_data=Batches(x, y, 9), validation_steps=2)
    predicted = model.predict(x[:18], verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(np.mean((predicted - y[:18]) ** 2), rel=1e-5)


def test_dict_inputs_by_name_and_data_errors(regression):
    x, y, _ = regression
    left, right = keras.Input((2,), name="left"), keras.Input((1,), name="right")
    merged = layers.Concatenate()([left, right])
    model = keras.Model([left, right], layers.Dense(2, name="out")(merged))
    model.compile(optimizer="sgd", loss="mse")
    as_dict = model.evaluate({"right": x[:, 2:], "left": x[:, :2]}, y, verbose=0)
    as_list = model.evaluate([x[:, :2], x[:, 2:]], y, verbose=0)
    assert as_dict == pytest.approx(as_list, rel=1e-6)
    dataset = keras.data.Dataset.from_tensor_slices(({"left": x[:, :2], "right": x[:, 2:]}, y)).batch(16)
    assert model.evaluate(dataset, verbose=0) == pytest.approx(as_list, rel=1e-6)
    with pytest.raises(ValueError, match="missing data for \\['right'\\]"):
        model.evaluate({"left": x[:, :2]}, y, verbose=0)
    with pytest.raises(ValueError, match="`y` argument is not supported"):
        model.fit(dataset, y, verbose=0)
    with pytest.raises(ValueError, match="class_weight.*generator"):
        model.fit((b for b in [(x, y)]), class_weight={0: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="validation_split.*arrays"):
        model.fit(dataset, validation_split=0.2, verbose=0)


def test_generator_that_runs_out_stops_training(regression):
    x, y, _ = regression
    model = linear_model()
    batches = ((x[i:i + 9], y[i:i + 9]) for i in range(0, 45, 9))  # 5 batches in all
    with pytest.warns(UserWarning, match="ran out of data"):
        history = model.fit(batches, epochs=4, steps_per_epoch=2, verbose=0)
    assert len(history.history["loss"]) == 3  # 2 + 2 + 1 batches, then it stops


def test_add_loss_only_model_trains_without_targets():
    from kgraph import ops

    class LogisticEndpoint(keras.layers.Layer):
        def call(self, targets, logits):
            self.add_loss(keras.losses.BinaryCrossentropy(from_logits=True)(targets, logits))
            return ops.sigmoid(logits)

    inputs, targets = keras.Input((3,), name="inputs"), keras.Input((4,), name="targets")
    logits = layers.Dense(4, name="logits")(inputs)
    model = keras.Model([inputs, targets], LogisticEndpoint(name="endpoint")(targets, logits))
    model.compile(optimizer=keras.optimizers.SGD(0.1))  # no loss: add_loss terms only
    rng = np.random.default_rng(9)
    data = {"inputs": rng.standard_normal((12, 3)).astype("float32"),
            "targets": (rng.random((12, 4)) > 0.5).astype("float32")}
    kernel, bias = model.get_weights()
    z = data["inputs"] @ kernel + bias
    t = data["targets"]
    expected = np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))
    assert model.evaluate(data, batch_size=12, verbose=0) == pytest.approx(expected, rel=1e-5)
    history = model.fit(data, batch_size=12, epochs=3, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert history.history["loss"][2] < history.history["loss"][0]
    plain = keras.Sequential([keras.Input((3,)), layers.Dense(1)])
    plain.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="no loss to compute"):
        plain.fit(data["inputs"], verbose=0)
