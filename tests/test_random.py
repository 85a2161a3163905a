"""kgraph.random: distributions checked by their known moments and bounds, reproducibility
from seeds, and the same draws in a compiled step as eagerly (one shared compiled model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kgraph as keras
from kgraph import random

COUNT = 200_000


def _phi(x):
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_uniform_and_normal_moments():
    u = random.uniform((COUNT,), minval=-1.0, maxval=3.0, seed=1)
    assert u.min() >= -1.0 and u.max() < 3.0
    np.testing.assert_allclose([u.mean(), u.var()], [1.0, 16.0 / 12.0], rtol=0.02)
    z = random.normal((COUNT,), mean=2.0, stddev=0.5, seed=2)
    np.testing.assert_allclose([z.mean(), z.std()], [2.0, 0.5], rtol=0.01)


def test_truncated_normal_bounds_and_moments():
    z = random.truncated_normal((COUNT,), mean=1.0, stddev=2.0, seed=3)
    assert z.min() >= 1.0 - 4.0 and z.max() <= 1.0 + 4.0
    # the variance of a standard normal truncated to [-2, 2]
    mass = _cdf(2) - _cdf(-2)
    std = math.sqrt(1 - 2 * 2 * _phi(2) / mass)
    np.testing.assert_allclose(z.mean(), 1.0, atol=0.02)
    np.testing.assert_allclose(z.std(), 2.0 * std, rtol=0.01)
    assert np.mean(np.abs(z - 1.0) >= 3.999) < 1e-4  # clipping is (almost) never needed


def test_randint_covers_its_range_uniformly():
    values = random.randint((COUNT,), 3, 8, seed=4)
    assert values.dtype == np.int32
    counts = np.bincount(values - 3, minlength=5)
    assert values.min() == 3 and values.max() == 7
    np.testing.assert_allclose(counts / COUNT, np.full(5, 0.2), atol=0.01)


def test_categorical_follows_softmax_of_logits():
    logits = np.log(np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], "float32"))
    samples = random.categorical(logits, 50_000, seed=5)
    assert samples.shape == (2, 50_000)
    for row, probs in enumerate(np.exp(logits)):
        np.testing.assert_allclose(np.bincount(samples[row], minlength=3) / 50_000, probs, atol=0.01)
    with pytest.raises(ValueError, match="num_classes"):
        random.categorical(np.zeros(3, "float32"), 2)


def test_integer_seeds_reproduce_and_generators_advance():
    np.testing.assert_array_equal(random.normal((5,), seed=7), random.normal((5,), seed=7))
    generator = random.SeedGenerator(11)
    first, second = random.uniform((5,), seed=generator), random.uniform((5,), seed=generator)
    assert not np.array_equal(first, second)
    again = random.SeedGenerator(11)
    np.testing.assert_array_equal(random.uniform((5,), seed=again), first)


class Noise(keras.layers.Layer):
    """Adds truncated-normal noise and a random integer drawn from a seed generator."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = random.SeedGenerator(21)

    def call(self, x):
        noise = random.truncated_normal((None, 3), seed=self.seed_generator)
        return x + noise


def test_compiled_draws_equal_eager_draws():
    """The compiled step draws from the generator's state exactly as the eager call does."""
    inputs = keras.Input((3,))
    layer = Noise()
    model = keras.Model(inputs, layer(inputs))
    x = np.zeros((4, 3), "float32")
    state = int(np.asarray(layer.seed_generator.state.value))
    compiled = model.predict(x, batch_size=4, verbose=0)
    assert int(np.asarray(layer.seed_generator.state.value)) == state + 1
    eager = np.asarray(random.truncated_normal((4, 3), seed=random.SeedGenerator(state)))
    np.testing.assert_allclose(compiled, eager, rtol=1e-6, atol=1e-6)
    assert np.all(np.abs(compiled) <= 2.0)
