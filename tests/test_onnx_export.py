"""ONNX export: every registered op and a set of Dense models, run by onnxruntime.

Op cases come from the registry (each OpDef's `samples(rng)`), so an op registered later
is exported and checked here by construction: one-op graphs (static shapes, and the
batch dimension None where the sample allows it) are exported at several opsets, checked
by onnx's checker, shape-inferred (the inferred shapes must agree with kgraph's), run in
onnxruntime and compared with the op's numpy reference. Models are compared with
kgraph's own model.predict at two batch sizes.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_registry import KNOWN_GAPS

import kgraph as keras
from kgraph import layers, ops
from kgraph.exporters import ONNX_OPS, OnnxExportError, export, export_model, export_onnx
from kgraph.exporters.onnx import convert, max_opset, trace, trace_inference_graph
from kgraph.ir import Graph, SymbolicTensor, tracing
from kgraph.ops import OPS
from kgraph.ops.registry import OpDef, Spec, bind

OPSETS = (13, 17, max_opset())
BATCHES = (2, 5, 1)
TOLERANCE = dict(rtol=1e-5, atol=1e-5)  # float32
NOT_EXPORTABLE = {"random_uniform"}  # random streams that ONNX cannot reproduce


def _rng(*key):
    return np.random.default_rng(zlib.crc32("/".join(str(k) for k in key).encode()))


def _session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


# -- one-op graphs from the registry's samples --------------------------------------------------
# Every registered op has an ONNX_OPS entry (tests/test_registry.py's ONNX column enforces
# it) or a KNOWN_GAPS entry there saying why not; an op registered without either is listed
# here and fails test_every_op_has_a_mapping.
UNMAPPED = sorted(set(OPS) - set(ONNX_OPS) - {name for name, gaps in KNOWN_GAPS.items() if "onnx" in gaps})


def _cases():
    cases = []
    for name in sorted(set(OPS) & set(ONNX_OPS)):
        samples = OPS[name].samples(_rng(name)) if OPS[name].samples else []
        for index, (inputs, attrs) in enumerate(samples):
            cases.append(pytest.param(name, [np.asarray(x) for x in inputs], dict(attrs), id=f"{name}-{index}"))
    return cases


CASES = _cases()


def _reference(name, attrs, inputs):
    """The op's numpy reference in the dtype its infer rule promises (as bind does)."""
    _, dtype = OPS[name].infer(attrs, *[Spec(x.shape, x.dtype.name) for x in inputs])
    return np.asarray(OPS[name].reference(attrs, *inputs)).astype(dtype, copy=False)


