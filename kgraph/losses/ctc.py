"""The CTC (connectionist temporal classification) loss, as Keras 3's `ctc` / `CTC`.

The negative log-likelihood of the label sequence summed over all alignments, computed with
the forward (alpha) recursion in log space over the blank-interleaved label sequence
z = (blank, l1, blank, l2, ..., blank) of length S = 2L + 1. The recursion runs as a Python
loop over the (static) time axis, so a trace records T steps of (batch, S) ops and autodiff
differentiates through them; the batch dimension may be unknown.

As in Keras: `y_true` holds integer labels (batch, L) padded with 0, which is also the blank
class; `y_pred` holds logits (batch, T, classes) (log_softmax is applied here); every sample
uses all T steps.
"""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.losses.loss import Loss
from kgraph.losses.losses import LossFunctionWrapper

_NEG = -1e30  # log(0) without infinities (keeps logaddexp and its gradient finite)


def _logaddexp(a, b):
    m = ops.maximum(a, b)
    return ops.add(m, ops.log(ops.add(ops.exp(ops.subtract(a, m)), ops.exp(ops.subtract(b, m)))))


def _shift_right(x, by, fill):
    """x[:, s - by] along the last axis, `fill` for s < by."""
    head = ops.multiply(ops.ones_like(ops.getitem(x, (slice(None), slice(0, by)))), fill)
    return ops.concatenate([head, ops.getitem(x, (slice(None), slice(0, x.shape[1] - by)))], axis=1)


def _interleave_blank(per_label, blank_value):
    """(batch, L, ...) -> (batch, 2L + 1, ...): blank_value, x1, blank_value, x2, ..., blank_value."""
    blank = ops.multiply(ops.ones_like(per_label), blank_value)
    paired = ops.stack([blank, per_label], axis=2)  # (batch, L, 2, ...)
    tail = tuple(per_label.shape[2:])
    length = per_label.shape[1]
    flat = ops.reshape(paired, (-1, 2 * length) + tail)
    last = ops.getitem(blank, (slice(None), slice(0, 1)))
    return ops.concatenate([flat, last], axis=1)


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
    dtype = y_pred.dtype if ops.is_float(y_pred.dtype) and y_pred.dtype != "float16" else "float32"
    labels = ops.cast(y_true, "int32")
    log_probs = ops.log_softmax(ops.cast(y_pred, dtype), axis=-1)  # (B, T, C)
    max_labels = labels.shape[1]
    size = 2 * max_labels + 1

    # z: the blank-interleaved labels; log-probability of emitting z_s at each step (B, T, S)
    z = ops.cast(_interleave_blank(ops.cast(labels, dtype), 0.0), "int32")
    emit = ops.matmul(log_probs, ops.transpose(ops.one_hot(z, num_classes, dtype=dtype), (0, 2, 1)))

    # s - 2 -> s skips a blank: allowed into a label that differs from the one before it
    # (for the first label s - 2 is out of range and the shifted alpha is log 0 anyway)
    before = ops.concatenate([ops.getitem(labels, (slice(None), slice(0, 1))), labels], axis=1)
    before = ops.getitem(before, (slice(None), slice(0, max_labels)))
    can_skip = ops.logical_and(ops.not_equal(labels, 0), ops.not_equal(labels, before))
    skip = _interleave_blank(ops.cast(can_skip, dtype), 0.0)

    start = np.full(size, _NEG, dtype=dtype)
    start[:2] = 0.0
    alpha = ops.add(ops.getitem(emit, (slice(None), 0, slice(None))), start)
    skip_penalty = ops.multiply(ops.subtract(1.0, skip), _NEG)
    for t in range(1, steps):
        stay_or_step = _logaddexp(alpha, _shift_right(alpha, 1, _NEG))
        jump = ops.add(_shift_right(alpha, 2, _NEG), skip_penalty)
        alpha = ops.add(_logaddexp(stay_or_step, jump), ops.getitem(emit, (slice(None), t, slice(None))))

    # end in the last label (s = 2n - 1) or the blank after it (s = 2n), n = the label length
    lengths = ops.sum(ops.cast(ops.not_equal(labels, 0), "int32"), axis=1, keepdims=True)
    position = np.arange(size, dtype="int32")
    end = ops.logical_or(
        ops.equal(position, ops.multiply(lengths, 2)), ops.equal(position, ops.subtract(ops.multiply(lengths, 2), 1))
    )
    final = ops.where(end, alpha, _NEG)
    return ops.negative(ops.logsumexp(final, axis=-1))


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
