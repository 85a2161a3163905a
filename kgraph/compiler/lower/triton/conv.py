"""Triton templates for convolution, pooling and upsampling (channels_last, 1 to 3 spatial axes).

- conv, conv_input_grad, conv_filter_grad: implicit GEMMs on tl.dot. No im2col buffer:
  each program loads its (rows x taps*channels) tile straight from the input with the
  padding, stride and dilation folded into the index arithmetic and the masks, so the
  same template serves strides, dilation, groups (grid axis 2), negative (cropping)
  padding and 1-D to 3-D. conv and conv_input_grad apply the fused elementwise epilogue
  (bias, activation) on the accumulator tile, as the matmul template does.
- pool (max / avg): one program per block of output elements; the window's taps are
  unrolled in the source (windows are small), invalid (padding) taps masked.
- avg_pool_grad gathers (each input element sums the shares of the windows that cover
  it); max_pool_grad and upsample_grad scatter with atomic adds into a zeroed output.
- upsample (nearest / bilinear, half-pixel centers, edges clamped): 2^axes corners.
"""

from __future__ import annotations

import itertools

from kgraph.compiler.lower.triton.scalar import tl_dtype


def _prod(dims):
    from kgraph.compiler.lower.triton.codegen import _prod as prod

    return prod(dims)


def _dim(d):
    return "n" if d is None else str(d)


def decompose(index, dims, names):
    """Lines setting names[a] to the coordinate of `index` along dims[a] (row-major)."""
    lines = []
    for a, (d, name) in enumerate(zip(dims, names)):
        inner = _prod(dims[a + 1:])
        coord = index if inner == "1" else f"({index} // {inner})"
        if a > 0:
            coord = f"{coord} % {_dim(d)}"
        lines.append(f"{name} = {coord}")
    return lines


def _row_major(coords, dims):
    """Offset text of coordinates `coords` in a row-major array of `dims` (Horner form)."""
    text = coords[0]
    for coord, d in zip(coords[1:], dims[1:]):
        text = f"({text}) * {_dim(d)} + {coord}"
    return text


def _dot(precision, dtype):
    if dtype == "float64":
        return 'tl.dot(a, b, acc, input_precision="ieee")'
    if dtype == "float32":
        return f'tl.dot(a, b, acc, input_precision="{precision}")'
    return "tl.dot(a, b, acc)"


