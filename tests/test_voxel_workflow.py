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
