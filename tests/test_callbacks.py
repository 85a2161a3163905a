"""Callbacks: the hooks fit calls, with Keras 3's semantics."""

import csv
import json

import numpy as np
import pytest

import kgraph as keras
from kgraph import callbacks, layers


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32")).astype("float32")
    return x, y


def make_model(lr=0.01):
    model = keras.Sequential([keras.Input((3,)), layers.Dense(1, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    return model


def test_hooks_are_called_in_order(data):
    x, y = data
    events = []

    class Recorder(callbacks.Callback):
        def on_train_begin(self, logs=None): events.append("train_begin")
        def on_epoch_begin(self, epoch, logs=None): events.append(f"epoch_begin {epoch}")
        def on_train_batch_end(self, batch, logs=None): events.append(f"batch_end {batch} {sorted(logs)}")
        def on_epoch_end(self, epoch, logs=None): events.append(f"epoch_end {epoch} {sorted(logs)}")
        def on_train_end(self, logs=None): events.append("train_end")

    make_model().fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[Recorder()])
    assert events == ["train_begin", "epoch_begin 0", "batch_end 0 ['loss']", "batch_end 1 ['loss']",
                      "epoch_end 0 ['loss']", "epoch_begin 1", "batch_end 0 ['loss']", "batch_end 1 ['loss']",
                      "epoch_end 1 ['loss']", "train_end"]


def test_on_batch_end_alias_gets_the_running_loss(data):
    x, y = data

    class LossHistory(callbacks.Callback):  # as in Keras's guide: the older on_batch_end name
        def on_train_begin(self, logs=None):
            self.per_batch_losses = []

        def on_batch_end(self, batch, logs=None):
            self.per_batch_losses.append(logs.get("loss"))

    recorder = LossHistory()
    history = make_model().fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[recorder])
    assert len(recorder.per_batch_losses) == 4
    assert recorder.per_batch_losses[-1] == pytest.approx(history.history["loss"][0], rel=1e-6)


def test_early_stopping_stops_and_restores_best_weights(data):
    x, y = data
    model = make_model(lr=0.0)  # no progress at all: stops after `patience` epochs
    stopper = callbacks.EarlyStopping(monitor="loss", patience=2, restore_best_weights=True)
    history = model.fit(x, y, epochs=20, verbose=0, shuffle=False, callbacks=[stopper])
    assert len(history.history["loss"]) == 3
    assert stopper.stopped_epoch == 2


def test_learning_rate_scheduler_and_reduce_on_plateau(data):
    x, y = data
    model = make_model()
    scheduler = callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[scheduler])
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.05, 0.1 / 3], rtol=1e-6)
    model = make_model(lr=0.0)
    plateau = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_lr=0.0)
    model.optimizer.learning_rate = 0.0
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[plateau])
    assert history.history["learning_rate"] == [0.0, 0.0, 0.0]


def test_csv_logger_writes_one_row_per_epoch(tmp_path, data):
    x, y = data
    path = tmp_path / "log.csv"
    make_model().fit(x, y, epochs=3, verbose=0, callbacks=[callbacks.CSVLogger(path)])
    rows = list(csv.DictReader(open(path)))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert float(rows[2]["loss"]) < float(rows[0]["loss"])
    make_model().fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.CSVLogger(path, append=True)])
    assert len(list(csv.DictReader(open(path)))) == 4
    # validation every 2nd epoch: the val_ columns exist from the first row and read "NA" in between
    history = make_model().fit(x, y, epochs=4, verbose=0, validation_data=(x, y), validation_freq=2,
                               callbacks=[callbacks.CSVLogger(path)])
    rows = list(csv.DictReader(open(path)))
    assert list(rows[0]) == ["epoch", "loss", "val_loss"]
    assert [row["val_loss"] for row in rows[::2]] == ["NA", "NA"]
    np.testing.assert_allclose([float(row["val_loss"]) for row in rows[1::2]], history.history["val_loss"])


def test_lambda_and_terminate_on_nan(data):
    x, y = data
    seen = []
    make_model().fit(x, y, epochs=2, verbose=0,
                     callbacks=[callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))])
    assert seen == [0, 1]
    model = make_model(lr=1e30)
    history = model.fit(x * 1e10, y, epochs=5, batch_size=8, verbose=0, callbacks=[callbacks.TerminateOnNaN()])
    assert len(history.history["loss"]) == 1


