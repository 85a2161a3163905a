"""The IR: a networkx graph of op applications, symbolic tensors and variables.

This package knows no particular op: the op library records into it, the compiler
transforms it, the exporters read it.
"""

from kgraph.ir.graph import Graph, Node
from kgraph.ir.tensor import SymbolicTensor, current_graph, is_symbolic, is_tracing, tracing
from kgraph.ir.variable import Variable

__all__ = ["Graph", "Node", "SymbolicTensor", "Variable", "current_graph", "tracing", "is_symbolic", "is_tracing"]
