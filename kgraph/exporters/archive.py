"""The serving archive: a directory that serves a model's endpoints without its Python code.

Layout (`ExportArchive.write_out(path)`):

    path/
      metadata.json      kgraph version, endpoints with their input/output signatures
      endpoints/NAME.json  the endpoint's optimized IR: nodes (op, attrs, inputs, shape, dtype)
      variables.h5       every variable's value, by index (h5py: no pickle)
      constants.h5       the endpoints' constant arrays
      manifest.json      SHA-256 of every file above

`load(path)` checks the manifest, rebuilds each endpoint's graph from op names in the
registry (no code from the archive runs), compiles it with the numba backend and returns
an object whose endpoints are methods: `reloaded.serve(x)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import h5py
import numpy as np

import kgraph
from kgraph.ir import Graph, SymbolicTensor, Variable, tracing
from kgraph.ops import OPS

FORMAT_VERSION = 1
RESERVED = ("assets", "metadata", "variables", "endpoint_names")  # LoadedArchive's own attributes


class ArchiveError(ValueError):
    """A missing, truncated or tampered archive; the message names the file."""


def _document(graph, variables, variable_index, constants):
    """The JSON document of a graph: its nodes (a control-flow op's function graphs nested in
    its attrs), inputs, outputs and output names; variables and constants go to the lists."""
    def jsonable(value):
        if isinstance(value, Graph):
            return {"__graph__": _document(value, variables, variable_index, constants)}
        if isinstance(value, (tuple, list)):
            return {"__tuple__": [jsonable(v) for v in value]}
        return _jsonable(value)

    nodes = []
    for node in graph.nodes():
        entry = {"id": node.id, "op": node.op, "inputs": list(node.inputs), "shape": list(node.shape),
                 "dtype": node.dtype, "name": node.name,
                 "attrs": {k: jsonable(v) for k, v in node.attrs.items()}}
        if node.op == "variable":
            key = id(node.payload)
            if key not in variable_index:
                variable_index[key] = len(variables)
                variables.append(node.payload)
            entry["variable"] = variable_index[key]
        elif node.op == "constant":
            entry["constant"] = len(constants)
            constants.append(np.asarray(node.payload))
        nodes.append(entry)
    return {"nodes": nodes, "inputs": graph.inputs, "outputs": graph.outputs, "output_names": graph.output_names}


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return {"__tuple__": [_jsonable(v) for v in value]}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


class ExportArchive:
    """Keras 3's ExportArchive: track objects, add endpoints, write the archive."""

    def __init__(self):
        self._tracked = []
        self._endpoints = {}
        self._variable_collections = {}
        self._assets = {}

    def track(self, resource):
        """Track a model or layer whose variables the endpoints use."""
        self._tracked.append(resource)
        return resource

    def add_endpoint(self, name, fn=None, input_signature=None, **kwargs):
        """Trace `fn` on symbolic inputs described by `input_signature` into an endpoint."""
        if not name.isidentifier():
            raise ValueError(f"Endpoint name {name!r} must be a valid Python identifier")
        if name in self._endpoints:
            raise ValueError(f"Endpoint name '{name}' is already taken")
        if name in self._variable_collections or name in RESERVED:
            raise ValueError(f"Endpoint name '{name}' is taken by a variable collection or the archive's "
                             "attributes")
        if fn is None or input_signature is None:
            raise ValueError(f"add_endpoint('{name}') needs fn and input_signature")
        from kgraph.compiler.passes.pipeline import optimize

        specs = list(input_signature) if isinstance(input_signature, (list, tuple)) else [input_signature]
        graph = Graph(name)
        with tracing(graph):
            inputs = []
            for index, spec in enumerate(specs):
                shape = tuple(None if d is None else int(d) for d in spec.shape)
                dtype = str(getattr(spec, "dtype", None) or "float32")
                placeholder = graph.add_placeholder(shape, dtype, getattr(spec, "name", None) or f"input_{index}")
                inputs.append(SymbolicTensor(graph, placeholder.id))
            outputs = fn(*inputs)
        flat = list(outputs.values()) if isinstance(outputs, dict) else (
            list(outputs) if isinstance(outputs, (list, tuple)) else [outputs])
        graph.outputs = [t.node_id for t in flat]
        graph.output_names = list(outputs.keys()) if isinstance(outputs, dict) else [
            f"output_{i}" for i in range(len(flat))]
        if graph.state_updates:
            raise ValueError(f"Endpoint '{name}' updates variables; export inference functions only "
                             "(call the model with training=False)")
        self._endpoints[name] = optimize(graph).renumbered()
        return fn

    def add_variable_collection(self, name, variables):
        """Ship `variables` too; the loaded archive lists them as the attribute `name`."""
        if not name.isidentifier() or name in self._endpoints or name in self._variable_collections or name in RESERVED:
            raise ValueError(f"Variable collection name {name!r} must be a Python identifier not taken by an "
                             f"endpoint, another collection or {', '.join(RESERVED)}")
        self._variable_collections[name] = list(variables)

    def add_asset(self, name, filepath):
        """Ship a file with the archive (a vocabulary, labels...) as assets/NAME; the loaded
        archive's `assets` maps NAME to its path. (kgraph's addition: Keras' archives take
        assets from tracked TensorFlow resources.)"""
        if not name or name != os.path.basename(name) or name.startswith("."):
            raise ValueError(f"Asset name {name!r} must be a plain file name")
        if not os.path.isfile(filepath):
            raise ValueError(f"Asset {name!r}: {filepath} is not a file")
        self._assets[name] = os.fspath(filepath)

    def write_out(self, filepath, verbose=True):
        """Write the archive atomically (a temporary directory renamed into place)."""
        if not self._endpoints:
            raise ValueError("No endpoints have been set yet. Call add_endpoint().")
        filepath = os.fspath(filepath)
        parent = os.path.dirname(os.path.abspath(filepath))
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(dir=parent, prefix=".kgraph-archive-")
        try:
            self._write(staging)
            if os.path.exists(filepath):
                shutil.rmtree(filepath)
            os.replace(staging, filepath)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if verbose:
            print(f"Saved artifact at '{filepath}'.")

    def _write(self, root):
        variables, constants = [], []
        variable_index = {}
        os.makedirs(os.path.join(root, "endpoints"))
        signatures = {}
        for name, graph in self._endpoints.items():
            document = _document(graph, variables, variable_index, constants)
            with open(os.path.join(root, "endpoints", f"{name}.json"), "w") as handle:
                json.dump(document, handle)
            signatures[name] = {
                "inputs": [{"name": graph.node(i).name, "shape": list(graph.node(i).shape),
                            "dtype": graph.node(i).dtype} for i in graph.inputs],
                "outputs": [{"name": n, "shape": list(graph.node(o).shape), "dtype": graph.node(o).dtype}
                            for n, o in zip(graph.output_names, graph.outputs)]}
        for collection in self._variable_collections.values():  # variables no endpoint reads ship too
            for variable in collection:
                if id(variable) not in variable_index:
                    variable_index[id(variable)] = len(variables)
                    variables.append(variable)
        with h5py.File(os.path.join(root, "variables.h5"), "w") as handle:
            for index, variable in enumerate(variables):
                dataset = handle.create_dataset(str(index), data=variable.numpy())
                dataset.attrs["path"] = variable.path
                dataset.attrs["trainable"] = variable.trainable
        with h5py.File(os.path.join(root, "constants.h5"), "w") as handle:
            for index, value in enumerate(constants):
                handle.create_dataset(str(index), data=value)
        metadata = {"format": "kgraph-archive", "format_version": FORMAT_VERSION,
                    "kgraph_version": kgraph.__version__, "endpoints": signatures,
                    "variable_collections": {k: [variable_index[id(v)] for v in vs]
                                             for k, vs in self._variable_collections.items()},
                    "assets": sorted(self._assets)}
        if self._assets:
            os.makedirs(os.path.join(root, "assets"))
            for name, source in self._assets.items():
                shutil.copyfile(source, os.path.join(root, "assets", name))
        with open(os.path.join(root, "metadata.json"), "w") as handle:
            json.dump(metadata, handle, indent=2)
        files = ["metadata.json", "variables.h5", "constants.h5"] + [
            f"endpoints/{name}.json" for name in self._endpoints] + [f"assets/{name}" for name in self._assets]
        manifest = {path: _sha256(os.path.join(root, path)) for path in files}
        with open(os.path.join(root, "manifest.json"), "w") as handle:
            json.dump(manifest, handle, indent=2)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Endpoint:
    def __init__(self, name, graph):
        self.name = name
        self.graph = graph
        self._executable = None

    def __call__(self, *inputs):
        from kgraph.compiler.passes.pipeline import compile_for_device

        if self._executable is None:
            self._executable = compile_for_device(self.graph)
        if len(inputs) != len(self.graph.inputs):
            raise ValueError(f"endpoint '{self.name}' takes {len(self.graph.inputs)} inputs, got {len(inputs)}")
        outputs = [np.array(o, copy=True) for o in self._executable(*inputs)]
        return outputs[0] if len(outputs) == 1 else outputs


