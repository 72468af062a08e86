"""Voxel absorbed dose by Monte Carlo with OpenGATE 10 (Geant4): an optional engine.

The kernel engine (:mod:`mrtdose.dose.voxel`) is the tested default. This module runs a full
radiation-transport simulation of the same problem, where OpenGATE and its Geant4 data are
installed, for heterogeneous patients (lung, bone, air interfaces) where kernel convolution with
mass scaling is least accurate (Dieudonné et al. 2013; Götz et al. 2019, see
:mod:`mrtdose.dose.voxel`).

Install
-------
``pip install 'mrtdose[montecarlo]'`` (OpenGATE 10.1.1 = Geant4 11.4.2, pinned), then the Geant4
data sets (see :func:`gate_availability` and ``docs/monte_carlo.md``). ``opengate`` is imported
lazily, only by the functions that need it.

What OpenGATE does about its data (read from ``opengate_core`` 10.1.1): the data sets live in
the folder ``geant4_data`` inside the installed ``opengate_core`` package, one sub-folder per set
with a versioned name (``G4EMLOW8.8``, ``G4ENSDFSTATE3.0``, ... 12 in all).
``import opengate_core`` checks that folder and, if a set is missing, *downloads* it from
cern.ch at import time (5 tries, 10 s apart, then ``requests.exceptions.ConnectionError`` where
there is no internet); it then sets ``G4LEDATA``, ``G4ENSDFSTATEDATA``... to those folders,
overwriting any value the user had set. Hence this module checks the folders itself, without
importing ``opengate_core`` (:func:`gate_availability`), and refuses to start with an
:class:`~mrtdose.errors.InputError` naming the missing sets, instead of a 40-second network
failure. The configuration alone (:func:`build_gate_simulation` with ``require_data=False``)
needs no data: ``opengate_core`` is then imported with its own switch ``GATEONRTD`` set, which
skips the check (it exists for documentation builds).

Method
------
Geometry: the CT (HU, converted with :func:`mrtdose.imaging.density.density_from_ct`) or a
density map (g/mL) becomes a voxelised phantom on *exactly* the activity map's grid (same size
and spacing; the image is centred in the Geant4 world, and since a rigid motion or reflection of
the whole problem does not change the dose, the grid's origin and direction cosines are not
needed in the simulation; the output is put back on the input grid). Each voxel gets a material
from :func:`assign_materials` (our own table, below). The DoseActor scores on the same grid.

Materials (built here from first principles, not from GATE's Schneider tables): the tissue class
is chosen by mass density rho (g/mL), so that a CT and a density map are handled alike:

=====================  ==================================================================
rho < 0.05             dry air (NIST, near sea level)
0.05 <= rho < 0.85     ICRU-44 lung tissue composition at the voxel density (inflated lung
                       is 0.26-0.38 g/mL, ICRP 89; the upper bound takes in lung/tissue
                       partial-volume voxels)
0.85 <= rho < 0.985    ICRU-44 adipose tissue (0.95 g/mL; fat is about -100 HU = 0.90 g/mL
                       on the default curve)
0.985 <= rho <= 1.06   ICRU-44 soft tissue
1.06 < rho < 1.92      soft tissue (1.06 g/mL) + ICRU-44 cortical bone (1.92 g/mL) mixed by
                       volume: bone volume fraction f = (rho - 1.06) / (1.92 - 1.06), bone
                       mass fraction w = f x 1.92 / rho, element mass fractions
                       w x bone + (1 - w) x tissue (continuous at both ends)
rho >= 1.92            ICRU-44 cortical bone composition at the voxel density
=====================  ==================================================================

``composition="water"`` uses liquid water at the voxel density everywhere but air (the
"density-scaled water" model, for comparisons with water kernels). Voxels are grouped by class
and by density in bins of relative width ``density_bin_rel`` (default 2 %); each group is one
Geant4 material whose density is the mean density of its voxels (so each group's mass is kept
exactly; no voxel's density differs from its material's by more than the bin width).

Source: the decays are the input map (a TIA or activity concentration times the voxel volume),
sampled per voxel by OpenGATE's ``VoxelSource`` (uniform within the voxel, isotropic). The
emissions per decay are those of ICRP Publication 107 from :mod:`mrtdose.physics.nuclides`, the
same data as the kernel engine and the organ-level S values, rather than Geant4's radioactive
decay (G4RadioactiveDecay with ENSDF data): (1) so that a Monte Carlo vs kernel comparison tests
transport, not a second nuclear-data set; (2) so that nothing depends on the radioactive-decay
data sets or on the physics list's decay settings; (3) so that alpha-emitter chains in
equilibrium (:func:`mrtdose.physics.nuclides.with_progeny`) are handled as in the rest of
mrtdose. Absorbed dose is linear in the emissions, so sampling each emission category
independently (rather than decay by decay, with correlations) gives the same expected dose.
See :func:`emission_sources` for the categories (beta spectrum, discrete electrons, photons,
alphas) and the energy deposited locally (lines below 1 keV, alpha recoils).

Physics: ``G4EmStandardPhysics_option4`` (Geant4's most accurate standard electromagnetic
constructor, Livermore/Penelope models below 1 MeV; used by the Geant4 medical benchmarking
group, Arce et al. 2021) as the whole physics list (no hadronic physics: only electrons,
positrons, photons and alphas of a few MeV are transported), production cut 0.5 mm for all
particles (a tenth of a typical SPECT voxel; below the cut, energy is deposited continuously
along the track, which moves energy by less than the cut range).

Scaling to absorbed dose (derivation)
-------------------------------------
Let N_v be the number of decays in voxel v (``decays_per_voxel``: TIA in Bq s, or for an
activity map the decays per second) and N = sum_v N_v. The simulation samples N_sim decays, each
in voxel v with probability N_v / N; for every emission category c it emits n_c = N_sim Y_c
particles (Y_c: particles of category c per decay) with the category's spectrum. The DoseActor
returns D_sim(r) = sum over all events of E_dep(r) / (rho(r) V) (Gy), an unbiased estimator of
N_sim d(r), where d(r) is the expected absorbed dose in r per decay drawn from the map. Decays are
independent and dose is additive, so the patient's dose is N d(r), and

    D(r) = D_sim(r) x N / N_sim + D_local(r),
    D_local(r) = N_v(r) E_local x 1.602176634e-13 J/MeV / (rho_mat(r) x V x 1e-3 kg/mL),

with E_local (MeV per decay) the energy deposited where it is emitted and rho_mat the density of
the voxel's Geant4 material (the mass the DoseActor divides by). For an activity map the same
expression gives Gy/s, reported as Gy/h (x 3600). The standard uncertainty (k=1) is the
DoseActor's history-by-history estimate, u(D_sim)/D_sim = sqrt((sum x^2 / n - (sum x / n)^2) /
(n - 1)) / (sum x / n) over the n events (opengate ``dose_uncertainty``), scaled with D_sim;
D_local is exact. Because each event is one primary of one category (not one decay), this
estimate also contains the spread between categories, so it overstates the variance slightly
(conservative).

Threads: OpenGATE's ``source.n`` is the number of particles *per thread* (each worker thread
runs its own copy of every source; checked in opengate's own tests, ``events == n x threads``),
so N_sim = threads x n_per_thread and n_c = round(n_per_thread Y_c) per thread. After a run the
number of events counted by the SimulationStatisticsActor is compared with sum_c threads x n_c;
a mismatch is an error, not a silent mis-scaling.

References
----------
See the ``REF_*`` constants.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version as _pkg_version
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Literal, Mapping

import numpy as np

from mrtdose.dose.voxel import VoxelDose
from mrtdose.errors import InputError, NuclideError, PhysicsError
from mrtdose.imaging.density import DEFAULT_CURVE, HU_UNITS, DensityCurve, density_from_ct
from mrtdose.imaging.volume import Volume
from mrtdose.physics.attenuation import MATERIALS
from mrtdose.physics.nuclides import (
    ALPHA_CATEGORIES,
    ELECTRON_CATEGORIES,
    PHOTON_CATEGORIES,
    Nuclide,
    get_nuclide,
    resolve_radiopharmaceutical,
)

REF_GATE10_PART1 = (
    "Sarrut D, Arbor N, Baudier T, et al. GATE 10 Monte Carlo particle transport simulation - Part I: "
    "development and new features. arXiv:2507.09842 (2025)"
)
REF_GATE10_PART2 = (
    "Krah N, Arbor N, Baudier T, et al. The new GATE 10 Monte Carlo particle transport simulation software - "
    "Part II: architecture and innovations. arXiv:2507.09840 (2025)"
)
REF_OPENGATE_2022 = (
    "Sarrut D, Baudier T, Borys D, et al. The OpenGATE ecosystem for Monte Carlo simulation in medical "
    "physics. Phys Med Biol 2022;67:184001"
)
REF_GEANT4 = (
    "Allison J, Amako K, Apostolakis J, et al. Recent developments in Geant4. Nucl Instrum Methods A "
    "2016;835:186-225"
)
REF_G4MED = (
    "Arce P, Bolst D, Bordage MC, et al. Report on G4-Med, a Geant4 benchmarking system for medical physics "
    "applications developed by the Geant4 Medical Simulation Benchmarking Group. Med Phys 2021;48:19-56"
)
REF_ICRP107 = "ICRP Publication 107: Nuclear decay data for dosimetric calculations. Ann ICRP 2008;38(3)"
REF_ICRU44 = "ICRU Report 44: Tissue substitutes in radiation dosimetry and measurement (1989)"

#: The OpenGATE release this module was written and configuration-tested against.
OPENGATE_VERSION = "10.1.1"
INSTALL_COMMAND = f"pip install 'mrtdose[montecarlo]'   (or: pip install opengate=={OPENGATE_VERSION})"
DATA_COMMAND = "opengate_download_data"

#: J per MeV (CODATA 2018, exact since the 2019 SI).
J_PER_MEV = 1.602176634e-13
#: Seconds per hour.
S_PER_H = 3600.0

#: Default physics list (an EM constructor used as the whole list; see the module docstring).
DEFAULT_PHYSICS_LIST = "G4EmStandardPhysics_option4"
DEFAULT_PRODUCTION_CUT_MM = 0.5
#: Emission lines below this energy (MeV) are deposited locally (their range in tissue, < 0.1 um
#: for a 1 keV electron and ~3 um mean free path for a 1 keV photon, is far below any voxel).
DEFAULT_MIN_ENERGY_MEV = 1e-3
DEFAULT_DENSITY_BIN_REL = 0.02
#: Sub-bins per interval of the ICRP-107 beta-spectrum grid (see :func:`beta_histogram`).
BETA_SUBBINS = 8

# ---------------------------------------------------------------------------------------------
# Input units
# ---------------------------------------------------------------------------------------------

#: Time-integrated activity concentration units -> decays (Bq s) per mL.
TIA_UNITS: Mapping[str, float] = MappingProxyType({
    "Bq s/mL": 1.0, "Bq s/ml": 1.0,
    "Bq h/mL": 3600.0, "Bq h/ml": 3600.0,
    "kBq h/mL": 3.6e6, "kBq h/ml": 3.6e6,
    "MBq h/mL": 3.6e9, "MBq h/ml": 3.6e9,
})
#: Activity concentration units -> decays per second (Bq) per mL.
ACTIVITY_UNITS: Mapping[str, float] = MappingProxyType({
    "Bq/mL": 1.0, "Bq/ml": 1.0, "kBq/mL": 1e3, "kBq/ml": 1e3, "MBq/mL": 1e6, "MBq/ml": 1e6,
})
DENSITY_UNITS = ("g/mL", "g/ml", "g/cm3")


# ---------------------------------------------------------------------------------------------
# Availability of OpenGATE and of the Geant4 data (never imports opengate_core)
# ---------------------------------------------------------------------------------------------


def _find_spec(name: str):
    """``importlib.util.find_spec`` (a seam for tests)."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _dist_version(name: str) -> str | None:
    try:
        return _pkg_version(name)
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class GateAvailability:
    """Whether OpenGATE is installed and its Geant4 data are present.

    Attributes
    ----------
    opengate_version, opengate_core_version : installed distribution versions, or None.
    data_folder : where ``opengate_core`` expects the Geant4 data (``.../opengate_core/geant4_data``).
    required_data : environment-variable name -> expected data folder, as ``opengate_core``
        defines them (``get_g4_data_paths`` of its ``g4DataSetup`` module).
    missing_data : the names in ``required_data`` whose folder does not exist.
    problem : why the data could not be checked (None if they could).
    """

    opengate_version: str | None
    opengate_core_version: str | None
    data_folder: Path | None = None
    required_data: Mapping[str, str] = field(default_factory=dict)
    missing_data: tuple[str, ...] = ()
    problem: str | None = None

    @property
    def installed(self) -> bool:
        return self.opengate_version is not None and self.opengate_core_version is not None

    @property
    def data_ok(self) -> bool:
        return self.installed and self.problem is None and not self.missing_data

    def summary(self) -> str:
        """One line: what is there and what is missing."""
        if not self.installed:
            return "OpenGATE is not installed"
        if self.problem is not None:
            return f"OpenGATE {self.opengate_version}: Geant4 data cannot be checked ({self.problem})"
        if self.missing_data:
            return (f"OpenGATE {self.opengate_version}: {len(self.missing_data)} of {len(self.required_data)} Geant4 "
                    f"data sets missing in {self.data_folder} (install with `{DATA_COMMAND}`)")
        return f"OpenGATE {self.opengate_version} with its Geant4 data in {self.data_folder}"

    def message(self) -> str:
        """What is missing and how to install it (empty when everything is there)."""
        if not self.installed:
            return (
                "the Monte Carlo engine needs OpenGATE, which is not installed in this Python environment; "
                f"install it with: {INSTALL_COMMAND}"
            )
        if self.problem is not None:
            return f"cannot check the Geant4 data of OpenGATE {self.opengate_version}: {self.problem}"
        if self.missing_data:
            lines = [f"  {k}: {self.required_data.get(k)}" for k in self.missing_data]
            return (
                f"the Geant4 data sets needed by OpenGATE {self.opengate_version} are missing "
                f"({len(self.missing_data)} of {len(self.required_data)}):\n" + "\n".join(lines) + "\n"
                f"Install them with `{DATA_COMMAND}` (OpenGATE's command; it downloads about a dozen archives "
                f"from cern.ch into {self.data_folder}), or, on a machine without internet, unpack the same "
                f"Geant4 data archives there (or make {self.data_folder} a link to a folder that holds them). "
                "Setting G4LEDATA etc. does not help: opengate_core overwrites them with that folder at import."
            )
        return ""


