"""Reductions (sum, mean, max, min, prod, argmax, argmin) and composites built on them."""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.ops.registry import OpDef, Spec, bind, get_op, register
from kgraph.ops.shapes import normalize_axes, normalize_axis

REDUCTION = "reduction"


def _reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _contiguous_runs(axes):
    """Sorted axes split into runs of consecutive axes: (0, 2, 3) -> [(0,), (2, 3)]."""
    runs = []
    for axis in sorted(axes):
        if runs and axis == runs[-1][-1] + 1:
            runs[-1] = runs[-1] + (axis,)
        else:
            runs.append((axis,))
    return runs


def _reduce_infer(dtype_rule):
    def infer(attrs, x):
        axes = tuple(attrs["axes"])
        if not axes or len(_contiguous_runs(axes)) != 1 or not all(0 <= a < len(x.shape) for a in axes):
            raise ValueError(f"reduction: axes {axes} of a tensor of rank {len(x.shape)} are not one "
                             "non-empty run of consecutive axes; the kgraph.ops functions split "
                             "other axis sets into successive reductions")
        return _reduced_shape(x.shape, axes, attrs["keepdims"]), dtype_rule(x.dtype)
    return infer


def _keepdims_grad(ctx):
    """The upstream gradient reshaped to keepdims form (so it broadcasts against x)."""
    x = ctx.inputs[0]
    kept = _reduced_shape(x.shape, ctx.attrs["axes"], True)
    return ops.reshape(ctx.upstream, tuple(-1 if d is None else d for d in kept))


def _sum_grad(ctx):
    return [ops.broadcast_to(_keepdims_grad(ctx), ctx.inputs[0].shape)]


def _mean_grad(ctx):
    x = ctx.inputs[0]
    count = bind("reduced_count", [x], axes=ctx.attrs["axes"])
    return [ops.divide(ops.broadcast_to(_keepdims_grad(ctx), x.shape), ops.cast(count, ctx.upstream.dtype))]


def _extremum_grad(ctx):
    """Gradient flows to every position equal to the extremum, split evenly among ties."""
    x = ctx.inputs[0]
    kept_out = ops.reshape(ctx.output, tuple(-1 if d is None else d for d in
                                             _reduced_shape(x.shape, ctx.attrs["axes"], True)))
    hits = ops.cast(ops.equal(x, kept_out), ctx.upstream.dtype)
    ties = ops.sum(hits, axis=ctx.attrs["axes"], keepdims=True)
    return [ops.multiply(ops.divide(hits, ties), _keepdims_grad(ctx))]


def _prod_grad(ctx):
    x = ctx.inputs[0]
    kept_out = ops.reshape(ctx.output, tuple(-1 if d is None else d for d in
                                             _reduced_shape(x.shape, ctx.attrs["axes"], True)))
    return [ops.multiply(_keepdims_grad(ctx), ops.divide(kept_out, x))]


