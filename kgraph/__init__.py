"""kgraph: the Keras 3 API, compiled to fused kernels."""

__version__ = "0.1.0"
