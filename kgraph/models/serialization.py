"""Model configs in Keras 3's layout (class_name / config / module entries)."""

from __future__ import annotations


def serialize_layer(layer):
    return {"module": "keras.layers", "class_name": type(layer).__name__, "config": layer.get_config(),
            "registered_name": None, "name": layer.name}


def sequential_config(model):
    layers = []
    if model._input_layer is not None:
        layers.append(serialize_layer(model._input_layer))
    layers += [serialize_layer(layer) for layer in model.layers]
    return {"name": model.name, "trainable": model.trainable, "layers": layers}


def functional_config(model):
    """Layers with their inbound nodes (by layer name, node index, tensor index)."""
    node_keys = {}
    layers = []
    for layer in model.layers:
        entry = serialize_layer(layer)
        inbound = []
        for node in layer._inbound_nodes:
            if not node.input_tensors:
                continue
            args = []
            for tensor in node.input_tensors:
                source, node_index, tensor_index = tensor._keras_history
                args.append({"class_name": "__keras_tensor__", "config": {
                    "shape": list(tensor.shape), "dtype": tensor.dtype,
                    "keras_history": [source.name, node_index, tensor_index]}})
            inbound.append({"args": args if len(args) > 1 else args, "kwargs": {}})
        entry["inbound_nodes"] = inbound
        node_keys[layer.name] = entry
        layers.append(entry)

    def history(tensors):
        return [[t._keras_history[0].name, t._keras_history[1], t._keras_history[2]] for t in tensors]

    return {"name": model.name, "trainable": model.trainable, "layers": layers,
            "input_layers": history(model.inputs), "output_layers": history(model.outputs)}
