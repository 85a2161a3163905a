"""The keras.ops functions of kgraph/ops/structural.py and nn_structural.py (scatter,
scatter_update, get_item, unique, nonzero, view, rearrange, associative_scan, vectorize,
custom_gradient, unfold, fold, adaptive pooling, ctc_loss, ctc_decode) against numpy
references written here (loops, brute-force enumerations), eagerly and compiled with numba;
gradients compiled in float64 against central finite differences of the numpy reference.

Every compiled case reads slices of one float64 input x, so one graph (one numba compile)
serves the module.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from compiled_cases import compile_cases
from keras_reference import SKIP_REASON, keras_python

from kgraph import ops
from kgraph.compiler.autodiff import gradients
from kgraph.ir import Graph, SymbolicTensor, tracing

SHAPE = (2, 3, 5, 6)
FD_STEP = 1e-6


def _x():
    return np.random.default_rng(5).standard_normal(SHAPE)


# -- numpy references ------------------------------------------------------------------------------------
def _np_scatter(indices, values, shape):
    out = np.zeros(shape, values.dtype)
    for index, value in zip(indices, values):
        out[tuple(index)] += value
    return out


def _np_scatter_update(inputs, indices, updates, reduction):
    out = inputs.copy()
    for index, value in zip(indices, updates):
        index = tuple(index)
        if reduction is None:
            out[index] = value
        elif reduction == "add":
            out[index] = out[index] + value
        elif reduction == "max":
            out[index] = np.maximum(out[index], value)
        elif reduction == "min":
            out[index] = np.minimum(out[index], value)
        else:
            out[index] = out[index] * value
    return out


def _np_unfold(x, kernel, dilation, padding, stride):
    n, c, h, w = x.shape
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel, dilation, padding, stride
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    rows = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    cols = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, c * kh * kw, rows * cols), x.dtype)
    for ch, i, j, r, q in itertools.product(range(c), range(kh), range(kw), range(rows), range(cols)):
        out[:, (ch * kh + i) * kw + j, r * cols + q] = padded[:, ch, r * sh + i * dh, q * sw + j * dw]
    return out


def _np_fold(cols, size, kernel, dilation, padding, stride):
    n = cols.shape[0]
    (h, w), (kh, kw), (dh, dw), (ph, pw), (sh, sw) = size, kernel, dilation, padding, stride
    c = cols.shape[1] // (kh * kw)
    rows = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ncols = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), cols.dtype)
    for ch, i, j, r, q in itertools.product(range(c), range(kh), range(kw), range(rows), range(ncols)):
        padded[:, ch, r * sh + i * dh, q * sw + j * dw] += cols[:, (ch * kh + i) * kw + j, r * ncols + q]
    return padded[:, :, ph:ph + h, pw:pw + w]


def _np_adaptive(x, size, reduce, channels_first):
    """Adaptive pooling by its definition: cell i of an axis of length L pools
    [floor(i L / out), ceil((i + 1) L / out)) (x channels_last unless channels_first)."""
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    spatial = x.shape[1:-1]
    out = np.zeros((x.shape[0],) + tuple(size) + (x.shape[-1],), x.dtype)
    for cell in itertools.product(*[range(s) for s in size]):
        window = tuple(slice(i * n // s, -(-(i + 1) * n // s)) for i, n, s in zip(cell, spatial, size))
        block = x[(slice(None),) + window]
        out[(slice(None),) + cell] = reduce(block.reshape(x.shape[0], -1, x.shape[-1]), axis=1)
    return np.moveaxis(out, -1, 1) if channels_first else out


def _collapse(path, blank):
    labels = [int(c) for k, c in enumerate(path) if c != blank and (k == 0 or c != path[k - 1])]
    return tuple(labels)


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@functools.cache
def _alignments(target, steps, classes, blank):
    """Every path of `steps` classes that collapses to `target` (an array, one path per row)."""
    paths = np.array(list(itertools.product(range(classes), repeat=steps)))
    return paths[np.array([_collapse(p, blank) == target for p in paths])]


def _np_ctc_loss(labels, logits, label_length, logit_length, blank):
    """-log of the summed probability of every alignment that collapses to the label sequence,
    by enumerating all C^T alignments (tiny T and C only)."""
    losses = []
    for b in range(len(labels)):
        steps, classes = int(logit_length[b]), logits.shape[2]
        target = tuple(int(v) for v in labels[b][:label_length[b]])
        alignments = _alignments(target, steps, classes, blank)
        log_probs = _log_softmax(logits[b, :steps])
        scores = log_probs[np.arange(steps), alignments].sum(axis=1)
        top = scores.max()
        losses.append(-(top + np.log(np.exp(scores - top).sum())))
    return np.array(losses)


def _np_scan_linear(a, b, axis, reverse):
    """h_k = a_k h_{k-1} + b_k along `axis` (from the end when reverse), h before the first = 0."""
    a, b = np.moveaxis(a, axis, 0), np.moveaxis(b, axis, 0)
    order = range(len(a) - 1, -1, -1) if reverse else range(len(a))
    prod, h = np.ones_like(a[0]), np.zeros_like(b[0])
    out_a, out_b = np.empty_like(a), np.empty_like(b)
    for k in order:
        prod, h = prod * a[k], a[k] * h + b[k]
        out_a[k], out_b[k] = prod, h
    return np.moveaxis(out_a, 0, axis), np.moveaxis(out_b, 0, axis)


def _compose(first, second):
    """(a1, b1) then (a2, b2) as one affine map: associative, not commutative."""
    (a1, b1), (a2, b2) = first, second
    return ops.multiply(a1, a2), ops.add(ops.multiply(a2, b1), b2)


# -- cases: name -> (kgraph function of x, numpy reference of x, differentiable) -------------------------
SCATTER_AT = np.array([[0, 1], [2, 2], [0, 1], [1, 0]], np.int32)
UPDATE_AT = np.array([[1, 2], [4, 0], [1, 2], [0, -1]], np.int32)
CTC_LABELS = np.array([[1, 2, 2], [3, 1, 0]], np.int32)
CTC_LENGTHS, CTC_STEPS = np.array([3, 1], np.int32), np.array([5, 4], np.int32)
UNFOLD_ARGS = dict(kernel_size=(2, 3), dilation=(1, 2), padding=1, stride=(2, 1))
UNFOLD_NP = ((2, 3), (1, 2), (1, 1), (2, 1))


def _update_case(reduction):
    return (lambda x: ops.scatter_update(x[0, 0], UPDATE_AT, x[1, 0, 0, :4], reduction=reduction),
            lambda x: _np_scatter_update(x[0, 0], UPDATE_AT % [5, 6], x[1, 0, 0, :4], reduction), True)


def _vectorized_dot(x):
    return ops.vectorize(lambda u, v: ops.sum(ops.multiply(u, v)), signature="(n),(n)->()")(x[0, 0], x[0, 1, 0])


CASES = {
    "scatter": (lambda x: ops.scatter(SCATTER_AT, ops.reshape(x, (-1,))[:4], (3, 3)),
                lambda x: _np_scatter(SCATTER_AT, x.reshape(-1)[:4], (3, 3)), True),
    "scatter_rows": (lambda x: ops.scatter([[1], [0], [1]], x[0, 0, :3], (4, 6)),
                     lambda x: _np_scatter([[1], [0], [1]], x[0, 0, :3], (4, 6)), True),
    "scatter_update_set": _update_case(None),
    "scatter_update_add": _update_case("add"),
    "scatter_update_max": _update_case("max"),
    "scatter_update_min": _update_case("min"),
    "scatter_update_mul": _update_case("mul"),
    "scatter_update_rows": (lambda x: ops.scatter_update(x[0, 1], [[3], [0]], x[1, 1, :2]),
                            lambda x: _np_scatter_update(x[0, 1], [[3], [0]], x[1, 1, :2], None), True),
    "get_item": (lambda x: ops.get_item(x, (1, slice(None, None, 2), -1)), lambda x: x[1, ::2, -1], True),
    "get_item_array": (lambda x: ops.get_item(x[0, 0], np.array([4, 0, 4])), lambda x: x[0, 0][[4, 0, 4]], True),
    "unique_size": (lambda x: ops.unique(ops.floor(ops.multiply(x[0, 0], 1.5)), size=8, fill_value=-9.0),
                    lambda x: np.concatenate([sorted(set(np.floor(x[0, 0] * 1.5).ravel())), [-9.0] * 8])[:8], False),
    "unique_counts": (lambda x: ops.unique(ops.floor(x[0, 0]), return_counts=True, size=5)[1],
                      lambda x: np.array([list(np.floor(x[0, 0]).ravel()).count(v)
                                          for v in sorted(set(np.floor(x[0, 0]).ravel()))] + [0] * 5)[:5], False),
    "unique_inverse": (lambda x: ops.unique(ops.floor(x[0, 0]), return_inverse=True, size=6)[1],
                       lambda x: np.vectorize(sorted(set(np.floor(x[0, 0]).ravel())).index)(np.floor(x[0, 0])), False),
    "associative_scan": (lambda x: ops.associative_scan(_compose, (x[0], x[1]), axis=2)[1],
                         lambda x: _np_scan_linear(x[0], x[1], 2, False)[1], True),
    "associative_scan_reverse": (lambda x: ops.associative_scan(_compose, (x[0], x[1]), reverse=True, axis=-1)[0],
                                 lambda x: _np_scan_linear(x[0], x[1], 2, True)[0], True),
    "vectorize_signature": (_vectorized_dot, lambda x: x[0, 0] @ x[0, 1, 0], True),
    "vectorize_scalar": (lambda x: ops.vectorize(lambda a, b: ops.add(ops.multiply(a, a), b))(x[0, 0, 0], 2.0),
                         lambda x: x[0, 0, 0] ** 2 + 2.0, True),
    "rearrange_split": (lambda x: ops.rearrange(x, "b c h (w w1) -> (b w1) c h w", w1=2),
                        lambda x: x.reshape(2, 3, 5, 3, 2).transpose(0, 4, 1, 2, 3).reshape(4, 3, 5, 3), True),
    "rearrange_merge": (lambda x: ops.rearrange(x, "b c h w -> h (b w c)"),
                        lambda x: x.transpose(2, 0, 3, 1).reshape(5, 36), True),
    "unfold": (lambda x: ops.unfold(x, **UNFOLD_ARGS), lambda x: _np_unfold(x, *UNFOLD_NP), True),
    "fold": (lambda x: ops.fold(ops.unfold(x, **UNFOLD_ARGS), (5, 6), **UNFOLD_ARGS),
             lambda x: _np_fold(_np_unfold(x, *UNFOLD_NP), (5, 6), *UNFOLD_NP), True),
    "adaptive_average_pool": (lambda x: ops.adaptive_average_pool(x, (4, 4), data_format="channels_first"),
                              lambda x: _np_adaptive(x, (4, 4), np.mean, True), True),
    "adaptive_max_pool": (lambda x: ops.adaptive_max_pool(x, (2, 4), data_format="channels_last"),
                          lambda x: _np_adaptive(x, (2, 4), np.max, False), True),
    "adaptive_max_pool_even": (lambda x: ops.adaptive_max_pool(x, (1, 5)),
                               lambda x: _np_adaptive(x, (1, 5), np.max, False), True),
    "adaptive_average_pool_1d": (lambda x: ops.adaptive_average_pool(ops.reshape(x, (2, 15, 6)), 4),
                                 lambda x: _np_adaptive(x.reshape(2, 15, 6), (4,), np.mean, False), True),
    "adaptive_max_pool_3d": (lambda x: ops.adaptive_max_pool(x[..., None], (2, 3, 4)),
                             lambda x: _np_adaptive(x[..., None], (2, 3, 4), np.max, False), True),
    "ctc_loss": (lambda x: ops.ctc_loss(CTC_LABELS, x[:, 0], CTC_LENGTHS, CTC_STEPS),
                 lambda x: _np_ctc_loss(CTC_LABELS, x[:, 0], CTC_LENGTHS, CTC_STEPS, 0), True),
    "ctc_loss_mask_index": (lambda x: ops.ctc_loss(CTC_LABELS, x[:, 1], CTC_LENGTHS, CTC_STEPS, mask_index=5),
                            lambda x: _np_ctc_loss(CTC_LABELS, x[:, 1], CTC_LENGTHS, CTC_STEPS, 5), True),
}


# -- custom_gradient: functions whose gradient is the user's, not the traced forward's -------------------
@ops.custom_gradient
def _log1pexp(x):
    e = ops.exp(x)

    def grad(upstream):
        return ops.multiply(upstream, ops.subtract(1.0, ops.divide(1.0, ops.add(1.0, e))))

    return ops.log(ops.add(1.0, e)), grad


@ops.custom_gradient
def _clip_gradient(x):
    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        return ops.clip(upstream, -0.5, 0.5)

    return ops.multiply(x, 1.0), grad


@ops.custom_gradient
def _scaled_product(x, y):
    def grad(*args, upstream):  # torch's convention: the arguments, then upstream by keyword
        return ops.multiply(upstream, y), ops.multiply(upstream, x)

    return ops.multiply(x, y), grad


@ops.custom_gradient
def _pair(x):
    def grad(up_sum, up_difference):
        return ops.add(up_sum, ops.multiply(up_difference, 3.0))

    return (ops.add(x, 1.0), ops.multiply(x, 3.0)), grad


# name -> (function of x, numpy forward, numpy gradient of sum(f(x) * w) given (x, w))
CUSTOM = {
    "log1pexp": (lambda x: _log1pexp(x[0]), lambda x: np.log1p(np.exp(x[0])),
                 lambda x, w: np.concatenate([[w / (1 + np.exp(-x[0]))], np.zeros_like(x[1:])])),
    "clip_gradient": (lambda x: _clip_gradient(x[0]), lambda x: x[0],
                      lambda x, w: np.concatenate([[np.clip(w, -0.5, 0.5)], np.zeros_like(x[1:])])),
    "two_arguments": (lambda x: _scaled_product(x[0], x[1]), lambda x: x[0] * x[1],
                      lambda x, w: np.stack([w * x[1], w * x[0]])),
    "two_outputs": (lambda x: ops.add(*_pair(x[0])), lambda x: 4 * x[0] + 1,
                    lambda x, w: np.concatenate([[4 * w], np.zeros_like(x[1:])])),
    "stop_inside": (lambda x: ops.multiply(_clip_gradient(ops.stop_gradient(x[1])), x[0]), lambda x: x[0] * x[1],
                    lambda x, w: np.stack([w * x[1], np.zeros_like(x[1])])),
}


GROUP_OF = {"custom": "custom"}
for _name in CASES:
    GROUP_OF[_name] = ("ctc" if _name.startswith("ctc") else
                       "patches" if _name.startswith(("unfold", "fold", "adaptive")) else
                       "scan" if _name.startswith(("associative", "vectorize", "rearrange")) else "scatter")


def _compile_group(group):
    """One float64 graph per group: each case's output and d sum(f(x) * w) / dx."""
    if group == "custom":
        cases = {name: (fn, True) for name, (fn, _, _) in CUSTOM.items()}
    else:
        cases = {name: (fn, d) for name, (fn, _, d) in CASES.items() if GROUP_OF[name] == group}
    x_value = _x()
    return (x_value,) + compile_cases(cases, f"test_ops_structural_{group}", x_value)


