"""keras.ops numpy-like functions written as compositions of registered ops.

Each function here is exact (or as accurate as its float formula) and builds only on
registered primitives, so it runs eagerly, traces, differentiates and compiles through
them. Sorting is a rank computation (pairwise comparisons, O(n^2) along the sorted axis)
followed by a one-hot permutation, which keeps it a composition of elementwise ops,
reductions and matmul-free sums; cumulative sums and products are log-step scans of
shifted copies (pad + slice).
"""

from __future__ import annotations

import builtins
import math
import string

import numpy as np

from kgraph import ops
from kgraph.ir import SymbolicTensor, is_tracing
from kgraph.ops.elementwise import is_float, result_type
from kgraph.ops.shapes import normalize_axes, normalize_axis

__all__ = [
    # elementwise math
    "tan", "arcsin", "arccos", "arctan2", "sinh", "cosh", "arcsinh", "arccosh", "arctanh", "ceil", "round",
    "trunc", "fix",
    "log2", "log10", "exp2", "cbrt", "reciprocal", "isnan", "isinf", "isfinite", "isposinf", "isneginf",
    "signbit", "hypot", "logaddexp", "logaddexp2", "fmod", "heaviside", "deg2rad", "rad2deg", "erfc",
    "nan_to_num", "divide_no_nan", "fabs", "copy", "fmax", "fmin", "isclose", "allclose", "sinc",
    "positive", "conj", "conjugate", "real",
    # reductions and statistics
    "all", "any", "count_nonzero", "average", "ptp", "nansum", "nanmean", "nanmax", "nanmin", "nanprod",
    "nanvar", "nanstd", "sort", "argsort", "top_k", "in_top_k", "median", "quantile", "percentile",
    "take_along_axis", "cumsum", "cumprod", "diff", "norm",
    # shapes and creation
    "tile", "repeat", "flip", "fliplr", "flipud", "roll", "moveaxis", "ravel", "hstack", "vstack",
    "dstack", "array_split", "hsplit", "vsplit", "dsplit", "unstack", "diag", "diagonal", "tril", "triu",
    "eye", "tri", "identity", "trace", "meshgrid", "linspace", "outer", "inner", "vdot", "kron",
    "tensordot", "einsum", "append", "empty", "empty_like", "array", "is_tensor", "rot90",
]


# -- helpers ------------------------------------------------------------------------------------
def _tensor(x):
    return ops.convert_to_tensor(x)


def _floating(x):
    """x as a tensor of a float dtype (ints and bools become float32, as Keras does)."""
    x = _tensor(x)
    return x if is_float(x.dtype) else ops.cast(x, "float32")


def _floating_pair(x1, x2):
    x1, x2 = _tensor(x1), _tensor(x2)
    dtype = result_type(x1.dtype, x2.dtype)
    dtype = dtype if is_float(dtype) else "float32"
    return ops.cast(x1, dtype) if x1.dtype != dtype else x1, ops.cast(x2, dtype) if x2.dtype != dtype else x2


def _rank(x):
    return len(x.shape)


def _dims(shape):
    return tuple(-1 if d is None else d for d in shape)


def _is_eager(*values):
    return not is_tracing() and not builtins.any(isinstance(v, SymbolicTensor) for v in values)


# -- elementwise math -------------------------------------------------------------------------------
def tan(x):
    """Elementwise tangent, sin(x) / cos(x)."""
    x = _floating(x)
    return ops.divide(ops.sin(x), ops.cos(x))


def arcsin(x):
    """Inverse sine, arctan(x / sqrt((1 - x)(1 + x)))."""
    x = _floating(x)
    return ops.arctan(ops.divide(x, ops.sqrt(ops.multiply(ops.subtract(1.0, x), ops.add(1.0, x)))))


def arccos(x):
    """Inverse cosine, 2 arctan(sqrt((1 - x) / (1 + x))) (accurate near x = 1)."""
    x = _floating(x)
    return ops.multiply(ops.arctan(ops.sqrt(ops.divide(ops.subtract(1.0, x), ops.add(1.0, x)))), 2.0)


def arctan2(x1, x2):
    """The angle of the point (x2, x1) in (-pi, pi], from arctan(x1 / x2) by quadrant."""
    y, x = _floating_pair(x1, x2)
    zero_x = ops.equal(x, 0)
    base = ops.arctan(ops.divide(y, ops.where(zero_x, ops.ones_like(x), x)))
    half_turn = ops.where(signbit(y), -math.pi, math.pi)
    shifted = ops.where(ops.less(x, 0), ops.add(base, half_turn), base)
    on_axis = ops.multiply(ops.sign(y), math.pi / 2)
    return ops.where(zero_x, ops.add(on_axis, ops.zeros_like(shifted)), shifted)


def sinh(x):
    """Hyperbolic sine from expm1 (accurate near 0)."""
    x = _floating(x)
    return ops.multiply(ops.subtract(ops.expm1(x), ops.expm1(ops.negative(x))), 0.5)


def cosh(x):
    x = _floating(x)
    return ops.multiply(ops.add(ops.exp(x), ops.exp(ops.negative(x))), 0.5)


def arcsinh(x):
    """Inverse hyperbolic sine: sign(x) log1p(|x| + x^2 / (1 + sqrt(1 + x^2)))."""
    x = _floating(x)
    a = ops.abs(x)
    a2 = ops.square(a)
    inner = ops.add(a, ops.divide(a2, ops.add(1.0, ops.sqrt(ops.add(1.0, a2)))))
    return ops.multiply(ops.sign(x), ops.log1p(inner))


def arccosh(x):
    """Inverse hyperbolic cosine, log1p(t + sqrt(t (t + 2))) with t = x - 1."""
    x = _floating(x)
    t = ops.subtract(x, 1.0)
    return ops.log1p(ops.add(t, ops.sqrt(ops.multiply(t, ops.add(t, 2.0)))))


def arctanh(x):
    """Inverse hyperbolic tangent, log1p(2x / (1 - x)) / 2."""
    x = _floating(x)
    return ops.multiply(ops.log1p(ops.divide(ops.multiply(x, 2.0), ops.subtract(1.0, x))), 0.5)


def ceil(x):
    x = _floating(x)
    return ops.negative(ops.floor(ops.negative(x)))


def trunc(x):
    """Round toward zero (ints and bools pass through, as in Keras)."""
    x = _tensor(x)
    if not is_float(x.dtype):
        return x
    return ops.where(ops.less(x, 0), ceil(x), ops.floor(x))


fix = trunc


