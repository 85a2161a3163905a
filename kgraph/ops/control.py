"""keras.ops core functions and a few numpy-like ones written as compositions: control flow,
searching, segment reductions and windows.

Control flow runs in Python when its inputs are concrete values (the chosen branch alone, a
Python loop). Traced, or given symbolic tensors, it records the IR constructs of
kgraph.ops.control_flow: `cond`/`switch` a `switch` op (one branch runs), `while_loop` and
`fori_loop` with symbolic bounds a `while_loop` op, and `scan`, `map` and `fori_loop` with
Python int bounds a `scan` op, which is differentiable. The numba backend lowers them to
real loops and branches. `scan(..., unroll=True)` unrolls into the trace instead.
"""

from __future__ import annotations

import builtins

import numpy as np

from kgraph import ops
from kgraph.ir import SymbolicTensor, is_tracing
from kgraph.ops.control_flow import scan_traced, switch_traced, while_loop_traced
from kgraph.ops.numpy_extra import _floating, _floating_pair, _is_eager, _tensor, isnan, ravel
from kgraph.ops.structural import _flatten, _unflatten

__all__ = [
    "cond", "switch", "fori_loop", "while_loop", "scan", "map", "vectorized_map",
    "digitize", "searchsorted", "isin", "select", "trapezoid", "logspace", "angle", "imag", "isreal",
    "saturate_cast", "segment_sum", "segment_max", "segment_min", "segment_prod", "extract_sequences",
    "unravel_index", "argpartition", "nanargmax", "nanargmin", "nancumsum", "nancumprod", "ldexp",
    "psnr", "cdist", "slice_update", "hamming", "hanning", "blackman", "bartlett", "kaiser",
    "diagflat", "vander", "geomspace", "cross", "left_shift", "right_shift", "bitwise_left_shift",
    "bitwise_right_shift", "depth_to_space", "space_to_depth",
]


def _tree_map(fn, *trees):
    first = trees[0]
    if isinstance(first, (list, tuple)):
        return type(first)(_tree_map(fn, *parts) for parts in zip(*trees))
    if isinstance(first, dict):
        return {k: _tree_map(fn, *(t[k] for t in trees)) for k in first}
    return fn(*trees)


def _concrete(value):
    """Whether value is known now (a Python or numpy value), not a traced tensor."""
    return isinstance(value, (bool, int, float, np.generic, np.ndarray))


def _traced(*trees):
    """Whether control flow over these values records IR constructs (not Python control flow)."""
    return is_tracing() or builtins.any(isinstance(leaf, SymbolicTensor) for tree in trees for leaf in _flatten(tree))


# -- control flow ---------------------------------------------------------------------------------
def cond(pred, true_fn, false_fn):
    """true_fn() if pred else false_fn(); with a symbolic pred, a `switch` op runs one branch."""
    if _concrete(pred):
        return true_fn() if bool(np.asarray(pred)) else false_fn()
    selector = ops.cast(ops.cast(pred, "bool"), "int32")
    return switch(selector, [lambda: false_fn(), lambda: true_fn()])


def switch(index, branches, *operands):
    """branches[index](*operands), index clipped to the valid range."""
    last = len(branches) - 1
    if _concrete(index):
        return branches[builtins.min(builtins.max(int(np.asarray(index)), 0), last)](*operands)
    structure = {}

    def flat_branch(branch):
        def run(*leaves):
            result = branch(*_unflatten(list(operands), leaves))
            structure.setdefault("tree", result)
            return [] if result is None else _flatten(result)
        return run

    results = switch_traced(index, [flat_branch(b) for b in branches], _flatten(list(operands)))
    tree = structure.get("tree")
    return None if tree is None else _unflatten(tree, results)


