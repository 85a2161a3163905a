"""Renders a fused, memory-planned graph into one module of Triton kernels and a launch list.

The fusion groups are the numba backend's (kgraph/compiler/passes/fusion.py): one
@triton.jit kernel per group, written to a real .py file (Triton's @jit reads source).
Every kernel takes raw pointers (arena slots carved by the memory plan, inputs,
variables, constants) and the batch size `n`; every static dimension is a literal in its
source, so index arithmetic divides by constants.

- elementwise: masked blocks over the flat output index; each input's offset comes from
  the flat index with static strides (broadcast axes contribute nothing; runs of kept
  or broadcast axes are merged, so a bias over (n, C) reads at `offs % C`);
- matmul: a tl.dot tiled template, batch on grid axis 2, with the elementwise epilogue
  (bias, activation, residual add) computed on the accumulator tile before the store;
- reduction: the input viewed as (outer, reduced, inner) like the numba backend; each
  program reduces a block of output rows over chunks of the reduced axis, with the
  elementwise prologue computed on each loaded tile;
- single-op kernels (transpose, concatenate, slice, unslice, pad, take, take_grad,
  argmax, argmin, reduced_count, random_uniform): index-map kernels over the output;
- views (reshape) cost nothing: they alias their source's pointer.

`render_module` returns the source and a `Program`: the launches in order, each with the
grid and block sizes as functions of the batch size (big blocks for the interpreter, a
small list of GPU configurations that the runtime times once per batch size for matmul).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kgraph.compiler.lower.triton import conv as conv_templates
from kgraph.compiler.lower.triton.scalar import HELPERS, TritonScalarOps, is_float, literal, tl_dtype
from kgraph.ops import get_op
from kgraph.ops import random as random_ops
from kgraph.ops.registry import ELEMENTWISE
from kgraph.ops.shapes import num_elements

PRECISIONS = ("ieee", "tf32", "tf32x3")
CONV_OPS = ("conv", "conv_input_grad", "conv_filter_grad")
REDUCTIONS = ("sum", "mean", "max", "min", "prod")  # combines of the reduction template


def renders(opdef):
    """Whether this backend renders the op of OpDef `opdef`: elementwise ops from their scalar
    formula, views, matmul and the reductions from their templates, any other op from a
    KernelWriter `_op_<name>` method or the convolution templates."""
    name = opdef.name
    if opdef.kind == ELEMENTWISE:
        return opdef.scalar is not None
    if opdef.view or name == "matmul" or name in REDUCTIONS or name in CONV_OPS:
        return True
    return hasattr(KernelWriter, f"_op_{name}")


class LoweringError(NotImplementedError):
    """A node the Triton backend cannot lower; the message names the op."""


# -- sizes ------------------------------------------------------------------------------------------
def _dim(d):
    return "n" if d is None else str(d)


def _prod(dims):
    """Source text of the product of `dims` (ints, None = n), folded where static."""
    constant, factors = 1, []
    for d in dims:
        if d is None:
            factors.append("n")
        else:
            constant *= int(d)
    if constant != 1 or not factors:
        factors.append(str(constant))
    return " * ".join(factors) if len(factors) == 1 else "(" + " * ".join(factors) + ")"


def numel(shape, n):
    total = 1
    for d in shape:
        total *= n if d is None else d
    return total


def pow2(x):
    return 1 << max(0, (max(int(x), 1) - 1).bit_length())


def _clamp_pow2(x, lo, hi):
    return max(lo, min(pow2(x), hi))


# -- launch description ---------------------------------------------------------------------------
@dataclass
class BufferRef:
    """Where a value lives: a placeholder, variable or constant array, or an arena slot."""

    kind: str  # "input" | "variable" | "constant" | "arena"
    dtype: str
    shape: tuple
    index: int = 0  # input / variable / constant position
    offset: tuple = (0, 0)  # arena slot: (coefficient of n, constant) in elements


@dataclass
class Launch:
    """One kernel launch: its arguments and, per batch size, grid and block sizes."""

    kernel: str  # name in the generated module (or in device_functions)
    args: list  # BufferRef | Callable[[n], int]
    grid: Callable  # (n, meta) -> tuple
    configs: Callable  # (n, interpret) -> list of meta dicts; the runtime times >1 on a GPU
    group: int = -1
    kind: str = ""
    idempotent: bool = False  # may run several times (autotuning): reads none of its outputs
    from_helpers: bool = False  # the kernel is in device_functions, not the generated module


@dataclass
class Program:
    placeholders: list
    variable_nodes: list
    constants: list
    arena_dtypes: list
    arena_sizes: dict
    launches: list = field(default_factory=list)
    outputs: list = field(default_factory=list)  # BufferRef per graph output
    # The smallest batch the kernels may read: a fixed-size slice of the batch axis needs
    # n >= its end (the numba kernel raises the same error).
    min_batch: int = 0


def _batch_arg(n):
    return n


def _min_batch(graph):
    """The largest end of a fixed-size slice of the batch axis (0 when there is none)."""
    ends = [0]
    for node in graph.nodes():
        if node.op == "slice":
            source = graph.node(node.inputs[0])
            ends += [end for d, out, end in zip(source.shape, node.shape, node.attrs["end"])
                     if d is None and out is not None]
    return max(ends)


# -- block-size choices ---------------------------------------------------------------------------
def _flat_configs(total_of):
    def configs(n, interpret):
        total = total_of(n)
        if interpret:  # the interpreter pays per program: a few big blocks
            return [dict(BLOCK=_clamp_pow2(total, 16, 1 << 16), num_warps=4)]
        return [dict(BLOCK=_clamp_pow2(total, 128, 1024), num_warps=4)]
    return configs


def _flat_grid(total_of):
    def grid(n, meta):
        return (max(1, -(-total_of(n) // meta["BLOCK"])),)
    return grid


def _rows_configs(rows_of, red_of, contiguous):
    def configs(n, interpret):
        rows, red = rows_of(n), red_of(n)
        if interpret:
            block_r = _clamp_pow2(red, 1, 4096)
            block_q = _clamp_pow2(rows, 1, max(1, (1 << 16) // block_r))
            return [dict(BLOCK_Q=block_q, BLOCK_R=block_r, num_warps=4)]
        if contiguous:  # rows are contiguous: lanes along the reduced axis
            block_r = _clamp_pow2(red, 16, 1024)
            block_q = _clamp_pow2(rows, 1, max(1, 2048 // block_r))
        else:  # lanes along the rows (contiguous), a few reduced entries per step
            block_q = _clamp_pow2(rows, 16, 128)
            block_r = _clamp_pow2(red, 1, 16)
        return [dict(BLOCK_Q=block_q, BLOCK_R=block_r, num_warps=4)]
    return configs


def _rows_grid(rows_of):
    def grid(n, meta):
        return (max(1, -(-rows_of(n) // meta["BLOCK_Q"])),)
    return grid


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): the GPU autotune list for matmul.
MATMUL_CONFIGS = ((128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4),
                  (64, 64, 32, 4, 4), (32, 64, 64, 4, 4), (16, 64, 64, 4, 3))


def _matmul_configs(m_of, n_of, k_of):
    def configs(n, interpret):
        m, cols, k = m_of(n), n_of(n), k_of(n)
        if interpret:
            return [dict(BLOCK_M=_clamp_pow2(m, 16, 256), BLOCK_N=_clamp_pow2(cols, 16, 256),
                         BLOCK_K=_clamp_pow2(k, 16, 256), num_warps=4, num_stages=1)]
        chosen = [dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=w, num_stages=s)
                  for bm, bn, bk, w, s in MATMUL_CONFIGS
                  if bm <= max(16, 2 * pow2(m)) and bn <= max(16, 2 * pow2(cols))]
        return chosen or [dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3)]
    return configs


GPU_PROGRAMS = 264  # about two waves of an H100's 132 SMs: what split-K aims to fill


def _split_k_configs(m_of, n_of, k_of, groups):
    """One configuration (the runtime does not time it: its atomic adds are not idempotent)."""
    def configs(n, interpret):
        m, cols, k = m_of(n), n_of(n), k_of(n)
        meta = _matmul_configs(m_of, n_of, k_of)(n, interpret)[0]
        if interpret:
            return [dict(meta, SPLIT_K=1)]
        tiles = -(-m // meta["BLOCK_M"]) * -(-cols // meta["BLOCK_N"]) * groups
        split = max(1, min(-(-GPU_PROGRAMS // tiles), k // (4 * meta["BLOCK_K"])))
        return [dict(meta, SPLIT_K=split)]
    return configs


def _split_k_grid(m_of, n_of, groups):
    def grid(n, meta):
        return (max(1, -(-m_of(n) // meta["BLOCK_M"])), max(1, -(-n_of(n) // meta["BLOCK_N"])),
                groups * meta["SPLIT_K"])
    return grid


def _matmul_grid(m_of, n_of, batch_of):
    def grid(n, meta):
        return (max(1, -(-m_of(n) // meta["BLOCK_M"])), max(1, -(-n_of(n) // meta["BLOCK_N"])),
                max(1, batch_of(n)))
    return grid


def _size_fn(shape):
    shape = tuple(shape)
    return lambda n: numel(shape, n)


# -- index arithmetic -------------------------------------------------------------------------------
def _aligned(in_shape, out_shape):
    return (1,) * (len(out_shape) - len(in_shape)) + tuple(in_shape)


def _flat_broadcast_offset(in_shape, out_shape, flat="offs"):
    """Source text of an input's element offset for the flat output index `flat`."""
    full = _aligned(in_shape, out_shape)
    if full == tuple(out_shape):
        return flat
    runs = []  # [kind, axes]: runs of kept or broadcast axes, size-1 output axes dropped
    for axis, (o, i) in enumerate(zip(out_shape, full)):
        if o == 1:
            continue
        kind = "bcast" if i == 1 else "keep"
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(axis)
        else:
            runs.append([kind, [axis]])
    terms = []
    for position, (kind, axes) in enumerate(runs):
        if kind == "bcast":
            continue
        inner = _prod(out_shape[axes[-1] + 1:])
        size = _prod([out_shape[a] for a in axes])
        coord = flat if inner == "1" else f"({flat} // {inner})"
        if position > 0:
            coord = f"({coord} % {size})"
        stride = _prod([d for d in full[axes[-1] + 1:]])
        terms.append(coord if stride == "1" else f"{coord} * {stride}")
    return " + ".join(terms) if terms else "0"


