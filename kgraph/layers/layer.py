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


def in_layer_call():
    """Whether a layer's call() is running (ops then belong to that layer, not to the
    functional graph being built)."""
    return getattr(_context, "call_depth", 0) > 0


@contextlib.contextmanager
def _layer_call():
    _context.call_depth = getattr(_context, "call_depth", 0) + 1
    try:
        yield
    finally:
        _context.call_depth -= 1


def _keras_mask_of(inputs):
    """The `_keras_mask` of a symbolic input (a list of them for a list of inputs), or None."""
    if isinstance(inputs, (list, tuple)):
        masks = [getattr(t, "_keras_mask", None) for t in inputs]
        return masks if any(m is not None for m in masks) else None
    return getattr(inputs, "_keras_mask", None)


def _set_keras_mask(outputs, mask):
    """Attach `mask` to symbolic outputs (per output when both are lists)."""
    if isinstance(outputs, (list, tuple)):
        masks = mask if isinstance(mask, (list, tuple)) else [mask] * len(outputs)
        for out, m in zip(outputs, masks):
            _set_keras_mask(out, m)
    elif isinstance(outputs, SymbolicTensor):
        # One output from several inputs (attention): Keras keeps the first input's mask.
        outputs._keras_mask = mask[0] if isinstance(mask, (list, tuple)) else mask


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


