"""ONNX entries of the fused attention ops (kgraph/ops/attention.py), merged into ONNX_OPS.

ONNX has no attention op before opset 23, so each op is written out as its unfused math:
Transpose to (batch, heads, time, depth), MatMul, Mul by the scale, Where for the mask
(a large negative score, so a row with no allowed key softmaxes to the uniform row),
Softmax, MatMul. Grouped key/value heads are repeated with Expand. The backward op
exports the same way (MatMuls of the recomputed P), packed as kgraph packs it.
"""

from __future__ import annotations

import numpy as np

_HIDDEN = -1e30  # a masked score: exp underflows to 0, and a fully masked row stays finite


class _Attention:
    """The shared part of both ops: P (B, H, Tq, Tk), the rows' allowed flag, heads-first q, k, v."""

    def __init__(self, e, node, q, k, v, mask):
        self.e, self.dtype = e, node.dtype
        _, self.Tq, self.H, self.D = q.shape
        _, self.Tk, self.Hk, self.Dv = v.shape
        attrs = node.attrs
        self.q = self.heads_first(e.cast(q, self.dtype))  # (B, H, Tq, D)
        self.k = self.heads_first(self.repeat(e.cast(k, self.dtype), self.D))  # (B, H, Tk, D)
        self.v = self.heads_first(self.repeat(e.cast(v, self.dtype), self.Dv))  # (B, H, Tk, Dv)
        self.scale = e.const(np.asarray(attrs["scale"]), self.dtype)
        scores = self.op("Mul", self.op("MatMul", self.q, self.transposed(self.k)), self.scale)
        allowed = None if mask is None else e.cast(mask, "bool")
        if attrs.get("causal"):
            causal = e.const(np.tri(self.Tq, self.Tk, 0, dtype=bool), "bool")
            allowed = causal if allowed is None else self.op("And", allowed, causal)
        self.allowed = allowed
        if allowed is not None:
            scores = self.op("Where", allowed, scores, e.const(np.asarray(_HIDDEN), self.dtype))
        p = e.op("Softmax", [scores], axis=-1)
        self.rows = None  # (B|1, H|1, Tq|1, 1): whether a row has an allowed key
        if allowed is not None:
            count = e.op("ReduceSum", [e.cast_name(allowed, self.dtype), e.ints([-1])], keepdims=1)
            self.rows = self.op("Greater", count, e.const(np.asarray(0.0), self.dtype))
            if attrs.get("empty_rows", "uniform") == "zero":
                p = self.op("Where", allowed, p, e.const(np.asarray(0.0), self.dtype))
        self.p = p

    def op(self, name, *inputs, **attrs):
        return self.e.op(name, list(inputs), **attrs)

    def heads_first(self, x):
        return self.op("Transpose", x, perm=[0, 2, 1, 3])

    def transposed(self, x):
        return self.op("Transpose", x, perm=[0, 1, 3, 2])

    def repeat(self, x, depth):
        """(B, T, Hk, d) -> (B, T, H, d), each key/value head repeated H // Hk times."""
        r = self.H // self.Hk
        if r == 1:
            return x
        x = self.op("Unsqueeze", x, self.e.ints([3]))
        x = self.op("Expand", x, self.e.ints([1, self.Tk, self.Hk, r, depth]))
        return self.op("Reshape", x, self.e.ints([0, self.Tk, self.H, depth]))

    def flat_time_first(self, x, heads, depth):
        """(B, H, T, d) -> (B, T * heads * d), summing groups of query heads down to `heads`."""
        x = self.heads_first(x)  # (B, T, H, d)
        if heads != self.H:
            T = self.Tk
            x = self.op("Reshape", x, self.e.ints([0, T, heads, self.H // heads, depth]))
            x = self.e.op("ReduceSum", [x, self.e.ints([3])], keepdims=0)
        return self.op("Reshape", x, self.e.ints([0, -1]))


def _attention(e, node, q, k, v, mask=None):
    a = _Attention(e, node, q, k, v, mask)
    return a.heads_first(a.op("MatMul", a.p, a.v))


def _attention_grad(e, node, gy, q, k, v, mask=None):
    a = _Attention(e, node, q, k, v, mask)
    g = a.heads_first(e.cast(gy, node.dtype))  # (B, H, Tq, Dv)
    dp = a.op("MatMul", g, a.transposed(a.v))
    inner = e.op("ReduceSum", [a.op("Mul", a.p, dp), e.ints([-1])], keepdims=1)
    ds = a.op("Mul", a.op("Mul", a.p, a.op("Sub", dp, inner)), a.scale)
    if a.rows is not None:  # a row with no allowed key has no gradient
        ds = a.op("Where", a.rows, ds, e.const(np.asarray(0.0), node.dtype))
    dq = a.op("Reshape", a.heads_first(a.op("MatMul", ds, a.k)), e.ints([0, -1]))
    dk = a.flat_time_first(a.op("MatMul", a.transposed(ds), a.q), a.Hk, a.D)
    dv = a.flat_time_first(a.op("MatMul", a.transposed(a.p), g), a.Hk, a.Dv)
    return a.op("Concat", dq, dk, dv, axis=1)


ONNX_ATTENTION_OPS = {"attention": _attention, "attention_grad": _attention_grad}
