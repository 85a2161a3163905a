"""kgraph.models: Model, Sequential and Functional, and Keras 3's model saving functions."""

from kgraph._serialization import register_public
from kgraph.models.cloning import clone_model  # noqa: F401
from kgraph.models.functional import Functional  # noqa: F401
from kgraph.models.model import Model  # noqa: F401
from kgraph.models.sequential import Sequential  # noqa: F401

register_public([Model, Sequential], "keras")


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Load a `.keras` model file (kgraph.saving.load_model)."""
    from kgraph.saving import load_model as _load_model

    return _load_model(filepath, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)


def save_model(model, filepath, overwrite=True, zipped=None, **kwargs):
    """Save a model as a `.keras` file (kgraph.saving.save_model)."""
    from kgraph.saving import save_model as _save_model

    return _save_model(model, filepath, overwrite=overwrite, zipped=zipped, **kwargs)


def model_from_json(json_string, custom_objects=None):
    """The (uncompiled, freshly initialized) model a `model.to_json()` string describes."""
    import json

    from kgraph.saving import deserialize_keras_object

    return deserialize_keras_object(json.loads(json_string), custom_objects=custom_objects)
