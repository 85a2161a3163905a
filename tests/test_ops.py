"""Every registered op against its numpy reference, and every gradient rule against
finite differences.

The cases come from the registry (each OpDef's `samples(rng)`), so an op is tested the
moment it is registered. Three oracles:

- forward: the numba backend against the op's numpy reference, once with the sample's
  static shapes and once with the batch (first) dimension None, run at several batch sizes;
- gradient rule: evaluated by the reference interpreter in float64, against central
  finite differences of loss = sum(op(x) * w) for fixed random weights w;
- compiled backward: the same loss's gradients compiled with numba, against the
  reference interpreter running the same graph.

numba compiles about 75 ms per kernel, so the cases are not compiled one module each:
every op kind gets one big graph (all its cases' forward and backward outputs) per
shape variant, compiled once per session; each parametrized test reads its own outputs.
A graph that fails to compile or run is bisected so that the failure is reported on the
cases that cause it and the others still run.
"""

from __future__ import annotations

import traceback
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.special

from kgraph import ops
from kgraph.compiler.autodiff import gradients
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.ops import OPS
from kgraph.ops.registry import Spec, bind
from kgraph.runtime.reference import evaluate

# Batch sizes every dynamic-batch graph runs at (1 included: a None dimension of size 1
# must not be mistaken for a broadcast dimension).
BATCHES = (2, 5, 1)
FORWARD_TOLERANCE = dict(rtol=2e-5, atol=1e-5)  # float32 kernels against float32 numpy
FD_EPSILON = 1e-6
FD_TOLERANCE = dict(rtol=1e-5, atol=1e-6)  # float64 rule against float64 differences
FD_ELEMENTS = 64  # inputs up to this size are differenced per element, larger ones along
FD_DIRECTIONS = 4  # this many random directions (each checks every element of the gradient)


def _rng(*key):
    return np.random.default_rng(zlib.crc32("/".join(str(k) for k in key).encode()))


# -- cases ------------------------------------------------------------------------------------
@dataclass
class Case:
    op: str
    index: int
    inputs: list
    attrs: dict

    @property
    def id(self):
        return f"{self.op}-{self.index}"

    @property
    def opdef(self):
        return OPS[self.op]

    def float_inputs(self):
        return [i for i, x in enumerate(self.inputs) if x.dtype.kind == "f"]

    def has_gradient(self, out_dtype):
        return (self.opdef.differentiable and self.opdef.grad is not None
                and np.dtype(out_dtype).kind == "f" and bool(self.float_inputs()))


def _collect_cases():
    cases = []
    for name in sorted(OPS):
        opdef = OPS[name]
        if opdef.samples is None:
            continue
        for index, (inputs, attrs) in enumerate(opdef.samples(_rng(name))):
            cases.append(Case(name, index, [np.asarray(x) for x in inputs], dict(attrs)))
    return cases


CASES = _collect_cases()
CASE_IDS = [c.id for c in CASES]


def _reference(case, inputs):
    """The op's numpy reference, cast to the dtype its infer rule promises (as bind does)."""
    specs = [Spec(x.shape, x.dtype.name) for x in inputs]
    _, dtype = case.opdef.infer(case.attrs, *specs)
    attrs = case.attrs
    return np.asarray(case.opdef.reference(attrs, *inputs)).astype(dtype, copy=False)


@dataclass
class Variant:
    """A case as a graph sees it: placeholder shapes and the feeds for each batch size."""

    case: Case
    dynamic: bool
    shapes: list
    feeds: list  # one list of input arrays per run (per batch size in BATCHES)
    expected: list  # the reference output for each run

    @property
    def key(self):
        return self.case.id, self.dynamic

    @property
    def batches(self):
        return BATCHES if self.dynamic else (None,) * len(BATCHES)


def _static_variant(case):
    return Variant(case, False, [x.shape for x in case.inputs], [case.inputs] * len(BATCHES),
                   [_reference(case, case.inputs)] * len(BATCHES))


