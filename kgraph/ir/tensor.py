"""SymbolicTensor (a value of a graph being traced) and the tracing context."""

from __future__ import annotations

import contextlib
import threading

from kgraph.ir.graph import Graph

_state = threading.local()


def _stack():
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


_SCRATCH = Graph("scratch")


def current_graph() -> Graph:
    """The graph ops record into: the innermost active trace, else the scratch graph.

    The scratch graph collects what symbolic Keras tensors (Input(), layer outputs while
    a functional model is built) compute; compiled steps are traced into fresh graphs.
    """
    stack = _stack()
    return stack[-1] if stack else _SCRATCH


def is_tracing() -> bool:
    """True inside `tracing(graph)`: then variables read as graph nodes, not arrays."""
    return bool(_stack())


@contextlib.contextmanager
def tracing(graph: Graph):
    """Record every op (and every variable read or assignment) into `graph`."""
    _stack().append(graph)
    try:
        yield graph
    finally:
        _stack().pop()


class SymbolicTensor:
    """A value of a traced graph: node id, static shape (None for unknown dims), dtype.

    Arithmetic operators are installed by kgraph.ops, which owns the ops.
    """

    __array_priority__ = 100  # numpy defers `array + tensor` to our __radd__

    def __init__(self, graph: Graph, node_id: int, name=None):
        node = graph.node(node_id)
        self.graph = graph
        self.node_id = node_id
        self.shape = node.shape
        self.dtype = node.dtype
        self.name = name or node.name
        self._keras_history = None  # (layer, node_index, tensor_index) in functional models
        self._keras_mask = None

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<SymbolicTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"

    def __len__(self):
        if not self.shape or self.shape[0] is None:
            raise TypeError("len() of a symbolic tensor with unknown first dimension")
        return self.shape[0]

    def __bool__(self):
        raise TypeError("A symbolic tensor has no truth value while a graph is traced; "
                        "use kgraph.ops.where or kgraph.ops.cond instead of Python `if`.")

    def __hash__(self):
        return id(self)


def is_symbolic(value) -> bool:
    return isinstance(value, SymbolicTensor)