def fori_loop(lower, upper, body_fun, init_val):
    """body_fun(i, val) for i in [lower, upper). With Python int bounds and a traced value, a
    `scan` op over the indices (differentiable); with symbolic bounds, a `while_loop` op."""
    if _concrete(lower) and _concrete(upper):
        if not _traced(init_val):
            value = init_val
            for i in range(int(lower), int(upper)):
                value = body_fun(i, value)
            return value
        indices = np.arange(int(lower), int(upper), dtype=np.int32)
        carry, _ = scan(lambda value, i: (body_fun(i, value), None), init_val, indices)
        return carry
    lower, upper = ops.cast(lower, "int32"), ops.cast(upper, "int32")
    _, value = while_loop(lambda i, value: ops.less(i, upper),
                          lambda i, value: (ops.add(i, 1), body_fun(i, value)), (lower, init_val))
    return value


def while_loop(cond, body, loop_vars, maximum_iterations=None):
    """Run body while cond holds. Concrete values loop in Python; traced ones record a
    `while_loop` op (not reverse-differentiable: its trip count depends on the data)."""
    single = not isinstance(loop_vars, (list, tuple))
    values = (loop_vars,) if single else tuple(loop_vars)
    if _traced(values):
        return _while_loop_traced(cond, body, loop_vars, values, single, maximum_iterations)
    count = 0
    while maximum_iterations is None or count < maximum_iterations:
        keep_going = cond(*values)
        if not _concrete(keep_going):
            return _while_loop_traced(cond, body, loop_vars, values, single, maximum_iterations - count
                                      if maximum_iterations is not None else None)
        if not bool(np.asarray(keep_going)):
            break
        result = body(*values)
        values = (result,) if single else tuple(result)
        count += 1
    return values[0] if single else type(loop_vars)(values)


def _while_loop_traced(cond, body, loop_vars, values, single, maximum_iterations):
    tree = list(values)
    leaves = _flatten(tree)
    if maximum_iterations is not None:  # a counter joins the loop variables
        limit = int(maximum_iterations)

        def counted_cond(*flat):
            return ops.logical_and(ops.less(flat[0], limit), cond(*_unflatten(tree, list(flat[1:]))))

        def counted_body(*flat):
            result = body(*_unflatten(tree, list(flat[1:])))
            result = (result,) if single else tuple(result)
            return [ops.add(flat[0], 1)] + _flatten(list(result))

        results = while_loop_traced(counted_cond, counted_body, [np.zeros((), np.int32)] + leaves)[1:]
    else:
        def flat_body(*flat):
            result = body(*_unflatten(tree, list(flat)))
            return _flatten([result] if single else list(result))

        results = while_loop_traced(lambda *flat: cond(*_unflatten(tree, list(flat))), flat_body, leaves)
    values = _unflatten(tree, results)
    return values[0] if single else type(loop_vars)(values)


def scan(f, init, xs=None, length=None, reverse=False, unroll=1):
    """carry, y = f(carry, x) over the leading axis of xs; returns (carry, stacked ys).

    Concrete inputs (or unroll=True) run the steps in Python, unrolled into any trace;
    otherwise a `scan` op runs them as a compiled loop."""
    if unroll is True or not _traced(init, xs):
        return _scan_unrolled(f, init, xs, length, reverse)
    carry_leaves = _flatten(init)
    x_leaves = [] if xs is None else _flatten(xs)
    structure = {}

    def step(carry, x):
        new_carry, y = f(_unflatten(init, carry), None if xs is None else _unflatten(xs, x))
        structure.setdefault("ys", y)
        return _flatten(new_carry), ([] if y is None else _flatten(y))

    final, ys = scan_traced(step, carry_leaves, x_leaves, length, reverse)
    y_tree = structure.get("ys")
    return _unflatten(init, final), (None if y_tree is None else _unflatten(y_tree, ys))


def _scan_unrolled(f, init, xs, length, reverse):
    if xs is None:
        if length is None:
            raise ValueError("scan: give xs or length")
        items = [None] * int(length)
    else:
        leaves = []
        _tree_map(lambda leaf: leaves.append(_tensor(leaf)), xs)
        n = leaves[0].shape[0]
        if n is None:
            raise ValueError("scan: the scanned axis must have a static size, not the batch dimension")
        items = [_tree_map(lambda leaf, i=i: ops.getitem(_tensor(leaf), i), xs) for i in range(n)]
    order = range(len(items) - 1, -1, -1) if reverse else range(len(items))
    carry, ys = init, [None] * len(items)
    for i in order:
        carry, ys[i] = f(carry, items[i])
    if not items or ys[0] is None:
        return carry, None
    return carry, _tree_map(lambda *parts: ops.stack(list(parts), axis=0), *ys)