def round(x, decimals=0):  # noqa: A001  (Keras name)
    """Round half to even at `decimals` decimal places (numpy's rule)."""
    x = _tensor(x)
    if not is_float(x.dtype):
        if decimals >= 0:
            return x
        scale = 10 ** (-decimals)
        return ops.cast(ops.multiply(round(ops.divide(ops.cast(x, "float32"), float(scale))), float(scale)), x.dtype)
    scale = 10.0 ** decimals
    y = ops.multiply(x, scale) if decimals else x
    low = ops.floor(y)
    fraction = ops.subtract(y, low)
    odd = ops.mod(low, 2.0)
    rounded = ops.where(ops.greater(fraction, 0.5), ops.add(low, 1.0),
                        ops.where(ops.less(fraction, 0.5), low, ops.add(low, odd)))
    return ops.divide(rounded, scale) if decimals else rounded


def log2(x):
    return ops.divide(ops.log(_floating(x)), math.log(2.0))


def log10(x):
    return ops.divide(ops.log(_floating(x)), math.log(10.0))


def exp2(x):
    return ops.exp(ops.multiply(_floating(x), math.log(2.0)))


def cbrt(x):
    """Real cube root (negative for negative x)."""
    x = _floating(x)
    return ops.multiply(ops.sign(x), ops.power(ops.abs(x), 1.0 / 3.0))


def reciprocal(x):
    return ops.divide(1.0, _floating(x))


def isnan(x):
    x = _tensor(x)
    if not is_float(x.dtype):
        return ops.not_equal(ops.zeros_like(x, dtype="bool"), False)
    return ops.not_equal(x, x)


def isinf(x):
    x = _tensor(x)
    if not is_float(x.dtype):
        return isnan(x)
    return ops.equal(ops.abs(x), np.inf)


def isposinf(x):
    x = _tensor(x)
    return ops.equal(x, np.inf) if is_float(x.dtype) else isnan(x)


def isneginf(x):
    x = _tensor(x)
    return ops.equal(x, -np.inf) if is_float(x.dtype) else isnan(x)


def isfinite(x):
    x = _tensor(x)
    if not is_float(x.dtype):
        return ops.logical_not(isnan(x))
    return ops.less(ops.abs(x), np.inf)


def signbit(x):
    """Whether the sign bit is set: x < 0, or x is -0.0 (1 / x is -inf)."""
    x = _tensor(x)
    if not is_float(x.dtype):
        return ops.less(x, 0)
    negative_zero = ops.logical_and(ops.equal(x, 0), ops.less(ops.divide(1.0, ops.where(
        ops.equal(x, 0), x, ops.ones_like(x))), 0))
    return ops.logical_or(ops.less(x, 0), negative_zero)


def hypot(x1, x2):
    """sqrt(x1^2 + x2^2), scaled by the larger magnitude so squares cannot overflow."""
    x1, x2 = _floating_pair(x1, x2)
    a, b = ops.abs(x1), ops.abs(x2)
    big = ops.maximum(a, b)
    small = ops.minimum(a, b)
    safe = ops.where(ops.equal(big, 0), ops.ones_like(big), big)
    ratio = ops.divide(small, safe)
    return ops.multiply(big, ops.sqrt(ops.add(1.0, ops.square(ratio))))


def logaddexp(x1, x2):
    """log(exp(x1) + exp(x2)) computed stably around the (gradient-free) maximum."""
    x1, x2 = _floating_pair(x1, x2)
    peak = ops.stop_gradient(ops.maximum(x1, x2))
    peak = ops.where(isfinite(peak), peak, ops.zeros_like(peak))
    return ops.add(peak, ops.log(ops.add(ops.exp(ops.subtract(x1, peak)), ops.exp(ops.subtract(x2, peak)))))


def logaddexp2(x1, x2):
    ln2 = math.log(2.0)
    x1, x2 = _floating_pair(x1, x2)
    return ops.divide(logaddexp(ops.multiply(x1, ln2), ops.multiply(x2, ln2)), ln2)


def fmod(x1, x2):
    """C's fmod: the remainder of x1 / x2 with the sign of x1."""
    x1, x2 = _tensor(x1), _tensor(x2)
    if not is_float(x1.dtype) and not is_float(x2.dtype):
        remainder = ops.mod(x1, x2)
        fix_sign = ops.logical_and(ops.not_equal(remainder, 0), ops.not_equal(ops.less(x1, 0), ops.less(x2, 0)))
        return ops.where(fix_sign, ops.subtract(remainder, x2), remainder)
    x1, x2 = _floating_pair(x1, x2)
    remainder = ops.mod(x1, x2)  # numpy's mod: the sign of x2
    fix_sign = ops.logical_and(ops.not_equal(remainder, 0), ops.not_equal(ops.less(x1, 0), ops.less(x2, 0)))
    return ops.where(fix_sign, ops.subtract(remainder, x2), remainder)


def heaviside(x1, x2):
    """0 where x1 < 0, x2 where x1 == 0, 1 where x1 > 0."""
    x1, x2 = _floating_pair(x1, x2)
    return ops.where(ops.less(x1, 0), ops.zeros_like(x1),
                     ops.where(ops.greater(x1, 0), ops.ones_like(x1), ops.add(x2, ops.zeros_like(x1))))


def deg2rad(x):
    return ops.multiply(_floating(x), math.pi / 180.0)


def rad2deg(x):
    return ops.multiply(_floating(x), 180.0 / math.pi)


def erfc(x):
    return ops.subtract(1.0, ops.erf(_floating(x)))


def nan_to_num(x, nan=0.0, posinf=None, neginf=None):
    """NaN becomes `nan`, +inf `posinf` (default the dtype's largest value), -inf `neginf`."""
    x = _tensor(x)
    if not is_float(x.dtype):
        return x
    info = np.finfo(x.dtype)
    posinf = float(info.max) if posinf is None else float(posinf)
    neginf = float(info.min) if neginf is None else float(neginf)
    result = ops.where(ops.equal(x, np.inf), ops.full_like(x, posinf), x)
    result = ops.where(ops.equal(x, -np.inf), ops.full_like(x, neginf), result)
    return ops.where(isnan(x), ops.full_like(x, float(nan)), result)


def divide_no_nan(x1, x2):
    """x1 / x2, and 0 where x2 is 0."""
    x1, x2 = _floating_pair(x1, x2)
    zero = ops.equal(x2, 0)
    safe = ops.where(zero, ops.ones_like(x2), x2)
    quotient = ops.divide(x1, safe)
    return ops.where(zero, ops.zeros_like(quotient), quotient)


