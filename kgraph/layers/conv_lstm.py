"""ConvLSTM1D/2D/3D and ConvLSTMCell: an LSTM whose input and recurrent products are convolutions.

The weights are laid out as Keras 3 stores them (kernel (*kernel_size, channels, 4*filters),
recurrent_kernel (*kernel_size, filters, 4*filters), bias (4*filters,), gates i, f, c, o), so
Keras weights load unchanged. The time loop is a `scan` op (kgraph/ops/control_flow.py):
one compiled loop whose step runs the convolution kernels, differentiated by a reverse scan.
Without dropout a step makes one convolution of the input and one of the state over all
four gates (the same sums as Keras's four per-gate convolutions); with dropout in training,
four of each, on the inputs and states masked per gate, the masks drawn once per sequence.
"""

from __future__ import annotations

from kgraph import activations, constraints, initializers, ops, regularizers
from kgraph import random as krandom
from kgraph.layers.convolutional import standardize_data_format, standardize_padding, standardize_tuple
from kgraph.layers.layer import Layer
from kgraph.layers.recurrent import _zeros

_ARGUMENTS = ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "activation",
              "recurrent_activation", "use_bias", "kernel_initializer", "recurrent_initializer",
              "bias_initializer", "unit_forget_bias", "kernel_regularizer", "recurrent_regularizer",
              "bias_regularizer", "kernel_constraint", "recurrent_constraint", "bias_constraint", "dropout",
              "recurrent_dropout", "seed")


