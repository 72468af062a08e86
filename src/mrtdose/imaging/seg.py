"""DICOM Segmentation (SEG): read binary and fractional segments onto a voxel grid; write binary
(or fractional) SEGs for tests and synthetic patients.

Standard: DICOM PS3.3, Segmentation IOD (A.51) with the Segmentation Series (C.8.20.1) and
Segmentation Image (C.8.20.2) modules, Segment Description (C.8.20.2, Table C.8.20-4 / Segment
Description Macro), Multi-frame Functional Groups (C.7.6.16) -- Pixel Measures (C.7.6.16.2.1),
Plane Position (Patient) (C.7.6.16.2.3), Plane Orientation (Patient) (C.7.6.16.2.4), Frame
Content (C.7.6.16.2.2), Segmentation (Segment Identification, C.8.20.3.1) functional groups --,
Multi-frame Dimension (C.7.6.17), Frame of Reference (C.7.4.1); file format PS3.10, Explicit VR
Little Endian (PS3.5 A.2).

Reading (:func:`read_seg`, :func:`seg_masks`)
---------------------------------------------
* Each frame belongs to one segment: Per-frame Functional Groups Sequence (5200,9230) >
  Segment Identification Sequence (0062,000A) > Referenced Segment Number (0062,000B). Its
  position is Plane Position Sequence (0020,9113) > Image Position (Patient) (the centre of its
  first pixel, C.7.6.2.1.1); orientation and pixel spacing come from Plane Orientation Sequence
  (0020,9116) and Pixel Measures Sequence (0028,9110), per frame or shared (Shared Functional
  Groups Sequence (5200,9229)).
* All frames must share orientation, pixel spacing, Rows x Columns and in-plane position (a
  stack of parallel planes); their distances along the normal ``n = row x column`` must lie on a
  regular lattice (spacing: Spacing Between Slices, else the smallest gap between distinct
  planes). The stack becomes one :class:`~mrtdose.imaging.volume.Volume` per segment on the
  SEG's own grid (direction ``[row, column, n]``), frames absent for a segment being empty.
* Values: BINARY (Bits Allocated 1, bit-packed across frames, PS3.5 8.1.1) -> boolean;
  FRACTIONAL (Bits Allocated 8) -> ``pixel / Maximum Fractional Value`` in [0, 1], i.e. an
  occupancy or a probability per Segmentation Fractional Type (C.8.20.2.3). LABELMAP SEGs are not
  supported.
* Onto a reference grid: when the SEG grid is *aligned* with it (same lattice of voxel centres,
  possibly permuted or flipped axes and a subset of its slices -- the usual case: a SEG derived
  from the image) the values are placed exactly. Otherwise the caller must name
  ``interpolation`` (``"nearest"`` or ``"fractional"`` for binary segments, or ``"linear"`` for
  fractional ones; :func:`mrtdose.imaging.resample.resample`); nothing is interpolated silently.

Writing (:func:`write_seg`)
---------------------------
One frame per (segment, slice containing the segment), segment-major; Dimension Index Sequence:
Referenced Segment Number, then Image Position (Patient). Segment codes default to SNOMED CT
85756007 "Tissue" for category and type (DICOM CID 7150 / 7151); give ``segment_codes`` for
real anatomy.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import pack_bits
from pydicom.tag import Tag
from pydicom.uid import SegmentationStorage, generate_uid

from mrtdose import __version__
from mrtdose.errors import InputError
from mrtdose.imaging.resample import resample
from mrtdose.imaging.rtstruct import _ds
from mrtdose.imaging.volume import Volume
from mrtdose.imaging.dicom_common import READ_ERRORS, new_dataset, read_dataset

#: Geometry tolerance (mm) for frame stacking and lattice checks.
GEOMETRY_ATOL_MM = 1e-3

#: Default segment code: (CodeValue, CodingSchemeDesignator, CodeMeaning).
TISSUE_CODE = ("85756007", "SCT", "Tissue")


@dataclass(frozen=True, eq=False)
class Segment:
    """One segment: number, label and values on the SEG's own grid (bool, or float in [0, 1])."""

    number: int
    label: str
    volume: Volume


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The segments of a DICOM SEG."""

    segments: tuple[Segment, ...]
    segmentation_type: str
    fractional_type: str | None
    frame_of_reference_uid: str | None
    source: str

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.segments]

    def segment(self, label: str) -> Segment:
        """Segment by Segment Label (exact, else unique case-insensitive); error lists the labels."""
        hit = [s for s in self.segments if s.label == label]
        if not hit:
            hit = [s for s in self.segments if s.label.strip().lower() == label.strip().lower()]
        if len(hit) == 1:
            return hit[0]
        if not hit:
            raise InputError(f"segment {label!r} not found; available segments: {self.labels}", source=self.source, field="SegmentLabel")
        raise InputError(f"segment label {label!r} is ambiguous; available: {self.labels}", source=self.source, field="SegmentLabel")


def _floats(v: Any, n: int, what: str, src: str) -> np.ndarray:
    try:
        a = np.asarray([float(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} is not numeric", source=src, field=what) from None
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise InputError(f"{what} must have {n} finite values", source=src, field=what)
    return a


def _fg(item: Dataset | None, shared: Dataset | None, seq: str, kw: str) -> Any:
    """Attribute ``kw`` of functional group ``seq``: per-frame item first, then shared."""
    for grp in (item, shared):
        if grp is not None and seq in grp and len(grp[seq].value) and kw in grp[seq].value[0]:
            return grp[seq].value[0][kw].value
    return None


def read_seg(path_or_bytes: str | Path | bytes | bytearray) -> Segmentation:
    """Read every segment of a DICOM SEG onto the SEG's own grid (module docstring).

    Raises
    ------
    InputError
        Naming the file: not DICOM, not a Segmentation, LABELMAP, missing or inconsistent
        geometry (frames not a regular stack of parallel planes), pixel data truncated.
    """
    ds, src = read_dataset(path_or_bytes, "SEG")
    sop = str(ds.get("SOPClassUID", "") or "")
    if sop != SegmentationStorage:
        raise InputError(f"not a DICOM Segmentation (SOP Class UID {sop or 'missing'}, expected {SegmentationStorage})",
                         source=src, field="SOPClassUID")
    stype = str(ds.get("SegmentationType", "") or "").upper()
    if stype not in ("BINARY", "FRACTIONAL"):
        raise InputError(f"Segmentation Type {stype or 'missing'!r}: only BINARY and FRACTIONAL are supported", source=src,
                         field="SegmentationType")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        nf = int(ds.get("NumberOfFrames", 1) or 1)
        per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
        shared_seq = ds.get("SharedFunctionalGroupsSequence", [])
        shared = shared_seq[0] if len(shared_seq) else None
        seg_items = list(ds.get("SegmentSequence", []))
        labels = {int(it.SegmentNumber): str(it.get("SegmentLabel", "") or f"segment {int(it.SegmentNumber)}") for it in seg_items}
    except READ_ERRORS as exc:
        raise InputError(f"malformed SEG ({type(exc).__name__}: {exc})", source=src) from None
    if len(per_frame) != nf:
        raise InputError(f"Per-frame Functional Groups Sequence has {len(per_frame)} items for {nf} frames", source=src,
                         field="PerFrameFunctionalGroupsSequence")
    if not labels:
        raise InputError("Segment Sequence is empty", source=src, field="SegmentSequence")
    try:
        pix = np.asarray(ds.pixel_array)
    except READ_ERRORS as exc:
        raise InputError(f"pixel data are missing, truncated or corrupt ({type(exc).__name__}: {exc})", source=src,
                         field="PixelData") from None
    if pix.size != nf * rows * cols:
        raise InputError(f"pixel data hold {pix.size} values, expected {nf} x {rows} x {cols}", source=src, field="PixelData")
    pix = pix.reshape(nf, rows, cols)

    iop = ps = None
    seg_of = np.empty(nf, dtype=np.int64)
    ipps = np.empty((nf, 3))
    for f, item in enumerate(per_frame):
        o = _fg(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        s = _fg(item, shared, "PixelMeasuresSequence", "PixelSpacing")
        p = _fg(item, shared, "PlanePositionSequence", "ImagePositionPatient")
        n = _fg(item, shared, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
        if o is None or s is None or p is None or n is None:
            missing = [k for k, v in (("ImageOrientationPatient", o), ("PixelSpacing", s), ("ImagePositionPatient", p),
                                      ("ReferencedSegmentNumber", n)) if v is None]
            raise InputError(f"frame {f + 1} lacks {missing} in its functional groups", source=src,
                             field="PerFrameFunctionalGroupsSequence")
        o_a, s_a = _floats(o, 6, "ImageOrientationPatient", src), _floats(s, 2, "PixelSpacing", src)
        if iop is None:
            iop, ps = o_a, s_a
        elif np.max(np.abs(o_a - iop)) > 1e-4 or np.max(np.abs(s_a - ps)) > GEOMETRY_ATOL_MM:
            raise InputError(f"frame {f + 1} has another orientation or pixel spacing than frame 1: not one stack of planes",
                             source=src, field="PerFrameFunctionalGroupsSequence")
        ipps[f] = _floats(p, 3, "ImagePositionPatient", src)
        seg_of[f] = int(n)
        if int(n) not in labels:
            raise InputError(f"frame {f + 1} refers to segment {int(n)}, not in Segment Sequence", source=src,
                             field="ReferencedSegmentNumber")
    assert iop is not None and ps is not None
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, col)
    d = ipps @ normal
    inplane = ipps - d[:, None] * normal[None, :]
    if np.max(np.linalg.norm(inplane - inplane[0], axis=1)) > GEOMETRY_ATOL_MM:
        raise InputError("frames are shifted in-plane relative to each other: not one stack of planes", source=src,
                         field="ImagePositionPatient")
    planes = np.unique(np.round(d / GEOMETRY_ATOL_MM) * GEOMETRY_ATOL_MM)
    sbs = _fg(None, shared, "PixelMeasuresSequence", "SpacingBetweenSlices") or ds.get("SpacingBetweenSlices")
    st = _fg(None, shared, "PixelMeasuresSequence", "SliceThickness")
    if sbs not in (None, "") and float(sbs) > 0:
        dz = float(sbs)
    elif planes.size > 1:
        dz = float(np.min(np.diff(planes)))
    elif st not in (None, "") and float(st) > 0:
        dz = float(st)
    else:
        raise InputError("single plane without Spacing Between Slices or Slice Thickness: slice spacing unknown", source=src,
                         field="PixelMeasuresSequence")
    kf = (d - planes[0]) / dz
    k_idx = np.rint(kf).astype(np.int64)
    if np.max(np.abs(kf - k_idx)) * dz > GEOMETRY_ATOL_MM:
        raise InputError(f"frame positions are not on a regular lattice of spacing {dz} mm", source=src, field="ImagePositionPatient")
    nk = int(k_idx.max()) + 1
    origin = inplane[0] + planes[0] * normal
    if stype == "FRACTIONAL":
        maxv = float(ds.get("MaximumFractionalValue", 0) or 0)
        if not maxv > 0:
            raise InputError("FRACTIONAL SEG without a positive Maximum Fractional Value", source=src, field="MaximumFractionalValue")
        values = pix.astype(np.float64) / maxv
        ftype = str(ds.get("SegmentationFractionalType", "") or "").upper() or None
    else:
        values = pix != 0
        ftype = None
    for_uid = ds.get("FrameOfReferenceUID")
    segments = []
    for num in sorted(labels):
        arr = np.zeros((nk, rows, cols), dtype=values.dtype)
        sel = seg_of == num
        arr[k_idx[sel]] = values[sel]
        segments.append(Segment(num, labels[num], Volume(
            array=arr,
            spacing_mm=(float(ps[1]), float(ps[0]), dz),
            origin_mm=tuple(origin),
            direction=np.column_stack([row, col, normal]),
            unit="1",
            modality="SEG",
            source_files=() if src.startswith("<") else (src,),
            description=f"segment {num}: {labels[num]}",
        )))
    return Segmentation(tuple(segments), stype, ftype, str(for_uid) if for_uid else None, src)


def _aligned(a: Volume, b: Volume) -> bool:
    """True if every voxel centre of ``a`` is a voxel-centre position of ``b``'s (infinite) lattice."""
    m = np.linalg.inv(b.affine_lps) @ a.affine_lps
    r = np.rint(m[:3, :4])
    spacing = np.asarray(b.spacing_mm)
    return bool(np.all(np.abs(m[:3, :4] - r) * spacing[:, None] <= GEOMETRY_ATOL_MM))


