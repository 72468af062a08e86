"""A case of DICOM directories end to end: virtual patient -> imaging step -> core chain.

Truth is the virtual patient's (mrtdose.workflow.virtual_patient); tolerances follow from the
light SPECT model's 10 mm FWHM resolution: large organs within the spill-in/out seen in
tests/test_virtual_patient.py, small lesions lower, the smaller the lower (partial volume)."""

from __future__ import annotations

import copy
import json

import pytest

from mrtdose.errors import InputError
from mrtdose.workflow.case import parse_case
from mrtdose.workflow.pipeline import run_case


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    from mrtdose.workflow.virtual_patient import simulate_patient

    d = tmp_path_factory.mktemp("vp")
    simulate_patient(d, seed=5)
    return d, json.loads((d / "truth.json").read_text())


def _case(truth):
    from mrtdose.workflow.virtual_patient import imaging_case

    doc = imaging_case(truth)
    doc["options"] = {"monte_carlo_samples": 0}
    return doc


def test_dicom_case_end_to_end(patient):
    d, truth = patient
    res = run_case(parse_case(_case(truth)), base_dir=d).results
    im = res["imaging"]
    assert [round(tp["time_h"], 3) for tp in im["timepoints"]] == [tp["time_h"] for tp in truth["time_points"]]
    for n in ("liver", "kidneys", "spleen", "lesion_1", "lesion_3"):
        # masses from the CT with the default HU->density curve, as the generator's truth
        assert res["regions"][n]["mass"]["value"] == pytest.approx(truth["regions"][n]["mass_g"], rel=1e-3), n
    ratio = {n: res["regions"][n]["time_integrated_activity"]["value"] / truth["regions"][n]["tia_mbq_h"]
             for n in ("liver", "kidneys", "spleen", "lesion_1", "lesion_3")}
    assert 1.0 < ratio["liver"] < 1.2      # spill-in from the hot lesion inside the liver (7-13 % per time point)
    assert 0.7 < ratio["kidneys"] < 0.92   # spill-out of a small, elongated organ (exact-mask recovery 0.82)
    assert 0.75 < ratio["spleen"] < 1.0
    assert ratio["lesion_3"] < ratio["lesion_1"] < 0.9  # partial volume: smaller lesion, lower recovery
    assert res["regions"]["lesion_1"]["kind"] == "lesion"
    assert res["regions"]["liver"]["time_integrated_activity"]["components"]["calibration"] > 0


def test_ct_from_another_patient_is_refused(patient, tmp_path):
    from mrtdose.workflow.virtual_patient import simulate_patient

    d, truth = patient
    other = simulate_patient(tmp_path / "other", seed=6, patient_id="SOMEONE-ELSE", times_h=(4.0,))
    doc = _case(truth)
    doc["imaging"]["timepoints"][1]["ct"] = str(tmp_path / "other" / json.loads(
        (tmp_path / "other" / "truth.json").read_text())["time_points"][0]["ct_dir"])
    with pytest.raises(InputError, match="differs from SPECT patient|frames of reference"):
        run_case(parse_case(doc), base_dir=d)
    del other


def test_missing_series_is_clear(patient):
    d, truth = patient
    doc = copy.deepcopy(_case(truth))
    doc["imaging"]["timepoints"][2]["spect"] = "nowhere/NM"
    with pytest.raises(InputError, match="not found") as ei:
        run_case(parse_case(doc), base_dir=d)
    assert ei.value.field == "imaging.timepoints.2.spect"


def test_rigid_registration_recovers_a_moved_patient(tmp_path):
    """The patient lies 8 mm / -6 mm / 4 mm elsewhere at the third time point: without
    registration the kidneys' activity there is wrong; with rigid CT-to-CT registration it is
    within 3 % of the unmoved patient's (a few per cent: linear resampling of the SPECT)."""
    from mrtdose.workflow.virtual_patient import simulate_patient

    simulate_patient(tmp_path / "still", seed=8, times_h=(4.0, 24.0, 96.0))
    simulate_patient(tmp_path / "moved", seed=8, times_h=(4.0, 24.0, 96.0), shift_mm={2: (8.0, -6.0, 4.0)})
    acts = {}
    for name, registration in (("still", "none"), ("moved", "none"), ("moved", "rigid")):
        d = tmp_path / name
        truth = json.loads((d / "truth.json").read_text())
        doc = _case(truth)
        doc["imaging"]["registration"] = registration
        res = run_case(parse_case(doc), base_dir=d).results
        acts[(name, registration)] = res["imaging"]["regions"]["kidneys"]["activities_mbq"][2]
        if registration == "rigid":
            assert res["imaging"]["registration"][2]["method"] == "rigid CT-to-CT"
            assert res["imaging"]["registration"][2]["quality"]["body_dice"] > 0.95
    still = acts[("still", "none")]
    assert abs(acts[("moved", "none")] / still - 1) > 0.05
    assert acts[("moved", "rigid")] == pytest.approx(still, rel=0.03)


