"""Recurrences: `simple_rnn_sequence`, `lstm_sequence`, `gru_sequence` and their BPTT ops.

Each forward op runs the whole time loop of one recurrent layer in one kernel. The input
projection `x @ W + b` is not part of the op (the layers compute it with one matmul over
every timestep); the op adds the recurrent product `h @ U` per step and applies the
cell's gates, Keras 3's formulas and gate orders:

- simple_rnn: h = act(xp + h U)
- lstm (gates i, f, c, o): z = xp + h U; i, f, o = ract(z_i, z_f, z_o); g = act(z_c);
  c = f c + i g; h = o act(c)
- gru (gates z, r, h; `rbias` the recurrent bias, zeros when reset_after is False):
  inner = h U + rbias; z = ract(xp_z + inner_z); r = ract(xp_r + inner_r);
  reset_after: hh = act(xp_h + r inner_h), else hh = act(xp_h + (r h) U_h + rbias_h);
  h = z h + (1 - z) hh

Inputs are xp (n, T, G*u), the initial state(s) (n, u), U (u, G*u), a bool mask (n, T)
(a False step carries the state through unchanged), for gru rbias (G*u,), and optionally
the recurrent dropout masks drop (n, G*u): gate k's recurrent product is then
(h * drop_k) @ U_k (Keras's cells with recurrent_dropout, one mask per gate). A node has
one value (docs/design.md), so the output packs, per step, the state and what the backward
pass needs: (n, T, P) with
- simple_rnn: [h] (P = u)
- lstm: [h, c, i, f, g, o] (P = 6u)
- gru: [h, z, r, hh, rec] (P = 5u), rec = inner_h (reset_after) or (r h) U_h + rbias_h.
Every part is differentiable (the backward op takes an upstream gradient for each).

The backward op `<op>_grad(upstream, packed, states..., U, mask[, rbias][, drop])` runs the time
loop backwards and returns (n, T*K + S*u): per step the gradients of the pre-activations
(K = G*u; gru also appends d rec, K = 4u), then those of the initial states. The gradient
rule reads the input projection's gradient from it and computes dU (and d rbias) with one
batched matmul over the steps. Activations are attrs from ACTIVATIONS.
"""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.ops.kernels import numba_entry, numba_kernel
from kgraph.ops.registry import OpDef, Spec, bind, register

KERNEL = "kernel"
ACTIVATIONS = {"linear": 0, "tanh": 1, "sigmoid": 2, "hard_sigmoid": 3, "relu": 4}
CELLS = {"simple_rnn": (1, 1, 1), "lstm": (4, 2, 6), "gru": (3, 1, 5)}  # gates G, states S, packed P / u


def activation_name(activation, layer, argument="activation"):
    """The ACTIVATIONS name of a Keras activation (a name or one of kgraph's functions)."""
    if activation is None:
        return "linear"
    name = activation if isinstance(activation, str) else getattr(activation, "__name__", repr(activation))
    if name not in ACTIVATIONS:
        raise ValueError(f"{layer}: {argument}={name!r} is not supported by the compiled recurrent kernels; "
                         f"use one of {sorted(ACTIVATIONS)}")
    return name


# -- numpy references -------------------------------------------------------------------------------
def _act(name, x):
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "hard_sigmoid":
        return np.clip(x + 3.0, 0.0, 6.0) / 6.0
    if name == "relu":
        return np.maximum(x, 0)
    return x


def _dact(name, y):
    """The activation's derivative, from its output."""
    if name == "tanh":
        return 1.0 - y * y
    if name == "sigmoid":
        return y * (1.0 - y)
    if name == "hard_sigmoid":
        return ((y > 0) & (y < 1)) / 6.0
    if name == "relu":
        return (y > 0).astype(y.dtype)
    return np.ones_like(y)


def _parts(cell, inputs):
    """(xp, states, U, mask, rbias, drop) of a forward op's inputs; rbias is None but for gru,
    drop (the recurrent dropout masks, (n, G*u)) None when the op has none."""
    count = CELLS[cell][1]
    xp, states, U, mask = inputs[0], list(inputs[1:1 + count]), inputs[1 + count], inputs[2 + count]
    rest = list(inputs[3 + count:])
    rbias = rest.pop(0) if cell == "gru" else None
    drop = rest.pop(0) if rest else None
    return xp, states, U, mask, rbias, drop


def _gate_mask(drop, k, u):
    """Gate k's recurrent dropout mask (n, u), or 1 without one."""
    return 1.0 if drop is None else drop[:, k * u:(k + 1) * u]


def _rec(h, U, drop, first, gates):
    """The recurrent product of gates first.. first+gates-1: (h * drop_k) @ U_k per gate."""
    u = U.shape[0]
    return np.concatenate([(h * _gate_mask(drop, k, u)) @ U[:, k * u:(k + 1) * u]
                           for k in range(first, first + gates)], axis=1)


def _rec_grad(d, U, drop, first, gates):
    """h's gradient through _rec: sum over the gates of (d_k @ U_k^T) * drop_k."""
    u = U.shape[0]
    return sum((d[:, (k - first) * u:(k - first + 1) * u] @ U[:, k * u:(k + 1) * u].T) * _gate_mask(drop, k, u)
               for k in range(first, first + gates))


def _rnn_reference(attrs, *inputs):
    xp, (h0,), U, mask, _, drop = _parts("simple_rnn", inputs)
    n, T, _ = xp.shape
    h = h0.copy()
    out = np.zeros(xp.shape, np.result_type(xp, U))
    for t in range(T):
        hn = _act(attrs["activation"], xp[:, t] + _rec(h, U, drop, 0, 1))
        h = np.where(mask[:, t, None], hn, h)
        out[:, t] = h
    return out


def _lstm_reference(attrs, *inputs):
    xp, (h0, c0), U, mask, _, drop = _parts("lstm", inputs)
    n, T, _ = xp.shape
    u = U.shape[0]
    act, ract = attrs["activation"], attrs["recurrent_activation"]
    h, c = h0.copy(), c0.copy()
    out = np.zeros((n, T, 6 * u), np.result_type(xp, U))
    for t in range(T):
        z = xp[:, t] + _rec(h, U, drop, 0, 4)
        i = _act(ract, z[:, :u])
        f = _act(ract, z[:, u:2 * u])
        g = _act(act, z[:, 2 * u:3 * u])
        o = _act(ract, z[:, 3 * u:])
        cn = f * c + i * g
        hn = o * _act(act, cn)
        keep = mask[:, t, None]
        h, c = np.where(keep, hn, h), np.where(keep, cn, c)
        out[:, t] = np.concatenate([h, c, i, f, g, o], axis=1)
    return out


