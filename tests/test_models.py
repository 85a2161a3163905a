"""Model building: Sequential and Functional as the Keras 3 guides use them (Dense parts)."""

import numpy as np
import pytest

import kgraph as keras
from kgraph import layers


def test_sequential_matches_manual_composition():
    model = keras.Sequential([
        layers.Dense(2, activation="relu", name="layer1"),
        layers.Dense(3, activation="relu", name="layer2"),
        layers.Dense(4, name="layer3"),
    ])
    x = np.ones((3, 3), "float32")
    y = model(x)
    manual = x
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        manual = manual @ kernel + bias
        if layer.name != "layer3":
            manual = np.maximum(manual, 0)
    np.testing.assert_allclose(y, manual, rtol=1e-5, atol=1e-6)
    assert [layer.name for layer in model.layers] == ["layer1", "layer2", "layer3"]


def test_sequential_add_pop_and_deferred_build():
    model = keras.Sequential()
    model.add(layers.Dense(2, activation="relu"))
    model.add(layers.Dense(3, activation="relu"))
    model.add(layers.Dense(4))
    model.pop()
    assert len(model.layers) == 2
    assert not model.built
    with pytest.raises(ValueError, match="not built"):
        model.layers[0].count_params()
    model(np.ones((1, 4), "float32"))
    assert model.built
    assert len(model.weights) == 4
    assert model.output_shape == (None, 3)


def test_sequential_with_input_builds_immediately_and_summarizes(capsys):
    model = keras.Sequential([keras.Input(shape=(4,)), layers.Dense(2, activation="relu")])
    assert len(model.weights) == 2
    model.summary()
    text = capsys.readouterr().out
    assert "(None, 2)" in text and "Total params: 10" in text and "Dense" in text


def test_input_shape_argument_on_first_layer():
    model = keras.Sequential([layers.Dense(2, activation="relu", input_shape=(4,))])
    assert model.built and model.output_shape == (None, 2)


def test_feature_extraction_from_sequential():
    initial = keras.Sequential([
        keras.Input(shape=(250,)),
        layers.Dense(32, activation="relu"),
        layers.Dense(32, activation="relu", name="my_intermediate_layer"),
        layers.Dense(32, activation="relu"),
    ])
    extractor = keras.Model(inputs=initial.inputs,
                            outputs=initial.get_layer(name="my_intermediate_layer").output)
    x = np.random.default_rng(0).standard_normal((2, 250)).astype("float32")
    features = extractor(x)
    hidden = x
    for layer in initial.layers[:2]:
        kernel, bias = layer.get_weights()
        hidden = np.maximum(hidden @ kernel + bias, 0)
    np.testing.assert_allclose(features, hidden, rtol=1e-4, atol=1e-5)


def test_functional_mnist_style_model_shapes_and_params():
    inputs = keras.Input(shape=(784,))
    x = layers.Dense(64, activation="relu")(inputs)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(10)(x)
    model = keras.Model(inputs=inputs, outputs=outputs, name="mnist_model")
    assert isinstance(model, keras.models.Functional)
    assert model.count_params() == 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert inputs.shape == (None, 784) and outputs.shape == (None, 10)
    assert model.predict(np.zeros((5, 784), "float32"), verbose=0).shape == (5, 10)


def test_shared_layers_and_models_called_as_layers():
    inputs = keras.Input(shape=(8,))
    shared = layers.Dense(4)
    a = shared(inputs)
    b = shared(layers.Dense(8)(inputs))
    merged = layers.add([a, b])
    model = keras.Model(inputs, merged)
    assert len(model.trainable_weights) == 4  # shared kernel and bias count once

    def make():
        i = keras.Input(shape=(8,))
        return keras.Model(i, layers.Dense(1)(i))

    m1, m2, m3 = make(), make(), make()
    ens_in = keras.Input(shape=(8,))
    ensemble = keras.Model(ens_in, layers.average([m1(ens_in), m2(ens_in), m3(ens_in)]))
    x = np.random.default_rng(1).standard_normal((3, 8)).astype("float32")
    expected = (m1.predict(x, verbose=0) + m2.predict(x, verbose=0) + m3.predict(x, verbose=0)) / 3
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_multi_input_multi_output_with_dicts():
    title = keras.Input(shape=(6,), name="title")
    body = keras.Input(shape=(5,), name="body")
    x = layers.concatenate([title, body])
    x = layers.Dense(7, activation="relu")(x)
    priority = layers.Dense(1, name="priority")(x)
    department = layers.Dense(3, name="department")(x)
    model = keras.Model(inputs=[title, body], outputs={"priority": priority, "department": department})
    rng = np.random.default_rng(2)
    data = {"title": rng.standard_normal((4, 6)).astype("float32"),
            "body": rng.standard_normal((4, 5)).astype("float32")}
    out = model.predict(data, verbose=0)
    assert out["priority"].shape == (4, 1) and out["department"].shape == (4, 3)
    out_list = model.predict([data["title"], data["body"]], verbose=0)
    np.testing.assert_allclose(out_list["department"], out["department"])


