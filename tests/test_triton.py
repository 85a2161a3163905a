"""The Triton backend, run in Triton's CPU interpreter (TRITON_INTERPRET=1, no GPU needed).

- every registered op, on every sample case of its OpDef, lowered to Triton and run
  against the op's numpy reference (static shapes, and the batch dimension None at
  several batch sizes), and its compiled backward graph against the reference
  interpreter: the checks tests/test_ops.py makes of the numba backend;
- a full training step of a small Dense model (forward, loss, backward, Adam, metrics)
  rendered to Triton equals the numba step, variables included;
- every kernel these tests generate compiles ahead of time to PTX for sm_90 and sm_80
  with triton.compile (no GPU needed), in a subprocess that does not interpret. Results
  land in Triton's cache (under kgraph's). By default one kernel per template kind is
  compiled (seconds); KGRAPH_PTX_CHECK=all compiles every generated kernel (about 1,500
  per target: many minutes on 2 cores when Triton's cache is cold, seconds when warm).

Tests skip when Triton (the `gpu` extra) is not installed.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import zlib

# The interpreter must be chosen before any @triton.jit runs (i.e. before triton loads).
os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

triton = pytest.importorskip("triton", reason="Triton (the `gpu` extra) is not installed: pip install 'kgraph[gpu]'")

from kgraph import ops  # noqa: E402
from kgraph.compiler.autodiff import gradients  # noqa: E402
from kgraph.compiler.lower.triton import compile_graph_triton  # noqa: E402
from kgraph.compiler.lower.triton.aot import kernel_specs  # noqa: E402
from kgraph.compiler.lower.triton.codegen import renders  # noqa: E402
from kgraph.exporters.onnx import trace  # noqa: E402
from kgraph.ir import Graph, SymbolicTensor, tracing  # noqa: E402
from kgraph.ops import OPS  # noqa: E402
from kgraph.ops.registry import Spec, bind  # noqa: E402
from kgraph.runtime.reference import evaluate  # noqa: E402

BATCHES = (2, 5, 1)
FORWARD_TOLERANCE = dict(rtol=2e-5, atol=1e-5)
GENERATED = []  # every executable the tests build (the PTX check compiles their kernels)


def _rng(*key):
    return np.random.default_rng(zlib.crc32("/".join(str(k) for k in key).encode()))


def rendered(name):
    """None when the Triton backend renders op `name`, else why it does not."""
    return None if renders(OPS[name]) else f"the Triton backend has no kernel template for '{name}' yet"


# -- cases (the registry's samples, as tests/test_ops.py draws them) ---------------------------------
class Case:
    def __init__(self, op, index, inputs, attrs):
        self.op, self.index, self.inputs, self.attrs = op, index, inputs, attrs
        self.id = f"{op}-{index}"
        self.opdef = OPS[op]

    def float_inputs(self):
        return [i for i, x in enumerate(self.inputs) if x.dtype.kind == "f"]

    def reference(self, inputs):
        specs = [Spec(x.shape, x.dtype.name) for x in inputs]
        _, dtype = self.opdef.infer(self.attrs, *specs)
        return np.asarray(self.opdef.reference(self.attrs, *inputs)).astype(dtype, copy=False)

    def has_gradient(self):
        out = self.reference(self.inputs)
        return (self.opdef.differentiable and self.opdef.grad is not None and out.dtype.kind == "f"
                and bool(self.float_inputs()))


def _cases():
    cases = []
    for name in sorted(OPS):
        opdef = OPS[name]
        if opdef.samples is None:
            continue
        for index, (inputs, attrs) in enumerate(opdef.samples(_rng(name))):
            cases.append(Case(name, index, [np.asarray(x) for x in inputs], dict(attrs)))
    return cases


CASES = _cases()
CASE_IDS = [c.id for c in CASES]


def _with_batch(x, n):
    rows = x.shape[0]
    taken = x[np.arange(n) % rows]
    if x.dtype.kind == "f":
        scale = 1.0 + 0.25 * (np.arange(n) // rows)
        taken = (taken * scale.reshape((-1,) + (1,) * (x.ndim - 1))).astype(x.dtype)
    return taken


def _variant(case, dynamic):
    """(shapes, feeds per run) for the case; None when it has no dynamic-batch variant."""
    if not dynamic:
        return [x.shape for x in case.inputs], [case.inputs]
    lead = next((x for x in case.inputs if x.ndim and x.dtype.kind in "fb"), None)
    if lead is None:
        return None
    batched = [i for i, x in enumerate(case.inputs)
               if x.ndim == lead.ndim and x.shape[0] == lead.shape[0] and x.dtype.kind in "fb"]
    shapes = [(None,) + x.shape[1:] if i in batched else x.shape for i, x in enumerate(case.inputs)]
    try:
        out_shape, _ = case.opdef.infer(case.attrs, *[Spec(s, x.dtype.name) for s, x in zip(shapes, case.inputs)])
    except ValueError:
        return None
    feeds = [[_with_batch(x, n) if i in batched else x for i, x in enumerate(case.inputs)] for n in BATCHES]
    try:
        expected = [case.reference(feed) for feed in feeds]
    except Exception:
        return None
    for n, value in zip(BATCHES, expected):
        if tuple(n if d is None else d for d in out_shape) != value.shape:
            return None
    return shapes, feeds


def _graph(case, shapes, with_grads):
    graph = Graph(f"triton_{case.id}")
    grads = []
    with tracing(graph):
        symbols = [SymbolicTensor(graph, graph.add_placeholder(s, x.dtype.name, f"in{i}").id)
                   for i, (s, x) in enumerate(zip(shapes, case.inputs))]
        y = bind(case.op, symbols, **case.attrs)
        graph.outputs = [y.node_id]
        if with_grads:
            w = SymbolicTensor(graph, graph.add_placeholder(y.shape, y.dtype, "w").id)
            loss = ops.sum(ops.multiply(y, w))
            grads = gradients(graph, loss.node_id, [symbols[i].node_id for i in case.float_inputs()])
            graph.outputs += grads
    return graph


@functools.cache
def _compiled(case_id, dynamic, with_grads):
    case = CASES[CASE_IDS.index(case_id)]
    variant = _variant(case, dynamic)
    if variant is None:
        return None
    shapes, feeds = variant
    graph = _graph(case, shapes, with_grads)
    executable = compile_graph_triton(graph)
    GENERATED.append((executable, [BATCHES[0]] if dynamic else [0]))
    return graph, executable, feeds


def _assert_matches(actual, expected, what, **tolerance):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        np.testing.assert_allclose(actual, expected, err_msg=what, **tolerance)


def _skip_unrendered(case):
    reason = rendered(case.op)
    if reason:
        pytest.skip(reason)


# -- the op tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_triton_matches_reference(case, dynamic):
    _skip_unrendered(case)
    compiled = _compiled(case.id, dynamic, False)
    if compiled is None:
        pytest.skip("no dynamic-batch variant of this case")
    _, executable, feeds = compiled
    for feed in feeds:
        actual = np.array(executable(*feed)[0])
        expected = case.reference(feed)
        _assert_matches(actual, expected, f"{case.id} at input shapes {[x.shape for x in feed]}",
                        **FORWARD_TOLERANCE)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_backward_triton_matches_reference(case, dynamic):
    _skip_unrendered(case)
    if not case.has_gradient():
        pytest.skip("not differentiable")
    compiled = _compiled(case.id, dynamic, True)
    if compiled is None:
        pytest.skip("no dynamic-batch variant of this case")
    graph, executable, feeds = compiled
    for run, feed in enumerate(feeds):
        out = case.reference(feed)
        feed = list(feed) + [_rng(case.id, "weights", run).standard_normal(out.shape).astype(out.dtype)]
        actual = [np.array(a) for a in executable(*feed)]
        expected = evaluate(graph, feed)[0]
        for k, (a, e) in enumerate(zip(actual, expected)):
            scale = float(np.max(np.abs(e), initial=1.0))
            _assert_matches(a, e, f"{case.id}: output {k} of the backward graph at input shapes "
                            f"{[x.shape for x in feed]}", rtol=1e-4, atol=1e-5 * scale)


def test_a_fixed_slice_of_the_batch_refuses_a_smaller_batch():
    """x[1:3] of a (None, 6) input has 2 rows whatever the batch: a batch of 2 would read past
    the input's end, so the executable refuses it as the numba one does (found on an H100 by
    bench/gpu_check.py, whose numpy reference clips instead)."""
    from kgraph.compiler.passes.pipeline import compile_graph

    graph = Graph("slice_of_the_batch")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 6), "float32", "x").id)
        graph.outputs = [bind("slice", [x], begin=(1, 0), end=(3, 6), step=(1, 2)).node_id]
    feed = np.arange(24, dtype=np.float32).reshape(4, 6)
    for executable in (compile_graph_triton(graph), compile_graph(graph)):
        np.testing.assert_array_equal(np.array(executable(feed)[0]), feed[1:3, ::2])
        with pytest.raises(ValueError, match="smaller than the slice end 3"):
            executable(feed[:2])


def test_control_flow_is_expanded_for_triton():
    """Triton has no loops or branches of its own yet: a scan of static length runs unrolled and
    a switch computes its branches and selects (kgraph/compiler/passes/expand_control.py), with
    the numba backend's results; a while_loop is refused with its reason."""
    from kgraph import ops
    from kgraph.compiler.passes.pipeline import compile_graph

    graph = Graph("triton_control")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 3), "float32", "x").id)
        steps = ops.stack([x, ops.multiply(x, 2.0), ops.sin(x)])
        total, ys = ops.scan(lambda c, v: (ops.add(ops.multiply(c, 0.5), v), ops.tanh(c)), ops.zeros_like(x), steps)
        chosen = ops.cond(ops.greater(ops.sum(x), 0.0), lambda: ops.exp(total), lambda: ops.square(total))
        graph.outputs = [total.node_id, ys.node_id, chosen.node_id]
    feed = np.random.default_rng(3).standard_normal((4, 3)).astype("float32")
    triton_step, numba_step = compile_graph_triton(graph), compile_graph(graph)
    for sample in (feed, -feed):
        for got, want in zip(triton_step(sample), numba_step(sample)):
            np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)
    loop = Graph("triton_while")
    with tracing(loop):
        x = SymbolicTensor(loop, loop.add_placeholder((3,), "float32", "x").id)
        loop.outputs = [ops.while_loop(lambda v: ops.less(ops.sum(v), 9.0), lambda v: ops.add(v, 1.0), x).node_id]
    with pytest.raises(NotImplementedError, match="while_loop .* known only at run time"):
        compile_graph_triton(loop)


