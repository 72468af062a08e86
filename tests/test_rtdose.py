"""DICOM RT Dose writing and reading (PS3.3 A.18 RT Dose IOD, C.8.8.3 RT Dose Module).

Geometry must round-trip to 1e-6 mm (Decimal Strings keep ~11 significant digits at 250 mm);
values to the stated quantisation bound, |error| <= DoseGridScaling / 2 = max / (2 (2^32 - 1)).
"""

from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from mrtdose.errors import InputError
from mrtdose.imaging.rtdose import UINT32_MAX, read_rtdose, read_tia_rtdose, write_rtdose, write_tia_rtdose
from mrtdose.imaging.volume import Volume

RNG = np.random.default_rng(7)


def _dose(direction=np.eye(3), shape=(5, 6, 7), spacing=(2.1, 3.3, 4.7), origin=(-123.456789, 45.6, -789.012345678)):
    return Volume(array=RNG.random(shape) * 12.3, spacing_mm=spacing, origin_mm=origin, direction=direction, unit="Gy",
                  modality="RTDOSE", description="cycle 1")


def _write(dose, reference=None, **kw):
    args = dict(patient_id="P1", series_description="mrtdose test dose", allow_missing_reference=True)
    args.update(kw)
    return write_rtdose(dose, reference, **args)


def _rotation(axis, angle):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


GEOMETRIES = {
    "axial": np.eye(3),
    # i toward patient right, j toward head, k toward posterior: a flipped coronal frame whose
    # slice axis is opposite to row x column, so the Grid Frame Offset Vector decreases.
    "flipped-coronal": np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
    "z-flipped-axial": np.diag([1.0, 1.0, -1.0]),
    "oblique": _rotation([1, 2, 3], 0.4),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_round_trip_geometry_and_values(name):
    dose = _dose(direction=GEOMETRIES[name])
    back = read_rtdose(_write(dose))
    assert back.shape == dose.shape and back.unit == "Gy" and back.modality == "RTDOSE"
    assert back.same_grid(dose, atol_mm=1e-6)
    np.testing.assert_allclose(back.spacing_mm, dose.spacing_mm, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.origin_mm, dose.origin_mm, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.direction, dose.direction, rtol=0, atol=1e-12)
    err = np.abs(back.array - dose.array).max()
    assert err <= dose.array.max() / (2 * UINT32_MAX) * (1 + 1e-6)  # stated bound, < 1.2e-10 of max
    assert err / dose.array.max() < 1e-9
    assert back.description == "mrtdose test dose"


def test_required_attributes_with_pydicom():
    dose = _dose(direction=GEOMETRIES["flipped-coronal"])
    raw = _write(dose)
    assert raw[128:132] == b"DICM"  # PS3.10 7.1: 128-byte preamble then the prefix
    ds = pydicom.dcmread(io.BytesIO(raw))
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2"
    assert ds.Modality == "RTDOSE"
    assert ds.DoseUnits == "GY" and ds.DoseType == "PHYSICAL" and ds.DoseSummationType == "PLAN"
    assert float(ds.DoseGridScaling) > 0
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (6, 7, 5)
    assert len(ds.GridFrameOffsetVector) == int(ds.NumberOfFrames)
    assert float(ds.GridFrameOffsetVector[0]) == 0.0
    assert ds.FrameIncrementPointer == pydicom.tag.Tag(0x3004, 0x000C)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel) == (32, 32, 31, 0, 1)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    # Pixel Spacing is (row spacing = dy, column spacing = dx), PS3.3 C.7.6.2.1.1
    assert [float(x) for x in ds.PixelSpacing] == [3.3, 2.1]
    assert float(ds.SliceThickness) == 4.7
    for kw in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientName",
               "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
               "AccessionNumber", "SeriesNumber", "PositionReferenceIndicator", "Manufacturer", "InstanceNumber"):
        assert kw in ds, kw
    # the maximum dose uses (nearly) the full 32-bit range
    assert int(ds.pixel_array.max()) > 0.999 * UINT32_MAX
    assert int(ds.pixel_array.max()) <= UINT32_MAX


