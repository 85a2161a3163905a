"""GPU check: the Triton backend on a real NVIDIA GPU, in one prepared run.

1. Every registered op, on every sample case of its OpDef, compiled with Triton and run on
   the GPU against its numpy reference (static shapes and the batch dimension None at
   batch sizes 2, 5, 1), and its backward graph against the reference interpreter: the
   checks tests/test_triton.py makes in the CPU interpreter. Cases are spread over worker
   processes (Triton compiles each kernel once; the GPU is shared).
2. Training steps per second of the MLP (784-256-256-10) and the small CNN (Conv 32, pool,
   Conv 64, pool, Dense 128, Dense 10), batch 128, Adam: the Triton step on the GPU
   (variables kept on the device), the numba step on the CPU, and PyTorch eager on CUDA
   when torch is installed with CUDA.

Prints one JSON line per result. Exits with status 2 and a message when there is no GPU
(or no Triton). Run: python bench/gpu_check.py [--steps 50] [--no-ops] [--workers 8];
`--ops-seconds S` bounds the op checks (a lease's time is short), `--failures F` writes
each failing case's messages to a JSON file, `--models`/`--precisions` pick the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import zlib

import numpy as np

BATCHES = (2, 5, 1)
BATCH = 128


def emit(**record):
    print(json.dumps(record), flush=True)


# -- 1. op checks ------------------------------------------------------------------------------------
def _rng(*key):
    return np.random.default_rng(zlib.crc32("/".join(str(k) for k in key).encode()))


def _cases():
    from kgraph.compiler.lower.triton.codegen import renders
    from kgraph.ops import OPS

    cases = []
    for name in sorted(OPS):
        if OPS[name].samples is None or not renders(OPS[name]):  # (tests/test_registry.py's KNOWN_GAPS)
            continue
        for index, (inputs, attrs) in enumerate(OPS[name].samples(_rng(name))):
            cases.append((name, index, [np.asarray(x) for x in inputs], dict(attrs)))
    return cases


def _reference(name, inputs, attrs):
    from kgraph.ops import OPS
    from kgraph.ops.registry import Spec

    opdef = OPS[name]
    _, dtype = opdef.infer(attrs, *[Spec(x.shape, x.dtype.name) for x in inputs])
    return np.asarray(opdef.reference(attrs, *inputs)).astype(dtype, copy=False)


def _with_batch(x, n):
    rows = x.shape[0]
    taken = x[np.arange(n) % rows]
    if x.dtype.kind == "f":
        scale = 1.0 + 0.25 * (np.arange(n) // rows)
        taken = (taken * scale.reshape((-1,) + (1,) * (x.ndim - 1))).astype(x.dtype)
    return taken


def _check_case(name, index, inputs, attrs, precision):
    """Failures (strings) of one case: forward static and dynamic, and backward."""
    from kgraph import ops
    from kgraph.compiler.autodiff import gradients
    from kgraph.compiler.lower.triton import compile_graph_triton
    from kgraph.ir import Graph, SymbolicTensor, tracing
    from kgraph.ops import OPS
    from kgraph.ops.registry import Spec, bind
    from kgraph.runtime.reference import evaluate

    opdef = OPS[name]
    failures = []

    def build(shapes, with_grads):
        graph = Graph(f"gpu_{name}_{index}")
        with tracing(graph):
            symbols = [SymbolicTensor(graph, graph.add_placeholder(s, x.dtype.name, f"in{i}").id)
                       for i, (s, x) in enumerate(zip(shapes, inputs))]
            y = bind(name, symbols, **attrs)
            graph.outputs = [y.node_id]
            if with_grads:
                w = SymbolicTensor(graph, graph.add_placeholder(y.shape, y.dtype, "w").id)
                loss = ops.sum(ops.multiply(y, w))
                floats = [i for i, x in enumerate(inputs) if x.dtype.kind == "f"]
                graph.outputs += gradients(graph, loss.node_id, [symbols[i].node_id for i in floats])
        return graph

    def compare(actual, expected, what, rtol, atol):
        if actual.shape != expected.shape or actual.dtype != expected.dtype:
            failures.append(f"{what}: {actual.shape} {actual.dtype}, expected {expected.shape} {expected.dtype}")
        elif expected.dtype.kind in "biu":
            if not np.array_equal(actual, expected):
                failures.append(f"{what}: values differ")
        elif not np.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True):
            error = float(np.max(np.abs(actual.astype(np.float64) - expected)))
            failures.append(f"{what}: max abs error {error:.3g}")

    try:
        variants = [([x.shape for x in inputs], [inputs])]
        lead = next((x for x in inputs if x.ndim and x.dtype.kind in "fb"), None)
        if lead is not None:
            batched = [i for i, x in enumerate(inputs)
                       if x.ndim == lead.ndim and x.shape[0] == lead.shape[0] and x.dtype.kind in "fb"]
            shapes = [(None,) + x.shape[1:] if i in batched else x.shape for i, x in enumerate(inputs)]
            try:
                opdef.infer(attrs, *[Spec(s, x.dtype.name) for s, x in zip(shapes, inputs)])
                feeds = [[_with_batch(x, n) if i in batched else x for i, x in enumerate(inputs)] for n in BATCHES]
                for feed in feeds:
                    _reference(name, feed, attrs)
                variants.append((shapes, feeds))
            except Exception:
                pass
        for shapes, feeds in variants:
            executable = compile_graph_triton(build(shapes, False), precision=precision)
            for feed in feeds:
                try:
                    actual = np.array(executable(*feed)[0])
                except ValueError as error:  # a batch below a fixed slice's end is refused (numpy clips)
                    if executable.program.min_batch and "smaller than the slice end" in str(error):
                        continue
                    raise
                compare(actual, _reference(name, feed, attrs), f"{name}-{index} forward {[x.shape for x in feed]}",
                        1e-4, 1e-5)
        out = _reference(name, inputs, attrs)
        floats = [x for x in inputs if x.dtype.kind == "f"]
        if opdef.differentiable and opdef.grad is not None and out.dtype.kind == "f" and floats:
            graph = build([x.shape for x in inputs], True)
            feed = list(inputs) + [_rng(name, index, "w").standard_normal(out.shape).astype(out.dtype)]
            actual = compile_graph_triton(graph, precision=precision)(*feed)
            expected = evaluate(graph, feed)[0]
            for k, (a, e) in enumerate(zip(actual, expected)):
                scale = float(np.max(np.abs(e), initial=1.0))
                compare(np.array(a), e, f"{name}-{index} backward output {k}", 1e-4, 1e-5 * scale)
    except Exception:
        failures.append(f"{name}-{index}: {traceback.format_exc(limit=3)[-1500:]}")
    return failures


def _check_chunk(chunk, precision):
    cases = {(name, index): (inputs, attrs) for name, index, inputs, attrs in _cases()}
    results = []
    for name, index in chunk:
        inputs, attrs = cases[name, index]
        results.append(((name, index), _check_case(name, index, inputs, attrs, precision)))
    return results


def run_op_checks(workers, precision, seconds=None, failures_path=None):
    """Check every op case on the GPU, in small chunks over `workers` processes; with
    `seconds`, stop at that deadline and report how many cases were checked."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    keys = [(name, index) for name, index, _, _ in _cases()]
    count = max(1, min(len(keys), 4 * workers, len(keys) // 4))  # small chunks, each a mix of ops
    chunks = [keys[k::count] for k in range(count)]
    start = time.perf_counter()
    deadline = start + seconds if seconds else None
    results = []
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    pending = {pool.submit(_check_chunk, chunk, precision) for chunk in chunks}
    while pending:
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and left <= 0:
            break
        done, pending = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
        for future in done:
            try:
                results += future.result()
            except Exception:
                results.append((("worker", len(results)), [traceback.format_exc(limit=3)[-800:]]))
    for future in pending:
        future.cancel()
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()  # a chunk still running at the deadline is abandoned
    pool.shutdown(wait=False, cancel_futures=True)
    failed = [(key, f) for key, f in results if f]
    emit(check="ops on the GPU", precision=precision, cases=len(keys), checked=len(results),
         passed=len(results) - len(failed), failed=len(failed), seconds=round(time.perf_counter() - start, 1),
         failures=[f"{name}-{index}: {f[0][:300]}" for (name, index), f in failed[:20]])
    if failures_path:
        with open(failures_path, "w") as file:
            json.dump({f"{name}-{index}": f for (name, index), f in failed}, file, indent=1)
    return not failed and len(results) == len(keys)


# -- 2. training steps -----------------------------------------------------------------------------------
def build_model(kind):
    import kgraph as keras
    from kgraph import layers

    if kind == "mlp":
        model = keras.Sequential([keras.Input((784,)), layers.Dense(256, activation="relu"),
                                  layers.Dense(256, activation="relu"), layers.Dense(10)])
        x_spec = ((784,), "float32")
    else:
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(10)])
        x_spec = ((28, 28, 1), "float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    from kgraph.exporters.onnx import trace

    graph = trace(model, "train", (x_spec,), (((), "int32"),))
    return model, graph, x_spec[0]


def _timed(step, steps, synchronize=lambda: None):
    step()
    step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return steps / (time.perf_counter() - start)


def bench_training(kind, steps, precisions):
    from kgraph.compiler.lower.triton import compile_graph_triton
    from kgraph.compiler.passes.pipeline import compile_graph

    model, graph, shape = build_model(kind)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH,) + shape).astype(np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int32)
    start_values = [np.array(v._value) for v in graph.variables]

    def reset():
        for v, value in zip(graph.variables, start_values):
            v._value[...] = value

    cpu_losses = []
    try:  # the CPU baseline; its failure must not hide the GPU's numbers
        cpu_step = compile_graph(graph)
        cpu_losses = [float(cpu_step(x, y)[0]) for _ in range(3)]  # the first steps, from the start values
        cpu_rate = _timed(lambda: cpu_step(x, y), max(3, steps // 10))
        emit(bench=f"{kind} training step", device="cpu (numba)", batch=BATCH, steps_per_s=round(cpu_rate, 2),
             samples_per_s=round(cpu_rate * BATCH), cpus=os.cpu_count())
    except Exception:
        cpu_rate = float("nan")
        emit(bench=f"{kind} training step", device="cpu (numba)", error=traceback.format_exc()[-1500:])

    results = {}
    for precision in precisions:
        reset()
        compile_start = time.perf_counter()
        gpu_step = compile_graph_triton(graph, precision=precision)
        gpu_step.sync_variables = False  # variables stay on the device between steps
        gpu_step.push_variables()
        # The first steps compile every kernel and time the matmul/conv configurations; their
        # losses must follow the numba step's from the same start.
        gpu_losses = [float(gpu_step(x, y)[0]) for _ in range(3)]
        gpu_step.synchronize()
        first = time.perf_counter() - compile_start
        if cpu_losses:
            emit(check=f"{kind} training step, gpu vs numba", precision=precision, numba_losses=cpu_losses,
                 gpu_losses=gpu_losses, max_relative_difference=float(np.max(
                     np.abs(np.subtract(gpu_losses, cpu_losses)) / np.abs(cpu_losses))))
        rate = _timed(lambda step=gpu_step: step.run(x, y), steps, gpu_step.synchronize)
        loss = float(gpu_step(x, y)[0])
        gpu_step.pull_variables()
        results[precision] = rate
        emit(bench=f"{kind} training step", device="gpu (triton)", batch=BATCH, precision=precision,
             steps_per_s=round(rate, 1), samples_per_s=round(rate * BATCH), vs_numba_cpu=round(rate / cpu_rate, 2),
             first_step_s=round(first, 1), loss=round(loss, 4), kernels=len(gpu_step.program.launches),
             memory=gpu_step.memory.name if gpu_step.memory else "interpreter")
    return results


def bench_torch(kind, steps):
    try:
        import torch
    except ImportError:
        emit(bench=f"{kind} training step", device="cuda (pytorch eager)", skipped="torch is not installed")
        return None
    if not torch.cuda.is_available():
        emit(bench=f"{kind} training step", device="cuda (pytorch eager)", skipped="torch has no CUDA")
        return None
    nn = torch.nn
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        x = torch.randn(BATCH, 784, device="cuda")
    else:
        model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10))
        x = torch.randn(BATCH, 1, 28, 28, device="cuda")
    model = model.cuda()
    y = torch.randint(0, 10, (BATCH,), device="cuda")
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    rate = _timed(step, steps, torch.cuda.synchronize)
    emit(bench=f"{kind} training step", device="cuda (pytorch eager)", batch=BATCH, steps_per_s=round(rate, 1),
         samples_per_s=round(rate * BATCH), tf32=bool(torch.backends.cuda.matmul.allow_tf32))
    return rate


