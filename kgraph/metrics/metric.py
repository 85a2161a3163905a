"""The Metric base class: state variables, update_state, result, reset_state.

A metric's state lives in kgraph.ir.Variables. `update_state` changes them only through
`assign` / `assign_add` of values computed with kgraph.ops, so the same code updates the
arrays eagerly and, inside a trace, records state updates that the compiled step writes
back. `result()` is computed with ops on the variables' values (an array eagerly, a graph
node inside a trace).
"""

from __future__ import annotations

from kgraph import ops
from kgraph.ir import Variable


def _floatx():
    from kgraph.config import floatx

    return floatx()


def _auto_name(cls):
    from kgraph.utils.naming import auto_name

    return auto_name(cls)


class Metric:
    """Base class of metrics.

    Subclasses create their state with `add_variable` in `__init__`, and implement
    `update_state(...)` and `result()`.

    Args:
        dtype: the dtype of the metric's computations and result; defaults to float32.
        name: the metric's name.
    """

    def __init__(self, dtype=None, name=None):
        self._variables = []
        self._metrics = []
        self.name = name or _auto_name(self.__class__)
        self._dtype = _standardize_dtype(dtype)

    def __setattr__(self, name, value):
        if isinstance(value, Metric) and name != "_metrics" and "_metrics" in self.__dict__:
            if not any(value is m for m in self._metrics):
                self._metrics.append(value)
        super().__setattr__(name, value)

    def _check_super_called(self):
        if "_variables" not in self.__dict__:
            raise RuntimeError(
                "You forgot to call `super().__init__()` in the `__init__()` method. Go add it!"
            )

    @property
    def dtype(self):
        return self._dtype

    def add_variable(self, shape, initializer, dtype=None, aggregation="sum", name=None):
        """A non-trainable state Variable of `shape`, filled by `initializer` (name or object)."""
        self._check_super_called()
        from kgraph import initializers

        initializer = initializers.get(initializer)
        variable = Variable(
            initializer,
            shape=tuple(shape),
            dtype=dtype or self.dtype,
            trainable=False,
            name=name,
            aggregation=aggregation,
        )
        variable.path = f"{self.name}/{variable.name}"
        self._variables.append(variable)
        return variable

    def add_weight(self, shape=(), initializer=None, dtype=None, name=None):
        """Alias of add_variable (Keras 2 name)."""
        return self.add_variable(shape=shape, initializer=initializer or "zeros", dtype=dtype, name=name)

    @property
    def variables(self):
        variables = list(self._variables)
        for metric in self._metrics:
            variables.extend(metric.variables)
        return variables

    def reset_state(self):
        """Set every state variable back to zeros."""
        for variable in self.variables:
            variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def update_state(self, *args, **kwargs):
        raise NotImplementedError(f"Metric {self.__class__.__name__} does not implement update_state().")

    def result(self):
        raise NotImplementedError(f"Metric {self.__class__.__name__} does not implement result().")

    def __call__(self, *args, **kwargs):
        self._check_super_called()
        self.update_state(*args, **kwargs)
        return self.result()

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{self.__class__.__name__} name={self.name}>"

    __str__ = __repr__


def _standardize_dtype(dtype):
    import numpy as np

    if dtype is None:
        return _floatx()
    if hasattr(dtype, "name") and not isinstance(dtype, str):
        dtype = dtype.name
    return np.dtype(dtype).name
