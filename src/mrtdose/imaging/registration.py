"""Registration of serial time points: CT-to-CT rigid (and optional B-spline) registration, the
propagation of SPECT/PET images and masks through the result, and registration-quality metrics.

Every time point of a multi-time-point study is registered to a reference time point through its
CT; the SPECT (or PET) and the masks drawn on that time point then follow the CT's transform,
because each emission image shares its CT's frame of reference (hybrid SPECT/CT).

Transform convention
--------------------
A transform ``T`` maps a point of the **fixed** (reference) image to the corresponding point of
the **moving** image, both in LPS mm (:mod:`mrtdose.imaging.volume`). This is ITK's convention
(the ITK Software Guide, section 3.6 "Transforms", and SimpleITK's registration overview
https://simpleitk.readthedocs.io/en/master/registrationOverview.html): resampling the moving
image onto the fixed grid reads the moving image at ``T(p)`` for every fixed voxel centre ``p``.

A rigid transform is ITK's ``Euler3DTransform``::

    T(p) = R (p - c) + c + t,      R = Rz(az) @ Rx(ax) @ Ry(ay)

with ``c`` the fixed centre of rotation, ``t`` the translation (mm) and ``(ax, ay, az)`` the
rotation angles (rad) about the LPS axes x, y, z (ITK's default "ZXY" composition).

Methods
-------
* **Rigid registration** (:func:`register_rigid`): ITK v4 registration framework through
  SimpleITK (Lowekamp et al. 2013, Front. Neuroinform. 7:45; Yaniv et al. 2018, J. Digit. Imaging
  31:290). Metric: Mattes mutual information (Mattes et al. 2003, IEEE Trans. Med. Imaging
  22:120-128), or the mean of squared differences for same-modality, same-unit images. Optimiser:
  regular-step gradient descent with scales that make one step of every parameter move the
  image by about the same physical distance (rotations scaled by the RMS radius of the fixed field
  of view). Three resolution levels (shrink factors 4, 2, 1 with Gaussian smoothing of 2, 1, 0
  voxels), the usual coarse-to-fine pyramid.
* **Deformable registration** (:func:`register_deformable`): a cubic B-spline free-form
  deformation on a control-point grid (Rueckert et al. 1999, IEEE Trans. Med. Imaging
  18:712-721), on top of a rigid initialisation, Mattes mutual information, L-BFGS-B
  (Byrd et al. 1995, SIAM J. Sci. Comput. 16:1190). Regularisation is only the control-point
  spacing (no bending-energy term, unlike Rueckert et al.): keep the spacing coarse (>= 30 mm).
* **Propagation** (:func:`apply_transform`): through :func:`mrtdose.imaging.resample.resample`
  (rigid) or a dense displacement field (deformable); values keep their unit (activity
  concentrations stay Bq/mL; a rigid motion conserves volume, so concentrations need no Jacobian
  correction); masks use ``"nearest"``; optional conservation of the total.
* **Quality** (:func:`mask_overlap`, :func:`surface_distances`, :func:`registration_quality`):
  Dice coefficient (Dice 1945, Ecology 26:297-302), Jaccard index (Jaccard 1912, New Phytol.
  11:37-50), symmetric mean surface distance and the 95th-percentile Hausdorff distance as
  defined in Taha & Hanbury 2015 (BMC Med. Imaging 15:29), computed with Euclidean distance
  transforms (:func:`scipy.ndimage.distance_transform_edt`).

Reproducibility
---------------
The metric is sampled at random positions drawn from a fixed seed (``seed`` >= 1; SimpleITK
treats 0 as "seed from the wall clock", which is therefore refused), or at every voxel
(``sampling_percentage=None``); the optimiser scales are set explicitly, not estimated from a
random sample. Repeated runs then agree to about 1e-13 (rad, mm): ITK sums per-thread partial
results in whatever order the threads finish. With ``number_of_threads=1`` a registration is
repeatable bit for bit (tested).

SimpleITK (``SimpleITK==2.5.7``) is imported only by the functions that need it; the quality
metrics and the propagation of a rigid transform are pure numpy/scipy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from scipy import ndimage

from mrtdose.errors import InputError
from mrtdose.imaging.resample import SNAP_TOLERANCE, resample
from mrtdose.imaging.volume import Volume

METRICS = ("mattes_mi", "mean_squares")
INITIALISATIONS = ("geometry", "moments", "identity")
INTERPOLATIONS = ("linear", "nearest")

#: Multi-resolution schedule (Mattes et al. 2003 used a coarse-to-fine pyramid; these are the
#: values of SimpleITK's registration examples): shrink factors and Gaussian sigmas (voxels).
SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_SIGMAS_VOXELS = (2.0, 1.0, 0.0)

#: Fewest metric samples per resolution level: the sampling percentage is raised on coarse
#: levels so that the 50-bin joint histogram of Mattes MI has enough counts.
MIN_SAMPLES_PER_LEVEL = 20_000

#: The same floor for B-spline registration, lower because there the cost of one metric
#: evaluation is proportional to samples x coefficients (ITK's v4 metrics accumulate a dense
#: derivative over all B-spline coefficients for every sample).
MIN_SAMPLES_DEFORMABLE = 5_000

#: Smallest image size (voxels) along each axis that registration accepts.
MIN_SIZE = 4

_REFERENCES = {
    "rigid": "Mattes et al. 2003 IEEE TMI 22:120 (Mattes MI); ITK v4 Euler3DTransform via SimpleITK "
    "(Lowekamp et al. 2013 Front Neuroinform 7:45; Yaniv et al. 2018 J Digit Imaging 31:290)",
    "deformable": "Rueckert et al. 1999 IEEE TMI 18:712 (B-spline FFD); Mattes et al. 2003 IEEE TMI 22:120; "
    "L-BFGS-B (Byrd et al. 1995); ITK BSplineTransform via SimpleITK",
}


# ============================================================================ SimpleITK bridge


def _sitk():
    try:
        import SimpleITK as sitk  # noqa: N813
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "image registration needs SimpleITK (pip install SimpleITK==2.5.7)"
        ) from None
    return sitk


def _sitk_version() -> str:
    sitk = _sitk()
    return f"SimpleITK {sitk.Version.VersionString()} (ITK {sitk.Version.ITKVersionString()})"


def to_sitk(volume: Volume):
    """The volume as a ``SimpleITK.Image`` with identical origin, spacing and direction.

    ``array[k, j, i]`` becomes the image pixel at index ``(i, j, k)`` (``GetImageFromArray``);
    spacing and origin are copied as ``(x, y, z)``; the direction matrix is passed row-major, so
    its columns stay the LPS unit vectors of the index axes (ITK's convention, the same as
    :class:`Volume`). Boolean arrays become ``uint8`` (ITK has no boolean pixel type) and
    float16 becomes float32; every other numeric dtype is kept.

    Example
    -------
    >>> v = Volume(array=np.arange(24.0).reshape(2, 3, 4), spacing_mm=(1, 2, 3), unit="HU")
    >>> img = to_sitk(v)
    >>> img.GetSize(), img.GetSpacing(), img.GetPixel(3, 2, 1) == float(v.array[1, 2, 3])
    ((4, 3, 2), (1.0, 2.0, 3.0), True)
    """
    sitk = _sitk()
    arr = np.asarray(volume.array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=False)
    img.SetSpacing(tuple(float(s) for s in volume.spacing_mm))
    img.SetOrigin(tuple(float(o) for o in volume.origin_mm))
    img.SetDirection(tuple(float(d) for d in np.asarray(volume.direction).ravel()))
    return img


def from_sitk(
    image,
    unit: str,
    *,
    modality: str = "OT",
    acquisition_time=None,
    source_files: Sequence[str] = (),
    description: str = "",
) -> Volume:
    """A :class:`Volume` from a 3D scalar ``SimpleITK.Image`` (the inverse of :func:`to_sitk`).

    The unit is required: an ITK image does not carry one. Raises :class:`InputError` for an image
    that is not 3D or not scalar.
    """
    sitk = _sitk()
    if image.GetDimension() != 3:
        raise InputError(f"expected a 3D image, got {image.GetDimension()}D", field="image")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components per pixel", field="image"
        )
    return Volume(
        array=sitk.GetArrayFromImage(image),
        spacing_mm=image.GetSpacing(),
        origin_mm=image.GetOrigin(),
        direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
        unit=unit,
        modality=modality,
        acquisition_time=acquisition_time,
        source_files=tuple(source_files),
        description=description,
    )


# ============================================================================ transforms


def euler_zxy_matrix(angles_rad: Sequence[float]) -> np.ndarray:
    """ITK ``Euler3DTransform`` rotation matrix ``Rz(az) @ Rx(ax) @ Ry(ay)`` for ``(ax, ay, az)``."""
    ax, ay, az = (float(a) for a in angles_rad)
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx @ ry


def euler_zxy_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """Angles ``(ax, ay, az)`` (rad) of a rotation matrix, ITK's ``Euler3DTransform`` ZXY convention
    (``itk::Euler3DTransform::ComputeMatrixParameters``)."""
    m = np.asarray(rotation, dtype=np.float64)
    ax = math.asin(max(-1.0, min(1.0, m[2, 1])))
    a = math.cos(ax)
    if abs(a) > 1e-5:
        ay = math.atan2(-m[2, 0] / a, m[2, 2] / a)
        az = math.atan2(-m[0, 1] / a, m[1, 1] / a)
    else:  # gimbal lock: az is set to zero, as ITK does
        az = 0.0
        ay = math.atan2(m[1, 0], m[0, 0])
    return (ax, ay, az)


def _readonly(a, shape) -> np.ndarray:
    arr = np.array(a, dtype=np.float64)
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise InputError(f"expected finite values of shape {shape}, got {arr.shape}")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False, kw_only=True)
class RigidTransform:
    """A rigid transform ``T(p) = R (p - c) + c + t`` from fixed to moving LPS mm. Immutable.

    Attributes
    ----------
    rotation
        3x3 proper rotation matrix ``R`` (``det = +1``).
    translation_mm
        ``t`` (mm, LPS).
    centre_mm
        Centre of rotation ``c`` (mm, LPS, in the fixed image).
    metric, metric_value
        Similarity metric and its final value at the finest level (SimpleITK's sign: Mattes MI is
        reported negative, lower is better); ``None`` for a transform not found by registration.
    iterations
        Optimiser iteration events over all resolution levels (for L-BFGS-B these include the
        line-search evaluations).
    stop_condition
        The optimiser's stop description at the last level.
    settings
        The registration settings (provenance).
    """

    rotation: np.ndarray
    translation_mm: np.ndarray
    centre_mm: np.ndarray
    metric: str | None = None
    metric_value: float | None = None
    iterations: int = 0
    stop_condition: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = _readonly(self.rotation, (3, 3))
        if float(np.max(np.abs(r.T @ r - np.eye(3)))) > 1e-6 or np.linalg.det(r) < 0:
            raise InputError("rotation must be a proper orthonormal matrix (det +1)", field="rotation")
        object.__setattr__(self, "rotation", r)
        object.__setattr__(self, "translation_mm", _readonly(self.translation_mm, (3,)))
        object.__setattr__(self, "centre_mm", _readonly(self.centre_mm, (3,)))
        object.__setattr__(self, "settings", dict(self.settings))

    # ------------------------------------------------------------------ construction

    @classmethod
    def identity(cls, centre_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> "RigidTransform":
        """The identity (about ``centre_mm``)."""
        return cls(rotation=np.eye(3), translation_mm=np.zeros(3), centre_mm=centre_mm)

    @classmethod
    def from_parameters(
        cls, angles_rad: Sequence[float], translation_mm: Sequence[float], centre_mm: Sequence[float] = (0.0, 0.0, 0.0)
    ) -> "RigidTransform":
        """From Euler angles ``(ax, ay, az)`` (rad, ITK ZXY convention), translation and centre."""
        return cls(rotation=euler_zxy_matrix(angles_rad), translation_mm=translation_mm, centre_mm=centre_mm)

    # ------------------------------------------------------------------ properties

    @property
    def angles_rad(self) -> tuple[float, float, float]:
        """Euler angles ``(ax, ay, az)`` in rad (ITK ``Euler3DTransform`` ZXY convention)."""
        return euler_zxy_angles(self.rotation)

    @property
    def parameters(self) -> tuple[float, ...]:
        """``(ax, ay, az, tx, ty, tz)``: rad and mm, the order of ITK's ``Euler3DTransform``."""
        return (*self.angles_rad, *(float(x) for x in self.translation_mm))

    @property
    def rotation_angle_rad(self) -> float:
        """Total rotation angle (rad) of ``R`` (axis-angle magnitude)."""
        return math.acos(max(-1.0, min(1.0, (float(np.trace(self.rotation)) - 1.0) / 2.0)))

    @property
    def offset_mm(self) -> np.ndarray:
        """``b`` in ``T(p) = R p + b`` (``b = c + t - R c``)."""
        return self.centre_mm + self.translation_mm - self.rotation @ self.centre_mm

    @property
    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix of ``T`` (fixed LPS mm -> moving LPS mm)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.offset_mm
        return m

    # ------------------------------------------------------------------ operations

    def apply_to_points(self, points_mm: Sequence[float] | np.ndarray) -> np.ndarray:
        """``T(p)`` for points ``(..., 3)`` in LPS mm."""
        p = np.asarray(points_mm, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise InputError(f"points must have shape (..., 3), got {p.shape}", field="points_mm")
        return p @ self.rotation.T + self.offset_mm

    def inverse(self) -> "RigidTransform":
        """``T^-1`` about the same centre: ``R' = R^T``, ``t' = -R^T t``."""
        return RigidTransform(rotation=self.rotation.T, translation_mm=-self.rotation.T @ self.translation_mm, centre_mm=self.centre_mm)

    def compose(self, inner: "RigidTransform") -> "RigidTransform":
        """``self(inner(p))`` (about ``inner``'s centre)."""
        r = self.rotation @ inner.rotation
        b = self.rotation @ inner.offset_mm + self.offset_mm
        c = inner.centre_mm
        return RigidTransform(rotation=r, translation_mm=b - c + r @ c, centre_mm=c)

    def displacement_field_mm(self, reference: Volume) -> np.ndarray:
        """``T(p) - p`` at the voxel centres of ``reference``, shape ``(nk, nj, ni, 3)`` (x, y, z mm)."""
        return _grid_points(reference) @ (self.rotation - np.eye(3)).T + self.offset_mm

    def to_sitk(self):
        """A ``SimpleITK.Euler3DTransform`` with the same centre, angles and translation."""
        sitk = _sitk()
        t = sitk.Euler3DTransform()
        t.SetCenter(tuple(float(x) for x in self.centre_mm))
        t.SetMatrix(tuple(float(x) for x in self.rotation.ravel()))
        t.SetTranslation(tuple(float(x) for x in self.translation_mm))
        return t

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (with the convention spelled out)."""
        ax, ay, az = self.angles_rad
        return {
            "type": "rigid",
            "convention": "maps fixed (reference) LPS mm to moving LPS mm: T(p) = R (p - c) + c + t; "
            "R = Rz(az) Rx(ax) Ry(ay) (ITK Euler3DTransform)",
            "rotation": self.rotation.tolist(),
            "translation_mm": self.translation_mm.tolist(),
            "centre_mm": self.centre_mm.tolist(),
            "angles_rad": [ax, ay, az],
            "angles_deg": [math.degrees(ax), math.degrees(ay), math.degrees(az)],
            "metric": self.metric,
            "metric_value": self.metric_value,
            "iterations": self.iterations,
            "stop_condition": self.stop_condition,
            "settings": dict(self.settings),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RigidTransform":
        """Inverse of :meth:`to_dict` (rotation, translation and centre are authoritative)."""
        if d.get("type") != "rigid":
            raise InputError(f"not a rigid transform: type {d.get('type')!r}", field="type")
        return cls(
            rotation=d["rotation"],
            translation_mm=d["translation_mm"],
            centre_mm=d["centre_mm"],
            metric=d.get("metric"),
            metric_value=d.get("metric_value"),
            iterations=int(d.get("iterations", 0)),
            stop_condition=str(d.get("stop_condition", "")),
            settings=d.get("settings", {}),
        )

    @classmethod
    def from_json(cls, text: str) -> "RigidTransform":
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        ax, ay, az = (round(math.degrees(a), 4) for a in self.angles_rad)
        return (
            f"RigidTransform(angles_deg=({ax}, {ay}, {az}), translation_mm={np.round(self.translation_mm, 4).tolist()}, "
            f"centre_mm={np.round(self.centre_mm, 3).tolist()}, metric={self.metric!r}, metric_value={self.metric_value!r}, "
            f"iterations={self.iterations})"
        )


@dataclass(frozen=True, eq=False, kw_only=True)
class DeformableTransform:
    """A B-spline free-form deformation after a rigid transform: ``T(p) = rigid(p + u(p))``.

    ``u`` is ITK's cubic ``BSplineTransform`` (Rueckert et al. 1999). ``bspline_fixed_parameters``
    are ITK's ``GetFixedParameters()``: control-point grid size (3), origin (3, mm), spacing (3, mm)
    and direction (9, row-major); ``bspline_parameters`` the coefficients (all x, then all y, then
    all z displacements, mm). The transform maps fixed LPS points to moving ones, like
    :class:`RigidTransform`.
    """

    rigid: RigidTransform
    bspline_fixed_parameters: tuple[float, ...]
    bspline_parameters: np.ndarray
    grid_spacing_mm: float
    metric: str = "mattes_mi"
    metric_value: float | None = None
    iterations: int = 0
    stop_condition: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fp = tuple(float(x) for x in self.bspline_fixed_parameters)
        if len(fp) != 18:
            raise InputError(f"B-spline fixed parameters must have 18 values, got {len(fp)}", field="bspline_fixed_parameters")
        p = np.array(self.bspline_parameters, dtype=np.float64).ravel()
        n = int(np.prod(fp[:3])) * 3
        if p.size != n:
            raise InputError(f"B-spline coefficients: expected {n} values for grid {fp[:3]}, got {p.size}", field="bspline_parameters")
        p.flags.writeable = False
        object.__setattr__(self, "bspline_fixed_parameters", fp)
        object.__setattr__(self, "bspline_parameters", p)
        object.__setattr__(self, "settings", dict(self.settings))

    def _bspline_sitk(self):
        sitk = _sitk()
        b = sitk.BSplineTransform(3, 3)
        b.SetFixedParameters(self.bspline_fixed_parameters)
        b.SetParameters(tuple(self.bspline_parameters.tolist()))
        return b

    def to_sitk(self):
        """A ``SimpleITK.CompositeTransform`` ``[rigid, bspline]`` (the B-spline is applied first)."""
        sitk = _sitk()
        return sitk.CompositeTransform([self.rigid.to_sitk(), self._bspline_sitk()])

    @property
    def max_coefficient_mm(self) -> float:
        """Largest absolute control-point displacement (mm)."""
        return float(np.max(np.abs(self.bspline_parameters))) if self.bspline_parameters.size else 0.0

    def displacement_field_mm(self, reference: Volume) -> np.ndarray:
        """``T(p) - p`` at the voxel centres of ``reference``, shape ``(nk, nj, ni, 3)`` (x, y, z mm)."""
        return np.concatenate([d for _, d in _displacement_slabs(self, reference)], axis=0)

    def apply_to_points(self, points_mm: Sequence[float] | np.ndarray) -> np.ndarray:
        """``T(p)`` for points ``(..., 3)`` in LPS mm (a Python loop over points: for a few only)."""
        p = np.asarray(points_mm, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise InputError(f"points must have shape (..., 3), got {p.shape}", field="points_mm")
        t = self.to_sitk()
        flat = p.reshape(-1, 3)
        out = np.array([t.TransformPoint(tuple(float(x) for x in q)) for q in flat])
        return out.reshape(p.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "bspline",
            "convention": "maps fixed (reference) LPS mm to moving LPS mm: T(p) = rigid(p + u(p)), u a cubic "
            "B-spline (ITK BSplineTransform fixed parameters: grid size, origin, spacing, direction)",
            "rigid": self.rigid.to_dict(),
            "bspline_fixed_parameters": list(self.bspline_fixed_parameters),
            "bspline_parameters": self.bspline_parameters.tolist(),
            "grid_spacing_mm": self.grid_spacing_mm,
            "metric": self.metric,
            "metric_value": self.metric_value,
            "iterations": self.iterations,
            "stop_condition": self.stop_condition,
            "settings": dict(self.settings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DeformableTransform":
        if d.get("type") != "bspline":
            raise InputError(f"not a B-spline transform: type {d.get('type')!r}", field="type")
        return cls(
            rigid=RigidTransform.from_dict(d["rigid"]),
            bspline_fixed_parameters=d["bspline_fixed_parameters"],
            bspline_parameters=d["bspline_parameters"],
            grid_spacing_mm=float(d["grid_spacing_mm"]),
            metric=d.get("metric", "mattes_mi"),
            metric_value=d.get("metric_value"),
            iterations=int(d.get("iterations", 0)),
            stop_condition=str(d.get("stop_condition", "")),
            settings=d.get("settings", {}),
        )


# ============================================================================ registration


def _src(v: Volume) -> str | None:
    return v.source_files[0] if v.source_files else None


def _fov_centre(v: Volume) -> np.ndarray:
    ni, nj, nk = v.size_ijk
    return v.index_to_physical(((ni - 1) / 2.0, (nj - 1) / 2.0, (nk - 1) / 2.0))


def _fov_box(v: Volume) -> tuple[np.ndarray, np.ndarray]:
    ni, nj, nk = v.size_ijk
    c = np.array([[i, j, k] for k in (-0.5, nk - 0.5) for j in (-0.5, nj - 0.5) for i in (-0.5, ni - 0.5)])
    p = v.index_to_physical(c)
    return p.min(axis=0), p.max(axis=0)


def _rms_radius(v: Volume) -> float:
    """RMS distance (mm) of the points of the field-of-view box from its centre."""
    half = np.asarray(v.size_ijk, dtype=np.float64) * np.asarray(v.spacing_mm) / 2.0
    return float(np.sqrt(np.sum(half**2) / 3.0))


def _centre_of_mass(v: Volume) -> np.ndarray:
    a = np.asarray(v.array, dtype=np.float64)
    # intensities as "mass" must be non-negative: HU + 1000 is proportional to electron density
    # to a first approximation; other images are shifted by their minimum
    w = np.clip(a + 1000.0, 0.0, None) if v.unit.upper() == "HU" else a - float(a.min())
    if not np.any(w > 0):
        raise InputError("cannot initialise by moments: the image is uniform", source=_src(v), field="initial")
    kji = np.asarray(ndimage.center_of_mass(w), dtype=np.float64)
    return v.index_to_physical(kji[::-1])


def _check_inputs(fixed: Volume, moving: Volume, metric: str, require_modality: str | None) -> None:
    for name, v in (("fixed", fixed), ("moving", moving)):
        if not isinstance(v, Volume):
            raise InputError(f"{name} must be a Volume, got {type(v).__name__}", field=name)
        if min(v.size_ijk) < MIN_SIZE:
            raise InputError(
                f"{name} image is too small to register: size {v.size_ijk} voxels, at least {MIN_SIZE} per axis",
                source=_src(v),
                field=name,
            )
        if not np.all(np.isfinite(v.array)):
            raise InputError(f"{name} image has non-finite values", source=_src(v), field=name)
    if metric not in METRICS:
        raise InputError(f"metric must be one of {METRICS}, got {metric!r}", field="metric")
    if require_modality is not None:
        want = str(require_modality).strip().upper()
        for name, v in (("fixed", fixed), ("moving", moving)):
            if v.modality != want:
                raise InputError(
                    f"{name} image has modality {v.modality!r} ({v.unit}), but {want!r} images are required: "
                    "register the CT of each time point and carry the SPECT/PET with its transform",
                    source=_src(v),
                    field=f"{name}.modality",
                )
        if fixed.unit != moving.unit:
            raise InputError(
                f"fixed and moving images have different units ({fixed.unit!r}, {moving.unit!r}) although both "
                f"should be {want} images",
                source=_src(moving),
                field="moving.unit",
            )
    if metric == "mean_squares" and fixed.unit != moving.unit:
        raise InputError(
            f"metric 'mean_squares' compares values directly and needs one unit; got {fixed.unit!r} and {moving.unit!r} "
            "(use 'mattes_mi' for different units or modalities)",
            field="metric",
        )


def _check_overlap(fixed: Volume, moving: Volume) -> None:
    flo, fhi = _fov_box(fixed)
    mlo, mhi = _fov_box(moving)
    if np.any(fhi <= mlo) or np.any(mhi <= flo):
        raise InputError(
            "fixed and moving images do not overlap in patient coordinates: fixed "
            f"{np.round(flo, 1).tolist()}..{np.round(fhi, 1).tolist()} mm, moving {np.round(mlo, 1).tolist()}.."
            f"{np.round(mhi, 1).tolist()} mm (LPS). They may show different body regions; if they are in different "
            "frames of reference, use initial='moments'",
            source=_src(moving),
            field="moving",
        )


def _check_seed(seed: int) -> int:
    s = int(seed)
    if s != seed or s < 1 or s > 2**31 - 1:
        raise InputError(f"seed must be an integer in [1, 2^31 - 1] (0 would seed from the clock), got {seed!r}", field="seed")
    return s


def _sampling_per_level(
    fixed: Volume, pct: float | None, shrink: Sequence[int], min_samples: int = MIN_SAMPLES_PER_LEVEL
) -> list[float] | None:
    if pct is None:
        return None
    if not 0 < pct <= 1:
        raise InputError(f"sampling_percentage must be in (0, 1] or None, got {pct!r}", field="sampling_percentage")
    out = []
    for s in shrink:
        n = float(np.prod([math.ceil(n / s) for n in fixed.size_ijk]))
        out.append(min(1.0, max(float(pct), min_samples / n)))
    return out


def _mask_image(mask, fixed: Volume, sitk):
    m = mask.array if isinstance(mask, Volume) else np.asarray(mask)
    if isinstance(mask, Volume) and not mask.same_grid(fixed):
        raise InputError("fixed_mask is on another grid than the fixed image; resample it first", field="fixed_mask")
    if m.shape != fixed.shape:
        raise InputError(f"fixed_mask has shape {m.shape}, the fixed image {fixed.shape}", field="fixed_mask")
    if not np.any(m):
        raise InputError("fixed_mask is empty", field="fixed_mask")
    img = to_sitk(fixed.with_array(np.asarray(m) > 0, unit="1"))
    return sitk.Cast(img, sitk.sitkUInt8)


def _run(reg, fixed_img, moving_img, what: str, number_of_threads: int | None):
    """Execute a registration, turning 'no overlap' failures into InputError.

    With ``number_of_threads`` the registration *and* every filter it runs internally (the
    pyramid's smoothing and shrinking) use that many threads: ITK's process-wide default is set
    for the duration of the call and restored afterwards (it is a global, so concurrent ITK
    work in other Python threads of the same process sees it too).
    """
    sitk = _sitk()
    previous = None
    if number_of_threads is not None:
        n = int(number_of_threads)
        if n != number_of_threads or n < 1:
            raise InputError(f"number_of_threads must be a positive integer, got {number_of_threads!r}", field="number_of_threads")
        reg.SetNumberOfThreads(n)
        previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    try:
        return reg.Execute(fixed_img, moving_img)
    except RuntimeError as exc:
        msg = str(exc)
        if "outside moving image buffer" in msg or "Too many samples" in msg or "All samples map" in msg:
            raise InputError(
                f"{what} failed: the images overlap too little (ITK: "
                f"{msg.strip().splitlines()[-1][:200]}); check the initialisation and the fields of view",
                field="moving",
            ) from None
        raise
    finally:
        if previous is not None:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _check_metric(value: float, what: str) -> None:
    # ITK's mean-squares metric returns the largest double (with only a warning) when no sample
    # maps inside the moving image
    if not math.isfinite(value) or abs(value) > 1e300:
        raise InputError(
            f"{what} failed: no metric sample maps inside the moving image (the images do not overlap after "
            "initialisation); check the initialisation and the fields of view",
            field="moving",
        )


def overlap_fraction(transform: "RigidTransform | DeformableTransform", fixed: Volume, moving: Volume) -> float:
    """Fraction of the fixed image's voxel centres (every 4th along each axis) that ``transform``
    maps inside the moving field of view: how much of the fixed image the registration could use."""
    ni, nj, nk = fixed.size_ijk
    kk, jj, ii = np.meshgrid(np.arange(0, nk, 4), np.arange(0, nj, 4), np.arange(0, ni, 4), indexing="ij")
    p = fixed.index_to_physical(np.stack([ii, jj, kk], axis=-1).reshape(-1, 3).astype(np.float64))
    if isinstance(transform, RigidTransform):
        q = transform.apply_to_points(p)
    else:
        q = transform.apply_to_points(p) if p.shape[0] <= 20_000 else transform.rigid.apply_to_points(p)
    c = moving.physical_to_index(q)
    inside = np.all((c >= -0.5) & (c <= np.asarray(moving.size_ijk, dtype=np.float64) - 0.5), axis=1)
    return float(inside.mean())


def register_rigid(
    fixed_ct: Volume,
    moving_ct: Volume,
    *,
    metric: Literal["mattes_mi", "mean_squares"] = "mattes_mi",
    initial: Literal["geometry", "moments", "identity"] = "geometry",
    max_iterations: int = 200,
    seed: int = 20_031,
    sampling_percentage: float | None = 0.25,
    histogram_bins: int = 50,
    learning_rate: float = 2.0,
    min_step: float = 1e-4,
    fixed_mask: np.ndarray | Volume | None = None,
    require_modality: str | None = None,
    number_of_threads: int | None = None,
) -> RigidTransform:
    """Rigid (6 degrees of freedom) registration of ``moving_ct`` to ``fixed_ct``.

    Returns ``T`` mapping fixed LPS points to moving LPS points (module docstring); pass it to
    :func:`apply_transform` to bring the moving time point's CT, SPECT and masks onto the fixed
    grid.

    Parameters
    ----------
    fixed_ct, moving_ct
        The reference time point's CT and the CT to align with it.
    metric
        ``"mattes_mi"`` (Mattes et al. 2003; ``histogram_bins`` bins) or ``"mean_squares"``
        (same unit required).
    initial
        Starting transform (rotation zero): ``"geometry"`` aligns the centres of the two fields
        of view (ITK ``CenteredTransformInitializer`` GEOMETRY); ``"moments"`` aligns the
        intensity centres of mass (CT: weights HU + 1000), for images from different frames of
        reference; ``"identity"`` keeps the patient coordinates as recorded. The centre of
        rotation is the fixed field-of-view centre (``"moments"``: the fixed centre of mass).
    max_iterations
        Optimiser iterations per resolution level.
    seed
        Seed of the random metric sampling (>= 1), for reproducible results.
    sampling_percentage
        Fraction of voxels sampled (at random positions) for the metric, raised on coarse levels
        to at least :data:`MIN_SAMPLES_PER_LEVEL`; ``None``: every voxel.
    learning_rate, min_step
        Regular-step gradient descent: first and smallest step (in scaled parameter units,
        i.e. about mm of motion at the RMS radius of the field of view).
    fixed_mask
        Optional mask on the fixed grid restricting the metric (e.g. the body, to ignore the couch).
    require_modality
        If given (e.g. ``"CT"``), both images must have this modality and one unit; this catches
        a SPECT passed where a CT was meant.
    number_of_threads
        ITK threads (``None``: ITK's default); ``1`` makes repeated runs identical bit for bit.

    Raises
    ------
    InputError
        Unknown option; image too small or non-finite; modality or unit mismatch; images that do
        not overlap in patient coordinates (with ``initial`` ``"geometry"`` or ``"identity"``);
        registration that loses the overlap.
    """
    sitk = _sitk()
    _check_inputs(fixed_ct, moving_ct, metric, require_modality)
    if initial not in INITIALISATIONS:
        raise InputError(f"initial must be one of {INITIALISATIONS}, got {initial!r}", field="initial")
    if initial != "moments":
        _check_overlap(fixed_ct, moving_ct)
    seed = _check_seed(seed)
    if int(max_iterations) != max_iterations or max_iterations < 1:
        raise InputError(f"max_iterations must be a positive integer, got {max_iterations!r}", field="max_iterations")
    if int(histogram_bins) != histogram_bins or histogram_bins < 8:
        raise InputError(f"histogram_bins must be an integer >= 8, got {histogram_bins!r}", field="histogram_bins")
    if not (learning_rate > 0 and min_step > 0 and min_step < learning_rate):
        raise InputError("need 0 < min_step < learning_rate", field="learning_rate")
    per_level = _sampling_per_level(fixed_ct, sampling_percentage, SHRINK_FACTORS)

    if initial == "moments":
        centre = _centre_of_mass(fixed_ct)
        t0 = _centre_of_mass(moving_ct) - centre
    else:
        centre = _fov_centre(fixed_ct)
        t0 = _fov_centre(moving_ct) - centre if initial == "geometry" else np.zeros(3)
    start = RigidTransform(rotation=np.eye(3), translation_mm=t0, centre_mm=centre)

    fixed_img = sitk.Cast(to_sitk(fixed_ct), sitk.sitkFloat32)
    moving_img = sitk.Cast(to_sitk(moving_ct), sitk.sitkFloat32)

    reg = sitk.ImageRegistrationMethod()
    if metric == "mattes_mi":
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(histogram_bins))
    else:
        reg.SetMetricAsMeanSquares()
    if per_level is None:
        reg.SetMetricSamplingStrategy(reg.NONE)
    else:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentagePerLevel(per_level, seed)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(_mask_image(fixed_mask, fixed_ct, sitk))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=float(learning_rate),
        minStep=float(min_step),
        numberOfIterations=int(max_iterations),
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    r2 = _rms_radius(fixed_ct) ** 2
    reg.SetOptimizerScales([r2, r2, r2, 1.0, 1.0, 1.0])
    reg.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    reg.SetSmoothingSigmasPerLevel(list(SMOOTHING_SIGMAS_VOXELS))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(start.to_sitk(), inPlace=False)
    count = [0]
    reg.AddCommand(sitk.sitkIterationEvent, lambda: count.__setitem__(0, count[0] + 1))

    out = _run(reg, fixed_img, moving_img, "rigid registration", number_of_threads)
    euler = sitk.Euler3DTransform(sitk.CompositeTransform(out).GetBackTransform()) if out.GetName() == "CompositeTransform" else sitk.Euler3DTransform(out)
    metric_value = float(reg.GetMetricValue())
    _check_metric(metric_value, "rigid registration")
    settings = {
        "method": "rigid registration, " + _REFERENCES["rigid"],
        "metric": metric,
        "histogram_bins": int(histogram_bins) if metric == "mattes_mi" else None,
        "initial": initial,
        "optimizer": "regular step gradient descent",
        "max_iterations_per_level": int(max_iterations),
        "learning_rate": float(learning_rate),
        "min_step": float(min_step),
        "shrink_factors": list(SHRINK_FACTORS),
        "smoothing_sigmas_voxels": list(SMOOTHING_SIGMAS_VOXELS),
        "sampling": "all voxels" if per_level is None else "random",
        "sampling_percentage_per_level": per_level,
        "seed": seed,
        "fixed_mask": fixed_mask is not None,
        "software": _sitk_version(),
    }
    rotation = np.asarray(euler.GetMatrix(), dtype=np.float64).reshape(3, 3)
    result = RigidTransform(rotation=rotation, translation_mm=euler.GetTranslation(), centre_mm=euler.GetCenter())
    settings["overlap_fraction"] = overlap_fraction(result, fixed_ct, moving_ct)
    return RigidTransform(
        rotation=result.rotation,
        translation_mm=result.translation_mm,
        centre_mm=result.centre_mm,
        metric=metric,
        metric_value=metric_value,
        iterations=count[0],
        stop_condition=reg.GetOptimizerStopConditionDescription(),
        settings=settings,
    )


def register_deformable(
    fixed: Volume,
    moving: Volume,
    *,
    initial: RigidTransform | None = None,
    metric: Literal["mattes_mi", "mean_squares"] = "mattes_mi",
    grid_spacing_mm: float = 40.0,
    max_iterations: int = 100,
    seed: int = 20_031,
    sampling_percentage: float | None = 0.05,
    histogram_bins: int = 32,
    shrink_factors: Sequence[int] = (2, 1),
    smoothing_sigmas_voxels: Sequence[float] = (1.0, 0.0),
    fixed_mask: np.ndarray | Volume | None = None,
    require_modality: str | None = None,
    number_of_threads: int | None = None,
) -> DeformableTransform:
    """B-spline (free-form deformation) registration on top of a rigid one (Rueckert et al. 1999).

    ``metric`` as in :func:`register_rigid` (``"mean_squares"`` suits CT-to-CT and is the faster).
    One metric evaluation costs about samples x coefficients (ITK accumulates a dense derivative
    over all coefficients per sample), hence the low default ``sampling_percentage`` (floor
    :data:`MIN_SAMPLES_DEFORMABLE` samples per level).

    ``initial`` is the rigid transform (default: :func:`register_rigid` with its defaults); the
    B-spline displacement ``u`` with control points every ``grid_spacing_mm`` over the fixed
    field of view is optimised with Mattes MI and L-BFGS-B, and ``T(p) = rigid(p + u(p))``.

    The control-point spacing is the only regulariser: a spacing much finer than the anatomy
    (< ~30 mm on CT at 4 mm voxels) lets the grid fold and fit noise. Check the result with
    :func:`registration_quality` on independent masks, not only with the metric.
    """
    sitk = _sitk()
    _check_inputs(fixed, moving, metric, require_modality)
    seed = _check_seed(seed)
    if not grid_spacing_mm > 0:
        raise InputError(f"grid_spacing_mm must be positive, got {grid_spacing_mm!r}", field="grid_spacing_mm")
    if len(shrink_factors) != len(smoothing_sigmas_voxels) or not shrink_factors:
        raise InputError("shrink_factors and smoothing_sigmas_voxels need the same, non-zero length", field="shrink_factors")
    if int(max_iterations) != max_iterations or max_iterations < 1:
        raise InputError(f"max_iterations must be a positive integer, got {max_iterations!r}", field="max_iterations")
    if initial is None:
        initial = register_rigid(fixed, moving, seed=seed, require_modality=require_modality, fixed_mask=fixed_mask)
    elif not isinstance(initial, RigidTransform):
        raise InputError(f"initial must be a RigidTransform, got {type(initial).__name__}", field="initial")
    per_level = _sampling_per_level(fixed, sampling_percentage, shrink_factors, MIN_SAMPLES_DEFORMABLE)

    fixed_img = sitk.Cast(to_sitk(fixed), sitk.sitkFloat32)
    moving_img = sitk.Cast(to_sitk(moving), sitk.sitkFloat32)
    extent = np.asarray(fixed.size_ijk, dtype=np.float64) * np.asarray(fixed.spacing_mm)
    mesh = [max(1, int(round(e / grid_spacing_mm))) for e in extent]
    bspline = sitk.BSplineTransformInitializer(fixed_img, mesh, 3)

    reg = sitk.ImageRegistrationMethod()
    if metric == "mattes_mi":
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(histogram_bins))
    else:
        reg.SetMetricAsMeanSquares()
    if per_level is None:
        reg.SetMetricSamplingStrategy(reg.NONE)
    else:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentagePerLevel(per_level, seed)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(_mask_image(fixed_mask, fixed, sitk))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5,
        numberOfIterations=int(max_iterations),
        maximumNumberOfCorrections=5,
        maximumNumberOfFunctionEvaluations=4 * int(max_iterations),
        costFunctionConvergenceFactor=1e7,
    )
    reg.SetShrinkFactorsPerLevel([int(s) for s in shrink_factors])
    reg.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_sigmas_voxels])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetMovingInitialTransform(initial.to_sitk())
    reg.SetInitialTransform(bspline, inPlace=True)
    count = [0]
    reg.AddCommand(sitk.sitkIterationEvent, lambda: count.__setitem__(0, count[0] + 1))
    _run(reg, fixed_img, moving_img, "B-spline registration", number_of_threads)
    metric_value = float(reg.GetMetricValue())
    _check_metric(metric_value, "B-spline registration")

    settings = {
        "method": "B-spline registration on a rigid initialisation, " + _REFERENCES["deformable"],
        "metric": metric,
        "histogram_bins": int(histogram_bins) if metric == "mattes_mi" else None,
        "optimizer": "L-BFGS-B",
        "grid_spacing_mm": float(grid_spacing_mm),
        "mesh_size": mesh,
        "max_iterations_per_level": int(max_iterations),
        "shrink_factors": [int(s) for s in shrink_factors],
        "smoothing_sigmas_voxels": [float(s) for s in smoothing_sigmas_voxels],
        "sampling": "all voxels" if per_level is None else "random",
        "sampling_percentage_per_level": per_level,
        "seed": seed,
        "software": _sitk_version(),
    }
    return DeformableTransform(
        rigid=initial,
        bspline_fixed_parameters=bspline.GetFixedParameters(),
        bspline_parameters=np.asarray(bspline.GetParameters()),
        grid_spacing_mm=float(grid_spacing_mm),
        metric=metric,
        metric_value=metric_value,
        iterations=count[0],
        stop_condition=reg.GetOptimizerStopConditionDescription(),
        settings=settings,
    )


# ============================================================================ propagation


def _grid_points(v: Volume, k0: int = 0, k1: int | None = None) -> np.ndarray:
    """LPS centres (mm) of slices ``k0:k1``, shape ``(nk', nj, ni, 3)``."""
    nk, nj, ni = v.shape
    k1 = nk if k1 is None else k1
    kk, jj, ii = np.meshgrid(np.arange(k0, k1), np.arange(nj), np.arange(ni), indexing="ij")
    idx = np.stack([ii, jj, kk], axis=-1).astype(np.float64)
    return v.index_to_physical(idx)


_SLAB_VOXELS = 2_000_000


def _displacement_slabs(t: DeformableTransform, reference: Volume):
    """Yield ``(k0, displacement)`` slabs of the reference grid (x, y, z mm), bounding memory."""
    sitk = _sitk()
    tx = t.to_sitk()
    nk, nj, ni = reference.shape
    step = max(1, _SLAB_VOXELS // (nj * ni))
    for k0 in range(0, nk, step):
        k1 = min(nk, k0 + step)
        f = sitk.TransformToDisplacementFieldFilter()
        f.SetOutputPixelType(sitk.sitkVectorFloat64)
        f.SetSize((ni, nj, k1 - k0))
        f.SetOutputOrigin(tuple(float(x) for x in reference.index_to_physical((0.0, 0.0, float(k0)))))
        f.SetOutputSpacing(reference.spacing_mm)
        f.SetOutputDirection(tuple(float(x) for x in reference.direction.ravel()))
        yield k0, sitk.GetArrayFromImage(f.Execute(tx))


def _sample(arr: np.ndarray, c_ijk: np.ndarray, order: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``arr`` ([k, j, i]) at continuous indices ``c_ijk`` (``(N, 3)``), the conventions of
    :mod:`mrtdose.imaging.resample` (inside: ``[-0.5, n - 0.5]``; nearest: index rounded half up)."""
    r = np.rint(c_ijk)
    c = np.where(np.abs(c_ijk - r) < SNAP_TOLERANCE, r, c_ijk)
    nk, nj, ni = arr.shape
    size = np.array([ni, nj, nk], dtype=np.float64)
    inside = np.all((c >= -0.5) & (c <= size - 0.5), axis=1)
    if order == 0:
        idx = np.clip(np.floor(c + 0.5).astype(np.int64), 0, (size - 1).astype(np.int64))
        vals = arr[idx[:, 2], idx[:, 1], idx[:, 0]].astype(np.float64)
    else:
        vals = ndimage.map_coordinates(arr.astype(np.float64, copy=False), c[:, ::-1].T, order=1, mode="nearest", prefilter=False)
    return np.where(inside, vals, fill), inside


def _moved_view(transform: RigidTransform, moving: Volume) -> Volume:
    """``moving`` re-placed in the fixed space: the voxel at moving position ``q`` is put at
    ``T^-1(q)``. Resampling this view onto a fixed grid reads ``moving`` at ``T(p)``."""
    r = transform.rotation
    b = transform.offset_mm
    return Volume(
        array=moving.array,
        spacing_mm=moving.spacing_mm,
        origin_mm=r.T @ (np.asarray(moving.origin_mm) - b),
        direction=r.T @ moving.direction,
        unit=moving.unit,
        acquisition_time=moving.acquisition_time,
        modality=moving.modality,
        source_files=moving.source_files,
        description=moving.description,
    )


def apply_transform(
    transform: RigidTransform | DeformableTransform,
    moving: Volume,
    reference: Volume,
    *,
    interpolation: Literal["linear", "nearest"],
    conserve_total: bool = False,
    fill_value: float = 0.0,
) -> Volume:
    """``moving`` (a SPECT, PET, CT or mask of the moving time point) on ``reference``'s grid,
    read through ``transform``: ``out[p] = moving(T(p))`` for every reference voxel centre ``p``.

    Parameters
    ----------
    transform
        From :func:`register_rigid` / :func:`register_deformable` (fixed -> moving).
    moving
        Any volume in the moving CT's frame of reference (its own grid, e.g. the SPECT's).
    reference
        The target grid (e.g. the reference time point's SPECT or CT); its values are not used.
    interpolation
        ``"linear"`` for continuous images, ``"nearest"`` for masks and labels (keeps a boolean
        or integer dtype). Required, so that a mask is never smoothed by accident.
    conserve_total
        Rescale so that the total (value x voxel volume) equals the moving image's total over
        the part of it that maps into the reference field of view; concentrations only (unit
        ``.../mL``). Rigid: exactly :func:`~mrtdose.imaging.resample.resample` with
        ``conserve="total"`` (see its caveats). Deformable: the moving voxels are selected by
        the rigid part only (the B-spline's displacement near the field-of-view edge is taken
        as negligible).
    fill_value
        Value outside the moving field of view.

    The result keeps the moving image's unit, modality and acquisition time (each time point
    keeps its own time): a rigid motion preserves volumes, so a concentration needs no change.
    A deformable transform changes local volumes (by the Jacobian determinant of ``T``); the
    values are *not* Jacobian-corrected here, so region totals after a deformable propagation
    carry that (usually small, at 30-60 mm control-point spacing) error; ``conserve_total``
    corrects only the global total.
    """
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}", field="interpolation")
    if not isinstance(moving, Volume) or not isinstance(reference, Volume):
        raise InputError("moving and reference must be Volumes", field="moving")
    if isinstance(transform, RigidTransform):
        out = resample(
            _moved_view(transform, moving),
            reference,
            interpolation=interpolation,
            conserve="total" if conserve_total else None,
            fill_value=fill_value,
        )
        return out.with_array(out.array, unit=out.unit, description=f"{out.description} (rigidly registered)".strip())
    if not isinstance(transform, DeformableTransform):
        raise InputError(f"transform must be a RigidTransform or DeformableTransform, got {type(transform).__name__}", field="transform")
    if conserve_total and not moving.unit.replace(" ", "").lower().endswith("/ml"):
        raise InputError(
            f"conserve_total needs a concentration (unit per mL); the image's unit is {moving.unit!r}", field="conserve_total"
        )
    arr = moving.array
    out_dtype = arr.dtype if (interpolation == "nearest" and arr.dtype.kind in "biu") else np.dtype(np.float64)
    result = np.empty(reference.shape, dtype=np.float64)
    order = 1 if interpolation == "linear" else 0
    any_inside = False
    for k0, disp in _displacement_slabs(transform, reference):
        k1 = k0 + disp.shape[0]
        q = _grid_points(reference, k0, k1) + disp
        c = moving.physical_to_index(q.reshape(-1, 3))
        vals, inside = _sample(arr, c, order, fill_value)
        any_inside = any_inside or bool(inside.any())
        result[k0:k1] = vals.reshape(disp.shape[:3])
    if not any_inside:
        raise InputError("the transformed image does not overlap the reference grid", field="reference")
    description = f"{moving.description} (deformably registered)".strip()
    if conserve_total:
        inv = transform.rigid.inverse()
        size_r = np.asarray(reference.size_ijk, dtype=np.float64)
        target = 0.0
        nk_m = moving.shape[0]
        for k in range(nk_m):  # per moving slice
            p = inv.apply_to_points(_grid_points(moving, k, k + 1).reshape(-1, 3))
            c = reference.physical_to_index(p)
            inside = np.all((c >= -0.5) & (c <= size_r - 0.5), axis=1)
            target += float(np.sum(np.asarray(moving.array[k], dtype=np.float64).ravel()[inside]))
        target *= moving.voxel_volume_ml
        got = float(np.sum(result)) * reference.voxel_volume_ml
        if got == 0.0:
            raise InputError("conserve_total: the transformed image is zero everywhere, nothing to rescale", field="conserve_total")
        result *= target / got
        description = f"{description} (total conserved x{target / got:.6g})"
    if out_dtype != np.float64:
        result = result.astype(out_dtype)
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


# ============================================================================ quality


@dataclass(frozen=True)
class Overlap:
    """Overlap of two masks: Dice ``2|A&B| / (|A| + |B|)`` (Dice 1945) and Jaccard
    ``|A & B| / |A or B|`` (Jaccard 1912); ``J = D / (2 - D)`` (Taha & Hanbury 2015, eq. 7)."""

    dice: float
    jaccard: float


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances (mm) between the surfaces of two masks (Taha & Hanbury 2015, section "Spatial
    distance based metrics"): ``mean_mm`` the symmetric mean (average surface distance over the
    surface voxels of both masks), ``hd95_mm`` the 95th-percentile Hausdorff distance (the larger
    of the two directed 95th percentiles), ``hausdorff_mm`` the Hausdorff distance (maximum)."""

    mean_mm: float
    hd95_mm: float
    hausdorff_mm: float


@dataclass(frozen=True)
class RegionQuality:
    """Registration quality of one region: overlap and surface distances of the fixed mask and
    the mask propagated from the moving time point; ``volume_ratio`` = moved / fixed volume."""

    dice: float
    jaccard: float
    mean_surface_distance_mm: float | None
    hd95_mm: float | None
    hausdorff_mm: float | None
    volume_ratio: float

    def to_dict(self) -> dict[str, float | None]:
        return {
            "dice": self.dice,
            "jaccard": self.jaccard,
            "mean_surface_distance_mm": self.mean_surface_distance_mm,
            "hd95_mm": self.hd95_mm,
            "hausdorff_mm": self.hausdorff_mm,
            "volume_ratio": self.volume_ratio,
        }


def _as_bool(m, name: str) -> np.ndarray:
    a = m.array if isinstance(m, Volume) else np.asarray(m)
    if a.ndim != 3:
        raise InputError(f"mask {name!r} must be 3D, got shape {a.shape}", field=name)
    if a.dtype == bool:
        return a
    if a.dtype.kind not in "biuf":
        raise InputError(f"mask {name!r} must be numeric or boolean, got dtype {a.dtype}", field=name)
    return a >= 0.5  # fractional occupancy: the voxel counts when at least half inside


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    aa, bb = _as_bool(a, "a"), _as_bool(b, "b")
    if aa.shape != bb.shape:
        raise InputError(f"masks have different shapes {aa.shape} and {bb.shape}: resample onto one grid first", field="b")
    return aa, bb


def mask_overlap(a: np.ndarray | Volume, b: np.ndarray | Volume) -> Overlap:
    """Dice and Jaccard coefficients of two masks on one grid.

    Boolean masks, or occupancies counted where >= 0.5. Raises :class:`InputError` if both masks
    are empty (the coefficients are undefined) or the shapes differ.

    Example
    -------
    >>> a = np.zeros((1, 1, 4), bool); a[0, 0, :2] = True
    >>> b = np.zeros((1, 1, 4), bool); b[0, 0, 1:3] = True
    >>> mask_overlap(a, b)
    Overlap(dice=0.5, jaccard=0.3333333333333333)
    """
    aa, bb = _pair(a, b)
    na, nb = int(np.count_nonzero(aa)), int(np.count_nonzero(bb))
    if na + nb == 0:
        raise InputError("both masks are empty: Dice and Jaccard are undefined", field="a")
    inter = int(np.count_nonzero(aa & bb))
    return Overlap(dice=2.0 * inter / (na + nb), jaccard=inter / (na + nb - inter))


def _spacing_kji(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    s = np.asarray(spacing_mm, dtype=np.float64)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"spacing_mm must be three positive numbers (x, y, z), got {spacing_mm!r}", field="spacing_mm")
    return (float(s[2]), float(s[1]), float(s[0]))


def _surface(m: np.ndarray) -> np.ndarray:
    """Voxels of ``m`` with a face neighbour outside ``m`` (outside the array counts as outside)."""
    return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def surface_distances(a: np.ndarray | Volume, b: np.ndarray | Volume, spacing_mm: Sequence[float]) -> SurfaceDistances:
    """Symmetric mean surface distance, 95 % Hausdorff and Hausdorff distance (mm) of two masks.

    The surface of a mask is its set of voxels with a face neighbour outside it; the directed
    distance from each surface voxel of ``a`` to the surface of ``b`` is read from the Euclidean
    distance transform of ``b``'s surface complement (:func:`scipy.ndimage.distance_transform_edt`
    with the voxel spacing), and the other way round. ``spacing_mm`` is ``(x, y, z)`` as in
    :attr:`Volume.spacing_mm` (the arrays are ``[z, y, x]``). Distances are between voxel
    centres, so their resolution is the voxel size.

    Raises :class:`InputError` if either mask is empty (a surface distance is then undefined).
    """
    aa, bb = _pair(a, b)
    sampling = _spacing_kji(spacing_mm)
    if not aa.any() or not bb.any():
        raise InputError("surface distance is undefined when a mask is empty", field="a" if not aa.any() else "b")
    sa, sb = _surface(aa), _surface(bb)
    d_ab = ndimage.distance_transform_edt(~sb, sampling=sampling)[sa]
    d_ba = ndimage.distance_transform_edt(~sa, sampling=sampling)[sb]
    both = np.concatenate([d_ab, d_ba])
    return SurfaceDistances(
        mean_mm=float(both.mean()),
        hd95_mm=float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))),
        hausdorff_mm=float(both.max()),
    )


def mean_surface_distance(a: np.ndarray | Volume, b: np.ndarray | Volume, spacing_mm: Sequence[float]) -> SurfaceDistances:
    """Alias of :func:`surface_distances` (symmetric mean, HD95 and Hausdorff distance)."""
    return surface_distances(a, b, spacing_mm)


def registration_quality(
    fixed_masks: Mapping[str, np.ndarray | Volume],
    moved_masks: Mapping[str, np.ndarray | Volume],
    spacing_mm: Sequence[float],
) -> dict[str, RegionQuality]:
    """Per-region overlap and surface distances of the fixed masks and the moved (propagated) ones.

    Both mappings must have the same region names and each pair the same shape (the moved masks
    resampled onto the fixed grid with :func:`apply_transform`, ``interpolation="nearest"``).
    A moved mask that is empty (moved out of the field of view) gives Dice 0 and no distances
    (``None``); an empty fixed mask is an :class:`InputError`.
    """
    missing = sorted(set(fixed_masks) ^ set(moved_masks))
    if missing:
        raise InputError(f"regions present in only one of fixed_masks and moved_masks: {missing}", field="moved_masks")
    _spacing_kji(spacing_mm)
    out: dict[str, RegionQuality] = {}
    for name in fixed_masks:
        fa, mb = _as_bool(fixed_masks[name], name), _as_bool(moved_masks[name], name)
        if fa.shape != mb.shape:
            raise InputError(f"region {name!r}: masks have shapes {fa.shape} and {mb.shape}", field=name)
        nf = int(np.count_nonzero(fa))
        if nf == 0:
            raise InputError(f"region {name!r}: the fixed mask is empty", field=name)
        ov = mask_overlap(fa, mb)
        if mb.any():
            sd = surface_distances(fa, mb, spacing_mm)
            dist = (sd.mean_mm, sd.hd95_mm, sd.hausdorff_mm)
        else:
            dist = (None, None, None)
        out[name] = RegionQuality(
            dice=ov.dice,
            jaccard=ov.jaccard,
            mean_surface_distance_mm=dist[0],
            hd95_mm=dist[1],
            hausdorff_mm=dist[2],
            volume_ratio=int(np.count_nonzero(mb)) / nf,
        )
    return out
