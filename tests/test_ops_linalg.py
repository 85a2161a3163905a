"""kgraph.ops linear algebra on LAPACK (kgraph/ops/linalg_lapack.py) against numpy and scipy
formulas written here: eagerly in float32, compiled with numba in float64, and gradients
(compiled, float64) against central finite differences of the numpy formula.

Factors are not unique (the signs of Q's, U's and V's columns), so the factorizations are
checked through invariants: the matrix they rebuild, orthonormality, and sign-free values
(singular values, eigenvalues, squared entries). All compiled cases share one graph.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from kgraph import ops
from kgraph.compiler.autodiff import gradients
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.ir import Graph, SymbolicTensor, tracing

FD_STEP = 1e-6


def _inputs():
    """Well-conditioned float64 inputs: square (batched), tall, wide, symmetric positive
    definite (batched), non-symmetric with real distinct eigenvalues, right-hand sides."""
    rng = np.random.default_rng(3)
    square = rng.standard_normal((2, 3, 3)) + 2.0 * np.eye(3)
    half = rng.standard_normal((2, 3, 3))
    spd = half @ np.swapaxes(half, -1, -2) + np.diag([1.0, 2.0, 3.0])
    noise = 0.2 * rng.standard_normal((2, 3, 3))
    low_rank = rng.standard_normal((4, 2)) @ rng.standard_normal((2, 3))
    return {"square": square, "tall": rng.standard_normal((4, 3)), "wide": rng.standard_normal((3, 5)),
            "spd": spd, "real_eig": spd + noise - 0.5 * np.swapaxes(noise, -1, -2),
            "rhs": rng.standard_normal((2, 3, 2)), "vector": rng.standard_normal(3),
            "tall_rhs": rng.standard_normal((4, 2)), "low_rank": low_rank, "pivoting": rng.standard_normal((4, 4))}


def _flat(*xs):
    return ops.concatenate([ops.reshape(x, (-1,)) for x in xs], axis=0)


def _np_flat(*xs):
    return np.concatenate([np.reshape(x, -1) for x in xs])


def _np_sq(x):
    return x * x


def _sq(x):
    return ops.multiply(x, x)


def _np_eig(x):
    w, v = np.linalg.eig(x)
    order = np.argsort(w, axis=-1)
    return np.take_along_axis(w, order, -1), np.take_along_axis(v, order[..., None, :], -1)


# name: (inputs, kgraph function, numpy formula); the signs of factors enter squared.
CASES = {
    "inv": (["square"], ops.inv, np.linalg.inv),
    "solve": (["square", "rhs"], ops.solve, np.linalg.solve),
    "solve_vector": (["square", "vector"], lambda a, b: ops.solve(a[0], b),
                     lambda a, b: np.linalg.inv(a[0]) @ b),
    "det": (["square"], ops.det, np.linalg.det),
    "slogdet": (["square"], lambda x: ops.stack(ops.slogdet(x), axis=-1),
                lambda x: np.stack(np.linalg.slogdet(x), axis=-1)),
    "logdet": (["spd"], ops.logdet, lambda x: np.log(np.linalg.det(x))),
    "qr_tall": (["tall"], lambda x: _flat(*map(_sq, ops.qr(x))),
                lambda x: _np_flat(*map(_np_sq, np.linalg.qr(x)))),
    "qr_wide": (["wide"], lambda x: _flat(*map(_sq, ops.qr(x))),
                lambda x: _np_flat(*map(_np_sq, np.linalg.qr(x)))),
    "qr_complete_square": (["square"], lambda x: _flat(*map(_sq, ops.qr(x, mode="complete"))),
                           lambda x: _np_flat(*map(_np_sq, np.linalg.qr(x, mode="complete")))),
    "svd_tall": (["tall"], lambda x: _flat(*map(_sq, ops.svd(x, full_matrices=False))),
                 lambda x: _np_flat(*map(_np_sq, np.linalg.svd(x, full_matrices=False)))),
    "svd_wide": (["wide"], lambda x: _flat(*map(_sq, ops.svd(x, full_matrices=False))),
                 lambda x: _np_flat(*map(_np_sq, np.linalg.svd(x, full_matrices=False)))),
    "svd_square_full": (["square"], lambda x: _flat(*map(_sq, ops.svd(x))),
                        lambda x: _np_flat(*map(_np_sq, np.linalg.svd(x)))),
    "svd_values": (["wide"], lambda x: ops.svd(x, compute_uv=False),
                   lambda x: np.linalg.svd(x, compute_uv=False)),
    "eigh": (["spd"], lambda x: _flat(*map(_sq, ops.eigh(x))), lambda x: _np_flat(*map(_np_sq, np.linalg.eigh(x)))),
    "eig": (["real_eig"], lambda x: _flat(*map(_sq, ops.eig(x))), lambda x: _np_flat(*map(_np_sq, _np_eig(x)))),
    "pinv_tall": (["tall"], ops.pinv, np.linalg.pinv),
    "pinv_wide": (["wide"], ops.pinv, np.linalg.pinv),
    "lstsq": (["tall", "tall_rhs"], ops.lstsq, lambda a, b: np.linalg.lstsq(a, b)[0]),
    "lstsq_vector": (["tall", "vector"], lambda a, b: ops.lstsq(ops.transpose(a)[:, :3], b),
                     lambda a, b: np.linalg.lstsq(a.T[:, :3], b)[0]),
    "lu_factor": (["pivoting"], lambda x: ops.lu_factor(x)[0], lambda x: scipy.linalg.lu_factor(x)[0]),
    "lu_factor_batched": (["square"], lambda x: ops.lu_factor(x)[0],
                          lambda x: np.stack([scipy.linalg.lu_factor(m)[0] for m in x])),
    "norm_nuc": (["tall"], lambda x: ops.norm(x, ord="nuc"), lambda x: np.linalg.norm(x, "nuc")),
    "norm_spectral": (["square"], lambda x: ops.norm(x, ord=2, axis=(-1, -2), keepdims=True),
                      lambda x: np.linalg.norm(x, 2, axis=(-1, -2), keepdims=True)),
    "norm_smallest": (["wide"], lambda x: ops.norm(x, ord=-2, axis=(1, 0)),
                      lambda x: np.linalg.norm(x, -2, axis=(1, 0))),
}
# Integer results (or non-square LU): checked forward only.
FORWARD_CASES = {
    "matrix_rank": (["low_rank"], ops.matrix_rank, lambda x: np.linalg.matrix_rank(x)),
    "matrix_rank_batched": (["square"], ops.matrix_rank, lambda x: np.linalg.matrix_rank(x)),
    "lu_pivots": (["pivoting"], lambda x: ops.lu_factor(x)[1], lambda x: scipy.linalg.lu_factor(x)[1]),
    "lu_factor_tall": (["tall"], lambda x: ops.lu_factor(x)[0], lambda x: scipy.linalg.lu_factor(x)[0]),
    "lu_pivots_wide": (["wide"], lambda x: ops.lu_factor(x)[1], lambda x: scipy.linalg.lu_factor(x)[1]),
}
# Raw factors, compiled, for the invariant checks.
FACTORS = {
    "qr_tall": ("tall", lambda x: ops.qr(x)),
    "qr_complete_tall": ("tall", lambda x: ops.qr(x, mode="complete")),
    "qr_wide": ("wide", lambda x: ops.qr(x)),
    "svd_square": ("square", lambda x: ops.svd(x)),
    "svd_tall_full": ("tall", lambda x: ops.svd(x)),
    "svd_wide": ("wide", lambda x: ops.svd(x, full_matrices=False)),
    "eigh": ("spd", lambda x: ops.eigh(x)),
    "eig": ("real_eig", lambda x: ops.eig(x)),
}


JVP_TANGENT = np.random.default_rng(9).standard_normal((2, 3, 3))


@pytest.fixture(scope="module")
def compiled():
    """One float64 graph: every case's output, d sum(f * w) / d input for CASES, and FACTORS."""
    values = _inputs()
    graph = Graph("test_ops_linalg")
    rng = np.random.default_rng(5)
    index, weights = {}, {}
    with tracing(graph):
        symbols = {name: SymbolicTensor(graph, graph.add_placeholder(v.shape, "float64", name).id)
                   for name, v in values.items()}
        for name, (names, fn, _) in {**CASES, **FORWARD_CASES}.items():
            y = fn(*[symbols[n] for n in names])
            index[name] = [len(graph.outputs)]
            graph.outputs.append(y.node_id)
            if name in CASES:
                weights[name] = rng.standard_normal(y.shape)
                loss = ops.sum(ops.multiply(y, weights[name]))
                index[name].append(len(graph.outputs))
                graph.outputs += gradients(graph, loss.node_id, [symbols[n].node_id for n in names])
        for name, (source, fn) in FACTORS.items():
            index["factors/" + name] = len(graph.outputs)
            graph.outputs += [f.node_id for f in fn(symbols[source])]
        # forward mode on symbolic tensors: (inv, det) along a fixed tangent
        _, pushed = ops.linalg.jvp(lambda x: (ops.inv(x), ops.det(x)), (symbols["square"],), (JVP_TANGENT,))
        index["jvp"] = len(graph.outputs)
        graph.outputs += [p.node_id for p in pushed]
    executable = compile_graph(graph)
    outputs = [np.array(o) for o in executable(*[values[n] for n in values])]
    return values, outputs, index, weights


