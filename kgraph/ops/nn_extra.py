"""keras.ops.nn functions written as compositions of registered ops: activations,
normalizations, crossentropies, multi_hot and dot-product attention."""

from __future__ import annotations

import math

import numpy as np

from kgraph import ops
from kgraph.ops import attention as fused_attention
from kgraph.ops.numpy_extra import _floating, _sorted, _tensor, _to_last, cumsum, einsum, moveaxis, norm
from kgraph.ops.shapes import normalize_axes, normalize_axis

__all__ = [
    "celu", "glu", "hard_tanh", "hard_shrink", "soft_shrink", "tanh_shrink", "squareplus", "sparse_plus",
    "sparse_sigmoid", "log_sigmoid", "hard_silu", "hard_swish", "threshold", "sparsemax", "normalize",
    "moments", "batch_normalization", "layer_normalization", "rms_normalization", "binary_crossentropy",
    "categorical_crossentropy", "sparse_categorical_crossentropy", "multi_hot", "dot_product_attention",
]

EPSILON = 1e-7  # Keras's backend.epsilon(), the default of epsilon=None arguments


# -- activations ----------------------------------------------------------------------------------
def celu(x, alpha=1.0):
    """x for x > 0, alpha (exp(x / alpha) - 1) otherwise."""
    x = _floating(x)
    return ops.where(ops.greater(x, 0), x, ops.multiply(ops.expm1(ops.divide(x, float(alpha))), float(alpha)))


def glu(x, axis=-1):
    """Gated linear unit: the first half of `axis` times the sigmoid of the second."""
    x = _floating(x)
    axis = normalize_axis(axis, len(x.shape), "glu")
    size = x.shape[axis]
    if size is None or size % 2:
        raise ValueError(f"glu: axis {axis} must have an even static size, got {size}")
    a, b = ops.split(x, 2, axis=axis)
    return ops.multiply(a, ops.sigmoid(b))


def hard_tanh(x):
    return ops.clip(_floating(x), -1.0, 1.0)


def hard_shrink(x, threshold=0.5):
    """x where |x| > threshold, else 0."""
    x = _floating(x)
    return ops.where(ops.greater(ops.abs(x), float(threshold)), x, ops.zeros_like(x))


def soft_shrink(x, threshold=0.5):
    """x - threshold above it, x + threshold below -threshold, 0 between."""
    x = _floating(x)
    t = float(threshold)
    return ops.where(ops.greater(x, t), ops.subtract(x, t),
                     ops.where(ops.less(x, -t), ops.add(x, t), ops.zeros_like(x)))


def tanh_shrink(x):
    x = _floating(x)
    return ops.subtract(x, ops.tanh(x))


def squareplus(x, b=4):
    """(x + sqrt(x^2 + b)) / 2."""
    x = _floating(x)
    return ops.multiply(ops.add(x, ops.sqrt(ops.add(ops.square(x), float(b)))), 0.5)


def sparse_plus(x):
    """0 for x <= -1, x for x >= 1, (x + 1)^2 / 4 between."""
    x = _floating(x)
    return ops.where(ops.less_equal(x, -1.0), ops.zeros_like(x),
                     ops.where(ops.greater_equal(x, 1.0), x, ops.multiply(ops.square(ops.add(x, 1.0)), 0.25)))


def sparse_sigmoid(x):
    """0 for x <= -1, 1 for x >= 1, (x + 1) / 2 between."""
    x = _floating(x)
    return ops.clip(ops.multiply(ops.add(x, 1.0), 0.5), 0.0, 1.0)


def log_sigmoid(x):
    """log(sigmoid(x)) = -softplus(-x), stable for large |x|."""
    return ops.negative(ops.softplus(ops.negative(_floating(x))))


def hard_silu(x):
    """x * hard_sigmoid(x)."""
    x = _floating(x)
    return ops.multiply(x, ops.hard_sigmoid(x))


hard_swish = hard_silu


def threshold(x, threshold, default_value):  # noqa: A002  (Keras argument name)
    """x where x > threshold, else default_value."""
    x = _tensor(x)
    return ops.where(ops.greater(x, threshold), x, ops.full_like(x, default_value))


