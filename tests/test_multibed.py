"""Multi-bed SPECT/PET: beds cut from one synthetic volume are joined back (mrtdose.imaging.multibed).

Truth is analytic: the volume the beds were cut from, or a closed-form function sampled at the
joined slice centres. Geometry follows DICOM PS3.3 C.7.6.2.1.1 (through Volume)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from mrtdose.errors import InputError
from mrtdose.imaging.multibed import join_beds
from mrtdose.imaging.volume import Volume

T0 = datetime(2024, 3, 5, 10, 0, tzinfo=timezone.utc)
DZ = 4.0
# oblique-free but non-trivial orientation: k runs towards the feet (-z), as in many NM exports
FLIP = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]])


def _vol(arr, k0=0, *, direction=None, unit="Bq/mL", name="bed", t=T0, spacing=(3.0, 3.0, DZ), origin=(-10.0, 5.0, 50.0),
         modality="NM"):
    """Slices k0.. of a volume whose slice 0 is at ``origin`` (the bed's origin is that slice's position)."""
    d = np.eye(3) if direction is None else np.asarray(direction)
    o = np.asarray(origin) + d[:, 2] * spacing[2] * k0
    return Volume(array=arr, spacing_mm=spacing, origin_mm=tuple(o), direction=d, unit=unit, acquisition_time=t,
                  modality=modality, source_files=(f"{name}.dcm",))


def _smooth(nk, ny=5, nx=6):
    k, j, i = np.meshgrid(np.arange(nk), np.arange(ny), np.arange(nx), indexing="ij")
    return 100.0 + 40.0 * np.sin(0.3 * k) * np.cos(0.5 * j) + 3.0 * i


@pytest.mark.parametrize("overlap", ["linear", "average"])
@pytest.mark.parametrize("direction", [None, FLIP])
def test_beds_cut_from_one_volume_are_reproduced(overlap, direction):
    """Three beds of 14 slices overlapping by 4 and 6 slices, given out of order. Uniform image:
    exact; smooth non-uniform image: also exact, since every bed holds the same values in the
    overlap and the weights are a partition of unity. Tolerance 1e-13 relative: the weighted mean
    sum(w v)/sum(w) of equal values is exact up to a few ulp."""
    for full in (np.full((32, 5, 6), 7.25), _smooth(32)):
        beds = [_vol(full[0:14], 0, direction=direction, name="b1"),
                _vol(full[10:24], 10, direction=direction, name="b2"),
                _vol(full[18:32], 18, direction=direction, name="b3")]
        joined, info = join_beds([beds[2], beds[0], beds[1]], overlap=overlap)
        ref = _vol(full, 0, direction=direction)
        assert joined.same_grid(ref, atol_mm=1e-9)
        np.testing.assert_allclose(joined.array, full, rtol=1e-13, atol=0)
        assert [b.source for b in info.beds] == ["b1.dcm", "b2.dcm", "b3.dcm"]
        assert [b.input_index for b in info.beds] == [1, 2, 0]
        assert [b.overlap_with_previous_mm for b in info.beds] == [None, 4 * DZ, 6 * DZ]
        assert [(b.first_slice, b.n_slices) for b in info.beds] == [(0, 14), (10, 14), (18, 14)]
        assert not any(b.resampled for b in info.beds) and info.overlap == overlap
        assert joined.source_files == ("b1.dcm", "b2.dcm", "b3.dcm") and joined.acquisition_time == T0
        z = [b.z_extent_mm for b in info.beds]
        s = -1.0 if direction is not None else 1.0
        assert z[1] == pytest.approx(tuple(sorted((50 + s * (10 - 0.5) * DZ, 50 + s * (23 + 0.5) * DZ))))


def test_linear_feathering_ramps_across_the_overlap():
    """Bed A = 1, bed B = 3, overlap of m = 4 slices. Linear: bed B's normalised weight at overlap
    slice i (1..m) is its distance to B's lower face over the overlap length, (i - 1/2)/m, so the
    value is 1 + 2 (i - 1/2)/m; average: 2. Exact to rounding (1e-14)."""
    m = 4
    a = _vol(np.ones((12, 2, 2)), 0, name="A")
    b = _vol(np.full((12, 2, 2), 3.0), 12 - m, name="B")
    lin = join_beds([a, b], overlap="linear")[0].array[:, 0, 0]
    avg = join_beds([a, b], overlap="average")[0].array[:, 0, 0]
    assert lin.shape == (20,)
    expect = np.array([1.0 + 2.0 * (i - 0.5) / m for i in range(1, m + 1)])
    np.testing.assert_allclose(lin[12 - m:12], expect, rtol=1e-14)
    np.testing.assert_allclose(avg[12 - m:12], 2.0, rtol=1e-14)
    np.testing.assert_array_equal(lin[:12 - m], 1.0)
    np.testing.assert_array_equal(lin[12:], 3.0)


def test_contiguous_beds_join_without_overlap():
    full = _smooth(20)
    joined, info = join_beds([_vol(full[:8], 0, name="a"), _vol(full[8:], 8, name="b")])
    np.testing.assert_array_equal(joined.array, full)
    assert info.beds[1].overlap_with_previous_mm == 0.0


def test_fractional_slice_offset_is_resampled_linearly():
    """Bed 2 starts 0.4 slice off the grid of bed 1. f(z) = 100 + 50 sin(z / 20 mm) is sampled at
    each bed's own slice centres; the join is compared with f at the joined centres. Where bed 2
    is interpolated between two of its centres the linear-interpolation error is at most
    h^2/8 max|f''| = 16/8 * 50/400 = 0.25 (h = 4 mm); in the overlap bed 1 (exact) and bed 2 are
    mixed, so the bound holds there too. Within half a slice of bed 2's end faces (joined slices 10
    and 24) its end value is held: error at most (h/2) max|f'| = 2 * 2.5 = 5 there."""
    off = 0.4

    def f(z):
        return 100.0 + 50.0 * np.sin(z / 20.0)

    o = np.array([0.0, 0.0, 0.0])
    z1 = np.arange(15) * DZ
    z2 = (10 + off + np.arange(15)) * DZ
    shape = (1, 3, 3)
    b1 = Volume(array=f(z1)[:, None, None] * np.ones(shape), spacing_mm=(2, 2, DZ), origin_mm=tuple(o), unit="Bq/mL",
                source_files=("b1.dcm",))
    b2 = Volume(array=f(z2)[:, None, None] * np.ones(shape), spacing_mm=(2, 2, DZ), origin_mm=(0.0, 0.0, z2[0]),
                unit="Bq/mL", source_files=("b2.dcm",))
    for overlap in ("linear", "average"):
        joined, info = join_beds([b1, b2], overlap=overlap)
        # bed 2's extent ends at (10 + 0.4 + 14.5) slices = 24.9: last joined centre is slice 24
        assert joined.shape[0] == 25
        zj = np.arange(25) * DZ
        err = np.abs(joined.array[:, 0, 0] - f(zj))
        np.testing.assert_array_equal(err[:10], 0.0)  # bed 1 alone
        assert err[11:24].max() <= 16 / 8 * 50 / 400 + 1e-12
        assert err[[10, 24]].max() <= 2 * 2.5 + 1e-12
        assert info.beds[1].resampled and info.beds[1].slice_offset == pytest.approx(off)
        assert any("b2.dcm" in n and "linear interpolation" in n for n in info.notes)