@pytest.mark.parametrize("name", sorted(CASES) + sorted(FORWARD_CASES))
def test_compiled_matches_numpy(compiled, name):
    values, outputs, index, _ = compiled
    assert list(scipy.linalg.lu_factor(values["pivoting"])[1]) != [0, 1, 2, 3], "the LU case must swap rows"
    names, _, reference = {**CASES, **FORWARD_CASES}[name]
    expected = np.asarray(reference(*[values[n] for n in names]))
    actual = outputs[index[name][0]]
    assert actual.shape == expected.shape, f"{name}: compiled shape {actual.shape}, numpy {expected.shape}"
    if expected.dtype.kind in "iu":
        assert actual.dtype == np.int32, f"{name}: dtype {actual.dtype}"
        np.testing.assert_array_equal(actual, expected)
    else:
        assert actual.dtype == np.float64, f"{name}: dtype {actual.dtype}"
        np.testing.assert_allclose(actual, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_gradient_matches_finite_differences(compiled, name):
    values, outputs, index, weights = compiled
    names, _, reference = CASES[name]
    w = weights[name]
    for k, input_name in enumerate(names):
        analytic = outputs[index[name][1] + k]
        numeric = np.zeros_like(values[input_name])
        for position in np.ndindex(numeric.shape):
            args = {}
            for step in (FD_STEP, -FD_STEP):
                moved = values[input_name].copy()
                moved[position] += step
                args[step] = [moved if n == input_name else values[n] for n in names]
            numeric[position] = (np.sum(reference(*args[FD_STEP]) * w)
                                 - np.sum(reference(*args[-FD_STEP]) * w)) / (2 * FD_STEP)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6, err_msg=f"{name}: d loss / d {input_name}")


