"""Absorbed fractions: geometry, limits, and comparison with independent references.

Independent references used here:
* NIST ESTAR CSDA ranges for electrons in liquid water (Berger et al., NISTIR 4999,
  physics.nist.gov/PhysRefData/Star/Text/ESTAR.html).
* The analytic small-sphere limit phi -> (3/4) mu_en R (mean exit distance of a sphere is 3R/4;
  Berger 1968 MIRD Pamphlet 2), and the sphere's analytic psi(x) for the numerical ellipsoid psi.
* Monte Carlo voxel S-values of Lanconelli et al. (2012) Phys Med Biol 57:517 (in
  ../shared/reference/, skipped if absent): the self-dose of a cubic voxel is the electron
  absorbed fraction of a cube for the nuclide's beta spectrum.

* NIST mu_en/rho of water (Hubbell & Seltzer 1995) for the first-collision deposition of our
  photon transport, and the Klein-Nishina moments (quadrature) for its Compton sampler.

Published tables of monoenergetic sphere absorbed fractions (Stabin & Konijnenberg 2000; MIRD
Pamphlet 3/8, Brownell, Ellett & Reddy 1968) and of water energy-absorption build-up factors
(ANSI/ANS-6.4.3; Berger 1968) could not be retrieved in this session (the public search returned
only catalogue pages), so no number from them is quoted here.
"""

from pathlib import Path

import numpy as np
import pytest

from mrtdose.physics import photon_transport as pt
from mrtdose.physics.absorbed_fractions import (
    csda_range_water_g_per_cm2,
    electron_absorbed_fraction_ellipsoid,
    electron_absorbed_fraction_from_exit_distances,
    electron_absorbed_fraction_sphere,
    photon_absorbed_fraction_ellipsoid,
    photon_absorbed_fraction_from_exit_distances,
    photon_absorbed_fraction_sphere,
    photon_cumulative_kernel,
    psi_ellipsoid,
    psi_sphere,
)
from mrtdose.physics.attenuation import mass_energy_absorption_coefficient
from mrtdose.physics.nuclides import J_PER_MEV, get_nuclide

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LANCONELLI = SHARED / "reference" / "lanconelli2012_voxel_s_values"


# ------------------------------------------------------------------ geometry


def test_psi_sphere_limits_and_mean_exit_distance():
    r = 1.7
    assert psi_sphere(0.0, r) == pytest.approx(1.0)
    assert psi_sphere(2 * r, r) == pytest.approx(0.0, abs=1e-12)
    assert psi_sphere(5 * r, r) == pytest.approx(0.0, abs=1e-12)
    x = np.linspace(0, 2 * r, 20001)
    # integral of psi = mean exit distance = 3R/4 (analytic, Berger 1968)
    assert np.trapezoid(psi_sphere(x, r), x) == pytest.approx(0.75 * r, rel=1e-6)


def test_numeric_psi_of_ellipsoid_with_equal_axes_matches_sphere_formula():
    """Quasi-random estimate vs the analytic sphere formula: within 0.005 absolute."""
    x = np.linspace(0, 4.0, 41)
    np.testing.assert_allclose(psi_ellipsoid(x, (2.0, 2.0, 2.0)), psi_sphere(x, 2.0), atol=5e-3)


def test_ellipsoid_mean_exit_distance():
    """The integral of psi is the mean exit distance: 3R/4 for a sphere (analytic, Berger 1968);
    a prolate ellipsoid of the same volume (more surface) has a shorter one."""
    x = np.linspace(0, 20, 4001)
    m_sph = np.trapezoid(psi_ellipsoid(x, (2.0, 2.0, 2.0)), x)
    assert m_sph == pytest.approx(1.5, rel=5e-3)
    m_pro = np.trapezoid(psi_ellipsoid(x, (1.0, 2.0, 4.0)), x)
    assert m_pro < m_sph


# ------------------------------------------------------------------ photons


