"""The numba backend: renders fusion groups to @njit kernels and one entry per graph."""

from kgraph.compiler.lower.numba.codegen import render_module

__all__ = ["render_module"]