class LoadedArchive:
    """An archive's endpoints as methods, plus its variables and metadata."""

    def __init__(self, metadata, endpoints, variables, assets):
        self.metadata = metadata
        self.variables = variables
        self.assets = assets  # {name: path of the file in the archive}
        self._endpoints = endpoints
        for name, endpoint in endpoints.items():
            setattr(self, name, endpoint)
        for name, indices in metadata.get("variable_collections", {}).items():
            setattr(self, name, [variables[i] for i in indices])

    @property
    def endpoint_names(self):
        return list(self._endpoints)


def _read_json(root, relative):
    path = os.path.join(root, relative)
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise ArchiveError(f"{path}: cannot read the archive file ({error})") from None


def load(filepath):
    """Load an archive written by ExportArchive.write_out / Model.export."""
    root = os.fspath(filepath)
    if not os.path.isdir(root):
        raise ArchiveError(f"{root}: not an export archive directory")
    manifest = _read_json(root, "manifest.json")
    if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
        raise ArchiveError(f"{os.path.join(root, 'manifest.json')}: not a manifest of file checksums")
    for relative, expected in manifest.items():
        path = os.path.join(root, relative)
        if not os.path.exists(path):
            raise ArchiveError(f"{path}: missing from the archive")
        if _sha256(path) != expected:
            raise ArchiveError(f"{path}: its checksum does not match the archive's manifest (the file "
                               "was modified or truncated)")
    metadata = _read_json(root, "metadata.json")
    if not isinstance(metadata, dict) or metadata.get("format") != "kgraph-archive":
        raise ArchiveError(f"{root}: metadata.json does not describe a kgraph archive")
    for name in metadata.get("assets", []):
        if not isinstance(name, str) or not name or name != os.path.basename(name) or name.startswith("."):
            raise ArchiveError(f"{root}: invalid asset name {name!r} in metadata.json")
    required = ["metadata.json", "variables.h5", "constants.h5"] + [
        f"endpoints/{name}.json" for name in metadata.get("endpoints", {})] + [
        f"assets/{name}" for name in metadata.get("assets", [])]
    unlisted = [relative for relative in required if relative not in manifest]
    if unlisted:  # a file the manifest does not vouch for could have been swapped
        raise ArchiveError(f"{root}: the manifest has no checksum for {', '.join(unlisted)}")
    with h5py.File(os.path.join(root, "variables.h5"), "r") as handle:
        variables = []
        for index in range(len(handle)):
            dataset = handle[str(index)]
            variable = Variable(np.array(dataset), trainable=bool(dataset.attrs["trainable"]),
                                name=str(dataset.attrs["path"]).split("/")[-1])
            variable.path = str(dataset.attrs["path"])
            variables.append(variable)
    with h5py.File(os.path.join(root, "constants.h5"), "r") as handle:
        constants = [np.array(handle[str(i)]) for i in range(len(handle))]
    endpoints = {}
    for name in metadata["endpoints"]:
        if not name.isidentifier():
            raise ArchiveError(f"{root}: invalid endpoint name {name!r}")
        document = _read_json(root, f"endpoints/{name}.json")
        endpoints[name] = _Endpoint(name, _rebuild(root, name, document, variables, constants))
    collections = metadata.get("variable_collections", {})
    for name, indices in collections.items():
        if not name.isidentifier() or name in endpoints or name in RESERVED or not all(
                isinstance(i, int) and 0 <= i < len(variables) for i in indices):
            raise ArchiveError(f"{root}: invalid variable collection {name!r} in metadata.json")
    assets = {name: os.path.join(root, "assets", name) for name in metadata.get("assets", [])}
    return LoadedArchive(metadata, endpoints, variables, assets)