@pytest.fixture(scope="module")
def compiled():
    cache = {}

    def get(name):
        group = GROUP_OF[name] if name in CASES else "custom"
        if group not in cache:
            cache[group] = _compile_group(group)
        return cache[group]
    return get


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_matches_numpy(name):
    fn, reference, _ = CASES[name]
    x = _x().astype(np.float32)
    actual, expected = np.asarray(fn(x)), np.asarray(reference(x.astype(np.float64)))
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, numpy gives {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=3e-5, atol=3e-5, err_msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_matches_numpy(compiled, name):
    x, outputs, forward, _, _ = compiled(name)
    actual, expected = outputs[forward[name]], np.asarray(CASES[name][1](x))
    assert actual.shape == expected.shape, f"{name}: compiled shape {actual.shape}, numpy gives {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=1e-7, atol=1e-9, err_msg=name)


def _finite_differences(reference, x, w):
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += FD_STEP
        minus[index] -= FD_STEP
        numeric[index] = (np.sum(reference(plus) * w) - np.sum(reference(minus) * w)) / (2 * FD_STEP)
    return numeric


@pytest.mark.parametrize("name", sorted(n for n, case in CASES.items() if case[2]))
def test_compiled_gradient_matches_finite_differences(compiled, name):
    x, outputs, _, grads, weights = compiled(name)
    numeric = _finite_differences(CASES[name][1], x, weights[name])
    np.testing.assert_allclose(outputs[grads[name]], numeric, rtol=1e-5, atol=1e-6, err_msg=f"{name}: d loss / dx")


@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_custom_gradient_compiled(compiled, name):
    """The forward is the traced function; the gradient is the user's function's."""
    x, outputs, forward, grads, weights = compiled(name)
    _, reference, gradient = CUSTOM[name]
    np.testing.assert_allclose(outputs[forward[name]], reference(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(outputs[grads[name]], gradient(x, weights[name]), rtol=1e-10, atol=1e-12,
                               err_msg=f"{name}: d loss / dx")


def test_custom_gradient_log1pexp_compiled_matches_finite_differences(compiled):
    """A correct user gradient agrees with central differences of the forward."""
    x, outputs, _, grads, weights = compiled("log1pexp")
    numeric = _finite_differences(CUSTOM["log1pexp"][1], x, weights["log1pexp"])
    np.testing.assert_allclose(outputs[grads["log1pexp"]], numeric, rtol=1e-6, atol=1e-8)


def test_custom_gradient_eager_returns_the_forward_value():
    x = np.linspace(-3, 3, 7).astype(np.float32)
    np.testing.assert_allclose(_log1pexp(x), np.log1p(np.exp(x)), rtol=1e-6)
    first, second = _pair(x)
    np.testing.assert_allclose(first, x + 1)
    np.testing.assert_allclose(second, 3 * x)


def test_custom_gradient_node_is_gone_after_optimization():
    from kgraph.compiler.passes.pipeline import optimize

    graph = Graph("custom_gradient_simplified")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((4,), "float32", "x").id)
        loss = ops.sum(_clip_gradient(x))
        graph.outputs = [loss.node_id, *gradients(graph, loss.node_id, [x.node_id])]
    assert any(node.op == "custom_gradient" for node in graph.nodes())
    optimize(graph)
    assert not any(node.op in ("custom_gradient", "stop_gradient") for node in graph.nodes())


# -- eager-only functions and value-dependent shapes -------------------------------------------------------
def _trace(fn, shape, dtype="float32"):
    graph = Graph("traced")
    with tracing(graph):
        return fn(SymbolicTensor(graph, graph.add_placeholder(shape, dtype, "x").id))


def test_unique_eager_matches_a_python_reference():
    x = np.array([[3, 1, 2], [1, 3, 7]], np.int32)
    values, index, inverse, counts = ops.unique(x, return_index=True, return_inverse=True, return_counts=True)
    flat = list(x.ravel())
    expected = sorted(set(flat))
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(index, [flat.index(v) for v in expected])
    np.testing.assert_array_equal(inverse, [[expected.index(v) for v in row] for row in x.tolist()])
    np.testing.assert_array_equal(counts, [flat.count(v) for v in expected])
    rows = ops.unique(np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]]), axis=0)
    np.testing.assert_array_equal(rows, [[0, 1, 0], [1, 0, 0]])
    padded, padded_counts = ops.unique(np.array([3, 1, 2, 1]), size=5, fill_value=0, return_counts=True)
    np.testing.assert_array_equal(padded, [1, 2, 3, 0, 0])
    np.testing.assert_array_equal(padded_counts, [2, 1, 1, 0, 0])
    np.testing.assert_array_equal(ops.unique(np.array([3, 1, 2, 1]), size=2), [1, 2])


