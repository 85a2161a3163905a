"""Control flow as IR constructs: while_loop, fori_loop, scan, map, cond and switch, traced into
`while_loop`/`scan`/`switch` ops and lowered to real loops and branches by the numba backend.

Oracles: numpy loops written here, and float64 finite differences of those numpy functions
for the gradients (scan and switch are differentiable; while_loop is refused by autodiff).
"""

from __future__ import annotations

import numpy as np
import pytest

import kgraph as keras
from kgraph import ops
from kgraph.compiler.autodiff import gradients
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.ir import Graph, SymbolicTensor, tracing
from tests.compiled_cases import compile_cases

RNG = np.random.default_rng(5)
X = RNG.standard_normal((3, 4))
W = RNG.standard_normal((4, 4)) * 0.4


# -- numpy oracles ----------------------------------------------------------------------------------------
def _np_rnn(x, w, reverse=False):
    h, ys = np.zeros(x.shape[1]), []
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    for t in steps:
        h = np.tanh(h @ w + x[t])
        ys.append(h * h)
    return h, np.stack(ys[::-1] if reverse else ys)


def _np_halvings(x):
    """Halve each row until its absolute sum is below 1; (rows, halvings per row)."""
    rows, counts = [], []
    for row in x:
        k = 0
        while np.abs(row).sum() >= 1.0:
            row, k = row * 0.5, k + 1
        rows.append(row)
        counts.append(k)
    return np.stack(rows), np.array(counts)


# -- the traced functions ---------------------------------------------------------------------------------
def scan_rnn(x, reverse=False):
    def step(h, x_t):
        h = ops.tanh(ops.add(ops.matmul(h, W), x_t))
        return h, ops.multiply(h, h)
    return ops.scan(step, ops.zeros((4,), x.dtype), x, reverse=reverse)


def fori_polynomial(x):
    """sum_i x**i for i in [0, 4): Python int bounds, a scan over the indices."""
    return ops.fori_loop(0, 4, lambda i, acc: ops.add(ops.multiply(acc, x), 1.0), ops.zeros_like(x))


def cond_branch(x):
    """x * sin(x) where the total is positive, else x ** 2 + W[0] (a captured constant)."""
    return ops.cond(ops.greater(ops.sum(x), 0.0), lambda: ops.multiply(x, ops.sin(x)),
                    lambda: ops.add(ops.square(x), W[0].astype(x.dtype)))


def switch_three(x, index):
    branches = [lambda v: ops.exp(v), lambda v: ops.multiply(v, 3.0), lambda v: ops.tanh(v)]
    return ops.switch(index, branches, x)


# -- a compiled graph of forward cases with a None batch --------------------------------------------------
@pytest.fixture(scope="module")
def forward():
    graph = Graph("control_forward")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 4), "float32", "x").id)
        k = SymbolicTensor(graph, graph.add_placeholder((), "int32", "k").id)

        def halve(row_sum_too_big_x, count):
            return ops.multiply(row_sum_too_big_x, 0.5), ops.add(count, 1)

        # one row at a time: map over the batch, a data-dependent while loop inside
        def halvings(row):
            return ops.while_loop(lambda r, c: ops.greater_equal(ops.sum(ops.abs(r)), 1.0), halve,
                                  (row, ops.zeros((), "int32")))
        rows, counts = ops.map(halvings, ops.transpose(x, (0, 1)))
        power = ops.fori_loop(0, k, lambda i, acc: ops.multiply(acc, x), ops.ones_like(x))
        bounded = ops.while_loop(lambda v: ops.less(ops.max(v), 100.0), lambda v: ops.multiply(v, 2.0),
                                 ops.add(ops.abs(x), 0.1), maximum_iterations=3)
        switched = [switch_three(x, ops.add(k, offset)) for offset in (-5, 0, 1, 7)]
        branch = cond_branch(x)
        tree_carry, _ = ops.scan(lambda c, v: ({"s": ops.add(c["s"], v), "n": ops.add(c["n"], 1)}, None),
                                 {"s": ops.zeros((4,)), "n": ops.zeros((), "int32")}, x)
        outputs = [rows, counts, power, bounded] + switched + [branch, tree_carry["s"], tree_carry["n"]]
        graph.outputs = [o.node_id for o in outputs]
    return graph, compile_graph(graph)


