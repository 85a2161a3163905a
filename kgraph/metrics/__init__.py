"""kgraph.metrics: Keras 3's `keras.metrics` namespace.

Besides the Keras names, this module holds the helpers compile() uses to turn its
`metrics=` entries into Metric objects: `get_compile_metric` (Keras 3's
compile_utils.get_metric) and `resolve_accuracy`. Keras 3 resolves "accuracy" / "acc"
from the shapes of the targets and the model output, not from the loss:

- the output's last dimension is 1                       -> BinaryAccuracy
- the target has fewer dimensions than the output, or its
  last dimension is 1 while the output's is larger      -> SparseCategoricalAccuracy
- otherwise (one-hot targets)                            -> CategoricalAccuracy

The metric keeps the name the user wrote ("accuracy" or "acc"), so history keys match Keras.
"""

import inspect
import re

from kgraph._serialization import deserialize_keras_object, register_public, serialize_keras_object
from kgraph.losses.losses import (
    binary_crossentropy,
    categorical_crossentropy,
    categorical_hinge,
    hinge,
    kl_divergence,
    log_cosh,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    mean_squared_logarithmic_error,
    poisson,
    sparse_categorical_crossentropy,
    squared_hinge,
)
from kgraph.metrics.accuracy_metrics import (
    Accuracy,
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    SparseTopKCategoricalAccuracy,
    TopKCategoricalAccuracy,
    accuracy,
    binary_accuracy,
    categorical_accuracy,
    sparse_categorical_accuracy,
    sparse_top_k_categorical_accuracy,
    top_k_categorical_accuracy,
)
from kgraph.metrics.confusion_metrics import (
    AUC,
    FalseNegatives,
    FalsePositives,
    Precision,
    PrecisionAtRecall,
    Recall,
    RecallAtPrecision,
    SensitivityAtSpecificity,
    SpecificityAtSensitivity,
    TrueNegatives,
    TruePositives,
)
from kgraph.metrics.iou_metrics import BinaryIoU, IoU, MeanIoU, OneHotIoU, OneHotMeanIoU
from kgraph.metrics.metric import Metric
from kgraph.metrics.reduction_metrics import Mean, MeanMetricWrapper, Sum, reduce_to_samplewise_values
from kgraph.metrics.score_metrics import F1Score, FBetaScore, R2Score
from kgraph.metrics.wrapped_metrics import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    CategoricalHinge,
    CosineSimilarity,
    Hinge,
    KLDivergence,
    LogCoshError,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    MeanSquaredLogarithmicError,
    Poisson,
    RootMeanSquaredError,
    SparseCategoricalCrossentropy,
    SquaredHinge,
)

ALL_OBJECTS = [
    Metric,
    Mean,
    Sum,
    MeanMetricWrapper,
    MeanSquaredError,
    RootMeanSquaredError,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError,
    CosineSimilarity,
    LogCoshError,
    Hinge,
    SquaredHinge,
    CategoricalHinge,
    KLDivergence,
    Poisson,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
    Accuracy,
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    TopKCategoricalAccuracy,
    SparseTopKCategoricalAccuracy,
    TruePositives,
    FalsePositives,
    TrueNegatives,
    FalseNegatives,
    Precision,
    Recall,
    AUC,
    SensitivityAtSpecificity,
    SpecificityAtSensitivity,
    PrecisionAtRecall,
    RecallAtPrecision,
    FBetaScore,
    F1Score,
    R2Score,
    IoU,
    BinaryIoU,
    MeanIoU,
    OneHotIoU,
    OneHotMeanIoU,
]
FUNCTIONS = [
    binary_accuracy,
    categorical_accuracy,
    sparse_categorical_accuracy,
    top_k_categorical_accuracy,
    sparse_top_k_categorical_accuracy,
]


