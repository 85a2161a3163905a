"""Conv-pool rewrite: a convolution whose only use is a max pooling becomes `conv_pool`.

Matched (numba backend only; after differentiation, before fusion):

    r = relu(conv(x, w) + b)          (the bias and the relu are optional)
    p = pool(r, mode=max)             (a window that tiles r: strides = window, no padding)

and, in a training graph, the gradients that read r:

    dr = max_pool_grad(r, g) * cast(greater(r, 0))     (without the mask when there is no relu)
    dw = conv_filter_grad(x, dr)
    db = sum(dr, axes=all but the channels)

become p = conv_pool(x, w, b), dw = conv_pool_filter_grad(x, w, g, b) and
db = sum(g * cast(greater(p, 0))): each routed gradient is g at its window's maximum, and
that maximum is p. Neither r nor dr is written to memory any more; for the first layer of
a CNN on 28x28 images they are 11 MB each per batch of 128 (see docs/design.md).

A graph that also needs conv_input_grad(dr, w) (a convolution that is not the first
layer) is left alone: the filter gradient would recompute the convolution, which costs
more than the memory traffic it saves.
"""

from __future__ import annotations

import numpy as np

from kgraph.compiler.passes.simplify import eliminate_dead_code
from kgraph.ops.conv import _geometry_attrs
from kgraph.ops.shapes import num_elements

# Per-thread buffers of one image (patches, convolution, routed gradient), in values.
MAX_IMAGE_VALUES = 1 << 22


def relu_mask_source(graph, node_id):
    """x when node `node_id` is cast(greater(x, 0)) (the gradient mask of a relu), else None."""
    cast = graph.node(node_id)
    if cast.op != "cast" or len(cast.inputs) != 1:
        return None
    greater = graph.node(cast.inputs[0])
    if greater.op != "greater" or len(greater.inputs) != 2:
        return None
    zero = graph.node(greater.inputs[1])
    if zero.op != "constant" or np.any(zero.payload):
        return None
    return greater.inputs[0]


def _other(node, value):
    return node.inputs[1] if node.inputs[0] == value else node.inputs[0]


def _match_forward(graph, pool):
    """{x, w, b, r, activation, conv} when `pool` pools a matched convolution, else None."""
    rank = len(pool.shape) - 2
    if (pool.attrs["mode"] != "max" or tuple(pool.attrs["strides"]) != tuple(pool.attrs["window"])
            or any(lo or hi for lo, hi in pool.attrs["pads"])):
        return None
    r = graph.node(pool.inputs[0])
    activation, z = ("relu", graph.node(r.inputs[0])) if r.op == "relu" else ("linear", r)
    bias = None
    conv = z
    if z.op == "add":
        conv = next((graph.node(i) for i in z.inputs if graph.node(i).op == "conv"), None)
        if conv is None or z.inputs[0] == z.inputs[1]:
            return None
        bias = graph.node(_other(z, conv.id))
        if tuple(bias.shape) != (conv.shape[-1],) or bias.dtype != conv.dtype:
            return None
    if conv.op != "conv" or conv.attrs["groups"] != 1 or conv.dtype not in ("float32", "float64"):
        return None
    if any(lo < 0 or hi < 0 for lo, hi in conv.attrs["pads"]) or len(conv.shape) - 2 != rank:
        return None
    roots = set(graph.roots())
    chain = [conv.id] + ([z.id] if bias is not None else []) + ([r.id] if activation == "relu" else [])
    for inner in chain[:-1]:  # every value before r has one reader, the next one
        if inner in roots or len(graph.consumers(inner)) != 1:
            return None
    x, w = conv.inputs
    taps = num_elements(graph.node(w).shape[:-1])
    if num_elements(conv.shape[1:-1]) * (taps + 2 * conv.shape[-1]) > MAX_IMAGE_VALUES or r.id in roots:
        return None
    return {"x": x, "w": w, "b": None if bias is None else bias.id, "r": r.id, "activation": activation,
            "conv": conv}


