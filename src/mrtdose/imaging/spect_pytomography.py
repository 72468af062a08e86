"""Projection-domain SPECT simulation and OSEM reconstruction with PyTomography (optional extra).

:func:`simulate_spect_pytomography` takes a true activity-concentration map (Bq/mL at the start
of the acquisition) and an attenuation map (1/cm at the photopeak,
:func:`mrtdose.imaging.spect_model.mu_map_from_ct`) and returns a quantitative reconstruction:

1. **Projection** with PyTomography's rotate+sum SPECT system matrix (Polson et al. 2023,
   "PyTomography: a Python library for medical image reconstruction", SoftwareX / arXiv:2309.01977;
   MIT licence), with attenuation (``exp(-integral mu dl)`` from each voxel to the detector) and a
   depth-dependent Gaussian collimator-detector response (CDR, below), on a circular orbit of
   radius ``radius_cm`` with ``n_views`` views over 360 degrees.
2. Optional **scatter** as an additive term: a crude stand-in, *not* a Compton-scatter
   simulation (PyTomography simulates primaries only): each view's primary projection blurred by a
   2D Gaussian of ``scatter_sigma_cm`` and scaled to a scatter-to-primary ratio
   ``scatter_to_primary`` (the shape used in the shared notes ``pytomography_spect_simulation.md``,
   section 3.2). The reconstruction either models it exactly (``scatter_corrected=True``: the
   expected scatter is the likelihood's additive term, an ideal scatter estimate) or ignores it
   (biased high by about the SPR).
3. **Poisson noise** on the projections (numpy, seeded: the same seed draws the same noise sequence on
   any torch device; the expected projections are float32 torch output, so counts may still differ
   slightly between devices).
4. **OSEM** (Hudson & Larkin 1994, IEEE Trans Med Imaging 13:601) with ``iterations`` x
   ``subsets``, modelling attenuation (unless ``attenuation_corrected=False``) and the same CDR.

Absolute scale (in ONE place: :func:`counts_per_view_per_bq_per_ml`)
---------------------------------------------------------------------
PyTomography's system matrix holds no sensitivity, time or voxel-volume factor (its PSF kernels
are normalised to 1; attenuation is its only loss). The object is therefore expressed in
*expected unattenuated counts per view per voxel*::

    x = A [Bq/mL] * 1e-6 * V [mL] * S [cps/MBq] * t_view [s] * F          (2)

with ``t_view = T / n_views`` (``T`` the total acquisition time, the calibration convention of
:mod:`mrtdose.imaging.spect_model`) and ``F = (1 - exp(-lambda T)) / (lambda T)`` the mean
activity during the acquisition relative to its start (MIRD Pamphlet 23, Dewaraja et al. 2012,
J Nucl Med 53:1310). An unattenuated point source of ``A`` MBq thus gives ``A S T F`` counts summed
over all views. The reconstruction is divided by the same factor to give Bq/mL at the acquisition
start, and expressed in the *counts* convention of the light model (its equation 1 with ``w = 1``,
:func:`mrtdose.imaging.spect_model.expected_counts`) so that
:func:`mrtdose.imaging.calibration.counts_to_activity_concentration` with the recorded calibration
turns it back into Bq/mL exactly as for a light-model image.

Collimator-detector response
----------------------------
Gaussian, FWHM at distance ``d`` from the collimator face (Cherry, Sorenson & Phelps 2012, Physics
in Nuclear Medicine, 4th ed., ch. 14: geometric resolution of a parallel-hole collimator with the
effective hole length, combined in quadrature with the intrinsic resolution)::

    R_geo(d) = D (L_eff + d) / L_eff,   L_eff = L - 2 / mu_Pb(E)
    R_int(E) = R_int(140 keV) * sqrt(140 keV / E)
    R_sys(d) = sqrt(R_geo(d)^2 + R_int(E)^2),     sigma = R_sys / (2 sqrt(2 ln 2))

* ``D`` (hole diameter) and ``L`` (hole length) of a **named** collimator come from the SIMIND
  collimator database shipped with PyTomography (``pytomography/data/collim.col``, read at run time,
  nothing copied here), looked up by its **full code** with an exact match (:func:`collimator`;
  PyTomography's own helper matches substrings and can pick the wrong row: pitfall 3 of the notes).
  The collimator-to-crystal gap is neglected.
* ``mu_Pb(E)``: lead's total attenuation coefficient from xraylib's cross sections (``CS_Total``,
  Schoonjans et al. 2011, Spectrochim Acta B 66:776) times the density of lead, 11.35 g/cm^3 (CRC
  Handbook of Chemistry and Physics). At 208.4 keV this gives 10.3 /cm (NIST XCOM: 0.9985 cm^2/g at
  200 keV, 11.3 /cm); PyTomography's own fit to its NIST table gives 17.3 /cm there, so its
  ``get_psfmeta_from_scanner_params`` has a ~2 % smaller slope ``D / L_eff``.
* ``R_int(140 keV)``: default 3.8 mm FWHM, the typical intrinsic resolution of a 3/8-inch NaI(Tl)
  camera (the value used in the shared notes); the ``E^-1/2`` scaling follows the light-yield
  statistics of the scintillator (Cherry et al. 2012, ch. 13-14).

Units are **cm** throughout the PyTomography calls (voxel size, detector pixel, radius of
rotation, mu, FWHM): pitfall 1 of the notes; the ``Volume`` spacings in mm are converted here.

Avoiding the inverse crime
--------------------------
With ``supersample=2`` (default) the projections are simulated on a grid 2x finer in every
direction (each voxel of the true map split into 8, so the truth is unchanged; attenuation map
likewise), binned 2x2 onto the reconstruction's detector pixels, and reconstructed on the original
grid: the simulating and reconstructing operators differ in their discretisation (rotation
interpolation, attenuation sums, PSF kernel sampling). They share the same physics
approximations (Gaussian CDR, no septal penetration, no collimator scatter, no physical scatter),
so the reconstruction is *too good* compared with a real Lu-177 acquisition: read the limitations
in :mod:`mrtdose.imaging.spect_model` (scatter, penetration of the 208 keV and higher-energy
photons, dead time) -- all still apply except the constant resolution and the missing OSEM texture.

Importing PyTomography
----------------------
PyTomography is imported lazily, only inside :func:`simulate_spect_pytomography` and friends
(:func:`load_pytomography`). Its ``__init__`` calls ``warnings.simplefilter("ignore")`` for the
whole process and prints a line about GPUs: the warnings filters are restored after the import
and its stdout is swallowed. Computation runs on ``pytomography.device`` (CUDA if visible, else
CPU); results are brought back to the CPU.

Example (needs the extra): ``collimator_fwhm_cm(10.0, "SY-ME")`` is 1.10 cm, the system FWHM of the
Siemens medium-energy collimator 10 cm from its face at 208 keV.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from mrtdose.errors import InputError
from mrtdose.imaging.spect_model import LU177_PHOTOPEAK_MEV, calibration_record, expected_counts
from mrtdose.imaging.volume import Volume
from mrtdose.physics.decay import mean_activity_factor_during_acquisition

__all__ = [
    "PIP_HINT",
    "DEFAULT_COLLIMATOR",
    "DEFAULT_INTRINSIC_FWHM_140KEV_CM",
    "DEFAULT_RADIUS_CM",
    "DEFAULT_N_VIEWS",
    "LEAD_DENSITY_G_PER_CM3",
    "Collimator",
    "PyTomographySimulation",
    "collimator",
    "collimator_fwhm_cm",
    "counts_per_view_per_bq_per_ml",
    "lead_mu_per_cm",
    "load_pytomography",
    "pytomography_available",
    "simulate_spect_pytomography",
]

#: How to install the optional extra.
PIP_HINT = "pip install 'mrtdose[spect]'"
#: Default collimator: Siemens Symbia medium energy (SIMIND code ``SY-ME``: hole 2.94 mm, length
#: 40.64 mm), a common choice for Lu-177 (208 keV) imaging.
DEFAULT_COLLIMATOR = "SY-ME"
#: Intrinsic resolution FWHM (cm) at 140 keV of a 3/8-inch NaI(Tl) camera (module docstring).
DEFAULT_INTRINSIC_FWHM_140KEV_CM = 0.38
#: Radius of the circular orbit (cm), detector face to the centre of rotation.
DEFAULT_RADIUS_CM = 25.0
#: Views over 360 degrees (e.g. 2 heads x 30 stops).
DEFAULT_N_VIEWS = 60
#: Density of lead (g/cm^3), CRC Handbook of Chemistry and Physics (11.34-11.35 g/cm^3).
LEAD_DENSITY_G_PER_CM3 = 11.35
#: FWHM = 2 sqrt(2 ln 2) sigma for a Gaussian.
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Reference energy (keV) of a camera's quoted intrinsic resolution.
_E_REF_KEV = 140.0


# ---------------------------------------------------------------------------------------------
# the optional dependency


def pytomography_available() -> bool:
    """True when the ``pytomography`` package can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("pytomography") is not None
    except (ImportError, ValueError):
        return False


