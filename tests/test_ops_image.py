"""kgraph.ops.image against numpy/scipy references written here: resize and scale_and_translate,
map_coordinates, affine and perspective transforms, colour spaces, blur, Sobel, SSIM and patches;
gradients of the differentiable ones compiled in float64 against finite differences of the
references; Keras 3 itself as an optional second oracle (KGRAPH_KERAS_PYTHON)."""

from __future__ import annotations

import colorsys
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
from keras_reference import SKIP_REASON, keras_python

from kgraph import ops
from kgraph import random as krandom
from kgraph.compiler.autodiff import gradients
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.ops import image as image_ops

FD_STEP = 1e-6
SCIPY_MODES = {"constant": "grid-constant", "wrap": "grid-wrap", "nearest": "nearest", "mirror": "mirror",
               "reflect": "reflect"}


def _images(shape=(2, 5, 6, 3), seed=0):
    return np.random.default_rng(seed).random(shape)


# -- references ------------------------------------------------------------------------------------------
def _cubic(x):  # Keys, a = -0.5
    x = abs(x)
    if x < 1:
        return 1.5 * x ** 3 - 2.5 * x ** 2 + 1
    return -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2 if x < 2 else 0.0


def _lanczos(radius):
    def kernel(x):
        x = abs(x)
        if x > radius:
            return 0.0
        return 1.0 if x < 1e-3 else float(np.sinc(x) * np.sinc(x / radius))
    return kernel


REF_KERNELS = {"bilinear": lambda x: max(0.0, 1 - abs(x)), "bicubic": _cubic, "lanczos3": _lanczos(3),
               "lanczos5": _lanczos(5)}


def _resample_axis(x, axis, out_size, method, antialias, scale=None, shift=0.0):
    """Each output pixel i samples the input at (i + 0.5 - shift) / scale - 0.5 with the method's
    kernel (stretched by 1/scale when antialiasing a downsampling), weights normalized."""
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    scale = out_size / n if scale is None else scale
    out = np.zeros((out_size,) + x.shape[1:])
    for i in range(out_size):
        center = (i + 0.5 - shift) / scale - 0.5
        if not -0.5 <= center <= n - 0.5:
            continue
        if method == "area":
            lo, hi = (i - shift) / scale, (i + 1 - shift) / scale
            w = np.array([max(0.0, min(hi, j + 1) - max(lo, j)) for j in range(n)])
        else:
            stretch = max(1 / scale, 1.0) if antialias else 1.0
            w = np.array([REF_KERNELS[method]((center - j) / stretch) for j in range(n)])
        if abs(w.sum()) > 1000 * np.finfo(np.float32).eps:
            out[i] = np.tensordot(w / w.sum(), x, axes=(0, 0))
    return np.moveaxis(out, 0, axis)


def _np_resize(x, size, method="bilinear", antialias=False, axes=(1, 2)):
    for axis, out_size in zip(axes, size):
        if x.shape[axis] == out_size:
            continue
        if method == "nearest":
            index = np.floor((np.arange(out_size) + 0.5) * x.shape[axis] / out_size).astype(int)
            x = np.take(x, index, axis=axis)
        else:
            x = _resample_axis(x, axis, out_size, method, antialias)
    return x


def _np_bilinear(x, size):
    """Half-pixel-center bilinear resize with edge clamping (TF's half_pixel_centers=True)."""
    for axis, out_size in zip((1, 2), size):
        n = x.shape[axis]
        src = (np.arange(out_size) + 0.5) * n / out_size - 0.5
        lo = np.floor(src)
        frac = (src - lo).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
        lo = lo.astype(int)
        x = (np.take(x, np.clip(lo, 0, n - 1), axis) * (1 - frac)
             + np.take(x, np.clip(lo + 1, 0, n - 1), axis) * frac)
    return x


def _np_affine(x, transform, order, mode, cval):
    """Per image and channel, scipy's affine_transform with Keras's [a0 a1 a2 b0 b1 b2 0 0]."""
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        a0, a1, a2, b0, b1, b2 = transform[b if transform.shape[0] > 1 else 0][:6]
        for c in range(x.shape[-1]):
            out[b, ..., c] = ndi.affine_transform(x[b, ..., c], [[b1, b0], [a1, a0]], offset=[b2, a2],
                                                  order=order, mode=SCIPY_MODES[mode], cval=cval, prefilter=False)
    return out


