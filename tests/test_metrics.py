"""Metrics against numpy references (with sample weights, over several updates), Keras's documented
values, compile()'s accuracy resolution, configs, and traced (graph) updates."""

import numpy as np
import pytest

from kgraph import losses, metrics
from kgraph.ir import Graph, SymbolicTensor, Variable, tracing
from kgraph.runtime.reference import evaluate

RNG = np.random.default_rng(0)


def _batches(n=3, batch=6, classes=4):
    out = []
    for _ in range(n):
        labels = RNG.integers(0, classes, batch)
        logits = RNG.standard_normal((batch, classes)).astype("float32")
        sw = RNG.uniform(0.0, 2.0, batch).astype("float32")
        out.append((labels, logits, sw))
    return out


def _weighted_mean(values, weights):
    values, weights = np.concatenate(values), np.concatenate(weights)
    return (values * weights).sum() / weights.sum()


def test_mean_and_sum():
    values = [RNG.standard_normal(5).astype("float32") for _ in range(3)]
    weights = [RNG.uniform(0, 2, 5).astype("float32") for _ in range(3)]
    mean, weighted, total = metrics.Mean(), metrics.Mean(), metrics.Sum()
    for v, w in zip(values, weights):
        mean.update_state(v)
        weighted.update_state(v, sample_weight=w)
        total.update_state(v, sample_weight=w)
    np.testing.assert_allclose(mean.result(), np.concatenate(values).mean(), rtol=1e-6)
    np.testing.assert_allclose(weighted.result(), _weighted_mean(values, weights), rtol=1e-6)
    np.testing.assert_allclose(total.result(), sum((v * w).sum() for v, w in zip(values, weights)), rtol=1e-6)
    np.testing.assert_allclose(weighted.count.numpy(), np.concatenate(weights).sum(), rtol=1e-6)
    # 2-D values are averaged per sample first, then weighted per sample
    m = metrics.Mean()
    m.update_state(np.array([[1.0, 3.0], [5.0, 7.0]]), sample_weight=np.array([1.0, 3.0]))
    np.testing.assert_allclose(m.result(), (2.0 * 1 + 6.0 * 3) / 4, rtol=1e-6)
    m.update_state(4.0, sample_weight=2)  # scalar fast path
    np.testing.assert_allclose(m.result(), (2.0 + 18.0 + 8.0) / 6, rtol=1e-6)
    for metric in (mean, weighted, total):
        metric.reset_state()
        assert all(float(v.numpy()) == 0.0 for v in metric.variables)
    assert float(mean.result()) == 0.0  # 0 / 0 gives 0, as Keras's divide_no_nan
    assert [v.path for v in mean.variables] == ["mean/total", "mean/count"]
    assert all(isinstance(v, Variable) and not v.trainable and v.shape == () for v in mean.variables)


def test_mean_metric_wrapper():
    def squared(y_true, y_pred):
        return (y_true - y_pred) ** 2

    wrapper = metrics.MeanMetricWrapper(fn=squared, name="sq")
    t, p = RNG.standard_normal(6).astype("float32"), RNG.standard_normal(6).astype("float32")
    sw = RNG.uniform(0, 2, 6).astype("float32")
    wrapper.update_state(t, p, sample_weight=sw)
    np.testing.assert_allclose(wrapper.result(), ((t - p) ** 2 * sw).sum() / sw.sum(), rtol=1e-6)
    assert wrapper.name == "sq"


def test_accuracies_against_numpy():
    batches = _batches()
    sparse, categorical, weighted = (
        metrics.SparseCategoricalAccuracy(),
        metrics.CategoricalAccuracy(),
        metrics.SparseCategoricalAccuracy(),
    )
    hits, weights = [], []
    for labels, logits, sw in batches:
        sparse.update_state(labels, logits)
        categorical.update_state(np.eye(4)[labels], logits)
        weighted.update_state(labels[:, None], logits, sample_weight=sw)
        hits.append((logits.argmax(-1) == labels).astype(np.float64))
        weights.append(sw)
    np.testing.assert_allclose(sparse.result(), np.concatenate(hits).mean(), rtol=1e-6)
    np.testing.assert_allclose(categorical.result(), np.concatenate(hits).mean(), rtol=1e-6)
    np.testing.assert_allclose(weighted.result(), _weighted_mean(hits, weights), rtol=1e-6)

    t = RNG.integers(0, 2, (8, 1)).astype("float32")
    p = RNG.uniform(0, 1, (8, 1)).astype("float32")
    sw = RNG.uniform(0, 2, 8).astype("float32")
    for threshold in (0.5, 0.7):
        binary = metrics.BinaryAccuracy(threshold=threshold)
        binary.update_state(t, p, sample_weight=sw)
        hit = ((p > threshold) == (t > 0.5)).astype(np.float64)[:, 0]
        np.testing.assert_allclose(binary.result(), (hit * sw).sum() / sw.sum(), rtol=1e-6)
    accuracy = metrics.Accuracy()
    accuracy.update_state(np.array([1, 2, 3, 4]), np.array([0, 2, 3, 4]))
    np.testing.assert_allclose(accuracy.result(), 0.75)
    with pytest.raises(ValueError, match="threshold"):
        metrics.BinaryAccuracy(threshold=1.0)


