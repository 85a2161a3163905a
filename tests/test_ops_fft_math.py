"""The fft family (kgraph/ops/fft.py) and the special, integer, bitwise, NaN-quantile,
correlation and counting functions (kgraph/ops/math_extra.py) against numpy and scipy
written here: eagerly, compiled with numba (one float64 graph with gradients against
central finite differences of the numpy formula, one integer graph), traced with a batch
dimension of None, and their errors.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.signal
import scipy.special as sp
from compiled_cases import compile_cases
from keras_reference import SKIP_REASON, keras_python

from kgraph import ops
from kgraph.compiler.passes.pipeline import compile_graph
from kgraph.ir import Graph, SymbolicTensor, tracing

SHAPE = (2, 3, 8)
FD_STEP = 1e-6


def _x():
    return np.random.default_rng(5).standard_normal(SHAPE)


def _pair(z):
    """A complex numpy result as the stacked (real, imag) the kgraph cases return."""
    return np.stack([z.real, z.imag])


def _stft_reference(x, sequence_length, stride, fft_length, window="hann", center=True):
    """Keras's numpy-backend stft, through scipy.signal.stft."""
    if center:
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(fft_length // 2, fft_length // 2)], mode="reflect")
    left = (fft_length - sequence_length) // 2
    if window is None:
        win = np.ones(fft_length)
    else:
        win = scipy.signal.get_window(window, sequence_length) if isinstance(window, str) else np.asarray(window)
        win = np.pad(win.astype(x.dtype), (left, fft_length - sequence_length - left))
    z = scipy.signal.stft(x, fs=1.0, window=win, nperseg=fft_length, noverlap=fft_length - stride,
                          nfft=fft_length, boundary=None, padded=False)[-1]
    return np.swapaxes(z / np.sqrt(1.0 / win.sum() ** 2), -2, -1)


def _istft_reference(z, sequence_length, stride, fft_length, length=None, window="hann", center=True):
    """Keras's numpy-backend istft, through scipy.signal.istft."""
    left = (fft_length - sequence_length) // 2
    if window is None:
        win = np.ones(fft_length)
    else:
        win = scipy.signal.get_window(window, sequence_length) if isinstance(window, str) else np.asarray(window)
        win = np.pad(win, (left, fft_length - sequence_length - left))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = scipy.signal.istft(z, fs=1.0, window=win, nperseg=fft_length, noverlap=fft_length - stride,
                               nfft=fft_length, boundary=False, time_axis=-2, freq_axis=-1)[-1]
    x = x / win.sum() if window is not None else x / stride
    start = fft_length // 2 if center else 0
    if length is not None:
        end = start + length
    else:
        end = -(fft_length // 2) if center else fft_length + stride * (z.shape[-2] - 1)
    return x[..., start:end]


def _with_nan(x):
    return ops.where(ops.greater(x, 1.0), np.nan, x)


def _np_with_nan(x):
    return np.where(x > 1, np.nan, x)


def _spectrum(x):
    """A (2, 3, 5) complex input from x: bins 0..4 real, 3..7 imaginary."""
    return ops.getitem(x, (Ellipsis, slice(0, 5))), ops.getitem(x, (Ellipsis, slice(3, 8)))


def _np_spectrum(x):
    return x[..., :5] + 1j * x[..., 3:]


# id -> (kgraph function of x, numpy function of x, differentiable). x has shape (2, 3, 8).
CASES = {
    "fft": (lambda x: ops.stack(ops.fft((x, ops.sin(x)))), lambda x: _pair(np.fft.fft(x + 1j * np.sin(x))), True),
    "fft2": (lambda x: ops.stack(ops.fft2((x, ops.square(x)))), lambda x: _pair(np.fft.fft2(x + 1j * x * x)), True),
    "ifft2": (lambda x: ops.stack(ops.ifft2((ops.swapaxes(x, 0, 2), ops.cos(ops.swapaxes(x, 0, 2))))),
              lambda x: _pair(np.fft.ifft2(np.swapaxes(x, 0, 2) + 1j * np.cos(np.swapaxes(x, 0, 2)))), True),
    "rfft": (lambda x: ops.stack(ops.rfft(x)), lambda x: _pair(np.fft.rfft(x)), True),
    "rfft-crop": (lambda x: ops.stack(ops.rfft(x, 5)), lambda x: _pair(np.fft.rfft(x, 5)), True),
    "rfft-pad": (lambda x: ops.stack(ops.rfft(x, 11)), lambda x: _pair(np.fft.rfft(x, 11)), True),
    "irfft": (lambda x: ops.irfft(_spectrum(x)), lambda x: np.fft.irfft(_np_spectrum(x)), True),
    "irfft-odd": (lambda x: ops.irfft(_spectrum(x), 7), lambda x: np.fft.irfft(_np_spectrum(x), 7), True),
    "irfft-crop": (lambda x: ops.irfft(_spectrum(x), 5), lambda x: np.fft.irfft(_np_spectrum(x), 5), True),
    "stft": (lambda x: ops.stack(ops.stft(ops.reshape(x, (2, 24)), 8, 4, 8)),
             lambda x: _pair(_stft_reference(x.reshape(2, 24), 8, 4, 8)), True),
    "stft-hamming": (lambda x: ops.stack(ops.stft(ops.reshape(x, (2, 24)), 6, 3, 8, "hamming", center=False)),
                     lambda x: _pair(_stft_reference(x.reshape(2, 24), 6, 3, 8, "hamming", False)), True),
    "istft": (lambda x: ops.istft(_spectrum(x), 8, 4, 8), lambda x: _istft_reference(_np_spectrum(x), 8, 4, 8), True),
    "istft-options": (lambda x: ops.istft(_spectrum(x), 6, 3, 8, length=9, window=None, center=False),
                      lambda x: _istft_reference(_np_spectrum(x), 6, 3, 8, 9, None, False), True),
    "erfinv": (lambda x: ops.erfinv(ops.multiply(ops.tanh(x), 0.95)), lambda x: sp.erfinv(0.95 * np.tanh(x)), True),
    "i0": (lambda x: ops.i0(ops.multiply(x, 6.0)), lambda x: sp.i0(6 * x), True),
    "nanquantile": (lambda x: ops.nanquantile(_with_nan(x), [0.25, 0.8], axis=-1),
                    lambda x: np.nanquantile(_np_with_nan(x), [0.25, 0.8], axis=-1), True),
    "nanmedian": (lambda x: ops.nanmedian(_with_nan(x), axis=(0, -1), keepdims=True),
                  lambda x: np.nanmedian(_np_with_nan(x), axis=(0, -1), keepdims=True), True),
    "nanpercentile": (lambda x: ops.nanpercentile(_with_nan(x), 30, axis=-2, method="midpoint"),
                      lambda x: np.nanpercentile(_np_with_nan(x), 30, axis=-2, method="midpoint"), True),
    "corrcoef": (lambda x: ops.corrcoef(ops.reshape(x, (6, 8))), lambda x: np.corrcoef(x.reshape(6, 8)), True),
    "correlate-valid": (lambda x: ops.correlate(ops.reshape(x, (-1,)), ops.getitem(x, (0, 0, slice(0, 5)))),
                        lambda x: np.correlate(x.reshape(-1), x[0, 0, :5]), True),
    "correlate-same": (lambda x: ops.correlate(ops.getitem(x, (0, 1)), ops.getitem(x, 1)[0], "same"),
                       lambda x: np.correlate(x[0, 1], x[1, 0], "same"), True),
    "correlate-full": (lambda x: ops.correlate(ops.getitem(x, (0, 1, slice(0, 3))), ops.getitem(x, (1, 2)), "full"),
                       lambda x: np.correlate(x[0, 1, :3], x[1, 2], "full"), True),
    "nextafter": (lambda x: ops.nextafter(x, ops.getitem(x, 0)), lambda x: np.nextafter(x, x[0]), False),
    "histogram": (lambda x: ops.stack([ops.histogram(ops.reshape(x, (-1,)), 6)[0],
                                       ops.getitem(ops.histogram(ops.reshape(x, (-1,)), 6)[1], slice(0, 6))]),
                  lambda x: np.stack([np.histogram(x.reshape(-1), 6)[0], np.histogram(x.reshape(-1), 6)[1][:6]]),
                  False),
}
# The compiled cases: one per function (the variants above run eagerly), in graphs of about a
# hundred fusion groups each (numba's compile time of a module's entry grows faster than linearly).
COMPILED = {
    "spectral": ["fft", "fft2", "rfft-pad", "irfft-odd", "stft-hamming"],
    "inverse": ["ifft2", "istft-options", "erfinv", "i0", "nextafter", "histogram"],
    "statistics": ["nanquantile", "corrcoef", "correlate-same"],
    "medians": ["nanmedian", "nanpercentile"],
}
COMPILED_CASES = [(group, name) for group, names in COMPILED.items() for name in names]
GRAD_CASES = [(group, name) for group, name in COMPILED_CASES if CASES[name][2]]


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_float32_matches_numpy(name):
    fn, reference, _ = CASES[name]
    x = _x().astype(np.float32)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        actual = np.asarray(fn(x))
        expected = np.asarray(reference(x.astype(np.float64)))
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, numpy gives {expected.shape}"
    assert actual.dtype == np.float32, f"{name}: dtype {actual.dtype}"
    if name == "nextafter":  # exact, in float32
        np.testing.assert_array_equal(actual, np.nextafter(x, x[0]))
        return
    scale = max(1.0, float(np.nanmax(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=2e-5 * scale, equal_nan=True, err_msg=name)


def _compile_cases(names, graph_name):
    """One float64 graph: each case's output, and d sum(f(x) * w) / dx for the differentiable
    ones (NaN outputs, e.g. of nanquantile, count as 0)."""
    x_value = _x()
    cases = {name: (CASES[name][0], CASES[name][2]) for name in names}
    return (x_value,) + compile_cases(cases, graph_name, x_value, nan_as_zero=True)


@pytest.fixture(scope="module")
def compiled():
    cache = {}

    def get(group):
        if group not in cache:
            cache[group] = _compile_cases(COMPILED[group], f"test_ops_fft_math_{group}")
        return cache[group]
    return get


@pytest.mark.parametrize("group, name", COMPILED_CASES, ids=[n for _, n in COMPILED_CASES])
def test_compiled_float64_matches_numpy(compiled, group, name):
    x, outputs, forward, _, _ = compiled(group)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.asarray(CASES[name][1](x))
    actual = outputs[forward[name]]
    assert actual.shape == expected.shape, f"{name}: compiled shape {actual.shape}, numpy gives {expected.shape}"
    assert actual.dtype == np.float64, f"{name}: dtype {actual.dtype}"
    if name == "nextafter":
        np.testing.assert_array_equal(actual, expected)
        return
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-11, equal_nan=True, err_msg=name)


@pytest.mark.parametrize("group, name", GRAD_CASES, ids=[n for _, n in GRAD_CASES])
def test_compiled_gradient_matches_finite_differences(compiled, group, name):
    """d sum(f(x) w) / dx compiled in float64, against central differences of the numpy formula."""
    x, outputs, _, grads, weights = compiled(group)
    reference, w = CASES[name][1], weights[name]
    analytic = outputs[grads[name]]
    numeric = np.zeros_like(x)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index in np.ndindex(x.shape):
            plus, minus = x.copy(), x.copy()
            plus[index] += FD_STEP
            minus[index] -= FD_STEP
            numeric[index] = (np.sum(np.nan_to_num(reference(plus)) * w)
                              - np.sum(np.nan_to_num(reference(minus)) * w)) / (2 * FD_STEP)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6, err_msg=f"{name}: d loss / dx")


# -- integer and bitwise functions -----------------------------------------------------------------
INT_SHAPE = (4, 6)


def _ints():
    rng = np.random.default_rng(3)
    a = rng.integers(-2 ** 31, 2 ** 31 - 1, INT_SHAPE, dtype=np.int64).astype(np.int32)
    b = rng.integers(-2 ** 31, 2 ** 31 - 1, INT_SHAPE, dtype=np.int64).astype(np.int32)
    a[0, :3], b[0, :3] = [0, 0, 7], [0, 5, 0]
    a[1, :2], b[1, :2] = [1836311903, -2 ** 31 + 1], [1134903170, 2 ** 30]  # Euclid's worst case
    small_a, small_b = a % 1000 - 500, b % 360 - 180
    return a, b, small_a, small_b


def _np_bincount_rows(x, length):
    return np.stack([np.bincount(row, minlength=length) for row in x])


# id -> (kgraph function of (a, b, small_a, small_b), numpy function of the same); int32 inputs.
INT_CASES = {
    "gcd": (lambda a, b, sa, sb: ops.gcd(a, b), lambda a, b, sa, sb: np.gcd(a, b)),
    "gcd-small": (lambda a, b, sa, sb: ops.gcd(sa, sb), lambda a, b, sa, sb: np.gcd(sa, sb)),
    "lcm": (lambda a, b, sa, sb: ops.lcm(sa, sb), lambda a, b, sa, sb: np.lcm(sa, sb)),
    "bitwise_and": (lambda a, b, sa, sb: ops.bitwise_and(a, b), lambda a, b, sa, sb: np.bitwise_and(a, b)),
    "bitwise_or": (lambda a, b, sa, sb: ops.bitwise_or(a, ops.getitem(b, slice(0, 1))),
                   lambda a, b, sa, sb: np.bitwise_or(a, b[:1])),
    "bitwise_xor": (lambda a, b, sa, sb: ops.bitwise_xor(a, b), lambda a, b, sa, sb: np.bitwise_xor(a, b)),
    "bitwise_not": (lambda a, b, sa, sb: ops.bitwise_not(a), lambda a, b, sa, sb: np.invert(a)),
    "bitwise_invert": (lambda a, b, sa, sb: ops.bitwise_invert(sb), lambda a, b, sa, sb: np.invert(sb)),
    "bincount": (lambda a, b, sa, sb: ops.bincount(ops.mod(sa, 7), minlength=7),
                 lambda a, b, sa, sb: _np_bincount_rows(np.mod(sa, 7), 7)),
}


@pytest.mark.parametrize("name", sorted(INT_CASES))
def test_integer_functions_eager_match_numpy(name):
    fn, reference = INT_CASES[name]
    inputs = _ints()
    actual, expected = np.asarray(fn(*inputs)), reference(*inputs)
    assert actual.dtype == np.int32, f"{name}: dtype {actual.dtype}"
    np.testing.assert_array_equal(actual, expected, err_msg=name)


@pytest.fixture(scope="module")
def compiled_ints():
    graph = Graph("test_ops_fft_math_ints")
    with tracing(graph):
        inputs = [SymbolicTensor(graph, graph.add_placeholder(INT_SHAPE, "int32", name).id)
                  for name in ("a", "b", "sa", "sb")]
        for fn, _ in INT_CASES.values():
            graph.outputs.append(fn(*inputs).node_id)
    outputs = compile_graph(graph)(*_ints())
    return dict(zip(INT_CASES, (np.array(o) for o in outputs)))


@pytest.mark.parametrize("name", sorted(INT_CASES))
def test_integer_functions_compiled_match_numpy(compiled_ints, name):
    actual, expected = compiled_ints[name], INT_CASES[name][1](*_ints())
    assert actual.dtype == np.int32, f"{name}: dtype {actual.dtype}"
    np.testing.assert_array_equal(actual, expected, err_msg=name)


def test_integer_dtypes_and_bools_follow_keras():
    u = np.arange(0, 250, 7, dtype=np.uint8)
    for name, fn in (("bitwise_and", np.bitwise_and), ("bitwise_or", np.bitwise_or), ("bitwise_xor", np.bitwise_xor)):
        result = np.asarray(getattr(ops, name)(u, u[::-1]))
        assert result.dtype == np.uint8, name
        np.testing.assert_array_equal(result, fn(u, u[::-1]), err_msg=name)
        flags = np.array([True, True, False, False])
        np.testing.assert_array_equal(getattr(ops, name)(flags, flags[::-1]), fn(flags, flags[::-1]), err_msg=name)
        assert np.asarray(getattr(ops, name)(np.array([5], np.int32), np.array([True]))).dtype == np.int32
    i8 = np.array([-128, -1, 0, 127], np.int8)
    np.testing.assert_array_equal(ops.bitwise_and(i8, np.int8(-86)), i8 & np.int8(-86))
    np.testing.assert_array_equal(ops.bitwise_not(np.array([True, False])), [False, True])
    np.testing.assert_array_equal(ops.gcd(np.array([12, -18, 0], np.int16), np.int16(8)), [4, 2, 8])
    assert np.asarray(ops.gcd(np.array([4], np.int8), np.array([6], np.int32))).dtype == np.int32
    np.testing.assert_array_equal(ops.lcm(np.array([4, -6, 0], np.int32), np.array([6, 4, 3], np.int32)), [12, 12, 0])
    for name in ("gcd", "lcm", "bitwise_and", "bitwise_or", "bitwise_xor"):
        with pytest.raises(TypeError, match=f"{name}: integer"):
            getattr(ops, name)(np.array([1.5]), np.array([2.0]))
    with pytest.raises(TypeError, match="gcd: integer inputs are required, got bool"):
        ops.gcd(np.array([True]), np.array([False]))
    with pytest.raises(TypeError, match="bitwise_invert"):
        ops.bitwise_invert(np.array([1.5], np.float32))


# -- special functions, dtypes and edge values -----------------------------------------------------
def test_erfinv_i0_and_nextafter_edges():
    x = np.linspace(-0.9999, 0.9999, 4001)
    np.testing.assert_allclose(ops.erfinv(x), sp.erfinv(x), rtol=5e-14, atol=1e-15)
    edges = np.asarray(ops.erfinv(np.array([-1.0, 1.0, 1.5, -2.0, 0.0])))
    np.testing.assert_array_equal(edges, [-np.inf, np.inf, np.nan, np.nan, 0.0])
    assert np.asarray(ops.erfinv(np.array([0, 1], np.int32))).dtype == np.float32
    wide = np.linspace(-700.0, 700.0, 2801)
    np.testing.assert_allclose(ops.i0(wide), sp.i0(wide), rtol=1e-14)
    assert np.asarray(ops.i0(np.array([1, 2], np.int32))).dtype == np.float32
    assert np.asarray(ops.i0(np.array([1, 2], np.int64))).dtype == np.float64
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        info = np.finfo(dtype)
        a = (rng.standard_normal(2000) * 10.0 ** rng.integers(-40, 38, 2000)).astype(dtype)
        b = rng.standard_normal(2000).astype(dtype)
        special = [0.0, -0.0, 1.0, 2.0, -4.0, np.inf, -np.inf, info.max, info.smallest_subnormal, 2.0 ** -130, np.nan]
        a[:11], b[:11] = special, [1, -1, 0, 5, 0, 0, 0, np.inf, -1, 1, 0]
        np.testing.assert_array_equal(ops.nextafter(a, b), np.nextafter(a, b), err_msg=str(dtype))
    assert np.asarray(ops.nextafter(np.array([1, 2], np.int32), 0.0)).dtype == np.float32


def test_nan_quantiles_axes_methods_and_dtypes():
    x = np.random.default_rng(2).standard_normal((3, 4, 5)).astype(np.float32)
    x[x > 0.8] = np.nan
    x[1, :, 2] = np.nan  # an all-NaN row along axis 1
    for axis in (None, 0, -1, -2, (0, 2), (-1, 0)):
        for q in (0.0, 0.37, 1.0, [0.1, 0.5, 0.9]):
            for method in ("linear", "lower", "higher", "midpoint", "nearest"):
                for keepdims in (False, True):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        expected = np.nanquantile(x, q, axis=axis, method=method, keepdims=keepdims)
                    actual = np.asarray(ops.nanquantile(x, q, axis=axis, method=method, keepdims=keepdims))
                    assert actual.shape == expected.shape, (axis, q, method, keepdims)
                    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6, equal_nan=True,
                                               err_msg=f"axis={axis} q={q} {method} keepdims={keepdims}")
    ints = np.array([[3, 1, 2], [7, 5, 9]], np.int32)
    assert np.asarray(ops.nanmedian(ints, axis=-1)).dtype == np.float32
    np.testing.assert_allclose(ops.nanpercentile(ints, [25, 50], axis=1), np.percentile(ints, [25, 50], axis=1))
    np.testing.assert_allclose(ops.nanmedian(np.array([True, False, True])), 1.0)
    with pytest.raises(ValueError, match="nanquantile: method must be one of"):
        ops.nanquantile(x, 0.5, method="cubic")


def test_correlation_histogram_and_bincount_against_numpy():
    rng = np.random.default_rng(4)
    for n, m in ((3, 4), (5, 3), (4, 4), (1, 5), (6, 2), (7, 4)):
        a, v = rng.standard_normal(n), rng.standard_normal(m)
        for mode in ("valid", "same", "full"):
            np.testing.assert_allclose(ops.correlate(a, v, mode), np.correlate(a, v, mode), rtol=1e-12,
                                       err_msg=f"{n} {m} {mode}")
    same = ops.correlate(np.array([1, 2, 3], np.int32), np.array([0, 1, 0.5], np.float32), "same")
    assert np.asarray(same).dtype == np.float32
    np.testing.assert_allclose(same, [2.0, 3.5, 3.0])
    ints = np.array([[1, 2, 3], [1, 5, 2], [0, 0, 1]], np.int32)
    assert np.asarray(ops.corrcoef(ints)).dtype == np.float32
    np.testing.assert_allclose(ops.corrcoef(ints), np.corrcoef(ints), rtol=1e-6)
    np.testing.assert_allclose(ops.corrcoef(ints.astype(np.int64)), np.corrcoef(ints), rtol=1e-12)
    cases = [(rng.standard_normal(1000), 7, None), (rng.standard_normal(500).astype(np.float32), 5, (-1.0, 1.0)),
             (np.full(4, 2.0, np.float32), 3, None), (rng.uniform(0, 1, 3000).astype(np.float32), 13, None),
             (np.array([0.1, 0.5, 0.5, 2.0, 3.0], np.float32), 4, None)]
    for x, bins, value_range in cases:
        counts, edges = ops.histogram(x, bins, value_range)
        expected_counts, expected_edges = np.histogram(x, bins, value_range)
        assert np.asarray(counts).dtype == x.dtype and np.asarray(edges).dtype == x.dtype
        np.testing.assert_array_equal(counts, expected_counts)
        np.testing.assert_array_equal(edges, expected_edges.astype(x.dtype))
    np.testing.assert_array_equal(ops.bincount(np.array([1, 1, 3, 0])), [1, 2, 0, 1])
    np.testing.assert_array_equal(ops.bincount(np.array([1, 1]), minlength=4), [0, 2, 0, 0])
    weighted = ops.bincount(np.array([[1, 1, 3], [0, 0, 0]]), weights=np.array([[0.5, 1, 2], [1, 1, 1]], np.float32))
    assert np.asarray(weighted).dtype == np.float32
    np.testing.assert_array_equal(weighted, [[0, 1.5, 0, 2], [3, 0, 0, 0]])


def test_complex_helpers_run_eagerly():
    z = np.asarray(ops.polar(np.array([2.0, 1.0], np.float32), np.array([1.0, -0.5], np.float32)))
    assert z.dtype == np.complex64
    np.testing.assert_allclose(z, [2 * np.exp(1j), np.exp(-0.5j)], rtol=1e-6)
    np.testing.assert_array_equal(ops.view_as_complex(np.array([[1.0, 2.0], [3.0, 4.0]])), [1 + 2j, 3 + 4j])
    real = np.asarray(ops.view_as_real(np.array([1 + 2j, 3 - 4j])))
    np.testing.assert_array_equal(real, [[1, 2], [3, -4]])
    back = ops.fft(tuple(np.moveaxis(real, -1, 0)))
    np.testing.assert_allclose(back[0] + 1j * back[1], np.fft.fft([1 + 2j, 3 - 4j]))
    with pytest.raises(ValueError, match="view_as_complex: the last axis must have size 2"):
        ops.view_as_complex(np.ones((2, 3)))


def test_fft_dtypes_and_accuracy_against_numpy():
    rng = np.random.default_rng(9)
    errors = {}
    for n in (16, 256, 1024):
        z = rng.standard_normal((2, n)) + 1j * rng.standard_normal((2, n))
        real, imag = ops.fft((z.real, z.imag))
        errors[n] = np.max(np.abs(real + 1j * imag - np.fft.fft(z))) / np.max(np.abs(np.fft.fft(z)))
        real32, imag32 = ops.fft((z.real.astype(np.float32), z.imag.astype(np.float32)))
        assert np.asarray(real32).dtype == np.float32
        assert np.max(np.abs(real32 + 1j * imag32 - np.fft.fft(z))) / np.max(np.abs(np.fft.fft(z))) < 1e-5
    assert max(errors.values()) < 1e-13, errors
    spectrum = ops.rfft(np.arange(5, dtype=np.int32))  # ints become float32, as in Keras
    assert np.asarray(spectrum[0]).dtype == np.float32
    np.testing.assert_allclose(spectrum[0] + 1j * spectrum[1], np.fft.rfft(np.arange(5)), atol=1e-5)
    signal = rng.standard_normal((3, 50))
    framed = ops.stft(signal, 16, 5, 20, window="hann")
    np.testing.assert_allclose(ops.istft(framed, 16, 5, 20, length=50), signal, atol=1e-12)
    window = np.linspace(0.5, 1.5, 7)
    custom = ops.stft(signal, 7, 3, 9, window=window)
    np.testing.assert_allclose(custom[0] + 1j * custom[1], _stft_reference(signal, 7, 3, 9, window), atol=1e-12)


# -- traced: batch dimension, static sizes, errors -------------------------------------------------
def _traced(fn, shape, batch=3, dtype="float32", seed=0):
    """fn on a (None, ...) placeholder, evaluated by the reference interpreter at `batch`."""
    from kgraph.runtime.reference import evaluate

    graph = Graph("batch")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None,) + shape, dtype, "x").id)
        y = fn(x)
        graph.outputs = [y.node_id]
    value = np.random.default_rng(seed).standard_normal((batch,) + shape).astype(dtype)
    return y.shape, evaluate(graph, [value])[0][0], value


