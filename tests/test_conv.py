"""Convolution, pooling and upsampling ops: shape rules, references, gradients, numba kernels.

- The numpy references against naive loop implementations written from the definitions
  (Keras' transposed convolution included), so the oracle is itself checked.
- float64 gradients of the public ops (channels_first, depthwise, separable, transposed,
  pooling, upsampling) against central finite differences, on the reference interpreter.
- The numba path in float32 against the reference interpreter: one module, compiled once
  for the whole file (numba compile time dominates), holding the forward values and the
  gradients of every configuration, run at several batch sizes; plus the fused epilogues
  (bias + relu into the convolution, the relu gradient into max pooling's gradient).

Every op's registry samples also run in tests/test_ops.py.
"""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest

from kgraph import ops
from kgraph.compiler.autodiff import gradients
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.runtime.reference import evaluate

conv_ops = importlib.import_module("kgraph.ops.conv")
pool_ops = importlib.import_module("kgraph.ops.pool")


def _rng(seed=0):
    return np.random.default_rng(seed)


# -- naive oracles --------------------------------------------------------------------------------
def naive_conv(x, w, strides, padding, dilation, groups=1):
    """Direct N-d convolution (channels_last) from its definition, with explicit pads."""
    rank = x.ndim - 2
    n, channels = x.shape[0], x.shape[-1]
    kernel = w.shape[:rank]
    per_group, filters = w.shape[-2], w.shape[-1]
    per_filter = filters // groups
    spatial = x.shape[1:-1]
    out_spatial = [(L + lo + hi - (k - 1) * d - 1) // s + 1
                   for L, k, s, d, (lo, hi) in zip(spatial, kernel, strides, dilation, padding)]
    out = np.zeros((n, *out_spatial, filters), np.float64)
    for b in range(n):
        for o in itertools.product(*(range(v) for v in out_spatial)):
            for f in range(filters):
                g = f // per_filter
                total = 0.0
                for t in itertools.product(*(range(k) for k in kernel)):
                    pos = [oi * s + ti * d - lo for oi, ti, s, d, (lo, _) in zip(o, t, strides, dilation, padding)]
                    if all(0 <= p < L for p, L in zip(pos, spatial)):
                        for c in range(per_group):
                            total += x[(b, *pos, g * per_group + c)] * w[(*t, c, f)]
                out[(b, *o, f)] = total
    assert channels == per_group * groups
    return out