def conv_body(node, inputs, precision):
    """(body lines, grid dims (M, N, groups) as shape tuples, K dims) of the three GEMMs.

    The body leaves the product tile in `t<node id>`, its flat output index in `flat`
    and its mask in `mask`; the caller adds the epilogue and the store.
    """
    attrs = node.attrs
    strides, dilation, pads, groups = attrs["strides"], attrs["dilation"], attrs["pads"], attrs["groups"]
    rank = len(strides)
    spatial = [f"{{}}{a}" for a in range(rank)]
    acc_dtype = "tl.float64" if node.dtype == "float64" else "tl.float32"
    lines = ["rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)",
             "rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)",
             "grp = tl.program_id(2)"]
    if node.op == "conv":
        x, w = inputs
        S, C = x.shape[1:-1], x.shape[-1]
        K, Cg, F = w.shape[:-2], w.shape[-2], w.shape[-1]
        O = node.shape[1:-1]
        Fg = F // groups
        m_dims, k_total = (x.shape[0],) + tuple(O), _prod(list(K) + [Cg])
        lines += [f"M = {_prod(m_dims)}", f"KT = {k_total}", "rmask = rm < M", f"cmask = rn < {Fg}"]
        lines += decompose("rm", m_dims, ["bn"] + [s.format("o") for s in spatial])
        lines += [f"acc = tl.zeros((BLOCK_M, BLOCK_N), {acc_dtype})",
                  "for k0 in range(0, KT, BLOCK_K):",
                  "    kk = k0 + tl.arange(0, BLOCK_K)",
                  "    kmask = kk < KT",
                  f"    c = kk % {Cg}"]
        body = decompose(f"(kk // {Cg})", tuple(K), [s.format("t") for s in spatial])
        valid = "rmask[:, None] & kmask[None, :]"
        coords = ["bn[:, None]"]
        for a in range(rank):
            body.append(f"i{a} = o{a}[:, None] * {strides[a]} + t{a}[None, :] * {dilation[a]} - {pads[a][0]}")
            valid += f" & (i{a} >= 0) & (i{a} < {S[a]})"
            coords.append(f"i{a}")
        body += [f"a = tl.load(x + ({_row_major(coords, (x.shape[0],) + tuple(S))}) * {C} + grp * {Cg} + c[None, :], "
                 f"mask={valid}, other=0.0)",
                 f"b = tl.load(w + kk[:, None] * {F} + grp * {Fg} + rn[None, :], "
                 "mask=kmask[:, None] & cmask[None, :], other=0.0)",
                 f"acc = {_dot(precision, x.dtype if x.dtype == w.dtype else node.dtype)}"]
        lines += ["    " + line for line in body]
        lines += ["mask = rmask[:, None] & cmask[None, :]", f"flat = rm[:, None] * {F} + grp * {Fg} + rn[None, :]"]
        return lines, (m_dims, (Fg,), groups), ("x", "w")
    if node.op == "conv_input_grad":
        g, w = inputs
        O, F = g.shape[1:-1], g.shape[-1]
        K, Cg = w.shape[:-2], w.shape[-2]
        S, C = node.shape[1:-1], node.shape[-1]
        Fg = F // groups
        m_dims = (g.shape[0],) + tuple(S)
        lines += [f"M = {_prod(m_dims)}", f"KT = {_prod(list(K) + [Fg])}", "rmask = rm < M", f"cmask = rn < {Cg}"]
        lines += decompose("rm", m_dims, ["bn"] + [s.format("i") for s in spatial])
        lines += [f"acc = tl.zeros((BLOCK_M, BLOCK_N), {acc_dtype})",
                  "for k0 in range(0, KT, BLOCK_K):",
                  "    kk = k0 + tl.arange(0, BLOCK_K)",
                  "    kmask = kk < KT",
                  f"    f = kk % {Fg}",
                  f"    tap = kk // {Fg}"]
        body = decompose("tap", tuple(K), [s.format("t") for s in spatial])
        valid = "rmask[:, None] & kmask[None, :]"
        coords = ["bn[:, None]"]
        for a in range(rank):
            body.append(f"u{a} = i{a}[:, None] + {pads[a][0]} - t{a}[None, :] * {dilation[a]}")
            body.append(f"o{a} = u{a} // {strides[a]}")
            valid += f" & (u{a} >= 0) & (o{a} < {O[a]})"
            if strides[a] != 1:
                valid += f" & (u{a} % {strides[a]} == 0)"
            coords.append(f"o{a}")
        body += [f"a = tl.load(x + ({_row_major(coords, (g.shape[0],) + tuple(O))}) * {F} + grp * {Fg} + f[None, :], "
                 f"mask={valid}, other=0.0)",
                 f"b = tl.load(w + (tap[:, None] * {Cg} + rn[None, :]) * {F} + grp * {Fg} + f[:, None], "
                 "mask=kmask[:, None] & cmask[None, :], other=0.0)",
                 f"acc = {_dot(precision, g.dtype if g.dtype == w.dtype else node.dtype)}"]
        lines += ["    " + line for line in body]
        lines += ["mask = rmask[:, None] & cmask[None, :]", f"flat = rm[:, None] * {C} + grp * {Cg} + rn[None, :]"]
        return lines, (m_dims, (Cg,), groups), ("x", "w")
    # conv_filter_grad
    x, g = inputs
    S, C = x.shape[1:-1], x.shape[-1]
    O, F = g.shape[1:-1], g.shape[-1]
    K = tuple(attrs["kernel_size"])
    Cg, Fg = C // groups, F // groups
    m_dims = tuple(K) + (Cg,)
    k_dims = (x.shape[0],) + tuple(O)
    # Split-K: the reduction (over batch and output pixels) is long and the output small, so
    # grid axis 2 also splits the reduction into SPLIT_K chunks that add up atomically.
    lines[-1] = "grp = tl.program_id(2) // SPLIT_K"
    lines += [f"M = {_prod(m_dims)}", f"KT = {_prod(k_dims)}", "rmask = rm < M", f"cmask = rn < {Fg}",
              f"c = rm % {Cg}",
              "chunk = tl.cdiv(tl.cdiv(KT, SPLIT_K), BLOCK_K) * BLOCK_K",
              "k_start = (tl.program_id(2) % SPLIT_K) * chunk",
              "k_stop = tl.minimum(k_start + chunk, KT)"]
    lines += decompose(f"(rm // {Cg})", K, [s.format("t") for s in spatial])
    lines += [f"acc = tl.zeros((BLOCK_M, BLOCK_N), {acc_dtype})",
              "for k0 in range(k_start, k_stop, BLOCK_K):",
              "    kk = k0 + tl.arange(0, BLOCK_K)",
              "    kmask = kk < k_stop"]
    body = decompose("kk", k_dims, ["bn"] + [s.format("o") for s in spatial])
    valid = "rmask[:, None] & kmask[None, :]"
    coords = ["bn[None, :]"]
    for a in range(rank):
        body.append(f"i{a} = o{a}[None, :] * {strides[a]} + t{a}[:, None] * {dilation[a]} - {pads[a][0]}")
        valid += f" & (i{a} >= 0) & (i{a} < {S[a]})"
        coords.append(f"i{a}")
    body += [f"a = tl.load(x + ({_row_major(coords, (x.shape[0],) + tuple(S))}) * {C} + grp * {Cg} + c[:, None], "
             f"mask={valid}, other=0.0)",
             f"b = tl.load(w + kk[:, None] * {F} + grp * {Fg} + rn[None, :], "
             "mask=kmask[:, None] & cmask[None, :], other=0.0)",
             f"acc = {_dot(precision, x.dtype if x.dtype == g.dtype else node.dtype)}"]
    lines += ["    " + line for line in body]
    lines += ["mask = rmask[:, None] & cmask[None, :]", f"flat = rm[:, None] * {F} + grp * {Fg} + rn[None, :]"]
    return lines, (m_dims, (Fg,), groups), ("x", "w")


