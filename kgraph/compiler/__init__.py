"""The compiler: tracing, autodiff, graph passes and lowering to backend kernels."""