def _coordinate_lines(shape, flat="offs", prefix="c"):
    """Lines defining c0..c{r-1}, the output coordinates of the flat index `flat`."""
    lines = []
    for axis, d in enumerate(shape):
        if d == 1:
            lines.append(f"{prefix}{axis} = 0")
            continue
        inner = _prod(shape[axis + 1:])
        coord = flat if inner == "1" else f"({flat} // {inner})"
        if axis > 0:
            coord = f"{coord} % {_dim(d)}"
        lines.append(f"{prefix}{axis} = {coord}")
    return lines


def _strided_offset(coords, shape):
    """Offset of element `coords` (expressions) in a contiguous array of `shape`."""
    terms = []
    for axis, coord in enumerate(coords):
        if shape[axis] == 1 and coord == "0":
            continue
        stride = _prod(shape[axis + 1:])
        terms.append(f"({coord})" if stride == "1" else f"({coord}) * {stride}")
    return " + ".join(terms) if terms else "0"


def _coords_broadcast_offset(in_shape, out_shape, coords):
    """An input's offset from per-axis output coordinate expressions (broadcast axes skip)."""
    full = _aligned(in_shape, out_shape)
    terms = []
    for axis, i in enumerate(full):
        if i == 1:
            continue
        stride = _prod(full[axis + 1:])
        terms.append(coords[axis] if stride == "1" else f"{coords[axis]} * {stride}")
    return " + ".join(terms) if terms else "0"


