"""Confusion-matrix metrics, as in Keras 3: TruePositives, FalsePositives, TrueNegatives,
FalseNegatives, Precision, Recall, AUC, SensitivityAtSpecificity, SpecificityAtSensitivity,
PrecisionAtRecall and RecallAtPrecision.

Each keeps thresholded counts in state variables (shape (T,), or (T, num_labels) for a
multi-label AUC) updated by `metrics_utils.update_confusion_matrix_variables`; results are
computed from the counts with ops.
"""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.losses.loss import divide_no_nan
from kgraph.metrics import metrics_utils as mu
from kgraph.metrics.metric import Metric


def _zeros(metric, shape, name):
    return metric.add_variable(shape=shape, initializer="zeros", dtype=metric.dtype, name=name)


def _first_or_all(values, thresholds):
    return ops.getitem(values, 0) if len(thresholds) == 1 else values


class _ConfusionMatrixConditionCount(Metric):
    """The weighted count of one confusion-matrix cell at each threshold."""

    _condition = None

    def __init__(self, thresholds=None, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.init_thresholds = thresholds
        self.thresholds = mu.parse_init_thresholds(thresholds, 0.5, owner=type(self).__name__)
        self._thresholds_distributed_evenly = mu.is_evenly_distributed_thresholds(self.thresholds)
        self.accumulator = _zeros(self, (len(self.thresholds),), "accumulator")

    def update_state(self, y_true, y_pred, sample_weight=None):
        mu.update_confusion_matrix_variables(
            {self._condition: self.accumulator},
            y_true,
            y_pred,
            thresholds=self.thresholds,
            thresholds_distributed_evenly=self._thresholds_distributed_evenly,
            sample_weight=sample_weight,
        )

    def result(self):
        return _first_or_all(ops.convert_to_tensor(self.accumulator), self.thresholds)

    def get_config(self):
        return {**super().get_config(), "thresholds": self.init_thresholds}


class TruePositives(_ConfusionMatrixConditionCount):
    """The (weighted) number of true positives: y_true != 0 and y_pred > threshold."""

    _condition = mu.TRUE_POSITIVES


class FalsePositives(_ConfusionMatrixConditionCount):
    """The (weighted) number of false positives: y_true == 0 and y_pred > threshold."""

    _condition = mu.FALSE_POSITIVES


class TrueNegatives(_ConfusionMatrixConditionCount):
    """The (weighted) number of true negatives: y_true == 0 and y_pred <= threshold."""

    _condition = mu.TRUE_NEGATIVES


class FalseNegatives(_ConfusionMatrixConditionCount):
    """The (weighted) number of false negatives: y_true != 0 and y_pred <= threshold."""

    _condition = mu.FALSE_NEGATIVES


class _PrecisionRecall(Metric):
    """Shared by Precision and Recall: counts at thresholds, optionally top_k / class_id."""

    _counts = ()

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._direction = "up"
        self.init_thresholds = thresholds
        self.top_k = top_k
        self.class_id = class_id
        default = 0.5 if top_k is None else mu.NEG_INF
        self.thresholds = mu.parse_init_thresholds(thresholds, default, owner=type(self).__name__)
        self._thresholds_distributed_evenly = mu.is_evenly_distributed_thresholds(self.thresholds)
        size = (len(self.thresholds),)
        for _, attribute in self._counts:
            setattr(self, attribute, _zeros(self, size, attribute))

    def update_state(self, y_true, y_pred, sample_weight=None):
        mu.update_confusion_matrix_variables(
            {key: getattr(self, attribute) for key, attribute in self._counts},
            y_true,
            y_pred,
            thresholds=self.thresholds,
            thresholds_distributed_evenly=self._thresholds_distributed_evenly,
            top_k=self.top_k,
            class_id=self.class_id,
            sample_weight=sample_weight,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "thresholds": self.init_thresholds,
            "top_k": self.top_k,
            "class_id": self.class_id,
        }


class Precision(_PrecisionRecall):
    """true_positives / (true_positives + false_positives) at each threshold.

    Args:
        thresholds: a float or list of floats in [0, 1]; a prediction above a threshold is
            positive. Defaults to 0.5 (to no threshold with `top_k`).
        top_k: count only each row's k largest predictions as positive.
        class_id: compute the metric for this class column only.
    """

    _counts = ((mu.TRUE_POSITIVES, "true_positives"), (mu.FALSE_POSITIVES, "false_positives"))

    def result(self):
        tp = ops.convert_to_tensor(self.true_positives)
        value = divide_no_nan(tp, ops.add(tp, self.false_positives))
        return _first_or_all(value, self.thresholds)


class Recall(_PrecisionRecall):
    """true_positives / (true_positives + false_negatives) at each threshold (see Precision)."""

    _counts = ((mu.TRUE_POSITIVES, "true_positives"), (mu.FALSE_NEGATIVES, "false_negatives"))

    def result(self):
        tp = ops.convert_to_tensor(self.true_positives)
        value = divide_no_nan(tp, ops.add(tp, self.false_negatives))
        return _first_or_all(value, self.thresholds)


_ALL_COUNTS = (
    (mu.TRUE_POSITIVES, "true_positives"),
    (mu.FALSE_POSITIVES, "false_positives"),
    (mu.TRUE_NEGATIVES, "true_negatives"),
    (mu.FALSE_NEGATIVES, "false_negatives"),
)


class SensitivitySpecificityBase(Metric):
    """The best value of one rate over the thresholds where another rate reaches `value`.

    Thresholds are 0, 1/(n-1), ..., 1 (0.5 alone when num_thresholds == 1).
    """

    def __init__(self, value, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._direction = "up"
        if num_thresholds <= 0:
            raise ValueError(
                f"{type(self).__name__}: argument `num_thresholds` must be an integer > 0. "
                f"Received: num_thresholds={num_thresholds}"
            )
        self.value = value
        self.class_id = class_id
        if num_thresholds == 1:
            self.thresholds = [0.5]
            self._thresholds_distributed_evenly = False
        else:
            self.thresholds = [i / (num_thresholds - 1) for i in range(num_thresholds)]
            self._thresholds_distributed_evenly = True
        for _, attribute in _ALL_COUNTS:
            setattr(self, attribute, _zeros(self, (num_thresholds,), attribute))

    def update_state(self, y_true, y_pred, sample_weight=None):
        mu.update_confusion_matrix_variables(
            {key: getattr(self, attribute) for key, attribute in _ALL_COUNTS},
            y_true,
            y_pred,
            thresholds=self.thresholds,
            thresholds_distributed_evenly=self._thresholds_distributed_evenly,
            class_id=self.class_id,
            sample_weight=sample_weight,
        )

    def _rates(self):
        tp, fp = ops.convert_to_tensor(self.true_positives), ops.convert_to_tensor(self.false_positives)
        tn, fn = ops.convert_to_tensor(self.true_negatives), ops.convert_to_tensor(self.false_negatives)
        return {
            "sensitivity": divide_no_nan(tp, ops.add(tp, fn)),
            "specificity": divide_no_nan(tn, ops.add(tn, fp)),
            "precision": divide_no_nan(tp, ops.add(tp, fp)),
        }

    def _max_where_at_least(self, constrained, dependent):
        """max(dependent) over thresholds where constrained >= value; 0 when there are none."""
        rates = self._rates()
        feasible = ops.greater_equal(rates[constrained], self.value)
        return ops.max(ops.where(feasible, rates[dependent], 0.0), initial=0.0)

    def get_config(self):
        return {**super().get_config(), "num_thresholds": len(self.thresholds), "class_id": self.class_id}


def _check_rate(owner, argument, value):
    if value < 0 or value > 1:
        raise ValueError(f"{owner}: argument `{argument}` must be in the range [0, 1]. Received: {argument}={value}")


class SensitivityAtSpecificity(SensitivitySpecificityBase):
    """The best sensitivity (recall) at a threshold whose specificity is >= `specificity`."""

    def __init__(self, specificity, num_thresholds=200, class_id=None, name=None, dtype=None):
        _check_rate("SensitivityAtSpecificity", "specificity", specificity)
        self.specificity = specificity
        self.num_thresholds = num_thresholds
        super().__init__(specificity, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def result(self):
        return self._max_where_at_least("specificity", "sensitivity")

    def get_config(self):
        return {**super().get_config(), "specificity": self.specificity}


class SpecificityAtSensitivity(SensitivitySpecificityBase):
    """The best specificity at a threshold whose sensitivity is >= `sensitivity`."""

    def __init__(self, sensitivity, num_thresholds=200, class_id=None, name=None, dtype=None):
        _check_rate("SpecificityAtSensitivity", "sensitivity", sensitivity)
        self.sensitivity = sensitivity
        self.num_thresholds = num_thresholds
        super().__init__(sensitivity, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def result(self):
        return self._max_where_at_least("sensitivity", "specificity")

    def get_config(self):
        return {**super().get_config(), "sensitivity": self.sensitivity}


class PrecisionAtRecall(SensitivitySpecificityBase):
    """The best precision at a threshold whose recall is >= `recall`."""

    def __init__(self, recall, num_thresholds=200, class_id=None, name=None, dtype=None):
        _check_rate("PrecisionAtRecall", "recall", recall)
        self.recall = recall
        self.num_thresholds = num_thresholds
        super().__init__(recall, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def result(self):
        return self._max_where_at_least("sensitivity", "precision")

    def get_config(self):
        return {**super().get_config(), "recall": self.recall}


class RecallAtPrecision(SensitivitySpecificityBase):
    """The best recall at a threshold whose precision is >= `precision`."""

    def __init__(self, precision, num_thresholds=200, class_id=None, name=None, dtype=None):
        _check_rate("RecallAtPrecision", "precision", precision)
        self.precision = precision
        self.num_thresholds = num_thresholds
        super().__init__(precision, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def result(self):
        return self._max_where_at_least("precision", "sensitivity")

    def get_config(self):
        return {**super().get_config(), "precision": self.precision}


class AUC(Metric):
    """The area under the ROC or precision-recall curve, from counts at `num_thresholds`
    thresholds (evenly spaced over [0, 1], the ends moved out by 1e-7), as in Keras 3.

    Args:
        num_thresholds: the number of thresholds (> 1). Defaults to 200.
        curve: "ROC", "PR" or "PRGAIN".
        summation_method: "interpolation" (trapezoids; for PR the interpolation of Davis &
            Goadrich), "minoring" or "majoring" (lower / upper Riemann sums).
        thresholds: explicit thresholds in [0, 1] (num_thresholds is then len + 2).
        multi_label: one curve per label column, averaged (weighted by `label_weights`).
        num_labels: the number of labels with multi_label (else taken from the first batch).
        label_weights: per-class weights of the counts (or of the per-label areas with
            multi_label).
        from_logits: apply a sigmoid to predictions first.
    """

    def __init__(
        self,
        num_thresholds=200,
        curve="ROC",
        summation_method="interpolation",
        name=None,
        dtype=None,
        thresholds=None,
        multi_label=False,
        num_labels=None,
        label_weights=None,
        from_logits=False,
    ):
        if curve not in mu.AUC_CURVES:
            raise ValueError(
                f'AUC: invalid curve value: "{curve}". Expected values are ["PR", "ROC", "PRGAIN"]'
            )
        if summation_method not in mu.SUMMATION_METHODS:
            raise ValueError(
                f'AUC: invalid summation method value: "{summation_method}". Expected values are '
                '["interpolation", "majoring", "minoring"]'
            )
        self._init_from_thresholds = thresholds is not None
        if thresholds is not None:
            thresholds = sorted(mu.parse_init_thresholds(thresholds, owner="AUC"))
            self.num_thresholds = len(thresholds) + 2
            self._thresholds_distributed_evenly = mu.is_evenly_distributed_thresholds(
                [0.0] + thresholds + [1.0]
            )
        else:
            if num_thresholds <= 1:
                raise ValueError(
                    f"AUC: argument `num_thresholds` must be an integer > 1. Received: num_thresholds={num_thresholds}"
                )
            self.num_thresholds = num_thresholds
            thresholds = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
            self._thresholds_distributed_evenly = True
        self._thresholds = np.array([0.0 - mu.EPSILON] + thresholds + [1.0 + mu.EPSILON])
        self.curve = mu.AUC_CURVES[curve]
        self.summation_method = mu.SUMMATION_METHODS[summation_method]
        super().__init__(name=name, dtype=dtype)
        self._direction = "up"
        self.multi_label = multi_label
        self.num_labels = num_labels
        self.label_weights = None if label_weights is None else np.asarray(label_weights, dtype=self.dtype)
        self._from_logits = from_logits
        self._built = False
        if multi_label:
            if num_labels:
                self._build((None, num_labels))
        else:
            if num_labels:
                raise ValueError("AUC: `num_labels` is needed only when `multi_label` is True.")
            self._build(None)

    @property
    def thresholds(self):
        return [float(t) for t in self._thresholds]

    def _build(self, shape):
        if self.multi_label:
            if len(shape) != 2:
                raise ValueError(
                    f"AUC: `y_pred` must have rank 2 when `multi_label=True`. Found rank {len(shape)}. "
                    f"Full shape received for `y_pred`: {tuple(shape)}"
                )
            self._num_labels = shape[1]
            variable_shape = (self.num_thresholds, self._num_labels)
        else:
            variable_shape = (self.num_thresholds,)
        for _, attribute in _ALL_COUNTS:
            setattr(self, attribute, _zeros(self, variable_shape, attribute))
        self._built = True

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        if not self._built:
            self._build(tuple(y_pred.shape))
        if self._from_logits:
            y_pred = ops.sigmoid(y_pred)
        mu.update_confusion_matrix_variables(
            {key: getattr(self, attribute) for key, attribute in _ALL_COUNTS},
            y_true,
            y_pred,
            self._thresholds,
            thresholds_distributed_evenly=self._thresholds_distributed_evenly,
            sample_weight=sample_weight,
            multi_label=self.multi_label,
            label_weights=None if self.multi_label else self.label_weights,
        )

    def _average(self, terms):
        """Sum the per-threshold terms; with multi_label, average the per-label areas."""
        if not self.multi_label:
            return ops.sum(terms)
        by_label = ops.sum(terms, axis=0)
        if self.label_weights is None:
            return ops.mean(by_label)
        weights = self.label_weights
        return divide_no_nan(ops.sum(ops.multiply(by_label, weights)), float(np.sum(weights)))

    def _interpolate_pr_auc(self, tp, fp, fn):
        head, tail = slice(0, self.num_thresholds - 1), slice(1, None)
        dtp = ops.subtract(ops.getitem(tp, head), ops.getitem(tp, tail))
        p = ops.add(tp, fp)
        p_head, p_tail = ops.getitem(p, head), ops.getitem(p, tail)
        slope = divide_no_nan(dtp, ops.maximum(ops.subtract(p_head, p_tail), 0.0))
        intercept = ops.subtract(ops.getitem(tp, tail), ops.multiply(slope, p_tail))
        both = ops.logical_and(ops.greater(p_head, 0.0), ops.greater(p_tail, 0.0))
        ratio = ops.where(both, divide_no_nan(p_head, ops.maximum(p_tail, 0.0)), 1.0)
        increment = divide_no_nan(
            ops.multiply(slope, ops.add(dtp, ops.multiply(intercept, ops.log(ratio)))),
            ops.maximum(ops.add(ops.getitem(tp, tail), ops.getitem(fn, tail)), 0.0),
        )
        return self._average(increment)

    def result(self):
        tp, fp = ops.convert_to_tensor(self.true_positives), ops.convert_to_tensor(self.false_positives)
        tn, fn = ops.convert_to_tensor(self.true_negatives), ops.convert_to_tensor(self.false_negatives)
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._interpolate_pr_auc(tp, fp, fn)
        recall = divide_no_nan(tp, ops.add(tp, fn))
        if self.curve == "ROC":
            x, y = divide_no_nan(fp, ops.add(fp, tn)), recall
        elif self.curve == "PR":
            x, y = recall, divide_no_nan(tp, ops.add(tp, fp))
        else:  # PRGAIN
            scale = divide_no_nan(ops.add(tp, fn), ops.add(tn, fp))
            no_tp = ops.equal(tp, 0.0)
            recall_gain = ops.subtract(1.0, ops.multiply(scale, divide_no_nan(fn, tp)))
            precision_gain = ops.subtract(1.0, ops.multiply(scale, divide_no_nan(fp, tp)))
            x = ops.maximum(ops.where(no_tp, 0.0, recall_gain), 0.0)
            y = ops.where(no_tp, 1.0, precision_gain)
        head, tail = slice(0, self.num_thresholds - 1), slice(1, None)
        y_head, y_tail = ops.getitem(y, head), ops.getitem(y, tail)
        if self.summation_method == "interpolation":
            heights = ops.divide(ops.add(y_head, y_tail), 2.0)
        elif self.summation_method == "minoring":
            heights = ops.minimum(y_head, y_tail)
        else:
            heights = ops.maximum(y_head, y_tail)
        widths = ops.subtract(ops.getitem(x, head), ops.getitem(x, tail))
        return self._average(ops.multiply(widths, heights))

    def get_config(self):
        config = {
            **super().get_config(),
            "num_thresholds": self.num_thresholds,
            "curve": self.curve,
            "summation_method": self.summation_method,
            "multi_label": self.multi_label,
            "num_labels": self.num_labels,
            "label_weights": None if self.label_weights is None else self.label_weights.tolist(),
            "from_logits": self._from_logits,
        }
        if self._init_from_thresholds:
            config["thresholds"] = self.thresholds[1:-1]
        return config
