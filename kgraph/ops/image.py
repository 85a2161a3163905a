"""kgraph.ops.image: the keras.ops.image namespace. The functions defined here are
compositions of registered ops; a keras.ops.image name kgraph lacks raises UnsupportedOpError."""

from __future__ import annotations

import itertools

import numpy as np

from kgraph import ops
from kgraph.ir import SymbolicTensor
from kgraph.ops.conv import standardize_data_format
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


# -- shared helpers ---------------------------------------------------------------------------------------
def _float(x):
    """x itself if float, else x cast to float32 (Keras promotes int images so)."""
    return x if str(x.dtype).startswith("float") else ops.cast(x, "float32")


def _round_half_away(x):
    """Rounding as jax's lax.round does (half away from zero), not numpy's half to even."""
    return ops.multiply(ops.sign(x), ops.floor(ops.add(ops.abs(x), 0.5)))


def _back_to(values, dtype):
    """values (float) as `dtype`: int results are rounded half away from zero first, as jax does."""
    if str(values.dtype) == str(dtype):
        return values
    if not str(dtype).startswith("float"):
        values = _round_half_away(values)
    return ops.cast(values, dtype)


# -- resize and scale_and_translate: separable matmuls with weight matrices built at trace time --------
RESIZE_INTERPOLATIONS = ("bilinear", "nearest", "lanczos3", "lanczos5", "bicubic", "area")
SCALE_AND_TRANSLATE_METHODS = {"linear": "bilinear", "bilinear": "bilinear", "trilinear": "bilinear",
                               "cubic": "bicubic", "bicubic": "bicubic", "tricubic": "bicubic",
                               "lanczos3": "lanczos3", "lanczos5": "lanczos5"}


def _keys_cubic(x):
    out = ((1.5 * x - 2.5) * x) * x + 1.0
    out = np.where(x >= 1.0, ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0, out)
    return np.where(x >= 2.0, 0.0, out)


def _lanczos(radius):
    def kernel(x):
        y = radius * np.sin(np.pi * x) * np.sin(np.pi * x / radius)
        out = np.where(x > 1e-3, y / np.where(x != 0, np.pi ** 2 * x ** 2, 1.0), 1.0)
        return np.where(x > radius, 0.0, out)
    return kernel


_KERNELS = {"bilinear": lambda x: np.maximum(0.0, 1.0 - np.abs(x)), "bicubic": _keys_cubic,
            "lanczos3": _lanczos(3.0), "lanczos5": _lanczos(5.0)}


def resample_weights(in_size, out_size, method, antialias, scale=None, translation=0.0):
    """The (out_size, in_size) matrix that resamples one axis as jax.image.scale_and_translate
    does: half-pixel centers, the kernel widened by 1/scale when antialiasing a downsampling,
    rows normalized to sum 1, zero rows for samples outside the input. Built in numpy."""
    scale = out_size / in_size if scale is None else float(scale)
    inv = 1.0 / scale
    sample = (np.arange(out_size) + 0.5) * inv - translation * inv - 0.5
    inputs = np.arange(in_size, dtype=np.float64)
    if method == "area":  # the overlap of each output pixel's span with each input pixel
        left = np.arange(out_size) * inv - translation * inv
        weights = np.maximum(0.0, np.minimum(left[:, None] + inv, inputs[None, :] + 1.0)
                             - np.maximum(left[:, None], inputs[None, :]))
    else:
        kernel_scale = max(inv, 1.0) if antialias else 1.0
        with np.errstate(all="ignore"):
            weights = _KERNELS[method](np.abs(sample[:, None] - inputs[None, :]) / kernel_scale)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.where(np.abs(total) > 1000.0 * np.finfo(np.float32).eps,
                       weights / np.where(total != 0, total, 1.0), 0.0)
    inside = (sample >= -0.5) & (sample <= in_size - 0.5)
    return np.where(inside[:, None], weights, 0.0)


def nearest_indices(in_size, out_size):
    """The input index each output pixel copies in nearest resizing (jax's float32 arithmetic)."""
    offsets = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * np.float32(in_size) / np.float32(out_size)
    return np.floor(offsets).astype(np.int32)


