"""Convolution, pooling and reshaping layers: Keras 3 shapes, weights and configs; the
compiled path against eager (reference) execution; the Functional API guide's
convolutional autoencoder and toy ResNet; a CNN on scikit-learn's digits.

Compiled models are built once per module (numba compile time dominates).
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

import kgraph as keras
from kgraph import layers


# -- shapes and configs ----------------------------------------------------------------------------
def _output_shape(input_shape, *stack):
    model = keras.Sequential([keras.Input(input_shape), *stack])
    return model.output_shape


def test_keras_guide_output_shapes():
    assert _output_shape((250, 250, 3), layers.Conv2D(32, 5, strides=2), layers.Conv2D(32, 3),
                         layers.MaxPooling2D(3)) == (None, 40, 40, 32)
    assert _output_shape((32, 32, 3), layers.Conv2D(16, 3, padding="same"),
                         layers.MaxPooling2D(3)) == (None, 10, 10, 16)


SHAPE_CASES = [  # (input shape without batch, layer, expected output shape without batch)
    ((10, 3), lambda: layers.Conv1D(4, 3), (8, 4)),
    ((10, 3), lambda: layers.Conv1D(4, 3, padding="causal", dilation_rate=2), (10, 4)),
    ((10, 3), lambda: layers.Conv1D(4, 3, strides=2, padding="same"), (5, 4)),
    ((3, 10), lambda: layers.Conv1D(4, 3, data_format="channels_first"), (4, 8)),
    ((9, 8, 4), lambda: layers.Conv2D(6, (3, 2), strides=(2, 1)), (4, 7, 6)),
    ((9, 8, 4), lambda: layers.Conv2D(6, 3, padding="same", groups=2), (9, 8, 6)),
    ((4, 9, 8), lambda: layers.Conv2D(6, 3, data_format="channels_first"), (6, 7, 6)),
    ((5, 6, 7, 2), lambda: layers.Conv3D(3, 3, padding="same", strides=2), (3, 3, 4, 3)),
    ((5, 3), lambda: layers.Conv1DTranspose(4, 3, strides=2), (11, 4)),
    ((5, 4, 3), lambda: layers.Conv2DTranspose(4, 3, strides=2, padding="same"), (10, 8, 4)),
    ((5, 4, 3), lambda: layers.Conv2DTranspose(4, 3, strides=2, output_padding=1), (12, 10, 4)),
    ((3, 5, 4), lambda: layers.Conv2DTranspose(4, 3, data_format="channels_first"), (4, 7, 6)),
    ((2, 3, 4, 2), lambda: layers.Conv3DTranspose(2, 2, strides=(1, 2, 1)), (3, 6, 5, 2)),
    ((10, 3), lambda: layers.DepthwiseConv1D(3, depth_multiplier=2), (8, 6)),
    ((9, 8, 4), lambda: layers.DepthwiseConv2D(3, strides=2, padding="same"), (5, 4, 4)),
    ((10, 3), lambda: layers.SeparableConv1D(5, 3), (8, 5)),
    ((9, 8, 4), lambda: layers.SeparableConv2D(5, 3, padding="same", depth_multiplier=2), (9, 8, 5)),
    ((10, 3), lambda: layers.MaxPooling1D(), (5, 3)),
    ((10, 3), lambda: layers.AveragePooling1D(3, strides=2, padding="same"), (5, 3)),
    ((9, 8, 4), lambda: layers.MaxPooling2D(3, strides=2), (4, 3, 4)),
    ((9, 8, 4), lambda: layers.AveragePooling2D((2, 3), padding="same"), (5, 3, 4)),
    ((4, 9, 8), lambda: layers.MaxPooling2D(2, data_format="channels_first"), (4, 4, 4)),
    ((4, 6, 5, 2), lambda: layers.MaxPooling3D(), (2, 3, 2, 2)),
    ((4, 6, 5, 2), lambda: layers.AveragePooling3D(2, padding="same"), (2, 3, 3, 2)),
    ((10, 3), lambda: layers.GlobalMaxPooling1D(), (3,)),
    ((10, 3), lambda: layers.GlobalAveragePooling1D(keepdims=True), (1, 3)),
    ((9, 8, 4), lambda: layers.GlobalMaxPooling2D(), (4,)),
    ((4, 9, 8), lambda: layers.GlobalAveragePooling2D(data_format="channels_first", keepdims=True), (4, 1, 1)),
    ((4, 6, 5, 2), lambda: layers.GlobalAveragePooling3D(), (2,)),
    ((4, 6, 5, 2), lambda: layers.GlobalMaxPooling3D(keepdims=True), (1, 1, 1, 2)),
    ((10, 3), lambda: layers.UpSampling1D(3), (30, 3)),
    ((4, 5, 3), lambda: layers.UpSampling2D((2, 3), interpolation="bilinear"), (8, 15, 3)),
    ((2, 3, 4, 2), lambda: layers.UpSampling3D(), (4, 6, 8, 2)),
    ((10, 3), lambda: layers.ZeroPadding1D((1, 2)), (13, 3)),
    ((4, 5, 3), lambda: layers.ZeroPadding2D(((1, 0), (2, 1))), (5, 8, 3)),
    ((2, 3, 4, 2), lambda: layers.ZeroPadding3D(1), (4, 5, 6, 2)),
    ((10, 3), lambda: layers.Cropping1D((1, 2)), (7, 3)),
    ((6, 7, 3), lambda: layers.Cropping2D(((1, 0), (2, 1))), (5, 4, 3)),
    ((4, 5, 6, 2), lambda: layers.Cropping3D(1), (2, 3, 4, 2)),
    ((3, 4, 5), lambda: layers.Permute((3, 1, 2)), (5, 3, 4)),
    ((7,), lambda: layers.RepeatVector(3), (3, 7)),
]


@pytest.mark.parametrize("case", SHAPE_CASES, ids=[f"{i}" for i in range(len(SHAPE_CASES))])
def test_output_shapes_follow_keras(case):
    shape, make, expected = case
    layer = make()
    assert _output_shape(shape, layer) == (None,) + expected
    assert tuple(layer.compute_output_shape((None,) + shape)) == (None,) + expected


def test_weight_shapes_and_names():
    conv = layers.Conv2D(8, 3, groups=2)
    conv.build((None, 9, 9, 4))
    assert [(w.name, w.shape) for w in conv.weights] == [("kernel", (3, 3, 2, 8)), ("bias", (8,))]
    transpose = layers.Conv2DTranspose(8, 3, use_bias=False)
    transpose.build((None, 5, 5, 4))
    assert [w.shape for w in transpose.weights] == [(3, 3, 8, 4)]
    depthwise = layers.DepthwiseConv2D(3, depth_multiplier=2)
    depthwise.build((None, 5, 5, 4))
    assert [(w.name, w.shape) for w in depthwise.weights] == [("kernel", (3, 3, 4, 2)), ("bias", (8,))]
    separable = layers.SeparableConv1D(6, 3)
    separable.build((None, 9, 4))
    assert [(w.name, w.shape) for w in separable.weights] == [
        ("depthwise_kernel", (3, 4, 1)), ("pointwise_kernel", (1, 4, 6)), ("bias", (6,))]
    assert layers.Conv2D(4, 3).name.startswith("conv2d")
    assert layers.MaxPooling2D().name.startswith("max_pooling2d")


def test_argument_errors_follow_keras():
    with pytest.raises(ValueError, match="strides > 1"):
        layers.Conv2D(4, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="divisible"):
        layers.Conv2D(5, 3, groups=2)
    with pytest.raises(ValueError, match="padding"):
        layers.Conv2D(4, 3, padding="causal")
    with pytest.raises(ValueError, match="output padding"):
        layers.Conv2DTranspose(4, 3, strides=2, output_padding=2)
    with pytest.raises(ValueError, match="incompatible"):
        layers.Conv2D(4, 3)(np.zeros((2, 5, 5), np.float32))


CONFIG_LAYERS = [
    lambda: layers.Conv1D(4, 3, padding="causal", kernel_regularizer="l2", activation="relu"),
    lambda: layers.Conv2D(8, (3, 2), strides=(2, 1), groups=2, use_bias=False, data_format="channels_first"),
    lambda: layers.Conv3D(2, 3, dilation_rate=2, bias_initializer="ones"),
    lambda: layers.Conv2DTranspose(4, 3, strides=2, output_padding=1, padding="same"),
    lambda: layers.Conv1DTranspose(4, 3),
    lambda: layers.Conv3DTranspose(4, 2),
    lambda: layers.DepthwiseConv2D(3, depth_multiplier=2, depthwise_regularizer="l1"),
    lambda: layers.DepthwiseConv1D(5),
    lambda: layers.SeparableConv2D(4, 3, depth_multiplier=2, pointwise_initializer="he_normal"),
    lambda: layers.SeparableConv1D(4, 3),
    lambda: layers.MaxPooling2D(3, strides=2, padding="same"),
    lambda: layers.AveragePooling1D(2),
    lambda: layers.MaxPooling3D(),
    lambda: layers.GlobalAveragePooling2D(keepdims=True),
    lambda: layers.GlobalMaxPooling1D(data_format="channels_first"),
    lambda: layers.UpSampling2D(2, interpolation="bilinear"),
    lambda: layers.UpSampling1D(4),
    lambda: layers.UpSampling3D((1, 2, 2)),
    lambda: layers.ZeroPadding2D(((1, 2), (3, 4))),
    lambda: layers.ZeroPadding1D(2),
    lambda: layers.Cropping2D(1),
    lambda: layers.Cropping1D((0, 2)),
    lambda: layers.Permute((2, 1)),
    lambda: layers.RepeatVector(4),
]


@pytest.mark.parametrize("make", CONFIG_LAYERS, ids=[str(i) for i in range(len(CONFIG_LAYERS))])
def test_get_config_round_trips(make):
    layer = make()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


def test_conv2d_config_has_the_keras_keys():
    config = layers.Conv2D(4, 3).get_config()
    expected = {"filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "groups",
                "activation", "use_bias", "kernel_initializer", "bias_initializer", "kernel_regularizer",
                "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"}
    assert expected <= set(config)
    assert config["kernel_size"] == (3, 3) and config["strides"] == (1, 1) and config["padding"] == "valid"
    assert config["data_format"] == "channels_last" and config["activation"] == "linear"
    assert layers.MaxPooling2D().get_config()["pool_size"] == (2, 2)
    assert layers.MaxPooling2D().get_config()["strides"] == (2, 2)


def test_regularizers_add_losses():
    layer = layers.Conv2D(2, 3, kernel_regularizer=keras.regularizers.L2(0.5), kernel_initializer="ones")
    layer.build((None, 5, 5, 1))
    assert float(np.asarray(layer.losses[0])) == pytest.approx(0.5 * 18)


# -- every layer compiled against eager execution -------------------------------------------------------
def _multi_output_model():
    """One functional model through every layer (both data formats), compiled once."""
    image = keras.Input((8, 7, 4), name="image")
    image_cf = keras.Input((4, 8, 7), name="image_cf")
    sequence = keras.Input((10, 3), name="sequence")
    volume = keras.Input((4, 5, 4, 2), name="volume")
    vector = keras.Input((5,), name="vector")
    outputs = [
        layers.Conv2D(8, 3, padding="same", activation="relu")(image),
        layers.Conv2D(6, 3, strides=2, groups=2)(image),
        layers.Conv2D(4, 3, data_format="channels_first", activation="relu")(image_cf),
        layers.Conv1D(5, 3, padding="causal", dilation_rate=2)(sequence),
        layers.Conv3D(3, 2, padding="same")(volume),
        layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")(image),
        layers.Conv2DTranspose(3, 3, data_format="channels_first")(image_cf),
        layers.Conv1DTranspose(3, 2, strides=3, output_padding=1)(sequence),
        layers.Conv3DTranspose(2, 2, strides=(1, 2, 1))(volume),
        layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(image),
        layers.DepthwiseConv1D(3)(sequence),
        layers.SeparableConv2D(6, 3, activation="relu")(image),
        layers.SeparableConv1D(4, 3, padding="same")(sequence),
        layers.MaxPooling2D(2)(image),
        layers.MaxPooling2D(3, strides=2, padding="same", data_format="channels_first")(image_cf),
        layers.AveragePooling2D(3, strides=2, padding="same")(image),
        layers.MaxPooling1D(3, strides=2)(sequence),
        layers.AveragePooling1D(2)(sequence),
        layers.MaxPooling3D(2)(volume),
        layers.AveragePooling3D(2, padding="same")(volume),
        layers.GlobalMaxPooling2D()(image),
        layers.GlobalAveragePooling2D(data_format="channels_first")(image_cf),
        layers.GlobalAveragePooling1D(keepdims=True)(sequence),
        layers.GlobalMaxPooling3D()(volume),
        layers.UpSampling2D(2)(image),
        layers.UpSampling2D((2, 3), interpolation="bilinear")(image),
        layers.UpSampling2D(2, data_format="channels_first")(image_cf),
        layers.UpSampling1D(2)(sequence),
        layers.UpSampling3D((1, 2, 1))(volume),
        layers.ZeroPadding2D(((1, 0), (2, 1)))(image),
        layers.ZeroPadding2D(1, data_format="channels_first")(image_cf),
        layers.ZeroPadding1D(2)(sequence),
        layers.ZeroPadding3D(1)(volume),
        layers.Cropping2D(((1, 2), (0, 1)))(image),
        layers.Cropping1D((2, 1))(sequence),
        layers.Cropping3D(1)(volume),
        layers.Permute((2, 3, 1))(image),
        layers.RepeatVector(3)(vector),
    ]
    return keras.Model([image, image_cf, sequence, volume, vector], outputs)


@pytest.fixture(scope="module")
def every_layer():
    model = _multi_output_model()
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((3,) + tuple(t.shape[1:])).astype(np.float32) for t in model.inputs]
    return model, inputs, model.predict(inputs, verbose=0)


def test_every_layer_compiled_matches_eager(every_layer):
    model, inputs, predicted = every_layer
    values = dict(zip((id(t) for t in model.inputs), inputs))
    for index, node in enumerate(model.outputs):
        layer, _, _ = node._keras_history
        call = layer._inbound_nodes[0]
        args = [values[id(t)] for t in call.input_tensors]
        expected = np.asarray(layer(args[0]))
        got = predicted[index]
        assert got.shape == expected.shape, layer.name
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=layer.name)


# -- the Functional API guide's models ----------------------------------------------------------------------
def test_convolutional_autoencoder_trains():
    encoder_input = keras.Input(shape=(28, 28, 1), name="img")
    x = layers.Conv2D(16, 3, activation="relu")(encoder_input)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D(3)(x)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.Conv2D(16, 3, activation="relu")(x)
    encoder_output = layers.GlobalMaxPooling2D()(x)
    encoder = keras.Model(encoder_input, encoder_output, name="encoder")
    assert encoder.output_shape == (None, 16)
    x = layers.Reshape((4, 4, 1))(encoder_output)
    x = layers.Conv2DTranspose(16, 3, activation="relu")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu")(x)
    x = layers.UpSampling2D(3)(x)
    x = layers.Conv2DTranspose(16, 3, activation="relu")(x)
    decoder_output = layers.Conv2DTranspose(1, 3, activation="relu")(x)
    autoencoder = keras.Model(encoder_input, decoder_output, name="autoencoder")
    assert autoencoder.output_shape == (None, 28, 28, 1)
    images = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    autoencoder.compile(optimizer="adam", loss="mse")
    history = autoencoder.fit(images, images, batch_size=8, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert encoder.predict(images[:2], verbose=0).shape == (2, 16)


def test_toy_resnet_trains():
    inputs = keras.Input(shape=(32, 32, 3), name="img")
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    block_1_output = layers.MaxPooling2D(3)(x)
    x = layers.Conv2D(64, 3, activation="relu", padding="same")(block_1_output)
    x = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
    block_2_output = layers.add([x, block_1_output])
    x = layers.Conv2D(64, 3, activation="relu", padding="same")(block_2_output)
    x = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
    block_3_output = layers.add([x, block_2_output])
    x = layers.Conv2D(64, 3, activation="relu")(block_3_output)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(10)(x)
    model = keras.Model(inputs, outputs, name="toy_resnet")
    assert model.output_shape == (None, 10)
    assert model.count_params() == 223242  # as the guide's summary
    rng = np.random.default_rng(1)
    x_train = rng.random((32, 32, 32, 3)).astype("float32")
    y_train = keras.utils.to_categorical(rng.integers(0, 10, 32), 10)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["acc"])
    history = model.fit(x_train, y_train, batch_size=16, epochs=2, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "acc", "val_loss", "val_acc"}
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.predict(x_train[:3], verbose=0).shape == (3, 10)


# -- a CNN learns scikit-learn's digits ------------------------------------------------------------------
def test_cnn_learns_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    random.seed(0)  # initializers draw their seeds from Python's random (as Keras does)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=32, epochs=40, verbose=0)
    elapsed = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.95, accuracy
    assert elapsed < 120, elapsed  # about 6 s of training here, plus compiling (numba, cached on disk)
