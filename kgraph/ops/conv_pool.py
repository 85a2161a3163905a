"""A convolution with a max-pooling epilogue: `conv_pool` and its kernel gradient.

`conv_pool(x, w[, b])` is max_pool(activation(conv(x, w) + b)) with a pooling window that
tiles the convolution's result (strides equal to the window, no padding; trailing rows
that fill no window are dropped, as "valid" pooling does), activation "relu" or "linear",
and groups 1. `conv_pool_filter_grad(x, w, g[, b])` is the kernel gradient of that, given
g, the gradient of the pooled result: it recomputes the convolution of each image in
cache, routes g to the first maximum of each window (the order max_pool_grad uses) and
contracts it with the image's patches.

Nobody calls these ops: the numba compiler's rewrite (kgraph/compiler/passes/conv_pool.py)
puts them in place of conv, bias, relu and max pooling, and of their gradients, so that
the convolution's full-size activation is never written to memory. The kernels are in
kgraph.ops.conv, next to the convolution kernels they reuse.
"""

from __future__ import annotations

import importlib

import numpy as np

from kgraph.ops.registry import OpDef, Spec, bind, register

conv_ops = importlib.import_module("kgraph.ops.conv")  # (kgraph.ops.conv the function shadows the module)
pool_ops = importlib.import_module("kgraph.ops.pool")

KERNEL = "kernel"
ACTIVATIONS = ("linear", "relu")


# -- attrs, shapes and references ---------------------------------------------------------------------
def pool_attrs(attrs):
    """The attrs of the max pooling inside."""
    window = tuple(attrs["window"])
    return {"mode": "max", "window": window, "strides": window, "pads": ((0, 0),) * len(window)}


def _check(op, attrs, x, w, b):
    if attrs["groups"] != 1 or attrs["activation"] not in ACTIVATIONS:
        raise ValueError(f"{op}: expected groups 1 and an activation in {ACTIVATIONS}, got groups "
                         f"{attrs['groups']} and activation {attrs['activation']!r}")
    if b is not None and tuple(b.shape) != (w.shape[-1],):
        raise ValueError(f"{op}: expected a bias of shape ({w.shape[-1]},), got {tuple(b.shape)}")


def _infer(attrs, x, w, b=None):
    _check("conv_pool", attrs, x, w, b)
    convolved, dtype = conv_ops._conv_infer(conv_ops._geometry_attrs(attrs), x, w)
    return pool_ops._pool_infer(pool_attrs(attrs), Spec(convolved, dtype))


def _filter_grad_infer(attrs, x, w, g, b=None):
    pooled, _ = _infer(attrs, x, w, b)
    if tuple(g.shape) != tuple(pooled):
        raise ValueError(f"conv_pool_filter_grad: expected a gradient of the pooled shape {pooled}, got "
                         f"{tuple(g.shape)}")
    return tuple(w.shape), w.dtype


def _activated(attrs, x, w, b):
    z = conv_ops._conv_reference(conv_ops._geometry_attrs(attrs), x, w)
    if b is not None:
        z = z + b
    return np.maximum(z, 0) if attrs["activation"] == "relu" else z


def _reference(attrs, x, w, b=None):
    return pool_ops._pool_reference(pool_attrs(attrs), _activated(attrs, x, w, b))


def _filter_grad_reference(attrs, x, w, g, b=None):
    r = _activated(attrs, x, w, b)
    window = pool_ops._window_attrs(pool_attrs(attrs))
    dr = pool_ops._max_grad_reference(window, r, g)
    if attrs["activation"] == "relu":
        dr = dr * (r > 0)
    attrs = dict(conv_ops._geometry_attrs(attrs), kernel_size=tuple(w.shape[:-2]))
    return conv_ops._filter_grad_reference(attrs, x, dr)


def _grad(ctx):
    """The unfused derivation: recompute the activation, route g with max_pool_grad, then the
    convolution's own gradients (the rewrite uses conv_pool_filter_grad instead)."""
    from kgraph import ops

    x, w = ctx.inputs[:2]
    b = ctx.inputs[2] if len(ctx.inputs) == 3 else None
    geometry = conv_ops._geometry_attrs(ctx.attrs)
    r = bind("conv", [x, w], **geometry)
    if b is not None:
        r = ops.add(r, b)
    if ctx.attrs["activation"] == "relu":
        r = ops.relu(r)
    window = pool_ops._window_attrs(pool_attrs(ctx.attrs))
    dr = bind("max_pool_grad", [r, ctx.upstream], **window)
    if ctx.attrs["activation"] == "relu":
        dr = ops.multiply(dr, ops.cast(ops.greater(r, 0), dr.dtype))
    grads = [bind("conv_input_grad", [dr, w], input_shape=tuple(x.shape[1:-1]), **geometry),
             bind("conv_filter_grad", [x, dr], kernel_size=tuple(w.shape[:-2]), **geometry)]
    if b is not None:
        grads.append(ops.sum(dr, axis=tuple(range(len(dr.shape) - 1))))
    return grads


