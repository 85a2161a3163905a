"""The `.keras` file format, as Keras 3 (keras/src/saving/saving_lib.py) writes and reads it.

A `.keras` file is a zip archive (members stored, not compressed) holding:

- metadata.json: {"keras_version": ..., "date_saved": "%Y-%m-%d@%H:%M:%S"} (kgraph adds
  "kgraph_version");
- config.json: `serialize_keras_object(model)`, with "build_config" and "compile_config";
- model.weights.h5: one HDF5 group per object that owns state, at the path of the
  attribute that reaches it from the model: "layers/dense/vars/0", "layers/dense_1/vars/1",
  "optimizer/vars/0", ... Objects found in a list (the model's `layers`) are named by their
  class in snake case, numbered in list order ("dense", "dense_1", ...), not by their layer
  names, so the layout does not depend on automatic names. Each "vars" group carries the
  object's name as an attribute, and holds its variables as datasets "0", "1", ...

Saving is atomic: the archive is written to a temporary file in the target directory,
flushed to disk, then renamed over the target, so an interrupted save leaves the previous
file intact. Loading reads only JSON and HDF5 datasets (no pickle, no code) and refuses
HDF5 links and external or virtual datasets.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import re
import tempfile
import warnings
import zipfile
import zlib

import numpy as np

CONFIG_FILENAME = "config.json"
METADATA_FILENAME = "metadata.json"
WEIGHTS_FILENAME = "model.weights.h5"
NPZ_WEIGHTS_FILENAME = "model.weights.npz"

# The Keras release whose `.keras` layout kgraph writes (and is tested against).
KERAS_VERSION = "3.15.1"

_BOMB_FLOOR_BYTES = 1 << 32  # as Keras: refuse members declaring > 4 GiB at > 100x their stored size
_BOMB_MAX_EXPANSION = 100


class CorruptFileError(ValueError):
    """A file that is not a readable `.keras` / `.weights.h5` file (truncated, corrupted, foreign)."""


# -- atomic writes ------------------------------------------------------------------------------------
def _file_mode(filepath):
    try:
        return os.stat(filepath).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(filepath):
    """A binary file object whose content replaces `filepath` only once it is complete on disk."""
    filepath = os.path.abspath(os.fspath(filepath))
    directory = os.path.dirname(filepath)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(filepath)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, _file_mode(filepath))
        os.replace(tmp_path, filepath)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# -- the HDF5 store ---------------------------------------------------------------------------------------
def _h5py():
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - h5py is a dependency
        raise ImportError("h5py must be installed to save or load weights: pip install h5py") from error
    return h5py


class _WriteEntry:
    """The "vars" group of one object, created on first use (or at once when it has metadata)."""

    def __init__(self, h5file, path, metadata):
        self._file, self._path, self._group = h5file, path, None
        if metadata:
            self._make()
            for key, value in metadata.items():
                self._group.attrs[key] = value

    def _make(self):
        if self._group is None:
            self._group = self._file.create_group(f"{self._path}/vars" if self._path else "vars")
        return self._group

    def __setitem__(self, key, value):
        self._make()[key] = np.asarray(value)

    def keys(self):
        return list(self._group.keys()) if self._group is not None else []

    def __len__(self):
        return len(self.keys())

    def __contains__(self, key):
        return key in self.keys()


class _ReadEntry:
    """Read access to one object's "vars" group (empty if the file has none at that path)."""

    def __init__(self, store, group, path):
        self._store, self._group, self.path = store, group, path

    def keys(self):
        return list(self._group.keys()) if self._group is not None else []

    def __len__(self):
        return len(self.keys())

    def __contains__(self, key):
        return key in self.keys()

    def __getitem__(self, key):
        if self._group is None or key not in self._group:
            raise KeyError(f"'{self.path}/vars/{key}' is not in {self._store.source}")
        return self._store.dataset(self._group, key)


