"""Ahead-of-time ONNX export: an inference graph (after `optimize()`) to an onnx ModelProto.

The exporter reads the IR only. It walks the graph in topological order; placeholders
become graph inputs, variables and constants become initializers, and every other node is
handed to its entry in `onnx_ops.ONNX_OPS`, which emits the ONNX nodes through an
`Emitter`. Every None dimension is the batch size and is exported as the symbolic
dimension "batch"; ops whose output shape depends on it build the shape at run time
from `Shape` of the first graph input that has it.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass

import networkx as nx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kgraph.exporters.onnx_ops import ONNX_OPS, OnnxExportError

DEFAULT_OPSET = 17
MIN_OPSET = 13
BATCH_DIM = "batch"

ONNX_DTYPES = {
    "float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE,
    "bfloat16": TensorProto.BFLOAT16, "int8": TensorProto.INT8, "int16": TensorProto.INT16,
    "int32": TensorProto.INT32, "int64": TensorProto.INT64, "uint8": TensorProto.UINT8,
    "uint16": TensorProto.UINT16, "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL,
}


def max_opset():
    """The newest default-domain opset the installed onnx package knows."""
    return onnx.defs.onnx_opset_version()


def onnx_dtype(dtype):
    try:
        return ONNX_DTYPES[str(dtype)]
    except KeyError:
        raise OnnxExportError(f"dtype '{dtype}' has no ONNX equivalent") from None


def identifier(text, fallback="value"):
    """`text` as a C identifier (what the ONNX IR asks names to be)."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", str(text)) or fallback
    return "_" + name if name[0].isdigit() else name


@dataclass(frozen=True)
class Value:
    """An ONNX value as an op entry sees it: its name, kgraph shape and dtype, and the
    numpy value when it is a constant known at export time."""

    name: str
    shape: tuple
    dtype: str
    payload: object = None