def _gru_reference(attrs, *inputs):
    xp, (h0,), U, mask, rbias, drop = _parts("gru", inputs)
    n, T, _ = xp.shape
    u = U.shape[0]
    act, ract = attrs["activation"], attrs["recurrent_activation"]
    h = h0.copy()
    out = np.zeros((n, T, 5 * u), np.result_type(xp, U))
    for t in range(T):
        x = xp[:, t]
        inner = _rec(h, U, drop, 0, 2) + rbias[:2 * u]
        z = _act(ract, x[:, :u] + inner[:, :u])
        r = _act(ract, x[:, u:2 * u] + inner[:, u:])
        if attrs["reset_after"]:
            rec = _rec(h, U, drop, 2, 1) + rbias[2 * u:]
            hh = _act(act, x[:, 2 * u:] + r * rec)
        else:
            rec = _rec(r * h, U, drop, 2, 1) + rbias[2 * u:]
            hh = _act(act, x[:, 2 * u:] + rec)
        hn = z * h + (1 - z) * hh
        h = np.where(mask[:, t, None], hn, h)
        out[:, t] = np.concatenate([h, z, r, hh, rec], axis=1)
    return out


def _previous(packed, h0, t, lo, hi):
    return h0 if t == 0 else packed[:, t - 1, lo:hi]


def _rnn_grad_reference(attrs, gy, *inputs):
    packed, (h0,), U, mask, _, drop = _parts("simple_rnn", inputs)
    n, T, u = packed.shape
    act = attrs["activation"]
    out = np.zeros((n, T * u + u), np.result_type(gy, U))
    dh = np.zeros_like(h0, dtype=out.dtype)
    for t in reversed(range(T)):
        m = mask[:, t, None]
        total = dh + gy[:, t]
        dpre = np.where(m, total, 0) * _dact(act, packed[:, t])
        out[:, t * u:(t + 1) * u] = dpre
        dh = _rec_grad(dpre, U, drop, 0, 1) + np.where(m, 0, total)
    out[:, T * u:] = dh
    return out


def _lstm_grad_reference(attrs, gy, *inputs):
    packed, (h0, c0), U, mask, _, drop = _parts("lstm", inputs)
    n, T, _ = packed.shape
    u = U.shape[0]
    act, ract = attrs["activation"], attrs["recurrent_activation"]
    out = np.zeros((n, T * 4 * u + 2 * u), np.result_type(gy, U))
    dh = np.zeros((n, u), out.dtype)
    dc = np.zeros((n, u), out.dtype)
    for t in reversed(range(T)):
        m = mask[:, t, None]
        parts = [packed[:, t, k * u:(k + 1) * u] for k in range(6)]
        _, c, i, f, g, o = parts
        gys = [gy[:, t, k * u:(k + 1) * u] for k in range(6)]
        dh_total, dc_total = dh + gys[0], dc + gys[1]
        dhn = np.where(m, dh_total, 0)
        tc = _act(act, c)
        dcn = np.where(m, dc_total, 0) + dhn * o * _dact(act, tc)
        c_prev = _previous(packed, c0, t, u, 2 * u)
        di = (gys[2] + dcn * g) * _dact(ract, i)
        df = (gys[3] + dcn * c_prev) * _dact(ract, f)
        dg = (gys[4] + dcn * i) * _dact(act, g)
        do = (gys[5] + dhn * tc) * _dact(ract, o)
        dpre = np.concatenate([di, df, dg, do], axis=1)
        out[:, t * 4 * u:(t + 1) * 4 * u] = dpre
        dh = _rec_grad(dpre, U, drop, 0, 4) + np.where(m, 0, dh_total)
        dc = dcn * f + np.where(m, 0, dc_total)
    out[:, T * 4 * u:T * 4 * u + u] = dh
    out[:, T * 4 * u + u:] = dc
    return out


def _gru_grad_reference(attrs, gy, *inputs):
    packed, (h0,), U, mask, rbias, drop = _parts("gru", inputs)
    n, T, _ = packed.shape
    u = U.shape[0]
    act, ract = attrs["activation"], attrs["recurrent_activation"]
    out = np.zeros((n, T * 4 * u + u), np.result_type(gy, U))
    dh = np.zeros((n, u), out.dtype)
    mh = _gate_mask(drop, 2, u)
    for t in reversed(range(T)):
        m = mask[:, t, None]
        _, z, r, hh, rec = (packed[:, t, k * u:(k + 1) * u] for k in range(5))
        gys = [gy[:, t, k * u:(k + 1) * u] for k in range(5)]
        h_prev = _previous(packed, h0, t, 0, u)
        total = dh + gys[0]
        dhn = np.where(m, total, 0)
        dh = np.where(m, 0, total) + dhn * z
        dpre_h = (gys[3] + dhn * (1 - z)) * _dact(act, hh)
        dz = gys[1] + dhn * (h_prev - hh)
        if attrs["reset_after"]:
            drec = gys[4] + dpre_h * r
            dr = gys[2] + dpre_h * rec
        else:  # rec = (r h drop_h) @ U_h + rbias_h
            drec = gys[4] + dpre_h
            drh = (drec @ U[:, 2 * u:].T) * mh
            dr = gys[2] + drh * h_prev
            dh = dh + drh * r
        dpre_z = dz * _dact(ract, z)
        dpre_r = dr * _dact(ract, r)
        out[:, t * 4 * u:(t + 1) * 4 * u] = np.concatenate([dpre_z, dpre_r, dpre_h, drec], axis=1)
        dh = dh + _rec_grad(np.concatenate([dpre_z, dpre_r], axis=1), U, drop, 0, 2)
        if attrs["reset_after"]:
            dh = dh + _rec_grad(drec, U, drop, 2, 1)
    out[:, T * 4 * u:] = dh
    return out


# -- shape rules ---------------------------------------------------------------------------------------
def _check(op, cell, xp, states, U, mask, rbias=None, drop=None):
    gates = CELLS[cell][0]
    if len(xp.shape) != 3 or len(U.shape) != 2:
        raise ValueError(f"{op}: expected x_proj (batch, timesteps, {gates}*units) and a recurrent kernel "
                         f"(units, {gates}*units), got {xp.shape} and {U.shape}")
    u = U.shape[0]
    n, T = xp.shape[0], xp.shape[1]
    if T is None:
        raise ValueError(f"{op}: the number of timesteps must be known, got x_proj of shape {xp.shape}")
    if U.shape[1] != gates * u or xp.shape[2] != gates * u:
        raise ValueError(f"{op}: x_proj {xp.shape} and the recurrent kernel {U.shape} must have {gates}*units "
                         f"columns for {u} units")
    for state in states:
        if tuple(state.shape) != (n, u):
            raise ValueError(f"{op}: initial states must have shape (batch, units) = {(n, u)}, got {state.shape}")
    if tuple(mask.shape) != (n, T) or mask.dtype != "bool":
        raise ValueError(f"{op}: the mask must be bool of shape (batch, timesteps) = {(n, T)}, got "
                         f"{mask.dtype} {mask.shape}")
    if rbias is not None and tuple(rbias.shape) != (gates * u,):
        raise ValueError(f"{op}: the recurrent bias must have shape ({gates * u},), got {rbias.shape}")
    if drop is not None and (tuple(drop.shape) != (n, gates * u) or drop.dtype not in ("float32", "float64")):
        raise ValueError(f"{op}: the recurrent dropout masks must be float of shape (batch, {gates}*units) = "
                         f"{(n, gates * u)}, got {drop.dtype} {drop.shape}")
    return n, T, u, ops.result_type(xp.dtype, U.dtype)


