"""Trainer: compile / fit / evaluate / predict for models.

Each mode traces the model into one graph (train: forward, loss, gradients, optimizer
update and metric updates; test: forward, loss and metrics; predict: forward), compiles
it once per input signature, and the Python loop calls it once per batch. Metric and
optimizer state live in Variables that the compiled steps update in place.
"""

from __future__ import annotations

import copy
import random

import numpy as np

from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.trainers.data import (
    ArrayData,
    IterableData,
    Layout,
    check_lengths,
    is_array_like,
    standardize_dtype,
    standardize_sample_weights,
    to_array_list,
    unpack_batch,
)


class DeviceResidency:
    """Keeps a GPU training step's variables (weights, optimizer and metric state) in device
    memory through fit: uploaded when an epoch starts, downloaded when it ends (before
    validation and the epoch's callbacks), the metric variables alone whenever batch logs are
    read. CPU steps (numba) work on the Variables themselves: nothing to do for them. With
    more than one GPU train step in a fit (batches of several layouts), each step would hold
    its own copy, so all of them go back to copying every call."""

    def __init__(self):
        self.steps = []
        self.disabled = False

    def adopt(self, function):
        if not hasattr(function, "pull_variables") or self.disabled:
            return
        if self.steps:
            self.release()
            self.disabled = True
            return
        function.sync_variables = False
        function.push_variables()
        self.steps.append(function)

    def push(self):
        for function in self.steps:
            function.push_variables()

    def pull(self, only=None):
        for function in self.steps:
            function.pull_variables(only)

    def release(self):
        for function in self.steps:
            function.pull_variables()
            function.sync_variables = True
        self.steps = []


