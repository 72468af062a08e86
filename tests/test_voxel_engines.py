"""Voxel dose engines (mrtdose.dose.voxel) against analytic ground truth and independent code.

Tolerances: results that are exact in exact arithmetic (LDM, delta kernels, linearity, energy
sums, reciprocity) are checked to 1e-10 relative or tighter, i.e. float64 FFT round-off
(~1e-15 x the peak per voxel, accumulated over a few thousand voxels). Comparisons with
``scipy.ndimage.convolve`` / ``scipy.signal.fftconvolve`` (independent implementations) use
1e-10 of the peak. The uniform-sphere test against Berger's psi-integral compares a voxelised
calculation with a continuous one and has a discretisation tolerance, stated there.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, ndimage, signal

from mrtdose.dose import voxel as dv
from mrtdose.errors import InputError
from mrtdose.kinetics import voxel as vk

MEV_J = 1.602176634e-13  # CODATA 2018 (exact)
MBQH = 3.6e9  # decays per MBq h


def _random_kernel(shape, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random(shape) * 1e-12


def _exp_kernel(half: int, mu: float) -> np.ndarray:
    """Isotropic exponential kernel sampled at voxel centres (symmetric)."""
    ax = np.arange(-half, half + 1, dtype=float)
    r = np.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2)
    return np.exp(-mu * r)


# --------------------------------------------------------------------------------------------
# Local deposition
# --------------------------------------------------------------------------------------------


def test_ldm_uniform_activity_exact():
    # D = A~ E / m: 10 MBq h, 0.1479 MeV per decay, 4.8^3 mm^3 voxels of 1.04 g/mL
    tia = np.full((4, 5, 6), 10.0)
    v_ml, rho, e = 4.8**3 / 1000.0, 1.04, 0.1479
    d = dv.local_deposition(tia, v_ml, rho, e)
    expected = 10.0 * MBQH * e * MEV_J / (rho * v_ml * 1e-3)
    np.testing.assert_allclose(d, expected, rtol=1e-14)


def test_ldm_density_map_scales_inversely():
    tia = np.ones((3, 3, 3))
    rho = np.full((3, 3, 3), 1.0)
    rho[0] = 2.0
    d = dv.local_deposition(tia, 1.0, rho, 0.2)
    np.testing.assert_allclose(d[0], d[1] / 2.0, rtol=1e-15)


def test_ldm_rejects_bad_density():
    with pytest.raises(InputError, match="density"):
        dv.local_deposition(np.ones((2, 2, 2)), 1.0, np.zeros((2, 2, 2)), 0.1)
    with pytest.raises(InputError, match="shape"):
        dv.local_deposition(np.ones((2, 2, 2)), 1.0, np.ones((3, 2, 2)), 0.1)


# --------------------------------------------------------------------------------------------
# Convolution: placement, edges, independent references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pos", [(4, 5, 3), (0, 0, 0), (8, 9, 5), (0, 9, 2)])
def test_delta_source_reproduces_kernel_without_wraparound(pos):
    k = _random_kernel((5, 7, 3))
    grid = (9, 10, 6)
    conv = dv.KernelConvolver(k, grid)
    src = np.zeros(grid)
    src[pos] = 1.0
    out = conv.convolve(src)
    # expected: the kernel centred on pos, clipped at the grid edges (nothing wraps around)
    exp = np.zeros(grid)
    c = [s // 2 for s in k.shape]
    for idx in np.ndindex(k.shape):
        tgt = tuple(p + i - ci for p, i, ci in zip(pos, idx, c))
        if all(0 <= t < n for t, n in zip(tgt, grid)):
            exp[tgt] = k[idx]
    np.testing.assert_allclose(out, exp, rtol=0, atol=1e-10 * k.max())


def test_matches_ndimage_and_fftconvolve():
    rng = np.random.default_rng(7)
    k = _random_kernel((7, 5, 9), seed=3)  # asymmetric: checks orientation (no flip error)
    src = rng.random((12, 11, 10))
    out = dv.KernelConvolver(k, src.shape).convolve(src)
    ref1 = ndimage.convolve(src, k, mode="constant", cval=0.0)
    ref2 = signal.fftconvolve(src, k, mode="same")
    scale = ref1.max()
    np.testing.assert_allclose(out, ref1, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(out, ref2, rtol=0, atol=1e-10 * scale)


def test_kernel_larger_than_grid_is_cropped_correctly():
    k = _random_kernel((15, 15, 15), seed=4)
    rng = np.random.default_rng(8)
    src = rng.random((5, 6, 4))
    conv = dv.KernelConvolver(k, src.shape)
    ref = ndimage.convolve(src, k, mode="constant", cval=0.0)
    np.testing.assert_allclose(conv.convolve(src), ref, rtol=0, atol=1e-10 * ref.max())
    # padding rule: L >= n + c (c = half-width actually used)
    for n, c, L in zip(src.shape, [s // 2 for s in conv.kernel_shape], conv.padded_shape):
        assert L >= n + c


def test_linearity_and_reuse_of_kernel_spectrum():
    rng = np.random.default_rng(2)
    k = _exp_kernel(4, 0.7)
    conv = dv.KernelConvolver(k, (16, 16, 16))
    a, b = rng.random((2, 16, 16, 16))
    lhs = conv.convolve(2.5 * a + 0.5 * b)
    rhs = 2.5 * conv.convolve(a) + 0.5 * conv.convolve(b)
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-12 * lhs.max())


def test_float32_convolver_error_is_small():
    rng = np.random.default_rng(3)
    k = _exp_kernel(5, 0.5)
    src = rng.random((20, 20, 20))
    d64 = dv.KernelConvolver(k, src.shape).convolve(src)
    d32 = dv.KernelConvolver(k, src.shape, dtype=np.float32).convolve(src)
    # single-precision FFT: relative round-off ~ 1e-7 x log2(N) per value; 1e-5 of the peak
    np.testing.assert_allclose(d32, d64, rtol=0, atol=1e-5 * d64.max())


def test_kernel_validation_errors():
    with pytest.raises(InputError, match="odd"):
        dv.KernelConvolver(np.ones((4, 3, 3)), (8, 8, 8))
    with pytest.raises(InputError, match="dimensions"):
        dv.KernelConvolver(np.ones((3, 3)), (8, 8, 8))
    with pytest.raises(InputError, match=">= 0"):
        dv.KernelConvolver(-np.ones((3, 3, 3)), (8, 8, 8))
    with pytest.raises(InputError, match="non-finite"):
        dv.KernelConvolver(np.full((3, 3, 3), np.nan), (8, 8, 8))
    conv = dv.KernelConvolver(np.ones((3, 3, 3)), (8, 8, 8))
    with pytest.raises(InputError, match="shape"):
        conv.convolve(np.ones((8, 8, 7)))


# --------------------------------------------------------------------------------------------
# Energy conservation and the LDM limits
# --------------------------------------------------------------------------------------------


def _kernel_with_energy(e_mev: float, v_ml: float, rho: float = 1.0) -> np.ndarray:
    """Exponential kernel normalised so that sum(k) m_voxel = E (J per decay)."""
    k = _exp_kernel(4, 0.9)
    m_kg = rho * v_ml * 1e-3
    return k / k.sum() * (e_mev * MEV_J) / m_kg


def test_energy_conservation_point_source_inside_and_at_edge():
    v_ml, e_mev, tia = 0.1, 0.15, 2.0
    k = _kernel_with_energy(e_mev, v_ml)
    grid = (20, 20, 20)
    conv = dv.KernelConvolver(k, grid)
    m_kg = 1.0 * v_ml * 1e-3
    emitted_j = tia * MBQH * e_mev * MEV_J
    # centre: the whole kernel inside the grid -> all energy absorbed
    t = np.zeros(grid)
    t[10, 10, 10] = tia
    d = dv.kernel_convolution(t, None, convolver=conv)
    assert math.isclose(d.sum() * m_kg, emitted_j, rel_tol=1e-12)
    # corner: only the part of the kernel inside the grid is absorbed
    t = np.zeros(grid)
    t[0, 1, 19] = tia
    d = dv.kernel_convolution(t, None, convolver=conv)
    frac = k[4:, 3:, :5].sum() / k.sum()  # offsets >= 0 in z, >= -1 in y, <= 0 in x
    assert math.isclose(d.sum() * m_kg, emitted_j * frac, rel_tol=1e-12)


def test_delta_kernel_equals_ldm():
    v_ml, e_mev = 0.2, 0.1333
    k = np.zeros((3, 3, 3))
    k[1, 1, 1] = e_mev * MEV_J / (1.0 * v_ml * 1e-3)  # all energy in the source voxel
    rng = np.random.default_rng(5)
    tia = rng.random((10, 9, 8)) * 50
    d_conv = dv.kernel_convolution(tia, k)
    d_ldm = dv.local_deposition(tia, v_ml, 1.0, e_mev)
    np.testing.assert_allclose(d_conv, d_ldm, rtol=0, atol=1e-12 * d_ldm.max())


def test_centre_of_large_uniform_region_equals_ldm_with_kernel_total():
    # "Infinite" uniform medium: every kernel offset of the centre voxel lies inside the
    # active region, so D(centre) = TIA x sum(k) = LDM with E = sum(k) m (exact)
    v_ml, e_mev = 0.1, 0.15
    k = _kernel_with_energy(e_mev, v_ml)
    tia = np.zeros((24, 24, 24))
    tia[4:20, 4:20, 4:20] = 3.0  # half-width 8 > kernel half-width 4 around the centre
    d = dv.kernel_convolution(tia, k)
    ldm = dv.local_deposition(np.array(3.0), v_ml, 1.0, e_mev)
    assert math.isclose(d[12, 12, 12], float(ldm), rel_tol=1e-12)
    # and near the region's face only part of the kernel overlaps: less than LDM
    assert d[4, 12, 12] < 0.9 * float(ldm)


def test_density_correction_conserves_energy_and_scales_dose():
    v_ml, e_mev = 0.1, 0.15
    k = _kernel_with_energy(e_mev, v_ml)
    rng = np.random.default_rng(9)
    tia = np.zeros((20, 20, 20))
    tia[6:14, 6:14, 6:14] = rng.random((8, 8, 8))
    rho = np.where(rng.random(tia.shape) > 0.5, 0.3, 1.9)  # lung-like and bone-like voxels
    d0 = dv.kernel_convolution(tia, k)
    d1 = dv.kernel_convolution(tia, k, density_map_g_per_ml=rho, reference_density_g_per_ml=1.0)
    np.testing.assert_allclose(d1, d0 / rho, rtol=1e-14)
    # energy = sum D m, m = rho V: unchanged by the correction (Dieudonné 2013 mass scaling)
    e0 = (d0 * 1.0 * v_ml).sum()
    e1 = (d1 * rho * v_ml).sum()
    assert math.isclose(e0, e1, rel_tol=1e-12)


# --------------------------------------------------------------------------------------------
# Uniform sphere vs Berger's psi integral
# --------------------------------------------------------------------------------------------


def _berger_sphere_absorbed_fraction(radius: float, mu: float) -> float:
    """Absorbed fraction of a uniformly active sphere for the normalised exponential point
    kernel f(r) = mu^3/(8 pi) exp(-mu r) (energy per unit volume, integrates to 1):
    phi = int_0^{2R} psi(r / 2R) F(r) dr, F(r) = 4 pi r^2 f(r) = (mu^3/2) r^2 exp(-mu r),
    psi(x) = 1 - 3x/2 + x^3/2 the probability that a point at distance r from a random point
    of the sphere lies in the sphere (Berger MJ 1968, MIRD Pamphlet No. 2, J Nucl Med 9 Suppl
    1:15-25; the same geometric factor as in Berger 1971, MIRD Pamphlet No. 7). Computed by
    quadrature, independently of the convolution code."""

    def integrand(r):
        x = r / (2 * radius)
        return (1 - 1.5 * x + 0.5 * x**3) * 0.5 * mu**3 * r * r * math.exp(-mu * r)

    val, _ = integrate.quad(integrand, 0.0, 2 * radius, epsabs=1e-13, epsrel=1e-12)
    return val


@pytest.mark.parametrize("radius", [8.0, 12.0])
def test_uniform_sphere_mean_dose_matches_berger_psi_integral(radius):
    mu = 0.5  # per voxel: mean emission-to-deposition distance 3/mu = 6 voxels
    half = 30
    k = _exp_kernel(half, mu)
    k /= k.sum()  # fraction of the emitted energy per voxel, sums to 1 (tail beyond: 4e-5)
    n = int(2 * radius) + 8
    ax = np.arange(n) - (n - 1) / 2.0
    r2 = ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2
    sphere = r2 <= radius**2
    src = sphere / sphere.sum()  # one unit of energy, uniform in the sphere
    d = dv.KernelConvolver(k, sphere.shape).convolve(src)
    phi_voxel = float(d[sphere].sum())
    # the sphere of the same volume as the voxelised one
    r_eff = (3 * sphere.sum() / (4 * math.pi)) ** (1 / 3)
    phi_ref = _berger_sphere_absorbed_fraction(r_eff, mu)
    assert 0.3 < phi_ref < 0.9  # a non-trivial absorbed fraction
    # Tolerance 0.5 %: voxel-centre sampling of the kernel (its cusp at r = 0 and its
    # normalisation) and the staircase surface of the voxelised sphere (compared with the
    # equal-volume sphere); both shrink as the kernel range (6 voxels) and the radius grow
    # relative to the voxel. Observed: 0.06 % (R = 8) and 0.04 % (R = 12).
    assert phi_voxel == pytest.approx(phi_ref, rel=0.005)


def test_uniform_sphere_delta_kernel_is_ldm():
    k = np.zeros((5, 5, 5))
    k[2, 2, 2] = 1.0
    ax = np.arange(20) - 9.5
    sphere = (ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2) <= 64
    src = sphere / sphere.sum()
    d = dv.KernelConvolver(k, sphere.shape).convolve(src)
    assert math.isclose(d[sphere].sum(), 1.0, rel_tol=1e-12)


# --------------------------------------------------------------------------------------------
# Patient-specific S values
# --------------------------------------------------------------------------------------------


def _labels():
    lab = np.zeros((20, 22, 18), dtype=np.int16)
    lab[2:9, 3:12, 2:10] = 1
    lab[10:17, 5:15, 6:15] = 2
    lab[4:8, 14:20, 11:16] = 7
    return lab


def test_s_matrix_self_dose_and_brute_force():
    lab = _labels()
    v_ml = 0.064
    k = _exp_kernel(3, 0.8) * 1e-11
    s, m = dv.patient_specific_s_values(lab, k, v_ml, None, [1, 2, 7])
    counts = np.array([(lab == r).sum() for r in (1, 2, 7)])
    np.testing.assert_allclose(m, counts * 1.0 * v_ml, rtol=1e-14)
    # self S = mean dose of the region per unit decay when it is uniformly active
    tia = np.where(lab == 2, 5.0 / counts[1], 0.0)  # 5 MBq h in region 2
    d = dv.kernel_convolution(tia, k)
    assert math.isclose(s[1, 1], d[lab == 2].mean() / (5.0 * MBQH), rel_tol=1e-10)
    # brute force with scipy.ndimage (independent): S(t <- s) = mean_t (1_s / n_s * k)
    for j, src in enumerate((1, 2, 7)):
        dd = ndimage.convolve((lab == src) / counts[j], k, mode="constant")
        for i, tgt in enumerate((1, 2, 7)):
            assert s[i, j] == pytest.approx(dd[lab == tgt].mean(), rel=1e-10, abs=1e-30)


def test_s_matrix_reciprocity_symmetric_kernel_uniform_density():
    # Reciprocity: specific absorbed fractions are symmetric, Phi(a<-b) = Phi(b<-a), so
    # S(a<-b) = S(b<-a), equivalently phi(a<-b) m_b = phi(b<-a) m_a (MIRD Primer 1991;
    # MIRD Pamphlet 21). For a kernel symmetric under r -> -r in a uniform medium the voxel sums
    # are the same double sum: exact up to round-off (1e-10 relative).
    lab = _labels()
    v_ml = 0.05
    k = _exp_kernel(4, 0.6) * 1e-11
    s, m = dv.patient_specific_s_values(lab, k, v_ml, 1.0, [1, 2, 7])
    np.testing.assert_allclose(s, s.T, rtol=1e-10)
    e = k.sum() * (v_ml * 1e-3)  # energy per decay in J (whole kernel)
    phi = s * (m[:, None] * 1e-3) / e  # absorbed fraction phi(target <- source)
    np.testing.assert_allclose(phi * m[None, :], (phi * m[None, :]).T, rtol=1e-10)


def test_s_matrix_density_map_is_energy_over_mass():
    lab = _labels()
    v_ml = 0.05
    k = _exp_kernel(3, 0.6) * 1e-11
    rng = np.random.default_rng(11)
    rho = rng.uniform(0.5, 1.5, lab.shape)
    s, m = dv.patient_specific_s_values(lab, k, v_ml, rho, [1, 2, 7])
    m_ref = np.array([rho[lab == r].sum() * v_ml for r in (1, 2, 7)])
    np.testing.assert_allclose(m, m_ref, rtol=1e-12)
    s0, m0 = dv.patient_specific_s_values(lab, k, v_ml, None, [1, 2, 7])
    # energy deposited per decay is independent of density under mass scaling:
    np.testing.assert_allclose(s * m[:, None], s0 * m0[:, None], rtol=1e-10)


def test_s_matrix_errors():
    lab = _labels()
    with pytest.raises(InputError, match="no voxels"):
        dv.patient_specific_s_values(lab, np.ones((3, 3, 3)), 1.0, None, [1, 3])
    with pytest.raises(InputError, match="integers"):
        dv.patient_specific_s_values(lab.astype(float), np.ones((3, 3, 3)), 1.0)


# --------------------------------------------------------------------------------------------
# The three routes
# --------------------------------------------------------------------------------------------


LAM_LU = math.log(2) / 159.528  # Lu-177, T1/2 = 6.647 d (ICRP-107)


def _phantom_maps():
    rng = np.random.default_rng(12)
    grid = (14, 15, 16)
    lab = np.zeros(grid, dtype=np.int8)
    lab[3:10, 3:11, 4:12] = 1
    lab[9:13, 9:14, 9:15] = 2
    a0 = np.where(lab == 1, 2.0, np.where(lab == 2, 5.0, 0.1)) * rng.uniform(0.8, 1.2, grid)
    lam = np.where(lab == 2, 0.02, 0.01)
    t = np.array([4.0, 24.0, 96.0, 168.0])
    maps = a0[None] * np.exp(-lam[None] * t[:, None, None, None])
    return t, maps, a0, lam, lab


def test_route_a_and_b_agree_for_linear_integration():
    t, maps, *_ = _phantom_maps()
    k = _exp_kernel(3, 0.8) * 1e-11
    conv = dv.KernelConvolver(k, maps.shape[1:])
    tia = vk.voxel_tia(t, maps, LAM_LU, method="trapezoid")
    ra = dv.dose_from_tia_map(tia.tia_map_mbq_h, conv)
    rb = dv.dose_from_activity_maps(t, maps, conv, decay_constant_per_h=LAM_LU, tail="physical")
    assert ra.route == "tia-convolution" and rb.route == "dose-rate-integration"
    np.testing.assert_allclose(rb.dose_gy, ra.dose_gy, rtol=0, atol=1e-10 * ra.dose_gy.max())


def test_route_c_exact_for_noiseless_monoexponential_voxels():
    t, maps, a0, lam, lab = _phantom_maps()
    k = _exp_kernel(3, 0.8) * 1e-11
    rc = dv.dose_from_voxel_kinetics(t, maps, k, decay_constant_per_h=LAM_LU, kinetics="mono_exp")
    exact = dv.kernel_convolution(a0 / lam, k)
    assert rc.route == "voxel-kinetics-convolution"
    np.testing.assert_allclose(rc.dose_gy, exact, rtol=1e-9)
    assert set(np.unique(rc.method_map)) == {vk.METHOD_FIT}
    js = rc.to_json()
    assert js["route"] == "voxel-kinetics-convolution" and js["max_dose"]["uncertainty"] is None


def test_dose_rate_integration_fitted_tail_by_hand():
    # Two voxels, dose rates R(t) = R0 exp(-l t) at 3 times; trapezoids + fitted tail from the
    # last two points: tail = R(t_n)/l exactly for exponential data (l >= lambda_phys here).
    t = np.array([2.0, 10.0, 30.0])
    l = np.array([0.05, 0.2])
    r0 = np.array([1.0, 3.0])
    rates = r0[None] * np.exp(-l[None] * t[:, None])
    res = dv.dose_from_dose_rate_maps(t, rates, tail="fitted", decay_constant_per_h=LAM_LU)
    trap = 0.5 * t[0] * rates[0] + 0.5 * (t[1] - t[0]) * (rates[0] + rates[1]) + 0.5 * (t[2] - t[1]) * (rates[1] + rates[2])
    np.testing.assert_allclose(res.dose_gy, trap + rates[2] / l, rtol=1e-12)
    # physical tail instead: R(t_n) / lambda_phys
    res_p = dv.dose_from_dose_rate_maps(t, rates, tail="physical", decay_constant_per_h=LAM_LU)
    np.testing.assert_allclose(res_p.dose_gy, trap + rates[2] / LAM_LU, rtol=1e-12)
    assert "fit" in res.settings["tail"] and res_p.settings["tail"] == "physical decay"


def test_convolver_accepts_a_voxel_kernel_object():
    # duck-typed: any object with array_gy_per_bq_s (mrtdose.physics.voxel_kernel_type.VoxelKernel)
    from types import SimpleNamespace

    k = _random_kernel((3, 5, 3))
    src = np.random.default_rng(1).random((6, 7, 8))
    a = dv.KernelConvolver(SimpleNamespace(array_gy_per_bq_s=k), src.shape).convolve(src)
    np.testing.assert_array_equal(a, dv.KernelConvolver(k, src.shape).convolve(src))


# --------------------------------------------------------------------------------------------
# Cropping to the source's support, the symmetric-kernel spectrum, the spectrum cache
# --------------------------------------------------------------------------------------------


def _boxed_source(shape, lo, hi, seed=0):
    rng = np.random.default_rng(seed)
    src = np.zeros(shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    src[box] = rng.random(tuple(b - a for a, b in zip(lo, hi)))
    return src


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(
    "lo,hi",
    [
        ((3, 4, 2), (9, 7, 5)),  # interior box: the outputs beyond box + half-width are exact zeros
        ((0, 0, 0), (4, 3, 2)),  # touching the low edges
        ((10, 9, 6), (14, 13, 11)),  # touching the high edges
        ((0, 5, 0), (14, 6, 11)),  # one plane thick
        ((6, 6, 5), (7, 7, 6)),  # one voxel
        ((0, 0, 0), (14, 13, 11)),  # the whole grid
    ],
)
def test_cropped_convolution_matches_ndimage(symmetric, lo, hi):
    # sources on a box of the grid: the convolver crops to it (exact: zero voxels contribute
    # nothing); reference: scipy.ndimage.convolve of the whole grid (direct summation)
    k = _exp_kernel(3, 0.6) if symmetric else _random_kernel((7, 5, 9), seed=6)
    src = _boxed_source((14, 13, 11), lo, hi)
    conv = dv.KernelConvolver(k, src.shape)
    assert conv.symmetric is symmetric
    out = conv.convolve(src)
    ref = ndimage.convolve(src, k, mode="constant", cval=0.0)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10 * ref.max())
    # voxels farther than the half-width from the box are exactly 0
    half = [s // 2 for s in k.shape]
    far = np.ones(src.shape, dtype=bool)
    far[tuple(slice(max(a - c, 0), b + c) for a, b, c in zip(lo, hi, half))] = False
    assert np.all(out[far] == 0.0)


def test_cropped_convolution_1d_2d_and_large_kernel():
    rng = np.random.default_rng(11)
    k1 = rng.random(9)
    src1 = np.zeros(30)
    src1[20:23] = rng.random(3)
    np.testing.assert_allclose(dv.KernelConvolver(k1, src1.shape).convolve(src1),
                               ndimage.convolve(src1, k1, mode="constant"), rtol=0, atol=1e-12)
    k2 = rng.random((5, 11))
    src2 = np.zeros((12, 9))
    src2[2:4, 5:9] = rng.random((2, 4))
    ref2 = ndimage.convolve(src2, k2, mode="constant")
    np.testing.assert_allclose(dv.KernelConvolver(k2, src2.shape).convolve(src2), ref2, rtol=0, atol=1e-12 * ref2.max())
    # kernel wider than the grid, source in a corner
    k3 = _exp_kernel(7, 0.3)
    src3 = _boxed_source((6, 5, 7), (4, 3, 5), (6, 5, 7), seed=2)
    ref3 = ndimage.convolve(src3, k3, mode="constant")
    np.testing.assert_allclose(dv.KernelConvolver(k3, src3.shape).convolve(src3), ref3, rtol=0, atol=1e-10 * ref3.max())


def test_zero_source_gives_zero_dose():
    conv = dv.KernelConvolver(_exp_kernel(2, 0.5), (6, 6, 6))
    out = conv.convolve(np.zeros((6, 6, 6)))
    assert out.dtype == np.float64 and out.shape == (6, 6, 6) and not out.any()


def test_symmetric_kernel_spectrum_equals_fft_of_wrapped_kernel():
    # the cosine-sum spectrum of a mirror-symmetric kernel against numpy's FFT (pocketfft in
    # numpy, a separate code path from scipy.fft) of the explicitly wrapped, zero-padded kernel
    rng = np.random.default_rng(4)
    h = rng.random((3, 2, 4))  # one octant, mirrored into a kernel symmetric along every axis
    k = np.concatenate([h[:0:-1], h], axis=0)
    k = np.concatenate([k[:, :0:-1], k], axis=1)
    k = np.concatenate([k[:, :, :0:-1], k], axis=2)
    half = [s // 2 for s in k.shape]
    padded = (11, 8, 13)
    wrapped = np.zeros(padded)
    for idx in np.ndindex(k.shape):
        wrapped[tuple((i - c) % L for i, c, L in zip(idx, half, padded))] = k[idx]
    ref = np.fft.rfftn(wrapped)
    assert np.abs(ref.imag).max() < 1e-13 * np.abs(ref).max()
    got = dv._symmetric_kernel_spectrum(k, half, padded)
    assert got.dtype == np.float64 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref.real, rtol=0, atol=1e-13 * np.abs(ref).max())
    # the asymmetric (FFT of kernel rows) path gives the same
    np.testing.assert_allclose(dv._wrapped_kernel_spectrum(k, half, padded, 1), ref, rtol=0, atol=1e-13 * np.abs(ref).max())


def test_kernel_spectra_are_cached_per_padded_shape():
    k = _exp_kernel(2, 0.5)
    conv = dv.KernelConvolver(k, (20, 20, 20))
    a = _boxed_source((20, 20, 20), (5, 5, 5), (12, 12, 12))
    conv.convolve(a)
    n1 = conv.spectrum_nbytes
    assert len(conv._spectra) == 1 and n1 > 0
    conv.convolve(2.0 * a)  # same support: same padded shape, spectrum reused
    assert len(conv._spectra) == 1 and conv.spectrum_nbytes == n1
    for i in range(5):  # other supports: bounded cache
        conv.convolve(_boxed_source((20, 20, 20), (0, 0, i), (20, 20, 10 + i)))
    assert len(conv._spectra) <= dv._SPECTRUM_CACHE_SIZE


def test_float32_convolver_cropped_body_like_source():
    # float32 FFTs on a source not filling the grid: largest error < 1e-5 of the peak dose
    # (single-precision round-off ~1e-7 x log2(N) relative to the largest values)
    k = _exp_kernel(5, 0.4)
    zz, yy, xx = np.ogrid[:40, :36, :32]
    body = ((zz - 20) / 16.0) ** 2 + ((yy - 18) / 10.0) ** 2 + ((xx - 16) / 12.0) ** 2 <= 1.0
    src = np.where(body, np.random.default_rng(1).random(body.shape) + 0.5, 0.0)
    d64 = dv.KernelConvolver(k, src.shape).convolve(src)
    d32 = dv.KernelConvolver(k, src.shape, dtype=np.float32).convolve(src)
    assert d32.dtype == np.float64
    np.testing.assert_allclose(d32, d64, rtol=0, atol=1e-5 * d64.max())