def _with_batch(x, n):
    """`x` resized to `n` rows; rows past the sample's are scaled copies (no exact ties)."""
    rows = x.shape[0]
    taken = x[np.arange(n) % rows]
    if x.dtype.kind == "f":
        scale = 1.0 + 0.25 * (np.arange(n) // rows)
        taken = (taken * scale.reshape((-1,) + (1,) * (x.ndim - 1))).astype(x.dtype)
    return taken


def _dynamic_variant(case):
    """(variant, problem): the case with its batch dimension None, or why there is none.

    The batch dimension is the first axis of the first float or bool input, shared by
    every float or bool input of the same rank and first dimension (integer inputs such as
    indices keep their shapes). A variant whose infer rule rejects the None dimension, or
    whose reference fails at some batch size (the op's attrs pin the batch size), is
    skipped. One whose infer rule accepts it but gives a shape the reference contradicts
    is a `problem` (the graph would be compiled with the wrong buffer sizes), unless that
    happens only below the sample's own batch size: a slice [1:3] of a None dimension
    is (2,) when the batch has at least 3 rows, which the attrs may assume.
    """
    lead = next((x for x in case.inputs if x.ndim and x.dtype.kind in "fb"), None)
    if lead is None:
        return None, None
    batched = [i for i, x in enumerate(case.inputs)
               if x.ndim == lead.ndim and x.shape[0] == lead.shape[0] and x.dtype.kind in "fb"]
    shapes = [(None,) + x.shape[1:] if i in batched else x.shape for i, x in enumerate(case.inputs)]
    try:
        out_shape, out_dtype = case.opdef.infer(case.attrs, *[Spec(s, x.dtype.name) for s, x in
                                                              zip(shapes, case.inputs)])
    except ValueError:
        return None, None
    feeds = [[_with_batch(x, n) if i in batched else x for i, x in enumerate(case.inputs)]
             for n in BATCHES]
    try:
        expected = [_reference(case, feed) for feed in feeds]
    except Exception:
        return None, None
    for n, value in zip(BATCHES, expected):
        promised = tuple(n if d is None else d for d in out_shape)
        if promised != value.shape and n < lead.shape[0]:
            return None, None
        if promised != value.shape:
            return None, (f"{case.id}: with inputs {shapes} the infer rule gives {tuple(out_shape)}, "
                          f"but at batch size {n} the reference gives {value.shape}")
    return Variant(case, True, shapes, feeds, expected), None


# -- building, compiling and running graphs of many cases -----------------------------------
@dataclass
class Outcome:
    """What one case got from its compiled graph: per run, forward and gradient arrays."""

    forward: list = field(default_factory=list)  # per run
    grads: list = field(default_factory=list)  # per run: {input index: array}
    reference_grads: list = field(default_factory=list)  # per run: {input index: array}
    forward_error: str | None = None
    grad_error: str | None = None


def _weights(case, shape, run):
    return _rng(case.id, "weights", run).standard_normal(shape).astype(np.float32)


def _build(variants, with_grads, name):
    graph = Graph(name)
    feeds = [[] for _ in BATCHES]
    forward, grads = {}, {}
    with tracing(graph):
        for variant in variants:
            case = variant.case
            symbols, label = [], f"{case.id}.{'dynamic' if variant.dynamic else 'static'}"
            for i, x in enumerate(case.inputs):
                node = graph.add_placeholder(variant.shapes[i], x.dtype.name, f"{label}.in{i}")
                symbols.append(SymbolicTensor(graph, node.id))
                for run, feed in enumerate(variant.feeds):
                    feeds[run].append(feed[i])
            y = bind(case.op, symbols, **case.attrs)
            forward[variant.key] = len(graph.outputs)
            graph.outputs.append(y.node_id)
            if with_grads and case.has_gradient(y.dtype):
                w = graph.add_placeholder(y.shape, y.dtype, f"{label}.w")
                for run, value in enumerate(variant.expected):
                    feeds[run].append(_weights(case, value.shape, run))
                loss = ops.sum(ops.multiply(y, SymbolicTensor(graph, w.id)))
                sources = case.float_inputs()
                grad_ids = gradients(graph, loss.node_id, [symbols[i].node_id for i in sources])
                grads[variant.key] = {}
                for i, grad_id in zip(sources, grad_ids):
                    grads[variant.key][i] = len(graph.outputs)
                    graph.outputs.append(grad_id)
    return graph, feeds, forward, grads


def _run(variants, with_grads, name):
    graph, feeds, forward, grads = _build(variants, with_grads, name)
    executable = compile_graph(graph)
    compiled = [[np.array(o) for o in executable(*feed)] for feed in feeds]
    reference = [evaluate(graph, feed)[0] for feed in feeds] if grads else None
    outcomes = {}
    for variant in variants:
        key = variant.key
        outcome = Outcome(forward=[run[forward[key]] for run in compiled])
        if key in grads:
            outcome.grads = [{i: run[k] for i, k in grads[key].items()} for run in compiled]
            outcome.reference_grads = [{i: run[k] for i, k in grads[key].items()} for run in reference]
        outcomes[key] = outcome
    return outcomes


def _run_bisecting(variants, with_grads, name):
    """Outcomes for every case; a failing graph is split until the failure is one case's."""
    try:
        return _run(variants, with_grads, name)
    except Exception:
        error = traceback.format_exc()
    if len(variants) > 1:
        half = len(variants) // 2
        outcomes = _run_bisecting(variants[:half], with_grads, f"{name}a")
        outcomes.update(_run_bisecting(variants[half:], with_grads, f"{name}b"))
        return outcomes
    key = variants[0].key
    if not with_grads:
        return {key: Outcome(forward_error=error)}
    outcome = _run_bisecting(variants, False, f"{name}f")[key]
    outcome.grad_error = error
    return {key: outcome}


class CompiledCases:
    """Compiles, on first request, the graph holding a case: the cases of one op kind,
    each twice (with the sample's static shapes and with a None batch dimension), in
    chunks of about CHUNK variants. Equal kernels are rendered once per module, so the two
    variants mostly share compiled code; chunks stay small because numba's compile time
    grows faster than linearly with the size of a module's entry function. An op's chunk
    is a hash of its name over a power-of-two number of chunks, so registering an op
    changes one chunk's module and the others stay in the compile cache."""

    CHUNK = 24

    def __init__(self):
        self._variants = {}  # kind -> {variant key: (variant, chunk index)}
        self._chunks = {}  # (kind, chunk index) -> outcomes

    def outcome(self, case, dynamic):
        kind = case.opdef.kind
        if kind not in self._variants:
            variants = []
            for other in CASES:
                if other.opdef.kind == kind:
                    variants += [_static_variant(other), _dynamic_variant(other)[0]]
            variants = [v for v in variants if v is not None]
            count = 1
            while count * self.CHUNK < len(variants):
                count *= 2
            self._variants[kind] = {v.key: (v, zlib.crc32(v.case.op.encode()) % count) for v in variants}
        located = self._variants[kind].get((case.id, dynamic))
        if located is None:
            pytest.skip("no dynamic-batch variant of this case (see _dynamic_variant)")
        variant, chunk = located
        if (kind, chunk) not in self._chunks:
            members = [v for v, c in self._variants[kind].values() if c == chunk]
            self._chunks[kind, chunk] = _run_bisecting(members, True, f"test_ops_{kind}_{chunk}")
        return self._chunks[kind, chunk][variant.key], variant


@pytest.fixture(scope="module")
def compiled():
    return CompiledCases()


def _assert_matches(actual, expected, what, **tolerance):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        np.testing.assert_allclose(actual, expected, err_msg=what, **tolerance)


def _grad_tolerance(expected):
    scale = float(np.max(np.abs(expected), initial=1.0))
    return dict(rtol=1e-4, atol=1e-5 * scale)


# -- the tests ----------------------------------------------------------------------------------
def test_every_op_has_samples():
    missing = sorted(name for name, opdef in OPS.items() if not opdef.samples or not opdef.samples(_rng(name)))
    assert not missing, f"ops without sample cases (so untested): {missing}"


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_numba_matches_reference(compiled, case, dynamic):
    outcome, variant = compiled.outcome(case, dynamic)
    if outcome.forward_error:
        pytest.fail(f"{case.id}: the numba backend failed:\n{outcome.forward_error}")
    for batch, actual, expected in zip(variant.batches, outcome.forward, variant.expected):
        _assert_matches(actual, expected, f"{case.id} inputs {variant.shapes} at batch size {batch}",
                        **FORWARD_TOLERANCE)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_infer_keeps_the_batch_dimension_consistent(case):
    _, problem = _dynamic_variant(case)
    assert problem is None, problem


@pytest.mark.parametrize("make", [
    lambda x: ops.reshape(x, (-1,)),  # would be 3n long
    lambda x: ops.reshape(x, (-1, 6)),  # would be n/2 rows
    lambda x: ops.concatenate([x, x], axis=0),  # 2n rows
    lambda x: ops.pad(x, ((1, 0), (0, 0))),  # n + 1 rows
], ids=["reshape-merge", "reshape-split", "concatenate", "pad"])
def test_a_size_other_than_the_batch_is_refused_on_the_batch_axis(make):
    """Every None is the batch size n (buffers are sized from it): an op whose result
    along the batch axis would be another size fails at trace time, naming the op."""
    graph = Graph("batch_axis")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 3), "float32", "x").id)
        with pytest.raises(ValueError, match="batch"):
            make(x)
        assert ops.reshape(x, (-1, 3, 1)).shape == (None, 3, 1)  # the batch kept: fine


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_backward_numba_matches_reference(compiled, case, dynamic):
    if not case.has_gradient(_reference(case, case.inputs).dtype):
        pytest.skip("not differentiable")
    outcome, variant = compiled.outcome(case, dynamic)
    if outcome.grad_error:
        pytest.fail(f"{case.id}: the backward graph failed:\n{outcome.grad_error}")
    for batch, actual, expected in zip(variant.batches, outcome.grads, outcome.reference_grads):
        for i in case.float_inputs():
            _assert_matches(actual[i], expected[i], f"{case.id}: d loss / d input {i} at batch size {batch}",
                            **_grad_tolerance(expected[i]))


