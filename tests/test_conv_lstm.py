"""ConvLSTM1D/2D/3D: an LSTM with convolutions, its time loop a `scan` op.

Oracles: a numpy ConvLSTM written here (direct convolution loops, Keras 3's gate order i, f,
c, o and weight layout), and optionally Keras itself (KGRAPH_KERAS_PYTHON): a Keras-written
file loads and predicts the same."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from keras_reference import SKIP_REASON, keras_python

import kgraph as keras
from kgraph import layers

RNG = np.random.default_rng(7)


def _np_conv(x, w, stride, padding):
    """x (n, *spatial, c), w (*k, c, f): the N-d cross-correlation Keras's conv computes."""
    rank = w.ndim - 2
    spatial, kernel = x.shape[1:-1], w.shape[:rank]
    if padding == "same":
        out = [-(-s // stride) for s in spatial]
        total = [max((o - 1) * stride + k - s, 0) for o, k, s in zip(out, kernel, spatial)]
        x = np.pad(x, [(0, 0)] + [(t // 2, t - t // 2) for t in total] + [(0, 0)])
    else:
        out = [(s - k) // stride + 1 for s, k in zip(spatial, kernel)]
    result = np.zeros((x.shape[0], *out, w.shape[-1]))
    for offset in np.ndindex(*kernel):
        window = tuple(slice(o, o + stride * (n - 1) + 1, stride) for o, n in zip(offset, out))
        result += np.tensordot(x[(slice(None),) + window], w[offset], axes=([-1], [0]))
    return result


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _np_conv_lstm(x, kernel, recurrent, bias, stride=1, padding="valid", backwards=False):
    steps = range(x.shape[1] - 1, -1, -1) if backwards else range(x.shape[1])
    h = c = None
    outputs = []
    for t in steps:
        z = _np_conv(x[:, t], kernel, stride, padding) + bias
        if h is None:
            h = c = np.zeros(z.shape[:-1] + (kernel.shape[-1] // 4,))
        z = z + _np_conv(h, recurrent, 1, "same")
        z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
        c = _sigmoid(z_f) * c + _sigmoid(z_i) * np.tanh(z_c)
        h = _sigmoid(z_o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


def _weights(layer):
    cell = layer.cell
    return [np.asarray(v.numpy(), np.float64) for v in (cell.kernel, cell.recurrent_kernel, cell.bias)]


@pytest.mark.parametrize("rank, shape, options", [
    (1, (3, 7, 2), dict(padding="same", return_sequences=True)),
    (2, (3, 6, 5, 2), dict(strides=2, go_backwards=True)),
    (3, (2, 4, 4, 3, 1), dict(padding="same")),
])
def test_forward_matches_a_numpy_conv_lstm(rank, shape, options):
    x = RNG.standard_normal((2,) + shape).astype("float32")
    layer = {1: layers.ConvLSTM1D, 2: layers.ConvLSTM2D, 3: layers.ConvLSTM3D}[rank](4, 3, **options)
    model = keras.Sequential([keras.Input(shape), layer])
    kernel, recurrent, bias = _weights(layer)
    assert np.array_equal(bias[4:8], np.ones(4)) and not bias[:4].any()  # unit_forget_bias
    bias = bias + RNG.standard_normal(bias.shape) * 0.1
    layer.cell.bias.assign(bias.astype("float32"))
    sequence, h, _ = _np_conv_lstm(x.astype(np.float64), kernel, recurrent, bias, options.get("strides", 1),
                                   options.get("padding", "valid"), options.get("go_backwards", False))
    want = sequence if options.get("return_sequences") else h
    got = model.predict(x, verbose=0)
    assert got.shape == want.shape and got.shape[1:] == tuple(model.output.shape[1:])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_return_state_masks_channels_first_and_training():
    x = RNG.standard_normal((6, 4, 5, 5, 2)).astype("float32")
    inputs = keras.Input((4, 5, 5, 2))
    output, h, c = layers.ConvLSTM2D(3, 3, padding="same", return_state=True)(inputs)
    model = keras.Model(inputs, [output, h, c])
    kernel, recurrent, bias = _weights(model.layers[1])
    _, h_np, c_np = _np_conv_lstm(x.astype(np.float64), kernel, recurrent, bias, padding="same")
    got = model.predict(x, verbose=0)
    for g, want in zip(got, [h_np, h_np, c_np]):
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5)

    x_in, m_in = keras.Input((4, 5, 5, 2)), keras.Input((4,), dtype="bool")
    masked_layer = layers.ConvLSTM2D(3, 3, return_sequences=True, zero_output_for_mask=True)
    masked = keras.Model([x_in, m_in], masked_layer(x_in, mask=m_in))
    kernel, recurrent, bias = _weights(masked_layer)
    lengths = np.array([4, 2, 3, 1, 4, 2])
    mask = np.arange(4)[None, :] < lengths[:, None]
    got = masked.predict([x, mask], verbose=0)
    for row, length in enumerate(lengths):  # masked steps: the state stays, the output is zero
        sequence, _, _ = _np_conv_lstm(x[row:row + 1, :length].astype(np.float64), kernel, recurrent, bias)
        np.testing.assert_allclose(got[row, :length], sequence[0], rtol=1e-4, atol=1e-5)
        assert not got[row, length:].any()

    first = layers.ConvLSTM2D(3, 3, data_format="channels_first")
    channels_first = keras.Sequential([keras.Input((4, 2, 5, 5)), first])
    kernel, recurrent, bias = _weights(first)
    _, h_np, _ = _np_conv_lstm(x.astype(np.float64), kernel, recurrent, bias)
    np.testing.assert_allclose(channels_first.predict(x.transpose(0, 1, 4, 2, 3), verbose=0),
                               h_np.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-5)

    y = (x.mean(axis=(1, 2, 3, 4)) > 0).astype("float32")[:, None]
    classifier = keras.Sequential([keras.Input((4, 5, 5, 2)), layers.ConvLSTM2D(4, 3, dropout=0.2,
                                                                                 recurrent_dropout=0.2),
                                   layers.GlobalAveragePooling2D(), layers.Dense(1, activation="sigmoid")])
    classifier.compile(optimizer=keras.optimizers.Adam(0.03), loss="binary_crossentropy")
    history = classifier.fit(np.tile(x, (4, 1, 1, 1, 1)), np.tile(y, (4, 1)), epochs=6, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]


def test_config_round_trip_and_refused_options(tmp_path):
    model = keras.Sequential([keras.Input((3, 4, 4, 1)), layers.ConvLSTM2D(2, (2, 3), strides=(1, 1),
                                                                           recurrent_activation="hard_sigmoid")])
    config = model.layers[0].get_config()
    assert config["filters"] == 2 and config["kernel_size"] == (2, 3) and config["recurrent_activation"]
    path = tmp_path / "conv_lstm.keras"
    model.save(path)
    x = RNG.standard_normal((2, 3, 4, 4, 1)).astype("float32")
    np.testing.assert_allclose(keras.saving.load_model(path).predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
    with pytest.raises(NotImplementedError, match="stateful=True is not supported"):
        layers.ConvLSTM2D(2, 3, stateful=True)
    with pytest.raises(ValueError, match="not compatible with dilation_rate"):
        layers.ConvLSTM2D(2, 3, strides=2, dilation_rate=2)


KERAS_MODEL = """
import sys
import numpy as np
import keras
rng = np.random.default_rng(3)
model = keras.Sequential([keras.Input((4, 6, 5, 2)),
                          keras.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True),
                          keras.layers.ConvLSTM2D(2, (2, 3), strides=2)])
for w in model.weights:
    w.assign(rng.standard_normal(w.shape) * 0.3)
x = rng.standard_normal((2, 4, 6, 5, 2)).astype("float32")
np.save(sys.argv[1] + "/x.npy", x)
np.save(sys.argv[1] + "/y.npy", model.predict(x, verbose=0))
model.save(sys.argv[1] + "/model.keras")
"""


@pytest.mark.skipif(keras_python() is None, reason=SKIP_REASON)
def test_a_keras_written_file_loads_and_predicts_the_same(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax")}
    done = subprocess.run([keras_python(), "-c", KERAS_MODEL, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    model = keras.saving.load_model(str(tmp_path / "model.keras"))
    np.testing.assert_allclose(model.predict(np.load(tmp_path / "x.npy"), verbose=0), np.load(tmp_path / "y.npy"),
                               rtol=1e-4, atol=1e-5)
