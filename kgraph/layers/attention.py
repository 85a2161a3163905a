"""Attention layers: Attention (dot-product), AdditiveAttention, MultiHeadAttention,
GroupedQueryAttention (Keras's GroupQueryAttention), and Dot.

Each is a composition of registered ops (matmul, softmax, reshape, transpose), so it
compiles, differentiates and exports like any other layer. Weights follow Keras 3's
layout (MultiHeadAttention's projections hold kernels of shape (dim, heads, head_dim)),
so Keras weights load unchanged.
"""

from __future__ import annotations

import math

from kgraph import constraints, initializers, ops, regularizers
from kgraph import random as krandom
from kgraph.layers.einsum_dense import EinsumDense
from kgraph.layers.layer import Layer
from kgraph.ops import attention as fused_attention

_MASK_VALUE = -1e9


def _masked_softmax(scores, mask):
    if mask is not None:
        scores = ops.add(scores, ops.multiply(ops.subtract(1.0, ops.cast(mask, scores.dtype)), _MASK_VALUE))
    return ops.softmax(scores, axis=-1)


def _causal_mask(query_length, key_length):
    import numpy as np

    return np.tril(np.ones((query_length, key_length), dtype=bool))


class Attention(Layer):
    """Dot-product attention (Luong): softmax(scale * q k^T) v, with optional masks."""

    def __init__(self, use_scale=False, score_mode="dot", dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if score_mode not in ("dot", "concat"):
            raise ValueError(f"Invalid value for argument score_mode. Expected one of {{'dot', 'concat'}}. "
                             f"Received: score_mode={score_mode}")
        self.use_scale = use_scale
        self.score_mode = score_mode
        self.dropout = float(dropout)
        self.seed = seed
        self.seed_generator = krandom.SeedGenerator(seed) if dropout > 0 else None
        self.supports_masking = True

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale") if self.use_scale else None
        self.concat_score_weight = self.add_weight(shape=(), initializer="ones", name="concat_score_weight") \
            if self.score_mode == "concat" else None
        self.built = True

    def _calculate_scores(self, query, key):
        if self.score_mode == "dot":
            scores = ops.matmul(query, ops.swapaxes(key, -1, -2))
            if self.scale is not None:
                scores = ops.multiply(scores, self.scale)
            return scores
        q = ops.expand_dims(query, -2)
        k = ops.expand_dims(key, -3)
        if self.scale is not None:
            return ops.multiply(self.concat_score_weight,
                                ops.sum(ops.tanh(ops.multiply(self.scale, ops.add(q, k))), axis=-1))
        return ops.multiply(self.concat_score_weight, ops.sum(ops.tanh(ops.add(q, k)), axis=-1))

    def call(self, inputs, mask=None, training=False, return_attention_scores=False, use_causal_mask=False):
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) > 2 else value
        scores = self._calculate_scores(query, key)
        value_mask = mask[1] if isinstance(mask, (list, tuple)) and len(mask) > 1 else None
        combined = None
        if value_mask is not None:
            combined = ops.expand_dims(value_mask, -2)
        if use_causal_mask:
            causal = _causal_mask(scores.shape[-2], scores.shape[-1])
            combined = causal if combined is None else ops.logical_and(combined, causal)
        weights = _masked_softmax(scores, combined)
        if training and self.dropout > 0:
            weights = krandom.dropout(weights, self.dropout, seed=self.seed_generator)
        result = ops.matmul(weights, value)
        return (result, weights) if return_attention_scores else result

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (input_shape[1][-1],)

    def get_config(self):
        return {**super().get_config(), "use_scale": self.use_scale, "score_mode": self.score_mode,
                "dropout": self.dropout}


