"""Confusion-matrix, F-score, R2, IoU and top-k metrics against numpy references written here
and scikit-learn (two updates, one with sample weights, then reset), their configs and names,
and the same metrics compiled into fit/evaluate."""

import json
import os
import subprocess

import numpy as np
import pytest
from keras_reference import SKIP_REASON, keras_python
from sklearn.metrics import f1_score, fbeta_score, jaccard_score, r2_score, roc_auc_score

import kgraph as keras
from kgraph import layers, metrics

RNG = np.random.default_rng(7)
EPS = 1e-7


def _halves(*arrays):
    """Split every array into two batches (the metric sees two update_state calls)."""
    n = len(arrays[0]) // 2
    return [a[:n] for a in arrays], [a[n:] for a in arrays]


def _feed(metric, y_true, y_pred, weights):
    """update_state on two halves, weights on the first only; the weights the reference uses."""
    (t1, p1, w1), (t2, p2, _) = _halves(y_true, y_pred, weights)
    metric.update_state(t1, p1, sample_weight=w1)
    metric.update_state(t2, p2)
    return np.concatenate([w1, np.ones(len(t2), w1.dtype)])


def _check_reset(metric):
    metric.reset_state()
    for variable in metric.variables:
        assert not np.any(variable.numpy()), variable.path


def _binary_data(n=40, cols=None):
    shape = (n,) if cols is None else (n, cols)
    y = RNG.integers(0, 2, shape).astype("float32")
    p = RNG.uniform(0.001, 0.999, shape).astype("float32")
    w = RNG.uniform(0.2, 2.0, n).astype("float32")
    return y, p, w


def _ref_counts(y, p, w, thresholds):
    """(tp, fp, tn, fn) at each threshold; `w` per sample, broadcast over columns."""
    w = np.broadcast_to(w.reshape((-1,) + (1,) * (y.ndim - 1)), y.shape).astype(np.float64)
    out = {key: [] for key in ("tp", "fp", "tn", "fn")}
    for t in thresholds:
        pred = p > np.float32(t)
        out["tp"].append(w[pred & (y != 0)].sum())
        out["fp"].append(w[pred & (y == 0)].sum())
        out["tn"].append(w[~pred & (y == 0)].sum())
        out["fn"].append(w[~pred & (y != 0)].sum())
    return {key: np.array(v) for key, v in out.items()}


def _div(a, b):
    return np.where(b == 0, 0.0, a / np.where(b == 0, 1, b))


@pytest.mark.parametrize(
    "cls,key", [("TruePositives", "tp"), ("FalsePositives", "fp"), ("TrueNegatives", "tn"), ("FalseNegatives", "fn")]
)
@pytest.mark.parametrize("thresholds", [None, 0.3, [0.1, 0.5, 0.9], [0.0, 0.5, 1.0]])
def test_confusion_counts(cls, key, thresholds):
    y, p, w = _binary_data(cols=3)
    metric = getattr(metrics, cls)(thresholds=thresholds)
    weights = _feed(metric, y, p, w)
    listed = [0.5] if thresholds is None else np.atleast_1d(thresholds).tolist()
    expected = _ref_counts(y, p, weights, listed)[key]
    np.testing.assert_allclose(metric.result(), expected[0] if len(listed) == 1 else expected, rtol=1e-5)
    _check_reset(metric)


