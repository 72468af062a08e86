"""Imaging step of the pipeline: quantitative images at several times -> region activities and
masses for the core chain.

Images
------
For each time point the SPECT (or PET) is read: a DICOM series (:mod:`mrtdose.imaging.dicom_series`)
or, for data that lost its headers, a NIfTI (:mod:`mrtdose.imaging.nifti`) or MetaImage
(:mod:`mrtdose.imaging.metaimage`) file with a JSON sidecar (unit, acquisition time with UTC
offset, optionally acquisition duration and identity). The acquisition time comes from the DICOM
headers or the sidecar, or from the time point's ``time:`` override -- never guessed; a counts
image needs its acquisition duration (DICOM Actual Frame Duration, the sidecar's
``acquisition_duration_s`` or the case's). Images in counts are converted to Bq/mL with the
camera calibration (with decay during the acquisition; :mod:`mrtdose.imaging.calibration`). A
CT of the same time point (DICOM or NIfTI/MetaImage in HU) must belong to the SPECT: the same
patient and frame of reference where both are known, and overlapping fields of view.

Multi-bed studies
-----------------
``spect:`` may be a list, one entry per bed position (one series per bed, overlapping along the
slice axis). Each bed is read and checked like a single image, converted to Bq/mL on its own (its
own time and duration), and the beds are joined onto one grid (:func:`mrtdose.imaging.multibed.join_beds`:
same orientation, spacing, in-plane grid, patient and frame of reference; no gap; overlap feathered
linearly or averaged, ``bed_overlap``; decay corrected to the earliest bed's start, which is the
time point's time). The time point then continues as one image; ``timepoints[i].beds`` records
each bed (path, SHA-256, z extent, overlap, time, quantification). A dead-time factor applies to
all beds of the time point alike (one observed rate).

Dead time
---------
With ``imaging.calibration.dead_time`` each time point's observed whole-detector count rate
``m`` gives the true rate ``n`` (paralysable ``m = n exp(-n tau)``, solved with the Lambert W
function, or non-paralysable ``m = n / (1 + n tau)``; Knoll, Radiation Detection and Measurement,
4th ed. 2010, ch. 4; :func:`mrtdose.imaging.calibration.dead_time_correct`). The factor
``k = n / m`` multiplies that time point's image (so every region's activity). Its standard
uncertainty from ``u(tau)`` (GUM, first order: ``u(k) = |dn/dtau| u(tau) / m``,
:func:`mrtdose.imaging.calibration.dead_time_correct_quantity`) differs between time points (the
rates differ), so it is treated as a per-time-point uncertainty: added in quadrature to that
time point's measurement uncertainty ``imaging.activity_uncertainty_pct``. (This treats the
dead-time errors of the time points as independent; they share one ``tau``, so the TIA
uncertainty from ``tau`` is somewhat underestimated when the factors are large.)

Alignment and regions
---------------------
Every time point is brought onto the first time point's SPECT grid (same frame of reference:
resampling; ``registration: rigid``: CT-to-CT registration carried to the SPECT). Regions come
from an RTSTRUCT or DICOM SEG on the first CT, from the optional TotalSegmentator network on the
first CT (:mod:`mrtdose.imaging.segmentation`; classes mapped to one region are united), or from
a label map on the first SPECT grid. CT-based masks are resampled onto the SPECT grid with
fractional occupancy; masses come from the first CT (HU to density, :mod:`mrtdose.imaging.density`).

``regions.whole_body`` creates a region with the activity in the body outline of the first CT
(:func:`mrtdose.imaging.regions.body_mask`, united with the named regions so that each lies in
it), or in the whole SPECT field of view when there is no CT (the provenance says which).
``regions.remainder`` creates the rest of the body: occupancy ``f_wb - sum(f_r)`` per voxel, so
that remainder + sum of regions = whole body exactly; its mass is the whole-body mass minus the
regions' masses. (The whole body is what the SPECT sees: a field of view shorter than the patient
measures the body within it.)

The activities enter the core chain as measurements at the acquisition start times (activities
in the region, not decay-corrected), each with its time point's measurement uncertainty; the
calibration uncertainty enters once, as the correlated calibration component.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mrtdose.errors import InputError, PhysicsError
from mrtdose.imaging.calibration import (
    KNOLL,
    counts_to_activity_concentration,
    dead_time_correct_quantity,
    load_calibrations,
)
from mrtdose.imaging.density import density_from_ct
from mrtdose.imaging.dicom_series import read_series_with_info
from mrtdose.imaging.metaimage import is_metaimage, read_metaimage
from mrtdose.imaging.nifti import read_nifti, sidecar_metadata, sidecar_path_for
from mrtdose.imaging.regions import BODY_THRESHOLD_HU, body_mask
from mrtdose.imaging.resample import resample
from mrtdose.imaging.rtstruct import rtstruct_masks
from mrtdose.imaging.seg import seg_masks
from mrtdose.imaging.volume import Volume
from mrtdose.physics.decay import elapsed_hours
from mrtdose.physics.nuclides import Nuclide
from mrtdose.quantities import Quantity
from mrtdose.workflow.case import Case, Region
from mrtdose.workflow.provenance import files_sha256

_BQML = {"Bq/mL": 1.0, "kBq/mL": 1e3, "MBq/mL": 1e6}

#: Image files read instead of a DICOM series (with a JSON sidecar).
FILE_SUFFIXES = (".nii", ".nii.gz", ".mhd", ".mha")

#: A region whose CT mask lies less than this fraction inside the SPECT field of view is flagged.
_PARTIAL_FOV_WARNING = 0.98


@dataclass
class ImagingResult:
    regions: dict[str, Region]
    json: dict[str, Any]
    calibration_uncertainty_pct: float | None
    warnings: list[str] = field(default_factory=list)
    display: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Meta:
    """What the pipeline needs to know about an image beyond its voxels, for any file format."""

    format: str
    files: tuple[str, ...]
    acquisition_time: datetime | None
    time_source: str
    duration_s: float | None
    duration_source: str | None
    patient_id: str | None
    frame_of_reference_uid: str | None
    series_description: str
    modality: str
    warnings: tuple[str, ...] = ()


def _path(base_dir: Path | None, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() or base_dir is None else base_dir / p


def is_image_file(path: str | Path) -> bool:
    """True for a NIfTI or MetaImage file name (read with a sidecar instead of as DICOM)."""
    return Path(path).name.lower().endswith(FILE_SUFFIXES)


def _read_image(path: Path, kind: str, tp: Any, where: str, tz: str | None,
                time_override: datetime | None, *, fld: str | None = None,
                series_uid: str | None = None) -> tuple[Volume, _Meta]:
    """Read the ``kind`` ("spect" or "ct") image of a time point, DICOM or file with sidecar.

    ``fld`` names the case field in errors (default ``<where>.<kind>``); ``series_uid`` selects
    the SPECT series (default: the time point's ``series_uid``)."""
    fld = fld or f"{where}.{kind}"
    if kind == "spect" and series_uid is None and isinstance(tp.series_uid, str):
        series_uid = tp.series_uid
    if not path.exists():
        raise InputError("not found", source=str(path), field=fld)
    if is_image_file(path):
        fmt = "MetaImage" if is_metaimage(path) else "NIfTI"
        try:
            vol = (read_metaimage if fmt == "MetaImage" else read_nifti)(path, modality="CT" if kind == "ct" else None)
            side = sidecar_metadata(path)
        except InputError as exc:
            raise InputError(exc.detail, source=exc.source or str(path),
                             field=f"{fld} ({exc.field})" if exc.field else fld) from None
        if kind == "ct" and vol.unit.upper() != "HU":
            raise InputError(f"a CT must be in HU, the sidecar says unit {vol.unit!r}", source=str(path), field=fld)
        t = time_override or vol.acquisition_time
        if kind == "spect" and t is None:
            raise InputError(
                f"no acquisition time: {fmt} has no header for it; add \"acquisition_time\" (ISO 8601 with UTC offset) to "
                f"the sidecar {sidecar_path_for(path).name}, or give {where}.time -- the time is never guessed",
                source=str(path), field=f"{where}.time",
            )
        if t is not None and t != vol.acquisition_time:  # the volume carries the time used (beds are joined by it)
            vol = vol.with_array(vol.array, unit=vol.unit, acquisition_time=t)
        src = "time (case override)" if time_override is not None else f"sidecar {side.source}"
        return vol, _Meta(fmt, vol.source_files, t, src, side.acquisition_duration_s,
                          f"sidecar {side.source}" if side.acquisition_duration_s else None,
                          side.patient_id, side.frame_of_reference_uid, vol.description, vol.modality)
    try:
        vol, info = read_series_with_info(path, modality="CT" if kind == "ct" else None,
                                          series_uid=series_uid if kind == "spect" else None,
                                          time_override=time_override, tz=tz)
    except InputError as exc:
        if "time_override" in exc.detail or "time zone" in exc.detail:
            raise InputError(f"{exc.detail} (in the case: give {where}.time, or imaging.timezone for local times)",
                             source=exc.source or str(path), field=f"{where}.time" + (f" ({exc.field})" if exc.field else "")) from None
        raise
    dur = info.frame_duration_ms / 1000.0 if info.frame_duration_ms else None
    return vol, _Meta("DICOM", tuple(info.files), info.acquisition_time, info.time_source, dur,
                      "DICOM Actual Frame Duration (0018,1242)" if dur else None, info.patient_id,
                      info.frame_of_reference_uid, info.series_description, info.modality, tuple(info.warnings))


def _extent(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS bounding box (mm) of the voxels' extent (not just their centres)."""
    n = np.array(vol.size_ijk, dtype=np.float64)
    corners = np.array([[a, b, c] for a in (-0.5, n[0] - 0.5) for b in (-0.5, n[1] - 0.5) for c in (-0.5, n[2] - 0.5)])
    p = vol.index_to_physical(corners)
    return p.min(axis=0), p.max(axis=0)


def _check_ct_matches(spect: Volume, sm: _Meta, ct: Volume, cm: _Meta, cpath: Path, where: str) -> None:
    """A CT and a SPECT of one time point must come from one session (bad-input list of the
    imaging issue): same patient and frame of reference where both are known, overlapping in space."""
    fld = f"{where}.ct"
    if cm.frame_of_reference_uid and sm.frame_of_reference_uid and cm.frame_of_reference_uid != sm.frame_of_reference_uid:
        raise InputError("the CT and the SPECT are in different frames of reference (different studies?)",
                         source=str(cpath), field=fld)
    if cm.patient_id and sm.patient_id and cm.patient_id != sm.patient_id:
        raise InputError(f"CT patient '{cm.patient_id}' differs from SPECT patient '{sm.patient_id}'",
                         source=str(cpath), field=fld)
    lo1, hi1 = _extent(spect)
    lo2, hi2 = _extent(ct)
    if np.any(lo1 >= hi2) or np.any(lo2 >= hi1):
        raise InputError(
            f"the CT (x, y, z from {np.round(lo2, 1).tolist()} to {np.round(hi2, 1).tolist()} mm) and the SPECT "
            f"({np.round(lo1, 1).tolist()} to {np.round(hi1, 1).tolist()} mm) do not overlap in space: different "
            "studies, or a file with wrong geometry?", source=str(cpath), field=fld)


def dead_time_factor(observed_cps: float, *, tau_us: float, model: str,
                     tau_uncertainty_pct: float = 0.0) -> tuple[float, float, float]:
    """Dead-time correction factor ``k = n / m`` for an observed rate ``m`` (cps), its standard
    uncertainty from ``u(tau)``, and the true rate ``n`` (module docstring; Knoll ch. 4).

    Paralysable: ``k = exp(n tau)``; non-paralysable: ``k = 1 / (1 - m tau)``.

    >>> k, u, n = dead_time_factor(90909.0909, tau_us=1.0, model="non-paralysable")
    >>> round(k, 6), round(n)
    (1.1, 100000)
    """
    tau_s = float(tau_us) * 1e-6
    q = dead_time_correct_quantity(Quantity(float(observed_cps), 0.0, "cps"), tau_s, model,
                                   tau_uncertainty_s=tau_s * float(tau_uncertainty_pct) / 100.0)
    m = float(observed_cps)
    return q.value / m, float(q.components["dead time (tau)"]) / m, q.value


def _bq_per_ml(vol: Volume, meta: _Meta, tp: Any, case: Case, nuclide: Nuclide, base_dir: Path | None,
               where: str) -> tuple[Volume, str, float | None, float | None]:
    """The image in Bq/mL, the method text, the calibration's relative uncertainty (or None) and
    the acquisition duration used (s, counts images)."""
    if vol.unit in _BQML:
        return vol.with_array(np.asarray(vol.array, dtype=np.float64) * _BQML[vol.unit], unit="Bq/mL"), \
            f"image in {vol.unit}", None, None
    if vol.unit != "counts":
        raise InputError(f"image unit '{vol.unit}' is neither an activity concentration nor counts",
                         source=meta.files[0] if meta.files else None, field=f"{where}.spect")
    cal = case.imaging.calibration  # type: ignore[union-attr]
    if cal is None or (cal.sensitivity_cps_per_mbq is None and cal.database is None):
        raise InputError("the image is in counts: give imaging.calibration (sensitivity_cps_per_mbq or database)",
                         field="imaging.calibration")
    duration = tp.acquisition_duration_s or meta.duration_s
    if not duration:
        raise InputError(
            "acquisition duration unknown (no DICOM Actual Frame Duration, no acquisition_duration_s in a sidecar): give "
            "acquisition_duration_s", source=meta.files[0] if meta.files else None, field=f"{where}.acquisition_duration_s")
    assert meta.acquisition_time is not None
    if cal.database:
        db = load_calibrations(_path(base_dir, cal.database))
        rec = db.select(cal.camera, cal.collimator, nuclide.name.split("+")[0], cal.window, meta.acquisition_time)
        sens: Any = rec
        u_rel = rec.relative_uncertainty
        text = f"calibration {rec.camera}/{rec.collimator} {rec.sensitivity_cps_per_mbq:g} cps/MBq (database)"
    else:
        sens = float(cal.sensitivity_cps_per_mbq)  # type: ignore[arg-type]
        u_rel = cal.uncertainty_pct / 100.0
        text = f"sensitivity {sens:g} cps/MBq"
    ac = counts_to_activity_concentration(vol, sensitivity_cps_per_mbq=sens, acquisition_duration_s=float(duration),
                                          half_life_h=nuclide.half_life_h)
    return ac.values, f"counts / ({text} x {duration:g} s), decay during acquisition corrected", u_rel, float(duration)  # type: ignore[return-value]


def _read_spect(tp: Any, case: Case, nuclide: Nuclide, base_dir: Path | None, where: str
                ) -> tuple[Volume, _Meta, Volume, str, float | None, float | None, dict[str, Any] | None]:
    """A time point's SPECT/PET in Bq/mL: one series, or the beds of a multi-bed study joined.

    Beds: each is read and checked as a single series would be, converted to Bq/mL on its own
    (its own time and duration: beds in counts with different durations are fine), then joined
    (:func:`mrtdose.imaging.multibed.join_beds`; decay corrected to the earliest bed's start with
    the nuclide's half-life). Returns (image as read -- the first bed for beds --, its metadata,
    the image in Bq/mL, method, calibration relative uncertainty, duration, beds provenance)."""
    if isinstance(tp.spect, str) or len(tp.spect) == 1:
        path = tp.spect if isinstance(tp.spect, str) else tp.spect[0]
        uid = tp.series_uid[0] if isinstance(tp.series_uid, list) else None
        vol, meta = _read_image(_path(base_dir, path), "spect", tp, where, case.imaging.timezone, tp.time,  # type: ignore[union-attr]
                                series_uid=uid)
        act, method, u, duration = _bq_per_ml(vol, meta, tp, case, nuclide, base_dir, where)
        return vol, meta, act, method, u, duration, None
    from mrtdose.imaging.multibed import join_beds

    uids = tp.series_uid if isinstance(tp.series_uid, list) else [tp.series_uid] * len(tp.spect)
    read: list[tuple[Volume, _Meta]] = []
    acts: list[Volume] = []
    methods, durations, u_cal = [], [], None
    for b, (path, uid) in enumerate(zip(tp.spect, uids)):
        fld = f"{where}.spect.{b}"
        vol, meta = _read_image(_path(base_dir, path), "spect", tp, where, case.imaging.timezone, tp.time,  # type: ignore[union-attr]
                                fld=fld, series_uid=uid)
        if read and vol.unit != read[0][0].unit:
            raise InputError(f"bed unit {vol.unit!r} differs from the first bed's {read[0][0].unit!r}",
                             source=meta.files[0] if meta.files else str(path), field=fld)
        act, method, u, duration = _bq_per_ml(vol, meta, tp, case, nuclide, base_dir, fld)
        read.append((vol, meta))
        acts.append(act)
        methods.append(method)
        durations.append(duration)
        if u is not None:
            u_cal = u if u_cal is None else max(u_cal, u)
    metas = [m for _, m in read]
    try:
        joined, info = join_beds(acts, overlap=tp.bed_overlap, half_life_h=nuclide.half_life_h,
                                 durations_s=durations, patient_ids=[m.patient_id for m in metas],
                                 frame_of_reference_uids=[m.frame_of_reference_uid for m in metas])
    except InputError as exc:
        b = next((i for i, m in enumerate(metas) if exc.source and exc.source in m.files), None)
        raise InputError(exc.detail, source=exc.source,
                         field=(f"{where}.spect" + (f".{b}" if b is not None else ""))
                         + (f" ({exc.field})" if exc.field else "")) from None
    m0 = metas[0]
    files = tuple(f for m in metas for f in m.files)
    beds_json = info.to_dict()
    for bed in beds_json["beds"]:
        b = bed["input_index"]
        bed.update(path=tp.spect[b], sha256=files_sha256(metas[b].files), format=metas[b].format,
                   series_description=metas[b].series_description, quantification=methods[b],
                   time_source=metas[b].time_source)
    same = all(d == durations[0] for d in durations)
    meta = _Meta(m0.format, files, info.acquisition_time, f"earliest bed start ({m0.time_source})",
                 durations[0] if same else None, m0.duration_source if same else None, m0.patient_id,
                 m0.frame_of_reference_uid, m0.series_description, m0.modality,
                 tuple(f"bed {b}: {w}" for b, m in enumerate(metas) for w in m.warnings) + info.notes)
    method = f"{len(metas)} beds, each: {methods[0]}; joined ({info.method})"
    return read[0][0], meta, joined, method, u_cal, durations[0] if same else None, beds_json


def _dead_times(case: Case) -> list[dict[str, Any] | None]:
    """Per time point: the dead-time factor and its uncertainty (validated before any image is read)."""
    spec = case.imaging
    assert spec is not None
    dt = spec.calibration.dead_time if spec.calibration is not None else None
    out: list[dict[str, Any] | None] = []
    for i, tp in enumerate(spec.timepoints):
        if dt is None:
            out.append(None)
            continue
        m = float(tp.observed_count_rate_cps)  # type: ignore[arg-type]
        try:
            k, u_k, n = dead_time_factor(m, tau_us=dt.tau_us, model=dt.model, tau_uncertainty_pct=dt.tau_uncertainty_pct)
        except PhysicsError as exc:
            raise InputError(f"{exc} (imaging.calibration.dead_time: {dt.model}, tau {dt.tau_us:g} us)",
                             field=f"imaging.timepoints.{i}.observed_count_rate_cps") from None
        out.append({"model": dt.model, "tau_us": dt.tau_us, "tau_uncertainty_pct": dt.tau_uncertainty_pct,
                    "observed_count_rate_cps": m, "true_count_rate_cps": n, "factor": k, "factor_uncertainty": u_k,
                    "factor_relative_uncertainty_pct": 100.0 * u_k / k})
    return out


def quantify(case: Case, nuclide: Nuclide, base_dir: Path | None, say: Callable[[str], None]) -> ImagingResult:
    spec = case.imaging
    assert spec is not None and case.administration.time is not None
    ts_spec = spec.regions.totalsegmentator
    if ts_spec is not None:  # fail before reading any image when the optional extra is missing
        from mrtdose.imaging import segmentation

        if ts_spec.file is not None:
            if not _path(base_dir, ts_spec.file).exists():
                raise InputError("not found", source=str(_path(base_dir, ts_spec.file)),
                                 field="imaging.regions.totalsegmentator.file")
        elif segmentation.RUNNER is None:
            segmentation.require_totalsegmentator("imaging.regions.totalsegmentator")
    dead = _dead_times(case)
    warnings: list[str] = []
    images: list[Volume] = []
    cts: list[Volume | None] = []
    ct_for: list[str | None] = []
    tp_json: list[dict[str, Any]] = []
    u_cal: float | None = None
    fors: list[str | None] = []
    for i, tp in enumerate(spec.timepoints):
        where = f"imaging.timepoints.{i}"
        say(f"imaging: reading time point {i + 1}/{len(spec.timepoints)}")
        vol, meta, act, method, u, duration, beds_json = _read_spect(tp, case, nuclide, base_dir, where)
        spath = Path(meta.files[0]) if meta.files else _path(base_dir, tp.spect if isinstance(tp.spect, str) else tp.spect[0])
        if u is not None:
            u_cal = u if u_cal is None else max(u_cal, u)
        u_tp = spec.activity_uncertainty_pct
        if dead[i] is not None:
            d = dead[i]
            assert d is not None
            act = act.with_array(np.asarray(act.array) * d["factor"], unit=act.unit)
            method += f"; dead-time factor {d['factor']:.6g} ({d['model']}, {KNOLL})"
            u_tp = math.hypot(u_tp, d["factor_relative_uncertainty_pct"])
            if vol.unit in _BQML:
                warnings.append(f"{where}: dead-time correction applied to an image already in {vol.unit}; make sure "
                                "the vendor's quantification did not correct for dead time already")
        ct = None
        cmeta = None
        if tp.ct:
            cpath = _path(base_dir, tp.ct)
            # the CT's own time is not used: the SPECT's stands in for it (a CT without time tags is fine)
            ct, cmeta = _read_image(cpath, "ct", tp, where, spec.timezone, meta.acquisition_time)
            _check_ct_matches(act, meta, ct, cmeta, cpath, where)
        assert meta.acquisition_time is not None
        t_h = elapsed_hours(case.administration.time, meta.acquisition_time, what=f"{where} acquisition time")
        if t_h <= 0:
            raise InputError(f"acquired {t_h:.2f} h after the administration", source=str(spath), field=where)
        images.append(act)
        cts.append(ct)
        ct_for.append(cmeta.frame_of_reference_uid if cmeta is not None else None)
        fors.append(meta.frame_of_reference_uid)
        tp_json.append({"time_h": t_h, "acquisition_time": meta.acquisition_time.isoformat(),
                        "format": meta.format,
                        "ct_format": cmeta.format if cmeta is not None else None,
                        "spect_sha256": files_sha256(meta.files),
                        "ct_sha256": files_sha256(cmeta.files) if cmeta is not None else None,
                        "time_source": meta.time_source, "series_description": meta.series_description,
                        "modality": meta.modality, "unit": vol.unit, "quantification": method,
                        "acquisition_duration_s": duration,
                        "acquisition_duration_source": ("case" if tp.acquisition_duration_s else meta.duration_source)
                        if duration else None,
                        "dead_time": dead[i], "measurement_uncertainty_pct": u_tp,
                        "warnings": list(meta.warnings), **({"beds": beds_json} if beds_json else {})})
        warnings.extend(f"{where}: {w}" for w in meta.warnings)
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

    say("imaging: regions")
    rg = _Regions(case, base_dir, ref, cts[0], ct_for[0], warnings)
    rg.build()
    v_ml = ref.voxel_volume_ml
    recovery: dict[str, tuple[float, float]] = {}
    if spec.recovery is not None:
        from mrtdose.imaging.recovery import load_recovery_curve

        curve = load_recovery_curve(_path(base_dir, spec.recovery.curve))
        for name in spec.recovery.regions:
            if name not in rg.fractions:
                raise InputError("not one of the image regions", field=f"imaging.recovery.regions: {name}")
            rc, u_rc = curve.rc_with_uncertainty(rg.volumes[name])
            recovery[name] = (float(rc), float(u_rc))
            if curve.is_extrapolation(rg.volumes[name]):
                warnings.append(f"imaging: {name}: {rg.volumes[name]:.3g} mL is outside the recovery curve's sphere volumes")
    regions: dict[str, Region] = {}
    reg_out: dict[str, Any] = {}
    for name, frac in rg.fractions.items():
        src, fld = rg.where[name]
        if frac.sum() <= 0:
            raise InputError(f"region {name!r} does not overlap the SPECT field of view", source=src, field=fld)
        inside = float(frac.sum() * v_ml)
        if name in rg.ct_based and inside < _PARTIAL_FOV_WARNING * rg.volumes[name]:
            warnings.append(f"imaging: region {name} is only {100 * inside / rg.volumes[name]:.0f} % inside the SPECT "
                            "field of view: its activity is underestimated")
        acts = [float((a.array * frac).sum() * v_ml / 1e6) for a in aligned]
        if min(acts) <= 0:
            raise InputError(f"no activity in region {name!r} at time point {int(np.argmin(acts))}", source=src, field=fld)
        base = case.regions[name].model_dump(exclude_none=True) if name in case.regions else {}
        if base.get("measurements") or base.get("tia_mbq_h"):
            raise InputError("region has both image-based activities and measurements/tia in the case",
                             field=f"regions.{name}")
        base.setdefault("mass_g", round(rg.masses[name], 3))
        if name in recovery:
            base["recovery_coefficient"], base["recovery_uncertainty"] = recovery[name]
        base["measurements"] = [
            {"time_h": tp["time_h"], "activity_mbq": a, "uncertainty_pct": tp["measurement_uncertainty_pct"]}
            for tp, a in zip(tp_json, acts)
        ]
        regions[name] = Region.model_validate(base)
        reg_out[name] = {"source": rg.kinds[name], "volume_ml": rg.volumes[name], "mass_g_from_ct": rg.masses[name],
                         "activities_mbq": acts, "times_h": [tp["time_h"] for tp in tp_json]}
    missing = [n for n in case.regions if n not in regions]
    planar_regions = set(case.planar_imaging.rois.regions) if case.planar_imaging is not None else set()
    for n in missing:
        r = case.regions[n]
        if not (r.measurements or r.tia_mbq_h) and n not in planar_regions:  # planar regions: measured next
            raise InputError("region is in the case but not in the images' regions", field=f"regions.{n}")
        regions[n] = r
    dt = spec.calibration.dead_time if spec.calibration is not None else None
    out = {
        "timepoints": tp_json,
        "registration": reg_json,
        "regions_source": rg.primary_file,
        "regions_sha256": files_sha256(rg.files) if rg.files else None,
        "grid": {"shape_zyx": list(ref.array.shape), "spacing_mm": list(ref.spacing_mm)},
        "regions": reg_out,
        "activity_uncertainty_pct": spec.activity_uncertainty_pct,
        "recovery": ({"curve": spec.recovery.curve,
                      "regions": {n: {"volume_ml": rg.volumes[n], "recovery_coefficient": rc, "uncertainty": u}
                                  for n, (rc, u) in recovery.items()}} if recovery else None),
        "dead_time": ({"model": dt.model, "tau_us": dt.tau_us, "tau_uncertainty_pct": dt.tau_uncertainty_pct,
                       "reference": KNOLL, "factors": [d["factor"] for d in dead if d is not None],
                       "uncertainty_treatment": "per time point, added in quadrature to the measurement uncertainty"}
                      if dt is not None else None),
        "totalsegmentator": rg.totalsegmentator,
        "whole_body": rg.whole_body,
        "remainder": rg.remainder,
    }
    display_fr = {n: f for n, f in rg.fractions.items() if n not in (spec.regions.whole_body, spec.regions.remainder)}
    display = {"slices": _slices(aligned, display_fr or rg.fractions)}
    return ImagingResult(regions, out, None if u_cal is None else 100.0 * u_cal, warnings, display)


class _Regions:
    """Region occupancies on the first SPECT grid, with masses and volumes, from every source of
    ``imaging.regions`` (module docstring)."""

    def __init__(self, case: Case, base_dir: Path | None, ref: Volume, ct: Volume | None, ct_for: str | None,
                 warnings: list[str]):
        self.case, self.spec = case, case.imaging.regions  # type: ignore[union-attr]
        self.base_dir, self.ref, self.ct, self.ct_for, self.warnings = base_dir, ref, ct, ct_for, warnings
        self.fractions: dict[str, np.ndarray] = {}
        self.masses: dict[str, float] = {}
        self.volumes: dict[str, float] = {}
        self.kinds: dict[str, str] = {}
        self.where: dict[str, tuple[str | None, str]] = {}  # (file, case field) for error messages
        self.ct_masks: dict[str, np.ndarray] = {}
        self.ct_based: set[str] = set()
        self.files: list[Path] = []
        self.primary_file: str | None = None
        self.totalsegmentator: dict[str, Any] | None = None
        self.whole_body: dict[str, Any] | None = None
        self.remainder: dict[str, Any] | None = None
        self._rho_ct: np.ndarray | None = None

    @property
    def rho_ct(self) -> np.ndarray:
        if self._rho_ct is None:
            assert self.ct is not None
            self._rho_ct = np.asarray(density_from_ct(self.ct).array)
        return self._rho_ct

    def _claim(self, name: str, kind: str, src: str | None, fld: str) -> None:
        if name in self.fractions:
            raise InputError(f"region {name!r} is defined twice (by {self.kinds[name]} and {kind})", source=src, field=fld)
        if kind not in ("whole_body", "remainder") and name in (self.spec.whole_body, self.spec.remainder):
            raise InputError(f"region {name!r} is also the name of regions.whole_body / remainder", source=src, field=fld)
        self.kinds[name] = kind
        self.where[name] = (src, fld)

    def _add_ct_mask(self, name: str, mask: np.ndarray, kind: str, src: str | None, fld: str) -> None:
        assert self.ct is not None
        self._claim(name, kind, src, fld)
        m = np.asarray(mask, dtype=bool)
        if not m.any():
            raise InputError(f"region {name!r} is empty (no voxel of the first CT)", source=src, field=fld)
        v_ct = self.ct.voxel_volume_ml
        mv = self.ct.with_array(m.astype(np.float64), unit="1")
        self.fractions[name] = np.asarray(resample(mv, self.ref, interpolation="fractional").array)
        self.masses[name] = float((self.rho_ct * m).sum() * v_ct)
        self.volumes[name] = float(m.sum() * v_ct)
        self.ct_masks[name] = m
        self.ct_based.add(name)

    def build(self) -> None:
        spec = self.spec
        if spec.rtstruct or spec.seg:
            self._from_dicom_regions()
        elif spec.labels is not None:
            self._from_labels()
        if spec.totalsegmentator is not None:
            self._from_totalsegmentator()
        if spec.whole_body or spec.remainder:
            self._whole_body_and_remainder()

    def _from_dicom_regions(self) -> None:
        spec = self.spec
        key = "rtstruct" if spec.rtstruct else "seg"
        if self.ct is None:
            raise InputError(f"an {key.upper()} needs the first time point's CT", field="imaging.timepoints.0.ct")
        rpath = _path(self.base_dir, spec.rtstruct or spec.seg or "")
        if not rpath.is_file():
            raise InputError("not found", source=str(rpath), field=f"imaging.regions.{key}")
        self.files.append(rpath)
        self.primary_file = spec.rtstruct or spec.seg
        if key == "rtstruct":
            masks = rtstruct_masks(rpath, self.ct, spec.names or None, frame_of_reference_uid=self.ct_for)
        else:
            masks = {n: np.asarray(m) >= 0.5 for n, m in
                     seg_masks(rpath, self.ct, spec.names or None, interpolation="nearest").items()}
        roi_of = {v: k for k, v in spec.names.items()}
        for name, m in masks.items():
            self._add_ct_mask(name, m, key, str(rpath), f"imaging.regions.names.{roi_of.get(name, name)}")

    def _from_labels(self) -> None:
        lab_spec = self.spec.labels
        assert lab_spec is not None
        lpath = _path(self.base_dir, lab_spec.file)
        if not lpath.is_file():
            raise InputError("not found", source=str(lpath), field="imaging.regions.labels.file")
        self.files.append(lpath)
        self.primary_file = lab_spec.file
        lvol = read_nifti(lpath) if sidecar_path_for(lpath).exists() else read_nifti(lpath, unit="1")
        if not lvol.same_grid(self.ref):
            raise InputError("the label map is not on the first SPECT grid", source=str(lpath), field="imaging.regions.labels")
        lab = np.round(lvol.array).astype(np.int64)
        v_ml = self.ref.voxel_volume_ml
        rho_img = (np.asarray(density_from_ct(resample(self.ct, self.ref, interpolation="linear")).array)
                   if self.ct is not None else None)
        for name, vals in lab_spec.regions.items():
            vals = [vals] if isinstance(vals, int) else vals
            fld = f"imaging.regions.labels.regions.{name}"
            self._claim(name, "labels", str(lpath), fld)
            m = np.isin(lab, vals)
            if not m.any():
                raise InputError(f"region {name!r} is empty: label(s) {vals} do not occur in the label map",
                                 source=str(lpath), field=fld)
            self.fractions[name] = m.astype(np.float64)
            self.volumes[name] = float(m.sum() * v_ml)
            # ICRU Report 46 (1992) soft tissue, 1.03 g/mL, without a CT (as options.organ_density_g_per_ml)
            self.masses[name] = float((rho_img[m].sum() if rho_img is not None else 1.03 * m.sum()) * v_ml)

    def _from_totalsegmentator(self) -> None:
        from mrtdose.imaging import segmentation

        ts = self.spec.totalsegmentator
        assert ts is not None
        fld = "imaging.regions.totalsegmentator"
        if self.ct is None:
            raise InputError("TotalSegmentator segments the first time point's CT: give it", field="imaging.timepoints.0.ct")
        src = None
        if ts.file:
            fpath = _path(self.base_dir, ts.file)
            seg = segmentation.read_totalsegmentator_output(fpath, self.ct, task=ts.task, classes=list(ts.names),
                                                            field=f"{fld}.file")
            src = str(fpath)
            self.files.extend(sorted(fpath.rglob("*.nii*")) if fpath.is_dir() else [fpath])
            software = "TotalSegmentator (output file given in the case)"
        else:
            seg = segmentation.segment_ct(self.ct, task=ts.task, classes=list(ts.names), fast=ts.fast, field=fld)
            software = seg.software
        self.primary_file = self.primary_file or ts.file
        masks = segmentation.regions_from_classes(seg, ts.names, source=src, field=f"{fld}.names")
        for name, m in masks.items():
            self._add_ct_mask(name, m, "totalsegmentator", src, f"{fld}.names")
        self.totalsegmentator = {"method": seg.method, "software": software, "task": ts.task, "fast": ts.fast,
                                 "file": ts.file, "names": dict(ts.names),
                                 "note": "automatic segmentation: review the contours before clinical use"}
        self.warnings.append("imaging: regions from TotalSegmentator (automatic segmentation): review them")

    def _whole_body_and_remainder(self) -> None:
        spec, ref = self.spec, self.ref
        v_ml = ref.voxel_volume_ml
        named = list(self.fractions)
        total_f = np.zeros(ref.shape, dtype=np.float64)
        for n in named:
            total_f += self.fractions[n]
        if spec.remainder and named and float(total_f.max()) > 1.0 + 1e-9:
            pairs = [(a, b) for ai, a in enumerate(named) for b in named[ai + 1:]
                     if np.any((self.fractions[a] > 0) & (self.fractions[b] > 0)
                               & (self.fractions[a] + self.fractions[b] > 1.0 + 1e-9))]
            raise InputError(f"the regions overlap ({', '.join(f'{a} and {b}' for a, b in pairs[:4]) or 'several'}): "
                             "the remainder of body needs regions that do not overlap", field="imaging.regions.remainder")
        if self.ct is not None:
            body = body_mask(self.ct)
            for m in self.ct_masks.values():
                body |= m
            v_ct = self.ct.voxel_volume_ml
            f_body = np.asarray(resample(self.ct.with_array(body.astype(np.float64), unit="1"), ref,
                                         interpolation="fractional").array)
            f_wb = np.maximum(f_body, total_f)  # regions on the SPECT grid (label map) lie inside the whole body too
            wb_mass = float((self.rho_ct * body).sum() * v_ct)
            wb_volume = float(body.sum() * v_ct)
            in_fov = float(f_body.sum() * v_ml) / wb_volume
            definition = "ct_body_outline"
            method = (f"body outline of the first CT (HU > {BODY_THRESHOLD_HU:g}, largest connected component, holes "
                      "filled; mrtdose.imaging.regions.body_mask) united with the named regions, resampled onto the "
                      "SPECT grid with fractional occupancy; mass from the CT densities")
            mass_source = "first CT (HU to density)"
            if in_fov < _PARTIAL_FOV_WARNING:
                self.warnings.append(f"imaging: the SPECT field of view holds {100 * in_fov:.0f} % of the CT body outline: "
                                     "the whole-body activity is the activity within the field of view")
        else:
            f_wb = np.ones(ref.shape, dtype=np.float64)
            wb_volume = float(f_wb.sum() * v_ml)
            in_fov = 1.0
            definition = "spect_field_of_view"
            method = "the whole SPECT field of view (no CT at the first time point to outline the body)"
            name = spec.whole_body or spec.remainder
            given = self.case.regions.get(spec.whole_body) if spec.whole_body else None
            if given is not None and given.mass_g is not None:
                wb_mass, mass_source = float(given.mass_g), f"regions.{spec.whole_body}.mass_g"
            elif self.case.patient.mass_kg is not None:
                wb_mass, mass_source = 1000.0 * float(self.case.patient.mass_kg), "patient.mass_kg"
            else:
                raise InputError("without a CT the whole-body mass is unknown: give patient.mass_kg (or the region's "
                                 "mass_g)", field=f"regions.{name}.mass_g" if spec.whole_body else "patient.mass_kg")
        self.whole_body = {"region": spec.whole_body, "definition": definition, "method": method,
                           "mass_g": wb_mass, "mass_source": mass_source, "volume_ml": wb_volume,
                           "fraction_of_body_in_spect_fov": in_fov}
        if spec.whole_body:
            self._claim(spec.whole_body, "whole_body", None, "imaging.regions.whole_body")
            self.fractions[spec.whole_body] = f_wb
            self.masses[spec.whole_body] = wb_mass
            self.volumes[spec.whole_body] = wb_volume
        if spec.remainder:
            rest = f_wb - total_f
            rest[rest < 0] = 0.0  # rounding only: f_wb >= total_f by construction
            mass = wb_mass - sum(self.masses[n] for n in named)
            if mass <= 0:
                raise InputError(f"the regions' masses ({wb_mass - mass:.6g} g) reach the whole-body mass ({wb_mass:.6g} g): "
                                 "no remainder", field="imaging.regions.remainder")
            self._claim(spec.remainder, "remainder", None, "imaging.regions.remainder")
            self.fractions[spec.remainder] = rest
            self.masses[spec.remainder] = mass
            self.volumes[spec.remainder] = wb_volume - sum(self.volumes[n] for n in named)
            self.remainder = {"region": spec.remainder, "whole_body": definition, "excluded_regions": named,
                              "method": "whole-body occupancy minus the sum of the regions' occupancies per voxel; mass "
                                        "= whole-body mass minus the regions' masses"}


def _slices(images: list[Volume], fractions: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The axial slice through the largest region's centre at each time point (display only)."""
    if not fractions:
        return []
    big = max(fractions, key=lambda n: fractions[n].sum())
    z = int(np.round(np.average(np.arange(fractions[big].shape[0]), weights=fractions[big].sum(axis=(1, 2)))))
    return [{"z": z, "activity_bq_per_ml": im.array[z], "regions": {n: f[z] for n, f in fractions.items()}}
            for im in images]
