"""Resampling onto another grid in patient space (mrtdose.imaging.resample).

Geometry follows DICOM PS3.3 C.7.6.2.1.1 (index -> LPS mm via the direction cosines); grids that
coincide, are shifted by whole voxels or flipped are sampled exactly (no tolerance needed).
"""

from __future__ import annotations

import numpy as np
import pytest

from mrtdose.errors import InputError
from mrtdose.imaging.resample import resample
from mrtdose.imaging.volume import Volume

RNG = np.random.default_rng(11)


def _rotation(axis, angle):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _vol(arr, spacing=(2.0, 3.0, 4.0), origin=(-20.0, 10.0, 50.0), direction=np.eye(3), unit="Bq/mL"):
    return Volume(array=arr, spacing_mm=spacing, origin_mm=origin, direction=direction, unit=unit, modality="NM")


@pytest.mark.parametrize("interp", ["nearest", "linear", "fractional"])
def test_identity_same_grid_is_identical(interp):
    v = _vol(RNG.random((5, 6, 7)) * 100)
    out = resample(v, v, interpolation=interp)
    assert out.same_grid(v, atol_mm=0)
    np.testing.assert_array_equal(out.array, v.array)
    assert out.unit == v.unit


def test_identity_keeps_boolean_dtype_with_nearest():
    m = _vol(RNG.random((4, 5, 6)) > 0.5, unit="1")
    out = resample(m, m, interpolation="nearest")
    assert out.array.dtype == bool
    np.testing.assert_array_equal(out.array, m.array)


@pytest.mark.parametrize("direction", [np.eye(3), _rotation([1, 2, 3], 0.4)], ids=["axial", "oblique"])
@pytest.mark.parametrize("interp", ["nearest", "linear"])
def test_shift_by_one_voxel(direction, interp):
    v = _vol(RNG.random((5, 6, 7)) * 100, direction=direction)
    # reference grid moved by +1 voxel along i (x): its voxel i is the moving voxel i + 1
    shift = direction[:, 0] * v.spacing_mm[0]
    ref = _vol(np.zeros(v.shape), origin=np.asarray(v.origin_mm) + shift, direction=direction)
    out = resample(v, ref, interpolation=interp, fill_value=-1.0)
    np.testing.assert_allclose(out.array[:, :, :-1], v.array[:, :, 1:], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out.array[:, :, -1], -1.0)  # outside the moving field of view


def test_flipped_axes_sample_the_same_voxels():
    v = _vol(RNG.random((3, 4, 5)))
    ni = v.shape[2]
    far = v.index_to_physical((ni - 1, 0, 0))
    ref = _vol(np.zeros(v.shape), origin=far, direction=np.diag([-1.0, 1.0, 1.0]))
    out = resample(v, ref, interpolation="nearest")
    np.testing.assert_array_equal(out.array, v.array[:, :, ::-1])


def test_linear_is_midpoint_half_a_voxel_off():
    arr = np.zeros((1, 1, 4))
    arr[0, 0] = [0.0, 10.0, 20.0, 30.0]
    v = _vol(arr, spacing=(2.0, 2.0, 2.0), origin=(0, 0, 0))
    ref = _vol(np.zeros((1, 1, 3)), spacing=(2.0, 2.0, 2.0), origin=(1.0, 0, 0))
    np.testing.assert_allclose(resample(v, ref, interpolation="linear").array[0, 0], [5.0, 15.0, 25.0])


def test_fractional_occupancy_on_a_coarser_grid_preserves_volume_exactly():
    # 1 mm mask of a 5x7x9 box, onto a 2 mm grid aligned with it: with 4 sub-points per axis the
    # sub-points never fall on a fine voxel boundary, each fine voxel gets 2x2x2 of them, so the
    # occupancy is the exact fraction and the volume is conserved exactly.
    fine = np.zeros((16, 16, 16), dtype=bool)
    fine[3:8, 2:9, 5:14] = True
    m = _vol(fine, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), unit="1")
    ref = _vol(np.zeros((8, 8, 8)), spacing=(2.0, 2.0, 2.0), origin=(0.5, 0.5, 0.5), unit="1")
    occ = resample(m, ref, interpolation="fractional", supersample=4).array
    assert occ.min() >= 0 and occ.max() <= 1
    assert occ.sum() * 8.0 == pytest.approx(fine.sum() * 1.0, abs=1e-12)
    np.testing.assert_array_equal(occ * 8, np.rint(occ * 8))  # multiples of 1/8: whole fine voxels


