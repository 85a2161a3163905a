"""Simplification: dead-code elimination, common subexpressions, constant folding, algebra.

Each pass edits the graph in place and returns the number of changes it made, so the
pipeline can iterate to a fixed point.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from kgraph.ir import Graph
from kgraph.ops import get_op
from kgraph.ops.shapes import num_elements

FOLD_LIMIT = 4096  # constant folding keeps results up to this many elements


def eliminate_dead_code(graph: Graph) -> int:
    """Drop every node that no output or state update depends on (inputs stay)."""
    live = set(graph.state_updates)  # a variable that is written but never read keeps its node
    for root in graph.roots():
        live |= nx.ancestors(graph.nx, root) | {root}
    dead = [n for n in graph.nx.nodes if n not in live and n not in graph.inputs]
    for node_id in dead:
        graph.nx.remove_node(node_id)
    return len(dead)


def _constant_key(node):
    value = node.payload
    if value.size > FOLD_LIMIT:
        return ("constant-object", id(value))
    return ("constant", value.dtype.str, value.shape, value.tobytes())


def eliminate_common_subexpressions(graph: Graph) -> int:
    """Merge nodes that apply the same op with the same attrs to the same inputs."""
    seen, merged = {}, 0
    for node in graph.nodes():
        if node.op in ("placeholder", "variable"):
            continue
        key = _constant_key(node) if node.op == "constant" else node.key()
        if key in seen:
            graph.replace_uses(node.id, seen[key])
            graph.nx.remove_node(node.id)
            merged += 1
        else:
            seen[key] = node.id
    return merged


def fold_constants(graph: Graph) -> int:
    """Evaluate ops whose inputs are all constants, when the result is small."""
    folded = 0
    for node in graph.nodes():
        if node.op in ("placeholder", "variable", "constant") or not node.inputs:
            continue
        producers = [graph.node(i) for i in node.inputs]
        if any(p.op != "constant" for p in producers):
            continue
        size = num_elements(node.shape)
        if size is None or size > FOLD_LIMIT:
            continue
        value = np.asarray(get_op(node.op).reference(node.attrs, *[p.payload for p in producers]))
        if value.shape != node.shape:
            raise ValueError(f"constant folding: the reference of '{node.op}' gave shape {value.shape}, "
                             f"but its shape rule says {node.shape} (attrs {node.attrs})")
        constant = graph.add_constant(np.array(value, dtype=node.dtype, order="C"))
        graph.replace_uses(node.id, constant.id)
        graph.nx.remove_node(node.id)
        folded += 1
    return folded


def _constant_equals(graph, node_id, scalar):
    node = graph.node(node_id)
    return node.op == "constant" and node.payload.size >= 1 and bool(np.all(node.payload == scalar))


def simplify_algebra(graph: Graph) -> int:
    """Identities that keep shape and dtype: x*1, x+0, x-0, x/1, --x, identity casts,
    stop_gradient and custom_gradient (after autodiff they are the identity), reshape chains, and 2-D
    transposes folded into matmul's transpose flags."""
    changes = 0
    for node in graph.nodes():
        if node.id not in graph.nx:
            continue
        replacement = None
        ins = node.inputs

        def same(i, node=node):
            return graph.node(i).shape == node.shape and graph.node(i).dtype == node.dtype

        identity_cast = node.op == "cast" and graph.node(ins[0]).dtype == node.dtype
        if node.op in ("stop_gradient", "custom_gradient") or identity_cast:
            replacement = ins[0]
        elif node.op in ("multiply",):
            for a, b in ((0, 1), (1, 0)):
                if _constant_equals(graph, ins[b], 1) and same(ins[a]):
                    replacement = ins[a]
                    break
        elif node.op == "add":
            for a, b in ((0, 1), (1, 0)):
                if _constant_equals(graph, ins[b], 0) and same(ins[a]):
                    replacement = ins[a]
                    break
        elif node.op in ("subtract",) and _constant_equals(graph, ins[1], 0) and same(ins[0]):
            replacement = ins[0]
        elif node.op == "divide" and _constant_equals(graph, ins[1], 1) and same(ins[0]):
            replacement = ins[0]
        elif node.op == "negative" and graph.node(ins[0]).op == "negative":
            replacement = graph.node(ins[0]).inputs[0]
        elif node.op == "reshape":
            source = graph.node(ins[0])
            if source.shape == node.shape and None not in node.shape:
                replacement = ins[0]
            elif source.op == "reshape":
                _rewire(graph, node, 0, source.inputs[0])
                changes += 1
        elif node.op == "matmul":
            for position, flag in ((0, "transpose_a"), (1, "transpose_b")):
                source = graph.node(node.inputs[position])
                if source.op == "transpose" and source.attrs["perm"] == (1, 0):
                    node.attrs[flag] = not node.attrs.get(flag, False)
                    _rewire(graph, node, position, source.inputs[0])
                    changes += 1
        if replacement is not None:
            graph.replace_uses(node.id, replacement)
            graph.nx.remove_node(node.id)
            changes += 1
    return changes


def _rewire(graph, node, position, new_source):
    """Make input `position` of `node` read `new_source`."""
    old_source = node.inputs[position]
    inputs = list(node.inputs)
    inputs[position] = new_source
    node.inputs = tuple(inputs)
    edge = graph.nx.edges[old_source, node.id]
    edge["positions"].remove(position)
    if not edge["positions"]:
        graph.nx.remove_edge(old_source, node.id)
    if graph.nx.has_edge(new_source, node.id):
        graph.nx.edges[new_source, node.id]["positions"].append(position)
    else:
        graph.nx.add_edge(new_source, node.id, positions=[position])