def test_layer_input_output_attributes_and_get_layer():
    inputs = keras.Input(shape=(3,))
    dense = layers.Dense(2, name="d")
    outputs = dense(inputs)
    model = keras.Model(inputs, outputs)
    assert dense.input is inputs and dense.output is outputs
    assert dense.input_shape == (None, 3) and dense.output_shape == (None, 2)
    assert model.get_layer("d") is dense
    with pytest.raises(ValueError, match="No such layer"):
        model.get_layer("missing")


def test_set_and_get_weights_round_trip():
    model = keras.Sequential([keras.Input((3,)), layers.Dense(2)])
    weights = [np.arange(6, dtype="float32").reshape(3, 2), np.array([1.0, -1.0], "float32")]
    model.set_weights(weights)
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(model(np.ones((1, 3), "float32")), [[7.0, 8.0]])
    with pytest.raises(ValueError, match="shape"):
        model.set_weights([np.zeros((2, 2), "float32"), np.zeros(2, "float32")])


def test_merge_layers_match_numpy():
    a_in, b_in = keras.Input((4,)), keras.Input((4,))
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 4)).astype("float32"), rng.standard_normal((2, 4)).astype("float32")
    for layer, expected in [(layers.Add(), a + b), (layers.Subtract(), a - b), (layers.Multiply(), a * b),
                            (layers.Average(), (a + b) / 2), (layers.Maximum(), np.maximum(a, b)),
                            (layers.Minimum(), np.minimum(a, b)),
                            (layers.Concatenate(), np.concatenate([a, b], -1))]:
        model = keras.Model([a_in, b_in], layer([a_in, b_in]))
        np.testing.assert_allclose(model.predict([a, b], verbose=0), expected, rtol=1e-6, atol=1e-6)


def test_reshape_flatten_activation_dropout_layers():
    inputs = keras.Input((2, 6))
    x = layers.Reshape((3, 4))(inputs)
    x = layers.Flatten()(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(0.5)(x)
    model = keras.Model(inputs, x)
    assert model.output_shape == (None, 12)
    data = np.random.default_rng(4).standard_normal((3, 2, 6)).astype("float32")
    np.testing.assert_allclose(model.predict(data, verbose=0), np.maximum(data.reshape(3, 12), 0))
    assert layers.Reshape((-1, 2)).compute_output_shape((None, 3, 4)) == (None, 6, 2)


def test_dropout_training_drops_and_scales():
    layer = layers.Dropout(0.5, seed=3)
    x = np.ones((200, 50), "float32")
    y = np.asarray(layer(x, training=True))
    kept = y != 0
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_allclose(y[kept], 2.0)
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_incompatible_input_errors_name_the_layer():
    model = keras.Sequential([keras.Input((4,)), layers.Dense(2, name="dense_in")])
    with pytest.raises(ValueError, match=r"expected shape=\(None, 4\).*\(None, 5\)|axis -1"):
        model.predict(np.zeros((2, 5), "float32"), verbose=0)
    dense = layers.Dense(3, name="my_dense")
    dense(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match='layer "my_dense".*axis -1.*value 4.*\\(1, 6\\)'):
        dense(np.zeros((1, 6), "float32"))
    with pytest.raises(ValueError, match="Unknown activation|Could not interpret activation"):
        layers.Dense(3, activation="no_such_activation")
