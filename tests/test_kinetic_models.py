"""Tests of the TAC models: analytic integrals against numerical quadrature, analytic derivatives
against finite differences, hand-worked values.

Tolerances: the integrals are compared with scipy.integrate.quad (an independent adaptive
Gauss-Kronrod quadrature of ``activity``) at 1e-8 relative; derivatives with central finite
differences at 1e-6 relative (step 1e-6 relative: truncation error ~1e-12, rounding ~1e-10 — the
tolerance leaves a wide margin).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from mrtdose.errors import FitError, InputError
from mrtdose.kinetics.models import LN2, MODELS, RATE_MAX_PER_H, get_model

LAMBDA_LU177 = LN2 / 159.5  # 1/h, Lu-177 (T1/2 = 6.647 d)

# (model, params) with realistic Lu-177 kinetics (rates in 1/h)
PARAMETRIC_CASES = [
    ("mono_exp", [100.0, LN2 / 50]),
    ("bi_exp", [60.0, LN2 / 3, 40.0, LN2 / 70]),
    ("bi_exp_uptake", [120.0, LN2 / 60, LN2 / 5]),
    ("tri_exp", [30.0, LN2 / 8, 90.0, LN2 / 80, LN2 / 2]),
]


def _quad_integral(model, params, t0=0.0, t1=math.inf, breaks=()):
    """Independent numerical integral of model.activity, split at ``breaks`` for accuracy."""
    f = lambda t: float(model.activity(np.array([t]), params)[0])  # noqa: E731
    edges = [t0] + [b for b in breaks if t0 < b < t1] + [t1]
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        val, _ = quad(f, lo, hi, epsabs=0.0, epsrel=1e-12, limit=500)
        total += val
    return total


def _fd_grad(fun, p, rel=1e-6):
    p = np.asarray(p, dtype=float)
    g = np.zeros_like(p)
    for j in range(p.size):
        h = rel * max(abs(p[j]), 1e-12)
        pp, pm = p.copy(), p.copy()
        pp[j] += h
        pm[j] -= h
        g[j] = (fun(pp) - fun(pm)) / (2 * h)
    return g


@pytest.mark.parametrize("name,params", PARAMETRIC_CASES)
def test_integral_matches_quadrature(name, params):
    m = get_model(name)
    breaks = (1.0, 10.0, 100.0, 1000.0)
    exact_inf = m.integral(params)
    num_inf = _quad_integral(m, params, breaks=breaks)
    assert exact_inf == pytest.approx(num_inf, rel=1e-8)
    exact_win = m.integral(params, 10.0, 100.0)
    num_win = _quad_integral(m, params, 10.0, 100.0)
    assert exact_win == pytest.approx(num_win, rel=1e-8)
    # t1 <= t0 is an empty interval
    assert m.integral(params, 50.0, 10.0) == 0.0


@pytest.mark.parametrize("name,params", PARAMETRIC_CASES)
def test_jacobian_matches_finite_differences(name, params):
    m = get_model(name)
    t = np.array([0.5, 2.0, 6.0, 24.0, 48.0, 96.0, 168.0])
    jac = m.jacobian(t, params)
    assert jac.shape == (t.size, len(params))
    for i, ti in enumerate(t):
        fd = _fd_grad(lambda p: float(m.activity(np.array([ti]), p)[0]), params)
        np.testing.assert_allclose(jac[i], fd, rtol=1e-6, atol=1e-9 * np.max(np.abs(fd)))


@pytest.mark.parametrize("name,params", PARAMETRIC_CASES)
def test_integral_gradient_matches_finite_differences(name, params):
    m = get_model(name)
    np.testing.assert_allclose(m.integral_gradient(params), _fd_grad(m.integral, params), rtol=1e-6)


@pytest.mark.parametrize("name,params", PARAMETRIC_CASES)
def test_exponential_terms_reproduce_activity(name, params):
    m = get_model(name)
    c, r = m.exponential_terms(params)
    t = np.linspace(0, 300, 31)
    np.testing.assert_allclose(np.exp(-np.outer(t, r)) @ c, m.activity(t, params), rtol=1e-12, atol=1e-12)
    # A(t) = 0 before administration
    assert m.activity(-1.0, params)[0] == 0.0


def test_uptake_models_start_at_zero_and_are_positive():
    for name in ("bi_exp_uptake", "tri_exp"):
        m = get_model(name)
        p = dict(PARAMETRIC_CASES)[name]
        assert m.activity(0.0, p)[0] == pytest.approx(0.0, abs=1e-12)
        assert np.all(m.activity(np.linspace(0.01, 1000, 500), p) > 0)


def test_hand_worked_mono_exp():
    """A0 = 100 MBq, T_eff = 50 h: TIA = A0 T_eff / ln 2 = 100 * 50 / 0.693147 = 7213.475 MBq h."""
    m = get_model("mono_exp")
    assert m.integral([100.0, LN2 / 50]) == pytest.approx(7213.475, abs=1e-3)
    assert m.half_lives_h([100.0, LN2 / 50])["effective"] == pytest.approx(50.0)


def test_hand_worked_bi_exp_uptake():
    """A1 = 100 MBq, clearance T = 50 h, uptake T = 5 h: TIA = A1 (1/l1 - 1/l2)
    = 100 (50 - 5)/ln 2 = 4500/0.693147 = 6492.128 MBq h."""
    m = get_model("bi_exp_uptake")
    assert m.integral([100.0, LN2 / 50, LN2 / 5]) == pytest.approx(6492.128, abs=1e-3)


def test_bounds_respect_physical_decay():
    m = get_model("bi_exp")
    lo, hi = m.bounds(LAMBDA_LU177)
    assert lo.tolist() == [0.0, LAMBDA_LU177, 0.0, LAMBDA_LU177]
    assert hi[1] == RATE_MAX_PER_H and math.isinf(hi[0])
    lo2, _ = m.bounds(LAMBDA_LU177, allow_below_physical=True)
    assert lo2[1] < LAMBDA_LU177 and lo2[1] > 0


def test_initial_guesses_are_within_bounds():
    t = np.array([1.0, 4.0, 24.0, 48.0, 96.0, 168.0])
    for name, p in PARAMETRIC_CASES:
        m = get_model(name)
        a = m.activity(t, p)
        lo, hi = m.bounds(LAMBDA_LU177)
        guesses = m.initial_guesses(t, a, LAMBDA_LU177)
        assert guesses
        for g in guesses:
            assert g.shape == (m.n_params,)
            assert np.all(g >= lo) and np.all(g <= hi)


def test_canonical_order_puts_fast_component_first():
    m = get_model("bi_exp")
    p = np.array([40.0, 0.01, 60.0, 0.2])
    q = p[m.canonical_order(p)]
    assert q.tolist() == [60.0, 0.2, 40.0, 0.01]
    assert m.integral(q) == pytest.approx(m.integral(p))


def test_get_model_errors():
    with pytest.raises(InputError, match="valid models: .*mono_exp.*bi_exp_uptake"):
        get_model("gamma_variate")
    with pytest.raises(InputError, match="times_h"):
        get_model("trapezoid_physical_tail")
    with pytest.raises(InputError, match="takes 2 parameters"):
        get_model("mono_exp").activity(1.0, [1.0, 2.0, 3.0])
    assert set(MODELS) == {"mono_exp", "bi_exp", "bi_exp_uptake", "tri_exp",
                           "trapezoid_physical_tail", "trapezoid_exp_tail"}


# --- trapezoid models ------------------------------------------------------------------------

TRAP_T = np.array([4.0, 24.0, 72.0, 168.0])
TRAP_A = np.array([30.0, 50.0, 35.0, 15.0])


@pytest.mark.parametrize("name", ["trapezoid_physical_tail", "trapezoid_exp_tail"])
@pytest.mark.parametrize("start", ["zero", "constant"])
def test_trapezoid_integral_matches_quadrature(name, start):
    m = get_model(name, times_h=TRAP_T, decay_constant_per_h=LAMBDA_LU177, start=start)
    assert m.nonparametric
    breaks = tuple(TRAP_T) + (500.0, 2000.0)
    assert m.integral(TRAP_A) == pytest.approx(_quad_integral(m, TRAP_A, breaks=breaks), rel=1e-8)
    assert m.integral(TRAP_A, 10.0, 100.0) == pytest.approx(_quad_integral(m, TRAP_A, 10.0, 100.0, breaks=(24.0, 72.0)), rel=1e-8)
    assert m.integral(TRAP_A, 100.0, 400.0) == pytest.approx(_quad_integral(m, TRAP_A, 100.0, 400.0, breaks=(168.0,)), rel=1e-8)


@pytest.mark.parametrize("name", ["trapezoid_physical_tail", "trapezoid_exp_tail"])
@pytest.mark.parametrize("start", ["zero", "constant"])
def test_trapezoid_derivatives(name, start):
    m = get_model(name, times_h=TRAP_T, decay_constant_per_h=LAMBDA_LU177, start=start)
    np.testing.assert_allclose(m.integral_gradient(TRAP_A), _fd_grad(m.integral, TRAP_A), rtol=1e-6)
    t = np.array([2.0, 10.0, 30.0, 100.0, 200.0, 400.0])  # not on nodes (kinks)
    jac = m.jacobian(t, TRAP_A)
    for i, ti in enumerate(t):
        fd = _fd_grad(lambda p: float(m.activity(np.array([ti]), p)[0]), TRAP_A)
        np.testing.assert_allclose(jac[i], fd, rtol=1e-6, atol=1e-12)
    assert m.exponential_terms(TRAP_A) is None


def test_trapezoid_hand_worked():
    """Points (1 h, 10 MBq), (2 h, 5 MBq), start at (0, 0):
    triangle 0-1 h: 10*1/2 = 5; trapezoid 1-2 h: (10+5)/2 = 7.5;
    exponential tail through the last two points: k = ln(10/5)/1 h = ln 2 /h, tail = 5/ln 2 = 7.2135;
    total 19.7135 MBq h. Physical tail (lambda = ln2/159.5 h): 5 * 159.5/ln 2 = 1150.549 -> 1163.049."""
    t, a = [1.0, 2.0], [10.0, 5.0]
    exp_tail = get_model("trapezoid_exp_tail", times_h=t, decay_constant_per_h=LAMBDA_LU177)
    assert exp_tail.integral(a) == pytest.approx(5 + 7.5 + 5 / LN2, rel=1e-12)
    assert exp_tail.integral(a) == pytest.approx(19.7135, abs=1e-4)
    phys = get_model("trapezoid_physical_tail", times_h=t, decay_constant_per_h=LAMBDA_LU177)
    assert phys.integral(a) == pytest.approx(1163.049, abs=1e-3)
    const = get_model("trapezoid_physical_tail", times_h=t, decay_constant_per_h=LAMBDA_LU177, start="constant")
    assert const.integral(a) - phys.integral(a) == pytest.approx(5.0)  # rectangle 10*1 instead of triangle 5


def test_trapezoid_exp_tail_rate_bounded_by_physical():
    t = [24.0, 48.0]
    m = get_model("trapezoid_exp_tail", times_h=t, decay_constant_per_h=LAMBDA_LU177)
    k, dk, clamped = m.tail_rate([10.0, 12.0])  # rising last points
    assert clamped and k == LAMBDA_LU177 and not np.any(dk)
    allowed = get_model("trapezoid_exp_tail", times_h=t, decay_constant_per_h=LAMBDA_LU177, allow_below_physical=True)
    with pytest.raises(FitError, match="do not decrease"):
        allowed.integral([10.0, 12.0])
    k2, _, clamped2 = allowed.tail_rate([10.0, 9.9])
    assert not clamped2 and k2 < LAMBDA_LU177


def test_trapezoid_rejects_bad_times():
    with pytest.raises(InputError, match="strictly increasing"):
        get_model("trapezoid_physical_tail", times_h=[4.0, 4.0], decay_constant_per_h=LAMBDA_LU177)
    with pytest.raises(InputError, match="start"):
        get_model("trapezoid_physical_tail", times_h=[4.0, 24.0], decay_constant_per_h=LAMBDA_LU177, start="linear")
