"""The numba backend's 2-D GEMM (kgraph.ops.matmul's kernel) on products large enough to be
split over threads, along rows (m > n) and along columns (n >= m), with every transpose
flag, against float64 numpy; and a small product (one BLAS call) with a fused epilogue.

The thread split only runs where numba has more than one thread; with one it checks the
single call. All products share one compiled graph.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from kgraph import ops
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.ops.registry import bind

# (m, n, k): each over two blocks of MIN_WORK_PER_THREAD multiply-adds (so split), with
# uneven halves; the last one small (a single call).
SHAPES = {"rows": (401, 97, 530), "columns": (97, 403, 530), "square": (257, 257, 260), "small": (33, 17, 9)}
matmul_module = importlib.import_module("kgraph.ops.matmul")  # (kgraph.ops.matmul is also a function)
FLAGS = [(False, False), (True, False), (False, True), (True, True)]


def _operand(rng, rows, cols, transposed):
    value = rng.standard_normal((cols, rows) if transposed else (rows, cols)).astype(np.float32)
    return value, (value.T if transposed else value).astype(np.float64)


@pytest.fixture(scope="module")
def products():
    rng = np.random.default_rng(7)
    graph = Graph("gemm_threads")
    feeds, expected, names = [], [], []
    with tracing(graph):
        for name, (m, n, k) in SHAPES.items():
            for ta, tb in FLAGS:
                a, a64 = _operand(rng, m, k, ta)
                b, b64 = _operand(rng, k, n, tb)
                sa = SymbolicTensor(graph, graph.add_placeholder(a.shape, "float32", f"{name}.a").id)
                sb = SymbolicTensor(graph, graph.add_placeholder(b.shape, "float32", f"{name}.b").id)
                y = bind("matmul", [sa, sb], transpose_a=ta, transpose_b=tb)
                want = a64 @ b64
                if name == "small":  # a fused epilogue on the single-call path
                    y = ops.relu(ops.add(y, 1.0))
                    want = np.maximum(want + 1.0, 0.0)
                graph.outputs.append(y.node_id)
                feeds += [a, b]
                expected.append(want)
                names.append(f"{name}-ta{int(ta)}-tb{int(tb)}")
    executable = compile_graph(graph)
    results = [np.array(r) for r in executable(*feeds)]
    return dict(zip(names, zip(results, expected)))


def test_the_shapes_cover_both_splits():
    threshold = 2 * matmul_module.MIN_WORK_PER_THREAD
    for name, (m, n, k) in SHAPES.items():
        assert (m * n * k >= threshold) == (name != "small"), name
    assert SHAPES["rows"][0] > SHAPES["rows"][1] and SHAPES["columns"][1] > SHAPES["columns"][0]


@pytest.mark.parametrize("name", [f"{s}-ta{int(ta)}-tb{int(tb)}" for s in SHAPES for ta, tb in FLAGS])
def test_gemm_matches_float64_numpy(products, name):
    got, want = products[name]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