def _orthonormal_columns(q):
    k = q.shape[-1]
    np.testing.assert_allclose(np.swapaxes(q, -1, -2) @ q, np.broadcast_to(np.eye(k), q.shape[:-2] + (k, k)),
                               atol=1e-10)


def test_compiled_factors_rebuild_the_matrix(compiled):
    values, outputs, index, _ = compiled

    def factors(name, count):
        start = index["factors/" + name]
        return outputs[start:start + count]

    for name, source, shapes in [("qr_tall", "tall", [(4, 3), (3, 3)]), ("qr_complete_tall", "tall", [(4, 4), (4, 3)]),
                                 ("qr_wide", "wide", [(3, 3), (3, 5)])]:
        q, r = factors(name, 2)
        assert [q.shape, r.shape] == shapes, name
        _orthonormal_columns(q)
        np.testing.assert_allclose(r, np.triu(r), atol=0, err_msg=f"{name}: R is upper triangular")
        np.testing.assert_allclose(q @ r, values[source], atol=1e-10, err_msg=name)
        np.testing.assert_allclose(np.abs(np.diagonal(r)), np.abs(np.diagonal(np.linalg.qr(values[source])[1])),
                                   atol=1e-10, err_msg=name)
    for name, source in [("svd_square", "square"), ("svd_tall_full", "tall"), ("svd_wide", "wide")]:
        u, s, vh = factors(name, 3)
        x = values[source]
        _orthonormal_columns(u)
        _orthonormal_columns(np.swapaxes(vh, -1, -2))
        np.testing.assert_allclose(s, np.linalg.svd(x, compute_uv=False), atol=1e-10, err_msg=name)
        k = s.shape[-1]
        rebuilt = (u[..., :, :k] * s[..., None, :]) @ vh[..., :k, :]
        np.testing.assert_allclose(rebuilt, x, atol=1e-10, err_msg=name)
    w, v = factors("eigh", 2)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(values["spd"]), atol=1e-10)
    _orthonormal_columns(v)
    np.testing.assert_allclose(values["spd"] @ v, v * w[..., None, :], atol=1e-10)
    w, v = factors("eig", 2)
    np.testing.assert_allclose(w, np.sort(np.linalg.eigvals(values["real_eig"]).real, -1), atol=1e-10)
    np.testing.assert_allclose(values["real_eig"] @ v, v * w[..., None, :], atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-2), 1.0, atol=1e-12)