def load_pytomography() -> SimpleNamespace:
    """Import torch and the PyTomography classes used here; restore the warnings filters.

    ``pytomography/__init__.py`` silences every warning of the process (``simplefilter("ignore")``)
    and prints a GPU message to stdout: both are undone/swallowed here. Raises
    :class:`~mrtdose.errors.InputError` naming :data:`PIP_HINT` when it is not installed.
    """
    saved = list(warnings.filters)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import pytomography
            import torch
            from pytomography.algorithms import OSEM
            from pytomography.likelihoods import PoissonLogLikelihood
            from pytomography.metadata.SPECT import SPECTObjectMeta, SPECTProjMeta, SPECTPSFMeta
            from pytomography.projectors.SPECT import SPECTSystemMatrix
            from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform
    except ImportError as exc:
        raise InputError(f"the PyTomography SPECT backend needs the optional extra: {PIP_HINT} ({exc})",
                         field="backend") from None
    finally:
        warnings.filters[:] = saved
        getattr(warnings, "_filters_mutated", lambda: None)()  # invalidate "already warned" caches (CPython)
    return SimpleNamespace(pytomography=pytomography, torch=torch, OSEM=OSEM, PoissonLogLikelihood=PoissonLogLikelihood,
                           SPECTObjectMeta=SPECTObjectMeta, SPECTProjMeta=SPECTProjMeta, SPECTPSFMeta=SPECTPSFMeta,
                           SPECTSystemMatrix=SPECTSystemMatrix, SPECTAttenuationTransform=SPECTAttenuationTransform,
                           SPECTPSFTransform=SPECTPSFTransform)


