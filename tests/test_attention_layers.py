"""Attention layers against numpy transcriptions of Keras 3's formulas."""

import numpy as np

import kgraph as keras
from kgraph.layers.attention import AdditiveAttention, Attention, Dot, MultiHeadAttention

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
