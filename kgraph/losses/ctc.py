"""The CTC (connectionist temporal classification) loss, as Keras 3's `ctc` / `CTC`.

The negative log-likelihood of the label sequence summed over all alignments, computed by
`kgraph.ops.nn_structural.ctc_negative_log_likelihood` (the code behind `ops.ctc_loss`): the
forward (alpha) recursion in log space, unrolled over the static time axis.

As in Keras: `y_true` holds integer labels (batch, L) padded with 0, which is also the blank
class; `y_pred` holds logits (batch, T, classes) (log_softmax is applied here); every sample
uses all T steps.
"""

from __future__ import annotations

from kgraph import ops
from kgraph.losses.loss import Loss
from kgraph.losses.losses import LossFunctionWrapper
from kgraph.ops.nn_structural import ctc_negative_log_likelihood


def ctc(y_true, y_pred):
    """CTC loss per sample: -log p(y_true | y_pred) over all alignments (0 is the blank and the
    padding of y_true; y_pred are logits of shape (batch, time, classes))."""
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) != 2:
        raise ValueError(
            "CTC: targets `y_true` are expected to be a tensor of shape `(batch_size, max_length)` in "
            f"integer format. Received: y_true.shape={tuple(y_true.shape)}"
        )
    if len(y_pred.shape) != 3:
        raise ValueError(
            "CTC: logits `y_pred` are expected to be a tensor of shape `(batch_size, max_length, "
            f"num_classes)`. Received: y_pred.shape={tuple(y_pred.shape)}"
        )
    steps, num_classes = y_pred.shape[1], y_pred.shape[2]
    if steps is None or num_classes is None:
        raise ValueError(
            f"CTC: the time and class dimensions must be known. Received: y_pred.shape={tuple(y_pred.shape)}"
        )
    labels = ops.cast(y_true, "int32")
    label_length = ops.sum(ops.cast(ops.not_equal(labels, 0), "int32"), axis=1)
    return ctc_negative_log_likelihood(labels, y_pred, label_length)


class CTC(LossFunctionWrapper):
    """CTC loss (see `ctc`): labels (batch, max_length) padded with the blank 0, logits
    (batch, time, classes)."""

    def __init__(self, reduction="sum_over_batch_size", name="ctc", dtype=None):
        super().__init__(ctc, name=name, reduction=reduction, dtype=dtype)

    def get_config(self):
        return Loss.get_config(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)
