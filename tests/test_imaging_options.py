"""Options of the imaging block, end to end on a virtual patient (workflow.virtual_patient):
NIfTI/MetaImage time points, whole body and remainder of body, dead-time correction, the
optional TotalSegmentator segmentation (with an injected runner), and the bad-input list of the
imaging issue (region outside the image, CT of another study, empty region, missing time tags).

Truth is the virtual patient's (known voxel anatomy and activities, ``truth.json``) or, for
options that must not change a number, the DICOM run of the same patient (validated against the
truth in tests/test_imaging_pipeline.py). Every tolerance says why.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys

import nibabel as nib
import numpy as np
import pytest
from scipy.optimize import brentq

from mrtdose.errors import InputError
from mrtdose.imaging.dicom_series import read_series_with_info
from mrtdose.imaging.nifti import nifti_sidecar, write_nifti
from mrtdose.workflow.case import parse_case
from mrtdose.workflow.pipeline import run_case

TIMES_H = (4.0, 24.0, 96.0)
REGIONS = ("liver", "kidneys", "spleen", "lesion_1", "lesion_3")


# ----------------------------------------------------------------------------- fixtures, helpers


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    from mrtdose.workflow.virtual_patient import simulate_patient

    d = tmp_path_factory.mktemp("vp_options")
    simulate_patient(d, seed=5, times_h=TIMES_H)
    return d, json.loads((d / "truth.json").read_text())


def _case(truth, regions=REGIONS):
    from mrtdose.workflow.virtual_patient import imaging_case

    doc = imaging_case(truth, regions)
    doc["options"] = {"monte_carlo_samples": 0}
    return doc


@pytest.fixture(scope="module")
def baseline(patient):
    """The DICOM case with whole_body and remainder_of_body added."""
    d, truth = patient
    doc = _case(truth)
    doc["imaging"]["regions"]["whole_body"] = "whole_body"
    doc["imaging"]["regions"]["remainder"] = "remainder_of_body"
    return run_case(parse_case(doc), base_dir=d).results


def _export(vol, path, sidecar: dict) -> None:
    """Write ``vol`` as NIfTI (.nii.gz) or MetaImage (.mhd) with a JSON sidecar beside it."""
    name = path.name
    if name.endswith(".nii.gz"):
        path.write_bytes(write_nifti(vol, compress=True))
        stem = name[: -len(".nii.gz")]
    else:
        import SimpleITK as sitk

        from mrtdose.imaging.registration import to_sitk

        sitk.WriteImage(to_sitk(vol), str(path))
        stem = path.stem
    (path.parent / f"{stem}.json").write_text(json.dumps(sidecar))


def _side(vol, info, *, time=True, duration=True, **extra) -> dict:
    doc = {k: v for k, v in nifti_sidecar(vol).items() if k != "acquisition_time" or time}
    if duration and info.frame_duration_ms:
        doc["acquisition_duration_s"] = info.frame_duration_ms / 1000.0
    doc["patient_id"] = info.patient_id
    doc["frame_of_reference_uid"] = info.frame_of_reference_uid
    doc.update(extra)
    return doc


def _acts(res, name):
    return res["imaging"]["regions"][name]["activities_mbq"]


# ----------------------------------------------------------------------------- whole body, remainder


def test_whole_body_and_remainder_of_body(patient, baseline):
    """Whole body = activity in the CT body outline. Truth: the simulated activity in the field of
    view. The phantom's lungs lie inside the trunk behind a >= 10 mm chest wall
    (tests/test_virtual_patient.py::test_lungs_lie_inside_the_body_outline_with_a_chest_wall), so
    the HU outline (threshold + hole filling) is exactly the phantom's body: the whole-body mass
    equals the truth's body mass to the case's rounding (0.001 g; no lung allowance any more --
    the earlier lungs touched the skin and the outline lost 43 % of their voxels). The activity
    still loses what the 10 mm FWHM blur spreads into the air around the body and beyond the ends
    of the field of view: 3.0, 2.8 and 1.8 % of the total at 4, 24 and 96 h (the light model's
    blur without noise on this anatomy, 0.2-0.4 % of it beyond the field of view's ends; the
    remainder's share of the activity, at the skin, falls with time; Poisson noise on the total
    < 0.1 %). The former "at most 2.5 %, measured 1.2-2 %" was measured against total - lungs,
    where the lung voxels kept inside the outline hid part of the loss; with the same physics the
    old anatomy gives the same 3.0 % against the label map's body. So 0.965 total < whole body <
    total (tighter than the former 0.975 (total - lungs) = 0.953-0.962 total at every time point).
    Remainder + regions = whole body to rounding (1e-9), by construction of the fractional
    occupancies; the remainder's mass is the whole body's less the regions'."""
    d, truth = patient
    res = baseline
    im = res["imaging"]
    assert im["whole_body"]["definition"] == "ct_body_outline"
    assert im["regions"]["whole_body"]["source"] == "whole_body"
    assert im["remainder"]["excluded_regions"] == list(REGIONS)
    for i, tp in enumerate(truth["time_points"]):
        total = tp["true_total_activity_in_fov_mbq"]
        wb = _acts(res, "whole_body")[i]
        assert 0.965 * total < wb < total, (i, wb, total)
        parts = _acts(res, "remainder_of_body")[i] + sum(_acts(res, n)[i] for n in REGIONS)
        assert parts == pytest.approx(wb, rel=1e-9)
    body = truth["regions"]["body"]["mass_g"]
    wb_mass = res["regions"]["whole_body"]["mass"]["value"]
    assert wb_mass == pytest.approx(body, abs=0.01)  # masses are rounded to 0.001 g in the case
    regions_mass = sum(res["regions"][n]["mass"]["value"] for n in REGIONS)
    assert regions_mass == pytest.approx(sum(truth["regions"][n]["mass_g"] for n in REGIONS), rel=1e-3)
    assert res["regions"]["remainder_of_body"]["mass"]["value"] == pytest.approx(wb_mass - regions_mass, abs=0.01)
    assert res["regions"]["whole_body"]["time_integrated_activity"]["value"] > 0


