"""Pooling and upsampling: `pool` (max / average) with its gradients, and `upsample`.

channels_last and N-d (1 to 3 spatial axes) like conv: window, strides and explicit
(low, high) padding per spatial axis. Max pooling ignores the padding; average pooling
divides by the number of positions inside the input (Keras' "same" semantics).

- `max_pool_grad(x, g)` routes each output gradient to the first maximum of its window
  (window order), as TensorFlow and Keras do; `avg_pool_grad(g)` spreads it evenly.
- `upsample(x)` repeats (nearest) or linearly interpolates (bilinear, half-pixel centers,
  edges clamped, as Keras' resize) by an integer factor per spatial axis; its gradient is
  `upsample_grad`, the adjoint, and the two are each other's gradients.

Numba kernels: parallel over output rows (forward) or over whole images (gradients, so
scatter-adds never race), channels innermost so every inner loop is a vector loop.
"""

from __future__ import annotations

import itertools

import numpy as np

from kgraph import ops
from kgraph.ops.conv import (
    _canonical,
    _from_channels_last,
    _itemsize,
    _threads,
    _to_channels_last,
    _tuple,
    conv_geometry,
    resolve_padding,
    standardize_data_format,
)
from kgraph.ops.kernels import numba_entry, numba_kernel
from kgraph.ops.registry import OpDef, bind, register

KERNEL = "kernel"
MODES = ("max", "avg")
INTERPOLATIONS = ("nearest", "bilinear")


# -- shape rules -------------------------------------------------------------------------------------
def _pool_spatial(op, spatial, attrs):
    window, strides, pads = attrs["window"], attrs["strides"], attrs["pads"]
    if not len(window) == len(strides) == len(pads) == len(spatial):
        raise ValueError(f"{op}: window {window}, strides {strides} and pads {pads} must each have one entry "
                         f"per spatial axis of the input (spatial shape {tuple(spatial)})")
    out = tuple(None if n is None else (n + lo + hi - k) // s + 1
                for n, k, s, (lo, hi) in zip(spatial, window, strides, pads))
    if any(o is not None and o < 1 for o in out):
        raise ValueError(f"{op}: the pooling window {tuple(window)} does not fit the input's spatial shape "
                         f"{tuple(spatial)} (padding {tuple(pads)}); use a smaller pool_size or padding=\"same\"")
    return out


def _pool_infer(attrs, x):
    if len(x.shape) < 3:
        raise ValueError(f"pool: expected an input of rank 3 to 5 (batch, spatial axes, channels), got {x.shape}")
    if attrs["mode"] not in MODES:
        raise ValueError(f"pool: mode must be one of {MODES}, got {attrs['mode']!r}")
    out = _pool_spatial("pool", x.shape[1:-1], attrs)
    return (x.shape[0],) + out + (x.shape[-1],), x.dtype


def _max_grad_infer(attrs, x, g):
    out = _pool_spatial("max_pool_grad", x.shape[1:-1], attrs)
    if tuple(g.shape[1:]) != out + (x.shape[-1],):
        raise ValueError(f"max_pool_grad: the gradient {g.shape} does not match pooling {x.shape} "
                         f"(expected spatial {out})")
    return x.shape, ops.result_type(x.dtype, g.dtype)


def _avg_grad_infer(attrs, g):
    spatial = tuple(attrs["input_shape"])
    out = _pool_spatial("avg_pool_grad", spatial, attrs)
    if tuple(g.shape[1:-1]) != out:
        raise ValueError(f"avg_pool_grad: the gradient {g.shape} does not match pooling an input of spatial "
                         f"shape {spatial} (expected spatial {out})")
    return (g.shape[0],) + spatial + (g.shape[-1],), g.dtype


# -- numpy references -------------------------------------------------------------------------------------
def _padded(x, pads, value):
    return np.pad(x, [(0, 0)] + [tuple(p) for p in pads] + [(0, 0)], constant_values=value)


