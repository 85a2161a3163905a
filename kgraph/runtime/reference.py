"""The reference backend: interprets a graph node by node with the ops' numpy references.

It serves tests (the oracle every compiled backend is compared with) and debugging; the
training and inference paths never use it.
"""

from __future__ import annotations

import numpy as np

from kgraph.ops import get_op


def evaluate(graph, inputs, variable_values=None):
    """Run `graph` on `inputs` (one array per placeholder, in order).

    Returns (outputs, new_state): the output arrays, and {Variable: new value} for every
    state update. Variables read their current value unless `variable_values` maps them.
    """
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph '{graph.name}' takes {len(graph.inputs)} inputs, got {len(inputs)}")
    overrides = {id(v): a for v, a in (variable_values or {}).items()}
    values = dict(zip(graph.inputs, (np.asarray(x) for x in inputs)))
    batch = batch_size(graph, values)
    for node in graph.nodes():
        if node.op == "placeholder":
            values[node.id] = values[node.id].astype(node.dtype, copy=False)
        elif node.op == "variable":
            values[node.id] = overrides.get(id(node.payload), node.payload._value)
        elif node.op == "constant":
            values[node.id] = node.payload
        else:
            args = [values[i] for i in node.inputs]
            attrs = node.attrs
            if "shape" in attrs and None in attrs["shape"]:
                attrs = dict(attrs, shape=tuple(batch if d is None else d for d in attrs["shape"]))
            result = np.asarray(get_op(node.op).reference(attrs, *args))
            values[node.id] = result.astype(node.dtype, copy=False)
    outputs = [values[o] for o in graph.outputs]
    state = {graph.node(var_id).payload: values[new_id] for var_id, new_id in graph.state_updates.items()}
    return outputs, state


def batch_size(graph, values):
    """The run-time size of the unknown (None) dimension, read off the placeholders.

    In a compiled graph every None dimension is the batch size: one artifact serves
    every batch size, and buffers are sized from it.
    """
    sizes = set()
    for node_id in graph.inputs:
        node = graph.node(node_id)
        for static, actual in zip(node.shape, values[node_id].shape):
            if static is None:
                sizes.add(actual)
    if len(sizes) > 1:
        raise ValueError(f"graph '{graph.name}': inputs disagree on the batch size: {sorted(sizes)}")
    return sizes.pop() if sizes else None
