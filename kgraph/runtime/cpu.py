"""Runs a compiled graph on the CPU: arenas allocated once per batch size, one call per step."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


def _contiguous(value, dtype=None):
    """A C-contiguous array of `value` that keeps its rank (np.ascontiguousarray makes
    0-d arrays 1-d, which the compiled entry's types would not accept)."""
    array = np.asarray(value, dtype=dtype)
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


class CpuExecutable:
    """A graph lowered to a numba module; calling it runs the whole graph once.

    Inputs are one array per placeholder. Variables are read and updated in place (the
    arrays inside the Variable objects). Outputs are views into the arena, valid until
    the next call: copy what you keep.
    """

    MAX_ARENAS = 3  # batch sizes kept allocated (e.g. the full and the last partial batch)

    def __init__(self, graph, signature, plan, entry, source):
        self.graph = graph
        self.signature = signature
        self.plan = plan
        self.entry = entry
        self.source = source
        self.input_specs = [(graph.node(i).shape, graph.node(i).dtype, graph.node(i).name)
                            for i in signature.placeholders]
        self.variables = [graph.node(i).payload for i in signature.variable_nodes]
        self.constants = [_contiguous(graph.node(i).payload) for i in signature.constants]
        self._arenas = OrderedDict()

    def _arenas_for(self, batch):
        arenas = self._arenas.get(batch)
        if arenas is None:
            arenas = [np.empty(max(self.plan.arena_elements(d, batch or 0), 1), dtype=d)
                      for d in self.signature.arena_dtypes]
            self._arenas[batch] = arenas
            while len(self._arenas) > self.MAX_ARENAS:
                self._arenas.popitem(last=False)
        return arenas

    def batch_of(self, inputs):
        for (shape, _, _), array in zip(self.input_specs, inputs):
            for static, actual in zip(shape, array.shape):
                if static is None:
                    return actual
        return 0

    def _checked(self, inputs):
        if len(inputs) != len(self.input_specs):
            raise ValueError(f"graph '{self.graph.name}' takes {len(self.input_specs)} inputs, "
                             f"got {len(inputs)}")
        arrays = []
        for (shape, dtype, name), value in zip(self.input_specs, inputs):
            array = _contiguous(value, dtype)
            if len(array.shape) != len(shape) or any(
                    s is not None and s != a for s, a in zip(shape, array.shape)):
                raise ValueError(f"input '{name}': expected shape {shape}, got {array.shape}")
            arrays.append(array)
        return arrays

    def __call__(self, *inputs):
        arrays = self._checked(inputs)
        # Variables keep their arrays for life (assign writes in place), so the state
        # arguments are gathered once per call without copying.
        state = [v._value for v in self.variables]
        return self.entry(*arrays, *state, *self.constants, *self._arenas_for(self.batch_of(arrays)))
