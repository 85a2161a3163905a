"""PyDataset (alias Sequence): batches produced by Python code, indexed by batch number."""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class PyDataset:
    """Base class for batch sources: implement `__getitem__(index)` (one batch: `x`, `(x, y)` or
    `(x, y, sample_weight)`) and `__len__()` (the number of batches); optionally `on_epoch_end()`.

    Args:
        workers: how many threads fetch batches ahead of the training loop (1: fetched in the
            loop, in order).
        use_multiprocessing: accepted for Keras compatibility; batches are fetched in threads
            either way (the compiled steps release the GIL, so threads overlap with training).
        max_queue_size: how many batches may be fetched ahead when workers > 1.
    """

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    @property
    def workers(self):
        return getattr(self, "_workers", 1)

    @workers.setter
    def workers(self, value):
        self._workers = value

    @property
    def use_multiprocessing(self):
        return getattr(self, "_use_multiprocessing", False)

    @use_multiprocessing.setter
    def use_multiprocessing(self, value):
        self._use_multiprocessing = value

    @property
    def max_queue_size(self):
        return getattr(self, "_max_queue_size", 10)

    @max_queue_size.setter
    def max_queue_size(self, value):
        self._max_queue_size = value

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__(index)")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __len__()")

    @property
    def num_batches(self):
        """The number of batches of one epoch (`len(self)`)."""
        try:
            return len(self)
        except NotImplementedError:
            return None

    def on_epoch_begin(self):
        """Called before each pass over the batches."""

    def on_epoch_end(self):
        """Called after each pass over the batches (e.g. to reshuffle the data)."""

    def __iter__(self):
        return self._epoch_batches()

    def _epoch_batches(self, shuffle=False, skip=0, seed=None):
        """One pass: the batches in order (or a permutation drawn from `seed`), with
        `workers` threads fetching up to `max_queue_size` batches ahead."""
        count = self.num_batches
        if count is None:
            raise ValueError(f"{type(self).__name__}: __len__ must return the number of batches")
        indices = np.arange(count)
        if shuffle:
            indices = np.random.default_rng(seed).permutation(count)
        indices = [int(i) for i in indices[skip:]]
        self.on_epoch_begin()
        workers = int(self.workers or 1)
        if workers <= 1:
            for index in indices:
                yield self[index]
        else:
            ahead = max(int(self.max_queue_size or 1), workers)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kgraph-pydataset") as pool:
                pending = collections.deque()
                position = 0
                while position < len(indices) or pending:
                    while position < len(indices) and len(pending) < ahead:
                        pending.append(pool.submit(self.__getitem__, indices[position]))
                        position += 1
                    yield pending.popleft().result()
        self.on_epoch_end()


Sequence = PyDataset