# -- eager (float32, reference interpreter) ----------------------------------------------------------
def test_eager_float32_and_batched():
    values = {k: v.astype(np.float32) for k, v in _inputs().items()}
    x = values["square"]
    tolerance = dict(rtol=2e-5, atol=2e-5)
    results = {
        "inv": (ops.inv(x), np.linalg.inv(x)),
        "solve": (ops.solve(x, values["rhs"]), np.linalg.solve(x, values["rhs"])),
        "det": (ops.det(x), np.linalg.det(x)),
        "logdet": (ops.logdet(values["spd"]), np.log(np.linalg.det(values["spd"]))),
        "pinv": (ops.pinv(values["wide"]), np.linalg.pinv(values["wide"])),
        "lstsq": (ops.lstsq(values["tall"], values["tall_rhs"]),
                  np.linalg.lstsq(values["tall"], values["tall_rhs"])[0]),
        "svd": (ops.svd(x, compute_uv=False), np.linalg.svd(x, compute_uv=False)),
        "eigh": (ops.eigh(values["spd"])[0], np.linalg.eigvalsh(values["spd"])),
    }
    for name, (actual, expected) in results.items():
        assert np.asarray(actual).dtype == np.float32, f"{name}: dtype {np.asarray(actual).dtype}"
        np.testing.assert_allclose(actual, expected, err_msg=name, **tolerance)
    sign, logabsdet = ops.slogdet(x)
    np.testing.assert_allclose(sign * np.exp(logabsdet), np.linalg.det(x), **tolerance)
    # integers become float32, as Keras
    ints = np.array([[2, 1], [1, 3]], np.int32)
    assert np.asarray(ops.inv(ints)).dtype == np.float32
    np.testing.assert_allclose(ops.det(ints), 5.0, rtol=1e-6)
    assert np.asarray(ops.matrix_rank(np.ones((3, 3)))).dtype == np.int32
    assert int(ops.matrix_rank(np.ones((3, 3)))) == 1
    assert int(ops.matrix_rank(np.eye(3), tol=0.5)) == 3


def test_svd_and_qr_shapes_follow_keras():
    x = np.zeros((2, 5, 3), np.float32) + np.eye(5, 3, dtype=np.float32)
    assert [t.shape for t in ops.svd(x)] == [(2, 5, 5), (2, 3), (2, 3, 3)]
    assert [t.shape for t in ops.svd(x, full_matrices=False)] == [(2, 5, 3), (2, 3), (2, 3, 3)]
    assert ops.svd(x, compute_uv=False).shape == (2, 3)
    assert [t.shape for t in ops.qr(x)] == [(2, 5, 3), (2, 3, 3)]
    assert [t.shape for t in ops.qr(x, mode="complete")] == [(2, 5, 5), (2, 5, 3)]
    lu, pivots = ops.lu_factor(x)
    assert lu.shape == (2, 5, 3) and pivots.shape == (2, 3) and pivots.dtype == np.int32