def conv_k_dims(node, inputs):
    """The GEMM's reduction length as a shape (for block sizes)."""
    groups = node.attrs["groups"]
    if node.op == "conv":
        return tuple(inputs[1].shape[:-2]) + (inputs[1].shape[-2],)
    if node.op == "conv_input_grad":
        return tuple(inputs[1].shape[:-2]) + (inputs[0].shape[-1] // groups,)
    return (inputs[0].shape[0],) + tuple(inputs[1].shape[1:-1])


# -- pooling -----------------------------------------------------------------------------------------------
def _taps(window):
    return list(itertools.product(*(range(k) for k in window)))


def _count_lines(window, strides, pads, spatial, prefix="o"):
    """Lines computing `count`, the number of window taps inside the input at output o."""
    lines, factors = [], []
    for a, (k, s, (lo, _), size) in enumerate(zip(window, strides, pads, spatial)):
        lines.append(f"first{a} = tl.maximum({lo} - {prefix}{a} * {s}, 0)")
        lines.append(f"last{a} = tl.minimum({size} + {lo} - {prefix}{a} * {s}, {k})")
        factors.append(f"(last{a} - first{a})")
    lines.append(f"count = {' * '.join(factors)}")
    return lines


def pool_lines(node, inputs):
    """Body of the flat kernel of `pool`, `avg_pool_grad` or `upsample` (sets `value`)."""
    attrs = node.attrs
    dtype = tl_dtype(node.dtype)
    rank = len(node.shape) - 2
    out_dims = tuple(node.shape)
    names = ["bn"] + [f"o{a}" for a in range(rank)] + ["ch"]
    lines = decompose("offs", out_dims, names)
    if node.op == "pool":
        (x,) = inputs
        S, C = x.shape[1:-1], x.shape[-1]
        window, strides, pads = attrs["window"], attrs["strides"], attrs["pads"]
        is_max = attrs["mode"] == "max"
        acc = "-INF" if is_max else "0.0"
        lines.append(f"acc = tl.full([BLOCK], {acc}, tl.float32)")
        for tap in _taps(window):
            valid, coords = "mask", ["bn"]
            for a, t in enumerate(tap):
                index = f"(o{a} * {strides[a]} + {t - pads[a][0]})"
                valid += f" & ({index} >= 0) & ({index} < {S[a]})"
                coords.append(index)
            offset = f"({_row_major(coords, (x.shape[0],) + tuple(S))}) * {C} + ch"
            other = "-INF" if is_max else "0.0"
            load = f"tl.cast(tl.load(a0 + {offset}, mask={valid}, other={other}), tl.float32)"
            lines.append(f"acc = tl.maximum(acc, {load})" if is_max else f"acc = acc + {load}")
        if not is_max:
            lines += _count_lines(window, strides, pads, S)
            lines.append("acc = acc / tl.cast(count, tl.float32)")
        lines.append(f"value = tl.cast(acc, {dtype})")
        return lines
    if node.op == "avg_pool_grad":
        (g,) = inputs
        O, C = g.shape[1:-1], g.shape[-1]
        S = node.shape[1:-1]
        window, strides, pads = attrs["window"], attrs["strides"], attrs["pads"]
        names = ["bn"] + [f"i{a}" for a in range(rank)] + ["ch"]
        lines = decompose("offs", out_dims, names)
        lines.append("acc = tl.zeros([BLOCK], tl.float32)")
        for tap in _taps(window):
            valid, coords, tap_lines = "mask", ["bn"], []
            for a, t in enumerate(tap):
                tap_lines.append(f"u{a} = i{a} + {pads[a][0] - t}")
                tap_lines.append(f"o{a} = u{a} // {strides[a]}")
                valid += f" & (u{a} >= 0) & (o{a} < {O[a]})"
                if strides[a] != 1:
                    valid += f" & (u{a} % {strides[a]} == 0)"
                coords.append(f"o{a}")
            lines += tap_lines + _count_lines(window, strides, pads, S)
            offset = f"({_row_major(coords, (g.shape[0],) + tuple(O))}) * {C} + ch"
            lines.append(f"acc = acc + tl.cast(tl.load(a0 + {offset}, mask={valid}, other=0.0), tl.float32) "
                         "/ tl.cast(tl.maximum(count, 1), tl.float32)")
        lines.append(f"value = tl.cast(acc, {dtype})")
        return lines
    # upsample
    (x,) = inputs
    S, C = x.shape[1:-1], x.shape[-1]
    lines += _axis_weight_lines(attrs, S, "o")
    lines.append("acc = tl.zeros([BLOCK], tl.float32)")
    for corner in itertools.product((0, 1), repeat=rank):
        weight, coords = [], ["bn"]
        for a, which in enumerate(corner):
            coords.append(f"j{which}_{a}")
            weight.append(f"(1.0 - w{a})" if which == 0 else f"w{a}")
        offset = f"({_row_major(coords, (x.shape[0],) + tuple(S))}) * {C} + ch"
        lines.append(f"acc = acc + {' * '.join(weight)} * tl.cast(tl.load(a0 + {offset}, mask=mask, other=0.0), "
                     "tl.float32)")
    lines.append(f"value = tl.cast(acc, {dtype})")
    return lines


def _axis_weight_lines(attrs, spatial, prefix):
    """Per axis a: source indices j0_a, j1_a and weight w_a of output coordinate prefix{a}
    (kgraph.ops.pool.axis_weights)."""
    lines = []
    for a, (length, scale) in enumerate(zip(spatial, attrs["size"])):
        if attrs["interpolation"] == "nearest" or scale == 1:
            lines += [f"j0_{a} = {prefix}{a} // {scale}", f"j1_{a} = j0_{a}", f"w{a} = 0.0"]
        else:
            lines += [f"z{a} = (tl.cast({prefix}{a}, tl.float32) + 0.5) / {float(scale)} - 0.5",
                      f"z{a} = tl.minimum(tl.maximum(z{a}, 0.0), {float(length - 1)})",
                      f"j0_{a} = tl.cast(tl.floor(z{a}), tl.int32)",
                      f"j1_{a} = tl.minimum(j0_{a} + 1, {length - 1})",
                      f"w{a} = z{a} - tl.cast(j0_{a}, tl.float32)"]
    return lines


def scatter_lines(node, inputs):
    """Body of the scatter kernels (max_pool_grad, upsample_grad) over the upstream gradient's
    flat index: they atomically add into `out`, zeroed by a fill launch first."""
    attrs = node.attrs
    rank = len(node.shape) - 2
    S, C = node.shape[1:-1], node.shape[-1]
    if node.op == "max_pool_grad":
        x, g = inputs
        window, strides, pads = attrs["window"], attrs["strides"], attrs["pads"]
        lines = decompose("offs", tuple(g.shape), ["bn"] + [f"o{a}" for a in range(rank)] + ["ch"])
        lines += ["best = tl.full([BLOCK], -INF, tl.float32)", "best_at = tl.zeros([BLOCK], tl.int32) - 1"]
        for tap in _taps(window):
            valid, coords = "mask", ["bn"]
            for a, t in enumerate(tap):
                index = f"(o{a} * {strides[a]} + {t - pads[a][0]})"
                valid += f" & ({index} >= 0) & ({index} < {S[a]})"
                coords.append(index)
            offset = f"({_row_major(coords, (x.shape[0],) + tuple(S))}) * {C} + ch"
            lines += [f"at = {offset}",
                      f"v = tl.cast(tl.load(a0 + at, mask={valid}, other=-INF), tl.float32)",
                      f"hit = ({valid}) & ((v > best) | (best_at < 0))",
                      "best = tl.where(hit, v, best)",
                      "best_at = tl.where(hit, at, best_at)"]
        lines += ["grad = tl.load(a1 + offs, mask=mask, other=0.0)",
                  "tl.atomic_add(out + tl.maximum(best_at, 0), grad, mask=mask & (best_at >= 0))"]
        return lines
    # upsample_grad: the adjoint of upsample
    (g,) = inputs
    lines = decompose("offs", tuple(g.shape), ["bn"] + [f"o{a}" for a in range(rank)] + ["ch"])
    lines += _axis_weight_lines(attrs, S, "o")
    lines.append("grad = tl.cast(tl.load(a0 + offs, mask=mask, other=0.0), tl.float32)")
    for corner in itertools.product((0, 1), repeat=rank):
        weight, coords = [], ["bn"]
        for a, which in enumerate(corner):
            coords.append(f"j{which}_{a}")
            weight.append(f"(1.0 - w{a})" if which == 0 else f"w{a}")
        offset = f"({_row_major(coords, (g.shape[0],) + tuple(S))}) * {C} + ch"
        lines.append(f"tl.atomic_add(out + {offset}, tl.cast({' * '.join(weight)} * grad, "
                     f"{tl_dtype(node.dtype)}), mask=mask)")
    return lines
