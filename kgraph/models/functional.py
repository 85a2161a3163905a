"""Functional: a model defined by the graph of layer calls between Input tensors and outputs."""

from __future__ import annotations

from kgraph.ir import SymbolicTensor
from kgraph.layers.core import InputLayer
from kgraph.layers.layer import InputSpec, Layer, assert_input_compatibility, flatten, map_structure
from kgraph.models.model import Model


def _history_node(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise ValueError(f"Output tensors of a functional model must come from kgraph layers "
                         f"called on kgraph.Input tensors; {tensor} has no layer history. "
                         "Wrap raw ops in a layer (or use kgraph.layers.Lambda).")
    layer, node_index, _ = history
    return layer._inbound_nodes[node_index]


def _ordered_nodes(outputs, inputs):
    """The call nodes between `inputs` and `outputs`, dependencies first."""
    input_ids = {id(t) for t in inputs}
    ordered, visited = [], set()

    def visit(tensor):
        node = _history_node(tensor)
        if id(node) in visited:
            return
        visited.add(id(node))
        if id(tensor) not in input_ids:
            if isinstance(node.layer, InputLayer):
                raise ValueError(f"Graph disconnected: the output depends on input '{node.layer.name}', "
                                 "which is not among the model's inputs")
            for upstream in node.input_tensors:
                visit(upstream)
        ordered.append(node)

    for tensor in outputs:
        visit(tensor)
    return ordered


def _keras_layer_order(inputs, outputs):
    """The model's layers in Keras 3's order (keras.src.ops.function.map_graph): by decreasing
    depth from the outputs, ties broken by the order a depth-first walk from the outputs first
    meets them. The `.keras` weights layout ("layers/dense_1/...") and the order of the
    optimizer's slots follow this order, so it must match Keras's."""
    input_ids = {id(t) for t in inputs}
    finished, in_progress = set(), set()
    nodes, first_seen = [], {}

    def walk(tensor):
        layer, node_index, _ = tensor._keras_history
        node = layer._inbound_nodes[node_index]
        if id(node) in finished:
            return
        is_input = not node.input_tensors
        if not is_input and id(tensor) in input_ids:
            finished.add(id(node))
            return
        if id(node) in in_progress:
            raise ValueError(f"Tensor {tensor} from layer '{layer.name}' is part of a cycle")
        first_seen.setdefault(id(layer), (len(first_seen), layer))
        in_progress.add(id(node))
        if not is_input:
            for upstream in node.input_tensors:
                walk(upstream)
        in_progress.discard(id(node))
        finished.add(id(node))
        nodes.append(node)

    for tensor in outputs:
        walk(tensor)
    in_graph = {id(node) for node in nodes}
    node_depth, layer_depth = {}, {}
    for node in reversed(nodes):
        depth = max(node_depth.setdefault(id(node), 0), layer_depth.get(id(node.layer), 0))
        layer_depth[id(node.layer)] = depth
        node_depth[id(node)] = depth
        for upstream in node.input_tensors:
            layer, node_index, _ = upstream._keras_history
            parent = layer._inbound_nodes[node_index]
            if id(parent) in in_graph:
                node_depth[id(parent)] = max(depth + 1, node_depth.get(id(parent), 0))
    for tensor in inputs:  # inputs that no output depends on
        layer = tensor._keras_history[0]
        if id(layer) not in layer_depth:
            layer_depth[id(layer)] = 0
            first_seen[id(layer)] = (-1, layer)
    ordered = sorted(first_seen.values(), key=lambda item: (-layer_depth[id(item[1])], item[0]))
    return [layer for _, layer in ordered]


class Functional(Model):
    """`Model(inputs, outputs)`: replays the recorded layer calls on new inputs."""

    def __init__(self, inputs, outputs, name=None, trainable=True, **kwargs):
        super().__init__(name=name, trainable=trainable, **kwargs)
        self._inputs_struct = inputs
        self._outputs_struct = outputs
        self.inputs = flatten(inputs)
        self.outputs = flatten(outputs)
        for tensor in self.inputs + self.outputs:
            if not isinstance(tensor, SymbolicTensor):
                raise ValueError(f"Functional model '{self.name}': inputs and outputs must be symbolic "
                                 f"tensors (from kgraph.Input and layers), got {type(tensor).__name__}")
        self._nodes = _ordered_nodes(self.outputs, self.inputs)
        # Raw ops (kgraph.layers.operation) are nodes of the graph, but not layers.
        layers = [layer for layer in _keras_layer_order(self.inputs, self.outputs) if isinstance(layer, Layer)]
        self._functional_layers = layers
        for layer in layers:
            if not any(layer is existing for existing in self._layers):
                self._layers.append(layer)
        self.input_spec = [InputSpec(shape=t.shape) for t in self.inputs]
        self.built = True

    @property
    def layers(self):
        return list(self._functional_layers)

    @property
    def input_names(self):
        return [t._keras_history[0].name for t in self.inputs]

    @property
    def output_names(self):
        return [t._keras_history[0].name for t in self.outputs]

    @property
    def input_shape(self):
        shapes = [tuple(t.shape) for t in self.inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        shapes = [tuple(t.shape) for t in self.outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def input(self):
        return self._inputs_struct

    @property
    def output(self):
        return self._outputs_struct

    def _standardize_inputs(self, inputs):
        """Match `inputs` (a tensor, list or dict by input name) to the model's input tensors."""
        if isinstance(inputs, dict):
            names = self.input_names
            missing = [n for n in names if n not in inputs]
            if missing:
                raise ValueError(f'Model "{self.name}" is missing inputs {missing}; '
                                 f"it expects {names}, got keys {sorted(inputs)}")
            return [inputs[n] for n in names]
        flat = flatten(inputs)
        if len(flat) != len(self.inputs):
            raise ValueError(f'Model "{self.name}" expects {len(self.inputs)} input(s), '
                             f"but it received {len(flat)} input tensors")
        return flat

    def call(self, inputs, training=None, mask=None):
        values = self._standardize_inputs(inputs)
        assert_input_compatibility(self.input_spec, values, self.name)
        mapping = {}
        for tensor, value in zip(self.inputs, values):
            mapping[id(tensor)] = value
        for node in self._nodes:
            if isinstance(node.layer, InputLayer):
                continue
            args, kwargs = map_structure(
                lambda t: mapping[id(t)] if isinstance(t, SymbolicTensor) else t, (node.args, node.kwargs))
            outputs = node.layer(*args, **kwargs)
            for old, new in zip(flatten(node.outputs), flatten(outputs)):
                mapping[id(old)] = new
        return map_structure(lambda t: mapping[id(t)], self._outputs_struct)

    def get_config(self):
        from kgraph.models.serialization import functional_config

        if not _functional_like_constructor(type(self)):
            return Model.get_config(self)  # a subclass with its own constructor: its arguments
        return functional_config(self)

    def get_build_config(self):
        return {"input_shape": None}  # built at construction; Keras 3 writes this


def _functional_like_constructor(cls):
    """Whether `cls(inputs=..., outputs=..., name=...)` rebuilds it (Keras 3's rule)."""
    import inspect

    spec = inspect.getfullargspec(cls.__init__)
    if spec.args[1:] == inspect.getfullargspec(Functional.__init__).args[1:]:
        return True
    return spec.varargs is not None and spec.varkw is not None
