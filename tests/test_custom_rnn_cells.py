"""RNN(cell) with user-written cells (Keras's cell protocol): the time loop is a `scan` op
(kgraph/ops/control_flow.py), compiled as one loop, with backpropagation through time.

Oracles: numpy loops over the cells' formulas with the layers' own weights."""

from __future__ import annotations

import numpy as np
import pytest

import kgraph as keras
from kgraph import layers, ops


class MinimalRNNCell(layers.Layer):
    """The Keras guide's minimal cell: output = x W + h U, one state."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform",
                                      name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, self.units), initializer="orthogonal",
                                                name="recurrent_kernel")

    def call(self, inputs, states):
        output = ops.tanh(ops.matmul(inputs, self.kernel) + ops.matmul(states[0], self.recurrent_kernel))
        return output, [output]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class TwoStateCell(layers.Layer):
    """A cell with a state list: a fast and a slow state, output the sum of both."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform",
                                      name="kernel")

    def call(self, inputs, states):
        fast = ops.tanh(ops.matmul(inputs, self.kernel) + 0.5 * states[0])
        slow = 0.9 * states[1] + 0.1 * fast
        return fast + slow, [fast, slow]


def _np_minimal(x, w, u, mask=None, backwards=False):
    h, outputs = np.zeros((x.shape[0], w.shape[1]), np.float64), []
    steps = range(x.shape[1] - 1, -1, -1) if backwards else range(x.shape[1])
    for t in steps:
        new = np.tanh(x[:, t] @ w + h @ u)
        keep = np.ones((x.shape[0], 1), bool) if mask is None else mask[:, t:t + 1]
        h = np.where(keep, new, h)
        outputs.append(h)
    return np.stack(outputs, axis=1), h


RNG = np.random.default_rng(4)
X = RNG.standard_normal((5, 7, 3)).astype("float32")


@pytest.fixture(scope="module")
def minimal_model():
    inputs = keras.Input((7, 3))
    sequences = layers.RNN(MinimalRNNCell(6), return_sequences=True, name="forward")(inputs)
    backwards = layers.RNN(MinimalRNNCell(6), go_backwards=True, name="backward")(inputs)
    return keras.Model(inputs, [sequences, backwards])


def test_a_custom_cell_runs_in_a_scan_and_matches_numpy(minimal_model):
    sequences, backwards = minimal_model.predict(X, verbose=0)
    forward, backward = minimal_model.get_layer("forward").cell, minimal_model.get_layer("backward").cell
    expected, _ = _np_minimal(X, forward.kernel.numpy(), forward.recurrent_kernel.numpy())
    np.testing.assert_allclose(sequences, expected, rtol=1e-5, atol=1e-6)
    _, last = _np_minimal(X, backward.kernel.numpy(), backward.recurrent_kernel.numpy(), backwards=True)
    np.testing.assert_allclose(backwards, last, rtol=1e-5, atol=1e-6)


def test_state_lists_return_state_and_stacking():
    inputs = keras.Input((7, 3))
    output, fast, slow, h = layers.RNN([TwoStateCell(4), layers.SimpleRNNCell(5)], return_state=True)(inputs)
    model = keras.Model(inputs, [output, fast, slow, h])
    got = model.predict(X, verbose=0)
    stacked = model.layers[1].cell
    w = stacked.cells[0].kernel.numpy()
    simple = stacked.cells[1]
    k, r, b = simple.kernel.numpy(), simple.recurrent_kernel.numpy(), simple.bias.numpy()
    f, s, h_np = np.zeros((5, 4)), np.zeros((5, 4)), np.zeros((5, 5))
    for t in range(7):
        f = np.tanh(X[:, t] @ w + 0.5 * f)
        s = 0.9 * s + 0.1 * f
        h_np = np.tanh((f + s) @ k + h_np @ r + b)
    for actual, want in zip(got, [h_np, f, s, h_np]):
        np.testing.assert_allclose(actual, want, rtol=1e-5, atol=1e-6)
    assert [tuple(t.shape) for t in (output, fast, slow, h)] == [(None, 5), (None, 4), (None, 4), (None, 5)]


def test_masked_steps_keep_the_state_and_masked_values_do_not_matter():
    x_in, m_in = keras.Input((7, 3)), keras.Input((7,), dtype="bool")
    rnn = layers.RNN(MinimalRNNCell(6), return_sequences=True)
    model = keras.Model([x_in, m_in], rnn(x_in, mask=m_in))
    mask = RNG.random((5, 7)) > 0.3
    got = model.predict([X, mask], verbose=0)
    expected, _ = _np_minimal(X, rnn.cell.kernel.numpy(), rnn.cell.recurrent_kernel.numpy(), mask=mask)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    changed = np.where(mask[..., None], X, RNG.standard_normal(X.shape).astype("float32") * 10)
    np.testing.assert_array_equal(model.predict([changed, mask], verbose=0), got)


def test_a_custom_cell_trains_and_round_trips_through_a_keras_file(minimal_model, tmp_path):
    y = (X.sum(axis=(1, 2)) > 0).astype("float32")[:, None]
    model = keras.Sequential([keras.Input((7, 3)), layers.RNN(MinimalRNNCell(8)), layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    history = model.fit(np.tile(X, (8, 1, 1)), np.tile(y, (8, 1)), epochs=6, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]
    path = tmp_path / "custom_cell.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, custom_objects={"MinimalRNNCell": MinimalRNNCell})
    np.testing.assert_allclose(reloaded.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-6)


def test_a_cell_without_state_size_is_refused():
    with pytest.raises(ValueError, match="a cell must be a Layer with a `state_size`"):
        layers.RNN(layers.Dense(3))
