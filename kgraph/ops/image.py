"""kgraph.ops.image: the keras.ops.image namespace. The functions defined here are
compositions of registered ops; a keras.ops.image name kgraph lacks raises UnsupportedOpError."""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.ops.namespace import module_getattr

__getattr__, __dir__ = module_getattr("image")

GRAYSCALE_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R BT.601 luma, as Keras uses


def _layout(images, data_format, name):
    """images as a batched channels_last tensor, and a function that restores the layout."""
    images = ops.convert_to_tensor(images)
    if data_format not in (None, "channels_last", "channels_first"):
        raise ValueError(f"{name}: data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
    rank = len(images.shape)
    if rank not in (3, 4):
        raise ValueError(f"{name}: images must be 3-D (one image) or 4-D (a batch), got shape {tuple(images.shape)}")
    first = data_format == "channels_first"
    x = ops.expand_dims(images, 0) if rank == 3 else images
    if first:
        x = ops.transpose(x, (0, 2, 3, 1))

    def restore(y):
        if first:
            y = ops.transpose(y, (0, 3, 1, 2))
        return ops.squeeze(y, 0) if rank == 3 else y
    return x, restore


def rgb_to_grayscale(images, data_format=None):
    """Luma 0.2989 R + 0.587 G + 0.114 B as one channel (int images are truncated back to int)."""
    x, restore = _layout(images, data_format, "rgb_to_grayscale")
    if x.shape[-1] != 3:
        raise ValueError(f"rgb_to_grayscale: images must have 3 channels, got {x.shape[-1]}")
    values = x if str(x.dtype).startswith("float") else ops.cast(x, "float32")
    gray = ops.sum(ops.multiply(values, np.asarray(GRAYSCALE_WEIGHTS, values.dtype)), axis=-1, keepdims=True)
    return restore(gray if gray.dtype == x.dtype else ops.cast(gray, x.dtype))


def _sides(name, size, low, high, target):
    given = sum(v is not None for v in (low, high, target))
    if given != 2:
        raise ValueError(f"{name}: give exactly two of the two margins and the target size, got "
                         f"{low}, {high} and target {target}")
    if low is None:
        low = target - size - high if name.startswith("pad") else size - target - high
    if high is None:
        high = target - size - low if name.startswith("pad") else size - target - low
    if low < 0 or high < 0:
        raise ValueError(f"{name}: the margins come out negative ({low}, {high}) for size {size} and target {target}")
    return int(low), int(high)


def pad_images(images, top_padding=None, left_padding=None, bottom_padding=None, right_padding=None,
               target_height=None, target_width=None, data_format=None):
    """Zero-pad images to the given margins or target size."""
    x, restore = _layout(images, data_format, "pad_images")
    top, bottom = _sides("pad_images (height)", x.shape[1], top_padding, bottom_padding, target_height)
    left, right = _sides("pad_images (width)", x.shape[2], left_padding, right_padding, target_width)
    return restore(ops.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)]))


def crop_images(images, top_cropping=None, left_cropping=None, bottom_cropping=None, right_cropping=None,
                target_height=None, target_width=None, data_format=None):
    """Crop images by the given margins or to the target size."""
    x, restore = _layout(images, data_format, "crop_images")
    h, w = x.shape[1], x.shape[2]
    top, bottom = _sides("crop_images (height)", h, top_cropping, bottom_cropping, target_height)
    left, right = _sides("crop_images (width)", w, left_cropping, right_cropping, target_width)
    return restore(ops.getitem(x, (slice(None), slice(top, h - bottom), slice(left, w - right))))
