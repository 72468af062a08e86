"""NIfTI reading/writing: RAS <-> LPS by hand, geometry round trips, sidecar, clear errors.

Reference for the conventions: NIfTI-1 specification (nifti1.h: world space RAS+, qform/sform
methods 2 and 3, xyzt_units) and DICOM PS3.3 C.7.6.2.1.1 (patient space LPS+).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import nibabel as nib
import numpy as np
import pytest

from mrtdose.errors import InputError
from mrtdose.imaging.nifti import (
    nifti_sidecar,
    nifti_sidecar_bytes,
    read_nifti,
    sidecar_path_for,
    write_nifti,
)
from mrtdose.imaging.volume import Volume

T0 = datetime(2026, 1, 6, 10, 30, tzinfo=timezone(timedelta(hours=1)))


def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _nib_file(tmp_path, data_ijk, affine_ras, name="x.nii", sform_code=1, qform_code=1, units="mm"):
    img = nib.Nifti1Image(data_ijk, affine_ras)
    img.set_sform(affine_ras, code=sform_code)
    img.set_qform(affine_ras, code=qform_code)
    img.header.set_xyzt_units(units, "sec")
    p = tmp_path / name
    nib.save(img, str(p))
    return p


def test_ras_to_lps_by_hand(tmp_path):
    # A file written by another tool (nibabel directly): RAS affine diag(2, 3, 5), offset (10, 20, 30).
    # NIfTI voxel (i, j, k) -> RAS (10 + 2i, 20 + 3j, 30 + 5k) -> LPS (-10 - 2i, -20 - 3j, 30 + 5k).
    data = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)  # nibabel order [i, j, k]
    aff = np.array([[2.0, 0, 0, 10], [0, 3.0, 0, 20], [0, 0, 5.0, 30], [0, 0, 0, 1]])
    p = _nib_file(tmp_path, data, aff)
    v = read_nifti(p, unit="Bq/mL")
    assert v.shape == (2, 3, 4)  # [k, j, i]
    assert v.spacing_mm == (2.0, 3.0, 5.0)
    assert v.origin_mm == (-10.0, -20.0, 30.0)
    np.testing.assert_array_equal(v.direction, np.diag([-1.0, -1.0, 1.0]))
    # same voxel, same value: file [i=3, j=1, k=1] is volume [k=1, j=1, i=3]
    assert v.array[1, 1, 3] == data[3, 1, 1]
    np.testing.assert_allclose(v.index_to_physical((3, 1, 1)), [-16.0, -23.0, 35.0], atol=0)
    # and nibabel's own world coordinates agree after the x, y flip
    ras = nib.affines.apply_affine(aff, [3, 1, 1])
    np.testing.assert_allclose(v.index_to_physical((3, 1, 1)), ras * [-1, -1, 1], atol=1e-12)


def test_write_gives_the_ras_affine_nibabel_sees(tmp_path):
    v = Volume(array=np.zeros((2, 3, 4), np.float32), spacing_mm=(2.0, 3.0, 5.0), origin_mm=(-10.0, 20.5, 100.0), unit="Gy")
    img = nib.Nifti1Image.from_bytes(write_nifti(v))
    np.testing.assert_array_equal(img.affine, [[-2, 0, 0, 10], [0, -3, 0, -20.5], [0, 0, 5, 100], [0, 0, 0, 1]])
    assert img.shape == (4, 3, 2)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.header.get_qform(), img.affine, atol=1e-6)


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_exact_for_float32_representable_geometry(tmp_path, compress):
    rng = np.random.default_rng(3)
    d = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # permuted and flipped axes
    v = Volume(
        array=rng.random((5, 6, 7)),
        spacing_mm=(2.34375, 4.0, 3.5),  # float32-exact, anisotropic
        origin_mm=(-249.5, 120.25, -1001.125),
        direction=d,
        unit="MBq h/mL",
        acquisition_time=T0,
        modality="NM",
        description="TIA map",
    )
    name = "tia.nii.gz" if compress else "tia.nii"
    p = _write(tmp_path, name, write_nifti(v, compress=compress))
    (tmp_path / "tia.json").write_bytes(nifti_sidecar_bytes(v))
    w = read_nifti(p)
    np.testing.assert_array_equal(w.array, v.array)  # float64 kept bit for bit
    assert w.array.dtype == np.float64
    assert w.same_grid(v, atol_mm=1e-6)
    np.testing.assert_allclose(w.direction, d, atol=1e-7)
    assert w.spacing_mm == v.spacing_mm and w.origin_mm == v.origin_mm
    assert (w.unit, w.modality, w.acquisition_time, w.description) == ("MBq h/mL", "NM", T0, "TIA map")
    assert w.source_files == (str(p), str(tmp_path / "tia.json"))


def test_round_trip_oblique_within_float32_precision(tmp_path):
    # Arbitrary (not float32-representable) oblique geometry: NIfTI stores the transform as
    # float32, so positions come back within about 2**-24 * |c| per element (1.2e-5 mm here).
    ax = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    th = 0.4
    k = np.array([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
    d = np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k  # Rodrigues rotation
    v = Volume(array=np.ones((4, 5, 6), np.int16), spacing_mm=(4.7952, 4.7952, 3.27), origin_mm=(-301.123456, 87.654321, 12.3456789),
               direction=d, unit="1", modality="LABEL")
    p = _write(tmp_path, "lab.nii", write_nifti(v))
    w = read_nifti(p, unit="1", modality="LABEL")
    assert w.array.dtype == np.int16
    np.testing.assert_array_equal(w.array, v.array)
    err = np.abs(w.corner_centres_mm() - v.corner_centres_mm()).max()
    assert err < 1e-4, err
    np.testing.assert_allclose(w.spacing_mm, v.spacing_mm, rtol=1e-6)


def test_bool_volume_written_as_uint8(tmp_path):
    m = np.zeros((2, 3, 4), bool)
    m[1, 2, 3] = True
    v = Volume(array=m, spacing_mm=(1, 1, 1), unit="1", modality="LABEL")
    w = read_nifti(_write(tmp_path, "m.nii", write_nifti(v)), unit="1")
    assert w.array.dtype == np.uint8 and w.array[1, 2, 3] == 1 and w.array.sum() == 1


def test_qform_only_and_metre_units(tmp_path):
    aff = np.diag([0.004, 0.004, 0.005, 1.0])  # metres
    p = _nib_file(tmp_path, np.zeros((3, 3, 3), np.float32), aff, sform_code=0, units="meter")
    v = read_nifti(p, unit="Bq/mL")
    np.testing.assert_allclose(v.spacing_mm, (4.0, 4.0, 5.0), rtol=1e-6)


def test_compressed_output_is_deterministic():
    v = Volume(array=np.ones((2, 2, 2)), spacing_mm=(1, 1, 1), unit="Gy")
    assert write_nifti(v, compress=True) == write_nifti(v, compress=True)


def test_sidecar_path_and_contents():
    assert sidecar_path_for("/a/b/scan.nii.gz").name == "scan.json"
    assert sidecar_path_for("/a/b/scan.nii").name == "scan.json"
    v = Volume(array=np.ones((1, 1, 1)), spacing_mm=(1, 1, 1), unit="Bq/mL", acquisition_time=T0)
    doc = nifti_sidecar(v)
    assert doc["unit"] == "Bq/mL" and doc["acquisition_time"] == "2026-01-06T10:30:00+01:00"
    assert json.loads(nifti_sidecar_bytes(v))["unit"] == "Bq/mL"


# ---------------------------------------------------------------- errors


def _good_file(tmp_path, name="ok.nii"):
    v = Volume(array=np.arange(60, dtype=np.float32).reshape(3, 4, 5), spacing_mm=(1, 1, 1), unit="Gy")
    return _write(tmp_path, name, write_nifti(v))


@pytest.mark.parametrize("keep", [0, 100, 348, 360, -1])
def test_truncated_file_names_the_file(tmp_path, keep):
    full = _good_file(tmp_path).read_bytes()
    p = _write(tmp_path, "cut.nii", full[:keep] if keep >= 0 else full[:-1])
    with pytest.raises(InputError) as ei:
        read_nifti(p, unit="Gy")
    assert ei.value.source == str(p)


def test_truncated_gzip(tmp_path):
    v = Volume(array=np.random.default_rng(0).random((8, 8, 8)), spacing_mm=(1, 1, 1), unit="Gy")
    full = write_nifti(v, compress=True)
    p = _write(tmp_path, "cut.nii.gz", full[: len(full) // 2])
    with pytest.raises(InputError, match="cut.nii.gz"):
        read_nifti(p, unit="Gy")


def test_not_a_nifti_and_missing(tmp_path):
    p = _write(tmp_path, "junk.nii", b"hello world" * 50)
    with pytest.raises(InputError, match="junk.nii"):
        read_nifti(p, unit="Gy")
    with pytest.raises(InputError, match="not found"):
        read_nifti(tmp_path / "absent.nii", unit="Gy")


def test_non_3d_rejected(tmp_path):
    p = _nib_file(tmp_path, np.zeros((3, 3, 3, 2), np.float32), np.eye(4), name="4d.nii")
    with pytest.raises(InputError, match="3D"):
        read_nifti(p, unit="Gy")
    p2 = _nib_file(tmp_path, np.zeros((3, 3), np.float32), np.eye(4), name="2d.nii")
    with pytest.raises(InputError, match="3D"):
        read_nifti(p2, unit="Gy")
    # a singleton 4th dimension is a 3D volume
    p3 = _nib_file(tmp_path, np.zeros((3, 3, 3, 1), np.float32), np.eye(4), name="3d1.nii")
    assert read_nifti(p3, unit="Gy").shape == (3, 3, 3)


def test_non_finite_affine_rejected(tmp_path):
    aff = np.eye(4)
    aff[0, 3] = np.nan
    p = _nib_file(tmp_path, np.zeros((3, 3, 3), np.float32), aff, qform_code=0)
    with pytest.raises(InputError, match="not finite"):
        read_nifti(p, unit="Gy")


def test_no_orientation_and_shear_rejected(tmp_path):
    p = _nib_file(tmp_path, np.zeros((3, 3, 3), np.float32), np.eye(4), sform_code=0, qform_code=0)
    with pytest.raises(InputError, match="refusing to guess"):
        read_nifti(p, unit="Gy")
    shear = np.eye(4)
    shear[0, 1] = 0.5
    p2 = _nib_file(tmp_path, np.zeros((3, 3, 3), np.float32), shear, name="shear.nii", qform_code=0)
    with pytest.raises(InputError, match="sheared"):
        read_nifti(p2, unit="Gy")


def test_non_finite_voxels_rejected(tmp_path):
    data = np.zeros((3, 3, 3), np.float32)
    data[1, 1, 1] = np.nan
    p = _nib_file(tmp_path, data, np.eye(4))
    with pytest.raises(InputError, match="1 voxel"):
        read_nifti(p, unit="Gy")


def test_unit_required_and_never_guessed(tmp_path):
    p = _good_file(tmp_path)
    with pytest.raises(InputError, match="unit of the voxel values unknown"):
        read_nifti(p)
    (tmp_path / "ok.json").write_text(json.dumps({"unit": "Bq/mL"}))
    assert read_nifti(p).unit == "Bq/mL"
    with pytest.raises(InputError, match="sidecar says"):
        read_nifti(p, unit="Gy")


def test_naive_or_bad_time_in_sidecar_rejected(tmp_path):
    p = _good_file(tmp_path)
    side = tmp_path / "ok.json"
    side.write_text(json.dumps({"unit": "Bq/mL", "acquisition_time": "2026-01-06T10:30:00"}))
    with pytest.raises(InputError, match="never guessed") as ei:
        read_nifti(p)
    assert ei.value.source == str(side) and ei.value.field == "acquisition_time"
    side.write_text(json.dumps({"unit": "Bq/mL", "acquisition_time": "yesterday"}))
    with pytest.raises(InputError, match="ISO 8601"):
        read_nifti(p)
    side.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_nifti(p)
    side.write_text(json.dumps({"unit": "Bq/mL", "acquisition_time": "2026-01-06T09:30:00Z"}))
    assert read_nifti(p).acquisition_time == T0  # same instant


def test_explicit_sidecar_mapping_and_missing_path(tmp_path):
    p = _good_file(tmp_path)
    v = read_nifti(p, {"unit": "g/mL", "modality": "CT"})
    assert (v.unit, v.modality) == ("g/mL", "CT")
    with pytest.raises(InputError, match="sidecar JSON file not found"):
        read_nifti(p, tmp_path / "nope.json")


# ---------------------------------------------------------------- sidecar metadata, MetaImage


def test_sidecar_metadata_keys(tmp_path):
    from mrtdose.imaging.nifti import sidecar_metadata

    p = _good_file(tmp_path)
    assert sidecar_metadata(p).source is None and sidecar_metadata(p).acquisition_duration_s is None
    side = tmp_path / "ok.json"
    side.write_text(json.dumps({"unit": "counts", "acquisition_duration_s": 1800, "patient_id": "P1",
                                "frame_of_reference_uid": "1.2.3"}))
    m = sidecar_metadata(p)
    assert (m.source, m.acquisition_duration_s, m.patient_id, m.frame_of_reference_uid) == (str(side), 1800.0, "P1", "1.2.3")
    for bad in (0, -5, "1800", True):
        side.write_text(json.dumps({"unit": "counts", "acquisition_duration_s": bad}))
        with pytest.raises(InputError, match="positive number") as ei:
            sidecar_metadata(p)
        assert ei.value.source == str(side) and ei.value.field == "acquisition_duration_s"


def _mhd(tmp_path, header: str, data: bytes | None, name="x"):
    if data is not None:
        (tmp_path / f"{name}.raw").write_bytes(data)
    p = tmp_path / f"{name}.mhd"
    p.write_text(header + f"ElementDataFile = {name}.raw\n")
    return p


def test_metaimage_geometry_exact_by_hand(tmp_path):
    """A hand-written MetaImage header: rows of TransformMatrix are the index axes' unit vectors
    (ITK MetaImageIO), in LPS; origin = Offset (centre of the first voxel). Values are not float32-
    representable, so an exact match shows double precision. Truth: p = Offset + sum_a idx_a s_a
    row_a, computed here by hand for one voxel."""
    from mrtdose.imaging.metaimage import read_metaimage

    c, s = math.cos(0.3), math.sin(0.3)
    rows = [[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, -1.0]]  # rotation about z, slices towards the feet
    data = np.arange(2 * 3 * 4, dtype="<f8").reshape(2, 3, 4)  # [k, j, i], i fastest on disk
    hdr = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
           f"TransformMatrix = {' '.join(repr(x) for r in rows for x in r)}\n"
           "Offset = -123.456789012345 7.1 250.3\nElementSpacing = 0.976562 1.3 3.27\nDimSize = 4 3 2\n"
           "ElementType = MET_DOUBLE\n")
    p = _mhd(tmp_path, hdr, data.tobytes())
    (tmp_path / "x.json").write_text(json.dumps({"unit": "Bq/mL", "acquisition_time": "2026-01-06T10:30:00+01:00",
                                                "modality": "NM"}))
    v = read_metaimage(p)
    assert v.origin_mm == (-123.456789012345, 7.1, 250.3)
    assert v.spacing_mm == (0.976562, 1.3, 3.27)
    np.testing.assert_array_equal(v.direction, np.array(rows).T)
    np.testing.assert_array_equal(v.array, data)
    assert (v.unit, v.modality, v.acquisition_time) == ("Bq/mL", "NM", T0)
    i, j, k = 3, 2, 1
    by_hand = np.array([-123.456789012345, 7.1, 250.3]) + i * 0.976562 * np.array(rows[0]) \
        + j * 1.3 * np.array(rows[1]) + k * 3.27 * np.array(rows[2])
    np.testing.assert_allclose(v.index_to_physical((i, j, k)), by_hand, rtol=0, atol=1e-12)
    assert str(tmp_path / "x.json") in v.source_files
    assert sidecar_path_for(p).name == "x.json" and sidecar_path_for(tmp_path / "y.mha").name == "y.json"


def test_metaimage_errors_name_the_file(tmp_path):
    from mrtdose.imaging.metaimage import read_metaimage

    base = "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\nElementSpacing = 1 1 1\n"
    p = _mhd(tmp_path, base, np.zeros(8, "<i2").tobytes())
    with pytest.raises(InputError, match="unit of the voxel values unknown") as ei:
        read_metaimage(p)
    assert ei.value.source == str(p)
    assert read_metaimage(p, unit="counts").array.dtype == np.int16
    p = _mhd(tmp_path, base, None, name="nodata")
    with pytest.raises(InputError, match="not a readable MetaImage") as ei:
        read_metaimage(p, unit="counts")
    assert ei.value.source == str(p)
    p = _mhd(tmp_path, base, np.zeros(3, "<i2").tobytes(), name="short")
    with pytest.raises(InputError) as ei:
        read_metaimage(p, unit="counts")
    assert ei.value.source == str(p)
    p = _mhd(tmp_path, base.replace("NDims = 3", "NDims = 2").replace("2 2 2", "2 2").replace("1 1 1", "1 1"),
             np.zeros(4, "<i2").tobytes(), name="flat")
    with pytest.raises(InputError, match="must be 3D") as ei:
        read_metaimage(p, unit="counts")
    p = _mhd(tmp_path, base.replace("ElementType = MET_SHORT", "ElementNumberOfChannels = 3\nElementType = MET_SHORT"),
             np.zeros(24, "<i2").tobytes(), name="rgb")
    with pytest.raises(InputError, match="one value per voxel"):
        read_metaimage(p, unit="counts")
    p = _mhd(tmp_path, base.replace("ElementType = MET_SHORT", "ElementType = MET_FLOAT"),
             np.array([0, 1, np.nan, 0, 0, 0, 0, 0], "<f4").tobytes(), name="nan")
    with pytest.raises(InputError, match="NaN"):
        read_metaimage(p, unit="counts")
    with pytest.raises(InputError, match="not a MetaImage file name"):
        read_metaimage(_good_file(tmp_path), unit="Gy")
    with pytest.raises(InputError, match="file not found"):
        read_metaimage(tmp_path / "missing.mhd", unit="Gy")


def test_metaimage_source_files_include_the_data_file(tmp_path):
    """The voxels of a .mhd live in the file ElementDataFile names: it must be among the source
    files, so that the provenance hash (workflow.provenance.files_sha256) changes when the data
    change. A .mha with LOCAL data has no other file."""
    import SimpleITK as sitk

    from mrtdose.imaging.metaimage import read_metaimage
    from mrtdose.workflow.provenance import files_sha256

    base = "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\nElementSpacing = 1 1 1\n"
    p = _mhd(tmp_path, base, np.zeros(8, "<i2").tobytes())
    v = read_metaimage(p, unit="counts")
    assert v.source_files == (str(p), str(tmp_path / "x.raw"))
    before = files_sha256(v.source_files)
    (tmp_path / "x.raw").write_bytes(np.ones(8, "<i2").tobytes())
    assert files_sha256(read_metaimage(p, unit="counts").source_files) != before
    mha = tmp_path / "y.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 2, 2), np.int16)), str(mha))
    assert read_metaimage(mha, unit="counts").source_files == (str(mha),)
