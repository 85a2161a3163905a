"""The scalar-op interface: elementwise formulas are written once against it.

A formula is a function `(h, *input_exprs, **attrs) -> expr`. Each backend supplies a
handler whose methods render one scalar operation as source text in its language, so any
chain of elementwise ops renders into one fused loop body.
"""


class ScalarOps:
    """The operations formulas may use; a backend implements each as source text."""

    dtype = "float32"  # the dtype of the node being rendered (set by the renderer)

    def const(self, value, dtype=None): raise NotImplementedError
    def cast(self, x, dtype): raise NotImplementedError
    def add(self, a, b): raise NotImplementedError
    def sub(self, a, b): raise NotImplementedError
    def mul(self, a, b): raise NotImplementedError
    def div(self, a, b): raise NotImplementedError
    def floordiv(self, a, b): raise NotImplementedError
    def mod(self, a, b): raise NotImplementedError
    def neg(self, x): raise NotImplementedError
    def pow(self, a, b): raise NotImplementedError
    def exp(self, x): raise NotImplementedError
    def expm1(self, x): raise NotImplementedError
    def log(self, x): raise NotImplementedError
    def log1p(self, x): raise NotImplementedError
    def sqrt(self, x): raise NotImplementedError
    def tanh(self, x): raise NotImplementedError
    def sin(self, x): raise NotImplementedError
    def cos(self, x): raise NotImplementedError
    def atan(self, x): raise NotImplementedError
    def erf(self, x): raise NotImplementedError
    def abs(self, x): raise NotImplementedError
    def floor(self, x): raise NotImplementedError
    def maximum(self, a, b): raise NotImplementedError
    def minimum(self, a, b): raise NotImplementedError
    def where(self, cond, a, b): raise NotImplementedError
    def compare(self, op, a, b): raise NotImplementedError  # op in < <= > >= == !=
    def logical(self, op, a, b=None): raise NotImplementedError  # op in and or xor not
