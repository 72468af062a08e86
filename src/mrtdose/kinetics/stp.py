"""Single-time-point (STP) estimates of the time-integrated activity (TIA).

One measurement A(t) at time t after administration cannot define a curve; every STP method adds
an assumption about the kinetics, and the uncertainty it reports must include what that
assumption costs. Each result lists its assumptions, its references and its uncertainty by source
("activity": the measurement; "population_spread": the spread of the effective half-life in the
population; "approximation": the error of the method's formula).

Notation: mono-exponential clearance A(t) = A0 e^{-lambda t}, lambda = ln 2 / T_eff. Its exact
TIA from one point is  TIA = A(t) e^{lambda t} / lambda  (integral of A0 e^{-lambda t} from 0 to
infinity, with A0 = A(t) e^{lambda t}).

Methods
-------
* :func:`hanscheid`: TIA ~ A(t) 2t/ln 2 (Hänscheid et al. 2018, J Nucl Med 59:75, "Dose mapping
  after endoradiotherapy with 177Lu-DOTATATE/DOTATOC by a single measurement after 4 days").
  Derivation of its error (this module): for mono-exponential kinetics the ratio of the
  approximation to the exact TIA is, with x = t / T_eff,

      R(x) = (2t/ln 2) / (e^{lambda t}/lambda) = 2 (ln 2 x) e^{-ln 2 x} / ln 2 = x 2^{1-x}.

  R = 1 exactly at t = T_eff and at t = 2 T_eff; R is largest at t = T_eff/ln 2 = 1.44 T_eff,
  where R = 2/(e ln 2) = 1.0615 (a 6.15 % overestimate); R -> 0 for t << T_eff and t >> T_eff.
  The approximation component of the uncertainty is TIA * sqrt(E[(1/R - 1)^2]), the root mean
  square of the relative difference between the exact and the approximate TIA (bias included,
  since the method does not correct it), with the expectation over the assumed distribution of
  x: the population's log-normal T_eff if one is given, else x uniform on an assumed window.
* :func:`madsen`: TIA = A(t) e^{lambda t}/lambda with a population T_eff (Madsen et al. 2018,
  Med Phys 45:2318, "Technical Note: Single time point dose estimate for exponential
  clearance"); the population spread of T_eff enters by first-order propagation (GUM):
  dTIA/dT_eff = (TIA/T_eff)(1 - lambda t).
* :func:`population_prior`: T_eff log-normally distributed with a given mean and SD (a
  log-normal describes population effective half-lives better than a normal distribution: Hou et
  al. 2021, J Nucl Med 62:1006, "Feasibility of single-time-point dosimetry for
  radiopharmaceutical therapies"); the expected TIA and its SD are computed by numerical
  integration over ln T_eff, which keeps the non-linearity of e^{lambda t}/lambda that the
  first-order propagation of :func:`madsen` misses at large spread. Gauss-Hermite quadrature is
  not used: the expectation over an untruncated log-normal diverges and Gauss-Hermite nodes reach
  into that tail (see :func:`lognormal_expectation`); the population is truncated at 5 SD of
  ln T_eff and integrated by Gauss-Legendre quadrature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from mrtdose.errors import InputError, PhysicsError
from mrtdose.quantities import Quantity

LN2 = math.log(2.0)

REF_HANSCHEID = ("Hänscheid H, et al. Dose mapping after endoradiotherapy with "
                 "177Lu-DOTATATE/DOTATOC by a single measurement after 4 days. J Nucl Med 2018;59:75-81")
REF_MADSEN = ("Madsen MT, et al. Technical Note: Single time point dose estimate "
              "for exponential clearance. Med Phys 2018;45:2318-2324")
REF_HOU = ("Hou X, et al. Feasibility of single-time-point dosimetry for "
           "radiopharmaceutical therapies. J Nucl Med 2021;62:1006-1011")
REF_GUM = "JCGM 100:2008 (GUM), law of propagation of uncertainty"

#: Default window of t/T_eff assumed by :func:`hanscheid` when no population T_eff is given.
#: mrtdose's assumption (not from the paper): the measurement lies between 0.75 and 2.5 effective
#: half-lives after administration; over it R(x) = x 2^{1-x} stays within 0.88 .. 1.06.
HANSCHEID_DEFAULT_WINDOW = (0.75, 2.5)

#: The log-normal population distribution of T_eff is truncated at |z| <= LOGNORMAL_Z_MAX standard
#: deviations of ln T_eff (all but 5.7e-7 of the population); see :func:`lognormal_expectation`.
LOGNORMAL_Z_MAX = 5.0
#: Gauss-Legendre order for the expectations (checked against twice the order).
QUADRATURE_ORDER = 128
QUADRATURE_RTOL = 1e-8
#: A warning is recorded when moving the truncation from 4.5 to 5 SD changes the SD of the TIA
#: factor by more than this: the population spread is then set by the far tail and the reported
#: uncertainty is a lower bound.
TRUNCATION_WARN_RTOL = 0.01


@dataclass(frozen=True, eq=False)
class STPResult:
    """A single-time-point TIA estimate.

    Attributes
    ----------
    method : "hanscheid", "madsen" or "population_prior".
    time_h, activity_mbq, activity_uncertainty_mbq : the measurement.
    tia_mbq_h, uncertainty_mbq_h : TIA (MBq h) and its combined standard uncertainty (k=1).
    tia_per_activity_h : the factor F with TIA = F A(t) (h), so that TIA is linear in A(t).
    components : contributions (MBq h) by source: "activity", "population_spread",
        "approximation"; uncorrelated, so that their root sum of squares is the uncertainty.
    effective_half_life_h, effective_half_life_sd_h : the population T_eff used (None if none).
    assumptions, references, warnings : text for the report.
    """

    method: str
    time_h: float
    activity_mbq: float
    activity_uncertainty_mbq: float
    tia_mbq_h: float
    uncertainty_mbq_h: float
    tia_per_activity_h: float
    components: Mapping[str, float]
    effective_half_life_h: float | None
    effective_half_life_sd_h: float | None
    assumptions: tuple[str, ...]
    references: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def tia(self, activity_mbq: float) -> float:
        """TIA (MBq h) for another measured activity at the same time (the method is linear in
        A(t)), so that callers can propagate the activity uncertainty numerically."""
        return float(activity_mbq) * self.tia_per_activity_h

    @property
    def relative_uncertainty(self) -> float:
        return self.uncertainty_mbq_h / self.tia_mbq_h if self.tia_mbq_h else math.nan

    def tia_quantity(self) -> Quantity:
        """The TIA as a :class:`~mrtdose.quantities.Quantity` with its components."""
        return Quantity(self.tia_mbq_h, self.uncertainty_mbq_h, "MBq h", method=f"STP: {self.method}",
                        components=dict(self.components))

    def to_json(self) -> dict[str, Any]:
        def c(x):
            return None if x is None or not math.isfinite(float(x)) else float(x)

        return {
            "method": self.method,
            "time_h": c(self.time_h),
            "activity": {"value": c(self.activity_mbq), "uncertainty": c(self.activity_uncertainty_mbq), "unit": "MBq"},
            "tia": {"value": c(self.tia_mbq_h), "uncertainty": c(self.uncertainty_mbq_h), "unit": "MBq h"},
            "tia_per_activity_h": c(self.tia_per_activity_h),
            "components": {k: c(v) for k, v in self.components.items()},
            "effective_half_life_h": c(self.effective_half_life_h),
            "effective_half_life_sd_h": c(self.effective_half_life_sd_h),
            "assumptions": list(self.assumptions),
            "references": list(self.references),
            "warnings": list(self.warnings),
        }


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _positive(x, what: str, *, allow_zero: bool = False) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {x!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{what} must be finite, got {x!r}")
    if v < 0 or (v == 0 and not allow_zero):
        raise InputError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {v}")
    return v


def _measurement(time_h, activity_mbq, activity_uncertainty_mbq) -> tuple[float, float, float]:
    t = _positive(time_h, "time_h (hours after administration)")
    a = _positive(activity_mbq, "activity_mbq")
    u = _positive(activity_uncertainty_mbq, "activity_uncertainty_mbq", allow_zero=True)
    return t, a, u


def mono_exp_tia_factor_h(time_h: float, effective_half_life_h: float) -> float:
    """F = e^{lambda t}/lambda (h): the exact TIA per unit A(t) for mono-exponential clearance."""
    lam = LN2 / effective_half_life_h
    return math.exp(lam * time_h) / lam


def hanscheid_ratio(time_over_teff):
    """R(x) = x 2^{1-x}: the Hänscheid approximation divided by the exact mono-exponential TIA,
    with x = t/T_eff (derived in the module docstring)."""
    x = np.asarray(time_over_teff, dtype=float)
    return x * np.exp2(1.0 - x)


def lognormal_parameters(mean: float, sd: float) -> tuple[float, float]:
    """(mu, sigma) of ln X for a log-normal X with the given mean and SD:
    sigma^2 = ln(1 + sd^2/mean^2), mu = ln(mean) - sigma^2/2 (standard moments of the
    log-normal distribution)."""
    s2 = math.log1p((sd / mean) ** 2)
    return math.log(mean) - s2 / 2.0, math.sqrt(s2)


def _truncated_normal_quadrature(fun, mu: float, sigma: float, z_max: float, order: int) -> float:
    z_nodes, w = np.polynomial.legendre.leggauss(order)
    z = z_max * z_nodes
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    mass = math.erf(z_max / math.sqrt(2))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return float(z_max * np.sum(w * pdf * fun(np.exp(mu + sigma * z))) / mass)


def lognormal_expectation(fun: Callable[[np.ndarray], np.ndarray], mean: float, sd: float, *,
                          z_max: float = LOGNORMAL_Z_MAX, order: int = QUADRATURE_ORDER) -> float:
    """E[fun(X)] for X log-normal with the given mean and SD, truncated at |ln X - mu| <= z_max sigma.

    Why truncated, and why not Gauss-Hermite: for fun = e^{c/X} (the TIA factor of a single-time-
    point estimate, c = ln 2 t) the expectation over an *untruncated* log-normal diverges, because
    the integrand grows double-exponentially as X -> 0 while the density falls only as
    e^{-z^2/2}. Gauss-Hermite quadrature integrates to infinity, and its outer nodes (|z| = 8.5 at
    order 24, 10.1 at order 32) land in that divergent tail: its result then grows without bound
    with the order. The tail is unphysical (a very short T_eff would mean an initial activity far
    above the administered one), so the population is truncated at ``z_max`` standard deviations
    of ln T_eff (default 5: all but 5.7e-7 of the patients) and the integral over
    z = (ln X - mu)/sigma in [-z_max, z_max] is done by Gauss-Legendre quadrature with the normal
    density as part of the integrand, renormalised to the truncated mass. ``order`` is checked
    against twice the order (relative agreement ``QUADRATURE_RTOL``); :class:`PhysicsError` if
    the result is not finite or not converged.
    """
    mu, sigma = lognormal_parameters(mean, sd)
    if sigma == 0.0:
        return float(np.asarray(fun(np.array([float(mean)])), dtype=float)[0])
    a = _truncated_normal_quadrature(fun, mu, sigma, z_max, order)
    b = _truncated_normal_quadrature(fun, mu, sigma, z_max, 2 * order)
    if not (math.isfinite(a) and math.isfinite(b)) or abs(b - a) > QUADRATURE_RTOL * abs(b):
        raise PhysicsError(
            "the expectation over the log-normal effective half-life could not be computed: with this "
            f"spread (SD/mean = {sd / mean:.2f}) short effective half-lives imply implausibly high early "
            "activities. Use a narrower population prior, measure closer to the mean effective "
            "half-life, or use more time points"
        )
    return b


def _truncation_sensitivity_of_sd(fun, mean: float, sd: float) -> float:
    """Relative change of SD[fun(X)] when the truncation moves from z_max - 0.5 to z_max."""
    mu, sigma = lognormal_parameters(mean, sd)
    if sigma == 0.0:
        return 0.0
    n = 2 * QUADRATURE_ORDER
    sds = []
    for z in (LOGNORMAL_Z_MAX - 0.5, LOGNORMAL_Z_MAX):
        m1 = _truncated_normal_quadrature(fun, mu, sigma, z, n)
        m2 = _truncated_normal_quadrature(lambda x: fun(x) ** 2, mu, sigma, z, n)
        sds.append(math.sqrt(max(m2 - m1 * m1, 0.0)))
    return abs(sds[1] - sds[0]) / sds[1] if sds[1] > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------


def hanscheid(time_h: float, activity_mbq: float, activity_uncertainty_mbq: float, *,
              effective_half_life_h: float | None = None, effective_half_life_sd_h: float | None = None,
              time_over_teff_window: tuple[float, float] = HANSCHEID_DEFAULT_WINDOW) -> STPResult:
    """TIA ~ A(t) 2t/ln 2 (Hänscheid et al. 2018).

    The approximation uncertainty (see the module docstring) is evaluated over the population's
    log-normal T_eff when ``effective_half_life_h`` and ``effective_half_life_sd_h`` are given,
    otherwise over x = t/T_eff uniform on ``time_over_teff_window`` (an assumption stated in the
    result).

    Examples
    --------
    Exact at t = T_eff: A0 = 100 MBq, T_eff = 50 h, A(50 h) = 50 MBq; 50 * 2 * 50 / ln 2 =
    7213.475 MBq h = 100 * 50 / ln 2.

    >>> round(hanscheid(50.0, 50.0, 0.0).tia_mbq_h, 3)
    7213.475
    """
    t, a, u = _measurement(time_h, activity_mbq, activity_uncertainty_mbq)
    factor = 2.0 * t / LN2
    tia = a * factor
    assumptions = [
        "kinetics close to mono-exponential clearance after the measurement",
        "TIA = A(t) 2t/ln2 is exact for mono-exponential kinetics when t = T_eff or t = 2 T_eff; "
        "at most 6.15 % too high (at t = 1.44 T_eff), and too low far from this range",
    ]
    warnings: list[str] = []
    if effective_half_life_h is not None:
        teff = _positive(effective_half_life_h, "effective_half_life_h")
        sd = _positive(effective_half_life_sd_h if effective_half_life_sd_h is not None else 0.0,
                       "effective_half_life_sd_h", allow_zero=True)
        msq = lognormal_expectation(lambda T: (1.0 / hanscheid_ratio(t / T) - 1.0) ** 2, teff, sd)
        assumptions.append(
            f"approximation error evaluated over a log-normal population T_eff = {teff:g} ± {sd:g} h"
        )
        x = t / teff
        if not (HANSCHEID_DEFAULT_WINDOW[0] <= x <= HANSCHEID_DEFAULT_WINDOW[1]):
            warnings.append(
                f"t/T_eff = {x:.2f} is outside {HANSCHEID_DEFAULT_WINDOW}: the approximation is poor "
                f"(R = {float(hanscheid_ratio(x)):.3f}); the approximation uncertainty is large"
            )
    else:
        teff, sd = None, None
        lo, hi = (float(v) for v in time_over_teff_window)
        if not (0 < lo < hi and math.isfinite(hi)):
            raise InputError(f"time_over_teff_window must be (lo, hi) with 0 < lo < hi, got {time_over_teff_window}")
        # mean of (1/R - 1)^2 for x uniform on [lo, hi] by Gauss-Legendre quadrature (64 nodes;
        # the integrand is smooth on the window)
        z, w = np.polynomial.legendre.leggauss(64)
        xs = (hi - lo) / 2 * z + (hi + lo) / 2
        msq = float(np.sum(w * (1.0 / hanscheid_ratio(xs) - 1.0) ** 2) / 2.0)
        assumptions.append(
            f"no population T_eff given: the measurement is assumed to lie between {lo:g} and {hi:g} "
            "effective half-lives after administration (x = t/T_eff uniform on that window; an "
            "mrtdose assumption, not from the paper) — give a population T_eff for a data-based estimate"
        )
    u_act = u * factor
    u_app = tia * math.sqrt(msq)
    comps = {"activity": u_act, "population_spread": 0.0, "approximation": u_app}
    return STPResult(
        method="hanscheid", time_h=t, activity_mbq=a, activity_uncertainty_mbq=u, tia_mbq_h=tia,
        uncertainty_mbq_h=math.hypot(u_act, u_app), tia_per_activity_h=factor,
        components=MappingProxyType(comps), effective_half_life_h=teff, effective_half_life_sd_h=sd,
        assumptions=tuple(assumptions), references=(REF_HANSCHEID, REF_GUM), warnings=tuple(warnings),
    )


def madsen(time_h: float, activity_mbq: float, activity_uncertainty_mbq: float, effective_half_life_h: float,
           effective_half_life_uncertainty_h: float = 0.0) -> STPResult:
    """TIA = A(t) e^{lambda t}/lambda with lambda = ln 2 / T_eff from the population
    (Madsen et al. 2018); first-order uncertainty from A(t) and from the T_eff spread.

    Examples
    --------
    A0 = 100 MBq, T_eff = 50 h, measured at 96 h: A = 100 * 2^(-96/50) = 26.425 MBq;
    TIA = 26.425 * 2^(96/50) * 50/ln 2 = 100 * 50 / ln 2 = 7213.475 MBq h.

    >>> round(madsen(96.0, 100 * 2 ** (-96 / 50), 0.0, 50.0).tia_mbq_h, 3)
    7213.475
    """
    t, a, u = _measurement(time_h, activity_mbq, activity_uncertainty_mbq)
    teff = _positive(effective_half_life_h, "effective_half_life_h")
    u_t = _positive(effective_half_life_uncertainty_h, "effective_half_life_uncertainty_h", allow_zero=True)
    lam = LN2 / teff
    factor = mono_exp_tia_factor_h(t, teff)
    tia = a * factor
    d_dteff = tia / teff * (1.0 - lam * t)  # d/dT [A T/ln2 e^{ln2 t/T}] = (TIA/T)(1 - lambda t)
    comps = {"activity": u * factor, "population_spread": abs(d_dteff) * u_t, "approximation": 0.0}
    warnings = []
    if u_t / teff > 0.2:
        warnings.append(
            f"T_eff relative spread {100 * u_t / teff:.0f} %: first-order propagation underestimates the "
            "uncertainty of e^(lambda t)/lambda at this spread; consider population_prior"
        )
    return STPResult(
        method="madsen", time_h=t, activity_mbq=a, activity_uncertainty_mbq=u, tia_mbq_h=tia,
        uncertainty_mbq_h=math.hypot(comps["activity"], comps["population_spread"]), tia_per_activity_h=factor,
        components=MappingProxyType(comps), effective_half_life_h=teff, effective_half_life_sd_h=u_t,
        assumptions=(
            "mono-exponential clearance from administration onwards with the population effective half-life",
            "the error of the mono-exponential assumption itself (e.g. an uptake phase) is not quantified; "
            "the 'approximation' component is therefore 0",
            "first-order (linear) propagation of the T_eff uncertainty",
        ),
        references=(REF_MADSEN, REF_GUM), warnings=tuple(warnings),
    )


def population_prior(time_h: float, activity_mbq: float, activity_uncertainty_mbq: float,
                     effective_half_life_h: float, effective_half_life_sd_h: float) -> STPResult:
    """Expected TIA and its SD with T_eff log-normal (mean, SD) across the population.

    With g(T) = (T/ln 2) e^{ln 2 t/T} (so TIA = A g), A and T independent:
    E[TIA] = A E[g];  Var[TIA] = A^2 Var[g] + u_A^2 E[g^2], whose two terms are reported as the
    "population_spread" and "activity" components (they add exactly in quadrature).
    E[g] and E[g^2] by quadrature over the (truncated) log-normal (:func:`lognormal_expectation`).
    """
    t, a, u = _measurement(time_h, activity_mbq, activity_uncertainty_mbq)
    teff = _positive(effective_half_life_h, "effective_half_life_h")
    sd = _positive(effective_half_life_sd_h, "effective_half_life_sd_h", allow_zero=True)

    def g(T):
        return T / LN2 * np.exp(LN2 * t / T)

    eg = lognormal_expectation(g, teff, sd)
    eg2 = lognormal_expectation(lambda T: g(T) ** 2, teff, sd)
    warnings = []
    sens = _truncation_sensitivity_of_sd(g, teff, sd)
    if sens > TRUNCATION_WARN_RTOL:
        warnings.append(
            f"the TIA uncertainty depends on how far the log-normal T_eff tail is taken ({100 * sens:.1f} % change of the spread "
            f"between truncation at {LOGNORMAL_Z_MAX - 0.5:g} and {LOGNORMAL_Z_MAX:g} SD): the spread is too large "
            "for a single time point at this time; treat the uncertainty as a lower bound"
        )
    var_g = max(eg2 - eg**2, 0.0)
    tia = a * eg
    comps = {"activity": u * math.sqrt(eg2), "population_spread": a * math.sqrt(var_g), "approximation": 0.0}
    return STPResult(
        method="population_prior", time_h=t, activity_mbq=a, activity_uncertainty_mbq=u, tia_mbq_h=tia,
        uncertainty_mbq_h=math.hypot(comps["activity"], comps["population_spread"]), tia_per_activity_h=eg,
        components=MappingProxyType(comps), effective_half_life_h=teff, effective_half_life_sd_h=sd,
        assumptions=(
            "mono-exponential clearance from administration onwards",
            f"the patient's T_eff is a draw from a log-normal population distribution with mean {teff:g} h "
            f"and SD {sd:g} h, independent of the measured activity",
            "the error of the mono-exponential assumption itself is not quantified ('approximation' = 0)",
            f"the log-normal is truncated at ±{LOGNORMAL_Z_MAX:g} SD of ln T_eff (the untruncated expectation "
            "diverges; see lognormal_expectation)",
        ),
        references=(REF_HOU, REF_MADSEN, REF_GUM), warnings=tuple(warnings),
    )


__all__ = ["STPResult", "hanscheid", "madsen", "population_prior", "hanscheid_ratio", "lognormal_parameters",
           "lognormal_expectation", "mono_exp_tia_factor_h", "HANSCHEID_DEFAULT_WINDOW"]
