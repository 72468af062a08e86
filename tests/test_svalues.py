"""S-value sources: user tables (units, mass scaling), MIRD sum."""

from __future__ import annotations

import numpy as np
import pytest

from mrtdose.dose.mird import absorbed_dose_gy
from mrtdose.dose.svalues import RegionGeometry, TableSource, mass_scaled_self_s
from mrtdose.errors import InputError
from mrtdose.physics.nuclides import J_PER_MEV, get_nuclide


def test_mass_scaling_hand_worked():
    """Lu-177 (non-penetrating 0.14792 MeV per decay, ICRP-107): reference 300 g, tabulated
    S = 9.0e-11 Gy/(Bq s). Non-penetrating part E/m = 0.14792 * 1.602e-13 / 0.3 = 7.899e-11;
    photon part 1.101e-11. At 150 g: 7.899e-11 * 2 + 1.101e-11 * 2^(2/3) = 1.7546e-10."""
    f = mass_scaled_self_s(9.0e-11, 300.0, 0.14792313516289385)
    s_np = 0.14792313516289385 * J_PER_MEV / 0.3
    expected = s_np * 2 + (9.0e-11 - s_np) * 2 ** (2 / 3)
    assert float(f(np.array([150.0]))[0]) == pytest.approx(expected, rel=1e-12)
    assert float(f(np.array([300.0]))[0]) == pytest.approx(9.0e-11, rel=1e-12)


def _table(tmp_path, text, **kw):
    p = tmp_path / "s.csv"
    p.write_text(text)
    return TableSource(p, "test phantom", **kw)


def test_table_units_and_cross_dose(tmp_path):
    src = _table(
        tmp_path,
        "# comment line\n"
        "target,source,s_value_mgy_per_mbq_s,target_mass_g,uncertainty_pct\n"
        "Kidneys,Kidneys,0.09,300,8\n"
        "Liver,Kidneys,3.9e-4,,\n",
        names={"kidneys": "kidneys", "liver": "liver"},
    )
    lu = get_nuclide("Lu-177")
    regions = [RegionGeometry("kidneys", "organ", 300.0), RegionGeometry("liver", "organ", 1800.0)]
    terms = {(t.target, t.source): t for t in src.terms(lu, regions)}
    assert terms[("kidneys", "kidneys")].nominal_s_gy_per_bq_s == pytest.approx(9.0e-11)  # 0.09 mGy/(MBq s)
    assert terms[("kidneys", "kidneys")].model_uncertainty_rel == pytest.approx(0.08)
    cross = terms[("liver", "kidneys")]
    assert not cross.mass_dependent and cross.nominal_s_gy_per_bq_s == pytest.approx(3.9e-13)
    assert cross.model_uncertainty_rel == pytest.approx(0.10)  # default


@pytest.mark.parametrize(
    "text, match",
    [
        ("target,source,s_value\nA,A,1\n", "exactly one S-value column"),
        ("target,s_value_gy_per_bq_s\nA,1\n", "missing column 'source'"),
        ("target,source,s_value_gy_per_bq_s\nA,A,1e-10\n", "target_mass_g"),
        ("target,source,s_value_gy_per_bq_s,target_mass_g\nA,A,abc,300\n", "line 2, s_value_gy_per_bq_s"),
        ("target,source,s_value_gy_per_bq_s,target_mass_g\nA,A,-1,300\n", ">= 0"),
    ],
)
def test_table_errors(tmp_path, text, match):
    with pytest.raises(InputError, match=match):
        _table(tmp_path, text)


def test_mird_sum():
    """D = S @ A~ with 1 MBq h = 3.6e9 Bq s."""
    s = np.array([[1e-10, 2e-12], [3e-12, 5e-11]])
    a = np.array([1000.0, 500.0])
    d = absorbed_dose_gy(a, s)
    assert d == pytest.approx([3.6e9 * (1e-7 + 1e-9), 3.6e9 * (3e-9 + 2.5e-8)])
