"""Benchmark: one MultiHeadAttention self-attention training step (forward + backward + SGD).

Batch 32, sequence 128, 8 heads, key_dim 64, feature dim 512, mean-squared-error loss. The
same math runs four ways in one process, alternated round by round (other processes' load
falls on all alike): kgraph's compiled training step with the fused attention op
(kgraph/ops/attention.py) and with the unfused matmul/softmax path ("kgraph_unfused"),
numpy (forward and hand-written backward, float32 matmuls on the same BLAS), and PyTorch
eager on the CPU. Prints one JSON line per measurement: milliseconds per step of each, the
ratios, and a profile of kgraph's step (kgraph.compiler.lower.numba.profile), the path
`--fused` names (auto: the layers' own rule).

Run: python bench/attention.py [--rounds 5] [--batch 32] [--seq 128] [--fused always|auto] [--no-profile]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

HEADS, KEY_DIM, FEATURES = 8, 64, 512


def emit(**record):
    print(json.dumps(record), flush=True)


def build_kgraph(seq, x, y, mode):
    """The model, its initial weights, compiled with the attention path `mode` (traced at the first step)."""
    import kgraph as keras
    from kgraph import layers
    from kgraph.ops import attention

    tokens = keras.Input((seq, FEATURES))
    out = layers.MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM)(tokens, tokens)
    model = keras.Model(tokens, out)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    weights = [w.numpy() for w in model.layers[1].weights]
    saved, attention.MODE = attention.MODE, mode
    try:
        start = time.perf_counter()
        model.train_on_batch(x, y)
        first = time.perf_counter() - start
    finally:
        attention.MODE = saved
    return model, weights, first


def numpy_step(weights, x, y, lr=1e-3):
    """Forward, backward and SGD update of MultiHeadAttention in numpy (Keras 3's formulas)."""
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    batch, seq, dim = x.shape
    flat = x.reshape(-1, dim)
    scale = KEY_DIM ** -0.5

    def heads(w, b):  # (B, H, T, D)
        return np.ascontiguousarray((flat @ w.reshape(dim, -1) + b.reshape(-1)).reshape(batch, seq, HEADS, -1)
                                    .transpose(0, 2, 1, 3))

    def t(a):  # numpy's stacked matmul takes BLAS only for contiguous operands
        return np.ascontiguousarray(a.swapaxes(-1, -2))

    q, k, v = heads(wq, bq) * scale, heads(wk, bk), heads(wv, bv)
    logits = q @ t(k)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    context = (p @ v).transpose(0, 2, 1, 3).reshape(-1, HEADS * KEY_DIM)
    out = context @ wo.reshape(HEADS * KEY_DIM, dim) + bo
    d_out = (2.0 / out.size) * (out - y.reshape(-1, dim))
    grads = {"wo": context.T @ d_out, "bo": d_out.sum(0)}
    d_context = np.ascontiguousarray((d_out @ wo.reshape(HEADS * KEY_DIM, dim).T).reshape(batch, seq, HEADS, -1)
                                     .transpose(0, 2, 1, 3))
    d_p = d_context @ t(v)
    d_v = t(p) @ d_context
    d_logits = p * (d_p - (d_p * p).sum(-1, keepdims=True))
    d_q = (d_logits @ k) * scale
    d_k = t(d_logits) @ q
    for name, d in (("q", d_q), ("k", d_k), ("v", d_v)):
        d = d.transpose(0, 2, 1, 3).reshape(-1, HEADS * KEY_DIM)
        grads["w" + name], grads["b" + name] = flat.T @ d, d.sum(0)
    for i, name in enumerate(("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo")):
        weights[i] -= lr * grads[name].reshape(weights[i].shape)


def build_torch(weights, x, y):
    import torch

    params = [torch.tensor(w, requires_grad=True) for w in weights]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.SGD(params, lr=1e-3)

    def step():
        wq, bq, wk, bk, wv, bv, wo, bo = params
        q = torch.einsum("btd,dhk->bhtk", xt, wq) + bq[None, :, None, :]
        k = torch.einsum("btd,dhk->bhtk", xt, wk) + bk[None, :, None, :]
        v = torch.einsum("btd,dhk->bhtk", xt, wv) + bv[None, :, None, :]
        p = torch.softmax((q / KEY_DIM ** 0.5) @ k.transpose(-1, -2), dim=-1)
        out = torch.einsum("bhtk,hkd->btd", p @ v, wo) + bo
        loss = torch.mean((out - yt) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step, torch.get_num_threads()


def timed(step, repeats):
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) * 1e3 / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the three")
    parser.add_argument("--steps", type=int, default=3, help="steps per round and framework")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--fused", default="always", choices=("always", "auto"),
                        help="the attention path of the 'kgraph' runs (kgraph_unfused is always the unfused one)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--skip-numpy", action="store_true",
                        help="leave out the numpy runner (its own BLAS thread pool disturbs the others' rounds)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.seq, FEATURES)).astype("float32")
    y = rng.standard_normal((args.batch, args.seq, FEATURES)).astype("float32")
    model, weights, first = build_kgraph(args.seq, x, y, args.fused)
    emit(framework="kgraph", attention=args.fused, first_step_s=round(first, 2), batch=args.batch, seq=args.seq,
         heads=HEADS, key_dim=KEY_DIM, features=FEATURES)
    unfused, _, first = build_kgraph(args.seq, x, y, "never")
    emit(framework="kgraph_unfused", first_step_s=round(first, 2))
    runners = {"kgraph": lambda: model.train_on_batch(x, y),
               "kgraph_unfused": lambda: unfused.train_on_batch(x, y)}
    if not args.skip_numpy:
        runners["numpy"] = lambda: numpy_step(weights, x, y)
    threads = None
    try:
        runners["torch"], threads = build_torch([w.copy() for w in weights], x, y)
    except ImportError:
        emit(framework="torch", skipped="torch is not installed")
    for step in runners.values():
        step()  # warm-up
    times = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, step in runners.items():
            times[name].append(timed(step, args.steps))
    medians = {name: float(np.median(t)) for name, t in times.items()}
    for name, t in times.items():
        emit(framework=name, ms_per_step=[round(v, 1) for v in t], median_ms=round(medians[name], 1),
             **({"threads": threads} if name == "torch" else {}))
    for mine, other in (("kgraph", "torch"), ("kgraph_unfused", "torch"), ("kgraph", "kgraph_unfused"),
                        ("kgraph", "numpy")):
        if other in medians:
            emit(comparison=f"{mine}/{other} ms per training step", ratio=round(medians[mine] / medians[other], 2))
    if not args.no_profile:
        from kgraph.compiler.lower.numba.profile import profile

        for name, compiled in (("kgraph", model), ("kgraph_unfused", unfused)):
            key = next(k for k in compiled._compiled_functions if k[0] == "train")
            emit_profile(name, profile(compiled._compiled_functions[key], [x, y], steps=3))


def emit_profile(name, measured):
    """The step's time and its kernels from 2% of the CPU time up, largest first."""
    rows, total, cpu_total = measured
    emit(profile=f"{name} train step", step_ms=round(total * 1e3, 2), step_cpu_ms=round(cpu_total * 1e3, 2),
         kernels=len(rows))
    for row in sorted(rows, key=lambda r: -r["cpu_seconds"]):
        if row["cpu_share"] >= 0.02:
            emit(step=name, kernel=row["index"], kind=row["kind"], ops=row["ops"][:90], shape=str(row["shape"]),
                 cpu_ms=round(row["cpu_seconds"] * 1e3, 2), cpu_share=round(row["cpu_share"], 3),
                 ms=round(row["seconds"] * 1e3, 2))


if __name__ == "__main__":
    main()
