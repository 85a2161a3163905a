"""Static shape arithmetic shared by the op library (None is the dynamic batch size)."""

from __future__ import annotations


def broadcast_shapes(*shapes, op="broadcast"):
    """numpy broadcasting over static shapes where None is an unknown dimension."""
    rank = max((len(s) for s in shapes), default=0)
    result = []
    for axis in range(rank):
        dims = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ValueError(f"{op}: shapes {', '.join(str(tuple(s)) for s in shapes)} "
                             "cannot be broadcast together")
        if known:
            result.append(known.pop())
        elif None in dims:
            result.append(None)
        else:
            result.append(1)
    return tuple(result)


def normalize_axis(axis, ndim, op="op"):
    if not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor of rank {ndim}")
    return axis % ndim if ndim else 0


def normalize_axes(axis, ndim, op="op"):
    """A sorted tuple of non-negative axes; None means all axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    axes = tuple(sorted({normalize_axis(int(a), ndim, op) for a in axis}))
    return axes


def num_elements(shape):
    total = 1
    for d in shape:
        if d is None:
            return None
        total *= d
    return total
