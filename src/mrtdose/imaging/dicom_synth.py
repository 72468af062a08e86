"""Write synthetic DICOM image series (CT, PET, NM SPECT reconstruction) from a :class:`Volume`.

For tests and the virtual-patient generator. The files are valid PS3.10 files (Explicit VR Little
Endian) carrying the attributes :mod:`mrtdose.imaging.dicom_series` reads, and read back with the
same geometry (to < 1e-6 mm: Decimal Strings are written with the most digits that fit in 16
characters, PS3.5 6.2). :class:`Faults` injects realistic defects for tests.

IODs (PS3.3): CT Image (A.3; CT Image module C.8.2.1), PET Image (A.21; PET Series C.8.9.1, PET
Isotope C.8.9.2, PET Image C.8.9.4), NM Image (A.5; NM Image C.8.4.9, NM Isotope C.8.4.10, NM
Detector C.8.4.11, NM Multi-frame C.8.4.8, NM Reconstruction C.8.4.15), with Image Plane
(C.7.6.2), Image Pixel (C.7.6.3), Patient, General Study/Series, Frame of Reference and SOP Common
modules. Type 1/2 attributes that a reader of quantitative images does not need (e.g. Patient
Orientation Code Sequence, Energy Window Information) are reduced to the minimum or left out.

Value encoding (reproduced by the reader exactly, up to the stated quantisation):

* CT: signed 16-bit, Rescale Intercept -1024, Slope 1; HU rounded to integers.
* PET: signed 16-bit per slice with its own Rescale Slope ``max|v_k| / 32767`` (rounded *up* to a
  Decimal String before quantising), Intercept 0 (C.8.9.4): error <= slope_k / 2 per slice.
  ``units="CNTS"`` with ``philips_activity_scale=f`` writes ``v / f`` and the Philips private
  Activity Concentration Scale Factor (7053,xx09) = ``f``.
* NM: unsigned 16-bit (signed if any value < 0) with one Rescale Slope for all frames (values that
  are all integers in range are written unscaled, without rescale attributes).
* Slice order: files/frames follow the volume's ``k`` axis, which must be parallel (or
  antiparallel) to ``row x column``; NM frames are written along ``+n`` (reversed when the volume's
  ``k`` runs along ``-n``) since Spacing Between Slices must be positive.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import (
    CTImageStorage,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from mrtdose import __version__
from mrtdose.errors import InputError
from mrtdose.imaging.volume import Volume
from mrtdose.imaging.dicom_common import new_dataset, write_dataset_atomic

__all__ = ["Faults", "write_ct_series", "write_nm_series", "write_pt_series"]


@dataclass(frozen=True)
class Faults:
    """Defects to inject (indices are slice indices ``k`` of the volume; NM has one file, index 0).

    Attributes
    ----------
    drop_slices
        Slices whose files are not written.
    shift_position_mm
        ``{k: (dx, dy, dz)}`` added to that file's Image Position (Patient).
    patient_id, study_uid, series_uid
        ``{k: value}`` replacing that file's identifier.
    orientation
        ``{k: six direction cosines}`` replacing that file's Image Orientation (Patient).
    pixel_spacing
        ``{k: (row spacing, column spacing)}`` replacing that file's Pixel Spacing.
    remove_tags
        Keywords deleted from every file (e.g. ``("TimezoneOffsetFromUTC", "AcquisitionTime")``).
    truncate
        ``{k: fraction}``: keep only that fraction of the file's bytes.
    mutate
        ``mutate(k, dataset)`` called last, before encoding, to change anything.
    """

    drop_slices: tuple[int, ...] = ()
    shift_position_mm: Mapping[int, Sequence[float]] = field(default_factory=dict)
    patient_id: Mapping[int, str] = field(default_factory=dict)
    study_uid: Mapping[int, str] = field(default_factory=dict)
    series_uid: Mapping[int, str] = field(default_factory=dict)
    orientation: Mapping[int, Sequence[float]] = field(default_factory=dict)
    pixel_spacing: Mapping[int, Sequence[float]] = field(default_factory=dict)
    remove_tags: tuple[str, ...] = ()
    truncate: Mapping[int, float] = field(default_factory=dict)
    mutate: Callable[[int, Dataset], None] | None = None


_NO_FAULTS = Faults()


def _ds(values) -> list[str]:
    """Decimal Strings of at most 16 characters with the most digits that fit (PS3.5 6.2)."""
    out = []
    for v in np.ravel(values):
        f = float(v) + 0.0
        r = repr(f)
        out.append(r if len(r) <= 16 and "e" not in r else format_number_as_ds(f))
    return out


def _ds_up(x: float) -> str:
    """A Decimal String >= x (so that quantised values never exceed the integer range)."""
    s = format_number_as_ds(x)
    k = 0
    while float(s) < x:
        k += 1
        s = format_number_as_ds(x * (1 + 1e-12 * 10**k))
    return s


def _da_tm(t: datetime) -> tuple[str, str, str]:
    off = t.utcoffset()
    minutes = int(off.total_seconds() // 60) if off is not None else 0
    sign = "+" if minutes >= 0 else "-"
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S.%f"), f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def _check_inputs(volume: Volume, acquisition_time: datetime | None, patient_id: str) -> np.ndarray:
    if not isinstance(volume, Volume):
        raise InputError(f"expected a Volume, got {type(volume).__name__}", field="volume")
    if not str(patient_id).strip():
        raise InputError("patient_id must not be empty", field="patient_id")
    if acquisition_time is not None and (acquisition_time.tzinfo is None or acquisition_time.utcoffset() is None):
        raise InputError("acquisition_time must be timezone-aware", field="acquisition_time")
    d = volume.direction
    n = np.cross(d[:, 0], d[:, 1])
    nk = volume.shape[0]
    drift = float(np.linalg.norm(d[:, 2] - np.sign(d[:, 2] @ n) * n)) * volume.spacing_mm[2] * max(nk - 1, 1)
    if drift > 1e-3:
        raise InputError("the volume's slice axis is not normal to its image plane; DICOM slices cannot hold it",
                         field="volume.direction")
    arr = np.asarray(volume.array, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError("volume holds NaN or infinite values", field="volume.array")
    return arr


def set_synthetic_identity(ds: Dataset, *, patient_id: str, study_uid: str, series_uid: str, modality: str,
                           description: str) -> None:
    """Patient, study and series identity of a synthetic object (Patient, General Study and
    General Series modules, PS3.3 C.7.1.1, C.7.2.1, C.7.3.1): no real patient, empty Type 2 values."""
    ds.PatientName = "SYNTHETIC^PATIENT"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = description


def _base(sop_class: str, modality: str, *, patient_id: str, study_uid: str, series_uid: str, for_uid: str,
          description: str, t: datetime | None, write_timezone: bool, manufacturer: str) -> Dataset:
    ds, sop_uid = new_dataset(sop_class)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    set_synthetic_identity(ds, patient_id=patient_id, study_uid=study_uid, series_uid=series_uid, modality=modality,
                           description=description)
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = "mrtdose synthetic"
    ds.SoftwareVersions = str(__version__)
    if t is not None:
        da, tm, off = _da_tm(t)
        for kw in ("Study", "Series", "Acquisition", "Content"):
            setattr(ds, f"{kw}Date", da)
            setattr(ds, f"{kw}Time", tm)
        if write_timezone:
            ds.TimezoneOffsetFromUTC = off
    return ds


def _plane(ds: Dataset, volume: Volume, position: np.ndarray, row: np.ndarray, col: np.ndarray) -> None:
    dx, dy, dz = volume.spacing_mm
    ds.ImagePositionPatient = _ds(position)
    ds.ImageOrientationPatient = _ds(np.concatenate([row, col]))
    ds.PixelSpacing = _ds([dy, dx])  # row spacing, column spacing (C.7.6.2.1.1)
    ds.SliceThickness = _ds([dz])[0]


def _pixels(ds: Dataset, stored: np.ndarray, signed: bool) -> None:
    nk_or_rows = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = int(nk_or_rows[-2])
    ds.Columns = int(nk_or_rows[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()


def _radiopharm(ds: Dataset, activity: float | None, injection_time: datetime | None, radiopharmaceutical: str | None,
                radionuclide: str | None, half_life_s: float | None) -> None:
    if activity is None and injection_time is None and radionuclide is None:
        return
    item = Dataset()
    if radiopharmaceutical:
        item.Radiopharmaceutical = radiopharmaceutical
    if injection_time is not None:
        da, tm, off = _da_tm(injection_time)
        item.RadiopharmaceuticalStartTime = tm
        item.RadiopharmaceuticalStartDateTime = da + tm + off
    if activity is not None:
        item.RadionuclideTotalDose = _ds([activity])[0]
    if half_life_s is not None:
        item.RadionuclideHalfLife = _ds([half_life_s])[0]
    if radionuclide:
        code = Dataset()
        code.CodeValue = "C-X"
        code.CodingSchemeDesignator = "99MRTDOSE"
        code.CodeMeaning = radionuclide
        item.RadionuclideCodeSequence = [code]
    ds.RadiopharmaceuticalInformationSequence = [item]


def _finish(ds: Dataset, k: int, faults: Faults) -> Dataset:
    if k in faults.shift_position_mm:
        ds.ImagePositionPatient = _ds(np.array([float(x) for x in ds.ImagePositionPatient]) + np.asarray(faults.shift_position_mm[k]))
    if k in faults.patient_id:
        ds.PatientID = faults.patient_id[k]
    if k in faults.study_uid:
        ds.StudyInstanceUID = faults.study_uid[k]
    if k in faults.series_uid:
        ds.SeriesInstanceUID = faults.series_uid[k]
    if k in faults.orientation:
        ds.ImageOrientationPatient = _ds(faults.orientation[k])
    if k in faults.pixel_spacing:
        ds.PixelSpacing = _ds(faults.pixel_spacing[k])
    for kw in faults.remove_tags:
        if kw in ds:
            del ds[kw]
    if faults.mutate is not None:
        faults.mutate(k, ds)
    return ds




def _slices_along_k(volume: Volume) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    d = volume.direction
    nk = volume.shape[0]
    return d[:, 0], d[:, 1], [volume.index_to_physical((0.0, 0.0, float(k))) for k in range(nk)]


def write_ct_series(
    volume: Volume,
    directory: str | os.PathLike,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "synthetic CT",
    acquisition_time: datetime | None = None,
    write_timezone: bool = True,
    faults: Faults = _NO_FAULTS,
) -> list[Path]:
    """Write ``volume`` (HU) as single-frame CT Image files, one per slice; returns the paths.

    Each slice's Acquisition Time is ``acquisition_time + 0.5 s * k`` (a helical scan), so the
    reader's "earliest" rule gives back ``acquisition_time``.
    """
    arr = _check_inputs(volume, acquisition_time, patient_id)
    stored = np.rint(arr + 1024.0)
    if stored.min() < -32768 or stored.max() > 32767:
        raise InputError("HU values outside the 16-bit range with intercept -1024", field="volume.array")
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    row, col, positions = _slices_along_k(volume)
    paths = []
    for k, pos in enumerate(positions):
        if k in faults.drop_slices:
            continue
        t = acquisition_time
        ds = _base(CTImageStorage, "CT", patient_id=patient_id, study_uid=study_uid, series_uid=series_uid,
                   for_uid=for_uid, description=series_description, t=t, write_timezone=write_timezone,
                   manufacturer="mrtdose")
        if t is not None:
            ds.AcquisitionTime = _da_tm(t + timedelta(seconds=0.5 * k))[1]
            ds.AcquisitionDate = _da_tm(t + timedelta(seconds=0.5 * k))[0]
        ds.InstanceNumber = k + 1
        _plane(ds, volume, pos, row, col)
        ds.KVP = "120"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        _pixels(ds, stored[k], signed=True)
        _finish(ds, k, faults)
        paths.append(write_dataset_atomic(ds, out_dir / f"CT_{k:04d}.dcm", faults.truncate.get(k)))
    return paths


def write_pt_series(
    volume: Volume,
    directory: str | os.PathLike,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "synthetic PET",
    acquisition_time: datetime | None = None,
    write_timezone: bool = True,
    units: str = "BQML",
    philips_activity_scale: float | None = None,
    decay_correction: str = "START",
    injected_activity_bq: float | None = None,
    injection_time: datetime | None = None,
    radiopharmaceutical: str | None = None,
    radionuclide: str | None = None,
    half_life_s: float | None = None,
    frame_duration_ms: float | None = None,
    faults: Faults = _NO_FAULTS,
) -> list[Path]:
    """Write ``volume`` as single-frame PET Image files with a Rescale Slope per slice.

    ``acquisition_time`` is written as Series, Acquisition, Study and Content Date/Time (the decay
    reference for ``decay_correction="START"``). Radionuclide Total Dose is written in Bq (PET
    Isotope module C.8.9.2).
    """
    arr = _check_inputs(volume, acquisition_time, patient_id)
    if injection_time is not None and (injection_time.tzinfo is None or injection_time.utcoffset() is None):
        raise InputError("injection_time must be timezone-aware", field="injection_time")
    if philips_activity_scale is not None:
        if units.upper() != "CNTS" or not philips_activity_scale > 0:
            raise InputError("philips_activity_scale needs units='CNTS' and a positive factor", field="philips_activity_scale")
        arr = arr / philips_activity_scale
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    row, col, positions = _slices_along_k(volume)
    nk = len(positions)
    paths = []
    for k, pos in enumerate(positions):
        if k in faults.drop_slices:
            continue
        manufacturer = "Philips Medical Systems" if philips_activity_scale is not None else "mrtdose"
        ds = _base(PositronEmissionTomographyImageStorage, "PT", patient_id=patient_id, study_uid=study_uid,
                   series_uid=series_uid, for_uid=for_uid, description=series_description, t=acquisition_time,
                   write_timezone=write_timezone, manufacturer=manufacturer)
        ds.InstanceNumber = k + 1
        # PET Series (C.8.9.1)
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.Units = units
        ds.CountsSource = "EMISSION"
        ds.CorrectedImage = ["ATTN", "SCAT", "DECY", "NORM", "DTIM"]
        ds.DecayCorrection = decay_correction
        ds.NumberOfSlices = nk
        # PET Isotope (C.8.9.2)
        _radiopharm(ds, injected_activity_bq, injection_time, radiopharmaceutical, radionuclide, half_life_s)
        # PET Image (C.8.9.4)
        ds.ImageIndex = k + 1
        ds.FrameReferenceTime = "0"
        if frame_duration_ms is not None:
            ds.ActualFrameDuration = int(round(frame_duration_ms))
        ds.DecayFactor = "1"
        _plane(ds, volume, pos, row, col)
        vmax = float(np.max(np.abs(arr[k])))
        slope_s = _ds_up(vmax / 32767.0) if vmax > 0 else "1"
        stored = np.clip(np.rint(arr[k] / float(slope_s)), -32768, 32767)
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = slope_s
        _pixels(ds, stored, signed=True)
        if philips_activity_scale is not None:
            blk = ds.private_block(0x7053, "Philips PET Private Group", create=True)
            blk.add_new(0x09, "DS", _ds([philips_activity_scale])[0])
        _finish(ds, k, faults)
        paths.append(write_dataset_atomic(ds, out_dir / f"PT_{k:04d}.dcm", faults.truncate.get(k)))
    return paths


def write_nm_series(
    volume: Volume,
    directory: str | os.PathLike,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "synthetic SPECT",
    acquisition_time: datetime | None = None,
    write_timezone: bool = True,
    units: str | None = None,
    geometry_in: str = "both",
    injected_activity_bq: float | None = None,
    injection_time: datetime | None = None,
    radiopharmaceutical: str | None = None,
    radionuclide: str | None = None,
    half_life_s: float | None = None,
    frame_duration_ms: float | None = None,
    faults: Faults = _NO_FAULTS,
) -> list[Path]:
    """Write ``volume`` as one multi-frame NM Image (Image Type ``...\\RECON TOMO``) file.

    ``units`` ``None`` writes no Units (counts); ``"BQML"`` writes Units (0054,1001) as some
    vendors do for quantitative SPECT. ``geometry_in``: ``"both"`` (Detector Information Sequence
    and top level, as most vendors write), ``"detector"`` (the standard location only) or
    ``"top"``. Radionuclide Total Dose is written in **MBq** (NM Isotope module C.8.4.10);
    ``injected_activity_bq`` is given in Bq and converted. Faults use index 0.
    """
    arr = _check_inputs(volume, acquisition_time, patient_id)
    if geometry_in not in ("both", "detector", "top"):
        raise InputError("geometry_in must be 'both', 'detector' or 'top'", field="geometry_in")
    d = volume.direction
    row, col = d[:, 0], d[:, 1]
    n = np.cross(row, col)
    origin = np.asarray(volume.origin_mm)
    if d[:, 2] @ n < 0:  # frames must run along +n (Spacing Between Slices > 0)
        arr = arr[::-1]
        origin = volume.index_to_physical((0.0, 0.0, float(volume.shape[0] - 1)))
    nk = arr.shape[0]
    signed = bool(arr.min() < 0)
    lim = 32767.0 if signed else 65535.0
    integral = bool(np.all(arr == np.rint(arr))) and float(np.max(np.abs(arr))) <= lim
    slope_s = None
    if integral:
        stored = np.rint(arr)
    else:
        vmax = float(np.max(np.abs(arr)))
        slope_s = _ds_up(vmax / lim) if vmax > 0 else "1"
        stored = np.clip(np.rint(arr / float(slope_s)), -32768 if signed else 0, lim)
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = _base(NuclearMedicineImageStorage, "NM", patient_id=patient_id, study_uid=study_uid,
               series_uid=series_uid or generate_uid(), for_uid=frame_of_reference_uid or generate_uid(),
               description=series_description, t=acquisition_time, write_timezone=write_timezone,
               manufacturer="mrtdose")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.InstanceNumber = 1
    dx, dy, dz = volume.spacing_mm
    ds.PixelSpacing = _ds([dy, dx])
    ds.SliceThickness = _ds([dz])[0]
    ds.SpacingBetweenSlices = _ds([dz])[0]  # NM Reconstruction module
    plane = Dataset()
    plane.ImagePositionPatient = _ds(origin)
    plane.ImageOrientationPatient = _ds(np.concatenate([row, col]))
    if geometry_in in ("both", "detector"):
        ds.DetectorInformationSequence = [plane]  # NM Detector module: Type 2C for RECON TOMO
    if geometry_in in ("both", "top"):
        ds.ImagePositionPatient = plane.ImagePositionPatient
        ds.ImageOrientationPatient = plane.ImageOrientationPatient
    # NM Multi-frame (C.8.4.8)
    ds.NumberOfFrames = nk
    ds.FrameIncrementPointer = [Tag(0x0054, 0x0080)]
    ds.SliceVector = list(range(1, nk + 1))
    ds.NumberOfSlices = nk
    if units is not None:
        ds.Units = units
    if slope_s is not None:
        ds.RescaleSlope = slope_s
        ds.RescaleIntercept = "0"
    if frame_duration_ms is not None:
        ds.ActualFrameDuration = int(round(frame_duration_ms))
    _radiopharm(ds, None if injected_activity_bq is None else injected_activity_bq / 1e6, injection_time,
                radiopharmaceutical, radionuclide, half_life_s)
    _pixels(ds, stored, signed=signed)
    _finish(ds, 0, faults)
    if 0 in faults.drop_slices:
        return []
    return [write_dataset_atomic(ds, out_dir / "NM_0000.dcm", faults.truncate.get(0))]
