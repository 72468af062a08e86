"""The HTML dosimetry report.

:func:`render_report` turns a results document (``results.json``, see
``schemas/results.schema.json``) into one self-contained HTML page: inline CSS, plots embedded
as base64 PNG, no JavaScript and no external assets, so that the file can be archived, e-mailed
and printed as it is.

The structure follows the EANM Dosimetry Committee guidance on good practice of clinical
dosimetry reporting (Lassmann et al. 2011, EJNMMI 38:192): patient and administration, data
acquisition, time-activity data and their fits, masses, S-values and the absorbed-dose
calculation, results with uncertainties, radiobiology, software and data provenance, and a
sign-off block for the medical physics expert.

The report holds no physics: every number it shows is read from the results document, which
the pipeline computed once. The only arithmetic done here is presentation: relative
uncertainties (u/|value|), standard deviations and correlations from a covariance matrix
(sqrt of the diagonal, cov_ij / (u_i u_j)) and shares of the variance in a budget
(c_i^2 / u^2).

Examples
--------
>>> from mrtdose.reports.html import format_quantity
>>> format_quantity({"value": 4.7712, "uncertainty": 0.4523, "unit": "Gy"})
'4.77 ± 0.45 Gy'
"""

from __future__ import annotations

import copy
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2
import numpy as np

from mrtdose.quantities import format_value
from mrtdose.reports import plots

__all__ = ["render_report", "format_quantity", "ICRP107_NOTICE"]

ICRP107_NOTICE = (
    "Nuclear decay data: ICRP Publication 107 (Eckerman & Endo 2008, Ann. ICRP 38(3)), "
    "via the icrp107-database package; © ICRP"
)

#: Quantities of a region, in the order they are reported: (key in the region, label).
REGION_QUANTITIES: tuple[tuple[str, str], ...] = (
    ("time_integrated_activity", "Time-integrated activity"),
    ("time_integrated_activity_coefficient", "Time-integrated activity coefficient"),
    ("absorbed_dose", "Absorbed dose"),
    ("absorbed_dose_per_activity", "Absorbed dose per administered activity"),
    ("bed", "BED"),
    ("eqd2", "EQD2"),
)

#: Monte Carlo output keys (results["uncertainty"]["monte_carlo"]["regions"][name]) and the
#: region quantity each one checks.
MC_KEYS: tuple[tuple[str, str, str], ...] = (
    ("tia", "time_integrated_activity", "Time-integrated activity"),
    ("dose", "absorbed_dose", "Absorbed dose"),
    ("bed", "bed", "BED"),
)

_REGION_KEYS_SHOWN = {
    "kind", "mass", "density_g_per_ml", "measurements", "kinetics", "s_values", "bed", "eqd2",
    "radiobiology", "warnings", "recovery_coefficient", "density_source", "absorbed_dose_voxel", "dvh_metrics",
} | {k for k, _ in REGION_QUANTITIES}

_TOP_KEYS_SHOWN = {
    "schema_version", "case", "nuclide", "regions", "cumulative", "uncertainty", "methods",
    "warnings", "provenance", "voxel", "planar_imaging",
}

_FIT_STAT_KEYS = (
    ("tia", "TIA from the fit alone (before calibration and recovery uncertainty)"),
    ("n_points", "number of measurements"),
    ("n_params", "number of parameters"),
    ("dof", "degrees of freedom"),
    ("chi2", "χ² (weighted)"),
    ("reduced_chi2", "reduced χ²"),
    ("chi2_p_value", "p-value of χ²"),
    ("aicc", "AICc"),
    ("aic", "AIC"),
    ("bic", "BIC"),
    ("r2", "R²"),
    ("weighting", "weighting"),
    ("converged", "converged"),
    ("tia_mbq_h", "TIA of the fit (MBq h)"),
    ("extrapolated_fraction", "fraction of the TIA after the last measurement"),
    ("effective_half_lives_h", "effective half-lives (h)"),
    ("decay_constant_per_h", "physical decay constant (1/h)"),
    ("allow_below_physical", "clearance slower than physical decay allowed"),
    ("nonparametric", "non-parametric (trapezoid) model"),
    ("selection", "model selection"),
)

_FIT_CONSUMED = {
    "method", "model", "formula", "param_names", "params", "param_units", "param_uncertainties", "params_std",
    "uncertainties", "covariance", "correlation", "candidates", "curve", "warnings",
    "times_h", "activities_mbq", "sigmas_mbq", "residuals_mbq",
} | {k for k, _ in _FIT_STAT_KEYS}

#: Always-applicable references of the framework whose methods the results document names.
_BASE_REFERENCES = (
    "Lassmann M, Chiesa C, Flux G, Bardiès M. EANM Dosimetry Committee guidance document: good "
    "practice of clinical dosimetry reporting. Eur J Nucl Med Mol Imaging 2011;38:192-200.",
    "Bolch WE, Eckerman KF, Sgouros G, Thomas SR. MIRD Pamphlet No. 21: a generalized schema for "
    "radiopharmaceutical dosimetry - standardization of nomenclature. J Nucl Med 2009;50:477-484.",
    "Gear JI, Cox MG, Gustafsson J, et al. EANM practical guidance on uncertainty analysis for "
    "molecular radiotherapy absorbed dose calculations. Eur J Nucl Med Mol Imaging 2018;45:2456-2474.",
    "JCGM 100:2008. Evaluation of measurement data - Guide to the expression of uncertainty in "
    "measurement (GUM).",
    "ICRP Publication 107. Nuclear decay data for dosimetric calculations. Eckerman K, Endo A. "
    "Ann ICRP 2008;38(3).",
)
_MC_REFERENCE = (
    "JCGM 101:2008. Evaluation of measurement data - Supplement 1 to the GUM - Propagation of "
    "distributions using a Monte Carlo method."
)
_LQ_REFERENCE = (
    "Dale RG. The application of the linear-quadratic dose-effect equation to fractionated and "
    "protracted radiotherapy. Br J Radiol 1985;58:515-528."
)
_CUMULATIVE_REFERENCE = (
    "Bodei L, Cremonesi M, Ferrari M, et al. Long-term evaluation of renal toxicity after peptide "
    "receptor radionuclide therapy with 90Y-DOTATOC and 177Lu-DOTATATE: the role of associated risk "
    "factors. Eur J Nucl Med Mol Imaging 2008;35:1847-1856."
)

_DASH = "—"
NOT_COMPUTED = "not computed"


# --------------------------------------------------------------------------------------------
# formatting (presentation only)
# --------------------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _finite(x: Any) -> bool:
    return _is_number(x) and math.isfinite(x)


def _is_quantity(x: Any) -> bool:
    return isinstance(x, Mapping) and "value" in x and "unit" in x


def _unit(unit: Any) -> str:
    u = "" if unit is None else str(unit)
    return "" if u in ("", "1") else " " + u


def format_number(x: Any, digits: int = 4) -> str:
    """A plain number with ``digits`` significant figures (``—`` for none, ``n/a`` for non-finite)."""
    if x is None:
        return _DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if _is_number(x):
        if not math.isfinite(x):
            return "n/a"
        text = f"{x:.{digits}g}"
        if "e+" in text and abs(x) < 1e7:  # 16840.3 -> "16840", not "1.684e+04"
            text = f"{round(x, digits - 1 - math.floor(math.log10(abs(x)))):.0f}"
        return text
    return str(x)


def format_like(x: Any, u: Any, digits: int = 2) -> str:
    """``x`` rounded to the decimal of the ``digits``-th significant digit of ``u`` (as the value
    in :func:`mrtdose.quantities.format_value`), e.g. a Monte Carlo mean at the precision of its
    standard deviation."""
    if not (_finite(x) and _finite(u) and u > 0):
        return format_number(x)
    exp = math.floor(math.log10(u)) - (digits - 1)
    return f"{round(x, -exp):.{max(0, -exp)}f}"


def format_sig(x: Any, digits: int = 2) -> str:
    """``x`` rounded to ``digits`` significant figures, in fixed notation (as the uncertainties
    of :func:`mrtdose.quantities.format_value`)."""
    if not _finite(x):
        return format_number(x)
    if x == 0:
        return "0"
    exp = math.floor(math.log10(abs(x))) - (digits - 1)
    if exp > 6 or exp < -8:
        return f"{x:.{digits}g}"
    decimals = max(0, -exp)
    return f"{round(x, -exp):.{decimals}f}"