def test_random_uniform_is_bit_identical_to_the_reference():
    graph = Graph("triton_random")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 1), "float32", "x").id)
        seed = SymbolicTensor(graph, graph.add_placeholder((), "int64", "seed").id)
        graph.outputs = [ops.random.random_uniform(seed, (None, 37), salt=5).node_id, x.node_id]
    executable = compile_graph_triton(graph)
    GENERATED.append((executable, [3]))
    for seed_value in (0, 1234567, 2**40 + 17):
        result = executable(np.zeros((3, 1), np.float32), np.array(seed_value, np.int64))[0]
        expected = ops.random.hash_uniform(seed_value, 5, 3 * 37).reshape(3, 37)
        assert np.array_equal(result, expected)


# -- a full training step --------------------------------------------------------------------------------
def _mlp_train_graph():
    import kgraph as keras

    keras.utils.set_random_seed(3) if hasattr(keras.utils, "set_random_seed") else None
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model, trace(model, "train", (((8,), "float32"),), (((), "int32"),))


def test_mlp_training_step_matches_numba():
    from kgraph.compiler.passes.pipeline import compile_graph

    model, graph = _mlp_train_graph()
    variables = graph.variables
    start = [np.array(v._value) for v in variables]
    rng = _rng("mlp")
    batches = [(rng.standard_normal((n, 8)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32))
               for n in (32, 32, 7)]

    numba_step = compile_graph(graph)
    numba_losses = [float(np.array(numba_step(x, y)[0])) for x, y in batches]
    numba_after = [np.array(v._value) for v in variables]

    for v, value in zip(variables, start):
        v._value[...] = value
    triton_step = compile_graph_triton(graph)
    GENERATED.append((triton_step, [32, 7]))
    triton_losses = [float(np.array(triton_step(x, y)[0])) for x, y in batches]
    triton_after = [np.array(v._value) for v in variables]

    np.testing.assert_allclose(triton_losses, numba_losses, rtol=1e-5, atol=1e-6)
    changed = 0
    for v, before, a, b in zip(variables, start, triton_after, numba_after):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"variable {v.path}")
        changed += not np.array_equal(a, before)
    assert changed >= 4, "the step should update the weights, the Adam moments and the metrics"
    kinds = {g.kind for g in triton_step.groups}
    assert {"matmul", "elementwise", "reduction"} <= kinds


