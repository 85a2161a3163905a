"""Runtime: executing compiled graphs (numba on the CPU), the kernel cache, the reference interpreter."""
