"""DICOM RT Dose: write an absorbed-dose or time-integrated activity map, read it back.

Standard: DICOM PS3.3, RT Dose IOD (A.18) with the RT Dose Module (C.8.8.3, Table C.8-39),
Image Plane (C.7.6.2), Image Pixel (C.7.6.3), Multi-frame (C.7.6.6), Patient (C.7.1.1), General
Study (C.7.2.1), RT Series (C.8.8.1), Frame of Reference (C.7.4.1), General Equipment (C.7.5.1),
General Image (C.7.6.1) and SOP Common (C.12.1) modules; file format PS3.10 (128-byte preamble,
``DICM``, File Meta Information), transfer syntax Explicit VR Little Endian (PS3.5 A.2).

Geometry (volume conventions in :mod:`mrtdose.imaging.volume`)
---------------------------------------------------------------
* One multi-frame object; frame ``k`` holds ``array[k]``, its rows ``j`` and columns ``i``
  (Rows = ``nj``, Columns = ``ni``, Number of Frames = ``nk``).
* Image Position (Patient) = ``origin_mm`` (centre of the first voxel transmitted, C.7.6.2.1.1).
* Image Orientation (Patient) = ``D[:, 0]`` (row direction: increasing column index ``i``)
  followed by ``D[:, 1]`` (column direction: increasing row index ``j``) (C.7.6.2.1.1).
* Pixel Spacing = ``(dy, dx)``: adjacent *row* spacing first, then adjacent *column* spacing
  (C.7.6.2.1.1) -- the reverse of ``spacing_mm``'s ``(dx, dy)``.
* Grid Frame Offset Vector: *relative* offsets (first element 0, the form PS3.3 C.8.8.3.2
  recommends) of each frame along the image-plane normal ``n = row x column``:
  ``offset_k = k * dz * s`` with ``s = D[:, 2] . n = +-1`` (a slice axis opposite to ``n``, as
  after a flip, gives decreasing offsets, which C.8.8.3.2 allows). Frame Increment Pointer
  points to it (C.7.6.6.1.2). Slice Thickness = ``dz``.
* Reading inverts this: ``D[:, 2] = sign(step) * n``, ``dz = |step|``; absolute offsets (first
  element = z of Image Position, only for orientation ``1\\0\\0\\0\\1\\0``, C.8.8.3.2 b) are accepted
  too. Frames must be equally spaced (a :class:`Volume` is a regular grid).
* Decimal Strings hold at most 16 characters (PS3.5 6.2); positions are written with the most
  digits that fit (about 1e-11 mm at 250 mm), so the geometry round-trips to < 1e-6 mm.

Dose values
-----------
Pixel data are 32-bit unsigned integers (Bits Allocated = Bits Stored = 32, High Bit 31, Pixel
Representation 0: unsigned, as C.8.8.3.4 requires unless Dose Type is ERROR); dose in Gy is
``pixel * DoseGridScaling`` (C.8.8.3, Dose Grid Scaling (3004,000E)). The scaling is chosen so
that the maximum dose maps to about ``2**32 - 1``; the scaling is rounded to its Decimal String
*before* quantising, so the reader reproduces ``pixel * scaling`` exactly, and the quantisation
error of every voxel is at most ``DoseGridScaling / 2 = max_dose / (2 * (2**32 - 1))``, i.e.
< 1.2e-10 of the maximum dose.

Dose Summation Type (Table C.8-39, Defined Terms): ``PLAN`` makes Referenced RT Plan Sequence
(300C,0002) required, ``RECORD`` makes Referenced Treatment Record Sequence (3008,0030) required
(both Type 1C). Molecular radiotherapy often has neither object; by default the writer then
refuses (the result would not conform), and ``allow_missing_reference=True`` writes the common
but non-conformant form without the sequence, recording the fact in Dose Comment. Dose Comment
(3004,0006) is VR LO, at most 64 characters (PS3.5 6.2): text that does not fit goes whole to
Image Comments (0020,4000, VR LT, General Image Module C.7.6.1).

Time-integrated activity maps
-----------------------------
RT Dose is the object that radiotherapy systems and viewers (3D Slicer, treatment planning
systems, OHIF) display as a colour wash on the CT; it is therefore also how mrtdose exports its
time-integrated activity (TIA) map, :func:`write_tia_rtdose` / :func:`read_tia_rtdose`. A TIA is
not an absorbed dose, and the encoding says so in every place a person or program looks:

* **Quantity and unit**: the TIA *concentration*, MBq h/mL (cumulated activity per unit volume;
  1 MBq h/mL = 3.6e9 decays per mL). A concentration, not MBq h per voxel, so that the values do
  not depend on the voxel size (a viewer that resamples the grid keeps them meaningful) and
  equal those of the ``tia.nii.gz`` output.
* **Dose Units (3004,0002) = RELATIVE**: PS3.3 C.8.8.3, Table C.8-39 enumerates GY ("Gray") and
  RELATIVE ("dose relative to implicit reference value"). The values are not Gy, so GY would be
  false; RELATIVE with the reference value made *explicit*: 1 MBq h/mL, i.e. stored value x
  Dose Grid Scaling (3004,000E) = TIA concentration in MBq h/mL, with the same quantisation
  bound as for dose (scaling / 2 = max / (2 (2^32 - 1))).
* **Dose Type (3004,0004) = PHYSICAL**: Type 1, so a value is needed; of the Defined Terms
  PHYSICAL ("physical dose"), EFFECTIVE (biologically weighted) and ERROR (signed difference),
  PHYSICAL is the one that states what is true here: no biological weighting. The Dose Comment
  says the values are not a dose.
* **Dose Summation Type** as for the dose map (PLAN, no RT Plan referenced: see above).
* **Text for people**: Series Description ``mrtdose time-integrated activity (MBq h/mL)``, Dose
  Comment ``Time-integrated activity, MBq h/mL; NOT absorbed dose`` and the full statement in
  Image Comments.
* **Machine-readable unit, standard**: a Real World Value Mapping item (PS3.3 C.7.6.16.2.11:
  slope = Dose Grid Scaling, intercept 0, LUT Label ``TIA``, Measurement Units Code Sequence
  with the UCUM code ``MBq.h/mL``), an additional Type 3 attribute from the Data Dictionary,
  which makes the object a Standard Extended SOP Class (PS3.2 definitions: same SOP Class UID,
  ignored by implementations that do not know it; kept by Storage Level 2 SCPs, PS3.4 B.4),
  for viewers that show real-world values.
* **Machine-readable, for mrtdose**: a private block (PS3.5 7.8.1; group :data:`PRIVATE_GROUP`,
  Private Creator :data:`PRIVATE_CREATOR`) with the quantity (:data:`QUANTITY_TIA`) and the unit.
  :func:`read_tia_rtdose` reads a file only when it carries this statement; :func:`read_rtdose`
  refuses it (a TIA map is never read as Gy).
"""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import (
    RTBeamsTreatmentRecordStorage,
    RTDoseStorage,
    RTPlanStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from mrtdose import __version__
from mrtdose.errors import InputError
from mrtdose.imaging.volume import Volume
from mrtdose.imaging.dicom_common import READ_ERRORS, new_dataset, read_dataset

#: Largest 32-bit unsigned pixel value.
UINT32_MAX = 2**32 - 1
#: Negative doses down to this fraction of the maximum are taken as numerical round-off (e.g.
#: of an FFT convolution) and stored as 0; below it the dose is refused.
NEGATIVE_ROUNDOFF_FRACTION = 1e-6
#: Tolerance (mm) for the geometry checks: frame spacing uniformity, reference-slice position.
GEOMETRY_ATOL_MM = 1e-3

#: Dose Comment and other LO values: at most 64 characters (PS3.5 6.2).
LO_MAX = 64

#: mrtdose private block (PS3.5 7.8.1): an odd group with a Private Creator in (gggg,0010)
#: reserving the elements (gggg,1000-10FF); element offsets below.
PRIVATE_GROUP = 0x0077
PRIVATE_CREATOR = "MRTDOSE 1"
P_QUANTITY, P_UNIT, P_NUCLIDE, P_MEDIUM, P_LAYOUT, P_SOURCE = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15
#: Quantities the private block names (element P_QUANTITY, VR LO).
QUANTITY_TIA = "TIME_INTEGRATED_ACTIVITY_CONCENTRATION"
QUANTITY_KERNEL = "VOXEL_S_VALUE_KERNEL"

#: Unit of a TIA RT Dose (module docstring) and its UCUM code (PS3.16 Section 8.1 "UCUM").
TIA_UNIT = "MBq h/mL"
TIA_UCUM = "MBq.h/mL"
TIA_SERIES_DESCRIPTION = "mrtdose time-integrated activity (MBq h/mL)"
TIA_DOSE_COMMENT = "Time-integrated activity, MBq h/mL; NOT absorbed dose"
TIA_IMAGE_COMMENTS = (
    "Time-integrated activity (TIA) concentration map, not an absorbed dose. Stored value x Dose Grid "
    "Scaling (3004,000E) = TIA concentration in MBq h/mL (1 MBq h/mL = 3.6e9 decays per mL). Dose Units "
    "RELATIVE: the reference value is 1 MBq h/mL. Dose Type PHYSICAL: no biological weighting. The same "
    "unit is in the Real World Value Mapping Sequence (UCUM MBq.h/mL) and in the private block of "
    "creator 'MRTDOSE 1'."
)

SUMMATION_TYPES = ("PLAN", "RECORD")
DOSE_TYPES = ("PHYSICAL", "EFFECTIVE")

#: Patient and study attributes copied from a DICOM reference (keyword: default if absent).
_COPIED = {
    "PatientName": "",
    "PatientBirthDate": "",
    "PatientSex": "",
    "StudyDate": "",
    "StudyTime": "",
    "StudyID": "",
    "AccessionNumber": "",
    "ReferringPhysicianName": "",
    "PositionReferenceIndicator": "",
}


def _ds(values: Any) -> list[str]:
    """Numbers as Decimal Strings of at most 16 characters (PS3.5 6.2), the most digits that fit."""
    out = []
    for v in np.ravel(values):
        f = float(v) + 0.0  # no "-0.0"
        r = repr(f)  # shortest string that reads back to the same float, when it fits
        out.append(r if len(r) <= 16 and "e" not in r else format_number_as_ds(f))
    return out


def _get(reference: Any, keyword: str) -> Any:
    try:
        v = reference.get(keyword)
    except AttributeError:
        return None
    if v is None:
        return None
    return getattr(v, "value", v) if not isinstance(v, (str, bytes)) and hasattr(v, "VR") else v


def _check_reference_geometry(dose: Volume, ref: Any) -> None:
    """A DICOM reference slice must lie on the dose grid: same orientation, pixel spacing and
    matrix, and its Image Position on one of the dose's frames (PS3.3 C.7.6.2.1.1)."""
    iop, ps, ipp = _get(ref, "ImageOrientationPatient"), _get(ref, "PixelSpacing"), _get(ref, "ImagePositionPatient")
    if iop is None and ps is None and ipp is None:
        return
    try:
        iop_a = np.asarray([float(x) for x in iop], dtype=np.float64) if iop is not None else None
        ps_a = np.asarray([float(x) for x in ps], dtype=np.float64) if ps is not None else None
        ipp_a = np.asarray([float(x) for x in ipp], dtype=np.float64) if ipp is not None else None
    except (TypeError, ValueError):
        raise InputError("reference geometry attributes are not numbers", field="reference") from None
    d = dose.direction
    if iop_a is not None and (iop_a.shape != (6,) or np.max(np.abs(iop_a - np.concatenate([d[:, 0], d[:, 1]]))) > 1e-4):
        raise InputError(
            f"reference Image Orientation (Patient) {iop_a.tolist()} differs from the dose grid's "
            f"{np.concatenate([d[:, 0], d[:, 1]]).round(6).tolist()}",
            field="reference.ImageOrientationPatient",
        )
    dx, dy, _ = dose.spacing_mm
    if ps_a is not None and (ps_a.shape != (2,) or abs(ps_a[0] - dy) > GEOMETRY_ATOL_MM or abs(ps_a[1] - dx) > GEOMETRY_ATOL_MM):
        raise InputError(
            f"reference Pixel Spacing {ps_a.tolist()} differs from the dose grid's [{dy}, {dx}] (row, column)",
            field="reference.PixelSpacing",
        )
    nk, nj, ni = dose.shape
    for kw, n in (("Rows", nj), ("Columns", ni)):
        v = _get(ref, kw)
        if v is not None and int(v) != n:
            raise InputError(f"reference {kw} {int(v)} differs from the dose grid's {n}", field=f"reference.{kw}")
    if ipp_a is not None:
        if ipp_a.shape != (3,):
            raise InputError("reference Image Position (Patient) must have 3 values", field="reference.ImagePositionPatient")
        ijk = dose.physical_to_index(ipp_a)
        k = int(round(ijk[2]))
        off = np.linalg.norm(dose.index_to_physical((0.0, 0.0, float(k))) - ipp_a)
        if not (0 <= k < nk) or off > GEOMETRY_ATOL_MM:
            raise InputError(
                f"reference slice at {ipp_a.tolist()} mm does not lie on the dose grid (nearest frame {k}, "
                f"{off:.4g} mm away); the dose must be on the reference image's grid",
                field="reference.ImagePositionPatient",
            )


def _dicom_datetime(t: datetime) -> tuple[str, str, str]:
    """(DA, TM, timezone offset ``+HHMM``) of an aware datetime (PS3.5 6.2; C.12.1.1.8)."""
    off = t.utcoffset()
    assert off is not None
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S.%f"), f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def _lo(text: str) -> str:
    """A Long String value (VR LO: at most 64 characters, PS3.5 6.2): longer text is cut with
    "..." (the full text then goes to Image Comments, VR LT)."""
    return text if len(text) <= LO_MAX else text[: LO_MAX - 3] + "..."


def private_value(ds: Dataset, element: int) -> str | None:
    """The value of element ``element`` (0x10..0xFF) of the mrtdose private block
    (:data:`PRIVATE_GROUP`, :data:`PRIVATE_CREATOR`), or ``None`` if the file has none."""
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        v = block[element].value
    except (KeyError, ValueError, TypeError, *READ_ERRORS):
        return None
    if v is None:
        return None
    v = str(v).strip()
    return v or None


def set_private(ds: Dataset, values: Mapping[int, tuple[str, str]]) -> None:
    """Write elements ``{element: (VR, value)}`` into the mrtdose private block (PS3.5 7.8.1)."""
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    for element, (vr, value) in values.items():
        block.add_new(element, vr, value)


def build_rtdose_dataset(
    volume: Volume,
    reference: Volume | Dataset | Mapping[str, Any] | None,
    *,
    patient_id: str,
    series_description: str,
    dose_units: str = "GY",
    value_name: str = "dose",
    value_unit: str = "Gy",
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    dose_summation_type: str = "PLAN",
    dose_type: str = "PHYSICAL",
    referenced_sop_instance_uid: str | None = None,
    referenced_sop_class_uid: str | None = None,
    allow_missing_reference: bool = False,
    patient_name: str | None = None,
    series_number: int = 1,
    dose_comment: str | None = None,
    image_comments: str | None = None,
    content_time: datetime | None = None,
    require_patient_id: bool = True,
) -> tuple[Dataset, float]:
    """The RT Dose dataset of a non-negative ``volume`` (geometry, identity, pixels and Dose Grid
    Scaling; see the module docstring) and the scaling used; the caller adds what is specific to
    the quantity (private block, Real World Value Mapping) and encodes it with
    :func:`dataset_bytes`. :func:`write_rtdose`, :func:`write_tia_rtdose` and
    :func:`mrtdose.imaging.kernels_io.write_kernel_dicom` are built on it; the arguments are
    those of :func:`write_rtdose`, plus:

    dose_units
        Dose Units (3004,0002): ``"GY"`` or ``"RELATIVE"`` (PS3.3 C.8.8.3, Table C.8-39).
    value_name, value_unit
        What the values are, for error messages (``"dose"``, ``"Gy"``).
    image_comments
        Image Comments (0020,4000), VR LT (General Image Module, C.7.6.1): the full text of a
        comment too long for Dose Comment (VR LO, 64 characters) is appended there.
    require_patient_id
        ``False`` allows an empty Patient ID (Type 2, PS3.3 C.7.1.1), for objects that describe
        no patient (a voxel kernel).
    """
    units = dose_units.strip().upper()
    if units not in ("GY", "RELATIVE"):
        raise InputError(f"dose_units must be GY or RELATIVE, got {dose_units!r}", field="dose_units")
    summ = dose_summation_type.strip().upper()
    if summ not in SUMMATION_TYPES:
        raise InputError(f"dose_summation_type must be one of {SUMMATION_TYPES}, got {dose_summation_type!r}", field="dose_summation_type")
    dtype_ = dose_type.strip().upper()
    if dtype_ not in DOSE_TYPES:
        raise InputError(
            f"dose_type must be one of {DOSE_TYPES}, got {dose_type!r} (ERROR would need signed pixels)", field="dose_type"
        )
    if require_patient_id and (not patient_id or not str(patient_id).strip()):
        raise InputError("patient_id must not be empty", field="patient_id")
    if content_time is None:
        content_time = datetime.now(timezone.utc)
    elif content_time.tzinfo is None or content_time.utcoffset() is None:
        raise InputError("content_time must be timezone-aware", field="content_time")

    # ---- values -> uint32 and scaling
    values = np.asarray(volume.array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError(
            f"{int(np.count_nonzero(~np.isfinite(values)))} {value_name} voxel(s) are NaN or infinite", field=f"{value_name}.array"
        )
    vmax = float(values.max())
    vmin = float(values.min())
    if vmin < 0 and (vmax <= 0 or -vmin > NEGATIVE_ROUNDOFF_FRACTION * vmax):
        raise InputError(
            f"{value_name} has negative values down to {vmin:.6g} {value_unit} (max {vmax:.6g} {value_unit}); "
            "RT Dose pixels are unsigned",
            field=f"{value_name}.array",
        )
    values = np.clip(values, 0.0, None)
    if vmax > 0:
        scaling_str = format_number_as_ds(vmax / UINT32_MAX * (1 + 1e-9))
        scaling = float(scaling_str)
        if vmax / scaling > UINT32_MAX:  # DS rounding went down; step up by one unit in the last place
            scaling_str = format_number_as_ds(scaling * (1 + 1e-8))
            scaling = float(scaling_str)
    else:
        scaling_str, scaling = "1.0", 1.0
    pixels = np.rint(values / scaling)
    if pixels.max() > UINT32_MAX:  # pragma: no cover - guarded by the choice of scaling above
        raise AssertionError("dose grid scaling too small")
    pixels = pixels.astype("<u4")

    # ---- geometry checks
    d = volume.direction
    n = np.cross(d[:, 0], d[:, 1])
    s = 1.0 if float(np.dot(d[:, 2], n)) >= 0 else -1.0
    nk, nj, ni = volume.shape
    dx, dy, dz = volume.spacing_mm
    drift = float(np.linalg.norm(d[:, 2] - s * n)) * dz * max(nk - 1, 0)
    if drift > GEOMETRY_ATOL_MM:
        raise InputError(
            f"slice axis is not normal to the image plane (last frame would move {drift:.4g} mm); "
            "RT Dose frames are offset along row x column only",
            field=f"{value_name}.direction",
        )

    # ---- identity
    ref_vals: dict[str, Any] = {}
    if isinstance(reference, Volume):
        if not volume.same_grid(reference, atol_mm=GEOMETRY_ATOL_MM):
            raise InputError(
                f"the {value_name} is not on the reference volume's grid (shape, origin, spacing or orientation "
                "differ); resample it first",
                field="reference",
            )
    elif reference is not None:
        if not hasattr(reference, "get"):
            raise InputError(f"reference must be a Volume, a pydicom Dataset or a mapping, got {type(reference).__name__}", field="reference")
        _check_reference_geometry(volume, reference)
        for kw in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", *_COPIED):
            v = _get(reference, kw)
            if v is not None and str(v) != "":
                ref_vals[kw] = v
    if "PatientID" in ref_vals and str(ref_vals["PatientID"]).strip() != str(patient_id).strip():
        raise InputError(
            f"patient_id {patient_id!r} differs from the reference's PatientID {str(ref_vals['PatientID'])!r}",
            field="patient_id",
        )

    def _uid(given: str | None, kw: str) -> str:
        ref = ref_vals.get(kw)
        if given is not None and ref is not None and str(given) != str(ref):
            raise InputError(f"{kw} {given!r} differs from the reference's {str(ref)!r}", field=kw)
        return str(given or ref or generate_uid())

    study_uid = _uid(study_instance_uid, "StudyInstanceUID")
    for_uid = _uid(frame_of_reference_uid, "FrameOfReferenceUID")

    # ---- dataset
    ds, sop_uid = new_dataset(RTDoseStorage)
    date, time, tz = _dicom_datetime(content_time)
    # SOP Common (C.12.1)
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8
    ds.SOPClassUID = RTDoseStorage
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.TimezoneOffsetFromUTC = tz
    # Patient (C.7.1.1)
    ds.PatientName = patient_name if patient_name is not None else ref_vals.get("PatientName", "")
    ds.PatientID = str(patient_id or "").strip()
    ds.PatientBirthDate = ref_vals.get("PatientBirthDate", "")
    ds.PatientSex = ref_vals.get("PatientSex", "")
    # General Study (C.7.2.1)
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ref_vals.get("StudyDate", "")
    ds.StudyTime = ref_vals.get("StudyTime", "")
    ds.StudyID = ref_vals.get("StudyID", "")
    ds.AccessionNumber = ref_vals.get("AccessionNumber", "")
    ds.ReferringPhysicianName = ref_vals.get("ReferringPhysicianName", "")
    # RT Series (C.8.8.1)
    ds.Modality = "RTDOSE"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = _lo(series_description)
    ds.OperatorsName = ""
    # Frame of Reference (C.7.4.1)
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ref_vals.get("PositionReferenceIndicator", "")
    # General Equipment (C.7.5.1)
    ds.Manufacturer = "mrtdose"
    ds.ManufacturerModelName = "mrtdose"
    ds.SoftwareVersions = str(__version__)
    # General Image (C.7.6.1)
    ds.InstanceNumber = 1
    ds.ContentDate = date
    ds.ContentTime = time
    # Image Plane (C.7.6.2)
    ds.ImagePositionPatient = _ds(volume.origin_mm)
    ds.ImageOrientationPatient = _ds(np.concatenate([d[:, 0], d[:, 1]]))
    ds.PixelSpacing = _ds([dy, dx])  # row spacing, column spacing
    ds.SliceThickness = _ds([dz])[0]
    # Image Pixel (C.7.6.3) as specialised by RT Dose (C.8.8.3.4)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = nj
    ds.Columns = ni
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    # Multi-frame (C.7.6.6)
    ds.NumberOfFrames = nk
    ds.FrameIncrementPointer = Tag(0x3004, 0x000C)
    # RT Dose (C.8.8.3)
    ds.DoseUnits = units
    ds.DoseType = dtype_
    ds.DoseSummationType = summ
    ds.GridFrameOffsetVector = _ds(np.arange(nk) * dz * s)
    ds.DoseGridScaling = scaling_str
    comment = dose_comment or ""
    if referenced_sop_instance_uid:
        item = Dataset()
        item.ReferencedSOPClassUID = referenced_sop_class_uid or (RTPlanStorage if summ == "PLAN" else RTBeamsTreatmentRecordStorage)
        item.ReferencedSOPInstanceUID = referenced_sop_instance_uid
        if summ == "PLAN":
            ds.ReferencedRTPlanSequence = [item]
        else:
            ds.ReferencedTreatmentRecordSequence = [item]
        note = ""
    elif allow_missing_reference:
        note = f"No {'RT Plan' if summ == 'PLAN' else 'treatment record'} referenced (molecular radiotherapy)."
    else:
        which = "Referenced RT Plan Sequence" if summ == "PLAN" else "Referenced Treatment Record Sequence"
        raise InputError(
            f"Dose Summation Type {summ} requires {which} (PS3.3 C.8.8.3, Type 1C): give "
            "referenced_sop_instance_uid, or allow_missing_reference=True to write the non-conformant form",
            field="referenced_sop_instance_uid",
        )
    # Dose Comment is VR LO (64 characters, PS3.5 6.2): the comment and the note when they fit,
    # else the comment (cut); whatever does not fit goes whole to Image Comments (VR LT).
    combined = f"{comment} {note}".strip()
    short = combined if len(combined) <= LO_MAX else _lo(comment or note)
    if short:
        ds.DoseComment = short
    long_parts = [image_comments or ""]
    if len(comment) > LO_MAX:
        long_parts.append(comment)
    if note and note not in short:
        long_parts.append(note)
    long_text = "\n".join(t.strip() for t in long_parts if t.strip())
    if long_text:
        ds.ImageComments = long_text[:10240]  # VR LT: at most 10240 characters (PS3.5 6.2)
    ds.add_new(0x7FE00010, "OW", pixels.tobytes())
    return ds, scaling


def dataset_bytes(ds: Dataset) -> bytes:
    """PS3.10 file bytes (preamble, ``DICM``, File Meta Information) of ``ds``."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def write_rtdose(
    dose: Volume,
    reference: Volume | Dataset | Mapping[str, Any] | None,
    *,
    patient_id: str,
    series_description: str,
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    dose_summation_type: str = "PLAN",
    dose_type: str = "PHYSICAL",
    referenced_sop_instance_uid: str | None = None,
    referenced_sop_class_uid: str | None = None,
    allow_missing_reference: bool = False,
    patient_name: str | None = None,
    series_number: int = 1,
    dose_comment: str | None = None,
    content_time: datetime | None = None,
) -> bytes:
    """Encode ``dose`` (unit Gy) as a DICOM RT Dose file (PS3.10 bytes; write them atomically).

    Parameters
    ----------
    dose
        Absorbed dose, ``unit == "Gy"``, finite, not negative (see
        :data:`NEGATIVE_ROUNDOFF_FRACTION`). Its geometry is written exactly.
    reference
        Where patient, study and frame of reference come from, and what the geometry must match:

        * a pydicom ``Dataset`` (one slice of the image the dose was computed on) or a mapping of
          DICOM keywords: PatientID, PatientName, StudyInstanceUID, FrameOfReferenceUID... are
          copied; if it carries Image Orientation/Position and Pixel Spacing, the slice must lie
          on the dose grid;
        * a :class:`Volume`: the dose must be on its grid (:meth:`Volume.same_grid`);
        * ``None``: identity from the keyword arguments only.
    patient_id
        Must agree with the reference's PatientID when that has one (a guard against writing a
        dose into another patient's record).
    series_description
        Series Description (0008,103E), e.g. ``"mrtdose Lu-177 cycle 1 absorbed dose"`` (VR LO:
        cut to 64 characters).
    study_instance_uid, frame_of_reference_uid
        Must agree with the reference's when both are given; new UIDs are generated
        (``pydicom.uid.generate_uid``) when neither is. A new Frame of Reference UID means the
        dose is not registered to any image in a viewer.
    dose_summation_type
        ``"PLAN"`` or ``"RECORD"`` (Table C.8-39).
    dose_type
        ``"PHYSICAL"`` or ``"EFFECTIVE"`` (e.g. a biologically weighted map).
    referenced_sop_instance_uid, referenced_sop_class_uid
        The RT Plan (PLAN) or treatment record (RECORD) the dose belongs to; the class defaults
        to RT Plan Storage / RT Beams Treatment Record Storage.
    allow_missing_reference
        Write without that reference (non-conformant, see the module docstring).
    dose_comment
        Dose Comment (3004,0006), VR LO: at most 64 characters are kept there; a longer comment
        is also written whole to Image Comments (0020,4000).
    content_time
        Aware datetime for Content/Instance Creation Date and Time; default now (UTC).

    Raises
    ------
    InputError
        Wrong unit, negative or non-finite dose, contradictory identity, geometry that does not
        match the reference or that DICOM cannot hold, unknown summation or dose type.
    """
    if dose.unit.strip().lower() != "gy":
        raise InputError(f"RT Dose holds absorbed dose in Gy; this volume's unit is {dose.unit!r}", field="dose.unit")
    ds, _ = build_rtdose_dataset(
        dose, reference, patient_id=patient_id, series_description=series_description, dose_units="GY",
        study_instance_uid=study_instance_uid, frame_of_reference_uid=frame_of_reference_uid,
        dose_summation_type=dose_summation_type, dose_type=dose_type,
        referenced_sop_instance_uid=referenced_sop_instance_uid, referenced_sop_class_uid=referenced_sop_class_uid,
        allow_missing_reference=allow_missing_reference, patient_name=patient_name, series_number=series_number,
        dose_comment=dose_comment, content_time=content_time,
    )
    return dataset_bytes(ds)


def _unit_key(unit: str) -> str:
    return re.sub(r"[\s*.\u00b7\u22c5]", "", str(unit)).lower()


def write_tia_rtdose(
    tia: Volume,
    reference: Volume | Dataset | Mapping[str, Any] | None,
    *,
    patient_id: str,
    series_description: str = TIA_SERIES_DESCRIPTION,
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    dose_summation_type: str = "PLAN",
    referenced_sop_instance_uid: str | None = None,
    referenced_sop_class_uid: str | None = None,
    allow_missing_reference: bool = False,
    patient_name: str | None = None,
    series_number: int = 2,
    content_time: datetime | None = None,
) -> bytes:
    """Encode a time-integrated activity (TIA) concentration map as a DICOM RT Dose file.

    The encoding (module docstring, "Time-integrated activity maps"): Dose Units RELATIVE with
    the reference value 1 MBq h/mL stated in Dose Comment, Image Comments, the mrtdose private
    block and a Real World Value Mapping item with the UCUM unit ``MBq.h/mL``; stored value x
    Dose Grid Scaling = MBq h/mL. Read it back with :func:`read_tia_rtdose`;
    :func:`read_rtdose` refuses it (it is not an absorbed dose).

    Parameters
    ----------
    tia
        Unit ``"MBq h/mL"`` (:data:`TIA_UNIT`), finite, not negative. Other arguments as for
        :func:`write_rtdose` (Dose Type is always PHYSICAL: no biological weighting).
    """
    if _unit_key(tia.unit) != _unit_key(TIA_UNIT):
        raise InputError(
            f"a TIA RT Dose holds the time-integrated activity concentration in {TIA_UNIT}; this volume's unit is "
            f"{tia.unit!r} (divide MBq h per voxel by the voxel volume in mL)",
            field="tia.unit",
        )
    ds, scaling = build_rtdose_dataset(
        tia, reference, patient_id=patient_id, series_description=series_description, dose_units="RELATIVE",
        value_name="time-integrated activity", value_unit=TIA_UNIT,
        study_instance_uid=study_instance_uid, frame_of_reference_uid=frame_of_reference_uid,
        dose_summation_type=dose_summation_type, dose_type="PHYSICAL",
        referenced_sop_instance_uid=referenced_sop_instance_uid, referenced_sop_class_uid=referenced_sop_class_uid,
        allow_missing_reference=allow_missing_reference, patient_name=patient_name, series_number=series_number,
        dose_comment=TIA_DOSE_COMMENT, image_comments=TIA_IMAGE_COMMENTS, content_time=content_time,
    )
    set_private(ds, {P_QUANTITY: ("LO", QUANTITY_TIA), P_UNIT: ("LO", TIA_UNIT)})
    add_real_world_value_mapping(ds, scaling, ucum=TIA_UCUM, meaning=TIA_UNIT, label="TIA",
                                 explanation="time-integrated activity concentration")
    return dataset_bytes(ds)


def add_real_world_value_mapping(ds: Dataset, scaling: float, *, ucum: str, meaning: str, label: str, explanation: str) -> None:
    """One Real World Value Mapping item (PS3.3 C.7.6.16.2.11, Table C.7.6.16-12): real-world
    value = stored value x ``scaling`` + 0 over the whole 32-bit range (the Double Float first
    and last values mapped, as for stored values beyond 16 bits), unit as a UCUM code in
    Measurement Units Code Sequence (coding scheme ``UCUM``, PS3.16 Section 8.1)."""
    unit = Dataset()
    unit.CodeValue = ucum
    unit.CodingSchemeDesignator = "UCUM"
    unit.CodeMeaning = meaning
    item = Dataset()
    item.DoubleFloatRealWorldValueFirstValueMapped = 0.0
    item.DoubleFloatRealWorldValueLastValueMapped = float(UINT32_MAX)
    item.RealWorldValueIntercept = 0.0
    item.RealWorldValueSlope = float(scaling)
    item.LUTExplanation = _lo(explanation)
    item.LUTLabel = label[:16]  # VR SH
    item.MeasurementUnitsCodeSequence = [unit]
    ds.RealWorldValueMappingSequence = [item]


def _open(path_or_bytes: str | Path | bytes | bytearray, what: str):
    ds, src = read_dataset(path_or_bytes, what)

    def need(kw: str) -> Any:
        try:
            v = ds.get(kw)
        except READ_ERRORS as exc:
            raise InputError(f"attribute {kw} is corrupt ({type(exc).__name__}: {exc})", source=src, field=kw) from None
        if v is None or (not isinstance(v, (int, float)) and len(str(v)) == 0):
            raise InputError(f"required attribute {kw} is missing or empty (file truncated?)", source=src, field=kw)
        return v

    sop = str(ds.get("SOPClassUID", "") or getattr(ds.get("file_meta", None) or Dataset(), "MediaStorageSOPClassUID", ""))
    if sop != RTDoseStorage:
        raise InputError(f"not an RT Dose object (SOP Class UID {sop or 'missing'}, expected {RTDoseStorage})", source=src, field="SOPClassUID")
    return ds, src, need


def _grid_volume(ds: Dataset, src: str, need, unit: str) -> Volume:
    """Geometry and values (pixel x Dose Grid Scaling) of an opened RT Dose (module docstring)."""
    try:
        rows, cols = int(need("Rows")), int(need("Columns"))
        nf = int(ds.get("NumberOfFrames", 1) or 1)
        ipp = np.array([float(x) for x in need("ImagePositionPatient")], dtype=np.float64)
        iop = np.array([float(x) for x in need("ImageOrientationPatient")], dtype=np.float64)
        ps = np.array([float(x) for x in need("PixelSpacing")], dtype=np.float64)
        scaling = float(need("DoseGridScaling"))
    except (TypeError, ValueError) as exc:
        raise InputError(f"malformed geometry or scaling attribute ({exc})", source=src) from None
    if ipp.shape != (3,) or iop.shape != (6,) or ps.shape != (2,):
        raise InputError("Image Position (3), Image Orientation (6) and Pixel Spacing (2) have the wrong number of values", source=src)
    if not (np.all(np.isfinite(ipp)) and np.all(np.isfinite(iop)) and np.all(np.isfinite(ps)) and np.isfinite(scaling)):
        raise InputError("geometry or Dose Grid Scaling is not finite", source=src)
    if not scaling > 0:  # 0: an all-zero map; < 0: negative values (stored pixels are unsigned)
        raise InputError(f"Dose Grid Scaling {scaling:g} must be > 0", source=src, field="DoseGridScaling")
    try:
        pix = ds.pixel_array
    except READ_ERRORS as exc:
        raise InputError(f"pixel data are missing, truncated or corrupt ({type(exc).__name__}: {exc})", source=src, field="PixelData") from None
    pix = np.asarray(pix)
    if pix.size != rows * cols * nf:
        raise InputError(f"pixel data hold {pix.size} values, expected {nf} x {rows} x {cols}", source=src, field="PixelData")
    array = pix.reshape(nf, rows, cols).astype(np.float64) * scaling

    row, col = iop[:3], iop[3:]
    n = np.cross(row, col)
    if nf > 1:
        try:
            g = np.array([float(x) for x in need("GridFrameOffsetVector")], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"malformed Grid Frame Offset Vector ({exc})", source=src, field="GridFrameOffsetVector") from None
        if g.shape != (nf,) or not np.all(np.isfinite(g)):
            raise InputError(f"Grid Frame Offset Vector has {g.size} values for {nf} frames", source=src, field="GridFrameOffsetVector")
        if g[0] != 0.0:
            transverse = np.allclose(iop, [1, 0, 0, 0, 1, 0], atol=1e-6)
            if transverse and abs(g[0] - ipp[2]) <= GEOMETRY_ATOL_MM:  # C.8.8.3.2 b) absolute z
                g = g - g[0]
            else:
                raise InputError(
                    "Grid Frame Offset Vector starts at neither 0 (relative) nor the z of Image Position "
                    "(absolute, transverse only) (PS3.3 C.8.8.3.2)",
                    source=src,
                    field="GridFrameOffsetVector",
                )
        step = (g[-1] - g[0]) / (nf - 1)
        if step == 0 or np.max(np.abs(g - step * np.arange(nf))) > GEOMETRY_ATOL_MM:
            raise InputError("frames are not equally spaced; only regular grids are supported", source=src, field="GridFrameOffsetVector")
        dz, slice_dir = abs(step), np.sign(step) * n
    else:
        st = ds.get("SliceThickness")
        try:
            dz = float(st) if st not in (None, "") else 0.0
        except (TypeError, ValueError):
            dz = 0.0
        if not dz > 0:
            raise InputError("single-frame dose without a positive Slice Thickness: slice spacing unknown", source=src, field="SliceThickness")
        slice_dir = n
    direction = np.column_stack([row, col, slice_dir])
    return Volume(
        array=array,
        spacing_mm=(float(ps[1]), float(ps[0]), float(dz)),
        origin_mm=tuple(ipp),
        direction=direction,
        unit=unit,
        acquisition_time=None,
        modality="RTDOSE",
        source_files=() if src.startswith("<") else (src,),
        description=str(ds.get("SeriesDescription", "") or ""),
    )


_WHAT = {QUANTITY_TIA: f"a time-integrated activity map ({TIA_UNIT})", QUANTITY_KERNEL: "a voxel S-value kernel"}


def read_rtdose(path_or_bytes: str | Path | bytes | bytearray) -> Volume:
    """Read a grid-based DICOM RT Dose (Dose Units GY) into a :class:`Volume` (unit ``"Gy"``).

    Geometry is reconstructed as described in the module docstring; dose = pixel x Dose Grid
    Scaling. ``acquisition_time`` is ``None`` (an RT Dose has no acquisition).

    Raises
    ------
    InputError
        Naming the file: not DICOM, truncated or corrupt, not RT Dose, relative dose units
        (in particular an mrtdose TIA map or kernel, which are not absorbed doses), missing
        geometry, unequal frame spacing.
    """
    ds, src, need = _open(path_or_bytes, "RT Dose")
    units = str(need("DoseUnits")).upper()
    quantity = private_value(ds, P_QUANTITY)
    if quantity in _WHAT:
        reader = "read_tia_rtdose" if quantity == QUANTITY_TIA else "mrtdose.imaging.kernels_io.read_dicom_kernel"
        raise InputError(
            f"this RT Dose holds {_WHAT[quantity]} (Dose Units {units}), not absorbed dose in Gy (GY); read it with {reader}",
            source=src, field="DoseUnits",
        )
    if units != "GY":
        raise InputError(f"Dose Units {units!r}: only absolute dose (GY) is supported", source=src, field="DoseUnits")
    return _grid_volume(ds, src, need, "Gy")


def read_tia_rtdose(path_or_bytes: str | Path | bytes | bytearray) -> Volume:
    """Read a time-integrated activity map written by :func:`write_tia_rtdose` into a
    :class:`Volume` with unit ``"MBq h/mL"``.

    Only a file that says it is a TIA map is read: Dose Units RELATIVE *and* the mrtdose private
    block's quantity :data:`QUANTITY_TIA` with unit :data:`TIA_UNIT`. A relative dose without that
    statement has an implicit reference value this reader cannot know; an absorbed dose (GY) is
    refused (read it with :func:`read_rtdose`).

    Raises
    ------
    InputError
        Naming the file, as :func:`read_rtdose`, and for the cases above.
    """
    ds, src, need = _open(path_or_bytes, "TIA RT Dose")
    units = str(need("DoseUnits")).upper()
    quantity = private_value(ds, P_QUANTITY)
    if quantity != QUANTITY_TIA:
        if quantity in _WHAT:
            what = _WHAT[quantity]
        elif units == "GY":
            what = "absorbed dose (Dose Units GY); read it with read_rtdose"
        else:
            what = (f"a dose in Dose Units {units} without the mrtdose time-integrated-activity statement (private "
                    f"creator {PRIVATE_CREATOR!r}, group {PRIVATE_GROUP:04X}): its unit is unknown")
        raise InputError(f"not a time-integrated activity map: this RT Dose holds {what}", source=src, field="DoseUnits")
    if units != "RELATIVE":
        raise InputError(
            f"Dose Units {units!r} contradicts the file's time-integrated-activity statement (expected RELATIVE)",
            source=src, field="DoseUnits",
        )
    unit = private_value(ds, P_UNIT)
    if unit is None or _unit_key(unit) != _unit_key(TIA_UNIT):
        raise InputError(f"time-integrated activity unit {unit!r}: only {TIA_UNIT} is supported", source=src, field="unit")
    return _grid_volume(ds, src, need, TIA_UNIT)
