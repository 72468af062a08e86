"""The voxel S-value kernel type shared by kernel computation (physics) and kernel files (imaging).

A voxel S-value ``S(Delta)`` is the mean absorbed dose to a target voxel per decay in a source
voxel at offset ``Delta`` (MIRD Pamphlet 17, Bolch et al. 1999, J Nucl Med 40:11S, eq. 3). The
kernel holds it on a box of offsets centred on the source voxel, in Gy/(Bq s) (= Gy per decay).

Array order
-----------
``array_gy_per_bq_s[dk, dj, di]`` -- ``[z, y, x]``, the same order as
:class:`mrtdose.imaging.volume.Volume` arrays -- with shape ``(2 n_z + 1, 2 n_y + 1, 2 n_x + 1)``
and the source voxel at the centre ``(n_z, n_y, n_x)``; element ``[n_z + c, n_y + b, n_x + a]``
is the dose at offset ``(a, b, c)`` voxels along ``(x, y, z)``. So a kernel convolves a Volume's
array directly (``scipy.signal.fftconvolve(volume.array, kernel.array_gy_per_bq_s, "same")``),
provided ``voxel_size_mm`` equals the volume's ``spacing_mm`` (both ``(x, y, z)``). A kernel
computed with axes ``[x, y, z]`` is brought to this order with :meth:`VoxelKernel.from_xyz_array`.

This module is layer 1 and imports nothing above it, so that physics code can build kernels and
imaging code can read them without either importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mrtdose.errors import InputError


@dataclass(frozen=True, eq=False, kw_only=True)
class VoxelKernel:
    """Voxel S-values around a source voxel. Immutable (the array is read-only).

    Parameters
    ----------
    array_gy_per_bq_s
        S-values in Gy/(Bq s), indexed ``[z, y, x]`` (module docstring); odd size along every
        axis, finite and non-negative.
    voxel_size_mm
        Voxel sides ``(x, y, z)`` in mm, each > 0.
    nuclide
        Radionuclide, canonical name (``"Lu-177"``).
    medium
        Medium the kernel was computed in (``"soft_tissue"``, ``"compact_bone"``, ...).
    source
        Where it came from: a file path and publication, or the method that computed it.
    description
        Free text: components included, extent, truncation...
    """

    array_gy_per_bq_s: np.ndarray
    voxel_size_mm: tuple[float, float, float]
    nuclide: str
    medium: str
    source: str
    description: str = ""

    def __post_init__(self) -> None:
        src = self.source if isinstance(self.source, str) and self.source else None
        arr = np.asarray(self.array_gy_per_bq_s)
        if arr.ndim != 3:
            raise InputError(f"kernel must be 3D, got shape {arr.shape}", source=src, field="array_gy_per_bq_s")
        if any(n % 2 == 0 for n in arr.shape):
            raise InputError(
                f"kernel shape {arr.shape} must be odd along every axis (source voxel at the centre)",
                source=src,
                field="array_gy_per_bq_s",
            )
        if arr.dtype.kind not in "iuf":
            raise InputError(f"kernel values must be numeric, got dtype {arr.dtype}", source=src, field="array_gy_per_bq_s")
        arr = arr.astype(np.float64, copy=arr.flags.writeable or arr.dtype != np.float64)
        if not np.all(np.isfinite(arr)):
            raise InputError("kernel has NaN or infinite values", source=src, field="array_gy_per_bq_s")
        if arr.min() < 0:
            raise InputError(f"kernel values must be >= 0 Gy/(Bq s), minimum {arr.min():g}", source=src, field="array_gy_per_bq_s")
        arr.flags.writeable = False
        try:
            size = tuple(float(v) for v in np.broadcast_to(np.asarray(self.voxel_size_mm, dtype=np.float64), (3,)))
        except (TypeError, ValueError):
            raise InputError(f"voxel_size_mm must be 3 numbers (x, y, z), got {self.voxel_size_mm!r}", source=src, field="voxel_size_mm") from None
        if not all(np.isfinite(size)) or min(size) <= 0:
            raise InputError(f"voxel sizes must be positive, got {size}", source=src, field="voxel_size_mm")
        for name in ("nuclide", "medium", "source"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise InputError(f"{name} must be a non-empty string, got {v!r}", source=src, field=name)
        object.__setattr__(self, "array_gy_per_bq_s", arr)
        object.__setattr__(self, "voxel_size_mm", size)
        object.__setattr__(self, "description", str(self.description))

    @classmethod
    def from_xyz_array(cls, array_xyz: Any, **kwargs: Any) -> "VoxelKernel":
        """A kernel from an array indexed ``[x, y, z]`` (transposed to this type's ``[z, y, x]``)."""
        return cls(array_gy_per_bq_s=np.transpose(np.asarray(array_xyz), (2, 1, 0)), **kwargs)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(nz, ny, nx)``."""
        return tuple(int(n) for n in self.array_gy_per_bq_s.shape)  # type: ignore[return-value]

    @property
    def half_width_voxels(self) -> tuple[int, int, int]:
        """Half-widths ``(n_x, n_y, n_z)``: largest offset, in voxels, along x, y, z."""
        nz, ny, nx = self.shape
        return (nx // 2, ny // 2, nz // 2)

    @property
    def centre_gy_per_bq_s(self) -> float:
        """Self-dose S-value (source voxel to itself)."""
        nz, ny, nx = self.shape
        return float(self.array_gy_per_bq_s[nz // 2, ny // 2, nx // 2])

    @property
    def total_gy_per_bq_s(self) -> float:
        """Sum over the kernel. Times the voxel mass it is the energy absorbed within the kernel
        per decay (J): the kernel's check against the energy emitted per decay."""
        return float(np.sum(self.array_gy_per_bq_s, dtype=np.float64))

    @property
    def voxel_volume_ml(self) -> float:
        """Voxel volume in mL (``dx dy dz / 1000``)."""
        dx, dy, dz = self.voxel_size_mm
        return dx * dy * dz / 1000.0

    def matches_spacing(self, spacing_mm: Sequence[float], rtol: float = 1e-3) -> bool:
        """True if the kernel's voxel size equals ``spacing_mm`` (x, y, z) within ``rtol``."""
        s = np.asarray(spacing_mm, dtype=np.float64)
        return bool(s.shape == (3,) and np.allclose(self.voxel_size_mm, s, rtol=rtol, atol=0.0))

    def __repr__(self) -> str:
        return (
            f"VoxelKernel(shape={self.shape}, voxel_size_mm={self.voxel_size_mm}, nuclide={self.nuclide!r}, "
            f"medium={self.medium!r}, source={self.source!r}, centre={self.centre_gy_per_bq_s:.4g} Gy/(Bq s))"
        )
