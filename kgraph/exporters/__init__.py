"""Exporters: ahead-of-time artifacts written from the IR (never from the layers).

`export(model, filepath, format="onnx")` is what `Model.export` calls.
"""

from __future__ import annotations

from kgraph.exporters.archive import ArchiveError, ExportArchive, export_archive, load
from kgraph.exporters.onnx import export_model, export_onnx
from kgraph.exporters.onnx_ops import ONNX_OPS, OnnxExportError

# "tf_saved_model" (Keras 3's default) writes kgraph's serving archive, its SavedModel.
FORMATS = ("onnx", "archive", "tf_saved_model")


def export(model, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
    """Export `model` for inference, as Keras 3's `Model.export` does.

    format: "onnx", or "archive" / "tf_saved_model" for kgraph's serving archive (one
    endpoint, "serve"). kwargs (ONNX): `opset` (or Keras's `opset_version`), default 17.
    Returns the ONNX ModelProto or the ExportArchive.
    """
    if format in ("archive", "tf_saved_model"):
        if kwargs:
            raise TypeError(f"export got unexpected arguments: {', '.join(sorted(kwargs))}")
        return export_archive(model, filepath, input_signature=input_signature, verbose=verbose is not False)
    if format != "onnx":
        raise ValueError(f"Unrecognized format={format!r}. kgraph exports {', '.join(map(repr, FORMATS))}; "
                         "'openvino' needs OpenVINO")
    opset = kwargs.pop("opset", None)
    opset_version = kwargs.pop("opset_version", None)
    if opset is not None and opset_version is not None and opset != opset_version:
        raise ValueError(f"export: opset={opset} and opset_version={opset_version} disagree")
    if kwargs:
        raise TypeError(f"export got unexpected arguments: {', '.join(sorted(kwargs))}")
    opset = opset if opset is not None else opset_version
    model_proto = export_model(model, filepath, opset=17 if opset is None else opset,
                               input_signature=input_signature)
    if verbose or verbose is None:
        print(f"Saved artifact at '{filepath}'.")
    return model_proto


__all__ = ["export", "export_model", "export_onnx", "ONNX_OPS", "OnnxExportError", "FORMATS", "ExportArchive",
           "ArchiveError", "export_archive", "load"]
