"""CT number (HU) to mass density (g/mL) calibration curves, and density maps from CT.

A :class:`DensityCurve` is a piecewise-linear table of ``(HU, g/mL)`` points with its source.
Between points the density is linearly interpolated; outside the table it is held at the end
values (a CT padded with -1024 or -3024 HU reads as air; a metal voxel above the last point is
held at the last density, an underestimate that is flagged by the curve's range, not hidden).
Points must have strictly increasing HU; a discontinuity (a change of tissue line) is written as
two points one HU apart, as in Schneider et al. (2000).

Built-in curves
---------------
:data:`BILINEAR_DEFAULT` (the default)
    Two straight lines through three cited points:

    * air: -1000 HU (air defines -1000 on the Hounsfield scale, HU = 1000 (mu - mu_w) / mu_w with
      mu_air ~ 0) -> 0.00121 g/mL (dry air at 20 degC, 101.325 kPa: 1.205e-3 g/cm^3, NIST
      "Air, dry (near sea level)");
    * water: 0 HU (definition of the scale) -> 1.000 g/mL;
    * bone: ICRU-44 cortical bone (1.92 g/mL; ICRU Report 44, 1989) at the CT number computed by
      our own code from its linear attenuation coefficient and water's at an effective energy of
      70 keV, the usual effective energy of a 120 kVp CT beam (Bushberg JT et al., The Essential
      Physics of Medical Imaging, 3rd ed., 2012, ch. 10): HU = 1000 (mu_bone - mu_w) / mu_w,
      about 1560 HU (:func:`bone_point`);

    and the bone line continued to 3071 HU (the top of a 12-bit CT range). The curve is
    scanner-independent only to within a few per cent for soft tissue and about 10 % for bone
    (the HU of bone depends on the tube voltage and filtration); a site calibration (user curve)
    is better when available.

User curves
-----------
From YAML (:func:`load_density_curve`)::

    name: CT 120 kVp, site calibration
    source: CIRS 062M electron density phantom, measured 2025-02-11
    points:            # [HU, g/mL], HU strictly increasing
      - [-1000, 0.0012]
      - [0, 1.0]
      - [1250, 1.82]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from mrtdose.errors import InputError
from mrtdose.imaging.volume import Volume

#: Units accepted for a CT volume's values (Hounsfield units).
HU_UNITS = ("HU", "hu", "Hounsfield unit", "Hounsfield units")


@dataclass(frozen=True)
class DensityCurve:
    """Piecewise-linear HU -> mass density (g/mL) calibration. Immutable.

    Parameters
    ----------
    hu
        CT numbers (HU), strictly increasing, at least two.
    density_g_per_ml
        Mass densities (g/mL = g/cm^3), each >= 0, same length.
    name
        Short name.
    source
        Where the points come from (publication, phantom measurement); required.

    Example
    -------
    >>> c = DensityCurve(hu=(-1000, 0, 1000), density_g_per_ml=(0.0, 1.0, 1.5), name="t", source="test")
    >>> c(np.array([-2000.0, -500.0, 500.0, 4000.0])).tolist()
    [0.0, 0.5, 1.25, 1.5]
    """

    hu: tuple[float, ...]
    density_g_per_ml: tuple[float, ...]
    name: str
    source: str

    def __post_init__(self) -> None:
        src = self.name or None
        try:
            hu = np.asarray(self.hu, dtype=np.float64).ravel()
            rho = np.asarray(self.density_g_per_ml, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InputError("curve points must be numbers", source=src, field="points") from None
        if hu.size < 2 or hu.size != rho.size:
            raise InputError(
                f"need at least two (HU, g/mL) points of equal count, got {hu.size} HU and {rho.size} densities",
                source=src,
                field="points",
            )
        if not (np.all(np.isfinite(hu)) and np.all(np.isfinite(rho))):
            raise InputError("curve points must be finite", source=src, field="points")
        if np.any(np.diff(hu) <= 0):
            raise InputError(
                f"HU must be strictly increasing, got {hu.tolist()} (write a step as two points 1 HU apart)",
                source=src,
                field="points",
            )
        if np.any(rho < 0):
            raise InputError(f"densities must be >= 0 g/mL, got {rho.tolist()}", source=src, field="points")
        if not isinstance(self.source, str) or not self.source.strip():
            raise InputError("a density curve needs its source (publication or measurement)", source=src, field="source")
        object.__setattr__(self, "hu", tuple(float(x) for x in hu))
        object.__setattr__(self, "density_g_per_ml", tuple(float(x) for x in rho))

    def __call__(self, hu: Any) -> np.ndarray:
        """Density (g/mL) at CT number(s) ``hu``; held at the end values outside the table."""
        return np.interp(np.asarray(hu, dtype=np.float64), self.hu, self.density_g_per_ml)

    @property
    def hu_range(self) -> tuple[float, float]:
        """HU range covered by the table (outside it the density is held constant)."""
        return (self.hu[0], self.hu[-1])


#: Air density, g/mL (NIST dry air near sea level, 1.205e-3 g/cm^3).
AIR_DENSITY_G_PER_ML = 1.21e-3
#: Effective photon energy of a 120 kVp CT beam used for the default bone point (Bushberg 2012).
CT_EFFECTIVE_ENERGY_MEV = 0.070


def bone_point(effective_energy_mev: float = CT_EFFECTIVE_ENERGY_MEV) -> tuple[float, float]:
    """(HU, g/mL) of ICRU-44 cortical bone at a CT effective energy, from attenuation data
    (HU = 1000 (mu - mu_w)/mu_w; mu = (mu/rho) rho with xraylib cross-sections)."""
    from mrtdose.physics.attenuation import get_material, mass_attenuation_coefficient

    bone, water = get_material("cortical_bone"), get_material("water")
    mu_b = float(mass_attenuation_coefficient(effective_energy_mev, "cortical_bone")) * bone.density_g_per_ml
    mu_w = float(mass_attenuation_coefficient(effective_energy_mev, "water")) * water.density_g_per_ml
    return 1000.0 * (mu_b - mu_w) / mu_w, float(bone.density_g_per_ml)


#: Bone anchor of the default bilinear curve (about (1560 HU, 1.92 g/mL)).
BONE_POINT = bone_point()

#: Default bilinear curve: air (-1000, 0.00121), water (0, 1.0), cortical bone, bone line to 3071 HU.
BILINEAR_DEFAULT = DensityCurve(
    hu=(-1000.0, 0.0, BONE_POINT[0], 3071.0),
    density_g_per_ml=(AIR_DENSITY_G_PER_ML, 1.0, BONE_POINT[1], 1.0 + 3071.0 * (BONE_POINT[1] - 1.0) / BONE_POINT[0]),
    name="bilinear air-water-bone",
    source=(
        "air -1000 HU -> 0.00121 g/mL and water 0 HU -> 1.000 g/mL (Hounsfield scale definition; NIST dry air); "
        f"ICRU-44 cortical bone 1.92 g/mL at {BONE_POINT[0]:.0f} HU (its attenuation relative to water at a 70 keV "
        "effective energy, computed from xraylib cross-sections); bone line extended to 3071 HU"
    ),
)

DEFAULT_CURVE = BILINEAR_DEFAULT


def density_curve_from_mapping(doc: Mapping[str, Any], *, source: str | None = None) -> DensityCurve:
    """A :class:`DensityCurve` from a mapping ``{name, source, points: [[HU, g/mL], ...]}``."""
    if not isinstance(doc, Mapping):
        raise InputError(f"a density curve must be a mapping with name, source and points, got {type(doc).__name__}", source=source)
    unknown = set(doc) - {"name", "source", "points"}
    if unknown:
        raise InputError(f"unknown keys {sorted(unknown)}; expected name, source, points", source=source)
    pts = doc.get("points")
    if not isinstance(pts, Sequence) or isinstance(pts, str) or not all(
        isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 for p in pts
    ):
        raise InputError("points must be a list of [HU, g/mL] pairs", source=source, field="points")
    for field in ("name", "source"):
        if not isinstance(doc.get(field), str) or not doc[field].strip():
            raise InputError(f"{field} is required (a non-empty string)", source=source, field=field)
    try:
        return DensityCurve(
            hu=tuple(p[0] for p in pts),
            density_g_per_ml=tuple(p[1] for p in pts),
            name=doc["name"].strip(),
            source=doc["source"].strip(),
        )
    except InputError as exc:
        raise InputError(exc.detail, source=source, field=exc.field) from None


def load_density_curve(path: str | Path) -> DensityCurve:
    """Read a user HU -> density curve from YAML (format in the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", source=str(p))
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid YAML ({exc})", source=str(p)) from None
    return density_curve_from_mapping(doc, source=str(p))


def density_from_ct(ct: Volume, curve: DensityCurve = DEFAULT_CURVE) -> Volume:
    """Mass density map (unit ``"g/mL"``) from a CT in Hounsfield units, on the CT's grid.

    Raises
    ------
    InputError
        The CT's unit is not HU, or it has non-finite values.
    """
    src = ct.source_files[0] if ct.source_files else None
    if ct.unit not in HU_UNITS:
        raise InputError(f"CT values must be in Hounsfield units (unit 'HU'), got {ct.unit!r}", source=src, field="unit")
    hu = np.asarray(ct.array, dtype=np.float64)
    if not np.all(np.isfinite(hu)):
        raise InputError(f"{int(np.count_nonzero(~np.isfinite(hu)))} CT voxel(s) are NaN or infinite", source=src)
    return ct.with_array(
        curve(hu),
        unit="g/mL",
        modality="OT",
        description=f"mass density from CT via '{curve.name}' ({curve.source})",
    )
