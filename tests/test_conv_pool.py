"""The conv-pool rewrite (kgraph/compiler/passes/conv_pool.py) against the unfused graph.

The fused ops' kernels are checked against their numpy references in test_ops.py (the
registry samples). Here: where the rewrite applies in real models, and that a compiled
training step and prediction give what the same model compiled without it gives.
"""

from __future__ import annotations

import numpy as np
import pytest

import kgraph as keras
from kgraph import layers
from kgraph.compiler.passes import pipeline

STEPS = 3


def _models():
    """Conv2D+relu+pool (the first layer: rewritten in training too), a second Conv2D+pool (its
    input needs a gradient: rewritten for prediction only), and a 1-D branch without bias or
    activation, strided, "same" padding, whose pooling drops a trailing row."""
    image = keras.Input((12, 12, 1))
    a = layers.MaxPooling2D(2)(layers.Conv2D(8, 3, activation="relu")(image))
    a = layers.MaxPooling2D(2)(layers.Conv2D(8, 3, activation="relu", padding="same")(a))
    sequence = keras.Input((15, 2))
    b = layers.MaxPooling1D(2)(layers.Conv1D(4, 3, strides=2, padding="same", use_bias=False)(sequence))
    out = layers.Dense(3)(layers.Concatenate()([layers.Flatten()(a), layers.Flatten()(b)]))
    model = keras.Model([image, sequence], out)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return ([rng.standard_normal((16, 12, 12, 1)).astype("float32"),
             rng.standard_normal((16, 15, 2)).astype("float32")], rng.integers(0, 3, 16).astype("int32"))


def _ops(model, mode):
    executable = next(f for k, f in model._compiled_functions.items() if k[0] == mode)
    return [executable.graph.node(n).op for group in executable.groups for n in group.nodes]


@pytest.fixture(scope="module")
def trained():
    """(fused model, unfused model): the same initial weights, trained the same steps."""
    x, y = _data()
    fused = _models()
    plain = _models()
    plain.set_weights(fused.get_weights())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "fuse_conv_pool", lambda graph: 0)
        for _ in range(STEPS):
            plain.train_on_batch(x, y)
        plain_prediction = plain.predict(x, verbose=0)
    for _ in range(STEPS):
        fused.train_on_batch(x, y)
    return fused, plain, fused.predict(x, verbose=0), plain_prediction


def test_rewrite_applies_where_it_pays(trained):
    fused, plain = trained[:2]
    train_ops, predict_ops = _ops(fused, "train"), _ops(fused, "predict")
    # Training: the first Conv2D and the Conv1D (inputs without gradients); the second Conv2D
    # keeps conv, pool and max_pool_grad, since its input gradient needs the activation.
    assert train_ops.count("conv_pool") == 2 and train_ops.count("conv_pool_filter_grad") == 2
    assert train_ops.count("conv") == 1 and train_ops.count("pool") == 1 and train_ops.count("max_pool_grad") == 1
    assert predict_ops.count("conv_pool") == 3 and "conv" not in predict_ops and "pool" not in predict_ops
    assert "conv_pool" not in _ops(plain, "train") and "conv_pool" not in _ops(plain, "predict")


def test_fused_training_matches_the_unfused_graph(trained):
    fused, plain, fused_prediction, plain_prediction = trained
    for a, b, weight in zip(fused.get_weights(), plain.get_weights(), fused.weights):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=weight.path)
    assert not np.allclose(fused.get_weights()[0], _models().get_weights()[0])  # (it trained)
    np.testing.assert_allclose(fused_prediction, plain_prediction, rtol=2e-5, atol=2e-5)


def test_pooling_that_does_not_tile_is_left_alone():
    """Overlapping windows (strides 1) and padded pooling (7 -> 4, "same") keep the unfused ops."""
    model = keras.Sequential([keras.Input((10, 10, 2)), layers.Conv2D(4, 3, activation="relu"),
                              layers.MaxPooling2D(2, strides=1), layers.Conv2D(4, 1),
                              layers.MaxPooling2D(2, padding="same")])
    x = np.random.default_rng(1).standard_normal((2, 10, 10, 2)).astype("float32")
    model.predict(x, verbose=0)
    ops = _ops(model, "predict")
    assert "conv_pool" not in ops and ops.count("pool") == 2
