"""Regions (volumes of interest): label maps, masks, region statistics, body and remainder,
threshold and region-growing segmentation of lesions.

Masks
-----
A mask is a numpy array on a :class:`~mrtdose.imaging.volume.Volume`'s grid (same shape,
indexed ``[k, j, i]``): boolean, or a fractional occupancy in [0, 1] (e.g. from
:func:`mrtdose.imaging.rtstruct.rasterise_roi` with supersampling, or a DICOM SEG of
Segmentation Type FRACTIONAL / OCCUPANCY, PS3.3 C.8.20.2.3). A mask given as a ``Volume`` must
be on the same grid as the image (:meth:`Volume.same_grid`); a bare array must have its shape.
Nothing is resampled silently: use :func:`mrtdose.imaging.resample.resample` first.

Quantities (:func:`region_statistics`)
--------------------------------------
With ``w`` the mask weight (1 / 0, or the occupancy), ``c`` the activity concentration (Bq/mL),
``rho`` the mass density (g/mL) and ``dV`` the voxel volume (mL, ``prod(spacing_mm) / 1000``):

* volume ``V = sum(w) dV`` (mL);
* total activity ``A = sum(w c) dV`` (Bq, reported in MBq);
* mean concentration ``A / V``; maximum ``max(c)`` over voxels with ``w > 0``;
* mass ``m = sum(w rho) dV`` (g), when a density volume is given (e.g. from
  :func:`mrtdose.imaging.density.density_from_ct`).

Body and remainder
------------------
:func:`body_mask` thresholds the CT (default HU > -500, between lung, about -850 HU, and soft
tissue, so that lungs are excluded by the threshold and then filled back as holes), keeps the
largest 6-connected component (:func:`scipy.ndimage.label`; this removes the couch and
blankets when not touching the patient), then fills holes in 3D and in every axial slice (the
lungs and airways connect to the outside through the trachea, so only the slice-wise fill
closes them). :func:`remainder_mask` is the body minus the union of the given organs.

Lesion segmentation
-------------------
:func:`threshold_in_box` keeps voxels within a box (:func:`box_mask`) at or above a fraction of
the local maximum in that box, or above an absolute concentration; :func:`region_grow` keeps
the 6-connected component (faces shared) containing a seed voxel among voxels within
``[lower, upper]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from mrtdose.errors import InputError
from mrtdose.imaging.nifti import read_nifti
from mrtdose.imaging.volume import Volume

#: Unit of activity-concentration values and the factor to Bq/mL.
CONCENTRATION_UNITS = {"Bq/mL": 1.0, "kBq/mL": 1e3, "MBq/mL": 1e6}

#: 6-connectivity (voxels sharing a face).
CONNECTIVITY_6 = ndimage.generate_binary_structure(3, 1)

#: Default CT threshold (HU) for the body outline.
BODY_THRESHOLD_HU = -500.0


def _src(v: Volume) -> str | None:
    return v.source_files[0] if v.source_files else None


def as_mask_array(mask: np.ndarray | Volume, image: Volume, *, name: str = "mask") -> np.ndarray:
    """The mask as a float64 weight array on ``image``'s grid, checked.

    Raises :class:`InputError` if the mask is on another grid (or has another shape), has values
    outside [0, 1], or non-finite values.
    """
    if isinstance(mask, Volume):
        if not mask.same_grid(image):
            raise InputError(
                f"mask {name!r} is on another grid (shape {mask.shape}, origin {mask.origin_mm}, spacing {mask.spacing_mm}) "
                f"than the image (shape {image.shape}, origin {image.origin_mm}, spacing {image.spacing_mm}); "
                "resample it first (mrtdose.imaging.resample)",
                source=_src(mask),
                field=name,
            )
        arr = mask.array
    else:
        arr = np.asarray(mask)
        if arr.shape != image.shape:
            raise InputError(
                f"mask {name!r} has shape {arr.shape}, the image {image.shape}: it is on another grid",
                field=name,
            )
    if arr.dtype == bool:
        return arr.astype(np.float64)
    w = arr.astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise InputError(f"mask {name!r} has non-finite values", field=name)
    if w.min() < 0 or w.max() > 1:
        raise InputError(
            f"mask {name!r} values must be booleans or occupancies in [0, 1], got {w.min():.6g}..{w.max():.6g}", field=name
        )
    return w


# ---------------------------------------------------------------------------- label maps


@dataclass(frozen=True, eq=False)
class LabelMap:
    """An integer label volume with region names: ``labels[name] = value``. Immutable.

    Example
    -------
    >>> v = Volume(array=np.array([[[0, 1, 2, 2]]]), spacing_mm=(1, 1, 1), unit="1", modality="LABEL")
    >>> lm = LabelMap(v, {"liver": 1, "spleen": 2})
    >>> int(lm.mask("spleen").sum())
    2
    """

    volume: Volume
    labels: Mapping[str, int]

    def __post_init__(self) -> None:
        src = _src(self.volume)
        arr = self.volume.array
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.rint(arr)):
                raise InputError("label map values must be integers", source=src)
        elif arr.dtype.kind not in "iub":
            raise InputError(f"label map must hold integers, got dtype {arr.dtype}", source=src)
        labels: dict[str, int] = {}
        for name, value in dict(self.labels).items():
            if not isinstance(name, str) or not name.strip():
                raise InputError(f"region names must be non-empty strings, got {name!r}", source=src, field="labels")
            try:
                iv = int(value)
            except (TypeError, ValueError):
                raise InputError(f"label of {name!r} must be an integer, got {value!r}", source=src, field=f"labels.{name}") from None
            if iv != value or iv == 0:
                raise InputError(f"label of {name!r} must be a non-zero integer (0 is background), got {value!r}", source=src, field=f"labels.{name}")
            labels[name.strip()] = iv
        if len(set(labels.values())) != len(labels):
            raise InputError(f"two regions share a label value: {labels}", source=src, field="labels")
        object.__setattr__(self, "labels", labels)

    @property
    def present_labels(self) -> list[int]:
        """Non-zero label values present in the volume."""
        return [int(x) for x in np.unique(self.volume.array) if x != 0]

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask of region ``name``; :class:`InputError` if unknown or empty."""
        if name not in self.labels:
            raise InputError(f"region {name!r} is not in the label mapping; known: {sorted(self.labels)}", source=_src(self.volume))
        m = np.asarray(self.volume.array == self.labels[name])
        if not m.any():
            raise InputError(
                f"region {name!r} (label {self.labels[name]}) is empty: no voxel has that label; labels present: "
                f"{self.present_labels}",
                source=_src(self.volume),
                field=f"labels.{name}",
            )
        return m

    def masks(self) -> dict[str, np.ndarray]:
        """Boolean masks of all mapped regions (each must be non-empty)."""
        return {name: self.mask(name) for name in self.labels}


