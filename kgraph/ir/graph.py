"""Graph: op applications held in a networkx DiGraph, with explicit inputs, variables and state.

Every node produces one value (multi-result ops such as split are expressed as several
single-result nodes), so a value is named by its node id. A node keeps its ordered input
list, so an op may read the same value twice; the networkx edges mirror those inputs for
the passes that walk the graph.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import networkx as nx

SOURCE_OPS = ("placeholder", "variable", "constant")


@dataclass
class Node:
    """One op application: op name, attributes, ordered inputs, and its output spec."""

    id: int
    op: str
    inputs: tuple
    attrs: dict
    shape: tuple
    dtype: str
    name: str = ""
    # For "variable" nodes: the Variable object; for "constant": the numpy value.
    payload: object = field(default=None, repr=False, compare=False)

    def key(self):
        """A hashable identity of the computation, used by CSE."""
        return (self.op, self.inputs, _freeze(self.attrs), self.shape, self.dtype)


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


class Graph:
    """A traced computation: nodes, graph inputs, outputs, and state updates of variables."""

    _ids = itertools.count()

    def __init__(self, name="graph"):
        self.name = name
        self.nx = nx.DiGraph()
        self.inputs = []  # placeholder node ids, in call order
        self.outputs = []  # node ids returned by the computation
        self.output_names = []
        self.state_updates = {}  # variable node id -> node id holding its new value
        self._variable_nodes = {}  # id(Variable) -> node id
        self._const_nodes = {}

    # -- building ---------------------------------------------------------------------
    def add_node(self, op, inputs, attrs, shape, dtype, name="", payload=None):
        node_id = next(Graph._ids)
        node = Node(node_id, op, tuple(inputs), dict(attrs), tuple(shape), str(dtype), name, payload)
        self.nx.add_node(node_id, node=node)
        for position, src in enumerate(node.inputs):
            if self.nx.has_edge(src, node_id):
                self.nx.edges[src, node_id]["positions"].append(position)
            else:
                self.nx.add_edge(src, node_id, positions=[position])
        return node

    def add_placeholder(self, shape, dtype, name):
        node = self.add_node("placeholder", (), {}, shape, dtype, name=name)
        self.inputs.append(node.id)
        return node

    def variable_node(self, variable):
        """The node that reads `variable` (one per variable per graph)."""
        node_id = self._variable_nodes.get(id(variable))
        if node_id is None:
            node = self.add_node("variable", (), {}, variable.shape, variable.dtype,
                                 name=variable.path, payload=variable)
            node_id = self._variable_nodes[id(variable)] = node.id
        return self.node(node_id)

    def add_constant(self, value):
        node = self.add_node("constant", (), {}, value.shape, value.dtype.name, payload=value)
        return node

    # -- reading ----------------------------------------------------------------------
    def node(self, node_id) -> Node:
        return self.nx.nodes[node_id]["node"]

    def nodes(self):
        """All nodes in a deterministic topological order (ties broken by creation)."""
        return [self.node(i) for i in nx.lexicographical_topological_sort(self.nx)]

    def consumers(self, node_id):
        return list(self.nx.successors(node_id))

    @property
    def variables(self):
        """Variables read by the graph, in the order their nodes were created."""
        return [self.node(i).payload for i in sorted(self._variable_nodes.values())
                if i in self.nx]

    def variable_node_ids(self):
        """Node ids of the variable reads still in the graph, in creation order."""
        return sorted(i for i in self._variable_nodes.values() if i in self.nx)

    def roots(self):
        """Node ids the computation must keep: outputs and state updates."""
        return list(self.outputs) + list(self.state_updates.values())

    # -- editing (used by passes) -------------------------------------------------------
    def replace_uses(self, old_id, new_id):
        """Point every consumer, output and state update of `old_id` at `new_id`."""
        for consumer in list(self.nx.successors(old_id)):
            node = self.node(consumer)
            node.inputs = tuple(new_id if i == old_id else i for i in node.inputs)
            positions = self.nx.edges[old_id, consumer]["positions"]
            self.nx.remove_edge(old_id, consumer)
            if self.nx.has_edge(new_id, consumer):
                self.nx.edges[new_id, consumer]["positions"].extend(positions)
            else:
                self.nx.add_edge(new_id, consumer, positions=list(positions))
        self.outputs = [new_id if o == old_id else o for o in self.outputs]
        self.state_updates = {v: (new_id if u == old_id else u) for v, u in self.state_updates.items()}

    def remove_node(self, node_id):
        self.nx.remove_node(node_id)
        self.inputs = [i for i in self.inputs if i != node_id]

    def copy(self):
        clone = Graph(self.name)
        clone.nx = self.nx.copy()
        for node_id in clone.nx.nodes:
            old = clone.nx.nodes[node_id]["node"]
            clone.nx.nodes[node_id]["node"] = Node(old.id, old.op, old.inputs, dict(old.attrs),
                                                   old.shape, old.dtype, old.name, old.payload)
        for edge in clone.nx.edges:
            clone.nx.edges[edge]["positions"] = list(clone.nx.edges[edge]["positions"])
        clone.inputs = list(self.inputs)
        clone.outputs = list(self.outputs)
        clone.output_names = list(self.output_names)
        clone.state_updates = dict(self.state_updates)
        clone._variable_nodes = dict(self._variable_nodes)
        return clone

    def renumbered(self):
        """A copy whose node ids are 0, 1, ... in topological order.

        Ids come from a process-wide counter, so the same model traced in another process
        gets other ids; renumbering makes the generated source, and so the kernel cache key,
        the same in every process.
        """
        order = [node.id for node in self.nodes()]
        new_id = {old: new for new, old in enumerate(order)}
        clone = Graph(self.name)
        for old in order:
            node = self.node(old)
            clone.nx.add_node(new_id[old], node=Node(new_id[old], node.op, tuple(new_id[i] for i in node.inputs),
                                                     dict(node.attrs), node.shape, node.dtype, node.name,
                                                     node.payload))
        for src, dst, data in self.nx.edges(data=True):
            clone.nx.add_edge(new_id[src], new_id[dst], positions=list(data["positions"]))
        clone.inputs = [new_id[i] for i in self.inputs]
        clone.outputs = [new_id[i] for i in self.outputs]
        clone.output_names = list(self.output_names)
        clone.state_updates = {new_id[v]: new_id[u] for v, u in self.state_updates.items()}
        clone._variable_nodes = {key: new_id[i] for key, i in self._variable_nodes.items() if i in new_id}
        return clone

    # -- printing -----------------------------------------------------------------------
    def format(self):
        """A readable listing: one line per node, inputs by id, then outputs and state."""
        lines = [f"graph {self.name}:"]
        for node in self.nodes():
            shape = "(" + ", ".join("None" if d is None else str(d) for d in node.shape) + ")"
            args = ", ".join(f"%{i}" for i in node.inputs)
            attrs = ", ".join(f"{k}={v}" for k, v in node.attrs.items())
            attrs = "{" + attrs + "}" if attrs else ""
            label = f" '{node.name}'" if node.name else ""
            lines.append(f"  %{node.id}: {node.dtype}{shape} = {node.op}({args}){attrs}{label}")
        lines.append("  outputs: " + ", ".join(f"%{o}" for o in self.outputs))
        for var_id, new_id in self.state_updates.items():
            lines.append(f"  state: {self.node(var_id).name} <- %{new_id}")
        return "\n".join(lines)

    def __str__(self):
        return self.format()
