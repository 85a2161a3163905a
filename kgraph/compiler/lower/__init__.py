"""Lowering: rendering fused IR groups into backend source (numba on the CPU, Triton on the GPU)."""
