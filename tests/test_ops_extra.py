"""The keras.ops functions of kgraph/ops/numpy_extra.py and nn_extra.py against numpy and
scipy formulas written here, eagerly, compiled with numba, and their gradients (compiled,
float64) against central finite differences of the numpy formula.

All compiled cases share one graph (one numba compile for the module).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.special as sp
from compiled_cases import compile_cases

from kgraph import ops
from kgraph.ir import Graph, SymbolicTensor, tracing

SHAPE = (3, 4, 5)
FD_STEP = 1e-6


def _x():
    return np.random.default_rng(7).standard_normal(SHAPE)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _cumulative(fn, x, axis):
    """A cumulative reduction written as a loop (independent of numpy's cumsum)."""
    x = np.moveaxis(x, axis, -1)
    out = np.empty_like(x)
    acc = x[..., 0]
    out[..., 0] = acc
    for i in range(1, x.shape[-1]):
        acc = fn(acc, x[..., i])
        out[..., i] = acc
    return np.moveaxis(out, -1, axis)


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _attention(q, k, v, causal):
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    if causal:
        logits = np.where(np.tri(logits.shape[-2], logits.shape[-1], dtype=bool), logits, -1e30)
    return np.einsum("bnts,bsnh->btnh", _softmax(logits), v)


def _sparsemax(z):
    """Sparsemax along the last axis by the sort-and-threshold algorithm."""
    out = np.empty_like(z)
    for index in np.ndindex(z.shape[:-1]):
        row = z[index]
        s = np.sort(row)[::-1]
        k = np.arange(1, len(row) + 1)
        support = 1 + k * s > np.cumsum(s)
        kz = k[support][-1]
        tau = (s[:kz].sum() - 1) / kz
        out[index] = np.maximum(row - tau, 0)
    return out


LABELS = np.array([[0, 4, 2, 1], [3, 3, 0, 1], [4, 2, 2, 0]], np.int32)
TARGET = np.random.default_rng(3).uniform(0.05, 0.95, SHAPE).astype(np.float32)
W4 = np.array([1.0, 2.0, 0.5, 3.0], np.float32)
MEAN4 = np.array([0.1, 0.2, -0.3, 0.0], np.float32)
VAR4 = np.array([1.0, 0.5, 2.0, 1.5], np.float32)
OFFSET4 = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
GAMMA5 = np.linspace(0.5, 1.5, 5).astype(np.float32)


def _with_nan(x):
    """x with NaN where x > 1 (gradients still flow to the other elements)."""
    return ops.where(ops.greater(x, 1.0), np.nan, x)


def _np_with_nan(x):
    return np.where(x > 1, np.nan, x)

# id -> (kgraph function of x, numpy function of x, differentiable). x has shape (3, 4, 5).
CASES = {
    # elementwise math
    "tan": (lambda x: ops.tan(ops.multiply(x, 0.4)), lambda x: np.tan(0.4 * x), True),
    "sinh": (ops.sinh, np.sinh, True),
    "cosh": (ops.cosh, np.cosh, True),
    "arcsinh": (lambda x: ops.arcsinh(ops.multiply(x, 3.0)), lambda x: np.arcsinh(3 * x), True),
    "arccosh": (lambda x: ops.arccosh(ops.add(ops.square(x), 1.2)), lambda x: np.arccosh(x * x + 1.2), True),
    "arctanh": (lambda x: ops.arctanh(ops.tanh(x)), lambda x: np.arctanh(np.tanh(x)), True),
    "ceil": (lambda x: ops.ceil(ops.multiply(x, 3.0)), lambda x: np.ceil(3 * x), False),
    "trunc": (lambda x: ops.trunc(ops.multiply(x, 3.0)), lambda x: np.trunc(3 * x), False),
    "round": (lambda x: ops.round(ops.multiply(x, 3.0)), lambda x: np.round(3 * x), False),
    "round-decimals": (lambda x: ops.round(x, 1), lambda x: np.round(x, 1), False),
    "log2": (lambda x: ops.log2(ops.add(ops.square(x), 0.1)), lambda x: np.log2(x * x + 0.1), True),
    "log10": (lambda x: ops.log10(ops.add(ops.square(x), 0.1)), lambda x: np.log10(x * x + 0.1), True),
    "exp2": (ops.exp2, np.exp2, True),
    "cbrt": (lambda x: ops.cbrt(ops.add(x, 0.05)), lambda x: np.cbrt(x + 0.05), True),
    "reciprocal": (lambda x: ops.reciprocal(ops.add(ops.square(x), 0.5)), lambda x: 1 / (x * x + 0.5), True),
    "hypot": (lambda x: ops.hypot(x, ops.getitem(x, 0)), lambda x: np.hypot(x, x[0]), True),
    "logaddexp": (lambda x: ops.logaddexp(x, ops.multiply(ops.getitem(x, (slice(None), slice(0, 1))), 2.0)),
                  lambda x: np.logaddexp(x, 2 * x[:, :1]), True),
    "logaddexp2": (lambda x: ops.logaddexp2(x, 0.5), lambda x: np.logaddexp2(x, 0.5), True),
    "fmod": (lambda x: ops.fmod(ops.multiply(x, 5.0), 1.5), lambda x: np.fmod(5 * x, 1.5), True),
    "heaviside": (lambda x: ops.heaviside(x, 0.5), lambda x: np.heaviside(x, 0.5), False),
    "deg2rad": (ops.deg2rad, np.deg2rad, True),
    "rad2deg": (ops.rad2deg, np.rad2deg, True),
    "erfc": (ops.erfc, sp.erfc, True),
    "divide_no_nan": (lambda x: ops.divide_no_nan(x, ops.where(ops.greater(x, 1.0), 0.0, ops.add(ops.abs(x), 0.5))),
                      lambda x: np.where(x > 1, 0.0, x / np.where(x > 1, 1.0, np.abs(x) + 0.5)), True),
    "sinc": (ops.sinc, np.sinc, True),
    "isfinite": (lambda x: ops.isfinite(ops.divide(x, ops.where(ops.greater(x, 1.0), 0.0, 1.0))),
                 lambda x: np.isfinite(x / np.where(x > 1, 0.0, 1.0)), False),
    "isinf": (lambda x: ops.isinf(ops.divide(x, ops.where(ops.greater(x, 1.0), 0.0, 1.0))),
              lambda x: np.isinf(x / np.where(x > 1, 0.0, 1.0)), False),
    "isnan": (lambda x: ops.isnan(ops.sqrt(x)), lambda x: np.isnan(np.sqrt(x)), False),
    "nan_to_num": (lambda x: ops.nan_to_num(ops.log(x), nan=-3.0), lambda x: np.nan_to_num(np.log(x), nan=-3.0), False),
    "signbit": (ops.signbit, np.signbit, False),
    # activations
    "celu": (lambda x: ops.celu(x, 0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x / 0.7)), True),
    "glu": (lambda x: ops.glu(ops.getitem(x, (Ellipsis, slice(0, 4)))),
            lambda x: x[..., :2] * _sigmoid(x[..., 2:4]), True),
    "glu-axis1": (lambda x: ops.glu(x, axis=1), lambda x: x[:, :2] * _sigmoid(x[:, 2:]), True),
    "hard_tanh": (ops.hard_tanh, lambda x: np.clip(x, -1, 1), True),
    "hard_shrink": (ops.hard_shrink, lambda x: np.where(np.abs(x) > 0.5, x, 0.0), True),
    "soft_shrink": (lambda x: ops.soft_shrink(x, 0.3), lambda x: np.sign(x) * np.maximum(np.abs(x) - 0.3, 0), True),
    "tanh_shrink": (ops.tanh_shrink, lambda x: x - np.tanh(x), True),
    "squareplus": (ops.squareplus, lambda x: (x + np.sqrt(x * x + 4)) / 2, True),
    "sparse_plus": (ops.sparse_plus, lambda x: np.where(x <= -1, 0, np.where(x >= 1, x, (x + 1) ** 2 / 4)), True),
    "sparse_sigmoid": (ops.sparse_sigmoid, lambda x: np.clip((x + 1) / 2, 0, 1), True),
    "log_sigmoid": (ops.log_sigmoid, lambda x: -np.logaddexp(0, -x), True),
    "hard_silu": (ops.hard_silu, lambda x: x * np.clip(x + 3, 0, 6) / 6, True),
    "threshold": (lambda x: ops.threshold(x, 0.2, -1.0), lambda x: np.where(x > 0.2, x, -1.0), True),
    "sparsemax": (ops.sparsemax, _sparsemax, True),
    # reductions and statistics
    "all": (lambda x: ops.all(ops.greater(x, -1.5), axis=(0, -1)), lambda x: np.all(x > -1.5, axis=(0, 2)), False),
    "any-keepdims": (lambda x: ops.any(ops.greater(x, 1.0), axis=1, keepdims=True),
                     lambda x: np.any(x > 1, axis=1, keepdims=True), False),
    "count_nonzero": (lambda x: ops.count_nonzero(ops.greater(x, 0), axis=-1), lambda x: np.sum(x > 0, axis=-1), False),
    "average": (lambda x: ops.average(x, axis=-2, weights=W4),
                lambda x: np.sum(x * W4[:, None], axis=1) / 6.5, True),
    "ptp": (lambda x: ops.ptp(x, axis=-1, keepdims=True),
            lambda x: x.max(-1, keepdims=True) - x.min(-1, keepdims=True), True),
    "nansum": (lambda x: ops.nansum(_with_nan(x), axis=1), lambda x: np.sum(np.where(x > 1, 0, x), 1), True),
    "nanmean": (lambda x: ops.nanmean(_with_nan(x), axis=(0, 2)),
                lambda x: np.nanmean(_np_with_nan(x), axis=(0, 2)), True),
    "nanmax": (lambda x: ops.nanmax(_with_nan(x), axis=-1), lambda x: np.nanmax(_np_with_nan(x), axis=-1), True),
    "nanmin-all-nan-row": (lambda x: ops.nanmin(ops.where(ops.greater(ops.getitem(x, (Ellipsis, slice(0, 1))), 0),
                                                          np.nan, x), axis=-1),
                           lambda x: np.nanmin(np.where(x[..., :1] > 0, np.nan, x), axis=-1), False),
    "nanvar": (lambda x: ops.nanvar(_with_nan(x), axis=-1), lambda x: np.nanvar(_np_with_nan(x), axis=-1), True),
    "nanstd": (lambda x: ops.nanstd(_with_nan(x), axis=0), lambda x: np.nanstd(_np_with_nan(x), axis=0), True),
    "nanprod": (lambda x: ops.nanprod(_with_nan(x), axis=1), lambda x: np.nanprod(_np_with_nan(x), axis=1), True),
    "sort": (lambda x: ops.sort(x, axis=1), lambda x: np.sort(x, axis=1), True),
    "argsort": (lambda x: ops.argsort(x, axis=-1), lambda x: np.argsort(x, axis=-1, kind="stable"), False),
    "top_k-values": (lambda x: ops.top_k(x, 3)[0], lambda x: -np.sort(-x, axis=-1)[..., :3], True),
    "top_k-indices": (lambda x: ops.top_k(x, 2)[1], lambda x: np.argsort(-x, axis=-1, kind="stable")[..., :2], False),
    "in_top_k": (lambda x: ops.in_top_k(LABELS, x, 2),
                 lambda x: np.sum(x > np.take_along_axis(x, LABELS[..., None], -1), -1) < 2, False),
    "median": (lambda x: ops.median(x, axis=-1), lambda x: np.median(x, axis=-1), True),
    "quantile": (lambda x: ops.quantile(x, [0.25, 0.9], axis=(0, 2), keepdims=True),
                 lambda x: np.quantile(x, [0.25, 0.9], axis=(0, 2), keepdims=True), True),
    "percentile-lower": (lambda x: ops.percentile(x, 30, axis=1, method="lower"),
                         lambda x: np.percentile(x, 30, axis=1, method="lower"), True),
    "take_along_axis": (lambda x: ops.take_along_axis(x, np.array([[[0, -1, 2, 1, 3]]]), axis=1),
                        lambda x: x[:, [0, 3, 2, 1, 3], np.arange(5)][:, None, :], True),
    "cumsum": (lambda x: ops.cumsum(x, axis=-1), lambda x: _cumulative(np.add, x, -1), True),
    "cumsum-flat": (ops.cumsum, lambda x: _cumulative(np.add, x.reshape(-1), 0), True),
    "cumprod": (lambda x: ops.cumprod(x, axis=1), lambda x: _cumulative(np.multiply, x, 1), True),
    "diff": (lambda x: ops.diff(x, 2, axis=0), lambda x: x[2:] - 2 * x[1:-1] + x[:-2], True),
    "norm": (lambda x: ops.norm(x, axis=-1), lambda x: np.sqrt(np.sum(x * x, -1)), True),
    "norm-inf-matrix": (lambda x: ops.norm(x, ord=np.inf, axis=(1, 2)), lambda x: np.abs(x).sum(2).max(1), True),
    "norm-p3": (lambda x: ops.norm(x, ord=3, axis=0, keepdims=True),
                lambda x: (np.abs(x) ** 3).sum(0, keepdims=True) ** (1 / 3), True),
    # shapes
    "tile": (lambda x: ops.tile(x, (2, 1, 1, 3)), lambda x: np.tile(x, (2, 1, 1, 3)), True),
    "repeat": (lambda x: ops.repeat(x, 2, axis=-2), lambda x: np.repeat(x, 2, axis=1), True),
    "repeat-counts": (lambda x: ops.repeat(x, [2, 0, 1], axis=0), lambda x: x[[0, 0, 2]], True),
    "flip": (lambda x: ops.flip(x, (0, -1)), lambda x: x[::-1, :, ::-1], True),
    "roll": (lambda x: ops.roll(x, -2, axis=2), lambda x: np.concatenate([x[..., 2:], x[..., :2]], -1), True),
    "roll-flat": (lambda x: ops.roll(x, 7), lambda x: np.roll(x, 7), True),
    "moveaxis": (lambda x: ops.moveaxis(x, 0, -1), lambda x: np.transpose(x, (1, 2, 0)), True),
    "ravel": (ops.ravel, lambda x: x.reshape(-1), True),
    "hstack": (lambda x: ops.hstack([x, ops.square(x)]), lambda x: np.concatenate([x, x * x], 1), True),
    "vstack": (lambda x: ops.vstack([x, x]), lambda x: np.concatenate([x, x], 0), True),
    "dstack": (lambda x: ops.dstack([x, x]), lambda x: np.concatenate([x, x], 2), True),
    "array_split": (lambda x: ops.array_split(x, 3, axis=-1)[1], lambda x: x[..., 2:4], True),
    "unstack": (lambda x: ops.unstack(x, axis=1)[2], lambda x: x[:, 2], True),
    "diagonal": (lambda x: ops.diagonal(x, 1, axis1=1, axis2=2),
                 lambda x: np.stack([x[:, i, i + 1] for i in range(4)], -1), True),
    "diagonal-negative": (lambda x: ops.diagonal(x, -1, axis1=0, axis2=-1),
                          lambda x: np.stack([x[i + 1, :, i] for i in range(2)], -1), True),
    "trace": (lambda x: ops.trace(x, axis1=1, axis2=2), lambda x: sum(x[:, i, i] for i in range(4)), True),
    "diag": (lambda x: ops.diag(ops.getitem(x, (0, 0)), 1),
             lambda x: np.pad(np.eye(5) * x[0, 0], ((0, 1), (1, 0))), True),
    "tril": (lambda x: ops.tril(x, -1), lambda x: x * (np.arange(4)[:, None] - 1 >= np.arange(5)), True),
    "triu": (lambda x: ops.triu(x, 1), lambda x: x * (np.arange(4)[:, None] + 1 <= np.arange(5)), True),
    "outer": (lambda x: ops.outer(ops.getitem(x, 0), ops.getitem(x, (1, 0))),
              lambda x: x[0].reshape(-1, 1) * x[1, 0].reshape(1, -1), True),
    "inner": (lambda x: ops.inner(x, ops.getitem(x, 0)), lambda x: np.einsum("abk,ck->abc", x, x[0]), True),
    "kron": (lambda x: ops.kron(ops.getitem(x, 0), ops.getitem(x, (1, slice(0, 2), slice(0, 3)))),
             lambda x: np.block([[x[0][i, j] * x[1, :2, :3] for j in range(5)] for i in range(4)]), True),
    "tensordot": (lambda x: ops.tensordot(x, ops.getitem(x, 0), axes=([1, 2], [0, 1])),
                  lambda x: np.einsum("ijk,jk->i", x, x[0]), True),
    "einsum-matmul": (lambda x: ops.einsum("bij,bkj->bik", x, x), lambda x: x @ np.swapaxes(x, 1, 2), True),
    "einsum-reduce": (lambda x: ops.einsum("ijk,ilk->jl", x, ops.square(x)),
                      lambda x: np.tensordot(x, x * x, axes=([0, 2], [0, 2])), True),
    "einsum-ellipsis": (lambda x: ops.einsum("...k,k", x, ops.getitem(x, (0, 0))), lambda x: x @ x[0, 0], True),
    "einsum-three": (lambda x: ops.einsum("ij,jk,kl->il", ops.getitem(x, 0), ops.transpose(ops.getitem(x, 1)),
                                          ops.getitem(x, 2)), lambda x: x[0] @ x[1].T @ x[2], True),
    "meshgrid": (lambda x: ops.meshgrid(ops.getitem(x, (0, 0)), ops.getitem(x, (0, 1, slice(0, 3))))[1],
                 lambda x: np.broadcast_to(x[0, 1, :3][:, None], (3, 5)), True),
    # nn
    "normalize": (lambda x: ops.normalize(x, axis=1), lambda x: x / np.sqrt(np.sum(x * x, 1, keepdims=True)), True),
    "normalize-l1": (lambda x: ops.normalize(x, order=1), lambda x: x / np.abs(x).sum(-1, keepdims=True), True),
    "moments-mean": (lambda x: ops.moments(x, axes=(0, 2))[0], lambda x: x.mean((0, 2)), True),
    "moments-var": (lambda x: ops.moments(x, axes=[-1], keepdims=True)[1], lambda x: x.var(-1, keepdims=True), True),
    "batch_normalization": (
        lambda x: ops.batch_normalization(x, MEAN4, VAR4, axis=1, offset=OFFSET4, scale=W4),
        lambda x: (x - MEAN4[:, None]) / np.sqrt(VAR4[:, None] + 1e-3) * W4[:, None] + OFFSET4[:, None], True),
    "layer_normalization": (lambda x: ops.layer_normalization(x, gamma=GAMMA5, beta=0.25),
                            lambda x: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-7)
                            * GAMMA5 + 0.25, True),
    "rms_normalization": (lambda x: ops.rms_normalization(x, scale=2.0, axis=1),
                          lambda x: 2 * x / np.sqrt(np.mean(x * x, 1, keepdims=True) + 1e-7), True),
    "binary_crossentropy": (lambda x: ops.binary_crossentropy(TARGET, ops.sigmoid(x)),
                            lambda x: -(TARGET * np.log(_sigmoid(x)) + (1 - TARGET) * np.log(1 - _sigmoid(x))), True),
    "binary_crossentropy-logits": (lambda x: ops.binary_crossentropy(TARGET, x, from_logits=True),
                                   lambda x: -(TARGET * np.log(_sigmoid(x))
                                               + (1 - TARGET) * np.log(_sigmoid(-x))), True),
    "categorical_crossentropy": (lambda x: ops.categorical_crossentropy(_softmax(TARGET), ops.softmax(x)),
                                 lambda x: -np.sum(_softmax(TARGET) * np.log(_softmax(x)), -1), True),
    "categorical_crossentropy-logits-axis1": (
        lambda x: ops.categorical_crossentropy(_softmax(TARGET, 1), x, from_logits=True, axis=1),
        lambda x: -np.sum(_softmax(TARGET, 1) * np.log(_softmax(x, 1)), 1), True),
    "sparse_categorical_crossentropy": (
        lambda x: ops.sparse_categorical_crossentropy(LABELS, x, from_logits=True),
        lambda x: -np.log(np.take_along_axis(_softmax(x), LABELS[..., None], -1))[..., 0], True),
    "multi_hot": (lambda x: ops.multi_hot(LABELS, 6), lambda x: np.stack([np.isin(np.arange(6), r) for r in LABELS])
                  .astype(np.float32), False),
    "dot_product_attention": (
        lambda x: ops.dot_product_attention(ops.expand_dims(ops.getitem(x, (Ellipsis, slice(0, 2))), 0),
                                            ops.expand_dims(ops.getitem(x, (Ellipsis, slice(2, 4))), 0),
                                            ops.expand_dims(ops.getitem(x, (Ellipsis, slice(1, 3))), 0)),
        lambda x: _attention(x[None, ..., :2], x[None, ..., 2:4], x[None, ..., 1:3], False), True),
    "dot_product_attention-causal": (
        lambda x: ops.dot_product_attention(ops.expand_dims(x, 0), ops.expand_dims(ops.square(x), 0),
                                            ops.expand_dims(x, 0), is_causal=True),
        lambda x: _attention(x[None], x[None] ** 2, x[None], True), True),
}


