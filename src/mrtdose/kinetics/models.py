"""Time-activity curve (TAC) models with analytic integrals, Jacobians and gradients.

Conventions: times in hours after administration (``t_h``), activities in MBq, time-integrated
activity (TIA) in MBq h. Rates ``lambda`` are *effective* rate constants (physical plus
biological) in 1/h, so that the models describe the measured, not decay-corrected, activity.

Models
------
Sums of exponentials, as used for TAC fitting in MRT dosimetry (MIRD Pamphlet 16, Siegel et al.
1999, J Nucl Med 40:37S; Glatting et al. 2007, Med Phys 34:4068; Kletting et al. 2013 (NUKFIT),
Med Phys 40:102504). Glatting and Kletting write each rate as ``lambda_bio + lambda_phys`` with
``lambda_bio >= 0``; here the effective rate is the parameter and the same physical constraint
becomes the lower bound ``lambda >= lambda_phys`` (see :meth:`KineticModel.bounds`):

``mono_exp``         A(t) = A1 e^{-l1 t}
``bi_exp``           A(t) = A1 e^{-l1 t} + A2 e^{-l2 t}                   (l1 >= l2 after a fit)
``bi_exp_uptake``    A(t) = A1 (e^{-l1 t} - e^{-l2 t})                    (l2 > l1: uptake)
``tri_exp``          A(t) = A1 e^{-l1 t} + A2 e^{-l2 t} - (A1 + A2) e^{-l3 t}
                          = A1 (e^{-l1 t} - e^{-l3 t}) + A2 (e^{-l2 t} - e^{-l3 t})
                     bi-exponential clearance with an uptake phase and A(0) = 0 (a sum of
                     exponentials constrained to start at zero, as in the function families
                     ranked by Glatting et al. 2007 and Kletting et al. 2013); l3 > l1 >= l2
                     after a fit.

With non-negative amplitudes and the uptake rate the fastest, every model is non-negative for
t >= 0. Integral of a term (standard calculus): int_t0^t1 c e^{-r t} dt = c/r (e^{-r t0} -
e^{-r t1}), so TIA(0, inf) = sum c_i / r_i.

Non-parametric (trapezoid) models
---------------------------------
``trapezoid_physical_tail`` and ``trapezoid_exp_tail`` integrate the measured points with the
trapezoidal rule and add an analytic tail after the last point (MIRD Pamphlet 16, Siegel et al.
1999, section on numerical integration: trapezoidal area plus a tail by physical decay, or by the
clearance seen in the last points). Before the first point the curve starts either from (0, 0)
(``start="zero"``, the default: the activity is taken up after administration, the usual
convention for organ TACs) or at the first measured value (``start="constant"``: an organ that
takes up its activity instantly and has not yet cleared). The "parameters" of these models are the
measured activities themselves, so that a caller treats TIA(params), its gradient and
first-order propagation exactly as for a fitted model; their covariance is diag(sigma^2).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from mrtdose.errors import FitError, InputError

LN2 = math.log(2.0)

#: Upper bound for any fitted rate constant (1/h): a half-life of 2.5 s, i.e. "instantaneous"
#: compared with any imaging schedule. A fit that ends here has an unidentifiable rate.
RATE_MAX_PER_H = 1.0e3
#: Lower bound for rates when ``allow_below_physical=True`` (a half-life of about 79 years): keeps
#: the integral finite; a fit that ends here has no measurable clearance.
RATE_MIN_PER_H = 1.0e-6


def _params(params, n: int, model: str, names: Sequence[str]) -> np.ndarray:
    p = np.asarray(params, dtype=float).reshape(-1)
    if p.size != n:
        raise InputError(f"model '{model}' takes {n} parameters {tuple(names)}, got {p.size}")
    return p


def _times(t_h) -> np.ndarray:
    return np.atleast_1d(np.asarray(t_h, dtype=float))


class KineticModel(ABC):
    """A time-activity model A(t; params) for t >= 0 (h, MBq).

    Attributes
    ----------
    name : registry name.
    param_names : parameter names, with units in the names.
    formula : plain-text formula for reports.
    nonparametric : True for the trapezoid models, whose parameters are the measured activities.
    reference : where the model form comes from.
    """

    name: str = ""
    param_names: tuple[str, ...] = ()
    formula: str = ""
    nonparametric: bool = False
    reference: str = ""

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @property
    def min_points(self) -> int:
        """Fewest measurements with which the model can be determined (n >= number of params)."""
        return self.n_params

    @abstractmethod
    def activity(self, t_h, params) -> np.ndarray:
        """A(t) in MBq at times ``t_h`` (h); zero for t < 0."""

    @abstractmethod
    def jacobian(self, t_h, params) -> np.ndarray:
        """Analytic dA(t_i)/dp_j, shape (n_t, n_params)."""

    @abstractmethod
    def integral(self, params, t0_h: float = 0.0, t1_h: float = math.inf) -> float:
        """Analytic integral of A(t) from ``t0_h`` to ``t1_h`` (MBq h)."""

    @abstractmethod
    def integral_gradient(self, params) -> np.ndarray:
        """Analytic d/dp_j of the integral from 0 to infinity (the TIA)."""

    def exponential_terms(self, params) -> tuple[np.ndarray, np.ndarray] | None:
        """(coefficients c_i in MBq, rates r_i in 1/h) with A(t) = sum c_i e^{-r_i t} for t >= 0,
        or None where the model is not a sum of exponentials."""
        return None

    def half_lives_h(self, params) -> dict[str, float]:
        """Named half-lives (h) of the model's phases."""
        return {}

    def canonical_order(self, params) -> np.ndarray:
        """Permutation that puts equivalent parameter sets in one canonical order (identity)."""
        return np.arange(self.n_params)

    def bounds(self, decay_constant_per_h: float, allow_below_physical: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds for the fit: amplitudes >= 0; rates >= lambda_phys unless
        ``allow_below_physical``. Biological processes cannot make a tracer outlast its physical
        decay: each effective rate is lambda_phys + lambda_bio with lambda_bio >= 0, the
        parametrisation of Glatting et al. 2007 and Kletting et al. 2013 (NUKFIT)."""
        raise TypeError(f"model '{self.name}' is not fitted (its parameters are the data) and has no fit bounds")

    def initial_guesses(self, t, a, decay_constant_per_h: float, allow_below_physical: bool = False) -> list[np.ndarray]:
        """Starting points for the least-squares fit."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {self.formula}>"


# ---------------------------------------------------------------------------------------------
# Sums of exponentials
# ---------------------------------------------------------------------------------------------


class _ExpSumModel(KineticModel):
    """A(t) = sum_i c_i(p) exp(-r_i(p) t), with c and r linear maps of the parameters.

    Subclasses give ``_C`` (m x k) and ``_R`` (m x k) such that c = C p and r = R p. All
    derivatives follow from the chain rule; the integral is sum c_i/r_i (e^{-r_i t0} - e^{-r_i t1}).
    """

    _C: np.ndarray
    _R: np.ndarray
    #: indices of amplitude and rate parameters
    _amp_idx: tuple[int, ...]
    _rate_idx: tuple[int, ...]

    def _p(self, params) -> np.ndarray:
        return _params(params, self.n_params, self.name, self.param_names)

    def _terms(self, params) -> tuple[np.ndarray, np.ndarray]:
        p = self._p(params)
        return self._C @ p, self._R @ p

    def exponential_terms(self, params) -> tuple[np.ndarray, np.ndarray]:
        return self._terms(params)

    def activity(self, t_h, params) -> np.ndarray:
        t = _times(t_h)
        c, r = self._terms(params)
        e = np.exp(-np.outer(np.clip(t, 0.0, None), r))  # (n_t, m)
        out = e @ c
        return np.where(t < 0, 0.0, out)

    def jacobian(self, t_h, params) -> np.ndarray:
        t = _times(t_h)
        c, r = self._terms(params)
        tt = np.clip(t, 0.0, None)
        e = np.exp(-np.outer(tt, r))  # (n_t, m)
        # dA/dp = sum_i e_i (C_ij - c_i t R_ij)
        jac = e @ self._C - (e * c[None, :] * tt[:, None]) @ self._R
        jac[t < 0] = 0.0
        return jac

    def integral(self, params, t0_h: float = 0.0, t1_h: float = math.inf) -> float:
        c, r = self._terms(params)
        t0 = max(float(t0_h), 0.0)
        t1 = float(t1_h)
        if t1 <= t0:
            return 0.0
        if np.any(r <= 0) and np.isinf(t1):
            return math.inf  # a term that never decays: the TIA diverges
        # c/r (e^{-r t0} - e^{-r t1}) = c/r e^{-r t0} (-expm1(-r (t1 - t0))); r = 0: c (t1 - t0)
        dt = t1 - t0
        safe_r = np.where(r == 0, 1.0, r)
        span = -np.expm1(-r * dt) if np.isfinite(t1) else np.ones_like(r)
        terms = np.where(r == 0, c * dt, c / safe_r * np.exp(-r * t0) * span)
        return float(np.sum(terms))

    def integral_gradient(self, params) -> np.ndarray:
        c, r = self._terms(params)
        # I = sum c_i / r_i ;  dI/dp_j = sum (C_ij / r_i - c_i R_ij / r_i^2)
        return (1.0 / r) @ self._C - (c / r**2) @ self._R

    def bounds(self, decay_constant_per_h: float, allow_below_physical: bool = False) -> tuple[np.ndarray, np.ndarray]:
        lam = float(decay_constant_per_h)
        lo = np.zeros(self.n_params)
        hi = np.full(self.n_params, np.inf)
        rate_lo = RATE_MIN_PER_H if allow_below_physical else lam
        lo[list(self._rate_idx)] = rate_lo
        hi[list(self._rate_idx)] = RATE_MAX_PER_H
        return lo, hi

    def half_lives_h(self, params) -> dict[str, float]:
        p = self._p(params)
        out = self._named_half_lives(p)
        rates = p[list(self._rate_idx)]
        out["terminal"] = LN2 / float(np.min(rates)) if np.all(rates > 0) else math.inf
        return out

    def _named_half_lives(self, p: np.ndarray) -> dict[str, float]:
        return {}

    # --- starting values: grid over rates, amplitudes by non-negative least squares ----------

    @abstractmethod
    def _basis(self, t: np.ndarray, rates: tuple[float, ...]) -> np.ndarray:
        """Design matrix (n_t, n_amplitudes) of the model's exponential terms for given rates."""

    @abstractmethod
    def _rate_combinations(self, grid: np.ndarray) -> list[tuple[float, ...]]:
        """Admissible combinations of rates from ``grid`` (e.g. uptake faster than clearance)."""

    @abstractmethod
    def _assemble(self, rates: tuple[float, ...], amps: np.ndarray) -> np.ndarray:
        """Parameter vector from rates and non-negative amplitudes."""

    def initial_guesses(self, t, a, decay_constant_per_h: float, allow_below_physical: bool = False,
                        n_starts: int = 4) -> list[np.ndarray]:
        """Starting points: for each combination of rates on a grid spanning the time scales of
        the data (0.1/t_max .. 5/t_min, plus lambda_phys and the slope of the last two points),
        the amplitudes are linear and are found by non-negative least squares on relative
        residuals (variable projection, Golub & Pereyra 1973); the ``n_starts`` best
        combinations are returned."""
        t = np.asarray(t, dtype=float)
        a = np.asarray(a, dtype=float)
        lo, hi = self.bounds(decay_constant_per_h, allow_below_physical)
        rate_lo = float(lo[self._rate_idx[0]])
        grid = _rate_grid(t, a, rate_lo)
        scored: list[tuple[float, np.ndarray]] = []
        w = 1.0 / np.maximum(a, 1e-300)
        for rates in self._rate_combinations(grid):
            basis = self._basis(t, rates)
            try:
                amps, rnorm = nnls(basis * w[:, None], a * w)
            except Exception:  # pragma: no cover - nnls failure on a degenerate basis
                continue
            amps = np.maximum(amps, 1e-3 * float(np.max(a)))
            scored.append((float(rnorm), self._assemble(rates, amps)))
        scored.sort(key=lambda s: s[0])
        return [p for _, p in scored[:n_starts]]


def _rate_grid(t: np.ndarray, a: np.ndarray, rate_lo: float, n: int = 10) -> np.ndarray:
    t_min, t_max = float(np.min(t)), float(np.max(t))
    rmin = max(rate_lo, 0.1 / t_max)
    rmax = max(5.0 / t_min, 30.0 * rmin)
    grid = list(np.geomspace(rmin, rmax, n))
    if rate_lo > RATE_MIN_PER_H:
        grid.append(rate_lo)
    if t.size >= 2 and a[-1] > 0 and a[-2] > 0 and t[-1] > t[-2]:
        k = math.log(a[-2] / a[-1]) / (t[-1] - t[-2])
        if k > rate_lo:
            grid.append(k)
    g = np.unique(np.round(np.asarray(grid), 12))
    return g[(g >= rate_lo) & (g <= RATE_MAX_PER_H)]


class MonoExp(_ExpSumModel):
    name = "mono_exp"
    param_names = ("A1_mbq", "lambda1_per_h")
    formula = "A(t) = A1 exp(-lambda1 t)"
    reference = "MIRD Pamphlet 16 (Siegel et al. 1999, J Nucl Med 40:37S); Glatting et al. 2007, Med Phys 34:4068"
    _C = np.array([[1.0, 0.0]])
    _R = np.array([[0.0, 1.0]])
    _amp_idx = (0,)
    _rate_idx = (1,)

    def _named_half_lives(self, p):
        return {"effective": LN2 / p[1] if p[1] > 0 else math.inf}

    def _basis(self, t, rates):
        return np.exp(-rates[0] * t)[:, None]

    def _rate_combinations(self, grid):
        return [(r,) for r in grid]

    def _assemble(self, rates, amps):
        return np.array([amps[0], rates[0]])


class BiExp(_ExpSumModel):
    name = "bi_exp"
    param_names = ("A1_mbq", "lambda1_per_h", "A2_mbq", "lambda2_per_h")
    formula = "A(t) = A1 exp(-lambda1 t) + A2 exp(-lambda2 t)"
    reference = "Glatting et al. 2007, Med Phys 34:4068; Kletting et al. 2013, Med Phys 40:102504"
    _C = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    _R = np.array([[0, 1.0, 0, 0], [0, 0, 0, 1.0]])
    _amp_idx = (0, 2)
    _rate_idx = (1, 3)

    def canonical_order(self, params):
        p = self._p(params)
        return np.array([2, 3, 0, 1]) if p[1] < p[3] else np.arange(4)

    def _named_half_lives(self, p):
        fast, slow = max(p[1], p[3]), min(p[1], p[3])
        return {"fast": LN2 / fast, "slow": LN2 / slow if slow > 0 else math.inf}

    def _basis(self, t, rates):
        return np.exp(-np.outer(t, rates))

    def _rate_combinations(self, grid):
        return [(r1, r2) for r2, r1 in itertools.combinations(grid, 2)]  # r1 > r2

    def _assemble(self, rates, amps):
        return np.array([amps[0], rates[0], amps[1], rates[1]])


class BiExpUptake(_ExpSumModel):
    name = "bi_exp_uptake"
    param_names = ("A1_mbq", "lambda1_per_h", "lambda2_per_h")
    formula = "A(t) = A1 [exp(-lambda1 t) - exp(-lambda2 t)], lambda2 > lambda1 (uptake)"
    reference = "Glatting et al. 2007, Med Phys 34:4068; Kletting et al. 2013, Med Phys 40:102504"
    _C = np.array([[1.0, 0, 0], [-1.0, 0, 0]])
    _R = np.array([[0, 1.0, 0], [0, 0, 1.0]])
    _amp_idx = (0,)
    _rate_idx = (1, 2)

    def _named_half_lives(self, p):
        return {"clearance": LN2 / p[1] if p[1] > 0 else math.inf, "uptake": LN2 / p[2] if p[2] > 0 else math.inf}

    def _basis(self, t, rates):
        l1, l2 = rates
        return (np.exp(-l1 * t) - np.exp(-l2 * t))[:, None]

    def _rate_combinations(self, grid):
        return [(l1, l2) for l1, l2 in itertools.combinations(grid, 2)]  # l2 > l1

    def _assemble(self, rates, amps):
        return np.array([amps[0], rates[0], rates[1]])


class TriExp(_ExpSumModel):
    name = "tri_exp"
    param_names = ("A1_mbq", "lambda1_per_h", "A2_mbq", "lambda2_per_h", "lambda3_per_h")
    formula = ("A(t) = A1 exp(-lambda1 t) + A2 exp(-lambda2 t) - (A1 + A2) exp(-lambda3 t), "
               "lambda3 > lambda1 >= lambda2 (bi-exponential clearance with uptake, A(0) = 0)")
    reference = ("sum of exponentials with A(0) = 0: Glatting et al. 2007, Med Phys 34:4068; "
                 "Kletting et al. 2013 (NUKFIT), Med Phys 40:102504")
    _C = np.array([[1.0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0], [-1.0, 0, -1.0, 0, 0]])
    _R = np.array([[0, 1.0, 0, 0, 0], [0, 0, 0, 1.0, 0], [0, 0, 0, 0, 1.0]])
    _amp_idx = (0, 2)
    _rate_idx = (1, 3, 4)

    def canonical_order(self, params):
        p = self._p(params)
        return np.array([2, 3, 0, 1, 4]) if p[1] < p[3] else np.arange(5)

    def _named_half_lives(self, p):
        fast, slow = max(p[1], p[3]), min(p[1], p[3])
        return {"clearance_fast": LN2 / fast, "clearance_slow": LN2 / slow if slow > 0 else math.inf,
                "uptake": LN2 / p[4]}

    def _basis(self, t, rates):
        l1, l2, l3 = rates
        e3 = np.exp(-l3 * t)
        return np.column_stack([np.exp(-l1 * t) - e3, np.exp(-l2 * t) - e3])

    def _rate_combinations(self, grid):
        # (l1, l2, l3) with l2 < l1 < l3
        return [(b, a, c) for a, b, c in itertools.combinations(grid, 3)]

    def _assemble(self, rates, amps):
        l1, l2, l3 = rates
        return np.array([amps[0], l1, amps[1], l2, l3])


# ---------------------------------------------------------------------------------------------
# Trapezoid (non-parametric) models
# ---------------------------------------------------------------------------------------------

TRAPEZOID_STARTS = ("zero", "constant")


class _TrapezoidModel(KineticModel):
    """Piecewise-linear interpolation of the measured points plus an exponential tail.

    Parameters are the activities at the (fixed) measurement times, in the order of the times.
    """

    nonparametric = True
    reference = ("MIRD Pamphlet 16 (Siegel et al. 1999, J Nucl Med 40:37S): trapezoidal "
                 "integration of the measured points with an analytic tail after the last point")

    def __init__(self, times_h, decay_constant_per_h: float, *, start: str = "zero",
                 allow_below_physical: bool = False):
        t = np.asarray(times_h, dtype=float).reshape(-1)
        if t.size < 1 or not np.all(np.isfinite(t)) or np.any(t <= 0) or np.any(np.diff(t) <= 0):
            raise InputError(f"model '{self.name}': times must be finite, > 0 and strictly increasing, got {t.tolist()}")
        lam = float(decay_constant_per_h)
        if not (lam > 0 and math.isfinite(lam)):
            raise InputError(f"decay constant must be a positive number (1/h), got {decay_constant_per_h!r}")
        if start not in TRAPEZOID_STARTS:
            raise InputError(f"trapezoid start must be one of {TRAPEZOID_STARTS}, got '{start}'")
        self.times_h = t
        self.decay_constant_per_h = lam
        self.start = start
        self.allow_below_physical = bool(allow_below_physical)
        self.param_names = tuple(f"activity_{i + 1}_mbq" for i in range(t.size))
        self._nodes_t = np.concatenate([[0.0], t])
        first = "A(0) = 0, linear to the first point" if start == "zero" else "A(t) = A(t1) before the first point"
        self.formula = f"trapezoidal rule through the measured points ({first}); {self._tail_text}"

    _tail_text = ""

    @property
    def min_points(self) -> int:
        return 2

    def _p(self, params) -> np.ndarray:
        return _params(params, self.n_params, self.name, self.param_names)

    def _dnodes(self) -> np.ndarray:
        """d(node activities, including the node at t=0) / d(params): (n+1, n)."""
        n = self.n_params
        d = np.zeros((n + 1, n))
        d[1:, :] = np.eye(n)
        if self.start == "constant":
            d[0, 0] = 1.0
        return d

    def _nodes_a(self, p: np.ndarray) -> np.ndarray:
        return self._dnodes() @ p

    @abstractmethod
    def tail_rate(self, params) -> tuple[float, np.ndarray, bool]:
        """(k in 1/h, dk/dparams, clamped_to_physical) for the tail A_n e^{-k (t - t_n)}."""

    def activity(self, t_h, params) -> np.ndarray:
        p = self._p(params)
        t = _times(t_h)
        k, _, _ = self.tail_rate(p)
        tn = self.times_h[-1]
        out = np.zeros_like(t)
        inside = (t >= 0) & (t <= tn)
        out[inside] = np.interp(t[inside], self._nodes_t, self._nodes_a(p))
        after = t > tn
        out[after] = p[-1] * np.exp(-k * (t[after] - tn))
        return out

    def jacobian(self, t_h, params) -> np.ndarray:
        p = self._p(params)
        t = _times(t_h)
        n = self.n_params
        k, dk, _ = self.tail_rate(p)
        tn = self.times_h[-1]
        jac = np.zeros((t.size, n))
        inside = (t >= 0) & (t <= tn)
        if np.any(inside):
            hats = np.column_stack([np.interp(t[inside], self._nodes_t, e) for e in np.eye(n + 1)])
            jac[inside] = hats @ self._dnodes()
        after = t > tn
        if np.any(after):
            tau = t[after] - tn
            e = np.exp(-k * tau)
            jac[after] = -(p[-1] * tau * e)[:, None] * dk[None, :]
            jac[after, n - 1] += e
        return jac

    def _node_weights(self) -> np.ndarray:
        """Trapezoid weights of the nodes (t=0 and the measurement times) for int_0^tn."""
        x = self._nodes_t
        dx = np.diff(x)
        w = np.zeros(x.size)
        w[:-1] += dx / 2
        w[1:] += dx / 2
        return w

    def integral(self, params, t0_h: float = 0.0, t1_h: float = math.inf) -> float:
        p = self._p(params)
        t0, t1 = max(float(t0_h), 0.0), float(t1_h)
        if t1 <= t0:
            return 0.0
        x, y = self._nodes_t, self._nodes_a(p)
        total = 0.0
        for i in range(x.size - 1):
            lo, hi = max(t0, x[i]), min(t1, x[i + 1])
            if hi > lo:
                f_lo, f_hi = np.interp([lo, hi], x, y)
                total += (hi - lo) * (f_lo + f_hi) / 2.0  # exact for a linear segment
        tn = x[-1]
        if t1 > tn:
            k, _, _ = self.tail_rate(p)
            s = max(t0, tn) - tn
            if np.isinf(t1):
                total += p[-1] / k * math.exp(-k * s)
            else:
                total += p[-1] / k * (math.exp(-k * s) - math.exp(-k * (t1 - tn)))
        return float(total)

    def integral_gradient(self, params) -> np.ndarray:
        p = self._p(params)
        k, dk, _ = self.tail_rate(p)
        grad = self._node_weights() @ self._dnodes()
        # tail T = A_n / k:  dT/dp = e_n / k - A_n dk / k^2
        grad = grad - p[-1] * dk / k**2
        grad[-1] += 1.0 / k
        return grad

    def half_lives_h(self, params) -> dict[str, float]:
        k, _, _ = self.tail_rate(params)
        return {"tail": LN2 / k}

    def initial_guesses(self, t, a, decay_constant_per_h: float, allow_below_physical: bool = False) -> list[np.ndarray]:
        return [np.asarray(a, dtype=float).copy()]


class TrapezoidPhysicalTail(_TrapezoidModel):
    name = "trapezoid_physical_tail"
    _tail_text = "after the last point physical decay only: tail = A_n / lambda_phys"

    def tail_rate(self, params):
        return self.decay_constant_per_h, np.zeros(self.n_params), False


class TrapezoidExpTail(_TrapezoidModel):
    name = "trapezoid_exp_tail"
    _tail_text = ("after the last point the exponential through the last two points, "
                  "k = ln(A_{n-1}/A_n)/(t_n - t_{n-1}), not below lambda_phys unless allowed: "
                  "tail = A_n / k")

    def tail_rate(self, params):
        p = self._p(params)
        n = self.n_params
        if n < 2:
            raise FitError("the exponential tail needs at least two measurements")
        dt = self.times_h[-1] - self.times_h[-2]
        a1, a2 = p[-2], p[-1]
        if not (a1 > 0 and a2 > 0):
            raise FitError("the exponential tail needs positive activities at the last two time points")
        k_raw = math.log(a1 / a2) / dt
        dk = np.zeros(n)
        lam = self.decay_constant_per_h
        if not self.allow_below_physical and k_raw < lam:
            return lam, dk, True
        if k_raw <= 0:
            raise FitError(
                f"the last two activities do not decrease ({a1:.4g} -> {a2:.4g} MBq): an exponential "
                "tail through them never ends (infinite TIA). Use the physical-decay tail, or measure later."
            )
        dk[-2] = 1.0 / (a1 * dt)
        dk[-1] = -1.0 / (a2 * dt)
        return k_raw, dk, False


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

MODELS: dict[str, type[KineticModel]] = {
    m.name: m for m in (MonoExp, BiExp, BiExpUptake, TriExp, TrapezoidPhysicalTail, TrapezoidExpTail)
}

#: The parametric (fittable) models, in order of complexity.
PARAMETRIC_MODELS = ("mono_exp", "bi_exp_uptake", "bi_exp", "tri_exp")


def get_model(name: str, *, times_h=None, decay_constant_per_h: float | None = None,
              start: str = "zero", allow_below_physical: bool = False) -> KineticModel:
    """The model called ``name``.

    The trapezoid models are defined on the measurement times and need ``times_h`` and
    ``decay_constant_per_h``; the parametric models ignore these arguments.

    >>> get_model("mono_exp").param_names
    ('A1_mbq', 'lambda1_per_h')
    """
    key = str(name).strip().lower()
    cls = MODELS.get(key)
    if cls is None:
        raise InputError(f"unknown kinetic model '{name}'; valid models: {', '.join(MODELS)}")
    if issubclass(cls, _TrapezoidModel):
        if times_h is None or decay_constant_per_h is None:
            raise InputError(f"model '{key}' is defined on the measurement times: give times_h and decay_constant_per_h")
        return cls(times_h, decay_constant_per_h, start=start, allow_below_physical=allow_below_physical)
    return cls()


__all__ = [
    "KineticModel", "MODELS", "PARAMETRIC_MODELS", "get_model", "MonoExp", "BiExp", "BiExpUptake",
    "TriExp", "TrapezoidPhysicalTail", "TrapezoidExpTail", "RATE_MAX_PER_H", "RATE_MIN_PER_H", "LN2",
    "TRAPEZOID_STARTS",
]
