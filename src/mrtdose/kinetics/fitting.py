"""Weighted least-squares fitting of time-activity curves, with covariance and model selection.

Method
------
* Objective: chi^2 = sum ((A_i - f(t_i; p)) / sigma_i)^2, i.e. weights w_i = 1/sigma_i^2 with
  sigma_i the *absolute* standard uncertainty of each measured activity (MBq), minimised by
  ``scipy.optimize.least_squares`` (trust-region reflective, analytic Jacobian, box bounds) from
  several starting points (:meth:`KineticModel.initial_guesses`); the lowest chi^2 wins.
* Covariance of the parameters: C = (J^T W J)^-1 with J the Jacobian at the optimum. The sigmas
  are absolute standard uncertainties from the uncertainty budget of the activity measurement, so
  C is *not* rescaled by the reduced chi^2 (GUM, JCGM 100:2008, law of propagation of uncertainty;
  EANM guidance on uncertainty analysis, Gear et al. 2018, EJNMMI 45:2456, section on TAC
  fitting). The reduced chi^2 and its p-value are reported so that over-dispersion (residuals
  larger than the stated uncertainties: underestimated sigmas or an inadequate model) is visible,
  and a warning is recorded when p < 0.05.
* TIA uncertainty: first-order propagation u^2(TIA) = g^T C g with g = dTIA/dp analytic
  (:meth:`KineticModel.integral_gradient`).
* Model selection (:func:`fit_auto`): corrected Akaike information criterion
  AICc = -2 ln L + 2k + 2k(k+1)/(n-k-1) (Burnham & Anderson 2002, Model Selection and Multimodel
  Inference, 2nd ed., eq. 2.2 and 2.14; applied to TACs by Glatting et al. 2007, Med Phys 34:4068
  and Kletting et al. 2013, Med Phys 40:102504). With known sigma the Gaussian likelihood gives
  -2 ln L = chi^2 + sum ln(2 pi sigma_i^2); k is the number of model parameters. AICc needs
  n - k - 1 > 0.

Input conventions
-----------------
Times must be > 0 h (after administration), activities > 0 MBq, sigmas > 0 MBq, all finite.
Times given out of order are sorted (with their activities and sigmas) and a warning is recorded;
two measurements at the same time are an error (combine them first, e.g. by their weighted mean).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats
from scipy.optimize import least_squares

from mrtdose.errors import FitError, InputError
from mrtdose.kinetics.models import (
    LN2,
    PARAMETRIC_MODELS,
    RATE_MAX_PER_H,
    KineticModel,
    get_model,
)
from mrtdose.quantities import Quantity

#: p-value of the chi^2 test below which a warning about over-dispersion is recorded.
CHI2_WARN_P = 0.05
#: In :func:`fit_auto`, a candidate whose chi^2 test p-value is below this is rejected as a gross
#: misfit (the model cannot describe the data within many standard uncertainties).
CHI2_REJECT_P = 1e-3
#: In :func:`fit_auto`, a candidate whose TIA has a relative standard uncertainty above this is
#: rejected (the data do not determine that model's integral).
MAX_TIA_CV = 1.0
#: Budget of function evaluations per start is MAX_NFEV_PER_PARAM * k + 100: a well-posed fit
#: converges in a few tens; one that does not has wandered onto a degenerate ridge (e.g. two rates
#: merging with diverging amplitudes) and is reported as not converged.
MAX_NFEV_PER_PARAM = 60
#: A warning is recorded when more than this fraction of the TIA lies after the last measurement.
EXTRAPOLATED_FRACTION_WARN = 0.25


def _ro(x) -> np.ndarray:
    a = np.array(x, dtype=float)
    a.setflags(write=False)
    return a


def _clean(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True, eq=False)
class FitResult:
    """A fitted (or trapezoid-integrated) time-activity curve and its time-integrated activity.

    Attributes
    ----------
    model : model name (see :data:`mrtdose.kinetics.models.MODELS`).
    formula : the model formula in plain text.
    param_names, params, covariance : parameters and their covariance matrix (absolute sigma).
        For the trapezoid models the parameters are the measured activities and the covariance
        is diag(sigma^2).
    nonparametric : True for the trapezoid models.
    times_h, activities_mbq, sigmas_mbq : the data, sorted by time.
    chi2, dof : weighted sum of squared residuals and degrees of freedom (n - k).
    reduced_chi2 : chi2/dof (None if dof = 0).
    chi2_p_value : P(chi^2_dof >= chi2) (None if dof = 0).
    aicc : corrected Akaike information criterion (None where n - k - 1 <= 0 or nonparametric).
    r2 : weighted coefficient of determination 1 - chi2 / sum w (A - mean_w A)^2 (None for the
        trapezoid models, which interpolate the data).
    residuals_mbq : A_i - f(t_i); normalised_residuals: (A_i - f(t_i)) / sigma_i.
    tia_mbq_h, tia_uncertainty_mbq_h : TIA from 0 to infinity and its standard uncertainty.
    extrapolated_fraction : the fraction of the TIA after the last measurement.
    effective_half_lives_h : named half-lives of the model's phases (e.g. "effective",
        "terminal", "uptake"), in hours.
    warnings : everything the user should know before signing off the number.
    candidates : for :func:`fit_auto`, one dict per candidate model (model, n_params, aicc,
        akaike_weight, accepted, reason, tia_mbq_h, tia_uncertainty_mbq_h).
    decay_constant_per_h, allow_below_physical : the physical constraint used.
    """

    model: str
    formula: str
    param_names: tuple[str, ...]
    params: np.ndarray
    covariance: np.ndarray
    nonparametric: bool
    times_h: np.ndarray
    activities_mbq: np.ndarray
    sigmas_mbq: np.ndarray
    chi2: float
    dof: int
    reduced_chi2: float | None
    chi2_p_value: float | None
    aicc: float | None
    r2: float | None
    residuals_mbq: np.ndarray
    normalised_residuals: np.ndarray
    tia_mbq_h: float
    tia_uncertainty_mbq_h: float
    extrapolated_fraction: float
    effective_half_lives_h: Mapping[str, float]
    warnings: tuple[str, ...]
    candidates: tuple[Mapping[str, Any], ...]
    decay_constant_per_h: float
    allow_below_physical: bool
    model_object: KineticModel = field(repr=False)
    #: How the model was chosen (auto selection); empty for a model named in the case.
    selection: str = ""

    # -- convenience ------------------------------------------------------------------------

    @property
    def residuals(self) -> np.ndarray:
        """Alias of :attr:`residuals_mbq`."""
        return self.residuals_mbq

    @property
    def param_uncertainties(self) -> np.ndarray:
        """Standard uncertainties of the parameters (sqrt of the covariance diagonal)."""
        return np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))

    @property
    def tia_relative_uncertainty(self) -> float:
        return self.tia_uncertainty_mbq_h / self.tia_mbq_h if self.tia_mbq_h else math.nan

    def activity(self, t_h) -> np.ndarray:
        """The fitted curve A(t) (MBq) at ``t_h`` (h)."""
        return self.model_object.activity(t_h, self.params)

    def tia(self, params=None) -> float:
        """TIA (MBq h) for the given parameters (default: the fitted ones), so that callers can
        propagate numerically or by sampling the parameters (e.g. from the covariance)."""
        p = self.params if params is None else np.asarray(params, dtype=float)
        return float(self.model_object.integral(p))

    def tia_gradient(self) -> np.ndarray:
        """dTIA/dparams at the fitted parameters."""
        return self.model_object.integral_gradient(self.params)

    def exponential_terms(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(coefficients MBq, rates 1/h) with A(t) = sum c_i exp(-r_i t), or None (trapezoid)."""
        return self.model_object.exponential_terms(self.params)

    def tia_quantity(self) -> Quantity:
        """The TIA as a :class:`~mrtdose.quantities.Quantity` (MBq h)."""
        return Quantity(self.tia_mbq_h, self.tia_uncertainty_mbq_h, "MBq h", method=f"TAC fit: {self.model}")

    def to_json(self) -> dict[str, Any]:
        """Parameters, covariance and fit statistics as a plain JSON-able dict (NaN/inf -> null)."""

        def arr(x):
            return [_clean(v) for v in np.asarray(x, dtype=float).reshape(-1)]

        return {
            "model": self.model,
            "formula": self.formula,
            "nonparametric": self.nonparametric,
            "param_names": list(self.param_names),
            "params": arr(self.params),
            "param_uncertainties": arr(self.param_uncertainties),
            "covariance": [arr(row) for row in self.covariance],
            "times_h": arr(self.times_h),
            "activities_mbq": arr(self.activities_mbq),
            "sigmas_mbq": arr(self.sigmas_mbq),
            "residuals_mbq": arr(self.residuals_mbq),
            "chi2": _clean(self.chi2),
            "dof": int(self.dof),
            "reduced_chi2": _clean(self.reduced_chi2),
            "chi2_p_value": _clean(self.chi2_p_value),
            "aicc": _clean(self.aicc),
            "r2": _clean(self.r2),
            "tia": {"value": _clean(self.tia_mbq_h), "uncertainty": _clean(self.tia_uncertainty_mbq_h), "unit": "MBq h"},
            "extrapolated_fraction": _clean(self.extrapolated_fraction),
            "effective_half_lives_h": {k: _clean(v) for k, v in self.effective_half_lives_h.items()},
            "decay_constant_per_h": _clean(self.decay_constant_per_h),
            "allow_below_physical": self.allow_below_physical,
            "warnings": list(self.warnings),
            "selection": self.selection,
            "candidates": [{k: (_clean(v) if isinstance(v, float) else v) for k, v in c.items()} for c in self.candidates],
        }


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def _vector(x, what: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be numbers, got {x!r}") from None
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise InputError(f"{what} must be a one-dimensional sequence, got shape {a.shape}")
    return a


def validate_tac(times_h, activities_mbq, sigmas_mbq, decay_constant_per_h: float):
    """Check and sort a time-activity curve; returns (t, a, sigma, lambda, warnings)."""
    t = _vector(times_h, "times_h")
    a = _vector(activities_mbq, "activities_mbq")
    s = _vector(sigmas_mbq, "sigmas_mbq")
    if s.size == 1 and a.size > 1:
        raise InputError("sigmas_mbq must give one standard uncertainty per activity")
    if not (t.size == a.size == s.size):
        raise InputError(f"times_h, activities_mbq and sigmas_mbq must have the same length, got {t.size}, {a.size}, {s.size}")
    if t.size == 0:
        raise InputError("no measurements given")
    for name, v in (("times_h", t), ("activities_mbq", a), ("sigmas_mbq", s)):
        bad = ~np.isfinite(v)
        if np.any(bad):
            raise InputError(f"{name} contains non-finite values (NaN or inf) at positions {np.flatnonzero(bad).tolist()}")
    if np.any(t <= 0):
        raise InputError(
            f"times must be > 0 h after administration; got {t[t <= 0].tolist()} h "
            "(a measurement at or before the administration cannot be used)"
        )
    if np.any(a <= 0):
        raise InputError(
            f"activities must be > 0 MBq; got {a[a <= 0].tolist()} MBq. A zero or negative activity "
            "(e.g. after background subtraction) is below the detection limit: remove that point or "
            "replace it by a measured positive value with its uncertainty"
        )
    if np.any(s <= 0):
        raise InputError(f"standard uncertainties must be > 0 MBq; got {s[s <= 0].tolist()} MBq")
    lam = float(decay_constant_per_h)
    if not (math.isfinite(lam) and lam > 0):
        raise InputError(f"decay_constant_per_h must be a positive number, got {decay_constant_per_h!r}")
    warnings: list[str] = []
    order = np.argsort(t, kind="stable")
    if np.any(np.diff(t) < 0):
        warnings.append(
            f"times were not in increasing order ({t.tolist()} h); they were sorted together with "
            "their activities — check the input for a mistyped date or time"
        )
        t, a, s = t[order], a[order], s[order]
    dup = np.flatnonzero(np.diff(t) == 0)
    if dup.size:
        raise InputError(
            f"two measurements at the same time ({t[dup].tolist()} h): combine them first (e.g. their "
            "uncertainty-weighted mean) or correct the times"
        )
    return t, a, s, lam, warnings


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------


def _aicc(chi2: float, sigmas: np.ndarray, k: int) -> float | None:
    n = sigmas.size
    if n - k - 1 <= 0:
        return None
    m2lnl = chi2 + float(np.sum(np.log(2 * math.pi * sigmas**2)))
    return m2lnl + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def _least_squares(model: KineticModel, t, a, s, lam, allow_below_physical):
    lo, hi = model.bounds(lam, allow_below_physical)
    starts = model.initial_guesses(t, a, lam, allow_below_physical)
    if not starts:
        raise FitError(f"model '{model.name}': no starting values could be formed from the data")

    def fun(p):
        return (model.activity(t, p) - a) / s

    def jac(p):
        return model.jacobian(t, p) / s[:, None]

    best = None
    messages = []
    span = hi - lo
    eps = np.where(np.isfinite(span), 1e-9 * span, 1e-9 * (1 + np.abs(lo)))
    for x0 in starts:
        x0 = np.clip(np.asarray(x0, dtype=float), lo + eps, np.where(np.isfinite(hi), hi - eps, np.inf))
        try:
            res = least_squares(fun, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac",
                                ftol=1e-10, xtol=1e-10, gtol=1e-10, max_nfev=MAX_NFEV_PER_PARAM * model.n_params + 100)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:  # pragma: no cover
            messages.append(str(exc))
            continue
        if res.status <= 0 or not np.all(np.isfinite(res.x)) or not math.isfinite(res.cost):
            messages.append(res.message)
            continue
        if best is None or res.cost < best.cost:
            best = res
    if best is None:
        raise FitError(
            f"model '{model.name}' did not converge from {len(starts)} starting points"
            + (f" ({'; '.join(sorted(set(messages)))})" if messages else "")
        )
    return best, lo, hi


def _covariance(jw: np.ndarray, model: KineticModel) -> np.ndarray:
    jtj = jw.T @ jw
    # Scale to unit diagonal before judging the conditioning (parameters differ in magnitude).
    d = np.sqrt(np.diag(jtj))
    if np.any(d == 0) or not np.all(np.isfinite(jtj)):
        raise FitError(
            f"model '{model.name}': a parameter has no influence on the fitted curve at the data "
            "points (e.g. a rate at its bound or an amplitude of zero); the parameters are not "
            "identifiable from these data — use a simpler model"
        )
    corr = jtj / np.outer(d, d)
    if np.linalg.cond(corr) > 1e12:
        raise FitError(
            f"model '{model.name}': the parameters are not identifiable from these data (the "
            "information matrix J^T W J is singular); use a simpler model or more time points"
        )
    return np.linalg.inv(corr) / np.outer(d, d)


def _finish(model: KineticModel, params, cov, t, a, s, lam, allow_below_physical, warnings, *,
            dof: int, aicc: float | None, r2_defined: bool) -> FitResult:
    fitted = model.activity(t, params)
    resid = a - fitted
    chi2 = float(np.sum((resid / s) ** 2))
    tia = float(model.integral(params))
    if not math.isfinite(tia) or tia <= 0:
        raise FitError(
            f"model '{model.name}' gives an implausible TIA ({tia:.4g} MBq h): it must be finite "
            "and positive; check the data or use another model"
        )
    grad = model.integral_gradient(params)
    var = float(grad @ cov @ grad)
    u_tia = math.sqrt(var) if var >= 0 else math.nan
    if not math.isfinite(u_tia):
        raise FitError(f"model '{model.name}': the TIA uncertainty is not finite; the fit is not usable")
    tail = float(model.integral(params, t0_h=float(t[-1])))
    reduced = chi2 / dof if dof > 0 else None
    p_value = float(stats.chi2.sf(chi2, dof)) if dof > 0 else None
    if r2_defined:
        w = 1.0 / s**2
        mean_w = float(np.sum(w * a) / np.sum(w))
        ss_tot = float(np.sum(w * (a - mean_w) ** 2))
        r2 = 1.0 - chi2 / ss_tot if ss_tot > 0 else None
    else:
        r2 = None
    warnings = list(warnings)
    if dof == 0 and not model.nonparametric:
        warnings.append(
            f"{t.size} points for {model.n_params} parameters: no degrees of freedom, the curve passes "
            "through the points and its goodness of fit cannot be assessed"
        )
    if p_value is not None and p_value < CHI2_WARN_P:
        warnings.append(
            f"reduced chi2 = {reduced:.3g} (p = {p_value:.2g}): the residuals are larger than the stated "
            "uncertainties — either the activity uncertainties are underestimated or the model does not "
            "describe the data; the covariance uses the stated (absolute) uncertainties and is not rescaled"
        )
    if u_tia / tia > 1.0:
        warnings.append(f"the TIA relative standard uncertainty is {100 * u_tia / tia:.0f} %: the data do not determine it")
    if t.size >= 2 and a[-1] > a[-2]:
        warnings.append(
            f"the last measurement ({a[-1]:.4g} MBq at {t[-1]:g} h) is higher than the one before: the "
            "activity may not have peaked, and the tail after the last point is an extrapolation"
        )
    frac = tail / tia
    if frac > EXTRAPOLATED_FRACTION_WARN:
        warnings.append(f"{100 * frac:.0f} % of the TIA lies after the last measurement ({t[-1]:g} h) and is extrapolated")
    half_lives = model.half_lives_h(params)
    if not model.nonparametric:
        lo, hi = model.bounds(lam, allow_below_physical)
        rate_idx = list(getattr(model, "_rate_idx", ()))
        for i in rate_idx:
            if math.isclose(params[i], lo[i], rel_tol=1e-6) and not allow_below_physical:
                warnings.append(
                    f"{model.param_names[i]} = lambda_phys (the physical-decay bound is active: no measurable "
                    "biological clearance in that phase); its uncertainty is a linearisation at the bound"
                )
            if params[i] >= RATE_MAX_PER_H * (1 - 1e-6):
                warnings.append(f"{model.param_names[i]} is at its upper bound: that phase is faster than the data resolve")
        if allow_below_physical:
            rates = params[rate_idx]
            if np.min(rates) < lam:
                warnings.append(
                    f"the terminal rate {np.min(rates):.4g} /h is below the physical decay constant "
                    f"{lam:.4g} /h (allowed by allow_below_physical=True): the tracer would outlast its own "
                    "physical decay — check for a rising tail, contamination or a calibration drift"
                )
    return FitResult(
        model=model.name,
        formula=model.formula,
        param_names=tuple(model.param_names),
        params=_ro(params),
        covariance=_ro(cov),
        nonparametric=model.nonparametric,
        times_h=_ro(t),
        activities_mbq=_ro(a),
        sigmas_mbq=_ro(s),
        chi2=chi2,
        dof=int(dof),
        reduced_chi2=reduced,
        chi2_p_value=p_value,
        aicc=aicc,
        r2=r2,
        residuals_mbq=_ro(resid),
        normalised_residuals=_ro(resid / s),
        tia_mbq_h=tia,
        tia_uncertainty_mbq_h=u_tia,
        extrapolated_fraction=frac,
        effective_half_lives_h=MappingProxyType(dict(half_lives)),
        warnings=tuple(warnings),
        candidates=(),
        decay_constant_per_h=lam,
        allow_below_physical=bool(allow_below_physical),
        model_object=model,
    )


def _fit_validated(model_name: str, t, a, s, lam, allow_below_physical, warnings, trapezoid_start) -> FitResult:
    model = get_model(model_name, times_h=t, decay_constant_per_h=lam, start=trapezoid_start,
                      allow_below_physical=allow_below_physical)
    n = t.size
    if n == 1:
        raise FitError(
            "a single measurement cannot define a time-activity curve: use a single-time-point method "
            "(mrtdose.kinetics.stp: hanscheid, madsen or population_prior)"
        )
    if n < model.min_points:
        raise FitError(
            f"model '{model.name}' has {model.n_params} parameters and needs at least {model.min_points} "
            f"time points; got {n}"
        )
    if model.nonparametric:
        params = a.copy()
        cov = np.diag(s**2)
        w = list(warnings)
        k, _, clamped = model.tail_rate(params)  # type: ignore[attr-defined]
        if clamped:
            w.append(
                "the last two points fall more slowly than physical decay (or rise): the tail uses "
                "the physical decay constant instead"
            )
        if k < lam:  # only possible with allow_below_physical=True
            w.append(f"tail rate {k:.4g} /h is below the physical decay constant {lam:.4g} /h "
                     "(allowed by allow_below_physical=True)")
        w.append(
            "trapezoid integration: the uncertainty includes the measurement uncertainties of the "
            "activities only, not the error of the piecewise-linear and tail approximations"
        )
        return _finish(model, params, cov, t, a, s, lam, allow_below_physical, w, dof=0, aicc=None, r2_defined=False)

    res, lo, hi = _least_squares(model, t, a, s, lam, allow_below_physical)
    perm = model.canonical_order(res.x)
    params = res.x[perm]
    jw = model.jacobian(t, params) / s[:, None]
    cov = _covariance(jw, model)
    # The fitted curve must stay non-negative (it is by construction when the uptake rate is the
    # fastest; check it on a dense grid to catch a degenerate ordering).
    grid = np.concatenate([np.linspace(0.0, t[-1], 400), t[-1] * np.geomspace(1.0, 100.0, 200)])
    if np.min(model.activity(grid, params)) < -1e-9 * float(np.max(a)):
        raise FitError(f"model '{model.name}': the fitted curve becomes negative; the fit is not physical")
    chi2 = float(np.sum(((a - model.activity(t, params)) / s) ** 2))
    aicc = _aicc(chi2, s, model.n_params)
    return _finish(model, params, cov, t, a, s, lam, allow_below_physical, warnings,
                   dof=n - model.n_params, aicc=aicc, r2_defined=True)


def fit_model(model_name: str, times_h, activities_mbq, sigmas_mbq, *, decay_constant_per_h: float,
              allow_below_physical: bool = False, trapezoid_start: str = "zero") -> FitResult:
    """Fit one model (or integrate with a trapezoid model) and return a :class:`FitResult`.

    Parameters
    ----------
    model_name : one of :data:`mrtdose.kinetics.models.MODELS`.
    times_h : measurement times after administration (h), > 0.
    activities_mbq : measured activities (MBq), > 0 (not decay-corrected).
    sigmas_mbq : absolute standard uncertainties of the activities (MBq), > 0.
    decay_constant_per_h : physical decay constant lambda_phys = ln 2 / T_phys (1/h).
    allow_below_physical : allow fitted rates below lambda_phys (off by default; see
        :meth:`KineticModel.bounds`).
    trapezoid_start : "zero" or "constant", the curve before the first point (trapezoid models).

    Raises
    ------
    InputError : bad input (non-finite, times <= 0, activities <= 0, duplicate times...).
    FitError : too few points, no convergence, unidentifiable parameters, implausible result.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([4.0, 24.0, 72.0, 168.0]); lam = np.log(2) / 50
    >>> r = fit_model("mono_exp", t, 100 * np.exp(-lam * t), 0.05 * 100 * np.exp(-lam * t),
    ...               decay_constant_per_h=np.log(2) / 159.5)
    >>> round(r.tia_mbq_h, 2)  # 100 MBq * 50 h / ln 2
    7213.48
    """
    t, a, s, lam, warnings = validate_tac(times_h, activities_mbq, sigmas_mbq, decay_constant_per_h)
    return _fit_validated(model_name, t, a, s, lam, allow_below_physical, warnings, trapezoid_start)


def fit_auto(times_h, activities_mbq, sigmas_mbq, *, decay_constant_per_h: float,
             candidates: Sequence[str] = PARAMETRIC_MODELS, allow_below_physical: bool = False,
             max_tia_cv: float = MAX_TIA_CV, min_chi2_p_value: float = CHI2_REJECT_P) -> FitResult:
    """Fit the candidate models and choose one by AICc, with safeguards.

    Rules
    -----
    * 1 point: :class:`FitError` (use a single-time-point method, :mod:`mrtdose.kinetics.stp`).
    * 2 points: no selection is possible. Falling points: ``mono_exp`` through both; rising or
      equal points: ``trapezoid_physical_tail``; a warning is recorded.
    * 3 or more points: each candidate with n >= k is fitted and *accepted* only if it converged,
      its covariance is finite, its TIA is finite and positive with a relative standard
      uncertainty <= ``max_tia_cv``, its chi^2 test p-value is >= ``min_chi2_p_value`` (no gross
      misfit; dof > 0), its curve is non-negative, and for the uptake models the uptake rate is
      faster than every clearance rate. Among accepted candidates with AICc defined
      (n - k - 1 > 0) the lowest AICc wins (Akaike weights are reported). If no accepted
      candidate has AICc defined (too few points to rank), the accepted one with the fewest
      parameters wins, with a warning. If none is accepted, :class:`FitError` lists the reasons.

    The result's ``candidates`` holds the table of all candidates.
    """
    t, a, s, lam, warnings = validate_tac(times_h, activities_mbq, sigmas_mbq, decay_constant_per_h)
    n = t.size
    names = [str(c).strip().lower() for c in candidates]
    for c in names:
        m = get_model(c, times_h=t, decay_constant_per_h=lam)
        if m.nonparametric:
            raise InputError(f"'{c}' is a trapezoid (non-parametric) model and cannot be ranked by AICc; call fit_model for it")
    if not names:
        raise InputError("no candidate models given")
    if n == 1:
        raise FitError(
            "only one measurement: a curve cannot be fitted. Use a single-time-point method "
            "(mrtdose.kinetics.stp: hanscheid, madsen or population_prior)"
        )
    if n == 2:
        if a[1] < a[0]:
            res = _fit_validated("mono_exp", t, a, s, lam, allow_below_physical, warnings, "zero")
            why = "two falling points: mono-exponential through both (no model selection is possible with 2 points)"
        else:
            res = _fit_validated("trapezoid_physical_tail", t, a, s, lam, allow_below_physical, warnings, "zero")
            why = ("two points that do not fall: trapezoid from (0, 0) with a physical-decay tail (a "
                   "clearance rate cannot be estimated; no model selection is possible with 2 points)")
        cand = ({"model": res.model, "n_params": res.model_object.n_params, "aicc": None, "akaike_weight": None,
                 "accepted": True, "reason": why, "tia_mbq_h": res.tia_mbq_h,
                 "tia_uncertainty_mbq_h": res.tia_uncertainty_mbq_h},)
        return dataclasses.replace(res, warnings=res.warnings + (why,), candidates=cand)

    table: list[dict[str, Any]] = []
    fits: dict[str, FitResult] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        k = get_model(name).n_params
        rows[name] = {"model": name, "n_params": k, "aicc": None, "akaike_weight": None,
                      "accepted": False, "reason": "", "tia_mbq_h": None, "tia_uncertainty_mbq_h": None}
        table.append(rows[name])
    # Candidates that AICc can rank (n - k - 1 > 0) first; the others can only win when no
    # rankable candidate is acceptable, so they are fitted only then.
    rankable = [c for c in names if n - get_model(c).n_params - 1 > 0]
    others = [c for c in names if c not in rankable]
    for group in (rankable, others):
        if group is others and any(rows[c]["accepted"] for c in rankable):
            for c in others:
                k = rows[c]["n_params"]
                rows[c]["reason"] = (f"too few points ({n}) for {k} parameters" if n < k else
                                     f"not fitted: AICc undefined (n - k - 1 = {n - k - 1}) and a rankable model was accepted")
            break
        for name in group:
            row = rows[name]
            model = get_model(name)
            k = model.n_params
            if n < k:
                row["reason"] = f"too few points ({n}) for {k} parameters"
                continue
            try:
                r = _fit_validated(name, t, a, s, lam, allow_below_physical, [], "zero")
            except FitError as exc:
                row["reason"] = f"fit failed: {exc}"
                continue
            row.update(aicc=r.aicc, tia_mbq_h=r.tia_mbq_h, tia_uncertainty_mbq_h=r.tia_uncertainty_mbq_h)
            reason = _rejection(r, model, max_tia_cv, min_chi2_p_value)
            if reason:
                row["reason"] = reason
                continue
            row["accepted"] = True
            row["reason"] = "accepted" if r.aicc is not None else f"accepted, but AICc undefined (n - k - 1 = {n - k - 1})"
            fits[name] = r

    ranked = [row for row in table if row["accepted"] and row["aicc"] is not None]
    if ranked:
        best_aicc = min(row["aicc"] for row in ranked)
        weights = {row["model"]: math.exp(-(row["aicc"] - best_aicc) / 2) for row in ranked}
        total = sum(weights.values())
        for row in ranked:
            row["akaike_weight"] = weights[row["model"]] / total
        chosen = min(ranked, key=lambda row: row["aicc"])
        note = (f"model selected by AICc among {len(ranked)} accepted candidate(s): {chosen['model']} "
                f"(Akaike weight {chosen['akaike_weight']:.2f})")
    else:
        accepted = [row for row in table if row["accepted"]]
        if not accepted:
            lines = "; ".join(f"{row['model']}: {row['reason']}" for row in table)
            raise FitError(
                f"no candidate model is acceptable for these {n} points ({lines}). Check the data, or "
                "integrate the points with fit_model('trapezoid_physical_tail', ...) or 'trapezoid_exp_tail'"
            )
        chosen = min(accepted, key=lambda row: (row["n_params"], fits[row["model"]].chi2))
        note = (f"too few points ({n}) to rank the candidates by AICc (needs n - k - 1 > 0): chose the "
                f"acceptable model with the fewest parameters, {chosen['model']}")
    for row in table:
        if row["model"] == chosen["model"]:
            row["reason"] = "selected: " + row["reason"]
    res = fits[chosen["model"]]
    cand = tuple(MappingProxyType(dict(row)) for row in table)
    # a routine AICc choice is information (shown with the candidates), not a warning; a choice
    # made without ranking is a warning
    extra = () if ranked else (note,)
    return dataclasses.replace(res, warnings=tuple(warnings) + res.warnings + extra, candidates=cand, selection=note)


def _rejection(r: FitResult, model: KineticModel, max_tia_cv: float, min_p: float) -> str:
    """Why a candidate fit is not acceptable ('' if it is)."""
    if not np.all(np.isfinite(r.covariance)):
        return "non-finite parameter covariance"
    cv = r.tia_uncertainty_mbq_h / r.tia_mbq_h
    if not math.isfinite(cv) or cv > max_tia_cv:
        return f"TIA relative uncertainty {100 * cv:.0f} % > {100 * max_tia_cv:.0f} %"
    if r.chi2_p_value is not None and r.chi2_p_value < min_p:
        return f"gross misfit: chi2 = {r.chi2:.3g} for {r.dof} dof (p = {r.chi2_p_value:.2g} < {min_p:g})"
    p = r.params
    if model.name == "bi_exp_uptake" and not p[2] > p[1] * (1 + 1e-6):
        return "uptake rate not faster than the clearance rate: the uptake phase is not identifiable"
    if model.name == "tri_exp" and not p[4] > max(p[1], p[3]) * (1 + 1e-6):
        return "uptake rate not faster than the clearance rates: the uptake phase is not identifiable"
    if np.any(p[list(getattr(model, "_rate_idx", ()))] >= RATE_MAX_PER_H * (1 - 1e-6)):
        return "a rate is at its upper bound: that phase is not resolved by the data"
    return ""


def effective_half_life_h(rate_per_h: float) -> float:
    """T = ln 2 / lambda (h)."""
    return LN2 / rate_per_h


__all__ = ["FitResult", "fit_model", "fit_auto", "validate_tac", "effective_half_life_h"]
