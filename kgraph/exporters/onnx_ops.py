"""The op -> ONNX table: one entry per kgraph op, emitting the ONNX nodes of one node.

An entry is `emit(e, node, *inputs) -> name`: `e` is the exporter's Emitter (`e.op`,
`e.const`, `e.cast`, `e.shape`, `e.batch`, `e.opset`), `node` the kgraph node (attrs,
shape, dtype) and `inputs` its input Values (name, shape, dtype, payload for constants).
It returns the name of the ONNX value holding the node's result in the node's dtype.
Where ONNX has no such op, or its op computes a different formula, the entry decomposes.
"""

from __future__ import annotations

import math

import numpy as np

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
FLOATS = ("float16", "float32", "float64", "bfloat16")
SQRT_2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class OnnxExportError(ValueError):
    """A graph that cannot be written as ONNX; the message names the op."""


def _is_float(dtype):
    return str(dtype) in FLOATS


def _result_type(*dtypes):
    from kgraph.ops import result_type

    return result_type(*dtypes)


# -- elementwise -----------------------------------------------------------------------------------
def _unary(onnx_op, **onnx_attrs):
    """The ONNX op of the same name, on the input cast to the node's dtype."""
    def emit(e, node, x):
        return e.op(onnx_op, [e.cast(x, node.dtype)], **onnx_attrs)
    return emit


def _binary(onnx_op):
    def emit(e, node, a, b):
        return e.op(onnx_op, [e.cast(a, node.dtype), e.cast(b, node.dtype)])
    return emit


def _compare(onnx_op, negate=False):
    def emit(e, node, a, b):
        dtype = _result_type(a.dtype, b.dtype)
        if dtype == "bool" and onnx_op != "Equal":
            dtype = "int32"  # ONNX orders numbers only
        out = e.op(onnx_op, [e.cast(a, dtype), e.cast(b, dtype)])
        return e.op("Not", [out]) if negate else out
    return emit


def _logical(onnx_op):
    def emit(e, node, *xs):
        return e.op(onnx_op, [e.cast(x, "bool") for x in xs])
    return emit


def _floor_divide(e, node, a, b):
    a, b = e.cast(a, node.dtype), e.cast(b, node.dtype)
    if _is_float(node.dtype):
        return e.op("Floor", [e.op("Div", [a, b])])
    # Integer Div truncates; a - (a mod b) is an exact multiple of b (Mod follows b's sign).
    return e.op("Div", [e.op("Sub", [a, e.op("Mod", [a, b], fmod=0)]), b])


def _mod(e, node, a, b):
    a, b = e.cast(a, node.dtype), e.cast(b, node.dtype)
    if not _is_float(node.dtype):
        return e.op("Mod", [a, b], fmod=0)
    # C fmod has the dividend's sign; numpy's mod has the divisor's: shift by b where they differ.
    zero = e.const(0, node.dtype)
    remainder = e.op("Mod", [a, b], fmod=1)
    differ = e.op("Xor", [e.op("Less", [remainder, zero]), e.op("Less", [b, zero])])
    fix = e.op("And", [differ, e.op("Not", [e.op("Equal", [remainder, zero])])])
    return e.op("Where", [fix, e.op("Add", [remainder, b]), remainder])


def _square(e, node, x):
    x = e.cast(x, node.dtype)
    return e.op("Mul", [x, x])


def _floor(e, node, x):
    x = e.cast(x, node.dtype)
    return e.op("Floor", [x]) if _is_float(node.dtype) else x


def _expm1(e, node, x):
    """exp(x) - 1, accurate near 0 by Kahan's trick: (u - 1) * x / log(u) with u = exp(x)."""
    x = e.cast(x, node.dtype)
    u = e.op("Exp", [x])
    u_minus_1 = e.op("Sub", [u, e.const(1, node.dtype)])
    corrected = e.op("Div", [e.op("Mul", [u_minus_1, x]), e.op("Log", [u])])
    near_zero = e.op("Less", [e.op("Abs", [x]), e.const(0.5, node.dtype)])
    small = e.op("Where", [e.op("Equal", [u_minus_1, e.const(0, node.dtype)]), x, corrected])
    return e.op("Where", [near_zero, small, u_minus_1])


def _log1p(e, node, x):
    """log(1 + x), accurate near 0 by Kahan's trick: log(u) * x / (u - 1) with u = 1 + x."""
    x = e.cast(x, node.dtype)
    u = e.op("Add", [x, e.const(1, node.dtype)])
    log_u = e.op("Log", [u])
    corrected = e.op("Div", [e.op("Mul", [log_u, x]), e.op("Sub", [u, e.const(1, node.dtype)])])
    near_zero = e.op("Less", [e.op("Abs", [x]), e.const(0.5, node.dtype)])
    small = e.op("Where", [e.op("Equal", [u, e.const(1, node.dtype)]), x, corrected])
    return e.op("Where", [near_zero, small, log_u])