@pytest.mark.parametrize("name, fn, reference", [
    ("fft", lambda x: ops.fft((x, ops.zeros_like(x)))[1], lambda x: np.fft.fft(x).imag),
    ("ifft2", lambda x: ops.ifft2((x, x))[0], lambda x: np.fft.ifft2(x + 1j * x).real),
    ("rfft", lambda x: ops.rfft(x, 6)[0], lambda x: np.fft.rfft(x, 6).real),
    ("stft", lambda x: ops.stft(ops.reshape(x, (-1, 20)), 8, 4, 8)[0],
     lambda x: _stft_reference(x.reshape(-1, 20), 8, 4, 8).real),
    ("istft", lambda x: ops.istft((x, x), 6, 2, 6), lambda x: _istft_reference(x + 1j * x, 6, 2, 6)),
    ("nanmedian", lambda x: ops.nanmedian(_with_nan(x), axis=-1), lambda x: np.nanmedian(_np_with_nan(x), -1)),
    ("erfinv", lambda x: ops.erfinv(ops.tanh(x)), lambda x: sp.erfinv(np.tanh(x))),
])
def test_a_batch_dimension_of_none_is_kept(name, fn, reference):
    shape, value, x = _traced(fn, (4, 5))
    assert shape[0] is None, f"{name}: traced shape {shape}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference(x.astype(np.float64))
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_value_dependent_shapes_and_complex_results_are_refused_when_traced():
    graph = Graph("refused")
    with tracing(graph):
        ints = SymbolicTensor(graph, graph.add_placeholder((6,), "int32", "i").id)
        floats = SymbolicTensor(graph, graph.add_placeholder((None, 8), "float32", "f").id)
        with pytest.raises(ValueError, match="bincount: the number of bins depends on the values of x"):
            ops.bincount(ints)
        assert ops.bincount(ints, minlength=4).shape == (4,)
        counts, edges = ops.histogram(ops.getitem(floats, 0), bins=5)
        assert counts.shape == (5,) and edges.shape == (6,)
        for name, call in (("polar", lambda: ops.polar(floats, floats)),
                           ("view_as_complex", lambda: ops.view_as_complex(ops.reshape(floats, (-1, 4, 2)))),
                           ("view_as_real", lambda: ops.view_as_real(floats))):
            with pytest.raises(ValueError, match=f"{name}: complex tensors exist only eagerly"):
                call()
        with pytest.raises(ValueError, match="fft: the transformed axis must have a static size"):
            ops.fft((ops.transpose(floats), ops.transpose(floats)))


