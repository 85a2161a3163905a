"""The serving archive: written by model.export / ExportArchive, served without the model's code."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kgraph as keras
from kgraph.exporters import ArchiveError, ExportArchive, load

rng = np.random.default_rng(0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A subclassed model defined in a module that the serving process cannot import."""
    root = tmp_path_factory.mktemp("archive")
    module_dir = root / "private_code"
    module_dir.mkdir()
    (module_dir / "secret_model.py").write_text(textwrap.dedent("""
        import kgraph as keras

        class SecretModel(keras.Model):
            def __init__(self):
                super().__init__()
                self.hidden = keras.layers.Dense(8, activation="tanh")
                self.out = keras.layers.Dense(3)

            def call(self, x):
                return self.out(self.hidden(x))
    """))
    sys.path.insert(0, str(module_dir))
    try:
        from secret_model import SecretModel
    finally:
        sys.path.remove(str(module_dir))
    model = SecretModel()
    x = rng.standard_normal((5, 4)).astype("float32")
    expected = model.predict(x, verbose=0)
    path = root / "served"
    model.export(path, input_signature=[keras.InputSpec(shape=(None, 4), dtype="float32")])
    np.save(root / "x.npy", x)
    np.save(root / "expected.npy", expected)
    return path, x, expected


def test_round_trip_in_a_fresh_process_without_the_model_code(exported):
    path, _, _ = exported
    script = textwrap.dedent(f"""
        import numpy as np
        import kgraph
        try:
            import secret_model  # noqa: F401
            raise SystemExit("the model's module must not be importable here")
        except ImportError:
            pass
        reloaded = kgraph.export.load({str(path)!r})
        x = np.load({str(path.parent / "x.npy")!r})
        np.save({str(path.parent / "got.npy")!r}, reloaded.serve(x))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(path.parent / "got.npy"), np.load(path.parent / "expected.npy"))


def test_archive_contents_and_signature(exported):
    path, x, expected = exported
    assert sorted(os.listdir(path)) == ["constants.h5", "endpoints", "manifest.json", "metadata.json", "variables.h5"]
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["endpoints"]["serve"]["inputs"][0]["shape"] == [None, 4]
    reloaded = load(path)
    assert reloaded.endpoint_names == ["serve"]
    np.testing.assert_allclose(reloaded.serve(x[:2]), expected[:2], rtol=1e-6)


def test_tampered_and_truncated_archives_are_refused(exported, tmp_path):
    path, _, _ = exported
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(path, tampered)
    data = bytearray((tampered / "variables.h5").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "variables.h5").write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="variables.h5.*checksum"):
        load(tampered)
    truncated = tmp_path / "truncated"
    shutil.copytree(path, truncated)
    (truncated / "endpoints" / "serve.json").unlink()
    with pytest.raises(ArchiveError, match="serve.json.*missing"):
        load(truncated)
    with pytest.raises(ArchiveError, match="not an export archive"):
        load(tmp_path / "nothing_here")


def test_cut_short_files_and_an_edited_manifest_are_refused(exported, tmp_path):
    import shutil

    path, _, _ = exported
    cut = tmp_path / "cut"
    shutil.copytree(path, cut)
    data = (cut / "variables.h5").read_bytes()
    (cut / "variables.h5").write_bytes(data[:len(data) // 2])
    with pytest.raises(ArchiveError, match="variables.h5.*checksum.*truncated"):
        load(cut)
    (cut / "variables.h5").write_bytes(data)
    manifest = (cut / "manifest.json").read_text()
    (cut / "manifest.json").write_text(manifest[:len(manifest) // 2])
    with pytest.raises(ArchiveError, match="manifest.json: cannot read"):
        load(cut)
    entries = json.loads(manifest)
    del entries["endpoints/serve.json"]  # as if the endpoint were replaced and its checksum dropped
    (cut / "manifest.json").write_text(json.dumps(entries))
    with pytest.raises(ArchiveError, match="no checksum for endpoints/serve.json"):
        load(cut)


def test_export_archive_with_several_endpoints(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False),
                         input_signature=[keras.InputSpec(shape=(None, 3), dtype="float32")])
    archive.add_endpoint("double", lambda x: keras.ops.multiply(model(x, training=False), 2.0),
                         input_signature=[keras.InputSpec(shape=(None, 3), dtype="float32")])
    archive.write_out(tmp_path / "multi", verbose=False)
    reloaded = load(tmp_path / "multi")
    x = rng.standard_normal((4, 3)).astype("float32")
    np.testing.assert_allclose(reloaded.double(x), 2 * model.predict(x, verbose=0), rtol=1e-6)


def test_a_convolutional_model_round_trips(tmp_path):
    """Conv, pooling and upsampling attrs (nested tuples) survive the JSON IR."""
    inputs = keras.Input((6, 6, 2), name="image")
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.UpSampling2D(interpolation="bilinear")(x)
    x = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same")(x)
    x = keras.layers.AveragePooling2D(3, strides=2, padding="same")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    model.export(tmp_path / "cnn", verbose=False)
    reloaded = load(tmp_path / "cnn")
    assert reloaded.metadata["endpoints"]["serve"]["inputs"][0] == {"name": "image", "shape": [None, 6, 6, 2],
                                                                   "dtype": "float32"}
    x = rng.standard_normal((3, 6, 6, 2)).astype("float32")
    np.testing.assert_array_equal(reloaded.serve(x), model.predict(x, verbose=0))


def test_assets_and_variable_collections_ship_with_the_archive(tmp_path):
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(inputs))
    spare = keras.Variable(np.arange(4, dtype="float32"), name="spare")  # read by no endpoint
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False),
                         input_signature=[keras.InputSpec(shape=(None, 3), dtype="float32")])
    archive.add_variable_collection("extras", [dense.kernel, spare])
    archive.add_asset("labels.txt", labels)
    with pytest.raises(ValueError, match="plain file name"):
        archive.add_asset("../labels.txt", labels)
    with pytest.raises(ValueError, match="identifier not taken"):
        archive.add_variable_collection("serve", [spare])
    archive.write_out(tmp_path / "with_assets", verbose=False)
    labels.write_text("changed after export")
    reloaded = load(tmp_path / "with_assets")
    with open(reloaded.assets["labels.txt"]) as handle:
        assert handle.read() == "cat\ndog\n"
    assert [v.path for v in reloaded.extras] == [dense.kernel.path, spare.path]
    np.testing.assert_array_equal(reloaded.extras[0].numpy(), dense.kernel.numpy())
    np.testing.assert_array_equal(reloaded.extras[1].numpy(), np.arange(4))
    (tmp_path / "with_assets" / "assets" / "labels.txt").write_text("tampered")
    with pytest.raises(ArchiveError, match="labels.txt.*checksum"):
        load(tmp_path / "with_assets")