def fabs(x):
    return ops.abs(_floating(x))


def copy(x):
    x = _tensor(x)
    return np.array(x) if _is_eager(x) else ops.add(x, ops.zeros_like(x))


def positive(x):
    return copy(x)


def conj(x):
    """Complex conjugate: kgraph has real dtypes only, so x itself."""
    return _tensor(x)


conjugate = conj
real = conj


def fmax(x1, x2):
    """Maximum that ignores NaN (a NaN operand yields the other)."""
    x1, x2 = _tensor(x1), _tensor(x2)
    return ops.where(isnan(x1), x2, ops.where(isnan(x2), x1, ops.maximum(x1, x2)))


def fmin(x1, x2):
    x1, x2 = _tensor(x1), _tensor(x2)
    return ops.where(isnan(x1), x2, ops.where(isnan(x2), x1, ops.minimum(x1, x2)))


def isclose(x1, x2, rtol=1e-5, atol=1e-8, equal_nan=False):
    """|x1 - x2| <= atol + rtol |x2| (infinities equal only to themselves)."""
    x1, x2 = _floating_pair(x1, x2)
    close = ops.less_equal(ops.abs(ops.subtract(x1, x2)), ops.add(float(atol), ops.multiply(float(rtol), ops.abs(x2))))
    close = ops.logical_or(close, ops.equal(x1, x2))
    if equal_nan:
        close = ops.logical_or(close, ops.logical_and(isnan(x1), isnan(x2)))
    return close


def allclose(x1, x2, rtol=1e-5, atol=1e-8, equal_nan=False):
    return all(isclose(x1, x2, rtol=rtol, atol=atol, equal_nan=equal_nan))


def sinc(x):
    """sin(pi x) / (pi x), 1 at 0."""
    x = _floating(x)
    zero = ops.equal(x, 0)
    safe = ops.multiply(ops.where(zero, ops.ones_like(x), x), math.pi)
    return ops.where(zero, ops.ones_like(x), ops.divide(ops.sin(safe), safe))


# -- reductions and statistics -----------------------------------------------------------------------
def _nonzero_count(x, axis, keepdims):
    x = _tensor(x)
    return ops.sum(ops.cast(ops.cast(x, "bool"), "int32"), axis=axis, keepdims=keepdims)


def all(x, axis=None, keepdims=False):  # noqa: A001  (Keras name)
    """Whether every element along `axis` is nonzero (True for an empty reduction)."""
    x = _tensor(x)
    zeros = ops.sum(ops.cast(ops.logical_not(ops.cast(x, "bool")), "int32"), axis=axis, keepdims=keepdims)
    return ops.equal(zeros, 0)


def any(x, axis=None, keepdims=False):  # noqa: A001  (Keras name)
    return ops.greater(_nonzero_count(x, axis, keepdims), 0)


def count_nonzero(x, axis=None):
    return _nonzero_count(x, axis, False)


def _along(weights, x, axis):
    """1-D `weights` for `axis` of x reshaped to broadcast against x."""
    shape = [1] * _rank(x)
    shape[axis] = -1
    return ops.reshape(weights, tuple(shape))


def average(x, axis=None, weights=None):
    """Weighted mean along `axis`; 1-D weights apply along the axis."""
    x = _floating(x)
    if weights is None:
        return ops.mean(x, axis=axis)
    weights = _tensor(weights)
    if _rank(weights) == 1 and _rank(x) > 1:
        if axis is None:
            raise ValueError("average: 1-D weights need an axis when x has rank > 1")
        weights = _along(weights, x, normalize_axis(axis, _rank(x), "average"))
    weights = ops.cast(weights, x.dtype) if weights.dtype != x.dtype else weights
    total = ops.sum(ops.multiply(x, weights), axis=axis)
    return ops.divide(total, ops.sum(ops.multiply(ops.ones_like(x), weights), axis=axis))


def ptp(x, axis=None, keepdims=False):
    """Range (max - min) along `axis`."""
    x = _tensor(x)
    return ops.subtract(ops.max(x, axis=axis, keepdims=keepdims), ops.min(x, axis=axis, keepdims=keepdims))


def _without_nan(x, fill):
    x = _tensor(x)
    return ops.where(isnan(x), ops.full_like(x, fill), x) if is_float(x.dtype) else x


def nansum(x, axis=None, keepdims=False):
    return ops.sum(_without_nan(x, 0.0), axis=axis, keepdims=keepdims)


def nanprod(x, axis=None, keepdims=False):
    return ops.prod(_without_nan(x, 1.0), axis=axis, keepdims=keepdims)


def _nan_count(x, axis, keepdims):
    x = _tensor(x)
    valid = ops.logical_not(isnan(x))
    return ops.sum(ops.cast(valid, x.dtype if is_float(x.dtype) else "float32"), axis=axis, keepdims=keepdims)


def nanmean(x, axis=None, keepdims=False):
    """Mean of the non-NaN elements (NaN where there are none)."""
    x = _floating(x)
    return ops.divide(nansum(x, axis, keepdims), _nan_count(x, axis, keepdims))


def _nan_extremum(reduce, x, axis, keepdims, fill):
    x = _tensor(x)
    if not is_float(x.dtype):
        return reduce(x, axis=axis, keepdims=keepdims)
    result = reduce(_without_nan(x, fill), axis=axis, keepdims=keepdims)
    empty = ops.equal(_nan_count(x, axis, keepdims), 0)
    return ops.where(empty, ops.full_like(result, np.nan), result)


def nanmax(x, axis=None, keepdims=False):
    return _nan_extremum(ops.max, x, axis, keepdims, -np.inf)


def nanmin(x, axis=None, keepdims=False):
    return _nan_extremum(ops.min, x, axis, keepdims, np.inf)


def nanvar(x, axis=None, keepdims=False):
    """Variance of the non-NaN elements. NaNs are replaced before centering, so no NaN
    reaches a gradient (0 * NaN would poison the mean's gradient)."""
    x = _floating(x)
    valid = ops.logical_not(isnan(x))
    clean = ops.where(valid, x, ops.zeros_like(x))
    centered = ops.where(valid, ops.subtract(clean, nanmean(x, axis, keepdims=True)), ops.zeros_like(x))
    return ops.divide(ops.sum(ops.square(centered), axis=axis, keepdims=keepdims), _nan_count(x, axis, keepdims))


def nanstd(x, axis=None, keepdims=False):
    return ops.sqrt(nanvar(x, axis, keepdims))