def test_bad_arguments_are_refused_with_a_message():
    ones = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="fft: x should be a tuple of two tensors"):
        ops.fft(ones)
    with pytest.raises(ValueError, match="fft2: the real and imaginary parts must have the same shape"):
        ops.fft2((ones, ones[:1]))
    with pytest.raises(ValueError, match="irfft: the real and imaginary parts must be float tensors"):
        ops.irfft((np.ones(3, np.int32), np.ones(3, np.int32)))
    with pytest.raises(ValueError, match="ifft2: the input must have rank >= 2"):
        ops.ifft2((ones[0], ones[0]))
    with pytest.raises(TypeError, match="stft: x must be float32 or float64"):
        ops.stft(np.ones(8, np.int32), 4, 2, 4)
    with pytest.raises(ValueError, match=r"stft: fft_length \(4\) must be at least sequence_length \(6\)"):
        ops.stft(ones, 6, 2, 4)
    with pytest.raises(ValueError, match="stft: a window given by name must be 'hann' or 'hamming'"):
        ops.stft(ones, 4, 2, 4, window="blackman")
    with pytest.raises(ValueError, match=r"istft: the window must have shape \(4,\)"):
        ops.istft((ones[None], ones[None]), 4, 2, 14, window=np.ones(3))
    with pytest.raises(ValueError, match="correlate: x1 and x2 must be 1-D"):
        ops.correlate(ones, ones[0])
    with pytest.raises(TypeError, match="histogram: bins must be a non-negative int"):
        ops.histogram(ones[0], bins=2.5)
    with pytest.raises(ValueError, match="histogram: x must be 1-D"):
        ops.histogram(ones)
    with pytest.raises(ValueError, match="bincount: sparse=True is not supported"):
        ops.bincount(np.array([1, 2]), sparse=True)


