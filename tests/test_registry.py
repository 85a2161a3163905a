"""Registry completeness: for every op, the concerns it lacks (the project's to-do list).

Concerns: shape (infer rule), reference (numpy), grad (a rule, unless the op is declared
not differentiable), and one column per backend: numba, triton, onnx. A backend in
PENDING_BACKENDS has not landed: its column is listed but does not fail the test. When a
backend lands, remove it from PENDING_BACKENDS (and give it a probe below if its hook
differs), and every op it cannot handle fails here.

`pytest -s tests/test_registry.py` prints the table; a failure shows it too.
"""

from __future__ import annotations

import importlib

from kgraph.compiler.lower.numba import codegen as numba_codegen
from kgraph.compiler.lower.numba import control as numba_control
from kgraph.compiler.lower.triton import codegen as triton_codegen
from kgraph.ops import OPS
from kgraph.ops.registry import ELEMENTWISE

# Landed backends are those not listed here (numba, triton and onnx are enforced: an op
# registered without a kernel, a Triton rendering or an ONNX_OPS entry fails the test).
PENDING_BACKENDS = ()
# Single gaps, each with its reason: {op: {backend: why}}. A gap that closes must leave.
KNOWN_GAPS: dict[str, dict[str, str]] = {
    **{f"{cell}_sequence{suffix}": {"triton": "the recurrences' time loop has no Triton kernel yet (numba and ONNX "
                                              "only; see docs/recurrent.md)"}
       for cell in ("simple_rnn", "lstm", "gru") for suffix in ("", "_grad")},
    **{name: {"triton": "the fused attention kernel is CPU-only (numba and ONNX); on the GPU the layers keep the "
                        "unfused matmul/softmax path, which Triton renders"}
       for name in ("attention", "attention_grad")},
    **{name: {reason: "only the numba compiler's conv-pool rewrite (kgraph/compiler/passes/conv_pool.py) makes "
                      "it, after tracing: exported and Triton graphs keep conv, relu and pool"
              for reason in ("triton", "onnx")}
       for name in ("conv_pool", "conv_pool_filter_grad")},
    "rnn_weight_grad": {"triton": "the recurrent kernels' gradient contraction has no Triton kernel yet"},
    "sequence_matmul": {"triton": "the recurrent layers' input projection has no Triton kernel yet"},
    "match_batch": {"triton": "only stateful recurrent layers use it, and the recurrences have no Triton kernel yet"},
    **{name: {"triton": "LAPACK on the GPU (cuSOLVER) is not wired in: linear algebra runs with numba on the CPU",
              "onnx": "ONNX has no matrix factorization op (Det only; inv and solve go through the adjugate)"}
       for name in ("qr", "svd", "eigh", "eig", "pinv", "lu_factor")},
    **{name: {"triton": "LAPACK on the GPU (cuSOLVER) is not wired in: linear algebra runs with numba on the CPU"}
       for name in ("det", "slogdet", "inv", "solve")},
    **{name: {"triton": "no loops or branches on Triton yet: kgraph/compiler/passes/expand_control.py unrolls a "
                        "scan of static length and selects a switch's branch with where before lowering; a "
                        "while_loop is refused with its reason"}
       for name in ("scan", "switch", "while_loop")},
}
CORE_CONCERNS = ("shape", "reference", "grad")
BACKENDS = ("numba", "triton", "onnx")

MISSING, PRESENT, NOT_APPLICABLE = "MISSING", "ok", "n/a"


def _lowerable(opdef, templates, reductions):
    """The rule every kernel backend follows: elementwise ops render their scalar formula;
    matmul, views and the reduction combines have their own writers; any other op needs a
    kernel template."""
    if opdef.kind == ELEMENTWISE:
        return opdef.scalar is not None
    if opdef.kind == "matmul" or opdef.view:
        return True
    if opdef.kind == "reduction" and opdef.name in reductions:
        return True
    return opdef.name in templates


def _numba(opdef):
    if opdef.kind == "control":
        return opdef.name in numba_control.RENDERERS
    return _lowerable(opdef, numba_codegen.KERNEL_TEMPLATES, numba_codegen.REDUCTIONS)


def _triton(opdef):
    return triton_codegen.renders(opdef)  # a static check: Triton need not be installed


def _onnx(opdef):
    try:
        exporter = importlib.import_module("kgraph.exporters.onnx_ops")
    except ImportError:
        return False
    return opdef.name in exporter.ONNX_OPS


PROBES = {"numba": _numba, "triton": _triton, "onnx": _onnx}


def concerns(opdef):
    """{concern: PRESENT | MISSING | NOT_APPLICABLE} for one op."""
    status = {
        "shape": PRESENT if callable(opdef.infer) else MISSING,
        "reference": PRESENT if callable(opdef.reference) else MISSING,
        "grad": (PRESENT if opdef.grad is not None else
                 NOT_APPLICABLE if not opdef.differentiable else MISSING),
    }
    for backend in BACKENDS:
        status[backend] = PRESENT if PROBES[backend](opdef) else MISSING
    return status


def table():
    """The completeness table as text, and {op: [concerns that fail the test]}."""
    columns = CORE_CONCERNS + BACKENDS
    headers = ["op", "kind"] + [c + ("*" if c in PENDING_BACKENDS else "") for c in columns] + ["lacks"]
    rows, failing = [], {}
    for name in sorted(OPS):
        opdef = OPS[name]
        status = concerns(opdef)
        lacks = [c for c in columns if status[c] == MISSING]
        required = [c for c in lacks if c not in PENDING_BACKENDS and c not in KNOWN_GAPS.get(name, {})]
        if required:
            failing[name] = required
        rows.append([name, opdef.kind] + [status[c] for c in columns] + [", ".join(lacks) or "-"])
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in [headers] + rows]
    lines.append(f"* pending backends (listed, not enforced): {', '.join(PENDING_BACKENDS) or 'none'}")
    lines += [f"* known gap: {name} lacks {backend}: {why}" for name, gaps in KNOWN_GAPS.items()
              for backend, why in gaps.items()]
    return "\n".join(lines), failing


def test_every_op_has_its_required_concerns():
    text, failing = table()
    print("\n" + text)
    assert not failing, ("ops lacking required concerns:\n"
                         + "\n".join(f"  {name}: {', '.join(lacks)}" for name, lacks in failing.items())
                         + "\n\n" + text)


def test_pending_backends_are_known_backends():
    assert set(PENDING_BACKENDS) <= set(BACKENDS)


def test_known_gaps_are_still_gaps():
    for name, gaps in KNOWN_GAPS.items():
        assert name in OPS, f"KNOWN_GAPS names '{name}', which is not a registered op"
        status = concerns(OPS[name])
        for backend in gaps:
            assert status[backend] == MISSING, f"'{name}' has {backend} now: remove it from KNOWN_GAPS"


def test_the_probe_sees_a_missing_concern():
    """The table is only useful if a gap shows: an op without a kernel lacks numba."""
    from kgraph.ops.registry import OpDef

    bare = OpDef("bare_test_op", "kernel", infer=lambda attrs, x: (x.shape, x.dtype),
                 reference=lambda attrs, x: x)
    status = concerns(bare)
    assert status["shape"] == PRESENT and status["reference"] == PRESENT
    assert status["grad"] == MISSING and all(status[b] == MISSING for b in BACKENDS)
    elementwise = OpDef("bare_elementwise", ELEMENTWISE, infer=bare.infer, reference=bare.reference,
                        differentiable=False)
    assert concerns(elementwise)["numba"] == MISSING and concerns(elementwise)["grad"] == NOT_APPLICABLE
