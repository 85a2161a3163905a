"""Benchmark: the same Elman recurrence, h = tanh(x W + h U + b), three ways, one training step.

- kgraph `RNN(cell)` with a user-written cell: the step runs in a `scan` op (a compiled loop
  calling the step's compiled graph; the gradient is a reverse scan);
- kgraph `SimpleRNN`: the fused recurrence op (kgraph/ops/recurrent.py);
- PyTorch eager `nn.RNN` (when torch is installed).

Input (batch 64, 50 steps, 32 features) -> recurrence(64) -> Dense(1), Adam, MSE. Rounds
alternate the three (other processes' load falls on all alike). Prints one JSON line per
measurement: milliseconds per training step of each, and the ratios.

Run: python bench/scan_rnn.py [--rounds 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

BATCH, LENGTH, FEATURES, UNITS = 64, 50, 32, 64


def emit(**record):
    print(json.dumps(record), flush=True)


def build_kgraph(custom):
    import kgraph as keras
    from kgraph import layers, ops

    class ElmanCell(layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.state_size = units

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform")
            self.recurrent_kernel = self.add_weight(shape=(self.units, self.units), initializer="orthogonal")
            self.bias = self.add_weight(shape=(self.units,), initializer="zeros")

        def call(self, inputs, states):
            h = ops.tanh(ops.matmul(inputs, self.kernel) + ops.matmul(states[0], self.recurrent_kernel) + self.bias)
            return h, [h]

    recurrence = layers.RNN(ElmanCell(UNITS)) if custom else layers.SimpleRNN(UNITS)
    model = keras.Sequential([keras.Input((LENGTH, FEATURES)), recurrence, layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def kgraph_step_ms(model, x, y, steps):
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # compile, warm
    start = time.perf_counter()
    model.fit(np.tile(x, (steps, 1, 1)), np.tile(y, (steps, 1)), batch_size=BATCH, epochs=1, verbose=0)
    return 1000 * (time.perf_counter() - start) / steps


def torch_step_ms(x, y, steps):
    import torch

    torch.set_num_threads(2)
    rnn, dense = torch.nn.RNN(FEATURES, UNITS, batch_first=True), torch.nn.Linear(UNITS, 1)
    optimizer = torch.optim.Adam(list(rnn.parameters()) + list(dense.parameters()), 1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        optimizer.zero_grad()
        _, h = rnn(xt)
        loss = torch.nn.functional.mse_loss(dense(h[-1]), yt)
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return 1000 * (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, LENGTH, FEATURES)).astype("float32")
    y = x[:, -1, :1].copy()
    start = time.perf_counter()
    scan_model = build_kgraph(custom=True)
    scan_model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    emit(what="first fit (compile included), custom cell in a scan", seconds=round(time.perf_counter() - start, 2))
    fused_model = build_kgraph(custom=False)
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    for round_index in range(args.rounds):
        scan_ms = kgraph_step_ms(scan_model, x, y, args.steps)
        fused_ms = kgraph_step_ms(fused_model, x, y, args.steps)
        record = dict(round=round_index, scan_cell_ms=round(scan_ms, 2), fused_simple_rnn_ms=round(fused_ms, 2),
                      scan_over_fused=round(scan_ms / fused_ms, 2))
        if have_torch:
            torch_ms = torch_step_ms(x, y, args.steps)
            record.update(torch_rnn_ms=round(torch_ms, 2), scan_over_torch=round(scan_ms / torch_ms, 2))
        emit(**record)


if __name__ == "__main__":
    main()
