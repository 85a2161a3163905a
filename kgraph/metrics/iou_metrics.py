"""Intersection-over-union metrics, as in Keras 3: IoU, BinaryIoU, MeanIoU, OneHotIoU and
OneHotMeanIoU. They accumulate a (num_classes, num_classes) confusion matrix (rows: labels,
columns: predictions); IoU_c = tp_c / (row_c + column_c - tp_c), averaged over the target
classes whose denominator is not 0.

As in Keras, the confusion matrix's dtype is the metric's dtype and defaults to int32, so
fractional sample weights are truncated unless dtype="float32" is given.
"""

from __future__ import annotations

import warnings

import numpy as np

from kgraph import ops
from kgraph.losses.loss import squeeze_or_expand_to_same_rank
from kgraph.metrics.metric import Metric
from kgraph.metrics.metrics_utils import EPSILON, confusion_matrix


class _IoUBase(Metric):
    def __init__(
        self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_true=True, sparse_y_pred=True, axis=-1
    ):
        super().__init__(name=name, dtype=dtype or "int32")
        self._direction = "up"
        self.num_classes = num_classes
        self.ignore_class = ignore_class
        self.sparse_y_true = sparse_y_true
        self.sparse_y_pred = sparse_y_pred
        self.axis = axis
        self.total_cm = self.add_variable(
            shape=(num_classes, num_classes), initializer="zeros", dtype=self.dtype, name="total_confusion_matrix"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
        if not self.sparse_y_true:
            y_true = ops.argmax(y_true, axis=self.axis)
        if not self.sparse_y_pred:
            y_pred = ops.argmax(y_pred, axis=self.axis)
        y_true = ops.cast(y_true, self.dtype)
        y_pred = ops.cast(y_pred, self.dtype)
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        if sample_weight is None:
            weight = ops.ones_like(y_true)
        else:
            sample_weight = ops.convert_to_tensor(sample_weight)
            if "float" in str(sample_weight.dtype) and "int" in self.dtype:
                warnings.warn(
                    f"{type(self).__name__} '{self.name}': sample weights are floats but the metric's "
                    f"dtype is {self.dtype}; they are truncated. Pass integer weights or dtype='float32'.",
                    stacklevel=2,
                )
            weight = ops.cast(sample_weight, self.dtype)
            while len(weight.shape) < len(y_true.shape):
                weight = ops.expand_dims(weight, -1)
            weight = ops.multiply(weight, ops.ones_like(y_true))
        num = float(self.num_classes)
        in_bounds = ops.logical_and(
            ops.logical_and(ops.greater_equal(y_true, 0), ops.less(y_true, num)),
            ops.logical_and(ops.greater_equal(y_pred, 0), ops.less(y_pred, num)),
        )
        if self.ignore_class is not None:
            in_bounds = ops.logical_and(in_bounds, ops.not_equal(y_true, self.ignore_class))
        y_true = ops.where(in_bounds, y_true, 0)
        y_pred = ops.where(in_bounds, y_pred, 0)
        weight = ops.cast(ops.where(in_bounds, weight, 0), self.dtype)
        current = confusion_matrix(y_true, y_pred, self.num_classes, weights=weight, dtype=self.dtype)
        self.total_cm.assign(ops.add(self.total_cm, current))


class IoU(_IoUBase):
    """The mean IoU of the classes in `target_class_ids`.

    Args:
        num_classes: the number of classes (the confusion matrix is num_classes^2).
        target_class_ids: the class ids whose IoUs are averaged.
        ignore_class: a label id left out of the counts (e.g. a "void" class).
        sparse_y_true / sparse_y_pred: False takes the argmax over `axis` first.
    """

    def __init__(
        self,
        num_classes,
        target_class_ids,
        name=None,
        dtype=None,
        ignore_class=None,
        sparse_y_true=True,
        sparse_y_pred=True,
        axis=-1,
    ):
        super().__init__(
            num_classes=num_classes,
            name=name,
            dtype=dtype,
            ignore_class=ignore_class,
            sparse_y_true=sparse_y_true,
            sparse_y_pred=sparse_y_pred,
            axis=axis,
        )
        if max(target_class_ids) >= num_classes:
            raise ValueError(
                f"{type(self).__name__}: target class id {max(target_class_ids)} is out of range, "
                f"which is [0, {num_classes})."
            )
        self.target_class_ids = list(target_class_ids)

    def result(self):
        cm = ops.cast(ops.convert_to_tensor(self.total_cm), "float32")
        diagonal = np.eye(self.num_classes, dtype="float32")
        true_positives = ops.sum(ops.multiply(cm, diagonal), axis=1)
        denominator = ops.subtract(ops.add(ops.sum(cm, axis=0), ops.sum(cm, axis=1)), true_positives)
        ids = np.asarray(self.target_class_ids, dtype="int32")
        true_positives = ops.take(true_positives, ids, axis=0)
        denominator = ops.take(denominator, ids, axis=0)
        valid = ops.greater(denominator, 1e-9)
        iou = ops.where(valid, ops.divide(true_positives, ops.add(denominator, EPSILON)), 0.0)
        count = ops.sum(ops.cast(valid, "float32"))
        return ops.divide(ops.sum(iou, axis=self.axis), ops.add(count, EPSILON))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "target_class_ids": self.target_class_ids,
            "ignore_class": self.ignore_class,
            "sparse_y_true": self.sparse_y_true,
            "sparse_y_pred": self.sparse_y_pred,
            "axis": self.axis,
        }