def _with_batch(x, n):
    """`x` resized to `n` rows; rows past the sample's are scaled copies (no exact ties)."""
    taken = x[np.arange(n) % x.shape[0]]
    if x.dtype.kind == "f":
        scale = 1.0 + 0.25 * (np.arange(n) // x.shape[0])
        taken = (taken * scale.reshape((-1,) + (1,) * (x.ndim - 1))).astype(x.dtype)
    return taken


def _variants(name, inputs, attrs):
    """(placeholder shapes, [feeds per run]): the static sample, and with the batch
    dimension None (shared by the float/bool inputs of the lead input's rank and first
    dimension) where the infer rule accepts it and the reference agrees at every batch size."""
    variants = [([x.shape for x in inputs], [inputs])]
    lead = next((x for x in inputs if x.ndim and x.dtype.kind in "fb"), None)
    if lead is None:
        return variants
    batched = {i for i, x in enumerate(inputs)
               if x.ndim == lead.ndim and x.shape[0] == lead.shape[0] and x.dtype.kind in "fb"}
    shapes = [(None,) + x.shape[1:] if i in batched else x.shape for i, x in enumerate(inputs)]
    try:
        out_shape, _ = OPS[name].infer(attrs, *[Spec(s, x.dtype.name) for s, x in zip(shapes, inputs)])
        feeds = [[_with_batch(x, n) if i in batched else x for i, x in enumerate(inputs)] for n in BATCHES]
        for n, feed in zip(BATCHES, feeds):
            if _reference(name, attrs, feed).shape != tuple(n if d is None else d for d in out_shape):
                return variants
    except Exception:
        return variants
    return variants + [(shapes, feeds)]


def _one_op_graph(name, inputs, shapes, attrs):
    graph = Graph(f"{name}_graph")
    with tracing(graph):
        symbols = [SymbolicTensor(graph, graph.add_placeholder(shape, x.dtype.name, f"x{i}").id)
                   for i, (x, shape) in enumerate(zip(inputs, shapes))]
        graph.outputs = [bind(name, symbols, **attrs).node_id]
    graph.output_names = ["y"]
    return graph


def _inferred_types(model):
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {v.name: v.type.tensor_type for v in values}


def _check_inferred_shapes(graph, model, names):
    """onnx's shape inference must agree with kgraph's shapes: equal ranks, equal static
    dimensions, and a symbolic ("batch") or unknown dimension where kgraph has None."""
    types = _inferred_types(model)
    initializers = {i.name for i in model.graph.initializer}
    for node_id, name in names.items():
        if name in initializers:
            continue
        node = graph.node(node_id)
        tensor_type = types.get(name)
        assert tensor_type is not None and tensor_type.HasField("shape"), f"{name}: no inferred shape"
        dims = tensor_type.shape.dim
        assert len(dims) == len(node.shape), f"{name}: rank {len(dims)} != kgraph's {node.shape}"
        for kgraph_dim, dim in zip(node.shape, dims):
            if kgraph_dim is None:
                assert not dim.HasField("dim_value"), f"{name}: inferred {dims}, kgraph {node.shape}"
            else:
                assert dim.dim_value == kgraph_dim, f"{name}: inferred {dims}, kgraph {node.shape}"


def test_every_onnx_entry_names_an_op():
    assert sorted(set(ONNX_OPS) - set(OPS)) == []


def test_every_op_has_a_mapping():
    assert UNMAPPED == []


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name, inputs, attrs", CASES)
def test_op_matches_reference_in_onnxruntime(name, inputs, attrs, opset):
    for shapes, feeds in _variants(name, inputs, attrs):
        graph = _one_op_graph(name, inputs, shapes, attrs)
        if name in NOT_EXPORTABLE:
            with pytest.raises(OnnxExportError, match=f"'{name}'.*inference mode"):
                export_onnx(graph, opset=opset)
            return
        model, names = convert(graph, opset)
        onnx.checker.check_model(model, full_check=True)
        _check_inferred_shapes(graph, model, names)
        session = _session(model)
        for feed in feeds:
            expected = _reference(name, attrs, feed)
            (got,) = session.run(None, {f"x{i}": x for i, x in enumerate(feed)})
            assert got.dtype == expected.dtype and got.shape == expected.shape, (shapes, got.shape, expected.shape)
            if expected.dtype.kind == "f":
                np.testing.assert_allclose(got, expected, **TOLERANCE)
            else:
                np.testing.assert_array_equal(got, expected)


def test_edge_cases_of_decomposed_ops():
    """Formulas where ONNX's op differs from numpy's: signs of mod and floor_divide, expm1 and
    log1p near zero, negative-step slices and their gradient, take with wrapping indices."""
    a = np.array([-7.5, -7.0, -1.0, 0.0, 3.0, 7.5], np.float32)
    b = np.array([2.0, -2.0, 3.0, -3.0, -2.0, 2.0], np.float32)
    ia, ib = np.array([-7, 7, -1, 0, 6, 5], np.int32), np.array([2, -2, 3, -3, -4, 5], np.int32)
    tiny = np.array([-1e-7, 1e-8, 0.0, 1e-4, -0.3, 2.0, -20.0], np.float32)
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    cases = [("mod", [a, b], {}), ("mod", [ia, ib], {}), ("floor_divide", [ia, ib], {}),
             ("floor_divide", [a, b], {}), ("expm1", [tiny], {}), ("log1p", [np.abs(tiny)], {}),
             ("slice", [x], {"begin": (None, None), "end": (None, 1), "step": (-1, -2)}),
             ("unslice", [x[::-1, :1:-2]], {"shape": (4, 6), "begin": (None, None), "end": (None, 1),
                                            "step": (-1, -2)}),
             ("take", [x, np.array([[-1, 5], [9, 0]], np.int64)], {"axis": 1}),
             ("take_grad", [np.arange(12, dtype=np.float32).reshape(4, 1, 3), np.array([[1, 1, -1]], np.int32)],
              {"axis": 1, "shape": (4, 5)}),
             ("argmax", [np.array([[1.0, 3.0, 3.0]], np.float32)], {"axis": 1, "keepdims": False}),
             ("sum", [np.array([[True, False, True]])], {"axes": (1,), "keepdims": True}),
             ("max", [np.array([[True, False], [False, False]])], {"axes": (1,), "keepdims": False}),
             ("greater", [np.array([True, False]), np.array([False, False])], {}),
             ("cast", [np.array([-2.7, 2.7, 0.0], np.float32)], {"dtype": "bool"}),
             ("relu", [ia], {}), ("divide", [ia, ib], {})]
    for opset in (13, 17):
        for name, inputs, attrs in cases:
            graph = _one_op_graph(name, inputs, [x.shape for x in inputs], attrs)
            (got,) = _session(export_onnx(graph, opset=opset)).run(None, {f"x{i}": v for i, v in enumerate(inputs)})
            expected = _reference(name, attrs, inputs)
            assert got.dtype == expected.dtype, (name, opset)
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7, err_msg=f"{name} {attrs} {opset}")