# (E MeV, mu_en/rho cm^2/g) for liquid water, NIST "X-Ray Mass Attenuation Coefficients" Table 4
# (Hubbell & Seltzer 1995, NISTIR 5632; physics.nist.gov/PhysRefData/XrayMassCoef/ComTab/water.html).
NIST_WATER_MU_EN = [(0.010, 4.944), (0.030, 0.1557), (0.050, 0.04223), (0.100, 0.02546),
                    (0.200, 0.02967), (0.500, 0.03299), (1.000, 0.03103), (2.000, 0.02608),
                    (3.000, 0.02281)]


@pytest.mark.parametrize("e, muen", NIST_WATER_MU_EN)
def test_first_collision_kerma_coefficient_against_nist(e, muen):
    """The model's first-collision deposition coefficient kappa (photoelectric + Compton with
    Klein-Nishina x S(x) energy transfer + pair) against NIST mu_en of water. Observed: within
    0.15 % up to 1 MeV, +0.3 % at 2 MeV and +0.6 % at 3 MeV, where kappa (a collision-kerma
    coefficient mu_tr) exceeds mu_en by the radiative fraction g that NIST removes and the kerma
    approximation keeps. Tolerance 1 %."""
    _, kappa = pt.kerma_coefficients(e, "water")
    assert float(kappa[0]) == pytest.approx(muen, rel=0.01)


def test_compton_sampling_matches_klein_nishina():
    """Kahn's rejection sampler against the Klein-Nishina moments by quadrature (Klein & Nishina
    1929): <cos>, <cos^2> and <E'/E> with 2e5 samples (standard error ~1.5e-3); tolerance 5e-3."""
    rng = np.random.default_rng(3)
    x, w = np.polynomial.legendre.leggauss(400)
    for k in (0.05, 0.5, 2.0, 8.0):
        ct, eps = pt.sample_compton(np.full(200_000, k), np.full(200_000, k * 511.0), None, rng)
        p = 1.0 / (1.0 + k * (1.0 - x))
        ds = p**2 * (p + 1.0 / p - (1.0 - x**2))
        for sample, f in ((ct, x), (ct**2, x * x), (eps, p)):
            assert sample.mean() == pytest.approx((ds * f) @ w / (ds @ w), abs=5e-3)


@pytest.mark.parametrize("material", ["water", "soft_tissue", "cortical_bone", "lung"])
def test_photon_kernel_energy_conservation(material):
    """C(t -> inf) = 1 by construction; the *raw* scattered-energy tally of the simulation (not
    normalised) must equal its expectation 1 - kappa/mu within 4 standard errors (and 1 %): this
    checks the bookkeeping of the transport (annihilation photons, cut-off, Russian roulette)."""
    tab = pt.kernel_table(material)
    assert np.all(tab.cum[:, -1] == pytest.approx(1.0, abs=1e-12))
    assert np.all(np.diff(tab.cum, axis=1) >= 0)
    dev = np.abs(tab.raw_scatter_ratio - 1.0)
    assert np.all(dev < np.maximum(4 * tab.raw_scatter_ratio_sem, 1e-3)), dev
    assert np.all(dev < 0.01)


def test_photon_kernel_statistical_noise_below_half_percent():
    """phi = integral p(x) C(x) dx (p the sphere's exit-distance pdf), so by Minkowski's
    inequality its standard error is at most integral p(x) sem_C(x) dx, sem_C the batch standard
    error of C (10 batches of 20 000 histories). Shown below 0.5 % of phi (observed at most
    0.2 %) for water spheres of 0.05-50 cm radius at every table energy, 10 keV-5 MeV."""
    tab = pt.kernel_table("water")
    r = np.array([0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0])
    e = tab.energies_mev
    af = photon_absorbed_fraction_sphere(e, r, "water", 1.0)
    worst = 0.0
    for i in range(len(e)):
        for j, rj in enumerate(r):
            x = np.linspace(0.0, 2 * rj, 4001)
            sem = np.interp(x * tab.mu_cm2_per_g[i], tab.t_edges, tab.cum_sem[i])
            bound = np.trapezoid((0.75 / rj - 3 * x**2 / (16 * rj**3)) * sem, x)
            worst = max(worst, bound / af[i, j])
    assert worst < 0.005, worst


