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
(or no Triton). Run: python bench/gpu_check.py [--steps 50] [--no-ops] [--workers 8]
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
    from kgraph.ops import OPS

    cases = []
    for name in sorted(OPS):
        if OPS[name].samples is None:
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
                compare(np.array(executable(*feed)[0]), _reference(name, feed, attrs),
                        f"{name}-{index} forward {[x.shape for x in feed]}", 1e-4, 1e-5)
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


def run_op_checks(workers, precision):
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    keys = [(name, index) for name, index, _, _ in _cases()]
    chunks = [keys[k::workers] for k in range(workers)]
    start = time.perf_counter()
    results = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        for chunk_results in pool.map(_check_chunk, chunks, [precision] * workers):
            results += chunk_results
    failed = [(key, f) for key, f in results if f]
    emit(check="ops on the GPU", precision=precision, cases=len(results), passed=len(results) - len(failed),
         failed=len(failed), seconds=round(time.perf_counter() - start, 1),
         failures=[f"{name}-{index}: {f[0][:300]}" for (name, index), f in failed[:20]])
    return not failed


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

    cpu_step = compile_graph(graph)
    cpu_rate = _timed(lambda: cpu_step(x, y), max(3, steps // 10))
    emit(bench=f"{kind} training step", device="cpu (numba)", steps_per_s=round(cpu_rate, 2),
         samples_per_s=round(cpu_rate * BATCH))

    results = {}
    for precision in precisions:
        for v, value in zip(graph.variables, start_values):
            v._value[...] = value
        compile_start = time.perf_counter()
        gpu_step = compile_graph_triton(graph, precision=precision)
        gpu_step.sync_variables = False  # variables stay on the device between steps
        gpu_step.push_variables()
        gpu_step.run(x, y)  # compiles every kernel, times the matmul/conv configurations
        gpu_step.synchronize()
        first = time.perf_counter() - compile_start
        rate = _timed(lambda step=gpu_step: step.run(x, y), steps, gpu_step.synchronize)
        loss = float(gpu_step(x, y)[0])
        gpu_step.pull_variables()
        results[precision] = rate
        emit(bench=f"{kind} training step", device="gpu (triton)", precision=precision,
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
    emit(bench=f"{kind} training step", device="cuda (pytorch eager)", steps_per_s=round(rate, 1),
         samples_per_s=round(rate * BATCH), tf32=bool(torch.backends.cuda.matmul.allow_tf32))
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--no-ops", action="store_true", help="skip the op checks")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--precision", default="ieee", help="matmul precision of the op checks")
    args = parser.parse_args()
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
    if not args.no_ops:
        ok = run_op_checks(args.workers, args.precision)
    for kind in ("mlp", "cnn"):
        try:
            bench_training(kind, args.steps, ("tf32x3", "ieee", "tf32"))
        except Exception:
            ok = False
            emit(bench=f"{kind} training step", device="gpu (triton)", error=traceback.format_exc()[-2000:])
    for kind in ("mlp", "cnn"):  # torch last: Triton's driver must start torch-free
        bench_torch(kind, args.steps)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