def map(f, xs):  # noqa: A001  (Keras name)
    """f applied to each slice of xs along its leading axis, stacked."""
    return scan(lambda carry, x: (carry, f(x)), (), xs)[1]


def vectorized_map(function, elements):
    return map(function, elements)


# -- searching, selection and segments ------------------------------------------------------------
def digitize(x, bins):
    """The index of the bin of each x: i with bins[i-1] <= x < bins[i] (increasing bins), int32."""
    x, bins = _tensor(x), ravel(bins)
    return ops.sum(ops.cast(ops.greater_equal(ops.expand_dims(x, -1), bins), "int32"), axis=-1)


def searchsorted(sorted_sequence, values, side="left"):
    """Insertion indices of `values` into the 1-D ascending `sorted_sequence`, int32."""
    if side not in ("left", "right"):
        raise ValueError(f"searchsorted: side must be 'left' or 'right', got {side!r}")
    sequence, values = ravel(sorted_sequence), _tensor(values)
    compare = ops.less if side == "left" else ops.less_equal
    return ops.sum(ops.cast(compare(sequence, ops.expand_dims(values, -1)), "int32"), axis=-1)


def isin(x1, x2, assume_unique=False, invert=False):
    """Whether each element of x1 occurs in x2."""
    x1, x2 = _tensor(x1), ravel(x2)
    found = ops.greater(ops.sum(ops.cast(ops.equal(ops.expand_dims(x1, -1), x2), "int32"), axis=-1), 0)
    return ops.logical_not(found) if invert else found


def select(condlist, choicelist, default=0):
    """The choice of the first true condition, else default."""
    if len(condlist) != len(choicelist):
        raise ValueError(f"select: {len(condlist)} conditions for {len(choicelist)} choices")
    result = _tensor(default)
    for condition, choice in reversed(list(zip(condlist, choicelist))):
        result = ops.where(condition, choice, result)
    return result


def _segment(data, segment_ids, num_segments, combine, fill):
    data, segment_ids = _tensor(data), _tensor(segment_ids)
    if num_segments is None:
        if not _is_eager(segment_ids):
            raise ValueError("segment reductions: num_segments is required when segment_ids is symbolic")
        num_segments = int(np.max(segment_ids)) + 1 if np.size(segment_ids) else 0
    member = ops.equal(ops.expand_dims(ops.cast(segment_ids, "int32"), 0),
                       np.arange(num_segments, dtype=np.int32).reshape(-1, 1))  # [segments, n]
    member = ops.reshape(member, (num_segments, -1) + (1,) * (len(data.shape) - 1))
    spread = ops.where(member, ops.expand_dims(data, 0), ops.full_like(ops.expand_dims(data, 0), fill))
    return combine(spread, axis=1)


def segment_sum(data, segment_ids, num_segments=None, sorted=False):  # noqa: A002
    """Sums of data's rows per segment id (rows with ids outside [0, num_segments) are dropped)."""
    return _segment(data, segment_ids, num_segments, ops.sum, 0)


def segment_prod(data, segment_ids, num_segments=None, sorted=False):  # noqa: A002
    return _segment(data, segment_ids, num_segments, ops.prod, 1)


def _dtype_limit(dtype, high):
    info = np.finfo(dtype) if np.issubdtype(np.dtype(dtype), np.floating) else np.iinfo(dtype)
    return float(info.max if high else info.min) if np.issubdtype(np.dtype(dtype), np.floating) else int(
        info.max if high else info.min)


def segment_max(data, segment_ids, num_segments=None, sorted=False):  # noqa: A002
    """Maxima per segment (an empty segment gives the dtype's lowest value)."""
    data = _tensor(data)
    fill = -np.inf if np.issubdtype(np.dtype(data.dtype), np.floating) else _dtype_limit(data.dtype, False)
    return _segment(data, segment_ids, num_segments, ops.max, fill)