def test_pooling_ties_and_upsampling_beyond_the_samples():
    """Max pooling's gradient goes to the first maximum of each window when several tie
    (onnxruntime's MaxPool indices must agree), overlapping windows add; bilinear
    upsampling of 1 and 3 spatial axes (the interpolation-matrix path) and its adjoint."""
    ties = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [3.0, 2.0, 3.0, 3.0, -1.0], [0.0, 3.0, 3.0, 1.0, 3.0]], np.float32)
    x = np.stack([ties, -ties[::-1]])[..., None].repeat(2, axis=-1)  # (2, 3, 5, 2)
    window = {"window": (2, 3), "strides": (1, 1), "pads": ((0, 1), (1, 1))}
    g = _rng("ties").standard_normal((2, 3, 5, 2)).astype(np.float32)
    rng = _rng("bilinear")
    cases = [("max_pool_grad", [x, g], window),
             ("upsample", [rng.standard_normal((2, 4, 3)).astype(np.float32)],
              {"size": (3,), "interpolation": "bilinear"}),
             ("upsample", [rng.standard_normal((1, 2, 3, 2, 2)).astype(np.float32)],
              {"size": (2, 1, 3), "interpolation": "bilinear"}),
             ("upsample_grad", [rng.standard_normal((2, 12, 3)).astype(np.float32)],
              {"size": (3,), "interpolation": "bilinear", "input_shape": (4,)}),
             ("upsample_grad", [rng.standard_normal((1, 4, 3, 6, 2)).astype(np.float32)],
              {"size": (2, 1, 3), "interpolation": "bilinear", "input_shape": (2, 3, 2)})]
    for opset in (13, 17):
        for name, inputs, attrs in cases:
            graph = _one_op_graph(name, inputs, [v.shape for v in inputs], attrs)
            model, names = convert(graph, opset)
            _check_inferred_shapes(graph, model, names)
            (got,) = _session(model).run(None, {f"x{i}": v for i, v in enumerate(inputs)})
            np.testing.assert_allclose(got, _reference(name, attrs, inputs), rtol=1e-6, atol=1e-6,
                                       err_msg=f"{name} {attrs} opset {opset}")


def test_batch_dependent_shapes_use_the_runtime_batch_size():
    """broadcast_to, reduced_count, unslice and take over the None dimension."""
    graph = Graph("dynamic")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 3), "float32", "x").id)
        row = SymbolicTensor(graph, graph.add_placeholder((1, 3), "float32", "row").id)
        outputs = [ops.broadcast_to(row, (None, 3)),
                   bind("reduced_count", [x], axes=(0, 1)),
                   bind("unslice", [ops.broadcast_to(row, (2, 3))], shape=(None, 3), begin=(1, None),
                        end=(3, None), step=(1, 1)),
                   ops.take(x, np.array([-1, 0], np.int32), axis=0),
                   ops.reshape(x, (-1, 1, 3))]
        graph.outputs = [o.node_id for o in outputs]
    graph.output_names = ["broadcast", "count", "unslice", "take", "reshaped"]
    model, names = convert(graph, 17)
    _check_inferred_shapes(graph, model, names)
    session = _session(model)
    r = np.array([[1.0, 2.0, 3.0]], np.float32)
    for n in (4, 7):
        xv = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
        broadcast, count, unslice, take, reshaped = session.run(None, {"x": xv, "row": r})
        np.testing.assert_array_equal(broadcast, np.repeat(r, n, 0))
        assert count.dtype == np.int32 and count == n * 3
        expected = np.zeros((n, 3), np.float32)
        expected[1:3] = r
        np.testing.assert_array_equal(unslice, expected)
        np.testing.assert_array_equal(take, xv[[-1, 0]])
        np.testing.assert_array_equal(reshaped, xv.reshape(-1, 1, 3))