def _np_projective(x, t, cval):
    """Projective transform through scipy's map_coordinates at the documented input points."""
    h, w = x.shape[1:3]
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        a = t[b]
        k = a[6] * xx + a[7] * yy + 1
        coords = [(a[3] * xx + a[4] * yy + a[5]) / k, (a[0] * xx + a[1] * yy + a[2]) / k]
        for c in range(x.shape[-1]):
            out[b, ..., c] = ndi.map_coordinates(x[b, ..., c], coords, order=1, mode="grid-constant", cval=cval,
                                                 prefilter=False)
    return out


def _np_hsv(x):
    return np.apply_along_axis(lambda p: colorsys.rgb_to_hsv(*p), -1, x)


def _np_rgb(x):
    return np.apply_along_axis(lambda p: colorsys.hsv_to_rgb(*p), -1, x)


def _gauss(size, sigma):
    g = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
    return g / g.sum()


def _np_depthwise_same(x, kernel):
    """Zero-padded 'same' correlation of every image and channel with an odd-sized kernel."""
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[-1]):
            out[b, ..., c] = ndi.correlate(x[b, ..., c], kernel, mode="constant", cval=0.0)
    return out


def _np_blur(x, kernel_size=(3, 5), sigma=(0.8, 1.3)):
    return _np_depthwise_same(x, np.outer(_gauss(kernel_size[1], sigma[1]), _gauss(kernel_size[0], sigma[0])))


def _np_ssim(a, b, max_val=1.0, size=3, sigma=1.5):
    """Wang et al.'s SSIM with a valid Gaussian window, averaged over pixels and channels."""
    window = np.outer(_gauss(size, sigma), _gauss(size, sigma))
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    result = np.zeros(a.shape[0])
    for n in range(a.shape[0]):
        per_channel = []
        for c in range(a.shape[-1]):
            def mean(v):
                full = ndi.correlate(v, window, mode="constant")
                r = size // 2
                return full[r:v.shape[0] - r, r:v.shape[1] - r]
            x, y = a[n, ..., c], b[n, ..., c]
            mx, my = mean(x), mean(y)
            vx, vy, cxy = mean(x * x) - mx ** 2, mean(y * y) - my ** 2, mean(x * y) - mx * my
            ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
            per_channel.append(ssim_map.mean())
        result[n] = np.mean(per_channel)
    return result


def _np_patches(x, size, strides):
    """Patches by slicing: (N, rows, cols, ph * pw * C), each flattened in (ph, pw, C) order."""
    (ph, pw), (sh, sw) = size, strides
    rows, cols = (x.shape[1] - ph) // sh + 1, (x.shape[2] - pw) // sw + 1
    out = np.zeros((x.shape[0], rows, cols, ph * pw * x.shape[3]))
    for i in range(rows):
        for j in range(cols):
            out[:, i, j] = x[:, i * sh:i * sh + ph, j * sw:j * sw + pw, :].reshape(x.shape[0], -1)
    return out


