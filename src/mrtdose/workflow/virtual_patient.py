"""Virtual patients with known truth, written as real DICOM (CT, SPECT, RT Structure Set).

:func:`simulate_patient` builds a stylised adult male phantom (organs as ellipsoids and
cylinders, in the spirit of the MIRD stylised phantoms, Snyder et al. 1978, MIRD Pamphlet 5
revised), gives every region the kinetics of Lu-177 DOTATATE or Lu-177 PSMA-617, and writes per
imaging time point a CT series (HU) and a SPECT series (NM RECON TOMO, counts), plus an RT
Structure Set of all regions on the first time point's CT, and ``truth.json`` with the true
activities, time-integrated activities (TIAs), volumes, masses and the calibration that turns
counts into Bq/mL.

Two SPECT backends (``backend=``), recorded with their parameters in ``truth.json["spect_model"]``:

* ``"light"`` (default, always available): the image-domain model of
  :mod:`mrtdose.imaging.spect_model` (constant 3D Gaussian resolution and Poisson noise per voxel);
* ``"pytomography"``: projections with attenuation, a depth-dependent Gaussian collimator-detector
  response and Poisson noise, reconstructed with OSEM (:mod:`mrtdose.imaging.spect_pytomography`;
  optional extra ``pip install 'mrtdose[spect]'``). The bundled demo patient
  (``mrtdose/data/examples/virtual_patient_lu177``, made by ``scripts/make_demo_patient.py``) uses it.

This is test data, not anatomy: the axial positions are compressed (pelvis to parotid glands in
54 cm) so that every organ of interest for both radiopharmaceuticals fits in one small field of
view; shapes are smooth ellipsoids; there is no heart, bowel, or arms.

Output layout (``out_dir``)::

    truth.json
    tp1_004h/CT/CT_0000.dcm ...     one file per slice
    tp1_004h/NM/NM_0000.dcm         one multi-frame file, counts (no Units attribute)
    tp1_004h/RTSTRUCT/RS_0000.dcm   structures, first time point only
    tp2_024h/...                    (no CT/ with ct_time_points="first")

Each time point is one study (Study Instance UID) in which CT and SPECT share one Frame of
Reference (a SPECT/CT session); by default every session has its own Frame of Reference UID, as
on a real scanner (``same_frame_of_reference=True`` uses one for all). The patient lies in the
same place in every session (identity registration) unless ``shift_mm`` moves the whole anatomy
of a session by a known vector (LPS, mm) -- to test registration.

Counts to activity
------------------
``C [Bq/mL] = N / (T S V F) * 1e6`` at the acquisition start
(:func:`mrtdose.imaging.calibration.counts_to_activity_concentration`), with ``S``, ``T`` and the
half-life in ``truth.json["calibration"]``. Actual Frame Duration (0018,1242) in the NM file holds
the *total* acquisition time ``T`` of this calibration convention (not a per-projection time, as
a vendor would write for a RECON TOMO object).

Anatomy and CT numbers
----------------------
CT numbers are computed by our own code, like the bone point of
:mod:`mrtdose.imaging.density`: ``HU = 1000 (mu_t - mu_w) / mu_w`` at the 70 keV effective energy
of a 120 kVp beam (Bushberg et al. 2012, The Essential Physics of Medical Imaging, 3rd ed.,
ch. 10), with ``mu_t = rho_t (mu/rho)_composition`` from :mod:`mrtdose.physics.attenuation`
(ICRU-44 compositions). Densities: see :data:`TISSUES` (each with its source). Organ sizes are
chosen near the ICRP Publication 89 reference adult male masses (liver 1800 g, kidneys 310 g,
spleen 150 g, salivary glands 85 g) -- the voxelised masses are in ``truth.json``. Lesions are
spheres with the diameters of the NEMA NU 2 / IEC 61675-1 body-phantom spheres (37, 28, 22, 17,
13 mm) so that partial-volume losses can be compared with phantom work.

Kinetics
--------
:data:`KINETICS` gives, per radiopharmaceutical and kinetic group, ``A(t) = sum c_i
exp(-ln2 t / T_i)`` either as the group's total activity (MBq) or as its activity concentration
(MBq/mL); ``T_i`` are effective half-lives (physical decay included), uptake phases are negative
terms. TIA = ``sum c_i T_i / ln 2`` (times the volume for concentrations). Every group says where
its numbers come from; numbers that are modelling assumptions say so.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mrtdose import __version__
from mrtdose.errors import InputError
from mrtdose.imaging.volume import Volume
from mrtdose.workflow.synthetic import TRUTH as DEMO_TRUTH

LN2 = math.log(2.0)

#: Radiopharmaceuticals with kinetics here.
RADIOPHARMACEUTICALS = ("Lu-177-DOTATATE", "Lu-177-PSMA-617")

#: Administered activity (MBq): 7.4 GBq per cycle for both (Lutathera label, NETTER-1: Strosberg
#: et al. 2017, N Engl J Med 376:125; Pluvicto label, VISION: Sartor et al. 2021, N Engl J Med
#: 385:1091).
ADMINISTERED_MBQ = 7400.0

#: SPECT simulation backends of :func:`simulate_patient`.
BACKENDS = ("light", "pytomography")
#: Options of the pytomography backend (keyword arguments of
#: :func:`mrtdose.imaging.spect_pytomography.simulate_spect_pytomography`).
PYTOMOGRAPHY_OPTIONS = ("n_views", "radius_cm", "collimator_code", "energy_kev", "intrinsic_fwhm_140kev_cm",
                        "psf_min_sigmas", "iterations", "subsets", "supersample", "scatter_to_primary",
                        "scatter_sigma_cm", "scatter_corrected", "psf_in_reconstruction")

#: Default imaging times (h after administration).
DEFAULT_TIMES_H = (4.0, 24.0, 96.0, 168.0)

#: Default grid (nz, ny, nx) and voxel size: 4.8 mm is a common Lu-177 SPECT voxel (128 matrix,
#: 61 cm field); 64 x 64 in-plane keeps the bundle under 10 MB and square pixels (needed by the
#: Chang weighting and by PyTomography's projector).
DEFAULT_SHAPE = (112, 64, 64)
DEFAULT_VOXEL_MM = 4.8

#: Electron energy per decay of Lu-177 used to turn published absorbed doses per activity into
#: TIAs (self-dose, local deposition of electrons): 0.14792 MeV, ICRP-107 (via
#: ``mrtdose.physics.nuclides``; checked in the tests).
LU177_ELECTRON_MEV = 0.14792
#: Lu-177 half-life (h): 6.647 d, ICRP-107 (the value of ``mrtdose.physics.nuclides``; checked in the
#: tests; kept as a constant so the generator does not load the decay-chain data).
LU177_HALF_LIFE_H = 159.528
#: J per (MeV x MBq x h): 1.602176634e-13 J/MeV (CODATA 2018, exact) x 1e6 Bq/MBq x 3600 s/h.
_J_PER_MEV_MBQ_H = 1.602176634e-13 * 1e6 * 3600.0


# ---------------------------------------------------------------------------------------------
# tissues


@dataclass(frozen=True)
class Tissue:
    """A tissue of the phantom: density and the composition its attenuation is computed with."""

    density_g_per_ml: float
    composition: str | tuple[tuple[str, float], ...]
    source: str


_ICRU46 = "ICRU Report 46 (1992), adult tissue densities"

#: Tissues (density in g/mL; composition: a material of mrtdose.physics.attenuation or a mix of
#: (material, volume fraction)).
TISSUES: dict[str, Tissue] = {
    "air": Tissue(1.21e-3, "water", "dry air (NIST, 1.205e-3 g/cm^3); CT number -1000 HU by definition"),
    "soft_tissue": Tissue(1.05, "soft_tissue", "skeletal muscle 1.05 g/mL, " + _ICRU46 + "; ICRU-44 soft-tissue composition"),
    "liver": Tissue(1.06, "soft_tissue", "liver 1.06 g/mL, " + _ICRU46),
    "spleen": Tissue(1.06, "soft_tissue", "spleen 1.06 g/mL, " + _ICRU46),
    "kidney": Tissue(1.05, "soft_tissue", "kidney 1.05 g/mL, " + _ICRU46),
    "lung": Tissue(0.26, "lung", "inflated lung 0.26 g/mL, " + _ICRU46 + "; ICRU-44 lung-tissue composition"),
    "urine": Tissue(1.00, "water", "assumption: urine as water (its density is 1.005-1.03 g/mL)"),
    "marrow_bone": Tissue(
        0.15 * 1.92 + 0.85 * 1.03, (("cortical_bone", 0.15), ("soft_tissue", 0.85)),
        "assumption: spongiosa as 15 % (by volume) ICRU-44 cortical bone (1.92 g/mL) in red marrow "
        "(1.03 g/mL, " + _ICRU46 + ")"),
    "gland": Tissue(1.05, "soft_tissue", "assumption: salivary gland as soft tissue (muscle density, " + _ICRU46 + ")"),
    "lesion": Tissue(1.05, "soft_tissue", "assumption: lesions as soft tissue (muscle density, " + _ICRU46 + "); bone lesion lytic"),
}

#: CT effective energy for the HU computation (Bushberg et al. 2012, ch. 10; as in imaging.density).
CT_EFFECTIVE_ENERGY_MEV = 0.070


@lru_cache(maxsize=None)
def tissue_hu(name: str) -> float:
    """CT number (HU, rounded to an integer) of a tissue of :data:`TISSUES` (module docstring)."""
    from mrtdose.physics.attenuation import get_material, mass_attenuation_coefficient

    if name == "air":
        return -1000.0
    t = TISSUES[name]
    e = CT_EFFECTIVE_ENERGY_MEV
    mu_w = float(mass_attenuation_coefficient(e, "water")) * 1.0
    if isinstance(t.composition, str):
        mu = t.density_g_per_ml * float(mass_attenuation_coefficient(e, t.composition))
    else:  # volume mix: each part at its own nominal density
        mu = sum(f * get_material(m).density_g_per_ml * float(mass_attenuation_coefficient(e, m))
                 for m, f in t.composition)
        if "soft_tissue" in dict(t.composition):  # red marrow at 1.03 g/mL, not ICRU-44 soft tissue's 1.06
            f_st = dict(t.composition)["soft_tissue"]
            mu += f_st * (1.03 - get_material("soft_tissue").density_g_per_ml) * float(
                mass_attenuation_coefficient(e, "soft_tissue"))
    return float(round(1000.0 * (mu - mu_w) / mu_w))


# ---------------------------------------------------------------------------------------------
# anatomy (LPS mm; z = 0 at the centre of the default field of view; H0 = z of the pelvic floor)

_H0 = -0.5 * DEFAULT_SHAPE[0] * DEFAULT_VOXEL_MM  # -268.8 mm: bottom of the default field of view


def _h(h_mm: float) -> float:
    return _H0 + h_mm


@dataclass(frozen=True)
class Structure:
    """One labelled structure: a shape and the tissue that fills it."""

    name: str
    tissue: str
    kind: str  # "ellipsoid", "cylinder" (along z, elliptic cross-section, z range)
    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]  # (ax, ay, az); for cylinders az is half the length


def _ell(name, tissue, c, a):
    return Structure(name, tissue, "ellipsoid", (c[0], c[1], _h(c[2])), a)


def _sphere(name, diameter_mm, c, tissue="lesion"):
    r = diameter_mm / 2.0
    return Structure(name, tissue, "ellipsoid", (c[0], c[1], _h(c[2])), (r, r, r))


def _cyl(name, tissue, xy, axy, h_lo, h_hi):
    return Structure(name, tissue, "cylinder", (xy[0], xy[1], _h(0.5 * (h_lo + h_hi))), (axy[0], axy[1], 0.5 * (h_hi - h_lo)))


#: Body outline: trunk (elliptic cylinder 28 x 20 cm, as the PyTomography probe's phantom in the
#: shared notes) up to h = 450 mm, then head/neck (15 x 13 cm). Both extend beyond the field of view.
BODY = (_cyl("trunk", "soft_tissue", (0.0, 0.0), (140.0, 100.0), -1000.0, 450.0),
        _cyl("head_neck", "soft_tissue", (0.0, 0.0), (75.0, 65.0), 450.0, 2000.0))

#: Lungs: ellipsoids (semi-axes 52 x 72 x 77 mm, 1.21 L each, centred 64 mm either side of the
#: midline, h = 363 mm), the same analytic volume as the earlier 55 x 75 x 70 mm lungs (2.42 L both;
#: stylised, axially compressed like the rest of the anatomy, not a reference value). Shape and
#: place are fixed by the trunk above: every point of a lung is at least 11.7 mm inside the trunk's
#: outline (a chest wall of soft tissue -- no ribs are modelled -- of >= 10 mm everywhere, as in a
#: real thorax; the earlier lungs came within 1.4 mm of the skin, so the CT body outline left part of
#: them outside the body), the apices 10 mm below the shoulders (h = 450 mm), 24 mm of mediastinum
#: between them. The liver and spleen (painted later) take the lungs' bases: 2.16 L of lung voxels
#: remain on the default grid (truth.json).
LUNG_CENTRE_MM = (64.0, 0.0, 363.0)
LUNG_SEMI_AXES_MM = (52.0, 72.0, 77.0)
#: Minimum chest-wall thickness (mm) between a lung and the trunk's outline (checked in the tests).
CHEST_WALL_MIN_MM = 10.0

#: Lesion diameters (mm): NEMA NU 2-2018 / IEC 61675-1 body-phantom spheres.
LESION_DIAMETERS_MM = (37.0, 28.0, 22.0, 17.0, 13.0)

#: Structures painted in this order inside the body (later ones win where they overlap).
#: (x, y, h) centres in mm (x to the patient's left, y posterior, h above the pelvic floor).
STRUCTURES: tuple[Structure, ...] = (
    _ell("lung_left", "lung", LUNG_CENTRE_MM, LUNG_SEMI_AXES_MM),
    _ell("lung_right", "lung", (-LUNG_CENTRE_MM[0], *LUNG_CENTRE_MM[1:]), LUNG_SEMI_AXES_MM),
    _ell("liver", "liver", (-50.0, -15.0, 270.0), (90.0, 65.0, 70.0)),
    _ell("spleen", "spleen", (95.0, 30.0, 300.0), (25.0, 32.0, 45.0)),
    _ell("kidney_left_cortex", "kidney", (75.0, 50.0, 215.0), (28.0, 23.0, 50.0)),
    _ell("kidney_left_medulla", "kidney", (75.0, 50.0, 215.0), (18.2, 15.0, 32.5)),
    _ell("kidney_right_cortex", "kidney", (-75.0, 50.0, 205.0), (28.0, 23.0, 50.0)),
    _ell("kidney_right_medulla", "kidney", (-75.0, 50.0, 205.0), (18.2, 15.0, 32.5)),
    _ell("bladder", "urine", (0.0, -25.0, 50.0), (40.0, 35.0, 35.0)),
    _cyl("spine", "marrow_bone", (0.0, 62.0), (18.0, 18.0), 70.0, 440.0),
    _ell("pelvis", "marrow_bone", (95.0, 25.0, 110.0), (16.0, 45.0, 55.0)),
    _ell("pelvis", "marrow_bone", (-95.0, 25.0, 110.0), (16.0, 45.0, 55.0)),
    _ell("parotid_left", "gland", (48.0, 10.0, 505.0), (12.0, 20.0, 25.0)),
    _ell("parotid_right", "gland", (-48.0, 10.0, 505.0), (12.0, 20.0, 25.0)),
    _ell("submandibular_left", "gland", (35.0, -20.0, 470.0), (12.0, 14.0, 12.0)),
    _ell("submandibular_right", "gland", (-35.0, -20.0, 470.0), (12.0, 14.0, 12.0)),
    _sphere("lesion_1", LESION_DIAMETERS_MM[0], (-60.0, -20.0, 270.0)),   # liver metastasis
    _sphere("lesion_2", LESION_DIAMETERS_MM[1], (25.0, -45.0, 175.0)),    # para-aortic / mesenteric node
    _sphere("lesion_3", LESION_DIAMETERS_MM[2], (95.0, 25.0, 110.0)),     # bone (left iliac) metastasis
    _sphere("lesion_4", LESION_DIAMETERS_MM[3], (-50.0, -15.0, 125.0)),   # iliac node
    _sphere("lesion_5", LESION_DIAMETERS_MM[4], (45.0, -65.0, 150.0)),    # small node
)

#: Label values of the label map (0 = outside the body).
LABELS: dict[str, int] = {"remainder": 1}
for _s in STRUCTURES:
    LABELS.setdefault(_s.name, len(LABELS) + 1)
LESIONS = tuple(n for n in LABELS if n.startswith("lesion_"))
_TISSUE_OF = {"remainder": "soft_tissue", **{s.name: s.tissue for s in STRUCTURES}}

#: Regions reported in truth.json and written as ROIs: every label, plus unions.
UNIONS: dict[str, tuple[str, ...]] = {
    "body": tuple(LABELS),
    "lungs": ("lung_left", "lung_right"),
    "kidney_left": ("kidney_left_cortex", "kidney_left_medulla"),
    "kidney_right": ("kidney_right_cortex", "kidney_right_medulla"),
    "kidneys": ("kidney_left_cortex", "kidney_left_medulla", "kidney_right_cortex", "kidney_right_medulla"),
    "bone_marrow": ("spine", "pelvis"),
    "salivary_glands": ("parotid_left", "parotid_right", "submandibular_left", "submandibular_right"),
}

#: Kinetic groups: which labels share one time-activity curve.
GROUPS: dict[str, tuple[str, ...]] = {
    "remainder": ("remainder",),
    "lungs": UNIONS["lungs"],
    "liver": ("liver",),
    "spleen": ("spleen",),
    "kidneys": UNIONS["kidneys"],
    "bladder": ("bladder",),
    "bone_marrow": UNIONS["bone_marrow"],
    "salivary_glands": UNIONS["salivary_glands"],
    **{n: (n,) for n in LESIONS},
}


def _inside(s: Structure, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    cx, cy, cz = s.centre_mm
    ax, ay, az = s.semi_axes_mm
    if s.kind == "ellipsoid":
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1.0
    return (((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0) & (np.abs(z - cz) <= az)


def grid_volume(shape: Sequence[int] = DEFAULT_SHAPE, voxel_mm: float = DEFAULT_VOXEL_MM) -> Volume:
    """An empty volume of the phantom's grid: centred on the origin (LPS), identity direction,
    slices along +z (feet to head)."""
    nz, ny, nx = (int(n) for n in shape)
    if min(nz, ny, nx) < 1:
        raise InputError(f"shape must be three positive integers (nz, ny, nx), got {tuple(shape)}", field="shape")
    v = float(voxel_mm)
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"voxel_mm must be positive, got {voxel_mm!r}", field="voxel_mm")
    origin = (-0.5 * (nx - 1) * v, -0.5 * (ny - 1) * v, -0.5 * (nz - 1) * v)
    return Volume(array=np.zeros((nz, ny, nx), dtype=np.uint8), spacing_mm=(v, v, v), origin_mm=origin, unit="1",
                  modality="LABEL")


def label_map(grid: Volume, shift_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Label map (int16, :data:`LABELS`) on ``grid``, anatomy moved by ``shift_mm`` (LPS).

    A voxel belongs to a structure when its centre is inside it (the voxelised anatomy *is* the
    truth: activities are uniform over the voxels of a region).
    """
    nz, ny, nx = grid.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    p = grid.index_to_physical(np.stack([i, j, k], axis=-1).astype(np.float64)) - np.asarray(shift_mm, float)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    labels = np.zeros(grid.shape, dtype=np.int16)
    body = np.zeros(grid.shape, dtype=bool)
    for s in BODY:
        body |= _inside(s, x, y, z)
    labels[body] = LABELS["remainder"]
    for s in STRUCTURES:  # per structure, vectorised over voxels
        labels[_inside(s, x, y, z) & body] = LABELS[s.name]
    return labels


