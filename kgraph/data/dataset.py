"""Dataset: a lazy, re-iterable pipeline of numpy elements (tf.data's core subset).

A dataset made by `from_tensor_slices` (and kept so by `shuffle`) is an order of row indices
over in-memory arrays, so `batch` gathers each batch with one `np.take` per array instead of
stacking rows one by one. Every other stage works element by element.
"""

from __future__ import annotations

import itertools
import queue
import threading

import numpy as np

INFINITE = -1
UNKNOWN = -2


def _map_structure(fn, structure):
    if isinstance(structure, tuple):
        return tuple(_map_structure(fn, s) for s in structure)
    if isinstance(structure, list):
        return [_map_structure(fn, s) for s in structure]
    if isinstance(structure, dict):
        return {k: _map_structure(fn, v) for k, v in structure.items()}
    return fn(structure)


def _leaves(structure):
    if isinstance(structure, (tuple, list)):
        return [leaf for s in structure for leaf in _leaves(s)]
    if isinstance(structure, dict):
        return [leaf for v in structure.values() for leaf in _leaves(v)]
    return [structure]


def _stack(elements):
    """One batch from a list of elements of the same structure."""
    first = elements[0]
    if isinstance(first, (tuple, list)):
        return type(first)(_stack([e[i] for e in elements]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _stack([e[k] for e in elements]) for k in first}
    return np.stack([np.asarray(e) for e in elements])


class Dataset:
    """A re-iterable pipeline; each `iter()` starts a fresh pass (reshuffled when shuffled)."""

    def __init__(self, make_iterator, cardinality=UNKNOWN):
        self._make_iterator = make_iterator
        self._cardinality = cardinality
        self._slices = None  # (structure of arrays, make_order) for index-order datasets

    # -- sources ---------------------------------------------------------------------------
    @staticmethod
    def from_tensor_slices(tensors):
        """Slice `tensors` (an array, a tuple/list or dict of arrays) along the first axis."""
        arrays = _map_structure(np.asarray, tensors)
        leaves = _leaves(arrays)
        if not leaves:
            raise ValueError("Dataset.from_tensor_slices: got no arrays")
        sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
        if None in sizes:
            raise ValueError("Dataset.from_tensor_slices: every array needs a first dimension to slice; got a scalar")
        if len(sizes) != 1:
            raise ValueError(f"Dataset.from_tensor_slices: the arrays have different first dimensions {sorted(sizes)}")
        size = sizes.pop()
        return Dataset._from_order(arrays, lambda: np.arange(size), size)

    @staticmethod
    def _from_order(arrays, make_order, size):
        def elements():
            for i in make_order():
                yield _map_structure(lambda a, i=i: a[i], arrays)

        dataset = Dataset(elements, size)
        dataset._slices = (arrays, make_order)
        return dataset

    @staticmethod
    def range(*args):
        """Integers like Python's range(), as int64 scalars."""
        values = np.arange(*args, dtype=np.int64)
        return Dataset(lambda: iter(values), len(values))

    # -- iteration -------------------------------------------------------------------------
    def __iter__(self):
        return iter(self._make_iterator())

    def as_numpy_iterator(self):
        return iter(self)

    def cardinality(self):
        """The number of elements: -1 when infinite, -2 when unknown."""
        return self._cardinality

    def __len__(self):
        if self._cardinality < 0:
            raise TypeError("The dataset length is " + ("infinite." if self._cardinality == INFINITE else "unknown."))
        return self._cardinality

    # -- transformations -------------------------------------------------------------------
    def shuffle(self, buffer_size, seed=None, reshuffle_each_iteration=True):
        """Shuffle through a buffer of `buffer_size` elements (a full permutation when the buffer
        holds the whole dataset); each pass reshuffles unless reshuffle_each_iteration=False."""
        buffer_size = int(buffer_size)
        if buffer_size < 1:
            raise ValueError(f"Dataset.shuffle: buffer_size must be >= 1, got {buffer_size}")
        generator = np.random.default_rng(seed)
        fixed = int(generator.integers(2**63 - 1))

        def pass_rng():
            return np.random.default_rng(int(generator.integers(2**63 - 1)) if reshuffle_each_iteration else fixed)

        def buffered(items, rng):
            buffer = []
            for item in items:
                if len(buffer) < buffer_size:
                    buffer.append(item)
                    continue
                j = int(rng.integers(buffer_size))
                yield buffer[j]
                buffer[j] = item
            rng.shuffle(buffer)
            yield from buffer

        if self._slices is not None:
            arrays, make_order = self._slices
            size = self._cardinality

            def order():
                rng = pass_rng()
                base = make_order()
                if buffer_size >= len(base):
                    return base[rng.permutation(len(base))]
                return np.fromiter(buffered(iter(base), rng), dtype=np.int64, count=len(base))

            return Dataset._from_order(arrays, order, size)
        return Dataset(lambda: buffered(iter(self), pass_rng()), self._cardinality)

    def batch(self, batch_size, drop_remainder=False):
        """Stack consecutive elements into batches (the last one smaller unless drop_remainder)."""
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"Dataset.batch: batch_size must be >= 1, got {batch_size}")
        card = self._cardinality
        if card >= 0:
            card = card // batch_size if drop_remainder else -(-card // batch_size)
        if self._slices is not None:
            arrays, make_order = self._slices

            def gathered():
                order = make_order()
                stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
                for start in range(0, stop, batch_size):
                    index = order[start:start + batch_size]
                    yield _map_structure(lambda a, index=index: np.take(a, index, axis=0), arrays)

            return Dataset(gathered, card)

        def stacked():
            pending = []
            for element in self:
                pending.append(element)
                if len(pending) == batch_size:
                    yield _stack(pending)
                    pending = []
            if pending and not drop_remainder:
                yield _stack(pending)

        return Dataset(stacked, card)

    def map(self, map_func, num_parallel_calls=None):
        """Apply `map_func` to each element (a tuple element is passed as separate arguments)."""

        def mapped():
            for element in self:
                yield map_func(*element) if isinstance(element, tuple) else map_func(element)

        return Dataset(mapped, self._cardinality)

    def prefetch(self, buffer_size=1):
        """Produce up to `buffer_size` elements ahead in a background thread."""
        size = max(int(buffer_size) if buffer_size is not None and buffer_size > 0 else 1, 1)

        def prefetched():
            items = queue.Queue(maxsize=size)
            stop = threading.Event()
            done = object()

            def produce():
                try:
                    for element in self:
                        while not stop.is_set():
                            try:
                                items.put(("item", element), timeout=0.1)
                                break
                            except queue.Full:
                                continue
                        if stop.is_set():
                            return
                    items.put(("done", done))
                except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
                    items.put(("error", error))

            thread = threading.Thread(target=produce, daemon=True, name="kgraph-prefetch")
            thread.start()
            try:
                while True:
                    kind, value = items.get()
                    if kind == "done":
                        return
                    if kind == "error":
                        raise value
                    yield value
            finally:
                stop.set()

        return Dataset(prefetched, self._cardinality)

    def repeat(self, count=None):
        """Repeat the passes `count` times (forever when None or -1)."""
        forever = count is None or count < 0

        def repeated():
            index = 0
            while forever or index < count:
                index += 1
                yield from self

        card = self._cardinality
        if forever:
            card = INFINITE if card != 0 else 0
        elif card >= 0:
            card *= int(count)
        return Dataset(repeated, card)

    def take(self, count):
        """The first `count` elements (all of them when count is -1)."""
        count = int(count)

        def taken():
            yield from (iter(self) if count < 0 else itertools.islice(self, count))

        card = self._cardinality
        if count >= 0:
            card = count if card == INFINITE else (min(card, count) if card >= 0 else UNKNOWN)
        return Dataset(taken, card)

    def skip(self, count):
        """All elements after the first `count`."""
        count = int(count)

        def skipped():
            yield from itertools.islice(self, count, None)

        card = self._cardinality
        if card >= 0:
            card = max(card - count, 0)
        return Dataset(skipped, card)

    def __repr__(self):
        return f"<Dataset cardinality={self._cardinality}>"