def format_quantity(q: Any, *, unit: bool = True) -> str:
    """``value ± u unit`` (2 significant digits of u, :func:`mrtdose.quantities.format_value`).

    A zero uncertainty is stated as ``(u = 0)``, a missing one as ``(u not available)``, so that
    an exact-looking number is never mistaken for one with a small uncertainty.
    """
    if not isinstance(q, Mapping):
        return _DASH
    v, u = q.get("value"), q.get("uncertainty")
    suffix = _unit(q.get("unit")) if unit else ""
    if not _finite(v):
        return "n/a" + suffix
    if u is None or not _is_number(u) or not math.isfinite(u):
        return f"{format_value(float(v), math.nan)}{suffix} (u not available)"
    if u == 0:
        return f"{format_value(float(v), 0.0)}{suffix} (u = 0)"
    return f"{format_value(float(v), float(u))}{suffix}"


def relative_uncertainty(q: Any) -> str:
    """``u/|value|`` in percent, two significant digits; empty when not defined."""
    if not isinstance(q, Mapping):
        return ""
    v, u = q.get("value"), q.get("uncertainty")
    if not (_finite(v) and _finite(u)) or v == 0 or u == 0:
        return ""
    return f"{format_sig(100.0 * u / abs(v))} %"


def _is_flat_mapping(x: Any) -> bool:
    return isinstance(x, Mapping) and all(v is None or isinstance(v, (str, int, float, bool)) for v in x.values())


def _is_string_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(v, str) for v in x)


def _pretty(x: Any) -> str:
    if isinstance(x, Mapping) and _is_quantity(x):
        return format_quantity(x)
    if _is_flat_mapping(x) and x:
        return "; ".join(f"{_label(k)}: {format_number(v)}" for k, v in x.items())
    if isinstance(x, (list, tuple)) and not x:
        return "none"
    if isinstance(x, (list, tuple)) and all(_is_number(v) or v is None for v in x):
        return ", ".join(format_number(v) for v in x)
    if isinstance(x, (Mapping, list, tuple)):
        return json.dumps(x, indent=1, ensure_ascii=False, default=str, allow_nan=True)
    return format_number(x)


def _label(key: str) -> str:
    return str(key).replace("_", " ")


