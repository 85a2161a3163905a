"""keras.ops special functions, integer and bitwise ops, NaN-aware quantiles, correlation,
histograms and complex-number helpers, as compositions of registered ops.

- `erfinv`: Giles's single-precision approximation refined by two Newton steps on `erf`;
  the gradient is 1 / erf'(y), read off the last step (its start is a stopped gradient).
- `i0`: Cephes's Chebyshev expansions (|x| <= 8 and beyond), evaluated by Clenshaw's
  recurrence; the gradient is the expansion's own.
- `nextafter`: x +- one unit in the last place, the binade found by log2 and corrected by
  exact powers of two. Compiled steps flush denormals to zero (kgraph's fpenv), so there a
  step from 0 gives 0; eagerly it gives the smallest denormal, as numpy does.
- Integer ops (`gcd`, `lcm`, `bitwise_*`) are exact in the integer dtype and not
  differentiable. `gcd` is Euclid's algorithm unrolled for the dtype's worst case (the
  Fibonacci bound: 46 steps for int32); `bitwise_and` sums the products of the operands'
  bits (floor division by 2 gives two's-complement bits); `or`, `xor` and `not` follow from
  it by wrapping integer arithmetic (x | y = x + y - (x & y), ~x = -x - 1). Each is one
  fused loop when compiled, and exports to any ONNX opset (BitwiseAnd needs opset 18).
- `histogram` (int bins) has a static shape and traces; `bincount`'s length depends on the
  values: eager only, or traced with `minlength` as the static number of bins.
- kgraph graphs hold real dtypes only: `polar` and `view_as_complex` (complex results) and
  `view_as_real` (complex input) run eagerly on numpy complex arrays; traced, they raise.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from kgraph import ops
from kgraph.ir import SymbolicTensor
from kgraph.ops.elementwise import is_float, result_type
from kgraph.ops.numpy_extra import _dims, _floating, _floating_pair, _is_eager, _tensor, isnan, sort
from kgraph.ops.shapes import normalize_axes

__all__ = [
    "erfinv", "i0", "nextafter", "gcd", "lcm", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
    "bitwise_invert", "nanquantile", "nanpercentile", "nanmedian", "corrcoef", "correlate", "histogram",
    "bincount", "polar", "view_as_real", "view_as_complex",
]


def _horner(x, coefficients):
    """sum c_i x^(n-i) (coefficients highest power first)."""
    result = None
    for c in coefficients:
        result = ops.full_like(x, c) if result is None else ops.add(ops.multiply(result, x), c)
    return result


# -- special functions ----------------------------------------------------------------------------
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                   -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def erfinv(x):
    """Inverse error function on (-1, 1): +-inf at +-1, NaN outside."""
    x = _floating(x)
    magnitude = ops.abs(x)
    inside = ops.less(magnitude, 1.0)
    safe = ops.where(inside, x, ops.zeros_like(x))
    w = ops.negative(ops.log(ops.multiply(ops.subtract(1.0, safe), ops.add(1.0, safe))))
    central = _horner(ops.subtract(w, 2.5), _ERFINV_CENTRAL)
    tail = _horner(ops.subtract(ops.sqrt(ops.maximum(w, 5.0)), 3.0), _ERFINV_TAIL)
    y = ops.multiply(ops.where(ops.less(w, 5.0), central, tail), safe)
    for step in range(2):  # Newton on erf(y) = x; the last step carries the gradient
        y0 = ops.stop_gradient(y) if step == 1 else y
        slope = ops.multiply(2.0 / math.sqrt(math.pi), ops.exp(ops.negative(ops.square(y0))))
        y = ops.subtract(y0, ops.divide(ops.subtract(ops.erf(y0), safe), slope))
    edge = ops.where(ops.equal(magnitude, 1.0), ops.multiply(ops.sign(x), np.inf), ops.full_like(x, np.nan))
    return ops.where(inside, y, edge)


# Cephes i0 Chebyshev coefficients: exp(-x) i0(x) on [0, 8] in (x / 2 - 2), and
# exp(-x) sqrt(x) i0(x) beyond 8 in (32 / x - 2).
_I0_A = (-4.41534164647933937950e-18, 3.33079451882223809783e-17, -2.43127984654795469359e-16,
         1.71539128555513303061e-15, -1.16853328779934516808e-14, 7.67618549860493561688e-14,
         -4.85644678311192946090e-13, 2.95505266312963983461e-12, -1.72682629144155570723e-11,
         9.67580903537323691224e-11, -5.18979560163526290666e-10, 2.65982372468238665035e-9,
         -1.30002500998624804212e-8, 6.04699502254191894932e-8, -2.67079385394061173391e-7,
         1.11738753912010371815e-6, -4.41673835845875056359e-6, 1.64484480707288970893e-5,
         -5.75419501008210370398e-5, 1.88502885095841655729e-4, -5.76375574538582365885e-4,
         1.63947561694133579842e-3, -4.32430999505057594430e-3, 1.05464603945949983183e-2,
         -2.37374148058994688156e-2, 4.93052842396707084878e-2, -9.49010970480476444210e-2,
         1.71620901522208775349e-1, -3.04682672343198398683e-1, 6.76795274409476084995e-1)
_I0_B = (-7.23318048787475395456e-18, -4.83050448594418207126e-18, 4.46562142029675999901e-17,
         3.46122286769746109310e-17, -2.82762398051658348494e-16, -3.42548561967721913462e-16,
         1.77256013305652638360e-15, 3.81168066935262242075e-15, -9.55484669882830764870e-15,
         -4.15056934728722208663e-14, 1.54008621752140982691e-14, 3.85277838274214270114e-13,
         7.18012445138366623367e-13, -1.79417853150680611778e-12, -1.32158118404477131188e-11,
         -3.14991652796324136454e-11, 1.18891471078464383424e-11, 4.94060238822496958910e-10,
         3.39623202570838634515e-9, 2.26666899049817806459e-8, 2.04891858946906374183e-7,
         2.89137052083475648297e-6, 6.88975834691682398426e-5, 3.36911647825569408990e-3,
         8.04490411014108831608e-1)


def _chebyshev(t, coefficients):
    """Cephes's chbevl: Clenshaw's recurrence for sum' c_i T_i(t / 2)."""
    b0, b1, b2 = ops.full_like(t, coefficients[0]), ops.zeros_like(t), None
    for c in coefficients[1:]:
        b2, b1 = b1, b0
        b0 = ops.add(ops.subtract(ops.multiply(t, b1), b2), c)
    return ops.multiply(ops.subtract(b0, b2), 0.5)


