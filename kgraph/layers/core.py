"""Core layers: InputLayer/Input, Dense, Activation, Identity, Flatten, Reshape, Dropout."""

from __future__ import annotations

import numpy as np

from kgraph import activations, constraints, initializers, ops, regularizers
from kgraph import random as krandom
from kgraph.ir import SymbolicTensor
from kgraph.ir.tensor import current_graph
from kgraph.ir.variable import standardize_dtype
from kgraph.layers.layer import CallNode, InputSpec, Layer, keras_compatible_config, shape_from_config


class InputLayer(Layer):
    """The entry of a functional model: owns the symbolic tensor that Input() returns."""

    def __init__(self, shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None,
                 input_tensor=None, optional=False, name=None, **kwargs):
        if "input_shape" in kwargs:
            shape = kwargs.pop("input_shape")
        if "batch_input_shape" in kwargs:
            batch_shape = kwargs.pop("batch_input_shape")
        super().__init__(name=name, dtype=dtype, **kwargs)
        if batch_shape is None:
            if shape is None:
                raise ValueError("You must pass a `shape` argument to Input/InputLayer")
            batch_shape = (batch_size,) + tuple(shape)
        self.batch_shape = tuple(None if d is None else int(d) for d in batch_shape)
        self._dtype = standardize_dtype(dtype)
        self.sparse = bool(sparse)
        graph = current_graph()
        placeholder = graph.add_placeholder(self.batch_shape, self._dtype, self.name)
        tensor = SymbolicTensor(graph, placeholder.id, name=self.name)
        tensor._keras_history = (self, 0, 0)
        self._inbound_nodes.append(CallNode(self, (), {}, tensor))
        self.output_tensor = tensor
        self.built = True

    @property
    def dtype(self):
        return self._dtype

    def get_config(self):
        return {"batch_shape": self.batch_shape, "dtype": self._dtype, "sparse": self.sparse,
                "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = keras_compatible_config(cls, config)
        config.pop("ragged", None)
        if config.get("batch_shape") is not None:
            config["batch_shape"] = shape_from_config(config["batch_shape"])
        return cls(**config)


def Input(shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, name=None,
          tensor=None, optional=False):
    """A symbolic tensor that starts a functional model (keras.Input)."""
    layer = InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, sparse=sparse,
                       batch_shape=batch_shape, name=name, optional=optional)
    return layer.output_tensor


class Dense(Layer):
    """`activation(inputs @ kernel + bias)` on the last axis."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 lora_rank=None, **kwargs):
        super().__init__(activity_regularizer=regularizers.get(activity_regularizer), **kwargs)
        if not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f'Layer "{self.name}": units must be a positive integer, got {units!r}')
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.input_spec = InputSpec(min_ndim=2)
        self.supports_masking = True

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f'Layer "{self.name}": the last dimension of the input must be known, '
                             f"got input shape {input_shape}")
        self.kernel = self.add_weight(shape=(input_dim, self.units), initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint, name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer=self.bias_initializer,
                                    regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint, name="bias") if self.use_bias else None
        self.input_spec = InputSpec(min_ndim=2, axes={-1: input_dim})
        self.built = True

    def call(self, inputs):
        x = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        return self.activation(x) if self.activation is not None else x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units, "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
        })
        return config


class Activation(Layer):
    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self.supports_masking = True

    def call(self, inputs):
        return self.activation(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "activation": activations.serialize(self.activation)}


class Identity(Layer):
    def call(self, inputs):
        return inputs


class Flatten(Layer):
    """Flattens every axis but the batch axis."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format or "channels_last"

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs)
        if self.data_format == "channels_first" and len(x.shape) > 2:
            x = ops.transpose(x, (0,) + tuple(range(2, len(x.shape))) + (1,))
        rest = x.shape[1:]
        if any(d is None for d in rest):
            raise ValueError(f'Layer "{self.name}": Flatten needs the non-batch dimensions to be known, '
                             f"got input shape {x.shape}")
        return ops.reshape(x, (-1 if x.shape[0] is None else x.shape[0], int(np.prod(rest))))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], int(np.prod(input_shape[1:])))

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


class Reshape(Layer):
    """Reshapes the non-batch axes to `target_shape` (one entry may be -1)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)

    def compute_output_shape(self, input_shape):
        target = list(self.target_shape)
        rest = input_shape[1:]
        if -1 in target:
            known = int(np.prod([d for d in target if d != -1]))
            if any(d is None for d in rest):
                target[target.index(-1)] = None
            else:
                total = int(np.prod(rest))
                if known == 0 or total % known:
                    raise ValueError(f'Layer "{self.name}": cannot reshape input of shape {input_shape} '
                                     f"to target shape {self.target_shape}")
                target[target.index(-1)] = total // known
        elif None not in rest and int(np.prod(rest)) != int(np.prod(target)):
            raise ValueError(f'Layer "{self.name}": total size of the input {input_shape} does not '
                             f"match the target shape {self.target_shape}")
        return (input_shape[0],) + tuple(target)

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs)
        shape = self.compute_output_shape(tuple(x.shape))
        batch = -1 if x.shape[0] is None else x.shape[0]
        return ops.reshape(x, (batch,) + tuple(-1 if d is None else d for d in shape[1:]))

    def get_config(self):
        return {**super().get_config(), "target_shape": self.target_shape}


class Dropout(Layer):
    """Randomly zeroes a fraction `rate` of the inputs while training, scaling the rest."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate <= 1:
            raise ValueError(f'Layer "{self.name}": the dropout rate must be in [0, 1], got {rate}')
        self.rate = float(rate)
        self.noise_shape = noise_shape
        self.seed = seed
        self.seed_generator = krandom.SeedGenerator(seed) if rate > 0 else None
        self.supports_masking = True
        self.built = True

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            return krandom.dropout(inputs, self.rate, noise_shape=self.noise_shape, seed=self.seed_generator)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "noise_shape": self.noise_shape, "seed": self.seed}
