"""Write synthetic planar / whole-body NM DICOM images (conjugate views, several energy windows).

For tests and the virtual planar patient (:mod:`mrtdose.workflow.virtual_planar`). The files are
valid PS3.10 files (Explicit VR Little Endian) of the NM Image IOD (PS3.3 A.5) carrying what
:mod:`mrtdose.imaging.planar_dicom` reads: Image Type ``ORIGINAL\\PRIMARY\\<STATIC|WHOLE
BODY>\\EMISSION``; NM Multi-frame module (C.8.4.8) with Frame Increment Pointer -> Energy Window
Vector (0054,0010) and Detector Vector (0054,0020); Energy Window Information Sequence (0054,0012)
with one Energy Window Range Sequence item per window; Detector Information Sequence (0054,0022)
with a View Code Sequence (0054,0220) per detector (CID 26: SNOMED CT 399321004 anterior /
399001007 posterior projection) and, for whole-body images, Field of View Dimension(s) (0018,1149)
``[row, column]`` mm; Scan Velocity (0018,1300) and Scan Length (0018,1302) for whole-body
images, Actual Frame Duration (0018,1242) ms; acquisition date/time with Timezone Offset From UTC;
Radiopharmaceutical Information Sequence (0054,0016) with Radionuclide Total Dose in MBq (NM
Isotope module C.8.4.10).

Images are given in the **anterior orientation** (patient's right on the viewer's left, head at
row 0) for both views; the posterior view is stored mirrored left-right, as its detector sees
it (the reader mirrors it back). Counts are stored as unsigned 16-bit integers (values must be
non-negative integers below 65536: counts, not rescaled values).

:class:`PlanarFaults` injects defects for tests: removed attributes, a missing detector or window,
no view codes (optionally with Image Orientation (Patient) instead), a cropped view, truncation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import NuclearMedicineImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from mrtdose import __version__
from mrtdose.errors import InputError
from mrtdose.imaging.dicom_common import new_dataset, write_dataset_atomic
from mrtdose.imaging.dicom_synth import set_synthetic_identity
from mrtdose.imaging.planar_dicom import ANTERIOR_CODE, POSTERIOR_CODE, VIEWS

__all__ = ["PlanarFaults", "write_planar_nm"]

#: Image Orientation (Patient) of each view's stored image: anterior rows run to the patient's
#: left (+x) and columns to the feet (-z); the stored (unmirrored) posterior rows run to the
#: patient's right (-x). Written only with ``PlanarFaults.orientation_instead_of_view_code``.
_IOP = {"anterior": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0), "posterior": (-1.0, 0.0, 0.0, 0.0, 0.0, -1.0)}


@dataclass(frozen=True)
class PlanarFaults:
    """Defects to inject (per written file; keyword lists apply to every file).

    remove_tags
        Top-level keywords deleted (e.g. ``("TimezoneOffsetFromUTC",)``; ``"times"`` removes
        every acquisition/series/content/study date and time).
    drop_views
        Views not written at all (e.g. ``("posterior",)``: one detector only).
    drop_window_in_view
        ``{view: window position}``: that window's frame is not written for that view.
    remove_view_codes
        No View Code Sequence.
    orientation_instead_of_view_code
        Write the detectors' Image Orientation (Patient) (and no view code).
    crop_view
        ``{view: (rows, cols)}``: that view's images are cropped to this size (separate files only).
    truncate
        Keep only this fraction of each file's bytes.
    mutate
        ``mutate(view_or_"all", dataset)`` called last, before encoding.
    """

    remove_tags: tuple[str, ...] = ()
    drop_views: tuple[str, ...] = ()
    drop_window_in_view: Mapping[str, int] = field(default_factory=dict)
    remove_view_codes: bool = False
    orientation_instead_of_view_code: bool = False
    crop_view: Mapping[str, Sequence[int]] = field(default_factory=dict)
    truncate: float | None = None
    mutate: Callable[[str, Dataset], None] | None = None


_NO_FAULTS = PlanarFaults()
_TIME_TAGS = tuple(f"{k}{p}" for k in ("Study", "Series", "Acquisition", "Content") for p in ("Date", "Time")) + \
    ("AcquisitionDateTime",)


def _ds(x: float) -> str:
    f = float(x) + 0.0
    r = repr(f)
    return r if len(r) <= 16 and "e" not in r else format_number_as_ds(f)


def _code(code: tuple[str, str, str]) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = code
    return c


def _counts(a: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise InputError(f"count image must be 2D, got shape {arr.shape}", field=what)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr != np.rint(arr)) or np.any(arr > 65535):
        raise InputError("count images must hold integer counts 0..65535", field=what)
    return arr.astype("<u2")




def _dataset(*, image_type: str, patient_id: str, study_uid: str, series_uid: str, description: str,
             acquisition_time: datetime, write_timezone: bool, pixel_spacing_mm: Sequence[float],
             windows: Sequence[tuple[str, float, float]], duration_s: float | None, scan_velocity_mm_s: float | None,
             scan_length_mm: float | None, injected_activity_mbq: float | None,
             injection_time: datetime | None, radiopharmaceutical: str | None, radionuclide: str | None,
             half_life_s: float | None) -> Dataset:
    ds, _ = new_dataset(NuclearMedicineImageStorage)
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "EMISSION"]
    set_synthetic_identity(ds, patient_id=patient_id, study_uid=study_uid, series_uid=series_uid, modality="NM",
                           description=description)
    ds.InstanceNumber = 1
    ds.Manufacturer = "mrtdose"
    ds.ManufacturerModelName = "mrtdose synthetic planar"
    ds.SoftwareVersions = str(__version__)
    off = acquisition_time.utcoffset()
    minutes = int(off.total_seconds() // 60)  # type: ignore[union-attr]
    da, tm = acquisition_time.strftime("%Y%m%d"), acquisition_time.strftime("%H%M%S.%f")
    for kw in ("Study", "Series", "Acquisition", "Content"):
        setattr(ds, f"{kw}Date", da)
        setattr(ds, f"{kw}Time", tm)
    if write_timezone:
        ds.TimezoneOffsetFromUTC = f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    ds.PixelSpacing = [_ds(pixel_spacing_mm[0]), _ds(pixel_spacing_mm[1])]
    items = []
    for name, lo, hi in windows:
        it = Dataset()
        rng = Dataset()
        rng.EnergyWindowLowerLimit = _ds(lo)
        rng.EnergyWindowUpperLimit = _ds(hi)
        it.EnergyWindowRangeSequence = [rng]
        it.EnergyWindowName = name
        items.append(it)
    ds.EnergyWindowInformationSequence = items
    ds.NumberOfEnergyWindows = len(items)
    if duration_s is not None:
        ds.ActualFrameDuration = int(round(duration_s * 1000.0))
    if image_type == "WHOLE BODY":
        if scan_velocity_mm_s is not None:
            ds.ScanVelocity = _ds(scan_velocity_mm_s)
        if scan_length_mm is not None:
            ds.ScanLength = int(round(scan_length_mm))
        ds.WholeBodyTechnique = ["1PS", "2PS"]
    if injected_activity_mbq is not None or injection_time is not None or radionuclide is not None:
        item = Dataset()
        if radiopharmaceutical:
            item.Radiopharmaceutical = radiopharmaceutical
        if injection_time is not None:
            o = injection_time.utcoffset()
            m = int(o.total_seconds() // 60) if o is not None else 0
            item.RadiopharmaceuticalStartDateTime = injection_time.strftime("%Y%m%d%H%M%S.%f") + \
                f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}{abs(m) % 60:02d}"
        if injected_activity_mbq is not None:
            item.RadionuclideTotalDose = _ds(injected_activity_mbq)
        if half_life_s is not None:
            item.RadionuclideHalfLife = _ds(half_life_s)
        if radionuclide:
            item.RadionuclideCodeSequence = [_code(("C-X", "99MRTDOSE", radionuclide))]
        ds.RadiopharmaceuticalInformationSequence = [item]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def write_planar_nm(
    images: Mapping[str, Sequence[np.ndarray]],
    out: str | os.PathLike,
    *,
    windows: Sequence[tuple[str, float, float]],
    pixel_spacing_mm: Sequence[float],
    acquisition_time: datetime,
    patient_id: str,
    image_type: str = "WHOLE BODY",
    layout: str = "multiframe",
    duration_s: float | None = None,
    scan_velocity_mm_s: float | None = None,
    fov_mm: Sequence[float] = (533.0, 387.0),
    scan_length_mm: float | None = None,
    study_uid: str | None = None,
    series_description: str = "synthetic planar",
    write_timezone: bool = True,
    injected_activity_mbq: float | None = None,
    injection_time: datetime | None = None,
    radiopharmaceutical: str | None = None,
    radionuclide: str | None = None,
    half_life_s: float | None = None,
    faults: PlanarFaults = _NO_FAULTS,
) -> list[Path]:
    """Write conjugate-view planar images.

    Parameters
    ----------
    images : ``{"anterior": [window 0 image, window 1 image, ...], "posterior": [...]}``, 2D
        integer counts ``(rows, columns)`` in the anterior orientation (module docstring).
    out : with ``layout="multiframe"`` the file to write (one file, two detectors x all windows);
        with ``layout="per_view"`` a directory receiving ``anterior.dcm`` and ``posterior.dcm``
        (one detector each).
    windows : ``(name, lower keV, upper keV)`` per window, in the order of the images.
    pixel_spacing_mm : ``(row spacing, column spacing)``.
    image_type : ``"WHOLE BODY"`` or ``"STATIC"``.
    duration_s : Actual Frame Duration (STATIC: the exposure; WHOLE BODY: the whole sweep).
    scan_velocity_mm_s, fov_mm, scan_length_mm : whole-body sweep: the exposure time of a point is
        ``fov_mm[1] / scan_velocity_mm_s`` (the reader's convention).

    Returns the written paths (written atomically: temporary file, then rename).
    """
    if image_type not in ("WHOLE BODY", "STATIC"):
        raise InputError("image_type must be 'WHOLE BODY' or 'STATIC'", field="image_type")
    if layout not in ("multiframe", "per_view"):
        raise InputError("layout must be 'multiframe' or 'per_view'", field="layout")
    if acquisition_time.tzinfo is None or acquisition_time.utcoffset() is None:
        raise InputError("acquisition_time must be timezone-aware", field="acquisition_time")
    if set(images) != set(VIEWS):
        raise InputError(f"give images for exactly {VIEWS}, got {sorted(images)}", field="images")
    stored: dict[str, list[np.ndarray]] = {}
    for view in VIEWS:
        ims = list(images[view])
        if len(ims) != len(windows):
            raise InputError(f"{len(ims)} {view} images for {len(windows)} windows", field=f"images.{view}")
        arrs = [_counts(a, f"images.{view}") for a in ims]
        if view in faults.crop_view:
            r, c = (int(x) for x in faults.crop_view[view])
            arrs = [a[:r, :c] for a in arrs]
        if view == "posterior":
            arrs = [a[:, ::-1] for a in arrs]  # stored as the posterior detector sees it
        stored[view] = arrs
    shapes = {a.shape for v in VIEWS for a in stored[v]}
    if layout == "multiframe" and len(shapes) != 1:
        raise InputError(f"all images of a multi-frame file must have one size, got {sorted(shapes)}", field="images")
    common = dict(image_type=image_type, patient_id=patient_id, study_uid=study_uid or generate_uid(),
                  series_uid=generate_uid(), description=series_description, acquisition_time=acquisition_time,
                  write_timezone=write_timezone, pixel_spacing_mm=pixel_spacing_mm, windows=windows,
                  duration_s=duration_s, scan_velocity_mm_s=scan_velocity_mm_s,
                  scan_length_mm=scan_length_mm, injected_activity_mbq=injected_activity_mbq,
                  injection_time=injection_time, radiopharmaceutical=radiopharmaceutical, radionuclide=radionuclide,
                  half_life_s=half_life_s)

    def detector_item(view: str) -> Dataset:
        it = Dataset()
        if faults.orientation_instead_of_view_code:
            it.ImageOrientationPatient = [_ds(x) for x in _IOP[view]]
        elif not faults.remove_view_codes:
            it.ViewCodeSequence = [_code(ANTERIOR_CODE if view == "anterior" else POSTERIOR_CODE)]
        if image_type == "WHOLE BODY":
            it.FieldOfViewShape = "RECTANGLE"
            it.FieldOfViewDimensions = [int(round(fov_mm[0])), int(round(fov_mm[1]))]
        return it

    def finish(ds: Dataset, views: list[str], tag: str) -> Dataset:
        frames, ew, dv = [], [], []
        for d, view in enumerate(views, start=1):
            for w, a in enumerate(stored[view]):
                if faults.drop_window_in_view.get(view) == w:
                    continue
                frames.append(a)
                ew.append(w + 1)
                dv.append(d)
        ds.DetectorInformationSequence = [detector_item(v) for v in views]
        ds.NumberOfDetectors = len(views)
        ds.NumberOfFrames = len(frames)
        ds.FrameIncrementPointer = [Tag(0x0054, 0x0010), Tag(0x0054, 0x0020)]
        ds.EnergyWindowVector = ew
        ds.DetectorVector = dv
        ds.Rows, ds.Columns = (int(x) for x in frames[0].shape)
        ds.PixelData = np.stack(frames).astype("<u2").tobytes()
        for kw in faults.remove_tags:
            for k in (_TIME_TAGS if kw == "times" else (kw,)):
                if k in ds:
                    del ds[k]
        if faults.mutate is not None:
            faults.mutate(tag, ds)
        return ds

    views = [v for v in VIEWS if v not in faults.drop_views]
    if not views:
        raise InputError("every view dropped", field="faults.drop_views")
    if layout == "multiframe":
        path = Path(out)
        ds = finish(_dataset(**common), views, "all")
        return [write_dataset_atomic(ds, path, faults.truncate)]
    d = Path(out)
    paths = []
    for view in views:
        ds = finish(_dataset(**common), [view], view)
        paths.append(write_dataset_atomic(ds, d / f"{view}.dcm", faults.truncate))
    return paths
