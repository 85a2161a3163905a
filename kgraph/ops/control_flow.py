"""Control flow in the IR: `while_loop`, `scan` and `switch`, primitive ops that hold traced
functions (kgraph.ir.function.FunctionGraph) and that backends lower to real loops and
branches.

A function is traced once, on placeholders shaped like its arguments; the outer values it
reads (tensors of the enclosing graph, variables) become capture placeholders, passed to
the op as explicit inputs. An op has several results (the loop variables, the stacked
outputs of a scan), and a node has one: the op records one node per result, all with the
same inputs and attrs but `index`. The passes treat such siblings as one computation:
fusion gives them one group (one loop), autodiff calls the gradient rule once with the
upstream gradients of all of them (kgraph.compiler.autodiff).

Gradients: `scan` differentiates by a second, reverse scan over the vector-Jacobian
product of its body, fed the carries of every step (recomputed by a scan that records
them); `switch` by a switch over the branches' vector-Jacobian products. `while_loop`
has a trip count that depends on the data, and, as in JAX, is not reverse-differentiable:
autodiff refuses it with its reason (use fori_loop with static bounds, or scan).
"""

from __future__ import annotations

import functools

import numpy as np

from kgraph import ops
from kgraph.ir import SymbolicTensor, Variable, current_graph, tracing
from kgraph.ir.function import FunctionGraph
from kgraph.ops.elementwise import is_float
from kgraph.ops.registry import OpDef, bind, register, to_array

CONTROL_FLOW_OPS = ("while_loop", "scan", "switch")


# -- tracing functions ------------------------------------------------------------------------------------
def as_tensor(value):
    """A loop variable or operand as ops see it: symbolic values pass through, the rest become arrays."""
    if isinstance(value, (SymbolicTensor, Variable)):
        return value
    return to_array(value)


def _spec(value):
    value = as_tensor(value)
    return tuple(value.shape), str(value.dtype)


def _result_in(graph, value):
    """The node id of a function's result: its own value, a captured outer one, or a constant."""
    if isinstance(value, SymbolicTensor):
        return value.node_id if value.graph is graph else graph.capture(value)
    if isinstance(value, Variable):
        return value.symbolic().node_id
    return graph.add_constant(np.ascontiguousarray(to_array(value))).id


def trace_function(fn, arg_specs, name):
    """The FunctionGraph of `fn(*args)` for args shaped and typed like `arg_specs`
    [(shape, dtype)]; fn returns a list of results (or one), which become its outputs."""
    graph = FunctionGraph(name, current_graph())
    with tracing(graph):
        args = [SymbolicTensor(graph, graph.add_placeholder(shape, dtype, f"{name}.arg{k}").id)
                for k, (shape, dtype) in enumerate(arg_specs)]
        result = fn(*args)
        leaves = [] if result is None else [result] if not isinstance(result, (list, tuple)) else list(result)
        graph.outputs = [_result_in(graph, leaf) for leaf in leaves]
    if graph.state_updates:
        raise ValueError(f"{name}: a variable is assigned inside the function; control-flow bodies and "
                         "branches may read variables but not assign them")
    return graph


def output_specs(graph):
    return [(graph.node(o).shape, graph.node(o).dtype) for o in graph.outputs]


def inline(graph, args):
    """Replay `graph` (a FunctionGraph, placeholders = `args`) into the graph being traced."""
    values = dict(zip(graph.inputs, args))
    for node in graph.nodes():
        if node.op == "placeholder":
            continue
        if node.op == "constant":
            values[node.id] = SymbolicTensor(current_graph(), current_graph().add_constant(node.payload).id)
        else:
            values[node.id] = bind(node.op, [values[i] for i in node.inputs], **node.attrs)
    return [values[o] for o in graph.outputs]


def _bind_results(name, inputs, attrs, count):
    """One node per result of a control-flow op (siblings: the same inputs and attrs but index)."""
    return [bind(name, inputs, **attrs, index=k, num_outputs=count) for k in range(count)]