def test_unique_traced_with_size_index_and_counts():
    from kgraph.runtime.reference import evaluate

    graph = Graph("unique")
    data = np.array([5.0, -1.0, 5.0, 2.0, -1.0, 7.0], np.float32)
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder(data.shape, "float32", "x").id)
        outs = ops.unique(x, return_index=True, return_counts=True, size=6, fill_value=-5.0)
        graph.outputs = [o.node_id for o in outs]
    values, index, counts = evaluate(graph, [data])[0]
    np.testing.assert_array_equal(values, [-1, 2, 5, 7, -5, -5])
    np.testing.assert_array_equal(index, [1, 3, 0, 5, 0, 0])
    np.testing.assert_array_equal(counts, [2, 1, 2, 1, 0, 0])


def test_value_dependent_shapes_are_refused_when_traced():
    with pytest.raises(ValueError, match="unique.*size"):
        _trace(ops.unique, (5,))
    with pytest.raises(ValueError, match="nonzero"):
        _trace(ops.nonzero, (5,))
    with pytest.raises(ValueError, match="view"):
        _trace(lambda x: ops.view(x, "int32"), (5,))
    with pytest.raises(ValueError, match="get_item.*boolean"):
        _trace(lambda x: ops.get_item(x, x > 0), (5,))
    with pytest.raises(ValueError, match="ctc_decode"):
        _trace(lambda x: ops.ctc_decode(x, np.array([3])), (1, 3, 4))


