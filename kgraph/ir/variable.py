"""Variable: state (weights, optimizer slots, metric totals) that graphs read and update."""

from __future__ import annotations

import itertools

import numpy as np

from kgraph.ir.tensor import SymbolicTensor, current_graph, is_tracing

_uids = itertools.count()


def standardize_dtype(dtype):
    if dtype is None:
        return "float32"
    if hasattr(dtype, "name") and not isinstance(dtype, str):
        dtype = dtype.name
    name = np.dtype(dtype).name
    return name


class Variable:
    """A named array that outlives a step.

    Eagerly it holds a numpy array (`numpy()`, `value`) that is updated in place, so
    compiled steps that write it and Python code that reads it see one buffer. Inside a
    trace, reading it yields a graph node and assign() records a state update that the
    compiled step writes back.
    """

    __array_priority__ = 100

    def __init__(self, initializer, shape=None, dtype=None, trainable=True, name=None,
                 autocast=True, aggregation="none", synchronization="auto"):
        if name is not None and not isinstance(name, str):
            raise ValueError(f"Variable name must be a string, got {name!r}")
        self.name = name or f"variable_{next(_uids)}"
        self.path = self.name
        self.trainable = bool(trainable)
        self.autocast = autocast
        self.aggregation = aggregation
        self.synchronization = synchronization
        if callable(initializer):
            if shape is None:
                raise ValueError(f"Variable '{self.name}': a callable initializer needs a shape")
            dtype = standardize_dtype(dtype)
            value = initializer(tuple(shape), dtype=dtype)
        else:
            value = initializer
            if isinstance(value, Variable):
                value = value.numpy()
            dtype = standardize_dtype(dtype if dtype is not None else
                                      getattr(value, "dtype", None) if hasattr(value, "dtype")
                                      else ("float32" if isinstance(value, float) else None))
        array = np.array(value, dtype=dtype)
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise ValueError(f"Variable '{self.name}': initial value has shape {array.shape}, "
                             f"expected {tuple(shape)}")
        self._value = np.array(array, order="C")  # keeps 0-d (np.ascontiguousarray makes it 1-d)
        self.constraint = None
        self.regularizer = None

    # -- reading ------------------------------------------------------------------------
    @property
    def shape(self):
        return tuple(self._value.shape)

    @property
    def dtype(self):
        return self._value.dtype.name

    @property
    def ndim(self):
        return self._value.ndim

    @property
    def value(self):
        """The current value: a graph node inside a trace, else the array."""
        if is_tracing():
            return self.symbolic()
        return self._value

    def numpy(self):
        return self._value.copy()

    def symbolic(self):
        """This variable's current value in the active graph (after earlier assigns)."""
        graph = current_graph()
        var_node = graph.variable_node(self)
        node_id = graph.state_updates.get(var_node.id, var_node.id)
        return SymbolicTensor(graph, node_id)

    def __array__(self, dtype=None, copy=None):
        return self._value if dtype is None else self._value.astype(dtype)

    def __len__(self):
        return len(self._value)

    def __repr__(self):
        return f"<Variable path={self.path}, shape={self.shape}, dtype={self.dtype}>"

    # -- writing ------------------------------------------------------------------------
    def assign(self, value):
        """Set the value: in place eagerly, recorded as a state update inside a trace."""
        if is_tracing() or isinstance(value, SymbolicTensor):
            from kgraph.ir.graph import Graph  # noqa: F401  (kept for clarity of layering)
            graph = current_graph()
            if not isinstance(value, SymbolicTensor):
                value = _constant_tensor(graph, np.asarray(value, dtype=self.dtype))
            if tuple(d for d in value.shape) != self.shape and None not in value.shape:
                if int(np.prod(value.shape)) != int(np.prod(self.shape)) or len(value.shape) != len(self.shape):
                    raise ValueError(f"Variable '{self.path}': cannot assign a value of shape "
                                     f"{value.shape} to a variable of shape {self.shape}")
            if value.dtype != self.dtype:
                value = _cast(value, self.dtype)
            var_node = graph.variable_node(self)
            graph.state_updates[var_node.id] = value.node_id
            return value
        array = np.asarray(value)
        if array.shape != self._value.shape:
            raise ValueError(f"Variable '{self.path}': cannot assign a value of shape "
                             f"{array.shape} to a variable of shape {self.shape}")
        self._value[...] = array
        return self

    def assign_add(self, delta):
        return self.assign(self._add(self.value, delta))

    def assign_sub(self, delta):
        return self.assign(self._add(self.value, -delta if not isinstance(delta, SymbolicTensor)
                                     else _negate(delta)))

    @staticmethod
    def _add(a, b):
        return a + b


def _constant_tensor(graph, array):
    node = graph.add_constant(array)
    return SymbolicTensor(graph, node.id)


def _cast(value, dtype):
    from kgraph import ops  # installed op library; imported lazily to keep ir at the bottom

    return ops.cast(value, dtype)


def _negate(value):
    return -value