def test_remainder_needs_disjoint_regions(patient):
    """kidneys and kidney_left overlap: a remainder would count the left kidney twice."""
    d, truth = patient
    doc = _case(truth, ("kidneys", "kidney_left"))
    doc["imaging"]["timepoints"] = doc["imaging"]["timepoints"][:1]
    doc["imaging"]["regions"]["remainder"] = "rest"
    with pytest.raises(InputError, match="overlap") as ei:
        run_case(parse_case(doc), base_dir=d)
    assert ei.value.field == "imaging.regions.remainder"


# ----------------------------------------------------------------------------- NIfTI and MetaImage


def test_nifti_and_metaimage_time_points_equal_dicom(patient, baseline, tmp_path):
    """The same voxels as NIfTI (time point 1, SPECT and CT), MetaImage (time point 2) and NIfTI
    without time or duration in the sidecar, given in the case (time point 3): the region
    activities equal the DICOM run's to 1e-6. Same counts and geometry, except that NIfTI stores
    the geometry as float32: positions move by about 1e-5 mm (far from changing which voxel centre
    a contour encloses) and the voxel volume by 2**-23 relative, which the MetaImage time point
    (double precision) sees as a 1.2e-7 difference of its activities on the NIfTI reference grid."""
    d, truth = patient
    doc = _case(truth)
    tps = doc["imaging"]["timepoints"]
    for i, (fmt, tp) in enumerate(zip(("nii.gz", "mhd", "nii.gz"), truth["time_points"])):
        spect, info = read_series_with_info(d / tp["nm_dir"])
        ct, ct_info = read_series_with_info(d / tp["ct_dir"])
        last = i == 2
        _export(spect, tmp_path / f"spect{i}.{fmt}", _side(spect, info, time=not last, duration=not last))
        tps[i]["spect"] = str(tmp_path / f"spect{i}.{fmt}")
        if last:
            tps[i]["time"] = tp["acquisition_time"]
            tps[i]["acquisition_duration_s"] = info.frame_duration_ms / 1000.0
            del tps[i]["ct"]
        else:
            _export(ct, tmp_path / f"ct{i}.{fmt}", _side(ct, ct_info))
            tps[i]["ct"] = str(tmp_path / f"ct{i}.{fmt}")
    res = run_case(parse_case(doc), base_dir=d).results
    im = res["imaging"]["timepoints"]
    assert [t["format"] for t in im] == ["NIfTI", "MetaImage", "NIfTI"]
    assert im[0]["time_source"].startswith("sidecar") and im[2]["time_source"] == "time (case override)"
    assert im[2]["acquisition_duration_source"] == "case" and im[1]["acquisition_duration_source"].startswith("sidecar")
    assert [round(t["time_h"], 6) for t in im] == list(TIMES_H)
    for n in REGIONS:
        assert _acts(res, n) == pytest.approx(_acts(baseline, n), rel=1e-6), n
        assert res["regions"][n]["mass"]["value"] == pytest.approx(baseline["regions"][n]["mass"]["value"], rel=1e-6)