# ---------------------------------------------------------------------------------------------
# collimator-detector response


@dataclass(frozen=True)
class Collimator:
    """A parallel-hole collimator of the SIMIND database shipped with PyTomography (cm)."""

    code: str
    hole_diameter_cm: float
    septal_thickness_cm: float
    hole_length_cm: float
    description: str
    source: str


def _collimator_table() -> Path:
    spec = importlib.util.find_spec("pytomography") if pytomography_available() else None
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"named collimators are read from PyTomography's collimator table: {PIP_HINT}",
                         field="collimator")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "collim.col"


def collimator(code: str) -> Collimator:
    """The parallel-hole collimator with this **full** SIMIND code (exact, case-sensitive match,
    e.g. ``"SY-ME"``, ``"G8-MEGP"``); unknown or non-parallel codes raise InputError.

    Records of ``collim.col`` start with ``*``: ``Code Diam Septa Length HoleShape ColType ...
    Comments`` (cm; ColType 0 = parallel hole).
    """
    path = _collimator_table()
    codes = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("*"):
            continue
        parts = line[1:].split()
        if len(parts) < 6:
            continue
        codes.append(parts[0])
        if parts[0] != code:
            continue
        if int(float(parts[5])) != 0:
            raise InputError(f"collimator {code!r} is not a parallel-hole collimator (ColType {parts[5]}); "
                             "the rotate+sum projector models parallel holes only", field="collimator")
        return Collimator(code=code, hole_diameter_cm=float(parts[1]), septal_thickness_cm=float(parts[2]),
                          hole_length_cm=float(parts[3]), description=" ".join(parts[13:]).strip(),
                          source=f"SIMIND collimator database as shipped with PyTomography ({path.name})")
    near = [c for c in codes if str(code).upper().split("-")[-1] in c] or codes[:12]
    raise InputError(f"unknown collimator code {code!r}: give the full code; e.g. {', '.join(near[:12])}",
                     field="collimator")