def _apply_along(x, weights, axis):
    """x contracted with the (out, in) matrix `weights` along `axis`: one matmul."""
    shape = tuple(x.shape)
    w = np.asarray(weights, x.dtype)
    if axis == len(shape) - 1:
        return ops.matmul(x, w.T)
    rest = int(np.prod(shape[axis + 1:]))
    flat = ops.reshape(x, shape[:axis + 1] + (rest,))
    out = ops.matmul(w, flat)
    return ops.reshape(out, shape[:axis] + (w.shape[0],) + shape[axis + 1:])


def _aspect_crop_or_pad(x, axes, size, crop, pad, fill_value):
    """Keras's crop_to_aspect_ratio / pad_to_aspect_ratio, before the resize."""
    (ha, wa), (th, tw) = axes, size
    height, width = x.shape[ha], x.shape[wa]
    if crop:
        crop_h = max(min(height, int(float(width * th) / tw)), 1)
        crop_w = max(min(width, int(float(height * tw) / th)), 1)
        top, left = int(float(height - crop_h) / 2), int(float(width - crop_w) / 2)
        key = [slice(None)] * len(x.shape)
        key[ha], key[wa] = slice(top, top + crop_h), slice(left, left + crop_w)
        return ops.getitem(x, tuple(key))
    pad_h = max(height, int(float(width * th) / tw))
    pad_w = max(width, int(float(height * tw) / th))
    top, left = int(float(pad_h - height) / 2), int(float(pad_w - width) / 2)
    widths = [(0, 0)] * len(x.shape)
    if top > 0:  # Keras pads one side only: the height if it needs it, else the width
        widths[ha] = (top, top)
    elif left > 0:
        widths[wa] = (left, left)
    else:
        return x
    return ops.pad(x, widths, constant_values=fill_value)


def resize(images, size, interpolation="bilinear", antialias=False, crop_to_aspect_ratio=False,
           pad_to_aspect_ratio=False, fill_mode="constant", fill_value=0.0, data_format=None):
    """Resize images to `size` (height, width) as Keras 3 on JAX does (jax.image.resize)."""
    images = ops.convert_to_tensor(images)
    data_format = standardize_data_format(data_format)
    if interpolation not in RESIZE_INTERPOLATIONS:
        raise ValueError(f"resize: interpolation must be one of {RESIZE_INTERPOLATIONS}, got {interpolation!r}")
    if fill_mode != "constant":
        raise ValueError(f"resize: only fill_mode='constant' is supported, got {fill_mode!r}")
    if crop_to_aspect_ratio and pad_to_aspect_ratio:
        raise ValueError("resize: only one of pad_to_aspect_ratio and crop_to_aspect_ratio can be True")
    if len(size) != 2 or size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"resize: size must be 2 positive ints (height, width), got {size}")
    rank = len(images.shape)
    if rank not in (3, 4):
        raise ValueError(f"resize: images must be 3-D (one image) or 4-D (a batch), got shape {tuple(images.shape)}")
    axes = (rank - 3, rank - 2) if data_format == "channels_last" else (rank - 2, rank - 1)
    if any(images.shape[a] is None for a in axes):
        raise ValueError(f"resize: the height and width must be static, got shape {tuple(images.shape)}")
    size = (int(size[0]), int(size[1]))
    x = images
    if crop_to_aspect_ratio or pad_to_aspect_ratio:
        x = _aspect_crop_or_pad(x, axes, size, crop_to_aspect_ratio, pad_to_aspect_ratio, fill_value)
    if interpolation == "nearest":
        for axis, out_size in zip(axes, size):
            if x.shape[axis] != out_size:
                x = ops.take(x, nearest_indices(x.shape[axis], out_size), axis=axis)
        return x
    x = _float(x)
    for axis, out_size in zip(axes, size):
        if x.shape[axis] != out_size:
            x = _apply_along(x, resample_weights(x.shape[axis], out_size, interpolation, antialias), axis)
    return _saturate_back(x, images.dtype)


def _saturate_back(values, dtype):
    """Float results back to the images' dtype as Keras does: ints rounded half to even and
    clipped to the dtype's range."""
    if str(values.dtype) == str(dtype):
        return values
    if not str(dtype).startswith("float"):
        info = np.iinfo(str(dtype)) if str(dtype) != "bool" else None
        values = ops.round(values)
        if info is not None:
            values = ops.clip(values, float(info.min), float(info.max))
    return ops.cast(values, dtype)


