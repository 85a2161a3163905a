"""kgraph.data.Dataset and kgraph.utils.PyDataset on their own (no model): element values,
order, shuffling, batching, cardinality, threads and errors."""

import threading
import time

import numpy as np
import pytest

import kgraph as keras
from kgraph.data import Dataset

X = np.arange(20, dtype="float32").reshape(10, 2)
Y = np.arange(10, dtype="int32")


def test_from_tensor_slices_structures():
    assert [int(v) for v in Dataset.from_tensor_slices(Y)] == list(range(10))
    pairs = list(Dataset.from_tensor_slices((X, Y)))
    assert len(pairs) == 10 and isinstance(pairs[3], tuple)
    np.testing.assert_array_equal(pairs[3][0], X[3])
    assert pairs[3][1] == 3
    dicts = list(Dataset.from_tensor_slices({"a": X, "b": Y}))
    assert set(dicts[0]) == {"a", "b"} and dicts[9]["b"] == 9
    with pytest.raises(ValueError, match="different first dimensions"):
        Dataset.from_tensor_slices((X, Y[:5]))
    with pytest.raises(ValueError, match="scalar"):
        Dataset.from_tensor_slices(np.float32(1.0))


def test_batch_sizes_drop_remainder_and_cardinality():
    dataset = Dataset.from_tensor_slices((X, Y)).batch(4)
    batches = list(dataset)
    assert [len(b[1]) for b in batches] == [4, 4, 2] and dataset.cardinality() == 3 and len(dataset) == 3
    np.testing.assert_array_equal(batches[2][0], X[8:])
    assert [len(b[1]) for b in Dataset.from_tensor_slices((X, Y)).batch(4, drop_remainder=True)] == [4, 4]
    # the element-wise path (after map) stacks the same batches as the gather path
    mapped = Dataset.from_tensor_slices((X, Y)).map(lambda x, y: (x * 2, y)).batch(4)
    for (mx, my), (bx, by) in zip(mapped, batches):
        np.testing.assert_array_equal(mx, bx * 2)
        np.testing.assert_array_equal(my, by)
    nested = Dataset.from_tensor_slices({"a": X, "b": Y}).map(lambda d: d).batch(3, drop_remainder=True)
    assert nested.cardinality() == 3 and [b["a"].shape for b in nested] == [(3, 2)] * 3


def test_shuffle_is_a_seeded_permutation_reshuffled_each_pass():
    full = Dataset.from_tensor_slices(Y).shuffle(100, seed=3)
    first, second = [int(v) for v in full], [int(v) for v in full]
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert first != second  # reshuffled each pass
    again = Dataset.from_tensor_slices(Y).shuffle(100, seed=3)
    assert [int(v) for v in again] == first  # same seed, same order
    fixed = Dataset.from_tensor_slices(Y).shuffle(100, seed=3, reshuffle_each_iteration=False)
    assert [int(v) for v in fixed] == [int(v) for v in fixed]
    # a small buffer keeps elements near their position: element i comes out no earlier than i - 2 + ...
    small = [int(v) for v in Dataset.from_tensor_slices(np.arange(200)).shuffle(3, seed=0)]
    assert sorted(small) == list(range(200)) and small != list(range(200))
    assert all(position >= value - 3 for position, value in enumerate(small))  # not from further ahead
    assert max(v - p for p, v in enumerate(small)) <= 3  # a value can only come from the buffer
    # shuffle then batch keeps rows together
    for bx, by in Dataset.from_tensor_slices((X, Y)).shuffle(10, seed=1).batch(3):
        np.testing.assert_array_equal(bx, X[by])
    generic = Dataset.from_tensor_slices(Y).map(lambda v: v).shuffle(4, seed=2)
    assert sorted(int(v) for v in generic) == list(range(10))
    with pytest.raises(ValueError, match="buffer_size"):
        Dataset.from_tensor_slices(Y).shuffle(0)


def test_repeat_take_skip_prefetch_and_range():
    assert [int(v) for v in Dataset.from_tensor_slices(Y).take(3)] == [0, 1, 2]
    assert [int(v) for v in Dataset.from_tensor_slices(Y).skip(7)] == [7, 8, 9]
    repeated = Dataset.from_tensor_slices(Y).repeat(2)
    assert [int(v) for v in repeated] == list(range(10)) * 2 and repeated.cardinality() == 20
    forever = Dataset.from_tensor_slices(Y).repeat()
    assert forever.cardinality() == -1
    assert [int(v) for v in forever.take(13)] == list(range(10)) + [0, 1, 2]
    assert forever.take(13).cardinality() == 13
    with pytest.raises(TypeError, match="infinite"):
        len(forever)
    assert [list(b) for b in Dataset.range(7).batch(3)] == [[0, 1, 2], [3, 4, 5], [6]]
    produced = []

    def slow(v):
        produced.append(threading.current_thread().name)
        time.sleep(0.001)
        return v + 1

    prefetched = Dataset.from_tensor_slices(Y).map(slow).prefetch(2)
    assert [int(v) for v in prefetched] == list(range(1, 11))
    assert set(produced) == {"kgraph-prefetch"}  # mapped in the background thread
    # an error inside the pipeline surfaces in the consumer
    broken = Dataset.from_tensor_slices(Y).map(lambda v: 1 // 0).prefetch(1)
    with pytest.raises(ZeroDivisionError):
        list(broken)
    # abandoning a prefetched pass early does not hang
    assert int(next(iter(Dataset.range(1000).prefetch(1)))) == 0


class Squares(keras.utils.PyDataset):
    def __init__(self, count, **kwargs):
        super().__init__(**kwargs)
        self.count = count
        self.threads = set()
        self.ends = 0

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        self.threads.add(threading.current_thread().name)
        time.sleep(0.002 * (index % 3))  # out-of-order completion must not reorder batches
        return np.full((2, 1), index, "float32"), np.full((2, 1), index * index, "float32")

    def on_epoch_end(self):
        self.ends += 1


def test_pydataset_threads_keep_order_and_call_on_epoch_end():
    dataset = Squares(12, workers=4, max_queue_size=3)
    batches = list(dataset)
    assert [int(b[0][0, 0]) for b in batches] == list(range(12))
    assert all(int(b[1][0, 0]) == int(b[0][0, 0]) ** 2 for b in batches)
    assert any(name.startswith("kgraph-pydataset") for name in dataset.threads)
    assert dataset.ends == 1
    shuffled = [int(b[0][0, 0]) for b in dataset._epoch_batches(shuffle=True, seed=[1, 0])]
    assert sorted(shuffled) == list(range(12)) and shuffled != list(range(12))
    assert keras.utils.Sequence is keras.utils.PyDataset
    single = Squares(3)
    assert single.workers == 1 and single.max_queue_size == 10 and not single.use_multiprocessing
    assert [int(b[0][0, 0]) for b in single] == [0, 1, 2]
    assert single.threads == {threading.current_thread().name}

    class Unsized(keras.utils.PyDataset):
        def __getitem__(self, index):
            return np.zeros((1, 1))

    endless = iter(Unsized())  # no __len__: batches until the consumer stops (fit: steps_per_epoch)
    assert [next(endless).shape for _ in range(5)] == [(1, 1)] * 5
