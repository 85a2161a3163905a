"""The on-disk kernel cache: generated modules keyed by the hash of their source.

A module is written atomically to KGRAPH_CACHE_DIR (default: the user's cache dir) and
imported with its spec registered in sys.modules before it executes, which numba's
cache=True needs to find its compiled code again in a new process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import kgraph


def cache_dir() -> Path:
    root = os.environ.get("KGRAPH_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "kgraph")
    path = Path(root) / f"v{kgraph.__version__}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_atomically(path: Path, text: str):
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def load_module(source: str, prefix="kg"):
    """Import the module holding `source`, writing it to the cache first if it is new."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    name = f"kgraph_generated.{prefix}_{digest}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    path = cache_dir() / f"{prefix}_{digest}.py"
    if not path.exists() or path.read_text() != source:
        _write_atomically(path, source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