def scale_and_translate(images, output_shape, scale, translation, spatial_dims, method, antialias=True):
    """jax.image.scale_and_translate: each spatial dim resampled at (y - translation) / scale.
    scale and translation must be known when tracing (numbers or arrays, not symbolic tensors)."""
    if method not in SCALE_AND_TRANSLATE_METHODS:
        raise ValueError(f"scale_and_translate: method must be one of {sorted(SCALE_AND_TRANSLATE_METHODS)}, "
                         f"got {method!r}")
    x = _float(ops.convert_to_tensor(images))
    if isinstance(scale, SymbolicTensor) or isinstance(translation, SymbolicTensor):
        raise ValueError("scale_and_translate: scale and translation must be numbers or arrays known when "
                         "tracing, not symbolic tensors")
    scale = np.asarray(scale, np.float64).reshape(-1)
    translation = np.asarray(translation, np.float64).reshape(-1)
    spatial_dims = [int(d) % len(x.shape) for d in spatial_dims]
    if not len(scale) == len(translation) == len(spatial_dims):
        raise ValueError(f"scale_and_translate: scale ({len(scale)}), translation ({len(translation)}) and "
                         f"spatial_dims ({len(spatial_dims)}) must have one entry per spatial dim")
    if len(output_shape) != len(x.shape):
        raise ValueError(f"scale_and_translate: output_shape {tuple(output_shape)} must have the rank of the "
                         f"images {tuple(x.shape)}")
    for i, axis in enumerate(spatial_dims):
        weights = resample_weights(x.shape[axis], int(output_shape[axis]), SCALE_AND_TRANSLATE_METHODS[method],
                                   antialias, scale=scale[i], translation=translation[i])
        x = _apply_along(x, weights, axis)
    return x


# -- sampling at coordinates: map_coordinates (gather), affine and perspective transforms ---------------
FILL_MODES = ("constant", "nearest", "wrap", "mirror", "reflect")
INTERPOLATION_ORDERS = {"nearest": 0, "bilinear": 1}


def _mirror_index(index, size):
    if size == 1:
        return ops.multiply(index, 0)
    s = size - 1  # half the period of the triangle wave
    return ops.abs(ops.subtract(ops.mod(ops.add(index, s), 2 * s), s))


def _fixed_index(index, size, fill_mode):
    """An out-of-range int index mapped into [0, size) as jax.scipy.ndimage does per fill mode
    ("constant" leaves it: the caller masks it)."""
    if fill_mode == "nearest":
        return ops.clip(index, 0, size - 1)
    if fill_mode == "wrap":
        return ops.mod(index, size)
    if fill_mode == "mirror":
        return _mirror_index(index, size)
    if fill_mode == "reflect":
        return ops.floor_divide(ops.subtract(_mirror_index(ops.add(ops.multiply(index, 2), 1), 2 * size + 1), 1), 2)
    return index


def _interpolation_nodes(coordinate, order):
    """[(int index, weight or None)]: the pixels a coordinate reads and their weights (order 0 or 1)."""
    if order == 0:
        return [(ops.cast(_round_half_away(coordinate), "int32"), None)]
    lower = ops.floor(coordinate)
    upper_weight = ops.subtract(coordinate, lower)
    index = ops.cast(lower, "int32")
    return [(index, ops.subtract(1.0, upper_weight)), (ops.add(index, 1), upper_weight)]


def _check_fill_mode(fill_mode, name):
    if fill_mode not in FILL_MODES:
        raise ValueError(f"{name}: fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")


