"""Renders a fused, memory-planned graph into one Python module of numba kernels.

The module holds one @njit kernel per group and one @njit `entry` that carves every
intermediate out of preallocated arenas and calls the kernels in order, so running a
whole graph (a full training step) is one call from Python.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from kgraph.compiler.lower.numba import control
from kgraph.compiler.lower.numba import kernels as kernel_modules
from kgraph.compiler.lower.numba.scalar import NumbaScalarOps, _literal
from kgraph.compiler.passes.conv_pool import relu_mask_source
from kgraph.compiler.passes.memory import linear_size
from kgraph.ops import get_op
from kgraph.ops import random as random_ops
from kgraph.ops.registry import ELEMENTWISE
from kgraph.ops.shapes import num_elements

# The modules (kgraph.ops.conv the module, not keras.ops.conv the function of the same name).
conv_ops = importlib.import_module("kgraph.ops.conv")
pool_ops = importlib.import_module("kgraph.ops.pool")
recurrent_ops = importlib.import_module("kgraph.ops.recurrent")
linalg_ops = importlib.import_module("kgraph.ops.linalg_lapack")

JIT = '@njit(cache=True, error_model="numpy")'
JIT_REDUCE = '@njit(cache=True, error_model="numpy", fastmath={"reassoc"})'
REDUCTIONS = ("sum", "mean", "max", "min", "prod")  # the combines KernelWriter.reduction renders


class LoweringError(NotImplementedError):
    """A node the numba backend cannot lower; the message names the op."""


@dataclass
class ModuleSignature:
    """What the runtime passes to `entry`, in order."""

    placeholders: list  # node ids
    variable_nodes: list  # node ids of variable reads
    constants: list  # node ids of constants passed as arrays
    arena_dtypes: list  # dtypes, one arena each


def _is_inlined_constant(node):
    return node.op == "constant" and node.payload.size == 1


def _scalar_literal(node):
    return _literal(node.payload.reshape(-1)[0].item(), node.dtype)


def _cast_expr(expr, dtype):
    if dtype == "bool":
        return f"bool({expr})"
    return f"np.{dtype}({expr})"


def _dim(d):
    return "n" if d is None else str(d)


def _shape_tuple(shape):
    dims = [_dim(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _linear(expr):
    coefficient, constant = expr
    if coefficient and constant:
        return f"{coefficient} * n + {constant}"
    return f"{coefficient} * n" if coefficient else str(constant)


# -- expression rendering -----------------------------------------------------------------------
def _expression_lines(graph, members, load):
    """Statements computing each member's scalar value; `load(id)` gives an input's scalar."""
    handler = NumbaScalarOps()
    names, lines = {}, []
    for position, node_id in enumerate(members):
        node = graph.node(node_id)
        args = [names[i] if i in names else load(i) for i in node.inputs]
        handler.dtype = node.dtype
        expr = get_op(node.op).scalar(handler, *args, **node.attrs)
        # Names are local to the kernel (not node ids), so equal computations render to
        # equal source and share one compiled kernel.
        lines.append(f"t{position} = {_cast_expr(expr, node.dtype)}")
        names[node_id] = f"t{position}"
    return lines, names[members[-1]]


def _indent(lines, depth):
    return ["    " * depth + line for line in lines]


def _elementwise_body(graph, members, out_shape, externals, out_name, in_place=None, extras=None,
                      aliases=None):
    """Loop nest writing the members' result into `out_name`.

    externals: {value id: argument name}; in_place: a value id read from `out_name` itself
    at the same index (a matmul result its epilogue overwrites); extras: {member id:
    argument name} of further members to store; aliases: {input id: the name of the output
    argument (`out_name` or an extra's) that is the same array}, read through that output.
    Every element's stores follow all its loads, so an output may overwrite an input of
    the same shape.
    """
    rank = len(out_shape)
    extras = extras or {}
    aliases = aliases or {}
    body = []
    scalar_inputs = {i for i in externals if num_elements(graph.node(i).shape) == 1
                     and graph.node(i).shape != out_shape}
    full = all(graph.node(i).shape == out_shape for i in externals if i not in scalar_inputs)
    for i in scalar_inputs:
        body.append(f"s_{externals[i]} = {externals[i]}.reshape(-1)[0]")
    if full or rank <= 1:
        body.append(f"o_flat = {out_name}.reshape(-1)")
        for i in externals:
            if i not in scalar_inputs and i not in aliases:
                body.append(f"f_{externals[i]} = {externals[i]}.reshape(-1)")

        def load(i):
            if i == in_place or aliases.get(i) == out_name:
                return "o_flat[j]"
            if i in aliases:
                return f"g_{aliases[i]}[j]"
            node = graph.node(i)
            if _is_inlined_constant(node):
                return _scalar_literal(node)
            return f"s_{externals[i]}" if i in scalar_inputs else f"f_{externals[i]}[j]"

        for name in extras.values():
            body.append(f"g_{name} = {name}.reshape(-1)")
        lines, result = _expression_lines(graph, members, load)
        stores = [f"g_{name}[j] = t{members.index(i)}" for i, name in extras.items()] + [f"o_flat[j] = {result}"]
        body.append("for j in range(o_flat.shape[0]):")
        body += _indent(lines + stores, 1)
        return body

    # General broadcasting: loops over the leading axes, 1-D row views for the last one.
    depth = 0
    for axis in range(rank - 1):
        body.append("    " * depth + f"for i{axis} in range({out_name}.shape[{axis}]):")
        depth += 1
    lead = ", ".join(f"i{a}" for a in range(rank - 1))
    body.append("    " * depth + f"o_row = {out_name}[{lead}]")
    for name in extras.values():
        body.append("    " * depth + f"q_{name} = {name}[{lead}]")
    for i in externals:
        if i in scalar_inputs or i in aliases:
            continue
        shape = graph.node(i).shape
        offset = rank - len(shape)
        index = [("0" if d == 1 and out_shape[a + offset] != 1 else f"i{a + offset}")
                 for a, d in enumerate(shape[:-1]) if a + offset < rank - 1]
        if len(shape) == 0:
            continue
        row = f"{externals[i]}[{', '.join(index)}]" if index else externals[i]
        body.append("    " * depth + f"r_{externals[i]} = {row}")

    def load(i):
        if i == in_place or aliases.get(i) == out_name:
            return "o_row[j]"
        if i in aliases:
            return f"q_{aliases[i]}[j]"
        node = graph.node(i)
        if _is_inlined_constant(node):
            return _scalar_literal(node)
        if i in scalar_inputs:
            return f"s_{externals[i]}"
        last = node.shape[-1]
        return f"r_{externals[i]}[0]" if last == 1 and out_shape[-1] != 1 else f"r_{externals[i]}[j]"

    lines, result = _expression_lines(graph, members, load)
    stores = [f"q_{name}[j] = t{members.index(i)}" for i, name in extras.items()] + [f"o_row[j] = {result}"]
    body.append("    " * depth + "for j in range(o_row.shape[0]):")
    body += _indent(lines + stores, depth + 1)
    return body


# -- kernels per group kind ---------------------------------------------------------------------
class KernelWriter:
    def __init__(self, graph, signature_names):
        self.graph = graph
        self.names = signature_names  # value id -> name in entry
        self.sources = []
        self.kernel_modules = set()  # modules of generic kernels the templates call
        self.blas_threads = False  # whether a kernel sets BLAS's thread count (imports its controls)
        self.functions = {}  # alias -> module name of each compiled control-flow function
        self.control_functions = {}  # id(group) -> its CompiledFunctions
        self._emitted = {}  # (kind, args, body, jit) -> kernel name

    def _external_args(self, group, skip=()):
        externals = [i for i in group.inputs
                     if i not in skip and not _is_inlined_constant(self.graph.node(i))]
        return externals, {i: f"a{k}" for k, i in enumerate(externals)}

    def _emit(self, kind, args, body, jit=JIT):
        """The name of a kernel with this body, rendering it unless an equal one exists."""
        key = (kind, tuple(args), tuple(body), jit)
        name = self._emitted.get(key)
        if name is None:
            name = self._emitted[key] = f"k{len(self.sources)}_{kind}"
            source = [jit, f"def {name}({', '.join(args)}):"] + _indent(body, 1)
            self.sources.append("\n".join(source))
        return name

    def elementwise(self, group):
        externals, arg_names = self._external_args(group)
        out_shape = self.graph.node(group.output).shape
        extras = {i: f"e{k}" for k, i in enumerate(group.extra_outputs)}
        # An input that is also an output (an optimizer's update in place) is read through the
        # output: one pointer at one index, which LLVM vectorizes; through two pointers to one
        # array its overlap check fails and the scalar loop runs (Adam's update 3.4x slower).
        written = {self.names[o]: name for o, name in [*extras.items(), (group.output, "out")] if o in self.names}
        aliases = {i: written[self.names[i]] for i in externals if i in self.names and self.names[i] in written}
        body = _elementwise_body(self.graph, group.nodes, out_shape, arg_names, "out", extras=extras,
                                 aliases=aliases)
        name = self._emit("loop", list(arg_names.values()) + list(extras.values()) + ["out"], body)
        return name, externals

    def control(self, group):
        """A loop or branch calling its compiled functions (kgraph.compiler.lower.numba.control)."""
        params, body, inputs = control.render(self.graph, group, self.control_functions[id(group)])
        name = self._emit(self.graph.node(group.output).op, params, body)
        return name, inputs

    def matmul(self, group):
        graph = self.graph
        matmul_id = next(n for n in group.nodes if graph.node(n).op == "matmul")
        node = graph.node(matmul_id)
        a_id, b_id = node.inputs
        for operand in (a_id, b_id):
            if not graph.node(operand).dtype.startswith("float"):
                raise LoweringError(f"numba backend: matmul of {graph.node(operand).dtype} "
                                    "operands is not supported (cast to float32)")
        epilogue = [n for n in group.nodes if n != matmul_id]
        read_by_epilogue = {i for n in epilogue for i in graph.node(n).inputs}
        externals, arg_names = self._external_args(
            group, skip=[i for i in group.inputs if i not in read_by_epilogue or i == matmul_id])
        a_name, b_name = "ma", "mb"
        operand_a = "ma.T" if node.attrs.get("transpose_a") else "ma"
        operand_b = "mb.T" if node.attrs.get("transpose_b") else "mb"
        args = [a_name, b_name] + [arg_names[i] for i in externals] + ["out"]
        rank = len(node.shape)
        if rank == 2 and node.dtype in ("float32", "float64") and all(
                graph.node(i).dtype == node.dtype for i in (a_id, b_id)):
            body = self._gemm(node)
        elif rank == 2:
            body = [f"np.dot({operand_a}, {operand_b}, out)"]
        else:
            if epilogue:
                raise LoweringError("numba backend: batched matmul with an epilogue")
            body = self._batched_matmul(node, graph.node(a_id), graph.node(b_id))
        if epilogue:
            body += _elementwise_body(graph, epilogue, graph.node(group.output).shape, arg_names,
                                      "out", in_place=matmul_id)
        name = self._emit("matmul", args, body)
        return name, [a_id, b_id] + externals

    def _gemm(self, node):
        """A 2-D GEMM through kgraph.ops.matmul's kernel: large products split over numba's
        threads, single-threaded BLAS in each (BLAS's own threads spin against other work)."""
        import numba

        self.kernel_modules.add("kgraph.ops.matmul")
        ta, tb = bool(node.attrs.get("transpose_a")), bool(node.attrs.get("transpose_b"))
        inner = "ma.shape[0]" if ta else "ma.shape[1]"
        return ["if ma.size == 0 or mb.size == 0:",
                "    flat = out.reshape(-1)",
                "    for j in range(flat.shape[0]):",
                "        flat[j] = 0",
                "elif out.size:",
                f"    gemm_threads({np.dtype(node.dtype).itemsize}, {int(ta)}, {int(tb)}, out.shape[0], out.shape[1], "
                f"{inner}, ma.ctypes.data, ma.shape[1], mb.ctypes.data, mb.shape[1], out.ctypes.data, out.shape[1], "
                f"{int(numba.config.NUMBA_NUM_THREADS)})"]

    def _batched_matmul(self, node, a, b):
        batch = node.shape[:-2]
        lines = ["O = out.reshape((-1, out.shape[-2], out.shape[-1]))"]
        for label, operand, flag in (("A", a, "transpose_a"), ("B", b, "transpose_b")):
            source = "ma" if label == "A" else "mb"
            own = operand.shape[:-2]
            suffix = ".T" if node.attrs.get(flag) else ""
            if own == batch:
                lines.append(f"{label} = {source}.reshape((-1, {source}.shape[-2], {source}.shape[-1]))")
                lines.append(f"{label}_index = 1")
            elif all(d == 1 for d in own):
                lines.append(f"{label} = {source}.reshape((1, {source}.shape[-2], {source}.shape[-1]))")
                lines.append(f"{label}_index = 0")
            else:
                raise LoweringError(f"numba backend: matmul batch broadcasting {a.shape} @ {b.shape}")
            lines.append(f"{label}_t = {'True' if suffix else 'False'}")
        # numba's np.dot calls the BLAS the GEMM kernel does: at one thread, like it (see
        # docs/design.md, "GEMM threading": BLAS's own threads spin against other work).
        self.blas_threads = True
        lines += ["saved = blas_get_threads()",
                  "blas_set_threads(1)",
                  "for i in range(O.shape[0]):",
                  "    a_i = A[i * A_index]",
                  "    b_i = B[i * B_index]",
                  "    if A_t and B_t:",
                  "        np.dot(a_i.T, b_i.T, O[i])",
                  "    elif A_t:",
                  "        np.dot(a_i.T, b_i, O[i])",
                  "    elif B_t:",
                  "        np.dot(a_i, b_i.T, O[i])",
                  "    else:",
                  "        np.dot(a_i, b_i, O[i])",
                  "blas_set_threads(saved)"]
        return lines

    def reduction(self, group):
        graph = self.graph
        node = graph.node(group.output)
        axes = node.attrs["axes"]
        reduced_input = graph.node(node.inputs[0])
        if list(axes) != list(range(axes[0], axes[0] + len(axes))):
            raise LoweringError(f"numba backend: {node.op} over non-contiguous axes {axes}")
        prologue = group.nodes[:-1]
        externals, arg_names = self._external_args(group)
        shape = reduced_input.shape
        first, last = axes[0], axes[-1] + 1
        carrier = next(i for i in externals if graph.node(i).shape == shape)
        ref = arg_names[carrier]

        def product(lo, hi):
            return " * ".join([f"{ref}.shape[{a}]" for a in range(lo, hi)]) or "1"

        body = [f"outer = {product(0, first)}", f"red = {product(first, last)}",
                f"inner = {product(last, len(shape))}",
                "O = out.reshape((outer, inner))"]
        scalars = [i for i in externals if graph.node(i).shape != shape]
        for i in scalars:
            body.append(f"s_{arg_names[i]} = {arg_names[i]}.reshape(-1)[0]")
        for i in externals:
            if i not in scalars:
                body.append(f"X_{arg_names[i]} = {arg_names[i]}.reshape((outer, red, inner))")
        combine = node.op
        if combine not in REDUCTIONS:
            raise LoweringError(f"numba backend: no reduction kernel for '{combine}'")
        dtype = node.dtype
        init = {"sum": 0, "mean": 0, "prod": 1,
                "max": -np.inf if dtype.startswith("float") else np.iinfo(dtype).min,
                "min": np.inf if dtype.startswith("float") else np.iinfo(dtype).max}[combine]
        init_literal = _literal(init, dtype)

        def combine_expr(acc, value):
            return {"sum": f"{acc} + {value}", "mean": f"{acc} + {value}", "prod": f"{acc} * {value}",
                    "max": f"max({acc}, {value})", "min": f"min({acc}, {value})"}[combine]

        def loader(index):
            def load(i):
                value = graph.node(i)
                if _is_inlined_constant(value):
                    return _scalar_literal(value)
                return f"s_{arg_names[i]}" if i in scalars else f"X_{arg_names[i]}[{index}]"
            return load

        if prologue:
            lines, result = _expression_lines(graph, prologue, loader("o, r, 0"))
            lines_inner, result_inner = _expression_lines(graph, prologue, loader("o, r, i"))
        else:
            lines, result = [], loader("o, r, 0")(node.inputs[0])
            lines_inner, result_inner = [], loader("o, r, i")(node.inputs[0])
        finish = f" / np.{dtype if dtype.startswith('float') else 'float32'}(red)" if combine == "mean" else ""
        body += ["if inner == 1:",
                 "    for o in range(outer):",
                 f"        acc = {init_literal}",
                 "        for r in range(red):"]
        body += _indent(lines + [f"acc = {combine_expr('acc', result)}"], 3)
        body += [f"        O[o, 0] = acc{finish}",
                 "else:",
                 "    for o in range(outer):",
                 "        O_row = O[o]",
                 "        for i in range(inner):",
                 f"            O_row[i] = {init_literal}",
                 "        for r in range(red):",
                 "            for i in range(inner):"]
        body += _indent(lines_inner + [f"O_row[i] = {combine_expr('O_row[i]', result_inner)}"], 4)
        if finish:
            body += ["        for i in range(inner):", f"            O_row[i] = O_row[i]{finish}"]
        name = self._emit("reduce", list(arg_names.values()) + ["out"], body, jit=JIT_REDUCE)
        return name, externals

    def kernel(self, group):
        graph = self.graph
        heavy_id = next(n for n in group.nodes if get_op(graph.node(n).op).kind != ELEMENTWISE)
        node = graph.node(heavy_id)
        template = KERNEL_TEMPLATES.get(node.op)
        if template is None:
            raise LoweringError(f"numba backend: op '{node.op}' has no kernel template")
        if getattr(template, "kernels", None):
            self.kernel_modules.add(template.kernels)
        inputs = list(node.inputs)
        args = [f"a{k}" for k in range(len(inputs))]
        input_nodes = [graph.node(i) for i in inputs]
        epilogue = [n for n in group.nodes if n != heavy_id]
        if not epilogue:
            name = self._emit(node.op, args + ["out"], template(node, input_nodes))
            return name, inputs
        # A fused elementwise epilogue (the op sets extra["epilogue"]): bias and activation go
        # to templates that apply them per block; anything else runs in place after the op.
        read = {i for n in epilogue for i in graph.node(n).inputs}
        externals = [i for i in group.inputs if i in read and i != heavy_id
                     and not _is_inlined_constant(graph.node(i))]
        names = {i: f"e{k}" for k, i in enumerate(externals)}
        pattern = _bias_activation(graph, epilogue, heavy_id)
        if pattern is not None and pattern[1] in (None,) + tuple(getattr(template, "epilogue", ())):
            bias, activation = pattern
            body = template(node, input_nodes, bias=names.get(bias), activation=activation)
        elif getattr(template, "positive_mask", False) and _positive_mask(graph, epilogue, heavy_id):
            body = template(node, input_nodes, positive_mask=True)
        else:
            body = template(node, input_nodes) + _elementwise_body(
                graph, epilogue, graph.node(group.output).shape, names, "out", in_place=heavy_id)
        name = self._emit(node.op, args + list(names.values()) + ["out"], body)
        return name, inputs + externals


def _positive_mask(graph, members, value):
    """Whether `members` compute value * cast(x > 0) for x the first input of `value`'s op:
    the gradient of a relu that produced x (max pooling's input), which the kernel applies."""
    if len(members) != 3:
        return False
    greater, cast, multiply = (graph.node(m) for m in members)
    return (greater.op == "greater" and cast.inputs == (greater.id,) and cast.dtype == graph.node(value).dtype
            and relu_mask_source(graph, cast.id) == graph.node(value).inputs[0]
            and multiply.op == "multiply" and sorted(multiply.inputs) == sorted((value, cast.id)))


def _bias_activation(graph, members, value):
    """(bias id or None, activation name or None) when `members` compute
    activation(value + bias) with a bias along the last axis; None for other epilogues."""
    bias = activation = None
    current = value
    for member in members:
        node = graph.node(member)
        if node.op == "add" and bias is None and activation is None and current in node.inputs:
            other = node.inputs[1] if node.inputs[0] == current else node.inputs[0]
            shape = graph.node(other).shape
            width = graph.node(value).shape[-1]
            if other == current or not shape or shape[-1] != width or any(d != 1 for d in shape[:-1]):
                return None
            if graph.node(other).dtype != node.dtype:
                return None
            bias = other
        elif node.op == "relu" and activation is None and node.inputs == (current,):
            activation = "relu"
        else:
            return None
        current = member
    return bias, activation


# -- templates for single-op kernels --------------------------------------------------------------
def _colons(rank):
    return ", ".join([":"] * rank)


def _slice_text(begin, end, step):
    parts = []
    for b, e, s in zip(begin, end, step):
        text = f"{'' if b is None else b}:{'' if e is None else e}"
        if s != 1:
            text += f":{s}"
        parts.append(text)
    return ", ".join(parts)


def _transpose(node, inputs):
    perm = node.attrs["perm"]
    rank = len(perm)
    inverse = {p: k for k, p in enumerate(perm)}
    lines, depth = [], 0
    for axis in range(rank):
        lines.append("    " * depth + f"for i{axis} in range(out.shape[{axis}]):")
        depth += 1
    source = ", ".join(f"i{inverse[d]}" for d in range(rank))
    lines.append("    " * depth + f"out[{', '.join(f'i{a}' for a in range(rank))}] = a0[{source}]")
    return lines


def _concatenate(node, inputs):
    axis = node.attrs["axis"]
    lines = ["offset = 0"]
    for k in range(len(inputs)):
        index = [":"] * len(node.shape)
        index[axis] = f"offset:offset + a{k}.shape[{axis}]"
        lines.append(f"out[{', '.join(index)}] = a{k}")
        lines.append(f"offset += a{k}.shape[{axis}]")
    return lines


def _slice(node, inputs):
    text = _slice_text(node.attrs["begin"], node.attrs["end"], node.attrs["step"])
    lines = []
    for axis, (d, end) in enumerate(zip(inputs[0].shape, node.attrs["end"])):
        if d is None and node.shape[axis] is not None:  # a fixed-size slice of the batch
            lines += [f"if a0.shape[{axis}] < {end}:",
                      f"    raise ValueError('slice: the batch is smaller than the slice end {end}')"]
    return lines + [f"out[{_colons(len(node.shape))}] = a0[{text}]"]


def _unslice(node, inputs):
    text = _slice_text(node.attrs["begin"], node.attrs["end"], node.attrs["step"])
    return ["out.fill(0)", f"out[{text}] = a0"]


def _pad(node, inputs):
    pads = node.attrs["pad_width"]
    index = ", ".join(f"{lo}:{lo} + a0.shape[{k}]" for k, (lo, hi) in enumerate(pads))
    fill = _literal(node.attrs["constant_value"], node.dtype)
    return [f"out.fill({fill})", f"out[{index}] = a0"]


def _gather_views(axis, data_rank, data="a0"):
    outer = " * ".join([f"{data}.shape[{a}]" for a in range(axis)]) or "1"
    inner = " * ".join([f"{data}.shape[{a}]" for a in range(axis + 1, data_rank)]) or "1"
    return [f"outer = {outer}", f"inner = {inner}", f"size = {data}.shape[{axis}]"]


def _take(node, inputs):
    axis = node.attrs["axis"]
    return _gather_views(axis, len(inputs[0].shape)) + [
        "I = a1.reshape(-1)",
        "X = a0.reshape((outer, size, inner))",
        "O = out.reshape((outer, I.shape[0], inner))",
        "for o in range(outer):",
        "    for j in range(I.shape[0]):",
        "        k = I[j] % size",  # indices wrap around the axis, as the reference's do
        "        for i in range(inner):",
        "            O[o, j, i] = X[o, k, i]"]


def _take_grad(node, inputs):
    axis = node.attrs["axis"]
    return _gather_views(axis, len(node.shape), data="out") + [
        "I = a1.reshape(-1)",
        "G = a0.reshape((outer, I.shape[0], inner))",
        "O = out.reshape((outer, size, inner))",
        "out.fill(0)",
        "for o in range(outer):",
        "    for j in range(I.shape[0]):",
        "        k = I[j] % size",  # indices wrap around the axis, as the reference's do
        "        for i in range(inner):",
        "            O[o, k, i] += G[o, j, i]"]


def _arg_extremum(node, inputs):
    axis = node.attrs["axis"]
    better = ">" if node.op == "argmax" else "<"
    return _gather_views(axis, len(inputs[0].shape)) + [
        "X = a0.reshape((outer, size, inner))",
        "O = out.reshape((outer, inner))",
        "for o in range(outer):",
        "    for i in range(inner):",
        "        best = X[o, 0, i]",
        "        index = 0",
        "        for k in range(1, size):",
        "            value = X[o, k, i]",
        f"            if value {better} best or (value != value and best == best):",
        "                best = value",
        "                index = k",
        "        O[o, i] = index"]


def _reduced_count(node, inputs):
    count = " * ".join(f"a0.shape[{a}]" for a in node.attrs["axes"]) or "1"
    return [f"out[()] = np.{node.dtype}({count})"]


def _broadcast_or_copy(node, inputs):
    return [f"out[{_colons(len(node.shape))}] = a0"]


KERNEL_TEMPLATES = {
    "transpose": _transpose, "concatenate": _concatenate, "slice": _slice, "unslice": _unslice,
    "pad": _pad, "take": _take, "take_grad": _take_grad, "argmax": _arg_extremum,
    "argmin": _arg_extremum, "reduced_count": _reduced_count,
    "random_uniform": random_ops.numba_template,
    **conv_ops.NUMBA_TEMPLATES, **pool_ops.NUMBA_TEMPLATES, **recurrent_ops.NUMBA_TEMPLATES,
    **linalg_ops.NUMBA_TEMPLATES, **importlib.import_module("kgraph.ops.attention").NUMBA_TEMPLATES,
    **importlib.import_module("kgraph.ops.conv_pool").NUMBA_TEMPLATES,
}


# -- the module -----------------------------------------------------------------------------------
def render_module(graph, groups, plan):
    """Source text of the module, and the signature of its `entry` function."""
    placeholders = list(graph.inputs)
    variable_nodes = graph.variable_node_ids()
    writer = KernelWriter(graph, {})
    # Control-flow functions compile first: their constants become inputs of their groups.
    for index, functions in control.compile_functions(graph, groups, writer).items():
        writer.control_functions[id(groups[index])] = functions
    used_constants = []
    read = [i for group in groups for i in group.inputs] + graph.roots()
    for i in read:
        if graph.node(i).op == "constant" and i not in used_constants:
            used_constants.append(i)
    arena_dtypes = sorted(plan.arena_sizes)

    names = {}
    for k, i in enumerate(placeholders):
        names[i] = f"x{k}"
    for k, i in enumerate(variable_nodes):
        names[i] = f"w{k}"
    for k, i in enumerate(used_constants):
        names[i] = f"c{k}"
    args = [names[i] for i in placeholders + variable_nodes + used_constants]
    args += [f"arena_{d}" for d in arena_dtypes]

    writer.names = names
    entry = []
    batch_source = next(((names[i], a) for i in placeholders
                         for a, d in enumerate(graph.node(i).shape) if d is None), None)
    entry.append(f"n = {batch_source[0]}.shape[{batch_source[1]}]" if batch_source else "n = 0")
    entry.append("fp_state = denormals_off()  # flush denormals to zero while the step runs (fpenv.py)")
    for group in groups:
        out_id = group.output
        node = graph.node(out_id)
        if group.kind == "view":
            source = names[node.inputs[0]]
            names[out_id] = f"v{out_id}"
            target = tuple(node.attrs["shape"])
            entry.append(f"v{out_id} = {source}.reshape({target if len(target) != 1 else f'({target[0]},)'})")
            continue
        for output in group.outputs:
            if output in plan.in_place:
                names[output] = names[plan.in_place[output]]
                continue
            buffer = plan.buffers[output]
            shape = graph.node(output).shape
            count = _linear(linear_size(shape))
            offset = _linear(buffer.offset)
            names[output] = f"b{output}"
            entry.append(f"b{output} = arena_{buffer.dtype}[{offset}:{offset} + {count}]"
                         f".reshape({_shape_tuple(shape)})")
        render = getattr(writer, group.kind)
        kernel_name, kernel_inputs = render(group)
        call_args = [names[i] for i in kernel_inputs] + [names[o] for o in group.extra_outputs]
        call_args.append(names[out_id])
        entry.append(f"{kernel_name}({', '.join(call_args)})")
    for var_id, new_id in graph.state_updates.items():
        if plan.in_place.get(new_id) == var_id:
            continue  # the group wrote the new value into the variable itself
        rank = len(graph.node(var_id).shape)
        target = f"{names[var_id]}[{_colons(rank)}]" if rank else f"{names[var_id]}[()]"
        value = names[new_id] if rank else f"{names[new_id]}[()]"
        entry.append(f"{target} = {value}")
    outputs = [names[o] for o in graph.outputs]
    entry.append("denormals_restore(fp_state)")
    entry.append(f"return ({', '.join(outputs)}{',' if len(outputs) == 1 else ''})")

    header = [f"# Generated by kgraph for graph '{graph.name}'. Do not edit.",
              "import math", "", "import numpy as np", "from numba import njit", "",
              "from kgraph.compiler.lower.numba.fpenv import denormals_off, denormals_restore", ""]
    if writer.blas_threads:
        header[-1:-1] = ["from kgraph.compiler.lower.numba.blas import blas_get_threads, blas_set_threads"]
    if writer.functions:  # entries of compiled control-flow functions (modules loaded before this one)
        header[-1:-1] = ["import sys"]
        header += [f"{alias} = sys.modules[{module!r}].entry" for alias, module in sorted(writer.functions.items())]
        header.append("")
    if writer.kernel_modules:  # entries of heavy-op kernels (compiled once, cached by numba)
        header.append("from kgraph.compiler.lower.numba.kernels import load")
        header.append(f"# kernel sources {kernel_modules.source_hash()}")
        for module in sorted(writer.kernel_modules):
            kernels = kernel_modules.entry_names(module)
            header.append(f"{', '.join(kernels)}{',' if len(kernels) == 1 else ''} = load({module!r}, "
                          f"{', '.join(repr(k) for k in kernels)})")
        header.append("")
    source = "\n".join(header) + "\n\n" + "\n\n\n".join(writer.sources)
    source += f"\n\n\n{JIT}\ndef entry({', '.join(args)}):\n" + "\n".join(_indent(entry, 1)) + "\n"
    return source, ModuleSignature(placeholders, variable_nodes, used_constants, arena_dtypes)
