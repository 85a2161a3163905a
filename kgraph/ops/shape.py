"""Shape ops: reshape, transpose, broadcast_to, concatenate, slicing, take, pad, and
the composites built from them (expand_dims, squeeze, stack, split, one_hot, creation)."""

from __future__ import annotations

import builtins

import numpy as np

from kgraph import ops
from kgraph.ir import SymbolicTensor, is_tracing, tracing
from kgraph.ops.registry import ELEMENTWISE, OpDef, bind, register
from kgraph.ops.shapes import broadcast_shapes, normalize_axes, normalize_axis, num_elements

SHAPE = "shape"


def _sample(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _dynamic(shape):
    """A static shape as a reshape target: the unknown dimension becomes -1."""
    return tuple(-1 if d is None else d for d in shape)


# -- reshape ------------------------------------------------------------------------------------
def _reshape_infer(attrs, x):
    target = list(attrs["shape"])
    if target.count(-1) > 1:
        raise ValueError(f"reshape: at most one dimension may be -1, got {tuple(target)}")
    total = num_elements(x.shape)
    known = num_elements([d for d in target if d != -1])
    if -1 in target:
        if total is not None:
            if known == 0 or total % known:
                raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} into {tuple(target)}")
            target[target.index(-1)] = total // known
        elif num_elements([d for d in x.shape if d is not None]) == known:
            target[target.index(-1)] = None  # -1 takes exactly the batch dimension
        else:
            # In a graph every None dimension is the batch size itself; a -1 that folded the
            # batch together with other dimensions (or split it) would be a multiple of it.
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} into "
                             f"{tuple(target)}: the -1 would merge the batch dimension (None) with "
                             "other dimensions, which a graph cannot size for every batch. Keep the "
                             "batch as its own axis, e.g. reshape to (-1, ...) with the other "
                             "dimensions' product unchanged, or use batched matmul instead.")
    elif total is not None and total != known:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                         f"({total} elements) into {tuple(target)} ({known} elements)")
    return tuple(target), x.dtype


register(OpDef("reshape", SHAPE, _reshape_infer,
               lambda at, x: np.reshape(x, at["shape"]),
               grad=lambda ctx: [ops.reshape(ctx.upstream, _dynamic(ctx.inputs[0].shape))],
               samples=lambda rng: [([_sample(rng, 3, 4)], {"shape": (2, 6)}),
                                    ([_sample(rng, 2, 3, 4)], {"shape": (-1, 4)})],
               view=True))


def reshape(x, newshape):
    if isinstance(newshape, int):
        newshape = (newshape,)
    newshape = tuple(-1 if d is None else int(d) for d in newshape)
    x = ops.convert_to_tensor(x)
    if _dynamic(x.shape) == newshape:
        return x
    return bind("reshape", [x], shape=newshape)


def expand_dims(x, axis):
    x = ops.convert_to_tensor(x)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    rank = len(x.shape) + len(axes)
    axes = sorted(a % rank for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, _dynamic(shape))


def squeeze(x, axis=None):
    x = ops.convert_to_tensor(x)
    if axis is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    else:
        axes = normalize_axes(axis, len(x.shape), "squeeze")
        for a in axes:
            if x.shape[a] not in (1, None):
                raise ValueError(f"squeeze: cannot squeeze axis {a} of size {x.shape[a]} "
                                 f"(shape {x.shape})")
    return reshape(x, _dynamic([d for i, d in enumerate(x.shape) if i not in axes]))


# -- transpose ----------------------------------------------------------------------------------
def _transpose_infer(attrs, x):
    return tuple(x.shape[p] for p in attrs["perm"]), x.dtype


def _transpose_grad(ctx):
    inverse = tuple(int(i) for i in np.argsort(ctx.attrs["perm"]))
    return [transpose(ctx.upstream, inverse)]


register(OpDef("transpose", SHAPE, _transpose_infer,
               lambda at, x: np.transpose(x, at["perm"]), grad=_transpose_grad,
               samples=lambda rng: [([_sample(rng, 3, 4)], {"perm": (1, 0)}),
                                    ([_sample(rng, 2, 3, 4)], {"perm": (2, 0, 1)})]))


