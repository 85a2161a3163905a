"""`kgraph.saving.save_model` / `load_model` / `save_weights` / `load_weights` (Keras 3's API)."""

from __future__ import annotations

import os

from kgraph.saving import saving_lib


def _ask_to_proceed_with_overwrite(filepath):
    answer = input(f"[WARNING] {filepath} already exists - overwrite? [y/n]").strip().lower()
    while answer not in ("y", "n"):
        answer = input('Enter "y" (overwrite) or "n" (cancel).').strip().lower()
    return answer == "y"


def save_model(model, filepath, overwrite=True, zipped=None, **kwargs):
    """Save `model` (architecture, weights, optimizer state) as a `.keras` file.

    The file is a zip archive in Keras 3's layout, so Keras 3 loads it too. It is written to
    a temporary file next to `filepath` and renamed over it, so an interrupted save leaves
    any previous file intact.
    """
    kwargs.pop("include_optimizer", None)
    save_format = kwargs.pop("save_format", None)
    if kwargs:
        raise ValueError(f"The following argument(s) are not supported: {list(kwargs.keys())}")
    path = os.fspath(filepath)
    if save_format not in (None, False, "keras") and not path.endswith(".keras"):
        raise ValueError("The `save_format` argument is deprecated in Keras 3. Please remove this argument "
                         f"and pass a file path with a `.keras` extension. Received: save_format={save_format}")
    if zipped is False:
        raise ValueError("kgraph writes zipped `.keras` files only (zipped=False is not supported)")
    if path.endswith((".h5", ".hdf5")):
        raise ValueError("kgraph does not write the legacy HDF5 model format (`.h5`). Save to a `.keras` file "
                         f"(the Keras 3 format), e.g. model.save('model.keras'). Received: filepath={path}")
    if not path.endswith(".keras"):
        raise ValueError("Invalid filepath extension for saving. Please add a `.keras` extension for the native "
                         f"Keras format. Received: filepath={path}")
    if os.path.exists(path) and not overwrite and not _ask_to_proceed_with_overwrite(path):
        return
    saving_lib.save_model(model, path)


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Load a model saved with `model.save()` (by kgraph or by Keras 3).

    Args:
        filepath: path to the `.keras` file (or a directory holding an unzipped one).
        custom_objects: {name: class or function} for custom objects that are not registered.
        compile: compile the model as it was compiled when saved (with its optimizer state).
        safe_mode: kept for Keras compatibility; kgraph never runs code from a file.

    Raises:
        ValueError: the file is missing, not a `.keras` file, truncated or corrupted, or names
            a class that is neither a kgraph class nor registered / in custom_objects.
    """
    path = os.fspath(filepath)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, saving_lib.CONFIG_FILENAME)):
        return saving_lib.load_model(path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)
    if path.endswith(".keras"):
        return saving_lib.load_model(path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)
    if path.endswith((".h5", ".hdf5")):
        raise ValueError(f"File format not supported: filepath={path}. kgraph loads Keras 3 `.keras` files; the "
                         "legacy HDF5 model format is not supported (load it in Keras and re-save it as "
                         "`.keras`).")
    raise ValueError(f"File format not supported: filepath={path}. kgraph loads Keras 3 `.keras` files "
                     "(and `.weights.h5` files with model.load_weights()).")


def save_weights(model, filepath, overwrite=True, **kwargs):
    """Save the model's weights (and optimizer state) to a `.weights.h5` file, atomically."""
    if kwargs.pop("max_shard_size", None) is not None:
        raise ValueError("kgraph does not write sharded weights (max_shard_size)")
    if kwargs:
        raise ValueError(f"Invalid keyword arguments: {kwargs}")
    path = os.fspath(filepath)
    if not path.endswith(".weights.h5"):
        raise ValueError(f"The filename must end in `.weights.h5`. Received: filepath={path}")
    if os.path.exists(path) and not overwrite and not _ask_to_proceed_with_overwrite(path):
        return
    saving_lib.save_weights_only(model, path)


def load_weights(model, filepath, skip_mismatch=False, **kwargs):
    """Load weights from a `.weights.h5` or `.keras` file (Keras 3's layout, by object path).

    With skip_mismatch=True, objects whose saved weights do not fit (count or shape) keep
    their values and a warning lists them; otherwise a ValueError does.
    """
    kwargs.pop("objects_to_skip", None)
    if kwargs:
        raise ValueError(f"Invalid keyword arguments: {kwargs}")
    path = os.fspath(filepath)
    if not path.endswith((".keras", ".weights.h5")):
        raise ValueError(f"File format not supported: filepath={path}. kgraph loads weights from `.weights.h5` "
                         "and `.keras` files.")
    saving_lib.load_weights_only(model, path, skip_mismatch=skip_mismatch)
