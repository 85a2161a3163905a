"""Reverse-mode autodiff: appends the backward graph to the forward graph, in the same IR.

It walks the graph from the target back to the requested sources and asks each node's
OpDef for its gradient rule, which records ordinary ops, so the backward graph is
optimized, fused and lowered exactly like the forward one.
"""

from __future__ import annotations

import networkx as nx

from kgraph import ops
from kgraph.ir import SymbolicTensor, tracing
from kgraph.ops import get_op
from kgraph.ops.elementwise import is_float
from kgraph.ops.registry import GradContext


def gradients(graph, target_id, source_ids):
    """Node ids of d(target)/d(source) for each source (a zeros constant when unconnected).

    The target must be a scalar; the rules record their ops into `graph`.
    """
    target = graph.node(target_id)
    if target.shape not in ((), (1,)):
        raise ValueError(f"gradients: the target must be a scalar, got shape {target.shape}")
    relevant = nx.ancestors(graph.nx, target_id) | {target_id}
    reachable = set()
    for source in source_ids:
        reachable |= nx.descendants(graph.nx, source) | {source}
    on_path = relevant & reachable
    order = [n for n in nx.lexicographical_topological_sort(graph.nx) if n in on_path]
    position = {n: k for k, n in enumerate(order)}
    with tracing(graph):
        upstream = {target_id: ops.ones_like(SymbolicTensor(graph, target_id))}
        for node_id in reversed(order):
            if node_id not in upstream:
                continue
            node = graph.node(node_id)
            if node.op in ("placeholder", "variable", "constant"):
                continue
            opdef = get_op(node.op)
            inputs = [SymbolicTensor(graph, i) for i in node.inputs]
            if not opdef.differentiable or opdef.grad is None:
                if "grad_error" in opdef.extra:
                    raise NotImplementedError(opdef.extra["grad_error"])
                continue
            if "siblings" in opdef.extra:
                context = _sibling_context(graph, node, opdef, inputs, upstream, position)
                if context is None:
                    continue
            else:
                context = GradContext(inputs, SymbolicTensor(graph, node_id), upstream[node_id], node.attrs)
            input_grads = opdef.grad(context)
            if len(input_grads) != len(inputs):
                raise RuntimeError(f"gradient rule of '{node.op}' returned {len(input_grads)} "
                                   f"gradients for {len(inputs)} inputs")
            for src, grad in zip(node.inputs, input_grads):
                if grad is None or src not in on_path:
                    continue
                if tuple(grad.shape) != tuple(graph.node(src).shape):
                    raise RuntimeError(f"gradient rule of '{node.op}' gave shape {grad.shape} "
                                       f"for an input of shape {graph.node(src).shape}")
                upstream[src] = grad if src not in upstream else ops.add(upstream[src], grad)
        results = []
        for source in source_ids:
            if source in upstream:
                grad = upstream[source]
                results.append(grad.node_id)
            else:
                results.append(ops.zeros_like(SymbolicTensor(graph, source)).node_id)
    return results


def _sibling_context(graph, node, opdef, inputs, upstream, position):
    """The context of a multi-result op (control flow: one node per result) with the upstream
    gradients of all its results, as lists by result index; None until the walk reaches the
    first of them in topological order, where every result's upstream is complete."""
    results = opdef.extra["siblings"](graph, node)
    reached = [r for r in results if r is not None and r in upstream]
    if min(reached, key=position.__getitem__) != node.id:
        return None
    outputs = [None if r is None else SymbolicTensor(graph, r) for r in results]
    grads = [upstream.get(r) if r is not None else None for r in results]
    return GradContext(inputs, outputs, grads, node.attrs)


def jvp(graph, output_ids, source_ids, tangent_ids):
    """Node ids of the forward-mode derivative J t of each output along the tangents (one per
    source), by transposing reverse mode: for cotangents u of the outputs, g(u) = J^T u is
    linear in u, so J t = d<g(u), t>/du. Outputs of a non-float dtype get zeros."""
    with tracing(graph):
        outputs = [SymbolicTensor(graph, o) for o in output_ids]
        floats = [k for k, y in enumerate(outputs) if is_float(y.dtype)]
        results = [ops.zeros_like(y).node_id for y in outputs]
        if not floats:
            return results
        # fresh nodes standing for u (the result never reads their value)
        cotangents = {k: ops.stop_gradient(ops.zeros_like(outputs[k])) for k in floats}
        pairing = _total([ops.sum(ops.multiply(outputs[k], cotangents[k])) for k in floats])
        pulled = [SymbolicTensor(graph, g) for g in gradients(graph, pairing.node_id, list(source_ids))]
        tangents = [ops.cast(SymbolicTensor(graph, t), g.dtype) for g, t in zip(pulled, tangent_ids)]
        transposed = _total([ops.sum(ops.multiply(g, t)) for g, t in zip(pulled, tangents)])
        pushed = gradients(graph, transposed.node_id, [cotangents[k].node_id for k in floats])
        for k, node_id in zip(floats, pushed):
            results[k] = node_id
        return results


def _total(terms):
    total = terms[0]
    for term in terms[1:]:
        total = ops.add(total, term)
    return total
