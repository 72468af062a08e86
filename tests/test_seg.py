"""DICOM Segmentation reading and writing (PS3.3 A.51; C.8.20 Segmentation modules; C.7.6.16
Multi-frame Functional Groups; C.7.6.17 Multi-frame Dimension).

Binary segments round-trip exactly; fractional (8-bit OCCUPANCY) ones to the quantisation step,
|error| <= 1 / (2 x Maximum Fractional Value).
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import SegmentationStorage

from mrtdose.errors import InputError
from mrtdose.imaging.seg import read_seg, seg_masks, write_seg
from mrtdose.imaging.volume import Volume

FOR_UID = "1.2.826.0.1.3680043.8.498.2"
RNG = np.random.default_rng(17)


def _rotation(axis, angle):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _ref(shape=(6, 20, 24), direction=np.eye(3), origin=(-100.25, 33.3, -412.7), spacing=(1.9, 2.1, 3.3)):
    return Volume(array=np.zeros(shape), spacing_mm=spacing, origin_mm=origin, direction=direction, unit="HU", modality="CT")


def _masks(shape):
    k, j, i = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    sphere = (i - 12) ** 2 + (j - 10) ** 2 + ((k - 3) * 2) ** 2 <= 30
    noise = RNG.random(shape) > 0.7
    noise[0] = False  # an empty slice: no frame for it
    return {"liver": sphere, "lesion": noise}


@pytest.mark.parametrize(
    "direction",
    [np.eye(3), np.diag([1.0, 1.0, -1.0]), np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]), _rotation([1, 2, 3], 0.4)],
    ids=["axial", "z-flipped", "coronal", "oblique"],
)
def test_binary_round_trip_is_exact(direction):
    ref = _ref(direction=direction)
    masks = _masks(ref.shape)
    back = seg_masks(write_seg(masks, ref, patient_id="P1", frame_of_reference_uid=FOR_UID), ref, frame_of_reference_uid=FOR_UID)
    assert set(back) == {"liver", "lesion"}
    for name, m in masks.items():
        assert back[name].dtype == bool
        np.testing.assert_array_equal(back[name], m)


def test_fractional_round_trip_within_quantisation():
    ref = _ref()
    occ = RNG.random(ref.shape)
    back = seg_masks(write_seg({"tumour": occ}, ref, patient_id="P1", segmentation_type="FRACTIONAL"), ref)["tumour"]
    assert back.dtype == np.float64
    assert np.max(np.abs(back - occ)) <= 0.5 / 255 + 1e-12


def test_written_attributes():
    ref = _ref()
    masks = _masks(ref.shape)
    ds = pydicom.dcmread(io.BytesIO(write_seg(masks, ref, patient_id="P1", frame_of_reference_uid=FOR_UID)))
    assert ds.SOPClassUID == SegmentationStorage and ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (1, 1, 0)
    n_frames = sum(int(np.count_nonzero(m.any(axis=(1, 2)))) for m in masks.values())
    assert int(ds.NumberOfFrames) == n_frames == len(ds.PerFrameFunctionalGroupsSequence)
    assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == [1, 2]
    assert ds.SegmentSequence[0].SegmentLabel == "liver"
    assert ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert [d.DimensionIndexPointer for d in ds.DimensionIndexSequence] == [0x0062000B, 0x00200032]
    f0 = ds.PerFrameFunctionalGroupsSequence[0]
    k0 = int(np.flatnonzero(masks["liver"].any(axis=(1, 2)))[0])
    assert list(f0.FrameContentSequence[0].DimensionIndexValues) == [1, k0 + 1]
    assert f0.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1
    np.testing.assert_allclose([float(x) for x in f0.PlanePositionSequence[0].ImagePositionPatient],
                               ref.index_to_physical((0, 0, k0)), atol=1e-9)  # first slice holding the liver
    assert ds.FrameOfReferenceUID == FOR_UID


def test_segment_name_mapping_and_missing_segment():
    ref = _ref()
    raw = write_seg(_masks(ref.shape), ref, patient_id="P1")
    m = seg_masks(raw, ref, {"Liver": "liver_whole"})  # case-insensitive label match
    assert set(m) == {"liver_whole"}
    with pytest.raises(InputError, match=r"'spleen' not found; available segments: \['liver', 'lesion'\]"):
        seg_masks(raw, ref, {"spleen": "spleen"})


def test_seg_on_a_sub_grid_is_placed_exactly():
    # a SEG written on a crop of the image grid (slices 2..4, rows 5..14, columns 3..20)
    ref = _ref()
    crop = _ref(shape=(3, 10, 18), origin=ref.index_to_physical((3, 5, 2)))
    small = RNG.random(crop.shape) > 0.5
    back = seg_masks(write_seg({"a": small}, crop, patient_id="P1"), ref)["a"]
    expect = np.zeros(ref.shape, dtype=bool)
    expect[2:5, 5:15, 3:21] = small
    np.testing.assert_array_equal(back, expect)


def test_frames_out_of_order_and_per_frame_orientation():
    # shuffle the frames and move the orientation into the per-frame groups: placement follows
    # Plane Position (Patient), not the frame order (fractional 8-bit pixels keep frames separable)
    ref = _ref()
    occ = np.zeros(ref.shape)
    occ[1:5] = RNG.random((4,) + ref.shape[1:])
    ds = pydicom.dcmread(io.BytesIO(write_seg({"t": occ}, ref, patient_id="P1", segmentation_type="FRACTIONAL")))
    nf = int(ds.NumberOfFrames)
    order = RNG.permutation(nf)
    pix = ds.pixel_array.reshape(nf, *ref.shape[1:])[order]
    iop = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    items = [copy.deepcopy(ds.PerFrameFunctionalGroupsSequence[int(o)]) for o in order]
    for it in items:
        it.PlaneOrientationSequence = copy.deepcopy(iop)
    del ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    ds.PerFrameFunctionalGroupsSequence = items
    ds.PixelData = pix.astype(np.uint8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    back = seg_masks(buf.getvalue(), ref)["t"]
    assert np.max(np.abs(back - occ)) <= 0.5 / 255 + 1e-12


def test_unaligned_grid_needs_explicit_interpolation():
    ref = _ref()
    m = _masks(ref.shape)["liver"]
    shifted = _ref(origin=np.asarray(ref.origin_mm) + [0.95, 0.0, 0.0])  # half a voxel in x
    raw = write_seg({"liver": m}, shifted, patient_id="P1")
    with pytest.raises(InputError, match="not aligned.*interpolation"):
        seg_masks(raw, ref)
    out = seg_masks(raw, ref, interpolation="fractional")["liver"]
    assert out.dtype == np.float64 and out.max() <= 1.0
    assert out.sum() == pytest.approx(m.sum(), rel=0.02)  # a shift does not change the volume (edge effects only)
    assert seg_masks(raw, ref, interpolation="nearest")["liver"].dtype == bool


def test_frame_of_reference_mismatch():
    ref = _ref()
    raw = write_seg(_masks(ref.shape), ref, patient_id="P1", frame_of_reference_uid=FOR_UID)
    with pytest.raises(InputError, match="Frame of Reference"):
        seg_masks(raw, ref, frame_of_reference_uid="1.2.3")


def test_no_overlap():
    ref = _ref()
    far = _ref(origin=(900.0, 900.0, 900.0))
    raw = write_seg(_masks(ref.shape), far, patient_id="P1")
    with pytest.raises(InputError, match="does not overlap"):
        seg_masks(raw, ref, interpolation="nearest")


def test_reader_errors(tmp_path):
    ref = _ref()
    ds = pydicom.dcmread(io.BytesIO(write_seg(_masks(ref.shape), ref, patient_id="P1")))
    bad = copy.deepcopy(ds)
    bad.SegmentationType = "LABELMAP"
    p = tmp_path / "seg.dcm"
    bad.save_as(p, enforce_file_format=True)
    with pytest.raises(InputError, match="LABELMAP") as ei:
        read_seg(p)
    assert str(p) in str(ei.value)
    bad = copy.deepcopy(ds)
    pos = bad.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    pos.ImagePositionPatient = [float(pos.ImagePositionPatient[0]) + 0.7] + list(pos.ImagePositionPatient[1:])
    bad.save_as(p, enforce_file_format=True)
    with pytest.raises(InputError, match="shifted in-plane"):
        read_seg(p)
    bad = copy.deepcopy(ds)
    bad.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    bad.save_as(p, enforce_file_format=True)
    with pytest.raises(InputError, match="not a DICOM Segmentation"):
        read_seg(p)
    bad = copy.deepcopy(ds)
    del bad.PerFrameFunctionalGroupsSequence[1].SegmentIdentificationSequence
    bad.save_as(p, enforce_file_format=True)
    with pytest.raises(InputError, match="frame 2 lacks"):
        read_seg(p)


def test_writer_errors():
    ref = _ref()
    ok = np.zeros(ref.shape, dtype=bool)
    ok[1, 1, 1] = True
    with pytest.raises(InputError, match="not binary"):
        write_seg({"a": ok * 0.5}, ref, patient_id="P1")
    with pytest.raises(InputError, match="empty"):
        write_seg({"a": ~np.ones(ref.shape, dtype=bool)}, ref, patient_id="P1")
    with pytest.raises(InputError, match="shape"):
        write_seg({"a": ok[1:]}, ref, patient_id="P1")
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        write_seg({"a": ok * 2.0}, ref, patient_id="P1", segmentation_type="FRACTIONAL")
