"""Helpers shared by the confusion-matrix metrics: threshold parsing, top-k filtering and the
thresholded true/false positive/negative counts, all written with kgraph.ops so that an
update traces into a compiled step.

The counts at T thresholds compare every prediction with a (T, 1) thresholds column (a
(T, 1, 1) one for multi-label data) and sum the weighted hits over the predictions: a T x N
comparison, cheap for the 200 thresholds AUC uses. Keras 3 counts evenly spaced thresholds
(0, 1/(T-1), ..., 1, or AUC's [-eps, ..., 1+eps]) through buckets instead of comparisons: a
prediction clipped to [0, 1] lands in bucket ceil(p * (T-1)) - 1 (at least 0 when the ends
carry epsilons) and counts as positive at every threshold index up to its bucket. Here the
same bucket index is compared with the threshold indices, so predictions outside [0, 1] and
predictions lying exactly on a threshold are counted as Keras counts them.
"""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.losses.loss import squeeze_or_expand_to_same_rank

NEG_INF = -1e10
EPSILON = 1e-7

TRUE_POSITIVES = "tp"
FALSE_POSITIVES = "fp"
TRUE_NEGATIVES = "tn"
FALSE_NEGATIVES = "fn"
CONFUSION_KEYS = (TRUE_POSITIVES, FALSE_POSITIVES, TRUE_NEGATIVES, FALSE_NEGATIVES)

AUC_CURVES = {"roc": "ROC", "ROC": "ROC", "pr": "PR", "PR": "PR", "prgain": "PRGAIN", "PRGAIN": "PRGAIN"}
SUMMATION_METHODS = {
    "interpolation": "interpolation",
    "Interpolation": "interpolation",
    "majoring": "majoring",
    "Majoring": "majoring",
    "minoring": "minoring",
    "Minoring": "minoring",
}


def to_list(x):
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return [x]


def parse_init_thresholds(thresholds, default_threshold=0.5, owner="metric"):
    """`thresholds` as a list of floats in [0, 1] (the default when None)."""
    if thresholds is not None:
        for t in to_list(thresholds):
            if t is None or not 0 <= float(t) <= 1:
                raise ValueError(
                    f"{owner}: threshold values must be in [0, 1]. Received: thresholds={thresholds}"
                )
    return [float(t) for t in to_list(default_threshold if thresholds is None else thresholds)]


def is_evenly_distributed_thresholds(thresholds):
    """True when `thresholds` (3 or more) are 0, 1/(n-1), ..., 1 within 1e-7."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n = len(thresholds)
    if n < 3:
        return False
    return bool(np.allclose(thresholds, np.arange(n) / (n - 1), atol=EPSILON))


def in_top_k_mask(x, k):
    """1.0 where an entry is among the k largest of its row (last axis), else 0.0.

    Ties go to the lower index (as a top_k op returns them): entry i is kept when fewer than
    k entries are larger, or equal with a lower index.
    """
    num = x.shape[-1]
    a = ops.expand_dims(x, -1)  # [..., i, 1]
    b = ops.expand_dims(x, -2)  # [..., 1, j]
    lower = np.tril(np.ones((num, num), dtype=bool), -1)  # j < i
    before = ops.logical_or(ops.greater(b, a), ops.logical_and(ops.equal(b, a), lower))
    rank = ops.sum(ops.cast(before, "float32"), axis=-1)
    return ops.cast(ops.less(rank, float(k)), x.dtype)


def filter_top_k(x, k):
    """x where it is among the row's k largest, NEG_INF elsewhere."""
    mask = in_top_k_mask(x, k)
    return ops.add(ops.multiply(x, mask), ops.multiply(ops.subtract(1.0, mask), NEG_INF))


def in_top_k(targets, predictions, k):
    """True where the score of class `targets` is among the k largest of its row.

    As Keras 3: the target's rank is 1 + the number of classes with a strictly larger score
    (ties favour the target) and a NaN target score ranks last.
    """
    predictions = ops.convert_to_tensor(predictions)
    num_classes = predictions.shape[-1]
    targets = ops.cast(targets, "int32")
    hot = ops.equal(ops.expand_dims(targets, -1), np.arange(num_classes, dtype="int32"))
    at_label = ops.sum(ops.where(hot, predictions, 0.0), axis=-1, keepdims=True)
    at_label = ops.where(ops.not_equal(at_label, at_label), float("-inf"), at_label)
    larger = ops.sum(ops.cast(ops.greater(predictions, at_label), "float32"), axis=-1)
    return ops.less(larger, float(k))


