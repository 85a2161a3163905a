"""Reshaping layers with Keras 3 names, arguments, defaults and configs.

UpSampling1D/2D/3D (the `upsample` op), ZeroPadding1D/2D/3D (`pad`), Cropping1D/2D/3D
(`slice`), Permute (`transpose`) and RepeatVector (`broadcast_to`).
"""

from __future__ import annotations

import importlib

import numpy as np

from kgraph import ops
from kgraph.layers.convolutional import standardize_data_format, standardize_tuple
from kgraph.layers.layer import InputSpec, Layer

_pool = importlib.import_module("kgraph.ops.pool")

INTERPOLATIONS = ("nearest", "bilinear")


def _spatial_axes(rank, data_format):
    start = 2 if data_format == "channels_first" else 1
    return tuple(range(start, start + rank))


def _pairs(value, rank, name):
    """Keras' ((lo, hi), ...) normalization: an int, `rank` ints, or `rank` pairs."""
    if isinstance(value, (int, np.integer)):
        return ((int(value), int(value)),) * rank
    value = tuple(value)
    if rank == 1:
        return (standardize_tuple(value, 2, name, allow_zero=True),)
    if len(value) != rank:
        raise ValueError(f"`{name}` should have {rank} elements. Received: {name}={value}.")
    return tuple(standardize_tuple(v, 2, f"{name} entry {i}", allow_zero=True) for i, v in enumerate(value))


# -- upsampling ----------------------------------------------------------------------------------------
class BaseUpSampling(Layer):
    def __init__(self, rank, size, data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.rank = rank
        self.size = standardize_tuple(size, rank, "size")
        self.data_format = standardize_data_format(data_format)
        if interpolation not in INTERPOLATIONS:
            raise NotImplementedError(f"UpSampling: interpolation {interpolation!r} is not supported; "
                                      f"use one of {INTERPOLATIONS}")
        self.interpolation = interpolation
        self.input_spec = InputSpec(ndim=rank + 2)
        self.built = True

    def call(self, inputs):
        return _pool.upsample(inputs, self.size, self.interpolation, self.data_format)

    def compute_output_shape(self, input_shape):
        axes = _spatial_axes(self.rank, self.data_format)
        shape = list(input_shape)
        for axis, factor in zip(axes, self.size):
            shape[axis] = None if shape[axis] is None else shape[axis] * factor
        return tuple(shape)


class UpSampling1D(BaseUpSampling):
    """Repeats each step `size` times along the time axis."""

    def __init__(self, size=2, **kwargs):
        super().__init__(1, size, **kwargs)

    def get_config(self):
        return {**super().get_config(), "size": self.size[0]}


class UpSampling2D(BaseUpSampling):
    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(2, size, data_format, interpolation, **kwargs)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "data_format": self.data_format,
                "interpolation": self.interpolation}


class UpSampling3D(BaseUpSampling):
    def __init__(self, size=(2, 2, 2), data_format=None, **kwargs):
        super().__init__(3, size, data_format, **kwargs)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "data_format": self.data_format}


# -- zero padding and cropping -------------------------------------------------------------------------
class BaseZeroPadding(Layer):
    def __init__(self, rank, padding, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.rank = rank
        self.padding = _pairs(padding, rank, "padding")
        self.data_format = standardize_data_format(data_format)
        self.input_spec = InputSpec(ndim=rank + 2)
        self.built = True

    def _widths(self, ndim):
        widths = [(0, 0)] * ndim
        for axis, pair in zip(_spatial_axes(self.rank, self.data_format), self.padding):
            widths[axis] = pair
        return widths

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs)
        return ops.pad(x, self._widths(len(x.shape)))

    def compute_output_shape(self, input_shape):
        return tuple(None if d is None else d + lo + hi for d, (lo, hi) in zip(input_shape, self._widths(
            len(input_shape))))

    def get_config(self):
        padding = self.padding[0] if self.rank == 1 else self.padding
        return {**super().get_config(), "padding": padding, "data_format": self.data_format}


class ZeroPadding1D(BaseZeroPadding):
    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(1, padding, data_format, **kwargs)


class ZeroPadding2D(BaseZeroPadding):
    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(2, padding, data_format, **kwargs)


class ZeroPadding3D(BaseZeroPadding):
    def __init__(self, padding=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(3, padding, data_format, **kwargs)


class BaseCropping(Layer):
    def __init__(self, rank, cropping, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.rank = rank
        self.cropping = _pairs(cropping, rank, "cropping")
        self.data_format = standardize_data_format(data_format)
        self.input_spec = InputSpec(ndim=rank + 2)
        self.built = True

    def _bounds(self, shape):
        index = [slice(None)] * len(shape)
        for axis, (lo, hi) in zip(_spatial_axes(self.rank, self.data_format), self.cropping):
            length = shape[axis]
            if length is not None and lo + hi >= length:
                raise ValueError(f'Layer "{self.name}": cropping {self.cropping} removes every position of axis '
                                 f"{axis} in an input of shape {tuple(shape)}")
            index[axis] = slice(lo, (length - hi) if length is not None else (-hi if hi else None))
        return tuple(index)

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs)
        return ops.getitem(x, self._bounds(x.shape))

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis, (lo, hi) in zip(_spatial_axes(self.rank, self.data_format), self.cropping):
            if shape[axis] is not None:
                shape[axis] = shape[axis] - lo - hi
        return tuple(shape)

    def get_config(self):
        config = {**super().get_config(), "cropping": self.cropping[0] if self.rank == 1 else self.cropping}
        if self.rank > 1:
            config["data_format"] = self.data_format
        return config


class Cropping1D(BaseCropping):
    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(1, cropping, **kwargs)


class Cropping2D(BaseCropping):
    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(2, cropping, data_format, **kwargs)


class Cropping3D(BaseCropping):
    def __init__(self, cropping=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(3, cropping, data_format, **kwargs)


# -- Permute and RepeatVector ---------------------------------------------------------------------------
class Permute(Layer):
    """Permutes the non-batch axes: `dims` numbers them from 1."""

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        self.dims = tuple(int(d) for d in dims)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(f"Invalid permutation argument `dims` for Permute Layer. The set of indices in `dims` "
                             f"must be consecutive and start from 1. Received dims={dims}")
        self.input_spec = InputSpec(ndim=len(self.dims) + 1)
        self.built = True

    def call(self, inputs):
        return ops.transpose(inputs, (0,) + self.dims)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[d] for d in self.dims)

    def get_config(self):
        return {**super().get_config(), "dims": self.dims}


class RepeatVector(Layer):
    """(batch, features) -> (batch, n, features)."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(n, (int, np.integer)):
            raise TypeError(f"Expected an integer value for `n`, got {type(n)}.")
        self.n = int(n)
        self.input_spec = InputSpec(ndim=2)
        self.built = True

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs)
        return ops.broadcast_to(ops.expand_dims(x, 1), (x.shape[0], self.n, x.shape[1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n, input_shape[1])

    def get_config(self):
        return {**super().get_config(), "n": self.n}