# The inverse trigonometric functions (compositions of the arctan primitive), compiled as a
# second, small graph.
TRIG_CASES = {
    "arctan": (ops.arctan, np.arctan, True),
    "arcsin": (lambda x: ops.arcsin(ops.tanh(x)), lambda x: np.arcsin(np.tanh(x)), True),
    "arccos": (lambda x: ops.arccos(ops.tanh(x)), lambda x: np.arccos(np.tanh(x)), True),
    "arctan2": (lambda x: ops.arctan2(x, ops.getitem(x, 0)), lambda x: np.arctan2(x, x[0]), True),
    "arctan2-axes": (lambda x: ops.arctan2(ops.getitem(x, (slice(None), slice(0, 1))), x),
                     lambda x: np.arctan2(x[:, :1], x), True),
}
SEGMENTS = np.array([0, 2, 0], np.int32)
EXPONENTS = np.array([1, 2, -1, 0, 3], np.int32)
BINS = np.array([-1.0, 0.0, 0.5], np.float32)


def _scan_reference(x):
    carry, ys = np.zeros(x.shape[1:]), []
    for row in x:
        ys.append(carry * 2)
        carry = carry + row
    return np.stack(ys)


def _slice_updated(x):
    y = x.copy()
    y[1:3, 0:2, 2:4] = x[:2, :2, :2] ** 2
    return y


