"""Lambda: calls its function eagerly and compiled, shapes and masks as Keras 3, configs that
Keras 3 reads, and no code run from a file."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kgraph as keras
from kgraph import layers, ops


@keras.saving.register_keras_serializable(package="lambda_test")
def scaled_softplus(x, scale=1.0):
    return scale * ops.log(1.0 + ops.exp(x))


def test_lambda_with_arguments_compiles_and_matches_numpy(tmp_path):
    inputs = keras.Input((3,))
    outputs = layers.Lambda(scaled_softplus, arguments={"scale": 2.0}, name="soft")(layers.Dense(4)(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    w, b = (np.asarray(v, "float64") for v in model.weights)
    np.testing.assert_allclose(model.predict(x, verbose=0), 2.0 * np.log1p(np.exp(x @ w + b)), rtol=1e-5)
    path = tmp_path / "lambda.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    config = model.get_layer("soft").get_config()
    assert config["arguments"] == {"scale": 2.0}
    assert config["function"]["registered_name"] == "lambda_test>scaled_softplus"


def test_output_shape_and_mask():
    layer = layers.Lambda(lambda x: ops.concatenate([x, x], axis=-1), output_shape=(6,),
                          mask=lambda inputs, previous: ops.greater(ops.sum(inputs, axis=-1), 0.0))
    assert layer.compute_output_shape((None, 3)) == (None, 6)
    traced = layers.Lambda(lambda x: ops.reshape(x, (-1, 2, 3)))
    assert traced.compute_output_shape((None, 6)) == (None, 2, 3)
    x = np.array([[1.0, 2.0, 3.0], [-1.0, -2.0, 0.0]], "float32")
    np.testing.assert_array_equal(np.asarray(layer.compute_mask(x)), [True, False])
    np.testing.assert_array_equal(np.asarray(layer(x)), np.concatenate([x, x], axis=-1))


def test_a_saved_python_lambda_is_refused_on_load(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, layers.Lambda(lambda x: x * 3.0, name="triple")(inputs))
    config = model.get_layer("triple").get_config()
    assert config["function"]["class_name"] == "__lambda__"  # Keras 3's format (bytecode)
    json.dumps(config)
    path = tmp_path / "lambda.keras"
    model.save(path)
    for safe_mode in (True, False):
        with pytest.raises(ValueError, match="lambda"):
            keras.models.load_model(path, safe_mode=safe_mode)


def test_errors_name_the_layer():
    with pytest.raises(TypeError, match="callable"):
        layers.Lambda(3, name="not_a_function")
