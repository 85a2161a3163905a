"""Every layer kgraph supports, exported to ONNX and run in onnxruntime against kgraph's predict.

The test is parametrized over the layer registry (every Layer subclass `kgraph.layers`
exports), not over a hand-kept list: a layer without an entry in LAYER_CASES (and not in
EXCLUDED, with its reason) fails `test_layer_exports_to_onnx`. To cover a new layer, add
`"ClassName": [case(input shapes, build)]` below: `build` takes the model's Input
tensors and returns its output(s), using the layer at least once.

Each case is one small functional model: exported at opset 17, checked by onnx's checker
and by ONNX shape inference (which must agree with kgraph's shapes), run by onnxruntime
at batch sizes 5 and 1, and compared with one `model.predict` call on those 6 rows
(batch_size=5, so kgraph runs the same two batch sizes): max abs difference <= 1e-5 in
float32.
"""

from __future__ import annotations

import inspect
import zlib
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_onnx_export import _check_inferred_shapes

import kgraph as keras
from kgraph import layers, ops
from kgraph.exporters.onnx import convert, trace_inference_graph

BATCHES = (5, 1)
MAX_ABS_DIFF = 1e-5


@dataclass(frozen=True)
class Case:
    """A model for one layer: its inputs ((shape without batch, dtype), ...) and
    `build(*inputs) -> output or [outputs]`. `high` bounds integer inputs (exclusive)."""

    inputs: tuple
    build: object
    id: str = ""
    high: int = 10


def case(inputs, build, id="", high=10):
    """A Case; `inputs` is one shape, or a list of shapes / (shape, dtype) pairs."""
    if isinstance(inputs, tuple) and all(isinstance(d, int) for d in inputs):
        inputs = [inputs]
    specs = tuple((tuple(i[0]), i[1]) if len(i) == 2 and isinstance(i[1], str) else (tuple(i), "float32")
                  for i in inputs)
    return Case(specs, build, id, high)


def layer(factory, shape, id=""):
    """The common case: one float input through `factory()`."""
    return case(shape, lambda x: factory()(x), id)