def _depth_to_space(x):
    """out[n, 2i + a, 2j + b, c] = x[n, i, j, (2a + b) * 5 + c] with x as (3, 1, 1, 20)."""
    x = x.reshape(3, 1, 1, 20)
    out = np.empty((3, 2, 2, 5), x.dtype)
    for a in range(2):
        for b in range(2):
            out[:, a, b, :] = x[:, 0, 0, (2 * a + b) * 5:(2 * a + b + 1) * 5]
    return out


def _spd(x):
    """A symmetric positive definite 4x4 matrix from x[0]."""
    m = ops.getitem(x, 0)
    return ops.add(ops.matmul(m, ops.transpose(m)), np.eye(4, dtype=np.float32) * 4.0)


def _np_spd(x):
    return x[0] @ x[0].T + 4 * np.eye(4)


def _triangular(x):
    return ops.add(ops.tril(ops.getitem(x, (1, slice(None), slice(0, 4)))), np.eye(4, dtype=np.float32) * 3.0)


def _np_triangular(x):
    return np.tril(x[1, :, :4]) + 3 * np.eye(4)


# Control flow, searching, segments (kgraph/ops/control.py), compiled as a third graph.
MORE_CASES = {
    "segment_sum": (lambda x: ops.segment_sum(x, SEGMENTS, 3),
                    lambda x: np.stack([x[SEGMENTS == i].sum(0) for i in range(3)]), True),
    "segment_max": (lambda x: ops.segment_max(x, np.array([0, 1, 0]), 2),
                    lambda x: np.stack([np.maximum(x[0], x[2]), x[1]]), True),
    "extract_sequences": (lambda x: ops.extract_sequences(x, 3, 2),
                          lambda x: np.stack([x[..., :3], x[..., 2:]], -2), True),
    "ldexp": (lambda x: ops.ldexp(x, EXPONENTS), lambda x: x * 2.0 ** EXPONENTS, True),
    "cdist": (lambda x: ops.cdist(x, ops.square(x)),
              lambda x: np.sqrt(((x[:, :, None] - (x * x)[:, None]) ** 2).sum(-1)), True),
    "slice_update": (lambda x: ops.slice_update(x, (1, 0, 2), ops.square(ops.getitem(x, (slice(0, 2), slice(0, 2),
                                                                                           slice(0, 2))))),
                     _slice_updated, True),
    "trapezoid": (lambda x: ops.trapezoid(x, axis=1), lambda x: ((x[:, 1:] + x[:, :-1]) / 2).sum(1), True),
    "psnr": (lambda x: ops.psnr(x, ops.multiply(x, 0.9), 3.0),
             lambda x: 20 * np.log10(3.0) - 10 * np.log10(np.mean((0.1 * x) ** 2)), True),
    "cond": (lambda x: ops.cond(ops.greater(ops.getitem(x, (0, 0, 0)), 0), lambda: ops.square(x),
                                lambda: ops.negative(x)),
             lambda x: x * x if x[0, 0, 0] > 0 else -x, True),
    "switch": (lambda x: ops.switch(ops.cast(ops.greater(ops.getitem(x, (0, 0, 0)), 0), "int32"),
                                    [ops.sin, ops.cos], x), lambda x: np.cos(x) if x[0, 0, 0] > 0 else np.sin(x), True),
    "scan": (lambda x: ops.scan(lambda c, row: (ops.add(c, row), ops.multiply(c, 2.0)),
                                np.zeros((4, 5), np.float32), x)[1],
             _scan_reference, True),
    "fori_loop": (lambda x: ops.fori_loop(0, 3, lambda i, v: ops.multiply(ops.sin(v), ops.cast(i + 1, v.dtype)), x),
                  lambda x: 3 * np.sin(2 * np.sin(np.sin(x))), True),
    "map": (lambda x: ops.map(lambda row: ops.sum(ops.square(row)), x), lambda x: (x * x).sum((1, 2)), True),
    "select": (lambda x: ops.select([ops.greater(x, 1.0), ops.less(x, -1.0)], [x, ops.square(x)], 0.5),
               lambda x: np.select([x > 1, x < -1], [x, x * x], 0.5), True),
    "nancumsum": (lambda x: ops.nancumsum(_with_nan(x), axis=1),
                  lambda x: np.nancumsum(_np_with_nan(x), axis=1), True),
    "cross": (lambda x: ops.cross(ops.getitem(x, (Ellipsis, slice(0, 3))), ops.getitem(x, (Ellipsis, slice(2, 5)))),
              lambda x: np.stack([x[..., 1] * x[..., 4] - x[..., 2] * x[..., 3],
                                  x[..., 2] * x[..., 2] - x[..., 0] * x[..., 4],
                                  x[..., 0] * x[..., 3] - x[..., 1] * x[..., 2]], -1), True),
    "vander": (lambda x: ops.vander(ops.getitem(x, (0, 0)), 3),
               lambda x: np.stack([x[0, 0] ** 2, x[0, 0], 1 + 0 * x[0, 0]], -1), True),
    "depth_to_space": (lambda x: ops.depth_to_space(ops.reshape(x, (3, 1, 1, 20)), 2), _depth_to_space, True),
    "space_to_depth": (lambda x: ops.space_to_depth(ops.reshape(x, (3, 2, 2, 5)), 2),
                       lambda x: np.stack([x.reshape(3, 2, 2, 5)[:, i, j] for i in range(2) for j in range(2)], 1)
                       .reshape(3, 1, 1, 20), True),
    "rgb_to_grayscale": (lambda x: ops.image.rgb_to_grayscale(ops.getitem(x, (Ellipsis, slice(0, 3)))),
                         lambda x: (0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None], True),
    "pad_images": (lambda x: ops.image.pad_images(ops.expand_dims(x, 0), 1, 2, target_height=5, target_width=7),
                   lambda x: np.pad(x[None], ((0, 0), (1, 1), (2, 1), (0, 0))), True),
    "crop_images-channels_first": (
        lambda x: ops.image.crop_images(x, top_cropping=1, bottom_cropping=1, left_cropping=0, right_cropping=2,
                                        data_format="channels_first"), lambda x: x[:, 1:3, 0:3], True),
    "cholesky": (lambda x: ops.cholesky(_spd(x)), lambda x: np.linalg.cholesky(_np_spd(x)), True),
    "cholesky-upper": (lambda x: ops.cholesky(_spd(x), upper=True), lambda x: np.linalg.cholesky(_np_spd(x)).T, True),
    "cholesky_inverse": (lambda x: ops.cholesky_inverse(ops.cholesky(_spd(x))),
                         lambda x: np.linalg.inv(_np_spd(x)), True),
    "solve_triangular": (lambda x: ops.solve_triangular(_triangular(x), ops.getitem(x, 2), lower=True),
                         lambda x: scipy.linalg.solve_triangular(_np_triangular(x), x[2], lower=True), True),
    "solve_triangular-upper-vector": (
        lambda x: ops.solve_triangular(ops.transpose(_triangular(x)), ops.getitem(x, (2, slice(None), 0))),
        lambda x: scipy.linalg.solve_triangular(_np_triangular(x).T, x[2, :, 0]), True),
    "digitize": (lambda x: ops.digitize(x, BINS), lambda x: np.digitize(x, BINS), False),
    "searchsorted": (lambda x: ops.searchsorted(BINS, x, side="right"),
                     lambda x: np.searchsorted(BINS, x, "right"), False),
    "isin": (lambda x: ops.isin(ops.round(x), [0.0, 1.0]), lambda x: np.isin(np.round(x), [0, 1]), False),
    "nanargmax": (lambda x: ops.nanargmax(_with_nan(x), axis=-1), lambda x: np.nanargmax(_np_with_nan(x), -1), False),
    "angle": (ops.angle, np.angle, False),
    "unravel_index": (lambda x: ops.unravel_index(ops.argmax(ops.reshape(x, (3, 20)), axis=-1), (4, 5))[1],
                      lambda x: np.argmax(x.reshape(3, 20), -1) % 5, False),
}
GROUPS = {"main": CASES, "trig": TRIG_CASES, "more": MORE_CASES}
ALL_CASES = [(group, name) for group, cases in GROUPS.items() for name in sorted(cases)]
GRAD_CASES = [(group, name) for group, name in ALL_CASES if GROUPS[group][name][2]]