def sparsemax(x, axis=-1):
    """Euclidean projection of x onto the probability simplex along `axis` (Martins & Astudillo)."""
    x = _floating(x)
    x_last, back = _to_last(x, axis)
    n = x_last.shape[-1]
    z = _sorted(x_last, -1, descending=True)[0]
    k = np.arange(1, n + 1, dtype=x.dtype)
    cumulative = cumsum(z, axis=-1)
    support = ops.greater(ops.add(1.0, ops.multiply(k, z)), cumulative)
    k_z = ops.sum(ops.cast(support, x.dtype), axis=-1, keepdims=True)
    tau_sum = ops.sum(ops.where(support, z, ops.zeros_like(z)), axis=-1, keepdims=True)
    tau = ops.divide(ops.subtract(tau_sum, 1.0), k_z)
    return back(ops.maximum(ops.subtract(x_last, tau), 0.0))


# -- normalization --------------------------------------------------------------------------------
def normalize(x, axis=-1, order=2, epsilon=None):
    """x divided by its `order`-norm along `axis` (at least epsilon)."""
    x = _floating(x)
    size = norm(x, ord=order, axis=axis, keepdims=True)
    return ops.divide(x, ops.maximum(size, EPSILON if epsilon is None else float(epsilon)))


def moments(x, axes, keepdims=False, synchronized=False):
    """(mean, variance) of x over `axes`."""
    x = _floating(x)
    mean = ops.mean(x, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(ops.subtract(x, mean)), axis=axes, keepdims=True)
    if not keepdims:
        squeezed = normalize_axes(axes, len(x.shape), "moments")
        mean, variance = ops.squeeze(mean, axis=squeezed), ops.squeeze(variance, axis=squeezed)
    return mean, variance


def _along(v, x, axis):
    v = _tensor(v)
    if len(v.shape) != 1:
        return v
    shape = [1] * len(x.shape)
    shape[axis] = -1
    return ops.reshape(v, tuple(shape))


def batch_normalization(x, mean, variance, axis, offset=None, scale=None, epsilon=1e-3):
    """(x - mean) / sqrt(variance + epsilon) * scale + offset, the statistics 1-D along `axis`."""
    x = _floating(x)
    axis = normalize_axis(axis, len(x.shape), "batch_normalization")
    inverse = ops.rsqrt(ops.add(_along(variance, x, axis), float(epsilon)))
    if scale is not None:
        inverse = ops.multiply(inverse, _along(scale, x, axis))
    result = ops.multiply(ops.subtract(x, _along(mean, x, axis)), inverse)
    return result if offset is None else ops.add(result, _along(offset, x, axis))


def layer_normalization(x, gamma=None, beta=None, axis=-1, epsilon=None, **kwargs):
    """(x - mean) / sqrt(var + epsilon) over `axis`, then * gamma + beta."""
    x = _floating(x)
    mean, variance = moments(x, axis, keepdims=True)
    result = ops.multiply(ops.subtract(x, mean), ops.rsqrt(ops.add(variance, EPSILON if epsilon is None else epsilon)))
    if gamma is not None:
        result = ops.multiply(result, gamma)
    return result if beta is None else ops.add(result, beta)


def rms_normalization(x, scale=None, axis=-1, epsilon=None):
    """x / sqrt(mean(x^2) + epsilon) over `axis`, times scale."""
    x = _floating(x)
    eps = EPSILON if epsilon is None else float(epsilon)
    result = ops.multiply(x, ops.rsqrt(ops.add(ops.mean(ops.square(x), axis=axis, keepdims=True), eps)))
    return result if scale is None else ops.multiply(result, scale)


# -- crossentropies -------------------------------------------------------------------------------
def binary_crossentropy(target, output, from_logits=False):
    """Elementwise binary crossentropy of probabilities (clipped to [eps, 1 - eps]) or logits."""
    target, output = _floating(target), _floating(output)
    if from_logits:
        # max(x, 0) - x z + log(1 + exp(-|x|))
        return ops.add(ops.subtract(ops.relu(output), ops.multiply(output, target)),
                       ops.log1p(ops.exp(ops.negative(ops.abs(output)))))
    output = ops.clip(output, EPSILON, 1.0 - EPSILON)
    return ops.negative(ops.add(ops.multiply(target, ops.log(output)),
                                ops.multiply(ops.subtract(1.0, target), ops.log(ops.subtract(1.0, output)))))


