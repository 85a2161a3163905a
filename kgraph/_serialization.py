"""Keras 3's object config format, shared by initializers, activations, losses, metrics and
optimizers (and, later, by kgraph.saving).

`serialize_keras_object` writes the dicts Keras 3 writes into a `.keras` config.json:

    {"module": "keras.initializers", "class_name": "GlorotUniform",
     "config": {"seed": None}, "registered_name": None}

Built-in objects name their public Keras module (`keras.losses`, ...), so a config written
here loads in Keras 3 and the other way round. `deserialize_keras_object` reads those dicts
back. It never imports a module named in a config other than kgraph's own public modules:
custom classes load only when registered (`register_custom_object`) or passed in
`custom_objects`.
"""

from __future__ import annotations

import importlib
import inspect
import types

import numpy as np

# Custom objects registered by name ("package>Name"), as keras.saving.register_keras_serializable.
GLOBAL_CUSTOM_OBJECTS: dict = {}
GLOBAL_CUSTOM_NAMES: dict = {}

# Built-in objects: id(obj) -> (public module, public name), e.g. ("keras.losses", "mean_squared_error").
_PUBLIC: dict = {}

PLAIN_TYPES = (str, int, float, bool)


def register_public(objects, module):
    """Record `objects` (classes or functions) as members of the Keras module `module`."""
    for obj in objects:
        _PUBLIC.setdefault(id(obj), (module, obj.__name__))


def register_custom_object(obj, package="Custom", name=None):
    """Register a custom class or function under "package>name" for deserialization."""
    registered = f"{package}>{name or obj.__name__}"
    GLOBAL_CUSTOM_OBJECTS[registered] = obj
    GLOBAL_CUSTOM_NAMES[obj] = registered
    return obj


def get_registered_name(obj):
    return GLOBAL_CUSTOM_NAMES.get(obj, obj.__name__)


def _is_function(obj):
    return isinstance(obj, (types.FunctionType, types.BuiltinFunctionType))


def serialize_keras_object(obj):
    """A JSON-friendly description of `obj` in Keras 3's format."""
    if obj is None or isinstance(obj, PLAIN_TYPES):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [serialize_keras_object(x) for x in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        return {key: serialize_keras_object(value) for key, value in obj.items()}
    if isinstance(obj, bytes):
        return {"class_name": "__bytes__", "config": {"value": obj.decode("utf-8")}}
    if isinstance(obj, np.ndarray) and obj.ndim > 0:
        return {"class_name": "__numpy__", "config": {"value": obj.tolist(), "dtype": obj.dtype.name}}
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.item()
    if _is_function(obj):
        if obj.__name__ == "<lambda>":
            raise ValueError(
                "A lambda cannot be serialized: define a named function and register it "
                "with kgraph.saving.register_keras_serializable()."
            )
        public = _PUBLIC.get(id(obj))
        if public is not None:
            module, name = public
            return {"module": module, "class_name": "function", "config": name, "registered_name": name}
        name = get_registered_name(obj)
        return {"module": obj.__module__, "class_name": "function", "config": name, "registered_name": name}
    if not hasattr(obj, "get_config"):
        raise TypeError(f"Cannot serialize {obj!r}: it is not a Keras object (it has no get_config()).")
    config = serialize_keras_object(obj.get_config())
    cls = obj.__class__
    public = _PUBLIC.get(id(cls))
    if public is not None:
        return {"module": public[0], "class_name": public[1], "config": config, "registered_name": None}
    return {
        "module": cls.__module__,
        "class_name": cls.__name__,
        "config": config,
        "registered_name": get_registered_name(cls),
    }


def _kgraph_module(module):
    """kgraph's module for a Keras public module ("keras.losses" -> kgraph.losses), or None."""
    if not module or not (module == "keras" or module.startswith(("keras.", "kgraph"))):
        return None
    name = "kgraph" + module[len("keras") :] if module.startswith("keras") else module
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _lookup(name, registered_name, module, module_objects, custom_objects, function=False):
    """Find `name`: custom objects, registered objects, the module's objects, kgraph's module.

    With `function`, classes are skipped (metrics map "mean_squared_error" to a class, but a
    serialized function of that name is the loss function).
    """

    def fits(obj):
        return obj is not None and not (function and inspect.isclass(obj))

    for key in (registered_name, name):
        if key and custom_objects and fits(custom_objects.get(key)):
            return custom_objects[key]
    for key in (registered_name, name):
        if key and fits(GLOBAL_CUSTOM_OBJECTS.get(key)):
            return GLOBAL_CUSTOM_OBJECTS[key]
    if module_objects and fits(module_objects.get(name)):
        return module_objects[name]
    found = _kgraph_module(module)
    if found is not None and fits(getattr(found, name, None)):
        return getattr(found, name)
    return None


def deserialize_keras_object(
    config, module_objects=None, custom_objects=None, printable_module_name="object"
):
    """The object a `serialize_keras_object` config (or a bare name) describes."""
    if config is None:
        return None
    if isinstance(config, str):
        obj = _lookup(config, None, None, module_objects, custom_objects)
        if obj is None:
            raise ValueError(
                f"Unknown {printable_module_name}: '{config}'. Make sure custom objects are "
                "registered with kgraph.saving.register_keras_serializable() or passed in "
                "custom_objects."
            )
        return obj
    if isinstance(config, PLAIN_TYPES):
        return config
    if isinstance(config, (list, tuple)):
        items = [
            deserialize_keras_object(x, module_objects, custom_objects, printable_module_name) for x in config
        ]
        return tuple(items) if isinstance(config, tuple) else items
    if not isinstance(config, dict):
        raise TypeError(f"Could not parse config: {config!r}")
    if "class_name" not in config or "config" not in config:
        return {
            key: deserialize_keras_object(value, module_objects, custom_objects, printable_module_name)
            if isinstance(value, dict)
            else value
            for key, value in config.items()
        }
    class_name = config["class_name"]
    inner = config["config"]
    if class_name in ("__numpy__", "__tensor__"):
        return np.array(inner["value"], dtype=inner["dtype"])
    if class_name == "__bytes__":
        return inner["value"].encode("utf-8")
    module = config.get("module")
    registered_name = config.get("registered_name")
    if class_name == "function":
        fn = _lookup(inner, registered_name, module, module_objects, custom_objects, function=True)
        if fn is None:
            raise ValueError(
                f"Could not locate function '{inner}'. Make sure custom functions are "
                "registered with kgraph.saving.register_keras_serializable(). "
                f"Full object config: {config}"
            )
        return fn
    cls = _lookup(class_name, registered_name, module, module_objects, custom_objects)
    if cls is None:
        raise ValueError(
            f"Could not locate class '{class_name}'. Make sure custom classes are decorated "
            "with `@keras.saving.register_keras_serializable()`. "
            f"Full object config: {config}"
        )
    if not inspect.isclass(cls):
        return cls
    if isinstance(inner, dict) and hasattr(cls, "from_config"):
        return cls.from_config(dict(inner))
    if isinstance(inner, dict):
        return cls(**inner)
    return cls()
