"""Synthetic example cases with known truth (no patient data anywhere).

:func:`lu177_dotatate_case` builds the bundled demo case: a virtual patient after 7.4 GBq
Lu-177 DOTATATE, measured at 1, 4, 24, 96 and 168 h (an early point, then a common schedule; Sjögreen Gleisner et
al. 2022, EJNMMI Physics 9:30 recommend late points to capture the clearance). Region kinetics are
chosen to give absorbed doses per activity in the ranges reported for PRRT (kidneys about
0.4-0.9 Gy/GBq, liver 0.1-0.5, spleen 0.4-1.3, NET lesions several Gy/GBq; Sandström et al. 2013,
J Nucl Med 54:33; Garske-Román et al. 2018, EJNMMI 45:970). Activities get seeded Gaussian noise
of the stated relative standard uncertainty.

``python -m mrtdose.workflow.synthetic OUTDIR`` writes ``case.yaml`` and ``truth.json``; the
bundled copy in ``mrtdose/data/examples/lu177_dotatate`` was made this way and a test checks it is
reproduced exactly.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

LN2 = math.log(2.0)
TIMES_H = (1.0, 4.0, 24.0, 96.0, 168.0)

#: Truth: A(t) = sum_i c_i exp(-ln2 t / T_i) in MBq (T in h), with uptake terms as negative c.
TRUTH: dict[str, dict[str, Any]] = {
    "kidneys": {"terms": [(200.0, 52.0), (-200.0, 0.8)], "mass_g": 310.0, "mass_u_pct": 10.0, "noise_pct": 5.0},
    "liver": {"terms": [(250.0, 70.0)], "mass_g": 1800.0, "mass_u_pct": 5.0, "noise_pct": 5.0},
    "tumour_1": {"terms": [(120.0, 90.0), (-120.0, 2.0)], "volume_ml": 25.0, "mass_u_pct": 15.0,
                 "noise_pct": 8.0, "recovery": (0.85, 0.05)},
    "tumour_2": {"terms": [(30.0, 80.0), (-30.0, 2.0)], "volume_ml": 3.0, "mass_u_pct": 20.0,
                 "noise_pct": 10.0, "single_time_h": 96.0, "recovery": (0.6, 0.06)},
}


def true_activity(terms: list[tuple[float, float]], t_h: float) -> float:
    return float(sum(c * math.exp(-LN2 * t_h / T) for c, T in terms))


def true_tia(terms: list[tuple[float, float]]) -> float:
    """Integral 0..inf of sum c exp(-ln2 t/T) = sum c T / ln2 (MBq h)."""
    return float(sum(c * T / LN2 for c, T in terms))


#: Phantom regions making up each case region (the two kidneys are one region in the case).
_CASE_TO_PHANTOM = {"kidneys": ("kidney_left", "kidney_right"), "liver": ("liver",), "tumour_1": ("tumour_1",),
                    "tumour_2": ("tumour_2",), "spleen": ("spleen",)}
#: Voxel maps of the demo: 4.8 mm voxels (a common Lu-177 SPECT matrix), 8 mm FWHM blur.
DEMO_VOXEL_MM = 4.8
DEMO_FWHM_MM = 8.0


def _phantom_masses(phantom: dict[str, Any]) -> dict[str, float]:
    v_ml = (phantom["voxel_mm"] / 10.0) ** 3
    return {c: round(sum(phantom["region_voxels"][p] for p in parts) * v_ml * 1.03, 1)
            for c, parts in _CASE_TO_PHANTOM.items()}


def lu177_dotatate_case(seed: int = 7, phantom: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo case document and its truth. Organ masses and lesion volumes are those of the
    voxel phantom (as if delineated on its CT), so the organ-level and voxel results describe
    the same anatomy."""
    rng = np.random.default_rng(seed)
    phantom = phantom or voxel_phantom(voxel_mm=DEMO_VOXEL_MM)
    masses = _phantom_masses(phantom)
    regions: dict[str, Any] = {}
    truth: dict[str, Any] = {"regions": {}}
    for name, spec in TRUTH.items():
        spec = {**spec}
        if "mass_g" in spec:
            spec["mass_g"] = masses[name]
        else:
            spec["volume_ml"] = round(masses[name] / 1.03, 2)
        times = (spec["single_time_h"],) if "single_time_h" in spec else TIMES_H
        rc, rc_u = spec.get("recovery", (1.0, 0.0))
        meas = []
        for t in times:
            a_true = true_activity(spec["terms"], t)
            a_obs = a_true * rc * (1.0 + spec["noise_pct"] / 100.0 * rng.standard_normal())
            meas.append({"time_h": t, "activity_mbq": round(float(a_obs), 2), "uncertainty_pct": spec["noise_pct"]})
        r: dict[str, Any] = {}
        if "mass_g" in spec:
            r["mass_g"] = spec["mass_g"]
        else:
            r.update({"kind": "lesion", "volume_ml": spec["volume_ml"], "density_g_per_ml": 1.03})
        r["mass_uncertainty_pct" if "mass_g" in spec else "volume_uncertainty_pct"] = spec["mass_u_pct"]
        if rc != 1.0:
            r["recovery_coefficient"] = rc
            r["recovery_uncertainty"] = rc_u
        r["measurements"] = meas
        if "single_time_h" in spec:
            r["single_point"] = {"method": "hanscheid"}
        regions[name] = r
        truth["regions"][name] = {"tia_mbq_h": true_tia(spec["terms"]), "terms": spec["terms"]}
    regions["spleen"] = {"mass_g": masses["spleen"], "mass_uncertainty_pct": 10.0, "tia_mbq_h": 7000.0,
                         "tia_uncertainty_pct": 12.0, "effective_half_life_h": 70.0}
    case = {
        "patient": {"id": "SYNTH-001", "sex": "male", "mass_kg": 78},
        "radiopharmaceutical": "Lu-177-DOTATATE",
        "administration": {"activity_mbq": 7400.0, "activity_uncertainty_pct": 2.0,
                           "time": "2026-01-05T10:00:00+00:00", "cycle": 2},
        "regions": regions,
        "options": {"kinetics": "auto", "s_values": "self_sphere", "uncertainty": True,
                    "calibration_uncertainty_pct": 3.5, "monte_carlo_samples": 2000},
        "previous_cycles": [
            {"cycle": 1, "date": "2025-11-10", "activity_mbq": 7400.0,
             "regions": {"kidneys": {"absorbed_dose_gy": 4.1, "absorbed_dose_uncertainty_gy": 0.5,
                                     "bed_gy": 4.6, "bed_uncertainty_gy": 0.6}}}
        ],
        "notes": "Synthetic virtual patient generated by mrtdose.workflow.synthetic; not patient data.",
    }
    truth["seed"] = seed
    return case, truth


