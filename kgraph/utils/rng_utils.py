"""set_random_seed: one call seeds every random source kgraph draws from."""

from __future__ import annotations

import random

import numpy as np


def set_random_seed(seed):
    """Seed Python's `random` (initializer seeds, fit's shuffles), numpy's global generator
    (SeedGenerator defaults) and restart kgraph's global SeedGenerator, so a program run
    twice with the same seed draws the same numbers."""
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"set_random_seed: expected an int seed, got {seed!r} of type {type(seed).__name__}")
    import kgraph.random as kgraph_random

    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    kgraph_random._global_generator = None
