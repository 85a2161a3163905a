"""Layer: the base of every layer and model (weights, build on first call, tracing hooks).

Calling a layer on symbolic tensors outside a compiled trace records a CallNode, the
functional-API history that Functional models replay; inside a trace (a compiled step)
the layer's ops record straight into the step's graph. On arrays, a layer runs eagerly.
"""

from __future__ import annotations

import contextlib
import inspect
import threading

import numpy as np

from kgraph import initializers as initializers_module
from kgraph.ir import SymbolicTensor, Variable, is_tracing
from kgraph.ir.variable import standardize_dtype
from kgraph.utils.naming import auto_name

_context = threading.local()


def _training_stack():
    if not hasattr(_context, "training"):
        _context.training = []
    return _context.training


@contextlib.contextmanager
def training_scope(training):
    """The `training` value inner layers inherit when they are called without one."""
    _training_stack().append(training)
    try:
        yield
    finally:
        _training_stack().pop()


def current_training():
    stack = _training_stack()
    for value in reversed(stack):
        if value is not None:
            return value
    return None


def flatten(structure):
    if isinstance(structure, dict):
        return [t for key in structure for t in flatten(structure[key])]
    if isinstance(structure, (list, tuple)):
        return [t for item in structure for t in flatten(item)]
    return [structure]


