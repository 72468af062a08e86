"""Tests of mrtdose.physics.radiobiology against hand-worked values, published closed forms and
independent numerical integration (scipy.integrate.dblquad)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import integrate

from mrtdose.errors import InputError
from mrtdose.physics import radiobiology as rb
from mrtdose.quantities import Quantity

LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# Hand-worked example
# --------------------------------------------------------------------------------------------


def test_hand_worked_kidney_monoexponential():
    """D = 20 Gy, instantaneous uptake, T_eff = 50 h, T_rep = 2.8 h, alpha/beta = 2.6 Gy.

    By hand (Dale 1985, Br J Radiol 58:515): G = lambda/(lambda + mu) with lambda = ln2/50,
    mu = ln2/2.8, so G = (1/50)/(1/50 + 1/2.8) = 2.8/52.8 = 7/132 = 0.0530303...
    BED = 20 + (7/132) * 400 / 2.6 = 20 + 2800/343.2 = 20 + 8.158508158... = 28.158508158... Gy
    EQD2 = BED / (1 + 2/2.6) = BED * 2.6/4.6 = 15.91567852... Gy
    Exact rational arithmetic below; tolerance 1e-10 relative (float rounding only).
    """
    g_exact = Fraction(28, 10) / (Fraction(28, 10) + 50)
    assert g_exact == Fraction(7, 132)
    ab = Fraction(26, 10)
    bed_exact = 20 + g_exact * 400 / ab
    eqd2_exact = bed_exact / (1 + 2 / ab)

    g = rb.g_factor_exponentials([1.0], [LN2 / 50.0], 2.8)
    assert g == pytest.approx(float(g_exact), rel=1e-12)
    assert rb.g_factor_monoexponential(50.0, 2.8) == pytest.approx(float(g_exact), rel=1e-12)
    b = rb.bed(20.0, g, 2.6)
    assert b == pytest.approx(float(bed_exact), rel=1e-10)
    assert b == pytest.approx(28.158508158508, rel=1e-10)
    assert rb.eqd2(b, 2.6) == pytest.approx(float(eqd2_exact), rel=1e-10)

    res = rb.bed_from_exponentials(20.0, [3.7], [LN2 / 50.0], "kidney")
    assert res.bed_gy == pytest.approx(float(bed_exact), rel=1e-10)
    assert res.eqd2_gy == pytest.approx(float(eqd2_exact), rel=1e-10)
    assert res.g_factor == pytest.approx(float(g_exact), rel=1e-12)
    assert res.tissue.name == "kidney"
    assert any("Dale" in r for r in res.references)
    with pytest.raises(Exception):
        res.bed_gy = 0.0  # frozen


def test_derivatives_match_finite_differences():
    d, g, ab = 20.0, 7 / 132, 2.6
    h = 1e-5
    num = (rb.bed(d + h, g, ab) - rb.bed(d - h, g, ab)) / (2 * h)
    assert rb.bed_derivative_dose(d, g, ab) == pytest.approx(num, rel=1e-8)
    assert rb.bed_derivative_dose(d, g, ab) == pytest.approx(1 + 2 * g * d / ab, rel=1e-15)
    numg = (rb.bed(d, g + h, ab) - rb.bed(d, g - h, ab)) / (2 * h)
    assert rb.bed_derivative_g_factor(d, ab) == pytest.approx(numg, rel=1e-8)


def test_bed_quantity_propagates_uncertainty():
    t = rb.get_tissue("kidney")
    q = rb.bed_quantity(Quantity(20.0, 2.0, "Gy", components={"tia": 1.5, "s": 1.0}), 7 / 132, t)
    c = 1 + 2 * (7 / 132) * 20 / 2.6
    assert q.value == pytest.approx(rb.bed(20.0, 7 / 132, 2.6))
    assert q.uncertainty == pytest.approx(2.0 * c)
    assert q.components["tia"] == pytest.approx(1.5 * c)
    with pytest.raises(InputError):
        rb.bed_quantity(Quantity(20.0, 2.0, "mGy"), 0.05, t)


# --------------------------------------------------------------------------------------------
# G factor: limits and published closed forms
# --------------------------------------------------------------------------------------------


def test_g_limits_fast_and_slow_delivery():
    # Instantaneous delivery: T_eff -> 0 gives G -> 1 (acute dose, BED = D(1 + D/(a/b))).
    assert rb.g_factor_monoexponential(1e-6, 2.8) == pytest.approx(1.0, abs=1e-6)
    # Very slow delivery: T_eff >> T_rep gives G -> 0 (G ~ T_rep/T_eff).
    g_slow = rb.g_factor_monoexponential(1e6, 2.8)
    assert g_slow == pytest.approx(2.8e-6, rel=1e-5)
    # Monotonic in T_eff
    gs = [rb.g_factor_monoexponential(t, 1.5) for t in (1, 10, 100, 1000)]
    assert all(a > b for a, b in zip(gs, gs[1:]))


def _dblquad_g(rate_fn, mu, t_max=np.inf):
    """G from the defining double integral (independent of the code under test)."""
    d, _ = integrate.quad(rate_fn, 0, t_max, limit=500)
    val, _ = integrate.dblquad(
        lambda w, t: rate_fn(t) * rate_fn(w) * math.exp(-mu * (t - w)),
        0, t_max, 0, lambda t: t, epsabs=1e-13, epsrel=1e-10,
    )
    return 2 * val / d**2


@pytest.mark.parametrize(
    "t_eff_h, t_up_h, t_rep_h",
    [(60.0, 1.5, 2.8), (40.0, 10.0, 2.8), (160.0, 0.5, 1.5), (50.0, 49.0, 0.5)],
)
def test_uptake_clearance_closed_form_vs_double_integral(t_eff_h, t_up_h, t_rep_h):
    """R(t) = e^{-l t} - e^{-z t} (uptake with rate z, clearance l; Baechler et al. 2008, Med
    Phys 35:1123). Closed form vs scipy dblquad of the defining integral (Sachs et al. 1997,
    eq. 2); tolerance 1e-7 relative (dblquad's requested accuracy is 1e-10)."""
    lam, z = LN2 / t_eff_h, LN2 / t_up_h
    mu = LN2 / t_rep_h
    g_closed = rb.g_factor_exponentials([2.0, -2.0], [lam, z], t_rep_h)
    g_ref = _dblquad_g(lambda t: math.exp(-lam * t) - math.exp(-z * t), mu)
    assert g_closed == pytest.approx(g_ref, rel=1e-7)
    # with uptake, G is below the instantaneous-uptake value l/(l+mu)
    assert g_closed < lam / (lam + mu)


def test_three_exponentials_vs_double_integral():
    a = [5.0, -6.0, 1.0]
    lam = [LN2 / 30.0, LN2 / 2.0, LN2 / 200.0]
    mu = LN2 / 2.8
    g = rb.g_factor_exponentials(a, lam, 2.8)
    ref = _dblquad_g(lambda t: sum(ai * math.exp(-li * t) for ai, li in zip(a, lam)), mu)
    assert g == pytest.approx(ref, rel=1e-7)


def test_repair_rate_equal_to_clearance_rate_is_not_singular():
    # mu = l_j makes the intermediate 1/(mu - l_j) singular; the closed form is not.
    g = rb.g_factor_exponentials([1.0, -1.0], [LN2 / 2.8, LN2 / 0.7], 2.8)
    ref = _dblquad_g(lambda t: math.exp(-LN2 / 2.8 * t) - math.exp(-LN2 / 0.7 * t), LN2 / 2.8)
    assert g == pytest.approx(ref, rel=1e-7)


def test_g_is_scale_invariant():
    g1 = rb.g_factor_exponentials([1.0, -1.0], [0.01, 0.5], 2.8)
    g2 = rb.g_factor_exponentials([123.0, -123.0], [0.01, 0.5], 2.8)
    assert g1 == pytest.approx(g2, rel=1e-14)


def test_numeric_constant_rate_vs_lea_catcheside():
    """Constant dose rate for a time T: G = 2(x - 1 + e^{-x})/x^2, x = mu T (Lea & Catcheside
    1942; Dale 1985, Br J Radiol 58:515, continuous irradiation). Tolerance 1e-4 relative: the
    step at t = T is resolved to one grid interval (error O(dt/T), here dt/T = 1e-4)."""
    for t_rep, duration in ((2.8, 10.0), (0.5, 1.0), (1.5, 100.0)):
        mu = LN2 / t_rep
        x = mu * duration
        ref = 2 * (x - 1 + math.exp(-x)) / x**2
        g = rb.g_factor_numeric(lambda t: np.where(t <= duration, 1.0, 0.0), t_rep, 2 * duration)
        assert g == pytest.approx(ref, rel=1e-4)


def test_numeric_vs_closed_form_exponentials():
    """Recursive convolution vs the closed form for uptake-clearance kinetics; tolerance 1e-6
    relative (trapezoidal error O(dt^2), dt = 0.01 h)."""
    lam, z = LN2 / 60.0, LN2 / 1.5
    g_closed = rb.g_factor_exponentials([1.0, -1.0], [lam, z], 2.8)
    g_num = rb.g_factor_numeric(lambda t: np.exp(-lam * t) - np.exp(-z * t), 2.8, 2000.0)
    assert g_num == pytest.approx(g_closed, rel=1e-6)


def test_numeric_trapezoid_with_tail_vs_double_integral():
    """Ramp up over 2 h, plateau to 6 h, then exponential tail (T1/2 = 20 h): numerical G vs
    dblquad of the definition; tolerance 1e-5 relative (kinks resolved to the grid)."""
    lam = LN2 / 20.0

    def r_scalar(t):
        if t < 2.0:
            return t / 2.0
        if t < 6.0:
            return 1.0
        return math.exp(-lam * (t - 6.0))

    def r_vec(t):
        t = np.asarray(t, dtype=float)
        return np.where(t < 2.0, t / 2.0, np.where(t < 6.0, 1.0, np.exp(-lam * (t - 6.0))))

    mu = LN2 / 2.8
    # analytic D and dblquad split at the kinks for accuracy
    ref = _dblquad_piecewise(r_scalar, mu, (0.0, 2.0, 6.0, 600.0))
    g = rb.g_factor_numeric(r_vec, 2.8, 600.0, n_steps=300_000)
    assert g == pytest.approx(ref, rel=1e-5)


def _dblquad_piecewise(rate_fn, mu, knots):
    d = sum(integrate.quad(rate_fn, a, b)[0] for a, b in zip(knots, knots[1:]))
    total = 0.0
    for t0, t1 in zip(knots, knots[1:]):
        val, _ = integrate.dblquad(
            lambda w, t: rate_fn(t) * rate_fn(w) * math.exp(-mu * (t - w)),
            t0, t1, 0, lambda t: t, epsabs=1e-13, epsrel=1e-10,
        )
        total += val
    return 2 * total / d**2


def test_numeric_rejects_truncated_curve():
    with pytest.raises(InputError, match="t_max_h"):
        rb.g_factor_numeric(lambda t: np.exp(-0.001 * t), 2.8, 100.0)


# --------------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------------


def test_bad_inputs():
    with pytest.raises(InputError, match="rate constants"):
        rb.g_factor_exponentials([1.0], [0.0], 2.8)
    with pytest.raises(InputError, match="as many"):
        rb.g_factor_exponentials([1.0, 2.0], [0.1], 2.8)
    with pytest.raises(InputError, match="repair half-time"):
        rb.g_factor_exponentials([1.0], [0.1], 0.0)
    with pytest.raises(InputError, match="negative"):
        rb.g_factor_exponentials([1.0, -1.2], [0.01, 0.5], 2.8)  # D > 0 but R(0) < 0
    with pytest.raises(InputError, match="alpha/beta"):
        rb.bed(10.0, 0.1, 0.0)
    with pytest.raises(InputError, match="G factor"):
        rb.bed(10.0, 1.5, 2.6)
    with pytest.raises(InputError, match="dose"):
        rb.bed(-1.0, 0.1, 2.6)


# --------------------------------------------------------------------------------------------
# Cycles
# --------------------------------------------------------------------------------------------


def test_cumulative_bed_adds_cycles():
    """Complete repair between cycles, no repopulation (Bodei 2008; Wessels 2008): BEDs add.
    Four cycles of 5 Gy with G = 0.05 (kidney, alpha/beta 2.6): 4 * (5 + 0.05*25/2.6)."""
    doses = [5.0, 5.0, 5.0, 5.0]
    expected = 4 * (5.0 + 0.05 * 25.0 / 2.6)
    assert rb.cumulative_bed(doses, 0.05, 2.6) == pytest.approx(expected, rel=1e-14)
    assert rb.cumulative_bed(doses, [0.05] * 4, 2.6) == pytest.approx(expected, rel=1e-14)
    assert rb.cumulative_dose(doses) == 20.0
    assert rb.cumulative_eqd2(doses, 0.05, 2.6) == pytest.approx(expected / (1 + 2 / 2.6))
    # Fractionating (cycles) gives a lower BED than the same dose in one cycle.
    assert rb.cumulative_bed(doses, 0.05, 2.6) < rb.bed(20.0, 0.05, 2.6)
    with pytest.raises(InputError, match="one G factor per cycle"):
        rb.cumulative_bed(doses, [0.05, 0.05], 2.6)


def test_eqd2_identity_for_2gy_fractions():
    # 30 x 2 Gy acute fractions: BED = 60 (1 + 2/ab) -> EQD2 = 60 Gy for any alpha/beta.
    for ab in (1.5, 2.6, 10.0):
        assert rb.eqd2(rb.cumulative_bed([2.0] * 30, 1.0, ab), ab) == pytest.approx(60.0)


# --------------------------------------------------------------------------------------------
# Libraries
# --------------------------------------------------------------------------------------------


def test_tissue_library_values_and_citations():
    k = rb.get_tissue("kidney")
    assert (k.alpha_beta_gy, k.repair_half_time_h) == (2.6, 2.8)
    assert any("Bodei" in r and "35:1847" in r for r in k.references)
    assert any("Wessels" in r and "49:1884" in r for r in k.references)
    assert rb.get_tissue("Prostate Cancer").alpha_beta_gy == 1.5
    assert rb.get_tissue("tumour").alpha_beta_gy == 10.0
    for t in rb.TISSUES.values():
        assert t.references and t.notes
        assert t.repair_rate_per_h == pytest.approx(LN2 / t.repair_half_time_h)
    with pytest.raises(TypeError):
        rb.TISSUES["x"] = k  # read-only


def test_unknown_tissue_lists_known_names():
    with pytest.raises(InputError) as e:
        rb.get_tissue("spleen")
    assert "kidney" in str(e.value) and "liver" in str(e.value)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("kidneys", "kidney"), ("left_kidney", "kidney"), ("Kidney_R", "kidney"),
        ("KIDNEY-L", "kidney"), ("right kidney", "kidney"), ("liver", "liver"),
        ("normal_liver", "liver"), ("red_marrow", None), ("bone_marrow", None),
        ("spleen", None), ("parotid_L", None), ("salivary", None), ("bladder", None),
    ],
)
def test_tissue_for_organ_regions(name, expected):
    t = rb.tissue_for_region(name, "organ")
    assert (t.name if t else None) == expected