def test_cnn_training_step_matches_numba():
    import kgraph as keras
    from kgraph import layers
    from kgraph.compiler.passes.pipeline import compile_graph

    model = keras.Sequential([keras.Input((10, 10, 2)), layers.Conv2D(4, 3, activation="relu"),
                              layers.MaxPooling2D(2), layers.Conv2D(6, 3, padding="same", activation="relu"),
                              layers.AveragePooling2D(2), layers.Flatten(), layers.Dense(5)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    graph = trace(model, "train", (((10, 10, 2), "float32"),), (((), "int32"),))
    variables = graph.variables
    start = [np.array(v._value) for v in variables]
    rng = _rng("cnn")
    x, y = rng.standard_normal((4, 10, 10, 2)).astype(np.float32), rng.integers(0, 5, 4).astype(np.int32)

    numba_loss = float(np.array(compile_graph(graph)(x, y)[0]))
    numba_after = [np.array(v._value) for v in variables]
    for v, value in zip(variables, start):
        v._value[...] = value
    triton_step = compile_graph_triton(graph)
    GENERATED.append((triton_step, [4]))
    triton_loss = float(np.array(triton_step(x, y)[0]))
    np.testing.assert_allclose(triton_loss, numba_loss, rtol=1e-5)
    for v, a, b in zip(variables, [np.array(v._value) for v in variables], numba_after):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"variable {v.path}")
    ops_used = {triton_step.graph.node(n).op for g in triton_step.groups for n in g.nodes}
    assert {"conv", "conv_filter_grad", "pool", "max_pool_grad"} <= ops_used


def test_fit_and_predict_run_on_triton_when_the_device_is_gpu(monkeypatch):
    """With the device set to "gpu", fit() and predict() compile their steps to Triton (here
    in the interpreter) and end where the numba backend does from the same weights."""
    import kgraph as keras
    from kgraph import config
    from kgraph.runtime.gpu import GpuExecutable

    rng = _rng("fit-on-gpu")
    x = rng.standard_normal((40, 8)).astype(np.float32)
    y = rng.integers(0, 4, 40).astype(np.int32)
    results = {}
    start = None
    for device in ("cpu", "gpu"):
        monkeypatch.setattr(config, "_device", device)  # set_device("gpu") needs a real GPU
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(4)])
        if start is None:
            start = model.get_weights()
        model.set_weights(start)
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        results[device] = (history.history["loss"], model.get_weights(), model.predict(x[:7], verbose=0))
        kinds = {type(f).__name__ for f in model._compiled_functions.values()}
        assert kinds == ({GpuExecutable.__name__} if device == "gpu" else {"CpuExecutable"})
    (cpu_loss, cpu_weights, cpu_pred), (gpu_loss, gpu_weights, gpu_pred) = results["cpu"], results["gpu"]
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=1e-4)
    for a, b in zip(gpu_weights, cpu_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu_pred, cpu_pred, rtol=1e-4, atol=1e-5)