def transpose(x, axes=None):
    x = ops.convert_to_tensor(x)
    rank = len(x.shape)
    perm = tuple(reversed(range(rank))) if axes is None else tuple(normalize_axis(a, rank) for a in axes)
    if perm == tuple(range(rank)):
        return x
    return bind("transpose", [x], perm=perm)


def swapaxes(x, axis1, axis2):
    x = ops.convert_to_tensor(x)
    perm = list(range(len(x.shape)))
    a, b = normalize_axis(axis1, len(perm)), normalize_axis(axis2, len(perm))
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


# -- broadcast_to -----------------------------------------------------------------------------
def _broadcast_infer(attrs, x):
    target = tuple(attrs["shape"])
    broadcast_shapes(x.shape, target, op="broadcast_to")
    return target, x.dtype


def _broadcast_grad(ctx):
    from kgraph.ops.elementwise import unbroadcast

    return [unbroadcast(ctx.upstream, ctx.inputs[0].shape)]


register(OpDef("broadcast_to", ELEMENTWISE, _broadcast_infer,
               lambda at, x: np.broadcast_to(x, at["shape"]).copy(), grad=_broadcast_grad,
               scalar=lambda h, x, shape: x,
               samples=lambda rng: [([_sample(rng, 4)], {"shape": (3, 4)}),
                                    ([_sample(rng, 3, 1)], {"shape": (2, 3, 5)})]))


def broadcast_to(x, shape):
    x = ops.convert_to_tensor(x)
    shape = tuple(None if d is None or d == -1 else int(d) for d in shape)
    if tuple(x.shape) == shape:
        return x
    if not isinstance(x, SymbolicTensor) and not is_tracing() and None not in shape:
        return np.broadcast_to(x, shape).copy()
    if not isinstance(x, SymbolicTensor) and not is_tracing():
        raise ValueError(f"broadcast_to: the shape {shape} has an unknown dimension, which only "
                         "a symbolic tensor can have")
    return bind("broadcast_to", [x], shape=shape)


# -- concatenate --------------------------------------------------------------------------------
def _concat_infer(attrs, *xs):
    axis = attrs["axis"]
    first = xs[0].shape
    total = 0
    for x in xs:
        if len(x.shape) != len(first) or any(
                a != b and None not in (a, b) for i, (a, b) in enumerate(zip(x.shape, first)) if i != axis):
            raise ValueError("concatenate: all inputs must have the same shape except along axis "
                             f"{axis}; got {', '.join(str(s.shape) for s in xs)}")
        total = None if total is None or x.shape[axis] is None else total + x.shape[axis]
    if total is None:
        raise ValueError(f"concatenate: cannot join along axis {axis}, the batch dimension (None), "
                         f"of {', '.join(str(s.shape) for s in xs)}: the result would not be the "
                         "batch size, which a graph cannot size for every batch")
    shape = list(first)
    shape[axis] = total
    dtype = ops.result_type(*(x.dtype for x in xs))
    return tuple(shape), dtype


def _concat_grad(ctx):
    axis = ctx.attrs["axis"]
    grads, start = [], 0
    for x in ctx.inputs:
        size = x.shape[axis]
        grads.append(_slice_axis(ctx.upstream, axis, start, start + size))
        start += size
    return grads


register(OpDef("concatenate", SHAPE, _concat_infer,
               lambda at, *xs: np.concatenate(xs, axis=at["axis"]), grad=_concat_grad,
               samples=lambda rng: [([_sample(rng, 3, 2), _sample(rng, 3, 4)], {"axis": 1}),
                                    ([_sample(rng, 1, 3), _sample(rng, 2, 3), _sample(rng, 2, 3)], {"axis": 0})]))


def concatenate(xs, axis=0):
    xs = [ops.convert_to_tensor(x) for x in xs]
    if len(xs) == 1:
        return xs[0]
    axis = normalize_axis(axis, len(xs[0].shape), "concatenate")
    dtype = ops.result_type(*(x.dtype for x in xs))
    xs = [x if x.dtype == dtype else ops.cast(x, dtype) for x in xs]
    return bind("concatenate", xs, axis=axis)


