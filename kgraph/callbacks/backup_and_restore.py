"""BackupAndRestore: resume an interrupted fit() where its last backup was taken."""

from __future__ import annotations

import json
import os

from kgraph.callbacks.base import Callback

STATE_FILENAME = "checkpoint.json"


class BackupAndRestore(Callback):
    """Back up the training state (model weights, optimizer state, epoch and step) in
    `backup_dir`, and restore it when fit() starts again after an interruption.

    Each backup writes `ckpt-<n>.weights.h5` (the `.weights.h5` layout, optimizer variables
    included), then commits it by atomically replacing `checkpoint.json`, which names the weights
    file and the position (epoch, step) reached: a process killed at any moment leaves the last
    complete backup in place. A resumed fit() skips the epochs and the steps already done, so with
    the same seed (kgraph.utils.set_random_seed) it ends with the weights of an uninterrupted run.

    Args:
        backup_dir: a directory used by this callback only.
        save_freq: "epoch" (back up at the end of every epoch) or an int N (every N training
            steps, and at the end of every epoch).
        double_checkpoint: keep the previous backup too, and fall back to it when the latest
            cannot be read.
        delete_checkpoint: delete the backups once fit() finishes.
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError("BackupAndRestore: empty `backup_dir` argument passed")
        if save_freq != "epoch" and (not isinstance(save_freq, int) or isinstance(save_freq, bool) or save_freq < 1):
            raise ValueError(f"Invalid value for argument `save_freq`. Received: save_freq={save_freq!r}. "
                             "Expected either 'epoch' or a positive integer value.")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.double_checkpoint = double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        self._state_path = os.path.join(self.backup_dir, STATE_FILENAME)
        self._epoch = 0
        self._last_saved_step = 0

    @property
    def needs_batch_logs(self):
        return False

    # -- state file ---------------------------------------------------------------------------------
    def _read_state(self):
        if not os.path.exists(self._state_path):
            return None
        with open(self._state_path) as f:
            return json.load(f)

    def _write_state(self, state):
        tmp = f"{self._state_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_path)

    # -- restore --------------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError(f'BackupAndRestore: model "{self.model.name}" must be built before fit() starts '
                             "(give it an Input, or call it on a batch of data first)")
        state = self._read_state()
        if state is None:
            return
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not getattr(optimizer, "built", True):
            optimizer.build(self.model.trainable_weights)
        candidates = [state] + ([state["previous"]] if self.double_checkpoint and state.get("previous") else [])
        error = None
        for entry in candidates:
            try:
                self.model.load_weights(os.path.join(self.backup_dir, entry["weights"]))
            except (OSError, ValueError) as e:
                error = e
                continue
            self.model._initial_epoch = int(entry["epoch"])
            self.model._initial_step = int(entry["step"])
            self._epoch, self._last_saved_step = self.model._initial_epoch, self.model._initial_step
            return
        raise error

    # -- backup ---------------------------------------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self._epoch:
            self._last_saved_step = 0
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if isinstance(self.save_freq, int) and batch + 1 - self._last_saved_step >= self.save_freq:
            self._save(self._epoch, batch + 1)
            self._last_saved_step = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1, 0)
        self._last_saved_step = 0
        self._epoch = epoch + 1

    def _save(self, epoch, step):
        os.makedirs(self.backup_dir, exist_ok=True)
        state = self._read_state() or {}
        number = int(state.get("number", -1)) + 1
        name = f"ckpt-{number}.weights.h5"
        self.model.save_weights(os.path.join(self.backup_dir, name), overwrite=True)
        previous = {k: state[k] for k in ("weights", "epoch", "step")} if "weights" in state else None
        self._write_state({"number": number, "weights": name, "epoch": epoch, "step": step,
                           "previous": previous if self.double_checkpoint else None})
        keep = {name} | ({previous["weights"]} if self.double_checkpoint and previous else set())
        for entry in os.listdir(self.backup_dir):
            if entry.startswith("ckpt-") and entry.endswith(".weights.h5") and entry not in keep:
                os.remove(os.path.join(self.backup_dir, entry))

    def on_train_end(self, logs=None):
        if not self.delete_checkpoint or not os.path.isdir(self.backup_dir):
            return
        for entry in os.listdir(self.backup_dir):
            if entry == STATE_FILENAME or (entry.startswith("ckpt-") and entry.endswith(".weights.h5")):
                os.remove(os.path.join(self.backup_dir, entry))
        if not os.listdir(self.backup_dir):
            os.rmdir(self.backup_dir)
