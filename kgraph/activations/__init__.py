"""kgraph.activations: Keras 3's `keras.activations` namespace (see activations.py)."""

import types

from kgraph._serialization import (
    GLOBAL_CUSTOM_NAMES,
    deserialize_keras_object,
    register_public,
    serialize_keras_object,
)
from kgraph.activations.activations import (
    celu,
    elu,
    exponential,
    gelu,
    glu,
    hard_shrink,
    hard_sigmoid,
    hard_silu,
    hard_swish,
    hard_tanh,
    leaky_relu,
    linear,
    log_sigmoid,
    log_softmax,
    mish,
    relu,
    relu6,
    selu,
    sigmoid,
    silu,
    soft_shrink,
    softmax,
    softplus,
    softsign,
    sparse_plus,
    sparse_sigmoid,
    squareplus,
    swish,
    tanh,
    tanh_shrink,
    threshold,
)

ALL_OBJECTS = [
    relu,
    leaky_relu,
    relu6,
    softmax,
    celu,
    elu,
    selu,
    softplus,
    softsign,
    squareplus,
    soft_shrink,
    sparse_plus,
    silu,
    gelu,
    glu,
    tanh,
    tanh_shrink,
    threshold,
    sigmoid,
    sparse_sigmoid,
    exponential,
    hard_sigmoid,
    hard_silu,
    hard_tanh,
    hard_shrink,
    linear,
    mish,
    log_softmax,
    log_sigmoid,
]

ALL_OBJECTS_DICT = {fn.__name__: fn for fn in ALL_OBJECTS}
ALL_OBJECTS_DICT["swish"] = silu
ALL_OBJECTS_DICT["hard_swish"] = hard_silu

register_public(ALL_OBJECTS, "keras.activations")


def serialize(activation):
    """A built-in activation's name ("relu"); a full config for registered custom ones."""
    config = serialize_keras_object(activation)
    if not isinstance(config, dict) or "config" not in config:
        raise ValueError(
            f"Unknown activation function '{activation}' cannot be serialized due to invalid "
            "function name. Make sure to use an activation name that matches the references "
            "defined in activations.py or use `@keras.saving.register_keras_serializable()` "
            f"to register any custom activations. config={config}"
        )
    if not isinstance(activation, types.FunctionType):
        return config  # activation objects (e.g. a layer) keep their full config
    if config.get("module") != "keras.activations":
        config["config"] = GLOBAL_CUSTOM_NAMES.get(activation, activation.__name__)
        return config
    return config["config"]


def deserialize(config, custom_objects=None):
    """The activation function a name or config describes."""
    return deserialize_keras_object(
        config,
        module_objects=ALL_OBJECTS_DICT,
        custom_objects=custom_objects,
        printable_module_name="activation function",
    )


def get(identifier):
    """An activation function from a name, a config dict or a callable; None gives `linear`."""
    if identifier is None:
        return linear
    if isinstance(identifier, dict):
        obj = deserialize(identifier)
    elif isinstance(identifier, str):
        obj = ALL_OBJECTS_DICT.get(identifier)
        if obj is None:
            raise ValueError(
                f"Could not interpret activation function identifier: {identifier!r}. "
                f"Valid activations: {sorted(ALL_OBJECTS_DICT)}"
            )
    else:
        obj = identifier
    if callable(obj):
        return obj
    raise ValueError(
        f"Could not interpret activation function identifier: {identifier!r}. "
        f"Valid activations: {sorted(ALL_OBJECTS_DICT)}"
    )


__all__ = [fn.__name__ for fn in ALL_OBJECTS] + ["swish", "hard_swish", "get", "serialize", "deserialize"]
