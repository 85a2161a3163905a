"""Benchmark: a small CNN on 28x28x1 synthetic images, batch 128, Adam.

Conv2D(32, 3, relu) -> MaxPooling2D(2) -> Conv2D(64, 3, relu) -> MaxPooling2D(2) -> Flatten
-> Dense(128, relu) -> Dense(10), trained on 12,800 synthetic samples.

Prints one JSON line per measurement: steady-state training samples/s, first-epoch seconds
(compile included), predict samples/s and batch-1 latency; then the same in a fresh
process (the kernel cache: first-epoch seconds drop); PyTorch eager on the same model in
the same run, as a ratio (and PyTorch again with glibc told to keep freed memory, which
PyTorch's CNN needs on these machines); and a profile of the training step: the time of
each kernel of the generated module, measured with cycle counters around every call.

Run: python bench/train_cnn.py [--epochs 2] [--no-profile]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SAMPLES, SIDE, CLASSES, BATCH = 12_800, 28, 10, 128


def synthetic(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SAMPLES, SIDE, SIDE, 1)).astype("float32")
    y = rng.integers(0, CLASSES, SAMPLES).astype("int32")
    return x, y


def emit(**record):
    print(json.dumps(record), flush=True)


def build_kgraph():
    import kgraph as keras
    from kgraph import layers

    model = keras.Sequential([
        keras.Input((SIDE, SIDE, 1)),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(CLASSES)])
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
    calls = 500
    start = time.perf_counter()
    for _ in range(calls):
        model(one)
    latency_us = (time.perf_counter() - start) / calls * 1e6
    emit(framework="kgraph", run=label, first_epoch_s=round(first_epoch, 3),
         train_samples_per_s=round(train_rate), predict_samples_per_s=round(predict_rate),
         batch1_latency_us=round(latency_us, 1))
    return model, train_rate


def profile_kgraph(model, steps=20):
    """The train step's time per kernel (fusion group), by CPU time (all threads: what other
    processes' load does not inflate), largest first; elapsed time (TSC) alongside."""
    from kgraph.compiler.lower.numba.profile import profile

    x, y = synthetic()
    key = next(k for k in model._compiled_functions if k[0] == "train")
    executable = model._compiled_functions[key]
    rows, total, cpu_total = profile(executable, [x[:BATCH], y[:BATCH]], steps=steps)
    emit(profile="train step", step_ms=round(total * 1e3, 3), step_cpu_ms=round(cpu_total * 1e3, 3),
         kernels_ms=round(sum(r["seconds"] for r in rows) * 1e3, 3),
         kernels_cpu_ms=round(sum(r["cpu_seconds"] for r in rows) * 1e3, 3), kernels=len(rows),
         samples_per_s_in_profile=round(BATCH / total))
    for row in sorted(rows, key=lambda r: -r["cpu_seconds"]):
        if row["cpu_share"] < 0.005:
            continue
        emit(kernel=row["index"], kind=row["kind"], ops=row["ops"][:90], shape=str(row["shape"]),
             cpu_ms=round(row["cpu_seconds"] * 1e3, 3), cpu_share=round(row["cpu_share"], 3),
             ms=round(row["seconds"] * 1e3, 3))


def build_torch():
    import torch

    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(),
                          nn.Linear(128, CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x, y = synthetic()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y.astype("int64"))

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


def compare(model, rounds, label="pytorch-eager"):
    """kgraph and PyTorch epochs alternated `rounds` times (other processes' load falls on both alike)."""
    try:
        import torch
    except ImportError:
        emit(framework=label, skipped="torch is not installed")
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
         cpu_ms_per_step=[round(c * 1e3, 1) for c in cpus])
    emit(framework=label, run="alternating", train_samples_per_s=[round(r) for r in torch_rates],
         cpu_ms_per_step=[round(c * 1e3, 1) for c in torch_cpus], threads=torch.get_num_threads())
    emit(comparison=f"kgraph/{label} training samples/s",
         median_ratio=round(float(np.median(rates) / np.median(torch_rates)), 2),
         best_ratio=round(max(rates) / max(torch_rates), 2),
         cpu_time_ratio=round(float(np.median(torch_cpus) / np.median(cpus)), 2),
         kgraph_median=round(float(np.median(rates))), torch_median=round(float(np.median(torch_rates))))


def torch_only(rounds, label):
    torch_epoch = build_torch()
    torch_epoch()
    measured = [timed_epoch(torch_epoch) for _ in range(rounds)]
    rates = [r for r, _ in measured]
    emit(framework=label, train_samples_per_s=[round(r) for r in rates], median=round(float(np.median(rates))),
         cpu_ms_per_step=[round(c * 1e3, 1) for _, c in measured])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6, help="alternating kgraph/PyTorch epochs")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--child", choices=["kgraph", "torch-keep-memory"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "kgraph":
        bench_kgraph(args.epochs, "fresh-process")
        return
    if args.child == "torch-keep-memory":
        torch_only(args.rounds, "pytorch-eager-keep-freed-memory")
        return
    model, _ = bench_kgraph(args.epochs, "first-process")
    compare(model, args.rounds)
    subprocess.run([sys.executable, __file__, "--child", "kgraph", "--epochs", str(args.epochs)], check=True,
                   env=dict(os.environ))
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="1000000000", MALLOC_MMAP_THRESHOLD_="1000000000")
    subprocess.run([sys.executable, __file__, "--child", "torch-keep-memory", "--rounds", str(args.rounds)],
                   check=False, env=env)
    if not args.no_profile:
        profile_kgraph(model)


if __name__ == "__main__":
    main()