class AdditiveAttention(Attention):
    """Bahdanau attention: softmax(sum(scale * tanh(q + k))) v."""

    def __init__(self, use_scale=True, dropout=0.0, **kwargs):
        super().__init__(use_scale=use_scale, dropout=dropout, **kwargs)

    def build(self, input_shape):
        dim = input_shape[1][-1] if isinstance(input_shape, (list, tuple)) else input_shape[-1]
        self.scale = self.add_weight(shape=(dim,), initializer="glorot_uniform", name="scale") \
            if self.use_scale else None
        self.concat_score_weight = None
        self.built = True

    def _calculate_scores(self, query, key):
        q = ops.expand_dims(query, -2)
        k = ops.expand_dims(key, -3)
        hidden = ops.tanh(ops.add(q, k))
        if self.scale is not None:
            hidden = ops.multiply(hidden, self.scale)
        return ops.sum(hidden, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.pop("score_mode", None)
        return config


class _HeadProjection(Layer):
    """Keras's EinsumDense for attention: (..., dim) -> (..., heads, head_dim) with a kernel of
    shape (dim, heads, head_dim), or the reverse projection back to `units`."""

    def __init__(self, kernel_shape, bias_shape, output_rank_change, kernel_initializer, bias_initializer,
                 kernel_regularizer=None, bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_shape = tuple(kernel_shape)
        self.bias_shape = tuple(bias_shape) if bias_shape is not None else None
        self.output_rank_change = output_rank_change
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=self.kernel_shape, initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, name="kernel")
        self.bias = self.add_weight(shape=self.bias_shape, initializer=self.bias_initializer,
                                    regularizer=self.bias_regularizer, name="bias") if self.bias_shape else None
        self.built = True

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs)
        if self.output_rank_change > 0:  # (B, T, dim) @ (dim, H*D) -> (B, T, H, D)
            dim, heads, head_dim = self.kernel_shape
            y = ops.matmul(x, ops.reshape(self.kernel, (dim, heads * head_dim)))
            y = ops.reshape(y, (-1,) + tuple(x.shape[1:-1]) + (heads, head_dim))
        else:  # (B, T, H, D) @ (H*D, units) -> (B, T, units)
            heads, head_dim, units = self.kernel_shape
            flat = ops.reshape(x, (-1,) + tuple(x.shape[1:-2]) + (heads * head_dim,))
            y = ops.matmul(flat, ops.reshape(self.kernel, (heads * head_dim, units)))
        if self.bias is not None:
            y = ops.add(y, self.bias)
        return y


def _call_building_from_shapes(self, query, value=None, key=None, **kwargs):
    """Layer.__call__ for the attention layers whose build takes the query, value and key shapes."""
    if not self.built:
        self.build(tuple(query.shape), tuple(value.shape) if value is not None else None,
                   tuple(key.shape) if key is not None else None)
    return Layer.__call__(self, query, value=value, key=key, **kwargs)