def _check_attrs(op, attrs):
    for key in ("activation", "recurrent_activation"):
        if key in attrs and attrs[key] not in ACTIVATIONS:
            raise ValueError(f"{op}: {key}={attrs[key]!r} is not one of {sorted(ACTIVATIONS)}")


def _forward_infer(cell):
    def infer(attrs, *specs):
        _check_attrs(cell + "_sequence", attrs)
        if len(specs) not in (CELLS[cell][1] + k for k in ((4, 5) if cell == "gru" else (3, 4))):
            raise ValueError(f"{cell}_sequence: unexpected number of inputs ({len(specs)})")
        xp, states, U, mask, rbias, drop = _parts(cell, specs)
        n, T, u, dtype = _check(cell + "_sequence", cell, xp, states, U, mask, rbias, drop)
        return (n, T, CELLS[cell][2] * u), dtype
    return infer


def _backward_infer(cell):
    def infer(attrs, gy, packed, *rest):
        op = cell + "_sequence_grad"
        _check_attrs(op, attrs)
        gates, count, width = CELLS[cell]
        _, states, U, mask, rbias, drop = _parts(cell, (packed,) + rest)
        _check(op, cell, Spec((packed.shape[0], packed.shape[1], gates * U.shape[0]), packed.dtype), states, U,
               mask, rbias, drop)
        if tuple(gy.shape) != tuple(packed.shape) or len(packed.shape) != 3:
            raise ValueError(f"{op}: the upstream gradient {gy.shape} must have the forward output's shape "
                             f"{packed.shape}")
        u = U.shape[0]
        n, T = packed.shape[0], packed.shape[1]
        if packed.shape[2] != width * u:
            raise ValueError(f"{op}: the forward output {packed.shape} must have {width}*units columns")
        per_step = 4 * u if cell == "gru" else gates * u
        return (n, T * per_step + count * u), ops.result_type(gy.dtype, U.dtype)
    return infer


# -- gradient rules ------------------------------------------------------------------------------------
def _weight_grad(a, b):
    """sum over batch and time of a[n, t]^T b[n, t]: (n, T, p), (n, T, q) -> (p, q)."""
    return bind("rnn_weight_grad", [a, b])


def _weight_grad_infer(attrs, a, b):
    if len(a.shape) != 3 or len(b.shape) != 3 or tuple(a.shape[:2]) != tuple(b.shape[:2]):
        raise ValueError(f"rnn_weight_grad: expected (batch, timesteps, p) and (batch, timesteps, q) with the same "
                         f"batch and timesteps, got {a.shape} and {b.shape}")
    if a.shape[2] is None or b.shape[2] is None or a.shape[1] is None:
        raise ValueError(f"rnn_weight_grad: timesteps and features must be known, got {a.shape} and {b.shape}")
    return (a.shape[2], b.shape[2]), ops.result_type(a.dtype, b.dtype)


def _weight_grad_reference(attrs, a, b):
    return np.einsum("ntp,ntq->pq", a, b)


def _weight_grad_grad(ctx):
    a, b = ctx.inputs
    g = ctx.upstream
    return [bind("matmul", [b, g], transpose_a=False, transpose_b=True),
            bind("matmul", [a, g], transpose_a=False, transpose_b=False)]


def _sequence_matmul_infer(attrs, x, w):
    k = w.shape[1] if attrs.get("transpose_b") else w.shape[0]
    if len(x.shape) != 3 or len(w.shape) != 2 or x.shape[2] != k or x.shape[1] is None or k is None:
        raise ValueError(f"sequence_matmul: expected x (batch, timesteps, k) and a kernel with k = {k} "
                         f"{'columns' if attrs.get('transpose_b') else 'rows'}, got {x.shape} and {w.shape}")
    q = w.shape[0] if attrs.get("transpose_b") else w.shape[1]
    return (x.shape[0], x.shape[1], q), ops.result_type(x.dtype, w.dtype)


def _sequence_matmul_reference(attrs, x, w):
    return x @ (w.T if attrs.get("transpose_b") else w)


def _sequence_matmul_grad(ctx):
    x, w = ctx.inputs
    g = ctx.upstream
    transposed = bool(ctx.attrs.get("transpose_b"))
    dx = bind("sequence_matmul", [g, w], transpose_b=not transposed)
    dw = bind("rnn_weight_grad", [g, x]) if transposed else bind("rnn_weight_grad", [x, g])
    return [dx, dw]


def _sequence_matmul_samples(rng):
    return [([_draw(rng, N, T_SAMPLE, 5), _draw(rng, 5, 4 * UNITS)], {"transpose_b": False}),
            ([_draw(rng, 3, 2, 4), _draw(rng, 6, 4)], {"transpose_b": True})]


def sequence_matmul(x, w, transpose_b=False):
    """x (batch, timesteps, k) @ w (k, q) (or w^T) as one GEMM over batch * timesteps rows."""
    return bind("sequence_matmul", [x, w], transpose_b=bool(transpose_b))


def _weight_grad_samples(rng):
    return [([_draw(rng, N, T_SAMPLE, UNITS), _draw(rng, N, T_SAMPLE, 4 * UNITS)], {}),
            ([_draw(rng, 3, 2, 5), _draw(rng, 3, 2, 3)], {})]


def _steps(flat, T, width):
    return ops.reshape(flat[:, :T * width], (-1, T, width))


def _previous_states(packed, h0, lo, hi):
    """The state before each step: (n, T, hi - lo) from h0 and the packed states."""
    T = packed.shape[1]
    first = ops.expand_dims(h0, 1)
    if T == 1:
        return first
    return ops.concatenate([first, packed[:, :T - 1, lo:hi]], axis=1)


def _recurrent_grads(h_prev, dpre, U, drop, first, gates):
    """The gradients of U's columns of gates first.. first+gates-1 and of their dropout masks,
    for the products (h_prev * drop_k) @ U_k whose gradients are dpre (n, T, gates*u)."""
    if drop is None:
        return _weight_grad(h_prev, dpre), []
    u = U.shape[0]
    dU, ddrop = [], []
    for k in range(first, first + gates):
        dk = dpre[:, :, (k - first) * u:(k - first + 1) * u]
        m = ops.expand_dims(drop[:, k * u:(k + 1) * u], 1)
        dU.append(_weight_grad(ops.multiply(h_prev, m), dk))
        dhm = sequence_matmul(dk, U[:, k * u:(k + 1) * u], transpose_b=True)  # d (h_prev * drop_k)
        ddrop.append(ops.sum(ops.multiply(h_prev, dhm), axis=1))
    return (dU[0] if gates == 1 else ops.concatenate(dU, axis=1)), ddrop


