"""Fused scaled dot-product attention: `attention` and its backward op `attention_grad`.

attention(q, k, v[, mask]) = softmax(scale * q k^T, over the allowed keys) v, per batch
and head, in the (batch, time, heads, depth) layout the projections produce (no
transposes): q (B, Tq, H, D), k (B, Tk, Hk, D), v (B, Tk, Hk, Dv) -> (B, Tq, H, Dv). Query
head h reads key/value head h // (H // Hk) (grouped-query attention; Hk == H is plain
multi-head attention). `mask` is bool, broadcastable to (B, H, Tq, Tk) (each axis its size
or 1), True where a query may attend to a key; attr `causal` also hides keys j > i. A row
with no allowed key gives the mean of v over every key (attr empty_rows="uniform": the
unfused -1e9-added softmax in float32) or zeros (empty_rows="zero": a softmax masked after);
either way its gradient is zero.

The numba kernel runs one (batch, key/value head) per thread (prange) and takes the query
rows in blocks whose full score rows (block x Tk) stay in cache: S = Q K^T (BLAS), the
softmax in place, O = P V (BLAS). No (Tq x Tk) matrix is stored between the passes: the
backward op recomputes P block by block from q and k, and returns dq, dk, dv packed into
one value (B, Tq*H*D + Tk*Hk*D + Tk*Hk*Dv) (a node has one value; the gradient rule slices
and reshapes it).
"""

from __future__ import annotations

import os
import struct

import numpy as np

from kgraph.ops.kernels import numba_entry, numba_kernel
from kgraph.ops.registry import OpDef, bind, register

KERNEL = "kernel"
EMPTY_ROWS = ("uniform", "zero")


def _sizes(q, k, v):
    B, Tq, H, D = q.shape
    return B, Tq, H, D, k.shape[1], k.shape[2], v.shape[3]


# -- numpy references ------------------------------------------------------------------------
def _allowed(attrs, Tq, Tk, mask, shape):
    """The (B, H, Tq, Tk) bool array of allowed query-key pairs."""
    allowed = np.ones((1, 1, Tq, Tk), bool) if mask is None else np.asarray(mask, bool)
    if attrs.get("causal"):
        allowed = allowed & np.tri(Tq, Tk, 0, dtype=bool)
    return np.broadcast_to(allowed, shape)


