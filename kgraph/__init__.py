"""kgraph: the Keras 3 API, traced to a graph and compiled to fused kernels.

`import kgraph as keras` runs Keras 3 programs: the namespace mirrors Keras 3's.
"""

__version__ = "0.1.0"

from kgraph import (  # noqa: E402  # noqa: E402
           activations,
           callbacks,  # noqa: E402
           initializers,
           layers,  # noqa: E402
           losses,
           metrics,
           models,  # noqa: E402
           ops,  # noqa: E402
           optimizers,
           random,  # noqa: E402
           regularizers,
           utils,  # noqa: E402
)
from kgraph import config as _config  # noqa: F401  (threading layer, before numba starts)
from kgraph.ir import Variable  # noqa: E402
from kgraph.layers import Input, InputSpec, Layer  # noqa: E402
from kgraph.models import Model, Sequential  # noqa: E402

__all__ = ["ops", "activations", "initializers", "regularizers", "random", "layers", "losses", "metrics",
           "optimizers", "callbacks", "models", "utils", "Variable", "Input", "InputSpec", "Layer", "Model",
           "Sequential"]
