"""kgraph.ops: the op library and the Keras 3 `keras.ops` namespace.

Every function runs its numpy reference on arrays and records a graph node on symbolic
tensors (or on anything while a graph is traced).
"""

from kgraph.ops.registry import OPS, OpDef, bind, convert_to_tensor, get_op, register  # noqa: F401
from kgraph.ops.elementwise import *  # noqa: F401,F403
from kgraph.ops.elementwise import abs, cast, clip, elu, gelu, leaky_relu, result_type, where  # noqa: F401
from kgraph.ops.reduce import *  # noqa: F401,F403
from kgraph.ops.reduce import max, min, sum  # noqa: F401
from kgraph.ops.shape import *  # noqa: F401,F403
from kgraph.ops.shape import getitem, slice  # noqa: F401
from kgraph.ops.matmul import dot, matmul  # noqa: F401
from kgraph.ops import random  # noqa: F401  (registers random_uniform)
from kgraph.ops.conv import conv, conv_transpose, depthwise_conv, separable_conv  # noqa: F401
from kgraph.ops.pool import average_pool, max_pool  # noqa: F401
from kgraph.ops import conv_pool as _conv_pool  # noqa: F401  (registers the fused conv-pool ops)
from kgraph.ops import recurrent  # noqa: F401  (registers the recurrence ops)
from kgraph.ops import attention as _attention  # noqa: F401  (registers the fused attention ops)
from kgraph.ops import operators as _operators

import numpy as _np


def convert_to_numpy(x):
    """An eager value as a numpy array."""
    from kgraph.ir import SymbolicTensor, Variable

    if isinstance(x, SymbolicTensor):
        raise ValueError("convert_to_numpy: a symbolic tensor has no value while a graph is traced")
    if isinstance(x, Variable):
        return x.numpy()
    return _np.asarray(x)


def shape(x):
    return tuple(x.shape)


def batch_size(x):
    """The size of the first axis as an int32 scalar; a graph value when it is only known at
    run time (the batch dimension of a compiled step). Not part of keras.ops."""
    from kgraph.ir import SymbolicTensor, is_tracing

    if isinstance(x, SymbolicTensor) or is_tracing():
        return bind("reduced_count", [x], axes=(0,))
    return _np.int32(_np.shape(x)[0])


def size(x):
    return int(_np.prod(x.shape))


def ndim(x):
    return len(x.shape)


def dtype(x):
    return str(x.dtype)


_operators.install()

# The keras.ops name contract: Keras names kgraph lacks raise UnsupportedOpError on access.
from kgraph.ops.namespace import UnsupportedOpError, module_getattr as _module_getattr  # noqa: E402,F401
from kgraph.ops import image, linalg, nn, numpy  # noqa: E402,F401  (keras.ops's submodules)

__getattr__, __dir__ = _module_getattr()
from kgraph.ops.numpy_extra import *  # noqa: E402,F401,F403  (numpy-like compositions)
from kgraph.ops.nn_extra import *  # noqa: E402,F401,F403  (nn compositions)
from kgraph.ops.control import *  # noqa: E402,F401,F403  (control flow, searching, segments)
from kgraph.ops.linalg_extra import *  # noqa: E402,F401,F403  (Cholesky, triangular solves)
from kgraph.ops.structural import *  # noqa: E402,F401,F403  (scatter, unique, rearrange, custom_gradient, ...)
from kgraph.ops.nn_structural import *  # noqa: E402,F401,F403  (fold/unfold, adaptive pooling, CTC)
from kgraph.ops.linalg_lapack import *  # noqa: E402,F401,F403  (inv, solve, det, qr, svd, eigh, ...)
from kgraph.ops.linalg import jvp  # noqa: E402,F401  (forward mode, reverse mode transposed)
from kgraph.ops.fft import *  # noqa: E402,F401,F403  (fft family: DFT matrices)
from kgraph.ops.math_extra import *  # noqa: E402,F401,F403  (special, integer, bitwise, NaN quantiles)