def siblings(graph, node):
    """The node ids of every result of the computation `node` is one result of, by index
    (None for a result no longer in the graph). Siblings apply the same attrs but index to
    the same inputs, where equal constants count as the same input (a replayed application
    records its constants again)."""
    attrs = {k: v for k, v in node.attrs.items() if k != "index"}
    found = [None] * node.attrs["num_outputs"]
    for other_id in graph.nx.nodes:
        other = graph.node(other_id)
        if (other.op == node.op and len(other.inputs) == len(node.inputs)
                and all(_same_input(graph, a, b) for a, b in zip(other.inputs, node.inputs))
                and {k: v for k, v in other.attrs.items() if k != "index"} == attrs):
            found[other.attrs["index"]] = other_id
    return found


def _same_input(graph, a, b):
    if a == b:
        return True
    first, second = graph.node(a), graph.node(b)
    return (first.op == second.op == "constant" and first.payload.shape == second.payload.shape
            and first.payload.dtype == second.payload.dtype and np.array_equal(first.payload, second.payload))


# -- shapes -----------------------------------------------------------------------------------------------
def _batch_binding(name, expected, given):
    """The run-time size the function graph's None dimensions take from the given input specs
    (None when every given one is None too); refuses specs that do not fit."""
    batch = None
    for position, ((shape, dtype), spec) in enumerate(zip(expected, given)):
        if dtype != spec.dtype or len(shape) != len(spec.shape) or any(
                e is not None and e != g for e, g in zip(shape, spec.shape)):
            raise ValueError(f"{name}: input {position} is {spec.dtype}{tuple(spec.shape)}, but the function was "
                             f"traced for {dtype}{tuple(shape)}")
        for e, g in zip(shape, spec.shape):
            if e is None and g is not None:
                if batch is not None and batch != g:
                    raise ValueError(f"{name}: inputs disagree on the batch size ({batch} and {g})")
                batch = g
    return batch


def _resolved(shape, batch):
    return tuple(batch if d is None else d for d in shape)


def _placeholder_specs(graph):
    return [(graph.node(i).shape, graph.node(i).dtype) for i in graph.inputs]


# -- while_loop -------------------------------------------------------------------------------------------
def _while_parts(attrs, values):
    carry = attrs["num_carry"]
    cond_captures = len(attrs["cond"].inputs) - carry
    return values[:carry], values[carry:carry + cond_captures], values[carry + cond_captures:]


def _while_infer(attrs, *specs):
    carries, cond_captures, body_captures = _while_parts(attrs, list(specs))
    batch = _batch_binding("while_loop", _placeholder_specs(attrs["cond"]), carries + cond_captures)
    body_batch = _batch_binding("while_loop", _placeholder_specs(attrs["body"]), carries + body_captures)
    shape, dtype = output_specs(attrs["body"])[attrs["index"]]
    return _resolved(shape, batch if batch is not None else body_batch), dtype


def _evaluate(graph, args):
    from kgraph.runtime.reference import evaluate  # the reference interpreter of graphs

    return evaluate(graph, args)[0]


def _while_reference(attrs, *arrays):
    carries, cond_captures, body_captures = _while_parts(attrs, list(arrays))
    while bool(np.asarray(_evaluate(attrs["cond"], carries + cond_captures)[0])):
        carries = _evaluate(attrs["body"], carries + body_captures)
    return carries[attrs["index"]]


def while_loop_traced(cond_fn, body_fn, init):
    """Loop variables after `body_fn` runs while `cond_fn` holds; flat lists of tensors in and out."""
    init = [as_tensor(v) for v in init]
    if not init:
        raise ValueError("while_loop: there must be at least one loop variable")
    body, init = _trace_loop_body(body_fn, init, [], "while_loop")
    specs = [_spec(v) for v in init]
    cond = trace_function(lambda *c: [ops.reshape(ops.cast(cond_fn(*c), "bool"), ())], specs, "while_loop.cond")
    attrs = dict(cond=cond, body=body, num_carry=len(init))
    return _bind_results("while_loop", init + cond.captures + body.captures, attrs, len(init))


