"""Raw ops on symbolic Keras tensors while a functional model is built.

Keras 3 lets a functional model apply ops directly to the tensors of `Input()` and of
layer outputs (`x + y`, `ops.exp(x)`, `x * 2`), outside any layer. Such a call is
recorded like a layer call: an `Operation` (an op name, its attributes, no weights) owns
the call node, and the model replays it on new inputs. Operations appear in the model's
graph but not in `model.layers`, as in Keras.
"""

from __future__ import annotations

from kgraph.ir import SymbolicTensor
from kgraph.utils.naming import uniquify


class Operation:
    """One raw op of a functional model: replayed by calling it on the op's inputs."""

    def __init__(self, op_name, attrs):
        self.op_name = op_name
        self.attrs = dict(attrs)
        self.name = uniquify(op_name)
        self._inbound_nodes = []
        self._layers = []
        self._losses = []

    def __call__(self, *inputs):
        from kgraph.ops.registry import bind

        return bind(self.op_name, list(inputs), **self.attrs)

    def __repr__(self):
        return f"<Operation {self.op_name} name={self.name}>"


def record_op_call(op_name, inputs, attrs, output):
    """Record `output = op(inputs)` as a call node of a fresh Operation; returns `output`."""
    from kgraph.layers.layer import CallNode

    operation = Operation(op_name, attrs)
    node = CallNode(operation, tuple(inputs), {}, output)
    operation._inbound_nodes.append(node)
    output._keras_history = (operation, 0, 0)
    return output


def needs_recording(inputs):
    """Whether an op on `inputs` is part of a functional model under construction: some input
    is a Keras tensor and no layer's call() is running (layers' own ops stay inside them)."""
    from kgraph.layers.layer import in_layer_call

    return (any(isinstance(v, SymbolicTensor) and v._keras_history is not None for v in inputs)
            and not in_layer_call())
