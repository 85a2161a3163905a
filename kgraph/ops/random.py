"""Counter-based random numbers: a pure function of (seed, salt, element index).

Because the value at each index depends on nothing else, the numpy reference and every
backend produce bit-identical streams, and a compiled step is reproducible from its seed.
The hash is the murmur3 finalizer over a Weyl sequence, in wrapping 32-bit arithmetic.
"""

from __future__ import annotations

import numpy as np

from kgraph.ir import SymbolicTensor
from kgraph.ir.tensor import current_graph
from kgraph.ops.registry import OpDef, bind, register

MASK = 0xFFFFFFFF
GOLDEN = 0x9E3779B1
SEED_MIX = 0x85EBCA77
MIX_1 = 0x85EBCA6B
MIX_2 = 0xC2B2AE35


def hash_uniform(seed, salt, count):
    """`count` float32 numbers in [0, 1) for (seed, salt); the reference for every backend."""
    index = np.arange(count, dtype=np.uint64)
    key = (np.uint64(int(seed) & MASK) * np.uint64(SEED_MIX) + np.uint64(salt)) & np.uint64(MASK)
    x = (index * np.uint64(GOLDEN) + key) & np.uint64(MASK)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(MIX_1)) & np.uint64(MASK)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(MIX_2)) & np.uint64(MASK)
    x ^= x >> np.uint64(16)
    return (x >> np.uint64(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)


def _uniform_infer(attrs, seed):
    if seed.shape != ():
        raise ValueError(f"random_uniform: the seed must be a scalar, got shape {seed.shape}")
    return tuple(attrs["shape"]), attrs.get("dtype", "float32")


def _uniform_reference(attrs, seed):
    shape = tuple(attrs["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    values = hash_uniform(int(np.asarray(seed)), attrs.get("salt", 0), count)
    return values.reshape(shape).astype(attrs.get("dtype", "float32"))


register(OpDef("random_uniform", "kernel", _uniform_infer, _uniform_reference,
               samples=lambda rng: [([np.array(7, np.int64)], {"shape": (3, 5), "salt": 0, "dtype": "float32"}),
                                    ([np.array(11, np.int64)], {"shape": (4,), "salt": 3, "dtype": "float32"})],
               differentiable=False,
               doc="Uniform [0, 1) numbers hashed from (seed, salt, index); shape may hold None."))


def random_uniform(seed, shape, salt=0, dtype="float32"):
    """The registered op: uniform [0, 1) of `shape` (None dims are the batch size)."""
    shape = tuple(None if d is None else int(d) for d in shape)
    if None in shape and not isinstance(seed, SymbolicTensor):
        # a batch-sized draw while a functional model is built: a symbolic value whose
        # shape the model needs (the compiled step replays the call with its own seed)
        graph = current_graph()
        seed = SymbolicTensor(graph, graph.add_constant(np.asarray(seed, dtype=np.int64)).id)
    return bind("random_uniform", [seed], shape=shape, salt=int(salt), dtype=dtype)


def numba_template(node, inputs):
    """Kernel body for the numba backend (same arithmetic as hash_uniform)."""
    salt = node.attrs.get("salt", 0)
    return [
        "flat = out.reshape(-1)",
        f"key = (np.uint64(np.int64(a0[()]) & {MASK}) * np.uint64({SEED_MIX}) + np.uint64({salt})) "
        f"& np.uint64({MASK})",
        "for i in range(flat.shape[0]):",
        f"    x = (np.uint64(i) * np.uint64({GOLDEN}) + key) & np.uint64({MASK})",
        "    x ^= x >> np.uint64(16)",
        f"    x = (x * np.uint64({MIX_1})) & np.uint64({MASK})",
        "    x ^= x >> np.uint64(13)",
        f"    x = (x * np.uint64({MIX_2})) & np.uint64({MASK})",
        "    x ^= x >> np.uint64(16)",
        f"    flat[i] = np.{node.dtype}(np.float32(x >> np.uint64(8)) * np.float32(1.0 / 16777216.0))",
    ]
