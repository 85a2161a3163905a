"""Optimizers against float64 numpy transcriptions of Keras 3's update rules, eagerly and compiled."""

import warnings

import numpy as np
import pytest
from keras_reference import SKIP_REASON, keras_python

from kgraph import ops, optimizers
from kgraph.ir import Graph, SymbolicTensor, Variable, tracing
from kgraph.optimizers import schedules

STEPS = 5
SHAPES = [(3, 4), (4,)]


def _problem(seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    initial = [(rng.uniform(0.5, 1.5, s) * rng.choice([-1, 1], s)).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(STEPS)]
    return initial, grads


def _run(optimizer, initial, grads):
    variables = [Variable(w.copy(), name=f"w{i}") for i, w in enumerate(initial)]
    history = []
    for step_grads in grads:
        optimizer.apply(step_grads, variables)
        history.append([v.numpy() for v in variables])
    return variables, history


# -- numpy transcriptions of Keras 3 (keras/src/optimizers/*.py), in float64 ---------------------------
def ref_sgd(initial, grads, lr, momentum=0.0, nesterov=False):
    ws = [w.astype(np.float64) for w in initial]
    ms = [np.zeros_like(w) for w in ws]
    out = []
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            g = g.astype(np.float64)
            if momentum == 0:
                ws[i] = ws[i] - g * lr
                continue
            ms[i] = ms[i] * momentum - g * lr
            ws[i] = ws[i] + (ms[i] * momentum - g * lr if nesterov else ms[i])
        out.append([w.copy() for w in ws])
    return out


def ref_adam(initial, grads, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False):
    ws = [w.astype(np.float64) for w in initial]
    ms = [np.zeros_like(w) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    vhats = [np.zeros_like(w) for w in ws]
    out = []
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = g.astype(np.float64)
            alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            ms[i] = ms[i] + (g - ms[i]) * (1 - beta_1)
            vs[i] = vs[i] + (g * g - vs[i]) * (1 - beta_2)
            v = vs[i]
            if amsgrad:
                vhats[i] = np.maximum(vhats[i], vs[i])
                v = vhats[i]
            ws[i] = ws[i] - ms[i] * alpha / (np.sqrt(v) + epsilon)
        out.append([w.copy() for w in ws])
    return out


def ref_rmsprop(initial, grads, lr, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
    ws = [w.astype(np.float64) for w in initial]
    vel = [np.zeros_like(w) for w in ws]
    mom = [np.zeros_like(w) for w in ws]
    avg = [np.zeros_like(w) for w in ws]
    out = []
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            g = g.astype(np.float64)
            vel[i] = rho * vel[i] + (1 - rho) * g * g
            if centered:
                avg[i] = rho * avg[i] + (1 - rho) * g
                denominator = vel[i] - avg[i] ** 2 + epsilon
            else:
                denominator = vel[i] + epsilon
            increment = lr * g / np.sqrt(denominator)
            if momentum > 0:
                mom[i] = momentum * mom[i] + increment
                ws[i] = ws[i] - mom[i]
            else:
                ws[i] = ws[i] - increment
        out.append([w.copy() for w in ws])
    return out


def _lr32(lr):
    """The learning rate as the optimizer stores it (a float32 Variable)."""
    return float(np.float32(lr))


def _compare(history, reference, rtol, atol=0.0):
    assert len(history) == len(reference) == STEPS
    for got_step, want_step in zip(history, reference):
        for got, want in zip(got_step, want_step):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


CASES = [
    ("sgd", lambda: optimizers.SGD(learning_rate=0.1), lambda i, g: ref_sgd(i, g, _lr32(0.1))),
    (
        "sgd_momentum",
        lambda: optimizers.SGD(learning_rate=0.05, momentum=0.9),
        lambda i, g: ref_sgd(i, g, _lr32(0.05), momentum=0.9),
    ),
    (
        "sgd_nesterov",
        lambda: optimizers.SGD(learning_rate=0.05, momentum=0.8, nesterov=True),
        lambda i, g: ref_sgd(i, g, _lr32(0.05), momentum=0.8, nesterov=True),
    ),
    ("adam", lambda: optimizers.Adam(learning_rate=0.01), lambda i, g: ref_adam(i, g, _lr32(0.01))),
    (
        "adam_amsgrad",
        lambda: optimizers.Adam(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-4, amsgrad=True),
        lambda i, g: ref_adam(i, g, _lr32(0.02), 0.8, 0.99, 1e-4, amsgrad=True),
    ),
    ("rmsprop", lambda: optimizers.RMSprop(learning_rate=0.01), lambda i, g: ref_rmsprop(i, g, _lr32(0.01))),
    (
        "rmsprop_momentum",
        lambda: optimizers.RMSprop(learning_rate=0.01, rho=0.8, momentum=0.5),
        lambda i, g: ref_rmsprop(i, g, _lr32(0.01), rho=0.8, momentum=0.5),
    ),
    (
        "rmsprop_centered",
        lambda: optimizers.RMSprop(learning_rate=0.01, momentum=0.3, centered=True),
        lambda i, g: ref_rmsprop(i, g, _lr32(0.01), momentum=0.3, centered=True),
    ),
]


@pytest.mark.parametrize("name,make,reference", CASES, ids=[c[0] for c in CASES])
def test_update_rule_float32(name, make, reference):
    initial, grads = _problem()
    _, history = _run(make(), initial, grads)
    _compare(history, reference(initial, grads), rtol=1e-6)


@pytest.mark.parametrize("name,make,reference", CASES, ids=[c[0] for c in CASES])
def test_update_rule_float64(name, make, reference):
    initial, grads = _problem(seed=1, dtype="float64")
    _, history = _run(make(), initial, grads)
    _compare(history, reference(initial, grads), rtol=1e-12)


def test_adagrad_and_adamw():
    initial, grads = _problem(seed=2, dtype="float64")
    _, history = _run(optimizers.Adagrad(learning_rate=0.1), initial, grads)
    ws = [w.copy() for w in initial]
    acc = [np.full_like(w, 0.1) for w in ws]
    for step, step_grads in enumerate(grads):
        for i, g in enumerate(step_grads):
            acc[i] += g * g
            ws[i] = ws[i] - _lr32(0.1) * g / np.sqrt(acc[i] + 1e-7)
        for got, want in zip(history[step], ws):
            np.testing.assert_allclose(got, want, rtol=1e-6)

    _, history = _run(optimizers.AdamW(learning_rate=0.01, weight_decay=0.1), initial, grads)
    decayed = [w.copy() for w in initial]
    reference = []
    ms = [np.zeros_like(w) for w in decayed]
    vs = [np.zeros_like(w) for w in decayed]
    lr = _lr32(0.01)
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            decayed[i] = decayed[i] - decayed[i] * 0.1 * lr  # weight decay first, then Adam
            ms[i] += (g - ms[i]) * 0.1
            vs[i] += (g * g - vs[i]) * 0.001
            alpha = lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            decayed[i] = decayed[i] - ms[i] * alpha / (np.sqrt(vs[i]) + 1e-7)
        reference.append([w.copy() for w in decayed])
    _compare(history, reference, rtol=1e-6)


def test_state_layout_matches_keras():
    initial, grads = _problem()
    opt = optimizers.Adam(amsgrad=True)
    variables, _ = _run(opt, initial, grads[:2])
    names = [v.path for v in opt.variables]
    assert names == [
        "adam/iteration",
        "adam/learning_rate",
        "adam/w0_momentum",  # interleaved per variable, as Keras 3 creates (and saves) them
        "adam/w0_velocity",
        "adam/w1_momentum",
        "adam/w1_velocity",
        "adam/w0_velocity_hat",
        "adam/w1_velocity_hat",
    ]
    assert opt.iterations.dtype == "int64" and opt.iterations.shape == ()
    assert int(opt.iterations.numpy()) == 2
    assert opt.learning_rate.dtype == "float32" and opt.learning_rate.shape == ()
    assert all(not v.trainable for v in opt.variables)
    assert len(optimizers.SGD().variables) == 2
    sgd = optimizers.SGD(momentum=0.5)
    sgd.build(variables)
    assert [v.path for v in sgd.variables][2:] == ["SGD/w0_momentum", "SGD/w1_momentum"]


def test_learning_rate_is_a_settable_variable():
    opt = optimizers.SGD(learning_rate=0.1)
    lr_variable = opt.learning_rate
    assert isinstance(lr_variable, Variable)
    w = Variable(np.array([1.0, 2.0], "float32"))
    opt.apply([np.array([1.0, 1.0], "float32")], [w])
    opt.learning_rate = 0.5
    assert opt.learning_rate is lr_variable  # the same Variable: a compiled step sees the new value
    np.testing.assert_allclose(lr_variable.numpy(), 0.5)
    opt.apply([np.array([1.0, 1.0], "float32")], [w])
    np.testing.assert_allclose(w.numpy(), [1.0 - 0.1 - 0.5, 2.0 - 0.1 - 0.5], rtol=1e-6)
    assert opt.get_config()["learning_rate"] == pytest.approx(0.5)


def test_learning_rate_schedule():
    schedule = schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    opt = optimizers.SGD(learning_rate=schedule)
    w = Variable(np.zeros(3, "float32"))
    expected = np.zeros(3)
    for step in range(4):
        opt.apply([np.ones(3, "float32")], [w])
        expected -= 0.1 * 0.5 ** (step / 2)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.3
    config = opt.get_config()
    assert config["learning_rate"]["class_name"] == "ExponentialDecay"
    clone = optimizers.SGD.from_config(config)
    assert isinstance(clone._learning_rate, schedules.ExponentialDecay)
    piecewise = schedules.PiecewiseConstantDecay([2, 4], [1.0, 0.5, 0.1])
    np.testing.assert_allclose([float(piecewise(s)) for s in (0, 2, 3, 4, 5)], [1.0, 1.0, 0.5, 0.5, 0.1])
    poly = schedules.PolynomialDecay(1.0, 10, end_learning_rate=0.0, power=2.0)
    np.testing.assert_allclose(float(poly(5)), 0.25, rtol=1e-6)
    np.testing.assert_allclose(float(poly(20)), 0.0, atol=1e-7)
    inverse = schedules.InverseTimeDecay(1.0, 2, 1.0, staircase=True)
    np.testing.assert_allclose(float(inverse(3)), 0.5)


def _clip_reference(grads, clipnorm=None, clipvalue=None, global_clipnorm=None):
    if clipnorm:
        return [g * clipnorm / max(np.sqrt((g * g).sum()), clipnorm) for g in grads]
    if clipvalue:
        return [np.clip(g, -clipvalue, clipvalue) for g in grads]
    norm = np.sqrt(sum((g * g).sum() for g in grads))
    return [g * global_clipnorm / max(norm, global_clipnorm) for g in grads]


@pytest.mark.parametrize("kwargs", [{"clipnorm": 0.5}, {"clipvalue": 0.3}, {"global_clipnorm": 1.0}])
def test_gradient_clipping(kwargs):
    initial, grads = _problem(seed=3, dtype="float64")
    _, history = _run(optimizers.SGD(learning_rate=0.1, **kwargs), initial, grads)
    clipped = [_clip_reference(step, **kwargs) for step in grads]
    _compare(history, ref_sgd(initial, clipped, _lr32(0.1)), rtol=1e-12)
    with pytest.raises(ValueError, match="Only one of"):
        optimizers.SGD(clipnorm=1.0, clipvalue=1.0)


def test_gradient_accumulation():
    initial, grads = _problem(seed=4, dtype="float64")
    opt = optimizers.SGD(learning_rate=0.1, momentum=0.5, gradient_accumulation_steps=2)
    _, history = _run(opt, initial, grads[:4])
    averaged = [
        [(a + b) / 2 for a, b in zip(grads[0], grads[1])],
        [(a + b) / 2 for a, b in zip(grads[2], grads[3])],
    ]
    reference = ref_sgd(initial, averaged, _lr32(0.1), momentum=0.5)
    for got, want in zip(history[0], initial):  # step 1 only accumulates
        np.testing.assert_array_equal(got, want)
    for got, want in zip(history[1], reference[0]):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    for got, want in zip(history[3], reference[1]):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert int(opt.iterations) == 2 and int(opt._iterations.numpy()) == 4


def test_ema():
    w = Variable(np.array([1.0, 2.0]))
    opt = optimizers.SGD(learning_rate=0.1, use_ema=True, ema_momentum=0.9)
    values, average = [], None
    for _ in range(3):
        opt.apply([np.array([1.0, -1.0])], [w])
        value = w.numpy()
        average = value if average is None else 0.9 * average + 0.1 * value
        values.append(value)
    np.testing.assert_allclose(opt._model_variables_moving_average[0].numpy(), average, rtol=1e-12)
    opt.finalize_variable_values([w])
    np.testing.assert_allclose(w.numpy(), average, rtol=1e-12)


def test_none_gradient_is_skipped_with_a_warning():
    a = Variable(np.ones(2, "float32"), name="a")
    b = Variable(np.ones(2, "float32"), name="b")
    opt = optimizers.SGD(learning_rate=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.apply([np.ones(2, "float32"), None], [a, b])
    assert any("['b']" in str(w.message) for w in caught)
    np.testing.assert_array_equal(a.numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(b.numpy(), [1.0, 1.0])
    with pytest.raises(ValueError, match="No gradients"):
        opt.apply([None, None], [a, b])
    with pytest.raises(ValueError, match="Unknown variable"):
        opt.apply([np.ones(2, "float32")], [Variable(np.ones(2, "float32"))])
    assert opt.apply_gradients([(np.ones(2, "float32"), a)]) is opt.iterations


def test_get_and_config():
    assert isinstance(optimizers.get("sgd"), optimizers.SGD)
    assert isinstance(optimizers.get("Adam"), optimizers.Adam)
    assert isinstance(optimizers.get("rmsprop"), optimizers.RMSprop)
    adam = optimizers.Adam(0.02, beta_1=0.8)
    assert optimizers.get(adam) is adam
    with pytest.raises(ValueError, match="adamx"):
        optimizers.get("adamx")
    config = optimizers.serialize(adam)
    assert config["module"] == "keras.optimizers" and config["class_name"] == "Adam"
    assert config["config"]["beta_1"] == 0.8 and config["config"]["name"] == "adam"
    clone = optimizers.deserialize(config)
    assert isinstance(clone, optimizers.Adam) and clone.get_config() == adam.get_config()
    assert isinstance(optimizers.get({"class_name": "rmsprop", "config": {"rho": 0.5}}), optimizers.RMSprop)
    for cls in (optimizers.SGD, optimizers.Adam, optimizers.RMSprop, optimizers.Adagrad, optimizers.AdamW):
        instance = cls()
        assert cls.from_config(instance.get_config()).get_config() == instance.get_config()
    assert optimizers.SGD().get_config()["name"] == "SGD"
    assert optimizers.RMSprop().get_config()["name"] == "rmsprop"
    with pytest.raises(ValueError, match="not recognized"):
        optimizers.Adam(bogus=1)
    with pytest.raises(ValueError, match="momentum"):
        optimizers.SGD(momentum=1.5)


def test_save_and_load_own_variables():
    initial, grads = _problem()
    opt = optimizers.Adam()
    _run(opt, initial, grads[:2])
    store = {}
    opt.save_own_variables(store)
    other = optimizers.Adam()
    other.build([Variable(np.zeros(s, "float32"), name=f"w{i}") for i, s in enumerate(SHAPES)])
    other.load_own_variables(store)
    for a, b in zip(opt.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# -- a traced training step: loss, autodiff and the optimizer in one graph ---------------------------------
def _linear_problem():
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((4, 3)).astype("float32")
    b0 = rng.standard_normal(3).astype("float32") * 0.1
    xs = [rng.standard_normal((6, 4)).astype("float32") for _ in range(3)]
    ys = [rng.integers(0, 3, 6).astype("int32") for _ in range(3)]
    return w0, b0, xs, ys


def _trace_step(w, b, optimizer, loss_fn, with_update=True):
    from kgraph.compiler.autodiff import gradients

    graph = Graph("train_step" if with_update else "grads")
    with tracing(graph):
        x = SymbolicTensor(graph, graph.add_placeholder((None, 4), "float32", "x").id)
        y = SymbolicTensor(graph, graph.add_placeholder((None,), "int32", "y").id)
        loss = loss_fn(y, ops.add(ops.matmul(x, w), b))
        grad_ids = gradients(graph, loss.node_id, [graph.variable_node(w).id, graph.variable_node(b).id])
        grads = [SymbolicTensor(graph, i) for i in grad_ids]
        if with_update:
            optimizer.apply(grads, [w, b])
    graph.outputs = [loss.node_id] + list(grad_ids)
    return graph


@pytest.mark.parametrize(
    "make",
    [
        lambda: optimizers.Adam(0.05),
        lambda: optimizers.SGD(0.1, momentum=0.9),
        lambda: optimizers.RMSprop(0.01, centered=True),
    ],
    ids=["adam", "sgd", "rmsprop"],
)
def test_traced_step_matches_eager(make):
    """The optimizer traced into a graph (run by the reference interpreter) equals eager updates."""
    from kgraph import losses
    from kgraph.runtime.reference import evaluate

    w0, b0, xs, ys = _linear_problem()
    loss_fn = losses.SparseCategoricalCrossentropy(from_logits=True)
    w, b = Variable(w0.copy(), name="w"), Variable(b0.copy(), name="b")
    traced_opt = make()
    step = _trace_step(w, b, traced_opt, loss_fn)
    we, be = Variable(w0.copy(), name="w"), Variable(b0.copy(), name="b")
    eager_opt = make()
    grads_graph = _trace_step(we, be, None, loss_fn, with_update=False)
    for x, y in zip(xs, ys):
        (loss, *_), state = evaluate(step, [x, y])
        for variable, value in state.items():
            variable.assign(value)
        (eager_loss, *eager_grads), _ = evaluate(grads_graph, [x, y])
        np.testing.assert_allclose(loss, loss_fn(y, x @ we.numpy() + be.numpy()), rtol=1e-5)
        np.testing.assert_allclose(eager_loss, loss, rtol=1e-6)
        eager_opt.apply(eager_grads, [we, be])
        np.testing.assert_allclose(w.numpy(), we.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(b.numpy(), be.numpy(), rtol=1e-6, atol=1e-7)
    for a, e in zip(traced_opt.variables, eager_opt.variables):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-6, atol=1e-7)


def test_compiled_step_matches_eager():
    """Loss + gradients + Adam compiled by the numba backend: the same updates as eager Adam."""
    from kgraph import losses
    from kgraph.compiler.passes.pipeline import compile_graph
    from kgraph.runtime.reference import evaluate

    w0, b0, xs, ys = _linear_problem()
    loss_fn = losses.SparseCategoricalCrossentropy(from_logits=True)
    w, b = Variable(w0.copy(), name="w"), Variable(b0.copy(), name="b")
    compiled_opt = optimizers.Adam(0.05)
    step = compile_graph(_trace_step(w, b, compiled_opt, loss_fn))
    we, be = Variable(w0.copy(), name="w"), Variable(b0.copy(), name="b")
    eager_opt = optimizers.Adam(0.05)
    grads_graph = _trace_step(we, be, None, loss_fn, with_update=False)
    for i, (x, y) in enumerate(zip(xs, ys)):
        if i == 1:
            compiled_opt.learning_rate = 0.01  # changed between steps, no recompilation
            eager_opt.learning_rate = 0.01
        loss = float(step(x, y)[0])
        (eager_loss, *eager_grads), _ = evaluate(grads_graph, [x, y])
        np.testing.assert_allclose(loss, eager_loss, rtol=1e-5)
        eager_opt.apply(eager_grads, [we, be])
        np.testing.assert_allclose(w.numpy(), we.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.numpy(), be.numpy(), rtol=1e-5, atol=1e-6)
    assert int(compiled_opt.iterations.numpy()) == 3
    for a, e in zip(compiled_opt.variables, eager_opt.variables):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)


# -- Adadelta, Adamax, Nadam, Ftrl, Lion, Lamb, Adafactor ------------------------------------------------
# Each reference below is a float64 numpy transcription of the Keras 3 update rule, written as a
# per-variable `update(w, g, t, state)` (t counts from 1; `state` holds that variable's slots).
def _reference(initial, grads, update, weight_decay=None, lr=None):
    ws = [w.astype(np.float64) for w in initial]
    states = [{} for _ in ws]
    out = []
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            if weight_decay is not None:  # decoupled decay first, as the base optimizer does
                ws[i] = ws[i] - ws[i] * weight_decay * lr
            ws[i] = update(ws[i], g.astype(np.float64), t, states[i])
        out.append([w.copy() for w in ws])
    return out


def ref_adadelta(lr, rho=0.95, epsilon=1e-7):
    def update(w, g, t, s):
        s["g2"] = rho * s.get("g2", 0.0) + (1 - rho) * g**2
        delta = -np.sqrt(s.get("d2", 0.0) + epsilon) / np.sqrt(s["g2"] + epsilon) * g
        s["d2"] = rho * s.get("d2", 0.0) + (1 - rho) * delta**2
        return w + lr * delta

    return update


def ref_adamax(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    def update(w, g, t, s):
        s["m"] = beta_1 * s.get("m", 0.0) + (1 - beta_1) * g
        s["u"] = np.maximum(beta_2 * s.get("u", 0.0), np.abs(g))
        return w - lr / (1 - beta_1**t) * s["m"] / (s["u"] + epsilon)

    return update


def ref_nadam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    def mu(k):  # the momentum schedule at step k
        return beta_1 * (1 - 0.5 * 0.96**k)

    def update(w, g, t, s):
        product = np.prod([mu(k) for k in range(1, t + 1)])  # prod of mu(1..t)
        s["m"] = beta_1 * s.get("m", 0.0) + (1 - beta_1) * g
        s["v"] = beta_2 * s.get("v", 0.0) + (1 - beta_2) * g**2
        m_hat = mu(t + 1) * s["m"] / (1 - product * mu(t + 1)) + (1 - mu(t)) * g / (1 - product)
        v_hat = s["v"] / (1 - beta_2**t)
        return w - lr * m_hat / (np.sqrt(v_hat) + epsilon)

    return update


def ref_ftrl(
    lr,
    learning_rate_power=-0.5,
    initial_accumulator_value=0.1,
    l1_regularization_strength=0.0,
    l2_regularization_strength=0.0,
    l2_shrinkage_regularization_strength=0.0,
    beta=0.0,
):
    power, initial = learning_rate_power, initial_accumulator_value
    l1, l2, shrinkage = l1_regularization_strength, l2_regularization_strength, l2_shrinkage_regularization_strength

    def update(w, g, t, s):
        n = s.get("n", np.full_like(w, initial))
        z = s.get("z", np.zeros_like(w))
        n_new = n + g**2
        z = z + g + 2 * shrinkage * w - (n_new ** (-power) - n ** (-power)) / lr * w
        quadratic = n_new ** (-power) / lr + 2 * (l2 + beta / (2 * lr))
        s["n"], s["z"] = n_new, z
        return (np.clip(z, -l1, l1) - z) / quadratic

    return update


def ref_lion(lr, beta_1=0.9, beta_2=0.99):
    def update(w, g, t, s):
        m = s.get("m", 0.0)
        w = w - lr * np.sign(beta_1 * m + (1 - beta_1) * g)
        s["m"] = beta_2 * m + (1 - beta_2) * g
        return w

    return update


def ref_lamb(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    def update(w, g, t, s):
        s["m"] = beta_1 * s.get("m", 0.0) + (1 - beta_1) * g
        s["v"] = beta_2 * s.get("v", 0.0) + (1 - beta_2) * g**2
        r = (s["m"] / (1 - beta_1**t)) / (np.sqrt(s["v"] / (1 - beta_2**t)) + epsilon)
        w_norm, r_norm = np.linalg.norm(w), np.linalg.norm(r)
        ratio = w_norm / r_norm if w_norm > 0 and r_norm > 0 else 1.0
        return w - ratio * lr * r

    return update


def ref_adafactor(lr, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3, clip_threshold=1.0, relative_step=True):
    # Keras 3 caps the step at 1/sqrt(t) whatever `relative_step` says.
    def rms(x):
        return np.sqrt(np.mean(x**2))

    def update(w, g, t, s):
        step = min(lr, 1 / np.sqrt(t))
        alpha = max(epsilon_2, rms(w)) * step
        beta = 1 - t**beta_2_decay
        g2 = g**2 + epsilon_1
        if w.ndim >= 2:  # row and column statistics over the last two axes
            s["r"] = beta * s.get("r", 0.0) + (1 - beta) * g2.mean(axis=-1)
            s["c"] = beta * s.get("c", 0.0) + (1 - beta) * g2.mean(axis=-2)
            row = s["r"] / s["r"].mean(axis=-1, keepdims=True)
            v = row[..., :, None] * s["c"][..., None, :]
        else:
            v = s["v"] = beta * s.get("v", 0.0) + (1 - beta) * g2
        u = g / np.sqrt(v)
        return w - alpha * u / max(1.0, rms(u) / clip_threshold)

    return update


def _case(name, cls, reference, lr, weight_decay=None, **kwargs):
    """(id, optimizer factory, reference update, learning rate, weight decay); `kwargs` go to
    both the optimizer and its reference. The learning rate goes through float32, as the
    optimizer stores it."""
    make = lambda: cls(lr, weight_decay=weight_decay, **kwargs)  # noqa: E731
    return (name, make, reference(_lr32(lr), **kwargs), _lr32(lr), weight_decay)


NEW_CASES = [
    _case("adadelta", optimizers.Adadelta, ref_adadelta, 1.0),
    _case("adadelta_rho", optimizers.Adadelta, ref_adadelta, 0.5, rho=0.8, epsilon=1e-4),
    _case("adamax", optimizers.Adamax, ref_adamax, 0.01),
    _case("adamax_betas", optimizers.Adamax, ref_adamax, 0.02, beta_1=0.7, beta_2=0.9, epsilon=1e-3),
    _case("nadam", optimizers.Nadam, ref_nadam, 0.01),
    _case("nadam_betas", optimizers.Nadam, ref_nadam, 0.02, beta_1=0.8, beta_2=0.95, epsilon=1e-4),
    _case("ftrl", optimizers.Ftrl, ref_ftrl, 0.1),
    _case(
        "ftrl_regularized",
        optimizers.Ftrl,
        ref_ftrl,
        0.2,
        learning_rate_power=-0.7,
        initial_accumulator_value=0.3,
        l1_regularization_strength=0.05,
        l2_regularization_strength=0.1,
        l2_shrinkage_regularization_strength=0.2,
        beta=0.5,
    ),
    _case("lion", optimizers.Lion, ref_lion, 0.01),
    _case("lion_weight_decay", optimizers.Lion, ref_lion, 0.02, 0.1, beta_1=0.5, beta_2=0.9),
    _case("lamb", optimizers.Lamb, ref_lamb, 0.01),
    _case(
        "lamb_weight_decay", optimizers.Lamb, ref_lamb, 0.05, 0.05, beta_1=0.8, beta_2=0.9, epsilon=1e-3
    ),
    _case("adafactor", optimizers.Adafactor, ref_adafactor, 0.1),
    _case(
        "adafactor_args",
        optimizers.Adafactor,
        ref_adafactor,
        0.3,
        beta_2_decay=-0.5,
        epsilon_1=1e-6,
        epsilon_2=0.5,
        clip_threshold=0.5,
        relative_step=False,
    ),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,make,update,lr,weight_decay", NEW_CASES, ids=[c[0] for c in NEW_CASES])
def test_new_optimizers_update_rule(name, make, update, lr, weight_decay, dtype):
    initial, grads = _problem(seed=6, dtype=dtype)
    _, history = _run(make(), initial, grads)
    reference = _reference(initial, grads, update, weight_decay=weight_decay, lr=lr)
    if dtype == "float64":
        _compare(history, reference, rtol=1e-12)
    else:  # Ftrl's new weight is a difference of nearby terms: float32 keeps ~1e-6 of their size
        _compare(history, reference, rtol=1e-6, atol=1e-6 if name.startswith("ftrl") else 0.0)


def test_adafactor_factors_the_last_two_axes():
    """A rank-3 variable keeps (2, 3) row and (2, 4) column statistics; a vector keeps a full one."""
    rng = np.random.default_rng(8)
    shapes = [(2, 3, 4), (5,)]
    initial = [rng.uniform(-1, 1, s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(STEPS)]
    opt = optimizers.Adafactor(0.2, epsilon_2=0.01, name="adafactor")
    _, history = _run(opt, initial, grads)
    _compare(history, _reference(initial, grads, ref_adafactor(_lr32(0.2), epsilon_2=0.01)), rtol=1e-12)
    assert [(v.path, v.shape, v.dtype) for v in opt.variables[2:]] == [
        ("adafactor/w0", (2, 3), "float64"),
        ("adafactor/w0", (2, 4), "float64"),
        ("adafactor/w0_velocity", (2, 3, 4), "float64"),
        ("w1", (), "int32"),  # placeholders for an unfactored variable, as Keras makes them
        ("w1", (), "int32"),
        ("adafactor/w1_velocity", (5,), "float64"),
    ]


def test_new_optimizers_state_layout_matches_keras():
    """optimizer.variables paths, shapes and order as Keras 3.15 gives them for a Dense(4) on 3 inputs."""
    kernel = Variable(np.zeros((3, 4), "float32"), name="kernel")
    bias = Variable(np.zeros(4, "float32"), name="bias")
    kernel.path, bias.path = "dense/kernel", "dense/bias"
    expected = {
        "Adadelta": ["accumulated_grad", "accumulated_delta_var"],
        "Adamax": ["momentum", "norm"],
        "Nadam": ["momentum", "velocity"],
        "Ftrl": ["accumulator", "linear"],
        "Lion": ["momentum"],
        "Lamb": ["momentum", "velocity"],
    }
    for cls_name, slots in expected.items():
        opt = getattr(optimizers, cls_name)(name=cls_name.lower())
        opt.build([kernel, bias])
        want = [f"{opt.name}/iteration", f"{opt.name}/learning_rate"]
        want += [f"{opt.name}/dense_{v}_{slot}" for v in ("kernel", "bias") for slot in slots]
        if cls_name == "Nadam":
            want.append("variable")  # the momentum-schedule product, unscoped as in Keras
        assert [v.path for v in opt.variables] == want, cls_name
        assert [v.shape for v in opt.variables[2:]][: 2 * len(slots)] == [(3, 4)] * len(slots) + [(4,)] * len(slots)
    nadam = optimizers.Nadam()
    nadam.build([kernel, bias])
    assert nadam.variables[-1].shape == () and float(nadam.variables[-1].numpy()) == 1.0
    ftrl = optimizers.Ftrl(initial_accumulator_value=0.25)
    ftrl.build([kernel])
    np.testing.assert_array_equal(ftrl.variables[2].numpy(), np.full((3, 4), 0.25, "float32"))
    ema = optimizers.Lion(use_ema=True, gradient_accumulation_steps=2, name="lion")
    ema.build([kernel, bias])
    assert [v.path for v in ema.variables][2:] == [  # Keras: all averages, then all accumulators, then slots
        "lion/dense_kernel_average",
        "lion/dense_bias_average",
        "lion/dense_kernel_gradient_accumulator",
        "lion/dense_bias_gradient_accumulator",
        "lion/dense_kernel_momentum",
        "lion/dense_bias_momentum",
    ]


def test_nadam_gradient_accumulation_keeps_its_momentum_product():
    """With gradient accumulation the u_product advances once per applied update, not per call."""
    initial, grads = _problem(seed=9, dtype="float64")
    calls = grads + grads[::-1]  # 10 calls, 5 updates
    opt = optimizers.Nadam(0.01, gradient_accumulation_steps=2)
    _, history = _run(opt, initial, calls)
    averaged = [[(a + b) / 2 for a, b in zip(first, second)] for first, second in zip(calls[0::2], calls[1::2])]
    reference = _reference(initial, averaged, ref_nadam(_lr32(0.01)))
    _compare(history[1::2], reference, rtol=1e-12)
    product = np.prod([0.9 * (1 - 0.5 * 0.96**k) for k in range(1, 6)])
    np.testing.assert_allclose(opt.variables[-1].numpy(), product, rtol=1e-12)


# -- the new optimizers inside a compiled model.fit step ---------------------------------------------------
@pytest.fixture(scope="module")
def dense_problem():
    """Data and initial weights of a tiny Dense(2) regression shared by the fit tests."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((12, 3)).astype("float32")
    y = rng.standard_normal((12, 2)).astype("float32")
    kernel = (rng.standard_normal((3, 2)) * 0.5).astype("float32")
    bias = (rng.standard_normal(2) * 0.1).astype("float32")
    return x, y, kernel, bias


def _eager_epoch(problem, optimizer, variables, batch_size=4):
    """One epoch of eager updates with MSE gradients written out in numpy."""
    x, y = problem[:2]
    kernel, bias = variables
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        d_pred = 2.0 * (xb @ kernel.numpy() + bias.numpy() - yb) / yb.size
        optimizer.apply([xb.T @ d_pred, d_pred.sum(axis=0)], variables)


FIT_CASES = [
    ("adadelta", lambda: optimizers.Adadelta(1.0)),
    ("adamax", lambda: optimizers.Adamax(0.05)),
    ("nadam", lambda: optimizers.Nadam(0.05, beta_1=0.8)),
    ("ftrl", lambda: optimizers.Ftrl(0.3, l1_regularization_strength=0.01, l2_shrinkage_regularization_strength=0.1)),
    ("lion", lambda: optimizers.Lion(0.01, weight_decay=0.1)),
    ("lamb", lambda: optimizers.Lamb(0.05)),
    ("adafactor", lambda: optimizers.Adafactor(0.1, clipnorm=1.0)),
    (
        "adamax_cosine_warmup",
        lambda: optimizers.Adamax(schedules.CosineDecay(0.01, 4, 0.1, warmup_target=0.05, warmup_steps=3)),
    ),
    ("lion_cosine_restarts", lambda: optimizers.Lion(schedules.CosineDecayRestarts(0.02, 2, t_mul=2.0, m_mul=0.5))),
]


@pytest.mark.parametrize("name,make", FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_fit_step_matches_eager(dense_problem, name, make):
    """Two epochs of compiled model.fit equal eager updates from numpy gradients; between the
    epochs the learning rate (where it is a float) and the iteration count are changed."""
    import kgraph

    x, y, kernel0, bias0 = dense_problem
    model = kgraph.Sequential([kgraph.Input((3,)), kgraph.layers.Dense(2)])
    model.set_weights([kernel0, bias0])
    model.compile(optimizer=make(), loss="mse")
    eager = make()
    variables = [Variable(kernel0.copy(), name="kernel"), Variable(bias0.copy(), name="bias")]
    settable = isinstance(eager.learning_rate, Variable)
    for epoch in range(2):
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        _eager_epoch(dense_problem, eager, variables)
        for got, want in zip(model.get_weights(), variables):
            np.testing.assert_allclose(got, want.numpy(), rtol=2e-5, atol=2e-6)
        assert int(model.optimizer.iterations.numpy()) == int(eager.iterations.numpy())
        if epoch == 0:
            assert int(model.optimizer.iterations.numpy()) == 3
            for opt in (model.optimizer, eager):  # read, then set, between epochs
                opt.iterations.assign(7)
                if settable:
                    opt.learning_rate = float(opt.learning_rate.numpy()) * 0.5
    assert int(model.optimizer.iterations.numpy()) == 10
    assert len(model.optimizer.variables) == len(eager.variables)
    for got, want in zip(model.optimizer.variables, eager.variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-5, atol=2e-6, err_msg=got.path)


# -- CosineDecay and CosineDecayRestarts ----------------------------------------------------------------------
def ref_cosine_decay(step, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
    if warmup_target is None:
        s = min(step, decay_steps)
        return initial_learning_rate * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * s / decay_steps)) + alpha)
    s = min(step, decay_steps + warmup_steps)
    if s < warmup_steps:
        return initial_learning_rate + (warmup_target - initial_learning_rate) * s / warmup_steps
    return warmup_target * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * (s - warmup_steps) / decay_steps)) + alpha)


def ref_cosine_restarts(step, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
    start, length, peak = 0.0, float(first_decay_steps), 1.0
    while step >= start + length:  # walk the periods one by one
        start, length, peak = start + length, length * t_mul, peak * m_mul
    position = (step - start) / length
    return initial_learning_rate * ((1 - alpha) * peak * 0.5 * (1 + np.cos(np.pi * position)) + alpha)


COSINE_CASES = [
    ({"initial_learning_rate": 0.1, "decay_steps": 10}, [0, 1, 5, 9, 10, 25]),
    ({"initial_learning_rate": 0.5, "decay_steps": 8, "alpha": 0.2}, [0, 3, 4, 8, 100]),
    (  # warmup from 0.01 to 0.1 over 5 steps, then decay over 10
        {"initial_learning_rate": 0.01, "decay_steps": 10, "alpha": 0.1, "warmup_target": 0.1, "warmup_steps": 5},
        [0, 1, 2, 4, 5, 6, 10, 15, 40],
    ),
    ({"initial_learning_rate": 0.0, "decay_steps": 4, "warmup_target": 1.0, "warmup_steps": 0}, [0, 2, 4, 9]),
]
RESTART_CASES = [
    ({"initial_learning_rate": 1.0, "first_decay_steps": 10}, [0, 5, 9, 10, 11, 20, 29, 30, 31, 69, 70, 75]),
    (
        {"initial_learning_rate": 0.5, "first_decay_steps": 4, "t_mul": 1.0, "m_mul": 0.9, "alpha": 0.1},
        [0, 1, 3, 4, 6, 8, 13],
    ),
    (
        {"initial_learning_rate": 1.0, "first_decay_steps": 7, "t_mul": 1.5, "m_mul": 0.8, "alpha": 0.05},
        [0, 6, 7, 8, 17, 18, 28, 34, 40],
    ),
]


@pytest.mark.parametrize("config,steps", COSINE_CASES)
def test_cosine_decay_formula(config, steps):
    schedule = schedules.CosineDecay(**config)
    got = [float(schedule(step)) for step in steps]
    want = [ref_cosine_decay(step, **config) for step in steps]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("config,steps", RESTART_CASES)
def test_cosine_decay_restarts_formula(config, steps):
    schedule = schedules.CosineDecayRestarts(**config)
    got = [float(schedule(np.int64(step))) for step in steps]
    want = [ref_cosine_restarts(step, **config) for step in steps]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_schedule_in_an_optimizer_follows_iterations():
    """The optimizer evaluates the schedule at its iteration count (warmup, then decay)."""
    config = {"initial_learning_rate": 0.0, "decay_steps": 3, "warmup_target": 0.3, "warmup_steps": 2}
    opt = optimizers.SGD(schedules.CosineDecay(**config))
    w = Variable(np.zeros(2, "float64"))
    for step in range(7):
        np.testing.assert_allclose(float(opt.learning_rate), ref_cosine_decay(step, **config), atol=1e-7)
        before = w.numpy()
        opt.apply([np.ones(2)], [w])
        np.testing.assert_allclose(before - w.numpy(), ref_cosine_decay(step, **config), rtol=1e-6, atol=1e-8)


def test_schedule_configs_round_trip():
    made = [
        schedules.CosineDecay(0.1, 100, alpha=0.01, warmup_target=0.5, warmup_steps=10, name="cos"),
        schedules.CosineDecay(0.1, 100),
        schedules.CosineDecayRestarts(0.2, 50, t_mul=1.5, m_mul=0.7, alpha=0.05),
        schedules.ExponentialDecay(0.1, 10, 0.9, staircase=True),
        schedules.PiecewiseConstantDecay([5, 10], [0.3, 0.2, 0.1]),
        schedules.PolynomialDecay(0.1, 10, cycle=True),
        schedules.InverseTimeDecay(0.1, 10, 0.5),
    ]
    for schedule in made:
        config = schedules.serialize(schedule)
        assert config["module"] == "keras.optimizers.schedules"
        assert config["class_name"] == type(schedule).__name__
        clone = schedules.deserialize(config)
        assert type(clone) is type(schedule) and clone.get_config() == schedule.get_config()
        for step in (0, 7, 60, 120):
            np.testing.assert_allclose(float(clone(step)), float(schedule(step)), rtol=1e-7)
    assert made[2].get_config() == {  # Keras 3's keys
        "initial_learning_rate": 0.2,
        "first_decay_steps": 50,
        "t_mul": 1.5,
        "m_mul": 0.7,
        "alpha": 0.05,
        "name": "SGDRDecay",
    }
    assert set(made[1].get_config()) == {
        "initial_learning_rate", "decay_steps", "alpha", "name", "warmup_target", "warmup_steps"
    }
    opt = optimizers.Nadam(made[0])
    clone = optimizers.deserialize(optimizers.serialize(opt))
    assert isinstance(clone._learning_rate, schedules.CosineDecay)
    assert clone._learning_rate.get_config() == made[0].get_config()
    with pytest.raises(ValueError, match="decay_steps"):
        schedules.CosineDecay(0.1, 0)
    with pytest.raises(ValueError, match="first_decay_steps"):
        schedules.CosineDecayRestarts(0.1, -1)


# -- configs, aliases and argument checks of the new optimizers ----------------------------------------------
def test_new_optimizer_configs_and_aliases():
    keras_keys = {  # each optimizer's own config keys in Keras 3
        optimizers.Adadelta: {"rho", "epsilon"},
        optimizers.Adamax: {"beta_1", "beta_2", "epsilon"},
        optimizers.Nadam: {"beta_1", "beta_2", "epsilon"},
        optimizers.Ftrl: {
            "learning_rate_power",
            "initial_accumulator_value",
            "l1_regularization_strength",
            "l2_regularization_strength",
            "l2_shrinkage_regularization_strength",
            "beta",
        },
        optimizers.Lion: {"beta_1", "beta_2"},
        optimizers.Lamb: {"beta_1", "beta_2", "epsilon"},
        optimizers.Adafactor: {"beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold", "relative_step"},
    }
    base_keys = set(optimizers.SGD().get_config()) - {"momentum", "nesterov"}
    for cls, keys in keras_keys.items():
        alias = cls.__name__.lower()
        assert isinstance(optimizers.get(alias), cls)
        default = cls()
        assert set(default.get_config()) == base_keys | keys
        assert default.get_config()["learning_rate"] == pytest.approx(0.001)
        custom = cls(learning_rate=0.03, weight_decay=0.01, clipvalue=0.5, name=f"my_{alias}")
        config = optimizers.serialize(custom)
        assert config["class_name"] == cls.__name__ and config["config"]["name"] == f"my_{alias}"
        clone = optimizers.deserialize(config)
        assert type(clone) is cls and clone.get_config() == custom.get_config()
        assert optimizers.get({"class_name": alias, "config": {}}).__class__ is cls
    nadam = optimizers.Nadam(beta_1=0.8, beta_2=0.95, epsilon=1e-4)
    assert optimizers.Nadam.from_config(nadam.get_config()).beta_2 == 0.95
    ftrl = optimizers.Ftrl(learning_rate_power=-0.7, l1_regularization_strength=0.1, beta=0.5)
    assert optimizers.Ftrl.from_config(ftrl.get_config()).get_config() == ftrl.get_config()
    assert optimizers.Adafactor(relative_step=False).get_config()["relative_step"] is False
    assert optimizers.Nadam().name != optimizers.Nadam().name  # nadam, nadam_1, ... as Keras


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: optimizers.Ftrl(learning_rate_power=0.5), "learning_rate_power"),
        (lambda: optimizers.Ftrl(initial_accumulator_value=-1.0), "initial_accumulator_value"),
        (lambda: optimizers.Ftrl(l1_regularization_strength=-0.1), "l1_regularization_strength"),
        (lambda: optimizers.Ftrl(l2_shrinkage_regularization_strength=-0.1), "l2_shrinkage"),
        (lambda: optimizers.Lion(beta_1=0.0), "beta_1"),
        (lambda: optimizers.Lamb(betas=0.9), "not recognized"),
    ],
)
def test_new_optimizer_argument_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# -- optionally: Keras 3 itself on the same gradients -------------------------------------------------------
_KERAS_APPLY = """
import json, sys
import numpy as np
import keras

data = np.load(sys.argv[1])
results = {}
for k, (cls, config) in enumerate(json.loads(str(data["specs"]))):
    variables = [keras.Variable(data[f"w{i}"], name=f"w{i}") for i in range(int(data["n_vars"]))]
    optimizer = getattr(keras.optimizers, cls).from_config(config)
    for step in range(int(data["steps"])):
        optimizer.apply([data[f"g{step}_{i}"] for i in range(len(variables))], variables)
    results.update({f"{k}_{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)})
    results.update({f"{k}_state_{j}": np.asarray(v.numpy()) for j, v in enumerate(optimizer.variables)})
np.savez(sys.argv[2], **results)
"""


def test_new_optimizers_match_keras(tmp_path):
    """Keras 3 (KGRAPH_KERAS_PYTHON, see tests/keras_reference.py) on the same float32 gradients."""
    import json
    import os
    import subprocess

    python = keras_python()
    if python is None:
        pytest.skip(SKIP_REASON)
    initial, grads = _problem(seed=6, dtype="float32")
    specs, ours = [], []
    for _, make, *_ in NEW_CASES:
        optimizer = make()
        specs.append((type(optimizer).__name__, {k: v for k, v in optimizer.get_config().items() if k != "name"}))
        ours.append((_run(optimizer, initial, grads)[1][-1], [v.numpy() for v in optimizer.variables]))
    arrays = {"specs": json.dumps(specs), "n_vars": len(initial), "steps": len(grads)}
    arrays.update({f"w{i}": w for i, w in enumerate(initial)})
    arrays.update({f"g{s}_{i}": g for s, step in enumerate(grads) for i, g in enumerate(step)})
    np.savez(tmp_path / "in.npz", **arrays)
    (tmp_path / "apply.py").write_text(_KERAS_APPLY)
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KGRAPH_KERAS_BACKEND", "numpy"))
    done = subprocess.run(
        [python, str(tmp_path / "apply.py"), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 and "No module named 'keras'" in done.stderr:
        pytest.skip(f"`import keras` fails in {python}")
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = np.load(tmp_path / "out.npz")
    for k, (name, *_) in enumerate(NEW_CASES):
        weights, state = ours[k]
        atol = 1e-6 if name.startswith("ftrl") else 1e-7  # Ftrl's cancellation, as above
        for i, got in enumerate(weights):
            np.testing.assert_allclose(got, theirs[f"{k}_{i}"], rtol=1e-6, atol=atol, err_msg=name)
        # The optimizer state, index by index: the `.keras` layout (optimizer/vars/0..N) matches.
        assert sum(key.startswith(f"{k}_state_") for key in theirs.files) == len(state), name
        for j, got in enumerate(state):
            want = theirs[f"{k}_state_{j}"]
            assert got.shape == want.shape, (name, j)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{name} state {j}")


def test_new_optimizers_state_survives_a_keras_file(tmp_path):
    """model.save / load_model restores every new optimizer's state, index by index."""
    import kgraph
    from kgraph import saving

    rng = np.random.default_rng(11)
    for cls in (optimizers.Adadelta, optimizers.Adamax, optimizers.Nadam, optimizers.Ftrl, optimizers.Lion,
                optimizers.Lamb, optimizers.Adafactor):
        model = kgraph.Sequential([kgraph.Input((3,)), kgraph.layers.Dense(2)])
        model.compile(optimizer=cls(0.01), loss="mse")
        model.optimizer.build(model.trainable_weights)
        for variable in model.optimizer.variables:
            variable.assign(rng.integers(1, 9, variable.shape).astype(variable.dtype))
        model.save(tmp_path / "model.keras")
        loaded = saving.load_model(tmp_path / "model.keras")
        assert type(loaded.optimizer) is cls
        assert [v.shape for v in loaded.optimizer.variables] == [v.shape for v in model.optimizer.variables]
        for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
            np.testing.assert_array_equal(restored.numpy(), saved.numpy(), err_msg=f"{cls.__name__} {saved.path}")
