"""ONNX entries of the control-flow ops (kgraph/ops/control_flow.py): ONNX's own Loop and If.

Each function graph becomes a nested GraphProto, emitted by an Emitter that shares the
model's names and initializers; its captures are the outer values themselves (a nested
graph may read any value of an enclosing one by name).

- while_loop: Loop with no trip count; its condition is evaluated once on the initial
  variables in the outer graph, then at the end of each iteration in the body.
- scan: Loop with the trip count (the static length, or the scanned axis's run-time
  size); each iteration gathers its slice of the scanned inputs, and the per-step outputs
  are Loop's scan outputs, stacked on a new first axis (reversed back for reverse=True).
- switch: an If per branch but the last, nested in the else branches; only the chosen
  branch runs.

A control-flow op has one kgraph node per result (siblings); the first one reached emits
the Loop or If, and every sibling reads its result from the emitter's memo.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

INT64_MIN = np.iinfo(np.int64).min


def _emitter_for(e, graph):
    """An Emitter writing a nested graph: the model's names, initializers and constants."""
    from kgraph.exporters.onnx import Emitter

    nested = Emitter(graph, e.opset)
    nested._taken, nested.initializers, nested._constants = e._taken, e.initializers, e._constants
    nested._batch_source, nested._batch = e._batch_source, e._batch
    return nested


def _value_info(name, shape, dtype):
    from kgraph.exporters.onnx import _value_info as make

    return make(name, shape, dtype)


def _value(name, shape, dtype):
    from kgraph.exporters.onnx import Value

    return Value(name, tuple(shape), dtype)


def _function_graph(e, function, values, inputs, name="body"):
    """(GraphProto, emitter) of kgraph graph `function` with its placeholders bound by
    `values`; `inputs` are the GraphProto's (name, shape, dtype) inputs; its outputs are
    Identity copies of the function's outputs."""
    from kgraph.exporters.onnx import emit_nodes

    nested = _emitter_for(e, function)
    bound = emit_nodes(nested, function, dict(values))
    nested.node = None
    outputs = []
    for node_id in function.outputs:
        value = bound[node_id]
        outputs.append(_value(nested.op("Identity", [value.name]), value.shape, value.dtype))
    proto = helper.make_graph(nested.nodes, nested.unique(name), [_value_info(*i) for i in inputs],
                              [_value_info(v.name, v.shape, v.dtype) for v in outputs])
    return proto, nested


def _memo(e, node, build):
    """The results of the computation `node` is a result of, built on first request."""
    memo = e.__dict__.setdefault("control_results", {})
    key = (node.op, node.inputs, tuple(sorted((k, id(v)) for k, v in node.attrs.items() if k != "index")))
    if key not in memo:
        memo[key] = build()
    # ONNX's shape inference leaves Loop and If results without a shape: a Reshape to the
    # node's shape (0 copies a run-time dimension) states it.
    shape = [0 if d is None else d for d in node.shape]
    return e.op("Reshape", [memo[key][node.attrs["index"]], e.ints(shape)])


def _bind(function, arguments, captures):
    """{placeholder id: Value}: the function's arguments, then its captures."""
    return dict(zip(function.inputs, list(arguments) + list(captures)))


def _scalar(e, name):
    return e.op("Reshape", [name, e.ints([])])


def _while_loop(e, node, *inputs):
    def build():
        from kgraph.exporters.onnx import emit_nodes

        attrs = node.attrs
        cond, body, count = attrs["cond"], attrs["body"], attrs["num_carry"]
        carries, rest = list(inputs[:count]), list(inputs[count:])
        cond_captures, body_captures = rest[:len(cond.inputs) - count], rest[len(cond.inputs) - count:]
        start = _emit_inline(e, cond, carries, cond_captures)  # whether to run the first iteration
        iteration, condition = e.unique("iteration"), e.unique("condition")
        loop_carries = [_value(e.unique(f"carry{k}"), v.shape, v.dtype) for k, v in enumerate(carries)]
        body_values = _bind(body, loop_carries, body_captures)
        nested = _emitter_for(e, body)
        bound = emit_nodes(nested, body, body_values)
        new = [bound[o] for o in body.outputs]
        again = _emit_with(nested, cond, _bind(cond, new, cond_captures))
        nested.node = None
        outputs = [_value(again, (), "bool")] + [
            _value(nested.op("Identity", [v.name]), v.shape, v.dtype) for v in new]
        proto = helper.make_graph(
            nested.nodes, nested.unique("while_body"),
            [_value_info(iteration, (), "int64"), _value_info(condition, (), "bool")]
            + [_value_info(v.name, v.shape, v.dtype) for v in loop_carries],
            [_value_info(v.name, v.shape, v.dtype) for v in outputs])
        return e.op_outputs("Loop", ["", start] + [v.name for v in carries], count, body=proto)
    return _memo(e, node, build)