def test_missing_time_or_duration_of_a_nifti_is_clear(patient, tmp_path):
    d, truth = patient
    spect, info = read_series_with_info(d / truth["time_points"][0]["nm_dir"])
    _export(spect, tmp_path / "s.nii.gz", _side(spect, info, time=False, duration=False))
    doc = _case(truth)
    doc["imaging"]["timepoints"] = [{"spect": str(tmp_path / "s.nii.gz"), "ct": truth["time_points"][0]["ct_dir"]}]
    with pytest.raises(InputError, match="no acquisition time.*never guessed") as ei:
        run_case(parse_case(doc), base_dir=d)
    assert ei.value.field == "imaging.timepoints.0.time" and ei.value.source == str(tmp_path / "s.nii.gz")
    doc["imaging"]["timepoints"][0]["time"] = truth["time_points"][0]["acquisition_time"]
    with pytest.raises(InputError, match="acquisition duration unknown") as ei:
        run_case(parse_case(doc), base_dir=d)
    assert ei.value.field == "imaging.timepoints.0.acquisition_duration_s"


def test_dicom_without_time_tags_is_clear(patient, tmp_path):
    import pydicom

    d, truth = patient
    src = d / truth["time_points"][0]["nm_dir"]
    out = tmp_path / "NM"
    shutil.copytree(src, out)
    for f in out.iterdir():
        ds = pydicom.dcmread(f)
        for kw in ("SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "ContentDate", "ContentTime",
                   "AcquisitionDateTime"):
            if kw in ds:
                delattr(ds, kw)
        ds.save_as(f)
    doc = _case(truth)
    doc["imaging"]["timepoints"] = [{"spect": str(out), "ct": truth["time_points"][0]["ct_dir"]}]
    with pytest.raises(InputError, match="no acquisition, series or content date/time.*imaging.timepoints.0.time") as ei:
        run_case(parse_case(doc), base_dir=d)
    assert ei.value.field.startswith("imaging.timepoints.0.time")


