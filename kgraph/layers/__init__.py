"""kgraph.layers: Keras 3 layers."""

from kgraph.layers.core import Activation, Dense, Dropout, Flatten, Identity, Input, InputLayer, Reshape  # noqa: F401
from kgraph.layers.layer import InputSpec, Layer  # noqa: F401
from kgraph.layers.merging import (  # noqa: F401
                                Add,
                                Average,
                                Concatenate,
                                Maximum,
                                Minimum,
                                Multiply,
                                Subtract,
                                add,
                                average,
                                concatenate,
                                maximum,
                                minimum,
                                multiply,
                                subtract,
)
