"""Custom objects: `register_keras_serializable`, `CustomObjectScope` and the registry lookups.

The registry is kgraph._serialization's (GLOBAL_CUSTOM_OBJECTS, keyed "package>Name"), so
every deserializer in kgraph (layers, losses, metrics, optimizers, activations, ...) sees
registered objects. A CustomObjectScope makes its objects visible to all of them too, for
the duration of the `with` block, by entering them in that registry and restoring what it
held on exit (so nested scopes and registrations made inside a scope behave as in Keras).
"""

from __future__ import annotations

import inspect
import threading

from kgraph import _serialization

GLOBAL_CUSTOM_OBJECTS = _serialization.GLOBAL_CUSTOM_OBJECTS
GLOBAL_CUSTOM_NAMES = _serialization.GLOBAL_CUSTOM_NAMES

_MISSING = object()
_lock = threading.RLock()
_scope_stack = []  # the custom_objects dicts of the scopes now open, innermost last


def register_keras_serializable(package="Custom", name=None):
    """Register a class or function under "package>name" so configs that name it load.

    ```python
    @kgraph.saving.register_keras_serializable(package="MyLayers")
    class Scale(kgraph.layers.Layer):
        ...
    ```
    """

    def decorator(arg):
        class_name = name if name is not None else arg.__name__
        if inspect.isclass(arg) and not hasattr(arg, "get_config"):
            raise ValueError("Cannot register a class that does not have a get_config() method.")
        return _serialization.register_custom_object(arg, package=package, name=class_name)

    return decorator


def get_registered_name(obj):
    """The name `obj` is registered under ("package>Name"), or its Python name."""
    return _serialization.get_registered_name(obj)


def get_registered_object(name, custom_objects=None, module_objects=None):
    """The class or function registered (or passed, or in a custom object scope) as `name`."""
    for scope in reversed(_scope_stack):
        if name in scope:
            return scope[name]
    if name in GLOBAL_CUSTOM_OBJECTS:
        return GLOBAL_CUSTOM_OBJECTS[name]
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if module_objects and name in module_objects:
        return module_objects[name]
    return None


def get_custom_objects():
    """The live global registry {"package>Name": object} (also holds the open scopes' objects)."""
    return GLOBAL_CUSTOM_OBJECTS


class CustomObjectScope:
    """Within `with CustomObjectScope({"Scale": Scale}):`, configs naming "Scale" load.

    Accepts dicts of {name: object} (several may be given, as in Keras).
    """

    def __init__(self, *args):
        self.custom_objects = {}
        for objects in args:
            if objects:
                self.custom_objects.update(objects)
        self._backup = None

    def __enter__(self):
        with _lock:
            self._backup = {key: GLOBAL_CUSTOM_OBJECTS.get(key, _MISSING) for key in self.custom_objects}
            GLOBAL_CUSTOM_OBJECTS.update(self.custom_objects)
            _scope_stack.append(self.custom_objects)
        return self

    def __exit__(self, *exc_info):
        with _lock:
            if _scope_stack and _scope_stack[-1] is self.custom_objects:
                _scope_stack.pop()
            for key, previous in self._backup.items():
                if previous is _MISSING:
                    GLOBAL_CUSTOM_OBJECTS.pop(key, None)
                else:
                    GLOBAL_CUSTOM_OBJECTS[key] = previous
        return False


custom_object_scope = CustomObjectScope
