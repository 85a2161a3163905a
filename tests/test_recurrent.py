"""Recurrent layers: the fused ops compiled with numba (forward and BPTT) against float64
finite differences, the layers against numpy loops of Keras 3's equations written here
(masks, go_backwards, initial states, return_state), Masking, Bidirectional,
TimeDistributed, masks from Embedding(mask_zero=True), configs, errors, and the Keras
guide's ticket classifier training. Keras 3 itself is an optional extra oracle.

Compiled models are shared through module fixtures (numba compile time dominates).
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from keras_reference import SKIP_REASON, keras_python

import kgraph as keras
from kgraph import layers, ops
from kgraph.compiler.autodiff import gradients
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.exporters.onnx import convert, trace_inference_graph
from kgraph.exporters.onnx_ops import OnnxExportError
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.ops.registry import bind

KERAS_PYTHON = keras_python()
T, D, U = 5, 3, 4


# -- numpy oracles: Keras 3's equations, one timestep at a time ------------------------------------
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def hard_sigmoid(x):
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0)


ACT = {"tanh": np.tanh, "sigmoid": sigmoid, "hard_sigmoid": hard_sigmoid, "relu": lambda x: np.maximum(x, 0),
       "linear": lambda x: x}


def run_cell(kind, x, mask, weights, states, act="tanh", ract="sigmoid", reset_after=True, drop=None,
             input_drop=None):
    """Outputs per processed step and final states of one Keras cell run over x (n, T, d).
    `drop` (n, G*u): recurrent dropout masks, gate k's h_tm1 is h * drop[:, k*u:(k+1)*u];
    `input_drop` (G, n, d): gate k's input is x * input_drop[k] (Keras's cells with
    implementation 1)."""
    kernel, recurrent, bias = weights
    n, steps, _ = x.shape
    u = recurrent.shape[0]
    states = [s.astype(np.float64) for s in states]
    outputs = np.zeros((n, steps, u))

    def h_gate(h, k):
        return h if drop is None else h * drop[:, k * u:(k + 1) * u]

    def project(xt):
        if input_drop is None:
            return xt @ kernel
        return np.concatenate([(xt * m) @ kernel[:, k * u:(k + 1) * u] for k, m in enumerate(input_drop)], axis=1)

    for t in range(steps):
        xt = x[:, t].astype(np.float64)
        h = states[0]
        if kind == "rnn":
            new = [ACT[act](project(xt) + h_gate(h, 0) @ recurrent + bias)]
        elif kind == "lstm":
            c = states[1]
            z = project(xt) + np.concatenate([h_gate(h, k) @ recurrent[:, k * u:(k + 1) * u] for k in range(4)],
                                             axis=1) + bias
            i, f = ACT[ract](z[:, :u]), ACT[ract](z[:, u:2 * u])
            g, o = ACT[act](z[:, 2 * u:3 * u]), ACT[ract](z[:, 3 * u:])
            c_new = f * c + i * g
            new = [o * ACT[act](c_new), c_new]
        else:
            b_in, b_rec = (bias[0], bias[1]) if reset_after else (bias, np.zeros_like(bias))
            xz = project(xt) + b_in
            hz = [h_gate(h, k) @ recurrent[:, k * u:(k + 1) * u] for k in range(3)]
            if reset_after:
                zg = ACT[ract](xz[:, :u] + hz[0] + b_rec[:u])
                r = ACT[ract](xz[:, u:2 * u] + hz[1] + b_rec[u:2 * u])
                hh = ACT[act](xz[:, 2 * u:] + r * (hz[2] + b_rec[2 * u:]))
            else:
                zg = ACT[ract](xz[:, :u] + hz[0])
                r = ACT[ract](xz[:, u:2 * u] + hz[1])
                hh = ACT[act](xz[:, 2 * u:] + (r * h_gate(h, 2)) @ recurrent[:, 2 * u:])
            new = [zg * h + (1 - zg) * hh]
        keep = mask[:, t, None]
        states = [np.where(keep, s_new, s) for s_new, s in zip(new, states)]
        outputs[:, t] = states[0]
    return outputs, states


def oracle(kind, layer, x, mask=None, initial=None, **kw):
    weights = [np.asarray(w, np.float64) for w in layer.get_weights()]
    n = x.shape[0]
    if mask is None:
        mask = np.ones(x.shape[:2], bool)
    if initial is None:
        initial = [np.zeros((n, layer.units))] * (2 if kind == "lstm" else 1)
    if layer.go_backwards:
        x, mask = x[:, ::-1], mask[:, ::-1]
    outputs, states = run_cell(kind, x, mask, weights, initial, **kw)
    return outputs, states


# -- 1. the ops compiled in float64: gradients against finite differences ----------------------------
def _op_case(cell, rng, reset_after=True, dropout=False):
    gates, count = {"simple_rnn": (1, 1), "lstm": (4, 2), "gru": (3, 1)}[cell]
    n, steps, u = 2, 4, 3
    inputs = [rng.standard_normal((n, steps, gates * u))]
    inputs += [0.5 * rng.standard_normal((n, u)) for _ in range(count)]
    inputs += [0.6 * rng.standard_normal((u, gates * u)), np.array([[1, 0, 1, 1], [0, 1, 1, 0]], bool)]
    attrs = {"activation": "tanh"}
    if cell != "simple_rnn":
        attrs["recurrent_activation"] = "sigmoid"
    if cell == "gru":
        inputs.append(0.5 * rng.standard_normal(gates * u))
        attrs["reset_after"] = reset_after
    if dropout:  # recurrent dropout masks (n, G*u): zeros and 1 / (1 - 0.4)
        inputs.append(np.where(rng.random((n, gates * u)) < 0.4, 0.0, 1 / 0.6))
    return inputs, attrs


OP_CASES = [("simple_rnn", True, False), ("lstm", True, False), ("gru", True, False), ("gru", False, False),
            ("simple_rnn", True, True), ("lstm", True, True), ("gru", True, True), ("gru", False, True)]


@pytest.fixture(scope="module")
def compiled_op_gradients():
    """One float64 graph per case: loss = sum(op(...) * w) and its gradients, numba-compiled."""
    results = {}
    rng = np.random.default_rng(7)
    for cell, reset_after, dropout in OP_CASES:
        inputs, attrs = _op_case(cell, rng, reset_after, dropout)
        graph = Graph(f"recurrent_fd_{cell}_{reset_after}_{dropout}")
        with tracing(graph):
            symbols = [SymbolicTensor(graph, graph.add_placeholder(x.shape, x.dtype.name, f"in{i}").id)
                       for i, x in enumerate(inputs)]
            y = bind(f"{cell}_sequence", symbols, **attrs)
            weights = rng.standard_normal(y.shape)
            loss = ops.sum(ops.multiply(y, weights))
            floats = [i for i, x in enumerate(inputs) if x.dtype.kind == "f"]
            graph.outputs = [loss.node_id] + gradients(graph, loss.node_id, [symbols[i].node_id for i in floats])
        forward = Graph(f"recurrent_fd_forward_{cell}_{reset_after}_{dropout}")
        with tracing(forward):
            symbols = [SymbolicTensor(forward, forward.add_placeholder(x.shape, x.dtype.name, f"in{i}").id)
                       for i, x in enumerate(inputs)]
            forward.outputs = [ops.sum(ops.multiply(bind(f"{cell}_sequence", symbols, **attrs), weights)).node_id]
        results[cell, reset_after, dropout] = (inputs, floats, compile_graph(graph), compile_graph(forward))
    return results


@pytest.mark.parametrize("cell,reset_after,dropout", OP_CASES,
                         ids=[f"{c}-{r}" + ("-recurrent_dropout" if d else "") for c, r, d in OP_CASES])
def test_compiled_bptt_matches_finite_differences(compiled_op_gradients, cell, reset_after, dropout):
    """Every float input's gradient (the recurrent dropout masks' too) against float64 finite differences."""
    inputs, floats, step, forward = compiled_op_gradients[cell, reset_after, dropout]
    analytic = [np.array(g) for g in step(*inputs)[1:]]

    def loss(values):
        return float(np.array(forward(*values)[0]))

    eps = 1e-6
    for position, i in enumerate(floats):
        numeric = np.zeros_like(inputs[i])
        for index in np.ndindex(inputs[i].shape):
            plus, minus = list(inputs), list(inputs)
            plus[i], minus[i] = inputs[i].copy(), inputs[i].copy()
            plus[i][index] += eps
            minus[i][index] -= eps
            numeric[index] = (loss(plus) - loss(minus)) / (2 * eps)
        np.testing.assert_allclose(analytic[position], numeric, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{cell}: d loss / d input {i}")


def test_ops_refuse_unknown_activations_and_bad_masks():
    graph = Graph("bad")
    with tracing(graph):
        def placeholder(shape, dtype="float32"):
            return SymbolicTensor(graph, graph.add_placeholder(shape, dtype, "p").id)
        xp, h, w = placeholder((None, 4, 3)), placeholder((None, 3)), placeholder((3, 3))
        mask = placeholder((None, 4), "bool")
        with pytest.raises(ValueError, match="activation='gelu'"):
            bind("simple_rnn_sequence", [xp, h, w, mask], activation="gelu")
        with pytest.raises(ValueError, match="mask must be bool"):
            bind("simple_rnn_sequence", [xp, h, w, placeholder((None, 4))], activation="tanh")


# -- 2. the layers compiled in a model, against the numpy oracle -------------------------------------
LAYER_SPECS = {
    "lstm": lambda: layers.LSTM(U, return_sequences=True, return_state=True),
    "lstm_backwards_hard": lambda: layers.LSTM(U, return_sequences=True, return_state=True, go_backwards=True,
                                               recurrent_activation="hard_sigmoid"),
    "gru": lambda: layers.GRU(U, return_sequences=True, return_state=True),
    "gru_v1_backwards": lambda: layers.GRU(U, return_sequences=True, return_state=True, reset_after=False,
                                           go_backwards=True),
    "rnn_relu": lambda: layers.SimpleRNN(U, return_sequences=True, return_state=True, activation="relu"),
}
KINDS = {"lstm": "lstm", "lstm_backwards_hard": "lstm", "gru": "gru", "gru_v1_backwards": "gru", "rnn_relu": "rnn"}
OPTIONS = {"lstm_backwards_hard": {"ract": "hard_sigmoid"}, "gru_v1_backwards": {"reset_after": False},
           "rnn_relu": {"act": "relu"}}


def _randomize(layer, seed):
    rng = np.random.default_rng(seed)
    layer.set_weights([(0.5 * rng.standard_normal(w.shape)).astype("float32") for w in layer.get_weights()])


def _masked_inputs(rng, n=3):
    """Inputs whose masked timesteps are all-zero feature vectors (what Masking detects)."""
    x = rng.standard_normal((n, T, D)).astype("float32")
    keep = np.ones((n, T), bool)
    keep[0, 1] = keep[1, 3:] = False
    keep[2:, 0] = False
    return x * keep[..., None], keep


@pytest.fixture(scope="module")
def layer_model():
    """One model: Masking, then every layer spec on the masked sequence, plus one unmasked LSTM with
    an initial state; compiled once."""
    inputs = layers.Input((T, D))
    h0, c0 = layers.Input((U,)), layers.Input((U,))
    masked = layers.Masking()(inputs)
    built = {name: make() for name, make in LAYER_SPECS.items()}
    outputs = []
    for seed, layer in enumerate(built.values()):
        outputs += layer(masked)
        _randomize(layer, seed)
    with_state = layers.LSTM(U, return_sequences=True)
    outputs.append(with_state(inputs, initial_state=[h0, c0]))
    _randomize(with_state, 99)
    model = keras.Model([inputs, h0, c0], outputs)
    return model, built, with_state


def test_layers_match_keras_equations_with_masks_backwards_and_states(layer_model):
    model, built, with_state = layer_model
    rng = np.random.default_rng(1)
    x, keep = _masked_inputs(rng)
    h0, c0 = rng.standard_normal((2, 3, U)).astype("float32")
    outputs = [np.asarray(o) for o in model.predict([x, h0, c0], verbose=0)]
    k = 0
    for name, layer in built.items():
        sequence, states = oracle(KINDS[name], layer, x, keep, **OPTIONS.get(name, {}))
        got = outputs[k:k + 1 + len(states)]
        k += 1 + len(states)
        np.testing.assert_allclose(got[0], sequence, rtol=1e-5, atol=1e-5, err_msg=f"{name} sequence")
        for state, expected in zip(got[1:], states):
            np.testing.assert_allclose(state, expected, rtol=1e-5, atol=1e-5, err_msg=f"{name} state")
    sequence, _ = oracle("lstm", with_state, x, None, initial=[h0, c0])
    np.testing.assert_allclose(outputs[k], sequence, rtol=1e-5, atol=1e-5, err_msg="initial_state")


def test_masked_steps_carry_the_state_and_the_mask_propagates(layer_model):
    model, built, _ = layer_model
    lstm = built["lstm"]
    rng = np.random.default_rng(2)
    x, keep = _masked_inputs(rng)
    outputs = model.predict([x, np.zeros((3, U), "float32"), np.zeros((3, U), "float32")], verbose=0)
    sequence = np.asarray(outputs[0])
    np.testing.assert_array_equal(sequence[1, 3], sequence[1, 2])  # masked: the previous output again
    np.testing.assert_array_equal(sequence[2, 0], 0)  # masked first step: the zero initial state
    # the symbolic output of a return_sequences layer carries the input mask (Keras's compute_mask)
    assert lstm.output[0]._keras_mask is not None and lstm.output[1]._keras_mask is None


# -- 3. Embedding(mask_zero=True) -> LSTM: padding does not matter ---------------------------------
@pytest.fixture(scope="module")
def embedding_lstm():
    model = keras.Sequential([layers.Input((6,), dtype="int32"), layers.Embedding(20, 4, mask_zero=True),
                              layers.LSTM(3)])
    _randomize(model.layers[0], 5)
    _randomize(model.layers[1], 6)
    return model


def test_embedding_mask_zero_makes_padding_invisible_to_the_lstm(embedding_lstm):
    tokens = [7, 3, 12]
    batch = np.array([[7, 3, 12, 0, 0, 0],  # post-padding
                      [0, 0, 0, 7, 3, 12],  # pre-padding
                      [7, 0, 3, 0, 12, 0],  # padding in between
                      [15, 9, 4, 0, 0, 0]], "int32")  # other tokens: must differ
    out = np.asarray(embedding_lstm.predict(batch, verbose=0))
    np.testing.assert_allclose(out[1], out[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[2], out[0], rtol=1e-6, atol=1e-6)
    assert np.abs(out[3] - out[0]).max() > 1e-3
    # the padding row of the embedding table is never read through the mask
    embedding = embedding_lstm.layers[0]
    table = embedding.get_weights()[0]
    table[0] = 100.0
    embedding.set_weights([table])
    np.testing.assert_allclose(np.asarray(embedding_lstm.predict(batch[:1], verbose=0))[0], out[0], rtol=1e-6,
                               atol=1e-6)
    # and the numpy oracle on the unpadded tokens agrees
    lstm = embedding_lstm.layers[1]
    x = table[np.array([tokens])]
    _, (h, _) = oracle("lstm", lstm, x)
    np.testing.assert_allclose(out[0], h[0], rtol=1e-5, atol=1e-5)


# -- 4. wrappers -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wrapper_model():
    inputs = layers.Input((T, D))
    masked = layers.Masking()(inputs)
    bi_concat = layers.Bidirectional(layers.LSTM(U, return_sequences=True))
    bi_sum = layers.Bidirectional(layers.GRU(U), merge_mode="sum")
    bi_state = layers.Bidirectional(layers.SimpleRNN(U, return_state=True), merge_mode="ave")
    td_dense = layers.TimeDistributed(layers.Dense(2))
    td_conv = layers.TimeDistributed(layers.Reshape((D, 1)))
    outputs = [bi_concat(masked), bi_sum(masked)] + bi_state(inputs) + [td_dense(inputs), td_conv(inputs)]
    for seed, layer in enumerate((bi_concat, bi_sum, bi_state, td_dense)):
        _randomize(layer, 10 + seed)
    return keras.Model(inputs, outputs), (bi_concat, bi_sum, bi_state, td_dense)


def test_bidirectional_and_time_distributed_match_numpy(wrapper_model):
    model, (bi_concat, bi_sum, bi_state, td_dense) = wrapper_model
    rng = np.random.default_rng(3)
    x, keep = _masked_inputs(rng)
    out = [np.asarray(o) for o in model.predict(x, verbose=0)]
    # concat, return_sequences: forward outputs and the backward outputs flipped back to time order;
    # Bidirectional zeroes masked steps (Keras forces zero_output_for_mask when returning sequences)
    seq_f, _ = oracle("lstm", bi_concat.forward_layer, x, keep)
    seq_b, _ = oracle("lstm", bi_concat.backward_layer, x, keep)
    seq_f, seq_b = seq_f * keep[..., None], seq_b[:, ::-1] * keep[..., None]
    np.testing.assert_allclose(out[0], np.concatenate([seq_f, seq_b], -1), rtol=1e-5, atol=1e-5)
    _, (h_f,) = oracle("gru", bi_sum.forward_layer, x, keep)
    _, (h_b,) = oracle("gru", bi_sum.backward_layer, x, keep)
    np.testing.assert_allclose(out[1], h_f + h_b, rtol=1e-5, atol=1e-5)
    _, (s_f,) = oracle("rnn", bi_state.forward_layer, x)
    _, (s_b,) = oracle("rnn", bi_state.backward_layer, x)
    np.testing.assert_allclose(out[2], (s_f + s_b) / 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[3], s_f, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[4], s_b, rtol=1e-5, atol=1e-5)
    kernel, bias = td_dense.get_weights()
    np.testing.assert_allclose(out[5], x @ kernel + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[6], x[..., None])


def test_masking_layer_zeroes_masked_steps_and_sets_the_mask():
    x = np.array([[[1.0, 2.0], [0.0, 0.0], [0.0, 3.0]]], "float32")
    inputs = layers.Input((3, 2))
    out = layers.Masking(mask_value=0.0)(inputs)
    assert tuple(out._keras_mask.shape) == (None, 3)
    np.testing.assert_array_equal(np.asarray(layers.Masking()(x)), x)
    np.testing.assert_array_equal(np.asarray(layers.Masking().compute_mask(x)), [[True, False, True]])
    y = np.array([[[5.0, 5.0], [1.0, 5.0]]], "float32")
    np.testing.assert_array_equal(np.asarray(layers.Masking(mask_value=5.0)(y)), [[[0, 0], [1, 5]]])


# -- 5. configs and errors ---------------------------------------------------------------------------------
def test_configs_round_trip_with_keras_keys():
    lstm = layers.LSTM(5, return_sequences=True, go_backwards=True, unit_forget_bias=False, dropout=0.1)
    config = lstm.get_config()
    for key in ("units", "activation", "recurrent_activation", "use_bias", "unit_forget_bias", "return_sequences",
                "return_state", "go_backwards", "stateful", "unroll", "zero_output_for_mask", "dropout",
                "recurrent_dropout", "kernel_initializer", "recurrent_initializer", "seed"):
        assert key in config, key
    again = layers.LSTM.from_config(config)
    assert again.get_config() == config
    for layer in (layers.GRU(3, reset_after=False), layers.SimpleRNN(2, activation="relu"),
                  layers.Bidirectional(layers.LSTM(2, return_sequences=True), merge_mode="mul"),
                  layers.TimeDistributed(layers.Dense(3)), layers.Masking(mask_value=-1.0),
                  layers.RNN(layers.LSTMCell(3)), layers.RNN([layers.GRUCell(2), layers.SimpleRNNCell(3)])):
        restored = layers.deserialize(json.loads(json.dumps(layers.serialize(layer))))
        assert type(restored) is type(layer)
        assert restored.get_config() == layer.get_config(), type(layer).__name__


def test_unsupported_options_raise_clear_errors():
    with pytest.raises(ValueError, match="activation='gelu'"):
        layers.SimpleRNN(3, activation="gelu")

    class MyCell(keras.layers.Layer):
        state_size = (2, (3, 4))

    with pytest.raises(ValueError, match="MyCell has state_size"):
        layers.RNN(MyCell())  # custom cells run in a scan (tests/test_custom_rnn_cells.py); nested sizes do not
    with pytest.raises(ValueError, match="merge_mode"):
        layers.Bidirectional(layers.LSTM(2), merge_mode="max")


def test_rnn_of_cells_and_stacked_cells_match_the_layers():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, T, D)).astype("float32")
    stacked = layers.RNN([layers.LSTMCell(3), layers.GRUCell(2)], return_state=True)
    out = stacked(x)
    lstm_cell, gru_cell = stacked.cell.cells
    for seed, cell in enumerate((lstm_cell, gru_cell)):
        rng_w = np.random.default_rng(20 + seed)
        cell.set_weights([(0.5 * rng_w.standard_normal(w.shape)).astype("float32") for w in cell.get_weights()])
    out = stacked(x)
    weights = [np.asarray(w, np.float64) for w in lstm_cell.get_weights()]
    seq, (h1, c1) = run_cell("lstm", x, np.ones((2, T), bool), weights, [np.zeros((2, 3))] * 2)
    weights = [np.asarray(w, np.float64) for w in gru_cell.get_weights()]
    _, (h2,) = run_cell("gru", seq, np.ones((2, T), bool), weights, [np.zeros((2, 2))])
    for got, expected in zip(out, [h2, h1, c1, h2]):
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
    # a cell called on one step, as Keras's cell API
    h, (h_new, c_new) = lstm_cell(x[:, 0], [np.zeros((2, 3), "float32")] * 2)
    _, (h_ref, c_ref) = run_cell("lstm", x[:, :1], np.ones((2, 1), bool), [np.asarray(w, np.float64) for w in
                                 lstm_cell.get_weights()], [np.zeros((2, 3))] * 2)
    np.testing.assert_allclose(np.asarray(h), h_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(c_new), c_ref, rtol=1e-5, atol=1e-6)


# -- 5b. recurrent dropout ----------------------------------------------------------------------------
DROPOUT_SPECS = {
    "rnn": lambda: layers.SimpleRNN(U, return_sequences=True, recurrent_dropout=0.4),
    "lstm": lambda: layers.LSTM(U, return_sequences=True, recurrent_dropout=0.4),
    "gru": lambda: layers.GRU(U, return_sequences=True, recurrent_dropout=0.4),
    "gru_v1": lambda: layers.GRU(U, return_sequences=True, recurrent_dropout=0.4, reset_after=False),
}
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "gru_v1": 3}


@pytest.fixture(scope="module")
def fixed_mask_step():
    """One compiled graph: each layer called with training=True, its recurrent dropout masks
    replaced by graph inputs, so the test feeds masks it knows."""
    graph = Graph("recurrent_dropout_fixed_masks")
    built = {name: make() for name, make in DROPOUT_SPECS.items()}
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, T, D), "float32", "x").id)
        outputs = []
        for name, layer in built.items():
            drop = SymbolicTensor(graph, graph.add_placeholder((None, GATES[name] * U), "float32", name).id)
            layer.cell._recurrent_dropout_masks = lambda state, training, drop=drop: [drop] if training else []
            outputs.append(layer(x, training=True).node_id)
        graph.outputs = outputs
    for seed, layer in enumerate(built.values()):
        _randomize(layer, 40 + seed)
    return compile_graph(graph), built


def test_recurrent_dropout_with_fixed_masks_matches_the_masked_recurrence(fixed_mask_step):
    step, built = fixed_mask_step
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, T, D)).astype("float32")
    masks = [np.where(rng.random((3, GATES[name] * U)) < 0.4, 0.0, 1 / 0.6).astype("float32") for name in built]
    outputs = step(x, *masks)
    for (name, layer), drop, got in zip(built.items(), masks, outputs):
        kind = "gru" if name.startswith("gru") else name
        options = {"reset_after": False} if name == "gru_v1" else {}
        expected, _ = oracle(kind, layer, x, drop=drop, **options)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5, err_msg=name)
        plain, _ = oracle(kind, layer, x, **options)
        assert not np.allclose(expected, plain, atol=1e-3), f"{name}: the masks must change the output"


def test_recurrent_dropout_trains_and_is_off_at_inference():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((16, T, D)).astype("float32")
    y = x.sum(axis=(1, 2))[:, None].astype("float32")
    model = keras.Sequential([layers.Input((T, D)), layers.GRU(U, dropout=0.2, recurrent_dropout=0.5, seed=3),
                              layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    gru, dense = model.layers
    _, (h,) = oracle("gru", gru, x)
    kernel, bias = dense.get_weights()
    np.testing.assert_allclose(model.predict(x, verbose=0), h @ kernel + bias, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(model(x)), h @ kernel + bias, rtol=1e-4, atol=1e-4)


def test_implementation_1_draws_one_input_mask_per_gate(monkeypatch):
    """LSTM(implementation=1) and GRU with recurrent dropout (which forces it, as Keras) drop each
    gate's input with its own mask; the draws are replaced by known masks here."""
    from kgraph import random as krandom

    rng = np.random.default_rng(14)
    x = rng.standard_normal((3, T, D)).astype("float32")
    for kind, layer in (("lstm", layers.LSTM(U, dropout=0.3, implementation=1, return_sequences=True)),
                        ("gru", layers.GRU(U, dropout=0.3, recurrent_dropout=0.2, return_sequences=True))):
        assert layer.implementation == 1
        layer(x)
        _randomize(layer, 70)
        input_masks = [np.where(rng.random((3, 1, D)) < 0.3, 0.0, 1 / 0.7).astype("float32")
                       for _ in range(GATES[kind])]
        recurrent = np.where(rng.random((3, GATES[kind] * U)) < 0.2, 0.0, 1 / 0.8).astype("float32")
        queue = list(input_masks)

        def fake_dropout(inputs, rate, noise_shape=None, seed=None, queue=queue, recurrent=recurrent):
            inputs = np.asarray(inputs)
            return inputs * (queue.pop(0) if inputs.ndim == 3 else recurrent)

        monkeypatch.setattr(krandom, "dropout", fake_dropout)
        got = np.asarray(layer(x, training=True))
        monkeypatch.undo()
        assert not queue, f"{kind}: one input mask per gate"
        expected, _ = oracle(kind, layer, x, input_drop=[m[:, 0] for m in input_masks],
                             drop=recurrent if kind == "gru" else None)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=kind)
    assert layers.LSTM(2).implementation == 2 and layers.LSTM(2, recurrent_dropout=0.1).implementation == 1


