"""Materials and photon interaction coefficients (mass attenuation and energy absorption).

Materials
---------
Elemental mass fractions and densities are those of ICRU Report 44 (1989), "Tissue Substitutes
in Radiation Dosimetry and Measurement", as tabulated in the NIST XCOM/ESTAR material lists
("Tissue, Soft (ICRU-44)", "Bone, Cortical (ICRU-44)", "Lung Tissue (ICRU-44)"). Water is H2O
(mass fractions from the IUPAC atomic weights H 1.008, O 15.999). ICRU-44 soft tissue is within
about 1 % of the ICRP Publication 89 adult soft tissue in every coefficient used here.

Interaction coefficients
------------------------
For 1 keV <= E <= 800 keV the elemental cross sections come from xraylib (pinned 4.3.0;
Schoonjans et al. 2011, Spectrochim. Acta B 66:776): ``CS_Photo`` (Scofield), ``CS_Compt``
(incoherent, with binding), ``CS_Rayl`` (coherent). xraylib's photon cross sections stop at
800 keV, so above that energy:

* incoherent scattering is the Klein-Nishina cross section per electron (xraylib ``CS_KN``)
  times the electrons per gram (binding effects are below 0.1 % above 800 keV in Z <= 20);
* pair production in the nuclear field uses Maximon's near-threshold series as given by
  Hubbell, Gimm & Overbo (1980) J. Phys. Chem. Ref. Data 9:1023, eq. (16) there:
  ``sigma = (2 pi / 3) alpha r_e^2 Z^2 ((k-2)/k)^3 [1 + eps/2 + 23 eps^2/40 + 11 eps^3/60
  + 29 eps^4/960]``, ``eps = (2k-4)/(2+k+2 sqrt(2k))``, k = E / m_e c^2 (valid to ~5 MeV);
  triplet production (about 1/(Z C) of that, < 0.1 % of mu in tissue below 5 MeV) and the
  photoelectric and coherent terms (< 0.1 % above 800 keV in tissue) are neglected.

The mass energy-absorption coefficient is built from the same cross sections, following the
definition in Hubbell & Seltzer (1995) NISTIR 5632, section 3 (also Attix 1986, ch. 7):
``mu_en = (1 - g) [tau (1 - X/E) + sigma_incoh <T>/E + kappa (1 - 2 m_e c^2 / E)]`` with

* X the mean K fluorescence energy escaping per photoabsorption, ``P_K omega_K E_Kalpha``
  (P_K = 1 - 1/J_K from the K-shell jump factor; xraylib ``JumpFactor``, ``FluorYield``,
  ``LineEnergy``); L-shell fluorescence of Z <= 20 is negligible;
* <T>/E the mean fraction of the photon energy given to the Compton electron, integrated from
  the Klein-Nishina differential cross section (Klein & Nishina 1929) by Gauss-Legendre
  quadrature over the scattering angle;
* g the radiative fraction, approximated by the radiation yield of the mean secondary electron,
  ``Y(T) = 6e-4 Z T / (1 + 6e-4 Z T)`` (T in MeV; Koch & Motz 1959, as given by Attix 1986,
  eq. 8.13) with Z the electron-weighted mean atomic number (g < 0.3 % in tissue below 1.5 MeV).

xraylib's own ``CS_Energy`` is *not* used: in xraylib 4.3.0 it disagrees with the NIST
tabulation by up to 40 % (e.g. water at 30 keV: 0.098 against 0.1557 cm^2/g; a known open
problem, xraylib issue tracker, issues 176 and 255).

Energies are in MeV at this module's boundary (xraylib works in keV); coefficients in cm^2/g.
All functions are vectorised over energy and cached per material.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

import numpy as np

from mrtdose.errors import InputError, PhysicsError

#: Lowest and highest photon energies (MeV) this module will evaluate.
MIN_ENERGY_MEV = 1e-3
MAX_ENERGY_MEV = 5.0
#: Above this energy xraylib's photon cross sections are not available (see module docstring).
_XRAYLIB_MAX_MEV = 0.8

#: Avogadro constant (CODATA 2018, exact), 1/mol.
AVOGADRO = 6.02214076e23
#: Classical electron radius (CODATA 2018), cm.
R_E_CM = 2.8179403262e-13
#: Fine-structure constant (CODATA 2018).
ALPHA_FS = 7.2973525693e-3
#: Electron rest energy (CODATA 2018), MeV.
ME_C2_MEV = 0.51099895000

_SYMBOL_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "Na": 11, "Mg": 12, "P": 15, "S": 16, "Cl": 17,
             "K": 19, "Ca": 20, "Fe": 26}


@dataclass(frozen=True)
class Material:
    """A homogeneous material: elemental mass fractions and nominal density.

    Attributes
    ----------
    name : key used throughout mrtdose (``"soft_tissue"``, ``"water"``, ...).
    density_g_per_ml : nominal mass density (g/cm^3).
    mass_fractions : element symbol -> mass fraction (sums to 1).
    reference : citation of the composition.
    """

    name: str
    density_g_per_ml: float
    mass_fractions: Mapping[str, float]
    reference: str

    @property
    def z(self) -> np.ndarray:
        """Atomic numbers of the constituent elements."""
        return np.array([_SYMBOL_Z[s] for s in self.mass_fractions], dtype=int)

    @property
    def w(self) -> np.ndarray:
        """Mass fractions, in the order of :attr:`z`."""
        return np.array(list(self.mass_fractions.values()), dtype=float)

    @property
    def z_over_a(self) -> float:
        """Mean ratio of atomic number to atomic mass, sum_i w_i Z_i / A_i (mol/g)."""
        return float(np.sum(self.w * self.z / _atomic_weights(tuple(self.z))))


def _mat(name: str, rho: float, fractions: dict[str, float], ref: str) -> Material:
    total = sum(fractions.values())
    if abs(total - 1.0) > 2e-4:  # guard against typos in the tables below
        raise AssertionError(f"{name}: mass fractions sum to {total}")
    return Material(name, rho, MappingProxyType({k: v / total for k, v in fractions.items()}), ref)


_ICRU44 = "ICRU Report 44 (1989), Table 4.x, as listed by NIST XCOM/ESTAR"

#: Materials known to mrtdose.
MATERIALS: Mapping[str, Material] = MappingProxyType(
    {
        "soft_tissue": _mat(
            "soft_tissue", 1.06,
            {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003,
             "S": 0.003, "Cl": 0.002, "K": 0.003},
            "Soft tissue, ICRU-44 (" + _ICRU44 + ")"),
        "water": _mat(
            "water", 1.00, {"H": 0.111894, "O": 0.888106},
            "Liquid water H2O (mass fractions from IUPAC atomic weights)"),
        "cortical_bone": _mat(
            "cortical_bone", 1.92,
            {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002,
             "P": 0.103, "S": 0.003, "Ca": 0.225},
            "Cortical bone, ICRU-44 (" + _ICRU44 + ")"),
        # ICRU-44 lung *tissue* (parenchyma) density; the bulk density of inflated lung
        # (about 0.26-0.38 g/ml, ICRP 89 / ICRP 110) must be given explicitly by the caller.
        "lung": _mat(
            "lung", 1.05,
            {"H": 0.103, "C": 0.105, "N": 0.031, "O": 0.749, "Na": 0.002, "P": 0.002,
             "S": 0.003, "Cl": 0.003, "K": 0.002},
            "Lung tissue, ICRU-44 (" + _ICRU44 + ")"),
    }
)


def get_material(name: str | Material) -> Material:
    """Look a material up by name (``soft_tissue``, ``water``, ``cortical_bone``, ``lung``)."""
    if isinstance(name, Material):
        return name
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    aliases = {"tissue": "soft_tissue", "bone": "cortical_bone", "lung_tissue": "lung"}
    key = aliases.get(key, key)
    if key not in MATERIALS:
        raise InputError(f"unknown material '{name}'; known: {', '.join(MATERIALS)}",
                         field="material")
    return MATERIALS[key]


@lru_cache(maxsize=None)
def _atomic_weights(z: tuple[int, ...]) -> np.ndarray:
    import xraylib

    return np.array([xraylib.AtomicWeight(int(zi)) for zi in z], dtype=float)


def _check_energy(energy_mev) -> np.ndarray:
    e = np.atleast_1d(np.asarray(energy_mev, dtype=float))
    if not np.all(np.isfinite(e)):
        raise InputError("photon energies must be finite", field="energy_mev")
    if np.any(e < MIN_ENERGY_MEV) or np.any(e > MAX_ENERGY_MEV):
        raise PhysicsError(
            f"photon energy outside {MIN_ENERGY_MEV * 1e3:g} keV-{MAX_ENERGY_MEV:g} MeV "
            f"(got {e.min():.4g}-{e.max():.4g} MeV)")
    return e


def _pair_nuclear_barn(energy_mev: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Nuclear-field pair production cross section (barn/atom), Maximon series (see module doc).

    Returns an array of shape (len(z), len(energy)); zero below threshold 2 m_e c^2.
    """
    k = energy_mev / ME_C2_MEV
    out = np.zeros((len(z), len(k)))
    above = k > 2.0
    if np.any(above):
        ka = k[above]
        eps = (2.0 * ka - 4.0) / (2.0 + ka + 2.0 * np.sqrt(2.0 * ka))
        series = 1 + eps / 2 + 23 * eps**2 / 40 + 11 * eps**3 / 60 + 29 * eps**4 / 960
        sig_cm2 = (2 * np.pi / 3) * ALPHA_FS * R_E_CM**2 * ((ka - 2) / ka) ** 3 * series
        out[:, above] = np.outer(np.asarray(z, float) ** 2, sig_cm2) * 1e24
    return out


