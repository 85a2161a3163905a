"""Normalization, activation, regularization and embedding layers against numpy transcriptions
of Keras 3's formulas, eagerly and compiled, with float64 finite-difference gradients."""

import numpy as np
import pytest

import kgraph as keras
from kgraph.compiler.autodiff import gradients
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.layers.activation_layers import ELU, LeakyReLU, PReLU, ReLU, Softmax
from kgraph.layers.embedding import Embedding
from kgraph.layers.normalization import (
    BatchNormalization,
    GroupNormalization,
    LayerNormalization,
    RMSNormalization,
    UnitNormalization,
)
from kgraph.layers.regularization import (
    ActivityRegularization,
    AlphaDropout,
    GaussianDropout,
    GaussianNoise,
    SpatialDropout2D,
)
from kgraph.runtime.reference import evaluate

rng = np.random.default_rng(0)


def test_batch_normalization_training_and_inference():
    x = rng.standard_normal((16, 5)).astype("float32") * 3 + 1
    layer = BatchNormalization(momentum=0.9, epsilon=1e-3)
    y = np.asarray(layer(x, training=True))
    mean, var = x.mean(0), x.var(0)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-5)
    y_inf = np.asarray(layer(x, training=False))
    np.testing.assert_allclose(y_inf, (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var + 1e-3), rtol=1e-4, atol=1e-5)
    assert [w.name for w in layer.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert len(layer.trainable_weights) == 2


def test_batch_normalization_moving_stats_update_in_compiled_fit():
    model = keras.Sequential([keras.Input((4,)), BatchNormalization(momentum=0.5), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = rng.standard_normal((8, 4)).astype("float32") + 2.0
    model.fit(x, np.zeros((8, 1), "float32"), batch_size=8, epochs=1, verbose=0, shuffle=False)
    bn = model.layers[0]
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.5 * x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.5 + 0.5 * x.var(0), rtol=1e-5)


def test_layer_group_unit_rms_normalization():
    x = rng.standard_normal((3, 4, 6)).astype("float32")
    ln = LayerNormalization(epsilon=1e-3)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(ln(x), (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-5)
    ln2 = LayerNormalization(axis=[1, 2], epsilon=1e-3)
    mean, var = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    np.testing.assert_allclose(ln2(x), (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-5)
    gn = GroupNormalization(groups=2, epsilon=1e-3)
    grouped = x.reshape(3, 4, 2, 3)
    mean, var = grouped.mean((1, 3), keepdims=True), grouped.var((1, 3), keepdims=True)
    np.testing.assert_allclose(gn(x), ((grouped - mean) / np.sqrt(var + 1e-3)).reshape(x.shape), rtol=1e-4,
                               atol=1e-5)
    norm = np.sqrt((x ** 2).sum(-1, keepdims=True))
    np.testing.assert_allclose(UnitNormalization()(x), x / norm, rtol=1e-5)
    rms = RMSNormalization(epsilon=1e-6)
    np.testing.assert_allclose(rms(x), x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6), rtol=1e-5)


def test_activation_layers():
    x = rng.standard_normal((4, 5)).astype("float32") * 3
    np.testing.assert_allclose(ReLU()(x), np.maximum(x, 0))
    np.testing.assert_allclose(ReLU(max_value=1.0)(x), np.clip(x, 0, 1))
    np.testing.assert_allclose(ReLU(negative_slope=0.1, threshold=0.5)(x), np.where(x >= 0.5, x, 0.1 * (x - 0.5)),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(LeakyReLU()(x), np.where(x >= 0, x, 0.3 * x), rtol=1e-6)
    np.testing.assert_allclose(ELU(alpha=0.5)(x), np.where(x > 0, x, 0.5 * np.expm1(x)), rtol=1e-5, atol=1e-6)
    expected = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(Softmax()(x), expected / expected.sum(-1, keepdims=True), rtol=1e-5)
    prelu = PReLU(alpha_initializer=keras.initializers.Constant(0.25))
    np.testing.assert_allclose(prelu(x), np.where(x > 0, x, 0.25 * x), rtol=1e-6)
    assert prelu.alpha.shape == (5,)
    assert PReLU(shared_axes=[1, 2]).compute_output_shape((None, 3, 4, 5)) == (None, 3, 4, 5)


def test_embedding_lookup_and_training():
    layer = Embedding(10, 3)
    ids = np.array([[1, 2], [9, 0]], "int32")
    out = np.asarray(layer(ids))
    np.testing.assert_array_equal(out, layer.embeddings.numpy()[ids])
    model = keras.Sequential([keras.Input((2,), dtype="int32"), Embedding(10, 3), keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = model.layers[0].embeddings.numpy()
    model.fit(ids, np.ones((2, 1), "float32"), epochs=1, verbose=0)
    changed = np.any(model.layers[0].embeddings.numpy() != before, axis=1)
    assert set(np.flatnonzero(changed)) == {0, 1, 2, 9}


def test_noise_layers_only_act_while_training():
    x = np.ones((400, 8), "float32")
    for layer in [GaussianNoise(0.5, seed=1), GaussianDropout(0.3, seed=1), AlphaDropout(0.2, seed=1),
                  SpatialDropout2D(0.5, seed=1)]:
        x_in = x.reshape(400, 2, 2, 2) if isinstance(layer, SpatialDropout2D) else x
        np.testing.assert_array_equal(layer(x_in, training=False), x_in)
        assert np.any(np.asarray(layer(x_in, training=True)) != x_in)
    noisy = np.asarray(GaussianNoise(0.5, seed=2)(x, training=True)) - 1
    assert abs(noisy.std() - 0.5) < 0.05 and abs(noisy.mean()) < 0.05
    dropped = np.asarray(SpatialDropout2D(0.5, seed=3)(x.reshape(400, 2, 2, 2), training=True))
    per_map = dropped.reshape(400, 4, 2)
    assert np.all((per_map == 0).all(1) | (per_map != 0).all(1))  # whole feature maps dropped together


def test_activity_regularization_adds_loss():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, ActivityRegularization(l2=0.5)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    x = np.full((4, 3), 2.0, "float32")
    loss = model.evaluate(x, x, verbose=0, batch_size=4)
    assert loss == pytest.approx(0.5 * (4 * 3 * 4.0) / 4)


@pytest.mark.parametrize("make", [lambda: LayerNormalization(), lambda: BatchNormalization(),
                                  lambda: GroupNormalization(groups=2), lambda: PReLU()],
                         ids=["layer_norm", "batch_norm", "group_norm", "prelu"])
def test_gradients_match_finite_differences(make):
    layer = make()
    layer.build((None, 4))
    for variable in layer.weights:
        variable.assign(rng.standard_normal(variable.shape).astype(variable.dtype) * 0.5 + 1.0)
    graph = Graph("grad")
    weights = rng.standard_normal((5, 4))
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((5, 4), "float64", "x").id)
        y = layer(x, training=True)
        loss = keras.ops.sum(keras.ops.multiply(keras.ops.cast(y, "float64"), weights))
    graph.outputs = [loss.node_id]
    graph.outputs += gradients(graph, loss.node_id, [x.node_id])
    x_value = rng.standard_normal((5, 4))
    _, analytic = evaluate(graph, [x_value])[0]
    numeric = np.zeros_like(x_value)
    for index in np.ndindex(x_value.shape):
        plus, minus = x_value.copy(), x_value.copy()
        plus[index] += 1e-6
        minus[index] -= 1e-6
        numeric[index] = (evaluate(graph, [plus])[0][0] - evaluate(graph, [minus])[0][0]) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer", [BatchNormalization(momentum=0.5), LayerNormalization(epsilon=1e-5),
                                   GroupNormalization(groups=2), UnitNormalization(), RMSNormalization(),
                                   ReLU(max_value=2.0), LeakyReLU(0.1), PReLU(shared_axes=[1]), ELU(0.5),
                                   Softmax(axis=1), Embedding(5, 2), GaussianNoise(0.1), GaussianDropout(0.2),
                                   AlphaDropout(0.1), SpatialDropout2D(0.3), ActivityRegularization(l1=0.1)],
                         ids=lambda layer: type(layer).__name__)
def test_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
