"""Model: a Layer that trains (compile/fit/evaluate/predict), the base of Functional,
Sequential and subclassed models."""

from __future__ import annotations

import numpy as np

from kgraph.ir import SymbolicTensor, is_tracing
from kgraph.layers.layer import Layer, flatten
from kgraph.trainers.trainer import Trainer


class Model(Trainer, Layer):
    """`Model(inputs, outputs)` builds a Functional model; subclass it and define call()
    for a subclassed model."""

    def __new__(cls, *args, **kwargs):
        if cls is Model and (len(args) >= 2 or ("inputs" in kwargs and "outputs" in kwargs)):
            from kgraph.models.functional import Functional

            return object.__new__(Functional)
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        trainable = kwargs.pop("trainable", True)
        name = kwargs.pop("name", None)
        dtype = kwargs.pop("dtype", None)
        if args or kwargs:
            unknown = ", ".join(sorted(kwargs)) or f"{len(args)} positional arguments"
            raise TypeError(f"{type(self).__name__}.__init__ got unexpected arguments: {unknown}")
        Layer.__init__(self, trainable=trainable, name=name, dtype=dtype)
        Trainer.__init__(self)

    @property
    def layers(self):
        return [layer for layer in self._layers]

    def get_layer(self, name=None, index=None):
        """A layer by name or index."""
        if index is not None:
            if name is not None:
                raise ValueError("Provide only a layer name or a layer index, not both")
            if not 0 <= index < len(self.layers) and not -len(self.layers) <= index < 0:
                raise ValueError(f"Was asked to retrieve layer at index {index} but model only has "
                                 f"{len(self.layers)} layers")
            return self.layers[index]
        if name is not None:
            for layer in self.layers:
                if layer.name == name:
                    return layer
            raise ValueError(f"No such layer: {name}. Existing layers are: {[l.name for l in self.layers]}")
        raise ValueError("Provide either a layer name or layer index to get_layer()")

    def __call__(self, *args, **kwargs):
        inputs = args[0] if args else kwargs.get("inputs")
        eager = not is_tracing() and not any(isinstance(t, SymbolicTensor) for t in flatten(inputs))
        if eager and not kwargs.get("training") and len(args) <= 1:
            return self._call_compiled(inputs)
        return super().__call__(*args, **kwargs)

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False,
                show_trainable=False, layer_range=None):
        from kgraph.utils.summary import print_summary

        print_summary(self, line_length=line_length, print_fn=print_fn, show_trainable=show_trainable)

    def build(self, input_shape=None):
        """Create the weights of a subclassed model by calling it once on symbolic inputs.

        The call runs in a throwaway graph, so building inside a compiled step's trace
        adds nothing to the step.
        """
        if input_shape is not None and not self.built:
            from kgraph.ir import Graph, tracing
            from kgraph.layers.core import Input
            from kgraph.layers.layer import map_structure

            with tracing(Graph(f"{self.name}_build")):
                if isinstance(input_shape, list):
                    inputs = map_structure(lambda s: Input(batch_shape=tuple(s)), input_shape)
                else:
                    inputs = Input(batch_shape=tuple(input_shape))
                if self._call_has_training:
                    self.call(inputs, training=False)
                else:
                    self.call(inputs)
        self.built = True

    def export(self, filepath, format="onnx", verbose=None, input_signature=None, **kwargs):
        """Export the model for inference (Keras 3's Model.export); kgraph writes "onnx"."""
        from kgraph.exporters import export

        return export(self, filepath, format=format, verbose=verbose,
                      input_signature=input_signature, **kwargs)

    def _numpy_outputs(self, outputs):
        return [np.array(o, copy=True) for o in outputs]
