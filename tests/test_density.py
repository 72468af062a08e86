"""HU -> mass density calibration (mrtdose.imaging.density).

References: Hounsfield scale definition (air -1000 HU, water 0 HU); ICRU Report 44 cortical bone
(1.92 g/cm^3); published CT numbers of cortical bone at 120 kVp are about 1000-2000 HU depending
on scanner and filtration (e.g. Schneider et al. 2000, Phys Med Biol 45:459, fig. 3). Values at
the curve's points are checked exactly (1e-12); between points linear interpolation is checked
against hand arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest

from mrtdose.errors import InputError
from mrtdose.imaging.density import (
    BILINEAR_DEFAULT,
    DEFAULT_CURVE,
    BONE_POINT,
    bone_point,
    DensityCurve,
    density_curve_from_mapping,
    density_from_ct,
    load_density_curve,
)
from mrtdose.imaging.volume import Volume


def test_default_is_bilinear_through_cited_points():
    assert DEFAULT_CURVE is BILINEAR_DEFAULT
    c = BILINEAR_DEFAULT
    hb, rb = BONE_POINT
    np.testing.assert_allclose(c([-1000.0, 0.0, hb]), [1.21e-3, 1.0, 1.92], rtol=0, atol=1e-12)
    # soft-tissue line (air to water) and bone line (water to 1.92 g/mL at the bone point)
    assert c(-500.0) == pytest.approx((1.21e-3 + 1.0) / 2, abs=1e-12)
    assert c(800.0) == pytest.approx(1.0 + 800 * 0.92 / hb, abs=1e-12)
    # the bone line continues to 3071 HU, then is held
    assert c(3071.0) == pytest.approx(1.0 + 3071 * 0.92 / hb, abs=1e-12)
    assert c(4000.0) == c(3071.0)
    # below air (CT padding -1024 / -3024) reads as air
    assert c(-3024.0) == pytest.approx(1.21e-3)


def test_bone_point_is_plausible_ct_number():
    """Cortical bone at 120 kVp reads about 1000-2000 HU on clinical CT (Schneider et al. 2000,
    fig. 3); at 70 keV our attenuation data put ICRU-44 cortical bone in that range, and a harder
    beam (higher effective energy) lowers its CT number, as it must."""
    hu, rho = bone_point()
    assert rho == pytest.approx(1.92)
    assert 1300 < hu < 1800
    assert bone_point(0.09)[0] < hu < bone_point(0.06)[0]


def test_user_curve_from_yaml(tmp_path):
    p = tmp_path / "curve.yaml"
    p.write_text("name: site 120 kVp\nsource: CIRS 062M phantom 2025-02-11\npoints:\n  - [-1000, 0.0]\n  - [0, 1.0]\n  - [1000, 1.6]\n")
    c = load_density_curve(p)
    assert c.name == "site 120 kVp" and c.hu_range == (-1000.0, 1000.0)
    np.testing.assert_allclose(c([-1000, -250, 500, 2000]), [0.0, 0.75, 1.3, 1.6])


@pytest.mark.parametrize(
    "text, match",
    [
        ("name: x\npoints: [[0, 1], [10, 1.1]]\n", "source"),
        ("name: x\nsource: s\npoints: [[0, 1], [0, 1.1]]\n", "strictly increasing"),
        ("name: x\nsource: s\npoints: [[0, 1]]\n", "at least two"),
        ("name: x\nsource: s\npoints: [[0, -1], [10, 1]]\n", ">= 0"),
        ("name: x\nsource: s\npoints: [[0, 1, 2], [10, 1]]\n", "pairs"),
        ("name: x\nsource: s\npoints: [[0, 1], [10, 1]]\nextra: 1\n", "unknown keys"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_user_curves_name_the_file(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(InputError, match=match) as ei:
        load_density_curve(p)
    assert str(p) in str(ei.value)


def test_missing_curve_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_density_curve(tmp_path / "nope.yaml")


def test_curve_from_mapping_and_direct_validation():
    c = density_curve_from_mapping({"name": "a", "source": "b", "points": [[-1000, 0.001], [0, 1]]})
    assert c(0) == 1.0
    with pytest.raises(InputError, match="finite"):
        DensityCurve(hu=(0, np.nan), density_g_per_ml=(1, 1), name="n", source="s")


def test_density_from_ct():
    hu = np.array([[[-1000.0, 0.0, BONE_POINT[0], -500.0]]])
    ct = Volume(array=hu, spacing_mm=(1, 1, 2), unit="HU", modality="CT", origin_mm=(1, 2, 3))
    rho = density_from_ct(ct)
    assert rho.unit == "g/mL" and rho.same_grid(ct)
    np.testing.assert_allclose(rho.array[0, 0], [1.21e-3, 1.0, 1.92, (1.21e-3 + 1) / 2], atol=1e-12)
    assert "bilinear" in rho.description


def test_density_from_non_hu_is_an_error():
    v = Volume(array=np.zeros((1, 1, 1)), spacing_mm=(1, 1, 1), unit="Bq/mL")
    with pytest.raises(InputError, match="Hounsfield"):
        density_from_ct(v)
