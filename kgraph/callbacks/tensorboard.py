"""TensorBoard: event files with Keras 3's layout, written with tensorboardX (no TensorFlow)."""

from __future__ import annotations

import os

import numpy as np

from kgraph.callbacks.base import Callback


def _summary_writer(log_dir):
    try:
        from tensorboardX import SummaryWriter
    except ImportError as error:  # pragma: no cover - tensorboardX is a dependency
        raise ImportError("The TensorBoard callback writes event files with tensorboardX: "
                          "pip install tensorboardX") from error
    return SummaryWriter(logdir=log_dir)


class TensorBoard(Callback):
    """Log training to `log_dir` for TensorBoard, as Keras 3 lays it out.

    `log_dir/train` receives `epoch_<metric>` scalars (step: the epoch), `epoch_learning_rate`,
    `batch_<metric>` scalars every `update_freq` steps (step: the global training step) and,
    every `histogram_freq` epochs, a histogram of each weight (`<weight path>/histogram`).
    `log_dir/validation` receives the `val_` logs as `epoch_<metric>` and each evaluation's
    logs as `evaluation_<metric>_vs_iterations` (step: the optimizer's iterations).

    Args:
        log_dir: the directory of the event files.
        histogram_freq: epochs between weight histograms (0: none).
        write_graph: accepted for compatibility; no graph is written.
        update_freq: "epoch", "batch" (every step) or an int N (every N steps).
    """

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0, embeddings_freq=0,
                 embeddings_metadata=None):
        super().__init__()
        if update_freq != "epoch" and update_freq != "batch" and (
                not isinstance(update_freq, int) or isinstance(update_freq, bool) or update_freq < 1):
            raise ValueError(f"TensorBoard: update_freq must be 'epoch', 'batch' or a positive int, "
                             f"got {update_freq!r}")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = int(histogram_freq or 0)
        self.write_graph = write_graph
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self._writers = {}
        self._global_train_batch = 0

    @property
    def needs_batch_logs(self):
        return self.update_freq != "epoch"

    def _writer(self, kind):
        writer = self._writers.get(kind)
        if writer is None:
            writer = self._writers[kind] = _summary_writer(os.path.join(self.log_dir, kind))
        return writer

    def _learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        try:
            return float(np.asarray(optimizer.learning_rate))
        except (TypeError, ValueError):
            return None

    def on_train_begin(self, logs=None):
        self._global_train_batch = 0
        self._writer("train")

    def on_train_batch_end(self, batch, logs=None):
        self._global_train_batch += 1
        if self.update_freq == "epoch" or self._global_train_batch % self.update_freq or not logs:
            return
        writer = self._writer("train")
        for name, value in _scalars(logs):
            writer.add_scalar(f"batch_{name}", value, self._global_train_batch)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        validation = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        rate = self._learning_rate()
        if rate is not None:
            train["learning_rate"] = rate
        writer = self._writer("train")
        for name, value in _scalars(train):
            writer.add_scalar(f"epoch_{name}", value, epoch)
        if validation:
            val_writer = self._writer("validation")
            for name, value in _scalars(validation):
                val_writer.add_scalar(f"epoch_{name}", value, epoch)
            val_writer.flush()
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            for layer in self.model.layers:
                for weight in layer.weights:
                    path = getattr(weight, "path", None) or f"{layer.name}/{weight.name}"
                    writer.add_histogram(f"{path.replace(':', '_')}/histogram", np.asarray(weight.numpy()), epoch)
        writer.flush()

    def on_test_end(self, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if not logs or optimizer is None or not hasattr(optimizer, "iterations"):
            return
        step = int(np.asarray(optimizer.iterations))
        writer = self._writer("validation")
        for name, value in _scalars(logs):
            writer.add_scalar(f"evaluation_{name}_vs_iterations", value, step)

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def _scalars(logs):
    """(name, float) for the scalar entries of `logs` (a per-class metric, an array, is not a
    scalar summary: it is left out, as Keras leaves it out)."""
    for name, value in logs.items():
        if np.ndim(value) == 0:
            yield name, float(value)
