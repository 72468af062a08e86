"""Join the bed positions of a multi-bed SPECT or PET study into one volume.

A whole-body SPECT or PET is often acquired at several couch (bed) positions that overlap along
the patient's axis. Some systems export one reconstructed series per bed: each a volume with the
same orientation and in-plane grid, shifted along the slice axis, overlapping its neighbour by a
few slices. :func:`join_beds` puts such beds onto one grid spanning all of them.

Geometry (DICOM PS3.3 C.7.6.2.1.1, through :class:`~mrtdose.imaging.volume.Volume`): a bed's voxel
centres are ``p = o + D S (i, j, k)``, from Image Position (Patient) (0020,0032), Image
Orientation (Patient) (0020,0037), Pixel Spacing (0028,0030) and the slice spacing (Spacing
Between Slices (0018,0088) for NM, the spacing of the positions for PET/CT). Beds can be joined
when they share

* the direction cosines ``D`` (each element within :data:`DIRECTION_TOLERANCE`),
* the voxel spacing (within :data:`SPACING_TOLERANCE_MM`) and the in-plane size (rows, columns),
* the in-plane position: the origins differ only along the slice axis ``d_k`` (the in-plane
  components of the difference within :data:`POSITION_TOLERANCE_MM`),
* unit and modality, and -- where given -- patient (Patient ID (0010,0020)) and frame of
  reference (Frame of Reference UID (0020,0052): positions of different frames cannot be compared),
* for images in counts, the acquisition duration (Actual Frame Duration (0018,1242)): counts
  acquired for different times are on different scales and cannot be joined without a per-bed
  calibration (convert each bed to Bq/mL first). Images in activity concentration join as they are.

The beds are sorted along ``d_k``. Each must touch or overlap the union of the ones below it; a gap
(a slab of the patient no bed measured) is an error naming the bed above the gap.

The joined grid
---------------
The lowest bed along ``d_k`` defines the grid: its origin, and slices every ``dz`` from it up to
the last slice centre that lies within some bed's voxel extent. A bed whose slice positions fall
on the grid (within :data:`SLICE_FRACTION_TOLERANCE` of a slice) is copied; a bed offset by a
fraction of a slice is resampled along the slice axis with linear interpolation between its slice
centres (within half a slice of its end faces, where there is no neighbour to interpolate with,
its end slice's value is used -- the voxel fills its extent), and :attr:`BedJoinInfo.notes` says so.

Overlap
-------
Where beds overlap, the joined value is a weighted mean, ``v = sum_b w_b v_b / sum_b w_b``:

``"linear"`` (default)
    Feathering: a bed's weight at a slice is the distance (in slices) from the slice centre to
    the nearer end face of the bed's extent. In the overlap of two beds the normalised weights
    therefore ramp linearly from 1 to 0 across the overlap -- the usual whole-body join, which
    down-weights the noisy end slices of each bed (the sensitivity of a SPECT or PET bed falls
    towards its axial edges).
``"average"``
    Equal weights for every bed that covers the slice.

Both are partitions of unity, so a region where every bed holds the same values is reproduced
exactly (to floating-point rounding), whatever the weights.

Times
-----
The joined image's time is the earliest bed's. Each bed's values refer to its own time (its
acquisition start; for PET with Decay Correction START, Series Time, C.8.9.1). With
``half_life_h`` each bed is decay corrected to the joined time by ``2^((t_b - t_0)/T)``
(physical decay only: biological change during the minutes between beds is neglected). For an
image in counts with equal durations this is exact too, since the counts in an equally long
window shifted by ``dt`` scale by ``exp(-lambda dt)``. Without ``half_life_h`` the values are not
corrected and a note records the largest time difference.

Example
-------
>>> import numpy as np
>>> v = np.arange(10.0)[:, None, None] * np.ones((10, 2, 2))
>>> a = Volume(array=v[:6], spacing_mm=(4, 4, 4), unit="Bq/mL", source_files=("bed1.dcm",))
>>> b = Volume(array=v[4:], spacing_mm=(4, 4, 4), origin_mm=(0, 0, 16), unit="Bq/mL", source_files=("bed2.dcm",))
>>> joined, info = join_beds([b, a])
>>> joined.shape, joined.array[:, 0, 0].tolist() == list(range(10))
((10, 2, 2), True)
>>> [bed.source for bed in info.beds], info.beds[1].overlap_with_previous_mm
(['bed1.dcm', 'bed2.dcm'], 8.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Sequence

import numpy as np

from mrtdose.errors import InputError
from mrtdose.imaging.volume import Volume

__all__ = ["BedInfo", "BedJoinInfo", "join_beds", "OVERLAP_METHODS"]

OVERLAP_METHODS = ("linear", "average")

#: Largest element-wise difference of two beds' direction matrices. Direction cosines are Decimal
#: Strings (up to 16 characters, PS3.5 6.2) that vendors round to about 6 digits; 1e-4 (a 0.006
#: degree tilt) accepts that rounding and rejects any real difference in orientation.
DIRECTION_TOLERANCE = 1e-4

#: Largest difference of two beds' voxel spacings (mm). Beds of one reconstruction share the same
#: spacing; 1e-4 mm accepts Decimal String rounding and keeps the accumulated position error over
#: 200 slices below 0.02 mm.
SPACING_TOLERANCE_MM = 1e-4

#: Largest in-plane offset (mm) of two beds' origins, and the tolerance of the gap test. Image
#: Position (Patient) is written with at least 2 decimals by the vendors we know (0.005 mm
#: rounding); 0.01 mm is far below any emission-image voxel (>= 1 mm).
POSITION_TOLERANCE_MM = 0.01

#: A bed whose slice positions lie within this fraction of a slice of the joined grid is copied;
#: beyond it the bed is resampled along the slice axis.
SLICE_FRACTION_TOLERANCE = 1e-3

#: Relative tolerance of "the same acquisition duration" for beds in counts (durations are whole
#: milliseconds in DICOM, and beds are minutes long).
DURATION_RTOL = 1e-6

#: Smallest feathering weight (slices) of a bed at a slice it covers.
_MIN_WEIGHT = 1e-9


@dataclass(frozen=True)
class BedInfo:
    """One bed of a join, in the order along the slice axis."""

    #: Position of the bed in the sequence given to :func:`join_beds`.
    input_index: int
    #: First source file of the bed (``None`` if the volume has none).
    source: str | None
    #: LPS z range (mm) of the bed's voxel extent (faces, not centres).
    z_extent_mm: tuple[float, float]
    #: First joined slice the bed contributes to, and how many.
    first_slice: int
    n_slices: int
    #: Offset of the bed's slices from the joined grid, in slices (0: on the grid).
    slice_offset: float
    #: True if the bed was interpolated along the slice axis (fractional offset).
    resampled: bool
    #: Overlap (mm, along the slice axis) with the union of the beds below; 0 when contiguous,
    #: ``None`` for the first bed.
    overlap_with_previous_mm: float | None
    acquisition_time: datetime | None
    duration_s: float | None
    #: Factor the bed's values were multiplied by (decay correction to the joined time).
    decay_factor: float

    def to_dict(self) -> dict[str, Any]:
        return {"input_index": self.input_index, "source": self.source, "z_extent_mm": list(self.z_extent_mm),
                "first_slice": self.first_slice, "n_slices": self.n_slices, "slice_offset": self.slice_offset,
                "resampled": self.resampled, "overlap_with_previous_mm": self.overlap_with_previous_mm,
                "acquisition_time": self.acquisition_time.isoformat() if self.acquisition_time else None,
                "duration_s": self.duration_s, "decay_factor": self.decay_factor}


@dataclass(frozen=True)
class BedJoinInfo:
    """How a multi-bed image was joined (provenance)."""

    beds: tuple[BedInfo, ...]
    overlap: str
    method: str
    acquisition_time: datetime | None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"beds": [b.to_dict() for b in self.beds], "overlap": self.overlap, "method": self.method,
                "acquisition_time": self.acquisition_time.isoformat() if self.acquisition_time else None,
                "notes": list(self.notes)}


def _src(v: Volume, b: int) -> str:
    return v.source_files[0] if v.source_files else f"bed {b}"


def _z_extent(v: Volume) -> tuple[float, float]:
    n = np.array(v.size_ijk, dtype=np.float64)
    corners = np.array([[a, b, c] for a in (-0.5, n[0] - 0.5) for b in (-0.5, n[1] - 0.5) for c in (-0.5, n[2] - 0.5)])
    z = v.index_to_physical(corners)[:, 2]
    return (float(z.min()), float(z.max()))


def _optional(values: Sequence[Any] | None, n: int, name: str) -> list[Any]:
    if values is None:
        return [None] * n
    vals = list(values)
    if len(vals) != n:
        raise InputError(f"{name} has {len(vals)} entries for {n} beds", field=name)
    return vals


def _check_beds(vols: list[Volume], patient_ids: list[Any], fors: list[Any], durations: list[Any]) -> None:
    ref = vols[0]
    r = _src(ref, 0)
    for b, v in enumerate(vols[1:], start=1):
        s = _src(v, b)
        dev = float(np.max(np.abs(v.direction - ref.direction)))
        if dev > DIRECTION_TOLERANCE:
            raise InputError(f"bed orientation differs from the first bed's ({r}): max direction-cosine difference "
                             f"{dev:.3g} > {DIRECTION_TOLERANCE:g}; beds of one study share Image Orientation (Patient)",
                             source=s, field="direction")
        ds = np.abs(np.subtract(v.spacing_mm, ref.spacing_mm))
        if float(ds.max()) > SPACING_TOLERANCE_MM:
            raise InputError(f"voxel spacing {list(v.spacing_mm)} mm differs from the first bed's "
                             f"{list(ref.spacing_mm)} mm ({r})", source=s, field="spacing_mm")
        if v.shape[1:] != ref.shape[1:]:
            raise InputError(f"in-plane size {v.shape[1:]} (rows, columns) differs from the first bed's "
                             f"{ref.shape[1:]} ({r})", source=s, field="array")
        if v.unit != ref.unit:
            raise InputError(f"unit {v.unit!r} differs from the first bed's {ref.unit!r} ({r})", source=s, field="unit")
        if v.modality != ref.modality:
            raise InputError(f"modality {v.modality!r} differs from the first bed's {ref.modality!r} ({r})",
                             source=s, field="modality")
    for name, vals, what in (("patient_ids", patient_ids, "patient (Patient ID)"),
                             ("frame_of_reference_uids", fors, "frame of reference (Frame of Reference UID)")):
        known = [(b, x) for b, x in enumerate(vals) if x]
        for b, x in known[1:]:
            if x != known[0][1]:
                raise InputError(f"{what} {x!r} differs from {known[0][1]!r} of {_src(vols[known[0][0]], known[0][0])}: "
                                 "beds of one study only", source=_src(vols[b], b), field=name)
    if ref.unit.lower() == "counts" and len(vols) > 1:
        for b, d in enumerate(durations):
            if d is None or not d > 0:
                raise InputError("an image in counts needs each bed's acquisition duration to be joined",
                                 source=_src(vols[b], b), field="durations_s")
        for b, d in enumerate(durations[1:], start=1):
            if abs(d - durations[0]) > DURATION_RTOL * durations[0]:
                raise InputError(f"acquisition duration {d:g} s differs from the first bed's {durations[0]:g} s: counts "
                                 "acquired for different times cannot be joined; convert each bed to Bq/mL first",
                                 source=_src(vols[b], b), field="durations_s")


def join_beds(
    volumes: Sequence[Volume],
    *,
    overlap: Literal["linear", "average"] = "linear",
    half_life_h: float | None = None,
    durations_s: Sequence[float | None] | None = None,
    patient_ids: Sequence[str | None] | None = None,
    frame_of_reference_uids: Sequence[str | None] | None = None,
) -> tuple[Volume, BedJoinInfo]:
    """Join overlapping or contiguous bed volumes into one volume (module docstring).

    Parameters
    ----------
    volumes
        The beds, in any order; checked to share orientation, spacing, in-plane grid, unit and
        modality. Errors name the offending bed's first source file.
    overlap
        ``"linear"`` (feathering) or ``"average"``.
    half_life_h
        Physical half-life: decay-correct each bed to the earliest bed's time. ``None``: no
        correction (a note records the spread of the times).
    durations_s, patient_ids, frame_of_reference_uids
        Per bed (same order as ``volumes``; ``None`` entries unknown). Durations are required for
        images in counts and must agree.

    Returns
    -------
    The joined volume (float64; time = the earliest bed's; source files of all beds, in order
    along the slice axis) and a :class:`BedJoinInfo`.
    """
    vols = list(volumes)
    if not vols:
        raise InputError("no bed to join", field="volumes")
    for b, v in enumerate(vols):
        if not isinstance(v, Volume):
            raise InputError(f"bed {b} is a {type(v).__name__}, not a Volume", field="volumes")
    if overlap not in OVERLAP_METHODS:
        raise InputError(f"overlap must be one of {OVERLAP_METHODS}, got {overlap!r}", field="overlap")
    if half_life_h is not None and not (isinstance(half_life_h, (int, float)) and half_life_h > 0):
        raise InputError(f"half_life_h must be > 0, got {half_life_h!r}", field="half_life_h")
    n_b = len(vols)
    durations = _optional(durations_s, n_b, "durations_s")
    _check_beds(vols, _optional(patient_ids, n_b, "patient_ids"),
                _optional(frame_of_reference_uids, n_b, "frame_of_reference_uids"), durations)

    ref = vols[0]
    d = ref.direction
    dz = ref.spacing_mm[2]
    # origins relative to the first given bed: in-plane components must vanish; along d_k in slices
    pos = np.zeros(n_b)
    for b, v in enumerate(vols):
        delta = np.subtract(v.origin_mm, ref.origin_mm)
        inplane = np.array([delta @ d[:, 0], delta @ d[:, 1]])
        if float(np.max(np.abs(inplane))) > POSITION_TOLERANCE_MM:
            raise InputError(f"the bed is shifted in-plane by {np.round(inplane, 3).tolist()} mm (along rows, columns) "
                             f"relative to {_src(ref, 0)}: beds must share the in-plane grid", source=_src(v, b),
                             field="origin_mm")
        pos[b] = float(delta @ d[:, 2]) / dz
    order = sorted(range(n_b), key=lambda b: pos[b])
    tol = POSITION_TOLERANCE_MM / dz
    s0 = pos[order[0]]
    # gaps and beds contained in others, along the slice axis (in slices from the lowest bed)
    top = -math.inf
    overlaps: dict[int, float | None] = {}
    for rank, b in enumerate(order):
        lo, hi = pos[b] - s0 - 0.5, pos[b] - s0 + vols[b].shape[0] - 0.5
        if rank > 0:
            if lo > top + tol:
                raise InputError(
                    f"gap of {(lo - top) * dz:.3g} mm along the slice axis between this bed and the beds below it "
                    "(no bed measured that slab of the patient): a bed is missing?", source=_src(vols[b], b),
                    field="origin_mm")
            if hi <= top + tol:
                raise InputError("the bed lies entirely within the beds below it (the same bed given twice?)",
                                 source=_src(vols[b], b), field="origin_mm")
            overlaps[b] = round(float(max(0.0, top - lo)) * dz, 9)
        else:
            overlaps[b] = None
        top = max(top, hi)
    n_joined = int(math.floor(top + tol)) + 1  # slice centres within the union of the extents
    first = vols[order[0]]

    # times and decay correction
    times = [v.acquisition_time for v in vols]
    known = [t for t in times if t is not None]
    t0 = min(known) if known else None
    notes: list[str] = []
    factors = [1.0] * n_b
    if t0 is not None:
        spread_min = max((t - t0).total_seconds() for t in known) / 60.0
        if len(known) < n_b:
            notes.append("some beds have no acquisition time: their values are not decay corrected")
        if spread_min > 0:
            if half_life_h is not None:
                factors = [2.0 ** ((t - t0).total_seconds() / 3600.0 / half_life_h) if t is not None else 1.0
                           for t in times]
                notes.append(f"beds decay-corrected to the earliest bed's time (half-life {half_life_h:g} h; up to "
                             f"{spread_min:.3g} min later, factor up to {max(factors):.6g})")
            else:
                notes.append(f"bed times differ by up to {spread_min:.3g} min and no half-life was given: values not "
                             "decay corrected to the joined time")

    num = np.zeros((n_joined,) + first.shape[1:], dtype=np.float64)
    den = np.zeros((n_joined, 1, 1), dtype=np.float64)
    beds: list[BedInfo] = []
    parts: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    g = np.arange(n_joined, dtype=np.float64)
    for b in order:
        v = vols[b]
        nk = v.shape[0]
        offset = pos[b] - s0
        frac = offset - round(offset)
        resampled = abs(frac) > SLICE_FRACTION_TOLERANCE
        if not resampled:
            offset = float(round(offset))
        t = g - offset  # the bed's continuous slice index at each joined slice
        inside = (t >= -0.5 - tol) & (t <= nk - 0.5 + tol)
        idx = np.nonzero(inside)[0]
        j0, j1 = int(idx[0]), int(idx[-1]) + 1
        arr = np.asarray(v.array, dtype=np.float64)
        tt = np.clip(t[j0:j1], 0.0, nk - 1.0)
        if resampled:
            k0 = np.minimum(np.floor(tt).astype(np.int64), max(nk - 2, 0))
            w1 = (tt - k0)[:, None, None]
            k1 = np.minimum(k0 + 1, nk - 1)
            vals = (1.0 - w1) * arr[k0] + w1 * arr[k1]
            notes.append(f"bed {_src(v, b)} is offset by {frac:+.3f} slice from the joined grid: resampled along the "
                         "slice axis with linear interpolation")
        else:
            vals = arr[np.rint(tt).astype(np.int64)]
        if overlap == "linear":
            # distance to the nearer end face; floored so that a slice centre lying exactly on the end faces
            # of every bed covering it (half-slice offsets) gets equal weights instead of 0/0
            w = np.minimum(t[j0:j1] + 0.5, nk - 0.5 - t[j0:j1]).clip(min=_MIN_WEIGHT)
        else:
            w = np.ones(j1 - j0)
        w = w[:, None, None]
        parts.append((j0, j1, w, vals if factors[b] == 1.0 else factors[b] * vals))
        den[j0:j1] += w
        beds.append(BedInfo(input_index=b, source=v.source_files[0] if v.source_files else None,
                            z_extent_mm=_z_extent(v), first_slice=j0, n_slices=j1 - j0,
                            slice_offset=round(float(frac), 6) if resampled else 0.0, resampled=resampled,
                            overlap_with_previous_mm=overlaps[b], acquisition_time=times[b],
                            duration_s=None if durations[b] is None else float(durations[b]),
                            decay_factor=factors[b]))
    for j0, j1, w, vals in parts:  # normalised weights: a slice seen by one bed is copied exactly
        num[j0:j1] += (w / den[j0:j1]) * vals
    joined = num
    files = tuple(f for b in order for f in vols[b].source_files)
    method = (f"{n_b} bed(s) joined along the slice axis onto the lowest bed's grid ({n_joined} slices of {dz:g} mm); "
              + ("overlaps feathered: weights ramp linearly across each overlap" if overlap == "linear"
                 else "overlaps averaged with equal weights"))
    vol = Volume(array=joined, spacing_mm=first.spacing_mm, origin_mm=first.origin_mm, direction=first.direction,
                 unit=first.unit, acquisition_time=t0, modality=first.modality, source_files=files,
                 description=(f"{first.description} " if first.description else "") + f"({n_b} beds joined)")
    return vol, BedJoinInfo(beds=tuple(beds), overlap=overlap, method=method, acquisition_time=t0, notes=tuple(notes))