# -- 5c. stateful layers ------------------------------------------------------------------------------
BATCH = 4


@pytest.fixture(scope="module")
def stateful_model():
    """SimpleRNN, LSTM and GRU (stateful, batch 4) on half-length sequences, compiled once."""
    inputs = keras.Input((T, D), batch_size=BATCH)
    built = {"rnn": layers.SimpleRNN(U, stateful=True, return_sequences=True),
             "lstm": layers.LSTM(U, stateful=True, return_sequences=True, go_backwards=True),
             "gru": layers.GRU(U, stateful=True, return_state=True)}
    outputs = []
    for seed, layer in enumerate(built.values()):
        out = layer(inputs)
        outputs += out if isinstance(out, list) else [out]
        _randomize(layer, 60 + seed)
    return keras.Model(inputs, outputs), built


def _stateful_oracle(layer, kind, pieces):
    """The layer's outputs on consecutive pieces of sequences, each piece starting from the last's states."""
    states, results = None, []
    for x in pieces:
        outputs, states = oracle(kind, layer, x, initial=states)
        results.append((outputs, states))
    return results


def test_stateful_layers_carry_their_states_from_call_to_call(stateful_model):
    model, built = stateful_model
    rng = np.random.default_rng(21)
    x = rng.standard_normal((BATCH, 2 * T, D)).astype("float32")
    for layer in built.values():
        layer.reset_states()
    first = model.predict(x[:, :T], batch_size=BATCH, verbose=0)
    second = model.predict(x[:, T:], batch_size=BATCH, verbose=0)
    whole_rnn, (h_rnn,) = oracle("rnn", built["rnn"], x)  # one call on the whole sequence
    np.testing.assert_allclose(np.concatenate([first[0], second[0]], axis=1), whole_rnn, rtol=1e-4, atol=1e-5)
    _, (h_gru,) = oracle("gru", built["gru"], x)
    np.testing.assert_allclose(second[2], h_gru, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(built["gru"].states[0]), h_gru, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(built["rnn"].states[0]), h_rnn, rtol=1e-4, atol=1e-5)
    # go_backwards: each call runs its own piece backwards, from the previous call's states
    (out1, _), (out2, states) = _stateful_oracle(built["lstm"], "lstm", [x[:, :T], x[:, T:]])
    np.testing.assert_allclose(first[1], out1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(second[1], out2, rtol=1e-4, atol=1e-5)
    for variable, expected in zip(built["lstm"].states, states):
        np.testing.assert_allclose(np.asarray(variable), expected, rtol=1e-4, atol=1e-5)
    # reset_states restores zeros: the first call's outputs again
    for layer in built.values():
        layer.reset_states()
        assert all(not np.any(np.asarray(v)) for v in layer.states)
    again = model.predict(x[:, :T], batch_size=BATCH, verbose=0)
    for got, expected in zip(again, first):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # a predict over several batches carries the states from batch to batch (sample i to sample i)
    for layer in built.values():
        layer.reset_states()
    y = rng.standard_normal((2 * BATCH, T, D)).astype("float32")
    both = model.predict(y, batch_size=BATCH, verbose=0)
    expected = _stateful_oracle(built["rnn"], "rnn", [y[:BATCH], y[BATCH:]])
    np.testing.assert_allclose(both[0][BATCH:], expected[1][0], rtol=1e-4, atol=1e-5)


def test_stateful_layers_refuse_other_batch_sizes(stateful_model):
    model, built = stateful_model
    x = np.zeros((BATCH + 2, T, D), "float32")
    for batch in (BATCH - 1, BATCH + 2):  # the compiled step checks the batch it is fed
        with pytest.raises(ValueError, match=r'SimpleRNN "simple_rnn.*batch size'):
            model.predict(x[:batch], batch_size=batch, verbose=0)
    with pytest.raises(ValueError, match=r'LSTM "lstm.*stateful=True needs a fixed batch size'):
        keras.Sequential([layers.Input((T, D)), layers.LSTM(U, stateful=True)])
    with pytest.raises(ValueError, match="batch size must be 4"):
        built["gru"](np.zeros((3, T, D), "float32"))
    with pytest.raises(OnnxExportError, match=r"stateful recurrent layers.*simple_rnn\w*/rnn_state"):
        convert(trace_inference_graph(model))


def test_stateful_fit_without_shuffling_and_save_load(tmp_path):
    rng = np.random.default_rng(22)
    x = rng.standard_normal((2 * BATCH, T, D)).astype("float32")
    y = x.sum(axis=(1, 2))[:, None]
    model = keras.Sequential([layers.Input(batch_shape=(BATCH, T, D)), layers.LSTM(U, stateful=True),
                              layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    lstm = model.layers[0]
    assert lstm.stateful and len(lstm.weights) == 3 and all(np.any(np.asarray(v)) for v in lstm.states)
    lstm.reset_states()
    expected = model.predict(x, batch_size=BATCH, verbose=0)
    kernel, bias = model.layers[1].get_weights()
    (_, states0), (_, states1) = _stateful_oracle(lstm, "lstm", [x[:BATCH], x[BATCH:]])
    np.testing.assert_allclose(expected, np.concatenate([states0[0], states1[0]]) @ kernel + bias,
                               rtol=1e-4, atol=1e-4)
    model.save(str(tmp_path / "stateful.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "stateful.keras"))
    assert loaded.layers[0].stateful and loaded.layers[0].get_config() == lstm.get_config()
    np.testing.assert_allclose(loaded.predict(x, batch_size=BATCH, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_stateful_bidirectional_and_stacked_cells_carry_and_reset_their_states():
    """Eager calls (the ops' numpy references): two halves equal one call of a stateless copy."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((2, 2 * T, D)).astype("float32")
    for make in (lambda stateful: layers.RNN([layers.LSTMCell(3), layers.GRUCell(2)], stateful=stateful,
                                             return_sequences=True),
                 lambda stateful: layers.Bidirectional(layers.SimpleRNN(2, stateful=stateful))):
        stateful, plain = make(True), make(False)
        stateful(x[:, :T])
        plain(x)
        plain.set_weights([(0.5 * rng.standard_normal(w.shape)).astype("float32") for w in plain.get_weights()])
        stateful.set_weights(plain.get_weights())
        stateful.reset_states()
        halves = [np.asarray(stateful(x[:, :T])), np.asarray(stateful(x[:, T:]))]
        if isinstance(stateful, layers.Bidirectional):  # the backward direction reads each half backwards
            forward = np.asarray(plain.forward_layer(x))
            np.testing.assert_allclose(halves[1][:, :2], forward, rtol=1e-5, atol=1e-6)
            assert len(stateful.states) == 2
        else:
            np.testing.assert_allclose(np.concatenate(halves, axis=1), np.asarray(plain(x)), rtol=1e-5, atol=1e-6)
            assert [tuple(s.shape) for s in stateful.states] == [(2, 3), (2, 3), (2, 2)]
        stateful.reset_states()
        assert all(not np.any(np.asarray(s)) for s in stateful.states)
        np.testing.assert_allclose(np.asarray(stateful(x[:, :T])), halves[0], rtol=1e-6, atol=1e-7)
    with pytest.raises(AttributeError, match="stateful"):
        layers.Bidirectional(layers.LSTM(2)).reset_state()


def test_match_batch_gradient_reaches_the_fixed_batch_state():
    graph = Graph("match_batch_grad")
    with tracing(graph):
        state = SymbolicTensor(graph, graph.add_placeholder((3, 2), "float64", "state").id)
        like = SymbolicTensor(graph, graph.add_placeholder((None, 5), "float64", "like").id)
        w = SymbolicTensor(graph, graph.add_placeholder((None, 2), "float64", "w").id)
        loss = ops.sum(ops.multiply(bind("match_batch", [state, like], layer="test"), w))
        graph.outputs = [loss.node_id] + gradients(graph, loss.node_id, [state.node_id])
    step = compile_graph(graph)
    rng = np.random.default_rng(3)
    s, weights = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    value, grad = step(s, np.zeros((3, 5)), weights)
    np.testing.assert_allclose(float(np.asarray(value)), np.sum(s * weights))
    np.testing.assert_allclose(np.asarray(grad), weights)
    with pytest.raises(ValueError, match="test: the batch size must equal"):
        step(s, np.zeros((4, 5)), rng.standard_normal((4, 2)))


# -- 6. the Functional API guide's ticket classifier -------------------------------------------------------
def test_ticket_classifier_trains_with_dict_losses_and_loss_weights():
    num_tags, num_words, num_departments, length = 6, 50, 4, 7
    title_input = keras.Input(shape=(length,), name="title", dtype="int32")
    body_input = keras.Input(shape=(length,), name="body", dtype="int32")
    tags_input = keras.Input(shape=(num_tags,), name="tags")
    title_features = layers.Embedding(num_words, 8)(title_input)
    body_features = layers.Embedding(num_words, 8)(body_input)
    title_features = layers.LSTM(8)(title_features)
    body_features = layers.LSTM(4)(body_features)
    x = layers.concatenate([title_features, body_features, tags_input])
    priority_pred = layers.Dense(1, name="priority")(x)
    department_pred = layers.Dense(num_departments, name="department")(x)
    model = keras.Model(inputs=[title_input, body_input, tags_input],
                        outputs={"priority": priority_pred, "department": department_pred})
    model.compile(optimizer=keras.optimizers.RMSprop(1e-2),
                  loss={"priority": keras.losses.BinaryCrossentropy(from_logits=True),
                        "department": keras.losses.CategoricalCrossentropy(from_logits=True)},
                  loss_weights={"priority": 1.0, "department": 0.2})
    rng = np.random.default_rng(0)
    n = 32
    title = rng.integers(0, num_words, (n, length)).astype("int32")
    body = rng.integers(0, num_words, (n, length)).astype("int32")
    tags = rng.integers(0, 2, (n, num_tags)).astype("float32")
    priority = (title[:, :1] % 2).astype("float32")  # learnable from the title
    department = np.eye(num_departments, dtype="float32")[body[:, 0] % num_departments]
    history = model.fit({"title": title, "body": body, "tags": tags},
                        {"priority": priority, "department": department}, epochs=4, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses


# -- 7. Keras 3 itself (optional) ----------------------------------------------------------------------------
KERAS_SCRIPT = r"""
import json, sys
import numpy as np
import keras
spec = json.loads(sys.argv[1])
x = np.asarray(spec["x"], "float32")
mask = np.asarray(spec["mask"], bool)
out = {}
for name, (cls, kwargs, weights) in spec["layers"].items():
    layer = getattr(keras.layers, cls)(**kwargs)
    layer.build(x.shape)
    layer.set_weights([np.asarray(w, "float32") for w in weights])
    result = layer(x, mask=mask)
    result = result if isinstance(result, (list, tuple)) else [result]
    out[name] = [np.asarray(r).tolist() for r in result]
print(json.dumps(out))
"""


def _run_keras(command, env):
    try:
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip("Keras 3 did not finish in 10 minutes")


@pytest.mark.skipif(KERAS_PYTHON is None, reason=SKIP_REASON)
def test_same_outputs_as_keras_3_on_the_same_weights():
    rng = np.random.default_rng(5)
    x, keep = _masked_inputs(rng, n=2)
    specs = {"lstm": ("LSTM", {"units": 3, "return_sequences": True, "return_state": True}),
             "gru": ("GRU", {"units": 3, "return_sequences": True, "go_backwards": True}),
             "gru_v1": ("GRU", {"units": 3, "reset_after": False, "return_state": True}),
             "rnn": ("SimpleRNN", {"units": 3, "return_sequences": True})}
    ours, payload = {}, {}
    for seed, (name, (cls, kwargs)) in enumerate(specs.items()):
        layer = getattr(layers, cls)(**kwargs)
        layer.build(x.shape)
        _randomize(layer, 30 + seed)
        result = layer(x, mask=keep)
        ours[name] = [np.asarray(r) for r in (result if isinstance(result, list) else [result])]
        payload[name] = (cls, kwargs, [w.tolist() for w in layer.get_weights()])
    spec = json.dumps({"x": x.tolist(), "mask": keep.tolist(), "layers": payload})
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = _run_keras([KERAS_PYTHON, "-c", KERAS_SCRIPT, spec], env)
    if done.returncode != 0:
        pytest.skip(f"Keras 3 did not run: {done.stderr[-500:]}")
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    for name in specs:
        assert len(theirs[name]) == len(ours[name]), name
        for a, b in zip(ours[name], theirs[name]):
            np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=name)


KERAS_SAVE_SCRIPT = r"""
import sys
import numpy as np
import keras
from keras import layers as L
inp = keras.Input((5,), dtype="int32")
x = L.Embedding(20, 4)(inp)
x = L.Bidirectional(L.LSTM(3, return_sequences=True))(x)
x = L.GRU(3, return_sequences=True, go_backwards=True)(x)
x = L.TimeDistributed(L.Dense(2))(x)
x = L.SimpleRNN(2)(x)
model = keras.Model(inp, x)
for k, w in enumerate(model.weights):
    w.assign(np.random.default_rng(k).standard_normal(w.shape).astype("float32") * 0.5)
ids = np.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0], [0, 7, 8, 9, 1]], "int32")
np.save(sys.argv[1] + "/expected.npy", model.predict(ids, verbose=0))
model.save(sys.argv[1] + "/model.keras")
"""


@pytest.mark.skipif(KERAS_PYTHON is None, reason=SKIP_REASON)
def test_a_keras_3_model_file_with_recurrent_layers_loads_and_predicts_the_same(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = _run_keras([KERAS_PYTHON, "-c", KERAS_SAVE_SCRIPT, str(tmp_path)], env)
    if done.returncode != 0:
        pytest.skip(f"Keras 3 did not run: {done.stderr[-500:]}")
    model = keras.saving.load_model(str(tmp_path / "model.keras"))
    ids = np.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0], [0, 7, 8, 9, 1]], "int32")
    np.testing.assert_allclose(model.predict(ids, verbose=0), np.load(tmp_path / "expected.npy"), rtol=1e-5,
                               atol=1e-6)