# -- models ---------------------------------------------------------------------------------------
class TableLookup(layers.Layer):
    """Integer ids -> rows of a weight table (an integer input through `take`)."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=(11, 4), initializer="glorot_uniform", name="table")
        self.built = True

    def call(self, ids):
        return ops.take(self.table, ids, axis=0)


def _mlp():
    return keras.Sequential([keras.Input((64,), name="pixels"), layers.Dense(32, activation="relu"),
                             layers.Dropout(0.5), layers.Dense(16, activation="gelu"),
                             layers.Dense(10, activation="softmax")], name="digits_mlp")


def _two_in_two_out():
    a = keras.Input((6,), name="a")
    b = keras.Input((4,), name="b")
    ha = layers.Dense(8, activation="tanh")(a)
    hb = layers.Dense(8, activation="sigmoid")(b)
    merged = [layers.Add()([ha, hb]), layers.Subtract()([ha, hb]), layers.Multiply()([ha, hb]),
              layers.Maximum()([ha, hb]), layers.Minimum()([ha, hb]), layers.Average()([ha, hb])]
    joined = layers.Concatenate()(merged)
    shaped = layers.Flatten()(layers.Reshape((6, 8))(joined))
    shaped = layers.Dropout(0.3)(shaped)
    first = layers.Dense(3, activation="softmax", name="probs")(shaped)
    second = layers.Dense(2, name="score")(layers.Dense(5, activation="elu")(hb))
    return keras.Model([a, b], [first, second], name="two_heads")


def _int_input():
    ids = keras.Input((3,), dtype="int32", name="ids")
    rows = layers.Flatten()(TableLookup()(ids))
    return keras.Model(ids, layers.Dense(2, activation="selu")(rows), name="lookup")


def _feeds(model, n, rng):
    feeds = {}
    for tensor, name in zip(model.inputs, model.input_names):
        shape = (n,) + tuple(tensor.shape[1:])
        feeds[name] = (rng.integers(-11, 11, shape).astype(tensor.dtype) if tensor.dtype.startswith("int")
                       else rng.standard_normal(shape).astype(tensor.dtype))
    return feeds


@pytest.mark.parametrize("opset", (13, 17))
@pytest.mark.parametrize("build", [_mlp, _two_in_two_out, _int_input], ids=["mlp", "two_in_two_out", "int_input"])
def test_model_matches_predict(build, opset, tmp_path):
    model = build()
    path = tmp_path / "model.onnx"
    proto = export_model(model, path, opset=opset)
    graph = trace_inference_graph(model)
    _check_inferred_shapes(graph, *convert(graph, opset))
    assert proto.opset_import[0].version == opset
    assert [i.name for i in proto.graph.input] == model.input_names
    assert [o.name for o in proto.graph.output] == model.output_names
    assert all(i.type.tensor_type.shape.dim[0].dim_param == "batch" for i in proto.graph.input)
    onnx.checker.check_model(str(path), full_check=True)
    session = _session(onnx.load(str(path)))
    rng = _rng(build.__name__)
    for n in (1, 7):
        feeds = _feeds(model, n, rng)
        expected = model.predict([feeds[k] for k in model.input_names], verbose=0)
        expected = expected if isinstance(expected, list) else [expected]
        got = session.run(None, feeds)
        for g, e in zip(got, expected):
            assert g.shape == e.shape and g.dtype == e.dtype
            assert np.max(np.abs(g - e)) <= 1e-5


KERAS3 = Path(__file__).parent / "data" / "keras3"  # .keras files and their outputs, written by Keras 3
KERAS3_FILES = ("sequential_mlp", "functional_two_inputs", "core_layers", "nested_models", "trained_adam",
                "trained_rmsprop", "trained_sgd")


@pytest.mark.parametrize("name", KERAS3_FILES)
def test_keras_written_files_export_and_match_keras(name):
    """Keras 3's own outputs are the oracle: its .keras file, loaded by kgraph, exported and
    run by onnxruntime, gives them back (max abs difference <= 1e-5)."""
    from kgraph.saving import load_model

    model = load_model(KERAS3 / f"{name}.keras", compile=False)
    inputs = [np.load(p) for p in sorted(KERAS3.glob(f"{name}_input_*.npy"))]
    expected = [np.load(p) for p in sorted(KERAS3.glob(f"{name}_output_*.npy"))]
    proto = export_model(model)
    got = _session(proto).run(None, {i.name: x for i, x in zip(proto.graph.input, inputs)})
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and np.max(np.abs(g - e)) <= 1e-5, name


def test_export_writes_the_file_like_keras_model_export(tmp_path, capsys):
    model = _mlp()
    path = tmp_path / "sub" / "mlp.onnx"
    proto = export(model, path, format="onnx", opset_version=13)
    assert f"Saved artifact at '{path}'" in capsys.readouterr().out
    assert onnx.load(str(path)).opset_import[0].version == 13 == proto.opset_import[0].version
    assert not [p for p in path.parent.iterdir() if p.name != "mlp.onnx"]  # no temporary left
    with pytest.raises(ValueError, match="openvino"):
        export(model, tmp_path / "x", format="openvino")
    with pytest.raises(TypeError, match="unexpected"):
        export(model, tmp_path / "x.onnx", format="onnx", bogus=1)


def test_model_export_method_writes_onnx_and_the_archive(tmp_path):
    """Keras 3's spellings: model.export(path, format="onnx") and model.export(path)."""
    model = _mlp()
    x = _rng("export_method").standard_normal((3, 64)).astype("float32")
    expected = model.predict(x, verbose=0)
    model.export(tmp_path / "mlp.onnx", format="onnx", verbose=False)
    proto = onnx.load(str(tmp_path / "mlp.onnx"))
    assert proto.opset_import[0].version == 17
    (got,) = _session(proto).run(None, {"pixels": x})
    assert np.max(np.abs(got - expected)) <= 1e-5
    model.export(tmp_path / "served", verbose=False)
    reloaded = keras.export.load(tmp_path / "served")
    assert reloaded.endpoint_names == ["serve"]
    np.testing.assert_allclose(reloaded.serve(x), expected, rtol=0, atol=1e-6)