def test_loops_and_branches_become_ir_ops_and_numba_loops(forward):
    graph, executable = forward
    ops_used = {node.op for node in graph.nodes()}
    assert {"while_loop", "scan", "switch"} <= ops_used
    assert "where" not in ops_used  # cond no longer evaluates both branches and selects
    assert "while True:" in executable.source and "for s in range(length):" in executable.source
    assert "if b <= 0:" in executable.source


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_forward_matches_numpy_loops(forward, batch, k):
    _, executable = forward
    x = (RNG.standard_normal((batch, 4)) * 3).astype("float32")
    outputs = [np.array(o) for o in executable(x, np.int32(k))]
    rows, counts, power, bounded, *rest = outputs
    switched, branch, tree_sum, tree_count = rest[:4], rest[4], rest[5], rest[6]
    expected_rows, expected_counts = _np_halvings(x.astype(np.float64))
    np.testing.assert_allclose(rows, expected_rows, rtol=1e-6)
    np.testing.assert_array_equal(counts, expected_counts)
    np.testing.assert_allclose(power, x.astype(np.float64) ** k, rtol=1e-5)
    v = np.abs(x) + np.float32(0.1)
    for _ in range(3):
        if v.max() >= 100.0:
            break
        v = v * 2
    np.testing.assert_allclose(bounded, v, rtol=1e-6)
    choices = [np.exp, lambda a: a * 3, np.tanh]
    for offset, got in zip((-5, 0, 1, 7), switched):
        np.testing.assert_allclose(got, choices[int(np.clip(k + offset, 0, 2))](x), rtol=1e-5)
    want = x * np.sin(x) if x.sum() > 0 else x ** 2 + W[0].astype("float32")
    np.testing.assert_allclose(branch, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tree_sum, x.sum(axis=0), rtol=1e-5)
    assert int(tree_count) == batch


# -- gradients: float64 through the compiled path, against finite differences of the numpy oracles ----------
CASES = {
    "scan_ys": (lambda x: scan_rnn(x)[1], lambda x: _np_rnn(x, W)[1]),
    "scan_carry_reverse": (lambda x: scan_rnn(x, reverse=True)[0], lambda x: _np_rnn(x, W, reverse=True)[0]),
    "fori_static": (fori_polynomial, lambda x: sum(x ** i for i in range(4))),
    "cond_true": (lambda x: cond_branch(ops.abs(x)), lambda x: np.abs(x) * np.sin(np.abs(x))),
    "cond_false": (lambda x: cond_branch(ops.negative(ops.abs(x))), lambda x: x ** 2 + W[0]),
    "switch_capture": (lambda x: switch_three(ops.multiply(x, ops.sum(x)), 2), lambda x: np.tanh(x * x.sum())),
}


@pytest.fixture(scope="module")
def float64_cases():
    return compile_cases({name: (fn, True) for name, (fn, _) in CASES.items()}, "control_float64", X)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_gradient_match_numpy_and_finite_differences(float64_cases, name):
    outputs, forward_index, grads, weights = float64_cases
    oracle = CASES[name][1]
    np.testing.assert_allclose(outputs[forward_index[name]], oracle(X), rtol=1e-10, atol=1e-12)
    w = weights[name]
    expected = np.zeros_like(X)
    for index in np.ndindex(X.shape):
        step = np.zeros_like(X)
        step[index] = 1e-6
        expected[index] = (np.sum(oracle(X + step) * w) - np.sum(oracle(X - step) * w)) / 2e-6
    np.testing.assert_allclose(outputs[grads[name]], expected, rtol=1e-6, atol=1e-7)


def test_while_loop_gradient_is_refused_with_its_reason():
    graph = Graph("while_grad")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((3,), "float32", "x").id)
        y = ops.while_loop(lambda v: ops.less(ops.sum(v), 10.0), lambda v: ops.multiply(v, 2.0), x)
        with pytest.raises(NotImplementedError, match="while_loop is not reverse-differentiable"):
            gradients(graph, ops.sum(y).node_id, [x.node_id])


def test_mismatched_loop_variables_and_branches_are_refused():
    graph = Graph("errors")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((3,), "float32", "x").id)
        with pytest.raises(ValueError, match="loop variable 0 as float32\\(6,\\)"):
            ops.while_loop(lambda v: ops.less(ops.sum(v), 1.0), lambda v: ops.concatenate([v, v]), x)
        with pytest.raises(ValueError, match="branch 1 returns"):
            ops.cond(ops.greater(ops.sum(x), 0.0), lambda: x, lambda: ops.cast(x, "int32"))
        with pytest.raises(ValueError, match="assigned inside"):
            v = keras.Variable(np.zeros(3, "float32"))
            ops.scan(lambda c, t: (v.assign(c) * 1.0, None), x, ops.stack([x, x]))


def test_concrete_values_still_run_in_python():
    assert ops.fori_loop(0, 5, lambda i, v: v + i, 0) == 10
    assert ops.while_loop(lambda v: v < 100, lambda v: v * 3, 1) == 243
    assert ops.cond(True, lambda: "yes", lambda: "no") == "yes"
    carry, ys = ops.scan(lambda c, v: (c + v, c * v), 0.0, np.arange(4.0))
    assert carry == 6.0 and list(ys) == [0.0, 0.0, 2.0, 9.0]