def map_coordinates(inputs, coordinates, order, fill_mode="constant", fill_value=0.0):
    """Values of `inputs` at `coordinates` (shape (inputs.ndim, ...)) by nearest (order 0) or linear
    (order 1) interpolation, with jax.scipy.ndimage's fill modes: gathers from the flattened input."""
    x = ops.convert_to_tensor(inputs)
    coords = ops.convert_to_tensor(coordinates)
    rank = len(x.shape)
    if len(coords.shape) < 2 or coords.shape[0] != rank:
        raise ValueError(f"map_coordinates: coordinates must have shape (inputs.ndim={rank}, ...), got "
                         f"{tuple(coords.shape)}")
    _check_fill_mode(fill_mode, "map_coordinates")
    if order not in (0, 1):
        raise ValueError(f"map_coordinates: order must be 0 or 1, got {order!r}")
    if any(d is None for d in x.shape):
        raise ValueError(f"map_coordinates: the inputs need a static shape, got {tuple(x.shape)}")
    values = _float(x)
    coords = ops.cast(coords, values.dtype) if coords.dtype != values.dtype else coords
    flat = ops.reshape(values, (-1,))
    strides = [int(np.prod(x.shape[d + 1:])) for d in range(rank)]
    per_axis = []
    for d in range(rank):
        nodes = []
        for index, weight in _interpolation_nodes(ops.getitem(coords, d), order):
            valid = None
            if fill_mode == "constant":
                valid = ops.logical_and(ops.greater_equal(index, 0), ops.less(index, x.shape[d]))
            nodes.append((_fixed_index(index, x.shape[d], fill_mode), valid, weight))
        per_axis.append(nodes)
    result = None
    for corner in itertools.product(*per_axis):
        flat_index, valid, weight = None, None, None
        for d, (index, ok, w) in enumerate(corner):
            term = index if strides[d] == 1 else ops.multiply(index, strides[d])
            flat_index = term if flat_index is None else ops.add(flat_index, term)
            if ok is not None:
                valid = ok if valid is None else ops.logical_and(valid, ok)
            if w is not None:
                weight = w if weight is None else ops.multiply(weight, w)
        picked = ops.take(flat, flat_index, axis=0)
        if valid is not None:
            picked = ops.where(valid, picked, ops.cast(fill_value, values.dtype))
        if weight is not None:
            picked = ops.multiply(weight, picked)
        result = picked if result is None else ops.add(result, picked)
    return _back_to(result, x.dtype)


def _axis_weights(coordinate, size, order, fill_mode, dtype):
    """(..., size) weights: row p holds what each pixel of one axis contributes at coordinate p."""
    grid = np.arange(size, dtype=np.int32)
    total = None
    for index, weight in _interpolation_nodes(coordinate, order):
        hit = ops.cast(ops.equal(ops.expand_dims(_fixed_index(index, size, fill_mode), -1), grid), dtype)
        term = hit if weight is None else ops.multiply(hit, ops.expand_dims(weight, -1))
        total = term if total is None else ops.add(total, term)
    return total


