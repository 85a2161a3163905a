"""Control flow on the numba backend: loops and branches whose bodies are compiled graphs.

Each function graph of a while_loop, scan or switch (kgraph.ops.control_flow) compiles
through the whole pipeline into its own module, whose @njit `entry` the op's kernel calls:
a real `while`/`for` loop, or an `if` chain, inside the compiled step. The kernel allocates
the function's arenas once per call and keeps the loop variables in two buffers each,
swapped after every step, so a body may return its arguments in any order. Constants the
function's compilation keeps become inputs of the op's kernel (the outer module receives
them like its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CompiledFunction:
    """A function graph compiled to its own module."""

    alias: str  # the name its entry has in the outer module
    module: str  # its name in sys.modules
    executable: object  # kgraph.runtime.cpu.CpuExecutable
    constants: list  # outer-graph constant node ids carrying its constants, in entry order
    constant_args: list = field(default_factory=list)  # their parameter names in the op's kernel


def _compile(graph, function_graph, writer):
    from kgraph.compiler.passes.pipeline import compile_graph  # the whole pipeline, on the nested graph

    executable = compile_graph(function_graph)
    if executable.signature.variable_nodes:
        raise NotImplementedError("numba backend: a control-flow function reads variables that were not captured")
    module = executable.entry.py_func.__module__
    alias = f"f_{module.rsplit('_', 1)[-1]}"
    writer.functions[alias] = module
    constants = [graph.add_constant(array).id for array in executable.constants]
    return CompiledFunction(alias, module, executable, constants)


def compile_functions(graph, groups, writer):
    """{group index: [CompiledFunction]} for the control groups; each function's constants
    join its group's inputs, so the outer entry passes them on."""
    from kgraph.ops.control_flow import CONTROL_FLOW_OPS

    functions = {}
    for index, group in enumerate(groups):
        if group.kind != "control":
            continue
        node = graph.node(group.output)
        if node.op not in CONTROL_FLOW_OPS:
            raise NotImplementedError(f"numba backend: no control-flow lowering for '{node.op}'")
        graphs = (node.attrs["branches"] if node.op == "switch"
                  else (node.attrs["cond"], node.attrs["body"]) if node.op == "while_loop"
                  else (node.attrs["body"],))
        functions[index] = [_compile(graph, g, writer) for g in graphs]
        for function in functions[index]:
            group.inputs.extend(function.constants)
    return functions


# -- source ---------------------------------------------------------------------------------------------
def _colons(rank):
    return ", ".join([":"] * rank)


def _copy(target, source, rank):
    return f"{target}[()] = {source}[()]" if rank == 0 else f"{target}[{_colons(rank)}] = {source}"


def _call(function, args, prefix):
    """Lines allocating the function's arenas and the expression calling its entry on `args`
    (one (expression, batch axis) pair per placeholder: where the batch size can be read)."""
    executable = function.executable
    graph, signature, plan = executable.graph, executable.signature, executable.plan
    batch = next((f"{expr}.shape[{offset + axis}]" for (expr, offset), i in zip(args, signature.placeholders)
                  for axis, d in enumerate(graph.node(i).shape) if d is None), "0")
    lines = [f"{prefix}_n = {batch}"]
    arenas = []
    for dtype in signature.arena_dtypes:
        coefficient, constant = plan.arena_sizes[dtype]
        name = f"{prefix}_{dtype}"
        lines.append(f"{name} = np.empty(max({coefficient} * {prefix}_n + {constant}, 1), np.{dtype})")
        arenas.append(name)
    values = [expr for expr, _ in args]
    call = f"{function.alias}({', '.join(values + function.constant_args + arenas)})"
    return lines, call


def _carries(inputs, ranks):
    lines = []
    for k, (source, rank) in enumerate(zip(inputs, ranks)):
        lines += [f"A{k} = np.empty_like({source})", _copy(f"A{k}", source, rank), f"B{k} = np.empty_like({source})"]
    return lines


def _step(result, ranks):
    """Store a body's new loop variables in the spare buffers, then swap them in."""
    lines = [_copy(f"B{k}", f"{result}[{k}]", rank) for k, rank in enumerate(ranks)]
    if ranks:
        lines.append(", ".join(f"A{k}, B{k}" for k in range(len(ranks))) + " = "
                     + ", ".join(f"B{k}, A{k}" for k in range(len(ranks))))
    return lines


def _indent(lines, depth=1):
    return ["    " * depth + line for line in lines]