# -- expressions ------------------------------------------------------------------------------------
def _is_inlined_constant(node):
    return node.op == "constant" and node.payload.size == 1


def _scalar_literal(node):
    return literal(node.payload.reshape(-1)[0].item(), node.dtype)


def _expression_lines(graph, members, load):
    handler = TritonScalarOps()
    names, lines = {}, []
    for node_id in members:
        node = graph.node(node_id)
        args = [names[i] if i in names else load(i) for i in node.inputs]
        handler.dtype = node.dtype
        expr = get_op(node.op).scalar(handler, *args, **node.attrs)
        lines.append(f"t{node_id} = tl.cast({expr}, {tl_dtype(node.dtype)})")
        names[node_id] = f"t{node_id}"
    return lines, names[members[-1]]


def _indent(lines, depth=1):
    return ["    " * depth + line for line in lines]


# -- kernels ------------------------------------------------------------------------------------------
class KernelWriter:
    def __init__(self, graph, precision):
        self.graph = graph
        self.precision = precision
        self.sources = []

    def _emit(self, kind, args, constexprs, body):
        name = f"k{len(self.sources)}_{kind}"
        params = list(args) + ["n"] + [f"{c}: tl.constexpr" for c in constexprs]
        source = ["@triton.jit", f"def {name}({', '.join(params)}):"] + _indent(body)
        self.sources.append("\n".join(source))
        return name

    def _externals(self, group, skip=()):
        return [i for i in group.inputs if i not in skip and not _is_inlined_constant(self.graph.node(i))]

    # elementwise --------------------------------------------------------------------------------
    def elementwise(self, group):
        graph = self.graph
        out_shape = graph.node(group.output).shape
        externals = self._externals(group)
        arg = {i: f"a{k}" for k, i in enumerate(externals)}
        extras = {i: f"e{k}" for k, i in enumerate(group.extra_outputs)}
        total = _prod(out_shape)
        body = ["offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)", f"mask = offs < {total}"]
        loads = {}
        for i in externals:
            shape = graph.node(i).shape
            if num_elements(shape) == 1 and tuple(shape) != tuple(out_shape):
                body.append(f"v{i} = tl.load({arg[i]})")
            else:
                body.append(f"v{i} = tl.load({arg[i]} + {_flat_broadcast_offset(shape, out_shape)}, mask=mask)")
            loads[i] = f"v{i}"

        def load(i):
            node = graph.node(i)
            return _scalar_literal(node) if _is_inlined_constant(node) else loads[i]

        lines, result = _expression_lines(graph, group.nodes, load)
        body += lines
        body += [f"tl.store({extras[i]} + offs, t{i}, mask=mask)" for i in group.extra_outputs]
        body.append(f"tl.store(out + offs, {result}, mask=mask)")
        name = self._emit("loop", list(arg.values()) + list(extras.values()) + ["out"], ["BLOCK"], body)
        size = _size_fn(out_shape)
        return Launch(name, externals + list(group.extra_outputs) + [group.output], _flat_grid(size),
                      _flat_configs(size))

    # matmul -------------------------------------------------------------------------------------
    def matmul(self, group):
        graph = self.graph
        matmul_id = next(n for n in group.nodes if graph.node(n).op == "matmul")
        node = graph.node(matmul_id)
        a_id, b_id = node.inputs
        a, b = graph.node(a_id), graph.node(b_id)
        for operand in (a, b):
            if not is_float(operand.dtype):
                raise LoweringError(f"triton backend: matmul of {operand.dtype} operands is not "
                                    "supported (cast to float32)")
        ta, tb = bool(node.attrs.get("transpose_a")), bool(node.attrs.get("transpose_b"))
        m, cols = node.shape[-2], node.shape[-1]
        k = a.shape[-2] if ta else a.shape[-1]
        batch = tuple(node.shape[:-2])
        epilogue = [n for n in group.nodes if n != matmul_id]
        if epilogue and batch:
            raise LoweringError("triton backend: batched matmul with an epilogue")
        read = {i for n in epilogue for i in graph.node(n).inputs}
        externals = self._externals(group, skip=[i for i in group.inputs if i not in read or i == matmul_id])
        arg = {i: f"e{j}" for j, i in enumerate(externals)}
        M, N, K = _dim(m), _dim(cols), _dim(k)

        def batch_stride(operand, rows, columns):
            own = tuple(operand.shape[:-2])
            if own == batch:
                return f"{rows} * {columns}" if batch else "0"
            if all(d == 1 for d in own):
                return "0"
            raise LoweringError(f"triton backend: matmul batch broadcasting {a.shape} @ {b.shape}")

        a_offset = "kk[None, :] * M + rm[:, None]" if ta else "rm[:, None] * K + kk[None, :]"
        b_offset = "rn[None, :] * K + kk[:, None]" if tb else "kk[:, None] * N + rn[None, :]"
        acc_dtype = "tl.float64" if node.dtype == "float64" else "tl.float32"
        if node.dtype == "float64" or a.dtype == "float64" or b.dtype == "float64":
            dot = "tl.dot(x, y, acc, input_precision=\"ieee\")"
        elif a.dtype == "float32" and b.dtype == "float32":
            dot = f"tl.dot(x, y, acc, input_precision=\"{self.precision}\")"
        else:
            dot = "tl.dot(x, y, acc)"
        body = [f"M = {M}", f"N = {N}", f"K = {K}",
                "rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)",
                "rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)",
                "batch = tl.program_id(2)",
                f"pa = ma + batch * {batch_stride(a, a.shape[-2], a.shape[-1]) if batch else '0'}",
                f"pb = mb + batch * {batch_stride(b, b.shape[-2], b.shape[-1]) if batch else '0'}",
                f"acc = tl.zeros((BLOCK_M, BLOCK_N), {acc_dtype})",
                "for k0 in range(0, K, BLOCK_K):",
                "    kk = k0 + tl.arange(0, BLOCK_K)",
                f"    x = tl.load(pa + ({a_offset}), mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)",
                f"    y = tl.load(pb + ({b_offset}), mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)",
                f"    acc = {dot}",
                "mask = (rm[:, None] < M) & (rn[None, :] < N)",
                f"t{matmul_id} = tl.cast(acc, {tl_dtype(node.dtype)})"]
        coords = ["rm[:, None]", "rn[None, :]"]
        out_shape = tuple(node.shape)
        loads = {}
        for i in externals:
            shape = graph.node(i).shape
            if num_elements(shape) == 1 and tuple(shape) != out_shape:
                body.append(f"v{i} = tl.load({arg[i]})")
            else:
                body.append(f"v{i} = tl.load({arg[i]} + {_coords_broadcast_offset(shape, out_shape, coords)}, "
                            "mask=mask)")
            loads[i] = f"v{i}"

        def load(i):
            if i == matmul_id:
                return f"t{matmul_id}"
            node_i = graph.node(i)
            return _scalar_literal(node_i) if _is_inlined_constant(node_i) else loads[i]

        result = f"t{matmul_id}"
        if epilogue:
            lines, result = _expression_lines(graph, epilogue, load)
            body += lines
        body.append(f"tl.store(out + batch * (M * N) + rm[:, None] * N + rn[None, :], {result}, mask=mask)")
        name = self._emit("matmul", ["ma", "mb"] + list(arg.values()) + ["out"],
                          ["BLOCK_M", "BLOCK_N", "BLOCK_K"], body)
        m_of, n_of = _size_fn((m,)), _size_fn((cols,))
        k_of, b_of = _size_fn((k,)), _size_fn(batch)
        return Launch(name, [a_id, b_id] + externals + [group.output], _matmul_grid(m_of, n_of, b_of),
                      _matmul_configs(m_of, n_of, k_of), idempotent=True)

    # reductions ---------------------------------------------------------------------------------
    def _rows_view(self, shape, axes):
        """(rows, reduced, base, step, contiguous): the input as rows of reduced elements.

        Axes are merged into runs of kept or reduced axes (size-1 axes dropped); a row q
        starts at `base` (from q's coordinates over the kept runs) and its element r lies
        `step` further (from r's coordinates over the reduced runs). Any set of axes works.
        """
        runs = []  # [reduced?, dims, stride dims]
        for axis, d in enumerate(shape):
            if d == 1:
                continue
            reduced = axis in axes
            if runs and runs[-1][0] == reduced:
                runs[-1][1].append(d)
            else:
                runs.append([reduced, [d], None])
        for k, run in enumerate(runs):
            run[2] = [d for later in runs[k + 1:] for d in later[1]]

        def offset(which, index):
            chosen = [run for run in runs if run[0] == which]
            terms = []
            for k, (_, dims, stride_dims) in enumerate(chosen):
                later = [d for run in chosen[k + 1:] for d in run[1]]
                inner = _prod(later)
                coord = index if inner == "1" else f"({index} // {inner})"
                if k > 0:
                    coord = f"({coord} % {_prod(dims)})"
                stride = _prod(stride_dims)
                terms.append(coord if stride == "1" else f"{coord} * {stride}")
            return " + ".join(terms) if terms else "0"

        rows = _prod([d for a, d in enumerate(shape) if a not in axes])
        reduced = _prod([d for a, d in enumerate(shape) if a in axes])
        contiguous = not runs or runs[-1][0]
        base, step = offset(False, "q"), offset(True, "r[None, :]")
        return rows, reduced, base if base != "0" else "q * 0", step if step != "0" else "r[None, :] * 0", contiguous

    def reduction(self, group):
        graph = self.graph
        node = graph.node(group.output)
        axes = node.attrs["axes"]
        shape = graph.node(node.inputs[0]).shape
        prologue = group.nodes[:-1]
        externals = self._externals(group)
        arg = {i: f"a{k}" for k, i in enumerate(externals)}
        rows_text, red, base, step, contiguous = self._rows_view(shape, axes)
        combine, dtype = node.op, node.dtype
        acc_dtype = "float32" if dtype in ("float16", "bfloat16") else dtype
        if combine in ("sum", "mean", "prod"):
            init = 0 if combine != "prod" else 1
        elif is_float(dtype):
            init = -np.inf if combine == "max" else np.inf
        else:
            info = np.iinfo(dtype) if dtype != "bool" else None
            init = (info.min if combine == "max" else info.max) if info else int(combine == "min")
        body = [f"RED = {red}", f"ROWS = {rows_text}",
                "q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)",
                "qmask = q < ROWS",
                f"base = {base}",
                f"acc = tl.full((BLOCK_Q, BLOCK_R), {literal(init, acc_dtype)}, {tl_dtype(acc_dtype)})",
                "for r0 in range(0, RED, BLOCK_R):",
                "    r = r0 + tl.arange(0, BLOCK_R)",
                "    m = qmask[:, None] & (r[None, :] < RED)",
                f"    offs = base[:, None] + {step}"]
        inner_lines, loads = [], {}
        for i in externals:
            if tuple(graph.node(i).shape) != tuple(shape):
                body.insert(0, f"v{i} = tl.load({arg[i]})")
            else:
                inner_lines.append(f"v{i} = tl.load({arg[i]} + offs, mask=m, other=0)")
            loads[i] = f"v{i}"

        def load(i):
            node_i = graph.node(i)
            return _scalar_literal(node_i) if _is_inlined_constant(node_i) else loads[i]

        if prologue:
            lines, value = _expression_lines(graph, prologue, load)
            inner_lines += lines
        else:
            value = load(node.inputs[0])
        neutral = literal(init, acc_dtype)
        value = f"tl.where(m, tl.cast({value}, {tl_dtype(acc_dtype)}), {neutral})"
        update = {"sum": f"acc + {value}", "mean": f"acc + {value}", "prod": f"acc * {value}",
                  "max": f"tl.maximum(acc, {value})", "min": f"tl.minimum(acc, {value})"}[combine]
        inner_lines.append(f"acc = {update}")
        body += _indent(inner_lines)
        final = {"sum": "tl.sum(acc, axis=1)", "mean": "tl.sum(acc, axis=1)",
                 "prod": "tl.reduce(acc, 1, _multiply)", "max": "tl.max(acc, axis=1)",
                 "min": "tl.min(acc, axis=1)"}[combine]
        body.append(f"result = {final}")
        if combine == "mean":
            body.append(f"result = result / tl.cast(RED, {tl_dtype(acc_dtype)})")
        body.append(f"tl.store(out + q, tl.cast(result, {tl_dtype(dtype)}), mask=qmask)")
        name = self._emit("reduce", list(arg.values()) + ["out"], ["BLOCK_Q", "BLOCK_R"], body)
        rows = _size_fn([d for a, d in enumerate(shape) if a not in axes])
        reds = _size_fn([d for a, d in enumerate(shape) if a in axes])
        return Launch(name, externals + [group.output], _rows_grid(rows), _rows_configs(rows, reds, contiguous))

    # single-op kernels -----------------------------------------------------------------------------
    def kernel(self, group):
        graph = self.graph
        heavy = [n for n in group.nodes if get_op(graph.node(n).op).kind != ELEMENTWISE]
        node = graph.node(heavy[0])
        if node.op in CONV_OPS:
            return self._conv(group, node)
        template = getattr(self, f"_op_{node.op}", None)
        if template is None:
            raise LoweringError(f"triton backend: op '{node.op}' has no kernel template")
        launches = template(node, [graph.node(i) for i in node.inputs])
        launches = launches if isinstance(launches, list) else [launches]
        if len(group.nodes) > 1:  # a fused epilogue the template does not apply: in place, after it
            launches.append(self._epilogue_in_place(group, node.id))
        return launches

    def _epilogue_in_place(self, group, heavy_id):
        """An elementwise kernel computing the group's epilogue over the heavy op's result,
        which lies in the group's output buffer (same shape and dtype)."""
        graph = self.graph
        members = [n for n in group.nodes if n != heavy_id]
        out_shape = graph.node(group.output).shape
        read = {i for n in members for i in graph.node(n).inputs}
        externals = [i for i in group.inputs if i in read and i != heavy_id
                     and not _is_inlined_constant(graph.node(i))]
        arg = {i: f"a{k}" for k, i in enumerate(externals)}
        body = ["offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)", f"mask = offs < {_prod(out_shape)}",
                f"v{heavy_id} = tl.load(out + offs, mask=mask)"]
        loads = {heavy_id: f"v{heavy_id}"}
        for i in externals:
            shape = graph.node(i).shape
            if num_elements(shape) == 1 and tuple(shape) != tuple(out_shape):
                body.append(f"v{i} = tl.load({arg[i]})")
            else:
                body.append(f"v{i} = tl.load({arg[i]} + {_flat_broadcast_offset(shape, out_shape)}, mask=mask)")
            loads[i] = f"v{i}"

        def load(i):
            node = graph.node(i)
            return _scalar_literal(node) if _is_inlined_constant(node) else loads[i]

        lines, result = _expression_lines(graph, members, load)
        body += lines + [f"tl.store(out + offs, {result}, mask=mask)"]
        name = self._emit("epilogue", list(arg.values()) + ["out"], ["BLOCK"], body)
        size = _size_fn(out_shape)
        return Launch(name, externals + [group.output], _flat_grid(size), _flat_configs(size))

    def _conv(self, group, node):
        """conv, conv_input_grad, conv_filter_grad: implicit GEMM, epilogue on the tile."""
        graph = self.graph
        inputs = [graph.node(i) for i in node.inputs]
        for operand in inputs:
            if not is_float(operand.dtype):
                raise LoweringError(f"triton backend: {node.op} of {operand.dtype} operands is not supported")
        body, (m_dims, n_dims, groups), names = conv_templates.conv_body(node, inputs, self.precision)
        epilogue = [n for n in group.nodes if n != node.id]
        read = {i for n in epilogue for i in graph.node(n).inputs}
        externals = [i for i in group.inputs if i in read and i != node.id
                     and not _is_inlined_constant(graph.node(i))]
        arg = {i: f"e{j}" for j, i in enumerate(externals)}
        out_shape = tuple(graph.node(group.output).shape)
        body.append(f"t{node.id} = tl.cast(acc, {tl_dtype(node.dtype)})")
        result = f"t{node.id}"
        if epilogue:
            loads = {}
            for i in externals:
                shape = graph.node(i).shape
                if num_elements(shape) == 1 and tuple(shape) != out_shape:
                    body.append(f"v{i} = tl.load({arg[i]})")
                else:
                    body.append(f"v{i} = tl.load({arg[i]} + {_flat_broadcast_offset(shape, out_shape, 'flat')}, "
                                "mask=mask)")
                loads[i] = f"v{i}"

            def load(i):
                if i == node.id:
                    return result
                node_i = graph.node(i)
                return _scalar_literal(node_i) if _is_inlined_constant(node_i) else loads[i]

            lines, result = _expression_lines(graph, epilogue, load)
            body += lines
        m_of, n_of = _size_fn(m_dims), _size_fn(n_dims)
        k_of = _size_fn(conv_templates.conv_k_dims(node, inputs))
        if node.op == "conv_filter_grad" and not epilogue:
            body += ["if SPLIT_K == 1:",
                     f"    tl.store(out + flat, {result}, mask=mask)",
                     "else:",
                     f"    tl.atomic_add(out + flat, {result}, mask=mask)"]
            name = self._emit(node.op, list(names) + ["out"], ["BLOCK_M", "BLOCK_N", "BLOCK_K", "SPLIT_K"], body)
            size = _size_fn(graph.node(group.output).shape)
            zero = Launch("fill_kernel", [group.output, size, lambda n: 0], _flat_grid(size), _flat_configs(size),
                          from_helpers=True)
            gemm = Launch(name, list(node.inputs) + [group.output], _split_k_grid(m_of, n_of, groups),
                          _split_k_configs(m_of, n_of, k_of, groups))
            return [zero, gemm]
        body.append(f"tl.store(out + flat, {result}, mask=mask)")
        name = self._emit(node.op, list(names) + list(arg.values()) + ["out"], ["BLOCK_M", "BLOCK_N", "BLOCK_K"], body)
        return Launch(name, list(node.inputs) + externals + [group.output],
                      _matmul_grid(m_of, n_of, lambda n: groups), _matmul_configs(m_of, n_of, k_of),
                      idempotent=True)

    def _op_pool(self, node, inputs):
        return self._flat_kernel(node.op, node, inputs, conv_templates.pool_lines(node, inputs))

    _op_avg_pool_grad = _op_pool
    _op_upsample = _op_pool

    def _scatter(self, node, inputs):
        body = ["offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
                f"mask = offs < {_prod(inputs[-1].shape)}"] + conv_templates.scatter_lines(node, inputs)
        name = self._emit(node.op, [f"a{k}" for k in range(len(inputs))] + ["out"], ["BLOCK"], body)
        out_size, grad_size = _size_fn(node.shape), _size_fn(inputs[-1].shape)
        zero = Launch("fill_kernel", [node.id, out_size, lambda n: 0], _flat_grid(out_size),
                      _flat_configs(out_size), from_helpers=True, idempotent=True)
        scatter = Launch(name, [i.id for i in inputs] + [node.id], _flat_grid(grad_size), _flat_configs(grad_size))
        return [zero, scatter]

    _op_max_pool_grad = _scatter
    _op_upsample_grad = _scatter

    def _flat_kernel(self, kind, node, inputs, body, args=None, extra_launch_args=()):
        """A kernel over the flat output index: `body` computes `value` from offs/mask."""
        names = args or [f"a{k}" for k in range(len(inputs))]
        lines = ["offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
                 f"mask = offs < {_prod(node.shape)}"] + body
        lines.append("tl.store(out + offs, value, mask=mask)")
        name = self._emit(kind, names + ["out"], ["BLOCK"], lines)
        size = _size_fn(node.shape)
        return Launch(name, [i.id for i in inputs] + list(extra_launch_args) + [node.id],
                      _flat_grid(size), _flat_configs(size), idempotent=True)

    def _op_transpose(self, node, inputs):
        perm = node.attrs["perm"]
        source = inputs[0].shape
        coords = [None] * len(perm)
        for out_axis, in_axis in enumerate(perm):
            coords[in_axis] = f"c{out_axis}"
        body = _coordinate_lines(node.shape) + [
            f"value = tl.load(a0 + {_strided_offset(coords, source)}, mask=mask)"]
        return self._flat_kernel("transpose", node, inputs, body)

    def _op_concatenate(self, node, inputs):
        axis = node.attrs["axis"]
        if any(i.shape[axis] is None for i in inputs):
            raise LoweringError("triton backend: concatenate along the batch (None) axis")
        body = _coordinate_lines(node.shape)
        start = 0
        body.append(f"value = tl.zeros([BLOCK], {tl_dtype(node.dtype)})")
        for k, value in enumerate(inputs):
            size = value.shape[axis]
            coords = [f"c{a}" if a != axis else f"c{a} - {start}" for a in range(len(node.shape))]
            inside = f"(c{axis} >= {start}) & (c{axis} < {start + size})"
            body.append(f"inside = mask & {inside}")
            body.append(f"value = tl.where(inside, tl.load(a{k} + {_strided_offset(coords, value.shape)}, "
                        "mask=inside, other=0), value)")
            start += size
        return self._flat_kernel("concatenate", node, inputs, body)

    def _slice_geometry(self, attrs, shape):
        """Per axis (begin, step) of a slice, normalized against the static dims."""
        geometry = []
        for d, b, e, s in zip(shape, attrs["begin"], attrs["end"], attrs["step"]):
            if d is None:
                geometry.append((b or 0, s))
            else:
                start, _, stride = slice(b, e, s).indices(d)
                geometry.append((start, stride))
        return geometry

    def _op_slice(self, node, inputs):
        source = inputs[0].shape
        geometry = self._slice_geometry(node.attrs, source)
        coords = []
        for axis, (begin, step) in enumerate(geometry):
            coord = f"c{axis}" if step == 1 else f"c{axis} * {step}"
            coords.append(coord if begin == 0 else f"{begin} + {coord}")
        body = _coordinate_lines(node.shape) + [
            f"value = tl.load(a0 + {_strided_offset(coords, source)}, mask=mask)"]
        return self._flat_kernel("slice", node, inputs, body)

    def _op_unslice(self, node, inputs):
        sliced = inputs[0].shape
        geometry = self._slice_geometry(node.attrs, node.shape)
        body = _coordinate_lines(node.shape) + ["inside = mask"]
        coords = []
        for axis, (begin, step) in enumerate(geometry):
            count = _dim(sliced[axis])
            shifted = f"(c{axis} - {begin})" if begin else f"c{axis}"
            if step > 0:
                body.append(f"inside = inside & ({shifted} >= 0) & ({shifted} < {count} * {step})")
            else:
                body.append(f"inside = inside & ({shifted} <= 0) & ({shifted} > {count} * {step})")
            if step != 1:
                body.append(f"inside = inside & ({shifted} % {step} == 0)")
            coords.append(shifted if step == 1 else f"{shifted} // {step}")
        body.append(f"value = tl.load(a0 + {_strided_offset(coords, sliced)}, mask=inside, other=0)")
        return self._flat_kernel("unslice", node, inputs, body)

    def _op_pad(self, node, inputs):
        source = inputs[0].shape
        body = _coordinate_lines(node.shape) + ["inside = mask"]
        coords = []
        for axis, (lo, _) in enumerate(node.attrs["pad_width"]):
            shifted = f"(c{axis} - {lo})" if lo else f"c{axis}"
            body.append(f"inside = inside & ({shifted} >= 0) & ({shifted} < {_dim(source[axis])})")
            coords.append(shifted)
        fill = literal(node.attrs["constant_value"], node.dtype)
        body.append(f"value = tl.where(inside, tl.load(a0 + {_strided_offset(coords, source)}, mask=inside, "
                    f"other=0), {fill})")
        return self._flat_kernel("pad", node, inputs, body)

    def _gather_view(self, data_shape, axis, index_shape):
        return (_prod(data_shape[:axis]), _dim(data_shape[axis]), _prod(data_shape[axis + 1:]),
                _prod(index_shape))

    def _op_take(self, node, inputs):
        data, indices = inputs
        axis = node.attrs["axis"]
        _, size, inner, count = self._gather_view(data.shape, axis, indices.shape)
        body = [f"o = offs // ({count} * {inner})", f"j = (offs // {inner}) % {count}", f"i = offs % {inner}",
                "k = tl.load(a1 + j, mask=mask, other=0)",
                f"k = k % {size}", f"k = tl.where(k < 0, k + {size}, k)",
                f"value = tl.load(a0 + (o * {size} + k) * {inner} + i, mask=mask)"]
        return self._flat_kernel("take", node, inputs, body)

    def _op_take_grad(self, node, inputs):
        grad, indices = inputs
        axis = node.attrs["axis"]
        _, size, inner, count = self._gather_view(node.shape, axis, indices.shape)
        # Zero the output, then scatter-add the upstream values (duplicates add up).
        body = ["offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
                f"mask = offs < {_prod(grad.shape)}",
                f"o = offs // ({count} * {inner})", f"j = (offs // {inner}) % {count}", f"i = offs % {inner}",
                "k = tl.load(a1 + j, mask=mask, other=0)",
                f"k = k % {size}", f"k = tl.where(k < 0, k + {size}, k)",
                "g = tl.load(a0 + offs, mask=mask)",
                f"tl.atomic_add(out + (o * {size} + k) * {inner} + i, g, mask=mask)"]
        name = self._emit("take_grad", ["a0", "a1", "out"], ["BLOCK"], body)
        out_size, grad_size = _size_fn(node.shape), _size_fn(grad.shape)
        zero = Launch("fill_kernel", [node.id, out_size, lambda n: 0], _flat_grid(out_size),
                      _flat_configs(out_size), from_helpers=True, idempotent=True)
        scatter = Launch(name, [grad.id, indices.id, node.id], _flat_grid(grad_size), _flat_configs(grad_size))
        return [zero, scatter]

    def _op_argmax(self, node, inputs):
        return self._arg_extremum(node, inputs)

    def _op_argmin(self, node, inputs):
        return self._arg_extremum(node, inputs)

    def _arg_extremum(self, node, inputs):
        source = inputs[0]
        axis = node.attrs["axis"]
        rows_text, red, base, step, contiguous = self._rows_view(source.shape, (axis,))
        dtype = "int32" if source.dtype == "bool" else source.dtype
        if is_float(dtype):
            worst = -np.inf if node.op == "argmax" else np.inf
        else:
            worst = np.iinfo(dtype).min if node.op == "argmax" else np.iinfo(dtype).max
        pick, better = ("tl.max", ">") if node.op == "argmax" else ("tl.min", "<")
        body = [f"RED = {red}", f"ROWS = {rows_text}",
                "q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)",
                "qmask = q < ROWS",
                f"base = {base}",
                f"best = tl.full((BLOCK_Q,), {literal(worst, dtype)}, {tl_dtype(dtype)})",
                "best_index = tl.zeros((BLOCK_Q,), tl.int32)",
                "for r0 in range(0, RED, BLOCK_R):",
                "    r = r0 + tl.arange(0, BLOCK_R)",
                "    m = qmask[:, None] & (r[None, :] < RED)",
                f"    offs = base[:, None] + {step}",
                f"    x = tl.cast(tl.load(a0 + offs, mask=m, other=0), {tl_dtype(dtype)})",
                f"    x = tl.where(m, x, {literal(worst, dtype)})",
                f"    chunk = {pick}(x, axis=1)",
                f"    index = tl.cast(tl.{node.op}(x, axis=1), tl.int32) + r0",
                f"    take = (chunk {better} best) | (r0 == 0)",
                "    best = tl.where(take, chunk, best)",
                "    best_index = tl.where(take, index, best_index)",
                "tl.store(out + q, best_index, mask=qmask)"]
        name = self._emit(node.op, ["a0", "out"], ["BLOCK_Q", "BLOCK_R"], body)
        rows = _size_fn(tuple(source.shape[:axis]) + tuple(source.shape[axis + 1:]))
        reds = _size_fn(source.shape[axis:axis + 1])
        return Launch(name, [source.id, node.id], _rows_grid(rows), _rows_configs(rows, reds, contiguous),
                      idempotent=True)

    def _op_reduced_count(self, node, inputs):
        count = _prod([inputs[0].shape[a] for a in node.attrs["axes"]])
        body = [f"tl.store(out, tl.cast({count}, {tl_dtype(node.dtype)}))"]
        name = self._emit("reduced_count", ["a0", "out"], ["BLOCK"], body)
        return Launch(name, [inputs[0].id, node.id], lambda n, meta: (1,),
                      lambda n, interpret: [dict(BLOCK=1, num_warps=1)], idempotent=True)

    def _op_random_uniform(self, node, inputs):
        salt = node.attrs.get("salt", 0)
        mask32 = random_ops.MASK
        body = ["seed = tl.cast(tl.load(a0), tl.int64)",
                f"key = tl.cast(seed & {mask32}, tl.uint32) * {random_ops.SEED_MIX} + {salt}",
                f"x = tl.cast(offs, tl.uint32) * {random_ops.GOLDEN} + key",
                "x = x ^ (x >> 16)",
                f"x = x * {random_ops.MIX_1}",
                "x = x ^ (x >> 13)",
                f"x = x * {random_ops.MIX_2}",
                "x = x ^ (x >> 16)",
                f"value = tl.cast(tl.cast(x >> 8, tl.float32) * {1.0 / 16777216.0}, {tl_dtype(node.dtype)})"]
        return self._flat_kernel("random_uniform", node, inputs, body)