def _window_slices(tap, attrs, out_spatial):
    return (slice(None),) + tuple(slice(t, t + (o - 1) * s + 1, s)
                                  for t, s, o in zip(tap, attrs["strides"], out_spatial))


def _taps(attrs):
    return list(itertools.product(*(range(k) for k in attrs["window"])))


def _valid_counts(attrs, spatial, out_spatial, dtype):
    ones = _padded(np.ones((1,) + tuple(spatial) + (1,), dtype), attrs["pads"], 0)
    return sum(ones[_window_slices(tap, attrs, out_spatial)] for tap in _taps(attrs))


def _pool_reference(attrs, x):
    out_spatial = _pool_spatial("pool", x.shape[1:-1], attrs)
    if attrs["mode"] == "max":
        xp = _padded(x, attrs["pads"], -np.inf)
        return np.max([xp[_window_slices(tap, attrs, out_spatial)] for tap in _taps(attrs)], axis=0).astype(x.dtype)
    xp = _padded(x, attrs["pads"], 0)
    total = sum(xp[_window_slices(tap, attrs, out_spatial)] for tap in _taps(attrs))
    return (total / _valid_counts(attrs, x.shape[1:-1], out_spatial, x.dtype)).astype(x.dtype)


def _crop(xp, pads, spatial):
    return xp[(slice(None),) + tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, spatial))]


def _max_grad_reference(attrs, x, g):
    out_spatial = g.shape[1:-1]
    xp = _padded(x, attrs["pads"], -np.inf)
    taps = _taps(attrs)
    first = np.argmax([xp[_window_slices(tap, attrs, out_spatial)] for tap in taps], axis=0)
    dxp = np.zeros(xp.shape, np.result_type(x, g))
    for k, tap in enumerate(taps):
        dxp[_window_slices(tap, attrs, out_spatial)] += np.where(first == k, g, 0)
    return _crop(dxp, attrs["pads"], x.shape[1:-1])


def _avg_grad_reference(attrs, g):
    spatial = tuple(attrs["input_shape"])
    out_spatial = g.shape[1:-1]
    share = g / _valid_counts(attrs, spatial, out_spatial, g.dtype)
    dxp = np.zeros((g.shape[0],) + tuple(n + lo + hi for n, (lo, hi) in zip(spatial, attrs["pads"]))
                   + (g.shape[-1],), g.dtype)
    for tap in _taps(attrs):
        dxp[_window_slices(tap, attrs, out_spatial)] += share
    return _crop(dxp, attrs["pads"], spatial)


# -- gradients ---------------------------------------------------------------------------------------------
def _window_attrs(attrs):
    return {k: attrs[k] for k in ("window", "strides", "pads")}


def _pool_grad(ctx):
    x = ctx.inputs[0]
    if ctx.attrs["mode"] == "max":
        return [bind("max_pool_grad", [x, ctx.upstream], **_window_attrs(ctx.attrs))]
    return [bind("avg_pool_grad", [ctx.upstream], input_shape=tuple(x.shape[1:-1]), **_window_attrs(ctx.attrs))]


def _avg_grad_grad(ctx):
    return [bind("pool", [ctx.upstream], mode="avg", **_window_attrs(ctx.attrs))]


# -- upsampling ----------------------------------------------------------------------------------------------
def _upsample_infer(attrs, x):
    size = tuple(attrs["size"])
    if len(size) != len(x.shape) - 2 or attrs["interpolation"] not in INTERPOLATIONS:
        raise ValueError(f"upsample: size {size} must have one entry per spatial axis of {x.shape} and "
                         f"interpolation be one of {INTERPOLATIONS}")
    return (x.shape[0],) + tuple(None if n is None else n * s for n, s in zip(x.shape[1:-1], size)) + (
        x.shape[-1],), x.dtype


def _upsample_grad_infer(attrs, g):
    spatial = tuple(attrs["input_shape"])
    expected = tuple(n * s for n, s in zip(spatial, attrs["size"]))
    if tuple(g.shape[1:-1]) != expected:
        raise ValueError(f"upsample_grad: the gradient {g.shape} does not match upsampling spatial shape "
                         f"{spatial} by {tuple(attrs['size'])}")
    return (g.shape[0],) + spatial + (g.shape[-1],), g.dtype


