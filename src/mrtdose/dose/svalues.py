"""S-value sources for organ-level MIRD dosimetry.

MIRD schema (Bolch et al. 2009, MIRD Pamphlet 21, J Nucl Med 50:477, eq. 12)::

    D(r_T) = sum_S  A~(r_S) * S(r_T <- r_S)

An :class:`SValueSource` supplies the S-value terms ``S(r_T <- r_S)`` for the regions of a case.
Each term is a function of the *target mass* (so that the uncertainty of the mass propagates into
the dose) and states the method that produced it and its model uncertainty.

Sources provided here:

* :class:`SelfSphereSource` (``self_sphere``): self-dose only. Non-penetrating energy (electrons,
  alphas) absorbed locally, plus the photon self-absorbed fraction of a sphere (or ellipsoid) of
  the region's mass and density, computed by :mod:`mrtdose.dose.spheres`.
* :class:`SphereModelSource` (``sphere``): the sphere model for lesions; electrons and photons both
  through absorbed fractions of a sphere of the lesion's mass.
* :class:`PatientSpecificSource` (``patient_specific``): S(target <- source) for the regions of
  a label map, from uniform unit activity in each source region convolved with a voxel kernel
  in the patient's own anatomy (:func:`mrtdose.dose.voxel.patient_specific_s_values`); every
  term scales as 1/m with the target mass (the energy absorbed is fixed by the anatomy).
* :class:`TableSource` (``table``): a user CSV of S-values for a named phantom with reference
  masses; self-dose terms are mass-scaled to the patient (see :func:`mass_scaled_self_s`),
  cross-dose terms are used as tabulated.
"""

from __future__ import annotations

import csv
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from mrtdose.errors import InputError
from mrtdose.physics.nuclides import J_PER_MEV, Nuclide


@dataclass(frozen=True)
class RegionGeometry:
    """What an S-value source needs to know about a region."""

    name: str
    kind: str  # "organ" | "lesion" | ...
    mass_g: float
    density_g_per_ml: float = 1.0
    material: str = "soft_tissue"
    semi_axes_ratio: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class SValueTerm:
    """One S(target <- source) term as a function of the target mass.

    ``evaluate(mass_g)`` returns S in Gy/(Bq s) for an array of target masses. ``mass_dependent``
    is False for tabulated cross-dose terms. ``model_component`` names the uncertainty component
    of the model (one systematic factor per method) and ``model_uncertainty_rel`` its relative
    standard uncertainty.
    """

    target: str
    source: str
    method: str
    evaluate: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    nominal_mass_g: float
    model_component: str
    model_uncertainty_rel: float
    mass_dependent: bool = True
    details: Mapping[str, float] = field(default_factory=dict)
    references: tuple[str, ...] = ()

    @property
    def nominal_s_gy_per_bq_s(self) -> float:
        return float(np.asarray(self.evaluate(np.array([self.nominal_mass_g])))[0])


class SValueSource(ABC):
    """Supplier of S-value terms for the regions of a case."""

    name: str = ""
    description: str = ""
    provides_cross_dose: bool = False

    @abstractmethod
    def terms(self, nuclide: Nuclide, regions: Sequence[RegionGeometry]) -> list[SValueTerm]:
        """All the terms this source provides among ``regions`` (sources = targets = regions)."""


def _sphere_term(nuclide: Nuclide, region: RegionGeometry, kind: str) -> SValueTerm:
    from mrtdose.dose import spheres

    if kind == "self":
        nominal = spheres.self_dose_s_value(
            nuclide, region.mass_g, region.density_g_per_ml, region.material, region.semi_axes_ratio
        )
    else:
        nominal = spheres.sphere_s_value(nuclide, region.mass_g, region.density_g_per_ml, region.material)
    fn = spheres.sphere_s_function(
        nuclide, region.density_g_per_ml, region.material, kind=kind, semi_axes_ratio=region.semi_axes_ratio
    ) if region.semi_axes_ratio is not None else spheres.sphere_s_function(
        nuclide, region.density_g_per_ml, region.material, kind=kind
    )
    return SValueTerm(
        target=region.name,
        source=region.name,
        method=nominal.method,
        evaluate=fn,
        nominal_mass_g=region.mass_g,
        model_component=f"S-value model ({'sphere' if kind == 'sphere' else 'self-dose'})",
        model_uncertainty_rel=float(nominal.model_uncertainty_rel),
        details={
            "electron_absorbed_fraction": float(nominal.electron_absorbed_fraction),
            "photon_absorbed_fraction": float(nominal.photon_absorbed_fraction),
            "electron_s_gy_per_bq_s": float(nominal.electron_s_gy_per_bq_s),
            "photon_s_gy_per_bq_s": float(nominal.photon_s_gy_per_bq_s),
            "alpha_s_gy_per_bq_s": float(nominal.alpha_s_gy_per_bq_s),
        },
        references=tuple(nominal.references),
    )