def seg_masks(
    seg: Segmentation | str | Path | bytes | bytearray,
    reference: Volume,
    name_map: Mapping[str, str] | None = None,
    *,
    frame_of_reference_uid: str | None = None,
    interpolation: Literal["nearest", "linear", "fractional"] | None = None,
) -> dict[str, np.ndarray]:
    """Segments on ``reference``'s grid, keyed by region name (``name_map``: Segment Label -> name).

    Binary segments give boolean arrays, fractional ones floats in [0, 1] (or, with
    ``interpolation="fractional"``, the mean occupancy). See the module docstring for alignment.

    Raises
    ------
    InputError
        Segment not found (lists the labels); Frame of Reference UID differs from
        ``frame_of_reference_uid``; grids not aligned and no ``interpolation``; no overlap.
    """
    s = seg if isinstance(seg, Segmentation) else read_seg(seg)
    if frame_of_reference_uid and s.frame_of_reference_uid and str(frame_of_reference_uid) != s.frame_of_reference_uid:
        raise InputError(
            f"the SEG is in Frame of Reference {s.frame_of_reference_uid}, the image in {frame_of_reference_uid} (PS3.3 C.7.4.1)",
            source=s.source,
            field="FrameOfReferenceUID",
        )
    pairs = list(name_map.items()) if name_map is not None else [(x.label, x.label) for x in s.segments]
    out: dict[str, np.ndarray] = {}
    for label, region in pairs:
        segment = s.segment(label)
        vol = segment.volume
        if _aligned(vol, reference):
            how = "nearest"
        elif interpolation is None:
            raise InputError(
                f"segment {segment.label!r} is on a grid not aligned with the image (spacing {vol.spacing_mm} vs "
                f"{reference.spacing_mm} mm, or shifted by a fraction of a voxel): pass interpolation='nearest' or "
                "'fractional' (binary) or 'linear' (fractional) to resample it",
                source=s.source,
                field=segment.label,
            )
        else:
            how = interpolation
        try:
            res = resample(vol, reference, interpolation=how).array
        except InputError as exc:
            raise InputError(f"segment {segment.label!r}: {exc.detail}", source=s.source, field=segment.label) from None
        if vol.array.dtype == bool and how == "nearest":
            res = res.astype(bool)
        if not np.any(res):
            raise InputError(f"segment {segment.label!r} does not overlap the image (empty on its grid)", source=s.source,
                             field=segment.label)
        out[region] = res
    return out


