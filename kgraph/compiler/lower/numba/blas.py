"""BLAS for generated kernels: sgemm/dgemm on raw pointers, and BLAS's thread count.

Heavy kernels (convolution) call GEMM on blocks that fit in L2, one block per thread
inside a numba parallel region; BLAS must then run single-threaded in each caller, so
the kernels set its thread count to 1 around the region and restore it after (BLAS
keeps its threads for the plain matmul groups).

The functions are numba `ExternalFunction`s bound by symbol name, not ctypes pointers:
the symbols are registered with LLVM when this module is imported (the generated
modules import it first), so numba's on-disk cache of a kernel stays valid in a new
process, where the libraries load at other addresses.

`gemm` is the row-major GEMM on addresses the kernels call.
"""

from __future__ import annotations

import ctypes
import os

import llvmlite.binding as llvm
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS numba's np.dot uses)
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

_POINTER = types.intp  # addresses are passed as integers (same ABI as pointers on x86-64 and arm64)


def _blas_library_paths():
    """Shared libraries this process loaded whose name mentions BLAS (scipy's first)."""
    try:
        with open("/proc/self/maps") as handle:
            paths = {line.split()[-1] for line in handle if "blas" in line.lower() and "/" in line}
    except OSError:
        return []
    return sorted(paths, key=lambda p: (("scipy" not in p), ("numpy" in p), p))


@cfunc(types.void(types.int32))
def _no_set_threads(count):  # pragma: no cover - used where the BLAS has no thread API
    pass


@cfunc(types.int32())
def _no_get_threads():  # pragma: no cover
    return 1


def _thread_functions():
    """Addresses of (set_num_threads, get_num_threads) of scipy's BLAS, or no-ops."""
    for path in _blas_library_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_", "scipy_openblas64_", "openblas64_"):
            try:
                setter = getattr(library, prefix + "set_num_threads")
                getter = getattr(library, prefix + "get_num_threads")
            except AttributeError:
                continue
            return (ctypes.cast(setter, ctypes.c_void_p).value, ctypes.cast(getter, ctypes.c_void_p).value)
    return _no_set_threads.address, _no_get_threads.address


def _register():
    set_threads, get_threads = _thread_functions()
    if os.environ.get("KGRAPH_BLAS_THREAD_CONTROL", "1") == "0":
        set_threads, get_threads = _no_set_threads.address, _no_get_threads.address
    llvm.add_symbol("kgraph_sgemm", get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
    llvm.add_symbol("kgraph_dgemm", get_cython_function_address("scipy.linalg.cython_blas", "dgemm"))
    llvm.add_symbol("kgraph_blas_set_threads", set_threads)
    llvm.add_symbol("kgraph_blas_get_threads", get_threads)


_register()

# Fortran BLAS: every argument by address (transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc).
sgemm = types.ExternalFunction("kgraph_sgemm", types.void(*([_POINTER] * 13)))
dgemm = types.ExternalFunction("kgraph_dgemm", types.void(*([_POINTER] * 13)))
blas_set_threads = types.ExternalFunction("kgraph_blas_set_threads", types.void(types.int32))
blas_get_threads = types.ExternalFunction("kgraph_blas_get_threads", types.int32())

KERNEL_NAMES = ("gemm", "blas_set_threads", "blas_get_threads", "array_at", "fetch_add")


@intrinsic
def fetch_add(typingctx, counter, value):
    """Atomically add `value` to counter[0] (an int64 array) and return the old value: threads
    claim blocks of work from a shared counter, so one that the OS delays takes fewer."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        amount = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.atomic_rmw("add", array.data, amount, "monotonic")
    return types.int64(counter, value), codegen


@intrinsic
def _void_pointer(typingctx, address):
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(address), codegen


@njit(cache=True)
def array_at(address, shape, dtype):
    """The C-contiguous array of `shape` and `dtype` at an address (entries get addresses)."""
    return carray(_void_pointer(address), shape, dtype)


@njit(cache=True, error_model="numpy")
def gemm(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, beta, itemsize):
    """Row-major C (m x n) = op(A) (m x k) @ op(B) (k x n) + beta * C on addresses, where op
    transposes when its flag is set and lda/ldb/ldc are row strides in elements;
    float32 when itemsize is 4, else float64. Row-major C is column-major C^T =
    op(B)^T op(A)^T, hence the swapped operands."""
    ints = np.empty(8, np.int32)
    ints[0] = 84 if tb else 78  # 'T' or 'N'
    ints[1] = 84 if ta else 78
    ints[2] = n
    ints[3] = m
    ints[4] = k
    ints[5] = ldb
    ints[6] = lda
    ints[7] = ldc
    p = ints.ctypes.data
    if itemsize == 4:
        single = np.empty(2, np.float32)
        single[0] = 1.0
        single[1] = beta
        s = single.ctypes.data
        sgemm(p, p + 4, p + 8, p + 12, p + 16, s, b, p + 20, a, p + 24, s + 4, c, p + 28)
    else:
        double = np.empty(2, np.float64)
        double[0] = 1.0
        double[1] = beta
        s = double.ctypes.data
        dgemm(p, p + 4, p + 8, p + 12, p + 16, s, b, p + 20, a, p + 24, s + 8, c, p + 28)