def naive_conv_transpose_keras(x, w, strides, padding, output_padding, dilation):
    """Keras 3 (JAX backend) conv_transpose: dilate the input by the strides, pad it as
    keras' _convert_conv_transpose_padding_args_from_keras_to_jax does, and correlate with
    the spatially flipped kernel (kernel layout: kernel_size + (filters, input channels))."""
    rank = x.ndim - 2
    pads = []
    for i in range(rank):
        k = (w.shape[i] - 1) * dilation[i] + 1
        s = strides[i]
        extra = None if output_padding is None else output_padding[i]
        if padding == "valid":
            extra = max(k, s) - k if extra is None else extra
            pads.append((k - 1, k - 1 + extra))
        else:
            pad_len = s + k - 2 if extra is None else k + k % 2 - 2 + extra
            left = min(pad_len // 2 + pad_len % 2, k - 1)
            pads.append((left, pad_len - left))
    dilated_shape = [(L - 1) * s + 1 for L, s in zip(x.shape[1:-1], strides)]
    dilated = np.zeros((x.shape[0], *dilated_shape, x.shape[-1]))
    dilated[(slice(None),) + tuple(slice(None, None, s) for s in strides)] = x
    flipped = w[tuple(slice(None, None, -1) for _ in range(rank))]
    flipped = np.swapaxes(flipped, -1, -2)  # (k..., in, filters)
    return naive_conv(dilated, flipped, (1,) * rank, pads, dilation)


def naive_pool(x, window, strides, padding, mode):
    rank = x.ndim - 2
    spatial = x.shape[1:-1]
    out_spatial = [(L + lo + hi - k) // s + 1 for L, k, s, (lo, hi) in zip(spatial, window, strides, padding)]
    out = np.zeros((x.shape[0], *out_spatial, x.shape[-1]))
    for b in range(x.shape[0]):
        for o in itertools.product(*(range(v) for v in out_spatial)):
            values = []
            for t in itertools.product(*(range(k) for k in window)):
                pos = [oi * s + ti - lo for oi, ti, s, (lo, _) in zip(o, t, strides, padding)]
                if all(0 <= p < L for p, L in zip(pos, spatial)):
                    values.append(x[(b, *pos)])
            out[(b, *o)] = np.max(values, axis=0) if mode == "max" else np.mean(values, axis=0)
    assert rank == len(window)
    return out


def naive_bilinear(x, size):
    """Half-pixel-centre bilinear upsampling with edge clamping (Keras' resize)."""
    n, height, width, channels = x.shape
    out = np.zeros((n, height * size[0], width * size[1], channels))
    for i in range(height * size[0]):
        for j in range(width * size[1]):
            yc = min(max((i + 0.5) / size[0] - 0.5, 0), height - 1)
            xc = min(max((j + 0.5) / size[1] - 0.5, 0), width - 1)
            y0, x0 = int(np.floor(yc)), int(np.floor(xc))
            y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
            wy, wx = yc - y0, xc - x0
            out[:, i, j] = ((1 - wy) * (1 - wx) * x[:, y0, x0] + (1 - wy) * wx * x[:, y0, x1]
                            + wy * (1 - wx) * x[:, y1, x0] + wy * wx * x[:, y1, x1])
    return out


# -- shape rules -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,kernel,strides,padding,dilation,expected", [
    ((None, 250, 250, 3), (5, 5, 3, 32), 2, "valid", 1, (None, 123, 123, 32)),
    ((None, 32, 32, 3), (3, 3, 3, 16), 1, "same", 1, (None, 32, 32, 16)),
    ((None, 7, 9, 4), (3, 3, 4, 8), (2, 3), "same", 1, (None, 4, 3, 8)),
    ((None, 10, 4), (3, 4, 6), 1, "causal", 2, (None, 10, 6)),
    ((None, 9, 9, 9, 2), (3, 3, 3, 2, 5), 1, "valid", (2, 1, 1), (None, 5, 7, 7, 5)),
])
def test_conv_output_shapes(shape, kernel, strides, padding, dilation, expected):
    graph = Graph("shapes")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder(shape, "float32", "x").id)
        w = SymbolicTensor(graph, graph.add_placeholder(kernel, "float32", "w").id)
        y = ops.conv(x, w, strides, padding, dilation_rate=dilation)
    assert y.shape == expected


def test_shape_errors_name_the_problem():
    x = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="does not fit"):
        ops.conv(x, np.zeros((5, 5, 3, 2), np.float32))
    with pytest.raises(ValueError, match="channels"):
        ops.conv(x, np.zeros((3, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="padding"):
        ops.conv(x, np.zeros((3, 3, 3, 2), np.float32), padding="full")
    with pytest.raises(ValueError, match="pooling window"):
        ops.max_pool(x, 5)


# -- references against naive loops -------------------------------------------------------------------
CONV_CASES = [  # (input shape, kernel shape, strides, padding, dilation)
    ((2, 6, 5, 3), (3, 3, 3, 4), (1, 1), "valid", (1, 1)),
    ((2, 7, 6, 4), (3, 2, 4, 5), (2, 1), "same", (1, 1)),
    ((2, 8, 7, 2), (3, 3, 2, 3), (1, 1), "same", (2, 1)),
    ((1, 9, 3), (3, 3, 2), (2,), "valid", (1,)),
    ((1, 4, 5, 4, 2), (2, 3, 2, 2, 3), (1, 2, 1), "same", (1, 1, 1)),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c[0]) for c in CONV_CASES])
def test_conv_reference_matches_naive_loops(case):
    shape, kernel, strides, padding, dilation = case
    rng = _rng(1)
    x, w = rng.standard_normal(shape), rng.standard_normal(kernel)
    pads = conv_ops.resolve_padding(padding, shape[1:-1], kernel[:-2], strides, dilation)
    np.testing.assert_allclose(ops.conv(x, w, strides, padding, dilation_rate=dilation),
                               naive_conv(x, w, strides, pads, dilation), rtol=1e-10, atol=1e-10)


