"""Tests of mrtdose.imaging.planar: conjugate-view quantification (MIRD Pamphlet 16, Siegel et
al. 1999, J Nucl Med 40:37S), TEW scatter correction (Ogawa et al. 1991, IEEE TMI 10:408),
background subtraction (Buijs et al. 1998, J Nucl Med 39:2167) and hybrid planar/SPECT scaling
(Koral et al. 2000, J Nucl Med 41:1579).

Ground truth is analytic: count rates of sources in a uniform attenuating slab are computed here
by direct integration of exp(-mu x) (scipy quadrature), independently of the module's formulas;
Poisson uncertainties are checked by seeded Monte Carlo."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy import integrate

from mrtdose.errors import InputError
from mrtdose.imaging import planar
from mrtdose.imaging.calibration import CalibrationRecord
from mrtdose.quantities import Quantity

SENS = 12.0  # planar sensitivity in air, cps/MBq
DUR = 600.0  # s


def slab_counts(activity_mbq, depth_cm, source_thickness_cm, body_thickness_cm, mu):
    """Anterior and posterior counts of a uniform source region (thickness t, front face at
    ``depth_cm``) in a uniform slab: C = S A dur (1/t) int exp(-mu x) dx, by quadrature; a point
    source for t = 0."""
    t, big_t = source_thickness_cm, body_thickness_cm
    if t == 0:
        fa = math.exp(-mu * depth_cm)
        fp = math.exp(-mu * (big_t - depth_cm))
    else:
        fa = integrate.quad(lambda x: math.exp(-mu * x), depth_cm, depth_cm + t)[0] / t
        fp = integrate.quad(lambda x: math.exp(-mu * (big_t - x)), depth_cm, depth_cm + t)[0] / t
    return SENS * activity_mbq * DUR * fa, SENS * activity_mbq * DUR * fp


# --------------------------------------------------------------------------- conjugate view


@pytest.mark.parametrize("depth_cm", [0.0, 3.0, 11.0, 21.5])
def test_point_source_in_slab_gives_exact_activity(depth_cm):
    """Lu-177 208 keV, 22 cm of soft tissue, narrow-beam mu: the geometric mean removes the depth
    dependence exactly (MIRD 16)."""
    mu = planar.narrow_beam_mu_per_cm(208.4, "soft_tissue")
    # plausibility: NIST XCOM water at 200 keV is 0.1370 cm^2/g; soft tissue is 1.06 g/mL
    assert 0.13 < mu < 0.15
    ca, cp = slab_counts(750.0, depth_cm, 0.0, 22.0, mu)
    tf = planar.transmission_from_thickness(22.0, mu)
    a = planar.conjugate_view_activity(ca, cp, acquisition_duration_s=DUR, sensitivity_cps_per_mbq=SENS, transmission=tf)
    assert a.value == pytest.approx(750.0, rel=1e-12)
    assert a.unit == "MBq" and "MIRD Pamphlet 16" in a.method


@pytest.mark.parametrize("depth_cm,thickness_cm", [(2.0, 8.0), (7.0, 12.0), (0.0, 20.0)])
def test_extended_source_exact_with_self_attenuation_factor(depth_cm, thickness_cm):
    """Uniform source of thickness t: sqrt(C_A C_P / T) = S A sinh(mu t/2)/(mu t/2), which f
    corrects exactly; without f the activity is overestimated."""
    mu, big_t = 0.12, 20.0
    ca, cp = slab_counts(400.0, depth_cm, thickness_cm, big_t, mu)
    f = planar.self_attenuation_factor(mu, thickness_cm)
    tf = math.exp(-mu * big_t)
    a = planar.conjugate_view_activity(ca, cp, acquisition_duration_s=DUR, sensitivity_cps_per_mbq=SENS,
                                       transmission=tf, self_attenuation=f)
    assert a.value == pytest.approx(400.0, rel=1e-10)
    a0 = planar.conjugate_view_activity(ca, cp, acquisition_duration_s=DUR, sensitivity_cps_per_mbq=SENS, transmission=tf)
    x = mu * thickness_cm / 2
    assert a0.value == pytest.approx(400.0 * math.sinh(x) / x, rel=1e-10)


def test_self_attenuation_factor_values():
    assert planar.self_attenuation_factor(0.1, 0.0) == 1.0
    assert planar.self_attenuation_factor(0.1, 10.0) == pytest.approx(0.5 / math.sinh(0.5), rel=1e-15)
    assert planar.self_attenuation_factor(0.15, 1e-9) == pytest.approx(1.0)


def test_conjugate_view_uncertainty_components_hand_worked():
    """C_A = 40 000, C_P = 10 000 counts in 100 s; S = 10 +- 0.3 cps/MBq; T = 0.25 +- 0.01.
    A = sqrt(400 * 100 / 0.25) / 10 = 40 MBq.
    counting: anterior 40 * 0.5 * sqrt(1/40000) = 0.1, posterior 40 * 0.5 * 0.01 = 0.2;
    calibration 40 * 0.03 = 1.2; transmission 40 * 0.5 * 0.04 = 0.8.
    u = sqrt(0.01 + 0.04 + 1.44 + 0.64) = 1.459452."""
    a = planar.conjugate_view_activity(40000, 10000, acquisition_duration_s=100, sensitivity_cps_per_mbq=10.0,
                                       sensitivity_uncertainty_cps_per_mbq=0.3, transmission=Quantity(0.25, 0.01, "1"))
    assert a.value == pytest.approx(40.0, rel=1e-12)
    assert dict(a.components) == pytest.approx({"counting (anterior)": 0.1, "counting (posterior)": 0.2,
                                                "calibration": 1.2, "transmission": 0.8}, rel=1e-12)
    assert a.uncertainty == pytest.approx(1.459452, rel=1e-6)


def test_conjugate_view_with_calibration_record_and_decay():
    rec = CalibrationRecord(camera="c", collimator="MEGP", nuclide="I-131",
                            window={"name": "364", "lower_kev": 328, "upper_kev": 400},
                            sensitivity_cps_per_mbq=10.0, sensitivity_uncertainty_cps_per_mbq=0.2,
                            valid_from="2024-01-01", method="point source in air")
    half_life_h = 0.5  # short, so that decay during the 20-min view matters
    lam = math.log(2) / (half_life_h * 3600)
    dur = 1200.0
    # true activity at the start A0 = 50 MBq, point source at 6 of 20 cm, mu = 0.11/cm
    mean_frac = integrate.quad(lambda t: math.exp(-lam * t), 0, dur)[0] / dur
    ca = 10.0 * 50.0 * dur * mean_frac * math.exp(-0.11 * 6)
    cp = 10.0 * 50.0 * dur * mean_frac * math.exp(-0.11 * 14)
    a = planar.conjugate_view_activity(ca, cp, acquisition_duration_s=dur, sensitivity_cps_per_mbq=rec,
                                       transmission=math.exp(-2.2), half_life_h=half_life_h)
    assert a.value == pytest.approx(50.0, rel=1e-10)
    assert a.components["calibration"] == pytest.approx(50.0 * 0.02, rel=1e-9)


def test_conjugate_view_poisson_uncertainty_by_monte_carlo():
    """Seeded Monte Carlo: Poisson counts drawn 20 000 times; the sample sd of the activity agrees
    with the propagated counting uncertainty to 3 % (MC standard error of an sd: 0.5 %)."""
    mu, big_t = 0.13, 22.0
    ca, cp = slab_counts(5.0, 8.0, 0.0, big_t, mu)
    tf = math.exp(-mu * big_t)
    ref = planar.conjugate_view_activity(ca, cp, acquisition_duration_s=DUR, sensitivity_cps_per_mbq=SENS, transmission=tf)
    rng = np.random.default_rng(1999)
    na, npst = rng.poisson(ca, 20000), rng.poisson(cp, 20000)
    sims = np.sqrt(na / DUR * npst / DUR / tf) / SENS
    assert np.std(sims, ddof=1) == pytest.approx(ref.uncertainty, rel=0.03)
    assert np.mean(sims) == pytest.approx(ref.value, rel=1e-3)


def test_conjugate_view_bad_input():
    kw = dict(acquisition_duration_s=100, sensitivity_cps_per_mbq=10.0)
    with pytest.raises(InputError, match="transmission"):
        planar.conjugate_view_activity(100, 100, transmission=1.5, **kw)
    with pytest.raises(InputError, match="positive"):
        planar.conjugate_view_activity(0, 100, transmission=0.2, **kw)
    with pytest.raises(InputError, match="counts"):
        planar.conjugate_view_activity(-5, 100, transmission=0.2, **kw)
    with pytest.raises(InputError, match="self-attenuation"):
        planar.conjugate_view_activity(100, 100, transmission=0.2, self_attenuation=0.0, **kw)


# --------------------------------------------------------------------------- transmission


def test_transmission_from_counts_and_thickness():
    """Transmission flood: 2500 counts with the patient, 10 000 without, equal durations:
    T = 0.25 +- 0.25 sqrt(1/2500 + 1/10000) = 0.005590. With durations 50 s and 100 s: rates 50
    and 100 cps -> T = 0.5."""
    q = planar.transmission_from_counts(2500, 10000)
    assert q.value == 0.25 and q.uncertainty == pytest.approx(0.25 * math.sqrt(1 / 2500 + 1 / 10000), rel=1e-12)
    assert planar.transmission_from_counts(2500, 5000, duration_with_s=50, duration_without_s=100).value == pytest.approx(1.0)
    with pytest.raises(InputError, match="swapped"):
        planar.transmission_from_counts(10000, 2500)
    t = planar.transmission_from_thickness(20.0, 0.12, thickness_uncertainty_cm=0.5, mu_uncertainty_per_cm=0.006)
    assert t.value == pytest.approx(math.exp(-2.4))
    # u^2 = e^{-4.8} ((20 * 0.006)^2 + (0.12 * 0.5)^2)
    assert t.uncertainty == pytest.approx(math.exp(-2.4) * math.hypot(0.12, 0.06), rel=1e-12)
    with pytest.raises(InputError, match="implausible"):
        planar.transmission_from_thickness(20.0, 12.0)  # 1/m given as 1/cm


# --------------------------------------------------------------------------- TEW


def _spectrum_counts(lo_kev, hi_kev, *, primary, peak_window, alpha, beta):
    """Counts in a window: primary photons (all inside the peak window) plus a scatter continuum
    with density alpha + beta E counts/keV (integrated by quadrature)."""
    scatter = integrate.quad(lambda e: alpha + beta * e, lo_kev, hi_kev)[0]
    inside = peak_window[0] <= lo_kev and hi_kev <= peak_window[1]
    return scatter + (primary if inside else 0.0)


def test_tew_recovers_known_primary_for_linear_scatter():
    """Lu-177 208 keV peak window 187.2-228.8 keV (20 %) with 6 % side windows 174.72-187.2 and
    228.8-241.28 keV. For a scatter density linear in energy the
    trapezoid of Ogawa et al. is exact, so TEW returns the primary counts exactly."""
    peak = (187.2, 228.8)
    lower = (174.72, 187.2)
    upper = (228.8, 241.28)
    spec = dict(primary=50_000.0, peak_window=peak, alpha=900.0, beta=-3.0)
    cp = _spectrum_counts(*peak, **spec)
    cl = _spectrum_counts(*lower, **spec)
    cu = _spectrum_counts(*upper, **spec)
    true_scatter = integrate.quad(lambda e: 900.0 - 3.0 * e, *peak)[0]
    w = dict(lower_width_kev=lower[1] - lower[0], upper_width_kev=upper[1] - upper[0], peak_width_kev=peak[1] - peak[0])
    s = planar.tew_scatter_counts(cl, cu, **w)
    assert s.value == pytest.approx(true_scatter, rel=1e-10)
    prim = planar.tew_primary_counts(cp, cl, cu, **w)
    assert prim.value == pytest.approx(50_000.0, rel=1e-10)
    assert "Ogawa" in prim.method
    assert set(prim.components) == {"counting (peak window)", "counting (lower window)", "counting (upper window)"}


def test_tew_poisson_uncertainty_by_monte_carlo():
    w = dict(lower_width_kev=6.0, upper_width_kev=6.0, peak_width_kev=42.0)
    ref = planar.tew_primary_counts(10_000, 600, 120, **w)
    rng = np.random.default_rng(1991)
    n = 40_000
    sims = rng.poisson(10_000, n) - (rng.poisson(600, n) / 6.0 + rng.poisson(120, n) / 6.0) * 21.0
    assert np.std(sims, ddof=1) == pytest.approx(ref.uncertainty, rel=0.02)
    assert ref.uncertainty == pytest.approx(math.sqrt(10_000 + 21.0**2 * 720 / 36), rel=1e-12)


def test_tew_without_upper_window_and_clipping():
    """Tc-99m practice often sets the upper window to zero counts: C_s = C_l/W_l * W_p/2."""
    s = planar.tew_scatter_counts(300, 0, lower_width_kev=7.0, upper_width_kev=7.0, peak_width_kev=28.0)
    assert s.value == pytest.approx(600.0)
    clipped = planar.tew_primary_counts(500, 300, 0, lower_width_kev=7, upper_width_kev=7, peak_width_kev=28,
                                        clip_negative=True)
    assert clipped.value == 0.0 and clipped.uncertainty > 0
    with pytest.raises(InputError, match="width"):
        planar.tew_scatter_counts(1, 1, lower_width_kev=0, upper_width_kev=1, peak_width_kev=1)


# --------------------------------------------------------------------------- background


def test_thickness_corrected_background_is_exact_for_a_displacing_organ():
    """Unattenuated model: background activity fills the body (T = 22 cm) with b counts per px per
    cm; an organ of thickness t = 7 cm displaces background in its ROI. ROI counts =
    organ + b (T - t) A_roi; background region = b T A_bkg. The (1 - t/T) correction returns the
    organ counts exactly; plain area scaling over-subtracts b t A_roi."""
    b, big_t, t, a_roi, a_bkg, organ = 3.0, 22.0, 7.0, 400.0, 150.0, 80_000.0
    c_roi = organ + b * (big_t - t) * a_roi
    c_bkg = b * big_t * a_bkg
    q = planar.background_subtract(c_roi, c_bkg, roi_area_px=a_roi, background_area_px=a_bkg,
                                   organ_thickness_cm=t, body_thickness_cm=big_t)
    assert q.value == pytest.approx(organ, rel=1e-12)
    k = (1 - t / big_t) * a_roi / a_bkg
    assert q.uncertainty == pytest.approx(math.sqrt(c_roi + k * k * c_bkg), rel=1e-12)
    plain = planar.background_subtract(c_roi, c_bkg, roi_area_px=a_roi, background_area_px=a_bkg)
    assert plain.value == pytest.approx(organ - b * t * a_roi, rel=1e-12)
    with pytest.raises(InputError, match="both"):
        planar.background_subtract(c_roi, c_bkg, roi_area_px=1, background_area_px=1, organ_thickness_cm=3)
    with pytest.raises(InputError, match="organ thickness"):
        planar.background_subtract(c_roi, c_bkg, roi_area_px=1, background_area_px=1,
                                   organ_thickness_cm=30, body_thickness_cm=20)


def test_chain_scatter_background_conjugate_view_keeps_quantities():
    w = dict(lower_width_kev=6.0, upper_width_kev=6.0, peak_width_kev=42.0)
    ant = planar.background_subtract(planar.tew_primary_counts(90_000, 1200, 300, **w), 4000,
                                     roi_area_px=300, background_area_px=300)
    post = planar.background_subtract(planar.tew_primary_counts(50_000, 900, 200, **w), 3500,
                                       roi_area_px=300, background_area_px=300)
    assert ant.uncertainty > math.sqrt(90_000)  # the subtractions add variance
    a = planar.conjugate_view_activity(ant, post, acquisition_duration_s=DUR, sensitivity_cps_per_mbq=SENS,
                                       transmission=0.07)
    # relative counting uncertainty of the geometric mean: half the quadrature sum
    rel = 0.5 * math.hypot(ant.uncertainty / ant.value, post.uncertainty / post.value)
    assert a.uncertainty / a.value == pytest.approx(rel, rel=1e-12)


# --------------------------------------------------------------------------- hybrid


def test_hybrid_scaling_at_a_planar_time():
    """Planar 100, 80, 40 at 4, 24, 96 h; SPECT 2000 +- 100 MBq at 24 h: k = 25, scaled 2500, 2000,
    1000 MBq. At 24 h the scaled value *is* the SPECT value: u = 100, no planar component. At 4 h
    (planar u = 2 at each point): u^2 = (100/80 * 100)^2 + (25 * 2)^2 + (2000 * 100/80^2 * 2)^2
    = 125^2 + 50^2 + 62.5^2 -> u = 148.4."""
    planar_q = {4.0: Quantity(100.0, 2.0, "cps"), 24.0: Quantity(80.0, 2.0, "cps"), 96.0: Quantity(40.0, 2.0, "cps")}
    r = planar.hybrid_planar_spect_scaling(planar_q, Quantity(2000.0, 100.0, "MBq"), 24.0)
    assert [q.value for q in r.activities] == pytest.approx([2500.0, 2000.0, 1000.0], rel=1e-12)
    assert r.times_h == (-20.0, 0.0, 72.0)
    assert r.scale_factor.value == pytest.approx(25.0) and r.scale_factor.unit == "MBq/(cps)"
    mid = r.activities[1]
    assert mid.uncertainty == pytest.approx(100.0, rel=1e-6)
    assert "planar (relative)" not in mid.components
    first = r.activities[0]
    assert first.uncertainty == pytest.approx(math.sqrt(125**2 + 50**2 + 62.5**2), rel=1e-6)
    assert first.components["SPECT activity"] == pytest.approx(125.0, rel=1e-6)
    # correlation through the common scale factor: cov(A_0, A_2) = (P0 P2 / Pref^2) u_S^2 + ...
    assert r.covariance[0, 2] > 0 and r.covariance.shape == (3, 3)


def test_hybrid_scaling_interpolates_mono_exponentially():
    """Planar points from P(t) = 200 exp(-ln2 t / 50 h) at 2, 20, 70 h; SPECT at 40 h of 1000 MBq.
    The interpolated planar value at 40 h is exact for exponential data, so the scaled curve
    is 1000 exp(-ln2 (t - 40)/50)."""
    def p(t):
        return 200.0 * math.exp(-math.log(2) * t / 50.0)

    r = planar.hybrid_planar_spect_scaling([(70.0, p(70)), (2.0, p(2)), (20.0, p(20))], 1000.0, 40.0)
    assert r.times == (2.0, 20.0, 70.0)
    assert r.planar_at_reference == pytest.approx(p(40), rel=1e-12)
    for t, q in zip(r.times, r.activities):
        assert q.value == pytest.approx(1000.0 * math.exp(-math.log(2) * (t - 40) / 50.0), rel=1e-12)
    with pytest.raises(InputError, match="outside the planar times"):
        planar.hybrid_planar_spect_scaling({2.0: 1.0, 20.0: 0.8}, 1000.0, 40.0)


def test_hybrid_scaling_with_datetimes():
    t0 = datetime(2024, 3, 30, 10, 0, tzinfo=timezone.utc)
    pts = {t0 + timedelta(hours=h): v for h, v in [(1, 100.0), (24, 70.0), (72, 35.0)]}
    r = planar.hybrid_planar_spect_scaling(pts, Quantity(700.0, 35.0, "MBq"), t0 + timedelta(hours=24))
    assert r.times_h == pytest.approx((-23.0, 0.0, 48.0))
    assert [q.value for q in r.activities] == pytest.approx([1000.0, 700.0, 350.0])
    with pytest.raises(InputError, match="all be hours"):
        planar.hybrid_planar_spect_scaling(pts, 700.0, 24.0)
    with pytest.raises(InputError, match="no time zone"):
        planar.hybrid_planar_spect_scaling(pts, 700.0, datetime(2024, 3, 31, 10, 0))
    with pytest.raises(InputError, match="positive"):
        planar.hybrid_planar_spect_scaling({1.0: 0.0, 2.0: 1.0}, 700.0, 1.0)
