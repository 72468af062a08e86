"""Resample a :class:`~mrtdose.imaging.volume.Volume` onto another volume's grid, in patient space.

Both grids may have any direction matrices (rotations, flips); the mapping goes through the
patient coordinate system (DICOM PS3.3 C.7.6.2.1.1, LPS mm): a voxel centre ``(i, j, k)`` of the
*reference* grid is at ``p = o_r + D_r S_r (i, j, k)``, and its continuous index in the *moving*
grid is ``S_m^-1 D_m^T (p - o_m)`` (:meth:`Volume.physical_to_index`). The two affines are
combined into one 4x4 matrix, so no per-voxel Python loop runs; the reference grid is processed
in slabs of slices to bound memory.

Interpolation is always named by the caller (there is no default, so that a label mask is never
smoothed by accident):

``"nearest"``
    The value of the moving voxel whose extent contains the point (index rounded half up; exact
    indexing, no interpolation). For masks and labels.
``"linear"``
    Trilinear interpolation between voxel centres with :func:`scipy.ndimage.map_coordinates`
    (``order=1``). For continuous images (activity, CT, dose).
``"fractional"``
    Mean occupancy for masks: each reference voxel is split into ``supersample**3`` equal
    sub-voxels, each takes the nearest moving value, and the result is their mean (a partial-
    volume fraction in [0, 1] for a boolean mask).

The moving image is taken to fill its voxels: a point whose moving index lies within
``[-0.5, n - 0.5]`` along each axis is inside its field of view (between the outermost centre and
the voxel edge the edge value is used, not ``fill_value``); points outside get ``fill_value``.
Continuous indices within :data:`SNAP_TOLERANCE` of an integer are snapped to it, so a grid that
coincides with (or is shifted by whole voxels from) the moving grid samples voxel values exactly.

Conservation of the total (``conserve="total"``)
-------------------------------------------------
Resampling samples a concentration; it does not integrate it, so the total activity
``sum(c) * voxel_volume`` changes (downsampling with nearest/linear sampling can lose or gain
several per cent in hot, small structures). With ``conserve="total"`` the result is multiplied by
one factor so that its total over the reference field of view equals the moving image's total
over the *same* field of view (moving voxels whose centres lie inside the reference grid's
extent). This is valid when

* the values are a concentration (unit ``.../mL``); resampling per-voxel amounts is refused;
* the reference field of view either contains the whole activity or cuts it only where the
  activity is low (voxels straddling the field-of-view edge are counted by centre);
* one global factor is acceptable: the *total* is then right by construction, but the activity
  of an individual region is still subject to the local sampling error, which the factor cannot
  correct (use a finer reference grid, or ``"linear"`` on a grid finer than the source, for
  region quantification).

Example
-------
>>> import numpy as np
>>> v = Volume(array=np.arange(24.0).reshape(2, 3, 4), spacing_mm=(1, 1, 1), unit="Bq/mL")
>>> ref = Volume(array=np.zeros((2, 3, 4)), spacing_mm=(1, 1, 1), origin_mm=(1, 0, 0), unit="1")
>>> resample(v, ref, interpolation="nearest").array[0, 0].tolist()   # shifted by one voxel in x
[1.0, 2.0, 3.0, 0.0]
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from mrtdose.errors import InputError
from mrtdose.imaging.volume import Volume

INTERPOLATIONS = ("nearest", "linear", "fractional")

#: Continuous indices closer than this (in voxels) to an integer are snapped to it.
SNAP_TOLERANCE = 1e-6

#: Reference voxels processed per slab (bounds the temporary coordinate arrays to ~100 MB).
_CHUNK_VOXELS = 4_000_000


def _index_map(moving: Volume, reference: Volume) -> np.ndarray:
    """4x4 matrix from homogeneous reference index ``(i, j, k, 1)`` to moving index."""
    return np.linalg.inv(moving.affine_lps) @ reference.affine_lps


def _extent_corners(shape_ijk: tuple[int, int, int]) -> np.ndarray:
    ni, nj, nk = shape_ijk
    return np.array([[i, j, k] for k in (-0.5, nk - 0.5) for j in (-0.5, nj - 0.5) for i in (-0.5, ni - 0.5)])


def _check_overlap(moving: Volume, reference: Volume) -> None:
    """Bounding-box test in the moving index space (exact for aligned grids, conservative otherwise)."""
    m = _index_map(moving, reference)
    c = _extent_corners(reference.size_ijk) @ m[:3, :3].T + m[:3, 3]
    lo, hi = c.min(axis=0), c.max(axis=0)
    size = np.asarray(moving.size_ijk, dtype=np.float64)
    if np.any(hi <= -0.5) or np.any(lo >= size - 0.5):
        _no_overlap(moving, reference)


def _no_overlap(moving: Volume, reference: Volume) -> None:
    src = moving.source_files[0] if moving.source_files else None
    raise InputError(
        "the image does not overlap the reference grid (no reference voxel centre lies in its field of view): "
        f"image corners {moving.corner_centres_mm().min(axis=0).round(2).tolist()}.."
        f"{moving.corner_centres_mm().max(axis=0).round(2).tolist()} mm, reference "
        f"{reference.corner_centres_mm().min(axis=0).round(2).tolist()}.."
        f"{reference.corner_centres_mm().max(axis=0).round(2).tolist()} mm (LPS); check the frame of reference",
        source=src,
        field="reference",
    )


def _snap(c: np.ndarray) -> np.ndarray:
    r = np.rint(c)
    return np.where(np.abs(c - r) < SNAP_TOLERANCE, r, c)


def _sample_chunk(arr: np.ndarray, coords_ijk: np.ndarray, order: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``arr`` ([k, j, i]) at continuous indices ``coords_ijk`` (``(3, N)``, rows i, j, k).

    Returns the values and a boolean "inside the moving field of view" array.
    """
    nk, nj, ni = arr.shape
    size = np.array([ni, nj, nk], dtype=np.float64)[:, None]
    inside = np.all((coords_ijk >= -0.5) & (coords_ijk <= size - 0.5), axis=0)
    if order == 0:
        idx = np.floor(coords_ijk + 0.5).astype(np.int64)
        np.clip(idx, 0, (size - 1).astype(np.int64), out=idx)
        vals = arr[idx[2], idx[1], idx[0]].astype(np.float64)
    else:
        vals = ndimage.map_coordinates(
            arr.astype(np.float64, copy=False), coords_ijk[::-1], order=1, mode="nearest", prefilter=False
        )
    vals = np.where(inside, vals, fill)
    return vals, inside