def lead_mu_per_cm(energy_kev: float) -> float:
    """Total linear attenuation coefficient of lead (1/cm): xraylib ``CS_Total(82, E)`` x 11.35 g/cm^3."""
    import xraylib

    e = float(energy_kev)
    if not (math.isfinite(e) and 1.0 <= e <= 800.0):
        raise InputError(f"photopeak energy must be 1-800 keV, got {energy_kev!r}", field="energy_kev")
    return float(xraylib.CS_Total(82, e)) * LEAD_DENSITY_G_PER_CM3


def _sigma_params(col: Collimator, energy_kev: float, intrinsic_fwhm_140kev_cm: float) -> tuple[float, float, float]:
    """``(a, b, c)`` of ``sigma(d) = sqrt((a d + b)^2 + c^2)`` in cm (module docstring)."""
    l_eff = col.hole_length_cm - 2.0 / lead_mu_per_cm(energy_kev)
    if l_eff <= 0:
        raise InputError(f"collimator {col.code!r} is transparent at {energy_kev:g} keV (L_eff <= 0)",
                         field="collimator")
    r_int = float(intrinsic_fwhm_140kev_cm) * math.sqrt(_E_REF_KEV / float(energy_kev))
    return (col.hole_diameter_cm / l_eff / _FWHM_PER_SIGMA, col.hole_diameter_cm / _FWHM_PER_SIGMA,
            r_int / _FWHM_PER_SIGMA)


def _sigma_fit(d, a, b, c):
    """PyTomography's ``sigma_fit`` form: sigma (cm) at distance ``d`` (cm) from the collimator."""
    return np.sqrt((a * d + b) ** 2 + c**2)


def collimator_fwhm_cm(distance_cm, code: str = DEFAULT_COLLIMATOR, *, energy_kev: float = LU177_PHOTOPEAK_MEV * 1e3,
                       intrinsic_fwhm_140kev_cm: float = DEFAULT_INTRINSIC_FWHM_140KEV_CM):
    """System FWHM (cm) of the Gaussian CDR at ``distance_cm`` from the collimator face."""
    a, b, c = _sigma_params(collimator(code), energy_kev, intrinsic_fwhm_140kev_cm)
    return _sigma_fit(np.asarray(distance_cm, dtype=float), a, b, c) * _FWHM_PER_SIGMA


# ---------------------------------------------------------------------------------------------
# scale


def counts_per_view_per_bq_per_ml(voxel_ml: float, *, sensitivity_cps_per_mbq: float, view_duration_s: float,
                                  mean_activity_factor: float) -> float:
    """Expected unattenuated counts per view in one voxel per Bq/mL (equation 2 of the module
    docstring): ``1e-6 * V * S * t_view * F``. The one place where the object scale is defined."""
    return 1e-6 * float(voxel_ml) * float(sensitivity_cps_per_mbq) * float(view_duration_s) * float(mean_activity_factor)


# ---------------------------------------------------------------------------------------------
# simulation


