"""Voxel kinetics (mrtdose.kinetics.voxel): analytic TIA, hand-worked trapezoids, and the
vectorised code against a per-voxel reference loop written independently here.

Tolerances: closed forms evaluated in float64; 1e-12 relative unless stated.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrtdose.errors import InputError
from mrtdose.kinetics import voxel as vk

LAM_LU = math.log(2) / 159.528  # Lu-177, T1/2 = 6.647 d (ICRP-107)
T = np.array([4.0, 24.0, 96.0, 168.0])


def _mono_maps(shape=(5, 6, 7), seed=0):
    rng = np.random.default_rng(seed)
    a0 = rng.uniform(0.5, 20.0, shape)
    lam = rng.uniform(LAM_LU * 1.5, 0.05, shape)  # T_eff 14 h .. 106 h
    maps = a0[None] * np.exp(-lam[None] * T[:, None, None, None])
    return maps, a0, lam


@pytest.mark.parametrize("weighting", ["poisson", "absolute", "uniform"])
def test_noiseless_monoexponential_exact(weighting):
    maps, a0, lam = _mono_maps()
    r = vk.voxel_tia(T, maps, LAM_LU, method="mono_exp", weighting=weighting)
    np.testing.assert_allclose(r.tia_map_mbq_h, a0 / lam, rtol=1e-10)
    assert np.all(r.method_map == vk.METHOD_FIT)


def test_fit_of_last_points_hybrid_exact():
    # fit of the last 2 points: trapezoid to t_2 (from (0,0)) + exact exponential tail from t_2
    maps, a0, lam = _mono_maps(seed=1)
    r = vk.voxel_tia(T, maps, LAM_LU, method="mono_exp", n_fit=2)
    head = 0.5 * T[0] * maps[0] + 0.5 * (T[1] - T[0]) * (maps[0] + maps[1]) + 0.5 * (T[2] - T[1]) * (maps[1] + maps[2])
    tail = a0 * np.exp(-lam * T[2]) / lam
    np.testing.assert_allclose(r.tia_map_mbq_h, head + tail, rtol=1e-10)


def test_trapezoid_hand_worked():
    # one voxel: A = 10, 8, 4, 3 MBq at 4, 24, 96, 168 h; lambda_phys = 0.01 /h
    a = np.array([10.0, 8.0, 4.0, 3.0])[:, None]
    # zero start: 4*10/2 = 20; 20*(10+8)/2 = 180; 72*(8+4)/2 = 432; 72*(4+3)/2 = 252;
    # tail 3/0.01 = 300 -> 1184
    r = vk.voxel_tia(T, a, 0.01, method="trapezoid")
    assert r.tia_map_mbq_h[0] == pytest.approx(1184.0, rel=1e-14)
    # constant start: 4*10 = 40 instead of 20 -> 1204
    r = vk.voxel_tia(T, a, 0.01, method="trapezoid", start="constant")
    assert r.tia_map_mbq_h[0] == pytest.approx(1204.0, rel=1e-14)


def test_rate_clamped_to_physical():
    # clearance slower than physical decay (impossible; noise): rate clamped to lambda_phys and
    # the amplitude refitted with the slope fixed: a = sum w (y + lam t) / sum w
    lam_slow = LAM_LU / 3
    a = (7.0 * np.exp(-lam_slow * T))[:, None]
    r = vk.voxel_tia(T, a, LAM_LU, method="mono_exp", weighting="uniform")
    assert r.method_map[0] == vk.METHOD_FIT_CLAMPED
    a_fit = math.exp(np.mean(np.log(a[:, 0]) + LAM_LU * T))
    assert r.tia_map_mbq_h[0] == pytest.approx(a_fit / LAM_LU, rel=1e-12)


def test_fallback_rules_rising_and_noise_only():
    rising = np.array([1.0, 2.0, 3.0, 4.0])
    noise = np.array([0.5, -0.2, 0.1, 0.0])  # non-positive points: ln A undefined
    a = np.stack([rising, noise], axis=1)
    r = vk.voxel_tia(T, a, LAM_LU, method="mono_exp")
    assert r.method_map.tolist() == [vk.METHOD_FIT_FALLBACK, vk.METHOD_FIT_FALLBACK]
    trap = vk.voxel_tia(T, a, LAM_LU, method="trapezoid").tia_map_mbq_h
    np.testing.assert_allclose(r.tia_map_mbq_h, trap, rtol=1e-14)
    # a noise floor also triggers the fallback
    r = vk.voxel_tia(T, (5 * np.exp(-0.05 * T))[:, None], LAM_LU, method="mono_exp", noise_floor_mbq=1.0)
    assert r.method_map[0] == vk.METHOD_FIT_FALLBACK


def _reference_loop(t, maps, lam_p, n_fit, weighting):
    """Per-voxel reference written independently: np.polyfit on ln A with weights sqrt(w)
    (polyfit minimises sum (w_i^(1/2) r_i)^2), then the module's documented TIA rule."""
    flat = maps.reshape(maps.shape[0], -1)
    out = np.empty(flat.shape[1])
    codes = np.empty(flat.shape[1], dtype=np.uint8)
    n_t = len(t)
    j = n_t - n_fit
    for v in range(flat.shape[1]):
        a = flat[:, v]
        trap = 0.5 * t[0] * a[0] + sum(0.5 * (t[i] - t[i - 1]) * (a[i] + a[i - 1]) for i in range(1, n_t)) + a[-1] / lam_p
        af, tf = a[j:], t[j:]
        if np.any(af <= 0):
            out[v], codes[v] = trap, vk.METHOD_FIT_FALLBACK
            continue
        w = {"poisson": af, "absolute": af**2, "uniform": np.ones_like(af)}[weighting]
        slope, icpt = np.polyfit(tf, np.log(af), 1, w=np.sqrt(w))
        lam = -slope
        if lam <= 0:
            out[v], codes[v] = trap, vk.METHOD_FIT_FALLBACK
            continue
        code = vk.METHOD_FIT
        if lam < lam_p:
            lam = lam_p
            icpt = np.sum(w * (np.log(af) + lam * tf)) / np.sum(w)
            code = vk.METHOD_FIT_CLAMPED
        amp = math.exp(icpt)
        if j == 0:
            val = amp / lam
        else:
            head = 0.5 * t[0] * a[0] + sum(0.5 * (t[i] - t[i - 1]) * (a[i] + a[i - 1]) for i in range(1, j + 1))
            val = head + amp * math.exp(-lam * t[j]) / lam
        out[v], codes[v] = val, code
    return out.reshape(maps.shape[1:]), codes.reshape(maps.shape[1:])


