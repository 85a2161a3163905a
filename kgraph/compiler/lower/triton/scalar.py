"""ScalarOps rendered as Triton (`tl.`) expressions over blocks.

Every expression is a block (or a scalar) in a @triton.jit function. Transcendental
functions Triton lacks, or computes inaccurately near zero with the GPU's approximate
exp/log (expm1, log1p, tanh, pow, numpy's floor_divide and mod), are @triton.jit helpers
in `device_functions`, which the generated module imports; they use only `tl.` operations
that both the GPU compiler and the CPU interpreter (TRITON_INTERPRET=1) support.
"""

from __future__ import annotations

import math

from kgraph.compiler.lower.scalar import ScalarOps

TL_DTYPES = {
    "float16": "tl.float16", "bfloat16": "tl.bfloat16", "float32": "tl.float32", "float64": "tl.float64",
    "int8": "tl.int8", "int16": "tl.int16", "int32": "tl.int32", "int64": "tl.int64",
    "uint8": "tl.uint8", "uint16": "tl.uint16", "uint32": "tl.uint32", "uint64": "tl.uint64",
    "bool": "tl.int1",
}

# The names `device_functions` exports to generated modules.
HELPERS = ("expm1_", "log1p_", "tanh_", "pow_float", "pow_int", "floordiv_float", "floordiv_int",
           "mod_float", "mod_int", "atan_", "INF")


def tl_dtype(dtype):
    try:
        return TL_DTYPES[str(dtype)]
    except KeyError:
        raise NotImplementedError(f"triton backend: dtype {dtype} is not supported") from None


def is_float(dtype):
    return str(dtype).startswith(("float", "bfloat"))


def literal(value, dtype):
    """`value` as a Triton expression of `dtype` (a bare literal where Triton types it right)."""
    dtype = str(dtype)
    if dtype == "bool":
        return "True" if value else "False"
    if not is_float(dtype):
        value = int(value)
        if dtype == "int32" and -2**31 <= value < 2**31:
            return repr(value)
        return f"tl.full([], {value}, {tl_dtype(dtype)})"
    value = float(value)
    if math.isnan(value):
        text = "(INF - INF)"
    elif math.isinf(value):
        text = "INF" if value > 0 else "-INF"
    else:
        text = repr(value)
    if dtype == "float32":
        return text
    return f"tl.full([], {text}, {tl_dtype(dtype)})"


class TritonScalarOps(ScalarOps):
    """Each method returns a Triton expression; `dtype` is the rendered node's dtype."""

    def _compute(self):
        """The float type math runs in: the node's, or float32 for half types and ints."""
        return self.dtype if self.dtype in ("float32", "float64") else "float32"

    def _f(self, x):
        return f"tl.cast({x}, {tl_dtype(self._compute())})"

    def const(self, value, dtype=None):
        dtype = dtype or self.dtype
        if dtype == "bool" and not isinstance(value, bool):
            dtype = "float32"
        return literal(value, dtype)

    def cast(self, x, dtype):
        return f"({x} != 0)" if dtype == "bool" else f"tl.cast({x}, {tl_dtype(dtype)})"

    def add(self, a, b): return f"({a} + {b})"
    def sub(self, a, b): return f"({a} - {b})"
    def mul(self, a, b): return f"({a} * {b})"
    def div(self, a, b): return f"({a} / {b})"
    def neg(self, x): return f"(-{x})"

    def floordiv(self, a, b):
        if is_float(self.dtype):
            return f"floordiv_float({self._f(a)}, {self._f(b)})"
        return f"floordiv_int({a}, {b})"

    def mod(self, a, b):
        if is_float(self.dtype):
            return f"mod_float({self._f(a)}, {self._f(b)})"
        return f"mod_int({a}, {b})"

    def pow(self, a, b):
        if is_float(self.dtype):
            return f"pow_float({self._f(a)}, {self._f(b)})"
        return f"pow_int({self.cast(a, self.dtype)}, {self.cast(b, self.dtype)})"

    def exp(self, x): return f"tl.exp({self._f(x)})"
    def expm1(self, x): return f"expm1_({self._f(x)})"
    def log(self, x): return f"tl.log({self._f(x)})"
    def log1p(self, x): return f"log1p_({self._f(x)})"
    def sqrt(self, x): return f"tl.sqrt({self._f(x)})"
    def tanh(self, x): return f"tanh_({self._f(x)})"
    def sin(self, x): return f"tl.sin({self._f(x)})"
    def cos(self, x): return f"tl.cos({self._f(x)})"
    def atan(self, x): return f"atan_({self._f(x)})"
    def erf(self, x): return f"tl.math.erf({self._f(x)})"
    def abs(self, x): return f"tl.abs({x})"

    def floor(self, x):
        return f"tl.floor({self._f(x)})" if is_float(self.dtype) else x

    def maximum(self, a, b): return f"tl.maximum({a}, {b})"
    def minimum(self, a, b): return f"tl.minimum({a}, {b})"
    def where(self, cond, a, b): return f"tl.where({cond}, {a}, {b})"
    def compare(self, op, a, b): return f"({a} {op} {b})"

    def logical(self, op, a, b=None):
        if op == "not":
            return f"({a} == 0)"
        symbol = {"and": "&", "or": "|", "xor": "^"}[op]
        return f"(({a} != 0) {symbol} ({b} != 0))"
