"""Recurrent layers: SimpleRNN, LSTM, GRU, their cells, RNN(cell) and StackedRNNCells.

A layer computes the input projection of every timestep with one matmul, then runs the
time loop in one compiled op (kgraph/ops/recurrent.py), whose gradient is backpropagation
through time in the same compiled step. Weights are named and laid out as Keras 3 stores
them (kernel (input_dim, G*units), recurrent_kernel (units, G*units), bias; LSTM gates
i, f, c, o; GRU gates z, r, h with bias (2, 3*units) when reset_after), so Keras weights
load unchanged. See docs/recurrent.md for what is supported.
"""

from __future__ import annotations

import numpy as np

from kgraph import activations, initializers, ops, regularizers
from kgraph import random as krandom
from kgraph.ir import SymbolicTensor, Variable, tracing
from kgraph.layers.layer import Layer
from kgraph.ops.recurrent import activation_name, match_batch, sequence_matmul
from kgraph.ops.registry import bind


def _serialize_initializer(value):
    return initializers.serialize(value) if value is not None else None


class _Cell(Layer):
    """What the built-in cells share: weights, config, and the fused sequence op."""

    GATES = 1
    STATES = 1
    has_recurrent_activation = False

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f'{type(self).__name__} "{self.name}": units must be a positive integer, got {units!r}')
        self.units = int(units)
        self.activation = activations.get(activation)
        self._activation = activation_name(self.activation, f'{type(self).__name__} "{self.name}"')
        if self.has_recurrent_activation:
            self.recurrent_activation = activations.get(recurrent_activation)
            self._recurrent_activation = activation_name(self.recurrent_activation,
                                                         f'{type(self).__name__} "{self.name}"',
                                                         "recurrent_activation")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = kernel_constraint
        self.recurrent_constraint = recurrent_constraint
        self.bias_constraint = bias_constraint
        self.dropout = min(1.0, max(0.0, float(dropout)))
        self.recurrent_dropout = min(1.0, max(0.0, float(recurrent_dropout)))
        self.seed = seed
        # LSTM/GRU's Keras implementation 1 (per-gate input dropout masks), forced by recurrent dropout
        self.implementation = 1 if self.recurrent_dropout > 0 else self.__dict__.get("implementation", 2)
        self.seed_generator = krandom.SeedGenerator(seed) if self.dropout > 0 or self.recurrent_dropout > 0 else None
        self.state_size = [self.units] * self.STATES if self.STATES > 1 else self.units
        self.output_size = self.units

    def _bias_shape(self):
        return (self.GATES * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f'{type(self).__name__} "{self.name}": the last dimension of the input must be known, '
                             f"got input shape {input_shape}")
        width = self.GATES * self.units
        self.kernel = self.add_weight(shape=(input_dim, width), initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
                                      name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, width), initializer=self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer,
                                                constraint=self.recurrent_constraint, name="recurrent_kernel")
        self.bias = self.add_weight(shape=self._bias_shape(), initializer=self._bias_initializer(),
                                    regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                                    name="bias") if self.use_bias else None
        self.built = True

    def _set_paths(self, prefix):
        """Keras's variable paths (<layer>/<cell>/<name>) when the cell belongs to a layer."""
        for variable in self.weights:
            variable.path = f"{prefix}/{self.name}/{variable.name}"

    # -- the fused time loop -------------------------------------------------------------------------
    def _projection(self, x, training):
        if training and self.dropout > 0:
            # One dropout mask per sequence, shared by its timesteps (as Keras's cells draw it).
            # Keras's LSTM and GRU cells with implementation 1 (forced by recurrent dropout)
            # draw one mask per gate, each gate's columns of the kernel seeing its own input.
            u, noise = self.units, (None, 1, x.shape[-1])
            if self.GATES > 1 and self.implementation == 1:
                xp = ops.concatenate([sequence_matmul(krandom.dropout(x, self.dropout, noise_shape=noise,
                                                                      seed=self.seed_generator),
                                                      self.kernel[:, k * u:(k + 1) * u])
                                      for k in range(self.GATES)], axis=2)
            else:
                xp = sequence_matmul(krandom.dropout(x, self.dropout, noise_shape=noise, seed=self.seed_generator),
                                     self.kernel)
        else:
            xp = sequence_matmul(x, self.kernel)  # one GEMM over batch * timesteps (and for both gradients)
        bias = self._input_bias()
        return xp if bias is None else ops.add(xp, bias)

    def _recurrent_dropout_masks(self, state, training):
        """The recurrent dropout masks (n, GATES*units) the fused op multiplies the previous h by
        (one per gate and sequence, as Keras's cells: zeros and 1 / (1 - rate)), as a list of
        op inputs: empty when not training or without recurrent dropout."""
        if not (training and 0 < self.recurrent_dropout < 1):
            return []
        ones = ops.ones_like(state if self.GATES == 1 else ops.concatenate([state] * self.GATES, axis=1))
        return [krandom.dropout(ones, self.recurrent_dropout, seed=self.seed_generator)]

    def _input_bias(self):
        return self.bias

    def _attrs(self):
        return {"activation": self._activation}

    def sequence(self, x, states, mask, training=False):
        """(outputs (n, T, units), final states) of the cell run over x (n, T, d) with a bool mask."""
        raise NotImplementedError

    def get_initial_state(self, batch_size=None):
        raise NotImplementedError("kgraph's cells start from zeros; pass initial_state to the layer instead")

    def call(self, inputs, states, training=False):
        """One step (Keras's cell API): inputs (n, d), states -> (output, new states)."""
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        x = ops.expand_dims(inputs, 1)
        mask = ops.full_like(x[:, :, 0], True, dtype="bool")
        outputs, new_states = self.sequence(x, states, mask, training)
        return outputs[:, 0], new_states

    def get_config(self):
        config = {**super().get_config(), "units": self.units,
                  "activation": activations.serialize(self.activation)}
        if self.has_recurrent_activation:
            config["recurrent_activation"] = activations.serialize(self.recurrent_activation)
        config.update({
            "use_bias": self.use_bias,
            "kernel_initializer": _serialize_initializer(self.kernel_initializer),
            "recurrent_initializer": _serialize_initializer(self.recurrent_initializer),
            "bias_initializer": _serialize_initializer(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": None, "recurrent_constraint": None, "bias_constraint": None,
            "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout, "seed": self.seed,
        })
        return config


class SimpleRNNCell(_Cell):
    """h = activation(x @ kernel + h @ recurrent_kernel + bias)."""

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(units, activation=activation, **kwargs)

    def sequence(self, x, states, mask, training=False):
        xp = self._projection(x, training)
        drop = self._recurrent_dropout_masks(states[0], training)
        packed = bind("simple_rnn_sequence", [xp, states[0], self.recurrent_kernel, mask] + drop, **self._attrs())
        return packed, [packed[:, -1]]


class LSTMCell(_Cell):
    """Keras's LSTM cell: gates i, f, c, o in the kernel's columns; unit_forget_bias."""

    GATES = 4
    STATES = 2
    has_recurrent_activation = True

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", unit_forget_bias=True, **kwargs):
        self.unit_forget_bias = bool(unit_forget_bias)
        self.implementation = int(kwargs.pop("implementation", 2))
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kwargs)

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base, units = self.bias_initializer, self.units

        def initializer(shape, dtype=None):
            # the forget gate's bias starts at 1 (Jozefowicz et al.), the others as configured
            return np.concatenate([np.asarray(base((units,), dtype=dtype)), np.ones((units,), dtype),
                                   np.asarray(base((units * 2,), dtype=dtype))])
        return initializer

    def _attrs(self):
        return {"activation": self._activation, "recurrent_activation": self._recurrent_activation}

    def sequence(self, x, states, mask, training=False):
        u = self.units
        xp = self._projection(x, training)
        drop = self._recurrent_dropout_masks(states[0], training)
        packed = bind("lstm_sequence", [xp, states[0], states[1], self.recurrent_kernel, mask] + drop,
                      **self._attrs())
        last = packed[:, -1]
        return packed[:, :, :u], [last[:, :u], last[:, u:2 * u]]

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