def _kn_transfer_fraction(energy_mev: np.ndarray) -> np.ndarray:
    """Mean fraction of the photon energy given to the Compton electron, <T>/E (Klein-Nishina).

    Integrates the Klein-Nishina differential cross section (Klein & Nishina 1929)
    ``dsigma/dOmega ~ P^2 (P + 1/P - sin^2 theta)``, ``P = 1 / (1 + k (1 - cos theta))``, with
    weight ``(1 - P)`` over cos theta by 96-point Gauss-Legendre quadrature (exact to < 1e-8).
    """
    x, wq = np.polynomial.legendre.leggauss(96)  # cos(theta) nodes on [-1, 1]
    k = np.asarray(energy_mev, float)[:, None] / ME_C2_MEV
    p = 1.0 / (1.0 + k * (1.0 - x[None, :]))
    dsig = p**2 * (p + 1.0 / p - (1.0 - x[None, :] ** 2))
    return (dsig * (1.0 - p)) @ wq / (dsig @ wq)


def _k_fluorescence_mev(z: np.ndarray, energy_mev: np.ndarray) -> np.ndarray:
    """Mean K fluorescence energy (MeV) emitted per photoabsorption, shape (len(z), len(E))."""
    import xraylib

    out = np.zeros((len(z), len(energy_mev)))
    for i, zi in enumerate(z):
        if zi < 3:
            continue
        edge = xraylib.EdgeEnergy(int(zi), xraylib.K_SHELL) / 1e3
        pk = 1.0 - 1.0 / xraylib.JumpFactor(int(zi), xraylib.K_SHELL)
        x = pk * xraylib.FluorYield(int(zi), xraylib.K_SHELL) * xraylib.LineEnergy(
            int(zi), xraylib.KA_LINE) / 1e3
        out[i, energy_mev > edge] = x
    return out