def _loss_graph(case, inputs, weights, with_grads):
    graph = Graph(f"fd_{case.id}")
    with tracing(graph):
        symbols = [SymbolicTensor(graph, graph.add_placeholder(x.shape, x.dtype.name, f"in{i}").id)
                   for i, x in enumerate(inputs)]
        y = bind(case.op, symbols, **case.attrs)
        loss = ops.sum(ops.multiply(y, weights))
        graph.outputs = [loss.node_id]
        if with_grads:
            graph.outputs += gradients(graph, loss.node_id, [symbols[i].node_id for i in case.float_inputs()])
    return graph


def _float64(x):
    return x.astype(np.float64) if x.dtype.kind == "f" else x


def _float64_cases():
    """Cases of ops whose attrs pin their dtypes (control flow holds traced float32 function
    graphs): the op's own float64 samples (OpDef extra["float64_samples"])."""
    cases = []
    for name in sorted(OPS):
        make = OPS[name].extra.get("float64_samples")
        for index, (inputs, attrs) in enumerate(make(_rng(name, "float64")) if make else []):
            cases.append(Case(name, index, [np.asarray(x) for x in inputs], dict(attrs)))
    return cases


GRAD_CASES = [c for c in CASES + _float64_cases()
              if c.opdef.differentiable and ("float64_samples" not in c.opdef.extra or c.inputs[-1].dtype == np.float64)
              and c.has_gradient(_reference(c, [_float64(x) for x in c.inputs]).dtype)]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.id for c in GRAD_CASES])
