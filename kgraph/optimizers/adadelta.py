"""Adadelta, Keras 3's update rule."""

from __future__ import annotations

from kgraph import ops
from kgraph.optimizers.optimizer import Optimizer


class Adadelta(Optimizer):
    """Per-dimension step sizes from running averages of squared gradients and updates.

    acc_g = rho * acc_g + (1 - rho) * g^2
    delta = -sqrt(acc_d + epsilon) / sqrt(acc_g + epsilon) * g
    acc_d = rho * acc_d + (1 - rho) * delta^2
    w += lr * delta                    (lr = 1.0 is the paper's form)
    """

    def __init__(
        self,
        learning_rate=0.001,
        rho=0.95,
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
        self.rho = rho
        self.epsilon = epsilon

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._accumulated_grads, self._accumulated_delta_vars = self.add_optimizer_variables(
            var_list, ["accumulated_grad", "accumulated_delta_var"]
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        acc_grad = self._accumulated_grads[index]
        acc_delta = self._accumulated_delta_vars[index]
        rho = self.rho
        self.assign(
            acc_grad, ops.add(ops.multiply(acc_grad, rho), ops.multiply(ops.square(gradient), 1.0 - rho))
        )
        delta = ops.negative(
            ops.divide(
                ops.multiply(ops.sqrt(ops.add(acc_delta, self.epsilon)), gradient),
                ops.sqrt(ops.add(acc_grad, self.epsilon)),
            )
        )
        self.assign(
            acc_delta, ops.add(ops.multiply(acc_delta, rho), ops.multiply(ops.square(delta), 1.0 - rho))
        )
        self.assign_add(variable, ops.multiply(lr, delta))

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}