# -- eager values ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["bilinear", "nearest", "bicubic", "lanczos3", "lanczos5", "area"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("size", [(3, 9), (8, 4), (2, 2)])
def test_resize_matches_the_reference(method, antialias, size):
    x = _images((2, 5, 7, 3)).astype(np.float32)
    actual = np.asarray(ops.image.resize(x, size, interpolation=method, antialias=antialias))
    expected = _np_resize(x.astype(np.float64), size, method, antialias)
    assert actual.shape == (2,) + size + (3,) and actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_resize_known_results():
    x = _images((2, 6, 8, 3))
    np.testing.assert_allclose(ops.image.resize(x, (9, 5)), _np_bilinear(x, (9, 5)), atol=1e-12)
    # area over an integer factor is the mean of each block
    blocks = x.reshape(2, 3, 2, 2, 4, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(ops.image.resize(x, (3, 2), interpolation="area"), blocks, atol=1e-12)
    # antialiasing changes downsampling only
    for method in ("bilinear", "bicubic", "lanczos3"):
        np.testing.assert_allclose(ops.image.resize(x, (9, 12), method, antialias=True),
                                   ops.image.resize(x, (9, 12), method), atol=1e-12)
    np.testing.assert_array_equal(ops.image.resize(x, (12, 16), interpolation="nearest"),
                                  x.repeat(2, axis=1).repeat(2, axis=2))
    # the same size is the identity for every method
    for method in ("bilinear", "bicubic", "lanczos3", "area"):
        np.testing.assert_allclose(ops.image.resize(x, (6, 8), interpolation=method), x, atol=1e-12)


def test_resize_layouts_dtypes_and_aspect_ratio():
    x = _images((2, 5, 7, 3)).astype(np.float32)
    first = ops.image.resize(x.transpose(0, 3, 1, 2), (3, 9), data_format="channels_first")
    np.testing.assert_allclose(np.asarray(first).transpose(0, 2, 3, 1), ops.image.resize(x, (3, 9)), atol=1e-6)
    np.testing.assert_allclose(ops.image.resize(x[0], (3, 9)), ops.image.resize(x, (3, 9))[0], atol=1e-6)
    ints = (x * 255).astype(np.int32)
    resized = np.asarray(ops.image.resize(ints, (3, 9)))
    assert resized.dtype == np.int32
    np.testing.assert_array_equal(resized, np.round(_np_resize(ints.astype(np.float64), (3, 9))))
    assert np.asarray(ops.image.resize(ints, (3, 9), interpolation="nearest")).dtype == np.int32
    # crop_to_aspect_ratio: the largest centred 5x5 window, then the resize
    np.testing.assert_allclose(ops.image.resize(x, (4, 4), crop_to_aspect_ratio=True),
                               _np_resize(x[:, :, 1:6].astype(np.float64), (4, 4)), atol=1e-6)
    # pad_to_aspect_ratio: one row of fill_value above and below (7x7), then the resize
    padded = np.pad(x.astype(np.float64), [(0, 0), (1, 1), (0, 0), (0, 0)], constant_values=0.5)
    np.testing.assert_allclose(ops.image.resize(x, (4, 4), pad_to_aspect_ratio=True, fill_value=0.5),
                               _np_resize(padded, (4, 4)), atol=1e-6)


def test_scale_and_translate():
    x = _images((1, 6, 7, 2))
    for method in ("linear", "cubic", "lanczos3"):
        actual = ops.image.scale_and_translate(x, (1, 9, 4, 2), scale=(1.5, 0.6), translation=(0.7, -0.4),
                                               spatial_dims=(1, 2), method=method, antialias=True)
        name = {"linear": "bilinear", "cubic": "bicubic"}.get(method, method)
        expected = _resample_axis(_resample_axis(x, 1, 9, name, True, 1.5, 0.7), 2, 4, name, True, 0.6, -0.4)
        np.testing.assert_allclose(actual, expected, atol=1e-12, err_msg=method)
    # a whole-pixel translation shifts the image (zeros where nothing maps)
    shifted = np.asarray(ops.image.scale_and_translate(x, x.shape, (1.0, 1.0), (2.0, 0.0), (1, 2), "linear"))
    np.testing.assert_allclose(shifted[:, 2:], x[:, :-2], atol=1e-12)
    np.testing.assert_array_equal(shifted[:, :2], 0.0)


@pytest.mark.parametrize("mode", sorted(SCIPY_MODES))
def test_map_coordinates_matches_scipy(mode):
    rng = np.random.default_rng(1)
    image = rng.random((6, 7))
    coords = rng.uniform(-4, 11, (2, 5, 4))  # random: no sample sits exactly half-way (scipy rounds those alike)
    for order in (0, 1):
        actual = np.asarray(ops.image.map_coordinates(image, coords, order, mode, 0.7))
        expected = ndi.map_coordinates(image, coords, order=order, mode=SCIPY_MODES[mode], cval=0.7, prefilter=False)
        assert actual.shape == (5, 4)
        np.testing.assert_allclose(actual, expected, atol=1e-12, err_msg=f"order {order}")
    volume = rng.random((3, 4, 5))
    coords3 = rng.uniform(-1, 5, (3, 7))
    np.testing.assert_allclose(ops.image.map_coordinates(volume, coords3, 1, mode),
                               ndi.map_coordinates(volume, coords3, order=1, mode=SCIPY_MODES[mode], prefilter=False),
                               atol=1e-12)


def test_map_coordinates_int_inputs_round_half_away_from_zero():
    image = np.array([[0, 10], [20, 30]], np.int32)
    out = ops.image.map_coordinates(image, np.array([[0.25, 0.5], [0.0, 0.5]]), 1)
    assert np.asarray(out).dtype == np.int32
    np.testing.assert_array_equal(out, [5, 15])  # 5.0 and 15.0 exactly


@pytest.mark.parametrize("mode", sorted(SCIPY_MODES))
@pytest.mark.parametrize("interpolation, order", [("nearest", 0), ("bilinear", 1)])
def test_affine_transform_matches_scipy(mode, interpolation, order):
    x = _images((2, 6, 7, 3))
    transform = np.array([[0.9, 0.23, 0.41, -0.13, 1.1, -0.27, 0, 0], [1.2, 0.0, -1.1, 0.1, 0.8, 2.27, 0, 0]])
    actual = ops.image.affine_transform(x, transform, interpolation, mode, 0.3)
    np.testing.assert_allclose(actual, _np_affine(x, transform, order, mode, 0.3), atol=1e-12)


@pytest.mark.parametrize("mode", sorted(SCIPY_MODES))
def test_axis_aligned_transform_matches_scipy(mode):
    x = _images((2, 6, 7, 3))
    for interpolation, order in (("nearest", 0), ("bilinear", 1)):
        actual = image_ops.axis_aligned_transform(x, *[ALIGNED[:, i:i + 1] for i in range(4)], interpolation, mode, 0.3)
        np.testing.assert_allclose(actual, _np_affine(x, ALIGNED_TRANSFORM, order, mode, 0.3), atol=1e-12)
    first = image_ops.axis_aligned_transform(x.transpose(0, 3, 1, 2), 1.0, 0.37, 1.0, -1.41, fill_mode=mode,
                                             data_format="channels_first")
    expected = _np_affine(x, np.array([[1, 0, 0.37, 0, 1, -1.41, 0, 0]]), 1, mode, 0.0)
    np.testing.assert_allclose(np.asarray(first).transpose(0, 2, 3, 1), expected, atol=1e-12)


def test_affine_transform_layouts_and_projective_transforms():
    x = _images((2, 6, 7, 3))
    t = np.array([0.9, 0.23, 0.41, -0.13, 1.1, -0.27, 0, 0])
    expected = _np_affine(x, t[None], 1, "constant", 0.0)
    np.testing.assert_allclose(ops.image.affine_transform(x, t), expected, atol=1e-12)  # one transform, a batch
    np.testing.assert_allclose(ops.image.affine_transform(x[0], t), expected[0], atol=1e-12)
    first = ops.image.affine_transform(x.transpose(0, 3, 1, 2), t, data_format="channels_first")
    np.testing.assert_allclose(np.asarray(first).transpose(0, 2, 3, 1), expected, atol=1e-12)
    projective = np.array([[0.9, 0.1, 0.3, 0.05, 1.0, -0.2, 0.02, -0.03], [1.0, 0, 0, 0, 1, 0, 0.05, 0.04]])
    np.testing.assert_allclose(ops.image.affine_transform(x, projective, fill_value=0.25),
                               _np_projective(x, projective, 0.25), atol=1e-12)
    ints = (x * 100).astype(np.int32)
    shifted = ops.image.affine_transform(ints, [1, 0, 1, 0, 1, 0, 0, 0])  # reads x + 1
    np.testing.assert_array_equal(np.asarray(shifted)[:, :, :-1], ints[:, :, 1:])


def test_perspective_transform():
    x = _images((2, 6, 7, 3))
    start = np.array([[[0, 0], [6, 0], [0, 5], [6, 5]]] * 2, np.float64)
    end = np.array([[[1, 0], [5, 1], [0, 4], [6, 5]], [[1, 2], [7, 2], [1, 7], [7, 7]]], np.float64)
    actual = np.asarray(ops.image.perspective_transform(x, start, end, fill_value=0.2))
    # the homography maps each end point to its start point: solved here by least squares on the
    # 8 equations (x' (g x + h y + 1) = a x + b y + c, ...)
    transforms = []
    for s, e in zip(start, end):
        rows, rhs = [], []
        for (sx, sy), (ex, ey) in zip(s, e):
            rows += [[ex, ey, 1, 0, 0, 0, -sx * ex, -sx * ey], [0, 0, 0, ex, ey, 1, -sy * ex, -sy * ey]]
            rhs += [sx, sy]
        transforms.append(np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0])
    np.testing.assert_allclose(actual, _np_projective(x, np.array(transforms), 0.2), atol=1e-9)
    # the second is a pure translation by (1, 2): output pixel (x, y) reads input (x - 1, y - 2)
    np.testing.assert_allclose(actual[1, 2:, 1:], x[1, :-2, :-1], atol=1e-9)


