"""`serialize_keras_object` / `deserialize_keras_object` as `keras.saving` has them.

Layers and models are written as Keras 3 writes them: {"module", "class_name", "config",
"registered_name"} plus "build_config" (the input shape the layer was built with) and, for a
compiled model, "compile_config". Every other object (initializers, losses, metrics,
optimizers, activations, regularizers) goes through kgraph._serialization, the one
implementation of Keras's object config format in kgraph.

Loading never runs code from a config: classes and functions resolve only to kgraph's own
public objects, registered custom objects and `custom_objects`; serialized lambdas (Keras
stores their bytecode) and non-modeling functions (load_model, ...) are refused.
"""

from __future__ import annotations

import inspect

from kgraph import _serialization as _core
from kgraph.saving.object_registration import CustomObjectScope

# Keras APIs that a model config may not name (keras.src.saving.serialization_lib.NON_MODELING_APIS),
# with their kgraph spellings.
_NON_MODELING = {
    "backend.clear_session", "config.enable_unsafe_deserialization", "models.load_model",
    "models.model_from_json", "models.save_model", "models.clone_model",
    "preprocessing.image_dataset_from_directory", "preprocessing.image.load_img", "preprocessing.image.save_img",
    "preprocessing.text_dataset_from_directory", "saving.deserialize_keras_object", "saving.load_model",
    "saving.load_weights", "saving.register_keras_serializable", "saving.save_model", "saving.save_weights",
    "saving.serialize_keras_object", "utils.audio_dataset_from_directory", "utils.clear_session",
    "utils.deserialize_keras_object", "utils.get_file", "utils.image_dataset_from_directory", "utils.load_img",
    "utils.register_keras_serializable", "utils.save_img", "utils.serialize_keras_object",
    "utils.text_dataset_from_directory",
}
_NON_MODELING_MODULES = ("saving", "utils", "config", "backend", "preprocessing", "models", "cli", "datasets")

_FUNCTIONAL = ("keras.src.models.functional", "Functional")


def _model_classes():
    from kgraph import layers
    from kgraph.models.functional import Functional
    from kgraph.models.model import Model
    from kgraph.models.sequential import Sequential

    return {**layers.ALL_OBJECTS_DICT, "Functional": Functional, "Sequential": Sequential, "Model": Model}


