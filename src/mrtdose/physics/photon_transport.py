"""Photon point kernels from first principles: a vectorised Monte Carlo in an infinite medium.

What is computed
----------------
For a monoenergetic (E0) point-isotropic photon source in an infinite homogeneous medium, the
cumulative absorbed-energy fraction ``C(E0, t)``: the fraction of the emitted energy deposited
within a sphere of radius r about the source, tabulated against ``t = (mu/rho)(E0) rho r``, the
distance in primary mean free paths (``mu`` the total attenuation coefficient, coherent scattering
included). It is the point kernel of Berger (1968, MIRD Pamphlet 2) in cumulative form; the
self-absorbed fraction of a volume follows as ``phi = integral psi(x) dC(x)``
(:mod:`mrtdose.physics.absorbed_fractions`).

The kernel is split exactly into

* the **first-collision (primary) part**, analytic: ``(kappa/mu) (1 - exp(-t))``, where ``kappa``
  is the mass energy-deposition coefficient *of this model* at the first interaction,
  ``kappa = tau + sigma_incoh <T>/E + kappa_pair (1 - 2 m_e c^2 / E)`` (``tau`` photoelectric,
  ``<T>/E`` the mean fraction given to the Compton electron under the sampled distribution below,
  computed by quadrature); ``kappa`` is the collision kerma coefficient mu_tr of the model, and it
  agrees with NIST mu_en within 1-2 % (tests/test_absorbed_fractions.py);
* the **scattered part** (everything after the first interaction, annihilation photons
  included), tallied by the Monte Carlo below into radial bins. Its integral is normalised to
  ``1 - kappa/mu`` exactly (the expectation of the raw tally; the raw ratio is kept as a check of
  the simulation), so ``C(t -> inf) = 1``: energy is conserved by construction.

Physics of the simulation
-------------------------
Interaction coefficients are those of :mod:`mrtdose.physics.attenuation` (xraylib 4.3.0 below
800 keV; Klein-Nishina and Maximon's pair series above), partial coefficients by process, on a
log-spaced energy grid (log-log interpolation of mu, linear interpolation of the branching ratios).

* **Photoelectric absorption**: the photon energy is deposited locally (K fluorescence of these
  low-Z tissues, at most 3.7 keV for Ca with a range of tens of um, is absorbed on the spot).
* **Incoherent (Compton) scattering**: Klein-Nishina angle and energy (Klein & Nishina 1929)
  sampled by Kahn's rejection method (Kahn 1954, "Applications of Monte Carlo", AECU-3259; as
  given in the MCNP5 manual, LA-UR-03-1987, ch. 2, sec. V.D), then accepted with probability
  ``S(x, Z)/Z`` where S is the incoherent scattering function of the medium (sum over atoms,
  xraylib ``SF_Compt``, Hubbell et al. 1975 J Phys Chem Ref Data 4:471) and
  ``x = sin(theta/2)/lambda``. This is the Waller-Hartree binding correction; it makes the sampled
  angular distribution consistent with xraylib's integrated ``CS_Compt`` (which is the integral of
  Klein-Nishina times S; checked to 0.3 % for oxygen at 30 keV). Doppler broadening is
  neglected. The electron's kinetic energy ``E - E'`` is deposited locally.
* **Coherent (Rayleigh) scattering**: simulated (so the total mu, coherent included, is used
  consistently): ``x^2`` sampled from the medium's squared atomic form factor ``F^2(x)``
  (xraylib ``FF_Rayl``, Hubbell & Overbo 1979 J Phys Chem Ref Data 8:69) by inversion of its
  tabulated cumulative, then accepted with probability ``(1 + cos^2 theta)/2`` (the Thomson
  factor); the method of PENELOPE (Salvat 2015, NEA/MBDAV/R(2015)1, sec. 2.1). No energy loss.
* **Pair production** (above 2 m_e c^2): the kinetic energy ``E - 2 m_e c^2`` is deposited
  locally; the positron annihilates at rest at the same point into two 0.511 MeV photons emitted
  back to back in an isotropic direction.
* **Kerma approximation**: every charged secondary deposits its kinetic energy at the interaction
  point; bremsstrahlung of the secondaries is not followed. Electron transport therefore adds no
  spread: correct at the photon-kernel scale for MRT photon energies (a 1 MeV Compton electron's
  CSDA range is 4.4 mm in water against a photon mean free path of 14 cm) but it makes the kernel
  slightly too steep within ~1 electron range of the source, a region where the electron kernels
  of :mod:`mrtdose.physics.absorbed_fractions` dominate anyway. The neglected radiative loss is
  the radiative fraction g of NIST mu_en (< 0.5 % below 1 MeV, ~1 % at 3 MeV in water).
* **Photons below 5 keV** deposit their energy locally (mean free path < 0.3 mm in water).

Variance reduction: survival biasing (implicit capture) - at each collision the expected
photoelectric deposit ``w E tau/mu`` is scored and the photon continues with weight
``w (1 - tau/mu)`` - with Russian roulette below 0.2 % of the source energy (unbiased).
Histories are vectorised: numpy arrays of all live photons of all source energies are advanced
one interaction generation at a time. A fixed seed makes the tables deterministic.

Uncertainty: histories are split into batches; the standard error of the mean of C across
batches is returned with the table (:attr:`PhotonKernelTable.cum_sem`).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mrtdose.physics.attenuation import (
    AVOGADRO,
    MAX_ENERGY_MEV,
    ME_C2_MEV,
    Material,
    get_material,
    partial_mass_coefficients,
)

#: Source energies (MeV) of the kernel table: 10 keV-5 MeV, 27 log-spaced values (ratio 1.27).
KERNEL_ENERGIES_MEV = np.geomspace(0.01, MAX_ENERGY_MEV, 27)
#: Bin edges of the radial tally in primary mean free paths t = mu(E0) rho r.
T_EDGES = np.concatenate([[0.0], np.geomspace(1e-3, 150.0, 261)])
#: Histories per source energy, seed and number of batches of the default tables.
HISTORIES = 200_000
SEED = 20240611
N_BATCHES = 10
#: Photons below this energy (MeV) deposit locally.
CUTOFF_MEV = 0.005
#: Russian roulette: below this fraction of the source energy a photon survives with
#: probability (w E/E0)/_RR_SURVIVE and then carries _RR_SURVIVE of it.
_RR_LOW = 0.002
_RR_SURVIVE = 0.01
#: hc in keV Angstrom (CODATA 2018): x = sin(theta/2)/lambda = E_keV sin(theta/2) / HC.
HC_KEV_A = 12.398419843

_XS_E = np.geomspace(CUTOFF_MEV * 0.999, MAX_ENERGY_MEV, 801)
_XS_LE0 = np.log(_XS_E[0])
_XS_DLE = np.log(_XS_E[1] / _XS_E[0])
_X_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 1e3, 600)])   # x in 1/Angstrom


@dataclass(frozen=True)
class _Medium:
    """Interaction data of one material prepared for the transport loop."""

    log_mu: np.ndarray        # log total mu/rho on _XS_E
    p_photo: np.ndarray       # branching ratios on _XS_E
    p_incoh: np.ndarray
    p_coh: np.ndarray
    s_over_z: np.ndarray      # S_mix(x)/Z_mix on _X_GRID
    ff2_cum: np.ndarray       # cumulative of F_mix^2 over v = x^2 on _X_GRID**2 (normalised)
    v_grid: np.ndarray        # _X_GRID**2


def _atom_numbers_per_gram(m: Material) -> np.ndarray:
    import xraylib

    aw = np.array([xraylib.AtomicWeight(int(z)) for z in m.z])
    return m.w * AVOGADRO / aw


@lru_cache(maxsize=16)
def _medium(material: str, coherent: bool) -> _Medium:
    import xraylib_np as xnp

    m = get_material(material)
    c = partial_mass_coefficients(_XS_E, m)
    coh = c["coh"] if coherent else np.zeros_like(c["coh"])
    mu = c["photo"] + c["incoh"] + coh + c["pair"]
    n = _atom_numbers_per_gram(m)
    zi = m.z.astype(int)
    xq = np.maximum(_X_GRID, 1e-9)
    s = n @ xnp.SF_Compt(zi, xq)
    s_over_z = np.clip(s / float(n @ zi), 0.0, 1.0)
    ff2 = n @ xnp.FF_Rayl(zi, xq) ** 2
    v = _X_GRID**2
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (ff2[1:] + ff2[:-1]) * np.diff(v))])
    cum = cum / cum[-1] + np.arange(len(v)) * 1e-15          # strictly increasing for inversion
    return _Medium(np.log(mu), c["photo"] / mu, c["incoh"] / mu, coh / mu, s_over_z, cum, v)


def _grid_interp(e: np.ndarray, *tables: np.ndarray) -> list[np.ndarray]:
    """Linear interpolation in log E on the uniform-in-log grid _XS_E."""
    u = (np.log(e) - _XS_LE0) / _XS_DLE
    i = np.clip(u.astype(np.int64), 0, len(_XS_E) - 2)
    f = u - i
    return [a[i] + f * (a[i + 1] - a[i]) for a in tables]


def _s_over_z(med: _Medium, x: np.ndarray) -> np.ndarray:
    return np.interp(x, _X_GRID, med.s_over_z)


def sample_compton(k: np.ndarray, e_kev: np.ndarray, med: _Medium | None,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample (cos theta, E'/E) of incoherent scattering; vectorised rejection.

    Kahn's method for the Klein-Nishina distribution (module doc) with ``k = E / m_e c^2``:
    with probability ``(1 + 2k)/(9 + 2k)`` propose ``eta = 1 + 2k r`` and accept with
    ``4 (1/eta - 1/eta^2)``, otherwise propose ``eta = (1 + 2k)/(1 + 2k r)`` and accept with
    ``(cos^2 theta + 1/eta)/2``; ``eta = E/E'``, ``cos theta = 1 - (eta - 1)/k``. If ``med`` is
    given, a proposal is further accepted with probability ``S(x)/Z`` (binding correction).
    """
    n = len(k)
    cos_t = np.empty(n)
    eps = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        kk = k[todo]
        r1, r2, r3 = rng.random((3, todo.size))
        branch1 = r1 <= (1.0 + 2.0 * kk) / (9.0 + 2.0 * kk)
        eta = np.where(branch1, 1.0 + 2.0 * kk * r2, (1.0 + 2.0 * kk) / (1.0 + 2.0 * kk * r2))
        ct = 1.0 - (eta - 1.0) / kk
        acc = np.where(branch1, r3 <= 4.0 * (1.0 / eta - 1.0 / eta**2), r3 <= 0.5 * (ct**2 + 1.0 / eta))
        if med is not None:
            x = e_kev[todo] * np.sqrt(np.clip(0.5 * (1.0 - ct), 0.0, 1.0)) / HC_KEV_A
            acc &= rng.random(todo.size) <= _s_over_z(med, x)
        done = todo[acc]
        cos_t[done] = ct[acc]
        eps[done] = 1.0 / eta[acc]
        todo = todo[~acc]
    return np.clip(cos_t, -1.0, 1.0), eps


