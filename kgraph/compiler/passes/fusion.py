"""Fusion: partitions a graph's computation into groups, each one kernel.

- elementwise: a tree of elementwise ops with one result, rendered as one loop;
- matmul: a matmul and the elementwise epilogue that consumes it (bias, activation,
  residual add), applied in place on the product while it is hot in cache;
- kernel with an epilogue: the same for other ops that declare extra["epilogue"]
  (convolutions), whose templates apply it block by block;
- reduction: a reduction and the elementwise prologue that produces its input;
- view: a reshape, which costs nothing (it aliases its input);
- control: every result of a loop or branch (kgraph.ops.control_flow), one kernel;
- kernel: any other op, with its own template.

A producer joins its consumer's group only when every reader of it is in that group, so
nothing is computed twice. An elementwise group may also store such a producer when the
graph needs its value (a state update such as Adam's moments): one loop then computes
and writes every result of an optimizer update.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kgraph.ops import get_op
from kgraph.ops.registry import ELEMENTWISE
from kgraph.ops.shapes import num_elements

SOURCES = ("placeholder", "variable", "constant")


@dataclass
class Group:
    kind: str
    nodes: list  # node ids in topological order; the last one is the group's result
    inputs: list = field(default_factory=list)  # external value ids read, in first-use order
    extra_outputs: list = field(default_factory=list)  # members stored besides the result

    @property
    def output(self):
        return self.nodes[-1]

    @property
    def outputs(self):
        return [self.output] + self.extra_outputs


def _is_elementwise(node):
    return node.op not in SOURCES and get_op(node.op).kind == ELEMENTWISE


def _takes_epilogue(node):
    """Whether an elementwise consumer may be computed in place on this node's result, in
    its kernel: a 2-D matmul, or an op whose OpDef sets extra["epilogue"] (its template
    then applies the epilogue, e.g. a convolution's bias and activation per block)."""
    if node.op in SOURCES:
        return False
    if node.op == "matmul":
        return len(node.shape) == 2
    return bool(get_op(node.op).extra.get("epilogue"))


def fuse(graph):
    """The graph's groups, in an order that respects data dependencies."""
    order = [n.id for n in graph.nodes()]
    position = {node_id: i for i, node_id in enumerate(order)}
    roots = set(graph.roots())
    assigned = {}
    groups = []

    def single_reader(node_id):
        readers = graph.consumers(node_id)
        return len(readers) == 1 and node_id not in roots and len(
            graph.nx.edges[node_id, readers[0]]["positions"]) == 1

    def readers_inside(node_id, members):
        return all(reader in members for reader in graph.consumers(node_id))

    def absorb(members, node_id, shape, allowed_input, extras=None):
        """Pull elementwise producers of `node_id` into `members` (same iteration shape).

        With `extras` (a list), a producer the graph keeps as a result may join too; it
        is then stored by the group as an extra output.
        """
        for src in graph.node(node_id).inputs:
            producer = graph.node(src)
            if src in assigned or src in members or not _is_elementwise(producer):
                continue
            if producer.shape != shape or not readers_inside(src, members):
                continue
            if src in roots and extras is None:
                continue
            if not all(allowed_input(graph.node(i)) for i in producer.inputs
                       if not _is_elementwise(graph.node(i)) or graph.node(i).shape != shape):
                continue
            members.add(src)
            if src in roots:
                extras.append(src)
            absorb(members, src, shape, allowed_input, extras)
            # A producer seen earlier may have all its readers inside now.
            absorb(members, node_id, shape, allowed_input, extras)

    for node_id in reversed(order):
        node = graph.node(node_id)
        if node.op in SOURCES or node_id in assigned:
            continue
        kind = get_op(node.op).kind
        members = {node_id}
        extras = []
        if kind == ELEMENTWISE:
            absorb(members, node_id, node.shape, lambda _: True, extras)
            group_kind = "elementwise"
            heavy = [i for n in members for i in graph.node(n).inputs
                     if _takes_epilogue(graph.node(i)) and i not in assigned
                     and graph.node(i).shape == node.shape and graph.node(i).dtype == node.dtype
                     and single_reader(i)]
            if heavy and not extras:
                members.add(heavy[0])
                group_kind = "matmul" if graph.node(heavy[0]).op == "matmul" else "kernel"
        elif kind == "reduction" and node.op not in ("argmax", "argmin"):
            reduced_shape = graph.node(node.inputs[0]).shape
            absorb(members, node_id, reduced_shape,
                   lambda n, shape=reduced_shape: n.shape == shape or num_elements(n.shape) == 1)
            # The kernel takes the reduced extents from an input of the reduced shape; a
            # prologue that reads only scalars (sum(ones_like(x))) stays its own group.
            if not any(graph.node(i).shape == reduced_shape for m in members
                       for i in graph.node(m).inputs if i not in members):
                members = {node_id}
            group_kind = "reduction"
        elif "siblings" in get_op(node.op).extra:
            # Control flow: one group computes every result of the loop or branch.
            results = [r for r in get_op(node.op).extra["siblings"](graph, node) if r is not None]
            members = set(results)
            extras = [r for r in results if r != node_id]
            group_kind = "control"
        elif get_op(node.op).view:
            group_kind = "view"
        elif node.op == "matmul":
            group_kind = "matmul"
        else:
            group_kind = "kernel"
        ordered = sorted(members, key=position.__getitem__)
        group = Group(group_kind, ordered, extra_outputs=sorted(extras, key=position.__getitem__))
        for member in ordered:
            assigned[member] = group
            for src in graph.node(member).inputs:
                if src not in members and src not in group.inputs:
                    group.inputs.append(src)
        groups.append(group)
    # A control group runs where its first result is due: its inputs (shared by every result)
    # are ready there, and readers of any result come later.
    groups.sort(key=lambda g: min(position[o] for o in g.outputs) if g.kind == "control" else position[g.output])
    return groups


def format_groups(graph, groups):
    """One line per group: kind, member ops, result."""
    lines = []
    for i, group in enumerate(groups):
        ops = " -> ".join(graph.node(n).op for n in group.nodes)
        results = ", ".join(f"%{o}" for o in group.outputs)
        lines.append(f"  group {i} [{group.kind}] {ops} => {results} {graph.node(group.output).shape}")
    return "\n".join(lines)
