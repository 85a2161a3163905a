"""The optional Keras 3 oracle: KGRAPH_KERAS_PYTHON names a Python interpreter that imports
keras (e.g. a venv made with `pip install keras numpy h5py scipy jax`). Tests that compare
with Keras itself run it in a subprocess, and skip when it is not set."""

from __future__ import annotations

import os


def keras_python():
    """The interpreter KGRAPH_KERAS_PYTHON names, or None when it is unset or missing."""
    python = os.environ.get("KGRAPH_KERAS_PYTHON")
    return python if python and os.path.exists(python) else None


SKIP_REASON = "no Python with Keras 3: set KGRAPH_KERAS_PYTHON to one"
