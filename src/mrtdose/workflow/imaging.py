"""Imaging step of the pipeline: quantitative images at several times -> region activities and
masses for the core chain.

For each time point: the SPECT (or PET) series is read (:mod:`mrtdose.imaging.dicom_series`),
converted to Bq/mL with the camera calibration when it is in counts (with decay during the
acquisition; :mod:`mrtdose.imaging.calibration`), and brought onto the first time point's grid
(same frame of reference: resampling; ``registration: rigid``: CT-to-CT registration carried to
the SPECT). Regions come from an RTSTRUCT on the first CT (rasterised with fractional occupancy
and resampled onto the SPECT grid) or from a label map on the first SPECT grid. Region masses
are computed from the first CT (HU to density, :mod:`mrtdose.imaging.density`).

The activities enter the core chain as measurements at the acquisition start times (activities
in the region, not decay-corrected), each with ``imaging.activity_uncertainty_pct`` (delineation
and noise); the calibration uncertainty enters once, as the correlated calibration component.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mrtdose.errors import InputError
from mrtdose.imaging.calibration import counts_to_activity_concentration, load_calibrations
from mrtdose.imaging.density import density_from_ct
from mrtdose.imaging.dicom_series import read_series_with_info
from mrtdose.imaging.nifti import read_nifti, sidecar_path_for
from mrtdose.imaging.regions import body_mask
from mrtdose.imaging.resample import resample
from mrtdose.imaging.rtstruct import rtstruct_masks
from mrtdose.imaging.seg import seg_masks
from mrtdose.imaging.volume import Volume
from mrtdose.physics.decay import elapsed_hours
from mrtdose.physics.nuclides import Nuclide
from mrtdose.workflow.case import Case, Region
from mrtdose.workflow.provenance import files_sha256

_BQML = {"Bq/mL": 1.0, "kBq/mL": 1e3, "MBq/mL": 1e6}


@dataclass
class ImagingResult:
    regions: dict[str, Region]
    json: dict[str, Any]
    calibration_uncertainty_pct: float | None
    warnings: list[str] = field(default_factory=list)
    display: dict[str, Any] = field(default_factory=dict)


def _path(base_dir: Path | None, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() or base_dir is None else base_dir / p


def _bq_per_ml(vol: Volume, info: Any, tp: Any, case: Case, nuclide: Nuclide, base_dir: Path | None,
               where: str) -> tuple[Volume, str, float | None]:
    """The image in Bq/mL, the method text and the calibration's relative uncertainty (or None)."""
    if vol.unit in _BQML:
        return vol.with_array(np.asarray(vol.array, dtype=np.float64) * _BQML[vol.unit], unit="Bq/mL"), \
            f"image in {vol.unit}", None
    if vol.unit != "counts":
        raise InputError(f"image unit '{vol.unit}' is neither an activity concentration nor counts", field=f"{where}.spect")
    cal = case.imaging.calibration  # type: ignore[union-attr]
    if cal is None:
        raise InputError("the image is in counts: give imaging.calibration", field="imaging.calibration")
    duration = tp.acquisition_duration_s or (info.frame_duration_ms / 1000.0 if info.frame_duration_ms else None)
    if not duration:
        raise InputError("acquisition duration unknown (no ActualFrameDuration): give acquisition_duration_s",
                         field=f"{where}.acquisition_duration_s")
    if cal.database:
        db = load_calibrations(_path(base_dir, cal.database))
        rec = db.select(cal.camera, cal.collimator, nuclide.name.split("+")[0], cal.window, info.acquisition_time)
        sens: Any = rec
        u_rel = rec.relative_uncertainty
        text = f"calibration {rec.camera}/{rec.collimator} {rec.sensitivity_cps_per_mbq:g} cps/MBq (database)"
    else:
        sens = float(cal.sensitivity_cps_per_mbq)  # type: ignore[arg-type]
        u_rel = cal.uncertainty_pct / 100.0
        text = f"sensitivity {sens:g} cps/MBq"
    ac = counts_to_activity_concentration(vol, sensitivity_cps_per_mbq=sens, acquisition_duration_s=float(duration),
                                          half_life_h=nuclide.half_life_h)
    return ac.values, f"counts / ({text} x {duration:g} s), decay during acquisition corrected", u_rel  # type: ignore[return-value]


