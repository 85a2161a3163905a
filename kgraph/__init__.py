"""kgraph: the Keras 3 API, traced to a graph and compiled to fused kernels.

`import kgraph as keras` runs Keras 3 programs: the namespace mirrors Keras 3's.
"""

__version__ = "0.1.0"

# config first: it chooses numba's threading layer before numba starts.
from kgraph import config
from kgraph import ops
from kgraph import activations, constraints, initializers, regularizers
from kgraph import random
from kgraph import layers
from kgraph import losses, metrics, optimizers
from kgraph import callbacks
from kgraph import data
from kgraph import models
from kgraph import saving
from kgraph import exporters as export
from kgraph import utils
from kgraph.ir import Variable
from kgraph.layers import Input, InputSpec, Layer
from kgraph.layers.layer import KerasTensor
from kgraph.models import Model, Sequential

__all__ = ["config", "ops", "activations", "constraints", "initializers", "regularizers", "random", "layers", "losses",
           "metrics", "optimizers", "callbacks", "data", "models", "saving", "export", "utils", "Variable", "Input",
           "InputSpec", "KerasTensor", "Layer", "Model", "Sequential"]