# -- the optional Keras 3 oracle ------------------------------------------------------------------
KERAS_SCRIPT = r"""
import inspect, json, sys
import numpy as np
from keras import ops
data = json.load(sys.stdin)
x = np.array(data["x"], "float32")
ints = np.array(data["ints"], "int32")
out = {"signatures": {n: [[p.name, repr(p.default)] for p in inspect.signature(getattr(ops, n)).parameters.values()]
                      for n in data["names"]}}
for key, z in (("fft", ops.fft((x, x[::-1]))), ("fft2", ops.fft2((x, x))), ("ifft2", ops.ifft2((x, -x))),
               ("rfft", ops.rfft(x, 6)), ("stft", ops.stft(x, 4, 2, 6, window="hamming")),
               ("stft_none", ops.stft(x, 5, 3, 5, window=None, center=False))):
    out[key] = [np.asarray(z[0]).tolist(), np.asarray(z[1]).tolist()]
out["irfft"] = np.asarray(ops.irfft((x[:, :5], x[:, 3:8]), 7)).tolist()
out["istft"] = np.asarray(ops.istft((x[:, :5], x[:, 3:8]), 8, 4, 8)).tolist()
out["erfinv"] = np.asarray(ops.erfinv(np.tanh(x))).tolist()
out["i0"] = np.asarray(ops.i0(3 * x)).tolist()
out["nanquantile"] = np.asarray(ops.nanquantile(np.where(x > 1, np.nan, x), [0.2, 0.7], axis=-1)).tolist()
out["correlate"] = np.asarray(ops.correlate(x[0], x[1, :4], mode="same")).tolist()
out["corrcoef"] = np.asarray(ops.corrcoef(x)).tolist()
out["histogram"] = [np.asarray(v).tolist() for v in ops.histogram(x[0], bins=4)]
out["bincount"] = np.asarray(ops.bincount(np.abs(ints[0]) % 5, minlength=3)).tolist()
out["gcd"] = np.asarray(ops.gcd(ints, ints[::-1])).tolist()
out["bitwise_xor"] = np.asarray(ops.bitwise_xor(ints, ints[::-1])).tolist()
json.dump(out, sys.stdout)
"""
KERAS_NAMES = ["fft", "fft2", "ifft2", "rfft", "irfft", "stft", "istft", "erfinv", "i0", "nextafter", "gcd", "lcm",
               "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "bitwise_invert", "nanquantile",
               "nanpercentile", "nanmedian", "corrcoef", "correlate", "histogram", "bincount", "polar",
               "view_as_real", "view_as_complex"]


