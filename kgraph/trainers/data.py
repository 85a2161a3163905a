"""Input data for fit/evaluate/predict: arrays (single, lists, dicts) sliced into batches.

Batches of a shuffled epoch are gathered into buffers allocated once per batch size, so
the hot loop touches no fresh memory.
"""

from __future__ import annotations

import numpy as np


def to_array_list(data, names=None, what="x"):
    """A list of numpy arrays from an array, a list/tuple of arrays, or a dict by name."""
    if data is None:
        return []
    if isinstance(data, dict):
        if names is None:
            return [np.asarray(v) for v in data.values()]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"{what}: missing data for {missing}; expected keys {names}, got {sorted(data)}")
        return [np.asarray(data[n]) for n in names]
    if isinstance(data, (list, tuple)) and data and not np.isscalar(data[0]) and hasattr(data[0], "__len__") \
            and not isinstance(data[0], (list, tuple)):
        return [np.asarray(v) for v in data]
    return [np.asarray(data)]


def standardize_dtype(array):
    """Keras's floatx rule: float64 data becomes float32."""
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype == np.bool_:
        return array
    return array


def check_lengths(arrays_by_role):
    sizes = {}
    for role, arrays in arrays_by_role.items():
        for i, array in enumerate(arrays):
            if array.ndim == 0:
                raise ValueError(f"{role}[{i}] is a scalar; expected an array with a batch dimension")
            sizes[f"{role}[{i}]" if len(arrays) > 1 else role] = array.shape[0]
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise ValueError(f"Data cardinality is ambiguous: make sure all arrays contain the same number "
                         f"of samples. Received sizes: {detail}")
    return next(iter(sizes.values()), 0)


class BatchIterator:
    """Yields lists of batch arrays in order or through a permutation."""

    def __init__(self, arrays, batch_size):
        self.arrays = [np.ascontiguousarray(a) for a in arrays]
        self.batch_size = int(batch_size)
        self.size = self.arrays[0].shape[0] if self.arrays else 0
        self._buffers = {}

    def __len__(self):
        return -(-self.size // self.batch_size)

    def _buffer(self, count):
        buffers = self._buffers.get(count)
        if buffers is None:
            buffers = [np.empty((count,) + a.shape[1:], a.dtype) for a in self.arrays]
            self._buffers[count] = buffers
        return buffers

    def batches(self, permutation=None):
        for start in range(0, self.size, self.batch_size):
            stop = min(start + self.batch_size, self.size)
            if permutation is None:
                yield [a[start:stop] for a in self.arrays]
            else:
                index = permutation[start:stop]
                buffers = self._buffer(stop - start)
                for array, out in zip(self.arrays, buffers):
                    np.take(array, index, axis=0, out=out)
                yield buffers