class MultiHeadAttention(Layer):
    """Keras 3's MultiHeadAttention (attention over axis 1; masks, causal masks, dropout)."""

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, output_shape=None,
                 attention_axes=None, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, seed=None, sliding_window=None, use_gate=False,
                 **kwargs):
        super().__init__(activity_regularizer=regularizers.get(activity_regularizer), **kwargs)
        if sliding_window is not None or use_gate:
            raise NotImplementedError(f'Layer "{self.name}": sliding_window and use_gate (Keras 3.15 options) '
                                      "are not supported yet; leave them at None and False")
        if attention_axes not in (None, 1, (1,), [1]):
            raise NotImplementedError(f'Layer "{self.name}": attention_axes other than the sequence axis '
                                      "are not supported yet")
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim) if value_dim else self.key_dim
        self.dropout = float(dropout)
        self.use_bias = use_bias
        self._output_shape = output_shape
        self.attention_axes = attention_axes
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.seed = seed
        self.seed_generator = krandom.SeedGenerator(seed) if dropout > 0 else None
        self.supports_masking = True

    def _projection(self, name, kernel_shape, bias_shape, rank_change):
        return _HeadProjection(kernel_shape, bias_shape if self.use_bias else None, rank_change,
                               self.kernel_initializer, self.bias_initializer, self.kernel_regularizer,
                               self.bias_regularizer, name=name)

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = value_shape or query_shape
        key_shape = key_shape or value_shape
        heads = self.num_heads
        self._query_dense = self._projection("query", (query_shape[-1], heads, self.key_dim),
                                             (heads, self.key_dim), 1)
        self._key_dense = self._projection("key", (key_shape[-1], heads, self.key_dim), (heads, self.key_dim), 1)
        self._value_dense = self._projection("value", (value_shape[-1], heads, self.value_dim),
                                             (heads, self.value_dim), 1)
        units = self._output_shape if self._output_shape is not None else query_shape[-1]
        units = units[-1] if isinstance(units, (list, tuple)) else units
        self._output_dense = self._projection("attention_output", (heads, self.value_dim, units), (units,), -1)
        for layer, shape in ((self._query_dense, query_shape), (self._key_dense, key_shape),
                             (self._value_dense, value_shape)):
            layer.build(shape)
        self._output_dense.build(tuple(query_shape[:-1]) + (heads, self.value_dim))
        self.built = True

    # Public names of the projections, as Keras 3 has them: the weights file stores each under
    # its public name ("query_dense/vars"), which a walk of the attributes meets first.
    query_dense = property(lambda self: self._query_dense)
    key_dense = property(lambda self: self._key_dense)
    value_dense = property(lambda self: self._value_dense)
    output_dense = property(lambda self: self._output_dense)

    def _maybe_build(self, inputs):
        if not self.built:
            shape = tuple(inputs.shape) if hasattr(inputs, "shape") else tuple(inputs[0].shape)
            self.build(shape)

    __call__ = _call_building_from_shapes

    def call(self, query, value=None, key=None, query_mask=None, value_mask=None, key_mask=None,
             attention_mask=None, return_attention_scores=False, training=None, use_causal_mask=False):
        value = query if value is None else value
        key = value if key is None else key
        q = self._query_dense(query)  # (B, T, H, K)
        k = self._key_dense(key)  # (B, S, H, K)
        v = self._value_dense(value)  # (B, S, H, V)
        if fused_attention.use_fused(q, k, dropout=bool(training) and self.dropout > 0,
                                     scores=return_attention_scores, training=training is not False):
            mask = self._combined_mask(query, value, query_mask, value_mask, key_mask, attention_mask, False)
            if mask is not None:
                mask = ops.expand_dims(mask, 1)  # (B|1, 1, T, S): broadcast over heads
            context = fused_attention.attention(q, k, v, mask, scale=1.0 / math.sqrt(float(self.key_dim)),
                                                causal=use_causal_mask)
            return self._output_dense(context)
        q = ops.multiply(q, 1.0 / math.sqrt(float(self.key_dim)))
        q = ops.transpose(q, (0, 2, 1, 3))  # (B, H, T, K)
        k = ops.transpose(k, (0, 2, 3, 1))  # (B, H, K, S)
        v = ops.transpose(v, (0, 2, 1, 3))  # (B, H, S, V)
        scores = ops.matmul(q, k)  # (B, H, T, S)
        mask = self._combined_mask(query, value, query_mask, value_mask, key_mask, attention_mask,
                                   use_causal_mask)
        if mask is not None:
            mask = ops.expand_dims(mask, 1)  # broadcast over heads
        weights = _masked_softmax(scores, mask)
        dropped = weights
        if training and self.dropout > 0:
            dropped = krandom.dropout(weights, self.dropout, seed=self.seed_generator)
        context = ops.transpose(ops.matmul(dropped, v), (0, 2, 1, 3))  # (B, T, H, V)
        output = self._output_dense(context)
        return (output, weights) if return_attention_scores else output

    @staticmethod
    def _combined_mask(query, value, query_mask, value_mask, key_mask, attention_mask, use_causal_mask):
        mask = None
        if query_mask is not None:
            mask = ops.expand_dims(ops.cast(query_mask, "bool"), -1)
        if value_mask is not None or key_mask is not None:
            key_side = value_mask if key_mask is None else key_mask
            key_side = ops.expand_dims(ops.cast(key_side, "bool"), -2)
            mask = key_side if mask is None else ops.logical_and(mask, key_side)
        if use_causal_mask:
            causal = _causal_mask(query.shape[1], value.shape[1])[None]  # (1, T, S)
            mask = causal if mask is None else ops.logical_and(mask, causal)
        if attention_mask is not None:
            attention_mask = ops.cast(attention_mask, "bool")
            mask = attention_mask if mask is None else ops.logical_and(mask, attention_mask)
        return mask

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        units = self._output_shape if self._output_shape is not None else query_shape[-1]
        return tuple(query_shape[:-1]) + ((units,) if isinstance(units, int) else tuple(units))

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "value_dim": self.value_dim, "dropout": self.dropout, "use_bias": self.use_bias,
                "output_shape": self._output_shape, "attention_axes": self.attention_axes,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None,
                "seed": self.seed, "use_gate": False, "sliding_window": None}


