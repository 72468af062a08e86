"""Planar imaging step of the pipeline: conjugate-view NM images at several times -> region
activities for the core chain (the ``planar_imaging`` block of the case file).

Per time point (:func:`mrtdose.imaging.planar_dicom.read_planar_study`) and region:

1. ROI sums per view and energy window over the ROI's labels in the 2D label map (NIfTI, one
   slice, on the anterior view's pixel grid; the posterior view is mirrored onto it by the reader).
2. Scatter: with ``scatter: tew`` the triple-energy-window estimate (Ogawa et al. 1991, IEEE Trans
   Med Imaging 10:408) is subtracted from the photopeak ROI sum
   (:func:`mrtdose.imaging.planar.tew_primary_counts`); windows are found from the nuclide's main
   photon line (:func:`mrtdose.imaging.planar_dicom.tew_windows`). With ``scatter: none`` the
   photopeak counts are used as they are, and an effective (broad-beam) ``mu_per_cm`` should be
   given (MIRD Pamphlet 16).
3. Background: the region's background ROI (same scatter correction), area-scaled, times
   ``1 - t_organ/T_body`` when the organ thickness and a body thickness are known (Buijs et al.
   1998, J Nucl Med 39:2167; :func:`mrtdose.imaging.planar.background_subtract`).
4. Conjugate view (MIRD Pamphlet 16, Siegel et al. 1999, J Nucl Med 40:37S, eq. 1;
   :func:`mrtdose.imaging.planar.conjugate_view_activity`) with the camera sensitivity, the
   transmission factor and the self-attenuation factor ``f_j`` of the organ thickness, referred
   to the acquisition start (decay during the exposure, MIRD Pamphlet 23).

Transmission ``exp(-mu T)``: ``attenuation.body_thickness_cm`` with ``mu_per_cm`` (default the
narrow-beam soft-tissue coefficient at the photopeak); or ``attenuation.ct``: a CT series whose
mu map (:func:`mrtdose.imaging.spect_model.mu_map_from_ct` at the photopeak) is integrated along
the antero-posterior (y) axis and sampled at the ROI pixels through the label map's affine (the
label map must therefore be in the CT's patient coordinates). For a point source the geometric
mean is independent of its depth for *any* mu along the ray, so the CT line integral is the
exact transmission of a pixel; combining the pixels of a ROI is the approximation: at each time
point the ROI's transmission and body thickness (the ray length inside the body outline,
:func:`mrtdose.imaging.regions.body_mask`, for the background factor) are averaged with the
background-subtracted geometric-mean photopeak counts of the pixels as weights
(:func:`_ct_transmission`). Or measured transmission factors (``attenuation.transmission``), or
a body thickness per region (``body_thickness_cm: {kidneys: 17}``).

Uncertainty: Poisson counting of every window, view and ROI (propagated by the planar functions)
plus ``activity_uncertainty_pct`` (delineation, overlap) in quadrature enter each measurement. The
transmission's uncertainty from ``body_thickness_uncertainty_cm`` is common to all time points of a
region (one thickness): it enters the chain once, as the region's correlated
``activity_scale_uncertainty_pct`` (with ``hybrid_spect`` it cancels in the scaled curve). The calibration
uncertainty (``calibration.uncertainty_pct``) is left out of the measurements and enters the
chain once, as the correlated calibration component (``options.calibration_uncertainty_pct`` when
that is not set). The activities enter as measurements at the acquisition start, not decay
corrected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mrtdose.errors import InputError
from mrtdose.imaging import planar
from mrtdose.imaging.planar_dicom import PlanarStudy, read_planar_study, tew_windows
from mrtdose.physics.decay import elapsed_hours
from mrtdose.physics.nuclides import Nuclide
from mrtdose.quantities import Quantity
from mrtdose.workflow.case import Case, Region
from mrtdose.workflow.provenance import files_sha256

#: Largest difference (mm) between the label map's pixel spacing and the images'.
SPACING_TOLERANCE_MM = 1e-3


@dataclass
class PlanarImagingResult:
    regions: dict[str, Region]
    json: dict[str, Any]
    calibration_uncertainty_pct: float
    warnings: list[str] = field(default_factory=list)


def _path(base_dir: Path | None, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() or base_dir is None else base_dir / p


def _labels(v: Any) -> list[int]:
    return [v] if isinstance(v, int) else list(v)


def photopeak_kev(nuclide: Nuclide) -> float:
    """The nuclide's most intense photon line above 50 keV (keV)."""
    e, y = nuclide.photon_lines(min_energy_mev=0.05)
    if not e.size:
        raise InputError(f"{nuclide.name} has no photon line above 50 keV for planar imaging", field="planar_imaging")
    return 1000.0 * float(e[np.argmax(y)])


