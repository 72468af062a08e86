"""Voxel S-values (dose voxel kernels) for any ICRP-107 radionuclide and voxel size.

A voxel S-value is the mean absorbed dose to a target voxel per decay in a source voxel at
offset ``Delta`` (MIRD Pamphlet 17, Bolch et al. 1999, J Nucl Med 40:11S, eq. 3), for a source
uniformly distributed in the source voxel, in an infinite homogeneous medium:

    S(Delta) = 1 / (m_v V) * int_{V_s} int_{V_t} e(|r - r'|) dr dr'                       (1)

where ``e(x)`` is the point-kernel energy density (MeV/cm^3 per decay) at distance x from a point
source, ``V`` the voxel volume and ``m_v = rho V`` its mass. With ``d = r - r'``, the difference of
two independent uniform points of boxes of sides ``h_i`` is distributed as the product of
triangular ("tent") densities ``g(d; Delta) = prod_i tent(d_i - Delta_i; h_i)``,
``tent(x; h) = max(0, h - |x|) / h^2`` (the convolution of two boxes of width h; e.g. Papoulis,
Probability, Random Variables and Stochastic Processes, sec. 6-2), so that

    S(Delta) = (1 / rho) * E_g[ e(|d|) ] = (1 / rho) * int g(d; Delta) e(|d|) d^3d.       (2)

Point kernel
------------
``e(x) = E'(x) / (4 pi x^2)`` where ``E(x)`` (MeV per decay) is the energy absorbed within a
sphere of radius x about a point source in the infinite medium (Berger 1971, MIRD Pamphlet 7,
J Nucl Med 12 Suppl 5: the scaled point kernel is the derivative of the cumulative one):

* electrons, from :mod:`mrtdose.physics.absorbed_fractions` (our condensed-history Monte Carlo in
  water): the ICRP-107 beta spectrum (beta- and beta+), energy weighted with the trapezoid rule
  and scaled to the ICRP-107 mean beta energy per decay (as
  :func:`~mrtdose.physics.absorbed_fractions.nuclide_electron_absorbed_energy_sphere`), plus every
  conversion and Auger line. **Approximation:** the medium is water scaled by density (distances
  in g/cm^2, the "density scaling" of Cross et al. 1992, Health Phys 63:160); bremsstrahlung
  escape is neglected (radiative yield of a 2.28 MeV electron in water 1 %, ESTAR);
* photons, from :func:`~mrtdose.physics.absorbed_fractions.photon_cumulative_kernel` (our photon
  transport in the medium's own composition at its density; kerma approximation). Photon lines
  below 1 keV (mean free path of micrometres) are absorbed locally;
* alpha particles and recoils are absorbed locally (ranges < 0.1 mm, far below any imaging voxel).

Quadrature of (2)
-----------------
The kernel is computed on the non-negative octant of offsets and mirrored (exact, since
``g(-d; -Delta) = g(d; Delta)`` and e is radial).

* Offsets whose tent support contains the source point (every ``|Delta_i| <= h_i``, i.e. the
  centre voxel and its 26 neighbours) hold the ``1/x^2`` singularity of e. For them (2) is
  written in spherical coordinates, ``S = (1/rho) int_0^inf E'(x) gbar(x; Delta) dx``, with
  ``gbar`` the mean of g over the sphere of radius x; the integral is the sum over thin shells of
  the *cumulative* kernel's increment times gbar at the shell's mid-radius (no derivative of the
  Monte Carlo kernel, no singularity: ``gbar(0; 0) = 1/V``). ``gbar`` is a product
  Gauss-Legendre quadrature in (cos theta, phi) over each of the 8 octants of directions
  separately (g has kinks on the coordinate planes).
* Other offsets: tensor Gauss-Legendre quadrature of the tent on each of its two halves per
  axis, ``m`` nodes per half (``m = quadrature_order`` within 4 voxels and within the electron
  range, 3 up to 8 voxels and 2 beyond, where e varies slowly across a voxel: the relative error
  of an m-node rule scales as ``(h / |Delta|)^(2m)``). e is the shell-averaged density of the
  tabulated cumulative kernel on a fine radial grid (0.3 % spacing), linearly interpolated.

Convergence in ``quadrature_order`` and ``angular_order`` is tested (tests/test_voxel_kernels.py).

Extent
------
Half-widths ``n_i = ceil(R / h_i) + 1`` voxels, with R the largest of the CSDA range of the most
energetic electron (ICRP-107 beta end point or line, range from
:func:`~mrtdose.physics.absorbed_fractions.csda_range_water_g_per_cm2` scaled by density) and the
photon radius beyond which the photon energy absorbed in the infinite medium is below
``photon_tail_fraction`` (default 1 %) of the total energy absorbed per decay, the latter capped
at ``max_radius_mm`` (default 150 mm). Why the cap: the mean self-dose of a uniformly loaded region
is exact (no truncation error at all) when the kernel radius exceeds the region's largest chord
(every source-target pair lies within it); 150 mm covers lesions and the kidneys, spleen and a
300 g organ; and the homogeneous infinite medium is a poor model of a patient beyond that
distance anyway (body outline). For a photon emitter the infinite-medium energy beyond 150 mm
is not small (I-131: 34 % of the energy per decay beyond a 150 mm sphere, 26 % outside the
4.8 mm kernel box; Lu-177: 8.5 % and 6 %); the truncated fraction (infinite-medium energy outside
the kernel box, as a fraction of the total energy per decay) is stated in the kernel's
description, and the photon cross-dose between distant regions should be taken from organ
S-values (MIRD) rather than a truncated kernel.

Validation
----------
Against the GATE Monte Carlo voxel S-values of Lanconelli et al. 2012 (Phys Med Biol 57:517),
Lu-177, Y-90, I-131, soft tissue (1.04 g/ml) and compact bone (1.85 g/ml), 2.21-9.28 mm, same
11^3 extent and the same components (tests/test_voxel_kernels.py, where the findings are argued):

* the published tables carry the beta spectrum and photons but not the ICRP-107 conversion and
  Auger electrons, and for Lu-177 and I-131 1.5-3.3 % more energy per decay than the ICRP-107
  beta spectrum; so their centre, total and sphere / organ mean doses are 2-3.5 % above ours,
  while for Y-90 the totals and mean doses agree within 0.5 %;
* Y-90 centre voxels are 1.4-5 % above the reference (most at 2.21 mm in bone) and the far tail
  beyond ~8 mm is low: our electron transport has no range straggling, no delta-ray transport and
  no bremsstrahlung, and bone is water scaled by density (ICRU compact bone has lower Z/A and
  higher I, hence longer ranges in g/cm^2). These shift energy between the centre voxel and its
  neighbours but conserve it, so mean doses of lesions and organs are unaffected (< 0.5 %).

Examples
--------
>>> k = compute_voxel_kernel("Y-90", (4.8, 4.8, 4.8), "soft_tissue", density_g_per_ml=1.04)
>>> k.array_gy_per_bq_s.shape
(9, 9, 9)
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Sequence

import numpy as np

from mrtdose.errors import InputError, PhysicsError
from mrtdose.physics.absorbed_fractions import (
    ELECTRON_MAX_MEV,
    csda_range_water_g_per_cm2,
    electron_cumulative_kernel,
    photon_cumulative_kernel,
)
from mrtdose.physics.attenuation import MIN_ENERGY_MEV, get_material
from mrtdose.physics.nuclides import J_PER_MEV, Nuclide, get_nuclide
from mrtdose.physics.voxel_kernel_type import VoxelKernel

#: Radiation components a kernel may include.
COMPONENTS = ("beta", "discrete_electrons", "photons", "alpha")
#: Default: photon energy outside the kernel radius below 1 % of the total energy per decay ...
DEFAULT_PHOTON_TAIL_FRACTION = 0.01
#: ... but the kernel radius at most 150 mm (see module docstring).
DEFAULT_MAX_RADIUS_MM = 150.0
#: Gauss-Legendre nodes per tent half per axis in the near field.
DEFAULT_QUADRATURE_ORDER = 8
#: Gauss-Legendre nodes per direction coordinate per octant for the spherical means.
DEFAULT_ANGULAR_ORDER = 24
#: Source label of kernels computed here.
SOURCE = "mrtdose first-principles voxel S-values (point-kernel integration)"

_MEV_PER_G_TO_GY = J_PER_MEV * 1.0e3          # MeV/g -> J/kg


# --------------------------------------------------------------------------------------------
# Radial cumulative absorbed energy E(x) per decay
# --------------------------------------------------------------------------------------------

def _beta_components(nuclide: Nuclide) -> tuple[np.ndarray, np.ndarray]:
    """(energies MeV, mean energy per decay MeV carried by each spectral node).

    Trapezoid weights on the ICRP-107 spectral grid, energy weighted, normalised to the ICRP-107
    mean beta energy per decay (beta- + beta+), as in
    ``absorbed_fractions.nuclide_electron_absorbed_energy_sphere``.
    """
    beta_mev = (nuclide.energy_per_decay_mev.get("beta-", 0.0)
                + nuclide.energy_per_decay_mev.get("beta+", 0.0))
    e_s, n_s = nuclide.beta_spectrum()
    if beta_mev <= 0 or len(e_s) < 2:
        return np.zeros(0), np.zeros(0)
    tw = np.zeros_like(e_s)
    de = np.diff(e_s)
    tw[:-1] += 0.5 * de
    tw[1:] += 0.5 * de
    w = e_s * n_s * tw
    keep = (e_s > 0) & (w > 0)
    return e_s[keep], beta_mev * w[keep] / np.sum(w[keep])


def _emission_set(nuclide: Nuclide, components: tuple[str, ...]):
    """Electron (energy, MeV per decay) arrays, photon (energy, yield) arrays, local MeV."""
    e_el, w_el = [np.zeros(0)], [np.zeros(0)]
    if "beta" in components:
        e, w = _beta_components(nuclide)
        e_el.append(e)
        w_el.append(w)
    if "discrete_electrons" in components:
        e, y = nuclide.discrete_electrons()
        keep = (e > 0) & (y > 0)
        e_el.append(e[keep])
        w_el.append(e[keep] * y[keep])
    e_el, w_el = np.concatenate(e_el), np.concatenate(w_el)
    if np.any(e_el > ELECTRON_MAX_MEV):
        raise PhysicsError(f"{nuclide.name}: electron energies up to {e_el.max():.3g} MeV exceed the "
                           f"{ELECTRON_MAX_MEV} MeV of the electron point-kernel table")
    local = 0.0
    e_ph, y_ph = np.zeros(0), np.zeros(0)
    if "photons" in components:
        e, y = nuclide.photon_lines()
        keep = y > 0
        e, y = e[keep], y[keep]
        low = e < MIN_ENERGY_MEV
        local += float(np.sum(e[low] * y[low]))       # sub-keV photons: absorbed locally
        e_ph, y_ph = e[~low], y[~low]
    if "alpha" in components:
        local += nuclide.alpha_mev
    return (e_el, w_el), (e_ph, y_ph), local


def _radial_energy(emissions, x_cm: np.ndarray, material: str, rho: float) -> np.ndarray:
    """E(x): MeV per decay absorbed within radius x (x >= 0, 1-D), local energy at x > 0."""
    (e_el, w_el), (e_ph, y_ph), local = emissions
    x = np.asarray(x_cm, float)
    out = np.where(x > 0, local, 0.0)
    if e_el.size:
        c = electron_cumulative_kernel(e_el, np.broadcast_to(x, (e_el.size, x.size)), rho)
        out = out + w_el @ c
    if e_ph.size:
        c = photon_cumulative_kernel(e_ph, np.broadcast_to(x, (e_ph.size, x.size)), material, rho)
        out = out + (e_ph * y_ph) @ c
    return out


def radial_absorbed_energy_mev(nuclide, distance_cm, medium: str = "soft_tissue",
                               density_g_per_ml: float | None = None,
                               components: Sequence[str] = COMPONENTS) -> np.ndarray:
    """Energy per decay (MeV) absorbed within distance x of a point source, infinite medium.

    The cumulative point kernel summed over the nuclide's emissions (see module docstring);
    ``E(inf)`` is the total energy of the included components.

    Examples
    --------
    >>> e = radial_absorbed_energy_mev("Y-90", [0.01, 10.0], density_g_per_ml=1.0)
    >>> bool(e[0] < 0.5), round(float(e[1]), 4)
    (True, 0.9331)
    """
    nuc = _resolve_nuclide(nuclide)
    mat, rho = _resolve_medium(medium, density_g_per_ml)
    comps = _check_components(components)
    x = np.atleast_1d(np.asarray(distance_cm, float))
    return _radial_energy(_emission_set(nuc, comps), x.ravel(), mat, rho).reshape(x.shape)


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------

def _resolve_nuclide(nuclide) -> Nuclide:
    return nuclide if isinstance(nuclide, Nuclide) else get_nuclide(str(nuclide))


def _resolve_medium(medium: str, density_g_per_ml) -> tuple[str, float]:
    m = get_material(medium)
    rho = m.density_g_per_ml if density_g_per_ml is None else float(density_g_per_ml)
    if not (np.isfinite(rho) and rho > 0):
        raise InputError(f"density must be > 0 g/ml, got {density_g_per_ml}", field="density_g_per_ml")
    return m.name, rho


def _check_components(components) -> tuple[str, ...]:
    comps = tuple(dict.fromkeys(str(c) for c in components))
    bad = [c for c in comps if c not in COMPONENTS]
    if bad or not comps:
        raise InputError(f"components must be a non-empty subset of {COMPONENTS}, got {components}",
                         field="components")
    return tuple(c for c in COMPONENTS if c in comps)


def _check_voxel(voxel_size_mm) -> tuple[float, float, float]:
    v = np.asarray(voxel_size_mm, float).ravel()
    if v.size == 1:
        v = np.repeat(v, 3)
    if v.shape != (3,) or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise InputError(f"voxel_size_mm must be three positive sizes (x, y, z), got {voxel_size_mm}",
                         field="voxel_size_mm")
    return tuple(float(a) for a in v)


def _check_extent(extent_voxels) -> tuple[int, int, int] | None:
    if extent_voxels is None:
        return None
    n = np.asarray(extent_voxels).ravel()
    if n.size == 1:
        n = np.repeat(n, 3)
    if n.shape != (3,) or not np.all(np.mod(n, 1) == 0) or np.any(n < 0):
        raise InputError("extent_voxels must be one or three non-negative integers (half-widths)",
                         field="extent_voxels")
    return tuple(int(a) for a in n)


# --------------------------------------------------------------------------------------------
# Quadrature
# --------------------------------------------------------------------------------------------

def _tent(x: np.ndarray, h: float) -> np.ndarray:
    return np.clip(h - np.abs(x), 0.0, None) / (h * h)


@lru_cache(maxsize=8)
def _octant_directions(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Product Gauss-Legendre directions on the octant (mu = cos theta in [0,1], phi in [0,pi/2]).

    Returns |omega| components (k, 3) and weights summing to the octant's solid angle pi/2.
    """
    x, w = np.polynomial.legendre.leggauss(n)
    mu, wm = 0.5 * (x + 1.0), 0.5 * w
    ph, wp = 0.25 * np.pi * (x + 1.0), 0.25 * np.pi * w
    m, p = np.meshgrid(mu, ph, indexing="ij")
    s = np.sqrt(1.0 - m**2)
    dirs = np.stack([s * np.cos(p), s * np.sin(p), m], axis=-1).reshape(-1, 3)
    return dirs, np.outer(wm, wp).ravel()