def update_confusion_matrix_variables(
    variables_to_update,
    y_true,
    y_pred,
    thresholds,
    top_k=None,
    class_id=None,
    sample_weight=None,
    multi_label=False,
    label_weights=None,
    thresholds_distributed_evenly=False,
):
    """Add the weighted counts of y_pred > threshold against y_true != 0 to the variables.

    `variables_to_update` maps "tp", "fp", "tn", "fn" to Variables of shape (T,) (or
    (T, num_labels) with `multi_label`). `top_k` keeps only each row's k largest
    predictions; `class_id` keeps only that class column. `label_weights` (not with
    `multi_label`) multiply the sample weights per class.
    """
    if multi_label and label_weights is not None:
        raise ValueError(
            "update_confusion_matrix_variables: `label_weights` with multi_label=True are applied "
            "when the result is computed, not here."
        )
    invalid = [key for key in variables_to_update if key not in CONFUSION_KEYS]
    if invalid or not variables_to_update:
        raise ValueError(
            f"update_confusion_matrix_variables: expected keys among {list(CONFUSION_KEYS)}. "
            f"Received: {list(variables_to_update)}"
        )
    dtype = next(iter(variables_to_update.values())).dtype
    y_true = ops.cast(ops.convert_to_tensor(y_true), dtype)
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), dtype)
    y_pred, y_true = squeeze_or_expand_to_same_rank(y_pred, y_true)
    if sample_weight is not None:
        sample_weight = ops.expand_dims(ops.cast(ops.convert_to_tensor(sample_weight), dtype), -1)
        _, sample_weight = squeeze_or_expand_to_same_rank(y_true, sample_weight, expand_rank_1=False)
    if top_k is not None:
        y_pred = filter_top_k(y_pred, top_k)
    if class_id is not None:
        if len(y_pred.shape) == 1:
            raise ValueError(
                "When class_id is provided, y_pred must be a 2D array with shape "
                f"(num_samples, num_classes). Received: y_pred.shape={tuple(y_pred.shape)}"
            )
        column = (Ellipsis, slice(class_id, class_id + 1))
        y_true = ops.getitem(y_true, column)
        y_pred = ops.getitem(y_pred, column)

    weights = None
    if sample_weight is not None:
        weights = ops.multiply(sample_weight, ops.ones_like(y_pred))  # broadcast, batch may be unknown
    if label_weights is not None:
        label_weights = ops.multiply(
            ops.ones_like(y_pred), ops.cast(ops.convert_to_tensor(np.asarray(label_weights)), dtype)
        )
        weights = label_weights if weights is None else ops.multiply(weights, label_weights)

    thresholds = np.asarray(thresholds, dtype=np.float64)
    num_thresholds = len(thresholds)
    if thresholds_distributed_evenly:
        with_epsilon = bool(thresholds[0] < 0.0 or thresholds[-1] > 1.0)
        scaled = ops.multiply(ops.clip(y_pred, 0.0, 1.0), float(num_thresholds - 1))
        score = ops.subtract(ops.negative(ops.floor(ops.negative(scaled))), 1.0)  # ceil - 1
        if with_epsilon:
            score = ops.maximum(score, 0.0)
        cut = np.arange(num_thresholds, dtype=dtype)
        compare = ops.greater_equal
    else:
        score, cut, compare = y_pred, thresholds.astype(dtype), ops.greater

    # No flattening (a graph cannot merge the unknown batch axis with others): the thresholds
    # get a leading axis of their own and the counts sum over every data axis (multi_label:
    # over the samples only, one count per label column).
    rank = len(y_pred.shape)
    labels = ops.expand_dims(ops.not_equal(y_true, 0.0), 0)
    score = ops.expand_dims(score, 0)
    weights = None if weights is None else ops.expand_dims(weights, 0)
    cut = cut.reshape((num_thresholds,) + (1,) * rank)
    axes = 1 if multi_label else tuple(range(1, rank + 1))
    pred_pos = compare(score, cut)  # (T, *y_pred.shape)
    pred_neg = ops.logical_not(pred_pos)
    label_neg = ops.logical_not(labels)
    conditions = {
        TRUE_POSITIVES: (labels, pred_pos),
        FALSE_POSITIVES: (label_neg, pred_pos),
        TRUE_NEGATIVES: (label_neg, pred_neg),
        FALSE_NEGATIVES: (labels, pred_neg),
    }
    for key, variable in variables_to_update.items():
        label, pred = conditions[key]
        hit = ops.logical_and(label, pred)
        if weights is None:
            counts = ops.cast(hit, dtype)
        else:
            counts = ops.where(hit, weights, 0.0)
        variable.assign(ops.add(variable, ops.cast(ops.sum(counts, axis=axes), variable.dtype)))


def confusion_matrix(labels, predictions, num_classes, weights=None, dtype="int32"):
    """The (num_classes, num_classes) matrix of summed weights, rows labels, columns predictions.

    Per sample, one_hot(labels)^T @ (one_hot(predictions) * weights) (a batched matmul over
    the positions of the sample), summed over the batch: no scatter, no flattening of the
    batch axis.
    """
    labels, predictions = ops.cast(labels, "int32"), ops.cast(predictions, "int32")
    if weights is None:
        weights = ops.ones_like(labels)
    weights = ops.cast(weights, "float32")
    if len(labels.shape) == 1:
        labels, predictions, weights = (ops.expand_dims(t, 1) for t in (labels, predictions, weights))
    elif len(labels.shape) > 2:
        positions = int(np.prod(labels.shape[1:]))
        labels, predictions, weights = (ops.reshape(t, (-1, positions)) for t in (labels, predictions, weights))
    rows = ops.one_hot(labels, num_classes, dtype="float32")  # (N, M, C)
    cols = ops.multiply(ops.one_hot(predictions, num_classes, dtype="float32"), ops.expand_dims(weights, -1))
    per_sample = ops.matmul(ops.transpose(rows, (0, 2, 1)), cols)
    return ops.cast(ops.sum(per_sample, axis=0), dtype)