def _rsqrt(e, node, x):
    return e.op("Reciprocal", [e.op("Sqrt", [e.cast(x, node.dtype)])])


def _where(e, node, condition, a, b):
    return e.op("Where", [e.cast(condition, "bool"), e.cast(a, node.dtype), e.cast(b, node.dtype)])


def _cast(e, node, x):
    return e.cast(x, node.attrs["dtype"])


def _identity(e, node, x):
    return e.cast(x, node.dtype)


def _relu(e, node, x):
    x = e.cast(x, node.dtype)
    if _is_float(node.dtype) or e.opset >= 14:
        return e.op("Relu", [x])
    return e.op("Max", [x, e.const(0, node.dtype)])


def _relu6(e, node, x):
    return e.op("Clip", [e.cast(x, node.dtype), e.const(0, node.dtype), e.const(6, node.dtype)])


def _silu(e, node, x):
    x = e.cast(x, node.dtype)
    return e.op("Mul", [x, e.op("Sigmoid", [x])])


def _gelu_exact(e, node, x):
    """0.5 x (1 + erf(x / sqrt 2)) (ONNX's Gelu only arrives in opset 20)."""
    x = e.cast(x, node.dtype)
    erf = e.op("Erf", [e.op("Div", [x, e.const(SQRT_2, node.dtype)])])
    half_x = e.op("Mul", [e.const(0.5, node.dtype), x])
    return e.op("Mul", [half_x, e.op("Add", [e.const(1, node.dtype), erf])])


