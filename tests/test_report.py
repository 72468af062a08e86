"""The HTML report (mrtdose.reports) and the published JSON Schema of results.json.

The fixture is a hand-built results document shaped exactly as ``run_case`` builds it
(src/mrtdose/workflow/pipeline.py): a kidney with a bi-exponential uptake fit (curve and AICc
candidates), a lesion with a single-time-point (Hänscheid) TIA and a recovery coefficient, a
spleen with a given TIA and no BED, warnings, a Monte Carlo block and a cumulative block. The
numbers are realistic for Lu-177-DOTATATE (about 0.6 Gy/GBq to the kidneys, e.g. Sandström et al.
2013, J Nucl Med 54:33) but they are test data: the report must show them, never recompute them.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest
from markupsafe import escape

from mrtdose.reports.html import ICRP107_NOTICE, format_quantity, render_report

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "results.schema.json"
EVIL_ID = "<script>alert('pwned')</script>"


def q(value, uncertainty, unit, method=None, components=None):
    out = {"value": value, "uncertainty": uncertainty, "unit": unit}
    if method:
        out["method"] = method
    if components:
        out["components"] = components
    return out


def _kidney_curve():
    # A(t) = 200 (exp(-0.0116 t) - exp(-0.5 t)) MBq, sampled like pipeline._curve.
    t_end = max(1.5 * 168.0, 2 * 159.528)
    ts = [round(t_end * i / 240, 4) for i in range(241)]
    return {"time_h": ts, "activity_mbq": [200.0 * (math.exp(-0.0116 * t) - math.exp(-0.5 * t)) for t in ts]}


@pytest.fixture
def results() -> dict:
    return _build_results()


def _build_results() -> dict:
    methods = {
        "kinetics_default": "auto",
        "kinetics_by_region": {
            "kidneys": "fit: bi_exp_uptake",
            "lesion_1": "single time point: hanscheid",
            "spleen": "given TIA",
        },
        "s_values_organs": "self_sphere",
        "s_values_organs_description": "self-dose only: non-penetrating energy absorbed locally; photon "
        "self-absorbed fraction of a sphere",
        "s_values_lesions": "sphere",
        "s_values_lesions_description": "sphere model: electron and photon absorbed fractions of a sphere",
        "s_value_method_by_region": {"kidneys": "self_sphere", "lesion_1": "sphere", "spleen": "self_sphere"},
        "cross_dose_included": False,
        "uncertainty": "law of propagation of uncertainty (GUM; EANM, Gear et al. 2018) with correlations; "
        "Monte Carlo check with 2000 samples (GUM Supplement 1)",
        "calibration_uncertainty_pct": 4.0,
        "default_measurement_uncertainty_pct": 5.0,
        "include_progeny": False,
        "radiobiology": "linear-quadratic BED with Lea-Catcheside G-factor (Dale 1985); EQD2",
    }
    sphere_details = {
        "electron_absorbed_fraction": 0.9312,
        "photon_absorbed_fraction": 0.0321,
        "electron_s_gy_per_bq_s": 1.72e-12,
        "photon_s_gy_per_bq_s": 1.5e-15,
        "alpha_s_gy_per_bq_s": 0.0,
    }

    def mc(mean, std, lo, hi, lpu, unit):
        return {"mean": mean, "std": std, "p2_5": lo, "p97_5": hi, "lpu_std": lpu, "unit": unit,
                "ratio_mc_to_lpu": std / lpu}

    return {
        "schema_version": "1.0",
        "case": {
            "patient": {"id": EVIL_ID, "sex": "female", "mass_kg": 68.0},
            "radiopharmaceutical": "Lu-177-DOTATATE",
            "nuclide": "Lu-177",
            "administration": {"activity_mbq": 7400.0, "activity_uncertainty_pct": 1.5,
                               "time": "2024-03-05T10:30:00+00:00", "cycle": 2},
            "notes": "Dose & timing <checked> by R&D",
        },
        "nuclide": {
            "name": "Lu-177",
            "half_life_h": 159.528,
            "energy_per_decay_mev": {"beta-": 0.13327, "gamma": 0.031558, "X": 0.0035397, "auger": 0.0011318,
                                     "IE": 0.013522},
            "nonpenetrating_mev": 0.14792,
            "photon_mev": 0.035098,
        },
        "regions": {
            "kidneys": {
                "kind": "organ",
                "mass": q(310.0, 31.0, "g", "given"),
                "density_g_per_ml": 1.05,
                "measurements": [
                    {"time_h": 4.0, "activity": q(160.2, 8.0, "MBq")},
                    {"time_h": 24.0, "activity": q(151.2, 7.6, "MBq")},
                    {"time_h": 48.0, "activity": q(114.4, 5.7, "MBq")},
                    {"time_h": 168.0, "activity": q(28.5, 1.4, "MBq")},
                ],
                "kinetics": {  # {"method": "fit", **FitResult.to_json(), "curve": ...}
                    "method": "fit",
                    "model": "bi_exp_uptake",
                    "formula": "A(t) = A1 (exp(-lambda1 t) - exp(-lambda2 t))",
                    "nonparametric": False,
                    "param_names": ["A1_mbq", "lambda1_per_h", "lambda2_per_h"],
                    "params": [200.0, 0.0116, 0.5],
                    "param_uncertainties": [8.0, 0.00063246, 0.06],
                    "covariance": [[64.0, 0.0012, -0.2], [0.0012, 4.0e-7, 1.0e-5], [-0.2, 1.0e-5, 0.0036]],
                    "times_h": [4.0, 24.0, 48.0, 168.0],
                    "activities_mbq": [160.2, 151.2, 114.4, 28.5],
                    "sigmas_mbq": [8.0, 7.6, 5.7, 1.4],
                    "residuals_mbq": [-3.68, -0.17, -0.22, 0.02],
                    "chi2": 0.213,
                    "dof": 1,
                    "reduced_chi2": 0.213,
                    "chi2_p_value": 0.644,
                    "aicc": 31.4,
                    "r2": 0.9962,
                    "tia": {"value": 16840.3, "uncertainty": 1008.2, "unit": "MBq h"},
                    "extrapolated_fraction": 0.1432,
                    "effective_half_lives_h": {"effective": 59.75, "terminal": 59.75},
                    "decay_constant_per_h": 0.004345,
                    "allow_below_physical": False,
                    "warnings": ["model selected by AICc among 2 accepted candidate(s): bi_exp_uptake (Akaike weight 0.87)"],
                    "candidates": [
                        {"model": "mono_exp", "n_params": 2, "aicc": 35.2, "akaike_weight": 0.13, "accepted": True,
                         "reason": "accepted", "tia_mbq_h": 15010.0, "tia_uncertainty_mbq_h": 690.0},
                        {"model": "bi_exp_uptake", "n_params": 3, "aicc": 31.4, "akaike_weight": 0.87, "accepted": True,
                         "reason": "selected: accepted", "tia_mbq_h": 16840.3, "tia_uncertainty_mbq_h": 1008.2},
                        {"model": "bi_exp", "n_params": 4, "aicc": None, "akaike_weight": None, "accepted": False,
                         "reason": "too few points for 4 parameters", "tia_mbq_h": None, "tia_uncertainty_mbq_h": None},
                    ],
                    "curve": _kidney_curve(),
                },
                "time_integrated_activity": q(16840.3, 1243.7, "MBq h", "fit: bi_exp_uptake",
                                              {"activity measurements and fit": 1008.2, "calibration": 673.6}),
                "time_integrated_activity_coefficient": q(2.27572, 0.16807, "h", "fit: bi_exp_uptake"),
                "s_values": [{
                    "source": "kidneys",
                    "s_value_gy_per_bq_s": 7.87e-14,
                    "model_uncertainty_rel": 0.02,
                    "method": "self_sphere: electrons local, photon AF of a sphere (point kernel)",
                    "details": {"electron_absorbed_fraction": 1.0, "photon_absorbed_fraction": 0.1402,
                                "electron_s_gy_per_bq_s": 7.64e-14, "photon_s_gy_per_bq_s": 2.3e-15,
                                "alpha_s_gy_per_bq_s": 0.0},
                    "references": ["Berger MJ 1971, MIRD Pamphlet 7"],
                }],
                "absorbed_dose": q(4.7712, 0.45164, "Gy", "MIRD: sum over sources of TIA x S", {
                    "activity measurements and fit": 0.3012,
                    "calibration": 0.1908,
                    "mass / volume": 0.2603,
                    "S-value model (self-dose)": 0.0954,
                }),
                "absorbed_dose_per_activity": q(0.64476, 0.06312, "Gy/GBq", "absorbed dose / administered activity",
                                                {"activity measurements and fit": 0.0407, "calibration": 0.0258,
                                                 "mass / volume": 0.0352, "administered activity": 0.0097}),
                "bed": q(5.0123, 0.4987, "Gy", "LQ model with Lea-Catcheside G for the fitted kinetics",
                         {"activity measurements and fit": 0.33, "calibration": 0.21, "mass / volume": 0.29}),
                "eqd2": q(2.8331, 0.2819, "Gy", "EQD2 = BED / (1 + 2/(alpha/beta))"),
                "radiobiology": {
                    "tissue": "kidney",
                    "alpha_beta_gy": 2.6,
                    "repair_half_time_h": 2.8,
                    "g_factor": 0.0231,
                    "dose_rate_shape": "the region's own activity time course (self-dose dominated)",
                    "references": ["Dale RG 1996, Acta Oncol 35:1005 (kidney alpha/beta 2.6 Gy, repair 2.8 h)"],
                },
                "warnings": [],
            },
            "lesion_1": {
                "kind": "lesion",
                "mass": q(12.36, 1.85, "g", "volume x density"),
                "density_g_per_ml": 1.03,
                "measurements": [{"time_h": 96.0, "activity": q(12.5, 0.625, "MBq")}],
                # {**STPResult.to_json(), "method": "single_time_point", "stp_method": ...}
                "kinetics": {
                    "method": "single_time_point",
                    "stp_method": "hanscheid",
                    "time_h": 96.0,
                    "activity": {"value": 14.706, "uncertainty": 0.735, "unit": "MBq"},
                    "tia": {"value": 4073.7, "uncertainty": 644.5, "unit": "MBq h"},
                    "tia_per_activity_h": 277.0,
                    "components": {"activity": 203.7, "population_spread": 0.0, "approximation": 611.1},
                    "effective_half_life_h": None,
                    "effective_half_life_sd_h": None,
                    "assumptions": ["kinetics close to mono-exponential clearance after the measurement",
                                    "TIA = A(t) 2t/ln2 is exact when t = T_eff or t = 2 T_eff"],
                    "references": ["Hänscheid H et al. 2018, J Nucl Med 59:75"],
                    "warnings": [],
                },
                "time_integrated_activity": q(4073.7, 700.2, "MBq h", "single time point: hanscheid"),
                "time_integrated_activity_coefficient": q(0.55050, 0.09462, "h", "single time point: hanscheid"),
                "s_values": [{
                    "source": "lesion_1",
                    "s_value_gy_per_bq_s": 1.722e-12,
                    "model_uncertainty_rel": 0.05,
                    "method": "sphere: electron and photon AF of a sphere (point kernel)",
                    "details": sphere_details,
                    "references": ["Berger MJ 1971, MIRD Pamphlet 7"],
                }],
                "absorbed_dose": q(25.254, 5.6152, "Gy", "MIRD: sum over sources of TIA x S",
                                   {"single-time-point model": 3.79, "mass / volume": 3.78, "recovery coefficient": 1.49}),
                "absorbed_dose_per_activity": q(3.4127, 0.7589, "Gy/GBq", "absorbed dose / administered activity"),
                "bed": q(27.98, 6.41, "Gy", "LQ model with Lea-Catcheside G for the fitted kinetics"),
                "eqd2": q(23.317, 5.342, "Gy", "EQD2 = BED / (1 + 2/(alpha/beta))"),
                "radiobiology": {
                    "tissue": "tumour",
                    "alpha_beta_gy": 10.0,
                    "repair_half_time_h": 1.5,
                    "g_factor": 0.0108,
                    "dose_rate_shape": "the region's own activity time course (self-dose dominated)",
                    "references": ["Joiner & van der Kogel, Basic Clinical Radiobiology, 4th ed."],
                },
                "warnings": [],
                "recovery_coefficient": {"value": 0.85, "uncertainty": 0.05, "unit": "1"},
            },
            "spleen": {
                "kind": "organ",
                "mass": q(150.0, 0.0, "g", "given"),
                "density_g_per_ml": 1.03,
                "measurements": [],
                "kinetics": {"method": "given", "tia_mbq_h": 5200.0, "effective_half_life_h": None},
                "time_integrated_activity": q(5200.0, 520.0, "MBq h", "given TIA", {"given TIA": 520.0}),
                "time_integrated_activity_coefficient": q(0.70270, 0.07027, "h", "given TIA"),
                "s_values": [{
                    "source": "spleen",
                    "s_value_gy_per_bq_s": 1.602e-13,
                    "model_uncertainty_rel": 0.02,
                    "method": "self_sphere",
                    "details": {"electron_absorbed_fraction": 1.0, "photon_absorbed_fraction": 0.1105},
                    "references": [],
                }],
                "absorbed_dose": q(2.9990, 0.3064, "Gy", "MIRD: sum over sources of TIA x S",
                                   {"given TIA": 0.2999, "S-value model (self-dose)": 0.0600}),
                "absorbed_dose_per_activity": q(0.40527, 0.04151, "Gy/GBq", "absorbed dose / administered activity"),
                "bed": None,
                "eqd2": None,
                "radiobiology": None,
                "warnings": ["spleen: BED not computed: no kinetics shape (give effective_half_life_h for a given TIA)"],
            },
        },
        "cumulative": {
            "kidneys": {
                "cycles": [1, 2],
                "absorbed_dose": q(9.3112, 0.6210, "Gy", "sum over cycles"),
                "bed": q(10.0223, 0.7102, "Gy", "sum of per-cycle BEDs (complete repair between cycles)"),
                "eqd2": q(5.6651, 0.4014, "Gy", "EQD2 of the cumulative BED"),
            },
            "lesion_1": {
                "cycles": [1, 2],
                "absorbed_dose": q(47.2, 7.9, "Gy", "sum over cycles"),
                "bed": None,
            },
        },
        "uncertainty": {
            "method": methods["uncertainty"],
            "coverage": "standard uncertainty, k=1",
            "inputs": [
                {"name": "calibration", "component": "calibration", "description": "activity calibration factor",
                 "value": [1.0], "std": [0.04]},
                {"name": "kidneys/fit", "component": "activity measurements and fit",
                 "description": "kidneys: fitted bi_exp_uptake parameters", "value": [200.0, 0.0116, 0.5],
                 "std": [8.0, 0.000632, 0.06]},
                {"name": "kidneys/mass", "component": "mass / volume", "description": "kidneys: mass (g)",
                 "value": [310.0], "std": [31.0]},
                {"name": "administered", "component": "administered activity",
                 "description": "administered activity (dose calibrator)", "value": [1.0], "std": [0.015]},
            ],
            "monte_carlo": {
                "samples": 2000,
                "valid_samples": 1998,
                "seed": 20180911,
                "regions": {
                    "kidneys": {
                        "tia": mc(16855.0, 1260.1, 14420.0, 19390.0, 1243.7, "MBq h"),
                        "dose": mc(4.781, 0.4611, 3.91, 5.72, 0.45164, "Gy"),
                        "bed": mc(5.024, 0.5103, 4.08, 6.07, 0.4987, "Gy"),
                    },
                    "lesion_1": {
                        "tia": mc(4101.0, 712.0, 2790.0, 5560.0, 700.2, "MBq h"),
                        "dose": mc(25.9, 6.93, 14.2, 41.0, 5.6152, "Gy"),
                        "bed": mc(28.9, 8.2, 15.1, 47.3, 6.41, "Gy"),
                    },
                    "spleen": {
                        "tia": mc(5199.0, 519.0, 4180.0, 6220.0, 520.0, "MBq h"),
                        "dose": mc(2.998, 0.3061, 2.40, 3.60, 0.3064, "Gy"),
                    },
                },
            },
        },
        "methods": methods,
        "warnings": [
            "lesion_1: Monte Carlo and first-order uncertainty of dose differ by +23 %: the model is non-linear "
            "over the uncertainty range; read the Monte Carlo 95 % interval",
            "spleen: no mass/volume uncertainty given; mass treated as exact",
            "spleen: BED not computed: no kinetics shape (give effective_half_life_h for a given TIA)",
        ],
        "provenance": {
            "software": {"name": "mrtdose", "version": "0.1.0"},
            "python": "3.12.3",
            "platform": "Linux-6.8",
            "libraries": {"numpy": "2.4.6", "scipy": "1.17.1", "matplotlib": "3.11.2"},
            "reference_data": {"icrp107-database": "0.0.3", "radioactivedecay": "0.6.1",
                               "radioactivedecay_dataset": "icrp107_ame2020_nubase2020"},
            "input": {"file": "case_<17>.yaml", "sha256": "a" * 64},
            "methods": methods,
            "created_utc": "2024-03-12T09:15:02+00:00",
        },
    }


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# ---------------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------------


def test_fixture_is_valid_against_the_schema(results, validator):
    errors = sorted(validator.iter_errors(results), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda d: d.pop("provenance"), "top-level provenance"),
        (lambda d: d.pop("regions"), "top-level regions"),
        (lambda d: d["regions"]["kidneys"].pop("absorbed_dose"), "region absorbed_dose"),
        (lambda d: d["regions"]["spleen"].pop("bed"), "region bed (null is required, not absent)"),
        (lambda d: d["regions"]["kidneys"].pop("kinetics"), "region kinetics"),
        (lambda d: d["regions"]["kidneys"].pop("mass"), "region mass"),
        (lambda d: d["regions"]["kidneys"]["kinetics"].pop("curve"), "fit without curve"),
        (lambda d: d["regions"]["kidneys"]["kinetics"].pop("covariance"), "fit without covariance"),
        (lambda d: d["regions"]["lesion_1"]["kinetics"].pop("stp_method"), "STP without its method"),
        (lambda d: d["regions"]["spleen"]["kinetics"].pop("tia_mbq_h"), "given TIA without the TIA"),
        (lambda d: d["regions"]["kidneys"]["absorbed_dose"].pop("unit"), "quantity without unit"),
        (lambda d: d["regions"]["kidneys"]["absorbed_dose"].update(uncertainty=-0.1), "negative uncertainty"),
        (lambda d: d["regions"]["kidneys"]["absorbed_dose"].update(value="4.77"), "value as a string"),
        (lambda d: d["regions"]["kidneys"].update(bed="5.0 Gy"), "bed neither quantity nor null"),
        (lambda d: d["provenance"]["input"].pop("sha256"), "provenance.input.sha256"),
        (lambda d: d["provenance"]["input"].update(sha256="not-a-hash"), "malformed sha256"),
        (lambda d: d["provenance"].pop("methods"), "provenance.methods"),
        (lambda d: d["case"]["patient"].pop("id"), "patient id"),
        (lambda d: d.update(regions={}), "no regions"),
    ],
)
def test_schema_rejects_documents_missing_what_the_pipeline_guarantees(results, validator, mutate, where):
    bad = copy.deepcopy(results)
    mutate(bad)
    assert not validator.is_valid(bad), f"schema accepted a document with broken {where}"


def test_schema_allows_later_additions(results, validator):
    doc = copy.deepcopy(results)
    doc["spect_protocol"] = {"spect": {"camera": "Symbia Intevo", "calibration_factor_cps_per_mbq": 9.8}}
    doc["regions"]["kidneys"]["dvh"] = {"d50_gy": 4.6}
    doc["regions"]["kidneys"]["kinetics"]["something_new"] = [1, 2]
    assert validator.is_valid(doc)


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def html() -> str:
    return render_report(_build_results())


def test_numbers_are_formatted_with_two_significant_digits_of_u(html):
    # format_value: 2 significant digits of u, value rounded to the same decimal.
    for text in (
        "4.77 ± 0.45 Gy",          # kidney absorbed dose 4.7712 ± 0.45164
        "16800 ± 1200 MBq h",      # kidney TIA 16840.3 ± 1243.7
        "0.645 ± 0.063 Gy/GBq",    # 0.64476 ± 0.06312
        "5.01 ± 0.50 Gy",          # kidney BED 5.0123 ± 0.4987
        "2.83 ± 0.28 Gy",          # kidney EQD2
        "310 ± 31 g",              # kidney mass
        "25.3 ± 5.6 Gy",           # lesion dose 25.254 ± 5.6152
        "4070 ± 700 MBq h",        # lesion TIA 4073.7 ± 700.2
        "3.00 ± 0.31 Gy",          # spleen dose 2.9990 ± 0.3064
        "9.31 ± 0.62 Gy",          # cumulative kidney dose
        "10.02 ± 0.71 Gy",         # cumulative kidney BED
        "151.2 ± 7.6 MBq",         # a measured activity
        "0.850 ± 0.050",           # lesion recovery coefficient (unit "1" not printed)
        "200.0 ± 8.0",             # fit parameter a with u = sqrt(64)
    ):
        assert text in html, text
    # Monte Carlo mean and 95 % interval at the precision of the MC standard deviation (1260.1)
    assert "16900 MBq h" in html and "14400 – 19400 MBq h" in html
    assert "150 g (u = 0)" in html  # an exact mass is labelled, not shown as if it had a tiny u
    assert "9.5 %" in html  # relative uncertainty of the kidney dose 0.45164/4.7712
    # uncertainty budget: share of variance of the fit component 0.3012^2/0.45164^2 = 44 %
    assert "44 %" in html


def test_header_summary_and_sections(html):
    for text in (
        "Lu-177-DOTATATE", "7400 MBq (standard uncertainty 1.5 %)", "2024-03-05T10:30:00+00:00",
        "Therapy cycle", "Summary of results", "bi_exp_uptake", "Candidate models", "akaike weight",
        "Correlation matrix", "reduced χ²", "Single-time-point method: <strong>hanscheid</strong>",
        "A(t) = A1 (exp(-lambda1 t) - exp(-lambda2 t))", "Data used by the fit", "-0.46",  # -3.68/8.0
        "<li>kinetics close to mono-exponential clearance after the measurement</li>",
        'after the last measurement</th><td class="num">14 %',  # extrapolated fraction 0.1432
        "16800 ± 1000 MBq h",  # TIA of the fit alone
        "effective: 59.75; terminal: 59.75", "too few points for 4 parameters",
        "Time-integrated activity <strong>given</strong>", "S-values used", "electron absorbed fraction",
        "Uncertainty budget", "Monte Carlo check", "u(MC) / u(first order)", "1.23",
        "Radiobiology", "α/β (Gy)", "Lea–Catcheside G-factor", "Cumulative over cycles",
        "Methods", "law of propagation of uncertainty", "Provenance", "a" * 64, "icrp107_ame2020_nubase2020",
        "References", "Lassmann M", "Hänscheid H et al. 2018", "Prepared by", "Checked by", "Signature",
    ):
        assert text in html, text
    # correlations shown from the covariance: a/lambda_out 0.0012 / (8 * 6.3246e-4) = 0.2372,
    # a/lambda_in -0.2 / (8 * 0.06) = -0.4167
    assert "0.237" in html and "-0.417" in html


def test_icrp107_notice(html):
    assert "ICRP Publication 107 (Eckerman &amp; Endo 2008, Ann. ICRP 38(3))" in html
    assert str(escape(ICRP107_NOTICE)) in html
    assert "© ICRP" in html


def test_warnings_are_prominent_and_complete(html):
    head = html.split('id="summary"')[0]
    assert 'class="warnings"' in head  # before the summary table
    assert "Monte Carlo and first-order uncertainty of dose differ by +23 %" in head
    assert "spleen: BED not computed" in head
    assert "Warnings (3)" in head  # no duplicates of the region warnings
    assert "not computed" in html.split('id="summary"')[1].split("</table>")[0]  # spleen BED


def test_region_only_warning_is_listed_at_the_top(results):
    """A warning held only by a region (not in the document's list) still reaches the top box."""
    results["regions"]["kidneys"]["warnings"].append("kidneys: only in the region")
    head = render_report(results).split('id="summary"')[0]
    assert "kidneys: only in the region" in head
    assert "Warnings (4)" in head


def test_user_strings_are_escaped(html):
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
    assert "Dose &amp; timing &lt;checked&gt; by R&amp;D" in html
    assert "case_&lt;17&gt;.yaml" in html


def test_self_contained_with_embedded_png(html):
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 3  # kidney fit plot + dose budgets
    for b64 in images:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link" not in html and "<script" not in html
    assert html.startswith("<!DOCTYPE html>")


def test_rendering_does_not_mutate_the_input(results):
    before = copy.deepcopy(results)
    dumped = json.dumps(results, sort_keys=True)
    render_report(results)
    assert results == before
    assert json.dumps(results, sort_keys=True) == dumped


def test_json_round_trip_and_determinism(results):
    # The CLI renders from results.json: a document read back from JSON renders the same bytes.
    a = render_report(results)
    b = render_report(json.loads(json.dumps(results)))
    assert a == b


def test_thread_safe_rendering(results):
    with ThreadPoolExecutor(max_workers=3) as pool:
        pages = list(pool.map(lambda _: render_report(copy.deepcopy(results)), range(3)))
    assert all(p == pages[0] for p in pages)


def test_minimal_document_renders(results, validator):
    """Any document valid against the schema renders: no MC, no cumulative, a fit block with
    unknown keys and no covariance, null values, no sha256."""
    doc = copy.deepcopy(results)
    doc["cumulative"] = None
    doc["uncertainty"]["monte_carlo"] = None
    doc["warnings"] = []
    for r in doc["regions"].values():
        r["warnings"] = []
    doc["regions"]["spleen"]["warnings"] = []
    kin = doc["regions"]["kidneys"]["kinetics"]
    doc["regions"]["kidneys"]["kinetics"] = {
        "method": "fit", "model": "mono_exp", "param_names": ["A1_mbq", "lambda1_per_h"], "params": [100.0, None],
        "covariance": [], "curve": kin["curve"], "new_stat": 3.5, "nested": {"x": [1, {"y": 2}]},
    }
    doc["regions"]["kidneys"]["eqd2"] = q(None, None, "Gy")
    doc["provenance"]["input"] = {"file": None, "sha256": None}
    doc["case"]["administration"].pop("time")
    assert validator.is_valid(doc)
    html = render_report(doc)
    assert "No warnings" in html
    assert "not recorded" in html
    assert "new stat" in html and "3.5" in html
    assert "Cumulative over cycles" not in html
    assert "not run" in html
    assert "n/a Gy" in html
    assert "100 (u not available)" in html  # a parameter without covariance
    # and, beyond the schema, a differently shaped fit block still renders (the report is defensive)
    doc["regions"]["kidneys"]["kinetics"] = {"method": "fit", "params": {"a": 1.0}, "curve": None}
    assert "<code>a</code>" in render_report(doc)


@pytest.mark.parametrize(
    "quantity, text",
    [
        ({"value": 2.7431, "uncertainty": 0.2123, "unit": "Gy"}, "2.74 ± 0.21 Gy"),
        ({"value": 2.7431, "uncertainty": 0.0, "unit": "Gy"}, "2.743 Gy (u = 0)"),
        ({"value": 2.7431, "uncertainty": None, "unit": "Gy"}, "2.743 Gy (u not available)"),
        ({"value": None, "uncertainty": None, "unit": "Gy"}, "n/a Gy"),
        ({"value": 0.85, "uncertainty": 0.05, "unit": "1"}, "0.850 ± 0.050"),
        (None, "—"),
    ],
)
def test_format_quantity(quantity, text):
    assert format_quantity(quantity) == text


# ---------------------------------------------------------------------------------------------
# voxel dosimetry: the bundled example case (activity maps, label map, density map)
# ---------------------------------------------------------------------------------------------

EXAMPLE_CASE = Path(__file__).resolve().parents[1] / "src" / "mrtdose" / "data" / "examples" / "lu177_dotatate" / "case.yaml"
_PNG_RE = r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"'


@pytest.fixture(scope="module")
def example():
    """The real example run once per module (about 10 s): CaseResult(results, files, display)."""
    from mrtdose.workflow.pipeline import load_and_run

    return load_and_run(EXAMPLE_CASE)


@pytest.fixture(scope="module")
def example_html(example) -> str:
    return render_report(example.results, display=example.display)


def _voxel_section(page: str) -> str:
    start = page.index('<section id="voxel">')
    return page[start:page.index("</section>", start)]


def test_example_results_with_voxel_block_validate(example, validator):
    doc = json.loads(json.dumps(example.results))
    assert doc["voxel"] is not None
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    # the region mean voxel dose carries the calibration and kernel-model uncertainty
    u = doc["regions"]["kidneys"]["absorbed_dose_voxel"]
    assert u["uncertainty"] is not None and "partial-volume" in u["method"]  # calibration and kernel only


def test_fixture_without_voxel_is_valid(results, validator):
    doc = copy.deepcopy(results)
    doc["voxel"] = None
    assert validator.is_valid(doc)


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda v: v.pop("regions"), "voxel without regions"),
        (lambda v: v.pop("grid"), "voxel without grid"),
        (lambda v: v.pop("files"), "voxel without files"),
        (lambda v: v["regions"]["kidneys"].pop("dvh_curve"), "voxel region without DVH curve"),
        (lambda v: v["regions"]["kidneys"].pop("absorbed_dose_voxel"), "voxel region without mean dose"),
        (lambda v: v["regions"]["kidneys"]["absorbed_dose_voxel"].pop("unit"), "voxel dose without unit"),
        (lambda v: v["regions"]["kidneys"]["dvh_metrics"]["D"].update(D50="4 Gy"), "D50 as a string"),
        (lambda v: v.update(regions={}), "voxel block with no regions"),
        (lambda v: v.update(kernel="convolution"), "kernel not an object"),
    ],
)
def test_schema_rejects_broken_voxel_blocks(example, validator, mutate, where):
    doc = json.loads(json.dumps(example.results))
    mutate(doc["voxel"])
    assert not validator.is_valid(doc), f"schema accepted a document with {where}"