def i0(x):
    """Modified Bessel function of the first kind, order 0 (float64 for int64 and float64)."""
    x = _tensor(x)
    x = ops.cast(x, "float64") if str(x.dtype) == "int64" else _floating(x)
    a = ops.abs(x)
    near = _chebyshev(ops.subtract(ops.multiply(ops.minimum(a, 8.0), 0.5), 2.0), _I0_A)
    far_a = ops.maximum(a, 8.0)
    far = ops.divide(_chebyshev(ops.subtract(ops.divide(32.0, far_a), 2.0), _I0_B), ops.sqrt(far_a))
    return ops.multiply(ops.exp(a), ops.where(ops.less_equal(a, 8.0), near, far))


def nextafter(x1, x2):
    """The next float after x1 in the direction of x2 (x2 where they are equal)."""
    x1, x2 = _floating_pair(x1, x2)
    info = np.finfo(x1.dtype)
    a = ops.abs(x1)
    finite = ops.logical_and(ops.greater(a, 0), ops.less(a, np.inf))
    safe = ops.where(finite, a, ops.ones_like(a))
    exponent = ops.floor(ops.log2(safe))  # may be off by one near powers of two: corrected
    exponent = ops.where(ops.greater(ops.power(2.0, exponent), safe), ops.subtract(exponent, 1.0), exponent)
    exponent = ops.where(ops.less_equal(ops.power(2.0, ops.add(exponent, 1.0)), safe),
                         ops.add(exponent, 1.0), exponent)
    exponent = ops.maximum(exponent, float(info.minexp))
    ulp = ops.power(2.0, ops.subtract(exponent, float(info.nmant)))
    # Toward zero from a power of two (above the denormals) the step is half an ulp.
    power_of_two = ops.logical_and(ops.equal(safe, ops.power(2.0, exponent)),
                                   ops.greater(exponent, float(info.minexp)))
    up = ops.greater(x2, x1)
    away = ops.equal(up, ops.greater(x1, 0))
    step = ops.where(ops.logical_or(away, ops.logical_not(power_of_two)), ulp, ops.multiply(ulp, 0.5))
    moved = ops.where(up, ops.add(x1, step), ops.subtract(x1, step))
    # 0-d arrays of the dtype: a Python or numpy float scalar would be taken as float32
    tiny, minus_tiny = (np.array(v, x1.dtype) for v in (info.smallest_subnormal, -info.smallest_subnormal))
    result = ops.where(ops.equal(x1, 0), ops.where(up, tiny, minus_tiny), moved)
    result = ops.where(ops.equal(a, np.inf), ops.multiply(ops.sign(x1), float(info.max)), result)
    result = ops.where(ops.equal(x1, x2), x2, result)
    return ops.where(ops.logical_or(isnan(x1), isnan(x2)), ops.full_like(result, np.nan), result)


