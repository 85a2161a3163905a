"""What compile() was given, resolved against the model's outputs: the total loss and the
metric objects, with the names Keras 3 gives them in History."""

from __future__ import annotations

from kgraph import ops


def _per_output(value, count, what):
    """`value` as a list with one entry per output (single values apply to every output)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, (list, tuple)) and count > 1 and len(value) == count:
        return list(value)
    if isinstance(value, (list, tuple)) and count > 1 and what == "metrics":
        return [list(value)] * count
    return [value] * count


class CompiledLoss:
    """The weighted sum of one loss per output."""

    def __init__(self, loss, loss_weights=None):
        from kgraph import losses

        self.loss = loss
        self.loss_weights = loss_weights
        self._resolved = None
        for identifier in _identifiers(loss):
            losses.get(identifier)  # unknown names fail at compile(), not at the first step

    def _resolve(self, count, output_names):
        from kgraph import losses

        per_output = _per_output(self.loss, count, "loss")
        if isinstance(per_output, dict):
            unknown = [k for k in per_output if k not in output_names]
            if unknown:
                raise ValueError(f"compile(loss=...): keys {unknown} match no output; outputs are {output_names}")
            per_output = [per_output.get(name) for name in output_names]
        weights = self.loss_weights
        if weights is None:
            weights = [1.0] * count
        elif isinstance(weights, dict):
            weights = [weights.get(name, 1.0) for name in output_names]
        elif not isinstance(weights, (list, tuple)):
            weights = [weights] * count
        resolved = []
        for fn, weight in zip(per_output, weights):
            if fn is None:
                resolved.append(None)
                continue
            fn = losses.get(fn)
            if not isinstance(fn, losses.Loss):
                fn = losses.LossFunctionWrapper(fn) if hasattr(losses, "LossFunctionWrapper") else _MeanOf(fn)
            resolved.append((fn, float(weight)))
        self._resolved = resolved

    def __call__(self, y_true, y_pred, output_names=None):
        if self._resolved is None:
            self._resolve(len(y_pred), output_names or [f"output_{i}" for i in range(len(y_pred))])
        if len(y_true) != len(y_pred):
            raise ValueError(f"The model has {len(y_pred)} output(s) but {len(y_true)} target array(s) "
                             "were given")
        total = None
        for entry, target, prediction in zip(self._resolved, y_true, y_pred):
            if entry is None:
                continue
            fn, weight = entry
            value = fn(target, prediction)
            if weight != 1.0:
                value = ops.multiply(value, weight)
            total = value if total is None else ops.add(total, value)
        return total


def _identifiers(spec):
    """The string identifiers inside a loss or metrics spec (value, list, nested list or dict)."""
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, dict):
        return [i for value in spec.values() for i in _identifiers(value)]
    if isinstance(spec, (list, tuple)):
        return [i for value in spec for i in _identifiers(value)]
    return []


class _MeanOf:
    """A plain function loss(y_true, y_pred) -> per-sample values, averaged over the batch."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, y_true, y_pred, sample_weight=None):
        return ops.mean(self.fn(y_true, y_pred))


def resolve_metric(identifier, y_true, y_pred):
    """A Metric object for `identifier`, named as Keras 3 names it ("accuracy" resolves to
    the binary, categorical or sparse variant from the target and prediction shapes)."""
    from kgraph import metrics

    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        binary = y_pred.shape[-1] == 1
        sparse = len(y_true.shape) == len(y_pred.shape) - 1 or (
            len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1 and not binary)
        if binary:
            return metrics.BinaryAccuracy(name=identifier)
        if sparse:
            return metrics.SparseCategoricalAccuracy(name=identifier)
        return metrics.CategoricalAccuracy(name=identifier)
    metric = metrics.get(identifier)
    if not isinstance(metric, metrics.Metric):
        metric = metrics.MeanMetricWrapper(metric, name=getattr(metric, "__name__", "metric"))
    if isinstance(identifier, str):
        metric.name = identifier  # Keras names a metric given by string after that string
    return metric


class CompiledMetrics:
    """The metrics of compile(), resolved on the first traced step (shapes are known then)."""

    def __init__(self, metrics=None, weighted_metrics=None):
        from kgraph import metrics as metrics_module

        self.requested = metrics
        self._per_output = None
        for identifier in _identifiers(metrics):
            if not (isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc")):
                metrics_module.get(identifier)

    @property
    def metrics(self):
        if not self._per_output:
            return []
        return [m for group in self._per_output for m in group]

    def _resolve(self, y_true, y_pred, output_names):
        count = len(y_pred)
        requested = self.requested or []
        per_output = _per_output(requested, count, "metrics")
        if isinstance(per_output, dict):
            per_output = [per_output.get(name, []) for name in output_names]
        groups = []
        for index, (entries, target, prediction) in enumerate(zip(per_output, y_true, y_pred)):
            entries = entries if isinstance(entries, (list, tuple)) else [entries]
            group = []
            for entry in entries:
                if entry is None:
                    continue
                metric = resolve_metric(entry, target, prediction)
                if count > 1:
                    metric.name = f"{output_names[index]}_{metric.name}"
                group.append(metric)
            groups.append(group)
        self._per_output = groups

    def update_state(self, y_true, y_pred, output_names=None):
        if self._per_output is None:
            self._resolve(y_true, y_pred, output_names or [f"output_{i}" for i in range(len(y_pred))])
        for group, target, prediction in zip(self._per_output, y_true, y_pred):
            for metric in group:
                metric.update_state(target, prediction)
