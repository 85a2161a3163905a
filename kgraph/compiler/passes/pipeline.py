"""The pass pipeline: simplify to a fixed point, check shapes, rewrite conv-pool chains (numba),
fuse, plan memory, lower."""

from __future__ import annotations

import os

from kgraph.compiler.passes.conv_pool import fuse_conv_pool
from kgraph.compiler.passes.fusion import format_groups, fuse
from kgraph.compiler.passes.memory import plan_memory
from kgraph.compiler.passes.shape_inference import infer_shapes
from kgraph.compiler.passes.simplify import (
    eliminate_common_subexpressions,
    eliminate_dead_code,
    fold_constants,
    simplify_algebra,
)

SIMPLIFY_PASSES = (fold_constants, simplify_algebra, eliminate_common_subexpressions, eliminate_dead_code)


def optimize(graph, log=None):
    """Simplify `graph` in place until no pass changes it; `log(stage, text)` sees each stage."""
    if log:
        log("traced", graph.format())
    for _ in range(20):
        changes = 0
        for simplify in SIMPLIFY_PASSES:
            changed = simplify(graph)
            if changed and log:
                log(f"{simplify.__name__} ({changed} changes)", graph.format())
            changes += changed
        if not changes:
            break
    infer_shapes(graph)
    return graph


def _dump_log():
    if os.environ.get("KGRAPH_DUMP"):
        return lambda stage, text: print(f"== {stage}\n{text}")
    return None


def compile_for_device(graph, device=None):
    """Lower `graph` for the compute device (kgraph.config.get_device() unless given):
    numba kernels on "cpu", Triton kernels on "gpu". Both executables take and return the
    same arrays and update the graph's variables, so callers need not know which ran."""
    from kgraph.config import get_device

    if (device or get_device()) == "gpu":
        from kgraph.compiler.lower.triton import compile_graph_triton

        return compile_graph_triton(graph)
    return compile_graph(graph)


def compile_graph(graph, log=None):
    """Optimize a copy of `graph` and lower it with the numba backend."""
    from kgraph.compiler.lower.numba import render_module
    from kgraph.runtime.cache import load_module
    from kgraph.runtime.cpu import CpuExecutable

    log = log or _dump_log()
    graph = optimize(graph.copy(), log)
    if fuse_conv_pool(graph) and log:
        log("fuse_conv_pool", graph.format())
    graph = graph.renumbered()
    groups = fuse(graph)
    if log:
        log("fusion groups", format_groups(graph, groups))
    plan = plan_memory(graph, groups)
    source, signature = render_module(graph, groups, plan)
    if log:
        log("numba source", source)
    module = load_module(source)
    executable = CpuExecutable(graph, signature, plan, module.entry, source)
    executable.groups = groups
    return executable