def test_ct_of_another_study_is_refused(patient, tmp_path):
    """A CT file whose sidecar names another patient or frame of reference, or that lies elsewhere
    in space, is not this SPECT's CT."""
    d, truth = patient
    tp = truth["time_points"][0]
    ct, ct_info = read_series_with_info(d / tp["ct_dir"])
    doc = _case(truth)
    doc["imaging"]["timepoints"] = [{"spect": tp["nm_dir"], "ct": str(tmp_path / "ct.nii.gz")}]
    cases = [
        (ct, {"patient_id": "SOMEONE-ELSE"}, "differs from SPECT patient"),
        (ct, {"frame_of_reference_uid": "1.2.3.4"}, "different frames of reference"),
        (type(ct)(array=ct.array, spacing_mm=ct.spacing_mm, origin_mm=tuple(np.add(ct.origin_mm, (0, 0, 2000.0))),
                  direction=ct.direction, unit="HU", modality="CT"), {}, "do not overlap in space"),
    ]
    for vol, extra, msg in cases:
        _export(vol, tmp_path / "ct.nii.gz", _side(vol, ct_info, **extra))
        with pytest.raises(InputError, match=msg) as ei:
            run_case(parse_case(doc), base_dir=d)
        assert ei.value.field == "imaging.timepoints.0.ct" and ei.value.source == str(tmp_path / "ct.nii.gz")


def test_region_outside_the_spect_and_empty_region(patient, tmp_path):
    """A SPECT cropped above the pelvis: lesion_3 (iliac bone) is outside it. A label-map region
    whose label does not occur is empty. Both name the file and the field."""
    from mrtdose.workflow.virtual_patient import label_map

    d, truth = patient
    tp = truth["time_points"][0]
    spect, info = read_series_with_info(d / tp["nm_dir"])
    k0 = 30  # slices 0-29 (z < -128 mm) removed; lesion_3 spans z -170..-148 mm
    cropped = type(spect)(array=spect.array[k0:], spacing_mm=spect.spacing_mm,
                          origin_mm=tuple(spect.index_to_physical((0, 0, k0))), direction=spect.direction,
                          unit=spect.unit, modality="NM", acquisition_time=spect.acquisition_time)
    _export(cropped, tmp_path / "crop.nii.gz", _side(cropped, info))
    doc = _case(truth)
    doc["imaging"]["timepoints"] = [{"spect": str(tmp_path / "crop.nii.gz"), "ct": tp["ct_dir"]}]
    with pytest.raises(InputError, match="'lesion_3' does not overlap the SPECT field of view") as ei:
        run_case(parse_case(doc), base_dir=d)
    assert ei.value.field == "imaging.regions.names.lesion_3"
    assert ei.value.source == str(d / truth["rtstruct"]["file"])

    labels = spect.with_array(label_map(spect).astype(np.int16), unit="1")
    (tmp_path / "labels.nii.gz").write_bytes(write_nifti(labels, compress=True))
    doc = _case(truth)
    doc["imaging"]["timepoints"] = [{"spect": tp["nm_dir"]}]
    doc["imaging"]["regions"] = {"labels": {"file": str(tmp_path / "labels.nii.gz"),
                                            "regions": {"liver": 4, "heart": 99}}}
    with pytest.raises(InputError, match="'heart' is empty: label.*99") as ei:
        run_case(parse_case(doc), base_dir=d)
    assert ei.value.field == "imaging.regions.labels.regions.heart"
    assert ei.value.source == str(tmp_path / "labels.nii.gz")


# ----------------------------------------------------------------------------- dead time


def _paralysable_true_rate(m: float, tau: float) -> float:
    """Solve m = n exp(-n tau) for the low-rate root by bracketing (independent of Lambert W)."""
    return brentq(lambda n: n * math.exp(-n * tau) - m, m, 1.0 / tau, xtol=1e-12, rtol=1e-15)


#: Dead-time factors (true/observed) wanted at the three time points, tau and its uncertainty.
FACTORS = (1.10, 1.05, 1.02)
TAU_US = 4.0
TAU_U_PCT = 10.0


