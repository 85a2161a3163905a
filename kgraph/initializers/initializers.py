"""Weight initializers with Keras 3's names, arguments, defaults and configs.

An initializer is called as `initializer(shape, dtype=None)` and returns a numpy array
(variables are created eagerly, before any graph is traced); the dtype defaults to
float32 (`kgraph.config.floatx()`).

Seeds follow Keras 3: an initializer seeded with an integer, or left unseeded (it then
draws one seed from Python's `random` when it is created, so `kgraph.utils.set_random_seed`
makes runs reproducible), returns the same values at every call. Pass a
`kgraph.random.SeedGenerator` (anything with `next()`) to get new values at each call.
The values themselves come from numpy's PCG64 generator, so they differ from Keras's
(JAX/TF) random streams while following the same distributions.
"""

from __future__ import annotations

import math
import random as python_random

import numpy as np

from kgraph._serialization import deserialize_keras_object, serialize_keras_object


def _floatx():
    from kgraph.config import floatx

    return floatx()


def _dtype(dtype):
    if dtype is None:
        return np.dtype(_floatx())
    if hasattr(dtype, "name") and not isinstance(dtype, str):
        dtype = dtype.name
    return np.dtype(dtype)


def _shape(shape):
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    shape = tuple(shape)
    if any(d is None for d in shape):
        raise ValueError(f"An initializer needs a fully defined shape. Received: shape={shape}")
    return tuple(int(d) for d in shape)


def make_default_seed():
    """A fresh seed from Python's `random` module (reproducible after `random.seed`)."""
    return python_random.randint(1, int(1e9))


class Initializer:
    """Base class: subclasses implement `__call__(shape, dtype=None)`.

    `get_config()` returns the constructor arguments, so `from_config(get_config())`
    rebuilds an equivalent initializer.
    """

    def __call__(self, shape, dtype=None):
        raise NotImplementedError(f"Initializer {self.__class__.__name__} does not implement __call__().")

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def clone(self):
        return self.__class__.from_config(self.get_config())

    def __repr__(self):
        return f"<{self.__class__.__name__}>"


# -- constants ------------------------------------------------------------------------------
class Constant(Initializer):
    """Fills the tensor with `value` (a scalar, or anything that broadcasts to the shape)."""

    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype=None):
        dtype = _dtype(dtype)
        value = np.asarray(self.value).astype(dtype)
        return np.array(np.broadcast_to(value, _shape(shape)), dtype=dtype)

    def get_config(self):
        return {"value": serialize_keras_object(self.value)}

    @classmethod
    def from_config(cls, config):
        return cls(deserialize_keras_object(config["value"]))


class Zeros(Initializer):
    """Fills the tensor with 0."""

    def __call__(self, shape, dtype=None):
        return np.zeros(_shape(shape), dtype=_dtype(dtype))


class Ones(Initializer):
    """Fills the tensor with 1."""

    def __call__(self, shape, dtype=None):
        return np.ones(_shape(shape), dtype=_dtype(dtype))


class Identity(Initializer):
    """`gain` times the identity matrix (2-D shapes only)."""

    def __init__(self, gain=1.0):
        self.gain = gain

    def __call__(self, shape, dtype=None):
        shape = _shape(shape)
        if len(shape) != 2:
            raise ValueError(
                "Identity matrix initializer can only be used for 2D matrices. "
                f"Received: shape={shape} of rank {len(shape)}."
            )
        dtype = _dtype(dtype)
        return (self.gain * np.eye(*shape)).astype(dtype)

    def get_config(self):
        return {"gain": self.gain}


# -- random -----------------------------------------------------------------------------------
class RandomInitializer(Initializer):
    """Base of the random initializers: holds the seed (int, None or a SeedGenerator)."""

    def __init__(self, seed=None):
        self._init_seed = seed
        if seed is None:
            seed = make_default_seed()
        elif isinstance(seed, dict):
            seed = deserialize_keras_object(seed)
        elif isinstance(seed, (bool, np.bool_)) or not (
            isinstance(seed, (int, np.integer)) or callable(getattr(seed, "next", None))
        ):
            raise ValueError(
                "`seed` argument should be an instance of `keras.random.SeedGenerator()` "
                f"or an integer. Received: seed={seed}"
            )
        self.seed = seed

    def _generator(self):
        seed = self.seed
        if callable(getattr(seed, "next", None)):
            drawn = np.asarray(seed.next()).astype(np.int64).ravel()
            return np.random.default_rng([int(v) & 0xFFFFFFFF for v in drawn])
        return np.random.default_rng(int(seed))

    def get_config(self):
        return {"seed": serialize_keras_object(self._init_seed)}


def _normal(rng, shape, mean, stddev):
    return rng.standard_normal(shape) * stddev + mean


def _truncated_normal(rng, shape, mean, stddev):
    """Normal samples redrawn until they lie within two standard deviations of the mean."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    return values * stddev + mean


def _uniform(rng, shape, minval, maxval):
    return rng.uniform(minval, maxval, size=shape)


class RandomNormal(RandomInitializer):
    """Samples from N(mean, stddev**2)."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = mean
        self.stddev = stddev
        super().__init__(seed=seed)

    def __call__(self, shape, dtype=None):
        return _normal(self._generator(), _shape(shape), self.mean, self.stddev).astype(_dtype(dtype))

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