def test_grouped_and_depthwise_references_match_naive_loops():
    rng = _rng(2)
    x = rng.standard_normal((2, 5, 6, 4))
    w = rng.standard_normal((3, 3, 2, 6))  # 2 groups of 2 channels -> 3 filters each
    np.testing.assert_allclose(ops.conv(x, w, 1, "same"), naive_conv(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 2),
                               atol=1e-10)
    depthwise = rng.standard_normal((3, 3, 4, 2))  # multiplier 2: output channel c * 2 + m
    expected = naive_conv(x, depthwise.reshape(3, 3, 1, 8), (2, 2), ((0, 0), (0, 0)), (1, 1), 4)
    np.testing.assert_allclose(ops.depthwise_conv(x, depthwise, 2), expected, atol=1e-10)
    pointwise = rng.standard_normal((1, 1, 8, 5))
    expected = naive_conv(expected, pointwise, (1, 1), ((0, 0), (0, 0)), (1, 1))
    np.testing.assert_allclose(ops.separable_conv(x, depthwise, pointwise, 2), expected, atol=1e-10)


def test_channels_first_is_channels_last_transposed():
    rng = _rng(3)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((3, 3, 3, 4))
    last = ops.conv(np.moveaxis(x, 1, -1), w, 2, "same")
    np.testing.assert_allclose(ops.conv(x, w, 2, "same", data_format="channels_first"), np.moveaxis(last, -1, 1))
    pooled = ops.max_pool(np.moveaxis(x, 1, -1), 2)
    np.testing.assert_allclose(ops.max_pool(x, 2, data_format="channels_first"), np.moveaxis(pooled, -1, 1))