def test_rgb_hsv_match_colorsys_and_invert_each_other():
    x = _images((2, 4, 5, 3), seed=3)
    x[0, 0, 0] = [0.2, 0.2, 0.2]  # grey: hue and saturation 0
    x[0, 0, 1] = [0.0, 0.0, 0.0]
    hsv = np.asarray(ops.image.rgb_to_hsv(x))
    np.testing.assert_allclose(hsv, _np_hsv(x), atol=1e-12)
    np.testing.assert_allclose(ops.image.hsv_to_rgb(hsv), x, atol=1e-12)
    np.testing.assert_allclose(ops.image.hsv_to_rgb(x), _np_rgb(x), atol=1e-12)
    first = ops.image.rgb_to_hsv(x.transpose(0, 3, 1, 2).astype(np.float32), data_format="channels_first")
    np.testing.assert_allclose(np.asarray(first).transpose(0, 2, 3, 1), hsv, atol=1e-6)
    with pytest.raises(ValueError, match="rgb_to_hsv: images must have a float dtype"):
        ops.image.rgb_to_hsv(np.zeros((2, 2, 3), np.int32))


def test_blur_sobel_ssim_and_patches():
    x = _images((2, 6, 7, 3))
    np.testing.assert_allclose(ops.image.gaussian_blur(x, (3, 5), (0.8, 1.3)), _np_blur(x), atol=1e-12)
    np.testing.assert_allclose(ops.image.gaussian_blur(x[0]), _np_blur(x, (3, 3), (1.0, 1.0))[0], atol=1e-12)
    edges = np.asarray(ops.image.sobel_edges(x))
    sobel_y = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float64)
    assert edges.shape == (2, 6, 7, 3, 2)
    np.testing.assert_allclose(edges[..., 0], _np_depthwise_same(x, sobel_y), atol=1e-12)
    np.testing.assert_allclose(edges[..., 1], _np_depthwise_same(x, sobel_y.T), atol=1e-12)
    y = _images((2, 6, 7, 3), seed=5)
    np.testing.assert_allclose(ops.image.ssim(x, y, filter_size=3), _np_ssim(x, y), atol=1e-12)
    np.testing.assert_allclose(ops.image.ssim(x[0], x[0], filter_size=5), 1.0, atol=1e-12)
    np.testing.assert_allclose(ops.image.extract_patches(x, (2, 3), strides=(1, 2)), _np_patches(x, (2, 3), (1, 2)),
                               atol=1e-12)
    np.testing.assert_allclose(ops.image.extract_patches(x[0], 2), _np_patches(x, (2, 2), (2, 2))[0], atol=1e-12)
    volume = _images((1, 4, 4, 6, 2))
    patches = np.asarray(ops.image.extract_patches_3d(volume, (2, 2, 3)))
    assert patches.shape == (1, 2, 2, 2, 24)
    np.testing.assert_allclose(patches[0, 1, 0, 1], volume[0, 2:4, 0:2, 3:6].reshape(-1), atol=1e-12)
    np.testing.assert_allclose(ops.image.extract_patches(volume, (2, 2, 3)), patches, atol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_elastic_transform_reads_at_blurred_noise(mode):
    x = _images((2, 8, 9, 3))
    alpha, sigma = 3.0, 1.2
    actual = np.asarray(ops.image.elastic_transform(x, alpha, sigma, fill_mode=mode, fill_value=0.4, seed=7))
    # the same draw (seed 7), blurred here by scipy: one field moves both coordinates
    noise = np.asarray(krandom.normal((2, 8, 9, 1), stddev=sigma, dtype="float64", seed=7))[..., 0]
    size = int(6 * sigma) | 1
    window = np.outer(_gauss(size, sigma), _gauss(size, sigma))
    expected = np.zeros_like(x)
    yy, xx = np.meshgrid(np.arange(8), np.arange(9), indexing="ij")
    for b in range(2):
        shift = alpha * ndi.correlate(noise[b], window, mode="constant")
        for c in range(3):
            expected[b, ..., c] = ndi.map_coordinates(x[b, ..., c], [yy + shift, xx + shift], order=1,
                                                      mode=SCIPY_MODES[mode], cval=0.4, prefilter=False)
    np.testing.assert_allclose(actual, expected, atol=1e-12)
    np.testing.assert_allclose(ops.image.elastic_transform(x, 0.0, sigma, seed=7), x, atol=1e-12)


def test_bad_arguments_are_refused_with_a_message():
    x = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="resize: interpolation must be one of"):
        ops.image.resize(x, (2, 2), interpolation="cubic")
    with pytest.raises(ValueError, match="resize: only one of pad_to_aspect_ratio and crop_to_aspect_ratio"):
        ops.image.resize(x, (2, 2), crop_to_aspect_ratio=True, pad_to_aspect_ratio=True)
    with pytest.raises(ValueError, match="affine_transform: fill_mode must be one of"):
        ops.image.affine_transform(x, np.eye(3).reshape(-1)[:8], fill_mode="edge")
    with pytest.raises(ValueError, match=r"map_coordinates: coordinates must have shape \(inputs.ndim=3"):
        ops.image.map_coordinates(x, np.zeros((2, 5)), 1)
    with pytest.raises(ValueError, match="map_coordinates: order must be 0 or 1"):
        ops.image.map_coordinates(x, np.zeros((3, 5)), 3)