# -- integer and bitwise ops ----------------------------------------------------------------------
def _integers(x1, x2, name, allow_bool=False):
    x1, x2 = _tensor(x1), _tensor(x2)
    dtype = result_type(x1.dtype, x2.dtype)
    if is_float(dtype) or (dtype == "bool" and not allow_bool):
        kinds = "integer or bool" if allow_bool else "integer"
        raise TypeError(f"{name}: {kinds} inputs are required, got {x1.dtype} and {x2.dtype}")
    return ops.cast(x1, dtype), ops.cast(x2, dtype), dtype


def _euclid_steps(dtype):
    """Remainder steps Euclid needs for any pair of the dtype (consecutive Fibonacci numbers
    are the worst case)."""
    top, (a, b), steps = np.iinfo(dtype).max, (1, 1), 0
    while b <= top:
        a, b, steps = b, a + b, steps + 1
    return steps + 1


def gcd(x1, x2):
    """Greatest common divisor of |x1| and |x2| (gcd(0, 0) = 0)."""
    x1, x2, dtype = _integers(x1, x2, "gcd")
    a, b = ops.abs(x1), ops.abs(x2)
    a, b = ops.maximum(a, b), ops.minimum(a, b)
    one = ops.ones_like(b)
    for _ in range(_euclid_steps(dtype)):  # once b is 0 it stays 0 (a mod 1) and a is kept
        a, b = ops.where(ops.equal(b, 0), a, b), ops.mod(a, ops.maximum(b, one))
    return a


def lcm(x1, x2):
    """Least common multiple |x1 x2| / gcd (0 when either is 0)."""
    x1, x2, _ = _integers(x1, x2, "lcm")
    divisor = gcd(x1, x2)
    zero = ops.equal(divisor, 0)
    quotient = ops.floor_divide(ops.abs(x1), ops.where(zero, ops.ones_like(divisor), divisor))
    return ops.where(zero, ops.zeros_like(divisor), ops.multiply(quotient, ops.abs(x2)))


def _bit_weights(dtype):
    """The value of each bit of the dtype (the top bit of a signed type is negative)."""
    bits = np.iinfo(dtype).bits
    weights = [np.array(1 << k, dtype) for k in range(bits - 1)]
    top = -(1 << (bits - 1)) if np.iinfo(dtype).min < 0 else 1 << (bits - 1)
    return weights + [np.array(top).astype(dtype)]


def bitwise_and(x, y):
    """Bitwise AND of integers (logical AND of bools)."""
    x, y, dtype = _integers(x, y, "bitwise_and", allow_bool=True)
    if dtype == "bool":
        return ops.logical_and(x, y)
    result = ops.zeros_like(x)
    for weight in _bit_weights(dtype):  # x, y >> one bit per step (floor division)
        both = ops.multiply(ops.mod(x, 2), ops.mod(y, 2))
        result = ops.add(result, ops.multiply(both, weight))
        x, y = ops.floor_divide(x, 2), ops.floor_divide(y, 2)
    return result


def bitwise_or(x, y):
    """Bitwise OR: x + y - (x & y) in wrapping integer arithmetic."""
    x, y, dtype = _integers(x, y, "bitwise_or", allow_bool=True)
    if dtype == "bool":
        return ops.logical_or(x, y)
    return ops.subtract(ops.add(x, y), bitwise_and(x, y))