def sample_rayleigh(e_kev: np.ndarray, med: _Medium, rng: np.random.Generator) -> np.ndarray:
    """Sample cos theta of coherent scattering: x^2 from F^2, then the Thomson factor (module doc)."""
    n = len(e_kev)
    cos_t = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        vmax = (e_kev[todo] / HC_KEV_A) ** 2
        gmax = np.interp(vmax, med.v_grid, med.ff2_cum)
        v = np.interp(rng.random(todo.size) * gmax, med.ff2_cum, med.v_grid)
        ct = np.clip(1.0 - 2.0 * v / vmax, -1.0, 1.0)
        acc = rng.random(todo.size) <= 0.5 * (1.0 + ct**2)
        cos_t[todo[acc]] = ct[acc]
        todo = todo[~acc]
    return cos_t


def _isotropic(n: int, rng: np.random.Generator) -> np.ndarray:
    w = 2.0 * rng.random(n) - 1.0
    ph = 2.0 * np.pi * rng.random(n)
    s = np.sqrt(1.0 - w * w)
    return np.stack([s * np.cos(ph), s * np.sin(ph), w], axis=1)


def _rotate(d: np.ndarray, cos_t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """New unit directions at polar angle theta (cos_t) and uniform azimuth about d."""
    ph = 2.0 * np.pi * rng.random(len(cos_t))
    cp, sp = np.cos(ph), np.sin(ph)
    st = np.sqrt(np.clip(1.0 - cos_t**2, 0.0, None))
    u, v, w = d[:, 0], d[:, 1], d[:, 2]
    sw = np.sqrt(np.clip(1.0 - w * w, 0.0, None))
    ok = sw > 1e-10
    sws = np.where(ok, sw, 1.0)
    nu = np.where(ok, u * cos_t + st * (u * w * cp - v * sp) / sws, st * cp)
    nv = np.where(ok, v * cos_t + st * (v * w * cp + u * sp) / sws, st * sp)
    nw = np.where(ok, w * cos_t - st * cp * sw, np.sign(w + (w == 0)) * cos_t)
    out = np.stack([nu, nv, nw], axis=1)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def compton_transfer_fraction(energy_mev, material: str = "water", binding: bool = True) -> np.ndarray:
    """Mean fraction <T>/E of the photon energy given to the electron in incoherent scattering.

    Quadrature (Gauss-Legendre, 256 nodes in cos theta, split at cos = 0.9 where S(x) varies)
    of ``(1 - E'/E)`` over the Klein-Nishina distribution times S(x)/Z (``binding=True``, the
    distribution sampled by :func:`sample_compton`) or the bare Klein-Nishina distribution.
    """
    e = np.atleast_1d(np.asarray(energy_mev, float))
    med = _medium(get_material(material).name, True)
    xs, ws = [], []
    for lo, hi in ((-1.0, 0.9), (0.9, 1.0)):
        x, w = np.polynomial.legendre.leggauss(128)
        xs.append(lo + 0.5 * (hi - lo) * (x + 1.0))
        ws.append(0.5 * (hi - lo) * w)
    ct, wq = np.concatenate(xs), np.concatenate(ws)
    k = e[:, None] / ME_C2_MEV
    p = 1.0 / (1.0 + k * (1.0 - ct[None, :]))
    dsig = p**2 * (p + 1.0 / p - (1.0 - ct[None, :] ** 2))
    if binding:
        x = (e[:, None] * 1e3) * np.sqrt(0.5 * (1.0 - ct[None, :])) / HC_KEV_A
        dsig = dsig * _s_over_z(med, x)
    return (dsig * (1.0 - p)) @ wq / (dsig @ wq)


def kerma_coefficients(energy_mev, material: str = "water", coherent: bool = True):
    """(mu, kappa) in cm^2/g: total attenuation and first-collision energy-deposition coefficient.

    ``kappa = tau + sigma_incoh <T>/E + kappa_pair (1 - 2 m_e c^2/E)`` with <T>/E from
    :func:`compton_transfer_fraction` (binding included), i.e. exactly the mean local deposit of
    a first interaction in the simulation (module doc).
    """
    e = np.atleast_1d(np.asarray(energy_mev, float))
    c = partial_mass_coefficients(e, material)
    mu = c["photo"] + c["incoh"] + c["pair"] + (c["coh"] if coherent else 0.0)
    kappa = (c["photo"] + c["incoh"] * compton_transfer_fraction(e, material)
             + c["pair"] * np.clip(1.0 - 2.0 * ME_C2_MEV / e, 0.0, None))
    return mu, kappa


def simulate_scatter_tally(material: str, energies_mev, histories: int, seed,
                           coherent: bool = True, n_batches: int = N_BATCHES,
                           t_edges: np.ndarray = T_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """Run the Monte Carlo; return the raw scattered-energy tally and the number of histories.

    Returns
    -------
    hist : (n_energies, n_batches, n_bins) energy deposited after the first collision, as a
        fraction of the source energy, summed over the histories of each batch, binned in
        ``t = mu(E0) r`` (deposits beyond the last edge go to the last bin).
    per_batch : (n_batches,) histories per batch.
    """
    mat = get_material(material).name
    med = _medium(mat, bool(coherent))
    e0 = np.asarray(energies_mev, float)
    ne, nb, nbins = len(e0), int(n_batches), len(t_edges) - 1
    rng = np.random.default_rng(seed)
    mu0 = np.exp(_grid_interp(e0, med.log_mu)[0])
    n = ne * histories
    hid = np.tile(np.arange(histories), ne)
    key = np.repeat(np.arange(ne), histories) * nb + hid % nb
    tscale = np.repeat(mu0, histories)            # mu(E0) per photon: r (g/cm^2) -> t
    inv_e0 = np.repeat(1.0 / e0, histories)
    e = np.repeat(e0, histories)
    w = np.ones(n)
    pos = np.zeros((n, 3))
    d = _isotropic(n, rng)
    hist = np.zeros(ne * nb * nbins)
    lt0 = np.log(t_edges[1])
    dlt = np.log(t_edges[2] / t_edges[1])

    def score(sel, amount):
        t = np.sqrt(np.einsum("ij,ij->i", pos[sel], pos[sel])) * tscale[sel]
        b = np.where(t < t_edges[1], 0, 1 + ((np.log(np.maximum(t, t_edges[1])) - lt0) / dlt).astype(np.int64))
        b = np.minimum(b, nbins - 1)
        hist[:] += np.bincount(key[sel] * nbins + b, weights=amount, minlength=hist.size)

    first = True
    while e.size:
        lmu, p_pe, p_in, p_co = _grid_interp(e, med.log_mu, med.p_photo, med.p_incoh, med.p_coh)
        if first:   # stratified first-flight distances (variance reduction, module doc)
            u = (np.concatenate([rng.permutation(histories) for _ in range(ne)])
                 + rng.random(e.size)) / histories
        else:
            u = rng.random(e.size)
        pos += d * (-np.log1p(-u) / np.exp(lmu))[:, None]
        dep = w * p_pe * e                                # expected photoelectric deposit
        w = w * (1.0 - p_pe)
        r = rng.random(e.size) * (1.0 - p_pe)
        incoh = r < p_in
        coh = ~incoh & (r < p_in + p_co)
        pair = ~incoh & ~coh
        e_new = e.copy()
        cos_t = np.ones(e.size)
        if np.any(incoh):
            ct, eps = sample_compton(e[incoh] / ME_C2_MEV, e[incoh] * 1e3, med, rng)
            cos_t[incoh] = ct
            e_new[incoh] = e[incoh] * eps
            dep[incoh] += w[incoh] * (e[incoh] - e_new[incoh])
        if np.any(coh):
            cos_t[coh] = sample_rayleigh(e[coh] * 1e3, med, rng)
        spawn = None
        if np.any(pair):
            dep[pair] += w[pair] * np.maximum(e[pair] - 2.0 * ME_C2_MEV, 0.0)
            e_new[pair] = ME_C2_MEV
            iso = _isotropic(int(pair.sum()), rng)
            spawn = (pos[pair].copy(), -iso, w[pair].copy(), key[pair], tscale[pair], inv_e0[pair])
        d = _rotate(d, cos_t, rng)
        if spawn is not None:
            d[pair] = iso
        if not first:
            score(slice(None), dep * inv_e0)
        first = False
        e = e_new
        if spawn is not None:
            pos = np.concatenate([pos, spawn[0]])
            d = np.concatenate([d, spawn[1]])
            w = np.concatenate([w, spawn[2]])
            key = np.concatenate([key, spawn[3]])
            tscale = np.concatenate([tscale, spawn[4]])
            inv_e0 = np.concatenate([inv_e0, spawn[5]])
            e = np.concatenate([e, np.full(len(spawn[2]), ME_C2_MEV)])
        # Energy cutoff: deposit locally. Russian roulette on the carried energy fraction.
        low = e < CUTOFF_MEV
        if np.any(low):
            score(low, w[low] * e[low] * inv_e0[low])
        frac = w * e * inv_e0
        rr = (frac < _RR_LOW) & ~low
        survive = rng.random(e.size) < frac / _RR_SURVIVE
        w = np.where(rr & survive, _RR_SURVIVE / (e * inv_e0), w)
        alive = ~low & (~rr | survive)
        pos, d, w, e = pos[alive], d[alive], w[alive], e[alive]
        key, tscale, inv_e0 = key[alive], tscale[alive], inv_e0[alive]
    per_batch = np.bincount(np.arange(histories) % nb, minlength=nb).astype(float)
    return hist.reshape(ne, nb, nbins), per_batch


@dataclass(frozen=True)
class PhotonKernelTable:
    """Cumulative absorbed-energy fraction of a point-isotropic photon source (module doc).

    Attributes
    ----------
    material : material name.
    energies_mev : (n,) source energies.
    t_edges : (k+1,) radial grid in primary mean free paths.
    mu_cm2_per_g, kappa_cm2_per_g : (n,) total attenuation and first-collision deposition
        coefficients at the source energies.
    scatter_shape : (n, k+1) cumulative scattered deposit normalised to 1 at the last edge.
    cum : (n, k+1) the full C(t) = primary + (1 - kappa/mu) * scatter_shape.
    cum_sem : (n, k+1) standard error of ``cum`` from the spread between batches.
    raw_scatter_ratio : (n,) raw scattered energy tally / (1 - kappa/mu); 1 within noise.
    raw_scatter_ratio_sem : (n,) its standard error.
    histories, seed, coherent, build_seconds : provenance.
    """

    material: str
    energies_mev: np.ndarray
    t_edges: np.ndarray
    mu_cm2_per_g: np.ndarray
    kappa_cm2_per_g: np.ndarray
    scatter_shape: np.ndarray
    cum: np.ndarray
    cum_sem: np.ndarray
    raw_scatter_ratio: np.ndarray
    raw_scatter_ratio_sem: np.ndarray
    histories: int
    seed: int
    coherent: bool
    build_seconds: float


def energy_seed(seed: int, material: str, index: int) -> list[int]:
    """Seed of the independent random stream of one table energy: (seed, crc32(material), index).

    Each energy has its own stream, so any single energy can be regenerated alone and compared
    bit for bit with the shipped table (tests/test_absorbed_fractions.py).
    """
    return [int(seed), zlib.crc32(material.encode()), int(index)]


def build_kernel_table(material: str = "water", energies_mev=KERNEL_ENERGIES_MEV,
                       histories: int = HISTORIES, seed: int = SEED, coherent: bool = True,
                       n_batches: int = N_BATCHES, t_edges: np.ndarray = T_EDGES,
                       indices=None) -> PhotonKernelTable:
    """Simulate and assemble the cumulative kernel table (see :class:`PhotonKernelTable`).

    ``indices`` (default ``range(len(energies_mev))``) label the energies' random streams
    (:func:`energy_seed`), so ``build_kernel_table(m, E[i:i+1], indices=[i])`` reproduces row i.
    """
    t_start = time.perf_counter()
    mat = get_material(material).name
    e0 = np.atleast_1d(np.asarray(energies_mev, float))
    idx = list(range(len(e0))) if indices is None else [int(i) for i in indices]
    mu, kappa = kerma_coefficients(e0, mat, coherent)
    runs = [simulate_scatter_tally(mat, [e], histories, energy_seed(seed, mat, i), coherent,
                                   n_batches, t_edges) for e, i in zip(e0, idx)]
    hist = np.concatenate([h for h, _ in runs], axis=0)
    per_batch = runs[0][1]
    primary_frac = kappa / mu
    scat = 1.0 - primary_frac
    prim = primary_frac[:, None] * -np.expm1(-t_edges[None, :])
    prim[:, -1] = primary_frac                                      # C(inf) = 1 exactly

    def assemble(h):                                               # h: (n, k) summed tallies
        c = np.concatenate([np.zeros((len(e0), 1)), np.cumsum(h, axis=1)], axis=1)
        shape = c / c[:, -1:]
        return shape, prim + scat[:, None] * shape

    shape, cum = assemble(hist.sum(axis=1))
    batch_cum = np.stack([assemble(hist[:, b])[1] for b in range(hist.shape[1])], axis=1)
    cum_sem = batch_cum.std(axis=1, ddof=1) / np.sqrt(hist.shape[1])
    raw = hist.sum(axis=2) / per_batch[None, :] / scat[:, None]       # (n, batches)
    return PhotonKernelTable(
        material=mat, energies_mev=e0.copy(), t_edges=np.asarray(t_edges, float).copy(),
        mu_cm2_per_g=mu, kappa_cm2_per_g=kappa, scatter_shape=shape, cum=cum, cum_sem=cum_sem,
        raw_scatter_ratio=raw.mean(axis=1), raw_scatter_ratio_sem=raw.std(axis=1, ddof=1) / np.sqrt(raw.shape[1]),
        histories=int(histories), seed=int(seed), coherent=bool(coherent),
        build_seconds=time.perf_counter() - t_start)


#: Folder of the generated tables (``scripts/make_photon_kernels.py``).
DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "photon_kernels"
_ARRAYS = ("energies_mev", "t_edges", "mu_cm2_per_g", "kappa_cm2_per_g", "scatter_shape", "cum",
           "cum_sem", "raw_scatter_ratio", "raw_scatter_ratio_sem")


def save_kernel_table(table: PhotonKernelTable, path: Path | None = None) -> Path:
    """Write a table as ``<material>.npz`` (atomically: temporary file, then rename)."""
    path = Path(path) if path is not None else DATA_DIR / f"{table.material}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    import xraylib

    np.savez_compressed(
        tmp, **{k: getattr(table, k) for k in _ARRAYS},
        histories=table.histories, seed=table.seed, coherent=table.coherent,
        build_seconds=table.build_seconds,
        provenance=np.array(f"mrtdose.physics.photon_transport; numpy {np.__version__}; "
                            f"xraylib {xraylib.__version__}"))
    tmp.replace(path)
    return path


def load_kernel_table(path: Path) -> PhotonKernelTable:
    """Read a table written by :func:`save_kernel_table`."""
    with np.load(path) as z:
        return PhotonKernelTable(
            material=Path(path).stem, **{k: z[k] for k in _ARRAYS},
            histories=int(z["histories"]), seed=int(z["seed"]), coherent=bool(z["coherent"]),
            build_seconds=float(z["build_seconds"]))


#: Histories per energy when a material has no shipped table (built in-process, ~1.5 s).
FALLBACK_HISTORIES = 4000


@lru_cache(maxsize=8)
def kernel_table(material: str = "water") -> PhotonKernelTable:
    """The kernel table of a material: the shipped one if present, else built in-process.

    The shipped tables (``HISTORIES`` per energy) are generated by
    ``scripts/make_photon_kernels.py``; a material without one is simulated on first use with
    ``FALLBACK_HISTORIES`` per energy (noisier: up to ~2 % on absorbed fractions) and cached.
    """
    name = get_material(material).name
    path = DATA_DIR / f"{name}.npz"
    if path.is_file():
        return load_kernel_table(path)
    return build_kernel_table(name, histories=FALLBACK_HISTORIES)