def _gelu_tanh(e, node, x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    x = e.cast(x, node.dtype)
    cube = e.op("Mul", [x, e.op("Mul", [x, x])])
    inner = e.op("Add", [x, e.op("Mul", [e.const(0.044715, node.dtype), cube])])
    tanh = e.op("Tanh", [e.op("Mul", [e.const(SQRT_2_OVER_PI, node.dtype), inner])])
    half_x = e.op("Mul", [e.const(0.5, node.dtype), x])
    return e.op("Mul", [half_x, e.op("Add", [e.const(1, node.dtype), tanh])])


def _elu(e, node, x):
    return e.op("Elu", [e.cast(x, node.dtype)], alpha=float(node.attrs["alpha"]))


def _leaky_relu(e, node, x):
    return e.op("LeakyRelu", [e.cast(x, node.dtype)], alpha=float(node.attrs["negative_slope"]))


def _hard_sigmoid(e, node, x):
    """Keras's relu6(x + 3) / 6 (ONNX's HardSigmoid defaults to alpha 0.2)."""
    shifted = e.op("Add", [e.cast(x, node.dtype), e.const(3, node.dtype)])
    clipped = e.op("Clip", [shifted, e.const(0, node.dtype), e.const(6, node.dtype)])
    return e.op("Div", [clipped, e.const(6, node.dtype)])


# -- reductions ------------------------------------------------------------------------------------
def _reduce(onnx_op):
    def emit(e, node, x):
        axes, keepdims = list(node.attrs["axes"]), int(bool(node.attrs["keepdims"]))
        if not axes:
            return e.cast(x, node.dtype)
        work = "int32" if node.dtype == "bool" else node.dtype  # bool max/min: any/all on ints
        value = e.cast(x, work)
        if onnx_op == "ReduceSum" or e.opset >= 18:
            out = e.op(onnx_op, [value, e.ints(axes)], keepdims=keepdims)
        else:
            out = e.op(onnx_op, [value], axes=axes, keepdims=keepdims)
        return out if work == node.dtype else e.cast_name(out, node.dtype)
    return emit


def _arg(onnx_op):
    def emit(e, node, x):
        value = e.cast(x, "int32") if x.dtype == "bool" else x.name
        index = e.op(onnx_op, [value], axis=int(node.attrs["axis"]), keepdims=int(bool(node.attrs["keepdims"])),
                     select_last_index=0)
        return e.cast_name(index, node.dtype)
    return emit


def _reduced_count(e, node, x):
    axes = node.attrs["axes"]
    dims = [x.shape[a] for a in axes]
    if None not in dims:
        return e.const(int(np.prod(dims, dtype=np.int64)), node.dtype)
    sizes = e.op("Gather", [e.op("Shape", [x.name]), e.ints(axes)], axis=0)
    count = e.op("ReduceProd", [sizes], keepdims=0)
    return e.cast_name(count, node.dtype)


# -- shape ops ---------------------------------------------------------------------------------------
def _reshape(e, node, x):
    target = [int(d) for d in node.attrs["shape"]]
    if 0 in target:
        if e.opset < 14:
            raise OnnxExportError(f"op 'reshape' (node %{node.id}) to a shape with a 0 dimension needs "
                                  "opset >= 14 (Reshape's allowzero)")
        return e.op("Reshape", [x.name, e.ints(target)], allowzero=1)
    return e.op("Reshape", [x.name, e.ints(target)])


def _transpose(e, node, x):
    return e.op("Transpose", [x.name], perm=[int(p) for p in node.attrs["perm"]])


def _broadcast_to(e, node, x):
    return e.op("Expand", [x.name, e.shape(node.attrs["shape"])])


def _concatenate(e, node, *xs):
    return e.op("Concat", [e.cast(x, node.dtype) for x in xs], axis=int(node.attrs["axis"]))


def _slice(e, node, x):
    starts, ends, axes, steps = [], [], [], []
    for axis, (begin, end, step) in enumerate(zip(node.attrs["begin"], node.attrs["end"], node.attrs["step"])):
        if begin is None and end is None and step == 1:
            continue
        forward = step > 0
        starts.append((0 if forward else INT64_MAX) if begin is None else int(begin))
        ends.append((INT64_MAX if forward else INT64_MIN) if end is None else int(end))
        axes.append(axis)
        steps.append(int(step))
    if not axes:
        return x.name
    return e.op("Slice", [x.name, e.ints(starts), e.ints(ends), e.ints(axes), e.ints(steps)])


def _zeros(e, node):
    return e.op("Expand", [e.const(0, node.dtype), e.shape(node.shape)])


def _unslice(e, node, g):
    """Zeros of `shape` with g written into the slice: per axis, flip (negative steps),
    dilate by the stride (interleave zeros), then pad to the full size. On the batch axis
    (whose size is known at run time only) zero rows are concatenated instead."""
    value, shape = g.name, list(g.shape)
    pads_low, pads_high, batch_axis = [], [], None
    attrs = node.attrs
    for axis, (dim, begin, end, step) in enumerate(zip(attrs["shape"], attrs["begin"], attrs["end"], attrs["step"])):
        if dim is None:
            pads_low.append(0)
            pads_high.append(0)
            if begin is None and end is None and step == 1:
                continue
            if step == 1 and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end:
                batch_axis = (axis, begin, end)
                continue
            raise OnnxExportError(f"op 'unslice' (node %{node.id}): slice {begin}:{end}:{step} of the "
                                  "batch dimension has no ONNX form")
        picked = range(*slice(begin, end, step).indices(dim))
        count, stride = len(picked), abs(step)
        if count == 0:
            return _zeros(e, node)
        if step < 0:
            value = e.op("Slice", [value, e.ints([-1]), e.ints([INT64_MIN]), e.ints([axis]), e.ints([-1])])
        first = min(picked[0], picked[-1])
        if stride > 1 and count > 1:
            value = _dilate(e, value, shape, axis, stride, count)
        pads_low.append(first)
        pads_high.append(dim - first - (count - 1) * stride - 1)
    if any(pads_low) or any(pads_high):
        value = e.op("Pad", [value, e.ints(pads_low + pads_high), e.const(0, node.dtype)], mode="constant")
    if batch_axis is None:
        return value
    axis, begin, end = batch_axis
    full = list(node.shape)
    rows_after = e.op("Sub", [e.batch(), e.ints([end])])
    parts = [value, e.op("Expand", [e.const(0, node.dtype), e.dims(full[:axis] + [rows_after] + full[axis + 1:])])]
    if begin:
        parts.insert(0, e.op("Expand", [e.const(0, node.dtype), e.shape(full[:axis] + [begin] + full[axis + 1:])]))
    return e.op("Concat", parts, axis=axis)


def _dilate(e, value, shape, axis, stride, count):
    """`stride - 1` zeros after each of the `count` entries along `axis` (none after the last)."""
    spread = e.op("Unsqueeze", [value, e.ints([axis + 1])])
    pads = [0] * (len(shape) + 1) * 2
    pads[len(shape) + 1 + axis + 1] = stride - 1
    spread = e.op("Pad", [spread, e.ints(pads)], mode="constant")
    merged = shape[:axis] + [count * stride] + shape[axis + 1:]
    spread = e.op("Reshape", [spread, e.shape(merged)])
    return e.op("Slice", [spread, e.ints([0]), e.ints([(count - 1) * stride + 1]), e.ints([axis])])


def _wrapped_indices(e, indices, dim, dtype=None):
    """Indices taken modulo the axis size (kgraph's take wraps), as int32 or int64."""
    dtype = dtype or (indices.dtype if indices.dtype in ("int32", "int64") else "int64")
    if indices.payload is not None and dim is not None:
        return e.const(np.asarray(indices.payload).astype(np.int64) % dim, dtype)
    size = e.const(dim, dtype) if dim is not None else e.batch_size(dtype)
    return e.op("Mod", [e.cast(indices, dtype), size], fmod=0)


def _take(e, node, x, indices):
    axis = int(node.attrs["axis"])
    return e.op("Gather", [x.name, _wrapped_indices(e, indices, x.shape[axis])], axis=axis)


def _take_grad(e, node, g, indices):
    """Upstream rows scatter-added into zeros: ScatterND(reduction="add") from opset 16,
    a one-hot matmul before."""
    axis = int(node.attrs["axis"])
    out_shape = list(node.attrs["shape"])
    size = out_shape[axis]
    rank_i = len(indices.shape)
    lead, trail = list(g.shape[:axis]), list(g.shape[axis + rank_i:])
    flat_index = e.op("Reshape", [_wrapped_indices(e, indices, size, "int64"), e.ints([-1])])
    # g as (K, lead..., trail...), K the number of indices.
    rows = e.op("Reshape", [g.name, e.dims(lead + [-1] + trail)])
    if axis:
        perm = [axis] + list(range(axis)) + list(range(axis + 1, len(lead) + 1 + len(trail)))
        rows = e.op("Transpose", [rows], perm=perm)
    moved_shape = [size] + lead + trail
    if e.opset >= 16:
        zeros = e.op("Expand", [e.const(0, node.dtype), e.shape(moved_shape)])
        index = e.op("Unsqueeze", [flat_index, e.ints([1])])
        moved = e.op("ScatterND", [zeros, index, rows], reduction="add")
    else:
        classes = e.op("Range", [e.const(0, "int64"), e.const(size, "int64"), e.const(1, "int64")])
        hits = e.op("Equal", [e.op("Unsqueeze", [flat_index, e.ints([0])]),
                              e.op("Unsqueeze", [classes, e.ints([1])])])  # (size, K)
        one_hot = e.cast_name(hits, node.dtype)
        flat_rows = e.op("Reshape", [rows, e.dims([0, -1])])
        moved = e.op("Reshape", [e.op("MatMul", [one_hot, flat_rows]), e.shape(moved_shape)])
    if axis:
        inverse = [int(i) for i in np.argsort([axis] + list(range(axis)) + list(range(axis + 1, len(out_shape))))]
        moved = e.op("Transpose", [moved], perm=inverse)
    return moved


def _pad(e, node, x):
    widths = node.attrs["pad_width"]
    pads = [int(lo) for lo, hi in widths] + [int(hi) for lo, hi in widths]
    value = e.const(node.attrs.get("constant_value", 0.0), node.dtype)
    return e.op("Pad", [x.name, e.ints(pads), value], mode="constant")


def _matmul(e, node, a, b):
    transpose_a, transpose_b = bool(node.attrs.get("transpose_a")), bool(node.attrs.get("transpose_b"))
    a_name, b_name = e.cast(a, node.dtype), e.cast(b, node.dtype)
    if len(a.shape) == 2 and len(b.shape) == 2 and _is_float(node.dtype) and (transpose_a or transpose_b):
        return e.op("Gemm", [a_name, b_name], transA=int(transpose_a), transB=int(transpose_b))
    if transpose_a:
        a_name = e.op("Transpose", [a_name], perm=_swap_last(len(a.shape)))
    if transpose_b:
        b_name = e.op("Transpose", [b_name], perm=_swap_last(len(b.shape)))
    return e.op("MatMul", [a_name, b_name])


def _swap_last(rank):
    return list(range(rank - 2)) + [rank - 1, rank - 2]


def _random(e, node, *inputs):
    raise OnnxExportError(f"op '{node.op}' (node %{node.id}): random ops have no ONNX export (ONNX's "
                          "generators draw different numbers); export the model in inference mode")


# -- convolution, pooling, upsampling -----------------------------------------------------------------
# kgraph's tensors are channels_last (N, *spatial, C) with kernels (*kernel, C // groups, F);
# ONNX's Conv, ConvTranspose and pooling ops are channels_first with (F, C // groups, *kernel)
# weights, so each entry transposes on the way in and out (onnxruntime folds the transposes
# of initializers and cancels back-to-back pairs). A negative pad (a crop) is a Slice
# before the op (ONNX pads are non-negative); gradients pad the cropped rows back with zeros.
def _channels_first(e, name, rank):
    return e.op("Transpose", [name], perm=[0, rank + 1] + list(range(1, rank + 1)))


def _channels_last(e, name, rank):
    return e.op("Transpose", [name], perm=[0] + list(range(2, rank + 2)) + [1])


def _onnx_kernel(e, w, dtype):
    """A kgraph kernel (*kernel, C // groups, F) as ONNX's (F, C // groups, *kernel)."""
    rank = len(w.shape) - 2
    return e.op("Transpose", [e.cast(w, dtype)], perm=[rank + 1, rank] + list(range(rank)))


def _crop(e, name, pads):
    """`name` (spatial axes from 2) cropped where a pad is negative; (value, non-negative pads)."""
    starts, ends, axes = [], [], []
    for axis, (lo, hi) in enumerate(pads):
        if lo < 0 or hi < 0:
            starts.append(max(-lo, 0))
            ends.append(hi if hi < 0 else INT64_MAX)
            axes.append(axis + 2)
    if axes:
        name = e.op("Slice", [name, e.ints(starts), e.ints(ends), e.ints(axes)])
    return name, _clamped(pads)


def _clamped(pads):
    return [(max(lo, 0), max(hi, 0)) for lo, hi in pads]


def _uncrop(e, name, pads, dtype):
    """The adjoint of `_crop`: zeros put back where a pad was negative."""
    if all(lo >= 0 and hi >= 0 for lo, hi in pads):
        return name
    low = [0, 0] + [max(-lo, 0) for lo, _ in pads]
    high = [0, 0] + [max(-hi, 0) for _, hi in pads]
    return e.op("Pad", [name, e.ints(low + high), e.const(0, dtype)], mode="constant")


def _cropped(spatial, pads):
    return [n + min(lo, 0) + min(hi, 0) for n, (lo, hi) in zip(spatial, pads)]


def _onnx_pads(pads):
    return [lo for lo, _ in pads] + [hi for _, hi in pads]


def _output_padding(spatial, out_spatial, kernel, strides, dilation, pads):
    """ConvTranspose's output_padding that makes its result `spatial` long: what a strided
    convolution of that length left over past its last window."""
    return [n - (s * (o - 1) + (k - 1) * d + 1 - lo - hi)
            for n, o, k, s, d, (lo, hi) in zip(spatial, out_spatial, kernel, strides, dilation, pads)]


def _conv(e, node, x, w):
    attrs, rank = node.attrs, len(x.shape) - 2
    value, pads = _crop(e, _channels_first(e, e.cast(x, node.dtype), rank), attrs["pads"])
    y = e.op("Conv", [value, _onnx_kernel(e, w, node.dtype)], kernel_shape=list(w.shape[:-2]),
             strides=list(attrs["strides"]), dilations=list(attrs["dilation"]), pads=_onnx_pads(pads),
             group=int(attrs["groups"]))
    return _channels_last(e, y, rank)


def _conv_input_grad(e, node, g, w):
    """ConvTranspose (the adjoint of Conv), its output_padding giving back the input length."""
    attrs, rank = node.attrs, len(g.shape) - 2
    kernel = list(w.shape[:-2])
    spatial = _cropped(attrs["input_shape"], attrs["pads"])
    pads = _clamped(attrs["pads"])
    y = e.op("ConvTranspose", [_channels_first(e, e.cast(g, node.dtype), rank), _onnx_kernel(e, w, node.dtype)],
             kernel_shape=kernel, strides=list(attrs["strides"]), dilations=list(attrs["dilation"]),
             pads=_onnx_pads(pads), group=int(attrs["groups"]),
             output_padding=_output_padding(spatial, g.shape[1:-1], kernel, attrs["strides"], attrs["dilation"],
                                            pads))
    return _channels_last(e, _uncrop(e, y, attrs["pads"], node.dtype), rank)


def _conv_filter_grad(e, node, x, g):
    """A Conv with the roles swapped: the input's channels as the batch, its batch as the
    channels, the upstream gradient as the kernel, strides and dilation exchanged. Groups
    stay groups: the input is laid out (C // groups, groups * N, *spatial)."""
    attrs, rank = node.attrs, len(x.shape) - 2
    groups, kernel = int(attrs["groups"]), list(attrs["kernel_size"])
    channels, spatial = x.shape[-1], list(x.shape[1:-1])
    per_group = channels // groups
    value = e.cast(x, node.dtype)
    if groups == 1:
        value = e.op("Transpose", [value], perm=[rank + 1, 0] + list(range(1, rank + 1)))
    else:
        value = e.op("Reshape", [value, e.ints([-1] + spatial + [groups, per_group])])
        value = e.op("Transpose", [value], perm=[rank + 2, rank + 1, 0] + list(range(1, rank + 1)))
        value = e.op("Reshape", [value, e.ints([per_group, -1] + spatial)])
    value, pads = _crop(e, value, attrs["pads"])
    upstream = e.op("Transpose", [e.cast(g, node.dtype)], perm=[rank + 1, 0] + list(range(1, rank + 1)))
    y = e.op("Conv", [value, upstream], kernel_shape=list(g.shape[1:-1]), strides=list(attrs["dilation"]),
             dilations=list(attrs["strides"]), pads=_onnx_pads(pads), group=groups)
    # The swapped convolution can reach taps past the kernel (when the strides leave a
    # remainder): keep the first kernel_size.
    y = e.op("Slice", [y, e.ints([0] * rank), e.ints(kernel), e.ints(list(range(2, rank + 2)))])
    return e.op("Transpose", [y], perm=list(range(2, rank + 2)) + [0, 1])


def _pool(e, node, x):
    attrs, rank = node.attrs, len(x.shape) - 2
    value, pads = _crop(e, _channels_first(e, e.cast(x, node.dtype), rank), attrs["pads"])
    window = dict(kernel_shape=list(attrs["window"]), strides=list(attrs["strides"]), pads=_onnx_pads(pads))
    if attrs["mode"] == "max":
        y = e.op("MaxPool", [value], **window)
    else:  # the average over the positions inside the input, as Keras' "same" padding counts
        y = e.op("AveragePool", [value], count_include_pad=0, **window)
    return _channels_last(e, y, rank)


def _max_pool_grad(e, node, x, g):
    """MaxPool's Indices output (the first maximum of each window, in window order, as
    kgraph routes the gradient), then the gradient scatter-added there: ScatterElements
    with reduction "add" from opset 16; before, per (image, channel) plane, a one-hot
    matrix of the indices times the gradient (overlapping windows add into one position)."""
    attrs, rank = node.attrs, len(x.shape) - 2
    value, pads = _crop(e, _channels_first(e, e.cast(x, node.dtype), rank), attrs["pads"])
    _, indices = e.op_outputs("MaxPool", [value], 2, kernel_shape=list(attrs["window"]),
                              strides=list(attrs["strides"]), pads=_onnx_pads(pads))
    upstream = _channels_first(e, e.cast(g, node.dtype), rank)
    planes = [x.shape[-1]] + _cropped(x.shape[1:-1], attrs["pads"])  # (C, *spatial) per image
    if e.opset >= 16:
        zeros = e.op("Reshape", [e.op("Expand", [e.const(0, node.dtype), e.shape([x.shape[0]] + planes)]),
                                 e.ints([-1])])
        flat = e.op("ScatterElements", [zeros, e.op("Reshape", [indices, e.ints([-1])]),
                                        e.op("Reshape", [upstream, e.ints([-1])])], axis=0, reduction="add")
    else:
        plane = int(np.prod(_cropped(x.shape[1:-1], attrs["pads"])))
        windows = int(np.prod(g.shape[1:-1]))
        local = e.op("Mod", [e.op("Reshape", [indices, e.ints([-1, windows, 1])]), e.const(plane, "int64")])
        one_hot = e.cast_name(e.op("Equal", [local, e.op("Range", [e.const(0, "int64"), e.const(plane, "int64"),
                                                                     e.const(1, "int64")])]), node.dtype)
        rows = e.op("Reshape", [upstream, e.ints([-1, 1, windows])])
        flat = e.op("MatMul", [rows, one_hot])  # (planes, 1, plane)
    dx = e.op("Reshape", [flat, e.ints([-1] + planes)])
    return _channels_last(e, _uncrop(e, dx, attrs["pads"], node.dtype), rank)


def _avg_pool_grad(e, node, g):
    """Each window's gradient divided by its count of positions inside the input (a
    constant: the sizes are static), then spread over the window: a depthwise
    ConvTranspose with a kernel of ones."""
    from kgraph.ops.pool import _valid_counts

    attrs, rank = node.attrs, len(g.shape) - 2
    spatial = _cropped(attrs["input_shape"], attrs["pads"])
    pads = _clamped(attrs["pads"])
    window, strides, channels = list(attrs["window"]), list(attrs["strides"]), g.shape[-1]
    counts = _valid_counts(dict(attrs, pads=pads), spatial, g.shape[1:-1], node.dtype)
    share = e.op("Div", [e.cast(g, node.dtype), e.const(counts, node.dtype)])
    ones = e.const(np.ones([channels, 1] + window), node.dtype)
    y = e.op("ConvTranspose", [_channels_first(e, share, rank), ones], kernel_shape=window, strides=strides,
             pads=_onnx_pads(pads), group=int(channels),
             output_padding=_output_padding(spatial, g.shape[1:-1], window, strides, [1] * rank, pads))
    return _channels_last(e, _uncrop(e, y, attrs["pads"], node.dtype), rank)


def _interpolation_matrices(node, spatial):
    """Per spatial axis, the (output, input) matrix of kgraph's upsampling weights."""
    from kgraph.ops.pool import _axis_matrix

    return [_axis_matrix(n, s, node.attrs["interpolation"], np.float64)
            for n, s in zip(spatial, node.attrs["size"])]


def _per_axis_matmul(e, name, shape, matrices, dtype):
    """`name` (N, *spatial, C) with each spatial axis a multiplied by matrices[a] (out, in)."""
    rank = len(shape) - 2
    for axis, matrix in enumerate(matrices, start=1):
        if matrix.shape[0] == matrix.shape[1] and np.array_equal(matrix, np.eye(len(matrix))):
            continue
        perm = [a for a in range(rank + 2) if a != axis] + [axis]
        moved = e.op("Transpose", [name], perm=perm)
        product = e.op("MatMul", [moved, e.const(matrix.T, dtype)])
        name = e.op("Transpose", [product], perm=[int(i) for i in np.argsort(perm)])
    return name


def _upsample(e, node, x):
    """Resize: nearest with the "asymmetric" coordinates and floor (out i reads in i // s);
    2-D bilinear with "half_pixel" coordinates, which onnxruntime clamps at the edges as
    kgraph does. Bilinear upsampling of 1 or 3 spatial axes multiplies by kgraph's
    interpolation matrices per axis."""
    attrs, rank = node.attrs, len(x.shape) - 2
    value = e.cast(x, node.dtype)
    size = [float(s) for s in attrs["size"]]
    if attrs["interpolation"] == "nearest":
        return e.op("Resize", [value, "", e.const([1.0] + size + [1.0], "float32")], mode="nearest",
                    coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if rank != 2:
        return _per_axis_matmul(e, value, x.shape, _interpolation_matrices(node, x.shape[1:-1]), node.dtype)
    y = e.op("Resize", [_channels_first(e, value, rank), "", e.const([1.0, 1.0] + size, "float32")], mode="linear",
             coordinate_transformation_mode="half_pixel")
    return _channels_last(e, y, rank)


def _upsample_grad(e, node, g):
    """The adjoint of upsample: nearest sums each block of copies (Reshape + ReduceSum);
    bilinear multiplies by the transposed interpolation matrices."""
    attrs, rank = node.attrs, len(g.shape) - 2
    value, spatial = e.cast(g, node.dtype), list(attrs["input_shape"])
    if attrs["interpolation"] == "bilinear":
        matrices = [m.T for m in _interpolation_matrices(node, spatial)]
        return _per_axis_matmul(e, value, g.shape, matrices, node.dtype)
    blocks = [-1]
    for n, s in zip(spatial, attrs["size"]):
        blocks += [n, int(s)]
    blocks.append(g.shape[-1])
    split = e.op("Reshape", [value, e.ints(blocks)])
    return e.op("ReduceSum", [split, e.ints([2 * a + 2 for a in range(rank)])], keepdims=0)


# -- the table ---------------------------------------------------------------------------------------
ONNX_OPS = {
    # arithmetic
    "add": _binary("Add"),
    "subtract": _binary("Sub"),
    "multiply": _binary("Mul"),
    "divide": _binary("Div"),
    "floor_divide": _floor_divide,
    "mod": _mod,
    "negative": _unary("Neg"),
    "power": _binary("Pow"),
    "square": _square,
    "abs": _unary("Abs"),
    "sign": _unary("Sign"),
    "floor": _floor,
    "maximum": _binary("Max"),
    "minimum": _binary("Min"),
    # exponentials and roots
    "exp": _unary("Exp"),
    "expm1": _expm1,
    "log": _unary("Log"),
    "log1p": _log1p,
    "sqrt": _unary("Sqrt"),
    "rsqrt": _rsqrt,
    "erf": _unary("Erf"),
    # comparisons and logic
    "equal": _compare("Equal"),
    "not_equal": _compare("Equal", negate=True),
    "greater": _compare("Greater"),
    "greater_equal": _compare("GreaterOrEqual"),
    "less": _compare("Less"),
    "less_equal": _compare("LessOrEqual"),
    "logical_and": _logical("And"),
    "logical_or": _logical("Or"),
    "logical_xor": _logical("Xor"),
    "logical_not": _logical("Not"),
    "where": _where,
    "cast": _cast,
    "stop_gradient": _identity,
    "custom_gradient": lambda e, node, y, *args: _identity(e, node, y),  # the identity on its first input
    # activations
    "relu": _relu,
    "relu6": _relu6,
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "sin": _unary("Sin"),
    "cos": _unary("Cos"),
    "arctan": _unary("Atan"),
    "softplus": _unary("Softplus"),
    "softsign": _unary("Softsign"),
    "silu": _silu,
    "gelu_exact": _gelu_exact,
    "gelu_tanh": _gelu_tanh,
    "elu": _elu,
    "selu": _unary("Selu", alpha=SELU_ALPHA, gamma=SELU_SCALE),
    "leaky_relu": _leaky_relu,
    "hard_sigmoid": _hard_sigmoid,
    # reductions
    "sum": _reduce("ReduceSum"),
    "mean": _reduce("ReduceMean"),
    "max": _reduce("ReduceMax"),
    "min": _reduce("ReduceMin"),
    "prod": _reduce("ReduceProd"),
    "argmax": _arg("ArgMax"),
    "argmin": _arg("ArgMin"),
    "reduced_count": _reduced_count,
    # shapes
    "reshape": _reshape,
    "transpose": _transpose,
    "broadcast_to": _broadcast_to,
    "concatenate": _concatenate,
    "slice": _slice,
    "unslice": _unslice,
    "take": _take,
    "take_grad": _take_grad,
    "pad": _pad,
    # heavy ops
    "matmul": _matmul,
    "conv": _conv,
    "conv_input_grad": _conv_input_grad,
    "conv_filter_grad": _conv_filter_grad,
    "pool": _pool,
    "max_pool_grad": _max_pool_grad,
    "avg_pool_grad": _avg_pool_grad,
    "upsample": _upsample,
    "upsample_grad": _upsample_grad,
    "random_uniform": _random,
}

# -- recurrences (kgraph/exporters/onnx_recurrent.py, unrolled over the static timesteps) --------------
from kgraph.exporters.onnx_recurrent import ONNX_RECURRENT_OPS  # noqa: E402

ONNX_OPS.update(ONNX_RECURRENT_OPS)

# -- fused attention (kgraph/exporters/onnx_attention.py, written out as MatMul, Where and Softmax) ----------
from kgraph.exporters.onnx_attention import ONNX_ATTENTION_OPS  # noqa: E402

ONNX_OPS.update(ONNX_ATTENTION_OPS)


# -- linear algebra (kgraph/ops/linalg_lapack.py): ONNX has Det, no inverse or factorization -----------
def _det_of(e, name, dtype):
    """Det of ONNX value `name`; onnxruntime has Det for float32 only, so float64 (and float16)
    matrices are computed in float32 (about 1e-7 relative, times the condition number)."""
    if dtype == "float32":
        return e.op("Det", [name])
    return e.cast_name(e.op("Det", [e.cast_name(name, "float32")]), dtype)


def _det(e, node, x):
    return _det_of(e, e.cast(x, node.dtype), node.dtype)


def _slogdet(e, node, x):
    """[sign, log|det|] from Det: it overflows where the determinant leaves the float range."""
    value = _det_of(e, e.cast(x, node.dtype), node.dtype)
    parts = [e.op("Unsqueeze", [e.op(op, [value]), e.ints([-1])]) for op in ("Sign", "Abs")]
    parts[1] = e.op("Log", [parts[1]])
    return e.op("Concat", parts, axis=-1)


def _inverse(e, node, x):
    """The adjugate over the determinant: cofactor C[i, j] = (-1)^(i+j) Det(A without row i and
    column j), all n*n minors gathered at once. O(n^5) work; meant for small matrices."""
    n, rank = x.shape[-1], len(x.shape)
    value = e.cast(x, node.dtype)
    if n == 1:
        return e.op("Reciprocal", [value])
    keep = [[r * n + c for r in range(n) if r != i for c in range(n) if c != j] for i in range(n) for j in range(n)]
    flat = e.op("Reshape", [value, e.ints([0] * (rank - 2) + [n * n])])
    minors = e.op("Gather", [flat, e.ints(np.asarray(keep).reshape(-1))], axis=rank - 2)
    minors = e.op("Reshape", [minors, e.ints([0] * (rank - 2) + [n * n, n - 1, n - 1])])
    signs = np.array([(-1.0) ** (i + j) for i in range(n) for j in range(n)])
    cofactors = e.op("Mul", [_det_of(e, minors, node.dtype), e.const(signs, node.dtype)])
    cofactors = e.op("Reshape", [cofactors, e.ints([0] * (rank - 2) + [n, n])])
    adjugate = e.op("Transpose", [cofactors], perm=list(range(rank - 2)) + [rank - 1, rank - 2])
    det = e.op("Unsqueeze", [_det_of(e, value, node.dtype), e.ints([-2, -1])])
    return e.op("Div", [adjugate, det])


def _solve(e, node, a, b):
    return e.op("MatMul", [_inverse(e, node, a), e.cast(b, node.dtype)])


ONNX_OPS.update({"det": _det, "slogdet": _slogdet, "inv": _inverse, "solve": _solve})


# -- control flow (kgraph/exporters/onnx_control.py: ONNX Loop and If with nested graphs) --------------------
from kgraph.exporters.onnx_control import ONNX_CONTROL_OPS  # noqa: E402

ONNX_OPS.update(ONNX_CONTROL_OPS)
