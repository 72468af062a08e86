"""The command line: commands, exit codes, atomic outputs, no tracebacks for user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-m", "mrtdose.cli"]


def _run(*args, cwd=None):
    env = dict(os.environ, COLUMNS="160")
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_version():
    import mrtdose

    r = _run("--version")
    assert r.returncode == 0 and mrtdose.__version__ in r.stdout


def test_help_lists_commands():
    r = _run("--help")
    assert r.returncode == 0
    for cmd in ("run", "demo", "nuclide", "validate", "schema"):
        assert cmd in r.stdout


def test_nuclide_shows_energies_and_notice():
    r = _run("nuclide", "177Lu", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["name"] == "Lu-177"
    assert data["half_life_d"] == pytest.approx(6.647, rel=1e-3)
    assert "ICRP Publication 107" in data["notice"]
    r = _run("nuclide", "Lu-177")
    assert "ICRP Publication 107" in r.stdout and "non-penetrating" in r.stdout


def test_unknown_nuclide_exit_2_without_traceback():
    r = _run("nuclide", "Xx-999")
    assert r.returncode == 2
    assert "error" in r.stderr and "Traceback" not in r.stderr + r.stdout


def test_run_writes_results_and_report(tmp_path, minimal_case):
    case = tmp_path / "case.yaml"
    case.write_text(yaml.safe_dump(minimal_case))
    out = tmp_path / "out"
    r = _run("run", case, "--out", out)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["regions"]["kidneys"]["absorbed_dose"]["unit"] == "Gy"
    html = (out / "report.html").read_text()
    assert "kidneys" in html
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_bad_case_exit_2_and_nothing_written(tmp_path, minimal_case):
    """A user error: one clear message naming file and field, exit code 2, no traceback, and an
    existing output directory keeps its previous files untouched."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("previous")
    minimal_case["regions"]["kidneys"]["measurements"][1]["activity_mbq"] = -5
    case = tmp_path / "bad.yaml"
    case.write_text(yaml.safe_dump(minimal_case))
    r = _run("run", case, "--out", out)
    assert r.returncode == 2
    assert "bad.yaml" in r.stderr and "regions.kidneys.measurements.1" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert (out / "results.json").read_text() == "previous"
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_validate_and_schema(tmp_path, minimal_case):
    case = tmp_path / "c.json"
    case.write_text(json.dumps(minimal_case))
    r = _run("validate", case)
    assert r.returncode == 0 and "valid" in r.stdout
    r = _run("schema", "case")
    assert r.returncode == 0 and json.loads(r.stdout)["title"] == "mrtdose case file"
    r = _run("schema", "results")
    assert r.returncode == 0 and "properties" in json.loads(r.stdout)


def test_demo_runs(tmp_path):
    r = _run("demo", "--out", tmp_path / "demo")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo" / "results.json").is_file()
    assert (tmp_path / "demo" / "report.html").is_file()
    assert (tmp_path / "demo" / "dose_rtdose.dcm").is_file()  # voxel dosimetry of the bundled case
    assert (tmp_path / "demo" / "imaging" / "report.html").is_file()  # the virtual patient's DICOM case
    assert json.loads((tmp_path / "demo" / "imaging" / "results.json").read_text())["imaging"]["timepoints"]
    assert "report:" in r.stdout


def test_schema_output_is_valid_json_on_a_narrow_terminal():
    env = dict(os.environ, COLUMNS="40")
    for which in ("case", "results"):
        r = subprocess.run([*EXE, "schema", which], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0
        json.loads(r.stdout)


def test_atomic_writer_leaves_usual_permissions(tmp_path):
    from mrtdose.workflow.outputs import write_atomic

    umask = os.umask(0o022)
    try:
        paths = write_atomic(tmp_path / "o", {"a.txt": b"x"})
    finally:
        os.umask(umask)
    assert paths["a.txt"].read_bytes() == b"x"
    assert paths["a.txt"].stat().st_mode & 0o777 == 0o644