@lru_cache(maxsize=64)
def _elemental(z: tuple[int, ...], e_key: bytes, what: str) -> np.ndarray:
    """Elemental mass coefficients (cm^2/g), shape (len(z), len(E)); cached on the energy grid.

    ``what``: ``"total"`` (mu/rho with coherent), ``"nocoherent"`` (mu/rho without coherent),
    ``"transfer"`` (mass energy-transfer coefficient mu_tr/rho, see module docstring), or one of
    the partial coefficients ``"photo"``, ``"incoh"``, ``"coh"``, ``"pair"``.
    """
    import xraylib
    import xraylib_np as xnp

    e = np.frombuffer(e_key, dtype=float)
    za = np.asarray(z, dtype=int)
    aw = _atomic_weights(tuple(za))
    photo = np.zeros((len(za), len(e)))
    incoh = np.zeros_like(photo)
    coh = np.zeros_like(photo)
    pair = np.zeros_like(photo)
    low = e <= _XRAYLIB_MAX_MEV
    if np.any(low):
        ekev = e[low] * 1e3
        photo[:, low] = xnp.CS_Photo(za, ekev)
        incoh[:, low] = xnp.CS_Compt(za, ekev)
        coh[:, low] = xnp.CS_Rayl(za, ekev)
    high = ~low
    if np.any(high):
        kn_barn_per_e = np.array([xraylib.CS_KN(float(x) * 1e3) for x in e[high]])
        to_mass = 1e-24 * AVOGADRO / aw[:, None]
        incoh[:, high] = np.outer(za.astype(float), kn_barn_per_e) * to_mass
        pair[:, high] = _pair_nuclear_barn(e[high], za) * to_mass
    partial = {"photo": photo, "incoh": incoh, "coh": coh, "pair": pair}
    if what in partial:
        return partial[what]
    if what == "total":
        return photo + incoh + coh + pair
    if what == "nocoherent":
        return photo + incoh + pair
    if what == "transfer":
        x_fl = _k_fluorescence_mev(za, e)
        return (photo * (1.0 - x_fl / e[None, :])
                + incoh * _kn_transfer_fraction(e)[None, :]
                + pair * np.clip(1.0 - 2.0 * ME_C2_MEV / e[None, :], 0.0, None))
    raise ValueError(what)