def test_decay_correction_to_the_earliest_bed():
    """Bed 2 starts 30 min after bed 1; its Bq/mL values are C 2^(-0.5 h / T). With the half-life
    the join restores C (rtol 1e-12), the joined time is bed 1's. Without it nothing is corrected
    and a note says so. Lu-177 T = 159.53 h (ICRP 107) -- any T works for this identity."""
    t_half = 159.53
    c = 1000.0
    late = T0 + timedelta(minutes=30)
    b1 = _vol(np.full((10, 2, 2), c), 0, name="b1")
    b2 = _vol(np.full((10, 2, 2), c * 2 ** (-0.5 / t_half)), 6, name="b2", t=late)
    joined, info = join_beds([b2, b1], half_life_h=t_half)
    np.testing.assert_allclose(joined.array, c, rtol=1e-12)
    assert joined.acquisition_time == T0
    assert info.beds[1].decay_factor == pytest.approx(2 ** (0.5 / t_half), rel=1e-15)
    raw, info2 = join_beds([b1, b2])
    assert raw.array[-1, 0, 0] == pytest.approx(c * 2 ** (-0.5 / t_half), rel=1e-15)
    assert any("not decay corrected" in n for n in info2.notes)


def test_gap_between_beds_names_the_bed_above_it():
    full = _smooth(30)
    with pytest.raises(InputError) as ei:
        join_beds([_vol(full[:10], 0, name="low"), _vol(full[12:22], 12, name="high")])
    assert ei.value.source == "high.dcm" and ei.value.field == "origin_mm"
    assert "gap of 8 mm" in str(ei.value)
    with pytest.raises(InputError) as ei:  # a bed inside another: the same bed twice
        join_beds([_vol(full[:10], 0, name="a"), _vol(full[2:8], 2, name="b")])
    assert ei.value.source == "b.dcm"


