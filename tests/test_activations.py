"""Activations against numpy references, eagerly and traced; get(), serialize() and errors."""

import math

import numpy as np
import pytest
from scipy.special import erf

from kgraph import activations
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.runtime.reference import evaluate

X = np.linspace(-7.0, 7.0, 57).astype("float32").reshape(3, 19)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras 3's relu: x above the threshold (0 at it), capped at max_value, and a leaky slope
    below the threshold."""
    out = np.where(x > threshold, x, 0.0)
    if max_value is not None:
        out = np.minimum(out, max_value)
    return out - negative_slope * np.maximum(threshold - x, 0.0)


CASES = [
    ("relu", activations.relu, lambda x: np.maximum(x, 0)),
    ("relu_slope", lambda x: activations.relu(x, negative_slope=0.1), lambda x: np_relu(x, 0.1)),
    ("relu_max", lambda x: activations.relu(x, max_value=2.5), lambda x: np_relu(x, max_value=2.5)),
    ("relu_max6", lambda x: activations.relu(x, max_value=6), lambda x: np.clip(x, 0, 6)),
    ("relu_threshold", lambda x: activations.relu(x, threshold=1.0), lambda x: np_relu(x, threshold=1.0)),
    (
        "relu_all",
        lambda x: activations.relu(x, negative_slope=0.2, max_value=3.0, threshold=0.5),
        lambda x: np_relu(x, 0.2, 3.0, 0.5),
    ),
    ("relu6", activations.relu6, lambda x: np.clip(x, 0, 6)),
    ("leaky_relu", activations.leaky_relu, lambda x: np.where(x >= 0, x, 0.2 * x)),
    (
        "leaky_relu_0.3",
        lambda x: activations.leaky_relu(x, negative_slope=0.3),
        lambda x: np.where(x >= 0, x, 0.3 * x),
    ),
    ("sigmoid", activations.sigmoid, np_sigmoid),
    ("tanh", activations.tanh, np.tanh),
    ("softmax", activations.softmax, np_softmax),
    ("softmax_axis0", lambda x: activations.softmax(x, axis=0), lambda x: np_softmax(x, axis=0)),
    ("log_softmax", activations.log_softmax, lambda x: np.log(np_softmax(x.astype(np.float64)))),
    ("softplus", activations.softplus, np_softplus),
    ("softsign", activations.softsign, lambda x: x / (1 + np.abs(x))),
    ("gelu", activations.gelu, lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2)))),
    (
        "gelu_tanh",
        lambda x: activations.gelu(x, approximate=True),
        lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    ),
    ("elu", activations.elu, lambda x: np.where(x > 0, x, np.expm1(x))),
    ("elu_alpha", lambda x: activations.elu(x, alpha=0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    ("selu", activations.selu, lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x))),
    ("silu", activations.silu, lambda x: x * np_sigmoid(x)),
    ("swish", activations.swish, lambda x: x * np_sigmoid(x)),
    ("hard_sigmoid", activations.hard_sigmoid, lambda x: np.clip(x + 3, 0, 6) / 6),
    ("hard_silu", activations.hard_silu, lambda x: x * np.clip(x + 3, 0, 6) / 6),
    ("exponential", activations.exponential, np.exp),
    ("linear", activations.linear, lambda x: x),
    ("mish", activations.mish, lambda x: x * np.tanh(np_softplus(x))),
    ("celu", activations.celu, lambda x: np.maximum(x, 0) + np.expm1(np.minimum(x, 0))),
    ("hard_tanh", activations.hard_tanh, lambda x: np.clip(x, -1, 1)),
    ("log_sigmoid", activations.log_sigmoid, lambda x: -np_softplus(-x)),
    ("tanh_shrink", activations.tanh_shrink, lambda x: x - np.tanh(x)),
    ("soft_shrink", activations.soft_shrink, lambda x: np.sign(x) * np.maximum(np.abs(x) - 0.5, 0)),
    ("hard_shrink", activations.hard_shrink, lambda x: np.where(np.abs(x) > 0.5, x, 0)),
    ("squareplus", activations.squareplus, lambda x: (x + np.sqrt(x * x + 4)) / 2),
    (
        "sparse_plus",
        activations.sparse_plus,
        lambda x: np.where(x <= -1, 0, np.where(x >= 1, x, (x + 1) ** 2 / 4)),
    ),
    ("sparse_sigmoid", activations.sparse_sigmoid, lambda x: np.clip((x + 1) / 2, 0, 1)),
    ("glu", activations.glu, lambda x: x[:, :9] * np_sigmoid(x[:, 9:18])),
]


@pytest.mark.parametrize("name,fn,reference", CASES, ids=[c[0] for c in CASES])
def test_eager_and_traced_against_numpy(name, fn, reference):
    x = X[:, :18] if name == "glu" else X
    want = reference(x.astype(np.float64))
    got = fn(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    graph = Graph(name)
    with tracing(graph):
        placeholder = SymbolicTensor(graph, graph.add_placeholder((None, x.shape[1]), "float32", "x").id)
        out = fn(placeholder)
    graph.outputs = [out.node_id]
    (traced,), _ = evaluate(graph, [x])
    np.testing.assert_allclose(traced, want, rtol=1e-5, atol=1e-6)


def test_get():
    assert activations.get("relu") is activations.relu
    assert activations.get("swish") is activations.silu
    assert activations.get("hard_swish") is activations.hard_silu
    assert activations.get("gelu") is activations.gelu
    assert activations.get(None) is activations.linear
    assert activations.get(np.tanh) is np.tanh
    assert (
        activations.get(
            {
                "module": "keras.activations",
                "class_name": "function",
                "config": "softmax",
                "registered_name": "softmax",
            }
        )
        is activations.softmax
    )
    with pytest.raises(ValueError) as info:
        activations.get("rellu")
    assert "rellu" in str(info.value) and "'relu'" in str(info.value)
    with pytest.raises(ValueError):
        activations.get(3)


def test_serialize():
    for fn in (activations.relu, activations.softmax, activations.linear, activations.gelu):
        assert activations.serialize(fn) == fn.__name__
        assert activations.deserialize(fn.__name__) is fn
    assert activations.serialize(activations.swish) == "silu"

    def custom(x):
        return x

    config = activations.serialize(custom)
    assert config["class_name"] == "function" and config["config"] == "custom"
    assert activations.deserialize(config, custom_objects={"custom": custom}) is custom


def test_keras_defaults():
    x = np.array([-1.0, 2.0], "float32")
    np.testing.assert_allclose(activations.leaky_relu(x), [-0.2, 2.0])  # negative_slope=0.2
    np.testing.assert_allclose(activations.gelu(x), 0.5 * x * (1 + erf(x / math.sqrt(2))), rtol=1e-6)  # exact
    np.testing.assert_allclose(activations.elu(x), [np.expm1(-1.0), 2.0], rtol=1e-6)  # alpha=1