def bitwise_xor(x, y):
    """Bitwise XOR: x + y - 2 (x & y)."""
    x, y, dtype = _integers(x, y, "bitwise_xor", allow_bool=True)
    if dtype == "bool":
        return ops.logical_xor(x, y)
    return ops.subtract(ops.add(x, y), ops.multiply(bitwise_and(x, y), 2))


def bitwise_invert(x):
    """Bitwise NOT: -x - 1 for integers (all bits flipped), logical NOT for bools."""
    x = _tensor(x)
    if x.dtype == "bool":
        return ops.logical_not(x)
    if is_float(x.dtype):
        raise TypeError(f"bitwise_invert: integer or bool inputs are required, got {x.dtype}")
    return ops.subtract(ops.negative(x), ops.ones_like(x))


bitwise_not = bitwise_invert


# -- NaN-aware quantiles ----------------------------------------------------------------------------
_METHODS = ("linear", "lower", "higher", "midpoint", "nearest")


def _along_last(x, axis, name):
    """x with the reduced axes moved last and merged, the reduced axes and the kept shape."""
    rank = len(x.shape)
    axes = normalize_axes(axis, rank, name)
    kept = tuple(i for i in range(rank) if i not in axes)
    moved = ops.transpose(x, kept + axes) if kept + axes != tuple(range(rank)) else x
    lead = tuple(moved.shape[:len(kept)])
    if builtins.any(x.shape[i] is None for i in axes):
        raise ValueError(f"{name}: the reduced axes must have static sizes, not the batch dimension (None)")
    flat = ops.reshape(moved, _dims(lead + (-1,))) if len(axes) != 1 else moved
    return flat, axes


def nanquantile(x, q, axis=None, method="linear", keepdims=False):
    """The q-th quantiles (q in [0, 1]) of the non-NaN elements along `axis` (NaN where there
    are none); numpy's methods linear, lower, higher, midpoint and nearest."""
    x = _tensor(x)
    x = ops.cast(x, "float32") if x.dtype == "bool" else _floating(x)
    if method not in _METHODS:
        raise ValueError(f"nanquantile: method must be one of {_METHODS}, got {method!r}")
    if isinstance(q, SymbolicTensor):
        raise ValueError("nanquantile: q must be a constant (a number or an array), not a symbolic tensor")
    q_values = np.asarray(ops.convert_to_numpy(q), np.float64)
    flat, axes = _along_last(x, axis, "nanquantile")
    missing = isnan(flat)
    # NaNs sort last as +inf; traced, sort's one-hot permutation would turn an inf into NaN
    # (0 * inf), so they become the largest finite value there.
    fill = np.inf if _is_eager(flat) else float(np.finfo(flat.dtype).max)
    values = sort(ops.where(missing, ops.full_like(flat, fill), flat), axis=-1)
    count = ops.sum(ops.cast(ops.logical_not(missing), x.dtype), axis=-1, keepdims=True)
    last = ops.maximum(ops.subtract(count, 1.0), 0.0)

    def pick(position):  # a where-selection: a one-hot product would turn the infs into NaN
        chosen = ops.equal(np.arange(values.shape[-1], dtype=np.int32), ops.cast(position, "int32"))
        return ops.sum(ops.where(chosen, values, ops.zeros_like(values)), axis=-1, keepdims=True)

    results = []
    for qv in q_values.reshape(-1):
        position = ops.multiply(last, float(qv))
        lo, hi = ops.floor(position), ops.ceil(position)
        if method == "lower":
            value = pick(lo)
        elif method == "higher":
            value = pick(hi)
        elif method == "nearest":
            value = pick(ops.round(position))
        else:
            lo_v, hi_v = pick(lo), pick(hi)
            fraction = ops.subtract(position, lo) if method == "linear" else ops.full_like(position, 0.5)
            value = ops.where(ops.equal(lo, hi), lo_v,
                              ops.add(lo_v, ops.multiply(ops.subtract(hi_v, lo_v), fraction)))
        value = ops.where(ops.equal(count, 0), ops.full_like(value, np.nan), value)
        if keepdims:
            value = ops.reshape(value, _dims([1 if i in axes else d for i, d in enumerate(x.shape)]))
        else:
            value = ops.squeeze(value, -1)
        results.append(value)
    if q_values.ndim == 0:
        return results[0]
    return ops.reshape(ops.stack(results, axis=0), _dims(q_values.shape + tuple(results[0].shape)))