def _snake(name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


ALL_OBJECTS_DICT = {cls.__name__: cls for cls in ALL_OBJECTS}
ALL_OBJECTS_DICT.update({_snake(cls.__name__): cls for cls in ALL_OBJECTS})
ALL_OBJECTS_DICT.update(
    {
        "bce": BinaryCrossentropy,
        "BCE": BinaryCrossentropy,
        "mse": MeanSquaredError,
        "MSE": MeanSquaredError,
        "mae": MeanAbsoluteError,
        "MAE": MeanAbsoluteError,
        "mape": MeanAbsolutePercentageError,
        "MAPE": MeanAbsolutePercentageError,
        "msle": MeanSquaredLogarithmicError,
        "MSLE": MeanSquaredLogarithmicError,
    }
)
# Functions resolve by name when deserializing a MeanMetricWrapper's `fn`.
_FUNCTIONS_DICT = {fn.__name__: fn for fn in FUNCTIONS + [accuracy]}

register_public(ALL_OBJECTS, "keras.metrics")
register_public(FUNCTIONS, "keras.metrics")


def serialize(metric):
    """The metric's config in Keras 3's format."""
    return serialize_keras_object(metric)


def deserialize(config, custom_objects=None):
    """The Metric instance or metric function a config (or a name) describes."""
    from kgraph.losses import ALL_OBJECTS_DICT as LOSSES

    module_objects = {**LOSSES, **_FUNCTIONS_DICT, **ALL_OBJECTS_DICT}
    return deserialize_keras_object(
        config, module_objects=module_objects, custom_objects=custom_objects, printable_module_name="metric"
    )


def get(identifier):
    """A metric from a name ("mse", "accuracy", "SparseCategoricalAccuracy", ...), a config dict,
    a class (instantiated) or a callable (returned as is)."""
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        obj = deserialize(identifier)
    elif isinstance(identifier, str):
        obj = ALL_OBJECTS_DICT.get(identifier)
    else:
        obj = identifier
    if callable(obj):
        if inspect.isclass(obj):
            obj = obj()
        return obj
    raise ValueError(
        f"Could not interpret metric identifier: {identifier!r}. Valid metric names: "
        f"{sorted(ALL_OBJECTS_DICT)}"
    )


# -- compile() helpers ------------------------------------------------------------------------------
def _shape_of(x):
    if isinstance(x, (tuple, list)) and all(d is None or isinstance(d, int) for d in x):
        return tuple(x)
    return tuple(x.shape)


def is_binary_or_sparse_categorical(y_true, y_pred):
    """(is_binary, is_sparse_categorical) from the shapes of targets and outputs (tensors or
    shape tuples), by Keras 3's rule (see the module docstring)."""
    true_shape, pred_shape = _shape_of(y_true), _shape_of(y_pred)
    true_last = true_shape[-1] if true_shape else None
    pred_last = pred_shape[-1] if pred_shape else None
    is_binary = pred_last == 1
    is_sparse = len(true_shape) < len(pred_shape) or (
        true_last == 1 and pred_last is not None and pred_last > 1
    )
    return is_binary, is_sparse


def resolve_accuracy(identifier, y_true, y_pred):
    """The accuracy Metric compile() uses for "accuracy" / "acc", named `identifier`.

    `y_true` and `y_pred` are the target and the model output for that output (tensors or
    shape tuples such as (None, 10)). Keras 3 does not look at the loss.
    """
    is_binary, is_sparse = is_binary_or_sparse_categorical(y_true, y_pred)
    if is_binary:
        return BinaryAccuracy(name=str(identifier))
    if is_sparse:
        return SparseCategoricalAccuracy(name=str(identifier))
    return CategoricalAccuracy(name=str(identifier))


def get_compile_metric(identifier, y_true, y_pred):
    """A Metric for one compile() `metrics=` entry (Keras 3's compile_utils.get_metric).

    "accuracy" / "acc" go through `resolve_accuracy`; other names through `get`; functions
    are wrapped in a MeanMetricWrapper. A string identifier becomes the metric's name.
    """
    if identifier is None:
        return None
    if str(identifier).lower() in ("accuracy", "acc"):
        metric = resolve_accuracy(identifier, y_true, y_pred)
    else:
        metric = get(identifier)
    if isinstance(identifier, str):
        name = identifier
    else:
        name = getattr(metric, "name", None) or getattr(metric, "__name__", None)
    if not isinstance(metric, Metric):
        metric = MeanMetricWrapper(metric)
    metric.name = name
    return metric


__all__ = (
    [cls.__name__ for cls in ALL_OBJECTS]
    + [fn.__name__ for fn in FUNCTIONS]
    + [
        "accuracy",
        "binary_crossentropy",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
        "mean_squared_error",
        "mean_absolute_error",
        "mean_absolute_percentage_error",
        "mean_squared_logarithmic_error",
        "kl_divergence",
        "poisson",
        "hinge",
        "squared_hinge",
        "categorical_hinge",
        "log_cosh",
        "get",
        "serialize",
        "deserialize",
        "get_compile_metric",
        "resolve_accuracy",
        "is_binary_or_sparse_categorical",
        "reduce_to_samplewise_values",
    ]
)
