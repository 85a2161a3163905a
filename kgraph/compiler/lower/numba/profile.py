"""Where a compiled step spends its time: every kernel call of `entry`, timed in place.

`profile(executable, inputs)` rebuilds the executable's module with two clocks read around
each kernel call of `entry`: the cycle counter (the TSC, through LLVM's readcyclecounter:
elapsed time) and the process CPU clock (clock_gettime: the work of all threads, which
other processes' load does not inflate). It runs it and returns one row per fusion group:
kind, ops, result shape, seconds and CPU seconds per call. The profiled module is a debug
build next to the real one; the executable is not changed.
"""

from __future__ import annotations

import re
import time

import numpy as np

_CALL = re.compile(r"^(\s+)(k\d+_\w+)\((.*)\)$")

HEADER = '''
from kgraph.compiler.lower.numba.profile import cpu_ns, cycles
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


def _make_cpu_clock():
    from numba import njit, types

    clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.intp))
    process_cputime = 2  # CLOCK_PROCESS_CPUTIME_ID (Linux)

    @njit(cache=True)
    def read():
        spec = np.empty(2, np.int64)
        clock_gettime(process_cputime, spec.ctypes.data)
        return spec[0] * 1_000_000_000 + spec[1]

    return read


cpu_ns = _make_cpu_clock()  # CPU time of the whole process (all threads), in ns


def _instrument(source):
    """The module source with `entry` taking a `timings` array and timing each kernel call."""
    head, entry = source.split("def entry(", 1)
    signature, body = entry.split("):\n", 1)
    lines, index = [], 0
    for line in body.splitlines():
        match = _CALL.match(line)
        if match:
            indent = match.group(1)
            lines += [f"{indent}_c0 = cpu_ns()", f"{indent}_t0 = cycles()", line,
                      f"{indent}timings[{index}] += cycles() - _t0", f"{indent}cpu[{index}] += cpu_ns() - _c0"]
            index += 1
        else:
            lines.append(line)
    instrumented = head.replace("from numba import", HEADER.strip() + "\nfrom numba import", 1)
    return instrumented + f"def entry({signature}, timings, cpu):\n" + "\n".join(lines) + "\n", index


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

    Returns (rows, seconds per step, CPU seconds per step), measured around the whole
    profiled entry; each row a dict: index, kind, ops, shape, seconds and cpu_seconds (per
    step), share and cpu_share (of the kernels' totals).
    """
    from kgraph.runtime.cache import load_module

    source, count = _instrument(executable.source)
    module = load_module(source, prefix="kgprof")
    arrays = executable._checked(inputs)
    timings = np.zeros(count, np.int64)
    cpu = np.zeros(count, np.int64)

    def run():
        state = [v._value for v in executable.variables]
        arenas = executable._arenas_for(executable.batch_of(arrays))
        module.entry(*arrays, *state, *executable.constants, *arenas, timings, cpu)

    for _ in range(warmup):
        run()
    timings[:] = 0
    cpu[:] = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        run()
    total = (time.perf_counter() - start) / steps
    cpu_total = (time.process_time() - cpu_start) / steps
    rate = _cycles_per_second()
    graph = executable.graph
    groups = [g for g in executable.groups if g.kind != "view"]
    kernel_total = timings.sum() / rate / steps
    rows = []
    cpu_kernels = cpu.sum() / 1e9 / steps
    for index, (group, ticks, work) in enumerate(zip(groups, timings, cpu)):
        seconds = ticks / rate / steps
        rows.append({"index": index, "kind": group.kind, "ops": "+".join(graph.node(n).op for n in group.nodes),
                     "shape": graph.node(group.output).shape, "seconds": seconds,
                     "share": seconds / kernel_total if kernel_total else 0.0,
                     "cpu_seconds": work / 1e9 / steps,
                     "cpu_share": work / 1e9 / steps / cpu_kernels if cpu_kernels else 0.0})
    return rows, total, cpu_total