def _drop_grad(parts):
    if not parts:
        return []
    return [parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1)]


def _rnn_grad(ctx):
    xp, (h0,), U, mask, _, drop = _parts("simple_rnn", ctx.inputs)
    T, u = xp.shape[1], U.shape[0]
    flat = bind("simple_rnn_sequence_grad", [ctx.upstream, ctx.output] + list(ctx.inputs[1:]), **ctx.attrs)
    dxp = _steps(flat, T, u)
    h_prev = _previous_states(ctx.output, h0, 0, u)
    dU, ddrop = _recurrent_grads(h_prev, dxp, U, drop, 0, 1)
    return [dxp, flat[:, T * u:], dU, None] + _drop_grad(ddrop)


def _lstm_grad(ctx):
    xp, (h0, c0), U, mask, _, drop = _parts("lstm", ctx.inputs)
    T, u = xp.shape[1], U.shape[0]
    flat = bind("lstm_sequence_grad", [ctx.upstream, ctx.output] + list(ctx.inputs[1:]), **ctx.attrs)
    dxp = _steps(flat, T, 4 * u)
    h_prev = _previous_states(ctx.output, h0, 0, u)
    end = T * 4 * u
    dU, ddrop = _recurrent_grads(h_prev, dxp, U, drop, 0, 4)
    return [dxp, flat[:, end:end + u], flat[:, end + u:], dU, None] + _drop_grad(ddrop)


def _gru_grad(ctx):
    xp, (h0,), U, mask, rbias, drop = _parts("gru", ctx.inputs)
    T, u = xp.shape[1], U.shape[0]
    flat = bind("gru_sequence_grad", [ctx.upstream, ctx.output] + list(ctx.inputs[1:]), **ctx.attrs)
    steps = _steps(flat, T, 4 * u)
    dxp = steps[:, :, :3 * u]
    dzr, drec = steps[:, :, :2 * u], steps[:, :, 3 * u:]
    h_prev = _previous_states(ctx.output, h0, 0, u)
    inner = ops.concatenate([dzr, drec], axis=2)
    if ctx.attrs["reset_after"]:
        dU, ddrop = _recurrent_grads(h_prev, inner, U, drop, 0, 3)
    else:  # the h gate's product is (r h_prev drop_h) @ U_h
        r = ctx.output[:, :, 2 * u:3 * u]
        dU_zr, ddrop = _recurrent_grads(h_prev, dzr, U, drop, 0, 2)
        dU_h, ddrop_h = _recurrent_grads(ops.multiply(r, h_prev), drec, U, drop, 2, 1)
        dU, ddrop = ops.concatenate([dU_zr, dU_h], axis=1), ddrop + ddrop_h
    drbias = ops.sum(inner, axis=(0, 1))
    return [dxp, flat[:, T * 4 * u:], dU, None, drbias] + _drop_grad(ddrop)


# -- samples ------------------------------------------------------------------------------------------------
N, T_SAMPLE, UNITS = 2, 4, 3  # batch 2; the recurrent kernel's first axis (units) is not 2
MASKS = (np.ones((N, T_SAMPLE), bool), np.array([[True, False, True, True], [False, True, True, False]]))


def _draw(rng, *shape, scale=0.6):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _inputs(rng, cell, mask, dropout=False):
    gates, count, _ = CELLS[cell]
    arrays = [_draw(rng, N, T_SAMPLE, gates * UNITS, scale=1.0)]
    arrays += [_draw(rng, N, UNITS) for _ in range(count)]
    arrays += [_draw(rng, UNITS, gates * UNITS), mask]
    if cell == "gru":
        arrays.append(_draw(rng, gates * UNITS))
    if dropout:  # recurrent dropout masks: zeros and 1 / (1 - rate), rate 0.3
        arrays.append(np.where(rng.random((N, gates * UNITS)) < 0.3, 0.0, 1 / 0.7).astype(np.float32))
    return arrays


SAMPLE_ATTRS = {
    "simple_rnn": [{"activation": "tanh"}, {"activation": "sigmoid"}],
    "lstm": [{"activation": "tanh", "recurrent_activation": "sigmoid"},
             {"activation": "tanh", "recurrent_activation": "hard_sigmoid"}],
    "gru": [{"activation": "tanh", "recurrent_activation": "sigmoid", "reset_after": True},
            {"activation": "tanh", "recurrent_activation": "sigmoid", "reset_after": False}],
}
REFERENCES = {"simple_rnn": _rnn_reference, "lstm": _lstm_reference, "gru": _gru_reference}


def _forward_samples(cell):
    def samples(rng):
        cases = [(_inputs(rng, cell, mask), dict(attrs)) for attrs in SAMPLE_ATTRS[cell] for mask in MASKS]
        return cases + [(_inputs(rng, cell, MASKS[1], True), dict(attrs)) for attrs in SAMPLE_ATTRS[cell]]
    return samples


def _backward_samples(cell):
    def samples(rng):
        cases = []
        for attrs in SAMPLE_ATTRS[cell]:
            for mask, dropout in ((MASKS[0], False), (MASKS[1], False), (MASKS[1], True)):
                inputs = _inputs(rng, cell, mask, dropout)
                packed = REFERENCES[cell](attrs, *inputs).astype(np.float32)
                cases.append(([_draw(rng, *packed.shape), packed] + inputs[1:], dict(attrs)))
        return cases
    return samples


# -- numba kernels (generic over sizes; compiled once by kgraph.compiler.lower.numba.kernels) ----------
# The per-step recurrent product h @ U is one BLAS GEMM (single-threaded: the steps are
# sequential and each product is small); the gates are loops over the batch and units.
# Activation codes are ACTIVATIONS' values. The names gemm, blas_get_threads,
# blas_set_threads and array_at come from the backend (numba/blas.py).
gemm = blas_get_threads = blas_set_threads = array_at = None


# Constants are derived from `one` (1 in the arrays' dtype): numba computes float32 values
# combined with a Python float in float64.
@numba_kernel()
def _activate(x, code, one):
    zero = one - one
    if code == 1:  # tanh through one exp: 5x faster than libm's tanhf (measured), error ~1 ulp of 1
        two = one + one
        return two / (one + np.exp(-two * x)) - one
    if code == 2:
        return one / (one + np.exp(-x))
    if code == 3:
        three = one + one + one
        return min(max(x + three, zero), three + three) / (three + three)
    if code == 4:
        return max(x, zero)
    return x


@numba_kernel()
def _derivative(y, code, one):
    """The activation's derivative from its output y."""
    zero = one - one
    if code == 1:
        return one - y * y
    if code == 2:
        return y * (one - y)
    if code == 3:
        return one / (one + one + one + one + one + one) if zero < y < one else zero
    if code == 4:
        return one if y > zero else zero
    return one


