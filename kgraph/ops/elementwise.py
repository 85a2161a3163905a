"""Elementwise ops: one table row per op with scalar formula, numpy reference and gradient.

Formulas are written against kgraph.compiler.lower.scalar.ScalarOps (`h`), so any chain of
these ops renders into one fused loop on every backend. Gradient rules are written with
kgraph.ops and return one gradient per input, already reduced to the input's shape.
"""

from __future__ import annotations

import math

import numpy as np

from kgraph import ops
from kgraph.ops.registry import ELEMENTWISE, OpDef, bind, register
from kgraph.ops.shapes import broadcast_shapes

SQRT_2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

FLOATS = ("float16", "float32", "float64", "bfloat16")


def is_float(dtype):
    return str(dtype) in FLOATS


def result_type(*dtypes):
    """Promotion of tensor dtypes (bool < ints < floats; float32 wins over ints)."""
    dtypes = [str(d) for d in dtypes]
    floats = [d for d in dtypes if is_float(d)]
    if floats:
        return str(np.result_type(*floats))
    ints = [d for d in dtypes if d != "bool"]
    return str(np.result_type(*ints)) if ints else "bool"


# -- dtype rules --------------------------------------------------------------------------
def _float_result(attrs, *specs):
    dtype = result_type(*(s.dtype for s in specs))
    return dtype if is_float(dtype) else "float32"


def _same_result(attrs, *specs):
    return result_type(*(s.dtype for s in specs))


def _bool_result(attrs, *specs):
    return "bool"


def _elementwise_infer(dtype_rule):
    def infer(attrs, *specs):
        shape = broadcast_shapes(*(s.shape for s in specs), op="elementwise op")
        return shape, dtype_rule(attrs, *specs)
    return infer


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing numpy broadcasting (shapes are static)."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    extra = len(grad.shape) - len(shape)
    axes = list(range(extra))
    for axis, dim in enumerate(shape):
        if dim == 1 and grad.shape[axis + extra] != 1:
            axes.append(axis + extra)
    if axes:
        grad = ops.sum(grad, axis=tuple(axes), keepdims=True)
    if extra:
        grad = ops.reshape(grad, tuple(-1 if d is None else d for d in shape))
    return grad


# -- registration helpers ------------------------------------------------------------------
def _float_samples(domain):
    def samples(rng):
        def draw(*shape):
            x = rng.standard_normal(shape).astype(np.float32)
            if domain == "positive":
                return np.abs(x) + 0.5
            if domain == "unit":
                return np.clip(x, -0.9, 0.9)
            return x
        return draw
    return samples


def _define(name, arity, scalar, reference, grad=None, dtype_rule=_float_result,
            domain="real", differentiable=True, attrs_for_samples=None, doc=""):
    def samples(rng):
        draw = _float_samples(domain)(rng)
        shapes = {1: [[(3, 4)], [(2, 3, 5)], [()]],
                  2: [[(3, 4), (3, 4)], [(2, 3, 4), (4,)], [(5, 1), (1, 6)]],
                  3: [[(3, 4), (3, 4), (3, 4)], [(2, 3), (3,), (2, 1)]]}[arity]
        cases = []
        for case in shapes:
            inputs = [draw(*s) for s in case]
            if name == "where":
                inputs[0] = inputs[0] > 0
            cases.append((inputs, dict(attrs_for_samples or {})))
        return cases

    return register(OpDef(name=name, kind=ELEMENTWISE, infer=_elementwise_infer(dtype_rule),
                          reference=reference, grad=grad, scalar=scalar, samples=samples,
                          differentiable=differentiable, doc=doc))


def _unary_grad(rule):
    """Adapt `rule(x, y, g, **attrs)` to the registry's GradContext convention."""
    def grad(ctx):
        return [rule(ctx.inputs[0], ctx.output, ctx.upstream, **ctx.attrs)]
    return grad


