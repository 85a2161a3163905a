"""ScalarOps rendered as numba-compatible Python expressions."""

import math

from kgraph.compiler.lower.scalar import ScalarOps


def _literal(value, dtype):
    if dtype == "bool":
        return "True" if value else "False"
    if dtype.startswith(("int", "uint")):
        return f"np.{dtype}({int(value)})"
    value = float(value)
    if math.isnan(value):
        text = "np.nan"
    elif math.isinf(value):
        text = "np.inf" if value > 0 else "-np.inf"
    else:
        text = repr(value)
    return f"np.{dtype}({text})"


class NumbaScalarOps(ScalarOps):
    """Each method returns a Python expression numba compiles to scalar machine code."""

    def const(self, value, dtype=None):
        dtype = dtype or self.dtype
        return _literal(value, "float32" if dtype == "bool" and not isinstance(value, bool) else dtype)

    def cast(self, x, dtype):
        return f"({x} != 0)" if dtype == "bool" else f"np.{dtype}({x})"

    def add(self, a, b): return f"({a} + {b})"
    def sub(self, a, b): return f"({a} - {b})"
    def mul(self, a, b): return f"({a} * {b})"
    def div(self, a, b): return f"({a} / {b})"
    def floordiv(self, a, b): return f"({a} // {b})"
    def mod(self, a, b): return f"({a} % {b})"
    def neg(self, x): return f"(-{x})"
    def pow(self, a, b): return f"({a} ** {b})"
    def exp(self, x): return f"math.exp({x})"
    def expm1(self, x): return f"math.expm1({x})"
    def log(self, x): return f"math.log({x})"
    def log1p(self, x): return f"math.log1p({x})"
    def sqrt(self, x): return f"math.sqrt({x})"
    def tanh(self, x): return f"math.tanh({x})"
    def sin(self, x): return f"math.sin({x})"
    def cos(self, x): return f"math.cos({x})"
    def atan(self, x): return f"math.atan({x})"
    def erf(self, x): return f"math.erf({x})"
    def abs(self, x): return f"abs({x})"
    def floor(self, x): return f"np.floor({x})"
    def maximum(self, a, b): return f"max({a}, {b})"
    def minimum(self, a, b): return f"min({a}, {b})"
    def where(self, cond, a, b): return f"({a} if {cond} else {b})"
    def compare(self, op, a, b): return f"({a} {op} {b})"

    def logical(self, op, a, b=None):
        if op == "not":
            return f"(not {a})"
        if op == "xor":
            return f"(bool({a}) != bool({b}))"
        return f"({a} {op} {b})"