@numba_kernel()
def _product(h, U, drop, z, hm, first, gates):
    """z's columns of gates first.. first+gates-1 = h @ U's (one GEMM; z's rows are U's width),
    or with recurrent dropout masks drop (n, G*u), gate k's = (h * drop_k) @ U_k."""
    n, u = h.shape
    G = U.shape[1]
    isz = h.itemsize
    if drop.shape[0] == 0:
        gemm(False, False, n, gates * u, u, h.ctypes.data, u, U.ctypes.data + first * u * isz, G,
             z.ctypes.data + first * u * isz, G, 0.0, isz)
        return
    for k in range(first, first + gates):
        for b in range(n):
            for j in range(u):
                hm[b, j] = h[b, j] * drop[b, k * u + j]
        gemm(False, False, n, u, u, hm.ctypes.data, u, U.ctypes.data + k * u * isz, G,
             z.ctypes.data + k * u * isz, G, 0.0, isz)


@numba_kernel()
def _product_grad(d, W, U, drop, dh, tmp, first, gates):
    """dh += d @ U^T over gates first.. (d the address of (n, gates*u) values of row stride W),
    or with recurrent dropout masks, sum over the gates of (d_k @ U_k^T) * drop_k."""
    n, u = dh.shape
    G = U.shape[1]
    isz = dh.itemsize
    if drop.shape[0] == 0:
        gemm(False, True, n, u, gates * u, d, W, U.ctypes.data + first * u * isz, G, dh.ctypes.data, u, 1.0, isz)
        return
    for k in range(first, first + gates):
        gemm(False, True, n, u, u, d + (k - first) * u * isz, W, U.ctypes.data + k * u * isz, G, tmp.ctypes.data,
             u, 0.0, isz)
        for b in range(n):
            for j in range(u):
                dh[b, j] += tmp[b, j] * drop[b, k * u + j]


@numba_kernel()
def rnn_forward_kernel(xp, h0, U, mask, drop, out, act):
    one = np.ones(1, xp.dtype)[0]
    n, T, u = xp.shape
    h = h0.copy()
    z = np.empty((n, u), xp.dtype)
    hm = np.empty((n, u), xp.dtype)
    saved = blas_get_threads()
    blas_set_threads(1)
    for t in range(T):
        _product(h, U, drop, z, hm, 0, 1)
        for b in range(n):
            x, zr, hb, row = xp[b, t], z[b], h[b], out[b, t]
            if mask[b, t] != 0:
                for j in range(u):
                    hb[j] = _activate(x[j] + zr[j], act, one)
            for j in range(u):
                row[j] = hb[j]
    blas_set_threads(saved)


@numba_kernel()
def rnn_backward_kernel(gy, packed, h0, U, mask, drop, out, act):
    one = np.ones(1, out.dtype)[0]
    zero = one - one
    n, T, u = packed.shape
    dh = np.zeros((n, u), out.dtype)
    tmp = np.empty((n, u), out.dtype)
    W = out.shape[1]
    saved = blas_get_threads()
    blas_set_threads(1)
    for t in range(T - 1, -1, -1):
        for b in range(n):
            g, p, d, dhb = gy[b, t], packed[b, t], out[b, t * u:(t + 1) * u], dh[b]
            if mask[b, t] != 0:
                for j in range(u):
                    d[j] = (dhb[j] + g[j]) * _derivative(p[j], act, one)
                    dhb[j] = zero
            else:
                for j in range(u):
                    d[j] = zero
                    dhb[j] += g[j]
        # dh += dpre @ U^T (added: dh keeps the carried part of masked steps)
        _product_grad(out.ctypes.data + t * u * out.itemsize, W, U, drop, dh, tmp, 0, 1)
    blas_set_threads(saved)
    for b in range(n):
        for j in range(u):
            out[b, T * u + j] = dh[b, j]


@numba_kernel()
def lstm_forward_kernel(xp, h0, c0, U, mask, drop, out, act, ract):
    one = np.ones(1, xp.dtype)[0]
    n, T, G = xp.shape
    u = G // 4
    h = h0.copy()
    c = c0.copy()
    z = np.empty((n, G), xp.dtype)
    hm = np.empty((n, u), xp.dtype)
    saved = blas_get_threads()
    blas_set_threads(1)
    for t in range(T):
        _product(h, U, drop, z, hm, 0, 4)
        for b in range(n):
            x, zr, hb, cb, row = xp[b, t], z[b], h[b], c[b], out[b, t]
            keep = mask[b, t] != 0
            for j in range(u):
                i = _activate(x[j] + zr[j], ract, one)
                f = _activate(x[u + j] + zr[u + j], ract, one)
                g = _activate(x[2 * u + j] + zr[2 * u + j], act, one)
                o = _activate(x[3 * u + j] + zr[3 * u + j], ract, one)
                row[2 * u + j] = i
                row[3 * u + j] = f
                row[4 * u + j] = g
                row[5 * u + j] = o
                if keep:
                    cn = f * cb[j] + i * g
                    cb[j] = cn
                    hb[j] = o * _activate(cn, act, one)
                row[j] = hb[j]
                row[u + j] = cb[j]
    blas_set_threads(saved)


@numba_kernel()
def lstm_backward_kernel(gy, packed, h0, c0, U, mask, drop, out, act, ract):
    one = np.ones(1, out.dtype)[0]
    zero = one - one
    n, T, P = packed.shape
    u = P // 6
    G = 4 * u
    W = out.shape[1]
    dh = np.zeros((n, u), out.dtype)
    dc = np.zeros((n, u), out.dtype)
    tmp = np.empty((n, u), out.dtype)
    saved = blas_get_threads()
    blas_set_threads(1)
    for t in range(T - 1, -1, -1):
        for b in range(n):
            g_, p, d, dhb, dcb = gy[b, t], packed[b, t], out[b, t * G:(t + 1) * G], dh[b], dc[b]
            keep = mask[b, t] != 0
            for j in range(u):
                c_prev = packed[b, t - 1, u + j] if t > 0 else c0[b, j]
                i, f, g, o = p[2 * u + j], p[3 * u + j], p[4 * u + j], p[5 * u + j]
                dh_total = dhb[j] + g_[j]
                dc_total = dcb[j] + g_[u + j]
                tc = _activate(p[u + j], act, one)
                if keep:
                    dhn = dh_total
                    dcn = dc_total + dhn * o * _derivative(tc, act, one)
                    dhb[j] = zero
                    dcb[j] = dcn * f
                else:
                    dhn = zero
                    dcn = zero
                    dhb[j] = dh_total
                    dcb[j] = dc_total
                d[j] = (g_[2 * u + j] + dcn * g) * _derivative(i, ract, one)
                d[u + j] = (g_[3 * u + j] + dcn * c_prev) * _derivative(f, ract, one)
                d[2 * u + j] = (g_[4 * u + j] + dcn * i) * _derivative(g, act, one)
                d[3 * u + j] = (g_[5 * u + j] + dhn * tc) * _derivative(o, ract, one)
        _product_grad(out.ctypes.data + t * G * out.itemsize, W, U, drop, dh, tmp, 0, 4)
    blas_set_threads(saved)
    for b in range(n):
        for j in range(u):
            out[b, T * G + j] = dh[b, j]
            out[b, T * G + u + j] = dc[b, j]


