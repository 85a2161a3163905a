"""Input data for fit/evaluate/predict.

Two sources feed the compiled steps, both as "flat batches" (the list of arrays a compiled
step takes: inputs, targets, then the sample weights of the outputs that have them):

- `ArrayData`: in-memory arrays (single, lists, dicts by name), sliced into batches. The
  fast path: batches of a shuffled epoch are gathered into buffers allocated once per batch
  size, so the hot loop touches no fresh memory.
- `IterableData`: anything that yields batches (`kgraph.utils.PyDataset`, `kgraph.data.Dataset`,
  Python generators, other iterables); each batch is `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`
  and is converted as it arrives.

Both are streams: an epoch takes `steps_per_epoch` batches (one full pass when it is None)
and the next epoch continues where the last one stopped, starting a new pass when one ends.
A shuffled pass over arrays uses the permutation drawn from (seed, pass index), so a run
that resumes (BackupAndRestore) sees the same batches as one that never stopped.
"""

from __future__ import annotations

import warnings

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
    return array


def check_lengths(arrays_by_role):
    sizes = {}
    for role, arrays in arrays_by_role.items():
        for i, array in enumerate(arrays):
            if array is None:
                continue
            if array.ndim == 0:
                raise ValueError(f"{role}[{i}] is a scalar; expected an array with a batch dimension")
            sizes[f"{role}[{i}]" if len(arrays) > 1 else role] = array.shape[0]
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise ValueError(f"Data cardinality is ambiguous: make sure all arrays contain the same number "
                         f"of samples. Received sizes: {detail}")
    return next(iter(sizes.values()), 0)


# -- sample and class weights -------------------------------------------------------------------------
def class_weight_to_sample_weights(y, class_weight):
    """Per-sample weights from a {class: weight} dict: the class of a sample is its integer
    label, the argmax of a one-hot/probability row, or its rounded value for one column."""
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be a dict mapping class indices to weights, got {class_weight!r}")
    y = np.asarray(y)
    if y.ndim > 1:
        y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else np.squeeze(y, axis=-1)
    labels = np.round(y).astype(np.int64)
    weights = np.ones(labels.shape[0], np.float32)
    for cls, weight in class_weight.items():
        weights[labels == int(cls)] = weight
    return weights


def standardize_sample_weights(sample_weight, class_weight, ys, output_names):
    """One sample-weight array (or None) per output, from what fit/evaluate were given."""
    count = len(ys)
    if class_weight is not None:
        if sample_weight is not None:
            raise ValueError("You cannot `class_weight` and `sample_weight` at the same time.")
        if count != 1:
            raise ValueError("`class_weight` is only supported for Models with a single output.")
        return [class_weight_to_sample_weights(ys[0], class_weight)]
    if sample_weight is None:
        return [None] * count
    if isinstance(sample_weight, dict):
        names = list(output_names or [])
        unknown = [k for k in sample_weight if k not in names]
        if unknown:
            raise ValueError(f"sample_weight: keys {unknown} match no output; outputs are {names}")
        weights = [sample_weight.get(name) for name in names]
    elif isinstance(sample_weight, (list, tuple)) and count > 1:
        if len(sample_weight) != count:
            raise ValueError(f"You should provide one `sample_weight` array per output in `y`: the model has "
                             f"{count} outputs, sample_weight has {len(sample_weight)} entries")
        weights = list(sample_weight)
    else:
        weight = np.asarray(sample_weight)
        if count > 1 and not (weight.ndim == 1 or (weight.ndim == 2 and weight.shape[1] == 1)):
            raise ValueError("For a model with multiple outputs, when providing a single `sample_weight` array, "
                             "it should only have one scalar score per sample (i.e. shape `(num_samples,)`); "
                             f"got shape {weight.shape}. Pass one array per output for non-scalar weights.")
        weights = [weight] * count
    return [None if w is None else np.asarray(w, dtype=np.float32) for w in weights]


def unpack_batch(batch):
    """(x, y, sample_weight) from a batch given as x, (x,), (x, y) or (x, y, sample_weight)."""
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple):
        return batch, None, None
    if len(batch) == 1:
        return batch[0], None, None
    if len(batch) == 2:
        return batch[0], batch[1], None
    if len(batch) == 3:
        return batch
    raise ValueError("Data is expected to be in format `x`, `(x,)`, `(x, y)`, or `(x, y, sample_weight)`, "
                     f"found a tuple of {len(batch)} elements")


class Layout:
    """How a flat batch is laid out: the counts of inputs and targets, and which outputs carry
    sample weights. `specs` (trailing shapes and dtypes) keys the compiled functions."""

    __slots__ = ("n_x", "n_y", "weighted", "specs")

    def __init__(self, xs, ys, sws):
        self.n_x, self.n_y = len(xs), len(ys)
        self.weighted = tuple(w is not None for w in sws)
        arrays = list(xs) + list(ys) + [w for w in sws if w is not None]
        self.specs = (tuple((a.shape[1:], a.dtype.name) for a in arrays), self.n_x, self.n_y, self.weighted)

    def split(self, flat):
        xs = flat[:self.n_x]
        ys = flat[self.n_x:self.n_x + self.n_y]
        rest = iter(flat[self.n_x + self.n_y:])
        sws = [next(rest) if w else None for w in self.weighted]
        return xs, ys, sws