def axis_weights(length, scale, interpolation):
    """(index0, index1, weight1) per output position along one axis: out = (1 - w) x[i0] + w x[i1]."""
    out = np.arange(length * scale)
    if interpolation == "nearest" or scale == 1:
        index = out // scale
        return index, index, np.zeros(len(out))
    coordinate = np.clip((out + 0.5) / scale - 0.5, 0, length - 1)
    first = np.floor(coordinate).astype(np.int64)
    return first, np.minimum(first + 1, length - 1), coordinate - first


def _axis_matrix(length, scale, interpolation, dtype):
    first, second, weight = axis_weights(length, scale, interpolation)
    matrix = np.zeros((length * scale, length), dtype)
    rows = np.arange(length * scale)
    np.add.at(matrix, (rows, first), 1 - weight)
    np.add.at(matrix, (rows, second), weight)
    return matrix


def _apply_per_axis(x, matrices):
    for axis, matrix in enumerate(matrices):
        x = np.moveaxis(np.tensordot(matrix, x, axes=([1], [axis + 1])), 0, axis + 1)
    return x


def _upsample_reference(attrs, x):
    matrices = [_axis_matrix(n, s, attrs["interpolation"], x.dtype) for n, s in zip(x.shape[1:-1], attrs["size"])]
    return _apply_per_axis(x, matrices).astype(x.dtype)


def _upsample_grad_reference(attrs, g):
    matrices = [_axis_matrix(n, s, attrs["interpolation"], g.dtype).T
                for n, s in zip(attrs["input_shape"], attrs["size"])]
    return _apply_per_axis(g, matrices).astype(g.dtype)


def _upsample_attrs(attrs):
    return {"size": attrs["size"], "interpolation": attrs["interpolation"]}


# -- samples ---------------------------------------------------------------------------------------------------
def _window(rank, window, strides=None, pads=0):
    window = _tuple(window, rank, "window")
    strides = window if strides is None else _tuple(strides, rank, "strides")
    pads = ((pads, pads),) * rank if isinstance(pads, int) else tuple(pads)
    return {"window": window, "strides": strides, "pads": pads}


POOL_CONFIGS = [
    ((2, 6, 6, 3), _window(2, 2)),
    ((2, 7, 5, 4), _window(2, 3, 2, ((1, 1), (1, 1)))),  # overlapping, "same"
    ((2, 7, 6, 2), _window(2, (3, 2), (1, 2), ((0, 0), (0, 1)))),
    ((2, 9, 3), _window(1, 3, 2)),
    ((2, 4, 5, 4, 2), _window(3, 2, (2, 2, 1), ((0, 0), (0, 1), (0, 0)))),
]


