"""`.keras` files: Keras 3's layout, interchange with Keras 3 both ways, round trips that resume
training identically, custom objects, clear errors, atomic saves.

tests/data/keras3/ holds files written by Keras 3 (tests/data/make_keras_files.py). The test
that Keras 3 loads kgraph's files runs tests/data/read_kgraph_file.py with the Python named by
KGRAPH_KERAS_PYTHON (tests/keras_reference.py), which must import keras.
"""

import glob
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import h5py
import numpy as np
import pytest
from keras_reference import SKIP_REASON, keras_python

import kgraph as keras
import kgraph.saving  # noqa: F401  (kgraph.saving until kgraph/__init__ imports it)
from kgraph import layers, ops, saving

DATA = os.path.join(os.path.dirname(__file__), "data")
KERAS3 = os.path.join(DATA, "keras3")

def _arrays(pattern):
    return [np.load(p) for p in sorted(glob.glob(pattern))]


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _flat_weights(model):
    return np.concatenate([np.asarray(w, dtype="float64").ravel() for w in model.get_weights()])


@keras.saving.register_keras_serializable(package="kgraph_test")
class Scale(layers.Layer):
    """A custom layer without get_config(): its constructor arguments are its config."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

    def call(self, inputs):
        return ops.multiply(ops.multiply(inputs, self.w), self.factor)


class Unregistered(layers.Layer):
    def call(self, inputs):
        return inputs


def _two_input_model(optimizer=None, name="two_inputs"):
    """Two inputs, merge layers, Reshape/Flatten/Activation and a custom layer (layers named)."""
    a = keras.Input((6,), name="a")
    b = keras.Input((6,), name="b")
    ha = layers.Dense(7, activation="relu", name="ha")(a)
    hb = layers.Dense(7, name="hb")(b)
    merged = layers.Concatenate(name="concat")([layers.Add(name="add")([ha, hb]),
                                                layers.Multiply(name="mul")([ha, hb]),
                                                layers.Subtract(name="sub")([ha, hb])])
    h = layers.Reshape((3, 7), name="reshape")(merged)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Activation("tanh", name="tanh")(h)
    h = Scale(0.5, name="scale")(h)
    out = layers.Dense(3, activation="softmax", name="out")(h)
    model = keras.Model([a, b], out, name=name)
    if optimizer is not None:
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(seed=0, n=12):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((n, 6)).astype("float32") for _ in range(2)]
    return xs, rng.integers(0, 3, n).astype("int32")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained model (SGD with momentum), its file, inputs and predictions.

    Every compiled graph costs seconds, so the tests share this model and compare weights
    where a prediction would add nothing.
    """
    model = _two_input_model(keras.optimizers.SGD(0.05, momentum=0.9))
    xs, y = _data()
    model.fit(xs, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    path = tmp_path_factory.mktemp("trained") / "two_inputs.keras"
    model.save(path)
    return model, path, xs, y, model.predict(xs, verbose=0)


# -- Keras 3 files load in kgraph -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sequential_mlp", "functional_two_inputs", "core_layers", "nested_models",
                                  "conv_layers", "recurrent_layers", "attention_layers"])
def test_keras3_files_predict_like_keras(name):
    model = saving.load_model(os.path.join(KERAS3, f"{name}.keras"), compile=False)
    inputs = _arrays(os.path.join(KERAS3, f"{name}_input_*.npy"))
    expected = _arrays(os.path.join(KERAS3, f"{name}_output_*.npy"))
    outputs = _as_list(model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0))
    assert len(outputs) == len(expected)
    for output, want in zip(outputs, expected):
        assert output.shape == want.shape
        assert np.max(np.abs(output - want)) <= 1e-5