@pytest.fixture(scope="module")
def dead_time_run(patient):
    """Regions from a label map on the SPECT grid (the phantom's own voxel anatomy, as the
    RTSTRUCT), no CT, whole body = SPECT field of view, paralysable dead time chosen so that the
    factors are FACTORS: k = exp(n tau) => n = ln k / tau, m = n exp(-n tau) = n / k (Knoll ch. 4)."""
    from mrtdose.workflow.virtual_patient import LABELS, label_map

    d, truth = patient
    spect, _ = read_series_with_info(d / truth["time_points"][0]["nm_dir"])
    labels = spect.with_array(label_map(spect).astype(np.int16), unit="1")
    (d / "labels.nii.gz").write_bytes(write_nifti(labels, compress=True))
    kid = [LABELS[n] for n in LABELS if n.startswith("kidney_")]
    doc = _case(truth)
    tau = TAU_US * 1e-6
    for tp, k in zip(doc["imaging"]["timepoints"], FACTORS):
        del tp["ct"]
        tp["observed_count_rate_cps"] = math.log(k) / tau / k
    doc["patient"]["mass_kg"] = 70.0
    doc["imaging"]["calibration"]["dead_time"] = {"model": "paralysable", "tau_us": TAU_US,
                                                  "tau_uncertainty_pct": TAU_U_PCT}
    doc["imaging"]["regions"] = {"labels": {"file": "labels.nii.gz", "regions": {
        "liver": LABELS["liver"], "kidneys": kid, "spleen": LABELS["spleen"], "lesion_1": LABELS["lesion_1"],
        "lesion_3": LABELS["lesion_3"]}}, "whole_body": "whole_body"}
    return doc, run_case(parse_case(doc), base_dir=d).results


def test_dead_time_multiplies_each_time_point(patient, baseline, dead_time_run):
    """Each time point's activities are the uncorrected ones (the RTSTRUCT run: the same voxel
    masks) times its factor, to 1e-9 (the factor from the Lambert W inversion vs the forward model
    m = n exp(-n tau): exact to rounding). u(k) from u(tau) against a central difference of the
    forward model solved by bracketing (1e-5: the difference quotient's truncation error)."""
    doc, res = dead_time_run
    tau = TAU_US * 1e-6
    for i, k in enumerate(FACTORS):
        dt = res["imaging"]["timepoints"][i]["dead_time"]
        assert dt["factor"] == pytest.approx(k, rel=1e-12)
        m = doc["imaging"]["timepoints"][i]["observed_count_rate_cps"]
        h = tau * 1e-4
        dk = (_paralysable_true_rate(m, tau + h) - _paralysable_true_rate(m, tau - h)) / (2 * h) / m
        assert dt["factor_uncertainty"] == pytest.approx(abs(dk) * tau * TAU_U_PCT / 100, rel=1e-5)
        u_pct = math.hypot(5.0, 100 * dt["factor_uncertainty"] / k)  # activity_uncertainty_pct default 5 %
        assert res["imaging"]["timepoints"][i]["measurement_uncertainty_pct"] == pytest.approx(u_pct, rel=1e-12)
        for n in REGIONS:
            a = _acts(res, n)[i]
            assert a == pytest.approx(k * _acts(baseline, n)[i], rel=1e-9), (n, i)
            meas = res["regions"][n]["measurements"][i]["activity"]
            assert meas["uncertainty"] == pytest.approx(a * u_pct / 100, rel=1e-9)
    assert res["imaging"]["dead_time"]["model"] == "paralysable"


def test_whole_body_is_the_field_of_view_without_ct(patient, dead_time_run):
    """Without a CT the whole body is the SPECT field of view (provenance says so), with the
    patient's mass. Truth: the simulated activity in the field of view, times the dead-time factor;
    lost only by the 10 mm FWHM blur beyond the two ends of the field of view (< 1 %, measured 0.2-0.4 %;
    the Poisson noise of the total, about 3e-4, cannot lift it above 1)."""
    d, truth = patient
    doc, res = dead_time_run
    wb = res["imaging"]["whole_body"]
    assert wb["definition"] == "spect_field_of_view" and wb["mass_source"] == "patient.mass_kg"
    assert res["regions"]["whole_body"]["mass"]["value"] == pytest.approx(70000.0)
    for i, (tp, k) in enumerate(zip(truth["time_points"], FACTORS)):
        ratio = _acts(res, "whole_body")[i] / (k * tp["true_total_activity_in_fov_mbq"])
        assert 0.99 < ratio < 1.0, (i, ratio)


