"""A voxel volume: array, geometry in patient coordinates, unit and acquisition time.

Conventions (one set, used throughout mrtdose)
----------------------------------------------
**Patient coordinates.** DICOM patient coordinate system (PS3.3 C.7.6.2.1.1): x increases to the
patient's *left*, y to the *posterior*, z to the *head* ("LPS"), in millimetres. Files that use
another convention (NIfTI's RAS) are converted on reading and writing; nothing else in mrtdose
sees RAS.

**Index order.** A voxel has an index triple ``(i, j, k)``: ``i`` is the column index (fastest
varying in a DICOM frame, along the row direction of Image Orientation (Patient)), ``j`` the row
index and ``k`` the slice (frame) index. This is the ITK/SimpleITK index order and the order of
:meth:`Volume.index_to_physical`, :meth:`Volume.physical_to_index`, :attr:`Volume.spacing_mm`
and the columns of :attr:`Volume.direction`.

The numpy **array is indexed the other way round**, ``array[k, j, i]`` (``[z, y, x]``, C order,
shape ``(nk, nj, ni)``), which is the order of pydicom's multi-frame ``pixel_array`` (frames,
rows, columns) and of ``SimpleITK.GetArrayFromImage``. So ``array[k, j, i]`` is the voxel whose
centre is ``index_to_physical((i, j, k))``.

**Geometry.** With ``D`` the direction matrix (columns: unit vectors, in LPS, of increasing
``i``, ``j``, ``k``), ``S = diag(spacing_mm)`` and ``o = origin_mm`` (the centre of voxel
``(0, 0, 0)``, i.e. of ``array[0, 0, 0]``), the centre of voxel ``(i, j, k)`` is::

    p = o + D @ S @ (i, j, k)

which is DICOM's mapping (PS3.3 C.7.6.2.1.1, equation C.7.6.2.1-1, extended to 3D by the slice
normal) and ITK's ``TransformIndexToPhysicalPoint``. ``D`` must be orthonormal (rotations and
axis flips; no shear); ``det(D) = -1`` (a left-handed index frame) is allowed.

Voxel values are means over the voxel (an activity concentration, an absorbed dose); the voxel
volume in mL is ``prod(spacing_mm) / 1000`` (1 mL = 1 cm^3 = 1000 mm^3).

Example
-------
>>> import numpy as np
>>> v = Volume(array=np.zeros((2, 3, 4)), spacing_mm=(2.0, 3.0, 5.0),
...            origin_mm=(-10.0, 0.0, 100.0), unit="Bq/mL", modality="NM")
>>> v.shape, round(v.voxel_volume_ml, 6)
((2, 3, 4), 0.03)
>>> v.index_to_physical((3, 2, 1)).tolist()   # i=3 (x), j=2 (y), k=1 (z)
[-4.0, 6.0, 105.0]
>>> v.physical_to_index((-4.0, 6.0, 105.0)).tolist()
[3.0, 2.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

import numpy as np

from mrtdose.errors import InputError

#: Largest allowed deviation of ``D.T @ D`` from the identity. Direction cosines read from files
#: carry rounding: DICOM Decimal Strings (16 characters, PS3.5 6.2) and NIfTI float32 transforms
#: (about 1e-7); 1e-4 accepts those and rejects real shear.
ORTHONORMAL_TOLERANCE = 1e-4

#: Marks "keep the current value" in :meth:`Volume.with_array` (``None`` means "no time").
_KEEP: Any = object()

_IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _vector3(value: Any, name: str, source: str | None) -> tuple[float, float, float]:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"must be three numbers, got {value!r}", source=source, field=name) from None
    if arr.shape != (3,):
        raise InputError(f"must be three numbers (x, y, z), got shape {arr.shape}", source=source, field=name)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"must be finite, got {arr.tolist()}", source=source, field=name)
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclass(frozen=True, eq=False, kw_only=True)
class Volume:
    """A 3D voxel image with its geometry, unit and acquisition time. Immutable.

    Parameters
    ----------
    array
        Voxel values, indexed ``array[k, j, i]`` (``[z, y, x]``); see the module docstring.
        Kept as a read-only array (copied if the given one is writeable). Numeric or boolean.
    spacing_mm
        Voxel spacing along ``(i, j, k)`` = ``(x, y, z)`` index axes, mm, each > 0.
    origin_mm
        LPS position (mm) of the centre of voxel ``(0, 0, 0)`` (``array[0, 0, 0]``); DICOM's
        Image Position (Patient) of the first frame.
    direction
        3x3 direction cosines; column ``c`` is the LPS unit vector of index axis ``c``
        (``c = 0, 1, 2`` for ``i, j, k``). Orthonormal within :data:`ORTHONORMAL_TOLERANCE`.
    unit
        Unit of the voxel values, e.g. ``"Bq/mL"``, ``"Gy"``, ``"MBq h/mL"``, ``"g/mL"``, ``"1"``.
    acquisition_time
        Timezone-aware reference time of the values (e.g. the scan start), or ``None``.
    modality
        ``"NM"``, ``"PT"``, ``"CT"``, ``"RTDOSE"``, ``"LABEL"``... (``"OT"``: other).
    source_files
        Files the volume was read from (provenance).
    description
        Free text (series description, how it was derived).
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    unit: str
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.array(_IDENTITY))
    acquisition_time: datetime | None = None
    modality: str = "OT"
    source_files: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        files = tuple(str(f) for f in self.source_files)
        src = files[0] if files else None
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise InputError(f"image data must be 3D, got {arr.ndim}D with shape {arr.shape}", source=src, field="array")
        if arr.size == 0:
            raise InputError(f"image has no voxels (shape {arr.shape})", source=src, field="array")
        if arr.dtype.kind not in "biuf":
            raise InputError(f"voxel values must be numeric or boolean, got dtype {arr.dtype}", source=src, field="array")
        if arr.flags.writeable:
            arr = arr.copy()
            arr.flags.writeable = False
        spacing = _vector3(self.spacing_mm, "spacing_mm", src)
        if min(spacing) <= 0:
            raise InputError(f"voxel spacing must be positive, got {spacing}", source=src, field="spacing_mm")
        origin = _vector3(self.origin_mm, "origin_mm", src)
        try:
            d = np.array(self.direction, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"must be a 3x3 matrix of numbers, got {self.direction!r}", source=src, field="direction") from None
        if d.shape != (3, 3):
            raise InputError(f"must be a 3x3 matrix, got shape {d.shape}", source=src, field="direction")
        if not np.all(np.isfinite(d)):
            raise InputError("direction cosines must be finite", source=src, field="direction")
        dev = float(np.max(np.abs(d.T @ d - np.eye(3))))
        if dev > ORTHONORMAL_TOLERANCE:
            raise InputError(
                f"direction cosines are not orthonormal (max |D^T D - I| = {dev:.3g} > {ORTHONORMAL_TOLERANCE:g}): "
                "sheared or scaled grids are not supported",
                source=src,
                field="direction",
            )
        d.flags.writeable = False
        if not isinstance(self.unit, str) or not self.unit.strip():
            raise InputError(f"unit must be a non-empty string, got {self.unit!r}", source=src, field="unit")
        if not isinstance(self.modality, str) or not self.modality.strip():
            raise InputError(f"modality must be a non-empty string, got {self.modality!r}", source=src, field="modality")
        t = self.acquisition_time
        if t is not None:
            if not isinstance(t, datetime):
                raise InputError(f"acquisition_time must be a datetime, got {t!r}", source=src, field="acquisition_time")
            if t.tzinfo is None or t.utcoffset() is None:
                raise InputError(
                    f"acquisition_time {t.isoformat()} has no time zone; a naive time is never guessed",
                    source=src,
                    field="acquisition_time",
                )
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_mm", origin)
        object.__setattr__(self, "direction", d)
        object.__setattr__(self, "unit", self.unit.strip())
        object.__setattr__(self, "modality", self.modality.strip().upper())
        object.__setattr__(self, "source_files", files)
        object.__setattr__(self, "description", str(self.description))

    # ------------------------------------------------------------------ geometry

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(nk, nj, ni)`` = ``(nz, ny, nx)``."""
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along ``(i, j, k)`` (the reverse of :attr:`shape`)."""
        nk, nj, ni = self.shape
        return (ni, nj, nk)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (``dx * dy * dz / 1000``; 1 mL = 1000 mm^3)."""
        dx, dy, dz = self.spacing_mm
        return dx * dy * dz / 1000.0

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``(i, j, k, 1)`` to LPS mm: ``[[D @ S, o], [0, 1]]``."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing_mm)[np.newaxis, :]
        a[:3, 3] = self.origin_mm
        return a

    def index_to_physical(self, ijk: Sequence[float] | np.ndarray) -> np.ndarray:
        """LPS position (mm) of continuous index ``(i, j, k)``; accepts an ``(..., 3)`` array.

        Note the order: ``(i, j, k)`` = (column, row, slice), the reverse of ``array[k, j, i]``.
        """
        idx = np.asarray(ijk, dtype=np.float64)
        if idx.shape[-1:] != (3,):
            raise InputError(f"index must have 3 components (i, j, k), got shape {idx.shape}", field="ijk")
        m = self.affine_lps
        return idx @ m[:3, :3].T + m[:3, 3]

    def physical_to_index(self, xyz: Sequence[float] | np.ndarray) -> np.ndarray:
        """Continuous index ``(i, j, k)`` of LPS position ``xyz`` (mm); ``(..., 3)`` arrays too.

        Voxel centres have integer indices; the voxel containing a point is
        ``np.rint(physical_to_index(p))`` if that lies in ``[0, size)`` along each axis.
        """
        p = np.asarray(xyz, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise InputError(f"position must have 3 components (x, y, z), got shape {p.shape}", field="xyz")
        m = self.affine_lps
        inv = np.linalg.inv(m[:3, :3])
        return (p - m[:3, 3]) @ inv.T

    def corner_centres_mm(self) -> np.ndarray:
        """LPS centres (mm) of the 8 corner voxels, shape ``(8, 3)``."""
        ni, nj, nk = self.size_ijk
        corners = np.array([[i, j, k] for k in (0, nk - 1) for j in (0, nj - 1) for i in (0, ni - 1)], dtype=np.float64)
        return self.index_to_physical(corners)

    def same_grid(self, other: "Volume", atol_mm: float = 1e-3) -> bool:
        """True if ``other`` has the same shape and every voxel centre within ``atol_mm``.

        The map from index to position is affine, so all centres lie within ``atol_mm`` of their
        counterparts exactly when the 8 corner-voxel centres do (every centre is a convex
        combination of the corners with the same weights in both grids).
        """
        if self.shape != other.shape:
            return False
        diff = np.linalg.norm(self.corner_centres_mm() - other.corner_centres_mm(), axis=1)
        return bool(np.all(diff <= atol_mm))

    # ------------------------------------------------------------------ derivation

    def with_array(
        self,
        new_array: np.ndarray,
        *,
        unit: str,
        modality: str | None = None,
        description: str | None = None,
        acquisition_time: datetime | None = _KEEP,
    ) -> "Volume":
        """A new volume on the same grid with ``new_array`` (same shape) and ``unit``.

        ``unit`` is required: new values nearly always have a new unit, and saying so is cheaper
        than a wrong label. Modality, description and acquisition time are kept unless given
        (pass ``acquisition_time=None`` to drop it).
        """
        arr = np.asanyarray(new_array)
        if arr.shape != self.array.shape:
            raise InputError(
                f"new array shape {arr.shape} differs from the volume's {self.array.shape}", field="new_array"
            )
        return Volume(
            array=arr,
            spacing_mm=self.spacing_mm,
            origin_mm=self.origin_mm,
            direction=self.direction,
            unit=unit,
            acquisition_time=self.acquisition_time if acquisition_time is _KEEP else acquisition_time,
            modality=self.modality if modality is None else modality,
            source_files=self.source_files,
            description=self.description if description is None else description,
        )

    def __repr__(self) -> str:
        t = self.acquisition_time.isoformat() if self.acquisition_time else None
        return (
            f"Volume(shape={self.shape}, dtype={self.array.dtype}, unit={self.unit!r}, modality={self.modality!r}, "
            f"spacing_mm={self.spacing_mm}, origin_mm={self.origin_mm}, direction={self.direction.tolist()}, "
            f"acquisition_time={t!r}, description={self.description!r})"
        )
