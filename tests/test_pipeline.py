"""The pipeline end to end on cases with analytic ground truth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mrtdose.dose.spheres import self_dose_s_value, sphere_s_value
from mrtdose.errors import FitError, InputError, MrtdoseError
from mrtdose.physics.nuclides import get_nuclide
from mrtdose.workflow.case import parse_case
from mrtdose.workflow.pipeline import run_case

REPO = Path(__file__).resolve().parents[1]
LU = get_nuclide("Lu-177")


def _mono_case(a0=100.0, teff=50.0, times=(4, 24, 72, 144), **region):
    lam = math.log(2) / teff
    meas = [{"time_h": t, "activity_mbq": a0 * math.exp(-lam * t), "uncertainty_pct": 0.01} for t in times]
    r = {"mass_g": 300.0, "measurements": meas, "kinetics": "mono_exp", **region}
    return {
        "patient": {"id": "T"},
        "nuclide": "Lu-177",
        "administration": {"activity_mbq": 7400},
        "regions": {"kidneys": r},
        "options": {"monte_carlo_samples": 0},
    }


def test_mono_exponential_organ_hand_worked():
    """Noiseless mono-exponential data: TIA = A0 T_eff / ln2 = 100 * 50 / 0.693147 = 7213.475 MBq h
    exactly; D = TIA * 3.6e9 Bq s/(MBq h) * S_self(300 g); Gy/GBq = D / 7.4."""
    res = run_case(parse_case(_mono_case())).results
    k = res["regions"]["kidneys"]
    assert k["time_integrated_activity"]["value"] == pytest.approx(100 * 50 / math.log(2), rel=1e-6)
    s = self_dose_s_value(LU, 300.0, 1.03).s_gy_per_bq_s
    d = 100 * 50 / math.log(2) * 3.6e9 * s
    assert k["absorbed_dose"]["value"] == pytest.approx(d, rel=1e-6)
    assert k["absorbed_dose_per_activity"]["value"] == pytest.approx(d / 7.4, rel=1e-6)
    assert k["time_integrated_activity_coefficient"]["value"] == pytest.approx(100 * 50 / math.log(2) / 7400, rel=1e-6)
    # the S-value used is reported
    assert k["s_values"][0]["source"] == "kidneys"
    assert k["s_values"][0]["s_value_gy_per_bq_s"] == pytest.approx(s, rel=1e-9)
    # BED for kidney: G = lambda/(lambda+mu) (Dale 1985), alpha/beta 2.6 Gy
    lam, mu = math.log(2) / 50, math.log(2) / 2.8
    g = lam / (lam + mu)
    assert k["radiobiology"]["g_factor"] == pytest.approx(g, rel=1e-4)
    assert k["bed"]["value"] == pytest.approx(d + g * d * d / 2.6, rel=1e-4)
    assert k["eqd2"]["value"] == pytest.approx(k["bed"]["value"] / (1 + 2 / 2.6), rel=1e-9)


def test_uncertainty_components_hand_worked():
    """With exact data, the dose uncertainty comes from calibration (4 %), mass (10 %) through
    dS/dm, and the S-value model. Calibration scales TIA and dose 1:1, so its contribution is
    exactly 4 % of each; the administered-activity uncertainty only enters Gy/GBq."""
    doc = _mono_case(mass_uncertainty_pct=10)
    doc["options"]["calibration_uncertainty_pct"] = 4.0
    doc["administration"]["activity_uncertainty_pct"] = 3.0
    k = run_case(parse_case(doc)).results["regions"]["kidneys"]
    tia, dose, dpa = k["time_integrated_activity"], k["absorbed_dose"], k["absorbed_dose_per_activity"]
    assert tia["components"]["calibration"] == pytest.approx(0.04 * tia["value"], rel=1e-6)
    assert dose["components"]["calibration"] == pytest.approx(0.04 * dose["value"], rel=1e-6)
    assert "administered activity" not in dose["components"]
    assert dpa["components"]["administered activity"] == pytest.approx(0.03 * dpa["value"], rel=1e-3)
    # mass: S ~ 1/m for the dominant electron part, so between 8 % (photon-only m^-2/3: 6.7 %) and 10 %
    rel_mass = dose["components"]["mass / volume"] / dose["value"]
    assert 0.08 < rel_mass <= 0.1
    comb = math.sqrt(sum(v * v for v in dose["components"].values()))
    assert dose["uncertainty"] == pytest.approx(comb, rel=1e-6)


def test_given_tia_and_lesion_sphere():
    doc = {
        "patient": {"id": "T"},
        "nuclide": "Lu-177",
        "administration": {"activity_mbq": 7400},
        "regions": {
            "spleen": {"mass_g": 150, "tia_mbq_h": 9600, "tia_uncertainty_pct": 10},
            "lesion": {"kind": "lesion", "volume_ml": 10, "density_g_per_ml": 1.0, "tia_mbq_h": 1000, "tia_uncertainty_pct": 10},
        },
        "options": {"monte_carlo_samples": 0},
    }
    res = run_case(parse_case(doc)).results
    sp, le = res["regions"]["spleen"], res["regions"]["lesion"]
    assert sp["absorbed_dose"]["value"] == pytest.approx(9600 * 3.6e9 * self_dose_s_value(LU, 150.0, 1.03).s_gy_per_bq_s, rel=1e-6)
    assert le["absorbed_dose"]["value"] == pytest.approx(1000 * 3.6e9 * sphere_s_value(LU, 10.0, 1.0).s_gy_per_bq_s, rel=1e-6)
    assert sp["absorbed_dose"]["components"]["given TIA"] == pytest.approx(0.1 * sp["absorbed_dose"]["value"], rel=1e-6)
    assert sp["bed"] is None  # no effective half-life: BED cannot be computed, and says so
    assert any("BED not computed" in w for w in res["warnings"])
    assert res["methods"]["cross_dose_included"] is False


def test_table_source_cross_dose(tmp_path):
    """Cross-dose from a table: D(liver) = A~(liver) S(l<-l) + A~(kidneys) S(l<-k)."""
    (tmp_path / "s.csv").write_text(
        "target,source,s_value_gy_per_bq_s,target_mass_g\n"
        "kidneys,kidneys,9.0e-11,300\nliver,liver,1.6e-11,1800\nliver,kidneys,4.0e-13,\nkidneys,liver,4.0e-13,\n"
    )
    doc = {
        "patient": {"id": "T"},
        "nuclide": "Lu-177",
        "administration": {"activity_mbq": 7400},
        "regions": {
            "kidneys": {"mass_g": 300, "tia_mbq_h": 5000, "tia_uncertainty_pct": 5},
            "liver": {"mass_g": 1800, "tia_mbq_h": 20000, "tia_uncertainty_pct": 5},
        },
        "options": {"s_values": "table", "s_value_table": {"path": "s.csv", "phantom": "test"}, "monte_carlo_samples": 0},
    }
    res = run_case(parse_case(doc), base_dir=tmp_path).results
    liver = res["regions"]["liver"]["absorbed_dose"]["value"]
    assert liver == pytest.approx(3.6e9 * (20000 * 1.6e-11 + 5000 * 4.0e-13), rel=1e-9)
    assert res["methods"]["cross_dose_included"] is True


def test_times_before_administration_rejected():
    doc = _mono_case()
    doc["administration"]["time"] = "2026-01-05T10:00:00+00:00"
    doc["regions"]["kidneys"]["measurements"][0] = {"time": "2026-01-05T09:00:00+00:00", "activity_mbq": 50}
    with pytest.raises(InputError, match="not after the administration") as ei:
        run_case(parse_case(doc))
    assert ei.value.field == "regions.kidneys.measurements.0.time"


def test_clock_times_equal_hours():
    doc = _mono_case()
    doc["administration"]["time"] = "2026-03-28T10:00:00+00:00"
    m = doc["regions"]["kidneys"]["measurements"]
    # 24 h after, written in a different UTC offset (BST): 2026-03-29T11:00+01:00
    m[1] = {"time": "2026-03-29T11:00:00+01:00", "activity_mbq": m[1]["activity_mbq"], "uncertainty_pct": 0.01}
    res = run_case(parse_case(doc)).results
    assert res["regions"]["kidneys"]["measurements"][1]["time_h"] == pytest.approx(24.0)


def test_activity_larger_than_administered_is_unit_error():
    doc = _mono_case()
    doc["regions"]["kidneys"]["measurements"][0]["activity_mbq"] = 98_600.0
    doc["administration"]["activity_mbq"] = 7400
    with pytest.raises(InputError, match="exceeds the administered activity"):
        run_case(parse_case(doc))


def test_unknown_nuclide_is_clear():
    doc = _mono_case()
    doc["nuclide"] = "Xx-999"
    with pytest.raises(MrtdoseError, match="Xx-999"):
        run_case(parse_case(doc))


def test_rising_activities_are_not_a_silent_number():
    """Activities still rising at the last point: no fitted model can honestly give a TIA; the
    run fails with an error naming the region, or records a warning on it."""
    doc = _mono_case()
    doc["regions"]["kidneys"]["kinetics"] = "auto"
    for i, m in enumerate(doc["regions"]["kidneys"]["measurements"]):
        m["activity_mbq"] = 10.0 * (i + 1)
        m["uncertainty_pct"] = 5
    try:
        res = run_case(parse_case(doc)).results
    except (FitError, InputError) as exc:
        assert "kidneys" in str(exc)
    else:
        assert res["regions"]["kidneys"]["warnings"], "a rising curve must be flagged"


def test_demo_case_recovers_truth_and_mc_agrees():
    """The bundled synthetic case (seeded noise) recovers the true TIAs within 3 standard
    uncertainties (k=3: a failure is then a real error, not noise), and the Monte Carlo check
    agrees with first-order propagation within 25 % where the model is near-linear."""
    from mrtdose.workflow.case import load_case

    d = REPO / "src" / "mrtdose" / "data" / "examples" / "lu177_dotatate"
    case, raw = load_case(d / "case.yaml")
    truth = json.loads((d / "truth.json").read_text())
    res = run_case(case, source_bytes=raw, source_name="case.yaml", base_dir=d).results
    for name, t in truth["regions"].items():
        tia = res["regions"][name]["time_integrated_activity"]
        assert abs(tia["value"] - t["tia_mbq_h"]) < 3 * tia["uncertainty"], name
    mc = res["uncertainty"]["monte_carlo"]
    assert mc["valid_samples"] > 0.95 * mc["samples"]
    for name in ("kidneys", "liver"):
        for key in ("tia", "dose"):
            assert 0.75 < mc["regions"][name][key]["ratio_mc_to_lpu"] < 1.25, (name, key)
    assert res["cumulative"]["kidneys"]["absorbed_dose"]["value"] == pytest.approx(
        4.1 + res["regions"]["kidneys"]["absorbed_dose"]["value"]
    )
    assert len(res["provenance"]["input"]["sha256"]) == 64


def test_bundled_example_is_reproducible(tmp_path):
    """The bundled example files are exactly what mrtdose.workflow.synthetic generates."""
    from mrtdose.workflow.synthetic import write_example

    from mrtdose.imaging.nifti import read_nifti

    write_example(tmp_path)
    d = REPO / "src" / "mrtdose" / "data" / "examples" / "lu177_dotatate"
    for f in ("case.yaml", "truth.json"):
        assert (tmp_path / f).read_text() == (d / f).read_text(), f
    shipped = sorted(p.name for p in (d / "maps").glob("*.nii.gz"))
    assert shipped == sorted(p.name for p in (tmp_path / "maps").glob("*.nii.gz"))
    for name in shipped:  # gzip headers carry a time stamp: compare the images, not the bytes
        a, b = read_nifti(d / "maps" / name), read_nifti(tmp_path / "maps" / name)
        assert np.array_equal(a.array, b.array) and a.same_grid(b) and a.unit == b.unit, name
        assert a.acquisition_time == b.acquisition_time, name


def test_results_validate_against_published_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from mrtdose.workflow.pipeline import load_and_run

    res = load_and_run(REPO / "src" / "mrtdose" / "data" / "examples" / "lu177_dotatate" / "case.yaml").results
    schema = json.loads((REPO / "schemas" / "results.schema.json").read_text())
    jsonschema.validate(json.loads(json.dumps(res)), schema)


def test_uncertainty_off_reports_null_not_zero():
    doc = _mono_case()
    doc["options"]["uncertainty"] = False
    res = run_case(parse_case(doc)).results
    assert res["regions"]["kidneys"]["absorbed_dose"]["uncertainty"] is None
    assert "not computed" in res["methods"]["uncertainty"]


def test_tiac_carries_administered_activity_uncertainty():
    doc = _mono_case()
    doc["administration"]["activity_uncertainty_pct"] = 3.0
    k = run_case(parse_case(doc)).results["regions"]["kidneys"]
    tiac = k["time_integrated_activity_coefficient"]
    assert tiac["value"] == pytest.approx(k["time_integrated_activity"]["value"] / 7400, rel=1e-9)
    assert tiac["components"]["administered activity"] == pytest.approx(0.03 * tiac["value"], rel=1e-3)


def test_default_density_from_options():
    doc = _mono_case()
    r = doc["regions"]["kidneys"]
    r.pop("mass_g")
    r["volume_ml"] = 300.0
    doc["options"]["organ_density_g_per_ml"] = 1.05
    k = run_case(parse_case(doc)).results["regions"]["kidneys"]
    assert k["mass"]["value"] == pytest.approx(315.0)
    assert k["density_source"].startswith("default")


def test_planar_conjugate_view_measurements():
    """Conjugate view (MIRD 16): a 10 MBq source at 5 cm depth in a 20 cm slab, mu = 0.1/cm,
    C = 10 cps/MBq, 100 s: C_A = 10000 e^-0.5, C_P = 10000 e^-1.5 counts, transmission e^-2 ->
    A = 10 MBq (mean during the acquisition; referred to its start by the MIRD 23 factor,
    1.0001 for 100 s of Lu-177). Counting uncertainty enters the fit; the camera sensitivity
    enters once, as the calibration component."""
    a0, teff = 10.0, 50.0
    meas = []
    for t in (4.0, 24.0, 72.0, 144.0):
        a = a0 * math.exp(-math.log(2) / teff * t)
        meas.append({"time_h": t, "planar": {
            "anterior_counts": 1000 * a * math.exp(-0.5), "posterior_counts": 1000 * a * math.exp(-1.5),
            "acquisition_duration_s": 100, "sensitivity_cps_per_mbq": 10.0, "sensitivity_uncertainty_pct": 4,
            "body_thickness_cm": 20.0, "mu_per_cm": 0.1}})
    doc = {
        "patient": {"id": "PL"}, "nuclide": "Lu-177", "administration": {"activity_mbq": 7400},
        "regions": {"liver": {"mass_g": 1800, "measurements": meas, "kinetics": "mono_exp"}},
        "options": {"monte_carlo_samples": 0, "calibration_uncertainty_pct": 4},
    }
    k = run_case(parse_case(doc)).results["regions"]["liver"]
    from mrtdose.physics.decay import mean_activity_factor_during_acquisition

    f = mean_activity_factor_during_acquisition(100 / 3600, LU.half_life_h)
    assert k["measurements"][0]["activity"]["value"] == pytest.approx(a0 * math.exp(-math.log(2) / teff * 4) / f, rel=1e-9)
    # counting statistics only: sqrt(C_A, C_P) errors of ~1 % at these counts
    rel = k["measurements"][0]["activity"]["uncertainty"] / k["measurements"][0]["activity"]["value"]
    assert 0.002 < rel < 0.03
    assert k["time_integrated_activity"]["value"] == pytest.approx(a0 * teff / math.log(2) / f, rel=1e-3)
    assert k["time_integrated_activity"]["components"]["calibration"] == pytest.approx(
        0.04 * k["time_integrated_activity"]["value"], rel=1e-6)


def test_planar_needs_exactly_one_attenuation_input():
    doc = _mono_case()
    doc["regions"]["kidneys"]["measurements"][0] = {"time_h": 4, "planar": {
        "anterior_counts": 100, "posterior_counts": 100, "acquisition_duration_s": 10, "sensitivity_cps_per_mbq": 5}}
    with pytest.raises(InputError, match="transmission or body_thickness_cm"):
        parse_case(doc)