def segment_min(data, segment_ids, num_segments=None, sorted=False):  # noqa: A002
    data = _tensor(data)
    fill = np.inf if np.issubdtype(np.dtype(data.dtype), np.floating) else _dtype_limit(data.dtype, True)
    return _segment(data, segment_ids, num_segments, ops.min, fill)


def extract_sequences(x, sequence_length, sequence_stride):
    """Frames of the last axis: [..., frames, sequence_length], frame i starting at i * stride."""
    x = _tensor(x)
    n = x.shape[-1]
    frames = 1 + (n - sequence_length) // sequence_stride
    pieces = [ops.getitem(x, (Ellipsis, builtins.slice(i * sequence_stride, i * sequence_stride + sequence_length)))
              for i in range(frames)]
    return ops.stack(pieces, axis=-2)


def unravel_index(indices, shape):
    """Flat indices as a tuple of coordinate arrays for an array of `shape`."""
    indices = ops.cast(_tensor(indices), "int32")
    coords = []
    for dim in reversed(tuple(shape)):
        coords.append(ops.mod(indices, int(dim)))
        indices = ops.floor_divide(indices, int(dim))
    return tuple(reversed(coords))


def argpartition(x, kth, axis=-1):
    """Indices that partition x around its kth element: a full (stable) argsort is such a partition."""
    return ops.argsort(x, axis=axis)


def nanargmax(x, axis=None, keepdims=False):
    x = _tensor(x)
    return ops.argmax(ops.where(isnan(x), ops.full_like(x, -np.inf), x), axis=axis, keepdims=keepdims)


def nanargmin(x, axis=None, keepdims=False):
    x = _tensor(x)
    return ops.argmin(ops.where(isnan(x), ops.full_like(x, np.inf), x), axis=axis, keepdims=keepdims)


def nancumsum(x, axis=None, dtype=None):
    x = _tensor(x)
    return ops.cumsum(ops.where(isnan(x), ops.zeros_like(x), x), axis=axis, dtype=dtype)


def nancumprod(x, axis=None, dtype=None):
    x = _tensor(x)
    return ops.cumprod(ops.where(isnan(x), ops.ones_like(x), x), axis=axis, dtype=dtype)


def ldexp(x1, x2):
    """x1 * 2 ** x2."""
    x1 = _floating(x1)
    return ops.multiply(x1, ops.power(2.0, ops.cast(_tensor(x2), x1.dtype)))


def psnr(x1, x2, max_val):
    """Peak signal-to-noise ratio in dB over all elements: 20 log10(max_val) - 10 log10(mse)."""
    x1, x2 = _floating_pair(x1, x2)
    mse = ops.mean(ops.square(ops.subtract(x1, x2)))
    return ops.subtract(20.0 * np.log10(float(max_val)), ops.multiply(ops.log10(mse), 10.0))


def cdist(x, y):
    """Euclidean distances between the rows of x [..., m, d] and of y [..., n, d]: [..., m, n]."""
    x, y = _floating_pair(x, y)
    difference = ops.subtract(ops.expand_dims(x, -2), ops.expand_dims(y, -3))
    return ops.sqrt(ops.sum(ops.square(difference), axis=-1))


def slice_update(inputs, start_indices, updates):
    """inputs with the block at start_indices (Python ints) replaced by updates."""
    inputs, updates = _tensor(inputs), _tensor(updates)
    starts = [int(s) for s in start_indices]
    widths = [(s, d - s - u) for s, d, u in zip(starts, inputs.shape, updates.shape)]
    if builtins.any(lo < 0 or hi < 0 for lo, hi in widths):
        raise ValueError(f"slice_update: updates of shape {tuple(updates.shape)} at {tuple(starts)} do not fit "
                         f"in inputs of shape {tuple(inputs.shape)}")
    mask = np.zeros(tuple(inputs.shape), bool)
    mask[tuple(builtins.slice(s, s + u) for s, u in zip(starts, updates.shape))] = True
    placed = ops.pad(ops.cast(updates, inputs.dtype), widths)
    return ops.where(mask, placed, inputs)