def _trace_loop_body(fn, init, other_specs, name):
    """(body graph, init) for loop variables `init`: a body that returns a loop variable in a
    wider dtype (a float32 carry plus float64 data) is traced again with the variable
    promoted, as the unrolled loop would have computed; other changes are refused."""
    for _ in range(4):
        specs = [_spec(v) for v in init]
        body = trace_function(fn, specs + list(other_specs), f"{name}.body")
        returned = output_specs(body)[:len(init)]
        widened = [ops.result_type(dtype, got) if len(returned) == len(specs) and tuple(shape) == tuple(got_shape)
                   else dtype for (shape, dtype), (got_shape, got) in zip(specs, returned)]
        if widened == [dtype for _, dtype in specs]:
            break
        init = [ops.cast(v, d) for v, d in zip(init, widened)]
    _check_carries(name, [_spec(v) for v in init], returned)
    return body, init


def _check_carries(name, expected, given):
    if len(given) != len(expected):
        raise ValueError(f"{name}: the body returns {len(given)} loop variables for {len(expected)}")
    for k, ((shape, dtype), (got_shape, got_dtype)) in enumerate(zip(expected, given)):
        if tuple(shape) != tuple(got_shape) or dtype != got_dtype:
            raise ValueError(f"{name}: the body returns loop variable {k} as {got_dtype}{tuple(got_shape)}, "
                             f"but it enters the loop as {dtype}{tuple(shape)}; a loop variable keeps its "
                             "shape and dtype (cast it)")


# -- scan -------------------------------------------------------------------------------------------------
def _scan_parts(attrs, values):
    carry, xs = attrs["num_carry"], attrs["num_xs"]
    return values[:carry], values[carry:carry + xs], values[carry + xs:]


def _scan_infer(attrs, *specs):
    carries, xs, captures = _scan_parts(attrs, list(specs))
    length = attrs["length"]
    for x in xs:
        if not x.shape or (x.shape[0] != length and length is not None):
            raise ValueError(f"scan: every scanned input needs a leading axis of length {length}, got {x.shape}")
    sliced = [type(x)(tuple(x.shape[1:]), x.dtype) for x in xs]
    batch = _batch_binding("scan", _placeholder_specs(attrs["body"]), carries + sliced + captures)
    shape, dtype = output_specs(attrs["body"])[attrs["index"]]
    shape = _resolved(shape, batch)
    if attrs["index"] >= attrs["num_carry"]:
        shape = (length,) + shape
    return shape, dtype


def _scan_reference(attrs, *arrays):
    carries, xs, captures = _scan_parts(attrs, list(arrays))
    length, carry_count = attrs["length"], attrs["num_carry"]
    if length is None:
        length = xs[0].shape[0]
    steps = range(length - 1, -1, -1) if attrs["reverse"] else range(length)
    ys = [None] * length
    for t in steps:
        results = _evaluate(attrs["body"], carries + [x[t] for x in xs] + captures)
        carries, ys[t] = results[:carry_count], results[carry_count:]
    index = attrs["index"]
    if index < carry_count:
        return carries[index]
    shape, dtype = output_specs(attrs["body"])[index]
    if not length:
        return np.zeros((0,) + tuple(0 if d is None else d for d in shape), dtype)
    return np.stack([y[index - carry_count] for y in ys])


def scan_traced(fn, init, xs, length=None, reverse=False):
    """(final carries, stacked ys) of `fn(carries, x_slices) -> (carries, ys)` over the leading
    axis of every array in `xs`; flat lists in and out."""
    init, xs = [as_tensor(v) for v in init], [as_tensor(v) for v in xs]
    lengths = {x.shape[0] if len(x.shape) else "scalar" for x in xs}
    if "scalar" in lengths or len(lengths) > 1:
        raise ValueError(f"scan: the scanned inputs need one common leading axis, got shapes "
                         f"{[tuple(x.shape) for x in xs]}")
    if xs:
        length = lengths.pop() if length is None else length
    if length is None and not xs:
        raise ValueError("scan: give xs or length")
    slice_specs = [(tuple(x.shape[1:]), str(x.dtype)) for x in xs]
    body, init = _trace_loop_body(lambda *a: _scan_step(fn, a, len(init)), init, slice_specs, "scan")
    count = len(body.outputs)
    if not count:
        return [], []
    inputs = init + xs + body.captures
    if not inputs:  # nothing varies: every step computes the same values; the op still needs an input
        body.add_placeholder((), "int32", "scan.unused")
        body.captures.append(np.zeros((), "int32"))
        inputs = list(body.captures)
    attrs = dict(body=body, num_carry=len(init), num_xs=len(xs), length=None if length is None else int(length),
                 reverse=bool(reverse))
    results = _bind_results("scan", inputs, attrs, count)
    return results[:len(init)], results[len(init):]


