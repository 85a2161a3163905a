"""The examples of Keras's 'Training & evaluation with the built-in methods' guide, run under
`import kgraph as keras` on scikit-learn's digits (MNIST's stand-in: no downloads). Each
checks what the guide shows (the logs and their names, what a callback wrote) against a
numpy computation where there is one."""

from __future__ import annotations

import os

import numpy as np
import pytest

import kgraph as keras
from kgraph import layers, ops


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    return x[:1500], y[:1500], x[1500:], y[1500:]


def get_uncompiled_model():
    inputs = keras.Input(shape=(64,), name="digits")
    x = layers.Dense(32, activation="relu", name="dense_1")(inputs)
    x = layers.Dense(32, activation="relu", name="dense_2")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def get_compiled_model(optimizer=None):
    model = get_uncompiled_model()
    model.compile(optimizer=optimizer or keras.optimizers.RMSprop(learning_rate=1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    return model


@pytest.fixture(scope="module")
def trained(digits):
    x_train, y_train, x_test, y_test = digits
    model = get_compiled_model(keras.optimizers.RMSprop(learning_rate=3e-3))
    history = model.fit(x_train, y_train, batch_size=64, epochs=5, verbose=0,
                        validation_data=(x_test, y_test))
    return model, history


def test_fit_evaluate_predict_end_to_end(digits, trained):
    _, _, x_test, y_test = digits
    model, history = trained
    assert sorted(history.history) == ["loss", "sparse_categorical_accuracy", "val_loss",
                                       "val_sparse_categorical_accuracy"]
    assert history.history["loss"][-1] < history.history["loss"][0]
    results = model.evaluate(x_test, y_test, batch_size=128, verbose=0)
    probabilities = model.predict(x_test, verbose=0).astype("float64")
    loss = -np.mean(np.log(probabilities[np.arange(len(y_test)), y_test]))
    accuracy = np.mean(probabilities.argmax(axis=1) == y_test)
    np.testing.assert_allclose(results, [loss, accuracy], rtol=1e-4)
    assert accuracy > 0.8


def test_custom_loss_function_and_loss_class(digits):
    x_train, y_train, _, _ = digits
    y_onehot = np.eye(10, dtype="float32")[y_train]

    def custom_mean_squared_error(y_true, y_pred):
        return ops.mean(ops.square(y_true - y_pred), axis=-1)

    class CustomMSE(keras.losses.Loss):
        def __init__(self, regularization_factor=0.1, name="custom_mse"):
            super().__init__(name=name)
            self.regularization_factor = regularization_factor

        def call(self, y_true, y_pred):
            mse = ops.mean(ops.square(y_true - y_pred), axis=-1)
            reg = ops.mean(ops.square(0.5 - y_pred), axis=-1)
            return mse + reg * self.regularization_factor

    x, y = x_train[:256], y_onehot[:256]
    for loss, extra in ((custom_mean_squared_error, 0.0), (CustomMSE(), 0.1)):
        model = get_uncompiled_model()
        model.compile(optimizer="adam", loss=loss)
        p = model.predict(x, verbose=0).astype("float64")
        expected = np.mean(np.mean((y - p) ** 2, axis=-1) + extra * np.mean((0.5 - p) ** 2, axis=-1))
        np.testing.assert_allclose(model.evaluate(x, y, batch_size=256, verbose=0), expected, rtol=1e-5)
        history = model.fit(x, y, batch_size=64, epochs=2, verbose=0)
        assert history.history["loss"][1] < history.history["loss"][0]


class CategoricalTruePositives(keras.metrics.Metric):
    def __init__(self, name="categorical_true_positives", **kwargs):
        super().__init__(name=name, **kwargs)
        self.true_positives = self.add_variable(shape=(), name="ctp", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.reshape(ops.argmax(y_pred, axis=1), (-1, 1))
        values = ops.cast(y_true, "int32") == ops.cast(y_pred, "int32")
        values = ops.cast(values, "float32")
        if sample_weight is not None:
            values = ops.multiply(values, ops.cast(sample_weight, "float32"))
        self.true_positives.assign_add(ops.sum(values))

    def result(self):
        return self.true_positives.value

    def reset_state(self):
        self.true_positives.assign(0.0)


def test_custom_metric_counts_true_positives(digits):
    x_train, y_train, _, _ = digits
    model = get_uncompiled_model()
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=[CategoricalTruePositives()])
    x, y = x_train[:300], y_train[:300].reshape(-1, 1)
    logs = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    assert logs["categorical_true_positives"] == np.sum(predicted == y[:, 0])
    history = model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert "categorical_true_positives" in history.history


def test_add_loss_from_a_layer_and_an_endpoint_layer(digits):
    x_train, y_train, _, _ = digits

    class ActivityRegularizationLayer(layers.Layer):
        def call(self, inputs):
            self.add_loss(ops.sum(inputs) * 0.1)
            return inputs

    inputs = keras.Input(shape=(64,), name="digits")
    x = layers.Dense(32, activation="relu", name="dense_1")(inputs)
    x = ActivityRegularizationLayer()(x)
    outputs = layers.Dense(10, name="predictions")(x)
    model = keras.Model(inputs=inputs, outputs=outputs)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = x_train[:128], y_train[:128]
    kernel, bias = (np.asarray(v, "float64") for v in model.get_layer("dense_1").weights)
    hidden = np.maximum(x @ kernel + bias, 0)
    logits = model.predict(x, verbose=0).astype("float64")
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -np.mean(log_probs[np.arange(128), y]) + 0.1 * hidden.sum()
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=128, verbose=0), expected, rtol=1e-4)

    class LogisticEndpoint(layers.Layer):
        def __init__(self, name=None):
            super().__init__(name=name)
            self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

        def call(self, targets, logits, sample_weights=None):
            self.add_loss(self.loss_fn(targets, logits, sample_weights))
            return ops.softmax(logits)

    inputs = keras.Input(shape=(3,), name="inputs")
    targets = keras.Input(shape=(10,), name="targets")
    logits = layers.Dense(10)(inputs)
    predictions = LogisticEndpoint(name="predictions")(targets, logits)
    model = keras.Model(inputs=[inputs, targets], outputs=predictions)
    model.compile(optimizer="adam")  # no loss argument: the endpoint's add_loss is the loss
    rng = np.random.default_rng(0)
    data = {"inputs": rng.random((32, 3)).astype("float32"),
            "targets": rng.random((32, 10)).astype("float32")}
    history = model.fit(data, epochs=3, batch_size=32, verbose=0)
    assert history.history["loss"][2] < history.history["loss"][0]