def test_schema_rejects_a_broken_per_region_voxel_dose(example, validator):
    doc = json.loads(json.dumps(example.results))
    doc["regions"]["liver"]["absorbed_dose_voxel"] = {"value": 1.5, "uncertainty": -1.0, "unit": "Gy"}
    assert not validator.is_valid(doc)


def test_voxel_section_with_dvh_plot_and_overlays(example, example_html):
    page = example_html
    assert '<li><a href="#voxel">Voxel dosimetry</a></li>' in page
    sec = _voxel_section(page)
    vox = example.results["voxel"]
    for text in (
        "Voxel dosimetry", "48 × 64 × 80 voxels (z × y × x)", "4.8 × 4.8 × 4.8 mm", "67 × 67 × 67 voxels",
        str(escape(vox["kernel"]["source"])), str(escape(vox["kernel"]["description"])),
        vox["dose"]["route"], vox["dose"]["engine"], "Density correction of the kernel",
        "1, 4, 24, 96, 168 h (5 maps)", "density map density.nii.gz",
        "DVH metrics: absorbed dose", "D98: minimum dose to the hottest 98 %", "V20Gy: volume receiving ≥ 20 Gy",
        "Voxel BED", "Patient-specific S-values", "Output files", "dose_rtdose.dcm", "dvh.csv",
        "partial-volume spill-in and spill-out", "Voxel values carry no propagated uncertainty",
    ):
        assert text in sec, text
    slices = example.display["voxel"]["slices"]
    assert len(slices) >= 1
    images = re.findall(_PNG_RE, sec)
    assert len(images) == 1 + len(slices)  # one DVH plot, one overlay per slice
    for b64 in images:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Cumulative dose-volume histograms of kidneys, liver" in sec
    for s in slices:
        assert f"Axial slice z = {s['z']}" in sec
    assert "images are not part of the results document" not in sec
    # the patient-specific S matrix, S[target][source] in Gy/(Bq s)
    s = vox["patient_specific_s_values"]["s_gy_per_bq_s"]
    assert f"{s[0][0]:.4g}" in sec and f"{s[1][0]:.4g}" in sec
    assert re.findall(_PNG_RE, page) and len(re.findall(_PNG_RE, page)) > len(images)


