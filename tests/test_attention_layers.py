"""Attention layers against numpy transcriptions of Keras 3's formulas."""

import os
import subprocess

import numpy as np
import pytest
from keras_reference import SKIP_REASON, keras_python

import kgraph as keras
from kgraph import ops, saving
from kgraph.compiler.autodiff import gradients
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.layers.attention import AdditiveAttention, Attention, Dot, GroupQueryAttention, MultiHeadAttention
from kgraph.layers.einsum_dense import EinsumDense

rng = np.random.default_rng(0)


def softmax(x, mask=None):
    if mask is not None:
        x = x + (1.0 - mask) * -1e9
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_dot_product_and_additive_attention():
    q = rng.standard_normal((2, 3, 4)).astype("float32")
    v = rng.standard_normal((2, 5, 4)).astype("float32")
    out, scores = Attention()([q, v], return_attention_scores=True)
    expected_scores = softmax(q @ v.transpose(0, 2, 1))
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, expected_scores @ v, rtol=1e-5, atol=1e-6)
    causal = Attention()([q, v[:, :3]], use_causal_mask=True)
    mask = np.tril(np.ones((3, 3)))
    np.testing.assert_allclose(causal, softmax(q @ v[:, :3].transpose(0, 2, 1), mask) @ v[:, :3], rtol=1e-5,
                               atol=1e-6)
    additive = AdditiveAttention()
    out = additive([q, v])
    scale = additive.scale.numpy()
    expected = softmax((np.tanh(q[:, :, None, :] + v[:, None, :, :]) * scale).sum(-1)) @ v
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_multi_head_attention_matches_keras_formula():
    layer = MultiHeadAttention(num_heads=2, key_dim=3)
    query = rng.standard_normal((2, 4, 5)).astype("float32")
    value = rng.standard_normal((2, 6, 5)).astype("float32")
    mask = rng.random((2, 4, 6)) > 0.3
    mask[..., 0] = True
    out, scores = layer(query, value, attention_mask=mask, return_attention_scores=True)
    (wq, bq), (wk, bk), (wv, bv), (wo, bo) = [(l.kernel.numpy(), l.bias.numpy()) for l in
                                               (layer._query_dense, layer._key_dense, layer._value_dense,
                                                layer._output_dense)]
    assert wq.shape == (5, 2, 3) and wo.shape == (2, 3, 5) and len(layer.weights) == 8
    q = np.einsum("abc,cde->abde", query, wq) + bq
    k = np.einsum("abc,cde->abde", value, wk) + bk
    v = np.einsum("abc,cde->abde", value, wv) + bv
    logits = np.einsum("aecd,abcd->acbe", k, q / np.sqrt(3.0))
    weights = softmax(logits, mask[:, None].astype("float32"))
    context = np.einsum("acbe,aecd->abcd", weights, v)
    expected = np.einsum("abcd,cde->abe", context, wo) + bo
    np.testing.assert_allclose(scores, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_multi_head_attention_trains_in_a_functional_model():
    tokens = keras.Input((6, 8))
    attended = MultiHeadAttention(num_heads=2, key_dim=4)(tokens, tokens, use_causal_mask=True)
    pooled = keras.layers.Flatten()(attended)
    model = keras.Model(tokens, keras.layers.Dense(1)(pooled))
    model.compile(optimizer="adam", loss="mse")
    x = rng.standard_normal((32, 6, 8)).astype("float32")
    y = x.sum((1, 2))[:, None].astype("float32")
    history = model.fit(x, y, epochs=4, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    eager = model.layers[1]
    np.testing.assert_allclose(model.predict(x[:3], verbose=0).shape, (3, 1))
    assert eager.count_params() == 4 * (8 * 2 * 4 + 2 * 4) - 3 * 0 - (2 * 4 - 8)


def test_dot_layer():
    a = rng.standard_normal((3, 4)).astype("float32")
    b = rng.standard_normal((3, 4)).astype("float32")
    np.testing.assert_allclose(Dot(axes=1)([a, b]), (a * b).sum(1, keepdims=True), rtol=1e-5)
    x = rng.standard_normal((2, 3, 4)).astype("float32")
    y = rng.standard_normal((2, 5, 4)).astype("float32")
    np.testing.assert_allclose(Dot(axes=(2, 2))([x, y]), x @ y.transpose(0, 2, 1), rtol=1e-5, atol=1e-6)


# -- EinsumDense and GroupedQueryAttention --------------------------------------------------------
EINSUM_CASES = [  # equation, output_shape, bias_axes, input shape, Keras's kernel and bias shapes
    ("ab,bc->ac", 4, "c", (3, 5), (5, 4), (4,)),
    ("abc,cd->abd", (None, 4), "d", (3, 2, 5), (5, 4), (4,)),
    ("abc,cde->abde", (None, 2, 3), "de", (3, 2, 5), (5, 2, 3), (2, 3)),
    ("abcd,cde->abe", (None, 4), "e", (3, 2, 2, 3), (2, 3, 4), (4,)),
    ("...b,bc->...c", 4, "c", (3, 2, 5), (5, 4), (4,)),
    ("abc...,cd->abd...", (2, 4), "b", (3, 2, 5, 6), (5, 4), (2, 1, 1)),
    ("abc,cd->abd", (None, 4), None, (3, 2, 5), (5, 4), None),
]


@pytest.mark.parametrize("equation,output_shape,bias_axes,shape,kernel_shape,bias_shape", EINSUM_CASES,
                         ids=[c[0] for c in EINSUM_CASES])
def test_einsum_dense_matches_numpy_einsum(equation, output_shape, bias_axes, shape, kernel_shape, bias_shape):
    layer = EinsumDense(equation, output_shape, bias_axes=bias_axes, activation="tanh",
                        bias_initializer="random_normal")
    x = rng.standard_normal(shape).astype("float32")
    out = layer(x)
    assert layer.kernel.shape == kernel_shape and [w.name for w in layer.weights][0] == "kernel"
    assert (layer.bias is None and bias_shape is None) or layer.bias.shape == bias_shape
    expected = np.einsum(equation, x, layer.kernel.numpy())
    if bias_shape is not None:
        expected = expected + layer.bias.numpy()
    np.testing.assert_allclose(out, np.tanh(expected), rtol=1e-5, atol=1e-6)
    assert tuple(out.shape) == tuple(d or s for d, s in zip(layer.compute_output_shape(shape), out.shape))
    clone = EinsumDense.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_einsum_dense_kernel_fans_and_errors():
    # Keras gives VarianceScaling the kernel's input and output axes: glorot_uniform on a
    # (64, 8, 16) "abc,cde->abde" kernel has fan_in 64 and fan_out 128, limit sqrt(6 / 192).
    layer = EinsumDense("abc,cde->abde", (None, 8, 16))
    layer.build((None, 3, 64))
    kernel = layer.kernel.numpy()
    assert np.abs(kernel).max() <= np.sqrt(6 / 192) and np.abs(kernel).max() > 0.95 * np.sqrt(6 / 192)
    with pytest.raises(ValueError, match="Invalid einsum equation"):
        EinsumDense("ab->b", 4).build((None, 3))
    with pytest.raises(ValueError, match="Bias dimension 'x'"):
        EinsumDense("ab,bc->ac", 4, bias_axes="x").build((None, 3))
    with pytest.raises(ValueError, match="do not match at shared dimension"):
        EinsumDense("abc,cd->abd", (5, 4)).build((None, 3, 2))


def test_einsum_dense_lora():
    layer = EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de", lora_rank=2, lora_alpha=4.0)
    x = rng.standard_normal((2, 3, 5)).astype("float32")
    layer.build(x.shape)
    assert [w.name for w in layer.weights] == ["kernel", "bias", "lora_kernel_a", "lora_kernel_b"]
    assert layer.lora_kernel_a.shape == (5, 2, 2) and layer.lora_kernel_b.shape == (2, 3)
    assert [w.name for w in layer.trainable_weights] == ["bias", "lora_kernel_a", "lora_kernel_b"]
    layer.lora_kernel_b.assign(rng.standard_normal((2, 3)).astype("float32"))
    kernel = layer._kernel.numpy() + 2.0 * (layer.lora_kernel_a.numpy() @ layer.lora_kernel_b.numpy())
    np.testing.assert_allclose(layer(x), np.einsum("abc,cde->abde", x, kernel) + layer.bias.numpy(),
                               rtol=1e-5, atol=1e-5)
    config = layer.get_config()
    assert config["lora_rank"] == 2 and config["lora_alpha"] == 4.0
    with pytest.raises(ValueError, match="already enabled"):
        layer.enable_lora(2)


def gqa_reference(layer, query, value, mask=None):
    """Keras 3.15's GroupedQueryAttention in numpy: EinsumDense projections, keys and values
    repeated over the query heads, Softmax(mask) (masked to -1e9, then zeroed)."""
    (wq, bq), (wk, bk), (wv, bv), (wo, bo) = [(d.kernel.numpy().astype("float64"), d.bias.numpy().astype("float64"))
                                              for d in (layer._query_dense, layer._key_dense, layer._value_dense,
                                                        layer._output_dense)]
    repeats = layer.num_query_heads // layer.num_key_value_heads
    q = (np.einsum("bqm,muh->bquh", query, wq) + bq) / np.sqrt(layer.head_dim)
    k = np.repeat(np.einsum("bkm,mvh->bkvh", value, wk) + bk, repeats, axis=2)
    v = np.repeat(np.einsum("bkm,mvh->bkvh", value, wv) + bv, repeats, axis=2)
    scores = np.einsum("bquh,bkuh->buqk", q, k)
    if mask is not None:
        scores = np.where(mask[:, None], scores, -1e9)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    weights = e / e.sum(-1, keepdims=True)
    if mask is not None:
        weights = np.where(mask[:, None], weights, 0.0)
    return np.einsum("bquh,uhm->bqm", np.einsum("buqk,bkuh->bquh", weights, v), wo) + bo, weights


def test_group_query_attention_matches_keras_formula():
    layer = GroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=2, bias_initializer="ones")
    query = rng.standard_normal((2, 4, 5)).astype("float32")
    value = rng.standard_normal((2, 6, 5)).astype("float32")
    attention_mask = rng.random((2, 4, 6)) > 0.3
    attention_mask[..., 0] = True
    out, scores = layer(query, value, attention_mask=attention_mask, return_attention_scores=True)
    assert [w.path for w in layer.weights] == [f"{n}/{w}" for n in ("query", "key", "value", "attention_output")
                                               for w in ("kernel", "bias")]
    assert layer._query_dense.kernel.shape == (5, 4, 3) and layer._key_dense.kernel.shape == (5, 2, 3)
    assert layer._output_dense.kernel.shape == (4, 3, 5) and layer._output_dense.bias.shape == (5,)
    expected, expected_scores = gqa_reference(layer, query, value, attention_mask)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # causal mask combined with query and value padding masks (Keras's _compute_attention_mask)
    query_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    value_mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 1, 1, 1]], bool)
    causal = np.tril(np.ones((4, 6), bool))
    mask = query_mask[:, :, None] & value_mask[:, None, :] & causal[None]
    out, scores = layer(query, value, query_mask=query_mask, value_mask=value_mask, use_causal_mask=True,
                        return_attention_scores=True)
    expected, expected_scores = gqa_reference(layer, query, value, mask)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(scores)[0, :, 3] == 0)  # a fully masked query row attends to nothing
    without_bias = GroupQueryAttention(head_dim=2, num_query_heads=2, num_key_value_heads=1, use_bias=False,
                                       flash_attention=False)
    np.testing.assert_allclose(without_bias(query, value), _no_bias_reference(without_bias, query, value),
                               rtol=1e-4, atol=1e-5)
    assert len(without_bias.weights) == 4