def nanpercentile(x, q, axis=None, method="linear", keepdims=False):
    """nanquantile with q in percent."""
    if isinstance(q, SymbolicTensor):
        raise ValueError("nanpercentile: q must be a constant (a number or an array), not a symbolic tensor")
    q = np.asarray(ops.convert_to_numpy(q), np.float64) / 100.0
    return nanquantile(x, q, axis=axis, method=method, keepdims=keepdims)


def nanmedian(x, axis=None, keepdims=False):
    """Median of the non-NaN elements along `axis`."""
    return nanquantile(x, 0.5, axis=axis, keepdims=keepdims)


# -- correlation and counting ----------------------------------------------------------------------
def corrcoef(x):
    """Pearson correlation coefficients of the rows of x (variables in rows), clipped to [-1, 1]."""
    x = _tensor(x)
    if str(x.dtype) == "int64":
        x = ops.cast(x, "float64")
    x = _floating(x)
    if len(x.shape) not in (1, 2):
        raise ValueError(f"corrcoef: x must be 1-D or 2-D, got shape {tuple(x.shape)}")
    rows = x if len(x.shape) == 2 else ops.expand_dims(x, 0)
    centered = ops.subtract(rows, ops.mean(rows, axis=1, keepdims=True))
    covariance = ops.matmul(centered, ops.transpose(centered))
    spread = ops.sqrt(ops.sum(ops.square(centered), axis=1))
    result = ops.clip(ops.divide(covariance, ops.multiply(ops.expand_dims(spread, 1), ops.expand_dims(spread, 0))),
                      -1.0, 1.0)
    return result if len(x.shape) == 2 else ops.reshape(result, ())


