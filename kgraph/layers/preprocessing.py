"""Image preprocessing layers (Rescaling, Resizing, CenterCrop) and image augmentation layers
(RandomFlip, RandomTranslation, RandomRotation, RandomZoom, RandomCrop, RandomContrast,
RandomBrightness), with Keras 3's arguments, configs and formulas, built on kgraph.ops.image.

The augmentation layers are random only when called with training=True (as in Keras, a direct
call outside fit/predict defaults to training); otherwise they are the identity (RandomCrop: a
centre crop and resize), which is also what a model exports to ONNX. Their random numbers come
from a SeedGenerator, so a seeded layer is reproducible and a compiled step draws fresh values.
"""

from __future__ import annotations

import math

import numpy as np

from kgraph import ops
from kgraph import random as krandom
from kgraph.ir import SymbolicTensor, is_tracing
from kgraph.layers.layer import Layer
from kgraph.ops.conv import standardize_data_format
from kgraph.ops.image import axis_aligned_transform

FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = ("nearest", "bilinear")


def _training(training, inputs):
    """Keras's default for these layers: training unless told otherwise. A functional model under
    construction records the inference path (its outputs only need their shape); a replay inside
    fit/predict gets the model's training flag."""
    if training is None:
        return not (isinstance(inputs, SymbolicTensor) and not is_tracing())
    return bool(training)


def _check_rank(layer, inputs):
    if len(inputs.shape) not in (3, 4):
        raise ValueError(f"{layer.name}: expected a 3-D image or a 4-D batch of images, got shape "
                         f"{tuple(inputs.shape)}")


class Rescaling(Layer):
    """inputs * scale + offset, in the layer's compute dtype."""

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset
        self.supports_masking = True
        self.built = True

    def call(self, inputs):
        dtype = self.compute_dtype
        scale = np.asarray(self.scale, dtype)
        offset = np.asarray(self.offset, dtype)
        return ops.add(ops.multiply(ops.cast(inputs, dtype), scale), offset)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"scale": _plain(self.scale), "offset": _plain(self.offset)})
        return config


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