def angle(x):
    """The argument of a real number: 0, or pi for negative values."""
    x = _floating(x)
    return ops.arctan2(ops.zeros_like(x), x)


def imag(x):
    """The imaginary part of a real tensor: zeros."""
    return ops.zeros_like(_tensor(x))


def isreal(x):
    return ops.ones_like(_tensor(x), dtype="bool")


def saturate_cast(x, dtype):
    """Cast after clipping to the target dtype's range (no wrap-around)."""
    x = _tensor(x)
    target, source = np.dtype(dtype), np.dtype(x.dtype)
    if np.issubdtype(target, np.integer) and source != np.bool_:
        info = np.iinfo(target)
        if np.issubdtype(source, np.floating):
            high = source.type(info.max)  # rounded up past the max for wide ints: step below it
            high = float(np.nextafter(high, source.type(0)) if int(high) > info.max else high)
            x = ops.clip(x, float(info.min), high)
        elif np.iinfo(source).min < info.min or np.iinfo(source).max > info.max:
            x = ops.clip(x, int(info.min), int(info.max))
    return ops.cast(x, dtype)


def logspace(start, stop, num=50, endpoint=True, base=10, dtype=None, axis=0):
    exponents = ops.linspace(start, stop, num, endpoint=endpoint, axis=axis)
    values = ops.power(float(base), _floating(exponents))
    return values if dtype is None else ops.cast(values, dtype)


def trapezoid(y, x=None, dx=1.0, axis=-1):
    """Integral of y along `axis` by the trapezoidal rule (sample points x, or spacing dx)."""
    y = _floating(y)
    size = y.shape[axis]
    head = [builtins.slice(None)] * len(y.shape)
    tail = list(head)
    axis_index = axis % len(y.shape)
    head[axis_index], tail[axis_index] = builtins.slice(1, size), builtins.slice(0, size - 1)
    mean_heights = ops.multiply(ops.add(ops.getitem(y, tuple(head)), ops.getitem(y, tuple(tail))), 0.5)
    if x is None:
        return ops.multiply(ops.sum(mean_heights, axis=axis), float(dx))
    widths = ops.diff(_floating(x), axis=-1 if len(_tensor(x).shape) == 1 else axis)
    if len(_tensor(x).shape) == 1 and len(y.shape) > 1:
        shape = [1] * len(y.shape)
        shape[axis_index] = -1
        widths = ops.reshape(widths, tuple(shape))
    return ops.sum(ops.multiply(mean_heights, widths), axis=axis)


def _window(fn, x, *args):
    return fn(int(x), *args).astype("float32")


def hamming(x):
    """The Hamming window of length x (a constant)."""
    return _window(np.hamming, x)


def hanning(x):
    return _window(np.hanning, x)


def blackman(x):
    return _window(np.blackman, x)


def bartlett(x):
    return _window(np.bartlett, x)


def kaiser(x, beta):
    return _window(np.kaiser, x, float(beta))


def diagflat(x, k=0):
    """The flattened x as the k-th diagonal of a square matrix."""
    return ops.diag(ravel(x), k)


def vander(x, N=None, increasing=False):  # noqa: N803  (Keras argument name)
    """Columns x ** (N-1), ..., x ** 0 (reversed when increasing)."""
    x = ravel(x)
    n = x.shape[0] if N is None else int(N)
    powers = np.arange(n) if increasing else np.arange(n - 1, -1, -1)
    if not np.issubdtype(np.dtype(x.dtype), np.floating):
        powers = powers.astype(x.dtype)
        return ops.power(ops.expand_dims(x, -1), powers)
    return ops.power(ops.expand_dims(x, -1), powers.astype(x.dtype))


def geomspace(start, stop, num=50, endpoint=True, dtype=None, axis=0):
    """`num` values evenly spaced on a log scale from start to stop (same sign)."""
    start, stop = _floating_pair(start, stop)
    sign = ops.sign(start)
    exponents = ops.linspace(ops.log(ops.abs(start)), ops.log(ops.abs(stop)), num, endpoint=endpoint, axis=axis)
    values = ops.multiply(sign, ops.exp(exponents))
    return values if dtype is None else ops.cast(values, dtype)