class GRUCell(_Cell):
    """Keras's GRU cell: gates z, r, h; reset_after=True (bias (2, 3*units)) or False."""

    GATES = 3
    has_recurrent_activation = True

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", reset_after=True, **kwargs):
        self.reset_after = bool(reset_after)
        self.implementation = int(kwargs.pop("implementation", 2))
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kwargs)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _input_bias(self):
        if self.bias is None:
            return None
        return self.bias[0] if self.reset_after else self.bias

    def _attrs(self):
        return {"activation": self._activation, "recurrent_activation": self._recurrent_activation,
                "reset_after": self.reset_after}

    def sequence(self, x, states, mask, training=False):
        xp = self._projection(x, training)
        if self.bias is not None and self.reset_after:
            rbias = self.bias[1]
        else:
            rbias = np.zeros((3 * self.units,), xp.dtype)
        drop = self._recurrent_dropout_masks(states[0], training)
        packed = bind("gru_sequence", [xp, states[0], self.recurrent_kernel, mask, rbias] + drop, **self._attrs())
        return packed[:, :, :self.units], [packed[:, -1, :self.units]]

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}


class StackedRNNCells(Layer):
    """Cells applied in turn at every step (each cell's output is the next one's input)."""

    def __init__(self, cells, **kwargs):
        super().__init__(**kwargs)
        self.cells = list(cells)
        for cell in self.cells:
            _check_cell(cell, "StackedRNNCells")

    @property
    def state_size(self):
        return [cell.state_size for cell in self.cells]

    @property
    def output_size(self):
        return _adapted(self.cells[-1]).units

    def build(self, input_shape):
        shape = tuple(input_shape)
        for cell in self.cells:
            adapted = _adapted(cell)
            if not cell.built:
                adapted.build_for(shape) if isinstance(adapted, _CustomCell) else _build_cell(cell, shape)
            shape = shape[:-1] + (adapted.units,)
        self.built = True

    def get_config(self):
        from kgraph.layers import serialize

        return {**super().get_config(), "cells": [serialize(cell) for cell in self.cells]}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from kgraph.layers import deserialize

        config = dict(config)
        cells = [deserialize(c, custom_objects=custom_objects) for c in config.pop("cells")]
        return cls(cells, **{k: v for k, v in config.items() if k in ("name", "trainable", "dtype")})