def _to_last(x, axis):
    """x with `axis` moved last, and the inverse move."""
    rank = _rank(x)
    axis = normalize_axis(axis, rank)
    if axis == rank - 1:
        return x, lambda y: y
    return moveaxis(x, axis, -1), lambda y: moveaxis(y, -1, axis)


def _permutation(x, descending=False):
    """The one-hot sorting permutation of x along its last axis (n static): P[..., i, k] is 1
    where element i lands at sorted position k. Ties keep their order (a stable sort)."""
    n = x.shape[-1]
    if n is None:
        raise ValueError("sort: the sorted axis must have a static size, not the batch dimension")
    xi, xj = ops.expand_dims(x, -1), ops.expand_dims(x, -2)  # [..., i, 1] and [..., 1, j]
    before = ops.greater(xj, xi) if descending else ops.less(xj, xi)
    earlier = np.tril(np.ones((n, n), bool), -1)  # j < i
    tie = ops.logical_and(ops.equal(xj, xi), earlier)
    rank = ops.sum(ops.cast(ops.logical_or(before, tie), "int32"), axis=-1)
    return ops.equal(ops.expand_dims(rank, -1), np.arange(n, dtype=np.int32))


def _apply_permutation(x, permutation):
    """sorted[..., k] = sum_i x[..., i] P[..., i, k]."""
    weights = ops.cast(permutation, x.dtype if x.dtype != "bool" else "int32")
    values = x if x.dtype != "bool" else ops.cast(x, "int32")
    result = ops.sum(ops.multiply(ops.expand_dims(values, -1), weights), axis=-2)
    return ops.cast(result, "bool") if x.dtype == "bool" else result


def _sorted(x, axis, descending=False):
    x = _tensor(x)
    if axis is None:
        x, axis = ravel(x), 0
    if _is_eager(x):  # the same stable order without the O(n^2) comparison matrix
        keys = x.astype(np.int64) if x.dtype == "bool" else x
        order = np.argsort(-keys if descending else keys, axis=axis, kind="stable").astype(np.int32)
        return np.take_along_axis(x, order, axis=axis), order
    x, back = _to_last(x, axis)
    permutation = _permutation(x, descending)
    indices = ops.sum(ops.multiply(ops.cast(permutation, "int32"),
                                   np.arange(x.shape[-1], dtype=np.int32)[:, None]), axis=-2)
    return back(_apply_permutation(x, permutation)), back(indices)


def sort(x, axis=-1):
    """Sorted ascending along `axis` (stable; memory O(n^2) along the axis)."""
    return _sorted(x, axis)[0]


def argsort(x, axis=-1):
    """Indices that sort x along `axis` (stable), int32."""
    return _sorted(x, axis)[1]


def top_k(x, k, sorted=True):  # noqa: A002  (Keras argument name)
    """The k largest values along the last axis and their int32 indices (ties: lower index first)."""
    x = _tensor(x)
    values, indices = _sorted(x, -1, descending=True)
    return ops.getitem(values, (Ellipsis, builtins.slice(0, k))), ops.getitem(indices, (Ellipsis, builtins.slice(0, k)))


def in_top_k(targets, predictions, k):
    """Whether each target's prediction is among the k largest of its row (ties count in)."""
    predictions = _tensor(predictions)
    targets = _tensor(targets)
    chosen = take_along_axis(predictions, ops.expand_dims(targets, -1), axis=-1)
    larger = ops.sum(ops.cast(ops.greater(predictions, chosen), "int32"), axis=-1)
    return ops.less(larger, k)


def quantile(x, q, axis=None, method="linear", keepdims=False):
    """The q-th quantiles (q in [0, 1]) along `axis`, numpy's methods linear, lower, higher,
    midpoint and nearest; a leading axis indexes q when q is an array."""
    x = _floating(x)
    methods = ("linear", "lower", "higher", "midpoint", "nearest")
    if method not in methods:
        raise ValueError(f"quantile: method must be one of {methods}, got {method!r}")
    q_values = np.asarray(q, dtype=np.float64)
    if _is_eager(x) is False and isinstance(q, SymbolicTensor):
        raise ValueError("quantile: q must be a constant (a number or an array), not a symbolic tensor")
    rank = _rank(x)
    axes = normalize_axes(axis, rank, "quantile")
    kept = tuple(i for i in range(rank) if i not in axes)
    moved = ops.transpose(x, kept + axes) if kept + axes != tuple(range(rank)) else x
    lead = tuple(moved.shape[:len(kept)])
    flat = ops.reshape(moved, _dims(lead) + (-1,)) if len(axes) != 1 else moved
    values = sort(flat, axis=-1)
    n = values.shape[-1]
    results = []
    for qv in q_values.reshape(-1):
        position = qv * (n - 1)
        lo, hi = int(math.floor(position)), int(math.ceil(position))
        lo_v = ops.getitem(values, (Ellipsis, lo))
        hi_v = ops.getitem(values, (Ellipsis, hi))
        fraction = position - lo
        if method == "lower":
            value = lo_v
        elif method == "higher":
            value = hi_v
        elif method == "midpoint":
            value = ops.multiply(ops.add(lo_v, hi_v), 0.5) if lo != hi else lo_v
        elif method == "nearest":
            value = ops.getitem(values, (Ellipsis, int(np.round(position))))
        else:
            value = ops.add(lo_v, ops.multiply(ops.subtract(hi_v, lo_v), fraction)) if lo != hi else lo_v
        if keepdims:
            shape = [1 if i in axes else d for i, d in enumerate(x.shape)]
            value = ops.reshape(value, _dims(shape))
        results.append(value)
    if q_values.ndim == 0:
        return results[0]
    return ops.reshape(ops.stack(results, axis=0), _dims(q_values.shape + tuple(results[0].shape)))


def percentile(x, q, axis=None, method="linear", keepdims=False):
    return quantile(x, np.asarray(q, np.float64) / 100.0, axis=axis, method=method, keepdims=keepdims)


def median(x, axis=None, keepdims=False):
    return quantile(x, 0.5, axis=axis, keepdims=keepdims)