def test_nonzero_view_and_boolean_get_item_eagerly():
    x = np.array([[0, 2, 0], [3, 0, -1]], np.int32)
    rows, cols = ops.nonzero(x)
    expected = [(i, j) for i in range(2) for j in range(3) if x[i, j] != 0]
    assert list(zip(rows.tolist(), cols.tolist())) == expected
    assert rows.dtype == np.int32
    bits = ops.view(np.array([1.0, -2.0], np.float32), "int32")
    assert bits.tolist() == [0x3F800000, -0x40000000]
    halves = ops.view(np.array([1, 2], np.int32), "int16")
    assert halves.shape == (4,)
    np.testing.assert_array_equal(ops.get_item(x, x > 0), [2, 3])


def test_ctc_decode_greedy_matches_a_loop():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 7, 4)).astype(np.float32)
    logits[0, 1:3] = logits[0, 0]  # a repeated label that merge_repeated collapses
    lengths = np.array([7, 5, 2])
    for merge in (True, False):
        paths, scores = ops.ctc_decode(logits, lengths, merge_repeated=merge, mask_index=0)
        assert paths.shape == (1, 3, 7) and scores.shape == (3, 1)
        for b in range(3):
            best = [int(np.argmax(logits[b, t])) for t in range(lengths[b])]
            labels = [c for k, c in enumerate(best) if c != 0 and not (merge and k and c == best[k - 1])]
            assert paths[0, b].tolist() == labels + [-1] * (7 - len(labels))
            assert scores[b, 0] == pytest.approx(-sum(np.max(logits[b, t]) for t in range(lengths[b])), rel=1e-5)


