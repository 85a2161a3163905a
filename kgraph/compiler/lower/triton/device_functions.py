"""@triton.jit helpers that generated kernels call (a real file: Triton's @jit reads source).

They use only `tl.` operations that compile for NVIDIA GPUs and run in the CPU
interpreter (TRITON_INTERPRET=1). Near zero, expm1, log1p and tanh use series: the GPU's
exp and log are approximate (about 2 ulp of their result), which `exp(x) - 1` would turn
into a large relative error for small x.
"""

import triton
import triton.language as tl

INF = tl.constexpr(float("inf"))  # (no NaN global: Triton compares globals by value, and NaN != NaN)


@triton.jit
def expm1_(x):
    # Taylor series to x^13 for |x| < 0.5 (relative error below 1e-14), exp(x) - 1 beyond.
    p = x * (1.0 / 13.0) + 1.0
    p = x * (1.0 / 12.0) * p + 1.0
    p = x * (1.0 / 11.0) * p + 1.0
    p = x * (1.0 / 10.0) * p + 1.0
    p = x * (1.0 / 9.0) * p + 1.0
    p = x * (1.0 / 8.0) * p + 1.0
    p = x * (1.0 / 7.0) * p + 1.0
    p = x * (1.0 / 6.0) * p + 1.0
    p = x * (1.0 / 5.0) * p + 1.0
    p = x * (1.0 / 4.0) * p + 1.0
    p = x * (1.0 / 3.0) * p + 1.0
    p = x * 0.5 * p + 1.0
    small = x * p
    return tl.where(tl.abs(x) < 0.5, small, tl.exp(x) - 1.0)


@triton.jit
def log1p_(x):
    # log1p(x) = 2 atanh(s), s = x / (2 + x): an odd series in s (|s| <= 1/3 for |x| < 0.5).
    s = x / (x + 2.0)
    s2 = s * s
    p = s2 * (1.0 / 21.0) + (1.0 / 19.0)
    p = s2 * p + (1.0 / 17.0)
    p = s2 * p + (1.0 / 15.0)
    p = s2 * p + (1.0 / 13.0)
    p = s2 * p + (1.0 / 11.0)
    p = s2 * p + (1.0 / 9.0)
    p = s2 * p + (1.0 / 7.0)
    p = s2 * p + (1.0 / 5.0)
    p = s2 * p + (1.0 / 3.0)
    p = s2 * p + 1.0
    small = 2.0 * s * p
    return tl.where(tl.abs(x) < 0.5, small, tl.log(x + 1.0))


@triton.jit
def tanh_(x):
    e = expm1_(-2.0 * tl.abs(x))
    t = -e / (e + 2.0)
    return tl.where(x < 0, -t, t)


@triton.jit
def pow_float(a, b):
    r = tl.exp(b * tl.log(tl.abs(a)))
    whole = tl.floor(b) == b
    odd = whole & (tl.floor(b * 0.5) * 2.0 != b)
    r = tl.where(a < 0, tl.where(whole, tl.where(odd, -r, r), INF - INF), r)
    return tl.where(b == 0, 1.0, r)


@triton.jit
def pow_int(a, b):
    result = a * 0 + 1
    base = a
    e = b
    for _ in tl.static_range(32):
        result = tl.where((e & 1) == 1, result * base, result)
        base = base * base
        e = e >> 1
    return result


@triton.jit
def floordiv_int(a, b):
    # Python's (numpy's) floor division, whatever the sign convention of `//` underneath.
    q = a // b
    r = a - q * b
    return tl.where((r != 0) & ((r < 0) != (b < 0)), q - 1, q)


@triton.jit
def mod_int(a, b):
    r = a % b
    return tl.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)


@triton.jit
def mod_float(a, b):
    r = a % b  # fmod
    return tl.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)


@triton.jit
def floordiv_float(a, b):
    # numpy's npy_divmod: floor((a - fmod(a, b)) / b), corrected to the nearest integer.
    m = a % b
    d = (a - m) / b
    d = tl.where((m != 0) & ((b < 0) != (m < 0)), d - 1.0, d)
    f = tl.floor(d)
    return tl.where(d - f > 0.5, f + 1.0, f)


@triton.jit
def copy_kernel(src, dst, total, BLOCK: tl.constexpr):
    """dst[:total] = src[:total] (state updates that were not computed in place)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    tl.store(dst + offs, tl.load(src + offs, mask=mask), mask=mask)


@triton.jit
def fill_kernel(dst, total, value, BLOCK: tl.constexpr):
    """dst[:total] = value (the zeros a scatter-add accumulates into)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst + offs, tl.full([BLOCK], value, dst.dtype.element_ty), mask=offs < total)


@triton.jit
def atan_(x):
    # Cephes' single-precision arctangent: reduce |x| to [0, tan(pi/8)] with
    # atan(a) = pi/2 + atan(-1/a) (a > tan(3pi/8)) or pi/4 + atan((a-1)/(a+1)), then an odd
    # polynomial (relative error about 1e-7).
    a = tl.abs(x)
    big = a > 2.414213562373095
    mid = a > 0.4142135623730950
    t = tl.where(big, -1.0 / a, tl.where(mid, (a - 1.0) / (a + 1.0), a))
    offset = tl.where(big, 1.5707963267948966, tl.where(mid, 0.7853981633974483, 0.0))
    z = t * t
    p = (((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z - 3.33329491539e-1) * z * t + t
    r = offset + p
    return tl.where(x < 0, -r, r)