@numba_kernel()
def gru_forward_kernel(xp, h0, U, mask, rbias, drop, out, act, ract, reset_after):
    one = np.ones(1, xp.dtype)[0]
    n, T, G = xp.shape
    u = G // 3
    h = h0.copy()
    z = np.empty((n, G), xp.dtype)
    hm = np.empty((n, u), xp.dtype)
    rh = np.empty((n, u), xp.dtype)
    rec = np.empty((n, u), xp.dtype)
    dropped = drop.shape[0] != 0
    isz = xp.itemsize
    saved = blas_get_threads()
    blas_set_threads(1)
    for t in range(T):
        _product(h, U, drop, z, hm, 0, 3 if reset_after else 2)
        for b in range(n):
            x, zr, hb, row = xp[b, t], z[b], h[b], out[b, t]
            for j in range(u):
                zg = _activate(x[j] + zr[j] + rbias[j], ract, one)
                r = _activate(x[u + j] + zr[u + j] + rbias[u + j], ract, one)
                row[u + j] = zg
                row[2 * u + j] = r
                rh[b, j] = r * hb[j] * drop[b, 2 * u + j] if dropped else r * hb[j]
        if not reset_after:
            gemm(False, False, n, u, u, rh.ctypes.data, u, U.ctypes.data + 2 * u * isz, G, rec.ctypes.data, u,
                 0.0, isz)
        for b in range(n):
            x, zr, hb, row = xp[b, t], z[b], h[b], out[b, t]
            keep = mask[b, t] != 0
            for j in range(u):
                zg, r = row[u + j], row[2 * u + j]
                if reset_after:
                    rc = zr[2 * u + j] + rbias[2 * u + j]
                    hh = _activate(x[2 * u + j] + r * rc, act, one)
                else:
                    rc = rec[b, j] + rbias[2 * u + j]
                    hh = _activate(x[2 * u + j] + rc, act, one)
                row[3 * u + j] = hh
                row[4 * u + j] = rc
                if keep:
                    hb[j] = zg * hb[j] + (one - zg) * hh
                row[j] = hb[j]
    blas_set_threads(saved)


@numba_kernel()
def gru_backward_kernel(gy, packed, h0, U, mask, drop, out, act, ract, reset_after):
    one = np.ones(1, out.dtype)[0]
    zero = one - one
    n, T, P = packed.shape
    u = P // 5
    G = 3 * u
    K = 4 * u
    W = out.shape[1]
    isz = out.itemsize
    dh = np.zeros((n, u), out.dtype)
    drh = np.empty((n, u), out.dtype)
    tmp = np.empty((n, u), out.dtype)
    dropped = drop.shape[0] != 0
    saved = blas_get_threads()
    blas_set_threads(1)
    for t in range(T - 1, -1, -1):
        for b in range(n):
            g_, p, d, dhb = gy[b, t], packed[b, t], out[b, t * K:(t + 1) * K], dh[b]
            keep = mask[b, t] != 0
            for j in range(u):
                h_prev = packed[b, t - 1, j] if t > 0 else h0[b, j]
                zg, r, hh, rc = p[u + j], p[2 * u + j], p[3 * u + j], p[4 * u + j]
                total = dhb[j] + g_[j]
                dhn = total if keep else zero
                dhb[j] = dhn * zg if keep else total
                dpre_h = (g_[3 * u + j] + dhn * (one - zg)) * _derivative(hh, act, one)
                d[u + j] = g_[2 * u + j]  # dr so far (reset_after adds its part below)
                d[j] = (g_[u + j] + dhn * (h_prev - hh)) * _derivative(zg, ract, one)
                d[2 * u + j] = dpre_h
                if reset_after:
                    d[3 * u + j] = g_[4 * u + j] + dpre_h * r
                    d[u + j] = (d[u + j] + dpre_h * rc) * _derivative(r, ract, one)
                else:
                    d[3 * u + j] = g_[4 * u + j] + dpre_h
        if not reset_after:
            # d(r h drop_h) = drec @ U_h^T; then dr and the h_prev part r drop_h d(r h drop_h)
            gemm(False, True, n, u, u, out.ctypes.data + (t * K + 3 * u) * isz, W, U.ctypes.data + 2 * u * isz, G,
                 drh.ctypes.data, u, 0.0, isz)
            for b in range(n):
                d, p = out[b, t * K:(t + 1) * K], packed[b, t]
                for j in range(u):
                    h_prev = packed[b, t - 1, j] if t > 0 else h0[b, j]
                    r = p[2 * u + j]
                    g_h = drh[b, j] * drop[b, 2 * u + j] if dropped else drh[b, j]
                    d[u + j] = (d[u + j] + g_h * h_prev) * _derivative(r, ract, one)
                    dh[b, j] += g_h * r
            _product_grad(out.ctypes.data + t * K * isz, W, U, drop, dh, tmp, 0, 2)
        else:
            # dh += [dz, dr] @ U_zr^T + drec @ U_h^T (each gate's part times its dropout mask)
            _product_grad(out.ctypes.data + t * K * isz, W, U, drop, dh, tmp, 0, 2)
            _product_grad(out.ctypes.data + (t * K + 3 * u) * isz, W, U, drop, dh, tmp, 2, 1)
    blas_set_threads(saved)
    for b in range(n):
        for j in range(u):
            out[b, T * K + j] = dh[b, j]


# -- entry points (C-callable: addresses and sizes) ---------------------------------------------------------
# dp is the address of the recurrent dropout masks (n, G*u), 0 without recurrent dropout
# (the kernels then get an empty array).
@numba_entry(10)
def rnn_forward(itemsize, xp, h0, up, mp, dp, op, n, T, u_act):
    u, act = u_act // 8, u_act % 8
    nd = n if dp != 0 else 0
    if itemsize == 4:
        rnn_forward_kernel(array_at(xp, (n, T, u), np.float32), array_at(h0, (n, u), np.float32),
                           array_at(up, (u, u), np.float32), array_at(mp, (n, T), np.uint8),
                           array_at(dp, (nd, u), np.float32), array_at(op, (n, T, u), np.float32), act)
    else:
        rnn_forward_kernel(array_at(xp, (n, T, u), np.float64), array_at(h0, (n, u), np.float64),
                           array_at(up, (u, u), np.float64), array_at(mp, (n, T), np.uint8),
                           array_at(dp, (nd, u), np.float64), array_at(op, (n, T, u), np.float64), act)