@dataclass(frozen=True, eq=False)
class PyTomographySimulation:
    """Result of :func:`simulate_spect_pytomography`.

    Attributes
    ----------
    counts : the reconstruction in the counts convention of the light model (unit ``"counts"``,
        real-valued): :func:`~mrtdose.imaging.calibration.counts_to_activity_concentration` with
        :attr:`calibration` gives :attr:`activity` back.
    activity : the reconstruction in Bq/mL at the acquisition start (same grid as the input).
    projections : the noisy projections ``[view, r, z]`` (counts) that were reconstructed.
    expected_primary : noiseless primary projections (same shape).
    expected_scatter : the additive scatter term (same shape) or None.
    attenuation_corrected : whether the reconstruction modelled attenuation.
    calibration : as :attr:`mrtdose.imaging.spect_model.SpectSimulation.calibration`.
    method : one line describing the simulation and reconstruction.
    parameters : every parameter, JSON-serialisable (for truth.json / provenance).
    """

    counts: Volume
    activity: Volume
    projections: np.ndarray
    expected_primary: np.ndarray
    expected_scatter: np.ndarray | None
    attenuation_corrected: bool
    calibration: dict = field(default_factory=dict)
    method: str = ""
    parameters: dict = field(default_factory=dict)


def _num(x: Any, name: str, *, lo: float | None = None, hi: float | None = None, strict_lo: bool = False) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise InputError(f"must be a number, got {x!r}", field=name) from None
    if not math.isfinite(v) or (lo is not None and (v <= lo if strict_lo else v < lo)) or (hi is not None and v > hi):
        rng = f"{'>' if strict_lo else '>='} {lo:g}" if lo is not None else ""
        rng += (" and " if rng and hi is not None else "") + (f"<= {hi:g}" if hi is not None else "")
        raise InputError(f"must be a finite number {rng}, got {x!r}", field=name)
    return v


