"""The keras.ops name contract (every Keras name either works or raises a clear
UnsupportedOpError) and the generated docs/ops.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgraph import ops
from kgraph.ops import docs, keras_names
from kgraph.ops.namespace import UnsupportedOpError

SUBMODULES = {"nn": ops.nn, "numpy": ops.numpy, "linalg": ops.linalg, "image": ops.image}


def test_a_missing_keras_function_raises_a_clear_error(monkeypatch):
    from kgraph.ops import namespace

    # every keras.ops name is supported now: a made-up Keras name stands for a missing one
    name = "future_keras_op"
    monkeypatch.setattr(namespace, "OPS", namespace.OPS + (name,))
    monkeypatch.setitem(namespace.SUBMODULES, "nn", namespace.SUBMODULES["nn"] + (name,))
    assert name not in vars(ops)
    with pytest.raises(NotImplementedError, match=rf"kgraph\.ops\.{name} is not supported by kgraph yet"):
        getattr(ops, name)
    with pytest.raises(UnsupportedOpError, match=rf"kgraph\.ops\.nn\.{name} is not supported"):
        _ = getattr(ops.nn, name)
    assert not hasattr(ops, name)  # also an AttributeError: hasattr and getattr(..., default) work
    assert getattr(ops.nn, name, None) is None


def test_a_name_keras_does_not_have_is_a_plain_attribute_error():
    with pytest.raises(AttributeError) as info:
        _ = ops.no_such_function
    assert not isinstance(info.value, NotImplementedError)
    with pytest.raises(AttributeError):
        _ = ops.nn.matmul_but_not_in_nn


def test_no_kgraph_function_is_shadowed():
    """Every Keras name kgraph defines resolves to kgraph's own function, at the top level
    and in every submodule that Keras puts it in; every other Keras name raises."""
    defined = vars(ops)
    for name in keras_names.OPS:
        if name in defined and callable(defined[name]):
            assert getattr(ops, name) is defined[name]
        else:
            with pytest.raises(UnsupportedOpError, match=f"kgraph.ops.{name} is not supported"):
                getattr(ops, name)
    for sub, module in SUBMODULES.items():
        for name in keras_names.SUBMODULES[sub]:
            if name in vars(module):
                continue
            if name in defined and callable(defined[name]):
                assert getattr(module, name) is defined[name], f"kgraph.ops.{sub}.{name}"
            else:
                with pytest.raises(UnsupportedOpError, match=f"kgraph.ops.{sub}.{name} is not supported"):
                    getattr(module, name)
    assert ops.nn.relu is ops.relu and ops.numpy.matmul is ops.matmul
    assert "relu" in dir(ops.nn) and "ctc_decode" in dir(ops.nn) and "lstsq" not in dir(ops.nn)


def test_the_submodules_name_only_their_keras_names():
    assert set(keras_names.SUBMODULES) == set(SUBMODULES)
    for sub in SUBMODULES:
        for name in keras_names.SUBMODULES[sub]:
            assert name.isidentifier() and not name.startswith("_")


def test_docs_page_matches_the_code():
    """docs/ops.md is generated; regenerate with `python -m kgraph.ops.docs > docs/ops.md`."""
    committed = (Path(__file__).parent.parent / "docs" / "ops.md").read_text()
    assert committed == docs.render(), "docs/ops.md is stale: run `python -m kgraph.ops.docs > docs/ops.md`"


def test_docs_statuses_agree_with_the_namespace():
    for name in keras_names.OPS:
        state, op = docs.status(name)
        if state == docs.UNSUPPORTED:
            assert not hasattr(ops, name)
        else:
            assert callable(getattr(ops, name))
        if state == docs.PRIMITIVE:
            assert op in ops.OPS
    assert docs.status("add") == (docs.PRIMITIVE, "add")
    assert docs.status("softmax") == (docs.COMPOSITION, None)
    assert docs.status("ctc_decode") == (docs.COMPOSITION, None)
    assert docs.status("no_such_function") == (docs.UNSUPPORTED, None)
