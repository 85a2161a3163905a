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
        self._trackers = {}
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

    def __call__(self, y_true, y_pred, output_names=None, sample_weights=None, batch_size=None):
        """The total loss; `sample_weights` holds one weight tensor (or None) per output. With
        several losses, each output's unweighted loss also feeds its `<output>_loss` tracker."""
        if self._resolved is None:
            self._resolve(len(y_pred), output_names or [f"output_{i}" for i in range(len(y_pred))])
            self._make_trackers(output_names or [f"output_{i}" for i in range(len(y_pred))])
        if len(y_true) != len(y_pred):
            raise ValueError(f"The model has {len(y_pred)} output(s) but {len(y_true)} target array(s) "
                             "were given")
        sample_weights = sample_weights or [None] * len(y_pred)
        total = None
        for index, (entry, target, prediction, weight_values) in enumerate(
                zip(self._resolved, y_true, y_pred, sample_weights)):
            if entry is None:
                continue
            fn, weight = entry
            value = fn(target, prediction, sample_weight=weight_values)
            tracker = self._trackers.get(index)
            if tracker is not None:
                tracker.update_state(value, sample_weight=batch_size)
            if weight != 1.0:
                value = ops.multiply(value, weight)
            total = value if total is None else ops.add(total, value)
        return total

    def _make_trackers(self, output_names):
        from kgraph.metrics import Mean

        used = [i for i, entry in enumerate(self._resolved) if entry is not None]
        self._trackers = {i: Mean(name=f"{output_names[i]}_loss") for i in used} if len(used) > 1 else {}

    @property
    def metrics(self):
        """The per-output loss trackers (Keras adds them when there are several losses)."""
        return list(getattr(self, "_trackers", {}).values())


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
        from kgraph.losses.loss import reduce_weighted_values

        return reduce_weighted_values(self.fn(y_true, y_pred), sample_weight=sample_weight)


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
    """The metrics and weighted metrics of compile(), resolved on the first traced step (shapes
    are known then) and named as Keras 3 names them: `<output>_<name>` with several outputs, and
    `weighted_<name>` for a weighted metric whose name an unweighted one already took."""

    def __init__(self, metrics=None, weighted_metrics=None):
        from kgraph import metrics as metrics_module

        for argument, value in (("metrics", metrics), ("weighted_metrics", weighted_metrics)):
            if value is not None and not isinstance(value, (list, tuple, dict)):
                raise ValueError(f"Expected `{argument}` argument to be a list, tuple, or dict. "
                                 f"Received instead: {argument}={value!r} of type {type(value).__name__}")
        self.requested = metrics
        self.requested_weighted = weighted_metrics
        self._per_output = None
        self._weighted_per_output = None
        for identifier in _identifiers(metrics) + _identifiers(weighted_metrics):
            if not (isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc")):
                metrics_module.get(identifier)

    @property
    def metrics(self):
        if not self._per_output:
            return []
        return [m for groups in (self._per_output, self._weighted_per_output) for group in groups for m in group]

    def _groups(self, requested, y_true, y_pred, output_names):
        count = len(y_pred)
        per_output = _per_output(requested or [], count, "metrics")
        if isinstance(per_output, dict):
            unknown = [k for k in per_output if k not in output_names]
            if unknown:
                raise ValueError(f"compile(metrics=...): keys {unknown} match no output; outputs are {output_names}")
            per_output = [per_output.get(name, []) for name in output_names]
        groups = []
        for entries, target, prediction in zip(per_output, y_true, y_pred):
            entries = entries if isinstance(entries, (list, tuple)) else [entries]
            groups.append([resolve_metric(entry, target, prediction) for entry in entries if entry is not None])
        return groups

    def _resolve(self, y_true, y_pred, output_names):
        prefix = (lambda index: f"{output_names[index]}_") if len(y_pred) > 1 else (lambda index: "")
        self._per_output = self._groups(self.requested, y_true, y_pred, output_names)
        self._weighted_per_output = self._groups(self.requested_weighted, y_true, y_pred, output_names)
        taken = {}

        def unique(name):
            if name not in taken:
                taken[name] = 1
                return name
            taken[name] += 1
            return f"{name}_{taken[name] - 1}"

        for index, group in enumerate(self._per_output):
            for metric in group:
                metric.name = unique(prefix(index) + metric.name)
        for index, group in enumerate(self._weighted_per_output):
            for metric in group:
                name = prefix(index) + metric.name
                metric.name = unique(name if name not in taken else prefix(index) + "weighted_" + metric.name)

    def update_state(self, y_true, y_pred, output_names=None, sample_weights=None):
        if self._per_output is None:
            self._resolve(y_true, y_pred, output_names or [f"output_{i}" for i in range(len(y_pred))])
        sample_weights = sample_weights or [None] * len(y_pred)
        for group, target, prediction in zip(self._per_output, y_true, y_pred):
            for metric in group:
                metric.update_state(target, prediction)
        for group, target, prediction, weights in zip(self._weighted_per_output, y_true, y_pred, sample_weights):
            for metric in group:
                metric.update_state(target, prediction, sample_weight=weights)