def test_stop_training_flag(data):
    x, y = data

    class StopAfterFirst(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    history = make_model().fit(x, y, epochs=5, verbose=0, callbacks=[StopAfterFirst()])
    assert len(history.history["loss"]) == 1


# -- BackupAndRestore ------------------------------------------------------------------------------------
TRAINING_SCRIPT = """
import os, sys
import numpy as np
import kgraph as keras

backup_dir, out_path, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
keras.utils.set_random_seed(123)
rng = np.random.default_rng(0)
x = rng.standard_normal((60, 4)).astype("float32")
y = (x @ rng.standard_normal((4, 2))).astype("float32")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(2)])
model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
seen = []

class Killer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        seen.append((self.epoch, batch))
        if len(seen) == kill_at:
            os._exit(17)  # no cleanup at all: as if the process were killed

callbacks = [Killer(), keras.callbacks.BackupAndRestore(backup_dir, save_freq=3)]
history = model.fit(x, y, batch_size=8, epochs=4, shuffle=True, verbose=0, callbacks=callbacks)
np.savez(out_path, *model.get_weights(), first=np.array(seen[0]), epochs=np.array(history.epoch))
"""


def test_backup_and_restore_resumes_a_killed_process(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(TRAINING_SCRIPT)

    def run(backup, out, kill_at):
        return subprocess.run([sys.executable, str(script), str(backup), str(out), str(kill_at)],
                              capture_output=True, text=True, timeout=600)

    uninterrupted = run(tmp_path / "backup_a", tmp_path / "a.npz", -1)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert not (tmp_path / "backup_a").exists()  # delete_checkpoint=True removes the backups at the end
    # 8 batches per epoch; killed after batch 5 of epoch 1 (the 14th step), the last backup is at step 3... 6
    killed = run(tmp_path / "backup_b", tmp_path / "b.npz", 14)
    assert killed.returncode == 17, killed.stderr
    state = json.loads((tmp_path / "backup_b" / "checkpoint.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 3)
    resumed = run(tmp_path / "backup_b", tmp_path / "b.npz", -1)
    assert resumed.returncode == 0, resumed.stderr
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert list(b["first"]) == [1, 3]  # the resumed run started at step 3 of epoch 1
    assert list(b["epochs"]) == [1, 2, 3]
    for key in ("arr_0", "arr_1", "arr_2", "arr_3"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=1e-7)


def test_backup_and_restore_in_process_and_double_checkpoint(tmp_path, data):
    x, y = data

    class Interrupt(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("interrupted")

    backup = callbacks.BackupAndRestore(tmp_path / "b", double_checkpoint=True)
    model = make_model()
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, epochs=5, verbose=0, callbacks=[backup, Interrupt()])
    after_two = model.get_weights()
    files = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert files == ["checkpoint.json", "ckpt-0.weights.h5", "ckpt-1.weights.h5"]
    # the latest backup is unreadable: the previous one (end of epoch 1) is used
    (tmp_path / "b" / "ckpt-1.weights.h5").write_bytes(b"not an hdf5 file")
    fresh = make_model()
    seen = []
    history = fresh.fit(x, y, epochs=5, verbose=0, callbacks=[
        backup, callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))])
    assert seen == [1, 2, 3, 4] and history.epoch == [1, 2, 3, 4]
    assert not np.allclose(fresh.get_weights()[0], after_two[0])
    with pytest.raises(ValueError, match="save_freq"):
        callbacks.BackupAndRestore(tmp_path, save_freq="sometimes")


def test_backup_and_restore_resumes_an_endless_dataset_mid_epoch(tmp_path, data):
    x, y = data
    dataset = keras.data.Dataset.from_tensor_slices((x, y * 2)).batch(10).repeat()  # 7 batches per pass

    class Interrupt(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == 9:  # epoch 1, batch 3 (5 steps per epoch), after the backup at step 4
                raise RuntimeError("interrupted")

    def run(*extra):
        keras.utils.set_random_seed(5)
        model = keras.Sequential([keras.Input((3,)), layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        model.fit(dataset, epochs=3, steps_per_epoch=5, verbose=0, callbacks=list(extra))
        return model

    expected = run().get_weights()
    backup = callbacks.BackupAndRestore(tmp_path / "b", save_freq=2)
    with pytest.raises(RuntimeError, match="interrupted"):
        run(backup, Interrupt())
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["step"] == 4
    for a, b in zip(run(backup).get_weights(), expected):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# -- TensorBoard -----------------------------------------------------------------------------------------
def read_events(directory):
    """{tag: [(step, value)]} for scalars and {tag: [step]} for histograms, parsed from the
    TFRecord-framed Event protos (tensorboard's reader when installed, else tensorboardX's protos)."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars, histograms = {}, {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        raw = path.read_bytes()
        offset = 0
        while offset < len(raw):
            (length,) = struct.unpack("<Q", raw[offset:offset + 8])
            payload = raw[offset + 12:offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                if value.HasField("histo"):
                    histograms.setdefault(value.tag, []).append(event.step)
                else:
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars, histograms


def test_tensorboard_event_files_hold_the_logged_values(tmp_path, data):
    pytest.importorskip("tensorboardX")
    x, y = data
    model = make_model()
    board = callbacks.TensorBoard(tmp_path / "logs", histogram_freq=1, update_freq=2)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, validation_data=(x[:20], y[:20]),
                        callbacks=[board])
    train, histograms = read_events(tmp_path / "logs" / "train")
    validation, _ = read_events(tmp_path / "logs" / "validation")
    assert [s for s, _ in train["epoch_loss"]] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in train["epoch_loss"]], history.history["loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in validation["epoch_loss"]], history.history["val_loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in train["epoch_learning_rate"]], [0.01] * 3, rtol=1e-6)
    assert [s for s, _ in train["batch_loss"]] == [2, 4, 6, 8, 10, 12]  # 4 steps per epoch, every 2nd
    assert [s for s, _ in validation["evaluation_loss_vs_iterations"]] == [4, 8, 12]
    weight_tags = {tag for tag in histograms if tag.endswith("/histogram")}
    assert len(weight_tags) == 2 and all(histograms[tag] == [0, 1, 2] for tag in weight_tags)
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    accumulator = EventAccumulator(str(tmp_path / "logs" / "train"))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("epoch_loss")] == [0, 1, 2]


# -- EarlyStopping / ModelCheckpoint details ---------------------------------------------------------------
class ScriptedLoss(callbacks.Callback):
    """Overwrites logs[monitor] with scripted values and records the weights at each epoch end."""

    def __init__(self, values, key="val_loss"):
        super().__init__()
        self.values, self.key, self.weights = values, key, []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]
        self.weights.append(self.model.get_weights())


def test_early_stopping_baseline_start_epoch_and_restore(data):
    x, y = data
    values = [5.0, 3.0, 4.0, 2.5, 6.0, 7.0, 8.0, 9.0]
    # restore_best_weights when training runs to the end without stopping: the best epoch's weights (3)
    model = make_model()
    script = ScriptedLoss(values)
    stopper = callbacks.EarlyStopping(patience=10, restore_best_weights=True)
    model.fit(x, y, epochs=6, verbose=0, callbacks=[script, stopper])
    for a, b in zip(model.get_weights(), script.weights[3]):
        np.testing.assert_array_equal(a, b)
    assert stopper.stopped_epoch == 0 and stopper.best_epoch == 3
    # patience counts from the last improvement: best at 3, then 4, 5 do not improve -> stop at 5
    history = make_model().fit(x, y, epochs=8, verbose=0, callbacks=[
        ScriptedLoss(values), callbacks.EarlyStopping(patience=2)])
    assert len(history.history["loss"]) == 6
    # a baseline never beaten: improvements do not reset the wait -> stops after `patience` epochs
    history = make_model().fit(x, y, epochs=8, verbose=0, callbacks=[
        ScriptedLoss(values), callbacks.EarlyStopping(patience=3, baseline=1.0)])
    assert len(history.history["loss"]) == 3
    # start_from_epoch: epochs before it are not monitored at all
    stopper = callbacks.EarlyStopping(patience=1, start_from_epoch=4)
    history = make_model().fit(x, y, epochs=8, verbose=0, callbacks=[ScriptedLoss(values), stopper])
    assert len(history.history["loss"]) == 6 and stopper.stopped_epoch == 5
    # "max" for accuracy-like metrics in auto mode
    stopper = callbacks.EarlyStopping(monitor="val_accuracy", patience=1)
    history = make_model().fit(x, y, epochs=8, verbose=0, callbacks=[
        ScriptedLoss([0.1, 0.5, 0.4, 0.3, 0.9, 0.9, 0.9, 0.9], key="val_accuracy"), stopper])
    assert len(history.history["loss"]) == 3


def test_model_checkpoint_best_only_formatting_and_batch_frequency(tmp_path, data):
    x, y = data
    values = [0.91, 0.52, 0.77, 0.31, 0.4]
    pattern = str(tmp_path / "w-{epoch:02d}-{val_loss:.2f}.weights.h5")
    checkpoint = callbacks.ModelCheckpoint(pattern, save_best_only=True, save_weights_only=True)
    model = make_model()
    script = ScriptedLoss(values)
    model.fit(x, y, epochs=5, verbose=0, callbacks=[script, checkpoint])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "w-01-0.91.weights.h5", "w-02-0.52.weights.h5", "w-04-0.31.weights.h5"]
    restored = make_model()
    restored.load_weights(tmp_path / "w-04-0.31.weights.h5")
    for a, b in zip(restored.get_weights(), script.weights[3]):
        np.testing.assert_array_equal(a, b)
    # mode="max" keeps the largest; save_freq=N saves every N steps, with {batch} counted from 1
    directory = tmp_path / "max"
    checkpoint = callbacks.ModelCheckpoint(str(directory / "m-{epoch}.keras"), monitor="val_loss", mode="max",
                                           save_best_only=True)
    make_model().fit(x, y, epochs=5, verbose=0, callbacks=[ScriptedLoss(values), checkpoint])
    assert sorted(p.name for p in directory.iterdir()) == ["m-1.keras"]
    directory = tmp_path / "batches"
    checkpoint = callbacks.ModelCheckpoint(str(directory / "e{epoch}-b{batch}.weights.h5"), save_weights_only=True,
                                           save_freq=3)
    make_model().fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[checkpoint])
    assert sorted(p.name for p in directory.iterdir()) == ["e1-b3.weights.h5", "e2-b2.weights.h5"]
    with pytest.raises(KeyError, match="Failed to format"):
        make_model().fit(x, y, epochs=1, verbose=0, callbacks=[
            callbacks.ModelCheckpoint(str(tmp_path / "{nope}.keras"))])
