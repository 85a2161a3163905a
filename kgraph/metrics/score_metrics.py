"""FBetaScore, F1Score and R2Score, as in Keras 3.

Their state has one entry per class (or output column), so the variables are created on the
first update, from the static last dimension of the inputs (also inside a trace).
"""

from __future__ import annotations

import warnings

from kgraph import ops
from kgraph.losses.loss import squeeze_or_expand_to_same_rank
from kgraph.metrics.metric import Metric
from kgraph.metrics.metrics_utils import EPSILON


def _check_2d(owner, y_true_shape, y_pred_shape):
    if len(y_pred_shape) != 2 or len(y_true_shape) != 2:
        raise ValueError(
            f"{owner} expects 2D inputs with shape (batch_size, output_dim). Received input shapes: "
            f"y_pred.shape={tuple(y_pred_shape)} and y_true.shape={tuple(y_true_shape)}."
        )
    if y_pred_shape[-1] is None or y_true_shape[-1] is None:
        raise ValueError(
            f"{owner} expects 2D inputs with shape (batch_size, output_dim), with output_dim fully "
            f"defined (not None). Received input shapes: y_pred.shape={tuple(y_pred_shape)} and "
            f"y_true.shape={tuple(y_true_shape)}."
        )


class FBetaScore(Metric):
    """The F-beta score (1 + b^2) * precision * recall / (b^2 * precision + recall).

    Args:
        average: None (one score per class), "micro" (from counts summed over classes),
            "macro" (mean of per-class scores) or "weighted" (mean weighted by class support).
        beta: the weight of recall (a float > 0).
        threshold: predictions above it are positive; None marks each row's largest
            prediction positive.
    """

    def __init__(self, average=None, beta=1.0, threshold=None, name="fbeta_score", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._direction = "up"
        owner = type(self).__name__
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError(
                f"{owner}: invalid `average` argument value. Expected one of: "
                f"{{None, 'micro', 'macro', 'weighted'}}. Received: average={average}"
            )
        if not isinstance(beta, float):
            raise ValueError(
                f"{owner}: invalid `beta` argument value. It should be a Python float. "
                f"Received: beta={beta} of type '{type(beta)}'"
            )
        if beta <= 0.0:
            raise ValueError(f"{owner}: invalid `beta` argument value. It should be > 0. Received: beta={beta}")
        if threshold is not None:
            if not isinstance(threshold, float):
                raise ValueError(
                    f"{owner}: invalid `threshold` argument value. It should be a Python float. "
                    f"Received: threshold={threshold} of type '{type(threshold)}'"
                )
            if threshold > 1.0 or threshold <= 0.0:
                raise ValueError(
                    f"{owner}: invalid `threshold` argument value. It should verify 0 < threshold <= 1. "
                    f"Received: threshold={threshold}"
                )
        self.average = average
        self.beta = beta
        self.threshold = threshold
        self.axis = None if average == "micro" else 0
        self._built = False

    def _build(self, y_true_shape, y_pred_shape):
        _check_2d(type(self).__name__, y_true_shape, y_pred_shape)
        shape = () if self.average == "micro" else (y_pred_shape[-1],)
        for name in ("true_positives", "false_positives", "false_negatives", "intermediate_weights"):
            setattr(self, name, self.add_variable(shape=shape, initializer="zeros", dtype=self.dtype, name=name))
        self._built = True

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(ops.convert_to_tensor(y_true), self.dtype)
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), self.dtype)
        if not self._built:
            self._build(tuple(y_true.shape), tuple(y_pred.shape))
        if self.threshold is None:
            row_max = ops.max(y_pred, axis=-1, keepdims=True)
            positive = ops.logical_and(ops.greater_equal(y_pred, row_max), ops.greater(ops.abs(y_pred), 1e-9))
        else:
            positive = ops.greater(y_pred, self.threshold)
        y_pred = ops.cast(positive, self.dtype)
        weight = None
        if sample_weight is not None:
            weight = ops.expand_dims(ops.cast(ops.convert_to_tensor(sample_weight), self.dtype), 1)

        def weighted_sum(values):
            if weight is not None:
                values = ops.multiply(values, weight)
            return ops.sum(values, axis=self.axis)

        not_true, not_pred = ops.subtract(1.0, y_true), ops.subtract(1.0, y_pred)
        updates = (
            (self.true_positives, ops.multiply(y_pred, y_true)),
            (self.false_positives, ops.multiply(y_pred, not_true)),
            (self.false_negatives, ops.multiply(not_pred, y_true)),
            (self.intermediate_weights, y_true),
        )
        for variable, values in updates:
            variable.assign(ops.add(variable, weighted_sum(values)))

    def result(self):
        if not self._built:
            raise ValueError(f"{type(self).__name__} '{self.name}': result() called before any update_state()")
        tp = ops.convert_to_tensor(self.true_positives)
        precision = ops.divide(tp, ops.add(ops.add(tp, self.false_positives), EPSILON))
        recall = ops.divide(tp, ops.add(ops.add(tp, self.false_negatives), EPSILON))
        b2 = self.beta**2
        harmonic = ops.divide(
            ops.multiply(precision, recall), ops.add(ops.add(ops.multiply(precision, b2), recall), EPSILON)
        )
        score = ops.multiply(harmonic, 1.0 + b2)
        if self.average == "weighted":
            support = ops.convert_to_tensor(self.intermediate_weights)
            weights = ops.divide(support, ops.add(ops.sum(support), EPSILON))
            return ops.sum(ops.multiply(score, weights))
        if self.average == "macro":
            return ops.mean(score)  # "micro" counts are scalars already
        return score

    def get_config(self):
        return {
            **super().get_config(),
            "average": self.average,
            "beta": self.beta,
            "threshold": self.threshold,
        }


