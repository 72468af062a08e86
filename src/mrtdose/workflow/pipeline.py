"""The pipeline: one case in, one result out.

measurements -> kinetics (fit or single time point) -> TIA -> S-values -> absorbed dose -> BED,
with every input's uncertainty propagated jointly (law of propagation, with a Monte Carlo check;
:mod:`mrtdose.uncertainty`) and every method choice recorded. A result is computed here once;
the report, the CLI and later faces only show it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mrtdose.dose.mird import BQ_S_PER_MBQ_H
from mrtdose.dose.svalues import (
    PatientSpecificSource,
    RegionGeometry,
    SelfSphereSource,
    SphereModelSource,
    SValueSource,
    SValueTerm,
    TableSource,
)
from mrtdose.errors import FitError, InputError, MrtdoseError
from mrtdose.kinetics import fitting, stp
from mrtdose.physics import radiobiology as rb
from mrtdose.physics.decay import elapsed_hours
from mrtdose.physics.nuclides import Nuclide, get_nuclide, resolve_radiopharmaceutical, with_progeny
from mrtdose.quantities import Quantity
from mrtdose.uncertainty import UncertainInput, monte_carlo, propagate
from mrtdose.workflow.case import Case, Region
from mrtdose.workflow.provenance import provenance

RESULTS_SCHEMA_VERSION = "1.0"

Progress = Callable[[str], None]


@dataclass
class _RegionWork:
    """Everything the model function needs about one region (internal, mutable while built)."""

    name: str
    spec: Region
    kind: str
    mass_g: float
    mass_u_g: float
    density: float
    tissue: rb.TissueParameters | None = None
    measured: bool = False
    times_h: np.ndarray | None = None
    activities_mbq: np.ndarray | None = None
    sigmas_mbq: np.ndarray | None = None
    fit: Any = None  # fitting.FitResult
    stp: Any = None  # stp.STPResult
    tia_nominal: float = 0.0
    rc: float = 1.0
    rc_u: float = 0.0
    scale_u_rel: float = 0.0  # common (correlated) relative uncertainty of the region's activities
    teff_h: float | None = None  # mono-exponential shape for BED when no fit
    kinetics_json: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    s_terms: list[SValueTerm] = field(default_factory=list)


@dataclass(frozen=True)
class CaseResult:
    """The JSON-able results document (see ``schemas/results.schema.json``), the extra output
    files (name -> bytes: dose maps, DVH CSV) and display data for the report (image slices)."""

    results: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    display: dict[str, Any] = field(default_factory=dict)


def _nuclide_for(case: Case) -> tuple[Nuclide, str]:
    if case.nuclide:
        nuclide = get_nuclide(case.nuclide)
        if case.radiopharmaceutical:
            rp_nuc = resolve_radiopharmaceutical(case.radiopharmaceutical)
            if rp_nuc != nuclide.name:
                raise InputError(
                    f"nuclide {nuclide.name} contradicts radiopharmaceutical {case.radiopharmaceutical} ({rp_nuc})",
                    field="nuclide",
                )
    else:
        nuclide = get_nuclide(resolve_radiopharmaceutical(case.radiopharmaceutical or ""))
    label = case.radiopharmaceutical or nuclide.name
    if case.options.include_progeny:
        nuclide = with_progeny(nuclide)
    return nuclide, label


def _geometry(name: str, r: Region, case: Case) -> tuple[float, float, float]:
    """Mass (g), its standard uncertainty (g) and density (g/mL)."""
    default = case.options.lesion_density_g_per_ml if r.kind == "lesion" else case.options.organ_density_g_per_ml
    density = r.density_g_per_ml or default
    if r.mass_g is not None:
        mass = r.mass_g
        pct = r.mass_uncertainty_pct if r.mass_uncertainty_pct is not None else (r.volume_uncertainty_pct or 0.0)
        if r.volume_ml is not None and r.density_g_per_ml is None:
            density = r.mass_g / r.volume_ml
    else:
        mass = float(r.volume_ml) * density  # type: ignore[arg-type]
        pct = r.volume_uncertainty_pct if r.volume_uncertainty_pct is not None else (r.mass_uncertainty_pct or 0.0)
    return float(mass), float(mass * pct / 100.0), float(density)


def _planar_activity(p: Any, nuclide: Nuclide, where: str) -> tuple[float, float]:
    """Conjugate-view activity (MIRD 16) referred to the acquisition start, and its standard
    uncertainty without the calibration component (the calibration enters the chain once, as the
    correlated calibration factor)."""
    from mrtdose.imaging import planar

    if p.transmission is not None:
        trans: Any = p.transmission
    else:
        energies, yields = nuclide.photon_lines(min_energy_mev=0.05)
        if not energies.size:
            raise InputError("the nuclide has no photon line above 50 keV for planar imaging", field=where)
        mu = p.mu_per_cm or planar.narrow_beam_mu_per_cm(1000.0 * float(energies[np.argmax(yields)]))
        trans = planar.transmission_from_thickness(p.body_thickness_cm, mu,
                                                   thickness_uncertainty_cm=p.body_thickness_uncertainty_cm)
    q = planar.conjugate_view_activity(
        p.anterior_counts, p.posterior_counts, acquisition_duration_s=p.acquisition_duration_s,
        sensitivity_cps_per_mbq=p.sensitivity_cps_per_mbq, transmission=trans,
        sensitivity_uncertainty_cps_per_mbq=p.sensitivity_cps_per_mbq * p.sensitivity_uncertainty_pct / 100.0,
        half_life_h=nuclide.half_life_h,
    )
    u = math.sqrt(sum(v * v for k, v in q.components.items() if k != "calibration"))
    return float(q.value), float(u)


def _measurements(name: str, r: Region, case: Case, nuclide: Nuclide, warnings: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times, acts, sigmas = [], [], []
    defaulted = False
    for i, m in enumerate(r.measurements or []):
        where = f"regions.{name}.measurements.{i}"
        if m.time is not None:
            t = elapsed_hours(case.administration.time, m.time, what=f"{where}.time")  # type: ignore[arg-type]
            if t <= 0:
                raise InputError(
                    f"measurement time {m.time.isoformat()} is not after the administration "
                    f"({case.administration.time.isoformat()})",  # type: ignore[union-attr]
                    field=f"{where}.time",
                )
        else:
            t = float(m.time_h)  # type: ignore[arg-type]
        if m.planar is not None:
            activity, s_planar = _planar_activity(m.planar, nuclide, f"{where}.planar")
            m = m.model_copy(update={"activity_mbq": activity, "uncertainty_mbq": s_planar})
        if m.activity_mbq > 1.05 * case.administration.activity_mbq:
            raise InputError(
                f"{m.activity_mbq:g} MBq in the region exceeds the administered activity "
                f"({case.administration.activity_mbq:g} MBq): is it in kBq? Give MBq",
                field=f"{where}.activity_mbq",
            )
        if m.uncertainty_mbq is not None:
            s = m.uncertainty_mbq
        elif m.uncertainty_pct is not None:
            s = m.activity_mbq * m.uncertainty_pct / 100.0
        else:
            s = m.activity_mbq * case.options.default_measurement_uncertainty_pct / 100.0
            defaulted = True
        if not s > 0:
            s = m.activity_mbq * 1e-6  # an exact measurement still needs a finite weight
        times.append(t)
        acts.append(m.activity_mbq)
        sigmas.append(s)
    t = np.array(times)
    if len(np.unique(t)) != len(t):
        raise InputError("two measurements at the same time", field=f"regions.{name}.measurements")
    order = np.argsort(t)
    if defaulted:
        warnings.append(
            f"{name}: measurement uncertainty not given; default "
            f"{case.options.default_measurement_uncertainty_pct:g} % used (options.default_measurement_uncertainty_pct)"
        )
    return t[order], np.array(acts)[order], np.array(sigmas)[order]


def _kinetics(w: _RegionWork, case: Case, nuclide: Nuclide, rp_label: str) -> None:
    """Fit or single-time-point method for a measured region."""
    r = w.spec
    lam = nuclide.decay_constant_per_h
    t, a, s = w.times_h, w.activities_mbq / w.rc, w.sigmas_mbq / w.rc  # type: ignore[operator]
    assert t is not None
    if len(t) == 1:
        sp = r.single_point
        method = sp.method if sp else "hanscheid"
        if method == "hanscheid":
            res = stp.hanscheid(float(t[0]), float(a[0]), float(s[0]))
            w.teff_h = float(t[0])  # Hänscheid's formula is exact for T_eff = t (see stp.hanscheid)
        else:
            teff = sp.effective_half_life_h if sp else None
            tsd = sp.effective_half_life_sd_h if sp else None
            source = "case file"
            if teff is None:
                from mrtdose.kinetics.population import get_population_kinetics

                pk = get_population_kinetics(rp_label, w.name)
                teff = pk.effective_half_life_h
                tsd = pk.effective_half_life_sd_h if tsd is None else tsd
                source = f"population data: {pk.reference}"
            if method == "madsen":
                res = stp.madsen(float(t[0]), float(a[0]), float(s[0]), teff, tsd or 0.0)
            else:
                if not tsd:
                    raise InputError(
                        "the prior method needs effective_half_life_sd_h (the population spread)",
                        field=f"regions.{w.name}.single_point",
                    )
                res = stp.population_prior(float(t[0]), float(a[0]), float(s[0]), teff, tsd)
            w.teff_h = float(teff)
            w.warnings.append(f"{w.name}: effective half-life {teff:g} h from {source}")
        w.stp = res
        w.tia_nominal = float(res.tia_mbq_h)
        w.warnings.extend(f"{w.name}: {m}" for m in res.warnings)
        w.kinetics_json = {**res.to_json(), "method": "single_time_point", "stp_method": res.method}
        return
    model = r.kinetics or case.options.kinetics
    try:
        if model == "auto":
            fit = fitting.fit_auto(t, a, s, decay_constant_per_h=lam, allow_below_physical=case.options.allow_below_physical)
        else:
            fit = fitting.fit_model(model, t, a, s, decay_constant_per_h=lam, allow_below_physical=case.options.allow_below_physical)
    except FitError as exc:
        raise FitError(f"regions.{w.name}: {exc}") from None
    except InputError as exc:
        raise InputError(exc.detail, field=f"regions.{w.name}.kinetics") from None
    if not fit.tia_mbq_h > 0:
        raise FitError(f"regions.{w.name}: the {fit.model} fit gives a non-positive TIA; choose another model")
    w.fit = fit
    w.tia_nominal = float(fit.tia_mbq_h)
    w.warnings.extend(f"{w.name}: {m}" for m in fit.warnings)
    w.kinetics_json = {"method": "fit", **fit.to_json(), "curve": _curve(fit, nuclide)}


def _curve(fit: Any, nuclide: Nuclide) -> dict[str, list[float]]:
    """Fitted curve sampled for plots (0 to 1.5x the last time, at least 2 physical half-lives)."""
    t_end = max(1.5 * float(fit.times_h[-1]), 2 * nuclide.half_life_h)
    t = np.linspace(0.0, t_end, 241)
    return {"time_h": t.round(4).tolist(), "activity_mbq": np.asarray(fit.activity(t), float).tolist()}


def _g_factor(w: _RegionWork, params: np.ndarray | None) -> float | None:
    """Lea–Catcheside G for the region's own activity time course (dose rate taken proportional to
    it, i.e. self-dose dominated)."""
    tissue = w.tissue
    if tissue is None:
        return None
    if w.fit is not None:
        model = w.fit.model_object
        p = w.fit.params if params is None else params
        terms = model.exponential_terms(p)
        if terms is not None:
            c, rates = terms
            return rb.g_factor_exponentials(c, rates, tissue.repair_half_time_h)
        t_max = max(20 * float(w.fit.times_h[-1]), 1.0)
        return rb.g_factor_numeric(lambda t: model.activity(t, p), tissue.repair_half_time_h, t_max)
    if w.teff_h:
        lam = math.log(2) / w.teff_h
        return rb.g_factor_exponentials(np.array([1.0]), np.array([lam]), tissue.repair_half_time_h)
    return None


def _s_source(case: Case, base_dir: Path | None, voxel_step: Any = None) -> SValueSource:
    o = case.options
    if o.s_values == "patient_specific":
        from mrtdose.workflow.voxel import PATIENT_S_MODEL_UNCERTAINTY_REL

        assert voxel_step is not None and voxel_step.s_matrix is not None
        return PatientSpecificSource(voxel_step.region_names, voxel_step.s_matrix, voxel_step.s_masses_g,
                                     PATIENT_S_MODEL_UNCERTAINTY_REL, voxel_step.kernel_json.get("description", ""))
    if o.s_values == "table":
        assert o.s_value_table is not None
        p = Path(o.s_value_table.path)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return TableSource(p, o.s_value_table.phantom, o.s_value_table.names, o.s_value_table.default_uncertainty_pct)
    return SelfSphereSource()


def run_case(
    case: Case,
    *,
    source_name: str | None = None,
    source_bytes: bytes | None = None,
    base_dir: Path | None = None,
    progress: Progress | None = None,
) -> CaseResult:
    """Run a validated case; returns the results document. Raises :class:`MrtdoseError` subclasses
    with messages naming the field for any user error."""
    say = progress or (lambda msg: None)
    warnings: list[str] = []
    nuclide, rp_label = _nuclide_for(case)
    imaging_json = None
    imaging_display: dict[str, Any] = {}
    if case.imaging is not None:
        from mrtdose.workflow import imaging as imaging_wf

        im = imaging_wf.quantify(case, nuclide, base_dir, say)
        new_opts = case.options
        if case.options.calibration_uncertainty_pct is None and im.calibration_uncertainty_pct is not None:
            new_opts = case.options.model_copy(update={"calibration_uncertainty_pct": im.calibration_uncertainty_pct})
        case = case.model_copy(update={"regions": im.regions, "options": new_opts})
        imaging_json, imaging_display = im.json, im.display
        warnings.extend(im.warnings)
    planar_json = None
    if case.planar_imaging is not None:  # planar / whole-body conjugate views -> region measurements
        from mrtdose.workflow import planar_imaging as planar_wf

        case, planar_json, planar_warnings = planar_wf.apply(case, nuclide, base_dir, say)
        warnings.extend(planar_warnings)
    opts = case.options

    # --- regions: geometry, measurements, kinetics -------------------------------------------
    works: list[_RegionWork] = []
    for name, r in case.regions.items():
        say(f"kinetics: {name}")
        mass, mass_u, density = _geometry(name, r, case)
        w = _RegionWork(name, r, r.kind, mass, mass_u, density)
        if r.tissue:
            w.tissue = rb.get_tissue(r.tissue)
        else:
            w.tissue = rb.tissue_for_region(name, r.kind, radiopharmaceutical=rp_label)
        if r.recovery_coefficient is not None:
            w.rc = float(r.recovery_coefficient)
            w.rc_u = float(r.recovery_uncertainty or 0.0)
        if r.activity_scale_uncertainty_pct:
            w.scale_u_rel = float(r.activity_scale_uncertainty_pct) / 100.0
        if r.measurements:
            w.measured = True
            w.times_h, w.activities_mbq, w.sigmas_mbq = _measurements(name, r, case, nuclide, warnings)
            _kinetics(w, case, nuclide, rp_label)
        else:
            w.tia_nominal = float(r.tia_mbq_h)  # type: ignore[arg-type]
            w.teff_h = r.effective_half_life_h
            w.kinetics_json = {"method": "given", "tia_mbq_h": w.tia_nominal,
                               "effective_half_life_h": r.effective_half_life_h}
            if r.tia_uncertainty_pct is None:
                warnings.append(f"{name}: tia_uncertainty_pct not given; the given TIA is treated as exact")
        if mass_u == 0:
            warnings.append(f"{name}: no mass/volume uncertainty given; mass treated as exact")
        works.append(w)

    if any(w.measured for w in works) and opts.calibration_uncertainty_pct is None:
        warnings.append(
            "options.calibration_uncertainty_pct not given: calibration uncertainty not included "
            "(EANM recommends including it; typically 2-5 %)"
        )

    # --- voxel dosimetry (phase 1: maps, kernel, dose map, patient-specific S) ------------------
    voxel_step = None
    if case.voxel is not None:
        from mrtdose.workflow import voxel as voxel_wf

        voxel_step = voxel_wf.prepare(case, nuclide, base_dir, say)

    # --- S-values -----------------------------------------------------------------------------
    say("S-values")
    organ_source = _s_source(case, base_dir, voxel_step)
    lesion_source = SphereModelSource()
    geoms = {
        w.name: RegionGeometry(w.name, w.kind, w.mass_g, w.density, "soft_tissue",
                               tuple(w.spec.semi_axes_ratio) if w.spec.semi_axes_ratio else None)
        for w in works
    }
    organs = [geoms[w.name] for w in works if w.kind != "lesion"]
    lesions = [geoms[w.name] for w in works if w.kind == "lesion"]
    terms: list[SValueTerm] = []
    s_method_by_region: dict[str, str] = {}
    if organs:
        terms.extend(organ_source.terms(nuclide, organs))
        if isinstance(organ_source, (TableSource, PatientSpecificSource)):
            covered = {t.target for t in terms if t.target == t.source}
            missing = [g for g in organs if g.name not in covered]
            if missing:
                warnings.append(
                    f"regions not covered by the {organ_source.name} S-values use self_sphere self-dose: "
                    + ", ".join(g.name for g in missing)
                )
                terms.extend(SelfSphereSource().terms(nuclide, missing))
    if lesions:
        terms.extend(lesion_source.terms(nuclide, lesions))
    index = {w.name: i for i, w in enumerate(works)}
    for t in terms:
        works[index[t.target]].s_terms.append(t)
        if t.target == t.source:
            s_method_by_region[t.target] = t.method
    cross_included = any(t.target != t.source for t in terms)

    # --- the model function and its inputs ---------------------------------------------------------
    inputs: list[UncertainInput] = []
    cal_pct = opts.calibration_uncertainty_pct or 0.0
    if any(w.measured for w in works):
        inputs.append(UncertainInput.scalar("calibration", 1.0, cal_pct / 100.0, "calibration",
                                            "activity calibration factor (common to all measurements)"))
    for w in works:
        n = w.name
        if w.fit is not None:
            inputs.append(UncertainInput(f"{n}/fit", w.fit.params, w.fit.covariance, "activity measurements and fit",
                                         f"{n}: fitted {w.fit.model} parameters"))
        elif w.stp is not None:
            comps = dict(w.stp.components)
            tia = w.stp.tia_mbq_h
            inputs.append(UncertainInput.scalar(f"{n}/stp_activity", 1.0, comps.get("activity", 0.0) / tia,
                                                "activity measurements and fit", f"{n}: measured activity"))
            other = math.sqrt(sum(v * v for k, v in comps.items() if k != "activity"))
            inputs.append(UncertainInput.scalar(f"{n}/stp_model", 1.0, other / tia, "single-time-point model",
                                                f"{n}: population kinetics / approximation"))
        else:
            inputs.append(UncertainInput.scalar(f"{n}/tia", 1.0, (w.spec.tia_uncertainty_pct or 0.0) / 100.0,
                                                "given TIA", f"{n}: TIA given in the case"))
        if w.rc_u > 0:
            inputs.append(UncertainInput.scalar(f"{n}/recovery", 1.0, w.rc_u / w.rc, "recovery coefficient",
                                                f"{n}: recovery coefficient {w.rc:g}"))
        if w.scale_u_rel > 0:
            inputs.append(UncertainInput.scalar(f"{n}/scale", 1.0, w.scale_u_rel, "activity scale",
                                                f"{n}: common scale of the activities (e.g. hybrid planar/SPECT)"))
        inputs.append(UncertainInput.scalar(f"{n}/mass", w.mass_g, w.mass_u_g, "mass / volume", f"{n}: mass (g)"))
    model_components: dict[str, float] = {}
    for t in terms:
        model_components.setdefault(t.model_component, t.model_uncertainty_rel)
    for comp, u in model_components.items():
        inputs.append(UncertainInput.scalar(f"s_model/{comp}", 1.0, u, "S-value model", comp))
    admin_gbq = case.administration.activity_mbq / 1000.0
    inputs.append(UncertainInput.scalar("administered", 1.0, case.administration.activity_uncertainty_pct / 100.0,
                                        "administered activity", "administered activity (dose calibrator)"))

    out_names: list[str] = []
    for w in works:
        out_names += [f"{w.name}/tia", f"{w.name}/tiac", f"{w.name}/dose", f"{w.name}/dose_per_gbq"]
        if w.tissue is not None:
            out_names += [f"{w.name}/bed", f"{w.name}/eqd2"]

    def model_fn(x: dict[str, np.ndarray]) -> np.ndarray:
        tias = np.empty(len(works))
        for i, w in enumerate(works):
            n = w.name
            if w.fit is not None:
                base = float(w.fit.tia(x[f"{n}/fit"])) * x["calibration"][0]
            elif w.stp is not None:
                base = w.tia_nominal * x[f"{n}/stp_activity"][0] * x[f"{n}/stp_model"][0] * x["calibration"][0]
            else:
                base = w.tia_nominal * x[f"{n}/tia"][0]
            if w.rc_u > 0:
                base /= x[f"{n}/recovery"][0]
            if w.scale_u_rel > 0:
                base *= x[f"{n}/scale"][0]
            tias[i] = base
        out = []
        for i, w in enumerate(works):
            dose = 0.0
            for t in w.s_terms:
                m = x[f"{t.target}/mass"]
                s = float(np.asarray(t.evaluate(m))[0]) * x[f"s_model/{t.model_component}"][0]
                dose += tias[index[t.source]] * BQ_S_PER_MBQ_H * s
            admin = x["administered"][0]
            out += [tias[i], tias[i] / (1000.0 * admin_gbq * admin), dose, dose / (admin_gbq * admin)]
            if w.tissue is not None:
                g = _g_factor(w, x[f"{w.name}/fit"] if w.fit is not None else None)
                if g is None:
                    out += [math.nan, math.nan]
                else:
                    bed = rb.bed(dose, g, w.tissue.alpha_beta_gy)
                    out += [bed, rb.eqd2(bed, w.tissue.alpha_beta_gy)]
        return np.array(out, dtype=float)

    say("uncertainty propagation")
    prop = propagate(model_fn, inputs, out_names)
    mc = None
    if opts.uncertainty and opts.monte_carlo_samples >= 100:
        say(f"Monte Carlo check ({opts.monte_carlo_samples} samples)")
        mass_names = [f"{w.name}/mass" for w in works]
        mc = monte_carlo(
            model_fn, inputs, out_names, opts.monte_carlo_samples, opts.seed,
            valid=lambda x: all(x[k][0] > 0 for k in mass_names) and all(
                v[0] > 0 for k, v in x.items() if k.startswith("s_model/") or k in ("calibration", "administered")
            ),
        )

    def q(name: str, unit: str, method: str) -> Quantity:
        i = prop.index(name)
        u = float(prop.std[i]) if opts.uncertainty else math.nan  # reported as null, never as 0
        return Quantity(float(prop.value[i]), u, unit, method, prop.breakdown(name) if opts.uncertainty else {})

    # --- results document --------------------------------------------------------------------------
    say("results")
    regions_out: dict[str, Any] = {}
    mc_out: dict[str, Any] = {}
    for w in works:
        n = w.name
        kin_method = _kinetics_method_text(w)
        tia = q(f"{n}/tia", "MBq h", kin_method)
        dose = q(f"{n}/dose", "Gy", "MIRD: sum over sources of TIA x S")
        reg: dict[str, Any] = {
            "kind": w.kind,
            "mass": Quantity(w.mass_g, w.mass_u_g, "g", "given" if w.spec.mass_g is not None else "volume x density").to_json(),
            "density_g_per_ml": w.density,
            "density_source": ("given" if w.spec.density_g_per_ml is not None
                               else "mass / volume" if (w.spec.mass_g is not None and w.spec.volume_ml is not None)
                               else f"default for {'lesions' if w.kind == 'lesion' else 'organs'} (options)"),
            "measurements": _measurements_json(w),
            "kinetics": w.kinetics_json,
            "time_integrated_activity": tia.to_json(),
            "time_integrated_activity_coefficient": q(f"{n}/tiac", "h", "TIA / administered activity").to_json(),
            "s_values": [
                {
                    "source": t.source,
                    "s_value_gy_per_bq_s": t.nominal_s_gy_per_bq_s,
                    "model_uncertainty_rel": t.model_uncertainty_rel,
                    "method": t.method,
                    "details": dict(t.details),
                    "references": list(t.references),
                }
                for t in w.s_terms
            ],
            "absorbed_dose": dose.to_json(),
            "absorbed_dose_per_activity": q(f"{n}/dose_per_gbq", "Gy/GBq", "absorbed dose / administered activity").to_json(),
            "bed": None,
            "eqd2": None,
            "radiobiology": None,
            "warnings": [],
        }
        if w.rc != 1.0:
            reg["recovery_coefficient"] = {"value": w.rc, "uncertainty": w.rc_u, "unit": "1"}
        if w.tissue is not None:
            g = _g_factor(w, None)
            if g is not None and math.isfinite(prop.value[prop.index(f"{n}/bed")]):
                shape = (f"the fitted {w.fit.model} kinetics" if w.fit is not None
                         else f"a mono-exponential with T_eff = {w.teff_h:g} h")
                reg["bed"] = q(f"{n}/bed", "Gy", f"LQ model with Lea-Catcheside G for {shape}").to_json()
                reg["eqd2"] = q(f"{n}/eqd2", "Gy", "EQD2 = BED / (1 + 2/(alpha/beta))").to_json()
                reg["radiobiology"] = {
                    "tissue": w.tissue.name,
                    "alpha_beta_gy": w.tissue.alpha_beta_gy,
                    "repair_half_time_h": w.tissue.repair_half_time_h,
                    "g_factor": g,
                    "dose_rate_shape": f"{shape}: the region's own activity time course (self-dose dominated)",
                    "references": list(w.tissue.references),
                }
            else:
                w.warnings.append(
                    f"{n}: BED not computed: no kinetics shape (give effective_half_life_h for a given TIA)"
                )
        else:
            w.warnings.append(
                f"{n}: no cited radiobiology parameters for this region; BED not reported "
                "(set tissue: to one of the library's tissues to report it)"
            )
        reg["warnings"] = list(w.warnings)
        regions_out[n] = reg
        if mc is not None:
            mc_out[n] = {}
            for key, unit in (("tia", "MBq h"), ("dose", "Gy"), ("bed", "Gy")):
                name = f"{n}/{key}"
                if name in out_names:
                    i = out_names.index(name)
                    mc_out[n][key] = {
                        "mean": _f(mc.mean[i]), "std": _f(mc.std[i]), "p2_5": _f(mc.p2_5[i]), "p97_5": _f(mc.p97_5[i]),
                        "lpu_std": _f(prop.std[i]), "unit": unit,
                        "ratio_mc_to_lpu": _f(mc.std[i] / prop.std[i]) if prop.std[i] > 0 else None,
                    }
                    ratio = mc.std[i] / prop.std[i] if prop.std[i] > 0 else 1.0
                    if math.isfinite(ratio) and abs(ratio - 1) > 0.2:
                        warnings.append(
                            f"{n}: Monte Carlo and first-order uncertainty of {key} differ by "
                            f"{100 * (ratio - 1):+.0f} %: the model is non-linear over the uncertainty range; "
                            "read the Monte Carlo 95 % interval"
                        )

    cumulative = _cumulative(case, regions_out, works)
    voxel_json, files = None, {}
    display: dict[str, Any] = {"imaging": imaging_display} if imaging_display else {}
    if voxel_step is not None:
        from mrtdose.workflow import voxel as voxel_wf

        voxel_json, files = voxel_wf.finish(voxel_step, case, regions_out, say)
        display["voxel"] = voxel_wf.slices_for_report(voxel_step)
        warnings.extend(voxel_json["warnings"])
    for w in works:
        warnings.extend(w.warnings)

    methods = {
        "kinetics_default": opts.kinetics,
        "kinetics_by_region": {w.name: _kinetics_method_text(w) for w in works},
        "voxel_dosimetry": (f"{voxel_step.dose.route} with {voxel_step.dose.engine}" if voxel_step is not None else None),
        "s_values_organs": organ_source.name,
        "s_values_organs_description": organ_source.description,
        "s_values_lesions": lesion_source.name,
        "s_values_lesions_description": lesion_source.description,
        "s_value_method_by_region": s_method_by_region,
        "cross_dose_included": cross_included,
        "uncertainty": (
            "law of propagation of uncertainty (GUM; EANM, Gear et al. 2018) with correlations"
            + (f"; Monte Carlo check with {opts.monte_carlo_samples} samples (GUM Supplement 1)" if mc else "")
        ) if opts.uncertainty else "not computed (options.uncertainty: false); uncertainties are null",
        "calibration_uncertainty_pct": opts.calibration_uncertainty_pct,
        "default_measurement_uncertainty_pct": opts.default_measurement_uncertainty_pct,
        "include_progeny": opts.include_progeny,
        "radiobiology": "linear-quadratic BED with Lea-Catcheside G-factor (Dale 1985); EQD2",
    }
    if source_bytes is None:
        warnings.append("the input was not read from a file: no input hash is recorded in the provenance")
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "case": {
            "patient": case.patient.model_dump(mode="json", exclude_none=True),
            "radiopharmaceutical": case.radiopharmaceutical,
            "nuclide": nuclide.name,
            "administration": case.administration.model_dump(mode="json", exclude_none=True),
            "notes": case.notes,
        },
        "nuclide": {
            "name": nuclide.name,
            "half_life_h": nuclide.half_life_h,
            "energy_per_decay_mev": {k: v for k, v in nuclide.energy_per_decay_mev.items() if v > 0},
            "nonpenetrating_mev": nuclide.nonpenetrating_mev,
            "photon_mev": nuclide.photon_mev,
        },
        "regions": regions_out,
        "cumulative": cumulative,
        "voxel": voxel_json,
        "imaging": imaging_json,
        "planar_imaging": planar_json,
        "uncertainty": {
            "method": methods["uncertainty"],
            "coverage": "standard uncertainty, k=1",
            "inputs": [
                {"name": i.name, "component": i.component, "description": i.description,
                 "value": i.value.tolist(), "std": i.std.tolist()}
                for i in inputs
            ],
            "monte_carlo": ({"samples": mc.n_samples, "valid_samples": mc.n_valid, "seed": opts.seed, "regions": mc_out}
                            if mc is not None else None),
        },
        "methods": methods,
        "warnings": list(dict.fromkeys(warnings)),
        "provenance": provenance(source_bytes, source_name, methods),
    }
    return CaseResult(results, files, display)


def _f(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _kinetics_method_text(w: _RegionWork) -> str:
    if w.fit is not None:
        return f"fit: {w.fit.model}"
    if w.stp is not None:
        return f"single time point: {w.stp.method}"
    return "given TIA"


def _measurements_json(w: _RegionWork) -> list[dict[str, Any]]:
    if w.times_h is None:
        return []
    return [
        {"time_h": float(t), "activity": Quantity(float(a), float(s), "MBq").to_json()}
        for t, a, s in zip(w.times_h, w.activities_mbq, w.sigmas_mbq)  # type: ignore[arg-type]
    ]


def _cumulative(case: Case, regions_out: dict[str, Any], works: list[_RegionWork]) -> dict[str, Any] | None:
    """Cumulative absorbed dose and BED over this and previous cycles (complete repair between
    cycles, no repopulation: BEDs add; Bodei et al. 2008, EJNMMI 35:1847). Uncertainties are
    combined in quadrature (cycles treated as independent)."""
    if not case.previous_cycles:
        return None
    out: dict[str, Any] = {}
    for w in works:
        n = w.name
        prev = [(c.cycle, c.regions[n]) for c in case.previous_cycles if n in c.regions]
        if not prev:
            continue
        cur = regions_out[n]
        d = cur["absorbed_dose"]["value"] + sum(p.absorbed_dose_gy for _, p in prev)
        ud = math.sqrt(cur["absorbed_dose"]["uncertainty"] ** 2 + sum(p.absorbed_dose_uncertainty_gy ** 2 for _, p in prev))
        entry: dict[str, Any] = {
            "cycles": [c for c, _ in prev] + [case.administration.cycle],
            "absorbed_dose": Quantity(d, ud, "Gy", "sum over cycles").to_json(),
            "bed": None,
            "eqd2": None,
        }
        if cur["bed"] is not None and all(p.bed_gy is not None for _, p in prev):
            b = cur["bed"]["value"] + sum(p.bed_gy for _, p in prev)  # type: ignore[misc]
            ub = math.sqrt(cur["bed"]["uncertainty"] ** 2 + sum(p.bed_uncertainty_gy ** 2 for _, p in prev))
            ab = w.tissue.alpha_beta_gy  # type: ignore[union-attr]
            entry["bed"] = Quantity(b, ub, "Gy", "sum of per-cycle BEDs (complete repair between cycles)").to_json()
            entry["eqd2"] = Quantity(rb.eqd2(b, ab), ub / (1 + 2 / ab), "Gy", "EQD2 of the cumulative BED").to_json()
        out[n] = entry
    return out


def load_and_run(path: str | Path, progress: Progress | None = None) -> CaseResult:
    """Convenience: load a case file and run it."""
    from mrtdose.workflow.case import load_case

    p = Path(path)
    case, raw = load_case(p)
    try:
        return run_case(case, source_name=p.name, source_bytes=raw, base_dir=p.parent, progress=progress)
    except InputError as exc:
        if exc.source is None:
            raise InputError(exc.detail, source=str(p), field=exc.field) from None
        raise
    except MrtdoseError as exc:
        raise type(exc)(f"{p}: {exc}") from None