def test_shipped_table_regenerates_bit_for_bit():
    """The shipped water table is our own generated data: regenerating one energy with the same
    seed and histories reproduces its row exactly (scripts/make_photon_kernels.py)."""
    shipped = pt.kernel_table("water")
    assert shipped.histories == pt.HISTORIES and shipped.seed == pt.SEED
    i = 6                                                         # 42 keV: fast to simulate
    row = pt.build_kernel_table("water", shipped.energies_mev[i:i + 1], histories=shipped.histories,
                                seed=shipped.seed, indices=[i])
    np.testing.assert_allclose(row.scatter_shape[0], shipped.scatter_shape[i], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(row.kappa_cm2_per_g[0], shipped.kappa_cm2_per_g[i], rtol=1e-12)


def _sphere_af_from_table(tab, i, radius_g_cm2):
    """phi = integral of the sphere exit-distance pdf times C (trapezoid on a fine grid)."""
    out = []
    for rr in radius_g_cm2:
        x = np.linspace(0.0, 2 * rr, 4001)
        c = np.interp(x * tab.mu_cm2_per_g[i], tab.t_edges, tab.cum[i])
        pdf = 0.75 / rr - 3 * x**2 / (16 * rr**3)
        out.append(np.trapezoid(pdf * c, x))
    return np.array(out)


@pytest.mark.parametrize("i", [5, 9, 18])
def test_photon_energy_interpolation_error(i):
    """Between table energies (ratio 1.27) the kernel is interpolated. At the geometric midpoint
    of table energies i and i+1 (37, 97 and 833 keV) a direct simulation (60 000 histories, own
    seed) and the interpolated absorbed fractions of water spheres agree (observed
    at most 0.44 %). The difference is dominated by the noise of the two independent runs (a
repeat with 200 000 direct histories gave at most 0.58 %, at 97 keV, a different seed at most
0.18 % there), so the interpolation error itself is below the ~0.5 % statistical resolution.
Tolerance 1 %."""
    tab = pt.kernel_table("water")
    e_mid = float(np.sqrt(tab.energies_mev[i] * tab.energies_mev[i + 1]))
    direct = pt.build_kernel_table("water", [e_mid], histories=60_000, seed=99, indices=[0])
    r = np.array([0.3, 1.0, 3.0, 10.0, 30.0])
    ours = photon_absorbed_fraction_sphere(e_mid, r, "water", 1.0)
    np.testing.assert_allclose(ours, _sphere_af_from_table(direct, 0, r), rtol=0.01)


def test_photon_small_sphere_limit():
    """For mu R << 1, phi -> (3/4) kappa rho R (mean exit distance 3R/4 times the first-collision
    deposition; Berger 1968): exact in our kernel, whose primary part is analytic. At R = 1e-3 cm
    (up to 0.005 mfp) the attenuation and scatter corrections are < 0.5 %; kappa itself is within
    1 % of NIST mu_en (test above) and within 1.5 % of attenuation.mass_energy_absorption_coefficient
    (whose Compton energy transfer omits binding)."""
    for e in (0.03, 0.1, 0.364, 1.0, 3.0):
        r = 1e-3
        _, kappa = pt.kerma_coefficients(e, "water")
        got = photon_absorbed_fraction_sphere(e, r, "water", 1.0)
        assert got == pytest.approx(0.75 * float(kappa[0]) * r, rel=0.005)
        assert got == pytest.approx(0.75 * mass_energy_absorption_coefficient(e, "water") * r, rel=0.02)


def test_photon_cumulative_kernel_density_scaling_and_limits():
    """Distances scale as 1/rho (mass thickness); C rises from 0 to 1."""
    e = np.array([0.05, 0.364, 2.0])
    x = np.array([[0.1, 1.0, 10.0, 1e4]] * 3)
    c1 = photon_cumulative_kernel(e, x, "soft_tissue", 1.0)
    c2 = photon_cumulative_kernel(e, 2 * x, "soft_tissue", 0.5)
    np.testing.assert_allclose(c1, c2, rtol=1e-12)
    assert np.all(np.diff(c1, axis=1) > 0) and np.all(c1[:, -1] == 1.0)


def test_photon_af_limits_and_monotonic():
    e = np.array([0.03, 0.1, 0.364, 1.0])
    r = np.geomspace(0.05, 1e4, 40)
    af = photon_absorbed_fraction_sphere(e, r, "soft_tissue", 1.0)
    assert af.shape == (4, 40)
    assert np.all(np.diff(af, axis=1) > 0)
    assert np.all(af < 1.0) and np.all(af > 0)
    # A 100 m sphere absorbs essentially all the energy (energy conservation of the kernel;
    # the escape near the surface is ~ (3/(4R)) x a few mean free paths < 1 %)
    assert af[:, -1] == pytest.approx(np.ones(4), abs=0.01)


def test_photon_ellipsoid_equal_axes_equals_sphere():
    e = np.array([0.05, 0.208, 0.364, 1.0])
    sph = photon_absorbed_fraction_sphere(e, 3.0, "soft_tissue", 1.0)
    ell = photon_absorbed_fraction_ellipsoid(e, (3.0, 3.0, 3.0), "soft_tissue", 1.0)
    np.testing.assert_allclose(ell, sph, rtol=0.01)


# ------------------------------------------------------------------ electrons


@pytest.mark.parametrize(
    "e, estar",
    # NIST ESTAR, liquid water, CSDA range (g/cm^2)
    [(0.01, 2.515e-4), (0.1, 1.431e-2), (0.5, 0.1766), (1.0, 0.4367), (2.0, 0.9785)],
)
def test_csda_range_against_estar(e, estar):
    """Within 1.5 %: same Bethe formula, I-value and density effect as ESTAR; the residual is
    ESTAR's radiative stopping power (1.1 % of the range at 2 MeV), which we neglect."""
    assert csda_range_water_g_per_cm2(e) == pytest.approx(estar, rel=0.015)


def test_electron_af_limits_and_monotonic():
    e = np.array([0.01, 0.1, 0.5, 1.0, 2.0])
    r = np.geomspace(1e-4, 10.0, 30)
    af = electron_absorbed_fraction_sphere(e, r, 1.0)
    assert np.all(np.diff(af, axis=1) >= -1e-12)
    # no energy can escape from points further than R0 from the surface: AF >= psi(R0)
    r0 = csda_range_water_g_per_cm2(e)
    assert np.all(af >= psi_sphere(r0[:, None], r[None, :]) - 1e-9)
    assert np.all(af[:, -1] > 0.95)
    assert np.all(af[1:, 0] < 0.01)           # R = 1 um << ranges of >= 100 keV
    # AF decreases with energy at fixed radius
    assert np.all(np.diff(af[:, 10]) < 0)


def test_electron_small_sphere_limit():
    """For R << R0 the AF tends to (3/4) R times the energy deposited per unit path near the
    source, which is bounded above by S_col (straight-ahead); check the order: AF/R between
    0.3 and 1.2 times (3/4) S/E."""
    from mrtdose.physics.absorbed_fractions import collision_stopping_power_water

    e, r = 1.0, 1e-3
    bound = 0.75 * collision_stopping_power_water(e) * r / e
    af = electron_absorbed_fraction_sphere(e, r, 1.0)
    assert 0.3 * bound < af < 1.2 * bound


def test_electron_ellipsoid_equal_axes_equals_sphere_and_density_scaling():
    e = np.array([0.1, 0.5, 1.5])
    sph = electron_absorbed_fraction_sphere(e, 0.2, 1.0)
    ell = electron_absorbed_fraction_ellipsoid(e, (0.2, 0.2, 0.2), 1.0)
    np.testing.assert_allclose(ell, sph, atol=0.01)
    # distances scale as 1/rho: (R, rho) and (2R, rho/2) are the same problem
    np.testing.assert_allclose(electron_absorbed_fraction_sphere(e, 0.4, 0.5), sph, rtol=1e-9)


# ------------------------------------------------------------------ Lanconelli Monte Carlo


def _lanconelli(name: str) -> np.ndarray:
    if not LANCONELLI.is_dir():
        pytest.skip(f"shared reference folder absent: {LANCONELLI}")
    rows = [ln.split() for ln in (LANCONELLI / name).read_text(encoding="latin-1").splitlines()[2:]
            if ln.strip()]
    a = np.array(rows, float)
    k = np.zeros((6, 6, 6))
    k[a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2].astype(int)] = a[:, 3]
    return k


