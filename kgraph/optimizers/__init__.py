"""kgraph.optimizers: Keras 3's `keras.optimizers` namespace (see optimizer.py)."""

import inspect

from kgraph._serialization import deserialize_keras_object, register_public, serialize_keras_object
from kgraph.optimizers import schedules
from kgraph.optimizers.adadelta import Adadelta
from kgraph.optimizers.adafactor import Adafactor
from kgraph.optimizers.adam import Adam, AdamW
from kgraph.optimizers.adamax import Adamax
from kgraph.optimizers.ftrl import Ftrl
from kgraph.optimizers.lamb import Lamb
from kgraph.optimizers.lion import Lion
from kgraph.optimizers.nadam import Nadam
from kgraph.optimizers.optimizer import BaseOptimizer, Optimizer, clip_by_global_norm, global_norm
from kgraph.optimizers.rmsprop import Adagrad, RMSprop
from kgraph.optimizers.sgd import SGD

ALL_OBJECTS = [
    Optimizer,
    SGD,
    Adam,
    AdamW,
    RMSprop,
    Adagrad,
    Adadelta,
    Adamax,
    Nadam,
    Ftrl,
    Lion,
    Lamb,
    Adafactor,
]
ALL_OBJECTS_DICT = {cls.__name__.lower(): cls for cls in ALL_OBJECTS}

register_public(ALL_OBJECTS, "keras.optimizers")


def serialize(optimizer):
    """The optimizer's config in Keras 3's format."""
    return serialize_keras_object(optimizer)


def deserialize(config, custom_objects=None):
    """The optimizer a config describes (class names match case-insensitively, as in Keras)."""
    if isinstance(config, dict) and config.get("class_name", "").lower() in ALL_OBJECTS_DICT:
        config = dict(config, class_name=config["class_name"].lower())
    return deserialize_keras_object(
        config,
        module_objects=ALL_OBJECTS_DICT,
        custom_objects=custom_objects,
        printable_module_name="optimizer",
    )


def get(identifier):
    """An optimizer from a name ("sgd", "adam", "nadam", "lamb", ...: the class name in lower
    case), a config dict, a class or an instance."""
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        obj = deserialize(identifier)
    elif isinstance(identifier, str):
        cls = ALL_OBJECTS_DICT.get(identifier.lower())
        if cls is None or cls is Optimizer:
            raise ValueError(
                f"Could not interpret optimizer identifier: {identifier!r}. Valid optimizers: "
                f"{sorted(k for k in ALL_OBJECTS_DICT if k != 'optimizer')}"
            )
        obj = cls()
    elif inspect.isclass(identifier) and issubclass(identifier, Optimizer):
        obj = identifier()
    else:
        obj = identifier
    if isinstance(obj, Optimizer):
        return obj
    raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}")


__all__ = [
    "Optimizer",
    "BaseOptimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "Adamax",
    "Nadam",
    "Ftrl",
    "Lion",
    "Lamb",
    "Adafactor",
    "schedules",
    "get",
    "serialize",
    "deserialize",
    "global_norm",
    "clip_by_global_norm",
]