def test_fit_keeps_variables_on_the_device_through_an_epoch(monkeypatch):
    """fit() on the GPU path with device memory emulated in host memory: the variables are
    uploaded once per epoch and downloaded at its end (and the metric state whenever batch
    logs are read), not around every step; the result equals the numba backend's."""
    import kgraph as keras
    from kgraph import config
    from kgraph.runtime import gpu

    uploads = {}  # buffer -> how many times the host uploaded into it

    class CountingHostMemory(gpu.HostMemory):
        def upload(self, buffer, array):
            uploads[buffer.pointer] = uploads.get(buffer.pointer, 0) + 1
            super().upload(buffer, array)

    def emulated_memory():
        return gpu.DeviceMemory(impl=CountingHostMemory())

    rng = _rng("resident-fit")
    x = rng.standard_normal((48, 8)).astype(np.float32)
    y = rng.integers(0, 4, 48).astype(np.int32)
    results, start = {}, None
    for device in ("cpu", "gpu"):
        monkeypatch.setattr(config, "_device", device)
        if device == "gpu":
            monkeypatch.setattr(gpu, "interpreting", lambda: False)  # the device path, interpreted kernels
            monkeypatch.setattr(gpu, "require_gpu", lambda: None)
            monkeypatch.setattr(gpu, "device_memory", emulated_memory)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(4)])
        start = start or model.get_weights()
        model.set_weights(start)
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        results[device] = (history.history, model.get_weights())
        if device == "gpu":
            (step,) = model._compiled_functions.values()
            variable_buffers = [buffer.pointer for buffer in step._variable_buffers]
    np.testing.assert_allclose(results["gpu"][0]["loss"], results["cpu"][0]["loss"], rtol=1e-4)
    np.testing.assert_allclose(results["gpu"][0]["accuracy"], results["cpu"][0]["accuracy"])
    for a, b in zip(results["gpu"][1], results["cpu"][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # 3 steps an epoch, 2 epochs: copying around every step would upload each variable 7 times;
    # resident, it is uploaded when the step is built, when fit adopts it, and once an epoch.
    assert max(uploads[pointer] for pointer in variable_buffers) <= 4
    assert max(uploads.values()) == 6  # the batches themselves go up every step


def test_the_device_memory_path_runs_a_training_step():
    """GpuExecutable as on a GPU (staging buffers, device mirrors of the variables, timed
    matmul configurations, downloads), over device memory emulated in host memory."""
    from kgraph.compiler.lower.triton.codegen import render_module
    from kgraph.compiler.passes.fusion import fuse
    from kgraph.compiler.passes.memory import plan_memory
    from kgraph.compiler.passes.pipeline import optimize
    from kgraph.runtime.cache import load_module
    from kgraph.runtime.gpu import DeviceMemory, GpuExecutable, HostMemory

    _, graph = _mlp_train_graph()
    variables = graph.variables
    start = [np.array(v._value) for v in variables]
    rng = _rng("device-path")
    batches = [(rng.standard_normal((n, 8)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32))
               for n in (16, 5, 16)]
    interpreted = compile_graph_triton(graph)
    expected_losses = [float(interpreted(x, y)[0]) for x, y in batches]
    expected = [np.array(v._value) for v in variables]

    for v, value in zip(variables, start):
        v._value[...] = value
    optimized = optimize(graph.copy())
    groups = fuse(optimized)
    plan = plan_memory(optimized, groups)
    source, program = render_module(optimized, groups, plan)
    device = GpuExecutable(optimized, program, load_module(source, prefix="tt"), source, plan, interpret=False,
                           memory=DeviceMemory(impl=HostMemory()))
    losses = [float(device(x, y)[0]) for x, y in batches[:2]]
    device.sync_variables = False  # the last step keeps them on the "device" until pulled
    losses.append(float(device(*batches[2])[0]))
    before_pull = [np.array(v._value) for v in variables]
    device.pull_variables()
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for v, a, b in zip(variables, [np.array(v._value) for v in variables], expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"variable {v.path}")
    assert any(not np.array_equal(a, b) for a, b in zip(before_pull, expected))

    # A matmul big enough for several GPU configurations: each is timed, the best kept.
    mm = Graph("device_matmul")
    with tracing(mm):
        a = SymbolicTensor(mm, mm.add_placeholder((None, 64), "float32", "a").id)
        b = SymbolicTensor(mm, mm.add_placeholder((64, 48), "float32", "b").id)
        mm.outputs = [ops.relu(ops.matmul(a, b)).node_id]
    groups = fuse(optimize(mm))
    plan = plan_memory(mm, groups)
    source, program = render_module(mm, groups, plan)
    device = GpuExecutable(mm, program, load_module(source, prefix="tt"), source, plan, interpret=False,
                           memory=DeviceMemory(impl=HostMemory()))
    x, w = rng.standard_normal((64, 64)).astype(np.float32), rng.standard_normal((64, 48)).astype(np.float32)
    np.testing.assert_allclose(device(x, w)[0], np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)
    (timings,) = device.timings.values()
    assert len(timings) > 1

    # conv_filter_grad splits its long reduction over programs that add up atomically.
    cg = Graph("device_filter_grad")
    attrs = dict(strides=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0)), groups=1, kernel_size=(3, 3))
    with tracing(cg):
        x = SymbolicTensor(cg, cg.add_placeholder((None, 10, 10, 3), "float32", "x").id)
        g = SymbolicTensor(cg, cg.add_placeholder((None, 8, 8, 4), "float32", "g").id)
        cg.outputs = [bind("conv_filter_grad", [x, g], **attrs).node_id]
    groups = fuse(optimize(cg))
    plan = plan_memory(cg, groups)
    source, program = render_module(cg, groups, plan)
    device = GpuExecutable(cg, program, load_module(source, prefix="tt"), source, plan, interpret=False,
                           memory=DeviceMemory(impl=HostMemory()))
    feed = [rng.standard_normal(shape).astype(np.float32) for shape in ((8, 10, 10, 3), (8, 8, 8, 4))]
    np.testing.assert_allclose(device(*feed)[0], OPS["conv_filter_grad"].reference(attrs, *feed), rtol=1e-4,
                               atol=1e-4)
    assert max(call[3].get("SPLIT_K", 1) for call in device._states[8].calls) > 1