def test_gradient_rule_matches_finite_differences(case):
    inputs = [_float64(x) for x in case.inputs]
    out = _reference(case, inputs)
    assert out.dtype == np.float64, f"{case.id}: float64 inputs gave a {out.dtype} result"
    weights = _rng(case.id, "fd").standard_normal(out.shape)
    analytic = evaluate(_loss_graph(case, inputs, weights, True), inputs)[0][1:]
    loss_graph = _loss_graph(case, inputs, weights, False)

    def loss(values):
        return float(evaluate(loss_graph, values)[0][0])

    def difference(i, direction, step):
        plus, minus = list(inputs), list(inputs)
        plus[i] = inputs[i] + step * direction
        minus[i] = inputs[i] - step * direction
        return (loss(plus) - loss(minus)) / (2 * step)

    for position, i in enumerate(case.float_inputs()):
        x, grad = inputs[i], analytic[position]
        assert grad.shape == x.shape, f"{case.id}: d loss / d input {i} has shape {grad.shape}"
        if x.size <= FD_ELEMENTS:  # every element
            numeric = np.zeros_like(x)
            for index in np.ndindex(x.shape):
                unit = np.zeros_like(x)
                unit[index] = 1.0
                numeric[index] = difference(i, unit, FD_EPSILON * max(1.0, abs(float(x[index]))))
            np.testing.assert_allclose(grad, numeric, err_msg=f"{case.id}: d loss / d input {i}",
                                       **FD_TOLERANCE)
        else:  # directional derivatives along random directions test every element at once
            rng = _rng(case.id, "directions", i)
            for _ in range(FD_DIRECTIONS):
                direction = rng.standard_normal(x.shape)
                numeric = difference(i, direction, FD_EPSILON * max(1.0, float(np.max(np.abs(x)))))
                np.testing.assert_allclose(np.sum(grad * direction), numeric, **FD_TOLERANCE,
                                           err_msg=f"{case.id}: d loss / d input {i} along a random direction")