def _draw(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def _pool_samples(rng):
    return [([_draw(rng, shape)], dict(window, mode=mode)) for mode in MODES for shape, window in POOL_CONFIGS]


def _max_grad_samples(rng):
    cases = []
    for shape, window in POOL_CONFIGS:
        out = _pool_spatial("pool", shape[1:-1], window)
        cases.append(([_draw(rng, shape), _draw(rng, (shape[0],) + out + (shape[-1],))], dict(window)))
    return cases


def _avg_grad_samples(rng):
    cases = []
    for shape, window in POOL_CONFIGS:
        out = _pool_spatial("pool", shape[1:-1], window)
        cases.append(([_draw(rng, (shape[0],) + out + (shape[-1],))], dict(window, input_shape=shape[1:-1])))
    return cases


UPSAMPLE_CONFIGS = [((2, 3, 4, 2), (2, 2), "nearest"), ((2, 3, 4, 2), (2, 3), "bilinear"),
                    ((2, 4, 3), (3,), "nearest"), ((2, 2, 3, 2, 2), (2, 1, 2), "nearest"),
                    ((2, 1, 5, 3), (3, 2), "bilinear")]


def _upsample_samples(rng):
    return [([_draw(rng, shape)], {"size": size, "interpolation": mode}) for shape, size, mode in UPSAMPLE_CONFIGS]


def _upsample_grad_samples(rng):
    cases = []
    for shape, size, mode in UPSAMPLE_CONFIGS:
        out = tuple(n * s for n, s in zip(shape[1:-1], size))
        cases.append(([_draw(rng, (shape[0],) + out + (shape[-1],))],
                      {"size": size, "interpolation": mode, "input_shape": shape[1:-1]}))
    return cases


# -- numba kernels (generic over sizes, like conv's; compiled once by the backend) ----------------------
# 5-D arrays (N, D, H, W, C); `geo` is conv's geometry tuple with the window as the kernel.

# Provided by the backend when it loads the kernels; plain Python runs them as written.
array_at = None
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


def pool_geometry(attrs, x_spatial, out_spatial, threads):
    conv_attrs = {"strides": attrs["strides"], "dilation": (1,) * len(x_spatial), "pads": attrs["pads"],
                  "groups": 1}
    return conv_geometry(conv_attrs, x_spatial, attrs["window"], out_spatial, 1, threads)


@numba_kernel()
def _pool_lines(x, O, geo, counter, lines, average):
    """Output lines (the OW positions of one (n, od, oh)) claimed from `counter`."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    C = x.shape[4]
    while True:
        line = fetch_add(counter, 1)
        if line >= lines:
            break
        nn = line // (OD * OH)
        od = (line // OH) % OD
        oh = line % OH
        for ow in range(OW):
            orow = O[line * OW + ow]
            for c in range(C):
                orow[c] = 0 if average else -np.inf
            count = 0
            for kd in range(KD):
                id_ = od * SD + kd - PD
                if id_ < 0 or id_ >= D:
                    continue
                for kh in range(KH):
                    ih_ = oh * SH + kh - PH
                    if ih_ < 0 or ih_ >= H:
                        continue
                    for kw in range(KW):
                        iw_ = ow * SW + kw - PW
                        if iw_ < 0 or iw_ >= W:
                            continue
                        xr = x[nn, id_, ih_, iw_]
                        count += 1
                        if average:
                            for c in range(C):
                                orow[c] += xr[c]
                        else:
                            for c in range(C):
                                orow[c] = max(orow[c], xr[c])
            if average:
                scale = 1.0 / count
                for c in range(C):
                    orow[c] *= scale


@numba_kernel(parallel=True)
def pool_kernel(x, out, geo, average):
    """Max or average pooling: output lines shared by the threads."""
    OD, OH, OW, NT = geo[6], geo[7], geo[8], geo[20]
    lines = x.shape[0] * OD * OH
    O = out.reshape((lines * OW, x.shape[4]))
    nt = max(1, min(NT, lines))
    counter = np.zeros(1, np.int64)
    for _ in prange(nt):
        fp_state = denormals_off()  # (each worker thread flushes denormals too)
        _pool_lines(x, O, geo, counter, lines, average)
        denormals_restore(fp_state)


@numba_kernel()
def _zero_image(dx, nn):
    """Zero image nn of dx, right before the rows that add into it (while it stays in cache)."""
    image = dx.shape[1] * dx.shape[2] * dx.shape[3] * dx.shape[4]
    zeros = dx.reshape(-1)[nn * image:(nn + 1) * image]
    for k in range(image):  # (from 0: a vector loop, see conv.py)
        zeros[k] = 0


@numba_kernel()
def _max_pool_grad_images(x, g, dx, geo, counter, positive):
    """Images claimed from `counter`. Windows that tile the input without overlap write each
    input position once (the gradient or 0), with no separate zeroing pass; others add.
    With `positive`, a gradient passes only where the maximum is > 0 (the relu that
    produced x, fused)."""
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    C = x.shape[4]
    P = OD * OH * OW
    n = x.shape[0]
    Gm = g.reshape((n * P, C))
    flat = dx.reshape(-1)
    best = np.empty(C, x.dtype)
    where = np.empty(C, np.int64)
    tiles = SD >= KD and SH >= KH and SW >= KW and PD == 0 and PH == 0 and PW == 0
    covers = tiles and OD * SD == D and OH * SH == H and OW * SW == W and SD == KD and SH == KH and SW == KW
    while True:
        nn = fetch_add(counter, 1)
        if nn >= n:
            break
        if not covers:
            _zero_image(dx, nn)
        r = nn * P
        for od in range(OD):
            for oh in range(OH):
                for ow in range(OW):
                    for c in range(C):
                        best[c] = -np.inf
                        where[c] = -1
                    for kd in range(KD):
                        id_ = od * SD + kd - PD
                        if id_ < 0 or id_ >= D:
                            continue
                        for kh in range(KH):
                            ih_ = oh * SH + kh - PH
                            if ih_ < 0 or ih_ >= H:
                                continue
                            for kw in range(KW):
                                iw_ = ow * SW + kw - PW
                                if iw_ < 0 or iw_ >= W:
                                    continue
                                xr = x[nn, id_, ih_, iw_]
                                base = (((nn * D + id_) * H + ih_) * W + iw_) * C
                                for c in range(C):
                                    v = xr[c]
                                    if v > best[c]:
                                        best[c] = v
                                        where[c] = base + c
                    gr = Gm[r]
                    r += 1
                    if positive:
                        for c in range(C):
                            if not best[c] > 0:
                                where[c] = -1
                    if tiles:
                        for kd in range(KD):
                            for kh in range(KH):
                                for kw in range(KW):
                                    id_, ih_, iw_ = od * SD + kd, oh * SH + kh, ow * SW + kw
                                    base = (((nn * D + id_) * H + ih_) * W + iw_) * C
                                    dst = flat[base:base + C]
                                    for c in range(C):
                                        dst[c] = gr[c] if where[c] == base + c else 0
                    else:
                        for c in range(C):
                            k = where[c]
                            if k >= 0:
                                flat[k] += gr[c]


@numba_kernel(parallel=True)
def max_pool_grad_kernel(x, g, dx, geo, positive):
    """Each output gradient goes to the first maximum of its window; whole images per claim."""
    n = dx.shape[0]
    nt = max(1, min(geo[20], n))
    counter = np.zeros(1, np.int64)
    for _ in prange(nt):
        fp_state = denormals_off()  # (each worker thread flushes denormals too)
        _max_pool_grad_images(x, g, dx, geo, counter, positive)
        denormals_restore(fp_state)


@numba_kernel()
def _avg_pool_grad_images(g, dx, geo, counter):
    D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT = geo
    C = dx.shape[4]
    P = OD * OH * OW
    n = dx.shape[0]
    Gm = g.reshape((n * P, C))
    while True:
        nn = fetch_add(counter, 1)
        if nn >= n:
            break
        _zero_image(dx, nn)
        r = nn * P
        for od in range(OD):
            for oh in range(OH):
                for ow in range(OW):
                    count = 0
                    for kd in range(KD):
                        id_ = od * SD + kd - PD
                        for kh in range(KH):
                            ih_ = oh * SH + kh - PH
                            for kw in range(KW):
                                iw_ = ow * SW + kw - PW
                                if 0 <= id_ < D and 0 <= ih_ < H and 0 <= iw_ < W:
                                    count += 1
                    scale = 1.0 / count
                    gr = Gm[r]
                    r += 1
                    for kd in range(KD):
                        id_ = od * SD + kd - PD
                        if id_ < 0 or id_ >= D:
                            continue
                        for kh in range(KH):
                            ih_ = oh * SH + kh - PH
                            if ih_ < 0 or ih_ >= H:
                                continue
                            for kw in range(KW):
                                iw_ = ow * SW + kw - PW
                                if iw_ < 0 or iw_ >= W:
                                    continue
                                dst = dx[nn, id_, ih_, iw_]
                                for c in range(C):
                                    dst[c] += gr[c] * scale


@numba_kernel(parallel=True)
def avg_pool_grad_kernel(g, dx, geo):
    n = dx.shape[0]
    nt = max(1, min(geo[20], n))
    counter = np.zeros(1, np.int64)
    for _ in prange(nt):
        fp_state = denormals_off()  # (each worker thread flushes denormals too)
        _avg_pool_grad_images(g, dx, geo, counter)
        denormals_restore(fp_state)


@numba_kernel()
def _axis_table(length, scale, linear):
    """(index0, index1, weight1) per output position along an axis (see axis_weights)."""
    out = length * scale
    first = np.empty(out, np.int64)
    second = np.empty(out, np.int64)
    weight = np.zeros(out, np.float64)
    for o in range(out):
        if not linear or scale == 1:
            first[o] = second[o] = o // scale
        else:
            coordinate = min(max((o + 0.5) / scale - 0.5, 0.0), length - 1.0)
            i = int(np.floor(coordinate))
            first[o] = i
            second[o] = min(i + 1, length - 1)
            weight[o] = coordinate - i
    return first, second, weight


@numba_kernel()
def _upsample_images(x, out, counter, td, th, tw, adjoint):
    """out = upsample(x) image by image (claimed from `counter`), or (adjoint) x = upsample_grad(out)."""
    C = x.shape[4]
    while True:
        nn = fetch_add(counter, 1)
        if nn >= x.shape[0]:
            break
        if adjoint:
            _zero_image(x, nn)
        for od in range(out.shape[1]):
            for oh in range(out.shape[2]):
                for ow in range(out.shape[3]):
                    orow = out[nn, od, oh, ow]
                    if not adjoint:
                        for c in range(C):
                            orow[c] = 0
                    for a in range(2):
                        wd = td[2][od] if a else 1.0 - td[2][od]
                        if wd == 0:
                            continue
                        id_ = td[1][od] if a else td[0][od]
                        for b in range(2):
                            wh = th[2][oh] if b else 1.0 - th[2][oh]
                            if wh == 0:
                                continue
                            ih_ = th[1][oh] if b else th[0][oh]
                            for e in range(2):
                                ww = tw[2][ow] if e else 1.0 - tw[2][ow]
                                if ww == 0:
                                    continue
                                xr = x[nn, id_, ih_, tw[1][ow] if e else tw[0][ow]]
                                weight = wd * wh * ww
                                if adjoint:
                                    for c in range(C):
                                        xr[c] += weight * orow[c]
                                elif weight == 1.0:
                                    for c in range(C):
                                        orow[c] += xr[c]
                                else:
                                    for c in range(C):
                                        orow[c] += weight * xr[c]


@numba_kernel(parallel=True)
def upsample_kernel(x, out, sd, sh, sw, linear, adjoint, threads):
    """Upsampling (x -> out) or its adjoint (out -> x, which it zeroes first); images per claim."""
    td = _axis_table(x.shape[1], sd, linear)
    th = _axis_table(x.shape[2], sh, linear)
    tw = _axis_table(x.shape[3], sw, linear)
    nt = max(1, min(threads, x.shape[0]))
    counter = np.zeros(1, np.int64)
    for _ in prange(nt):
        fp_state = denormals_off()  # (each worker thread flushes denormals too)
        _upsample_images(x, out, counter, td, th, tw, adjoint)
        denormals_restore(fp_state)


@numba_entry(27)
def pool(itemsize, xp, op, n, D, H, W, C, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT,
         average):
    geo = (D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT)
    if itemsize == 4:
        pool_kernel(array_at(xp, (n, D, H, W, C), np.float32), array_at(op, (n, OD, OH, OW, C), np.float32), geo,
                    average != 0)
    else:
        pool_kernel(array_at(xp, (n, D, H, W, C), np.float64), array_at(op, (n, OD, OH, OW, C), np.float64), geo,
                    average != 0)


@numba_entry(28)
def max_pool_grad(itemsize, xp, gp, op, n, D, H, W, C, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW,
                  G, ROWS, NT, positive):
    geo = (D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT)
    if itemsize == 4:
        max_pool_grad_kernel(array_at(xp, (n, D, H, W, C), np.float32), array_at(gp, (n, OD, OH, OW, C), np.float32),
                             array_at(op, (n, D, H, W, C), np.float32), geo, positive != 0)
    else:
        max_pool_grad_kernel(array_at(xp, (n, D, H, W, C), np.float64), array_at(gp, (n, OD, OH, OW, C), np.float64),
                             array_at(op, (n, D, H, W, C), np.float64), geo, positive != 0)


@numba_entry(27)
def avg_pool_grad(itemsize, gp, op, unused, n, D, H, W, C, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW,
                  G, ROWS, NT):
    geo = (D, H, W, KD, KH, KW, OD, OH, OW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G, ROWS, NT)
    if itemsize == 4:
        avg_pool_grad_kernel(array_at(gp, (n, OD, OH, OW, C), np.float32), array_at(op, (n, D, H, W, C), np.float32),
                             geo)
    else:
        avg_pool_grad_kernel(array_at(gp, (n, OD, OH, OW, C), np.float64), array_at(op, (n, D, H, W, C), np.float64),
                             geo)


@numba_entry(14)
def resample(itemsize, xp, op, n, D, H, W, C, sd, sh, sw, linear, adjoint, NT):
    """Upsampling x (n, D, H, W, C) into op, or (adjoint) its gradient op into x."""
    if itemsize == 4:
        upsample_kernel(array_at(xp, (n, D, H, W, C), np.float32),
                        array_at(op, (n, D * sd, H * sh, W * sw, C), np.float32), sd, sh, sw, linear != 0,
                        adjoint != 0, NT)
    else:
        upsample_kernel(array_at(xp, (n, D, H, W, C), np.float64),
                        array_at(op, (n, D * sd, H * sh, W * sw, C), np.float64), sd, sh, sw, linear != 0,
                        adjoint != 0, NT)


def _pool_call(entry, node, pointers, x_spatial, out_spatial, channels, extra=()):
    geo = pool_geometry(node.attrs, x_spatial, out_spatial, _threads())
    arguments = ([str(_itemsize(node))] + [f"{p}.ctypes.data" if p != "0" else "0" for p in pointers] + ["n"]
                 + [str(v) for v in geo[:3]] + [str(channels)] + [str(v) for v in geo[3:]] + [str(e) for e in extra])
    return f"{entry}({', '.join(arguments)})"


def numba_pool(node, inputs):
    (x,) = inputs
    return ["n = out.shape[0]", _pool_call("pool", node, ("a0", "out"), x.shape[1:-1], node.shape[1:-1],
                                           node.shape[-1], (int(node.attrs["mode"] == "avg"),))]


def numba_max_pool_grad(node, inputs, positive_mask=False):
    """With positive_mask, the fused epilogue `* (x > 0)` (the gradient of the relu producing x)."""
    x, g = inputs
    return ["n = out.shape[0]", _pool_call("max_pool_grad", node, ("a0", "a1", "out"), x.shape[1:-1], g.shape[1:-1],
                                           node.shape[-1], (int(positive_mask),))]


def numba_avg_pool_grad(node, inputs):
    (g,) = inputs
    return ["n = out.shape[0]", _pool_call("avg_pool_grad", node, ("a0", "out", "0"), node.shape[1:-1],
                                           g.shape[1:-1], node.shape[-1])]


def _upsample_call(node, x_pointer, out_pointer, x_shape, adjoint):
    sizes = ", ".join(str(v) for v in _canonical(x_shape[1:-1]) + (x_shape[-1],) + _canonical(node.attrs["size"]))
    linear = int(node.attrs["interpolation"] == "bilinear")
    return (f"resample({_itemsize(node)}, {x_pointer}.ctypes.data, {out_pointer}.ctypes.data, n, {sizes}, "
            f"{linear}, {int(adjoint)}, {_threads()})")


def numba_upsample(node, inputs):
    (x,) = inputs
    return ["n = out.shape[0]", _upsample_call(node, "a0", "out", x.shape, False)]


def numba_upsample_grad(node, inputs):
    return ["n = out.shape[0]", _upsample_call(node, "out", "a0", node.shape, True)]


for _template in (numba_pool, numba_max_pool_grad, numba_avg_pool_grad, numba_upsample, numba_upsample_grad):
    _template.kernels = "kgraph.ops.pool"
numba_max_pool_grad.positive_mask = True  # takes the relu-gradient epilogue


# -- registration ---------------------------------------------------------------------------------------------
register(OpDef("pool", KERNEL, _pool_infer, _pool_reference, grad=_pool_grad, samples=_pool_samples,
               doc="Max or average pooling, channels_last; attrs mode, window, strides, pads."))
register(OpDef("max_pool_grad", KERNEL, _max_grad_infer, _max_grad_reference, samples=_max_grad_samples,
               differentiable=False, extra={"epilogue": True},
               doc="The input gradient of max pooling: each output gradient goes to the first maximum of "
                   "its window (no gradient of its own: piecewise constant in x)."))
register(OpDef("avg_pool_grad", KERNEL, _avg_grad_infer, _avg_grad_reference, grad=_avg_grad_grad,
               samples=_avg_grad_samples,
               doc="The input gradient of average pooling; attrs of pool plus input_shape."))
register(OpDef("upsample", KERNEL, _upsample_infer, _upsample_reference,
               grad=lambda ctx: [bind("upsample_grad", [ctx.upstream], input_shape=tuple(ctx.inputs[0].shape[1:-1]),
                                      **_upsample_attrs(ctx.attrs))],
               samples=_upsample_samples,
               doc="Nearest or bilinear upsampling by integer factors, channels_last."))
register(OpDef("upsample_grad", KERNEL, _upsample_grad_infer, _upsample_grad_reference,
               grad=lambda ctx: [bind("upsample", [ctx.upstream], **_upsample_attrs(ctx.attrs))],
               samples=_upsample_grad_samples,
               doc="The adjoint of upsample; attrs of upsample plus input_shape."))

NUMBA_TEMPLATES = {"pool": numba_pool, "max_pool_grad": numba_max_pool_grad, "avg_pool_grad": numba_avg_pool_grad,
                   "upsample": numba_upsample, "upsample_grad": numba_upsample_grad}


# -- kgraph.ops functions (Keras 3 names and arguments) -----------------------------------------------------------
def _pool(mode, inputs, pool_size, strides, padding, data_format):
    x = ops.convert_to_tensor(inputs)
    data_format = standardize_data_format(data_format)
    rank = len(x.shape) - 2
    if rank not in (1, 2, 3):
        raise ValueError(f"{mode}_pool: inputs must have rank 3, 4 or 5, got shape {x.shape}")
    window = _tuple(pool_size, rank, "pool_size")
    strides = window if strides is None else _tuple(strides, rank, "strides")
    x = _to_channels_last(x, data_format)
    pads = resolve_padding(padding, x.shape[1:-1], window, strides, (1,) * rank)
    y = bind("pool", [x], mode=mode, window=window, strides=strides, pads=pads)
    return _from_channels_last(y, data_format)


def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """keras.ops.max_pool."""
    return _pool("max", inputs, pool_size, strides, padding, data_format)


def average_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """keras.ops.average_pool (the padding is not counted in the average)."""
    return _pool("avg", inputs, pool_size, strides, padding, data_format)


def upsample(inputs, size, interpolation="nearest", data_format=None):
    """Repeat or interpolate the spatial axes by integer factors `size`."""
    x = ops.convert_to_tensor(inputs)
    data_format = standardize_data_format(data_format)
    rank = len(x.shape) - 2
    size = _tuple(size, rank, "size")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    x = _to_channels_last(x, data_format)
    y = bind("upsample", [x], size=size, interpolation=interpolation)
    return _from_channels_last(y, data_format)


__all__ = ["max_pool", "average_pool"]
