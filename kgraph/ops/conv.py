"""Convolution: `conv` and its two gradients, `conv_input_grad` and `conv_filter_grad`.

All three are channels_last and N-d (1, 2 or 3 spatial axes): inputs (N, *spatial, C),
kernels (*kernel_size, C // groups, F) as Keras stores them, explicit (low, high) zero
padding per spatial axis (the Keras padding names are resolved when the op is applied),
strides, dilation and groups. channels_first is a transpose on either side.

`conv_input_grad(g, w)` is the input gradient of `conv` and, as well, the forward pass
of the transposed convolution; `conv_filter_grad(x, g)` is the kernel gradient. The
three are each other's gradients, so every order of differentiation closes over them.

Numba kernels (templates below, rendered by the numba backend with every size static;
only the batch is read at run time) pick one of two strategies per shape:

- GEMM: im2col of a block of output rows that fits in L2 (a few images), then one BLAS
  GEMM per block and group; blocks are split over the threads of one parallel region
  and BLAS runs single-threaded in each. Used whenever a group has enough filters to
  fill BLAS's tiles, even for one input channel (the first layer on an image).
- direct: loops over output lines, tap by tap, with the filter dimension innermost
  (vector loops); used for depthwise convolutions (one filter or a few per group).

Forward kernels apply the fused elementwise epilogue (bias, activation) to each block of
output rows right after computing it, while it is in cache.
"""

from __future__ import annotations

import itertools

import numpy as np

from kgraph import ops
from kgraph.ops.kernels import numba_entry, numba_kernel
from kgraph.ops.registry import OpDef, bind, register

KERNEL = "kernel"

# Choice of strategy (measured on the 2-core machine, see docs/design.md).
GEMM_MIN_FILTERS = 8  # filters per group below which direct loops win
BLOCK_ELEMENTS = 1 << 17  # values of a block's patches and results (512 KiB of float32: in L2)


# -- geometry -------------------------------------------------------------------------------------
def _tuple(value, rank, name):
    if isinstance(value, (int, np.integer)):
        return (int(value),) * rank
    value = tuple(int(v) for v in value)
    if len(value) != rank:
        raise ValueError(f"{name} must have {rank} entries for a {rank}-D operation, got {value}")
    return value


def effective_size(kernel, dilation):
    return (kernel - 1) * dilation + 1


def output_length(length, kernel, stride, dilation, pad):
    if length is None:
        return None
    return (length + pad[0] + pad[1] - effective_size(kernel, dilation)) // stride + 1