class KerasTensor:
    """A shape and dtype with no value (keras.KerasTensor), e.g. for compute_output_spec."""

    def __init__(self, shape, dtype="float32", sparse=False, name=None):
        self.shape = tuple(shape)
        self.dtype = str(dtype)
        self.sparse = sparse
        self.name = name

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"


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

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls)
        # As Keras 3: the constructor's arguments (when they are plain values) are the default
        # get_config() of subclasses that do not write one, so custom layers save out of the box.
        object.__setattr__(instance, "_auto_config", _auto_config(cls, args, kwargs))
        return instance

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
        elif isinstance(value, (list, tuple, dict)) and value:
            for layer in (value.values() if isinstance(value, dict) else value):
                if not isinstance(layer, Layer):
                    continue
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
        from kgraph import constraints

        variable.constraint = constraints.get(constraint)
        (self._trainable_variables if trainable else self._non_trainable_variables).append(variable)
        return variable

    def add_variable(self, *args, **kwargs):
        return self.add_weight(*args, **kwargs)

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        weights = [v for v in self._trainable_variables if v.trainable]  # a frozen variable (LoRA) keeps its place
        for layer in self._layers:
            weights += layer.trainable_weights
        return _unique(weights)

    @property
    def non_trainable_weights(self):
        weights = [v for v in self._trainable_variables if not v.trainable] + self._non_trainable_variables
        if not self.trainable:
            weights = list(self._trainable_variables) + list(self._non_trainable_variables)
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

    def _clear_losses(self):
        """Forget the add_loss terms of this layer and the layers inside it."""
        stack = [self]
        while stack:
            layer = stack.pop()
            layer._losses = []
            stack.extend(layer._layers)

    # -- building and calling -----------------------------------------------------------------
    def build(self, input_shape=None):
        self.built = True

    def call(self, inputs, *args, **kwargs):
        return inputs

    def compute_output_shape(self, input_shape):
        """The output shape(s) for `input_shape` (a shape, or a list/dict of them)."""
        def specs(structure):
            if isinstance(structure, (list, tuple)) and all(d is None or isinstance(d, int) for d in structure):
                return KerasTensor(structure)
            if isinstance(structure, dict):
                return {key: specs(value) for key, value in structure.items()}
            return [specs(value) for value in structure]

        return _shape_of(self.compute_output_spec(specs(input_shape)))

    def compute_output_spec(self, *args, **kwargs):
        """The outputs' shapes and dtypes, as symbolic tensors, for inputs given as tensors or
        specs (anything with `shape` and `dtype`, e.g. kgraph.KerasTensor): the call is traced
        into a scratch graph, so nothing is computed and no state changes."""
        from kgraph.ir import Graph, tracing
        from kgraph.ir.tensor import SymbolicTensor as ST

        graph = Graph("spec_probe")

        def placeholder(value):
            if hasattr(value, "shape") and hasattr(value, "dtype"):
                return ST(graph, graph.add_placeholder(tuple(value.shape), str(value.dtype), "probe").id)
            return value

        with tracing(graph):
            args, kwargs = map_structure(placeholder, (list(args), kwargs))
            self._maybe_build(args[0] if args else next(iter(kwargs.values())))
            return self.call(*args, **kwargs)

    def _maybe_build(self, inputs):
        if self.built:
            return
        shapes = _shape_of(inputs)
        if isinstance(shapes, list) and len(shapes) == 1 and not isinstance(inputs, list):
            shapes = shapes[0]
        self._build_shapes_dict = {"input_shape": shapes}  # get_build_config() (saving)
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
        previous_mask = _keras_mask_of(inputs)  # set by the layer that produced the inputs
        if self._call_has_mask and mask is not None:
            kwargs["mask"] = mask
        call_kwargs = kwargs
        if self._call_has_mask and mask is None and previous_mask is not None:
            call_kwargs = {**kwargs, "mask": previous_mask}  # not recorded: replays recompute it
        if not in_layer_call():  # as in Keras, the outermost call starts the losses afresh
            self._clear_losses()
        with training_scope(training), _layer_call():
            outputs = self.call(inputs, *rest, **call_kwargs)
            if self.activity_regularizer is not None:
                from kgraph import ops

                for out in flatten(outputs):
                    batch = ops.batch_size(out)  # known only at run time in a compiled step
                    self.add_loss(ops.divide(self.activity_regularizer(out), ops.cast(batch, "float32")))
        if symbolic and not is_tracing():
            outputs = self._record_call(args, kwargs, outputs)
        if self.supports_masking and symbolic:
            with _layer_call():  # the mask's ops are the layer's, not raw functional ops
                _set_keras_mask(outputs, self.compute_mask(inputs, previous_mask if mask is None else mask))
        return outputs

    def compute_mask(self, inputs, previous_mask=None):
        """The mask of the outputs (layers that support masking pass it on unchanged)."""
        return previous_mask

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
        """Keras 3's layer config: name, trainable, the dtype policy (and the activity regularizer).

        A subclass that does not override get_config() gets its constructor's arguments too
        (recorded when it was created, if they are plain values), as in Keras 3.
        """
        config = {"name": self.name}
        if _overrides(type(self), "get_config") is None:
            auto = self.__dict__.get("_auto_config")
            if auto is None:
                raise NotImplementedError(
                    f"Layer {type(self).__name__} does not implement get_config() and its constructor "
                    "arguments are not plain values (str, int, float, bool, None or lists/dicts of "
                    "them), so its config cannot be generated. Override get_config() to return the "
                    "constructor arguments (and from_config() if they need deserializing).")
            config.update(auto)
        config.update({"trainable": self.trainable, "dtype": serialize_dtype_policy(self.dtype_policy)})
        if self.activity_regularizer is not None:
            from kgraph import regularizers

            config["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        return config

    @classmethod
    def from_config(cls, config):
        """The layer a config describes (kgraph's, or Keras 3's with its extra default-valued keys)."""
        config = keras_compatible_config(cls, config)
        if "batch_shape" in config and "batch_input_shape" not in config:
            config["batch_input_shape"] = config.pop("batch_shape")
        return cls(**config)

    # -- saving ---------------------------------------------------------------------------------
    def get_build_config(self):
        """{"input_shape": ...} the layer was built with (None if it was never built by a call)."""
        shapes = getattr(self, "_build_shapes_dict", None)
        if shapes is None and self.built and self.weights and self._inbound_nodes:
            # Built by an explicit build() call: the shape it was first called with.
            node = self._inbound_nodes[0]
            if node.args:
                shapes = {"input_shape": _shape_of(node.args[0])}
        if shapes is None:
            return None
        if len(shapes) == 1:
            return {"input_shape": next(iter(shapes.values()))}
        return {"shapes_dict": shapes}

    def build_from_config(self, config):
        """Create the layer's weights from get_build_config()'s output (used when loading)."""
        if not config:
            return
        if "input_shape" in config:
            shape = shape_from_config(config["input_shape"])
            if shape is not None:
                self._build_shapes_dict = {"input_shape": shape}
                self.build(shape)
        elif "shapes_dict" in config:
            shapes = {key: shape_from_config(value) for key, value in config["shapes_dict"].items()}
            self._build_shapes_dict = shapes
            self.build(**shapes)
        self.built = True

    def save_own_variables(self, store):
        """Write this layer's own variables into `store` as "0", "1", ... (the `.keras` layout)."""
        for index, variable in enumerate(self._trainable_variables + self._non_trainable_variables):
            store[str(index)] = variable.numpy()

    def load_own_variables(self, store):
        """Read the variables written by save_own_variables (in the same order)."""
        variables = self._trainable_variables + self._non_trainable_variables
        if len(store.keys()) != len(variables):
            if not variables and not self.built:
                raise ValueError(
                    f"Layer '{self.name}' was never built and thus it doesn't have any variables. "
                    f"However the weights file lists {len(store.keys())} variables for this layer. "
                    "Build the layer (call it on an input, or implement build_from_config()) before "
                    "loading its weights.")
            raise ValueError(f"Layer '{self.name}' expected {len(variables)} variables, but received "
                             f"{len(store.keys())} variables during loading. "
                             f"Expected: {[v.name for v in variables]}")
        for index, variable in enumerate(variables):
            value = np.asarray(store[str(index)])
            if value.shape != variable.shape:
                raise ValueError(f"Layer '{self.name}': variable '{variable.path}' has shape {variable.shape}, "
                                 f"but the saved value has shape {value.shape}")
            variable.assign(value)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _unique(variables):
    seen, result = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            result.append(v)
    return result


# -- config helpers (Keras 3 interchange) ----------------------------------------------------------------
# Keys Keras 3 writes into configs with these default values, which kgraph's constructors may not
# take: dropped when the class does not accept them (a non-default value is kept, and fails loudly).
_KERAS_DEFAULTS = {"quantization_config": None, "lora_rank": None, "lora_alpha": None, "ragged": False,
                   "optional": False, "input_axes": None, "output_axes": None}


def serialize_dtype_policy(dtype):
    """A dtype name as Keras 3's DTypePolicy config."""
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype}, "registered_name": None}


