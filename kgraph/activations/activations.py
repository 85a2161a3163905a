"""Activation functions with Keras 3's names, arguments and defaults.

Each is written with kgraph.ops only, so it runs eagerly on arrays and records graph
nodes on symbolic tensors (and fuses into the surrounding elementwise loop when compiled).
"""

from __future__ import annotations

from kgraph import ops


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """max(x, 0), generalized: a leaky slope below the threshold, and an optional ceiling.

    f(x) = max_value          for x >= max_value
         = x                  for threshold <= x < max_value
         = negative_slope * (x - threshold)  otherwise
    """
    x = ops.convert_to_tensor(x)
    if negative_slope != 0.0:
        if max_value is None and threshold == 0:
            return ops.leaky_relu(x, negative_slope=negative_slope)
        if threshold != 0:
            negative_part = ops.relu(ops.add(ops.negative(x), threshold))
        else:
            negative_part = ops.relu(ops.negative(x))
    clip_max = max_value is not None
    if threshold != 0:
        x = ops.multiply(x, ops.cast(ops.greater(x, threshold), x.dtype))
    elif max_value == 6:
        x = ops.relu6(x)
        clip_max = False
    else:
        x = ops.relu(x)
    if clip_max:
        x = ops.clip(x, 0.0, float(max_value))
    if negative_slope != 0.0:
        x = ops.subtract(x, ops.multiply(negative_part, negative_slope))
    return x


def leaky_relu(x, negative_slope=0.2):
    """x for x >= 0, negative_slope * x otherwise."""
    return ops.leaky_relu(x, negative_slope=negative_slope)


def relu6(x):
    """min(max(x, 0), 6)."""
    return ops.relu6(x)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`."""
    output = ops.softmax(x, axis=axis)
    try:
        output._keras_logits = x  # lets a crossentropy loss use the logits, as Keras does
    except AttributeError:
        pass
    return output


def elu(x, alpha=1.0):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""
    return ops.elu(x, alpha=alpha)


def selu(x):
    """scale * elu(x, alpha) with the self-normalizing constants."""
    return ops.selu(x)


def softplus(x):
    """log(exp(x) + 1)."""
    return ops.softplus(x)


def softsign(x):
    """x / (|x| + 1)."""
    return ops.softsign(x)


def soft_shrink(x, threshold=0.5):
    """x - threshold above threshold, x + threshold below -threshold, 0 in between."""
    x = ops.convert_to_tensor(x)
    return ops.where(
        ops.greater(x, threshold),
        ops.subtract(x, threshold),
        ops.where(ops.less(x, -threshold), ops.add(x, threshold), 0.0),
    )


def sparse_plus(x):
    """0 for x <= -1, x for x >= 1, (x + 1)^2 / 4 in between."""
    x = ops.convert_to_tensor(x)
    middle = ops.multiply(ops.square(ops.add(x, 1.0)), 0.25)
    return ops.where(ops.less_equal(x, -1.0), 0.0, ops.where(ops.greater_equal(x, 1.0), x, middle))


def silu(x):
    """x * sigmoid(x) (also called swish)."""
    return ops.silu(x)


swish = silu


def squareplus(x, b=4):
    """(x + sqrt(x^2 + b)) / 2."""
    x = ops.convert_to_tensor(x)
    return ops.multiply(ops.add(x, ops.sqrt(ops.add(ops.square(x), float(b)))), 0.5)


def gelu(x, approximate=False):
    """x * P(X <= x) for X ~ N(0, 1); the tanh approximation when `approximate`."""
    return ops.gelu(x, approximate=approximate)


def celu(x, alpha=1.0):
    """max(x, 0) + alpha * (exp(min(x, 0) / alpha) - 1)."""
    x = ops.convert_to_tensor(x)
    return ops.add(
        ops.maximum(x, 0.0),
        ops.multiply(ops.expm1(ops.divide(ops.minimum(x, 0.0), float(alpha))), float(alpha)),
    )


def glu(x, axis=-1):
    """a * sigmoid(b), where a and b are the two halves of x along `axis`."""
    x = ops.convert_to_tensor(x)
    if x.shape[axis] is None or x.shape[axis] % 2:
        raise ValueError(f"axis size must be divisible by 2. Received: x.shape={x.shape} with axis={axis}")
    a, b = ops.split(x, 2, axis=axis)
    return ops.multiply(a, ops.sigmoid(b))


def tanh(x):
    """Hyperbolic tangent."""
    return ops.tanh(x)


def tanh_shrink(x):
    """x - tanh(x)."""
    x = ops.convert_to_tensor(x)
    return ops.subtract(x, ops.tanh(x))


def hard_tanh(x):
    """clip(x, -1, 1)."""
    return ops.clip(x, -1.0, 1.0)


def hard_shrink(x, threshold=0.5):
    """x where |x| > threshold, 0 elsewhere."""
    x = ops.convert_to_tensor(x)
    return ops.where(ops.greater(ops.abs(x), threshold), x, 0.0)


def threshold(x, threshold, default_value):
    """x where x > threshold, default_value elsewhere."""
    x = ops.convert_to_tensor(x)
    return ops.where(ops.greater(x, threshold), x, float(default_value))


def sigmoid(x):
    """1 / (1 + exp(-x))."""
    output = ops.sigmoid(x)
    try:
        output._keras_logits = x
    except AttributeError:
        pass
    return output


def exponential(x):
    """exp(x)."""
    return ops.exp(x)


def hard_sigmoid(x):
    """relu6(x + 3) / 6: 0 below -3, 1 above 3, linear in between."""
    return ops.hard_sigmoid(x)


def log_sigmoid(x):
    """log(sigmoid(x)) = -softplus(-x)."""
    return ops.negative(ops.softplus(ops.negative(x)))


def sparse_sigmoid(x):
    """0 for x <= -1, 1 for x >= 1, (x + 1) / 2 in between."""
    return ops.clip(ops.multiply(ops.add(x, 1.0), 0.5), 0.0, 1.0)


def hard_silu(x):
    """x * hard_sigmoid(x) (also called hard_swish)."""
    x = ops.convert_to_tensor(x)
    return ops.multiply(x, ops.hard_sigmoid(x))


hard_swish = hard_silu


def linear(x):
    """The identity."""
    return x


def mish(x):
    """x * tanh(softplus(x))."""
    x = ops.convert_to_tensor(x)
    return ops.multiply(x, ops.tanh(ops.softplus(x)))


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`."""
    return ops.log_softmax(x, axis=axis)
