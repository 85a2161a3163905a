"""The fused attention op (kgraph/ops/attention.py) and the layers that route through it.

Oracles: a per-row numpy softmax attention written here (loops over batch, head and query
row, independent of the op's vectorized reference), its central finite differences in
float64, the layers' unfused path, and onnxruntime. The compiled graphs are shared by
module-scoped fixtures (numba compiles each once).
"""

from __future__ import annotations

import contextlib

import numpy as np
import onnxruntime as ort
import pytest

import kgraph as keras
from kgraph import layers, ops
from kgraph.compiler.autodiff import gradients
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.exporters.onnx import convert, trace_inference_graph
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.ops import attention as fused


def oracle(q, k, v, mask=None, scale=1.0, causal=False, empty_rows="uniform"):
    """softmax attention one query row at a time."""
    B, Tq, H, _ = q.shape
    _, Tk, Hk, Dv = v.shape
    allowed = np.broadcast_to(np.ones((1, 1, 1, 1), bool) if mask is None else mask, (B, H, Tq, Tk))
    out = np.zeros((B, Tq, H, Dv), np.result_type(q, v))
    for b in range(B):
        for h in range(H):
            g = h // (H // Hk)
            for i in range(Tq):
                keys = [j for j in range(Tk) if allowed[b, h, i, j] and (not causal or j <= i)]
                if not keys:
                    out[b, i, h] = v[b, :, g].mean(0) if empty_rows == "uniform" else 0.0
                    continue
                logits = scale * (k[b, keys, g] @ q[b, i, h])
                weights = np.exp(logits - logits.max())
                out[b, i, h] = (weights / weights.sum()) @ v[b, keys, g]
    return out


def _qkv(rng, B=2, Tq=5, Tk=6, H=2, Hk=2, D=3, Dv=4, dtype=np.float32):
    return [rng.standard_normal(shape).astype(dtype) for shape in ((B, Tq, H, D), (B, Tk, Hk, D), (B, Tk, Hk, Dv))]


def _cases(dtype):
    """(name, [q, k, v(, mask)], attrs): padding masks, causal, grouped heads, empty rows."""
    rng = np.random.default_rng(7)
    padding = np.ones((2, 1, 1, 6), bool)
    padding[0, ..., 4:] = False
    padding[1, ..., 1] = False
    holes = rng.random((2, 2, 5, 6)) < 0.5
    holes[1, 0, 3] = False  # a query row with no key to attend to
    attrs = {"scale": 0.6, "causal": False, "empty_rows": "uniform"}
    return [
        ("plain", _qkv(rng, dtype=dtype), attrs),
        ("padding", _qkv(rng, dtype=dtype) + [padding], attrs),
        ("causal", _qkv(rng, Tk=5, dtype=dtype), {**attrs, "causal": True}),
        ("causal-padding", _qkv(rng, dtype=dtype) + [padding], {**attrs, "causal": True, "scale": 1.3}),
        ("empty-uniform", _qkv(rng, dtype=dtype) + [holes], attrs),
        ("empty-zero", _qkv(rng, dtype=dtype) + [holes], {**attrs, "empty_rows": "zero"}),
        ("grouped", _qkv(rng, H=4, Hk=2, dtype=dtype) + [rng.random((1, 4, 5, 6)) < 0.8],
         {**attrs, "causal": True}),
        # long enough for several query blocks (131072 // 1100 = 119 rows each) and the exp's clamp
        ("blocks", [3 * x for x in _qkv(rng, Tq=250, Tk=1100, H=1, Hk=1, D=8, Dv=3, dtype=dtype)],
         {**attrs, "causal": True}),
    ]