def _no_bias_reference(layer, query, value):
    wq, wk, wv, wo = [d.kernel.numpy() for d in (layer._query_dense, layer._key_dense, layer._value_dense,
                                                  layer._output_dense)]
    q = np.einsum("bqm,muh->bquh", query, wq) / np.sqrt(layer.head_dim)
    k = np.repeat(np.einsum("bkm,mvh->bkvh", value, wk), 2, axis=2)
    v = np.repeat(np.einsum("bkm,mvh->bkvh", value, wv), 2, axis=2)
    scores = np.einsum("bquh,bkuh->buqk", q, k)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return np.einsum("bquh,uhm->bqm", np.einsum("buqk,bkuh->bquh", e / e.sum(-1, keepdims=True), v), wo)


def test_group_query_attention_config_and_errors():
    layer = GroupQueryAttention(head_dim=4, num_query_heads=6, num_key_value_heads=3, dropout=0.1, seed=3,
                                kernel_initializer="he_normal")
    config = layer.get_config()
    assert config["num_query_heads"] == 6 and config["kernel_initializer"]["class_name"] == "HeNormal"
    assert GroupQueryAttention.from_config(config).get_config() == config
    assert keras.layers.deserialize(keras.layers.serialize(layer)).get_config() == config
    with pytest.raises(ValueError, match="divisible"):
        GroupQueryAttention(head_dim=4, num_query_heads=6, num_key_value_heads=4)
    with pytest.raises(NotImplementedError, match="sliding_window"):
        GroupQueryAttention(head_dim=4, num_query_heads=2, num_key_value_heads=1, sliding_window=3)


