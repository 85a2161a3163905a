"""Merge layers (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate) and their
functional forms (add, subtract, ...)."""

from __future__ import annotations

import functools

from kgraph import ops
from kgraph.layers.layer import Layer
from kgraph.ops.shapes import broadcast_shapes


class Merge(Layer):
    """Combines a list of tensors elementwise (with broadcasting over non-batch axes)."""

    min_inputs = 2
    combine = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not input_shape or not isinstance(
                input_shape[0], (list, tuple)):
            raise ValueError(f'Layer "{self.name}" expects a list of inputs, got input shape {input_shape}')
        if len(input_shape) < self.min_inputs:
            raise ValueError(f'Layer "{self.name}" expects at least {self.min_inputs} inputs, '
                             f"got {len(input_shape)}")
        self._check_shapes(input_shape)
        self.built = True

    def _check_shapes(self, shapes):
        try:
            broadcast_shapes(*[tuple(s)[1:] for s in shapes], op=self.name)
        except ValueError:
            raise ValueError(f'Layer "{self.name}": inputs must have compatible shapes, got '
                             f"{', '.join(str(tuple(s)) for s in shapes)}") from None

    def call(self, inputs):
        return functools.reduce(type(self).combine, inputs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],) + broadcast_shapes(*[tuple(s)[1:] for s in input_shape])


class Add(Merge):
    combine = staticmethod(ops.add)


class Subtract(Merge):
    combine = staticmethod(ops.subtract)

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and len(input_shape) != 2:
            raise ValueError(f'Layer "{self.name}" (Subtract) expects exactly 2 inputs, '
                             f"got {len(input_shape)}")
        super().build(input_shape)


class Multiply(Merge):
    combine = staticmethod(ops.multiply)


class Maximum(Merge):
    combine = staticmethod(ops.maximum)


class Minimum(Merge):
    combine = staticmethod(ops.minimum)


class Average(Merge):
    def call(self, inputs):
        return ops.divide(functools.reduce(ops.add, inputs), float(len(inputs)))


class Concatenate(Merge):
    """Concatenates a list of tensors along `axis`."""

    min_inputs = 1

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def _check_shapes(self, shapes):
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ValueError(f'Layer "{self.name}": a Concatenate layer requires inputs with matching '
                             f"shapes except for the concatenation axis. Received: input_shape={list(shapes)}")
        rank = ranks.pop()
        axis = self.axis % rank
        for i in range(rank):
            if i == axis:
                continue
            known = {s[i] for s in shapes if s[i] is not None}
            if len(known) > 1:
                raise ValueError(f'Layer "{self.name}": a Concatenate layer requires inputs with '
                                 "matching shapes except for the concatenation axis. "
                                 f"Received: input_shape={[tuple(s) for s in shapes]}")

    def call(self, inputs):
        return ops.concatenate(list(inputs), axis=self.axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape[0])
        axis = self.axis % len(shape)
        sizes = [s[axis] for s in input_shape]
        shape[axis] = None if None in sizes else sum(sizes)
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


def _functional(layer_class):
    def apply(inputs, **kwargs):
        return layer_class(**kwargs)(inputs)
    apply.__name__ = layer_class.__name__.lower()
    apply.__doc__ = f"Functional form of the {layer_class.__name__} layer."
    return apply


add = _functional(Add)
subtract = _functional(Subtract)
multiply = _functional(Multiply)
maximum = _functional(Maximum)
minimum = _functional(Minimum)
average = _functional(Average)
concatenate = _functional(Concatenate)