def _emit_with(emitter, function, values):
    """Emit `function` into `emitter` with its placeholders bound; the name of its one output."""
    from kgraph.exporters.onnx import emit_nodes

    bound = emit_nodes(emitter, function, dict(values))
    return bound[function.outputs[0]].name


def _emit_inline(e, function, arguments, captures):
    node = e.node
    name = _emit_with(e, function, _bind(function, arguments, captures))
    e.node = node
    return name


def _scan(e, node, *inputs):
    def build():
        from kgraph.exporters.onnx import emit_nodes

        attrs = node.attrs
        body, carry_count, xs_count = attrs["body"], attrs["num_carry"], attrs["num_xs"]
        carries, xs = list(inputs[:carry_count]), list(inputs[carry_count:carry_count + xs_count])
        captures = list(inputs[carry_count + xs_count:])
        if attrs["length"] is not None:
            trips = e.ints([attrs["length"]])
        else:
            trips = e.op("Gather", [e.op("Shape", [xs[0].name]), e.ints([0])], axis=0)
        trips = _scalar(e, trips)
        iteration, condition = e.unique("iteration"), e.unique("condition")
        loop_carries = [_value(e.unique(f"carry{k}"), v.shape, v.dtype) for k, v in enumerate(carries)]
        nested = _emitter_for(e, body)
        step = iteration
        if attrs["reverse"]:
            step = nested.op("Sub", [nested.op("Sub", [trips, nested.const(1, "int64")]), iteration])
        slices = [_value(nested.op("Gather", [x.name, step], axis=0), x.shape[1:], x.dtype) for x in xs]
        bound = emit_nodes(nested, body, _bind(body, loop_carries + slices, captures))
        nested.node = None
        results = [bound[o] for o in body.outputs]
        outputs = [_value(nested.op("Identity", [condition]), (), "bool")] + [
            _value(nested.op("Identity", [v.name]), v.shape, v.dtype) for v in results]
        proto = helper.make_graph(
            nested.nodes, nested.unique("scan_body"),
            [_value_info(iteration, (), "int64"), _value_info(condition, (), "bool")]
            + [_value_info(v.name, v.shape, v.dtype) for v in loop_carries],
            [_value_info(v.name, v.shape, v.dtype) for v in outputs])
        names = e.op_outputs("Loop", [trips, ""] + [v.name for v in carries], len(results), body=proto)
        if attrs["reverse"]:  # Loop stacks in iteration order: put step t back at index t
            names = names[:carry_count] + [
                e.op("Slice", [y, e.ints([-1]), e.ints([INT64_MIN]), e.ints([0]), e.ints([-1])])
                for y in names[carry_count:]]
        return names
    return _memo(e, node, build)


def _switch(e, node, selector, *rest):
    def build():
        attrs = node.attrs
        branches, operand_count = attrs["branches"], attrs["num_operands"]
        operands, start, graphs = list(rest[:operand_count]), operand_count, []
        for k, branch in enumerate(branches):
            count = len(branch.inputs) - operand_count
            proto, _ = _function_graph(e, branch, _bind(branch, operands, rest[start:start + count]), [],
                                       name=f"branch{k}")
            graphs.append(proto)
            start += count
        index = e.cast(selector, "int32")
        taken = [e.op("LessOrEqual", [index, e.const(k, "int32")]) for k in range(len(branches) - 1)]
        outputs = [branches[0].node(o) for o in branches[0].outputs]
        chosen = graphs[-1]
        for k in range(len(branches) - 2, 0, -1):  # nested Ifs, from the innermost
            nested = _emitter_for(e, branches[k])
            names = nested.op_outputs("If", [taken[k]], len(outputs), then_branch=graphs[k], else_branch=chosen)
            chosen = helper.make_graph(nested.nodes, nested.unique(f"select{k}"), [],
                                       [_value_info(n, o.shape, o.dtype) for n, o in zip(names, outputs)])
        return e.op_outputs("If", [taken[0]], len(outputs), then_branch=graphs[0], else_branch=chosen) \
            if len(branches) > 1 else _only_branch(e, graphs[0], outputs)
    return _memo(e, node, build)


def _only_branch(e, graph, outputs):
    true = e.const(True, "bool")
    return e.op_outputs("If", [true], len(outputs), then_branch=graph, else_branch=graph)


ONNX_CONTROL_OPS = {"while_loop": _while_loop, "scan": _scan, "switch": _switch}