def _expected_dtype(value, float_dtype):
    """float64 numpy results are the input's float dtype; float32 ones (fixed by Keras) stay."""
    if np.asarray(value).dtype == np.float32:
        return np.float32
    kind = np.asarray(value).dtype.kind
    return {"f": float_dtype, "i": np.int32, "u": np.int32, "b": np.bool_}[kind]


@pytest.mark.parametrize("name", sorted(CASES) + sorted(TRIG_CASES) + sorted(MORE_CASES))
def test_eager_matches_numpy(name):
    fn, reference, _ = {**CASES, **TRIG_CASES, **MORE_CASES}[name]
    x = _x().astype(np.float32)
    with np.errstate(all="ignore"):
        actual = np.asarray(fn(x))
        expected = np.asarray(reference(x.astype(np.float64)))
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, numpy gives {expected.shape}"
    assert actual.dtype == _expected_dtype(expected, np.float32), f"{name}: dtype {actual.dtype}"
    np.testing.assert_allclose(actual, expected.astype(actual.dtype), rtol=2e-5, atol=2e-5, equal_nan=True)


def _compile_cases(cases, graph_name):
    """One float64 graph: every case's output, and d sum(f(x) * w) / dx for the differentiable ones."""
    x_value = _x()
    cases = {name: (fn, differentiable) for name, (fn, _, differentiable) in cases.items()}
    return (x_value,) + compile_cases(cases, graph_name, x_value)


