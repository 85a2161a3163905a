"""clone_model: the same architecture with new layers (and freshly initialized weights)."""

from __future__ import annotations


def _default_clone(layer):
    return layer.__class__.from_config(layer.get_config())


def clone_model(model, input_tensors=None, clone_function=None, call_function=None, recursive=False, **kwargs):
    """A new model with the same architecture as `model` and new weights (as keras.models.clone_model).

    Args:
        model: a Sequential, Functional or (serializable) subclassed model.
        input_tensors: optional Input tensor(s) the clone is built on (Sequential: one tensor;
            Functional: one per model input, in order).
        clone_function: `layer -> new layer` (default: `layer.__class__.from_config(layer.get_config())`).
        recursive: also clone nested Sequential / Functional models with clone_model.
    """
    from kgraph.layers.core import InputLayer
    from kgraph.layers.layer import flatten
    from kgraph.models.functional import Functional
    from kgraph.models.sequential import Sequential
    from kgraph.models.serialization import functional_config, functional_from_config

    if kwargs:
        raise ValueError(f"Unexpected keyword argument(s): {sorted(kwargs)}")
    if call_function is not None:
        raise NotImplementedError("kgraph's clone_model does not support call_function")
    clone = clone_function or _default_clone

    def clone_layer(layer):
        if recursive and isinstance(layer, (Sequential, Functional)):
            return clone_model(layer, clone_function=clone_function, recursive=True)
        return clone(layer)

    if isinstance(model, Sequential):
        layers = [clone_layer(layer) for layer in model.layers]
        if input_tensors is not None:
            tensors = flatten(input_tensors)
            if len(tensors) != 1:
                raise ValueError("To clone a Sequential model, input_tensors must be a single tensor")
            layers = [tensors[0]] + layers
        elif model._input_layer is not None:
            layers = [InputLayer.from_config(model._input_layer.get_config())] + layers
        return Sequential(layers, name=model.name, trainable=model.trainable)
    if isinstance(model, Functional) and type(model) is Functional:
        originals = {layer.name: layer for layer in model.layers}
        replacements = {}
        if input_tensors is not None:
            tensors = flatten(input_tensors)
            if len(tensors) != len(model.inputs):
                raise ValueError(f"Model '{model.name}' has {len(model.inputs)} input(s); input_tensors has "
                                 f"{len(tensors)}")
            for tensor, original in zip(tensors, model.inputs):
                replacements[original._keras_history[0].name] = tensor._keras_history[0]

        def factory(layer_config):
            name = layer_config["name"]
            if name in replacements:
                return replacements[name]
            layer = originals[name]
            return clone(layer) if isinstance(layer, InputLayer) else clone_layer(layer)

        return functional_from_config(Functional, functional_config(model), layer_factory=factory)
    return model.__class__.from_config(model.get_config())
