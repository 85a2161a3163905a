"""Progbar: Keras 3's progress bar (verbose=1) and one line per epoch (verbose=2)."""

from __future__ import annotations

import sys
import time

import numpy as np


def _format_value(value):
    if isinstance(value, float) or hasattr(value, "dtype"):
        value = float(np.mean(value))  # per-class values (an array) print as their mean, as in Keras
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.4e}"
    return str(value)


def _format_time(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{int(seconds)}s"


def _format_per_step(seconds):
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


class Progbar:
    """Shows `current/target ━━━━ time per step - metric: value ...`."""

    def __init__(self, target, width=20, verbose=1, interval=0.05, stateful_metrics=None, unit_name="step"):
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        self._start = time.time()
        self._last_update = 0.0
        self._values = {}
        self._dynamic = (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())

    def update(self, current, values=None, finalize=None):
        """Show progress at step `current` with the latest `values` (metric name -> value)."""
        for name, value in (values or {}).items() if isinstance(values, dict) else (values or []):
            self._values[name] = value
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        now = time.time()
        if self.verbose == 0:
            return
        elapsed = now - self._start
        per_step = elapsed / max(current, 1)
        metrics = "".join(f" - {k}: {_format_value(v)}" for k, v in sorted(self._values.items()))
        if self.verbose == 1:
            if not finalize and now - self._last_update < self.interval:
                return
            self._last_update = now
            if self.target is not None:
                filled = int(self.width * current / self.target) if self.target else self.width
                bar = "\x1b[32m" + "━" * filled + "\x1b[0m" + "━" * (self.width - filled) \
                    if self._dynamic else "━" * self.width
                head = f"{current}/{self.target} {bar}"
            else:
                head = f"{current}"
            if finalize:
                timing = f" {_format_time(elapsed)} {_format_per_step(per_step)}"
            else:
                timing = f" {_format_time(per_step * (self.target - current))}" if self.target else ""
            line = f"{head}{timing}{metrics}"
            if self._dynamic:
                sys.stdout.write("\r" + line + ("\n" if finalize else "\x1b[K"))
            elif finalize:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
        elif self.verbose == 2 and finalize:
            sys.stdout.write(f"{current}/{self.target} - {_format_time(elapsed)} - "
                             f"{_format_per_step(per_step)}{metrics}\n")
            sys.stdout.flush()
