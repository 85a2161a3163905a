"""Regression, probabilistic and hinge metrics: Means of the matching loss functions."""

from __future__ import annotations

from kgraph import losses as L
from kgraph import ops
from kgraph.losses.loss import divide_no_nan, squeeze_or_expand_to_same_rank
from kgraph.metrics.reduction_metrics import Mean, MeanMetricWrapper


class _Simple(MeanMetricWrapper):
    """A built-in MeanMetricWrapper whose config is its name, dtype and own arguments."""

    _fn = None
    _default_name = None
    _arguments = ()

    def __init__(self, name=None, dtype=None, **kwargs):
        super().__init__(fn=type(self)._fn, name=name or self._default_name, dtype=dtype, **kwargs)
        for key, value in kwargs.items():
            setattr(self, key, value)

    def get_config(self):
        config = {"name": self.name, "dtype": self.dtype}
        config.update({key: getattr(self, key) for key in self._arguments})
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _simple(class_name, fn, default_name, direction, doc):
    def __init__(self, name=default_name, dtype=None):
        _Simple.__init__(self, name=name, dtype=dtype)
        self._direction = direction

    return type(
        class_name,
        (_Simple,),
        {"_fn": staticmethod(fn), "__init__": __init__, "__doc__": doc, "__module__": __name__},
    )


def cosine_similarity(y_true, y_pred, axis=-1):
    """sum(l2_normalize(y_true) * l2_normalize(y_pred), axis) (the metric is not negated)."""
    return ops.negative(L.cosine_similarity(y_true, y_pred, axis=axis))


MeanSquaredError = _simple(
    "MeanSquaredError", L.mean_squared_error, "mean_squared_error", "down", "The mean of squared errors."
)
MeanAbsoluteError = _simple(
    "MeanAbsoluteError", L.mean_absolute_error, "mean_absolute_error", "down", "The mean of absolute errors."
)
MeanAbsolutePercentageError = _simple(
    "MeanAbsolutePercentageError",
    L.mean_absolute_percentage_error,
    "mean_absolute_percentage_error",
    "down",
    "The mean absolute percentage error.",
)
MeanSquaredLogarithmicError = _simple(
    "MeanSquaredLogarithmicError",
    L.mean_squared_logarithmic_error,
    "mean_squared_logarithmic_error",
    "down",
    "The mean squared logarithmic error.",
)
LogCoshError = _simple("LogCoshError", L.log_cosh, "logcosh", "down", "The mean of log(cosh(error)).")
KLDivergence = _simple(
    "KLDivergence", L.kl_divergence, "kl_divergence", "down", "The mean Kullback-Leibler divergence."
)
Poisson = _simple("Poisson", L.poisson, "poisson", "down", "The mean Poisson loss.")
Hinge = _simple("Hinge", L.hinge, "hinge", "down", "The mean hinge loss.")
SquaredHinge = _simple(
    "SquaredHinge", L.squared_hinge, "squared_hinge", "down", "The mean squared hinge loss."
)
CategoricalHinge = _simple(
    "CategoricalHinge", L.categorical_hinge, "categorical_hinge", "down", "The mean categorical hinge loss."
)


class CosineSimilarity(_Simple):
    """The mean cosine similarity between labels and predictions."""

    _fn = staticmethod(cosine_similarity)
    _arguments = ("axis",)

    def __init__(self, name="cosine_similarity", dtype=None, axis=-1):
        super().__init__(name=name, dtype=dtype, axis=axis)
        self._direction = "up"


class BinaryCrossentropy(_Simple):
    """The mean binary crossentropy."""

    _fn = staticmethod(L.binary_crossentropy)
    _arguments = ("from_logits", "label_smoothing")

    def __init__(self, name="binary_crossentropy", dtype=None, from_logits=False, label_smoothing=0):
        super().__init__(name=name, dtype=dtype, from_logits=from_logits, label_smoothing=label_smoothing)
        self._direction = "down"


class CategoricalCrossentropy(_Simple):
    """The mean categorical crossentropy."""

    _fn = staticmethod(L.categorical_crossentropy)
    _arguments = ("from_logits", "label_smoothing", "axis")

    def __init__(
        self, name="categorical_crossentropy", dtype=None, from_logits=False, label_smoothing=0, axis=-1
    ):
        super().__init__(
            name=name, dtype=dtype, from_logits=from_logits, label_smoothing=label_smoothing, axis=axis
        )
        self._direction = "down"


class SparseCategoricalCrossentropy(_Simple):
    """The mean sparse categorical crossentropy."""

    _fn = staticmethod(L.sparse_categorical_crossentropy)
    _arguments = ("from_logits", "axis")

    def __init__(self, name="sparse_categorical_crossentropy", dtype=None, from_logits=False, axis=-1):
        super().__init__(name=name, dtype=dtype, from_logits=from_logits, axis=axis)
        self._direction = "down"


class RootMeanSquaredError(Mean):
    """sqrt of the (weighted) mean of squared errors."""

    def __init__(self, name="root_mean_squared_error", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._direction = "down"

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        y_true = ops.convert_to_tensor(y_true, dtype=self.dtype)
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        return super().update_state(ops.square(ops.subtract(y_pred, y_true)), sample_weight=sample_weight)

    def result(self):
        return ops.sqrt(divide_no_nan(self.total, self.count))