def test_non_paralysable_factor_and_impossible_rate(patient):
    """Non-paralysable: k = 1/(1 - m tau), dk/dtau = m k^2 (Knoll ch. 4). A rate above the
    paralysable maximum 1/(e tau) is refused before any image is read, naming the field."""
    from mrtdose.workflow.imaging import dead_time_factor

    m, tau = 50_000.0, 2e-6
    k, u, n = dead_time_factor(m, tau_us=2.0, model="non-paralysable", tau_uncertainty_pct=5.0)
    assert k == pytest.approx(1 / (1 - m * tau), rel=1e-12) and n == pytest.approx(m * k, rel=1e-12)
    assert u == pytest.approx(m * k * k * tau * 0.05, rel=1e-9)
    d, truth = patient
    doc = _case(truth)
    doc["imaging"]["calibration"]["dead_time"] = {"model": "paralysable", "tau_us": 4.0}
    for i, tp in enumerate(doc["imaging"]["timepoints"]):
        tp["observed_count_rate_cps"] = 20_000.0 if i != 1 else 1.0 / (math.e * 4e-6) * 1.01
    with pytest.raises(InputError, match="maximum observable rate") as ei:
        run_case(parse_case(doc), base_dir=d)
    assert ei.value.field == "imaging.timepoints.1.observed_count_rate_cps"
    del doc["imaging"]["timepoints"][2]["observed_count_rate_cps"]
    with pytest.raises(InputError, match="timepoints.2.observed_count_rate_cps: needed by calibration.dead_time"):
        parse_case(doc)
    del doc["imaging"]["calibration"]["dead_time"]
    with pytest.raises(InputError, match="given without calibration.dead_time"):
        parse_case(doc)


# ----------------------------------------------------------------------------- TotalSegmentator

#: TotalSegmentator 'total' class numbers of the classes the fake runner writes (any numbers would
#: do: the reader takes the table from the file's header extension).
TS_CLASSES = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 21: "urinary_bladder"}


def _caret_xml(table: dict[int, str]) -> bytes:
    """A label table in the XML form TotalSegmentator writes into the NIfTI header extension."""
    rows = "".join(f'<Label Key="{k}" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[{v}]]></Label>'
                   for k, v in table.items())
    return ('<?xml version="1.0" encoding="UTF-8"?><CaretExtension><VolumeInformation Index="0"><LabelTable>'
            f"{rows}</LabelTable><VolumeType><![CDATA[Label]]></VolumeType></VolumeInformation></CaretExtension>").encode()


def _fake_totalsegmentator(calls: list):
    """A runner that writes what TotalSegmentator --ml writes (a multilabel NIfTI on the input
    CT's grid, label table in the header extension), from the phantom's known anatomy."""
    from mrtdose.imaging.nifti import read_nifti
    from mrtdose.workflow.virtual_patient import LABELS, label_map

    groups = {"spleen": ["spleen"], "kidney_right": ["kidney_right_cortex", "kidney_right_medulla"],
              "kidney_left": ["kidney_left_cortex", "kidney_left_medulla"], "liver": ["liver"],
              "urinary_bladder": ["bladder"]}

    def run(ct_nifti, output, task, classes, fast):
        calls.append((task, classes, fast))
        ct = read_nifti(ct_nifti, unit="HU")
        vp = label_map(ct)
        out = np.zeros(vp.shape, dtype=np.uint8)
        for key, cls in TS_CLASSES.items():
            out[np.isin(vp, [LABELS[p] for p in groups[cls]])] = key
        img = nib.load(str(ct_nifti))
        seg = nib.Nifti1Image(np.transpose(out, (2, 1, 0)), img.affine)
        seg.header.extensions.append(nib.nifti1.Nifti1Extension(0, _caret_xml(TS_CLASSES)))
        nib.save(seg, str(output))

    return run


