"""Benchmark: the image layers compiled. Prints one JSON line per measurement:

- `Resizing(32, 32, antialias=True)` on 64x64x3 batches in `predict` (images/s);
- a small CNN's `fit` on 32x32x3 images (batch 64) with and without an augmentation stack
  (RandomFlip, RandomTranslation, RandomZoom, RandomRotation): steady-state samples/s, and the
  augmentation's share of the step.

Run: python bench/image_preprocessing.py [--samples 2048]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def emit(**record):
    print(json.dumps(record), flush=True)


def timed(fn, repeats=3):
    """The best of `repeats` wall times of fn() (after one warm-up call that compiles)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=2048)
    args = parser.parse_args()
    import kgraph as keras
    from kgraph import layers as L

    rng = np.random.default_rng(0)
    big = rng.random((args.samples, 64, 64, 3)).astype("float32")
    resizer = keras.Sequential([keras.Input((64, 64, 3)), L.Resizing(32, 32, antialias=True)])
    seconds = timed(lambda: resizer.predict(big, batch_size=256, verbose=0))
    emit(bench="resize_64_to_32_antialias_predict", images_per_s=round(args.samples / seconds))

    x = rng.random((args.samples, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.samples).astype("int32")
    rates = {}
    for augmented in (False, True):
        augmentation = [L.RandomFlip("horizontal", seed=1), L.RandomTranslation(0.1, 0.1, seed=2),
                        L.RandomZoom(0.1, seed=3), L.RandomRotation(0.05, seed=4)] if augmented else []
        model = keras.Sequential([keras.Input((32, 32, 3)), *augmentation,
                                  L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(),
                                  L.Conv2D(32, 3, activation="relu"), L.GlobalAveragePooling2D(), L.Dense(10)])
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        seconds = timed(lambda m=model: m.fit(x, y, batch_size=64, epochs=1, verbose=0), repeats=2)
        rates[augmented] = args.samples / seconds
        emit(bench="cnn_fit_32x32", augmentation=augmented, samples_per_s=round(rates[augmented]))
    emit(bench="augmentation_share_of_step", share=round(1 - rates[True] / rates[False], 3))


if __name__ == "__main__":
    main()
