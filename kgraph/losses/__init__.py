"""kgraph.losses: Keras 3's `keras.losses` namespace (see loss.py and losses.py)."""

import inspect

from kgraph._serialization import deserialize_keras_object, register_public, serialize_keras_object
from kgraph.losses.ctc import CTC, ctc
from kgraph.losses.loss import (
    Loss,
    apply_mask,
    reduce_values,
    reduce_weighted_values,
    squeeze_or_expand_to_same_rank,
    standardize_reduction,
)
from kgraph.losses.losses import (
    BinaryCrossentropy,
    BinaryFocalCrossentropy,
    CategoricalCrossentropy,
    CategoricalFocalCrossentropy,
    CategoricalHinge,
    CosineSimilarity,
    Dice,
    Hinge,
    Huber,
    KLDivergence,
    LogCosh,
    LossFunctionWrapper,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    MeanSquaredLogarithmicError,
    Poisson,
    SparseCategoricalCrossentropy,
    SquaredHinge,
    Tversky,
    binary_crossentropy,
    binary_focal_crossentropy,
    categorical_crossentropy,
    categorical_focal_crossentropy,
    categorical_hinge,
    cosine_similarity,
    dice,
    hinge,
    huber,
    kl_divergence,
    log_cosh,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    mean_squared_logarithmic_error,
    poisson,
    sparse_categorical_crossentropy,
    squared_hinge,
    tversky,
)

CLASSES = [
    Loss,
    LossFunctionWrapper,
    KLDivergence,
    Poisson,
    BinaryCrossentropy,
    BinaryFocalCrossentropy,
    CategoricalCrossentropy,
    CategoricalFocalCrossentropy,
    SparseCategoricalCrossentropy,
    MeanSquaredError,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError,
    CosineSimilarity,
    LogCosh,
    Huber,
    Hinge,
    SquaredHinge,
    CategoricalHinge,
    Dice,
    Tversky,
    CTC,
]
FUNCTIONS = [
    kl_divergence,
    poisson,
    binary_crossentropy,
    binary_focal_crossentropy,
    categorical_crossentropy,
    categorical_focal_crossentropy,
    sparse_categorical_crossentropy,
    mean_squared_error,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_logarithmic_error,
    cosine_similarity,
    log_cosh,
    huber,
    hinge,
    squared_hinge,
    categorical_hinge,
    dice,
    tversky,
    ctc,
]
ALL_OBJECTS = CLASSES + FUNCTIONS

ALL_OBJECTS_DICT = {obj.__name__: obj for obj in ALL_OBJECTS}
ALL_OBJECTS_DICT.update(
    {
        "bce": binary_crossentropy,
        "BCE": binary_crossentropy,
        "kld": kl_divergence,
        "KLD": kl_divergence,
        "mae": mean_absolute_error,
        "MAE": mean_absolute_error,
        "mse": mean_squared_error,
        "MSE": mean_squared_error,
        "mape": mean_absolute_percentage_error,
        "MAPE": mean_absolute_percentage_error,
        "msle": mean_squared_logarithmic_error,
        "MSLE": mean_squared_logarithmic_error,
    }
)

# Short function names Keras also exports.
mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error
kld = KLD = kl_divergence

register_public(ALL_OBJECTS, "keras.losses")


def serialize(loss):
    """The loss's config in Keras 3's format (a function serializes by name)."""
    return serialize_keras_object(loss)


def deserialize(name, custom_objects=None):
    """The Loss instance or loss function a config (or a name) describes."""
    return deserialize_keras_object(
        name,
        module_objects=ALL_OBJECTS_DICT,
        custom_objects=custom_objects,
        printable_module_name="loss function",
    )


def get(identifier):
    """A loss from a name ("mse", "categorical_crossentropy", "CategoricalCrossentropy", ...), a
    config dict, a class (instantiated) or a callable. Function names give the function, class
    names an instance, as in Keras."""
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
        f"Could not interpret loss identifier: {identifier!r}. Valid loss names: {sorted(ALL_OBJECTS_DICT)}"
    )


def resolve_loss(identifier, y_true, y_pred):
    """The Loss compile() uses for one output (Keras 3's compile_utils.get_loss).

    "crossentropy" / "ce" pick binary, sparse or categorical crossentropy from the shapes of
    `y_true` and `y_pred` (tensors or shape tuples); functions are wrapped in a
    LossFunctionWrapper named after the identifier.
    """
    if identifier is None:
        return None
    if str(identifier).lower() not in ("crossentropy", "ce"):
        loss = get(identifier)
    else:
        from kgraph.metrics import is_binary_or_sparse_categorical

        is_binary, is_sparse = is_binary_or_sparse_categorical(y_true, y_pred)
        loss = (
            binary_crossentropy
            if is_binary
            else sparse_categorical_crossentropy
            if is_sparse
            else categorical_crossentropy
        )
    if not isinstance(loss, Loss):
        name = identifier if isinstance(identifier, str) else getattr(loss, "__name__", None)
        loss = LossFunctionWrapper(loss, name=name)
    return loss


__all__ = [obj.__name__ for obj in ALL_OBJECTS] + [
    "mse",
    "MSE",
    "mae",
    "MAE",
    "mape",
    "MAPE",
    "msle",
    "MSLE",
    "kld",
    "KLD",
    "get",
    "serialize",
    "deserialize",
    "resolve_loss",
    "reduce_values",
    "reduce_weighted_values",
    "apply_mask",
    "squeeze_or_expand_to_same_rank",
    "standardize_reduction",
]
