"""Sequential and Functional configs in Keras 3's layout, and the models they describe.

A Functional config lists every layer (its Keras object config plus "name" and
"inbound_nodes"), each inbound node being the call's arguments with the symbolic tensors
written as `__keras_tensor__` entries whose `keras_history` is [layer name, node index,
tensor index]; "input_layers" and "output_layers" name the model's inputs and outputs the
same way. Node indices count only the calls that belong to the model (a layer shared with
another model keeps its own numbering). As in Keras 3, "input_layers" and "output_layers"
count the calls of a nested Functional model from 1 (a leftover of Keras 2, where such a
model owned a node before it was ever called), while inbound nodes count them from 0.
"""

from __future__ import annotations

from kgraph.ir import SymbolicTensor
from kgraph.layers.layer import flatten, map_structure


def _serialize(obj):
    from kgraph.saving.serialization_lib import serialize_keras_object

    return serialize_keras_object(obj)


def _deserialize(config):
    from kgraph.saving.serialization_lib import deserialize_keras_object

    return deserialize_keras_object(config)


def _node_offset(layer):
    """1 for a nested Functional model in "input_layers"/"output_layers" (Keras 3's rule), else 0."""
    from kgraph.models.functional import Functional

    return 1 if isinstance(layer, Functional) else 0


# -- Sequential --------------------------------------------------------------------------------------
def sequential_config(model):
    layers = []
    if model._input_layer is not None:
        layers.append(_serialize(model._input_layer))
    layers += [_serialize(layer) for layer in model.layers]
    config = {"name": model.name, "trainable": model.trainable, "dtype": _dtype(model), "layers": layers}
    if model._functional is not None:
        config["build_input_shape"] = tuple(model._input_layer.batch_shape)
    return config


def _dtype(model):
    from kgraph.layers.layer import serialize_dtype_policy

    return serialize_dtype_policy(model.dtype_policy)


def sequential_from_config(cls, config):
    if "layers" not in config:
        raise ValueError("A Sequential model configuration must be a dictionary containing the 'name' and "
                         f"'layers' keys. Received: config={config}")
    model = cls(name=config.get("name"))
    for layer_config in config["layers"]:
        model.add(_deserialize(layer_config), rebuild=False)
    build_input_shape = config.get("build_input_shape")
    model._maybe_rebuild()
    if model._functional is None and isinstance(build_input_shape, (list, tuple)) and build_input_shape:
        model.build(tuple(build_input_shape))
    if config.get("trainable") is False:
        model.trainable = False
    return model


# -- Functional --------------------------------------------------------------------------------------
def _graph_members(model):
    """The model's layers and Keras op nodes in Keras's order (its config lists both)."""
    from kgraph.layers.operation import KerasOperation
    from kgraph.models.functional import _keras_layer_order

    order = _keras_layer_order(model.inputs, model.outputs)
    if not any(isinstance(layer, KerasOperation) for layer in order):
        return model.layers
    kept = {id(layer) for layer in model.layers}
    return [layer for layer in order if isinstance(layer, KerasOperation) or id(layer) in kept]


def _reindexing(model):
    """{(id(layer), node index): index among the nodes that belong to `model`}."""
    own = {id(node) for node in model._nodes}
    mapping = {}
    for layer in _graph_members(model):
        kept = 0
        for index, node in enumerate(layer._inbound_nodes):
            if id(node) in own:
                mapping[(id(layer), index)] = kept
                kept += 1
    return own, mapping


def _history(tensor, mapping, endpoint=False):
    layer, node_index, tensor_index = tensor._keras_history
    key = (id(layer), node_index)
    if key not in mapping:
        raise RuntimeError(f"Internal error: tensor {tensor} comes from a call of layer '{layer.name}' "
                           "that is not part of the model")
    return [layer.name, mapping[key] + (_node_offset(layer) if endpoint else 0), tensor_index]


def _serialize_node(node, mapping):
    def convert(value):
        if isinstance(value, SymbolicTensor):
            return {"class_name": "__keras_tensor__",
                    "config": {"shape": list(value.shape), "dtype": value.dtype,
                               "keras_history": _history(value, mapping)}}
        return _serialize(value)

    return {"args": [map_structure(convert, arg) for arg in node.args],
            "kwargs": {key: map_structure(convert, value) for key, value in node.kwargs.items()}}


def functional_config(model):
    """Layers with their inbound nodes (by layer name, node index, tensor index)."""
    from kgraph.layers.operation import Operation

    operations = [node.layer.op_name for node in model._nodes if isinstance(node.layer, Operation)]
    if operations:
        raise NotImplementedError(
            f"Model '{model.name}' applies ops directly to symbolic tensors ({', '.join(operations)}); "
            "it compiles, trains and exports, but its config cannot be written: wrap those ops in a "
            "layer (a Layer subclass, or kgraph.layers.Lambda) to save or clone it.")
    from kgraph.layers.operation import KerasOperation

    own, mapping = _reindexing(model)
    layers = []
    for layer in _graph_members(model):
        if isinstance(layer, KerasOperation):
            entry = {"module": layer.module, "class_name": layer.class_name, "config": layer.get_config(),
                     "registered_name": layer.class_name}
        else:
            entry = _serialize(layer)
        entry["name"] = layer.name
        entry["inbound_nodes"] = [_serialize_node(node, mapping) for node in layer._inbound_nodes
                                  if id(node) in own and node.input_tensors]
        layers.append(entry)

    def history(structure):
        return map_structure(lambda t: _history(t, mapping, endpoint=True), structure)

    return {"name": model.name, "trainable": model.trainable, "layers": layers,
            "input_layers": history(model._inputs_struct), "output_layers": history(model._outputs_struct)}


