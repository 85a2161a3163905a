"""Wrappers: the Wrapper base, TimeDistributed, Bidirectional and SpectralNormalization (Keras 3
names, arguments and configs)."""

from __future__ import annotations

import numpy as np

from kgraph import initializers, ops
from kgraph.layers.layer import Layer


def _copy_layer(layer, **overrides):
    """A new layer of the same class and config (weights not shared), with `overrides`."""
    config = layer.get_config()
    config.update(overrides)
    return type(layer).from_config(config)


def _reverse_time(x):
    return x[:, ::-1]


class Wrapper(Layer):
    """A layer holding another layer (`self.layer`), built on the same input shape; its config
    carries the wrapped layer's."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, Layer):
            raise ValueError(f'{type(self).__name__} "{self.name}": expected a Layer to wrap, got '
                             f"{type(layer).__name__}")
        self.layer = layer

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer._build_shapes_dict = {"input_shape": input_shape}
            self.layer.build(input_shape)
            self.layer.built = True
        self.built = True

    def get_config(self):
        from kgraph.layers import serialize

        return {**super().get_config(), "layer": serialize(self.layer)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from kgraph.layers import deserialize

        config = dict(config)
        layer = deserialize(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)


class TimeDistributed(Wrapper):
    """Applies `layer` to every timestep (axis 1) of its input, with the same weights.

    Layers that act on the last axis only (Dense, Activation, Dropout...) run once on the
    whole sequence; others run once per timestep (a static loop while tracing: the steps
    are independent, so the compiled graph has one copy of the layer's ops per step)."""

    LAST_AXIS_LAYERS = ("Dense", "Activation", "Dropout", "ReLU", "LeakyReLU", "ELU", "Softmax",
                        "LayerNormalization", "Identity")

    def __init__(self, layer, **kwargs):
        super().__init__(layer, **kwargs)
        self.supports_masking = True

    def _per_step_shape(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(f'TimeDistributed "{self.name}": the input must have rank >= 3 (batch, timesteps, ...), '
                             f"got shape {tuple(input_shape)}")
        return (input_shape[0],) + tuple(input_shape[2:])

    def build(self, input_shape):
        super().build(self._per_step_shape(tuple(input_shape)))

    def _acts_on_last_axis(self):
        return type(self.layer).__name__ in self.LAST_AXIS_LAYERS and (
            type(self.layer).__name__ != "LayerNormalization" or tuple(getattr(self.layer, "axis", (-1,))) in
            ((-1,), [-1]))

    def call(self, inputs, training=None, mask=None):
        x = ops.convert_to_tensor(inputs)
        if self._acts_on_last_axis():
            return self.layer(x, training=training)
        steps = x.shape[1]
        if steps is None:
            raise ValueError(f'TimeDistributed "{self.name}": the number of timesteps must be known to wrap '
                             f"{type(self.layer).__name__}, got input shape {x.shape}")
        outputs = [self.layer(x[:, t], training=training) for t in range(steps)]
        return ops.stack(outputs, axis=1)

    def compute_mask(self, inputs, mask=None):
        return mask

class Bidirectional(Layer):
    """Runs a recurrent layer forwards and a copy backwards over the sequence and merges them."""

    MERGE_MODES = ("sum", "mul", "ave", "concat", None)

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        super().__init__(**kwargs)
        from kgraph.layers.recurrent import RNN

        if not isinstance(layer, RNN):
            raise ValueError(f'Bidirectional "{self.name}": expected a recurrent layer (SimpleRNN, LSTM, GRU, RNN), '
                             f"got {type(layer).__name__}")
        if merge_mode not in self.MERGE_MODES:
            raise ValueError(f'Bidirectional "{self.name}": invalid merge_mode {merge_mode!r}; expected one of '
                             f"{list(self.MERGE_MODES)}")
        if backward_layer is not None:
            if not isinstance(backward_layer, RNN):
                raise ValueError(f'Bidirectional "{self.name}": backward_layer must be a recurrent layer, got '
                                 f"{type(backward_layer).__name__}")
            for attribute in ("return_sequences", "return_state"):
                if getattr(backward_layer, attribute) != getattr(layer, attribute):
                    raise ValueError(f'Bidirectional "{self.name}": forward and backward layers must have the same '
                                     f"{attribute}, got {getattr(layer, attribute)} and "
                                     f"{getattr(backward_layer, attribute)}")
            if backward_layer.go_backwards == layer.go_backwards:
                raise ValueError(f'Bidirectional "{self.name}": backward_layer must have go_backwards='
                                 f"{not layer.go_backwards} (the opposite of the forward layer)")
        base = layer.name[len("forward_"):] if layer.name.startswith("forward_") else layer.name
        self.forward_layer = _copy_layer(layer, name="forward_" + base)
        self.backward_layer = backward_layer if backward_layer is not None else _copy_layer(
            layer, name="backward_" + base, go_backwards=not layer.go_backwards)
        for copy in (self.forward_layer, self.backward_layer):
            copy.zero_output_for_mask = copy.return_sequences  # as Keras forces it
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        self._initial_weights = weights
        self.supports_masking = True

    def build(self, input_shape):
        for layer in (self.forward_layer, self.backward_layer):
            if not layer.built:
                layer._build_shapes_dict = {"input_shape": tuple(input_shape)}
                layer.build(tuple(input_shape))
                layer.built = True
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None
        self.built = True

    @property
    def states(self):
        if self.forward_layer.states and self.backward_layer.states:
            return tuple(self.forward_layer.states + self.backward_layer.states)
        return None

    def reset_state(self):
        """Zeros the states of both directions (stateful layers only, as Keras)."""
        if not self.stateful:
            raise AttributeError(f'Bidirectional "{self.name}": reset_state needs a stateful layer')
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def reset_states(self):
        self.reset_state()

    def _merge(self, y_f, y_b):
        if self.merge_mode == "concat":
            return ops.concatenate([y_f, y_b], axis=-1)
        if self.merge_mode == "sum":
            return ops.add(y_f, y_b)
        if self.merge_mode == "ave":
            return ops.multiply(ops.add(y_f, y_b), 0.5)
        if self.merge_mode == "mul":
            return ops.multiply(y_f, y_b)
        return [y_f, y_b]

    def call(self, sequences, initial_state=None, mask=None, training=None):
        forward_state = backward_state = None
        if initial_state is not None:
            half = len(initial_state) // 2
            forward_state, backward_state = list(initial_state[:half]), list(initial_state[half:])
        y_f = self.forward_layer(sequences, initial_state=forward_state, mask=mask, training=training)
        y_b = self.backward_layer(sequences, initial_state=backward_state, mask=mask, training=training)
        states_f = states_b = []
        if self.return_state:
            y_f, states_f = y_f[0], list(y_f[1:])
            y_b, states_b = y_b[0], list(y_b[1:])
        if self.return_sequences:
            y_b = _reverse_time(y_b)  # the backward layer's outputs run from the last step
        output = self._merge(y_f, y_b)
        if self.return_state:
            outputs = output if isinstance(output, list) else [output]
            return outputs + states_f + states_b
        return output

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        outputs = [output_mask, output_mask] if self.merge_mode is None else [output_mask]
        if self.return_state:
            return outputs + [None] * (len(self.forward_layer._cells) * 2 * self.forward_layer._cells[0].STATES)
        return outputs if self.merge_mode is None else output_mask

    def get_config(self):
        from kgraph.layers import serialize

        config = {**super().get_config(), "merge_mode": self.merge_mode, "layer": serialize(self.forward_layer)}
        config["backward_layer"] = serialize(self.backward_layer)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from kgraph.layers import deserialize

        config = dict(config)
        layer = deserialize(config.pop("layer"), custom_objects=custom_objects)
        backward = config.pop("backward_layer", None)
        if backward is not None:
            backward = deserialize(backward, custom_objects=custom_objects)
        return cls(layer, backward_layer=backward, **config)


class SpectralNormalization(Wrapper):
    """Divides the wrapped layer's kernel (or embeddings) by its largest singular value, estimated
    by `power_iterations` steps of power iteration from the non-trainable `vector_u`.

    As Keras does, a training call writes the normalized kernel and the new vector_u back
    (state updates of the compiled step; the optimizer then updates the kernel from that
    value), and an all-zero kernel is left as it is; an inference call uses the kernel as
    stored."""

    def __init__(self, layer, power_iterations=1, **kwargs):
        super().__init__(layer, **kwargs)
        if power_iterations <= 0:
            raise ValueError(f'SpectralNormalization "{self.name}": power_iterations must be greater than zero, '
                             f"got {power_iterations}")
        self.power_iterations = int(power_iterations)

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel = getattr(self.layer, "kernel", None) or getattr(self.layer, "embeddings", None)
        if self.kernel is None:
            raise ValueError(f'SpectralNormalization "{self.name}": the wrapped {type(self.layer).__name__} has no '
                             "`kernel` or `embeddings` to normalize")
        self.kernel_shape = tuple(self.kernel.shape)
        self.vector_u = self.add_weight(shape=(1, self.kernel_shape[-1]),
                                        initializer=initializers.TruncatedNormal(stddev=0.02), trainable=False,
                                        name="vector_u", dtype=self.kernel.dtype)

    def call(self, inputs, training=False):
        if training:
            kernel = self.kernel.value
            new_u, new_kernel = ops.cond(ops.all(ops.equal(kernel, 0)), lambda: (self.vector_u.value, kernel),
                                         self.normalized_weights)
            self.vector_u.assign(new_u)
            self.kernel.assign(new_kernel)
        return ops.cast(self.layer(inputs), ops.convert_to_tensor(inputs).dtype)

    def normalized_weights(self):
        """(new vector_u, the kernel divided by its estimated spectral norm)."""
        weights = ops.reshape(self.kernel.value, (-1, self.kernel_shape[-1]))
        u = self.vector_u.value
        for _ in range(self.power_iterations):
            v = ops.normalize(ops.matmul(u, ops.transpose(weights)), axis=-1)
            u = ops.normalize(ops.matmul(v, weights), axis=-1)
        u, v = ops.stop_gradient(u), ops.stop_gradient(v)
        sigma = ops.matmul(ops.matmul(v, weights), ops.transpose(u))
        kernel = ops.reshape(ops.divide(weights, sigma), self.kernel_shape)
        return ops.cast(u, self.vector_u.dtype), ops.cast(kernel, self.kernel.dtype)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def save_own_variables(self, store):
        """Keras's layout: the wrapper's "vars" hold the kernel (an attribute of the wrapper
        there, so saved twice) and then vector_u."""
        store["0"] = self.kernel.numpy()
        store["1"] = self.vector_u.numpy()

    def load_own_variables(self, store):
        if len(store.keys()) != 2:
            raise ValueError(f"Layer '{self.name}' expected 2 variables (kernel, vector_u), but received "
                             f"{len(store.keys())} variables during loading")
        for variable, key in ((self.kernel, "0"), (self.vector_u, "1")):
            value = np.asarray(store[key])
            if value.shape != variable.shape:
                raise ValueError(f"Layer '{self.name}': variable '{variable.path}' has shape {variable.shape}, but "
                                 f"the saved value has shape {value.shape}")
            variable.assign(value)

    def get_config(self):
        return {**super().get_config(), "power_iterations": self.power_iterations}