def _binary_grad(rule):
    def grad(ctx):
        x, y = ctx.inputs
        gx, gy = rule(x, y, ctx.output, ctx.upstream, **ctx.attrs)
        return [None if gx is None else unbroadcast(gx, x.shape),
                None if gy is None else unbroadcast(gy, y.shape)]
    return grad


def _positive_mask(x):
    return ops.cast(ops.greater(x, 0), x.dtype)


# -- arithmetic ------------------------------------------------------------------------------
_define("add", 2, lambda h, a, b: h.add(a, b), lambda at, a, b: np.add(a, b),
        _binary_grad(lambda x, y, out, g: (g, g)), dtype_rule=_same_result)
_define("subtract", 2, lambda h, a, b: h.sub(a, b), lambda at, a, b: np.subtract(a, b),
        _binary_grad(lambda x, y, out, g: (g, ops.negative(g))), dtype_rule=_same_result)
_define("multiply", 2, lambda h, a, b: h.mul(a, b), lambda at, a, b: np.multiply(a, b),
        _binary_grad(lambda x, y, out, g: (ops.multiply(g, y), ops.multiply(g, x))),
        dtype_rule=_same_result)
_define("divide", 2, lambda h, a, b: h.div(h.cast(a, h.dtype), h.cast(b, h.dtype)),
        lambda at, a, b: np.true_divide(a, b),
        _binary_grad(lambda x, y, out, g: (ops.divide(g, y),
                                           ops.negative(ops.divide(ops.multiply(g, out), y)))),
        domain="positive")
_define("floor_divide", 2, lambda h, a, b: h.floordiv(a, b),
        lambda at, a, b: np.floor_divide(a, b), dtype_rule=_same_result, domain="positive",
        differentiable=False)
_define("mod", 2, lambda h, a, b: h.mod(a, b), lambda at, a, b: np.mod(a, b),
        _binary_grad(lambda x, y, out, g: (g, ops.negative(ops.multiply(g, ops.floor_divide(x, y))))),
        dtype_rule=_same_result, domain="positive")
_define("negative", 1, lambda h, x: h.neg(x), lambda at, x: np.negative(x),
        _unary_grad(lambda x, y, g: ops.negative(g)), dtype_rule=_same_result)
_define("power", 2, lambda h, a, b: h.pow(a, b), lambda at, a, b: np.power(a, b),
        _binary_grad(lambda x, y, out, g: (
            ops.multiply(g, ops.multiply(y, ops.power(x, ops.subtract(y, 1.0)))),
            ops.multiply(g, ops.multiply(out, ops.log(x))))),
        dtype_rule=_same_result, domain="positive")
_define("square", 1, lambda h, x: h.mul(x, x), lambda at, x: np.square(x),
        _unary_grad(lambda x, y, g: ops.multiply(g, ops.multiply(x, 2.0))), dtype_rule=_same_result)
_define("abs", 1, lambda h, x: h.abs(x), lambda at, x: np.abs(x),
        _unary_grad(lambda x, y, g: ops.multiply(g, ops.sign(x))), dtype_rule=_same_result)
_define("sign", 1,
        lambda h, x: h.where(h.compare(">", x, h.const(0)), h.const(1),
                             h.where(h.compare("<", x, h.const(0)), h.const(-1), h.const(0))),
        lambda at, x: np.sign(x), dtype_rule=_same_result, differentiable=False)
_define("floor", 1, lambda h, x: h.floor(x), lambda at, x: np.floor(x),
        dtype_rule=_same_result, differentiable=False)
_define("maximum", 2, lambda h, a, b: h.maximum(a, b), lambda at, a, b: np.maximum(a, b),
        _binary_grad(lambda x, y, out, g: (
            ops.where(ops.greater_equal(x, y), g, ops.zeros_like(g)),
            ops.where(ops.greater_equal(x, y), ops.zeros_like(g), g))),
        dtype_rule=_same_result)