def correlate(x1, x2, mode="valid"):
    """Cross-correlation of two 1-D sequences, c[k] = sum_n x1[n + k] x2[n], numpy's modes
    'valid', 'same' and 'full'."""
    if mode not in ("valid", "same", "full"):
        raise ValueError(f"correlate: mode must be 'valid', 'same' or 'full', got {mode!r}")
    a, v = _tensor(x1), _tensor(x2)
    dtype = result_type(a.dtype, v.dtype)
    dtype = "float64" if dtype in ("int64", "float64") else dtype if is_float(dtype) else "float32"
    a, v = ops.cast(a, dtype), ops.cast(v, dtype)
    if len(a.shape) != 1 or len(v.shape) != 1:
        raise ValueError(f"correlate: x1 and x2 must be 1-D, got shapes {tuple(a.shape)} and {tuple(v.shape)}")
    n, m = a.shape[0], v.shape[0]
    if n is None or m is None or n == 0 or m == 0:
        raise ValueError(f"correlate: x1 and x2 must have static, non-zero lengths, got {n} and {m}")
    # Full output k = -(m - 1) .. n - 1: row k of a zero-padded x1 against x2.
    padded = ops.pad(a, [(m - 1, m - 1)])
    windows = ops.take(padded, (np.arange(n + m - 1)[:, None] + np.arange(m)[None, :]).astype(np.int32), axis=0)
    full = ops.matmul(windows, v)
    small, big = builtins.min(n, m), builtins.max(n, m)
    start, size = {"full": (0, n + m - 1), "same": ((small - 1) // 2, big),
                   "valid": (small - 1, big - small + 1)}[mode]
    return ops.getitem(full, slice(start, start + size))


def histogram(x, bins=10, range=None):  # noqa: A002  (Keras argument name)
    """Counts of the 1-D x in `bins` equal bins over `range` (default x's min to max) and the
    bins + 1 edges, both in x's float dtype; the last bin includes its right edge."""
    if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or bins < 0:
        raise TypeError(f"histogram: bins must be a non-negative int, got {bins!r}")
    if range is not None and (not isinstance(range, tuple) or len(range) != 2 or range[1] < range[0]):
        raise ValueError(f"histogram: range must be a tuple (low, high) with low <= high, got {range!r}")
    x = _floating(x)
    if len(x.shape) != 1:
        raise ValueError(f"histogram: x must be 1-D, got shape {tuple(x.shape)}")
    # numpy's linspace works in the edges' dtype: x's for its min and max, float64 for a range.
    if range is None:
        low, high = ops.min(x), ops.max(x)
    else:
        low, high = np.float64(range[0]), np.float64(range[1])
    same = ops.equal(low, high)  # numpy widens an empty range by 0.5 on each side
    low, high = ops.where(same, ops.subtract(low, 0.5), low), ops.where(same, ops.add(high, 0.5), high)
    step = ops.divide(ops.subtract(high, low), float(builtins.max(bins, 1)))
    inner = ops.add(ops.multiply(np.arange(bins, dtype=low.dtype), step), low)
    edges = ops.cast(ops.concatenate([inner, ops.reshape(high, (1,))], axis=0), x.dtype)
    left, right = ops.getitem(edges, slice(0, bins)), ops.getitem(edges, slice(1, bins + 1))
    column = ops.expand_dims(x, -1)
    inside = ops.logical_and(ops.greater_equal(column, left),
                             ops.logical_or(ops.less(column, right),
                                            ops.logical_and(ops.equal(column, right), np.arange(bins) == bins - 1)))
    counts = ops.sum(ops.cast(inside, x.dtype), axis=0)
    return counts, edges


def bincount(x, weights=None, minlength=0, sparse=False):
    """Occurrences (or summed weights) of each non-negative int in x (1-D, or 2-D row by row).
    Eagerly the length is max(x) + 1 (at least minlength); traced, the graph needs a static
    length: minlength bins, values >= minlength not counted."""
    if sparse:
        raise ValueError("bincount: sparse=True is not supported (kgraph tensors are dense)")
    x = _tensor(x)
    if is_float(x.dtype):
        raise TypeError(f"bincount: x must hold integers, got {x.dtype}")
    if len(x.shape) not in (1, 2):
        raise ValueError(f"bincount: x must be 1-D or 2-D, got shape {tuple(x.shape)}")
    dtype = "int32"
    if weights is not None:
        weights = _tensor(weights)
        dtype = result_type(x.dtype, weights.dtype)
    if _is_eager(x, weights):
        length = builtins.max(int(np.max(x)) + 1 if np.size(x) else 0, int(minlength))
    elif minlength > 0:
        length = int(minlength)
    else:
        raise ValueError("bincount: the number of bins depends on the values of x, so a traced bincount "
                         "needs minlength > 0 (the static number of bins; larger values are not counted)")
    hits = ops.equal(ops.expand_dims(ops.cast(x, "int32"), -1), np.arange(length, dtype=np.int32))
    hits = ops.cast(hits, dtype)
    if weights is not None:
        hits = ops.multiply(hits, ops.expand_dims(ops.cast(weights, dtype), -1))
    return ops.sum(hits, axis=-2)


# -- complex numbers (eager only) --------------------------------------------------------------------
def _eager_only(name, *values):
    if not _is_eager(*values):
        raise ValueError(f"{name}: complex tensors exist only eagerly in kgraph (graphs hold real dtypes); "
                         "carry complex values as (real, imag) pairs of float tensors, as ops.fft does")


def polar(abs_, angle):
    """The complex number abs_ (cos(angle) + i sin(angle)), eagerly (a numpy complex array)."""
    _eager_only("polar", abs_, angle)
    magnitude, angle = (np.asarray(v) for v in _floating_pair(abs_, angle))
    complex_dtype = np.complex128 if magnitude.dtype == np.float64 else np.complex64
    return (magnitude * np.cos(angle) + 1j * (magnitude * np.sin(angle))).astype(complex_dtype)


def view_as_complex(x):
    """x[..., 0] + i x[..., 1] for a real x whose last axis has size 2, eagerly."""
    _eager_only("view_as_complex", x)
    x = np.asarray(_tensor(x))
    if x.ndim < 1 or x.shape[-1] != 2:
        raise ValueError(f"view_as_complex: the last axis must have size 2 (real, imag), got shape {x.shape}")
    return x[..., 0].astype(np.complex64) + 1j * x[..., 1].astype(np.complex64)


def view_as_real(x):
    """The real and imaginary parts of x stacked on a new last axis, eagerly."""
    _eager_only("view_as_real", x)
    x = np.asarray(x)
    parts = np.stack([np.real(x), np.imag(x)], axis=-1)
    return parts.astype(np.float64 if x.dtype == np.complex128 else np.float32)