@pytest.fixture(scope="module")
def compiled():
    cache = {}

    def get(group):
        if group not in cache:
            graph_name = "test_ops_extra" if group == "main" else f"test_ops_extra_{group}"
            cache[group] = _compile_cases(GROUPS[group], graph_name)
        return cache[group]
    return get


@pytest.mark.parametrize("group, name", ALL_CASES, ids=[n for _, n in ALL_CASES])
def test_compiled_matches_numpy(compiled, group, name):
    x, outputs, forward, _, _ = compiled(group)
    with np.errstate(all="ignore"):
        expected = np.asarray(GROUPS[group][name][1](x))
    actual = outputs[forward[name]]
    assert actual.shape == expected.shape, f"{name}: compiled shape {actual.shape}, numpy gives {expected.shape}"
    assert actual.dtype == _expected_dtype(expected, np.float64), f"{name}: dtype {actual.dtype}"
    np.testing.assert_allclose(actual, expected.astype(actual.dtype), rtol=1e-6, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("group, name", GRAD_CASES, ids=[n for _, n in GRAD_CASES])
def test_compiled_gradient_matches_finite_differences(compiled, group, name):
    """d sum(f(x) w) / dx compiled in float64, against central differences of the numpy formula."""
    x, outputs, _, grads, weights = compiled(group)
    reference, w = GROUPS[group][name][1], weights[name]
    analytic = outputs[grads[name]]
    numeric = np.zeros_like(x)
    with np.errstate(all="ignore"):
        for index in np.ndindex(x.shape):
            plus, minus = x.copy(), x.copy()
            plus[index] += FD_STEP
            minus[index] -= FD_STEP
            numeric[index] = (np.sum(np.nan_to_num(reference(plus)) * w)
                              - np.sum(np.nan_to_num(reference(minus)) * w)) / (2 * FD_STEP)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6, err_msg=f"{name}: d loss / dx")