def test_geometry_independently_from_dicom_formula():
    # PS3.3 C.7.6.2.1.1 (eq. C.7.6.2.1-1): P = S + i*dc*X + j*dr*Y for column i, row j, with X the
    # row direction cosines, Y the column direction cosines, dc column spacing = PixelSpacing[1],
    # dr row spacing = PixelSpacing[0]; frame k adds offset[k] along X x Y (C.8.8.3.2).
    dose = _dose(direction=GEOMETRIES["oblique"])
    ds = pydicom.dcmread(io.BytesIO(_write(dose)))
    s = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    x, y = iop[:3], iop[3:]
    dr, dc = (float(v) for v in ds.PixelSpacing)
    off = [float(v) for v in ds.GridFrameOffsetVector]
    i, j, k = 6, 4, 3
    p = s + i * dc * x + j * dr * y + off[k] * np.cross(x, y)
    np.testing.assert_allclose(p, dose.index_to_physical((i, j, k)), atol=1e-6)
    # and the stored value of array[k, j, i] is that voxel's dose
    assert ds.pixel_array[k, j, i] * float(ds.DoseGridScaling) == pytest.approx(dose.array[k, j, i], abs=1e-8)


def test_decreasing_offsets_for_slice_axis_against_normal():
    ds = pydicom.dcmread(io.BytesIO(_write(_dose(direction=GEOMETRIES["z-flipped-axial"]))))
    off = [float(v) for v in ds.GridFrameOffsetVector]
    np.testing.assert_allclose(off, -4.7 * np.arange(5), atol=1e-9)


def test_reads_absolute_offsets_and_single_frame():
    dose = _dose(shape=(4, 3, 2))
    ds = pydicom.dcmread(io.BytesIO(_write(dose)))
    z0 = float(ds.ImagePositionPatient[2])
    ds.GridFrameOffsetVector = [f"{z0 + 4.7 * k:.6f}" for k in range(4)]  # C.8.8.3.2 b) absolute
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert read_rtdose(buf.getvalue()).same_grid(dose, atol_mm=1e-5)
    one = _dose(shape=(1, 3, 2))
    assert read_rtdose(_write(one)).same_grid(one, atol_mm=1e-6)


def test_read_from_path_records_source(tmp_path):
    p = tmp_path / "dose.dcm"
    p.write_bytes(_write(_dose()))
    v = read_rtdose(p)
    assert v.source_files == (str(p),) and v.acquisition_time is None


def test_zero_dose_and_roundoff_negatives():
    z = _dose().with_array(np.zeros((5, 6, 7)), unit="Gy")
    assert read_rtdose(_write(z)).array.max() == 0.0
    a = np.ones((5, 6, 7))
    a[0, 0, 0] = -1e-9  # FFT round-off size: stored as 0
    assert read_rtdose(_write(_dose().with_array(a, unit="Gy"))).array[0, 0, 0] == 0.0


# ---------------------------------------------------------------- identity and references


def _ref_slice(dose, k=2, **extra):
    ref = Dataset()
    ref.PatientID = "P1"
    ref.PatientName = "Doe^Jane"
    ref.PatientBirthDate = "19600101"
    ref.PatientSex = "F"
    ref.StudyInstanceUID = generate_uid()
    ref.FrameOfReferenceUID = generate_uid()
    ref.StudyDate = "20260106"
    ref.ImagePositionPatient = [f"{v:.10f}" for v in dose.index_to_physical((0, 0, k))]
    d = dose.direction
    ref.ImageOrientationPatient = [f"{v:.10f}" for v in np.concatenate([d[:, 0], d[:, 1]])]
    ref.PixelSpacing = [dose.spacing_mm[1], dose.spacing_mm[0]]
    ref.Rows, ref.Columns = dose.shape[1], dose.shape[2]
    for kw, v in extra.items():
        setattr(ref, kw, v)
    return ref


