"""Case file validation: clear errors naming the file and field, unit mistakes caught."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from mrtdose.errors import InputError
from mrtdose.workflow.case import case_json_schema, load_case, parse_case

REPO = Path(__file__).resolve().parents[1]


def _err(doc: dict) -> str:
    with pytest.raises(InputError) as ei:
        parse_case(doc, source="case.yaml")
    return str(ei.value)


def test_minimal_case_parses(minimal_case):
    c = parse_case(minimal_case)
    assert c.regions["kidneys"].mass_g == 310
    assert c.options.kinetics == "auto"


def test_issue_example_shape_parses():
    """The minimum shape written in the issue (YAML) is accepted as is."""
    text = """
patient: {id: P001, sex: male}
radiopharmaceutical: Lu-177-DOTATATE
administration: {activity_mbq: 7400, time: "2026-01-05T10:00:00+00:00"}
regions:
  kidneys:
    mass_g: 310
    kinetics: auto
    measurements:
      - {time_h: 4.0, activity_mbq: 98.6, uncertainty_pct: 5}
      - {time_h: 24.0, activity_mbq: 73.6}
  tumour_1: {volume_ml: 12.0, density_g_per_ml: 1.03, kind: lesion, measurements: [{time_h: 24, activity_mbq: 20}]}
  spleen: {mass_g: 150, tia_mbq_h: 9600, tia_uncertainty_pct: 10}
options: {kinetics: auto, s_values: self_sphere, uncertainty: true}
"""
    c = parse_case(yaml.safe_load(text))
    assert c.regions["tumour_1"].kind == "lesion"
    assert c.regions["spleen"].tia_mbq_h == 9600


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda d: d["regions"]["kidneys"].update(foo=1), "regions.kidneys.foo: unknown field"),
        (lambda d: d.pop("nuclide"), "give radiopharmaceutical"),
        (lambda d: d["administration"].update(activity_mbq=7.4e9), "kBq or Bq"),
        (lambda d: d["administration"].update(activity_mbq=7.4), None),  # 7.4 MBq is plausible (>1)
        (lambda d: d["administration"].update(activity_mbq=0.0074), "GBq"),
        (lambda d: d["administration"].update(time="2026-01-05T10:00:00"), "no time zone"),
        (lambda d: d["regions"]["kidneys"]["measurements"][0].update(activity_mbq=-3), "must be > 0"),
        (lambda d: d["regions"]["kidneys"]["measurements"][0].update(activity_mbq=0), "must be > 0"),
        (lambda d: d["regions"]["kidneys"]["measurements"][0].update(time_h=-1), "after the administration"),
        (lambda d: d["regions"]["kidneys"]["measurements"][0].pop("time_h"), "exactly one of time_h or time"),
        (lambda d: d["regions"]["kidneys"].pop("mass_g"), "give mass_g or volume_ml"),
        (lambda d: d["regions"]["kidneys"].update(mass_g=3.1e8), "larger than a whole body"),
        (lambda d: d["regions"]["kidneys"].update(tia_mbq_h=100), "exactly one"),
        (lambda d: d["regions"]["kidneys"].update(volume_ml=100, density_g_per_ml=1.0), "contradicts"),
        (lambda d: d["options"].update(s_values="table"), "s_value_table"),
        (lambda d: d.update(regions={}), "regions"),
    ],
)
def test_bad_input_names_field(minimal_case, mutate, expect):
    doc = copy.deepcopy(minimal_case)
    mutate(doc)
    if expect is None:
        parse_case(doc)
        return
    msg = _err(doc)
    assert msg.startswith("case.yaml: invalid case file")
    assert expect in msg


def test_clock_times_need_administration_time(minimal_case):
    doc = copy.deepcopy(minimal_case)
    doc["administration"].pop("time")
    doc["regions"]["kidneys"]["measurements"][0] = {"time": "2026-01-05T14:00:00+00:00", "activity_mbq": 98.6}
    assert "administration.time is missing" in _err(doc)


def test_load_case_yaml_and_json(tmp_path, minimal_case):
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump(minimal_case))
    j = tmp_path / "c.json"
    j.write_text(json.dumps(minimal_case))
    assert load_case(y)[0] == load_case(j)[0]


def test_load_case_errors_name_file(tmp_path):
    with pytest.raises(InputError, match="case file not found"):
        load_case(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("patient: [unclosed")
    with pytest.raises(InputError, match="bad.yaml: cannot parse"):
        load_case(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="mapping"):
        load_case(lst)


def test_published_case_schema_is_current():
    """schemas/case.schema.json must be what the models generate (regenerate with
    `mrtdose schema case > schemas/case.schema.json`)."""
    published = json.loads((REPO / "schemas" / "case.schema.json").read_text())
    assert published == json.loads(json.dumps(case_json_schema()))


def test_schema_validates_example_case(minimal_case):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(minimal_case, case_json_schema())
    bad = copy.deepcopy(minimal_case)
    bad["regions"]["kidneys"]["mass_g"] = "heavy"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, case_json_schema())