def test_ctc_decode_beam_search_finds_the_most_probable_labelings():
    """With a beam wider than the number of prefixes, beam search is exact: compare with the
    probabilities of every labeling, summed over all alignments by enumeration."""
    rng = np.random.default_rng(4)
    logits = (2 * rng.standard_normal((2, 5, 3))).astype(np.float32)
    lengths = np.array([5, 4])
    paths, scores = ops.ctc_decode(logits, lengths, strategy="beam_search", beam_width=200, top_paths=3, mask_index=2)
    assert paths.shape == (3, 2, 5) and scores.shape == (2, 3)
    for b in range(2):
        log_probs = _log_softmax(logits[b, :lengths[b]].astype(np.float64))
        totals = {}
        for path in itertools.product(range(3), repeat=int(lengths[b])):
            label = _collapse(path, 2)
            totals[label] = np.logaddexp(totals.get(label, -np.inf), log_probs[np.arange(len(path)), path].sum())
        best = sorted(totals.items(), key=lambda item: -item[1])[:3]
        for k, (label, score) in enumerate(best):
            assert paths[k, b].tolist() == list(label) + [-1] * (5 - len(label))
            assert scores[b, k] == pytest.approx(score, rel=1e-5)


def test_ctc_loss_agrees_with_the_ctc_loss_function():
    """kgraph.losses.ctc (labels padded with 0, every step used) is ops.ctc_loss with the
    label lengths counted and the full output length."""
    from kgraph.losses import ctc

    rng = np.random.default_rng(6)
    logits = rng.standard_normal((2, 6, 4)).astype(np.float32)
    labels = np.array([[1, 3, 3], [2, 0, 0]], np.int32)
    expected = _np_ctc_loss(labels, logits.astype(np.float64), [3, 1], [6, 6], 0)
    np.testing.assert_allclose(ctc(labels, logits), expected, rtol=1e-5)
    np.testing.assert_allclose(ops.ctc_loss(labels, logits, [3, 1], [6, 6]), expected, rtol=1e-5)