class ConvLSTMCell(Layer):
    """One ConvLSTM step (Keras's cell API): call(inputs, [h, c]) -> (h, [h, c])."""

    def __init__(self, rank, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if rank not in (1, 2, 3):
            raise ValueError(f'ConvLSTMCell "{self.name}": rank must be 1, 2 or 3, got {rank}')
        self.rank = rank
        self.filters = int(filters)
        self.kernel_size = standardize_tuple(kernel_size, rank, "kernel_size")
        self.strides = standardize_tuple(strides, rank, "strides", allow_zero=True)
        self.padding = standardize_padding(padding)
        self.data_format = standardize_data_format(data_format)
        self.dilation_rate = standardize_tuple(dilation_rate, rank, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f'ConvLSTMCell "{self.name}": strides > 1 is not compatible with dilation_rate > 1; got '
                             f"strides={self.strides} and dilation_rate={self.dilation_rate}")
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.dropout = min(1.0, max(0.0, float(dropout)))
        self.recurrent_dropout = min(1.0, max(0.0, float(recurrent_dropout)))
        self.seed = seed
        self.seed_generator = krandom.SeedGenerator(seed) if self.dropout or self.recurrent_dropout else None
        self.masks = None  # set by the layer for one sequence: (input masks, state masks), 4 each or None

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        spatial = input_shape[1:-1] if self.data_format == "channels_last" else input_shape[2:]
        if None in tuple(spatial) or input_shape[self._channel_axis] is None:
            raise ValueError(f'ConvLSTMCell "{self.name}": the spatial and channel dimensions must be known, got '
                             f"input shape {tuple(input_shape)}")
        channels = int(input_shape[self._channel_axis])
        self.kernel = self.add_weight(shape=self.kernel_size + (channels, 4 * self.filters), name="kernel",
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.recurrent_kernel = self.add_weight(shape=self.kernel_size + (self.filters, 4 * self.filters),
                                                name="recurrent_kernel", initializer=self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer,
                                                constraint=self.recurrent_constraint)
        self.bias = None
        if self.use_bias:
            initializer = self.bias_initializer
            if self.unit_forget_bias:
                base, filters = self.bias_initializer, self.filters

                def initializer(shape, dtype=None):  # Keras: ones for the forget gate's quarter
                    return ops.concatenate([base((filters,), dtype=dtype), ops.ones((filters,), dtype or "float32"),
                                            base((2 * filters,), dtype=dtype)])
            self.bias = self.add_weight(shape=(4 * self.filters,), name="bias", initializer=initializer,
                                        regularizer=self.bias_regularizer, constraint=self.bias_constraint)
        self.built = True

    def _conv(self, x, kernel, input_side):
        return ops.conv(x, kernel, strides=self.strides if input_side else 1,
                        padding=self.padding if input_side else "same", data_format=self.data_format,
                        dilation_rate=self.dilation_rate if input_side else 1)

    def _bias_shape(self):
        return (1,) * (self.rank + 1) + (-1,) if self.data_format == "channels_last" else (1, -1) + (1,) * self.rank

    def call(self, inputs, states, training=False):
        h_previous, c_previous = states[0], states[1]
        input_masks, state_masks = self.masks if self.masks is not None else (None, None)
        axis = self._channel_axis
        if input_masks is None and state_masks is None:
            gates = ops.add(self._conv(inputs, self.kernel, True), self._conv(h_previous, self.recurrent_kernel, False))
            if self.bias is not None:
                gates = ops.add(gates, ops.reshape(self.bias, self._bias_shape()))
            z_i, z_f, z_c, z_o = ops.split(gates, 4, axis=axis)
        else:
            kernels = ops.split(self.kernel, 4, axis=self.rank + 1)
            recurrent = ops.split(self.recurrent_kernel, 4, axis=self.rank + 1)
            biases = ops.split(self.bias, 4) if self.bias is not None else [None] * 4
            z = []
            for k in range(4):
                x = inputs if input_masks is None else ops.multiply(inputs, input_masks[k])
                h = h_previous if state_masks is None else ops.multiply(h_previous, state_masks[k])
                gate = ops.add(self._conv(x, kernels[k], True), self._conv(h, recurrent[k], False))
                if biases[k] is not None:
                    gate = ops.add(gate, ops.reshape(biases[k], self._bias_shape()))
                z.append(gate)
            z_i, z_f, z_c, z_o = z
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        c = ops.add(ops.multiply(f, c_previous), ops.multiply(i, self.activation(z_c)))
        o = self.recurrent_activation(z_o)
        h = ops.multiply(o, self.activation(c))
        return h, [h, c]

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": self.dilation_rate, "activation": activations.serialize(self.activation),
                "recurrent_activation": activations.serialize(self.recurrent_activation),
                "use_bias": self.use_bias, "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "unit_forget_bias": self.unit_forget_bias,
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint), "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout, "seed": self.seed}


class ConvLSTM(Layer):
    """Keras's ConvLSTM base: runs a ConvLSTMCell over axis 1 of (batch, time, ...) inputs."""

    RANK = None

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, zero_output_for_mask=False, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if stateful:
            raise NotImplementedError(f'{type(self).__name__} "{self.name}": stateful=True is not supported for '
                                      "ConvLSTM layers; pass the states as initial_state")
        self.cell = ConvLSTMCell(self.RANK, filters, kernel_size, strides=strides, padding=padding,
                                 data_format=data_format, dilation_rate=dilation_rate, activation=activation,
                                 recurrent_activation=recurrent_activation, use_bias=use_bias,
                                 kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                                 bias_initializer=bias_initializer, unit_forget_bias=unit_forget_bias,
                                 kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
                                 bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
                                 recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint,
                                 dropout=dropout, recurrent_dropout=recurrent_dropout, seed=seed, name="cell")
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = False
        self.unroll = bool(unroll)  # accepted: the loop is always a compiled scan
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.supports_masking = True

    def __getattr__(self, name):
        if name in _ARGUMENTS and "cell" in self.__dict__:
            return getattr(self.__dict__["cell"], name)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def build(self, input_shape):
        shape = tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)
        if len(shape) != self.RANK + 3:
            raise ValueError(f'{type(self).__name__} "{self.name}": expected an input of rank {self.RANK + 3} '
                             f"(batch, time, spatial..., channels), got shape {shape}")
        if not self.cell.built:
            step = (shape[0],) + shape[2:]
            self.cell._build_shapes_dict = {"input_shape": step}
            self.cell.build(step)
        self.built = True

    def _state_shape(self, input_shape):
        """(batch, *spatial out, filters) (channels_last) of the cell for one step's input shape."""
        cell = self.cell
        first = cell.data_format == "channels_first"
        spatial = input_shape[2:] if first else input_shape[1:-1]
        out = []
        for size, k, s, d in zip(spatial, cell.kernel_size, cell.strides, cell.dilation_rate):
            extent = (k - 1) * d + 1
            out.append((size - extent) // s + 1 if cell.padding == "valid" else -(-size // s))
        return (input_shape[0], cell.filters, *out) if first else (input_shape[0], *out, cell.filters)

    def call(self, inputs, initial_state=None, mask=None, training=False):
        x = ops.convert_to_tensor(inputs)
        steps = ops.moveaxis(x, 1, 0)
        if self.go_backwards:
            steps = ops.flip(steps, axis=0)
        step_shape = (x.shape[0],) + tuple(x.shape[2:])
        if initial_state is None:
            state = _zeros(x, self._state_shape(step_shape)[1:])
            initial_state = [state, state]
        initial_state = list(initial_state)
        keep = None
        if mask is not None:
            keep = ops.moveaxis(ops.cast(mask, "bool"), 1, 0)
            if self.go_backwards:
                keep = ops.flip(keep, axis=0)
        self.cell.masks = self._dropout_masks(steps[0], initial_state[0], training)
        cell = self.cell

        def step(carry, inputs_t):
            x_t, keep_t = (inputs_t[0], inputs_t[1]) if keep is not None else (inputs_t[0], None)
            h, (_, c) = cell(x_t, list(carry), training=training)
            if keep_t is not None:
                shape = (-1,) + (1,) * (len(h.shape) - 1)
                keep_t = ops.reshape(keep_t, shape)
                h, c = ops.where(keep_t, h, carry[0]), ops.where(keep_t, c, carry[1])
            return [h, c], h

        try:
            (h, c), outputs = ops.scan(step, initial_state, [steps] if keep is None else [steps, keep])
        finally:
            self.cell.masks = None
        if self.return_sequences:
            output = ops.moveaxis(outputs, 0, 1)
            if self.go_backwards:
                output = ops.flip(output, axis=1)
            if self.zero_output_for_mask and mask is not None:
                shown = ops.reshape(ops.cast(mask, "bool"), (-1, mask.shape[1]) + (1,) * (len(output.shape) - 2))
                output = ops.where(shown, output, ops.zeros_like(output))
        else:
            output = h
        return [output, h, c] if self.return_state else output

    def _dropout_masks(self, x, h, training):
        cell = self.cell
        if not training:
            return None
        inputs = ([krandom.dropout(ops.ones_like(x), cell.dropout, seed=cell.seed_generator) for _ in range(4)]
                  if 0 < cell.dropout < 1 else None)
        states = ([krandom.dropout(ops.ones_like(h), cell.recurrent_dropout, seed=cell.seed_generator)
                   for _ in range(4)] if 0 < cell.recurrent_dropout < 1 else None)
        return None if inputs is None and states is None else (inputs, states)

    def compute_output_shape(self, input_shape):
        state = self._state_shape((input_shape[0],) + tuple(input_shape[2:]))
        output = (state[0], input_shape[1]) + state[1:] if self.return_sequences else state
        return [output, state, state] if self.return_state else output

    def compute_mask(self, inputs, mask=None):
        output_mask = mask if self.return_sequences else None
        return [output_mask, None, None] if self.return_state else output_mask

    def get_config(self):
        config = {**super().get_config(), **{k: v for k, v in self.cell.get_config().items()
                                             if k not in ("name", "trainable", "dtype")}}
        config.update(return_sequences=self.return_sequences, return_state=self.return_state,
                      go_backwards=self.go_backwards, stateful=False, unroll=self.unroll,
                      zero_output_for_mask=self.zero_output_for_mask)
        return config


class ConvLSTM1D(ConvLSTM):
    """ConvLSTM over (batch, time, steps, channels) inputs."""

    RANK = 1


class ConvLSTM2D(ConvLSTM):
    """ConvLSTM over (batch, time, rows, cols, channels) inputs."""

    RANK = 2


class ConvLSTM3D(ConvLSTM):
    """ConvLSTM over (batch, time, depth, rows, cols, channels) inputs."""

    RANK = 3
