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

            return Layer.__new__(Functional)
        return Layer.__new__(cls, *args, **kwargs)

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
            self._build_shapes_dict = {"input_shape": input_shape}  # get_build_config() (saving)
        self.built = True

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """Export the model for inference (Keras 3's Model.export): format "onnx", or the
        serving archive ("tf_saved_model", the default, or "archive")."""
        from kgraph.exporters import export

        return export(self, filepath, format=format, verbose=verbose,
                      input_signature=input_signature, **kwargs)

    def _numpy_outputs(self, outputs):
        return [np.array(o, copy=True) for o in outputs]

    # -- saving ---------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config, custom_objects=None):
        """A Functional config rebuilds the graph; any other config is passed to the constructor."""
        from kgraph.layers.layer import keras_compatible_config
        from kgraph.models.functional import Functional, _functional_like_constructor
        from kgraph.models.serialization import functional_from_config

        is_functional_config = all(key in config for key in ("name", "layers", "input_layers", "output_layers"))
        if is_functional_config and (cls in (Functional, Model) or _functional_like_constructor(cls)):
            return functional_from_config(cls, config, custom_objects=custom_objects)
        try:
            return cls(**keras_compatible_config(cls, config))
        except TypeError as error:
            raise TypeError(
                "Unable to revive model from config. When overriding the `get_config()` method, make sure "
                f"that the returned config contains all items used as arguments in the constructor to {cls}, "
                "which is the default behavior. You can override this default behavior by defining a "
                f"`from_config(cls, config)` class method to specify how to create an instance of "
                f"{cls.__name__} from its config.\n\nReceived config={config}\n\n"
                f"Error encountered during deserialization: {error}") from error

    def get_compile_config(self):
        """compile()'s arguments, serialized as Keras 3 writes them ({} if not compiled)."""
        from kgraph.saving.serialization_lib import serialize_compile_config

        return serialize_compile_config(self)

    def compile_from_config(self, config):
        """Compile as get_compile_config() describes, and create the optimizer's variables."""
        import warnings

        from kgraph.saving.serialization_lib import deserialize_compile_config
        from kgraph.trainers.trainer import Trainer

        if type(self).compile is not Trainer.compile:
            warnings.warn("`compile()` was not called as part of model loading because the model's "
                          "`compile()` method is custom. All subclassed Models that have `compile()` overridden "
                          "should also override `get_compile_config()` and `compile_from_config(config)`. "
                          "Alternatively, you can call `compile()` manually after loading.", stacklevel=2)
            return
        self.compile(**deserialize_compile_config(config))
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_weights)

    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """Save the model (architecture, weights, compile config, optimizer state) as a `.keras` file."""
        from kgraph.saving.saving_api import save_model

        return save_model(self, filepath, overwrite=overwrite, zipped=zipped, **kwargs)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        """Save the weights (and optimizer state) to a `.weights.h5` file in Keras 3's layout."""
        from kgraph.saving.saving_api import save_weights

        return save_weights(self, filepath, overwrite=overwrite, **kwargs)

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """Load weights from a `.weights.h5` or `.keras` file (by Keras 3's object layout)."""
        from kgraph.saving.saving_api import load_weights

        return load_weights(self, filepath, skip_mismatch=skip_mismatch, **kwargs)

    def to_json(self, **kwargs):
        """The model's config as a JSON string (kgraph.models.model_from_json reads it)."""
        import json

        from kgraph.saving.serialization_lib import serialize_keras_object

        return json.dumps(serialize_keras_object(self), **kwargs)