def _sample_images(x, ys, xs, order, fill_mode, fill_value):
    """Batched channels_last float images x (N, H, W, C) read at input coordinates ys, xs (N or 1, P):
    (N, P, C). Interpolation is separable, so out = sum_i Ky[p, i] sum_j Kx[p, j] x[i, j]: one batched
    matmul of O(P H W C) and no gather, so the batch dimension may stay unknown."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    points = ys.shape[-1]
    ky = _axis_weights(ys, height, order, fill_mode, x.dtype)  # (N, P, H)
    kx = _axis_weights(xs, width, order, fill_mode, x.dtype)  # (N, P, W)
    # channels before rows, so the last contraction reduces the innermost axis (3x faster here)
    columns = ops.reshape(ops.transpose(x, (0, 2, 3, 1)), (-1, width, channels * height))
    rows = ops.reshape(ops.matmul(kx, columns), (-1, points, channels, height))
    out = ops.sum(ops.multiply(rows, ops.expand_dims(ky, -2)), axis=-1)
    if fill_mode == "constant" and not (isinstance(fill_value, (int, float)) and fill_value == 0):
        outside = ops.subtract(1.0, ops.multiply(ops.sum(ky, axis=-1), ops.sum(kx, axis=-1)))
        out = ops.add(out, ops.multiply(ops.expand_dims(outside, -1), ops.cast(fill_value, x.dtype)))
    return out


def axis_aligned_transform(images, x_scale, x_offset, y_scale, y_offset, interpolation="bilinear",
                           fill_mode="constant", fill_value=0.0, data_format=None):
    """affine_transform for the transforms [x_scale, 0, x_offset, 0, y_scale, y_offset, 0, 0], each
    argument a number or a (batch, 1) tensor. Rows and columns resample independently, so this is
    two batched matmuls, O(H W (H + W) C) per image where a general transform costs O((H W)^2 C):
    what the translation and zoom layers use."""
    if interpolation not in INTERPOLATION_ORDERS:
        raise ValueError(f"axis_aligned_transform: interpolation must be one of {tuple(INTERPOLATION_ORDERS)}, "
                         f"got {interpolation!r}")
    _check_fill_mode(fill_mode, "axis_aligned_transform")
    x, restore = _layout(images, standardize_data_format(data_format), "axis_aligned_transform")
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    values = _float(x)
    order = INTERPOLATION_ORDERS[interpolation]

    def coordinates(scale, offset, size):
        grid = np.arange(size, dtype=values.dtype).reshape(1, -1)
        return ops.add(ops.multiply(ops.cast(scale, values.dtype), grid), ops.cast(offset, values.dtype))

    ky = _axis_weights(coordinates(y_scale, y_offset, height), height, order, fill_mode, values.dtype)  # (N, H, H)
    kx = _axis_weights(coordinates(x_scale, x_offset, width), width, order, fill_mode, values.dtype)  # (N, W, W)
    rows = ops.matmul(ky, ops.reshape(values, (-1, height, width * channels)))  # (N, H, W C)
    columns = ops.reshape(ops.transpose(ops.reshape(rows, (-1, height, width, channels)), (0, 2, 1, 3)),
                          (-1, width, height * channels))
    out = ops.reshape(ops.matmul(kx, columns), (-1, width, height, channels))  # (N, W, H C)
    out = ops.transpose(out, (0, 2, 1, 3))
    if fill_mode == "constant" and not (isinstance(fill_value, (int, float)) and fill_value == 0):
        inside = ops.multiply(ops.expand_dims(ops.sum(ky, axis=-1), -1), ops.expand_dims(ops.sum(kx, axis=-1), 1))
        outside = ops.expand_dims(ops.subtract(1.0, inside), -1)
        out = ops.add(out, ops.multiply(outside, ops.cast(fill_value, values.dtype)))
    return restore(_back_to(out, x.dtype))


def _transformed(images, transform, interpolation, fill_mode, fill_value, data_format, name):
    """Images resampled at the projective map of each output pixel (x, y) to the input pixel
    ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1."""
    if interpolation not in INTERPOLATION_ORDERS:
        raise ValueError(f"{name}: interpolation must be one of {tuple(INTERPOLATION_ORDERS)}, got {interpolation!r}")
    _check_fill_mode(fill_mode, name)
    x, restore = _layout(images, standardize_data_format(data_format), name)
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None or x.shape[3] is None:
        raise ValueError(f"{name}: the height, width and channels must be static, got {tuple(x.shape)}")
    values = _float(x)
    t = ops.convert_to_tensor(transform)
    if len(t.shape) not in (1, 2) or t.shape[-1] != 8:
        raise ValueError(f"{name}: transform must have shape (8,) or (batch, 8), got {tuple(t.shape)}")
    t = ops.cast(t, values.dtype) if t.dtype != values.dtype else t
    if len(t.shape) == 1:
        t = ops.expand_dims(t, 0)
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    xx = xx.reshape(1, -1).astype(values.dtype)
    yy = yy.reshape(1, -1).astype(values.dtype)
    a = [ops.getitem(t, (slice(None), slice(i, i + 1))) for i in range(8)]

    def plane(c0, c1, c2):
        return ops.add(ops.add(ops.multiply(c0, xx), ops.multiply(c1, yy)), c2)

    k = plane(a[6], a[7], 1.0)
    x_in = ops.divide(plane(a[0], a[1], a[2]), k)
    y_in = ops.divide(plane(a[3], a[4], a[5]), k)
    out = _sample_images(values, y_in, x_in, INTERPOLATION_ORDERS[interpolation], fill_mode, fill_value)
    out = ops.reshape(out, (-1, height, width, x.shape[3]))
    return restore(_back_to(out, x.dtype))


def affine_transform(images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0,
                     data_format=None):
    """Apply affine (or projective) transforms [a0, a1, a2, b0, b1, b2, c0, c1], each mapping an output
    point to the input point it reads, as Keras's docs define them. With c0 = c1 = 0 this is Keras 3 on
    JAX exactly; that backend drops the division by k for projective transforms, TensorFlow's keeps it,
    as kgraph does."""
    return _transformed(images, transform, interpolation, fill_mode, fill_value, data_format, "affine_transform")


def compute_homography_matrix(start_points, end_points):
    """The (batch, 8) projective transforms taking end_points to start_points (numpy, float64)."""
    start, end = np.asarray(start_points, np.float64), np.asarray(end_points, np.float64)
    sx, sy, ex, ey = start[..., 0], start[..., 1], end[..., 0], end[..., 1]
    zeros, ones = np.zeros_like(ex), np.ones_like(ex)
    x_rows = np.stack([ex, ey, ones, zeros, zeros, zeros, -sx * ex, -sx * ey], axis=-1)
    y_rows = np.stack([zeros, zeros, zeros, ex, ey, ones, -sy * ex, -sy * ey], axis=-1)
    matrix = np.concatenate([x_rows, y_rows], axis=1)
    target = np.concatenate([sx, sy], axis=-1)[..., None]
    return np.linalg.solve(matrix, target)[..., 0]


def perspective_transform(images, start_points, end_points, interpolation="bilinear", fill_value=0,
                          data_format=None):
    """Warp images so that start_points (4 corners, (x, y)) move to end_points. The points must be
    known when tracing (numbers or arrays): the homography is solved in numpy."""
    if isinstance(start_points, SymbolicTensor) or isinstance(end_points, SymbolicTensor):
        raise ValueError("perspective_transform: start_points and end_points must be arrays known when "
                         "tracing, not symbolic tensors")
    start, end = np.asarray(start_points), np.asarray(end_points)
    for label, points in (("start_points", start), ("end_points", end)):
        if points.ndim not in (2, 3) or points.shape[-2:] != (4, 2):
            raise ValueError(f"perspective_transform: {label} must have shape (4, 2) or (batch, 4, 2), "
                             f"got {points.shape}")
    if start.shape != end.shape:
        raise ValueError(f"perspective_transform: start_points {start.shape} and end_points {end.shape} "
                         "must have the same shape")
    homography = compute_homography_matrix(start.reshape(-1, 4, 2), end.reshape(-1, 4, 2))
    return _transformed(images, homography, interpolation, "constant", fill_value, data_format,
                        "perspective_transform")


# -- color spaces ----------------------------------------------------------------------------------------
def _planes(images, data_format, name):
    """The three channel planes of float images, and a function stacking planes back."""
    images = ops.convert_to_tensor(images)
    data_format = standardize_data_format(data_format)
    if len(images.shape) not in (3, 4):
        raise ValueError(f"{name}: images must be 3-D (one image) or 4-D (a batch), got shape {tuple(images.shape)}")
    if not str(images.dtype).startswith("float"):
        raise ValueError(f"{name}: images must have a float dtype, got {images.dtype}")
    axis = -1 if data_format == "channels_last" else -3
    if images.shape[axis] != 3:
        raise ValueError(f"{name}: images must have 3 channels, got shape {tuple(images.shape)}")
    planes = [ops.squeeze(p, axis) for p in ops.split(images, 3, axis=axis)]
    return planes, lambda planes: ops.stack(planes, axis=axis)


def rgb_to_hsv(images, data_format=None):
    """RGB to HSV, all channels in [0, 1] (dm_pix's formulas, as Keras uses)."""
    (red, green, blue), stack = _planes(images, data_format, "rgb_to_hsv")
    eps = float(np.finfo(str(red.dtype)).eps)
    red, green, blue = [ops.where(ops.less(ops.abs(p), eps), 0.0, p) for p in (red, green, blue)]
    value = ops.maximum(ops.maximum(red, green), blue)
    spread = ops.subtract(value, ops.minimum(ops.minimum(red, green), blue))
    safe_value = ops.where(ops.greater(value, 0.0), value, 1.0)
    safe_spread = ops.where(ops.greater(spread, 0.0), spread, 1.0)
    saturation = ops.where(ops.greater(value, 0.0), ops.divide(spread, safe_value), 0.0)
    norm = ops.divide(1.0, ops.multiply(6.0, safe_spread))
    hue = ops.where(ops.equal(value, green), ops.add(ops.multiply(norm, ops.subtract(blue, red)), 2.0 / 6.0),
                    ops.add(ops.multiply(norm, ops.subtract(red, green)), 4.0 / 6.0))
    hue = ops.where(ops.equal(value, red), ops.multiply(norm, ops.subtract(green, blue)), hue)
    hue = ops.add(ops.where(ops.greater(spread, 0.0), hue, 0.0), ops.cast(ops.less(hue, 0.0), hue.dtype))
    return stack([hue, saturation, value])


def hsv_to_rgb(images, data_format=None):
    """HSV to RGB, all channels in [0, 1] (dm_pix's formulas, as Keras uses)."""
    (hue, saturation, value), stack = _planes(images, data_format, "hsv_to_rgb")
    dh = ops.multiply(ops.mod(hue, 1.0), 6.0)
    dr = ops.clip(ops.subtract(ops.abs(ops.subtract(dh, 3.0)), 1.0), 0.0, 1.0)
    dg = ops.clip(ops.subtract(2.0, ops.abs(ops.subtract(dh, 2.0))), 0.0, 1.0)
    db = ops.clip(ops.subtract(2.0, ops.abs(ops.subtract(dh, 4.0))), 0.0, 1.0)
    one_minus_s = ops.subtract(1.0, saturation)
    return stack([ops.multiply(value, ops.add(one_minus_s, ops.multiply(saturation, d))) for d in (dr, dg, db)])


# -- filters and patches: convolutions with kernels built at trace time ---------------------------------
def _static_numbers(value, count, name, what):
    if isinstance(value, SymbolicTensor):
        raise ValueError(f"{name}: {what} must be numbers known when tracing, not a symbolic tensor")
    values = np.asarray(value, np.float64).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, count)
    if values.size != count:
        raise ValueError(f"{name}: {what} must be a number or {count} numbers, got {value!r}")
    return values