def _scan_step(fn, args, carry_count):
    carries, ys = fn(list(args[:carry_count]), list(args[carry_count:]))
    return list(carries) + list(ys)


# -- switch -----------------------------------------------------------------------------------------------
def _switch_parts(attrs, values):
    selector, operands = values[0], values[1:1 + attrs["num_operands"]]
    captures, start = [], 1 + attrs["num_operands"]
    for branch in attrs["branches"]:
        count = len(branch.inputs) - attrs["num_operands"]
        captures.append(values[start:start + count])
        start += count
    return selector, operands, captures


def _switch_infer(attrs, *specs):
    selector, operands, captures = _switch_parts(attrs, list(specs))
    if selector.shape != () or not selector.dtype.startswith("int"):
        raise ValueError(f"switch: the branch index must be an int scalar, got {selector.dtype}{selector.shape}")
    batch = None
    for branch, own in zip(attrs["branches"], captures):
        found = _batch_binding("switch", _placeholder_specs(branch), operands + own)
        batch = found if found is not None else batch
    shape, dtype = output_specs(attrs["branches"][0])[attrs["index"]]
    return _resolved(shape, batch), dtype


def _switch_reference(attrs, *arrays):
    selector, operands, captures = _switch_parts(attrs, list(arrays))
    branches = attrs["branches"]
    chosen = int(np.clip(int(selector), 0, len(branches) - 1))
    return _evaluate(branches[chosen], operands + captures[chosen])[attrs["index"]]


def switch_traced(index, branch_fns, operands):
    """The results of branch_fns[index](*operands), index clipped; flat lists of tensors."""
    operands = [as_tensor(v) for v in operands]
    specs = [_spec(v) for v in operands]
    branches = [trace_function(fn, specs, f"switch.branch{k}") for k, fn in enumerate(branch_fns)]
    first = output_specs(branches[0])
    for k, branch in enumerate(branches[1:], 1):
        if [(tuple(s), d) for s, d in output_specs(branch)] != [(tuple(s), d) for s, d in first]:
            raise ValueError(f"switch/cond: branch {k} returns {_describe(output_specs(branch))}, but branch 0 "
                             f"returns {_describe(first)}; every branch must return the same structure of "
                             "shapes and dtypes")
    if not first:
        return []
    selector = ops.clip(ops.reshape(ops.cast(index, "int32"), ()), 0, len(branches) - 1)
    inputs = [selector] + operands + [c for branch in branches for c in branch.captures]
    attrs = dict(branches=tuple(branches), num_operands=len(operands))
    return _bind_results("switch", inputs, attrs, len(first))


def _describe(specs):
    return "[" + ", ".join(f"{dtype}{tuple(shape)}" for shape, dtype in specs) + "]"


# -- gradients --------------------------------------------------------------------------------------------
def _pullback(graph_fn, args, cotangents, sources):
    """Inline `graph_fn` on `args` in the graph being traced and return d<outputs, cotangents>/d
    sources (cotangents: {output position: tensor}; sources: tensors of this graph)."""
    from kgraph.compiler.autodiff import gradients

    graph = current_graph()
    outputs = inline(graph_fn, args)
    terms = [ops.sum(ops.multiply(outputs[k], ct)) for k, ct in cotangents.items()]
    if not terms or not sources:
        return [ops.zeros_like(s) for s in sources]
    target = functools.reduce(ops.add, terms)
    return [SymbolicTensor(graph, g) for g in gradients(graph, target.node_id, [s.node_id for s in sources])]


def _float_positions(values):
    return [k for k, v in enumerate(values) if is_float(v.dtype)]


