"""The keras.ops name contract: every Keras 3 `keras.ops` function name that kgraph does not
implement yet raises `UnsupportedOpError` when it is accessed, naming the function.

`kgraph.ops` and its submodules (`kgraph.ops.nn`, `numpy`, `linalg`, `image`, mirroring
keras.ops's) install `module_getattr`; Python calls it only for names a module does not
define, so an implemented function is never shadowed. The Keras names live in
`kgraph/ops/keras_names.py` (generated from Keras by tools/gen_keras_names.py).
"""

from __future__ import annotations

import sys

from kgraph.ops.keras_names import KERAS_VERSION, OPS, SUBMODULES


class UnsupportedOpError(NotImplementedError, AttributeError):
    """A keras.ops function kgraph does not support yet. It is also an AttributeError, so
    `hasattr(kgraph.ops, name)` is False and `getattr(ops, name, default)` falls back."""


def unsupported(qualified_name):
    return UnsupportedOpError(
        f"{qualified_name} is not supported by kgraph yet (it is a keras.ops function of Keras "
        f"{KERAS_VERSION}); docs/ops.md lists every keras.ops function with its status in kgraph")


def resolve(name, submodule=None):
    """The kgraph function for keras.ops name `name` (in keras.ops.<submodule> if given):
    the submodule's own definition, else the top-level one; raises UnsupportedOpError for a
    Keras name kgraph lacks and AttributeError for a name Keras does not have."""
    ops = sys.modules["kgraph.ops"]
    module_name = "kgraph.ops" if submodule is None else f"kgraph.ops.{submodule}"
    if submodule is not None:
        own = vars(sys.modules[module_name])
        if name in own:
            return own[name]
    keras_names = OPS if submodule is None else SUBMODULES[submodule]
    if name in keras_names and name in vars(ops) and callable(vars(ops)[name]):
        return vars(ops)[name]
    if name in keras_names:
        raise unsupported(f"{module_name}.{name}")
    raise AttributeError(f"module '{module_name}' has no attribute '{name}'")


def supported(submodule=None):
    """The keras.ops names (of `submodule`, or top level) kgraph implements, sorted."""
    names = OPS if submodule is None else SUBMODULES[submodule]
    found = []
    for name in names:
        try:
            resolve(name, submodule)
        except AttributeError:
            continue
        found.append(name)
    return found


def module_getattr(submodule=None):
    """A module-level `__getattr__` and `__dir__` for kgraph.ops or one of its submodules."""
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return resolve(name, submodule)

    def __dir__():
        module = sys.modules["kgraph.ops" if submodule is None else f"kgraph.ops.{submodule}"]
        return sorted(set(vars(module)) | set(supported(submodule)))

    return __getattr__, __dir__
