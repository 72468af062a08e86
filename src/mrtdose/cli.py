"""Command line interface: ``mrtdose run``, ``demo``, ``simulate``, ``nuclide``, ``validate``, ``schema``.

A thin face over the pipeline: it holds no physics. User errors (:class:`MrtdoseError`) are
printed as one clear message with exit code 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

import mrtdose
from mrtdose.errors import MrtdoseError

app = typer.Typer(
    name="mrtdose",
    help="Internal dosimetry for molecular radiotherapy: activities to absorbed doses with uncertainties.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

ICRP107_NOTICE = (
    "Nuclear decay data: ICRP Publication 107 (Eckerman & Endo 2008, Ann. ICRP 38(3)), "
    "© International Commission on Radiological Protection, via the icrp107-database package; "
    "half-lives and chains via radioactivedecay."
)


def _version(value: bool) -> None:
    if value:
        out.print(f"mrtdose {mrtdose.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """mrtdose command line."""


def _run_to(case_path: Path, out_dir: Path) -> dict[str, Path]:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from mrtdose.reports.html import render_report
    from mrtdose.workflow.outputs import to_json_bytes, write_atomic
    from mrtdose.workflow.pipeline import load_and_run

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(f"{case_path.name}: loading", total=None)
        result = load_and_run(case_path, progress=lambda msg: progress.update(task, description=f"{case_path.name}: {msg}"))
        progress.update(task, description="rendering report")
        files = {
            "results.json": to_json_bytes(result.results),
            "report.html": render_report(result.results, display=result.display).encode("utf-8"),
            **result.files,
        }
        return write_atomic(out_dir, files)


def _summary(results: dict) -> None:
    from mrtdose.quantities import format_value

    t = Table(title=f"{results['case']['patient']['id']} — {results['case'].get('radiopharmaceutical') or results['nuclide']['name']}")
    for col in ("region", "TIA (MBq h)", "absorbed dose (Gy)", "Gy/GBq", "BED (Gy)"):
        t.add_column(col, justify="right" if col != "region" else "left")

    def fv(qd: dict | None) -> str:
        return format_value(qd["value"], qd["uncertainty"]) if qd and qd.get("value") is not None else "—"

    for name, r in results["regions"].items():
        t.add_row(name, fv(r["time_integrated_activity"]), fv(r["absorbed_dose"]), fv(r["absorbed_dose_per_activity"]), fv(r.get("bed")))
    out.print(t)
    out.print("uncertainties are standard uncertainties (k=1)")
    for w in results.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")


@app.command()
def run(
    case: Path = typer.Argument(..., help="Case file (YAML or JSON)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output directory for results.json and report.html."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the summary table."),
) -> None:
    """Run a case: write OUT/results.json and OUT/report.html (atomically)."""
    paths = _run_to(case, out_dir)
    if not quiet:
        _summary(json.loads(paths["results.json"].read_text(encoding="utf-8")))
    out.print(f"results: {paths['results.json']}")
    out.print(f"report:  {paths['report.html']}")


def example_case_path() -> Path:
    """The bundled synthetic example case."""
    from importlib.resources import files

    return Path(str(files("mrtdose") / "data" / "examples" / "lu177_dotatate" / "case.yaml"))


def example_virtual_patient_case_path() -> Path:
    """The bundled virtual patient's imaging case (DICOM CT, SPECT at 4 time points, RTSTRUCT)."""
    from importlib.resources import files

    return Path(str(files("mrtdose") / "data" / "examples" / "virtual_patient_lu177" / "case.yaml"))


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("out/demo"), "--out", "-o", help="Output directory."),
    imaging: bool = typer.Option(True, "--imaging/--no-imaging", help="Also run the bundled virtual patient's DICOM case."),
) -> None:
    """Run the bundled synthetic example case end to end (organ-level and voxel dosimetry), then the
    bundled virtual patient's DICOM case (quantitative SPECT/CT at 4 time points; OUT/imaging)."""
    case = example_case_path()
    out.print(f"example case: {case}")
    paths = _run_to(case, out_dir)
    _summary(json.loads(paths["results.json"].read_text(encoding="utf-8")))
    out.print(f"results: {paths['results.json'].resolve()}")
    out.print(f"report:  {paths['report.html'].resolve()}")
    if not imaging:
        return
    vcase = example_virtual_patient_case_path()
    truth = json.loads((vcase.parent / "truth.json").read_text(encoding="utf-8"))
    out.print(f"virtual patient case: {vcase} ({truth['spect_model']['backend']} SPECT simulation; "
              f"truth: {vcase.parent / 'truth.json'})")
    paths = _run_to(vcase, out_dir / "imaging")
    _summary(json.loads(paths["results.json"].read_text(encoding="utf-8")))
    out.print(f"results: {paths['results.json'].resolve()}")
    out.print(f"report:  {paths['report.html'].resolve()}")


@app.command()
def simulate(
    out_dir: Path = typer.Argument(..., help="Output directory for the virtual patient (DICOM series, RTSTRUCT, truth.json)."),
    radiopharmaceutical: str = typer.Option("Lu-177-DOTATATE", "--radiopharmaceutical", "-r",
                                            help="Lu-177-DOTATATE or Lu-177-PSMA-617."),
    seed: int = typer.Option(1, "--seed", help="Random seed (noise)."),
    backend: str = typer.Option("light", "--backend",
                                help="SPECT simulation: 'light' (image-domain blur + noise, always available) or "
                                     "'pytomography' (projections + OSEM; pip install 'mrtdose\\[spect]')."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="OSEM iterations (pytomography; default 4)."),
    subsets: Optional[int] = typer.Option(None, "--subsets", help="OSEM subsets (pytomography; default 8)."),
) -> None:
    """Make a virtual patient with known truth: CT and SPECT series at 4, 24, 96 and 168 h."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from mrtdose.errors import InputError
    from mrtdose.workflow.virtual_patient import simulate_patient

    opts = {k: v for k, v in (("iterations", iterations), ("subsets", subsets)) if v is not None}
    if opts and backend != "pytomography":
        raise InputError("--iterations/--subsets apply to --backend pytomography only", field="backend")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as p:
        p.add_task(f"simulating {radiopharmaceutical} virtual patient ({backend} SPECT)", total=None)
        res = simulate_patient(out_dir, radiopharmaceutical=radiopharmaceutical, seed=seed, backend=backend,
                               backend_options=opts or None)
    out.print(f"virtual patient: {Path(res['out_dir']).resolve()}")
    out.print(f"truth:           {Path(res['truth_json']).resolve()}")


@app.command()
def validate(case: Path = typer.Argument(..., help="Case file (YAML or JSON).")) -> None:
    """Check a case file against the schema without running it."""
    from mrtdose.workflow.case import load_case

    c, _ = load_case(case)
    out.print(f"{case}: valid ({len(c.regions)} regions)")


@app.command()
def nuclide(
    name: str = typer.Argument(..., help="Radionuclide (Lu-177, 177Lu) or radiopharmaceutical (Lu-177-PSMA-617)."),
    progeny: bool = typer.Option(False, "--progeny", help="Include short-lived progeny in equilibrium."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Half-life and mean energy per decay by radiation type (ICRP-107)."""
    from mrtdose.physics.nuclides import get_nuclide, resolve_radiopharmaceutical, with_progeny

    n = get_nuclide(resolve_radiopharmaceutical(name))
    if progeny:
        n = with_progeny(n)
    data = {
        "name": n.name,
        "half_life_h": n.half_life_h,
        "half_life_d": n.half_life_h / 24.0,
        "decay_constant_per_h": n.decay_constant_per_h,
        "energy_per_decay_mev": {k: v for k, v in n.energy_per_decay_mev.items() if v > 0},
        "electrons_mev": n.electron_mev,
        "alphas_mev": n.alpha_mev,
        "nonpenetrating_mev": n.nonpenetrating_mev,
        "photons_mev": n.photon_mev,
        "progeny": [list(p) for p in n.progeny],
        "notice": ICRP107_NOTICE,
    }
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    t = Table(title=f"{n.name}: T1/2 = {n.half_life_h:.4g} h ({n.half_life_h / 24:.4g} d)")
    t.add_column("radiation")
    t.add_column("mean energy per decay (MeV)", justify="right")
    for k, v in data["energy_per_decay_mev"].items():
        t.add_row(k, f"{v:.5g}")
    t.add_row("[b]non-penetrating (electrons + alphas)[/b]", f"{n.nonpenetrating_mev:.5g}")
    t.add_row("[b]photons[/b]", f"{n.photon_mev:.5g}")
    out.print(t)
    if n.progeny:
        out.print("progeny: " + ", ".join(f"{d} ({b:.4g})" for d, b in n.progeny))
    out.print(ICRP107_NOTICE)


@app.command()
def schema(which: str = typer.Argument(..., help="'case' or 'results'.")) -> None:
    """Print the JSON Schema of the case file or of results.json."""
    if which == "case":
        from mrtdose.workflow.case import case_json_schema

        sys.stdout.write(json.dumps(case_json_schema(), indent=2) + "\n")
    elif which == "results":
        from importlib.resources import files

        sys.stdout.write(Path(str(files("mrtdose") / "schemas" / "results.schema.json")).read_text(encoding="utf-8"))
    else:
        raise typer.BadParameter("choose 'case' or 'results'")


def main() -> None:
    """Entry point: user errors become one message and exit code 2."""
    try:
        app()
    except MrtdoseError as exc:
        console.print(f"[bold red]error:[/bold red] {_escape(str(exc))}", highlight=False)
        sys.exit(2)


def _escape(s: str) -> str:
    from rich.markup import escape

    return escape(s)


if __name__ == "__main__":
    main()