def _kv_rows(d: Mapping[str, Any], skip: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Generic key/value rows for whatever a block holds (nested values as JSON)."""
    rows = []
    for k, v in d.items():
        if k in skip:
            continue
        items = [str(x) for x in v] if _is_string_list(v) and v else None
        text = _pretty(v)
        nested = items is None and isinstance(v, (Mapping, list, tuple)) and text.startswith(("{", "["))
        rows.append({"key": str(k), "label": _label(k), "value": text, "pre": nested, "bullets": items})
    return rows


def _matrix(m: Any, n: int | None = None) -> list[list[float]] | None:
    if not isinstance(m, Sequence) or isinstance(m, str) or not m:
        return None
    rows = []
    for r in m:
        if not isinstance(r, Sequence) or isinstance(r, str) or len(r) != len(m):
            return None
        rows.append([float(x) if _is_number(x) else math.nan for x in r])
    if n is not None and len(rows) != n:
        return None
    return rows


# --------------------------------------------------------------------------------------------
# view model: the results document arranged for the template (strings, lists and dicts only)
# --------------------------------------------------------------------------------------------


def _header(doc: Mapping[str, Any]) -> dict[str, Any]:
    case = doc.get("case") or {}
    patient = case.get("patient") or {}
    adm = case.get("administration") or {}
    a, pct = adm.get("activity_mbq"), adm.get("activity_uncertainty_pct")
    activity = f"{format_number(a, 6)} MBq" if _finite(a) else _DASH
    if _finite(pct):
        activity += f" (standard uncertainty {format_number(pct)} %)" if pct > 0 else " (u = 0)"
    patient_rows = [{"label": "Patient ID", "value": str(patient.get("id", _DASH))}]
    names = {"sex": "Sex", "mass_kg": "Body mass (kg)", "height_cm": "Height (cm)", "birth_year": "Year of birth"}
    for k, v in patient.items():
        if k != "id":
            patient_rows.append({"label": names.get(k, _label(k)), "value": format_number(v)})
    adm_rows = [
        {"label": "Radiopharmaceutical", "value": str(case.get("radiopharmaceutical") or _DASH)},
        {"label": "Nuclide", "value": str(case.get("nuclide") or (doc.get("nuclide") or {}).get("name") or _DASH)},
        {"label": "Administered activity", "value": activity},
        {"label": "Time of administration", "value": str(adm.get("time") or "not given")},
        {"label": "Therapy cycle", "value": format_number(adm.get("cycle"))},
    ]
    for k, v in adm.items():
        if k not in ("activity_mbq", "activity_uncertainty_pct", "time", "cycle"):
            adm_rows.append({"label": _label(k), "value": format_number(v)})
    prov = doc.get("provenance") or {}
    return {
        "title": str(case.get("radiopharmaceutical") or case.get("nuclide") or "molecular radiotherapy"),
        "patient_id": str(patient.get("id", _DASH)),
        "patient_rows": patient_rows,
        "administration_rows": adm_rows,
        "notes": case.get("notes"),
        "created": str(prov.get("created_utc") or _DASH),
        "schema_version": str(doc.get("schema_version", _DASH)),
        "coverage": str((doc.get("uncertainty") or {}).get("coverage") or "standard uncertainty, k=1"),
    }


def _cell(q: Any) -> dict[str, str]:
    return {"text": format_quantity(q) if q is not None else NOT_COMPUTED, "rel": relative_uncertainty(q)}


def _summary(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    methods = (doc.get("methods") or {}).get("kinetics_by_region") or {}
    rows = []
    for i, (name, r) in enumerate((doc.get("regions") or {}).items()):
        tia = r.get("time_integrated_activity")
        rows.append({
            "anchor": f"region-{i + 1}",
            "name": str(name),
            "kind": str(r.get("kind", "")),
            "kinetics": str(methods.get(name) or (tia or {}).get("method") or (r.get("kinetics") or {}).get("method") or ""),
            "mass": _cell(r.get("mass")),
            "tia": _cell(tia),
            "dose": _cell(r.get("absorbed_dose")),
            "dose_per_activity": _cell(r.get("absorbed_dose_per_activity")),
            "bed": _cell(r.get("bed")),
            "eqd2": _cell(r.get("eqd2")),
        })
    return rows


def _measurements(r: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for m in r.get("measurements") or []:
        act = m.get("activity")
        out.append({"time_h": format_number(m.get("time_h"), 5), "activity": format_quantity(act),
                    "rel": relative_uncertainty(act)})
    return out


def _kinetics_type(k: Mapping[str, Any]) -> str:
    method = str(k.get("method", ""))
    if method == "given":
        return "given"
    if method == "fit" or "curve" in k or "params" in k:
        return "fit"
    return "stp"


def _fit_view(name: str, r: Mapping[str, Any], k: Mapping[str, Any]) -> dict[str, Any]:
    params = k.get("params")
    names = k.get("param_names")
    units = k.get("param_units")
    values: list[Any]
    if isinstance(params, Mapping):
        names = list(params.keys())
        values = list(params.values())
    elif isinstance(params, Sequence) and not isinstance(params, str):
        values = list(params)
    else:
        values = []
    n = len(values)
    if not (isinstance(names, Sequence) and not isinstance(names, str) and len(names) == n):
        names = [f"p{i}" for i in range(n)]
    if isinstance(units, Mapping):
        units = [units.get(str(p), "") for p in names]
    if not (isinstance(units, Sequence) and not isinstance(units, str) and len(units) == n):
        units = [""] * n
    cov = _matrix(k.get("covariance"), n)
    stds = next(
        (k[key] for key in ("param_uncertainties", "params_std", "uncertainties")
         if isinstance(k.get(key), Sequence) and len(k[key]) == n),
        None,
    )
    if stds is None and cov is not None:
        stds = [math.sqrt(cov[i][i]) if cov[i][i] >= 0 else math.nan for i in range(n)]
    param_rows = []
    for i, (p, v) in enumerate(zip(names, values)):
        if _is_quantity(v):
            q = v
        else:
            q = {"value": v, "uncertainty": stds[i] if stds is not None else None, "unit": units[i]}
        param_rows.append({"name": str(p), "value": format_quantity(q), "rel": relative_uncertainty(q)})
    corr = _matrix(k.get("correlation"), n)
    if corr is None and cov is not None:
        corr = [
            [cov[i][j] / math.sqrt(cov[i][i] * cov[j][j]) if cov[i][i] > 0 and cov[j][j] > 0 else math.nan
             for j in range(n)]
            for i in range(n)
        ]
    stats = [
        {"label": label, "key": key,
         "value": (f"{format_sig(100.0 * k[key])} %" if key == "extrapolated_fraction" and _finite(k[key])
                   else _pretty(k[key]))}
        for key, label in _FIT_STAT_KEYS if key in k
    ]
    for key, v in k.items():
        if key not in _FIT_CONSUMED and not isinstance(v, (Mapping, list, tuple)):
            stats.append({"label": _label(key), "key": key, "value": _pretty(v)})
    other = _kv_rows({key: v for key, v in k.items()
                      if key not in _FIT_CONSUMED and isinstance(v, (Mapping, list, tuple))})
    model = k.get("model")
    fitted = _fitted_data(k)
    recovery = "recovery_coefficient" in r
    if fitted:
        points = [{"time_h": d["t"], "activity": {"value": d["a"], "uncertainty": d["s"], "unit": "MBq"}}
                  for d in fitted]
        points_label = "fitted data, recovery-corrected (±1 u)" if recovery else "fitted data (±1 u, k=1)"
    else:
        points = r.get("measurements") or []
        points_label = "measured, as entered (±1 u)" if recovery else "measured (±1 u, k=1)"
    plot = plots.kinetics_plot(points, k.get("curve"), f"{name}: time-activity curve",
                               str(model) if model else None, points_label=points_label)
    return {
        "type": "fit",
        "model": str(model) if model is not None else _DASH,
        "formula": str(k["formula"]) if k.get("formula") else "",
        "fitted": [{"t": format_number(d["t"], 5), "a": format_like(d["a"], d["s"]), "s": format_sig(d["s"]),
                    "res": format_like(d["res"], d["s"]) if d["res"] is not None else _DASH,
                    "norm": f"{d['res'] / d['s']:+.2f}" if d["res"] is not None and _finite(d["s"]) and d["s"] > 0
                    else _DASH}
                   for d in fitted],
        "plot": plot,
        "params": param_rows,
        "names": [str(p) for p in names],
        "correlation": [[f"{x:.3f}" if _finite(x) else "n/a" for x in row] for row in corr] if corr else None,
        "covariance": [[format_number(x, 4) for x in row] for row in cov] if cov else None,
        "stats": stats,
        "candidates": _candidates(k.get("candidates"), model),
        "warnings": [str(w) for w in (k.get("warnings") or [])],
        "other": other,
        "recovery_note": recovery and not fitted,
        "recovery_fitted_note": recovery and bool(fitted),
    }


def _fitted_data(k: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The data the fit used (times, activities, sigmas, residuals), when the block holds them."""
    t, a, sg = k.get("times_h"), k.get("activities_mbq"), k.get("sigmas_mbq")
    res = k.get("residuals_mbq")
    if not all(isinstance(x, list) for x in (t, a, sg)) or not (len(t) == len(a) == len(sg)) or not t:
        return []
    if not (isinstance(res, list) and len(res) == len(t)):
        res = [None] * len(t)
    return [
        {"t": ti, "a": ai, "s": si, "res": ri if _finite(ri) else None}
        for ti, ai, si, ri in zip(t, a, sg, res)
        if _finite(ti) and _finite(ai)
    ]


def _candidates(c: Any, selected: Any) -> dict[str, Any] | None:
    """The model-selection table (list of dicts or mapping model -> dict), whatever columns it has."""
    if isinstance(c, Mapping):
        items = [{"model": m, **(v if isinstance(v, Mapping) else {"value": v})} for m, v in c.items()]
    elif isinstance(c, Sequence) and not isinstance(c, str):
        items = [v if isinstance(v, Mapping) else {"model": v} for v in c]
    else:
        return None
    if not items:
        return None
    cols: list[str] = []
    for it in items:
        for key in it:
            if key not in cols:
                cols.append(key)
    if "model" in cols:
        cols.remove("model")
        cols.insert(0, "model")
    rows = []
    for it in items:
        rows.append({
            "cells": [_pretty(it.get(col)) if col in it else "" for col in cols],
            "selected": selected is not None and it.get("model") == selected,
        })
    return {"columns": [_label(col) for col in cols], "rows": rows}


def _kinetics_view(name: str, r: Mapping[str, Any]) -> dict[str, Any]:
    k = r.get("kinetics") or {}
    kind = _kinetics_type(k)
    if kind == "fit":
        return _fit_view(name, r, k)
    if kind == "given":
        return {"type": "given", "rows": _kv_rows(k, skip={"method"})}
    comps = k.get("components")
    refs = k.get("references") if isinstance(k.get("references"), list) else None
    return {
        "type": "stp",
        "method": str(next((k[m] for m in ("stp_method", "formula", "method") if isinstance(k.get(m), str)), _DASH)),
        "rows": _kv_rows(k, skip={"components", "references", "method", "stp_method"}),
        "components": [{"name": str(c), "value": format_sig(v)} for c, v in comps.items()]
        if isinstance(comps, Mapping) else None,
        "references": [str(x) for x in refs] if refs else [],
    }


def _s_values(r: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in r.get("s_values") or []:
        details = t.get("details") or {}
        rel = t.get("model_uncertainty_rel")
        out.append({
            "source": str(t.get("source", _DASH)),
            "s": format_number(t.get("s_value_gy_per_bq_s"), 4),
            "u_rel": f"{format_sig(100.0 * rel)} %" if _finite(rel) else _DASH,
            "method": str(t.get("method", "")),
            "details": [{"label": _label(dk), "value": format_number(dv, 4)} for dk, dv in details.items()],
            "references": [str(x) for x in t.get("references") or []],
        })
    return out


def _budget(r: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, label in REGION_QUANTITIES:
        q = r.get(key)
        if not isinstance(q, Mapping):
            continue
        comps = q.get("components") or {}
        v, u = q.get("value"), q.get("uncertainty")
        rows = []
        rss2 = 0.0
        for c, val in sorted(comps.items(), key=lambda kv: -(kv[1] if _finite(kv[1]) else -1.0)):
            share = f"{format_sig(100.0 * val * val / (u * u))} %" if _finite(val) and _finite(u) and u > 0 else ""
            rel = f"{format_sig(100.0 * val / abs(v))} %" if _finite(val) and _finite(v) and v != 0 else ""
            if _finite(val):
                rss2 += val * val
            rows.append({"component": str(c), "contribution": format_sig(val) + _unit(q.get("unit")),
                         "rel": rel, "share": share})
        out.append({
            "key": key,
            "label": label,
            "quantity": format_quantity(q),
            "combined": (format_sig(u) + _unit(q.get("unit"))) if _finite(u) else "n/a",
            "combined_rel": relative_uncertainty(q),
            "rss": (format_sig(math.sqrt(rss2)) + _unit(q.get("unit"))) if rows else "",
            "method": str(q.get("method") or ""),
            "rows": rows,
        })
    return out


def _mc_view(doc: Mapping[str, Any], name: str, r: Mapping[str, Any]) -> list[dict[str, str]] | None:
    mc = (doc.get("uncertainty") or {}).get("monte_carlo")
    if not isinstance(mc, Mapping):
        return None
    block = (mc.get("regions") or {}).get(name)
    if not isinstance(block, Mapping):
        return None
    rows = []
    known = {k for k, _, _ in MC_KEYS}
    keys = [(k, rk, lab) for k, rk, lab in MC_KEYS if k in block] + [
        (k, k, _label(k)) for k in block if k not in known
    ]
    for key, region_key, label in keys:
        e = block[key]
        if not isinstance(e, Mapping):
            continue
        unit = _unit(e.get("unit"))
        q = r.get(region_key)
        rows.append({
            "label": label,
            "first_order": format_quantity(q) if isinstance(q, Mapping) else _DASH,
            "lpu_std": format_sig(e.get("lpu_std")) + unit if _finite(e.get("lpu_std")) else "n/a",
            "mc_mean": format_like(e.get("mean"), e.get("std")) + unit if _finite(e.get("mean")) else "n/a",
            "mc_std": format_sig(e.get("std")) + unit if _finite(e.get("std")) else "n/a",
            "interval": (f"{format_like(e.get('p2_5'), e.get('std'))} – {format_like(e.get('p97_5'), e.get('std'))}{unit}"
                         if _finite(e.get("p2_5")) and _finite(e.get("p97_5")) else "n/a"),
            "ratio": format_number(e.get("ratio_mc_to_lpu"), 3) if _finite(e.get("ratio_mc_to_lpu")) else "n/a",
        })
    return rows


def _radiobiology(r: Mapping[str, Any]) -> dict[str, Any] | None:
    rb = r.get("radiobiology")
    if not isinstance(rb, Mapping):
        return None
    labels = {
        "tissue": "Tissue",
        "alpha_beta_gy": "α/β (Gy)",
        "repair_half_time_h": "Repair half-time (h)",
        "g_factor": "Lea–Catcheside G-factor",
        "dose_rate_shape": "Dose-rate time course",
    }
    rows = [{"label": labels[k], "value": format_number(rb[k], 4)} for k in labels if k in rb]
    rows += [{"label": _label(k), "value": _pretty(v)} for k, v in rb.items() if k not in labels and k != "references"]
    return {"rows": rows, "references": [str(x) for x in rb.get("references") or []]}


def _region(doc: Mapping[str, Any], i: int, name: str, r: Mapping[str, Any]) -> dict[str, Any]:
    budget = _budget(r)
    dose = r.get("absorbed_dose") or {}
    budget_plot = plots.budget_plot(dose.get("components") or {}, dose.get("uncertainty"),
                                    f"{name}: absorbed-dose uncertainty budget")
    rc = r.get("recovery_coefficient")
    geometry = [
        {"label": "Kind", "value": str(r.get("kind", _DASH))},
        {"label": "Mass", "value": format_quantity(r.get("mass"))
         + (f" ({(r.get('mass') or {}).get('method')})" if (r.get("mass") or {}).get("method") else "")},
        {"label": "Density (g/mL)", "value": format_number(r.get("density_g_per_ml"), 4)
         + (f" ({r['density_source']})" if r.get("density_source") else "")},
    ]
    if rc is not None:
        geometry.append({"label": "Recovery coefficient", "value": format_quantity(rc)})
    return {
        "anchor": f"region-{i + 1}",
        "name": str(name),
        "geometry": geometry,
        "measurements": _measurements(r),
        "kinetics": _kinetics_view(name, r),
        "results": [{"label": label, "value": _cell(r.get(key))["text"], "rel": relative_uncertainty(r.get(key)),
                     "method": str((r.get(key) or {}).get("method") or "")}
                    for key, label in REGION_QUANTITIES if key in r],
        "s_values": _s_values(r),
        "budget": budget,
        "budget_plot": budget_plot,
        "monte_carlo": _mc_view(doc, name, r),
        "radiobiology": _radiobiology(r),
        "voxel": _region_voxel(doc, r),
        "warnings": [str(w) for w in r.get("warnings") or []],
        "other": _kv_rows({k: v for k, v in r.items() if k not in _REGION_KEYS_SHOWN}),
    }


def _cumulative(doc: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    cum = doc.get("cumulative")
    if not isinstance(cum, Mapping):
        return None
    rows = []
    for name, e in cum.items():
        cycles = e.get("cycles") or []
        rows.append({
            "name": str(name),
            "cycles": ", ".join(str(c) for c in cycles),
            "dose": _cell(e.get("absorbed_dose")),
            "bed": _cell(e.get("bed")),
            "eqd2": _cell(e.get("eqd2")),
            "method": "; ".join(str(q.get("method")) for q in (e.get("absorbed_dose"), e.get("bed"))
                                if isinstance(q, Mapping) and q.get("method")),
        })
    return rows


def _warnings(doc: Mapping[str, Any]) -> list[str]:
    """All warnings: the document's list, then any region warning it does not already hold."""
    out = [str(w) for w in doc.get("warnings") or []]
    seen = set(out)
    for r in (doc.get("regions") or {}).values():
        for w in r.get("warnings") or []:
            if str(w) not in seen:
                seen.add(str(w))
                out.append(str(w))
    return out


def _uncertainty(doc: Mapping[str, Any]) -> dict[str, Any]:
    unc = doc.get("uncertainty") or {}
    inputs = []
    for i in unc.get("inputs") or []:
        vals, stds = i.get("value") or [], i.get("std") or []
        inputs.append({
            "name": str(i.get("name", "")),
            "component": str(i.get("component", "")),
            "description": str(i.get("description", "")),
            "value": ", ".join(format_number(x, 4) for x in vals),
            "std": ", ".join(format_number(x, 3) for x in stds),
        })
    mc = unc.get("monte_carlo")
    mc_rows = None
    if isinstance(mc, Mapping):
        mc_rows = [
            {"label": "samples drawn", "value": format_number(mc.get("samples"))},
            {"label": "valid samples", "value": format_number(mc.get("valid_samples"))},
            {"label": "random seed", "value": format_number(mc.get("seed"))},
        ]
    return {
        "method": str(unc.get("method", _DASH)),
        "coverage": str(unc.get("coverage", _DASH)),
        "inputs": inputs,
        "monte_carlo": mc_rows,
        "other": _kv_rows(unc, skip={"method", "coverage", "inputs", "monte_carlo"}),
    }


def _methods(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for k, v in (doc.get("methods") or {}).items():
        if isinstance(v, Mapping):
            rows.append({"label": _label(k), "key": k, "value": None,
                         "entries": [{"label": str(a), "value": _pretty(b)} for a, b in v.items()]})
        else:
            rows.append({"label": _label(k), "key": k, "value": _pretty(v), "entries": None})
    return rows


def _nuclide(doc: Mapping[str, Any]) -> dict[str, Any]:
    n = doc.get("nuclide") or {}
    hl = n.get("half_life_h")
    rows = [
        {"label": "Nuclide", "value": str(n.get("name", _DASH))},
        {"label": "Physical half-life", "value": (f"{format_number(hl, 5)} h ({format_number(hl / 24.0, 5)} d)"
                                                  if _finite(hl) else _DASH)},
        {"label": "Non-penetrating energy per decay (MeV)", "value": format_number(n.get("nonpenetrating_mev"), 4)},
        {"label": "Photon energy per decay (MeV)", "value": format_number(n.get("photon_mev"), 4)},
    ]
    known = {"name", "half_life_h", "nonpenetrating_mev", "photon_mev", "energy_per_decay_mev"}
    rows += [{"label": _label(k), "value": _pretty(v)} for k, v in n.items() if k not in known]
    energies = [{"category": str(k), "value": format_number(v, 4)}
                for k, v in (n.get("energy_per_decay_mev") or {}).items()]
    return {"rows": rows, "energies": energies}


def _provenance(doc: Mapping[str, Any]) -> dict[str, Any]:
    p = doc.get("provenance") or {}
    sw = p.get("software") or {}
    inp = p.get("input") or {}
    rows = [
        {"label": "Software", "value": f"{sw.get('name', 'mrtdose')} {sw.get('version', '?')}"},
        {"label": "Results schema version", "value": str(doc.get("schema_version", _DASH))},
        {"label": "Calculated (UTC)", "value": str(p.get("created_utc") or _DASH)},
        {"label": "Input file", "value": str(inp.get("file") or "not recorded")},
        {"label": "Input SHA-256", "value": str(inp.get("sha256") or "not recorded"), "code": True,
         "alert": not inp.get("sha256")},
        {"label": "Python", "value": str(p.get("python", _DASH))},
        {"label": "Platform", "value": str(p.get("platform", _DASH))},
    ]
    known = {"software", "input", "created_utc", "python", "platform", "libraries", "reference_data", "methods"}
    rows += [{"label": _label(k), "value": _pretty(v)} for k, v in p.items() if k not in known]
    return {
        "rows": rows,
        "reference_data": [{"label": str(k), "value": str(v)} for k, v in (p.get("reference_data") or {}).items()],
        "libraries": [{"label": str(k), "value": str(v)} for k, v in (p.get("libraries") or {}).items()],
    }


def _collect_references(x: Any, out: list[str]) -> None:
    if isinstance(x, Mapping):
        for k, v in x.items():
            if k == "references" and isinstance(v, list):
                out.extend(str(s) for s in v if isinstance(s, str))
            elif k == "reference" and isinstance(v, str):
                out.append(v)
            else:
                _collect_references(v, out)
    elif isinstance(x, list):
        for v in x:
            _collect_references(v, out)


def _references(doc: Mapping[str, Any]) -> list[str]:
    refs = list(_BASE_REFERENCES)
    if isinstance((doc.get("uncertainty") or {}).get("monte_carlo"), Mapping):
        refs.append(_MC_REFERENCE)
    regions = doc.get("regions") or {}
    if any(isinstance(r.get("radiobiology"), Mapping) for r in regions.values()):
        refs.append(_LQ_REFERENCE)
    if isinstance(doc.get("cumulative"), Mapping) and doc["cumulative"]:
        refs.append(_CUMULATIVE_REFERENCE)
    _collect_references(regions, refs)
    if isinstance(doc.get("voxel"), Mapping):
        _collect_references(doc["voxel"], refs)
    return list(dict.fromkeys(refs))


# --------------------------------------------------------------------------------------------
# voxel dosimetry (results["voxel"], and display["voxel"] for the images)
# --------------------------------------------------------------------------------------------

_VOXEL_COMPARISON_NOTE = (
    "The organ-level (MIRD) absorbed dose is computed from the region's time-integrated activity "
    "and its S-values, i.e. for activity distributed uniformly over the region with the mass used "
    "in the organ-level calculation; it carries the full uncertainty budget. The voxel value is the "
    "mean of the voxel absorbed-dose map over the region's voxels in the label map. The two differ "
    "because of partial-volume spill-in and spill-out of activity at the region boundaries of the "
    "activity maps (limited resolution; no recovery correction at voxel level), non-uniform activity "
    "and absorbed dose within the region, cross-dose from neighbouring regions (part of the "
    "convolution, but in the organ-level result only where cross-dose S-values are used), the "
    "segmented volume and mass versus the organ-level mass, and voxel-wise versus region-wise "
    "kinetics. Voxel values carry no propagated uncertainty."
)

_DVH_QUANTITY_LABELS = (
    ("mean", "Mean"),
    ("mass_weighted_mean", "Mass-weighted mean (energy / mass)"),
    ("median", "Median"),
    ("std", "Standard deviation over the voxels"),
    ("min", "Minimum"),
    ("max", "Maximum"),
)
_DVH_KNOWN = {"quantity", "n_voxels", "volume_ml", "D", "V", "notes", "references", "bed", "parameters",
              "eud", "eubed"} | {k for k, _ in _DVH_QUANTITY_LABELS}


def _num_key(key: str, prefix: str, suffix: str = "") -> float:
    body = key[len(prefix):]
    if suffix and body.endswith(suffix):
        body = body[: -len(suffix)]
    try:
        return float(body)
    except ValueError:
        return math.inf


def _vq(q: Any, digits: int = 3) -> str:
    """A voxel-level quantity (no propagated uncertainty): its value, ``digits`` significant
    figures, and unit."""
    if not isinstance(q, Mapping):
        return _DASH
    v = q.get("value")
    if not _finite(v):
        return "n/a" + _unit(q.get("unit"))
    return format_sig(float(v), digits) + _unit(q.get("unit"))


def _signed(x: float, suffix: str = "") -> str:
    text = f"{x:+.1f}"
    return ("0.0" if text in ("+0.0", "-0.0") else text) + suffix


def _dims(x: Any, sep: str = " × ", digits: int = 4) -> str:
    if isinstance(x, Sequence) and not isinstance(x, str) and x:
        return sep.join(format_number(v, digits) for v in x)
    return _pretty(x) if x is not None else _DASH


def _dvh_rows(metrics: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Mapping[str, Any]] | None = None
              ) -> list[dict[str, Any]]:
    """Rows of a metric x region table from the ``dvh_metrics`` blocks of the regions (each a
    DVHMetrics.to_json(); ``extra``: per region, rows added first, e.g. the mass)."""
    names = list(metrics)
    rows: list[dict[str, Any]] = []

    def add(label: str, cells: list[str], note: str = "") -> None:
        if any(c != _DASH for c in cells):
            rows.append({"label": label, "cells": cells, "note": note})

    add("Voxels", [format_number(m.get("n_voxels")) for m in metrics.values()])
    add("Volume (mL)", [format_number(m.get("volume_ml"), 4) for m in metrics.values()])
    if extra:
        labels: list[str] = []
        for e in extra.values():
            labels += [k for k in e if k not in labels]
        for lab in labels:
            add(lab, [str((extra.get(n) or {}).get(lab, _DASH)) for n in names])
    for key, label in _DVH_QUANTITY_LABELS:
        add(label, [_vq(m.get(key)) for m in metrics.values()])
    d_keys: list[str] = []
    v_keys: list[str] = []
    for m in metrics.values():
        d_keys += [k for k in (m.get("D") or {}) if k not in d_keys]
        v_keys += [k for k in (m.get("V") or {}) if k not in v_keys]
    d_keys.sort(key=lambda k: _num_key(k, "D"))
    for k in d_keys:
        pct = k[1:] if k.startswith("D") else k
        add(f"{k}: minimum dose to the hottest {pct} %", [_vq((m.get("D") or {}).get(k)) for m in metrics.values()])
    v_keys.sort(key=lambda k: _num_key(k, "V", "Gy"))
    for k in v_keys:
        thr = k[1:-2] if k.startswith("V") and k.endswith("Gy") else k
        cells = []
        for m in metrics.values():
            e = (m.get("V") or {}).get(k)
            if not isinstance(e, Mapping):
                cells.append(_DASH)
                continue
            pct, ml = e.get("volume_percent"), e.get("volume_ml")
            text = _vq(pct, 3) if isinstance(pct, Mapping) else _DASH
            if isinstance(ml, Mapping):
                text += f" ({_vq(ml, 3)})"
            cells.append(text)
        add(f"{k}: volume receiving ≥ {thr} Gy, % (mL)" if thr != k else k, cells)
    for key, label in (("eud", "EUD (Niemierko)"), ("eubed", "Equivalent uniform BED (EUBED)")):
        methods = {str(m[key].get("method")) for m in metrics.values() if isinstance(m.get(key), Mapping)
                   and m[key].get("method")}
        add(label, [_vq(m.get(key)) for m in metrics.values()], "; ".join(sorted(methods)))
    others: list[str] = []
    for m in metrics.values():
        others += [k for k, v in m.items() if k not in _DVH_KNOWN and k not in others and _is_quantity(v)]
    for k in others:
        add(_label(k), [_vq(m.get(k)) for m in metrics.values()])
    return rows


def _voxel_comparison(doc: Mapping[str, Any], vregions: Mapping[str, Any]) -> list[dict[str, Any]]:
    regions = doc.get("regions") or {}
    rows = []
    for name, v in vregions.items():
        org = regions.get(name) if isinstance(regions.get(name), Mapping) else {}
        mird = org.get("absorbed_dose")
        vox = v.get("absorbed_dose_voxel") if isinstance(v, Mapping) else None
        mv = mird.get("value") if isinstance(mird, Mapping) else None
        mu = mird.get("uncertainty") if isinstance(mird, Mapping) else None
        vv = vox.get("value") if isinstance(vox, Mapping) else None
        diff = diff_u = _DASH
        if _finite(mv) and _finite(vv) and mv != 0:
            diff = _signed(100.0 * (vv - mv) / abs(mv), " %")
            if _finite(mu) and mu > 0:
                diff_u = _signed((vv - mv) / mu)
        mass = org.get("mass")
        vmass = v.get("mass_g") if isinstance(v, Mapping) else None
        rows.append({
            "name": str(name),
            "anchor": f"region-{list(regions).index(name) + 1}" if name in regions else "",
            "mird": _cell(mird) if mird is not None else {"text": "not in the organ-level results", "rel": ""},
            "voxel": _vq(vox),
            "diff": diff,
            "diff_u": diff_u,
            "tia_mird": _cell(org.get("time_integrated_activity")) if org.get("time_integrated_activity") else
            {"text": _DASH, "rel": ""},
            "tia_voxel": _vq(v.get("time_integrated_activity"), 4) if isinstance(v, Mapping) else _DASH,
            "mass_mird": format_quantity(mass) if isinstance(mass, Mapping) else _DASH,
            "mass_voxel": f"{format_number(vmass, 4)} g" if _finite(vmass) else _DASH,
            "volume": f"{format_number(v.get('volume_ml'), 4)} mL" if isinstance(v, Mapping) and _finite(v.get("volume_ml"))
            else _DASH,
        })
    return rows


def _s_matrix(ps: Any) -> dict[str, Any] | None:
    if not isinstance(ps, Mapping):
        return None
    names = [str(n) for n in ps.get("regions") or []]
    m = ps.get("s_gy_per_bq_s")
    if not names or not isinstance(m, Sequence) or len(m) != len(names):
        return None
    masses = ps.get("masses_g") or []
    rows = []
    for i, (t, row) in enumerate(zip(names, m)):
        cells = [format_number(x, 4) if _finite(x) else "n/a" for x in (row if isinstance(row, Sequence) else [])]
        rows.append({"target": t, "cells": cells + [""] * (len(names) - len(cells)),
                     "mass": format_number(masses[i], 4) if i < len(masses) and _finite(masses[i]) else _DASH})
    rel = ps.get("model_uncertainty_rel")
    return {
        "names": names,
        "rows": rows,
        "method": str(ps.get("method") or ""),
        "u_rel": f"{format_sig(100.0 * rel)} %" if _finite(rel) else "",
        "other": _kv_rows(ps, skip={"regions", "s_gy_per_bq_s", "masses_g", "method", "model_uncertainty_rel"}),
    }


def _overlays(display: Mapping[str, Any] | None, vox: Mapping[str, Any]) -> dict[str, Any] | None:
    """The dose overlay figures from the display data (None: no display data given)."""
    if not isinstance(display, Mapping) or not isinstance(display.get("voxel"), Mapping):
        return None
    dv = display["voxel"]
    names = [str(n) for n in dv.get("region_names") or list((vox.get("regions") or {}).keys())]
    spacing = dv.get("spacing_mm") or (vox.get("grid") or {}).get("spacing_mm")
    # Colour scale: up to the highest dose inside the outlined regions of the shown slices (the
    # maximum of the whole map can lie outside the body, e.g. in low-density voxels).
    vmax = None
    for s in dv.get("slices") or []:
        try:
            d, lab = np.asarray(s.get("dose_gy"), dtype=np.float64), np.asarray(s.get("regions"))
            inside = d[(lab > 0) & np.isfinite(d)] if d.shape == lab.shape else d[np.isfinite(d)]
        except (TypeError, ValueError, AttributeError):
            continue
        if inside.size and (vmax is None or float(inside.max()) > vmax):
            vmax = float(inside.max())
    if vmax is None or not vmax > 0:
        vmax = dv.get("max_dose_gy")
    out = []
    for s in dv.get("slices") or []:
        if not isinstance(s, Mapping):
            continue
        z = s.get("z")
        zt = format_number(z) if z is not None else "?"
        img = plots.dose_overlay(s.get("dose_gy"), s.get("regions"), names, spacing,
                                 f"absorbed dose, axial slice z = {zt}", vmax_gy=vmax)
        if img is None:
            continue
        try:
            present = {int(x) for x in np.unique(np.asarray(s.get("regions")))}
        except (TypeError, ValueError):
            present = set()
        shown = [n for i, n in enumerate(names, start=1) if i in present]
        out.append({"img": img, "z": zt, "regions": ", ".join(shown) if shown else "none"})
    return {"images": out, "vmax": f"{format_sig(vmax, 3)} Gy" if _finite(vmax) else _DASH,
            "map_max": f"{format_sig(dv.get('max_dose_gy'), 3)} Gy" if _finite(dv.get("max_dose_gy")) else _DASH}


def _voxel(doc: Mapping[str, Any], display: Mapping[str, Any] | None) -> dict[str, Any] | None:
    vox = doc.get("voxel")
    if not isinstance(vox, Mapping):
        return None
    grid = vox.get("grid") or {}
    dose = vox.get("dose") or {}
    kernel = vox.get("kernel") or {}
    vregions = {str(k): v for k, v in (vox.get("regions") or {}).items() if isinstance(v, Mapping)}
    times = vox.get("times_h") or []

    setup = []
    if "shape_zyx" in grid:
        setup.append({"label": "Grid", "value": f"{_dims(grid.get('shape_zyx'))} voxels (z × y × x)"})
    if "spacing_mm" in grid:
        setup.append({"label": "Voxel size", "value": f"{_dims(grid.get('spacing_mm'))} mm (x × y × z)"})
    if _finite(grid.get("voxel_volume_ml")):
        setup.append({"label": "Voxel volume", "value": f"{format_number(grid['voxel_volume_ml'], 4)} mL"})
    if "origin_mm" in grid:
        setup.append({"label": "Origin (centre of the first voxel)", "value": f"{_dims(grid.get('origin_mm'), ', ')} mm"})
    setup += [{"label": _label(k), "value": _pretty(v)} for k, v in grid.items()
              if k not in ("shape_zyx", "spacing_mm", "voxel_volume_ml", "origin_mm")]
    setup.append({"label": "Activity maps (time after administration)",
                  "value": (f"{', '.join(format_number(t, 5) for t in times)} h ({len(times)} maps)"
                            if times else _DASH)})
    route = str(dose.get("route") or _DASH)
    if dose.get("description"):
        route += f": {dose['description']}"
    setup.append({"label": "Route", "value": route})
    setup.append({"label": "Engine", "value": str(dose.get("engine") or _DASH)})
    setup.append({"label": "Density", "value": str(vox.get("density") or _DASH)})
    dc = vox.get("density_correction", dose.get("density_corrected"))
    setup.append({"label": "Density correction of the kernel", "value": format_number(dc) if dc is not None else _DASH})
    settings = dose.get("settings")
    if isinstance(settings, Mapping) and settings:
        setup.append({"label": "Voxel kinetics and dose settings", "value": _pretty(settings)})
    by_method = dose.get("voxels_by_time_integration_method")
    if isinstance(by_method, Mapping) and by_method:
        setup.append({"label": "Voxels by time-integration method",
                      "value": "; ".join(f"{k}: {format_number(v)}" for k, v in by_method.items())})
    if isinstance(dose.get("max_dose"), Mapping):
        note = dose["max_dose"].get("note")
        setup.append({"label": "Maximum of the dose map", "value": _vq(dose["max_dose"], 4) + (f" ({note})" if note else "")})
    setup += [{"label": _label(k), "value": _pretty(v)} for k, v in dose.items()
              if k not in ("route", "description", "engine", "density_corrected", "settings",
                           "voxels_by_time_integration_method", "max_dose", "references")]

    kernel_rows = [
        {"label": "Source", "value": str(kernel.get("source") or _DASH)},
        {"label": "Description", "value": str(kernel.get("description") or _DASH)},
    ]
    if "voxel_size_mm" in kernel:
        kernel_rows.append({"label": "Voxel size", "value": f"{_dims(kernel['voxel_size_mm'])} mm"})
    if "shape" in kernel:
        kernel_rows.append({"label": "Shape", "value": f"{_dims(kernel['shape'])} voxels"})
    named = {"nuclide": "Nuclide", "medium": "Medium", "reference_density_g_per_ml": "Reference density (g/mL)",
             "centre_s_gy_per_bq_s": "S-value of the central voxel (Gy/(Bq s))"}
    kernel_rows += [{"label": lab, "value": format_number(kernel[k], 4)} for k, lab in named.items() if k in kernel]
    kernel_rows += [{"label": _label(k), "value": _pretty(v)} for k, v in kernel.items()
                    if k not in named and k not in ("source", "description", "voxel_size_mm", "shape")]

    metrics = {n: v["dvh_metrics"] for n, v in vregions.items() if isinstance(v.get("dvh_metrics"), Mapping)}
    extra = {n: {"Mass from the label map (g)": format_number(v.get("mass_g"), 4)}
             for n, v in vregions.items() if _finite(v.get("mass_g"))}
    bed = {n: m["bed"] for n, m in metrics.items() if isinstance(m.get("bed"), Mapping)}
    bed_extra: dict[str, dict[str, str]] = {}
    for n, b in bed.items():
        p = b.get("parameters") or {}
        bed_extra[n] = {"Tissue": str(p.get("tissue", _DASH)), "α/β (Gy)": format_number(p.get("alpha_beta_gy"), 4),
                        "Lea–Catcheside G-factor": format_number(p.get("g_factor"), 4)}
    curves = [(n, (v.get("dvh_curve") or {}).get("dose_gy"), (v.get("dvh_curve") or {}).get("volume_fraction"))
              for n, v in vregions.items() if isinstance(v.get("dvh_curve"), Mapping)]
    notes: list[str] = []
    for m in list(metrics.values()) + list(bed.values()):
        notes += [str(x) for x in m.get("notes") or [] if str(x) not in notes]
    files = vox.get("files") or {}
    return {
        "setup": setup,
        "kernel": kernel_rows,
        "comparison": _voxel_comparison(doc, vregions),
        "comparison_note": _VOXEL_COMPARISON_NOTE,
        "cross_dose": (doc.get("methods") or {}).get("cross_dose_included"),
        "dvh_names": list(metrics),
        "dvh_rows": _dvh_rows(metrics, extra) if metrics else [],
        "bed_names": list(bed),
        "bed_rows": _dvh_rows(bed, bed_extra) if bed else [],
        "dvh_notes": notes,
        "dvh_plot": plots.dvh_plot(curves, "cumulative dose-volume histograms") if curves else None,
        "overlays": _overlays(display, vox),
        "s_matrix": _s_matrix(vox.get("patient_specific_s_values")),
        "files": [{"name": str(k), "note": _pretty(v) if not isinstance(v, str) else v} for k, v in files.items()]
        if isinstance(files, Mapping) else [{"name": str(f), "note": ""} for f in files],
        "uncertainty_note": str(vox.get("uncertainty_note") or ""),
        "warnings": [str(w) for w in vox.get("warnings") or []],
        "references": [str(x) for x in dose.get("references") or []],
        "other": _kv_rows({k: v for k, v in vox.items() if k not in _VOXEL_KEYS_SHOWN}),
    }


_VOXEL_KEYS_SHOWN = {
    "grid", "times_h", "kernel", "dose", "density", "density_correction", "regions", "uncertainty_note",
    "warnings", "files", "patient_specific_s_values",
}


def _region_voxel(doc: Mapping[str, Any], r: Mapping[str, Any]) -> list[dict[str, str]] | None:
    """Compact voxel results on a region page (``absorbed_dose_voxel`` and ``dvh_metrics`` as
    copied into the region by the pipeline)."""
    vox, m = r.get("absorbed_dose_voxel"), r.get("dvh_metrics")
    if not isinstance(vox, Mapping) and not isinstance(m, Mapping):
        return None
    rows = []
    if isinstance(vox, Mapping):
        text = _vq(vox)
        mird = r.get("absorbed_dose")
        if isinstance(mird, Mapping) and _finite(mird.get("value")) and _finite(vox.get("value")) and mird["value"] != 0:
            text += f" ({_signed(100.0 * (vox['value'] - mird['value']) / abs(mird['value']), ' %')} from the organ-level dose)"
        rows.append({"label": "Voxel mean absorbed dose", "value": text})
    if isinstance(m, Mapping):
        d = m.get("D") or {}
        dk = sorted(d, key=lambda k: _num_key(k, "D"))
        if dk:
            rows.append({"label": " / ".join(dk), "value": " / ".join(_vq(d[k]) for k in dk)})
        if isinstance(m.get("min"), Mapping) or isinstance(m.get("max"), Mapping):
            rows.append({"label": "Minimum – maximum", "value": f"{_vq(m.get('min'))} – {_vq(m.get('max'))}"})
        v = m.get("V") or {}
        vk = sorted(v, key=lambda k: _num_key(k, "V", "Gy"))
        if vk:
            rows.append({"label": "Volume ≥ threshold (%)",
                         "value": "; ".join(f"{k}: {_vq((v[k] or {}).get('volume_percent'))}" for k in vk
                                            if isinstance(v[k], Mapping))})
        if isinstance(m.get("eud"), Mapping):
            rows.append({"label": "EUD", "value": _vq(m["eud"])})
        b = m.get("bed")
        if isinstance(b, Mapping):
            rows.append({"label": "Voxel BED: mean / median / maximum",
                         "value": f"{_vq(b.get('mean'))} / {_vq(b.get('median'))} / {_vq(b.get('max'))}"})
            if isinstance(b.get("eubed"), Mapping):
                rows.append({"label": "EUBED", "value": _vq(b["eubed"])})
    return rows



# --------------------------------------------------------------------------------------------
# quantitative imaging (results["imaging"], display["imaging"])
# --------------------------------------------------------------------------------------------

_IMAGING_SHOWN = {"timepoints", "registration", "regions", "regions_source", "grid", "activity_uncertainty_pct"}


def _imaging_timepoints(im: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, tp in enumerate(im.get("timepoints") or []):
        if not isinstance(tp, Mapping):
            continue
        ws = tp.get("warnings")
        out.append({
            "index": i + 1,
            "time_h": format_number(tp.get("time_h"), 5),
            "acquisition_time": str(tp.get("acquisition_time") or _DASH),
            "time_source": str(tp.get("time_source") or _DASH),
            "series": str(tp.get("series_description") or _DASH),
            "modality": str(tp.get("modality") or _DASH),
            "unit": str(tp.get("unit") or _DASH),
            "quantification": str(tp.get("quantification") or _DASH),
            "warnings": [str(w) for w in ws] if isinstance(ws, (list, tuple)) else [],
        })
    return out


def _imaging_registration(im: Mapping[str, Any], times: Sequence[str]) -> dict[str, Any]:
    rows = []
    any_quality = False
    for r in im.get("registration") or []:
        if not isinstance(r, Mapping):
            continue
        tp = r.get("time_point")
        q = r.get("quality") if isinstance(r.get("quality"), Mapping) else {}
        any_quality = any_quality or bool(q)
        idx = tp if isinstance(tp, int) and not isinstance(tp, bool) else None
        rows.append({
            "time_point": str(idx + 1) if idx is not None else _DASH,
            "time_h": times[idx] if idx is not None and 0 <= idx < len(times) else _DASH,
            "method": str(r.get("method") or _DASH),
            "dice": format_number(q.get("body_dice"), 4) if "body_dice" in q else _DASH,
            "msd": format_number(q.get("body_mean_surface_distance_mm"), 3) if "body_mean_surface_distance_mm" in q else _DASH,
            "hd95": format_number(q.get("body_hd95_mm"), 3) if "body_hd95_mm" in q else _DASH,
            "transform": _pretty(r["transform"]) if isinstance(r.get("transform"), (Mapping, list)) else None,
        })
    return {"rows": rows, "quality": any_quality}


def _imaging_regions(doc: Mapping[str, Any], im: Mapping[str, Any], n_tp: int) -> dict[str, Any]:
    regs = im.get("regions") if isinstance(im.get("regions"), Mapping) else {}
    anchors = {str(n): f"region-{i + 1}" for i, n in enumerate((doc.get("regions") or {}).keys())}
    times: list[str] = [format_number(tp.get("time_h"), 5) for tp in im.get("timepoints") or [] if isinstance(tp, Mapping)]
    rows = []
    for name, r in regs.items():
        if not isinstance(r, Mapping):
            continue
        acts = r.get("activities_mbq") if isinstance(r.get("activities_mbq"), (list, tuple)) else []
        if not times and isinstance(r.get("times_h"), (list, tuple)):
            times = [format_number(t, 5) for t in r["times_h"]]
        v, m = r.get("volume_ml"), r.get("mass_g_from_ct")
        rows.append({
            "name": str(name),
            "anchor": anchors.get(str(name)),
            "volume": format_number(v, 4) if _finite(v) else _DASH,
            "mass": format_number(m, 4) if _finite(m) else _DASH,
            "activities": [format_number(a, 4) for a in acts],
        })
    n = max([len(times), n_tp] + [len(r["activities"]) for r in rows])
    times = list(times) + [_DASH] * (n - len(times))
    for r in rows:
        r["activities"] = r["activities"] + [_DASH] * (n - len(r["activities"]))
    return {"times": times, "rows": rows}


def _imaging_info(im: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "regions_source" in im:
        rows.append({"label": "Regions from", "value": str(im.get("regions_source") or _DASH), "pre": False, "bullets": None})
    grid = im.get("grid") if isinstance(im.get("grid"), Mapping) else None
    if grid:
        shape, sp = grid.get("shape_zyx"), grid.get("spacing_mm")
        parts = []
        if isinstance(shape, (list, tuple)):
            parts.append(" × ".join(format_number(x) for x in shape) + " voxels (z × y × x)")
        if isinstance(sp, (list, tuple)):
            parts.append(" × ".join(format_number(x, 4) for x in sp) + " mm (x × y × z)")
        rows.append({"label": "Common grid (first time point)", "value": "; ".join(parts) or _pretty(grid),
                     "pre": False, "bullets": None})
    pct = im.get("activity_uncertainty_pct")
    if "activity_uncertainty_pct" in im:
        rows.append({"label": "Standard uncertainty of each region activity (delineation, noise)",
                     "value": f"{format_number(pct)} %" if _finite(pct) else _DASH, "pre": False, "bullets": None})
    rows.extend(_kv_rows(im, skip=_IMAGING_SHOWN))
    return rows


def _imaging_images(display: Mapping[str, Any] | None, im: Mapping[str, Any],
                    times: Sequence[str]) -> dict[str, Any] | None:
    """The activity-slice figures from the display data (None: no display data given)."""
    if not isinstance(display, Mapping) or not isinstance(display.get("imaging"), Mapping):
        return None
    slices = [s for s in display["imaging"].get("slices") or [] if isinstance(s, Mapping)]
    grid = im.get("grid") if isinstance(im.get("grid"), Mapping) else {}
    spacing = display["imaging"].get("spacing_mm") or grid.get("spacing_mm")
    order = [str(n) for n in (im.get("regions") or {})] if isinstance(im.get("regions"), Mapping) else []
    # one linear colour scale for all time points (so that the images show the kinetics)
    vmax = None
    for s in slices:
        try:
            a = np.asarray(s.get("activity_bq_per_ml"), dtype=np.float64)
        except (TypeError, ValueError):
            continue
        a = a[np.isfinite(a)]
        if a.size and (vmax is None or float(a.max()) > vmax):
            vmax = float(a.max())
    vmax_k = vmax / 1e3 if vmax is not None and vmax > 0 else None
    out = []
    for i, s in enumerate(slices):
        masks = s.get("regions") if isinstance(s.get("regions"), Mapping) else {}
        names = [n for n in order if n in masks] + [str(n) for n in masks if str(n) not in order]
        z = s.get("z")
        zt = format_number(z) if z is not None else "?"
        t = times[i] if i < len(times) else _DASH
        img = plots.activity_overlay(s.get("activity_bq_per_ml"), [(n, masks.get(n)) for n in names], spacing,
                                     f"time point {i + 1} ({t} h after administration), axial slice z = {zt}",
                                     vmax_kbq_per_ml=vmax_k)
        if img is None:
            continue
        present = []
        for n in names:
            try:
                if np.any(np.asarray(masks.get(n), dtype=np.float64) >= 0.5):
                    present.append(n)
            except (TypeError, ValueError):
                continue
        out.append({"img": img, "index": i + 1, "time_h": t, "z": zt, "regions": ", ".join(present) or "none"})
    return {"images": out, "vmax": f"{format_sig(vmax_k, 3)} kBq/mL" if _finite(vmax_k) else _DASH}


def _imaging(doc: Mapping[str, Any], display: Mapping[str, Any] | None) -> dict[str, Any] | None:
    im = doc.get("imaging")
    if not isinstance(im, Mapping):
        return None
    tps = _imaging_timepoints(im)
    times = [t["time_h"] for t in tps]
    return {
        "timepoints": tps,
        "registration": _imaging_registration(im, times),
        "regions": _imaging_regions(doc, im, len(tps)),
        "info": _imaging_info(im),
        "images": _imaging_images(display, im, times),
    }


# planar / whole-body imaging (results["planar_imaging"])
# --------------------------------------------------------------------------------------------

_PLANAR_SHOWN = {"timepoints", "regions", "method", "scatter", "background", "calibration", "attenuation",
                 "activity_uncertainty_pct", "rois"}


def _q(d: Any, digits: int = 4) -> str:
    """'value ± u' of a Quantity JSON (or a bare number)."""
    if isinstance(d, Mapping):
        v, u = d.get("value"), d.get("uncertainty")
        if _finite(v):
            return format_number(v, digits) + (f" ± {format_number(u, 2)}" if _finite(u) else "")
        return _DASH
    return format_number(d, digits) if _finite(d) else _DASH


def _planar(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The conjugate-view quantification per region and time point: net counts per view,
    transmission, activity with its uncertainty (counting and delineation; the calibration is
    the correlated component), and the hybrid planar/SPECT scaling where used."""
    pl = doc.get("planar_imaging")
    if not isinstance(pl, Mapping):
        return None
    tps = [tp for tp in pl.get("timepoints") or [] if isinstance(tp, Mapping)]
    timepoints = [{
        "index": i + 1, "time_h": format_number(tp.get("time_h"), 5),
        "acquisition_time": str(tp.get("acquisition_time") or _DASH),
        "image_type": str(tp.get("image_type") or _DASH),
        "files": ", ".join(str(f) for f in tp.get("files") or []) or _DASH,
        "windows": "; ".join(f"{k}: {v}" for k, v in (tp.get("windows") or {}).items() if v) or _DASH,
        "durations": "; ".join(f"{k} {format_number((v or {}).get('value'), 5)} s"
                               for k, v in (tp.get("durations_s") or {}).items() if isinstance(v, Mapping)) or _DASH,
    } for i, tp in enumerate(tps)]
    regions = []
    for name, r in (pl.get("regions") or {}).items():
        if not isinstance(r, Mapping):
            continue
        rows = []
        for tp in r.get("timepoints") or []:
            if not isinstance(tp, Mapping):
                continue
            views = tp.get("views") if isinstance(tp.get("views"), Mapping) else {}

            def net(v: str) -> str:
                d = views.get(v) if isinstance(views.get(v), Mapping) else {}
                return _q(d.get("net") or d.get("roi_primary"), 5)

            rows.append({"time_h": format_number(tp.get("time_h"), 5), "anterior": net("anterior"),
                         "posterior": net("posterior"), "transmission": _q(tp.get("transmission"), 4),
                         "thickness": format_number(tp.get("body_thickness_cm"), 4) if _finite(tp.get("body_thickness_cm")) else _DASH,
                         "activity": _q(tp.get("activity"), 4)})
        hy = r.get("hybrid_spect") if isinstance(r.get("hybrid_spect"), Mapping) else None
        regions.append({
            "name": str(name), "rows": rows,
            "self_attenuation": format_number(r.get("self_attenuation_factor"), 4) if _finite(r.get("self_attenuation_factor")) else _DASH,
            "hybrid": None if hy is None else {
                "spect_time_h": format_number(hy.get("spect_time_h"), 5),
                "spect_activity": format_number(hy.get("spect_activity_mbq"), 4),
                "planar_at_spect": format_number(hy.get("planar_at_spect_time_mbq"), 4),
                "scale": _q(hy.get("scale_factor"), 4),
                "scale_pct": format_number(hy.get("scale_uncertainty_pct"), 3),
                "method": str(hy.get("method") or _DASH), "reference": str(hy.get("reference") or _DASH)},
        })
    cal = pl.get("calibration") if isinstance(pl.get("calibration"), Mapping) else {}
    att = pl.get("attenuation") if isinstance(pl.get("attenuation"), Mapping) else {}
    methods = [
        ("Method", str(pl.get("method") or _DASH)),
        ("Scatter", str(pl.get("scatter") or _DASH)),
        ("Background", str(pl.get("background") or _DASH)),
        ("Attenuation", str(att.get("method") or _pretty(att) if att else _DASH)),
        ("Calibration", (f"{format_number(cal.get('sensitivity_cps_per_mbq'))} cps/MBq, "
                         f"u = {format_number(cal.get('uncertainty_pct'))} %" + (f"; {cal['note']}" if cal.get("note") else ""))
         if cal else _DASH),
        ("Delineation uncertainty per activity", f"{format_number(pl.get('activity_uncertainty_pct'))} %"
         if _finite(pl.get("activity_uncertainty_pct")) else _DASH),
    ]
    rois = pl.get("rois") if isinstance(pl.get("rois"), Mapping) else {}
    if rois:
        methods.append(("ROIs", f"{rois.get('file', _DASH)} (SHA-256 {rois.get('sha256', _DASH)})"))
    return {"timepoints": timepoints, "regions": regions, "methods": methods,
            "other": _kv_rows(pl, skip=_PLANAR_SHOWN)}


def build_context(results: Mapping[str, Any], display: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The template context for ``results`` (a deep copy is read; the argument is not touched)
    and the optional display data (``CaseResult.display``: image slices for the figures)."""
    doc = copy.deepcopy(dict(results))
    regions = doc.get("regions") or {}
    extra = {k: v for k, v in doc.items() if k not in _TOP_KEYS_SHOWN}
    return {
        "header": _header(doc),
        "warnings": _warnings(doc),
        "summary": _summary(doc),
        "regions": [_region(doc, i, name, r) for i, (name, r) in enumerate(regions.items())],
        "cumulative": _cumulative(doc),
        "voxel": _voxel(doc, display),
        "uncertainty": _uncertainty(doc),
        "methods": _methods(doc),
        "calibration_pct": (doc.get("methods") or {}).get("calibration_uncertainty_pct"),
        "imaging": _imaging(doc, display),
        "planar": _planar(doc),
        "nuclide": _nuclide(doc),
        "icrp107_notice": ICRP107_NOTICE,
        "provenance": _provenance(doc),
        "references": _references(doc),
        "extra": _kv_rows({k: v for k, v in extra.items() if k != "imaging"}),
    }


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    return env


def render_report(results: Mapping[str, Any], display: Mapping[str, Any] | None = None) -> str:
    """Render the results document as one self-contained HTML page.

    Parameters
    ----------
    results : the results document (``CaseResult.results``; ``results.json`` as loaded), valid
        against ``schemas/results.schema.json``. It is not modified.
    display : optional display data (``CaseResult.display``), used only for figures that the
        results document does not hold: ``display["voxel"]`` with the axial ``slices`` of the
        dose map (``dose_gy``, ``regions``, ``z``), ``region_names``, ``spacing_mm`` and
        ``max_dose_gy`` (:func:`mrtdose.workflow.voxel.slices_for_report`), and
        ``display["imaging"]`` with one axial ``slices`` entry per imaging time point
        (``z``, ``activity_bq_per_ml``: 2D array, ``regions``: name -> 2D fractional mask;
        :func:`mrtdose.workflow.imaging.quantify`). Without it the report is complete but for
        the dose overlay and activity images, and says where the maps are.

    Returns
    -------
    str
        The HTML document (UTF-8 text; inline CSS and base64 PNG plots, no scripts, no external
        assets). Every user string is HTML-escaped.
    """
    return _environment().get_template("report.html.j2").render(**build_context(results, display))