def test_conserve_total_on_downsampling():
    # A small hot Gaussian blob on a 1 mm grid, sampled onto a 3.3 mm grid: plain linear sampling
    # changes the total; conserve="total" restores it to round-off (the blob is well inside both
    # fields of view, where the rescaling is valid).
    z, y, x = np.mgrid[0:40, 0:40, 0:40].astype(float)
    blob = 1e5 * np.exp(-((x - 20.3) ** 2 + (y - 19.6) ** 2 + (z - 20.1) ** 2) / (2 * 2.0**2))
    v = _vol(blob, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    ref = _vol(np.zeros((12, 12, 12)), spacing=(3.3, 3.3, 3.3), origin=(0.7, 0.4, 0.2))
    total = blob.sum() * v.voxel_volume_ml
    plain = resample(v, ref, interpolation="linear")
    assert abs(plain.array.sum() * ref.voxel_volume_ml / total - 1) > 1e-3  # sampling is not integration
    kept = resample(v, ref, interpolation="linear", conserve="total")
    assert kept.array.sum() * ref.voxel_volume_ml == pytest.approx(total, rel=1e-12)


def test_conserve_total_counts_only_the_reference_field_of_view():
    arr = np.ones((2, 2, 4))
    v = _vol(arr, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    ref = _vol(np.zeros((2, 2, 2)), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))  # half of v
    out = resample(v, ref, interpolation="nearest", conserve="total")
    np.testing.assert_allclose(out.array, 1.0)


def test_conserve_needs_a_concentration():
    v = _vol(np.ones((2, 2, 2)), unit="Gy")
    with pytest.raises(InputError, match="per mL"):
        resample(v, v, interpolation="linear", conserve="total")


def test_interpolation_is_required_and_checked():
    v = _vol(np.ones((2, 2, 2)))
    with pytest.raises(TypeError):
        resample(v, v)  # type: ignore[call-arg]
    with pytest.raises(InputError, match="interpolation"):
        resample(v, v, interpolation="cubic")  # type: ignore[arg-type]


def test_no_overlap_is_an_error():
    v = _vol(np.ones((3, 3, 3)))
    far = _vol(np.zeros((3, 3, 3)), origin=(500.0, 500.0, 500.0))
    with pytest.raises(InputError, match="does not overlap"):
        resample(v, far, interpolation="linear")


def test_no_overlap_detected_for_rotated_grids_whose_boxes_overlap():
    # a thin diagonal reference slab whose bounding box overlaps the moving image but no voxel does
    v = _vol(np.ones((1, 10, 10)), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    # the line x + y = 21 (LPS mm); the image extends to x + y = 9.5 + 9.5 = 19
    rot = _rotation([0, 0, 1], -np.pi / 4)
    ref = _vol(np.zeros((1, 1, 30)), spacing=(1.0, 1.0, 1.0), origin=(-3.0, 24.0, 0.0), direction=rot)
    corners = ref.corner_centres_mm()
    assert corners[:, 0].max() > 0 and corners[:, 1].min() < 9.5  # bounding boxes overlap
    with pytest.raises(InputError, match="does not overlap"):
        resample(v, ref, interpolation="nearest")


def test_smooth_field_linear_accuracy():
    # linear interpolation of a linear field is exact (inside the field of view)
    z, y, x = np.mgrid[0:10, 0:10, 0:10].astype(float)
    v = _vol(3 * x - 2 * y + z, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    rot = _rotation([1, 1, 1], 0.2)
    ref = _vol(np.zeros((4, 4, 4)), spacing=(1.1, 0.9, 1.0), origin=(3.0, 3.0, 3.0), direction=rot)
    out = resample(v, ref, interpolation="linear").array
    idx = np.stack(np.meshgrid(np.arange(4), np.arange(4), np.arange(4), indexing="ij"), -1)[..., ::-1]  # (k,j,i)->(i,j,k)
    p = ref.index_to_physical(idx.astype(float))
    np.testing.assert_allclose(out, 3 * p[..., 0] - 2 * p[..., 1] + p[..., 2], atol=1e-9)
