"""Reading DICOM image series (NM, PT, CT) into Volumes: round trips, conventions, every error path.

Geometry tolerance 1e-6 mm: the writer stores positions as 16-character Decimal Strings with the
most digits that fit (PS3.5 6.2; ~1e-11 mm at 300 mm). Value tolerances are the quantisation of
each encoding: CT exact (integer HU), PET slope_k / 2 per slice, NM slope / 2.

Independent checks (not relying on our writer): a hand-built slice with Pixel Spacing [2, 3]
must give ``spacing_mm[0] == 3`` (PS3.3 C.7.6.2.1.1: first value = row spacing = dy), and the
NM Radionuclide Total Dose is checked in the raw file in MBq (NM Isotope module C.8.4.10).
"""

from __future__ import annotations

import shutil
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mrtdose.errors import InputError
from mrtdose.imaging.dicom_series import (
    list_series,
    read_series,
    read_series_info,
    read_series_with_info,
)
from mrtdose.imaging.dicom_synth import Faults, write_ct_series, write_nm_series, write_pt_series
from mrtdose.imaging.volume import Volume

T0 = datetime(2026, 3, 2, 10, 30, 15, 250000, tzinfo=timezone(timedelta(hours=1)))
GEOM_TOL = 1e-6
RNG = np.random.default_rng(2026)


def _rotation(axis, angle):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


#: Feet-first supine-like grid: row direction flipped (-x), slice axis along row x column = -z.
FEET_FIRST = np.array([[-1.0, 0, 0], [0, 1, 0], [0, 0, -1]])
OBLIQUE = _rotation((1, 2, 3), 0.4)


def _vol(shape=(6, 7, 9), spacing=(2.5, 3.75, 4.0), origin=(-150.123456789, 20.5, -300.25), direction=np.eye(3),
         unit="Bq/mL", scale=1000.0, integer=False):
    a = RNG.random(shape) * scale
    if integer:
        a = np.rint(a)
    return Volume(array=a, spacing_mm=spacing, origin_mm=origin, direction=direction, unit=unit)


def _assert_geometry(read: Volume, truth: Volume):
    assert read.shape == truth.shape
    np.testing.assert_allclose(read.spacing_mm, truth.spacing_mm, atol=GEOM_TOL)
    np.testing.assert_allclose(read.origin_mm, truth.origin_mm, atol=GEOM_TOL)
    np.testing.assert_allclose(read.direction, truth.direction, atol=1e-9)
    assert read.same_grid(truth, atol_mm=GEOM_TOL)


def _pt(tmp_path, vol=None, **kw):
    vol = vol if vol is not None else _vol()
    args = dict(patient_id="P1", study_uid="1.2.826.0.1.1", acquisition_time=T0, injected_activity_bq=7.4e9,
                injection_time=T0 - timedelta(hours=4), radionuclide="177Lu", half_life_s=574300.0,
                radiopharmaceutical="Lu-177 PSMA", frame_duration_ms=900000)
    args.update(kw)
    d = tmp_path / "pt"
    paths = write_pt_series(vol, d, **args)
    return vol, d, paths


def _slopes(paths):
    return [float(pydicom.dcmread(p).RescaleSlope) for p in sorted(paths)]


# ------------------------------------------------------------------------------------------- CT


@pytest.mark.parametrize("direction", [np.eye(3), FEET_FIRST, OBLIQUE], ids=["HFS", "feet-first", "oblique"])
def test_ct_round_trip_exact(tmp_path, direction):
    vol = _vol(direction=direction, unit="HU", scale=2000.0, integer=True).with_array(
        np.rint(RNG.random((6, 7, 9)) * 3000 - 1000), unit="HU")
    paths = write_ct_series(vol, tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=T0)
    read = read_series(tmp_path)
    _assert_geometry(read, vol)
    np.testing.assert_array_equal(read.array, vol.array)  # integer HU: exact
    assert read.unit == "HU" and read.modality == "CT"
    assert read.acquisition_time == T0  # earliest per-slice Acquisition Time (slices at T0 + 0.5 s k)
    assert set(read.source_files) == {str(p) for p in paths}


