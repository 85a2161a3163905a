"""keras.ops linear algebra on LAPACK: inv, solve, det, slogdet (and logdet), qr, svd, eigh,
eig, pinv and lu_factor are primitive ops whose numba kernels call numpy.linalg (numba's
LAPACK bindings) once per matrix of the batch; lstsq and matrix_rank are compositions.

A factorization with several results (qr, svd, eigh, eig, slogdet, lu_factor) is one op
whose output packs them, flattened, along its last axis ([..., size(Q) + size(R)] for qr):
the IR has one value per node, and a second op per result would factor twice. The public
functions slice the results back out; the gradient rules read the upstream gradient of the
packed value the same way. Gradients follow the standard matrix-calculus rules (written
with kgraph.ops, so they are graph nodes): inv, solve, det, slogdet, pinv (for a constant
rank), qr (reduced, or any mode with no more rows than columns), svd (distinct singular
values), eigh (distinct eigenvalues), eig (real, distinct eigenvalues). docs/linalg.md
records the choices (eigh reads the lower triangle, eig is real-only, ...).
"""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.ops.numpy_extra import _floating, _floating_pair
from kgraph.ops.registry import OPS, OpDef, bind, register

__all__ = ["det", "eig", "eigh", "inv", "logdet", "lstsq", "lu_factor", "matrix_rank", "pinv", "qr",
           "slogdet", "solve", "svd"]

LAPACK = "lapack"  # the op kind: a bespoke numba kernel calling numpy.linalg per matrix


