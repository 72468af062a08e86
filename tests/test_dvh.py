"""DVH metrics (mrtdose.dose.dvh) on hand-built dose maps with known answers.

D_x follows ICRU Report 83 (minimum dose to the hottest x % of the volume) with the discrete
rule k = ceil(x n / 100) hottest voxels (module docstring); the expected values below are
worked out by hand from that rule. Tolerances: exact arithmetic on small sets, 1e-12 relative.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from mrtdose.dose import dvh
from mrtdose.errors import InputError
from mrtdose.physics.radiobiology import bed


def _map_with_region():
    # 100 voxels in the region: doses 1..100 Gy (shuffled), zeros outside
    rng = np.random.default_rng(0)
    d = np.zeros((10, 10, 3))
    mask = np.zeros(d.shape, dtype=bool)
    mask[:, :, 1] = True
    d[mask] = rng.permutation(np.arange(1.0, 101.0))
    return d, mask


def test_known_dx_and_vx():
    d, mask = _map_with_region()
    m = dvh.dvh_metrics(d, mask, 0.2, thresholds_gy=(20.0, 50.5, 200.0))
    # hottest 2 % = the 2 hottest voxels (100, 99): D2 = 99; D5 = 96; D50 = 51; D70 = 31;
    # D90 = 11; D98 = 3
    assert dict(m.d_percent_gy) == {2.0: 99.0, 5.0: 96.0, 50.0: 51.0, 70.0: 31.0, 90.0: 11.0, 98.0: 3.0}
    # V20: doses >= 20 -> 81 voxels; V50.5 -> 50 voxels; V200 -> 0
    assert m.v_ml[20.0] == pytest.approx(81 * 0.2)
    assert m.v_percent[20.0] == pytest.approx(81.0)
    assert m.v_percent[50.5] == pytest.approx(50.0)
    assert m.v_ml[200.0] == 0.0
    assert (m.mean_gy, m.median_gy, m.min_gy, m.max_gy) == (50.5, 50.5, 1.0, 100.0)
    assert m.volume_ml == pytest.approx(20.0) and m.n_voxels == 100


def test_dx_definition_at_least_x_percent_receive_dx():
    rng = np.random.default_rng(3)
    vals = rng.gamma(2.0, 5.0, 997)
    dx = dvh.d_percent(vals, [1, 13.7, 50, 99.9, 100])
    for x, v in dx.items():
        frac = np.mean(vals >= v)
        assert frac >= x / 100 - 1e-12  # at least x % receive >= D_x
        # and D_x is the largest such dose: fewer than x % receive more than it
        assert np.mean(vals > v) < x / 100
    assert dx[100] == vals.min()


def test_uniform_dose_all_equal_and_eud_equals_dose():
    d = np.full((6, 7, 8), 12.5)
    m = dvh.dvh_metrics(d, None, 0.1, eud_alpha_per_gy=0.3)
    assert set(m.d_percent_gy.values()) == {12.5}
    assert m.eud_gy == pytest.approx(12.5, rel=1e-12)
    assert m.v_percent[10.0] == 100.0 and m.v_percent[20.0] == 0.0


def test_eud_two_level_closed_form_and_stability():
    # half the volume at 10 Gy, half at 30 Gy: EUD = -(1/a) ln((e^{-10a} + e^{-30a}) / 2)
    d = np.array([10.0] * 50 + [30.0] * 50)
    a = 0.4
    m = dvh.dvh_metrics(d, None, 1.0, eud_alpha_per_gy=a)
    assert m.eud_gy == pytest.approx(-math.log(0.5 * (math.exp(-10 * a) + math.exp(-30 * a))) / a, rel=1e-12)
    assert 10 < m.eud_gy < m.mean_gy  # cold spots dominate survival
    # very high doses: the naive sum underflows (exp(-2000) = 0), log-sum-exp does not
    m = dvh.dvh_metrics(d * 100, None, 1.0, eud_alpha_per_gy=2.0)
    assert m.eud_gy == pytest.approx(1000.0 + math.log(2) / 2.0, rel=1e-12)


def test_bed_statistics_and_eubed():
    d, mask = _map_with_region()
    p = dvh.BedParameters(alpha_beta_gy=2.6, g_factor=0.05, alpha_per_gy=0.2, tissue="kidney")
    m = dvh.dvh_metrics(d, mask, 0.2, bed_params=p)
    expected = bed(d[mask], 0.05, 2.6)  # radiobiology.bed, Dale 1985
    assert m.bed.mean_gy == pytest.approx(expected.mean(), rel=1e-12)
    assert m.bed.max_gy == pytest.approx(bed(100.0, 0.05, 2.6), rel=1e-12)
    eubed = -math.log(np.mean(np.exp(-0.2 * expected))) / 0.2
    assert m.bed.eud_gy == pytest.approx(eubed, rel=1e-10)
    # BED is monotonic in dose: D_x of BED = BED of D_x
    assert m.bed.d(90) == pytest.approx(bed(m.d(90), 0.05, 2.6), rel=1e-12)
    # per-voxel G map
    g = np.where(d > 50, 0.1, 0.02)
    mg = dvh.dvh_metrics(d, mask, 0.2, bed_params=dvh.BedParameters(2.6, g))
    dv_ = d[mask]
    assert mg.bed.mean_gy == pytest.approx(np.mean(dv_ + g[mask] * dv_**2 / 2.6), rel=1e-12)
    # uniform dose: EUBED = BED
    mu = dvh.dvh_metrics(np.full(10, 20.0), None, 1.0, bed_params=p)
    assert mu.bed.eud_gy == pytest.approx(bed(20.0, 0.05, 2.6), rel=1e-12)


def test_mass_weighted_mean():
    d = np.array([1.0, 3.0])
    m = dvh.dvh_metrics(d, None, 1.0, density_map_g_per_ml=np.array([1.0, 3.0]))
    assert m.mean_gy == 2.0
    assert m.mass_weighted_mean_gy == pytest.approx((1 * 1 + 3 * 3) / 4.0)


def test_by_label_equals_per_mask():
    rng = np.random.default_rng(5)
    d = rng.gamma(2.0, 4.0, (12, 13, 14))
    lab = rng.integers(0, 5, d.shape).astype(np.int16)
    rho = rng.uniform(0.9, 1.1, d.shape)
    g = rng.uniform(0.01, 0.2, d.shape)
    p = dvh.BedParameters(3.0, g, alpha_per_gy=0.3)
    opts = dict(thresholds_gy=(5.0, 10.0), eud_alpha_per_gy=0.2, bed_params=p, density_map_g_per_ml=rho)
    by = dvh.dvh_metrics_by_label(d, lab, [4, 1, 2], 0.3, **opts)
    for label in (4, 1, 2):
        ref = dvh.dvh_metrics(d, lab == label, 0.3, **opts)
        got = by[label]
        assert got.d_percent_gy == ref.d_percent_gy and got.v_ml == ref.v_ml
        for f in ("mean_gy", "median_gy", "eud_gy", "mass_weighted_mean_gy"):
            assert getattr(got, f) == pytest.approx(getattr(ref, f), rel=1e-12)
        assert got.bed.eud_gy == pytest.approx(ref.bed.eud_gy, rel=1e-12)


def test_cumulative_dvh():
    d, mask = _map_with_region()
    c = dvh.cumulative_dvh(d, mask, 0.2, bins=[0.0, 1.0, 1.5, 50.0, 100.0, 101.0])
    np.testing.assert_allclose(c.volume_fraction, [1.0, 1.0, 0.99, 0.51, 0.01, 0.0])
    np.testing.assert_allclose(c.volume_ml, c.volume_fraction * 20.0)
    c = dvh.cumulative_dvh(d, mask, 0.2, bins=100)
    assert c.dose_gy[0] == 0 and c.dose_gy[-1] == 100.0 and c.volume_fraction[0] == 1.0
    assert np.all(np.diff(c.volume_fraction) <= 0)


def test_json_and_csv_text():
    d, mask = _map_with_region()
    m = dvh.dvh_metrics(d, mask, 0.2, eud_alpha_per_gy=0.1,
                        bed_params=dvh.BedParameters(2.6, 0.05, 0.2))
    js = m.to_json()
    json.dumps(js)  # serialisable
    assert js["mean"] == {"value": 50.5, "uncertainty": None, "unit": "Gy", "method": "volume-weighted mean"}
    assert js["D"]["D90"]["value"] == 11.0 and js["D"]["D90"]["uncertainty"] is None
    assert js["V"]["V20Gy"]["volume_percent"]["value"] == 81.0
    assert "not propagated" in js["notes"][0]
    assert js["bed"]["eubed"]["unit"] == "Gy"
    text = dvh.metrics_csv({"kidney": m, "liver": m})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2 and float(rows[0]["D50_gy"]) == 51.0 and float(rows[1]["V20Gy_percent"]) == 81.0
    text = dvh.dvh_csv({"kidney": dvh.cumulative_dvh(d, mask, 0.2, bins=4)})
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["region", "dose_gy", "volume_fraction", "volume_ml"] and len(rows) == 6


def test_errors():
    d, mask = _map_with_region()
    with pytest.raises(InputError, match="no voxels"):
        dvh.dvh_metrics(d, np.zeros_like(mask), 0.2)
    with pytest.raises(InputError, match="shape"):
        dvh.dvh_metrics(d, mask[:5], 0.2)
    with pytest.raises(InputError, match="boolean"):
        dvh.dvh_metrics(d, mask.astype(int), 0.2)
    with pytest.raises(InputError, match="G factor"):
        dvh.BedParameters(2.6, 1.5)
    with pytest.raises(InputError, match=r"\(0, 100\]"):
        dvh.dvh_metrics(d, mask, 0.2, d_percents=(0,))


@pytest.mark.parametrize("g", [0.0, 0.07, "map"])
def test_order_statistics_and_volumes_against_a_direct_count(g):
    # D_x, median, min, max and V_D of the dose and of the BED (one sort of the doses; BED
    # order statistics from the sorted doses when G is one value) against a direct evaluation
    # of the definitions on the BED values of radiobiology.bed; ties and thresholds equal to
    # voxel values included
    rng = np.random.default_rng(12)
    d = np.round(rng.gamma(2.0, 6.0, 1001), 1)  # many ties
    gv = rng.uniform(0.0, 0.3, d.size) if g == "map" else g
    th = (float(d[3]), float(d[10]), 0.0, 12.3, 1e3)
    pc = (1.0, 2.0, 33.3, 50.0, 97.0, 100.0)
    m = dvh.dvh_metrics(d, None, 0.5, thresholds_gy=th, d_percents=pc,
                        bed_params=dvh.BedParameters(2.6, gv, alpha_per_gy=0.25))
    bed_ref = d + gv * d**2 / 2.6 if g == "map" else bed(d, gv, 2.6)  # Dale 1985
    for q, vals in ((m, d), (m.bed, bed_ref)):
        for x in pc:  # the k = ceil(x n / 100)-th largest value
            k = max(1, math.ceil(round(x * vals.size / 100.0, 9)))
            assert q.d(x) == pytest.approx(np.sort(vals)[::-1][k - 1], rel=1e-14, abs=0)
        for t in th:
            assert q.v_ml[t] == 0.5 * np.count_nonzero(vals >= t)
        assert q.min_gy == pytest.approx(vals.min(), rel=1e-14) and q.max_gy == pytest.approx(vals.max(), rel=1e-14)
        assert q.median_gy == pytest.approx(np.median(vals), rel=1e-14)
