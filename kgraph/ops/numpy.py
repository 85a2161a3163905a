"""kgraph.ops.numpy: the keras.ops.numpy namespace. Each supported function is the kgraph.ops
function of the same name; a keras.ops.numpy name kgraph lacks raises UnsupportedOpError."""

from kgraph.ops.namespace import module_getattr

__getattr__, __dir__ = module_getattr("numpy")