@numba_entry(11)
def rnn_backward(itemsize, gp, pp, h0, up, mp, dp, op, n, T, u_act):
    u, act = u_act // 8, u_act % 8
    nd = n if dp != 0 else 0
    if itemsize == 4:
        rnn_backward_kernel(array_at(gp, (n, T, u), np.float32), array_at(pp, (n, T, u), np.float32),
                            array_at(h0, (n, u), np.float32), array_at(up, (u, u), np.float32),
                            array_at(mp, (n, T), np.uint8), array_at(dp, (nd, u), np.float32),
                            array_at(op, (n, T * u + u), np.float32), act)
    else:
        rnn_backward_kernel(array_at(gp, (n, T, u), np.float64), array_at(pp, (n, T, u), np.float64),
                            array_at(h0, (n, u), np.float64), array_at(up, (u, u), np.float64),
                            array_at(mp, (n, T), np.uint8), array_at(dp, (nd, u), np.float64),
                            array_at(op, (n, T * u + u), np.float64), act)


@numba_entry(12)
def lstm_forward(itemsize, xp, h0, c0, up, mp, dp, op, n, T, u, acts):
    act, ract = acts // 8, acts % 8
    nd = n if dp != 0 else 0
    if itemsize == 4:
        lstm_forward_kernel(array_at(xp, (n, T, 4 * u), np.float32), array_at(h0, (n, u), np.float32),
                            array_at(c0, (n, u), np.float32), array_at(up, (u, 4 * u), np.float32),
                            array_at(mp, (n, T), np.uint8), array_at(dp, (nd, 4 * u), np.float32),
                            array_at(op, (n, T, 6 * u), np.float32), act, ract)
    else:
        lstm_forward_kernel(array_at(xp, (n, T, 4 * u), np.float64), array_at(h0, (n, u), np.float64),
                            array_at(c0, (n, u), np.float64), array_at(up, (u, 4 * u), np.float64),
                            array_at(mp, (n, T), np.uint8), array_at(dp, (nd, 4 * u), np.float64),
                            array_at(op, (n, T, 6 * u), np.float64), act, ract)


@numba_entry(13)
def lstm_backward(itemsize, gp, pp, h0, c0, up, mp, dp, op, n, T, u, acts):
    act, ract = acts // 8, acts % 8
    nd = n if dp != 0 else 0
    if itemsize == 4:
        lstm_backward_kernel(array_at(gp, (n, T, 6 * u), np.float32), array_at(pp, (n, T, 6 * u), np.float32),
                             array_at(h0, (n, u), np.float32), array_at(c0, (n, u), np.float32),
                             array_at(up, (u, 4 * u), np.float32), array_at(mp, (n, T), np.uint8),
                             array_at(dp, (nd, 4 * u), np.float32),
                             array_at(op, (n, T * 4 * u + 2 * u), np.float32), act, ract)
    else:
        lstm_backward_kernel(array_at(gp, (n, T, 6 * u), np.float64), array_at(pp, (n, T, 6 * u), np.float64),
                             array_at(h0, (n, u), np.float64), array_at(c0, (n, u), np.float64),
                             array_at(up, (u, 4 * u), np.float64), array_at(mp, (n, T), np.uint8),
                             array_at(dp, (nd, 4 * u), np.float64),
                             array_at(op, (n, T * 4 * u + 2 * u), np.float64), act, ract)


@numba_entry(12)
def gru_forward(itemsize, xp, h0, up, mp, rp, dp, op, n, T, u, acts):
    act, ract, reset_after = acts // 64, (acts // 8) % 8, acts % 8 != 0
    nd = n if dp != 0 else 0
    if itemsize == 4:
        gru_forward_kernel(array_at(xp, (n, T, 3 * u), np.float32), array_at(h0, (n, u), np.float32),
                           array_at(up, (u, 3 * u), np.float32), array_at(mp, (n, T), np.uint8),
                           array_at(rp, (3 * u,), np.float32), array_at(dp, (nd, 3 * u), np.float32),
                           array_at(op, (n, T, 5 * u), np.float32), act, ract, reset_after)
    else:
        gru_forward_kernel(array_at(xp, (n, T, 3 * u), np.float64), array_at(h0, (n, u), np.float64),
                           array_at(up, (u, 3 * u), np.float64), array_at(mp, (n, T), np.uint8),
                           array_at(rp, (3 * u,), np.float64), array_at(dp, (nd, 3 * u), np.float64),
                           array_at(op, (n, T, 5 * u), np.float64), act, ract, reset_after)


@numba_entry(12)
def gru_backward(itemsize, gp, pp, h0, up, mp, dp, op, n, T, u, acts):
    act, ract, reset_after = acts // 64, (acts // 8) % 8, acts % 8 != 0
    nd = n if dp != 0 else 0
    if itemsize == 4:
        gru_backward_kernel(array_at(gp, (n, T, 5 * u), np.float32), array_at(pp, (n, T, 5 * u), np.float32),
                            array_at(h0, (n, u), np.float32), array_at(up, (u, 3 * u), np.float32),
                            array_at(mp, (n, T), np.uint8), array_at(dp, (nd, 3 * u), np.float32),
                            array_at(op, (n, T * 4 * u + u), np.float32), act, ract, reset_after)
    else:
        gru_backward_kernel(array_at(gp, (n, T, 5 * u), np.float64), array_at(pp, (n, T, 5 * u), np.float64),
                            array_at(h0, (n, u), np.float64), array_at(up, (u, 3 * u), np.float64),
                            array_at(mp, (n, T), np.uint8), array_at(dp, (nd, 3 * u), np.float64),
                            array_at(op, (n, T * 4 * u + u), np.float64), act, ract, reset_after)


def _numba_weight_grad(node, inputs):
    """A^T B over the flattened (batch x time) rows: kgraph.ops.matmul's threaded GEMM."""
    import numba

    a, b = inputs
    p, q = a.shape[2], b.shape[2]
    threads = int(numba.config.NUMBA_NUM_THREADS)
    return [f"K = a0.shape[0] * {a.shape[1]}",
            "if K == 0:",
            "    out.fill(0)",
            "    return",
            f"gemm_threads({_itemsize(node)}, 1, 0, {p}, {q}, K, a0.ctypes.data, {p}, a1.ctypes.data, {q}, "
            f"out.ctypes.data, {q}, {threads})"]


_numba_weight_grad.kernels = "kgraph.ops.matmul"


def _numba_sequence_matmul(node, inputs):
    """x (rows, D) @ w (or w^T) over the flattened (batch x time) rows: the threaded GEMM."""
    import numba

    x = inputs[0]
    d, q = x.shape[2], node.shape[2]
    transpose_b = int(bool(node.attrs.get("transpose_b")))
    threads = int(numba.config.NUMBA_NUM_THREADS)
    return [f"K = a0.shape[0] * {x.shape[1]}",
            "if K == 0:",
            "    return",
            f"gemm_threads({_itemsize(node)}, 0, {transpose_b}, K, {q}, {d}, a0.ctypes.data, {d}, a1.ctypes.data, "
            f"{d if transpose_b else q}, out.ctypes.data, {q}, {threads})"]


_numba_sequence_matmul.kernels = "kgraph.ops.matmul"


# -- templates: the kernel body of a group (every size a literal except the batch n) --------------------
def _itemsize(node):
    if node.dtype not in ("float32", "float64"):
        raise NotImplementedError(f"numba backend: {node.op} supports float32 and float64, not {node.dtype}")
    return np.dtype(node.dtype).itemsize