def quantify(case: Case, nuclide: Nuclide, base_dir: Path | None, say: Callable[[str], None]) -> ImagingResult:
    spec = case.imaging
    assert spec is not None and case.administration.time is not None
    warnings: list[str] = []
    images: list[Volume] = []
    cts: list[Volume | None] = []
    tp_json: list[dict[str, Any]] = []
    u_cal: float | None = None
    fors: list[str | None] = []
    for i, tp in enumerate(spec.timepoints):
        where = f"imaging.timepoints.{i}"
        say(f"imaging: reading time point {i + 1}/{len(spec.timepoints)}")
        spath = _path(base_dir, tp.spect)
        if not spath.exists():
            raise InputError("not found", source=str(spath), field=f"{where}.spect")
        vol, info = read_series_with_info(spath, series_uid=tp.series_uid, time_override=tp.time, tz=spec.timezone)
        act, method, u = _bq_per_ml(vol, info, tp, case, nuclide, base_dir, where)
        if u is not None:
            u_cal = u if u_cal is None else max(u_cal, u)
        ct = None
        ct_info = None
        if tp.ct:
            cpath = _path(base_dir, tp.ct)
            if not cpath.exists():
                raise InputError("not found", source=str(cpath), field=f"{where}.ct")
            ct, ct_info = read_series_with_info(cpath, modality="CT", tz=spec.timezone)
            if ct_info.frame_of_reference_uid and info.frame_of_reference_uid and \
                    ct_info.frame_of_reference_uid != info.frame_of_reference_uid:
                raise InputError("the CT and the SPECT are in different frames of reference (different studies?)",
                                 source=str(cpath), field=f"{where}.ct")
            if ct_info.patient_id != info.patient_id:
                raise InputError(f"CT patient '{ct_info.patient_id}' differs from SPECT patient '{info.patient_id}'",
                                 source=str(cpath), field=f"{where}.ct")
        t_h = elapsed_hours(case.administration.time, info.acquisition_time, what=f"{where} acquisition time")
        if t_h <= 0:
            raise InputError(f"acquired {t_h:.2f} h after the administration", source=str(spath), field=where)
        images.append(act)
        cts.append(ct)
        fors.append(info.frame_of_reference_uid)
        tp_json.append({"time_h": t_h, "acquisition_time": info.acquisition_time.isoformat(),
                        "spect_sha256": files_sha256(info.files),
                        "ct_sha256": files_sha256(ct_info.files) if ct is not None else None,
                        "time_source": info.time_source, "series_description": info.series_description,
                        "modality": info.modality, "unit": vol.unit, "quantification": method,
                        "warnings": list(info.warnings)})
        warnings.extend(f"{where}: {w}" for w in info.warnings)
    ref = images[0]
    if spec.registration == "none" and len({f for f in fors if f}) > 1:
        warnings.append(
            "imaging: the time points are in different frames of reference and registration is 'none': the "
            "patient is assumed to lie at the same scanner coordinates; use registration: rigid otherwise"
        )

    # bring every time point onto the first SPECT grid
    say("imaging: registration")
    reg_json: list[dict[str, Any]] = [{"time_point": 0, "method": "reference"}]
    aligned = [ref]
    for i in range(1, len(images)):
        if spec.registration == "rigid":
            from mrtdose.imaging import registration as reg

            if cts[0] is None or cts[i] is None:
                raise InputError("rigid registration needs a CT at every time point", field=f"imaging.timepoints.{i}.ct")
            # start from the recorded patient coordinates (same scanner, patient on the couch)
            tr = reg.register_rigid(cts[0], cts[i], initial="identity", require_modality="CT")
            aligned.append(reg.apply_transform(tr, images[i], ref, interpolation="linear", conserve_total=True))
            # quality: overlap and surface distance of the body outlines after registration
            b0 = body_mask(cts[0])
            bi = cts[i].with_array(body_mask(cts[i]).astype(np.uint8), unit="1")
            moved_body = reg.apply_transform(tr, bi, cts[0], interpolation="nearest").array > 0
            ov = reg.mask_overlap(b0, moved_body)
            sd = reg.surface_distances(b0, moved_body, cts[0].spacing_mm)
            reg_json.append({"time_point": i, "method": "rigid CT-to-CT", "transform": tr.to_dict(),
                             "quality": {"body_dice": ov.dice, "body_mean_surface_distance_mm": sd.mean_mm,
                                         "body_hd95_mm": sd.hd95_mm}})
            if ov.dice < 0.9:
                warnings.append(f"imaging: registration of time point {i} is poor (body Dice {ov.dice:.2f}); check it")
        else:
            moved = images[i] if images[i].same_grid(ref) else resample(images[i], ref, interpolation="linear",
                                                                         conserve="total")
            aligned.append(moved)
            reg_json.append({"time_point": i, "method": "none (same frame of reference; resampled to the first grid)"
                             if not images[i].same_grid(ref) else "none (same grid)"})

    # regions on the first SPECT grid (fractional occupancy) and masses from the first CT
    say("imaging: regions")
    fractions: dict[str, np.ndarray] = {}
    masses: dict[str, float] = {}
    volumes: dict[str, float] = {}
    if spec.regions.rtstruct or spec.regions.seg:
        key = "rtstruct" if spec.regions.rtstruct else "seg"
        if cts[0] is None:
            raise InputError(f"an {key.upper()} needs the first time point's CT", field="imaging.timepoints.0.ct")
        rpath = _path(base_dir, spec.regions.rtstruct or spec.regions.seg or "")
        if not rpath.is_file():
            raise InputError("not found", source=str(rpath), field=f"imaging.regions.{key}")
        regions_hash = files_sha256([rpath])
        if key == "rtstruct":
            masks = rtstruct_masks(rpath, cts[0], spec.regions.names or None)
        else:
            masks = {n: np.asarray(m) >= 0.5 for n, m in
                     seg_masks(rpath, cts[0], spec.regions.names or None, interpolation="nearest").items()}
        rho = density_from_ct(cts[0])
        v_ct = cts[0].voxel_volume_ml
        for name, m in masks.items():
            mv = cts[0].with_array(m.astype(np.float64), unit="1")
            fractions[name] = resample(mv, ref, interpolation="fractional").array
            masses[name] = float((rho.array * m).sum() * v_ct)
            volumes[name] = float(m.sum() * v_ct)
    else:
        lab_spec = spec.regions.labels
        assert lab_spec is not None
        lpath = _path(base_dir, lab_spec.file)
        if not lpath.is_file():
            raise InputError("not found", source=str(lpath), field="imaging.regions.labels.file")
        regions_hash = files_sha256([lpath])
        lvol = read_nifti(lpath) if sidecar_path_for(lpath).exists() else read_nifti(lpath, unit="1")
        if not lvol.same_grid(ref):
            raise InputError("the label map is not on the first SPECT grid", source=lab_spec.file, field="imaging.regions.labels")
        lab = np.round(lvol.array).astype(np.int64)
        rho_img = density_from_ct(resample(cts[0], ref, interpolation="linear")) if cts[0] is not None else None
        for name, vals in lab_spec.regions.items():
            vals = [vals] if isinstance(vals, int) else vals
            m = np.isin(lab, vals)
            fractions[name] = m.astype(np.float64)
            volumes[name] = float(m.sum() * ref.voxel_volume_ml)
            masses[name] = float((rho_img.array[m].sum() if rho_img is not None else 1.03 * m.sum()) * ref.voxel_volume_ml)
    v_ml = ref.voxel_volume_ml
    recovery: dict[str, tuple[float, float]] = {}
    if spec.recovery is not None:
        from mrtdose.imaging.recovery import load_recovery_curve

        curve = load_recovery_curve(_path(base_dir, spec.recovery.curve))
        for name in spec.recovery.regions:
            if name not in fractions:
                raise InputError("not one of the image regions", field=f"imaging.recovery.regions: {name}")
            rc, u_rc = curve.rc_with_uncertainty(volumes[name])
            recovery[name] = (float(rc), float(u_rc))
            if curve.is_extrapolation(volumes[name]):
                warnings.append(f"imaging: {name}: {volumes[name]:.3g} mL is outside the recovery curve's sphere volumes")
    regions: dict[str, Region] = {}
    reg_out: dict[str, Any] = {}
    for name, frac in fractions.items():
        if frac.sum() <= 0:
            raise InputError("region does not overlap the SPECT field of view", field=f"imaging.regions: {name}")
        acts = [float((a.array * frac).sum() * v_ml / 1e6) for a in aligned]
        if min(acts) <= 0:
            raise InputError(f"no activity in region at time point {int(np.argmin(acts))}", field=f"imaging.regions: {name}")
        base = case.regions[name].model_dump(exclude_none=True) if name in case.regions else {}
        if base.get("measurements") or base.get("tia_mbq_h"):
            raise InputError("region has both image-based activities and measurements/tia in the case",
                             field=f"regions.{name}")
        base.setdefault("mass_g", round(masses[name], 3))
        if name in recovery:
            base["recovery_coefficient"], base["recovery_uncertainty"] = recovery[name]
        base["measurements"] = [
            {"time_h": tp["time_h"], "activity_mbq": a, "uncertainty_pct": spec.activity_uncertainty_pct}
            for tp, a in zip(tp_json, acts)
        ]
        regions[name] = Region.model_validate(base)
        reg_out[name] = {"volume_ml": volumes[name], "mass_g_from_ct": masses[name], "activities_mbq": acts,
                         "times_h": [tp["time_h"] for tp in tp_json]}
    missing = [n for n in case.regions if n not in regions]
    for n in missing:
        r = case.regions[n]
        if not (r.measurements or r.tia_mbq_h):
            raise InputError("region is in the case but not in the images' regions", field=f"regions.{n}")
        regions[n] = r
    out = {
        "timepoints": tp_json,
        "registration": reg_json,
        "regions_source": spec.regions.rtstruct or spec.regions.seg or (spec.regions.labels.file if spec.regions.labels else None),
        "regions_sha256": regions_hash,
        "grid": {"shape_zyx": list(ref.array.shape), "spacing_mm": list(ref.spacing_mm)},
        "regions": reg_out,
        "activity_uncertainty_pct": spec.activity_uncertainty_pct,
        "recovery": ({"curve": spec.recovery.curve,
                      "regions": {n: {"volume_ml": volumes[n], "recovery_coefficient": rc, "uncertainty": u}
                                  for n, (rc, u) in recovery.items()}} if recovery else None),
    }
    display = {"slices": _slices(aligned, fractions)}
    return ImagingResult(regions, out, None if u_cal is None else 100.0 * u_cal, warnings, display)


def _slices(images: list[Volume], fractions: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The axial slice through the largest region's centre at each time point (display only)."""
    if not fractions:
        return []
    big = max(fractions, key=lambda n: fractions[n].sum())
    z = int(np.round(np.average(np.arange(fractions[big].shape[0]), weights=fractions[big].sum(axis=(1, 2)))))
    return [{"z": z, "activity_bq_per_ml": im.array[z], "regions": {n: f[z] for n, f in fractions.items()}}
            for im in images]
