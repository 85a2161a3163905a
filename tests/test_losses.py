"""Losses against numpy references (reductions, sample weights, masks), Keras's documented values,
get()/config round trips, and a traced evaluation."""

import numpy as np
import pytest

from kgraph import losses, ops
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.runtime.reference import evaluate

EPS = 1e-7
RNG = np.random.default_rng(0)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    return np.log(softmax(x.astype(np.float64), axis))


def reduce(values, sample_weight=None, reduction="sum_over_batch_size"):
    values = values.astype(np.float64)
    if sample_weight is not None:
        values = values * sample_weight
    if reduction in (None, "none"):
        return values
    if reduction == "sum":
        return values.sum()
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        return values.sum() / np.sum(sample_weight)
    return values.mean()


# -- numpy references of the per-sample losses -----------------------------------------------------
def np_mse(t, p):
    return ((t - p) ** 2).mean(-1)


def np_mae(t, p):
    return np.abs(t - p).mean(-1)


def np_bce(t, p, from_logits=False, label_smoothing=0.0):
    t = t * (1 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        p = 1 / (1 + np.exp(-p.astype(np.float64)))
    p = np.clip(p, EPS, 1 - EPS)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(-1)


def np_cce(t, p, from_logits=False, label_smoothing=0.0):
    t = t * (1 - label_smoothing) + label_smoothing / t.shape[-1]
    if from_logits:
        return -(t * log_softmax(p)).sum(-1)
    p = p / p.sum(-1, keepdims=True)
    return -(t * np.log(np.clip(p, EPS, 1 - EPS))).sum(-1)


def np_scce(labels, p, from_logits=False):
    return np_cce(np.eye(p.shape[-1])[labels], p, from_logits)


def _probabilities(batch, classes):
    return softmax(RNG.standard_normal((batch, classes))).astype("float32")


REDUCTIONS = ["sum_over_batch_size", "sum", "none", "mean_with_sample_weight"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses(reduction):
    t = RNG.standard_normal((5, 3)).astype("float32")
    p = RNG.standard_normal((5, 3)).astype("float32")
    sw = RNG.uniform(0.1, 2.0, 5).astype("float32")
    for cls, fn in [(losses.MeanSquaredError, np_mse), (losses.MeanAbsoluteError, np_mae)]:
        loss = cls(reduction=reduction)
        np.testing.assert_allclose(loss(t, p), reduce(fn(t, p), None, reduction), rtol=1e-5)
        np.testing.assert_allclose(loss(t, p, sample_weight=sw), reduce(fn(t, p), sw, reduction), rtol=1e-5)
    # (batch,) targets against (batch, 1) predictions are aligned, as in Keras.
    np.testing.assert_allclose(
        losses.MeanSquaredError()(t[:, 0], p[:, :1]), np_mse(t[:, :1], p[:, :1]).mean(), rtol=1e-6
    )


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_binary_crossentropy(from_logits, label_smoothing):
    t = RNG.integers(0, 2, (6, 4)).astype("float32")
    p = (
        RNG.standard_normal((6, 4)).astype("float32")
        if from_logits
        else RNG.uniform(0, 1, (6, 4)).astype("float32")
    )
    p[0, 0] = 0.0 if not from_logits else p[0, 0]  # exercises the epsilon clipping
    sw = RNG.uniform(0.1, 2.0, 6).astype("float32")
    want = np_bce(t, p, from_logits, label_smoothing)
    loss = losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
    np.testing.assert_allclose(loss(t, p), want.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss(t, p, sample_weight=sw), (want * sw).mean(), rtol=1e-5)
    np.testing.assert_allclose(
        losses.binary_crossentropy(t, p, from_logits, label_smoothing), want, rtol=1e-5
    )


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_categorical_crossentropy(from_logits, label_smoothing):
    labels = RNG.integers(0, 4, 7)
    t = np.eye(4, dtype="float32")[labels]
    p = RNG.standard_normal((7, 4)).astype("float32") if from_logits else _probabilities(7, 4)
    sw = RNG.uniform(0.1, 2.0, 7).astype("float32")
    want = np_cce(t, p, from_logits, label_smoothing)
    loss = losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
    np.testing.assert_allclose(loss(t, p), want.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss(t, p, sample_weight=sw), (want * sw).mean(), rtol=1e-5)
    summed = losses.CategoricalCrossentropy(
        from_logits=from_logits, label_smoothing=label_smoothing, reduction="sum"
    )
    np.testing.assert_allclose(summed(t, p, sw), (want * sw).sum(), rtol=1e-5)


@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_categorical_crossentropy(from_logits):
    labels = RNG.integers(0, 5, 8)
    p = RNG.standard_normal((8, 5)).astype("float32") if from_logits else _probabilities(8, 5)
    sw = RNG.uniform(0.1, 2.0, 8).astype("float32")
    want = np_scce(labels, p, from_logits)
    loss = losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    for y in (labels.astype("int32"), labels.astype("int64"), labels.astype("float32"), labels[:, None]):
        np.testing.assert_allclose(loss(y, p), want.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss(labels, p, sample_weight=sw), (want * sw).mean(), rtol=1e-5)
    np.testing.assert_allclose(loss(labels, p, sample_weight=sw[:, None]), (want * sw).mean(), rtol=1e-5)
    np.testing.assert_allclose(
        losses.SparseCategoricalCrossentropy(from_logits=from_logits, reduction=None)(labels, p),
        want,
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        losses.sparse_categorical_crossentropy(labels, p, from_logits=from_logits), want, rtol=1e-5
    )


def test_sparse_categorical_crossentropy_ignore_class():
    labels = np.array([0, 2, -1, 1, -1, 2])
    p = _probabilities(6, 3)
    valid = labels != -1
    per_sample = np.where(valid, np_scce(np.where(valid, labels, 0), p), 0.0)
    loss = losses.SparseCategoricalCrossentropy(ignore_class=-1)
    # the mean runs over the valid entries only (Keras masks the ignored ones out)
    np.testing.assert_allclose(loss(labels, p), per_sample.sum() / valid.sum(), rtol=1e-5)
    sw = RNG.uniform(0.1, 2.0, 6).astype("float32")
    np.testing.assert_allclose(
        loss(labels, p, sample_weight=sw), (per_sample * sw).sum() / valid.sum(), rtol=1e-5
    )
    np.testing.assert_allclose(
        losses.SparseCategoricalCrossentropy(ignore_class=-1, reduction="sum")(labels, p),
        per_sample.sum(),
        rtol=1e-5,
    )


def test_keras_documented_values():
    y_true = np.array([[0, 1, 0], [0, 0, 1]])
    y_pred = np.array([[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
    cce = losses.CategoricalCrossentropy()
    np.testing.assert_allclose(cce(y_true, y_pred), 1.177, atol=1e-3)
    np.testing.assert_allclose(cce(y_true, y_pred, sample_weight=np.array([0.3, 0.7])), 0.814, atol=1e-3)
    np.testing.assert_allclose(
        losses.CategoricalCrossentropy(reduction="sum")(y_true, y_pred), 2.354, atol=1e-3
    )
    np.testing.assert_allclose(
        losses.CategoricalCrossentropy(reduction=None)(y_true, y_pred), [0.0513, 2.303], atol=1e-3
    )
    np.testing.assert_allclose(losses.SparseCategoricalCrossentropy()([1, 2], y_pred), 1.177, atol=1e-3)
    np.testing.assert_allclose(
        losses.binary_crossentropy(np.array([[0, 1], [0, 0]]), np.array([[0.6, 0.4], [0.4, 0.6]])),
        [0.916, 0.714],
        atol=1e-3,
    )
    assert losses.sparse_categorical_crossentropy(np.array([1, 2]), y_pred).shape == (2,)


def test_other_losses_against_numpy():
    t = RNG.uniform(0.1, 1.0, (4, 3)).astype("float32")
    p = RNG.uniform(0.1, 1.0, (4, 3)).astype("float32")
    cases = [
        (losses.mean_absolute_percentage_error, 100 * np.abs((t - p) / t).mean(-1)),
        (losses.mean_squared_logarithmic_error, ((np.log(p + 1) - np.log(t + 1)) ** 2).mean(-1)),
        (losses.kl_divergence, (t * np.log(t / p)).sum(-1)),
        (losses.poisson, (p - t * np.log(p + EPS)).mean(-1)),
        (losses.log_cosh, np.log(np.cosh(p - t)).mean(-1)),
        (losses.huber, np.where(np.abs(p - t) <= 1.0, 0.5 * (p - t) ** 2, np.abs(p - t) - 0.5).mean(-1)),
        (
            losses.cosine_similarity,
            -(t * p).sum(-1) / np.linalg.norm(t, axis=-1) / np.linalg.norm(p, axis=-1),
        ),
        (losses.hinge, np.maximum(1 - (2 * (t > 0.5) - 1) * p, 0).mean(-1)),
    ]
    for fn, want in cases:
        y_true = (t > 0.5).astype("float32") if fn is losses.hinge else t
        np.testing.assert_allclose(fn(y_true, p), want, rtol=1e-5, atol=1e-6, err_msg=fn.__name__)


def test_get_aliases_and_errors():
    assert losses.get("mse") is losses.mean_squared_error
    assert losses.get("MSE") is losses.mean_squared_error
    assert losses.get("mean_squared_error") is losses.mean_squared_error
    assert losses.get("mae") is losses.mean_absolute_error
    assert losses.get("categorical_crossentropy") is losses.categorical_crossentropy
    assert losses.get("sparse_categorical_crossentropy") is losses.sparse_categorical_crossentropy
    assert losses.get("binary_crossentropy") is losses.binary_crossentropy
    assert isinstance(losses.get("CategoricalCrossentropy"), losses.CategoricalCrossentropy)
    assert isinstance(losses.get(losses.MeanSquaredError), losses.MeanSquaredError)
    instance = losses.BinaryCrossentropy()
    assert losses.get(instance) is instance
    assert losses.get(None) is None
    with pytest.raises(ValueError, match="mean_sqared_error"):
        losses.get("mean_sqared_error")
    with pytest.raises(ValueError, match="reduction"):
        losses.MeanSquaredError(reduction="average")
    assert isinstance(losses.resolve_loss("crossentropy", (None, 1), (None, 10)), losses.LossFunctionWrapper)
    assert losses.resolve_loss("ce", (None,), (None, 10)).fn is losses.sparse_categorical_crossentropy
    assert losses.resolve_loss("mse", (None, 1), (None, 1)).name == "mse"


def test_configs_round_trip():
    cases = [
        losses.MeanSquaredError(),
        losses.MeanAbsoluteError(reduction="sum"),
        losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1, axis=-1),
        losses.CategoricalCrossentropy(label_smoothing=0.2, name="cce"),
        losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
    ]
    for loss in cases:
        config = losses.serialize(loss)
        assert config["module"] == "keras.losses"
        assert config["class_name"] == type(loss).__name__
        clone = losses.deserialize(config)
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
    assert losses.SparseCategoricalCrossentropy(from_logits=True).get_config() == {
        "name": "sparse_categorical_crossentropy",
        "reduction": "sum_over_batch_size",
        "from_logits": True,
        "ignore_class": None,
    }
    assert losses.MeanSquaredError().get_config() == {
        "name": "mean_squared_error",
        "reduction": "sum_over_batch_size",
    }
    wrapper = losses.LossFunctionWrapper(losses.mean_absolute_error, name="mae")
    clone = losses.LossFunctionWrapper.from_config(wrapper.get_config())
    assert clone.fn is losses.mean_absolute_error and clone.name == "mae"
    assert losses.serialize(losses.mean_squared_error) == {
        "module": "keras.losses",
        "class_name": "function",
        "config": "mean_squared_error",
        "registered_name": "mean_squared_error",
    }
    assert losses.deserialize("mse") is losses.mean_squared_error


def test_traced_losses_equal_eager():
    labels = RNG.integers(0, 4, 5).astype("int32")
    logits = RNG.standard_normal((5, 4)).astype("float32")
    sw = RNG.uniform(0.1, 2.0, 5).astype("float32")
    cases = [
        losses.SparseCategoricalCrossentropy(from_logits=True),
        losses.SparseCategoricalCrossentropy(ignore_class=3),
        losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        losses.BinaryCrossentropy(from_logits=True),
        losses.MeanSquaredError(reduction="sum"),
    ]
    for loss in cases:
        sparse = isinstance(loss, losses.SparseCategoricalCrossentropy)
        y_true = labels if sparse else np.eye(4, dtype="float32")[labels]
        y_pred = (
            softmax(logits)
            if loss.name == "sparse_categorical_crossentropy" and not loss.from_logits
            else logits
        )
        graph = Graph("loss")
        with tracing(graph):
            t = SymbolicTensor(
                graph, graph.add_placeholder((None,) + y_true.shape[1:], str(y_true.dtype), "t").id
            )
            p = SymbolicTensor(graph, graph.add_placeholder((None, 4), "float32", "p").id)
            w = SymbolicTensor(graph, graph.add_placeholder((None,), "float32", "w").id)
            value = loss(t, p, sample_weight=w)
        graph.outputs = [value.node_id]
        (traced,), _ = evaluate(graph, [y_true, y_pred, sw])
        np.testing.assert_allclose(
            traced, loss(y_true, y_pred, sample_weight=sw), rtol=1e-6, err_msg=loss.name
        )
    assert isinstance(ops.convert_to_tensor(1.0), np.ndarray)


# -- CTC ------------------------------------------------------------------------------------------
def _ctc_brute_force(labels, logits):
    """-log of the summed probability of every alignment (path over classes, one per step)
    that collapses to `labels` (merge repeats, then drop blanks 0): exhaustive, for tiny T, C."""
    import itertools

    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    steps, classes = log_probs.shape
    target = tuple(int(label) for label in labels if label != 0)
    total = -np.inf
    for path in itertools.product(range(classes), repeat=steps):
        collapsed = tuple(k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k))
        if collapsed == target:
            total = np.logaddexp(total, sum(log_probs[t, k] for t, k in enumerate(path)))
    return -total


CTC_LABELS = np.array([[1, 2, 0], [1, 1, 0], [2, 0, 0], [0, 0, 0], [2, 1, 2]], dtype="int32")


def test_ctc_matches_alignment_enumeration():
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((5, 5, 3)) * 2
    expected = np.array([_ctc_brute_force(t, x) for t, x in zip(CTC_LABELS, logits)])
    np.testing.assert_allclose(losses.ctc(CTC_LABELS, logits.astype("float32")), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.ctc(CTC_LABELS, logits), expected, rtol=1e-10)  # float64 stays float64
    sw = rng.uniform(0.5, 2.0, 5)
    np.testing.assert_allclose(
        losses.CTC()(CTC_LABELS, logits.astype("float32"), sample_weight=sw), (expected * sw).mean(), rtol=1e-5
    )
    np.testing.assert_allclose(losses.CTC(reduction="sum")(CTC_LABELS, logits), expected.sum(), rtol=1e-6)
    assert isinstance(losses.get("CTC"), losses.CTC) and losses.get("ctc") is losses.ctc
    assert losses.CTC().get_config() == {"name": "ctc", "reduction": "sum_over_batch_size"}
    with pytest.raises(ValueError, match="CTC: targets"):
        losses.ctc(np.zeros((2, 3, 1)), logits[:2])
    with pytest.raises(ValueError, match="CTC: logits"):
        losses.ctc(CTC_LABELS, logits[:, :, 0])


def test_ctc_gradient_matches_finite_differences_and_compiles():
    """Traced CTC (batch unknown): reference-evaluated gradient w.r.t. the logits against central
    differences of the exhaustive oracle (float64); the numba-compiled graph gives the same."""
    from kgraph.compiler.autodiff import gradients
    from kgraph.compiler.passes.pipeline import compile_graph

    rng = np.random.default_rng(12)
    logits = rng.standard_normal((5, 4, 3))
    labels = CTC_LABELS[:, :2].copy()
    graph = Graph("ctc_grad")
    with tracing(graph):
        y = SymbolicTensor(graph, graph.add_placeholder((None, 2), "int32", "y").id)
        x = SymbolicTensor(graph, graph.add_placeholder((None, 4, 3), "float64", "x").id)
        loss = ops.sum(losses.ctc(y, x))
    graph.outputs = [loss.node_id] + gradients(graph, loss.node_id, [x.node_id])
    (value, grad), _ = evaluate(graph, [labels, logits])
    oracle = [_ctc_brute_force(t, x) for t, x in zip(labels, logits)]
    np.testing.assert_allclose(value, sum(oracle), rtol=1e-10)
    eps, numeric = 1e-6, np.zeros_like(logits)
    for b, t, k in np.ndindex(logits.shape):
        plus, minus = logits[b].copy(), logits[b].copy()
        plus[t, k] += eps
        minus[t, k] -= eps
        numeric[b, t, k] = (_ctc_brute_force(labels[b], plus) - _ctc_brute_force(labels[b], minus)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    compiled = compile_graph(graph)(labels, logits)
    np.testing.assert_allclose(compiled[0], value, rtol=1e-10)
    np.testing.assert_allclose(compiled[1], grad, rtol=1e-8, atol=1e-12)