def read_label_map(path: str | Path, labels: Mapping[str, int], *, sidecar=None) -> LabelMap:
    """A NIfTI label map (values: integer labels) with the name mapping ``{region: label}``."""
    vol = read_nifti(path, sidecar, unit="1", modality="LABEL")
    return LabelMap(vol, labels)


# ---------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class RegionStatistics:
    """Statistics of an activity-concentration image within a region (see module docstring)."""

    name: str
    voxel_count: int
    volume_ml: float
    total_activity_mbq: float
    mean_bq_per_ml: float
    max_bq_per_ml: float
    mass_g: float | None
    mean_density_g_per_ml: float | None


def region_statistics(
    activity: Volume,
    mask: np.ndarray | Volume,
    *,
    name: str = "region",
    density: Volume | None = None,
) -> RegionStatistics:
    """Total activity (MBq), volume (mL), mass (g), mean and max (Bq/mL), voxel count of a region.

    ``activity`` is a concentration in Bq/mL (or kBq/mL, MBq/mL: converted). ``voxel_count`` is
    the number of voxels with non-zero weight.

    Raises
    ------
    InputError
        Empty region; mask or density on another grid; unit not a concentration; density not g/mL.
    """
    src = _src(activity)
    if activity.unit not in CONCENTRATION_UNITS:
        raise InputError(
            f"activity image must be a concentration in {sorted(CONCENTRATION_UNITS)}, got {activity.unit!r}",
            source=src,
            field="unit",
        )
    w = as_mask_array(mask, activity, name=name)
    inside = w > 0
    n = int(np.count_nonzero(inside))
    if n == 0:
        raise InputError(f"region {name!r} is empty (no voxel in the mask)", source=src, field=name)
    c = np.asarray(activity.array, dtype=np.float64) * CONCENTRATION_UNITS[activity.unit]
    dv = activity.voxel_volume_ml
    vol_ml = float(np.sum(w, dtype=np.float64)) * dv
    total_bq = float(np.sum(w * c, dtype=np.float64)) * dv
    mass = mean_rho = None
    if density is not None:
        if density.unit != "g/mL":
            raise InputError(f"density must be in g/mL, got {density.unit!r}", source=_src(density), field="density")
        if not density.same_grid(activity):
            raise InputError(
                "density volume is on another grid than the activity image; resample it first",
                source=_src(density),
                field="density",
            )
        rho = np.asarray(density.array, dtype=np.float64)
        mass = float(np.sum(w * rho, dtype=np.float64)) * dv
        mean_rho = mass / vol_ml
    return RegionStatistics(
        name=name,
        voxel_count=n,
        volume_ml=vol_ml,
        total_activity_mbq=total_bq / 1e6,
        mean_bq_per_ml=total_bq / vol_ml,
        max_bq_per_ml=float(c[inside].max()),
        mass_g=mass,
        mean_density_g_per_ml=mean_rho,
    )


