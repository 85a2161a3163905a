"""FunctionGraph: the graph of a traced function (a loop body, a branch) nested in another graph.

Its placeholders are the function's arguments followed by the values it captured: tensors
of an enclosing graph and variables it read. The control-flow ops take the captured values
as explicit inputs, so a nested graph reads nothing from outside except through its
placeholders, and every backend can compile it on its own.
"""

from __future__ import annotations

from kgraph.ir.graph import Graph
from kgraph.ir.tensor import SymbolicTensor


class FunctionGraph(Graph):
    """A graph traced inside `parent`; `captures` lists, in placeholder order after the
    arguments, the outer values its capture placeholders stand for (SymbolicTensors of the
    parent graph, or Variables, which the parent reads at its own current value)."""

    def __init__(self, name, parent):
        super().__init__(name)
        self.parent = parent
        self.captures = []
        self._captured = {}  # (kind, identity) -> placeholder node id

    def _capture_placeholder(self, key, value, shape, dtype, name):
        node_id = self._captured.get(key)
        if node_id is None:
            node_id = self.add_placeholder(shape, dtype, name).id
            self._captured[key] = node_id
            self.captures.append(value)
        return node_id

    def capture(self, tensor):
        """The node id standing for `tensor`, a value of an enclosing graph."""
        if tensor.graph is not self.parent:
            if not isinstance(self.parent, FunctionGraph):
                raise ValueError(f"'{self.name}' read a tensor of graph '{tensor.graph.name}', which does "
                                 f"not enclose it")
            tensor = SymbolicTensor(self.parent, self.parent.capture(tensor))
        return self._capture_placeholder(("tensor", tensor.node_id), tensor, tensor.shape, tensor.dtype,
                                         f"capture.{tensor.name or tensor.node_id}")

    def variable_node(self, variable):
        """A variable read inside the function is captured: the enclosing graph passes its value."""
        node_id = self._capture_placeholder(("variable", id(variable)), variable, variable.shape,
                                            variable.dtype, f"capture.{variable.path}")
        return self.node(node_id)