def _read_rois(path: Path) -> tuple[np.ndarray, Any]:
    from mrtdose.imaging.nifti import read_nifti, sidecar_path_for

    vol = read_nifti(path) if sidecar_path_for(path).exists() else read_nifti(path, unit="1")
    arr = np.asarray(vol.array)
    if arr.shape[0] != 1:
        raise InputError(f"the ROI label map must have one slice (a 2D map of the anterior view), got {arr.shape[0]}",
                         source=str(path), field="planar_imaging.rois.file")
    lab = arr[0]
    if lab.dtype.kind == "f" and not np.all(lab == np.round(lab)):
        raise InputError("ROI label map holds non-integer values", source=str(path), field="planar_imaging.rois.file")
    return np.round(lab).astype(np.int64), vol


def _ct_maps(ct_path: Path, roi_vol: Any, e_kev: float, tz: str | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Per ROI-map pixel: line integral of mu along y (dimensionless) and body chord (cm)."""
    from scipy import ndimage

    from mrtdose.imaging.dicom_series import read_series_with_info
    from mrtdose.imaging.regions import body_mask
    from mrtdose.imaging.spect_model import mu_map_from_ct

    if not ct_path.exists():
        raise InputError("not found", source=str(ct_path), field="planar_imaging.attenuation.ct")
    ct, info = read_series_with_info(ct_path, modality="CT", tz=tz)
    d = np.asarray(ct.direction)
    if not np.allclose(np.abs(d), np.eye(3), atol=1e-3):
        raise InputError("the CT is not an axial stack aligned with the patient axes (rows along x, columns along y): "
                         "the antero-posterior line integrals need it", source=str(ct_path), field="ImageOrientationPatient")
    mu = np.asarray(mu_map_from_ct(ct, energy_mev=e_kev / 1000.0).array)
    dy_cm = ct.spacing_mm[1] / 10.0
    line = mu.sum(axis=1) * dy_cm             # [k, i]
    chord = body_mask(ct).sum(axis=1) * dy_cm  # [k, i]
    nj, ni = roi_vol.array.shape[1:]
    jj, ii = np.meshgrid(np.arange(nj), np.arange(ni), indexing="ij")
    pts = roi_vol.index_to_physical(np.stack([ii, jj, np.zeros_like(ii)], axis=-1).astype(np.float64))
    idx = ct.physical_to_index(pts.reshape(-1, 3)).reshape(nj, ni, 3)
    coords = np.stack([idx[..., 2], idx[..., 0]])  # (k, i) of the CT
    lint = ndimage.map_coordinates(line, coords, order=1, mode="constant", cval=np.nan)
    bchord = ndimage.map_coordinates(chord, coords, order=1, mode="constant", cval=np.nan)
    meta = {"ct_sha256": files_sha256(info.files), "ct_series_description": info.series_description,
            "mu_at_kev": e_kev, "mu_method": "mu = density(HU) x (mu/rho) soft tissue (spect_model.mu_map_from_ct)"}
    return lint, bchord, meta


def _sum(img: np.ndarray, mask: np.ndarray) -> float:
    return float(img[mask].sum())


def quantify(case: Case, nuclide: Nuclide, base_dir: Path | None, say: Callable[[str], None]) -> PlanarImagingResult:
    """Region activities from the planar images; see the module docstring."""
    spec = case.planar_imaging
    assert spec is not None
    if case.administration.time is None:
        raise InputError("planar imaging needs administration.time (image times come from the headers)",
                         field="administration.time")
    warnings: list[str] = []
    e_kev = photopeak_kev(nuclide)
    att = spec.attenuation
    mu_tissue = att.mu_per_cm or planar.narrow_beam_mu_per_cm(e_kev)
    if spec.scatter == "none" and att.mu_per_cm is None and att.transmission is None:
        warnings.append("planar_imaging: no scatter correction but the narrow-beam mu is used: activities are "
                        "overestimated; give attenuation.mu_per_cm (a broad-beam mu) or use scatter: tew")

    # ROIs
    rpath = _path(base_dir, spec.rois.file)
    if not rpath.is_file():
        raise InputError("not found", source=str(rpath), field="planar_imaging.rois.file")
    lab, roi_vol = _read_rois(rpath)
    rows, cols = lab.shape
    bk = spec.rois.background
    bmap = ({} if bk is None else {n: _labels(v) for n, v in bk.items()} if isinstance(bk, dict)
            else {n: _labels(bk) for n in spec.rois.regions})
    masks: dict[str, np.ndarray] = {}
    bmasks: dict[str, np.ndarray] = {}
    for name, v in spec.rois.regions.items():
        m = np.isin(lab, _labels(v))
        if not m.any():
            raise InputError(f"no pixel of the label map has label(s) {_labels(v)}", source=str(rpath),
                             field=f"planar_imaging.rois.regions.{name}")
        masks[name] = m
        if name in bmap:
            b = np.isin(lab, bmap[name])
            if not b.any():
                raise InputError(f"no pixel of the label map has background label(s) {bmap[name]}", source=str(rpath),
                                 field=f"planar_imaging.rois.background.{name}")
            bmasks[name] = b
        else:
            warnings.append(f"planar_imaging: {name}: no background ROI; overlying and underlying tissue activity is "
                            "counted in the region")

    # attenuation per region: transmission Quantity and body thickness (for the background factor)
    trans: dict[str, Quantity] = {}
    body_t: dict[str, float | None] = {}
    att_json: dict[str, Any] = {}
    ct_maps: tuple[np.ndarray, np.ndarray] | None = None
    if att.body_thickness_cm is not None:
        bt = att.body_thickness_cm
        for n in masks:
            v = bt.get(n) if isinstance(bt, dict) else bt
            if v is None:
                raise InputError("no body thickness for this region", field=f"planar_imaging.attenuation.body_thickness_cm.{n}")
            trans[n] = planar.transmission_from_thickness(v, mu_tissue,
                                                          thickness_uncertainty_cm=att.body_thickness_uncertainty_cm)
            body_t[n] = float(v)
        att_json = {"method": "body thickness", "body_thickness_cm": bt, "mu_per_cm": mu_tissue,
                    "mu_source": "given" if att.mu_per_cm else f"narrow-beam soft tissue at {e_kev:.1f} keV"}
    elif att.ct is not None:
        say("planar imaging: CT line integrals")
        lint, bchord, meta = _ct_maps(_path(base_dir, att.ct), roi_vol, e_kev, spec.timezone)
        for n, m in masks.items():
            if np.any(~np.isfinite(lint[m])):
                raise InputError("part of the ROI lies outside the CT (the label map's coordinates must be the CT's)",
                                 source=str(rpath), field=f"planar_imaging.rois.regions.{n}")
            body_t[n] = float(bchord[m].mean())  # replaced per time point by the count-weighted mean
        ct_maps = (lint, bchord)
        att_json = {"method": "CT line integrals along the AP rays, weighted by the geometric-mean photopeak counts "
                              "(per time point: planar_imaging.regions.<name>.timepoints)", **meta}
    else:
        tv = att.transmission
        for n in masks:
            v = tv.get(n) if isinstance(tv, dict) else tv
            if v is None:
                raise InputError("no transmission factor for this region", field=f"planar_imaging.attenuation.transmission.{n}")
            trans[n] = Quantity(float(v), 0.0, "1", f"measured transmission ({planar.MIRD16})")
            body_t[n] = None
        att_json = {"method": "measured transmission", "transmission": tv}
    f_self: dict[str, float] = {}
    for n in masks:
        t_org = spec.rois.organ_thickness_cm.get(n)
        f_self[n] = planar.self_attenuation_factor(mu_tissue, t_org) if t_org is not None else 1.0
        if t_org is not None and body_t[n] is None:
            warnings.append(f"planar_imaging: {n}: no body thickness (measured transmission): the background is "
                            "area-scaled without the organ-thickness factor")

    s_cal = spec.calibration.sensitivity_cps_per_mbq
    u_cal = s_cal * spec.calibration.uncertainty_pct / 100.0
    tp_json: list[dict[str, Any]] = []
    meas: dict[str, list[dict[str, Any]]] = {n: [] for n in masks}
    trans_rel: dict[str, float] = {n: 0.0 for n in masks}  # relative, common to the region's time points
    reg_json: dict[str, Any] = {n: {"roi_labels": _labels(spec.rois.regions[n]), "roi_area_px": int(masks[n].sum()),
                                    "background_labels": bmap.get(n), "background_area_px":
                                        (int(bmasks[n].sum()) if n in bmasks else None),
                                    "organ_thickness_cm": spec.rois.organ_thickness_cm.get(n),
                                    "self_attenuation_factor": f_self[n], "timepoints": []} for n in masks}
    for i, tp in enumerate(spec.timepoints):
        where = f"planar_imaging.timepoints.{i}"
        say(f"planar imaging: time point {i + 1}/{len(spec.timepoints)}")
        files = tp.file if isinstance(tp.file, list) else [tp.file]
        paths = [_path(base_dir, f) for f in files]
        for p in paths:
            if not p.exists():
                raise InputError("not found", source=str(p), field=f"{where}.file")
        src: Any = paths[0] if len(paths) == 1 else paths
        study = read_planar_study(src, tz=spec.timezone, time_override=tp.time,
                                  duration_override_s=tp.acquisition_duration_s)
        _check_grid(study, lab, roi_vol, rpath)
        w = tew_windows(study, e_kev, scatter=spec.scatter == "tew")
        t_h = elapsed_hours(case.administration.time, study.acquisition_time, what=f"{where} acquisition time")
        if t_h <= 0:
            raise InputError(f"acquired {t_h:.2f} h after the administration", source=study.files[0], field=where)
        dur_a, dur_p = study.views["anterior"].duration_s, study.views["posterior"].duration_s
        tp_json.append({
            "time_h": t_h, "acquisition_time": study.acquisition_time.isoformat(), "time_source": study.time_source,
            "timezone_source": study.timezone_source, "image_type": study.image_type, "files_sha256": files_sha256(study.files),
            "files": [Path(f).name for f in study.files],
            "durations_s": {v: {"value": pv.duration_s, "source": pv.duration_source} for v, pv in study.views.items()},
            "windows": {k: (study.windows[j].label() if j is not None else None) for k, j in
                        (("photopeak", w.peak), ("scatter_lower", w.lower), ("scatter_upper", w.upper))},
            "view_sources": {v: pv.view_source for v, pv in study.views.items()},
            "warnings": list(study.warnings),
        })
        warnings.extend(f"{where}: {x}" for x in study.warnings if not x.startswith("posterior mirrored"))
        for n, m in masks.items():
            net: dict[str, Quantity] = {}
            detail: dict[str, Any] = {}
            ct_json = None
            if ct_maps is not None:
                trans[n], body_t[n], ct_json = _ct_transmission(study, w.peak, m, bmasks.get(n), *ct_maps)
            for view in ("anterior", "posterior"):
                prim = _primary(study, view, m, w)
                d = {"roi_counts": _window_sums(study, view, m, w), "roi_primary": prim.to_json()}
                q = prim
                if n in bmasks:
                    bprim = _primary(study, view, bmasks[n], w)
                    t_org = spec.rois.organ_thickness_cm.get(n)
                    use_t = t_org is not None and body_t[n] is not None
                    try:
                        q = planar.background_subtract(prim, bprim, roi_area_px=float(m.sum()),
                                                       background_area_px=float(bmasks[n].sum()),
                                                       organ_thickness_cm=t_org if use_t else None,
                                                       body_thickness_cm=body_t[n] if use_t else None)
                    except InputError as exc:
                        raise InputError(exc.detail, field=f"planar_imaging.rois.organ_thickness_cm.{n}") from None
                    d["background_primary"] = bprim.to_json()
                    d["net"] = q.to_json()
                net[view] = q
                detail[view] = d
            if abs(dur_p - dur_a) > 1e-9 * dur_a:  # posterior counts to the anterior exposure
                k = dur_a / dur_p
                p = net["posterior"]
                net["posterior"] = Quantity(p.value * k, p.uncertainty * k, p.unit, p.method + f" x {k:.6g} (exposure ratio)",
                                            {c: v * k for c, v in p.components.items()})
            try:
                a = planar.conjugate_view_activity(
                    net["anterior"], net["posterior"], acquisition_duration_s=dur_a, sensitivity_cps_per_mbq=s_cal,
                    sensitivity_uncertainty_cps_per_mbq=u_cal, transmission=trans[n], self_attenuation=f_self[n],
                    half_life_h=nuclide.half_life_h)
            except InputError as exc:
                raise InputError(f"{exc.detail} (region {n})", source=study.files[0], field=where) from None
            # calibration and transmission are common to all time points of a region (one sensitivity,
            # one body thickness or transmission): each enters the chain once, as a correlated component
            common = ("calibration", "transmission")
            u_count = math.sqrt(sum(v * v for c, v in a.components.items() if c not in common))
            trans_rel[n] = a.components.get("transmission", 0.0) / a.value
            u_roi = a.value * spec.activity_uncertainty_pct / 100.0
            u = math.hypot(u_count, u_roi)
            if not u > 0:
                u = a.value * 1e-6
            meas[n].append({"time_h": t_h, "activity_mbq": float(a.value), "uncertainty_mbq": float(u)})
            reg_json[n]["timepoints"].append({
                "time_h": t_h, "activity": Quantity(a.value, u, "MBq", a.method,
                                                    {**{c: v for c, v in a.components.items() if c not in common},
                                                     "delineation": u_roi}).to_json(),
                "transmission_uncertainty_mbq": a.components.get("transmission", 0.0),
                "counting_uncertainty_mbq": u_count, "calibration_uncertainty_mbq": a.components.get("calibration", 0.0),
                "transmission": trans[n].to_json(), "body_thickness_cm": body_t[n], "ct_line_integrals": ct_json,
                "views": detail})

    # regions for the core chain
    regions: dict[str, Region] = dict(case.regions)
    for n in masks:
        r = case.regions.get(n)
        if r is None or (r.mass_g is None and r.volume_ml is None):
            raise InputError("a planar region needs its mass: give mass_g or volume_ml under regions (planar images do "
                             "not measure it)", field=f"regions.{n}")
        hybrid = spec.hybrid_spect and case.imaging is not None and bool(r.measurements)
        if hybrid:
            base, reg_json[n]["hybrid_spect"] = _hybrid(n, r, meas[n], case)
            regions[n] = Region.model_validate(base)
            continue
        if r.measurements or r.tia_mbq_h is not None:
            raise InputError("region has both planar-image activities and measurements/tia in the case"
                             + ("" if case.imaging is None else " (hybrid planar/SPECT: set planar_imaging.hybrid_spect)"),
                             field=f"regions.{n}")
        base = r.model_dump(exclude_none=True)
        base["measurements"] = meas[n]
        if trans_rel[n] > 0:  # one body thickness for every time point: a common factor of the activities
            base["activity_scale_uncertainty_pct"] = 100.0 * trans_rel[n]
        reg_json[n]["transmission_uncertainty_pct"] = 100.0 * trans_rel[n]
        regions[n] = Region.model_validate(base)
    for n, r in case.regions.items():
        if n not in masks and not (r.measurements or r.tia_mbq_h is not None):
            if case.imaging is None:
                raise InputError("region is in the case but has no planar ROI, measurements or tia", field=f"regions.{n}")
    out = {
        "photopeak_kev": e_kev,
        "scatter": ("TEW, " + planar.OGAWA) if spec.scatter == "tew" else "none",
        "background": "area-scaled, x (1 - t_organ/T_body) where the organ thickness is given (" + planar.BUIJS + ")",
        "method": f"conjugate view, {planar.MIRD16}",
        "calibration": {"sensitivity_cps_per_mbq": s_cal, "uncertainty_pct": spec.calibration.uncertainty_pct},
        "attenuation": att_json,
        "mu_tissue_per_cm": mu_tissue,
        "rois": {"file": spec.rois.file, "sha256": files_sha256([rpath]), "shape_rows_cols": [rows, cols]},
        "activity_uncertainty_pct": spec.activity_uncertainty_pct,
        "timepoints": tp_json,
        "regions": reg_json,
    }
    return PlanarImagingResult(regions, out, spec.calibration.uncertainty_pct, list(dict.fromkeys(warnings)))


def _hybrid(name: str, r: Region, planar_meas: list[dict[str, Any]], case: Case) -> tuple[dict[str, Any], dict[str, Any]]:
    """Hybrid planar/SPECT (Koral et al. 2000; :func:`mrtdose.imaging.planar.hybrid_planar_spect_scaling`):
    the planar curve P_i scaled so that it passes through the one SPECT activity A_S at the SPECT
    time, A_i = P_i A_S / P(t_S). The absolute scale comes from the SPECT, so the planar sensitivity
    cancels (its calibration uncertainty is not used; the SPECT calibration is the correlated
    calibration component). Each scaled activity keeps the planar value's own relative uncertainty
    (counting, delineation: independent between time points); the scale factor's relative
    uncertainty (the SPECT activity's and P(t_S)'s) is common to all time points and enters once,
    as the region's ``activity_scale_uncertainty_pct``. (When the SPECT time coincides with a planar
    time, that planar value's uncertainty is counted both in its point and in the scale: a small,
    conservative double count.)"""
    spect = list(r.measurements or [])
    where = f"regions.{name}"
    if len(spect) != 1:
        raise InputError(f"hybrid planar/SPECT needs the region at exactly one SPECT time point, got {len(spect)}",
                         field=where)
    m = spect[0]
    if m.time_h is None:
        raise InputError("the SPECT measurement has no time_h", field=where)
    a_s = float(m.activity_mbq)  # type: ignore[arg-type]
    u_s = float(m.uncertainty_mbq if m.uncertainty_mbq is not None else a_s * (m.uncertainty_pct or 0.0) / 100.0)
    times = [float(x["time_h"]) for x in planar_meas]
    if not (min(times) <= float(m.time_h) <= max(times)):
        raise InputError(f"the SPECT time {m.time_h:.3g} h is outside the planar times {min(times):.3g}-{max(times):.3g} h "
                         "(no extrapolation)", field=where)
    planar_q = {float(x["time_h"]): Quantity(float(x["activity_mbq"]), float(x["uncertainty_mbq"]), "MBq")
                for x in planar_meas}
    h = planar.hybrid_planar_spect_scaling(planar_q, Quantity(a_s, u_s, "MBq"), float(m.time_h))
    k = h.scale_factor
    k_rel = k.uncertainty / k.value if k.value > 0 else 0.0
    new_meas = []
    for t, q in sorted(planar_q.items()):
        new_meas.append({"time_h": t, "activity_mbq": q.value * k.value, "uncertainty_mbq": q.uncertainty * k.value})
    base = r.model_dump(exclude_none=True)
    base["measurements"] = new_meas
    base["activity_scale_uncertainty_pct"] = 100.0 * k_rel
    info = {"method": h.method, "spect_time_h": float(m.time_h), "spect_activity_mbq": a_s,
            "spect_uncertainty_mbq": u_s, "planar_at_spect_time_mbq": h.planar_at_reference,
            "scale_factor": k.to_json(), "scale_uncertainty_pct": 100.0 * k_rel,
            "reference": planar.KORAL}
    return base, info


def _ct_transmission(study: PlanarStudy, peak: int, mask: np.ndarray, bmask: np.ndarray | None, lint: np.ndarray,
                     bchord: np.ndarray) -> tuple[Quantity, float, dict[str, Any]]:
    """ROI transmission and body thickness from the CT line integrals ``L_p`` of its pixels,
    weighted by the geometric mean ``g_p = sqrt(n_A n_P)`` of the pixels' photopeak counts less
    the background ROI's mean counts per pixel (clipped at 0; raw counts without a background ROI)::

        sqrt(T_roi) = sum g_p / sum g_p exp(L_p / 2),     T_body = sum g_p chord_p / sum g_p

    For sources that are thin along each ray, ``g_p = (source activity on ray p) x exp(-L_p/2)``
    (MIRD 16), so ``sqrt(sum C_A sum C_P) / sqrt(T_roi)`` is the summed activity when the
    anterior/posterior ratio is the same over the ROI. Pixels without organ counts (ROI margin
    beyond the body outline, background tissue over a dense spine) then do not set the organ's
    transmission, as they would with an unweighted mean. Without counts the unweighted mean of
    ``L_p`` is used."""
    g2 = np.ones(int(mask.sum()))
    for view in ("anterior", "posterior"):
        img = study.counts(view, peak)
        net = img[mask] - (float(img[bmask].mean()) if bmask is not None else 0.0)
        g2 = g2 * np.clip(net, 0.0, None)
    g = np.sqrt(g2)
    lp, cp = lint[mask], bchord[mask]
    if g.sum() > 0:
        sqrt_t = float(g.sum() / (g * np.exp(0.5 * lp)).sum())
        t_body = float((g * cp).sum() / g.sum())
        how = "weighted by the background-subtracted geometric-mean photopeak counts"
    else:
        sqrt_t = math.exp(-0.5 * float(lp.mean()))
        t_body = float(cp.mean())
        how = "unweighted mean over the ROI (no net counts)"
    tf = sqrt_t * sqrt_t
    q = Quantity(tf, 0.0, "1", f"CT line integrals of mu along the AP rays, {how} ({planar.MIRD16})")
    return q, t_body, {"effective_line_integral": -math.log(tf), "line_integral_range": [float(lp.min()), float(lp.max())],
                       "body_thickness_cm": t_body, "weighting": how}


def _check_grid(study: PlanarStudy, lab: np.ndarray, roi_vol: Any, rpath: Path) -> None:
    if lab.shape != study.shape:
        raise InputError(f"the ROI label map is {lab.shape[0]} x {lab.shape[1]} (rows x columns) but the images are "
                         f"{study.shape[0]} x {study.shape[1]} ({study.files[0]})", source=str(rpath),
                         field="planar_imaging.rois.file")
    col_mm, row_mm = roi_vol.spacing_mm[0], roi_vol.spacing_mm[1]
    ps_row, ps_col = study.pixel_spacing_mm
    if abs(col_mm - ps_col) > SPACING_TOLERANCE_MM or abs(row_mm - ps_row) > SPACING_TOLERANCE_MM:
        raise InputError(f"the ROI label map's pixels are {row_mm:g} x {col_mm:g} mm but the images' are {ps_row:g} x "
                         f"{ps_col:g} mm ({study.files[0]})", source=str(rpath), field="planar_imaging.rois.file")


def _window_sums(study: PlanarStudy, view: str, mask: np.ndarray, w: Any) -> dict[str, float]:
    out = {"photopeak": _sum(study.counts(view, w.peak), mask)}
    if w.lower is not None:
        out["scatter_lower"] = _sum(study.counts(view, w.lower), mask)
        out["scatter_upper"] = _sum(study.counts(view, w.upper), mask)
    return out


def _primary(study: PlanarStudy, view: str, mask: np.ndarray, w: Any) -> Quantity:
    peak = _sum(study.counts(view, w.peak), mask)
    if w.lower is None:
        return planar.poisson_counts(peak, f"{view} photopeak counts")
    ws = study.windows
    return planar.tew_primary_counts(
        peak, _sum(study.counts(view, w.lower), mask), _sum(study.counts(view, w.upper), mask),
        lower_width_kev=ws[w.lower].width_kev, upper_width_kev=ws[w.upper].width_kev, peak_width_kev=ws[w.peak].width_kev)


def apply(case: Case, nuclide: Nuclide, base_dir: Path | None,
          say: Callable[[str], None]) -> tuple[Case, dict[str, Any], list[str]]:
    """The pipeline hook: the case with the planar regions' measurements filled in and, when
    ``options.calibration_uncertainty_pct`` is not set, the planar calibration uncertainty as the
    correlated calibration component; plus the ``planar_imaging`` results block and warnings."""
    res = quantify(case, nuclide, base_dir, say)
    opts = case.options
    warnings = list(res.warnings)
    if all("hybrid_spect" in r for r in res.json["regions"].values()):
        # every planar curve is scaled to a SPECT activity: the planar sensitivity cancels
        res.json["calibration"]["correlated_component_pct_used"] = opts.calibration_uncertainty_pct
        res.json["calibration"]["note"] = "hybrid planar/SPECT: the planar calibration cancels; the SPECT calibration is used"
        return case.model_copy(update={"regions": res.regions, "options": opts}), res.json, warnings
    if opts.calibration_uncertainty_pct is None:
        opts = opts.model_copy(update={"calibration_uncertainty_pct": res.calibration_uncertainty_pct})
    elif opts.calibration_uncertainty_pct < res.calibration_uncertainty_pct:
        warnings.append(f"planar_imaging: the planar calibration uncertainty ({res.calibration_uncertainty_pct:g} %) "
                        f"is larger than options.calibration_uncertainty_pct ({opts.calibration_uncertainty_pct:g} %), "
                        "which is the one used")
    res.json["calibration"]["correlated_component_pct_used"] = opts.calibration_uncertainty_pct
    return case.model_copy(update={"regions": res.regions, "options": opts}), res.json, warnings
