"""Expanding control flow for a backend that has no loops or branches of its own yet (Triton).

The numba backend runs `scan`, `while_loop` and `switch` as real loops and branches, and the
ONNX exporter writes them as Loop and If. The Triton backend receives the graph with them
expanded into plain ops: a scan of static length unrolled step by step, a switch as every
branch computed and the chosen result selected with `where` (the values and gradients are
the same; the cost is computing every branch). A while_loop, whose trip count is known only
at run time, and a scan over the batch axis cannot be expanded: they are refused with an
error naming the op.
"""

from __future__ import annotations

from kgraph import ops
from kgraph.ir import SymbolicTensor, tracing
from kgraph.ops import get_op
from kgraph.ops.control_flow import CONTROL_FLOW_OPS, inline


class ControlFlowExpansionError(NotImplementedError):
    """A loop the target cannot run: its trip count is not known when the graph is built."""


def _scan(graph, node, inputs):
    attrs = node.attrs
    carry_count, xs_count = attrs["num_carry"], attrs["num_xs"]
    carries, xs, captures = (inputs[:carry_count], inputs[carry_count:carry_count + xs_count],
                             inputs[carry_count + xs_count:])
    length = attrs["length"]
    if length is None:
        raise ControlFlowExpansionError(f"{node.op} (node %{node.id}) runs over the batch axis, whose length is "
                                        "known only at run time; this target has no loops yet")
    steps = range(length - 1, -1, -1) if attrs["reverse"] else range(length)
    ys = [None] * length
    for t in steps:
        results = inline(attrs["body"], carries + [ops.getitem(x, t) for x in xs] + captures)
        carries, ys[t] = results[:carry_count], results[carry_count:]
    stacked = [ops.stack([y[k] for y in ys], axis=0) for k in range(attrs["num_outputs"] - carry_count)]
    return carries + stacked


def _switch(graph, node, inputs):
    attrs = node.attrs
    operands = inputs[1:1 + attrs["num_operands"]]
    start, results = 1 + attrs["num_operands"], []
    for branch in attrs["branches"]:
        count = len(branch.inputs) - attrs["num_operands"]
        results.append(inline(branch, operands + inputs[start:start + count]))
        start += count
    chosen = results[-1]
    for k in range(len(results) - 2, -1, -1):
        taken = ops.less_equal(inputs[0], k)
        chosen = [ops.where(taken, a, b) for a, b in zip(results[k], chosen)]
    return chosen


def _while(graph, node, inputs):
    raise ControlFlowExpansionError(f"while_loop (node %{node.id}) has a trip count known only at run time; this "
                                    "target has no loops yet (the numba backend runs it; for a fixed count, use "
                                    "fori_loop with Python int bounds)")


EXPANSIONS = {"scan": _scan, "switch": _switch, "while_loop": _while}


def expand_control_flow(graph):
    """Rewrite every control-flow op of `graph` in place into plain ops; returns how many."""
    expanded = 0
    while True:
        node = next((n for n in graph.nodes() if n.op in CONTROL_FLOW_OPS), None)
        if node is None:
            return expanded
        results = get_op(node.op).extra["siblings"](graph, node)
        with tracing(graph):
            inputs = [SymbolicTensor(graph, i) for i in node.inputs]
            replacements = EXPANSIONS[node.op](graph, node, inputs)
        for result, replacement in zip(results, replacements):
            if result is not None:
                graph.replace_uses(result, replacement.node_id)
                graph.nx.remove_node(result)
        expanded += 1