def resolve_padding(padding, spatial, kernel, strides, dilation):
    """Explicit ((low, high), ...) zero padding for Keras' "valid" / "same" / "causal"."""
    if not isinstance(padding, str):
        return tuple((int(lo), int(hi)) for lo, hi in padding)
    mode = padding.lower()
    pads = []
    for length, k, s, d in zip(spatial, kernel, strides, dilation):
        size = effective_size(k, d)
        if mode == "valid":
            pads.append((0, 0))
        elif mode == "same":
            if length is None:
                raise ValueError('padding="same" needs the spatial dimensions to be known')
            out = -(-length // s)
            total = max((out - 1) * s + size - length, 0)
            pads.append((total // 2, total - total // 2))
        elif mode == "causal":
            pads.append((size - 1, 0))
        else:
            raise ValueError(f'padding must be "valid", "same" or "causal", got {padding!r}')
    return tuple(pads)


def _check_geometry(op, attrs, rank):
    for key in ("strides", "dilation", "pads"):
        if len(attrs[key]) != rank:
            raise ValueError(f"{op}: {key} has {len(attrs[key])} entries for {rank} spatial axes")
    if any(s < 1 for s in attrs["strides"]) or any(d < 1 for d in attrs["dilation"]):
        raise ValueError(f"{op}: strides and dilation must be positive, got {attrs['strides']} "
                         f"and {attrs['dilation']}")


def _conv_output_spatial(op, spatial, kernel, attrs):
    out = tuple(output_length(n, k, s, d, p) for n, k, s, d, p in
                zip(spatial, kernel, attrs["strides"], attrs["dilation"], attrs["pads"]))
    if any(o is not None and o < 1 for o in out):
        raise ValueError(f"{op}: the kernel {tuple(kernel)} (dilation {attrs['dilation']}) does not fit the "
                         f"input's spatial shape {tuple(spatial)} with padding {attrs['pads']}: the output "
                         f"would have shape {out}. Use a smaller kernel or padding=\"same\".")
    return out


# -- shape rules ------------------------------------------------------------------------------------
def _conv_infer(attrs, x, w):
    rank = len(x.shape) - 2
    if rank < 1 or len(w.shape) != rank + 2:
        raise ValueError(f"conv: expected an input of rank 3 to 5 and a kernel of the same rank, got "
                         f"input {x.shape} and kernel {w.shape}")
    _check_geometry("conv", attrs, rank)
    groups = attrs["groups"]
    channels, per_group, filters = x.shape[-1], w.shape[-2], w.shape[-1]
    if channels is not None and channels != per_group * groups:
        raise ValueError(f"conv: the input has {channels} channels but the kernel {w.shape} expects "
                         f"{per_group} per group x {groups} groups")
    if filters % groups:
        raise ValueError(f"conv: {filters} filters do not divide into {groups} groups")
    out = _conv_output_spatial("conv", x.shape[1:-1], w.shape[:-2], attrs)
    return (x.shape[0],) + out + (filters,), ops.result_type(x.dtype, w.dtype)


def _input_grad_infer(attrs, g, w):
    rank = len(g.shape) - 2
    _check_geometry("conv_input_grad", attrs, rank)
    spatial = tuple(attrs["input_shape"])
    expected = _conv_output_spatial("conv_input_grad", spatial, w.shape[:-2], attrs)
    if tuple(g.shape[1:-1]) != expected or g.shape[-1] != w.shape[-1]:
        raise ValueError(f"conv_input_grad: the gradient {g.shape} does not match a convolution of an input "
                         f"of spatial shape {spatial} with the kernel {w.shape} (expected spatial {expected} "
                         f"and {w.shape[-1]} channels)")
    return (g.shape[0],) + spatial + (w.shape[-2] * attrs["groups"],), ops.result_type(g.dtype, w.dtype)


def _filter_grad_infer(attrs, x, g):
    rank = len(x.shape) - 2
    _check_geometry("conv_filter_grad", attrs, rank)
    kernel = tuple(attrs["kernel_size"])
    expected = _conv_output_spatial("conv_filter_grad", x.shape[1:-1], kernel, attrs)
    if tuple(g.shape[1:-1]) != expected:
        raise ValueError(f"conv_filter_grad: the gradient {g.shape} does not match a convolution of {x.shape} "
                         f"with a kernel of size {kernel} (expected spatial {expected})")
    groups = attrs["groups"]
    if x.shape[-1] % groups or g.shape[-1] % groups:
        raise ValueError(f"conv_filter_grad: channels {x.shape[-1]} and filters {g.shape[-1]} must divide "
                         f"into {groups} groups")
    return kernel + (x.shape[-1] // groups, g.shape[-1]), ops.result_type(x.dtype, g.dtype)


# -- numpy references ---------------------------------------------------------------------------------
def _pad_crop(x, pads):
    """x (N, *spatial, C) zero-padded by (low, high) per axis; a negative pad crops."""
    widths = [(0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in pads] + [(0, 0)]
    padded = np.pad(x, widths)
    index = [slice(None)] + [slice(max(-lo, 0), padded.shape[a + 1] - max(-hi, 0))
                             for a, (lo, hi) in enumerate(pads)] + [slice(None)]
    return padded[tuple(index)]


def _tap_slices(kernel_index, attrs, out_spatial):
    return tuple(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, s, o in
                 zip(kernel_index, attrs["dilation"], attrs["strides"], out_spatial))


def _conv_reference(attrs, x, w):
    groups = attrs["groups"]
    xp = _pad_crop(x, attrs["pads"])
    out_spatial = _conv_output_spatial("conv", x.shape[1:-1], w.shape[:-2], attrs)
    per_group, filters = w.shape[-2], w.shape[-1]
    per_filter = filters // groups
    dtype = np.result_type(x, w)
    out = np.zeros((x.shape[0],) + out_spatial + (filters,), dtype)
    for tap in itertools.product(*(range(k) for k in w.shape[:-2])):
        patch = xp[(slice(None),) + _tap_slices(tap, attrs, out_spatial)]
        for g in range(groups):
            out[..., g * per_filter:(g + 1) * per_filter] += (
                patch[..., g * per_group:(g + 1) * per_group] @ w[tap][:, g * per_filter:(g + 1) * per_filter])
    return out


def _input_grad_reference(attrs, g, w):
    groups = attrs["groups"]
    spatial = tuple(attrs["input_shape"])
    pads = attrs["pads"]
    per_group, filters = w.shape[-2], w.shape[-1]
    per_filter = filters // groups
    padded = tuple(n + max(lo, 0) + max(hi, 0) for n, (lo, hi) in zip(spatial, pads))
    dtype = np.result_type(g, w)
    dxp = np.zeros((g.shape[0],) + padded + (per_group * groups,), dtype)
    # Crop offsets of a negative pad shift the taps (see _pad_crop).
    shift = tuple(max(-lo, 0) for lo, _ in pads)
    out_spatial = g.shape[1:-1]
    for tap in itertools.product(*(range(k) for k in w.shape[:-2])):
        index = tuple(slice(sl.start + c, sl.stop + c, sl.step)
                      for sl, c in zip(_tap_slices(tap, attrs, out_spatial), shift))
        for k in range(groups):
            dxp[(slice(None),) + index + (slice(k * per_group, (k + 1) * per_group),)] += (
                g[..., k * per_filter:(k + 1) * per_filter] @ w[tap][:, k * per_filter:(k + 1) * per_filter].T)
    crop = tuple(slice(max(lo, 0), max(lo, 0) + n) for n, (lo, _) in zip(spatial, pads))
    return dxp[(slice(None),) + crop]


def _filter_grad_reference(attrs, x, g):
    groups = attrs["groups"]
    kernel = tuple(attrs["kernel_size"])
    xp = _pad_crop(x, attrs["pads"])
    channels, filters = x.shape[-1], g.shape[-1]
    per_group, per_filter = channels // groups, filters // groups
    out_spatial = g.shape[1:-1]
    dtype = np.result_type(x, g)
    out = np.zeros(kernel + (per_group, filters), dtype)
    g2 = g.reshape(-1, filters)
    for tap in itertools.product(*(range(k) for k in kernel)):
        patch = xp[(slice(None),) + _tap_slices(tap, attrs, out_spatial)].reshape(-1, channels)
        for k in range(groups):
            out[tap][:, k * per_filter:(k + 1) * per_filter] = (
                patch[:, k * per_group:(k + 1) * per_group].T @ g2[:, k * per_filter:(k + 1) * per_filter])
    return out


# -- gradients ------------------------------------------------------------------------------------------
def _geometry_attrs(attrs):
    return {k: attrs[k] for k in ("strides", "dilation", "pads", "groups")}


def _spatial(shape):
    return tuple(shape[1:-1])


def _conv_grad(ctx):
    x, w = ctx.inputs
    geometry = _geometry_attrs(ctx.attrs)
    return [bind("conv_input_grad", [ctx.upstream, w], input_shape=_spatial(x.shape), **geometry),
            bind("conv_filter_grad", [x, ctx.upstream], kernel_size=tuple(w.shape[:-2]), **geometry)]


def _input_grad_grad(ctx):
    g, w = ctx.inputs
    geometry = _geometry_attrs(ctx.attrs)
    return [bind("conv", [ctx.upstream, w], **geometry),
            bind("conv_filter_grad", [ctx.upstream, g], kernel_size=tuple(w.shape[:-2]), **geometry)]


def _filter_grad_grad(ctx):
    x, g = ctx.inputs
    geometry = _geometry_attrs(ctx.attrs)
    return [bind("conv_input_grad", [g, ctx.upstream], input_shape=_spatial(x.shape), **geometry),
            bind("conv", [x, ctx.upstream], **geometry)]


# -- samples (test cases) --------------------------------------------------------------------------------
def _geometry(rank, strides=1, dilation=1, pads=0, groups=1):
    pads = ((pads, pads),) * rank if isinstance(pads, int) else tuple(pads)
    return {"strides": _tuple(strides, rank, "strides"), "dilation": _tuple(dilation, rank, "dilation"),
            "pads": pads, "groups": groups}


# (input shape, kernel shape, geometry): every strategy, stride, padding, dilation and grouping.
# Batch 2 and kernels whose first axis is not 2 (the tests batch inputs by their first axis).
SAMPLE_CONFIGS = [
    ((2, 6, 5, 3), (3, 3, 3, 4), _geometry(2)),  # direct: few channels
    ((2, 7, 6, 8), (3, 3, 8, 16), _geometry(2, pads=((1, 1), (0, 1)))),  # GEMM, "same"-like padding
    ((2, 7, 7, 4), (3, 3, 4, 8), _geometry(2, strides=2, pads=((1, 1), (1, 1)))),  # GEMM, strides
    ((2, 8, 7, 5), (3, 3, 5, 3), _geometry(2, dilation=(2, 1), pads=((2, 2), (1, 1)))),  # direct, dilation
    ((2, 5, 6, 8), (3, 3, 2, 8), _geometry(2, groups=4)),  # grouped, direct
    ((2, 5, 5, 16), (3, 3, 8, 16), _geometry(2, groups=2, strides=(1, 2))),  # grouped, GEMM
    ((2, 6, 6, 4), (3, 3, 1, 8), _geometry(2, groups=4, pads=1)),  # depthwise, multiplier 2
    ((2, 6, 5, 6), (3, 3, 1, 6), _geometry(2, groups=6, strides=2)),  # depthwise, multiplier 1
    ((2, 9, 4), (3, 4, 8), _geometry(1, pads=((2, 0),))),  # 1-D, causal
    ((2, 4, 5, 4, 4), (3, 3, 3, 4, 8), _geometry(3, pads=((1, 1), (1, 1), (0, 0)))),  # 3-D, GEMM
    ((2, 5, 4, 4, 2), (3, 1, 3, 2, 3), _geometry(3, strides=(2, 1, 1))),  # 3-D, direct
    ((2, 5, 5, 8), (1, 1, 8, 8), _geometry(2)),  # pointwise: GEMM without im2col
    ((2, 7, 6, 4), (3, 3, 4, 8), _geometry(2, strides=3, pads=((1, 0), (0, -1)))),  # gaps, cropping pad
]


def _draw(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def _conv_samples(rng):
    return [([_draw(rng, x), _draw(rng, w)], dict(geometry)) for x, w, geometry in SAMPLE_CONFIGS]


def _input_grad_samples(rng):
    cases = []
    for x, w, geometry in SAMPLE_CONFIGS:
        attrs = dict(geometry, input_shape=x[1:-1])
        out = _conv_output_spatial("conv", x[1:-1], w[:-2], attrs)
        cases.append(([_draw(rng, (x[0],) + out + (w[-1],)), _draw(rng, w)], attrs))
    return cases


def _filter_grad_samples(rng):
    cases = []
    for x, w, geometry in SAMPLE_CONFIGS:
        attrs = dict(geometry, kernel_size=w[:-2])
        out = _conv_output_spatial("conv", x[1:-1], w[:-2], attrs)
        cases.append(([_draw(rng, x), _draw(rng, (x[0],) + out + (w[-1],))], attrs))
    return cases


# -- numba kernels (generic over sizes; compiled once by kgraph.compiler.lower.numba.kernels) --------
# Every kernel sees 5-D arrays: (N, D, H, W, C) inputs and (KD, KH, KW, C/groups, F) kernels, 1-D
# and 2-D convolutions having leading spatial axes of size 1. `geo` holds the sizes:
# (D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, groups, block rows, threads).
# The names gemm, blas_get_threads and blas_set_threads come from the backend (numba/blas.py).
# Epilogue: `bias` (F values, or none) and `act` (0: none, 1: relu) applied to each finished block.
# Inner loops index views from 0 with their loop variable: an index numba cannot prove
# non-negative gets a wraparound test, which turns a vector copy into gathers and scatters
# (im2col ran 5x slower that way).

# Provided by the backend when it loads the kernels (kgraph.compiler.lower.numba.kernels.load);
# as plain Python (prange = range) the kernels run unchanged, slowly, for debugging.
gemm = blas_get_threads = blas_set_threads = array_at = None
prange = range


def denormals_off():
    """Flush denormals in this thread (the backend's version; plain Python leaves them)."""
    return 0


def denormals_restore(state):
    pass


def fetch_add(counter, value):
    """counter[0] += value, returning the old value (the backend's version is atomic)."""
    old = counter[0]
    counter[0] += value
    return old


def _canonical(values, fill=1):
    """Spatial values padded on the left to 3 axes (1-D and 2-D run as 3-D)."""
    return (fill,) * (3 - len(values)) + tuple(values)


def conv_geometry(attrs, x_spatial, kernel, out_spatial, channels_per_group, threads, filters=0):
    """The `geo` tuple of a convolution. A block of rows holds its patches and its results
    in BLOCK_ELEMENTS values, so both stay in L2 between im2col, GEMM and the epilogue."""
    taps = int(np.prod(kernel))
    rows = max(1, min(BLOCK_ELEMENTS // max(taps * channels_per_group + filters, 1), 4096))
    pads = _canonical([lo for lo, _ in attrs["pads"]], 0)
    return (_canonical(x_spatial) + _canonical(kernel) + _canonical(out_spatial) + _canonical(attrs["strides"])
            + _canonical(attrs["dilation"]) + pads + (attrs["groups"], rows, threads))


def _use_gemm(channels_per_group, filters_per_group):
    """GEMM unless a group has too few filters to fill BLAS's tiles (depthwise convolutions).
    Measured (single thread, 28x28x1 -> 32 filters, batch 128): GEMM 2.8 ms forward and 3.5 ms
    kernel gradient, direct loops 6.5 and 5.1, once im2col settles bounds per line segment."""
    return filters_per_group >= GEMM_MIN_FILTERS


@numba_kernel()
def _bias_act(O, r0, r1, bias, act):
    """Epilogue on rows r0..r1 of O (rows, F): add `bias` (if it has F values), then relu (act 1)."""
    F = O.shape[1]
    with_bias = bias.shape[0] == F
    if not with_bias and act == 0:
        return
    for r in range(r0, r1):
        row = O[r]
        if with_bias:
            for f in range(F):
                row[f] += bias[f]
        if act == 1:
            for f in range(F):
                if row[f] < 0:
                    row[f] = 0


@numba_kernel()
def _tap_range(first, last, stride, offset, length):
    """The sub-range of output positions first..last whose input position
    o * stride + offset falls in 0..length."""
    while first < last and first * stride + offset < 0:
        first += 1
    while last > first and (last - 1) * stride + offset >= length:
        last -= 1
    return first, last


@numba_kernel()
def _im2col(x, geo, r0, r1, c0, cols):
    """cols[i] = the patch (taps x channels c0..c0+Cg) of output row r0 + i; zeros in the padding.

    Rows are taken a line segment at a time (consecutive ow of one (n, od, oh)), tap by
    tap, so the bounds are settled once per tap and segment, not per element."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    Cg = x.shape[4] // G
    r = r0
    while r < r1:
        line = r // OW
        ow0 = r % OW
        end = min(r1, (line + 1) * OW)
        ow1 = ow0 + end - r
        nn = line // (OD * OH)
        od = (line // OH) % OD
        oh = line % OH
        base = r - r0 - ow0  # cols row of position ow is base + ow
        # Ungrouped with unit dilation along W, the KW taps of one (kd, kh) are KW * C
        # consecutive values of x: positions whose taps all fall inside copy one run.
        run_first, run_last = _tap_range(ow0, ow1, SW, -PW, W - KW + 1) if G == 1 and DW == 1 else (ow0, ow0)
        k = 0
        for kd in range(KD):
            id_ = od * SD + kd * DD - PD
            for kh in range(KH):
                ih_ = oh * SH + kh * DH - PH
                inside = 0 <= id_ < D and 0 <= ih_ < H
                if inside and run_first < run_last:
                    flat = x[nn, id_, ih_].reshape(-1)
                    run = KW * Cg
                    for ow in range(run_first, run_last):
                        start = (ow * SW - PW) * Cg
                        dst = cols[base + ow, k:k + run]
                        src = flat[start:start + run]
                        for j in range(run):  # (indices from 0: no wraparound test, a vector copy)
                            dst[j] = src[j]
                    if run_first == ow0 and run_last == ow1:  # the runs copied every position
                        k += KW * Cg
                        continue
                    lo_part, hi_part = (ow0, run_first), (run_last, ow1)
                else:
                    lo_part, hi_part = (ow0, ow1), (ow1, ow1)
                for kw in range(KW):
                    offset = kw * DW - PW
                    for part in (lo_part, hi_part):  # the positions the run did not copy
                        p0, p1 = part
                        first, last = _tap_range(p0, p1, SW, offset, W) if inside else (p0, p0)
                        for ow in range(p0, first):
                            dst = cols[base + ow, k:k + Cg]
                            for c in range(Cg):
                                dst[c] = 0
                        if first < last:
                            xline = x[nn, id_, ih_]
                            if Cg == 1:
                                for ow in range(first, last):
                                    cols[base + ow, k] = xline[ow * SW + offset, c0]
                            else:
                                for ow in range(first, last):
                                    src = xline[ow * SW + offset, c0:c0 + Cg]
                                    dst = cols[base + ow, k:k + Cg]
                                    for c in range(Cg):
                                        dst[c] = src[c]
                        for ow in range(last, p1):
                            dst = cols[base + ow, k:k + Cg]
                            for c in range(Cg):
                                dst[c] = 0
                    k += Cg
        r = end


@numba_kernel()
def _zero_images_from(dx, P, r0, r1):
    """Zero the images of dx whose first output row (of P per image) is in r0..r1, right
    before the rows that add into them (so each image is zeroed while it stays in cache)."""
    image = dx.shape[1] * dx.shape[2] * dx.shape[3] * dx.shape[4]
    flat = dx.reshape(-1)
    for nn in range((r0 + P - 1) // P, (r1 + P - 1) // P):
        zeros = flat[nn * image:(nn + 1) * image]
        for k in range(image):
            zeros[k] = 0


@numba_kernel()
def _col2im(dx, geo, r0, r1, c0, cols):
    """The adjoint of _im2col: adds cols[i] into the input positions of output row r0 + i."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    Cg = dx.shape[4] // G
    r = r0
    while r < r1:
        line = r // OW
        ow0 = r % OW
        end = min(r1, (line + 1) * OW)
        ow1 = ow0 + end - r
        nn = line // (OD * OH)
        od = (line // OH) % OD
        oh = line % OH
        base = r - r0 - ow0
        run_first, run_last = _tap_range(ow0, ow1, SW, -PW, W - KW + 1) if G == 1 and DW == 1 else (ow0, ow0)
        k = 0
        for kd in range(KD):
            id_ = od * SD + kd * DD - PD
            for kh in range(KH):
                ih_ = oh * SH + kh * DH - PH
                if 0 <= id_ < D and 0 <= ih_ < H:
                    xline = dx[nn, id_, ih_]
                    flat = xline.reshape(-1)
                    run = KW * Cg
                    for ow in range(run_first, run_last):  # all KW taps inside: one run (see _im2col)
                        start = (ow * SW - PW) * Cg
                        dst = flat[start:start + run]
                        src = cols[base + ow, k:k + run]
                        for j in range(run):
                            dst[j] += src[j]
                    for kw in range(KW):
                        offset = kw * DW - PW
                        first, last = _tap_range(ow0, ow1, SW, offset, W)
                        for ow in range(first, last):
                            if run_first <= ow < run_last:
                                continue
                            dst = xline[ow * SW + offset, c0:c0 + Cg]
                            src = cols[base + ow, k:k + Cg]
                            for c in range(Cg):
                                dst[c] += src[c]
                        k += Cg
                else:
                    k += KW * Cg
        r = end


def _is_pointwise(geo):
    """A 1x1 convolution with stride 1 and no padding: its patches are the input rows."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    return (KD * KH * KW == 1 and SD == 1 and SH == 1 and SW == 1 and PD == 0 and PH == 0 and PW == 0
            and D == OD and H == OH and W == OW)


@numba_kernel()
def _forward_gemm(x, w, O, geo, counter, blocks, bias, act, pointwise):
    """Blocks of ROWS output rows, claimed one at a time from `counter`: im2col, then GEMM."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    C, F = x.shape[4], w.shape[4]
    Cg, Fg = C // G, F // G
    K = KD * KH * KW * Cg
    M = O.shape[0]
    size = x.itemsize
    cols = np.empty((1 if pointwise else ROWS, K), x.dtype)
    xp, wp, op = x.ctypes.data, w.ctypes.data, O.ctypes.data
    while True:
        b = fetch_add(counter, 1)
        if b >= blocks:
            break
        r0 = b * ROWS
        r1 = min(r0 + ROWS, M)
        for g in range(G):
            if pointwise:
                gemm(False, False, r1 - r0, Fg, Cg, xp + (r0 * C + g * Cg) * size, C, wp + g * Fg * size, F,
                     op + (r0 * F + g * Fg) * size, F, 0.0, size)
            else:
                _im2col(x, geo, r0, r1, g * Cg, cols)
                gemm(False, False, r1 - r0, Fg, K, cols.ctypes.data, K, wp + g * Fg * size, F,
                     op + (r0 * F + g * Fg) * size, F, 0.0, size)
        _bias_act(O, r0, r1, bias, act)


@numba_kernel(fastmath={"contract"})
def _forward_direct(x, w, O, geo, counter, lines, bias, act):
    """Output lines (a line: the OW positions of one (n, od, oh)) claimed from `counter`, tap by
    tap: each tap's filters stay in cache while it sweeps the line (filters innermost: vector loops)."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    C, F = x.shape[4], w.shape[4]
    Cg, Fg = C // G, F // G
    while True:
        line = fetch_add(counter, 1)
        if line >= lines:
            break
        nn = line // (OD * OH)
        od = (line // OH) % OD
        oh = line % OH
        r0 = line * OW
        for r in range(r0, r0 + OW):
            orow = O[r]
            for f in range(F):
                orow[f] = 0
        for kd in range(KD):
            id_ = od * SD + kd * DD - PD
            if id_ < 0 or id_ >= D:
                continue
            for kh in range(KH):
                ih_ = oh * SH + kh * DH - PH
                if ih_ < 0 or ih_ >= H:
                    continue
                xline = x[nn, id_, ih_]
                for kw in range(KW):
                    wt = w[kd, kh, kw]
                    for ow in range(OW):
                        iw_ = ow * SW + kw * DW - PW
                        if iw_ < 0 or iw_ >= W:
                            continue
                        xr = xline[iw_]
                        orow = O[r0 + ow]
                        if G == 1:
                            for ci in range(C):
                                xv = xr[ci]
                                wrow = wt[ci]
                                for f in range(F):
                                    orow[f] += xv * wrow[f]
                        elif Cg == 1 and Fg == 1:
                            wrow = wt[0]
                            for c in range(C):
                                orow[c] += xr[c] * wrow[c]
                        else:
                            for g in range(G):
                                for ci in range(Cg):
                                    xv = xr[g * Cg + ci]
                                    wrow = wt[ci]
                                    for f in range(g * Fg, (g + 1) * Fg):
                                        orow[f] += xv * wrow[f]
        _bias_act(O, r0, r0 + OW, bias, act)


@numba_kernel(parallel=True)
def conv_forward_kernel(x, w, out, geo, bias, act, use_gemm, pointwise):
    """out = conv(x, w) (+ bias, relu): blocks of output rows (or lines) shared by the threads."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    n = x.shape[0]
    F = w.shape[4]
    M = n * OD * OH * OW
    if M == 0:
        return
    O = out.reshape((M, F))
    blocks = (M + ROWS - 1) // ROWS if use_gemm else n * OD * OH
    nt = max(1, min(NT, blocks))
    counter = np.zeros(1, np.int64)
    saved = blas_get_threads()
    blas_set_threads(1)  # one BLAS thread per caller inside the parallel region
    for _ in prange(nt):
        fp_state = denormals_off()  # (each worker thread flushes denormals too)
        if use_gemm:
            _forward_gemm(x, w, O, geo, counter, blocks, bias, act, pointwise)
        else:
            _forward_direct(x, w, O, geo, counter, blocks, bias, act)
        denormals_restore(fp_state)
    blas_set_threads(saved)


@numba_kernel(fastmath={"reassoc", "contract"})
def _input_grad_images(g, w, dx, geo, counter, bias, act, use_gemm, pointwise):
    """dx image by image (claimed from `counter`), each zeroed just before its rows add into it."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    C, F = dx.shape[4], w.shape[4]
    K = KD * KH * KW * (C // G)
    P = OD * OH * OW
    n = dx.shape[0]
    Gm = g.reshape((n * P, F))
    X2 = dx.reshape((n * D * H * W, C))
    size = dx.itemsize
    cols = np.empty((1 if pointwise or not use_gemm else ROWS, K), dx.dtype)
    gp, wp, dp = Gm.ctypes.data, w.ctypes.data, dx.ctypes.data
    while True:
        image = fetch_add(counter, 1)
        if image >= n:
            break
        if not (pointwise and use_gemm):  # (a pointwise GEMM writes every value)
            _zero_images_from(dx, P, image * P, image * P + 1)
        if use_gemm:
            _input_grad_gemm(Gm, dx, geo, image * P, (image + 1) * P, gp, wp, dp, cols, size, pointwise)
        else:
            _input_grad_direct(Gm, w, dx, geo, image)
        _bias_act(X2, image * D * H * W, (image + 1) * D * H * W, bias, act)


@numba_kernel()
def _input_grad_gemm(Gm, dx, geo, rows_from, rows_to, gp, wp, dp, cols, size, pointwise):
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    C, F = dx.shape[4], Gm.shape[1]
    Cg, Fg = C // G, F // G
    K = KD * KH * KW * Cg
    for r0 in range(rows_from, rows_to, ROWS):
        r1 = min(r0 + ROWS, rows_to)
        for gi in range(G):
            if pointwise:
                gemm(False, True, r1 - r0, Cg, Fg, gp + (r0 * F + gi * Fg) * size, F, wp + gi * Fg * size, F,
                     dp + (r0 * C + gi * Cg) * size, C, 0.0, size)
            else:
                gemm(False, True, r1 - r0, K, Fg, gp + (r0 * F + gi * Fg) * size, F, wp + gi * Fg * size, F,
                     cols.ctypes.data, K, 0.0, size)
                _col2im(dx, geo, r0, r1, gi * Cg, cols)


@numba_kernel(fastmath={"reassoc", "contract"})
def _input_grad_direct(Gm, w, dx, geo, image):
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    C, F = dx.shape[4], Gm.shape[1]
    Cg, Fg = C // G, F // G
    P = OD * OH * OW
    nn = image
    od = oh = ow = 0
    for r in range(image * P, (image + 1) * P):
        gr = Gm[r]
        for kd in range(KD):
            id_ = od * SD + kd * DD - PD
            if id_ < 0 or id_ >= D:
                continue
            for kh in range(KH):
                ih_ = oh * SH + kh * DH - PH
                if ih_ < 0 or ih_ >= H:
                    continue
                for kw in range(KW):
                    iw_ = ow * SW + kw * DW - PW
                    if iw_ < 0 or iw_ >= W:
                        continue
                    dst = dx[nn, id_, ih_, iw_]
                    wt = w[kd, kh, kw]
                    if Cg == 1 and Fg == 1:
                        wrow = wt[0]
                        for c in range(C):
                            dst[c] += wrow[c] * gr[c]
                    else:
                        for gi in range(G):
                            for ci in range(Cg):
                                wrow = wt[ci]
                                s = dst[gi * Cg + ci]
                                for f in range(gi * Fg, (gi + 1) * Fg):
                                    s += wrow[f] * gr[f]
                                dst[gi * Cg + ci] = s
        ow += 1
        if ow == OW:
            ow = 0
            oh += 1
            if oh == OH:
                oh = 0
                od += 1
                if od == OD:
                    od = 0
                    nn += 1


@numba_kernel(parallel=True)
def conv_input_grad_kernel(g, w, dx, geo, bias, act, use_gemm, pointwise):
    """dx = conv_input_grad(g, w) (+ bias, relu): whole images per claim, so the adds never race."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    n = dx.shape[0]
    if n == 0:
        return
    nt = max(1, min(NT, n))
    counter = np.zeros(1, np.int64)
    saved = blas_get_threads()
    blas_set_threads(1)
    for _ in prange(nt):
        fp_state = denormals_off()  # (each worker thread flushes denormals too)
        _input_grad_images(g, w, dx, geo, counter, bias, act, use_gemm, pointwise)
        denormals_restore(fp_state)
    blas_set_threads(saved)


@numba_kernel(fastmath={"contract"})
def _filter_grad_rows(x, g, acc, geo, counter, blocks, use_gemm, pointwise):
    """acc (K x F) += the kernel gradient of blocks of rows (or lines) claimed from `counter`."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    C, F = x.shape[4], g.shape[4]
    Cg, Fg = C // G, F // G
    K = KD * KH * KW * Cg
    P = OD * OH * OW
    M = g.shape[0] * P
    Gm = g.reshape((M, F))
    size = x.itemsize
    if use_gemm:
        cols = np.empty((1 if pointwise else ROWS, K), x.dtype)
        xp, gp, ap = x.ctypes.data, Gm.ctypes.data, acc.ctypes.data
        while True:
            b = fetch_add(counter, 1)
            if b >= blocks:
                break
            r0 = b * ROWS
            r1 = min(r0 + ROWS, M)
            for gi in range(G):
                if pointwise:
                    gemm(True, False, Cg, Fg, r1 - r0, xp + (r0 * C + gi * Cg) * size, C,
                         gp + (r0 * F + gi * Fg) * size, F, ap + gi * Fg * size, F, 1.0, size)
                else:
                    _im2col(x, geo, r0, r1, gi * Cg, cols)
                    gemm(True, False, K, Fg, r1 - r0, cols.ctypes.data, K, gp + (r0 * F + gi * Fg) * size, F,
                         ap + gi * Fg * size, F, 1.0, size)
        return
    A = acc.reshape((KD, KH, KW, Cg, F))
    while True:
        line = fetch_add(counter, 1)
        if line >= blocks:
            break
        nn = line // (OD * OH)
        od = (line // OH) % OD
        oh = line % OH
        r0 = line * OW
        for kd in range(KD):
            id_ = od * SD + kd * DD - PD
            if id_ < 0 or id_ >= D:
                continue
            for kh in range(KH):
                ih_ = oh * SH + kh * DH - PH
                if ih_ < 0 or ih_ >= H:
                    continue
                xline = x[nn, id_, ih_]
                for kw in range(KW):
                    at = A[kd, kh, kw]
                    for ow in range(OW):
                        iw_ = ow * SW + kw * DW - PW
                        if iw_ < 0 or iw_ >= W:
                            continue
                        xr = xline[iw_]
                        gr = Gm[r0 + ow]
                        if G == 1:
                            for ci in range(C):
                                xv = xr[ci]
                                arow = at[ci]
                                for f in range(F):
                                    arow[f] += xv * gr[f]
                        elif Cg == 1 and Fg == 1:
                            arow = at[0]
                            for c in range(C):
                                arow[c] += xr[c] * gr[c]
                        else:
                            for gi in range(G):
                                for ci in range(Cg):
                                    xv = xr[gi * Cg + ci]
                                    arow = at[ci]
                                    for f in range(gi * Fg, (gi + 1) * Fg):
                                        arow[f] += xv * gr[f]


@numba_kernel()
def _add_partials(partial, out):
    """out = the sum of the threads' partial results (rows of `partial`), in thread order."""
    for k in range(out.shape[0]):
        s = partial[0, k]
        for t in range(1, partial.shape[0]):
            s += partial[t, k]
        out[k] = s


@numba_kernel(parallel=True)
def conv_filter_grad_kernel(x, g, dw, geo, use_gemm, pointwise):
    """dw = conv_filter_grad(x, g): per-thread partial sums over claimed blocks of rows (or lines), added."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    M = g.shape[0] * OD * OH * OW
    out = dw.reshape(-1)
    blocks = (M + ROWS - 1) // ROWS if use_gemm else g.shape[0] * OD * OH
    nt = max(1, min(NT, blocks))
    partial = np.zeros((nt, out.shape[0]), dw.dtype)
    counter = np.zeros(1, np.int64)
    saved = blas_get_threads()
    blas_set_threads(1)
    for t in prange(nt):
        fp_state = denormals_off()  # (each worker thread flushes denormals too)
        _filter_grad_rows(x, g, partial[t], geo, counter, blocks, use_gemm, pointwise)
        denormals_restore(fp_state)
    blas_set_threads(saved)
    _add_partials(partial, out)


# -- a convolution with a max-pooling epilogue (the ops are in kgraph.ops.conv_pool) ----------------------
# One image at a time, in per-thread buffers that stay in cache: its patches `cols` (P, K), its
# convolution `O` (P, F) (+ bias, relu), then the pooled result, or the pooled gradient routed
# back to `O`'s maxima and contracted with the patches. The full-size activation never exists.
# `window` (QD, QH, QW) tiles the convolution without overlap (strides = window, no padding).
@numba_kernel()
def _conv_image(x, w, O, cols, geo, image, bias, act):
    """O (P, F) = the convolution of image `image` (groups 1), + bias, relu (act 1)."""
    P, K, F = O.shape[0], cols.shape[1], O.shape[1]
    _im2col(x, geo, image * P, (image + 1) * P, 0, cols)
    gemm(False, False, P, F, K, cols.ctypes.data, K, w.ctypes.data, F, O.ctypes.data, F, 0.0, x.itemsize)
    _bias_act(O, 0, P, bias, act)


@numba_kernel()
def _pool_image(O, out, geo, window):
    """out (pooled D, H, W, F) = the maximum of each window of O, viewed as (OD, OH, OW, F)."""
    OH, OW = geo[7], geo[8]
    QD, QH, QW = window
    F = O.shape[1]
    for pd in range(out.shape[0]):
        for ph in range(out.shape[1]):
            for pw in range(out.shape[2]):
                dst = out[pd, ph, pw]
                for f in range(F):
                    dst[f] = -np.inf
                for kd in range(QD):
                    for kh in range(QH):
                        for kw in range(QW):
                            src = O[((pd * QD + kd) * OH + ph * QH + kh) * OW + pw * QW + kw]
                            for f in range(F):
                                dst[f] = max(dst[f], src[f])


@numba_kernel()
def _route_image(O, g, dO, geo, window, positive, best, which):
    """dO (P, F) = each pooled gradient of g at the first maximum of its window of O (window
    order, as max_pool_grad), where that maximum is > 0 with `positive` (the relu's gradient); 0
    elsewhere. Each window writes all its rows (selects, no branches: vector loops); rows in no
    window are zeroed first. `best` and `which` are F-value scratch rows."""
    OD, OH, OW = geo[6], geo[7], geo[8]
    QD, QH, QW = window
    F = O.shape[1]
    if OD != g.shape[0] * QD or OH != g.shape[1] * QH or OW != g.shape[2] * QW:
        flat = dO.reshape(-1)
        for k in range(flat.shape[0]):
            flat[k] = 0
    for pd in range(g.shape[0]):
        for ph in range(g.shape[1]):
            for pw in range(g.shape[2]):
                for f in range(F):
                    best[f] = -np.inf
                    which[f] = -1
                tap = 0
                for kd in range(QD):
                    for kh in range(QH):
                        for kw in range(QW):
                            src = O[((pd * QD + kd) * OH + ph * QH + kh) * OW + pw * QW + kw]
                            for f in range(F):
                                take = src[f] > best[f]
                                best[f] = src[f] if take else best[f]
                                which[f] = tap if take else which[f]
                            tap += 1
                if positive:
                    for f in range(F):
                        which[f] = which[f] if best[f] > 0 else -1
                gr = g[pd, ph, pw]
                tap = 0
                for kd in range(QD):
                    for kh in range(QH):
                        for kw in range(QW):
                            dst = dO[((pd * QD + kd) * OH + ph * QH + kh) * OW + pw * QW + kw]
                            for f in range(F):
                                dst[f] = gr[f] if which[f] == tap else 0
                            tap += 1


@numba_kernel()
def _conv_pool_images(x, w, out, geo, window, bias, act, counter, dw):
    """Images claimed from `counter`: out[image] = the pooled convolution, or, given `out` the
    pooled gradient, dw (K, F) += the kernel gradient of the image."""
    OD, OH, OW = geo[6], geo[7], geo[8]
    P, F = OD * OH * OW, w.shape[4]
    K = w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3]
    cols = np.empty((P, K), x.dtype)
    O = np.empty((P, F), x.dtype)
    gradient = dw.shape[0] > 0
    dO = np.empty((P if gradient else 0, F), x.dtype)
    best = np.empty(F, x.dtype)
    which = np.empty(F, np.int32)
    while True:
        image = fetch_add(counter, 1)
        if image >= x.shape[0]:
            break
        _conv_image(x, w, O, cols, geo, image, bias, act)
        if gradient:
            _route_image(O, out[image], dO, geo, window, act == 1, best, which)
            gemm(True, False, K, F, P, cols.ctypes.data, K, dO.ctypes.data, F, dw.ctypes.data, F, 1.0,
                 x.itemsize)
        else:
            _pool_image(O, out[image], geo, window)


@numba_kernel(parallel=True)
def conv_pool_kernel(x, w, pooled, dw, geo, window, bias, act):
    """pooled = max_pool(relu(conv(x, w) + bias)) when dw is empty; else dw = the kernel gradient of
    that, given `pooled` its gradient (per-thread partial sums, added). Whole images per claim."""
    n = x.shape[0]
    nt = max(1, min(geo[20], n))
    out = dw.reshape(-1)
    partial = np.zeros((nt, out.shape[0]), x.dtype)
    K = w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3]
    counter = np.zeros(1, np.int64)
    saved = blas_get_threads()
    blas_set_threads(1)
    for t in prange(nt):
        fp_state = denormals_off()  # (each worker thread flushes denormals too)
        _conv_pool_images(x, w, pooled, geo, window, bias, act, counter,
                          partial[t].reshape((K if out.shape[0] else 0, w.shape[4])))
        denormals_restore(fp_state)
    blas_set_threads(saved)
    _add_partials(partial, out)


# -- entry points (C-callable: addresses and sizes) and the templates that call them -------------------
@numba_entry(33)
def conv_forward(itemsize, xp, wp, op, bp, n, D, H, W, C, KD, KH, KW, F, OD, OH, OW, SD, SH, SW, DD, DH, DW,
                 PD, PH, PW, G, ROWS, NT, nbias, act, use_gemm, pointwise):
    geo = (D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT)
    if itemsize == 4:
        conv_forward_kernel(array_at(xp, (n, D, H, W, C), np.float32),
                            array_at(wp, (KD, KH, KW, C // G, F), np.float32),
                            array_at(op, (n, OD, OH, OW, F), np.float32), geo, array_at(bp, (nbias,), np.float32),
                            act, use_gemm != 0, pointwise != 0)
    else:
        conv_forward_kernel(array_at(xp, (n, D, H, W, C), np.float64),
                            array_at(wp, (KD, KH, KW, C // G, F), np.float64),
                            array_at(op, (n, OD, OH, OW, F), np.float64), geo, array_at(bp, (nbias,), np.float64),
                            act, use_gemm != 0, pointwise != 0)


@numba_entry(33)
def conv_input_grad(itemsize, gp, wp, op, bp, n, D, H, W, C, KD, KH, KW, F, OD, OH, OW, SD, SH, SW, DD, DH, DW,
                    PD, PH, PW, G, ROWS, NT, nbias, act, use_gemm, pointwise):
    geo = (D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT)
    if itemsize == 4:
        conv_input_grad_kernel(array_at(gp, (n, OD, OH, OW, F), np.float32),
                               array_at(wp, (KD, KH, KW, C // G, F), np.float32),
                               array_at(op, (n, D, H, W, C), np.float32), geo, array_at(bp, (nbias,), np.float32),
                               act, use_gemm != 0, pointwise != 0)
    else:
        conv_input_grad_kernel(array_at(gp, (n, OD, OH, OW, F), np.float64),
                               array_at(wp, (KD, KH, KW, C // G, F), np.float64),
                               array_at(op, (n, D, H, W, C), np.float64), geo, array_at(bp, (nbias,), np.float64),
                               act, use_gemm != 0, pointwise != 0)


@numba_entry(33)
def conv_filter_grad(itemsize, xp, gp, op, bp, n, D, H, W, C, KD, KH, KW, F, OD, OH, OW, SD, SH, SW, DD, DH, DW,
                     PD, PH, PW, G, ROWS, NT, nbias, act, use_gemm, pointwise):
    geo = (D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT)
    if itemsize == 4:
        conv_filter_grad_kernel(array_at(xp, (n, D, H, W, C), np.float32), array_at(gp, (n, OD, OH, OW, F), np.float32),
                                array_at(op, (KD, KH, KW, C // G, F), np.float32), geo, use_gemm != 0, pointwise != 0)
    else:
        conv_filter_grad_kernel(array_at(xp, (n, D, H, W, C), np.float64), array_at(gp, (n, OD, OH, OW, F), np.float64),
                                array_at(op, (KD, KH, KW, C // G, F), np.float64), geo, use_gemm != 0, pointwise != 0)


@numba_entry(34)
def conv_pool(itemsize, xp, wp, gp, op, bp, n, D, H, W, C, KD, KH, KW, F, OD, OH, OW, SD, SH, SW, DD, DH, DW,
              PD, PH, PW, QD, QH, QW, NT, nbias, act, gradient):
    """The pooled convolution into op (gp unused), or its kernel gradient into op given gp."""
    geo = (D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, 1, 1, NT)
    pooled = (n, OD // QD, OH // QH, OW // QW, F)
    kernel = (KD, KH, KW, C, F)
    if itemsize == 4:
        conv_pool_kernel(array_at(xp, (n, D, H, W, C), np.float32), array_at(wp, kernel, np.float32),
                         array_at(gp if gradient else op, pooled, np.float32),
                         array_at(op, kernel if gradient else (0, 0, 0, 0, 0), np.float32), geo, (QD, QH, QW),
                         array_at(bp, (nbias,), np.float32), act)
    else:
        conv_pool_kernel(array_at(xp, (n, D, H, W, C), np.float64), array_at(wp, kernel, np.float64),
                         array_at(gp if gradient else op, pooled, np.float64),
                         array_at(op, kernel if gradient else (0, 0, 0, 0, 0), np.float64), geo, (QD, QH, QW),
                         array_at(bp, (nbias,), np.float64), act)


def _threads():
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def _itemsize(node):
    if node.dtype not in ("float32", "float64"):
        raise NotImplementedError(f"numba backend: {node.op} supports float32 and float64, not {node.dtype}")
    return np.dtype(node.dtype).itemsize


def _conv_call(entry, node, pointers, x_spatial, kernel, out_spatial, channels, filters, bias, activation):
    """The call of a conv entry: every size literal except the batch `n`."""
    groups = node.attrs["groups"]
    geo = conv_geometry(node.attrs, x_spatial, kernel, out_spatial, channels // groups, _threads(), filters)
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    sizes = (D, H, W, channels, KD, KH, KW, filters, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT)
    gemm_path = _use_gemm(channels // groups, filters // groups)
    bias_pointer, bias_count = (f"{bias}.ctypes.data", filters) if bias else ("0", 0)
    arguments = ([str(_itemsize(node))] + [f"{p}.ctypes.data" for p in pointers] + [bias_pointer, "n"]
                 + [str(s) for s in sizes]
                 + [str(bias_count), "1" if activation == "relu" else "0", str(int(gemm_path)),
                    str(int(_is_pointwise(geo)))])
    return f"{entry}({', '.join(arguments)})"


def numba_conv(node, inputs, bias=None, activation=None):
    """Kernel body: the forward entry (bias and relu applied per block when given)."""
    x, w = inputs
    return ["n = out.shape[0]",
            _conv_call("conv_forward", node, ("a0", "a1", "out"), x.shape[1:-1], w.shape[:-2], node.shape[1:-1],
                       x.shape[-1], w.shape[-1], bias, activation)]


def numba_conv_input_grad(node, inputs, bias=None, activation=None):
    g, w = inputs
    return ["n = out.shape[0]",
            _conv_call("conv_input_grad", node, ("a0", "a1", "out"), node.shape[1:-1], w.shape[:-2],
                       g.shape[1:-1], node.shape[-1], w.shape[-1], bias, activation)]


def numba_conv_filter_grad(node, inputs):
    x, g = inputs
    return ["n = a0.shape[0]",
            _conv_call("conv_filter_grad", node, ("a0", "a1", "out"), x.shape[1:-1], node.shape[:-2],
                       g.shape[1:-1], x.shape[-1], g.shape[-1], None, None)]


for _template in (numba_conv, numba_conv_input_grad, numba_conv_filter_grad):
    _template.kernels = "kgraph.ops.conv"  # the module whose entries the body calls
numba_conv.epilogue = numba_conv_input_grad.epilogue = ("relu",)  # fused: bias, then these activations


# -- registration -------------------------------------------------------------------------------------------
register(OpDef("conv", KERNEL, _conv_infer, _conv_reference, grad=_conv_grad, samples=_conv_samples,
               extra={"epilogue": True},
               doc="N-d convolution, channels_last; attrs strides, dilation, pads ((lo, hi) per axis), groups."))
register(OpDef("conv_input_grad", KERNEL, _input_grad_infer, _input_grad_reference, grad=_input_grad_grad,
               samples=_input_grad_samples, extra={"epilogue": True},
               doc="The input gradient of conv (and the transposed convolution): attrs of conv plus "
                   "input_shape, the spatial shape of the result."))
register(OpDef("conv_filter_grad", KERNEL, _filter_grad_infer, _filter_grad_reference, grad=_filter_grad_grad,
               samples=_filter_grad_samples,
               doc="The kernel gradient of conv: attrs of conv plus kernel_size."))

NUMBA_TEMPLATES = {"conv": numba_conv, "conv_input_grad": numba_conv_input_grad,
                   "conv_filter_grad": numba_conv_filter_grad}


# -- kgraph.ops functions (Keras 3 names and arguments) ------------------------------------------------------
def _to_channels_last(x, data_format):
    if data_format == "channels_first":
        rank = len(x.shape)
        return ops.transpose(x, (0,) + tuple(range(2, rank)) + (1,))
    return x


def _from_channels_last(x, data_format):
    if data_format == "channels_first":
        rank = len(x.shape)
        return ops.transpose(x, (0, rank - 1) + tuple(range(1, rank - 1)))
    return x


def standardize_data_format(data_format):
    if data_format is None:
        return "channels_last"
    data_format = str(data_format).lower()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f'data_format must be "channels_last" or "channels_first", got {data_format!r}')
    return data_format


def _prepare(inputs, kernel, strides, padding, data_format, dilation_rate, what):
    x = ops.convert_to_tensor(inputs)
    w = ops.convert_to_tensor(kernel)
    data_format = standardize_data_format(data_format)
    rank = len(x.shape) - 2
    if rank not in (1, 2, 3):
        raise ValueError(f"{what}: inputs must have rank 3, 4 or 5 (batch, spatial axes, channels), got "
                         f"shape {x.shape}")
    if len(w.shape) != rank + 2:
        raise ValueError(f"{what}: the kernel must have rank {rank + 2} for inputs of shape {x.shape}, got "
                         f"kernel shape {w.shape}")
    x = _to_channels_last(x, data_format)
    dtype = ops.result_type(x.dtype, w.dtype)
    x = x if x.dtype == dtype else ops.cast(x, dtype)
    w = w if w.dtype == dtype else ops.cast(w, dtype)
    strides = _tuple(strides, rank, "strides")
    dilation = _tuple(dilation_rate, rank, "dilation_rate")
    return x, w, data_format, rank, strides, dilation


def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """keras.ops.conv: N-d convolution (groups inferred from the kernel's input channels)."""
    x, w, data_format, rank, strides, dilation = _prepare(inputs, kernel, strides, padding, data_format,
                                                          dilation_rate, "conv")
    channels = x.shape[-1]
    if channels % w.shape[-2]:
        raise ValueError(f"conv: the input's {channels} channels are not a multiple of the kernel's "
                         f"{w.shape[-2]} input channels (kernel shape {w.shape})")
    groups = channels // w.shape[-2]
    pads = resolve_padding(padding, x.shape[1:-1], w.shape[:-2], strides, dilation)
    y = bind("conv", [x, w], strides=strides, dilation=dilation, pads=pads, groups=groups)
    return _from_channels_last(y, data_format)


def depthwise_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """keras.ops.depthwise_conv: kernel (*kernel_size, channels, depth_multiplier)."""
    x, w, data_format, rank, strides, dilation = _prepare(inputs, kernel, strides, padding, data_format,
                                                          dilation_rate, "depthwise_conv")
    channels, multiplier = w.shape[-2], w.shape[-1]
    if x.shape[-1] != channels:
        raise ValueError(f"depthwise_conv: the input has {x.shape[-1]} channels, the kernel {w.shape} expects "
                         f"{channels}")
    w = ops.reshape(w, tuple(w.shape[:-2]) + (1, channels * multiplier))
    pads = resolve_padding(padding, x.shape[1:-1], w.shape[:-2], strides, dilation)
    y = bind("conv", [x, w], strides=strides, dilation=dilation, pads=pads, groups=channels)
    return _from_channels_last(y, data_format)


def separable_conv(inputs, depthwise_kernel, pointwise_kernel, strides=1, padding="valid", data_format=None,
                   dilation_rate=1):
    """keras.ops.separable_conv: a depthwise convolution, then a pointwise (1x1) one."""
    data_format = standardize_data_format(data_format)
    y = depthwise_conv(inputs, depthwise_kernel, strides, padding, data_format, dilation_rate)
    return conv(y, pointwise_kernel, 1, "valid", data_format, 1)


def conv_transpose_geometry(spatial, kernel, strides, padding, output_padding, dilation):
    """(output spatial shape, pads of the equivalent forward convolution) as Keras 3 computes them."""
    mode = padding.lower()
    if mode not in ("valid", "same"):
        raise ValueError(f'conv_transpose: padding must be "valid" or "same", got {padding!r}')
    out, pads = [], []
    for i, (length, k, s, d) in enumerate(zip(spatial, kernel, strides, dilation)):
        size = effective_size(k, d)
        extra = None if output_padding is None else output_padding[i]
        if extra is not None and extra >= s:
            raise ValueError(f"conv_transpose: output_padding {tuple(output_padding)} must be smaller than the "
                             f"strides {tuple(strides)}")
        # The padding JAX applies to the dilated input (keras' conv_transpose on the jax backend).
        if mode == "valid":
            left = size - 1
            right = size - 1 + (max(size, s) - size if extra is None else extra)
        else:
            pad_len = s + size - 2 if extra is None else size + size % 2 - 2 + extra
            left = min(pad_len // 2 + pad_len % 2, size - 1)
            right = pad_len - left
        n_out = (length - 1) * s + 1 + left + right - size + 1
        low = size - 1 - left
        high = (length - 1) * s + size - n_out - low
        out.append(n_out)
        pads.append((low, high))
    return tuple(out), tuple(pads)


def conv_transpose(inputs, kernel, strides=1, padding="valid", output_padding=None, data_format=None,
                   dilation_rate=1):
    """keras.ops.conv_transpose: kernel (*kernel_size, filters, input channels)."""
    x, w, data_format, rank, strides, dilation = _prepare(inputs, kernel, strides, padding, data_format,
                                                          dilation_rate, "conv_transpose")
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"conv_transpose: the input has {x.shape[-1]} channels, the kernel {w.shape} expects "
                         f"{w.shape[-1]}")
    if output_padding is not None:
        output_padding = _tuple(output_padding, rank, "output_padding")
    if any(d is None for d in x.shape[1:-1]):
        raise ValueError(f"conv_transpose needs known spatial dimensions, got input shape {x.shape}")
    spatial, pads = conv_transpose_geometry(x.shape[1:-1], w.shape[:-2], strides, padding, output_padding,
                                            dilation)
    y = bind("conv_input_grad", [x, w], strides=strides, dilation=dilation, pads=pads, groups=1,
             input_shape=spatial)
    return _from_channels_last(y, data_format)


def conv_output_shape(input_shape, kernel_size, filters, strides, padding, dilation_rate, data_format):
    """The Keras output shape of a convolution layer (None dimensions stay None)."""
    data_format = standardize_data_format(data_format)
    rank = len(input_shape) - 2
    spatial = input_shape[1:-1] if data_format == "channels_last" else input_shape[2:]
    strides = _tuple(strides, rank, "strides")
    dilation = _tuple(dilation_rate, rank, "dilation_rate")
    out = []
    for length, k, s, d in zip(spatial, kernel_size, strides, dilation):
        if length is None:
            out.append(None)
        elif padding.lower() == "same":
            out.append(-(-length // s))
        elif padding.lower() == "causal":
            out.append((length - 1) // s + 1)
        else:
            out.append((length - effective_size(k, d)) // s + 1)
    out = tuple(out)
    if data_format == "channels_last":
        return (input_shape[0],) + out + (filters,)
    return (input_shape[0], filters) + out


__all__ = ["conv", "depthwise_conv", "separable_conv", "conv_transpose"]