@pytest.mark.parametrize("n_fit,weighting", [(4, "poisson"), (3, "absolute"), (2, "uniform")])
def test_vectorised_equals_per_voxel_loop(n_fit, weighting):
    rng = np.random.default_rng(42)
    maps, _, _ = _mono_maps((6, 5, 4), seed=3)
    maps = maps * rng.normal(1.0, 0.15, maps.shape)  # noisy: some rising, some clamped
    maps[:, 0, 0, 0] = [1.0, 2.0, 3.0, 5.0]
    maps[2, 1, 1, 1] = -0.3
    ref, ref_codes = _reference_loop(T, maps, LAM_LU, n_fit, weighting)
    r = vk.voxel_tia(T, maps, LAM_LU, method="mono_exp", n_fit=n_fit, weighting=weighting)
    np.testing.assert_array_equal(r.method_map, ref_codes)
    np.testing.assert_allclose(r.tia_map_mbq_h, ref, rtol=1e-9)
    assert len(set(ref_codes.ravel().tolist())) >= 2  # the data exercise more than one branch


def test_mask_and_chunking_match_unmasked(monkeypatch):
    maps, a0, lam = _mono_maps((8, 9, 10), seed=5)
    mask = np.zeros(maps.shape[1:], dtype=bool)
    mask[2:6, 1:8, 3:9] = True
    full = vk.voxel_tia(T, maps, LAM_LU, method="mono_exp")
    monkeypatch.setattr(vk, "CHUNK_VOXELS", 17)  # force many blocks
    part = vk.voxel_tia(T, maps, LAM_LU, method="mono_exp", mask=mask)
    np.testing.assert_allclose(part.tia_map_mbq_h[mask], full.tia_map_mbq_h[mask], rtol=1e-14)
    assert np.all(part.tia_map_mbq_h[~mask] == 0)
    assert np.all(part.method_map[~mask] == vk.METHOD_OUTSIDE)
    assert part.counts[vk.METHOD_OUTSIDE] == (~mask).sum()
    js = part.to_json()
    assert js["total_tia_mbq_h"]["uncertainty"] is None and js["method"] == "mono_exp"


