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