def ct_from_labels(labels: np.ndarray) -> np.ndarray:
    """CT numbers (HU) of a label map (air outside the body)."""
    lut = np.full(max(LABELS.values()) + 1, tissue_hu("air"))
    for name, v in LABELS.items():
        lut[v] = tissue_hu(_TISSUE_OF[name])
    return lut[labels]


# ---------------------------------------------------------------------------------------------
# kinetics


def _terms_from_dose(gy_per_gbq: float, t_eff_h: float, t_uptake_h: float, density_g_per_ml: float) -> list[tuple[float, float]]:
    """Concentration terms (MBq/mL) whose electron self-dose (local deposition, ICRP-107 electron
    energy of Lu-177) after ADMINISTERED_MBQ is ``gy_per_gbq`` per GBq:
    ``TIA/mL = D rho / (E k)``, ``c0 = (TIA/mL) ln2 / (T_eff - T_up)``."""
    dose_gy = gy_per_gbq * ADMINISTERED_MBQ / 1000.0
    tia_per_ml = dose_gy * density_g_per_ml * 1e-3 / (LU177_ELECTRON_MEV * _J_PER_MEV_MBQ_H)
    c0 = tia_per_ml * LN2 / (t_eff_h - t_uptake_h)
    return [(c0, t_eff_h), (-c0, t_uptake_h)]