def cross(x1, x2, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """Cross product of 3-vectors (2-vectors get a zero third component; two 2-vectors give
    the scalar z component)."""
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = _tensor(x1), _tensor(x2)
    a, b = ops.moveaxis(a, axisa, -1), ops.moveaxis(b, axisb, -1)
    if a.shape[-1] == 2 and b.shape[-1] == 2:
        return ops.subtract(ops.multiply(a[..., 0], b[..., 1]), ops.multiply(a[..., 1], b[..., 0]))
    for name, v in (("x1", a), ("x2", b)):
        if v.shape[-1] not in (2, 3):
            raise ValueError(f"cross: {name} vectors must have 2 or 3 components, got {v.shape[-1]}")
    if a.shape[-1] == 2:
        a = ops.pad(a, [(0, 0)] * (len(a.shape) - 1) + [(0, 1)])
    if b.shape[-1] == 2:
        b = ops.pad(b, [(0, 0)] * (len(b.shape) - 1) + [(0, 1)])
    a0, a1, a2 = (a[..., i] for i in range(3))
    b0, b1, b2 = (b[..., i] for i in range(3))
    result = ops.stack([ops.subtract(ops.multiply(a1, b2), ops.multiply(a2, b1)),
                        ops.subtract(ops.multiply(a2, b0), ops.multiply(a0, b2)),
                        ops.subtract(ops.multiply(a0, b1), ops.multiply(a1, b0))], axis=-1)
    return ops.moveaxis(result, -1, axisc)


def _shift_factor(x, y):
    x = _tensor(x)
    if np.issubdtype(np.dtype(x.dtype), np.floating) or x.dtype == "bool":
        raise TypeError(f"shift: integer inputs are required, got {x.dtype}")
    return x, ops.power(ops.cast(np.asarray(2), x.dtype), ops.cast(_tensor(y), x.dtype))


def left_shift(x, y):
    """x << y for integers (x * 2 ** y, wrapping like the shift)."""
    x, factor = _shift_factor(x, y)
    return ops.multiply(x, factor)


def right_shift(x, y):
    """x >> y for integers (an arithmetic shift: floor division by 2 ** y)."""
    x, factor = _shift_factor(x, y)
    return ops.floor_divide(x, factor)


bitwise_left_shift = left_shift
bitwise_right_shift = right_shift


def _channels_last(x, data_format):
    if data_format not in ("channels_last", "channels_first", None):
        raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
    return data_format == "channels_first"


def depth_to_space(x, block_size, data_format="channels_last"):
    """Move blocks of channels into block_size x block_size spatial tiles of a 4-D tensor."""
    x = _tensor(x)
    first = _channels_last(x, data_format)
    if first:
        x = ops.transpose(x, (0, 2, 3, 1))
    n, h, w, c = x.shape
    b = int(block_size)
    if c % (b * b):
        raise ValueError(f"depth_to_space: {c} channels do not divide into blocks of {b}x{b}")
    y = ops.reshape(x, (-1 if n is None else n, h, w, b, b, c // (b * b)))
    y = ops.transpose(y, (0, 1, 3, 2, 4, 5))
    y = ops.reshape(y, (-1 if n is None else n, h * b, w * b, c // (b * b)))
    return ops.transpose(y, (0, 3, 1, 2)) if first else y


def space_to_depth(x, block_size, data_format="channels_last"):
    """The inverse of depth_to_space: block_size x block_size spatial tiles into channels."""
    x = _tensor(x)
    first = _channels_last(x, data_format)
    if first:
        x = ops.transpose(x, (0, 2, 3, 1))
    n, h, w, c = x.shape
    b = int(block_size)
    if h % b or w % b:
        raise ValueError(f"space_to_depth: spatial size {h}x{w} does not divide into blocks of {b}x{b}")
    y = ops.reshape(x, (-1 if n is None else n, h // b, b, w // b, b, c))
    y = ops.transpose(y, (0, 1, 3, 2, 4, 5))
    y = ops.reshape(y, (-1 if n is None else n, h // b, w // b, b * b * c))
    return ops.transpose(y, (0, 3, 1, 2)) if first else y