class TruncatedNormal(RandomInitializer):
    """Samples from N(mean, stddev**2), redrawing those more than 2 stddev from the mean."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = mean
        self.stddev = stddev
        super().__init__(seed=seed)

    def __call__(self, shape, dtype=None):
        return _truncated_normal(self._generator(), _shape(shape), self.mean, self.stddev).astype(
            _dtype(dtype)
        )

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


class RandomUniform(RandomInitializer):
    """Samples from U[minval, maxval)."""

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval = minval
        self.maxval = maxval
        super().__init__(seed=seed)

    def __call__(self, shape, dtype=None):
        return _uniform(self._generator(), _shape(shape), self.minval, self.maxval).astype(_dtype(dtype))

    def get_config(self):
        return {**super().get_config(), "minval": self.minval, "maxval": self.maxval}


def compute_fans(shape):
    """(fan_in, fan_out) of a weight shape; convolution kernels are (..., in, out)."""
    shape = tuple(shape)
    if len(shape) < 1:
        fan_in = fan_out = 1
    elif len(shape) == 1:
        fan_in = fan_out = shape[0]
    elif len(shape) == 2:
        fan_in, fan_out = shape
    else:
        receptive_field = 1
        for dim in shape[:-2]:
            receptive_field *= dim
        fan_in = shape[-2] * receptive_field
        fan_out = shape[-1] * receptive_field
    return int(fan_in), int(fan_out)


# The standard deviation of a unit normal truncated to [-2, 2].
_TRUNCATED_STDDEV = 0.87962566103423978


class VarianceScaling(RandomInitializer):
    """Scale / fan variance: stddev = sqrt(scale / n) (normal) or limit = sqrt(3 scale / n) (uniform).

    n is fan_in, fan_out or their average (`mode`); the truncated normal is rescaled so
    that the standard deviation after truncation is sqrt(scale / n).
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if scale <= 0.0:
            raise ValueError(f"Argument `scale` must be positive float. Received: scale={scale}")
        allowed_modes = {"fan_in", "fan_out", "fan_avg"}
        if mode not in allowed_modes:
            raise ValueError(f"Invalid `mode` argument: {mode}. Please use one of {allowed_modes}")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        allowed_distributions = {"uniform", "truncated_normal", "untruncated_normal"}
        if distribution not in allowed_distributions:
            raise ValueError(
                f"Invalid `distribution` argument: {distribution}. Please use one of {allowed_distributions}"
            )
        self.scale = scale
        self.mode = mode
        self.distribution = distribution
        super().__init__(seed=seed)

    def __call__(self, shape, dtype=None):
        shape = _shape(shape)
        fan_in, fan_out = compute_fans(shape)
        scale = self.scale
        if self.mode == "fan_in":
            scale /= max(1.0, fan_in)
        elif self.mode == "fan_out":
            scale /= max(1.0, fan_out)
        else:
            scale /= max(1.0, (fan_in + fan_out) / 2.0)
        rng = self._generator()
        if self.distribution == "truncated_normal":
            values = _truncated_normal(rng, shape, 0.0, math.sqrt(scale) / _TRUNCATED_STDDEV)
        elif self.distribution == "untruncated_normal":
            values = _normal(rng, shape, 0.0, math.sqrt(scale))
        else:
            limit = math.sqrt(3.0 * scale)
            values = _uniform(rng, shape, -limit, limit)
        return values.astype(_dtype(dtype))

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
        }


def _preset(name, scale, mode, distribution, doc):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale=scale, mode=mode, distribution=distribution, seed=seed)

    def get_config(self):
        return {"seed": serialize_keras_object(self._init_seed)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    return type(
        name,
        (VarianceScaling,),
        {
            "__init__": __init__,
            "get_config": get_config,
            "from_config": from_config,
            "__doc__": doc,
            "__module__": __name__,
        },
    )


GlorotUniform = _preset(
    "GlorotUniform",
    1.0,
    "fan_avg",
    "uniform",
    "Glorot (Xavier) uniform: U[-limit, limit], limit = sqrt(6 / (fan_in + fan_out)).",
)
GlorotNormal = _preset(
    "GlorotNormal",
    1.0,
    "fan_avg",
    "truncated_normal",
    "Glorot (Xavier) normal: truncated normal, stddev = sqrt(2 / (fan_in + fan_out)).",
)
HeNormal = _preset(
    "HeNormal", 2.0, "fan_in", "truncated_normal", "He normal: truncated normal, stddev = sqrt(2 / fan_in)."
)
HeUniform = _preset(
    "HeUniform", 2.0, "fan_in", "uniform", "He uniform: U[-limit, limit], limit = sqrt(6 / fan_in)."
)
LecunNormal = _preset(
    "LecunNormal",
    1.0,
    "fan_in",
    "truncated_normal",
    "LeCun normal: truncated normal, stddev = sqrt(1 / fan_in).",
)
LecunUniform = _preset(
    "LecunUniform", 1.0, "fan_in", "uniform", "LeCun uniform: U[-limit, limit], limit = sqrt(3 / fan_in)."
)


class Orthogonal(RandomInitializer):
    """An orthogonal matrix (QR of a normal matrix), reshaped to the kernel's shape, times gain."""

    def __init__(self, gain=1.0, seed=None):
        self.gain = gain
        super().__init__(seed=seed)

    def __call__(self, shape, dtype=None):
        shape = _shape(shape)
        if len(shape) < 2:
            raise ValueError(
                "The tensor to initialize must be at least two-dimensional. "
                f"Received: shape={shape} of rank {len(shape)}."
            )
        num_rows = int(np.prod(shape[:-1]))
        num_cols = shape[-1]
        flat_shape = (max(num_cols, num_rows), min(num_cols, num_rows))
        a = self._generator().standard_normal(flat_shape)
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if num_rows < num_cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(_dtype(dtype))

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}


OrthogonalInitializer = Orthogonal
IdentityInitializer = Identity
