"""Preprocessing and augmentation layers: values against numpy/scipy references (the random
layers against references fed the same seeded draws), inference identity, reproducible seeds,
training inside a compiled fit, configs (and Keras 3's own configs, when available)."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
from keras_reference import SKIP_REASON, keras_python
from test_ops_image import _np_affine, _np_resize

import kgraph as keras
from kgraph import layers as L
from kgraph import random as krandom


def _images(shape=(3, 6, 7, 2), seed=0, scale=1.0):
    return (np.random.default_rng(seed).random(shape) * scale).astype(np.float32)


def _draws(seed, *shapes_and_ranges):
    """The uniform numbers a layer seeded `seed` draws, in order: [(shape, low, high), ...]."""
    generator = krandom.SeedGenerator(seed)
    return [np.asarray(krandom.uniform(shape, low, high, seed=generator)) for shape, low, high in shapes_and_ranges]


def test_rescaling_resizing_and_center_crop():
    x = _images(scale=255)
    np.testing.assert_allclose(L.Rescaling(1 / 255.0, offset=-0.5)(x), x / 255.0 - 0.5, atol=1e-6)
    ints = L.Rescaling(2.0)(x.astype(np.int32))
    assert np.asarray(ints).dtype == np.float32
    np.testing.assert_allclose(L.Resizing(4, 9)(x), _np_resize(x.astype(np.float64), (4, 9)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(L.Resizing(4, 3, interpolation="bicubic", antialias=True)(x),
                               _np_resize(x.astype(np.float64), (4, 3), "bicubic", True), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(L.Resizing(4, 4, crop_to_aspect_ratio=True)(x),
                               _np_resize(x[:, :, 0:6].astype(np.float64), (4, 4)), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(L.CenterCrop(3, 4)(x), x[:, 1:4, 1:5])
    np.testing.assert_array_equal(L.CenterCrop(3, 4)(x[0]), x[0, 1:4, 1:5])
    # a window larger than the image: crop to its aspect ratio (6 x 3 of 6 x 7), then resize
    np.testing.assert_allclose(L.CenterCrop(8, 4)(x), _np_resize(x[:, :, 2:5].astype(np.float64), (8, 4)),
                               rtol=1e-5, atol=1e-4)
    first = L.CenterCrop(3, 4, data_format="channels_first")(x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(first, x[:, 1:4, 1:5].transpose(0, 3, 1, 2))


AUGMENTATIONS = {
    "RandomFlip": lambda: L.RandomFlip(seed=3),
    "RandomTranslation": lambda: L.RandomTranslation(0.2, 0.3, seed=3),
    "RandomRotation": lambda: L.RandomRotation(0.2, seed=3),
    "RandomZoom": lambda: L.RandomZoom(0.3, seed=3),
    "RandomContrast": lambda: L.RandomContrast(0.5, seed=3),
    "RandomBrightness": lambda: L.RandomBrightness(0.3, seed=3),
}


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentation_is_the_identity_at_inference_and_reproducible(name):
    x = _images(scale=255)
    layer = AUGMENTATIONS[name]()
    np.testing.assert_array_equal(layer(x, training=False), x)
    first = np.asarray(layer(x))  # a direct call trains, as in Keras
    assert not np.allclose(first, x), f"{name}: training=True changed nothing"
    np.testing.assert_array_equal(AUGMENTATIONS[name]()(x, training=True), first)  # same seed, same draws
    assert not np.array_equal(layer(x, training=True), first), f"{name}: the second call drew the same numbers"
    model = keras.Sequential([keras.Input((6, 7, 2)), AUGMENTATIONS[name]()])
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)


def test_random_flip_flips_whole_images():
    x = _images((8, 5, 6, 1))
    (u,) = _draws(4, ((8, 1, 1, 1), 0.0, 1.0))
    for mode, flip in (("horizontal", lambda v: v[:, ::-1]), ("vertical", lambda v: v[::-1]),
                       ("horizontal_and_vertical", lambda v: v[::-1, ::-1])):
        out = np.asarray(L.RandomFlip(mode, seed=4)(x))
        for i in range(8):
            np.testing.assert_array_equal(out[i], flip(x[i]) if u[i, 0, 0, 0] <= 0.5 else x[i], err_msg=mode)
    assert 0 < np.sum(u <= 0.5) < 8  # both branches were exercised


def test_geometric_augmentations_match_scipy():
    x = _images((3, 6, 7, 2)).astype(np.float64)
    h, w = 6, 7
    # translation: output (x, y) reads input (x - dx, y - dy)
    dy, dx = _draws(5, ((3, 1), -0.2, 0.2), ((3, 1), -0.3, 0.3))
    dy, dx = dy[:, 0] * h, dx[:, 0] * w
    expected = _np_affine(x, np.stack([np.ones(3), 0 * dx, -dx, 0 * dx, np.ones(3), -dy, 0 * dx, 0 * dx], 1),
                          1, "reflect", 0.0)
    np.testing.assert_allclose(L.RandomTranslation(0.2, 0.3, seed=5)(x), expected, atol=1e-5)
    # rotation about the centre ((w - 1) / 2, (h - 1) / 2) by a random angle within +-0.2 turns
    (angle,) = _draws(6, ((3, 1), -72.0, 72.0))
    theta = angle[:, 0] * math.pi / 180
    transforms = []
    for t in theta:
        rotation = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        centre = np.array([(w - 1) / 2, (h - 1) / 2])
        offset = centre - rotation @ centre
        transforms.append([*rotation[0], offset[0], *rotation[1], offset[1], 0, 0])
    expected = _np_affine(x, np.array(transforms), 1, "constant", 0.5)
    np.testing.assert_allclose(L.RandomRotation(0.2, fill_mode="constant", fill_value=0.5, seed=6)(x), expected,
                               atol=1e-5)
    # zoom about the centre: output (x, y) reads input c + z (p - c)
    zy, zx = _draws(7, ((3, 1), 0.8, 1.3), ((3, 1), 0.9, 1.1))
    zy, zx = zy[:, 0], zx[:, 0]
    transforms = np.stack([zx, 0 * zx, (w - 1) / 2 * (1 - zx), 0 * zx, zy, (h - 1) / 2 * (1 - zy), 0 * zx, 0 * zx], 1)
    np.testing.assert_allclose(L.RandomZoom((-0.2, 0.3), (-0.1, 0.1), interpolation="nearest", fill_mode="wrap",
                                            seed=7)(x),
                               _np_affine(x, transforms, 0, "wrap", 0.0), atol=1e-5)


def test_random_crop():
    x = _images((4, 6, 7, 2))
    layer = L.RandomCrop(3, 4, seed=8)
    outs = [np.asarray(layer(x)) for _ in range(6)]
    starts = set()
    for out in outs:
        assert out.shape == (4, 3, 4, 2)
        found = [(i, j) for i in range(4) for j in range(4) if np.array_equal(out, x[:, i:i + 3, j:j + 4])]
        assert len(found) == 1, "a training crop is one window of the batch"
        starts.add(found[0])
    assert len(starts) > 1
    # inference: the centre crop to the target aspect ratio (6 x 8 -> 6 x 7 is wider, so 5 x 7), resized
    np.testing.assert_allclose(L.RandomCrop(3, 4)(x, training=False),
                               _np_resize(x[:, 0:5].astype(np.float64), (3, 4)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(L.RandomCrop(6, 8)(x), _np_resize(x[:, 0:5].astype(np.float64), (6, 8)),
                               rtol=1e-5, atol=1e-5)  # not larger than the window: resized even in training


def test_random_contrast_and_brightness():
    x = _images((4, 5, 6, 3), scale=100) + 50
    out = np.asarray(L.RandomContrast(0.5, value_range=(-1000, 1000), seed=9)(x))
    mean = x.mean(axis=(1, 2), keepdims=True)
    factor = (out - mean) / (x - mean)  # one contrast factor per image, the same for every pixel and channel
    np.testing.assert_allclose(factor, factor[:, :1, :1, :1] * np.ones_like(factor), rtol=1e-3)
    (c,) = _draws(9, ((4, 1, 1, 1), 1.0, 1.5))
    np.testing.assert_allclose(factor[:, :1, :1, :1], c, rtol=1e-3)
    clipped = np.asarray(L.RandomContrast(0.5, value_range=(60, 140), seed=9)(x))
    np.testing.assert_allclose(clipped, np.clip(out, 60, 140), rtol=1e-5)
    out = np.asarray(L.RandomBrightness(0.3, value_range=(0, 255), seed=10)(x))
    (delta,) = _draws(10, ((4, 1, 1, 1), -0.3, 0.3))
    np.testing.assert_allclose(out, np.clip(x + delta * 255, 0, 255), rtol=1e-5, atol=1e-3)


def test_augmentation_trains_inside_a_compiled_fit():
    x = _images((16, 6, 7, 1))
    y = np.random.default_rng(1).random((16, 1)).astype(np.float32)
    model = keras.Sequential([keras.Input((6, 7, 1)), L.RandomFlip(seed=1), L.RandomRotation(0.1, seed=2),
                              L.RandomTranslation(0.1, 0.2, seed=4), L.RandomZoom(0.2, seed=5),
                              L.RandomContrast(0.2, value_range=(0, 1), seed=3), L.Rescaling(2.0),
                              L.Resizing(4, 4), L.Flatten(), L.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(model.layers[0].generator.state.numpy()) == 1 + 4  # seed 1, advanced once per step
    dense_in = np.asarray(L.Resizing(4, 4)(x * 2.0)).reshape(16, -1)
    np.testing.assert_allclose(model.predict(x, verbose=0), dense_in @ model.layers[-1].get_weights()[0]
                               + model.layers[-1].get_weights()[1], rtol=1e-4, atol=1e-5)


ALL = {
    "Rescaling": lambda: L.Rescaling(0.5, offset=1.0),
    "Resizing": lambda: L.Resizing(3, 4, interpolation="lanczos3", pad_to_aspect_ratio=True, fill_value=1.0),
    "CenterCrop": lambda: L.CenterCrop(2, 3),
    "RandomCrop": lambda: L.RandomCrop(2, 3, seed=5),
    **AUGMENTATIONS,
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_config_round_trips(name):
    layer = ALL[name]()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    x = _images(scale=255)
    np.testing.assert_array_equal(clone(x, training=False) if "Random" in name else clone(x),
                                  layer(x, training=False) if "Random" in name else layer(x))


KERAS_SCRIPT = """
import json
import keras
L = keras.layers
layers = [L.Rescaling(0.5, offset=1.0), L.Resizing(3, 4, interpolation="lanczos3", pad_to_aspect_ratio=True,
          fill_value=1.0), L.CenterCrop(2, 3), L.RandomCrop(2, 3, seed=5), L.RandomFlip(seed=3),
          L.RandomTranslation(0.2, 0.3, seed=3), L.RandomRotation(0.2, seed=3), L.RandomZoom(0.3, seed=3),
          L.RandomContrast(0.5, seed=3), L.RandomBrightness(0.3, seed=3)]