def _scan_grad(ctx):
    attrs = ctx.attrs
    body, carry_count, reverse = attrs["body"], attrs["num_carry"], attrs["reverse"]
    carries, xs, captures = _scan_parts(attrs, list(ctx.inputs))
    upstream = ctx.upstream
    float_carries, float_xs, float_captures = (_float_positions(v) for v in (carries, xs, captures))
    outputs = output_specs(body)
    float_ys = [j for j in range(len(outputs) - carry_count)
                if upstream[carry_count + j] is not None and is_float(outputs[carry_count + j][1])]
    if not (float_carries or float_xs or float_captures):
        return [None] * len(ctx.inputs)

    # The carry entering each step, stacked: a scan that records them beside its results.
    def recording(carry, x):
        results = inline(body, carry + x + captures)
        return results[:carry_count], results[carry_count:] + list(carry)

    recorded_carries, recorded = scan_traced(recording, carries, xs, attrs["length"], reverse)
    y_count = len(outputs) - carry_count
    history = recorded[y_count:]
    # The recording scan computes every result of this one: readers move over to it, and the
    # original loop, left unread, is dropped (the forward pass runs once, not twice).
    graph = current_graph()
    for output, replacement in zip(ctx.output, recorded_carries + recorded[:y_count]):
        if output is not None:
            graph.replace_uses(output.node_id, replacement.node_id)

    def backward(state, step):
        carry_grads, capture_grads = state[:len(float_carries)], state[len(float_carries):]
        history_t, x_t, y_grads = (step[:carry_count], step[carry_count:carry_count + len(xs)],
                                   step[carry_count + len(xs):])
        graph = current_graph()
        inner_captures = list(captures)
        for k in float_captures:  # placeholders to differentiate by (captured explicitly)
            inner_captures[k] = SymbolicTensor(graph, graph.capture(captures[k]))
        cotangents = dict(zip(float_carries, carry_grads))
        cotangents.update({carry_count + j: g for j, g in zip(float_ys, y_grads)})
        sources = ([history_t[k] for k in float_carries] + [x_t[k] for k in float_xs]
                   + [inner_captures[k] for k in float_captures])
        grads = _pullback(body, history_t + x_t + inner_captures, cotangents, sources)
        n_c, n_x = len(float_carries), len(float_xs)
        new_captures = [ops.add(a, g) for a, g in zip(capture_grads, grads[n_c + n_x:])]
        return grads[:n_c] + new_captures, grads[n_c:n_c + n_x]

    final = [upstream[k] if upstream[k] is not None else ops.zeros_like(carries[k]) for k in float_carries]
    init = final + [ops.zeros_like(captures[k]) for k in float_captures]
    steps = history + list(xs) + [upstream[carry_count + j] for j in float_ys]
    state, x_grads = scan_traced(backward, init, steps, attrs["length"], not reverse)
    grads = [None] * len(ctx.inputs)
    for position, k in enumerate(float_carries):
        grads[k] = state[position]
    for position, k in enumerate(float_xs):
        grads[carry_count + k] = x_grads[position]
    for position, k in enumerate(float_captures):
        grads[carry_count + len(xs) + k] = state[len(float_carries) + position]
    return grads


def _switch_grad(ctx):
    attrs = ctx.attrs
    selector, operands, captures = _switch_parts(attrs, list(ctx.inputs))
    branches = attrs["branches"]
    float_outputs = [k for k, (_, dtype) in enumerate(output_specs(branches[0]))
                     if is_float(dtype) and ctx.upstream[k] is not None]
    if not float_outputs:
        return [None] * len(ctx.inputs)
    cotangents = [ctx.upstream[k] for k in float_outputs]
    float_operands = _float_positions(operands)
    float_captures = [_float_positions(c) for c in captures]
    flat_captures = [c for own in captures for c in own]
    n_o, n_c = len(operands), len(flat_captures)

    def branch_grad(b):
        def fn(*args):
            own_operands, all_captures, cts = args[:n_o], list(args[n_o:n_o + n_c]), args[n_o + n_c:]
            start = sum(len(c) for c in captures[:b])
            own_captures = all_captures[start:start + len(captures[b])]
            sources = [own_operands[k] for k in float_operands] + [own_captures[k] for k in float_captures[b]]
            grads = _pullback(branches[b], list(own_operands) + own_captures,
                              dict(zip(float_outputs, cts)), sources)
            results = grads[:len(float_operands)]
            offset = 0
            for c, positions in enumerate(float_captures):
                for k in positions:
                    if c == b:
                        results.append(grads[len(float_operands) + positions.index(k)])
                    else:
                        results.append(ops.zeros_like(all_captures[offset + k]))
                offset += len(captures[c])
            return results
        return fn

    results = switch_traced(selector, [branch_grad(b) for b in range(len(branches))],
                            list(operands) + flat_captures + cotangents)
    grads = [None] * len(ctx.inputs)
    for position, k in enumerate(float_operands):
        grads[1 + k] = results[position]
    position, offset = len(float_operands), 1 + n_o
    for c, positions in enumerate(float_captures):
        for k in positions:
            grads[offset + k] = results[position]
            position += 1
        offset += len(captures[c])
    return grads


