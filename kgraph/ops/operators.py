"""Python operators (+, *, @, [], ...) on symbolic tensors and variables, routed to ops."""

from kgraph import ops
from kgraph.ir import SymbolicTensor, Variable


def _binary(fn, reflected=False):
    if reflected:
        return lambda self, other: fn(other, self)
    return lambda self, other: fn(self, other)


def install():
    table = {
        "__add__": _binary(ops.add), "__radd__": _binary(ops.add, True),
        "__sub__": _binary(ops.subtract), "__rsub__": _binary(ops.subtract, True),
        "__mul__": _binary(ops.multiply), "__rmul__": _binary(ops.multiply, True),
        "__truediv__": _binary(ops.divide), "__rtruediv__": _binary(ops.divide, True),
        "__floordiv__": _binary(ops.floor_divide), "__rfloordiv__": _binary(ops.floor_divide, True),
        "__mod__": _binary(ops.mod), "__rmod__": _binary(ops.mod, True),
        "__pow__": _binary(ops.power), "__rpow__": _binary(ops.power, True),
        "__matmul__": _binary(ops.matmul), "__rmatmul__": _binary(ops.matmul, True),
        "__lt__": _binary(ops.less), "__le__": _binary(ops.less_equal),
        "__gt__": _binary(ops.greater), "__ge__": _binary(ops.greater_equal),
        "__and__": _binary(ops.logical_and), "__or__": _binary(ops.logical_or),
        "__xor__": _binary(ops.logical_xor),
        "__neg__": lambda self: ops.negative(self), "__abs__": lambda self: ops.abs(self),
        "__invert__": lambda self: ops.logical_not(self),
        "__getitem__": lambda self, key: ops.getitem(self, key),
    }
    for name, method in table.items():
        setattr(SymbolicTensor, name, method)
    # == and != are elementwise on symbolic tensors, as on Keras tensors (hashing stays by
    # identity: kgraph keys tensors by id(), never by ==). Variables keep Python's identity
    # comparison, so `variable in list` stays an identity test.
    SymbolicTensor.__eq__ = _binary(ops.equal)
    SymbolicTensor.__ne__ = _binary(ops.not_equal)
    for name, method in table.items():
        if name != "__getitem__":
            setattr(Variable, name, method)
    Variable.__getitem__ = lambda self, key: self.value[key]
    SymbolicTensor.T = property(lambda self: ops.transpose(self))
