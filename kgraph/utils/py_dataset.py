"""PyDataset (alias Sequence): batches produced by Python code, indexed by batch number."""

from __future__ import annotations

import collections
import itertools
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

    def __length_hint__(self):
        return self.num_batches or 0

    def _epoch_batches(self, shuffle=False, skip=0, seed=None):
        """One pass: the batches in order (or a permutation drawn from `seed`), with
        `workers` threads fetching up to `max_queue_size` batches ahead."""
        count = self.num_batches
        if count is None:  # no __len__: an endless source (fit needs steps_per_epoch)
            indices = itertools.count(skip)
        else:
            order = np.random.default_rng(seed).permutation(count) if shuffle else np.arange(count)
            indices = iter([int(i) for i in order[skip:]])
        self.on_epoch_begin()
        workers = int(self.workers or 1)
        if workers <= 1:
            for index in indices:
                yield self[index]
        else:
            ahead = max(int(self.max_queue_size or 1), workers)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kgraph-pydataset") as pool:
                pending = collections.deque()
                remaining = True
                while remaining or pending:
                    while remaining and len(pending) < ahead:
                        index = next(indices, None)
                        if index is None:
                            remaining = False
                        else:
                            pending.append(pool.submit(self.__getitem__, index))
                    if pending:
                        yield pending.popleft().result()
        self.on_epoch_end()


Sequence = PyDataset
