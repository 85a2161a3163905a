"""Load a kgraph-written `.keras` file with Keras 3 and check it (run by tests/test_saving.py).

    KERAS_BACKEND=numpy python read_kgraph_file.py DIR

DIR holds what the test wrote with kgraph:
    model.keras               the model (kgraph's model.save)
    input_I.npy, output_I.npy inputs and kgraph's predictions for them
    optimizer_I.npy           (optional) kgraph's optimizer variables, in order
    custom.py                 (optional) defines and registers custom objects; imported first

Checks that Keras loads the file without warnings about weights or optimizer variables it
could not load, that its predictions match kgraph's (max abs diff <= 1e-5), that the
optimizer state is kgraph's, and that Keras re-saves the model. Prints one JSON line and
exits with status 1 on any mismatch.
"""

import glob
import importlib.util
import json
import os
import sys
import warnings

os.environ.setdefault("KERAS_BACKEND", "numpy")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def main(directory):
    report = {"keras_version": keras.__version__, "backend": keras.backend.backend(), "problems": []}
    custom = os.path.join(directory, "custom.py")
    if os.path.exists(custom):
        spec = importlib.util.spec_from_file_location("kgraph_custom_objects", custom)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.saving.load_model(os.path.join(directory, "model.keras"))
    for warning in caught:
        text = str(warning.message)
        if "could not be loaded" in text or "Skipping variable loading" in text:
            report["problems"].append(f"load warning: {text}")
    inputs = [np.load(p) for p in sorted(glob.glob(os.path.join(directory, "input_*.npy")))]
    expected = [np.load(p) for p in sorted(glob.glob(os.path.join(directory, "output_*.npy")))]
    outputs = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    diffs = [float(np.max(np.abs(np.asarray(o) - e))) for o, e in zip(outputs, expected)]
    report["max_abs_diff"] = diffs
    if len(outputs) != len(expected) or any(d > 1e-5 for d in diffs):
        report["problems"].append(f"predictions differ from kgraph's: {diffs}")
    optimizer_files = sorted(glob.glob(os.path.join(directory, "optimizer_*.npy")),
                             key=lambda p: int(p.rsplit("_", 1)[1][:-4]))
    if optimizer_files:
        saved = [np.load(p) for p in optimizer_files]
        variables = [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in model.optimizer.variables]
        report["optimizer"] = type(model.optimizer).__name__
        if len(saved) != len(variables):
            report["problems"].append(f"optimizer has {len(variables)} variables, kgraph saved {len(saved)}")
        else:
            for i, (value, variable) in enumerate(zip(saved, variables)):
                if value.shape != variable.shape or not np.allclose(value, variable, atol=1e-7):
                    report["problems"].append(f"optimizer variable {i} differs from kgraph's")
    resaved = os.path.join(directory, "resaved.keras")
    model.save(resaved)
    report["resaved"] = os.path.exists(resaved)
    print(json.dumps(report))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
