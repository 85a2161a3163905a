"""The Triton backend: the fusion groups of the numba backend rendered to Triton kernels.

`compile_graph_triton(graph)` runs the same passes as `compile_graph` (optimize, fuse,
plan memory), renders one @triton.jit kernel per group into a module written to the
kgraph kernel cache, and returns a `kgraph.runtime.gpu.GpuExecutable`. It needs Triton
(the `gpu` extra) and either an NVIDIA GPU or TRITON_INTERPRET=1, which runs the kernels
in Triton's CPU interpreter (how the tests run them without a GPU).
"""

from __future__ import annotations

import os


def compile_graph_triton(graph, log=None, precision=None):
    """Optimize a copy of `graph` and lower it to Triton kernels.

    precision: how float32 matmuls and convolutions use the GPU: "tf32x3" (the default:
    three TF32 tensor-core products, about float32's accuracy), "ieee" (float32 FMAs, no
    tensor cores: exact but several times slower) or "tf32" (one TF32 product: fastest,
    about 1e-3 relative error). KGRAPH_MATMUL_PRECISION sets the default. The CPU
    interpreter computes tl.dot in float32 whatever the setting.
    """
    from kgraph.compiler.passes.expand_control import expand_control_flow
    from kgraph.compiler.passes.fusion import format_groups, fuse
    from kgraph.compiler.passes.memory import plan_memory
    from kgraph.compiler.passes.pipeline import _dump_log, optimize
    from kgraph.runtime import gpu
    from kgraph.runtime.cache import load_module

    gpu.import_triton()
    interpret = gpu.interpreting()
    if not interpret:
        gpu.require_gpu()
    from kgraph.compiler.lower.triton.codegen import render_module

    precision = precision or os.environ.get("KGRAPH_MATMUL_PRECISION") or "tf32x3"
    log = log or _dump_log()
    graph = graph.copy()
    expand_control_flow(graph)  # no loops or branches on Triton yet: unrolled and selected
    graph = optimize(graph, log)
    groups = fuse(graph)
    if log:
        log("fusion groups", format_groups(graph, groups))
    plan = plan_memory(graph, groups)
    source, program = render_module(graph, groups, plan, precision=precision, interpret=interpret)
    if log:
        log("triton source", source)
    module = load_module(source, prefix="tt")
    executable = gpu.GpuExecutable(graph, program, module, source, plan, interpret=interpret)
    executable.groups = groups
    return executable


__all__ = ["compile_graph_triton"]