def resample(
    moving: Volume,
    reference: Volume,
    *,
    interpolation: Literal["nearest", "linear", "fractional"],
    conserve: Literal["total"] | None = None,
    fill_value: float = 0.0,
    supersample: int = 4,
) -> Volume:
    """``moving`` resampled onto ``reference``'s grid (shape, spacing, origin, direction).

    Parameters
    ----------
    moving
        The image to resample. Its unit, modality, time and description are kept.
    reference
        The target grid (its values are not used).
    interpolation
        ``"nearest"``, ``"linear"`` or ``"fractional"`` (module docstring); required.
    conserve
        ``None``, or ``"total"`` to rescale so that the total (value x volume) over the reference
        field of view is preserved; only for concentrations (unit ending ``/mL``). See the
        module docstring for when this is valid.
    fill_value
        Value outside the moving image's field of view.
    supersample
        Sub-voxels per axis for ``"fractional"`` (>= 1).

    Returns
    -------
    Volume
        On the reference grid: float64 values, except ``"nearest"`` of a boolean or integer
        image, which keeps the dtype (``fill_value`` must then be representable).

    Raises
    ------
    InputError
        Unknown interpolation; the grids do not overlap; ``conserve`` of a non-concentration or of
        an image with no activity inside the reference field of view.
    """
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}", field="interpolation")
    if conserve not in (None, "total"):
        raise InputError(f"conserve must be None or 'total', got {conserve!r}", field="conserve")
    if conserve == "total" and not moving.unit.replace(" ", "").lower().endswith("/ml"):
        raise InputError(
            f"conserve='total' needs a concentration (unit per mL) so that value x voxel volume is an amount; "
            f"the image's unit is {moving.unit!r}",
            field="conserve",
        )
    n_sub = int(supersample)
    if interpolation == "fractional" and (n_sub != supersample or n_sub < 1):
        raise InputError(f"supersample must be a positive integer, got {supersample!r}", field="supersample")
    _check_overlap(moving, reference)

    arr = moving.array
    out_dtype = arr.dtype if (interpolation == "nearest" and arr.dtype.kind in "biu") else np.dtype(np.float64)
    if moving.same_grid(reference, atol_mm=1e-9 * max(1.0, max(moving.spacing_mm))):
        result = arr.astype(out_dtype, copy=True)
        any_inside = True
    else:
        m = _index_map(moving, reference)
        nk, nj, ni = reference.shape
        result = np.empty((nk, nj, ni), dtype=np.float64)
        jj, ii = np.meshgrid(np.arange(nj, dtype=np.float64), np.arange(ni, dtype=np.float64), indexing="ij")
        plane = np.stack([ii.ravel(), jj.ravel()])  # (2, nj*ni), order matches result[k].ravel()
        if interpolation == "fractional":
            offs = (np.arange(n_sub) + 0.5) / n_sub - 0.5
            sub = np.array(np.meshgrid(offs, offs, offs, indexing="ij")).reshape(3, -1)  # (3, n^3) i, j, k
        else:
            sub = np.zeros((3, 1))
        order = 1 if interpolation == "linear" else 0
        per_slice = nj * ni * sub.shape[1]
        step = max(1, _CHUNK_VOXELS // max(per_slice, 1))
        any_inside = False
        for k0 in range(0, nk, step):  # slabs of slices, not voxels
            ks = np.arange(k0, min(nk, k0 + step), dtype=np.float64)
            acc = np.zeros((ks.size, nj * ni))
            for s in range(sub.shape[1]):
                idx = np.empty((3, ks.size, nj * ni))
                idx[0] = plane[0][None, :] + sub[0, s]
                idx[1] = plane[1][None, :] + sub[1, s]
                idx[2] = ks[:, None] + sub[2, s]
                c = _snap(m[:3, :3] @ idx.reshape(3, -1) + m[:3, 3:4])
                vals, inside = _sample_chunk(arr, c, order, fill_value)
                any_inside = any_inside or bool(inside.any())
                acc += vals.reshape(ks.size, nj * ni)
            result[int(ks[0]) : int(ks[-1]) + 1] = (acc / sub.shape[1]).reshape(ks.size, nj, ni)
        if out_dtype != np.float64:
            result = result.astype(out_dtype)
    if not any_inside:
        _no_overlap(moving, reference)

    description = moving.description
    if conserve == "total":
        # moving voxels whose centres lie inside the reference grid's extent
        nk_m, nj_m, ni_m = moving.shape
        inv = _index_map(reference, moving)
        size_r = np.asarray(reference.size_ijk, dtype=np.float64)[:, None]
        target = 0.0
        kk = np.arange(nk_m, dtype=np.float64)
        jj, ii = np.meshgrid(np.arange(nj_m, dtype=np.float64), np.arange(ni_m, dtype=np.float64), indexing="ij")
        for k in kk:  # per slice of the moving image
            p = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)])
            c = _snap(inv[:3, :3] @ p + inv[:3, 3:4])
            inside = np.all((c >= -0.5) & (c <= size_r - 0.5), axis=0)
            target += float(np.sum(moving.array[int(k)].ravel()[inside], dtype=np.float64))
        target *= moving.voxel_volume_ml
        got = float(np.sum(result, dtype=np.float64)) * reference.voxel_volume_ml
        if got == 0.0:
            raise InputError(
                "conserve='total': the resampled image is zero everywhere, nothing to rescale "
                f"(total in the field of view {target:.6g} {moving.unit} x mL)",
                field="conserve",
            )
        result = result * (target / got)
        description = f"{description} (resampled, total conserved x{target / got:.6g})".strip()

    return Volume(
        array=result,
        spacing_mm=reference.spacing_mm,
        origin_mm=reference.origin_mm,
        direction=reference.direction,
        unit=moving.unit,
        acquisition_time=moving.acquisition_time,
        modality=moving.modality,
        source_files=moving.source_files,
        description=description,
    )