# -- composites: kgraph.ops functions built from registered ops --------------------------------
def _composite_input():
    return _rng("composites").standard_normal((3, 4, 5)).astype(np.float32)


def _labels():
    return np.array([[0, 4, 2, 1], [3, 3, 0, 1], [4, 2, 2, 0]], np.int32)


# id -> (kgraph function of x, numpy function of x). x is float32 of shape (3, 4, 5).
COMPOSITES = {
    "softmax": (lambda x: ops.softmax(x), lambda x: scipy.special.softmax(x, axis=-1)),
    "softmax-axis0": (lambda x: ops.softmax(x, axis=0), lambda x: scipy.special.softmax(x, axis=0)),
    "log_softmax": (lambda x: ops.log_softmax(x), lambda x: scipy.special.log_softmax(x, axis=-1)),
    "log_softmax-axis1": (lambda x: ops.log_softmax(x, axis=1),
                          lambda x: scipy.special.log_softmax(x, axis=1)),
    "logsumexp": (lambda x: ops.logsumexp(x), lambda x: scipy.special.logsumexp(x)),
    "logsumexp-axes02-keepdims": (lambda x: ops.logsumexp(x, axis=(0, 2), keepdims=True),
                                  lambda x: scipy.special.logsumexp(x, axis=(0, 2), keepdims=True)),
    "logsumexp-axis1": (lambda x: ops.logsumexp(x, axis=1), lambda x: scipy.special.logsumexp(x, axis=1)),
    "one_hot": (lambda x: ops.one_hot(_labels(), 5), lambda x: np.eye(5, dtype=np.float32)[_labels()]),
    "one_hot-axis0": (lambda x: ops.one_hot(_labels(), 5, axis=0),
                      lambda x: np.moveaxis(np.eye(5, dtype=np.float32)[_labels()], -1, 0)),
    "clip": (lambda x: ops.clip(x, -0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7)),
    "stack-axis1": (lambda x: ops.stack([x, ops.multiply(x, 2.0)], axis=1),
                    lambda x: np.stack([x, x * 2], axis=1)),
    "stack-axis-1": (lambda x: ops.stack([x, x], axis=-1), lambda x: np.stack([x, x], axis=-1)),
    "split-sections": (lambda x: ops.split(x, 2, axis=1)[1], lambda x: np.split(x, 2, axis=1)[1]),
    "split-indices": (lambda x: ops.split(x, [1, 3], axis=2)[1], lambda x: np.split(x, [1, 3], axis=2)[1]),
    "expand_dims": (lambda x: ops.expand_dims(x, 1), lambda x: np.expand_dims(x, 1)),
    "expand_dims-two": (lambda x: ops.expand_dims(x, (0, -1)), lambda x: np.expand_dims(x, (0, -1))),
    "squeeze-axis": (lambda x: ops.squeeze(ops.getitem(x, (slice(None), slice(0, 1))), axis=1),
                     lambda x: np.squeeze(x[:, :1], axis=1)),
    "squeeze-all": (lambda x: ops.squeeze(ops.getitem(x, (slice(0, 1), slice(None), slice(2, 3)))),
                    lambda x: np.squeeze(x[:1, :, 2:3])),
    "sum-axes02": (lambda x: ops.sum(x, axis=(0, 2)), lambda x: np.sum(x, axis=(0, 2))),
    "mean-axes02": (lambda x: ops.mean(x, axis=(0, 2)), lambda x: np.mean(x, axis=(0, 2))),
    "mean-axes02-keepdims": (lambda x: ops.mean(x, axis=(2, 0), keepdims=True),
                             lambda x: np.mean(x, axis=(0, 2), keepdims=True)),
    "mean-axes-negative": (lambda x: ops.mean(x, axis=(-1, 0)), lambda x: np.mean(x, axis=(0, 2))),
    "max-axes02-keepdims": (lambda x: ops.max(x, axis=(0, 2), keepdims=True),
                            lambda x: np.max(x, axis=(0, 2), keepdims=True)),
    "min-axes02": (lambda x: ops.min(x, axis=(0, 2)), lambda x: np.min(x, axis=(0, 2))),
    "prod-axes02": (lambda x: ops.prod(x, axis=(0, 2)), lambda x: np.prod(x, axis=(0, 2))),
    "sum-no-axes": (lambda x: ops.sum(x, axis=()), lambda x: x),
    "var-axes02": (lambda x: ops.var(x, axis=(0, 2)), lambda x: np.var(x, axis=(0, 2))),
    "var-all": (lambda x: ops.var(x), lambda x: np.var(x)),
    "std-axis1-keepdims": (lambda x: ops.std(x, axis=1, keepdims=True),
                           lambda x: np.std(x, axis=1, keepdims=True)),
    "getitem-int": (lambda x: ops.getitem(x, 1), lambda x: x[1]),
    "getitem-negative-int": (lambda x: ops.getitem(x, (slice(None), -1)), lambda x: x[:, -1]),
    "getitem-slices": (lambda x: ops.getitem(x, (slice(None), slice(1, 3))), lambda x: x[:, 1:3]),
    "getitem-ellipsis": (lambda x: ops.getitem(x, (Ellipsis, 0)), lambda x: x[..., 0]),
    "getitem-newaxis": (lambda x: ops.getitem(x, (None, 1, Ellipsis, slice(None, None, 2))),
                        lambda x: x[None, 1, ..., ::2]),
    "getitem-mixed": (lambda x: ops.getitem(x, (slice(1, None), None, -2)), lambda x: x[1:, None, -2]),
    "getitem-negative-step": (lambda x: ops.getitem(x, (slice(None), slice(None, None, -1), slice(1, 4, 2))),
                              lambda x: x[:, ::-1, 1:4:2]),
    "zeros_like": (lambda x: ops.zeros_like(x), lambda x: np.zeros_like(x)),
    "ones_like-int": (lambda x: ops.ones_like(x, dtype="int32"), lambda x: np.ones(x.shape, np.int32)),
    "full_like": (lambda x: ops.full_like(x, 2.5), lambda x: np.full_like(x, 2.5)),
    "argmax-all": (lambda x: ops.argmax(x), lambda x: np.argmax(x)),
    "argmin-axis1": (lambda x: ops.argmin(x, axis=1), lambda x: np.argmin(x, axis=1)),
    "take-axis1": (lambda x: ops.take(x, np.array([[0, -1], [2, 2]], np.int32), axis=1),
                   lambda x: np.take(x, [[0, -1], [2, 2]], axis=1)),
    "take-wrapping": (lambda x: ops.take(x, np.array([[5, -6], [4, -1]], np.int32), axis=1),
                      lambda x: np.take(x, [[5, -6], [4, -1]], axis=1, mode="wrap")),
    "take-flat": (lambda x: ops.take(x, np.array([7, 0, 59], np.int32)), lambda x: np.take(x, [7, 0, 59])),
    "transpose-default": (lambda x: ops.transpose(x), lambda x: np.transpose(x)),
    "swapaxes": (lambda x: ops.swapaxes(x, 0, 2), lambda x: np.swapaxes(x, 0, 2)),
    "reshape": (lambda x: ops.reshape(x, (3, -1)), lambda x: np.reshape(x, (3, -1))),
    "pad-int": (lambda x: ops.pad(x, 1), lambda x: np.pad(x, 1)),
    "matmul-vector": (lambda x: ops.matmul(ops.getitem(x, (0, 0)), ops.transpose(ops.getitem(x, 0))),
                      lambda x: x[0, 0] @ x[0].T),
    "matmul-batched": (lambda x: ops.matmul(x, ops.swapaxes(x, 1, 2)), lambda x: x @ np.swapaxes(x, 1, 2)),
    "where": (lambda x: ops.where(ops.greater(x, 0), x, 0.0), lambda x: np.where(x > 0, x, 0.0)),
    "gelu-exact": (lambda x: ops.gelu(x, approximate=False),
                   lambda x: 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2)))),
    "gelu-tanh": (lambda x: ops.gelu(x),
                  lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
    "elu": (lambda x: ops.elu(x, alpha=0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.1), lambda x: np.where(x >= 0, x, 0.1 * x)),
    "concatenate": (lambda x: ops.concatenate([x, ops.square(x)], axis=-1),
                    lambda x: np.concatenate([x, x ** 2], axis=-1)),
    "broadcast_to": (lambda x: ops.broadcast_to(ops.getitem(x, (slice(None), slice(0, 1))), (2, 3, 4, 5)),
                     lambda x: np.broadcast_to(x[:, :1], (2, 3, 4, 5))),
    "cast": (lambda x: ops.cast(ops.multiply(x, 3.0), "int32"), lambda x: (x * 3).astype(np.int32)),
    "count": (lambda x: ops.sum(ops.ones_like(x), axis=(1, 2)), lambda x: np.full(x.shape[0], 20.0, np.float32)),
    "count-all": (lambda x: ops.multiply(ops.sum(ops.full_like(x, 0.5)), 2.0), lambda x: np.float32(x.size)),
}

