"""ONNX entries of the recurrence ops (kgraph/ops/recurrent.py), merged into ONNX_OPS.

The number of timesteps is static in a kgraph graph, so each op is written out one step
at a time (MatMul, gate activations, Where for the mask), exactly the formulas of the op's
numpy reference: the packed per-step output of the forward ops (state and gates, which
ONNX's LSTM/GRU/RNN ops do not expose) and the backward ops' BPTT all export. The graph
has a few dozen nodes per timestep.
"""

from __future__ import annotations


class _Step:
    """Small helpers over an Emitter for one node of one dtype."""

    def __init__(self, e, dtype):
        self.e, self.dtype = e, dtype

    def c(self, value):
        return self.e.const(value, self.dtype)

    def op(self, name, *inputs, **attrs):
        return self.e.op(name, list(inputs), **attrs)

    def cols(self, x, start, stop, axis=1):
        return self.op("Slice", x, self.e.ints([start]), self.e.ints([stop]), self.e.ints([axis]))

    def step(self, x, t):
        """x[:, t] of an (n, T, ...) value."""
        return self.op("Squeeze", self.cols(x, t, t + 1), self.e.ints([1]))

    def add(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = self.op("Add", out, x)
        return out

    def mul(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = self.op("Mul", out, x)
        return out

    def sub(self, a, b):
        return self.op("Sub", a, b)

    def act(self, name, x):
        if name == "tanh":
            return self.op("Tanh", x)
        if name == "sigmoid":
            return self.op("Sigmoid", x)
        if name == "relu":
            return self.op("Relu", x)
        if name == "hard_sigmoid":  # Keras's relu6(x + 3) / 6
            return self.op("Div", self.op("Clip", self.add(x, self.c(3)), self.c(0), self.c(6)), self.c(6))
        return x

    def dact(self, name, y):
        """The activation's derivative from its output."""
        if name == "tanh":
            return self.sub(self.c(1), self.mul(y, y))
        if name == "sigmoid":
            return self.mul(y, self.sub(self.c(1), y))
        if name == "relu":
            return self.op("Cast", self.op("Greater", y, self.c(0)), to=self._onnx_dtype())
        if name == "hard_sigmoid":
            inside = self.op("And", self.op("Greater", y, self.c(0)), self.op("Less", y, self.c(1)))
            return self.mul(self.op("Cast", inside, to=self._onnx_dtype()), self.c(1.0 / 6.0))
        return self.c(1)

    def _onnx_dtype(self):
        from kgraph.exporters.onnx import onnx_dtype

        return onnx_dtype(self.dtype)

    def where(self, keep, a, b):
        return self.op("Where", keep, a, b)

    def zeros_like(self, x):
        return self.mul(x, self.c(0))

    def concat(self, xs, axis):
        return xs[0] if len(xs) == 1 else self.op("Concat", *xs, axis=axis)

    def stack_steps(self, steps):
        return self.concat([self.op("Unsqueeze", s, self.e.ints([1])) for s in steps], axis=1)

    def gate_mask(self, drop, k, u):
        """Gate k's recurrent dropout mask (n, u), None without recurrent dropout."""
        return None if drop is None else self.cols(drop, k * u, (k + 1) * u)

    def rec(self, h, U, drop, first, gates, u):
        """The recurrent product of gates first..: (h * drop_k) @ U_k per gate (h @ U's columns without masks)."""
        if drop is None:
            return self.op("MatMul", h, self.cols(U, first * u, (first + gates) * u))
        return self.concat([self.op("MatMul", self.mul(h, self.gate_mask(drop, k, u)), self.cols(U, k * u, (k + 1) * u))
                            for k in range(first, first + gates)], axis=1)

    def rec_grad(self, d, U, drop, first, gates, u):
        """h's gradient through rec: sum over the gates of (d_k @ U_k^T) * drop_k."""
        if drop is None:
            return self.op("MatMul", d, self.op("Transpose", self.cols(U, first * u, (first + gates) * u),
                                                perm=[1, 0]))
        parts = [self.mul(self.op("MatMul", self.cols(d, (k - first) * u, (k - first + 1) * u),
                                  self.op("Transpose", self.cols(U, k * u, (k + 1) * u), perm=[1, 0])),
                          self.gate_mask(drop, k, u)) for k in range(first, first + gates)]
        return self.add(*parts)


def _setup(e, node, values, float_indices):
    s = _Step(e, node.dtype)
    names = [None if v is None else e.cast(v, node.dtype) if i in float_indices else v.name
             for i, v in enumerate(values)]
    return s, names


# -- forward ops ---------------------------------------------------------------------------------------
def _simple_rnn(e, node, xp, h0, U, mask, drop=None):
    s, (xp, h, U, mask, drop) = _setup(e, node, (xp, h0, U, mask, drop), (0, 1, 2, 4))
    T, u = node.shape[1], node.shape[2]
    act = node.attrs["activation"]
    outs = []
    for t in range(T):
        hn = s.act(act, s.add(s.step(xp, t), s.rec(h, U, drop, 0, 1, u)))
        h = s.where(s.cols(mask, t, t + 1), hn, h)
        outs.append(h)
    return s.stack_steps(outs)


def _lstm(e, node, xp, h0, c0, U, mask, drop=None):
    s, (xp, h, c, U, mask, drop) = _setup(e, node, (xp, h0, c0, U, mask, drop), (0, 1, 2, 3, 5))
    T, u = node.shape[1], node.shape[2] // 6
    act, ract = node.attrs["activation"], node.attrs["recurrent_activation"]
    outs = []
    for t in range(T):
        z = s.add(s.step(xp, t), s.rec(h, U, drop, 0, 4, u))
        i, f = s.act(ract, s.cols(z, 0, u)), s.act(ract, s.cols(z, u, 2 * u))
        g, o = s.act(act, s.cols(z, 2 * u, 3 * u)), s.act(ract, s.cols(z, 3 * u, 4 * u))
        cn = s.add(s.mul(f, c), s.mul(i, g))
        hn = s.mul(o, s.act(act, cn))
        keep = s.cols(mask, t, t + 1)
        h, c = s.where(keep, hn, h), s.where(keep, cn, c)
        outs.append(s.concat([h, c, i, f, g, o], axis=1))
    return s.stack_steps(outs)


def _gru(e, node, xp, h0, U, mask, rbias, drop=None):
    s, (xp, h, U, mask, rbias, drop) = _setup(e, node, (xp, h0, U, mask, rbias, drop), (0, 1, 2, 4, 5))
    T, u = node.shape[1], node.shape[2] // 5
    act, ract = node.attrs["activation"], node.attrs["recurrent_activation"]
    b_zr, b_h = s.cols(rbias, 0, 2 * u, axis=0), s.cols(rbias, 2 * u, 3 * u, axis=0)
    outs = []
    for t in range(T):
        x = s.step(xp, t)
        inner = s.add(s.rec(h, U, drop, 0, 2, u), b_zr)
        z = s.act(ract, s.add(s.cols(x, 0, u), s.cols(inner, 0, u)))
        r = s.act(ract, s.add(s.cols(x, u, 2 * u), s.cols(inner, u, 2 * u)))
        if node.attrs["reset_after"]:
            rec = s.add(s.rec(h, U, drop, 2, 1, u), b_h)
            hh = s.act(act, s.add(s.cols(x, 2 * u, 3 * u), s.mul(r, rec)))
        else:
            rec = s.add(s.rec(s.mul(r, h), U, drop, 2, 1, u), b_h)
            hh = s.act(act, s.add(s.cols(x, 2 * u, 3 * u), rec))
        hn = s.add(s.mul(z, h), s.mul(s.sub(s.c(1), z), hh))
        h = s.where(s.cols(mask, t, t + 1), hn, h)
        outs.append(s.concat([h, z, r, hh, rec], axis=1))
    return s.stack_steps(outs)


# -- backward ops (BPTT) ------------------------------------------------------------------------------------
def _previous(s, packed, h0, t, lo, hi):
    return h0 if t == 0 else s.cols(s.step(packed, t - 1), lo, hi)


def _simple_rnn_grad(e, node, gy, packed, h0, U, mask, drop=None):
    u = U.shape[0]
    s, (gy, packed, h0, U, mask, drop) = _setup(e, node, (gy, packed, h0, U, mask, drop), (0, 1, 2, 3, 5))
    T = (node.shape[1] - u) // u
    act = node.attrs["activation"]
    dh = s.zeros_like(h0)
    steps = [None] * T
    for t in reversed(range(T)):
        keep = s.cols(mask, t, t + 1)
        total = s.add(dh, s.step(gy, t))
        zero = s.zeros_like(total)
        dpre = s.mul(s.where(keep, total, zero), s.dact(act, s.step(packed, t)))
        steps[t] = dpre
        dh = s.add(s.rec_grad(dpre, U, drop, 0, 1, u), s.where(keep, zero, total))
    return s.concat(steps + [dh], axis=1)


def _lstm_grad(e, node, gy, packed, h0, c0, U, mask, drop=None):
    u = U.shape[0]
    s, (gy, packed, h0, c0, U, mask, drop) = _setup(e, node, (gy, packed, h0, c0, U, mask, drop), (0, 1, 2, 3, 4, 6))
    T = (node.shape[1] - 2 * u) // (4 * u)
    act, ract = node.attrs["activation"], node.attrs["recurrent_activation"]
    dh, dc = s.zeros_like(h0), s.zeros_like(c0)
    steps = [None] * T
    for t in reversed(range(T)):
        keep = s.cols(mask, t, t + 1)
        p, g = s.step(packed, t), s.step(gy, t)
        c, i, f, gg, o = (s.cols(p, k * u, (k + 1) * u) for k in range(1, 6))
        gys = [s.cols(g, k * u, (k + 1) * u) for k in range(6)]
        dh_total, dc_total = s.add(dh, gys[0]), s.add(dc, gys[1])
        zero = s.zeros_like(dh_total)
        dhn = s.where(keep, dh_total, zero)
        tc = s.act(act, c)
        dcn = s.add(s.where(keep, dc_total, zero), s.mul(dhn, o, s.dact(act, tc)))
        c_prev = _previous(s, packed, c0, t, u, 2 * u)
        di = s.mul(s.add(gys[2], s.mul(dcn, gg)), s.dact(ract, i))
        df = s.mul(s.add(gys[3], s.mul(dcn, c_prev)), s.dact(ract, f))
        dg = s.mul(s.add(gys[4], s.mul(dcn, i)), s.dact(act, gg))
        do = s.mul(s.add(gys[5], s.mul(dhn, tc)), s.dact(ract, o))
        dpre = s.concat([di, df, dg, do], axis=1)
        steps[t] = dpre
        dh = s.add(s.rec_grad(dpre, U, drop, 0, 4, u), s.where(keep, zero, dh_total))
        dc = s.add(s.mul(dcn, f), s.where(keep, zero, dc_total))
    return s.concat(steps + [dh, dc], axis=1)


def _gru_grad(e, node, gy, packed, h0, U, mask, rbias, drop=None):
    u = U.shape[0]
    s, (gy, packed, h0, U, mask, drop) = _setup(e, node, (gy, packed, h0, U, mask, drop), (0, 1, 2, 3, 5))
    T = (node.shape[1] - u) // (4 * u)
    act, ract = node.attrs["activation"], node.attrs["recurrent_activation"]
    reset_after = node.attrs["reset_after"]
    U_hT = s.op("Transpose", s.cols(U, 2 * u, 3 * u), perm=[1, 0])
    dh = s.zeros_like(h0)
    steps = [None] * T
    for t in reversed(range(T)):
        keep = s.cols(mask, t, t + 1)
        p, g = s.step(packed, t), s.step(gy, t)
        z, r, hh, rec = (s.cols(p, k * u, (k + 1) * u) for k in range(1, 5))
        gys = [s.cols(g, k * u, (k + 1) * u) for k in range(5)]
        h_prev = _previous(s, packed, h0, t, 0, u)
        total = s.add(dh, gys[0])
        zero = s.zeros_like(total)
        dhn = s.where(keep, total, zero)
        dh = s.add(s.where(keep, zero, total), s.mul(dhn, z))
        dpre_h = s.mul(s.add(gys[3], s.mul(dhn, s.sub(s.c(1), z))), s.dact(act, hh))
        dz = s.add(gys[1], s.mul(dhn, s.sub(h_prev, hh)))
        if reset_after:
            drec = s.add(gys[4], s.mul(dpre_h, r))
            dr = s.add(gys[2], s.mul(dpre_h, rec))
        else:
            drec = s.add(gys[4], dpre_h)
            drh = s.op("MatMul", drec, U_hT)
            if drop is not None:
                drh = s.mul(drh, s.gate_mask(drop, 2, u))
            dr = s.add(gys[2], s.mul(drh, h_prev))
            dh = s.add(dh, s.mul(drh, r))
        dpre_z, dpre_r = s.mul(dz, s.dact(ract, z)), s.mul(dr, s.dact(ract, r))
        steps[t] = s.concat([dpre_z, dpre_r, dpre_h, drec], axis=1)
        dh = s.add(dh, s.rec_grad(s.concat([dpre_z, dpre_r], axis=1), U, drop, 0, 2, u))
        if reset_after:
            dh = s.add(dh, s.rec_grad(drec, U, drop, 2, 1, u))
    return s.concat(steps + [dh], axis=1)


def _rnn_weight_grad(e, node, a, b):
    p, q = a.shape[2], b.shape[2]
    a2 = e.op("Reshape", [e.cast(a, node.dtype), e.ints([-1, p])])
    b2 = e.op("Reshape", [e.cast(b, node.dtype), e.ints([-1, q])])
    return e.op("MatMul", [e.op("Transpose", [a2], perm=[1, 0]), b2])


def _sequence_matmul(e, node, x, w):
    w = e.cast(w, node.dtype)
    if node.attrs.get("transpose_b"):
        w = e.op("Transpose", [w], perm=[1, 0])
    return e.op("MatMul", [e.cast(x, node.dtype), w])


def _match_batch(e, node, state, like):
    # ONNX has no run-time error: the state is used as it is (its batch is the exported one)
    return e.op("Identity", [state.name])


ONNX_RECURRENT_OPS = {
    "match_batch": _match_batch,
    "sequence_matmul": _sequence_matmul,
    "rnn_weight_grad": _rnn_weight_grad,
    "simple_rnn_sequence": _simple_rnn,
    "lstm_sequence": _lstm,
    "gru_sequence": _gru,
    "simple_rnn_sequence_grad": _simple_rnn_grad,
    "lstm_sequence_grad": _lstm_grad,
    "gru_sequence_grad": _gru_grad,
}