def _check_cell(cell, where):
    if isinstance(cell, (_Cell, StackedRNNCells)):
        return
    if not isinstance(cell, Layer) or not hasattr(cell, "state_size"):
        raise ValueError(f"{where}: a cell must be a Layer with a `state_size` attribute and a call(inputs, states) "
                         f"that returns (output, new_states); got {type(cell).__name__}")
    sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
    if not sizes or not all(isinstance(size, (int, np.integer)) for size in sizes):
        raise ValueError(f"{where}: the cell {type(cell).__name__} has state_size {cell.state_size!r}; kgraph supports "
                         "an int or a list of ints (one per state tensor of shape (batch, size))")


class _CustomCell:
    """A user's cell (Keras's protocol: `state_size`, optional `output_size`, and
    call(inputs, states) -> (output, new_states)) run over the timesteps by a `scan` op, so its
    time loop is one compiled loop and its gradient backpropagation through time."""

    def __init__(self, cell):
        self.cell = cell
        single = not isinstance(cell.state_size, (list, tuple))
        self.state_sizes = [int(cell.state_size)] if single else [int(s) for s in cell.state_size]
        self.STATES = len(self.state_sizes)
        self.units = int(getattr(cell, "output_size", None) or self.state_sizes[0])

    @property
    def built(self):
        return self.cell.built

    def build_for(self, sequence_shape):
        """Keras builds a cell for one step's input: (batch, features)."""
        _build_cell(self.cell, (sequence_shape[0],) + tuple(sequence_shape[2:]))

    def _set_paths(self, prefix):
        pass  # the cell's weights keep the paths the cell's own layer gives them

    def sequence(self, x, states, mask, training=False):
        steps, step_masks = ops.transpose(x, (1, 0, 2)), ops.expand_dims(ops.transpose(mask, (1, 0)), -1)
        first = ops.zeros_like(ops.matmul(x[:, 0], ops.zeros((x.shape[-1], self.units), x.dtype)))

        def step(carry, inputs):
            x_t, keep = inputs
            *old_states, previous = carry
            output, new_states = self.cell(x_t, list(old_states), training=training)  # a list, as Keras passes
            new_states = list(new_states) if isinstance(new_states, (list, tuple)) else [new_states]
            if len(new_states) != self.STATES:
                raise ValueError(f'cell "{self.cell.name}": call returned {len(new_states)} states for a state_size '
                                 f"of {self.cell.state_size!r}")
            output = ops.where(keep, ops.cast(output, x.dtype), previous)  # masked steps keep the last output
            new_states = [ops.where(keep, ops.cast(new, old.dtype), old) for new, old in zip(new_states, old_states)]
            return new_states + [output], output

        final, outputs = ops.scan(step, list(states) + [first], (steps, step_masks))
        return ops.transpose(outputs, (1, 0, 2)), final[:-1]