def test_keras_documented_values():
    m = metrics.Accuracy()
    m.update_state([[1], [2], [3], [4]], [[0], [2], [3], [4]])
    np.testing.assert_allclose(m.result(), 0.75)
    m.reset_state()
    m.update_state([[1], [2], [3], [4]], [[0], [2], [3], [4]], sample_weight=[1, 1, 0, 0])
    np.testing.assert_allclose(m.result(), 0.5)
    m = metrics.BinaryAccuracy()
    m.update_state([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]])
    np.testing.assert_allclose(m.result(), 0.75)
    m.reset_state()
    m.update_state([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]], sample_weight=[1, 0, 0, 1])
    np.testing.assert_allclose(m.result(), 0.5)
    m = metrics.CategoricalAccuracy()
    m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]])
    np.testing.assert_allclose(m.result(), 0.5)
    m.reset_state()
    m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]], sample_weight=[0.7, 0.3])
    np.testing.assert_allclose(m.result(), 0.3, rtol=1e-6)
    m = metrics.SparseCategoricalAccuracy()
    m.update_state([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]])
    np.testing.assert_allclose(m.result(), 0.5)
    m.reset_state()
    m.update_state([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]], sample_weight=[0.7, 0.3])
    np.testing.assert_allclose(m.result(), 0.3, rtol=1e-6)


def test_regression_and_probabilistic_metrics():
    t = [RNG.standard_normal((4, 3)).astype("float32") for _ in range(2)]
    p = [RNG.standard_normal((4, 3)).astype("float32") for _ in range(2)]
    sw = [RNG.uniform(0, 2, 4).astype("float32") for _ in range(2)]
    for metric, fn in [
        (metrics.MeanSquaredError(), lambda a, b: ((a - b) ** 2).mean(-1)),
        (metrics.MeanAbsoluteError(), lambda a, b: np.abs(a - b).mean(-1)),
        (metrics.get("mse"), lambda a, b: ((a - b) ** 2).mean(-1)),
    ]:
        for a, b, w in zip(t, p, sw):
            metric.update_state(a, b, sample_weight=w)
        np.testing.assert_allclose(
            metric.result(), _weighted_mean([fn(a, b) for a, b in zip(t, p)], sw), rtol=1e-6
        )
    rmse = metrics.RootMeanSquaredError()
    rmse.update_state(t[0], p[0])
    np.testing.assert_allclose(rmse.result(), np.sqrt(((t[0] - p[0]) ** 2).mean()), rtol=1e-6)
    labels = RNG.integers(0, 3, 4)
    probs = np.exp(p[0]) / np.exp(p[0]).sum(-1, keepdims=True)
    ce = metrics.SparseCategoricalCrossentropy()
    ce.update_state(labels, probs, sample_weight=sw[0])
    per_sample = -np.log(probs[np.arange(4), labels])
    np.testing.assert_allclose(ce.result(), (per_sample * sw[0]).sum() / sw[0].sum(), rtol=1e-5)


def test_resolve_accuracy_like_keras_compile():
    assert isinstance(metrics.resolve_accuracy("accuracy", (None, 1), (None, 1)), metrics.BinaryAccuracy)
    assert isinstance(
        metrics.resolve_accuracy("accuracy", (None,), (None, 10)), metrics.SparseCategoricalAccuracy
    )
    assert isinstance(
        metrics.resolve_accuracy("acc", (None, 1), (None, 10)), metrics.SparseCategoricalAccuracy
    )
    assert isinstance(
        metrics.resolve_accuracy("accuracy", (None, 10), (None, 10)), metrics.CategoricalAccuracy
    )
    assert metrics.resolve_accuracy("acc", (None, 10), (None, 10)).name == "acc"
    y_true, y_pred = np.zeros((4,)), np.zeros((4, 3))
    metric = metrics.get_compile_metric("accuracy", y_true, y_pred)
    assert isinstance(metric, metrics.SparseCategoricalAccuracy) and metric.name == "accuracy"
    mse = metrics.get_compile_metric("mse", y_true, y_pred)
    assert isinstance(mse, metrics.MeanSquaredError) and mse.name == "mse"
    wrapped = metrics.get_compile_metric(losses.mean_absolute_error, y_true, y_pred)
    assert isinstance(wrapped, metrics.MeanMetricWrapper) and wrapped.name == "mean_absolute_error"


