"""keras.ops's Fourier transforms as compositions: dense DFT matrices built at trace time.

Keras holds a complex tensor as a (real, imag) tuple of float tensors; so do these
functions. A transform along an axis of static size n is two or four matmuls against the
n x n cos/sin matrices (built in float64, exact at quarter turns, cast to the input's
dtype), so it differentiates and compiles through matmul, and exports to ONNX, with no new
primitive. The cost is O(n^2) per transformed row instead of an FFT's O(n log n): right
for the frame and feature sizes models use (up to a few thousand points), not for long
signals. Measured against numpy.fft in float64, the error grows about linearly with n
(docs/ops.md gives the numbers).

`stft` gathers its frames (center reflect-padding folded into the gather's indices) and
multiplies them by the windowed DFT matrix; `istft` multiplies by the windowed inverse DFT
and overlap-adds the frames with ceil(n / stride) shifted pads.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from kgraph import ops
from kgraph.ir import SymbolicTensor
from kgraph.ops.elementwise import is_float
from kgraph.ops.numpy_extra import _dims, _floating, _tensor

__all__ = ["fft", "fft2", "ifft2", "rfft", "irfft", "stft", "istft"]


@functools.lru_cache(maxsize=8)  # n x n float64 each: keep a few
def _twiddles(n):
    """cos and sin of 2 pi j k / n (float64, n x n), exact where j k / n is a quarter turn."""
    turns = np.outer(np.arange(n), np.arange(n)) % n  # j k mod n keeps the angle small
    cos, sin = np.cos(2 * np.pi * turns / n), np.sin(2 * np.pi * turns / n)
    quarter = (4 * turns) % n == 0
    exact = (4 * turns // n) % 4  # 0, 1, 2, 3 quarter turns where `quarter`
    cos[quarter] = np.array([1.0, 0.0, -1.0, 0.0])[exact[quarter]]
    sin[quarter] = np.array([0.0, 1.0, 0.0, -1.0])[exact[quarter]]
    cos.setflags(write=False)
    sin.setflags(write=False)
    return cos, sin


def _complex_pair(x, name, min_rank):
    """(real, imag) of a Keras complex tuple, checked as Keras checks it."""
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise ValueError(f"{name}: x should be a tuple of two tensors, the real and imaginary "
                         f"parts; got {type(x).__name__}")
    real, imag = _tensor(x[0]), _tensor(x[1])
    if tuple(real.shape) != tuple(imag.shape):
        raise ValueError(f"{name}: the real and imaginary parts must have the same shape, got "
                         f"{tuple(real.shape)} and {tuple(imag.shape)}")
    if not is_float(real.dtype) or not is_float(imag.dtype):
        raise ValueError(f"{name}: the real and imaginary parts must be float tensors, got "
                         f"{real.dtype} and {imag.dtype}")
    if len(real.shape) < min_rank:
        raise ValueError(f"{name}: the input must have rank >= {min_rank}, got shape {tuple(real.shape)}")
    if imag.dtype != real.dtype:
        imag = ops.cast(imag, real.dtype)
    return real, imag


def _static(n, name, what):
    if n is None:
        raise ValueError(f"{name}: {what} must have a static size, not the batch dimension (None)")
    return n


def _dft_last(real, imag, name, inverse=False):
    """The (unnormalized) DFT of real + i imag along the last axis; inverse: e^{+i...}."""
    n = _static(real.shape[-1], name, "the transformed axis")
    cos, sin = _twiddles(n)
    cos, sin = cos.astype(real.dtype), sin.astype(real.dtype)
    if inverse:
        sin = -sin
    # (re + i im)(cos - i sin) = re cos + im sin + i (im cos - re sin)
    out_real = ops.add(ops.matmul(real, cos), ops.matmul(imag, sin))
    out_imag = ops.subtract(ops.matmul(imag, cos), ops.matmul(real, sin))
    return out_real, out_imag


def _dft_2d(x, name, inverse):
    real, imag = _complex_pair(x, name, 2)
    for _ in range(2):  # the last axis, then (swapped last) the one before
        real, imag = _dft_last(real, imag, name, inverse)
        real, imag = ops.swapaxes(real, -1, -2), ops.swapaxes(imag, -1, -2)
    if inverse:
        scale = 1.0 / (real.shape[-1] * real.shape[-2])
        real, imag = ops.multiply(real, scale), ops.multiply(imag, scale)
    return real, imag


def fft(x):
    """The DFT along the last axis of the complex tensor x = (real, imag); returns (real, imag)."""
    real, imag = _complex_pair(x, "fft", 1)
    return _dft_last(real, imag, "fft")


def fft2(x):
    """The 2-D DFT over the last two axes of x = (real, imag); returns (real, imag)."""
    return _dft_2d(x, "fft2", inverse=False)


def ifft2(x):
    """The inverse 2-D DFT (divided by the number of points) over the last two axes."""
    return _dft_2d(x, "ifft2", inverse=True)


def _fit_last(x, n):
    """x cropped or zero-padded along its last axis to size n."""
    size = x.shape[-1]
    if size == n:
        return x
    if size > n:
        return ops.getitem(x, (Ellipsis, slice(0, n)))
    return ops.pad(x, [(0, 0)] * (len(x.shape) - 1) + [(0, n - size)])


def _fft_length(fft_length, default, name):
    if fft_length is None:
        return default
    if not isinstance(fft_length, (int, np.integer)) or fft_length < 1:
        raise ValueError(f"{name}: fft_length must be a positive int, got {fft_length!r}")
    return int(fft_length)


def rfft(x, fft_length=None):
    """The DFT of the real x along its last axis, its fft_length // 2 + 1 non-negative
    frequencies (x cropped or zero-padded to fft_length); returns (real, imag)."""
    x = _floating(x)
    if len(x.shape) < 1:
        raise ValueError(f"rfft: the input must have rank >= 1, got shape {tuple(x.shape)}")
    n = _fft_length(fft_length, _static(x.shape[-1], "rfft", "the last axis"), "rfft")
    x = _fit_last(x, n)
    cos, sin = _twiddles(n)
    bins = n // 2 + 1
    return (ops.matmul(x, cos[:, :bins].astype(x.dtype)),
            ops.matmul(x, (-sin[:, :bins]).astype(x.dtype)))


def _irfft_matrices(n, bins, dtype, window=None):
    """(A, B), bins x n: irfft(re, im) = re A + im B (numpy's c2r rule: the imaginary parts
    of the zero and Nyquist frequencies do not contribute); columns scaled by `window`."""
    cos, sin = _twiddles(n)
    weight = np.full(bins, 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    a = weight[:, None] * cos[:bins] / n
    b = -weight[:, None] * sin[:bins] / n
    if window is not None:
        a, b = a * window, b * window
    return a.astype(dtype), b.astype(dtype)


def irfft(x, fft_length=None):
    """The real inverse DFT along the last axis of x = (real, imag), the non-negative
    frequencies of a real signal; fft_length defaults to 2 * (bins - 1)."""
    real, imag = _complex_pair(x, "irfft", 1)
    m = _static(real.shape[-1], "irfft", "the last axis")
    n = _fft_length(fft_length, 2 * (m - 1), "irfft")
    if n < 1:
        raise ValueError(f"irfft: fft_length must be positive; pass it for an input of {m} bins")
    bins = n // 2 + 1
    real, imag = _fit_last(real, bins), _fit_last(imag, bins)
    a, b = _irfft_matrices(n, bins, real.dtype)
    return ops.add(ops.matmul(real, a), ops.matmul(imag, b))


# -- short-time transforms -------------------------------------------------------------------------
def _window(window, sequence_length, fft_length, dtype, name):
    """The window centred in fft_length points (numpy float64), as Keras pads it."""
    if window is None:
        return np.ones(fft_length)
    if isinstance(window, str):
        if window not in ("hann", "hamming"):
            raise ValueError(f"{name}: a window given by name must be 'hann' or 'hamming', got {window!r}")
        a = 0.5 if window == "hann" else 0.54
        win = a - (1 - a) * np.cos(2 * np.pi * np.arange(sequence_length) / sequence_length)  # periodic
    else:
        if isinstance(window, SymbolicTensor):
            raise ValueError(f"{name}: the window must be a name or a constant array, not a symbolic tensor")
        win = np.asarray(ops.convert_to_numpy(window), np.float64)
        if win.shape != (sequence_length,):
            raise ValueError(f"{name}: the window must have shape ({sequence_length},) (sequence_length), "
                             f"got {win.shape}")
    win = win.astype(dtype).astype(np.float64)  # Keras casts the window to the signal's dtype
    left = (fft_length - sequence_length) // 2
    return np.pad(win, (left, fft_length - sequence_length - left))


def _check_frames(sequence_length, sequence_stride, fft_length, name):
    for arg, value in (("sequence_length", sequence_length), ("sequence_stride", sequence_stride),
                       ("fft_length", fft_length)):
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
    if fft_length < sequence_length:
        raise ValueError(f"{name}: fft_length ({fft_length}) must be at least sequence_length "
                         f"({sequence_length})")


def stft(x, sequence_length, sequence_stride, fft_length, window="hann", center=True):
    """Short-time Fourier transform along the last axis: frames of fft_length points every
    sequence_stride (x reflect-padded by fft_length // 2 on both sides when center), times
    the window, then rfft. Returns (real, imag), each (..., frames, fft_length // 2 + 1)."""
    x = _tensor(x)
    if str(x.dtype) not in ("float32", "float64"):
        raise TypeError(f"stft: x must be float32 or float64, got {x.dtype}")
    _check_frames(sequence_length, sequence_stride, fft_length, "stft")
    length = _static(x.shape[-1], "stft", "the last axis")
    pad = fft_length // 2 if center else 0
    if center and pad >= length:
        raise ValueError(f"stft: center=True reflect-pads by fft_length // 2 = {pad}, which needs "
                         f"more than {pad} samples; got {length}")
    frames = 1 + (length + 2 * pad - fft_length) // sequence_stride
    if frames < 1:
        raise ValueError(f"stft: a signal of {length} samples is shorter than one frame of {fft_length}")
    # Index of each frame's samples in x, with numpy's 'reflect' padding (no edge repeat).
    position = (np.arange(frames)[:, None] * sequence_stride + np.arange(fft_length)[None, :]) - pad
    position = np.where(position < 0, -position, position)
    position = np.where(position >= length, 2 * (length - 1) - position, position).astype(np.int32)
    framed = ops.take(x, position, axis=-1)  # (..., frames, fft_length)
    win = _window(window, sequence_length, fft_length, x.dtype, "stft")
    # Keras undoes scipy's 1 / sum(window) scaling with its absolute value: a sign remains.
    win = win * (np.sign(win.sum()) or 1.0)
    cos, sin = _twiddles(fft_length)
    bins = fft_length // 2 + 1
    real = ops.matmul(framed, (win[:, None] * cos[:, :bins]).astype(x.dtype))
    imag = ops.matmul(framed, (-win[:, None] * sin[:, :bins]).astype(x.dtype))
    return real, imag


def _overlap_add(frames, stride):
    """Sum of frames (..., F, n) placed every `stride` samples: (..., n + (F - 1) stride)."""
    count, n = frames.shape[-2], frames.shape[-1]
    r = math.ceil(n / stride)
    frames = _fit_last(frames, r * stride)
    lead = tuple(frames.shape[:-2])
    pieces = ops.reshape(frames, _dims(lead + (count, r, stride)))
    total = None
    for j in range(r):  # the j-th stride-long piece of frame f lands in output block f + j
        piece = ops.getitem(pieces, (Ellipsis, slice(None), j, slice(None)))
        shifted = ops.pad(piece, [(0, 0)] * len(lead) + [(j, r - 1 - j), (0, 0)])
        total = shifted if total is None else ops.add(total, shifted)
    flat = ops.reshape(total, _dims(lead + ((count + r - 1) * stride,)))
    return ops.getitem(flat, (Ellipsis, slice(0, n + (count - 1) * stride)))


def istft(x, sequence_length, sequence_stride, fft_length, length=None, window="hann", center=True):
    """Inverse short-time Fourier transform of x = (real, imag), (..., frames, bins): each
    frame's irfft times the window, overlap-added and divided by the overlap-added squared
    window (scipy's istft, as Keras calls it); `length` crops the result."""
    real, imag = _complex_pair(x, "istft", 2)
    _check_frames(sequence_length, sequence_stride, fft_length, "istft")
    count = _static(real.shape[-2], "istft", "the frames axis")
    _static(real.shape[-1], "istft", "the frequency axis")
    bins = fft_length // 2 + 1
    real, imag = _fit_last(real, bins), _fit_last(imag, bins)
    win = _window(window, sequence_length, fft_length, real.dtype, "istft")
    a, b = _irfft_matrices(fft_length, bins, real.dtype, window=win)
    frames = ops.add(ops.matmul(real, a), ops.matmul(imag, b))  # (..., F, fft_length), windowed
    signal = _overlap_add(frames, sequence_stride)
    total = fft_length + (count - 1) * sequence_stride
    norm = np.zeros(total)
    for f in range(count):
        norm[f * sequence_stride:f * sequence_stride + fft_length] += win ** 2
    norm = np.where(norm > 1e-10, norm, 1.0)
    if window is None:  # Keras divides by the stride instead of the window's sum
        norm = norm * sequence_stride / fft_length
    signal = ops.multiply(signal, (1.0 / norm).astype(real.dtype))
    start = fft_length // 2 if center else 0
    if length is not None:
        end = min(start + int(length), total)
    else:
        end = total - fft_length // 2 if center else total
    return ops.getitem(signal, (Ellipsis, slice(start, end)))
