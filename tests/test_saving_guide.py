"""The flows of Keras's 'Save, serialize, and export models' guide under `import kgraph as keras`:
a subclassed model with get_config saved and reloaded, registered custom functions, custom
object scopes, configs, JSON, clones, weights, and a pretrained trunk reused with a new head.
"""

from __future__ import annotations

import numpy as np
import pytest

import kgraph as keras
from kgraph import ops


@keras.saving.register_keras_serializable(package="guide", name="custom_fn")
def custom_fn(x):
    return x ** 2


@keras.saving.register_keras_serializable(package="guide")
class CustomLayer(keras.layers.Layer):
    def __init__(self, sublayer, **kwargs):
        super().__init__(**kwargs)
        self.sublayer = sublayer

    def call(self, x):
        return self.sublayer(x)

    def get_config(self):
        return {**super().get_config(), "sublayer": keras.saving.serialize_keras_object(self.sublayer)}

    @classmethod
    def from_config(cls, config):
        sublayer = keras.saving.deserialize_keras_object(config.pop("sublayer"))
        return cls(sublayer, **config)


@keras.saving.register_keras_serializable(package="guide")
class CustomModel(keras.Model):
    def __init__(self, hidden_units, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = hidden_units
        self.dense_layers = [keras.layers.Dense(u) for u in hidden_units]

    def call(self, inputs):
        x = inputs
        for layer in self.dense_layers:
            x = layer(x)
        return x

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}


def _data(rows=16, features=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, features)).astype("float32")


def test_subclassed_model_saves_and_loads_with_identical_predictions(tmp_path):
    x = _data()
    model = CustomModel([16, 16, 10])
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "custom_model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded) is CustomModel and reloaded.hidden_units == [16, 16, 10]
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), expected)
    # the weights are the ones saved: recompute in numpy from the reloaded weights
    h = x.astype("float64")
    for kernel, bias in zip(reloaded.weights[::2], reloaded.weights[1::2]):
        h = h @ np.asarray(kernel, "float64") + np.asarray(bias, "float64")
    np.testing.assert_allclose(expected, h, rtol=1e-5, atol=1e-5)


def test_registered_function_and_nested_layer_round_trip(tmp_path):
    inputs = keras.Input((3,))
    outputs = CustomLayer(keras.layers.Dense(2, activation=custom_fn, name="inner"))(inputs)
    model = keras.Model(inputs, outputs)
    x = _data(5, 3)
    w, b = (np.asarray(v, "float64") for v in model.weights)
    np.testing.assert_allclose(model.predict(x, verbose=0), (x @ w + b) ** 2, rtol=1e-5, atol=1e-6)
    assert keras.saving.get_registered_name(custom_fn) == "guide>custom_fn"
    assert keras.saving.get_registered_object("guide>custom_fn") is custom_fn
    path = str(tmp_path / "fn.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_custom_object_scope_and_custom_objects_argument(tmp_path):
    class Doubler(keras.layers.Layer):  # not registered
        def call(self, x):
            return ops.multiply(x, 2.0)

    inputs = keras.Input((3,))
    model = keras.Model(inputs, Doubler(name="doubler")(keras.layers.Dense(3)(inputs)))
    path = str(tmp_path / "scoped.keras")
    model.save(path)
    x = _data(4, 3)
    with pytest.raises((TypeError, ValueError), match="Doubler"):
        keras.models.load_model(path)
    with keras.saving.custom_object_scope({"Doubler": Doubler}):
        scoped = keras.models.load_model(path)
    with keras.saving.CustomObjectScope({"Doubler": Doubler}):
        also_scoped = keras.models.load_model(path)
    by_argument = keras.models.load_model(path, custom_objects={"Doubler": Doubler})
    expected = model.predict(x, verbose=0)
    for loaded in (scoped, also_scoped, by_argument):
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def test_config_json_and_clone_give_fresh_weights_of_the_same_architecture():
    inputs = keras.Input((4,), name="in")
    outputs = keras.layers.Dense(1, name="out")(keras.layers.Dense(8, activation="relu", name="h")(inputs))
    model = keras.Model(inputs, outputs)
    from_config = keras.Model.from_config(model.get_config())
    from_json = keras.models.model_from_json(model.to_json())
    clone = keras.models.clone_model(model)
    for other in (from_config, from_json, clone):
        assert [layer.name for layer in other.layers] == ["in", "h", "out"]
        assert [v.shape for v in other.weights] == [v.shape for v in model.weights]
        assert not np.array_equal(np.asarray(other.weights[0]), np.asarray(model.weights[0]))
    clone.set_weights(model.get_weights())
    x = _data(6, 4)
    np.testing.assert_array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))


def test_save_weights_load_weights(tmp_path):
    model = CustomModel([8, 2])
    x = _data(5, 4)
    model(x)
    path = str(tmp_path / "guide.weights.h5")
    model.save_weights(path)
    other = CustomModel([8, 2])
    other(x)
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(ValueError, match="weights.h5"):
        model.save_weights(str(tmp_path / "wrong.h5"))


def test_pretrained_trunk_reused_without_its_head(tmp_path):
    """Train a model, save it, reload it, and build a new model from its trunk with a new head:
    the trunk's weights carry over and the trunk's output equals the old model's hidden layer."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="trunk")(inputs)
    outputs = keras.layers.Dense(2, name="old_head")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    path = str(tmp_path / "pretrained.keras")
    model.save(path)

    pretrained = keras.models.load_model(path)
    trunk = keras.Model(pretrained.inputs, pretrained.get_layer("trunk").output)
    trunk.trainable = False
    new_inputs = keras.Input((4,))
    new_model = keras.Model(new_inputs, keras.layers.Dense(1, activation="sigmoid", name="new_head")(trunk(new_inputs)))
    assert len(new_model.trainable_weights) == 2  # only the new head trains
    kernel, bias = (np.asarray(v, "float64") for v in model.get_layer("trunk").weights)
    np.testing.assert_allclose(trunk.predict(x, verbose=0), np.maximum(x @ kernel + bias, 0), rtol=1e-5, atol=1e-6)
    before = [np.asarray(v).copy() for v in trunk.weights]
    new_model.compile(optimizer="adam", loss="binary_crossentropy")
    new_model.fit(x, y.astype("float32"), batch_size=16, epochs=1, verbose=0)
    for old, variable in zip(before, trunk.weights):
        np.testing.assert_array_equal(np.asarray(variable), old)
