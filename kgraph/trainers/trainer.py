"""Trainer: compile / fit / evaluate / predict for models.

Each mode traces the model into one graph (train: forward, loss, gradients, optimizer
update and metric updates; test: forward, loss and metrics; predict: forward), compiles
it once per input signature, and the Python loop calls it once per batch. Metric and
optimizer state live in Variables that the compiled steps update in place.
"""

from __future__ import annotations

import copy

import numpy as np

from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.trainers.data import BatchIterator, check_lengths, standardize_dtype, to_array_list


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
        return result

    @property
    def metrics_names(self):
        return [m.name for m in self.metrics]

    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f'You must call compile() on model "{self.name}" before calling {what}()')
        if what != "predict" and self._compiled_loss is None:
            raise ValueError(f'Model "{self.name}" was compiled without a loss; {what}() needs one: '
                             "pass loss=... to compile()")

    # -- data ---------------------------------------------------------------------------------
    def _input_names(self):
        names = getattr(self, "input_names", None)
        return names if names else None

    def _prepare(self, x, y=None, what="fit"):
        xs = [standardize_dtype(a) for a in to_array_list(x, self._input_names(), "x")]
        if not xs:
            raise ValueError(f"{what}(): x is required")
        ys = [standardize_dtype(a) for a in to_array_list(y, getattr(self, "output_names", None), "y")]
        check_lengths({"x": xs, "y": ys} if ys else {"x": xs})
        self._ensure_built(xs)
        return xs, ys

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
    def _trace(self, mode, x_specs, y_specs):
        from kgraph import ops
        from kgraph.compiler.autodiff import gradients
        from kgraph.layers.layer import flatten

        graph = Graph(f"{self.name}_{mode}")
        with tracing(graph):
            names = self._input_names() or [f"input_{i}" for i in range(len(x_specs))]
            xs = [SymbolicTensor(graph, graph.add_placeholder((None,) + shape, dtype, name).id)
                  for (shape, dtype), name in zip(x_specs, names)]
            ys = [SymbolicTensor(graph, graph.add_placeholder((None,) + shape, dtype, f"target_{i}").id)
                  for i, (shape, dtype) in enumerate(y_specs)]
            self._clear_losses()
            y_pred = self(self._x_structure(xs), training=(mode == "train"))
            outputs = flatten(y_pred)
            if mode == "predict":
                graph.outputs = [t.node_id for t in outputs]
                graph.output_names = list(getattr(self, "output_names", None) or [])
                return graph
            output_names = list(getattr(self, "output_names", None) or [])
            loss = self._compiled_loss(ys, outputs, output_names)
            extra = self.losses
            if extra:
                for term in extra:
                    loss = ops.add(loss, ops.cast(ops.sum(term), loss.dtype))
            if mode == "train":
                trainable = self.trainable_weights
                if not trainable:
                    raise ValueError(f'Model "{self.name}" has no trainable weights to train')
                sources = [graph.variable_node(v).id for v in trainable]
                grad_ids = gradients(graph, loss.node_id, sources)
                grads = [SymbolicTensor(graph, g) for g in grad_ids]
                self.optimizer.apply(grads, trainable)
            batch = ops.cast(ops.batch_size(xs[0]), "float32")
            self._loss_tracker.update_state(loss, sample_weight=batch)
            self._compiled_metrics.update_state(ys, outputs, output_names)
            graph.outputs = [loss.node_id]
        return graph

    def _clear_losses(self):
        stack = [self]
        while stack:
            layer = stack.pop()
            layer._losses = []
            stack.extend(layer._layers)

    def _compiled_function(self, mode, xs, ys=()):
        from kgraph.compiler.passes.pipeline import compile_graph

        x_specs = tuple((a.shape[1:], a.dtype.name) for a in xs)
        y_specs = tuple((a.shape[1:], a.dtype.name) for a in ys)
        key = (mode, x_specs, y_specs)
        function = self._compiled_functions.get(key)
        if function is None:
            function = compile_graph(self._trace(mode, x_specs, y_specs))
            self._compiled_functions[key] = function
        return function

    # -- logs -----------------------------------------------------------------------------------
    def _logs(self):
        return {m.name: float(np.asarray(m.result())) for m in self.metrics}

    def _reset_metrics(self):
        for metric in self.metrics:
            metric.reset_state()

    # -- fit / evaluate / predict --------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1):
        """Train for `epochs` epochs; returns a History whose `history` holds per-epoch logs."""
        from kgraph.callbacks import CallbackList

        self._require_compiled("fit")
        if y is None:
            raise ValueError(f'fit() on model "{self.name}" needs targets y')
        xs, ys = self._prepare(x, y, "fit")
        if validation_split and validation_data is None:
            if not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
            count = xs[0].shape[0]
            split = int(count * (1.0 - validation_split))
            validation_data = ([a[split:] for a in xs], [a[split:] for a in ys])
            xs, ys = [a[:split] for a in xs], [a[:split] for a in ys]
        if validation_data is not None:
            if len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (x_val, y_val)")
            val_x, val_y = validation_data[0], validation_data[1]
        batch_size = batch_size or 32
        verbose = 1 if verbose == "auto" else verbose
        data = BatchIterator(xs + ys, batch_size)
        steps = len(data)
        callbacks = callbacks if isinstance(callbacks, CallbackList) else CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0, model=self,
            verbose=verbose, epochs=epochs, steps=steps, mode="fit")
        step_function = self._compiled_function("train", xs, ys)
        batch_logs = callbacks.needs_batch_logs or verbose == 1
        self.stop_training = False
        callbacks.on_train_begin()
        logs = {}
        rng = np.random.default_rng()
        for epoch in range(initial_epoch, epochs):
            self._reset_metrics()
            callbacks.on_epoch_begin(epoch)
            permutation = rng.permutation(data.size) if shuffle else None
            for step, batch in enumerate(data.batches(permutation)):
                callbacks.on_train_batch_begin(step)
                step_function(*batch)
                callbacks.on_train_batch_end(step, self._logs() if batch_logs else None)
                if self.stop_training:
                    break
            logs = self._logs()
            if validation_data is not None and (epoch + 1) % validation_freq == 0:
                val_logs = self.evaluate(val_x, val_y, batch_size=validation_batch_size or batch_size,
                                         verbose=0, return_dict=True, _use_callbacks=False)
                logs.update({f"val_{k}": v for k, v in val_logs.items()})
            callbacks.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        callbacks.on_train_end(logs)
        history = next(c for c in callbacks.callbacks if type(c).__name__ == "History")
        return history

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False, _use_callbacks=True, **kwargs):
        """[loss, *metrics] (or the loss alone, or a dict with return_dict=True)."""
        from kgraph.callbacks import CallbackList

        self._require_compiled("evaluate")
        if y is None:
            raise ValueError(f'evaluate() on model "{self.name}" needs targets y')
        xs, ys = self._prepare(x, y, "evaluate")
        data = BatchIterator(xs + ys, batch_size or 32)
        verbose = 1 if verbose == "auto" else verbose
        callbacks = CallbackList(callbacks if _use_callbacks else None, add_progbar=verbose != 0 and _use_callbacks,
                                 model=self, verbose=verbose, steps=len(data), mode="evaluate")
        step_function = self._compiled_function("test", xs, ys)
        self._reset_metrics()
        batch_logs = callbacks.needs_batch_logs
        callbacks.on_test_begin()
        for step, batch in enumerate(data.batches()):
            callbacks.on_test_batch_begin(step)
            step_function(*batch)
            callbacks.on_test_batch_end(step, self._logs() if batch_logs else None)
        logs = self._logs()
        callbacks.on_test_end(logs)
        if return_dict:
            return logs
        values = [logs[m.name] for m in self.metrics]
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Outputs for `x`, computed batch by batch with the compiled inference graph."""
        from kgraph.callbacks import CallbackList

        xs, _ = self._prepare(x, None, "predict")
        data = BatchIterator(xs, batch_size or 32)
        verbose = 1 if verbose == "auto" else verbose
        callbacks = CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose,
                                 steps=len(data), mode="predict")
        step_function = self._compiled_function("predict", xs)
        results = None
        callbacks.on_predict_begin()
        start = 0
        for step, batch in enumerate(data.batches()):
            callbacks.on_predict_batch_begin(step)
            outputs = step_function(*batch)
            if results is None:
                results = [np.empty((data.size,) + o.shape[1:], o.dtype) for o in outputs]
            count = batch[0].shape[0]
            for result, output in zip(results, outputs):
                result[start:start + count] = output
            start += count
            callbacks.on_predict_batch_end(step)
        callbacks.on_predict_end()
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
        outputs = self._compiled_function("predict", xs)(*xs)
        return self._output_structure([np.array(o, copy=True) for o in outputs])

    def predict_on_batch(self, x):
        return self._call_compiled(x)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        self._require_compiled("train_on_batch")
        xs, ys = self._prepare(x, y, "train_on_batch")
        self._reset_metrics()
        self._compiled_function("train", xs, ys)(*xs, *ys)
        logs = self._logs()
        return logs if return_dict else (list(logs.values()) if len(logs) > 1 else logs["loss"])

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._require_compiled("test_on_batch")
        xs, ys = self._prepare(x, y, "test_on_batch")
        self._reset_metrics()
        self._compiled_function("test", xs, ys)(*xs, *ys)
        logs = self._logs()
        return logs if return_dict else (list(logs.values()) if len(logs) > 1 else logs["loss"])

    def get_compile_config(self):
        return copy.deepcopy(getattr(self, "_compile_config", None))