def test_a_batch_dimension_of_none_is_kept():
    from kgraph.runtime.reference import evaluate

    graph = Graph("linalg_batch")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 3, 3), "float32", "x").id)
        q, r = ops.qr(x)
        w, v = ops.eigh(x)
        outputs = [ops.inv(x), q, r, w, v, ops.det(x)]
        graph.outputs = [o.node_id for o in outputs]
    assert [o.shape for o in outputs] == [(None, 3, 3), (None, 3, 3), (None, 3, 3), (None, 3), (None, 3, 3), (None,)]
    value = _inputs()["spd"].astype(np.float32)
    inverse, q, r, w, v, d = evaluate(graph, [value])[0]
    np.testing.assert_allclose(inverse, np.linalg.inv(value), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(q @ r, value, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(value), rtol=1e-5)
    np.testing.assert_allclose(d, np.linalg.det(value), rtol=1e-5)


def test_namespaces():
    for name in ("inv", "solve", "det", "eig", "eigh", "lstsq", "lu_factor", "matrix_rank", "pinv", "qr", "svd"):
        assert getattr(ops.linalg, name) is getattr(ops, name), name
    assert ops.numpy.slogdet is ops.slogdet
    assert callable(ops.logdet)


# -- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["inv", "det", "slogdet", "logdet", "eigh", "eig"])
def test_non_square_and_rank_one_inputs_are_refused(name):
    fn = getattr(ops, name)
    with pytest.raises(ValueError, match=rf"{name}: expected square matrices .* got shape \(2, 3\)"):
        fn(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=rf"{name}: expected a tensor of rank >= 2 .* got shape \(3,\)"):
        fn(np.ones(3, np.float32))


def test_bad_arguments_are_refused_with_a_message():
    for name in ("qr", "svd", "pinv", "matrix_rank", "lu_factor"):
        with pytest.raises(ValueError, match=rf"{name}: expected a tensor of rank >= 2"):
            getattr(ops, name)(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="qr: mode must be one of 'reduced', 'complete', got 'r'"):
        ops.qr(np.eye(2), mode="r")
    with pytest.raises(ValueError, match=r"solve: b must be \(3,\) or \(\.\.\., 3, K\)"):
        ops.solve(np.eye(3), np.ones(4))
    with pytest.raises(ValueError, match="lstsq: expected a to have rank 2"):
        ops.lstsq(np.ones((2, 3, 3)), np.ones(3))
    with pytest.raises(ValueError, match=r"lstsq: expected b of shape \(3,\) or \(3, K\)"):
        ops.lstsq(np.ones((3, 2)), np.ones(4))
    with pytest.raises(ValueError, match="eig: the matrix has complex eigenvalues"):
        ops.eig(np.array([[0.0, -1.0], [1.0, 0.0]], np.float32))


@pytest.mark.parametrize("fn, message", [
    (lambda x: ops.qr(x, mode="complete")[0], "qr: the gradient of mode='complete' with more rows"),
    (lambda x: ops.svd(x)[0], "svd: the gradient of full_matrices=True for non-square"),
    (lambda x: ops.lu_factor(x)[0], "lu_factor: the gradient is defined for square matrices only, got 4 x 3"),
])
def test_gradients_that_are_not_defined_say_so(fn, message):
    graph = Graph("linalg_grad_errors")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((4, 3), "float64", "x").id)
        loss = ops.sum(fn(x))
        with pytest.raises(NotImplementedError, match=message):
            gradients(graph, loss.node_id, [x.node_id])


def test_compiled_eig_with_complex_eigenvalues_raises():
    graph = Graph("linalg_eig_complex")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((2, 2), "float64", "x").id)
        graph.outputs = [ops.eig(x)[0].node_id]
    executable = compile_graph(graph)
    np.testing.assert_allclose(executable(np.array([[2.0, 0.0], [1.0, 3.0]]))[0], [2.0, 3.0])
    with pytest.raises(ValueError, match="eig: the matrix has complex eigenvalues"):
        executable(np.array([[0.0, -1.0], [1.0, 0.0]]))