def _rebuild(root, name, document, variables, constants, check=True):
    graph = Graph(name)

    def from_json(value):
        if isinstance(value, dict) and "__graph__" in value:  # a control-flow op's function graph
            return _rebuild(root, f"{name}.function", value["__graph__"], variables, constants, check=False)
        if isinstance(value, dict) and "__tuple__" in value:
            return tuple(from_json(v) for v in value["__tuple__"])
        return value

    ids = {}
    for entry in document["nodes"]:
        op = entry["op"]
        shape = tuple(entry["shape"])
        if op == "placeholder":
            node = graph.add_placeholder(shape, entry["dtype"], entry["name"])
        elif op == "variable":
            node = graph.variable_node(variables[entry["variable"]])
        elif op == "constant":
            node = graph.add_constant(constants[entry["constant"]])
        else:
            if op not in OPS:
                raise ArchiveError(f"{root}: endpoint '{name}' uses op '{op}', which this kgraph does not have")
            attrs = {k: from_json(v) for k, v in entry["attrs"].items()}
            node = graph.add_node(op, [ids[i] for i in entry["inputs"]], attrs, shape, entry["dtype"])
        ids[entry["id"]] = node.id
    graph.inputs = [ids[i] for i in document["inputs"]]
    graph.outputs = [ids[i] for i in document["outputs"]]
    graph.output_names = list(document["output_names"])
    if not check:
        return graph
    from kgraph.compiler.passes.shape_inference import infer_shapes

    try:
        infer_shapes(graph)
    except ValueError as error:
        raise ArchiveError(f"{root}: endpoint '{name}' is inconsistent: {error}") from None
    return graph


def export_archive(model, filepath, input_signature=None, verbose=True):
    """`model.export(path)`: an archive with one endpoint, "serve" (inference)."""
    from types import SimpleNamespace

    from kgraph.exporters.onnx import _input_specs

    specs = _input_specs(model, input_signature)
    names = model._input_names() or [f"input_{i}" for i in range(len(specs))]
    signature = [SimpleNamespace(shape=(None,) + tuple(shape), dtype=dtype, name=name)
                 for (shape, dtype), name in zip(specs, names)]
    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda *xs: model(xs[0] if len(xs) == 1 else list(xs), training=False),
                         input_signature=signature)
    archive.write_out(filepath, verbose=verbose)
    return archive