def _cube_exit_distances(side_cm: float, box_cm: float | None = None, n: int = 2**15) -> np.ndarray:
    """Exit distances from a box of side ``box_cm`` for points uniform in a centred cube of side
    ``side_cm`` and isotropic directions (scrambled Sobol', fixed seed)."""
    from scipy.stats import qmc

    box = side_cm if box_cm is None else box_cm
    u = qmc.Sobol(5, scramble=True, rng=np.random.default_rng(7)).random(n)
    p = (u[:, :3] - 0.5) * side_cm
    ct = 2 * u[:, 3] - 1
    st = np.sqrt(1 - ct**2)
    ph = 2 * np.pi * u[:, 4]
    d = np.stack([st * np.cos(ph), st * np.sin(ph), ct], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d > 0, (box / 2 - p) / d, np.where(d < 0, (-box / 2 - p) / d, np.inf))
    return t.min(1)


def _beta_af(nuclide, d, rho):
    e, n = nuclide.beta_spectrum()
    keep = e > 0
    e, n = e[keep], n[keep]
    tw = np.zeros_like(e)
    de = np.diff(e)
    tw[:-1] += de / 2
    tw[1:] += de / 2
    af = electron_absorbed_fraction_from_exit_distances(e, d, rho)
    return np.sum(e * n * tw * af) / np.sum(e * n * tw)


