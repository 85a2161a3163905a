"""Process-wide settings kgraph applies before numba starts any threads.

numba's default OpenMP layer busy-waits against OpenBLAS's threads on small machines (a
fused kernel ran 10-40x slower here). kgraph's generated code is serial and leaves the
threads to BLAS, and selects the workqueue layer so that any parallel region numba does
run cannot spin against BLAS.
"""

import os

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def floatx():
    return "float32"


def epsilon():
    return 1e-7


def image_data_format():
    return "channels_last"


def backend():
    return "kgraph"


# -- the compute device ---------------------------------------------------------------------------
DEVICES = ("cpu", "gpu")
_device = None  # chosen by set_device, else KGRAPH_DEVICE (read and checked on first use)


def _checked_device(name, source):
    name = str(name).strip().lower()
    if name not in DEVICES:
        raise ValueError(f"{source}: the device must be one of {DEVICES}, got {name!r}")
    if name == "gpu":
        from kgraph.runtime.gpu import require_gpu

        require_gpu()  # raises, saying what is missing (Triton, the driver, a GPU)
    return name


def set_device(name):
    """Run compiled graphs on "cpu" (numba kernels) or "gpu" (Triton kernels on an NVIDIA GPU).

    Asking for the GPU where there is none, or without Triton (the `gpu` extra), raises
    a RuntimeError or ImportError that says what is missing.
    """
    global _device
    _device = _checked_device(name, "set_device")


def get_device():
    """The device compiled graphs run on: set_device's choice, else KGRAPH_DEVICE, else "cpu"."""
    global _device
    if _device is None:
        _device = _checked_device(os.environ.get("KGRAPH_DEVICE") or "cpu", "KGRAPH_DEVICE")
    return _device
