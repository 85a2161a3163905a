"""Adafactor, Keras 3's update rule."""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.ir import Variable
from kgraph.optimizers.optimizer import Optimizer


def _rms(x):
    return ops.sqrt(ops.mean(ops.square(x)))


class Adafactor(Optimizer):
    """Adam-like steps with factored second moments (Shazeer & Stern, 2018).

    t = iterations + 1;  rho = min(lr, 1 / sqrt(t));  beta_2_t = 1 - t^beta_2_decay
    alpha = max(epsilon_2, rms(w)) * rho;  s = g^2 + epsilon_1
    rank >= 2 (factored over the last two axes):
        r = beta_2_t * r + (1 - beta_2_t) * mean(s, axis=-1)
        c = beta_2_t * c + (1 - beta_2_t) * mean(s, axis=-2)
        v = (r / mean(r, axis=-1))[..., None] * c[..., None, :]
    rank < 2:  v = beta_2_t * v + (1 - beta_2_t) * s
    u = g / sqrt(v);  w -= alpha * u / max(1, rms(u) / clip_threshold)

    As in Keras 3, `relative_step` is kept for the config: the step is always capped at
    1 / sqrt(t), whatever its value. Variables of rank < 2 get two placeholder int32
    scalars in place of `r` and `c`, so the state layout matches Keras's.
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_2_decay=-0.8,
        epsilon_1=1e-30,
        epsilon_2=1e-3,
        clip_threshold=1.0,
        relative_step=True,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
            **kwargs,
        )
        self.beta_2_decay = beta_2_decay
        self.epsilon_1 = epsilon_1
        self.epsilon_2 = epsilon_2
        self.clip_threshold = clip_threshold
        self.relative_step = relative_step

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._r, self._c, self._v = [], [], []
        for var in var_list:
            shape = tuple(var.shape)
            if len(shape) < 2:
                # Placeholders, created (and saved) as Keras does: unprefixed int32 scalars.
                for factors in (self._r, self._c):
                    placeholder = Variable(np.array(0, dtype="int32"), trainable=False, name=var.name)
                    factors.append(self._track_variable(placeholder))
            else:
                self._r.append(self.add_variable(shape[:-1], dtype=var.dtype, name=var.name))
                self._c.append(self.add_variable(shape[:-2] + shape[-1:], dtype=var.dtype, name=var.name))
            self._v.append(self.add_variable_from_reference(var, name="velocity"))

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        local_step = ops.cast(ops.add(self.iterations, 1), dtype)
        index = self._get_variable_index(variable)
        r, c, v = self._r[index], self._c[index], self._v[index]
        rho = ops.minimum(lr, ops.divide(1.0, ops.sqrt(local_step)))
        alpha = ops.multiply(ops.maximum(ops.cast(self.epsilon_2, dtype), _rms(variable)), rho)
        squared = ops.add(ops.square(gradient), self.epsilon_1)
        beta_2_t = ops.subtract(1.0, ops.power(local_step, float(self.beta_2_decay)))
        one_minus_beta = ops.subtract(1.0, beta_2_t)

        def moving_average(old, new):
            return ops.add(ops.multiply(beta_2_t, old), ops.multiply(one_minus_beta, new))

        if len(variable.shape) >= 2:
            self.assign(r, moving_average(r, ops.mean(squared, axis=-1)))
            self.assign(c, moving_average(c, ops.mean(squared, axis=-2)))
            row_factor = ops.divide(r, ops.mean(r, axis=-1, keepdims=True))
            self.assign(v, ops.multiply(ops.expand_dims(row_factor, -1), ops.expand_dims(c, -2)))
        else:
            self.assign(v, moving_average(v, squared))
        u = ops.divide(gradient, ops.sqrt(v))
        u_hat = ops.divide(u, ops.maximum(1.0, ops.divide(_rms(u), float(self.clip_threshold))))
        self.assign_sub(variable, ops.multiply(alpha, u_hat))

    def get_config(self):
        return {
            **super().get_config(),
            "beta_2_decay": self.beta_2_decay,
            "epsilon_1": self.epsilon_1,
            "epsilon_2": self.epsilon_2,
            "clip_threshold": self.clip_threshold,
            "relative_step": self.relative_step,
        }