def _stable_top_k(p, k):
    """Mask of each row's k largest entries, ties going to the lower index."""
    order = np.argsort(-p, axis=-1, kind="stable")
    mask = np.zeros(p.shape, bool)
    np.put_along_axis(mask, order[:, :k], True, axis=-1)
    return mask


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"thresholds": [0.2, 0.5, 0.7]}, {"top_k": 2}, {"class_id": 1}, {"top_k": 1, "class_id": 3}],
    ids=["default", "thresholds", "top_k", "class_id", "top_k_class_id"],
)
def test_precision_and_recall(kwargs):
    y, p, w = _binary_data(cols=4)
    p = np.round(p, 1)  # ties, so top_k's tie order matters
    precision, recall = metrics.Precision(**kwargs), metrics.Recall(**kwargs)
    weights = _feed(precision, y, p, w)
    _feed(recall, y, p, w)
    ref_y, ref_p = y, p
    if "top_k" in kwargs:
        ref_p = np.where(_stable_top_k(p, kwargs["top_k"]), p, -1e10)
    if "class_id" in kwargs:
        ref_y, ref_p = ref_y[:, kwargs["class_id"]], ref_p[:, kwargs["class_id"]]
    listed = kwargs.get("thresholds", [-1e10 if "top_k" in kwargs else 0.5])
    c = _ref_counts(ref_y, ref_p, weights, listed)
    for metric, expected in ((precision, _div(c["tp"], c["tp"] + c["fp"])), (recall, _div(c["tp"], c["tp"] + c["fn"]))):
        np.testing.assert_allclose(metric.result(), expected[0] if len(listed) == 1 else expected, rtol=1e-5)
        _check_reset(metric)


def test_precision_recall_keras_documented_values():
    m = metrics.Precision(top_k=2)
    m.update_state([0, 0, 1, 1], [1, 0, 1, 1])
    np.testing.assert_allclose(m.result(), 0.5)
    m.reset_state()
    m.update_state([0, 0, 1, 1], [1, 1, 1, 1])
    np.testing.assert_allclose(m.result(), 0.0)  # ties: the first two entries are the top 2
    m = metrics.Recall(class_id=2, top_k=1)
    m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.2, 0.7], [0.3, 0.4, 0.3]])
    np.testing.assert_allclose(m.result(), 1.0)


def _ref_auc_thresholds(num_thresholds):
    inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
    return [-EPS] + inner + [1 + EPS]


def _ref_area(c, curve, method):
    """Area under the ROC / PR curve through the points at successive thresholds."""
    recall = _div(c["tp"], c["tp"] + c["fn"])
    if curve == "ROC":
        x, y = _div(c["fp"], c["fp"] + c["tn"]), recall
    else:
        x, y = recall, _div(c["tp"], c["tp"] + c["fp"])
    pairs = np.stack([y[:-1], y[1:]])
    heights = {"interpolation": pairs.mean(0), "minoring": pairs.min(0), "majoring": pairs.max(0)}[method]
    return ((x[:-1] - x[1:]) * heights).sum(0)


def _ref_interpolated_pr(c, steps=2000):
    """PR area with precision interpolated linearly in TP between threshold points (Davis &
    Goadrich), integrated numerically over recall (midpoint rule)."""
    positives = c["tp"] + c["fn"]
    area = 0.0
    for i in range(len(c["tp"]) - 1):
        tp0, tp1 = c["tp"][i + 1], c["tp"][i]  # from the higher threshold to the lower
        p0, p1 = tp0 + c["fp"][i + 1], tp1 + c["fp"][i]
        if p1 <= p0 or tp1 == tp0:
            continue
        s = (np.arange(steps) + 0.5) / steps
        tp_s = tp0 + s * (tp1 - tp0)
        p_s = p0 + s * (p1 - p0)
        area += np.sum(tp_s / p_s) * (tp1 - tp0) / steps / positives[i + 1]
    return area