# -- dtypes, batch dimensions and errors (eager and traced; no compile) ------------------------------
INTS = np.array([[3, -1, 0], [2, 5, -4]], np.int32)
BOOLS = INTS > 0

# Keras 3's result dtypes for int32 and bool inputs.
FLOAT_RESULT = ["tan", "sinh", "cosh", "arcsinh", "log2", "exp2", "cbrt", "reciprocal", "deg2rad", "rad2deg",
                "erfc", "ceil", "log_sigmoid", "celu", "hard_tanh", "squareplus", "sparse_plus", "tanh_shrink"]


@pytest.mark.parametrize("name", FLOAT_RESULT)
def test_int_and_bool_inputs_give_float32(name):
    fn = getattr(ops, name)
    for x in (INTS, BOOLS):
        with np.errstate(all="ignore"):
            result = np.asarray(fn(x))
            as_float = np.asarray(fn(x.astype(np.float32)))
        assert result.dtype == np.float32, f"{name}({x.dtype}) gave {result.dtype}"
        np.testing.assert_allclose(result, as_float, rtol=1e-6)


def test_integer_and_bool_results():
    checks = {
        "trunc": (ops.trunc(INTS), INTS), "round": (ops.round(INTS), INTS),
        "round-negative-decimals": (ops.round(np.array([149, 151, -250], np.int32), -2), np.array([100, 200, -200])),
        "nan_to_num": (ops.nan_to_num(INTS), INTS),
        "isnan": (ops.isnan(INTS), np.zeros(INTS.shape, bool)),
        "isfinite": (ops.isfinite(INTS), np.ones(INTS.shape, bool)),
        "signbit": (ops.signbit(INTS), INTS < 0),
        "cumsum-int": (ops.cumsum(INTS, axis=-1), np.array([[3, 2, 2], [2, 7, 3]])),
        "cumsum-bool": (ops.cumsum(BOOLS, axis=0), np.array([[1, 0, 0], [2, 1, 0]])),
        "cumprod-int": (ops.cumprod(INTS, axis=0), np.array([[3, -1, 0], [6, -5, 0]])),
        "count_nonzero": (ops.count_nonzero(INTS), np.int32(5)),
        "all": (ops.all(INTS, axis=-1), np.array([False, True])),
        "any": (ops.any(BOOLS, axis=0), np.array([True, True, False])),
        "sort-int": (ops.sort(INTS, axis=-1), np.array([[-1, 0, 3], [-4, 2, 5]])),
        "sort-bool": (ops.sort(BOOLS, axis=-1), np.array([[False, False, True], [False, True, True]])),
        "argsort-int-axis0": (ops.argsort(INTS, axis=0), np.array([[1, 0, 1], [0, 1, 0]])),
        "flip-bool": (ops.flip(BOOLS), BOOLS[::-1, ::-1]),
        "take_along_axis-bool": (ops.take_along_axis(BOOLS, np.array([[2, 0]]), axis=1),
                                 np.array([[False, True], [False, True]])),
        "fmod-int": (ops.fmod(np.array([-7, 7, -7, 7], np.int32), np.array([3, 3, -3, -3], np.int32)),
                     np.array([-1, 1, -1, 1])),
        "top_k-int": (ops.top_k(INTS, 2)[0], np.array([[3, 0], [5, 2]])),
        "multi_hot-1d": (ops.multi_hot(np.array([0, 2, 2]), 4), np.array([1.0, 0.0, 1.0, 0.0], np.float32)),
        "trace-int": (ops.trace(np.arange(9, dtype=np.int32).reshape(3, 3)), np.int32(12)),
    }
    for name, (actual, expected) in checks.items():
        actual, expected = np.asarray(actual), np.asarray(expected)
        kind = {"b": np.bool_, "f": np.float32}.get(expected.dtype.kind, np.int32)
        assert actual.dtype == kind, f"{name}: dtype {actual.dtype}, expected {np.dtype(kind)}"
        np.testing.assert_array_equal(actual, expected, err_msg=name)


