"""Learning rate schedules: functions of the optimizer's step counter, written with ops.

The optimizer calls `schedule(iterations)` with its iteration Variable, so inside a
compiled training step the learning rate is computed in the graph from the counter (no
recompilation as training advances).
"""

from __future__ import annotations

import math

from kgraph import ops


def _float(value):
    return ops.cast(value, "float32")


class LearningRateSchedule:
    """Base class: subclasses implement `__call__(step)` and `get_config()`."""

    def __call__(self, step):
        raise NotImplementedError(
            f"Learning rate schedule '{self.__class__.__name__}' must override `__call__(self, step)`."
        )

    def get_config(self):
        raise NotImplementedError(
            f"Learning rate schedule '{self.__class__.__name__}' must override "
            "`get_config()` in order to be serializable."
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _check_decay_steps(decay_steps):
    if decay_steps <= 0:
        raise ValueError(f"Argument `decay_steps` must be > 0. Received: decay_steps={decay_steps}")


class ExponentialDecay(LearningRateSchedule):
    """initial_learning_rate * decay_rate ** (step / decay_steps) (floored if staircase)."""

    def __init__(
        self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"
    ):
        _check_decay_steps(decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        self.name = name

    def __call__(self, step):
        p = ops.divide(_float(step), float(self.decay_steps))
        if self.staircase:
            p = ops.floor(p)
        return ops.multiply(float(self.initial_learning_rate), ops.power(_float(self.decay_rate), p))

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[0] up to boundaries[0], values[i] in (boundaries[i-1], boundaries[i]], values[-1] after."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(boundaries) != len(values) - 1:
            raise ValueError(
                "The length of boundaries should be 1 less than the length of values. "
                f"Received: boundaries={boundaries} of length {len(boundaries)}, and "
                f"values={values} of length {len(values)}."
            )
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def __call__(self, step):
        x = _float(step)
        bounds = [float(b) for b in self.boundaries]
        values = [float(v) for v in self.values]
        result = ops.multiply(ops.cast(ops.less_equal(x, bounds[0]), "float32"), values[0])
        result = ops.add(result, ops.multiply(ops.cast(ops.greater(x, bounds[-1]), "float32"), values[-1]))
        for low, high, value in zip(bounds[:-1], bounds[1:], values[1:-1]):
            inside = ops.logical_and(ops.greater(x, low), ops.less_equal(x, high))
            result = ops.add(result, ops.multiply(ops.cast(inside, "float32"), value))
        return result

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class PolynomialDecay(LearningRateSchedule):
    """(initial - end) * (1 - step / decay_steps) ** power + end; with `cycle` the horizon
    grows to the next multiple of decay_steps instead of holding at `end`."""

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        end_learning_rate=0.0001,
        power=1.0,
        cycle=False,
        name="PolynomialDecay",
    ):
        _check_decay_steps(decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.cycle = cycle
        self.name = name

    def __call__(self, step):
        step = _float(step)
        decay_steps = float(self.decay_steps)
        if self.cycle:
            ceil = ops.negative(ops.floor(ops.divide(ops.negative(step), decay_steps)))
            multiplier = ops.where(ops.equal(step, 0.0), 1.0, ceil)
            horizon = ops.multiply(multiplier, decay_steps)
        else:
            step = ops.minimum(step, decay_steps)
            horizon = decay_steps
        p = ops.divide(step, horizon)
        span = float(self.initial_learning_rate) - float(self.end_learning_rate)
        return ops.add(
            ops.multiply(ops.power(ops.subtract(1.0, p), float(self.power)), span),
            float(self.end_learning_rate),
        )

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "cycle": self.cycle,
            "name": self.name,
        }


class InverseTimeDecay(LearningRateSchedule):
    """initial_learning_rate / (1 + decay_rate * step / decay_steps) (floored if staircase)."""

    def __init__(
        self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"
    ):
        _check_decay_steps(decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        self.name = name

    def __call__(self, step):
        p = ops.divide(_float(step), float(self.decay_steps))
        if self.staircase:
            p = ops.floor(p)
        return ops.divide(
            float(self.initial_learning_rate), ops.add(ops.multiply(p, float(self.decay_rate)), 1.0)
        )

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


def _half_cosine(completed_fraction):
    """0.5 * (1 + cos(pi * completed_fraction)): 1 at the start of a period, 0 at its end."""
    return ops.multiply(0.5, ops.add(1.0, ops.cos(ops.multiply(math.pi, completed_fraction))))


def _floor_at_alpha(decayed, alpha):
    """(1 - alpha) * decayed + alpha."""
    return ops.add(ops.multiply(1.0 - float(alpha), decayed), float(alpha))


class CosineDecay(LearningRateSchedule):
    """Cosine decay from `initial_learning_rate` to `alpha` times it over `decay_steps`,
    after an optional linear warmup.

    Without `warmup_target`: step = min(step, decay_steps) and
        lr = initial_learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * step / decay_steps)) + alpha)
    With `warmup_target`: step = min(step, warmup_steps + decay_steps); below `warmup_steps`
        lr rises linearly from initial_learning_rate to warmup_target, then decays from
        warmup_target as above over step - warmup_steps.
    """

    def __init__(
        self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None, warmup_steps=0
    ):
        _check_decay_steps(decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.alpha = alpha
        self.name = name
        self.warmup_steps = warmup_steps
        self.warmup_target = warmup_target

    def __call__(self, step):
        step = _float(step)
        decay_steps = float(self.decay_steps)
        initial = float(self.initial_learning_rate)
        if self.warmup_target is None:
            fraction = ops.divide(ops.minimum(step, decay_steps), decay_steps)
            return ops.multiply(initial, _floor_at_alpha(_half_cosine(fraction), self.alpha))
        warmup_steps = float(self.warmup_steps)
        target = float(self.warmup_target)
        step = ops.minimum(step, decay_steps + warmup_steps)
        # Both branches are computed (no branching in a compiled graph); max(., 1) keeps the
        # unused warmup branch finite when warmup_steps is 0.
        warmup = ops.add(ops.multiply(target - initial, ops.divide(step, max(warmup_steps, 1.0))), initial)
        fraction = ops.divide(ops.subtract(step, warmup_steps), decay_steps)
        decayed = ops.multiply(target, _floor_at_alpha(_half_cosine(fraction), self.alpha))
        return ops.where(ops.less(step, warmup_steps), warmup, decayed)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "name": self.name,
            "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps,
        }


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR, Loshchilov & Hutter 2016).

    The first period lasts `first_decay_steps`; each next one is `t_mul` times longer and
    starts from `m_mul` times the previous peak. With fraction f = step / first_decay_steps,
    the period index is i = floor(f) (t_mul == 1) or floor(log(1 - f * (1 - t_mul)) / log(t_mul)),
    the position in it p = f - i or (f - (1 - t_mul^i) / (1 - t_mul)) / t_mul^i, and
        lr = initial_learning_rate * ((1 - alpha) * m_mul^i * 0.5 * (1 + cos(pi * p)) + alpha)
    """

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0, name="SGDRDecay"):
        if first_decay_steps <= 0:
            raise ValueError(
                f"Argument `first_decay_steps` must be > 0. Received: first_decay_steps={first_decay_steps}"
            )
        self.initial_learning_rate = initial_learning_rate
        self.first_decay_steps = first_decay_steps
        self.t_mul = t_mul
        self.m_mul = m_mul
        self.alpha = alpha
        self.name = name

    def __call__(self, step):
        fraction = ops.divide(_float(step), float(self.first_decay_steps))
        t_mul = float(self.t_mul)
        if t_mul == 1.0:
            restart = ops.floor(fraction)
            fraction = ops.subtract(fraction, restart)
        else:
            restart = ops.floor(
                ops.divide(ops.log(ops.subtract(1.0, ops.multiply(fraction, 1.0 - t_mul))), math.log(t_mul))
            )
            period_scale = ops.power(_float(t_mul), restart)
            periods_done = ops.divide(ops.subtract(1.0, period_scale), 1.0 - t_mul)
            fraction = ops.divide(ops.subtract(fraction, periods_done), period_scale)
        peak = ops.power(_float(self.m_mul), restart)
        decayed = _floor_at_alpha(ops.multiply(peak, _half_cosine(fraction)), self.alpha)
        return ops.multiply(float(self.initial_learning_rate), decayed)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "first_decay_steps": self.first_decay_steps,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
            "alpha": self.alpha,
            "name": self.name,
        }
