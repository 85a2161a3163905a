"""EinsumDense: a dense layer whose contraction is an einsum equation (Keras 3.15's arguments,
weight names and shapes, so Keras-written weights load unchanged)."""

from __future__ import annotations

import re

import numpy as np

from kgraph import activations, constraints, initializers, ops, regularizers
from kgraph.initializers.initializers import VarianceScaling
from kgraph.layers.layer import InputSpec, Layer


def analyze_einsum_string(equation, bias_axes, input_shape, output_shape):
    """(kernel_shape, bias_shape, full_output_shape, kernel input axes, kernel output axes) of an
    EinsumDense equation "[X],[Y]->[Z]", "...[X],[Y]->...[Z]" or "[X]...,[Y]->[Z]..." (Keras's rules)."""
    replaced = equation.replace("...", "0")
    for pattern, left_elided in (("([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)$", False),
                                 ("0([a-zA-Z]+),([a-zA-Z]+)->0([a-zA-Z]+)$", True),
                                 ("([a-zA-Z]{2,})0,([a-zA-Z]+)->([a-zA-Z]+)0$", False)):
        match = re.match(pattern, replaced)
        if match:
            return _analyze_split(*match.groups(), bias_axes, tuple(input_shape), output_shape, left_elided)
    raise ValueError(f"Invalid einsum equation '{equation}'. Equations must be in the form "
                     "[X],[Y]->[Z], ...[X],[Y]->...[Z], or [X]...,[Y]->[Z]....")


def _analyze_split(input_spec, weight_spec, output_spec, bias_axes, input_shape, output_shape, left_elided):
    elided = len(input_shape) - len(input_spec)
    output_shape = [output_shape] if isinstance(output_shape, int) else list(output_shape)
    output_shape.insert(0, input_shape[0])
    if elided > 0 and left_elided:
        for i in range(1, elided):
            output_shape.insert(1, input_shape[i])
    elif elided > 0:
        output_shape.extend(input_shape[len(input_shape) - elided:])
    if left_elided:
        input_dim = {dim: i + elided - len(input_shape) for i, dim in enumerate(input_spec)}
        output_dim = {dim: i + elided for i, dim in enumerate(output_spec)}
    else:
        input_dim = {dim: i for i, dim in enumerate(input_spec)}
        output_dim = {dim: i for i, dim in enumerate(output_spec)}
    for dim in input_spec:
        if dim in output_dim:
            given, expected = output_shape[output_dim[dim]], input_shape[input_dim[dim]]
            if given is not None and given != expected:
                raise ValueError(f"Input shape and output shape do not match at shared dimension '{dim}'. "
                                 f"Input shape is {expected}, and output shape is {given}.")
    for dim in output_spec:
        if dim not in input_spec and dim not in weight_spec:
            raise ValueError(f"Dimension '{dim}' was specified in the output '{output_spec}' but has no "
                             f"corresponding dim in the input spec '{input_spec}' or weight spec '{weight_spec}'")
    kernel_shape, input_axes, output_axes = [], [], []
    for i, dim in enumerate(weight_spec):
        if dim in output_dim:
            kernel_shape.append(output_shape[output_dim[dim]])
            output_axes.append(i)
        elif dim in input_dim:
            kernel_shape.append(input_shape[input_dim[dim]])
            input_axes.append(i)
        else:
            raise ValueError(f"Weight dimension '{dim}' did not have a match in either the input spec "
                             f"'{input_spec}' or the output spec '{output_spec}'. For this layer, the weight "
                             "must be fully specified.")
    bias_shape = None
    if bias_axes is not None:
        offset = elided if left_elided else 0
        sizes = {char: output_shape[i + offset] for i, char in enumerate(output_spec)}
        for char in bias_axes:
            if char not in output_spec:
                raise ValueError(f"Bias dimension '{char}' was requested, but is not part of the output "
                                 f"spec '{output_spec}'")
        first = min(output_spec.find(char) for char in bias_axes)
        bias_shape = [sizes[char] if char in bias_axes else 1 for char in output_spec[first:]]
        if not left_elided:
            bias_shape += [1] * max(elided, 0)
    return kernel_shape, bias_shape, output_shape, input_axes, output_axes


class _FanAwareInitializer:
    """A VarianceScaling initializer whose fans are the kernel's input and output axes (as Keras
    passes input_axes/output_axes): the draws are i.i.d., so drawing a (fan_in, fan_out) matrix
    and reshaping it gives that distribution."""

    def __init__(self, initializer, fan_in, fan_out):
        self.initializer, self.fans = initializer, (fan_in, fan_out)

    def __call__(self, shape, dtype=None):
        return np.reshape(self.initializer(self.fans, dtype=dtype), shape)


