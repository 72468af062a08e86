"""A light image-domain model of quantitative Lu-177 SPECT, for virtual patients with known truth.

This is the documented *light* model, always available (the default backend of the virtual
patients and the one most tests use). It maps a true activity-concentration map straight to a
reconstructed-like image; it does **not** simulate projections or reconstruction.

The model
---------
For a true activity concentration ``A`` (Bq/mL, at the **start** of the acquisition) on a grid of
voxel volume ``V`` (mL), a system (volume) sensitivity ``S`` (cps/MBq) and an acquisition of
duration ``T`` (s, the calibration's convention: total acquisition time), the expected counts per
voxel of an attenuation-corrected quantitative reconstruction are::

    N_exp = G_fwhm * [ A * 1e-6 * V * S * T * F(T) * w ]            (1)

* ``F(T) = (1 - exp(-lambda T)) / (lambda T)``: the mean activity during the acquisition relative
  to its start (MIRD Pamphlet 23, Dewaraja et al. 2012, J Nucl Med 53:1310;
  :func:`mrtdose.physics.decay.mean_activity_factor_during_acquisition`);
* ``w = 1`` for an attenuation-corrected image; for the *uncorrected* variant ``w`` is the
  first-order Chang weighting (Chang 1978, IEEE Trans Nucl Sci 25:638), the mean over
  ``n_angles`` parallel-beam view directions in the transaxial plane of the transmission
  ``exp(-integral mu dl)`` from the voxel to the edge of the attenuation map
  (:func:`chang_transmission`). An uncorrected reconstruction of a point source is, to first
  order, its activity times this mean transmission; for extended sources it is an approximation
  (exact in the limit of a linear reconstruction of a source small against the body);
* ``G_fwhm``: a 3D Gaussian of constant FWHM (mm), a system-level stand-in for the collimator-
  detector response after reconstruction (spill-out / spill-in, partial-volume loss).

The counts image is then a seeded Poisson draw from ``N_exp``. Inverting (1) with ``w = 1`` is
exactly :func:`mrtdose.imaging.calibration.counts_to_activity_concentration` (MIRD Pamphlet 26,
Ljungberg et al. 2016, J Nucl Med 57:151), so the counts come back as Bq/mL with the calibration
``(S, T, half-life)`` recorded in :attr:`SpectSimulation.calibration`.

Attenuation map from CT
-----------------------
:func:`mu_map_from_ct`: ``mu = rho(HU) * (mu/rho)_soft tissue(E)``, with ``rho`` from the CT by
:func:`mrtdose.imaging.density.density_from_ct` (default bilinear curve) and ``(mu/rho)`` of
ICRU-44 soft tissue at the photopeak (:mod:`mrtdose.physics.attenuation`; 0.1339 cm^2/g at
208.4 keV, the Lu-177 gamma line of 208.366 keV, 10.4 % per decay in ICRP-107). Using the soft-tissue
``mu/rho`` for bone too underestimates bone's ``mu`` by about 4 % at 208 keV (cortical bone
0.1287 vs soft tissue 0.1339 cm^2/g is the *mass* coefficient; bone's higher density is kept).

What this model leaves out (read before using it as a reference)
-----------------------------------------------------------------
* **Scatter**: no scattered photons in the photopeak window, so no scatter-correction residuals
  (with Lu-177 and a 20 % window the scatter-to-primary ratio in a patient is tens of per cent).
* **Collimator septal penetration and collimator scatter** (the 113 keV and 208 keV lines and
  higher-energy down-scatter with medium-energy collimators): no long tails in the response.
* **Iterative-reconstruction noise texture and artefacts**: the noise is independent Poisson per
  voxel, while OSEM noise is spatially correlated, not Poisson, and depends on iterations and
  subsets; no Gibbs ringing / edge overshoot of resolution-recovery reconstructions (RC_max > 1
  of small hot spheres), no convergence-dependent bias.
* **Depth-dependent resolution**: one constant FWHM everywhere, whereas the collimator response
  widens with distance from the collimator (and non-circular orbits make it position dependent).
* Dead time, the energy-window fraction of the 113 keV line, patient motion, CT-SPECT
  misregistration.

For projection-domain simulation (attenuation, depth-dependent Gaussian collimator response,
Poisson noise in projections) and OSEM reconstruction see
:mod:`mrtdose.imaging.spect_pytomography` (PyTomography, MIT licence, the optional extra
``mrtdose[spect]``); it shares :func:`mu_map_from_ct`, :func:`expected_counts` and
:func:`calibration_record` with this model, so both give images in the same counts convention.
This module never imports PyTomography.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from mrtdose.errors import InputError
from mrtdose.imaging.volume import Volume
from mrtdose.physics.decay import mean_activity_factor_during_acquisition

__all__ = [
    "LU177_PHOTOPEAK_MEV",
    "DEFAULT_FWHM_MM",
    "FWHM_TO_SIGMA",
    "SpectSimulation",
    "calibration_record",
    "chang_transmission",
    "expected_counts",
    "mu_map_from_ct",
    "simulate_spect",
]

#: Lu-177 main imaging photopeak, MeV (ICRP-107: 208.366 keV, 10.4 % per decay).
LU177_PHOTOPEAK_MEV = 0.208366
#: Default constant FWHM (mm). Chosen so that the light model reproduces the recovery of the
#: PyTomography probe (OSEM 4 iterations x 8 subsets with attenuation and depth-dependent
#: collimator response, SY-ME collimator, 4.8 mm voxels; shared notes
#: ``pytomography_spect_simulation.md``, section 3.2): RC_mean of hot spheres in a cold background
#: 0.52 / 0.71 / 0.80 for 2 / 3 / 4 cm there, 0.51 / 0.69 / 0.76 for a 10 mm Gaussian (computed
#: here, 4.8 mm voxels).
DEFAULT_FWHM_MM = 10.0
#: sigma = FWHM / (2 sqrt(2 ln 2)) for a Gaussian.
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _positive(x: Any, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise InputError(f"must be a number, got {x!r}", field=name) from None
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"must be a positive finite number, got {x!r}", field=name)
    return v


def mu_map_from_ct(ct: Volume, *, energy_mev: float = LU177_PHOTOPEAK_MEV, material: str = "soft_tissue",
                   curve: Any = None) -> Volume:
    """Linear attenuation coefficient map (unit ``"1/cm"``) at ``energy_mev`` from a CT in HU.

    ``mu = density(HU) * (mu/rho)_material(E)`` (module docstring); ``curve`` is a
    :class:`~mrtdose.imaging.density.DensityCurve` (default: the bilinear default curve).

    >>> import numpy as np
    >>> ct = Volume(array=np.zeros((1, 1, 1)), spacing_mm=(4, 4, 4), unit="HU", modality="CT")
    >>> round(float(mu_map_from_ct(ct).array[0, 0, 0]), 4)    # water-like tissue at 208 keV
    0.1339
    """
    from mrtdose.imaging.density import DEFAULT_CURVE, density_from_ct
    from mrtdose.physics.attenuation import mass_attenuation_coefficient

    rho = density_from_ct(ct, curve or DEFAULT_CURVE)
    mu_rho = float(mass_attenuation_coefficient(float(energy_mev), material))
    return rho.with_array(
        np.asarray(rho.array, dtype=np.float64) * mu_rho,
        unit="1/cm",
        modality="OT",
        description=f"mu at {energy_mev * 1e3:.1f} keV = density x (mu/rho) of {material} ({mu_rho:.4f} cm^2/g)",
    )


def chang_transmission(mu_per_cm: Volume, *, n_angles: int = 32) -> np.ndarray:
    """First-order Chang weighting: mean over ``n_angles`` transaxial view directions of the
    transmission ``exp(-integral mu dl)`` from each voxel centre to the edge of the map.

    Parallel-beam rays in the slice plane (``array[k]``, rows ``j`` and columns ``i``), the
    directions evenly spaced over 360 degrees. For each direction the map is rotated (bilinear,
    :func:`scipy.ndimage.rotate`), integrated by a cumulative sum along the rows (a voxel
    attenuates itself over half its length) and rotated back. Needs square in-plane pixels.
    Values outside the inscribed circle of the slice are approximate (the rotation clips the
    corners); keep the body inside it. Returns an array in (0, 1] on ``mu_per_cm``'s grid.
    """
    if mu_per_cm.unit.replace(" ", "") not in ("1/cm", "cm^-1", "/cm"):
        raise InputError(f"attenuation map must be in 1/cm, got unit {mu_per_cm.unit!r}", field="mu_per_cm.unit")
    dx, dy, _ = mu_per_cm.spacing_mm
    if not math.isclose(dx, dy, rel_tol=1e-6):
        raise InputError(f"Chang weighting needs square in-plane pixels, got {dx} x {dy} mm", field="mu_per_cm.spacing_mm")
    n = int(n_angles)
    if n < 1:
        raise InputError(f"n_angles must be >= 1, got {n_angles!r}", field="n_angles")
    mu = np.asarray(mu_per_cm.array, dtype=np.float64)
    step_cm = dy / 10.0
    acc = np.zeros_like(mu)
    for theta in np.arange(n) * (360.0 / n):  # loop over view directions (not voxels)
        rot = ndimage.rotate(mu, theta, axes=(2, 1), reshape=False, order=1, mode="constant", cval=0.0)
        # line integral from the voxel centre to the edge at the end of axis 1 (rows)
        tail = np.flip(np.cumsum(np.flip(rot, axis=1), axis=1), axis=1) - 0.5 * rot
        t = np.exp(-np.clip(tail, 0.0, None) * step_cm)
        acc += ndimage.rotate(t, -theta, axes=(2, 1), reshape=False, order=1, mode="constant", cval=1.0)
    return np.clip(acc / n, 0.0, 1.0)


def expected_counts(activity_bq_per_ml: Volume, *, sensitivity_cps_per_mbq: float, acquisition_duration_s: float,
                    half_life_h: float, decay_during_acquisition: bool = True) -> np.ndarray:
    """Unblurred expected counts per voxel, ``A * 1e-6 * V * S * T * F(T)`` (equation 1, w = 1)."""
    s = _positive(sensitivity_cps_per_mbq, "sensitivity_cps_per_mbq")
    t = _positive(acquisition_duration_s, "acquisition_duration_s")
    th = _positive(half_life_h, "half_life_h")
    a = np.asarray(activity_bq_per_ml.array, dtype=np.float64)
    if activity_bq_per_ml.unit.replace(" ", "") != "Bq/mL":
        raise InputError(f"activity map must be in Bq/mL, got {activity_bq_per_ml.unit!r}", field="activity.unit")
    if not np.all(np.isfinite(a)) or a.min() < 0:
        raise InputError("activity map must be finite and non-negative", field="activity.array")
    f = mean_activity_factor_during_acquisition(t / 3600.0, th) if decay_during_acquisition else 1.0
    return a * 1e-6 * activity_bq_per_ml.voxel_volume_ml * s * t * f


def calibration_record(sensitivity_cps_per_mbq: float, acquisition_duration_s: float, half_life_h: float, *,
                       attenuation_corrected: bool = True) -> dict[str, Any]:
    """The numbers that turn a counts image of equation (1) back into Bq/mL at the acquisition
    start (:func:`~mrtdose.imaging.calibration.counts_to_activity_concentration`), as recorded in
    :attr:`SpectSimulation.calibration` and ``truth.json``."""
    s = _positive(sensitivity_cps_per_mbq, "sensitivity_cps_per_mbq")
    t = _positive(acquisition_duration_s, "acquisition_duration_s")
    th = _positive(half_life_h, "half_life_h")
    return {
        "sensitivity_cps_per_mbq": s,
        "acquisition_duration_s": t,
        "half_life_h": th,
        "decay_during_acquisition": True,
        "mean_activity_factor": mean_activity_factor_during_acquisition(t / 3600.0, th),
        "reference_time": "acquisition start",
        "formula": "C [Bq/mL] = N / (T S V F) * 1e6 (MIRD 26; F = (1 - exp(-lambda T)) / (lambda T), MIRD 23)",
        "attenuation_corrected": bool(attenuation_corrected),
    }


@dataclass(frozen=True, eq=False)
class SpectSimulation:
    """Result of :func:`simulate_spect`.

    Attributes
    ----------
    counts : counts per voxel (unit ``"counts"``, integer values; Poisson unless ``noise=False``).
    expected_counts : the blurred expected counts (before the Poisson draw), read-only.
    attenuation_corrected : False for the uncorrected variant (Chang-weighted).
    calibration : the numbers that turn ``counts`` back into Bq/mL at the acquisition start with
        :func:`~mrtdose.imaging.calibration.counts_to_activity_concentration`.
    method : one-line description of the model and its parameters.
    """

    counts: Volume
    expected_counts: np.ndarray
    attenuation_corrected: bool
    calibration: dict = field(default_factory=dict)
    method: str = ""


def simulate_spect(
    activity_bq_per_ml: Volume,
    *,
    half_life_h: float,
    sensitivity_cps_per_mbq: float = 10.0,
    acquisition_duration_s: float = 1800.0,
    fwhm_mm: float = DEFAULT_FWHM_MM,
    mu_per_cm: Volume | None = None,
    attenuation_corrected: bool = True,
    noise: bool = True,
    seed: int | None = None,
    n_angles: int = 32,
) -> SpectSimulation:
    """Reconstructed-like SPECT counts image from a true activity map (module docstring, eq. 1).

    Parameters
    ----------
    activity_bq_per_ml : true activity concentration at the acquisition start (unit ``Bq/mL``).
    half_life_h : physical half-life (decay during the acquisition).
    sensitivity_cps_per_mbq, acquisition_duration_s : calibration ``S`` and duration ``T``.
    fwhm_mm : FWHM of the constant 3D Gaussian resolution (0: no blur).
    mu_per_cm : attenuation map (1/cm) on the same grid; required when ``attenuation_corrected``
        is False (:func:`mu_map_from_ct` makes one from a CT).
    attenuation_corrected : True: quantitative AC image; False: Chang-weighted (``w`` in eq. 1).
    noise : draw Poisson counts (seeded by ``seed``); False returns the rounded expected counts.
    n_angles : view directions of the Chang weighting.
    """
    fwhm = float(fwhm_mm)
    if not (math.isfinite(fwhm) and fwhm >= 0):
        raise InputError(f"fwhm_mm must be >= 0, got {fwhm_mm!r}", field="fwhm_mm")
    n = expected_counts(activity_bq_per_ml, sensitivity_cps_per_mbq=sensitivity_cps_per_mbq,
                        acquisition_duration_s=acquisition_duration_s, half_life_h=half_life_h)
    how = ["attenuation corrected (w = 1)"]
    if not attenuation_corrected:
        if mu_per_cm is None:
            raise InputError("the uncorrected variant needs an attenuation map (mu_per_cm)", field="mu_per_cm")
        if not mu_per_cm.same_grid(activity_bq_per_ml):
            raise InputError("attenuation map and activity map must be on the same grid", field="mu_per_cm")
        n = n * chang_transmission(mu_per_cm, n_angles=n_angles)
        how = [f"NOT attenuation corrected: first-order Chang weighting over {int(n_angles)} views (Chang 1978)"]
    if fwhm > 0:
        sigma = [fwhm * FWHM_TO_SIGMA / s for s in activity_bq_per_ml.spacing_mm[::-1]]  # array axes (k, j, i)
        n = ndimage.gaussian_filter(n, sigma=sigma, mode="constant", cval=0.0, truncate=4.0)
        how.append(f"3D Gaussian resolution FWHM {fwhm:g} mm")
    n = np.clip(n, 0.0, None)
    if noise:
        rng = np.random.default_rng(seed)
        counts = rng.poisson(n).astype(np.int64)
        how.append(f"Poisson noise (seed {seed})")
    else:
        counts = np.rint(n).astype(np.int64)
        how.append("no noise (rounded expected counts)")
    expected = n.copy()
    expected.flags.writeable = False
    s = float(sensitivity_cps_per_mbq)
    t = float(acquisition_duration_s)
    calibration = calibration_record(s, t, float(half_life_h), attenuation_corrected=bool(attenuation_corrected))
    method = (f"mrtdose light SPECT model (imaging.spect_model): S = {s:g} cps/MBq, T = {t:g} s; "
              + "; ".join(how) + "; no scatter, septal penetration, OSEM texture or depth-dependent resolution")
    vol = activity_bq_per_ml.with_array(counts, unit="counts", modality="NM", description=method)
    return SpectSimulation(counts=vol, expected_counts=expected, attenuation_corrected=bool(attenuation_corrected),
                           calibration=calibration, method=method)