def test_trapezoid_fit_tail_exact_tail():
    maps, a0, lam = _mono_maps((3, 3, 3), seed=6)
    r = vk.voxel_tia(T, maps, LAM_LU, method="trapezoid_fit_tail")  # last 2 points
    trap = vk.voxel_tia(T, maps, LAM_LU, method="trapezoid").tia_map_mbq_h
    expected = trap - maps[-1] / LAM_LU + maps[-1] / lam
    np.testing.assert_allclose(r.tia_map_mbq_h, expected, rtol=1e-10)


def test_region_scaled():
    # voxel TIA = A_voxel(t_ref) x region (TIA / A(t_ref)); regions from region TACs
    maps, _, _ = _mono_maps((6, 6, 6), seed=7)
    lab = np.zeros((6, 6, 6), dtype=np.int32)
    lab[:3] = 1
    lab[3:, :3] = 2  # lab[3:, 3:] = 0 has no ratio -> trapezoid fallback
    tacs = vk.region_time_activity(lab, maps, [1, 2])
    np.testing.assert_allclose(tacs[:, 0], maps[:, :3].sum(axis=(1, 2, 3)), rtol=1e-13)
    region_tia, _ = vk.integrate_curves(T, tacs, LAM_LU, method="mono_exp")
    ratios = {1: region_tia[0] / tacs[2, 0], 2: region_tia[1] / tacs[2, 1]}
    r = vk.voxel_tia(T, maps, LAM_LU, method="region_scaled", label_map=lab,
                     region_tia_per_activity_h=ratios, reference_index=2)
    np.testing.assert_allclose(r.tia_map_mbq_h[lab == 1], maps[2][lab == 1] * ratios[1], rtol=1e-14)
    np.testing.assert_allclose(r.tia_map_mbq_h[lab == 2], maps[2][lab == 2] * ratios[2], rtol=1e-14)
    # region totals preserved: sum of voxel TIAs in a region = the region TIA
    assert r.tia_map_mbq_h[lab == 1].sum() == pytest.approx(region_tia[0], rel=1e-12)
    trap = vk.voxel_tia(T, maps, LAM_LU, method="trapezoid").tia_map_mbq_h
    np.testing.assert_allclose(r.tia_map_mbq_h[lab == 0], trap[lab == 0], rtol=1e-14)
    assert np.all(r.method_map[lab == 0] == vk.METHOD_REGION_FALLBACK)
    assert np.all(r.method_map[lab > 0] == vk.METHOD_REGION)


def test_input_errors():
    maps, _, _ = _mono_maps((2, 2, 2))
    with pytest.raises(InputError, match="one time per map"):
        vk.voxel_tia(T[:3], maps, LAM_LU)
    with pytest.raises(InputError, match="increasing"):
        vk.voxel_tia(T[::-1], maps, LAM_LU)
    with pytest.raises(InputError, match="n_fit"):
        vk.voxel_tia(T, maps, LAM_LU, n_fit=1)
    with pytest.raises(InputError, match="mask"):
        vk.voxel_tia(T, maps, LAM_LU, mask=np.ones((2, 2, 3), dtype=bool))
    with pytest.raises(InputError, match="region_scaled"):
        vk.voxel_tia(T, maps, LAM_LU, method="region_scaled")
    with pytest.raises(InputError, match="decay_constant"):
        vk.voxel_tia(T, maps, 0.0)


def test_threads_do_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(8)
    maps, _, _ = _mono_maps((10, 11, 12), seed=8)
    maps = maps * rng.normal(1.0, 0.2, maps.shape)
    monkeypatch.setattr(vk, "CHUNK_VOXELS", 100)
    one = vk.voxel_tia(T, maps, LAM_LU, method="mono_exp", workers=1)
    two = vk.voxel_tia(T, maps, LAM_LU, method="mono_exp", workers=2)
    np.testing.assert_array_equal(one.tia_map_mbq_h, two.tia_map_mbq_h)
    np.testing.assert_array_equal(one.method_map, two.method_map)