#: Remainder volume (mL) of the demo phantom (``synthetic.voxel_phantom()``: 78201 voxels of
#: 4.8 mm, checked in the tests): the demo's remainder kinetics (900 MBq) become a concentration.
_DEMO_REMAINDER_ML = 78201 * 0.110592
_DOTA_REMAINDER_C = 900.0 / _DEMO_REMAINDER_ML  # MBq/mL

_AAPM26 = ("median effective half-lives from SPECT/CT at 4, 24, 48, 72 h in 20 patients: 'Normal-Organ "
           "Effective Half-Lives for 177Lu-PSMA', AAPM 2026 annual meeting abstract (paper 2620)")
_HOHBERG = "Hohberg M et al. 2016, Mol Imaging Biol 18:437 (9 patients, planar dosimetry)"
_KABASAKAL = "Kabasakal L et al. 2017, Mol Imaging Radionucl Ther 26:62 (7 patients)"
_KURTH = "Kurth J et al. 2018, EJNMMI Res 8:32 (50 patients)"

#: Per radiopharmaceutical and group: ``{"activity_mbq" | "concentration_mbq_per_ml": terms,
#: "weights": {label: relative concentration} (optional), "source": str}``.
KINETICS: dict[str, dict[str, dict[str, Any]]] = {
    "Lu-177-DOTATATE": {
        "remainder": {"concentration_mbq_per_ml": [(_DOTA_REMAINDER_C, 30.0), (-_DOTA_REMAINDER_C, 0.3)],
                      "source": "demo patient (workflow.synthetic, remainder 900 MBq, T_eff 30 h) per mL of its remainder"},
        "lungs": {"concentration_mbq_per_ml": [(_DOTA_REMAINDER_C * 0.26 / 1.05, 30.0), (-_DOTA_REMAINDER_C * 0.26 / 1.05, 0.3)],
                  "source": "assumption: remainder kinetics scaled by the lung/soft-tissue density ratio 0.26/1.05"},
        "liver": {"activity_mbq": [tuple(t) for t in DEMO_TRUTH["liver"]["terms"]],
                  "source": "demo patient (workflow.synthetic.TRUTH['liver']); lesion_1 is not part of it"},
        "spleen": {"activity_mbq": [(7000.0 * LN2 / 70.0, 70.0)],
                   "source": "demo patient (workflow.synthetic: spleen TIA 7000 MBq h, T_eff 70 h)"},
        "kidneys": {"activity_mbq": [tuple(t) for t in DEMO_TRUTH["kidneys"]["terms"]],
                    "weights": {"kidney_left_cortex": 2.0, "kidney_left_medulla": 1.0,
                                "kidney_right_cortex": 2.0, "kidney_right_medulla": 1.0},
                    "source": "demo patient (workflow.synthetic.TRUTH['kidneys']); cortex:medulla concentration 2:1 is an "
                              "assumption (peptides are reabsorbed in the proximal tubules of the cortex: Vegt et al. "
                              "2010, J Nucl Med 51:1049)"},
        "bladder": {"activity_mbq": [(60.0, 8.0), (-60.0, 0.5)],
                    "source": "assumption: small bladder content (patient voids before each scan)"},
        "bone_marrow": {"concentration_mbq_per_ml": [(_DOTA_REMAINDER_C, 30.0), (-_DOTA_REMAINDER_C, 0.3)],
                        "source": "assumption: no specific marrow uptake (marrow concentration = remainder)"},
        "salivary_glands": {"concentration_mbq_per_ml": [(_DOTA_REMAINDER_C, 30.0), (-_DOTA_REMAINDER_C, 0.3)],
                            "source": "assumption: no specific salivary uptake of DOTATATE (= remainder)"},
        **{n: {"concentration_mbq_per_ml": [(c / DEMO_TRUTH["tumour_1"]["volume_ml"], t) for c, t in DEMO_TRUTH["tumour_1"]["terms"]],
               "source": "demo patient tumour_1 (workflow.synthetic.TRUTH: 120 MBq in 25 mL, T_eff 90 h, uptake 2 h) "
                         "as a concentration, the same in every lesion"} for n in LESIONS},
    },
    "Lu-177-PSMA-617": {
        "remainder": {"concentration_mbq_per_ml": [(0.174, 4.0), (0.0887, 40.5)],
                      "source": "fast renal clearance plus the whole-body T_eff 40.5 h of " + _KURTH + "; amplitudes "
                                "chosen so that an ~18 L remainder holds about half the administered activity at 4 h and "
                                "30 % at 12 h, as the excretion reported there (assumption on the shape)"},
        "lungs": {"concentration_mbq_per_ml": [(0.02, 15.1), (-0.02, 0.5)],
                  "source": "T_eff 15.1 h: " + _AAPM26 + "; amplitude 0.02 MBq/mL and 0.5 h uptake: assumption"},
        "liver": {"concentration_mbq_per_ml": _terms_from_dose(0.10, 22.9, 0.5, 1.06),
                  "source": "T_eff 22.9 h: " + _AAPM26 + "; amplitude from an assumed 0.10 Gy/GBq (electron self-dose)"},
        "spleen": {"concentration_mbq_per_ml": _terms_from_dose(0.10, 16.8, 0.5, 1.06),
                   "source": "T_eff 16.8 h: " + _AAPM26 + "; amplitude from an assumed 0.10 Gy/GBq (electron self-dose)"},
        "kidneys": {"concentration_mbq_per_ml": _terms_from_dose(0.53, 35.5, 0.5, 1.05),
                    "weights": {"kidney_left_cortex": 2.0, "kidney_left_medulla": 1.0,
                                "kidney_right_cortex": 2.0, "kidney_right_medulla": 1.0},
                    "source": "0.53 Gy/GBq: " + _HOHBERG + "; T_eff 35.5 h: " + _AAPM26 + "; 0.5 h uptake and "
                              "cortex:medulla 2:1 (mean over the kidneys kept): assumptions"},
        "bladder": {"activity_mbq": [(150.0, 6.0), (-150.0, 0.5)],
                    "source": "assumption: bladder content after voiding before each scan"},
        "bone_marrow": {"concentration_mbq_per_ml": _terms_from_dose(0.030, 32.0, 0.5, 1.03),
                        "source": "0.030 Gy/GBq: " + _KABASAKAL + "; T_eff 32.0 h: " + _AAPM26 + "; 0.5 h uptake: assumption"},
        "salivary_glands": {"concentration_mbq_per_ml": _terms_from_dose(0.72, 42.2, 0.5, 1.05),
                            "source": "0.72 Gy/GBq: " + _HOHBERG + "; T_eff 42.2 h (parotid): " + _AAPM26 +
                                      "; 0.5 h uptake: assumption"},
        **{n: {"concentration_mbq_per_ml": [(1.5, 60.0), (-1.5, 1.0)],
               "source": "assumption: 1.5 MBq/mL, T_eff 60 h, 1 h uptake, the same in every lesion"} for n in LESIONS},
    },
}


