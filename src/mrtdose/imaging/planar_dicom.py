"""Read planar and whole-body NM DICOM images (conjugate views, several energy windows).

Standard: DICOM PS3.3 NM Image IOD (A.5) with the NM Image (C.8.4.9), NM Multi-frame (C.8.4.8),
NM Detector (C.8.4.11), NM Isotope (C.8.4.10) and NM Whole Body (in the NM Image module's
whole-body attributes) modules; value representations PS3.5. :func:`read_planar_study` returns a
:class:`PlanarStudy`: per view (``"anterior"``, ``"posterior"``) and per energy window a 2D count
image, all in the *anterior* orientation, with pixel spacing, exposure times, window limits and
the acquisition time.

What is accepted
----------------
* One file or several (a file, a directory, or a list of files) that together hold one time
  point: typically one multi-frame file with two detectors x N energy windows, or one file per
  view. Image Type (0008,0008) value 3 must be ``STATIC`` or ``WHOLE BODY`` (C.8.4.9.1.1), and
  value 4, when present, ``EMISSION``.
* Frames: Frame Increment Pointer (0028,0009) of STATIC / WHOLE BODY images points at Energy
  Window Vector (0054,0010) and Detector Vector (0054,0020) (C.8.4.8.1.1); frame ``f`` holds
  window ``EnergyWindowVector[f]`` seen by detector ``DetectorVector[f]`` (1-based indices into
  the Energy Window Information Sequence (0054,0012) and the Detector Information Sequence
  (0054,0022)). The order of the frames is taken from the vectors, never assumed. A single-frame
  file without vectors is window 1, detector 1. Each (view, window) must occur exactly once over
  all files; anything else (dynamic phases, repeated frames) is an error.
* Energy windows: the limits are read from each window's Energy Window Range Sequence
  (0054,0013): Energy Window Lower/Upper Limit (0054,0014)/(0054,0015), keV. A window with several
  ranges has the sum of their widths. Windows of different files are matched by their limits
  (within :data:`WINDOW_MATCH_KEV`).
* Values: counts. Units (0054,1001), when present, must be ``CNTS``; Rescale Slope/Intercept, if
  a vendor writes them, are applied with a warning (the values are then no longer raw counts and
  their Poisson uncertainty is approximate). Negative values are an error.

Which detector is the anterior view (decided here, in this order)
-----------------------------------------------------------------
1. View Code Sequence (0054,0220) of the detector's Detector Information Sequence item (CID 26
   "Nuclear Medicine Projections"; at the top level only for single-detector files): SNOMED CT
   399321004 "Anterior projection" or 399001007 "Posterior projection" (any coding scheme whose
   Code Meaning is "anterior projection" / "posterior projection" is accepted as well).
2. Otherwise the detector item's Image Orientation (Patient) (0020,0037): the image-plane normal
   ``row x column`` points away from the viewer, i.e. from the detector into the patient; its LPS
   y component is positive for an anterior detector (looking towards +y, posterior) and negative
   for a posterior one.
3. Otherwise the file is refused (:class:`InputError` naming it and the field): the view is never
   guessed from the detector number.

Mirroring: a posterior image is stored as its detector saw it, with the patient's left on the
viewer's left; the anterior image has the patient's right on the viewer's left. Posterior images
are therefore mirrored left-right (columns reversed) so that pixel ``(r, c)`` of both views lies
on the same antero-posterior ray (MIRD Pamphlet 16, Siegel et al. 1999, J Nucl Med 40:37S: the
conjugate views must be registered before the geometric mean). The exception: when both views'
detector items carry Image Orientation (Patient) and their row directions agree in the x
component (the vendor already mirrored the posterior), nothing is mirrored; if their column
directions are then opposite in z (the posterior stored upside down, as its normal -y requires), its
rows are reversed instead. Both are recorded.

Exposure time (used with the planar sensitivity in cps/MBq)
-----------------------------------------------------------
* STATIC: Actual Frame Duration (0018,1242), ms, of the file (the NM Image module's elapsed time
  of one frame).
* WHOLE BODY (continuous table or detector motion): every point of the body passes through the
  whole detector field along the scan, so its exposure time is ``L_fov / v``, with Scan Velocity
  (0018,1300, mm/s) and ``L_fov`` the field-of-view extent along the scan: the *second* value of
  Field of View Dimension(s) (0018,1149) of the detector item (for a RECTANGLE the values are the
  row then the column dimension, and whole-body images have the body axis along the columns). This
  holds for points that the detector passes completely (not the first and last ``L_fov/2`` of the
  scan). Actual Frame Duration of a whole-body image is the duration of the whole sweep, *not*
  the exposure of a point, and is not used. Scan Length (0018,1302) is recorded only.
* ``duration_override_s`` (e.g. from the case file) replaces both; without it and without the
  attributes above the reading fails with an :class:`InputError` naming the file and attribute.

Time
----
Acquisition start: the earliest over the files of Acquisition Date/Time (0008,0022)/(0008,0032),
else Acquisition DateTime (0008,002A), else Series Date/Time (0008,0021)/(0008,0031) (with a
warning). Time zone: Timezone Offset From UTC (0008,0201) (must agree across files), an offset
inside a DT value, else the ``tz`` argument; else an :class:`InputError` -- never a guess (the
helpers of :mod:`mrtdose.imaging.dicom_series` are reused). ``time_override`` replaces the time.
Files of one study acquired more than :data:`MAX_SPREAD_H` apart are refused.

Radiopharmaceutical Information Sequence (0054,0016) (NM Isotope module): Radionuclide Total Dose
is in MBq for NM (returned in Bq), start date-time, half-life and radionuclide, as in
:mod:`mrtdose.imaging.dicom_series`.

This module imports private helpers of :mod:`mrtdose.imaging.dicom_series` (attribute access
that turns every decoding failure into an :class:`InputError` naming file and attribute, DICOM
date/time parsing, pixel decoding) without changing that module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import numpy as np
from pydicom.dataset import Dataset

from mrtdose.errors import InputError
from mrtdose.imaging.dicom_common import read_dataset
from mrtdose.imaging.dicom_series import (  # private helpers, reused as they are
    _decode_pixels,
    _dt,
    _float,
    _floats,
    _gather,
    _has_dicm,
    _Header,
    _image_matrix,
    _int,
    _localize,
    _pair,
    _parse_offset,
    _radiopharm,
    _raw,
    _str,
    _zone,
)

__all__ = [
    "ANTERIOR_CODE",
    "EnergyWindow",
    "MAX_SPREAD_H",
    "POSTERIOR_CODE",
    "PlanarStudy",
    "PlanarView",
    "TewWindows",
    "VIEWS",
    "WINDOW_MATCH_KEV",
    "read_planar_study",
    "tew_windows",
]

VIEWS = ("anterior", "posterior")
#: CID 26 "Nuclear Medicine Projections" (PS3.16): SNOMED CT codes of the two conjugate views.
ANTERIOR_CODE = ("399321004", "SCT", "Anterior projection")
POSTERIOR_CODE = ("399001007", "SCT", "Posterior projection")
_VIEW_BY_CODE = {"399321004": "anterior", "399001007": "posterior"}
_VIEW_BY_MEANING = {"anterior projection": "anterior", "posterior projection": "posterior",
                    "anterior": "anterior", "posterior": "posterior"}
#: Two windows of different files are the same window when both limits agree within this (keV).
WINDOW_MATCH_KEV = 0.05
#: Largest spread of acquisition start times (h) among the files of one planar study.
MAX_SPREAD_H = 1.0
_PLANAR_TYPES = ("STATIC", "WHOLE BODY")


@dataclass(frozen=True)
class EnergyWindow:
    """One energy window: its name and its ranges (keV)."""

    name: str | None
    ranges_kev: tuple[tuple[float, float], ...]

    @property
    def lower_kev(self) -> float:
        return min(lo for lo, _ in self.ranges_kev) if self.ranges_kev else math.nan

    @property
    def upper_kev(self) -> float:
        return max(hi for _, hi in self.ranges_kev) if self.ranges_kev else math.nan

    @property
    def width_kev(self) -> float:
        """Sum of the range widths (keV); NaN when the limits are not recorded."""
        return float(sum(hi - lo for lo, hi in self.ranges_kev)) if self.ranges_kev else math.nan

    def contains(self, energy_kev: float) -> bool:
        return any(lo <= energy_kev <= hi for lo, hi in self.ranges_kev)

    def same_as(self, other: "EnergyWindow") -> bool:
        if len(self.ranges_kev) != len(other.ranges_kev):
            return False
        return all(abs(a - c) <= WINDOW_MATCH_KEV and abs(b - d) <= WINDOW_MATCH_KEV
                   for (a, b), (c, d) in zip(sorted(self.ranges_kev), sorted(other.ranges_kev)))

    def label(self) -> str:
        rng = ", ".join(f"{lo:g}-{hi:g}" for lo, hi in self.ranges_kev) or "limits not recorded"
        return f"{self.name or 'window'} ({rng} keV)"


@dataclass(frozen=True)
class PlanarView:
    """One conjugate view: count images per window (position in :attr:`PlanarStudy.windows`),
    all in the anterior orientation (posterior mirrored, see the module docstring)."""

    view: str
    counts: Mapping[int, np.ndarray]
    duration_s: float
    duration_source: str
    mirrored: bool
    file: str
    detector: int
    view_source: str


@dataclass(frozen=True)
class PlanarStudy:
    """A planar (static or whole-body) conjugate-view study at one time point.

    ``pixel_spacing_mm`` is DICOM's ``(row spacing, column spacing)``; ``shape`` ``(rows,
    columns)``. ``acquisition_time`` is timezone-aware. ``radiopharmaceutical`` holds what the
    Radiopharmaceutical Information Sequence gave (``injected_activity_bq``, ``start_dt``,
    ``half_life_s``, ``radionuclide``, ``radiopharmaceutical``).
    """

    views: Mapping[str, PlanarView]
    windows: tuple[EnergyWindow, ...]
    shape: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]
    image_type: str
    acquisition_time: datetime
    time_source: str
    timezone_source: str
    patient_id: str | None
    radiopharmaceutical: Mapping[str, Any]
    files: tuple[str, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pixel_area_mm2(self) -> float:
        return float(self.pixel_spacing_mm[0] * self.pixel_spacing_mm[1])

    def counts(self, view: str, window: int | EnergyWindow) -> np.ndarray:
        """The count image of ``view`` in ``window`` (its position in :attr:`windows`, or the
        window itself)."""
        if view not in self.views:
            raise InputError(f"no {view} view in this study (views: {', '.join(self.views)})", field="view")
        w = self.windows.index(window) if isinstance(window, EnergyWindow) else int(window)
        if w not in self.views[view].counts:
            raise InputError(f"no {view} image in energy window {w}", field="window")
        return self.views[view].counts[w]


@dataclass(frozen=True)
class TewWindows:
    """Positions in :attr:`PlanarStudy.windows` of the photopeak and the two adjacent scatter
    windows (``lower``/``upper`` may be None when asked for the photopeak only)."""

    peak: int
    lower: int | None
    upper: int | None


# ---------------------------------------------------------------------------------------------
# one file


@dataclass
class _Frame:
    window: EnergyWindow
    detector: int
    image: np.ndarray


@dataclass
class _File:
    path: str
    image_type: str
    shape: tuple[int, int]
    spacing: tuple[float, float]
    patient_id: str | None
    frames: list[_Frame]
    views: dict[int, tuple[str, str]]  # detector -> (view, how)
    row_x: dict[int, float]  # detector -> x component of the row direction (when IOP given)
    col_z: dict[int, float]  # detector -> z component of the column direction (when IOP given)
    durations: dict[int, tuple[float, str]]  # detector -> (s, source)
    times: list[tuple[datetime, str]]  # (naive or aware time, source keyword)
    offset: timezone | None
    radio: dict[str, Any]
    notes: list[str]


def _items(ds: Dataset, kw: str, src: str) -> list[Dataset]:
    v = _raw(ds, kw, src)
    if v is None:
        return []
    try:
        items = list(v)
    except TypeError:
        raise InputError("expected a sequence", source=src, field=kw) from None
    if not all(isinstance(it, Dataset) for it in items):
        raise InputError("sequence items are not datasets", source=src, field=kw)
    return items


def _windows(ds: Dataset, src: str, notes: list[str]) -> list[EnergyWindow]:
    items = _items(ds, "EnergyWindowInformationSequence", src)
    n_declared = _int(ds, "NumberOfEnergyWindows", src)
    if not items:
        if n_declared not in (None, 1):
            raise InputError(f"Number of Energy Windows is {n_declared} but there is no Energy Window Information "
                             "Sequence (0054,0012) with their limits", source=src, field="EnergyWindowInformationSequence")
        notes.append(f"{src}: no Energy Window Information Sequence: one window with unknown limits "
                     "(no scatter correction possible)")
        return [EnergyWindow(None, ())]
    if n_declared is not None and n_declared != len(items):
        raise InputError(f"Number of Energy Windows is {n_declared} but the Energy Window Information Sequence has "
                         f"{len(items)} items", source=src, field="NumberOfEnergyWindows")
    out = []
    for i, it in enumerate(items):
        where = f"EnergyWindowInformationSequence[{i}]"
        ranges = []
        for j, r in enumerate(_items(it, "EnergyWindowRangeSequence", src)):
            lo = _float(r, "EnergyWindowLowerLimit", src)
            hi = _float(r, "EnergyWindowUpperLimit", src)
            if lo is None or hi is None:
                raise InputError("energy window range without lower and upper limit", source=src,
                                 field=f"{where}.EnergyWindowRangeSequence[{j}]")
            if not (0 <= lo < hi):
                raise InputError(f"energy window range {lo:g}-{hi:g} keV is not a positive interval", source=src,
                                 field=f"{where}.EnergyWindowRangeSequence[{j}]")
            ranges.append((lo, hi))
        if not ranges:
            notes.append(f"{src}: {where} has no Energy Window Range Sequence (limits unknown)")
        out.append(EnergyWindow(_str(it, "EnergyWindowName", src), tuple(ranges)))
    return out


def _vector(ds: Dataset, kw: str, src: str, n_frames: int, n_max: int) -> list[int]:
    v = _floats(ds, kw, src, None)
    if v is None:
        if n_frames == 1:
            return [1]
        raise InputError(f"{n_frames} frames but no {kw}: which frame is which window/detector is unknown",
                         source=src, field=kw)
    if v.size != n_frames:
        raise InputError(f"{kw} has {v.size} values for {n_frames} frames", source=src, field=kw)
    if np.any(v != np.round(v)) or np.any(v < 1) or np.any(v > n_max):
        raise InputError(f"{kw} values must be integers 1..{n_max}, got {v.astype(float).tolist()}", source=src, field=kw)
    return [int(x) for x in v]


def _code_view(item: Dataset, src: str, where: str) -> str | None:
    codes = _items(item, "ViewCodeSequence", src)
    if not codes:
        return None
    c = codes[0]
    value = _str(c, "CodeValue", src)
    meaning = (_str(c, "CodeMeaning", src) or "").strip().lower()
    view = _VIEW_BY_CODE.get(value or "") or _VIEW_BY_MEANING.get(meaning)
    if view is None:
        raise InputError(f"view code {value!r} ({meaning!r}) is neither the anterior nor the posterior projection: "
                         "only conjugate anterior/posterior views are supported", source=src, field=f"{where}.ViewCodeSequence")
    return view


def _iop_view(item: Dataset, src: str, where: str) -> tuple[str | None, float | None, float | None]:
    iop = _floats(item, "ImageOrientationPatient", src, 6)
    if iop is None:
        return None, None, None
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InputError(f"Image Orientation (Patient) {iop.tolist()} is not two orthonormal vectors", source=src,
                         field=f"{where}.ImageOrientationPatient")
    ny = float(np.cross(row, col)[1])
    if abs(ny) < 0.7:
        raise InputError("the detector does not face the patient from the front or the back (image normal "
                         f"{np.cross(row, col).round(3).tolist()}): not a conjugate anterior/posterior view",
                         source=src, field=f"{where}.ImageOrientationPatient")
    return ("anterior" if ny > 0 else "posterior"), float(row[0]), float(col[2])


def _duration(ds: Dataset, item: Dataset | None, src: str, image_type: str, where: str,
              override_s: float | None) -> tuple[float, str]:
    if override_s is not None:
        return float(override_s), "given (duration override)"
    if image_type == "STATIC":
        ms = _float(ds, "ActualFrameDuration", src)
        if ms is None:
            raise InputError("static image without Actual Frame Duration (0018,1242): the exposure time is unknown; "
                             "give the acquisition duration", source=src, field="ActualFrameDuration")
        if not ms > 0:
            raise InputError(f"Actual Frame Duration {ms:g} ms must be > 0", source=src, field="ActualFrameDuration")
        return ms / 1000.0, "Actual Frame Duration (0018,1242)"
    v = _float(ds, "ScanVelocity", src)
    fov = None
    for holder, name in ((item, f"{where}.FieldOfViewDimensions"), (ds, "FieldOfViewDimensions")):
        if holder is not None and fov is None:
            f = _floats(holder, "FieldOfViewDimensions", src, None)
            if f is not None:
                fov = (f, name)
    if v is None or fov is None:
        missing = "Scan Velocity (0018,1300)" if v is None else "Field of View Dimension(s) (0018,1149)"
        raise InputError(f"whole-body image without {missing}: the exposure time of a point (field of view along the "
                         "scan / scan velocity) is unknown; give the acquisition duration",
                         source=src, field="ScanVelocity" if v is None else "FieldOfViewDimensions")
    if not v > 0:
        raise InputError(f"Scan Velocity {v:g} mm/s must be > 0", source=src, field="ScanVelocity")
    dims, name = fov
    if dims.size < 2 or not dims[1] > 0:
        raise InputError(f"need two positive Field of View Dimensions (row, column) in mm, got {dims.tolist()}",
                         source=src, field=name)
    return float(dims[1] / v), f"whole body: field of view along the scan {dims[1]:g} mm / Scan Velocity {v:g} mm/s"


def _read_file(path: str, duration_override_s: float | None) -> _File:
    ds, src = read_dataset(path, "planar NM")
    notes: list[str] = []
    modality = _str(ds, "Modality", src, required=True)
    if modality != "NM":
        raise InputError(f"Modality is {modality!r}, expected NM (planar nuclear medicine image)", source=src,
                         field="Modality")
    it = _str(ds, "ImageType", src)
    parts = [p.strip().upper() for p in it.split("\\")] if it else []
    if len(parts) < 3:
        raise InputError(f"Image Type {it!r} has no value 3 (STATIC, WHOLE BODY, ...): cannot tell a planar image",
                         source=src, field="ImageType")
    if parts[2] not in _PLANAR_TYPES:
        raise InputError(f"Image Type value 3 is {parts[2]!r}; only planar STATIC or WHOLE BODY images are read here "
                         "(SPECT reconstructions: mrtdose.imaging.dicom_series)", source=src, field="ImageType")
    if len(parts) > 3 and parts[3] and parts[3] != "EMISSION":
        raise InputError(f"Image Type value 4 is {parts[3]!r}; emission images are needed", source=src, field="ImageType")
    units = _str(ds, "Units", src)
    if units is not None and units.upper() != "CNTS":
        raise InputError(f"Units {units!r}: planar quantification needs counts (CNTS)", source=src, field="Units")
    rows, cols, ps, n_frames = _image_matrix(ds, src)
    windows = _windows(ds, src, notes)
    det_items = _items(ds, "DetectorInformationSequence", src)
    n_det = _int(ds, "NumberOfDetectors", src) or max(len(det_items), 1)
    if det_items and len(det_items) != n_det:
        raise InputError(f"Number of Detectors is {n_det} but the Detector Information Sequence has {len(det_items)} "
                         "items", source=src, field="NumberOfDetectors")
    ew = _vector(ds, "EnergyWindowVector", src, n_frames, len(windows))
    dv = _vector(ds, "DetectorVector", src, n_frames, n_det)
    seen: dict[tuple[int, int], int] = {}
    for f, key in enumerate(zip(ew, dv)):
        if key in seen:
            raise InputError(f"frames {seen[key] + 1} and {f + 1} are both energy window {key[0]} of detector {key[1]} "
                             "(a dynamic or repeated acquisition is not a planar conjugate-view study)",
                             source=src, field="EnergyWindowVector")
        seen[key] = f

    views: dict[int, tuple[str, str]] = {}
    row_x: dict[int, float] = {}
    col_z: dict[int, float] = {}
    durations: dict[int, tuple[float, str]] = {}
    for d in sorted(set(dv)):
        item = det_items[d - 1] if det_items else None
        where = f"DetectorInformationSequence[{d - 1}]"
        view, how = None, ""
        if item is not None:
            view = _code_view(item, src, where)
            how = f"{where}.ViewCodeSequence"
        if view is None and n_det == 1:
            view = _code_view(ds, src, "")
            how = "ViewCodeSequence"
        rx = cz = None
        if item is not None:
            iop_view, rx, cz = _iop_view(item, src, where)
            if view is None and iop_view is not None:
                view, how = iop_view, f"{where}.ImageOrientationPatient (image normal)"
            elif view is not None and iop_view is not None and iop_view != view:
                raise InputError(f"the view code says {view} but Image Orientation (Patient) says {iop_view}",
                                 source=src, field=f"{where}.ImageOrientationPatient")
        if view is None:
            raise InputError(f"detector {d}: no View Code Sequence and no Image Orientation (Patient): cannot tell the "
                             "anterior from the posterior view (never guessed from the detector number)",
                             source=src, field=f"{where}.ViewCodeSequence")
        views[d] = (view, how)
        if rx is not None:
            row_x[d] = rx
            col_z[d] = cz  # type: ignore[assignment]
        durations[d] = _duration(ds, item, src, parts[2], where, duration_override_s)
    if len({v for v, _ in views.values()}) != len(views):
        raise InputError(f"two detectors of the file record the same view ({', '.join(v for v, _ in views.values())})",
                         source=src, field="DetectorInformationSequence")

    pix = _decode_pixels(ds, src, n_frames, rows, cols).astype(np.float64)
    slope = _float(ds, "RescaleSlope", src)
    intercept = _float(ds, "RescaleIntercept", src)
    if (slope not in (None, 1.0)) or (intercept not in (None, 0.0)):
        pix = pix * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
        notes.append(f"{src}: Rescale Slope/Intercept applied; the values are not raw counts, so their Poisson "
                     "uncertainty is approximate")
    if np.any(pix < 0):
        raise InputError("negative pixel values: not a count image", source=src, field="PixelData")
    frames = [_Frame(windows[w - 1], d, pix[f]) for f, (w, d) in enumerate(zip(ew, dv))]

    times: list[tuple[datetime, str]] = []
    for kws in (("AcquisitionDate", "AcquisitionTime"), ("AcquisitionDateTime",), ("SeriesDate", "SeriesTime")):
        t = _pair(ds, src, *kws) if len(kws) == 2 else _dt(ds, src, kws[0])
        if t is not None:
            times.append((t, "/".join(kws)))
            break
    off = _str(ds, "TimezoneOffsetFromUTC", src)
    offset = _parse_offset(off, src, "TimezoneOffsetFromUTC") if off is not None else None
    radio = _radiopharm(_Header(src, ds, "", "NM", ""), "NM", notes)
    radio["path"] = src
    return _File(src, parts[2], (rows, cols), (float(ps[0]), float(ps[1])), _str(ds, "PatientID", src), frames,
                 views, row_x, col_z, durations, times, offset, radio, notes)


# ---------------------------------------------------------------------------------------------
# the study


def _files_of(source: str | Path | Iterable[str | Path]) -> list[str]:
    entries, label = _gather(source)
    out = []
    for path, explicit in entries:
        if explicit or _has_dicm(path) or path.lower().endswith((".dcm", ".ima", ".dicom")):
            out.append(path)
    if not out:
        raise InputError("no DICOM files", source=label)
    return out


def read_planar_study(
    source: str | Path | Iterable[str | Path],
    *,
    tz: tzinfo | str | None = None,
    time_override: datetime | None = None,
    duration_override_s: float | None = None,
) -> PlanarStudy:
    """Read the planar NM files of one time point (a file, a directory or a list of files).

    ``tz``: IANA zone (or tzinfo) for header times without Timezone Offset From UTC;
    ``time_override``: aware acquisition start replacing the headers'; ``duration_override_s``:
    exposure time (s) replacing the headers' (a whole-body image: the time each point is seen).
    Every problem is an :class:`InputError` naming the file and attribute (module docstring).
    """
    if duration_override_s is not None and not (math.isfinite(float(duration_override_s)) and duration_override_s > 0):
        raise InputError(f"duration must be positive (s), got {duration_override_s!r}", field="duration_override_s")
    if time_override is not None and (not isinstance(time_override, datetime) or time_override.utcoffset() is None):
        raise InputError(f"time_override must be a timezone-aware datetime, got {time_override!r}", field="time_override")
    paths = _files_of(source)
    files = [_read_file(p, duration_override_s) for p in paths]
    notes = [n for f in files for n in f.notes]
    first = files[0]
    for f in files[1:]:
        if f.image_type != first.image_type:
            raise InputError(f"Image Type {f.image_type} differs from {first.image_type} in {first.path}", source=f.path,
                             field="ImageType")
        if f.shape != first.shape:
            raise InputError(f"image size {f.shape[0]} x {f.shape[1]} differs from {first.shape[0]} x {first.shape[1]} "
                             f"in {first.path}: the views cannot be registered pixel by pixel", source=f.path, field="Rows")
        if max(abs(a - b) for a, b in zip(f.spacing, first.spacing)) > 1e-4:
            raise InputError(f"Pixel Spacing {list(f.spacing)} differs from {list(first.spacing)} in {first.path}",
                             source=f.path, field="PixelSpacing")
        if f.patient_id != first.patient_id:
            raise InputError(f"Patient ID {f.patient_id!r} differs from {first.patient_id!r} in {first.path}",
                             source=f.path, field="PatientID")

    # windows: merged by their limits; positions sorted by lower limit
    merged: list[EnergyWindow] = []
    for f in files:
        for fr in f.frames:
            if not any(w.same_as(fr.window) for w in merged):
                merged.append(fr.window)
    merged.sort(key=lambda w: (w.lower_kev if w.ranges_kev else -1.0))
    pos = lambda w: next(i for i, m in enumerate(merged) if m.same_as(w))  # noqa: E731

    # views
    found: dict[str, tuple[_File, int]] = {}
    for f in files:
        for d, (view, how) in f.views.items():
            if view in found:
                raise InputError(f"the {view} view is in two places ({found[view][0].path} and this file)",
                                 source=f.path, field="DetectorInformationSequence")
            found[view] = (f, d)
    for view in VIEWS:
        if view not in found:
            have = ", ".join(sorted(found)) or "none"
            raise InputError(f"no {view} view (views found: {have}); the conjugate-view method needs both anterior and "
                             "posterior images", source=first.path if len(files) == 1 else ", ".join(paths),
                             field="DetectorInformationSequence")
    fa, da = found["anterior"]
    fp, dp = found["posterior"]
    mirror = True
    flip_rows = False
    mirror_how = "posterior mirrored left-right (stored as its detector saw it)"
    if da in fa.row_x and dp in fp.row_x and fa.row_x[da] * fp.row_x[dp] > 0:
        mirror = False
        mirror_how = "not mirrored: both detectors' row directions agree (Image Orientation (Patient))"
        if fa.col_z[da] * fp.col_z[dp] < 0:  # same rows, opposite columns: stored upside down
            flip_rows = True
            mirror_how += "; rows reversed: the column directions are opposite (posterior stored upside down)"
        notes.append(f"posterior view {mirror_how}")

    views: dict[str, PlanarView] = {}
    for view, (f, d) in found.items():
        imgs: dict[int, np.ndarray] = {}
        for fr in f.frames:
            if fr.detector != d:
                continue
            a = fr.image[:, ::-1] if (view == "posterior" and mirror) else fr.image
            a = a[::-1, :] if (view == "posterior" and flip_rows) else a
            a = np.ascontiguousarray(a)
            a.flags.writeable = False
            imgs[pos(fr.window)] = a
        dur, dsrc = f.durations[d]
        views[view] = PlanarView(view, MappingProxyType(imgs), dur, dsrc, view == "posterior" and mirror, f.path, d,
                                 f.views[d][1])
    wa, wp = set(views["anterior"].counts), set(views["posterior"].counts)
    if wa != wp:
        odd = sorted(wa ^ wp)
        raise InputError(f"energy window(s) {', '.join(merged[i].label() for i in odd)} recorded in one view only",
                         source=(fa.path if odd[0] in wa else fp.path), field="EnergyWindowInformationSequence")

    # time
    offsets = {f.offset.utcoffset(None): f.path for f in files if f.offset is not None}
    if len(offsets) > 1:
        raise InputError(f"files disagree on Timezone Offset From UTC ({', '.join(str(k) for k in offsets)})",
                         source=list(offsets.values())[-1], field="TimezoneOffsetFromUTC")
    user_zone = _zone(tz)
    if offsets:
        zone: tzinfo | None = timezone(next(iter(offsets)))
        tz_source = "TimezoneOffsetFromUTC (0008,0201)"
    else:
        zone, tz_source = user_zone, ("tz argument" if user_zone is not None else "")
    aware: list[tuple[datetime, str, str]] = []
    for f in files:
        for t, kw in f.times:
            if t.tzinfo is None:
                if zone is None:
                    if time_override is not None:
                        continue
                    raise InputError(f"{kw} {t.isoformat()} has no time zone: no Timezone Offset From UTC (0008,0201) "
                                     "in the file; give the time zone (e.g. 'Europe/London') or the time with its "
                                     "offset -- a time zone is never guessed", source=f.path, field="TimezoneOffsetFromUTC")
                t = _localize(t, zone, kw)
            aware.append((t, kw, f.path))
    if time_override is not None:
        acq, t_source = time_override, "time override"
        tz_source = tz_source or "time override"
    else:
        missing = [f.path for f in files if not f.times]
        if missing:
            raise InputError("no Acquisition Date/Time (0008,0022/0032), Acquisition DateTime (0008,002A) or Series "
                             "Date/Time: the acquisition time is unknown; give the time", source=missing[0],
                             field="AcquisitionTime")
        acq, kw, _ = min(aware, key=lambda x: x[0])
        t_source = kw
        if kw.startswith("Series"):
            notes.append("acquisition time from Series Date/Time (no Acquisition Date/Time in the files)")
    if aware:
        spread = (max(a[0] for a in aware) - min(a[0] for a in aware)).total_seconds() / 3600.0
        if spread > MAX_SPREAD_H:
            latest = max(aware, key=lambda x: x[0])
            raise InputError(f"the files were acquired {spread:.2f} h apart (more than {MAX_SPREAD_H:g} h): they are "
                             "not one planar time point", source=latest[2], field="AcquisitionTime")
    radio = dict(first.radio)
    if radio.get("start_dt") is not None and radio["start_dt"].tzinfo is None:
        radio["start_dt"] = _localize(radio["start_dt"], zone, "Radiopharmaceutical Start DateTime") if zone else None
    radio.pop("path", None)
    return PlanarStudy(
        views=MappingProxyType(views), windows=tuple(merged), shape=first.shape, pixel_spacing_mm=first.spacing,
        image_type=first.image_type, acquisition_time=acq, time_source=t_source, timezone_source=tz_source,
        patient_id=first.patient_id, radiopharmaceutical=MappingProxyType(radio), files=tuple(paths),
        warnings=tuple(dict.fromkeys(notes + ([mirror_how] if mirror else []))),
    )


def tew_windows(study: PlanarStudy, photopeak_kev: float, *, scatter: bool = True) -> TewWindows:
    """The photopeak window (the one containing ``photopeak_kev``) and, with ``scatter``, the
    adjacent lower and upper scatter windows of the triple-energy-window method (Ogawa et al.
    1991, IEEE Trans Med Imaging 10:408): the lower window's upper limit and the upper window's
    lower limit must meet the photopeak window's limits within ``max(1 keV, 1 % of the peak
    energy)``. A study with a single window of unknown limits gives it as the photopeak (no
    scatter windows). Errors name what is missing."""
    e = float(photopeak_kev)
    ws = study.windows
    if len(ws) == 1 and not ws[0].ranges_kev and not scatter:
        return TewWindows(0, None, None)
    peak = [i for i, w in enumerate(ws) if w.contains(e)]
    listing = "; ".join(w.label() for w in ws)
    if not peak:
        raise InputError(f"no energy window contains the {e:g} keV photopeak (windows: {listing})", source=study.files[0],
                         field="EnergyWindowInformationSequence")
    if len(peak) > 1:
        raise InputError(f"several energy windows contain the {e:g} keV photopeak (windows: {listing})",
                         source=study.files[0], field="EnergyWindowInformationSequence")
    p = ws[peak[0]]
    if not scatter:
        return TewWindows(peak[0], None, None)
    tol = max(1.0, 0.01 * e)
    lower = [i for i, w in enumerate(ws) if w.ranges_kev and i != peak[0] and abs(w.upper_kev - p.lower_kev) <= tol]
    upper = [i for i, w in enumerate(ws) if w.ranges_kev and i != peak[0] and abs(w.lower_kev - p.upper_kev) <= tol]
    for name, cand in (("lower", lower), ("upper", upper)):
        if len(cand) != 1:
            raise InputError(f"TEW scatter correction needs exactly one {name} scatter window adjacent to the photopeak "
                             f"window {p.label()}, found {len(cand)} (windows: {listing}); use scatter: none otherwise",
                             source=study.files[0], field="EnergyWindowInformationSequence")
    return TewWindows(peak[0], lower[0], upper[0])