@pytest.mark.parametrize("name", ["conv_layers", "recurrent_layers", "attention_layers"])
def test_keras3_layer_files_round_trip_through_kgraph_back_to_keras(tmp_path, name):
    """Convolution, recurrent (with Keras's mask op node) and attention layers that Keras wrote,
    saved again by kgraph: kgraph reloads its own file, and Keras reads it and predicts alike."""
    model = saving.load_model(os.path.join(KERAS3, f"{name}.keras"), compile=False)
    inputs = _arrays(os.path.join(KERAS3, f"{name}_input_*.npy"))
    expected = _arrays(os.path.join(KERAS3, f"{name}_output_*.npy"))
    model.save(tmp_path / "model.keras")
    again = saving.load_model(tmp_path / "model.keras", compile=False)
    outputs = _as_list(again.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0))
    for output, want in zip(outputs, expected):
        assert np.max(np.abs(output - want)) <= 1e-5
    python, env = _keras_python()
    for i, array in enumerate(inputs):
        np.save(tmp_path / f"input_{i}.npy", array)
    for i, array in enumerate(outputs):
        np.save(tmp_path / f"output_{i}.npy", array)
    result = subprocess.run([python, os.path.join(DATA, "read_kgraph_file.py"), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["problems"] == []


def test_keras3_file_compiles_as_saved():
    with pytest.warns(UserWarning, match="Skipping variable loading for optimizer"):  # never trained: as Keras
        model = saving.load_model(os.path.join(KERAS3, "sequential_mlp.keras"))
    assert model.compiled and isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(2e-3)
    assert isinstance(model._compile_config["loss"], keras.losses.SparseCategoricalCrossentropy)
    assert [layer.name for layer in model.layers] == ["dense", "dense_1", "dense_2"]


@pytest.mark.parametrize("name", ["trained_sgd", "trained_rmsprop", "trained_adam", "trained_nadam",
                                  "trained_adamax", "trained_lion", "trained_adamw"])
def test_keras3_training_resumes_identically(name):
    """The optimizer state Keras saved is kgraph's: training continues exactly as in Keras."""
    model = saving.load_model(os.path.join(KERAS3, f"{name}.keras"))
    x, y = np.load(os.path.join(KERAS3, f"{name}_input_0.npy")), np.load(os.path.join(KERAS3, f"{name}_target.npy"))
    assert int(np.asarray(model.optimizer.iterations)) == 2
    model.fit(x, y, batch_size=len(y), epochs=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(_flat_weights(model), np.load(os.path.join(KERAS3, f"{name}_after.npy")), atol=1e-5)


# -- kgraph round trips ------------------------------------------------------------------------------
def test_round_trip_predicts_and_resumes_training_identically(trained):
    model, path, xs, y, predictions = trained
    loaded = saving.load_model(path)
    assert type(loaded) is type(model) and loaded.name == model.name
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert isinstance(loaded.get_layer("scale"), Scale) and loaded.get_layer("scale").factor == 0.5
    np.testing.assert_array_equal(loaded.predict(xs, verbose=0), predictions)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    model.fit(xs, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    loaded.fit(xs, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_array_equal(_flat_weights(loaded), _flat_weights(model))
    assert int(np.asarray(loaded.optimizer.iterations)) == int(np.asarray(model.optimizer.iterations)) == 12


def test_sequential_round_trip(tmp_path):
    model = keras.Sequential([layers.Dense(9, activation="relu", input_shape=(6,), name="hidden"),
                              layers.Dropout(0.5, name="drop"), layers.Dense(3, name="logits")], name="seq")
    model.compile(optimizer=keras.optimizers.RMSprop(0.01, momentum=0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.optimizer.build(model.trainable_weights)
    for variable in model.optimizer.variables[2:]:
        variable.assign(np.random.default_rng(0).random(variable.shape).astype("float32"))
    model.save(tmp_path / "seq.keras")
    loaded = saving.load_model(tmp_path / "seq.keras")
    assert isinstance(loaded, keras.Sequential) and loaded.get_config() == model.get_config()
    assert [layer.name for layer in loaded.layers] == ["hidden", "drop", "logits"]
    np.testing.assert_array_equal(_flat_weights(loaded), _flat_weights(model))
    assert isinstance(loaded.optimizer, keras.optimizers.RMSprop)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_file_has_keras3_layout(trained):
    model, path = trained[:2]
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["metadata.json", "config.json", "model.weights.h5"]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        metadata = json.loads(archive.read("metadata.json"))
        config = json.loads(archive.read("config.json"))
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    assert set(metadata) >= {"keras_version", "date_saved"}
    assert (config["module"], config["class_name"], config["registered_name"]) == (
        "keras.src.models.functional", "Functional", "Functional")
    assert config["build_config"] == {"input_shape": None}
    compile_config = config["compile_config"]
    assert compile_config["optimizer"]["class_name"] == "SGD"
    assert compile_config["loss"] == "sparse_categorical_crossentropy"
    assert compile_config["metrics"] == ["accuracy"]
    inner = config["config"]
    assert inner["input_layers"] == [["a", 0, 0], ["b", 0, 0]] and inner["output_layers"] == ["out", 0, 0]
    add = next(entry for entry in inner["layers"] if entry["class_name"] == "Add")
    assert add["build_config"] == {"input_shape": [[None, 7], [None, 7]]}
    history = [arg["config"]["keras_history"] for arg in add["inbound_nodes"][0]["args"][0]]
    assert history == [["ha", 0, 0], ["hb", 0, 0]]
    scale = next(entry for entry in inner["layers"] if entry["class_name"] == "Scale")
    assert scale["registered_name"] == "kgraph_test>Scale" and scale["config"]["factor"] == 0.5
    dense = next(entry for entry in inner["layers"] if entry["class_name"] == "Dense")
    assert dense["config"]["dtype"] == {"module": "keras", "class_name": "DTypePolicy",
                                        "config": {"name": "float32"}, "registered_name": None}
    # Objects that own state, at the attribute paths Keras 3 uses; list items named by class.
    assert weights["vars"].attrs["name"] == "two_inputs"
    assert sorted(weights["layers"]) == ["activation", "add", "concatenate", "dense", "dense_1", "dense_2",
                                         "flatten", "input_layer", "input_layer_1", "multiply", "reshape",
                                         "scale", "subtract"]
    assert weights["layers/dense_2/vars"].attrs["name"] == "out"
    assert weights["layers/input_layer_1/vars"].attrs["name"] == "b"
    snapshot = saving.load_model(path, compile=False)  # (`model` may have trained on since it was saved)
    np.testing.assert_array_equal(weights["layers/dense_2/vars/0"][()], snapshot.get_layer("out").kernel.numpy())
    np.testing.assert_array_equal(weights["layers/scale/vars/0"][()], snapshot.get_layer("scale").w.numpy())
    assert len(weights["layers/add/vars"]) == 0
    assert len(weights["optimizer/vars"]) == 2 + 7  # iteration, learning rate, one momentum per variable
    assert int(weights["optimizer/vars/0"][()]) == 6


def test_layer_order_is_keras_order():
    """Layers are ordered by depth from the outputs, as Keras orders them (the weights layout follows)."""
    x = keras.Input((4,), name="x")
    deep = layers.Dense(4, name="deep_2")(layers.Dense(4, name="deep_1")(x))
    shallow = layers.Dense(4, name="shallow")(x)
    model = keras.Model(x, layers.Add(name="sum")([shallow, deep]))
    assert [layer.name for layer in model.layers] == ["x", "deep_1", "shallow", "deep_2", "sum"]


def test_weights_file_round_trip_and_skip_mismatch(tmp_path, trained):
    model = trained[0]
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    twin = _two_input_model(keras.optimizers.SGD(0.05, momentum=0.9), name="twin")
    twin.optimizer.build(twin.trainable_weights)
    twin.load_weights(path)
    np.testing.assert_array_equal(_flat_weights(twin), _flat_weights(model))
    for a, b in zip(twin.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        model.save_weights(tmp_path / "model.h5")

    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    other = keras.Model([a, b], layers.Dense(3)(layers.Concatenate()([layers.Dense(5)(a), layers.Dense(7)(b)])))
    with pytest.raises(ValueError, match="could not be loaded"):
        other.load_weights(path)
    before = other.layers[2].kernel.numpy()
    with pytest.warns(UserWarning, match="could not be loaded"):
        other.load_weights(path, skip_mismatch=True)
    np.testing.assert_array_equal(other.layers[2].kernel.numpy(), before)  # dense: (6, 5) vs saved (6, 7)
    np.testing.assert_array_equal(other.layers[3].kernel.numpy(), model.get_layer("hb").kernel.numpy())


def test_json_clone_and_layer_serialization(trained):
    model = trained[0]
    rebuilt = keras.models.model_from_json(model.to_json())
    assert rebuilt.get_config() == model.get_config() and rebuilt.compiled
    assert [v.shape for v in rebuilt.weights] == [v.shape for v in model.weights]

    clone = keras.models.clone_model(model)
    assert clone.get_config() == model.get_config()
    assert [w.shape for w in clone.get_weights()] == [w.shape for w in model.get_weights()]
    assert not np.array_equal(clone.get_layer("out").kernel.numpy(), model.get_layer("out").kernel.numpy())
    seq = keras.Sequential([keras.Input((3,)), layers.Dense(2)])
    assert keras.models.clone_model(seq).get_config() == seq.get_config()

    for layer in [layers.Dense(3, activation="relu", use_bias=False, kernel_initializer="he_normal"),
                  layers.Activation("sigmoid"), layers.Dropout(0.25, seed=3), layers.Flatten(),
                  layers.Reshape((2, -1)), layers.Identity(), layers.Concatenate(axis=1), layers.Average(),
                  layers.InputLayer(shape=(3, 2), name="inp")]:
        config = layers.serialize(layer)
        assert config["module"] == "keras.layers" and config["class_name"] == type(layer).__name__
        json.dumps(config)
        revived = layers.deserialize(config)
        assert type(revived) is type(layer) and revived.get_config() == layer.get_config()


def test_keras3_layer_configs_load():
    """Configs as Keras 3.15 writes them (dtype policies, extra default-valued keys)."""
    config = {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
              "config": {"name": "d", "trainable": True, "units": 4, "activation": "linear", "use_bias": True,
                         "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
                                   "registered_name": None, "shared_object_id": 1},
                         "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                                "config": {"seed": None, "input_axes": None, "output_axes": None},
                                                "registered_name": None},
                         "bias_initializer": "zeros", "kernel_regularizer": None, "bias_regularizer": None,
                         "kernel_constraint": None, "bias_constraint": None, "quantization_config": None},
              "build_config": {"input_shape": [None, 3]}}
    dense = saving.deserialize_keras_object(config)
    assert dense.built and dense.kernel.shape == (3, 4) and dense.name == "d"


# -- custom objects ----------------------------------------------------------------------------------
def test_custom_object_registry():
    assert saving.get_registered_name(Scale) == "kgraph_test>Scale"
    assert saving.get_registered_object("kgraph_test>Scale") is Scale
    assert saving.get_custom_objects()["kgraph_test>Scale"] is Scale
    config = saving.serialize_keras_object(Scale(3.0, name="s"))
    assert config["registered_name"] == "kgraph_test>Scale" and config["config"]["factor"] == 3.0
    revived = saving.deserialize_keras_object(config)
    assert isinstance(revived, Scale) and revived.factor == 3.0 and revived.name == "s"

    class Table(layers.Layer):  # a constructor argument that is not a plain value, and no get_config()
        def __init__(self, table, **kwargs):
            super().__init__(**kwargs)
            self.table = table

    assert Table([1, 2]).get_config()["table"] == [1, 2]
    with pytest.raises(NotImplementedError, match="get_config"):
        Table(np.ones(2)).get_config()


def test_unknown_class_names_file_object_and_remedy(tmp_path):
    x = keras.Input((3,))
    model = keras.Model(x, Unregistered(name="mystery")(x))
    path = tmp_path / "unknown.keras"
    model.save(path)
    with pytest.raises(ValueError) as error:
        saving.load_model(path)
    message = str(error.value)
    assert str(path) in message and "Unregistered" in message and "mystery" in message
    assert "custom_objects" in message and "register_keras_serializable" in message
    loaded = saving.load_model(path, custom_objects={"Unregistered": Unregistered})
    assert isinstance(loaded.layers[1], Unregistered)
    with saving.custom_object_scope({"Unregistered": Unregistered}):
        assert isinstance(saving.load_model(path).layers[1], Unregistered)
    with pytest.raises(ValueError, match="Unregistered"):
        saving.load_model(path)  # the scope is gone


def test_code_in_configs_is_refused():
    lambda_config = {"module": "keras.layers", "class_name": "Activation", "registered_name": None,
                     "config": {"name": "act", "activation": {"class_name": "__lambda__",
                                                              "config": {"value": ["4wEAAAAA", None, None]}}}}
    with pytest.raises(ValueError, match="lambda"):
        saving.deserialize_keras_object(lambda_config, safe_mode=False)
    loader = {"module": "keras.saving", "class_name": "function", "config": "load_model",
              "registered_name": "load_model"}
    with pytest.raises(ValueError, match="not a modeling object"):
        saving.deserialize_keras_object({"module": "keras.layers", "class_name": "Activation",
                                         "registered_name": None, "config": {"activation": loader}})


# -- errors ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "good.keras"
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse")
    model.save(path)
    return path


def test_truncated_file(tmp_path, saved_file):
    data = saved_file.read_bytes()
    for cut in (len(data) // 2, len(data) - 30):
        path = tmp_path / f"cut{cut}.keras"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"truncated|corrupted") as error:
            saving.load_model(path)
        assert str(path) in str(error.value)


def test_corrupted_weights(tmp_path, saved_file):
    with zipfile.ZipFile(saved_file) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    weights = bytearray(members["model.weights.h5"])
    weights[:64] = b"\0" * 64  # the HDF5 superblock
    path = tmp_path / "bad_h5.keras"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, bytes(weights) if name == "model.weights.h5" else content)
    with pytest.raises(ValueError, match="HDF5") as error:
        saving.load_model(path)
    assert str(path) in str(error.value)
    flipped = bytearray(saved_file.read_bytes())  # a flipped byte inside a member: its CRC fails
    offset = flipped.index(b'"class_name"')
    flipped[offset + 2] ^= 0xFF
    path = tmp_path / "bad_crc.keras"
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupted") as error:
        saving.load_model(path)
    assert str(path) in str(error.value)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="not a `.keras` file") as error:
        saving.load_model(text)
    assert str(text) in str(error.value)
    other_zip = tmp_path / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="not a Keras model file") as error:
        saving.load_model(other_zip)
    assert str(other_zip) in str(error.value)
    with pytest.raises(ValueError, match="File not found"):
        saving.load_model(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="not supported"):
        saving.load_model(tmp_path / "model.h5")


def test_failed_save_leaves_previous_file(tmp_path, saved_file):
    path = tmp_path / "model.keras"
    path.write_bytes(saved_file.read_bytes())
    x = keras.Input((4,))
    model = keras.Model(x, layers.Activation(lambda t: t)(x))
    with pytest.raises(ValueError, match="lambda"):
        model.save(path)
    assert path.read_bytes() == saved_file.read_bytes()
    assert os.listdir(tmp_path) == ["model.keras"]  # no temporary file left behind


_SAVE_LOOP = textwrap.dedent("""
    import sys
    import numpy as np
    import kgraph as keras
    import kgraph.saving
    path = sys.argv[1]
    model = keras.Sequential([keras.Input((1000,)), keras.layers.Dense(1500), keras.layers.Dense(500)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_weights)
    for step in range(1, 10000):
        for variable in model.weights + model.optimizer.variables[2:]:
            variable.assign(np.full(variable.shape, step, variable.dtype))
        model.save(path)
        print(step, flush=True)
""")


def test_killed_save_leaves_previous_file_loadable(tmp_path):
    """SIGKILL in the middle of save(): the file on disk is a complete earlier save."""
    path = tmp_path / "big.keras"
    proc = subprocess.Popen([sys.executable, "-c", _SAVE_LOOP, str(path)], stdout=subprocess.PIPE, text=True)
    killed_mid_write = False
    try:
        completed = 0
        while completed < 2:  # let two saves complete
            line = proc.stdout.readline()
            assert line, "the saving process died"
            completed = int(line)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed_mid_write:  # kill while the next one is being written
            if any(name.startswith(".big.keras.") for name in os.listdir(tmp_path)):
                proc.send_signal(signal.SIGKILL)
                killed_mid_write = True
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert killed_mid_write, "never caught the process writing its temporary file"
    model = saving.load_model(path)
    values = {float(np.unique(w)[0]) for w in model.get_weights()}
    assert len(values) == 1 and values.pop() >= 2  # every weight from one and the same complete save
    state = {float(np.unique(v.numpy())[0]) for v in model.optimizer.variables[2:]}
    assert len(state) == 1


# -- Keras 3 loads kgraph's files ---------------------------------------------------------------------------
def _keras_python():
    python = keras_python()
    if python is None:
        pytest.skip(SKIP_REASON)
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KGRAPH_KERAS_BACKEND", "numpy"))
    probe = subprocess.run([python, "-c", "import keras"], env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"`import keras` fails in {python} (KGRAPH_KERAS_PYTHON): {probe.stderr.strip()[-300:]}")
    return python, env


_KERAS_SCALE = textwrap.dedent("""
    import keras

    @keras.saving.register_keras_serializable(package="kgraph_test")
    class Scale(keras.layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

        def call(self, inputs):
            return inputs * self.w * self.factor
""")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_keras3_loads_kgraph_files(tmp_path, trained, optimizer):
    python, env = _keras_python()
    _, path, xs, _, predictions = trained
    model = saving.load_model(path, compile=optimizer == "sgd")  # the weights that made `predictions`
    if optimizer == "adam":  # the same weights, with Adam state
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        model.optimizer.build(model.trainable_weights)
        rng = np.random.default_rng(0)
        for variable in model.optimizer.variables[2:]:
            variable.assign(rng.random(variable.shape).astype("float32"))
    model.save(tmp_path / "model.keras")
    for i, array in enumerate(xs):
        np.save(tmp_path / f"input_{i}.npy", array)
    np.save(tmp_path / "output_0.npy", predictions)
    for i, variable in enumerate(model.optimizer.variables):
        np.save(tmp_path / f"optimizer_{i}.npy", variable.numpy())
    (tmp_path / "custom.py").write_text(_KERAS_SCALE)
    result = subprocess.run([python, os.path.join(DATA, "read_kgraph_file.py"), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["problems"] == [] and report["resaved"]
    # ...and the file Keras wrote back loads in kgraph with the same weights and optimizer state.
    again = saving.load_model(tmp_path / "resaved.keras")
    np.testing.assert_allclose(_flat_weights(again), _flat_weights(model))
    for a, b in zip(again.optimizer.variables, model.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy())