_define("minimum", 2, lambda h, a, b: h.minimum(a, b), lambda at, a, b: np.minimum(a, b),
        _binary_grad(lambda x, y, out, g: (
            ops.where(ops.less_equal(x, y), g, ops.zeros_like(g)),
            ops.where(ops.less_equal(x, y), ops.zeros_like(g), g))),
        dtype_rule=_same_result)

# -- exponentials and roots -----------------------------------------------------------------
_define("exp", 1, lambda h, x: h.exp(x), lambda at, x: np.exp(x),
        _unary_grad(lambda x, y, g: ops.multiply(g, y)))
_define("expm1", 1, lambda h, x: h.expm1(x), lambda at, x: np.expm1(x),
        _unary_grad(lambda x, y, g: ops.multiply(g, ops.add(y, 1.0))))
_define("log", 1, lambda h, x: h.log(x), lambda at, x: np.log(x),
        _unary_grad(lambda x, y, g: ops.divide(g, x)), domain="positive")
_define("log1p", 1, lambda h, x: h.log1p(x), lambda at, x: np.log1p(x),
        _unary_grad(lambda x, y, g: ops.divide(g, ops.add(x, 1.0))), domain="positive")
_define("sqrt", 1, lambda h, x: h.sqrt(x), lambda at, x: np.sqrt(x),
        _unary_grad(lambda x, y, g: ops.divide(ops.multiply(g, 0.5), y)), domain="positive")
_define("rsqrt", 1, lambda h, x: h.div(h.const(1.0), h.sqrt(x)), lambda at, x: 1.0 / np.sqrt(x),
        _unary_grad(lambda x, y, g: ops.multiply(g, ops.divide(ops.multiply(y, -0.5), x))),
        domain="positive")

# -- trigonometry --------------------------------------------------------------------------------
_define("sin", 1, lambda h, x: h.sin(x), lambda at, x: np.sin(x),
        _unary_grad(lambda x, y, g: ops.multiply(g, ops.cos(x))))
_define("cos", 1, lambda h, x: h.cos(x), lambda at, x: np.cos(x),
        _unary_grad(lambda x, y, g: ops.negative(ops.multiply(g, ops.sin(x)))))
_define("arctan", 1, lambda h, x: h.atan(x), lambda at, x: np.arctan(x),
        _unary_grad(lambda x, y, g: ops.divide(g, ops.add(1.0, ops.square(x)))))

# -- comparisons and logic ------------------------------------------------------------------
for _name, _symbol, _ufunc in [("equal", "==", np.equal), ("not_equal", "!=", np.not_equal),
                               ("greater", ">", np.greater), ("greater_equal", ">=", np.greater_equal),
                               ("less", "<", np.less), ("less_equal", "<=", np.less_equal)]:
    _define(_name, 2, (lambda s: lambda h, a, b: h.compare(s, a, b))(_symbol),
            (lambda f: lambda at, a, b: f(a, b))(_ufunc), dtype_rule=_bool_result,
            differentiable=False)
for _name, _word, _ufunc in [("logical_and", "and", np.logical_and), ("logical_or", "or", np.logical_or),
                             ("logical_xor", "xor", np.logical_xor)]:
    _define(_name, 2, (lambda w: lambda h, a, b: h.logical(w, a, b))(_word),
            (lambda f: lambda at, a, b: f(a, b))(_ufunc), dtype_rule=_bool_result,
            differentiable=False)
_define("logical_not", 1, lambda h, x: h.logical("not", x), lambda at, x: np.logical_not(x),
        dtype_rule=_bool_result, differentiable=False)
_define("where", 3, lambda h, c, a, b: h.where(c, a, b),
        lambda at, c, a, b: np.where(c, a, b),
        lambda ctx: [None,
                     unbroadcast(ops.where(ctx.inputs[0], ctx.upstream, ops.zeros_like(ctx.upstream)),
                                 ctx.inputs[1].shape),
                     unbroadcast(ops.where(ctx.inputs[0], ops.zeros_like(ctx.upstream), ctx.upstream),
                                 ctx.inputs[2].shape)],
        dtype_rule=lambda attrs, c, a, b: result_type(a.dtype, b.dtype))