def test_onnx_inverse_and_solve_through_the_adjugate():
    import onnxruntime as ort

    from kgraph.exporters.onnx import convert

    graph = Graph("linalg_onnx_inverse")
    with tracing(graph):
        a = SymbolicTensor(graph, graph.add_placeholder((None, 5, 5), "float64", "a").id)
        b = SymbolicTensor(graph, graph.add_placeholder((None, 5, 2), "float64", "b").id)
        graph.outputs = [ops.inv(a).node_id, ops.solve(a, b).node_id, ops.det(a).node_id]
    graph.output_names = ["inverse", "solution", "det"]
    model, _ = convert(graph)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    a_value, b_value = rng.standard_normal((3, 5, 5)) + 3 * np.eye(5), rng.standard_normal((3, 5, 2))
    inverse, solution, det = session.run(None, {"a": a_value, "b": b_value})
    # onnxruntime's Det is float32 only: float64 matrices go through float32 determinants
    np.testing.assert_allclose(inverse, np.linalg.inv(a_value), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(solution, np.linalg.solve(a_value, b_value), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(det, np.linalg.det(a_value), rtol=1e-6)


def test_onnx_export_names_the_op_it_cannot_export():
    from kgraph.exporters import OnnxExportError, export_onnx

    graph = Graph("linalg_onnx")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((3, 3), "float32", "x").id)
        graph.outputs = [ops.qr(x)[0].node_id]
    with pytest.raises(OnnxExportError, match="op 'qr'.*has no ONNX mapping"):
        export_onnx(graph)


# -- jvp -------------------------------------------------------------------------------------------------
def _directional(fn, xs, ts, step=1e-6):
    """Central differences of numpy function fn along ts."""
    plus = fn(*[x + step * t for x, t in zip(xs, ts)])
    minus = fn(*[x - step * t for x, t in zip(xs, ts)])
    return [(p - m) / (2 * step) for p, m in zip(plus, minus)]


def test_compiled_jvp_matches_directional_differences(compiled):
    values, outputs, index, _ = compiled
    start = index["jvp"]
    expected = _directional(lambda x: (np.linalg.inv(x), np.linalg.det(x)), [values["square"]], [JVP_TANGENT])
    for actual, wanted, name in zip(outputs[start:start + 2], expected, ("inv", "det")):
        np.testing.assert_allclose(actual, wanted, rtol=1e-6, atol=1e-8, err_msg=name)


def test_jvp_eagerly_with_structures_and_aux():
    rng = np.random.default_rng(4)
    x, w, tx, tw = (rng.standard_normal(s) for s in ((2, 4), (4, 3), (2, 4), (4, 3)))

    def fn(x, w):
        y = ops.matmul(x, w)
        return {"softmax": ops.softmax(ops.tanh(y)), "sum": ops.sum(ops.square(y))}, y

    def np_fn(x, w):
        z = np.exp(np.tanh(x @ w))
        return z / z.sum(-1, keepdims=True), np.sum((x @ w) ** 2)

    primals_out, tangents_out, aux = ops.linalg.jvp(fn, (x, w), (tx, tw), has_aux=True)
    softmax, total = np_fn(x, w)
    np.testing.assert_allclose(primals_out["softmax"], softmax, rtol=1e-12)
    np.testing.assert_allclose(aux, x @ w, rtol=1e-12)
    d_softmax, d_total = _directional(np_fn, [x, w], [tx, tw])
    np.testing.assert_allclose(tangents_out["softmax"], d_softmax, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(tangents_out["sum"], d_total, rtol=1e-6)
    primal, tangent = ops.jvp(ops.sin, (np.float32(0.1),), (np.float32(0.2),))  # Keras's docstring example
    np.testing.assert_allclose([primal, tangent], [np.sin(0.1), 0.2 * np.cos(0.1)], rtol=1e-6)
    with pytest.raises(ValueError, match=r"jvp: a tangent of shape \(3,\) for a primal of shape \(2,\)"):
        ops.jvp(ops.sin, (np.ones(2),), (np.ones(3),))
    with pytest.raises(ValueError, match="jvp: primals and tangents must have the same structure"):
        ops.jvp(ops.add, (np.ones(2), np.ones(2)), (np.ones(2),))


# -- Keras 3 itself (optional: KGRAPH_KERAS_PYTHON) ---------------------------------------------------
_KERAS_LINALG = """
import sys
import numpy as np
from keras import ops
data = dict(np.load(sys.argv[1]))
x, spd, tall, rhs = data["square"], data["spd"], data["tall"], data["tall_rhs"]
out = {}
out["inv"] = ops.inv(x)
out["solve"] = ops.solve(x, data["rhs"])
out["det"] = ops.det(x)
out["slogdet_sign"], out["slogdet_log"] = ops.slogdet(x)
out["logdet"] = ops.logdet(spd)
out["lstsq"] = ops.lstsq(tall, rhs)
out["pinv"] = ops.pinv(tall)
out["matrix_rank"] = ops.matrix_rank(data["low_rank"])
out["singular_values"] = ops.svd(x, compute_uv=False)
out["eigenvalues"] = ops.eigh(spd)[0]
out["lu"], out["pivots"] = ops.lu_factor(x)
out["qr_r_diagonal"] = np.abs(np.diagonal(ops.convert_to_numpy(ops.qr(tall)[1]), axis1=-2, axis2=-1))
for mode in ("reduced", "complete"):
    out["qr_shapes_" + mode] = np.array([ops.qr(tall, mode=mode)[i].shape for i in range(2)])
for full in (True, False):
    out["svd_shapes_" + str(full)] = np.array([ops.svd(tall, full_matrices=full)[i].shape[-1] for i in range(3)])
out["norm_nuc"] = ops.norm(tall, ord="nuc")
out["jvp"] = ops.jvp(ops.inv, (x[0],), (data["rhs"][0, :, :1] @ data["rhs"][0, :, 1:].T,))[1]
np.savez(sys.argv[2], **{k: ops.convert_to_numpy(v) for k, v in out.items()})
"""


def test_matches_keras(tmp_path):
    import os
    import subprocess

    from keras_reference import SKIP_REASON, keras_python

    python = keras_python()
    if python is None:
        pytest.skip(SKIP_REASON)
    values = {k: v.astype(np.float32) for k, v in _inputs().items()}
    np.savez(tmp_path / "in.npz", **values)
    (tmp_path / "run.py").write_text(_KERAS_LINALG)
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KGRAPH_KERAS_BACKEND", "jax"))
    subprocess.run([python, str(tmp_path / "run.py"), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   check=True, env=env, capture_output=True)
    keras = dict(np.load(tmp_path / "out.npz"))
    x, spd, tall = values["square"], values["spd"], values["tall"]
    ours = {"inv": ops.inv(x), "solve": ops.solve(x, values["rhs"]), "det": ops.det(x),
            "slogdet_sign": ops.slogdet(x)[0], "slogdet_log": ops.slogdet(x)[1], "logdet": ops.logdet(spd),
            "lstsq": ops.lstsq(tall, values["tall_rhs"]), "pinv": ops.pinv(tall),
            "matrix_rank": ops.matrix_rank(values["low_rank"]), "singular_values": ops.svd(x, compute_uv=False),
            "eigenvalues": ops.eigh(spd)[0], "lu": ops.lu_factor(x)[0], "pivots": ops.lu_factor(x)[1],
            "qr_r_diagonal": np.abs(np.diagonal(ops.qr(tall)[1], axis1=-2, axis2=-1)),
            "norm_nuc": ops.norm(tall, ord="nuc"),
            "jvp": ops.jvp(ops.inv, (x[0],), (values["rhs"][0, :, :1] @ values["rhs"][0, :, 1:].T,))[1]}
    for mode in ("reduced", "complete"):
        ours["qr_shapes_" + mode] = np.array([t.shape for t in ops.qr(tall, mode=mode)])
    for full in (True, False):
        ours["svd_shapes_" + str(full)] = np.array([t.shape[-1] for t in ops.svd(tall, full_matrices=full)])
    assert sorted(ours) == sorted(keras)
    for name, value in ours.items():
        value = np.asarray(value)
        assert value.shape == keras[name].shape, f"{name}: shape {value.shape}, Keras {keras[name].shape}"
        if keras[name].dtype.kind in "iu":
            assert value.dtype == keras[name].dtype, f"{name}: dtype {value.dtype}, Keras {keras[name].dtype}"
            np.testing.assert_array_equal(value, keras[name], err_msg=name)
        else:
            np.testing.assert_allclose(value, keras[name], rtol=1e-4, atol=1e-5, err_msg=name)