class _ImageLayer(Layer):
    """Base of the image layers: data_format, and the height and width axes."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format)
        self.built = True

    def _axes(self, rank):
        return (rank - 3, rank - 2) if self.data_format == "channels_last" else (rank - 2, rank - 1)

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


class Resizing(_ImageLayer):
    """Resize images to (height, width) with ops.image.resize; the same in training and inference."""

    def __init__(self, height, width, interpolation="bilinear", crop_to_aspect_ratio=False, pad_to_aspect_ratio=False,
                 fill_mode="constant", fill_value=0.0, antialias=False, data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.height, self.width = int(height), int(width)
        self.interpolation = interpolation
        self.crop_to_aspect_ratio = crop_to_aspect_ratio
        self.pad_to_aspect_ratio = pad_to_aspect_ratio
        self.fill_mode = fill_mode
        self.fill_value = fill_value
        self.antialias = bool(antialias)

    def call(self, inputs):
        _check_rank(self, inputs)
        return ops.image.resize(inputs, (self.height, self.width), interpolation=self.interpolation,
                                antialias=self.antialias, crop_to_aspect_ratio=self.crop_to_aspect_ratio,
                                pad_to_aspect_ratio=self.pad_to_aspect_ratio, fill_mode=self.fill_mode,
                                fill_value=self.fill_value, data_format=self.data_format)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        h, w = self._axes(len(shape))
        shape[h], shape[w] = self.height, self.width
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update({"height": self.height, "width": self.width, "interpolation": self.interpolation,
                       "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
                       "pad_to_aspect_ratio": self.pad_to_aspect_ratio, "fill_mode": self.fill_mode,
                       "fill_value": self.fill_value, "antialias": self.antialias})
        return config


def _crop_or_fit(layer, inputs, height, width):
    """The central (height, width) crop; an image smaller than that is cropped to the target
    aspect ratio and resized (Keras's smart_resize)."""
    x = ops.cast(inputs, layer.compute_dtype)
    h_axis, w_axis = layer._axes(len(x.shape))
    h_diff, w_diff = x.shape[h_axis] - height, x.shape[w_axis] - width
    if h_diff >= 0 and w_diff >= 0:
        key = [slice(None)] * len(x.shape)
        key[h_axis] = slice(h_diff // 2, h_diff // 2 + height)
        key[w_axis] = slice(w_diff // 2, w_diff // 2 + width)
        return ops.getitem(x, tuple(key))
    return ops.image.resize(x, (height, width), crop_to_aspect_ratio=True, data_format=layer.data_format)


class CenterCrop(_ImageLayer):
    """The central (height, width) window of each image (smaller images: crop to the aspect ratio,
    then resize)."""

    def __init__(self, height, width, data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.height, self.width = int(height), int(width)

    def call(self, inputs):
        _check_rank(self, inputs)
        return _crop_or_fit(self, inputs, self.height, self.width)

    compute_output_shape = Resizing.compute_output_shape

    def get_config(self):
        config = super().get_config()
        config.update({"height": self.height, "width": self.width})
        return config


# -- augmentation ----------------------------------------------------------------------------------------
def _factor_range(layer, factor, bounds, name="factor"):
    """Keras's factor rule: a number f gives (max(-|f|, low), |f|), a pair is sorted; both within bounds."""
    message = (f"{layer.name}: {name} must be a number or a list of two numbers in [{bounds[0]}, {bounds[1]}], "
               f"got {factor!r}")
    if isinstance(factor, (tuple, list)):
        if len(factor) != 2 or factor[0] > bounds[1] or factor[1] < bounds[0]:
            raise ValueError(message)
        return tuple(sorted(factor))
    if isinstance(factor, (int, float)) and not isinstance(factor, bool):
        if not bounds[0] <= factor <= bounds[1]:
            raise ValueError(message)
        return max(-abs(factor), bounds[0]), abs(factor)
    raise ValueError(message)


class _RandomLayer(_ImageLayer):
    """An augmentation layer: random while training, else the identity."""

    def __init__(self, seed=None, data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.seed = seed
        self.generator = krandom.SeedGenerator(seed)

    def call(self, inputs, training=True):
        _check_rank(self, inputs)
        x = ops.cast(inputs, self.compute_dtype)
        if not _training(training, inputs):
            return x
        batched = len(x.shape) == 4
        out = self._augment(x if batched else ops.expand_dims(x, 0))
        return out if batched else ops.squeeze(out, 0)

    def _uniform(self, x, shape, low, high):
        """Per-image uniform numbers: shape (batch,) + shape."""
        return krandom.uniform((x.shape[0],) + tuple(shape), low, high, dtype=self.compute_dtype, seed=self.generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config


class RandomFlip(_RandomLayer):
    """Flips each image left-right and/or top-bottom with probability 1/2 (one draw per image, shared
    by both directions in "horizontal_and_vertical", as in Keras)."""

    MODES = ("horizontal", "vertical", "horizontal_and_vertical")

    def __init__(self, mode="horizontal_and_vertical", seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        if mode not in self.MODES:
            raise ValueError(f"{self.name}: mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def _augment(self, x):
        flips = ops.less_equal(self._uniform(x, (1, 1, 1), 0.0, 1.0), 0.5)
        h_axis, w_axis = self._axes(4)
        if self.mode in ("horizontal", "horizontal_and_vertical"):
            x = ops.where(flips, ops.flip(x, axis=w_axis), x)
        if self.mode in ("vertical", "horizontal_and_vertical"):
            x = ops.where(flips, ops.flip(x, axis=h_axis), x)
        return x

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


class _GeometricLayer(_RandomLayer):
    """Augmentations that resample the image through ops.image.affine_transform (translation and
    zoom through its axis-aligned form, which is much cheaper)."""

    def __init__(self, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, data_format=None,
                 **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        if fill_mode not in FILL_MODES:
            raise NotImplementedError(f"{self.name}: unknown fill_mode {fill_mode!r}, expected one of {FILL_MODES}")
        if interpolation not in INTERPOLATIONS:
            raise NotImplementedError(f"{self.name}: unknown interpolation {interpolation!r}, expected one of "
                                      f"{INTERPOLATIONS}")
        self.fill_mode = fill_mode
        self.interpolation = interpolation
        self.fill_value = fill_value

    def _augment(self, x):
        h_axis, w_axis = self._axes(4)
        transform = self._transform(x, x.shape[h_axis], x.shape[w_axis])
        return ops.image.affine_transform(x, transform, interpolation=self.interpolation, fill_mode=self.fill_mode,
                                          fill_value=self.fill_value, data_format=self.data_format)

    def _check_factor(self, factor, name):
        return _factor_range(self, factor, (-1.0, 1.0), name)

    def _axis_aligned(self, x, x_scale, x_offset, y_scale, y_offset):
        return axis_aligned_transform(x, x_scale, x_offset, y_scale, y_offset, interpolation=self.interpolation,
                                      fill_mode=self.fill_mode, fill_value=self.fill_value,
                                      data_format=self.data_format)


def _matrix(columns):
    """(batch, 8) transforms from 8 (batch, 1) columns or numbers (broadcast against the first)."""
    first = next(c for c in columns if not isinstance(c, (int, float)))
    return ops.concatenate([c if not isinstance(c, (int, float)) else ops.full_like(first, c) for c in columns],
                           axis=1)


class RandomTranslation(_GeometricLayer):
    """Shifts each image by a random fraction of its height and width."""

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, data_format=None, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, data_format, **kwargs)
        self.height_factor, self.width_factor = height_factor, width_factor
        self.height_lower, self.height_upper = self._symmetric(height_factor, "height_factor")
        self.width_lower, self.width_upper = self._symmetric(width_factor, "width_factor")

    def _symmetric(self, factor, name):
        if isinstance(factor, (int, float)) and not isinstance(factor, bool):
            if not -1 <= factor <= 1:
                raise ValueError(f"{self.name}: {name} must be in [-1, 1], got {factor}")
            return -abs(factor), abs(factor)
        return self._check_factor(factor, name)

    def _augment(self, x):
        h_axis, w_axis = self._axes(4)
        dy = ops.multiply(self._uniform(x, (1,), self.height_lower, self.height_upper), float(x.shape[h_axis]))
        dx = ops.multiply(self._uniform(x, (1,), self.width_lower, self.width_upper), float(x.shape[w_axis]))
        # the transform [1, 0, -dx, 0, 1, -dy, 0, 0], resampled by rows and columns
        return self._axis_aligned(x, 1.0, ops.negative(dx), 1.0, ops.negative(dy))

    def get_config(self):
        config = super().get_config()
        config.update({"height_factor": self.height_factor, "width_factor": self.width_factor,
                       "fill_mode": self.fill_mode, "interpolation": self.interpolation,
                       "fill_value": self.fill_value})
        return config


class RandomRotation(_GeometricLayer):
    """Rotates each image about its centre by a random fraction of a full turn."""

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0,
                 data_format=None, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, data_format, **kwargs)
        self.factor = self._check_factor(factor, "factor")

    def _transform(self, x, height, width):
        angle = ops.multiply(self._uniform(x, (1,), self.factor[0] * 360.0, self.factor[1] * 360.0), math.pi / 180.0)
        cos, sin = ops.cos(angle), ops.sin(angle)
        cx, cy = 0.5 * (width - 1), 0.5 * (height - 1)
        a0, a1 = cos, ops.negative(sin)
        a2 = ops.subtract(ops.subtract(cx, ops.multiply(a0, cx)), ops.multiply(a1, cy))
        b0, b1 = sin, cos
        b2 = ops.subtract(ops.subtract(cy, ops.multiply(b0, cx)), ops.multiply(b1, cy))
        return _matrix([a0, a1, a2, b0, b1, b2, 0.0, 0.0])

    def get_config(self):
        config = super().get_config()
        config.update({"factor": self.factor, "fill_mode": self.fill_mode, "fill_value": self.fill_value,
                       "interpolation": self.interpolation})
        return config


class RandomZoom(_GeometricLayer):
    """Zooms each image about its centre: a factor f reads the input at (1 + f) times the output's
    scale (negative zooms in); without width_factor the aspect ratio is kept."""

    def __init__(self, height_factor, width_factor=None, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, data_format=None, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, data_format, **kwargs)
        self.height_factor, self.width_factor = height_factor, width_factor
        self.height_lower, self.height_upper = RandomTranslation._symmetric(self, height_factor, "height_factor")
        if width_factor is not None:
            self.width_lower, self.width_upper = RandomTranslation._symmetric(self, width_factor, "width_factor")

    def _augment(self, x):
        h_axis, w_axis = self._axes(4)
        height, width = x.shape[h_axis], x.shape[w_axis]
        zy = self._uniform(x, (1,), 1.0 + self.height_lower, 1.0 + self.height_upper)
        zx = zy if self.width_factor is None else self._uniform(x, (1,), 1.0 + self.width_lower,
                                                                1.0 + self.width_upper)
        x_offset = ops.multiply((width - 1) / 2.0, ops.subtract(1.0, zx))
        y_offset = ops.multiply((height - 1) / 2.0, ops.subtract(1.0, zy))
        # the transform [zx, 0, x_offset, 0, zy, y_offset, 0, 0], resampled by rows and columns
        return self._axis_aligned(x, zx, x_offset, zy, y_offset)

    def get_config(self):
        config = super().get_config()
        config.update({"height_factor": self.height_factor, "width_factor": self.width_factor,
                       "fill_mode": self.fill_mode, "interpolation": self.interpolation,
                       "fill_value": self.fill_value})
        return config


class RandomCrop(_RandomLayer):
    """A random (height, width) window while training (one position per batch, as in Keras); at
    inference, and for inputs not larger than the window, the centre crop to the aspect ratio,
    resized."""

    def __init__(self, height, width, seed=None, data_format=None, name=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, name=name, **kwargs)
        self.height, self.width = int(height), int(width)

    def call(self, inputs, training=True):
        _check_rank(self, inputs)
        x = ops.cast(inputs, self.compute_dtype)
        h_axis, w_axis = self._axes(len(x.shape))
        in_h, in_w = x.shape[h_axis], x.shape[w_axis]
        if in_h is None or in_w is None:
            raise ValueError(f"{self.name}: the input's height and width must be static, got {tuple(x.shape)}")
        if not (_training(training, inputs) and in_h > self.height and in_w > self.width):
            return ops.image.resize(x, (self.height, self.width), crop_to_aspect_ratio=True,
                                    data_format=self.data_format)
        for axis, size, target in ((h_axis, in_h, self.height), (w_axis, in_w, self.width)):
            start = krandom.uniform((), 0.0, float(size - target + 1), seed=self.generator)
            start = ops.minimum(ops.cast(start, "int32"), size - target)
            x = ops.take(x, ops.add(start, np.arange(target, dtype=np.int32)), axis=axis)
        return x

    compute_output_shape = Resizing.compute_output_shape

    def get_config(self):
        config = super().get_config()
        config.update({"height": self.height, "width": self.width})
        return config


class _ColorLayer(_RandomLayer):
    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not isinstance(value_range, (tuple, list)) or len(value_range) != 2:
            raise ValueError(f"{self.name}: value_range must be a list of two numbers, got {value_range!r}")
        self.value_range = value_range

    def get_config(self):
        config = super().get_config()
        config.update({"factor": self.factor, "value_range": self.value_range})
        return config


class RandomContrast(_ColorLayer):
    """Per image, (x - mean) * c + mean per channel with c uniform in [1 - lower, 1 + upper] (Keras's
    factor rule gives lower = 0 for a single number), clipped to value_range."""

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(factor, value_range, seed, **kwargs)
        self.factor = _factor_range(self, factor, (0.0, 1.0))

    def _augment(self, x):
        c = self._uniform(x, (1, 1, 1), 1.0 - self.factor[0], 1.0 + self.factor[1])
        h_axis, w_axis = self._axes(4)
        mean = ops.mean(x, axis=(h_axis, w_axis), keepdims=True)
        out = ops.add(ops.multiply(ops.subtract(x, mean), c), mean)
        return ops.clip(out, self.value_range[0], self.value_range[1])


class RandomBrightness(_ColorLayer):
    """Adds one random delta per image, factor * (value_range width), clipped to value_range."""

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(factor, sorted(value_range) if isinstance(value_range, (tuple, list)) else value_range,
                         seed, **kwargs)
        self.factor = _factor_range(self, factor, (-1.0, 1.0))

    def _augment(self, x):
        low, high = self.value_range
        delta = ops.multiply(self._uniform(x, (1, 1, 1), self.factor[0], self.factor[1]), float(high - low))
        return ops.clip(ops.add(x, delta), low, high)