# -- samples (the registry's test cases) ------------------------------------------------------------------
def _while_samples(rng, dtype="float32"):
    def cond(i, x):
        return ops.less(i, 3)

    def body(i, x):
        return [ops.add(i, 1), ops.add(ops.multiply(x, 0.5), ops.tanh(x))]

    i, x = np.zeros((), "int32"), rng.standard_normal((4, 3)).astype(dtype)
    specs = [((), "int32"), ((None, 3), dtype)]
    cond_graph = trace_function(cond, specs, "sample.cond")
    body_graph = trace_function(body, specs, "sample.body")
    attrs = dict(cond=cond_graph, body=body_graph, num_carry=2, num_outputs=2)
    return [([i, x], dict(attrs, index=1)), ([i, x], dict(attrs, index=0))]


def _scan_samples(rng, dtype="float32"):
    w = rng.standard_normal((3, 3)).astype(dtype) * 0.5
    specs = [((None, 3), dtype), ((None, 3), dtype), ((3, 3), dtype)]

    def body(h, x, weights):
        h = ops.tanh(ops.add(ops.matmul(h, weights), x))
        return [h, ops.multiply(h, h)]

    graph = trace_function(body, specs, "sample.scan")
    h0, xs = rng.standard_normal((2, 3)).astype(dtype), rng.standard_normal((4, 2, 3)).astype(dtype)
    attrs = dict(body=graph, num_carry=1, num_xs=1, length=4, num_outputs=2)
    return [([h0, xs, w], dict(attrs, index=0, reverse=False)), ([h0, xs, w], dict(attrs, index=1, reverse=True))]


def _switch_samples(rng, dtype="float32"):
    specs = [((None, 3), dtype), ((3,), dtype)]
    branches = (trace_function(lambda x, b: [ops.multiply(ops.sin(x), b)], specs, "sample.branch0"),
                trace_function(lambda x, b: [ops.add(ops.square(x), b)], specs, "sample.branch1"))
    x, b = rng.standard_normal((2, 3)).astype(dtype), rng.standard_normal(3).astype(dtype)
    attrs = dict(branches=branches, num_operands=2, index=0, num_outputs=1)
    return [([np.array(k, "int32"), x, b], attrs) for k in (0, 1)]


register(OpDef("while_loop", "control", _while_infer, _while_reference, samples=_while_samples,
               differentiable=False, doc="Loop variables after body runs while cond holds.",
               extra={"siblings": siblings, "grad_error": (
                   "while_loop is not reverse-differentiable: its trip count depends on the data. Use "
                   "fori_loop with Python int bounds, or scan, which kgraph differentiates")}))
# The function graphs in a sample's attrs are traced for one dtype: the registry's float64
# gradient check takes its own samples (tests/test_ops.py).
register(OpDef("scan", "control", _scan_infer, _scan_reference, grad=_scan_grad, samples=_scan_samples,
               doc="carry, y = body(carry, x) over the leading axis of xs; final carries and stacked ys.",
               extra={"siblings": siblings, "float64_samples": lambda rng: _scan_samples(rng, "float64")}))
register(OpDef("switch", "control", _switch_infer, _switch_reference, grad=_switch_grad,
               samples=_switch_samples, doc="The results of branches[index](*operands).",
               extra={"siblings": siblings, "float64_samples": lambda rng: _switch_samples(rng, "float64")}))