def take_along_axis(x, indices, axis=None):
    """x's elements at `indices` along `axis` (negative indices count from the end)."""
    x, indices = _tensor(x), _tensor(indices)
    if axis is None:
        x, indices, axis = ravel(x), ravel(indices), 0
    rank = _rank(x)
    axis = normalize_axis(axis, rank, "take_along_axis")
    n = x.shape[axis]
    if n is None:
        raise ValueError("take_along_axis: the indexed axis must have a static size")
    x_last, back = _to_last(x, axis)
    idx_last, _ = _to_last(indices, axis)
    idx_last = ops.mod(ops.cast(idx_last, "int32"), n)
    hits = ops.equal(ops.expand_dims(idx_last, -1), np.arange(n, dtype=np.int32))  # [..., m, n]
    values = x_last if x_last.dtype != "bool" else ops.cast(x_last, "int32")
    picked = ops.sum(ops.multiply(ops.expand_dims(values, -2), ops.cast(hits, values.dtype)), axis=-1)
    picked = ops.cast(picked, "bool") if x.dtype == "bool" else picked
    return back(picked)


def _shift(x, offset, axis, fill):
    """x shifted by `offset` along `axis`, the vacated positions `fill`."""
    n = x.shape[axis]
    widths = [(0, 0)] * _rank(x)
    widths[axis] = (offset, 0)
    padded = ops.pad(x, widths, constant_values=fill)
    key = [builtins.slice(None)] * _rank(x)
    key[axis] = builtins.slice(0, n)
    return ops.getitem(padded, tuple(key))


def _scan(x, axis, dtype, combine, fill):
    x = _tensor(x)
    if dtype is not None:
        x = ops.cast(x, dtype)
    elif x.dtype == "bool":
        x = ops.cast(x, "int32")
    if axis is None:
        x, axis = ravel(x), 0
    axis = normalize_axis(axis, _rank(x), "cumulative op")
    n = x.shape[axis]
    if n is None:
        raise ValueError("cumsum/cumprod: the scanned axis must have a static size, not the batch dimension")
    offset = 1
    while offset < n:  # Hillis-Steele: after the step with offset s, each element combines 2s inputs
        x = combine(x, _shift(x, offset, axis, fill))
        offset *= 2
    return x


def cumsum(x, axis=None, dtype=None):
    """Cumulative sum along `axis` (the flattened array when None); bools count as int32."""
    return _scan(x, axis, dtype, ops.add, 0)


def cumprod(x, axis=None, dtype=None):
    return _scan(x, axis, dtype, ops.multiply, 1)


def diff(a, n=1, axis=-1):
    """n-th discrete difference along `axis`."""
    a = _tensor(a)
    axis = normalize_axis(axis, _rank(a), "diff")
    for _ in range(n):
        size = a.shape[axis]
        high = [builtins.slice(None)] * _rank(a)
        low = list(high)
        high[axis], low[axis] = builtins.slice(1, size), builtins.slice(0, size - 1)
        a = ops.subtract(ops.getitem(a, tuple(high)), ops.getitem(a, tuple(low)))
    return a


def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002  (Keras argument name)
    """Vector norms (ord None/2, 1, inf, -inf, 0 or any p) over one axis, and the matrix norms
    'fro', 'nuc', 1, -1, 2, -2, inf, -inf over two (the last three through the singular values)."""
    x = _floating(x)
    rank = _rank(x)
    if axis is None:
        axes = tuple(range(rank))
        if ord is not None and rank == 2:
            return norm(x, ord, axis=(0, 1), keepdims=keepdims)
        if ord is not None and rank != 1:
            raise ValueError(f"norm: ord={ord!r} needs a 1-D or 2-D tensor or an axis, got rank {rank}")
        if ord is None:
            return ops.sqrt(ops.sum(ops.square(x), axis=axes, keepdims=keepdims))
        axis = 0
    if isinstance(axis, int) or len(tuple(axis)) == 1:
        axis = axis if isinstance(axis, int) else tuple(axis)[0]
        a = ops.abs(x)
        if ord is None or ord == 2:
            return ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=keepdims))
        if ord == np.inf:
            return ops.max(a, axis=axis, keepdims=keepdims)
        if ord == -np.inf:
            return ops.min(a, axis=axis, keepdims=keepdims)
        if ord == 0:
            return ops.cast(_nonzero_count(x, axis, keepdims), x.dtype)
        if ord == 1:
            return ops.sum(a, axis=axis, keepdims=keepdims)
        if isinstance(ord, str):
            raise ValueError(f"norm: ord={ord!r} is a matrix norm and needs two axes")
        p = float(ord)
        return ops.power(ops.sum(ops.power(a, p), axis=axis, keepdims=keepdims), 1.0 / p)
    row, col = (normalize_axis(a, rank, "norm") for a in axis)
    a = ops.abs(x)
    if ord is None or ord == "fro":
        return ops.sqrt(ops.sum(ops.square(x), axis=(row, col), keepdims=keepdims))
    if ord in (1, -1, np.inf, -np.inf):
        sum_axis, pick_axis = (row, col) if ord in (1, -1) else (col, row)
        sums = ops.sum(a, axis=sum_axis, keepdims=True)
        pick = ops.max if ord in (1, np.inf) else ops.min
        result = pick(sums, axis=pick_axis, keepdims=True)
        return result if keepdims else ops.squeeze(result, axis=(row, col))
    if ord in ("nuc", 2, -2):
        from kgraph.ops.linalg_lapack import svd  # (it imports this module)

        s = svd(ops.moveaxis(x, (row, col), (-2, -1)), compute_uv=False)
        result = ops.sum(s, axis=-1) if ord == "nuc" else (ops.max if ord == 2 else ops.min)(s, axis=-1)
        return ops.expand_dims(result, tuple(sorted((row, col)))) if keepdims else result
    raise ValueError(f"norm: ord={ord!r} is not a matrix norm (one of None, 'fro', 'nuc', 1, -1, 2, -2, inf, -inf)")


# -- shapes and creation ------------------------------------------------------------------------------
def moveaxis(x, source, destination):
    x = _tensor(x)
    rank = _rank(x)
    source = [normalize_axis(a, rank, "moveaxis") for a in ((source,) if isinstance(source, int) else source)]
    destination = [normalize_axis(a, rank, "moveaxis")
                   for a in ((destination,) if isinstance(destination, int) else destination)]
    if len(source) != len(destination):
        raise ValueError(f"moveaxis: source {source} and destination {destination} differ in length")
    order = [a for a in range(rank) if a not in source]
    for dest, src in sorted(zip(destination, source)):
        order.insert(dest, src)
    return ops.transpose(x, tuple(order)) if order != list(range(rank)) else x


def ravel(x):
    return ops.reshape(_tensor(x), (-1,))