def _match_backward(graph, pool, found):
    """[(g, [conv_filter_grad nodes], [sum nodes])] for the max_pool_grads that read r (an empty
    list in a graph without gradients), or None when a reader of r or of its gradient does not match."""
    r, conv = found["r"], found["conv"]
    roots = set(graph.roots())
    window = {k: tuple(pool.attrs[k]) for k in ("window", "strides")}
    grads, masks = [], set()
    for reader_id in graph.consumers(r):
        reader = graph.node(reader_id)
        if reader_id == pool.id:
            continue
        if reader.op == "greater":
            masks.add(reader_id)
            continue
        if reader.op != "max_pool_grad" or reader.inputs[0] != r or reader_id in roots or any(
                tuple(reader.attrs[k]) != v for k, v in window.items()):
            return None
        dr = reader
        if found["activation"] == "relu":
            readers = graph.consumers(reader_id)
            if len(readers) != 1 or graph.node(readers[0]).op != "multiply":
                return None
            dr = graph.node(readers[0])
            if relu_mask_source(graph, _other(dr, reader_id)) != r:
                return None
        filter_grads, sums = [], []
        for use_id in graph.consumers(dr.id):
            use = graph.node(use_id)
            if (use.op == "conv_filter_grad" and use.inputs == (found["x"], dr.id)
                    and _geometry_attrs(use.attrs) == _geometry_attrs(conv.attrs)):
                filter_grads.append(use)
            elif use.op == "sum" and tuple(use.attrs["axes"]) == tuple(range(len(dr.shape) - 1)):
                sums.append(use)
            else:
                return None  # e.g. conv_input_grad: the convolution's input needs a gradient
        if dr.id in roots or len(filter_grads) > 1:
            return None
        grads.append((reader.inputs[1], filter_grads, sums))
    for mask in masks:  # each relu mask of r feeds only the multiplies matched above
        for cast in graph.consumers(mask):
            if relu_mask_source(graph, cast) != r or cast in roots:
                return None
            for use in graph.consumers(cast):
                if graph.node(use).op != "multiply" or not any(
                        graph.node(i).op == "max_pool_grad" for i in graph.node(use).inputs):
                    return None
    return grads


def fuse_conv_pool(graph):
    """Apply the rewrite everywhere it matches; returns the number of poolings rewritten."""
    rewritten = 0
    for pool in [n for n in graph.nodes() if n.op == "pool"]:
        found = _match_forward(graph, pool)
        grads = None if found is None else _match_backward(graph, pool, found)
        if grads is None:
            continue
        conv = found["conv"]
        attrs = _geometry_attrs(conv.attrs)
        attrs.update(window=tuple(pool.attrs["window"]), activation=found["activation"])
        bias = [found["b"]] if found["b"] is not None else []
        pooled = graph.add_node("conv_pool", [found["x"], found["w"]] + bias, attrs, pool.shape, pool.dtype)
        graph.replace_uses(pool.id, pooled.id)
        for g, filter_grads, sums in grads:
            for old in filter_grads:
                new = graph.add_node("conv_pool_filter_grad", [found["x"], found["w"], g] + bias, attrs,
                                     old.shape, old.dtype)
                graph.replace_uses(old.id, new.id)
            routed = graph.node(g)
            if sums and found["activation"] == "relu":
                zero = graph.add_constant(np.zeros((), pooled.dtype))
                positive = graph.add_node("greater", [pooled.id, zero.id], {}, pooled.shape, "bool")
                mask = graph.add_node("cast", [positive.id], {"dtype": pooled.dtype}, pooled.shape, pooled.dtype)
                routed = graph.add_node("multiply", [g, mask.id], {}, pooled.shape, pooled.dtype)
            for old in sums:
                new = graph.add_node("sum", [routed.id], dict(old.attrs), old.shape, old.dtype)
                graph.replace_uses(old.id, new.id)
        rewritten += 1
    if rewritten:
        eliminate_dead_code(graph)
    return rewritten