class Emitter:
    """What an op entry writes through: nodes, initializers, casts and run-time shapes."""

    def __init__(self, graph, opset):
        self.graph = graph
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self.node = None  # the kgraph node being exported (names the ONNX nodes)
        self._taken = set()
        self._constants = {}
        self._batch = None
        self._batch_source = _batch_source(graph)

    # -- names ------------------------------------------------------------------------------
    def unique(self, base):
        name = identifier(base)
        candidate, k = name, 0
        while candidate in self._taken:
            k += 1
            candidate = f"{name}_{k}"
        self._taken.add(candidate)
        return candidate

    # -- nodes and initializers ----------------------------------------------------------------
    def op(self, op_type, inputs, **attrs):
        """Append one ONNX node with one output; returns the output's name.

        Values and nodes are named after the kgraph node they come from (`matmul_18`,
        node `matmul_18_MatMul`), so KGRAPH_DUMP listings and the ONNX graph line up."""
        return self.op_outputs(op_type, inputs, 1, **attrs)[0]

    def op_outputs(self, op_type, inputs, count, **attrs):
        """Append one ONNX node with `count` outputs; returns their names."""
        origin = f"{self.node.op}_{self.node.id}" if self.node is not None else "batch"
        outputs = [self.unique(origin) for _ in range(count)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=self.unique(f"{origin}_{op_type}"),
                                           **attrs))
        return outputs

    def initializer(self, array, base):
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def const(self, value, dtype):
        """A constant initializer of `dtype` (deduplicated by content)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            self._constants[key] = self.initializer(array, f"const_{dtype}")
        return self._constants[key]

    def ints(self, values):
        """A 1-D int64 constant."""
        return self.const(np.asarray(values, np.int64).reshape(-1), "int64")

    def cast(self, value, dtype):
        """`value` (a Value) as `dtype`: its own name when it already is."""
        if value.dtype == str(dtype):
            return value.name
        if value.payload is not None:
            return self.const(np.asarray(value.payload).astype(dtype), dtype)
        return self.cast_name(value.name, dtype)

    def cast_name(self, name, dtype):
        return self.op("Cast", [name], to=onnx_dtype(dtype))

    # -- run-time shapes ------------------------------------------------------------------------
    def batch(self):
        """A 1-D int64 tensor [n]: the run-time batch size, read off a graph input."""
        if self._batch is None:
            if self._batch_source is None:
                raise OnnxExportError(f"op '{self.node.op}' (node %{self.node.id}) needs the batch size, "
                                      "but no graph input has a None dimension")
            name, axis = self._batch_source
            node, self.node = self.node, None
            self._batch = self.op("Gather", [self.op("Shape", [name]), self.ints([axis])], axis=0)
            self.node = node
        return self._batch

    def batch_size(self, dtype="int64"):
        """The run-time batch size as a scalar of `dtype`."""
        size = self.op("Reshape", [self.batch(), self.ints([])])
        return size if dtype == "int64" else self.cast_name(size, dtype)

    def dims(self, entries):
        """A 1-D int64 tensor from ints, None (the batch size) and names of 1-D int64 tensors."""
        if all(isinstance(d, (int, np.integer)) for d in entries):
            return self.ints(entries)
        parts, run = [], []
        for d in entries:
            if isinstance(d, (int, np.integer)):
                run.append(int(d))
                continue
            if run:
                parts.append(self.ints(run))
                run = []
            parts.append(self.batch() if d is None else d)
        if run:
            parts.append(self.ints(run))
        return parts[0] if len(parts) == 1 else self.op("Concat", parts, axis=0)

    def shape(self, shape):
        """A kgraph shape (None for the batch size) as a 1-D int64 tensor."""
        return self.dims(list(shape))


def emit_nodes(emitter, graph, values):
    """Emit the ONNX nodes of every node `graph`'s outputs need, into `emitter`; `values` maps
    node ids to Values (the placeholders' on entry) and gains every emitted node's."""
    needed = set(graph.outputs)
    for output in graph.outputs:
        needed |= nx.ancestors(graph.nx, output)
    for node in graph.nodes():
        if node.id not in needed or node.id in values:
            continue
        emitter.node = node
        if node.op == "placeholder":
            raise OnnxExportError(f"placeholder %{node.id} '{node.name}' is not among the graph's inputs")
        if node.op == "variable":
            array = np.asarray(node.payload.numpy()).astype(node.dtype, copy=False)
            values[node.id] = Value(emitter.initializer(array, node.name or "variable"), node.shape, node.dtype)
        elif node.op == "constant":
            array = np.asarray(node.payload).astype(node.dtype, copy=False)
            values[node.id] = Value(emitter.initializer(array, f"constant_{node.id}"), node.shape, node.dtype,
                                    payload=array)
        else:
            emit = ONNX_OPS.get(node.op)
            if emit is None:
                raise OnnxExportError(f"op '{node.op}' (node %{node.id}) has no ONNX mapping: add an entry "
                                      "to ONNX_OPS in kgraph/exporters/onnx_ops.py")
            args = [values[i] for i in node.inputs]
            values[node.id] = Value(emit(emitter, node, *args), node.shape, node.dtype)
    return values


def _batch_source(graph):
    """(input name placeholder, axis) of the first graph input with a None dimension."""
    for node_id in graph.inputs:
        node = graph.node(node_id)
        if None in node.shape:
            return node_id, node.shape.index(None)
    return None


def _value_info(name, shape, dtype):
    dims = [BATCH_DIM if d is None else int(d) for d in shape]
    return helper.make_tensor_value_info(name, onnx_dtype(dtype), dims)


def check_opset(opset):
    opset = int(opset)
    if not MIN_OPSET <= opset <= max_opset():
        raise ValueError(f"ONNX export supports opsets {MIN_OPSET} to {max_opset()} "
                         f"(the installed onnx package's newest); got opset={opset}")
    return opset


def convert(graph, opset=DEFAULT_OPSET, name=None):
    """(ModelProto, {node id: ONNX value name}) for `graph`; see `export_onnx`."""
    opset = check_opset(opset)
    states = [graph.node(v).payload.path for v in graph.state_updates
              if getattr(graph.node(v).payload, "name", None) == "rnn_state"]
    if states:
        raise OnnxExportError(f"graph '{graph.name}' has stateful recurrent layers (their states: {states}): an "
                              "ONNX graph keeps no state between runs; export the model rebuilt with "
                              "stateful=False and pass the states as initial_state inputs")
    if graph.state_updates:
        raise OnnxExportError(f"graph '{graph.name}' updates variables (it is a training graph); "
                              "export the inference graph (trace_inference_graph(model))")
    emitter = Emitter(graph, opset)
    values, inputs = {}, []
    for node_id in graph.inputs:  # input names first, so they keep the model's names
        node = graph.node(node_id)
        values[node_id] = Value(emitter.unique(node.name or "input"), node.shape, node.dtype)
        inputs.append(_value_info(values[node_id].name, node.shape, node.dtype))
    if emitter._batch_source is not None:
        source, axis = emitter._batch_source
        emitter._batch_source = (values[source].name, axis)
    output_bases = [(graph.output_names[i] if i < len(graph.output_names) and graph.output_names[i]
                     else f"output_{i}") for i in range(len(graph.outputs))]
    output_names = [emitter.unique(base) for base in output_bases]

    emit_nodes(emitter, graph, values)
    emitter.node = None
    outputs = []
    for node_id, output_name in zip(graph.outputs, output_names):
        node = graph.node(node_id)
        emitter.nodes.append(helper.make_node("Identity", [values[node_id].name], [output_name],
                                              name=emitter.unique(f"{output_name}_output")))
        outputs.append(_value_info(output_name, node.shape, node.dtype))

    onnx_graph = helper.make_graph(emitter.nodes, identifier(name or graph.name, "graph"), inputs, outputs,
                                   initializer=emitter.initializers)
    opset_imports = [helper.make_opsetid("", opset)]
    from kgraph import __version__

    model = helper.make_model(onnx_graph, opset_imports=opset_imports, producer_name="kgraph",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opset_imports))
    return model, {node_id: value.name for node_id, value in values.items()}


def export_onnx(graph, path=None, opset=DEFAULT_OPSET, name=None):
    """Convert an inference graph to an ONNX ModelProto (and write it to `path` if given).

    The graph is exported as it is: run `optimize()` on it first (as `export_model` does)
    to fold constants and drop dead nodes. Inputs and outputs keep the graph's names
    (placeholder names, `graph.output_names`) made unique C identifiers; None dimensions
    become the symbolic dimension "batch". Raises OnnxExportError naming the op when a
    node has no ONNX form.
    """
    model, _ = convert(graph, opset, name)
    onnx.checker.check_model(model)
    if path is not None:
        save(model, path)
    return model


def save(model, path):
    """Write `model` atomically: a temporary file renamed over `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".kgraph-", suffix=".onnx.tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- models -------------------------------------------------------------------------------------
def _spec(item):
    """(shape without the batch dimension, dtype) from an InputSpec-like object or a shape."""
    shape = getattr(item, "shape", item)
    dtype = getattr(item, "dtype", None) or "float32"
    if shape is None:
        raise ValueError(f"input_signature entry {item!r} has no shape")
    shape = tuple(None if d is None else int(d) for d in shape)
    if not shape:
        raise ValueError(f"input_signature entry {item!r}: an input needs a batch dimension")
    return shape[1:], str(getattr(dtype, "name", dtype))


def _input_specs(model, input_signature):
    if input_signature is not None:
        items = input_signature
        if isinstance(items, dict):
            items = [items[n] for n in (model._input_names() or sorted(items))]
        elif not isinstance(items, (list, tuple)) or (items and not isinstance(
                items[0], (list, tuple)) and not hasattr(items[0], "shape")):
            items = [items]
        return tuple(_spec(item) for item in items)
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(f'Model "{model.name}" has no defined inputs (it is subclassed or not built); '
                         "pass input_signature=[kgraph.InputSpec(shape=(None, ...), dtype=...)]")
    return tuple((tuple(t.shape[1:]), t.dtype) for t in inputs)


def trace(model, mode, x_specs, y_specs=()):
    """The model's `mode` graph ("predict", "train", ...) for inputs and targets given as
    ((shape without the batch dimension, dtype), ...), through the trainer's tracer."""
    from kgraph.trainers.data import Layout

    def arrays(specs):  # zero-row arrays: a Layout reads their trailing shapes and dtypes
        return [np.empty((0,) + tuple(shape), dtype) for shape, dtype in specs]

    return model._trace(mode, Layout(arrays(x_specs), arrays(y_specs), [None] * len(y_specs)))


def trace_inference_graph(model, input_signature=None):
    """The model's predict graph, optimized (simplified, not fused)."""
    from kgraph.compiler.passes.pipeline import optimize

    specs = _input_specs(model, input_signature)
    if not model.built:
        # Built here, not inside the trace: building creates Input placeholders, which
        # must not land in the traced graph.
        shapes = [(None,) + tuple(shape) for shape, _ in specs]
        model.build(shapes[0] if len(shapes) == 1 else shapes)
    return optimize(trace(model, "predict", specs))


def export_model(model, path=None, opset=DEFAULT_OPSET, input_signature=None):
    """Trace `model`'s inference graph and export it to ONNX; returns the ModelProto."""
    return export_onnx(trace_inference_graph(model, input_signature), path, opset, name=model.name)
