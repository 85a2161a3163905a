"""Numba kernels that live next to their op without importing numba when kgraph is imported.

A heavy op's file (conv.py, pool.py) writes its kernels as plain Python functions,
generic over sizes, marked with `numba_kernel(...)` (compiled as numba @njit functions),
and its entry points marked with `numba_entry(arity)`: functions of `arity` integers
(addresses and sizes) that wrap the arrays and call the kernels. The numba backend
(`kgraph.compiler.lower.numba.kernels.load`) compiles the entries as C callbacks, cached
on disk, and generated modules call them by symbol: a kernel compiles once per machine,
not once per model, and a generated module's own compilation never re-optimizes it.

Run as plain Python (before the backend loads them) the functions work unchanged, given
`prange = range`, which helps debugging.
"""

from __future__ import annotations


def numba_kernel(**options):
    """Mark a function as a numba kernel; `options` are passed to numba.njit."""
    def mark(function):
        function.numba_options = options
        return function
    return mark


def numba_entry(arity):
    """Mark a function of `arity` integer arguments as an entry point generated code calls."""
    def mark(function):
        function.numba_entry_arity = arity
        return function
    return mark
