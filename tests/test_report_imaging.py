"""The "Quantitative imaging" section of the HTML report (results["imaging"], display["imaging"]),
on the virtual patient's DICOM case (as tests/test_imaging_pipeline.py), and its schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from mrtdose.reports.html import render_report
from mrtdose.workflow.case import parse_case
from mrtdose.workflow.pipeline import run_case

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "src" / "mrtdose" / "schemas" / "results.schema.json"
_REGIONS = ("liver", "kidneys", "spleen", "lesion_1", "lesion_3")


def _case(truth):
    tps = [{"spect": tp["nm_dir"], "ct": tp["ct_dir"]} for tp in truth["time_points"]]
    return {
        "patient": {"id": truth["patient_id"]},
        "radiopharmaceutical": "Lu-177-DOTATATE",
        "administration": {"activity_mbq": truth["administration"]["activity_mbq"], "time": truth["administration"]["time"]},
        "imaging": {
            "timepoints": tps,
            "calibration": {"sensitivity_cps_per_mbq": truth["calibration"]["sensitivity_cps_per_mbq"], "uncertainty_pct": 3},
            "regions": {"rtstruct": truth["rtstruct"]["file"], "names": {n: n for n in _REGIONS}},
        },
        "regions": {"lesion_1": {"kind": "lesion"}, "lesion_3": {"kind": "lesion"}},
        "options": {"monte_carlo_samples": 0},
    }


@pytest.fixture(scope="module")
def case_result(tmp_path_factory):
    from mrtdose.workflow.virtual_patient import simulate_patient

    d = tmp_path_factory.mktemp("vp_report")
    simulate_patient(d, seed=5)
    truth = json.loads((d / "truth.json").read_text())
    return run_case(parse_case(_case(truth)), base_dir=d)


def _section(html: str) -> str:
    m = re.search(r'<section id="imaging">(.*?)</section>', html, re.S)
    assert m, "no Quantitative imaging section"
    return m.group(1)


def _pngs(html: str) -> int:
    return html.count("data:image/png;base64,")


def test_section_with_time_points_registration_and_regions(case_result):
    res = case_result.results
    im = res["imaging"]
    html = render_report(res, case_result.display)
    assert '<a href="#imaging">Quantitative imaging</a>' in html
    sec = _section(html)
    assert "<h2>Quantitative imaging</h2>" in sec
    for tp in im["timepoints"]:
        assert f"<td class=\"num\">{tp['time_h']:g}</td>" in sec
        assert tp["acquisition_time"] in sec
        assert tp["time_source"] in sec
        assert tp["series_description"] in sec
        assert tp["quantification"] in sec
    assert "Registration to the first time point" in sec
    for r in im["registration"]:
        assert f"<td>{r['method']}</td>" in sec
    for name, r in im["regions"].items():
        assert f">{name}</a>" in sec
        assert f"{r['activities_mbq'][0]:.4g}" in sec
    for t in (tp["time_h"] for tp in im["timepoints"]):
        assert f"Activity at {t:g} h (MBq)" in sec


def test_rigid_registration_quality_is_shown(case_result):
    res = json.loads(json.dumps(case_result.results, default=str))
    res["imaging"]["registration"][1] = {
        "time_point": 1, "method": "rigid CT-to-CT", "transform": {"rotation_deg": [0.5, 0, 0], "translation_mm": [1.2, 0, -3]},
        "quality": {"body_dice": 0.9734, "body_mean_surface_distance_mm": 1.234, "body_hd95_mm": 4.56},
    }
    sec = _section(render_report(res))
    for text in ("rigid CT-to-CT", "Body Dice", "Body HD95 (mm)", ">0.9734<", ">1.23<", ">4.56<", "translation_mm"):
        assert text in sec, text


def test_one_figure_per_time_point_with_display(case_result):
    res, display = case_result.results, case_result.display
    n_tp = len(res["imaging"]["timepoints"])
    assert len(display["imaging"]["slices"]) == n_tp
    with_display = render_report(res, display)
    without_imaging_display = render_report(res, {k: v for k, v in display.items() if k != "imaging"})
    assert _pngs(with_display) - _pngs(without_imaging_display) == n_tp
    assert _pngs(_section(with_display)) == n_tp
    assert "kBq/mL" in _section(with_display)


def test_renders_without_display(case_result):
    html = render_report(case_result.results)
    sec = _section(html)
    assert _pngs(sec) == 0
    assert "activity images are not part of the results document" in sec
    assert "Registration to the first time point" in sec


def test_report_without_imaging_has_no_section(case_result):
    res = dict(case_result.results)
    res["imaging"] = None
    html = render_report(res)
    assert 'id="imaging"' not in html and "#imaging" not in html


def test_results_validate_against_the_schema(case_result):
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    doc = json.loads(json.dumps(case_result.results, default=str))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in v.iter_errors(doc)]
    assert not errors, errors[:5]
    bad = json.loads(json.dumps(doc))
    del bad["imaging"]["timepoints"]
    assert not v.is_valid(bad)
    doc["imaging"] = None
    assert v.is_valid(doc)