def test_reference_dataset_identity_copied():
    dose = _dose(direction=GEOMETRIES["flipped-coronal"])
    ref = _ref_slice(dose)
    ds = pydicom.dcmread(io.BytesIO(_write(dose, ref)))
    assert ds.PatientID == "P1" and str(ds.PatientName) == "Doe^Jane" and ds.PatientSex == "F"
    assert ds.StudyInstanceUID == ref.StudyInstanceUID and ds.FrameOfReferenceUID == ref.FrameOfReferenceUID
    assert ds.StudyDate == "20260106"
    assert ds.SeriesInstanceUID != ds.StudyInstanceUID


def test_reference_mapping_and_explicit_uids():
    uid = generate_uid()
    ds = pydicom.dcmread(io.BytesIO(_write(_dose(), {"PatientID": "P1"}, study_instance_uid=uid)))
    assert ds.StudyInstanceUID == uid
    with pytest.raises(InputError, match="StudyInstanceUID"):
        _write(_dose(), {"PatientID": "P1", "StudyInstanceUID": generate_uid()}, study_instance_uid=uid)


def test_wrong_patient_refused():
    dose = _dose()
    with pytest.raises(InputError, match="PatientID"):
        _write(dose, _ref_slice(dose, PatientID="SOMEONE-ELSE"))


def test_reference_geometry_must_match():
    dose = _dose()
    with pytest.raises(InputError, match="Pixel Spacing"):
        _write(dose, _ref_slice(dose, PixelSpacing=[3.3, 2.2]))
    with pytest.raises(InputError, match="Orientation"):
        _write(dose, _ref_slice(dose, ImageOrientationPatient=[0, 1, 0, 1, 0, 0]))
    off_grid = _ref_slice(dose)
    off_grid.ImagePositionPatient = [str(float(v) + 1.0) for v in off_grid.ImagePositionPatient]
    with pytest.raises(InputError, match="does not lie on the dose grid"):
        _write(dose, off_grid)
    with pytest.raises(InputError, match="Rows"):
        _write(dose, _ref_slice(dose, Rows=99))


def test_reference_volume_grid():
    dose = _dose()
    _write(dose, dose.with_array(np.zeros(dose.shape), unit="Bq/mL"))
    other = Volume(array=np.zeros(dose.shape), spacing_mm=(2.1, 3.3, 4.8), origin_mm=dose.origin_mm, unit="Bq/mL")
    with pytest.raises(InputError, match="grid"):
        _write(dose, other)


def test_summation_type_references():
    dose = _dose()
    with pytest.raises(InputError, match="Referenced RT Plan Sequence"):
        write_rtdose(dose, None, patient_id="P1", series_description="x")
    plan = generate_uid()
    ds = pydicom.dcmread(io.BytesIO(write_rtdose(dose, None, patient_id="P1", series_description="x",
                                                 referenced_sop_instance_uid=plan)))
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.481.5"
    ds = pydicom.dcmread(io.BytesIO(write_rtdose(dose, None, patient_id="P1", series_description="x",
                                                 dose_summation_type="RECORD", referenced_sop_instance_uid=plan)))
    assert ds.DoseSummationType == "RECORD" and ds.ReferencedTreatmentRecordSequence[0].ReferencedSOPInstanceUID == plan
    ds = pydicom.dcmread(io.BytesIO(_write(dose, dose_type="EFFECTIVE")))
    assert ds.DoseType == "EFFECTIVE" and "No RT Plan referenced" in ds.DoseComment


