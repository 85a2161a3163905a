"""The `kgraph` command, run as a user runs it (subprocesses), end to end."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime
import pytest

import kgraph
import kgraph as keras


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kgraph.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "mlp.keras"
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    model.save(path)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype("float32")
    np.save(path.parent / "x.npy", x)
    return path, x, model.predict(x, verbose=0)


def test_version_and_help():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"kgraph {kgraph.__version__}"
    for verb in ("export", "summary", "run", "inspect", "bench"):
        result = run(verb, "--help")
        assert result.returncode == 0 and f"usage: kgraph {verb}" in result.stdout
    script = os.path.join(os.path.dirname(sys.executable), "kgraph")  # the installed console script
    if os.path.exists(script):
        result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "export" in result.stdout and "bench" in result.stdout


def test_export_summary_and_run(saved_model):
    path, x, expected = saved_model
    onnx_path = path.parent / "mlp.onnx"
    result = run("export", str(path), str(onnx_path), "--opset", "13")
    assert result.returncode == 0, result.stderr
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    summary = run("summary", str(path))
    assert summary.returncode == 0 and "Total params: 53" in summary.stdout
    assert "input" in run("summary", str(onnx_path)).stdout
    for model_path in (path, onnx_path):
        out_path = path.parent / f"y_{model_path.suffix[1:]}.npy"
        result = run("run", str(model_path), "--input", str(path.parent / "x.npy"), "--output", str(out_path))
        assert result.returncode == 0, result.stderr
        np.testing.assert_allclose(np.load(out_path), expected, atol=1e-5)


def test_inspect_and_bench(saved_model):
    path, _, _ = saved_model
    result = run("inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert "matmul" in result.stdout and "fusion groups" in result.stdout and "@njit" in result.stdout
    result = run("bench", str(path), "--batch-size", "16", "--batches", "2", "--latency-calls", "5")
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    assert numbers["kgraph_samples_per_s"] > 0 and numbers["onnxruntime_samples_per_s"] > 0
    assert numbers["onnx_export_s"] > 0 and numbers["batch_size"] == 16


def test_bench_feeds_every_input(tmp_path):
    a, ids = keras.Input((3,), name="a"), keras.Input((2,), dtype="int32", name="ids")
    rows = keras.layers.Flatten()(keras.layers.Embedding(4, 3)(ids))
    model = keras.Model([a, ids], keras.layers.Dense(2)(keras.layers.Concatenate()([a, rows])))
    model.save(tmp_path / "two.keras")
    result = run("bench", str(tmp_path / "two.keras"), "--batch-size", "8", "--batches", "2", "--latency-calls", "3")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["onnxruntime_samples_per_s"] > 0
    assert not list(tmp_path.glob("*.onnx"))  # the exported file is temporary
    bad = run("bench", str(tmp_path / "two.keras"), "--batch-size", "0")
    assert bad.returncode == 1 and "must be positive" in bad.stderr


def test_errors_are_one_line_and_non_zero(tmp_path, saved_model):
    path, _, _ = saved_model
    missing = run("export", str(tmp_path / "missing.keras"), str(tmp_path / "out.onnx"))
    assert missing.returncode == 1 and "no such file" in missing.stderr and len(missing.stderr.splitlines()) == 1
    text_file = tmp_path / "not_a_model.keras"
    text_file.write_text("hello")
    bad = run("summary", str(text_file))
    assert bad.returncode == 1 and "not_a_model.keras" in bad.stderr
    wrong_suffix = run("export", str(path), str(tmp_path / "out.txt"))
    assert wrong_suffix.returncode == 1 and ".onnx" in wrong_suffix.stderr
    wrong_format = run("export", str(path), str(tmp_path / "out"), "--format", "saved_model")
    assert wrong_format.returncode == 2 and "invalid choice: 'saved_model'" in wrong_format.stderr
    not_keras = run("inspect", str(tmp_path / "missing.onnx"))
    assert not_keras.returncode == 1 and "no such file" in not_keras.stderr
    text_file.rename(tmp_path / "not_a_model.onnx")
    for verb in ("inspect", "bench"):
        wrong_kind = run(verb, str(tmp_path / "not_a_model.onnx"))
        assert wrong_kind.returncode == 1 and "expected a .keras model" in wrong_kind.stderr, wrong_kind.stderr
    assert run("no-such-verb").returncode != 0


def test_run_refuses_an_input_of_the_wrong_shape(saved_model):
    """The model expects (n, 6): each runtime's refusal is one line naming the model and input."""
    path, _, _ = saved_model
    bad = path.parent / "bad.npy"
    np.save(bad, np.zeros((2, 4), np.float32))
    onnx_path = path.parent / "for_bad_input.onnx"
    assert run("export", str(path), str(onnx_path)).returncode == 0
    for model_path in (path, onnx_path):
        result = run("run", str(model_path), "--input", str(bad))
        assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
        assert str(model_path) in result.stderr and "cannot run it on" in result.stderr and "(2, 4)" in result.stderr


def test_export_names_an_op_without_an_onnx_mapping(saved_model, tmp_path):
    """As if kgraph had an op without an ONNX_OPS entry (relu's removed in the process)."""
    path, _, _ = saved_model
    script = textwrap.dedent(f"""
        import sys
        from kgraph.cli import main
        from kgraph.exporters.onnx_ops import ONNX_OPS
        del ONNX_OPS["relu"]
        sys.exit(main(["export", {str(path)!r}, {str(tmp_path / "out.onnx")!r}]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "kgraph export: op 'relu'" in result.stderr and "no ONNX mapping" in result.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_archive_export_summary_and_run(saved_model):
    path, _, expected = saved_model
    archive = path.parent / "mlp_archive"
    result = run("export", str(path), str(archive), "--format", "archive")
    assert result.returncode == 0, result.stderr
    summary = run("summary", str(archive))
    assert summary.returncode == 0 and "endpoint serve" in summary.stdout
    out_path = path.parent / "y_archive.npy"
    result = run("run", str(archive), "--input", str(path.parent / "x.npy"), "--output", str(out_path))
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(out_path), expected, atol=1e-6)