def test_special_values():
    values = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 2.5], np.float32)
    np.testing.assert_array_equal(ops.isnan(values), [True, False, False, False, False, False])
    np.testing.assert_array_equal(ops.isinf(values), [False, True, True, False, False, False])
    np.testing.assert_array_equal(ops.isposinf(values), [False, True, False, False, False, False])
    np.testing.assert_array_equal(ops.isneginf(values), [False, False, True, False, False, False])
    np.testing.assert_array_equal(ops.isfinite(values), [False, False, False, True, True, True])
    with np.errstate(divide="ignore"):
        np.testing.assert_array_equal(ops.signbit(values[1:]), [False, True, True, False, False])
    big = float(np.finfo(np.float32).max)
    np.testing.assert_array_equal(ops.nan_to_num(values), [0.0, big, -big, 0.0, 0.0, 2.5])
    np.testing.assert_array_equal(ops.nan_to_num(values, nan=1.0, posinf=9.0, neginf=-9.0), [1, 9, -9, 0, 0, 2.5])
    np.testing.assert_array_equal(ops.round(np.array([0.5, 1.5, 2.5, -0.5, -2.5], np.float32)), [0, 2, 2, -0, -2])
    np.testing.assert_array_equal(ops.divide_no_nan(np.array([1.0, 2.0], np.float32), np.array([0.0, 4.0], np.float32)),
                                  [0.0, 0.5])
    np.testing.assert_allclose(ops.logaddexp(np.float32(-np.inf), np.float32(1.0)), 1.0)
    np.testing.assert_allclose(ops.hypot(np.float32(3e30), np.float32(4e30)), 5e30, rtol=1e-6)
    assert np.isnan(ops.nanmax(np.array([np.nan, np.nan], np.float32)))
    assert bool(ops.allclose(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-9])))
    assert not bool(ops.allclose(np.array([1.0, np.nan]), np.array([1.0, np.nan])))
    assert bool(ops.allclose(np.array([1.0, np.nan]), np.array([1.0, np.nan]), equal_nan=True))


def test_creation_functions():
    np.testing.assert_array_equal(ops.eye(3, 4, k=1), np.diag(np.ones(3), 1)[:3, :4])
    assert np.asarray(ops.eye(2)).dtype == np.float32 and np.asarray(ops.identity(2, "int32")).dtype == np.int32
    np.testing.assert_array_equal(ops.tri(3, 2, -1), [[0, 0], [1, 0], [1, 1]])
    np.testing.assert_allclose(ops.linspace(2.0, 3.0, 5), [2.0, 2.25, 2.5, 2.75, 3.0])
    np.testing.assert_allclose(ops.linspace(0.0, 1.0, 4, endpoint=False), [0.0, 0.25, 0.5, 0.75])
    grid_y, grid_x = ops.meshgrid(np.arange(3), np.arange(2), indexing="ij")
    np.testing.assert_array_equal(grid_y, [[0, 0], [1, 1], [2, 2]])
    np.testing.assert_array_equal(grid_x, [[0, 1], [0, 1], [0, 1]])


def _traced(fn, shape, batch=2, seed=0):
    """fn on a (None, ...) placeholder, evaluated by the reference interpreter at `batch`."""
    from kgraph.runtime.reference import evaluate

    graph = Graph("batch")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None,) + shape, "float32", "x").id)
        y = fn(x)
        graph.outputs = [y.node_id]
    value = np.random.default_rng(seed).standard_normal((batch,) + shape).astype(np.float32)
    return y.shape, evaluate(graph, [value])[0][0], value


@pytest.mark.parametrize("name, fn, reference", [
    ("sort", lambda x: ops.sort(x, axis=-1), lambda x: np.sort(x, -1)),
    ("cumsum", lambda x: ops.cumsum(x, axis=1), lambda x: np.cumsum(x, 1)),
    ("take_along_axis", lambda x: ops.take_along_axis(x, np.array([[[1], [0], [3]]]), axis=-1),
     lambda x: np.take_along_axis(x, np.broadcast_to([[[1], [0], [3]]], (x.shape[0], 3, 1)), -1)),
    ("einsum", lambda x: ops.einsum("bij,bkj->bik", x, x), lambda x: x @ np.swapaxes(x, 1, 2)),
    ("tensordot", lambda x: ops.tensordot(x, np.ones((4, 2), np.float32), 1), lambda x: x @ np.ones((4, 2))),
    ("median", lambda x: ops.median(x, axis=-1, keepdims=True), lambda x: np.median(x, -1, keepdims=True)),
    ("moments", lambda x: ops.moments(x, axes=[-1])[1], lambda x: np.var(x, -1)),
    ("tile", lambda x: ops.tile(x, (1, 2, 1)), lambda x: np.tile(x, (1, 2, 1))),
    ("attention", lambda x: ops.dot_product_attention(*(ops.reshape(x, (-1, 3, 2, 2)),) * 3),
     lambda x: _attention(*(x.reshape(-1, 3, 2, 2),) * 3, False)),
    ("sparse_categorical_crossentropy", lambda x: ops.sparse_categorical_crossentropy(
        ops.argmax(x, axis=-1), x, from_logits=True), lambda x: -np.log(_softmax(x).max(-1))),
])
def test_a_batch_dimension_of_none_is_kept(name, fn, reference):
    shape, value, x = _traced(fn, (3, 4))
    assert shape[0] is None, f"{name}: traced shape {shape}"
    np.testing.assert_allclose(value, reference(x), rtol=1e-5, atol=1e-6, err_msg=name)