@pytest.mark.parametrize(
    "kwargs, other, field",
    [
        ({}, dict(spacing=(3.0, 3.1, DZ)), "spacing_mm"),
        ({}, dict(spacing=(3.0, 3.0, 4.2)), "spacing_mm"),
        ({}, dict(direction=np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])), "direction"),
        ({}, dict(unit="kBq/mL"), "unit"),
        ({}, dict(modality="PT"), "modality"),
        ({}, dict(origin=(-9.0, 5.0, 50.0)), "origin_mm"),  # shifted 1 mm in-plane
        ({"frame_of_reference_uids": ["1.2.3", "1.2.4"]}, {}, "frame_of_reference_uids"),
        ({"patient_ids": ["P1", "P2"]}, {}, "patient_ids"),
    ],
)
def test_mismatched_beds_are_refused_naming_the_bed(kwargs, other, field):
    full = _smooth(20)
    a = _vol(full[:12], 0, name="first")
    b = _vol(full[8:], 8, name="second", **other)
    with pytest.raises(InputError) as ei:
        join_beds([a, b], **kwargs)
    assert ei.value.field == field and ei.value.source == "second.dcm", str(ei.value)


def test_counts_beds_need_equal_durations():
    """Counts per bed acquired for different times are on different scales: refused; equal
    durations join (uniform: exact)."""
    a = _vol(np.full((10, 2, 2), 50.0), 0, unit="counts", name="a")
    b = _vol(np.full((10, 2, 2), 50.0), 7, unit="counts", name="b")
    with pytest.raises(InputError) as ei:
        join_beds([a, b], durations_s=[600.0, 900.0])
    assert ei.value.source == "b.dcm" and ei.value.field == "durations_s"
    with pytest.raises(InputError) as ei:
        join_beds([a, b])
    assert ei.value.field == "durations_s"
    joined, info = join_beds([a, b], durations_s=[600.0, 600.0])
    np.testing.assert_allclose(joined.array, 50.0, rtol=1e-14)
    assert joined.unit == "counts" and [x.duration_s for x in info.beds] == [600.0, 600.0]


# ---------------------------------------------------------------------------------------------
# end to end: a case whose SPECT is two NM bed series


HALF_LIFE_EFF_H = 60.0


def _activity_maps(times_h):
    """Integer Bq/mL maps (NM stores integers in range unscaled: dicom_synth), 36 slices of 4 mm:
    a 'liver' block and a 'kidney' block clearing mono-exponentially, background 50 Bq/mL."""
    labels = np.zeros((36, 10, 10), dtype=np.int16)
    labels[4:16, 2:8, 2:8] = 1     # liver, lower bed only
    labels[14:24, 3:7, 3:7] = 2    # kidneys, straddling the overlap (slices 12..19)
    labels[26:33, 1:5, 4:9] = 3    # spleen, upper bed only
    maps = []
    for t in times_h:
        f = math.exp(-math.log(2) * t / HALF_LIFE_EFF_H)
        a = np.full(labels.shape, 50.0)
        a[labels == 1] = np.rint(20000 * f)
        a[labels == 2] = np.rint(40000 * f)
        a[labels == 3] = np.rint(30000 * f)
        maps.append(a)
    return labels, maps