def _canonical(name: str) -> str:
    key = "".join(ch for ch in str(name).lower() if ch.isalnum())
    for r in RADIOPHARMACEUTICALS:
        if "".join(ch for ch in r.lower() if ch.isalnum()) == key:
            return r
    aliases = {"lutathera": "Lu-177-DOTATATE", "177ludotatate": "Lu-177-DOTATATE", "pluvicto": "Lu-177-PSMA-617",
               "177lupsma617": "Lu-177-PSMA-617"}
    if key in aliases:
        return aliases[key]
    raise InputError(f"unknown radiopharmaceutical {name!r}; available: {', '.join(RADIOPHARMACEUTICALS)}",
                     field="radiopharmaceutical")


def evaluate_terms(terms: Sequence[Sequence[float]], t_h: float | np.ndarray) -> float | np.ndarray:
    """``sum c exp(-ln2 t / T)``."""
    t = np.asarray(t_h, dtype=float)
    out = sum(c * np.exp(-LN2 * t / T) for c, T in terms)
    return float(out) if np.ndim(out) == 0 else out


def integrate_terms(terms: Sequence[Sequence[float]]) -> float:
    """``integral_0^inf sum c exp(-ln2 t / T) dt = sum c T / ln2``."""
    return float(sum(c * T / LN2 for c, T in terms))


