"""Planar (whole-body) quantification: conjugate views, scatter, background, hybrid scaling.

Every function returns a :class:`~mrtdose.quantities.Quantity` (or a small frozen result) whose
uncertainty propagates Poisson counting statistics: raw region counts ``N`` (plain numbers) are
taken as Poisson, ``u(N) = sqrt(N)``; counts that are already a :class:`Quantity` (e.g. scatter-
or background-corrected) keep their stated uncertainty. Plain numbers must therefore be true
recorded counts, not rescaled or normalised pixel values. Region counts of different windows,
views and regions are statistically independent, so their variances add (GUM eq. 10).

Conjugate-view method (MIRD Pamphlet 16)
----------------------------------------
Siegel et al. 1999, "MIRD Pamphlet No. 16: Techniques for quantitative radiopharmaceutical
biodistribution data acquisition and analysis for use in human radiation dose estimates", J Nucl
Med 40:37S-61S, eq. 1 (after Thomas, Maxon & Kereiakes 1976, Med Phys 3:253)::

    A = sqrt(I_A I_P / e^{-mu_e T}) * f_j / C,     f_j = (mu_j t_j / 2) / sinh(mu_j t_j / 2)

``I_A``, ``I_P``: anterior and posterior count rates (cps) of the region; ``e^{-mu_e T}`` the
transmission factor through the body thickness ``T`` (measured with a transmission source,
``I/I_0``, or computed from a CT-derived thickness and an attenuation coefficient); ``C`` the
system sensitivity (cps/MBq, measured in air); ``f_j`` the source self-attenuation correction for
a source region of thickness ``t_j`` and attenuation coefficient ``mu_j`` (1 for a thin source).
For a point source in a uniform slab the result is exact and independent of depth; with ``f_j``
it is exact for a uniform source region of thickness ``t_j`` anywhere in the slab.

Attenuation coefficient: the narrow-beam coefficient (:func:`narrow_beam_mu_per_cm`, from
:func:`mrtdose.physics.attenuation.mass_attenuation_coefficient`) is appropriate when scatter has
been removed from the photopeak counts (e.g. by TEW, below); without scatter correction a
smaller, broad-beam ("effective") coefficient measured for the camera and window should be given
instead (MIRD 16, section on attenuation correction).

Triple-energy-window scatter correction
---------------------------------------
Ogawa et al. 1991, "A practical method for position-dependent Compton-scatter correction in
single photon emission CT", IEEE Trans Med Imaging 10:408-412::

    C_scatter = (C_lower / W_lower + C_upper / W_upper) * W_peak / 2,   C_primary = C_peak - C_scatter

(trapezoidal estimate of the scatter under the photopeak from two narrow adjacent windows; ``W``
window widths in keV).

Background subtraction
----------------------
Area-scaled background: ``N = C_roi - C_bkg (A_roi / A_bkg)``. That over-subtracts, since the
organ displaces background tissue along the line of sight; the organ-thickness correction
``N = C_roi - C_bkg (A_roi / A_bkg) (1 - t_organ / T_body)`` accounts for it (Buijs et al. 1998,
"Absolute organ activity estimated by five different methods of background correction", J Nucl
Med 39:2167-2172, who found it the most accurate of the methods they compared; also described in
MIRD Pamphlet 16).

Hybrid planar/SPECT
-------------------
Planar time-activity curves have good temporal sampling but poor absolute accuracy (overlap,
attenuation); one SPECT/CT gives an accurate activity at one time. The planar curve is scaled to
the SPECT activity at the SPECT time: ``A_i = P_i * A_SPECT / P(t_ref)``, with ``P(t_ref)`` the
planar value at the SPECT time (interpolated mono-exponentially between the neighbouring planar
times if no planar image was taken then). Koral et al. 2000, "CT-SPECT fusion plus conjugate
views for determining dosimetry in iodine-131-monoclonal antibody therapy of lymphoma patients",
J Nucl Med 41:1579-1586; reviewed in Ljungberg & Sjögreen Gleisner 2015, "Hybrid imaging for
patient-specific dosimetry in radionuclide therapy", Diagnostics 5:296-317. Any factor common to
all planar values (calibration, a constant attenuation error) cancels in the ratio, so the planar
values should carry only their time-varying (counting, ROI) uncertainty; their unit is arbitrary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

import numpy as np

from mrtdose.errors import InputError
from mrtdose.imaging.calibration import CalibrationRecord, sensitivity_quantity
from mrtdose.physics.decay import elapsed_hours, mean_activity_factor_during_acquisition
from mrtdose.quantities import Quantity
from mrtdose.uncertainty import UncertainInput, propagate

MIRD16 = "MIRD Pamphlet 16 (Siegel et al. 1999, J Nucl Med 40:37S)"
OGAWA = "TEW (Ogawa et al. 1991, IEEE Trans Med Imaging 10:408)"
BUIJS = "Buijs et al. 1998, J Nucl Med 39:2167"
KORAL = "Koral et al. 2000, J Nucl Med 41:1579"


def poisson_counts(counts: float | Quantity, what: str = "counts") -> Quantity:
    """Counts as a Quantity: a plain number ``N >= 0`` gets ``u = sqrt(N)`` (Poisson); a Quantity
    is returned unchanged.

    >>> poisson_counts(400).uncertainty
    20.0
    """
    if isinstance(counts, Quantity):
        if not math.isfinite(counts.value):
            raise InputError("counts must be finite", field=what)
        return counts
    try:
        n = float(counts)
    except (TypeError, ValueError):
        raise InputError(f"must be a number of counts, got {counts!r}", field=what) from None
    if not math.isfinite(n) or n < 0:
        raise InputError(f"recorded counts must be finite and >= 0, got {counts!r}", field=what)
    return Quantity(n, math.sqrt(n), "counts", method="Poisson counting statistics")


def _width(w: float, name: str) -> float:
    try:
        v = float(w)
    except (TypeError, ValueError):
        raise InputError(f"must be a window width in keV, got {w!r}", field=name) from None
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"window width must be positive, got {w!r} keV", field=name)
    return v


# --------------------------------------------------------------------------- scatter


def tew_scatter_counts(
    lower_counts: float | Quantity,
    upper_counts: float | Quantity,
    *,
    lower_width_kev: float,
    upper_width_kev: float,
    peak_width_kev: float,
) -> Quantity:
    """Scatter counts under the photopeak, ``(C_l/W_l + C_u/W_u) W_p/2`` (Ogawa et al. 1991).

    ``u^2 = (W_p/2)^2 (u(C_l)^2/W_l^2 + u(C_u)^2/W_u^2)``.

    Example: 600 counts in a 6 keV lower window, 120 in a 6 keV upper window, 42 keV peak:
    (100 + 20) * 21 = 2520 counts; u = 21 * sqrt(600/36 + 120/36) = 21 sqrt(20) = 93.9.

    >>> q = tew_scatter_counts(600, 120, lower_width_kev=6, upper_width_kev=6, peak_width_kev=42)
    >>> q.value, round(q.uncertainty, 1)
    (2520.0, 93.9)
    """
    lo = poisson_counts(lower_counts, "lower_counts")
    up = poisson_counts(upper_counts, "upper_counts")
    wl = _width(lower_width_kev, "lower_width_kev")
    wu = _width(upper_width_kev, "upper_width_kev")
    wp = _width(peak_width_kev, "peak_width_kev")
    k = wp / 2.0
    value = (lo.value / wl + up.value / wu) * k
    c_lo = k * lo.uncertainty / wl
    c_up = k * up.uncertainty / wu
    return Quantity(value, math.hypot(c_lo, c_up), "counts", OGAWA,
                    {"counting (lower window)": c_lo, "counting (upper window)": c_up})


def tew_primary_counts(
    peak_counts: float | Quantity,
    lower_counts: float | Quantity,
    upper_counts: float | Quantity,
    *,
    lower_width_kev: float,
    upper_width_kev: float,
    peak_width_kev: float,
    clip_negative: bool = False,
) -> Quantity:
    """Scatter-corrected photopeak counts ``C_peak - C_scatter`` (Ogawa et al. 1991).

    The windows are independent Poisson counts: ``u^2 = u(C_peak)^2 + u(C_scatter)^2``. A negative
    result (noise in a low-count region) is kept unless ``clip_negative`` (then 0, uncertainty
    kept).

    >>> q = tew_primary_counts(10000, 600, 120, lower_width_kev=6, upper_width_kev=6, peak_width_kev=42)
    >>> q.value, round(q.uncertainty, 1)    # 10000 - 2520; sqrt(10000 + 21^2 * 20)
    (7480.0, 137.2)
    """
    pk = poisson_counts(peak_counts, "peak_counts")
    sc = tew_scatter_counts(lower_counts, upper_counts, lower_width_kev=lower_width_kev,
                            upper_width_kev=upper_width_kev, peak_width_kev=peak_width_kev)
    value = pk.value - sc.value
    if clip_negative:
        value = max(value, 0.0)
    comps = {"counting (peak window)": pk.uncertainty, **dict(sc.components)}
    return Quantity(value, math.hypot(pk.uncertainty, sc.uncertainty), "counts",
                    f"photopeak minus scatter, {OGAWA}", comps)


# --------------------------------------------------------------------------- background


def background_subtract(
    roi_counts: float | Quantity,
    background_counts: float | Quantity,
    *,
    roi_area_px: float,
    background_area_px: float,
    organ_thickness_cm: float | None = None,
    body_thickness_cm: float | None = None,
) -> Quantity:
    """Background-corrected region counts.

    ``N = C_roi - C_bkg (A_roi/A_bkg) F`` with ``F = 1`` (area-scaled background) or, if both
    thicknesses are given, ``F = 1 - t_organ/T_body`` (Buijs et al. 1998 / MIRD 16).
    ``u^2 = u(C_roi)^2 + (F A_roi/A_bkg)^2 u(C_bkg)^2``.

    Example: ROI 5000 counts in 200 px, background 900 counts in 100 px, organ 6 cm of a 20 cm
    body: F = 0.7, N = 5000 - 900 * 2 * 0.7 = 3740; u = sqrt(5000 + 1.4^2 * 900) = 82.2.

    >>> q = background_subtract(5000, 900, roi_area_px=200, background_area_px=100,
    ...                         organ_thickness_cm=6, body_thickness_cm=20)
    >>> q.value, round(q.uncertainty, 1)
    (3740.0, 82.2)
    """
    roi = poisson_counts(roi_counts, "roi_counts")
    bkg = poisson_counts(background_counts, "background_counts")
    a_roi = _width(roi_area_px, "roi_area_px")
    a_bkg = _width(background_area_px, "background_area_px")
    if (organ_thickness_cm is None) != (body_thickness_cm is None):
        raise InputError("give both organ_thickness_cm and body_thickness_cm for the thickness-corrected "
                         "background, or neither", field="organ_thickness_cm")
    if organ_thickness_cm is not None:
        t = float(organ_thickness_cm)
        big_t = float(body_thickness_cm)  # type: ignore[arg-type]
        if not (math.isfinite(t) and math.isfinite(big_t) and 0 <= t < big_t):
            raise InputError(f"need 0 <= organ thickness ({t:g} cm) < body thickness ({big_t:g} cm)",
                             field="organ_thickness_cm")
        f = 1.0 - t / big_t
        method = f"ROI minus area-scaled background x (1 - t/T) = {f:.4g} ({BUIJS}; {MIRD16})"
    else:
        f = 1.0
        method = "ROI minus area-scaled background"
    k = f * a_roi / a_bkg
    c_roi = roi.uncertainty
    c_bkg = k * bkg.uncertainty
    return Quantity(roi.value - k * bkg.value, math.hypot(c_roi, c_bkg), roi.unit, method,
                    {"counting (ROI)": c_roi, "counting (background)": c_bkg})


# --------------------------------------------------------------------------- attenuation


def narrow_beam_mu_per_cm(energy_kev: float, material: str = "soft_tissue", density_g_per_ml: float | None = None) -> float:
    """Narrow-beam linear attenuation coefficient (1/cm) = (mu/rho) rho, with mu/rho from
    :func:`mrtdose.physics.attenuation.mass_attenuation_coefficient` (coherent included) and rho
    the material's nominal density unless given.

    Water at the Tc-99m 140.5 keV line (NIST XCOM water: 0.1707 cm^2/g at 100 keV, 0.1505 at
    150 keV, bracketing it):

    >>> round(narrow_beam_mu_per_cm(140.5, "water"), 4)
    0.1537
    """
    from mrtdose.physics.attenuation import get_material, mass_attenuation_coefficient

    e = float(energy_kev)
    if not (math.isfinite(e) and e > 0):
        raise InputError(f"photon energy must be positive (keV), got {energy_kev!r}", field="energy_kev")
    mat = get_material(material)
    rho = mat.density_g_per_ml if density_g_per_ml is None else float(density_g_per_ml)
    if not (math.isfinite(rho) and rho > 0):
        raise InputError(f"density must be positive, got {density_g_per_ml!r}", field="density_g_per_ml")
    return float(mass_attenuation_coefficient(e / 1000.0, mat)) * rho


def transmission_from_thickness(
    body_thickness_cm: float,
    mu_per_cm: float,
    *,
    thickness_uncertainty_cm: float = 0.0,
    mu_uncertainty_per_cm: float = 0.0,
) -> Quantity:
    """Transmission factor ``e^{-mu T}`` through a (CT-derived) body thickness (MIRD 16).

    ``u^2 = e^{-2 mu T} (T^2 u(mu)^2 + mu^2 u(T)^2)``.

    >>> q = transmission_from_thickness(20.0, 0.1, thickness_uncertainty_cm=1.0)
    >>> round(q.value, 6), round(q.uncertainty, 6)    # e^-2; e^-2 * 0.1 * 1
    (0.135335, 0.013534)
    """
    t = float(body_thickness_cm)
    mu = float(mu_per_cm)
    if not (math.isfinite(t) and t > 0):
        raise InputError(f"body thickness must be positive (cm), got {body_thickness_cm!r}", field="body_thickness_cm")
    if not (math.isfinite(mu) and mu >= 0):
        raise InputError(f"attenuation coefficient must be >= 0 (1/cm), got {mu_per_cm!r}", field="mu_per_cm")
    if mu > 2.0:
        raise InputError(f"mu = {mu:g} /cm is implausible for tissue: is it in 1/m or cm^2/g?", field="mu_per_cm")
    tf = math.exp(-mu * t)
    c_t = tf * mu * float(thickness_uncertainty_cm)
    c_mu = tf * t * float(mu_uncertainty_per_cm)
    return Quantity(tf, math.hypot(c_t, c_mu), "1", f"exp(-mu T), mu = {mu:g}/cm, T = {t:g} cm ({MIRD16})",
                    {"body thickness": c_t, "attenuation coefficient": c_mu})


def transmission_from_counts(
    counts_with_patient: float | Quantity,
    counts_without_patient: float | Quantity,
    *,
    duration_with_s: float = 1.0,
    duration_without_s: float = 1.0,
) -> Quantity:
    """Measured transmission factor ``I/I_0`` (transmission flood source with and without the
    patient over the region; MIRD 16), Poisson: ``u = T sqrt(1/N + 1/N_0)`` for raw counts.

    >>> q = transmission_from_counts(2500, 10000)
    >>> q.value, round(q.uncertainty, 6)     # 0.25 * sqrt(1/2500 + 1/10000)
    (0.25, 0.00559)
    """
    n = poisson_counts(counts_with_patient, "counts_with_patient")
    n0 = poisson_counts(counts_without_patient, "counts_without_patient")
    d1 = _width(duration_with_s, "duration_with_s")
    d0 = _width(duration_without_s, "duration_without_s")
    if n0.value <= 0 or n.value <= 0:
        raise InputError("transmission counts must be positive", field="counts_with_patient")
    tf = (n.value / d1) / (n0.value / d0)
    if tf > 1.0 + 5 * tf * math.hypot(n.uncertainty / n.value, n0.uncertainty / n0.value):
        raise InputError(f"transmission factor {tf:.3g} > 1: are the two count values swapped?",
                         field="counts_with_patient")
    c1 = tf * n.uncertainty / n.value
    c0 = tf * n0.uncertainty / n0.value
    return Quantity(tf, math.hypot(c1, c0), "1", f"measured transmission I/I0 ({MIRD16})",
                    {"counting (with patient)": c1, "counting (blank)": c0})


def self_attenuation_factor(mu_per_cm: float, source_thickness_cm: float) -> float:
    """Source self-attenuation correction ``f = (mu t/2) / sinh(mu t/2)`` (MIRD 16, after
    Thomas, Maxon & Kereiakes 1976); 1 for a thin source.

    >>> round(self_attenuation_factor(0.1, 10.0), 6)    # 0.5 / sinh(0.5)
    0.959517
    """
    mu = float(mu_per_cm)
    t = float(source_thickness_cm)
    if not (math.isfinite(mu) and mu >= 0 and math.isfinite(t) and t >= 0):
        raise InputError("mu_per_cm and source_thickness_cm must be finite and >= 0", field="source_thickness_cm")
    x = 0.5 * mu * t
    return 1.0 if x < 1e-8 else x / math.sinh(x)


# --------------------------------------------------------------------------- conjugate view


def geometric_mean_counts(anterior_counts: float | Quantity, posterior_counts: float | Quantity) -> Quantity:
    """``sqrt(C_A C_P)`` with ``u/GM = (1/2) sqrt((u_A/C_A)^2 + (u_P/C_P)^2)`` (MIRD 16).

    >>> q = geometric_mean_counts(10000, 2500)
    >>> q.value, round(q.uncertainty, 4)     # 5000; 5000/2 * sqrt(1e-4 + 4e-4)
    (5000.0, 55.9017)
    """
    a = poisson_counts(anterior_counts, "anterior_counts")
    p = poisson_counts(posterior_counts, "posterior_counts")
    if a.value <= 0 or p.value <= 0:
        raise InputError(
            f"anterior ({a.value:g}) and posterior ({p.value:g}) counts must be positive for a geometric mean "
            "(after background and scatter subtraction the region has no net counts)",
            field="anterior_counts" if a.value <= 0 else "posterior_counts",
        )
    gm = math.sqrt(a.value * p.value)
    c_a = 0.5 * gm * a.uncertainty / a.value
    c_p = 0.5 * gm * p.uncertainty / p.value
    return Quantity(gm, math.hypot(c_a, c_p), a.unit, f"geometric mean of conjugate views ({MIRD16})",
                    {"counting (anterior)": c_a, "counting (posterior)": c_p})


def conjugate_view_activity(
    anterior_counts: float | Quantity,
    posterior_counts: float | Quantity,
    *,
    acquisition_duration_s: float,
    sensitivity_cps_per_mbq: float | Quantity | CalibrationRecord,
    transmission: float | Quantity,
    self_attenuation: float | Quantity = 1.0,
    sensitivity_uncertainty_cps_per_mbq: float | None = None,
    half_life_h: float | None = None,
) -> Quantity:
    """Region activity (MBq) by the conjugate-view method, MIRD 16 eq. 1 (module docstring)::

        A = sqrt(I_A I_P / T_f) * f / C,   I = counts / acquisition_duration_s

    Parameters
    ----------
    anterior_counts, posterior_counts : region counts of each view (raw: Poisson; or Quantities
        from :func:`tew_primary_counts` / :func:`background_subtract`), acquired over the same
        ``acquisition_duration_s``.
    sensitivity_cps_per_mbq : planar system sensitivity ``C`` (number, Quantity or record).
    transmission : transmission factor ``e^{-mu_e T}`` (number or Quantity, from
        :func:`transmission_from_counts` or :func:`transmission_from_thickness`).
    self_attenuation : ``f_j`` (:func:`self_attenuation_factor`), 1 by default.
    half_life_h : if given, the result is referred to the acquisition start by dividing by the
        mean-activity factor during the acquisition (MIRD 23); else it is the mean activity
        during the acquisition.

    Returns
    -------
    Quantity in MBq with components ``counting (anterior)``, ``counting (posterior)``,
    ``calibration``, ``transmission`` and ``self-attenuation``.

    Example: point source of 10 MBq in a 20 cm slab, mu = 0.1/cm, C = 10 cps/MBq, 100 s, at 5 cm
    depth: C_A = 100 * 10 * 10 e^{-0.5} = 6065.3, C_P = 10000 e^{-1.5} = 2231.3;
    sqrt(60.653 * 22.313 / e^{-2}) / 10 = 10 MBq.

    >>> a = conjugate_view_activity(10000 * math.exp(-0.5), 10000 * math.exp(-1.5),
    ...     acquisition_duration_s=100, sensitivity_cps_per_mbq=10.0, transmission=math.exp(-2.0))
    >>> round(a.value, 9)
    10.0
    """
    gm = geometric_mean_counts(anterior_counts, posterior_counts)
    dur = _width(acquisition_duration_s, "acquisition_duration_s")
    s = sensitivity_quantity(sensitivity_cps_per_mbq, sensitivity_uncertainty_cps_per_mbq)
    tf = transmission if isinstance(transmission, Quantity) else Quantity(float(transmission), 0.0, "1")
    if not (math.isfinite(tf.value) and 0 < tf.value <= 1):
        raise InputError(f"transmission factor must be in (0, 1], got {tf.value!r}", field="transmission")
    fj = self_attenuation if isinstance(self_attenuation, Quantity) else Quantity(float(self_attenuation), 0.0, "1")
    if not (math.isfinite(fj.value) and 0 < fj.value <= 1):
        raise InputError(f"self-attenuation factor must be in (0, 1], got {fj.value!r}", field="self_attenuation")
    f_mean = 1.0
    if half_life_h is not None:
        f_mean = mean_activity_factor_during_acquisition(dur / 3600.0, _width(half_life_h, "half_life_h"))
    value = (gm.value / dur) / math.sqrt(tf.value) * fj.value / s.value / f_mean
    comps = {k: value * v / gm.value for k, v in gm.components.items()}
    comps["calibration"] = value * s.uncertainty / s.value
    comps["transmission"] = value * 0.5 * tf.uncertainty / tf.value
    comps["self-attenuation"] = value * fj.uncertainty / fj.value
    u = math.sqrt(sum(c * c for c in comps.values()))
    method = (f"conjugate view sqrt(I_A I_P / T) f / C ({MIRD16}); T = {tf.value:.4g}, f = {fj.value:.4g}, "
              f"C = {s.value:g} cps/MBq" + (f", referred to acquisition start (F = {f_mean:.6f})" if half_life_h else ""))
    # Components with a zero contribution are dropped (only contributing sources are listed).
    return Quantity(value, u, "MBq", method, {k: v for k, v in comps.items() if v > 0})


# --------------------------------------------------------------------------- hybrid


@dataclass(frozen=True)
class HybridPlanarSpect:
    """Planar time-activity curve scaled to one SPECT activity (:func:`hybrid_planar_spect_scaling`).

    ``times`` are the planar times as given (sorted); ``times_h`` hours relative to the SPECT
    reference time; ``activities`` the scaled activities (unit of the SPECT activity) and
    ``covariance`` their full covariance (they are correlated through the common scale factor).
    ``scale_factor`` is ``A_SPECT / P(t_ref)`` (SPECT unit per planar unit).
    """

    times: tuple[Any, ...]
    times_h: tuple[float, ...]
    activities: tuple[Quantity, ...]
    covariance: np.ndarray
    scale_factor: Quantity
    planar_at_reference: float
    method: str


def _pairs(planar: Mapping[Any, Any] | Sequence[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    items = list(planar.items()) if isinstance(planar, Mapping) else list(planar)
    if len(items) < 1:
        raise InputError("need at least one planar time point", field="planar_activities_by_time")
    return items


def hybrid_planar_spect_scaling(
    planar_activities_by_time: Mapping[Any, float | Quantity] | Sequence[tuple[Any, float | Quantity]],
    spect_activity_at_ref_time: float | Quantity,
    ref_time: float | datetime,
) -> HybridPlanarSpect:
    """Scale a planar time-activity curve to a SPECT activity at ``ref_time`` (Koral et al. 2000).

    ``A_i = P_i A_SPECT / P(t_ref)`` (module docstring). Times are all hours (floats) or all
    timezone-aware datetimes. ``P(t_ref)`` is the planar value at ``ref_time`` if one was taken
    then (within 1 s), else the mono-exponential interpolation
    ``P(t) = P_k (P_{k+1}/P_k)^((t - t_k)/(t_{k+1} - t_k))`` between the neighbouring planar
    times; ``ref_time`` outside the planar times is an error (no extrapolation).

    Uncertainties (first order, :func:`mrtdose.uncertainty.propagate`): the SPECT activity
    (component ``"SPECT activity"``) and the planar values (``"planar (relative)"``, independent);
    the scaled activities share the scale factor and so are correlated (``covariance``).

    Example: planar 100, 80, 40 (counts/s) at 4, 24, 96 h, SPECT 2000 MBq at 24 h: k = 25 MBq/(cps),
    scaled 2500, 2000, 1000 MBq.

    >>> r = hybrid_planar_spect_scaling({4.0: 100.0, 24.0: 80.0, 96.0: 40.0}, 2000.0, 24.0)
    >>> [q.value for q in r.activities], r.scale_factor.value
    ([2500.0, 2000.0, 1000.0], 25.0)
    """
    items = _pairs(planar_activities_by_time)
    keys = [k for k, _ in items]
    use_dt = isinstance(ref_time, datetime)
    if any(isinstance(k, datetime) != use_dt for k in keys):
        raise InputError("planar times and ref_time must all be hours (numbers) or all date-times",
                         field="planar_activities_by_time")
    if use_dt:
        hours = [elapsed_hours(ref_time, k, what=f"planar time {k!r}") for k in keys]  # type: ignore[arg-type]
    else:
        try:
            hours = [float(k) - float(ref_time) for k in keys]
        except (TypeError, ValueError):
            raise InputError("planar times must be numbers of hours", field="planar_activities_by_time") from None
    if not all(math.isfinite(h) for h in hours):
        raise InputError("planar times must be finite", field="planar_activities_by_time")
    order = np.argsort(hours, kind="stable")
    t = np.array(hours)[order]
    if np.any(np.diff(t) <= 0):
        raise InputError("two planar values share the same time", field="planar_activities_by_time")
    qs = []
    for k, v in items:
        q = v if isinstance(v, Quantity) else Quantity(float(v), 0.0, "")
        if not (math.isfinite(q.value) and q.value > 0):
            raise InputError(f"planar value at {k!r} must be positive, got {q.value!r}", field="planar_activities_by_time")
        qs.append(q)
    qs = [qs[i] for i in order]
    keys = [keys[i] for i in order]
    p = np.array([q.value for q in qs])
    up = np.array([q.uncertainty for q in qs])
    spect = (spect_activity_at_ref_time if isinstance(spect_activity_at_ref_time, Quantity)
             else Quantity(float(spect_activity_at_ref_time), 0.0, "MBq"))
    if not (math.isfinite(spect.value) and spect.value > 0):
        raise InputError(f"SPECT activity must be positive, got {spect.value!r}", field="spect_activity_at_ref_time")

    tol_h = 1.0 / 3600.0
    exact = np.flatnonzero(np.abs(t) <= tol_h)
    if exact.size:
        j = int(exact[0])

        def p_ref(pv: np.ndarray) -> float:
            return float(pv[j])

        how = f"planar image at the SPECT time (t = {t[j]:+.4g} h)"
    else:
        if t[0] > 0 or t[-1] < 0:
            raise InputError(
                f"the SPECT time lies outside the planar times ({t[0]:+.3g} h to {t[-1]:+.3g} h relative to it): "
                "the planar curve cannot be interpolated there", field="ref_time")
        k = int(np.searchsorted(t, 0.0) - 1)
        frac = (0.0 - t[k]) / (t[k + 1] - t[k])

        def p_ref(pv: np.ndarray) -> float:
            return float(pv[k] * (pv[k + 1] / pv[k]) ** frac)

        how = f"planar value interpolated mono-exponentially between {t[k]:+.4g} h and {t[k + 1]:+.4g} h"

    def model(x: Mapping[str, np.ndarray]) -> np.ndarray:
        pv = x["planar"]
        kf = x["spect"][0] / p_ref(pv)
        return np.concatenate([pv * kf, [kf]])

    inputs = [
        UncertainInput.scalar("spect", spect.value, spect.uncertainty, "SPECT activity"),
        UncertainInput("planar", p, np.diag(up**2), "planar (relative)"),
    ]
    names = [f"A[{i}]" for i in range(len(p))] + ["k"]
    prop = propagate(model, inputs, names)
    n = len(p)
    unit = spect.unit
    planar_unit = qs[0].unit
    method = f"hybrid planar/SPECT: planar TAC scaled to SPECT at the reference time ({KORAL}); {how}"
    acts = tuple(
        Quantity(prop.value[i], prop.std[i], unit, method,
                 {c: float(v[i]) for c, v in prop.components.items() if v[i] > 0})
        for i in range(n)
    )
    kq = Quantity(prop.value[n], prop.std[n], f"{unit}/({planar_unit})" if planar_unit else unit,
                  "A_SPECT / P(t_ref)", {c: float(v[n]) for c, v in prop.components.items() if v[n] > 0})
    cov = np.array(prop.covariance[:n, :n])
    cov.flags.writeable = False
    return HybridPlanarSpect(
        times=tuple(keys), times_h=tuple(float(x) for x in t), activities=acts, covariance=cov,
        scale_factor=kq, planar_at_reference=p_ref(p), method=method,
    )


__all__ = [
    "HybridPlanarSpect",
    "background_subtract",
    "conjugate_view_activity",
    "geometric_mean_counts",
    "hybrid_planar_spect_scaling",
    "narrow_beam_mu_per_cm",
    "poisson_counts",
    "self_attenuation_factor",
    "tew_primary_counts",
    "tew_scatter_counts",
    "transmission_from_counts",
    "transmission_from_thickness",
]