# -- the module -------------------------------------------------------------------------------------
def render_module(graph, groups, plan, precision="tf32x3", interpret=False):
    """Source text of the kernel module, and the Program that launches its kernels."""
    if precision not in PRECISIONS:
        raise ValueError(f"matmul precision must be one of {PRECISIONS}, got {precision!r}")
    placeholders = list(graph.inputs)
    variable_nodes = graph.variable_node_ids()
    used_constants = []
    read = [i for group in groups for i in group.inputs] + graph.roots()
    for i in read:
        node = graph.node(i)
        if node.op == "constant" and i not in used_constants and not (
                _is_inlined_constant(node) and i not in graph.roots() and all(
                    i not in g.inputs or g.kind in ("elementwise", "matmul", "reduction") for g in groups)):
            used_constants.append(i)
    arena_dtypes = sorted(plan.arena_sizes)
    program = Program(placeholders, variable_nodes, used_constants, arena_dtypes, dict(plan.arena_sizes))

    refs = {}
    for k, i in enumerate(placeholders):
        refs[i] = BufferRef("input", graph.node(i).dtype, graph.node(i).shape, index=k)
    for k, i in enumerate(variable_nodes):
        refs[i] = BufferRef("variable", graph.node(i).dtype, graph.node(i).shape, index=k)
    for k, i in enumerate(used_constants):
        refs[i] = BufferRef("constant", graph.node(i).dtype, graph.node(i).shape, index=k)

    writer = KernelWriter(graph, precision)
    for index, group in enumerate(groups):
        node = graph.node(group.output)
        if group.kind == "view":
            source = refs[node.inputs[0]]
            refs[group.output] = BufferRef(source.kind, source.dtype, node.shape, source.index, source.offset)
            continue
        for output in group.outputs:
            if output in plan.in_place:
                variable = refs[plan.in_place[output]]
                refs[output] = variable
                continue
            buffer = plan.buffers[output]
            refs[output] = BufferRef("arena", buffer.dtype, graph.node(output).shape, offset=buffer.offset)
        for member in group.nodes:  # a heavy op's result under a fused epilogue: the output buffer
            if member not in refs and get_op(graph.node(member).op).kind != ELEMENTWISE:
                refs[member] = refs[group.output]
        launches = getattr(writer, group.kind)(group)
        for launch in launches if isinstance(launches, list) else [launches]:
            launch.args = [refs[a] if isinstance(a, int) and not callable(a) else a for a in launch.args]
            if not launch.from_helpers:
                launch.args.append(_batch_arg)
            launch.group, launch.kind = index, group.kind
            program.launches.append(launch)

    for var_id, new_id in graph.state_updates.items():
        if plan.in_place.get(new_id) == var_id:
            continue  # the group wrote the new value into the variable itself
        size = _size_fn(graph.node(var_id).shape)
        program.launches.append(Launch("copy_kernel", [refs[new_id], refs[var_id], size], _flat_grid(size),
                                       _flat_configs(size), kind="state", from_helpers=True))
    program.outputs = [refs[o] for o in graph.outputs]
    program.min_batch = _min_batch(graph)

    header = [f"# Generated by kgraph for graph '{graph.name}'. Do not edit.",
              f"# mode: {'interpreter' if interpret else 'gpu'}",
              "import triton",
              "import triton.language as tl",
              "",
              f"from kgraph.compiler.lower.triton.device_functions import {', '.join(HELPERS)}  # noqa: F401",
              "",
              "",
              "@triton.jit",
              "def _multiply(a, b):",
              "    return a * b",
              ""]
    source = "\n".join(header) + "\n\n" + "\n\n\n".join(writer.sources) + "\n"
    return source, program