def _adapted(cell):
    return cell if isinstance(cell, _Cell) else _CustomCell(cell)


def _state_sizes(cell):
    return getattr(cell, "state_sizes", [cell.units] * cell.STATES)


def _build_cell(cell, shape):
    cell._build_shapes_dict = {"input_shape": shape}
    cell.build(shape)
    cell.built = True


def _zeros(x, units):
    """Zeros of shape (batch, units) in x's graph (the batch may be known only at run time);
    `units` may be a tuple (a state of several axes)."""
    shape = (x.shape[0],) + (tuple(units) if isinstance(units, tuple) else (units,))
    if not isinstance(x, SymbolicTensor):
        return np.zeros(shape, x.dtype)
    with tracing(x.graph):
        return bind("broadcast_to", [np.zeros((), x.dtype)], shape=shape)


class RNN(Layer):
    """Keras's RNN layer: the built-in cells run as fused sequence ops; any other cell (a Layer
    with state_size and call(inputs, states)) runs in a `scan` op (kgraph.ops.control_flow)."""

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, zero_output_for_mask=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells(cell)
        _check_cell(cell, f'{type(self).__name__} "{self.name}"')
        self.cell = cell
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.states = None  # stateful: the state variables (batch, units), not weights (as Keras)
        self.unroll = bool(unroll)  # accepted; the loop is always a compiled op
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.supports_masking = True

    @property
    def _cells(self):
        cells = self.cell.cells if isinstance(self.cell, StackedRNNCells) else [self.cell]
        return [_adapted(cell) for cell in cells]

    @property
    def state_size(self):
        return self.cell.state_size

    def build(self, input_shape):
        if isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (list, tuple)):
            input_shape = input_shape[0]
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(f'{type(self).__name__} "{self.name}": expected an input of rank 3 (batch, timesteps, '
                             f"features), got shape {shape}")
        for cell in self._cells:
            if not cell.built:
                cell.build_for(shape) if isinstance(cell, _CustomCell) else _build_cell(cell, shape)
            shape = shape[:-1] + (cell.units,)
            cell._set_paths(self.name)
        if isinstance(self.cell, StackedRNNCells):
            self.cell.built = True
        if self.stateful:
            self._create_states(shape[0])
        self.built = True

    def _create_states(self, batch_size):
        if self.states is not None:
            self.reset_state()
            return
        if batch_size is None:
            raise ValueError(
                f'{type(self).__name__} "{self.name}": stateful=True needs a fixed batch size, got input shape '
                "with batch size None: give the model's Input a batch size (keras.Input(shape, batch_size=...) or "
                "batch_shape=...), and feed batches of exactly that size")
        dtype = self.cell.dtype_policy if hasattr(self.cell, "dtype_policy") else "float32"
        self.states = []
        for cell in self._cells:
            for size in _state_sizes(cell):
                state = Variable(np.zeros((int(batch_size), size), dtype), trainable=False, name="rnn_state")
                state.path = f"{self.name}/rnn_state"
                self.states.append(state)

    def reset_state(self):
        """Sets a stateful layer's states to zeros (Keras's RNN.reset_state)."""
        for state in self.states or []:
            state.assign(np.zeros(state.shape, state.dtype))

    def reset_states(self):
        """Keras's alias of reset_state."""
        self.reset_state()

    def _initial_states(self, x, initial_state):
        counts = [c.STATES for c in self._cells]
        if initial_state is None:
            flat = [_zeros(x, size) for c in self._cells for size in _state_sizes(c)]
        else:
            flat = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            if len(flat) != sum(counts):
                raise ValueError(f'{type(self).__name__} "{self.name}": expected {sum(counts)} initial state '
                                 f"tensor(s), got {len(flat)}")
            flat = [ops.cast(ops.convert_to_tensor(s), x.dtype) for s in flat]
        grouped, k = [], 0
        for count in counts:
            grouped.append(flat[k:k + count])
            k += count
        return grouped

    def call(self, sequences, initial_state=None, mask=None, training=False):
        x = ops.convert_to_tensor(sequences)
        if x.shape[1] is None:
            raise ValueError(f'{type(self).__name__} "{self.name}": the number of timesteps must be known, got '
                             f"input shape {x.shape}")
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        mask = ops.full_like(x[:, :, 0], True, dtype="bool") if mask is None else ops.cast(mask, "bool")
        if self.go_backwards:
            x, mask = x[:, ::-1], mask[:, ::-1]
        if self.stateful and initial_state is None:
            initial_state = [match_batch(state, x, layer=f'{type(self).__name__} "{self.name}"')
                             for state in self.states]
        states = self._initial_states(x, initial_state)
        final = []
        for cell, cell_states in zip(self._cells, states):
            x, new_states = cell.sequence(x, cell_states, mask, training)
            final += new_states
        if self.stateful:
            for variable, state in zip(self.states, final):
                # a None batch is the variable's (match_batch checked it); [:k] gives the static shape
                k = variable.shape[0]
                variable.assign(state if state.shape[0] == k else state[0:k])
        last = final[-self._cells[-1].STATES]
        if self.return_sequences:
            output = x
            if self.zero_output_for_mask:
                output = ops.where(ops.expand_dims(mask, -1), output, ops.zeros_like(output))
        else:
            output = last
        return [output] + final if self.return_state else output

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None] * sum(c.STATES for c in self._cells)
        return output_mask

    def compute_output_shape(self, input_shape):
        units = self._cells[-1].units
        batch = input_shape[0]
        out = (batch, input_shape[1], units) if self.return_sequences else (batch, units)
        if self.return_state:
            return [out] + [(batch, size) for c in self._cells for size in _state_sizes(c)]
        return out

    def get_config(self):
        from kgraph.layers import serialize

        config = {**super().get_config(), "return_sequences": self.return_sequences,
                  "return_state": self.return_state, "go_backwards": self.go_backwards, "stateful": self.stateful,
                  "unroll": self.unroll, "zero_output_for_mask": self.zero_output_for_mask}
        if type(self) is RNN:
            config["cell"] = serialize(self.cell)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from kgraph.layers import deserialize

        if cls is not RNN:
            return super().from_config(config)
        config = dict(config)
        cell = config.pop("cell")
        cell = [deserialize(c, custom_objects=custom_objects) for c in cell] if isinstance(cell, list) else \
            deserialize(cell, custom_objects=custom_objects)
        return cls(cell, **config)