def write_example(directory: str | Path, seed: int = 7) -> None:
    """Write case.yaml, truth.json and the voxel maps (maps/*.nii.gz with JSON sidecars)."""
    from datetime import datetime, timedelta

    from mrtdose.imaging.nifti import nifti_sidecar_bytes, sidecar_path_for, write_nifti
    from mrtdose.imaging.volume import Volume

    d = Path(directory)
    (d / "maps").mkdir(parents=True, exist_ok=True)
    phantom = voxel_phantom(voxel_mm=DEMO_VOXEL_MM, fwhm_mm=DEMO_FWHM_MM)
    case, truth = lu177_dotatate_case(seed, phantom)
    admin = datetime.fromisoformat(case["administration"]["time"])
    spacing = (DEMO_VOXEL_MM,) * 3
    origin = tuple(-0.5 * n * DEMO_VOXEL_MM for n in phantom["labels"].shape[::-1])

    def save(name: str, array: np.ndarray, unit: str, modality: str, when=None, desc: str = "") -> None:
        vol = Volume(array=array, spacing_mm=spacing, origin_mm=origin, unit=unit, modality=modality,
                     acquisition_time=when, description=desc)
        (d / "maps" / name).write_bytes(write_nifti(vol, compress=True))
        (sidecar_path_for(d / "maps" / name)).write_bytes(nifti_sidecar_bytes(vol))

    maps = []
    for t, a in zip(phantom["times_h"], phantom["activity_bq_per_ml"]):
        name = f"activity_{int(t):03d}h.nii.gz"
        save(name, a.astype(np.float32), "Bq/mL", "NM", admin + timedelta(hours=float(t)),
             f"synthetic quantitative SPECT, {DEMO_FWHM_MM:g} mm FWHM blur, {t:g} h")
        maps.append({"file": f"maps/{name}"})
    save("labels.nii.gz", phantom["labels"].astype(np.int16), "1", "LABEL", desc="region labels")
    save("density.nii.gz", phantom["density_g_per_ml"].astype(np.float32), "g/mL", "OT", desc="mass density")
    labels = {c: [PHANTOM_LABELS[p] for p in parts] for c, parts in _CASE_TO_PHANTOM.items()}
    case["voxel"] = {
        "activity_maps": maps,
        "labels": {"file": "maps/labels.nii.gz", "regions": labels},
        "density": "maps/density.nii.gz",
        "kernel": {"medium": "soft_tissue"},
        "kinetics": "mono_exp",
    }
    truth["voxel_phantom"] = {"voxel_mm": DEMO_VOXEL_MM, "fwhm_mm": DEMO_FWHM_MM,
                              "true_tia_mbq_h": phantom["true_tia_mbq_h"], "labels": PHANTOM_LABELS}
    header = "# Synthetic example case (mrtdose.workflow.synthetic, seed %d). Not patient data.\n" % seed
    (d / "case.yaml").write_text(header + yaml.safe_dump(case, sort_keys=False), encoding="utf-8")
    (d / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")



# --------------------------------------------------------------------------------------------
# Voxel phantom (for voxel dosimetry): the same virtual patient as activity maps
# --------------------------------------------------------------------------------------------

#: Label values of the voxel phantom.
PHANTOM_LABELS: dict[str, int] = {
    "remainder": 1, "liver": 2, "kidney_left": 3, "kidney_right": 4, "spleen": 5,
    "tumour_1": 6, "tumour_2": 7,
}

#: Region kinetics in the phantom: (fraction of the TRUTH amplitude carried, TRUTH key) or terms.
_PHANTOM_TERMS: dict[str, list[tuple[float, float]]] = {
    "remainder": [(900.0, 30.0), (-900.0, 0.3)],
    "liver": TRUTH["liver"]["terms"],
    "kidney_left": [(c / 2.0, t) for c, t in TRUTH["kidneys"]["terms"]],
    "kidney_right": [(c / 2.0, t) for c, t in TRUTH["kidneys"]["terms"]],
    "spleen": [(7000.0 * LN2 / 70.0, 70.0)],
    "tumour_1": TRUTH["tumour_1"]["terms"],
    "tumour_2": TRUTH["tumour_2"]["terms"],
}


def _ellipsoid(zz, yy, xx, centre_mm, semi_axes_mm) -> np.ndarray:
    cz, cy, cx = centre_mm
    az, ay, ax = semi_axes_mm
    return ((zz - cz) / az) ** 2 + ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 <= 1.0


def voxel_phantom(
    shape: tuple[int, int, int] = (48, 64, 80),
    voxel_mm: float = 4.8,
    times_h: tuple[float, ...] = TIMES_H,
    fwhm_mm: float = 0.0,
    noise_pct: float = 0.0,
    seed: int = 11,
) -> dict[str, Any]:
    """A labelled abdominal phantom with the demo patient's kinetics as activity maps.

    Arrays are indexed [z, y, x] with isotropic voxels of ``voxel_mm``. Regions are ellipsoids
    (body, liver, two kidneys, spleen) and spheres (tumour_1 of about 25 mL inside the liver,
    tumour_2 of about 3 mL); each region's total activity follows its kinetics
    (``_PHANTOM_TERMS``), spread uniformly over its voxels. Optional Gaussian blur of ``fwhm_mm``
    (a crude stand-in for the camera resolution; issue 3 brings a SPECT simulation) and Gaussian
    noise of ``noise_pct`` of each voxel's value.

    Returns ``labels`` (int16), ``density_g_per_ml`` (ICRU 46 soft tissue 1.03 g/mL; lung-free
    abdomen; bone omitted), ``activity_bq_per_ml`` (n_t, z, y, x), ``times_h``, ``voxel_mm``,
    ``true_tia_mbq_h`` per region and ``region_voxels``.
    """
    from scipy import ndimage

    nz, ny, nx = shape
    zz, yy, xx = np.meshgrid(
        (np.arange(nz) + 0.5) * voxel_mm, (np.arange(ny) + 0.5) * voxel_mm, (np.arange(nx) + 0.5) * voxel_mm,
        indexing="ij",
    )
    Z, Y, X = nz * voxel_mm, ny * voxel_mm, nx * voxel_mm
    labels = np.zeros(shape, dtype=np.int16)
    body = _ellipsoid(zz, yy, xx, (Z / 2, Y / 2, X / 2), (Z * 0.48, Y * 0.42, X * 0.47))
    labels[body] = PHANTOM_LABELS["remainder"]
    # Semi-axes (mm) chosen so that the voxelised organs have about the reference adult masses
    # (ICRP Publication 89: liver 1800 g, kidneys 310 g, spleen 150-180 g).
    organs = {
        "liver": ((Z * 0.55, Y * 0.45, X * 0.30), (71.0, 65.0, 89.0)),
        "kidney_left": ((Z * 0.45, Y * 0.64, X * 0.74), (53.0, 23.5, 29.0)),
        "kidney_right": ((Z * 0.40, Y * 0.64, X * 0.26), (53.0, 23.5, 29.0)),
        "spleen": ((Z * 0.62, Y * 0.55, X * 0.82), (49.5, 31.0, 27.5)),
    }
    for name, (c, a) in organs.items():
        labels[_ellipsoid(zz, yy, xx, c, a) & body] = PHANTOM_LABELS[name]
    r1 = (3.0 * 25.0e3 / (4.0 * np.pi)) ** (1 / 3)  # 25 mL sphere radius, mm
    r2 = (3.0 * 3.0e3 / (4.0 * np.pi)) ** (1 / 3)   # 3 mL
    labels[_ellipsoid(zz, yy, xx, (Z * 0.55, Y * 0.42, X * 0.30), (r1, r1, r1))] = PHANTOM_LABELS["tumour_1"]
    labels[_ellipsoid(zz, yy, xx, (Z * 0.50, Y * 0.30, X * 0.55), (r2, r2, r2))] = PHANTOM_LABELS["tumour_2"]
    voxel_ml = (voxel_mm / 10.0) ** 3
    density = np.where(labels > 0, 1.03, 0.0012).astype(np.float32)  # air outside the body
    counts = {n: int((labels == v).sum()) for n, v in PHANTOM_LABELS.items()}
    rng = np.random.default_rng(seed)
    maps = np.zeros((len(times_h),) + shape, dtype=np.float32)
    for it, t in enumerate(times_h):
        a = np.zeros(shape)
        for name, v in PHANTOM_LABELS.items():
            n = counts[name]
            if n:
                a[labels == v] = true_activity(_PHANTOM_TERMS[name], t) * 1e6 / (n * voxel_ml)  # Bq/mL
        if fwhm_mm > 0:
            a = ndimage.gaussian_filter(a, fwhm_mm / voxel_mm / (2.0 * math.sqrt(2.0 * math.log(2.0))), mode="constant")
        if noise_pct > 0:
            a = np.clip(a * (1.0 + noise_pct / 100.0 * rng.standard_normal(shape)), 0.0, None)
        maps[it] = a
    return {
        "labels": labels,
        "density_g_per_ml": density,
        "activity_bq_per_ml": maps,
        "times_h": tuple(times_h),
        "voxel_mm": voxel_mm,
        "true_tia_mbq_h": {n: true_tia(_PHANTOM_TERMS[n]) for n in PHANTOM_LABELS},
        "region_voxels": counts,
    }


if __name__ == "__main__":
    write_example(sys.argv[1] if len(sys.argv) > 1 else ".")