def _samples(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    return [([x], {"axes": (1,), "keepdims": False}), ([x], {"axes": (1, 2), "keepdims": True}),
            ([x], {"axes": (0, 1, 2), "keepdims": False}), ([x[0]], {"axes": (0,), "keepdims": False}),
            ([x], {"axes": (0, 1), "keepdims": True})]


def _same(dtype):
    return dtype


def _sum_dtype(dtype):
    return "int32" if dtype == "bool" else dtype


def _float(dtype):
    return dtype if dtype.startswith("float") else "float32"


def _np_reduce(fn):
    return lambda at, x: fn(x, axis=at["axes"], keepdims=at["keepdims"])


for _name, _fn, _grad, _rule in [("sum", np.sum, _sum_grad, _sum_dtype),
                                 ("mean", np.mean, _mean_grad, _float),
                                 ("max", np.max, _extremum_grad, _same),
                                 ("min", np.min, _extremum_grad, _same),
                                 ("prod", np.prod, _prod_grad, _sum_dtype)]:
    register(OpDef(_name, REDUCTION, _reduce_infer(_rule), _np_reduce(_fn), grad=_grad,
                   samples=_samples, extra={"combine": _name}))


def _arg_infer(attrs, x):
    return _reduced_shape(x.shape, (attrs["axis"],), attrs["keepdims"]), "int32"


def _arg_samples(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    return [([x], {"axis": 1, "keepdims": False}), ([x], {"axis": 2, "keepdims": True})]


register(OpDef("argmax", REDUCTION, _arg_infer,
               lambda at, x: np.argmax(x, axis=at["axis"], keepdims=at["keepdims"]),
               samples=_arg_samples, differentiable=False))
register(OpDef("argmin", REDUCTION, _arg_infer,
               lambda at, x: np.argmin(x, axis=at["axis"], keepdims=at["keepdims"]),
               samples=_arg_samples, differentiable=False))


def _count_infer(attrs, x):
    return (), "int32"


register(OpDef("reduced_count", "shape", _count_infer,
               lambda at, x: np.int32(np.prod([x.shape[a] for a in at["axes"]], dtype=np.int64)),
               samples=lambda rng: [([np.zeros((3, 4, 5), np.float32)], {"axes": (0, 2)})],
               differentiable=False,
               doc="The number of elements reduced over `axes` (known only at run time for None dims)."))


# -- kgraph.ops functions --------------------------------------------------------------------
def _reduce(name, x, axis, keepdims):
    """Reduce over any axes: the primitive reduces one run of consecutive axes (what the
    kernels need), so other axis sets become successive reductions, last run first, with
    keepdims in between and a reshape at the end (exact for every combine, mean included:
    each partial mean averages equally many elements)."""
    x = ops.convert_to_tensor(x)
    axes = normalize_axes(axis, len(x.shape), name)
    if not axes:  # nothing to reduce: the value itself, in the reduction's dtype
        _, dtype = get_op(name).infer({"axes": (0,), "keepdims": True}, Spec((1,), str(x.dtype)))
        return x if x.dtype == dtype else ops.cast(x, dtype)
    runs = _contiguous_runs(axes)
    if len(runs) == 1:
        return bind(name, [x], axes=axes, keepdims=bool(keepdims))
    result = x
    for run in reversed(runs):
        result = bind(name, [result], axes=run, keepdims=True)
    if not keepdims:
        result = ops.reshape(result, tuple(-1 if d is None else d
                                           for d in _reduced_shape(x.shape, axes, False)))
    return result


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return _reduce("sum", x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    return _reduce("mean", x, axis, keepdims)


def max(x, axis=None, keepdims=False, initial=None):  # noqa: A001
    result = _reduce("max", x, axis, keepdims)
    return result if initial is None else ops.maximum(result, initial)


def min(x, axis=None, keepdims=False, initial=None):  # noqa: A001
    result = _reduce("min", x, axis, keepdims)
    return result if initial is None else ops.minimum(result, initial)


def prod(x, axis=None, keepdims=False, dtype=None):
    result = _reduce("prod", x, axis, keepdims)
    return result if dtype is None else ops.cast(result, dtype)


amax = max
amin = min


def _arg(name, x, axis, keepdims):
    x = ops.convert_to_tensor(x)
    if axis is None:
        x = ops.reshape(x, (-1,))
        axis = 0
    return bind(name, [x], axis=normalize_axis(axis, len(x.shape), name), keepdims=bool(keepdims))


def argmax(x, axis=None, keepdims=False):
    return _arg("argmax", x, axis, keepdims)


def argmin(x, axis=None, keepdims=False):
    return _arg("argmin", x, axis, keepdims)


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) computed stably by subtracting the (gradient-free) maximum."""
    x = ops.convert_to_tensor(x)
    peak = ops.stop_gradient(max(x, axis=axis, keepdims=True))
    total = sum(ops.exp(ops.subtract(x, peak)), axis=axis, keepdims=True)
    result = ops.add(ops.log(total), peak)
    if not keepdims:
        axes = normalize_axes(axis, len(x.shape))
        result = ops.squeeze(result, axis=axes)
    return result


def softmax(x, axis=-1):
    x = ops.convert_to_tensor(x)
    shifted = ops.subtract(x, ops.stop_gradient(max(x, axis=axis, keepdims=True)))
    unnormalized = ops.exp(shifted)
    return ops.divide(unnormalized, sum(unnormalized, axis=axis, keepdims=True))


def log_softmax(x, axis=-1):
    x = ops.convert_to_tensor(x)
    shifted = ops.subtract(x, ops.stop_gradient(max(x, axis=axis, keepdims=True)))
    return ops.subtract(shifted, ops.log(sum(ops.exp(shifted), axis=axis, keepdims=True)))


def var(x, axis=None, keepdims=False):
    x = ops.convert_to_tensor(x)
    centered = ops.subtract(x, mean(x, axis=axis, keepdims=True))
    return mean(ops.square(centered), axis=axis, keepdims=keepdims)


def std(x, axis=None, keepdims=False):
    return ops.sqrt(var(x, axis=axis, keepdims=keepdims))