def _compiled(cases, with_grads):
    """One graph over every case (batch dimension None): outputs, and gradients of sum(out * w)."""
    graph = Graph("fused_attention_cases")
    feeds, slots, weights = [], {}, {}
    with tracing(graph):
        for name, inputs, attrs in cases:
            symbols = []
            for x in inputs:
                node = graph.add_placeholder((None,) + x.shape[1:] if x.shape[0] == inputs[0].shape[0] else x.shape,
                                             x.dtype.name, f"{name}.in{len(symbols)}")
                symbols.append(SymbolicTensor(graph, node.id))
                feeds.append(x)
            out = fused.attention(*symbols[:3], symbols[3] if len(symbols) > 3 else None, **attrs)
            slots[name] = [len(graph.outputs)]
            graph.outputs.append(out.node_id)
            if with_grads:
                w = np.random.default_rng(len(feeds)).standard_normal((inputs[0].shape[0],) + out.shape[1:])
                weights[name] = w
                node = graph.add_placeholder((None,) + out.shape[1:], out.dtype, f"{name}.w")
                feeds.append(w.astype(out.dtype))
                loss = ops.sum(ops.multiply(out, SymbolicTensor(graph, node.id)))
                for grad in gradients(graph, loss.node_id, [s.node_id for s in symbols[:3]]):
                    slots[name].append(len(graph.outputs))
                    graph.outputs.append(grad)
    results = [np.array(x) for x in compile_graph(graph)(*feeds)]
    return {name: [results[i] for i in slots[name]] for name in slots}, weights


@pytest.fixture(scope="module")
def float32_results():
    cases = _cases(np.float32)
    return cases, _compiled(cases, with_grads=False)[0]


@pytest.fixture(scope="module")
def float64_results():
    cases = _cases(np.float64)
    results, weights = _compiled(cases, with_grads=True)
    return cases, results, weights


@pytest.mark.parametrize("name", [c[0] for c in _cases(np.float32)])
def test_forward_matches_the_row_by_row_oracle(float32_results, name):
    cases, results = float32_results
    _, inputs, attrs = next(c for c in cases if c[0] == name)
    expected = oracle(*inputs[:3], inputs[3] if len(inputs) > 3 else None, **attrs)
    np.testing.assert_allclose(results[name][0], expected, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("name", [c[0] for c in _cases(np.float64)])
def test_compiled_gradients_match_finite_differences(float64_results, name):
    cases, results, weights = float64_results
    _, inputs, attrs = next(c for c in cases if c[0] == name)
    mask, w = (inputs[3] if len(inputs) > 3 else None), weights[name]
    rng = np.random.default_rng(3)
    eps = 1e-6
    for which in range(3):
        for _ in range(3):  # directional derivatives along random directions
            direction = rng.standard_normal(inputs[which].shape)
            plus = [x + eps * direction if n == which else x for n, x in enumerate(inputs[:3])]
            minus = [x - eps * direction if n == which else x for n, x in enumerate(inputs[:3])]
            numeric = (np.sum(oracle(*plus, mask, **attrs) * w) - np.sum(oracle(*minus, mask, **attrs) * w)) / (2 * eps)
            analytic = np.sum(results[name][1 + which] * direction)
            assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-7), (name, which)


def test_empty_rows_have_no_gradient(float64_results):
    _, results, _ = float64_results
    dq = results["empty-uniform"][1]
    assert np.all(dq[1, 3, 0] == 0)


def test_errors_name_the_op():
    q = np.zeros((2, 3, 2, 4), np.float32)
    with pytest.raises(ValueError, match="attention: key"):
        fused.attention(q, np.zeros((2, 3, 2, 5), np.float32), q)
    with pytest.raises(ValueError, match="attention: the mask must be bool"):
        fused.attention(q, q, q, np.ones((2, 3, 3, 3), bool))
    with pytest.raises(ValueError, match="multiple of the key's"):
        fused.attention(np.zeros((2, 3, 3, 4), np.float32), q, q)


# -- the layers: fused against unfused ---------------------------------------------------------
@contextlib.contextmanager
def _mode(mode):
    saved, fused.MODE = fused.MODE, mode
    try:
        yield
    finally:
        fused.MODE = saved


def _uses_fused_op(model, kind):
    function = next(f for key, f in model._compiled_functions.items() if key[0] == kind)
    return any(node.op == "attention" for node in function.graph.nodes())


T, FEATURES = 6, 8


def _mha_model(layer):
    tokens = keras.Input((T, FEATURES), name="tokens")
    allowed = keras.Input((1, T), dtype="bool", name="allowed")
    out = layer(tokens, tokens, attention_mask=allowed, use_causal_mask=True)
    model = keras.Model([tokens, allowed], layers.Dense(3)(out))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def _data(n=10):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, T, FEATURES)).astype(np.float32)
    allowed = np.ones((n, 1, T), bool)
    allowed[::2, :, 4:] = False  # padded keys; key 0 stays, so no row is empty
    y = np.tanh(x[..., :3] + x[..., 3:6]).astype(np.float32)
    return x, allowed, y


