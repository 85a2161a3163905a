"""keras.ops functions that index, scatter or restructure tensors, and the function wrappers:
scatter, scatter_update, get_item, unique, nonzero, view, rearrange, associative_scan,
vectorize and custom_gradient.

All but one are compositions of existing ops. Scatters flatten their index tuples to one
linear index and scatter-add with `take_grad` (take's gradient); `set` and the max/min/mul
reductions compare the linear indices instead. `unique` and `nonzero` have value-dependent
shapes: exact eagerly; traced, `unique` needs Keras's static `size` and `nonzero` is refused.
`custom_gradient` records one primitive, an identity whose gradient rule calls the user's
function (removed by the simplifier after autodiff, like stop_gradient).
"""

from __future__ import annotations

import builtins
import functools
import inspect
import math
import re

import numpy as np

from kgraph import ops
from kgraph.ir import SymbolicTensor, Variable
from kgraph.ops.numpy_extra import _is_eager, _tensor
from kgraph.ops.registry import OpDef, bind, register
from kgraph.ops.shapes import normalize_axis

__all__ = [
    "scatter", "scatter_update", "get_item", "unique", "nonzero", "view", "rearrange",
    "associative_scan", "vectorize", "custom_gradient",
]


# -- pytrees (nested lists, tuples and dicts of tensors) ---------------------------------------------------
def _flatten(tree):
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _flatten(item)]
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _flatten(tree[key])]
    return [tree]


def _unflatten(tree, leaves):
    """`tree`'s structure filled with `leaves` (in _flatten's order)."""
    leaves = iter(leaves)

    def build(node):
        if isinstance(node, (list, tuple)):
            return type(node)(build(item) for item in node)
        if isinstance(node, dict):
            return {key: build(node[key]) for key in sorted(node)}
        return next(leaves)

    return build(tree)


# -- scatter --------------------------------------------------------------------------------------------
def _linear_indices(indices, shape, what):
    """(indices (..., k) int, shape) -> flat int32 indices (N,) into prod(shape[:k]), and k.
    Negative indices count from the end of their axis."""
    indices = ops.cast(_tensor(indices), "int32")
    if len(indices.shape) == 0:
        raise ValueError(f"{what}: indices must have at least one axis (the index tuple), got a scalar")
    depth = indices.shape[-1]
    if depth is None or depth > len(shape):
        raise ValueError(f"{what}: each index has {depth} entries but the target has rank {len(shape)} "
                         f"(shape {tuple(shape)})")
    dims = tuple(shape[:depth])
    if builtins.any(d is None for d in dims):
        raise ValueError(f"{what}: the indexed axes must have static sizes, got shape {tuple(shape)}")
    strides = [int(np.prod(dims[i + 1:], dtype=np.int64)) for i in range(depth)]
    rows = ops.reshape(indices, (-1, depth))
    wrapped = ops.mod(rows, np.asarray(dims, np.int32))  # -1 is the last entry, as in numpy
    linear = ops.sum(ops.multiply(wrapped, np.asarray(strides, np.int32)), axis=-1)
    return linear, depth


def _rows(values, count, trailing):
    return ops.reshape(values, (count if count is not None else -1,) + tuple(trailing))


def _scatter_add(linear, values, size, trailing):
    return bind("take_grad", [values, linear], axis=0, shape=(size,) + tuple(trailing))


def scatter(indices, values, shape):
    """A tensor of `shape`, zeros except at `indices`, where `values` are added (duplicate
    indices accumulate). indices: (N, k) with k <= len(shape); values: (N,) + shape[k:]."""
    values = _tensor(values)
    shape = tuple(int(d) for d in shape)
    linear, depth = _linear_indices(indices, shape, "scatter")
    trailing = shape[depth:]
    rows = _rows(values, linear.shape[0], trailing)
    flat = _scatter_add(linear, rows, int(np.prod(shape[:depth], dtype=np.int64)), trailing)
    return ops.reshape(flat, shape)


_REDUCTIONS = (None, "add", "max", "min", "mul")