@pytest.mark.parametrize("size_mm", ["2.21", "3", "4.8", "6", "9.28"])
def test_y90_voxel_self_dose_against_lanconelli(size_mm):
    """Y-90 centre-voxel S-value (Lanconelli 2012, soft tissue 1.04 g/ml, MC) vs our beta AF
    of the cube. The cube AF ranges from 0.23 (2.21 mm) to 0.66 (9.28 mm), so this tests the
    shape of the electron kernel. Observed: ours 2-4 % high; tolerance 6 %."""
    k = _lanconelli(f"90Y{size_mm}mmsoft.txt")
    nu = get_nuclide("Y-90")
    a, rho = float(size_mm) / 10, 1.04
    m_kg = rho * a**3 / 1000
    ours = nu.energy_per_decay_mev["beta-"] * _beta_af(nu, _cube_exit_distances(a), rho) * J_PER_MEV / m_kg
    ref = k[0, 0, 0] * 1e-9  # mGy/(MBq s) -> Gy/(Bq s)
    assert ours == pytest.approx(ref, rel=0.06)


@pytest.mark.parametrize("nuc, name", [("177Lu", "Lu-177"), ("131I", "I-131")])
@pytest.mark.parametrize("size_mm", ["2.21", "4.8", "9.28"])
def test_lu177_i131_voxel_self_dose_against_lanconelli(nuc, name, size_mm):
    """Centre voxel of Lu-177 / I-131 (cube AF 0.79-0.96). The tables appear to omit part or all
    of the conversion electrons (shared README), so the reference must lie between our
    beta+photon and our beta+IE/Auger+photon values, with a 4 % margin each side."""
    k = _lanconelli(f"{nuc}{size_mm}mmsoft.txt")
    nu = get_nuclide(name)
    a, rho = float(size_mm) / 10, 1.04
    m_kg = rho * a**3 / 1000
    d = _cube_exit_distances(a)
    beta = nu.energy_per_decay_mev["beta-"] * _beta_af(nu, d, rho)
    ed, yd = nu.discrete_electrons()
    keep = (ed > 0) & (yd > 0)
    ie = np.sum(ed[keep] * yd[keep] * electron_absorbed_fraction_from_exit_distances(ed[keep], d, rho))
    eg, yg = nu.photon_lines(min_energy_mev=1e-3)
    ph = np.sum(eg * yg * photon_absorbed_fraction_from_exit_distances(eg, d, "soft_tissue", rho))
    ref_mev = k[0, 0, 0] * 1e-9 * m_kg / J_PER_MEV
    assert 0.96 * (beta + ph) <= ref_mev <= 1.04 * (beta + ie + ph)