def _cast_infer(attrs, x):
    return x.shape, attrs["dtype"]


def _cast_grad(ctx):
    x = ctx.inputs[0]
    if not is_float(x.dtype) or not is_float(ctx.output.dtype):
        return [None]
    return [ops.cast(ctx.upstream, x.dtype)]


register(OpDef("cast", ELEMENTWISE, _cast_infer, lambda at, x: np.asarray(x).astype(at["dtype"]),
               grad=_cast_grad, scalar=lambda h, x, dtype: h.cast(x, dtype),
               samples=lambda rng: [([rng.standard_normal((3, 4)).astype(np.float32)],
                                     {"dtype": "float64"}),
                                    ([rng.standard_normal((3, 4)).astype(np.float32) * 5],
                                     {"dtype": "int32"})]))


def _identity_grad(ctx):
    return [ctx.upstream]


register(OpDef("stop_gradient", ELEMENTWISE, _elementwise_infer(_same_result),
               lambda at, x: np.array(x), grad=None, scalar=lambda h, x: x,
               differentiable=False,
               samples=lambda rng: [([rng.standard_normal((3, 4)).astype(np.float32)], {})]))

# -- activations ------------------------------------------------------------------------------
def _sigmoid_ref(at, x):
    return 1.0 / (1.0 + np.exp(-x))


def _h_sigmoid(h, x):
    return h.div(h.const(1.0), h.add(h.const(1.0), h.exp(h.neg(x))))


_define("relu", 1, lambda h, x: h.maximum(x, h.const(0.0)), lambda at, x: np.maximum(x, 0),
        # The mask reads the output, not the input: the input then has one reader and
        # fuses into the producing matmul's epilogue.
        _unary_grad(lambda x, y, g: ops.multiply(g, _positive_mask(y))), dtype_rule=_same_result)
_define("relu6", 1, lambda h, x: h.minimum(h.maximum(x, h.const(0.0)), h.const(6.0)),
        lambda at, x: np.minimum(np.maximum(x, 0), 6),
        _unary_grad(lambda x, y, g: ops.where(ops.logical_and(ops.greater(x, 0), ops.less(x, 6)),
                                              g, ops.zeros_like(g))), dtype_rule=_same_result)
_define("sigmoid", 1, _h_sigmoid, _sigmoid_ref,
        _unary_grad(lambda x, y, g: ops.multiply(g, ops.multiply(y, ops.subtract(1.0, y)))))
_define("tanh", 1, lambda h, x: h.tanh(x), lambda at, x: np.tanh(x),
        _unary_grad(lambda x, y, g: ops.multiply(g, ops.subtract(1.0, ops.square(y)))))
_define("softplus", 1,
        lambda h, x: h.add(h.log1p(h.exp(h.neg(h.abs(x)))), h.maximum(x, h.const(0.0))),
        lambda at, x: np.logaddexp(0.0, x).astype(x.dtype),
        _unary_grad(lambda x, y, g: ops.multiply(g, ops.sigmoid(x))))
_define("softsign", 1, lambda h, x: h.div(x, h.add(h.const(1.0), h.abs(x))),
        lambda at, x: x / (1.0 + np.abs(x)),
        _unary_grad(lambda x, y, g: ops.divide(g, ops.square(ops.add(ops.abs(x), 1.0)))))
_define("silu", 1, lambda h, x: h.mul(x, _h_sigmoid(h, x)), lambda at, x: x * _sigmoid_ref(at, x),
        _unary_grad(lambda x, y, g: ops.multiply(g, ops.multiply(
            ops.sigmoid(x), ops.add(1.0, ops.multiply(x, ops.subtract(1.0, ops.sigmoid(x))))))))