def test_recovery_curve_corrects_lesions(patient, tmp_path):
    """imaging.recovery: each listed region's activities are divided by RC(volume) from the
    curve, with u(RC) from the curve's covariance; the TIA scales by exactly 1/RC."""
    import numpy as np

    from mrtdose.imaging.recovery import fit_recovery_curve

    d, truth = patient
    # sphere recoveries of a 10 mm FWHM camera (NEMA/IEC spheres; values of the kind measured in
    # tests/test_virtual_patient.py), fitted with the sigmoid RC(V) = a / (1 + (b/V)^c)
    vols = np.array([26.5, 11.5, 5.6, 2.6, 1.15])
    curve = fit_recovery_curve(vols, np.array([0.75, 0.66, 0.58, 0.47, 0.37]), np.full(5, 0.02))
    path = curve.save(tmp_path / "rc.yaml")
    base = run_case(parse_case(_case(truth)), base_dir=d).results
    doc = _case(truth)
    doc["imaging"]["recovery"] = {"curve": str(path), "regions": ["lesion_1", "lesion_3"]}
    res = run_case(parse_case(doc), base_dir=d).results
    for n in ("lesion_1", "lesion_3"):
        v = res["imaging"]["regions"][n]["volume_ml"]
        rc, u = curve.rc_with_uncertainty(v)
        got = res["imaging"]["recovery"]["regions"][n]
        assert got["recovery_coefficient"] == pytest.approx(float(rc)) and got["uncertainty"] == pytest.approx(float(u))
        ratio = res["regions"][n]["time_integrated_activity"]["value"] / base["regions"][n]["time_integrated_activity"]["value"]
        assert ratio == pytest.approx(1.0 / float(rc), rel=1e-6)
        assert res["regions"][n]["time_integrated_activity"]["components"]["recovery coefficient"] > 0
    assert res["regions"]["liver"]["time_integrated_activity"]["value"] == pytest.approx(
        base["regions"]["liver"]["time_integrated_activity"]["value"])


def test_provenance_fingerprints_the_images(patient):
    """Every series and the RTSTRUCT are fingerprinted (SHA-256), so a record can be traced to its images."""
    d, truth = patient
    res = run_case(parse_case(_case(truth)), base_dir=d).results["imaging"]
    hashes = [tp["spect_sha256"] for tp in res["timepoints"]] + [tp["ct_sha256"] for tp in res["timepoints"]]
    assert all(len(h) == 64 for h in hashes) and len(set(hashes)) == len(hashes)
    assert len(res["regions_sha256"]) == 64


def test_seg_regions_equal_rtstruct_regions(patient, tmp_path):
    """The same masks given as DICOM SEG instead of RTSTRUCT give the same region activities."""
    from mrtdose.imaging.dicom_series import read_series
    from mrtdose.imaging.rtstruct import rtstruct_masks
    from mrtdose.imaging.seg import write_seg

    d, truth = patient
    ct = read_series(d / truth["time_points"][0]["ct_dir"])
    names = ("liver", "kidneys", "spleen", "lesion_1", "lesion_3")
    masks = rtstruct_masks(d / truth["rtstruct"]["file"], ct, {n: n for n in names})
    seg = tmp_path / "seg.dcm"
    seg.write_bytes(write_seg(masks, ct, patient_id=truth["patient_id"]))
    a = run_case(parse_case(_case(truth)), base_dir=d).results["imaging"]["regions"]
    doc = _case(truth)
    doc["imaging"]["regions"] = {"seg": str(seg), "names": {n: n for n in names}}
    b = run_case(parse_case(doc), base_dir=d).results["imaging"]["regions"]
    for n in names:
        assert b[n]["activities_mbq"] == pytest.approx(a[n]["activities_mbq"], rel=1e-9), n
