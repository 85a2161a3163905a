"""The Optimizer base class: Keras 3's BaseOptimizer over kgraph Variables.

State is explicit: `iterations` (an int64 Variable), the learning rate (a float32
Variable, so `optimizer.learning_rate = x` between epochs changes a compiled step's input,
not the step itself), and the slot variables each subclass creates in `build()` with
`add_variable_from_reference`. `apply()` updates everything with Variable.assign* of
values computed with kgraph.ops: eagerly that updates the arrays in place, inside a trace
it records the state updates of one compiled training step.

Python control flow is only used on hyperparameters (floats fixed at construction);
anything that depends on a tensor (the step counter for gradient accumulation and EMA
overwrites) is expressed with ops.where, so it compiles.
"""

from __future__ import annotations

import contextlib
import re
import warnings

import numpy as np

from kgraph import ops
from kgraph._serialization import deserialize_keras_object, serialize_keras_object
from kgraph.ir import Variable
from kgraph.optimizers.schedules.learning_rate_schedule import LearningRateSchedule


def _floatx():
    from kgraph.config import floatx

    return floatx()


def _auto_name(cls):
    from kgraph.utils.naming import auto_name

    return auto_name(cls)


class Optimizer:
    """Base class of optimizers; subclasses implement `build(variables)` and
    `update_step(gradient, variable, learning_rate)`.

    Args:
        learning_rate: a float, a LearningRateSchedule, or a callable without arguments.
        weight_decay: if set, variables decay by `variable * weight_decay * lr` each step.
        clipnorm: clip each gradient to this L2 norm.
        clipvalue: clip each gradient elementwise to [-clipvalue, clipvalue].
        global_clipnorm: clip all gradients together to this global L2 norm.
        use_ema, ema_momentum, ema_overwrite_frequency: keep an exponential moving average
            of the model's variables (and optionally copy it into them every N steps).
        loss_scale_factor: gradients are divided by it (the loss is multiplied by it).
        gradient_accumulation_steps: update every N steps with the mean of N gradients.
        name: the optimizer's name (prefix of its variables' paths).
    """

    def __init__(
        self,
        learning_rate,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        if kwargs.pop("decay", None) is not None:
            warnings.warn("Argument `decay` is no longer supported and will be ignored.", stacklevel=2)
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        self.name = name if name is not None else _auto_name(self.__class__)
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.global_clipnorm = global_clipnorm
        self.clipvalue = clipvalue
        self.use_ema = use_ema
        self.loss_scale_factor = loss_scale_factor
        self.gradient_accumulation_steps = gradient_accumulation_steps
        if gradient_accumulation_steps and not gradient_accumulation_steps >= 2:
            raise ValueError(
                "`gradient_accumulation_steps` must be an integer >= 2. "
                f"Received: gradient_accumulation_steps={gradient_accumulation_steps}"
            )
        if use_ema:
            if ema_momentum > 1 or ema_momentum < 0:
                raise ValueError(
                    f"`ema_momentum` must be in the range [0, 1]. Received: ema_momentum={ema_momentum}"
                )
            if ema_overwrite_frequency and (
                not isinstance(ema_overwrite_frequency, int) or ema_overwrite_frequency < 1
            ):
                raise ValueError(
                    "`ema_overwrite_frequency` must be an integer >= 1 or None. "
                    f"Received: ema_overwrite_frequency={ema_overwrite_frequency}"
                )
        self.ema_momentum = ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
                f"global_clipnorm={global_clipnorm}"
            )
        self.built = False
        self._variables = []
        self._trainable_variables = []
        self._trainable_variables_indices = {}

        self._iterations = self._make_variable(
            np.array(0, dtype="int64"), "iteration", aggregation="only_first_replica"
        )
        if isinstance(learning_rate, LearningRateSchedule) or callable(learning_rate):
            self._learning_rate = learning_rate
        else:
            if isinstance(learning_rate, (bool, np.bool_)) or not isinstance(
                learning_rate, (float, int, np.floating, np.integer)
            ):
                raise ValueError(
                    "Argument `learning_rate` should be float, or an instance of "
                    "LearningRateSchedule, or a callable (that takes in the current iteration "
                    "value and returns the corresponding learning rate value). "
                    f"Received instead: learning_rate={learning_rate}"
                )
            self._learning_rate = self._make_variable(
                np.array(learning_rate, dtype=_floatx()), "learning_rate", aggregation="only_first_replica"
            )

    # -- variables ---------------------------------------------------------------------------
    def _make_variable(self, value, name, aggregation="mean"):
        variable = Variable(value, trainable=False, name=name, aggregation=aggregation)
        variable.path = f"{self.name}/{name}"
        return self._track_variable(variable)

    def _track_variable(self, variable):
        """Add `variable` (kept as it is, path included) to the optimizer's state."""
        self._variables.append(variable)
        return variable

    @property
    def variables(self):
        """All the optimizer's state: iterations, learning rate, then the slot variables."""
        return list(self._variables)

    @property
    def iterations(self):
        """The number of update steps taken (counting accumulated steps as one)."""
        if self.gradient_accumulation_steps:
            return ops.floor_divide(self._iterations, self.gradient_accumulation_steps)
        return self._iterations

    def add_variable(self, shape, initializer="zeros", dtype=None, aggregation="mean", name=None):
        """A non-trainable optimizer Variable of `shape`, tracked in `variables`."""
        from kgraph import initializers

        initializer = initializers.get(initializer)
        variable = Variable(
            initializer, shape=tuple(shape), dtype=dtype, trainable=False, name=name, aggregation=aggregation
        )
        variable.path = f"{self.name}/{variable.name}"
        return self._track_variable(variable)

    def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
        """A slot variable with the shape and dtype of `reference_variable` (zeros by default)."""
        name = name or "var"
        if hasattr(reference_variable, "path"):
            name = f"{reference_variable.path.replace('/', '_')}_{name}"
        else:
            name = f"{str(reference_variable.name).replace('/', '_').replace(':', '_')}_{name}"
        return self.add_variable(
            shape=reference_variable.shape, initializer=initializer, dtype=reference_variable.dtype, name=name
        )

    def add_optimizer_variables(self, trainable_variables, name, initializer="zeros"):
        """One slot variable per model variable (a list; a tuple of lists for several names)."""
        names = [name] if isinstance(name, str) else list(name)
        inits = initializer if isinstance(initializer, (list, tuple)) else [initializer] * len(names)
        if len(names) != len(inits):
            raise ValueError(
                "The number of provided names must match the number of provided initializers. "
                f"Received name='{name}', initializer='{initializer}'"
            )
        created = tuple([] for _ in names)
        for variable in trainable_variables:
            for i, (slot_name, slot_init) in enumerate(zip(names, inits)):
                created[i].append(
                    self.add_variable_from_reference(variable, name=slot_name, initializer=slot_init)
                )
        return created[0] if isinstance(name, str) else created

    def build(self, variables):
        """Create the optimizer's state for `variables` (subclasses add their slots)."""
        if self.use_ema:  # all averages first, then the accumulators: Keras's order
            self._model_variables_moving_average = self.add_optimizer_variables(variables, "average")
        if self.gradient_accumulation_steps:
            self._accumulated_gradients = []
        for i, variable in enumerate(variables):
            self._trainable_variables_indices[self._var_key(variable)] = i
            if self.gradient_accumulation_steps:
                self._accumulated_gradients.append(
                    self.add_variable_from_reference(variable, name="gradient_accumulator")
                )
        self._trainable_variables = list(variables)
        self.built = True

    def _var_key(self, variable):
        return id(variable)

    def _get_variable_index(self, variable):
        return self._trainable_variables_indices[self._var_key(variable)]

    def _check_variables_are_known(self, variables):
        for v in variables:
            if self._var_key(v) not in self._trainable_variables_indices:
                raise ValueError(
                    f"Unknown variable: {v}. This optimizer can only be called for the variables "
                    "it was originally built with. When working with a new set of variables, "
                    "you should recreate a new optimizer instance."
                )

    # -- update helpers (subclasses call these, as in Keras) ----------------------------------
    def assign(self, variable, value):
        variable.assign(value)

    def assign_add(self, variable, value):
        variable.assign_add(value)

    def assign_sub(self, variable, value):
        variable.assign_sub(value)

    def update_step(self, gradient, variable, learning_rate):
        raise NotImplementedError(f"Optimizer {self.__class__.__name__} does not implement update_step().")

    # -- applying gradients --------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars):
        """Apply (gradient, variable) pairs; returns the iteration Variable."""
        grads, trainable_variables = zip(*grads_and_vars)
        self.apply(grads, trainable_variables)
        return self._iterations

    def apply(self, grads, trainable_variables=None):
        """Update `trainable_variables` with `grads` (one per variable, None to skip one)."""
        grads = list(grads)
        if len(grads) == 0:
            return
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must already be "
                    "built on a list of variables. Call `optimizer.build(trainable_variables)` "
                    "first. "
                )
            if len(grads) != len(self._trainable_variables_indices):
                raise ValueError(
                    "When passing `grads` as a list of gradient tensors, the gradients must "
                    "match `optimizer.variables` one-to-on. Received a list of "
                    f"{len(grads)} gradients, but the optimizer is tracking "
                    f"{len(self._trainable_variables)} trainable variables."
                )
            trainable_variables = self._trainable_variables
        else:
            trainable_variables = list(trainable_variables)
            if not self.built:
                self.build(trainable_variables)
                self.built = True
            self._check_variables_are_known(trainable_variables)
        grads, trainable_variables = self._filter_empty_gradients(grads, trainable_variables)
        if grads:
            if self.loss_scale_factor is not None:
                grads = [ops.divide(g, self.loss_scale_factor) for g in grads]
            self._backend_apply_gradients(grads, trainable_variables)
            for variable in trainable_variables:
                if getattr(variable, "constraint", None) is not None:
                    variable.assign(variable.constraint(variable.value))
        self._iterations.assign_add(1)

    def _backend_apply_gradients(self, grads, trainable_variables):
        if self.gradient_accumulation_steps:
            steps = self.gradient_accumulation_steps
            is_update_step = ops.equal(ops.mod(ops.add(self._iterations, 1), steps), 0)
            acc_grads = [
                self._accumulated_gradients[self._get_variable_index(v)] for v in trainable_variables
            ]
            accumulated = [ops.add(g, acc.value) for g, acc in zip(grads, acc_grads)]
            bookkeeping = {id(self._iterations), id(self._learning_rate)}
            bookkeeping |= {id(v) for v in self._accumulated_gradients}
            bookkeeping |= {id(v) for v in getattr(self, "_model_variables_moving_average", [])}
            guarded = list(trainable_variables) + [v for v in self._variables if id(v) not in bookkeeping]
            with self._only_where(is_update_step, guarded):
                mean_grads = [ops.divide(a, float(steps)) for a in accumulated]
                mean_grads = self._clip_gradients(mean_grads)
                self._apply_weight_decay(trainable_variables)
                self._backend_update_step(mean_grads, trainable_variables, self.learning_rate)
            for acc, total in zip(acc_grads, accumulated):
                acc.assign(ops.where(is_update_step, 0.0, total))
        else:
            grads = self._clip_gradients(grads)
            self._apply_weight_decay(trainable_variables)
            self._backend_update_step(grads, trainable_variables, self.learning_rate)
        if self.use_ema:
            self._update_model_variables_moving_average(self._trainable_variables)
            if self.ema_overwrite_frequency:
                should_overwrite = ops.equal(
                    ops.mod(ops.add(self.iterations, 1), self.ema_overwrite_frequency), 0
                )
                for var, average in zip(self._trainable_variables, self._model_variables_moving_average):
                    var.assign(ops.where(should_overwrite, average.value, var.value))

    @contextlib.contextmanager
    def _only_where(self, condition, variables):
        """Keep the assignments made inside the block only where `condition` holds.

        Both branches are computed (as a compiled graph would) and each variable ends as
        where(condition, new value, old value).
        """
        before = [v.numpy() if not _is_symbolic(v.value) else v.value for v in variables]
        yield
        for variable, old in zip(variables, before):
            variable.assign(ops.where(condition, variable.value, old))

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        for grad, var in zip(grads, trainable_variables):
            self.update_step(grad, var, learning_rate)

    def _filter_empty_gradients(self, grads, variables):
        kept_grads, kept_vars, missing = [], [], []
        for grad, var in zip(grads, variables):
            if grad is None:
                missing.append(var.name)
            else:
                kept_grads.append(grad)
                kept_vars.append(var)
        if not kept_grads:
            raise ValueError("No gradients provided for any variable.")
        if missing:
            warnings.warn(
                f"Gradients do not exist for variables {missing} when minimizing the loss. If using "
                "`model.compile()`, did you forget to provide a `loss` argument?",
                stacklevel=3,
            )
        return kept_grads, kept_vars

    def _clip_gradients(self, grads):
        if self.clipnorm and self.clipnorm > 0:
            return [self._clip_by_norm(g) for g in grads]
        if self.global_clipnorm and self.global_clipnorm > 0:
            return clip_by_global_norm(grads, self.global_clipnorm)
        if self.clipvalue and self.clipvalue > 0:
            v = float(self.clipvalue)
            return [ops.clip(g, -v, v) for g in grads]
        return grads

    def _clip_by_norm(self, values, axes=None):
        l2sum = ops.sum(ops.square(values), axis=axes, keepdims=True)
        positive = ops.greater(l2sum, 0.0)
        l2sum_safe = ops.where(positive, l2sum, 1.0)
        l2norm = ops.where(positive, ops.sqrt(l2sum_safe), l2sum)
        return ops.divide(
            ops.multiply(values, float(self.clipnorm)), ops.maximum(l2norm, float(self.clipnorm))
        )

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Exclude variables (objects, or names containing any of `var_names`) from weight decay."""
        if self.built:
            raise ValueError(
                "`exclude_from_weight_decay()` can only be configued before the optimizer is built."
            )
        self._exclude_from_weight_decay = {self._var_key(v) for v in var_list} if var_list else set()
        self._exclude_from_weight_decay_pattern = re.compile("|".join(set(var_names))) if var_names else None

    def _use_weight_decay(self, variable):
        if self._var_key(variable) in getattr(self, "_exclude_from_weight_decay", set()):
            return False
        pattern = getattr(self, "_exclude_from_weight_decay_pattern", None)
        return not (pattern is not None and re.search(pattern, variable.name) is not None)

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        for variable in variables:
            if self._use_weight_decay(variable):
                lr = ops.cast(self.learning_rate, variable.dtype)
                wd = ops.cast(self.weight_decay, variable.dtype)
                variable.assign(
                    ops.subtract(variable.value, ops.multiply(ops.multiply(variable.value, wd), lr))
                )

    def _update_model_variables_moving_average(self, trainable_variables):
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            not_first_step = ops.not_equal(self.iterations, 0)
            momentum = ops.multiply(ops.cast(not_first_step, var.dtype), self.ema_momentum)
            average.assign(
                ops.add(
                    ops.multiply(momentum, average.value),
                    ops.multiply(ops.subtract(1.0, momentum), var.value),
                )
            )

    def finalize_variable_values(self, var_list):
        """At the end of training: copy the moving averages into the model (if use_ema)."""
        if self.use_ema:
            for var, average in zip(var_list, self._model_variables_moving_average):
                var.assign(average.value)

    def scale_loss(self, loss):
        """The loss times loss_scale_factor (if set), before gradients are taken."""
        if self.loss_scale_factor is not None:
            return ops.multiply(loss, self.loss_scale_factor)
        return loss

    # -- learning rate -----------------------------------------------------------------------------
    @property
    def learning_rate(self):
        return self._get_current_learning_rate()

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        previous = self._learning_rate if isinstance(self._learning_rate, Variable) else None
        if isinstance(learning_rate, LearningRateSchedule) or callable(learning_rate):
            self._learning_rate = learning_rate
        else:
            if isinstance(self._learning_rate, LearningRateSchedule):
                raise TypeError(
                    "This optimizer was created with a `LearningRateSchedule` object as its "
                    "`learning_rate` constructor argument, hence its learning rate is not "
                    "settable. If you need the learning rate to be settable, you should "
                    "instantiate the optimizer with a float `learning_rate` argument."
                )
            self._learning_rate.assign(np.asarray(learning_rate, dtype=self._learning_rate.dtype))
        if previous is not None and not isinstance(self._learning_rate, Variable):
            self._variables = [v for v in self._variables if v is not previous]

    def _get_current_learning_rate(self):
        if isinstance(self._learning_rate, LearningRateSchedule):
            return self._learning_rate(self._iterations)
        if callable(self._learning_rate) and not isinstance(self._learning_rate, Variable):
            return self._learning_rate()
        return self._learning_rate

    # -- state -------------------------------------------------------------------------------------
    def set_weights(self, weights):
        if not self.built:
            raise ValueError(
                "You are calling `set_weights()` on an optimizer that has not yet been built. "
                "Please call `optimizer.build(trainable_variables)` to create the optimizer "
                "weights before calling `set_weights()`."
            )
        for variable, weight in zip(self._variables, weights):
            if tuple(variable.shape) != tuple(np.shape(weight)):
                raise ValueError(
                    f"Optimizer variable {variable.path} has shape {variable.shape} not compatible "
                    f"with provided weight shape {np.shape(weight)}."
                )
            variable.assign(weight)

    def get_weights(self):
        return [v.numpy() for v in self._variables]

    def save_own_variables(self, store):
        """Write the state into `store` as "0", "1", ... (the `.keras` weights layout)."""
        for i, variable in enumerate(self.variables):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        """Read the state written by save_own_variables (skipped, with a warning, on a mismatch)."""
        if len(store.keys()) != len(self.variables):
            msg = (
                f"Skipping variable loading for optimizer '{self.name}', because it has "
                f"{len(self.variables)} variables whereas the saved optimizer has {len(store.keys())} "
                "variables. "
            )
            if len(self.variables) == 0:
                msg += "This is likely because the optimizer has not been called/built yet."
            warnings.warn(msg, stacklevel=2)
            return
        for i, variable in enumerate(self.variables):
            variable.assign(np.asarray(store[str(i)]))

    # -- config --------------------------------------------------------------------------------------
    def get_config(self):
        if isinstance(self._learning_rate, LearningRateSchedule):
            learning_rate = serialize_keras_object(self._learning_rate)
        elif isinstance(self._learning_rate, Variable):
            learning_rate = float(self._learning_rate.numpy())
        else:
            learning_rate = serialize_keras_object(self._learning_rate)
        return {
            "name": self.name,
            "learning_rate": learning_rate,
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "global_clipnorm": self.global_clipnorm,
            "clipvalue": self.clipvalue,
            "use_ema": self.use_ema,
            "ema_momentum": self.ema_momentum,
            "ema_overwrite_frequency": self.ema_overwrite_frequency,
            "loss_scale_factor": self.loss_scale_factor,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            from kgraph.optimizers import schedules

            config["learning_rate"] = deserialize_keras_object(
                config["learning_rate"],
                module_objects=schedules.ALL_OBJECTS_DICT,
                custom_objects=custom_objects,
            )
        return cls(**config)

    def __repr__(self):
        return f"<{self.__class__.__name__} name={self.name}>"


BaseOptimizer = Optimizer


def _is_symbolic(value):
    from kgraph.ir import SymbolicTensor

    return isinstance(value, SymbolicTensor)


def global_norm(value_list):
    """sqrt of the sum of squares of every value."""
    total = None
    for value in value_list:
        if value is None:
            continue
        square_sum = ops.sum(ops.square(value))
        total = square_sum if total is None else ops.add(total, square_sum)
    return ops.sqrt(total)


def clip_by_global_norm(value_list, clip_norm):
    """Scale all values by clip_norm / max(global_norm, clip_norm) (NaN if the norm is not finite)."""
    use_norm = global_norm(value_list)
    scale_for_finite = ops.multiply(ops.minimum(ops.divide(1.0, use_norm), 1.0 / clip_norm), float(clip_norm))
    scale = ops.add(scale_for_finite, ops.subtract(use_norm, use_norm))
    return [None if v is None else ops.multiply(v, ops.cast(scale, v.dtype)) for v in value_list]