TRANSPOSE_CASES = [  # (input shape, kernel shape, strides, padding, output_padding, dilation)
    ((2, 4, 4, 3), (3, 3, 5, 3), (1, 1), "valid", None, (1, 1)),
    ((2, 4, 5, 3), (3, 3, 2, 3), (2, 2), "valid", None, (1, 1)),
    ((2, 4, 5, 3), (3, 3, 2, 3), (2, 2), "same", None, (1, 1)),
    ((1, 3, 4, 2), (4, 3, 2, 2), (3, 2), "same", (1, 0), (1, 1)),
    ((1, 3, 4, 2), (2, 3, 3, 2), (3, 2), "valid", (2, 1), (1, 1)),
    ((1, 5, 2), (3, 2, 2), (1,), "same", None, (2,)),
    ((1, 2, 3, 2, 2), (2, 2, 3, 3, 2), (2, 1, 2), "same", None, (1, 1, 1)),
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=[f"{c[0]}-{c[3]}-{c[4]}" for c in TRANSPOSE_CASES])
def test_conv_transpose_matches_keras_semantics(case):
    shape, kernel, strides, padding, output_padding, dilation = case
    rng = _rng(4)
    x, w = rng.standard_normal(shape), rng.standard_normal(kernel)
    got = ops.conv_transpose(x, w, strides, padding, output_padding, dilation_rate=dilation)
    np.testing.assert_allclose(got, naive_conv_transpose_keras(x, w, strides, padding, output_padding, dilation),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_reference_matches_naive_loops(mode, padding):
    rng = _rng(5)
    x = rng.standard_normal((2, 7, 6, 3))
    pads = conv_ops.resolve_padding(padding, (7, 6), (3, 2), (2, 2), (1, 1))
    pool = ops.max_pool if mode == "max" else ops.average_pool
    np.testing.assert_allclose(pool(x, (3, 2), 2, padding), naive_pool(x, (3, 2), (2, 2), pads, mode), atol=1e-12)


def test_upsampling_references():
    rng = _rng(6)
    x = rng.standard_normal((2, 3, 4, 2))
    np.testing.assert_allclose(pool_ops.upsample(x, (2, 3)), x.repeat(2, axis=1).repeat(3, axis=2))
    np.testing.assert_allclose(pool_ops.upsample(x, (2, 3), "bilinear"), naive_bilinear(x, (2, 3)), atol=1e-12)


def test_max_pool_gradient_goes_to_the_first_maximum():
    x = np.array([[1.0, 3.0, 3.0, 0.0], [3.0, 2.0, 1.0, 3.0]], np.float32).reshape(1, 2, 4, 1)
    g = np.array([10.0, 20.0], np.float32).reshape(1, 1, 2, 1)
    attrs = {"window": (2, 2), "strides": (2, 2), "pads": ((0, 0), (0, 0))}
    dx = pool_ops._max_grad_reference(attrs, x, g).reshape(2, 4)
    np.testing.assert_array_equal(dx, [[0, 10, 20, 0], [0, 0, 0, 0]])


# -- float64 gradients of the public ops against finite differences -----------------------------------------
GRAD_CASES = {
    "conv_channels_first_same_strided": (
        lambda x, w: ops.conv(x, w, (2, 1), "same", data_format="channels_first"), ((2, 3, 5, 4), (3, 2, 3, 2))),
    "conv_dilated_causal_1d": (lambda x, w: ops.conv(x, w, 1, "causal", dilation_rate=2), ((2, 7, 2), (3, 2, 3))),
    "depthwise_same": (lambda x, w: ops.depthwise_conv(x, w, 1, "same"), ((2, 4, 5, 3), (3, 3, 3, 2))),
    "separable": (lambda x, d, p: ops.separable_conv(x, d, p, 1, "valid"), ((2, 5, 4, 2), (3, 2, 2, 2), (1, 1, 4, 3))),
    "conv_transpose_same_output_padding": (
        lambda x, w: ops.conv_transpose(x, w, 2, "same", output_padding=1), ((2, 3, 3, 2), (3, 3, 3, 2))),
    "conv_transpose_3d": (lambda x, w: ops.conv_transpose(x, w, (1, 2, 1), "valid"),
                          ((2, 2, 2, 3, 2), (2, 2, 2, 2, 2))),
    "max_pool_same": (lambda x: ops.max_pool(x, 3, 2, "same"), ((2, 5, 6, 2),)),
    "average_pool_channels_first": (
        lambda x: ops.average_pool(x, (2, 3), (1, 2), "same", data_format="channels_first"), ((2, 2, 4, 5),)),
    "max_pool_3d": (lambda x: ops.max_pool(x, (2, 2, 1)), ((2, 4, 3, 2, 2),)),
    "upsample_bilinear": (lambda x: pool_ops.upsample(x, (2, 3), "bilinear"), ((2, 2, 3, 2),)),
    "upsample_nearest_1d": (lambda x: pool_ops.upsample(x, (3,)), ((2, 4, 2),)),
}


def _loss_graph(fn, shapes, weights):
    graph = Graph("fd")
    with tracing(graph):
        inputs = [SymbolicTensor(graph, graph.add_placeholder(s, "float64", f"in{i}").id)
                  for i, s in enumerate(shapes)]
        y = fn(*inputs)
        loss = ops.sum(ops.multiply(y, weights))
        graph.outputs = [loss.node_id] + gradients(graph, loss.node_id, [t.node_id for t in inputs])
    return graph


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradients_match_finite_differences(name):
    fn, shapes = GRAD_CASES[name]
    rng = _rng(7)
    inputs = [rng.standard_normal(s) for s in shapes]
    if "max_pool" in name:  # distinct values: the maximum of each window is unique
        inputs[0] = rng.permutation(np.arange(inputs[0].size, dtype=np.float64)).reshape(shapes[0]) / 7
    weights = rng.standard_normal(np.shape(fn(*inputs)))
    graph = _loss_graph(fn, shapes, weights)
    values = evaluate(graph, inputs)[0]
    eps = 1e-6
    for k, x in enumerate(inputs):
        numeric = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            plus, minus = [a.copy() for a in inputs], [a.copy() for a in inputs]
            plus[k][index] += eps
            minus[k][index] -= eps
            numeric[index] = (np.sum(fn(*plus) * weights) - np.sum(fn(*minus) * weights)) / (2 * eps)
        np.testing.assert_allclose(values[1 + k], numeric, rtol=1e-6, atol=1e-7, err_msg=f"{name}: input {k}")


# -- the numba path (float32) against the reference interpreter --------------------------------------------
COMPILED_CASES = {  # name: (function, input shapes with the batch None)
    "conv_bias_relu": (lambda x, w, b: ops.relu(ops.add(ops.conv(x, w, 1, "same"), b)),
                       ((None, 9, 8, 3), (3, 3, 3, 16), (16,))),
    "conv_gemm_strided": (lambda x, w: ops.conv(x, w, 2, "valid"), ((None, 9, 9, 8), (3, 3, 8, 16))),
    "conv_dilated": (lambda x, w: ops.conv(x, w, 1, "same", dilation_rate=2), ((None, 8, 9, 4), (3, 3, 4, 8))),
    "conv_grouped": (lambda x, w: ops.conv(x, w, 1, "valid"), ((None, 6, 6, 8), (3, 3, 4, 16))),
    "conv_channels_first": (lambda x, w: ops.conv(x, w, 1, "same", data_format="channels_first"),
                            ((None, 3, 6, 7), (3, 3, 3, 8))),
    "conv_pointwise": (lambda x, w: ops.conv(x, w), ((None, 5, 5, 8), (1, 1, 8, 12))),
    "conv_1d_causal": (lambda x, w: ops.conv(x, w, 1, "causal"), ((None, 12, 4), (3, 4, 8))),
    "conv_3d": (lambda x, w: ops.conv(x, w, (1, 2, 1), "same"), ((None, 4, 5, 4, 2), (2, 3, 3, 2, 8))),
    "depthwise": (lambda x, w: ops.depthwise_conv(x, w, 2, "same"), ((None, 7, 6, 4), (3, 3, 4, 2))),
    "separable": (lambda x, d, p: ops.separable_conv(x, d, p), ((None, 6, 6, 3), (3, 3, 3, 1), (1, 1, 3, 8))),
    "conv_transpose_relu": (lambda x, w, b: ops.relu(ops.add(ops.conv_transpose(x, w, 2, "same"), b)),
                            ((None, 4, 3, 8), (3, 3, 8, 8), (8,))),
    "conv_transpose_valid_1d": (lambda x, w: ops.conv_transpose(x, w, 3, "valid", output_padding=1),
                                ((None, 4, 8), (3, 6, 8))),
    "conv_sigmoid_epilogue": (lambda x, w: ops.sigmoid(ops.conv(x, w)), ((None, 5, 5, 8), (3, 3, 8, 8))),
    "relu_max_pool": (lambda x, w: ops.max_pool(ops.relu(ops.conv(x, w)), 2), ((None, 10, 10, 2), (3, 3, 2, 8))),
    "max_pool_overlapping_same": (lambda x: ops.max_pool(x, 3, 2, "same"), ((None, 7, 6, 4),)),
    "average_pool_same": (lambda x: ops.average_pool(x, 3, 2, "same"), ((None, 7, 6, 4),)),
    "max_pool_3d": (lambda x: ops.max_pool(x, 2), ((None, 4, 5, 4, 3),)),
    "average_pool_1d": (lambda x: ops.average_pool(x, 2), ((None, 9, 3),)),
    "upsample_nearest": (lambda x: pool_ops.upsample(x, (2, 2)), ((None, 3, 4, 5),)),
    "upsample_bilinear": (lambda x: pool_ops.upsample(x, (3, 2), "bilinear"), ((None, 3, 4, 5),)),
    "global_max": (lambda x: ops.max(x, axis=(1, 2)), ((None, 5, 4, 6),)),
}
BATCHES = (3, 1)


@pytest.fixture(scope="module")
def compiled_cases():
    """One graph with every case's output and its gradients, compiled once; values per case
    and batch size from numba and from the reference interpreter."""
    rng = _rng(8)
    graph = Graph("test_conv_compiled")
    slots, feeds = {}, {b: [] for b in BATCHES}
    with tracing(graph):
        for name, (fn, shapes) in COMPILED_CASES.items():
            inputs = []
            for i, shape in enumerate(shapes):
                inputs.append(SymbolicTensor(graph, graph.add_placeholder(shape, "float32", f"{name}{i}").id))
                for b in BATCHES:
                    concrete = tuple(b if d is None else d for d in shape)
                    feeds[b].append(rng.standard_normal(concrete).astype(np.float32))
            y = fn(*inputs)
            weight = SymbolicTensor(graph, graph.add_placeholder(y.shape, "float32", f"{name}w").id)
            for b in BATCHES:
                feeds[b].append(rng.standard_normal(tuple(b if d is None else d for d in y.shape)).astype(np.float32))
            loss = ops.sum(ops.multiply(y, weight))
            grads = gradients(graph, loss.node_id, [t.node_id for t in inputs])
            slots[name] = list(range(len(graph.outputs), len(graph.outputs) + 1 + len(grads)))
            graph.outputs += [y.node_id] + grads
    executable = compile_graph(graph)
    results = {}
    for b in BATCHES:
        got = [np.array(o) for o in executable(*feeds[b])]
        expected = evaluate(graph, feeds[b])[0]
        results[b] = (got, expected)
    return executable, slots, results


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", sorted(COMPILED_CASES))
def test_numba_matches_reference(compiled_cases, name, batch):
    _, slots, results = compiled_cases
    got, expected = results[batch]
    for k, slot in enumerate(slots[name]):
        what = "forward" if k == 0 else f"gradient of input {k - 1}"
        scale = max(1.0, float(np.max(np.abs(expected[slot]))))
        assert got[slot].shape == expected[slot].shape, f"{name} {what}"
        np.testing.assert_allclose(got[slot], expected[slot], rtol=1e-4, atol=1e-5 * scale,
                                   err_msg=f"{name} {what} at batch {batch}")


def test_epilogues_fuse_into_the_kernels(monkeypatch):
    """As in a CNN's training step: conv + bias + relu -> max pool, and the gradients. The
    forward's epilogue runs inside the conv kernel and the relu gradient inside max
    pooling's gradient kernel (values checked against the reference interpreter). The
    conv-pool rewrite, which would replace all of it here (test_conv_pool.py), is off: these
    epilogues serve the layers it leaves alone."""
    from kgraph.compiler.passes import pipeline

    monkeypatch.setattr(pipeline, "fuse_conv_pool", lambda graph: 0)
    rng = _rng(9)
    graph = Graph("test_conv_epilogues")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 12, 12, 3), "float32", "x").id)
        w = SymbolicTensor(graph, graph.add_placeholder((3, 3, 3, 16), "float32", "w").id)
        b = SymbolicTensor(graph, graph.add_placeholder((16,), "float32", "b").id)
        w2 = SymbolicTensor(graph, graph.add_placeholder((3, 3, 8, 16), "float32", "w2").id)
        y = ops.max_pool(ops.relu(ops.add(ops.conv(x, w), b)), 2)
        z = ops.conv_transpose(y, w2, 2)
        loss = ops.sum(ops.multiply(z, z))
        graph.outputs = [loss.node_id] + gradients(graph, loss.node_id, [w.node_id, b.node_id, w2.node_id])
    executable = compile_graph(graph)
    feeds = [rng.standard_normal(s).astype(np.float32) for s in ((4, 12, 12, 3), (3, 3, 3, 16), (16,), (3, 3, 8, 16))]
    for got, expected in zip(executable(*feeds), evaluate(graph, feeds)[0]):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.max(np.abs(expected)))))
    compiled = executable.graph
    groups = [(group.kind, [compiled.node(n).op for n in group.nodes]) for group in executable.groups]
    assert ("kernel", ["conv", "add", "relu"]) in groups, groups  # bias and relu applied per block
    assert any(kind == "kernel" and members[-1] == "multiply" and "max_pool_grad" in members
               for kind, members in groups), groups
    # ... and max pooling's gradient kernel computes the relu gradient itself (its last argument)
    calls = [line for line in executable.source.splitlines() if "max_pool_grad(" in line]
    assert any(line.rstrip().endswith(", 1)") for line in calls), calls