def _repeat_axis(x, count, axis, inner):
    """Repeat x `count` times along `axis`: each element (inner=True) or the whole axis."""
    shape = list(x.shape)
    if shape[axis] is None and count != 1:
        raise ValueError(f"repeat/tile: cannot repeat axis {axis}, the batch dimension (None)")
    if count == 1:
        return x
    expanded = ops.expand_dims(x, axis + 1 if inner else axis)
    target = list(expanded.shape)
    target[axis + 1 if inner else axis] = count
    broadcast = ops.broadcast_to(expanded, tuple(target))
    shape[axis] = shape[axis] * count
    return ops.reshape(broadcast, _dims(shape))


def tile(x, repeats):
    """x repeated `repeats` times along each axis (numpy.tile)."""
    x = _tensor(x)
    repeats = (int(repeats),) if np.ndim(repeats) == 0 else tuple(int(r) for r in repeats)
    rank = builtins.max(_rank(x), len(repeats))
    x = ops.reshape(x, _dims((1,) * (rank - _rank(x)) + tuple(x.shape))) if _rank(x) < rank else x
    repeats = (1,) * (rank - len(repeats)) + repeats
    for axis, count in enumerate(repeats):
        x = _repeat_axis(x, count, axis, inner=False)
    return x


def repeat(x, repeats, axis=None):
    """Each element repeated `repeats` times along `axis` (flattened when None)."""
    x = _tensor(x)
    if axis is None:
        x, axis = ravel(x), 0
    axis = normalize_axis(axis, _rank(x), "repeat")
    if np.ndim(repeats) == 0 or np.size(repeats) == 1:
        return _repeat_axis(x, int(np.reshape(repeats, -1)[0]), axis, inner=True)
    counts = np.asarray(repeats, dtype=np.int64).reshape(-1)
    n = x.shape[axis]
    if n is None or len(counts) != n:
        raise ValueError(f"repeat: {len(counts)} repeat counts for an axis of size {n}")
    return ops.take(x, np.repeat(np.arange(n, dtype=np.int32), counts), axis=axis)


def flip(x, axis=None):
    x = _tensor(x)
    axes = normalize_axes(axis, _rank(x), "flip")
    return ops.getitem(x, tuple(builtins.slice(None, None, -1) if i in axes else builtins.slice(None)
                                for i in range(_rank(x))))


def fliplr(x):
    return flip(x, 1)


def flipud(x):
    return flip(x, 0)


def rot90(array, k=1, axes=(0, 1)):
    """Rotate by 90 degrees k times in the plane of `axes` (from the first toward the second)."""
    x = _tensor(array)
    a, b = (normalize_axis(ax, _rank(x), "rot90") for ax in axes)
    k %= 4
    if k == 0:
        return x
    if k == 2:
        return flip(x, (a, b))
    x = ops.swapaxes(x, a, b)
    return flip(x, a) if k == 1 else flip(x, b)


def roll(x, shift, axis=None):
    """Elements shifted by `shift` along `axis` (cyclically); the flattened array when None."""
    x = _tensor(x)
    if axis is None:
        return ops.reshape(roll(ravel(x), shift, 0), _dims(x.shape))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    shifts = (shift,) * len(axes) if np.ndim(shift) == 0 else tuple(shift)
    for ax, s in zip(axes, shifts):
        ax = normalize_axis(ax, _rank(x), "roll")
        n = x.shape[ax]
        if n is None:
            raise ValueError("roll: cannot roll the batch dimension (None)")
        s = int(s) % n if n else 0
        if s:
            head = [builtins.slice(None)] * _rank(x)
            tail = list(head)
            head[ax], tail[ax] = builtins.slice(n - s, n), builtins.slice(0, n - s)
            x = ops.concatenate([ops.getitem(x, tuple(head)), ops.getitem(x, tuple(tail))], axis=ax)
    return x


def _at_least(x, rank):
    x = _tensor(x)
    if _rank(x) >= rank:
        return x
    if rank == 3 and _rank(x) == 2:
        return ops.expand_dims(x, -1)
    if rank == 3 and _rank(x) == 1:
        return ops.reshape(x, _dims((1,) + tuple(x.shape) + (1,)))
    return ops.reshape(x, _dims((1,) * (rank - _rank(x)) + tuple(x.shape)))


def hstack(xs):
    xs = [_tensor(x) for x in xs]
    return ops.concatenate(xs, axis=0 if builtins.all(_rank(x) <= 1 for x in xs) else 1)


def vstack(xs):
    return ops.concatenate([_at_least(x, 2) for x in xs], axis=0)


def dstack(xs):
    return ops.concatenate([_at_least(x, 3) for x in xs], axis=2)


