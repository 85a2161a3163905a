"""kgraph.utils: helpers of the Keras 3 `keras.utils` namespace."""

from kgraph.utils.naming import to_snake_case  # noqa: F401
from kgraph.utils.numerical import normalize, to_categorical  # noqa: F401
from kgraph.utils.py_dataset import PyDataset, Sequence  # noqa: F401
from kgraph.utils.rng_utils import set_random_seed  # noqa: F401