def _is_history(value):
    return isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str) and all(
        isinstance(v, int) for v in value[1:])


class _NotReady(Exception):
    """A node's input comes from a layer call that has not been replayed yet."""


def _tensor(created, name, node_index, tensor_index, endpoint=False):
    layer = created.get(name)
    if layer is None:
        raise ValueError(f"Invalid Functional model configuration: unknown layer '{name}'")
    if endpoint:
        node_index -= _node_offset(layer)
    if not 0 <= node_index < len(layer._inbound_nodes):
        raise _NotReady(name)
    outputs = flatten(layer._inbound_nodes[node_index].outputs)
    if not 0 <= tensor_index < len(outputs):
        raise ValueError(f"Invalid Functional model configuration: layer '{name}' call {node_index} has "
                         f"{len(outputs)} outputs, the config asks for output {tensor_index}")
    return outputs[tensor_index]


def _deserialize_node(node_data, created):
    """(args, kwargs) of one layer call (the Keras 3 format, or the older list of histories)."""
    if isinstance(node_data, list):  # legacy: [[layer name, node index, tensor index, kwargs], ...]
        tensors, kwargs = [], {}
        for entry in node_data:
            if len(entry) not in (3, 4):
                raise ValueError(f"Cannot deserialize the model: invalid inbound node {entry!r}")
            tensors.append(_tensor(created, entry[0], entry[1], entry[2]))
            if len(entry) == 4:
                kwargs = entry[3]
        return [tensors[0] if len(tensors) == 1 else tensors], kwargs

    def convert(value):
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            history = value["config"].get("keras_history")
            if not history:
                raise ValueError(f"Cannot deserialize the model: a tensor has no keras_history: {value}")
            return _tensor(created, *history)
        if isinstance(value, dict) and "class_name" in value and "config" in value:
            return _deserialize(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    args = [convert(arg) for arg in node_data.get("args", [])]
    kwargs = {key: convert(value) for key, value in node_data.get("kwargs", {}).items()}
    return args, kwargs


def functional_from_config(cls, config, custom_objects=None, layer_factory=None):
    """Recreate the layers, then replay their calls in dependency order (as Keras 3 does).

    `layer_factory(layer_config)`, if given, makes each layer instead of deserializing it
    (clone_model uses it).
    """
    from kgraph.layers.layer import Layer
    from kgraph.layers.operation import KerasOperation, is_keras_operation_config
    from kgraph.saving.object_registration import CustomObjectScope

    config = dict(config)
    for key in ("layers", "input_layers", "output_layers"):
        if key not in config:
            raise ValueError(f"Invalid Functional model configuration: missing '{key}'")
    with CustomObjectScope(custom_objects or {}):
        created, pending, order = {}, {}, []
        for layer_data in config.pop("layers"):
            if is_keras_operation_config(layer_data):
                layer = KerasOperation(layer_data.get("class_name"), layer_data.get("module"),
                                       layer_data.get("config"))
            else:
                layer = layer_factory(layer_data) if layer_factory is not None else _deserialize(layer_data)
            if not isinstance(layer, (Layer, KerasOperation)):
                raise ValueError(f"Unexpected object from deserialization, expected a layer, got {type(layer)}")
            name = layer_data.get("name", layer.name)
            created[name] = layer
            order.append(name)
            pending[name] = list(layer_data.get("inbound_nodes", []))
        while any(pending.values()):
            progressed = False
            for name in order:
                nodes = pending[name]
                while nodes:
                    try:
                        args, kwargs = _deserialize_node(nodes[0], created)
                    except _NotReady:
                        break
                    created[name](*args, **kwargs)
                    nodes.pop(0)
                    progressed = True
            if not progressed:
                stuck = {name: len(nodes) for name, nodes in pending.items() if nodes}
                raise ValueError("Invalid Functional model configuration. The graph of the Functional model "
                                 "either has loops or disconnected nodes. The following nodes failed to be "
                                 f"resolved: {stuck}")

        def tensors(structure):
            if _is_history(structure):
                return _tensor(created, *structure, endpoint=True)
            if isinstance(structure, dict):
                return {key: tensors(value) for key, value in structure.items()}
            if isinstance(structure, tuple):
                return tuple(tensors(v) for v in structure)
            return [tensors(v) for v in structure]

        try:
            inputs = tensors(config.pop("input_layers"))
            outputs = tensors(config.pop("output_layers"))
        except _NotReady as missing:
            raise ValueError(f"Invalid Functional model configuration: layer '{missing}' was never called") from None
        name = config.pop("name", None)
        trainable = config.pop("trainable", None)
        from kgraph.models.functional import Functional
        from kgraph.models.model import Model

        extra = {} if cls in (Functional, Model) else config
        model = cls(inputs=inputs, outputs=outputs, name=name, **extra)
        if trainable is False:
            model.trainable = False
    return model