# Compiled with a None batch dimension (the ones whose meaning does not pin the batch size).
COMPILED_COMPOSITES = [
    "softmax", "log_softmax-axis1", "logsumexp-axes02-keepdims", "logsumexp-axis1", "clip",
    "stack-axis1", "split-sections", "split-indices", "expand_dims-two", "squeeze-axis",
    "sum-axes02", "mean-axes02", "mean-axes02-keepdims", "max-axes02-keepdims", "min-axes02",
    "prod-axes02", "var-axes02", "var-all", "std-axis1-keepdims", "getitem-negative-int",
    "getitem-ellipsis", "getitem-negative-step", "zeros_like", "full_like", "argmin-axis1",
    "take-axis1", "take-wrapping", "swapaxes", "matmul-batched", "where", "concatenate", "cast", "count", "count-all",
]


def _expected_dtype(value):
    return {"f": np.float32, "i": np.int32, "u": np.int32, "b": np.bool_}[np.asarray(value).dtype.kind]


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_composite_eager_matches_numpy(name):
    fn, reference = COMPOSITES[name]
    x = _composite_input()
    actual = np.asarray(fn(x))
    expected = np.asarray(reference(x))
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, numpy gives {expected.shape}"
    assert actual.dtype == _expected_dtype(expected), f"{name}: dtype {actual.dtype}"
    np.testing.assert_allclose(actual, expected.astype(actual.dtype), rtol=2e-5, atol=1e-6)


