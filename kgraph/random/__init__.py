"""kgraph.random: seeded random tensors (Keras 3 `keras.random`).

Eagerly these return numpy arrays; traced, they record the counter-based random op, with
the seed read from a SeedGenerator's state variable that the compiled step advances, so
every step draws fresh numbers and a run is reproducible from its seed.
"""

from __future__ import annotations

import math

import numpy as np

from kgraph import ops
from kgraph.ir import SymbolicTensor, Variable, is_tracing
from kgraph.ops.random import random_uniform
from kgraph.utils.naming import auto_name


class SeedGenerator:
    """Holds a seed state variable; each draw uses the state and advances it."""

    def __init__(self, seed=None, name=None, **kwargs):
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        if not isinstance(seed, (int, np.integer)):
            raise ValueError(f"SeedGenerator: seed must be an int or None, got {seed!r}")
        self.name = name or auto_name(self)
        self._initial_seed = int(seed)
        self.state = Variable(np.array(int(seed), dtype="int64"), trainable=False,
                              name=f"{self.name}_state")
        self.state.path = f"{self.name}/state"

    def next(self, ordered=True):
        """The seed for this draw (a graph value inside a trace)."""
        current = self.state.value
        if not isinstance(current, SymbolicTensor):
            current = np.array(current, dtype="int64")  # a copy: assign() below writes in place
        self.state.assign(ops.add(current, np.int64(1)) if isinstance(current, SymbolicTensor)
                          else current + 1)
        return current

    def get_config(self):
        return {"seed": self._initial_seed}


_global_generator = None


def global_seed_generator():
    global _global_generator
    if _global_generator is None:
        _global_generator = SeedGenerator(name="global_seed_generator")
    return _global_generator


def _seed_value(seed):
    if isinstance(seed, SeedGenerator):
        return seed.next()
    if seed is None:
        if is_tracing():
            raise ValueError("A random op inside a compiled function needs a SeedGenerator "
                             "(seed=None would give the same numbers every step): create "
                             "kgraph.random.SeedGenerator() in __init__ and pass it as seed")
        return global_seed_generator().next()
    return np.array(int(seed), dtype="int64")


def _shape(shape):
    return tuple(None if d is None else int(d) for d in shape)


def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    values = random_uniform(_seed_value(seed), _shape(shape), salt=0)
    values = ops.add(ops.multiply(values, maxval - minval), minval) if (minval, maxval) != (0.0, 1.0) else values
    return ops.cast(values, dtype) if dtype else values


def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    seed_value = _seed_value(seed)
    values = _box_muller(random_uniform(seed_value, _shape(shape), salt=1),
                         random_uniform(seed_value, _shape(shape), salt=2))
    values = ops.add(ops.multiply(values, stddev), mean)
    return ops.cast(values, dtype) if dtype else values


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    """Normal values redrawn until they lie within two standard deviations of the mean.

    A compiled graph has no data-dependent loop, so each element takes the first of
    TRUNCATED_DRAWS candidates inside [-2, 2] (a candidate falls outside with probability
    0.0455, so all of them do with probability 0.0455**6 < 1e-8); the rare element with no
    candidate inside is clipped to the bound.
    """
    seed_value = _seed_value(seed)
    shape = _shape(shape)
    value = None
    for draw in reversed(range(TRUNCATED_DRAWS)):
        u1 = random_uniform(seed_value, shape, salt=16 + 2 * draw)
        u2 = random_uniform(seed_value, shape, salt=17 + 2 * draw)
        candidate = _box_muller(u1, u2)
        if value is None:
            value = ops.clip(candidate, -2.0, 2.0)
        else:
            value = ops.where(ops.less_equal(ops.abs(candidate), 2.0), candidate, value)
    values = ops.add(ops.multiply(value, stddev), mean)
    return ops.cast(values, dtype) if dtype else values


TRUNCATED_DRAWS = 6


def _box_muller(u1, u2):
    radius = ops.sqrt(ops.multiply(-2.0, ops.log(ops.subtract(1.0, u1))))
    return ops.multiply(radius, ops.cos(ops.multiply(2.0 * math.pi, u2)))


def randint(shape, minval, maxval, dtype="int32", seed=None):
    """Integers uniform in [minval, maxval)."""
    values = random_uniform(_seed_value(seed), _shape(shape), salt=3)
    scaled = ops.floor(ops.add(ops.multiply(values, float(maxval - minval)), float(minval)))
    return ops.cast(ops.minimum(scaled, float(maxval - 1)), dtype)


def categorical(logits, num_samples, dtype="int32", seed=None):
    """`num_samples` class indices per row of `logits` (batch, classes), drawn with
    probabilities softmax(logits) (Gumbel-max: argmax of logits plus Gumbel noise)."""
    logits = ops.convert_to_tensor(logits)
    if len(logits.shape) != 2:
        raise ValueError(f"random.categorical: logits must have shape (batch_size, num_classes), "
                         f"got {tuple(logits.shape)}")
    batch, classes = logits.shape
    u = random_uniform(_seed_value(seed), (batch, int(num_samples), classes), salt=4)
    gumbel = ops.negative(ops.log(ops.negative(ops.log(ops.add(ops.multiply(u, 1.0 - 2e-7), 1e-7)))))
    scores = ops.add(ops.expand_dims(ops.cast(logits, "float32"), 1), gumbel)
    return ops.cast(ops.argmax(scores, axis=-1), dtype)


def dropout(inputs, rate, noise_shape=None, seed=None):
    """Zero each element with probability `rate` and scale the rest by 1/(1-rate)."""
    inputs = ops.convert_to_tensor(inputs)
    shape = tuple(inputs.shape) if noise_shape is None else tuple(
        inputs.shape[i] if d is None else d for i, d in enumerate(noise_shape))
    keep = ops.greater_equal(random_uniform(_seed_value(seed), shape), rate)
    scale = 1.0 / (1.0 - rate)
    return ops.where(keep, ops.multiply(inputs, scale), ops.zeros_like(inputs))


def shuffle(x, axis=0, seed=None):
    seed_value = _seed_value(seed)
    x = ops.convert_to_tensor(x)
    keys = random_uniform(seed_value, (x.shape[axis],), salt=5)
    return ops.take(x, ops.argsort(keys) if hasattr(ops, "argsort") else _eager_argsort(keys), axis=axis)


def _eager_argsort(keys):
    if isinstance(keys, SymbolicTensor):
        raise NotImplementedError("random.shuffle inside a compiled function needs ops.argsort")
    return np.argsort(keys, kind="stable").astype("int32")


__all__ = ["SeedGenerator", "categorical", "dropout", "normal", "randint", "shuffle", "truncated_normal", "uniform"]
