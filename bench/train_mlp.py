"""Benchmark: Dense 784-256-256-10, batch 128, Adam, 12,800 synthetic samples.

Prints one JSON line per measurement: steady-state training samples/s, first-epoch seconds
(compile included), predict samples/s and batch-1 latency; then runs itself again in a
fresh process to show the kernel cache (first-epoch seconds drop); and, when torch is
installed, kgraph and PyTorch eager epochs on the same model alternated `--rounds` times
(other processes' load falls on both alike), as ratios of medians, of bests and of CPU time.

Run: python bench/train_mlp.py [--epochs 3] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SAMPLES, FEATURES, HIDDEN, CLASSES, BATCH = 12_800, 784, 256, 10, 128


def synthetic(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SAMPLES, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, SAMPLES).astype("int32")
    return x, y


def emit(**record):
    print(json.dumps(record), flush=True)


def build_kgraph():
    import kgraph as keras

    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(HIDDEN, activation="relu"),
                              keras.layers.Dense(HIDDEN, activation="relu"), keras.layers.Dense(CLASSES)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def bench_kgraph(epochs, label):
    x, y = synthetic()
    model = build_kgraph()
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    first_epoch = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
    train_rate = SAMPLES * epochs / (time.perf_counter() - start)
    model.predict(x[:BATCH], batch_size=BATCH, verbose=0)
    start = time.perf_counter()
    model.predict(x, batch_size=BATCH, verbose=0)
    predict_rate = SAMPLES / (time.perf_counter() - start)
    one = x[:1]
    model(one)
    start = time.perf_counter()
    calls = 2000
    for _ in range(calls):
        model(one)
    latency_us = (time.perf_counter() - start) / calls * 1e6
    emit(framework="kgraph", run=label, first_epoch_s=round(first_epoch, 3),
         train_samples_per_s=round(train_rate), predict_samples_per_s=round(predict_rate),
         batch1_latency_us=round(latency_us, 1))
    return model, train_rate


def build_torch():
    import torch

    x, y = synthetic()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype("int64"))
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch():
        permutation = torch.randperm(SAMPLES)
        for start in range(0, SAMPLES, BATCH):
            index = permutation[start:start + BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[index]), yt[index])
            loss.backward()
            optimizer.step()

    return epoch


def timed_epoch(epoch):
    """(samples/s, CPU seconds per step): the CPU time of all threads, which the load of
    other processes does not inflate (threads that spin while they wait count)."""
    start, cpu = time.perf_counter(), time.process_time()
    epoch()
    return SAMPLES / (time.perf_counter() - start), (time.process_time() - cpu) / (SAMPLES / BATCH)


def compare(model, rounds):
    """kgraph and PyTorch epochs alternated `rounds` times."""
    try:
        import torch
    except ImportError:
        emit(framework="pytorch-eager", skipped="torch is not installed")
        return
    torch_epoch = build_torch()
    torch_epoch()  # warm-up
    x, y = synthetic()

    def kgraph_epoch():
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)

    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(timed_epoch(kgraph_epoch))
        theirs.append(timed_epoch(torch_epoch))
    rates, cpus = [r for r, _ in ours], [c for _, c in ours]
    torch_rates, torch_cpus = [r for r, _ in theirs], [c for _, c in theirs]
    emit(framework="kgraph", run="alternating", train_samples_per_s=[round(r) for r in rates],
         cpu_ms_per_step=[round(c * 1e3, 2) for c in cpus])
    emit(framework="pytorch-eager", run="alternating", train_samples_per_s=[round(r) for r in torch_rates],
         cpu_ms_per_step=[round(c * 1e3, 2) for c in torch_cpus], threads=torch.get_num_threads())
    emit(comparison="kgraph/pytorch-eager training samples/s",
         median_ratio=round(float(np.median(rates) / np.median(torch_rates)), 2),
         best_ratio=round(max(rates) / max(torch_rates), 2),
         cpu_time_ratio=round(float(np.median(torch_cpus) / np.median(cpus)), 2),
         kgraph_median=round(float(np.median(rates))), torch_median=round(float(np.median(torch_rates))))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6, help="alternating kgraph/PyTorch epochs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        bench_kgraph(args.epochs, "fresh-process")
        return
    model, _ = bench_kgraph(args.epochs, "first-process")
    compare(model, args.rounds)
    subprocess.run([sys.executable, __file__, "--child", "--epochs", str(args.epochs)], check=True,
                   env=dict(os.environ))


if __name__ == "__main__":
    main()