def _near_field(h: np.ndarray, emissions, material: str, rho: float, angular_order: int):
    """S * rho (MeV/cm^3 per decay) for offsets (a, b, c) in {0, 1}^3, shape (2, 2, 2)."""
    r_max = float(np.sqrt(np.sum((2.0 * h) ** 2)))
    h_min = float(h.min())
    edges = np.unique(np.concatenate([[0.0], np.geomspace(1e-7, 0.02 * h_min, 160),
                                      np.linspace(0.02 * h_min, r_max, 600)]))
    # Locally absorbed energy (alphas, sub-keV photons) is a delta at x = 0: gbar(0; 0) = 1/V,
    # gbar(0; Delta != 0) = 0, so it is added to the centre exactly.
    (e_el, w_el), photons, local = emissions
    e_cum = _radial_energy(((e_el, w_el), photons, 0.0), edges, material, rho)
    de = np.diff(e_cum)
    mid = 0.5 * (edges[1:] + edges[:-1])
    dirs, wts = _octant_directions(angular_order)
    out = np.zeros((2, 2, 2))
    signs = np.array([-1.0, 1.0])
    # per axis i, offset index a in {0,1}, sign s: tent values (n_shell, n_dir)
    tv = {}
    for i in range(3):
        for a in (0, 1):
            for s in signs:
                tv[i, a, s] = _tent(s * mid[:, None] * dirs[None, :, i] - a * h[i], h[i])
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                gbar = np.zeros(mid.size)
                for sx in signs:
                    for sy in signs:
                        for sz in signs:
                            gbar += (tv[0, a, sx] * tv[1, b, sy] * tv[2, c, sz]) @ wts
                out[a, b, c] = np.dot(de, gbar / (4.0 * np.pi))
    out[0, 0, 0] += local / float(np.prod(h))
    return out