def _label_concentrations(rp: str, volumes_ml: Mapping[str, float], t_h: float) -> dict[str, float]:
    """Activity concentration (MBq/mL) in every label at ``t_h`` (module docstring)."""
    out: dict[str, float] = {}
    for group, labels in GROUPS.items():
        spec = KINETICS[rp][group]
        w = {lab: float(spec.get("weights", {}).get(lab, 1.0)) for lab in labels}
        v_group = sum(volumes_ml[lab] for lab in labels)
        wv = sum(w[lab] * volumes_ml[lab] for lab in labels)
        if v_group <= 0:
            for lab in labels:
                out[lab] = 0.0
            continue
        if "activity_mbq" in spec:
            mean_c = evaluate_terms(spec["activity_mbq"], t_h) / v_group
        else:
            mean_c = evaluate_terms(spec["concentration_mbq_per_ml"], t_h)
        for lab in labels:
            out[lab] = mean_c * w[lab] * v_group / wv
    return out


def _label_tia(rp: str, volumes_ml: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for group, labels in GROUPS.items():
        spec = KINETICS[rp][group]
        w = {lab: float(spec.get("weights", {}).get(lab, 1.0)) for lab in labels}
        v_group = sum(volumes_ml[lab] for lab in labels)
        wv = sum(w[lab] * volumes_ml[lab] for lab in labels)
        if v_group <= 0:
            out.update({lab: 0.0 for lab in labels})
            continue
        tia_group = (integrate_terms(spec["activity_mbq"]) if "activity_mbq" in spec
                     else integrate_terms(spec["concentration_mbq_per_ml"]) * v_group)
        for lab in labels:
            out[lab] = tia_group * w[lab] * volumes_ml[lab] / wv
    return out


# ---------------------------------------------------------------------------------------------
# the generator


def _uid(*parts: Any) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["mrtdose-virtual-patient", *[str(p) for p in parts]])


