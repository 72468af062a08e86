"""The voxel step of the pipeline on a small synthetic phantom: plumbing, consistency with the
patient-specific S matrix, outputs and clear errors."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import numpy as np
import pytest

from mrtdose.errors import InputError
from mrtdose.imaging.nifti import nifti_sidecar_bytes, read_nifti, sidecar_path_for, write_nifti
from mrtdose.imaging.rtdose import read_rtdose
from mrtdose.imaging.volume import Volume
from mrtdose.workflow.case import parse_case
from mrtdose.workflow.pipeline import run_case
from mrtdose.workflow.synthetic import PHANTOM_LABELS, voxel_phantom

ADMIN = datetime.fromisoformat("2026-01-05T10:00:00+00:00")


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("phantom")
    p = voxel_phantom(shape=(30, 36, 44), voxel_mm=6.0)
    spacing = (6.0, 6.0, 6.0)

    def save(name, arr, unit, when=None):
        v = Volume(array=arr, spacing_mm=spacing, origin_mm=(-100.0, -80.0, 20.0), unit=unit,
                   acquisition_time=when, modality="NM")
        (d / name).write_bytes(write_nifti(v, compress=True))
        sidecar_path_for(d / name).write_bytes(nifti_sidecar_bytes(v))

    for t, a in zip(p["times_h"], p["activity_bq_per_ml"]):
        save(f"a{int(t)}.nii.gz", a, "Bq/mL", ADMIN + timedelta(hours=float(t)))
    save("labels.nii.gz", p["labels"].astype(np.int16), "1")
    save("density.nii.gz", p["density_g_per_ml"], "g/mL")
    return d, p


def _case(phantom_dir, **voxel):
    d, p = phantom_dir
    regions = {n: [v] for n, v in PHANTOM_LABELS.items()}
    doc = {
        "patient": {"id": "VX"},
        "nuclide": "Lu-177",
        "administration": {"activity_mbq": 7400, "time": ADMIN.isoformat()},
        "regions": {"liver": {"mass_g": 1000, "tia_mbq_h": 20000, "tia_uncertainty_pct": 5}},
        "options": {"monte_carlo_samples": 0},
        "voxel": {
            "activity_maps": [{"file": f"a{int(t)}.nii.gz"} for t in p["times_h"]],
            "labels": {"file": "labels.nii.gz", "regions": regions},
            "density": "density.nii.gz",
            "kinetics": "trapezoid",
            **voxel,
        },
    }
    return doc


def test_voxel_doses_consistent_with_patient_specific_s(phantom_dir):
    """With activity uniform within each labelled region (no blur) and every active voxel
    labelled, the mass-weighted mean voxel dose of region t equals sum_s A~_s S(t <- s), with
    A~_s the region sums of the voxel TIA map and S from unit activity convolved with the same
    kernel (linearity of convolution; exact to rounding, 1e-6)."""
    d, p = phantom_dir
    res = run_case(parse_case(_case(phantom_dir)), base_dir=d)
    v = res.results["voxel"]
    names = v["patient_specific_s_values"]["regions"]
    s = np.array(v["patient_specific_s_values"]["s_gy_per_bq_s"])
    tia = np.array([v["regions"][n]["time_integrated_activity"]["value"] for n in names])
    expected = s @ (tia * 3.6e9)
    for i, n in enumerate(names):
        got = v["regions"][n]["dvh_metrics"]["mass_weighted_mean"]["value"]
        assert got == pytest.approx(expected[i], rel=1e-6), n
    # the voxel trapezoid TIA summed over a region equals the trapezoid rule applied by hand to
    # the region's true activities (from (0, 0); tail A_n / lambda_phys, MIRD Pamphlet 16) --
    # which over-estimates the true TIA when clearance is faster than physical decay
    from mrtdose.physics.nuclides import get_nuclide
    from mrtdose.workflow.synthetic import _PHANTOM_TERMS, true_activity

    lam = get_nuclide("Lu-177").decay_constant_per_h
    t = np.array((0.0,) + tuple(p["times_h"]))
    for n in ("liver", "kidney_left", "spleen", "tumour_1"):
        a = np.array([0.0] + [true_activity(_PHANTOM_TERMS[n], x) for x in p["times_h"]])
        by_hand = float(np.sum(0.5 * (a[1:] + a[:-1]) * np.diff(t)) + a[-1] / lam)
        assert v["regions"][n]["time_integrated_activity"]["value"] == pytest.approx(by_hand, rel=1e-4), n
    # the organ region present in the case gets the voxel results too
    assert res.results["regions"]["liver"]["absorbed_dose_voxel"]["unit"] == "Gy"
    assert "dvh_metrics" in res.results["regions"]["liver"]


def test_outputs_rtdose_geometry_and_values(phantom_dir):
    d, _ = phantom_dir
    res = run_case(parse_case(_case(phantom_dir)), base_dir=d)
    assert {"dose_rtdose.dcm", "dose.nii.gz", "tia.nii.gz", "dvh.csv", "dvh_metrics.csv"} <= set(res.files)
    ref = read_nifti(d / "a1.nii.gz")
    rt = read_rtdose(res.files["dose_rtdose.dcm"])
    assert rt.same_grid(ref, atol_mm=1e-3)
    dose = res.display["voxel"]["max_dose_gy"]
    assert float(rt.array.max()) == pytest.approx(dose, rel=1e-6)


def test_patient_specific_s_values_feed_the_organ_level_chain(phantom_dir):
    """options.s_values: patient_specific uses the image-based S matrix (with cross-dose) for
    the organ-level MIRD dose: D = A~ S(m_image/m)."""
    d, _ = phantom_dir
    doc = _case(phantom_dir)
    doc["options"]["s_values"] = "patient_specific"
    res = run_case(parse_case(doc), base_dir=d).results
    v = res["voxel"]["patient_specific_s_values"]
    i = v["regions"].index("liver")
    s_ll, m_img = v["s_gy_per_bq_s"][i][i], v["masses_g"][i]
    assert res["regions"]["liver"]["absorbed_dose"]["value"] == pytest.approx(20000 * 3.6e9 * s_ll * m_img / 1000.0, rel=1e-6)
    assert res["methods"]["s_values_organs"] == "patient_specific"


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda doc: doc["voxel"]["activity_maps"].__setitem__(0, {"file": "missing.nii.gz"}), "file not found"),
        (lambda doc: doc["voxel"]["labels"]["regions"].update(ghost=[99]), "have no voxels"),
        (lambda doc: doc["voxel"].update(density="labels.nii.gz"), "density unit"),
        (lambda doc: doc["voxel"]["activity_maps"].__setitem__(1, {"file": "labels.nii.gz"}), "not an activity concentration"),
    ],
)
def test_bad_voxel_input_is_clear(phantom_dir, mutate, match):
    d, _ = phantom_dir
    doc = copy.deepcopy(_case(phantom_dir))
    mutate(doc)
    with pytest.raises(InputError, match=match):
        run_case(parse_case(doc), base_dir=d)


def test_label_in_two_regions_is_rejected(phantom_dir):
    doc = _case(phantom_dir)
    doc["voxel"]["labels"]["regions"]["twice"] = [2]
    with pytest.raises(InputError, match="label 2 is in both"):
        parse_case(doc)


def test_region_mean_voxel_dose_uncertainty(phantom_dir):
    """The region mean dose scales with the maps' calibration and with the kernel: u/D =
    sqrt(u_cal^2 + u_kernel^2) with u_kernel = 3 % for our computed kernels."""
    d, _ = phantom_dir
    doc = _case(phantom_dir)
    doc["options"]["calibration_uncertainty_pct"] = 4.0
    v = run_case(parse_case(doc), base_dir=d).results["voxel"]["regions"]["liver"]["absorbed_dose_voxel"]
    assert v["uncertainty"] == pytest.approx(v["value"] * np.hypot(0.04, 0.03), rel=1e-9)
    assert set(v["components"]) == {"calibration", "voxel kernel model"}


def test_voxel_inputs_are_fingerprinted(phantom_dir):
    d, _ = phantom_dir
    v = run_case(parse_case(_case(phantom_dir)), base_dir=d).results["voxel"]
    assert set(v["inputs_sha256"]) == {"activity_maps", "labels", "density"}
    assert all(len(h) == 64 for h in v["inputs_sha256"].values())


# ---------------------------------------------------------------- outputs of the issue "Voxel dosimetry"

import csv  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import pydicom  # noqa: E402

from mrtdose.imaging.kernels_io import write_kernel_dicom  # noqa: E402
from mrtdose.imaging.rtdose import read_tia_rtdose  # noqa: E402
from mrtdose.physics.attenuation import get_material  # noqa: E402
from mrtdose.physics.nuclides import get_nuclide  # noqa: E402
from mrtdose.physics.voxel_kernel_type import VoxelKernel  # noqa: E402
from mrtdose.physics.voxel_kernels import compute_voxel_kernel  # noqa: E402

SCHEMA = Path(__file__).resolve().parents[1] / "src" / "mrtdose" / "schemas" / "results.schema.json"


def _nifti(files, name):
    d = Path(files["__dir__"])
    (d / name).write_bytes(files[name])
    return read_nifti(d / name, unit="1")


@pytest.fixture(scope="module")
def full_run(phantom_dir, tmp_path_factory):
    """Dose-rate integration with every output, alpha for tumour_1 only, and kidney_left as an
    organ-level region with a given TIA and effective half-life (so it has radiobiology)."""
    d, _ = phantom_dir
    doc = _case(phantom_dir, route="dose_rate_integration", eud_alpha_per_gy={"tumour_1": 0.3},
                outputs=["rtdose", "nifti", "dvh_csv", "dose_rate_maps"])
    doc["regions"]["kidney_left"] = {"mass_g": 150, "tia_mbq_h": 900, "tia_uncertainty_pct": 5,
                                     "effective_half_life_h": 50}
    doc["options"]["calibration_uncertainty_pct"] = 4.0
    res = run_case(parse_case(doc), base_dir=d)
    out = tmp_path_factory.mktemp("out")
    files = dict(res.files)
    files["__dir__"] = str(out)
    return res, files


def test_tia_map_rtdose_written_and_read_back(phantom_dir, full_run):
    """tia_map_rtdose.dcm: on the activity maps' grid; TIA concentration x voxel volume summed
    over each region equals the region TIA of results.json (which test 1 checks against the
    trapezoid by hand) to the quantisation bound; it says what it is; never read as Gy."""
    d, _ = phantom_dir
    res, files = full_run
    raw = files["tia_map_rtdose.dcm"]
    ref = read_nifti(d / "a1.nii.gz")
    tia = read_tia_rtdose(raw)
    assert tia.unit == "MBq h/mL" and tia.same_grid(ref, atol_mm=1e-6)
    np.testing.assert_allclose(tia.origin_mm, ref.origin_mm, atol=1e-9)
    np.testing.assert_allclose(tia.spacing_mm, ref.spacing_mm, atol=1e-9)
    lab = np.round(read_nifti(d / "labels.nii.gz", unit="1").array).astype(int)
    v = res.results["voxel"]
    ds = pydicom.dcmread(io.BytesIO(raw))
    bound = float(ds.DoseGridScaling) / 2 * ref.voxel_volume_ml  # per voxel, MBq h
    for name, label in PHANTOM_LABELS.items():
        sel = lab == label
        got = float(tia.array[sel].sum() * ref.voxel_volume_ml)
        want = v["regions"][name]["time_integrated_activity"]["value"]
        assert abs(got - want) <= bound * sel.sum() * (1 + 1e-6) + 1e-9 * want, name
    assert ds.DoseUnits == "RELATIVE" and "NOT absorbed dose" in ds.DoseComment and "MBq h/mL" in ds.SeriesDescription
    dose_ds = pydicom.dcmread(io.BytesIO(files["dose_rtdose.dcm"]))
    assert dose_ds.StudyInstanceUID == ds.StudyInstanceUID and dose_ds.FrameOfReferenceUID == ds.FrameOfReferenceUID
    assert dose_ds.SeriesInstanceUID != ds.SeriesInstanceUID and dose_ds.PatientID == ds.PatientID == "VX"
    with pytest.raises(InputError, match="not absorbed dose"):
        read_rtdose(raw)
    of = v["output_files"]["tia_map_rtdose.dcm"]
    assert of["unit"] == "MBq h/mL" and of["dicom_dose_units"] == "RELATIVE"
    assert of["max_quantisation_error"] == pytest.approx(float(ds.DoseGridScaling) / 2)
    assert of["sha256"] == hashlib.sha256(raw).hexdigest()
    assert v["output_files"]["dose_rtdose.dcm"]["dicom_dose_units"] == "GY"
    assert "tia_map_rtdose.dcm" in v["files"] and "time-integrated activity" in v["files"]["tia_map_rtdose.dcm"]


def test_dose_rate_maps_integrate_to_the_dose(full_run):
    """dose_rate_<n>_<t>h.nii.gz at each time point (Gy/h); integrated by hand -- trapezoids
    from (0, 0) and the physical tail R(t_n)/lambda (MIRD Pamphlet 16) -- they give the dose map
    of the dose_rate_integration route (float32 files: 1e-6 of the maximum dose)."""
    res, files = full_run
    v = res.results["voxel"]
    times = v["times_h"]
    names = sorted(k for k in files if k.startswith("dose_rate_") and k.endswith(".nii.gz"))
    assert len(names) == len(times)
    rates = []
    for i, (n, t) in enumerate(zip(names, times), start=1):
        assert n == f"dose_rate_{i:02d}_{t:g}h.nii.gz"
        side = json.loads(files[n.replace(".nii.gz", ".json")])
        assert side["unit"] == "Gy/h" and side["time_h"] == t and side["quantity"] == "absorbed-dose rate"
        assert datetime.fromisoformat(side["acquisition_time"]) == ADMIN + timedelta(hours=t)
        rates.append(np.asarray(_nifti(files, n).array, dtype=np.float64))
        assert v["output_files"][n]["unit"] == "Gy/h"
    lam = math.log(2) / get_nuclide("Lu-177").half_life_h
    t = np.array([0.0] + times)
    r = np.stack([np.zeros_like(rates[0])] + rates)
    by_hand = np.tensordot(0.5 * np.diff(t), r[1:] + r[:-1], axes=1) + r[-1] / lam
    dose = np.asarray(_nifti(files, "dose.nii.gz").array, dtype=np.float64)
    labelled = np.asarray(_nifti(files, "tia.nii.gz").array) > 0
    assert np.abs(by_hand - dose)[labelled].max() <= 1e-6 * dose.max()


def test_every_dvh_output_of_the_issue(full_run):
    """Per region: mean, median, min, max, D2 D50 D70 D90 D98, V(x Gy), EUD (with alpha), voxel
    BED, the cumulative DVH curve, in results.json (region and voxel blocks) and the CSVs; the
    values against an independent computation from the written dose map (float32: 1e-6)."""
    res, files = full_run
    v = res.results["voxel"]
    dose = np.asarray(_nifti(files, "dose.nii.gz").array, dtype=np.float64)
    metrics_rows = {row["region"]: row for row in csv.DictReader(io.StringIO(files["dvh_metrics.csv"].decode()))}
    curve_regions = {row["region"] for row in csv.DictReader(io.StringIO(files["dvh.csv"].decode()))}
    assert set(metrics_rows) == set(curve_regions) == set(PHANTOM_LABELS)
    for name in PHANTOM_LABELS:
        m = v["regions"][name]["dvh_metrics"]
        for key in ("mean", "median", "min", "max"):
            assert m[key]["unit"] == "Gy"
        assert {"D2", "D50", "D70", "D90", "D98"} <= set(m["D"])
        assert {f"V{x:g}Gy" for x in (2, 5, 10, 20, 23, 40)} == set(m["V"])
        c = v["regions"][name]["dvh_curve"]
        assert c["volume_fraction"][0] == 1.0 and len(c["dose_gy"]) == len(c["volume_fraction"])
        assert float(metrics_rows[name]["D90_gy"]) == pytest.approx(m["D"]["D90"]["value"], rel=1e-12)
        tia = v["regions"][name]["time_integrated_activity"]
        assert tia["uncertainty"] == pytest.approx(0.04 * tia["value"]) and set(tia["components"]) == {"calibration"}
    # independent D_x (ICRU 83: the lowest dose of the hottest ceil(x n / 100) voxels) and EUD
    # (Niemierko 1997: -ln(mean exp(-alpha d)) / alpha) of tumour_1 from the dose map
    from mrtdose.workflow.synthetic import voxel_phantom

    labels = voxel_phantom(shape=(30, 36, 44), voxel_mm=6.0)["labels"]
    d = np.sort(dose[labels == PHANTOM_LABELS["tumour_1"]])[::-1]
    m = v["regions"]["tumour_1"]["dvh_metrics"]
    for x in (2, 50, 70, 90, 98):
        assert m["D"][f"D{x}"]["value"] == pytest.approx(d[math.ceil(x * d.size / 100) - 1], rel=1e-6)
    eud = -math.log(np.mean(np.exp(-0.3 * d))) / 0.3
    assert m["eud"]["value"] == pytest.approx(eud, rel=1e-6)
    assert "eud" not in v["regions"]["liver"]["dvh_metrics"]
    assert any("eud_alpha_per_gy" in n for n in v["regions"]["liver"]["dvh_metrics"]["notes"])
    # voxel BED (Dale 1985: BED_i = d_i + G d_i^2 / (alpha/beta)) where the organ level has radiobiology
    rb = res.results["regions"]["kidney_left"]["radiobiology"]
    dk = dose[labels == PHANTOM_LABELS["kidney_left"]]
    bed = res.results["regions"]["kidney_left"]["dvh_metrics"]["bed"]
    assert bed["mean"]["value"] == pytest.approx(np.mean(dk + rb["g_factor"] * dk**2 / rb["alpha_beta_gy"]), rel=1e-6)
    assert "bed" not in v["regions"]["spleen"]["dvh_metrics"]
    assert any("voxel BED not computed" in n for n in v["regions"]["spleen"]["dvh_metrics"]["notes"])


def test_results_with_voxel_outputs_validate_against_the_schema(full_run):
    jsonschema = pytest.importorskip("jsonschema")
    res, _ = full_run
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(json.dumps(res.results)), schema)


def test_user_dicom_kernel_in_the_case(phantom_dir):
    """voxel.kernel.file accepts DICOM: our computed Lu-177 kernel exported with
    write_kernel_dicom gives the same doses as the computed kernel (quantisation 1.2e-10 of the
    kernel maximum: 1e-7 is ample); results.json records the file, its format and SHA-256."""
    d, _ = phantom_dir
    k = compute_voxel_kernel("Lu-177", (6.0, 6.0, 6.0), "soft_tissue")
    (d / "kernel_lu177.dcm").write_bytes(write_kernel_dicom(k))
    rho = get_material("soft_tissue").density_g_per_ml
    computed = run_case(parse_case(_case(phantom_dir)), base_dir=d).results["voxel"]
    doc = _case(phantom_dir, kernel={"file": "kernel_lu177.dcm", "reference_density_g_per_ml": rho})
    res = run_case(parse_case(doc), base_dir=d).results["voxel"]
    for name in PHANTOM_LABELS:
        assert res["regions"][name]["absorbed_dose_voxel"]["value"] == pytest.approx(
            computed["regions"][name]["absorbed_dose_voxel"]["value"], rel=1e-7), name
    kj = res["kernel"]
    assert kj["format"] == "dicom" and kj["file"].endswith("kernel_lu177.dcm")
    assert kj["sha256"] == hashlib.sha256((d / "kernel_lu177.dcm").read_bytes()).hexdigest()
    assert kj["files_sha256"] == {"kernel_lu177.dcm": kj["sha256"]} and "nuclide" in kj["checked_against_case"]
    assert computed["kernel"]["format"] == "computed"
    assert set(res["inputs_sha256"]) == {"activity_maps", "labels", "density", "kernel"}


def test_user_kernel_must_match_the_case(phantom_dir):
    d, _ = phantom_dir
    k = compute_voxel_kernel("Lu-177", (6.0, 6.0, 6.0), "soft_tissue")
    y90 = VoxelKernel(array_gy_per_bq_s=k.array_gy_per_bq_s, voxel_size_mm=k.voxel_size_mm, nuclide="Y-90",
                      medium="soft_tissue", source="relabelled for the test")
    (d / "kernel_y90.dcm").write_bytes(write_kernel_dicom(y90))
    with pytest.raises(InputError, match="nuclide disagrees") as ei:
        run_case(parse_case(_case(phantom_dir, kernel={"file": "kernel_y90.dcm"})), base_dir=d)
    assert ei.value.source.endswith("kernel_y90.dcm")
    (d / "kernel_lu177.dcm").write_bytes(write_kernel_dicom(k))
    with pytest.raises(InputError, match="medium disagrees"):
        run_case(parse_case(_case(phantom_dir, kernel={"file": "kernel_lu177.dcm", "medium": "cortical_bone"})),
                 base_dir=d)
    with pytest.raises(InputError, match="unit disagrees"):
        run_case(parse_case(_case(phantom_dir, kernel={"file": "kernel_lu177.dcm", "unit": "Gy/(Bq s)"})),
                 base_dir=d)
    with pytest.raises(InputError, match="unit applies to a kernel file"):
        parse_case(_case(phantom_dir, kernel={"unit": "Gy/(Bq s)"}))
    with pytest.raises(InputError, match="eud_alpha_per_gy"):
        parse_case(_case(phantom_dir, eud_alpha_per_gy={"ghost": 0.3}))


def test_dose_rate_maps_with_local_deposition(phantom_dir, tmp_path):
    """Local deposition with the voxel trapezoid TIA: both the dose and the rates are linear in
    the activity, so the rates integrated by hand (trapezoids from (0, 0), physical tail) give
    the dose map (float32 files: 1e-6 of the maximum)."""
    d, _ = phantom_dir
    doc = _case(phantom_dir, engine="local_deposition", outputs=["nifti", "dose_rate_maps"])
    res = run_case(parse_case(doc), base_dir=d)
    files = dict(res.files)
    files["__dir__"] = str(tmp_path)
    times = res.results["voxel"]["times_h"]
    rates = [np.asarray(_nifti(files, f"dose_rate_{i:02d}_{t:g}h.nii.gz").array, dtype=np.float64)
             for i, t in enumerate(times, start=1)]
    lam = math.log(2) / get_nuclide("Lu-177").half_life_h
    t = np.array([0.0] + times)
    r = np.stack([np.zeros_like(rates[0])] + rates)
    by_hand = np.tensordot(0.5 * np.diff(t), r[1:] + r[:-1], axes=1) + r[-1] / lam
    dose = np.asarray(_nifti(files, "dose.nii.gz").array, dtype=np.float64)
    assert np.abs(by_hand - dose).max() <= 1e-6 * dose.max()
    assert "dose_rtdose.dcm" not in files and "tia_map_rtdose.dcm" not in files


# --- the optional OpenGATE engine: wiring (the simulation itself: tests/test_monte_carlo_gate.py)

def test_opengate_engine_without_opengate_or_data_is_a_clear_error(phantom_dir):
    from mrtdose.dose import monte_carlo

    if monte_carlo.gate_availability().data_ok:
        pytest.skip("OpenGATE and its Geant4 data are installed: the engine would run (tests/test_monte_carlo_gate.py)")
    d, _ = phantom_dir
    with pytest.raises(InputError, match="(?i)opengate|geant4") as ei:
        run_case(parse_case(_case(phantom_dir, engine="opengate")), base_dir=d)
    assert ei.value.field == "voxel.engine"


@pytest.mark.parametrize("extra, match", [
    ({"route": "dose_rate_integration"}, "use route voxel_kinetics"),
    ({"outputs": ["dose_rate_maps"]}, "not available with engine opengate"),
])
def test_opengate_engine_option_checks(phantom_dir, extra, match):
    with pytest.raises(InputError, match=match):
        parse_case(_case(phantom_dir, engine="opengate", **extra))


def test_opengate_engine_result_enters_results_with_its_statistics(phantom_dir, monkeypatch):
    """The workflow's use of a Monte Carlo result (no simulation: gate_dose_map is replaced by a
    stand-in that returns the local-deposition dose of the TIA map it is given, with 2 % relative
    statistical uncertainty per voxel). Checks the TIA map handed over (MBq h/mL on the maps' grid,
    density as g/mL), the dose map used, and the region-mean statistical component
    sqrt(sum u_i^2) / N."""
    from mrtdose.dose import monte_carlo, voxel as vdose

    seen = {}

    def fake_gate(activity, ct, nuclide, **kw):
        seen.update(activity=activity, ct=ct, kw=kw)
        vox_ml = activity.voxel_volume_ml
        dose = vdose.local_deposition(activity.array * vox_ml, vox_ml, ct.array, nuclide.nonpenetrating_mev)
        return monte_carlo.MonteCarloDose(
            dose=np.asarray(dose, dtype=np.float64), relative_uncertainty=np.full(dose.shape, 0.02), quantity="absorbed dose",
            unit="Gy", nuclide=nuclide.name, n_decays_simulated=kw["n_decays"], primaries={"e-": kw["n_decays"]},
            decays_represented=float(activity.array.sum() * vox_ml * 3.6e9), local_mev_per_decay=0.0,
            energy_check={}, materials=(), settings={"stand-in": True}, versions={"opengate": "test"})

    monkeypatch.setattr(monte_carlo, "gate_availability",
                        lambda: monte_carlo.GateAvailability("test", "test", problem=None))
    monkeypatch.setattr(monte_carlo, "gate_dose_map", fake_gate)
    d, p = phantom_dir
    res = run_case(parse_case(_case(phantom_dir, engine="opengate", monte_carlo={"n_decays": 5000})), base_dir=d)
    vox = res.results["voxel"]
    assert seen["activity"].unit == "MBq h/mL" and seen["ct"].unit == "g/mL"
    assert seen["kw"]["n_decays"] == 5000 and seen["activity"].shape == p["labels"].shape
    assert vox["kernel"]["monte_carlo"]["n_decays_simulated"] == 5000
    liver = vox["regions"]["liver"]["absorbed_dose_voxel"]
    n = int(np.isin(p["labels"], [PHANTOM_LABELS["liver"]]).sum())
    # uniform 2 % per voxel: sqrt(N (0.02 D_i)^2)/N ~ 0.02 * rms(D) / sqrt(N)
    stat = liver["components"]["Monte Carlo statistics"]
    assert 0 < stat < 0.02 * liver["value"] * 3 / math.sqrt(n)
    assert "voxel kernel model" not in liver["components"]


def test_interfile_kernel_with_data_file_in_a_subfolder(phantom_dir, tmp_path):
    """An Interfile header may name its data file in another folder ('name of data file :=
    kdata/k.v', as the reader allows): the kernel's fingerprint hashes that file (it crashed with
    FileNotFoundError looking for it beside the header)."""
    d, p = phantom_dir
    work = tmp_path / "case"
    work.mkdir()
    for f in d.iterdir():
        if f.is_file():
            (work / f.name).write_bytes(f.read_bytes())
    k = compute_voxel_kernel("Lu-177", (6.0, 6.0, 6.0), "soft_tissue")
    a = (k.array_gy_per_bq_s / 1e-9).astype("<f4")
    (work / "kdata").mkdir()
    (work / "kdata" / "k.v").write_bytes(a.tobytes())
    nz, ny, nx = a.shape
    (work / "k.hv").write_text(
        "!INTERFILE :=\n!name of data file := kdata/k.v\n!number format := float\n!number of bytes per pixel := 4\n"
        f"imagedata byte order := LITTLEENDIAN\n!matrix size [1] := {nx}\n!matrix size [2] := {ny}\n"
        f"!matrix size [3] := {nz}\nscaling factor (mm/pixel) [1] := 6\nscaling factor (mm/pixel) [2] := 6\n"
        "scaling factor (mm/pixel) [3] := 6\nunit := mGy/(MBq s)\nnuclide := Lu-177\nmedium := soft_tissue\n"
        "!END OF INTERFILE :=\n")
    v = run_case(parse_case(_case((work, p), kernel={"file": "k.hv"})), base_dir=work).results["voxel"]
    assert v["kernel"]["format"] == "interfile" and set(v["kernel"]["files_sha256"]) == {"k.hv", "k.v"}
    h1 = v["inputs_sha256"]["kernel"]
    (work / "kdata" / "k.v").write_bytes((a * np.float32(1.0001)).tobytes())  # the data changes: so does the hash
    v2 = run_case(parse_case(_case((work, p), kernel={"file": "k.hv"})), base_dir=work).results["voxel"]
    assert v2["inputs_sha256"]["kernel"] != h1


def test_opengate_statistics_exclude_air_voxels_whose_dose_is_zeroed(phantom_dir, tmp_path, monkeypatch):
    """Voxels of air (density < 0.05 g/mL) get dose 0 in the dose map; their Monte Carlo
    uncertainty (large: energy over a tiny mass) must not enter the region mean's statistical
    component. Stand-in result: 1 Gy with u = 0.02 Gy in tissue, 100 Gy with u = 50 Gy in air."""
    from mrtdose.dose import monte_carlo

    d, p = phantom_dir
    work = tmp_path / "case"
    work.mkdir()
    for f in d.iterdir():
        if f.is_file():
            (work / f.name).write_bytes(f.read_bytes())
    liver = np.isin(p["labels"], [PHANTOM_LABELS["liver"]])
    air_in_liver = np.zeros_like(liver)
    air_in_liver[tuple(np.argwhere(liver)[:20].T)] = True  # 20 liver voxels of air (e.g. a gas pocket)
    dens = np.where(air_in_liver, 0.0012, p["density_g_per_ml"])
    v = Volume(array=dens, spacing_mm=(6.0, 6.0, 6.0), origin_mm=(-100.0, -80.0, 20.0), unit="g/mL", modality="NM")
    (work / "density.nii.gz").write_bytes(write_nifti(v, compress=True))
    sidecar_path_for(work / "density.nii.gz").write_bytes(nifti_sidecar_bytes(v))

    def fake_gate(activity, ct, nuclide, **kw):
        air = np.asarray(ct.array) < 0.05
        dose = np.where(air, 100.0, 1.0)
        return monte_carlo.MonteCarloDose(
            dose=dose, relative_uncertainty=np.where(air, 0.5, 0.02), quantity="absorbed dose", unit="Gy",
            nuclide=nuclide.name, n_decays_simulated=kw["n_decays"], primaries={}, decays_represented=1.0,
            local_mev_per_decay=0.0, energy_check={}, materials=(), settings={}, versions={"opengate": "test"})

    monkeypatch.setattr(monte_carlo, "gate_availability",
                        lambda: monte_carlo.GateAvailability("test", "test", problem=None))
    monkeypatch.setattr(monte_carlo, "gate_dose_map", fake_gate)
    res = run_case(parse_case(_case((work, p), engine="opengate", monte_carlo={"n_decays": 5000})), base_dir=work)
    q = res.results["voxel"]["regions"]["liver"]["absorbed_dose_voxel"]
    n = int(liver.sum())
    assert q["value"] == pytest.approx((n - 20) / n)  # the air voxels count as 0 Gy
    assert q["components"]["Monte Carlo statistics"] == pytest.approx(math.sqrt((n - 20) * 0.02**2) / n, rel=1e-9)