def test_bad_arguments_are_refused_with_a_message():
    with pytest.raises(ValueError, match="glu: axis 1 must have an even static size, got 3"):
        ops.glu(np.ones((2, 3)))
    with pytest.raises(NotImplementedError, match="repeated indices"):
        ops.einsum("ii->i", np.ones((2, 2)))
    with pytest.raises(ValueError, match="norm: ord=3 is not a matrix norm"):
        ops.norm(np.ones((2, 2)), ord=3)
    with pytest.raises(ValueError, match="quantile: method must be one of"):
        ops.quantile(np.ones(3), 0.5, method="cubic")
    with pytest.raises(ValueError, match="batch dimension"):
        _traced(lambda x: ops.cumsum(x, axis=0), (3,))
    with pytest.raises(ValueError, match="sort: the sorted axis must have a static size"):
        _traced(lambda x: ops.sort(x, axis=0), (3,))
    with pytest.raises(ValueError, match="unstack: num=2 but axis 0 has size 3"):
        ops.unstack(np.ones((3, 2)), num=2)


def test_control_flow_windows_and_casts_eagerly():
    np.testing.assert_allclose(ops.hamming(7), np.cos(np.linspace(-np.pi, np.pi, 7)) * 0.46 + 0.54, atol=1e-6)
    np.testing.assert_allclose(ops.hanning(5), [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(ops.bartlett(5), [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(ops.blackman(3), [0.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(ops.kaiser(3, 0.0), [1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_array_equal(ops.saturate_cast(np.array([-5.0, 300.0, 20.7], np.float32), "uint8"), [0, 255, 20])
    np.testing.assert_array_equal(ops.saturate_cast(np.array([-5, 300], np.int32), "uint8"), [0, 255])
    np.testing.assert_array_equal(ops.saturate_cast(np.array([3e9, -3e9], np.float32), "int32"),
                                  [2147483520, -2147483648])
    assert ops.while_loop(lambda i, s: i < 4, lambda i, s: (i + 1, s * 2), (0, 1.0)) == (4, 16.0)
    assert ops.while_loop(lambda i: i < 100, lambda i: i + 1, 0, maximum_iterations=7) == 7
    assert ops.cond(False, lambda: 1, lambda: 2) == 2 and ops.switch(9, [lambda: 0, lambda: 1]) == 1
    x = np.array([[3.0, 1.0, 2.0, 0.5]], np.float32)
    order = np.asarray(ops.argpartition(x, 1))
    assert set(order[0, :2]) == {1, 3} and order.dtype == np.int32
    np.testing.assert_allclose(ops.logspace(0.0, 2.0, 3, base=2), [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(ops.segment_max(x[0], np.array([2, 0, 2, 0]), 3), [1.0, -np.inf, 3.0])
    np.testing.assert_array_equal(ops.segment_sum(x[0], np.array([2, 0, 2, 0])), [1.5, 0.0, 5.0])
    np.testing.assert_array_equal(ops.imag(x), np.zeros_like(x))
    ints = np.array([-7, 7, 5, -1], np.int32)
    np.testing.assert_array_equal(ops.right_shift(ints, np.array([1, 1, 2, 3], np.int32)), [-4, 3, 1, -1])
    np.testing.assert_array_equal(ops.left_shift(ints, 2), [-28, 28, 20, -4])
    np.testing.assert_array_equal(ops.diagflat(np.array([[1, 2], [3, 4]]), -1),
                                  [[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 2, 0, 0, 0], [0, 0, 3, 0, 0], [0, 0, 0, 4, 0]])
    np.testing.assert_array_equal(ops.vander(np.array([2, 3], np.int32), increasing=True), [[1, 2], [1, 3]])
    np.testing.assert_allclose(ops.geomspace(1.0, 1000.0, 4), [1.0, 10.0, 100.0, 1000.0], rtol=1e-5)
    channels_first = np.arange(32, dtype=np.float32).reshape(2, 4, 2, 2)
    np.testing.assert_array_equal(ops.space_to_depth(ops.depth_to_space(channels_first, 2, "channels_first"), 2,
                                                     "channels_first"), channels_first)
    gray = ops.image.rgb_to_grayscale(np.array([[[[10, 20, 30]]]], np.int32))
    assert np.asarray(gray).dtype == np.int32 and int(np.asarray(gray).ravel()[0]) == 18  # 18.149 truncated
    with pytest.raises(ValueError, match="pad_images .height.: give exactly two"):
        ops.image.pad_images(np.zeros((4, 4, 1)), top_padding=1)
    with pytest.raises(ValueError, match="cholesky: expected square matrices"):
        ops.cholesky(np.ones((2, 3)))
    with pytest.raises(TypeError, match="integer inputs are required"):
        ops.left_shift(x, 1)
    np.testing.assert_array_equal(ops.isreal(x), np.ones(x.shape, bool))


def test_limits_are_explained():
    with pytest.raises(ValueError, match="num_segments is required"):
        _traced(lambda x: ops.segment_sum(x, ops.cast(ops.argmax(x, axis=-1), "int32")), (3,))
    with pytest.raises(ValueError, match="slice_update: updates of shape"):
        ops.slice_update(np.zeros((3, 3)), (2, 2), np.ones((2, 2)))