def test_errors_name_the_function():
    x = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="scatter_update: invalid reduction"):
        ops.scatter_update(x, [[0, 0]], [1.0], reduction="sub")
    with pytest.raises(ValueError, match="scatter: each index has 3 entries"):
        ops.scatter([[0, 0, 0]], [1.0], (4, 4))
    with pytest.raises(ValueError, match="rearrange: each axis"):
        ops.rearrange(x, "a b -> a c")
    with pytest.raises(ValueError, match="rearrange: the pattern .* names 3 input axes"):
        ops.rearrange(x, "a b c -> a b c")
    with pytest.raises(ValueError, match="rearrange: axis of size 4"):
        ops.rearrange(x, "(a b) c -> a b c", a=3)
    with pytest.raises(ValueError, match="fold: expected input"):
        ops.fold(np.zeros((1, 8, 5), np.float32), (4, 4), 2, stride=2)
    with pytest.raises(ValueError, match="unfold: input must be a 4D"):
        ops.unfold(x, 2)
    with pytest.raises(ValueError, match="adaptive_max_pool: output_size"):
        ops.adaptive_max_pool(np.zeros((1, 4, 4, 1), np.float32), (2, 2, 2))
    with pytest.raises(ValueError, match="ctc_decode: invalid strategy"):
        ops.ctc_decode(np.zeros((1, 3, 4), np.float32), [3], strategy="best")
    with pytest.raises(ValueError, match="associative_scan"):
        ops.associative_scan(ops.add, (np.zeros(3), np.zeros(4)))