# ---------------------------------------------------------------------------- body, remainder


def body_mask(ct: Volume, *, threshold_hu: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """Boolean body outline from a CT (HU > threshold, largest 6-connected component, holes filled).

    Raises :class:`InputError` if the CT is not in HU or no voxel is above the threshold.
    """
    if ct.unit not in ("HU", "hu"):
        raise InputError(f"CT values must be in HU, got {ct.unit!r}", source=_src(ct), field="unit")
    above = np.asarray(ct.array) > threshold_hu
    lab, n = ndimage.label(above, structure=CONNECTIVITY_6)
    if n == 0:
        raise InputError(f"no CT voxel is above {threshold_hu} HU: empty body", source=_src(ct))
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = lab == int(np.argmax(sizes))
    body = ndimage.binary_fill_holes(body, structure=CONNECTIVITY_6)
    # slice-wise (axial: one k) fill: a structure with no neighbours along k fills each slice's
    # enclosed background at once (the border value of the fill does not propagate along k).
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(body, structure=in_plane)


def remainder_mask(body: np.ndarray, organs: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> np.ndarray:
    """Body minus the union of the organ masks (a fractional organ mask counts where > 0).

    Raises :class:`InputError` on shape mismatch or an empty remainder.
    """
    body = np.asarray(body, dtype=bool)
    items = organs.items() if isinstance(organs, Mapping) else enumerate(organs)
    union = np.zeros(body.shape, dtype=bool)
    for key, m in items:
        m = np.asarray(m)
        if m.shape != body.shape:
            raise InputError(f"organ mask {key!r} has shape {m.shape}, the body {body.shape}: another grid", field=str(key))
        union |= m > 0
    rest = body & ~union
    if not rest.any():
        raise InputError("the remainder of body is empty (the organs cover the whole body)")
    return rest


# ---------------------------------------------------------------------------- lesions


def box_mask(volume: Volume, centre_mm: Sequence[float], half_width_mm: Sequence[float] | float) -> np.ndarray:
    """Voxels whose centres lie within a box around ``centre_mm`` (LPS).

    The box is aligned with the grid's index axes: along axis ``c`` the index distance from the
    centre is at most ``half_width_mm[c] / spacing_mm[c]``.
    """
    hw = np.broadcast_to(np.asarray(half_width_mm, dtype=np.float64), (3,))
    if np.any(hw <= 0):
        raise InputError(f"box half-widths must be positive, got {hw.tolist()}", field="half_width_mm")
    c = volume.physical_to_index(np.asarray(centre_mm, dtype=np.float64))
    r = hw / np.asarray(volume.spacing_mm)
    ni, nj, nk = volume.size_ijk
    lo = np.maximum(np.ceil(c - r - 1e-9), 0).astype(int)
    hi = np.minimum(np.floor(c + r + 1e-9), np.array([ni, nj, nk]) - 1).astype(int)
    m = np.zeros(volume.shape, dtype=bool)
    if np.any(hi < lo):
        raise InputError(f"the box around {list(centre_mm)} mm does not overlap the image", source=_src(volume), field="centre_mm")
    m[lo[2] : hi[2] + 1, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] = True
    return m


def threshold_in_box(
    image: Volume,
    within: np.ndarray,
    *,
    fraction_of_max: float | None = None,
    absolute: float | None = None,
    connected_to_max: bool = True,
) -> np.ndarray:
    """Threshold segmentation inside ``within`` (e.g. :func:`box_mask`).

    Exactly one of ``fraction_of_max`` (e.g. 0.42: keep voxels >= 42 % of the maximum inside
    ``within``) or ``absolute`` (keep voxels >= this value, in the image's unit) is given. With
    ``connected_to_max`` only the 6-connected component holding the maximum is kept (drops
    neighbouring hot structures inside the box).
    """
    if (fraction_of_max is None) == (absolute is None):
        raise InputError("give exactly one of fraction_of_max and absolute", field="threshold")
    within = np.asarray(within, dtype=bool)
    if within.shape != image.shape:
        raise InputError(f"'within' mask has shape {within.shape}, the image {image.shape}: another grid", field="within")
    if not within.any():
        raise InputError("the search region ('within') is empty", field="within")
    v = np.asarray(image.array, dtype=np.float64)
    vmax = float(v[within].max())
    if fraction_of_max is not None:
        if not 0 < fraction_of_max <= 1:
            raise InputError(f"fraction_of_max must be in (0, 1], got {fraction_of_max}", field="fraction_of_max")
        if vmax <= 0:
            raise InputError("the maximum inside the search region is not positive", source=_src(image), field="within")
        thr = fraction_of_max * vmax
    else:
        thr = float(absolute)  # type: ignore[arg-type]
    m = within & (v >= thr)
    if not m.any():
        raise InputError(f"no voxel inside the search region is >= {thr:.6g} {image.unit} (max {vmax:.6g})", source=_src(image))
    if connected_to_max:
        vin = np.where(m, v, -np.inf)
        seed = np.unravel_index(int(np.argmax(vin)), v.shape)
        lab, _ = ndimage.label(m, structure=CONNECTIVITY_6)
        m = lab == lab[seed]
    return m


def region_grow(
    image: Volume,
    seed_ijk: Sequence[int],
    *,
    lower: float,
    upper: float | None = None,
    within: np.ndarray | None = None,
) -> np.ndarray:
    """6-connected region grown from ``seed_ijk`` = ``(i, j, k)`` over voxels with ``lower <= v <= upper``.

    ``within`` optionally bounds the growth (e.g. a box). Raises :class:`InputError` if the seed
    is outside the image or its own value is outside the bounds.
    """
    seed = tuple(int(x) for x in seed_ijk)
    if len(seed) != 3 or any(s < 0 or s >= n for s, n in zip(seed, image.size_ijk)):
        raise InputError(f"seed {tuple(seed_ijk)} (i, j, k) is outside the image of size {image.size_ijk}", field="seed_ijk")
    v = np.asarray(image.array, dtype=np.float64)
    ok = v >= lower
    if upper is not None:
        ok &= v <= upper
    if within is not None:
        within = np.asarray(within, dtype=bool)
        if within.shape != image.shape:
            raise InputError(f"'within' mask has shape {within.shape}, the image {image.shape}", field="within")
        ok &= within
    i, j, k = seed
    if not ok[k, j, i]:
        raise InputError(
            f"seed voxel value {v[k, j, i]:.6g} is outside the growth bounds [{lower}, {upper if upper is not None else 'inf'}]",
            source=_src(image),
            field="seed_ijk",
        )
    lab, _ = ndimage.label(ok, structure=CONNECTIVITY_6)
    return lab == lab[k, j, i]