def stack(xs, axis=0):
    xs = [ops.convert_to_tensor(x) for x in xs]
    rank = len(xs[0].shape) + 1
    return concatenate([expand_dims(x, axis % rank) for x in xs], axis=axis % rank)


# -- slicing ----------------------------------------------------------------------------------
def _slice_bounds(attrs, shape):
    return [builtins.slice(b, e, s) for b, e, s in zip(attrs["begin"], attrs["end"], attrs["step"])]


def _sliced_dim(dim, begin, end, step):
    if dim is None:
        if begin in (None, 0) and end is None and step == 1:
            return None
        if step == 1 and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end:
            return end - begin  # assumes the run-time size reaches `end`
        raise ValueError("slice: only a full slice ':' is supported on an unknown dimension")
    return len(range(*builtins.slice(begin, end, step).indices(dim)))


def _slice_infer(attrs, x):
    shape = tuple(_sliced_dim(d, b, e, s) for d, b, e, s in
                  zip(x.shape, attrs["begin"], attrs["end"], attrs["step"]))
    return shape, x.dtype


def _slice_grad(ctx):
    return [bind("unslice", [ctx.upstream], shape=ctx.inputs[0].shape, begin=ctx.attrs["begin"],
                 end=ctx.attrs["end"], step=ctx.attrs["step"])]


register(OpDef("slice", SHAPE, _slice_infer,
               lambda at, x: x[tuple(_slice_bounds(at, x.shape))], grad=_slice_grad,
               samples=lambda rng: [([_sample(rng, 4, 6)], {"begin": (1, 0), "end": (3, 6), "step": (1, 2)}),
                                    ([_sample(rng, 3, 4, 5)], {"begin": (None, 1, None), "end": (None, None, -1),
                                                               "step": (1, 1, 1)})]))


def _unslice_infer(attrs, g):
    return tuple(attrs["shape"]), g.dtype


def _unslice_reference(at, g):
    shape = tuple(g.shape[i] if d is None else d for i, d in enumerate(at["shape"]))
    out = np.zeros(shape, g.dtype)
    out[tuple(_slice_bounds(at, shape))] = g
    return out


register(OpDef("unslice", SHAPE, _unslice_infer, _unslice_reference,
               grad=lambda ctx: [bind("slice", [ctx.upstream], begin=ctx.attrs["begin"],
                                      end=ctx.attrs["end"], step=ctx.attrs["step"])],
               samples=lambda rng: [([_sample(rng, 2, 3)], {"shape": (4, 6), "begin": (1, 0),
                                                            "end": (3, 6), "step": (1, 2)})],
               doc="The gradient of slice: zeros of `shape` with the input written into the slice."))


def _slice_axis(x, axis, start, stop):
    rank = len(x.shape)
    begin = tuple(start if i == axis else None for i in range(rank))
    end = tuple(stop if i == axis else None for i in range(rank))
    return bind("slice", [x], begin=begin, end=end, step=(1,) * rank)


def getitem(x, key):
    """Basic indexing: ints, slices, None (new axis) and Ellipsis."""
    x = ops.convert_to_tensor(x)
    if not isinstance(key, tuple):
        key = (key,)
    if builtins.sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis")
    explicit = builtins.sum(1 for k in key if k is not None and k is not Ellipsis)
    if explicit > len(x.shape):
        raise IndexError(f"too many indices for a tensor of rank {len(x.shape)}")
    expanded = []
    for k in key:
        if k is Ellipsis:
            expanded.extend([builtins.slice(None)] * (len(x.shape) - explicit))
        else:
            expanded.append(k)
    expanded.extend([builtins.slice(None)] * (len(x.shape) - builtins.sum(1 for k in expanded if k is not None)))
    begin, end, step, final_shape, axis = [], [], [], [], 0
    for k in expanded:
        if k is None:
            final_shape.append(1)
            continue
        dim = x.shape[axis]
        if isinstance(k, (int, np.integer)):
            k = int(k)
            if dim is not None and not -dim <= k < dim:
                raise IndexError(f"index {k} is out of bounds for axis {axis} with size {dim}")
            start = k % dim if dim is not None else k
            begin.append(start)
            end.append(start + 1 if start != -1 else None)
            step.append(1)
        elif isinstance(k, builtins.slice):
            begin.append(k.start)
            end.append(k.stop)
            step.append(1 if k.step is None else k.step)
            final_shape.append("kept")
        else:
            raise TypeError(f"unsupported index {k!r}: use ints, slices, None or Ellipsis "
                            "(or kgraph.ops.take for integer-array indexing)")
        axis += 1
    result = x
    if any(b is not None or e is not None or s != 1 for b, e, s in zip(begin, end, step)):
        result = bind("slice", [x], begin=tuple(begin), end=tuple(end), step=tuple(step))
    kept = iter(d for d, k in zip(result.shape, (k for k in expanded if k is not None))
                if isinstance(k, builtins.slice))
    shape = [next(kept) if d == "kept" else 1 for d in final_shape]
    return reshape(result, _dynamic(shape))