def test_batch_dimension_stays_unknown():
    assert _trace(lambda x: ops.rearrange(x, "b h (w c) -> b c h w", c=2), (None, 3, 4)).shape == (None, 2, 3, 2)
    assert _trace(lambda x: ops.unfold(x, 2), (None, 2, 4, 4)).shape == (None, 8, 9)
    assert _trace(lambda x: ops.adaptive_average_pool(x, 3), (None, 7, 5, 2)).shape == (None, 3, 3, 2)


def test_namespace_exports():
    for name in ("scatter", "scatter_update", "get_item", "unique", "nonzero", "view", "rearrange",
                 "associative_scan", "vectorize", "custom_gradient"):
        assert callable(getattr(ops, name))
    assert ops.numpy.unique is ops.unique and ops.numpy.view is ops.view
    for name in ("fold", "unfold", "ctc_loss", "ctc_decode", "adaptive_average_pool", "adaptive_max_pool"):
        assert getattr(ops.nn, name) is getattr(ops, name)


# -- the optional Keras 3 oracle (KGRAPH_KERAS_PYTHON) ------------------------------------------------------
KERAS_SCRIPT = r"""
import inspect, json, sys
import numpy as np
import keras
from keras import ops
data = {k: np.asarray(v, dtype=np.float32) for k, v in json.load(sys.stdin).items()}
x, logits = data["x"], data["logits"]
compose = lambda p, q: (p[0] * q[0], q[0] * p[1] + q[1])
paths, scores = ops.ctc_decode(logits, np.array([6, 4]), strategy="beam_search", beam_width=20, top_paths=2)
greedy, greedy_scores = ops.ctc_decode(logits, np.array([6, 4]))
values = {
    "beam": [np.asarray(paths).tolist(), np.asarray(scores).tolist()],
    "greedy": [np.asarray(greedy).tolist(), np.asarray(greedy_scores).tolist()],
    "ctc_loss": np.asarray(ops.ctc_loss(np.array([[1, 2, 2], [3, 1, 0]]), logits, np.array([3, 1]),
                                        np.array([6, 4]), mask_index=4)).tolist(),
    "scan": np.asarray(ops.associative_scan(compose, (x[0], x[1]), reverse=True, axis=1)[1]).tolist(),
    "unfold": np.asarray(ops.unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1))).tolist(),
    "scatter_update": np.asarray(ops.scatter_update(x[0, 0], np.array([[1, 2], [4, 0]]), x[1, 0, 0, :2],
                                                    reduction="max")).tolist(),
    "rearrange": np.asarray(ops.rearrange(x, "b c (h h1) w -> h (b w) (c h1)", h1=1)).tolist(),
    "adaptive": np.asarray(ops.adaptive_average_pool(x, (3, 4), data_format="channels_first")).tolist(),
}
names = ["scatter", "scatter_update", "get_item", "unique", "nonzero", "view", "rearrange", "associative_scan",
         "vectorize", "custom_gradient", "unfold", "fold", "adaptive_average_pool", "adaptive_max_pool",
         "ctc_loss", "ctc_decode"]
signatures = {n: [[p.name, repr(p.default)] for p in inspect.signature(getattr(ops, n)).parameters.values()]
              for n in names}
print(json.dumps({"values": values, "signatures": signatures}))
"""