def test_region_index_sums_and_grouping():
    rng = np.random.default_rng(9)
    lab = rng.integers(0, 4, (7, 8, 9)).astype(np.uint8)
    m = rng.random(lab.shape)
    idx = vk.RegionIndex.build(lab, [3, 1, 9])  # 9 is absent: an empty region
    np.testing.assert_allclose(idx.sums(m), [m[lab == 3].sum(), m[lab == 1].sum(), 0.0], rtol=1e-13)
    assert idx.counts.tolist() == [(lab == 3).sum(), (lab == 1).sum(), 0]
    seg = idx.order[idx.offsets[0]:idx.offsets[1]]
    np.testing.assert_array_equal(seg, np.flatnonzero(lab.reshape(-1) == 3))  # increasing order
    maps = np.stack([m, 2 * m])
    np.testing.assert_allclose(vk.region_time_activity(None, maps, index=idx),
                               vk.region_time_activity(lab, maps, [3, 1, 9]), rtol=1e-15)
    with pytest.raises(InputError, match="grid"):
        idx.sums(np.ones((2, 2, 2)))


def test_region_index_passes_and_sort_give_the_same_grouping(monkeypatch):
    # few regions: one pass per region; many: one radix sort; same order and offsets either way
    rng = np.random.default_rng(10)
    lab = rng.integers(0, 30, (9, 10, 11)).astype(np.int16)
    for labels in ([3, 1, 9, 2], list(range(1, 29)), [5, 300, 7]):
        by_passes = vk.RegionIndex.build(lab, labels)
        monkeypatch.setattr(vk, "PER_REGION_PASSES_MAX", 0)
        by_sort = vk.RegionIndex.build(lab, labels)
        monkeypatch.undo()
        for f in ("labels", "order", "offsets"):
            np.testing.assert_array_equal(getattr(by_passes, f), getattr(by_sort, f))
        for i, v in enumerate(labels):  # independent: a mask per region
            np.testing.assert_array_equal(by_passes.order[by_passes.offsets[i]:by_passes.offsets[i + 1]],
                                          np.flatnonzero(lab.reshape(-1) == v))
    # a label beyond the map's integer type is simply absent
    idx = vk.RegionIndex.build(lab.astype(np.uint8), [300, 4])
    assert idx.counts.tolist() == [0, int((lab == 4).sum())]
    with pytest.raises(InputError, match="distinct"):
        vk.RegionIndex.build(lab, [1, 2, 1])


def test_fit_fallback_voxels_get_the_trapezoid_and_counts():
    # mixed fitted / clamped / fallback voxels in one call: the fallback voxels carry exactly the
    # trapezoid + physical tail of their own curve, the others the fit
    rng = np.random.default_rng(3)
    a0 = rng.uniform(0.5, 20.0, 40)
    lam = rng.uniform(LAM_LU * 1.5, 0.05, 40)
    maps = a0[None] * np.exp(-lam[None] * T[:, None])
    maps[:, 5] = [1.0, 2.0, 3.0, 4.0]  # rising: fallback
    maps[2, 7] = 0.0  # a point at the noise floor: fallback
    maps[:, 9] = 5.0 * np.exp(-0.5 * LAM_LU * T)  # slower than physical decay: clamped
    r = vk.voxel_tia(T, maps, LAM_LU, method="mono_exp")
    trap = vk.voxel_tia(T, maps, LAM_LU, method="trapezoid").tia_map_mbq_h
    assert r.method_map[5] == vk.METHOD_FIT_FALLBACK and r.method_map[7] == vk.METHOD_FIT_FALLBACK
    assert r.method_map[9] == vk.METHOD_FIT_CLAMPED
    assert r.tia_map_mbq_h[5] == trap[5] and r.tia_map_mbq_h[7] == trap[7]
    others = np.setdiff1d(np.arange(40), [5, 7, 9])
    np.testing.assert_allclose(r.tia_map_mbq_h[others], a0[others] / lam[others], rtol=1e-12)
    assert dict(r.counts) == {vk.METHOD_FIT: 37, vk.METHOD_FIT_CLAMPED: 1, vk.METHOD_FIT_FALLBACK: 2}
    masked = vk.voxel_tia(T, maps, LAM_LU, method="mono_exp", mask=np.arange(40) < 30)
    assert dict(masked.counts) == {vk.METHOD_OUTSIDE: 10, vk.METHOD_FIT: 27, vk.METHOD_FIT_CLAMPED: 1,
                                   vk.METHOD_FIT_FALLBACK: 2}