def test_validation_split_holds_out_the_last_samples(digits):
    x_train, y_train, _, _ = digits
    model = get_compiled_model(keras.optimizers.SGD(0.0))  # weights fixed: logs comparable
    x, y = x_train[:200], y_train[:200]
    history = model.fit(x, y, batch_size=50, validation_split=0.2, epochs=1, verbose=0)
    held_out = model.evaluate(x[160:], y[160:], batch_size=40, verbose=0, return_dict=True)
    np.testing.assert_allclose(history.history["val_loss"][0], held_out["loss"], rtol=1e-5)


def test_pydataset_feeds_fit_and_evaluate(digits):
    x_train, y_train, x_test, y_test = digits

    class ExamplePyDataset(keras.utils.PyDataset):
        def __init__(self, x, y, batch_size, **kwargs):
            super().__init__(**kwargs)
            self.x, self.y, self.batch_size = x, y, batch_size

        def __len__(self):
            return int(np.ceil(len(self.x) / float(self.batch_size)))

        def __getitem__(self, idx):
            batch = slice(idx * self.batch_size, (idx + 1) * self.batch_size)
            return self.x[batch], self.y[batch]

    model = get_compiled_model(keras.optimizers.SGD(0.0))
    logs = model.evaluate(ExamplePyDataset(x_test, y_test, batch_size=64), verbose=0, return_dict=True)
    arrays = model.evaluate(x_test, y_test, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose([logs[k] for k in sorted(logs)], [arrays[k] for k in sorted(arrays)], rtol=1e-5)
    trained = get_compiled_model()
    history = trained.fit(ExamplePyDataset(x_train, y_train, batch_size=64), epochs=2, verbose=0,
                          validation_data=ExamplePyDataset(x_test, y_test, batch_size=64))
    assert history.history["loss"][1] < history.history["loss"][0]
    assert "val_loss" in history.history


def test_class_weight_and_sample_weight_are_the_same_weighting(digits):
    """The guide's class_weight (class 5 weighs 2) equals passing the per-sample weights."""
    x_train, y_train, _, _ = digits
    x, y = x_train[:256], y_train[:256]
    class_weight = {i: 1.0 for i in range(10)}
    class_weight[5] = 2.0
    sample_weight = np.where(y == 5, 2.0, 1.0).astype("float32")
    start = None
    results = []
    for kwargs in ({"class_weight": class_weight}, {"sample_weight": sample_weight}):
        model = get_compiled_model(keras.optimizers.SGD(0.1))
        start = start or model.get_weights()
        model.set_weights(start)
        history = model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0, **kwargs)
        results.append((history.history["loss"], model.get_weights()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_callbacks_early_stopping_checkpoint_custom_and_tensorboard(digits, tmp_path):
    x_train, y_train, x_test, y_test = digits

    class LossHistory(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.per_batch_losses = []

        def on_batch_end(self, batch, logs=None):
            self.per_batch_losses.append(logs.get("loss"))

    keras.utils.set_random_seed(11)
    model = get_compiled_model(keras.optimizers.RMSprop(learning_rate=1e-2))
    loss_history = LossHistory()
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=5e-2, patience=1, verbose=0),
        keras.callbacks.ModelCheckpoint(filepath=str(tmp_path / "mymodel_{epoch}.keras"),
                                        save_best_only=True, monitor="val_loss", verbose=0),
        keras.callbacks.TensorBoard(log_dir=str(tmp_path / "logs"), histogram_freq=0, update_freq="epoch"),
        loss_history,
    ]
    history = model.fit(x_train[:512], y_train[:512], epochs=30, batch_size=64, callbacks=callbacks,
                        validation_data=(x_test, y_test), verbose=0)
    epochs = len(history.history["loss"])
    assert epochs < 30  # stopped early: val_loss stopped improving by 5e-2
    assert len(loss_history.per_batch_losses) == epochs * 8
    saved = sorted(os.listdir(tmp_path), key=lambda n: (len(n), n))
    assert "mymodel_1.keras" in saved
    best_epoch = int(np.argmin(history.history["val_loss"])) + 1
    assert f"mymodel_{best_epoch}.keras" in saved
    reloaded = keras.models.load_model(str(tmp_path / f"mymodel_{best_epoch}.keras"))
    np.testing.assert_allclose(reloaded.evaluate(x_test, y_test, verbose=0)[0],
                               min(history.history["val_loss"]), rtol=1e-5)
    assert any(name.startswith("events") for _, _, files in os.walk(tmp_path / "logs") for name in files)


def test_learning_rate_schedule_decays_in_the_optimizer(digits):
    x_train, y_train, _, _ = digits
    schedule = keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate=0.1, decay_steps=4, decay_rate=0.5, staircase=True)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    model = get_compiled_model(optimizer)
    model.fit(x_train[:256], y_train[:256], batch_size=32, epochs=1, verbose=0)
    assert int(np.asarray(optimizer.iterations)) == 8
    np.testing.assert_allclose(float(np.asarray(schedule(8))), 0.1 * 0.5 ** 2, rtol=1e-6)


def test_per_class_metric_values_are_arrays_in_the_logs(digits, capsys, tmp_path):
    """F1Score(average=None) gives one value per class: History and evaluate hold the array
    (sklearn's per-class F1 over the same predictions), the progress bar prints its mean,
    and TensorBoard leaves it out."""
    from sklearn.metrics import f1_score

    x_train, y_train, _, _ = digits
    x, y = x_train[:192], np.eye(10, dtype="float32")[y_train[:192]]
    model = get_uncompiled_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="categorical_crossentropy",
                  metrics=[keras.metrics.F1Score(threshold=0.1)])
    history = model.fit(x, y, batch_size=64, epochs=1, verbose=1,
                        callbacks=[keras.callbacks.TensorBoard(log_dir=str(tmp_path))])
    assert "f1_score" in capsys.readouterr().out
    per_class = history.history["f1_score"][0]
    assert np.shape(per_class) == (10,)
    predicted = (model.predict(x, verbose=0) > 0.1).astype(int)
    np.testing.assert_allclose(per_class, f1_score(y.astype(int), predicted, average=None, zero_division=0),
                               rtol=1e-4, atol=1e-6)
    logs = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["f1_score"], per_class, rtol=1e-5)
