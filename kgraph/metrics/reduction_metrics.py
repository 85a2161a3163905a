"""Sum, Mean and MeanMetricWrapper (a Mean of a per-sample function), as in Keras 3."""

from __future__ import annotations

from kgraph import ops
from kgraph._serialization import deserialize_keras_object, serialize_keras_object
from kgraph.losses.loss import (
    _unmask,
    apply_mask,
    divide_no_nan,
    get_keras_mask,
    squeeze_or_expand_to_same_rank,
)
from kgraph.metrics.metric import Metric
from kgraph.ops import bind


def _num_rows(values):
    """The size of the first dimension: a Python int when static, else a run-time graph value."""
    rows = values.shape[0]
    if rows is not None:
        return rows
    return bind("reduced_count", [values], axes=(0,))


def reduce_to_samplewise_values(values, sample_weight, reduce_fn, dtype):
    """Weight `values` and reduce them to one value per sample (the first axis)."""
    mask = get_keras_mask(values)
    values = ops.cast(_unmask(values), dtype)
    if sample_weight is not None:
        sample_weight = ops.convert_to_tensor(_unmask(sample_weight), dtype=dtype)
        if mask is not None:
            sample_weight = apply_mask(sample_weight, mask, dtype=dtype, reduction="sum")
        values, sample_weight = squeeze_or_expand_to_same_rank(values, sample_weight)
        weight_ndim = len(sample_weight.shape)
        values_ndim = len(values.shape)
        if values_ndim > weight_ndim:
            values = reduce_fn(values, axis=tuple(range(weight_ndim, values_ndim)))
        if tuple(sample_weight.shape) != tuple(values.shape):
            sample_weight = ops.broadcast_to(sample_weight, values.shape)
        values = ops.multiply(values, sample_weight)
        if weight_ndim > 1:
            sample_weight = reduce_fn(sample_weight, axis=tuple(range(1, weight_ndim)))
    values_ndim = len(values.shape)
    if values_ndim > 1:
        values = reduce_fn(values, axis=tuple(range(1, values_ndim)))
    return values, sample_weight


class Sum(Metric):
    """The (weighted) sum of the values seen."""

    def __init__(self, name="sum", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype=self.dtype, name="total")

    def update_state(self, values, sample_weight=None):
        values, _ = reduce_to_samplewise_values(values, sample_weight, reduce_fn=ops.sum, dtype=self.dtype)
        self.total.assign_add(ops.sum(values))

    def reset_state(self):
        self.total.assign(ops.zeros((), dtype=self.total.dtype))

    def result(self):
        return ops.cast(self.total, self.dtype)


class Mean(Metric):
    """The (weighted) mean of the values seen: total / count."""

    def __init__(self, name="mean", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype=self.dtype, name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype=self.dtype, name="count")

    def update_state(self, values, sample_weight=None):
        if (
            sample_weight is not None
            and isinstance(sample_weight, (int, float))
            and hasattr(values, "shape")
            and len(values.shape) == 0
        ):
            values = ops.cast(_unmask(values), self.dtype)
            self.total.assign_add(ops.multiply(values, float(sample_weight)))
            self.count.assign_add(ops.cast(float(sample_weight), self.dtype))
            return
        if not hasattr(values, "shape"):
            values = ops.convert_to_tensor(values)
        values, sample_weight = reduce_to_samplewise_values(
            values, sample_weight, reduce_fn=ops.mean, dtype=self.dtype
        )
        self.total.assign_add(ops.sum(values))
        if sample_weight is not None:
            num_samples = ops.sum(sample_weight)
        elif len(values.shape) >= 1:
            num_samples = _num_rows(values)
        else:
            num_samples = 1
        self.count.assign_add(ops.cast(num_samples, self.dtype))

    def reset_state(self):
        self.total.assign(ops.zeros((), dtype=self.total.dtype))
        self.count.assign(ops.zeros((), dtype=self.count.dtype))

    def result(self):
        return divide_no_nan(self.total, ops.cast(self.count, self.dtype))


class MeanMetricWrapper(Mean):
    """The mean of `fn(y_true, y_pred, **kwargs)` over all samples seen (weighted)."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        super().__init__(name=name or getattr(fn, "__name__", None), dtype=dtype)
        self._fn = fn
        self._fn_kwargs = kwargs
        from kgraph import losses

        if fn in losses.ALL_OBJECTS or fn.__class__ in losses.ALL_OBJECTS:
            self._direction = "down"

    def update_state(self, y_true, y_pred, sample_weight=None):
        mask = get_keras_mask(y_pred)
        values = self._fn(y_true, y_pred, **self._fn_kwargs)
        sample_weight = apply_mask(sample_weight, mask, dtype=self.dtype, reduction="sum")
        return super().update_state(values, sample_weight=sample_weight)

    def get_config(self):
        config = {**super().get_config(), "fn": serialize_keras_object(self._fn)}
        config.update(serialize_keras_object(self._fn_kwargs))
        return config

    @classmethod
    def from_config(cls, config):
        if "fn" in config:
            config = dict(config)
            fn = config.pop("fn")
            if not callable(fn):
                from kgraph.metrics import ALL_OBJECTS_DICT

                fn = deserialize_keras_object(fn, module_objects=ALL_OBJECTS_DICT)
            config["fn"] = fn
        return cls(**config)