# -- samples -----------------------------------------------------------------------------------------------
# (input, kernel, geometry, window, activation, bias): "same" and "valid" padding, strides,
# dilation, a window that leaves a trailing row, 1-D and 3-D.
SAMPLE_CONFIGS = [
    ((2, 8, 8, 1), (3, 3, 1, 8), conv_ops._geometry(2), (2, 2), "relu", True),
    ((2, 7, 6, 3), (3, 3, 3, 4), conv_ops._geometry(2, pads=1), (2, 3), "relu", False),
    ((2, 9, 9, 2), (3, 3, 2, 5), conv_ops._geometry(2, strides=2, dilation=(1, 2), pads=((1, 1), (2, 2))),
     (2, 2), "linear", True),
    ((2, 11, 3), (3, 3, 6), conv_ops._geometry(1), (3,), "relu", True),
    ((2, 5, 6, 5, 2), (3, 3, 2, 2, 4), conv_ops._geometry(3, pads=((0, 0), (1, 1), (0, 1))), (2, 2, 2), "relu",
     True),
]


def _attrs(geometry, window, activation):
    return dict(geometry, window=window, activation=activation)


def _samples(rng):
    cases = []
    for x, w, geometry, window, activation, bias in SAMPLE_CONFIGS:
        inputs = [conv_ops._draw(rng, x), conv_ops._draw(rng, w)] + ([conv_ops._draw(rng, w[-1:])] if bias else [])
        cases.append((inputs, _attrs(geometry, window, activation)))
    return cases


def _filter_grad_samples(rng):
    cases = []
    for inputs, attrs in _samples(rng):
        pooled = _reference(attrs, *inputs).shape
        inputs = inputs[:2] + [conv_ops._draw(rng, pooled)] + inputs[2:]
        cases.append((inputs, attrs))
    return cases


# -- numba templates (the kernels are in kgraph.ops.conv) -------------------------------------------------
def _call(node, x, w, pointers, nbias, gradient):
    attrs = node.attrs
    spatial, kernel = x.shape[1:-1], w.shape[:-2]
    out_spatial = conv_ops._conv_output_spatial("conv_pool", spatial, kernel, conv_ops._geometry_attrs(attrs))
    geo = conv_ops.conv_geometry(attrs, spatial, kernel, out_spatial, x.shape[-1], conv_ops._threads())
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    sizes = (D, H, W, x.shape[-1], KD, KH, KW, w.shape[-1], OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW,
             *conv_ops._canonical(attrs["window"]), NT)
    arguments = ([str(conv_ops._itemsize(node))] + pointers + ["n"] + [str(s) for s in sizes]
                 + [str(nbias), "1" if attrs["activation"] == "relu" else "0", str(int(gradient))])
    return ["n = a0.shape[0]", f"conv_pool({', '.join(arguments)})"]


def numba_conv_pool(node, inputs):
    x, w = inputs[:2]
    bias = len(inputs) == 3
    return _call(node, x, w, ["a0.ctypes.data", "a1.ctypes.data", "0", "out.ctypes.data",
                              "a2.ctypes.data" if bias else "0"], w.shape[-1] if bias else 0, False)


def numba_conv_pool_filter_grad(node, inputs):
    x, w = inputs[:2]
    bias = len(inputs) == 4
    return _call(node, x, w, ["a0.ctypes.data", "a1.ctypes.data", "a2.ctypes.data", "out.ctypes.data",
                              "a3.ctypes.data" if bias else "0"], w.shape[-1] if bias else 0, True)


for _template in (numba_conv_pool, numba_conv_pool_filter_grad):
    _template.kernels = "kgraph.ops.conv"

register(OpDef("conv_pool", KERNEL, _infer, _reference, grad=_grad, samples=_samples,
               doc="max_pool(activation(conv(x, w) + b)): a tiling max-pool window, activation relu or "
                   "linear, groups 1; attrs of conv plus window and activation. Made by the numba "
                   "compiler's conv-pool rewrite."))
register(OpDef("conv_pool_filter_grad", KERNEL, _filter_grad_infer, _filter_grad_reference, differentiable=False,
               samples=_filter_grad_samples,
               doc="The kernel gradient of conv_pool(x, w[, b]) given g, the gradient of its result "
                   "(inputs x, w, g[, b]); made by the conv-pool rewrite, after differentiation."))

NUMBA_TEMPLATES = {"conv_pool": numba_conv_pool, "conv_pool_filter_grad": numba_conv_pool_filter_grad}
