"""matmul: batched matrix product with numpy broadcasting of the leading dimensions.

The simplification pass folds 2-D transposes of its operands into the transpose_a /
transpose_b attributes, which backends pass to BLAS instead of copying.
"""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.ops.kernels import numba_entry, numba_kernel
from kgraph.ops.registry import OpDef, bind, register
from kgraph.ops.shapes import broadcast_shapes

MATMUL = "matmul"


def _operand_shape(shape, transposed):
    return shape[:-2] + (shape[-1], shape[-2]) if transposed else shape


def _matmul_infer(attrs, a, b):
    a_shape = _operand_shape(a.shape, attrs.get("transpose_a", False))
    b_shape = _operand_shape(b.shape, attrs.get("transpose_b", False))
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise ValueError(f"matmul: operands must have rank >= 2, got {a.shape} and {b.shape}")
    k_a, k_b = a_shape[-1], b_shape[-2]
    if k_a is not None and k_b is not None and k_a != k_b:
        raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape} "
                         f"({k_a} != {k_b})")
    batch = broadcast_shapes(a_shape[:-2], b_shape[:-2], op="matmul")
    return batch + (a_shape[-2], b_shape[-1]), ops.result_type(a.dtype, b.dtype)


def _matmul_reference(attrs, a, b):
    if attrs.get("transpose_a"):
        a = np.swapaxes(a, -1, -2)
    if attrs.get("transpose_b"):
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


def _matmul_grad(ctx):
    from kgraph.ops.elementwise import unbroadcast

    a, b = ctx.inputs
    g = ctx.upstream
    ta, tb = ctx.attrs.get("transpose_a", False), ctx.attrs.get("transpose_b", False)
    # With A' = op(A), B' = op(B): dA' = g B'^T, dB' = A'^T g.
    grad_a = bind("matmul", [g, b], transpose_a=False, transpose_b=not tb)
    grad_b = bind("matmul", [a, g], transpose_a=not ta, transpose_b=False)
    if ta:
        grad_a = ops.swapaxes(grad_a, -1, -2)
    if tb:
        grad_b = ops.swapaxes(grad_b, -1, -2)
    return [unbroadcast(grad_a, a.shape), unbroadcast(grad_b, b.shape)]


def _samples(rng):
    def m(*s):
        return rng.standard_normal(s).astype(np.float32)
    return [([m(3, 4), m(4, 5)], {}), ([m(2, 3, 4), m(4, 2)], {}), ([m(2, 3, 4), m(2, 4, 5)], {}),
            ([m(4, 3), m(5, 4)], {"transpose_a": True, "transpose_b": True})]


register(OpDef("matmul", MATMUL, _matmul_infer, _matmul_reference, grad=_matmul_grad,
               samples=_samples))


def matmul(x1, x2):
    """numpy.matmul semantics, including 1-D operands."""
    a, b = ops.convert_to_tensor(x1), ops.convert_to_tensor(x2)
    squeeze_a, squeeze_b = len(a.shape) == 1, len(b.shape) == 1
    if squeeze_a:
        a = ops.expand_dims(a, 0)
    if squeeze_b:
        b = ops.expand_dims(b, -1)
    dtype = ops.result_type(a.dtype, b.dtype)
    a = a if a.dtype == dtype else ops.cast(a, dtype)
    b = b if b.dtype == dtype else ops.cast(b, dtype)
    result = bind("matmul", [a, b], transpose_a=False, transpose_b=False)
    if squeeze_a:
        result = ops.squeeze(result, -2)
    if squeeze_b:
        result = ops.squeeze(result, -1)
    return result


def dot(x1, x2):
    return matmul(x1, x2)


# -- numba kernel (compiled once by the backend, see kgraph.ops.kernels) ---------------------------------
# A 2-D GEMM over the threads of one numba parallel region, each block one single-threaded
# BLAS call: one thread pool (numba's), never BLAS's own threads, which spin after each call
# against the next kernel's threads and other work (measured here: 20x slower under load).
# The product is split along the larger of m and n: each call packs the operand whose rows
# (or columns) it owns, plus all of the other one, so splitting the larger side packs the
# least twice. Products under two blocks of MIN_WORK_PER_THREAD run as one call: below that
# a second thread saved no time in a training step (docs/design.md, "GEMM threading").
MIN_WORK_PER_THREAD = 1 << 23  # multiply-adds per thread below which a split costs more than it saves

gemm = blas_get_threads = blas_set_threads = None  # provided by the backend when it loads the kernels
prange = range


def denormals_off():
    return 0


def denormals_restore(state):
    pass


@numba_kernel(parallel=True)
def _gemm_blocks(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, itemsize, nt):
    """nt threads, each one block of rows of C (when m > n) or of its columns."""
    for t in prange(nt):
        fp_state = denormals_off()  # (each worker thread flushes denormals too)
        if n >= m:
            c0 = t * n // nt
            c1 = (t + 1) * n // nt
            offset = c0 * ldb * itemsize if tb else c0 * itemsize
            gemm(ta, tb, m, c1 - c0, k, a, lda, b + offset, ldb, c + c0 * itemsize, ldc, 0.0, itemsize)
        else:
            r0 = t * m // nt
            r1 = (t + 1) * m // nt
            offset = r0 * itemsize if ta else r0 * lda * itemsize
            gemm(ta, tb, r1 - r0, n, k, a + offset, lda, b, ldb, c + r0 * ldc * itemsize, ldc, 0.0, itemsize)
        denormals_restore(fp_state)


@numba_kernel()
def _gemm_threads(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, itemsize, threads):
    nt = max(1, min(threads, max(m, n), m * n * k // MIN_WORK_PER_THREAD))
    saved = blas_get_threads()
    blas_set_threads(1)  # (also for one call: BLAS would start its own threads above ~0.3M multiply-adds)
    if nt == 1:
        gemm(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, 0.0, itemsize)
    else:
        _gemm_blocks(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, itemsize, nt)
    blas_set_threads(saved)


@numba_entry(13)
def gemm_threads(itemsize, ta, tb, m, n, k, a, lda, b, ldb, c, ldc, threads):
    """C (m x n) = op(A) @ op(B), row-major on addresses (see blas.gemm), over up to `threads` threads."""
    _gemm_threads(ta != 0, tb != 0, m, n, k, a, lda, b, ldb, c, ldc, itemsize, threads)
