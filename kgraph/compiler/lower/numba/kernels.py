"""Compiles the kernels that heavy ops define next to themselves (see kgraph.ops.kernels).

`load(module)` gives the module the backend names its kernels use (BLAS `gemm`, BLAS
thread control, `prange`, `array_at`, `fetch_add`, denormal flushing), compiles its `numba_kernel` functions with
numba.njit and its `numba_entry` functions as C callbacks (numba.cfunc), all with
cache=True, and registers each entry's address with LLVM under a symbol name.
Generated modules call the entries as `ExternalFunction`s of that name, so numba neither
links nor re-optimizes the kernels into every module that uses them, and a generated
module's on-disk cache stays valid in a new process (symbols are resolved at load).
Their source records `source_hash()` of the kernel files all the same.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect

KERNEL_MODULES = ("kgraph.ops.conv", "kgraph.ops.pool", "kgraph.ops.matmul", "kgraph.ops.recurrent",
                  "kgraph.ops.attention")


def _module(module):
    return importlib.import_module(module) if isinstance(module, str) else module


def load(module, *names):
    """The `ExternalFunction`s of the named entries of `module` (compiled on first use)."""
    module = _module(module)
    if "_numba_entries" not in module.__dict__:
        _compile(module)
    entries = module.__dict__["_numba_entries"]
    return tuple(entries[name] for name in names)


def entry_names(module):
    """The entry points of a module (what generated code may call), in name order."""
    return sorted(name for name, value in vars(_module(module)).items()
                  if getattr(value, "numba_entry_arity", None) is not None)


def symbol(module, name):
    return f"kgraph_{_module(module).__name__.replace('.', '_')}_{name}"


def _compile(module):
    import llvmlite.binding as llvm
    from numba import cfunc, njit, prange, types

    from kgraph.compiler.lower.numba import blas, fpenv

    try:  # cached callbacks with parallel regions need numba's threading symbols loaded
        from numba.np.ufunc.parallel import _launch_threads

        _launch_threads()
    except ImportError:  # pragma: no cover
        pass
    names = module.__dict__
    for name in blas.KERNEL_NAMES:
        names[name] = getattr(blas, name)
    names["prange"] = prange
    names["denormals_off"] = fpenv.denormals_off
    names["denormals_restore"] = fpenv.denormals_restore
    for name, value in list(names.items()):
        options = getattr(value, "numba_options", None)
        if options is not None and inspect.isfunction(value):
            names[name] = njit(cache=True, error_model="numpy", **options)(value)
    entries = {}
    for name in entry_names(module):
        arity = names[name].numba_entry_arity
        signature = types.void(*([types.intp] * arity))
        callback = cfunc(signature, cache=True, error_model="numpy")(names[name])
        llvm.add_symbol(symbol(module, name), callback.address)
        entries[name] = types.ExternalFunction(symbol(module, name), signature)
    names["_numba_entries"] = entries


@functools.cache
def source_hash():
    """A digest of the kernel sources (and the BLAS bindings) generated modules call."""
    digest = hashlib.sha256()
    for name in KERNEL_MODULES + ("kgraph.compiler.lower.numba.blas", "kgraph.compiler.lower.numba.fpenv"):
        digest.update(inspect.getsource(importlib.import_module(name)).encode())
    return digest.hexdigest()[:16]