def scatter_update(inputs, indices, updates, reduction=None):
    """`inputs` with `inputs[indices] = updates` (None: the last update of an index wins) or
    combined with the existing value by `reduction` ("add", "max", "min" or "mul")."""
    if reduction is not None:
        reduction = str(reduction).lower()
    if reduction not in _REDUCTIONS:
        raise ValueError(f"scatter_update: invalid reduction {reduction!r}; supported values are None, "
                         "'add', 'max', 'min', 'mul'")
    inputs = _tensor(inputs)
    shape = tuple(inputs.shape)
    linear, depth = _linear_indices(indices, shape, "scatter_update")
    trailing, size = shape[depth:], int(np.prod(shape[:depth], dtype=np.int64))
    updates = ops.cast(_rows(_tensor(updates), linear.shape[0], trailing), inputs.dtype)
    flat = ops.reshape(inputs, (size,) + trailing)
    if reduction == "add":
        result = ops.add(flat, _scatter_add(linear, updates, size, trailing))
    elif reduction is None:
        count = linear.shape[0]
        # an update is kept unless a later one writes the same index (numpy's last-wins order)
        later = np.triu(np.ones((count, count), bool), k=1)
        same = ops.equal(ops.expand_dims(linear, 1), ops.expand_dims(linear, 0))
        kept = ops.logical_not(ops.any(ops.logical_and(same, later), axis=1))
        kept_rows = ops.reshape(ops.cast(kept, inputs.dtype), (-1,) + (1,) * len(trailing))
        placed = _scatter_add(linear, ops.multiply(updates, kept_rows), size, trailing)
        written = _scatter_add(linear, ops.ones_like(linear, dtype="float32"), size, ())
        written = ops.reshape(ops.greater(written, 0), (size,) + (1,) * len(trailing))
        result = ops.where(written, placed, flat)
    else:
        # dense: hit[n, m] says update n targets row m (N x size comparisons)
        hit = ops.equal(ops.expand_dims(linear, 1), np.arange(size, dtype=np.int32))
        hit = ops.reshape(hit, tuple(hit.shape) + (1,) * len(trailing))
        spread = ops.expand_dims(updates, 1)
        if reduction == "mul":
            result = ops.multiply(flat, ops.prod(ops.where(hit, spread, ops.ones_like(spread)), axis=0))
        else:
            combine, pair = (ops.max, ops.maximum) if reduction == "max" else (ops.min, ops.minimum)
            best = combine(ops.where(hit, spread, ops.expand_dims(flat, 0)), axis=0)
            result = pair(best, flat)
    return ops.reshape(result, shape)


# -- indexing ----------------------------------------------------------------------------------------
def get_item(x, key):
    """x[key]: ints, slices, None and Ellipsis (any tensor); an integer array indexes the first
    axis (take); a boolean mask selects elements (eager only: the result size depends on it)."""
    x = _tensor(x)
    if isinstance(key, (SymbolicTensor, Variable, np.ndarray, list)):
        key_tensor = _tensor(key)
        if str(key_tensor.dtype) == "bool":
            if not _is_eager(x, key_tensor):
                raise ValueError("get_item: a boolean mask gives a value-dependent shape, which a traced "
                                 "graph cannot hold; use ops.where to keep the shape")
            return np.asarray(x)[np.asarray(key_tensor)]
        return ops.take(x, key_tensor, axis=0)
    return ops.getitem(x, key)


def nonzero(x):
    """The indices of the non-zero elements, one int32 array per axis (eager only)."""
    if not _is_eager(x):
        raise ValueError("nonzero: the number of non-zero elements is only known at run time, so a traced "
                         "graph cannot hold the result; call it eagerly, or use ops.where / a mask instead")
    return tuple(i.astype(np.int32) for i in np.nonzero(np.asarray(ops.convert_to_numpy(x))))