def _gelu_exact_ref(at, x):
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / SQRT_2))


def _gelu_tanh_ref(at, x):
    return 0.5 * x * (1.0 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))


def _gelu_exact_grad(x, y, g):
    cdf = ops.multiply(0.5, ops.add(1.0, ops.erf(ops.divide(x, SQRT_2))))
    pdf = ops.multiply(1.0 / math.sqrt(2 * math.pi), ops.exp(ops.multiply(-0.5, ops.square(x))))
    return ops.multiply(g, ops.add(cdf, ops.multiply(x, pdf)))


def _gelu_tanh_grad(x, y, g):
    inner = ops.multiply(SQRT_2_OVER_PI, ops.add(x, ops.multiply(0.044715, ops.power(x, 3.0))))
    t = ops.tanh(inner)
    dinner = ops.multiply(SQRT_2_OVER_PI, ops.add(1.0, ops.multiply(3 * 0.044715, ops.square(x))))
    dy = ops.add(ops.multiply(0.5, ops.add(1.0, t)),
                 ops.multiply(ops.multiply(0.5, x), ops.multiply(ops.subtract(1.0, ops.square(t)), dinner)))
    return ops.multiply(g, dy)


_define("erf", 1, lambda h, x: h.erf(x),
        lambda at, x: __import__("scipy.special", fromlist=["erf"]).erf(x),
        _unary_grad(lambda x, y, g: ops.multiply(
            g, ops.multiply(2.0 / math.sqrt(math.pi), ops.exp(ops.negative(ops.square(x)))))))
_define("gelu_exact", 1,
        lambda h, x: h.mul(h.mul(h.const(0.5), x),
                           h.add(h.const(1.0), h.erf(h.div(x, h.const(SQRT_2))))),
        _gelu_exact_ref, _unary_grad(_gelu_exact_grad))
_define("gelu_tanh", 1,
        lambda h, x: h.mul(h.mul(h.const(0.5), x), h.add(h.const(1.0), h.tanh(
            h.mul(h.const(SQRT_2_OVER_PI), h.add(x, h.mul(h.const(0.044715), h.mul(x, h.mul(x, x)))))))),
        _gelu_tanh_ref, _unary_grad(_gelu_tanh_grad))
_define("elu", 1,
        lambda h, x, alpha: h.where(h.compare(">", x, h.const(0.0)), x,
                                    h.mul(h.const(alpha), h.expm1(x))),
        lambda at, x: np.where(x > 0, x, at["alpha"] * np.expm1(x)),
        _unary_grad(lambda x, y, g, alpha: ops.where(ops.greater(x, 0), g,
                                                     ops.multiply(g, ops.add(y, alpha)))),
        attrs_for_samples={"alpha": 1.0})
_define("selu", 1,
        lambda h, x: h.mul(h.const(SELU_SCALE), h.where(
            h.compare(">", x, h.const(0.0)), x, h.mul(h.const(SELU_ALPHA), h.expm1(x)))),
        lambda at, x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
        _unary_grad(lambda x, y, g: ops.where(ops.greater(x, 0), ops.multiply(g, SELU_SCALE),
                                              ops.multiply(g, ops.add(y, SELU_SCALE * SELU_ALPHA)))))
_define("leaky_relu", 1,
        lambda h, x, negative_slope: h.where(h.compare(">=", x, h.const(0.0)), x,
                                             h.mul(h.const(negative_slope), x)),
        lambda at, x: np.where(x >= 0, x, at["negative_slope"] * x),
        _unary_grad(lambda x, y, g, negative_slope: ops.where(
            ops.greater_equal(x, 0), g, ops.multiply(g, negative_slope))),
        dtype_rule=_same_result, attrs_for_samples={"negative_slope": 0.2})