print(json.dumps({type(l).__name__: l.get_config() for l in layers}))
"""


@pytest.mark.skipif(keras_python() is None, reason=SKIP_REASON)
def test_configs_match_keras():
    run = subprocess.run([keras_python(), "-c", KERAS_SCRIPT], capture_output=True, text=True, timeout=300,
                         env={"KERAS_BACKEND": "jax", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    expected = json.loads(run.stdout.strip().splitlines()[-1])
    for name, config in expected.items():
        layer = ALL[name]()
        loaded = type(layer).from_config(config)  # Keras's config builds the same layer
        ours = json.loads(json.dumps(layer.get_config()))
        config.pop("name"), ours.pop("name")
        assert ours == config, name
        mine = json.loads(json.dumps(loaded.get_config()))
        mine.pop("name")
        assert mine == config, name


def test_bad_arguments_are_refused_with_a_message():
    with pytest.raises(ValueError, match="mode must be one of"):
        L.RandomFlip("diagonal")
    with pytest.raises(NotImplementedError, match="unknown fill_mode 'edge'"):
        L.RandomRotation(0.1, fill_mode="edge")
    with pytest.raises(ValueError, match=r"factor must be a number or a list of two numbers in \[0.0, 1.0\]"):
        L.RandomContrast(1.5)
    with pytest.raises(ValueError, match="expected a 3-D image or a 4-D batch of images, got shape"):
        L.RandomFlip()(np.zeros((2, 3)))
