"""Radionuclide data: half-lives, chains and energy emitted per decay by radiation type.

Sources
-------
* Emissions (energies and yields per decay, beta spectra): ICRP Publication 107, "Nuclear Decay
  Data for Dosimetric Calculations" (Eckerman & Endo, Ann. ICRP 38(3), 2008), read from the PyPI
  package ``icrp107-database`` (pinned; LGPL-3.0). Notice: the ICRP-107 data are the copyright
  of the International Commission on Radiological Protection; mrtdose uses them, unmodified, via
  that package and does not redistribute them.
* Half-lives, progeny and branching fractions: ``radioactivedecay`` (pinned), whose default
  dataset is ICRP-107 with AME2020/NUBASE2020 additions.

Energy categories
-----------------
Mean energy per decay of a category is ``sum(E_i * Y_i)`` over that category's discrete emissions
(MIRD Pamphlet 21, Bolch et al. 2009, J Nucl Med 50:477, eq. 4: Delta = sum n_i E_i). For beta
spectra the ICRP-107 tabulation already gives mean energies per branch, so the same sum applies.
Following MIRD practice, alpha particles, recoil nuclei, beta particles, conversion and Auger
electrons are *non-penetrating* (their ranges are small compared with organ dimensions) and
gamma rays, X-rays and annihilation photons are *penetrating*.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import version as _pkg_version
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np

from mrtdose.errors import NuclideError

#: Joules per MeV (CODATA 2018, exact elementary charge).
J_PER_MEV = 1.602176634e-13
#: Seconds per hour.
S_PER_H = 3600.0

#: ICRP-107 emission categories, grouped as used for dosimetry.
ELECTRON_CATEGORIES = ("beta-", "beta+", "IE", "auger")
ALPHA_CATEGORIES = ("alpha", "alpha recoil")
PHOTON_CATEGORIES = ("gamma", "X", "annihilation")
NONPENETRATING_CATEGORIES = ELECTRON_CATEGORIES + ALPHA_CATEGORIES
#: Categories not used for absorbed dose here (neutrons from spontaneous fission are not
#: relevant for MRT nuclides; delayed betas are listed separately in ICRP-107 and are empty for
#: therapy nuclides).
IGNORED_CATEGORIES = ("neutron", "fission", "betaD")

#: Radiopharmaceutical names accepted in a case file and their radionuclide.
RADIOPHARMACEUTICALS: Mapping[str, str] = MappingProxyType(
    {
        "Lu-177-DOTATATE": "Lu-177",
        "Lu-177-DOTATOC": "Lu-177",
        "Lu-177-PSMA-617": "Lu-177",
        "Lu-177-PSMA-I&T": "Lu-177",
        "Lu-177-PSMA": "Lu-177",
        "I-131-NaI": "I-131",
        "I-131-mIBG": "I-131",
        "Y-90-microspheres": "Y-90",
        "Y-90-SIRT": "Y-90",
        "Ra-223-dichloride": "Ra-223",
        "Ac-225-PSMA-617": "Ac-225",
        "Tb-161-DOTATATE": "Tb-161",
        "Ho-166-microspheres": "Ho-166",
    }
)

_TIME_UNIT_TO_H = {
    "us": 1 / 3.6e9, "ms": 1 / 3.6e6, "s": 1 / 3600.0, "m": 1 / 60.0, "min": 1 / 60.0,
    "h": 1.0, "d": 24.0, "y": 24.0 * 365.25, "a": 24.0 * 365.25,
}


def _icrp107_dir() -> Path:
    import icrp107_database

    return Path(icrp107_database.__file__).parent / "icrp107"


def normalise_name(name: str) -> str:
    """Canonical ``Sy-NNN[m]`` form of a radionuclide name.

    >>> normalise_name("177Lu"), normalise_name("lu177"), normalise_name("Tc-99m")
    ('Lu-177', 'Lu-177', 'Tc-99m')
    """
    s = str(name).strip().replace(" ", "").replace("_", "-")
    m = re.fullmatch(r"([A-Za-z]{1,2})-?(\d{1,3})([mnMN]?\d?)", s)
    if not m:
        m2 = re.fullmatch(r"(\d{1,3})([mn]?\d?)-?([A-Za-z]{1,2})", s)
        if not m2:
            raise NuclideError(f"'{name}' is not a radionuclide name (expected e.g. Lu-177, 177Lu)")
        mass, meta, sym = m2.groups()
    else:
        sym, mass, meta = m.groups()
    return f"{sym.capitalize()}-{int(mass)}{meta.lower()}"


@dataclass(frozen=True)
class Nuclide:
    """Decay data of one radionuclide (ICRP-107).

    Attributes
    ----------
    name : canonical name, e.g. ``"Lu-177"``.
    half_life_h : physical half-life in hours.
    energy_per_decay_mev : mean energy emitted per decay (MeV) by ICRP-107 category.
    progeny : ((daughter name, branching fraction), ...) from ``radioactivedecay``.
    """

    name: str
    half_life_h: float
    energy_per_decay_mev: Mapping[str, float]
    progeny: tuple[tuple[str, float], ...] = ()
    _emissions: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict, repr=False)
    _beta_spectrum: tuple[tuple[float, float], ...] = field(default=(), repr=False)

    @property
    def decay_constant_per_h(self) -> float:
        """lambda = ln 2 / T1/2 (1/h)."""
        return float(np.log(2.0) / self.half_life_h)

    @property
    def nonpenetrating_mev(self) -> float:
        """Mean energy per decay of electrons, alphas and recoils (MeV)."""
        return sum(self.energy_per_decay_mev.get(c, 0.0) for c in NONPENETRATING_CATEGORIES)

    @property
    def electron_mev(self) -> float:
        """Mean energy per decay of beta particles, conversion and Auger electrons (MeV)."""
        return sum(self.energy_per_decay_mev.get(c, 0.0) for c in ELECTRON_CATEGORIES)

    @property
    def alpha_mev(self) -> float:
        """Mean energy per decay of alpha particles and recoil nuclei (MeV)."""
        return sum(self.energy_per_decay_mev.get(c, 0.0) for c in ALPHA_CATEGORIES)

    @property
    def photon_mev(self) -> float:
        """Mean energy per decay of gamma, X-ray and annihilation photons (MeV)."""
        return sum(self.energy_per_decay_mev.get(c, 0.0) for c in PHOTON_CATEGORIES)

    def emissions(self, category: str) -> tuple[np.ndarray, np.ndarray]:
        """Discrete emissions of one ICRP-107 category: (energies in MeV, yields per decay)."""
        rows = self._emissions.get(category, ())
        if not rows:
            return np.zeros(0), np.zeros(0)
        a = np.asarray(rows, dtype=float)
        return a[:, 0].copy(), a[:, 1].copy()

    def beta_spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """ICRP-107 beta spectrum: (energies in MeV, particles per MeV per decay)."""
        if not self._beta_spectrum:
            return np.zeros(0), np.zeros(0)
        a = np.asarray(self._beta_spectrum, dtype=float)
        return a[:, 0].copy(), a[:, 1].copy()

    def photon_lines(self, min_yield: float = 0.0, min_energy_mev: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """All penetrating photon lines (gamma, X, annihilation): (energies MeV, yields)."""
        es, ys = [], []
        for c in PHOTON_CATEGORIES:
            e, y = self.emissions(c)
            es.append(e)
            ys.append(y)
        e, y = np.concatenate(es), np.concatenate(ys)
        keep = (y > min_yield) & (e > min_energy_mev)
        return e[keep], y[keep]

    def discrete_electrons(self) -> tuple[np.ndarray, np.ndarray]:
        """Conversion and Auger electrons: (energies MeV, yields)."""
        e1, y1 = self.emissions("IE")
        e2, y2 = self.emissions("auger")
        return np.concatenate([e1, e2]), np.concatenate([y1, y2])

    def decay_factor(self, elapsed_h: float | np.ndarray) -> float | np.ndarray:
        """exp(-lambda t): the fraction of activity left after ``elapsed_h`` hours."""
        return np.exp(-self.decay_constant_per_h * np.asarray(elapsed_h, dtype=float))


def _load_icrp107_json(name: str) -> dict:
    path = _icrp107_dir() / f"{name}.json"
    if not path.exists():
        raise NuclideError(f"'{name}' is not in the ICRP-107 database")
    with open(path, "rb") as f:
        data = json.load(f)
    # The package stores a JSON document encoded as a JSON string.
    return json.loads(data) if isinstance(data, str) else data


@lru_cache(maxsize=None)
def get_nuclide(name: str) -> Nuclide:
    """Load a radionuclide by name (``Lu-177``, ``177Lu``, ``Lu177`` are all accepted).

    >>> lu = get_nuclide("177Lu")
    >>> round(lu.half_life_h, 1)
    159.5
    """
    canonical = normalise_name(name)
    raw = _load_icrp107_json(canonical)
    emissions: dict[str, tuple[tuple[float, float], ...]] = {}
    energies: dict[str, float] = {}
    beta_spectrum: tuple[tuple[float, float], ...] = ()
    for cat, rows in raw["emissions"].items():
        if cat == "b-spectra":
            beta_spectrum = tuple((float(e), float(w)) for e, w in rows)
            continue
        rows_t = tuple((float(r[0]), float(r[1])) for r in rows)
        emissions[cat] = rows_t
        energies[cat] = float(sum(e * y for e, y in rows_t))
    unit = str(raw["time_unit"]).strip()
    if unit not in _TIME_UNIT_TO_H:
        raise NuclideError(f"{canonical}: unknown half-life unit '{unit}' in ICRP-107 data")
    half_life_h = float(raw["half_life"]) * _TIME_UNIT_TO_H[unit]
    progeny = _progeny(canonical)
    return Nuclide(
        name=canonical,
        half_life_h=half_life_h,
        energy_per_decay_mev=MappingProxyType(energies),
        progeny=progeny,
        _emissions=MappingProxyType(emissions),
        _beta_spectrum=beta_spectrum,
    )


def _progeny(name: str) -> tuple[tuple[str, float], ...]:
    import radioactivedecay as rd

    try:
        n = rd.Nuclide(name)
    except Exception:  # radioactivedecay does not know it: no chain information
        return ()
    out = []
    for d, bf in zip(n.progeny(), n.branching_fractions()):
        if d in ("SF",) or float(bf) <= 0:
            continue
        out.append((str(d), float(bf)))
    return tuple(out)


def chain_energy_per_decay_mev(nuclide: Nuclide, max_half_life_ratio: float = 0.01) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Energy per decay of the parent plus its short-lived progeny in equilibrium.

    Progeny whose half-life is below ``max_half_life_ratio`` times the parent's are taken to be in
    secular (or near-secular) equilibrium, so that each decays ``b`` times per parent decay, with
    ``b`` the product of branching fractions along the chain (Bateman 1910; for a daughter much
    shorter-lived than its parent the transient-equilibrium activity ratio
    lambda_d / (lambda_d - lambda_p) is within ``max_half_life_ratio`` of 1).
    Decay stops at the first stable or long-lived member.

    Returns (energy by category in MeV per parent decay, [(member, decays per parent decay)]).
    """
    totals = dict(nuclide.energy_per_decay_mev)
    members: list[tuple[str, float]] = [(nuclide.name, 1.0)]
    frontier = [(d, bf) for d, bf in nuclide.progeny]
    while frontier:
        name, weight = frontier.pop()
        try:
            d = get_nuclide(name)
        except NuclideError:
            continue  # stable daughters are not in ICRP-107
        if d.half_life_h > max_half_life_ratio * nuclide.half_life_h:
            continue
        members.append((d.name, weight))
        for cat, e in d.energy_per_decay_mev.items():
            totals[cat] = totals.get(cat, 0.0) + weight * e
        frontier.extend((g, weight * bf) for g, bf in d.progeny)
    return totals, members