# -- a recurrence written with keras.ops.scan, inside a model that trains -----------------------------------
class ScanRNN(keras.layers.Layer):
    """h_t = tanh(x_t W + h_{t-1} U): the time loop is a scan op over captured weights."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="w")
        self.u = self.add_weight(shape=(self.units, self.units), initializer="orthogonal", name="u")

    def call(self, x):
        steps = ops.transpose(x, (1, 0, 2))
        h0 = ops.zeros_like(ops.matmul(steps[0], self.w))
        h, _ = ops.scan(lambda h, x_t: (ops.tanh(ops.add(ops.matmul(x_t, self.w), ops.matmul(h, self.u))), None),
                        h0, steps)
        return h


@pytest.fixture(scope="module")
def scan_model():
    """A Sequential model around ScanRNN: its hidden state before training against numpy's
    loop, and its fit history."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6, 3)).astype("float32")
    y = (x.sum(axis=(1, 2)) > 0).astype("float32")[:, None]
    model = keras.Sequential([keras.Input((6, 3)), ScanRNN(8), keras.layers.Dense(1, activation="sigmoid")])
    layer = model.layers[0]
    w, u = layer.w.numpy(), layer.u.numpy()
    h = np.zeros((4, 8), np.float32)
    for t in range(6):
        h = np.tanh(x[:4, t] @ w + h @ u)
    hidden = keras.Model(model.inputs, layer.output).predict(x[:4], verbose=0)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="binary_crossentropy")
    history = model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    return model, (hidden, h), history.history["loss"]


def test_a_scan_written_recurrence_matches_numpy_and_trains(scan_model):
    _, (hidden, expected), losses = scan_model
    np.testing.assert_allclose(hidden, expected, rtol=1e-5, atol=1e-6)
    assert losses[-1] < 0.75 * losses[0]


def test_onnx_export_writes_loops_and_ifs_that_onnxruntime_runs(scan_model, tmp_path):
    """scan and while_loop become ONNX Loop nodes, switch an If, with nested graphs reading
    the captured weights by name; onnxruntime agrees with kgraph on both branches."""
    import onnx
    import onnxruntime as ort

    from kgraph.exporters.onnx import export_model

    inputs = keras.Input((6, 3))
    hidden = scan_model[0](inputs)
    grown = keras.layers.Lambda(lambda h: ops.while_loop(lambda a: ops.less(ops.max(ops.abs(a)), 4.0),
                                                         lambda a: ops.multiply(a, 1.5), ops.add(h, 0.5)))(hidden)
    flipped = keras.layers.Lambda(lambda h: ops.cond(ops.greater(ops.sum(h), 0.0), lambda: h, lambda: -h))(grown)
    per_row = keras.layers.Lambda(lambda h: ops.map(lambda row: ops.sum(ops.square(row)), h))(flipped)
    model = keras.Model(inputs, [flipped, per_row])
    path = tmp_path / "control.onnx"
    export_model(model, str(path))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node].count("Loop") == 3  # scan, while_loop, map over the batch
    assert "If" in [n.op_type for n in proto.graph.node]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((5, 6, 3)).astype("float32")
    for sample in (x, -x, x[:1]):
        got = session.run(None, {session.get_inputs()[0].name: sample})
        for g, want in zip(got, model.predict(sample, verbose=0)):
            np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)


def test_archive_serves_loops_and_branches_without_the_model_code(scan_model, tmp_path):
    from kgraph.exporters import load

    inputs = keras.Input((6, 3))
    hidden = scan_model[0](inputs)
    grown = keras.layers.Lambda(lambda h: ops.while_loop(lambda a: ops.less(ops.max(ops.abs(a)), 4.0),
                                                         lambda a: ops.multiply(a, 1.5), ops.add(h, 0.5)))(hidden)
    flipped = keras.layers.Lambda(lambda h: ops.cond(ops.greater(ops.sum(h), 0.0), lambda: h, lambda: -h))(grown)
    model = keras.Model(inputs, flipped)
    model.export(tmp_path / "served", input_signature=[keras.InputSpec(shape=(None, 6, 3), dtype="float32")],
                 verbose=False)
    document = (tmp_path / "served" / "endpoints" / "serve.json").read_text()
    assert '"op": "while_loop"' in document and '"op": "scan"' in document and '"__graph__"' in document
    reloaded = load(str(tmp_path / "served"))
    x = np.random.default_rng(2).standard_normal((3, 6, 3)).astype("float32")
    np.testing.assert_allclose(reloaded.serve(x), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