def test_tissue_for_lesions():
    assert rb.tissue_for_region("lesion_3", "lesion").name == "tumour"
    assert rb.tissue_for_region("liver_met", "lesion").name == "tumour"
    assert rb.tissue_for_region("L1", "lesion") is None
    assert rb.tissue_for_region("L1", "lesion", radiopharmaceutical="Lu-177-DOTATATE").name == "tumour"
    assert (
        rb.tissue_for_region("L1", "lesion", radiopharmaceutical="Lu-177-PSMA-617").name
        == "prostate_cancer"
    )
    assert rb.tissue_for_region("psma_node_2", "lesion").name == "prostate_cancer"
    with pytest.raises(InputError):
        rb.tissue_for_region("kidney", "tissue")


def test_dose_limits():
    lim = rb.get_dose_limit("kidney_bed_no_risk_factors")
    assert (lim.quantity, lim.value_gy, lim.tissue) == ("BED", 40.0, "kidney")
    assert any("Bodei" in r for r in lim.references)
    assert rb.DOSE_LIMITS["kidney_bed_risk_factors"].value_gy == 28.0
    assert rb.DOSE_LIMITS["kidney_absorbed_dose"].value_gy == 23.0
    assert rb.DOSE_LIMITS["red_marrow_absorbed_dose"].value_gy == 2.0
    for limit in rb.DOSE_LIMITS.values():
        assert limit.references
        if limit.quantity == "BED":
            assert limit.tissue in rb.TISSUES
    with pytest.raises(InputError, match="known"):
        rb.get_dose_limit("heart")