_CELL_ARGUMENTS = ("units", "activation", "use_bias", "kernel_initializer", "recurrent_initializer",
                   "bias_initializer", "kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
                   "kernel_constraint", "recurrent_constraint", "bias_constraint", "dropout", "recurrent_dropout",
                   "seed")


class _FusedRNN(RNN):
    """SimpleRNN / LSTM / GRU: an RNN whose cell is made from the layer's own arguments."""

    CELL = None
    CELL_NAME = ""
    EXTRA = ()

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, seed=None,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False, unroll=False,
                 zero_output_for_mask=False, **kwargs):
        extra = {k: kwargs.pop(k) for k in self.EXTRA if k in kwargs}
        layer_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in ("name", "trainable", "dtype")}
        cell = self.CELL(units, activation=activation, use_bias=use_bias, kernel_initializer=kernel_initializer,
                         recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
                         bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
                         recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint, dropout=dropout,
                         recurrent_dropout=recurrent_dropout, seed=seed, name=self.CELL_NAME,
                         dtype=layer_kwargs.get("dtype"), **extra)
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll,
                         zero_output_for_mask=zero_output_for_mask,
                         activity_regularizer=regularizers.get(activity_regularizer), **layer_kwargs, **kwargs)

    def __getattr__(self, name):  # units, activation, ... read through to the cell (as Keras's properties)
        if name in _CELL_ARGUMENTS + ("recurrent_activation", "unit_forget_bias", "reset_after", "implementation"):
            cell = self.__dict__.get("cell")
            if cell is not None:
                return getattr(cell, name)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def get_config(self):
        config = super().get_config()
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        config.update(cell_config)
        config["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        return config


class SimpleRNN(_FusedRNN):
    """Keras's SimpleRNN: h = activation(x W + h U + b), the loop compiled (see docs/recurrent.md)."""

    CELL = SimpleRNNCell
    CELL_NAME = "simple_rnn_cell"


class LSTM(_FusedRNN):
    """Keras's LSTM (gates i, f, c, o), the loop compiled with its BPTT gradient (docs/recurrent.md)."""

    CELL = LSTMCell
    CELL_NAME = "lstm_cell"
    EXTRA = ("recurrent_activation", "unit_forget_bias", "implementation")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", unit_forget_bias=True, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation,
                         unit_forget_bias=unit_forget_bias, **kwargs)


class GRU(_FusedRNN):
    """Keras's GRU (gates z, r, h; reset_after=True by default), the loop compiled (docs/recurrent.md)."""

    CELL = GRUCell
    CELL_NAME = "gru_cell"
    EXTRA = ("recurrent_activation", "reset_after", "implementation")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", reset_after=True, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation,
                         reset_after=reset_after, **kwargs)


class Masking(Layer):
    """Masks timesteps whose features all equal `mask_value` (their output is zeros)."""

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = mask_value
        self.supports_masking = True
        self.built = True

    def _keep(self, inputs):
        differs = ops.cast(ops.not_equal(inputs, self.mask_value), inputs.dtype)
        return ops.greater(ops.max(differs, axis=-1), 0)

    def call(self, inputs):
        inputs = ops.convert_to_tensor(inputs)
        keep = self._keep(inputs)
        return ops.multiply(inputs, ops.expand_dims(ops.cast(keep, inputs.dtype), -1))

    def compute_mask(self, inputs, mask=None):
        return self._keep(ops.convert_to_tensor(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}