def array_split(x, indices_or_sections, axis=0):
    """Split into sections of sizes differing by at most one (the first ones larger)."""
    x = _tensor(x)
    axis = normalize_axis(axis, _rank(x), "array_split")
    if not isinstance(indices_or_sections, int):
        return ops.split(x, list(indices_or_sections), axis=axis)
    n, sections = x.shape[axis], indices_or_sections
    if n is None:
        raise ValueError("array_split: cannot split the batch dimension (None)")
    sizes = [n // sections + (1 if i < n % sections else 0) for i in range(sections)]
    bounds = np.cumsum([0] + sizes).tolist()
    result = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        key = [builtins.slice(None)] * _rank(x)
        key[axis] = builtins.slice(lo, hi)
        result.append(ops.getitem(x, tuple(key)))
    return result


def hsplit(x, indices_or_sections):
    x = _tensor(x)
    return ops.split(x, indices_or_sections, axis=0 if _rank(x) == 1 else 1)


def vsplit(x, indices_or_sections):
    return ops.split(x, indices_or_sections, axis=0)


def dsplit(x, indices_or_sections):
    return ops.split(x, indices_or_sections, axis=2)


def unstack(x, num=None, axis=0):
    """The slices of x along `axis`, as a list."""
    x = _tensor(x)
    axis = normalize_axis(axis, _rank(x), "unstack")
    n = x.shape[axis]
    if n is None:
        raise ValueError("unstack: cannot unstack the batch dimension (None)")
    if num is not None and num != n:
        raise ValueError(f"unstack: num={num} but axis {axis} has size {n}")
    return [ops.getitem(x, (builtins.slice(None),) * axis + (i,)) for i in range(n)]


def _diagonal_indices(n, m, offset):
    if offset >= 0:
        length = builtins.max(0, builtins.min(n, m - offset))
        return np.array([i * m + i + offset for i in range(length)], np.int32)
    length = builtins.max(0, builtins.min(n + offset, m))
    return np.array([(i - offset) * m + i for i in range(length)], np.int32)


def diagonal(x, offset=0, axis1=0, axis2=1):
    """The diagonal (offset above the main one if positive) of the matrices in axes 1 and 2,
    as the last axis."""
    x = _tensor(x)
    rank = _rank(x)
    a, b = normalize_axis(axis1, rank, "diagonal"), normalize_axis(axis2, rank, "diagonal")
    x = moveaxis(x, (a, b), (-2, -1))
    n, m = x.shape[-2:]
    if n is None or m is None:
        raise ValueError("diagonal: the matrix axes must have static sizes")
    flat = ops.reshape(x, _dims(tuple(x.shape[:-2]) + (n * m,)))
    return ops.take(flat, _diagonal_indices(n, m, int(offset)), axis=-1)


def trace(x, offset=0, axis1=0, axis2=1):
    x = _tensor(x)
    result = ops.sum(diagonal(x, offset, axis1, axis2), axis=-1)
    return ops.cast(result, "int32") if x.dtype == "bool" else result


def diag(x, k=0):
    """A 1-D x as the k-th diagonal of a square matrix; a 2-D x's k-th diagonal."""
    x = _tensor(x)
    if _rank(x) == 2:
        return diagonal(x, k)
    if _rank(x) != 1:
        raise ValueError(f"diag: x must be 1-D or 2-D, got shape {tuple(x.shape)}")
    n = x.shape[0]
    matrix = ops.where(np.eye(n, dtype=bool), ops.expand_dims(x, 0), ops.zeros_like(x))
    k = int(k)
    if k == 0:
        return matrix
    widths = ((0, k), (k, 0)) if k > 0 else ((-k, 0), (0, -k))
    return ops.pad(matrix, widths)


def _triangle(x, k, lower):
    x = _tensor(x)
    n, m = x.shape[-2:]
    mask = np.tri(n, m, k, dtype=bool)
    mask = mask if lower else ~np.tri(n, m, k - 1, dtype=bool)
    return ops.where(mask, x, ops.zeros_like(x))


def tril(x, k=0):
    """x with the elements above the k-th diagonal zeroed."""
    return _triangle(x, int(k), lower=True)


def triu(x, k=0):
    return _triangle(x, int(k), lower=False)


def eye(N, M=None, k=0, dtype=None):  # noqa: N803  (Keras argument names)
    return np.eye(N, M, int(k), dtype=dtype or "float32")


def identity(n, dtype=None):
    return np.eye(n, dtype=dtype or "float32")


def tri(N, M=None, k=0, dtype=None):  # noqa: N803
    return np.tri(N, M, int(k), dtype=dtype or "float32")


def empty(shape, dtype=None):
    return ops.zeros(shape, dtype)


def empty_like(x, dtype=None):
    return ops.zeros_like(x, dtype)


def array(x, dtype=None):
    return ops.convert_to_tensor(x, dtype)


def is_tensor(x):
    from kgraph.ir import Variable

    return isinstance(x, (np.ndarray, SymbolicTensor, Variable))


def append(x1, x2, axis=None):
    x1, x2 = _tensor(x1), _tensor(x2)
    if axis is None:
        return ops.concatenate([ravel(x1), ravel(x2)], axis=0)
    return ops.concatenate([x1, x2], axis=axis)


def meshgrid(*x, indexing="xy"):
    """Coordinate grids from 1-D vectors ('xy': the first two outputs' axes swapped)."""
    if indexing not in ("xy", "ij"):
        raise ValueError(f"meshgrid: indexing must be 'xy' or 'ij', got {indexing!r}")
    xs = [ravel(v) for v in x]
    shape = [v.shape[0] for v in xs]
    if indexing == "xy" and len(xs) >= 2:
        shape[0], shape[1] = shape[1], shape[0]
    grids = []
    for i, v in enumerate(xs):
        axis = i
        if indexing == "xy" and len(xs) >= 2 and i < 2:
            axis = 1 - i
        view = [1] * len(xs)
        view[axis] = -1
        grids.append(ops.broadcast_to(ops.reshape(v, tuple(view)), tuple(shape)))
    return grids


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    """`num` evenly spaced values from start to stop (stop included when endpoint)."""
    if _is_eager(start, stop):
        values, step = np.linspace(np.asarray(start), np.asarray(stop), int(num), endpoint=endpoint,
                                   retstep=True, axis=axis)
        values = values.astype(dtype or "float32")
        return (values, np.asarray(step, dtype or "float32")) if retstep else values
    start, stop = _floating_pair(start, stop)
    divisions = (num - 1) if endpoint else num
    step = ops.divide(ops.subtract(stop, start), float(builtins.max(divisions, 1)))
    positions = np.arange(num, dtype=start.dtype).reshape((num,) + (1,) * builtins.max(_rank(start), _rank(stop)))
    values = ops.add(ops.expand_dims(start, 0), ops.multiply(positions, ops.expand_dims(step, 0)))
    if endpoint and num > 1:
        last = ops.expand_dims(ops.add(stop, ops.zeros_like(start)), 0)
        values = ops.concatenate([ops.getitem(values, builtins.slice(0, num - 1)), last], axis=0)
    if axis != 0:
        values = moveaxis(values, 0, axis)
    if dtype is not None:
        values = ops.cast(values, dtype)
    return (values, step) if retstep else values


def outer(x1, x2):
    return ops.multiply(ops.reshape(_tensor(x1), (-1, 1)), ops.reshape(_tensor(x2), (1, -1)))


def inner(x1, x2):
    """Sum product over the last axes (a product when either is a scalar)."""
    x1, x2 = _tensor(x1), _tensor(x2)
    if _rank(x1) == 0 or _rank(x2) == 0:
        return ops.multiply(x1, x2)
    return tensordot(x1, x2, axes=([-1], [-1]))


def vdot(x1, x2):
    return ops.sum(ops.multiply(ravel(x1), ravel(x2)))


def kron(x1, x2):
    """Kronecker product: blocks x1[i] * x2."""
    a, b = _tensor(x1), _tensor(x2)
    rank = builtins.max(_rank(a), _rank(b))
    a = ops.reshape(a, _dims((1,) * (rank - _rank(a)) + tuple(a.shape)))
    b = ops.reshape(b, _dims((1,) * (rank - _rank(b)) + tuple(b.shape)))
    a_view = [d for dim in a.shape for d in (dim, 1)]
    b_view = [d for dim in b.shape for d in (1, dim)]
    product = ops.multiply(ops.reshape(a, _dims(a_view)), ops.reshape(b, _dims(b_view)))
    return ops.reshape(product, _dims([p * q for p, q in zip(a.shape, b.shape)]))


def tensordot(x1, x2, axes=2):
    """Sum products over `axes` (an int: x1's last and x2's first axes; or two axis lists)."""
    a, b = _tensor(x1), _tensor(x2)
    if isinstance(axes, int):
        a_axes = list(range(_rank(a) - axes, _rank(a)))
        b_axes = list(range(axes))
    else:
        a_axes, b_axes = ([ax] if isinstance(ax, int) else list(ax) for ax in axes)
    a_axes = [normalize_axis(ax, _rank(a), "tensordot") for ax in a_axes]
    b_axes = [normalize_axis(ax, _rank(b), "tensordot") for ax in b_axes]
    a_free = [i for i in range(_rank(a)) if i not in a_axes]
    b_free = [i for i in range(_rank(b)) if i not in b_axes]
    contract = int(np.prod([a.shape[i] for i in a_axes]))
    b_out = [b.shape[i] for i in b_free]
    a_moved = ops.transpose(a, tuple(a_free + a_axes)) if a_free + a_axes != list(range(_rank(a))) else a
    b_moved = ops.transpose(b, tuple(b_axes + b_free)) if b_axes + b_free != list(range(_rank(b))) else b
    a_matrix = ops.reshape(a_moved, _dims([a.shape[i] for i in a_free] + [contract]))
    b_matrix = ops.reshape(b_moved, (contract, int(np.prod(b_out))))
    product = ops.matmul(a_matrix if a_free else ops.reshape(a_matrix, (1, contract)), b_matrix)
    return ops.reshape(product, _dims([a.shape[i] for i in a_free] + b_out))


def _einsum_parse(subscripts, operands):
    subscripts = subscripts.replace(" ", "")
    inputs, _, output = subscripts.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum: {len(terms)} terms in {subscripts!r} for {len(operands)} operands")
    used = set(subscripts) - set(".,->")
    spare = [c for c in string.ascii_letters if c not in used]
    ellipsis_rank = builtins.max([_rank(op) - len(t.replace("...", "")) for t, op in zip(terms, operands)
                                  if "..." in t], default=0)
    ellipsis = "".join(spare[:ellipsis_rank])
    expanded = []
    for term, op in zip(terms, operands):
        if "..." in term:
            own = _rank(op) - len(term.replace("...", ""))
            term = term.replace("...", ellipsis[ellipsis_rank - own:])
        if len(term) != _rank(op):
            raise ValueError(f"einsum: term {term!r} has {len(term)} indices for an operand of rank {_rank(op)}")
        if len(set(term)) != len(term):
            raise NotImplementedError(f"einsum: repeated indices within one operand ({term!r}) are not supported")
        expanded.append(term)
    if _ == "":
        counts = {c: "".join(expanded).count(c) for c in "".join(expanded)}
        output = ellipsis + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in ellipsis))
    else:
        output = output.replace("...", ellipsis)
    return expanded, output