@pytest.mark.skipif(keras_python() is None, reason=SKIP_REASON)
def test_signatures_and_values_match_keras():
    import inspect
    import json
    import subprocess

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 12)).astype(np.float32)
    ints = rng.integers(-1000, 1000, (3, 6)).astype(np.int32)
    data = {"x": x.tolist(), "ints": ints.tolist(), "names": KERAS_NAMES}
    run = subprocess.run([keras_python(), "-c", KERAS_SCRIPT], input=json.dumps(data), capture_output=True,
                         text=True, timeout=300, env={"KERAS_BACKEND": "jax", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    expected = json.loads(run.stdout)
    for name in KERAS_NAMES:
        ours = [[p.name, repr(p.default)] for p in inspect.signature(getattr(ops, name)).parameters.values()]
        assert ours == expected["signatures"][name], f"{name}: signature {ours}"
    ours = {"fft": ops.fft((x, x[::-1])), "fft2": ops.fft2((x, x)), "ifft2": ops.ifft2((x, -x)), "rfft": ops.rfft(x, 6),
            "stft": ops.stft(x, 4, 2, 6, window="hamming"),
            "stft_none": ops.stft(x, 5, 3, 5, window=None, center=False),
            "irfft": ops.irfft((x[:, :5], x[:, 3:8]), 7), "istft": ops.istft((x[:, :5], x[:, 3:8]), 8, 4, 8),
            "erfinv": ops.erfinv(np.tanh(x)), "i0": ops.i0(3 * x),
            "nanquantile": ops.nanquantile(np.where(x > 1, np.nan, x), [0.2, 0.7], axis=-1),
            "correlate": ops.correlate(x[0], x[1, :4], mode="same"), "corrcoef": ops.corrcoef(x),
            "histogram": ops.histogram(x[0], bins=4), "bincount": ops.bincount(np.abs(ints[0]) % 5, minlength=3),
            "gcd": ops.gcd(ints, ints[::-1]), "bitwise_xor": ops.bitwise_xor(ints, ints[::-1])}
    for name, value in ours.items():
        parts, keras_parts = (value, expected[name]) if isinstance(value, tuple) else ((value,), (expected[name],))
        for part, keras_part in zip(parts, keras_parts):
            keras_part = np.array(keras_part, np.float64)
            scale = max(1.0, float(np.nanmax(np.abs(keras_part))))
            np.testing.assert_allclose(np.asarray(part, np.float64), keras_part, rtol=1e-5, atol=2e-6 * scale,
                                       equal_nan=True, err_msg=name)


# -- ONNX export: the compositions export through their primitives ------------------------------------
def test_onnx_export_runs_in_onnxruntime():
    import onnxruntime as ort

    from kgraph.compiler.passes.pipeline import optimize
    from kgraph.exporters import export_onnx

    graph = Graph("fft_math_onnx")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 20), "float32", "x").id)
        a = SymbolicTensor(graph, graph.add_placeholder((None, 6), "int32", "a").id)
        real, imag = ops.stft(x, 8, 4, 8)
        outputs = [real, ops.irfft(ops.rfft(x, 12), 12), ops.erfinv(ops.tanh(x)), ops.i0(x),
                   ops.bitwise_xor(a, ops.getitem(a, (slice(None), slice(None, None, -1)))),
                   ops.gcd(a, ops.getitem(a, (slice(None), slice(None, None, -1))))]
        graph.outputs = [y.node_id for y in outputs]
    graph.output_names = [f"y{i}" for i in range(len(outputs))]
    model = export_onnx(optimize(graph.copy()), opset=17)
    rng = np.random.default_rng(8)
    xv = rng.standard_normal((3, 20)).astype(np.float32)
    av = rng.integers(-10 ** 6, 10 ** 6, (3, 6)).astype(np.int32)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": xv, "a": av})
    expected = [_stft_reference(xv.astype(np.float64), 8, 4, 8).real, np.fft.irfft(np.fft.rfft(xv, 12), 12)[:, :12],
                sp.erfinv(np.tanh(xv.astype(np.float64))), sp.i0(xv.astype(np.float64)), av ^ av[:, ::-1],
                np.gcd(av, av[:, ::-1])]
    for i, (value, reference) in enumerate(zip(got, expected)):
        if reference.dtype.kind == "i":
            np.testing.assert_array_equal(value, reference, err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(value, reference, rtol=2e-5, atol=2e-5, err_msg=f"output {i}")