def render(graph, group, functions):
    """(kernel parameter names, body lines, kernel inputs) of a control group."""
    node = graph.node(group.output)
    inputs = list(node.inputs)
    params = [f"a{k}" for k in range(len(inputs))]
    for f, function in enumerate(functions):
        function.constant_args = [f"c{f}_{k}" for k in range(len(function.constants))]
        params += function.constant_args
        inputs += function.constants
    outputs = {graph.node(o).attrs["index"]: f"o{k}" for k, o in enumerate(group.extra_outputs + [group.output])}
    params += [outputs[graph.node(o).attrs["index"]] for o in group.extra_outputs + [group.output]]
    return params, RENDERERS[node.op](graph, node, functions, outputs), inputs


def _ranks(graph, node_ids):
    return [len(graph.node(i).shape) for i in node_ids]


def _while(graph, node, functions, outputs):
    cond, body = functions
    carry = node.attrs["num_carry"]
    cond_captures = len(node.attrs["cond"].inputs) - carry
    ranks = _ranks(graph, node.inputs[:carry])
    carries = [(f"A{k}", 0) for k in range(carry)]
    cond_args = carries + [(f"a{carry + k}", 0) for k in range(cond_captures)]
    body_args = carries + [(f"a{k}", 0) for k in range(carry + cond_captures, len(node.inputs))]
    cond_lines, cond_call = _call(cond, cond_args, "rc")
    body_lines, body_call = _call(body, body_args, "rb")
    lines = _carries([f"a{k}" for k in range(carry)], ranks) + cond_lines + body_lines
    lines += ["while True:",
              f"    ok = {cond_call}[0]",
              "    if not ok[()]:",
              "        break",
              f"    r = {body_call}"]
    lines += _indent(_step("r", ranks))
    lines += [_copy(name, f"A{k}", ranks[k]) for k, name in outputs.items()]
    return lines


def _scan(graph, node, functions, outputs):
    (body,) = functions
    carry, xs = node.attrs["num_carry"], node.attrs["num_xs"]
    ranks = _ranks(graph, node.inputs[:carry])
    x_ranks = [r - 1 for r in _ranks(graph, node.inputs[carry:carry + xs])]
    length = f"a{carry}.shape[0]" if xs else str(node.attrs["length"])
    slices = [(f"a{carry + k}[t]" if rank else f"a{carry + k}[t:t + 1].reshape(())", 0)
              for k, rank in enumerate(x_ranks)]
    # the batch size of a slice is read off the whole input, one axis further
    batch_sources = [(f"a{carry + k}", 1) for k in range(xs)]
    call_args = ([(f"A{k}", 0) for k in range(carry)] + slices
                 + [(f"a{k}", 0) for k in range(carry + xs, len(node.inputs))])
    lines_alloc, _ = _call(body, [(f"A{k}", 0) for k in range(carry)] + batch_sources
                           + call_args[carry + xs:], "rb")
    _, call = _call(body, call_args, "rb")
    y_ranks = [len(s) for s, _ in (_output_spec(graph, node, k) for k in range(carry, node.attrs["num_outputs"]))]
    lines = _carries([f"a{k}" for k in range(carry)], ranks) + lines_alloc
    lines += [f"length = {length}", "for s in range(length):",
              "    t = length - 1 - s" if node.attrs["reverse"] else "    t = s",
              f"    r = {call}"]
    for index, name in outputs.items():
        if index >= carry:
            rank = y_ranks[index - carry]
            lines.append(f"    {name}[t] = r[{index}][()]" if rank == 0 else
                         f"    {name}[t, {_colons(rank)}] = r[{index}]")
    lines += _indent(_step("r", ranks))
    lines += [_copy(name, f"A{k}", ranks[k]) for k, name in outputs.items() if k < carry]
    return lines


def _output_spec(graph, node, index):
    function = node.attrs["body"]
    out = function.node(function.outputs[index])
    return out.shape, out.dtype


def _switch(graph, node, functions, outputs):
    operands = node.attrs["num_operands"]
    lines = ["b = a0[()]"]
    start = 1 + operands
    last = len(functions) - 1
    for k, (function, branch) in enumerate(zip(functions, node.attrs["branches"])):
        count = len(branch.inputs) - operands
        args = [(f"a{1 + j}", 0) for j in range(operands)] + [(f"a{start + j}", 0) for j in range(count)]
        start += count
        alloc, call = _call(function, args, f"r{k}")
        test = "if" if k == 0 else "else" if k == last else "elif"
        lines.append(f"{test} b <= {k}:" if test != "else" else "else:")
        body = alloc + [f"r{k} = {call}"]
        body += [_copy(name, f"r{k}[{index}]", len(branch.node(branch.outputs[index]).shape))
                 for index, name in outputs.items()]
        lines += _indent(body)
    return lines


RENDERERS = {"while_loop": _while, "scan": _scan, "switch": _switch}
