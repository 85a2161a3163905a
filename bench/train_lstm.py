"""Benchmark: Embedding(10000, 64) -> LSTM(128) -> Dense(1) on length-100 synthetic int sequences.

Batch 64, Adam, binary cross-entropy from logits. Prints one JSON line per measurement:
first-epoch seconds (compile included) and steady-state training samples/s of kgraph;
PyTorch eager's nn.LSTM on the same model, alternated epoch by epoch with kgraph (other
processes' load falls on both alike), as a ratio; and a profile of kgraph's training step
(the time of each kernel of the generated module, kgraph.compiler.lower.numba.profile).

Run: python bench/train_lstm.py [--samples 1280] [--rounds 3] [--no-profile]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

VOCAB, EMBED, UNITS, LENGTH, BATCH = 10_000, 64, 128, 100, 64


def synthetic(samples, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, VOCAB, (samples, LENGTH)).astype("int32")
    y = (x[:, -1:] % 2).astype("float32")  # learnable from the last token
    return x, y


def emit(**record):
    print(json.dumps(record), flush=True)


def build_kgraph():
    import kgraph as keras
    from kgraph import layers

    model = keras.Sequential([keras.Input((LENGTH,), dtype="int32"), layers.Embedding(VOCAB, EMBED),
                              layers.LSTM(UNITS), layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def build_torch(x, y):
    import torch

    nn = torch.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, EMBED)
            self.lstm = nn.LSTM(EMBED, UNITS, batch_first=True)
            self.dense = nn.Linear(UNITS, 1)

        def forward(self, ids):
            _, (h, _) = self.lstm(self.embedding(ids))
            return self.dense(h[-1])

    model = Model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(x.astype("int64")), torch.from_numpy(y)

    def epoch():
        permutation = torch.randperm(len(x))
        for start in range(0, len(x), BATCH):
            index = permutation[start:start + BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[index]), yt[index])
            loss.backward()
            optimizer.step()

    return epoch


def timed(epoch, samples):
    """(samples/s, CPU ms per step of all threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    epoch()
    return samples / (time.perf_counter() - start), (time.process_time() - cpu) * 1e3 / (samples / BATCH)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1280, help="training samples per epoch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating kgraph/PyTorch epochs")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    x, y = synthetic(args.samples)
    model = build_kgraph()
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    first_epoch = time.perf_counter() - start
    emit(framework="kgraph", first_epoch_s=round(first_epoch, 2), samples=args.samples,
         loss=round(history.history["loss"][0], 4))

    def kgraph_epoch():
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)

    try:
        import torch

        torch_epoch = build_torch(x, y)
        torch_epoch()  # warm-up
    except ImportError:
        torch_epoch = None
        emit(framework="pytorch-eager", skipped="torch is not installed")
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(timed(kgraph_epoch, args.samples))
        if torch_epoch is not None:
            theirs.append(timed(torch_epoch, args.samples))
    rates = [r for r, _ in ours]
    emit(framework="kgraph", train_samples_per_s=[round(r, 1) for r in rates],
         cpu_ms_per_step=[round(c, 1) for _, c in ours], median=round(float(np.median(rates)), 1))
    if theirs:
        torch_rates = [r for r, _ in theirs]
        emit(framework="pytorch-eager", train_samples_per_s=[round(r, 1) for r in torch_rates],
             cpu_ms_per_step=[round(c, 1) for _, c in theirs], median=round(float(np.median(torch_rates)), 1),
             threads=torch.get_num_threads())
        emit(comparison="kgraph/pytorch-eager training samples/s",
             median_ratio=round(float(np.median(rates) / np.median(torch_rates)), 2),
             cpu_time_ratio=round(float(np.median([c for _, c in theirs]) / np.median([c for _, c in ours])), 2))
    if not args.no_profile:
        from kgraph.compiler.lower.numba.profile import profile

        key = next(k for k in model._compiled_functions if k[0] == "train")
        rows, total, cpu_total = profile(model._compiled_functions[key], [x[:BATCH], y[:BATCH]], steps=5)
        emit(profile="train step", step_ms=round(total * 1e3, 2), step_cpu_ms=round(cpu_total * 1e3, 2),
             kernels=len(rows), samples_per_s_in_profile=round(BATCH / total, 1))
        for row in sorted(rows, key=lambda r: -r["cpu_seconds"]):
            if row["cpu_share"] < 0.01:
                continue
            emit(kernel=row["index"], kind=row["kind"], ops=row["ops"][:90], shape=str(row["shape"]),
                 cpu_ms=round(row["cpu_seconds"] * 1e3, 2), cpu_share=round(row["cpu_share"], 3),
                 ms=round(row["seconds"] * 1e3, 2))


if __name__ == "__main__":
    main()