def test_auc_roc_equals_sklearn_at_exact_thresholds():
    y, p, w = _binary_data(n=60)
    exact = metrics.AUC(thresholds=sorted(set(p.tolist())))  # every prediction is a curve point
    default = metrics.AUC()
    weights = _feed(exact, y, p, w)
    _feed(default, y, p, w)
    expected = roc_auc_score(y, p, sample_weight=weights)
    np.testing.assert_allclose(exact.result(), expected, rtol=1e-5)
    np.testing.assert_allclose(default.result(), expected, atol=2e-2)  # 200 thresholds
    np.testing.assert_allclose(
        default.result(), _ref_area(_ref_counts(y, p, weights, _ref_auc_thresholds(200)), "ROC", "interpolation"),
        rtol=1e-5,
    )
    _check_reset(default)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"curve": "PR"},
        {"curve": "PR", "summation_method": "minoring", "num_thresholds": 50},
        {"curve": "PR", "summation_method": "majoring"},
        {"summation_method": "minoring"},
        {"from_logits": True, "num_thresholds": 30},
        {"label_weights": [1.0, 2.0, 0.5]},
        {"multi_label": True},
        {"multi_label": True, "num_labels": 3, "label_weights": [1.0, 0.0, 3.0], "curve": "PR"},
    ],
    ids=["pr", "pr_minoring", "pr_majoring", "roc_minoring", "logits", "label_weights", "multi_label", "ml_pr_lw"],
)
def test_auc_variants(kwargs):
    y, p, w = _binary_data(n=50, cols=3)
    inputs = np.log(p / (1 - p)) if kwargs.get("from_logits") else p
    metric = metrics.AUC(**kwargs)
    weights = _feed(metric, y, inputs, w)
    thresholds = _ref_auc_thresholds(kwargs.get("num_thresholds", 200))
    curve, method = kwargs.get("curve", "ROC"), kwargs.get("summation_method", "interpolation")
    label_weights = np.asarray(kwargs.get("label_weights", [1.0, 1.0, 1.0]))

    def area(c):
        return _ref_interpolated_pr(c) if curve == "PR" and method == "interpolation" else _ref_area(c, curve, method)

    if kwargs.get("multi_label"):
        per_label = [area(_ref_counts(y[:, j], p[:, j], weights, thresholds)) for j in range(3)]
        expected = np.sum(np.multiply(per_label, label_weights)) / label_weights.sum()
    else:
        all_weights = weights[:, None] * label_weights[None, :]
        sums = {}
        for j in range(3):
            col = _ref_counts(y[:, j], p[:, j], all_weights[:, j], thresholds)
            sums = {k: sums.get(k, 0) + v for k, v in col.items()}
        expected = area(sums)
    np.testing.assert_allclose(metric.result(), expected, rtol=2e-4 if method == "interpolation" else 1e-5)
    _check_reset(metric)


def test_auc_counts_like_keras_at_the_ends():
    """A prediction of exactly 1.0 is not above the last threshold 1 + 1e-7; 0.0 is above -1e-7;
    values outside [0, 1] are clipped first (Keras 3 buckets predictions)."""
    m = metrics.AUC(num_thresholds=3)
    m.update_state([1, 0, 1, 0], [1.0, 0.0, 1.7, -0.3])
    np.testing.assert_allclose(m.true_positives.numpy(), [2, 2, 0])
    np.testing.assert_allclose(m.false_positives.numpy(), [2, 0, 0])
    np.testing.assert_allclose(m.result(), 1.0)


@pytest.mark.parametrize(
    "cls,arg,constrained,dependent",
    [
        ("SensitivityAtSpecificity", "specificity", "spec", "sens"),
        ("SpecificityAtSensitivity", "sensitivity", "sens", "spec"),
        ("PrecisionAtRecall", "recall", "sens", "prec"),
        ("RecallAtPrecision", "precision", "prec", "sens"),
    ],
)
@pytest.mark.parametrize("value,num_thresholds,class_id", [(0.6, 200, None), (0.4, 25, 2), (0.8, 1, None)])
def test_rate_at_rate_metrics(cls, arg, constrained, dependent, value, num_thresholds, class_id):
    y, p, w = _binary_data(n=60, cols=3)
    metric = getattr(metrics, cls)(value, num_thresholds=num_thresholds, class_id=class_id)
    assert getattr(metric, arg) == value
    weights = _feed(metric, y, p, w)
    if class_id is not None:
        y, p = y[:, class_id], p[:, class_id]
    thresholds = [0.5] if num_thresholds == 1 else np.linspace(0, 1, num_thresholds)
    c = _ref_counts(y, p, weights, thresholds)
    rates = {
        "sens": _div(c["tp"], c["tp"] + c["fn"]),
        "spec": _div(c["tn"], c["tn"] + c["fp"]),
        "prec": _div(c["tp"], c["tp"] + c["fp"]),
    }
    feasible = rates[constrained] >= np.float32(value)
    expected = rates[dependent][feasible].max() if feasible.any() else 0.0
    np.testing.assert_allclose(metric.result(), expected, rtol=1e-5)
    _check_reset(metric)