def test_subclassed_model_needs_an_input_signature(tmp_path):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.dense = layers.Dense(3, activation="relu6")

        def call(self, x):
            return ops.hard_sigmoid(self.dense(x))

    model = Subclassed()
    with pytest.raises(ValueError, match="input_signature"):
        export_model(model)
    proto = export_model(model, input_signature=[keras.InputSpec(shape=(None, 5), dtype="float32")])
    assert [i.name for i in proto.graph.input] == ["input_0"]
    x = np.random.default_rng(0).standard_normal((4, 5)).astype("float32")
    expected = model.predict(x, verbose=0)
    (got,) = _session(proto).run(None, {proto.graph.input[0].name: x})
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_names_are_unique_identifiers_and_a_graph_input_may_be_an_output():
    graph = Graph("naming")
    with tracing(graph):
        a = SymbolicTensor(graph, graph.add_placeholder((None, 2), "float32", "in put").id)
        b = SymbolicTensor(graph, graph.add_placeholder((None, 2), "float32", "in-put").id)
        total = ops.add(a, b)
        graph.outputs = [total.node_id, a.node_id, total.node_id]
    graph.output_names = ["1st", "in put", "1st"]
    proto = export_onnx(graph)
    names = [v.name for v in proto.graph.input] + [v.name for v in proto.graph.output]
    assert names == ["in_put", "in_put_1", "_1st", "in_put_2", "_1st_1"]
    x = np.ones((3, 2), np.float32)
    outs = _session(proto).run(None, {"in_put": x, "in_put_1": 2 * x})
    np.testing.assert_array_equal(outs[0], 3 * x)
    np.testing.assert_array_equal(outs[1], x)


def test_opset_outside_the_supported_range_is_refused():
    with pytest.raises(ValueError, match="opsets 13 to"):
        export_model(_mlp(), opset=12)
    with pytest.raises(ValueError, match="opsets 13 to"):
        export_model(_mlp(), opset=max_opset() + 1)


def test_an_op_without_a_mapping_names_the_op(monkeypatch):
    monkeypatch.setitem(OPS, "frobnicate", OpDef("frobnicate", "elementwise", lambda attrs, x: (x.shape, x.dtype),
                                                 lambda attrs, x: x))
    graph = Graph("fake")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 2), "float32", "x").id)
        graph.outputs = [bind("frobnicate", [ops.relu(x)]).node_id]
    with pytest.raises(OnnxExportError, match="'frobnicate'.*onnx_ops.py"):
        export_onnx(graph)


def test_training_graphs_are_refused():
    model = _mlp()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    graph = trace(model, "train", (((64,), "float32"),), (((), "int32"),))
    with pytest.raises(OnnxExportError, match="training graph"):
        export_onnx(graph)
