"""A virtual planar (whole-body) patient with known truth: conjugate views as NM DICOM.

:func:`simulate_planar_patient` takes the stylised anatomy and the kinetics of
:mod:`mrtdose.workflow.virtual_patient` (its public :func:`~mrtdose.workflow.virtual_patient.grid_volume`,
:func:`~mrtdose.workflow.virtual_patient.label_map`, :func:`~mrtdose.workflow.virtual_patient.ct_from_labels`
and its *private* ``_label_concentrations`` and ``_canonical``, imported as they are) and writes,
per imaging time, one WHOLE BODY NM file with two detectors (anterior, posterior) x three energy
windows (the Lu-177 photopeak and the two adjacent TEW scatter windows), plus the CT of the
first time point (DICOM, for the attenuation along the antero-posterior rays), a 2D ROI label map
(NIfTI) and ``planar_truth.json``.

The image model (per view, expected counts, then Poisson)
---------------------------------------------------------
Pixel ``(row, column)`` of the planar image is the antero-posterior ray through the phantom's
voxel column ``(z, x)`` (rows from head to feet, columns from the patient's right to left: the
anterior orientation; 1 pixel = 1 voxel of the phantom grid)::

    P_view(z, x) = S * t_exp * F(t_exp) * sum_y A(z, y, x) * exp(-integral mu dl to the detector)     (1)

* ``A`` the true activity (MBq) per voxel at the scan start, ``S`` the planar sensitivity in air
  (cps/MBq, each detector), ``t_exp`` the exposure of a point in a continuous whole-body sweep
  (field of view along the scan / scan velocity; :mod:`mrtdose.imaging.planar_dicom`),
  ``F(t) = (1 - e^{-lambda t}) / (lambda t)`` the decay during the exposure (MIRD Pamphlet 23,
  Dewaraja et al. 2012, J Nucl Med 53:1310). The sweep's own duration (every point is taken as
  seen from the scan start; the body passes in ~5 min, 0.04 % decay for Lu-177) is neglected.
* Narrow-beam attenuation ``exp(-integral mu dl)`` from the voxel centre to the body surface on
  the detector's side, with ``mu`` from the CT (:func:`mrtdose.imaging.spect_model.mu_map_from_ct`,
  density x (mu/rho) of soft tissue at 208.4 keV) summed along ``y`` (half the voxel's own
  ``mu dy``, midpoint rule: 0.02 % error in a 4.8 mm voxel). This is what MIRD Pamphlet 16
  (Siegel et al. 1999, J Nucl Med 40:37S) assumes for scatter-free counts.
* The collimator-detector response: a depth-independent 2D Gaussian of FWHM ``fwhm_mm``
  (default 12 mm: an assumption of the order of a medium-energy collimator at ~10 cm).

Scatter (a documented simple model, not Monte Carlo)
----------------------------------------------------
Scatter counts in the photopeak window are the blurred primary image convolved with a broad
Gaussian (FWHM ``scatter_fwhm_mm``, default 60 mm) times the scatter-to-primary ratio ``k``
(default 0.35; both assumptions, of the order reported for Lu-177 at 208 keV in a 20 % window).
Their energy spectrum is linear across the photopeak window, with density ``s_l`` at its lower
edge and ``s_u = r s_l`` at its upper edge (``r`` = ``upper_to_lower_scatter``, default 0.25), so
the photopeak holds ``W_p (s_l + s_u) / 2``. The adjacent windows hold ``s_l W_l`` and
``s_u W_u`` (their count density equals the edge density: the triple-energy-window trapezoid of
Ogawa et al. 1991, IEEE Trans Med Imaging 10:408). In expectation the TEW estimate therefore
equals the true scatter in the photopeak exactly; what remains after TEW is the Poisson noise of
the three windows. Not modelled: primary photons in the scatter windows (energy resolution),
septal penetration, the 113 keV line, depth-dependent resolution, patient motion, dead time.

Windows (assumption, a common clinical Lu-177 setting): photopeak 208.4 keV +/- 10 %
(187.56-229.24 keV), lower and upper scatter windows 10 % of 208.4 keV wide each, adjacent to it.

ROIs (the output format chosen here)
------------------------------------
One 2D integer label map in NIfTI (``rois.nii.gz`` with a ``rois.json`` sidecar, unit ``"1"``):
a single-slice volume whose pixel ``(i, j)`` is column ``i``, row ``j`` of the anterior view;
its affine places the pixels in patient coordinates (i along +x, j along -z, the slice normal
along +y), so the CT can be projected onto it. Because ROIs of conjugate views overlap (the right
kidney lies behind the liver), a label is an *atom* (a set of pixels with the same ROI
membership) and a ROI is a list of labels; two ROIs may share labels. Organ ROIs are the
projection of the organ's structures dilated by ``roi_margin_mm`` (to keep the counts blurred out
of the organ outline), less the dilated projections of lesions that are not part of the region
(hot spots a physicist would leave out) and, with ``overlapping_rois=False``, of the other ROI
regions' structures (default ``True``: ROIs on the whole organ outline, overlapping where organs
overlap in projection, as usually drawn). Each organ has its own background ROI: a ring
``background_gap_mm`` outside its ROI and ``background_width_mm`` wide, excluding the (dilated)
projections of every structure that is not remainder tissue and every pixel whose AP body
thickness differs from the ROI's mean by more than ``background_thickness_tolerance`` (a
background taken where the body is as thick as at the organ). ``planar_truth.json["rois"]``
lists the labels of every ROI.

``active`` (phantom label names) keeps the activity of those labels only (all others 0), to
study one organ without the others' overlap; the anatomy and attenuation are unchanged.

Truth: the activity of each ROI region's labels (``roi_regions``) at each scan start; the
liver ROI holds lesion_1 (a liver metastasis inside the liver outline that planar imaging cannot
separate from it), so its truth is liver + lesion_1.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from mrtdose import __version__
from mrtdose.errors import InputError
from mrtdose.imaging.volume import Volume
from mrtdose.workflow.virtual_patient import (  # _label_concentrations, _canonical: private, imported as they are
    ADMINISTERED_MBQ,
    DEFAULT_SHAPE,
    DEFAULT_TIMES_H,
    DEFAULT_VOXEL_MM,
    LABELS,
    LU177_HALF_LIFE_H,
    UNIONS,
    _canonical,
    _label_concentrations,
    ct_from_labels,
    grid_volume,
    label_map,
)

__all__ = ["DEFAULT_ROI_REGIONS", "LU177_TEW_WINDOWS", "planar_case", "simulate_planar_patient"]

#: Lu-177 photopeak (keV): 208.366 keV (ICRP-107, as in mrtdose.imaging.spect_model).
LU177_PEAK_KEV = 208.366
#: Windows (name, lower keV, upper keV): module docstring (assumption: a common clinical setting).
LU177_TEW_WINDOWS: tuple[tuple[str, float, float], ...] = (
    ("scatter lower", round(0.8 * LU177_PEAK_KEV, 2), round(0.9 * LU177_PEAK_KEV, 2)),
    ("photopeak", round(0.9 * LU177_PEAK_KEV, 2), round(1.1 * LU177_PEAK_KEV, 2)),
    ("scatter upper", round(1.1 * LU177_PEAK_KEV, 2), round(1.2 * LU177_PEAK_KEV, 2)),
)
#: ROI regions and the phantom labels whose activity is their truth.
DEFAULT_ROI_REGIONS: dict[str, tuple[str, ...]] = {
    "liver": ("liver", "lesion_1"),
    "kidneys": UNIONS["kidneys"],
}


def _gauss(img: np.ndarray, fwhm_mm: float, pixel_mm: float) -> np.ndarray:
    sigma = fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / pixel_mm
    return ndimage.gaussian_filter(img, sigma, mode="constant", truncate=4.0) if sigma > 0 else img


def _disk(radius_px: float) -> np.ndarray:
    r = int(math.floor(radius_px))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y) <= radius_px * radius_px + 1e-9


def _dilate(mask: np.ndarray, mm: float, pixel_mm: float) -> np.ndarray:
    if mm <= 0:
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=_disk(mm / pixel_mm))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _projections(act_mbq: np.ndarray, mu_per_cm: np.ndarray, dy_cm: float) -> tuple[np.ndarray, np.ndarray]:
    """Attenuated sums along y (axis 1) towards the anterior (y min) and posterior (y max)
    detector, equation (1) without the constant factor; both as (z, x) arrays."""
    mu_dy = mu_per_cm * dy_cm
    before = np.cumsum(mu_dy, axis=1) - 0.5 * mu_dy          # from the anterior edge to the voxel centre
    after = np.cumsum(mu_dy[:, ::-1, :], axis=1)[:, ::-1, :] - 0.5 * mu_dy
    ant = (act_mbq * np.exp(-before)).sum(axis=1)
    post = (act_mbq * np.exp(-after)).sum(axis=1)
    return ant, post


def simulate_planar_patient(
    out_dir: str | os.PathLike,
    *,
    radiopharmaceutical: str = "Lu-177-DOTATATE",
    times_h: Sequence[float] = DEFAULT_TIMES_H,
    seed: int = 1,
    shape: Sequence[int] = DEFAULT_SHAPE,
    voxel_mm: float = DEFAULT_VOXEL_MM,
    sensitivity_cps_per_mbq: float = 10.0,
    scan_velocity_mm_s: float = 2.0,
    fov_mm: Sequence[float] = (533.0, 387.0),
    fwhm_mm: float = 12.0,
    scatter_to_primary: float = 0.35,
    scatter_fwhm_mm: float = 60.0,
    upper_to_lower_scatter: float = 0.25,
    roi_regions: Mapping[str, Sequence[str]] | None = None,
    roi_margin_mm: float = 10.0,
    background_gap_mm: float = 5.0,
    background_width_mm: float = 20.0,
    background_thickness_tolerance: float = 0.15,
    overlapping_rois: bool = True,
    active: Sequence[str] | None = None,
    noise: bool = True,
    administration_time: datetime | None = None,
    patient_id: str | None = None,
) -> dict[str, Any]:
    """Write the virtual planar patient to ``out_dir``; returns ``{"out_dir", "truth_json",
    "truth"}``.

    Layout::

        planar_truth.json
        wb/tp1_004h.dcm ...      WHOLE BODY NM, 2 detectors x 3 windows, one file per time
        CT/CT_0000.dcm ...       CT of the first time point (attenuation along the AP rays)
        rois.nii.gz, rois.json   ROI label map on the anterior view (module docstring)

    ``sensitivity_cps_per_mbq``: planar sensitivity in air per detector (default 10 cps/MBq, the
    order of the SPECT system's in :mod:`mrtdose.workflow.virtual_patient`); the exposure of a point
    is ``fov_mm[1] / scan_velocity_mm_s`` (default 387 mm at 2 mm/s = 12 cm/min: 193.5 s).
    ``noise=False`` writes the rounded expected counts (for bias studies).
    """
    from mrtdose.imaging.dicom_synth import write_ct_series
    from mrtdose.imaging.nifti import nifti_sidecar_bytes, write_nifti
    from mrtdose.imaging.planar_synth import write_planar_nm
    from mrtdose.imaging.spect_model import mu_map_from_ct
    from mrtdose.physics.decay import mean_activity_factor_during_acquisition

    rp = _canonical(radiopharmaceutical)
    times = tuple(float(t) for t in times_h)
    if not times or any(not (math.isfinite(t) and t > 0) for t in times) or any(b <= a for a, b in zip(times, times[1:])):
        raise InputError(f"times_h must be positive and strictly increasing, got {tuple(times_h)}", field="times_h")
    for name, v in (("sensitivity_cps_per_mbq", sensitivity_cps_per_mbq), ("scan_velocity_mm_s", scan_velocity_mm_s),
                    ("fwhm_mm", fwhm_mm), ("scatter_fwhm_mm", scatter_fwhm_mm)):
        if not (math.isfinite(float(v)) and float(v) > 0):
            raise InputError(f"must be positive, got {v!r}", field=name)
    if not (0 <= scatter_to_primary < 5 and 0 <= upper_to_lower_scatter <= 1):
        raise InputError("need 0 <= scatter_to_primary < 5 and 0 <= upper_to_lower_scatter <= 1", field="scatter_to_primary")
    regions = {k: tuple(v) for k, v in (roi_regions or DEFAULT_ROI_REGIONS).items()}
    for name, labs in [*regions.items(), ("active", tuple(active or ()))]:
        bad = [lab for lab in labs if lab not in LABELS]
        if bad or (not labs and name != "active"):
            raise InputError(f"unknown phantom labels {bad} (labels: {', '.join(LABELS)})",
                             field="active" if name == "active" else f"roi_regions.{name}")
    admin = administration_time or datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
    if admin.utcoffset() is None:
        raise InputError("administration_time must be timezone-aware", field="administration_time")
    pid = patient_id or f"VPP-{rp}-{seed}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    grid = grid_volume(shape, voxel_mm)
    labels = label_map(grid)
    v_ml = grid.voxel_volume_ml
    nz, ny, nx = labels.shape
    counts_per_label = np.bincount(labels.ravel(), minlength=max(LABELS.values()) + 1)
    volumes = {n: float(counts_per_label[v]) * v_ml for n, v in LABELS.items()}
    ct = grid.with_array(ct_from_labels(labels), unit="HU", modality="CT", acquisition_time=admin + timedelta(hours=times[0]),
                         description="virtual planar patient CT")
    mu = np.asarray(mu_map_from_ct(ct, energy_mev=LU177_PEAK_KEV / 1000.0).array)
    dy_cm = grid.spacing_mm[1] / 10.0
    px = float(voxel_mm)

    # --- ROIs (on the anterior view: row = nz-1-k, column = i) -----------------------------------
    def footprint(names: Sequence[str]) -> np.ndarray:
        m = np.isin(labels, [LABELS[n] for n in names]).any(axis=1)
        return m[::-1, :]

    hot = footprint([n for n in LABELS if n != "remainder"])
    hot_dilated = _dilate(hot, roi_margin_mm, px)
    body_chord = (labels > 0).sum(axis=1)[::-1, :] * grid.spacing_mm[1]  # mm, anterior orientation
    rois: dict[str, np.ndarray] = {}
    bkgs: dict[str, np.ndarray] = {}
    for name, labs in regions.items():
        fp = footprint(labs)
        if not fp.any():
            raise InputError("the region is outside the field of view", field=f"roi_regions.{name}")
        others = [n for n in LABELS if n not in labs and (n.startswith("lesion_") or (
            not overlapping_rois and any(n in other for other in regions.values())))]
        roi = _dilate(fp, roi_margin_mm, px) & ~_dilate(footprint(others), roi_margin_mm, px)
        inner = _dilate(roi, background_gap_mm, px)
        t_roi = float(body_chord[roi].mean())
        ring = (_dilate(inner, background_width_mm, px) & ~inner & ~hot_dilated
                & (np.abs(body_chord - t_roi) <= background_thickness_tolerance * t_roi))
        if ring.sum() < 10:
            raise InputError(f"only {int(ring.sum())} remainder-only pixels of similar body thickness for the background",
                             field=f"roi_regions.{name}")
        rois[name], bkgs[name] = roi, ring
    masks = [("roi", n, m) for n, m in rois.items()] + [("background", n, m) for n, m in bkgs.items()]
    code = np.zeros((nz, nx), dtype=np.int64)
    for b, (_, _, m) in enumerate(masks):
        code |= m.astype(np.int64) << b
    atoms = [int(c) for c in np.unique(code) if c != 0]
    label_img = np.zeros((nz, nx), dtype=np.int16)
    for lab, c in enumerate(atoms, start=1):
        label_img[code == c] = lab
    roi_doc: dict[str, dict[str, list[int]]] = {"regions": {}, "background": {}}
    for b, (kind, name, _) in enumerate(masks):
        key = "regions" if kind == "roi" else "background"
        roi_doc[key][name] = [lab for lab, c in enumerate(atoms, start=1) if (c >> b) & 1]
    # the label map's geometry: i -> +x, j -> -z (rows from the head), normal +y
    top = grid.index_to_physical((0.0, (ny - 1) / 2.0, float(nz - 1)))
    roi_vol = Volume(array=label_img[np.newaxis], spacing_mm=(grid.spacing_mm[0], grid.spacing_mm[2], grid.spacing_mm[1]),
                     origin_mm=tuple(top), direction=np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
                     unit="1", modality="OT", description="planar ROI labels (anterior view)")
    _write_atomic(out / "rois.nii.gz", write_nifti(roi_vol, compress=True))
    _write_atomic(out / "rois.json", nifti_sidecar_bytes(roi_vol))

    # --- CT of the first time point ------------------------------------------------------------------
    from pydicom.uid import generate_uid

    study = generate_uid(entropy_srcs=["mrtdose-virtual-planar", pid, str(seed), "study"])
    write_ct_series(ct, out / "CT", patient_id=pid, study_uid=study, series_description="virtual planar patient CT",
                    acquisition_time=ct.acquisition_time)

    # --- images ---------------------------------------------------------------------------------------
    t_exp = float(fov_mm[1]) / float(scan_velocity_mm_s)
    f_decay = mean_activity_factor_during_acquisition(t_exp / 3600.0, LU177_HALF_LIFE_H)
    w_l, w_p, w_u = (hi - lo for _, lo, hi in LU177_TEW_WINDOWS)
    r = float(upper_to_lower_scatter)
    ss = np.random.SeedSequence(int(seed))
    rngs = [np.random.default_rng(s) for s in ss.spawn(len(times))]
    lut = np.zeros(max(LABELS.values()) + 1)
    tp_docs = []
    truth_regions: dict[str, dict[str, Any]] = {n: {"labels": list(labs), "activity_mbq": []} for n, labs in regions.items()}
    for it, t in enumerate(times):
        conc = _label_concentrations(rp, volumes, t)  # MBq/mL
        if active is not None:
            conc = {n: (c if n in active else 0.0) for n, c in conc.items()}
        for n, v in LABELS.items():
            lut[v] = conc[n] * v_ml  # MBq per voxel
        act = lut[labels]
        ant, post = _projections(act, mu, dy_cm)
        k = sensitivity_cps_per_mbq * t_exp * f_decay
        images: dict[str, list[np.ndarray]] = {}
        expected: dict[str, dict[str, float]] = {}
        for view, proj in (("anterior", ant), ("posterior", post)):
            primary = _gauss(k * proj[::-1, :], fwhm_mm, px)
            scatter_peak = scatter_to_primary * _gauss(primary, scatter_fwhm_mm, px)
            s_l = 2.0 * scatter_peak / (w_p * (1.0 + r))
            means = [s_l * w_l, primary + scatter_peak, r * s_l * w_u]
            images[view] = [rngs[it].poisson(m).astype(np.float64) if noise else np.rint(m) for m in means]
            expected[view] = {"primary_counts": float(primary.sum()), "scatter_in_peak_counts": float(scatter_peak.sum())}
        acq = admin + timedelta(hours=t)
        name = f"tp{it + 1}_{int(round(t)):03d}h"
        write_planar_nm(images, out / "wb" / f"{name}.dcm", windows=LU177_TEW_WINDOWS, pixel_spacing_mm=(px, px),
                        acquisition_time=acq, patient_id=pid, image_type="WHOLE BODY", layout="multiframe",
                        duration_s=(nz * px + float(fov_mm[1])) / scan_velocity_mm_s, scan_velocity_mm_s=scan_velocity_mm_s,
                        fov_mm=fov_mm, scan_length_mm=nz * px, study_uid=study,
                        series_description=f"virtual planar patient whole body {t:g} h",
                        injected_activity_mbq=ADMINISTERED_MBQ, injection_time=admin, radiopharmaceutical=rp,
                        radionuclide="Lu-177", half_life_s=LU177_HALF_LIFE_H * 3600.0)
        for n, labs in regions.items():
            truth_regions[n]["activity_mbq"].append(float(sum(conc[lab] * volumes[lab] for lab in labs)))
        tp_docs.append({"index": it, "time_h": t, "acquisition_time": acq.isoformat(), "file": f"wb/{name}.dcm",
                        "expected": expected})

    # organ thickness along the AP rays, from the phantom (for the case's organ_thickness_cm)
    for n, labs in regions.items():
        chords = np.isin(labels, [LABELS[lab] for lab in labs]).sum(axis=1) * dy_cm  # (z, x) cm
        inside = chords[chords > 0]
        truth_regions[n]["ap_extent_cm"] = float(inside.max())
        truth_regions[n]["mean_chord_cm"] = float(inside.mean())
        truth_regions[n]["volume_ml"] = float(sum(volumes[lab] for lab in labs))
        truth_regions[n]["mass_g"] = float(sum(volumes[lab] * _density(lab) for lab in labs))
        truth_regions[n]["roi_body_thickness_cm"] = float(body_chord[rois[n]].mean() / 10.0)
    body_chords = (labels > 0).sum(axis=1) * dy_cm
    truth = {
        "generator": "mrtdose.workflow.virtual_planar.simulate_planar_patient",
        "mrtdose_version": str(__version__),
        "note": "Synthetic virtual planar patient with known truth; not patient data.",
        "seed": int(seed), "patient_id": pid, "radiopharmaceutical": rp, "nuclide": "Lu-177",
        "half_life_h": LU177_HALF_LIFE_H,
        "administration": {"activity_mbq": ADMINISTERED_MBQ, "time": admin.isoformat()},
        "camera": {"sensitivity_cps_per_mbq": float(sensitivity_cps_per_mbq), "scan_velocity_mm_s": float(scan_velocity_mm_s),
                   "fov_mm": [float(x) for x in fov_mm], "exposure_per_point_s": t_exp, "fwhm_mm": float(fwhm_mm),
                   "pixel_mm": px, "windows_kev": [list(w) for w in LU177_TEW_WINDOWS], "noise": bool(noise)},
        "scatter_model": {"scatter_to_primary": float(scatter_to_primary), "scatter_fwhm_mm": float(scatter_fwhm_mm),
                          "upper_to_lower_density": r},
        "ct_dir": "CT",
        "rois": {"file": "rois.nii.gz", **roi_doc, "margin_mm": roi_margin_mm, "background_gap_mm": background_gap_mm,
                 "background_width_mm": background_width_mm},
        "body_ap_thickness_cm": {"max": float(body_chords.max()), "median_in_body": float(np.median(body_chords[body_chords > 0]))},
        "time_points": tp_docs,
        "regions": truth_regions,
        "definitions": {"activity_mbq": "true activity of the region's labels at each scan start (MBq)",
                        "mean_chord_cm": "mean over the region's projection of its AP chord length",
                        "ap_extent_cm": "largest AP chord of the region"},
    }
    path = out / "planar_truth.json"
    _write_atomic(path, (json.dumps(truth, indent=2) + "\n").encode("utf-8"))
    return {"out_dir": out, "truth_json": path, "truth": truth}


def _density(label: str) -> float:
    from mrtdose.workflow.virtual_patient import _TISSUE_OF, TISSUES  # private table, imported as it is

    return TISSUES[_TISSUE_OF[label]].density_g_per_ml


def planar_case(truth: Mapping[str, Any], regions: Sequence[str] = ("kidneys", "liver"), *,
                attenuation: str = "ct", calibration_uncertainty_pct: float = 3.0,
                activity_uncertainty_pct: float = 5.0) -> dict[str, Any]:
    """A case document measuring ``regions`` from a simulated planar patient (paths relative to its
    directory). ``attenuation``: ``"ct"`` (AP line integrals through the CT) or ``"thickness"``
    (each ROI's mean AP body thickness, as one would measure it on CT, with the narrow-beam mu). Organ masses and the organ
    thickness (the mean AP chord of each region, as one would measure it on CT) come from the
    truth."""
    rois = truth["rois"]
    att: dict[str, Any] = ({"ct": truth["ct_dir"]} if attenuation == "ct"
                           else {"body_thickness_cm": {n: round(truth["regions"][n]["roi_body_thickness_cm"], 2)
                                                       for n in regions}})
    return {
        "patient": {"id": truth["patient_id"]},
        "radiopharmaceutical": truth["radiopharmaceutical"],
        "administration": {"activity_mbq": truth["administration"]["activity_mbq"], "time": truth["administration"]["time"]},
        "planar_imaging": {
            "timepoints": [{"file": tp["file"]} for tp in truth["time_points"]],
            "rois": {"file": rois["file"], "regions": {n: rois["regions"][n] for n in regions},
                     "background": {n: rois["background"][n] for n in regions},
                     "organ_thickness_cm": {n: round(truth["regions"][n]["mean_chord_cm"], 2) for n in regions}},
            "calibration": {"sensitivity_cps_per_mbq": truth["camera"]["sensitivity_cps_per_mbq"],
                            "uncertainty_pct": calibration_uncertainty_pct},
            "attenuation": att,
            "scatter": "tew",
            "activity_uncertainty_pct": activity_uncertainty_pct,
        },
        "regions": {n: {"mass_g": round(truth["regions"][n]["mass_g"], 1)} for n in regions},
        "notes": "Virtual planar patient simulated by mrtdose (workflow.virtual_planar); not patient data.",
    }