def test_compiled_gradients_match_finite_differences():
    """float64 d sum(f(x) * w) / dx through the compiled graph, against central differences of
    the numpy references above."""
    einsum = EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de", dtype="float64",
                         bias_initializer="random_normal")
    gqa = GroupQueryAttention(head_dim=2, num_query_heads=4, num_key_value_heads=2, dtype="float64",
                              bias_initializer="random_normal")
    shape, causal = (2, 3, 4), np.tril(np.ones((3, 3), bool))[None]
    graph = Graph("attention_grads")
    weights = {"einsum": rng.standard_normal((2, 3, 2, 3)), "gqa": rng.standard_normal(shape)}
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder(shape, "float64", "x").id)
        for name, y in (("einsum", einsum(x)), ("gqa", gqa(x, x, use_causal_mask=True))):
            assert y.dtype == "float64"
            graph.outputs += gradients(graph, ops.sum(ops.multiply(y, weights[name])).node_id, [x.node_id])
    x_value = rng.standard_normal(shape)
    analytic = [np.asarray(g) for g in compile_graph(graph)(x_value)]
    references = {"einsum": lambda v: np.einsum("abc,cde->abde", v, einsum.kernel.numpy()) + einsum.bias.numpy(),
                  "gqa": lambda v: gqa_reference(gqa, v, v, np.broadcast_to(causal, (2, 3, 3)))[0]}
    for (name, reference), grad in zip(references.items(), analytic):
        numeric = np.zeros(shape)
        for index in np.ndindex(shape):
            plus, minus = x_value.copy(), x_value.copy()
            plus[index] += 1e-6
            minus[index] -= 1e-6
            numeric[index] = np.sum((reference(plus) - reference(minus)) * weights[name]) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def test_group_query_attention_trains_in_a_functional_model():
    tokens = keras.Input((6, 8))
    attended = GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2, dropout=0.1,
                                   seed=1)(tokens, tokens, use_causal_mask=True)
    model = keras.Model(tokens, keras.layers.Dense(1)(keras.layers.Flatten()(attended)))
    model.compile(optimizer="adam", loss="mse")
    x = rng.standard_normal((32, 6, 8)).astype("float32")
    y = x.sum((1, 2))[:, None].astype("float32")
    history = model.fit(x, y, epochs=4, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    layer = model.layers[1]
    expected = gqa_reference(layer, x[:3].astype("float64"), x[:3].astype("float64"),
                             np.broadcast_to(np.tril(np.ones((6, 6), bool)), (3, 6, 6)))[0]
    np.testing.assert_allclose(layer(x[:3], x[:3], use_causal_mask=True), expected, rtol=1e-4, atol=1e-4)


KERAS_MODEL = """
import sys, numpy as np, keras
out = sys.argv[1]
q, v, ids = keras.Input((5, 6)), keras.Input((7, 6)), keras.Input((5,), dtype="int32")
h = keras.layers.EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de", bias_initializer="random_normal")(q)
a = keras.layers.GroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=2,
                                     bias_initializer="random_normal")(keras.layers.Reshape((5, 6))(h), v,
                                                                       use_causal_mask=True)
e = keras.layers.ReversibleEmbedding(11, 6, tie_weights=False, embeddings_initializer="random_normal")
model = keras.Model([q, v, ids], e(keras.layers.Add()([a, e(ids)]), reverse=True))
rng = np.random.default_rng(0)
xs = [rng.standard_normal((2, 5, 6)).astype("float32"), rng.standard_normal((2, 7, 6)).astype("float32"),
      rng.integers(0, 11, (2, 5)).astype("int32")]
for i, x in enumerate(xs):
    np.save(f"{out}/input_{i}.npy", x)
np.save(f"{out}/output.npy", np.asarray(model.predict(xs, verbose=0)))
model.save(f"{out}/model.keras")
"""


@pytest.mark.skipif(keras_python() is None, reason=SKIP_REASON)
def test_keras_written_file_loads_and_predicts_the_same(tmp_path):
    """EinsumDense, GroupQueryAttention and ReversibleEmbedding in a model saved by Keras 3 itself:
    kgraph reads the config and the weights (by Keras's names and shapes) and predicts the same."""
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax")}
    done = subprocess.run([keras_python(), "-c", KERAS_MODEL, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    model = saving.load_model(str(tmp_path / "model.keras"))
    xs = [np.load(tmp_path / f"input_{i}.npy") for i in range(3)]
    np.testing.assert_allclose(model.predict(xs, verbose=0), np.load(tmp_path / "output.npy"), rtol=1e-5,
                               atol=1e-5)