def unique(x, sorted=True, return_index=False, return_inverse=False, return_counts=False,  # noqa: A002
           axis=None, size=None, fill_value=None):
    """The sorted unique elements of x (and, as asked, first indices, inverse indices, counts).
    Eagerly exact; traced only with a static `size` (and axis=None): the result is padded with
    `fill_value` (default 0) or truncated to `size` entries."""
    if _is_eager(x):
        return _unique_eager(np.asarray(ops.convert_to_numpy(x)), return_index, return_inverse, return_counts,
                             axis, size, fill_value)
    if size is None:
        raise ValueError("unique: the number of unique values is only known at run time; a traced graph "
                         "needs the static `size` argument (the result is padded or truncated to it)")
    if axis is not None:
        raise ValueError(f"unique: a traced call with `size` supports axis=None only, got axis={axis}")
    return _unique_traced(_tensor(x), int(size), fill_value, return_index, return_inverse, return_counts)


def _unique_eager(x, return_index, return_inverse, return_counts, axis, size, fill_value):
    values, index, inverse, counts = np.unique(x, return_index=True, return_inverse=True, return_counts=True,
                                               axis=axis)
    inverse = inverse.reshape(x.shape) if axis is None else inverse.reshape(-1)
    dim = 0 if axis is None else normalize_axis(axis, x.ndim, "unique")
    if size is not None:
        found = values.shape[dim]
        keep = np.arange(builtins.min(found, size))
        values, index, counts = np.take(values, keep, axis=dim), index[keep], counts[keep]
        if found < size:
            widths = [(0, 0)] * values.ndim
            widths[dim] = (0, size - found)
            values = np.pad(values, widths, constant_values=0 if fill_value is None else fill_value)
            index, counts = np.pad(index, (0, size - found)), np.pad(counts, (0, size - found))
    results = [values]
    results += [index.astype(np.int32)] if return_index else []
    results += [inverse.astype(np.int32)] if return_inverse else []
    results += [counts.astype(np.int32)] if return_counts else []
    return results[0] if len(results) == 1 else tuple(results)


def _unique_traced(x, size, fill_value, return_index, return_inverse, return_counts):
    flat = ops.reshape(x, (-1,))
    n = flat.shape[0]
    if n is None:
        raise ValueError(f"unique: the input needs a static size when traced, got shape {tuple(x.shape)}")
    ordered = ops.sort(flat)
    previous = ops.concatenate([ops.getitem(ordered, builtins.slice(0, 1)), ops.getitem(ordered,
                                                                                        builtins.slice(0, n - 1))])
    first = ops.concatenate([np.ones(1, bool), ops.getitem(ops.not_equal(ordered, previous), builtins.slice(1, n))])
    slot = ops.subtract(ops.cumsum(ops.cast(first, "int32")), 1)  # the output position of each new value
    hit = ops.logical_and(ops.expand_dims(first, 1),
                          ops.equal(ops.expand_dims(slot, 1), np.arange(size, dtype=np.int32)))  # (n, size)
    filled = ops.any(hit, axis=0)
    picked = ops.sum(ops.where(hit, ops.expand_dims(ordered, 1), ops.zeros_like(ops.expand_dims(ordered, 1))), axis=0)
    fill = ops.cast(0 if fill_value is None else fill_value, x.dtype)
    values = ops.where(filled, ops.cast(picked, x.dtype), fill)
    matches = ops.logical_and(ops.equal(ops.expand_dims(flat, 1), values), filled)  # (n, size)
    results = [values]
    if return_index:
        positions = ops.expand_dims(ops.arange(n, dtype="int32"), 1)
        first_at = ops.min(ops.where(matches, positions, n), axis=0)
        results.append(ops.where(filled, first_at, 0))
    if return_inverse:
        inverse = ops.sum(ops.where(matches, np.arange(size, dtype=np.int32), 0), axis=1)
        results.append(ops.reshape(inverse, tuple(-1 if d is None else d for d in x.shape)))
    if return_counts:
        results.append(ops.sum(ops.cast(matches, "int32"), axis=0))
    return results[0] if len(results) == 1 else tuple(results)