def _load_g4_data_setup(package_dir: Path):
    """``opengate_core/g4DataSetup.py`` loaded as a stand-alone module: importing it through the
    package would run ``opengate_core/__init__``, which downloads missing data."""
    path = package_dir / "g4DataSetup.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    spec = importlib.util.spec_from_file_location("_mrtdose_opengate_g4datasetup", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def gate_availability() -> GateAvailability:
    """Check OpenGATE and its Geant4 data *without importing* ``opengate_core`` (whose import
    would try to download missing data; see the module docstring)."""
    og, core = _dist_version("opengate"), _dist_version("opengate-core")
    spec = _find_spec("opengate_core")
    if og is None or core is None or spec is None or _find_spec("opengate") is None:
        return GateAvailability(None if spec is None else og, None if spec is None else core)
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        return GateAvailability(og, core, problem="opengate_core is not a package")
    pkg = Path(locations[0])
    try:
        mod = _load_g4_data_setup(pkg)
        folder = Path(mod.get_g4_data_folder())
        required = {str(k): str(v) for k, v in mod.get_g4_data_paths().items()}
    except Exception as exc:  # another opengate version with another layout
        return GateAvailability(og, core, problem=f"{type(exc).__name__}: {exc} (written for opengate {OPENGATE_VERSION})")
    missing = tuple(k for k, v in required.items() if not Path(v).is_dir())
    return GateAvailability(og, core, folder, MappingProxyType(required), missing)


@contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def import_opengate(*, require_data: bool = True):
    """Import and return ``opengate``.

    Raises :class:`InputError` (with the install command) when OpenGATE is not installed, and,
    with ``require_data``, when its Geant4 data are missing (naming each set), before anything is
    imported. Without ``require_data`` and with data missing, ``opengate_core`` is imported with
    ``GATEONRTD=1`` (its switch that skips the data check and download), which is enough to build
    a simulation's configuration but not to run it.
    """
    avail = gate_availability()
    if not avail.installed:
        raise InputError(avail.message(), field="voxel.engine")
    if require_data and not avail.data_ok:
        raise InputError(avail.message(), field="voxel.engine")
    import sys

    skip_check = "1" if (not avail.data_ok and "opengate_core" not in sys.modules) else None
    with _env("GATEONRTD", skip_check):
        import opengate  # noqa: PLC0415 (lazy by design)
        import opengate_core
    if avail.data_ok and not os.environ.get("G4LEDATA"):
        # imported earlier with the check skipped: point Geant4 at the data now
        opengate_core.set_g4_data_path()
    return opengate


def gate_versions() -> dict[str, str]:
    """OpenGATE, opengate-core and Geant4 versions (imports opengate; data not needed)."""
    import_opengate(require_data=False)
    import opengate_core

    g4 = str(opengate_core.GateInfo.get_G4Version()).replace("$Name:", "").replace("$", "").strip()
    return {
        "opengate": _dist_version("opengate") or "unknown",
        "opengate-core": _dist_version("opengate-core") or "unknown",
        "geant4": g4,
    }


# ---------------------------------------------------------------------------------------------
# Materials from density
# ---------------------------------------------------------------------------------------------