# -- traced with an unknown batch, and gradients compiled in float64 --------------------------------------
# no sample lands on a whole pixel (where bilinear sampling has a kink)
GRAD_TRANSFORM = np.array([[0.913, 0.237, 0.419, -0.131, 1.107, -0.273, 0.003, -0.002],
                           [1.193, 0.051, -1.093, 0.103, 0.797, 0.311, 0.0, 0.0]])
AFFINE = np.array([1, 1, 1, 1, 1, 1, 0, 0])
GRAD_COORDS = np.random.default_rng(4).uniform(-0.7, 5.6, (2, 3, 4))
ALIGNED = np.array([[0.83, 0.37, 1.17, -0.41], [1.21, -0.73, 0.91, 0.29]])  # x scale, x offset, y scale, y offset
ALIGNED_TRANSFORM = np.stack([ALIGNED[:, 0], 0 * ALIGNED[:, 0], ALIGNED[:, 1], 0 * ALIGNED[:, 0], ALIGNED[:, 2],
                              ALIGNED[:, 3], 0 * ALIGNED[:, 0], 0 * ALIGNED[:, 0]], 1)
GRAD_CASES = {  # name: (input, function of the traced input, numpy reference)
    "axis_aligned_transform": (_images((2, 5, 6, 2)),
                               lambda x: image_ops.axis_aligned_transform(x, *[ALIGNED[:, i:i + 1] for i in range(4)],
                                                                          fill_mode="constant", fill_value=0.5),
                               lambda x: _np_affine(x, ALIGNED_TRANSFORM, 1, "constant", 0.5)),
    "resize_bilinear_antialias": (_images((2, 5, 6, 2)), lambda x: ops.image.resize(x, (3, 8), antialias=True),
                                  lambda x: _np_resize(x, (3, 8), "bilinear", True)),
    "resize_bicubic": (_images((2, 5, 6, 2)), lambda x: ops.image.resize(x, (7, 4), interpolation="bicubic"),
                       lambda x: _np_resize(x, (7, 4), "bicubic")),
    "map_coordinates_input": (_images((5, 6)), lambda x: ops.image.map_coordinates(x, GRAD_COORDS, 1, "reflect"),
                              lambda x: ndi.map_coordinates(x, GRAD_COORDS, order=1, mode="reflect", prefilter=False)),
    "map_coordinates_coordinates": (GRAD_COORDS, lambda c: ops.image.map_coordinates(_images((5, 6)), c, 1),
                                    lambda c: ndi.map_coordinates(_images((5, 6)), c, order=1, mode="grid-constant",
                                                                  prefilter=False)),
    "affine_transform_images": (_images((2, 5, 6, 2)),
                                lambda x: ops.image.affine_transform(x, GRAD_TRANSFORM * AFFINE, fill_mode="wrap"),
                                lambda x: _np_affine(x, GRAD_TRANSFORM * AFFINE, 1, "wrap", 0.0)),
    "affine_transform_transform": (GRAD_TRANSFORM,
                                   lambda t: ops.image.affine_transform(_images((2, 5, 6, 2)), t, fill_value=0.5),
                                   lambda t: _np_projective(_images((2, 5, 6, 2)), t, 0.5)),
    "rgb_to_hsv": (_images((2, 3, 4, 3), seed=2), ops.image.rgb_to_hsv, _np_hsv),
    "hsv_to_rgb": (_images((2, 3, 4, 3), seed=2) * 0.9 + 0.05, ops.image.hsv_to_rgb, _np_rgb),
    "gaussian_blur": (_images((2, 5, 6, 2)), lambda x: ops.image.gaussian_blur(x, (3, 5), (0.8, 1.3)), _np_blur),
    "ssim": (_images((2, 5, 6, 2)), lambda x: ops.image.ssim(x, _images((2, 5, 6, 2), 9), filter_size=3),
             lambda x: _np_ssim(x, _images((2, 5, 6, 2), 9))),
}