def slice(inputs, start_indices, shape):  # noqa: A001  (Keras name)
    inputs = ops.convert_to_tensor(inputs)
    begin = tuple(int(s) for s in start_indices)
    end = tuple(b + int(n) for b, n in zip(begin, shape))
    return bind("slice", [inputs], begin=begin, end=end, step=(1,) * len(begin))


def split(x, indices_or_sections, axis=0):
    x = ops.convert_to_tensor(x)
    axis = normalize_axis(axis, len(x.shape), "split")
    size = x.shape[axis]
    if isinstance(indices_or_sections, int):
        if size is None or size % indices_or_sections:
            raise ValueError(f"split: axis {axis} of size {size} does not divide into "
                             f"{indices_or_sections} equal sections")
        step = size // indices_or_sections
        bounds = list(range(0, size + 1, step))
    else:
        bounds = [0, *indices_or_sections, size]
    return [_slice_axis(x, axis, a, b) for a, b in zip(bounds[:-1], bounds[1:])]


# -- take (gather) --------------------------------------------------------------------------------
def _take_infer(attrs, x, indices):
    axis = attrs["axis"]
    return x.shape[:axis] + indices.shape + x.shape[axis + 1:], x.dtype


def _take_grad(ctx):
    x, indices = ctx.inputs
    return [bind("take_grad", [ctx.upstream, indices], axis=ctx.attrs["axis"], shape=x.shape), None]


register(OpDef("take", SHAPE, _take_infer,
               lambda at, x, i: np.take(x, i.astype(np.int64) % x.shape[at["axis"]], axis=at["axis"]),
               grad=_take_grad,
               samples=lambda rng: [([_sample(rng, 5, 3), np.array([4, 0, 2, 2], np.int32)], {"axis": 0}),
                                    ([_sample(rng, 2, 5), np.array([[1, 3], [0, 4]], np.int32)], {"axis": 1})]))


def _take_grad_infer(attrs, g, indices):
    return tuple(attrs["shape"]), g.dtype


def _take_grad_reference(at, g, indices):
    axis = at["axis"]
    lead = g.shape[:axis]
    shape = tuple(lead[i] if i < axis and d is None else d for i, d in enumerate(at["shape"]))
    out = np.zeros(shape, g.dtype)
    moved = np.moveaxis(out, axis, 0)
    g_moved = np.moveaxis(g.reshape(lead + (-1,) + g.shape[axis + indices.ndim:]), axis, 0)
    np.add.at(moved, indices.reshape(-1).astype(np.int64) % shape[axis], g_moved)
    return out


register(OpDef("take_grad", SHAPE, _take_grad_infer, _take_grad_reference,
               grad=lambda ctx: [bind("take", [ctx.upstream, ctx.inputs[1]], axis=ctx.attrs["axis"]), None],
               samples=lambda rng: [([_sample(rng, 4, 3), np.array([4, 0, 2, 2], np.int32)],
                                     {"axis": 0, "shape": (5, 3)})],
               doc="The gradient of take: upstream values scatter-added into zeros of `shape`."))