#: Dry air near sea level, mass fractions (NIST, "Air, Dry (near sea level)", as listed for
#: ESTAR/XCOM); rounded fractions sum to 1.000000.
AIR_COMPOSITION: Mapping[str, float] = MappingProxyType({"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827})
#: ICRU-44 adipose tissue, mass fractions (ICRU Report 44, 1989, as listed by NIST ESTAR
#: "Adipose Tissue (ICRU-44)"), nominal density 0.95 g/mL.
ADIPOSE_COMPOSITION: Mapping[str, float] = MappingProxyType(
    {"H": 0.114, "C": 0.598, "N": 0.007, "O": 0.278, "Na": 0.001, "S": 0.001, "Cl": 0.001}
)

#: Class boundaries in g/mL (module docstring).
AIR_MAX_DENSITY = 0.05
LUNG_MAX_DENSITY = 0.85
ADIPOSE_MAX_DENSITY = 0.985
TISSUE_DENSITY = float(MATERIALS["soft_tissue"].density_g_per_ml)  # 1.06
BONE_DENSITY = float(MATERIALS["cortical_bone"].density_g_per_ml)  # 1.92

TISSUE_CLASSES = ("air", "lung", "adipose", "soft_tissue", "tissue_bone", "cortical_bone", "water")

Composition = Literal["tissue", "water"]


@dataclass(frozen=True)
class TissueMaterial:
    """One Geant4 material of the phantom: name, density, element mass fractions, class."""

    name: str
    density_g_per_ml: float
    mass_fractions: Mapping[str, float]
    tissue_class: str
    n_voxels: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "density_g_per_ml": self.density_g_per_ml, "class": self.tissue_class,
                "mass_fractions": dict(self.mass_fractions), "n_voxels": self.n_voxels}


def bone_mass_fraction(density_g_per_ml) -> np.ndarray:
    """Mass fraction of ICRU-44 cortical bone in a soft-tissue/bone mixture of the given density,
    two-component model mixed by volume (module docstring): w = f rho_b / rho with
    f = (rho - rho_t) / (rho_b - rho_t); 0 at or below rho_t, 1 at or above rho_b.

    >>> [round(float(x), 4) for x in bone_mass_fraction(np.array([1.06, 1.49, 1.92, 2.5]))]
    [0.0, 0.6443, 1.0, 1.0]
    """
    rho = np.asarray(density_g_per_ml, dtype=np.float64)
    f = np.clip((rho - TISSUE_DENSITY) / (BONE_DENSITY - TISSUE_DENSITY), 0.0, 1.0)
    return np.where(rho >= BONE_DENSITY, 1.0, np.clip(f * BONE_DENSITY / rho, 0.0, 1.0))


def _mix(a: Mapping[str, float], b: Mapping[str, float], wb: float) -> dict[str, float]:
    keys = list(dict.fromkeys(list(a) + list(b)))
    out = {k: (1.0 - wb) * a.get(k, 0.0) + wb * b.get(k, 0.0) for k in keys}
    s = sum(out.values())
    return {k: v / s for k, v in out.items() if v > 0}


def tissue_class_codes(density_g_per_ml: np.ndarray, composition: Composition = "tissue") -> np.ndarray:
    """Index into :data:`TISSUE_CLASSES` for each voxel density (module docstring table)."""
    rho = np.asarray(density_g_per_ml, dtype=np.float64)
    if composition == "water":
        return np.where(rho < AIR_MAX_DENSITY, 0, TISSUE_CLASSES.index("water")).astype(np.int8)
    if composition != "tissue":
        raise InputError(f"composition must be 'tissue' or 'water', got {composition!r}", field="composition")
    edges = [AIR_MAX_DENSITY, LUNG_MAX_DENSITY, ADIPOSE_MAX_DENSITY]
    code = np.digitize(rho, edges).astype(np.int8)  # 0 air, 1 lung, 2 adipose, 3 soft tissue
    code[rho > TISSUE_DENSITY] = TISSUE_CLASSES.index("tissue_bone")
    code[rho >= BONE_DENSITY] = TISSUE_CLASSES.index("cortical_bone")
    return code


def class_composition(tissue_class: str, density_g_per_ml: float) -> dict[str, float]:
    """Element mass fractions of a class at a density (only the mixture depends on density)."""
    if tissue_class == "air":
        return dict(AIR_COMPOSITION)
    if tissue_class == "adipose":
        return dict(ADIPOSE_COMPOSITION)
    if tissue_class == "lung":
        return dict(MATERIALS["lung"].mass_fractions)
    if tissue_class == "soft_tissue":
        return dict(MATERIALS["soft_tissue"].mass_fractions)
    if tissue_class == "cortical_bone":
        return dict(MATERIALS["cortical_bone"].mass_fractions)
    if tissue_class == "water":
        return dict(MATERIALS["water"].mass_fractions)
    if tissue_class == "tissue_bone":
        w = float(bone_mass_fraction(density_g_per_ml))
        return _mix(MATERIALS["soft_tissue"].mass_fractions, MATERIALS["cortical_bone"].mass_fractions, w)
    raise InputError(f"unknown tissue class {tissue_class!r}")


def assign_materials(density_g_per_ml: np.ndarray, composition: Composition = "tissue",
                     density_bin_rel: float = DEFAULT_DENSITY_BIN_REL) -> tuple[np.ndarray, tuple[TissueMaterial, ...]]:
    """Label map (uint16, 1..M, same shape) and the M materials of a density map (g/mL).

    Voxels are grouped by tissue class (:func:`tissue_class_codes`) and, except air, by density
    bins of relative width ``density_bin_rel`` (bin k holds rho with
    floor(ln(rho / 1e-4 g/mL) / ln(1 + b)) = k); a group's material has the mean density of its
    voxels, so the group's mass is kept exactly. Vectorised (one ``np.unique`` over the voxels).
    """
    rho = np.asarray(density_g_per_ml, dtype=np.float64)
    if rho.ndim != 3:
        raise InputError(f"density map must be 3-D, got shape {rho.shape}")
    if not np.all(np.isfinite(rho)) or rho.min() <= 0:
        raise InputError(f"density must be finite and > 0 g/mL everywhere (minimum {np.nanmin(rho):g})")
    b = float(density_bin_rel)
    if not (0 < b <= 0.2):
        raise InputError(f"density_bin_rel must be in (0, 0.2], got {density_bin_rel}", field="density_bin_rel")
    cls = tissue_class_codes(rho, composition)
    k = np.floor(np.log(rho / 1e-4) / math.log1p(b)).astype(np.int64)
    k[cls == 0] = -1  # all air is one material
    key = cls.astype(np.int64) * 1_000_000 + (k + 1)
    uniq, inverse, counts = np.unique(key.reshape(-1), return_inverse=True, return_counts=True)
    if uniq.size > 65535:
        raise InputError(f"{uniq.size} materials needed; increase density_bin_rel")
    sums = np.bincount(inverse, weights=rho.reshape(-1), minlength=uniq.size)
    means = sums / counts
    materials = []
    for i, (kk, n, m) in enumerate(zip(uniq.tolist(), counts.tolist(), means.tolist())):
        c = TISSUE_CLASSES[kk // 1_000_000]
        name = f"mrtdose_{c}_{i + 1:04d}_{m:.4f}"
        materials.append(TissueMaterial(name, float(m), MappingProxyType(class_composition(c, m)), c, int(n)))
    labels = (inverse + 1).astype(np.uint16).reshape(rho.shape)
    return labels, tuple(materials)


# ---------------------------------------------------------------------------------------------
# Emissions per decay (ICRP-107)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmissionSource:
    """One category of primaries, per decay.

    ``spectrum == "discrete"``: ``energies_mev`` are line energies and ``weights`` their yields
    per decay. ``spectrum == "histogram"``: ``energies_mev`` are the M+1 bin edges and
    ``weights`` the particles per decay in each of the M bins (uniform within a bin).
    ``yield_per_decay`` = sum(weights); ``energy_per_decay_mev`` = the mean energy emitted
    per decay by this category as sampled.
    """

    name: str
    particle: str
    spectrum: Literal["discrete", "histogram"]
    energies_mev: np.ndarray
    weights: np.ndarray
    categories: tuple[str, ...]

    @property
    def yield_per_decay(self) -> float:
        return float(np.sum(self.weights))

    @property
    def energy_per_decay_mev(self) -> float:
        if self.spectrum == "discrete":
            return float(np.sum(self.energies_mev * self.weights))
        mids = 0.5 * (self.energies_mev[1:] + self.energies_mev[:-1])
        return float(np.sum(mids * self.weights))


def beta_histogram(energies_mev: np.ndarray, density_per_mev: np.ndarray, total_yield: float,
                   subbins: int = BETA_SUBBINS) -> tuple[np.ndarray, np.ndarray]:
    """Histogram (edges, particles per decay per bin) of a beta spectrum tabulated as a density
    (particles per MeV per decay, ICRP-107 ``.BET`` grid), for a sampler that is uniform within
    a bin (OpenGATE's ``spectrum_histogram``).

    Each grid interval is cut into ``subbins`` equal sub-bins; a sub-bin's weight is the spectrum
    at its centre times its width, the spectrum between grid points being the monotone
    piecewise-cubic Hermite interpolant (PCHIP: Fritsch FN, Carlson RE. Monotone piecewise cubic
    interpolation. SIAM J Numer Anal 1980;17:238-246), which keeps the curvature of the spectrum
    near its end point and never goes negative. Why not linear: the ICRP-107 grid is coarse
    near the end point (40-50 keV steps for Lu-177), where the spectrum is convex, so a linear
    interpolant lies above it; the mean beta energy of the linear version is 0.3-0.4 % above the
    ICRP-107 mean (Lu-177, I-131, Tb-161), that of the PCHIP version within 0.05 % (0.1 % for
    Ho-166); tested in ``tests/test_monte_carlo_gate.py``. Weights are scaled to
    ``total_yield`` (the sum of the ICRP-107 beta branch yields)."""
    from scipy.interpolate import PchipInterpolator

    e = np.asarray(energies_mev, dtype=np.float64)
    n = np.asarray(density_per_mev, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or e.shape != n.shape or np.any(np.diff(e) <= 0) or np.any(n < 0):
        raise NuclideError("beta spectrum must have >= 2 increasing energies and non-negative densities")
    k = int(subbins)
    if k < 1:
        raise InputError(f"subbins must be >= 1, got {subbins}")
    t = (np.arange(k + 1) / k)[None, :]
    edges = (e[:-1, None] + t * np.diff(e)[:, None])[:, :-1].reshape(-1)
    edges = np.append(edges, e[-1])
    mids = 0.5 * (edges[1:] + edges[:-1])
    w = np.clip(PchipInterpolator(e, n)(mids), 0.0, None) * np.diff(edges)
    s = w.sum()
    if not s > 0:
        raise NuclideError("beta spectrum integrates to zero")
    return edges, w * (float(total_yield) / s)


def _resolve_nuclide(nuclide: str | Nuclide) -> Nuclide:
    if isinstance(nuclide, Nuclide):
        return nuclide
    return get_nuclide(resolve_radiopharmaceutical(str(nuclide)))


def emission_sources(nuclide: str | Nuclide, min_energy_mev: float = DEFAULT_MIN_ENERGY_MEV
                     ) -> tuple[tuple[EmissionSource, ...], float, dict[str, float]]:
    """The primaries per decay of ``nuclide`` (ICRP-107) and the energy deposited locally.

    Categories: ``beta`` (the ICRP-107 beta spectrum, e- or e+, :func:`beta_histogram`; its yield
    is the sum of the beta branch yields), ``electrons`` (conversion and Auger lines),
    ``photons`` (gamma and X-ray lines, and annihilation photons unless positrons are
    transported, in which case Geant4 creates them), ``alpha`` (alpha lines). Lines below
    ``min_energy_mev`` and alpha recoil nuclei (range ~0.1 um) are deposited locally:
    their energy per decay is returned as ``local_mev``.

    Returns (sources, local_mev, energy_check) where ``energy_check`` gives, in MeV per decay,
    ``icrp107`` (ICRP-107 total over the categories used), ``simulated``, ``local`` and
    ``annihilation_by_transport`` (positron annihilation energy left to Geant4), whose sum with
    ``simulated`` and ``local`` equals ``icrp107`` up to the beta-spectrum discretisation.

    Raises :class:`InputError` for a nuclide with both beta- and beta+ emission (ICRP-107 gives
    one combined spectrum, which cannot be split by charge).
    """
    nuc = _resolve_nuclide(nuclide)
    emin = float(min_energy_mev)
    if not (0 <= emin < 0.1):
        raise InputError(f"min_energy_mev must be in [0, 0.1), got {min_energy_mev}", field="min_energy_mev")
    sources: list[EmissionSource] = []
    local = 0.0
    _, y_minus = nuc.emissions("beta-")
    _, y_plus = nuc.emissions("beta+")
    ym, yp = float(y_minus.sum()), float(y_plus.sum())
    if ym > 0 and yp > 0:
        raise InputError(
            f"{nuc.name} emits both beta- ({ym:.3g}) and beta+ ({yp:.3g}); ICRP-107 gives one combined beta "
            "spectrum that cannot be split by charge, so the Monte Carlo engine does not support it",
            field="nuclide",
        )
    positrons = yp > 0
    if ym > 0 or yp > 0:
        e, n = nuc.beta_spectrum()
        if e.size < 2:
            raise NuclideError(f"{nuc.name}: ICRP-107 has beta branches but no beta spectrum")
        edges, w = beta_histogram(e, n, ym + yp)
        sources.append(EmissionSource("beta", "e+" if positrons else "e-", "histogram", edges, w,
                                      ("beta+",) if positrons else ("beta-",)))

    def lines(cats: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, float]:
        es, ys = [], []
        for c in cats:
            ee, yy = nuc.emissions(c)
            es.append(ee)
            ys.append(yy)
        ee, yy = np.concatenate(es), np.concatenate(ys)
        keep = (yy > 0) & (ee >= emin) & (ee > 0)
        low = float(np.sum(ee[~keep] * yy[~keep]))
        return ee[keep], yy[keep], low

    el_cats = tuple(c for c in ELECTRON_CATEGORIES if c not in ("beta-", "beta+"))  # IE, auger
    ee, yy, low = lines(el_cats)
    local += low
    if ee.size:
        sources.append(EmissionSource("electrons", "e-", "discrete", ee, yy, el_cats))
    ph_cats = tuple(c for c in PHOTON_CATEGORIES if not (positrons and c == "annihilation"))
    ee, yy, low = lines(ph_cats)
    local += low
    if ee.size:
        sources.append(EmissionSource("photons", "gamma", "discrete", ee, yy, ph_cats))
    al_cats = tuple(c for c in ALPHA_CATEGORIES if c != "alpha recoil")
    ee, yy, low = lines(al_cats)
    local += low
    if ee.size:
        sources.append(EmissionSource("alpha", "alpha", "discrete", ee, yy, al_cats))
    local += float(nuc.energy_per_decay_mev.get("alpha recoil", 0.0))
    used = ELECTRON_CATEGORIES + PHOTON_CATEGORIES + ALPHA_CATEGORIES
    icrp = float(sum(nuc.energy_per_decay_mev.get(c, 0.0) for c in used))
    check = {
        "icrp107": icrp,
        "simulated": float(sum(s.energy_per_decay_mev for s in sources)),
        "local": local,
        "annihilation_by_transport": float(nuc.energy_per_decay_mev.get("annihilation", 0.0)) if positrons else 0.0,
    }
    if not sources and local <= 0:
        raise NuclideError(f"{nuc.name}: no emissions to simulate")
    return tuple(sources), local, check


# ---------------------------------------------------------------------------------------------
# Inputs (pure numpy: no OpenGATE needed)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateInputs:
    """Everything the simulation needs, on the activity map's grid (arrays ``[z, y, x]``).

    decays_per_voxel : decays (Bq s) per voxel for a TIA map, or decays per second (Bq) for an
        activity map (``quantity`` says which).
    density_g_per_ml : voxel densities from the CT or density map.
    labels : material label per voxel (1..M), ``materials[label - 1]``.
    """

    grid: Volume
    quantity: Literal["absorbed dose", "absorbed dose rate"]
    decays_per_voxel: np.ndarray
    density_g_per_ml: np.ndarray
    labels: np.ndarray
    materials: tuple[TissueMaterial, ...]
    nuclide: str
    sources: tuple[EmissionSource, ...]
    local_mev_per_decay: float
    energy_check: Mapping[str, float]
    composition: str
    density_source: str
    warnings: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.decays_per_voxel.shape)  # type: ignore[return-value]

    @property
    def total_decays(self) -> float:
        return float(self.decays_per_voxel.sum())

    @property
    def material_density_map(self) -> np.ndarray:
        """Density (g/mL) of each voxel's Geant4 material."""
        dens = np.array([m.density_g_per_ml for m in self.materials], dtype=np.float64)
        return dens[self.labels.astype(np.int64) - 1]

    @property
    def unit(self) -> str:
        return "Gy" if self.quantity == "absorbed dose" else "Gy/h"


def prepare_gate_inputs(
    activity: Volume,
    ct: Volume,
    nuclide: str | Nuclide,
    *,
    composition: Composition = "tissue",
    density_curve: DensityCurve = DEFAULT_CURVE,
    density_bin_rel: float = DEFAULT_DENSITY_BIN_REL,
    min_energy_mev: float = DEFAULT_MIN_ENERGY_MEV,
) -> GateInputs:
    """Check and convert the inputs (no OpenGATE needed).

    ``activity``: a TIA concentration map (:data:`TIA_UNITS`, e.g. ``"MBq h/mL"``; result in Gy)
    or an activity concentration map (:data:`ACTIVITY_UNITS`; result in Gy/h). ``ct``: a CT in
    HU (converted with ``density_curve``) or a density map in g/mL, on the same grid.
    Negative activity values are set to 0 (with a warning).
    """
    if not isinstance(activity, Volume) or not isinstance(ct, Volume):
        raise InputError("activity and ct must be mrtdose.imaging.volume.Volume objects")
    where = activity.source_files[0] if activity.source_files else None
    if activity.unit in TIA_UNITS:
        quantity: Literal["absorbed dose", "absorbed dose rate"] = "absorbed dose"
        factor = TIA_UNITS[activity.unit]
    elif activity.unit in ACTIVITY_UNITS:
        quantity = "absorbed dose rate"
        factor = ACTIVITY_UNITS[activity.unit]
    else:
        raise InputError(
            f"unit {activity.unit!r} is neither a time-integrated activity concentration "
            f"({', '.join(k for k in TIA_UNITS if k.endswith('mL'))}) nor an activity concentration "
            f"({', '.join(k for k in ACTIVITY_UNITS if k.endswith('mL'))})", source=where, field="unit")
    if len(activity.shape) != 3:
        raise InputError(f"activity map must be 3-D, got shape {activity.shape}", source=where)
    if not ct.same_grid(activity):
        raise InputError(
            f"CT/density grid (shape {ct.shape}, spacing {ct.spacing_mm} mm, origin {ct.origin_mm}) differs from "
            f"the activity map's (shape {activity.shape}, spacing {activity.spacing_mm} mm, origin "
            f"{activity.origin_mm}); resample one onto the other first", field="ct")
    a = np.asarray(activity.array, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError("activity map has NaN or infinite values", source=where)
    warnings = []
    if a.min() < 0:
        warnings.append(f"{int(np.count_nonzero(a < 0))} negative activity voxel(s) set to 0")
        a = np.clip(a, 0.0, None)
    decays = a * factor * activity.voxel_volume_ml
    if not decays.sum() > 0:
        raise InputError("activity map has no activity (all voxels <= 0)", source=where)
    if ct.unit in HU_UNITS:
        dens = np.asarray(density_from_ct(ct, density_curve).array, dtype=np.float64)
        dsrc = f"CT via density curve '{density_curve.name}'"
    elif ct.unit in DENSITY_UNITS:
        dens = np.asarray(ct.array, dtype=np.float64)
        dsrc = "density map (g/mL)"
    else:
        raise InputError(f"ct must be in HU or a density map in g/mL, got unit {ct.unit!r}", field="ct.unit")
    labels, materials = assign_materials(dens, composition, density_bin_rel)
    nuc = _resolve_nuclide(nuclide)
    sources, local, check = emission_sources(nuc, min_energy_mev)
    return GateInputs(activity, quantity, decays, dens, labels, materials, nuc.name, sources, local,
                      MappingProxyType(check), composition, dsrc, tuple(warnings))


# ---------------------------------------------------------------------------------------------
# Scaling (pure numpy)
# ---------------------------------------------------------------------------------------------


def scale_simulated_dose(dose_sim_gy: np.ndarray, relative_uncertainty_sim: np.ndarray, inputs: GateInputs,
                         n_decays_simulated: float) -> tuple[np.ndarray, np.ndarray]:
    """Patient dose (Gy, or Gy/h for an activity map) and its relative standard uncertainty from
    the DoseActor's dose for ``n_decays_simulated`` decays (module docstring, 'Scaling'):
    D = D_sim N / N_sim + D_local, u(D) = u_rel,sim D_sim N / N_sim."""
    d = np.asarray(dose_sim_gy, dtype=np.float64)
    r = np.asarray(relative_uncertainty_sim, dtype=np.float64)
    if d.shape != inputs.shape or r.shape != inputs.shape:
        raise PhysicsError(f"simulated dose grid {d.shape} / {r.shape} differs from the input grid {inputs.shape}")
    n_sim = float(n_decays_simulated)
    if not n_sim > 0:
        raise PhysicsError(f"number of simulated decays must be > 0, got {n_decays_simulated}")
    scale = inputs.total_decays / n_sim
    d_mc = d * scale
    u_abs = np.abs(r) * d_mc
    mass_kg = inputs.material_density_map * inputs.grid.voxel_volume_ml * 1e-3
    d_loc = inputs.decays_per_voxel * inputs.local_mev_per_decay * J_PER_MEV / mass_kg
    total = d_mc + d_loc
    if inputs.quantity == "absorbed dose rate":
        total = total * S_PER_H
        u_abs = u_abs * S_PER_H
    rel = np.divide(u_abs, total, out=np.zeros_like(total), where=total > 0)
    return total, rel


# ---------------------------------------------------------------------------------------------
# The OpenGATE simulation
# ---------------------------------------------------------------------------------------------


@dataclass
class GateSimulation:
    """A configured (not yet run) OpenGATE simulation and what is needed to read it back."""

    sim: Any
    dose_actor: Any
    stats_actor: Any
    inputs: GateInputs
    workdir: Path
    threads: int
    n_decays_per_thread: int
    primaries_per_thread: Mapping[str, int]
    settings: Mapping[str, Any]

    @property
    def n_decays_simulated(self) -> int:
        return self.threads * self.n_decays_per_thread

    @property
    def expected_events(self) -> int:
        return self.threads * int(sum(self.primaries_per_thread.values()))


def _write_mhd(path: Path, array: np.ndarray, spacing_xyz: tuple[float, float, float]) -> None:
    """MetaImage of ``array`` ([z, y, x]) with the given spacing, identity direction and origin
    such that the image is centred on (0, 0, 0)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in spacing_xyz))
    size_xyz = np.array(array.shape[::-1], dtype=np.float64)
    img.SetOrigin(tuple((-(size_xyz - 1.0) * np.asarray(spacing_xyz) / 2.0).tolist()))
    sitk.WriteImage(img, str(path))


def _positive_int(x, name: str) -> int:
    try:
        v = int(x)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive integer, got {x!r}", field=name) from None
    if v < 1 or v != x:
        raise InputError(f"{name} must be a positive integer, got {x!r}", field=name)
    return v


def build_gate_simulation(
    inputs: GateInputs,
    workdir: str | Path,
    *,
    n_decays: int = 1_000_000,
    seed: int = 20240521,
    threads: int = 1,
    physics_list: str = DEFAULT_PHYSICS_LIST,
    production_cut_mm: float = DEFAULT_PRODUCTION_CUT_MM,
    require_data: bool = True,
) -> GateSimulation:
    """Configure (do not run) the OpenGATE simulation of ``inputs``; writes the phantom label
    image, the source image and ``materials.json`` into ``workdir``.

    ``n_decays`` is the total number of decays to simulate, split evenly over ``threads`` (rounded
    up to a multiple of ``threads``).
    """
    n_decays = _positive_int(n_decays, "n_decays")
    threads = _positive_int(threads, "threads")
    seed = int(seed)
    if not (0 < seed < 2**31):
        raise InputError(f"seed must be in 1..2^31-1, got {seed}", field="seed")
    cut = float(production_cut_mm)
    if not (cut > 0 and math.isfinite(cut)):
        raise InputError(f"production_cut_mm must be > 0, got {production_cut_mm}", field="production_cut_mm")
    gate = import_opengate(require_data=require_data)
    u = gate.g4_units
    mm, g_cm3 = u.mm, u.g_cm3
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    spacing = tuple(float(s) for s in inputs.grid.spacing_mm)  # (x, y, z)
    size_xyz = tuple(int(n) for n in inputs.shape[::-1])

    label_path = work / "phantom_labels.mhd"
    source_path = work / "source_decays.mhd"
    _write_mhd(label_path, np.ascontiguousarray(inputs.labels), spacing)
    _write_mhd(source_path, np.ascontiguousarray(inputs.decays_per_voxel, dtype=np.float32), spacing)
    (work / "materials.json").write_text(json.dumps([m.to_json() for m in inputs.materials], indent=1), encoding="utf-8")

    sim = gate.Simulation()
    sim.g4_verbose = False
    sim.visu = False
    sim.progress_bar = False
    sim.verbose_level = "WARNING"
    sim.output_dir = str(work)
    sim.random_seed = seed
    sim.number_of_threads = threads
    sim.check_volumes_overlap = False

    extent = np.asarray(size_xyz, dtype=np.float64) * np.asarray(spacing)
    sim.world.size = [float(e) * 1.2 * mm + 100 * mm for e in extent]
    sim.world.material = "G4_AIR"

    db = sim.volume_manager.material_database
    for m in inputs.materials:
        db.add_material_weights(m.name, list(m.mass_fractions), [float(v) for v in m.mass_fractions.values()],
                                m.density_g_per_ml * g_cm3)

    patient = sim.add_volume("ImageVolume", "patient")
    patient.image = str(label_path)
    patient.material = "G4_AIR"
    patient.translation = [0.0, 0.0, 0.0]
    patient.voxel_materials = [[i + 0.5, i + 1.5, m.name] for i, m in enumerate(inputs.materials)]

    sim.physics_manager.physics_list_name = physics_list
    sim.physics_manager.enable_decay = False
    sim.physics_manager.global_production_cuts.all = cut * mm

    per_thread = -(-n_decays // threads)  # ceil
    primaries: dict[str, int] = {}
    for s in inputs.sources:
        n_c = int(round(per_thread * s.yield_per_decay))
        primaries[s.name] = n_c
        if n_c == 0:
            continue
        src = sim.add_source("VoxelSource", f"src_{s.name}")
        src.attached_to = "patient"
        src.image = str(source_path)
        src.position.translation = [0.0, 0.0, 0.0]
        src.particle = s.particle
        src.direction.type = "iso"
        src.n = n_c
        if s.spectrum == "discrete":
            src.energy.type = "spectrum_discrete"
            src.energy.spectrum_energies = [float(e) * u.MeV for e in s.energies_mev]
            src.energy.spectrum_weights = [float(w) for w in s.weights]
        else:
            src.energy.type = "spectrum_histogram"
            src.energy.spectrum_energy_bin_edges = [float(e) * u.MeV for e in s.energies_mev]
            src.energy.spectrum_weights = [float(w) for w in s.weights]
    if not any(primaries.values()):
        raise InputError(f"n_decays={n_decays} is too small: no primaries would be emitted", field="n_decays")

    dose = sim.add_actor("DoseActor", "dose")
    dose.attached_to = "patient"
    dose.size = list(size_xyz)
    dose.spacing = [s * mm for s in spacing]
    dose.translation = [0.0, 0.0, 0.0]
    dose.hit_type = "random"
    dose.output_coordinate_system = "attached_to_image"
    dose.output_filename = "dose.mhd"
    dose.dose.active = True
    dose.dose_uncertainty.active = True
    stats = sim.add_actor("SimulationStatisticsActor", "stats")

    settings = {
        "physics_list": physics_list, "production_cut_mm": cut, "seed": seed, "threads": threads,
        "n_decays_requested": n_decays, "world_material": "G4_AIR", "hit_type": "random",
        "source": "VoxelSource per emission category (ICRP-107 spectra), isotropic",
    }
    return GateSimulation(sim, dose, stats, inputs, work, threads, per_thread, MappingProxyType(primaries),
                          MappingProxyType(settings))


def _read_image(path) -> np.ndarray:
    import SimpleITK as sitk

    return np.asarray(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), dtype=np.float64)


def run_gate_simulation(g: GateSimulation) -> tuple[np.ndarray, np.ndarray, int]:
    """Run a configured simulation in a subprocess (Geant4 can be initialised once per process)
    and return (dose_sim_gy, relative_uncertainty, events)."""
    avail = gate_availability()
    if not avail.data_ok:
        raise InputError(avail.message(), field="voxel.engine")
    import_opengate(require_data=True)
    g.sim.run(start_new_process=True)
    events = int(g.stats_actor.counts.events)
    if events != g.expected_events:
        raise PhysicsError(
            f"OpenGATE ran {events} events, expected {g.expected_events} ({g.threads} threads x "
            f"{dict(g.primaries_per_thread)}): the primaries-per-thread convention of this OpenGATE version differs "
            f"from {OPENGATE_VERSION}'s, so the dose cannot be scaled safely"
        )
    dose = _read_image(g.dose_actor.dose.get_output_path())
    unc = _read_image(g.dose_actor.dose_uncertainty.get_output_path())
    if dose.shape != g.inputs.shape or unc.shape != g.inputs.shape:
        raise PhysicsError(f"DoseActor grid {dose.shape} differs from the input grid {g.inputs.shape}")
    return dose, unc, events


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonteCarloDose:
    """A Monte Carlo absorbed-dose (or dose-rate) map with its statistical uncertainty.

    Attributes
    ----------
    dose : absorbed dose per voxel (Gy; Gy/h for an activity map: see ``unit``), float64,
        on the input grid (``[z, y, x]``).
    relative_uncertainty : standard uncertainty (k=1) of ``dose`` relative to it, statistical
        only (0 where the dose is 0).
    quantity, unit : ``"absorbed dose"`` / ``"Gy"`` or ``"absorbed dose rate"`` / ``"Gy/h"``.
    n_decays_simulated : decays sampled (threads x per-thread decays).
    primaries : particles simulated per emission category (all threads).
    decays_represented : physical decays of the input (Bq s), or decays per second for an
        activity map.
    local_mev_per_decay, energy_check : see :func:`emission_sources`.
    materials : the phantom's materials.
    settings, versions : how it was run (physics list, cut, seed, threads...) and with what
        (OpenGATE, opengate-core, Geant4).
    """

    dose: np.ndarray
    relative_uncertainty: np.ndarray
    quantity: str
    unit: str
    nuclide: str
    n_decays_simulated: int
    primaries: Mapping[str, int]
    decays_represented: float
    local_mev_per_decay: float
    energy_check: Mapping[str, float]
    materials: tuple[TissueMaterial, ...]
    settings: Mapping[str, Any]
    versions: Mapping[str, str]
    grid: Volume | None = None
    warnings: tuple[str, ...] = ()
    references: tuple[str, ...] = (REF_GATE10_PART1, REF_GATE10_PART2, REF_OPENGATE_2022, REF_GEANT4, REF_G4MED,
                                   REF_ICRP107, REF_ICRU44)

    @property
    def uncertainty(self) -> np.ndarray:
        """Absolute standard uncertainty (k=1), same unit as ``dose``."""
        return self.dose * self.relative_uncertainty

    def to_volume(self) -> Volume:
        if self.grid is None:
            raise InputError("no reference grid stored with this result")
        return self.grid.with_array(self.dose, unit=self.unit, modality="RTDOSE",
                                    description=f"Monte Carlo {self.quantity} (OpenGATE)")

    def as_voxel_dose(self, *, route: str = "tia-monte-carlo", method_map=None,
                      settings: Mapping[str, Any] | None = None) -> VoxelDose:
        """The result as a :class:`~mrtdose.dose.voxel.VoxelDose` (absorbed dose only), for the
        voxel workflow; the uncertainty map stays on this object."""
        if self.unit != "Gy":
            raise InputError("as_voxel_dose needs an absorbed-dose result (a TIA map input), not a dose rate")
        s = {**dict(self.settings), **dict(settings or {}), "n_decays_simulated": self.n_decays_simulated,
             "versions": dict(self.versions),
             "heterogeneity": "radiation transport in the CT-derived phantom (no kernel mass scaling)"}
        return VoxelDose(self.dose, route, "monte-carlo-opengate", False, method_map, MappingProxyType(s),
                         self.references)

    def to_json(self) -> dict[str, Any]:
        """Summary without arrays."""
        d = self.dose
        hi = d > 0.5 * float(d.max()) if d.size and d.max() > 0 else np.zeros(d.shape, bool)
        return {
            "engine": "monte-carlo-opengate",
            "quantity": self.quantity,
            "unit": self.unit,
            "nuclide": self.nuclide,
            "max": float(d.max()) if d.size else None,
            "median_relative_uncertainty_above_half_max": float(np.median(self.relative_uncertainty[hi])) if hi.any() else None,
            "n_decays_simulated": self.n_decays_simulated,
            "primaries": dict(self.primaries),
            "decays_represented": self.decays_represented,
            "local_deposition_mev_per_decay": self.local_mev_per_decay,
            "energy_per_decay_mev": dict(self.energy_check),
            "n_materials": len(self.materials),
            "settings": dict(self.settings),
            "versions": dict(self.versions),
            "warnings": list(self.warnings),
            "references": list(self.references),
        }


def gate_dose_map(
    activity: Volume,
    ct: Volume,
    nuclide: str | Nuclide,
    *,
    n_decays: int = 1_000_000,
    seed: int = 20240521,
    threads: int = 1,
    output_dir: str | Path | None = None,
    composition: Composition = "tissue",
    density_curve: DensityCurve = DEFAULT_CURVE,
    density_bin_rel: float = DEFAULT_DENSITY_BIN_REL,
    physics_list: str = DEFAULT_PHYSICS_LIST,
    production_cut_mm: float = DEFAULT_PRODUCTION_CUT_MM,
    min_energy_mev: float = DEFAULT_MIN_ENERGY_MEV,
) -> MonteCarloDose:
    """Absorbed dose (TIA map) or dose rate (activity map) by OpenGATE Monte Carlo.

    Checks OpenGATE and its Geant4 data first (:class:`InputError` naming what is missing and
    how to install it; nothing is simulated), then :func:`prepare_gate_inputs`,
    :func:`build_gate_simulation`, :func:`run_gate_simulation` and
    :func:`scale_simulated_dose` (derivation in the module docstring). The simulation's inputs
    and outputs (label and source images, ``materials.json``, the DoseActor images) are kept in
    ``output_dir`` when given, otherwise in a temporary folder that is removed.
    """
    avail = gate_availability()
    if not avail.data_ok:
        raise InputError(avail.message(), field="voxel.engine")
    inputs = prepare_gate_inputs(activity, ct, nuclide, composition=composition, density_curve=density_curve,
                                 density_bin_rel=density_bin_rel, min_energy_mev=min_energy_mev)
    with tempfile.TemporaryDirectory(prefix="mrtdose_gate_") as tmp:
        work = Path(output_dir) if output_dir is not None else Path(tmp)
        g = build_gate_simulation(inputs, work, n_decays=n_decays, seed=seed, threads=threads,
                                  physics_list=physics_list, production_cut_mm=production_cut_mm)
        dose_sim, unc_sim, _ = run_gate_simulation(g)
    dose, rel = scale_simulated_dose(dose_sim, unc_sim, inputs, g.n_decays_simulated)
    warnings = list(inputs.warnings)
    for s in inputs.sources:
        n_c = g.primaries_per_thread.get(s.name, 0)
        if n_c == 0:
            warnings.append(f"emission category '{s.name}' ({s.energy_per_decay_mev:.3g} MeV per decay) was not "
                            "simulated: too few decays for one primary per thread")
        elif n_c < 100:
            # n_c = round(per_thread x yield) while the dose is scaled by decays / (threads x per_thread):
            # this category's dose is off by up to 0.5 / n_c (relative)
            warnings.append(f"emission category '{s.name}' got only {n_c} primaries per thread: its dose carries a "
                            f"rounding error up to {50.0 / n_c:.2g} %; simulate more decays")
    settings = {**dict(g.settings), "composition": composition, "density_source": inputs.density_source,
                "density_bin_rel": float(density_bin_rel), "min_energy_mev": float(min_energy_mev),
                "scale_factor": inputs.total_decays / g.n_decays_simulated}
    return MonteCarloDose(
        dose=dose, relative_uncertainty=rel, quantity=inputs.quantity, unit=inputs.unit, nuclide=inputs.nuclide,
        n_decays_simulated=g.n_decays_simulated,
        primaries=MappingProxyType({k: v * g.threads for k, v in g.primaries_per_thread.items()}),
        decays_represented=inputs.total_decays, local_mev_per_decay=inputs.local_mev_per_decay,
        energy_check=inputs.energy_check, materials=inputs.materials, settings=MappingProxyType(settings),
        versions=MappingProxyType(gate_versions()), grid=activity, warnings=tuple(warnings),
    )
