"""Normalization layers: BatchNormalization, LayerNormalization, GroupNormalization,
UnitNormalization, RMSNormalization (Keras 3 formulas, weights in Keras's order)."""

from __future__ import annotations

from kgraph import initializers, ops, regularizers
from kgraph.layers.layer import InputSpec, Layer


def _axes(axis, rank):
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % rank for a in axes))


def _param_shape(input_shape, axes):
    return tuple(input_shape[a] for a in axes)


def _affine_config(layer):
    """The config entries of a layer's gamma (scale) and beta (offset) weights."""
    return {"beta_initializer": initializers.serialize(layer.beta_initializer),
            "gamma_initializer": initializers.serialize(layer.gamma_initializer),
            "beta_regularizer": regularizers.serialize(layer.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(layer.gamma_regularizer),
            "beta_constraint": None, "gamma_constraint": None}


def _broadcast_shape(input_shape, axes):
    return tuple(input_shape[a] if a in axes else 1 for a in range(len(input_shape)))


class BatchNormalization(Layer):
    """Normalize with the batch's statistics while training (updating moving averages as
    state of the compiled step) and with the moving averages at inference."""

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, synchronized=False, renorm=False,
                 renorm_clipping=None, renorm_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        if renorm:
            raise NotImplementedError(f'Layer "{self.name}": batch renormalization (renorm=True) is not '
                                      "supported by kgraph; use renorm=False")
        self.renorm_clipping = renorm_clipping
        self.renorm_momentum = float(renorm_momentum)
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.synchronized = synchronized
        self.supports_masking = True

    def build(self, input_shape):
        rank = len(input_shape)
        axis = self.axis % rank
        dim = input_shape[axis]
        if dim is None:
            raise ValueError(f'Layer "{self.name}": axis {self.axis} of the input must be known, '
                             f"got input shape {input_shape}")
        shape = (dim,)
        self.gamma = self.add_weight(shape=shape, initializer=self.gamma_initializer,
                                     regularizer=self.gamma_regularizer, name="gamma") if self.scale else None
        self.beta = self.add_weight(shape=shape, initializer=self.beta_initializer,
                                    regularizer=self.beta_regularizer, name="beta") if self.center else None
        self.moving_mean = self.add_weight(shape=shape, initializer=self.moving_mean_initializer,
                                           trainable=False, name="moving_mean")
        self.moving_variance = self.add_weight(shape=shape, initializer=self.moving_variance_initializer,
                                               trainable=False, name="moving_variance")
        self.input_spec = InputSpec(ndim=rank, axes={axis: dim})
        self._reduction_axes = tuple(a for a in range(rank) if a != axis)
        self._stat_shape = tuple(dim if a == axis else 1 for a in range(rank))
        self.built = True

    def call(self, inputs, training=None, mask=None):
        x = ops.convert_to_tensor(inputs)
        compute_dtype = "float32" if x.dtype in ("float16", "bfloat16") else x.dtype
        x = ops.cast(x, compute_dtype)
        if training and self.trainable:
            mean = ops.mean(x, axis=self._reduction_axes, keepdims=True)
            variance = ops.mean(ops.square(ops.subtract(x, mean)), axis=self._reduction_axes, keepdims=True)
            flat_mean = ops.reshape(mean, (-1,))
            flat_variance = ops.reshape(variance, (-1,))
            self.moving_mean.assign(ops.add(ops.multiply(self.moving_mean, self.momentum),
                                            ops.multiply(flat_mean, 1.0 - self.momentum)))
            self.moving_variance.assign(ops.add(ops.multiply(self.moving_variance, self.momentum),
                                                ops.multiply(flat_variance, 1.0 - self.momentum)))
        else:
            mean = ops.reshape(self.moving_mean, self._stat_shape)
            variance = ops.reshape(self.moving_variance, self._stat_shape)
        inverse = ops.rsqrt(ops.add(variance, self.epsilon))
        if self.gamma is not None:
            inverse = ops.multiply(inverse, ops.reshape(self.gamma, self._stat_shape))
        outputs = ops.multiply(ops.subtract(x, mean), inverse)
        if self.beta is not None:
            outputs = ops.add(outputs, ops.reshape(self.beta, self._stat_shape))
        return ops.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_initializer": initializers.serialize(self.gamma_initializer),
                "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
                "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
                "beta_regularizer": regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
                "beta_constraint": None, "gamma_constraint": None, "synchronized": self.synchronized,
                "renorm": False, "renorm_clipping": self.renorm_clipping, "renorm_momentum": self.renorm_momentum}


