"""Sequential: a plain stack of layers, built as a functional graph once its input is known."""

from __future__ import annotations

from kgraph.ir import SymbolicTensor
from kgraph.layers.core import Input, InputLayer
from kgraph.layers.layer import Layer
from kgraph.models.model import Model


class Sequential(Model):
    def __init__(self, layers=None, trainable=True, name=None):
        super().__init__(trainable=trainable, name=name)
        self._input_layer = None
        self._stack = []
        self._functional = None
        for layer in layers or []:
            self.add(layer, rebuild=False)
        self._maybe_rebuild()

    def add(self, layer, rebuild=True):
        """Append a layer (or an Input tensor / InputLayer as the first entry)."""
        if isinstance(layer, SymbolicTensor) and isinstance(getattr(layer, "_keras_history", (None,))[0],
                                                             InputLayer):
            layer = layer._keras_history[0]
        if isinstance(layer, InputLayer):
            if self._stack or self._input_layer is not None:
                raise ValueError(f'Sequential model "{self.name}": an InputLayer can only be the first entry')
            self._input_layer = layer
        elif isinstance(layer, Layer):
            if any(layer is existing for existing in self._stack):
                raise ValueError(f'Sequential model "{self.name}" already contains layer "{layer.name}"')
            self._stack.append(layer)
            self._layers.append(layer)
        else:
            raise ValueError(f"Only instances of kgraph.layers.Layer can be added to a Sequential model, "
                             f"got {layer!r} (of type {type(layer).__name__})")
        self.built = False
        self._functional = None
        self._reset_compiled_functions()
        if rebuild:
            self._maybe_rebuild()

    def pop(self, rebuild=True):
        if not self._stack:
            raise IndexError(f'Sequential model "{self.name}" has no layers to remove')
        layer = self._stack.pop()
        self._layers.remove(layer)
        self.built = False
        self._functional = None
        self._reset_compiled_functions()
        if rebuild:
            self._maybe_rebuild()
        return layer

    @property
    def layers(self):
        return list(self._stack)

    def _maybe_rebuild(self):
        if self._input_layer is not None:
            self.build(self._input_layer.batch_shape)
        elif self._stack and getattr(self._stack[0], "_batch_input_shape", None) is not None:
            self.build(self._stack[0]._batch_input_shape)

    def build(self, input_shape=None):
        if input_shape is None:
            raise ValueError(f'Sequential model "{self.name}" cannot be built without an input shape')
        from kgraph.models.functional import Functional

        input_shape = tuple(input_shape)
        if self._input_layer is None or tuple(self._input_layer.batch_shape) != input_shape:
            dtype = getattr(self._stack[0], "_input_dtype", None) if self._stack else None
            inputs = Input(batch_shape=input_shape, dtype=dtype,
                           name=f"{self.name}_input" if self._input_layer is None else None)
            self._input_layer = inputs._keras_history[0]
        inputs = self._input_layer.output_tensor
        x = inputs
        for layer in self._stack:
            x = layer(x)
        self._functional = Functional(inputs, x, name=f"{self.name}_functional")
        self._build_shapes_dict = {"input_shape": input_shape}
        self.built = True

    def call(self, inputs, training=None, mask=None):
        if self._functional is not None:
            return self._functional.call(inputs, training=training)
        x = inputs
        for layer in self._stack:
            x = layer(x)
        return x

    @property
    def inputs(self):
        return self._functional.inputs if self._functional else None

    @property
    def outputs(self):
        return self._functional.outputs if self._functional else None

    @property
    def input(self):
        self._require_built("input")
        return self._functional.inputs[0]

    @property
    def output(self):
        self._require_built("output")
        return self._functional.outputs[0]

    @property
    def input_shape(self):
        self._require_built("input_shape")
        return tuple(self._functional.inputs[0].shape)

    @property
    def output_shape(self):
        self._require_built("output_shape")
        return tuple(self._functional.outputs[0].shape)

    @property
    def input_names(self):
        return [self._input_layer.name] if self._input_layer else []

    @property
    def output_names(self):
        return [self._stack[-1].name] if self._stack else []

    def _require_built(self, what):
        if self._functional is None:
            raise AttributeError(f'Sequential model "{self.name}" has no defined {what} yet: it is built '
                                 "when it is first called on data, or give it an Input first")

    def get_config(self):
        from kgraph.models.serialization import sequential_config

        return sequential_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from kgraph.models.serialization import sequential_from_config
        from kgraph.saving.object_registration import CustomObjectScope

        with CustomObjectScope(custom_objects or {}):
            return sequential_from_config(cls, config)