class H5Store:
    """The weights file: write with make(path, metadata), read with get(path)."""

    def __init__(self, fileobj, mode, source):
        h5py = _h5py()
        self.mode, self.source = mode, source
        try:
            self.file = h5py.File(fileobj, mode)
        except OSError as error:
            raise CorruptFileError(f"Cannot read the weights in {source}: it is not a valid HDF5 file "
                                   f"(truncated or corrupted?): {error}") from error

    def make(self, path, metadata=None):
        return _WriteEntry(self.file, path, metadata)

    def _group(self, path):
        h5py = _h5py()
        group = self.file
        for part in [p for p in path.split("/") if p]:
            if part not in group:
                return None
            link = group.get(part, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise CorruptFileError(f"Refusing {self.source}: it holds an HDF5 {type(link).__name__} "
                                       f"at '{path}'")
            group = group[part]
            if not isinstance(group, h5py.Group):
                raise CorruptFileError(f"Invalid weights in {self.source}: '{path}' is not an HDF5 group")
        return group

    def get(self, path):
        group = self._group(f"{path}/vars" if path else "vars")
        if group is None and path and "_layer_checkpoint_dependencies" in self.file:  # Keras 2.13 files
            group = self._group(path.replace("layers", "_layer_checkpoint_dependencies") + "/vars")
        return _ReadEntry(self, group, path)

    def dataset(self, group, key):
        h5py = _h5py()
        link = group.get(key, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise CorruptFileError(f"Refusing {self.source}: it holds an HDF5 {type(link).__name__}")
        dataset = group[key]
        if not isinstance(dataset, h5py.Dataset):
            raise CorruptFileError(f"Invalid weights in {self.source}: '{dataset.name}' is not a dataset")
        if dataset.external or dataset.is_virtual:
            raise CorruptFileError(f"Refusing {self.source}: '{dataset.name}' is an external or virtual dataset")
        declared = int(np.prod(dataset.shape, dtype=np.int64)) * dataset.dtype.itemsize
        if declared > _BOMB_FLOOR_BYTES and declared > 1000 * dataset.id.get_storage_size():
            raise CorruptFileError(f"Refusing {self.source}: dataset '{dataset.name}' declares {declared} bytes "
                                   "but stores almost nothing (a decompression bomb?)")
        try:
            value = dataset[()]
        except (OSError, ValueError) as error:
            raise CorruptFileError(f"Cannot read '{dataset.name}' from {self.source} (corrupted?): {error}") from error
        if dataset.attrs.get("dtype") == "bfloat16":
            raise CorruptFileError(f"'{dataset.name}' in {self.source} is bfloat16, which kgraph does not support")
        return np.asarray(value)

    def close(self):
        self.file.close()


# -- walking the objects that own state ---------------------------------------------------------------------
def _snake(name):
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _name_key(name):
    return f"~{name}" if name.startswith("_") else name  # private attributes last, as Keras


_skipsets = {}


def _skipset(kind):
    """Attributes never walked: those every plain Layer has (Keras's get_attr_skipset)."""
    if kind not in _skipsets:
        from kgraph.layers.layer import Layer

        base = set(dir(Layer(name="__kgraph_attribute_probe__")))
        # compile()'s bookkeeping: it refers to the optimizer and metrics, it does not own them.
        base |= {"_compile_config", "_compiled_functions", "_compiled_loss", "_compiled_metrics", "_loss_tracker",
                 "history", "metrics"}
        extra = {
            "Functional": {"operations", "_operations", "_functional_layers", "_nodes", "_inputs_struct",
                           "_outputs_struct", "inputs", "outputs"},
            "Sequential": {"_functional", "_input_layer", "_stack"},
        }.get(kind, set())
        _skipsets[kind] = base | extra
    return _skipsets[kind]


def _is_saveable(obj):
    from kgraph.layers.layer import Layer
    from kgraph.optimizers.optimizer import Optimizer

    return isinstance(obj, (Layer, Optimizer))


def _kind(obj):
    from kgraph.models.functional import Functional
    from kgraph.models.sequential import Sequential

    if isinstance(obj, Sequential):
        return "Sequential"
    if isinstance(obj, Functional):
        return "Functional"
    return "Layer"


def _children(obj):
    """(attribute, value) pairs to visit below `obj`, in Keras's order."""
    from kgraph.optimizers.optimizer import Optimizer

    if isinstance(obj, Optimizer):
        return
    kind = _kind(obj)
    if kind in ("Sequential", "Functional"):
        yield "layers", obj.layers
    skip = _skipset(kind)
    for name in sorted(dir(obj), key=_name_key):
        if name.startswith("__") or name in skip:
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # noqa: BLE001 - a property that cannot be read has nothing to save
            continue
        yield name, value


def _join(path, name):
    return f"{path}/{name}" if path else name


def _container_items(container):
    values = list(container.values()) if isinstance(container, dict) else list(container)
    used = {}
    for value in values:
        if _is_saveable(value):
            base = _snake(type(value).__name__)
        elif isinstance(value, (list, tuple, dict)):
            base = "container"
        else:
            continue
        count = used.get(base)
        used[base] = 0 if count is None else count + 1
        yield (base if count is None else f"{base}_{count + 1}"), value


def save_state(obj, store, path="", visited=None, containers=None):
    visited = set() if visited is None else visited
    if id(obj) in visited:
        return
    if hasattr(obj, "save_own_variables"):
        name = getattr(obj, "name", None)
        obj.save_own_variables(store.make(path, {"name": name} if isinstance(name, str) else None))
    visited.add(id(obj))
    for name, child in _children(obj):
        if _is_saveable(child):
            save_state(child, store, _join(path, name), visited)
        elif isinstance(child, (list, tuple, dict)):
            _save_container(child, store, _join(path, name), visited, containers)


def _save_container(container, store, path, visited, containers=None):
    containers = set() if containers is None else containers
    if id(container) in containers:
        return
    containers.add(id(container))
    for name, value in _container_items(container):
        if _is_saveable(value):
            save_state(value, store, _join(path, name), visited)
        else:
            _save_container(value, store, _join(path, name), visited, containers)


def load_state(obj, store, path, visited, errors):
    """Load `obj` and what it holds; failures are collected in `errors` {id: (obj, error)}."""
    if id(obj) in visited:
        return
    failed = False
    if hasattr(obj, "load_own_variables"):
        try:
            obj.load_own_variables(store.get(path))
        except CorruptFileError:
            raise
        except Exception as error:  # noqa: BLE001 - reported together below
            errors[id(obj)] = (obj, error)
            failed = True
    for name, child in _children(obj):
        if _is_saveable(child):
            load_state(child, store, _join(path, name), visited, errors)
        elif isinstance(child, (list, tuple, dict)):
            _load_container(child, store, _join(path, name), visited, errors, set())
    if not failed:
        visited.add(id(obj))


def _load_container(container, store, path, visited, errors, containers):
    if id(container) in containers:
        return
    containers.add(id(container))
    for name, value in _container_items(container):
        if _is_saveable(value):
            load_state(value, store, _join(path, name), visited, errors)
        else:
            _load_container(value, store, _join(path, name), visited, errors, containers)


def _loading_failure(errors, source, warn_only=False):
    first_obj, first_error = next(iter(errors.values()))
    names = [getattr(obj, "name", repr(obj)) for obj, _ in errors.values()]
    message = (f"A total of {len(errors)} objects could not be loaded from {source}. Example error message "
               f"for object {getattr(first_obj, 'name', first_obj)!r}:\n\n{first_error}\n\n"
               f"List of objects that could not be loaded:\n{names}")
    if warn_only:
        warnings.warn(message, stacklevel=3)
        return
    raise ValueError(message)


# -- .keras files -----------------------------------------------------------------------------------------
def _metadata_json():
    import kgraph

    return json.dumps({"keras_version": KERAS_VERSION,
                       "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
                       "kgraph_version": kgraph.__version__})


def _weights_bytes(model):
    buffer = io.BytesIO()
    store = H5Store(buffer, "w", "<memory>")
    try:
        save_state(model, store)
    finally:
        store.close()
    return buffer.getvalue()


def save_model(model, filepath):
    """Write `model` to `filepath` (a `.keras` zip archive), atomically."""
    from kgraph.saving.serialization_lib import serialize_keras_object

    if not model.built:
        warnings.warn("You are saving a model that has not yet been built. It might not contain any weights "
                      "yet. Consider building the model first by calling it on some data.", stacklevel=3)
    config_json = json.dumps(serialize_keras_object(model))
    weights = _weights_bytes(model)
    with atomic_write(filepath) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(METADATA_FILENAME, _metadata_json())
        archive.writestr(CONFIG_FILENAME, config_json)
        archive.writestr(WEIGHTS_FILENAME, weights)


def _read_member(archive, name, source):
    info = archive.getinfo(name)
    if info.file_size > _BOMB_FLOOR_BYTES and info.file_size > _BOMB_MAX_EXPANSION * max(info.compress_size, 1):
        raise CorruptFileError(f"Refusing {source}: member '{name}' declares {info.file_size} bytes but stores "
                               f"{info.compress_size} (a decompression bomb?)")
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise CorruptFileError(f"Cannot read '{name}' from {source}: the file is truncated or corrupted "
                               f"({error})") from error


def _open_archive(filepath):
    source = f"'{filepath}'"
    if not os.path.exists(filepath):
        raise ValueError(f"File not found: filepath={filepath}. Please ensure the file is an accessible "
                         "`.keras` zip file.")
    if not zipfile.is_zipfile(filepath):
        raise CorruptFileError(f"Cannot load {source}: it is not a `.keras` file (not a zip archive; the file "
                               "is truncated, corrupted or of another format).")
    try:
        return zipfile.ZipFile(filepath, "r")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CorruptFileError(f"Cannot load {source}: the zip archive is truncated or corrupted ({error})") from error


def read_config(archive, source):
    """The model config from an open `.keras` archive."""
    names = archive.namelist()
    if CONFIG_FILENAME not in names:
        raise CorruptFileError(f"Cannot load {source}: it is a zip archive but not a Keras model file "
                               f"(no {CONFIG_FILENAME}; members: {names[:10]})")
    raw = _read_member(archive, CONFIG_FILENAME, source)
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"Cannot load {source}: {CONFIG_FILENAME} is not valid JSON ({error})") from error
    if not isinstance(config, dict) or "class_name" not in config or "config" not in config:
        raise CorruptFileError(f"Cannot load {source}: {CONFIG_FILENAME} does not describe a Keras object")
    return config


def _weights_store(archive, source):
    names = archive.namelist()
    if WEIGHTS_FILENAME in names:
        member = f"{source} ({WEIGHTS_FILENAME})"
        return H5Store(io.BytesIO(_read_member(archive, WEIGHTS_FILENAME, source)), "r", member)
    if NPZ_WEIGHTS_FILENAME in names:
        raise CorruptFileError(f"Cannot load {source}: its weights are in {NPZ_WEIGHTS_FILENAME}, which stores "
                               "pickled objects; kgraph never unpickles data from a file. Re-save the model "
                               "with the default weights_format='h5'.")
    raise CorruptFileError(f"Cannot load {source}: it holds no {WEIGHTS_FILENAME}")


def _model_from_config(config, custom_objects, compile, safe_mode, source):
    from kgraph.saving.serialization_lib import deserialize_keras_object

    if not compile:
        config = dict(config, compile_config=None)
    try:
        return deserialize_keras_object(config, custom_objects=custom_objects, safe_mode=safe_mode)
    except CorruptFileError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"Cannot load the model in {source}: {error}") from error


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """The model in a `.keras` file (or a directory holding an unzipped one)."""
    filepath = os.fspath(filepath)
    source = f"'{filepath}'"
    if os.path.isdir(filepath):
        return _load_model_from_dir(filepath, custom_objects, compile, safe_mode)
    with _open_archive(filepath) as archive:
        config = read_config(archive, source)
        store = _weights_store(archive, source)
        try:
            model = _model_from_config(config, custom_objects, compile, safe_mode, source)
            errors = {}
            load_state(model, store, "", set(), errors)
        finally:
            store.close()
    if errors:
        _loading_failure(errors, source)
    return model