def test_compiling_for_the_gpu_without_one_says_what_is_missing(monkeypatch):
    from kgraph.runtime.gpu import gpu_problem

    if gpu_problem() is None:
        pytest.skip("a GPU is present")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    graph = Graph("no_gpu")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 3), "float32", "x").id)
        graph.outputs = [ops.exp(x).node_id]
    with pytest.raises(RuntimeError, match="no NVIDIA GPU"):
        compile_graph_triton(graph)


# -- ahead-of-time compilation for real GPUs -----------------------------------------------------------------
AOT_SCRIPT = """
import json, sys
from kgraph.compiler.lower.triton.aot import compile_specs
specs = json.load(open(sys.argv[1]))
print(json.dumps(compile_specs(specs, [("cuda", int(sys.argv[2]))])))
"""
TARGETS = (90, 80)  # sm_90 (H100) and sm_80 (A100)


def test_every_generated_kernel_compiles_to_ptx(tmp_path):
    # Make sure the kernels of every test above exist even when this test runs alone.
    for case in CASES:
        if rendered(case.op):
            continue
        for dynamic in (False, True):
            _compiled(case.id, dynamic, False)
            if case.has_gradient():
                _compiled(case.id, dynamic, True)
    _mlp = _mlp_train_graph()[1]
    GENERATED.append((compile_graph_triton(_mlp), [32]))
    specs, seen = [], set()
    for executable, batches in GENERATED:
        for spec in kernel_specs(executable, batches):
            key = (spec["source_key"], json.dumps(spec["signature"], sort_keys=True),
                   json.dumps(spec["constexprs"], sort_keys=True), spec["num_warps"], spec["num_stages"])
            if key not in seen:
                seen.add(key)
                specs.append(spec)
    if os.environ.get("KGRAPH_PTX_CHECK", "sample") != "all":  # by default one kernel per template kind
        kinds = {}
        for spec in specs:
            kinds.setdefault(spec["kernel"].split("_", 1)[-1], spec)
        specs = list(kinds.values())
    path = tmp_path / "specs.json"
    path.write_text(json.dumps(specs))
    # A process per target, side by side. Triton's cache is kgraph's (TRITON_CACHE_DIR under
    # the kernel cache): a kernel compiled by an earlier run, from the same source, options and
    # Triton version, is a cache hit, so a cold run compiles everything (minutes on 2 cores)
    # and later runs take seconds.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    workers = [subprocess.Popen([sys.executable, "-c", AOT_SCRIPT, str(path), str(arch)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for arch in TARGETS]
    outputs = [worker.communicate(timeout=1800) for worker in workers]
    report = []
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-4000:]
        report += json.loads(out.strip().splitlines()[-1])
    failures = [r for r in report if not r["ok"]]
    assert not failures, "kernels that do not compile to PTX:\n" + "\n".join(
        f"{r['kernel']} sm_{r['arch']}: {r['error'][:500]}" for r in failures[:10])
    assert len(report) == len(TARGETS) * len(specs) and all("ptx" in r["stages"] for r in report)
    print(f"{len(specs)} kernels compiled to PTX and cubin for sm_90 and sm_80")
