"""Device choice: kgraph.config.set_device / get_device and KGRAPH_DEVICE (no GPU needed)."""

from __future__ import annotations

import sys

import pytest

from kgraph import config


@pytest.fixture(autouse=True)
def _fresh_device(monkeypatch):
    monkeypatch.setattr(config, "_device", None)
    monkeypatch.delenv("KGRAPH_DEVICE", raising=False)


def test_the_default_device_is_the_cpu():
    assert config.get_device() == "cpu"
    config.set_device("CPU")
    assert config.get_device() == "cpu"


def test_an_unknown_device_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="one of"):
        config.set_device("tpu")
    monkeypatch.setenv("KGRAPH_DEVICE", "npu")
    with pytest.raises(ValueError, match="KGRAPH_DEVICE"):
        config.get_device()


def test_asking_for_the_gpu_without_one_says_what_is_missing(monkeypatch):
    from kgraph.runtime.gpu import gpu_problem

    if gpu_problem() is None:
        pytest.skip("this machine has a GPU")
    with pytest.raises((RuntimeError, ImportError), match="GPU|Triton"):
        config.set_device("gpu")
    monkeypatch.setenv("KGRAPH_DEVICE", "gpu")
    with pytest.raises((RuntimeError, ImportError), match="GPU|Triton"):
        config.get_device()
    assert config._device is None


def test_without_triton_the_error_names_the_gpu_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton now fails
    with pytest.raises(ImportError, match=r"kgraph\[gpu\]"):
        config.set_device("gpu")