def _int(x: Any, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < lo or (hi is not None and x > hi):
        raise InputError(f"must be an integer {lo}..{hi if hi is not None else ''}, got {x!r}", field=name)
    return int(x)


def _system_matrix(pt: SimpleNamespace, shape_xyz: tuple[int, int, int], dr_cm: tuple[float, float, float],
                   angles_deg: np.ndarray, radius_cm: float, mu_xyz: np.ndarray | None, psf_meta: Any):
    dev = pt.pytomography.device
    object_meta = pt.SPECTObjectMeta(dr=list(dr_cm), shape=list(shape_xyz))
    proj_meta = pt.SPECTProjMeta(projection_shape=(shape_xyz[0], shape_xyz[2]), dr=[dr_cm[0], dr_cm[2]],
                                 angles=angles_deg, radii=np.full(len(angles_deg), float(radius_cm)))
    transforms = []
    if mu_xyz is not None:
        mu_t = pt.torch.tensor(np.ascontiguousarray(mu_xyz), dtype=pt.torch.float32, device=dev)
        transforms.append(pt.SPECTAttenuationTransform(attenuation_map=mu_t))
    if psf_meta is not None:
        transforms.append(pt.SPECTPSFTransform(psf_meta=psf_meta))
    return pt.SPECTSystemMatrix(obj2obj_transforms=transforms, proj2proj_transforms=[], object_meta=object_meta,
                                proj_meta=proj_meta)


def _gaussian_scatter(primary: np.ndarray, spr: float, sigma_px: tuple[float, float]) -> np.ndarray:
    """Per view: the primary blurred by a 2D Gaussian (r, z), rescaled to ``spr`` x its total."""
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(primary, sigma=(0.0, *sigma_px), mode="constant", cval=0.0, truncate=4.0)
    tot_p = primary.sum(axis=(1, 2), keepdims=True)
    tot_b = blurred.sum(axis=(1, 2), keepdims=True)
    return np.where(tot_b > 0, blurred * (spr * tot_p / np.where(tot_b > 0, tot_b, 1.0)), 0.0)


def simulate_spect_pytomography(
    activity_bq_per_ml: Volume,
    mu_per_cm: Volume,
    *,
    half_life_h: float,
    sensitivity_cps_per_mbq: float = 10.0,
    acquisition_duration_s: float = 1800.0,
    n_views: int = DEFAULT_N_VIEWS,
    radius_cm: float = DEFAULT_RADIUS_CM,
    collimator_code: str = DEFAULT_COLLIMATOR,
    energy_kev: float = LU177_PHOTOPEAK_MEV * 1e3,
    intrinsic_fwhm_140kev_cm: float = DEFAULT_INTRINSIC_FWHM_140KEV_CM,
    psf_min_sigmas: float = 3.0,
    iterations: int = 4,
    subsets: int = 8,
    supersample: int = 2,
    scatter_to_primary: float = 0.0,
    scatter_sigma_cm: float = 3.0,
    scatter_corrected: bool = True,
    attenuation_corrected: bool = True,
    psf_in_reconstruction: bool = True,
    noise: bool = True,
    seed: int | None = None,
) -> PyTomographySimulation:
    """Simulate projections of ``activity_bq_per_ml`` and reconstruct them with OSEM (module docstring).

    Parameters
    ----------
    activity_bq_per_ml : true activity concentration at the acquisition start (``Bq/mL``), array
        ``(nz, ny, nx)`` with ``nx == ny`` and square in-plane voxels; slices are the axial (z) axis.
    mu_per_cm : attenuation map (``1/cm``) at the photopeak on the same grid.
    half_life_h : physical half-life (decay during the acquisition, factor ``F``).
    sensitivity_cps_per_mbq, acquisition_duration_s : ``S`` and the total time ``T`` over all views.
    n_views, radius_cm : views over 360 degrees on a circular orbit of this radius.
    collimator_code : full SIMIND code of a parallel-hole collimator (:func:`collimator`).
    energy_kev, intrinsic_fwhm_140kev_cm : photopeak and intrinsic resolution (CDR).
    psf_min_sigmas : PSF kernels span at least this many sigmas everywhere (PyTomography).
    iterations, subsets : OSEM.
    supersample : simulate on a grid this many times finer (1: same grid, the inverse crime).
    scatter_to_primary, scatter_sigma_cm, scatter_corrected : the additive scatter term.
    attenuation_corrected : model attenuation in the reconstruction (the simulation always has it).
    psf_in_reconstruction : model the CDR in the reconstruction (resolution recovery).
    noise : Poisson noise on the projections (numpy generator seeded by ``seed``).
    """
    a_vol, m_vol = activity_bq_per_ml, mu_per_cm
    if a_vol.unit.replace(" ", "") != "Bq/mL":
        raise InputError(f"activity map must be in Bq/mL, got {a_vol.unit!r}", field="activity.unit")
    if m_vol.unit.replace(" ", "") not in ("1/cm", "cm^-1", "/cm"):
        raise InputError(f"attenuation map must be in 1/cm, got {m_vol.unit!r}", field="mu_per_cm.unit")
    if not m_vol.same_grid(a_vol):
        raise InputError("attenuation map and activity map must be on the same grid", field="mu_per_cm")
    a = np.asarray(a_vol.array, dtype=np.float64)
    mu = np.asarray(m_vol.array, dtype=np.float64)
    if not np.all(np.isfinite(a)) or a.min() < 0:
        raise InputError("activity map must be finite and non-negative", field="activity.array")
    if not np.all(np.isfinite(mu)) or mu.min() < 0 or mu.max() > 5.0:
        raise InputError("attenuation map must be finite, >= 0 and <= 5 /cm (is it in 1/m or HU?)",
                         field="mu_per_cm.array")
    nz, ny, nx = a.shape
    dx_mm, dy_mm, dz_mm = a_vol.spacing_mm
    if nx != ny:
        raise InputError(f"the projector needs as many columns as rows (x and y the same size), got {ny} x {nx}",
                         field="activity.shape")
    if not math.isclose(dx_mm, dy_mm, rel_tol=1e-6):
        raise InputError(f"the projector needs square in-plane voxels, got {dx_mm} x {dy_mm} mm", field="activity.spacing_mm")
    th = _num(half_life_h, "half_life_h", lo=0, strict_lo=True)
    s = _num(sensitivity_cps_per_mbq, "sensitivity_cps_per_mbq", lo=0, strict_lo=True)
    t = _num(acquisition_duration_s, "acquisition_duration_s", lo=0, strict_lo=True)
    nv = _int(n_views, "n_views", 4, 1024)
    r_cm = _num(radius_cm, "radius_cm", lo=0, strict_lo=True)
    half_fov_cm = 0.5 * nx * dx_mm / 10.0
    if r_cm <= half_fov_cm:
        raise InputError(f"radius of rotation {r_cm:g} cm is inside the field of view (half width {half_fov_cm:g} cm)",
                         field="radius_cm")
    e_kev = _num(energy_kev, "energy_kev", lo=1.0, hi=800.0)
    r_int = _num(intrinsic_fwhm_140kev_cm, "intrinsic_fwhm_140kev_cm", lo=0)
    if r_int > 2.0:
        raise InputError(f"intrinsic FWHM {r_int:g} cm is implausible (is it in mm?)", field="intrinsic_fwhm_140kev_cm")
    min_sig = _num(psf_min_sigmas, "psf_min_sigmas", lo=1.0, hi=6.0)
    n_it = _int(iterations, "iterations", 1, 200)
    n_sub = _int(subsets, "subsets", 1, nv)
    ss = _int(supersample, "supersample", 1, 3)
    spr = _num(scatter_to_primary, "scatter_to_primary", lo=0.0, hi=5.0)
    sig_s = _num(scatter_sigma_cm, "scatter_sigma_cm", lo=0.0, strict_lo=True)
    col = collimator(collimator_code)
    abc = _sigma_params(col, e_kev, r_int)

    pt = load_pytomography()
    torch = pt.torch
    dev = pt.pytomography.device

    f_mean = mean_activity_factor_during_acquisition(t / 3600.0, th)
    t_view = t / nv
    dr_cm = (dx_mm / 10.0, dy_mm / 10.0, dz_mm / 10.0)  # mm -> cm (pitfall 1)
    angles = np.linspace(0.0, 360.0, nv, endpoint=False)

    def psf_meta():
        return pt.SPECTPSFMeta(sigma_fit_params=list(abc), sigma_fit=_sigma_fit, min_sigmas=min_sig)

    # ---- simulation (optionally on the finer grid): object [x, y, z]
    a_xyz = a.transpose(2, 1, 0)
    mu_xyz = mu.transpose(2, 1, 0)
    if ss > 1:
        a_sim = np.repeat(np.repeat(np.repeat(a_xyz, ss, 0), ss, 1), ss, 2)
        mu_sim = np.repeat(np.repeat(np.repeat(mu_xyz, ss, 0), ss, 1), ss, 2)
    else:
        a_sim, mu_sim = a_xyz, mu_xyz
    dr_sim = tuple(d / ss for d in dr_cm)
    scale_sim = counts_per_view_per_bq_per_ml(a_vol.voxel_volume_ml / ss**3, sensitivity_cps_per_mbq=s,
                                              view_duration_s=t_view, mean_activity_factor=f_mean)
    scale = counts_per_view_per_bq_per_ml(a_vol.voxel_volume_ml, sensitivity_cps_per_mbq=s,
                                          view_duration_s=t_view, mean_activity_factor=f_mean)
    with torch.no_grad():
        h_sim = _system_matrix(pt, a_sim.shape, dr_sim, angles, r_cm, mu_sim, psf_meta())
        obj = torch.tensor(np.ascontiguousarray(a_sim * scale_sim), dtype=torch.float32, device=dev)
        primary = h_sim.forward(obj).detach().cpu().numpy().astype(np.float64)
        del h_sim, obj
    if ss > 1:
        primary = primary.reshape(nv, nx, ss, nz, ss).sum(axis=(2, 4))
    primary = np.clip(primary, 0.0, None)
    scatter = _gaussian_scatter(primary, spr, (sig_s / dr_cm[0], sig_s / dr_cm[2])) if spr > 0 else None
    expected = primary + (scatter if scatter is not None else 0.0)
    if noise:
        proj = np.random.default_rng(seed).poisson(expected).astype(np.float64)
    else:
        proj = expected.copy()

    # ---- reconstruction on the original grid
    with torch.no_grad():
        h = _system_matrix(pt, (nx, ny, nz), dr_cm, angles, r_cm, mu_xyz if attenuation_corrected else None,
                           psf_meta() if psf_in_reconstruction else None)
        g = torch.tensor(proj, dtype=torch.float32, device=dev)
        add = (torch.tensor(scatter, dtype=torch.float32, device=dev)
               if scatter is not None and scatter_corrected else None)
        lik = pt.PoissonLogLikelihood(h, g, additive_term=add) if add is not None else pt.PoissonLogLikelihood(h, g)
        rec = pt.OSEM(lik)(n_iters=n_it, n_subsets=n_sub).detach().cpu().numpy().astype(np.float64)
    act = np.clip(rec, 0.0, None).transpose(2, 1, 0) / scale  # Bq/mL at the acquisition start

    parameters = {
        "backend": "pytomography",
        "pytomography_version": str(getattr(pt.pytomography, "__version__", "")),
        "torch_version": str(torch.__version__),
        "device": str(dev),
        "n_views": nv, "orbit": "circular", "radius_cm": r_cm, "angles_deg": "0..360, evenly spaced",
        "collimator": {"code": col.code, "hole_diameter_cm": col.hole_diameter_cm, "hole_length_cm": col.hole_length_cm,
                       "septal_thickness_cm": col.septal_thickness_cm, "description": col.description,
                       "source": col.source},
        "energy_kev": e_kev, "lead_mu_per_cm": lead_mu_per_cm(e_kev),
        "intrinsic_fwhm_140kev_cm": r_int,
        "cdr": "Gaussian, sigma(d) = sqrt((a d + b)^2 + c^2) cm, d from the collimator face",
        "cdr_sigma_params_cm": [float(v) for v in abc],
        "system_fwhm_cm_at_10_20_30_cm": [float(v) for v in _sigma_fit(np.array([10.0, 20.0, 30.0]), *abc) * _FWHM_PER_SIGMA],
        "psf_min_sigmas": min_sig,
        "supersample": ss,
        "scatter_to_primary": spr, "scatter_sigma_cm": sig_s if spr > 0 else None,
        "scatter_corrected": bool(scatter_corrected) if spr > 0 else None,
        "reconstruction": {"algorithm": "OSEM", "iterations": n_it, "subsets": n_sub,
                           "attenuation_corrected": bool(attenuation_corrected),
                           "psf_modelled": bool(psf_in_reconstruction)},
        "noise": "Poisson on projections (numpy)" if noise else "none",
        "view_duration_s": t_view,
        "counts_per_view_per_bq_per_ml": scale,
        "expected_total_projection_counts": float(expected.sum()),
        "total_projection_counts": float(proj.sum()),
    }
    how = [f"{nv} views, circular orbit r = {r_cm:g} cm, collimator {col.code} (Gaussian CDR), attenuation",
           f"simulated on a {ss}x finer grid" if ss > 1 else "simulated on the reconstruction grid (inverse crime)",
           f"scatter SPR {spr:g} ({'modelled' if scatter_corrected else 'NOT corrected'})" if spr > 0 else "no scatter",
           "Poisson noise" + (f" (seed {seed})" if noise else " off"),
           f"OSEM {n_it}i{n_sub}s" + (" with attenuation" if attenuation_corrected else " WITHOUT attenuation correction")
           + (" and CDR modelling" if psf_in_reconstruction else "")]
    method = "PyTomography SPECT (imaging.spect_pytomography): " + "; ".join(how)
    act_vol = a_vol.with_array(act, unit="Bq/mL", modality="NM", description=method)
    counts = expected_counts(act_vol, sensitivity_cps_per_mbq=s, acquisition_duration_s=t, half_life_h=th)
    counts_vol = a_vol.with_array(counts, unit="counts", modality="NM", description=method)
    calibration = calibration_record(s, t, th, attenuation_corrected=bool(attenuation_corrected))
    for arr in (proj, primary):
        arr.flags.writeable = False
    if scatter is not None:
        scatter.flags.writeable = False
    return PyTomographySimulation(counts=counts_vol, activity=act_vol, projections=proj, expected_primary=primary,
                                  expected_scatter=scatter, attenuation_corrected=bool(attenuation_corrected),
                                  calibration=calibration, method=method, parameters=parameters)