class LayerNormalization(Layer):
    """Normalize each sample over `axis`: (x - mean) / sqrt(var + epsilon) * gamma + beta."""

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, rms_scaling=False,
                 beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.rms_scaling = rms_scaling
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        rank = len(input_shape)
        self._axes = _axes(self.axis, rank)
        shape = _param_shape(input_shape, self._axes)
        self._param_broadcast = _broadcast_shape(input_shape, self._axes)[1:]
        self.gamma = self.add_weight(shape=shape, initializer=self.gamma_initializer,
                                     regularizer=self.gamma_regularizer, name="gamma") if self.scale else None
        self.beta = self.add_weight(shape=shape, initializer=self.beta_initializer,
                                    regularizer=self.beta_regularizer, name="beta") if self.center else None
        self.built = True

    def _param(self, weight):
        return ops.reshape(weight, self._param_broadcast)

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs)
        if self.rms_scaling:
            variance = ops.mean(ops.square(x), axis=self._axes, keepdims=True)
            outputs = ops.multiply(x, ops.rsqrt(ops.add(variance, self.epsilon)))
            return ops.multiply(outputs, self._param(self.gamma)) if self.gamma is not None else outputs
        mean = ops.mean(x, axis=self._axes, keepdims=True)
        centered = ops.subtract(x, mean)
        variance = ops.mean(ops.square(centered), axis=self._axes, keepdims=True)
        inverse = ops.rsqrt(ops.add(variance, self.epsilon))
        if self.gamma is not None:
            inverse = ops.multiply(inverse, self._param(self.gamma))
        outputs = ops.multiply(centered, inverse)
        if self.beta is not None:
            outputs = ops.add(outputs, self._param(self.beta))
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, "rms_scaling": self.rms_scaling,
                **_affine_config(self)}


class RMSNormalization(Layer):
    """x * rsqrt(mean(x^2) + epsilon) * scale over `axis`."""

    def __init__(self, axis=-1, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self._axes = _axes(self.axis, len(input_shape))
        self.scale = self.add_weight(shape=_param_shape(input_shape, self._axes), initializer="ones",
                                     name="scale")
        self._param_broadcast = _broadcast_shape(input_shape, self._axes)[1:]
        self.built = True

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs)
        variance = ops.mean(ops.square(x), axis=self._axes, keepdims=True)
        return ops.multiply(ops.multiply(x, ops.rsqrt(ops.add(variance, self.epsilon))),
                            ops.reshape(self.scale, self._param_broadcast))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon}


class UnitNormalization(Layer):
    """Scale each sample to unit L2 norm over `axis`."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.supports_masking = True
        self.built = True

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs)
        square_sum = ops.sum(ops.square(x), axis=self.axis, keepdims=True)
        return ops.multiply(x, ops.rsqrt(ops.maximum(square_sum, 1e-12)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class GroupNormalization(Layer):
    """Normalize over groups of channels (and all other non-batch axes)."""

    def __init__(self, groups=32, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)
        self.axis = int(axis)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        rank = len(input_shape)
        axis = self.axis % rank
        channels = input_shape[axis]
        if channels is None or channels % self.groups:
            raise ValueError(f'Layer "{self.name}": the number of channels ({channels}) must be a multiple '
                             f"of the number of groups ({self.groups}). Input shape: {input_shape}")
        if axis != rank - 1:
            raise NotImplementedError(f'Layer "{self.name}": GroupNormalization supports axis=-1 only')
        self.gamma = self.add_weight(shape=(channels,), initializer=self.gamma_initializer,
                                     regularizer=self.gamma_regularizer, name="gamma") if self.scale else None
        self.beta = self.add_weight(shape=(channels,), initializer=self.beta_initializer,
                                    regularizer=self.beta_regularizer, name="beta") if self.center else None
        self.built = True

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs)
        shape = tuple(x.shape)
        channels = shape[-1]
        grouped_shape = (-1,) + shape[1:-1] + (self.groups, channels // self.groups)
        grouped = ops.reshape(x, grouped_shape)
        axes = tuple(range(1, len(grouped_shape) - 2)) + (len(grouped_shape) - 1,)
        mean = ops.mean(grouped, axis=axes, keepdims=True)
        centered = ops.subtract(grouped, mean)
        variance = ops.mean(ops.square(centered), axis=axes, keepdims=True)
        normalized = ops.reshape(ops.multiply(centered, ops.rsqrt(ops.add(variance, self.epsilon))),
                                 (-1,) + shape[1:])
        if self.gamma is not None:
            normalized = ops.multiply(normalized, self.gamma)
        if self.beta is not None:
            normalized = ops.add(normalized, self.beta)
        return normalized

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                **_affine_config(self)}