def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """-sum(target * log(p)) along `axis`; p = softmax(output) for logits, else output
    rescaled to sum to 1 and clipped to [eps, 1 - eps]."""
    target, output = _floating(target), _floating(output)
    if tuple(target.shape) != tuple(output.shape) and None not in target.shape + output.shape:
        raise ValueError(f"categorical_crossentropy: target and output shapes differ: "
                         f"{tuple(target.shape)} and {tuple(output.shape)}")
    if from_logits:
        return ops.negative(ops.sum(ops.multiply(target, ops.log_softmax(output, axis=axis)), axis=axis))
    output = ops.divide(output, ops.sum(output, axis=axis, keepdims=True))
    output = ops.clip(output, EPSILON, 1.0 - EPSILON)
    return ops.negative(ops.sum(ops.multiply(target, ops.log(output)), axis=axis))


def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """categorical_crossentropy with integer class targets (a trailing axis of size 1 is dropped)."""
    target, output = _tensor(target), _floating(output)
    if len(target.shape) == len(output.shape) and target.shape[-1] == 1:
        target = ops.squeeze(target, axis=-1)
    axis = normalize_axis(axis, len(output.shape), "sparse_categorical_crossentropy")
    classes = output.shape[axis]
    if classes is None:
        raise ValueError("sparse_categorical_crossentropy: the class axis must have a static size")
    labels = ops.one_hot(ops.cast(target, "int32"), classes, axis=axis, dtype=output.dtype)
    return categorical_crossentropy(labels, output, from_logits=from_logits, axis=axis)


def multi_hot(inputs, num_classes=None, axis=-1, dtype=None, sparse=False, **kwargs):
    """1 at every class listed in each row of `inputs` (a 1-D input is one row)."""
    if num_classes is None:
        num_classes = kwargs.pop("num_tokens", None)
    if num_classes is None:
        raise ValueError("multi_hot: num_classes is required")
    if sparse:
        raise NotImplementedError("multi_hot: sparse=True is not supported (kgraph has dense tensors only)")
    inputs = _tensor(inputs)
    single = len(inputs.shape) == 1
    if single:
        inputs = ops.expand_dims(inputs, 0)
    hot = ops.max(ops.one_hot(ops.cast(inputs, "int32"), num_classes, axis=-1, dtype="float32"), axis=-2)
    if axis != -1 and axis != len(hot.shape) - 1:
        hot = moveaxis(hot, -1, axis)
    if single:
        hot = ops.squeeze(hot, axis=0)
    return ops.cast(hot, dtype) if dtype is not None and dtype != "float32" else hot


# -- attention ------------------------------------------------------------------------------------
def dot_product_attention(query, key, value, bias=None, mask=None, scale=None, is_causal=False,
                          flash_attention=None, attn_logits_soft_cap=None):
    """softmax(q k^T * scale + bias, masked) v for (batch, time, heads, depth) tensors;
    `mask` is True where attention is allowed, is_causal masks the future."""
    if flash_attention:
        raise NotImplementedError("dot_product_attention: flash_attention=True is not supported")
    query, key, value = _floating(query), _floating(key), _floating(value)
    if len(query.shape) != 4:
        raise ValueError(f"dot_product_attention: query must be (batch, time, heads, depth), got {tuple(query.shape)}")
    depth = query.shape[-1]
    scale = 1.0 / math.sqrt(depth) if scale is None else float(scale)
    if bias is None and attn_logits_soft_cap is None and (mask is None or len(mask.shape) <= 4) \
            and fused_attention.use_fused(query, key) and value.dtype == query.dtype:
        if mask is not None:  # numpy broadcasting aligns the mask's axes on the right
            mask = ops.cast(mask, "bool")
            while len(mask.shape) < 4:
                mask = ops.expand_dims(mask, 0)
        return fused_attention.attention(query, key, value, mask, scale=scale, causal=is_causal)
    logits = ops.multiply(einsum("btnh,bsnh->bnts", query, key), scale)
    if attn_logits_soft_cap is not None:
        cap = float(attn_logits_soft_cap)
        logits = ops.multiply(ops.tanh(ops.divide(logits, cap)), cap)
    if bias is not None:
        logits = ops.add(logits, bias)
    allowed = None
    if mask is not None:
        allowed = ops.cast(mask, "bool")
    if is_causal:
        t, s = logits.shape[-2:]
        causal = np.tri(t, s, 0, dtype=bool)
        allowed = causal if allowed is None else ops.logical_and(allowed, causal)
    if allowed is not None:
        logits = ops.where(allowed, logits, ops.full_like(logits, float(np.finfo(np.float32).min) / 2))
    weights = ops.softmax(logits, axis=-1)
    return einsum("bnts,bsnh->btnh", weights, value)