def _write_case(tmp_path, split: bool, gap: bool = False):
    from mrtdose.imaging.dicom_synth import write_nm_series
    from mrtdose.imaging.nifti import write_nifti

    times_h = (4.0, 24.0, 96.0)
    admin = T0
    labels, maps = _activity_maps(times_h)
    direction = np.eye(3)  # the NM writer stores frames along +n (dicom_synth); the labels must match the read grid
    origin = (-18.0, -18.0, 200.0)
    tps = []
    for n, (t_h, a) in enumerate(zip(times_h, maps)):
        t = admin + timedelta(hours=t_h)
        kw = dict(patient_id="MB-1", study_uid=f"1.2.826.0.1.3680043.10.1.{n}", frame_of_reference_uid=f"1.2.826.0.1.3680043.10.2.{n}",
                  acquisition_time=t, units="BQML")
        if split:
            lo, hi = (0, 20), ((22 if gap else 12), 36)
            dirs = []
            for b, (k0, k1) in enumerate((lo, hi)):
                vol = Volume(array=a[k0:k1], spacing_mm=(4.0, 4.0, 4.0), unit="Bq/mL", modality="NM",
                             origin_mm=tuple(np.asarray(origin) + direction[:, 2] * 4.0 * k0), direction=direction,
                             acquisition_time=t)
                d = tmp_path / f"tp{n}" / f"bed{b}"
                write_nm_series(vol, d, **kw)
                dirs.append(str(d))
            tps.append({"spect": dirs[::-1]})  # listed head first: sorted by the reader
        else:
            vol = Volume(array=a, spacing_mm=(4.0, 4.0, 4.0), unit="Bq/mL", modality="NM", origin_mm=origin,
                         direction=direction, acquisition_time=t)
            write_nm_series(vol, tmp_path / f"tp{n}" / "nm", **kw)
            tps.append({"spect": str(tmp_path / f"tp{n}" / "nm")})
    lab = Volume(array=labels, spacing_mm=(4.0, 4.0, 4.0), unit="1", origin_mm=origin, direction=direction)
    (tmp_path / "labels.nii.gz").write_bytes(write_nifti(lab, compress=True))
    return {
        "patient": {"id": "MB-1"},
        "radiopharmaceutical": "Lu-177-DOTATATE",
        "administration": {"activity_mbq": 7400, "time": admin.isoformat()},
        "imaging": {"timepoints": tps, "registration": "none",
                    "regions": {"labels": {"file": "labels.nii.gz",
                                           "regions": {"liver": 1, "kidneys": 2, "spleen": 3}}}},
        "options": {"monte_carlo_samples": 0},
    }


def test_two_bed_case_equals_the_unsplit_series(tmp_path):
    """Each time point written as one NM series and as two bed series overlapping by 8 slices
    (32 mm), same acquisition time: the region activities agree to 1e-6 relative (the integer
    Bq/mL values are stored unscaled, and the beds hold the same values in the overlap, so the
    join reproduces the series to rounding). Provenance records each bed."""
    from mrtdose.workflow.case import parse_case
    from mrtdose.workflow.pipeline import run_case

    (tmp_path / "one").mkdir()
    (tmp_path / "beds").mkdir()
    one = run_case(parse_case(_write_case(tmp_path / "one", split=False)), base_dir=tmp_path / "one").results["imaging"]
    two = run_case(parse_case(_write_case(tmp_path / "beds", split=True)), base_dir=tmp_path / "beds").results["imaging"]
    for n in ("liver", "kidneys", "spleen"):
        np.testing.assert_allclose(two["regions"][n]["activities_mbq"], one["regions"][n]["activities_mbq"], rtol=1e-6)
        assert one["regions"][n]["activities_mbq"][0] > 0
    tp = two["timepoints"][0]
    beds = tp["beds"]["beds"]
    assert [b["path"].split("/")[-1] for b in beds] == ["bed0", "bed1"]
    assert beds[1]["overlap_with_previous_mm"] == pytest.approx(32.0)
    assert all(len(b["sha256"]) == 64 for b in beds) and beds[0]["sha256"] != beds[1]["sha256"]
    assert [b["z_extent_mm"] for b in beds] == [pytest.approx([198.0, 278.0]), pytest.approx([246.0, 342.0])]
    assert tp["beds"]["overlap"] == "linear" and "joined" in tp["quantification"]
    assert "beds" not in one["timepoints"][0]


