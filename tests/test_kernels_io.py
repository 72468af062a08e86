"""Voxel kernel files: Lanconelli et al. 2012 tables (read from ../shared at test time, never
copied into the repository) and NIfTI kernels; the VoxelKernel type."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrtdose.errors import InputError
from mrtdose.imaging.kernels_io import (
    expand_octant,
    kernel_format,
    read_dicom_kernel,
    read_lanconelli_kernel,
    read_nifti_kernel,
    read_voxel_kernel,
    write_kernel_dicom,
)
from mrtdose.imaging.nifti import write_nifti
from mrtdose.imaging.volume import Volume
from mrtdose.physics.nuclides import J_PER_MEV, get_nuclide
from mrtdose.physics.voxel_kernel_type import VoxelKernel

from conftest import shared_path

LANCONELLI = ("reference", "lanconelli2012_voxel_s_values")
#: Soft-tissue density used for the Lanconelli tables, 1.04 g/mL (reference README).
RHO_SOFT = 1.04


def _energy_in_kernel_mev(k: VoxelKernel, rho_g_per_ml: float) -> float:
    """sum(S) x voxel mass = energy absorbed inside the kernel per decay (J), in MeV."""
    mass_kg = rho_g_per_ml * k.voxel_volume_ml * 1e-3
    return k.total_gy_per_bq_s * mass_kg / J_PER_MEV


def _file_rows(path):
    lines = path.read_bytes().decode("latin-1").splitlines()[2:]
    return [(int(a), int(b), int(c), float(s)) for a, b, c, s in (ln.split() for ln in lines if ln.strip())]


# ---------------------------------------------------------------- Lanconelli reference files


def test_lu177_48mm_soft_structure_and_symmetry():
    p = shared_path(*LANCONELLI, "177Lu4.8mmsoft.txt")
    k = read_lanconelli_kernel(p)
    assert k.shape == (11, 11, 11) and k.half_width_voxels == (5, 5, 5)
    assert k.voxel_size_mm == (4.8, 4.8, 4.8)
    assert (k.nuclide, k.medium) == ("Lu-177", "soft_tissue")
    a = k.array_gy_per_bq_s
    for axis in range(3):  # a point source in a homogeneous medium: mirror symmetric
        np.testing.assert_array_equal(a, np.flip(a, axis=axis))
    np.testing.assert_array_equal(a, a.transpose(2, 1, 0))  # cubic voxels: axes interchangeable


def test_lu177_every_file_entry_lands_on_its_eight_mirror_voxels():
    p = shared_path(*LANCONELLI, "177Lu4.8mmsoft.txt")
    a = read_lanconelli_kernel(p).array_gy_per_bq_s
    rows = _file_rows(p)
    assert len(rows) == 216
    for i, j, kk, s in rows:
        for si in (-1, 1):
            for sj in (-1, 1):
                for sk in (-1, 1):
                    # i -> x (last array axis), j -> y, k -> z; mGy/(MBq s) x 1e-9 = Gy/(Bq s)
                    assert a[5 + sk * kk, 5 + sj * j, 5 + si * i] == pytest.approx(s * 1e-9, rel=1e-15)
    # the centre: the file's (0, 0, 0) entry, 1.78E-01 mGy/(MBq s) = 1.78e-10 Gy/(Bq s)
    assert rows[0][:3] == (0, 0, 0)
    assert read_lanconelli_kernel(p).centre_gy_per_bq_s == pytest.approx(rows[0][3] * 1e-9, rel=1e-15)
    assert read_lanconelli_kernel(p).centre_gy_per_bq_s == pytest.approx(1.78e-10, rel=1e-12)


def test_lu177_energy_balance():
    """Energy check (ICRP-107 via mrtdose.physics.nuclides; reference README):

    sum(S) x m_voxel (m = 1.04 g/mL x 0.48^3 mL) is the energy absorbed in the 11^3 box per
    decay. Lu-177 betas (mean 0.1333 MeV, max range ~2 mm) are absorbed well inside the 26 mm
    half-width, and at most all photon energy (0.035 MeV) can add to it, so the total must lie in
    [0.99 E_beta, E_beta + E_photon]. The README further states it is 0.96 (+-0.01) of the full
    non-penetrating energy (beta 0.1333 + conversion 0.0135 + Auger 0.0011 = 0.1479 MeV), i.e. the
    tables carry the beta spectrum but not the conversion and Auger electrons. Observed: 0.1422 MeV.
    """
    k = read_lanconelli_kernel(shared_path(*LANCONELLI, "177Lu4.8mmsoft.txt"))
    e = get_nuclide("Lu-177").energy_per_decay_mev
    absorbed = _energy_in_kernel_mev(k, RHO_SOFT)
    assert 0.99 * e["beta-"] <= absorbed <= e["beta-"] + e["gamma"] + e["X"]
    nonpen = e["beta-"] + e["IE"] + e["auger"]
    assert absorbed / nonpen == pytest.approx(0.96, abs=0.01)
    # centre voxel: ~0.96 of the beta energy per voxel mass (README), the rest escapes the voxel
    centre_mev = k.centre_gy_per_bq_s * RHO_SOFT * k.voxel_volume_ml * 1e-3 / J_PER_MEV
    assert centre_mev / e["beta-"] == pytest.approx(0.96, abs=0.01)


def test_y90_energy_balance_within_one_percent():
    """Y-90 at 4.8 mm, soft tissue: the betas (mean 0.933 MeV, CSDA range < 12 mm) are all absorbed
    within the 26 mm half-width box and photons are negligible (1e-6 MeV), so sum(S) x m equals
    the electron energy per decay to about 1 % (README; bremsstrahlung escape ~1 %)."""
    k = read_lanconelli_kernel(shared_path(*LANCONELLI, "90Y4.8mmsoft.txt"))
    e = get_nuclide("Y-90").energy_per_decay_mev
    electrons = e["beta-"] + e["IE"] + e["auger"]
    assert _energy_in_kernel_mev(k, RHO_SOFT) == pytest.approx(electrons, rel=0.01)


def test_bone_tables_without_unit_header_read():
    # The 4.8 mm bone files have a header 'i j k' only; the database's unit applies (said in the description).
    k = read_lanconelli_kernel(shared_path(*LANCONELLI, "90Y4.8mmbone.txt"))
    assert k.medium == "cortical_bone" and "header without unit" in k.description
    k2 = read_lanconelli_kernel(shared_path(*LANCONELLI, "90Y4.42mmbone.txt"))  # 'MBq\xfas' header variant
    assert k2.voxel_size_mm == (4.42, 4.42, 4.42) and "header without unit" not in k2.description


def test_voxel_size_argument_must_agree_with_file():
    p = shared_path(*LANCONELLI, "177Lu4.8mmsoft.txt")
    assert read_lanconelli_kernel(p, voxel_size_mm=4.8).voxel_size_mm == (4.8, 4.8, 4.8)
    with pytest.raises(InputError, match="voxel_size_mm disagrees"):
        read_lanconelli_kernel(p, voxel_size_mm=5.0)
    with pytest.raises(InputError, match="nuclide disagrees"):
        read_lanconelli_kernel(p, nuclide="Y-90")


# ---------------------------------------------------------------- synthetic tables (parser)


def _table(tmp_path, name, octant_fn, n=3, title="Lu177 - 3mm - Soft tissue", header="i\tj\tk\tS [mGy/(MBq\xb7s)]",
           drop=0):
    rows = [f"{i}\t{j}\t{k}\t{octant_fn(i, j, k):.6E}" for i in range(n) for j in range(n) for k in range(n)]
    rows = rows[: len(rows) - drop]
    p = tmp_path / name
    p.write_bytes(("\r\n".join([title + "\t\t\t", header] + rows) + "\r\n").encode("latin-1"))
    return p


def test_axis_mapping_with_asymmetric_synthetic_octant(tmp_path):
    # made-up values, different along each axis, to pin i -> x, j -> y, k -> z
    p = _table(tmp_path, "177Lu3mmsoft.txt", lambda i, j, k: 1.0 + 100 * i + 10 * j + k)
    kern = read_lanconelli_kernel(p)
    a = kern.array_gy_per_bq_s
    assert a.shape == (5, 5, 5)
    assert a[2, 2, 4] == pytest.approx(201e-9)  # x offset +2 (i = 2)
    assert a[2, 0, 2] == pytest.approx(21e-9)  # y offset -2 (j = 2)
    assert a[3, 2, 2] == pytest.approx(2e-9)  # z offset +1 (k = 1)
    np.testing.assert_array_equal(a, np.flip(a, axis=0))


def test_expand_octant_by_hand():
    o = np.arange(8.0).reshape(2, 2, 2)  # [k, j, i]
    full = expand_octant(o)
    assert full.shape == (3, 3, 3)
    assert full[1, 1, 1] == o[0, 0, 0] and full[0, 2, 1] == o[1, 1, 0] and full[2, 1, 0] == o[1, 0, 1]


def test_truncated_table_is_refused(tmp_path):
    p = _table(tmp_path, "177Lu3mmsoft.txt", lambda i, j, k: 1.0, drop=2)
    with pytest.raises(InputError, match="2 of 27 .* missing") as ei:
        read_lanconelli_kernel(p)
    assert ei.value.source == str(p)


def test_malformed_tables(tmp_path):
    with pytest.raises(InputError, match="not mGy/\\(MBq s\\)"):
        read_lanconelli_kernel(_table(tmp_path, "177Lu3mmsoft.txt", lambda *a: 1.0, header="i\tj\tk\tS [Gy/(Bq s)]"))
    with pytest.raises(InputError, match="header"):
        read_lanconelli_kernel(_table(tmp_path, "177Lu3mmsoft.txt", lambda *a: 1.0, header="x y z value"))
    p = _table(tmp_path, "177Lu3mmsoft.txt", lambda *a: 1.0)
    p.write_bytes(p.read_bytes() + b"0\t0\tzero\t1.0\r\n")
    with pytest.raises(InputError, match="line 30"):
        read_lanconelli_kernel(p)
    with pytest.raises(InputError, match="voxel_size_mm disagrees"):
        read_lanconelli_kernel(_table(tmp_path, "177Lu4mmsoft.txt", lambda *a: 1.0))  # title says 3 mm
    with pytest.raises(InputError, match="too short"):
        (tmp_path / "e.txt").write_bytes(b"")
        read_lanconelli_kernel(tmp_path / "e.txt")


def test_table_without_metadata_needs_arguments(tmp_path):
    p = _table(tmp_path, "mykernel.txt", lambda *a: 2.0, title="my kernel")
    with pytest.raises(InputError, match="voxel size"):
        read_lanconelli_kernel(p)
    k = read_lanconelli_kernel(p, voxel_size_mm=3.0, nuclide="177Lu", medium="soft_tissue")
    assert (k.nuclide, k.voxel_size_mm, k.centre_gy_per_bq_s) == ("Lu-177", (3.0, 3.0, 3.0), pytest.approx(2e-9))


# ---------------------------------------------------------------- NIfTI kernels


def _nifti_kernel(tmp_path, array, sidecar: dict | None, spacing=(2.0, 2.0, 3.0), name="k.nii.gz"):
    v = Volume(array=array, spacing_mm=spacing, unit="1")
    p = tmp_path / name
    p.write_bytes(write_nifti(v, compress=True))
    if sidecar is not None:
        (tmp_path / "k.json").write_text(json.dumps(sidecar))
    return p


def test_nifti_kernel_units_and_voxel_size(tmp_path):
    a = np.zeros((3, 5, 7))
    a[1, 2, 3] = 0.5
    a[1, 2, 4] = 0.25  # +x neighbour
    p = _nifti_kernel(tmp_path, a, {"unit": "mGy/(MBq s)", "nuclide": "lu177", "medium": "soft_tissue"})
    k = read_voxel_kernel(p)
    assert k.shape == (3, 5, 7) and k.voxel_size_mm == (2.0, 2.0, 3.0)
    assert k.centre_gy_per_bq_s == pytest.approx(0.5e-9) and k.array_gy_per_bq_s[1, 2, 4] == pytest.approx(0.25e-9)
    assert k.nuclide == "Lu-177" and k.matches_spacing((2.0, 2.0, 3.0)) and not k.matches_spacing((2.0, 2.0, 2.0))
    (tmp_path / "k.json").write_text(json.dumps({"unit": "mGy/(MBq h)", "nuclide": "Lu-177", "medium": "water"}))
    assert read_nifti_kernel(p).centre_gy_per_bq_s == pytest.approx(0.5 * 1e-3 / 3.6e9)


def test_nifti_kernel_errors(tmp_path):
    a = np.ones((3, 3, 3))
    p = _nifti_kernel(tmp_path, a, None)
    with pytest.raises(InputError, match="kernel unit unknown"):
        read_nifti_kernel(p)
    with pytest.raises(InputError, match="unknown kernel unit"):
        read_nifti_kernel(p, {"unit": "Sv", "nuclide": "Lu-177", "medium": "water"})
    with pytest.raises(InputError, match="nuclide and medium not given"):
        read_nifti_kernel(p, {"unit": "Gy/(Bq s)"})
    with pytest.raises(InputError, match="nuclide disagrees"):
        read_nifti_kernel(p, {"unit": "Gy/(Bq s)", "nuclide": "Y-90", "medium": "water"}, nuclide="Lu-177")
    even = _nifti_kernel(tmp_path, np.ones((3, 4, 3)), None, name="even.nii.gz")
    with pytest.raises(InputError, match="odd") as ei:
        read_nifti_kernel(even, {"unit": "Gy/(Bq s)", "nuclide": "Lu-177", "medium": "water"})
    assert ei.value.source == str(even)
    neg = _nifti_kernel(tmp_path, -np.ones((3, 3, 3)), None, name="neg.nii.gz")
    with pytest.raises(InputError, match=">= 0"):
        read_nifti_kernel(neg, {"unit": "Gy/(Bq s)", "nuclide": "Lu-177", "medium": "water"})
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(p.read_bytes()[:60])
    with pytest.raises(InputError, match="cut.nii.gz"):
        read_nifti_kernel(cut, {"unit": "Gy/(Bq s)", "nuclide": "Lu-177", "medium": "water"})
    with pytest.raises(InputError, match="file not found"):
        read_voxel_kernel(tmp_path / "k.dcm")
    (tmp_path / "k.xyz").write_bytes(b"not a kernel")
    with pytest.raises(InputError, match="unknown kernel format"):
        read_voxel_kernel(tmp_path / "k.xyz")


# ---------------------------------------------------------------- the type


def test_voxel_kernel_type():
    xyz = np.zeros((5, 3, 1))  # [x, y, z]
    xyz[4, 1, 0] = 1.0
    k = VoxelKernel.from_xyz_array(xyz, voxel_size_mm=(1.0, 2.0, 3.0), nuclide="Lu-177", medium="water", source="test")
    assert k.shape == (1, 3, 5) and k.array_gy_per_bq_s[0, 1, 4] == 1.0 and k.half_width_voxels == (2, 1, 0)
    assert k.voxel_volume_ml == pytest.approx(0.006)
    with pytest.raises(ValueError):
        k.array_gy_per_bq_s[0, 0, 0] = 1.0
    for bad, match in [
        (dict(array_gy_per_bq_s=np.ones((2, 3, 3))), "odd"),
        (dict(array_gy_per_bq_s=np.full((3, 3, 3), np.nan)), "NaN"),
        (dict(voxel_size_mm=(1.0, 0.0, 1.0)), "positive"),
        (dict(nuclide=""), "nuclide"),
    ]:
        kw = dict(array_gy_per_bq_s=np.ones((3, 3, 3)), voxel_size_mm=(1.0, 1.0, 1.0), nuclide="Lu-177", medium="w", source="t")
        kw.update(bad)
        with pytest.raises(InputError, match=match):
            VoxelKernel(**kw)


# --- Interfile kernels ---------------------------------------------------------------------


def _write_interfile(d, array_zyx, size_xyz=(4.0, 4.0, 5.0), unit="mGy/(MBq s)", order="LITTLEENDIAN", extra=""):
    dt = "<f4" if order == "LITTLEENDIAN" else ">f4"
    (d / "k.v").write_bytes(np.asarray(array_zyx, dtype=dt).tobytes())
    nz, ny, nx = array_zyx.shape
    hdr = (
        "!INTERFILE :=\n!name of data file := k.v\n!number format := float\n!number of bytes per pixel := 4\n"
        f"imagedata byte order := {order}\n!matrix size [1] := {nx}\n!matrix size [2] := {ny}\n!matrix size [3] := {nz}\n"
        f"scaling factor (mm/pixel) [1] := {size_xyz[0]}\nscaling factor (mm/pixel) [2] := {size_xyz[1]}\n"
        f"scaling factor (mm/pixel) [3] := {size_xyz[2]}\n" + (f"unit := {unit}\n" if unit else "")
        + "nuclide := Lu-177\nmedium := soft_tissue\n" + extra + "!END OF INTERFILE :=\n"
    )
    (d / "k.hv").write_text(hdr)
    return d / "k.hv"


def test_interfile_kernel_round_trip(tmp_path):
    """Values are read x fastest (Interfile 3.3) into [z, y, x] and converted 1 mGy/(MBq s) = 1e-9 Gy/(Bq s)."""
    from mrtdose.imaging.kernels_io import read_voxel_kernel

    rng = np.random.default_rng(0)
    a = rng.random((3, 5, 7)).astype(np.float32)
    for order in ("LITTLEENDIAN", "BIGENDIAN"):
        k = read_voxel_kernel(_write_interfile(tmp_path, a, order=order))
        assert k.array_gy_per_bq_s.shape == (3, 5, 7)
        assert np.allclose(k.array_gy_per_bq_s, a.astype(np.float64) * 1e-9, rtol=1e-7)
        assert k.voxel_size_mm == (4.0, 4.0, 5.0) and k.nuclide == "Lu-177"


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"unit": None}, "unit unknown"),
        ({"extra": "!matrix size [1] := 9\n"}, "bytes; the header needs"),
    ],
)
def test_interfile_kernel_errors(tmp_path, kw, match):
    from mrtdose.errors import InputError
    from mrtdose.imaging.kernels_io import read_voxel_kernel

    a = np.ones((3, 3, 3), dtype=np.float32)
    with pytest.raises(InputError, match=match):
        read_voxel_kernel(_write_interfile(tmp_path, a, **kw))


def test_interfile_missing_data_file(tmp_path):
    from mrtdose.errors import InputError
    from mrtdose.imaging.kernels_io import read_voxel_kernel

    h = _write_interfile(tmp_path, np.ones((3, 3, 3), dtype=np.float32))
    (tmp_path / "k.v").unlink()
    with pytest.raises(InputError, match="cannot read data file"):
        read_voxel_kernel(h)


# --- DICOM kernels -------------------------------------------------------------------------

import io  # noqa: E402

import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from mrtdose.physics.voxel_kernels import compute_voxel_kernel  # noqa: E402

UINT32_MAX = 2**32 - 1


@pytest.fixture(scope="module")
def lu177_kernel():
    """Our computed Lu-177 kernel, 6 mm voxels (53^3): the object to round-trip."""
    return compute_voxel_kernel("Lu-177", (6.0, 6.0, 6.0), "soft_tissue")


def _resave(raw: bytes, edit) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(raw))
    edit(ds)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_kernel_round_trip_within_stored_precision(tmp_path, lu177_kernel):
    """Write our computed Lu-177 kernel as RT Dose, read it back (dispatched by content: the
    file has no .dcm name): equal to the original within the stated quantisation, |error| <=
    DoseGridScaling / 2 = max / (2 (2^32 - 1)) (1.2e-10 of the maximum), and every other
    property identical."""
    k = lu177_kernel
    p = tmp_path / "lu177_6mm_kernel"
    p.write_bytes(write_kernel_dicom(k))
    assert kernel_format(p) == "dicom"
    back = read_voxel_kernel(p, nuclide="Lu-177")
    assert back.shape == k.shape and back.voxel_size_mm == k.voxel_size_mm
    assert (back.nuclide, back.medium) == ("Lu-177", "soft_tissue")
    err = np.abs(back.array_gy_per_bq_s - k.array_gy_per_bq_s).max()
    assert err <= k.array_gy_per_bq_s.max() / (2 * UINT32_MAX) * (1 + 1e-6)
    assert back.centre_gy_per_bq_s == pytest.approx(k.centre_gy_per_bq_s, rel=1e-9)
    assert back.total_gy_per_bq_s == pytest.approx(k.total_gy_per_bq_s, rel=1e-8)
    # in Gy/(Bq s) too (Dose Grid Scaling then of order 1e-20: a Decimal String with exponent)
    p2 = tmp_path / "k_gy.dcm"
    p2.write_bytes(write_kernel_dicom(k, unit="Gy/(Bq s)"))
    assert np.abs(read_dicom_kernel(p2).array_gy_per_bq_s - k.array_gy_per_bq_s).max() <= err * (1 + 1e-6) + 1e-30


def test_dicom_kernel_encoding_with_pydicom(lu177_kernel):
    ds = pydicom.dcmread(io.BytesIO(write_kernel_dicom(lu177_kernel)))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2" and ds.DoseUnits == "RELATIVE"
    assert "unit: mGy/(MBq s)" in ds.DoseComment and len(ds.DoseComment) <= 64
    assert "nuclide: Lu-177" in ds.ImageComments and "layout: full" in ds.ImageComments
    assert ds.PatientID == ""  # Type 2: no patient
    # source voxel (centre frame, row, column) at (0, 0, 0) mm, PS3.3 C.7.6.2.1.1
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    n = lu177_kernel.shape[0] // 2
    np.testing.assert_allclose(ipp + n * 6.0, 0.0, atol=1e-9)
    # 1 mGy/(MBq s) = 1e-9 Gy/(Bq s): the centre in the file's unit
    centre = ds.pixel_array[n, n, n] * float(ds.DoseGridScaling)
    assert centre * 1e-9 == pytest.approx(lu177_kernel.centre_gy_per_bq_s, rel=1e-8)
    assert ds.RealWorldValueMappingSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mGy/(MBq.s)"


def _generic_kernel(tmp_path, array_zyx, *, spacing=(2.0, 2.0), slices=3.0, slope=1e-3, comments=None,
                    name="k.dcm", extra=None):
    """A multi-frame grey-scale Secondary Capture image (not RT Dose) holding a kernel:
    value = stored x Rescale Slope (Modality LUT, PS3.3 C.11.1)."""
    stored = np.rint(np.asarray(array_zyx) / slope).astype("<u2")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    nz, ny, nx = stored.shape
    ds.NumberOfFrames, ds.Rows, ds.Columns = nz, ny, nx
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    if slices is not None:
        ds.SpacingBetweenSlices = slices
    ds.RescaleSlope, ds.RescaleIntercept = slope, 0
    if comments is not None:
        ds.ImageComments = comments
    for kw, v in (extra or {}).items():
        setattr(ds, kw, v)
    ds.PixelData = stored.tobytes()
    p = tmp_path / name
    ds.save_as(p, enforce_file_format=True)
    return p


def test_generic_dicom_octant_expanded_by_symmetry(tmp_path):
    """An octant (offsets 0..n-1, source voxel first) in a generic image, with the unit and layout
    in Image Comments; expanded to S(+-i, +-j, +-k) = S(i, j, k), checked voxel by voxel against
    the octant by hand; voxel size from Pixel Spacing (row = dy, column = dx) and Spacing Between
    Slices; 1 mGy/(MBq s) = 1e-9 Gy/(Bq s)."""
    rng = np.random.default_rng(3)
    octant = rng.integers(1, 1000, size=(2, 3, 4)) * 1e-3  # [z, y, x], exactly representable at slope 1e-3
    octant[0, 0, 0] = 2.0
    p = _generic_kernel(tmp_path, octant, spacing=(3.0, 2.5), slices=4.0,
                        comments="unit: mGy/(MBq s); layout: octant; nuclide: 177Lu; medium: soft_tissue")
    k = read_voxel_kernel(p)
    assert k.shape == (3, 5, 7) and k.voxel_size_mm == (2.5, 3.0, 4.0)
    for (dz, dy, dx) in [(0, 0, 0), (1, 2, 3), (-1, -2, -3), (1, -1, 2), (-1, 0, -3)]:
        assert k.array_gy_per_bq_s[1 + dz, 2 + dy, 3 + dx] == pytest.approx(octant[abs(dz), abs(dy), abs(dx)] * 1e-9,
                                                                            rel=1e-12)
    assert k.nuclide == "Lu-177"


@pytest.mark.parametrize(
    "edit, match",
    [
        # the unit: never assumed, a known one, consistent with Dose Units and between sources
        (lambda ds: (delattr(ds, "DoseComment"), delattr(ds, "ImageComments"),
                     ds.private_block(0x0077, "MRTDOSE 1").__delitem__(0x11)), "kernel unit unknown"),
        (lambda ds: setattr(ds, "DoseComment", "unit: Gy"), "unit disagrees|unknown kernel unit"),
        (lambda ds: setattr(ds, "DoseUnits", "GY"), "Dose Units GY"),
        (lambda ds: setattr(ds, "DoseComment", "unit: Gy/(Bq s)"), "unit disagrees"),
        # geometry
        (lambda ds: delattr(ds, "PixelSpacing"), "Pixel Spacing"),
        (lambda ds: setattr(ds, "GridFrameOffsetVector", [0.0] * int(ds.NumberOfFrames)), "equally spaced"),
        # what the file holds
        (lambda ds: ds.private_block(0x0077, "MRTDOSE 1").__getitem__(0x10).__setattr__(
            "value", "TIME_INTEGRATED_ACTIVITY_CONCENTRATION"), "not a voxel kernel"),
        (lambda ds: ds.private_block(0x0077, "MRTDOSE 1").__getitem__(0x12).__setattr__("value", "Y-90"),
         "nuclide disagrees"),
        # a zero scaling would give an all-zero kernel (zero doses), not an error
        (lambda ds: setattr(ds, "DoseGridScaling", "0"), "Dose Grid Scaling"),
        (lambda ds: setattr(ds, "DoseGridScaling", "-1e-5"), "Dose Grid Scaling"),
    ],
)
def test_dicom_kernel_errors_name_the_file(tmp_path, edit, match):
    k = compute_voxel_kernel("Lu-177", (6.0, 6.0, 6.0), "soft_tissue")
    p = tmp_path / "bad.dcm"
    p.write_bytes(_resave(write_kernel_dicom(k), edit))
    with pytest.raises(InputError, match=match) as ei:
        read_voxel_kernel(p, nuclide="Lu-177")
    assert ei.value.source == str(p)


def test_generic_dicom_kernel_errors(tmp_path):
    full = np.ones((3, 3, 3))
    full[1, 1, 1] = 2.0
    keys = "unit: mGy/(MBq s); nuclide: Lu-177; medium: water"
    with pytest.raises(InputError, match="odd") as ei:  # even size, full layout
        read_voxel_kernel(_generic_kernel(tmp_path, np.ones((3, 4, 3)), comments=keys, name="even.dcm"))
    assert ei.value.source.endswith("even.dcm")
    with pytest.raises(InputError, match="slice spacing unknown"):
        read_voxel_kernel(_generic_kernel(tmp_path, full, slices=None, comments=keys, name="nz.dcm"))
    with pytest.raises(InputError, match="Pixel Spacing"):
        read_voxel_kernel(_generic_kernel(tmp_path, full, spacing=None, comments=keys, name="nps.dcm"))
    off = np.ones((3, 3, 3))
    off[0, 0, 0] = 5.0  # an octant stored as if full: its maximum is in a corner
    with pytest.raises(InputError, match="not at the centre"):
        read_voxel_kernel(_generic_kernel(tmp_path, off, comments=keys, name="corner.dcm"))
    with pytest.raises(InputError, match="kernel unit unknown"):
        read_voxel_kernel(_generic_kernel(tmp_path, full, comments="nuclide: Lu-177; medium: water", name="nu.dcm"))
    # the unit as an argument (the case's voxel.kernel.unit) for a file that lacks it
    k = read_voxel_kernel(tmp_path / "nu.dcm", unit="Gy/(Bq s)")
    assert k.centre_gy_per_bq_s == pytest.approx(2.0)
    with pytest.raises(InputError, match="unit disagrees"):
        read_voxel_kernel(_generic_kernel(tmp_path, full, comments=keys, name="u.dcm"), unit="Gy/(Bq s)")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes((tmp_path / "u.dcm").read_bytes()[:-20])
    with pytest.raises(InputError, match="pixel data") as ei:
        read_voxel_kernel(cut)
    assert ei.value.source == str(cut)
    tia = tmp_path / "tia.dcm"  # a TIA RT Dose is not a kernel
    from mrtdose.imaging.rtdose import write_tia_rtdose

    tia.write_bytes(write_tia_rtdose(Volume(array=full, spacing_mm=(2.0, 2.0, 2.0), unit="MBq h/mL"), None,
                                     patient_id="P", allow_missing_reference=True))
    with pytest.raises(InputError, match="time integrated activity concentration, not a voxel kernel"):
        read_voxel_kernel(tia)


def test_unit_argument_agrees_across_formats(tmp_path):
    """The case's kernel unit must agree with what a file says (Lanconelli: always mGy/(MBq s);
    NIfTI: the sidecar; Interfile: the header); a NIfTI kernel may take it from the argument."""
    a = np.ones((3, 3, 3))
    p = _nifti_kernel(tmp_path, a, {"nuclide": "Lu-177", "medium": "water"})
    assert read_voxel_kernel(p, unit="mGy/(MBq s)").centre_gy_per_bq_s == pytest.approx(1e-9)
    (tmp_path / "k.json").write_text(json.dumps({"unit": "Gy/(Bq s)", "nuclide": "Lu-177", "medium": "water"}))
    with pytest.raises(InputError, match="unit disagrees"):
        read_voxel_kernel(p, unit="mGy/(MBq s)")
    t = _table(tmp_path, "177Lu3mmsoft.txt", lambda i, j, k: 1.0)
    with pytest.raises(InputError, match="contradicts"):
        read_voxel_kernel(t, unit="Gy/(Bq s)")
    assert read_voxel_kernel(t, unit="mGy/(MBq s)", nuclide="Lu-177").nuclide == "Lu-177"
    with pytest.raises(InputError, match="nuclide disagrees"):
        read_voxel_kernel(_write_interfile(tmp_path, np.ones((3, 3, 3), dtype=np.float32)), nuclide="Y-90")