def test_totalsegmentator_missing_is_a_clear_error(patient, monkeypatch):
    from mrtdose.imaging import segmentation

    d, truth = patient
    monkeypatch.setitem(sys.modules, "totalsegmentator", None)  # absent even where it is installed
    monkeypatch.setattr(segmentation, "RUNNER", None)
    doc = _case(truth)
    doc["imaging"]["regions"] = {"totalsegmentator": {"names": {"liver": "liver"}}}
    with pytest.raises(InputError, match="pip install TotalSegmentator") as ei:
        run_case(parse_case(doc), base_dir=d)
    assert ei.value.field == "imaging.regions.totalsegmentator"


def test_totalsegmentator_regions_with_an_injected_runner(patient, baseline, tmp_path, monkeypatch):
    """TotalSegmentator classes on a cropped NIfTI CT (another grid than the SPECT's, voxel-
    aligned: fractional resampling onto the SPECT grid is then exactly 0/1), both kidneys united
    into 'kidneys', combined with a lesion from the RTSTRUCT. Masses must equal the phantom's
    (1e-3, as the RTSTRUCT masses in test_imaging_pipeline) and activities the RTSTRUCT run's
    (1e-9: the same voxels)."""
    from mrtdose.imaging import segmentation

    d, truth = patient
    tp = truth["time_points"][0]
    ct, ct_info = read_series_with_info(d / tp["ct_dir"])
    k0, i0 = 4, 2
    crop = type(ct)(array=ct.array[k0:-k0, :, i0:-i0], spacing_mm=ct.spacing_mm,
                    origin_mm=tuple(ct.index_to_physical((i0, 0, k0))), direction=ct.direction, unit="HU", modality="CT")
    _export(crop, tmp_path / "ct.nii.gz", _side(crop, ct_info))
    calls: list = []
    monkeypatch.setattr(segmentation, "RUNNER", _fake_totalsegmentator(calls))
    doc = _case(truth, ("lesion_1",))
    for t in doc["imaging"]["timepoints"]:
        del t["ct"]
    doc["imaging"]["timepoints"][0]["ct"] = str(tmp_path / "ct.nii.gz")
    doc["imaging"]["regions"]["totalsegmentator"] = {
        "names": {"liver": "liver", "kidney_left": "kidneys", "kidney_right": "kidneys", "spleen": "spleen"}}
    res = run_case(parse_case(doc), base_dir=d).results
    assert calls == [("total", ["liver", "kidney_left", "kidney_right", "spleen"], False)]
    im = res["imaging"]
    assert im["totalsegmentator"]["software"].startswith("injected runner")
    assert "header extension" in im["totalsegmentator"]["method"]
    assert im["regions"]["kidneys"]["source"] == "totalsegmentator" and im["regions"]["lesion_1"]["source"] == "rtstruct"
    assert "urinary_bladder" not in im["regions"]
    for n in ("liver", "kidneys", "spleen", "lesion_1"):
        assert res["regions"][n]["mass"]["value"] == pytest.approx(truth["regions"][n]["mass_g"], rel=1e-3), n
        assert _acts(res, n) == pytest.approx(_acts(baseline, n), rel=1e-9), n
    # the union of both kidneys; 1e-6: the NIfTI CT's float32 spacing changes the voxel volume by 1.2e-7
    assert im["regions"]["kidneys"]["volume_ml"] == pytest.approx(truth["regions"]["kidneys"]["volume_ml"], rel=1e-6)


