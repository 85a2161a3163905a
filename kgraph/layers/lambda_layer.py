"""Lambda: a layer that calls a Python function (written with kgraph.ops) on its inputs.

Its config is Keras 3's: a named function is saved by name (registered objects, or
custom_objects at load time); a `lambda` is saved as its marshalled bytecode, which
Keras 3 loads with safe_mode=False. kgraph never runs code from a file, so loading a
saved lambda fails with a message that says what to do instead (a named function,
registered or passed in custom_objects).
"""

from __future__ import annotations

import base64
import inspect
import marshal
import types

from kgraph.layers.layer import Layer


def _is_lambda(fn):
    return isinstance(fn, types.LambdaType) and fn.__name__ == "<lambda>"


def _serialize_function(fn):
    from kgraph.saving.serialization_lib import serialize_keras_object

    if _is_lambda(fn):
        closure = tuple(cell.cell_contents for cell in fn.__closure__) if fn.__closure__ else None
        return {"class_name": "__lambda__",
                "config": {"code": base64.encodebytes(marshal.dumps(fn.__code__)).decode("ascii"),
                           "defaults": fn.__defaults__, "closure": closure}}
    return serialize_keras_object(fn)


def _deserialize_function(config, custom_objects=None):
    from kgraph.saving.serialization_lib import deserialize_keras_object

    if isinstance(config, dict) and config.get("class_name") == "__lambda__":
        raise ValueError("This Lambda layer's function is a Python lambda stored as bytecode; kgraph never runs "
                         "code from a file. Define it as a named function, register it with "
                         "@kgraph.saving.register_keras_serializable() (or pass it in custom_objects), and "
                         "save the model again.")
    return deserialize_keras_object(config, custom_objects=custom_objects)


class Lambda(Layer):
    """Wraps `function(inputs, **arguments)` as a layer (Keras 3's Lambda).

    output_shape: the output shape without the batch dimension (or a function of the input
    shape); by default it is found by tracing the function. mask: a mask for the outputs,
    or a function `mask(inputs, previous_mask)`.
    """

    def __init__(self, function, output_shape=None, mask=None, arguments=None, **kwargs):
        super().__init__(**kwargs)
        if not callable(function):
            raise TypeError(f'Layer "{self.name}": Lambda needs a callable function, got {type(function).__name__}')
        self.function = function
        self.arguments = dict(arguments or {})
        self._output_shape = tuple(output_shape) if isinstance(output_shape, list) else output_shape
        self.mask = mask
        self.supports_masking = True
        parameters = inspect.signature(function).parameters
        self._fn_takes_mask = "mask" in parameters
        self._fn_takes_training = "training" in parameters

    def call(self, inputs, mask=None, training=None):
        kwargs = dict(self.arguments)
        if self._fn_takes_mask:
            kwargs["mask"] = mask
        if self._fn_takes_training:
            kwargs["training"] = training
        return self.function(inputs, **kwargs)

    def compute_output_shape(self, input_shape):
        if self._output_shape is None:
            return super().compute_output_shape(input_shape)
        if callable(self._output_shape):
            return tuple(self._output_shape(input_shape))
        batch = input_shape[0][0] if input_shape and isinstance(input_shape[0], (list, tuple)) else input_shape[0]
        return (batch,) + tuple(self._output_shape)

    def compute_mask(self, inputs, previous_mask=None):
        if callable(self.mask):
            return self.mask(inputs, previous_mask)
        return self.mask

    def get_config(self):
        from kgraph.saving.serialization_lib import serialize_keras_object

        config = {**super().get_config(), "function": _serialize_function(self.function)}
        if self._output_shape is not None:
            config["output_shape"] = (_serialize_function(self._output_shape) if callable(self._output_shape)
                                      else list(self._output_shape))
        if self.mask is not None:
            config["mask"] = (_serialize_function(self.mask) if callable(self.mask)
                              else serialize_keras_object(self.mask))
        config["arguments"] = serialize_keras_object(self.arguments)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from kgraph.saving.serialization_lib import deserialize_keras_object

        config = dict(config)
        config["function"] = _deserialize_function(config["function"], custom_objects)
        if "output_shape" in config:
            shape = config["output_shape"]
            if isinstance(shape, dict):
                config["output_shape"] = _deserialize_function(shape, custom_objects)
            elif isinstance(shape, list):
                config["output_shape"] = tuple(shape)
        if isinstance(config.get("mask"), dict):
            config["mask"] = _deserialize_function(config["mask"], custom_objects)
        if "arguments" in config:
            config["arguments"] = deserialize_keras_object(config["arguments"], custom_objects=custom_objects)
        return cls(**config)