# -- serialization ------------------------------------------------------------------------------------
def serialize_keras_object(obj):
    """A JSON-friendly config of `obj` in Keras 3's format (layers and models included)."""
    from kgraph.layers.layer import Layer

    if isinstance(obj, Layer):
        return _serialize_layer(obj)
    if isinstance(obj, dict):
        return {key: serialize_keras_object(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [serialize_keras_object(x) for x in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    return _core.serialize_keras_object(obj)


def _serialize_layer(obj):
    from kgraph.models.functional import Functional

    config = obj.get_config()
    if not isinstance(config, dict):
        raise TypeError(f"The get_config() method of {obj} should return a dict. It returned: {config!r}")
    inner = serialize_keras_object(config)
    cls = type(obj)
    public = _core._PUBLIC.get(id(cls))
    if cls is Functional:
        result = {"module": _FUNCTIONAL[0], "class_name": _FUNCTIONAL[1], "config": inner,
                  "registered_name": "Functional"}
    elif public is not None:
        result = {"module": public[0], "class_name": public[1], "config": inner, "registered_name": None}
    else:
        module = cls.__module__
        result = {"module": None if module == "__main__" else module, "class_name": cls.__name__,
                  "config": inner, "registered_name": _core.get_registered_name(cls)}
    build_config = obj.get_build_config() if hasattr(obj, "get_build_config") else None
    if build_config is not None:
        result["build_config"] = serialize_keras_object(build_config)
    if hasattr(obj, "get_compile_config"):
        compile_config = obj.get_compile_config()
        if compile_config is not None:
            result["compile_config"] = compile_config
    return result


def serialize_compile_config(model):
    """compile()'s arguments as Keras 3 writes them into config.json's "compile_config"."""
    config = getattr(model, "_compile_config", None)
    if not getattr(model, "compiled", False) or config is None:
        return {}
    return {
        "optimizer": serialize_keras_object(model.optimizer),
        "loss": serialize_keras_object(config.get("loss")),
        "loss_weights": serialize_keras_object(config.get("loss_weights")),
        "metrics": serialize_keras_object(config.get("metrics")),
        "weighted_metrics": serialize_keras_object(config.get("weighted_metrics")),
        "run_eagerly": False,
        "steps_per_execution": config.get("steps_per_execution", 1),
        "jit_compile": True,
    }


def _is_object_config(value):
    return isinstance(value, dict) and "class_name" in value and "config" in value


def _map_objects(value, fn):
    """Apply `fn` to every object config in a (nested) structure of lists and name-keyed dicts."""
    if _is_object_config(value):
        return fn(value)
    if isinstance(value, dict):
        return {key: _map_objects(item, fn) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_objects(item, fn) for item in value)
    return value


def deserialize_compile_config(config):
    """The keyword arguments of compile() that a "compile_config" describes."""
    from kgraph import losses, metrics, optimizers
    from kgraph.trainers.trainer import Trainer

    accepted = set(inspect.signature(Trainer.compile).parameters) - {"self"}
    result = {}
    for key, value in config.items():
        if key not in accepted:
            continue
        if key == "optimizer":
            value = optimizers.get(value if not _is_object_config(value) else optimizers.deserialize(value))
        elif key == "loss":
            value = _map_objects(value, losses.deserialize)
        elif key in ("metrics", "weighted_metrics"):
            value = _map_objects(value, metrics.deserialize)
        result[key] = value
    return result


# -- deserialization ----------------------------------------------------------------------------------
def _refuse_unsafe(config, safe_mode, where=""):
    """Raise before anything is built if the config holds code or names a non-modeling API."""
    if isinstance(config, (list, tuple)):
        for item in config:
            _refuse_unsafe(item, safe_mode, where)
        return
    if not isinstance(config, dict):
        return
    class_name = config.get("class_name")
    if class_name == "__lambda__":
        raise ValueError(
            f"{where}The config holds a Python lambda (serialized bytecode). kgraph never runs code "
            "stored in a file, whatever safe_mode says: replace the lambda with a named function "
            "registered with kgraph.saving.register_keras_serializable() (or passed in custom_objects).")
    module = config.get("module")
    if isinstance(class_name, str) and isinstance(module, str):
        name = config.get("config") if class_name == "function" else class_name
        for prefix in ("keras.", "kgraph."):
            if module.startswith(prefix) and isinstance(name, str):
                public = module[len(prefix):]
                if f"{public}.{name}" in _NON_MODELING or (
                        public.split(".")[0] in _NON_MODELING_MODULES and name not in _model_classes()):
                    raise ValueError(
                        f"{where}Cannot deserialize '{module}.{name}': it is not a modeling object. A model "
                        "configuration may only name layers, models, losses, metrics, optimizers, "
                        "initializers, activations, regularizers or registered custom objects.")
    for value in config.values():
        _refuse_unsafe(value, safe_mode, where)


def _unknown_class(config):
    class_name = config.get("class_name")
    inner = config.get("config")
    label = inner.get("name") if isinstance(inner, dict) else None
    what = f"class '{class_name}'" + (f" (object '{label}')" if label else "")
    registered = config.get("registered_name")
    key = registered if registered and registered != class_name else class_name
    return ValueError(
        f"Unknown {what}: it is neither a kgraph class nor a registered custom object. Pass it to the "
        f"loader in custom_objects={{'{key}': {class_name}}}, or register it with "
        "@kgraph.saving.register_keras_serializable() before loading. "
        f"(module in the config: {config.get('module')!r}, registered name: {registered!r})")


def _resolve_class(config, module_objects, custom_objects):
    class_name = config["class_name"]
    registered = config.get("registered_name")
    module = config.get("module")
    found = _core._lookup(class_name, registered, module, module_objects, custom_objects)
    keras_module = isinstance(module, str) and (module == "keras" or module.startswith(("keras.", "kgraph")))
    if found is None and keras_module and registered in (None, class_name):
        # Keras's own module paths (keras.src.models.functional.Functional, ...).
        found = _model_classes().get(class_name)
    return found


def _instantiate(cls, config, custom_objects):
    from kgraph.layers.layer import Layer

    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise TypeError(f"Expected 'config' to be a dict for {config['class_name']}, got {type(inner).__name__}. "
                        f"Full object config: {config}")
    try:
        if "custom_objects" in inspect.signature(cls.from_config).parameters:
            instance = cls.from_config(dict(inner), custom_objects=custom_objects)
        else:
            instance = cls.from_config(dict(inner))
    except TypeError as error:
        raise TypeError(
            f"{cls} could not be deserialized properly. Make sure that components that are Python "
            "object instances (layers, models, etc.) returned by get_config() are explicitly "
            f"deserialized in the class's from_config() method.\n\nconfig={config}.\n\n"
            f"Exception encountered: {error}") from error
    if isinstance(instance, Layer):
        build_config = config.get("build_config")
        if build_config and not instance.built:
            instance.build_from_config(build_config)
            instance.built = True
        compile_config = config.get("compile_config")
        if compile_config and hasattr(instance, "compile_from_config"):
            instance.compile_from_config(compile_config)
    return instance


def _deserialize(config, module_objects, custom_objects):
    from kgraph.layers.layer import Layer

    if config is None:
        return None
    if isinstance(config, str):
        found = _core._lookup(config, None, None, None, custom_objects)
        if found is not None:
            return found
        if module_objects and config in module_objects:
            found = module_objects[config]
            return found.from_config({}) if inspect.isclass(found) and hasattr(found, "from_config") else found
        return config
    if isinstance(config, (list, tuple)):
        return [_deserialize(item, module_objects, custom_objects) for item in config]
    if not isinstance(config, dict):
        return config
    if not _is_object_config(config):
        return {key: _deserialize(value, module_objects, custom_objects) for key, value in config.items()}
    class_name = config["class_name"]
    if class_name in ("function", "__numpy__", "__tensor__", "__bytes__") or class_name.startswith("__"):
        return _core.deserialize_keras_object(config, module_objects, custom_objects)
    cls = _resolve_class(config, module_objects, custom_objects)
    if cls is None:
        raise _unknown_class(config)
    if inspect.isclass(cls) and issubclass(cls, Layer):
        return _instantiate(cls, config, custom_objects)
    return _core.deserialize_keras_object(config, module_objects, custom_objects)


def deserialize_keras_object(config, custom_objects=None, safe_mode=True, **kwargs):
    """The object a `serialize_keras_object` config describes (Keras 3's format).

    Args:
        config: the config dict (or a name, or a list of configs).
        custom_objects: {name: class or function} for custom objects that are not registered.
        safe_mode: kept for Keras compatibility; kgraph always refuses serialized lambdas.
        module_objects: {name: object} to resolve bare names against (keyword only).
    """
    module_objects = kwargs.pop("module_objects", None)
    kwargs.pop("printable_module_name", None)
    if kwargs:
        raise TypeError(f"deserialize_keras_object() got unexpected keyword arguments: {sorted(kwargs)}")
    _refuse_unsafe(config, safe_mode)
    custom_objects = dict(custom_objects or {})
    with CustomObjectScope(custom_objects):
        return _deserialize(config, module_objects, custom_objects)