def test_mird_and_voxel_doses_side_by_side(example, example_html):
    from mrtdose.reports.html import format_sig

    sec = _voxel_section(example_html)
    table = sec[sec.index("Organ-level (MIRD) and voxel absorbed dose"):]
    table = table[:table.index("</table>")]
    for name, r in example.results["regions"].items():
        mird = r["absorbed_dose"]
        vox = example.results["voxel"]["regions"][name]["absorbed_dose_voxel"]
        row = table[table.index(f">{name}<"):]
        row = row[:row.index("</tr>")]
        assert format_quantity(mird) in row, name
        v = vox["value"]
        assert f"<td class=\"num\">{format_sig(v, 3)} Gy</td>" in row, name  # 3 significant figures
        diff = 100.0 * (v - mird["value"]) / mird["value"]
        assert f"{diff:+.1f} %".replace("+0.0", "0.0").replace("-0.0", "0.0") in row, (name, diff)
    # and each region page shows its voxel mean compactly
    assert example_html.count(">Voxel mean absorbed dose</th><td") == len(example.results["regions"])


def test_voxel_report_renders_from_results_alone(example):
    doc = json.loads(json.dumps(example.results))  # as the CLI reads results.json
    page = render_report(doc)
    sec = _voxel_section(page)
    assert "images are not part of the results document" in sec
    assert "<code>dose.nii.gz</code>" in sec and "written beside <code>results.json</code>" in sec
    assert len(re.findall(_PNG_RE, sec)) == 1  # the DVH plot only (from dvh_curve in results)
    assert render_report(doc) == page  # deterministic