LAYERS = {"mha": lambda: layers.MultiHeadAttention(num_heads=2, key_dim=4, seed=1),
          "gqa": lambda: layers.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2, seed=1)}


def _pair(name):
    """(models, outcomes, initial weights): the layer fused and unfused from the same weights,
    each predicting and training one step."""
    x, allowed, y = _data()
    models, outcome, initial = {}, {}, None
    for mode in ("always", "never"):
        keras.utils.set_random_seed(5)
        model = _mha_model(LAYERS[name]())
        if models:
            model.set_weights(initial)
        else:
            initial = model.get_weights()
        with _mode(mode):
            predicted = model.predict([x, allowed], verbose=0)
            loss = model.train_on_batch([x, allowed], y)
        models[mode] = model
        outcome[mode] = (predicted, loss, model.get_weights())
    return models, outcome, initial


@pytest.fixture(scope="module")
def pairs():
    return {name: _pair(name) for name in sorted(LAYERS)}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_the_layers_take_the_fused_op_only_when_asked(pairs, name):
    models, _, _ = pairs[name]
    for kind in ("predict", "train"):
        assert _uses_fused_op(models["always"], kind) and not _uses_fused_op(models["never"], kind)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_fused_layer_equals_the_unfused_layer(pairs, name):
    _, outcome, initial = pairs[name]
    (p_fused, loss_fused, w_fused), (p_plain, loss_plain, w_plain) = outcome["always"], outcome["never"]
    np.testing.assert_allclose(p_fused, p_plain, rtol=1e-4, atol=1e-5)
    assert loss_fused == pytest.approx(loss_plain, rel=1e-5)
    for a, b, w0 in zip(w_fused, w_plain, initial):
        np.testing.assert_allclose(a - w0, b - w0, rtol=1e-3, atol=1e-6)  # the updates agree


def test_fused_mha_trains_through_fit(pairs):
    model = pairs["mha"][0]["always"]  # its compiled training step serves fit (the batch dimension is None)
    x, allowed, y = _data(32)
    history = model.fit([x, allowed], y, batch_size=8, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert _uses_fused_op(model, "train") and losses[-1] < 0.8 * losses[0]


def test_dropout_and_scores_keep_the_unfused_path():
    q = keras.Input((T, 2, 4))
    assert not fused.use_fused(q, q, dropout=True) and not fused.use_fused(q, q, scores=True)
    with _mode("always"):
        assert fused.use_fused(q, q)
    with _mode("never"):
        assert not fused.use_fused(q, q)
    with _mode("auto"):  # the measured thresholds
        short, long = keras.Input((32, 2, 4)), keras.Input((64, 2, 4))
        assert not fused.use_fused(short, short) and fused.use_fused(long, long)
        assert fused.use_fused(short, short, training=False) and not fused.use_fused(q, q, training=False)


def test_fused_mha_exports_to_onnx():
    x, allowed, _ = _data(4)
    keras.utils.set_random_seed(2)
    model = _mha_model(LAYERS["mha"]())
    with _mode("always"):
        graph = trace_inference_graph(model)
        assert any(node.op == "attention" for node in graph.nodes())
        expected = model.predict([x, allowed], verbose=0)
    proto, _ = convert(graph, 17)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"tokens": x, "allowed": allowed})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_dot_product_attention_routes_through_the_fused_op():
    rng = np.random.default_rng(4)
    q, k, v = _qkv(rng)
    mask = rng.random((5, 6)) < 0.7
    mask[:, 0] = True
    graph = Graph("dpa")
    with tracing(graph), _mode("always"):
        symbols = [SymbolicTensor(graph, graph.add_placeholder(x.shape, "float32", f"x{n}").id)
                   for n, x in enumerate((q, k, v))]
        out = ops.dot_product_attention(*symbols, mask=mask, is_causal=True)
        graph.outputs.append(out.node_id)
    assert any(node.op == "attention" for node in graph.nodes())
    got = np.array(compile_graph(graph)(q, k, v)[0])
    np.testing.assert_allclose(got, oracle(q, k, v, mask, scale=3 ** -0.5, causal=True), rtol=1e-4, atol=2e-5)
