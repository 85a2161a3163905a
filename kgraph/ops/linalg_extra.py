"""keras.ops linear algebra written as compositions, unrolled over the (static) matrix size:
Cholesky factorization column by column, triangular solves row by row. The graph grows
with the matrix size n (O(n) matmuls), so they suit the small matrices models use."""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.ops.numpy_extra import _floating, _floating_pair

__all__ = ["cholesky", "cholesky_inverse", "solve_triangular"]


def _square(x, name):
    n = x.shape[-1]
    if len(x.shape) < 2 or x.shape[-2] != n or n is None:
        raise ValueError(f"{name}: expected square matrices of static size in the last two axes, "
                         f"got shape {tuple(x.shape)}")
    return n


def cholesky(x, upper=False):
    """The lower factor L of a symmetric positive definite x = L L^T (U = L^T when upper)."""
    x = _floating(x)
    n = _square(x, "cholesky")
    columns = []
    for j in range(n):
        remainder = x[..., :, j]  # A[:, j] - sum_k<j L[:, k] L[j, k]
        if columns:
            factor = ops.stack(columns, axis=-1)  # [..., n, j]
            row = ops.expand_dims(factor[..., j, :], -1)
            remainder = ops.subtract(remainder, ops.squeeze(ops.matmul(factor, row), -1))
        pivot = ops.sqrt(remainder[..., j:j + 1])
        columns.append(ops.where(np.arange(n) >= j, ops.divide(remainder, pivot), ops.zeros_like(remainder)))
    lower = ops.stack(columns, axis=-1)
    return ops.swapaxes(lower, -1, -2) if upper else lower


def solve_triangular(a, b, lower=False):
    """x with a x = b for triangular a (lower or upper); b is [..., n] or [..., n, k]."""
    a, b = _floating_pair(a, b)
    n = _square(a, "solve_triangular")
    vector = len(b.shape) == len(a.shape) - 1
    if vector:
        b = ops.expand_dims(b, -1)
    rows = [None] * n
    order = range(n) if lower else range(n - 1, -1, -1)
    for i in order:
        value = b[..., i, :]
        known = [k for k in (range(i) if lower else range(i + 1, n))]
        if known:
            solved = ops.stack([rows[k] for k in known], axis=-2)  # [..., len(known), k]
            coefficients = ops.stack([a[..., i, k] for k in known], axis=-1)  # [..., len(known)]
            value = ops.subtract(value, ops.squeeze(ops.matmul(ops.expand_dims(coefficients, -2), solved), -2))
        rows[i] = ops.divide(value, ops.expand_dims(a[..., i, i], -1))
    x = ops.stack(rows, axis=-2)
    return ops.squeeze(x, -1) if vector else x


def cholesky_inverse(x, upper=False):
    """The inverse of A from its Cholesky factor (A = L L^T, or U^T U when upper)."""
    x = _floating(x)
    n = _square(x, "cholesky_inverse")
    lower = ops.swapaxes(x, -1, -2) if upper else x
    identity = np.eye(n, dtype=x.dtype)
    inverse_lower = solve_triangular(lower, ops.add(identity, ops.zeros_like(lower)), lower=True)
    return ops.matmul(ops.swapaxes(inverse_lower, -1, -2), inverse_lower)