def main():
    global BATCH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--no-ops", action="store_true", help="skip the op checks")
    parser.add_argument("--no-bench", action="store_true", help="skip the training benchmarks")
    parser.add_argument("--models", default="mlp,cnn", help="training benchmarks to run")
    parser.add_argument("--precisions", default="tf32x3,ieee,tf32", help="matmul precisions of the benchmarks")
    parser.add_argument("--batch", type=int, default=BATCH, help="batch size of the training benchmarks")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--precision", default="ieee", help="matmul precision of the op checks")
    parser.add_argument("--ops-seconds", type=float, default=None, help="stop the op checks after this long")
    parser.add_argument("--failures", default=None, help="write every op-check failure to this JSON file")
    args = parser.parse_args()
    BATCH = args.batch
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("gpu_check: unset TRITON_INTERPRET (this script runs the kernels on the GPU)", file=sys.stderr)
        return 2

    from kgraph.runtime.gpu import gpu_problem

    problem = gpu_problem()
    if problem:
        print(f"gpu_check: no GPU to check: {problem}", file=sys.stderr)
        emit(check="gpu", ok=False, reason=problem)
        return 2
    import triton

    target = triton.runtime.driver.active.get_current_target()
    emit(check="gpu", ok=True, target=f"{target.backend} sm_{target.arch}", triton=triton.__version__)
    ok = True
    models = [m for m in args.models.split(",") if m] if not args.no_bench else []
    for kind in models:
        try:
            bench_training(kind, args.steps, args.precisions.split(","))
        except Exception:
            ok = False
            emit(bench=f"{kind} training step", device="gpu (triton)", error=traceback.format_exc()[-2000:])
    if not args.no_ops:
        ok = run_op_checks(args.workers, args.precision, args.ops_seconds, args.failures) and ok
    for kind in models:  # torch last: Triton's driver must start torch-free
        bench_torch(kind, args.steps)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