class BinaryIoU(IoU):
    """IoU of binary labels against predictions thresholded (>= threshold is class 1)."""

    def __init__(self, target_class_ids=(0, 1), threshold=0.5, name=None, dtype=None):
        super().__init__(num_classes=2, target_class_ids=target_class_ids, name=name, dtype=dtype)
        self.threshold = threshold

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
        y_pred = ops.cast(ops.greater_equal(y_pred, self.threshold), self.dtype)
        return super().update_state(y_true, y_pred, sample_weight)

    def get_config(self):
        return {
            "target_class_ids": self.target_class_ids,
            "threshold": self.threshold,
            "name": self.name,
            "dtype": self.dtype,
        }


class MeanIoU(IoU):
    """The IoU averaged over all `num_classes` classes."""

    def __init__(
        self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_true=True, sparse_y_pred=True, axis=-1
    ):
        super().__init__(
            num_classes=num_classes,
            target_class_ids=list(range(num_classes)),
            name=name,
            dtype=dtype,
            ignore_class=ignore_class,
            sparse_y_true=sparse_y_true,
            sparse_y_pred=sparse_y_pred,
            axis=axis,
        )

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "name": self.name,
            "dtype": self.dtype,
            "ignore_class": self.ignore_class,
            "sparse_y_true": self.sparse_y_true,
            "sparse_y_pred": self.sparse_y_pred,
            "axis": self.axis,
        }


class OneHotIoU(IoU):
    """IoU with one-hot labels (and, unless sparse_y_pred, per-class scores): argmax first."""

    def __init__(
        self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None, sparse_y_pred=False, axis=-1
    ):
        super().__init__(
            num_classes=num_classes,
            target_class_ids=target_class_ids,
            name=name,
            dtype=dtype,
            ignore_class=ignore_class,
            sparse_y_true=False,
            sparse_y_pred=sparse_y_pred,
            axis=axis,
        )

    def get_config(self):
        config = super().get_config()
        del config["sparse_y_true"]
        return config


class OneHotMeanIoU(MeanIoU):
    """MeanIoU with one-hot labels (and, unless sparse_y_pred, per-class scores)."""

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(
            num_classes=num_classes,
            name=name,
            dtype=dtype,
            ignore_class=ignore_class,
            sparse_y_true=False,
            sparse_y_pred=sparse_y_pred,
            axis=axis,
        )

    def get_config(self):
        config = super().get_config()
        del config["sparse_y_true"]
        return config
