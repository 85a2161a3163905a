"""model.summary(): the table Keras 3 prints (layer, output shape, parameter count)."""

from __future__ import annotations

import numpy as np


def _bytes(count, dtype_size=4):
    size = count * dtype_size
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= 1024


def _shape_text(shape):
    if isinstance(shape, list):
        return ", ".join(_shape_text(s) for s in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def _rows(model):
    from kgraph.layers.core import InputLayer
    from kgraph.models.functional import Functional
    from kgraph.models.sequential import Sequential

    functional = isinstance(model, Functional)
    rows = []
    layers = model.layers
    if isinstance(model, Sequential) and model._functional is not None:
        layers = model.layers
    for layer in layers:
        try:
            shape = _shape_text(layer.output_shape) if layer._inbound_nodes else "?"
        except (AttributeError, ValueError, TypeError):
            shape = "?"
        params = layer.count_params() if layer.built else 0
        row = [f"{layer.name} ({type(layer).__name__})", shape, f"{params:,}" if layer.built else "0 (unbuilt)"]
        if functional:
            sources = []
            if not isinstance(layer, InputLayer) and layer._inbound_nodes:
                for tensor in layer._inbound_nodes[0].input_tensors:
                    source, node_index, tensor_index = tensor._keras_history
                    sources.append(f"{source.name}[{node_index}][{tensor_index}]")
            row.append(", ".join(sources) if sources else "-")
        rows.append(row)
    return rows, functional


def print_summary(model, line_length=None, print_fn=None, show_trainable=False):
    print_fn = print_fn or print
    rows, functional = _rows(model)
    headers = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if functional else [])
    widths = [max(31, *(len(r[0]) for r in rows)) if rows else 31, 22, 13] + ([20] if functional else [])
    for i in range(len(headers)):
        widths[i] = max([widths[i], len(headers[i])] + [len(r[i]) for r in rows])
    widths = [w + 2 for w in widths]

    def line(left, mid, right, fill):
        return left + mid.join(fill * w for w in widths) + right

    def cells(values, border):
        parts = []
        for i, (value, width) in enumerate(zip(values, widths)):
            text = f" {value} "
            parts.append(text.rjust(width) if i == 2 else text.ljust(width))
        return border + border.join(parts) + border

    kind = "Functional" if functional else type(model).__name__
    print_fn(f'Model: "{model.name}"' if kind else "")
    print_fn(line("┏", "┳", "┓", "━"))
    print_fn(cells(headers, "┃"))
    print_fn(line("┡", "╇", "┩", "━"))
    for index, row in enumerate(rows):
        print_fn(cells(row, "│"))
        if index < len(rows) - 1:
            print_fn(line("├", "┼", "┤", "─"))
    print_fn(line("└", "┴", "┘", "─"))
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    non_trainable = int(sum(np.prod(v.shape) for v in model.non_trainable_weights))
    total = trainable + non_trainable
    print_fn(f" Total params: {total:,} ({_bytes(total)})")
    print_fn(f" Trainable params: {trainable:,} ({_bytes(trainable)})")
    print_fn(f" Non-trainable params: {non_trainable:,} ({_bytes(non_trainable)})")