def _write_json_atomic(path: Path, doc: Any) -> None:
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def simulate_patient(
    out_dir: str | os.PathLike,
    *,
    radiopharmaceutical: str = "Lu-177-DOTATATE",
    times_h: Sequence[float] = DEFAULT_TIMES_H,
    seed: int = 1,
    shape: Sequence[int] = DEFAULT_SHAPE,
    voxel_mm: float = DEFAULT_VOXEL_MM,
    fwhm_mm: float | None = None,
    sensitivity_cps_per_mbq: float = 10.0,
    duration_s: float = 1800.0,
    attenuation_corrected: bool = True,
    administration_time: datetime | None = None,
    shift_mm: Mapping[int, Sequence[float]] | None = None,
    same_frame_of_reference: bool = False,
    patient_id: str | None = None,
    backend: str = "light",
    backend_options: Mapping[str, Any] | None = None,
    ct_time_points: str = "all",
) -> dict[str, Any]:
    """Write a virtual patient (CT + SPECT per time point, RTSTRUCT, truth.json) to ``out_dir``.

    Parameters
    ----------
    radiopharmaceutical : ``"Lu-177-DOTATATE"`` or ``"Lu-177-PSMA-617"`` (:data:`KINETICS`).
    times_h : imaging times after administration (h), each > 0, strictly increasing.
    seed : seeds the Poisson noise of every time point (same seed, same images and truth); each time
        point's own noise seed (spawned from it) is ``truth.json["time_points"][i]["noise_seed"]``.
    shape, voxel_mm : grid ``(nz, ny, nx)`` and isotropic voxel size; the anatomy is fixed in
        patient coordinates (a smaller grid crops it).
    fwhm_mm : SPECT resolution (constant 3D Gaussian); default
        :data:`mrtdose.imaging.spect_model.DEFAULT_FWHM_MM`.
    sensitivity_cps_per_mbq : system sensitivity ``S``. Default 10 cps/MBq, the order of the
        10.6-10.8 cps/MBq measured for Lu-177, 208 keV +/- 10 % window, medium-energy low-
        penetration collimator, Jaszczak phantom (CERN Indico contribution 6513996, 2025).
    duration_s : total acquisition time ``T`` per SPECT (default 30 min, e.g. 60 stops x 30 s with
        two heads; the MRTDosimetry phantom protocol used 120 projections x 60 s, Tran-Gia et al.
        2021, EJNMMI Phys 8:55, Table 2).
    attenuation_corrected : SPECT as an attenuation-corrected reconstruction (default) or the
        Chang-weighted uncorrected variant (:mod:`mrtdose.imaging.spect_model`).
    administration_time : timezone-aware; default 2026-01-05 10:00 UTC (the demo case's).
    shift_mm : ``{time-point index (0-based): (dx, dy, dz)}``: the patient lies shifted by this LPS
        vector (mm) in that session (registration tests). The RTSTRUCT follows time point 0.
    same_frame_of_reference : one Frame of Reference UID for all sessions (default: one each).
    patient_id : default ``"VP-<radiopharmaceutical>-<seed>"``.
    backend : ``"light"`` (default, always available: :mod:`mrtdose.imaging.spect_model`) or
        ``"pytomography"`` (projections with attenuation, depth-dependent collimator response and
        Poisson noise, OSEM reconstruction: :mod:`mrtdose.imaging.spect_pytomography`; needs the
        optional extra ``mrtdose[spect]``, InputError otherwise). ``fwhm_mm`` applies to the light
        backend only.
    backend_options : keyword arguments of
        :func:`~mrtdose.imaging.spect_pytomography.simulate_spect_pytomography` (:data:`PYTOMOGRAPHY_OPTIONS`:
        ``iterations``, ``subsets``, ``n_views``, ``collimator_code``, ``supersample``,
        ``scatter_to_primary``, ...); the pytomography backend only.
    ct_time_points : ``"all"`` (a CT series in every session, default) or ``"first"`` (CT at the
        first time point only, SPECT-only sessions after it: a smaller bundle).

    Returns
    -------
    dict with ``out_dir``, ``truth_json``, ``rtstruct``, ``time_points`` (per time point:
    ``time_h``, ``acquisition_time``, ``ct_dir``, ``nm_dir``) and ``truth`` (the truth.json
    document).
    """
    from mrtdose.imaging.dicom_synth import write_ct_series, write_nm_series
    from mrtdose.imaging.density import density_from_ct
    from mrtdose.imaging.rtstruct import write_rtstruct
    from mrtdose.imaging.spect_model import DEFAULT_FWHM_MM, mu_map_from_ct, simulate_spect

    rp = _canonical(radiopharmaceutical)
    times = tuple(float(t) for t in times_h)
    if not times or any(not (math.isfinite(t) and t > 0) for t in times) or any(b <= a for a, b in zip(times, times[1:])):
        raise InputError(f"times_h must be positive and strictly increasing, got {tuple(times_h)}", field="times_h")
    shifts = {int(k): tuple(float(x) for x in v) for k, v in (shift_mm or {}).items()}
    for k, v in shifts.items():
        if not 0 <= k < len(times) or len(v) != 3 or not all(math.isfinite(x) for x in v):
            raise InputError(f"shift_mm needs {{time-point index 0..{len(times) - 1}: (dx, dy, dz)}}, got {k}: {v}",
                             field="shift_mm")
    if backend not in BACKENDS:
        raise InputError(f"unknown SPECT backend {backend!r}; choose one of {', '.join(BACKENDS)}", field="backend")
    opts = dict(backend_options or {})
    if backend == "light" and opts:
        raise InputError(f"backend_options apply to the pytomography backend only, got {sorted(opts)}",
                         field="backend_options")
    unknown = sorted(set(opts) - set(PYTOMOGRAPHY_OPTIONS))
    if unknown:
        raise InputError(f"unknown backend option(s) {unknown}; known: {', '.join(PYTOMOGRAPHY_OPTIONS)}",
                         field="backend_options")
    if backend == "pytomography" and fwhm_mm is not None:
        raise InputError("fwhm_mm is the light model's resolution; the pytomography backend models the collimator",
                         field="fwhm_mm")
    if ct_time_points not in ("all", "first"):
        raise InputError(f"ct_time_points must be 'all' or 'first', got {ct_time_points!r}", field="ct_time_points")
    if backend == "pytomography":
        from mrtdose.imaging.spect_pytomography import load_pytomography

        load_pytomography()  # InputError naming the extra if it is not installed; before anything is written
    admin = administration_time or datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
    if admin.tzinfo is None or admin.utcoffset() is None:
        raise InputError("administration_time must be timezone-aware", field="administration_time")
    fwhm = DEFAULT_FWHM_MM if fwhm_mm is None else float(fwhm_mm)
    if backend == "pytomography":
        fwhm = None
    half_life_h = LU177_HALF_LIFE_H
    pid = patient_id or f"VP-{rp}-{seed}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    grid = grid_volume(shape, voxel_mm)
    v_ml = grid.voxel_volume_ml
    ss = np.random.SeedSequence(int(seed))
    child_seeds = [int(s.generate_state(1)[0]) for s in ss.spawn(len(times))]
    for_shared = _uid(pid, seed, "FoR")

    tp_docs, tp_out = [], []
    regions: dict[str, dict[str, Any]] = {}
    rtstruct_path: Path | None = None
    calibration: dict[str, Any] = {}
    ref_volumes: dict[str, float] = {}
    method = ""
    parameters: dict[str, Any] = {}
    for it, t in enumerate(times):  # per time point
        shift = shifts.get(it, (0.0, 0.0, 0.0))
        labels = label_map(grid, shift)
        counts_per_label = np.bincount(labels.ravel(), minlength=max(LABELS.values()) + 1)
        volumes = {n: float(counts_per_label[v]) * v_ml for n, v in LABELS.items()}
        if it == 0:
            ref_volumes = volumes
        conc = _label_concentrations(rp, volumes, t)
        lut = np.zeros(max(LABELS.values()) + 1)
        for n, v in LABELS.items():
            lut[v] = conc[n] * 1e6  # Bq/mL
        acq = admin + timedelta(hours=t)
        activity = grid.with_array(lut[labels], unit="Bq/mL", modality="NM", acquisition_time=acq,
                                   description=f"true activity concentration at {t:g} h")
        ct = grid.with_array(ct_from_labels(labels), unit="HU", modality="CT", acquisition_time=acq,
                             description="virtual patient CT")
        tp_extra: dict[str, Any] = {}
        if backend == "pytomography":
            from mrtdose.imaging.spect_pytomography import simulate_spect_pytomography

            psim = simulate_spect_pytomography(
                activity, mu_map_from_ct(ct), half_life_h=half_life_h, sensitivity_cps_per_mbq=sensitivity_cps_per_mbq,
                acquisition_duration_s=duration_s, attenuation_corrected=attenuation_corrected, noise=True,
                seed=child_seeds[it], **opts)
            counts, calibration, method = psim.counts, psim.calibration, psim.method
            per_tp = ("expected_total_projection_counts", "total_projection_counts")
            parameters = {k: v for k, v in psim.parameters.items() if k not in per_tp}
            tp_extra = {k: psim.parameters[k] for k in per_tp}
        else:
            mu = mu_map_from_ct(ct) if not attenuation_corrected else None
            sim = simulate_spect(activity, half_life_h=half_life_h, sensitivity_cps_per_mbq=sensitivity_cps_per_mbq,
                                 acquisition_duration_s=duration_s, fwhm_mm=fwhm, mu_per_cm=mu,
                                 attenuation_corrected=attenuation_corrected, noise=True, seed=child_seeds[it])
            counts, calibration, method = sim.counts, sim.calibration, sim.method
            parameters = {"backend": "light", "fwhm_mm": fwhm, "noise": "Poisson per voxel (numpy)",
                          "chang_n_angles": None if attenuation_corrected else 32}
        tp_name = f"tp{it + 1}_{int(round(t)):03d}h"
        study = _uid(pid, seed, tp_name, "study")
        for_uid = for_shared if same_frame_of_reference else _uid(pid, seed, tp_name, "FoR")
        ct_dir, nm_dir = out / tp_name / "CT", out / tp_name / "NM"
        write_ct = ct_time_points == "all" or it == 0
        if write_ct:
            write_ct_series(ct, ct_dir, patient_id=pid, study_uid=study, series_uid=_uid(pid, seed, tp_name, "CT"),
                            frame_of_reference_uid=for_uid, series_description=f"virtual patient CT {t:g} h",
                            acquisition_time=acq)
        write_nm_series(counts, nm_dir, patient_id=pid, study_uid=study, series_uid=_uid(pid, seed, tp_name, "NM"),
                        frame_of_reference_uid=for_uid, series_description=f"virtual patient SPECT {t:g} h (counts, {backend})",
                        acquisition_time=acq, injected_activity_bq=ADMINISTERED_MBQ * 1e6, injection_time=admin,
                        radiopharmaceutical=rp, radionuclide="Lu-177", half_life_s=half_life_h * 3600.0,
                        frame_duration_ms=float(duration_s) * 1000.0)
        if it == 0:
            masks = {n: labels == v for n, v in LABELS.items() if n != "remainder" and counts_per_label[v] > 0}
            for u, parts in UNIONS.items():
                m = np.isin(labels, [LABELS[p] for p in parts])
                if m.any():
                    masks[u] = m
            types = {n: ("EXTERNAL" if n == "body" else "GTV" if n.startswith("lesion_") else "ORGAN") for n in masks}
            rs = write_rtstruct(masks, ct, patient_id=pid, frame_of_reference_uid=for_uid, study_instance_uid=study,
                                patient_name="SYNTHETIC^PATIENT", structure_set_label="virtual patient",
                                series_description="virtual patient structures", roi_interpreted_types=types,
                                content_time=acq)
            rtstruct_path = out / tp_name / "RTSTRUCT" / "RS_0000.dcm"
            rtstruct_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = rtstruct_path.with_name(".RS_0000.dcm.tmp")
            tmp.write_bytes(rs)
            os.replace(tmp, rtstruct_path)
            density = np.asarray(density_from_ct(ct).array)
        # truth per region at this time point
        names = list(LABELS) + list(UNIONS)
        for name in names:
            parts = UNIONS.get(name, (name,))
            r = regions.setdefault(name, {"labels": list(parts), "activity_mbq": [], "mean_concentration_bq_per_ml": []})
            vol = sum(volumes[p] for p in parts)
            act = sum(conc[p] * volumes[p] for p in parts)
            r["activity_mbq"].append(act)
            r["mean_concentration_bq_per_ml"].append(act / vol * 1e6 if vol > 0 else 0.0)
            if it == 0:
                m = np.isin(labels, [LABELS[p] for p in parts])
                r["volume_ml"] = vol
                r["mass_g"] = float(density[m].sum() * v_ml)
                r["voxels"] = int(m.sum())
        tp_docs.append({
            "index": it, "name": tp_name, "time_h": t, "acquisition_time": acq.isoformat(),
            "patient_shift_mm": list(shift), "study_instance_uid": study, "frame_of_reference_uid": for_uid,
            "noise_seed": child_seeds[it],
            "ct_dir": str(ct_dir.relative_to(out)) if write_ct else None, "nm_dir": str(nm_dir.relative_to(out)),
            "total_counts": (int(np.asarray(counts.array).sum()) if backend == "light"
                             else float(np.asarray(counts.array).sum())),
            "true_total_activity_in_fov_mbq": float(np.asarray(activity.array).sum() * v_ml * 1e-6),
            **tp_extra,
        })
        tp_out.append({"time_h": t, "acquisition_time": acq, "ct_dir": ct_dir if write_ct else None, "nm_dir": nm_dir})

    tia = _label_tia(rp, ref_volumes)
    for name, r in regions.items():
        r["tia_mbq_h"] = float(sum(tia[p] for p in r["labels"]))
    kin_doc = {}
    for group, spec in KINETICS[rp].items():
        key = "activity_mbq" if "activity_mbq" in spec else "concentration_mbq_per_ml"
        kin_doc[group] = {"labels": list(GROUPS[group]), "form": "sum c exp(-ln2 t / T_eff), t in h",
                          "terms_unit": "MBq" if key == "activity_mbq" else "MBq/mL",
                          "terms": [[float(c), float(T)] for c, T in spec[key]],
                          "relative_concentration_weights": dict(spec.get("weights", {})),
                          "tia": integrate_terms(spec[key]),
                          "tia_unit": "MBq h" if key == "activity_mbq" else "MBq h/mL",
                          "source": spec["source"]}
    truth = {
        "generator": "mrtdose.workflow.virtual_patient.simulate_patient",
        "mrtdose_version": str(__version__),
        "note": "Synthetic virtual patient with known truth; not patient data. Stylised anatomy (module docstring).",
        "seed": int(seed),
        "patient_id": pid,
        "radiopharmaceutical": rp,
        "nuclide": "Lu-177",
        "half_life_h": half_life_h,
        "administration": {"activity_mbq": ADMINISTERED_MBQ, "time": admin.isoformat()},
        "grid": {"shape_zyx": list(grid.shape), "voxel_mm": float(voxel_mm), "origin_mm": list(grid.origin_mm),
                 "direction": grid.direction.tolist(), "voxel_volume_ml": v_ml},
        "calibration": {**calibration, "frame_duration_convention":
                        "NM Actual Frame Duration holds the total acquisition time T (ms) of this calibration"},
        "spect_model": {"backend": backend, "fwhm_mm": fwhm, "attenuation_corrected": bool(attenuation_corrected),
                        "method": method, "parameters": parameters},
        "ct_time_points": ct_time_points,
        "time_points": tp_docs,
        "rtstruct": {"file": str(rtstruct_path.relative_to(out)) if rtstruct_path else None, "time_point": 0,
                     "rois": sorted(n for n in regions if n != "remainder" and regions[n]["voxels"] > 0)},
        "tissues": {n: {"hu": tissue_hu(n), "density_g_per_ml": t.density_g_per_ml, "source": t.source}
                    for n, t in TISSUES.items()},
        "kinetics": kin_doc,
        "regions": regions,
        "definitions": {
            "activity_mbq": "true activity in the region at each time point's acquisition start (uniform over its voxels)",
            "tia_mbq_h": "analytic integral 0..inf of the region's activity (volumes of time point 0)",
            "mass_g": "sum over the region's voxels of the density from the CT (imaging.density default curve)",
        },
    }
    truth_path = out / "truth.json"
    _write_json_atomic(truth_path, truth)
    return {"out_dir": out, "truth_json": truth_path, "rtstruct": rtstruct_path, "time_points": tp_out, "truth": truth}