def _code(code: tuple[str, str, str]) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = code
    return c


def write_seg(
    masks: Mapping[str, np.ndarray],
    reference: Volume,
    *,
    patient_id: str,
    frame_of_reference_uid: str | None = None,
    study_instance_uid: str | None = None,
    patient_name: str = "",
    segmentation_type: Literal["BINARY", "FRACTIONAL"] = "BINARY",
    max_fractional_value: int = 255,
    segment_codes: Mapping[str, tuple[tuple[str, str, str], tuple[str, str, str]]] | None = None,
    series_description: str = "mrtdose segmentation",
    content_time: datetime | None = None,
) -> bytes:
    """Encode masks on ``reference``'s grid as a DICOM SEG (PS3.10 bytes), PS3.3 C.8.20.

    BINARY: masks boolean (or 0/1), Bits Allocated 1. FRACTIONAL (OCCUPANCY): values in [0, 1]
    stored as ``round(v * max_fractional_value)`` in 8 bits. ``segment_codes[name] = (category,
    type)``, each ``(CodeValue, CodingSchemeDesignator, CodeMeaning)``.
    """
    if segmentation_type not in ("BINARY", "FRACTIONAL"):
        raise InputError(f"segmentation_type must be BINARY or FRACTIONAL, got {segmentation_type!r}", field="segmentation_type")
    if not masks:
        raise InputError("no masks to write", field="masks")
    if not str(patient_id).strip():
        raise InputError("patient_id is required", field="patient_id")
    if not (1 <= int(max_fractional_value) <= 255):
        raise InputError("max_fractional_value must be 1..255 (8-bit pixels)", field="max_fractional_value")
    content_time = content_time or datetime.now(timezone.utc)
    if content_time.tzinfo is None or content_time.utcoffset() is None:
        raise InputError("content_time must be timezone-aware", field="content_time")
    codes = dict(segment_codes or {})
    frames, per_frame = [], []
    segs = []
    nk = reference.shape[0]
    for num, (name, m) in enumerate(masks.items(), start=1):
        arr = np.asarray(m)
        if arr.shape != reference.shape:
            raise InputError(f"mask {name!r} has shape {arr.shape}, the reference grid {reference.shape}", field=f"masks.{name}")
        if segmentation_type == "BINARY":
            if arr.dtype != bool and not np.all(np.isin(arr, (0, 1))):
                raise InputError(f"mask {name!r} is not binary; use segmentation_type='FRACTIONAL'", field=f"masks.{name}")
            px = arr.astype(np.uint8)
        else:
            v = arr.astype(np.float64)
            if not np.all(np.isfinite(v)) or v.min() < 0 or v.max() > 1:
                raise InputError(f"fractional mask {name!r} must be in [0, 1]", field=f"masks.{name}")
            px = np.rint(v * int(max_fractional_value)).astype(np.uint8)
        if not px.any():
            raise InputError(f"mask {name!r} is empty", field=f"masks.{name}")
        item = Dataset()
        item.SegmentNumber = num
        item.SegmentLabel = str(name)[:64]
        item.SegmentAlgorithmType = "AUTOMATIC"
        item.SegmentAlgorithmName = "mrtdose"
        cat, typ = codes.get(name, (TISSUE_CODE, TISSUE_CODE))
        item.SegmentedPropertyCategoryCodeSequence = [_code(cat)]
        item.SegmentedPropertyTypeCodeSequence = [_code(typ)]
        segs.append(item)
        for k in range(nk):  # one frame per non-empty slice
            if not px[k].any():
                continue
            frames.append(px[k])
            fg = Dataset()
            fc = Dataset()
            fc.DimensionIndexValues = [num, k + 1]
            fg.FrameContentSequence = [fc]
            pp = Dataset()
            pp.ImagePositionPatient = _ds(reference.index_to_physical((0.0, 0.0, float(k))))
            fg.PlanePositionSequence = [pp]
            si = Dataset()
            si.ReferencedSegmentNumber = num
            fg.SegmentIdentificationSequence = [si]
            per_frame.append(fg)

    study_uid = study_instance_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    ds, sop_uid = new_dataset(SegmentationStorage)
    date, time = content_time.strftime("%Y%m%d"), content_time.strftime("%H%M%S.%f")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SegmentationStorage  # SOP Common (C.12.1)
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.PatientName = patient_name  # Patient (C.7.1.1)
    ds.PatientID = str(patient_id).strip()
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid  # General Study (C.7.2.1)
    ds.StudyDate = ds.StudyTime = ds.StudyID = ds.AccessionNumber = ds.ReferringPhysicianName = ""
    ds.Modality = "SEG"  # Segmentation Series (C.8.20.1)
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = series_description
    ds.FrameOfReferenceUID = for_uid  # Frame of Reference (C.7.4.1)
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "mrtdose"  # Enhanced General Equipment (C.7.5.2)
    ds.ManufacturerModelName = "mrtdose"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = str(__version__)
    ds.InstanceNumber = 1  # General Image (C.7.6.1)
    ds.ContentDate, ds.ContentTime = date, time
    # Segmentation Image (C.8.20.2)
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.ContentLabel = "MRTDOSE"
    ds.ContentDescription = series_description[:64]
    ds.ContentCreatorName = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = reference.shape[1], reference.shape[2]
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    ds.SegmentationType = segmentation_type
    if segmentation_type == "BINARY":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.SegmentationFractionalType = "OCCUPANCY"
        ds.MaximumFractionalValue = int(max_fractional_value)
    ds.SegmentSequence = segs
    # Multi-frame Dimension (C.7.6.17)
    dim_uid = generate_uid()
    org = Dataset()
    org.DimensionOrganizationUID = dim_uid
    ds.DimensionOrganizationSequence = [org]
    d1, d2 = Dataset(), Dataset()
    d1.DimensionOrganizationUID = d2.DimensionOrganizationUID = dim_uid
    d1.DimensionIndexPointer, d1.FunctionalGroupPointer = Tag(0x0062, 0x000B), Tag(0x0062, 0x000A)
    d2.DimensionIndexPointer, d2.FunctionalGroupPointer = Tag(0x0020, 0x0032), Tag(0x0020, 0x9113)
    ds.DimensionIndexSequence = [d1, d2]
    # Multi-frame Functional Groups (C.7.6.16)
    dcol = reference.direction
    dx, dy, dz = reference.spacing_mm
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = _ds([dy, dx])
    pm.SliceThickness = _ds([dz])[0]
    pm.SpacingBetweenSlices = _ds([dz])[0]
    shared.PixelMeasuresSequence = [pm]
    po = Dataset()
    po.ImageOrientationPatient = _ds(np.concatenate([dcol[:, 0], dcol[:, 1]]))
    shared.PlaneOrientationSequence = [po]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.NumberOfFrames = len(frames)
    stack = np.stack(frames)
    if segmentation_type == "BINARY":
        ds.add_new(0x7FE00010, "OB", pack_bits(stack))  # bit-packed across frames (PS3.5 8.1.1)
    else:
        raw = stack.tobytes()
        ds.add_new(0x7FE00010, "OB", raw + (b"\x00" if len(raw) % 2 else b""))
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()