def test_pixel_spacing_is_row_then_column(tmp_path):
    """Independent of our writer: PS3.3 C.7.6.2.1.1 -- Pixel Spacing = [row spacing (dy), column spacing (dx)]."""
    for k in range(2):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", "X", "1.2", "1.2.3"
        ds.ImagePositionPatient = ["10", "20", str(30 + 5 * k)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = ["2", "3"]  # 2 mm between rows, 3 mm between columns
        ds.Rows, ds.Columns = 4, 5
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
        ds.AcquisitionDate, ds.AcquisitionTime, ds.TimezoneOffsetFromUTC = "20260101", "120000", "+0000"
        ds.PixelData = np.arange(20, dtype="<i2").tobytes()
        pydicom.dcmwrite(tmp_path / f"{k}.dcm", ds, enforce_file_format=True)
    v = read_series(tmp_path)
    assert v.spacing_mm == (3.0, 2.0, 5.0)
    assert v.shape == (2, 4, 5)
    # pixel (row j=1, column i=2) lies 2*3 mm along x and 1*2 mm along y from the origin
    np.testing.assert_allclose(v.index_to_physical((2, 1, 0)), [16.0, 22.0, 30.0])
    assert v.array[0, 1, 2] == 7  # row-major: 1 * 5 + 2


def test_writer_stores_dy_first(tmp_path):
    vol = _vol(spacing=(1.25, 4.5, 3.0))
    _, _, paths = _pt(tmp_path, vol)
    assert [float(x) for x in pydicom.dcmread(paths[0]).PixelSpacing] == [4.5, 1.25]


# ------------------------------------------------------------------------------------------- PT


@pytest.mark.parametrize("direction", [np.eye(3), FEET_FIRST, OBLIQUE], ids=["HFS", "feet-first", "oblique"])
def test_pt_round_trip_per_slice_slopes(tmp_path, direction):
    shape = (6, 7, 9)
    a = RNG.random(shape) * (10.0 ** np.arange(shape[0]))[:, None, None]  # very different slice maxima
    vol = Volume(array=a, spacing_mm=(2.5, 3.75, 4.0), origin_mm=(-150.1, 20.5, -300.25), direction=direction, unit="Bq/mL")
    _, d, paths = _pt(tmp_path, vol)
    slopes = _slopes(paths)
    assert len(set(slopes)) == shape[0]  # one slope per slice, all different
    read, info = read_series_with_info(d)
    _assert_geometry(read, vol)
    err = np.abs(read.array - vol.array).max(axis=(1, 2))
    assert np.all(err <= np.array(slopes) / 2 * (1 + 1e-9))
    assert read.unit == "Bq/mL" and info.units_attribute == "BQML"
    assert info.acquisition_time == T0 == read.acquisition_time
    assert info.time_source.startswith("SeriesDate/SeriesTime")
    assert info.timezone_source.startswith("TimezoneOffsetFromUTC")
    assert info.decay_correction == "START"
    assert info.injected_activity_bq == pytest.approx(7.4e9)
    assert info.injection_time == T0 - timedelta(hours=4)
    assert info.radionuclide == "177Lu" and info.radionuclide_half_life_s == pytest.approx(574300.0)
    assert info.frame_duration_ms == 900000
    assert info.patient_id == "P1" and info.modality == "PT" and info.warnings == ()
    assert "ATTN" in info.corrected_image


def test_pt_file_order_does_not_matter(tmp_path):
    vol, d, paths = _pt(tmp_path)
    shuffled = [paths[i] for i in RNG.permutation(len(paths))]
    a = read_series(shuffled)
    b = read_series(d)
    np.testing.assert_array_equal(a.array, b.array)
    _assert_geometry(a, vol)


def test_pt_philips_cnts_activity_scale(tmp_path):
    vol, d, paths = _pt(tmp_path, units="CNTS", philips_activity_scale=12.5)
    read, info = read_series_with_info(d)
    assert read.unit == "Bq/mL" and "7053" in info.value_scaling
    np.testing.assert_allclose(read.array, vol.array, atol=max(_slopes(paths)) * 12.5 / 2 * 1.001)
    raw = read_series(d, use_vendor_scale=False)
    assert raw.unit == "counts"
    np.testing.assert_allclose(raw.array * 12.5, read.array, rtol=1e-12)


def test_pt_cnts_without_vendor_factor_is_counts_and_other_units_warn(tmp_path):
    _, d, _ = _pt(tmp_path, units="CNTS")
    assert read_series(d).unit == "counts"
    _, d2, _ = _pt(tmp_path / "b", units="GML")
    v, info = read_series_with_info(d2)
    assert v.unit == "GML" and any("GML" in w for w in info.warnings)


def test_pt_decay_correction_admin_uses_injection_time(tmp_path):
    _, d, _ = _pt(tmp_path, decay_correction="ADMIN")
    v, info = read_series_with_info(d)
    assert v.acquisition_time == T0 - timedelta(hours=4)
    assert info.acquisition_start == T0 and "ADMIN" in info.time_source


def test_pt_missing_end_slice_caught_by_number_of_slices(tmp_path):
    vol, d, _ = _pt(tmp_path, faults=Faults(drop_slices=(5,)))
    with pytest.raises(InputError, match="Number of Slices"):
        read_series(d)


def test_read_series_info_headers_only(tmp_path):
    _, d, _ = _pt(tmp_path)
    info = read_series_info(d)
    assert info.unit == "Bq/mL" and len(info.files) == 6 and info.acquisition_time == T0


# ------------------------------------------------------------------------------------------- NM


@pytest.mark.parametrize("geometry_in", ["both", "detector", "top"])
@pytest.mark.parametrize("direction", [np.eye(3), FEET_FIRST, OBLIQUE], ids=["HFS", "feet-first", "oblique"])
def test_nm_multiframe_round_trip(tmp_path, geometry_in, direction):
    vol = _vol(direction=direction, unit="counts", integer=True)
    write_nm_series(vol, tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=T0, geometry_in=geometry_in,
                    injected_activity_bq=7.4e9, injection_time=T0 - timedelta(hours=24))
    read, info = read_series_with_info(tmp_path)
    _assert_geometry(read, vol)
    np.testing.assert_array_equal(read.array, vol.array)  # integer counts: exact
    assert read.unit == "counts" and read.modality == "NM"
    assert info.injected_activity_bq == pytest.approx(7.4e9)
    # NM Isotope module (C.8.4.10): Radionuclide Total Dose in MBq in the file itself
    raw = pydicom.dcmread(next(tmp_path.glob("*.dcm")))
    assert float(raw.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose) == pytest.approx(7400.0)
    assert raw.NumberOfFrames == vol.shape[0] and "RECON TOMO" in raw.ImageType


def test_nm_bqml_float_with_rescale(tmp_path):
    vol = _vol()
    write_nm_series(vol, tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=T0, units="BQML")
    read = read_series(tmp_path)
    slope = float(pydicom.dcmread(next(tmp_path.glob("*.dcm"))).RescaleSlope)
    assert read.unit == "Bq/mL"
    assert np.max(np.abs(read.array - vol.array)) <= slope / 2 * (1 + 1e-9)


def test_nm_slice_axis_against_normal_reads_as_equivalent_grid(tmp_path):
    """A volume whose k axis runs along -(row x col) (det D = -1) is stored along +n; the
    reader returns the same voxels in the right-handed order."""
    d = np.diag([1.0, 1.0, -1.0])
    vol = _vol(direction=d, integer=True)
    write_nm_series(vol, tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=T0)
    read = read_series(tmp_path)
    np.testing.assert_array_equal(read.array, vol.array[::-1])
    np.testing.assert_allclose(read.index_to_physical((0, 0, 0)), vol.index_to_physical((0, 0, vol.shape[0] - 1)), atol=GEOM_TOL)
    np.testing.assert_allclose(read.direction[:, 2], [0, 0, 1])


def test_nm_detector_and_top_level_disagree(tmp_path):
    def mutate(k, ds):
        ds.ImagePositionPatient = ["0", "0", "0"]
    write_nm_series(_vol(integer=True), tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=T0,
                    faults=Faults(mutate=mutate))
    with pytest.raises(InputError, match="disagree") as e:
        read_series(tmp_path)
    assert e.value.source.endswith("NM_0000.dcm")


def test_nm_gated_or_multi_window_refused(tmp_path):
    def mutate(k, ds):
        ds.FrameIncrementPointer = [pydicom.tag.Tag(0x0054, 0x0080), pydicom.tag.Tag(0x0054, 0x0070)]
        ds.TimeSlotVector = [1, 2] * (ds.NumberOfFrames // 2)
    write_nm_series(_vol(integer=True), tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=T0,
                    faults=Faults(mutate=mutate))
    with pytest.raises(InputError, match="TimeSlotVector"):
        read_series(tmp_path)


def test_nm_projection_data_refused(tmp_path):
    def mutate(k, ds):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"]
    write_nm_series(_vol(integer=True), tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=T0,
                    faults=Faults(mutate=mutate))
    with pytest.raises(InputError, match="RECON TOMO"):
        read_series(tmp_path)


# ------------------------------------------------------------------------------------------- time


def test_time_zone_from_tz_argument(tmp_path):
    _, d, _ = _pt(tmp_path, write_timezone=False,
                  acquisition_time=datetime(2026, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/London")),
                  injection_time=datetime(2026, 7, 1, 5, 0, tzinfo=ZoneInfo("Europe/London")))
    for tz in ("Europe/London", ZoneInfo("Europe/London")):
        v, info = read_series_with_info(d, tz=tz)
        assert v.acquisition_time.utcoffset() == timedelta(hours=1)  # BST
        assert v.acquisition_time == datetime(2026, 7, 1, 8, 0, tzinfo=timezone.utc)
        assert info.injection_time == datetime(2026, 7, 1, 4, 0, tzinfo=timezone.utc)
        assert info.timezone_source == "tz argument"


def test_injection_datetime_offset_in_dt_value_is_used(tmp_path):
    # Radiopharmaceutical Start DateTime carries its own +HHMM; no file offset and no tz needed for it
    _, d, _ = _pt(tmp_path, write_timezone=False)
    info = read_series_info(d, time_override=T0)
    assert info.injection_time == T0 - timedelta(hours=4)


def test_missing_time_zone_is_an_error_not_a_guess(tmp_path):
    _, d, _ = _pt(tmp_path, write_timezone=False)
    with pytest.raises(InputError, match="tz=.*time_override"):
        read_series(d)


def test_time_override_wins_and_is_recorded(tmp_path):
    _, d, _ = _pt(tmp_path, write_timezone=False)
    t = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    v, info = read_series_with_info(d, time_override=t)
    assert v.acquisition_time == t and info.time_source == "time_override"
    with pytest.raises(InputError, match="timezone-aware"):
        read_series(d, time_override=datetime(2026, 3, 2, 12, 0))


def test_file_offset_beats_tz_argument_with_warning(tmp_path):
    _, d, _ = _pt(tmp_path)
    v, info = read_series_with_info(d, tz="America/New_York")
    assert v.acquisition_time.utcoffset() == timedelta(hours=1)
    assert any("ignored" in w for w in info.warnings)


def test_ambiguous_local_time_refused(tmp_path):
    # 2026-10-25 01:30 happens twice in London (BST -> GMT)
    t = datetime(2026, 10, 25, 1, 30, tzinfo=timezone.utc)
    _, d, _ = _pt(tmp_path, write_timezone=False, acquisition_time=t, injection_time=None)
    with pytest.raises(InputError, match="ambiguous"):
        read_series(d, tz="Europe/London")


def test_no_time_tags_needs_override(tmp_path):
    vol = _vol(unit="HU", integer=True)
    write_ct_series(vol, tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=None)
    with pytest.raises(InputError, match="time_override"):
        read_series(tmp_path)
    assert read_series(tmp_path, time_override=T0).acquisition_time == T0


def test_pt_start_without_series_time_refused(tmp_path):
    _, d, _ = _pt(tmp_path, faults=Faults(remove_tags=("SeriesTime",)))
    with pytest.raises(InputError, match="Series Date/Time") as e:
        read_series(d)
    assert e.value.source.endswith(".dcm")


def test_unknown_tz_name(tmp_path):
    _, d, _ = _pt(tmp_path, write_timezone=False)
    with pytest.raises(InputError, match="unknown time zone"):
        read_series(d, tz="Mars/Olympus_Mons")


# ------------------------------------------------------------------------------------------- errors


def test_gap_in_slices_names_files(tmp_path):
    vol = _vol(shape=(8, 5, 6), unit="HU", integer=True)
    write_ct_series(vol, tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=T0, faults=Faults(drop_slices=(3,)))
    with pytest.raises(InputError, match="missing slice") as e:
        read_series(tmp_path)
    assert "CT_0002.dcm" in str(e.value) and "CT_0004.dcm" in str(e.value)


def test_perturbed_position_names_the_culprit(tmp_path):
    vol = _vol(shape=(8, 5, 6), unit="HU", integer=True)
    write_ct_series(vol, tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=T0,
                    faults=Faults(shift_position_mm={4: (0.0, 0.0, 0.3)}))
    with pytest.raises(InputError, match="not equally spaced") as e:
        read_series(tmp_path)
    assert e.value.source.endswith("CT_0004.dcm")


def test_small_jitter_within_tolerance_accepted(tmp_path):
    vol = _vol(shape=(8, 5, 6), unit="HU", integer=True)  # dz 4 mm: tolerance max(0.01, 0.04) mm
    write_ct_series(vol, tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=T0,
                    faults=Faults(shift_position_mm={4: (0.0, 0.0, 0.015)}))
    assert read_series(tmp_path).spacing_mm[2] == pytest.approx(4.0, abs=0.02)


def test_in_plane_shift_gantry_tilt_refused(tmp_path):
    vol = _vol(shape=(8, 5, 6), unit="HU", integer=True)
    write_ct_series(vol, tmp_path, patient_id="P1", study_uid="1.2.3", acquisition_time=T0,
                    faults=Faults(shift_position_mm={k: (0.0, 0.5 * k, 0.0) for k in range(8)}))
    with pytest.raises(InputError, match="gantry tilt"):
        read_series(tmp_path)


@pytest.mark.parametrize("fault,match", [
    (Faults(orientation={2: (0, 1, 0, 1, 0, 0)}), "ImageOrientationPatient differs"),
    (Faults(orientation={2: (1, 0, 0, 0, 0.9, 0)}), "not two orthogonal unit vectors"),
    (Faults(pixel_spacing={2: (3.75, 2.6)}), "PixelSpacing differs"),
    (Faults(patient_id={2: "P2"}), "mixes patients"),
    (Faults(study_uid={2: "1.2.3.999"}), "mixes studies"),
])
def test_inconsistent_series_names_file(tmp_path, fault, match):
    _, d, _ = _pt(tmp_path, faults=fault)
    with pytest.raises(InputError, match=match) as e:
        read_series(d)
    assert e.value.source.endswith("PT_0002.dcm")


def test_mixed_series_without_series_uid(tmp_path):
    vol = _vol(unit="HU", integer=True)
    write_ct_series(vol, tmp_path, patient_id="P1", study_uid="1.2.3", series_uid="1.2.3.1", acquisition_time=T0,
                    series_description="CT AC")
    _pt(tmp_path, series_uid="1.2.3.2")
    with pytest.raises(InputError, match="2 image series") as e:
        read_series(tmp_path)
    msg = str(e.value)
    assert "1.2.3.1 (CT, 'CT AC', 6 file(s)" in msg and "1.2.3.2 (PT" in msg
    assert read_series(tmp_path, series_uid="1.2.3.1").modality == "CT"
    assert read_series(tmp_path, modality="PT").modality == "PT"
    assert {s.series_instance_uid for s in list_series(tmp_path)} == {"1.2.3.1", "1.2.3.2"}
    with pytest.raises(InputError, match="no image series with"):
        read_series(tmp_path, modality="NM")


def test_same_series_twice_overlapping_positions(tmp_path):
    vol = _vol(unit="HU", integer=True)
    for sub in ("a", "b"):  # e.g. two reconstructions or overlapping beds exported under one Series Instance UID
        write_ct_series(vol, tmp_path / sub, patient_id="P1", study_uid="1.2.3", series_uid="1.2.3.1",
                        frame_of_reference_uid="1.2.3.9", acquisition_time=T0)
    with pytest.raises(InputError, match="same position"):
        read_series(tmp_path)


def test_duplicate_copy_of_same_instance_is_dropped(tmp_path):
    vol = _vol(unit="HU", integer=True)
    paths = write_ct_series(vol, tmp_path / "a", patient_id="P1", study_uid="1.2.3", acquisition_time=T0)
    (tmp_path / "copy").mkdir()
    shutil.copy(paths[2], tmp_path / "copy" / "dup.dcm")
    v, info = read_series_with_info(tmp_path)
    np.testing.assert_array_equal(v.array, vol.array)
    assert any("duplicate" in w for w in info.warnings)


def test_truncated_file(tmp_path):
    _, d, _ = _pt(tmp_path, faults=Faults(truncate={3: 0.7}))
    with pytest.raises(InputError) as e:
        read_series(d)
    assert e.value.source.endswith("PT_0003.dcm")


@pytest.mark.parametrize("fraction", [0.02, 0.3])
def test_truncated_header(tmp_path, fraction):
    _, d, _ = _pt(tmp_path, faults=Faults(truncate={3: fraction}))
    with pytest.raises(InputError) as e:
        read_series(d)
    assert e.value.source.endswith("PT_0003.dcm")


def test_no_image_files(tmp_path):
    with pytest.raises(InputError, match="no DICOM image files"):
        read_series(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM image files"):
        read_series(tmp_path)
    with pytest.raises(InputError, match="not a DICOM file") as e:
        read_series([tmp_path / "notes.txt"])
    assert e.value.source.endswith("notes.txt")
    with pytest.raises(InputError, match="no such"):
        read_series(tmp_path / "absent")


def test_non_dicom_and_non_image_files_are_ignored(tmp_path):
    vol, d, _ = _pt(tmp_path)
    (d / "README").write_text("scanner export")
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"  # RT Structure Set
    sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.SOPClassUID, sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPClassUID, sr.file_meta.MediaStorageSOPInstanceUID
    sr.Modality, sr.SeriesInstanceUID, sr.PatientID = "RTSTRUCT", generate_uid(), "P1"
    pydicom.dcmwrite(d / "rs.dcm", sr, enforce_file_format=True)
    v, info = read_series_with_info(d)
    assert v.shape == vol.shape and len(info.warnings) == 2


def test_unsupported_modality(tmp_path):
    _, d, _ = _pt(tmp_path, faults=Faults(mutate=lambda k, ds: setattr(ds, "Modality", "MR")))
    with pytest.raises(InputError, match="not supported"):
        read_series(d)


# ------------------------------------------------------------------------------------------- fuzz

#: Attributes the reader uses (top level and in the Radiopharmaceutical Information Sequence).
_FUZZ_TAGS = [
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "RescaleSlope",
    "RescaleIntercept", "Units", "SeriesInstanceUID", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID",
    "Modality", "SOPClassUID", "SOPInstanceUID", "AcquisitionDate", "AcquisitionTime", "SeriesDate", "SeriesTime",
    "ContentDate", "ContentTime", "TimezoneOffsetFromUTC", "DecayCorrection", "BitsAllocated", "BitsStored",
    "PixelRepresentation", "SamplesPerPixel", "NumberOfSlices", "NumberOfFrames", "ActualFrameDuration",
    "SliceThickness", "SeriesType", "CorrectedImage", "PixelData", "RadiopharmaceuticalInformationSequence",
    "SeriesDescription", "Manufacturer",
]
_FUZZ_SEQ_TAGS = ["RadionuclideTotalDose", "RadiopharmaceuticalStartDateTime", "RadionuclideHalfLife",
                  "RadionuclideCodeSequence", "RadiopharmaceuticalStartTime"]
_NM_EXTRA = ["DetectorInformationSequence", "FrameIncrementPointer", "SliceVector", "SpacingBetweenSlices", "ImageType"]


def _corrupt(ds: Dataset, kw: str, op: str, rng) -> None:
    tag = pydicom.datadict.tag_for_keyword(kw)
    if op == "delete":
        if kw in ds:
            del ds[kw]
    elif op == "empty":
        ds[tag] = DataElement(tag, "LO", "")
    elif op == "garbage-text":
        choices = ["abc", "1\\2\\x", "nan\\nan\\nan", "1e999", "  "]
        if kw != "RescaleIntercept":  # -1 and 0 are valid intercepts: not a corruption anyone could detect
            choices += ["-1", "0"]
        ds[tag] = DataElement(tag, "LO", str(rng.choice(choices)))
    elif op == "garbage-bytes":
        ds[tag] = DataElement(tag, "OB", bytes(rng.integers(0, 256, size=int(rng.integers(1, 12))).tolist()))
    elif op == "multiplicity":
        ds[tag] = DataElement(tag, "DS", ["1.5"] * int(rng.choice([4, 7])))  # a count no fuzzed attribute allows


@pytest.mark.parametrize("modality,n", [("PT", 50), ("NM", 30)])
def test_fuzz_header_mutations_give_volume_or_input_error(tmp_path, modality, n):
    """Seeded: delete or corrupt one attribute the reader uses in one file; the reader must either
    return the right volume (geometry to 1e-6 mm, values to quantisation) or raise InputError
    naming a file -- never any other exception."""
    rng = np.random.default_rng(12345 if modality == "PT" else 54321)
    vol = _vol(shape=(6, 5, 7), direction=OBLIQUE, integer=(modality == "NM"))
    ops = ["delete", "empty", "garbage-text", "garbage-bytes", "multiplicity"]
    tags = _FUZZ_TAGS + _FUZZ_SEQ_TAGS + (_NM_EXTRA if modality == "NM" else [])
    outcomes = {"ok": 0, "error": 0}
    for trial in range(n):
        kw = str(rng.choice(tags))
        op = str(rng.choice(ops))
        target = int(rng.integers(0, vol.shape[0])) if modality == "PT" else 0

        def mutate(k, ds, kw=kw, op=op):
            if k != target:
                return
            if kw in _FUZZ_SEQ_TAGS:
                if "RadiopharmaceuticalInformationSequence" in ds:
                    _corrupt(ds.RadiopharmaceuticalInformationSequence[0], kw, op, rng)
            elif kw in ("ImagePositionPatient", "ImageOrientationPatient") and modality == "NM" and rng.random() < 0.5:
                _corrupt(ds.DetectorInformationSequence[0], kw, op, rng)
            else:
                _corrupt(ds, kw, op, rng)

        d = tmp_path / f"t{trial}"
        common = dict(patient_id="P1", study_uid="1.2.3", acquisition_time=T0, injected_activity_bq=7.4e9,
                      injection_time=T0 - timedelta(hours=3), radionuclide="177Lu", half_life_s=574300.0,
                      frame_duration_ms=1000, faults=Faults(mutate=mutate))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's own complaints while encoding the corruption
                paths = (write_pt_series if modality == "PT" else write_nm_series)(vol, d, **common)
        except Exception:  # noqa: BLE001 - pydicom refused to encode this corruption; not the reader's business
            continue
        names = {str(p) for p in paths}
        try:
            v = read_series(d)
        except InputError as e:
            assert e.source in names or any(Path(p).name in str(e) for p in names), (kw, op, str(e))
            outcomes["error"] += 1
            continue
        except Exception as e:  # pragma: no cover - the failure we are looking for
            pytest.fail(f"trial {trial}: {op} {kw}: {type(e).__name__}: {e}")
        # read succeeded: it must be right
        _assert_geometry(v, vol)
        atol = 0 if modality == "NM" else float(np.max(np.abs(vol.array))) / 32767
        np.testing.assert_allclose(v.array, vol.array, atol=atol * (1 + 1e-9), err_msg=f"{op} {kw}")
        assert v.acquisition_time == T0
        outcomes["ok"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes
