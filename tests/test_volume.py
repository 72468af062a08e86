"""Volume: geometry conventions on hand-worked examples, validation, immutability."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from mrtdose.errors import InputError
from mrtdose.imaging.volume import Volume


def _vol(**kw):
    base = dict(array=np.zeros((2, 3, 4)), spacing_mm=(2.0, 3.0, 5.0), origin_mm=(-10.0, 0.0, 100.0), unit="Bq/mL")
    base.update(kw)
    return Volume(**base)


def test_index_order_and_identity_geometry_by_hand():
    # array[k, j, i]: shape (nk, nj, ni) = (2, 3, 4). Voxel (i, j, k) = (3, 2, 1):
    # x = -10 + 3*2 = -4, y = 0 + 2*3 = 6, z = 100 + 1*5 = 105 (identity direction).
    v = _vol()
    assert v.shape == (2, 3, 4)
    assert v.size_ijk == (4, 3, 2)
    np.testing.assert_allclose(v.index_to_physical((3, 2, 1)), [-4.0, 6.0, 105.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(v.physical_to_index((-4.0, 6.0, 105.0)), [3.0, 2.0, 1.0], rtol=0, atol=1e-12)
    # 2 x 3 x 5 mm = 30 mm^3 = 0.030 mL
    assert v.voxel_volume_ml == pytest.approx(0.030, rel=1e-12)


def test_flipped_and_rotated_direction_by_hand():
    # Columns: i runs toward -x (patient right), j toward +z (head), k toward +y (posterior);
    # a coronal-like frame. Voxel (1, 2, 3), spacing (2, 3, 5), origin (0, 0, 0):
    # p = 1*2*(-1,0,0) + 2*3*(0,0,1) + 3*5*(0,1,0) = (-2, 15, 6)
    d = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    v = _vol(origin_mm=(0.0, 0.0, 0.0), direction=d)
    np.testing.assert_allclose(v.index_to_physical((1, 2, 3)), [-2.0, 15.0, 6.0], atol=1e-12)
    np.testing.assert_allclose(v.physical_to_index((-2.0, 15.0, 6.0)), [1.0, 2.0, 3.0], atol=1e-12)


def test_oblique_round_trip_vectorised():
    # 30 degree rotation about z: columns (cos, sin, 0), (-sin, cos, 0), (0, 0, 1).
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    d = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    v = _vol(direction=d)
    # voxel (1, 0, 0) lies 2 mm along (cos30, sin30, 0) from the origin
    np.testing.assert_allclose(v.index_to_physical((1, 0, 0)), [-10.0 + 2 * c, 2 * s, 100.0], atol=1e-12)
    ijk = np.random.default_rng(0).uniform(-5, 5, size=(7, 5, 3))
    np.testing.assert_allclose(v.physical_to_index(v.index_to_physical(ijk)), ijk, atol=1e-12)


def test_affine_matches_index_to_physical():
    v = _vol()
    a = v.affine_lps
    np.testing.assert_allclose(a @ [3, 2, 1, 1], [-4.0, 6.0, 105.0, 1.0])


def test_same_grid():
    v = _vol()
    assert v.same_grid(_vol(origin_mm=(-10.0 + 5e-4, 0.0, 100.0)))
    assert not v.same_grid(_vol(origin_mm=(-10.0 + 2e-3, 0.0, 100.0)))
    assert not v.same_grid(_vol(spacing_mm=(2.0, 3.0, 5.01)))  # last slice (k = 1) moves 0.01 mm
    assert not v.same_grid(_vol(array=np.zeros((2, 3, 5))))
    flipped = np.diag([-1.0, 1.0, 1.0])
    assert not v.same_grid(_vol(direction=flipped))


def test_with_array_keeps_geometry_and_requires_unit():
    t = datetime(2026, 1, 6, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    v = _vol(acquisition_time=t, modality="nm")
    assert v.modality == "NM"
    w = v.with_array(np.ones((2, 3, 4)), unit="Gy")
    assert w.unit == "Gy" and w.same_grid(v, atol_mm=0.0) and w.acquisition_time == t and w.modality == "NM"
    assert v.with_array(np.ones((2, 3, 4)), unit="Gy", acquisition_time=None).acquisition_time is None
    with pytest.raises(TypeError):
        v.with_array(np.ones((2, 3, 4)))  # unit is required
    with pytest.raises(InputError, match="shape"):
        v.with_array(np.ones((2, 3, 5)), unit="Gy")


def test_array_is_an_immutable_copy():
    a = np.zeros((2, 3, 4))
    v = _vol(array=a)
    a[0, 0, 0] = 5.0
    assert v.array[0, 0, 0] == 0.0
    with pytest.raises(ValueError):
        v.array[0, 0, 0] = 1.0
    with pytest.raises(AttributeError):
        v.unit = "Gy"  # frozen


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(array=np.zeros((3, 4))), "3D"),
        (dict(array=np.zeros((0, 3, 4))), "no voxels"),
        (dict(array=np.zeros((2, 3, 4), dtype=complex)), "numeric"),
        (dict(spacing_mm=(2.0, 0.0, 5.0)), "positive"),
        (dict(spacing_mm=(2.0, 3.0)), "three numbers"),
        (dict(origin_mm=(0.0, np.nan, 0.0)), "finite"),
        (dict(direction=np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])), "orthonormal"),
        (dict(direction=np.eye(3) * 2.0), "orthonormal"),
        (dict(unit=""), "unit"),
        (dict(acquisition_time=datetime(2026, 1, 6, 10, 0)), "no time zone"),
    ],
)
def test_validation_errors(kw, match):
    with pytest.raises(InputError, match=match):
        _vol(**kw)


def test_validation_error_names_source_file():
    with pytest.raises(InputError) as ei:
        _vol(spacing_mm=(-1.0, 1.0, 1.0), source_files=("scan.nii",))
    assert ei.value.source == "scan.nii" and ei.value.field == "spacing_mm"


def test_repr_is_short():
    assert len(repr(_vol(array=np.zeros((50, 50, 50))))) < 400