def test_get_and_configs():
    assert isinstance(metrics.get("accuracy"), metrics.Accuracy)
    assert isinstance(metrics.get("sparse_categorical_accuracy"), metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("SparseCategoricalAccuracy"), metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("mae"), metrics.MeanAbsoluteError)
    assert isinstance(metrics.get("mean_squared_error"), metrics.MeanSquaredError)
    assert metrics.get(None) is None
    with pytest.raises(ValueError, match="acuracy"):
        metrics.get("acuracy")
    for metric in (
        metrics.Mean(name="loss"),
        metrics.BinaryAccuracy(threshold=0.3),
        metrics.CategoricalAccuracy(),
        metrics.SparseCategoricalAccuracy(name="acc"),
        metrics.MeanSquaredError(),
        metrics.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
    ):
        config = metrics.serialize(metric)
        assert config["module"] == "keras.metrics" and config["class_name"] == type(metric).__name__
        clone = metrics.deserialize(config)
        assert type(clone) is type(metric) and clone.get_config() == metric.get_config()
    assert metrics.BinaryAccuracy().get_config() == {
        "name": "binary_accuracy",
        "dtype": "float32",
        "threshold": 0.5,
    }
    wrapper = metrics.MeanMetricWrapper(losses.mean_squared_error, name="m")
    clone = metrics.MeanMetricWrapper.from_config(wrapper.get_config())
    assert clone._fn is losses.mean_squared_error and clone.name == "m"


def _trace_update(metric, y_true, y_pred, sample_weight):
    graph = Graph("metric_step")
    with tracing(graph):
        t = SymbolicTensor(
            graph, graph.add_placeholder((None,) + y_true.shape[1:], str(y_true.dtype), "t").id
        )
        p = SymbolicTensor(graph, graph.add_placeholder((None,) + y_pred.shape[1:], "float32", "p").id)
        w = SymbolicTensor(graph, graph.add_placeholder((None,), "float32", "w").id)
        metric.update_state(t, p, sample_weight=w)
        result = metric.result()
    graph.outputs = [result.node_id]
    return graph


@pytest.mark.parametrize(
    "make",
    [
        metrics.SparseCategoricalAccuracy,
        metrics.MeanSquaredError,
        lambda: metrics.SparseCategoricalCrossentropy(from_logits=True),
    ],
    ids=["sparse_accuracy", "mse", "crossentropy"],
)
def test_traced_update_equals_eager(make):
    """update_state traced into a graph records state updates; running them equals eager updates."""
    batches = _batches(n=2)
    traced, eager = make(), make()
    graph = None
    for labels, logits, sw in batches:
        y_true = labels.astype("int32")
        if isinstance(traced, metrics.MeanSquaredError):
            y_true = np.eye(4, dtype="float32")[labels]
        if graph is None:
            graph = _trace_update(traced, y_true, logits, sw)
            assert set(graph.state_updates) == {graph.variable_node(v).id for v in traced.variables}
        (result,), state = evaluate(graph, [y_true, logits, sw])
        for variable, value in state.items():
            variable.assign(value)
        eager.update_state(y_true, logits, sample_weight=sw)
        np.testing.assert_allclose(result, eager.result(), rtol=1e-6)
        for a, b in zip(traced.variables, eager.variables):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_compiled_update_equals_eager():
    """Metric updates compiled by the numba backend (batch size unknown until run time)."""
    from kgraph.compiler.passes.pipeline import compile_graph

    compiled_metric, eager = metrics.SparseCategoricalAccuracy(), metrics.SparseCategoricalAccuracy()
    step = None
    for batch, (labels, logits, sw) in zip((6, 6, 3), _batches(n=3)):
        labels, logits, sw = labels[:batch].astype("int32"), logits[:batch], sw[:batch]
        if step is None:
            step = compile_graph(_trace_update(compiled_metric, labels, logits, sw))
        result = float(step(labels, logits, sw)[0])
        eager.update_state(labels, logits, sample_weight=sw)
        np.testing.assert_allclose(result, eager.result(), rtol=1e-6)
    unweighted = metrics.Mean()
    graph = Graph("mean_step")
    with tracing(graph):
        values = SymbolicTensor(graph, graph.add_placeholder((None, 2), "float32", "v").id)
        unweighted.update_state(values)
    step = compile_graph(graph)
    step(np.ones((3, 2), "float32"))
    step(np.full((5, 2), 3.0, "float32"))
    np.testing.assert_allclose([unweighted.total.numpy(), unweighted.count.numpy()], [18.0, 8.0])
    np.testing.assert_allclose(unweighted.result(), 18.0 / 8.0)
