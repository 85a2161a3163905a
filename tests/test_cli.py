"""The `kgraph` command, run as a user runs it (subprocesses), end to end."""

import json
import subprocess
import sys

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
        assert run(verb, "--help").returncode == 0


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
    assert run("no-such-verb").returncode != 0


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
