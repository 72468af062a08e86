"""NIfTI-1/2 volumes: reading into :class:`~mrtdose.imaging.volume.Volume` and writing to bytes.

Coordinate conversion
---------------------
NIfTI world coordinates are RAS+: +x toward the subject's Right, +y Anterior, +z Superior
(NIfTI-1 specification, ``nifti1.h``, "3D IMAGE (VOLUME) ORIENTATION AND LOCATION IN SPACE").
DICOM patient coordinates are LPS+ (PS3.3 C.7.6.2.1.1). The two differ by a half-turn about z::

    x_LPS = -x_RAS,   y_LPS = -y_RAS,   z_LPS = z_RAS
    A_LPS = diag(-1, -1, 1, 1) @ A_RAS          (and back: the same matrix, its own inverse)

where ``A`` maps the NIfTI voxel index ``(i, j, k, 1)`` to world mm. The NIfTI data array is
stored with ``i`` fastest (nibabel returns it indexed ``[i, j, k]``); a :class:`Volume` is indexed
``[k, j, i]``, so the array is transposed on reading and writing. ``i, j, k`` keep their meaning:
voxel ``(i, j, k)`` of the file is voxel ``(i, j, k)`` of the volume.

Which transform (NIfTI-1 spec, "METHOD 2" qform and "METHOD 3" sform): the sform if
``sform_code > 0``, else the qform if ``qform_code > 0`` (nibabel's order of preference). A file
with both codes 0 (spec "METHOD 1", Analyze compatibility) has no defined orientation and is
refused rather than guessed. The matrix must be finite, and its columns orthogonal (a sheared
sform cannot be a DICOM grid). Spatial units (``xyzt_units``) of metres or micrometres are
converted to mm; "unknown" is taken as mm, the universal practice (nibabel, ITK).

On writing, sform and qform are both set, with code 1 (``NIFTI_XFORM_SCANNER_ANAT``: scanner
coordinates, which DICOM patient coordinates are), units mm and s.

Precision: NIfTI stores the transforms as float32, so a coordinate ``c`` comes back within
``2**-24 * |c|`` (1.5e-5 mm at 250 mm); values that are float32-representable (e.g. -249.5,
2.34375) round-trip exactly. Voxel values keep their dtype (bool is stored as uint8).

Sidecar
-------
NIfTI has no field for the unit of the voxel values nor for a time zone, so a JSON sidecar with
the same name (``image.nii.gz`` -> ``image.json``) carries them::

    {"unit": "Bq/mL", "acquisition_time": "2026-01-06T10:00:00+00:00", "modality": "NM",
     "description": "SPECT/CT day 1"}

``unit`` is required (in the sidecar or as an argument); ``acquisition_time`` is optional, and
when present must be ISO 8601 *with* a UTC offset: a naive time is refused, never guessed.

The same sidecar convention serves MetaImage files (``image.mhd``/``image.mha`` -> ``image.json``,
:mod:`mrtdose.imaging.metaimage`). Further optional keys, read by :func:`sidecar_metadata` for
images that stand in for a DICOM series (the imaging block of a case):

``acquisition_duration_s``
    Total acquisition time (s) of an image in counts, in the calibration's convention (the
    ``T`` of :func:`mrtdose.imaging.calibration.counts_to_activity_concentration`).
``patient_id``, ``study_instance_uid``, ``frame_of_reference_uid``
    Identity, when known, so that a CT and a SPECT from different patients or sessions are
    refused (as DICOM headers allow).
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from mrtdose.errors import InputError
from mrtdose.imaging.volume import ORTHONORMAL_TOLERANCE, Volume

#: RAS <-> LPS (a half-turn about z); its own inverse. NIfTI-1 spec vs DICOM PS3.3 C.7.6.2.1.1.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: NIfTI ``xyzt_units`` spatial unit -> mm (nifti1.h: NIFTI_UNITS_METER, _MM, _MICRON).
_MM_PER_UNIT = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}

#: Exceptions nibabel (and the gzip/zlib layers under it) raise on unreadable or corrupt files.
_READ_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile)

_SIDECAR_KEYS = ("unit", "acquisition_time", "modality", "description", "acquisition_duration_s", "patient_id",
                 "study_instance_uid", "frame_of_reference_uid")

#: File-name suffixes that have a sidecar ``<stem>.json`` (NIfTI, Analyze pair, MetaImage).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".hdr.gz", ".hdr", ".img.gz", ".img", ".mhd", ".mha")


def sidecar_path_for(path: str | Path) -> Path:
    """The sidecar JSON path of an image file: ``x.nii.gz``/``x.nii``/``x.hdr``/``x.mhd``/``x.mha``
    -> ``x.json``."""
    p = Path(path)
    name = p.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_name(name + ".json")


def read_sidecar(path: Path, sidecar: str | Path | Mapping[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """Sidecar JSON contents and where they came from (``None``: no sidecar).

    ``sidecar``: a mapping (used as is), a path (must exist), or ``None`` (the file
    ``sidecar_path_for(path)`` if it exists, else no sidecar).
    """
    if isinstance(sidecar, Mapping):
        return dict(sidecar), "sidecar"
    if sidecar is None:
        sp = sidecar_path_for(path)
        if not sp.exists():
            return {}, None
    else:
        sp = Path(sidecar)
        if not sp.exists():
            raise InputError("sidecar JSON file not found", source=str(sp))
    try:
        doc = json.loads(sp.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read sidecar: {exc.strerror}", source=str(sp)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"sidecar is not valid JSON: {exc}", source=str(sp)) from None
    if not isinstance(doc, dict):
        raise InputError("sidecar must be a JSON object", source=str(sp))
    return doc, str(sp)


def parse_aware_time(value: Any, *, source: str | None, field: str) -> datetime:
    """An ISO 8601 date-time *with* UTC offset, e.g. ``2026-01-06T10:00:00+01:00`` or ``...Z``."""
    if not isinstance(value, str):
        raise InputError(f"must be an ISO 8601 date-time string, got {value!r}", source=source, field=field)
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"not an ISO 8601 date-time: {value!r}", source=source, field=field) from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise InputError(
            f"{value!r} has no UTC offset; give one (e.g. '+00:00'): a naive time is never guessed",
            source=source,
            field=field,
        )
    return t


def sidecar_text(doc: Mapping[str, Any], key: str, source: str | None) -> str | None:
    """``doc[key]`` as a stripped non-empty string, or ``None`` when absent."""
    v = doc.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip():
        raise InputError(f"must be a non-empty string, got {v!r}", source=source, field=key)
    return v.strip()



def sidecar_positive(doc: Mapping[str, Any], key: str, source: str | None) -> float | None:
    """``doc[key]`` as a positive finite number, or ``None`` when absent."""
    v = doc.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
        raise InputError(f"must be a positive number, got {v!r}", source=source, field=key)
    return float(v)


@dataclass(frozen=True)
class SidecarMetadata:
    """The optional acquisition and identity keys of a sidecar (module docstring); ``source`` is
    the sidecar file (``None``: no sidecar)."""

    source: str | None
    acquisition_duration_s: float | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None


def sidecar_metadata(path: str | Path, sidecar: str | Path | Mapping[str, Any] | None = None) -> SidecarMetadata:
    """The optional keys of the sidecar of ``path`` (see :func:`read_sidecar` for ``sidecar``).

    Raises :class:`InputError` naming the sidecar and key for a value of the wrong type.
    """
    doc, src = read_sidecar(Path(path), sidecar)
    return SidecarMetadata(
        source=src,
        acquisition_duration_s=sidecar_positive(doc, "acquisition_duration_s", src),
        patient_id=sidecar_text(doc, "patient_id", src),
        study_instance_uid=sidecar_text(doc, "study_instance_uid", src),
        frame_of_reference_uid=sidecar_text(doc, "frame_of_reference_uid", src),
    )


def load_nifti_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray, Any]:
    """Low-level read: ``(array[k, j, i], A_LPS 4x4 in mm, header)``; raises :class:`InputError`.

    Used by :func:`read_nifti` and by the kernel reader, which needs no unit or time.
    """
    p = Path(path)
    src = str(p)
    if not p.exists():
        raise InputError("file not found", source=src)
    try:
        img = nib.load(src, mmap=False)
    except _READ_ERRORS as exc:
        raise InputError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})", source=src) from None
    if not isinstance(img, nib.Nifti1Pair):  # Nifti1Image, Nifti2Image and the .hdr/.img pairs
        raise InputError(f"not a NIfTI-1/2 image (nibabel read it as {type(img).__name__})", source=src)
    try:
        data = np.asanyarray(img.dataobj)
    except _READ_ERRORS as exc:
        raise InputError(f"image data are corrupt or truncated ({type(exc).__name__}: {exc})", source=src) from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"image must be 3D, got shape {tuple(img.shape)}", source=src)
    hdr = img.header
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    with np.errstate(all="ignore"):
        if sform_code > 0:
            affine, which = np.asarray(hdr.get_sform(), dtype=np.float64), "sform"
        elif qform_code > 0:
            if not np.all(np.isfinite([hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"]])):
                raise InputError("qform quaternion is not finite", source=src, field="qform")
            affine, which = np.asarray(hdr.get_qform(), dtype=np.float64), "qform"
        else:
            raise InputError(
                "no orientation: qform_code and sform_code are both 0 (NIfTI 'method 1'), so the position of the "
                "image in the patient is undefined; refusing to guess",
                source=src,
            )
    if not np.all(np.isfinite(affine)):
        raise InputError(f"the {which} transform is not finite: {affine[:3].tolist()}", source=src, field=which)
    space_unit = hdr.get_xyzt_units()[0]
    scale = _MM_PER_UNIT.get(space_unit)
    if scale is None:  # pragma: no cover - nibabel only reports the four above for spatial units
        raise InputError(f"unsupported spatial unit {space_unit!r}", source=src, field="xyzt_units")
    affine = affine.copy()
    affine[:3, :] *= scale
    lps = RAS_TO_LPS @ affine
    m = lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"the {which} transform has a zero-length axis (spacing {spacing.tolist()})", source=src, field=which)
    d = m / spacing
    dev = float(np.max(np.abs(d.T @ d - np.eye(3))))
    if dev > ORTHONORMAL_TOLERANCE:
        raise InputError(
            f"the {which} transform is sheared (max |D^T D - I| = {dev:.3g}); only orthogonal grids are supported",
            source=src,
            field=which,
        )
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))), lps, hdr


def read_nifti(
    path: str | Path,
    sidecar: str | Path | Mapping[str, Any] | None = None,
    *,
    unit: str | None = None,
    modality: str | None = None,
) -> Volume:
    """Read a NIfTI-1/2 file (``.nii``, ``.nii.gz``) into a :class:`Volume` (LPS, ``[k, j, i]``).

    Parameters
    ----------
    path
        The image file.
    sidecar
        Sidecar JSON path, or its contents as a mapping; ``None`` uses ``sidecar_path_for(path)``
        if that file exists.
    unit, modality
        Given here when there is no sidecar (or it lacks them). A ``unit`` that contradicts the
        sidecar's is an error. Without any unit the read fails: the unit is never assumed.

    Raises
    ------
    InputError
        Naming the file: unreadable, corrupt or truncated; not 3D; no, non-finite or sheared
        orientation; non-finite voxel values; missing unit; bad sidecar.
    """
    p = Path(path)
    array, lps, hdr = load_nifti_arrays(p)
    raw = hdr["descrip"].item()
    header_descrip = raw.decode("latin-1", "replace").strip("\x00 ") if isinstance(raw, bytes) else str(raw)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return volume_with_sidecar(
        array,
        spacing_mm=tuple(spacing),
        origin_mm=tuple(lps[:3, 3]),
        direction=lps[:3, :3] / spacing,
        path=p,
        sidecar=sidecar,
        unit=unit,
        modality=modality,
        header_description=header_descrip,
    )


def volume_with_sidecar(
    array: np.ndarray,
    *,
    spacing_mm: tuple[float, float, float],
    origin_mm: tuple[float, float, float],
    direction: np.ndarray,
    path: Path,
    sidecar: str | Path | Mapping[str, Any] | None,
    unit: str | None,
    modality: str | None,
    header_description: str = "",
    data_files: tuple[str, ...] = (),
) -> Volume:
    """A :class:`Volume` from an array ``[k, j, i]`` and LPS geometry read from ``path``, with
    unit, acquisition time, modality and description from the sidecar (module docstring) or the
    arguments. Shared by the NIfTI and MetaImage readers; the rules are those of
    :func:`read_nifti`. ``data_files``: files holding the voxels apart from ``path`` (a MetaImage
    ``.raw``), listed in the source files after ``path`` so that their hashes cover the data."""
    src = str(path)
    p = Path(path)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        n_bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(
            f"{n_bad} voxel(s) are NaN or infinite; replace them (e.g. by 0 outside the field of view) before use, "
            "since they would silently poison every sum",
            source=src,
        )
    doc, side_src = read_sidecar(p, sidecar)
    side_unit = sidecar_text(doc, "unit", side_src)
    if unit is not None and side_unit is not None and unit.strip() != side_unit:
        raise InputError(f"unit {unit!r} given, but the sidecar says {side_unit!r}", source=side_src, field="unit")
    the_unit = unit.strip() if unit is not None else side_unit
    if not the_unit:
        raise InputError(
            f"unit of the voxel values unknown: the file does not record it; add a sidecar {sidecar_path_for(p).name} "
            'with {"unit": ...} or pass unit=',
            source=src,
            field="unit",
        )
    t = doc.get("acquisition_time")
    acq = None if t is None else parse_aware_time(t, source=side_src, field="acquisition_time")
    side_mod = sidecar_text(doc, "modality", side_src)
    if modality is not None and side_mod is not None and modality.strip().upper() != side_mod.upper():
        raise InputError(f"modality {modality!r} given, but the sidecar says {side_mod!r}", source=side_src, field="modality")
    descrip = sidecar_text(doc, "description", side_src)
    if descrip is None:
        descrip = header_description
    files = (src,) + tuple(data_files) + ((side_src,) if side_src and side_src != "sidecar" else ())
    return Volume(
        array=array,
        spacing_mm=spacing_mm,
        origin_mm=origin_mm,
        direction=direction,
        unit=the_unit,
        acquisition_time=acq,
        modality=modality or side_mod or "OT",
        source_files=files,
        description=descrip,
    )


def write_nifti(volume: Volume, *, compress: bool = False) -> bytes:
    """The volume as a single-file NIfTI-1 image (``.nii``; gzip-compressed for ``.nii.gz``).

    Returns bytes: write them, with :func:`nifti_sidecar_bytes` beside them, atomically (e.g.
    ``mrtdose.workflow.outputs.write_atomic``). Compression uses ``mtime=0`` so equal volumes
    give equal bytes.
    """
    data = np.transpose(volume.array, (2, 1, 0))  # [k, j, i] -> [i, j, k]
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    affine_ras = RAS_TO_LPS @ volume.affine_lps
    img = nib.Nifti1Image(data, affine_ras, dtype=data.dtype)
    img.set_sform(affine_ras, code=1)
    img.set_qform(affine_ras, code=1)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    hdr["descrip"] = volume.description.encode("ascii", "replace")[:79]
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw


def nifti_sidecar(volume: Volume) -> dict[str, Any]:
    """The sidecar contents for ``volume`` (see the module docstring)."""
    doc: dict[str, Any] = {"unit": volume.unit, "modality": volume.modality}
    if volume.acquisition_time is not None:
        doc["acquisition_time"] = volume.acquisition_time.isoformat()
    if volume.description:
        doc["description"] = volume.description
    doc["coordinate_note"] = "NIfTI affine is RAS+ (NIfTI-1); mrtdose converts to DICOM LPS on reading"
    return doc


def nifti_sidecar_bytes(volume: Volume) -> bytes:
    """:func:`nifti_sidecar` as UTF-8 JSON bytes (2-space indent)."""
    return (json.dumps(nifti_sidecar(volume), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
