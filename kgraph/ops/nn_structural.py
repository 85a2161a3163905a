"""keras.ops.nn functions written as compositions: unfold/fold (torch-style im2col/col2im),
adaptive average and max pooling, and CTC (the loss, traced and differentiable; decoding,
greedy and beam search, eager).

unfold gathers every patch element with one `take` from a constant index table over the
padded, flattened image; fold scatter-adds with the same table (`take_grad`), so each is one
op whose gradient is the other. Adaptive pooling uses PyTorch's windows (Keras's too):
output cell i of an axis of length L pools [floor(i L / out), ceil((i + 1) L / out)); when
every axis divides evenly that is an ordinary pool, otherwise one reduction per output cell
per axis (the windows are separable).
"""

from __future__ import annotations

import builtins
import heapq

import numpy as np

from kgraph import ops
from kgraph.ops.conv import standardize_data_format
from kgraph.ops.numpy_extra import _is_eager, _tensor
from kgraph.ops.registry import bind

__all__ = ["unfold", "fold", "adaptive_average_pool", "adaptive_max_pool", "ctc_loss", "ctc_decode"]


# -- unfold / fold ----------------------------------------------------------------------------------------
def _pair(value, name, what):
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not builtins.all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{what}: {name} must be an int or a pair of ints, got {value!r}")
    return tuple(int(v) for v in pair)


def _patch_table(height, width, kernel, dilation, padding, stride, what):
    """Flat indices into the padded (H + 2p, W + 2p) image: (kH * kW, L), and the padded shape."""
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel, dilation, padding, stride
    hp, wp = height + 2 * ph, width + 2 * pw
    rows = (hp - dh * (kh - 1) - 1) // sh + 1
    cols = (wp - dw * (kw - 1) - 1) // sw + 1
    if rows <= 0 or cols <= 0:
        raise ValueError(f"{what}: a {kh}x{kw} kernel (dilation {dilation}, padding {padding}) does not fit in a "
                         f"{height}x{width} image")
    ki, kj = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    oi, oj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    r = ki.reshape(-1, 1) * dh + oi.reshape(1, -1) * sh
    c = kj.reshape(-1, 1) * dw + oj.reshape(1, -1) * sw
    return (r * wp + c).astype(np.int32), (hp, wp)


def unfold(x, kernel_size, dilation=1, padding=0, stride=1):
    """Sliding blocks of a channels-first image (N, C, H, W) as columns (N, C * kH * kW, L),
    torch's unfold (im2col): rows ordered (channel, kernel row, kernel column)."""
    x = _tensor(x)
    if len(x.shape) != 4:
        raise ValueError(f"unfold: input must be a 4D tensor (N, C, H, W). Received: input.shape={tuple(x.shape)}")
    n, channels, height, width = x.shape
    if None in (channels, height, width):
        raise ValueError(f"unfold: channels and spatial sizes must be static, got {tuple(x.shape)}")
    kernel = _pair(kernel_size, "kernel_size", "unfold")
    padding = _pair(padding, "padding", "unfold")
    table, (hp, wp) = _patch_table(height, width, kernel, _pair(dilation, "dilation", "unfold"), padding,
                                   _pair(stride, "stride", "unfold"), "unfold")
    if builtins.any(padding):
        x = ops.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    flat = ops.reshape(x, (-1, channels, hp * wp))
    patches = ops.take(flat, table, axis=2)  # (N, C, kH * kW, L)
    return ops.reshape(patches, (-1, channels * table.shape[0], table.shape[1]))


