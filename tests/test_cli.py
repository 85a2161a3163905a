"""The `kgraph` command, run as a user runs it (a subprocess)."""

import subprocess
import sys

import kgraph


def run(*args):
    return subprocess.run([sys.executable, "-m", "kgraph.cli", *args], capture_output=True, text=True, timeout=120)


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"kgraph {kgraph.__version__}"


def test_unknown_verb_fails_with_a_reason():
    result = run("no-such-verb")
    assert result.returncode != 0
    assert "invalid choice" in result.stderr or "no-such-verb" in result.stderr