L = layers
# Layer class name -> its cases. Small shapes: each case compiles one model.
LAYER_CASES = {
    # core
    "Dense": [layer(lambda: L.Dense(3, activation="relu"), (5,)),
              layer(lambda: L.Dense(4, use_bias=False), (3, 5), "rank3")],
    "Activation": [layer(lambda name=name: L.Activation(name), (6,), name)
                   for name in ("softmax", "gelu", "swish", "hard_sigmoid", "log_softmax", "elu")],
    "Identity": [layer(L.Identity, (4,))],
    "Lambda": [layer(lambda: L.Lambda(lambda x: ops.tanh(x) * 2.0 + ops.sum(x, axis=-1, keepdims=True)), (4,))],
    "Flatten": [layer(L.Flatten, (2, 3, 2))],
    "Reshape": [layer(lambda: L.Reshape((3, -1)), (2, 3, 2))],
    "Dropout": [layer(lambda: L.Dropout(0.5), (4,))],
    # merging
    "Add": [case([(4,), (4,)], lambda a, b: L.Add()([a, b]))],
    "Subtract": [case([(4,), (4,)], lambda a, b: L.Subtract()([a, b]))],
    "Multiply": [case([(4,), (4,)], lambda a, b: L.Multiply()([a, b]))],
    "Average": [case([(4,), (4,), (4,)], lambda a, b, c: L.Average()([a, b, c]))],
    "Maximum": [case([(4,), (4,)], lambda a, b: L.Maximum()([a, b]))],
    "Minimum": [case([(4,), (4,)], lambda a, b: L.Minimum()([a, b]))],
    "Concatenate": [case([(2, 3), (2, 4)], lambda a, b: L.Concatenate()([a, b])),
                    case([(2, 3), (1, 3)], lambda a, b: L.Concatenate(axis=1)([a, b]), "axis1")],
    "Dot": [case([(3, 4), (5, 4)], lambda a, b: L.Dot(axes=2)([a, b])),
            case([(4,), (4,)], lambda a, b: L.Dot(axes=1, normalize=True)([a, b]), "normalize")],
    # activations
    "ReLU": [layer(L.ReLU, (6,)), layer(lambda: L.ReLU(max_value=1.0, negative_slope=0.1, threshold=0.2), (6,),
                                        "options")],
    "LeakyReLU": [layer(lambda: L.LeakyReLU(0.2), (6,))],
    "PReLU": [layer(lambda: L.PReLU(alpha_initializer="glorot_uniform", shared_axes=[1]), (3, 4))],
    "ELU": [layer(lambda: L.ELU(0.7), (6,))],
    "Softmax": [layer(lambda: L.Softmax(axis=1), (3, 4))],
    # embedding (integer input)
    "Embedding": [case([((3,), "int32")], lambda ids: L.Embedding(7, 4)(ids), high=7)],
    # normalization
    "BatchNormalization": [layer(lambda: L.BatchNormalization(moving_mean_initializer="random_normal",
                                                              moving_variance_initializer="ones",
                                                              gamma_initializer="random_uniform"), (4, 3))],
    "LayerNormalization": [layer(lambda: L.LayerNormalization(beta_initializer="random_normal"), (3, 6)),
                           layer(lambda: L.LayerNormalization(rms_scaling=True), (6,), "rms")],
    "GroupNormalization": [layer(lambda: L.GroupNormalization(groups=2), (3, 4))],
    "UnitNormalization": [layer(L.UnitNormalization, (5,))],
    "RMSNormalization": [layer(L.RMSNormalization, (2, 5))],
    # regularization (identities or scalings at inference)
    "SpatialDropout1D": [layer(lambda: L.SpatialDropout1D(0.5), (3, 4))],
    "SpatialDropout2D": [layer(lambda: L.SpatialDropout2D(0.5), (3, 3, 2))],
    "SpatialDropout3D": [layer(lambda: L.SpatialDropout3D(0.5), (2, 2, 2, 2))],
    "GaussianNoise": [layer(lambda: L.GaussianNoise(0.5), (4,))],
    "GaussianDropout": [layer(lambda: L.GaussianDropout(0.5), (4,))],
    "AlphaDropout": [layer(lambda: L.AlphaDropout(0.5), (4,))],
    "ActivityRegularization": [layer(lambda: L.ActivityRegularization(l1=0.1), (4,))],
    # attention
    "Attention": [case([(3, 4), (5, 4)], lambda q, v: L.Attention()([q, v])),
                  case([(3, 4), (5, 4)], lambda q, v: L.Attention(use_scale=True, score_mode="concat")([q, v]),
                       "concat")],
    "AdditiveAttention": [case([(3, 4), (5, 4)], lambda q, v: L.AdditiveAttention()([q, v]))],
    "MultiHeadAttention": [case([(3, 4), (5, 6)], lambda q, v: L.MultiHeadAttention(2, 3)(q, v))],
    "GroupedQueryAttention": [case([(3, 4), (5, 4)], lambda q, v: L.GroupQueryAttention(2, 4, 2)(
        q, v, use_causal_mask=True))],
    "EinsumDense": [layer(lambda: L.EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de"), (3, 4)),
                    layer(lambda: L.EinsumDense("...b,bc->...c", 5, activation="relu"), (4,), "ellipsis")],
    "ReversibleEmbedding": [case([((3,), "int32")], lambda ids: (lambda e: e(e(ids), reverse=True))(
        L.ReversibleEmbedding(10, 4, tie_weights=False, logit_soft_cap=2.0)))],
    # convolution
    "Conv1D": [layer(lambda: L.Conv1D(3, 3, padding="causal", dilation_rate=2), (7, 2)),
               layer(lambda: L.Conv1D(4, 2, strides=2, groups=2, activation="relu"), (7, 4), "groups")],
    "Conv2D": [layer(lambda: L.Conv2D(4, 3, padding="same", activation="relu"), (6, 5, 2)),
               layer(lambda: L.Conv2D(3, (2, 3), strides=(2, 1), dilation_rate=1, data_format="channels_first"),
                     (2, 6, 5), "channels_first")],
    "Conv3D": [layer(lambda: L.Conv3D(2, 2, padding="same", strides=2), (3, 4, 3, 2))],
    "Conv1DTranspose": [layer(lambda: L.Conv1DTranspose(3, 3, strides=2), (4, 2))],
    "Conv2DTranspose": [layer(lambda: L.Conv2DTranspose(3, 3, strides=2, padding="same"), (3, 4, 2)),
                        layer(lambda: L.Conv2DTranspose(2, 3, strides=2, output_padding=1), (3, 3, 2),
                              "output_padding"),
                        layer(lambda: L.Conv2DTranspose(2, 2, dilation_rate=2, data_format="channels_first"),
                              (2, 3, 4), "channels_first")],
    "Conv3DTranspose": [layer(lambda: L.Conv3DTranspose(2, 2, strides=(1, 2, 1)), (2, 3, 2, 2))],
    "DepthwiseConv1D": [layer(lambda: L.DepthwiseConv1D(3, depth_multiplier=2, padding="same"), (6, 3))],
    "DepthwiseConv2D": [layer(lambda: L.DepthwiseConv2D(3, strides=2), (6, 5, 3))],
    "SeparableConv1D": [layer(lambda: L.SeparableConv1D(4, 3), (6, 2))],
    "SeparableConv2D": [layer(lambda: L.SeparableConv2D(4, 3, padding="same", depth_multiplier=2), (5, 4, 2))],
    # pooling
    "MaxPooling1D": [layer(lambda: L.MaxPooling1D(2), (7, 3))],
    "MaxPooling2D": [layer(lambda: L.MaxPooling2D(), (6, 5, 2)),
                     layer(lambda: L.MaxPooling2D(3, strides=2, padding="same"), (5, 5, 2), "same")],
    "MaxPooling3D": [layer(lambda: L.MaxPooling3D(2), (4, 4, 2, 2))],
    "AveragePooling1D": [layer(lambda: L.AveragePooling1D(3, strides=1, padding="same"), (6, 2))],
    "AveragePooling2D": [layer(lambda: L.AveragePooling2D(3, strides=2, padding="same"), (5, 6, 2)),
                         layer(lambda: L.AveragePooling2D(2, data_format="channels_first"), (2, 4, 4),
                               "channels_first")],
    "AveragePooling3D": [layer(lambda: L.AveragePooling3D(2, padding="same"), (3, 4, 2, 2))],
    "AdaptiveAveragePooling1D": [layer(lambda: L.AdaptiveAveragePooling1D(3), (7, 2))],
    "AdaptiveAveragePooling2D": [layer(lambda: L.AdaptiveAveragePooling2D((2, 3)), (5, 7, 2)),
                                 layer(lambda: L.AdaptiveAveragePooling2D(2, data_format="channels_first"),
                                       (2, 4, 6), "even")],
    "AdaptiveAveragePooling3D": [layer(lambda: L.AdaptiveAveragePooling3D(2), (3, 5, 4, 2))],
    "AdaptiveMaxPooling1D": [layer(lambda: L.AdaptiveMaxPooling1D(4), (6, 3))],
    "AdaptiveMaxPooling2D": [layer(lambda: L.AdaptiveMaxPooling2D(3, data_format="channels_first"), (2, 5, 4))],
    "AdaptiveMaxPooling3D": [layer(lambda: L.AdaptiveMaxPooling3D((1, 2, 3)), (3, 3, 4, 2))],
    "GlobalMaxPooling1D": [layer(L.GlobalMaxPooling1D, (5, 3))],
    "GlobalMaxPooling2D": [layer(lambda: L.GlobalMaxPooling2D(keepdims=True), (3, 4, 2))],
    "GlobalMaxPooling3D": [layer(L.GlobalMaxPooling3D, (2, 3, 2, 2))],
    "GlobalAveragePooling1D": [layer(L.GlobalAveragePooling1D, (5, 3))],
    "GlobalAveragePooling2D": [layer(L.GlobalAveragePooling2D, (3, 4, 2))],
    "GlobalAveragePooling3D": [layer(lambda: L.GlobalAveragePooling3D(keepdims=True), (2, 3, 2, 2))],
    # reshaping
    "UpSampling1D": [layer(lambda: L.UpSampling1D(3), (4, 2))],
    "UpSampling2D": [layer(lambda: L.UpSampling2D((2, 3)), (3, 2, 2)),
                     layer(lambda: L.UpSampling2D(2, interpolation="bilinear"), (3, 4, 2), "bilinear")],
    "UpSampling3D": [layer(lambda: L.UpSampling3D((2, 1, 2)), (2, 2, 2, 2))],
    "ZeroPadding1D": [layer(lambda: L.ZeroPadding1D((1, 2)), (3, 2))],
    "ZeroPadding2D": [layer(lambda: L.ZeroPadding2D(((1, 0), (2, 1))), (3, 2, 2))],
    "ZeroPadding3D": [layer(L.ZeroPadding3D, (2, 2, 2, 1))],
    "Cropping1D": [layer(lambda: L.Cropping1D((1, 2)), (6, 2))],
    "Cropping2D": [layer(lambda: L.Cropping2D(((1, 0), (0, 2))), (4, 5, 2))],
    "Cropping3D": [layer(L.Cropping3D, (3, 4, 3, 1))],
    "Permute": [layer(lambda: L.Permute((2, 1)), (3, 4))],
    "RepeatVector": [layer(lambda: L.RepeatVector(3), (4,))],
    # recurrent (kgraph/layers/recurrent.py, wrappers.py): the time loop unrolled in ONNX
    "SimpleRNN": [layer(lambda: L.SimpleRNN(3, return_sequences=True, activation="relu"), (4, 2))],
    "LSTM": [layer(lambda: L.LSTM(3), (4, 2)),
             case((4, 2), lambda x: L.LSTM(3, return_state=True, go_backwards=True,
                                           recurrent_activation="hard_sigmoid")(x), "state_backwards")],
    "GRU": [layer(lambda: L.GRU(3, return_sequences=True), (4, 2)),
            layer(lambda: L.GRU(2, reset_after=False), (4, 2), "reset_before"),
            layer(lambda: L.GRU(3, dropout=0.2, recurrent_dropout=0.3), (4, 2), "recurrent_dropout")],
    "SimpleRNNCell": [layer(lambda: L.RNN(L.SimpleRNNCell(3)), (4, 2))],
    "LSTMCell": [layer(lambda: L.RNN(L.LSTMCell(3), return_sequences=True), (4, 2))],
    "GRUCell": [layer(lambda: L.RNN(L.GRUCell(3)), (4, 2))],
    "RNN": [layer(lambda: L.RNN(L.LSTMCell(2), return_state=True), (4, 2))],
    "StackedRNNCells": [layer(lambda: L.RNN(L.StackedRNNCells([L.GRUCell(3), L.LSTMCell(2)])), (4, 2))],
    "Masking": [case([((4,), "int32"), (4, 2)],  # steps whose id is 0 are all-zero: masked
                     lambda ids, x: L.LSTM(3)(L.Masking()(x * keras.ops.expand_dims(
                         keras.ops.cast(keras.ops.not_equal(ids, 0), "float32"), -1))), high=3)],
    "Bidirectional": [layer(lambda: L.Bidirectional(L.LSTM(2, return_sequences=True)), (4, 3)),
                      layer(lambda: L.Bidirectional(L.GRU(2), merge_mode="sum"), (4, 3), "sum")],
    "ConvLSTM1D": [layer(lambda: L.ConvLSTM1D(2, 3), (3, 5, 2))],
    "ConvLSTM2D": [layer(lambda: L.ConvLSTM2D(2, 3, padding="same", return_sequences=True), (3, 4, 4, 1))],
    "ConvLSTM3D": [layer(lambda: L.ConvLSTM3D(2, 2, go_backwards=True), (2, 3, 3, 3, 1))],
    "SpectralNormalization": [layer(lambda: L.SpectralNormalization(L.Dense(3)), (4,)),
                              layer(lambda: L.SpectralNormalization(L.Conv2D(2, 3)), (5, 5, 1))],
    "TimeDistributed": [layer(lambda: L.TimeDistributed(L.Dense(3)), (4, 2)),
                        layer(lambda: L.TimeDistributed(L.Flatten()), (3, 2, 2), "per_step")],
    # preprocessing (augmentation layers export their inference path: the identity; RandomCrop's is
    # the centre crop to the aspect ratio, resized)
    "Rescaling": [layer(lambda: L.Rescaling(1 / 255.0, offset=-0.5), (6, 7, 3))],
    "Resizing": [layer(lambda: L.Resizing(4, 9), (6, 7, 3)),
                 layer(lambda: L.Resizing(3, 4, interpolation="bicubic", antialias=True), (6, 7, 2), "bicubic"),
                 layer(lambda: L.Resizing(5, 5, interpolation="nearest", crop_to_aspect_ratio=True), (6, 7, 2),
                       "nearest_crop")],
    "CenterCrop": [layer(lambda: L.CenterCrop(3, 4), (6, 7, 2)), layer(lambda: L.CenterCrop(4, 9), (6, 7, 2), "fit")],
    "RandomFlip": [layer(lambda: L.RandomFlip(seed=1), (5, 6, 2))],
    "RandomTranslation": [layer(lambda: L.RandomTranslation(0.2, 0.3, seed=1), (5, 6, 2))],
    "RandomRotation": [layer(lambda: L.RandomRotation(0.2, seed=1), (5, 6, 2))],
    "RandomZoom": [layer(lambda: L.RandomZoom(0.2, seed=1), (5, 6, 2))],
    "RandomCrop": [layer(lambda: L.RandomCrop(3, 5, seed=1), (5, 6, 2))],
    "RandomContrast": [layer(lambda: L.RandomContrast(0.3, value_range=(-3, 3), seed=1), (5, 6, 2))],
    "RandomBrightness": [layer(lambda: L.RandomBrightness(0.3, value_range=(-3, 3), seed=1), (5, 6, 2))],
}

# Registry entries that are not layers a model computes with.
EXCLUDED = {
    "Layer": "the base class: subclasses are what models use",
    "InputLayer": "a model's input placeholder: every case above starts with one",
    "Wrapper": "the base class of wrappers: TimeDistributed, Bidirectional and SpectralNormalization have cases",
}


def registry():
    """{class name: class} for every Layer subclass kgraph.layers exports (aliases once)."""
    found = {}
    for value in vars(layers).values():
        if inspect.isclass(value) and issubclass(value, layers.Layer):
            found[value.__name__] = value
    return found


REGISTRY = registry()


def _rng(*key):
    return np.random.default_rng(zlib.crc32("/".join(str(k) for k in key).encode()))


def _session(proto):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _uses(model, cls):
    """Whether a `cls` layer is in the model: among its layers or held by one (a wrapper's
    layer, an RNN's cell, a nested model's layers), searched through the layers' attributes."""
    stack, seen = list(model.layers), set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if type(item) is cls:
            return True
        for value in vars(item).values():
            for held in (value if isinstance(value, (list, tuple)) else [value]):
                if isinstance(held, layers.Layer):
                    stack.append(held)
    return False


def _check_case(name, cls, spec, index):
    inputs = [keras.Input(shape, dtype=dtype, name=f"in{i}") for i, (shape, dtype) in enumerate(spec.inputs)]
    outputs = spec.build(*inputs)
    model = keras.Model(inputs, outputs, name=f"{name.lower()}_model")
    assert _uses(model, cls), f"case {index} of {name} does not use a {name} layer"
    graph = trace_inference_graph(model)
    proto, names = convert(graph, 17)
    onnx.checker.check_model(proto, full_check=True)
    _check_inferred_shapes(graph, proto, names)
    assert [i.name for i in proto.graph.input] == model.input_names
    session = _session(proto)
    rng = _rng(name, index)
    total = sum(BATCHES)
    feeds = [rng.integers(0, spec.high, (total,) + shape).astype(dtype) if dtype.startswith("int")
             else rng.standard_normal((total,) + shape).astype(dtype) for shape, dtype in spec.inputs]
    expected = model.predict(feeds, batch_size=BATCHES[0], verbose=0)  # kgraph at batch sizes 5 and 1
    expected = expected if isinstance(expected, list) else [expected]
    start = 0
    for n in BATCHES:
        got = session.run(None, {i.name: x[start:start + n] for i, x in zip(proto.graph.input, feeds)})
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            e = e[start:start + n]
            assert g.shape == e.shape and g.dtype == e.dtype, (name, index, n, g.shape, e.shape, g.dtype, e.dtype)
            diff = float(np.max(np.abs(g - e))) if g.size else 0.0
            assert diff <= MAX_ABS_DIFF, f"{name} case {index} ({spec.id}) at batch {n}: max abs diff {diff:.3g}"
        start += n


def test_exclusions_and_cases_name_registered_layers():
    assert set(EXCLUDED) <= set(REGISTRY), sorted(set(EXCLUDED) - set(REGISTRY))
    assert set(LAYER_CASES) <= set(REGISTRY), sorted(set(LAYER_CASES) - set(REGISTRY))
    assert not set(EXCLUDED) & set(LAYER_CASES)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_layer_exports_to_onnx(name):
    if name in EXCLUDED:
        pytest.skip(EXCLUDED[name])
    if name not in LAYER_CASES:
        pytest.fail(f"layer {name} has no ONNX export test: add a case to LAYER_CASES in "
                    "tests/test_onnx_layers.py (or to EXCLUDED, with the reason)")
    for index, spec in enumerate(LAYER_CASES[name]):
        _check_case(name, REGISTRY[name], spec, index)
