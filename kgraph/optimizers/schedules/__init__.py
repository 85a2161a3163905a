"""kgraph.optimizers.schedules: Keras 3's learning rate schedules."""

from kgraph._serialization import deserialize_keras_object, register_public, serialize_keras_object
from kgraph.optimizers.schedules.learning_rate_schedule import (
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    LearningRateSchedule,
    PiecewiseConstantDecay,
    PolynomialDecay,
)

ALL_OBJECTS = [
    LearningRateSchedule,
    ExponentialDecay,
    PiecewiseConstantDecay,
    PolynomialDecay,
    InverseTimeDecay,
    CosineDecay,
    CosineDecayRestarts,
]
ALL_OBJECTS_DICT = {cls.__name__: cls for cls in ALL_OBJECTS}

register_public(ALL_OBJECTS, "keras.optimizers.schedules")


def serialize(learning_rate_schedule):
    """The schedule's config in Keras 3's format."""
    return serialize_keras_object(learning_rate_schedule)


def deserialize(config, custom_objects=None):
    """The schedule a config (from `serialize`) describes."""
    return deserialize_keras_object(
        config, module_objects=ALL_OBJECTS_DICT, custom_objects=custom_objects, printable_module_name="decay"
    )


__all__ = [cls.__name__ for cls in ALL_OBJECTS] + ["serialize", "deserialize"]
