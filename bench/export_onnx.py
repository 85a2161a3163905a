"""Benchmark: ONNX export time, and predict speed of kgraph vs onnxruntime on the exported file.

The models are bench/train_mlp.py's MLP (784-256-256-10) and bench/train_cnn.py's CNN
(28x28x1, two conv + pool blocks, two Dense), built by those scripts' builders. For each:
export time (first export, tracing included, and the median of the next ones), then
kgraph's predict and onnxruntime (CPUExecutionProvider, intra_op_num_threads=2,
inter_op_num_threads=1) side by side in alternating rounds, best round kept: throughput
at batch 128 (samples/s) and batch-1 latency (us per call). The outputs of the two are
compared too (max abs difference).

Prints one JSON line per model and runtime. Run: python bench/export_onnx.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train_cnn  # noqa: E402
import train_mlp  # noqa: E402

BATCH = 128


def emit(**record):
    print(json.dumps(record), flush=True)


def _latency_us(run, one, calls):
    start = time.perf_counter()
    for _ in range(calls):
        run(one)
    return (time.perf_counter() - start) / calls * 1e6


def bench(name, model, x, rounds, latency_calls):
    import onnxruntime as ort

    from kgraph.exporters import export_model

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, f"{name}.onnx")
        times = []
        for _ in range(4):
            start = time.perf_counter()
            export_model(model, path)
            times.append(time.perf_counter() - start)
        size = os.path.getsize(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    emit(model=name, export_first_s=round(times[0], 3), export_median_s=round(statistics.median(times[1:]), 3),
         onnx_bytes=size)

    batches = [x[i:i + BATCH] for i in range(0, len(x), BATCH)]
    one = x[:1]

    def kgraph_all(_):
        return model.predict(x, batch_size=BATCH, verbose=0)

    def ort_batch(batch):
        return session.run(None, {input_name: batch})[0]

    # Warm up both (kgraph compiles its predict function on the first call), and compare.
    expected = kgraph_all(None)
    got = np.concatenate([ort_batch(b) for b in batches])
    model(one)
    difference = float(np.max(np.abs(got - expected)))

    results = {"kgraph": {"rate": 0.0, "latency": float("inf")},
               "onnxruntime": {"rate": 0.0, "latency": float("inf")}}
    for _ in range(rounds):  # alternate, so both see the same machine load
        start = time.perf_counter()
        kgraph_all(None)
        rate = len(x) / (time.perf_counter() - start)
        results["kgraph"]["rate"] = max(results["kgraph"]["rate"], rate)
        start = time.perf_counter()
        for batch in batches:
            ort_batch(batch)
        rate = len(x) / (time.perf_counter() - start)
        results["onnxruntime"]["rate"] = max(results["onnxruntime"]["rate"], rate)
        results["kgraph"]["latency"] = min(results["kgraph"]["latency"], _latency_us(model, one, latency_calls))
        results["onnxruntime"]["latency"] = min(results["onnxruntime"]["latency"],
                                                _latency_us(ort_batch, one, latency_calls))
    for runtime, numbers in results.items():
        emit(model=name, runtime=runtime, predict_samples_per_s=round(numbers["rate"]),
             batch1_latency_us=round(numbers["latency"], 1), batch_size=BATCH,
             **({"threads": 2} if runtime == "onnxruntime" else {}))
    emit(model=name, onnxruntime_vs_kgraph_throughput=round(results["onnxruntime"]["rate"] / results["kgraph"]["rate"],
                                                            2),
         onnxruntime_vs_kgraph_latency=round(results["onnxruntime"]["latency"] / results["kgraph"]["latency"], 2),
         max_abs_diff=difference)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mlp-samples", type=int, default=BATCH * 40)
    parser.add_argument("--cnn-samples", type=int, default=BATCH * 10)
    parser.add_argument("--latency-calls", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    mlp_x = rng.standard_normal((args.mlp_samples, train_mlp.FEATURES)).astype("float32")
    bench("mlp", train_mlp.build_kgraph(), mlp_x, args.rounds, args.latency_calls)
    cnn_x = rng.standard_normal((args.cnn_samples, train_cnn.SIDE, train_cnn.SIDE, 1)).astype("float32")
    bench("cnn", train_cnn.build_kgraph(), cnn_x, args.rounds, args.latency_calls)


if __name__ == "__main__":
    main()