def imaging_case(truth: dict[str, Any], regions: tuple[str, ...] = ("liver", "kidneys", "spleen", "lesion_1", "lesion_3"),
                 *, calibration_uncertainty_pct: float = 3.0, registration: str = "none") -> dict[str, Any]:
    """A case document measuring ``regions`` from a simulated patient's DICOM (paths relative to
    the patient's directory): the imaging block, lesions marked as lesions. ``registration``:
    the imaging block's ``"none"`` (default) or ``"rigid"`` (needs a CT at every time point:
    ``ct_time_points="all"``)."""
    if registration not in ("none", "rigid"):
        raise InputError(f"registration must be 'none' or 'rigid', got {registration!r}", field="registration")
    if registration == "rigid" and not all(tp.get("ct_dir") for tp in truth["time_points"]):
        raise InputError("rigid registration needs a CT at every time point (ct_time_points='all')",
                         field="registration")
    tps = [{"spect": tp["nm_dir"], **({"ct": tp["ct_dir"]} if tp.get("ct_dir") else {})} for tp in truth["time_points"]]
    return {
        "patient": {"id": truth["patient_id"]},
        "radiopharmaceutical": truth["radiopharmaceutical"],
        "administration": {"activity_mbq": truth["administration"]["activity_mbq"],
                           "time": truth["administration"]["time"]},
        "imaging": {
            "timepoints": tps,
            "calibration": {"sensitivity_cps_per_mbq": truth["calibration"]["sensitivity_cps_per_mbq"],
                            "uncertainty_pct": calibration_uncertainty_pct},
            "regions": {"rtstruct": truth["rtstruct"]["file"], "names": {n: n for n in regions}},
            "registration": registration,
        },
        "regions": {n: {"kind": "lesion"} for n in regions if n.startswith("lesion")},
        "notes": "Virtual patient simulated by mrtdose (workflow.virtual_patient); not patient data.",
    }