class SelfSphereSource(SValueSource):
    """Self-dose: local non-penetrating energy + photon self-absorbed fraction of a sphere."""

    name = "self_sphere"
    description = (
        "self-dose only: non-penetrating energy (electrons, alphas) absorbed locally; photon "
        "self-absorbed fraction of a sphere of the region's mass and density (point-kernel method)"
    )
    provides_cross_dose = False

    def terms(self, nuclide: Nuclide, regions: Sequence[RegionGeometry]) -> list[SValueTerm]:
        return [_sphere_term(nuclide, r, "self") for r in regions]


class SphereModelSource(SValueSource):
    """Sphere model (lesions): electron and photon absorbed fractions of a sphere."""

    name = "sphere"
    description = (
        "sphere model: electron and photon absorbed fractions of a uniformly filled sphere of the "
        "region's mass and density (point-kernel method); no cross-dose"
    )
    provides_cross_dose = False

    def terms(self, nuclide: Nuclide, regions: Sequence[RegionGeometry]) -> list[SValueTerm]:
        return [_sphere_term(nuclide, r, "sphere") for r in regions]


def mass_scaled_self_s(
    s_ref: float, m_ref_g: float, nonpenetrating_mev: float
) -> Callable[[np.ndarray], np.ndarray]:
    """Mass scaling of a tabulated self-dose S-value to a patient's organ mass.

    Non-penetrating part scales as 1/m and the photon part as m^(-2/3) (Snyder et al. 1975, MIRD
    Pamphlet 11; as implemented in OLINDA/EXM, Stabin, Sparks & Crowe 2005, J Nucl Med
    46:1023)::

        S(m) = S_np,ref (m_ref/m) + S_ph,ref (m_ref/m)^(2/3)

    with S_np,ref = E_np / m_ref (non-penetrating energy fully absorbed), capped at S_ref.
    """
    s_np = min(s_ref, nonpenetrating_mev * J_PER_MEV / (m_ref_g * 1e-3))
    s_ph = s_ref - s_np

    def f(mass_g: np.ndarray) -> np.ndarray:
        r = m_ref_g / np.asarray(mass_g, dtype=float)
        return s_np * r + s_ph * np.cbrt(r) ** 2

    return f


_S_UNIT_COLUMNS = {
    "s_value_gy_per_bq_s": 1.0,
    "s_value_mgy_per_mbq_s": 1e-9,  # 1 mGy/(MBq s) = 1e-3 Gy / 1e6 Bq s
    "s_value_gy_per_mbq_h": 1.0 / (1e6 * 3600.0),
    "s_value_mgy_per_mbq_h": 1e-3 / (1e6 * 3600.0),
}


@dataclass(frozen=True)
class TableEntry:
    target: str
    source: str
    s_gy_per_bq_s: float
    target_mass_g: float | None
    uncertainty_pct: float | None


