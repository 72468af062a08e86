"""Tests of the weighted least-squares TAC fitting and of AICc model selection.

Ground truth is synthetic: curves from known parameters (analytic truth), with seeded Gaussian
noise of known standard deviation. Statistical tolerances are stated at each test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mrtdose.errors import FitError, InputError
from mrtdose.kinetics.fitting import fit_auto, fit_model
from mrtdose.kinetics.models import LN2, get_model

LAM = LN2 / 159.5  # Lu-177 physical decay constant (1/h)
T6 = np.array([1.0, 4.0, 24.0, 48.0, 96.0, 168.0])
T8 = np.array([0.5, 2.0, 6.0, 24.0, 48.0, 72.0, 120.0, 168.0])

TRUTH = {
    "mono_exp": (np.array([4.0, 24.0, 72.0, 168.0]), [100.0, LN2 / 50]),
    "bi_exp_uptake": (T6, [120.0, LN2 / 60, LN2 / 5]),
    "bi_exp": (T8, [60.0, LN2 / 3, 40.0, LN2 / 70]),
    "tri_exp": (T8, [40.0, LN2 / 10, 80.0, LN2 / 90, LN2 / 1.5]),
}


def _curve(name, t, p):
    return get_model(name).activity(t, p)


@pytest.mark.parametrize("name", list(TRUTH))
def test_noiseless_data_recovers_parameters(name):
    t, p = TRUTH[name]
    a = _curve(name, t, p)
    r = fit_model(name, t, a, 0.05 * a, decay_constant_per_h=LAM)
    np.testing.assert_allclose(r.params, p, rtol=1e-5)
    assert r.tia_mbq_h == pytest.approx(get_model(name).integral(p), rel=1e-7)
    assert r.chi2 == pytest.approx(0.0, abs=1e-8)
    assert r.tia_uncertainty_mbq_h > 0
    np.testing.assert_allclose(r.activity(t), a, rtol=1e-6)
    # exponential terms reproduce the curve; tia(params) is the integral
    c, k = r.exponential_terms()
    np.testing.assert_allclose(np.exp(-np.outer(t, k)) @ c, a, rtol=1e-6)
    assert r.tia() == pytest.approx(r.tia_mbq_h)
    assert r.tia(r.params * np.where(np.arange(len(p)) == 0, 2.0, 1.0)) != pytest.approx(r.tia_mbq_h)
    np.testing.assert_allclose(r.tia_gradient(), get_model(name).integral_gradient(r.params))


def test_hand_worked_fit():
    """Mono-exponential A0 = 100 MBq, T_eff = 50 h measured at 4, 24, 72, 168 h without noise:
    TIA = 100 * 50 / ln 2 = 7213.475 MBq h and the fitted half-life is 50 h."""
    t, p = TRUTH["mono_exp"]
    a = _curve("mono_exp", t, p)
    r = fit_model("mono_exp", t, a, 0.05 * a, decay_constant_per_h=LAM)
    assert r.tia_mbq_h == pytest.approx(7213.475, abs=1e-2)
    assert r.effective_half_lives_h["effective"] == pytest.approx(50.0, rel=1e-6)


def test_covariance_first_order_matches_analytic_mono_exp():
    """For mono-exp with 2 points the fit is exact and the covariance must equal the first-order
    propagation of the two measurement variances through the inverse map (A1, l1)(a1, a2):
    l1 = ln(a1/a2)/(t2 - t1), A1 = a1 e^{l1 t1}."""
    t = np.array([24.0, 96.0])
    a = 100 * np.exp(-LN2 / 50 * t)
    s = np.array([3.0, 2.0])
    r = fit_model("mono_exp", t, a, s, decay_constant_per_h=LAM)
    dt = t[1] - t[0]
    l1 = math.log(a[0] / a[1]) / dt
    A1 = a[0] * math.exp(l1 * t[0])
    # Jacobian of (A1, l1) with respect to (a1, a2)
    dl = np.array([1 / (a[0] * dt), -1 / (a[1] * dt)])
    dA = np.array([math.exp(l1 * t[0]), 0.0]) + A1 * t[0] * dl
    J = np.vstack([dA, dl])
    np.testing.assert_allclose(r.covariance, J @ np.diag(s**2) @ J.T, rtol=1e-6)
    assert r.dof == 0 and r.reduced_chi2 is None and r.aicc is None
    assert any("no degrees of freedom" in w for w in r.warnings)


def _coverage(name, t, p, rel_sigma, n_rep, seed):
    rng = np.random.default_rng(seed)
    truth = get_model(name).integral(p)
    a0 = _curve(name, t, p)
    s = rel_sigma * a0
    pulls = []
    for _ in range(n_rep):
        a = a0 + s * rng.standard_normal(t.size)
        r = fit_model(name, t, a, s, decay_constant_per_h=LAM)
        pulls.append((r.tia_mbq_h - truth) / r.tia_uncertainty_mbq_h)
    return np.asarray(pulls)


def test_tia_uncertainty_coverage_mono_exp():
    """400 seeded replicates, 5 points, 5 % noise. Coverage of the 1-sigma interval: expected
    0.683, binomial SD sqrt(0.683*0.317/400) = 0.023, tolerance 3 SD = 0.07. Pull SD: expected 1,
    SD of a sample SD ~ 1/sqrt(2*400) = 0.035, tolerance 0.1."""
    t = np.array([4.0, 24.0, 48.0, 96.0, 168.0])
    pulls = _coverage("mono_exp", t, [100.0, LN2 / 50], 0.05, 400, seed=1)
    assert np.mean(np.abs(pulls) <= 1) == pytest.approx(0.683, abs=0.07)
    assert np.std(pulls) == pytest.approx(1.0, abs=0.1)
    assert abs(np.mean(pulls)) < 0.15


def test_tia_uncertainty_coverage_bi_exp_uptake():
    """300 seeded replicates, 7 points, 4 % noise (same tolerances as above, 3 SD of binomial
    scatter: 0.08). The first-order covariance is only approximate for a non-linear model; the
    test checks it is adequate at clinical noise levels."""
    t = np.array([1.0, 4.0, 12.0, 24.0, 48.0, 96.0, 168.0])
    pulls = _coverage("bi_exp_uptake", t, [120.0, LN2 / 60, LN2 / 5], 0.04, 300, seed=2)
    assert np.mean(np.abs(pulls) <= 1) == pytest.approx(0.683, abs=0.08)
    assert np.std(pulls) == pytest.approx(1.0, abs=0.12)


def test_covariance_matches_monte_carlo_refits():
    """Parameter covariance (J^T W J)^-1 at the truth vs the sample covariance of 400 refits of
    noisy data (2 % noise, near-linear regime). SD of a sample SD ~ 1/sqrt(800) = 3.5 %; tolerance
    12 % on the standard deviations and 0.15 on the correlation coefficients."""
    name = "bi_exp_uptake"
    t = np.array([1.0, 4.0, 12.0, 24.0, 48.0, 96.0, 168.0])
    p = np.array([120.0, LN2 / 60, LN2 / 5])
    a0 = _curve(name, t, p)
    s = 0.02 * a0
    ref = fit_model(name, t, a0, s, decay_constant_per_h=LAM).covariance
    rng = np.random.default_rng(3)
    est = np.array([fit_model(name, t, a0 + s * rng.standard_normal(t.size), s, decay_constant_per_h=LAM).params
                    for _ in range(400)])
    mc = np.cov(est.T)
    np.testing.assert_allclose(np.sqrt(np.diag(mc)), np.sqrt(np.diag(ref)), rtol=0.12)
    corr = lambda c: c / np.sqrt(np.outer(np.diag(c), np.diag(c)))  # noqa: E731
    np.testing.assert_allclose(corr(mc), corr(ref), atol=0.15)


def test_reduced_chi2_reported_and_not_used_to_scale():
    """Scatter of +-8 % with stated sigmas of 2 %: the covariance stays (J^T W J)^-1 with the given
    sigmas (absolute sigma), the reduced chi2 shows the over-dispersion and a warning is recorded."""
    t = np.array([4.0, 24.0, 48.0, 96.0, 168.0])
    a0 = 100 * np.exp(-LN2 / 50 * t)
    a = a0 * (1 + 0.08 * np.array([1.0, -1.0, 1.0, -1.0, 1.0]))
    r = fit_model("mono_exp", t, a, 0.02 * a0, decay_constant_per_h=LAM)
    m = get_model("mono_exp")
    jw = m.jacobian(t, r.params) / (0.02 * a0)[:, None]
    np.testing.assert_allclose(r.covariance, np.linalg.inv(jw.T @ jw), rtol=1e-8)
    assert r.reduced_chi2 > 3
    assert any("reduced chi2" in w for w in r.warnings)


# --- model selection ----------------------------------------------------------------------------


def test_auto_selects_bi_exp_uptake_for_uptake_data():
    """8 points, 3 % noise, 10 seeded replicates: bi_exp_uptake must be chosen in at least 8."""
    name, t, p = "bi_exp_uptake", T8, [120.0, LN2 / 60, LN2 / 5]
    a0 = _curve(name, t, p)
    rng = np.random.default_rng(11)
    chosen = []
    for _ in range(10):
        a = a0 * (1 + 0.03 * rng.standard_normal(t.size))
        r = fit_auto(t, a, 0.03 * a0, decay_constant_per_h=LAM)
        chosen.append(r.model)
        assert {c["model"] for c in r.candidates} == {"mono_exp", "bi_exp_uptake", "bi_exp", "tri_exp"}
        assert sum(bool(c["reason"].startswith("selected")) for c in r.candidates) == 1
    assert chosen.count("bi_exp_uptake") >= 8


def test_auto_selects_mono_exp_for_mono_data():
    """6 points, 5 % noise, 10 seeded replicates: mono_exp chosen in at least 8."""
    t = np.array([4.0, 24.0, 48.0, 72.0, 96.0, 168.0])
    a0 = 100 * np.exp(-LN2 / 50 * t)
    rng = np.random.default_rng(12)
    chosen = []
    for _ in range(10):
        a = a0 * (1 + 0.05 * rng.standard_normal(t.size))
        r = fit_auto(t, a, 0.05 * a0, decay_constant_per_h=LAM)
        chosen.append(r.model)
        weights = [c["akaike_weight"] for c in r.candidates if c["akaike_weight"] is not None]
        assert sum(weights) == pytest.approx(1.0)
    assert chosen.count("mono_exp") >= 8


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 8])
def test_auto_never_exceeds_parameters_allowed(n):
    t = T8[-n:] if n < 8 else T8
    a0 = _curve("bi_exp_uptake", t, [120.0, LN2 / 60, LN2 / 5])
    rng = np.random.default_rng(20 + n)
    a = a0 * (1 + 0.03 * rng.standard_normal(t.size))
    r = fit_auto(t, a, 0.03 * a0, decay_constant_per_h=LAM)
    k = r.model_object.n_params
    assert k <= n
    if r.aicc is not None:
        assert n - k - 1 > 0
    for c in r.candidates:
        if c["n_params"] > n:
            assert not c["accepted"] and "too few points" in c["reason"]
        if c["aicc"] is not None:
            assert n - c["n_params"] - 1 > 0


def test_auto_three_points_falls_back_without_aicc():
    """With 3 points no candidate has AICc defined; the simplest acceptable model is chosen."""
    t = np.array([24.0, 72.0, 168.0])
    a = 100 * np.exp(-LN2 / 50 * t)
    r = fit_auto(t, a, 0.05 * a, decay_constant_per_h=LAM)
    assert r.model == "mono_exp"
    assert any("too few points" in w and "AICc" in w for w in r.warnings)


def test_auto_two_points():
    falling = fit_auto([24.0, 96.0], [50.0, 20.0], [2.0, 1.0], decay_constant_per_h=LAM)
    assert falling.model == "mono_exp"
    assert any("two falling points" in w for w in falling.warnings)
    rising = fit_auto([4.0, 24.0], [20.0, 50.0], [1.0, 2.0], decay_constant_per_h=LAM)
    assert rising.model == "trapezoid_physical_tail" and rising.nonparametric
    assert any("do not fall" in w for w in rising.warnings)


def test_auto_one_point_asks_for_single_time_point_method():
    with pytest.raises(FitError, match="single-time-point"):
        fit_auto([96.0], [20.0], [1.0], decay_constant_per_h=LAM)
    with pytest.raises(FitError, match="single-time-point"):
        fit_model("mono_exp", [96.0], [20.0], [1.0], decay_constant_per_h=LAM)


def test_auto_rejects_nonparametric_candidates():
    with pytest.raises(InputError, match="AICc"):
        fit_auto(T6, np.ones(6), np.ones(6), decay_constant_per_h=LAM, candidates=("mono_exp", "trapezoid_exp_tail"))


def test_auto_raises_when_nothing_is_acceptable():
    """Zig-zag data that no exponential model describes: a FitError lists the reasons."""
    t = np.array([2.0, 24.0, 48.0, 96.0, 168.0])
    a = np.array([50.0, 10.0, 60.0, 5.0, 40.0])
    with pytest.raises(FitError, match="no candidate model is acceptable.*trapezoid"):
        fit_auto(t, a, 0.02 * a, decay_constant_per_h=LAM)


# --- trapezoid through fit_model ------------------------------------------------------------


def test_trapezoid_fit_result():
    """TIA uncertainty of the trapezoid = sqrt(sum (dTIA/dA_i sigma_i)^2) (covariance diag(sigma^2))."""
    t = np.array([4.0, 24.0, 72.0, 168.0])
    a = np.array([30.0, 50.0, 35.0, 15.0])
    s = 0.05 * a
    r = fit_model("trapezoid_physical_tail", t, a, s, decay_constant_per_h=LAM)
    m = get_model("trapezoid_physical_tail", times_h=t, decay_constant_per_h=LAM)
    assert r.tia_mbq_h == pytest.approx(m.integral(a))
    assert r.tia_uncertainty_mbq_h == pytest.approx(math.sqrt(np.sum((m.integral_gradient(a) * s) ** 2)))
    np.testing.assert_allclose(r.covariance, np.diag(s**2))
    assert r.aicc is None and r.r2 is None and r.exponential_terms() is None
    assert any("trapezoid integration" in w for w in r.warnings)
    r2 = fit_model("trapezoid_exp_tail", t, np.array([30.0, 50.0, 35.0, 36.0]), s, decay_constant_per_h=LAM)
    assert any("physical decay constant instead" in w for w in r2.warnings)
    assert any("higher than the one before" in w for w in r2.warnings)


# --- physical constraint and implausible results -----------------------------------------------


def test_physical_bound_and_allow_below_physical():
    """Data that clear more slowly than Lu-177 decays (e.g. a calibration drift): by default the
    rate stops at lambda_phys with a warning; with permission it goes below, with a warning."""
    t = np.array([24.0, 48.0, 96.0, 168.0])
    a = 50 * np.exp(-0.5 * LAM * t)
    r = fit_model("mono_exp", t, a, 0.03 * a, decay_constant_per_h=LAM)
    assert r.params[1] == pytest.approx(LAM, rel=1e-6)
    assert any("physical-decay bound is active" in w for w in r.warnings)
    r2 = fit_model("mono_exp", t, a, 0.03 * a, decay_constant_per_h=LAM, allow_below_physical=True)
    assert r2.params[1] == pytest.approx(0.5 * LAM, rel=1e-6)
    assert any("below the physical decay constant" in w for w in r2.warnings)


def test_rising_last_point_is_flagged():
    t = np.array([4.0, 24.0, 48.0, 96.0])
    a = np.array([10.0, 30.0, 40.0, 45.0])
    r = fit_model("bi_exp_uptake", t, a, 0.05 * a, decay_constant_per_h=LAM)
    assert any("higher than the one before" in w for w in r.warnings)


# --- input errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "t,a,s,match",
    [
        ([4.0, 24.0, 96.0], [30.0, -1.0, 10.0], [1.0, 1.0, 1.0], "activities must be > 0"),
        ([4.0, 24.0, 96.0], [30.0, 0.0, 10.0], [1.0, 1.0, 1.0], "activities must be > 0"),
        ([4.0, 24.0, 96.0], [30.0, math.nan, 10.0], [1.0, 1.0, 1.0], "non-finite"),
        ([4.0, math.inf, 96.0], [30.0, 20.0, 10.0], [1.0, 1.0, 1.0], "non-finite"),
        ([0.0, 24.0, 96.0], [30.0, 20.0, 10.0], [1.0, 1.0, 1.0], "times must be > 0"),
        ([-2.0, 24.0, 96.0], [30.0, 20.0, 10.0], [1.0, 1.0, 1.0], "times must be > 0"),
        ([4.0, 24.0, 24.0], [30.0, 20.0, 10.0], [1.0, 1.0, 1.0], "same time"),
        ([4.0, 24.0, 96.0], [30.0, 20.0], [1.0, 1.0], "same length"),
        ([4.0, 24.0, 96.0], [30.0, 20.0, 10.0], [1.0, 0.0, 1.0], "uncertainties must be > 0"),
        ([4.0, 24.0, 96.0], [30.0, 20.0, 10.0], 1.0, "one standard uncertainty per activity"),
        ([], [], [], "no measurements"),
    ],
)
def test_bad_input_errors(t, a, s, match):
    with pytest.raises(InputError, match=match):
        fit_model("mono_exp", t, a, s, decay_constant_per_h=LAM)
    with pytest.raises(InputError, match=match):
        fit_auto(t, a, s, decay_constant_per_h=LAM)


def test_bad_decay_constant():
    with pytest.raises(InputError, match="decay_constant_per_h"):
        fit_model("mono_exp", [4.0, 24.0], [3.0, 2.0], [0.1, 0.1], decay_constant_per_h=0.0)


def test_too_few_points_for_model():
    with pytest.raises(FitError, match="needs at least 5 time points; got 4"):
        fit_model("tri_exp", [4.0, 24.0, 48.0, 96.0], [10.0, 30.0, 20.0, 10.0], [1.0] * 4, decay_constant_per_h=LAM)


def test_unsorted_times_are_sorted_with_warning():
    t, p = TRUTH["mono_exp"]
    a = _curve("mono_exp", t, p)
    order = [2, 0, 3, 1]
    r = fit_model("mono_exp", t[order], a[order], 0.05 * a[order], decay_constant_per_h=LAM)
    np.testing.assert_allclose(r.times_h, t)
    np.testing.assert_allclose(r.activities_mbq, a)
    assert any("not in increasing order" in w for w in r.warnings)
    assert r.tia_mbq_h == pytest.approx(7213.475, abs=1e-2)


def test_unknown_model_name():
    with pytest.raises(InputError, match="valid models"):
        fit_model("mono", [4.0, 24.0], [3.0, 2.0], [0.1, 0.1], decay_constant_per_h=LAM)


def test_result_is_immutable_and_json_serialisable():
    t, p = TRUTH["bi_exp_uptake"]
    a = _curve("bi_exp_uptake", t, p)
    r = fit_auto(t, a * (1 + 0.02 * np.sin(np.arange(t.size))), 0.03 * a, decay_constant_per_h=LAM)
    with pytest.raises(Exception):
        r.tia_mbq_h = 1.0  # frozen
    with pytest.raises(ValueError):
        r.params[0] = 1.0  # read-only array
    doc = json.loads(json.dumps(r.to_json()))
    assert doc["tia"]["unit"] == "MBq h"
    assert doc["model"] == r.model and len(doc["candidates"]) == 4
    assert np.array(doc["covariance"]).shape == (len(r.params),) * 2
    q = r.tia_quantity()
    assert q.value == r.tia_mbq_h and q.unit == "MBq h"