def _probabilities(attrs, q, k, mask):
    """P (B, H, Tq, Tk) and the rows with no allowed key (B, H, Tq, 1)."""
    B, Tq, H, D, Tk, Hk, _ = _sizes(q, k, k)
    kk = np.repeat(k, H // Hk, axis=2)
    scores = np.einsum("bihd,bjhd->bhij", q, kk) * attrs["scale"]
    allowed = _allowed(attrs, Tq, Tk, mask, scores.shape)
    empty = ~allowed.any(-1, keepdims=True)
    peak = np.where(empty, 0, np.where(allowed, scores, -np.inf).max(-1, keepdims=True))
    e = np.where(allowed, np.exp(np.where(allowed, scores, 0) - peak), 0)
    p = e / np.where(empty, 1, e.sum(-1, keepdims=True))
    if attrs.get("empty_rows", "uniform") == "uniform":
        p = np.where(empty, 1.0 / Tk, p)
    return p, empty


def _reference(attrs, q, k, v, mask=None):
    p, _ = _probabilities(attrs, q, k, mask)
    vv = np.repeat(v, q.shape[2] // k.shape[2], axis=2)
    return np.einsum("bhij,bjhd->bihd", p, vv)


def _group_sum(x, Hk):
    """(B, T, H, d) -> (B, T, Hk, d): the sum over the query heads sharing a key/value head."""
    B, T, H, d = x.shape
    return x.reshape(B, T, Hk, H // Hk, d).sum(3)


def _grad_reference(attrs, gy, q, k, v, mask=None):
    B, Tq, H, D, Tk, Hk, Dv = _sizes(q, k, v)
    p, empty = _probabilities(attrs, q, k, mask)
    kk, vv = np.repeat(k, H // Hk, axis=2), np.repeat(v, H // Hk, axis=2)
    dp = np.einsum("bihd,bjhd->bhij", gy, vv)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True))
    ds = np.where(empty, 0, ds) * attrs["scale"]
    dq = np.einsum("bhij,bjhd->bihd", ds, kk)
    dk = _group_sum(np.einsum("bhij,bihd->bjhd", ds, q), Hk)
    dv = _group_sum(np.einsum("bhij,bihd->bjhd", p, gy), Hk)
    return np.concatenate([x.reshape(B, -1) for x in (dq, dk, dv)], axis=1)


# -- shape rules -----------------------------------------------------------------------------
def _result_dtype(op, *specs):
    dtypes = {s.dtype for s in specs}
    if len(dtypes) != 1 or not dtypes <= {"float32", "float64"}:
        raise ValueError(f"{op}: query, key and value must share one float dtype (float32 or float64), "
                         f"got {[s.dtype for s in specs]}")
    return dtypes.pop()


def _check(op, attrs, q, k, v, mask):
    if attrs.get("empty_rows", "uniform") not in EMPTY_ROWS:
        raise ValueError(f"{op}: empty_rows must be one of {EMPTY_ROWS}, got {attrs.get('empty_rows')!r}")
    if not isinstance(attrs.get("scale"), float):
        raise ValueError(f"{op}: attr scale must be a float, got {attrs.get('scale')!r}")
    if len(q.shape) != 4 or len(k.shape) != 4 or len(v.shape) != 4:
        raise ValueError(f"{op}: expected query, key and value of shape (batch, time, heads, depth), got "
                         f"{q.shape}, {k.shape} and {v.shape}")
    B, Tq, H, D, Tk, Hk, Dv = _sizes(q, k, v)
    if None in (Tq, H, D, Tk, Hk, Dv):
        raise ValueError(f"{op}: every dimension but the batch must be known, got {q.shape}, {k.shape}, {v.shape}")
    if k.shape[3] != D or v.shape[1] != Tk or v.shape[2] != Hk or H % Hk:
        raise ValueError(f"{op}: key {k.shape} must have the query's depth {D}, value {v.shape} the key's time "
                         f"and heads, and the query's {H} heads must be a multiple of the key's {Hk}")
    for x in (k, v):
        if B is not None and x.shape[0] is not None and x.shape[0] != B:
            raise ValueError(f"{op}: query, key and value must have one batch size, got {q.shape}, {k.shape}, "
                             f"{v.shape}")
    if mask is not None:
        full = (B, H, Tq, Tk)
        if mask.dtype != "bool" or len(mask.shape) != 4 or any(
                m not in (1, n) and not (m is None and n is None) for m, n in zip(mask.shape, full)):
            raise ValueError(f"{op}: the mask must be bool of a shape broadcastable to (batch, heads, Tq, Tk) = "
                             f"{full} (each axis its size or 1), got {mask.dtype} {mask.shape}")
    return B, Tq, H, D, Tk, Hk, Dv


def _infer(attrs, q, k, v, mask=None):
    dtype = _result_dtype("attention", q, k, v)
    B, Tq, H, D, Tk, Hk, Dv = _check("attention", attrs, q, k, v, mask)
    return (B, Tq, H, Dv), dtype


def _grad_infer(attrs, gy, q, k, v, mask=None):
    dtype = _result_dtype("attention_grad", gy, q, k, v)
    B, Tq, H, D, Tk, Hk, Dv = _check("attention_grad", attrs, q, k, v, mask)
    if len(gy.shape) != 4 or tuple(gy.shape[1:]) != (Tq, H, Dv):
        raise ValueError(f"attention_grad: the upstream gradient {gy.shape} must have the output's shape "
                         f"{(B, Tq, H, Dv)}")
    return (B, Tq * H * D + Tk * Hk * (D + Dv)), dtype


# -- gradient rule ---------------------------------------------------------------------------
def _grad(ctx):
    from kgraph import ops

    q, k, v = ctx.inputs[:3]
    _, Tq, H, D = q.shape
    _, Tk, Hk, Dv = v.shape
    flat = bind("attention_grad", [ctx.upstream] + list(ctx.inputs), **ctx.attrs)
    a, b = Tq * H * D, Tq * H * D + Tk * Hk * D
    dq = ops.reshape(flat[:, :a], (-1, Tq, H, D))
    dk = ops.reshape(flat[:, a:b], (-1, Tk, Hk, D))
    dv = ops.reshape(flat[:, b:], (-1, Tk, Hk, Dv))
    return [dq, dk, dv] + [None] * (len(ctx.inputs) - 3)


def attention(query, key, value, mask=None, scale=None, causal=False, empty_rows="uniform"):
    """softmax(scale * q k^T over the allowed keys) v for (batch, time, heads, depth) tensors, as one
    fused op (see the module's docstring); scale defaults to 1 / sqrt(depth)."""
    depth = query.shape[-1]
    scale = 1.0 / float(np.sqrt(depth)) if scale is None else float(scale)
    inputs = [query, key, value] + ([] if mask is None else [mask])
    return bind("attention", inputs, scale=scale, causal=bool(causal), empty_rows=empty_rows)


# -- samples ---------------------------------------------------------------------------------
def _draw(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _forward_samples(rng):
    def qkv(B=2, Tq=3, Tk=4, H=2, Hk=2, D=3, Dv=2):
        return [_draw(rng, B, Tq, H, D), _draw(rng, B, Tk, Hk, D), _draw(rng, B, Tk, Hk, Dv)]

    padding = np.array([[True, True, True, False], [True, False, True, True]]).reshape(2, 1, 1, 4)
    full = rng.random((2, 2, 3, 4)) < 0.6
    full[0, 1, 2] = False  # a row with no allowed key
    attrs = {"scale": 0.7, "causal": False, "empty_rows": "uniform"}
    return [(qkv(), attrs),
            (qkv(), {**attrs, "causal": True}),
            (qkv() + [padding], attrs),
            (qkv(Tq=4) + [padding], {**attrs, "causal": True, "scale": -0.4}),
            (qkv() + [full], attrs),
            (qkv() + [full], {**attrs, "empty_rows": "zero"}),
            (qkv(Tq=5, H=4, Hk=2) + [rng.random((1, 1, 5, 4)) < 0.7], {**attrs, "causal": True}),
            (qkv(H=3, Hk=1), attrs)]


def _grad_samples(rng):
    cases = []
    for inputs, attrs in _forward_samples(rng)[2:6]:
        out = _reference(attrs, *inputs)
        cases.append(([_draw(rng, *out.shape)] + inputs, attrs))
    return cases


# -- numba kernels (generic over sizes and dtype; compiled once by kgraph.compiler.lower.numba.kernels) ----
# The names gemm, blas_get_threads, blas_set_threads, array_at, fetch_add and prange come from the
# backend. Threads claim (batch, key/value head) pairs from a shared counter (fetch_add), so a thread
# that the OS delays takes fewer.
gemm = blas_get_threads = blas_set_threads = array_at = fetch_add = None
prange = range


@numba_kernel()
def _block_rows(Tq, Tk):
    """Query rows per block: a block's score rows (rows x Tk) fill about 512 KiB of float32 (measured
    at Tk 128 and 512; larger blocks let BLAS amortize packing K and V over more rows)."""
    return max(8, min(Tq, 131072 // max(Tk, 1)))


@numba_kernel(fastmath={"reassoc", "contract"})
def _exp_shifted(s, n, peak, work):
    """s[:n] = exp(s[:n] - peak) for scores <= peak. float32 takes a polynomial LLVM vectorizes
    (libm's expf is a call per element; no SVML here): n = round(x / ln 2), r = x - n ln 2 in two
    parts, e^r by its Taylor series to degree 7 (|r| <= ln2 / 2: error about 1e-8 relative), then
    n added to the float's exponent bits (x clamped at -87, where e^x is about 1.6e-38)."""
    if s.itemsize != 4:
        for j in range(n):
            s[j] = np.exp(s[j] - peak)
        return
    f = np.float32
    for j in range(n):
        x = max(s[j] - peak, f(-87.0))
        k = np.floor(x * f(1.4426950408889634) + f(0.5))
        r = x - k * f(0.693145751953125) - k * f(1.428606765330187e-06)
        p = f(1) + r * (f(1) + r * (f(1 / 2) + r * (f(1 / 6) + r * (f(1 / 24) + r * (
            f(1 / 120) + r * (f(1 / 720) + r * f(1 / 5040)))))))
        s[j] = p
        work[j] = k
    bits = s.view(np.int32)
    for j in range(n):
        bits[j] += np.int32(work[j]) << np.int32(23)


@numba_kernel(fastmath={"reassoc", "contract", "nnan", "ninf", "nsz"})
def _row_max(s, n, acc):
    """max(s[:n]) through 16 running maxima (a plain max reduction does not vectorize here)."""
    acc[:] = s[0]
    for j0 in range(0, n - 15, 16):
        for lane in range(16):
            x = s[j0 + lane]
            acc[lane] = x if x > acc[lane] else acc[lane]
    peak = acc[0]
    for lane in range(16):
        peak = max(peak, acc[lane])
    for j in range(n - n % 16, n):
        peak = max(peak, s[j])
    return peak


@numba_kernel(fastmath={"reassoc", "contract"})
def _softmax_row(s, width, mrow, mk, limit, scale, has_mask, work, acc):
    """s[:width] (raw scores) -> probabilities in place over the keys j < limit that the mask row
    allows, zeros elsewhere; returns False for a row with no allowed key (then all zeros)."""
    zero = s[0] - s[0]
    hidden = np.float32(-3e38)  # a masked score until the exp; zeroed after
    per_key = has_mask and mk > 1
    if limit <= 0 or (has_mask and mk == 1 and mrow[0] == 0):
        s[:width] = zero
        return False
    if per_key:
        for j in range(limit):
            s[j] = s[j] * scale if mrow[j] != 0 else hidden
    else:
        for j in range(limit):
            s[j] = s[j] * scale
    peak = _row_max(s, limit, acc)
    if per_key and peak == hidden:
        s[:width] = zero
        return False
    _exp_shifted(s, limit, peak, work)
    if per_key:
        for j in range(limit):
            if mrow[j] == 0:
                s[j] = zero
    total = zero
    for j in range(limit):
        total += s[j]
    inv = (zero + np.float32(1)) / total
    for j in range(limit):
        s[j] *= inv
    for j in range(limit, width):
        s[j] = zero
    return True


@numba_kernel(fastmath={"reassoc", "contract"})
def _softmax_grad_row(p, d, n, scale):
    """d[:n] = scale * p (d - sum(p d)): the scores' gradient from the probabilities' (in place)."""
    total = p[0] - p[0]
    for j in range(n):
        total += p[j] * d[j]
    for j in range(n):
        d[j] = p[j] * (d[j] - total) * scale


@numba_kernel()
def _mask_row(mask, b, h, i):
    mB, mH, mQ, _ = mask.shape
    return mask[b if mB > 1 else 0, h if mH > 1 else 0, i if mQ > 1 else 0]


@numba_kernel(parallel=True)
def attention_forward_kernel(q, k, v, mask, out, scale, causal, uniform, has_mask, threads):
    """out (B, Tq, H, Dv) = softmax(scale q k^T) v, one (batch, key/value head) per thread."""
    B, Tq, H, D = q.shape
    Tk, Hk, Dv = k.shape[1], k.shape[2], v.shape[3]
    r = H // Hk
    rows = _block_rows(Tq, Tk)
    isz = q.itemsize
    pairs = B * Hk
    workers = max(1, min(threads, pairs))
    counter = np.zeros(1, np.int64)
    saved = blas_get_threads()
    blas_set_threads(1)
    for _worker in prange(workers):
        s = np.empty((rows, Tk), q.dtype)
        empty = np.zeros(rows, np.bool_)
        work = np.empty(Tk, q.dtype)
        acc = np.empty(16, q.dtype)
        sc = np.empty(1, q.dtype)
        sc[0] = scale
        while True:
            pair = fetch_add(counter, 1)
            if pair >= pairs:
                break
            b, hk = pair // Hk, pair % Hk
            kaddr = k.ctypes.data + (b * Tk * Hk + hk) * D * isz
            vaddr = v.ctypes.data + (b * Tk * Hk + hk) * Dv * isz
            for h in range(hk * r, hk * r + r):
                for i0 in range(0, Tq, rows):
                    m = min(rows, Tq - i0)
                    width = min(Tk, i0 + m) if causal else Tk
                    gemm(False, True, m, width, D, q.ctypes.data + ((b * Tq + i0) * H + h) * D * isz, H * D,
                         kaddr, Hk * D, s.ctypes.data, Tk, 0.0, isz)
                    for i in range(m):
                        limit = min(width, i0 + i + 1) if causal else width
                        empty[i] = not _softmax_row(s[i], width, _mask_row(mask, b, h, i0 + i), mask.shape[3],
                                                    limit, sc[0], has_mask, work, acc)
                    oaddr = out.ctypes.data + ((b * Tq + i0) * H + h) * Dv * isz
                    gemm(False, False, m, Dv, width, s.ctypes.data, Tk, vaddr, Hk * Dv, oaddr, H * Dv, 0.0, isz)
                    if uniform:
                        for i in range(m):
                            if empty[i]:
                                orow = out[b, i0 + i, h]
                                orow[:] = 0
                                for j in range(Tk):
                                    orow += v[b, j, hk]
                                orow /= Tk
    blas_set_threads(saved)


@numba_kernel(parallel=True)
def attention_backward_kernel(gy, q, k, v, mask, out, scale, causal, uniform, has_mask, threads):
    """out (B, W) = [dq, dk, dv] packed per batch row; P is recomputed block by block."""
    B, Tq, H, D = q.shape
    Tk, Hk, Dv = k.shape[1], k.shape[2], v.shape[3]
    r = H // Hk
    rows = _block_rows(Tq, Tk)
    isz = q.itemsize
    W = out.shape[1]
    dk_at, dv_at = Tq * H * D, Tq * H * D + Tk * Hk * D
    pairs = B * Hk
    workers = max(1, min(threads, pairs))
    counter = np.zeros(1, np.int64)
    saved = blas_get_threads()
    blas_set_threads(1)
    for _worker in prange(workers):
        s = np.empty((rows, Tk), q.dtype)
        dp = np.empty((rows, Tk), q.dtype)
        empty = np.zeros(rows, np.bool_)
        work = np.empty(Tk, q.dtype)
        acc = np.empty(16, q.dtype)
        sc = np.empty(1, q.dtype)
        sc[0] = scale
        zero = sc[0] - sc[0]
        while True:
            pair = fetch_add(counter, 1)
            if pair >= pairs:
                break
            b, hk = pair // Hk, pair % Hk
            kaddr = k.ctypes.data + (b * Tk * Hk + hk) * D * isz
            vaddr = v.ctypes.data + (b * Tk * Hk + hk) * Dv * isz
            for j in range(Tk):  # this head's dk and dv rows accumulate from zero
                out[b, dk_at + (j * Hk + hk) * D:dk_at + (j * Hk + hk + 1) * D] = zero
                out[b, dv_at + (j * Hk + hk) * Dv:dv_at + (j * Hk + hk + 1) * Dv] = zero
            dkaddr = out.ctypes.data + (b * W + dk_at + hk * D) * isz
            dvaddr = out.ctypes.data + (b * W + dv_at + hk * Dv) * isz
            for h in range(hk * r, hk * r + r):
                for i0 in range(0, Tq, rows):
                    m = min(rows, Tq - i0)
                    width = min(Tk, i0 + m) if causal else Tk
                    qaddr = q.ctypes.data + ((b * Tq + i0) * H + h) * D * isz
                    gaddr = gy.ctypes.data + ((b * Tq + i0) * H + h) * Dv * isz
                    gemm(False, True, m, width, D, qaddr, H * D, kaddr, Hk * D, s.ctypes.data, Tk, 0.0, isz)
                    for i in range(m):
                        limit = min(width, i0 + i + 1) if causal else width
                        empty[i] = not _softmax_row(s[i], width, _mask_row(mask, b, h, i0 + i), mask.shape[3],
                                                    limit, sc[0], has_mask, work, acc)
                    # dP = dO V^T; dV += P^T dO
                    gemm(False, True, m, width, Dv, gaddr, H * Dv, vaddr, Hk * Dv, dp.ctypes.data, Tk, 0.0, isz)
                    gemm(True, False, width, Dv, m, s.ctypes.data, Tk, gaddr, H * Dv, dvaddr, Hk * Dv, 1.0, isz)
                    # dS = P (dP - rowsum(P dP)) * scale, in dp
                    for i in range(m):
                        _softmax_grad_row(s[i], dp[i], width, sc[0])
                    # dQ = dS K; dK += dS^T Q
                    gemm(False, False, m, D, width, dp.ctypes.data, Tk, kaddr, Hk * D,
                         out.ctypes.data + (b * W + (i0 * H + h) * D) * isz, H * D, 0.0, isz)
                    gemm(True, False, width, D, m, dp.ctypes.data, Tk, qaddr, H * D, dkaddr, Hk * D, 1.0, isz)
                    if uniform:  # an empty row's output is mean(v): dv gets dO / Tk on every key
                        for i in range(m):
                            if empty[i]:
                                grow = gy[b, i0 + i, h]
                                for j in range(Tk):
                                    at = dv_at + (j * Hk + hk) * Dv
                                    for d in range(Dv):
                                        out[b, at + d] += grow[d] / Tk
    blas_set_threads(saved)


# -- entry points (C-callable: addresses; sizes and flags in an int64 array at `params`) ----------------
# params: B, Tq, Tk, H, Hk, D, Dv, mB, mH, mQ, mK, flags, then the scale's float64 bits.
# flags: causal 1, uniform 2, has_mask 4, threads from 8 up.
@numba_kernel()
def _unpack(params):
    p = array_at(params, (12,), np.int64)
    scale = array_at(params + 96, (1,), np.float64)[0]
    flags = p[11]
    return p, scale, flags % 2 != 0, (flags // 2) % 2 != 0, (flags // 4) % 2 != 0, flags // 8


@numba_entry(8)
def attention_forward(itemsize, qp, kp, vp, mp, op, params, unused):
    p, scale, causal, uniform, has_mask, threads = _unpack(params)
    B, Tq, Tk, H, Hk, D, Dv = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    mask = array_at(mp, (p[7], p[8], p[9], p[10]), np.uint8)
    if itemsize == 4:
        attention_forward_kernel(array_at(qp, (B, Tq, H, D), np.float32), array_at(kp, (B, Tk, Hk, D), np.float32),
                                 array_at(vp, (B, Tk, Hk, Dv), np.float32), mask,
                                 array_at(op, (B, Tq, H, Dv), np.float32), scale, causal, uniform, has_mask, threads)
    else:
        attention_forward_kernel(array_at(qp, (B, Tq, H, D), np.float64), array_at(kp, (B, Tk, Hk, D), np.float64),
                                 array_at(vp, (B, Tk, Hk, Dv), np.float64), mask,
                                 array_at(op, (B, Tq, H, Dv), np.float64), scale, causal, uniform, has_mask, threads)


@numba_entry(8)
def attention_backward(itemsize, gp, qp, kp, vp, mp, op, params):
    p, scale, causal, uniform, has_mask, threads = _unpack(params)
    B, Tq, Tk, H, Hk, D, Dv = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    mask = array_at(mp, (p[7], p[8], p[9], p[10]), np.uint8)
    W = Tq * H * D + Tk * Hk * (D + Dv)
    if itemsize == 4:
        attention_backward_kernel(array_at(gp, (B, Tq, H, Dv), np.float32), array_at(qp, (B, Tq, H, D), np.float32),
                                  array_at(kp, (B, Tk, Hk, D), np.float32), array_at(vp, (B, Tk, Hk, Dv), np.float32),
                                  mask, array_at(op, (B, W), np.float32), scale, causal, uniform, has_mask, threads)
    else:
        attention_backward_kernel(array_at(gp, (B, Tq, H, Dv), np.float64), array_at(qp, (B, Tq, H, D), np.float64),
                                  array_at(kp, (B, Tk, Hk, D), np.float64), array_at(vp, (B, Tk, Hk, Dv), np.float64),
                                  mask, array_at(op, (B, W), np.float64), scale, causal, uniform, has_mask, threads)


# -- templates: the generated group body (sizes literal but the batch n; the mask's dims read at run time) --
def _template(backward):
    def template(node, inputs):
        import numba

        if node.dtype not in ("float32", "float64"):
            raise NotImplementedError(f"numba backend: {node.op} supports float32 and float64, not {node.dtype}")
        first = 1 if backward else 0
        q, k, v = inputs[first:first + 3]
        has_mask = len(inputs) > first + 3
        attrs = node.attrs
        threads = int(numba.config.NUMBA_NUM_THREADS)
        flags = int(bool(attrs.get("causal"))) + 2 * int(attrs.get("empty_rows", "uniform") == "uniform") \
            + 4 * int(has_mask) + 8 * threads
        bits = struct.unpack("<q", struct.pack("<d", float(attrs["scale"])))[0]
        m = f"a{first + 3}"
        mask_dims = ", ".join(f"{m}.shape[{a}]" for a in range(4)) if has_mask else "1, 1, 1, 1"
        sizes = f"n, {q.shape[1]}, {k.shape[1]}, {q.shape[2]}, {k.shape[2]}, {q.shape[3]}, {v.shape[3]}"
        pointers = ", ".join(f"a{i}.ctypes.data" for i in range(first + 3))
        lines = ["n = a0.shape[0]", "if n == 0:", "    return",
                 f"params = np.array([{sizes}, {mask_dims}, {flags}, {bits}], dtype=np.int64)"]
        if has_mask:
            lines.append(f"mask_address = {m}.ctypes.data")
        else:
            lines += ["no_mask = np.ones(1, np.bool_)", "mask_address = no_mask.ctypes.data"]
        itemsize = np.dtype(node.dtype).itemsize
        if backward:
            lines.append(f"attention_backward({itemsize}, {pointers}, mask_address, out.ctypes.data, "
                         "params.ctypes.data)")
        else:
            lines.append(f"attention_forward({itemsize}, {pointers}, mask_address, out.ctypes.data, "
                         "params.ctypes.data, 0)")
        return lines
    template.kernels = "kgraph.ops.attention"
    return template


NUMBA_TEMPLATES = {"attention": _template(False), "attention_grad": _template(True)}

register(OpDef("attention", KERNEL, _infer, _reference, grad=_grad, samples=_forward_samples,
               doc="Fused softmax(scale * q k^T, masked) v for q (B, Tq, H, D), k (B, Tk, Hk, D), v (B, Tk, Hk, Dv) "
                   "and an optional bool mask broadcastable to (B, H, Tq, Tk); attrs scale, causal, empty_rows "
                   "(see kgraph/ops/attention.py)."))
register(OpDef("attention_grad", KERNEL, _grad_infer, _grad_reference, differentiable=False, samples=_grad_samples,
               doc="The gradients of attention for an upstream gradient: dq, dk and dv packed into (B, Tq*H*D + "
                   "Tk*Hk*D + Tk*Hk*Dv), P recomputed block by block."))


# -- when the layers take the fused op ------------------------------------------------------------------
# "auto" fuses where it measured faster (docs/layers.md, bench/attention.py), "always" and "never" force
# one path (tests and benchmarks compare the two). KGRAPH_FUSED_ATTENTION sets the default.
MODE = os.environ.get("KGRAPH_FUSED_ATTENTION", "auto")
# Measured on the 2-core machine (8 heads): the fused training step (forward and backward) ties the
# unfused one at 32 keys and wins from 64 on; inference (forward only) wins from 16 keys on. Below,
# the per-block BLAS calls on tiny matrices cost more than the scores' round trips through memory.
MIN_KEYS_TRAINING = 64
MIN_KEYS_INFERENCE = 16


def use_fused(query, key, dropout=False, scores=False, training=True):
    """Whether attention over `query` (B, Tq, H, D) and `key` (B, Tk, Hk, D) takes the fused op: not
    with attention dropout in training or attention scores returned (the fused op never forms P), only
    for float32/float64 on the CPU (the op has no Triton kernel), and under "auto" only from
    MIN_KEYS_TRAINING keys (MIN_KEYS_INFERENCE when `training` is False)."""
    from kgraph.config import get_device

    if MODE not in ("auto", "always", "never"):
        raise ValueError(f"KGRAPH_FUSED_ATTENTION must be auto, always or never, got {MODE!r}")
    if MODE == "never" or dropout or scores or get_device() != "cpu":
        return False
    if str(query.dtype) not in ("float32", "float64") or str(key.dtype) != str(query.dtype):
        return False
    if None in tuple(query.shape[1:]) + tuple(key.shape[1:]):
        return False
    return MODE == "always" or key.shape[1] >= (MIN_KEYS_TRAINING if training else MIN_KEYS_INFERENCE)
