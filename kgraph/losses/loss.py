"""The Loss base class and Keras 3's reduction, weighting and masking rules.

Everything here is written with kgraph.ops, so a loss runs eagerly on arrays and traces
into a compiled training step unchanged. Where Keras divides by a count of elements that
is only known at run time (the batch dimension is None in a compiled graph), the mean is
taken with `ops.mean`, which the graph computes from the run-time shape.
"""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.ir import SymbolicTensor

REDUCTIONS = ("sum_over_batch_size", "sum", None, "none", "mean", "mean_with_sample_weight")


def floatx():
    from kgraph.config import floatx as _floatx

    return _floatx()


def epsilon():
    from kgraph.config import epsilon as _epsilon

    return _epsilon()


# -- masks (Keras attaches them to tensors as `_keras_mask`) -----------------------------------
class _MaskedArray(np.ndarray):
    """An eager array that can carry a `_keras_mask`, like Keras's backend tensors."""


def get_keras_mask(x):
    return getattr(x, "_keras_mask", None)


def set_keras_mask(x, mask):
    """Attach `mask` to `x` (returns x, viewed as an array that accepts the attribute)."""
    if isinstance(x, np.ndarray) and not isinstance(x, _MaskedArray):
        x = x.view(_MaskedArray)
    elif isinstance(x, np.generic):
        x = np.asarray(x).view(_MaskedArray)
    x._keras_mask = mask
    return x


def _unmask(x):
    return np.asarray(x) if isinstance(x, _MaskedArray) else x


# -- helpers ---------------------------------------------------------------------------------
def standardize_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(
            "Invalid value for argument `reduction`. "
            f"Expected one of {set(REDUCTIONS)}. Received: reduction={reduction}"
        )
    return reduction


def divide_no_nan(x1, x2):
    """x1 / x2, and 0 where x2 == 0."""
    zero = ops.equal(x2, 0)
    return ops.where(zero, 0.0, ops.divide(x1, ops.where(zero, 1.0, x2)))


def squeeze_or_expand_to_same_rank(x1, x2, expand_rank_1=True):
    """Squeeze or expand the last dimension of one input when the ranks differ by exactly 1."""
    x1_rank = len(x1.shape)
    x2_rank = len(x2.shape)
    if x1_rank == x2_rank:
        return x1, x2
    if x1_rank == x2_rank + 1 and x1.shape[-1] == 1:
        if x2_rank == 1 and expand_rank_1:
            x2 = ops.expand_dims(x2, axis=-1)
        else:
            x1 = ops.squeeze(x1, axis=-1)
    if x2_rank == x1_rank + 1 and x2.shape[-1] == 1:
        if x1_rank == 1 and expand_rank_1:
            x1 = ops.expand_dims(x1, axis=-1)
        else:
            x2 = ops.squeeze(x2, axis=-1)
    return x1, x2


def _is_static(shape):
    return all(d is not None for d in shape)


def reduce_values(values, sample_weight=None, reduction="sum_over_batch_size"):
    """Reduce per-sample losses: "sum", a mean over all elements, or a mean over the weights."""
    if reduction is None or reduction == "none" or tuple(values.shape) in ((), (0,)):
        return values
    if reduction == "sum":
        return ops.sum(values)
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        return divide_no_nan(ops.sum(values), ops.cast(ops.sum(sample_weight), values.dtype))
    # "sum_over_batch_size" / "mean": the sum divided by the number of elements.
    return ops.mean(values)


def apply_mask(sample_weight, mask, dtype, reduction):
    """Merge a mask into the sample weights (renormalized so a mean counts valid entries only)."""
    if mask is None:
        return sample_weight
    mask = ops.cast(mask, dtype)
    if reduction in ("mean", "sum_over_batch_size"):
        # total / valid, where total / valid = 1 / mean(mask) (the run-time size cancels).
        mask = ops.multiply(mask, divide_no_nan(1.0, ops.mean(mask)))
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, dtype)
        mask, sample_weight = squeeze_or_expand_to_same_rank(mask, sample_weight)
        return ops.multiply(sample_weight, mask)
    return mask


def reduce_weighted_values(
    values, sample_weight=None, mask=None, reduction="sum_over_batch_size", dtype=None
):
    """Weight per-sample losses by `sample_weight` (and `mask`), then reduce them."""
    reduction = standardize_reduction(reduction)
    values = ops.convert_to_tensor(_unmask(values), dtype=dtype)
    if sample_weight is not None:
        sample_weight = ops.convert_to_tensor(_unmask(sample_weight), dtype=dtype)
    sample_weight = apply_mask(sample_weight, mask, dtype=values.dtype, reduction=reduction)
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, values.dtype)
        values, sample_weight = squeeze_or_expand_to_same_rank(values, sample_weight)
        values = ops.multiply(values, sample_weight)
    return reduce_values(values, sample_weight, reduction)


def _map(fn, structure):
    if isinstance(structure, (list, tuple)):
        return type(structure)(_map(fn, x) for x in structure)
    if isinstance(structure, dict):
        return {key: _map(fn, value) for key, value in structure.items()}
    return fn(structure)


def _auto_name(cls):
    try:
        from kgraph.utils.naming import auto_name
    except ImportError:  # pragma: no cover
        return cls.__name__.lower()
    return auto_name(cls)


class Loss:
    """Base class of losses: subclasses implement `call(y_true, y_pred)` -> per-sample losses.

    Args:
        name: the loss's name.
        reduction: "sum_over_batch_size" (default; also "mean"): the sum of the weighted
            losses divided by the number of elements; "sum"; "mean_with_sample_weight":
            the sum divided by the sum of the sample weights; "none" or None: no reduction.
        dtype: the computation dtype (inputs are cast to it); defaults to float32.
    """

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        self.name = name or _auto_name(self.__class__)
        self.reduction = standardize_reduction(reduction)
        self._dtype = _standardize_dtype(dtype)

    @property
    def dtype(self):
        return self._dtype

    def __call__(self, y_true, y_pred, sample_weight=None):
        in_mask = get_keras_mask(y_pred)
        y_pred = _map(lambda x: ops.convert_to_tensor(_unmask(x), dtype=self.dtype), y_pred)
        y_true = _map(lambda x: ops.convert_to_tensor(_unmask(x), dtype=self.dtype), y_true)
        losses = self.call(y_true, y_pred)
        out_mask = get_keras_mask(losses)
        if in_mask is not None and out_mask is not None:
            mask = ops.logical_and(in_mask, out_mask)
        else:
            mask = in_mask if in_mask is not None else out_mask
        return reduce_weighted_values(
            losses, sample_weight=sample_weight, mask=mask, reduction=self.reduction, dtype=self.dtype
        )

    def call(self, y_true, y_pred):
        raise NotImplementedError(f"Loss {self.__class__.__name__} does not implement call().")

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{self.__class__.__name__} name={self.name}>"


def _standardize_dtype(dtype):
    if dtype is None:
        return floatx()
    if hasattr(dtype, "name") and not isinstance(dtype, str):
        dtype = dtype.name
    return np.dtype(dtype).name


def is_symbolic(x):
    return isinstance(x, SymbolicTensor)
