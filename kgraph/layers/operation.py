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
    """Record `output = op(inputs)` as a call node of a fresh Operation when the op is part
    of a functional model under construction: some input is a Keras tensor and no layer's
    call() is running (layers' own ops stay inside them). Returns `output`."""
    from kgraph.layers.layer import CallNode, in_layer_call

    if in_layer_call() or not any(isinstance(v, SymbolicTensor) and v._keras_history is not None for v in inputs):
        return output
    operation = Operation(op_name, attrs)
    node = CallNode(operation, tuple(inputs), {}, output)
    operation._inbound_nodes.append(node)
    output._keras_history = (operation, 0, 0)
    return output


class KerasOperation:
    """A Keras 3 op node of a functional model's config (class "NotEqual" of module
    "keras.src.ops.numpy", say): the kgraph.ops function of the same name, called with the
    node's arguments and the op's config. Keras writes these for raw ops in functional
    models, and for the mask that Embedding(mask_zero=True) hands to the next layers."""

    def __init__(self, class_name, module, config):
        from kgraph import ops
        from kgraph.utils.naming import to_snake_case

        self.class_name = class_name
        self.module = module
        self.function_name = to_snake_case(class_name)
        self.function = getattr(ops, self.function_name, None)
        if not callable(self.function):
            raise ValueError(f"The Keras op '{class_name}' ({module}) of this model is not supported by kgraph: "
                             f"kgraph.ops has no function '{self.function_name}'")
        config = dict(config or {})
        self.name = config.pop("name", None) or uniquify(self.function_name)
        self.kwargs = config
        self._inbound_nodes = []
        self._layers = []
        self._losses = []

    def __call__(self, *args, **kwargs):
        from kgraph.ir import is_tracing
        from kgraph.layers.layer import CallNode, _layer_call, flatten

        with _layer_call():  # the function's own ops are this operation's
            outputs = self.function(*args, **{**self.kwargs, **kwargs})
        if not is_tracing() and any(isinstance(t, SymbolicTensor) for t in flatten((args, kwargs))):
            self._inbound_nodes.append(CallNode(self, args, kwargs, outputs))
            for index, tensor in enumerate(flatten(outputs)):
                if isinstance(tensor, SymbolicTensor):
                    tensor._keras_history = (self, len(self._inbound_nodes) - 1, index)
        return outputs

    def get_config(self):
        return {"name": self.name, **self.kwargs}

    def __repr__(self):
        return f"<KerasOperation {self.class_name} name={self.name}>"


def is_keras_operation_config(layer_data):
    """Whether a functional config entry is a Keras op node rather than a layer."""
    return str(layer_data.get("module", "")).startswith(("keras.src.ops", "keras.ops"))


def _install():
    from kgraph.ops import registry

    registry.symbolic_op_hook = record_op_call


_install()