def test_voxel_strings_are_escaped(example):
    doc = json.loads(json.dumps(example.results))
    vox = doc["voxel"]
    vox["kernel"]["description"] = EVIL_ID
    vox["files"]["<img src=x>.nii.gz"] = EVIL_ID
    vox["regions"][EVIL_ID] = vox["regions"].pop("spleen")
    page = render_report(doc, display=None)
    assert "<script" not in page.lower() and "<img src=x>" not in page
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in _voxel_section(page)


def test_no_voxel_section_without_voxel_results(html, results):
    assert 'id="voxel"' not in html and "#voxel" not in html
    doc = copy.deepcopy(results)
    doc["voxel"] = None
    page = render_report(doc, display={"voxel": {"slices": []}})
    assert 'id="voxel"' not in page


def test_dose_overlay_plot():
    import numpy as np

    from mrtdose.reports import plots

    dose = np.outer(np.linspace(0.1, 10.0, 12), np.ones(20))
    labels = np.zeros((12, 20), dtype=np.int32)
    labels[2:6, 3:9] = 1
    labels[7:12, 12:20] = 2  # touches the edge of the slice
    uri = plots.dose_overlay(dose, labels, ["a", "b$c"], (2.0, 4.0, 3.0), "test", vmax_gy=10.0)
    assert uri is not None and base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.dose_overlay(dose, labels[:5], ["a"], (1.0, 1.0, 1.0), "mismatch") is None
    assert plots.dvh_plot([], "nothing") is None
    assert "import pyplot" not in Path(plots.__file__).read_text() and "matplotlib.pyplot" not in Path(plots.__file__).read_text()