def _einsum_pair(a, ta, b, tb, keep):
    """Contract two operands; indices in `keep` (needed later) survive."""
    for side in ("a", "b"):  # sum out indices that only one operand has and nobody needs
        x, t, other = (a, ta, tb) if side == "a" else (b, tb, ta)
        gone = [i for i, c in enumerate(t) if c not in other and c not in keep]
        if gone:
            x = ops.sum(x, axis=tuple(gone))
            t = "".join(c for i, c in enumerate(t) if i not in gone)
        if side == "a":
            a, ta = x, t
        else:
            b, tb = x, t
    batch = [c for c in ta if c in tb and c in keep]
    contract = [c for c in ta if c in tb and c not in keep]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]
    size = {c: d for t, x in ((ta, a), (tb, b)) for c, d in zip(t, x.shape)}

    def arrange(x, t, order):
        perm = tuple(t.index(c) for c in order)
        return ops.transpose(x, perm) if perm != tuple(range(len(t))) else x

    def product(chars):
        return int(np.prod([size[c] for c in chars])) if chars else 1

    unknown = [c for c in left + right + contract if size[c] is None]
    if unknown and not batch and len(unknown) == 1 and unknown[0] not in contract:
        # The batch dimension (None) among one operand's free indices: a graph cannot fold it into
        # other dimensions, so that operand keeps its free axes and matmul broadcasts over them.
        if unknown[0] in right:
            return _einsum_pair(b, tb, a, ta, keep)
        a_moved = arrange(a, ta, left + contract)
        a_batched = ops.reshape(a_moved, _dims([size[c] for c in left] + [product(contract)]))
        b_matrix = ops.reshape(arrange(b, tb, contract + right), (product(contract), product(right)))
        result = ops.reshape(ops.matmul(a_batched, b_matrix), _dims([size[c] for c in left + right]))
        return result, "".join(left + right)
    if unknown and (len(left) > 1 or len(right) > 1):
        raise ValueError("einsum: the batch dimension (None) must be a shared batch index or the only free index")
    a_moved = arrange(a, ta, batch + left + contract)
    b_moved = arrange(b, tb, batch + contract + right)
    batch_shape = [size[c] for c in batch]
    left_size = size[left[0]] if len(left) == 1 else product(left)
    right_size = size[right[0]] if len(right) == 1 else product(right)
    a_matrix = ops.reshape(a_moved, _dims(batch_shape + [left_size, product(contract)]))
    b_matrix = ops.reshape(b_moved, _dims(batch_shape + [product(contract), right_size]))
    result = ops.matmul(a_matrix, b_matrix)
    result = ops.reshape(result, _dims(batch_shape + [size[c] for c in left + right]))
    return result, "".join(batch + left + right)


def einsum(subscripts, *operands, **kwargs):
    """Einstein summation over operands without repeated indices inside one operand
    (contractions run as batched matmuls)."""
    operands = [_tensor(op) for op in operands]
    terms, output = _einsum_parse(subscripts, operands)
    dtype = result_type(*(op.dtype for op in operands))
    operands = [ops.cast(op, dtype) if op.dtype != dtype else op for op in operands]
    result, term = operands[0], terms[0]
    for i in range(1, len(operands)):
        keep = set(output) | set("".join(terms[i + 1:]))
        result, term = _einsum_pair(result, term, operands[i], terms[i], keep)
    gone = tuple(i for i, c in enumerate(term) if c not in output)
    if gone:
        result = ops.sum(result, axis=gone)
        term = "".join(c for i, c in enumerate(term) if i not in gone)
    perm = tuple(term.index(c) for c in output)
    return ops.transpose(result, perm) if perm != tuple(range(len(term))) else result