class F1Score(FBetaScore):
    """The F1 score 2 * precision * recall / (precision + recall) (FBetaScore with beta=1)."""

    def __init__(self, average=None, threshold=None, name="f1_score", dtype=None):
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name, dtype=dtype)

    def get_config(self):
        config = super().get_config()
        del config["beta"]
        return config


class R2Score(Metric):
    """The coefficient of determination 1 - SS_res / SS_tot per output column.

    Args:
        class_aggregation: "uniform_average" (mean over columns), "variance_weighted_average"
            (weighted by each column's SS_tot) or None (one score per column).
        num_regressors: p > 0 gives the adjusted R2, 1 - (1 - R2) (n - 1) / (n - p - 1).
    """

    def __init__(self, class_aggregation="uniform_average", num_regressors=0, name="r2_score", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._direction = "up"
        valid = (None, "uniform_average", "variance_weighted_average")
        if class_aggregation not in valid:
            raise ValueError(
                f"R2Score: invalid value for argument `class_aggregation`. Expected one of {valid}. "
                f"Received: class_aggregation={class_aggregation}"
            )
        if num_regressors < 0:
            raise ValueError(
                "R2Score: invalid value for argument `num_regressors`. Expected a value >= 0. "
                f"Received: num_regressors={num_regressors}"
            )
        self.class_aggregation = class_aggregation
        self.num_regressors = num_regressors
        self.num_samples = self.add_variable(shape=(), initializer="zeros", name="num_samples")
        self._built = False

    def _build(self, y_true_shape, y_pred_shape):
        _check_2d("R2Score", y_true_shape, y_pred_shape)
        shape = (y_pred_shape[-1],)
        for attribute, name in (
            ("squared_sum", "squared_sum"),
            ("sum", "sum"),
            ("total_mse", "residual"),
            ("count", "count"),
        ):
            setattr(self, attribute, self.add_variable(shape=shape, initializer="zeros", name=name))
        self._built = True

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(ops.convert_to_tensor(y_true), self.dtype)
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), self.dtype)
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        if not self._built:
            self._build(tuple(y_true.shape), tuple(y_pred.shape))
        ones = ops.ones_like(y_true)
        if sample_weight is None:
            weight = ones
        else:
            weight = ops.cast(ops.convert_to_tensor(sample_weight), self.dtype)
            if len(weight.shape) == 1:
                weight = ops.expand_dims(weight, 1)
            weight = ops.multiply(weight, ones)
        weighted_true = ops.multiply(y_true, weight)
        residual = ops.multiply(ops.square(ops.subtract(y_true, y_pred)), weight)
        for variable, values in (
            (self.sum, weighted_true),
            (self.squared_sum, ops.multiply(y_true, weighted_true)),
            (self.total_mse, residual),
            (self.count, weight),
        ):
            variable.assign(ops.add(variable, ops.sum(values, axis=0)))
        self.num_samples.assign(ops.add(self.num_samples, ops.sum(ones)))

    def result(self):
        if not self._built:
            raise ValueError(f"R2Score '{self.name}': result() called before any update_state()")
        total_sum = ops.convert_to_tensor(self.sum)
        mean = ops.divide(total_sum, self.count)
        total = ops.subtract(self.squared_sum, ops.multiply(total_sum, mean))
        raw = ops.subtract(1.0, ops.divide(self.total_mse, total))
        raw = ops.where(ops.equal(ops.abs(raw), float("inf")), 0.0, raw)
        if self.class_aggregation == "uniform_average":
            score = ops.mean(raw)
        elif self.class_aggregation == "variance_weighted_average":
            score = ops.divide(ops.sum(ops.multiply(total, raw)), ops.sum(total))
        else:
            score = raw
        if self.num_regressors == 0:
            return score
        n = ops.convert_to_tensor(self.num_samples)
        p = float(self.num_regressors)
        if not ops.is_tracing():
            if p > float(n) - 1:
                warnings.warn(
                    "More independent predictors than datapoints in adjusted R2 score. "
                    "Falling back to standard R2 score.",
                    stacklevel=2,
                )
            elif p == float(n) - 1:
                warnings.warn(
                    "Division by zero in Adjusted R2 score. Falling back to standard R2 score.", stacklevel=2
                )
        adjusted = ops.subtract(
            1.0, ops.divide(ops.multiply(ops.subtract(1.0, score), ops.subtract(n, 1.0)), ops.subtract(n, p + 1.0))
        )
        return ops.where(ops.less(p, ops.subtract(n, 1.0)), adjusted, score)

    def get_config(self):
        return {
            **super().get_config(),
            "class_aggregation": self.class_aggregation,
            "num_regressors": self.num_regressors,
        }