def map_structure(fn, structure):
    if isinstance(structure, dict):
        return {key: map_structure(fn, value) for key, value in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(map_structure(fn, item) for item in structure)
    return fn(structure)


def _shape_of(structure):
    return map_structure(lambda t: tuple(t.shape) if hasattr(t, "shape") else t, structure)


class CallNode:
    """One call of a layer on symbolic tensors while a functional model is built."""

    def __init__(self, layer, args, kwargs, outputs):
        self.layer = layer
        self.args = args
        self.kwargs = kwargs
        self.outputs = outputs
        self.input_tensors = [t for t in flatten((args, kwargs)) if isinstance(t, SymbolicTensor)]


class InputSpec:
    """What a layer accepts: dtype, rank bounds and fixed axis sizes (as keras.layers.InputSpec)."""

    def __init__(self, dtype=None, shape=None, ndim=None, max_ndim=None, min_ndim=None, axes=None,
                 allow_last_axis_squeeze=False, name=None, optional=False):
        self.dtype = dtype
        self.shape = shape
        self.ndim = len(shape) if shape is not None else ndim
        self.max_ndim = max_ndim
        self.min_ndim = min_ndim
        self.axes = axes or {}
        self.name = name
        self.optional = optional


def assert_input_compatibility(spec, inputs, layer_name):
    """Raise ValueError naming the layer, the expectation and the given shape."""
    if spec is None:
        return
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    tensors = flatten(inputs)
    for index, (s, x) in enumerate(zip(specs, tensors)):
        if s is None or not hasattr(x, "shape"):
            continue
        shape = tuple(x.shape)
        prefix = f'Input {index} of layer "{layer_name}" is incompatible with the layer:'
        if s.ndim is not None and len(shape) != s.ndim:
            raise ValueError(f"{prefix} expected ndim={s.ndim}, found ndim={len(shape)}. "
                             f"Full shape received: {shape}")
        if s.min_ndim is not None and len(shape) < s.min_ndim:
            raise ValueError(f"{prefix} expected min_ndim={s.min_ndim}, found ndim={len(shape)}. "
                             f"Full shape received: {shape}")
        if s.max_ndim is not None and len(shape) > s.max_ndim:
            raise ValueError(f"{prefix} expected max_ndim={s.max_ndim}, found ndim={len(shape)}. "
                             f"Full shape received: {shape}")
        for axis, value in s.axes.items():
            if value is not None and shape[axis] not in (value, None):
                raise ValueError(f"{prefix} expected axis {axis} of input shape to have value "
                                 f"{value}, but received input with shape {shape}")
        if s.shape is not None:
            for expected, actual in zip(s.shape, shape):
                if expected is not None and actual is not None and expected != actual:
                    raise ValueError(f"{prefix} expected shape={s.shape}, found shape={shape}")


class Layer:
    """Base class of layers: subclasses define build(input_shape) and call(inputs, ...)."""

    def __init__(self, *, activity_regularizer=None, trainable=True, dtype=None, autocast=True,
                 name=None, input_shape=None, batch_input_shape=None, batch_size=None,
                 input_dim=None, **kwargs):
        if kwargs:
            unknown = ", ".join(sorted(kwargs))
            raise TypeError(f"{type(self).__name__}.__init__ got unexpected keyword arguments: {unknown}")
        object.__setattr__(self, "_layers", [])
        self._trainable_variables = []
        self._non_trainable_variables = []
        self.name = name or auto_name(self)
        self._trainable = trainable
        self.dtype_policy = standardize_dtype(dtype) if dtype is not None and not isinstance(dtype, dict) else "float32"
        self.built = False
        self.input_spec = None
        self.supports_masking = False
        self._inbound_nodes = []
        self._losses = []
        self.activity_regularizer = activity_regularizer
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if batch_input_shape is not None:
            self._batch_input_shape = tuple(batch_input_shape)
        elif input_shape is not None:
            self._batch_input_shape = (batch_size,) + tuple(input_shape)
        else:
            self._batch_input_shape = None
        self._call_signature = inspect.signature(self.call)
        self._call_has_training = "training" in self._call_signature.parameters
        self._call_has_mask = "mask" in self._call_signature.parameters

    # -- attribute tracking -----------------------------------------------------------------
    def __setattr__(self, name, value):
        if isinstance(value, Layer) and name != "_parent":
            if not any(value is layer for layer in self.__dict__.get("_layers", [])):
                self.__dict__.setdefault("_layers", []).append(value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Layer) for v in value):
            for layer in value:
                if not any(layer is existing for existing in self.__dict__.get("_layers", [])):
                    self.__dict__.setdefault("_layers", []).append(layer)
        object.__setattr__(self, name, value)

    @property
    def dtype(self):
        return self.dtype_policy

    @property
    def compute_dtype(self):
        return self.dtype_policy

    @property
    def variable_dtype(self):
        return self.dtype_policy

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        for layer in self._layers:
            layer.trainable = value

    # -- weights ----------------------------------------------------------------------------
    def add_weight(self, shape=None, initializer=None, dtype=None, trainable=True, autocast=True,
                   regularizer=None, constraint=None, aggregation="none", name=None):
        """Create a Variable owned by this layer (path "<layer>/<name>")."""
        shape = () if shape is None else tuple(shape)
        dtype = standardize_dtype(dtype or self.dtype_policy)
        if initializer is None:
            initializer = "glorot_uniform" if dtype.startswith("float") else "zeros"
        initializer = initializers_module.get(initializer)
        variable = Variable(initializer, shape=shape, dtype=dtype, trainable=trainable, name=name)
        variable.path = f"{self.name}/{variable.name}"
        variable.regularizer = regularizer
        variable.constraint = constraint
        (self._trainable_variables if trainable else self._non_trainable_variables).append(variable)
        return variable

    def add_variable(self, *args, **kwargs):
        return self.add_weight(*args, **kwargs)

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        weights = list(self._trainable_variables)
        for layer in self._layers:
            weights += layer.trainable_weights
        return _unique(weights)

    @property
    def non_trainable_weights(self):
        weights = list(self._non_trainable_variables)
        if not self.trainable:
            weights = list(self._trainable_variables) + weights
        for layer in self._layers:
            weights += layer.non_trainable_weights
        return _unique(weights)

    @property
    def weights(self):
        own = self._trainable_variables + self._non_trainable_variables
        for layer in self._layers:
            own = own + layer.weights
        return _unique(own)

    trainable_variables = trainable_weights
    non_trainable_variables = non_trainable_weights
    variables = weights

    def get_weights(self):
        return [v.numpy() for v in self.weights]

    def set_weights(self, weights):
        variables = self.weights
        if len(weights) != len(variables):
            raise ValueError(f'Layer "{self.name}" expects {len(variables)} weights, '
                             f"but the weight list passed has {len(weights)} elements")
        for variable, value in zip(variables, weights):
            value = np.asarray(value)
            if value.shape != variable.shape:
                raise ValueError(f'Layer "{self.name}": weight {variable.path} has shape '
                                 f"{variable.shape}, but the value given has shape {value.shape}")
            variable.assign(value)

    def count_params(self):
        if not self.built:
            raise ValueError(f'Layer "{self.name}" is not built yet; count_params() needs its weights. '
                             "Call the layer on an input or call build(input_shape) first.")
        return int(sum(np.prod(v.shape) for v in self.weights))

    @property
    def losses(self):
        """Regularization losses, recomputed from the current weights, plus add_loss ones."""
        from kgraph import ops

        result = list(self._losses)
        for variable in self._trainable_variables + self._non_trainable_variables:
            if variable.regularizer is not None:
                result.append(variable.regularizer(variable.value))
        for layer in self._layers:
            result += layer.losses
        return [ops.convert_to_tensor(r) for r in result]

    def add_loss(self, loss):
        self._losses.append(loss)

    # -- building and calling -----------------------------------------------------------------
    def build(self, input_shape=None):
        self.built = True

    def call(self, inputs, *args, **kwargs):
        return inputs

    def compute_output_shape(self, input_shape):
        from kgraph.ir import Graph, tracing
        from kgraph.ir.tensor import SymbolicTensor as ST

        graph = Graph("shape_probe")
        with tracing(graph):
            fake = map_structure(lambda s: ST(graph, graph.add_placeholder(s, "float32", "probe").id),
                                 input_shape)
            out = self.call(fake)
        return _shape_of(out)

    def _maybe_build(self, inputs):
        if self.built:
            return
        shapes = _shape_of(inputs)
        if isinstance(shapes, list) and len(shapes) == 1 and not isinstance(inputs, list):
            shapes = shapes[0]
        self.build(shapes)
        self.built = True

    def __call__(self, *args, **kwargs):
        if not args and "inputs" in kwargs:
            args = (kwargs.pop("inputs"),)
        if not args:
            raise TypeError(f'Layer "{self.name}" was called without inputs')
        inputs, rest = args[0], args[1:]
        flat = flatten(inputs)
        symbolic = any(isinstance(t, SymbolicTensor) for t in flat)
        if not symbolic:
            from kgraph import ops

            inputs = map_structure(lambda t: t if isinstance(t, (Variable,)) or t is None
                                   else ops.convert_to_tensor(t), inputs)
        self._maybe_build(inputs)
        assert_input_compatibility(self.input_spec, inputs, self.name)
        training = kwargs.pop("training", None)
        if training is None:
            training = current_training()
        if self._call_has_training:
            kwargs["training"] = training
        mask = kwargs.pop("mask", None)
        if self._call_has_mask and mask is not None:
            kwargs["mask"] = mask
        with training_scope(training):
            outputs = self.call(inputs, *rest, **kwargs)
        if self.activity_regularizer is not None:
            from kgraph import ops

            for out in flatten(outputs):
                self.add_loss(ops.divide(self.activity_regularizer(out),
                                         ops.cast(out.shape[0] or 1, "float32")))
        if symbolic and not is_tracing():
            outputs = self._record_call(args, kwargs, outputs)
        return outputs

    def _record_call(self, args, kwargs, outputs):
        kwargs = {k: v for k, v in kwargs.items() if k != "training"}
        # A layer may return its input unchanged (Dropout at inference): give the output
        # its own tensor so that the input keeps its own history.
        outputs = map_structure(
            lambda t: SymbolicTensor(t.graph, t.node_id) if isinstance(t, SymbolicTensor)
            and t._keras_history is not None else t, outputs)
        node = CallNode(self, args, kwargs, outputs)
        self._inbound_nodes.append(node)
        for index, tensor in enumerate(flatten(outputs)):
            if isinstance(tensor, SymbolicTensor):
                tensor._keras_history = (self, len(self._inbound_nodes) - 1, index)
        return outputs

    # -- functional-API accessors ---------------------------------------------------------------
    def _first_node(self, what):
        if not self._inbound_nodes:
            raise AttributeError(f'The layer "{self.name}" has never been called and thus has no '
                                 f"defined {what}.")
        return self._inbound_nodes[0]

    @property
    def input(self):
        node = self._first_node("input")
        return node.args[0]

    @property
    def output(self):
        node = self._first_node("output")
        return node.outputs

    @property
    def input_shape(self):
        return _shape_of(self.input)

    @property
    def output_shape(self):
        return _shape_of(self.output)

    # -- configuration --------------------------------------------------------------------------
    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype_policy}
        if self._batch_input_shape is not None:
            config["batch_input_shape"] = self._batch_input_shape
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "batch_shape" in config and "batch_input_shape" not in config:
            config["batch_input_shape"] = config.pop("batch_shape")
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _unique(variables):
    seen, result = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            result.append(v)
    return result