def view(x, dtype=None):
    """The bits of x reinterpreted as `dtype` (numpy's ndarray.view); eager only."""
    if not _is_eager(x):
        raise ValueError("view: reinterpreting bits as another dtype is not supported in a traced graph "
                         "(kgraph has no bitcast op); call it eagerly, or use ops.cast to convert values")
    array = np.asarray(ops.convert_to_numpy(x))
    if dtype is None:
        return array.copy()
    target = np.dtype(dtype)
    if array.ndim == 0 and target.itemsize != array.dtype.itemsize:
        raise ValueError(f"view: cannot view a scalar of dtype {array.dtype} as {target} (different item sizes)")
    return array.view(target)


# -- rearrange (einops) ----------------------------------------------------------------------------------
def _pattern_groups(side, pattern):
    groups, current = [], None
    for token in re.findall(r"\(|\)|\w+|\S", side):
        if token == "(":
            if current is not None:
                raise ValueError(f"rearrange: nested parentheses in pattern {pattern!r}")
            current = []
        elif token == ")":
            if current is None:
                raise ValueError(f"rearrange: unbalanced ')' in pattern {pattern!r}")
            groups.append(current)
            current = None
        elif re.fullmatch(r"[A-Za-z_]\w*", token):
            (groups if current is None else current).append(token if current is not None else [token])
        else:
            raise ValueError(f"rearrange: unexpected {token!r} in pattern {pattern!r} (axis names, spaces and "
                             "parentheses only)")
    if current is not None:
        raise ValueError(f"rearrange: unbalanced '(' in pattern {pattern!r}")
    return groups