# -- arrays ----------------------------------------------------------------------------------------------
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

    def batches(self, permutation=None, start_step=0):
        for start in range(start_step * self.batch_size, self.size, self.batch_size):
            stop = min(start + self.batch_size, self.size)
            if permutation is None:
                yield [a[start:stop] for a in self.arrays]
            else:
                index = permutation[start:stop]
                buffers = self._buffer(stop - start)
                for array, out in zip(self.arrays, buffers):
                    np.take(array, index, axis=0, out=out)
                yield buffers


class _Stream:
    """Epochs of `steps` batches drawn from consecutive passes over a source."""

    def __init__(self, steps_per_epoch, pass_length):
        self.steps_per_epoch = steps_per_epoch
        self.pass_length = pass_length  # batches in one pass; None when unknown
        self._iterator = None
        self._pass = 0
        self.exhausted = False

    @property
    def steps(self):
        return self.steps_per_epoch if self.steps_per_epoch is not None else self.pass_length

    def _new_pass(self, skip=0):
        raise NotImplementedError

    def _reiterable(self):
        return True

    def position(self, epoch, step):
        """Place the stream at `step` of `epoch` (resuming): passes are counted from epoch 0."""
        if self.steps_per_epoch is None:
            self._pass, skip = epoch, step
        elif self.pass_length is None:  # one endless pass (a generator, a repeated dataset)
            self._pass, skip = 0, epoch * self.steps_per_epoch + step
        else:
            done = epoch * self.steps_per_epoch + step
            self._pass, skip = divmod(done, self.pass_length)
        self._iterator = self._new_pass(skip) if (epoch or step) else None

    def epoch(self, done=0):
        """The batches of the next epoch (flat lists); `done` steps of it ran before a resume
        (the stream was placed after them by `position`)."""
        if self.steps_per_epoch is None:
            iterator = self._iterator if self._iterator is not None else self._new_pass()
            self._iterator = None
            self._pass += 1
            yield from iterator
            return
        taken = done
        while taken < self.steps_per_epoch:
            if self._iterator is None:
                self._iterator = self._new_pass()
            batch = next(self._iterator, None)
            if batch is None:
                self._iterator = None
                self._pass += 1
                if not self._reiterable() or (taken == done and self.pass_length == 0):
                    self.exhausted = True
                    warnings.warn("Your input ran out of data; interrupting training. Make sure that your "
                                  "dataset or generator can generate at least `steps_per_epoch * epochs` "
                                  "batches.", stacklevel=4)
                    return
                continue
            taken += 1
            yield batch


class ArrayData(_Stream):
    """In-memory arrays (inputs, targets, per-output sample weights) in batches."""

    def __init__(self, xs, ys, sws, batch_size, shuffle=False, steps_per_epoch=None, seed=None):
        self.layout = Layout(xs, ys, sws)
        self.iterator = BatchIterator(list(xs) + list(ys) + [w for w in sws if w is not None], batch_size)
        self.size = self.iterator.size
        self.shuffle = bool(shuffle)
        self.seed = seed if seed is not None else int(np.random.default_rng().integers(2**31))
        super().__init__(steps_per_epoch, len(self.iterator))

    def _new_pass(self, skip=0):
        permutation = None
        if self.shuffle:
            permutation = np.random.default_rng([self.seed, self._pass]).permutation(self.size)
        return self.iterator.batches(permutation, skip)


class IterableData(_Stream):
    """Batches from a PyDataset, a kgraph.data.Dataset, a generator or another iterable."""

    def __init__(self, source, convert, steps_per_epoch=None, shuffle=False, seed=None):
        from kgraph.utils.py_dataset import PyDataset

        self.source = source
        self.seed = seed if seed is not None else int(np.random.default_rng().integers(2**31))
        self.convert = convert
        self.shuffle = shuffle
        self.is_py_dataset = isinstance(source, PyDataset)
        length = None
        if self.is_py_dataset:
            length = source.num_batches
        elif hasattr(source, "cardinality"):
            cardinality = source.cardinality()
            length = cardinality if cardinality >= 0 else None
        self._single_pass = iter(source) is source if not self.is_py_dataset else False
        super().__init__(steps_per_epoch, length)

    def _reiterable(self):
        return not self._single_pass

    def _new_pass(self, skip=0):
        if self.is_py_dataset:
            batches = self.source._epoch_batches(shuffle=self.shuffle, skip=skip, seed=[self.seed, self._pass])
        else:
            batches = iter(self.source)
            for _ in range(skip):
                next(batches, None)
        return (self.convert(batch) for batch in batches)

    def first_layout(self):
        """Peek at the first batch (kept for the first epoch) to learn shapes."""
        if self._iterator is None:
            self._iterator = self._new_pass()
        first = next(self._iterator, None)
        if first is None:
            raise ValueError("The data given to the model yielded no batches")
        rest = self._iterator
        self._iterator = _chain_first(first, rest)
        return first


def _chain_first(first, rest):
    yield first
    yield from rest


def is_array_like(data):
    """Whether `data` is arrays (an array, a list/tuple/dict of arrays) rather than a batch source."""
    if data is None or isinstance(data, np.ndarray):
        return True
    if isinstance(data, dict):
        return all(is_array_like(v) for v in data.values())
    if isinstance(data, (list, tuple)):
        return all(is_array_like(v) or np.isscalar(v) or isinstance(v, (list, tuple)) for v in data)
    return hasattr(data, "__array__") or hasattr(data, "shape") and hasattr(data, "dtype")
