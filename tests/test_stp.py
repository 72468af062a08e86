"""Tests of the single-time-point methods and the population kinetics library.

References for the checks: mono-exponential analytic truth (TIA = A0 T_eff / ln 2), the
closed-form Hänscheid ratio R(x) = x 2^{1-x} (derived in mrtdose.kinetics.stp; exact at x = 1 and
x = 2, maximum 2/(e ln 2) at x = 1/ln 2), and Monte Carlo sampling of the log-normal population.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mrtdose.errors import InputError
from mrtdose.kinetics.population import POPULATION_KINETICS, get_population_kinetics
from mrtdose.kinetics.stp import (
    LOGNORMAL_Z_MAX,
    hanscheid,
    hanscheid_ratio,
    lognormal_expectation,
    lognormal_parameters,
    madsen,
    population_prior,
)

LN2 = math.log(2.0)


def _mono(a0, teff, t):
    return a0 * 2.0 ** (-t / teff)


# --- Hänscheid ----------------------------------------------------------------------------------


@pytest.mark.parametrize("teff", [30.0, 50.0, 120.0])
@pytest.mark.parametrize("multiple", [1.0, 2.0])
def test_hanscheid_exact_at_teff_and_twice_teff(teff, multiple):
    """2t/ln2 = e^{lambda t}/lambda  <=>  x 2^{1-x} = 1 with x = t/T_eff: x = 1 and x = 2."""
    t = multiple * teff
    r = hanscheid(t, _mono(100.0, teff, t), 1.0)
    assert r.tia_mbq_h == pytest.approx(100.0 * teff / LN2, rel=1e-12)


def test_hanscheid_hand_worked():
    """A0 = 100 MBq, T_eff = 50 h, measured at t = T_eff = 50 h: A = 50 MBq;
    TIA = 50 * 2 * 50 / ln 2 = 7213.475 MBq h = A0 T_eff / ln 2."""
    assert hanscheid(50.0, 50.0, 0.0).tia_mbq_h == pytest.approx(7213.475, abs=1e-3)


def test_hanscheid_largest_overestimate():
    """Max of R(x) = x 2^{1-x} at x = 1/ln 2 (dR/dx = 0): R = 2/(e ln 2) = 1.0615."""
    teff = 50.0
    t = teff / LN2
    r = hanscheid(t, _mono(100.0, teff, t), 0.0)
    assert r.tia_mbq_h / (100.0 * teff / LN2) == pytest.approx(2 / (math.e * LN2), rel=1e-12)
    assert 2 / (math.e * LN2) == pytest.approx(1.0615, abs=1e-4)
    x = np.linspace(0.1, 5, 10001)
    assert np.max(hanscheid_ratio(x)) == pytest.approx(2 / (math.e * LN2), rel=1e-7)


def test_hanscheid_approximation_uncertainty_with_population_matches_monte_carlo():
    """RMS of (exact/approx - 1) over log-normal T_eff samples (Monte Carlo, 10^6 samples,
    relative SE of an RMS ~ 1e-3) vs the quadrature; tolerance 2 %."""
    t, a, teff, sd = 72.0, 30.0, 56.0, 13.0
    r = hanscheid(t, a, 0.5, effective_half_life_h=teff, effective_half_life_sd_h=sd)
    mu, sig = lognormal_parameters(teff, sd)
    T = np.exp(mu + sig * np.random.default_rng(7).standard_normal(1_000_000))
    rms = math.sqrt(np.mean((1 / hanscheid_ratio(t / T) - 1) ** 2))
    assert r.components["approximation"] / r.tia_mbq_h == pytest.approx(rms, rel=0.02)
    assert r.components["activity"] == pytest.approx(0.5 * 2 * t / LN2)
    assert r.uncertainty_mbq_h == pytest.approx(math.hypot(*r.components.values()))


def test_hanscheid_default_window_is_stated():
    r = hanscheid(96.0, 20.0, 1.0)
    assert r.components["approximation"] > 0
    assert any("0.75 and 2.5" in s for s in r.assumptions)
    # uniform-window RMS computed independently by a fine Riemann sum
    x = np.linspace(0.75, 2.5, 200001)
    rms = math.sqrt(np.mean((1 / hanscheid_ratio(x) - 1) ** 2))
    assert r.components["approximation"] / r.tia_mbq_h == pytest.approx(rms, rel=1e-4)
    with pytest.raises(InputError, match="time_over_teff_window"):
        hanscheid(96.0, 20.0, 1.0, time_over_teff_window=(2.0, 1.0))


def test_hanscheid_warns_far_from_teff():
    r = hanscheid(20.0, 50.0, 1.0, effective_half_life_h=60.0, effective_half_life_sd_h=5.0)
    assert any("outside" in w for w in r.warnings)


# --- Madsen ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [4.0, 24.0, 96.0, 168.0])
def test_madsen_exact_for_mono_exp(t):
    teff = 56.0
    r = madsen(t, _mono(100.0, teff, t), 2.0, teff)
    assert r.tia_mbq_h == pytest.approx(100.0 * teff / LN2, rel=1e-12)
    assert r.components["activity"] == pytest.approx(2.0 * r.tia_per_activity_h)
    assert r.components["population_spread"] == 0.0


def test_madsen_population_spread_first_order():
    """dTIA/dT_eff against a central finite difference of the TIA (relative step 1e-6)."""
    t, a, teff, u = 96.0, 25.0, 56.0, 13.0
    r = madsen(t, a, 0.0, teff, u)
    h = 1e-6 * teff
    d = (madsen(t, a, 0.0, teff + h).tia_mbq_h - madsen(t, a, 0.0, teff - h).tia_mbq_h) / (2 * h)
    assert r.components["population_spread"] == pytest.approx(abs(d) * u, rel=1e-6)
    # at t = T_eff/ln2 (lambda t = 1) the TIA is stationary in T_eff: no first-order spread
    r0 = madsen(teff / LN2, a, 0.0, teff, u)
    assert r0.components["population_spread"] == pytest.approx(0.0, abs=1e-9 * r0.tia_mbq_h)


# --- population prior ------------------------------------------------------------------------


def _mc_tia(t, a, ua, teff, sd, n=2_000_000, seed=42):
    rng = np.random.default_rng(seed)
    mu, sig = lognormal_parameters(teff, sd)
    T = np.exp(mu + sig * rng.standard_normal(n))
    A = a + ua * rng.standard_normal(n)
    return A * T / LN2 * np.exp(LN2 * t / T)


@pytest.mark.parametrize("t,teff,sd", [(72.0, 56.0, 13.0), (96.0, 56.0, 16.0), (24.0, 40.5, 9.6)])
def test_population_prior_matches_monte_carlo(t, teff, sd):
    """Mean and SD of A g(T) with T log-normal, by Monte Carlo (2*10^6 seeded samples) vs the
    quadrature. Tolerance for the mean: 5 standard errors; for the SD: 3 % (the TIA factor is
    right-skewed, its sample SD converges slowly)."""
    a, ua = 30.0, 1.5
    r = population_prior(t, a, ua, teff, sd)
    assert not r.warnings
    tia = _mc_tia(t, a, ua, teff, sd)
    assert r.tia_mbq_h == pytest.approx(tia.mean(), abs=5 * tia.std() / math.sqrt(tia.size))
    assert r.uncertainty_mbq_h == pytest.approx(tia.std(), rel=0.03)
    assert r.uncertainty_mbq_h == pytest.approx(math.hypot(*r.components.values()), rel=1e-12)


def test_population_prior_large_spread_is_flagged_as_lower_bound():
    """SD/mean = 0.36 at t = 1.7 T_eff: the spread of e^{c/T} keeps growing with the tail taken
    into account (the untruncated variance diverges). The mean still agrees with Monte Carlo; the
    reported SD is flagged and lies below the Monte Carlo SD, which reaches further into the tail."""
    t, a, ua, teff, sd = 96.0, 30.0, 1.5, 56.0, 20.0
    r = population_prior(t, a, ua, teff, sd)
    assert any("lower bound" in w for w in r.warnings)
    tia = _mc_tia(t, a, ua, teff, sd)
    assert r.tia_mbq_h == pytest.approx(tia.mean(), abs=5 * tia.std() / math.sqrt(tia.size))
    assert r.uncertainty_mbq_h < tia.std()


def test_population_prior_reduces_to_madsen_and_exceeds_it():
    t, a, ua, teff = 96.0, 25.0, 1.0, 56.0
    assert population_prior(t, a, ua, teff, 0.0).tia_mbq_h == pytest.approx(madsen(t, a, ua, teff).tia_mbq_h, rel=1e-12)
    # small spread: first order is adequate
    r1, m1 = population_prior(t, a, ua, teff, 1.0), madsen(t, a, ua, teff, 1.0)
    assert r1.uncertainty_mbq_h == pytest.approx(m1.uncertainty_mbq_h, rel=1e-3)
    # g(T) = T e^{c/T}/ln2 is convex, so E[g(T)] > g(E[T]) (Jensen): prior mean > Madsen
    assert population_prior(t, a, ua, teff, 15.0).tia_mbq_h > madsen(t, a, ua, teff, 15.0).tia_mbq_h


def test_population_prior_states_truncation():
    r = population_prior(96.0, 30.0, 1.0, 56.0, 13.0)
    assert any(f"{LOGNORMAL_Z_MAX:g} SD" in s for s in r.assumptions)


def test_lognormal_expectation_moments():
    """E[X] = mean and E[X^2] = mean^2 + sd^2 (up to the 5.7e-7 truncated mass)."""
    assert lognormal_expectation(lambda x: x, 56.0, 13.0) == pytest.approx(56.0, rel=1e-5)
    assert lognormal_expectation(lambda x: x**2, 56.0, 13.0) == pytest.approx(56.0**2 + 13.0**2, rel=1e-5)


# --- result object and errors -------------------------------------------------------------------


def test_stp_result_linear_in_activity_and_json():
    r = madsen(96.0, 25.0, 1.0, 56.0, 10.0)
    assert r.tia(50.0) == pytest.approx(2 * r.tia_mbq_h)
    doc = json.loads(json.dumps(r.to_json()))
    assert doc["tia"]["unit"] == "MBq h" and doc["references"]
    q = r.tia_quantity()
    assert q.value == r.tia_mbq_h and set(q.components) == {"activity", "population_spread", "approximation"}
    with pytest.raises(Exception):
        r.tia_mbq_h = 0.0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: hanscheid(0.0, 10.0, 1.0), "time_h"),
        (lambda: hanscheid(-4.0, 10.0, 1.0), "time_h"),
        (lambda: hanscheid(24.0, -10.0, 1.0), "activity_mbq"),
        (lambda: hanscheid(24.0, 0.0, 1.0), "activity_mbq"),
        (lambda: hanscheid(24.0, math.nan, 1.0), "finite"),
        (lambda: hanscheid(24.0, 10.0, -1.0), "activity_uncertainty_mbq"),
        (lambda: madsen(24.0, 10.0, 1.0, 0.0), "effective_half_life_h"),
        (lambda: madsen(24.0, 10.0, 1.0, 50.0, -1.0), "effective_half_life_uncertainty_h"),
        (lambda: population_prior(24.0, 10.0, 1.0, 50.0, -2.0), "effective_half_life_sd_h"),
        (lambda: population_prior(24.0, 10.0, 1.0, "long", 2.0), "must be a number"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()


# --- population kinetics --------------------------------------------------------------------


@pytest.mark.parametrize("rp", ["Lu-177-DOTATATE", "177Lu-DOTATATE", "[177Lu]Lu-DOTA-TATE", "Lutathera"])
@pytest.mark.parametrize("region", ["kidney", "Kidneys", "left_kidney", "right kidney"])
def test_population_aliases(rp, region):
    p = get_population_kinetics(rp, region)
    assert (p.radiopharmaceutical, p.region) == ("Lu-177-DOTATATE", "kidney")
    assert p.effective_half_life_h == 56.0 and p.effective_half_life_sd_h == 13.0
    assert p.doi and p.reference and p.cohort


def test_population_entries_are_cited_and_sane():
    assert POPULATION_KINETICS
    for (rp, region), p in POPULATION_KINETICS.items():
        assert p.reference and p.doi.startswith("10.") and p.method and p.cohort
        assert 0 < p.effective_half_life_sd_h < p.effective_half_life_h
        # usable by the STP methods
        r = population_prior(p.effective_half_life_h, 10.0, 0.5, p.effective_half_life_h, p.effective_half_life_sd_h)
        assert r.tia_mbq_h > 0
        assert json.dumps(p.to_json())
    psma = get_population_kinetics("Lu-177-PSMA-617", "whole body")
    assert psma.effective_half_life_h == 40.5 and psma.effective_half_life_sd_h == 9.6


def test_population_errors_list_what_exists():
    with pytest.raises(InputError, match="available: Lu-177-DOTATATE"):
        get_population_kinetics("I-131-mIBG", "kidney")
    with pytest.raises(InputError, match="known regions: .*kidney"):
        get_population_kinetics("Lu-177-DOTATATE", "pancreas")
    with pytest.raises(InputError, match="Available: .*Lu-177-DOTATATE / kidney"):
        get_population_kinetics("Lu-177-DOTATATE", "spleen")
