"""Training end to end: compiled fit/evaluate/predict, History semantics, gradients, errors."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import kgraph as keras
from kgraph import layers, ops
from kgraph.compiler.autodiff import gradients
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.runtime.reference import evaluate


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    return train_test_split(x, data.target.astype("int32"), test_size=0.25, random_state=0, stratify=data.target)


@pytest.fixture(scope="module")
def trained_digits_mlp(digits):
    x_train, x_test, y_train, y_test = digits
    model = keras.Sequential([keras.Input((64,)), layers.Dense(64, activation="relu"), layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=32, epochs=25, validation_split=0.1, verbose=0)
    return model, history


def test_digits_mlp_reaches_95_percent(trained_digits_mlp, digits):
    model, history = trained_digits_mlp
    _, x_test, _, y_test = digits
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.95
    predicted = model.predict(x_test, verbose=0).argmax(-1)
    assert np.mean(predicted == y_test) == pytest.approx(accuracy, abs=1e-6)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 25
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_evaluate_matches_numpy_loss_and_accuracy(trained_digits_mlp, digits):
    model, _ = trained_digits_mlp
    _, x_test, _, y_test = digits
    (kernel1, bias1), (kernel2, bias2) = (layer.get_weights() for layer in model.layers)
    logits = np.maximum(x_test @ kernel1 + bias1, 0) @ kernel2 + bias2
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    loss = -log_probs[np.arange(len(y_test)), y_test].mean()
    accuracy = np.mean(logits.argmax(-1) == y_test)
    got = model.evaluate(x_test, y_test, batch_size=50, verbose=0, return_dict=True)
    assert got["loss"] == pytest.approx(loss, rel=1e-4)
    assert got["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    np.testing.assert_allclose(model.predict(x_test[:7], verbose=0), logits[:7], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model(x_test[:7]), logits[:7], rtol=1e-4, atol=1e-4)


def test_history_loss_is_batch_size_weighted_running_mean():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 5)).astype("float32")
    y = rng.standard_normal((70, 2)).astype("float32")

    def make():
        model = keras.Sequential([keras.Input((5,)), layers.Dense(2, kernel_initializer="ones")])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
        return model

    fitted = make()
    history = fitted.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    stepped = make()
    losses, maes, sizes = [], [], []
    for start in range(0, 70, 32):
        xb, yb = x[start:start + 32], y[start:start + 32]
        prediction = stepped.predict(xb, verbose=0)
        losses.append(np.mean((prediction - yb) ** 2))
        maes.append(np.mean(np.abs(prediction - yb)))
        sizes.append(len(xb))
        stepped.train_on_batch(xb, yb)
    assert history.history["loss"][0] == pytest.approx(np.average(losses, weights=sizes), rel=1e-5)
    assert history.history["mae"][0] == pytest.approx(np.average(maes, weights=sizes), rel=1e-5)
    for a, b in zip(fitted.get_weights(), stepped.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _mlp_loss_graph(dtype):
    model = keras.Sequential([
        keras.Input((6,), dtype=dtype),
        layers.Dense(5, activation="tanh", dtype=dtype, kernel_regularizer=keras.regularizers.L2(0.01)),
        layers.Dense(3, dtype=dtype),
    ])
    graph = Graph("mlp_loss")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 6), dtype, "x").id)
        y = SymbolicTensor(graph, graph.add_placeholder((None,), "int32", "y").id)
        logits = model(x, training=True)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)(y, logits)
        for penalty in model.losses:
            loss = ops.add(loss, penalty)
    graph.outputs = [loss.node_id]
    variables = model.trainable_weights
    grads = gradients(graph, loss.node_id, [graph.variable_node(v).id for v in variables])
    graph.outputs += grads
    return model, graph, variables


def test_whole_model_gradient_matches_finite_differences():
    model, graph, variables = _mlp_loss_graph("float64")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6))
    y = rng.integers(0, 3, 4).astype("int32")
    outputs, _ = evaluate(graph, [x, y])
    analytic = outputs[1:]
    eps = 1e-6
    for variable, grad in zip(variables, analytic):
        base = variable.numpy()
        numeric = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[index] += eps
            minus[index] -= eps
            f_plus = evaluate(graph, [x, y], {variable: plus})[0][0]
            f_minus = evaluate(graph, [x, y], {variable: minus})[0][0]
            numeric[index] = (f_plus - f_minus) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_compiled_model_gradient_matches_reference():
    model, graph, variables = _mlp_loss_graph("float32")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9, 6)).astype("float32")
    y = rng.integers(0, 3, 9).astype("int32")
    expected, _ = evaluate(graph, [x, y])
    got = compile_graph(graph)(x, y)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_functional_multi_output_training_with_loss_weights():
    rng = np.random.default_rng(7)
    inputs = keras.Input((4,), name="features")
    hidden = layers.Dense(8, activation="relu")(inputs)
    out_a = layers.Dense(1, name="a")(hidden)
    out_b = layers.Dense(3, name="b")(hidden)
    model = keras.Model(inputs, [out_a, out_b])
    model.compile(optimizer="adam", loss=["mse", keras.losses.SparseCategoricalCrossentropy(from_logits=True)],
                  loss_weights=[1.0, 0.5], metrics=[[], ["accuracy"]])
    x = rng.standard_normal((64, 4)).astype("float32")
    ya = x.sum(-1, keepdims=True)
    yb = (x[:, 0] > 0).astype("int32")
    history = model.fit(x, [ya, yb], epochs=5, batch_size=16, verbose=0)
    assert "b_accuracy" in history.history
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_fit_errors_are_clear():
    model = keras.Sequential([keras.Input((4,)), layers.Dense(2, name="head")])
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((2, 4)), np.zeros((2, 2)))
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="cardinality|same number of samples"):
        model.fit(np.zeros((5, 4)), np.zeros((4, 2)), verbose=0)
    with pytest.raises(ValueError, match=r"\(None, 4\).*\(None, 3\)|axis -1"):
        model.fit(np.zeros((5, 3)), np.zeros((5, 2)), verbose=0)
    with pytest.raises(ValueError, match="no_such_loss"):
        model.compile(optimizer="sgd", loss="no_such_loss")
    with pytest.raises(ValueError, match="no_such_optimizer"):
        model.compile(optimizer="no_such_optimizer", loss="mse")
    with pytest.raises(ValueError, match="no_such_metric"):
        model.compile(optimizer="sgd", loss="mse", metrics=["no_such_metric"])
        model.fit(np.zeros((2, 4)), np.zeros((2, 2)), verbose=0)


def test_verbose_progress_output(capsys):
    model = keras.Sequential([keras.Input((3,)), layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x, y = np.ones((10, 3), "float32"), np.ones((10, 1), "float32")
    model.fit(x, y, epochs=2, batch_size=4, verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert lines[1].startswith("3/3 - ") and "loss: " in lines[1] and "mae: " in lines[1]
    model.fit(x, y, epochs=1, batch_size=4, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/1" in out and "3/3" in out and "━" in out
