"""kgraph.ops.nn: the keras.ops.nn namespace. Each supported function is the kgraph.ops
function of the same name; a keras.ops.nn name kgraph lacks raises UnsupportedOpError."""

from kgraph.ops.namespace import module_getattr

__getattr__, __dir__ = module_getattr("nn")
