"""Pooling layers with Keras 3 names, arguments, defaults and configs.

MaxPooling1D/2D/3D and AveragePooling1D/2D/3D (pool, strides, padding), the global
poolings, which are reductions over the spatial axes, and the adaptive poolings
(AdaptiveMaxPooling1D/2D/3D, AdaptiveAveragePooling1D/2D/3D: a fixed output size).
"""

from __future__ import annotations

from kgraph import ops
from kgraph.layers.convolutional import standardize_data_format, standardize_padding, standardize_tuple
from kgraph.layers.layer import InputSpec, Layer


class BasePooling(Layer):
    mode = "max"

    def __init__(self, pool_size, strides, pool_dimensions, padding="valid", data_format=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.pool_size = standardize_tuple(pool_size, pool_dimensions, "pool_size")
        strides = pool_size if strides is None else strides
        self.strides = standardize_tuple(strides, pool_dimensions, "strides")
        self.padding = standardize_padding(padding)
        self.data_format = standardize_data_format(data_format)
        self.input_spec = InputSpec(ndim=pool_dimensions + 2)
        self.built = True

    def call(self, inputs):
        pool = ops.max_pool if self.mode == "max" else ops.average_pool
        return pool(inputs, self.pool_size, self.strides, self.padding, self.data_format)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        first = self.data_format == "channels_first"
        spatial = input_shape[2:] if first else input_shape[1:-1]
        out = []
        for length, size, stride in zip(spatial, self.pool_size, self.strides):
            if length is None:
                out.append(None)
            elif self.padding == "same":
                out.append((length - 1) // stride + 1)
            else:
                out.append((length - size) // stride + 1)
        if first:
            return input_shape[:2] + tuple(out)
        return (input_shape[0],) + tuple(out) + (input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "padding": self.padding, "strides": self.strides,
                       "data_format": self.data_format})
        return config


class MaxPooling1D(BasePooling):
    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, name=None, **kwargs):
        super().__init__(pool_size, strides, 1, padding, data_format, name=name, **kwargs)


class MaxPooling2D(BasePooling):
    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, name=None, **kwargs):
        super().__init__(pool_size, strides, 2, padding, data_format, name=name, **kwargs)


class MaxPooling3D(BasePooling):
    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, name=None, **kwargs):
        super().__init__(pool_size, strides, 3, padding, data_format, name=name, **kwargs)


class AveragePooling1D(BasePooling):
    mode = "avg"

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, name=None, **kwargs):
        super().__init__(pool_size, strides, 1, padding, data_format, name=name, **kwargs)


class AveragePooling2D(BasePooling):
    mode = "avg"

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, name=None, **kwargs):
        super().__init__(pool_size, strides, 2, padding, data_format, name=name, **kwargs)


class AveragePooling3D(BasePooling):
    mode = "avg"

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, name=None, **kwargs):
        super().__init__(pool_size, strides, 3, padding, data_format, name=name, **kwargs)


class BaseGlobalPooling(Layer):
    mode = "max"

    def __init__(self, pool_dimensions, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format)
        self.keepdims = keepdims
        self.input_spec = InputSpec(ndim=pool_dimensions + 2)
        self.pool_dimensions = pool_dimensions
        self.built = True

    def _axes(self):
        start = 2 if self.data_format == "channels_first" else 1
        return tuple(range(start, start + self.pool_dimensions))

    def call(self, inputs):
        reduce = ops.max if self.mode == "max" else ops.mean
        return reduce(inputs, axis=self._axes(), keepdims=self.keepdims)

    def compute_output_shape(self, input_shape):
        axes = self._axes()
        if self.keepdims:
            return tuple(1 if i in axes else d for i, d in enumerate(input_shape))
        return tuple(d for i, d in enumerate(input_shape) if i not in axes)

    def get_config(self):
        config = super().get_config()
        config.update({"data_format": self.data_format, "keepdims": self.keepdims})
        return config


class GlobalMaxPooling1D(BaseGlobalPooling):
    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(1, data_format, keepdims, **kwargs)


class GlobalMaxPooling2D(BaseGlobalPooling):
    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(2, data_format, keepdims, **kwargs)


class GlobalMaxPooling3D(BaseGlobalPooling):
    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(3, data_format, keepdims, **kwargs)


class GlobalAveragePooling1D(BaseGlobalPooling):
    mode = "avg"

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(1, data_format, keepdims, **kwargs)


class GlobalAveragePooling2D(BaseGlobalPooling):
    mode = "avg"

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(2, data_format, keepdims, **kwargs)


class GlobalAveragePooling3D(BaseGlobalPooling):
    mode = "avg"

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(3, data_format, keepdims, **kwargs)


class BaseAdaptivePooling(Layer):
    """Pools the spatial axes to a fixed `output_size` whatever the input size (PyTorch's
    windows: cell i of an axis of length L pools [floor(i L / out), ceil((i + 1) L / out)))."""

    mode = "max"
    pool_dimensions = 2

    def __init__(self, output_size, data_format=None, **kwargs):
        super().__init__(**kwargs)
        rank = self.pool_dimensions
        if isinstance(output_size, int):
            output_size = (output_size,) * rank
        if (not isinstance(output_size, (tuple, list)) or len(output_size) != rank
                or not all(isinstance(size, int) and size > 0 for size in output_size)):
            raise TypeError(f"{type(self).__name__}: `output_size` must be a positive integer or a tuple of {rank} "
                            f"positive integers. Received: {output_size!r} of type {type(output_size)}")
        self.output_size = tuple(output_size)
        self.data_format = standardize_data_format(data_format)
        self.input_spec = InputSpec(ndim=rank + 2)
        self.built = True

    def call(self, inputs):
        pool = ops.adaptive_max_pool if self.mode == "max" else ops.adaptive_average_pool
        return pool(inputs, output_size=self.output_size, data_format=self.data_format)

    def compute_output_shape(self, input_shape):
        if self.data_format == "channels_last":
            return (input_shape[0], *self.output_size, input_shape[-1])
        return (input_shape[0], input_shape[1], *self.output_size)

    def get_config(self):
        config = super().get_config()
        config.update({"output_size": self.output_size, "data_format": self.data_format})
        return config


class AdaptiveMaxPooling1D(BaseAdaptivePooling):
    pool_dimensions = 1


class AdaptiveMaxPooling2D(BaseAdaptivePooling):
    pool_dimensions = 2


class AdaptiveMaxPooling3D(BaseAdaptivePooling):
    pool_dimensions = 3


class AdaptiveAveragePooling1D(BaseAdaptivePooling):
    mode = "avg"
    pool_dimensions = 1


class AdaptiveAveragePooling2D(BaseAdaptivePooling):
    mode = "avg"
    pool_dimensions = 2


class AdaptiveAveragePooling3D(BaseAdaptivePooling):
    mode = "avg"
    pool_dimensions = 3


MaxPool1D, MaxPool2D, MaxPool3D = MaxPooling1D, MaxPooling2D, MaxPooling3D
AvgPool1D, AvgPool2D, AvgPool3D = AveragePooling1D, AveragePooling2D, AveragePooling3D
GlobalMaxPool1D, GlobalMaxPool2D, GlobalMaxPool3D = GlobalMaxPooling1D, GlobalMaxPooling2D, GlobalMaxPooling3D
GlobalAvgPool1D, GlobalAvgPool2D, GlobalAvgPool3D = (GlobalAveragePooling1D, GlobalAveragePooling2D,
                                                     GlobalAveragePooling3D)