@pytest.fixture(scope="module")
def compiled_gradients():
    """One float64 graph: every case's output and d sum(f(x) w) / dx."""
    graph = Graph("test_ops_image")
    rng = np.random.default_rng(11)
    index, weights, inputs = {}, {}, []
    with tracing(graph):
        for name, (value, fn, _) in GRAD_CASES.items():
            x = SymbolicTensor(graph, graph.add_placeholder(value.shape, "float64", name).id)
            inputs.append(value)
            y = fn(x)
            weights[name] = rng.standard_normal(y.shape)
            loss = ops.sum(ops.multiply(y, weights[name]))
            index[name] = len(graph.outputs)
            graph.outputs += [y.node_id] + gradients(graph, loss.node_id, [x.node_id])
    outputs = [np.array(o) for o in compile_graph(graph)(*inputs)]
    return {name: (outputs[i], outputs[i + 1], weights[name]) for name, i in index.items()}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_compiled_values_and_gradients(compiled_gradients, name):
    value, _, reference = GRAD_CASES[name]
    forward, analytic, w = compiled_gradients[name]
    np.testing.assert_allclose(forward, reference(value), atol=1e-10, err_msg=f"{name}: compiled forward")
    numeric = np.zeros_like(value)
    for i in np.ndindex(value.shape):
        plus, minus = value.copy(), value.copy()
        plus[i] += FD_STEP
        minus[i] -= FD_STEP
        numeric[i] = (np.sum(reference(plus) * w) - np.sum(reference(minus) * w)) / (2 * FD_STEP)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6, err_msg=f"{name}: d loss / dx")