@pytest.mark.parametrize("average", [None, "micro", "macro", "weighted"])
@pytest.mark.parametrize("threshold", [0.5, None])
def test_f_scores_match_sklearn(average, threshold):
    y, p, w = _binary_data(n=60, cols=4)
    if threshold is None:  # argmax mode: one-hot labels
        y = np.eye(4, dtype="float32")[RNG.integers(0, 4, 60)]
    f1, f2 = metrics.F1Score(average=average, threshold=threshold), metrics.FBetaScore(average, 2.0, threshold)
    weights = _feed(f1, y, p, w)
    _feed(f2, y, p, w)
    pred = (p > threshold) if threshold is not None else (p == p.max(-1, keepdims=True))
    expected1 = f1_score(y, pred.astype(int), average=average, sample_weight=weights, zero_division=0)
    expected2 = fbeta_score(y, pred.astype(int), beta=2.0, average=average, sample_weight=weights, zero_division=0)
    np.testing.assert_allclose(f1.result(), expected1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(f2.result(), expected2, rtol=1e-4, atol=1e-6)
    _check_reset(f1)


@pytest.mark.parametrize(
    "aggregation,multioutput",
    [("uniform_average", "uniform_average"), ("variance_weighted_average", "variance_weighted"), (None, "raw_values")],
)
def test_r2_score_matches_sklearn(aggregation, multioutput):
    y = RNG.standard_normal((40, 3)).astype("float32")
    p = (y + 0.7 * RNG.standard_normal((40, 3))).astype("float32")
    w = RNG.uniform(0.2, 2.0, 40).astype("float32")
    metric = metrics.R2Score(class_aggregation=aggregation)
    weights = _feed(metric, y, p, w)
    expected = r2_score(y, p, sample_weight=weights, multioutput=multioutput)
    np.testing.assert_allclose(metric.result(), expected, rtol=1e-4)
    adjusted = metrics.R2Score(class_aggregation=aggregation, num_regressors=5)
    _feed(adjusted, y, p, w)
    n = y.size  # Keras counts every entry as a sample
    np.testing.assert_allclose(adjusted.result(), 1 - (1 - expected) * (n - 1) / (n - 5 - 1), rtol=1e-4)
    _check_reset(metric)


def test_iou_metrics_match_sklearn():
    labels = RNG.integers(0, 4, 48)
    preds = np.where(RNG.uniform(size=48) < 0.5, labels, RNG.integers(0, 4, 48))
    w = RNG.uniform(0.2, 2.0, 48).astype("float32")
    mean_iou = metrics.MeanIoU(num_classes=4, dtype="float32")
    weights = _feed(mean_iou, labels, preds, w)
    per_class = jaccard_score(labels, preds, average=None, sample_weight=weights)
    np.testing.assert_allclose(mean_iou.result(), per_class.mean(), rtol=1e-5)
    iou = metrics.IoU(num_classes=4, target_class_ids=[0, 2], dtype="float32")
    _feed(iou, labels, preds, w)
    np.testing.assert_allclose(iou.result(), per_class[[0, 2]].mean(), rtol=1e-5)
    # one-hot labels and scores: argmax first
    scores = np.eye(4, dtype="float32")[preds] + RNG.uniform(0, 0.5, (48, 4)).astype("float32")
    onehot = metrics.OneHotMeanIoU(num_classes=4, dtype="float32")
    _feed(onehot, np.eye(4, dtype="float32")[labels], scores, w)
    expected = jaccard_score(labels, scores.argmax(-1), average=None, sample_weight=weights).mean()
    np.testing.assert_allclose(onehot.result(), expected, rtol=1e-5)
    onehot_iou = metrics.OneHotIoU(num_classes=4, target_class_ids=[1], dtype="float32")
    _feed(onehot_iou, np.eye(4, dtype="float32")[labels], scores, w)
    expected = jaccard_score(labels, scores.argmax(-1), average=None, sample_weight=weights)[1]
    np.testing.assert_allclose(onehot_iou.result(), expected, rtol=1e-5)
    # binary: >= threshold is class 1
    y, p, w2 = _binary_data(n=30)
    binary = metrics.BinaryIoU(target_class_ids=[0, 1], threshold=0.3, dtype="float32")
    weights = _feed(binary, y, p, w2)
    expected = jaccard_score(y, (p >= 0.3).astype(int), average=None, sample_weight=weights).mean()
    np.testing.assert_allclose(binary.result(), expected, rtol=1e-5)
    _check_reset(binary)
    # ignore_class and out-of-range labels leave the counts; the default int32 dtype truncates
    m = metrics.MeanIoU(num_classes=3, ignore_class=0)
    with pytest.warns(UserWarning, match="truncated"):
        m.update_state([0, 1, 2, 2, 5], [1, 1, 2, 1, 2], sample_weight=[1.0, 1.9, 1.0, 2.0, 1.0])
    np.testing.assert_array_equal(m.total_cm.numpy(), [[0, 0, 0], [0, 1, 0], [0, 2, 1]])
    np.testing.assert_allclose(m.result(), (1 / 3 + 1 / 3) / 2, rtol=1e-5)  # class 0 is empty
    # per-position labels (segmentation maps)
    seg = metrics.MeanIoU(num_classes=3, dtype="float32")
    maps_true, maps_pred = RNG.integers(0, 3, (4, 5, 6)), RNG.integers(0, 3, (4, 5, 6))
    seg.update_state(maps_true, maps_pred)
    np.testing.assert_allclose(
        seg.result(), jaccard_score(maps_true.ravel(), maps_pred.ravel(), average=None).mean(), rtol=1e-5
    )


def _ref_in_top_k(labels, scores, k):
    at_label = np.take_along_axis(scores, labels[..., None], axis=-1)
    return ((scores > at_label).sum(-1) < k).astype(np.float64)


def test_top_k_accuracies():
    labels = RNG.integers(0, 6, 40)
    scores = np.round(RNG.uniform(0, 1, (40, 6)), 1).astype("float32")  # with ties
    w = RNG.uniform(0.2, 2.0, 40).astype("float32")
    for k in (1, 3, 5):
        hits = _ref_in_top_k(labels, scores, k)
        for metric, y in (
            (metrics.SparseTopKCategoricalAccuracy(k=k), labels),
            (metrics.SparseTopKCategoricalAccuracy(k=k), labels[:, None]),
            (metrics.TopKCategoricalAccuracy(k=k), np.eye(6, dtype="float32")[labels]),
        ):
            weights = _feed(metric, y, scores, w)
            np.testing.assert_allclose(metric.result(), (hits * weights).sum() / weights.sum(), rtol=1e-6)
            _check_reset(metric)
    assert metrics.TopKCategoricalAccuracy().k == 5
    # per-position labels: (batch, steps) against (batch, steps, classes)
    seq_labels, seq_scores = RNG.integers(0, 6, (4, 7)), RNG.uniform(size=(4, 7, 6)).astype("float32")
    np.testing.assert_allclose(
        metrics.sparse_top_k_categorical_accuracy(seq_labels, seq_scores, k=2), _ref_in_top_k(seq_labels, seq_scores, 2)
    )
    ids = np.argsort(-scores, axis=-1, kind="stable")
    sorted_ids = metrics.SparseTopKCategoricalAccuracy(k=2, from_sorted_ids=True)
    sorted_ids.update_state(labels, ids.astype("float32"))
    np.testing.assert_allclose(sorted_ids.result(), (ids[:, :2] == labels[:, None]).any(-1).mean(), rtol=1e-6)


NEW = {
    "TopKCategoricalAccuracy": {"k": 3},
    "SparseTopKCategoricalAccuracy": {"k": 2, "from_sorted_ids": True},
    "TruePositives": {"thresholds": [0.2, 0.7]},
    "FalsePositives": {},
    "TrueNegatives": {"thresholds": 0.4},
    "FalseNegatives": {},
    "Precision": {"top_k": 2, "class_id": 1},
    "Recall": {"thresholds": [0.3, 0.6]},
    "AUC": {"curve": "PR", "summation_method": "minoring", "thresholds": [0.2, 0.5], "from_logits": True},
    "SensitivityAtSpecificity": {"specificity": 0.3, "num_thresholds": 10, "class_id": 1},
    "SpecificityAtSensitivity": {"sensitivity": 0.3},
    "PrecisionAtRecall": {"recall": 0.5},
    "RecallAtPrecision": {"precision": 0.5},
    "FBetaScore": {"average": "macro", "beta": 2.0, "threshold": 0.4},
    "F1Score": {"average": "weighted"},
    "R2Score": {"class_aggregation": None, "num_regressors": 2},
    "IoU": {"num_classes": 3, "target_class_ids": [0, 2], "ignore_class": 1},
    "BinaryIoU": {"target_class_ids": [1], "threshold": 0.2},
    "MeanIoU": {"num_classes": 4, "sparse_y_pred": False},
    "OneHotIoU": {"num_classes": 3, "target_class_ids": [1]},
    "OneHotMeanIoU": {"num_classes": 3},
}
DEFAULT_NAMES = {
    "TopKCategoricalAccuracy": "top_k_categorical_accuracy",
    "SparseTopKCategoricalAccuracy": "sparse_top_k_categorical_accuracy",
    "FBetaScore": "fbeta_score",
    "F1Score": "f1_score",
    "R2Score": "r2_score",
    "AUC": "auc",
    "TruePositives": "true_positives",
    "PrecisionAtRecall": "precision_at_recall",
    "MeanIoU": "mean_io_u",
    "OneHotMeanIoU": "one_hot_mean_io_u",
}


def test_configs_names_and_aliases():
    for name, kwargs in NEW.items():
        metric = getattr(metrics, name)(**kwargs)
        config = metric.get_config()
        for key, value in kwargs.items():
            assert config[key] == value, (name, key)
        clone = metrics.deserialize(json.loads(json.dumps(metrics.serialize(metric))))
        assert type(clone) is type(metric) and clone.get_config() == config
    for cls, name in DEFAULT_NAMES.items():
        kwargs = {k: v for k, v in NEW[cls].items() if k not in ("k", "average", "threshold", "thresholds")}
        assert getattr(metrics, cls)(**kwargs).name.startswith(name)
    assert "beta" not in metrics.F1Score().get_config()
    assert metrics.AUC().get_config()["curve"] == "ROC" and "thresholds" not in metrics.AUC().get_config()
    assert metrics.IoU(3, [0]).dtype == "int32" and metrics.AUC().dtype == "float32"
    for alias, cls in [
        ("auc", metrics.AUC),
        ("AUC", metrics.AUC),
        ("precision", metrics.Precision),
        ("recall", metrics.Recall),
        ("f1_score", metrics.F1Score),
        ("f_beta_score", metrics.FBetaScore),
        ("r2_score", metrics.R2Score),
        ("top_k_categorical_accuracy", metrics.TopKCategoricalAccuracy),
        ("sparse_top_k_categorical_accuracy", metrics.SparseTopKCategoricalAccuracy),
        ("true_positives", metrics.TruePositives),
        ("false_negatives", metrics.FalseNegatives),
    ]:
        assert type(metrics.get(alias)) is cls
    assert metrics.deserialize("mean_io_u") is metrics.MeanIoU  # needs arguments: the class itself


def test_bad_arguments_are_named():
    cases = [
        (lambda: metrics.AUC(curve="ROCK"), "curve"),
        (lambda: metrics.AUC(summation_method="trapezoid"), "summation"),
        (lambda: metrics.AUC(num_thresholds=1), "num_thresholds"),
        (lambda: metrics.AUC(num_labels=3), "num_labels"),
        (lambda: metrics.Precision(thresholds=[0.5, 1.5]), "Precision.*thresholds"),
        (lambda: metrics.F1Score(average="mean"), "average"),
        (lambda: metrics.FBetaScore(beta=2), "beta"),
        (lambda: metrics.F1Score(threshold=1), "threshold"),
        (lambda: metrics.R2Score(class_aggregation="median"), "class_aggregation"),
        (lambda: metrics.PrecisionAtRecall(1.5), "recall"),
        (lambda: metrics.SensitivityAtSpecificity(0.5, num_thresholds=0), "num_thresholds"),
        (lambda: metrics.IoU(3, [0, 3]), "out of range"),
        (lambda: metrics.F1Score().update_state(np.ones(4), np.ones(4)), "F1Score expects 2D"),
        (lambda: metrics.AUC(multi_label=True).update_state(np.ones(4), np.ones(4)), "rank 2"),
        (lambda: metrics.Recall(class_id=1).update_state(np.ones(4), np.ones(4)), "class_id"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()


# -- compiled into fit / evaluate -------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled_run():
    """One compiled model with many metrics; SGD(0) keeps the weights fixed, so epoch logs equal
    the metrics over the model's predictions. 100 samples in batches of 40 (40, 40, 20)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, 5)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 100)]
    model = keras.Sequential([keras.Input((5,)), layers.Dense(4, activation="softmax")])
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss="categorical_crossentropy",
        metrics=[
            "auc",
            "precision",
            "recall",
            "top_k_categorical_accuracy",
            metrics.F1Score(average="macro"),
            metrics.TopKCategoricalAccuracy(k=2, name="top2"),
            metrics.AUC(curve="PR", multi_label=True, name="pr_auc"),
            metrics.R2Score(),
            metrics.OneHotMeanIoU(num_classes=4, name="one_hot_mean_io_u"),  # unnamed: "..._1" if made before
            metrics.RecallAtPrecision(0.3, name="recall_at_precision"),
        ],
        weighted_metrics=[
            metrics.AUC(name="w_auc"),
            metrics.F1Score(average="weighted", name="w_f1"),
            metrics.MeanIoU(4, sparse_y_true=False, sparse_y_pred=False, dtype="float32", name="w_iou"),
        ],
    )
    sw = rng.uniform(0.1, 2.0, 100).astype("float32")
    history = model.fit(x, y, sample_weight=sw, batch_size=40, epochs=1, verbose=0)
    evaluated = model.evaluate(x, y, sample_weight=sw, batch_size=40, return_dict=True, verbose=0)
    return model, x, y, sw, history.history, evaluated


def test_compiled_metrics_equal_eager(compiled_run):
    model, x, y, sw, history, evaluated = compiled_run
    names = ["auc", "precision", "recall", "top_k_categorical_accuracy", "f1_score", "top2", "pr_auc",
             "r2_score", "one_hot_mean_io_u", "recall_at_precision", "w_auc", "w_f1", "w_iou"]
    assert list(history) == ["loss"] + names
    assert list(evaluated) == ["loss"] + names
    p = model.predict(x, batch_size=40, verbose=0)
    for metric in model.metrics[1:]:
        eager = type(metric).from_config(metric.get_config())
        for start in range(0, 100, 40):
            weights = sw[start:start + 40] if metric.name.startswith("w_") else None
            eager.update_state(y[start:start + 40], p[start:start + 40], sample_weight=weights)
        expected = float(np.asarray(eager.result()))
        np.testing.assert_allclose(history[metric.name][0], expected, rtol=1e-5, atol=1e-7, err_msg=metric.name)
        np.testing.assert_allclose(evaluated[metric.name], expected, rtol=1e-5, atol=1e-7, err_msg=metric.name)
    labels = y.argmax(-1)
    np.testing.assert_allclose(evaluated["top2"], _ref_in_top_k(labels, p, 2).mean(), rtol=1e-6)
    np.testing.assert_allclose(evaluated["auc"], roc_auc_score(y.ravel(), p.ravel()), atol=1e-2)
    weighted_auc = roc_auc_score(y.ravel(), p.ravel(), sample_weight=np.repeat(sw, 4))
    np.testing.assert_allclose(evaluated["w_auc"], weighted_auc, atol=1e-2)
    np.testing.assert_allclose(
        evaluated["f1_score"], f1_score(y, (p == p.max(-1, keepdims=True)).astype(int), average="macro"), rtol=1e-4
    )


# -- optional: Keras 3 itself as a second oracle ----------------------------------------------------
KERAS_PYTHON = keras_python()
KERAS_SCRIPT = """
import json, sys, numpy as np, keras
cases = json.load(sys.stdin)
out = []
for name, kwargs, t, p, w in cases:
    m = getattr(keras.metrics, name)(**kwargs)
    n = len(t) // 2
    m.update_state(np.array(t[:n]), np.array(p[:n], "float32"), sample_weight=np.array(w[:n], "float32"))
    m.update_state(np.array(t[n:]), np.array(p[n:], "float32"))
    out.append(np.asarray(m.result(), "float64").tolist())
print(json.dumps(out))
"""


@pytest.mark.filterwarnings("ignore:.*truncated")
@pytest.mark.skipif(KERAS_PYTHON is None, reason=SKIP_REASON)
def test_against_keras_when_available():
    y, p, w = _binary_data(n=24, cols=3)
    p[0] = [1.0, 0.0, 0.5]  # on thresholds and at the ends
    labels = RNG.integers(0, 3, 24)
    cases = [
        ("AUC", {}, y, p),
        ("AUC", {"curve": "PR", "multi_label": True}, y, p),
        ("AUC", {"curve": "PRGAIN"}, y, p),
        ("Precision", {"thresholds": [0.0, 0.5, 1.0]}, y, p),
        ("Recall", {"top_k": 1}, y, p),
        ("SpecificityAtSensitivity", {"sensitivity": 0.5, "num_thresholds": 5}, y, p),
        ("F1Score", {"average": "weighted"}, y, p),
        ("R2Score", {}, y, p),
        ("MeanIoU", {"num_classes": 3}, labels, RNG.integers(0, 3, 24)),
        ("SparseTopKCategoricalAccuracy", {"k": 2}, labels, p),
    ]
    payload = [(name, kw, np.asarray(t).tolist(), np.asarray(q).tolist(), w.tolist()) for name, kw, t, q in cases]
    env = {**os.environ, "KERAS_BACKEND": "numpy"}  # no jit: the quickest backend to start
    done = subprocess.run([KERAS_PYTHON, "-c", KERAS_SCRIPT], input=json.dumps(payload), capture_output=True,
                          text=True, env=env, timeout=120)
    if done.returncode != 0:
        pytest.skip(f"Keras reference failed to run: {done.stderr[-300:]}")
    expected = json.loads(done.stdout.strip().splitlines()[-1])
    for (name, kwargs, t, q), reference in zip(cases, expected):
        metric = getattr(metrics, name)(**kwargs)
        n = len(t) // 2
        metric.update_state(t[:n], q[:n], sample_weight=w[:n])
        metric.update_state(t[n:], q[n:])
        np.testing.assert_allclose(metric.result(), reference, rtol=1e-5, atol=1e-6, err_msg=f"{name} {kwargs}")