@pytest.fixture(scope="module")
def compiled_composites():
    """One graph: every compiled composite of x (None, 4, 5), with d sum(f(x) * w) / dx."""
    graph = Graph("test_ops_composites")
    forward, grads, weights = {}, {}, {}
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 4, 5), "float32", "x").id)
        for name in COMPILED_COMPOSITES:
            y = COMPOSITES[name][0](x)
            forward[name] = len(graph.outputs)
            graph.outputs.append(y.node_id)
            if np.dtype(y.dtype).kind == "f":
                w = graph.add_placeholder(y.shape, y.dtype, f"{name}.w")
                weights[name] = w.id
                loss = ops.sum(ops.multiply(y, SymbolicTensor(graph, w.id)))
                grads[name] = len(graph.outputs)
                graph.outputs += gradients(graph, loss.node_id, [x.node_id])
    executable = compile_graph(graph)
    runs = []
    for n in (3, 2):
        x_value = _with_batch(_composite_input(), n)
        feeds = [x_value]
        for node_id in graph.inputs[1:]:
            name = graph.node(node_id).name[:-2]
            shape = tuple(n if d is None else d for d in graph.node(node_id).shape)
            feeds.append(_rng(name, "w", n).standard_normal(shape).astype(np.float32))
        compiled = [np.array(o) for o in executable(*feeds)]
        reference = evaluate(graph, feeds)[0]
        runs.append((x_value, compiled, reference))
    return forward, grads, runs