def test_an_unknown_batch_dimension_is_kept():
    from kgraph.runtime.reference import evaluate

    graph = Graph("image_batch")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 5, 6, 3), "float32", "x").id)
        t = SymbolicTensor(graph, graph.add_placeholder((None, 8), "float32", "t").id)
        outs = [ops.image.resize(x, (3, 4), interpolation="bicubic"), ops.image.affine_transform(x, t),
                ops.image.rgb_to_hsv(x), ops.image.extract_patches(x, 2),
                ops.image.elastic_transform(x, 2.0, 1.0, seed=3)]
        graph.outputs = [o.node_id for o in outs]
    assert [o.shape for o in outs] == [(None, 3, 4, 3), (None, 5, 6, 3), (None, 5, 6, 3), (None, 2, 3, 12),
                                       (None, 5, 6, 3)]
    images = _images((3, 5, 6, 3)).astype(np.float32)
    transforms = np.tile(np.array([0.9, 0.23, 0.41, -0.13, 1.1, -0.27, 0, 0], np.float32), (3, 1))
    values = evaluate(graph, [images, transforms])[0]
    np.testing.assert_allclose(values[0], _np_resize(images.astype(np.float64), (3, 4), "bicubic"), atol=1e-5)
    np.testing.assert_allclose(values[1], _np_affine(images.astype(np.float64), transforms.astype(np.float64), 1,
                                                     "constant", 0.0), atol=1e-5)
    np.testing.assert_allclose(values[4], ops.image.elastic_transform(images, 2.0, 1.0, seed=3), atol=1e-5)


TRITON_SCRIPT = """
import os
os.environ["TRITON_INTERPRET"] = "1"
import numpy as np
from kgraph import ops
from kgraph.ops import image as image_ops
from kgraph.compiler.autodiff import gradients
from kgraph.compiler.lower.triton import compile_graph_triton
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.runtime.reference import evaluate
rng = np.random.default_rng(0)
x = rng.random((2, 5, 6, 3)).astype(np.float32)
t = np.array([[0.913, 0.237, 0.419, -0.131, 1.107, -0.273, 0.0, 0.0]] * 2, np.float32)
graph = Graph("triton_image")
with tracing(graph):
    xs = SymbolicTensor(graph, graph.add_placeholder((None, 5, 6, 3), "float32", "x").id)
    ts = SymbolicTensor(graph, graph.add_placeholder((None, 8), "float32", "t").id)
    outs = [ops.image.resize(xs, (3, 8), antialias=True), ops.image.resize(xs, (7, 4), interpolation="nearest"),
            ops.image.affine_transform(xs, ts, fill_mode="reflect"),
            image_ops.axis_aligned_transform(xs, 1.1, 0.3, 0.9, -0.2, fill_value=0.5),
            ops.image.rgb_to_hsv(xs), ops.image.gaussian_blur(xs)]
    loss = ops.sum(ops.stack([ops.sum(ops.square(o)) for o in outs]))
    graph.outputs = [o.node_id for o in outs] + gradients(graph, loss.node_id, [xs.node_id, ts.node_id])
got = compile_graph_triton(graph)(x, t)
for i, (g, r) in enumerate(zip(got, evaluate(graph, [x, t])[0])):
    np.testing.assert_allclose(np.asarray(g), r, rtol=2e-5, atol=1e-5, err_msg=f"output {i}")
print("ok", len(got))
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton (the gpu extra) is not installed")
def test_image_ops_and_their_gradients_run_on_triton():
    """Forward and backward through the Triton backend (in its CPU interpreter, in a fresh process
    because the interpreter must be chosen before Triton loads) against the numpy reference."""
    run = subprocess.run([sys.executable, "-c", TRITON_SCRIPT], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "ok 8" in run.stdout, run.stderr[-3000:]


# -- Keras 3 itself, when available --------------------------------------------------------------------
KERAS_SCRIPT = """
import json, sys
import numpy as np
from keras import ops
rng = np.random.default_rng(0)
x = rng.random((2, 5, 7, 3)).astype("float32")
t = np.array([[0.9, 0.2, 0.5, -0.1, 1.1, -0.3, 0, 0], [1.2, 0.0, -1, 0.1, 0.8, 2, 0, 0]], "float32")
out = {}
for m in ["bilinear", "nearest", "bicubic", "lanczos3", "lanczos5"]:
    for aa in (False, True):
        out[f"resize_{m}_{aa}"] = ops.image.resize(x, (3, 9), interpolation=m, antialias=aa).tolist()
