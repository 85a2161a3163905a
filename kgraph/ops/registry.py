"""The op registry: one OpDef per primitive op, and `bind`, which applies an op.

An OpDef carries every concern of its op: shape and dtype inference, the numpy reference
(the oracle for every backend test), the gradient rule written with other ops, the scalar
formula the backends render (elementwise ops only), and sample inputs that the registry
tests run. Backends keep their own per-op tables keyed by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kgraph.ir import SymbolicTensor, Variable, current_graph, is_tracing
from kgraph.ir.function import FunctionGraph

# Op kinds: "elementwise" ops fuse into loops; the others have bespoke kernels.
ELEMENTWISE = "elementwise"


@dataclass
class OpDef:
    name: str
    kind: str
    infer: Callable  # (attrs, *input_specs) -> (shape, dtype)
    reference: Callable  # (attrs, *arrays) -> np.ndarray
    grad: Callable | None = None  # (GradContext) -> list of input gradients (or None)
    scalar: Callable | None = None  # (handler, *input_exprs, **attrs) -> expr; elementwise only
    samples: Callable | None = None  # (rng) -> list of (inputs, attrs) test cases
    differentiable: bool = True
    view: bool = False  # the output aliases its (first) input's buffer
    doc: str = ""
    extra: dict = field(default_factory=dict)


OPS: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in OPS:
        raise ValueError(f"op '{opdef.name}' is registered twice")
    OPS[opdef.name] = opdef
    return opdef


def get_op(name) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"Unknown op '{name}'. Registered ops: {sorted(OPS)}") from None


@dataclass
class Spec:
    """Shape and dtype of a value, the input of every infer rule."""

    shape: tuple
    dtype: str

    @property
    def ndim(self):
        return len(self.shape)


@dataclass
class GradContext:
    """What a gradient rule sees: symbolic inputs, output, upstream gradient, attrs."""

    inputs: list
    output: SymbolicTensor
    upstream: SymbolicTensor
    attrs: dict


# -- applying ops ---------------------------------------------------------------------------
def _is_python_scalar(value):
    return isinstance(value, (bool, int, float)) and not isinstance(value, np.generic)


def _weak_dtype(value, strong_dtypes):
    """Keras's rule for Python scalars: they take the dtype of the tensor they meet."""
    if isinstance(value, bool):
        return "bool"
    floats = [d for d in strong_dtypes if np.issubdtype(np.dtype(d), np.floating)]
    if isinstance(value, float):
        return floats[0] if floats else "float32"
    others = [d for d in strong_dtypes if d != "bool"]
    return others[0] if others else "int32"


def to_array(value, dtype=None):
    """An eager value as a numpy array (float64 Python floats become float32)."""
    if isinstance(value, Variable):
        value = value._value
    if isinstance(value, SymbolicTensor):
        raise TypeError("to_array got a symbolic tensor; this is a bug in the caller")
    if dtype is not None:
        return np.asarray(value, dtype=dtype)
    array = np.asarray(value)
    if array.dtype == np.float64 and not isinstance(value, np.ndarray):
        array = array.astype(np.float32)
    if array.dtype == np.int64 and not isinstance(value, np.ndarray):
        array = array.astype(np.int32)
    return array


def _strong_dtype(value):
    if isinstance(value, (SymbolicTensor, Variable)):
        return value.dtype
    if isinstance(value, (np.ndarray, np.generic)):
        return value.dtype.name
    if _is_python_scalar(value):
        return None
    return to_array(value).dtype.name


def bind(name, inputs, **attrs):
    """Apply op `name`: record a node when tracing or given symbolic inputs, else run eagerly."""
    opdef = get_op(name)
    strong = [d for d in (_strong_dtype(v) for v in inputs) if d is not None]
    symbolic = is_tracing() or any(isinstance(v, SymbolicTensor) for v in inputs)
    if not symbolic:
        arrays = [to_array(v, _weak_dtype(v, strong)) if _is_python_scalar(v) else to_array(v)
                  for v in inputs]
        shape, dtype = opdef.infer(attrs, *[Spec(a.shape, a.dtype.name) for a in arrays])
        result = np.asarray(opdef.reference(attrs, *arrays))
        return result.astype(dtype, copy=False)
    graph = current_graph()
    node_ids = []
    for value in inputs:
        if isinstance(value, SymbolicTensor):
            if value.graph is not graph and isinstance(graph, FunctionGraph):
                node_ids.append(graph.capture(value))  # a loop body or branch reading an outer value
            elif value.graph is not graph:
                raise ValueError(
                    f"op '{name}': a symbolic tensor from another graph ({value.graph.name}) "
                    f"was used while tracing '{graph.name}'. Tensors of a model under "
                    "construction cannot be mixed with a compiled step.")
            else:
                node_ids.append(value.node_id)
        elif isinstance(value, Variable):
            node_ids.append(value.symbolic().node_id)
        else:
            dtype = _weak_dtype(value, strong) if _is_python_scalar(value) else None
            node_ids.append(graph.add_constant(to_array(value, dtype)).id)
    specs = [Spec(graph.node(i).shape, graph.node(i).dtype) for i in node_ids]
    shape, dtype = opdef.infer(attrs, *specs)
    node = graph.add_node(name, node_ids, attrs, shape, dtype)
    output = SymbolicTensor(graph, node.id)
    if not is_tracing() and symbolic_op_hook is not None:
        output = symbolic_op_hook(name, inputs, attrs, output)
    return output


# Installed by kgraph.layers.operation: sees each op applied outside a trace to symbolic
# tensors (a functional model under construction records raw ops with it). The ops stay
# below the layers: they call the hook, they never import it.
symbolic_op_hook = None


def convert_to_tensor(value, dtype=None):
    """A tensor as ops see it: symbolic values pass through, the rest become arrays."""
    if isinstance(value, SymbolicTensor):
        return value if dtype is None or value.dtype == dtype else bind("cast", [value], dtype=dtype)
    if isinstance(value, Variable):
        return value.value if dtype is None else bind("cast", [value], dtype=dtype)
    return to_array(value, dtype)