@pytest.mark.parametrize("name", COMPILED_COMPOSITES)
def test_composite_compiled_matches_numpy(compiled_composites, name):
    forward, grads, runs = compiled_composites
    for x, compiled, reference in runs:
        expected = np.asarray(COMPOSITES[name][1](x))
        expected = expected.astype(_expected_dtype(expected))
        _assert_matches(compiled[forward[name]], expected, f"{name} at batch {x.shape[0]}", **FORWARD_TOLERANCE)
        if name in grads:
            _assert_matches(compiled[grads[name]], reference[grads[name]],
                            f"{name}: d loss / dx at batch {x.shape[0]}", **_grad_tolerance(reference[grads[name]]))


GRADIENT_COMPOSITES = [name for name in COMPILED_COMPOSITES
                       if name not in ("argmin-axis1", "cast", "count", "count-all")]


@pytest.mark.parametrize("name", GRADIENT_COMPOSITES)
def test_composite_gradient_matches_finite_differences(name):
    """The composite's gradient (its ops' rules, reference interpreter, float64) against
    central differences of the numpy function."""
    fn, reference = COMPOSITES[name]
    x = _composite_input().astype(np.float64)
    w = _rng(name, "fd").standard_normal(np.shape(reference(x)))
    graph = Graph(f"fd_{name}")
    with tracing(graph):
        symbol = SymbolicTensor(graph, graph.add_placeholder(x.shape, "float64", "x").id)
        y = fn(symbol)
        assert y.dtype == "float64"
        loss = ops.sum(ops.multiply(y, w))
        graph.outputs = gradients(graph, loss.node_id, [symbol.node_id])
    analytic = evaluate(graph, [x])[0][0]
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = FD_EPSILON * max(1.0, abs(float(x[index])))
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        numeric[index] = (np.sum(reference(plus) * w) - np.sum(reference(minus) * w)) / (2 * step)
    np.testing.assert_allclose(analytic, numeric, **FD_TOLERANCE)


def test_reductions_of_zero_d_arrays_follow_numpy():
    for value in (np.array(3, "int32"), np.float32(2.5), np.array(True)):
        np.testing.assert_allclose(ops.mean(value), np.mean(value))
        np.testing.assert_allclose(ops.sum(value), np.sum(value))
        np.testing.assert_allclose(ops.max(value), np.max(value))