out["crop"] = ops.image.resize(x, (4, 4), crop_to_aspect_ratio=True).tolist()
out["pad"] = ops.image.resize(x, (4, 4), pad_to_aspect_ratio=True, fill_value=0.5).tolist()
for mode in ["constant", "wrap", "nearest", "mirror", "reflect"]:
    for interp in ["nearest", "bilinear"]:
        out[f"affine_{mode}_{interp}"] = ops.image.affine_transform(x, t, interp, mode, 0.3).tolist()
out["hsv"] = ops.image.rgb_to_hsv(x).tolist()
out["rgb"] = ops.image.hsv_to_rgb(x).tolist()
out["blur"] = ops.image.gaussian_blur(x, (3, 5), (1.0, 2.0), data_format="channels_last").tolist()
out["sobel"] = ops.image.sobel_edges(x).tolist()
out["ssim"] = ops.image.ssim(x, x[::-1], filter_size=3).tolist()
out["patches"] = ops.image.extract_patches(x, (2, 3), strides=(1, 2), padding="same").tolist()
json.dump(out, sys.stdout)
"""


@pytest.mark.skipif(keras_python() is None, reason=SKIP_REASON)
def test_matches_keras():
    run = subprocess.run([keras_python(), "-c", KERAS_SCRIPT], capture_output=True, text=True, timeout=300,
                         env={"KERAS_BACKEND": "jax", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    expected = json.loads(run.stdout)
    rng = np.random.default_rng(0)
    x = rng.random((2, 5, 7, 3)).astype("float32")
    t = np.array([[0.9, 0.2, 0.5, -0.1, 1.1, -0.3, 0, 0], [1.2, 0.0, -1, 0.1, 0.8, 2, 0, 0]], "float32")
    ours = {}
    for m in ["bilinear", "nearest", "bicubic", "lanczos3", "lanczos5"]:
        for aa in (False, True):
            ours[f"resize_{m}_{aa}"] = ops.image.resize(x, (3, 9), interpolation=m, antialias=aa)
    ours["crop"] = ops.image.resize(x, (4, 4), crop_to_aspect_ratio=True)
    ours["pad"] = ops.image.resize(x, (4, 4), pad_to_aspect_ratio=True, fill_value=0.5)
    for mode in ["constant", "wrap", "nearest", "mirror", "reflect"]:
        for interp in ["nearest", "bilinear"]:
            ours[f"affine_{mode}_{interp}"] = ops.image.affine_transform(x, t, interp, mode, 0.3)
    ours["hsv"] = ops.image.rgb_to_hsv(x)
    ours["rgb"] = ops.image.hsv_to_rgb(x)
    ours["blur"] = ops.image.gaussian_blur(x, (3, 5), (1.0, 2.0))
    ours["sobel"] = ops.image.sobel_edges(x)
    ours["ssim"] = ops.image.ssim(x, x[::-1], filter_size=3)
    ours["patches"] = ops.image.extract_patches(x, (2, 3), strides=(1, 2), padding="same")
    for name, value in ours.items():
        np.testing.assert_allclose(np.asarray(value), np.array(expected[name]), atol=2e-6, err_msg=name)
