"""Nadam, Keras 3's update rule."""

from __future__ import annotations

import numpy as np

from kgraph import ops
from kgraph.ir import Variable
from kgraph.optimizers.optimizer import Optimizer, _floatx


class Nadam(Optimizer):
    """Adam with Nesterov momentum (Dozat, 2015) and a momentum schedule.

    t = iterations + 1;  u_t = beta_1 * (1 - 0.5 * 0.96^t);  u_t1 = beta_1 * (1 - 0.5 * 0.96^(t+1))
    u_product *= u_t  (one scalar Variable for the optimizer, updated once per step)
    m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
    m_hat = u_t1 * m / (1 - u_product * u_t1) + (1 - u_t) * g / (1 - u_product)
    v_hat = v / (1 - beta_2^t)
    w -= lr * m_hat / (sqrt(v_hat) + epsilon)
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
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
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, var_list):
        if self.built:
            return
        dtype = var_list[0].dtype if var_list else _floatx()
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])
        # Keras creates this product outside the optimizer's name scope: its path is "variable".
        self._u_product = self._track_variable(
            Variable(np.array(1.0, dtype=dtype), trainable=False, name="variable")
        )

    def _momentum_factor(self, step_offset, dtype):
        """beta_1 * (1 - 0.5 * 0.96^(iterations + step_offset))."""
        step = ops.cast(ops.add(self.iterations, step_offset), dtype)
        decay = ops.power(ops.cast(0.96, dtype), step)
        return ops.multiply(ops.cast(self.beta_1, dtype), ops.subtract(1.0, ops.multiply(0.5, decay)))

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        u_t = self._momentum_factor(1, self._u_product.dtype)
        self.assign(self._u_product, ops.multiply(self._u_product, u_t))
        super()._backend_update_step(grads, trainable_variables, learning_rate)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        u_t = self._momentum_factor(1, dtype)
        u_t_1 = self._momentum_factor(2, dtype)
        u_product_t = ops.cast(self._u_product, dtype)
        u_product_t_1 = ops.multiply(u_product_t, u_t_1)
        beta_2_power = ops.power(beta_2, ops.cast(ops.add(self.iterations, 1), dtype))
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1.0 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1.0 - self.beta_2))
        m_hat = ops.add(
            ops.divide(ops.multiply(u_t_1, m), ops.subtract(1.0, u_product_t_1)),
            ops.divide(ops.multiply(ops.subtract(1.0, u_t), gradient), ops.subtract(1.0, u_product_t)),
        )
        v_hat = ops.divide(v, ops.subtract(1.0, beta_2_power))
        self.assign_sub(
            variable, ops.divide(ops.multiply(m_hat, lr), ops.add(ops.sqrt(v_hat), self.epsilon))
        )

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
        }
