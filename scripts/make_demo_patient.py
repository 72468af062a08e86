"""Regenerate the bundled demo virtual patient: src/mrtdose/data/examples/virtual_patient_lu177/.

One Lu-177 DOTATATE virtual patient (mrtdose.workflow.virtual_patient, seed 5), 4 SPECT time
points (4, 24, 96, 168 h) simulated with the PyTomography backend (attenuation, depth-dependent
Gaussian collimator response of the Siemens SY-ME collimator, Poisson noise in 60 projections,
simulated on a 2x finer grid, OSEM 4 iterations x 8 subsets), a SPECT/CT session at every time
point (each with its own frame of reference, as on a real scanner), an RTSTRUCT on the first CT,
truth.json and case.yaml (the case that ``mrtdose demo`` runs, with ``registration: rigid``: each
CT registered to the first, the transform carried to its SPECT). About 9.3 MB and 455 files.

Deterministic: the Poisson noise is seeded (numpy), the study/series/frame-of-reference UIDs are
derived from the patient id and seed (``virtual_patient._uid``), and the SOP instance UIDs (and the
RTSTRUCT series UID), which the DICOM writers draw at random, are replaced here by UIDs derived
from the file's path in the bundle. Pixel values depend on torch's float32 arithmetic and can
differ in the last bits between machines; the truth does not.

Usage (needs the optional extra; takes about 5 min on 2 CPU cores)::

    python3 -m venv /tmp/spectvenv
    /tmp/spectvenv/bin/pip install torch==2.13.0 pytomography==3.4.0
    /tmp/spectvenv/bin/pip install -e '.[dev]'
    /tmp/spectvenv/bin/python scripts/make_demo_patient.py            # rewrites the bundled directory
    /tmp/spectvenv/bin/python scripts/make_demo_patient.py OUT_DIR    # or writes elsewhere
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from mrtdose.workflow.virtual_patient import _uid, _write_json_atomic, imaging_case, simulate_patient

TARGET = Path(__file__).resolve().parents[1] / "src" / "mrtdose" / "data" / "examples" / "virtual_patient_lu177"
COMMAND = "/tmp/spectvenv/bin/python scripts/make_demo_patient.py   (venv with mrtdose[spect])"
SEED = 5
PATIENT_ID = "VP-DEMO-LU177"
RADIOPHARMACEUTICAL = "Lu-177-DOTATATE"
#: The notes' CI setting (pytomography_spect_simulation.md, section 6), with the 2x finer simulation grid.
BACKEND_OPTIONS = {"n_views": 60, "radius_cm": 25.0, "collimator_code": "SY-ME", "iterations": 4, "subsets": 8,
                   "supersample": 2}
REGIONS = ("liver", "kidneys", "spleen", "lesion_1", "lesion_3")


def _deterministic_instance_uids(root: Path) -> int:
    """Replace every SOP instance UID (and the RTSTRUCT's series UID) by one derived from the file's
    relative path, and every reference to it; returns the number of files rewritten."""
    import pydicom
    from pydicom.dataset import Dataset

    files = sorted(p for p in root.rglob("*.dcm"))
    remap: dict[str, str] = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        rel = f.relative_to(root).as_posix()
        remap[str(ds.SOPInstanceUID)] = _uid(PATIENT_ID, SEED, rel, "SOPInstance")
        if ds.Modality == "RTSTRUCT":
            remap[str(ds.SeriesInstanceUID)] = _uid(PATIENT_ID, SEED, rel, "RTSTRUCT series")

    def walk(ds: Dataset) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.VR == "UI" and elem.value:
                if isinstance(elem.value, str):  # pydicom's UID is a str
                    elem.value = remap.get(str(elem.value), str(elem.value))
                else:  # multi-valued
                    elem.value = [remap.get(str(v), str(v)) for v in elem.value]

    for f in files:
        ds = pydicom.dcmread(f)
        walk(ds)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        tmp = f.with_name("." + f.name + ".tmp")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, f)
    return len(files)


def main(argv: list[str]) -> int:
    target = Path(argv[0]).resolve() if argv else TARGET
    work = target.with_name("." + target.name + ".tmp")
    if work.exists():
        shutil.rmtree(work)
    t0 = time.perf_counter()
    res = simulate_patient(work, radiopharmaceutical=RADIOPHARMACEUTICAL, seed=SEED, patient_id=PATIENT_ID,
                           backend="pytomography", backend_options=BACKEND_OPTIONS, ct_time_points="all")
    n = _deterministic_instance_uids(work)
    truth = res["truth"]
    truth["bundle"] = {"script": "scripts/make_demo_patient.py", "command": COMMAND,
                       "instance_uids": "SOP instance UIDs derived from each file's path (deterministic)"}
    _write_json_atomic(work / "truth.json", truth)
    case = imaging_case(truth, REGIONS, registration="rigid")
    case["notes"] = ("Bundled demo virtual patient (Lu-177 DOTATATE, SPECT simulated with PyTomography: attenuation, "
                     "collimator response, Poisson noise, OSEM 4i8s); a SPECT/CT at every time point, CTs registered rigidly to "
                     "the first. Synthetic, not patient data. Truth: truth.json. "
                     "Regenerate: scripts/make_demo_patient.py.")
    head = "# Demo case of the bundled virtual patient; generated by scripts/make_demo_patient.py (do not edit).\n"
    (work / "case.yaml").write_text(head + yaml.safe_dump(case, sort_keys=False), encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    os.replace(work, target)
    files = [p for p in target.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"{target}: {len(files)} files ({n} DICOM), {size / 1e6:.2f} MB in {time.perf_counter() - t0:.0f} s")
    print(json.dumps({k: truth["spect_model"]["parameters"][k] for k in ("device", "supersample", "reconstruction")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