def _signature(fn):
    import inspect

    return [[p.name, repr(p.default)] for p in inspect.signature(fn).parameters.values()]


@pytest.mark.skipif(keras_python() is None, reason=SKIP_REASON)
def test_signatures_and_values_match_keras():
    import json
    import subprocess

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    logits = (2 * rng.standard_normal((2, 6, 5))).astype(np.float32)
    run = subprocess.run([keras_python(), "-c", KERAS_SCRIPT], input=json.dumps({"x": x.tolist(),
                         "logits": logits.tolist()}), capture_output=True, text=True, timeout=300,
                         env={"KERAS_BACKEND": "jax", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    expected = json.loads(run.stdout)
    for name, signature in expected["signatures"].items():
        assert _signature(getattr(ops, name)) == signature, name
    values = expected["values"]
    paths, scores = ops.ctc_decode(logits, np.array([6, 4]), strategy="beam_search", beam_width=20, top_paths=2)
    np.testing.assert_array_equal(paths, values["beam"][0])
    np.testing.assert_allclose(scores, values["beam"][1], rtol=1e-5)
    greedy, greedy_scores = ops.ctc_decode(logits, np.array([6, 4]))
    np.testing.assert_array_equal(greedy, values["greedy"][0])
    np.testing.assert_allclose(greedy_scores, values["greedy"][1], rtol=1e-5)
    loss = ops.ctc_loss(np.array([[1, 2, 2], [3, 1, 0]]), logits, np.array([3, 1]), np.array([6, 4]), mask_index=4)
    np.testing.assert_allclose(loss, values["ctc_loss"], rtol=1e-5)
    scan = ops.associative_scan(_compose, (x[0], x[1]), reverse=True, axis=1)[1]
    np.testing.assert_allclose(scan, values["scan"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ops.unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)), values["unfold"])
    np.testing.assert_allclose(ops.scatter_update(x[0, 0], np.array([[1, 2], [4, 0]]), x[1, 0, 0, :2],
                                                  reduction="max"), values["scatter_update"])
    np.testing.assert_allclose(ops.rearrange(x, "b c (h h1) w -> h (b w) (c h1)", h1=1), values["rearrange"])
    np.testing.assert_allclose(ops.adaptive_average_pool(x, (3, 4), data_format="channels_first"),
                               values["adaptive"], rtol=1e-5, atol=1e-6)


def test_custom_gradient_in_a_layer_under_fit():
    """A layer whose custom gradient is zero freezes everything before it in a compiled
    training step, while the layers after it train and the forward is unchanged."""
    import kgraph as keras

    @ops.custom_gradient
    def block_gradient(x):
        return ops.multiply(x, 1.0), lambda upstream: ops.multiply(upstream, 0.0)

    class Block(keras.layers.Layer):
        def call(self, x):
            return block_gradient(x)

    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(1, name="after")(Block()(keras.layers.Dense(3, name="before")(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    before, after = model.get_layer("before").get_weights(), model.get_layer("after").get_weights()
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 4)).astype(np.float32), rng.random((32, 1)).astype(np.float32)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for old, new in zip(before, model.get_layer("before").get_weights()):
        np.testing.assert_array_equal(old, new)
    assert not np.array_equal(after[0], model.get_layer("after").get_weights()[0])
    (w1, b1), (w2, b2) = model.get_layer("before").get_weights(), model.get_layer("after").get_weights()
    np.testing.assert_allclose(model.predict(x, verbose=0), (x @ w1 + b1) @ w2 + b2, rtol=1e-5, atol=1e-6)