def _codes(attrs, cell):
    act = ACTIVATIONS[attrs["activation"]]
    if cell == "simple_rnn":
        return act
    ract = ACTIVATIONS[attrs["recurrent_activation"]]
    if cell == "lstm":
        return act * 8 + ract
    return act * 64 + ract * 8 + int(bool(attrs["reset_after"]))


def _call(entry, node, arrays, T, u, cell):
    pointers = ", ".join("0" if k is None else f"a{k}.ctypes.data" for k in arrays)
    if cell == "simple_rnn":
        sizes = f"n, {T}, {u * 8 + _codes(node.attrs, cell)}"
    else:
        sizes = f"n, {T}, {u}, {_codes(node.attrs, cell)}"
    return ["n = a0.shape[0]", "if n == 0:", "    return",
            f"{entry}({_itemsize(node)}, {pointers}, out.ctypes.data, {sizes})"]


def _template(entry, cell, backward):
    def template(node, inputs):
        count = CELLS[cell][1]
        first = 2 if backward else 1  # the states' position
        u = inputs[first + count].shape[0]
        fixed = first + count + 2 + (1 if cell == "gru" else 0)  # the inputs before the dropout masks
        drop = fixed if len(inputs) > fixed else None
        # the entry's arrays: the fixed inputs (the backward skips gru's rbias), then the dropout masks or 0
        arrays = [k for k in range(fixed) if not (backward and cell == "gru" and k == fixed - 1)] + [drop]
        return _call(entry, node, arrays, inputs[0].shape[1], u, cell)
    template.kernels = "kgraph.ops.recurrent"
    return template


# -- match_batch: a stateful layer's states (fixed batch) in a graph whose batch is None ----------------
def _match_batch_infer(attrs, state, like):
    if not state.shape or not like.shape:
        raise ValueError(f"{attrs.get('layer', 'match_batch')}: expected a state and a value with a batch "
                         f"dimension, got shapes {state.shape} and {like.shape}")
    k, n = state.shape[0], like.shape[0]
    if k is not None and n is not None and k != n:
        raise ValueError(f"{attrs.get('layer', 'match_batch')}: the batch size must be {k} (the size its states "
                         f"were built with), got inputs of batch size {n}")
    return (n,) + tuple(state.shape[1:]), state.dtype


def _match_batch_reference(attrs, state, like):
    if state.shape[0] != like.shape[0]:
        raise ValueError(f"{attrs.get('layer', 'match_batch')}: the batch size must be {state.shape[0]} (the size "
                         f"its states were built with), got inputs of batch size {like.shape[0]}")
    return state.copy()


def _match_batch_grad(ctx):
    state = ctx.inputs[0]
    g = ctx.upstream
    k = state.shape[0]
    return [g if k is None or g.shape[0] == k else g[0:k], None]


def _numba_match_batch(node, inputs):
    # the memory plan sizes `out` by the run-time batch; a differing one must not be copied
    message = f"{node.attrs.get('layer', 'match_batch')}: the batch size must equal the states' batch size " \
              f"({inputs[0].shape[0]})"
    colons = ", ".join([":"] * len(node.shape))
    return ["if a1.shape[0] != a0.shape[0]:", f"    raise ValueError({message!r})", f"out[{colons}] = a0"]


def match_batch(state, like, layer="match_batch"):
    """`state` (k, ...), a value of fixed batch size k, as a value of `like`'s batch dimension
    (None in a compiled graph): the compiled step checks that the batch it is fed is k and
    raises otherwise. Stateful recurrent layers read their state variables through it."""
    return bind("match_batch", [state, like], layer=layer)


def _match_batch_samples(rng):
    return [([_draw(rng, N, UNITS), _draw(rng, N, T_SAMPLE)], {"layer": "sample"}),
            ([_draw(rng, N, T_SAMPLE, UNITS), _draw(rng, N, 1)], {"layer": "sample"})]


# -- registration ---------------------------------------------------------------------------------------
_FORWARD = {"simple_rnn": (_rnn_reference, _rnn_grad), "lstm": (_lstm_reference, _lstm_grad),
            "gru": (_gru_reference, _gru_grad)}
_BACKWARD = {"simple_rnn": _rnn_grad_reference, "lstm": _lstm_grad_reference, "gru": _gru_grad_reference}
_ENTRIES = {"simple_rnn": ("rnn_forward", "rnn_backward"), "lstm": ("lstm_forward", "lstm_backward"),
            "gru": ("gru_forward", "gru_backward")}
NUMBA_TEMPLATES = {"rnn_weight_grad": _numba_weight_grad, "sequence_matmul": _numba_sequence_matmul,
                   "match_batch": _numba_match_batch}
register(OpDef("match_batch", KERNEL, _match_batch_infer, _match_batch_reference, grad=_match_batch_grad,
               samples=_match_batch_samples,
               doc="A stateful layer's state (k, ...) as a value of the second input's batch dimension; the "
                   "compiled step raises unless that batch is k (attr layer: the name its error gives)."))
register(OpDef("sequence_matmul", KERNEL, _sequence_matmul_infer, _sequence_matmul_reference,
               grad=_sequence_matmul_grad, samples=_sequence_matmul_samples,
               doc="x (n, T, k) @ w (k, q) (w^T with transpose_b) as one GEMM over the n*T rows: the input "
                   "projection of the recurrent layers (its kernel gradient is rnn_weight_grad)."))
register(OpDef("rnn_weight_grad", KERNEL, _weight_grad_infer, _weight_grad_reference, grad=_weight_grad_grad,
               samples=_weight_grad_samples,
               doc="sum over batch and time of a[n, t]^T b[n, t]: (n, T, p), (n, T, q) -> (p, q); one GEMM "
                   "over the n*T rows (the recurrent kernels' gradients)."))
for _cell in CELLS:
    _reference, _grad = _FORWARD[_cell]
    register(OpDef(f"{_cell}_sequence", KERNEL, _forward_infer(_cell), _reference, grad=_grad,
                   samples=_forward_samples(_cell),
                   doc=f"The {_cell} recurrence over every timestep (see kgraph/ops/recurrent.py): inputs x_proj, "
                       "initial states, recurrent kernel, bool mask (and gru's recurrent bias); attrs "
                       "activation, recurrent_activation, reset_after (gru)."))
    register(OpDef(f"{_cell}_sequence_grad", KERNEL, _backward_infer(_cell), _BACKWARD[_cell],
                   differentiable=False, samples=_backward_samples(_cell),
                   doc=f"Backpropagation through time of {_cell}_sequence: pre-activation gradients per step, "
                       "then the initial states' gradients."))
    NUMBA_TEMPLATES[f"{_cell}_sequence"] = _template(_ENTRIES[_cell][0], _cell, False)
    NUMBA_TEMPLATES[f"{_cell}_sequence_grad"] = _template(_ENTRIES[_cell][1], _cell, True)