def _full_sum_mev(name: str, size_mm: float, rho: float) -> float:
    k = _lanconelli(name)
    idx = np.abs(np.arange(-5, 6))
    full = k[idx[:, None, None], idx[None, :, None], idx[None, None, :]]
    m_kg = rho * (size_mm / 10) ** 3 / 1000
    return full.sum() * 1e-9 * m_kg / J_PER_MEV


@pytest.mark.parametrize("tissue, material, rho, tol", [("soft", "soft_tissue", 1.04, 0.10),
                                                        ("bone", "cortical_bone", 1.85, 0.15)])
def test_i131_photon_energy_absorbed_against_lanconelli(tissue, material, rho, tol):
    """Photon check with the Monte Carlo: the energy absorbed in the whole 11^3-voxel kernel
    grows with voxel size only through photons (all electrons stop inside both 5.3 cm and
    10.2 cm cubes), so the difference between the 9.28 mm and 4.8 mm kernels is the I-131 photon
    energy absorbed between those two cubes. Observed with our Monte Carlo photon kernel (material
    specific): soft tissue -0.2 %, bone -0.6 % (the earlier water build-up-factor kernel gave
    bone -7 %); tolerances kept at 10 % and 15 % (the reference's own statistics and voxel
    discretisation are not stated; the Lu-177 analogue differs by +8 %)."""
    nu = get_nuclide("I-131")
    eg, yg = nu.photon_lines(min_energy_mev=1e-3)
    ours = []
    for s in (4.8, 9.28):
        d = _cube_exit_distances(s / 10, 11 * s / 10)
        ours.append(np.sum(eg * yg * photon_absorbed_fraction_from_exit_distances(eg, d, material, rho)))
    ref = _full_sum_mev(f"131I9.28mm{tissue}.txt", 9.28, rho) - _full_sum_mev(f"131I4.8mm{tissue}.txt", 4.8, rho)
    assert ours[1] - ours[0] == pytest.approx(ref, rel=tol)


def test_ellipsoid_family_quantiles_match_full_sample():
    """512 stratified quantiles reproduce the full 32768-sample mean within 0.1 %."""
    from mrtdose.physics.absorbed_fractions import photon_absorbed_fraction_ellipsoid_family

    e, q, r = np.array([0.03, 0.364, 1.0]), np.array([1.0, 1.5, 3.0]), 3.0
    fam = photon_absorbed_fraction_ellipsoid_family(e, q, r, "soft_tissue", 1.0)[:, 0]
    full = photon_absorbed_fraction_ellipsoid(e, q * r / np.prod(q) ** (1 / 3), "soft_tissue", 1.0)
    np.testing.assert_allclose(fam, full, rtol=1e-3)


def test_electron_cumulative_kernel_bounds():
    from mrtdose.physics.absorbed_fractions import electron_cumulative_kernel

    c = electron_cumulative_kernel(np.array([0.1, 1.0]), np.array([[1e-4, 0.01, 1.0], [1e-4, 0.1, 1.0]]))
    assert np.all((c >= 0) & (c <= 1)) and np.all(np.diff(c, axis=1) >= 0)
    assert c[:, -1] == pytest.approx([1.0, 1.0])
