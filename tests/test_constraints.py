"""kgraph.constraints: each projection against its numpy formula, configs, and constraints
applied by the optimizer after each update inside the compiled training step."""

from __future__ import annotations

import numpy as np
import pytest

import kgraph as keras
from kgraph import constraints

EPS = 1e-7


def _norms(w, axis):
    return np.sqrt(np.sum(w ** 2, axis=axis, keepdims=True))


CASES = [
    (constraints.MaxNorm(1.5, axis=0),
     lambda w: w * np.clip(_norms(w, 0), 0, 1.5) / (EPS + _norms(w, 0))),
    (constraints.MinMaxNorm(0.5, 1.0, rate=0.7, axis=1),
     lambda w: w * (0.7 * np.clip(_norms(w, 1), 0.5, 1.0) + 0.3 * _norms(w, 1)) / (EPS + _norms(w, 1))),
    (constraints.NonNeg(), lambda w: w * (w >= 0)),
    (constraints.UnitNorm(axis=0), lambda w: w / (EPS + _norms(w, 0))),
]


@pytest.mark.parametrize("constraint, formula", CASES, ids=lambda c: type(c).__name__ if not callable(c) or
                         isinstance(c, constraints.Constraint) else "")
def test_constraint_matches_its_formula_and_round_trips(constraint, formula):
    w = np.random.default_rng(0).normal(size=(4, 3)).astype("float32") * 2
    np.testing.assert_allclose(np.asarray(constraint(w)), formula(w.astype("float64")), rtol=1e-5, atol=1e-6)
    config = constraints.serialize(constraint)
    assert config["module"] == "keras.constraints" and config["class_name"] == type(constraint).__name__
    again = constraints.deserialize(config)
    np.testing.assert_allclose(np.asarray(again(w)), np.asarray(constraint(w)))


def test_names_and_errors():
    assert isinstance(constraints.get("non_neg"), constraints.NonNeg)
    assert isinstance(constraints.get("MaxNorm"), constraints.MaxNorm)
    with pytest.raises(ValueError, match="Unknown constraint"):
        constraints.get("no_such_constraint")


def test_kernel_constraint_applies_after_each_compiled_update():
    """SGD then the constraint, every step: the kernel after one step is
    non_neg(kernel - lr * grad), the gradient computed in numpy."""
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, kernel_constraint="non_neg", bias_constraint=constraints.MaxNorm(0.5))
    model = keras.Model(inputs, dense(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    kernel = rng.normal(size=(3, 2)).astype("float32")
    dense.kernel.assign(kernel)
    bias = np.asarray(dense.bias, "float64")
    k64 = kernel.astype("float64")
    residual = x @ k64 + bias - y
    grad_k = 2 * x.T @ residual / residual.size
    grad_b = 2 * residual.sum(axis=0) / residual.size
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    expected_k = np.maximum(k64 - 0.1 * grad_k, 0)
    b = bias - 0.1 * grad_b
    expected_b = b * min(np.linalg.norm(b), 0.5) / (EPS + np.linalg.norm(b))
    np.testing.assert_allclose(np.asarray(dense.kernel), expected_k, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dense.bias), expected_b, rtol=1e-5, atol=1e-6)
    config = dense.get_config()
    assert config["kernel_constraint"]["class_name"] == "NonNeg"
    clone = keras.layers.Dense.from_config(config)
    assert isinstance(clone.bias_constraint, constraints.MaxNorm) and clone.bias_constraint.max_value == 0.5


@pytest.mark.parametrize("mode", ["rows", "columns"])
def test_orthogonal_regularizer_matches_its_formula_eagerly_and_in_a_layer(mode):
    w = np.random.default_rng(2).normal(size=(4, 3))
    unit = w / np.linalg.norm(w, axis=1 if mode == "rows" else 0, keepdims=True)
    gram = unit @ unit.T if mode == "rows" else unit.T @ unit
    size = gram.shape[0]
    expected = 0.05 * 0.5 * np.abs(gram - np.diag(np.diag(gram))).sum() / (size * (size - 1) / 2)
    regularizer = keras.regularizers.OrthogonalRegularizer(0.05, mode=mode)
    np.testing.assert_allclose(float(regularizer(w.astype("float32"))), expected, rtol=1e-5)
    dense = keras.layers.Dense(3, kernel_regularizer=regularizer)
    dense(np.zeros((1, 4), "float32"))
    dense.kernel.assign(w.astype("float32"))
    np.testing.assert_allclose(float(np.asarray(dense.losses[0])), expected, rtol=1e-5)
    again = keras.regularizers.get(keras.regularizers.serialize(regularizer))
    assert isinstance(again, keras.regularizers.OrthogonalRegularizer) and again.mode == mode
    with pytest.raises(ValueError, match="rank 2"):
        regularizer(np.zeros(3, "float32"))