def take(x, indices, axis=None):
    x = ops.convert_to_tensor(x)
    indices = ops.convert_to_tensor(indices)
    if not str(indices.dtype).startswith(("int", "uint")):
        indices = ops.cast(indices, "int32")
    if axis is None:
        x = reshape(x, (-1,))
        axis = 0
    return bind("take", [x, indices], axis=normalize_axis(axis, len(x.shape), "take"))


# -- pad ----------------------------------------------------------------------------------------
def _pad_infer(attrs, x):
    for axis, (d, (lo, hi)) in enumerate(zip(x.shape, attrs["pad_width"])):
        if d is None and (lo or hi):
            raise ValueError(f"pad: cannot pad axis {axis}, the batch dimension (None), of a tensor "
                             f"of shape {x.shape}: the result would not be the batch size")
    shape = tuple(None if d is None else d + lo + hi for d, (lo, hi) in zip(x.shape, attrs["pad_width"]))
    return shape, x.dtype


def _pad_grad(ctx):
    begin = tuple(lo if lo else None for lo, hi in ctx.attrs["pad_width"])
    end = tuple(-hi if hi else None for lo, hi in ctx.attrs["pad_width"])
    return [bind("slice", [ctx.upstream], begin=begin, end=end, step=(1,) * len(begin))]


register(OpDef("pad", SHAPE, _pad_infer,
               lambda at, x: np.pad(x, at["pad_width"], constant_values=at["constant_value"]),
               grad=_pad_grad,
               samples=lambda rng: [([_sample(rng, 3, 4)], {"pad_width": ((1, 2), (0, 1)), "constant_value": 0.0}),
                                    ([_sample(rng, 2, 3)], {"pad_width": ((0, 0), (2, 2)), "constant_value": 1.5})]))


def pad(x, pad_width, mode="constant", constant_values=None):
    if mode != "constant":
        raise NotImplementedError(f"pad: mode '{mode}' is not supported yet; use mode='constant'")
    x = ops.convert_to_tensor(x)
    if isinstance(pad_width, int):
        pad_width = [(pad_width, pad_width)] * len(x.shape)
    pad_width = tuple((int(lo), int(hi)) for lo, hi in
                      (np.broadcast_to(np.asarray(pad_width), (len(x.shape), 2)).tolist()))
    return bind("pad", [x], pad_width=pad_width, constant_value=float(constant_values or 0.0))


# -- creation and one_hot ---------------------------------------------------------------------
def zeros(shape, dtype=None):
    return np.zeros(shape, dtype=dtype or "float32")


def ones(shape, dtype=None):
    return np.ones(shape, dtype=dtype or "float32")


def full(shape, fill_value, dtype=None):
    return np.full(shape, fill_value, dtype=dtype or ("float32" if isinstance(fill_value, float) else None))


def full_like(x, fill_value, dtype=None):
    x = ops.convert_to_tensor(x)
    dtype = dtype or x.dtype
    if not isinstance(x, SymbolicTensor) and not is_tracing():
        return np.full(x.shape, fill_value, dtype=dtype)
    # A scalar constant broadcast in x's graph (even outside a trace): it works for None
    # dimensions and never embeds a full-size array in the graph.
    fill = np.asarray(fill_value, dtype=dtype)
    if not isinstance(x, SymbolicTensor):
        return bind("broadcast_to", [fill], shape=tuple(x.shape))
    with tracing(x.graph):
        return bind("broadcast_to", [fill], shape=tuple(x.shape))


def zeros_like(x, dtype=None):
    return full_like(x, 0, dtype)


def ones_like(x, dtype=None):
    return full_like(x, 1, dtype)


def arange(start, stop=None, step=1, dtype=None):
    if stop is None:
        start, stop = 0, start
    return np.arange(start, stop, step, dtype=dtype or ("float32" if any(
        isinstance(v, float) for v in (start, stop, step)) else "int32"))


def one_hot(x, num_classes, axis=-1, dtype=None, sparse=False):
    x = ops.convert_to_tensor(x)
    rank = len(x.shape) + 1
    classes = np.arange(num_classes, dtype=x.dtype)
    classes_shape = [1] * rank
    classes_shape[axis % rank] = num_classes
    hits = ops.equal(expand_dims(x, axis % rank), classes.reshape(classes_shape))
    return ops.cast(hits, dtype or "float32")