def dtype_from_config(dtype):
    """The dtype name in a layer config's "dtype" (a name, or a DTypePolicy config)."""
    if isinstance(dtype, dict):
        inner = dtype.get("config")
        if isinstance(inner, dict) and "name" in inner:
            return inner["name"]
        if isinstance(inner, str):
            return inner
    return dtype


def shape_from_config(shape):
    """A shape read from JSON: lists of dims become tuples, lists of shapes stay lists."""
    if shape is None:
        return None
    if isinstance(shape, (list, tuple)) and all(d is None or isinstance(d, (int, np.integer)) for d in shape):
        return tuple(None if d is None else int(d) for d in shape)
    if isinstance(shape, (list, tuple)):
        return [shape_from_config(s) for s in shape]
    if isinstance(shape, dict):
        return {key: shape_from_config(value) for key, value in shape.items()}
    return shape


def _accepted_arguments(cls):
    names, open_kwargs = set(), True
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
        open_kwargs = any(p.kind == p.VAR_KEYWORD for p in params)
        if not open_kwargs:
            break
    return names


def _strip_keras_defaults(cls, config):
    accepted = _accepted_arguments(cls)
    return {key: value for key, value in config.items()
            if key in accepted or key not in _KERAS_DEFAULTS or value != _KERAS_DEFAULTS[key]}


def _compatible_nested(value):
    """Nested object configs (initializers, ...) with Keras-only default keys removed."""
    if isinstance(value, dict) and "class_name" in value and isinstance(value.get("config"), dict):
        from kgraph._serialization import _kgraph_module

        module = _kgraph_module(value.get("module"))
        cls = getattr(module, value["class_name"], None) if module is not None else None
        if inspect.isclass(cls):
            return {**value, "config": _strip_keras_defaults(cls, value["config"])}
    return value


def keras_compatible_config(cls, config):
    """`config` ready for `cls(**config)`: the dtype policy as a name, Keras-only defaults removed."""
    config = dict(config)
    if "dtype" in config:
        config["dtype"] = dtype_from_config(config["dtype"])
    config = _strip_keras_defaults(cls, config)
    return {key: _compatible_nested(value) for key, value in config.items()}


# Layer.__init__ arguments that Keras 3's Layer does not take: left out of automatic configs when unset.
_BASE_ONLY_ARGUMENTS = ("input_shape", "batch_input_shape", "batch_size", "input_dim")
_AUTO_CONFIG_TYPES = (str, int, float, bool, type(None))
_signatures = {}


def _overrides(cls, method):
    """The first class below Layer in cls's MRO that defines `method` (None: Layer's own)."""
    for klass in inspect.getmro(cls):
        if klass is Layer:
            return None
        if method in klass.__dict__:
            return klass
    return None


def _plain(value):
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return isinstance(value, _AUTO_CONFIG_TYPES)


def _auto_config(cls, args, kwargs):
    """The constructor arguments of `cls(*args, **kwargs)` as a config dict, or None."""
    signature = _signatures.get(cls)
    if signature is None:
        try:
            signature = _signatures[cls] = inspect.signature(cls.__init__)
        except (TypeError, ValueError):
            return None
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    params = list(signature.parameters.values())
    arguments.pop(params[0].name, None)
    for param in params:
        if param.kind == param.VAR_KEYWORD:
            arguments.update(arguments.pop(param.name, {}))
        elif param.kind == param.VAR_POSITIONAL and arguments.pop(param.name, ()):
            return None
    arguments.pop("name", None)
    for key in _BASE_ONLY_ARGUMENTS:
        if key in arguments and arguments[key] is None:
            del arguments[key]
    if not _plain(arguments):
        return None
    return arguments
