"""Many op cases in one compiled float64 graph: numba compile time dominates the suite, so
test files that check functions of one input compile them together (module-scoped)."""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.compiler.autodiff import gradients
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.ir import Graph, SymbolicTensor, tracing


def compile_cases(cases, graph_name, x_value, nan_as_zero=False):
    """Trace {name: (fn, differentiable)} on one float64 input shaped like x_value, with
    d sum(f(x) * w) / dx for the differentiable cases (w random; with nan_as_zero, NaN
    outputs count as 0 in the sum), compile the graph and run it on x_value.

    Returns (outputs, forward, grads, weights): every output array, and per case name the
    index of its forward output, the index of its gradient, and its w.
    """
    graph = Graph(graph_name)
    rng = np.random.default_rng(11)
    forward, grads, weights = {}, {}, {}
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder(x_value.shape, "float64", "x").id)
        for name, (fn, differentiable) in cases.items():
            y = fn(x)
            forward[name] = len(graph.outputs)
            graph.outputs.append(y.node_id)
            if differentiable:
                assert y.dtype == "float64", f"{name}: a float64 input gave {y.dtype}"
                weights[name] = rng.standard_normal(y.shape)
                counted = ops.where(ops.isnan(y), 0.0, y) if nan_as_zero else y
                loss = ops.sum(ops.multiply(counted, weights[name]))
                grads[name] = len(graph.outputs)
                graph.outputs += gradients(graph, loss.node_id, [x.node_id])
    executable = compile_graph(graph)
    with np.errstate(all="ignore"):
        outputs = [np.array(o) for o in executable(x_value)]
    return outputs, forward, grads, weights
