"""Population effective half-lives for single-time-point (STP) dosimetry.

Each entry is a published mean and standard deviation of the effective half-life T_eff (hours)
across a patient cohort, with its citation, the cohort and how T_eff was measured. Only numbers
that could be checked against the cited publication are included; regions without a checked
value are absent on purpose (an STP estimate with a made-up prior is worse than none). Add an
entry only with its citation, cohort and method.

Caveats for the user: a population T_eff depends on the cohort, the measurement method (planar,
SPECT/CT, dose-rate) and the fit model; the SD is the spread between patients, which is what
:func:`mrtdose.kinetics.stp.madsen` and :func:`~mrtdose.kinetics.stp.population_prior` need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from mrtdose.errors import InputError


@dataclass(frozen=True)
class PopulationKinetics:
    """Population effective half-life of one radiopharmaceutical in one region.

    Attributes
    ----------
    radiopharmaceutical : canonical name, e.g. "Lu-177-DOTATATE".
    region : canonical region name, e.g. "kidney".
    effective_half_life_h, effective_half_life_sd_h : mean and SD across patients (h).
    n_patients : cohort size.
    cohort : who was measured.
    method : how T_eff was obtained.
    reference : citation; doi: its DOI.
    notes : anything else the user should know.
    """

    radiopharmaceutical: str
    region: str
    effective_half_life_h: float
    effective_half_life_sd_h: float
    n_patients: int | None
    cohort: str
    method: str
    reference: str
    doi: str
    notes: str = ""

    def to_json(self) -> dict:
        return {
            "radiopharmaceutical": self.radiopharmaceutical,
            "region": self.region,
            "effective_half_life_h": {"value": self.effective_half_life_h,
                                      "uncertainty": self.effective_half_life_sd_h, "unit": "h",
                                      "uncertainty_is": "population SD"},
            "n_patients": self.n_patients,
            "cohort": self.cohort,
            "method": self.method,
            "reference": self.reference,
            "doi": self.doi,
            "notes": self.notes,
        }


_ENTRIES = (
    PopulationKinetics(
        radiopharmaceutical="Lu-177-DOTATATE",
        region="kidney",
        effective_half_life_h=56.0,
        effective_half_life_sd_h=13.0,
        n_patients=31,
        cohort="31 patients with neuroendocrine tumours, 107 therapy cycles of [177Lu]Lu-DOTA-TATE PRRT",
        method=("post-therapy SPECT/CT on day 0, 4 and 7; mono-exponential fit per kidney and cycle "
                "(multiple-time-point reference method of the study)"),
        reference=("Spink S, Gillett D, Heard S, Harper I, Casey R, Aloj L. Estimation of kidney doses from "
                   "[177Lu]Lu-DOTA-TATE PRRT using single time point post-treatment SPECT/CT. "
                   "EJNMMI Phys 2024;11"),
        doi="10.1186/s40658-024-00665-9",
        notes="population T_eff reported as 56 ± 13 h (mean ± SD) in the abstract",
    ),
    PopulationKinetics(
        radiopharmaceutical="Lu-177-PSMA-617",
        region="whole_body",
        effective_half_life_h=40.5,
        effective_half_life_sd_h=9.6,
        n_patients=50,
        cohort=("50 patients with metastatic castration-resistant prostate cancer, mean administered "
                "activity 6.3 ± 0.5 GBq, two centres"),
        method="whole-body dose rates measured at 2 m at several times after administration",
        reference=("Kurth J, Krause BJ, Schwarzenböck SM, Stegger L, Schäfers M, Rahbar K. External radiation "
                   "exposure, excretion, and effective half-life in 177Lu-PSMA-targeted therapies. "
                   "EJNMMI Res 2018;8"),
        doi="10.1186/s13550-018-0386-4",
        notes="range 21.7-85.7 h; a whole-body (dose-rate) value, not an organ value",
    ),
)

#: (radiopharmaceutical, region) -> PopulationKinetics
POPULATION_KINETICS: Mapping[tuple[str, str], PopulationKinetics] = MappingProxyType(
    {(e.radiopharmaceutical, e.region): e for e in _ENTRIES}
)

_RADIOPHARMACEUTICAL_ALIASES = {
    "lu177dotatate": "Lu-177-DOTATATE",
    "177ludotatate": "Lu-177-DOTATATE",
    "177luludotatate": "Lu-177-DOTATATE",
    "lutathera": "Lu-177-DOTATATE",
    "lu177oxodotreotide": "Lu-177-DOTATATE",
    "lutetiumlu177dotatate": "Lu-177-DOTATATE",
    "lu177psma617": "Lu-177-PSMA-617",
    "177lupsma617": "Lu-177-PSMA-617",
    "177lulupsma617": "Lu-177-PSMA-617",
    "pluvicto": "Lu-177-PSMA-617",
    "lu177vipivotidetetraxetan": "Lu-177-PSMA-617",
}

_REGION_ALIASES = {
    "kidney": "kidney", "kidneys": "kidney", "leftkidney": "kidney", "rightkidney": "kidney",
    "kidneyleft": "kidney", "kidneyright": "kidney", "lkidney": "kidney", "rkidney": "kidney",
    "liver": "liver",
    "spleen": "spleen",
    "tumour": "tumour", "tumor": "tumour", "tumours": "tumour", "tumors": "tumour", "lesion": "tumour",
    "lesions": "tumour", "nettumour": "tumour", "nettumor": "tumour",
    "salivaryglands": "salivary_glands", "salivarygland": "salivary_glands", "parotid": "salivary_glands",
    "parotids": "salivary_glands", "parotidglands": "salivary_glands", "submandibularglands": "salivary_glands",
    "bonemarrow": "bone_marrow", "redmarrow": "bone_marrow", "marrow": "bone_marrow",
    "wholebody": "whole_body", "totalbody": "whole_body", "body": "whole_body", "wb": "whole_body",
}


def _key(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(s).lower())


def canonical_radiopharmaceutical(name: str) -> str:
    """'177Lu-DOTATATE', 'Lutathera', '[177Lu]Lu-DOTA-TATE' -> 'Lu-177-DOTATATE'."""
    k = _key(name)
    out = _RADIOPHARMACEUTICAL_ALIASES.get(k)
    if out is None:
        known = sorted({e.radiopharmaceutical for e in _ENTRIES})
        raise InputError(f"no population kinetics for radiopharmaceutical '{name}'; available: {', '.join(known)}")
    return out


def canonical_region(name: str) -> str:
    """'left_kidney', 'Kidneys' -> 'kidney'; 'parotid' -> 'salivary_glands'; ..."""
    k = _key(name)
    out = _REGION_ALIASES.get(k)
    if out is None:
        raise InputError(
            f"unknown region '{name}' for population kinetics; known regions: "
            f"{', '.join(sorted(set(_REGION_ALIASES.values())))}"
        )
    return out


def get_population_kinetics(radiopharmaceutical: str, region: str) -> PopulationKinetics:
    """The population effective half-life of ``radiopharmaceutical`` in ``region``.

    >>> p = get_population_kinetics("Lutathera", "left_kidney")
    >>> (p.effective_half_life_h, p.effective_half_life_sd_h)
    (56.0, 13.0)
    """
    rp = canonical_radiopharmaceutical(radiopharmaceutical)
    rg = canonical_region(region)
    entry = POPULATION_KINETICS.get((rp, rg))
    if entry is None:
        have = ", ".join(f"{r} / {g}" for r, g in POPULATION_KINETICS)
        raise InputError(
            f"no published population effective half-life in mrtdose for {rp} in region '{rg}'. "
            f"Available: {have}. Give the effective half-life (mean and SD, with its source) yourself, "
            "or use a multiple-time-point fit"
        )
    return entry


__all__ = ["PopulationKinetics", "POPULATION_KINETICS", "get_population_kinetics", "canonical_radiopharmaceutical",
           "canonical_region"]
