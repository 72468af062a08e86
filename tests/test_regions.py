"""Regions: label maps, region statistics, body/remainder masks, lesion thresholding and growing.

Ground truth is analytic: uniform phantoms whose totals follow from voxel counts x voxel volume
(exact to round-off), and voxelised spheres whose voxel counts are known by construction.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrtdose.errors import InputError
from mrtdose.imaging.nifti import write_nifti
from mrtdose.imaging.regions import (
    LabelMap,
    body_mask,
    box_mask,
    read_label_map,
    region_grow,
    region_statistics,
    remainder_mask,
    threshold_in_box,
)
from mrtdose.imaging.volume import Volume


def _vol(arr, spacing=(2.0, 2.0, 2.0), unit="Bq/mL", origin=(0.0, 0.0, 0.0), modality="NM"):
    return Volume(array=arr, spacing_mm=spacing, origin_mm=origin, unit=unit, modality=modality)


# ---------------------------------------------------------------- label maps


def _labels():
    arr = np.zeros((4, 5, 6), dtype=np.int16)
    arr[1:3, 1:3, 1:3] = 1
    arr[0, 4, 5] = 7
    return _vol(arr, unit="1", modality="LABEL")


def test_label_map_masks_by_name():
    lm = LabelMap(_labels(), {"liver": 1, "lesion_1": 7})
    masks = lm.masks()
    assert masks["liver"].sum() == 8 and masks["lesion_1"].sum() == 1
    assert lm.present_labels == [1, 7]


def test_label_map_errors():
    with pytest.raises(InputError, match="not in the label mapping.*liver"):
        LabelMap(_labels(), {"liver": 1}).mask("spleen")
    with pytest.raises(InputError, match="empty.*labels present: \\[1, 7\\]"):
        LabelMap(_labels(), {"spleen": 3}).mask("spleen")
    with pytest.raises(InputError, match="share a label"):
        LabelMap(_labels(), {"a": 1, "b": 1})
    with pytest.raises(InputError, match="non-zero"):
        LabelMap(_labels(), {"a": 0})
    with pytest.raises(InputError, match="integers"):
        LabelMap(_vol(np.full((1, 1, 2), 0.5), unit="1"), {"a": 1})


def test_read_label_map_from_nifti(tmp_path):
    p = tmp_path / "labels.nii"
    p.write_bytes(write_nifti(_labels()))
    lm = read_label_map(p, {"liver": 1})
    assert lm.volume.same_grid(_labels())
    np.testing.assert_array_equal(lm.mask("liver"), _labels().array == 1)


# ---------------------------------------------------------------- statistics


def test_region_statistics_uniform_cube():
    c = np.full((12, 12, 12), 50.0)
    c[1:11, 1:11, 1:11] = 1000.0
    act = _vol(c)  # 2 mm voxels: 0.008 mL
    mask = np.zeros(c.shape, dtype=bool)
    mask[1:11, 1:11, 1:11] = True
    rho = act.with_array(np.full(c.shape, 1.05), unit="g/mL")
    s = region_statistics(act, mask, name="cube", density=rho)
    assert s.voxel_count == 1000
    assert s.volume_ml == pytest.approx(8.0, rel=1e-12)
    assert s.total_activity_mbq == pytest.approx(1000.0 * 8.0 / 1e6, rel=1e-12)
    assert s.mean_bq_per_ml == pytest.approx(1000.0) and s.max_bq_per_ml == 1000.0
    assert s.mass_g == pytest.approx(8.4, rel=1e-12) and s.mean_density_g_per_ml == pytest.approx(1.05)


def test_region_statistics_fractional_mask_and_units():
    act = _vol(np.full((2, 2, 2), 3.0), spacing=(10.0, 10.0, 10.0), unit="kBq/mL")  # 1 mL voxels
    w = np.zeros((2, 2, 2))
    w[0, 0, 0], w[1, 1, 1] = 1.0, 0.5
    s = region_statistics(act, w)
    assert s.voxel_count == 2 and s.volume_ml == pytest.approx(1.5)
    assert s.total_activity_mbq == pytest.approx(1.5 * 3000 / 1e6)
    assert s.mass_g is None


def test_region_statistics_errors():
    act = _vol(np.ones((2, 2, 2)))
    with pytest.raises(InputError, match="empty"):
        region_statistics(act, np.zeros((2, 2, 2), dtype=bool), name="kidney")
    with pytest.raises(InputError, match="another grid"):
        region_statistics(act, np.ones((2, 2, 3), dtype=bool))
    other = _vol(np.ones((2, 2, 2), dtype=bool), origin=(1.0, 0.0, 0.0), unit="1")
    with pytest.raises(InputError, match="another grid"):
        region_statistics(act, other)
    with pytest.raises(InputError, match="occupancies"):
        region_statistics(act, np.full((2, 2, 2), 2.0))
    with pytest.raises(InputError, match="concentration"):
        region_statistics(act.with_array(act.array, unit="Gy"), np.ones((2, 2, 2), dtype=bool))
    with pytest.raises(InputError, match="another grid"):
        region_statistics(act, np.ones((2, 2, 2), dtype=bool), density=other.with_array(np.ones((2, 2, 2)), unit="g/mL"))


def test_region_statistics_accepts_mask_volume_on_same_grid():
    act = _vol(np.ones((2, 2, 2)))
    m = act.with_array(np.ones((2, 2, 2), dtype=bool), unit="1")
    assert region_statistics(act, m).voxel_count == 8


# ---------------------------------------------------------------- body and remainder


def _synthetic_ct():
    """Air, an elliptic-cylinder body (40 HU) with two lungs (-850 HU) running through every
    slice (so they reach the array's top and bottom faces and a 3D fill cannot close them), a
    spine (700 HU) and a separate couch (+100 HU) below the body."""
    nk, nj, ni = 10, 64, 64
    z, y, x = np.mgrid[0:nk, 0:nj, 0:ni].astype(float)
    ct = np.full((nk, nj, ni), -1000.0)
    body = ((x - 32) / 26) ** 2 + ((y - 28) / 18) ** 2 <= 1
    ct[body] = 40.0
    for cx in (20, 44):
        ct[((x - cx) / 8) ** 2 + ((y - 26) / 10) ** 2 <= 1] = -850.0
    ct[((x - 32) / 3) ** 2 + ((y - 40) / 3) ** 2 <= 1] = 700.0
    ct[:, 50:53, 4:60] = 100.0  # couch, 3 voxels below the body's lowest row (46)
    ct += np.random.default_rng(3).normal(0, 10, ct.shape)
    return _vol(ct, spacing=(3.0, 3.0, 3.0), unit="HU", modality="CT"), body


def test_body_mask_fills_lungs_and_drops_couch():
    ct, body = _synthetic_ct()
    m = body_mask(ct)
    np.testing.assert_array_equal(m, body)


def test_remainder_of_body():
    ct, body = _synthetic_ct()
    m = body_mask(ct)
    organ = np.zeros_like(m)
    organ[:, 20:30, 20:30] = True
    rest = remainder_mask(m, {"liver": organ})
    assert rest.sum() == m.sum() - (m & organ).sum()
    assert not (rest & organ).any()
    with pytest.raises(InputError, match="empty"):
        remainder_mask(m, [m])
    with pytest.raises(InputError, match="another grid"):
        remainder_mask(m, {"liver": organ[:-1]})


def test_body_mask_errors():
    with pytest.raises(InputError, match="empty body"):
        body_mask(_vol(np.full((2, 2, 2), -1000.0), unit="HU"))
    with pytest.raises(InputError, match="HU"):
        body_mask(_vol(np.zeros((2, 2, 2))))


# ---------------------------------------------------------------- lesions


def _sphere_phantom(radius_mm=20.0, spacing=2.0, n=48, centre=(47.0, 47.0, 47.0), value=1000.0, background=0.0):
    # voxel centres at index * spacing; sphere membership by voxel centre
    k, j, i = np.mgrid[0:n, 0:n, 0:n].astype(float) * spacing
    inside = (i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2 <= radius_mm**2
    arr = np.where(inside, value, background)
    return _vol(arr, spacing=(spacing, spacing, spacing)), inside


def test_threshold_recovers_unblurred_sphere_exactly():
    img, inside = _sphere_phantom(background=50.0)
    box = box_mask(img, (47.0, 47.0, 47.0), 30.0)
    m = threshold_in_box(img, box, fraction_of_max=0.42)
    np.testing.assert_array_equal(m, inside)
    np.testing.assert_array_equal(threshold_in_box(img, box, absolute=500.0), inside)


def test_threshold_on_blurred_sphere_volume_within_tolerance():
    # Uniform sphere R = 20 mm blurred by a Gaussian PSF sigma = 3 mm (FWHM 7 mm), 2 mm voxels.
    # At a straight edge the 50 % iso-level of a blurred step sits exactly at the edge; the
    # sphere's curvature moves it inward by about sigma^2 / R = 0.45 mm, i.e. a volume deficit of
    # about 3 * 0.45 / 20 = 7 %, plus voxelisation (~ +-2 % at 2 mm on R = 20 mm). Tolerance: 10 %.
    img, inside = _sphere_phantom()
    blurred = img.with_array(ndimage.gaussian_filter(img.array, sigma=1.5), unit="Bq/mL")  # 1.5 voxels = 3 mm
    box = box_mask(blurred, (47.0, 47.0, 47.0), 35.0)
    m = threshold_in_box(blurred, box, fraction_of_max=0.5)
    v_true = 4 / 3 * np.pi * 20.0**3 / 1000  # 33.51 mL
    v = m.sum() * blurred.voxel_volume_ml
    assert abs(v / v_true - 1) < 0.10


def test_threshold_keeps_component_with_max_only():
    img, inside = _sphere_phantom(radius_mm=10.0, centre=(30.0, 30.0, 30.0))
    arr = img.array.copy()
    arr[2:4, 2:4, 2:4] = 900.0  # another hot spot inside the box, not connected
    img = img.with_array(arr, unit="Bq/mL")
    box = np.ones(img.shape, dtype=bool)
    assert threshold_in_box(img, box, fraction_of_max=0.5).sum() == inside.sum()
    assert threshold_in_box(img, box, fraction_of_max=0.5, connected_to_max=False).sum() == inside.sum() + 8


def test_threshold_errors():
    img, _ = _sphere_phantom(radius_mm=6.0, n=12, centre=(11.0, 11.0, 11.0))
    box = np.ones(img.shape, dtype=bool)
    with pytest.raises(InputError, match="exactly one"):
        threshold_in_box(img, box)
    with pytest.raises(InputError, match="fraction_of_max"):
        threshold_in_box(img, box, fraction_of_max=1.5)
    with pytest.raises(InputError, match="empty"):
        threshold_in_box(img, np.zeros(img.shape, dtype=bool), fraction_of_max=0.4)
    with pytest.raises(InputError, match="no voxel"):
        threshold_in_box(img, box, absolute=1e9)
    with pytest.raises(InputError, match="another grid"):
        threshold_in_box(img, box[:-1], absolute=1.0)
    with pytest.raises(InputError, match="does not overlap"):
        box_mask(img, (500.0, 0.0, 0.0), 5.0)


def test_box_mask_physical():
    v = _vol(np.zeros((10, 10, 10)), spacing=(2.0, 2.0, 2.0), origin=(-9.0, -9.0, -9.0))
    m = box_mask(v, (0.0, 0.0, 0.0), 2.5)  # centres at -9, -7, ..., 9: |c| <= 2.5 -> -1, 1
    assert m.sum() == 2**3
    assert box_mask(v, (0.0, 0.0, 0.0), 3.0).sum() == 4**3  # a centre on the box face is inside
    m = box_mask(v, (0.0, 0.0, 0.0), (5.0, 1.0, 1.0))  # x: -5..5 -> -5,-3,-1,1,3,5 = 6 centres
    assert m.sum() == 6 * 2 * 2


def test_region_grow_sphere_and_6_connectivity():
    img, inside = _sphere_phantom(radius_mm=10.0, n=24, centre=(23.0, 23.0, 23.0))
    arr = img.array.copy()
    arr[0, 0, 0] = arr[1, 1, 0] = 1000.0  # touching only along an edge: not 6-connected
    img = img.with_array(arr, unit="Bq/mL")
    m = region_grow(img, (11, 11, 11), lower=500.0)
    np.testing.assert_array_equal(m, inside)
    corner = region_grow(img, (0, 0, 0), lower=500.0)
    assert corner.sum() == 1
    bounded = region_grow(img, (11, 11, 11), lower=500.0, within=box_mask(img, (23.0, 23.0, 23.0), 4.0))
    assert bounded.sum() == 4**3 and not (bounded & ~inside).any()  # centres 20, 22, 24, 26 mm per axis
    with pytest.raises(InputError, match="outside the growth bounds"):
        region_grow(img, (5, 0, 0), lower=500.0)
    with pytest.raises(InputError, match="outside the image"):
        region_grow(img, (99, 0, 0), lower=500.0)
