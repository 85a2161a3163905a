"""ReversibleEmbedding against numpy transcriptions of Keras 3.15's formulas."""

import numpy as np
import pytest

import kgraph as keras
from kgraph.layers.embedding import ReversibleEmbedding

rng = np.random.default_rng(3)


@pytest.mark.parametrize("tie_weights", [True, False])
def test_forward_and_reverse_match_numpy(tie_weights):
    layer = ReversibleEmbedding(10, 4, tie_weights=tie_weights, logit_soft_cap=1.5)
    ids = rng.integers(0, 10, (2, 3)).astype("int32")
    vectors = layer(ids)
    table = layer.embeddings.numpy()
    np.testing.assert_allclose(vectors, table[ids])
    hidden = rng.standard_normal((2, 3, 4)).astype("float32")
    kernel = table.T if tie_weights else layer.reverse_embeddings.numpy()
    assert [w.name for w in layer.weights] == ["embeddings"] + ([] if tie_weights else ["reverse_embeddings"])
    np.testing.assert_allclose(layer(hidden, reverse=True), 1.5 * np.tanh(hidden @ kernel / 1.5), rtol=1e-5,
                               atol=1e-6)
    assert layer.compute_output_shape((2, 3, 4), reverse=True) == (2, 3, 10)
    config = layer.get_config()
    assert config["tie_weights"] is tie_weights and ReversibleEmbedding.from_config(config).get_config() == config


def test_tied_model_trains_both_ways_through_one_table():
    ids = keras.Input((5,), dtype="int32")
    embedding = ReversibleEmbedding(12, 6, mask_zero=True)
    logits = embedding(keras.layers.Dense(6, activation="tanh")(embedding(ids)), reverse=True)
    model = keras.Model(ids, logits)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.integers(1, 12, (64, 5)).astype("int32")
    history = model.fit(x, x, epochs=5, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert len(model.trainable_weights) == 3  # one shared table, the Dense kernel and bias
    dense = model.layers[2]
    table = embedding.embeddings.numpy()
    hidden = np.tanh(table[x[:2]] @ dense.kernel.numpy() + dense.bias.numpy())
    np.testing.assert_allclose(model.predict(x[:2], verbose=0), hidden @ table.T, rtol=1e-4, atol=1e-5)
