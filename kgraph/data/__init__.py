"""kgraph.data: a small input pipeline for users without TensorFlow.

`Dataset.from_tensor_slices(...)` followed by `shuffle`, `batch`, `map`, `prefetch`, `repeat`
and `take` builds a lazy pipeline; iterating it yields numpy values with the structure of the
slices (an array, a tuple such as `(x, y)` or `(x, y, sample_weight)`, or a dict). fit,
evaluate and predict accept a Dataset wherever Keras accepts a `tf.data.Dataset`.
"""

from kgraph.data.dataset import Dataset  # noqa: F401

__all__ = ["Dataset"]