def test_gap_between_bed_series_is_a_case_error(tmp_path):
    from mrtdose.workflow.case import parse_case
    from mrtdose.workflow.pipeline import run_case

    doc = _write_case(tmp_path, split=True, gap=True)
    with pytest.raises(InputError) as ei:
        run_case(parse_case(doc), base_dir=tmp_path)
    assert ei.value.field.startswith("imaging.timepoints.0.spect.0")  # the upper bed, listed first
    assert "bed1" in ei.value.source and "gap of 8 mm" in ei.value.detail


def test_case_schema_for_beds():
    from mrtdose.workflow.case import ImagingTimepoint

    tp = ImagingTimepoint.model_validate({"spect": ["a", "b"], "series_uid": ["1.2", None], "bed_overlap": "average"})
    assert tp.spect == ["a", "b"] and tp.bed_overlap == "average"
    with pytest.raises(ValueError, match="2 entries for 3 beds"):
        ImagingTimepoint.model_validate({"spect": ["a", "b", "c"], "series_uid": ["1", "2"]})
    with pytest.raises(ValueError, match="listed twice"):
        ImagingTimepoint.model_validate({"spect": ["a", "a"]})
    with pytest.raises(ValueError, match="needs a list of beds"):
        ImagingTimepoint.model_validate({"spect": "a", "series_uid": ["1"]})


def test_nifti_beds_take_the_time_points_time_override(tmp_path):
    """NIfTI beds whose sidecars have no acquisition time, with the time point's ``time:`` given
    (the documented way for files without time headers): every bed carries that time, the join
    keeps it (no decay between beds) and each region's activity is the analytic sum of its voxels
    (label count x 0.064 mL x Bq/mL; rtol 1e-9: float sums of integers). Before the fix the beds
    were joined with no time and the run stopped on an assertion."""
    import json

    from mrtdose.imaging.nifti import write_nifti
    from mrtdose.workflow.case import parse_case
    from mrtdose.workflow.pipeline import run_case

    times_h = (4.0, 24.0, 96.0)
    labels, maps = _activity_maps(times_h)
    origin = (-18.0, -18.0, 200.0)
    tps = []
    for n, (t_h, a) in enumerate(zip(times_h, maps)):
        files = []
        for b, (k0, k1) in enumerate(((0, 20), (12, 36))):
            vol = Volume(array=a[k0:k1], spacing_mm=(4.0, 4.0, 4.0), unit="Bq/mL", modality="NM",
                         origin_mm=(origin[0], origin[1], origin[2] + 4.0 * k0))
            (tmp_path / f"tp{n}_bed{b}.nii.gz").write_bytes(write_nifti(vol, compress=True))
            (tmp_path / f"tp{n}_bed{b}.json").write_text(json.dumps({"unit": "Bq/mL"}))
            files.append(f"tp{n}_bed{b}.nii.gz")
        tps.append({"spect": files, "time": (T0 + timedelta(hours=t_h)).isoformat()})
    lab = Volume(array=labels, spacing_mm=(4.0, 4.0, 4.0), unit="1", origin_mm=origin)
    (tmp_path / "labels.nii.gz").write_bytes(write_nifti(lab, compress=True))
    doc = {"patient": {"id": "MB-1"}, "radiopharmaceutical": "Lu-177-DOTATATE",
           "administration": {"activity_mbq": 7400, "time": T0.isoformat()},
           "imaging": {"timepoints": tps, "registration": "none",
                       "regions": {"labels": {"file": "labels.nii.gz",
                                              "regions": {"liver": 1, "kidneys": 2, "spleen": 3}}}},
           "options": {"monte_carlo_samples": 0}}
    im = run_case(parse_case(doc), base_dir=tmp_path).results["imaging"]
    assert [round(t["time_h"], 9) for t in im["timepoints"]] == list(times_h)
    assert all(t["time_source"].startswith("earliest bed start (time (case override))") for t in im["timepoints"])
    for n, lab_value in (("liver", 1), ("kidneys", 2), ("spleen", 3)):
        truth = [float(a[labels == lab_value].sum()) * 0.064 / 1e6 for a in maps]
        np.testing.assert_allclose(im["regions"][n]["activities_mbq"], truth, rtol=1e-9)