def rearrange(tensor, pattern, **axes_lengths):
    """einops-style axis reordering, merging "(a b)" and splitting (with axes_lengths), as in
    Keras: e.g. rearrange(x, "b (h h1) (w w1) c -> b h w (c h1 w1)", h1=2, w1=2)."""
    x = _tensor(tensor)
    if pattern.count("->") != 1:
        raise ValueError(f"rearrange: the pattern must have one '->', got {pattern!r}")
    left, right = pattern.split("->")
    inputs, outputs = _pattern_groups(left, pattern), _pattern_groups(right, pattern)
    if len(inputs) != len(x.shape):
        raise ValueError(f"rearrange: the pattern {pattern!r} names {len(inputs)} input axes but the tensor has "
                         f"shape {tuple(x.shape)}")
    names_in = [name for group in inputs for name in group]
    names_out = [name for group in outputs for name in group]
    if len(set(names_in)) != len(names_in) or sorted(names_in) != sorted(names_out):
        raise ValueError(f"rearrange: each axis must appear once on each side of {pattern!r}")
    sizes = {}
    for group, dim in zip(inputs, x.shape):
        unknown = [name for name in group if name not in axes_lengths]
        known = math.prod(int(axes_lengths[name]) for name in group if name in axes_lengths)
        if len(unknown) > 1:
            raise ValueError(f"rearrange: cannot infer the sizes of {unknown} in {pattern!r}; give all but one "
                             "of a group's sizes as keyword arguments")
        if dim is not None and (dim % known if unknown else dim != known):
            raise ValueError(f"rearrange: axis of size {dim} does not split into {group} with "
                             f"{ {n: axes_lengths[n] for n in group if n in axes_lengths} }")
        for name in group:
            sizes[name] = int(axes_lengths[name]) if name in axes_lengths else (None if dim is None else dim // known)
    split = [sizes[name] for name in names_in]
    if split != list(x.shape):
        x = ops.reshape(x, tuple(-1 if d is None else d for d in split))
    x = ops.transpose(x, [names_in.index(name) for name in names_out])
    merged = [None if builtins.any(sizes[n] is None for n in group) else math.prod(sizes[n] for n in group)
              for group in outputs]
    if merged != list(x.shape):
        x = ops.reshape(x, tuple(-1 if d is None else d for d in merged))
    return x


# -- associative_scan and vectorize ----------------------------------------------------------------------
def associative_scan(f, elems, reverse=False, axis=0):
    """Inclusive scan with an associative f along `axis` (static size): result k is
    f(...f(f(e0, e1), e2)..., ek). Log-depth: ceil(log2 n) rounds of f on shifted slices.
    reverse=True scans the flipped elements (as JAX does: f(e[n-1], e[n-2]), ...) and flips back."""
    leaves = [_tensor(leaf) for leaf in _flatten(elems)]
    rank = len(leaves[0].shape)
    axis = normalize_axis(axis, rank, "associative_scan")
    lengths = {leaf.shape[axis] for leaf in leaves}
    if len(lengths) != 1 or None in lengths:
        raise ValueError(f"associative_scan: every input needs the same static size along axis {axis}, got "
                         f"shapes {[tuple(leaf.shape) for leaf in leaves]}")
    n = lengths.pop()

    def part(leaf, start, stop):
        return ops.getitem(leaf, (builtins.slice(None),) * axis + (builtins.slice(start, stop),))

    if reverse:
        leaves = [ops.flip(leaf, axis=axis) for leaf in leaves]
    step = 1
    while step < n:  # Hillis-Steele: y[i] = f(y[i - step], y[i]) for i >= step
        earlier = _unflatten(elems, [part(leaf, 0, n - step) for leaf in leaves])
        later = _unflatten(elems, [part(leaf, step, n) for leaf in leaves])
        combined = _flatten(f(earlier, later))
        leaves = [ops.concatenate([part(leaf, 0, step), _tensor(new)], axis=axis)
                  for leaf, new in zip(leaves, combined)]
        step *= 2
    if reverse:
        leaves = [ops.flip(leaf, axis=axis) for leaf in leaves]
    return _unflatten(elems, leaves)


def _parse_signature(signature):
    match = re.fullmatch(r"\s*(.*?)\s*->\s*(.*?)\s*", signature or "")
    if not match:
        raise ValueError(f"vectorize: not a gufunc signature: {signature!r} (expected e.g. '(m,n),(n)->(m)')")

    def dims(side):
        return [tuple(d for d in re.split(r"\s*,\s*", group) if d) for group in re.findall(r"\(([^)]*)\)", side)]

    return dims(match.group(1)), dims(match.group(2))


def vectorize(pyfunc, *, excluded=None, signature=None):
    """A function applying pyfunc to each element (or each core block, with a gufunc
    `signature` such as "(m,n),(n)->(m)") of its broadcast arguments. The loop over the
    broadcast elements is unrolled into the trace, so keep them few in traced code."""
    if not callable(pyfunc):
        raise ValueError(f"vectorize: expected a callable `pyfunc`, got {pyfunc!r}")
    excluded = set(excluded or ())

    @functools.wraps(pyfunc)
    def wrapped(*args):
        positions = [i for i in range(len(args)) if i not in excluded]
        tensors = [_tensor(args[i]) for i in positions]
        if signature is None:
            cores, out_cores = [()] * len(tensors), None
        else:
            cores, out_cores = _parse_signature(signature)
            if len(cores) != len(tensors):
                raise TypeError(f"vectorize: the signature {signature!r} has {len(cores)} inputs, got {len(tensors)}")
        loops = [tuple(t.shape[:len(t.shape) - len(core)]) for t, core in zip(tensors, cores)]
        batch = tuple(np.broadcast_shapes(*loops)) if loops else ()
        if builtins.any(d is None for d in batch):
            raise ValueError(f"vectorize: the loop dimensions must be static, got {batch}")
        count = int(np.prod(batch, dtype=np.int64))
        flat = [ops.reshape(ops.broadcast_to(t, batch + tuple(t.shape[len(loop):])),
                            (count,) + tuple(t.shape[len(loop):])) for t, loop in zip(tensors, loops)]
        results = []
        for k in range(count):
            call = list(args)
            for i, t in zip(positions, flat):
                call[i] = ops.getitem(t, k)
            results.append(pyfunc(*call))
        single = not isinstance(results[0], tuple) if results else out_cores is None or len(out_cores) == 1
        columns = [results] if single else list(zip(*results))
        stacked = []
        for column in columns:
            block = ops.stack([_tensor(r) for r in column])
            stacked.append(ops.reshape(block, batch + tuple(block.shape[1:])))
        return stacked[0] if single else tuple(stacked)

    return wrapped


# -- custom_gradient ---------------------------------------------------------------------------------------
def _custom_gradient_infer(attrs, y, *args):
    return y.shape, y.dtype


def _custom_gradient_grad(ctx):
    """The upstream passes to y unchanged (the wrapper stops y's own gradient); the user's
    function gives the gradients of the other inputs."""
    rest = ctx.inputs[1:]
    given = list(ctx.attrs["grad_fn"](ctx.upstream)) if rest else []
    if len(given) != len(rest):
        raise ValueError(f"custom_gradient: the gradient function returned {len(given)} gradients for "
                         f"{len(rest)} tensor arguments")
    grads = [ctx.upstream]
    for arg, grad in zip(rest, given):
        if grad is None:
            grads.append(None)
            continue
        grad = ops.cast(_tensor(grad), arg.dtype)
        if not isinstance(grad, SymbolicTensor) or tuple(grad.shape) != tuple(arg.shape):
            grad = ops.add(ops.zeros_like(arg), grad)  # a graph value of the argument's shape
        grads.append(grad)
    return grads


def _custom_gradient_samples(rng):
    def zero(upstream):
        return [ops.zeros((2, 3), "float32")]

    y, x = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
    return [([y], {"shape": (4, 3), "grad_fn": None}), ([y, x], {"shape": (4, 3), "grad_fn": zero})]


register(OpDef("custom_gradient", "shape", _custom_gradient_infer, lambda at, y, *args: np.array(y),
               grad=_custom_gradient_grad, samples=_custom_gradient_samples, view=True,
               doc="The identity on its first input; its gradient rule passes the upstream to it and asks "
                   "attrs['grad_fn'](upstream) for the gradients of the other inputs (custom_gradient). "
                   "Removed by the simplifier after autodiff."))


def _call_grad_fn(grad_fn, args, upstreams):
    """Keras's two conventions: grad(*upstreams) (JAX/TF) or grad(*args, upstream=...) (torch)."""
    parameters = inspect.signature(grad_fn).parameters.values()
    if builtins.any(p.name == "upstream" and p.kind == p.KEYWORD_ONLY and p.default is p.empty
                    for p in parameters):
        return grad_fn(*args, upstream=upstreams[0] if len(upstreams) == 1 else tuple(upstreams))
    return grad_fn(*upstreams)


def custom_gradient(f):
    """Decorator: `f(*args)` returns `(output, grad_fn)`; the result computes output as traced,
    and autodiff takes the gradients of the tensor arguments from `grad_fn(upstream)` (a tensor,
    or a tuple with one gradient per argument) instead of differentiating f."""

    @functools.wraps(f)
    def wrapped(*args):
        output, grad_fn = f(*args)
        outputs = _flatten(output)
        if _is_eager(*_flatten(args), *outputs):
            return output
        positions = [i for i, a in enumerate(args) if isinstance(a, (SymbolicTensor, Variable))]
        tensors = [args[i] for i in positions]

        def for_output(index):
            def rule(upstream):
                upstreams = [upstream if j == index else ops.zeros_like(o) for j, o in enumerate(outputs)]
                grads = _call_grad_fn(grad_fn, args, upstreams)
                grads = list(grads) if isinstance(grads, (list, tuple)) else [grads]
                if len(grads) != len(args):
                    raise ValueError(f"custom_gradient: the gradient function of {f.__name__} returned "
                                     f"{len(grads)} gradients for {len(args)} arguments")
                return [grads[i] for i in positions]
            return rule

        marked = []
        for index, out in enumerate(outputs):
            out = _tensor(out)
            marked.append(bind("custom_gradient", [ops.stop_gradient(out), *tensors],
                               shape=tuple(-1 if d is None else d for d in out.shape), grad_fn=for_output(index)))
        return _unflatten(output, marked)

    return wrapped