class TableSource(SValueSource):
    """S-values from a user CSV for a named phantom.

    CSV columns: ``target``, ``source``, one S-value column whose name gives its unit
    (``s_value_gy_per_bq_s``, ``s_value_mgy_per_mbq_s``, ``s_value_gy_per_mbq_h`` or
    ``s_value_mgy_per_mbq_h``), ``target_mass_g`` (the phantom's reference mass of the target;
    required on self-dose rows, used for mass scaling) and optionally ``uncertainty_pct`` (the
    table's model uncertainty, default ``default_uncertainty_pct``). Region names are matched
    to the case's region names (case-insensitive), or through ``names`` (table name -> case name).
    """

    name = "table"
    provides_cross_dose = True

    def __init__(
        self,
        path: str | Path,
        phantom: str,
        names: Mapping[str, str] | None = None,
        default_uncertainty_pct: float = 10.0,
        nuclide_name: str | None = None,
    ):
        self.path = Path(path)
        self.phantom = phantom
        self.default_uncertainty_pct = default_uncertainty_pct
        self.nuclide_name = nuclide_name
        self.entries = self._read(self.path, {k.lower(): v for k, v in (names or {}).items()})
        self.description = (
            f"S-value table '{self.path.name}' for phantom '{phantom}': tabulated cross-dose; "
            "self-dose mass-scaled to the patient (non-penetrating 1/m, photons m^-2/3)"
        )

    @staticmethod
    def _read(path: Path, names: Mapping[str, str]) -> list[TableEntry]:
        src = str(path)
        if not path.is_file():
            raise InputError("S-value table not found", source=src)
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and not r[0].lstrip().startswith("#")]
        if len(rows) < 2:
            raise InputError("S-value table has no rows", source=src)
        header = [h.strip().lower() for h in rows[0]]
        for col in ("target", "source"):
            if col not in header:
                raise InputError(f"missing column '{col}' (columns: {', '.join(header)})", source=src)
        s_cols = [c for c in header if c in _S_UNIT_COLUMNS]
        if len(s_cols) != 1:
            raise InputError(
                "need exactly one S-value column named with its unit, one of: " + ", ".join(_S_UNIT_COLUMNS),
                source=src,
            )
        s_col = s_cols[0]
        idx = {h: i for i, h in enumerate(header)}
        out = []
        for n, row in enumerate(rows[1:], start=2):
            def cell(col: str) -> str | None:
                i = idx.get(col)
                return row[i].strip() if i is not None and i < len(row) and row[i].strip() else None

            def num(col: str) -> float | None:
                v = cell(col)
                if v is None:
                    return None
                try:
                    x = float(v)
                except ValueError:
                    raise InputError(f"'{v}' is not a number", source=src, field=f"line {n}, {col}") from None
                if not math.isfinite(x) or x < 0:
                    raise InputError(f"{x} must be a finite number >= 0", source=src, field=f"line {n}, {col}")
                return x

            t, s = cell("target"), cell("source")
            if not t or not s:
                raise InputError("target and source are required", source=src, field=f"line {n}")
            sv = num(s_col)
            if sv is None:
                raise InputError("S-value missing", source=src, field=f"line {n}, {s_col}")
            tm = num("target_mass_g")
            if t.lower() == s.lower() and not tm:
                raise InputError(
                    "self-dose rows need target_mass_g (reference mass for mass scaling)",
                    source=src, field=f"line {n}, target_mass_g",
                )
            out.append(
                TableEntry(
                    names.get(t.lower(), t), names.get(s.lower(), s), sv * _S_UNIT_COLUMNS[s_col], tm,
                    num("uncertainty_pct"),
                )
            )
        return out

    def terms(self, nuclide: Nuclide, regions: Sequence[RegionGeometry]) -> list[SValueTerm]:
        by_name = {r.name.lower(): r for r in regions}
        terms = []
        for e in self.entries:
            t = by_name.get(e.target.lower())
            s = by_name.get(e.source.lower())
            if t is None or s is None:
                continue
            u = (e.uncertainty_pct if e.uncertainty_pct is not None else self.default_uncertainty_pct) / 100.0
            if t.name == s.name:
                fn = mass_scaled_self_s(e.s_gy_per_bq_s, float(e.target_mass_g), nuclide.nonpenetrating_mev)
                method = f"table ({self.phantom}), self-dose mass-scaled from {e.target_mass_g:g} g"
                dep = True
            else:
                val = e.s_gy_per_bq_s
                fn = (lambda v: (lambda m: np.full(np.shape(np.asarray(m)), v)))(val)
                method = f"table ({self.phantom}), cross-dose as tabulated"
                dep = False
            terms.append(
                SValueTerm(
                    target=t.name, source=s.name, method=method, evaluate=fn, nominal_mass_g=t.mass_g,
                    model_component="S-value table", model_uncertainty_rel=u, mass_dependent=dep,
                    details={"tabulated_s_gy_per_bq_s": e.s_gy_per_bq_s,
                             **({"reference_mass_g": e.target_mass_g} if e.target_mass_g else {})},
                    references=(f"user table {self.path.name}",),
                )
            )
        return terms

    def covered(self) -> set[str]:
        return {e.target.lower() for e in self.entries if e.target.lower() == e.source.lower()}


class PatientSpecificSource(SValueSource):
    """S-values computed in the patient's own anatomy (voxel kernel convolution), with cross-dose.

    ``s_matrix[t, s]`` is S(t <- s) in Gy/(Bq s) for ``names``; ``masses_g`` the masses of the
    regions in the image. A term evaluated at another target mass m (e.g. the case's mass with
    its uncertainty) is scaled by m_image / m: the energy imparted is fixed by the anatomy and
    the dose is energy / mass (ICRU Report 85).
    """

    name = "patient_specific"
    provides_cross_dose = True

    def __init__(self, names: Sequence[str], s_matrix: np.ndarray, masses_g: np.ndarray,
                 model_uncertainty_rel: float, kernel_description: str = ""):
        self.names = list(names)
        self.s = np.asarray(s_matrix, dtype=float)
        self.masses = np.asarray(masses_g, dtype=float)
        self.model_uncertainty_rel = float(model_uncertainty_rel)
        self.description = (
            "patient-specific S-values: uniform activity in each labelled region convolved with the voxel "
            "kernel in the patient's anatomy (MIRD Pamphlet 17), self- and cross-dose"
        )
        self.kernel_description = kernel_description

    def terms(self, nuclide: Nuclide, regions: Sequence[RegionGeometry]) -> list[SValueTerm]:
        idx = {n: i for i, n in enumerate(self.names)}
        present = [r for r in regions if r.name in idx]
        out = []
        for t in present:
            for s in present:
                i, j = idx[t.name], idx[s.name]
                val, m_img = float(self.s[i, j]), float(self.masses[i])
                fn = (lambda v, m0: (lambda m: v * m0 / np.asarray(m, dtype=float)))(val, m_img)
                out.append(SValueTerm(
                    target=t.name, source=s.name,
                    method="patient-specific (voxel kernel convolution)" + ("" if t.name != s.name else ", self-dose"),
                    evaluate=fn, nominal_mass_g=t.mass_g, model_component="S-value model (patient-specific)",
                    model_uncertainty_rel=self.model_uncertainty_rel, mass_dependent=True,
                    details={"image_mass_g": m_img, "s_at_image_mass_gy_per_bq_s": val},
                    references=("Bolch WE et al. MIRD Pamphlet No. 17. J Nucl Med 1999;40:11S-36S",),
                ))
        return out