def gaussian_kernel_1d(size, sigma):
    """Normalized Gaussian weights at offsets -(size-1)/2 .. (size-1)/2."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _depthwise(x, kernel2d, padding):
    """Batched channels_last x convolved per channel with one (kh, kw) kernel."""
    channels = x.shape[-1]
    kernel = np.tile(np.asarray(kernel2d, x.dtype)[:, :, None, None], (1, 1, channels, 1))
    return ops.depthwise_conv(x, kernel, strides=1, padding=padding, data_format="channels_last")


def gaussian_blur(images, kernel_size=(3, 3), sigma=(1.0, 1.0), data_format=None):
    """Per-channel Gaussian blur, "same" padding with zeros. As Keras's backends do, the kernel's
    height is kernel_size[1] with sigma[1] and its width kernel_size[0] with sigma[0]."""
    x, restore = _layout(images, standardize_data_format(data_format), "gaussian_blur")
    sizes = [int(s) for s in _static_numbers(kernel_size, 2, "gaussian_blur", "kernel_size")]
    sigmas = _static_numbers(sigma, 2, "gaussian_blur", "sigma")
    values = _float(x)
    kernel = np.outer(gaussian_kernel_1d(sizes[1], sigmas[1]), gaussian_kernel_1d(sizes[0], sigmas[0]))
    return restore(_saturate_back(_depthwise(values, kernel, "same"), x.dtype))


SOBEL_Y = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float64)


def sobel_edges(images, data_format=None):
    """Sobel gradients per channel, stacked on a new last axis as [dy, dx]."""
    images = ops.convert_to_tensor(images)
    if len(images.shape) != 4:
        raise ValueError(f"sobel_edges: images must be a 4-D batch, got shape {tuple(images.shape)}")
    data_format = standardize_data_format(data_format)
    x, restore = _layout(images, data_format, "sobel_edges")
    values = _float(x)
    edges = [restore(_depthwise(values, k, "same")) for k in (SOBEL_Y, SOBEL_Y.T)]
    return ops.stack(edges, axis=-1)


def ssim(image1, image2, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03, data_format=None):
    """Structural similarity per image (mean over pixels of the valid-filtered SSIM map, then over
    channels), as Keras 3 computes it."""
    data_format = standardize_data_format(data_format)
    a, _ = _layout(image1, data_format, "ssim")
    b, _ = _layout(image2, data_format, "ssim")
    unbatched = len(ops.convert_to_tensor(image1).shape) == 3
    dtype = _float(a).dtype
    a, b = ops.cast(a, dtype), ops.cast(b, dtype)
    g = gaussian_kernel_1d(int(filter_size), float(filter_sigma))
    kernel = np.outer(g, g)
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2

    def blur(v):
        return _depthwise(v, kernel, "valid")

    mu1, mu2 = blur(a), blur(b)
    mu1_sq, mu2_sq, mu12 = ops.multiply(mu1, mu1), ops.multiply(mu2, mu2), ops.multiply(mu1, mu2)
    s1 = ops.subtract(blur(ops.multiply(a, a)), mu1_sq)
    s2 = ops.subtract(blur(ops.multiply(b, b)), mu2_sq)
    s12 = ops.subtract(blur(ops.multiply(a, b)), mu12)
    numerator = ops.multiply(ops.add(ops.multiply(2.0, mu12), c1), ops.add(ops.multiply(2.0, s12), c2))
    denominator = ops.multiply(ops.add(ops.add(mu1_sq, mu2_sq), c1), ops.add(ops.add(s1, s2), c2))
    result = ops.mean(ops.divide(numerator, denominator), axis=(1, 2, 3))
    result = ops.squeeze(result, 0) if unbatched else result
    original = ops.convert_to_tensor(image1).dtype
    return result if str(original) == str(result.dtype) else ops.cast(result, original)


def _patches(images, size, strides, dilation_rate, padding, data_format, spatial, name):
    images = ops.convert_to_tensor(images)
    data_format = standardize_data_format(data_format)
    rank = len(images.shape)
    if rank not in (spatial + 1, spatial + 2):
        raise ValueError(f"{name}: expected a {spatial + 1}-D input or a {spatial + 2}-D batch, got shape "
                         f"{tuple(images.shape)}")
    size = (int(size),) * spatial if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(size) != spatial:
        raise ValueError(f"{name}: size must be an int or {spatial} ints, got {size}")
    strides = size if not strides else strides
    channels = images.shape[-1] if data_format == "channels_last" else images.shape[-spatial - 1]
    depth = int(np.prod(size)) * channels
    x = images if str(images.dtype).startswith("float") else ops.cast(images, "float32")
    kernel = np.eye(depth, dtype=x.dtype).reshape(size + (channels, depth))
    batched = x if rank == spatial + 2 else ops.expand_dims(x, 0)
    out = ops.conv(batched, kernel, strides=strides, padding=padding, data_format=data_format,
                   dilation_rate=dilation_rate)
    out = out if rank == spatial + 2 else ops.squeeze(out, 0)
    return out if out.dtype == images.dtype else ops.cast(out, images.dtype)


def extract_patches(images, size, strides=None, dilation_rate=1, padding="valid", data_format=None):
    """Patches of `size` (2 ints, or 3 for volumes) as channels: a convolution with an identity kernel."""
    if not isinstance(size, (int, np.integer)) and len(size) == 3:
        return extract_patches_3d(images, size, strides, dilation_rate, padding, data_format)
    return _patches(images, size, strides, dilation_rate, padding, data_format, 2, "extract_patches")


def extract_patches_3d(volumes, size, strides=None, dilation_rate=1, padding="valid", data_format=None):
    """Patches of volumes (depth, height, width) as channels."""
    return _patches(volumes, size, strides, dilation_rate, padding, data_format, 3, "extract_patches_3d")


def elastic_transform(images, alpha=20.0, sigma=5.0, interpolation="bilinear", fill_mode="reflect", fill_value=0.0,
                      seed=None, data_format=None):
    """Elastic distortion: every pixel reads the input at its position plus alpha times Gaussian
    noise (N(0, sigma^2)) blurred by a Gaussian of sigma, kernel int(6 sigma) | 1. As Keras 3 on JAX
    does, one noise field moves both coordinates (the x and y draws share a seed)."""
    from kgraph import random as krandom  # the seeded generators live above the ops

    if interpolation not in INTERPOLATION_ORDERS:
        raise ValueError(f"elastic_transform: interpolation must be one of {tuple(INTERPOLATION_ORDERS)}, "
                         f"got {interpolation!r}")
    _check_fill_mode(fill_mode, "elastic_transform")
    x, restore = _layout(images, standardize_data_format(data_format), "elastic_transform")
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    if height is None or width is None or channels is None:
        raise ValueError(f"elastic_transform: the height, width and channels must be static, got {tuple(x.shape)}")
    alpha, sigma = float(alpha), float(sigma)
    values = _float(x)
    size = int(6 * sigma) | 1
    noise = krandom.normal((x.shape[0], height, width, 1), stddev=sigma, dtype=str(values.dtype), seed=seed)
    g = gaussian_kernel_1d(size, sigma)
    shift = ops.reshape(ops.multiply(_depthwise(noise, np.outer(g, g), "same"), alpha), (-1, height * width))
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    ys = ops.add(shift, yy.reshape(1, -1).astype(values.dtype))
    xs = ops.add(shift, xx.reshape(1, -1).astype(values.dtype))
    out = _sample_images(values, ys, xs, INTERPOLATION_ORDERS[interpolation], fill_mode, fill_value)
    out = ops.reshape(out, (-1, height, width, channels))
    return restore(_back_to(out, x.dtype))