def _mixture(material: str | Material, energy_mev, what: str) -> np.ndarray:
    m = get_material(material)
    e = _check_energy(energy_mev)
    coeff = _elemental(tuple(int(v) for v in m.z), e.tobytes(), what)
    res = m.w @ coeff
    return res if np.ndim(energy_mev) else res[0]


def mass_attenuation_coefficient(energy_mev, material: str | Material = "soft_tissue",
                                 coherent: bool = True):
    """Mass attenuation coefficient mu/rho (cm^2/g) of a material.

    Parameters
    ----------
    energy_mev : float or array, photon energy in MeV (1 keV-5 MeV).
    material : material name or :class:`Material`.
    coherent : include coherent (Rayleigh) scattering (default). Build-up factor tables
        (e.g. ANSI/ANS-6.4.3, Trubey 1988, ORNL/RSIC-49) are defined with attenuation *without*
        coherent scattering; mrtdose's photon transport simulates coherent scattering and uses
        the total coefficient.

    Examples
    --------
    >>> round(float(mass_attenuation_coefficient(0.1, "water")), 3)   # NIST XCOM: 0.1707
    0.171
    """
    return _mixture(material, energy_mev, "total" if coherent else "nocoherent")


#: Names of the partial interaction coefficients returned by :func:`partial_mass_coefficients`.
PARTIAL_PROCESSES = ("photo", "incoh", "coh", "pair")


def partial_mass_coefficients(energy_mev, material: str | Material = "soft_tissue") -> dict:
    """Partial mass interaction coefficients (cm^2/g) by process, the terms of mu/rho.

    Returns a dict with keys ``"photo"`` (photoelectric absorption), ``"incoh"`` (incoherent /
    Compton scattering), ``"coh"`` (coherent / Rayleigh scattering) and ``"pair"`` (pair
    production in the nuclear field), each shaped like ``energy_mev``; their sum is
    ``mass_attenuation_coefficient(energy_mev, material, coherent=True)``. Same data and
    approximations as the rest of this module (module docstring); used by the photon transport
    of :mod:`mrtdose.physics.photon_transport`.

    Examples
    --------
    >>> c = partial_mass_coefficients(0.1, "water")
    >>> round(float(sum(c.values())), 3)                     # NIST XCOM: 0.1707
    0.171
    """
    return {k: _mixture(material, energy_mev, k) for k in PARTIAL_PROCESSES}


def mass_energy_absorption_coefficient(energy_mev, material: str | Material = "soft_tissue"):
    """Mass energy-absorption coefficient mu_en/rho (cm^2/g) of a material.

    Examples
    --------
    >>> round(float(mass_energy_absorption_coefficient(1.0, "water")), 4)  # NIST: 0.03103
    0.031
    """
    m = get_material(material)
    mu_tr = _mixture(m, energy_mev, "transfer")
    mu = _mixture(m, energy_mev, "nocoherent")
    # Radiative fraction g from the radiation yield of the mean secondary electron (module doc).
    t_mean = np.asarray(energy_mev, float) * mu_tr / mu
    zy = 6e-4 * _z_eff_electron(m) * t_mean
    return mu_tr * (1.0 - zy / (1.0 + zy))


def _z_eff_electron(m: Material) -> float:
    """Electron-weighted mean atomic number sum(w Z^2/A) / sum(w Z/A) (bremsstrahlung ~ Z^2)."""
    a = _atomic_weights(tuple(m.z))
    return float(np.sum(m.w * m.z**2 / a) / np.sum(m.w * m.z / a))
