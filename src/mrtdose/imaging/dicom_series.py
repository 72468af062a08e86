"""Read a DICOM image series (NM SPECT reconstruction, PET, CT) into a :class:`Volume`.

Standard: DICOM PS3.3 (Information Object Definitions), PS3.5 (value representations), PS3.10
(file format). Attribute names below are DICOM keywords with their tags.

Which files form the volume
---------------------------
* A directory is searched recursively (hidden files skipped). Files without the PS3.10 preamble
  and ``DICM`` marker are ignored (reported in :attr:`SeriesInfo.warnings`) unless they are named
  ``*.dcm``/``*.ima`` or were passed explicitly, in which case they are an error. DICOMDIR files
  and non-image objects (RT Structure Set, SR, presentation states...: any SOP Class that is not
  an "... Image Storage" class) are ignored.
* Image files are grouped by Series Instance UID (0020,000E) (General Series, C.7.3.1). Several
  series and no ``series_uid``/``modality`` that picks one -> :class:`InputError` listing them.
* Within a series Patient ID (0010,0020), Study Instance UID (0020,000D), Modality (0008,0060),
  Frame of Reference UID (0020,0052), Rows/Columns, Image Orientation, Pixel Spacing and the value
  unit must agree; otherwise :class:`InputError` naming the files on each side.
* Supported: single-frame CT Image (A.3, CT Image module C.8.2.1), single-frame PET Image (A.21,
  PET Series C.8.9.1, PET Isotope C.8.9.2, PET Image C.8.9.4) and NM Image (A.5) RECON TOMO
  objects (one or several multi-frame files). Not supported (clear error): Enhanced multi-frame
  objects (functional groups), gated/dynamic series (several time slots, gates, energy windows or
  detectors, PET Series Type DYNAMIC/GATED), NM projections and planar images.

Geometry (conventions of :mod:`mrtdose.imaging.volume`)
------------------------------------------------------
* Image Plane module (C.7.6.2.1.1): Image Orientation (Patient) (0020,0037) = row direction
  (direction of increasing column index ``i``) then column direction (increasing row ``j``);
  Image Position (Patient) (0020,0032) = centre of the first transmitted pixel; Pixel Spacing
  (0028,0030) (C.7.6.2.1.1, 10.7.1.3) = ``[row spacing, column spacing]`` = ``[dy, dx]`` (the physical distance between
  adjacent *rows*, then between adjacent *columns*) -- the reverse of ``spacing_mm``'s (dx, dy).
* Slices are sorted by ``p . n`` with ``n = row x column`` (the slice normal), ascending; so the
  direction matrix is ``[row, column, n]`` (right-handed), ``origin_mm`` is the Image Position of
  the first slice after sorting and ``dz`` the (uniform) distance between sorted slices.
* NM multi-frame (NM Image IOD A.5; NM Multi-frame C.8.4.8, NM Detector C.8.4.11, NM
  Reconstruction C.8.4.15): for Image Type (0008,0008) value 3 ``RECON TOMO`` the plane geometry
  is in the Detector Information Sequence (0054,0022) (Image Position/Orientation (Patient), Type
  2C); many vendors also write it at the top level. Both present and different -> error; either
  one alone is used. Frame ``f`` lies at ``IPP + (SliceVector[f] - 1) * SpacingBetweenSlices * n``
  with Slice Vector (0054,0080) (default: frame order) and Spacing Between Slices (0018,0088)
  (fallback Slice Thickness (0018,0050), with a warning). Any other vector named by Frame
  Increment Pointer (0028,0009) (energy window, detector, rotation, R-R interval, time slot) must
  hold a single value.
* Checks, each an :class:`InputError` naming the file(s): orientation cosines not unit/orthogonal
  (tolerance :data:`ORIENTATION_TOLERANCE`); differing orientation or pixel spacing; two slices at
  the same position (overlapping beds, several frames/gates or reconstructions in one series) --
  unless they are the same SOP instance with identical pixels (a copy, dropped with a warning);
  slice distance deviating from the median distance by more than ``max(SLICE_TOLERANCE_MM,
  SLICE_TOLERANCE_FRACTION * dz)`` (missing slice, misplaced slice, variable spacing); slice
  centres off the line along ``n`` by more than that tolerance (gantry tilt / sheared stack); PET
  Number of Slices (0054,0081) not equal to the slices found.

Values and units
----------------
* Stored values -> real values by Rescale Slope/Intercept (0028,1053)/(0028,1052) (Modality LUT,
  C.11.1.1.2; ``v = m * SV + b``) applied per file (PET: per slice, PET Image module C.8.9.4; Type 1
  in CT Image and PET Image modules). NM Image objects have no Modality LUT in the IOD; when a
  vendor writes one (e.g. floating-point reconstructions) it is applied, else slope 1.
* Units (0054,1001) (PET Series module C.8.9.1, Defined Terms; written by some vendors in NM
  too): ``BQML`` -> ``"Bq/mL"``; ``CNTS`` -> ``"counts"``; NM without Units -> ``"counts"``; CT ->
  ``"HU"`` (CT Image module C.8.2.1; Rescale Type (0028,1054) ``HU`` or absent). Any other Units (``GML``,
  ``CPS``, ``PROPCNTS``...) or Rescale Type is kept as written and a warning is added.
* Philips PET with Units ``CNTS``: Philips writes the factor to activity concentration in the
  private group of private creator ``"Philips PET Private Group"``, element (7053,xx09) "Activity
  Concentration Scale Factor" (and (7053,xx00) "SUV Scale Factor"), as listed in Philips PET/CT
  DICOM conformance statements (GEMINI, Ingenuity, Vereos) and in the QIBA "SUV vendor-neutral
  pseudo-code" (UW/QIBA FDG-PET profile work). When the block is present the values are
  ``(m * SV + b) * factor`` in Bq/mL (the unit becomes ``"Bq/mL"`` and
  :attr:`SeriesInfo.value_scaling` says so); ``use_vendor_scale=False`` turns this off. The SUV
  factor is not used (SUV is derived in mrtdose from activity, mass and time). Other vendors'
  private scalings and the Real World Value Mapping Sequence (0040,9096) are not applied (a warning is
  added when the latter is present).

Time
----
* Reference time of the values (``Volume.acquisition_time``):

  - CT and NM: the earliest, over the series' files, of Acquisition Date/Time (0008,0022)/
    (0008,0032), else Acquisition DateTime (0008,002A), else Series Date/Time (0008,0021)/
    (0008,0031), else Content Date/Time (0008,0023)/(0008,0033).
  - PT: the decay-correction reference, by Decay Correction (0054,1102) (PET Series module C.8.9.1): ``START``
    -> Series Date/Time (the PET Series module makes these Type 1 and the reference for all
    temporally related PET attributes; Acquisition Time differs per bed in multi-bed scans and
    must not be used); ``ADMIN`` -> Radiopharmaceutical Start DateTime (0018,1078) (or Start Time
    (0018,1072) on Series Date); ``NONE`` -> the earliest acquisition time, with a warning that
    the values are not decay corrected. Decay Correction absent -> the CT/NM order, with a warning.
* Time zone: Timezone Offset From UTC (0008,0201) (SOP Common module C.12.1) when present (it must
  agree across files); an offset suffix inside a DT value is used for that value; else the ``tz``
  argument (``tzinfo`` or IANA name); else :class:`InputError` asking for ``tz`` or
  ``time_override`` -- never a guess. Local times that are ambiguous or do not exist in ``tz``
  (daylight-saving changes) are errors too.
* ``time_override`` (aware datetime) replaces the reference time and is recorded as the source.
* Radiopharmaceutical Information Sequence (0054,0016) (PET Isotope C.8.9.2, NM Isotope
  C.8.4.10): Radionuclide Total Dose (0018,1074) is in **Bq for PET** but in **MBq for NM**
  (both per PS3.3); it is returned in Bq. Radiopharmaceutical Start DateTime/Time, Radionuclide
  Half Life (0018,1075, s), Radionuclide Code Sequence meaning and Radiopharmaceutical (0018,0031)
  are returned when present. Actual Frame Duration (0018,1242) is in ms.

Robustness
----------
File decoding (header parsing, attribute conversion, pixel decoding) is untrusted input: every
failure there becomes an :class:`InputError` naming the file and, where known, the attribute.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from mrtdose.errors import InputError
from mrtdose.imaging.volume import Volume

__all__ = [
    "SeriesInfo",
    "SeriesSummary",
    "list_series",
    "read_series",
    "read_series_info",
    "read_series_with_info",
    "ORIENTATION_TOLERANCE",
    "PIXEL_SPACING_TOLERANCE_MM",
    "SLICE_TOLERANCE_MM",
    "SLICE_TOLERANCE_FRACTION",
]

#: Largest allowed deviation of direction cosines (unit length, orthogonality, agreement between
#: slices). Decimal Strings carry at most 16 characters (PS3.5 6.2); vendors often write 6 decimals.
ORIENTATION_TOLERANCE = 1e-4
#: Largest allowed difference in Pixel Spacing between slices of one series (mm).
PIXEL_SPACING_TOLERANCE_MM = 1e-4
#: Slice distance / alignment tolerance: ``max(SLICE_TOLERANCE_MM, SLICE_TOLERANCE_FRACTION * dz)``.
SLICE_TOLERANCE_MM = 0.01
SLICE_TOLERANCE_FRACTION = 0.01

_MODALITIES = ("CT", "PT", "NM")
_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
_PHILIPS_PET_CREATOR = "Philips PET Private Group"
_UNIT_NAMES = {"BQML": "Bq/mL", "CNTS": "counts"}
#: Slice Vector (0054,0080), the frame-to-slice map of NM reconstructions (NM Multi-frame module C.8.4.8).
_SLICE_VECTOR = 0x00540080


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class SeriesSummary:
    """One image series found in a folder (for choosing ``series_uid``)."""

    series_instance_uid: str
    modality: str
    description: str
    n_files: int
    example_file: str

    def __str__(self) -> str:
        return (
            f"{self.series_instance_uid} ({self.modality}, {self.description!r}, {self.n_files} file(s), "
            f"e.g. {self.example_file})"
        )


@dataclass(frozen=True, kw_only=True)
class SeriesInfo:
    """What a series says beyond the voxel grid: identity, value scaling, times, administration.

    Times are timezone-aware (or ``None``); activities in Bq; durations in ms (as in DICOM).
    """

    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    frame_of_reference_uid: str | None
    modality: str
    series_description: str
    manufacturer: str
    files: tuple[str, ...]
    #: Unit of the volume's values (``"Bq/mL"``, ``"counts"``, ``"HU"`` or as written).
    unit: str
    #: Units (0054,1001) as written, or ``None``.
    units_attribute: str | None
    #: How stored values became ``unit`` (rescale, vendor factor).
    value_scaling: str
    #: Reference time of the values (= ``Volume.acquisition_time``).
    acquisition_time: datetime
    #: Which attribute(s) gave ``acquisition_time`` (or ``"time_override"``).
    time_source: str
    #: Where the time zone came from.
    timezone_source: str
    #: Earliest acquisition start over the files, when known (may differ from acquisition_time).
    acquisition_start: datetime | None = None
    #: PET Decay Correction (0054,1102): ``START``, ``ADMIN``, ``NONE`` or ``None``.
    decay_correction: str | None = None
    #: PET Corrected Image (0028,0051) values, e.g. ``("ATTN", "SCAT", "DECY")``.
    corrected_image: tuple[str, ...] = ()
    #: Actual Frame Duration (0018,1242) in ms, when the same for all files.
    frame_duration_ms: float | None = None
    injected_activity_bq: float | None = None
    injection_time: datetime | None = None
    radiopharmaceutical: str | None = None
    radionuclide: str | None = None
    radionuclide_half_life_s: float | None = None
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# attribute access (every failure -> InputError naming file and attribute)


def _raw(ds: Dataset, kw: str, src: str) -> Any:
    try:
        if kw not in ds:
            return None
        return ds[kw].value
    except Exception as exc:  # noqa: BLE001 - untrusted file content
        raise InputError(f"attribute cannot be decoded ({type(exc).__name__}: {exc})", source=src, field=kw) from None


def _is_empty(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (str, bytes)):
        return len(v.strip()) == 0 if isinstance(v, str) else len(v) == 0
    try:
        return len(v) == 0
    except TypeError:
        return False


def _str(ds: Dataset, kw: str, src: str, *, required: bool = False) -> str | None:
    v = _raw(ds, kw, src)
    if _is_empty(v):
        if required:
            raise InputError("required attribute is missing or empty", source=src, field=kw)
        return None
    if isinstance(v, bytes):
        raise InputError(f"expected text, got binary data {v[:16]!r}", source=src, field=kw)
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        s = "\\".join(str(x).strip() for x in v)
    else:
        s = str(v).strip()
    if "\x00" in s:
        raise InputError(f"value contains NUL characters: {s!r}", source=src, field=kw)
    return s or None


def _floats(ds: Dataset, kw: str, src: str, n: int | None, *, required: bool = False) -> np.ndarray | None:
    v = _raw(ds, kw, src)
    if _is_empty(v):
        if required:
            raise InputError("required attribute is missing or empty", source=src, field=kw)
        return None
    if isinstance(v, bytes):
        raise InputError(f"expected numbers, got binary data {v[:16]!r}", source=src, field=kw)
    items = list(v) if (isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue") else [v]
    try:
        arr = np.array([float(x) for x in items], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"expected numbers, got {v!r}", source=src, field=kw) from None
    if n is not None and arr.shape != (n,):
        raise InputError(f"expected {n} value(s), got {arr.size}: {arr.tolist()}", source=src, field=kw)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"values must be finite, got {arr.tolist()}", source=src, field=kw)
    return arr


def _float(ds: Dataset, kw: str, src: str, *, required: bool = False) -> float | None:
    a = _floats(ds, kw, src, 1, required=required)
    return None if a is None else float(a[0])


def _int(ds: Dataset, kw: str, src: str, *, required: bool = False) -> int | None:
    f = _float(ds, kw, src, required=required)
    if f is None:
        return None
    if f != int(f):
        raise InputError(f"expected an integer, got {f}", source=src, field=kw)
    return int(f)


def _seq_item(ds: Dataset, kw: str, src: str) -> tuple[Dataset | None, int]:
    v = _raw(ds, kw, src)
    if _is_empty(v):
        return None, 0
    try:
        items = list(v)
    except TypeError:
        raise InputError("expected a sequence", source=src, field=kw) from None
    if not all(isinstance(it, Dataset) for it in items):
        raise InputError("sequence items are not datasets", source=src, field=kw)
    return items[0], len(items)


# ---------------------------------------------------------------------------------------------
# date and time (PS3.5 6.2: DA YYYYMMDD, TM HHMMSS.FFFFFF, DT YYYYMMDDHHMMSS.FFFFFF&ZZXX)

_TM_RE = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")
_DT_RE = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?")
_OFFSET_RE = re.compile(r"([+-])(\d{2})(\d{2})")


def _parse_da(s: str, src: str, kw: str) -> date:
    t = s.strip()
    if re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", t):  # ACR-NEMA form, PS3.5 6.2 note
        t = t.replace(".", "")
    if not re.fullmatch(r"\d{8}", t):
        raise InputError(f"not a DICOM date (YYYYMMDD): {s!r}", source=src, field=kw)
    try:
        return date(int(t[:4]), int(t[4:6]), int(t[6:]))
    except ValueError as exc:
        raise InputError(f"invalid date {s!r} ({exc})", source=src, field=kw) from None


def _parse_tm(s: str, src: str, kw: str) -> time:
    t = s.strip()
    if re.fullmatch(r"\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?", t):  # ACR-NEMA form
        t = t.replace(":", "")
    m = _TM_RE.fullmatch(t)
    if not m:
        raise InputError(f"not a DICOM time (HHMMSS.FFFFFF): {s!r}", source=src, field=kw)
    hh, mm, ss, frac = m.groups()
    try:
        return time(int(hh), int(mm or 0), int(ss or 0), int((frac or "0").ljust(6, "0")))
    except ValueError as exc:
        raise InputError(f"invalid time {s!r} ({exc})", source=src, field=kw) from None


def _parse_offset(s: str, src: str, kw: str) -> timezone:
    m = _OFFSET_RE.fullmatch(s.strip())
    if not m or int(m.group(3)) >= 60 or int(m.group(2)) > 14:
        raise InputError(f"not a UTC offset (+HHMM or -HHMM): {s!r}", source=src, field=kw)
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    return timezone(timedelta(minutes=-minutes if m.group(1) == "-" else minutes))


def _parse_dt(s: str, src: str, kw: str) -> datetime:
    m = _DT_RE.fullmatch(s.strip())
    if not m:
        raise InputError(f"not a DICOM date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX): {s!r}", source=src, field=kw)
    y, mo, d, hh, mi, ss, frac, off = m.groups()
    try:
        t = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0), int((frac or "0").ljust(6, "0")))
    except ValueError as exc:
        raise InputError(f"invalid date-time {s!r} ({exc})", source=src, field=kw) from None
    return t.replace(tzinfo=_parse_offset(off, src, kw)) if off else t


def _localize(t: datetime, zone: tzinfo, what: str) -> datetime:
    """Attach ``zone`` to a naive local time; ambiguous or non-existent local times are errors."""
    if t.tzinfo is not None:
        return t
    a, b = t.replace(tzinfo=zone, fold=0), t.replace(tzinfo=zone, fold=1)
    if a.utcoffset() is None:
        raise InputError(f"time zone {zone!r} gives no UTC offset for {t.isoformat()}", field="tz")
    if a.utcoffset() != b.utcoffset():
        raise InputError(
            f"{what} {t.isoformat()} is ambiguous or does not exist in time zone {zone} (daylight-saving change): "
            "give time_override with an explicit UTC offset",
            field="tz",
        )
    return a


def _zone(tz: tzinfo | str | None) -> tzinfo | None:
    if tz is None or isinstance(tz, tzinfo):
        return tz
    if isinstance(tz, str):
        try:
            from zoneinfo import ZoneInfo

            return ZoneInfo(tz)
        except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError for odd keys
            raise InputError(f"unknown time zone {tz!r} (use an IANA name such as 'Europe/London')", field="tz") from None
    raise InputError(f"tz must be a tzinfo or an IANA time-zone name, got {tz!r}", field="tz")


# ---------------------------------------------------------------------------------------------
# finding files


@dataclass
class _Header:
    path: str
    ds: Dataset
    series_uid: str
    modality: str
    description: str


def _has_dicm(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        raise InputError(f"cannot read file ({exc})", source=path) from None
    return len(head) == 132 and head[128:132] == b"DICM"


def _gather(directory_or_files: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[list[tuple[str, bool]], str]:
    """(path, explicit) pairs and a label for messages."""
    if isinstance(directory_or_files, (str, os.PathLike)):
        p = Path(directory_or_files)
        if p.is_dir():
            out: list[tuple[str, bool]] = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        out.append((os.path.join(root, name), False))
            return out, str(p)
        if p.is_file():
            return [(str(p), True)], str(p)
        raise InputError("no such file or directory", source=str(p))
    try:
        items = [str(Path(x)) for x in directory_or_files]
    except TypeError:
        raise InputError(f"expected a directory or a list of files, got {directory_or_files!r}") from None
    seen: dict[str, None] = {}
    for it in items:
        if not Path(it).is_file():
            raise InputError("no such file", source=it)
        seen.setdefault(it, None)
    return [(x, True) for x in seen], (f"{len(seen)} given file(s)" if seen else "empty file list")


def _load(path: str, *, pixels: bool) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except Exception as exc:  # noqa: BLE001 - any parse failure of an untrusted file
        raise InputError(f"not a readable DICOM file, corrupt or truncated ({type(exc).__name__}: {exc})", source=path) from None


def _sop_class(ds: Dataset, src: str) -> str | None:
    s = _str(ds, "SOPClassUID", src)
    if s is None:
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            s = _str(meta, "MediaStorageSOPClassUID", src)
    return s


def _scan(directory_or_files: Any) -> tuple[list[_Header], str, list[str]]:
    """Headers of all image files, the label of the input and notes on ignored files."""
    entries, label = _gather(directory_or_files)
    headers: list[_Header] = []
    not_dicom: list[str] = []
    non_image: list[str] = []
    for path, explicit in entries:
        if not _has_dicm(path):
            if explicit or path.lower().endswith(_DICOM_SUFFIXES):
                raise InputError(
                    "not a DICOM file (no PS3.10 preamble with 'DICM' marker): empty, truncated or another format",
                    source=path,
                )
            not_dicom.append(path)
            continue
        ds = _load(path, pixels=False)
        sop = _sop_class(ds, path)
        if sop == _DICOMDIR_SOP:
            non_image.append(path)
            continue
        sop_name = UID(sop).name if sop else ""
        is_image = "Rows" in ds or "Image Storage" in sop_name
        if sop and not is_image and "Storage" in sop_name:
            non_image.append(path)  # RT Structure Set, SR, presentation state, RT Plan...
            continue
        if not is_image:
            raise InputError(
                "DICOM file without SOP Class UID or image attributes: truncated or incomplete", source=path,
                field="SOPClassUID",
            )
        if "Enhanced" in sop_name or "Legacy Converted" in sop_name or "PerFrameFunctionalGroupsSequence" in ds:
            raise InputError(
                f"{sop_name or 'enhanced multi-frame'} objects (functional groups, PS3.3 C.7.6.16) are not supported",
                source=path,
            )
        uid = _str(ds, "SeriesInstanceUID", path, required=True)
        modality = (_str(ds, "Modality", path, required=True) or "").upper()
        desc = _str(ds, "SeriesDescription", path) or ""
        headers.append(_Header(path, ds, uid or "", modality, desc))
    notes = []
    if not_dicom:
        notes.append(f"ignored {len(not_dicom)} non-DICOM file(s), e.g. {not_dicom[0]}")
    if non_image:
        notes.append(f"ignored {len(non_image)} non-image DICOM object(s), e.g. {non_image[0]}")
    if not headers:
        raise InputError(
            f"no DICOM image files found ({len(entries)} file(s) examined, {len(not_dicom)} not DICOM, "
            f"{len(non_image)} non-image objects)",
            source=label,
        )
    return headers, label, notes


def _summaries(headers: list[_Header]) -> list[SeriesSummary]:
    groups: dict[str, list[_Header]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    out = []
    for uid, hs in groups.items():
        mods = sorted({h.modality for h in hs})
        descs = sorted({h.description for h in hs})
        out.append(SeriesSummary(uid, "/".join(mods), " / ".join(descs), len(hs), hs[0].path))
    return out


def list_series(directory_or_files: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[SeriesSummary, ...]:
    """The image series in a folder (or list of files), in the order first found."""
    headers, _, _ = _scan(directory_or_files)
    return tuple(_summaries(headers))


def _select(headers: list[_Header], label: str, modality: str | None, series_uid: str | None) -> list[_Header]:
    cands = headers
    if series_uid is not None:
        cands = [h for h in cands if h.series_uid == str(series_uid).strip()]
    if modality is not None:
        cands = [h for h in cands if h.modality == str(modality).strip().upper()]
    listing = "\n  ".join(str(s) for s in _summaries(headers))
    if not cands:
        want = ", ".join(x for x in (f"series_uid={series_uid!r}" if series_uid else "",
                                      f"modality={modality!r}" if modality else "") if x)
        raise InputError(f"no image series with {want}; found:\n  {listing}", source=label)
    uids = {h.series_uid for h in cands}
    if len(uids) > 1:
        chosen = "\n  ".join(str(s) for s in _summaries(cands))
        raise InputError(
            f"{len(uids)} image series found; choose one with series_uid= (or modality=):\n  {chosen}", source=label,
        )
    return cands


def _agree(headers: list[_Header], kw: str, what: str, *, required: bool) -> str | None:
    """The common value of a text attribute; InputError naming the files on each side otherwise."""
    values: dict[str | None, list[str]] = {}
    for h in headers:
        values.setdefault(_str(h.ds, kw, h.path, required=required), []).append(h.path)
    if len(values) > 1:
        parts = "; ".join(f"{v!r}: {', '.join(fs[:5])}{' ...' if len(fs) > 5 else ''}" for v, fs in values.items())
        first_minor = min(values.values(), key=len)[0]
        raise InputError(f"the series mixes {what} ({parts})", source=first_minor, field=kw)
    return next(iter(values))


# ---------------------------------------------------------------------------------------------
# slices


@dataclass
class _Slice:
    path: str
    sop_uid: str | None
    position: np.ndarray
    row: np.ndarray
    col: np.ndarray
    pixel_spacing: np.ndarray  # (dy, dx): row spacing, column spacing
    shape: tuple[int, int]
    thickness: float | None
    pixels: np.ndarray | None = None  # real values (after rescale and vendor factor)


def _check_orientation(iop: np.ndarray, src: str, field: str) -> tuple[np.ndarray, np.ndarray]:
    row, col = iop[:3], iop[3:]
    dev = max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(col) - 1), abs(float(row @ col)))
    if dev > ORIENTATION_TOLERANCE:
        raise InputError(
            f"Image Orientation (Patient) {iop.tolist()} is not two orthogonal unit vectors "
            f"(deviation {dev:.3g} > {ORIENTATION_TOLERANCE:g}; PS3.3 C.7.6.2.1.1)",
            source=src,
            field=field,
        )
    return row, col


@dataclass
class _Scaling:
    unit: str
    units_attribute: str | None
    description: str
    warnings: list[str] = field(default_factory=list)


def _scaling(ds: Dataset, src: str, modality: str, use_vendor_scale: bool) -> tuple[float, float, float, _Scaling]:
    """(slope, intercept, vendor factor, description) of one file."""
    required = modality in ("PT", "CT")  # Type 1 in PET Image (C.8.9.4) and CT Image (C.8.2.1)
    slope = _float(ds, "RescaleSlope", src, required=required)
    intercept = _float(ds, "RescaleIntercept", src, required=required)
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    if not slope > 0:  # a zero or negative slope has no meaning for CT numbers, counts or activity
        raise InputError(f"Rescale Slope must be > 0, got {slope:g}", source=src, field="RescaleSlope")
    notes: list[str] = []
    units = _str(ds, "Units", src, required=(modality == "PT"))
    factor = 1.0
    how = "Rescale Slope/Intercept per file (PS3.3 C.11.1.1.2)" if required or "RescaleSlope" in ds else "stored values"
    if modality == "CT":
        rtype = _str(ds, "RescaleType", src)
        unit = "HU" if rtype is None or rtype.upper() == "HU" else rtype
        if unit != "HU":
            notes.append(f"CT Rescale Type {rtype!r} is not HU; unit kept as written")
        return slope, intercept, factor, _Scaling(unit, units, how, notes)
    if modality == "PT" and intercept != 0:
        notes.append(f"PET Rescale Intercept is {intercept:g}, not 0 as the PET Image module (C.8.9.4) requires; applied")
    u = units.upper() if units else None
    if u == "CNTS" and use_vendor_scale and modality == "PT":
        try:
            block = ds.private_block(0x7053, _PHILIPS_PET_CREATOR)
        except KeyError:
            block = None
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"private group 7053 cannot be decoded ({exc})", source=src, field="(7053,xx09)") from None
        if block is not None and 0x09 in block:
            try:
                factor = float(block[0x09].value)
            except Exception:  # noqa: BLE001
                raise InputError("Philips Activity Concentration Scale Factor is not a number", source=src,
                                 field="(7053,xx09)") from None
            if not (np.isfinite(factor) and factor > 0):
                raise InputError(f"Philips Activity Concentration Scale Factor {factor} must be > 0", source=src,
                                 field="(7053,xx09)")
            how += " x Philips Activity Concentration Scale Factor (7053,xx09) (CNTS -> Bq/mL)"
            return slope, intercept, factor, _Scaling("Bq/mL", units, how, notes)
    if u is None:
        unit = "counts"  # NM without Units
    elif u in _UNIT_NAMES:
        unit = _UNIT_NAMES[u]
    else:
        unit = units or ""
        notes.append(f"Units {units!r} is not BQML or CNTS: values kept in that unit (PS3.3 C.8.9.1.1.3)")
    if modality == "NM" and "RealWorldValueMappingSequence" in ds:
        notes.append("Real World Value Mapping Sequence present but not applied (not supported)")
    return slope, intercept, factor, _Scaling(unit, units, how, notes)


def _decode_pixels(ds: Dataset, src: str, n_frames: int, rows: int, cols: int) -> np.ndarray:
    spp = _int(ds, "SamplesPerPixel", src)
    if spp not in (None, 1):
        raise InputError(f"Samples per Pixel is {spp}; only monochrome images are supported", source=src,
                         field="SamplesPerPixel")
    if "PixelData" not in ds:
        raise InputError("no Pixel Data (7FE0,0010) (truncated file?)", source=src, field="PixelData")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pix = np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad pixel data
        raise InputError(
            f"pixel data are missing, truncated, corrupt or in an unsupported transfer syntax "
            f"({type(exc).__name__}: {exc})",
            source=src,
            field="PixelData",
        ) from None
    if pix.dtype.kind not in "iuf" or pix.size != n_frames * rows * cols:
        raise InputError(f"pixel data have shape {pix.shape}, expected {n_frames} x {rows} x {cols}", source=src,
                         field="PixelData")
    return pix.reshape(n_frames, rows, cols)


def _image_matrix(ds: Dataset, src: str) -> tuple[int, int, np.ndarray, int]:
    """Rows, Columns, Pixel Spacing ([dy, dx] mm) and Number of Frames (default 1) of an image,
    checked (Image Pixel module C.7.6.3, Multi-frame module C.7.6.6)."""
    rows = _int(ds, "Rows", src, required=True)
    cols = _int(ds, "Columns", src, required=True)
    assert rows is not None and cols is not None
    if rows <= 0 or cols <= 0:
        raise InputError(f"image size {rows} x {cols} is empty", source=src, field="Rows")
    ps = _floats(ds, "PixelSpacing", src, 2, required=True)
    assert ps is not None
    if np.any(ps <= 0):
        raise InputError(f"Pixel Spacing must be positive, got {ps.tolist()}", source=src, field="PixelSpacing")
    n_frames = _int(ds, "NumberOfFrames", src) or 1
    if n_frames < 1:
        raise InputError(f"Number of Frames is {n_frames}", source=src, field="NumberOfFrames")
    return rows, cols, ps, n_frames


def _file_slices(h: _Header, full: Dataset | None, modality: str, use_vendor_scale: bool) -> tuple[list[_Slice], _Scaling]:
    ds, src = (full if full is not None else h.ds), h.path
    rows, cols, ps, n_frames = _image_matrix(ds, src)
    sop_uid = _str(ds, "SOPInstanceUID", src)
    thickness = _float(ds, "SliceThickness", src)
    slope, intercept, factor, sc = _scaling(ds, src, modality, use_vendor_scale)

    if modality == "NM":
        positions, row, col, thickness = _nm_geometry(ds, src, n_frames, thickness, sc.warnings)
    else:
        if n_frames != 1:
            raise InputError(f"{modality} file with {n_frames} frames: only single-frame {modality} images are supported",
                             source=src, field="NumberOfFrames")
        ipp = _floats(ds, "ImagePositionPatient", src, 3, required=True)
        iop = _floats(ds, "ImageOrientationPatient", src, 6, required=True)
        assert ipp is not None and iop is not None
        row, col = _check_orientation(iop, src, "ImageOrientationPatient")
        positions = [ipp]

    values = None
    if full is not None:
        pix = _decode_pixels(full, src, n_frames, rows, cols)
        values = (pix.astype(np.float64) * slope + intercept) * factor
    out = [
        _Slice(src, sop_uid, np.asarray(p, dtype=np.float64), row, col, ps, (rows, cols), thickness,
               None if values is None else values[f])
        for f, p in enumerate(positions)
    ]
    return out, sc


def _nm_geometry(ds: Dataset, src: str, n_frames: int, thickness: float | None, notes: list[str]):
    image_type = _str(ds, "ImageType", src)
    if image_type is None:
        notes.append(f"{src}: NM Image Type missing; assumed RECON TOMO")
    else:
        parts = [p.strip().upper() for p in image_type.split("\\")]
        kind = parts[2] if len(parts) > 2 else ""
        if kind != "RECON TOMO":
            raise InputError(
                f"NM Image Type {image_type!r}: only reconstructed tomograms (value 3 'RECON TOMO', PS3.3 C.8.4.9 NM Image module) "
                "are supported (not projections, planar, gated or dynamic images)",
                source=src,
                field="ImageType",
            )
    # geometry: Detector Information Sequence (NM Detector module) and/or top level
    item, n_items = _seq_item(ds, "DetectorInformationSequence", src)
    d_ipp = d_iop = None
    if item is not None:
        d_ipp = _floats(item, "ImagePositionPatient", src, 3)
        d_iop = _floats(item, "ImageOrientationPatient", src, 6)
        if n_items > 1:
            seq = _raw(ds, "DetectorInformationSequence", src)
            for k, it in enumerate(seq):
                o_ipp = _floats(it, "ImagePositionPatient", src, 3)
                o_iop = _floats(it, "ImageOrientationPatient", src, 6)
                for a, b, kw in ((d_ipp, o_ipp, "ImagePositionPatient"), (d_iop, o_iop, "ImageOrientationPatient")):
                    if (a is None) != (b is None) or (a is not None and np.max(np.abs(a - b)) > ORIENTATION_TOLERANCE):
                        raise InputError(f"Detector Information Sequence items disagree on {kw}", source=src,
                                         field=f"DetectorInformationSequence[{k}].{kw}")
    t_ipp = _floats(ds, "ImagePositionPatient", src, 3)
    t_iop = _floats(ds, "ImageOrientationPatient", src, 6)
    for a, b, kw, tol in ((d_ipp, t_ipp, "ImagePositionPatient", SLICE_TOLERANCE_MM),
                          (d_iop, t_iop, "ImageOrientationPatient", ORIENTATION_TOLERANCE)):
        if a is not None and b is not None and np.max(np.abs(a - b)) > tol:
            raise InputError(
                f"{kw} in the Detector Information Sequence {a.tolist()} and at the top level {b.tolist()} disagree",
                source=src,
                field=kw,
            )
    ipp = d_ipp if d_ipp is not None else t_ipp
    iop = d_iop if d_iop is not None else t_iop
    if ipp is None or iop is None:
        raise InputError(
            "NM reconstruction without Image Position/Orientation (Patient) in the Detector Information Sequence "
            "(0054,0022) or at the top level: no geometry",
            source=src,
            field="DetectorInformationSequence",
        )
    row, col = _check_orientation(iop, src, "ImageOrientationPatient")
    n = np.cross(row, col)
    # frames
    pointers = _raw(ds, "FrameIncrementPointer", src)
    if _is_empty(pointers):
        pointers = []
    elif not isinstance(pointers, (list, tuple)) and type(pointers).__name__ != "MultiValue":
        pointers = [pointers]
    slice_index = np.arange(1, n_frames + 1, dtype=np.float64)
    for p in pointers:
        try:
            tag = int(p)
            kw = pydicom.datadict.keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        except Exception:  # noqa: BLE001
            raise InputError(f"Frame Increment Pointer holds {p!r}, not a tag", source=src, field="FrameIncrementPointer") from None
        vec = _floats(ds, kw, src, None) if kw and not kw.startswith("(") else None
        if vec is None:
            raise InputError(f"Frame Increment Pointer names {kw}, which is missing", source=src, field=kw)
        if vec.size != n_frames:
            raise InputError(f"{kw} has {vec.size} values for {n_frames} frames", source=src, field=kw)
        if tag == _SLICE_VECTOR:
            slice_index = vec
        elif np.unique(vec).size > 1:
            raise InputError(
                f"{kw} takes {np.unique(vec).size} values: several energy windows, detectors, gates or time slots "
                "in one object are not supported (only one reconstructed volume)",
                source=src,
                field=kw,
            )
    n_slices = _int(ds, "NumberOfSlices", src)
    if n_slices is not None and n_slices != np.unique(slice_index).size:
        raise InputError(f"Number of Slices is {n_slices} but the frames hold {np.unique(slice_index).size} slices",
                         source=src, field="NumberOfSlices")
    spacing = _float(ds, "SpacingBetweenSlices", src)
    if spacing is None and n_frames > 1:
        if thickness is None:
            raise InputError("multi-frame NM without Spacing Between Slices (0018,0088) or Slice Thickness: "
                             "slice positions unknown", source=src, field="SpacingBetweenSlices")
        notes.append(f"{src}: Spacing Between Slices missing; Slice Thickness {thickness} mm used as slice spacing")
        spacing = thickness
    if spacing is not None and spacing < 0:
        notes.append(f"{src}: negative Spacing Between Slices {spacing} (not allowed by PS3.3); slices taken along -n")
    if spacing == 0 and n_frames > 1:
        raise InputError("Spacing Between Slices is 0", source=src, field="SpacingBetweenSlices")
    step = spacing if spacing is not None else 0.0
    positions = [ipp + (k - 1.0) * step * n for k in slice_index]
    if thickness is None and spacing is not None:
        thickness = abs(spacing)
    return positions, row, col, thickness


def _assemble(slices: list[_Slice], label: str, notes: list[str]) -> tuple[list[_Slice], tuple[float, float, float], np.ndarray]:
    """Sort and check the slices; return (sorted slices, spacing (dx, dy, dz), direction)."""
    ref = slices[0]
    for kw, get, tol in (("ImageOrientationPatient", lambda s: np.concatenate([s.row, s.col]), ORIENTATION_TOLERANCE),
                         ("PixelSpacing", lambda s: s.pixel_spacing, PIXEL_SPACING_TOLERANCE_MM)):
        bad = [s for s in slices if np.max(np.abs(get(s) - get(ref))) > tol]
        if bad:
            names = sorted({s.path for s in bad})
            raise InputError(
                f"{kw} differs within the series: {get(ref).tolist()} in {ref.path} but {get(bad[0]).tolist()} in "
                f"{len(names)} file(s): {', '.join(names[:5])}",
                source=bad[0].path,
                field=kw,
            )
    bad = [s for s in slices if s.shape != ref.shape]
    if bad:
        raise InputError(f"image size {bad[0].shape} differs from {ref.shape} in {ref.path}", source=bad[0].path,
                         field="Rows")
    n = np.cross(ref.row, ref.col)
    d = np.array([float(s.position @ n) for s in slices])
    order = np.argsort(d, kind="stable")
    slices = [slices[i] for i in order]
    d = d[order]
    dy, dx = float(ref.pixel_spacing[0]), float(ref.pixel_spacing[1])

    # duplicates (same position): copies of one SOP instance are dropped, anything else is an error
    keep: list[_Slice] = [slices[0]]
    kept_d = [d[0]]
    for s, dk in zip(slices[1:], d[1:]):
        prev = keep[-1]
        if abs(dk - kept_d[-1]) <= SLICE_TOLERANCE_MM:
            same = s.sop_uid is not None and s.sop_uid == prev.sop_uid and (
                s.pixels is None or prev.pixels is None or np.array_equal(s.pixels, prev.pixels))
            if same:
                notes.append(f"duplicate copy of SOP instance {s.sop_uid} ignored: {s.path}")
                continue
            raise InputError(
                f"two images at the same position ({dk:.4f} mm along the slice normal): {prev.path} and {s.path}; "
                "overlapping beds, several time frames/gates or several reconstructions in one series are not "
                "supported (select or combine them first)",
                source=s.path,
                field="ImagePositionPatient",
            )
        keep.append(s)
        kept_d.append(dk)
    slices, d = keep, np.array(kept_d)

    if len(slices) == 1:
        dz = slices[0].thickness
        if dz is None or not dz > 0:
            raise InputError("single-slice series without a positive Slice Thickness: slice spacing unknown",
                             source=slices[0].path, field="SliceThickness")
        return slices, (dx, dy, float(dz)), np.column_stack([ref.row, ref.col, n])

    diffs = np.diff(d)
    dz = float(np.median(diffs))
    tol = max(SLICE_TOLERANCE_MM, SLICE_TOLERANCE_FRACTION * dz)
    bad_idx = np.nonzero(np.abs(diffs - dz) > tol)[0]
    if bad_idx.size:
        parts = []
        for i in bad_idx[:5]:
            g = diffs[i]
            missing = int(round(g / dz)) - 1
            hint = f" (about {missing} missing slice(s))" if missing >= 1 and abs(g - (missing + 1) * dz) <= tol else ""
            parts.append(f"{g:.4f} mm between {slices[i].path} and {slices[i + 1].path}{hint}")
        culprit = slices[bad_idx[0] + 1].path
        if bad_idx.size >= 2 and bad_idx[1] == bad_idx[0] + 1:
            culprit = slices[bad_idx[1]].path  # a misplaced slice makes two neighbouring gaps wrong
        raise InputError(
            f"slices are not equally spaced (median {dz:.4f} mm, tolerance {tol:.4f} mm): " + "; ".join(parts)
            + (f"; and {bad_idx.size - 5} more" if bad_idx.size > 5 else ""),
            source=culprit,
            field="ImagePositionPatient",
        )
    p0 = slices[0].position
    off = np.array([np.linalg.norm((s.position - p0) - ((s.position - p0) @ n) * n) for s in slices])
    in_tol = max(SLICE_TOLERANCE_MM, SLICE_TOLERANCE_FRACTION * min(dx, dy))
    if np.max(off) > in_tol:
        k = int(np.argmax(off))
        raise InputError(
            f"slice centres do not lie on a line along the slice normal ({off[k]:.4f} mm off in {slices[k].path}): "
            "gantry tilt or a sheared stack is not supported (PS3.3 C.7.6.2.1.1)",
            source=slices[k].path,
            field="ImagePositionPatient",
        )
    return slices, (dx, dy, dz), np.column_stack([ref.row, ref.col, n])


# ---------------------------------------------------------------------------------------------
# times


def _pair(ds: Dataset, src: str, dkw: str, tkw: str) -> datetime | None:
    ds_, ts_ = _str(ds, dkw, src), _str(ds, tkw, src)
    if ds_ is None or ts_ is None:
        return None
    return datetime.combine(_parse_da(ds_, src, dkw), _parse_tm(ts_, src, tkw))


def _dt(ds: Dataset, src: str, kw: str) -> datetime | None:
    s = _str(ds, kw, src)
    return None if s is None else _parse_dt(s, src, kw)


_ACQ_SOURCES: tuple[tuple[str, ...], ...] = (
    ("AcquisitionDate", "AcquisitionTime"),
    ("AcquisitionDateTime",),
    ("SeriesDate", "SeriesTime"),
    ("ContentDate", "ContentTime"),
)


def _collect(headers: list[_Header], source: tuple[str, ...]) -> list[tuple[datetime, str]]:
    out = []
    for h in headers:
        t = _pair(h.ds, h.path, *source) if len(source) == 2 else _dt(h.ds, h.path, source[0])
        if t is not None:
            out.append((t, h.path))
    return out


def _radiopharm(h: _Header, modality: str, notes: list[str]) -> dict[str, Any]:
    item, n_items = _seq_item(h.ds, "RadiopharmaceuticalInformationSequence", h.path)
    if item is None:
        return {}
    src = h.path
    if n_items > 1 and (msg := f"Radiopharmaceutical Information Sequence has {n_items} items; the first is used") not in notes:
        notes.append(msg)
    out: dict[str, Any] = {}
    dose = _float(item, "RadionuclideTotalDose", src)
    if dose is not None and dose < 0:
        raise InputError(f"Radionuclide Total Dose {dose:g} is negative", source=src, field="RadionuclideTotalDose")
    if dose == 0:
        if (msg := "Radionuclide Total Dose is 0 (not recorded?): injected activity left empty") not in notes:
            notes.append(msg)
        dose = None
    if dose is not None:
        # PET Isotope module (C.8.9.2): Bq. NM Isotope module (C.8.4.10): MBq.
        out["injected_activity_bq"] = dose * 1e6 if modality == "NM" else dose
        if modality == "NM" and dose > 1e5:
            notes.append(f"NM Radionuclide Total Dose {dose:g} read as MBq (PS3.3 C.8.4.10) is implausibly large; "
                         "the writer may have used Bq")
    out["start_dt"] = _dt(item, src, "RadiopharmaceuticalStartDateTime")
    if out["start_dt"] is None:
        st = _str(item, "RadiopharmaceuticalStartTime", src)
        sd = _str(h.ds, "SeriesDate", src) or _str(h.ds, "AcquisitionDate", src)
        if st is not None and sd is not None:
            out["start_dt"] = datetime.combine(_parse_da(sd, src, "SeriesDate"),
                                               _parse_tm(st, src, "RadiopharmaceuticalStartTime"))
            msg = ("injection time from Radiopharmaceutical Start Time on the Series Date (no start DateTime); "
                   "check it when the injection was on an earlier day")
            if msg not in notes:
                notes.append(msg)
    out["half_life_s"] = _float(item, "RadionuclideHalfLife", src)
    if out["half_life_s"] is not None and not out["half_life_s"] > 0:
        raise InputError(f"Radionuclide Half Life {out['half_life_s']:g} s must be > 0", source=src,
                         field="RadionuclideHalfLife")
    out["radiopharmaceutical"] = _str(item, "Radiopharmaceutical", src)
    code, _ = _seq_item(item, "RadionuclideCodeSequence", src)
    out["radionuclide"] = None if code is None else (_str(code, "CodeMeaning", src) or _str(code, "CodeValue", src))
    return out


def _times(headers, modality, tz, time_override, notes, radio):
    """(reference time, source, tz source, acquisition start, injection time, decay correction)."""
    # time zone from the files
    offsets: dict[timedelta, list[str]] = {}
    for h in headers:
        s = _str(h.ds, "TimezoneOffsetFromUTC", h.path)
        if s is not None:
            z = _parse_offset(s, h.path, "TimezoneOffsetFromUTC")
            offsets.setdefault(z.utcoffset(None), []).append(h.path)
    if len(offsets) > 1:
        parts = "; ".join(f"{k}: {v[0]}" for k, v in offsets.items())
        raise InputError(f"files disagree on Timezone Offset From UTC ({parts})", source=min(offsets.values(), key=len)[0],
                         field="TimezoneOffsetFromUTC")
    user_zone = _zone(tz)
    if offsets:
        file_zone: tzinfo | None = timezone(next(iter(offsets)))
        tz_source = "TimezoneOffsetFromUTC (0008,0201)"
        if sum(len(v) for v in offsets.values()) < len(headers):
            notes.append("Timezone Offset From UTC is missing in some files; the others' value is used")
    else:
        file_zone, tz_source = user_zone, ("tz argument" if user_zone is not None else "")

    def aware(t: datetime, what: str, src: str) -> datetime:
        if t.tzinfo is not None:
            return t
        if file_zone is None:
            raise InputError(
                f"{what} {t.isoformat()} has no time zone: the files carry no Timezone Offset From UTC (0008,0201); "
                "pass tz= (e.g. 'Europe/London') or time_override= (an aware datetime) -- a time zone is never guessed",
                source=src,
                field="tz",
            )
        out = _localize(t, file_zone, what)
        if offsets and user_zone is not None:
            try:
                alt = _localize(t, user_zone, what)
                if alt.utcoffset() != out.utcoffset():
                    notes.append(f"tz argument {user_zone} ignored: the files' Timezone Offset From UTC is {out.utcoffset()}")
            except InputError:
                pass
        return out

    decay = None
    if modality == "PT":
        decay = _agree(headers, "DecayCorrection", "Decay Correction values", required=False)
        decay = decay.upper() if decay else None

    def earliest(sources) -> tuple[datetime | None, str | None, str | None]:
        for srcs in sources:
            vals = _collect(headers, srcs)
            if vals:
                t, f = min(((aware(t, "/".join(srcs), f), f) for t, f in vals), key=lambda x: x[0])
                return t, "/".join(srcs), f
        return None, None, None

    injection = None
    if radio.get("start_dt") is not None:
        if file_zone is None and radio["start_dt"].tzinfo is None:
            notes.append("injection time present but no time zone known: injection_time left empty")
        else:
            injection = aware(radio["start_dt"], "Radiopharmaceutical Start DateTime", radio["path"])

    if time_override is None:
        acq_start = earliest(_ACQ_SOURCES[:2])[0]
    else:
        try:
            acq_start = earliest(_ACQ_SOURCES[:2])[0]
        except InputError:
            acq_start = None

    if time_override is not None:
        if not isinstance(time_override, datetime) or time_override.tzinfo is None or time_override.utcoffset() is None:
            raise InputError(f"time_override must be a timezone-aware datetime, got {time_override!r}", field="time_override")
        return time_override, "time_override", tz_source or "time_override", acq_start, injection, decay

    if modality == "PT" and decay == "START":
        vals = _collect(headers, ("SeriesDate", "SeriesTime"))
        missing = [h.path for h in headers if h.path not in {f for _, f in vals}]
        if missing:
            raise InputError(
                "PET Decay Correction is START but Series Date/Time (the decay reference, PS3.3 C.8.9.1) is missing; "
                "give time_override",
                source=missing[0],
                field="SeriesTime",
            )
        distinct = {t for t, _ in vals}
        if len(distinct) > 1:
            raise InputError(f"Series Date/Time differs between files of the series ({sorted(distinct)[:3]} ...)",
                             source=vals[0][1], field="SeriesTime")
        t, f = vals[0]
        return aware(t, "SeriesDate/SeriesTime", f), "SeriesDate/SeriesTime (PET Decay Correction START)", tz_source, acq_start, injection, decay
    if modality == "PT" and decay == "ADMIN":
        if injection is None:
            raise InputError(
                "PET Decay Correction is ADMIN but the Radiopharmaceutical Start DateTime (the decay reference) is "
                "missing or has no time zone; give tz or time_override",
                source=headers[0].path,
                field="RadiopharmaceuticalStartDateTime",
            )
        return injection, "RadiopharmaceuticalStartDateTime (PET Decay Correction ADMIN)", tz_source, acq_start, injection, decay
    if modality == "PT":
        if decay == "NONE":
            notes.append("PET values are not decay corrected (Decay Correction NONE): reference = acquisition start")
        else:
            notes.append(f"PET Decay Correction is {decay!r}: reference time from acquisition/series/content times")
    t, srcname, f = earliest(_ACQ_SOURCES)
    if t is None:
        raise InputError(
            "no acquisition, series or content date/time in the series: give time_override (an aware datetime)",
            source=headers[0].path,
            field="AcquisitionTime",
        )
    return t, srcname or "", tz_source, acq_start, injection, decay


# ---------------------------------------------------------------------------------------------
# main entry points


def _read_impl(directory_or_files, modality, series_uid, time_override, tz, use_vendor_scale, pixels):
    headers, label, notes = _scan(directory_or_files)
    headers = _select(headers, label, modality, series_uid)
    mod = headers[0].modality
    _agree(headers, "Modality", "modalities", required=True)
    if mod not in _MODALITIES:
        raise InputError(f"modality {mod!r} is not supported (only {', '.join(_MODALITIES)})", source=headers[0].path,
                         field="Modality")
    patient = _agree(headers, "PatientID", "patients (Patient ID)", required=False) or ""
    study = _agree(headers, "StudyInstanceUID", "studies (Study Instance UID)", required=False) or ""
    for_uid = _agree(headers, "FrameOfReferenceUID", "frames of reference", required=False)
    if mod == "PT":
        _agree(headers, "Units", "PET Units", required=True)
        stype = _str(headers[0].ds, "SeriesType", headers[0].path)
        if stype and stype.split("\\")[0].strip().upper() in ("DYNAMIC", "GATED"):
            raise InputError(f"PET Series Type {stype!r}: dynamic and gated series are not supported",
                             source=headers[0].path, field="SeriesType")

    slices: list[_Slice] = []
    scalings: dict[str, list[str]] = {}
    sc_first: _Scaling | None = None
    for h in headers:
        full = _load(h.path, pixels=True) if pixels else None
        if full is not None and _str(full, "SeriesInstanceUID", h.path) != h.series_uid:
            raise InputError("file changed while reading", source=h.path)
        s, sc = _file_slices(h, full, mod, use_vendor_scale)
        slices.extend(s)
        scalings.setdefault(sc.unit, []).append(h.path)
        sc_first = sc_first or sc
        for w in sc.warnings:
            if w not in notes:
                notes.append(w)
    if len(scalings) > 1:
        parts = "; ".join(f"{u!r}: {fs[0]}" for u, fs in scalings.items())
        raise InputError(f"files of the series give different value units ({parts})",
                         source=min(scalings.values(), key=len)[0], field="Units")
    assert sc_first is not None
    slices, spacing, direction = _assemble(slices, label, notes)
    if mod == "PT":
        ns = {(_int(h.ds, "NumberOfSlices", h.path)) for h in headers} - {None}
        if len(ns) > 1:
            raise InputError(f"Number of Slices differs between files: {sorted(ns)}", source=headers[0].path,
                             field="NumberOfSlices")
        if ns and next(iter(ns)) != len(slices):
            expected = next(iter(ns))
            raise InputError(
                f"the series has {len(slices)} slice(s) but Number of Slices (0054,0081) says {expected}: files "
                "missing (e.g. at either end) or extra",
                source=slices[0].path if len(slices) < expected else label,
                field="NumberOfSlices",
            )

    # administration and times
    # every file's sequence is parsed (malformed values anywhere are errors); the first one is used
    radio: dict[str, Any] = {}
    for h in headers:
        r = _radiopharm(h, mod, notes)
        if r and not radio:
            radio = {**r, "path": h.path}
        elif r:
            for key in ("injected_activity_bq", "start_dt"):
                if r.get(key) != radio.get(key):
                    msg = f"Radiopharmaceutical Information differs between files ({key}); values from {radio['path']} used"
                    if msg not in notes:
                        notes.append(msg)
    t, t_src, tz_src, acq_start, injection, decay = _times(headers, mod, tz, time_override, notes, radio)

    durations: set[float] = set()
    for h in headers:
        v = _float(h.ds, "ActualFrameDuration", h.path)
        if v is not None and v < 0:
            raise InputError(f"Actual Frame Duration {v:g} ms is negative", source=h.path, field="ActualFrameDuration")
        if v is not None:
            durations.add(v)
    frame_ms = next(iter(durations)) if len(durations) == 1 else None
    if len(durations) > 1:
        notes.append(f"Actual Frame Duration differs between files ({min(durations):g} to {max(durations):g} ms)")
    corrected = _str(headers[0].ds, "CorrectedImage", headers[0].path) if mod == "PT" else None
    description = headers[0].description
    files = tuple(dict.fromkeys(s.path for s in slices))
    manufacturer = _str(headers[0].ds, "Manufacturer", headers[0].path) or ""

    volume = None
    if pixels:
        array = np.stack([s.pixels for s in slices], axis=0)
        volume = Volume(
            array=array,
            spacing_mm=spacing,
            origin_mm=tuple(slices[0].position),
            direction=direction,
            unit=sc_first.unit,
            acquisition_time=t,
            modality=mod,
            source_files=files,
            description=description,
        )
    info = SeriesInfo(
        series_instance_uid=headers[0].series_uid,
        study_instance_uid=study,
        patient_id=patient,
        frame_of_reference_uid=for_uid,
        modality=mod,
        series_description=description,
        manufacturer=manufacturer,
        files=files,
        unit=sc_first.unit,
        units_attribute=sc_first.units_attribute,
        value_scaling=sc_first.description,
        acquisition_time=t,
        time_source=t_src,
        timezone_source=tz_src,
        acquisition_start=acq_start,
        decay_correction=decay,
        corrected_image=tuple(x for x in (corrected or "").split("\\") if x),
        frame_duration_ms=frame_ms,
        injected_activity_bq=radio.get("injected_activity_bq"),
        injection_time=injection,
        radiopharmaceutical=radio.get("radiopharmaceutical"),
        radionuclide=radio.get("radionuclide"),
        radionuclide_half_life_s=radio.get("half_life_s"),
        warnings=tuple(notes),
    )
    return volume, info


def read_series_with_info(
    directory_or_files: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    modality: str | None = None,
    series_uid: str | None = None,
    time_override: datetime | None = None,
    tz: tzinfo | str | None = None,
    use_vendor_scale: bool = True,
) -> tuple[Volume, SeriesInfo]:
    """Read one DICOM image series into a :class:`Volume` and its :class:`SeriesInfo`.

    Parameters
    ----------
    directory_or_files
        A folder (searched recursively), one file, or a list of files.
    modality
        ``"NM"``, ``"PT"`` or ``"CT"``: only series of that modality are considered.
    series_uid
        Series Instance UID to read when the folder holds several series.
    time_override
        Timezone-aware reference time that replaces the one from the files (recorded in
        :attr:`SeriesInfo.time_source`).
    tz
        Time zone (``tzinfo`` or IANA name) of the files' local dates and times when they carry no
        Timezone Offset From UTC.
    use_vendor_scale
        Apply the Philips PET activity concentration factor for Units CNTS (module docstring).

    Raises
    ------
    InputError
        With the offending file in ``source`` (or the folder for selection errors): unreadable
        or truncated files, several series, mixed patients/studies, inconsistent geometry,
        missing time zone... (module docstring).
    """
    vol, info = _read_impl(directory_or_files, modality, series_uid, time_override, tz, use_vendor_scale, True)
    assert vol is not None
    return vol, info


def read_series(
    directory_or_files: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    modality: str | None = None,
    series_uid: str | None = None,
    time_override: datetime | None = None,
    tz: tzinfo | str | None = None,
    use_vendor_scale: bool = True,
) -> Volume:
    """Read one DICOM image series into a :class:`Volume` (see :func:`read_series_with_info`)."""
    return read_series_with_info(directory_or_files, modality=modality, series_uid=series_uid,
                                 time_override=time_override, tz=tz, use_vendor_scale=use_vendor_scale)[0]


def read_series_info(
    directory_or_files: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    modality: str | None = None,
    series_uid: str | None = None,
    time_override: datetime | None = None,
    tz: tzinfo | str | None = None,
    use_vendor_scale: bool = True,
) -> SeriesInfo:
    """:class:`SeriesInfo` of one series from the headers only (pixel data are not decoded; the
    geometry checks still run)."""
    return _read_impl(directory_or_files, modality, series_uid, time_override, tz, use_vendor_scale, False)[1]
