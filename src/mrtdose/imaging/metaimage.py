"""MetaImage volumes (``.mhd`` + data file, or single-file ``.mha``) read into a
:class:`~mrtdose.imaging.volume.Volume`, with the JSON sidecar of :mod:`mrtdose.imaging.nifti`.

MetaImage is ITK's native text-header format (MetaIO, Kitware: header keys ``NDims``,
``DimSize``, ``ElementSpacing``, ``Offset`` (also written ``Origin`` or ``Position``),
``TransformMatrix`` (also ``Rotation`` or ``Orientation``), ``ElementType``, ``ElementDataFile``).
It is read with SimpleITK's ``MetaImageIO`` (pinned in ``pyproject.toml``), which maps

* ``Offset`` to the origin (the centre of the first voxel),
* ``ElementSpacing`` to the spacing, and
* ``TransformMatrix`` to the direction matrix, stored row-wise by ITK's ``MetaImageIO`` as the
  *columns* of the direction (the unit vectors of increasing ``i``, ``j``, ``k``),

in ITK's physical space, whose axes are DICOM's patient axes LPS (the ITK Software Guide, "Image"
section: ITK images read from DICOM keep the DICOM patient coordinate system; SimpleITK's image
geometry documentation). So, unlike NIfTI (RAS), no axis flip is applied: origin, spacing and
direction are taken exactly as ITK reads them (double precision from the text header; the
mapping ``p = o + D S (i, j, k)`` is the same as :class:`Volume`'s). The ``AnatomicalOrientation``
key is descriptive and, as in ITK, not used for the geometry.

MetaImage has no field for the unit of the values nor a time zone: the sidecar ``image.json``
beside ``image.mhd`` (or ``image.mha``) carries them, with the keys and rules of
:mod:`mrtdose.imaging.nifti` (``unit`` required, ``acquisition_time`` ISO 8601 with a UTC offset
or absent -- never guessed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mrtdose.errors import InputError
from mrtdose.imaging.nifti import volume_with_sidecar
from mrtdose.imaging.volume import ORTHONORMAL_TOLERANCE, Volume

#: File-name suffixes of MetaImage files.
METAIMAGE_SUFFIXES = (".mhd", ".mha")


def is_metaimage(path: str | Path) -> bool:
    """True for a ``.mhd`` or ``.mha`` file name (case-insensitive)."""
    return Path(path).name.lower().endswith(METAIMAGE_SUFFIXES)


def _sitk():
    try:
        import SimpleITK as sitk  # noqa: N813
    except ImportError:  # pragma: no cover - SimpleITK is a pinned dependency
        raise InputError("reading MetaImage files needs SimpleITK (pip install SimpleITK==2.5.7)") from None
    return sitk


def load_metaimage_arrays(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float],
                                                     tuple[float, float, float], np.ndarray, str]:
    """Low-level read: ``(array[k, j, i], spacing_mm, origin_mm, direction, description)``.

    Raises :class:`InputError` naming the file: missing, not a MetaImage, unreadable or truncated
    data, not 3D (a trailing axis of length 1 is dropped), several components per voxel,
    non-positive spacing or a sheared direction.
    """
    p = Path(path)
    src = str(p)
    if not p.is_file():
        raise InputError("file not found", source=src)
    if not is_metaimage(p):
        raise InputError(f"not a MetaImage file name (expected {' or '.join(METAIMAGE_SUFFIXES)})", source=src)
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetImageIO("MetaImageIO")
    reader.SetFileName(src)
    try:
        img = reader.Execute()
    except RuntimeError as exc:  # SimpleITK reports every ITK exception as RuntimeError
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in first if "Description" in ln or "exception" in ln.lower()), first[-1] if first else "")
        raise InputError(f"not a readable MetaImage file ({detail.strip()})", source=src) from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"expected one value per voxel, got {img.GetNumberOfComponentsPerPixel()} components",
                         source=src, field="ElementNumberOfChannels")
    dim = img.GetDimension()
    if dim == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
        dim = 3
    if dim != 3:
        raise InputError(f"image must be 3D, got {dim}D of size {img.GetSize()}", source=src, field="NDims")
    spacing = tuple(float(x) for x in img.GetSpacing())
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise InputError(f"voxel spacing must be positive and finite, got {spacing}", source=src, field="ElementSpacing")
    origin = tuple(float(x) for x in img.GetOrigin())
    if not all(np.isfinite(origin)):
        raise InputError(f"origin must be finite, got {origin}", source=src, field="Offset")
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(direction)):
        raise InputError("direction (TransformMatrix) is not finite", source=src, field="TransformMatrix")
    dev = float(np.max(np.abs(direction.T @ direction - np.eye(3))))
    if dev > ORTHONORMAL_TOLERANCE:
        raise InputError(f"the direction is not orthonormal (max |D^T D - I| = {dev:.3g}); only rotations and flips "
                         "are supported", source=src, field="TransformMatrix")
    array = np.ascontiguousarray(sitk.GetArrayFromImage(img))  # [k, j, i]
    descrip = img.GetMetaData("Comment").strip() if img.HasMetaDataKey("Comment") else ""
    return array, spacing, origin, direction, descrip  # type: ignore[return-value]


def data_files(path: str | Path) -> tuple[str, ...]:
    """The files holding the voxels of a MetaImage header (``ElementDataFile``), relative to the
    header's folder: none for ``LOCAL`` (data in the ``.mha`` itself), the listed files for
    ``LIST``, the expanded names for a ``printf`` pattern (``name%03d.raw min max [step]``), else the
    one file named. Only files that exist are returned (a missing one is the reader's error)."""
    p = Path(path)
    names: list[str] = []
    with open(p, "rb") as fh:
        lines = iter(fh)
        for raw in lines:
            key, sep, value = raw.decode("latin-1").partition("=")
            if not sep or key.strip() != "ElementDataFile":
                continue
            value = value.strip()
            parts = value.split()
            if value.upper() == "LOCAL":
                pass
            elif parts and parts[0].upper() == "LIST":
                names = [ln.decode("latin-1").strip() for ln in lines if ln.strip()]
            elif "%" in value and len(parts) >= 3:
                try:  # pattern min max [step [sub-dimension]] (MetaIO)
                    lo, hi, step = int(parts[1]), int(parts[2]), int(parts[3]) if len(parts) > 3 else 1
                    names = [parts[0] % i for i in range(lo, hi + 1, step or 1)]
                except (ValueError, TypeError):
                    names = [value]
            else:
                names = [value]
            break
    out = [q if q.is_absolute() else p.parent / q for q in (Path(n) for n in names)]
    return tuple(str(q) for q in out if q.is_file())


def read_metaimage(
    path: str | Path,
    sidecar: str | Path | Mapping[str, Any] | None = None,
    *,
    unit: str | None = None,
    modality: str | None = None,
) -> Volume:
    """Read a MetaImage file (``.mhd``/``.mha``) into a :class:`Volume` (LPS, ``[k, j, i]``).

    ``sidecar``, ``unit`` and ``modality`` as in :func:`mrtdose.imaging.nifti.read_nifti`: the
    sidecar ``<stem>.json`` is used when it exists; the unit must come from it or the argument.
    The source files are the header, the data file(s) it names (:func:`data_files`, so that a
    provenance hash covers the voxels) and the sidecar.

    Example
    -------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "x.raw"), "wb").write(np.arange(8, dtype="<f4").tobytes())
    >>> _ = open(os.path.join(d, "x.mhd"), "w").write(
    ...     "ObjectType = Image\\nNDims = 3\\nDimSize = 2 2 2\\nElementType = MET_FLOAT\\n"
    ...     "ElementSpacing = 1.5 2 3\\nOffset = -10.25 0 7\\nTransformMatrix = 1 0 0 0 1 0 0 0 1\\n"
    ...     "ElementDataFile = x.raw\\n")
    >>> v = read_metaimage(os.path.join(d, "x.mhd"), unit="Bq/mL")
    >>> v.spacing_mm, v.origin_mm, float(v.array[1, 0, 1])
    ((1.5, 2.0, 3.0), (-10.25, 0.0, 7.0), 5.0)
    """
    p = Path(path)
    array, spacing, origin, direction, descrip = load_metaimage_arrays(p)
    return volume_with_sidecar(array, spacing_mm=spacing, origin_mm=origin, direction=direction, path=p,
                               sidecar=sidecar, unit=unit, modality=modality, header_description=descrip,
                               data_files=data_files(p))


__all__ = ("METAIMAGE_SUFFIXES", "data_files", "is_metaimage", "load_metaimage_arrays", "read_metaimage")