class EinsumDense(Layer):
    """`activation(einsum(equation, inputs, kernel) + bias)`: the kernel's shape comes from the
    equation and `output_shape` (the output's shape without the batch axis; None where the
    input gives it); `bias_axes` names the output axes the bias spans."""

    def __init__(self, equation, output_shape, activation=None, bias_axes=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, lora_rank=None,
                 lora_alpha=None, **kwargs):
        super().__init__(activity_regularizer=regularizers.get(activity_regularizer), **kwargs)
        self.equation = equation
        self.partial_output_shape = (output_shape,) if isinstance(output_shape, int) else tuple(output_shape)
        self.bias_axes = bias_axes
        self.activation = activations.get(activation)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha if lora_alpha is not None else lora_rank
        self.lora_enabled = False

    def build(self, input_shape):
        kernel_shape, bias_shape, _, input_axes, output_axes = analyze_einsum_string(
            self.equation, self.bias_axes, input_shape, self.partial_output_shape)
        if any(d is None for d in kernel_shape):
            raise ValueError(f'Layer "{self.name}": the kernel shape {tuple(kernel_shape)} of equation '
                             f"{self.equation!r} has unknown dimensions (input shape {tuple(input_shape)}, "
                             f"output_shape {self.partial_output_shape})")
        self.input_spec = InputSpec(ndim=len(input_shape))
        initializer = self.kernel_initializer
        if isinstance(initializer, VarianceScaling):
            initializer = _FanAwareInitializer(initializer, int(np.prod([kernel_shape[i] for i in input_axes])),
                                               int(np.prod([kernel_shape[i] for i in output_axes])))
        self._kernel = self.add_weight(shape=tuple(kernel_shape), initializer=initializer,
                                       regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
                                       name="kernel")
        self.bias = self.add_weight(shape=tuple(bias_shape), initializer=self.bias_initializer,
                                    regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                                    name="bias") if bias_shape is not None else None
        self.built = True
        if self.lora_rank:
            self.enable_lora(self.lora_rank, lora_alpha=self.lora_alpha)

    @property
    def kernel(self):
        """The kernel, with the low-rank update `lora_alpha / lora_rank * a @ b` when LoRA is on."""
        if not self.built:
            raise AttributeError("You must build the layer before accessing `kernel`.")
        if not self.lora_enabled:
            return self._kernel
        return ops.add(self._kernel, ops.multiply(ops.matmul(self.lora_kernel_a, self.lora_kernel_b),
                                                  self.lora_alpha / self.lora_rank))

    def enable_lora(self, rank, lora_alpha=None, a_initializer="he_uniform", b_initializer="zeros"):
        """Freezes the kernel and adds trainable low-rank factors a (kernel.shape[:-1] + (rank,)) and
        b (rank, kernel.shape[-1]), as Keras's `enable_lora`."""
        if self.kernel_constraint:
            raise ValueError(f'Layer "{self.name}": Lora is incompatible with kernel constraints. In order to '
                             "enable lora on this layer, remove the `kernel_constraint` argument.")
        if not self.built:
            raise ValueError(f'Layer "{self.name}": Cannot enable lora on a layer that isn\'t yet built.')
        if self.lora_enabled:
            raise ValueError(f'Layer "{self.name}": lora is already enabled. This can only be done once per layer.')
        shape = tuple(self._kernel.shape)
        self.lora_kernel_a = self.add_weight(shape=shape[:-1] + (rank,), initializer=a_initializer,
                                             regularizer=self.kernel_regularizer, name="lora_kernel_a")
        self.lora_kernel_b = self.add_weight(shape=(rank, shape[-1]), initializer=b_initializer,
                                             regularizer=self.kernel_regularizer, name="lora_kernel_b")
        self._kernel.trainable = False
        self.lora_enabled = True
        self.lora_rank = rank
        self.lora_alpha = lora_alpha if lora_alpha is not None else rank

    def call(self, inputs):
        x = ops.einsum(self.equation, inputs, self.kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        return self.activation(x) if self.activation is not None else x

    def compute_output_shape(self, input_shape):
        return tuple(analyze_einsum_string(self.equation, self.bias_axes, input_shape, self.partial_output_shape)[2])

    def get_config(self):
        config = {**super().get_config(), "output_shape": self.partial_output_shape, "equation": self.equation,
                  "activation": activations.serialize(self.activation), "bias_axes": self.bias_axes,
                  "kernel_initializer": initializers.serialize(self.kernel_initializer),
                  "bias_initializer": initializers.serialize(self.bias_initializer),
                  "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                  "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                  "activity_regularizer": regularizers.serialize(self.activity_regularizer),
                  "kernel_constraint": constraints.serialize(self.kernel_constraint),
                  "bias_constraint": constraints.serialize(self.bias_constraint),
                  "quantization_config": None}
        if self.lora_rank:
            config["lora_rank"] = self.lora_rank
            config["lora_alpha"] = self.lora_alpha
        return config