class Dot(Layer):
    """Dot product of two tensors along `axes` (with optional L2 normalization)."""

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        self.axes = axes
        self.normalize = normalize

    def call(self, inputs):
        a, b = ops.convert_to_tensor(inputs[0]), ops.convert_to_tensor(inputs[1])
        axes = self.axes if isinstance(self.axes, (list, tuple)) else (self.axes, self.axes)
        axes = [axis % len(x.shape) for axis, x in zip(axes, (a, b))]
        if self.normalize:
            a = ops.multiply(a, ops.rsqrt(ops.maximum(ops.sum(ops.square(a), axis=axes[0], keepdims=True), 1e-12)))
            b = ops.multiply(b, ops.rsqrt(ops.maximum(ops.sum(ops.square(b), axis=axes[1], keepdims=True), 1e-12)))
        if len(a.shape) != 3 and len(a.shape) != 2 or len(a.shape) != len(b.shape):
            raise NotImplementedError(f'Layer "{self.name}": Dot supports two inputs of rank 2 or 3')
        if len(a.shape) == 2:
            return ops.sum(ops.multiply(a, b), axis=1, keepdims=True)
        a = a if axes[0] == 2 else ops.swapaxes(a, 1, 2)
        b = b if axes[1] == 1 else ops.swapaxes(b, 1, 2)
        return ops.matmul(a, b)

    def get_config(self):
        return {**super().get_config(), "axes": self.axes, "normalize": self.normalize}


def _where_masked_softmax(scores, mask):
    """Keras's Softmax layer with a mask: masked scores become -1e9 before the softmax and 0 after
    (so a fully masked row gives zeros, not a uniform row)."""
    if mask is None:
        return ops.softmax(scores, axis=-1)
    mask = ops.cast(mask, "bool")
    weights = ops.softmax(ops.where(mask, scores, ops.full_like(scores, _MASK_VALUE)), axis=-1)
    return ops.where(mask, weights, ops.zeros_like(weights))