_define("hard_sigmoid", 1,
        lambda h, x: h.div(h.minimum(h.maximum(h.add(x, h.const(3.0)), h.const(0.0)), h.const(6.0)),
                           h.const(6.0)),
        lambda at, x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
        _unary_grad(lambda x, y, g: ops.where(ops.logical_and(ops.greater(x, -3.0), ops.less(x, 3.0)),
                                              ops.divide(g, 6.0), ops.zeros_like(g))))


# -- the kgraph.ops functions (Keras 3 names and signatures) -------------------------------------
def _elementwise_fn(name):
    def fn(*args):
        return bind(name, list(args))
    fn.__name__ = name
    fn.__doc__ = f"Elementwise `{name}` with numpy broadcasting."
    return fn


add = _elementwise_fn("add")
subtract = _elementwise_fn("subtract")
multiply = _elementwise_fn("multiply")
divide = _elementwise_fn("divide")
true_divide = divide
floor_divide = _elementwise_fn("floor_divide")
mod = _elementwise_fn("mod")
negative = _elementwise_fn("negative")
power = _elementwise_fn("power")
square = _elementwise_fn("square")
absolute = _elementwise_fn("abs")
abs = absolute  # noqa: A001  (Keras exports both names)
sign = _elementwise_fn("sign")
floor = _elementwise_fn("floor")
maximum = _elementwise_fn("maximum")
minimum = _elementwise_fn("minimum")
exp = _elementwise_fn("exp")
expm1 = _elementwise_fn("expm1")
log = _elementwise_fn("log")
log1p = _elementwise_fn("log1p")
sqrt = _elementwise_fn("sqrt")
rsqrt = _elementwise_fn("rsqrt")
erf = _elementwise_fn("erf")
equal = _elementwise_fn("equal")
not_equal = _elementwise_fn("not_equal")
greater = _elementwise_fn("greater")
greater_equal = _elementwise_fn("greater_equal")
less = _elementwise_fn("less")
less_equal = _elementwise_fn("less_equal")
logical_and = _elementwise_fn("logical_and")
logical_or = _elementwise_fn("logical_or")
logical_xor = _elementwise_fn("logical_xor")
logical_not = _elementwise_fn("logical_not")
relu = _elementwise_fn("relu")
relu6 = _elementwise_fn("relu6")
sigmoid = _elementwise_fn("sigmoid")
tanh = _elementwise_fn("tanh")
sin = _elementwise_fn("sin")
cos = _elementwise_fn("cos")
arctan = _elementwise_fn("arctan")
softplus = _elementwise_fn("softplus")
softsign = _elementwise_fn("softsign")
silu = _elementwise_fn("silu")
swish = silu
selu = _elementwise_fn("selu")
hard_sigmoid = _elementwise_fn("hard_sigmoid")
stop_gradient = _elementwise_fn("stop_gradient")


def where(condition, x1=None, x2=None):
    """Select from x1 where condition holds, else from x2."""
    if x1 is None or x2 is None:
        raise ValueError("where: kgraph needs both x1 and x2 (the one-argument form has a "
                         "data-dependent shape and cannot be compiled)")
    return bind("where", [condition, x1, x2])


def cast(x, dtype):
    from kgraph.ir.variable import standardize_dtype

    dtype = standardize_dtype(dtype)
    if isinstance(x, (bool, int, float)):  # a Python number takes the target dtype directly
        x = np.asarray(x, dtype=dtype)
    if getattr(x, "dtype", None) == dtype and not isinstance(x, (int, float)):
        return x if not hasattr(x, "_value") else x.value
    return bind("cast", [x], dtype=dtype)


def gelu(x, approximate=True):
    return bind("gelu_tanh" if approximate else "gelu_exact", [x])


def elu(x, alpha=1.0):
    return bind("elu", [x], alpha=float(alpha))


def leaky_relu(x, negative_slope=0.2):
    return bind("leaky_relu", [x], negative_slope=float(negative_slope))


def clip(x, x_min, x_max):
    return minimum(maximum(x, x_min), x_max)