def _load_model_from_dir(dirpath, custom_objects, compile, safe_mode):
    source = f"'{dirpath}'"
    config_path = os.path.join(dirpath, CONFIG_FILENAME)
    if not os.path.exists(config_path):
        raise ValueError(f"Cannot load {source}: the directory has no {CONFIG_FILENAME}")
    with open(config_path, "rb") as f:
        try:
            config = json.loads(f.read())
        except (ValueError, UnicodeDecodeError) as error:
            raise CorruptFileError(f"Cannot load {source}: {CONFIG_FILENAME} is not valid JSON ({error})") from error
    weights_path = os.path.join(dirpath, WEIGHTS_FILENAME)
    if not os.path.exists(weights_path):
        raise CorruptFileError(f"Cannot load {source}: it holds no {WEIGHTS_FILENAME}")
    model = _model_from_config(config, custom_objects, compile, safe_mode, source)
    with open(weights_path, "rb") as f:
        store = H5Store(io.BytesIO(f.read()), "r", f"'{weights_path}'")
    errors = {}
    try:
        load_state(model, store, "", set(), errors)
    finally:
        store.close()
    if errors:
        _loading_failure(errors, source)
    return model


# -- weights only ---------------------------------------------------------------------------------------
def save_weights_only(model, filepath):
    """Write the model's state (the `.keras` weights layout) to an `.weights.h5` file, atomically."""
    if not model.built:
        raise ValueError("You are saving a model that has not yet been built. Try building the model first by "
                         "calling it on some data or by using `build()`.")
    weights = _weights_bytes(model)
    with atomic_write(filepath) as f:
        f.write(weights)


def load_weights_only(model, filepath, skip_mismatch=False):
    """Load the state written by save_weights_only (or the weights of a `.keras` file)."""
    if not model.built:
        raise ValueError("You are loading weights into a model that has not yet been built. Try building the "
                         "model first by calling it on some data or by using `build()`.")
    filepath = os.fspath(filepath)
    source = f"'{filepath}'"
    if filepath.endswith(".keras"):
        with _open_archive(filepath) as archive:
            store = _weights_store(archive, source)
    else:
        if not os.path.exists(filepath):
            raise FileNotFoundError(f"No such weights file: {source}")
        with open(filepath, "rb") as f:
            store = H5Store(io.BytesIO(f.read()), "r", source)
    errors = {}
    try:
        load_state(model, store, "", set(), errors)
    finally:
        store.close()
    if errors:
        _loading_failure(errors, source, warn_only=skip_mismatch)