class GroupedQueryAttention(Layer):
    """Keras 3's GroupQueryAttention: `num_query_heads` query heads share `num_key_value_heads`
    key/value heads (each repeated num_query_heads // num_key_value_heads times); the projections
    are EinsumDense layers named query, key, value and attention_output, as in Keras."""

    def __init__(self, head_dim, num_query_heads, num_key_value_heads, dropout=0.0, use_bias=True,
                 sliding_window=None, flash_attention=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, use_gate=False, seed=None, **kwargs):
        super().__init__(activity_regularizer=regularizers.get(activity_regularizer), **kwargs)
        if num_query_heads % num_key_value_heads != 0:
            raise ValueError(f'Layer "{self.name}": `num_query_heads` must be divisible by `num_key_value_heads`. '
                             f"Received: num_query_heads={num_query_heads}, "
                             f"num_key_value_heads={num_key_value_heads}")
        if sliding_window is not None or use_gate:
            raise NotImplementedError(f'Layer "{self.name}": sliding_window and use_gate (Keras 3.15 options) '
                                      "are not supported yet; leave them at None and False")
        if flash_attention and dropout > 0.0:
            raise ValueError("Dropout is not supported when flash attention is enabled. "
                             "Please set dropout to 0.0 to use flash attention.")
        self.supports_masking = True
        self.head_dim = int(head_dim)
        self.num_query_heads = int(num_query_heads)
        self.num_key_value_heads = int(num_key_value_heads)
        self.num_repeats = self.num_query_heads // self.num_key_value_heads
        self.dropout = float(dropout)
        self.use_bias = use_bias
        self.use_gate = use_gate
        self.sliding_window = sliding_window
        # Accepted for Keras compatibility; the attention is computed the same way either way.
        self._flash_attention = flash_attention
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.seed = seed
        self.seed_generator = krandom.SeedGenerator(seed) if self.dropout > 0 else None
        self._inverse_sqrt_head_dim = 1.0 / math.sqrt(float(self.head_dim))

    def _einsum_dense(self, equation, output_shape, bias_axes, name):
        return EinsumDense(equation, output_shape=output_shape, bias_axes=bias_axes if self.use_bias else None,
                           name=name, kernel_initializer=initializers.get(initializers.serialize(
                               self.kernel_initializer)),
                           bias_initializer=initializers.get(initializers.serialize(self.bias_initializer)),
                           kernel_regularizer=self.kernel_regularizer, bias_regularizer=self.bias_regularizer,
                           kernel_constraint=self.kernel_constraint, bias_constraint=self.bias_constraint,
                           dtype=self.dtype_policy)

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        self.feature_dim = query_shape[-1]
        q_heads, kv_heads, depth = self.num_query_heads, self.num_key_value_heads, self.head_dim
        self._query_dense = self._einsum_dense("bqm,muh->bquh", (None, q_heads, depth), "uh", "query")
        self._query_dense.build(tuple(query_shape))
        self._key_dense = self._einsum_dense("bkm,mvh->bkvh", (None, kv_heads, depth), "vh", "key")
        self._key_dense.build(tuple(key_shape))
        self._value_dense = self._einsum_dense("bkm,mvh->bkvh", (None, kv_heads, depth), "vh", "value")
        self._value_dense.build(tuple(value_shape))
        self._output_dense = self._einsum_dense("bquh,uhm->bqm", (None, self.feature_dim), "m", "attention_output")
        self._output_dense.build((None, None, q_heads, depth))
        self.built = True

    __call__ = _call_building_from_shapes

    def call(self, query, value=None, key=None, query_mask=None, value_mask=None, key_mask=None,
             attention_mask=None, return_attention_scores=False, training=None, use_causal_mask=False):
        value = query if value is None else value
        key = value if key is None else key
        q = self._query_dense(query)  # (B, T, Hq, D)
        k, v = self._key_dense(key), self._value_dense(value)  # (B, S, Hkv, D)
        if fused_attention.use_fused(q, k, dropout=bool(training) and self.dropout > 0,
                                     scores=return_attention_scores, training=training is not False):
            mask = MultiHeadAttention._combined_mask(query, value, query_mask, value_mask, key_mask,
                                                     attention_mask, False)
            if mask is not None and len(mask.shape) < 4:
                mask = ops.expand_dims(mask, -3)  # broadcast over heads
            context = fused_attention.attention(q, k, v, mask,
                                                scale=self._inverse_sqrt_head_dim, causal=use_causal_mask,
                                                empty_rows="zero")
            return self._output_dense(context)
        mask = MultiHeadAttention._combined_mask(query, value, query_mask, value_mask, key_mask, attention_mask,
                                                 use_causal_mask)
        q = ops.multiply(q, self._inverse_sqrt_head_dim)
        k = ops.repeat(k, self.num_repeats, axis=2)  # (B, S, Hq, D)
        v = ops.repeat(v, self.num_repeats, axis=2)
        scores = ops.einsum("bquh,bkuh->buqk", q, k)
        if mask is not None and len(mask.shape) < 4:
            mask = ops.expand_dims(mask, -3)  # broadcast over heads
        weights = _where_masked_softmax(scores, mask)
        dropped = weights
        if training and self.dropout > 0:
            dropped = krandom.dropout(weights, self.dropout, seed=self.seed_generator)
        output = self._output_dense(ops.einsum("buqk,bkuh->bquh", dropped, v))
        return (output, weights) if return_attention_scores else output

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        return tuple(query_shape)

    def get_config(self):
        return {**super().get_config(), "head_dim": self.head_dim, "num_query_heads": self.num_query_heads,
                "num_key_value_heads": self.num_key_value_heads, "use_bias": self.use_bias,
                "use_gate": self.use_gate, "sliding_window": self.sliding_window, "dropout": self.dropout,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint), "seed": self.seed}


GroupQueryAttention = GroupedQueryAttention
