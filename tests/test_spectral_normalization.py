"""SpectralNormalization: power iteration on the wrapped layer's kernel, written back in training.

Oracle: the power iteration and the normalized layer written in numpy here; the training
update against central finite differences of the numpy loss (u and v held constant, as the
layer stops their gradients)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from keras_reference import SKIP_REASON, keras_python

import kgraph as keras
from kgraph import layers

RNG = np.random.default_rng(0)
X = RNG.standard_normal((16, 5)).astype("float32")
Y = RNG.standard_normal((16, 4)).astype("float32")


def _power_step(w, u):
    v = u @ w.T
    v /= np.linalg.norm(v)
    u = v @ w
    u /= np.linalg.norm(u)
    return u, v


def _dense_model(learning_rate):
    wrapper = layers.SpectralNormalization(layers.Dense(4))
    model = keras.Sequential([keras.Input((5,)), wrapper])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model, wrapper


def test_a_training_step_normalizes_the_kernel_and_updates_vector_u():
    model, wrapper = _dense_model(0.0)
    w, u, b = (wrapper.layer.kernel.numpy().astype(np.float64), wrapper.vector_u.numpy().astype(np.float64),
               wrapper.layer.bias.numpy())
    before = model.predict(X, verbose=0)
    np.testing.assert_allclose(before, X @ w + b, rtol=1e-5, atol=1e-6)  # inference: the kernel as stored
    assert np.array_equal(wrapper.layer.kernel.numpy(), w.astype(np.float32))
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    u_new, v = _power_step(w, u)
    sigma = (v @ w @ u_new.T).item()
    np.testing.assert_allclose(wrapper.layer.kernel.numpy(), w / sigma, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(wrapper.vector_u.numpy(), u_new, rtol=1e-5, atol=1e-7)


def test_repeated_steps_bring_the_spectral_norm_to_one():
    model, wrapper = _dense_model(0.0)
    model.fit(np.tile(X, (40, 1)), np.tile(Y, (40, 1)), batch_size=16, epochs=1, verbose=0)
    assert abs(np.linalg.svd(wrapper.layer.kernel.numpy(), compute_uv=False)[0] - 1.0) < 1e-3


def test_the_optimizer_step_follows_the_gradient_through_the_normalization():
    lr = 0.1
    model, wrapper = _dense_model(lr)
    w, u, b = (wrapper.layer.kernel.numpy().astype(np.float64), wrapper.vector_u.numpy().astype(np.float64),
               wrapper.layer.bias.numpy().astype(np.float64))
    u_new, v = _power_step(w, u)

    def loss(kernel):
        sigma = (v @ kernel @ u_new.T).item()  # u and v are constants of the step
        return np.mean((X @ (kernel / sigma) + b - Y) ** 2)

    grad = np.zeros_like(w)
    for index in np.ndindex(w.shape):
        step = np.zeros_like(w)
        step[index] = 1e-6
        grad[index] = (loss(w + step) - loss(w - step)) / 2e-6
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    sigma = (v @ w @ u_new.T).item()
    np.testing.assert_allclose(wrapper.layer.kernel.numpy(), w / sigma - lr * grad, rtol=1e-4, atol=1e-6)


def test_conv_and_embedding_kernels_and_a_keras_file_round_trip(tmp_path):
    model = keras.Sequential([keras.Input((6,), dtype="int32"),
                              layers.SpectralNormalization(layers.Embedding(10, 3), power_iterations=3),
                              layers.Reshape((6, 3, 1)),
                              layers.SpectralNormalization(layers.Conv2D(2, 3, padding="same")),
                              layers.GlobalAveragePooling2D()])
    model.compile(optimizer="adam", loss="mse")
    tokens = RNG.integers(0, 10, (8, 6)).astype("int32")
    model.fit(tokens, RNG.standard_normal((8, 2)).astype("float32"), epochs=2, verbose=0)
    embedding = model.layers[0]
    assert embedding.kernel is embedding.layer.embeddings and embedding.power_iterations == 3
    path = tmp_path / "spectral.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(tokens, verbose=0), model.predict(tokens, verbose=0), rtol=1e-6)
    assert reloaded.layers[2].get_config()["power_iterations"] == 1


def test_bad_arguments_are_refused_naming_the_layer():
    with pytest.raises(ValueError, match="power_iterations must be greater than zero"):
        layers.SpectralNormalization(layers.Dense(2), power_iterations=0)
    with pytest.raises(ValueError, match="has no `kernel` or `embeddings`"):
        layers.SpectralNormalization(layers.Activation("relu"))(X)


KERAS_MODEL = """
import sys
import numpy as np
import keras
rng = np.random.default_rng(1)
model = keras.Sequential([keras.Input((5,)), keras.layers.SpectralNormalization(keras.layers.Dense(4)),
                          keras.layers.SpectralNormalization(keras.layers.Dense(3), power_iterations=2)])
model.compile(optimizer="sgd", loss="mse")
model.fit(rng.standard_normal((32, 5)), rng.standard_normal((32, 3)), epochs=2, verbose=0)
x = rng.standard_normal((6, 5)).astype("float32")
np.save(sys.argv[1] + "/x.npy", x)
np.save(sys.argv[1] + "/y.npy", model.predict(x, verbose=0))
np.save(sys.argv[1] + "/u.npy", model.layers[1].vector_u.numpy())
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
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.layers[1].vector_u.numpy(), np.load(tmp_path / "u.npy"))