def fold(x, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """The inverse arrangement of unfold (col2im): columns (N, C * kH * kW, L) summed into an
    image (N, C, oH, oW); overlapping patch elements add up."""
    x = _tensor(x)
    if len(x.shape) != 3:
        raise ValueError(f"fold: input must be a 3D tensor (N, C * kH * kW, L). Received: input.shape="
                         f"{tuple(x.shape)}")
    height, width = _pair(output_size, "output_size", "fold")
    kernel = _pair(kernel_size, "kernel_size", "fold")
    padding = _pair(padding, "padding", "fold")
    table, (hp, wp) = _patch_table(height, width, kernel, _pair(dilation, "dilation", "fold"), padding,
                                   _pair(stride, "stride", "fold"), "fold")
    rows, blocks = x.shape[1], x.shape[2]
    if rows is None or rows % table.shape[0] or blocks != table.shape[1]:
        raise ValueError(f"fold: expected input of shape (N, C * {table.shape[0]}, {table.shape[1]}) for output "
                         f"size {(height, width)} and kernel {kernel}, got {tuple(x.shape)}")
    channels = rows // table.shape[0]
    columns = ops.reshape(x, (-1, channels, rows // channels * blocks))
    image = bind("take_grad", [columns, table.reshape(-1)], axis=2, shape=(x.shape[0], channels, hp * wp))
    image = ops.reshape(image, (-1, channels, hp, wp))
    return ops.getitem(image, (slice(None), slice(None), slice(padding[0], padding[0] + height),
                               slice(padding[1], padding[1] + width)))


# -- adaptive pooling -------------------------------------------------------------------------------------
def _adaptive_pool(mode, inputs, output_size, data_format):
    what = f"adaptive_{mode}_pool"
    x = _tensor(inputs)
    rank = len(x.shape) - 2
    if rank not in (1, 2, 3):
        raise ValueError(f"{what}: inputs must have rank 3, 4 or 5 (batch, spatial..., channels), got shape "
                         f"{tuple(x.shape)}")
    data_format = standardize_data_format(data_format)
    sizes = (output_size,) * rank if isinstance(output_size, (int, np.integer)) else tuple(output_size)
    if len(sizes) != rank or not builtins.all(isinstance(s, (int, np.integer)) and s > 0 for s in sizes):
        raise ValueError(f"{what}: output_size must be a positive int or a tuple of {rank} positive ints, "
                         f"got {output_size!r}")
    first = 2 if data_format == "channels_first" else 1
    spatial = tuple(x.shape[first:first + rank])
    if None in spatial:
        raise ValueError(f"{what}: the spatial sizes must be static, got shape {tuple(x.shape)}")
    if builtins.all(length % size == 0 for length, size in zip(spatial, sizes)):
        window = tuple(length // size for length, size in zip(spatial, sizes))
        pool = ops.max_pool if mode == "max" else ops.average_pool
        return pool(x, window, window, "valid", data_format)
    reduce = ops.max if mode == "max" else ops.mean
    for axis, length, size in zip(range(first, first + rank), spatial, sizes):
        cells = []
        for i in range(size):
            start, stop = (i * length) // size, -((-(i + 1) * length) // size)
            window = ops.getitem(x, (slice(None),) * axis + (slice(start, stop),))
            cells.append(reduce(window, axis=axis, keepdims=True))
        x = ops.concatenate(cells, axis=axis)
    return x


def adaptive_average_pool(inputs, output_size, data_format=None):
    """Average pooling to a fixed spatial `output_size` (1-D, 2-D or 3-D), PyTorch's windows."""
    return _adaptive_pool("average", inputs, output_size, data_format)


def adaptive_max_pool(inputs, output_size, data_format=None):
    """Max pooling to a fixed spatial `output_size` (1-D, 2-D or 3-D), PyTorch's windows."""
    return _adaptive_pool("max", inputs, output_size, data_format)


# -- CTC ---------------------------------------------------------------------------------------------------
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


def ctc_negative_log_likelihood(labels, logits, label_length, logit_length=None, blank=0):
    """-log p(labels | logits) per sample, summed over all alignments: the forward (alpha)
    recursion in log space over the blank-interleaved labels z = (blank, l1, blank, ..., blank),
    S = 2L + 1 states, unrolled over the static time axis (the batch may be unknown).
    labels (B, L) int; logits (B, T, C); label_length (B,) or (B, 1); logit_length (B,) or None
    (every sample uses all T steps). Shared by ops.ctc_loss and kgraph.losses.ctc."""
    steps, num_classes = logits.shape[1], logits.shape[2]
    if steps is None or num_classes is None:
        raise ValueError(f"ctc_loss: the time and class dimensions must be known. Received: "
                         f"output.shape={tuple(logits.shape)}")
    dtype = logits.dtype if ops.is_float(logits.dtype) and logits.dtype != "float16" else "float32"
    labels = ops.cast(labels, "int32")
    log_probs = ops.log_softmax(ops.cast(logits, dtype), axis=-1)  # (B, T, C)
    max_labels = labels.shape[1]
    size = 2 * max_labels + 1

    # log-probability of emitting z_s at each step (B, T, S)
    z = ops.cast(_interleave_blank(ops.cast(labels, dtype), float(blank)), "int32")
    emit = ops.matmul(log_probs, ops.transpose(ops.one_hot(z, num_classes, dtype=dtype), (0, 2, 1)))

    # s - 2 -> s skips a blank: allowed into a label that differs from the one before it
    # (for the first label s - 2 is out of range and the shifted alpha is log 0 anyway)
    before = ops.concatenate([ops.getitem(labels, (slice(None), slice(0, 1))), labels], axis=1)
    before = ops.getitem(before, (slice(None), slice(0, max_labels)))
    can_skip = ops.logical_and(ops.not_equal(labels, blank), ops.not_equal(labels, before))
    skip = _interleave_blank(ops.cast(can_skip, dtype), 0.0)

    start = np.full(size, _NEG, dtype=dtype)
    start[:2] = 0.0
    alpha = ops.add(ops.getitem(emit, (slice(None), 0, slice(None))), start)
    skip_penalty = ops.multiply(ops.subtract(1.0, skip), _NEG)
    active = None if logit_length is None else ops.reshape(ops.cast(logit_length, "int32"), (-1, 1))
    for t in range(1, steps):
        stay_or_step = _logaddexp(alpha, _shift_right(alpha, 1, _NEG))
        jump = ops.add(_shift_right(alpha, 2, _NEG), skip_penalty)
        following = ops.add(_logaddexp(stay_or_step, jump), ops.getitem(emit, (slice(None), t, slice(None))))
        alpha = following if active is None else ops.where(ops.greater(active, t), following, alpha)

    # end in the last label (s = 2n - 1) or the blank after it (s = 2n), n = the label length
    lengths = ops.reshape(ops.cast(label_length, "int32"), (-1, 1))
    position = np.arange(size, dtype="int32")
    end = ops.logical_or(
        ops.equal(position, ops.multiply(lengths, 2)), ops.equal(position, ops.subtract(ops.multiply(lengths, 2), 1))
    )
    final = ops.where(end, alpha, _NEG)
    return ops.negative(ops.logsumexp(final, axis=-1))


def ctc_loss(target, output, target_length, output_length, mask_index=0):
    """CTC loss per sample: target (B, L) int labels, output (B, T, C) logits, target_length
    and output_length (B,) ints; `mask_index` is the blank class."""
    target, output = _tensor(target), _tensor(output)
    if len(target.shape) != 2 or len(output.shape) != 3:
        raise ValueError(f"ctc_loss: expected target of shape (batch, max_length) and output of shape "
                         f"(batch, max_length, num_classes), got {tuple(target.shape)} and {tuple(output.shape)}")
    return ctc_negative_log_likelihood(target, output, _tensor(target_length), _tensor(output_length),
                                       blank=int(mask_index))


def ctc_decode(inputs, sequence_lengths, strategy="greedy", beam_width=100, top_paths=1, merge_repeated=True,
               mask_index=0):
    """Decode CTC logits (B, T, C) eagerly. Returns (paths, scores): paths (P, B, T) int32 with
    -1 after each path's end (P = 1 for greedy, top_paths for beam search); scores (B, P): for
    greedy minus the sum of each step's largest logit, for beam search the log-probability."""
    if not _is_eager(inputs, sequence_lengths):
        raise ValueError("ctc_decode: decoding gives value-dependent paths and runs eagerly only; call it on "
                         "arrays (for example on the output of model.predict)")
    logits = np.asarray(ops.convert_to_numpy(inputs))
    logits = logits.astype(np.result_type(logits.dtype, np.float32))
    if logits.ndim != 3:
        raise ValueError(f"ctc_decode: inputs must have shape (batch, max_length, num_classes), got {logits.shape}")
    lengths = np.asarray(ops.convert_to_numpy(sequence_lengths)).astype(np.int64).reshape(-1)
    if strategy == "greedy":
        return _greedy_decode(logits, lengths, merge_repeated, mask_index)
    if strategy == "beam_search":
        return _beam_search_decode(logits, lengths, beam_width, top_paths, mask_index)
    raise ValueError(f"ctc_decode: invalid strategy {strategy!r}. Supported values are 'greedy' and "
                     "'beam_search'.")


def _greedy_decode(logits, lengths, merge_repeated, blank):
    batch, steps, _ = logits.shape
    best, scores = logits.argmax(-1), logits.max(-1)
    valid = np.arange(steps)[None, :] < lengths[:, None]
    paths = np.full((1, batch, steps), -1, np.int32)
    for b in range(batch):
        labels = best[b][valid[b]]
        if merge_repeated:
            labels = labels[np.r_[True, labels[1:] != labels[:-1]]] if labels.size else labels
        labels = labels[labels != blank]
        paths[0, b, :labels.size] = labels
    total = -np.where(valid, scores, 0.0).sum(axis=1, keepdims=True)
    return paths, total.astype(logits.dtype)


def _beam_search_decode(logits, lengths, beam_width, top_paths, blank):
    """Prefix beam search: each prefix keeps the log-probabilities of its alignments ending in
    a blank and in its last label; after each step the beam_width most probable prefixes stay."""
    batch, steps, classes = logits.shape
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    paths = np.full((top_paths, batch, steps), -1, np.int32)
    scores = np.full((batch, top_paths), -np.inf, logits.dtype)
    for b in range(batch):
        beams = {(): (0.0, -np.inf)}
        for t in range(int(min(lengths[b], steps))):
            step = log_probs[b, t]
            grown = {}

            def add(prefix, blank_part, label_part, grown=grown):
                old = grown.get(prefix, (-np.inf, -np.inf))
                grown[prefix] = (np.logaddexp(old[0], blank_part), np.logaddexp(old[1], label_part))

            for prefix, (p_blank, p_label) in beams.items():
                total = np.logaddexp(p_blank, p_label)
                add(prefix, total + step[blank], -np.inf)
                for c in range(classes):
                    if c == blank:
                        continue
                    if prefix and prefix[-1] == c:
                        add(prefix, -np.inf, p_label + step[c])  # a repeat without a blank collapses
                        add(prefix + (c,), -np.inf, p_blank + step[c])
                    else:
                        add(prefix + (c,), -np.inf, total + step[c])
            beams = dict(heapq.nlargest(beam_width, grown.items(), key=lambda item: np.logaddexp(*item[1])))
        ranked = heapq.nlargest(top_paths, beams.items(), key=lambda item: np.logaddexp(*item[1]))
        for k, (prefix, parts) in enumerate(ranked):
            paths[k, b, :len(prefix)] = prefix
            scores[b, k] = np.logaddexp(*parts)
    return paths, scores
