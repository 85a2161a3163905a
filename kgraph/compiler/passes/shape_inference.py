"""Shape and dtype inference over a whole graph: re-derives every node's spec from its
inputs with the ops' rules and reports the first node whose recorded spec disagrees."""

from kgraph.ops import get_op
from kgraph.ops.registry import Spec


def infer_shapes(graph):
    """Check (and refresh) the shape and dtype of every node; raise naming the node."""
    for node in graph.nodes():
        if node.op in ("placeholder", "variable", "constant"):
            continue
        specs = [Spec(graph.node(i).shape, graph.node(i).dtype) for i in node.inputs]
        try:
            shape, dtype = get_op(node.op).infer(node.attrs, *specs)
        except ValueError as error:
            raise ValueError(f"shape inference failed at %{node.id} ({node.op}): {error}") from None
        if tuple(shape) != node.shape or dtype != node.dtype:
            raise ValueError(f"shape inference: %{node.id} ({node.op}) was recorded as "
                             f"{node.dtype}{node.shape} but its inputs give {dtype}{tuple(shape)}")
    return graph