def test_content_time_is_written():
    t = datetime(2026, 1, 8, 9, 15, 0, tzinfo=timezone.utc)
    ds = pydicom.dcmread(io.BytesIO(_write(_dose(), content_time=t)))
    assert ds.ContentDate == "20260108" and ds.ContentTime.startswith("091500") and ds.TimezoneOffsetFromUTC == "+0000"


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(dose_summation_type="BEAM"), "dose_summation_type"),
        (dict(dose_type="ERROR"), "dose_type"),
        (dict(patient_id=""), "patient_id"),
        (dict(content_time=datetime(2026, 1, 1)), "timezone"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(InputError, match=match):
        _write(_dose(), **kw)


def test_bad_dose_values():
    d = _dose()
    with pytest.raises(InputError, match="Gy"):
        _write(d.with_array(d.array, unit="Bq/mL"))
    a = np.array(d.array)
    a[1, 1, 1] = -0.5
    with pytest.raises(InputError, match="negative"):
        _write(d.with_array(a, unit="Gy"))
    a[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        _write(d.with_array(a, unit="Gy"))


# ---------------------------------------------------------------- corrupt input


@pytest.mark.parametrize("keep_fraction", [0.0, 0.05, 0.3, 0.6, 0.97])
def test_truncated_bytes_give_input_error(keep_fraction):
    raw = _write(_dose())
    with pytest.raises(InputError):
        read_rtdose(raw[: int(len(raw) * keep_fraction)])
    with pytest.raises(InputError, match="pixel data"):
        read_rtdose(raw[:-1])


def test_truncated_file_names_it(tmp_path):
    raw = _write(_dose())
    p = tmp_path / "cut.dcm"
    p.write_bytes(raw[: len(raw) - 50])
    with pytest.raises(InputError) as ei:
        read_rtdose(p)
    assert ei.value.source == str(p)
    with pytest.raises(InputError, match="not found"):
        read_rtdose(tmp_path / "absent.dcm")


def test_not_rtdose_and_relative_units():
    ds = pydicom.dcmread(io.BytesIO(_write(_dose())))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(InputError, match="not an RT Dose"):
        read_rtdose(buf.getvalue())
    ds = pydicom.dcmread(io.BytesIO(_write(_dose())))
    ds.DoseUnits = "RELATIVE"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(InputError, match="GY"):
        read_rtdose(buf.getvalue())


def test_unequal_frame_spacing_refused():
    ds = pydicom.dcmread(io.BytesIO(_write(_dose())))
    ds.GridFrameOffsetVector = ["0", "4.7", "9.4", "15", "18.8"]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(InputError, match="equally spaced"):
        read_rtdose(buf.getvalue())


@pytest.mark.parametrize("scaling", ["0", "-0.001"])
def test_non_positive_dose_grid_scaling_refused(scaling):
    """Dose Grid Scaling 0 would read as an all-zero dose, a negative one as negative doses:
    both are corrupt files, refused with an InputError naming the attribute."""
    ds = pydicom.dcmread(io.BytesIO(_write(_dose())))
    ds.DoseGridScaling = scaling
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(InputError, match="Dose Grid Scaling") as ei:
        read_rtdose(buf.getvalue())
    assert ei.value.field == "DoseGridScaling"


# ---------------------------------------------------------------- long comments (VR LO)


def test_long_dose_comment_kept_whole_in_image_comments():
    """Dose Comment is VR LO, at most 64 characters (PS3.5 6.2); a longer comment is cut there
    and written whole to Image Comments (VR LT)."""
    text = "cycle 2 absorbed dose from SPECT/CT at 4, 24, 96 and 168 h; kernel convolution, density-corrected"
    ds = pydicom.dcmread(io.BytesIO(_write(_dose(), dose_comment=text)))
    assert len(ds.DoseComment) <= 64 and ds.DoseComment.endswith("...")
    assert text in ds.ImageComments and "No RT Plan referenced" in ds.ImageComments


# ---------------------------------------------------------------- time-integrated activity maps


def _tia(direction=np.eye(3), shape=(5, 6, 7)):
    return Volume(array=RNG.random(shape) * 3.7, spacing_mm=(2.1, 3.3, 4.7), origin_mm=(-123.456789, 45.6, -789.0123),
                  direction=direction, unit="MBq h/mL", modality="OT")


def _write_tia(tia, reference=None, **kw):
    args = dict(patient_id="P1", allow_missing_reference=True)
    args.update(kw)
    return write_tia_rtdose(tia, reference, **args)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_tia_round_trip_geometry_values_and_unit(name):
    """Geometry identical to the grid (to 1e-9 mm: the Decimal Strings keep the digits); values
    within the stated quantisation, |error| <= DoseGridScaling / 2 = max / (2 (2^32 - 1))."""
    tia = _tia(direction=GEOMETRIES[name])
    back = read_tia_rtdose(_write_tia(tia, tia))
    assert back.unit == "MBq h/mL" and back.shape == tia.shape
    assert back.same_grid(tia, atol_mm=1e-6)
    np.testing.assert_allclose(back.origin_mm, tia.origin_mm, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.spacing_mm, tia.spacing_mm, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.direction, tia.direction, rtol=0, atol=1e-12)
    assert np.abs(back.array - tia.array).max() <= tia.array.max() / (2 * UINT32_MAX) * (1 + 1e-6)


def test_tia_file_says_what_it_is_with_pydicom():
    tia = _tia()
    ds = pydicom.dcmread(io.BytesIO(_write_tia(tia)))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2" and ds.Modality == "RTDOSE"
    # PS3.3 C.8.8.3 Table C.8-39: RELATIVE = relative to an implicit reference value, here stated
    assert ds.DoseUnits == "RELATIVE" and ds.DoseType == "PHYSICAL"
    assert "MBq h/mL" in ds.SeriesDescription and "time-integrated activity" in ds.SeriesDescription
    assert len(ds.DoseComment) <= 64 and "MBq h/mL" in ds.DoseComment and "NOT absorbed dose" in ds.DoseComment
    assert "1 MBq h/mL" in ds.ImageComments and "No RT Plan referenced" in ds.ImageComments
    rw = ds.RealWorldValueMappingSequence[0]
    assert rw.MeasurementUnitsCodeSequence[0].CodeValue == "MBq.h/mL"
    assert rw.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    assert rw.RealWorldValueSlope == float(ds.DoseGridScaling) and rw.RealWorldValueIntercept == 0.0
    block = ds.private_block(0x0077, "MRTDOSE 1")
    assert block[0x10].value == "TIME_INTEGRATED_ACTIVITY_CONCENTRATION" and block[0x11].value == "MBq h/mL"
    # an independent reading of one voxel: stored value x Dose Grid Scaling (C.8.8.3)
    assert ds.pixel_array[3, 4, 5] * float(ds.DoseGridScaling) == pytest.approx(tia.array[3, 4, 5], abs=1e-8)


def test_tia_and_dose_are_never_confused():
    tia_raw = _write_tia(_tia())
    with pytest.raises(InputError, match="time-integrated activity map.*not absorbed dose in Gy"):
        read_rtdose(tia_raw)
    with pytest.raises(InputError, match="absorbed dose \\(Dose Units GY\\)"):
        read_tia_rtdose(_write(_dose()))
    # a relative dose without the statement: its implicit reference value is unknown
    ds = pydicom.dcmread(io.BytesIO(_write(_dose())))
    ds.DoseUnits = "RELATIVE"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(InputError, match="unit is unknown"):
        read_tia_rtdose(buf.getvalue())
    # the statement with Dose Units changed to GY is contradictory
    ds = pydicom.dcmread(io.BytesIO(tia_raw))
    ds.DoseUnits = "GY"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(InputError, match="contradicts"):
        read_tia_rtdose(buf.getvalue())
    with pytest.raises(InputError, match="not absorbed dose"):
        read_rtdose(buf.getvalue())


def test_tia_writer_refuses_other_units_and_negative_values():
    t = _tia()
    with pytest.raises(InputError, match="MBq h/mL"):
        _write_tia(t.with_array(t.array, unit="Gy"))
    with pytest.raises(InputError, match="MBq h/mL"):
        _write_tia(t.with_array(t.array, unit="MBq h"))  # per voxel, not a concentration
    a = np.array(t.array)
    a[0, 0, 0] = -1.0
    with pytest.raises(InputError, match="negative"):
        _write_tia(t.with_array(a, unit="MBq h/mL"))
    assert read_tia_rtdose(_write_tia(t.with_array(t.array, unit="MBq·h/mL"))).unit == "MBq h/mL"


def test_tia_truncated_names_file(tmp_path):
    p = tmp_path / "tia_map_rtdose.dcm"
    p.write_bytes(_write_tia(_tia())[:-100])
    with pytest.raises(InputError, match="pixel data") as ei:
        read_tia_rtdose(p)
    assert ei.value.source == str(p)
