"""Where a compiled step spends its time: every kernel call of `entry`, timed in place.

`profile(executable, inputs)` rebuilds the executable's module with a cycle counter read
around each kernel call of `entry` (the TSC, through LLVM's readcyclecounter), runs it,
and returns one row per fusion group: kind, ops, result shape and seconds per call. The
profiled module is a debug build next to the real one; the executable is not changed.
"""

from __future__ import annotations

import re
import time

import numpy as np

_CALL = re.compile(r"^(\s+)(k\d+_\w+)\((.*)\)$")

HEADER = '''
from kgraph.compiler.lower.numba.profile import cycles
'''


def _make_intrinsic():
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def read_cycles(typingctx):
        def codegen(context, builder, signature, args):
            function = builder.module.declare_intrinsic("llvm.readcyclecounter",
                                                        fnty=ir.FunctionType(ir.IntType(64), []))
            return builder.call(function, [])
        return types.int64(), codegen

    return read_cycles


cycles = _make_intrinsic()  # the TSC, inside numba-compiled code


def _instrument(source):
    """The module source with `entry` taking a `timings` array and timing each kernel call."""
    head, entry = source.split("def entry(", 1)
    signature, body = entry.split("):\n", 1)
    lines, index = [], 0
    for line in body.splitlines():
        match = _CALL.match(line)
        if match:
            indent = match.group(1)
            lines += [f"{indent}_t0 = cycles()", line, f"{indent}timings[{index}] += cycles() - _t0"]
            index += 1
        else:
            lines.append(line)
    instrumented = head.replace("from numba import", HEADER.strip() + "\nfrom numba import", 1)
    return instrumented + f"def entry({signature}, timings):\n" + "\n".join(lines) + "\n", index


def _cycles_per_second():
    from numba import njit

    @njit
    def read():
        return cycles()

    read()
    start, c0 = time.perf_counter(), read()
    time.sleep(0.2)
    return (read() - c0) / (time.perf_counter() - start)


def profile(executable, inputs, steps=20, warmup=2):
    """Per-group time of `executable` on `inputs` (one array per placeholder).

    Returns (rows, total seconds per step measured around the whole profiled entry), each
    row a dict: index, kind, ops, shape, seconds (per step), share (of the kernel total).
    """
    from kgraph.runtime.cache import load_module

    source, count = _instrument(executable.source)
    module = load_module(source, prefix="kgprof")
    arrays = executable._checked(inputs)
    timings = np.zeros(count, np.int64)

    def run():
        state = [v._value for v in executable.variables]
        arenas = executable._arenas_for(executable.batch_of(arrays))
        module.entry(*arrays, *state, *executable.constants, *arenas, timings)

    for _ in range(warmup):
        run()
    timings[:] = 0
    start = time.perf_counter()
    for _ in range(steps):
        run()
    total = (time.perf_counter() - start) / steps
    rate = _cycles_per_second()
    graph = executable.graph
    groups = [g for g in executable.groups if g.kind != "view"]
    kernel_total = timings.sum() / rate / steps
    rows = []
    for index, (group, ticks) in enumerate(zip(groups, timings)):
        seconds = ticks / rate / steps
        rows.append({"index": index, "kind": group.kind, "ops": "+".join(graph.node(n).op for n in group.nodes),
                     "shape": graph.node(group.output).shape, "seconds": seconds,
                     "share": seconds / kernel_total if kernel_total else 0.0})
    return rows, total