class Trainer:
    def __init__(self):
        self.compiled = False
        self.optimizer = None
        self.history = None
        self.stop_training = False
        self._compiled_functions = {}

    def _reset_compiled_functions(self):
        self._compiled_functions = {}

    # -- compile ------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, run_eagerly=False, steps_per_execution=1, jit_compile="auto",
                auto_scale_loss=True):
        """Configure training: optimizer, loss(es), loss weights and metrics."""
        from kgraph import optimizers
        from kgraph.trainers.compile_utils import CompiledLoss, CompiledMetrics

        self.optimizer = optimizers.get(optimizer)
        self._compiled_loss = CompiledLoss(loss, loss_weights) if loss is not None else None
        self._compiled_metrics = CompiledMetrics(metrics, weighted_metrics)
        if not isinstance(steps_per_execution, int) or steps_per_execution < 1:
            raise ValueError(f"compile(): steps_per_execution must be a positive int, got {steps_per_execution!r}")
        self._steps_per_execution = steps_per_execution
        from kgraph.metrics import Mean

        self._loss_tracker = Mean(name="loss")
        self._compile_config = {"optimizer": optimizer, "loss": loss, "loss_weights": loss_weights,
                                "metrics": metrics, "weighted_metrics": weighted_metrics,
                                "steps_per_execution": steps_per_execution}
        self.compiled = True
        self.stop_training = False
        self._reset_compiled_functions()

    @property
    def metrics(self):
        result = []
        if getattr(self, "_loss_tracker", None) is not None:
            result.append(self._loss_tracker)
        if getattr(self, "_compiled_metrics", None) is not None:
            result += self._compiled_metrics.metrics
        if getattr(self, "_compiled_loss", None) is not None:
            result += self._compiled_loss.metrics
        return result

    @property
    def metrics_names(self):
        return [m.name for m in self.metrics]

    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f'You must call compile() on model "{self.name}" before calling {what}()')

    # -- data ---------------------------------------------------------------------------------
    def _input_names(self):
        names = getattr(self, "input_names", None)
        return names if names else None

    def _output_names(self):
        return list(getattr(self, "output_names", None) or [])

    def _arrays(self, x, y=None, sample_weight=None, class_weight=None, what="fit"):
        """Inputs, targets and per-output sample weights as lists of arrays."""
        xs = [standardize_dtype(a) for a in to_array_list(x, self._input_names(), "x")]
        if not xs:
            raise ValueError(f"{what}(): x is required")
        ys = [standardize_dtype(a) for a in to_array_list(y, self._output_names() or None, "y")]
        if not ys and (sample_weight is not None or class_weight is not None):
            raise ValueError(f"{what}(): sample_weight/class_weight need targets y")
        sws = standardize_sample_weights(sample_weight, class_weight, ys, self._output_names()) if ys else []
        check_lengths({"x": xs, "y": ys, "sample_weight": sws})
        self._ensure_built(xs)
        return xs, ys, sws

    def _prepare(self, x, y=None, what="fit"):
        xs, ys, _ = self._arrays(x, y, what=what)
        return xs, ys

    def _flat_batch(self, batch, class_weight, what):
        """(layout, flat arrays) for one batch yielded by a dataset, PyDataset or generator."""
        bx, by, bw = unpack_batch(batch)
        if what == "predict":
            by = bw = None
        xs, ys, sws = self._arrays(bx, by, bw, class_weight, what)
        layout = Layout(xs, ys, sws)
        return layout, xs + ys + [w for w in sws if w is not None]

    def _data(self, x, y=None, sample_weight=None, class_weight=None, batch_size=None, steps=None,
              shuffle=False, what="fit", seed=None):
        """An ArrayData (arrays: the fast path) or an IterableData (batch sources) for `x`."""
        from kgraph.utils.py_dataset import PyDataset

        if is_array_like(x):
            if what != "predict" and y is None and self._compiled_loss is not None:
                raise ValueError(f'{what}() on model "{self.name}" needs targets y (its compiled loss compares '
                                 "them with the outputs)")
            xs, ys, sws = self._arrays(x, y, sample_weight, class_weight, what)
            return ArrayData(xs, ys, sws, batch_size or 32, shuffle, steps, seed)
        source = type(x).__name__
        if not (isinstance(x, PyDataset) or hasattr(x, "__iter__")):
            raise ValueError(f"{what}(): unrecognized data type x={source}: expected arrays (or a list/dict of "
                             "arrays), a kgraph.data.Dataset, a kgraph.utils.PyDataset or a Python generator")
        for name, value in (("y", y), ("sample_weight", sample_weight)):
            if value is not None:
                raise ValueError(f"{what}(): the `{name}` argument is not supported when x is a {source} "
                                 f"(it must yield (x, y, sample_weight) itself); got {name} of type "
                                 f"{type(value).__name__}")
        # batch_size is ignored here, as Keras does: the source yields batches already
        if class_weight is not None and iter(x) is x:
            raise ValueError(f"Argument `class_weight` is not supported for Python generator inputs. "
                             f"Received: class_weight={class_weight}")
        data = IterableData(x, lambda batch: self._flat_batch(batch, class_weight, what), steps,
                            shuffle=bool(shuffle) and isinstance(x, PyDataset), seed=seed)
        layout, flat = data.first_layout()
        self._ensure_built(flat[:layout.n_x])
        return data

    def _runner(self, data, mode, adopt=None):
        """A callable that runs one batch of `data` through the compiled `mode` step
        (`adopt(function)` is told of each compiled function it uses)."""
        if isinstance(data, ArrayData):
            function = self._compiled_function(mode, data.layout)
            if adopt is not None:
                adopt(function)
            return lambda flat: function(*flat)
        functions = {}

        def run(item):
            layout, flat = item
            function = functions.get(layout.specs)
            if function is None:
                function = functions[layout.specs] = self._compiled_function(mode, layout)
                if adopt is not None:
                    adopt(function)
            return function(*flat)

        return run

    def _ensure_built(self, xs):
        if self.built and getattr(self, "inputs", None):
            return
        from kgraph.models.sequential import Sequential

        if isinstance(self, Sequential) and not self.built:
            if len(xs) != 1:
                raise ValueError(f'Sequential model "{self.name}" takes one input, got {len(xs)}')
            self.build((None,) + xs[0].shape[1:])

    def _x_structure(self, tensors):
        if len(tensors) == 1:
            return tensors[0]
        names = self._input_names()
        inputs = getattr(self, "_inputs_struct", None)
        if isinstance(inputs, dict) and names:
            return dict(zip(names, tensors))
        return list(tensors)

    # -- tracing the steps ---------------------------------------------------------------------
    def _trace(self, mode, layout):
        from kgraph import ops
        from kgraph.compiler.autodiff import gradients
        from kgraph.layers.layer import flatten

        graph = Graph(f"{self.name}_{mode}")
        specs = layout.specs[0]
        with tracing(graph):
            def placeholder(spec, name):
                shape, dtype = spec
                return SymbolicTensor(graph, graph.add_placeholder((None,) + shape, dtype, name).id)

            names = self._input_names() or [f"input_{i}" for i in range(layout.n_x)]
            xs = [placeholder(spec, name) for spec, name in zip(specs[:layout.n_x], names)]
            ys = [placeholder(spec, f"target_{i}")
                  for i, spec in enumerate(specs[layout.n_x:layout.n_x + layout.n_y])]
            weight_specs = iter(specs[layout.n_x + layout.n_y:])
            sws = [placeholder(next(weight_specs), f"sample_weight_{i}") if weighted else None
                   for i, weighted in enumerate(layout.weighted)]
            self._clear_losses()
            y_pred = self(self._x_structure(xs), training=(mode == "train"))
            outputs = flatten(y_pred)
            if mode == "predict":
                graph.outputs = [t.node_id for t in outputs]
                graph.output_names = self._output_names()
                return graph
            output_names = self._output_names()
            batch = ops.cast(ops.batch_size(xs[0]), "float32")
            loss = None
            if self._compiled_loss is not None:
                if not ys:
                    raise ValueError(f'{mode}: model "{self.name}" was compiled with a loss, which needs targets y')
                loss = self._compiled_loss(ys, outputs, output_names, sws, batch_size=batch)
            for term in self.losses:  # add_loss terms (regularizers, layers' and the model's own)
                term = ops.cast(ops.sum(term), "float32" if loss is None else loss.dtype)
                loss = term if loss is None else ops.add(loss, term)
            if loss is None:
                raise ValueError(f'Model "{self.name}" has no loss to compute: pass loss=... to compile() '
                                 "or add losses with add_loss()")
            if mode == "train":
                trainable = self.trainable_weights
                if not trainable:
                    raise ValueError(f'Model "{self.name}" has no trainable weights to train')
                sources = [graph.variable_node(v).id for v in trainable]
                grad_ids = gradients(graph, loss.node_id, sources)
                grads = [SymbolicTensor(graph, g) for g in grad_ids]
                self.optimizer.apply(grads, trainable)
            self._loss_tracker.update_state(loss, sample_weight=batch)
            self._compiled_metrics.update_state(ys, outputs, output_names, sws)
            graph.outputs = [loss.node_id]
        return graph

    def _compiled_function(self, mode, layout):
        from kgraph.compiler.passes.pipeline import compile_for_device

        key = (mode, layout.specs)
        function = self._compiled_functions.get(key)
        if function is None:
            function = compile_for_device(self._trace(mode, layout))
            self._compiled_functions[key] = function
        return function

    # -- logs -----------------------------------------------------------------------------------
    def _logs(self):
        """{metric name: value}: a float, or an array for a metric with one value per class
        (F1Score with average=None, say), as Keras's logs hold them."""
        logs = {}
        for metric in self.metrics:
            value = np.asarray(metric.result())
            logs[metric.name] = float(value) if value.ndim == 0 else value.copy()
        return logs

    def _reset_metrics(self):
        for metric in self.metrics:
            metric.reset_state()

    def reset_metrics(self):
        """Reset the state of every compiled metric (and the loss trackers)."""
        self._reset_metrics()

    # -- fit / evaluate / predict --------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1):
        """Train for `epochs` epochs; returns a History whose `history` holds per-epoch logs.

        x: arrays (an array, a list, or a dict by input name; then y and optionally
        sample_weight or class_weight), or a kgraph.data.Dataset, kgraph.utils.PyDataset or
        generator yielding `(x, y)` / `(x, y, sample_weight)` batches."""
        from kgraph.callbacks import CallbackList

        self._require_compiled("fit")
        seed = random.getrandbits(31)  # kgraph.utils.set_random_seed makes the shuffles reproducible
        if validation_split and validation_data is None:
            if not is_array_like(x):
                raise ValueError("`validation_split` is only supported for arrays, got x of type "
                                 f"{type(x).__name__}; pass validation_data instead")
            if not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
            xs, ys, sws = self._arrays(x, y, sample_weight, class_weight, "fit")
            split = int(xs[0].shape[0] * (1.0 - validation_split))
            val = ArrayData([a[split:] for a in xs], [a[split:] for a in ys],
                            [None if w is None else w[split:] for w in sws], validation_batch_size or batch_size or 32,
                            steps_per_epoch=validation_steps)
            data = ArrayData([a[:split] for a in xs], [a[:split] for a in ys],
                             [None if w is None else w[:split] for w in sws], batch_size or 32, shuffle,
                             steps_per_epoch, seed)
        else:
            data = self._data(x, y, sample_weight, class_weight, batch_size, steps_per_epoch, shuffle, "fit", seed)
            val = None
            if validation_data is not None:
                if isinstance(validation_data, (tuple, list)):
                    if len(validation_data) not in (2, 3):
                        raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, "
                                         f"val_sample_weight), got a {type(validation_data).__name__} of "
                                         f"{len(validation_data)} elements")
                    vx, vy, vw = unpack_batch(tuple(validation_data))
                    val = self._data(vx, vy, vw, None, validation_batch_size or batch_size, validation_steps,
                                     what="evaluate")
                else:
                    val = self._data(validation_data, batch_size=validation_batch_size, steps=validation_steps,
                                     what="evaluate")
        verbose = 1 if verbose == "auto" else verbose
        callbacks = callbacks if isinstance(callbacks, CallbackList) else CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0, model=self,
            verbose=verbose, epochs=epochs, steps=data.steps, mode="fit")
        residency = DeviceResidency()
        run = self._runner(data, "train", adopt=residency.adopt)
        per_execution = int(self._steps_per_execution)
        batch_logs = callbacks.needs_batch_logs or verbose == 1
        self.stop_training = False
        self._initial_epoch, self._initial_step = None, 0
        callbacks.on_train_begin()
        start_epoch, start_step = initial_epoch, 0
        if self._initial_epoch is not None:  # set by BackupAndRestore: resume where the backup was taken
            start_epoch, start_step = self._initial_epoch, self._initial_step
            data.position(start_epoch, start_step)
        logs = {}
        metric_variables = [v for metric in self.metrics for v in metric.variables]

        def batch_end_logs():
            if not batch_logs:
                return None
            residency.pull(metric_variables)
            return self._logs()

        try:
            for epoch in range(start_epoch, epochs):
                self._epoch = epoch
                self._reset_metrics()
                callbacks.on_epoch_begin(epoch)
                residency.push()  # the epoch starts from the host's values (callbacks may change them)
                step = start_step if epoch == start_epoch else 0
                first = step
                for batch in data.epoch(first):
                    if (step - first) % per_execution == 0:
                        callbacks.on_train_batch_begin(step)
                    run(batch)
                    step += 1
                    if (step - first) % per_execution == 0:
                        callbacks.on_train_batch_end(step - 1, batch_end_logs())
                        if self.stop_training:
                            break
                else:
                    if (step - first) % per_execution:
                        callbacks.on_train_batch_end(step - 1, batch_end_logs())
                residency.pull()
                if data.exhausted:
                    self.stop_training = True
                    if step == first:
                        break
                logs = self._logs()
                if val is not None and self._should_validate(epoch, validation_freq):
                    val_logs = self._evaluate_data(val, callbacks)
                    logs.update({f"val_{k}": v for k, v in val_logs.items()})
                callbacks.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        finally:
            residency.release()
        callbacks.on_train_end(logs)
        return next(c for c in callbacks.callbacks if type(c).__name__ == "History")

    @staticmethod
    def _should_validate(epoch, validation_freq):
        if isinstance(validation_freq, int):
            if validation_freq < 1:
                raise ValueError(f"validation_freq must be a positive int or a collection of epochs, got "
                                 f"{validation_freq}")
            return (epoch + 1) % validation_freq == 0
        return epoch + 1 in validation_freq

    def _evaluate_data(self, data, callbacks):
        """Run the test step over one epoch of `data`, calling the test hooks; the logs."""
        run = self._runner(data, "test")
        self._reset_metrics()
        batch_logs = callbacks.needs_batch_logs
        callbacks.on_test_begin()
        for step, batch in enumerate(data.epoch()):
            callbacks.on_test_batch_begin(step)
            run(batch)
            callbacks.on_test_batch_end(step, self._logs() if batch_logs else None)
        logs = self._logs()
        callbacks.on_test_end(logs)
        return logs

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False, **kwargs):
        """[loss, *metrics] (or the loss alone, or a dict with return_dict=True)."""
        from kgraph.callbacks import CallbackList

        if kwargs:
            raise ValueError(f"evaluate(): arguments not recognized: {kwargs}")
        self._require_compiled("evaluate")
        data = self._data(x, y, sample_weight, None, batch_size, steps, what="evaluate")
        verbose = 1 if verbose == "auto" else verbose
        callbacks = CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose,
                                 steps=data.steps, mode="evaluate")
        logs = self._evaluate_data(data, callbacks)
        return self._return_logs(logs, return_dict)

    def _return_logs(self, logs, return_dict):
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Outputs for `x`, computed batch by batch with the compiled inference graph."""
        from kgraph.callbacks import CallbackList

        data = self._data(x, batch_size=batch_size, steps=steps, what="predict")
        verbose = 1 if verbose == "auto" else verbose
        callbacks = CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose,
                                 steps=data.steps, mode="predict")
        run = self._runner(data, "predict")
        preallocate = isinstance(data, ArrayData) and steps is None
        results, chunks = None, []
        callbacks.on_predict_begin()
        start = 0
        for step, batch in enumerate(data.epoch()):
            callbacks.on_predict_batch_begin(step)
            outputs = run(batch)
            if preallocate:
                if results is None:
                    results = [np.empty((data.size,) + o.shape[1:], o.dtype) for o in outputs]
                count = outputs[0].shape[0]
                for result, output in zip(results, outputs):
                    result[start:start + count] = output
                start += count
            else:
                chunks.append([np.array(o, copy=True) for o in outputs])
            callbacks.on_predict_batch_end(step)
        callbacks.on_predict_end()
        if not preallocate:
            if not chunks:
                raise ValueError("predict(): the data yielded no batches")
            results = [np.concatenate(parts) for parts in zip(*chunks)]
        return self._output_structure(results)

    def _output_structure(self, results):
        outputs = getattr(self, "_outputs_struct", None)
        if isinstance(outputs, dict):
            return dict(zip(outputs.keys(), results))
        if isinstance(outputs, (list, tuple)) or (results is not None and len(results) > 1):
            return list(results)
        return results[0]

    def _call_compiled(self, inputs):
        """model(x) on arrays: one batch through the compiled inference graph."""
        xs, _ = self._prepare(inputs, None, "__call__")
        outputs = self._compiled_function("predict", Layout(xs, [], []))(*xs)
        return self._output_structure([np.array(o, copy=True) for o in outputs])

    def predict_on_batch(self, x):
        """The outputs for one batch `x`."""
        return self._call_compiled(x)

    def _on_batch(self, mode, x, y, sample_weight, class_weight, return_dict):
        self._require_compiled(f"{mode}_on_batch")
        if y is None and self._compiled_loss is not None:
            raise ValueError(f'{mode}_on_batch() on model "{self.name}" needs targets y')
        xs, ys, sws = self._arrays(x, y, sample_weight, class_weight, f"{mode}_on_batch")
        layout = Layout(xs, ys, sws)
        self._reset_metrics()
        self._compiled_function(mode, layout)(*xs, *ys, *[w for w in sws if w is not None])
        return self._return_logs(self._logs(), return_dict)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One training step on one batch; the loss (and metrics) of that batch."""
        return self._on_batch("train", x, y, sample_weight, class_weight, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss (and metrics) of one batch, without training."""
        return self._on_batch("test", x, y, sample_weight, None, return_dict)

    def get_compile_config(self):
        return copy.deepcopy(getattr(self, "_compile_config", None))
