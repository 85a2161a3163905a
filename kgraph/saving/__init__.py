"""kgraph.saving: Keras 3's `keras.saving` namespace.

`.keras` files are Keras 3's zip archives (config.json, metadata.json, model.weights.h5 in
Keras's HDF5 layout), so models move between kgraph and Keras 3 in both directions. See
saving_lib for the format, serialization_lib for object configs, object_registration for
custom objects.
"""

from kgraph.saving.object_registration import (
    CustomObjectScope,
    custom_object_scope,
    get_custom_objects,
    get_registered_name,
    get_registered_object,
    register_keras_serializable,
)
from kgraph.saving.saving_api import load_model, load_weights, save_model, save_weights
from kgraph.saving.serialization_lib import deserialize_keras_object, serialize_keras_object

__all__ = [
    "CustomObjectScope",
    "custom_object_scope",
    "get_custom_objects",
    "get_registered_name",
    "get_registered_object",
    "register_keras_serializable",
    "load_model",
    "save_model",
    "load_weights",
    "save_weights",
    "serialize_keras_object",
    "deserialize_keras_object",
]