# -- shapes and the packed results ----------------------------------------------------------------
def _matrix_dims(shape, name, square=False):
    """(m, n) of the matrices in the last two axes of `shape`, checked."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"{name}: expected a tensor of rank >= 2 (matrices in the last two axes), "
                         f"got shape {shape}")
    m, n = shape[-2:]
    if m is None or n is None:
        raise ValueError(f"{name}: the matrix size (the last two axes) must be static, got shape {shape}")
    if square and m != n:
        raise ValueError(f"{name}: expected square matrices in the last two axes, got shape {shape}")
    return m, n


def _parts(op, attrs, m, n):
    """The shapes (per matrix) of the results op `op` packs into its output."""
    k = min(m, n)
    if op == "qr":
        return [(m, m), (m, n)] if attrs["mode"] == "complete" else [(m, k), (k, n)]
    if op == "svd":
        if not attrs["compute_uv"]:
            return [(k,)]
        return [(m, m), (k,), (n, n)] if attrs["full_matrices"] else [(m, k), (k,), (k, n)]
    if op in ("eigh", "eig"):
        return [(n,), (n, n)]
    if op == "slogdet":
        return [(), ()]
    if op == "lu_factor":
        return [(m, n), (k,)]
    raise KeyError(op)


def _size(shape):
    return int(np.prod(shape, dtype=np.int64))


def _packed_infer(op, square):
    def infer(attrs, x):
        m, n = _matrix_dims(x.shape, op, square)
        return tuple(x.shape[:-2]) + (sum(_size(p) for p in _parts(op, attrs, m, n)),), x.dtype
    return infer


def _pack(results, batch):
    return np.concatenate([np.asarray(r).reshape(batch + (-1,)) for r in results], axis=-1)


def _unpack(packed, op, attrs, m, n):
    """The results op `op` packed into `packed` ([..., size]), each [..., *shape]."""
    batch = tuple(-1 if d is None else d for d in packed.shape[:-1])
    results, offset = [], 0
    for shape in _parts(op, attrs, m, n):
        size = _size(shape)
        part = packed[..., offset:offset + size]
        results.append(ops.squeeze(part, -1) if shape == () else ops.reshape(part, batch + shape))
        offset += size
    return results


def _unpacked(x, op, **attrs):
    """Apply packing op `op` to x and return its results."""
    m, n = _matrix_dims(x.shape, op)
    return _unpack(bind(op, [x], **attrs), op, attrs, m, n)


# -- gradient helpers (graph ops) ------------------------------------------------------------------
def _t(x):
    return ops.swapaxes(x, -1, -2)


def _mm(*xs):
    result = xs[0]
    for x in xs[1:]:
        result = ops.matmul(result, x)
    return result


def _eye(n, like):
    return np.eye(n, dtype=like.dtype)


def _diag(v):
    """[..., n] -> [..., n, n] with v on the diagonal."""
    n = v.shape[-1]
    return ops.multiply(ops.expand_dims(v, -1), _eye(n, v))


def _inverse_gaps(values, n, square=False):
    """F[..., i, j] = 1 / (v_j - v_i) off the diagonal, 0 on it (v_j^2 - v_i^2 when square)."""
    if square:
        values = ops.square(values)
    gaps = ops.subtract(ops.expand_dims(values, -2), ops.expand_dims(values, -1))
    eye = _eye(n, values)
    return ops.multiply(ops.divide(1.0, ops.add(gaps, eye)), 1.0 - eye)


# -- inv ---------------------------------------------------------------------------------------------
def _inv_infer(attrs, x):
    _matrix_dims(x.shape, "inv", square=True)
    return tuple(x.shape), x.dtype


def _inv_grad(ctx):
    inverse_t = _t(ctx.output)
    return [ops.negative(_mm(inverse_t, ctx.upstream, inverse_t))]


def _inv_numba(node, inputs):
    n = node.shape[-1]
    return [f"X = a0.reshape((-1, {n}, {n}))", f"O = out.reshape((-1, {n}, {n}))",
            "for b in range(X.shape[0]):", "    O[b] = np.linalg.inv(X[b])"]


# -- solve -------------------------------------------------------------------------------------------
def _solve_infer(attrs, a, b):
    n, _ = _matrix_dims(a.shape, "solve", square=True)
    if len(b.shape) != len(a.shape) or b.shape[-2] != n or b.shape[-1] is None:
        raise ValueError(f"solve: expected b of shape {tuple(a.shape[:-1])} + (k,), got {tuple(b.shape)}")
    return tuple(b.shape), a.dtype


def _solve_grad(ctx):
    a, _ = ctx.inputs
    grad_b = bind("solve", [_t(a), ctx.upstream])
    return [ops.negative(ops.matmul(grad_b, _t(ctx.output))), grad_b]


def _solve_numba(node, inputs):
    n, k = node.shape[-2:]
    return [f"A = a0.reshape((-1, {n}, {n}))", f"B = a1.reshape((-1, {n}, {k}))",
            f"O = out.reshape((-1, {n}, {k}))",
            "for b in range(A.shape[0]):", "    O[b] = np.linalg.solve(A[b], B[b])"]


# -- det, slogdet -------------------------------------------------------------------------------------
def _det_infer(attrs, x):
    _matrix_dims(x.shape, "det", square=True)
    return tuple(x.shape[:-2]), x.dtype


def _cofactor_scale(x, scale):
    """scale[..., None, None] * inv(x)^T: d det(x) / dx = det(x) inv(x)^T."""
    return ops.multiply(ops.expand_dims(ops.expand_dims(scale, -1), -1), _t(bind("inv", [x])))


def _det_grad(ctx):
    return [_cofactor_scale(ctx.inputs[0], ops.multiply(ctx.upstream, ctx.output))]


def _slogdet_grad(ctx):
    return [_cofactor_scale(ctx.inputs[0], ctx.upstream[..., 1])]  # the sign is piecewise constant


def _det_numba(node, inputs):
    n = inputs[0].shape[-1]
    return [f"X = a0.reshape((-1, {n}, {n}))", "O = out.reshape(-1)",
            "for b in range(X.shape[0]):", "    O[b] = np.linalg.det(X[b])"]


def _slogdet_reference(attrs, x):
    sign, logabsdet = np.linalg.slogdet(x)
    return _pack([sign, logabsdet], x.shape[:-2])


def _slogdet_numba(node, inputs):
    n = inputs[0].shape[-1]
    return [f"X = a0.reshape((-1, {n}, {n}))", "O = out.reshape((-1, 2))",
            "for b in range(X.shape[0]):", "    sign, logabsdet = np.linalg.slogdet(X[b])",
            "    O[b, 0] = sign", "    O[b, 1] = logabsdet"]


# -- numba helpers for the packing ops ------------------------------------------------------------------
def _store(values, shape, offset, depth=1):
    """Lines copying local array `values` (per-matrix `shape`) into row b of O at `offset`
    (element by element: numba's LAPACK results are Fortran-ordered)."""
    pad = "    " * depth
    if len(shape) == 0:
        return [f"{pad}O[b, {offset}] = {values}"]
    if len(shape) == 1:
        return [f"{pad}for i in range({shape[0]}):", f"{pad}    O[b, {offset} + i] = {values}[i]"]
    rows, cols = shape
    return [f"{pad}for i in range({rows}):", f"{pad}    for j in range({cols}):",
            f"{pad}        O[b, {offset} + i * {cols} + j] = {values}[i, j]"]


def _stores(names, op, attrs, m, n):
    lines, offset = [], 0
    for name, shape in zip(names, _parts(op, attrs, m, n)):
        lines += _store(name, shape, offset)
        offset += _size(shape)
    return lines


def _prologue(inputs, node):
    m, n = inputs[0].shape[-2:]
    return m, n, [f"X = a0.reshape((-1, {m}, {n}))", f"O = out.reshape((X.shape[0], {node.shape[-1]}))",
                  "for b in range(X.shape[0]):"]


# -- qr ------------------------------------------------------------------------------------------------
def _qr_reference(attrs, x):
    return _pack(np.linalg.qr(x, mode=attrs["mode"]), x.shape[:-2])


def _qr_numba(node, inputs):
    m, n, lines = _prologue(inputs, node)
    attrs = node.attrs
    if attrs["mode"] == "complete" and m > n:
        # numba's qr is the reduced one: factor [A | I] (m x (n + m)); Q is a complete basis
        # whose first n columns are A's, and R's first n columns are A's R.
        lines += [f"    Z = np.zeros(({m}, {n + m}), X.dtype)", f"    Z[:, :{n}] = X[b]",
                  f"    for i in range({m}):", f"        Z[i, {n} + i] = 1",
                  "    q, z = np.linalg.qr(Z)", f"    r = z[:, :{n}]"]
    else:
        lines.append("    q, r = np.linalg.qr(X[b])")
    return lines + _stores(["q", "r"], "qr", attrs, m, n)


def _copyltu(x):
    """The symmetric matrix with x's lower triangle."""
    return ops.add(ops.tril(x), _t(ops.tril(x, -1)))


def _qr_tall_grad(q, r, grad_q, grad_r):
    """A's gradient for A = Q R with Q m x n, R n x n (m >= n), R invertible."""
    middle = ops.subtract(_mm(r, _t(grad_r)), _mm(_t(grad_q), q))
    b = ops.add(grad_q, _mm(q, _copyltu(middle)))
    return _t(bind("solve", [r, _t(b)]))  # b R^-T


def _qr_grad(ctx):
    x = ctx.inputs[0]
    m, n = x.shape[-2:]
    if ctx.attrs["mode"] == "complete" and m > n:
        raise NotImplementedError(
            f"qr: the gradient of mode='complete' with more rows than columns ({m} > {n}) is not "
            "defined (the extra columns of Q are not unique); use mode='reduced'")
    q, r = _unpack(ctx.output, "qr", ctx.attrs, m, n)
    grad_q, grad_r = _unpack(ctx.upstream, "qr", ctx.attrs, m, n)
    if m >= n:
        return [_qr_tall_grad(q, r, grad_q, grad_r)]
    # Wide: A = Q [U | V] with A = [X | Y], X = Q U square and V = Q^T Y.
    y = x[..., :, m:]
    grad_y = _mm(q, grad_r[..., :, m:])
    grad_q = ops.add(grad_q, _mm(y, _t(grad_r[..., :, m:])))
    grad_x = _qr_tall_grad(q, r[..., :, :m], grad_q, grad_r[..., :, :m])
    return [ops.concatenate([grad_x, grad_y], axis=-1)]


# -- svd -----------------------------------------------------------------------------------------------
def _svd_reference(attrs, x):
    if not attrs["compute_uv"]:
        return np.linalg.svd(x, compute_uv=False)
    return _pack(np.linalg.svd(x, full_matrices=attrs["full_matrices"]), x.shape[:-2])


def _svd_numba(node, inputs):
    m, n, lines = _prologue(inputs, node)
    attrs = node.attrs
    full = bool(attrs["full_matrices"]) and bool(attrs["compute_uv"])
    lines.append(f"    u, s, vh = np.linalg.svd(X[b], {full})")
    names = ["u", "s", "vh"] if attrs["compute_uv"] else ["s"]
    return lines + _stores(names, "svd", attrs, m, n)


def _svd_grad(ctx):
    x = ctx.inputs[0]
    m, n = x.shape[-2:]
    k = min(m, n)
    attrs = ctx.attrs
    if not attrs["compute_uv"]:
        u, s, vh = _unpacked(x, "svd", full_matrices=False, compute_uv=True)
        return [_mm(u, _diag(ctx.upstream), vh)]
    if attrs["full_matrices"] and m != n:
        raise NotImplementedError(
            f"svd: the gradient of full_matrices=True for non-square matrices ({m} x {n}) is not "
            "defined (the extra singular vectors are not unique); use full_matrices=False")
    u, s, vh = _unpack(ctx.output, "svd", attrs, m, n)
    grad_u, grad_s, grad_vh = _unpack(ctx.upstream, "svd", attrs, m, n)
    v, grad_v = _t(vh), _t(grad_vh)
    gaps = _inverse_gaps(s, k, square=True)  # 1 / (s_j^2 - s_i^2)
    ut_gu = _mm(_t(u), grad_u)
    vt_gv = _mm(_t(v), grad_v)
    j = ops.multiply(gaps, ops.subtract(ut_gu, _t(ut_gu)))
    kk = ops.multiply(gaps, ops.subtract(vt_gv, _t(vt_gv)))
    s_row, s_col = ops.expand_dims(s, -2), ops.expand_dims(s, -1)
    inner = ops.add(ops.add(ops.multiply(j, s_row), _diag(grad_s)), ops.multiply(s_col, kk))
    grad = _mm(u, inner, vh)
    inv_s_row = ops.divide(1.0, s_row)
    if m > k:  # (I - U U^T) dU S^-1 V^T
        projected = ops.subtract(grad_u, _mm(u, ut_gu))
        grad = ops.add(grad, _mm(ops.multiply(projected, inv_s_row), vh))
    if n > k:  # U S^-1 dV^T (I - V V^T)
        projected = ops.subtract(grad_v, _mm(v, vt_gv))
        grad = ops.add(grad, _mm(ops.multiply(u, inv_s_row), _t(projected)))
    return [grad]


# -- eigh, eig -------------------------------------------------------------------------------------------
def _eigh_reference(attrs, x):
    return _pack(np.linalg.eigh(x), x.shape[:-2])


def _eig_reference(attrs, x):
    w, v = np.linalg.eig(x)
    if np.iscomplexobj(w):
        raise ValueError(_EIG_COMPLEX)
    # LAPACK libraries differ in eig's order and signs: make both canonical (see the kernel)
    order = np.argsort(w, axis=-1)
    w = np.take_along_axis(w, order, -1)
    v = np.take_along_axis(v, order[..., None, :], -1)
    largest = np.take_along_axis(v, np.argmax(np.abs(v), axis=-2)[..., None, :], -2)
    return _pack([w, v * np.where(largest < 0, -1, 1).astype(v.dtype)], x.shape[:-2])


_EIG_COMPLEX = ("eig: the matrix has complex eigenvalues, and kgraph has no complex dtype; eig "
                "supports real eigen-decompositions only (use eigh for symmetric matrices)")


def _eig_numba(op):
    def template(node, inputs):
        m, n, lines = _prologue(inputs, node)
        if op == "eigh":
            lines.append("    w, v = np.linalg.eigh(X[b])")
        else:
            lines += ["    real = True", "    try:", "        w, v = np.linalg.eig(X[b])",
                      "    except Exception:", "        real = False",
                      "    if not real:", f"        raise ValueError({_EIG_COMPLEX!r})",
                      # ascending eigenvalues; each eigenvector's largest entry positive
                      "    order = np.argsort(w)",
                      f"    for jj in range({n}):",
                      "        src = order[jj]",
                      "        top = 0",
                      f"        for i in range({n}):",
                      "            if abs(v[i, src]) > abs(v[top, src]):",
                      "                top = i",
                      "        sign = -1.0 if v[top, src] < 0 else 1.0",
                      "        O[b, jj] = w[src]",
                      f"        for i in range({n}):",
                      f"            O[b, {n} + i * {n} + jj] = sign * v[i, src]"]
            return lines
        return lines + _stores(["w", "v"], op, node.attrs, m, n)
    return template


def _eigh_grad(ctx):
    n = ctx.inputs[0].shape[-1]
    w, v = _unpack(ctx.output, "eigh", {}, n, n)
    grad_w, grad_v = _unpack(ctx.upstream, "eigh", {}, n, n)
    inner = ops.add(_diag(grad_w), ops.multiply(_inverse_gaps(w, n), _mm(_t(v), grad_v)))
    grad = _mm(v, inner, _t(v))
    # eigh reads the lower triangle: x[i, j] (i > j) stands for both entries, the upper is unread.
    return [ops.add(ops.tril(ops.add(grad, _t(grad)), -1), ops.multiply(grad, _eye(n, grad)))]


def _eig_grad(ctx):
    n = ctx.inputs[0].shape[-1]
    w, v = _unpack(ctx.output, "eig", {}, n, n)
    grad_w, grad_v = _unpack(ctx.upstream, "eig", {}, n, n)
    # numpy's eigenvectors have unit norm: remove the part of dV along V's own columns.
    vt_gv = _mm(_t(v), grad_v)
    grad_v = ops.subtract(grad_v, ops.multiply(v, ops.expand_dims(ops.diagonal(vt_gv, axis1=-2, axis2=-1), -2)))
    inner = ops.add(_diag(grad_w), ops.multiply(_inverse_gaps(w, n), _mm(_t(v), grad_v)))
    return [bind("solve", [_t(v), _mm(inner, _t(v))])]  # V^-T inner V^T


# -- pinv ------------------------------------------------------------------------------------------------
def _pinv_infer(attrs, x):
    m, n = _matrix_dims(x.shape, "pinv")
    return tuple(x.shape[:-2]) + (n, m), x.dtype


def _pinv_numba(node, inputs):
    m, n = inputs[0].shape[-2:]
    return [f"X = a0.reshape((-1, {m}, {n}))", f"O = out.reshape((-1, {n}, {m}))",
            "for b in range(X.shape[0]):", f"    O[b] = np.linalg.pinv(X[b], {float(node.attrs['rcond'])!r})"]


def _pinv_grad(ctx):
    """Golub & Pereyra's derivative of the pseudoinverse X = A+ (valid where the rank is constant)."""
    a, x, g = ctx.inputs[0], ctx.output, ctx.upstream
    xt, gt = _t(x), _t(g)
    grad = ops.negative(_mm(xt, g, xt))
    h = _mm(gt, x, xt)  # (I - A X) G^T X X^T
    grad = ops.add(grad, ops.subtract(h, _mm(a, x, h)))
    k = _mm(xt, x, gt)  # X^T X G^T (I - X A)
    return [ops.add(grad, ops.subtract(k, _mm(k, x, a)))]


# -- lu_factor -----------------------------------------------------------------------------------------
def _lu_factor_reference(attrs, x):
    import scipy.linalg

    batch = x.shape[:-2]
    flat = x.reshape((-1,) + x.shape[-2:])
    results = [scipy.linalg.lu_factor(a, check_finite=False) for a in flat]
    lu = np.stack([r[0] for r in results]).reshape(x.shape)
    pivots = np.stack([r[1] for r in results]).astype(x.dtype).reshape(batch + (-1,))
    return _pack([lu, pivots], batch)


def _lu_factor_numba(node, inputs):
    """LAPACK getrf's partial pivoting (the first largest |pivot|), unblocked."""
    m, n, lines = _prologue(inputs, node)
    k = min(m, n)
    lines += ["    lu = X[b].copy()",
              f"    for j in range({k}):",
              "        p = j",
              "        for i in range(j + 1, " + str(m) + "):",
              "            if abs(lu[i, j]) > abs(lu[p, j]):",
              "                p = i",
              f"        O[b, {m * n} + j] = p",
              "        if p != j:",
              f"            for c in range({n}):",
              "                t = lu[j, c]",
              "                lu[j, c] = lu[p, c]",
              "                lu[p, c] = t",
              "        if lu[j, j] != 0:",
              f"            for i in range(j + 1, {m}):",
              "                lu[i, j] /= lu[j, j]",
              f"        for i in range(j + 1, {m}):",
              f"            for c in range(j + 1, {n}):",
              "                lu[i, c] -= lu[i, j] * lu[j, c]"]
    return lines + _store("lu", (m, n), 0)


def _row_swaps(pivots, n, like):
    """The permutation matrix P [..., n, n] of getrf's row swaps (row j with row pivots[j], in
    order), so that P A = L U."""
    perm = ops.add(ops.zeros_like(like), _eye(n, like))
    for j in range(n):
        e_j = _eye(n, like)[j]
        e_p = ops.cast(ops.one_hot(ops.cast(pivots[..., j], "int32"), n), like.dtype)
        row_j = perm[..., j, :]
        row_p = ops.squeeze(ops.matmul(ops.expand_dims(e_p, -2), perm), -2)
        change = ops.subtract(row_p, row_j)
        perm = ops.add(perm, ops.multiply(ops.expand_dims(e_j, -1), ops.expand_dims(change, -2)))
        perm = ops.subtract(perm, ops.multiply(ops.expand_dims(e_p, -1), ops.expand_dims(change, -2)))
    return perm


def _lu_factor_grad(ctx):
    """With P A = L U: B = P A gets L^-T (tril(L^T dL, -1) + triu(dU U^T)) U^-T; A gets P^T of it."""
    m, n = ctx.inputs[0].shape[-2:]
    if m != n:
        raise NotImplementedError(f"lu_factor: the gradient is defined for square matrices only, got {m} x {n}")
    lu, pivots = _unpack(ctx.output, "lu_factor", {}, m, n)
    grad_lu, _ = _unpack(ctx.upstream, "lu_factor", {}, m, n)  # the pivots have no gradient
    lower, upper = ops.add(ops.tril(lu, -1), _eye(n, lu)), ops.triu(lu)
    middle = ops.add(ops.tril(_mm(_t(lower), ops.tril(grad_lu, -1)), -1), ops.triu(_mm(ops.triu(grad_lu), _t(upper))))
    grad_b = _t(bind("solve", [upper, _t(bind("solve", [_t(lower), middle]))]))
    return [_mm(_t(_row_swaps(pivots, n, lu)), grad_b)]


# -- samples (registry tests) ------------------------------------------------------------------------------
def _matrices(rng, *shape, spd=False, dtype=np.float32):
    x = rng.standard_normal(shape)
    if spd:
        x = x @ np.swapaxes(x, -1, -2) + shape[-1] * np.eye(shape[-1])
    else:
        x = x + (shape[-1] if shape[-1] == shape[-2] else 0) * 0.5 * np.eye(*shape[-2:])
    return x.astype(dtype)


def _square_samples(rng):
    return [([_matrices(rng, 3, 3)], {}), ([_matrices(rng, 2, 4, 4)], {})]


def _solve_samples(rng):
    return [([_matrices(rng, 3, 3), rng.standard_normal((3, 2)).astype(np.float32)], {}),
            ([_matrices(rng, 2, 3, 3), rng.standard_normal((2, 3, 1)).astype(np.float32)], {})]


def _qr_samples(rng):
    return [([_matrices(rng, 4, 3)], {"mode": "reduced"}), ([_matrices(rng, 2, 3, 3)], {"mode": "complete"}),
            ([_matrices(rng, 2, 3, 5)], {"mode": "reduced"})]


def _svd_samples(rng):
    return [([_matrices(rng, 4, 3)], {"full_matrices": False, "compute_uv": True}),
            ([_matrices(rng, 2, 3, 3)], {"full_matrices": True, "compute_uv": True}),
            ([_matrices(rng, 2, 3, 5)], {"full_matrices": True, "compute_uv": False})]


def _eigh_samples(rng):
    return [([_matrices(rng, 3, 3, spd=True)], {}), ([_matrices(rng, 2, 4, 4, spd=True)], {})]


def _eig_samples(rng):
    # symmetric matrices shifted by a small antisymmetric part: real, distinct eigenvalues
    x = _matrices(rng, 2, 3, 3, spd=True, dtype=np.float64)
    noise = 0.1 * rng.standard_normal((2, 3, 3))
    return [([(x + noise - np.swapaxes(noise, -1, -2) * 0.5).astype(np.float32)], {})]


def _lu_samples(rng):
    # no diagonal boost: rows get swapped
    return [([rng.standard_normal((4, 4)).astype(np.float32)], {}),
            ([rng.standard_normal((2, 3, 3)).astype(np.float32)], {})]


def _pinv_samples(rng):
    return [([_matrices(rng, 4, 3)], {"rcond": 1e-6}), ([_matrices(rng, 2, 2, 3)], {"rcond": 1e-6})]


register(OpDef("inv", LAPACK, _inv_infer, lambda attrs, x: np.linalg.inv(x), grad=_inv_grad,
               samples=_square_samples, doc="the inverse of square matrices", extra={"numba": _inv_numba}))
register(OpDef("solve", LAPACK, _solve_infer, lambda attrs, a, b: np.linalg.solve(a, b), grad=_solve_grad,
               samples=_solve_samples, doc="x with a x = b", extra={"numba": _solve_numba}))
register(OpDef("det", LAPACK, _det_infer, lambda attrs, x: np.linalg.det(x), grad=_det_grad,
               samples=_square_samples, doc="determinants", extra={"numba": _det_numba}))
register(OpDef("slogdet", LAPACK, _packed_infer("slogdet", True), _slogdet_reference, grad=_slogdet_grad,
               samples=_square_samples, doc="[sign, log|det|] packed", extra={"numba": _slogdet_numba}))
register(OpDef("qr", LAPACK, _packed_infer("qr", False), _qr_reference, grad=_qr_grad, samples=_qr_samples,
               doc="[Q, R] packed", extra={"numba": _qr_numba}))
register(OpDef("svd", LAPACK, _packed_infer("svd", False), _svd_reference, grad=_svd_grad,
               samples=_svd_samples, doc="[U, S, Vh] packed (S alone without compute_uv)",
               extra={"numba": _svd_numba}))
register(OpDef("eigh", LAPACK, _packed_infer("eigh", True), _eigh_reference, grad=_eigh_grad,
               samples=_eigh_samples, doc="[w, v] packed; reads the lower triangle",
               extra={"numba": _eig_numba("eigh")}))
register(OpDef("eig", LAPACK, _packed_infer("eig", True), _eig_reference, grad=_eig_grad,
               samples=_eig_samples, doc="[w, v] packed; real eigen-decompositions only",
               extra={"numba": _eig_numba("eig")}))
register(OpDef("pinv", LAPACK, _pinv_infer, lambda attrs, x: np.linalg.pinv(x, rcond=attrs["rcond"]),
               grad=_pinv_grad, samples=_pinv_samples, doc="the Moore-Penrose pseudoinverse",
               extra={"numba": _pinv_numba}))
register(OpDef("lu_factor", LAPACK, _packed_infer("lu_factor", False), _lu_factor_reference,
               grad=_lu_factor_grad, samples=_lu_samples, doc="[LU, pivots] packed (pivots as floats)",
               extra={"numba": _lu_factor_numba}))

NUMBA_TEMPLATES = {name: opdef.extra["numba"] for name, opdef in OPS.items() if opdef.kind == LAPACK}


# -- the keras.ops functions ---------------------------------------------------------------------------------
def _float_matrices(x, name, square=False):
    x = _floating(x)
    _matrix_dims(x.shape, name, square)
    return x


def inv(x):
    """The inverse of square matrices x (..., M, M)."""
    return bind("inv", [_float_matrices(x, "inv", square=True)])


def solve(a, b):
    """x with a @ x = b, a (..., M, M); b (M,) is a vector (numpy 2's rule), otherwise (..., M, K);
    the batch axes broadcast."""
    a, b = _floating_pair(a, b)
    n, _ = _matrix_dims(a.shape, "solve", square=True)
    vector = len(b.shape) == 1
    if vector:
        b = ops.expand_dims(b, -1)
    if len(b.shape) < 2 or b.shape[-2] != n:
        raise ValueError(f"solve: b must be ({n},) or (..., {n}, K) for a of shape {tuple(a.shape)}, "
                         f"got shape {tuple(b.shape)}")
    batch = _broadcast_batch(a.shape[:-2], b.shape[:-2], "solve")
    a = _broadcast_batch_to(a, batch)
    b = _broadcast_batch_to(b, batch)
    x = bind("solve", [a, b])
    return ops.squeeze(x, -1) if vector else x


def _broadcast_batch(s1, s2, name):
    from kgraph.ops.shapes import broadcast_shapes

    return broadcast_shapes(tuple(s1), tuple(s2), op=name)


def _broadcast_batch_to(x, batch):
    if tuple(x.shape[:-2]) == tuple(batch):
        return x
    if any(d is None for d in batch):
        raise ValueError(f"solve: cannot broadcast a dynamic batch of shape {tuple(batch)}")
    return ops.broadcast_to(x, tuple(batch) + tuple(x.shape[-2:]))


def det(x):
    """The determinants of square matrices x (..., M, M), shape (...)."""
    return bind("det", [_float_matrices(x, "det", square=True)])


def slogdet(x):
    """(sign, logabsdet) of the determinants of square matrices x (..., M, M)."""
    return tuple(_unpacked(_float_matrices(x, "slogdet", square=True), "slogdet"))


def logdet(x):
    """log det x for Hermitian positive definite x (..., M, M) (slogdet's logabsdet, as Keras)."""
    return slogdet(_float_matrices(x, "logdet", square=True))[1]


def qr(x, mode="reduced"):
    """(q, r) with x = q @ r; mode "reduced" (q (..., M, K), r (..., K, N), K = min(M, N)) or
    "complete" (q (..., M, M), r (..., M, N)). Signs of the factors follow LAPACK (numpy's)."""
    if mode not in ("reduced", "complete"):
        raise ValueError(f"qr: mode must be one of 'reduced', 'complete', got {mode!r}")
    return tuple(_unpacked(_float_matrices(x, "qr"), "qr", mode=mode))


def svd(x, full_matrices=True, compute_uv=True):
    """(u, s, vh) with x = u @ diag(s) @ vh, s descending; s alone when compute_uv is False."""
    results = _unpacked(_float_matrices(x, "svd"), "svd", full_matrices=bool(full_matrices),
                        compute_uv=bool(compute_uv))
    return tuple(results) if compute_uv else results[0]


def eigh(x):
    """(w, v) of symmetric matrices x (..., M, M): ascending eigenvalues w and the eigenvectors in
    v's columns. Only the lower triangle of x is read (as numpy, TensorFlow and torch do)."""
    return tuple(_unpacked(_float_matrices(x, "eigh", square=True), "eigh"))


def eig(x):
    """(w, v) of square matrices x (..., M, M) with real eigenvalues. Keras returns complex
    values; kgraph has no complex dtype, so a matrix with complex eigenvalues raises ValueError
    (eagerly, and when the compiled kernel meets one). The order of the eigenvalues and the
    signs of the eigenvectors are not unique (LAPACK builds differ): kgraph sorts the
    eigenvalues ascending and makes each eigenvector's largest entry positive."""
    return tuple(_unpacked(_float_matrices(x, "eig", square=True), "eig"))


def _default_rcond(x, rcond):
    """numpy's default cut-off: max(M, N) * eps of x's dtype."""
    return float(max(x.shape[-2:]) * np.finfo(x.dtype).eps) if rcond is None else float(rcond)


def pinv(x, rcond=None):
    """The Moore-Penrose pseudoinverse of x (..., M, N), shape (..., N, M); singular values at
    most rcond * the largest are dropped (default max(M, N) * eps, numpy's)."""
    x = _float_matrices(x, "pinv")
    return bind("pinv", [x], rcond=_default_rcond(x, rcond))


def lstsq(a, b, rcond=None):
    """The least-squares solution x of a @ x = b for a (M, N), b (M,) or (M, K): the minimum
    norm solution, pinv(a, rcond) @ b (rcond as numpy.linalg.lstsq's: default max(M, N) * eps)."""
    a, b = _floating_pair(a, b)
    if len(a.shape) != 2:
        raise ValueError(f"lstsq: expected a to have rank 2, got shape {tuple(a.shape)}")
    if len(b.shape) not in (1, 2) or b.shape[0] != a.shape[0]:
        raise ValueError(f"lstsq: expected b of shape ({a.shape[0]},) or ({a.shape[0]}, K) for a of "
                         f"shape {tuple(a.shape)}, got {tuple(b.shape)}")
    return ops.matmul(pinv(a, _default_rcond(a, rcond)), b)


def matrix_rank(x, tol=None):
    """The number of singular values of x (..., M, N) above tol (default: the largest times
    max(M, N) * eps, numpy's), int32."""
    x = _float_matrices(x, "matrix_rank")
    s = svd(x, compute_uv=False)
    if tol is None:
        tol = ops.multiply(ops.max(s, axis=-1, keepdims=True), float(max(x.shape[-2:]) * np.finfo(x.dtype).eps))
    return ops.sum(ops.cast(ops.greater(s, tol), "int32"), axis=-1)


def lu_factor(x):
    """(lu, pivots) of x (..., M, N) as scipy.linalg.lu_factor: L (unit diagonal, below) and U in
    one matrix, pivots int32 (row i was swapped with row pivots[i]). Differentiable (lu) for
    square x."""
    x = _float_matrices(x, "lu_factor")
    lu, pivots = _unpacked(x, "lu_factor")
    return lu, ops.cast(pivots, "int32")