def _far_density_table(h: np.ndarray, r_max: float, emissions, material: str, rho: float):
    """Shell-averaged energy density e(x) (MeV/cm^3 per decay) on a fine radial grid."""
    lo = 0.5 * float(h.min())
    n = int(np.ceil(np.log(r_max / lo) / np.log(1.003))) + 2
    edges = np.geomspace(lo, r_max * 1.001, n)
    e_cum = _radial_energy(emissions, edges, material, rho)
    vol = 4.0 / 3.0 * np.pi * np.diff(edges**3)
    centre = (0.5 * (edges[1:] ** 3 + edges[:-1] ** 3)) ** (1.0 / 3.0)
    return centre, np.diff(e_cum) / vol


def _tent_rule(m: int, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (relative to the tent centre) and weights of an m-per-half GL rule for tent(x; h)."""
    x, w = np.polynomial.legendre.leggauss(m)
    left = -h + 0.5 * h * (x + 1.0)           # [-h, 0]
    right = 0.5 * h * (x + 1.0)               # [0, h]
    nodes = np.concatenate([left, right])
    weights = np.concatenate([0.5 * h * w, 0.5 * h * w]) * _tent(nodes, h)
    return nodes, weights


def _far_field(h: np.ndarray, table, order_of: np.ndarray) -> np.ndarray:
    """S * rho on the octant grid (n_x+1, n_y+1, n_z+1) by tensor GL on the tent (all offsets)."""
    xc, dens = table
    out = np.zeros(order_of.shape)
    for m in np.unique(order_of):
        if m <= 0:
            continue
        rules = [_tent_rule(int(m), float(h[i])) for i in range(3)]
        sel = np.argwhere(order_of == m)                              # (k, 3) offsets
        # chunk to bound memory: k * (2m)^3 evaluations
        chunk = max(1, int(4e6 // (2 * m) ** 3))
        for s in range(0, len(sel), chunk):
            idx = sel[s:s + chunk]
            dx = (idx[:, 0:1] * h[0] + rules[0][0][None, :]) ** 2     # (k, 2m)
            dy = (idx[:, 1:2] * h[1] + rules[1][0][None, :]) ** 2
            dz = (idx[:, 2:3] * h[2] + rules[2][0][None, :]) ** 2
            r = np.sqrt(dx[:, :, None, None] + dy[:, None, :, None] + dz[:, None, None, :])
            f = np.interp(r, xc, dens, left=dens[0], right=0.0)
            val = np.einsum("kabc,a,b,c->k", f, rules[0][1], rules[1][1], rules[2][1])
            out[idx[:, 0], idx[:, 1], idx[:, 2]] = val
    return out


def _mirror(octant: np.ndarray) -> np.ndarray:
    """Full kernel (2n+1 per axis) from its non-negative octant (n+1 per axis)."""
    full = octant
    for ax in range(3):
        flipped = np.flip(np.take(full, np.arange(1, full.shape[ax]), axis=ax), axis=ax)
        full = np.concatenate([flipped, full], axis=ax)
    return full


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def electron_max_range_cm(nuclide, density_g_per_ml: float = 1.0,
                          components: Sequence[str] = ("beta", "discrete_electrons")) -> float:
    """CSDA range (cm) of the most energetic electron of the nuclide, density-scaled water."""
    nuc = _resolve_nuclide(nuclide)
    (e_el, _), _, _ = _emission_set(nuc, _check_components(components))
    if e_el.size == 0:
        return 0.0
    return float(csda_range_water_g_per_cm2(e_el.max())) / float(density_g_per_ml)


def _extent_radius_cm(emissions, material: str, rho: float, tail: float, max_radius_cm: float):
    (e_el, w_el), (e_ph, y_ph), local = emissions
    total = float(np.sum(w_el) + np.sum(e_ph * y_ph) + local)
    r_e = float(csda_range_water_g_per_cm2(e_el.max())) / rho if e_el.size else 0.0
    r_ph = 0.0
    if e_ph.size:
        x = np.geomspace(0.01, max(max_radius_cm, 0.02), 400)
        c = photon_cumulative_kernel(e_ph, np.broadcast_to(x, (e_ph.size, x.size)), material, rho)
        beyond = float(np.sum(e_ph * y_ph)) - (e_ph * y_ph) @ c
        ok = np.nonzero(beyond <= tail * total)[0]
        r_ph = float(x[ok[0]]) if ok.size else max_radius_cm
    return max(r_e, min(r_ph, max_radius_cm)), total


_CACHE: "OrderedDict[tuple, VoxelKernel]" = OrderedDict()
_CACHE_SIZE = 32
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget the kernels cached in this process."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _build_kernel(nuclide: Nuclide, voxel: tuple[float, float, float], material: str,
                   rho: float, extent, comps: tuple[str, ...], tail: float, max_radius_mm: float,
                   quadrature_order: int, angular_order: int) -> VoxelKernel:
    h = np.asarray(voxel) / 10.0                                     # cm
    emissions = _emission_set(nuclide, comps)
    r_ext, total = _extent_radius_cm(emissions, material, rho, tail, max_radius_mm / 10.0)
    if extent is None:
        extent = tuple(int(math.ceil(r_ext / hi - 1e-9)) + 1 for hi in h)
    n = np.asarray(extent)
    # quadrature order per offset (octant grid)
    ii = [np.arange(k + 1) for k in extent]
    a, b, c = np.meshgrid(*ii, indexing="ij")
    dist = np.sqrt((a * h[0]) ** 2 + (b * h[1]) ** 2 + (c * h[2]) ** 2)
    ratio = dist / h.max()
    r_e = 0.0
    (e_el, _), _, _ = emissions
    if e_el.size:
        r_e = float(csda_range_water_g_per_cm2(e_el.max())) / rho
    order = np.where(ratio < 8.0, 3, 2)
    order = np.where((ratio < 4.0) | (dist <= r_e + 2.0 * h.max()), quadrature_order, order)
    near = (a <= 1) & (b <= 1) & (c <= 1)
    order = np.where(near, 0, order)
    r_far = float(np.sqrt(np.sum(((n + 1) * h) ** 2)))
    octant = np.zeros(tuple(n + 1))
    if np.any(order > 0):
        octant = _far_field(h, _far_density_table(h, r_far, emissions, material, rho), order)
    nf = _near_field(h, emissions, material, rho, angular_order)
    sl = tuple(slice(0, min(2, k + 1)) for k in extent)
    octant[sl] = nf[sl]
    arr = _mirror(octant) * (_MEV_PER_G_TO_GY / rho)                # indexed [x, y, z]
    mass_g = rho * float(np.prod(h))
    in_kernel = float(arr.sum()) * mass_g / _MEV_PER_G_TO_GY
    desc = (
        f"{nuclide.name} voxel S-values in {material} (rho = {rho:g} g/ml), voxel "
        f"{voxel[0]:g} x {voxel[1]:g} x {voxel[2]:g} mm, half-extent {tuple(extent)} voxels; "
        f"components {', '.join(comps)}; electrons: water point kernel scaled by density, "
        f"photons: kerma approximation; energy per decay {total:.6g} MeV, fraction absorbed "
        f"within the kernel {in_kernel / total if total > 0 else 1.0:.4f} "
        f"(truncated fraction {1.0 - in_kernel / total if total > 0 else 0.0:.4f}); "
        f"photon tail criterion {tail:g} of total energy, radius cap {max_radius_mm:g} mm; "
        f"quadrature order {quadrature_order}, angular order {angular_order}"
    )
    return VoxelKernel.from_xyz_array(
        arr,
        voxel_size_mm=voxel,
        nuclide=nuclide.name,
        medium=material,
        source=SOURCE,
        description=desc,
    )


def compute_voxel_kernel(nuclide, voxel_size_mm=(4.8, 4.8, 4.8), medium: str = "soft_tissue",
                         extent_voxels=None, *, density_g_per_ml: float | None = None,
                         components: Sequence[str] = COMPONENTS,
                         photon_tail_fraction: float = DEFAULT_PHOTON_TAIL_FRACTION,
                         max_radius_mm: float = DEFAULT_MAX_RADIUS_MM,
                         quadrature_order: int = DEFAULT_QUADRATURE_ORDER,
                         angular_order: int = DEFAULT_ANGULAR_ORDER) -> VoxelKernel:
    """Voxel S-values S(target <- source) in Gy/(Bq s) from first principles (module docstring).

    Parameters
    ----------
    nuclide : name (``"Lu-177"``, ``"177Lu"``) or :class:`~mrtdose.physics.nuclides.Nuclide`
        (e.g. :func:`~mrtdose.physics.nuclides.with_progeny` for alpha chains).
    voxel_size_mm : (x, y, z) voxel sides in mm, or one number for cubic voxels.
    medium : material name (:data:`mrtdose.physics.attenuation.MATERIALS`).
    extent_voxels : half-width of the kernel in voxels (int or (n_x, n_y, n_z)), the source
        voxel at the centre. None sizes it to the radiation range (module docstring, 'Extent').
    density_g_per_ml : medium density; the material's nominal density if None.
    components : subset of ``("beta", "discrete_electrons", "photons", "alpha")``.
    photon_tail_fraction, max_radius_mm : extent criterion when ``extent_voxels`` is None.
    quadrature_order, angular_order : Gauss-Legendre orders (see module docstring).

    Returns
    -------
    :class:`~mrtdose.physics.voxel_kernel_type.VoxelKernel`, array indexed ``[z, y, x]`` like
    imaging volumes (shape ``(2 n_z + 1, 2 n_y + 1, 2 n_x + 1)``), read-only, cached in-process
    by all arguments (the same object is returned for the same arguments).
    """
    nuc = _resolve_nuclide(nuclide)
    voxel = _check_voxel(voxel_size_mm)
    material, rho = _resolve_medium(medium, density_g_per_ml)
    extent = _check_extent(extent_voxels)
    comps = _check_components(components)
    tail = float(photon_tail_fraction)
    if not (0.0 < tail < 1.0):
        raise InputError("photon_tail_fraction must be in (0, 1)", field="photon_tail_fraction")
    if not (float(max_radius_mm) > 0):
        raise InputError("max_radius_mm must be > 0", field="max_radius_mm")
    q, na = int(quadrature_order), int(angular_order)
    if q < 2 or na < 4:
        raise InputError("quadrature_order must be >= 2 and angular_order >= 4", field="quadrature_order")
    key = (nuc.name, voxel, material, rho, extent, comps, tail, float(max_radius_mm), q, na)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    kernel = _build_kernel(nuc, voxel, material, rho, extent, comps, tail, float(max_radius_mm), q, na)
    with _CACHE_LOCK:
        _CACHE[key] = kernel
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return kernel