def resolve_radiopharmaceutical(name: str) -> str:
    """The radionuclide of a radiopharmaceutical name (or the nuclide itself, canonicalised)."""
    key = str(name).strip()
    for k, v in RADIOPHARMACEUTICALS.items():
        if k.lower() == key.lower():
            return v
    # "Lu-177 DOTATATE", "177Lu-PSMA": take the leading nuclide part.
    m = re.match(r"^\s*([A-Za-z]{1,2}-?\d{1,3}m?|\d{1,3}m?-?[A-Za-z]{1,2})(?:[\s\-_].*)?$", key)
    if m:
        try:
            return normalise_name(m.group(1))
        except NuclideError:
            pass
    raise NuclideError(
        f"unknown radiopharmaceutical '{name}'; give `nuclide:` instead or one of: "
        + ", ".join(RADIOPHARMACEUTICALS)
    )


def data_versions() -> dict[str, str]:
    """Versions of the nuclear-data packages, for provenance."""
    import radioactivedecay as rd

    return {
        "icrp107-database": _pkg_version("icrp107-database"),
        "radioactivedecay": _pkg_version("radioactivedecay"),
        "radioactivedecay_dataset": str(rd.DEFAULTDATA.dataset_name),
    }


def with_progeny(nuclide: Nuclide, max_half_life_ratio: float = 0.01) -> Nuclide:
    """A composite :class:`Nuclide` whose emissions are the parent's plus those of its short-lived
    progeny in equilibrium, per parent decay (see :func:`chain_energy_per_decay_mev`).

    Used for alpha emitters such as Ra-223, whose five short-lived daughters deposit most of the
    energy (e.g. ICRP 107; Lassmann & Nosske 2013, EJNMMI 40:207). Returns the nuclide itself
    when it has no such progeny.
    """
    _, members = chain_energy_per_decay_mev(nuclide, max_half_life_ratio)
    if len(members) == 1:
        return nuclide
    emissions: dict[str, list[tuple[float, float]]] = {}
    energies: dict[str, float] = {}
    grids, spectra = [], []
    for name, w in members:
        m = nuclide if name == nuclide.name else get_nuclide(name)
        for cat, rows in m._emissions.items():
            emissions.setdefault(cat, []).extend((e, y * w) for e, y in rows)
            energies[cat] = energies.get(cat, 0.0) + w * m.energy_per_decay_mev.get(cat, 0.0)
        e, n = m.beta_spectrum()
        if e.size:
            grids.append(e)
            spectra.append((e, n * w))
    spectrum: tuple[tuple[float, float], ...] = ()
    if grids:
        grid = np.unique(np.concatenate(grids))
        total = sum(np.interp(grid, e, n, left=0.0, right=0.0) for e, n in spectra)
        spectrum = tuple(zip(grid.tolist(), np.asarray(total).tolist()))
    return Nuclide(
        name=f"{nuclide.name}+progeny",
        half_life_h=nuclide.half_life_h,
        energy_per_decay_mev=MappingProxyType(energies),
        progeny=nuclide.progeny,
        _emissions=MappingProxyType({k: tuple(v) for k, v in emissions.items()}),
        _beta_spectrum=spectrum,
    )
