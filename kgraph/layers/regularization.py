"""Regularization layers: SpatialDropout1D/2D/3D, GaussianDropout, GaussianNoise, AlphaDropout,
ActivityRegularization. All act only while training and draw from reproducible seeds."""

from __future__ import annotations

import math

from kgraph import ops, regularizers
from kgraph import random as krandom
from kgraph.layers.core import Dropout
from kgraph.layers.layer import Layer


class _SpatialDropout(Dropout):
    """Drops whole feature maps: the noise is shared over the spatial axes."""

    rank = 1

    def __init__(self, rate, seed=None, name=None, dtype=None, data_format=None, **kwargs):
        super().__init__(rate=rate, seed=seed, name=name, dtype=dtype, **kwargs)
        self.data_format = data_format or "channels_last"

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        shape = tuple(inputs.shape)
        if self.data_format == "channels_last":
            noise_shape = (shape[0],) + (1,) * self.rank + (shape[-1],)
        else:
            noise_shape = (shape[0], shape[1]) + (1,) * self.rank
        return krandom.dropout(inputs, self.rate, noise_shape=noise_shape, seed=self.seed_generator)

    def get_config(self):
        config = super().get_config()
        config.pop("noise_shape", None)
        if self.rank > 1:
            config["data_format"] = self.data_format
        return config


class SpatialDropout1D(_SpatialDropout):
    rank = 1


class SpatialDropout2D(_SpatialDropout):
    rank = 2


class SpatialDropout3D(_SpatialDropout):
    rank = 3


class _Noise(Layer):
    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = krandom.SeedGenerator(seed)
        self.supports_masking = True
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape


class GaussianNoise(_Noise):
    """Adds zero-mean Gaussian noise of `stddev` while training."""

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.stddev = float(stddev)

    def call(self, inputs, training=False):
        if not training or self.stddev == 0:
            return inputs
        return ops.add(inputs, krandom.normal(tuple(inputs.shape), stddev=self.stddev, seed=self.seed_generator))

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


class GaussianDropout(_Noise):
    """Multiplies by Gaussian noise of mean 1 and variance rate / (1 - rate) while training."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = float(rate)

    def call(self, inputs, training=False):
        if not training or not 0 < self.rate < 1:
            return inputs
        stddev = math.sqrt(self.rate / (1.0 - self.rate))
        noise = krandom.normal(tuple(inputs.shape), mean=1.0, stddev=stddev, seed=self.seed_generator)
        return ops.multiply(inputs, noise)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class AlphaDropout(_Noise):
    """Dropout that keeps the mean and variance of SELU activations (Keras 3's formula)."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = float(rate)
        self.noise_shape = noise_shape

    def call(self, inputs, training=False):
        if not training or not 0 < self.rate < 1:
            return inputs
        alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
        alpha_p = -alpha * scale
        shape = tuple(inputs.shape) if self.noise_shape is None else tuple(
            inputs.shape[i] if d is None else d for i, d in enumerate(self.noise_shape))
        keep = ops.cast(ops.greater_equal(krandom.uniform(shape, seed=self.seed_generator), self.rate),
                        inputs.dtype)
        a = ((1 - self.rate) * (1 + self.rate * alpha_p**2)) ** -0.5
        b = -a * alpha_p * self.rate
        x = ops.add(ops.multiply(inputs, keep), ops.multiply(ops.subtract(1.0, keep), alpha_p))
        return ops.add(ops.multiply(x, a), b)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "noise_shape": self.noise_shape, "seed": self.seed}


class ActivityRegularization(Layer):
    """Identity that adds an L1/L2 penalty on its input to the model's losses."""

    def __init__(self, l1=0.0, l2=0.0, **kwargs):
        super().__init__(activity_regularizer=regularizers.L1L2(l1=l1, l2=l2), **kwargs)
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.supports_masking = True
        self.built = True

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.pop("activity_regularizer", None)
        return {**config, "l1": self.l1, "l2": self.l2}