def test_totalsegmentator_output_forms(tmp_path, monkeypatch):
    """The reader on both output forms, on a grid shifted by whole voxels from the CT (resampled
    by nearest neighbour: the mask moves by exactly those voxels), and its refusals."""
    from mrtdose.imaging import segmentation
    from mrtdose.imaging.volume import Volume

    ct = Volume(array=np.zeros((6, 5, 4)), spacing_mm=(2.0, 2.0, 3.0), origin_mm=(-3.0, 1.0, 10.0), unit="HU",
                modality="CT")
    lab = np.zeros(ct.shape, dtype=np.uint8)
    lab[1:3, 1:3, 1:3] = 5
    lab[4, 2, 2] = 2
    out = ct.with_array(lab, unit="1")
    img = nib.Nifti1Image(np.transpose(lab, (2, 1, 0)), np.diag([-1.0, -1.0, 1.0, 1.0]) @ out.affine_lps)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, _caret_xml({5: "liver", 2: "kidney_right"})))
    nib.save(img, str(tmp_path / "ml.nii.gz"))
    seg = segmentation.read_totalsegmentator_output(tmp_path / "ml.nii.gz", ct, classes=["liver", "kidney_right"])
    assert seg.masks["liver"].sum() == 8 and seg.masks["kidney_right"][4, 2, 2]
    regions = segmentation.regions_from_classes(seg, {"liver": "abdomen", "kidney_right": "abdomen"})
    assert regions["abdomen"].sum() == 9
    with pytest.raises(InputError, match="not in the label table"):
        segmentation.read_totalsegmentator_output(tmp_path / "ml.nii.gz", ct, classes=["livr"])
    # folder form, the files shifted by one voxel along i: back on the CT grid the mask moves
    folder = tmp_path / "per_class"
    folder.mkdir()
    moved = out.with_array((lab == 5).astype(np.uint8), unit="1")
    shifted = Volume(array=moved.array, spacing_mm=ct.spacing_mm, origin_mm=(-1.0, 1.0, 10.0), unit="1")
    (folder / "liver.nii.gz").write_bytes(write_nifti(shifted, compress=True))
    seg = segmentation.read_totalsegmentator_output(folder, ct, classes=["liver", "spleen"])
    assert np.array_equal(np.argwhere(seg.masks["liver"]), np.argwhere(lab == 5) + [0, 0, 1])
    assert not seg.masks["spleen"].any() and "resampled" in seg.method
    with pytest.raises(InputError, match="'spleen' has no voxel"):
        segmentation.regions_from_classes(seg, {"spleen": "spleen"}, field="x.names")
    # no label table in the file and no TotalSegmentator installed to look the numbers up
    monkeypatch.setitem(sys.modules, "totalsegmentator", None)
    nib.save(nib.Nifti1Image(np.transpose(lab, (2, 1, 0)), img.affine), str(tmp_path / "bare.nii.gz"))
    with pytest.raises(InputError, match="no label table"):
        segmentation.read_totalsegmentator_output(tmp_path / "bare.nii.gz", ct, classes=["liver"])


def test_case_validation_of_the_new_fields(patient):
    d, truth = patient
    doc = _case(truth)
    bad = copy.deepcopy(doc)
    bad["imaging"]["regions"] = {"names": {}}
    with pytest.raises(InputError, match="give rtstruct, seg, labels or totalsegmentator"):
        parse_case(bad)
    bad = copy.deepcopy(doc)
    bad["imaging"]["regions"].update(whole_body="body", remainder="body")
    with pytest.raises(InputError, match="different region names"):
        parse_case(bad)
    bad = copy.deepcopy(doc)
    bad["imaging"]["calibration"]["dead_time"] = {"model": "paralysable", "tau_us": 5000.0}
    with pytest.raises(InputError, match="tau_us"):
        parse_case(bad)
    bad = copy.deepcopy(doc)
    bad["imaging"]["timepoints"] = bad["imaging"]["timepoints"][:1]
    bad["imaging"]["regions"]["whole_body"] = "liver"
    with pytest.raises(InputError, match="also the name of regions.whole_body"):
        run_case(parse_case(bad), base_dir=d)
