"""Recovery coefficients and partial-volume correction.

The limited spatial resolution of SPECT/PET spills counts out of small objects: the activity
measured in a volume of interest that matches a hot object's physical boundary is a fraction
RC (the recovery coefficient) of the true activity, which falls with the object's size (MIRD
Pamphlet 23, Dewaraja et al. 2012, J Nucl Med 53:1310, section "Partial-volume effects"; MIRD
Pamphlet 26, Ljungberg et al. 2016, J Nucl Med 57:151). RC is measured with fillable spheres
(e.g. the NEMA/IEC body phantom, sphere volumes 0.5-26.5 mL) imaged and reconstructed exactly as
patients, and summarised as a curve RC(V).

Model
-----
The empirical sigmoid in volume (a Hill function of V, three parameters)::

    RC(V) = a / (1 + (b / V)^c)

``a`` is the asymptotic recovery of large objects (ideally 1), ``b`` (mL) the volume recovered
to half of it, ``c`` the steepness. Sigmoid-shaped RC-volume curves of this kind are the usual
summary of sphere-phantom measurements for partial-volume correction of lesion and organ
activities in MRT dosimetry (e.g. Dewaraja et al. 2012, MIRD 23; Tran-Gia & Lassmann 2018, J
Nucl Med 59:616, who fitted RC against volume for 177Lu SPECT/CT). The functional form is
empirical: it has no physical basis beyond being monotone, bounded and sigmoid in log V; its
adequacy for a given system is judged by the fit's chi-square.

Fit and uncertainty
-------------------
Weighted least squares (``scipy.optimize.curve_fit``, trust-region reflective, analytic
Jacobian, bounds a, b, c > 0) with weights ``1/u(RC_i)^2``. The parameter covariance is
``(J^T W J)^{-1}`` (absolute weights, the measured uncertainties taken at face value) or, with
``scale_covariance=True`` or when no uncertainties are given, that matrix times the reduced
chi-square (e.g. Bevington & Robinson, Data Reduction and Error Analysis, 3rd ed., ch. 8).
The uncertainty of RC at any volume propagates the full covariance with the analytic gradient
(GUM, JCGM 100:2008, eq. 13)::

    u(RC)^2 = g^T Sigma g,  g = (dRC/da, dRC/db, dRC/dc)
    dRC/da = 1/D,  dRC/db = -a c r / (b D^2),  dRC/dc = -a r ln(b/V) / D^2,
    with r = (b/V)^c and D = 1 + r;  dRC/dV = a c r / (V D^2).

Partial-volume correction
-------------------------
``A_true = A_measured / RC(V)``; first-order uncertainty components (GUM eq. 10)::

    activity:   u(A) / RC
    recovery:   A u(RC) / RC^2                 (curve parameters)
    volume:     A |dRC/dV| u(V) / RC^2
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml
from scipy.optimize import curve_fit

from mrtdose.errors import FitError, InputError, PhysicsError
from mrtdose.quantities import Quantity

MODEL_NAME = "sigmoid: RC(V) = a / (1 + (b/V)^c)"
PARAMETER_NAMES = ("a", "b_ml", "c")
FORMAT_VERSION = 1


def _rc(v: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a / (1.0 + (b / v) ** c)


def _grad(v: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Gradient of RC with respect to (a, b, c), shape (len(v), 3) (module docstring)."""
    r = (b / v) ** c
    d = 1.0 + r
    return np.stack([1.0 / d, -a * c * r / (b * d * d), -a * r * np.log(b / v) / (d * d)], axis=-1)


def _volumes(volume_ml, what: str = "volume_ml") -> np.ndarray:
    v = np.asarray(volume_ml, dtype=float)
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise InputError("volumes must be positive finite numbers of mL", field=what)
    return v


@dataclass(frozen=True)
class RecoveryCurve:
    """A fitted recovery-coefficient curve RC(V) with its parameter covariance. Immutable.

    Attributes
    ----------
    a, b_ml, c : parameters of ``RC(V) = a / (1 + (b/V)^c)``.
    covariance : 3x3 covariance of (a, b_ml, c); a fixed parameter has zero row and column.
    volumes_ml, rc_measured, rc_uncertainty : the phantom data it was fitted to (may be empty for
        a curve entered by hand).
    chi2, dof : fit statistics (``nan``/0 for a hand-entered curve).
    description : phantom, nuclide, camera, reconstruction, VOI definition...

    Examples
    --------
    >>> c = RecoveryCurve(a=1.0, b_ml=2.0, c=1.0, covariance=np.diag([1e-4, 0.01, 0.0]))
    >>> round(float(c.rc(2.0)), 6), round(float(c.rc(6.0)), 6)   # a/2; 1/(1 + 1/3)
    (0.5, 0.75)
    >>> rc, u = c.rc_with_uncertainty(2.0)   # g = (0.5, -0.125, 0): u = sqrt(0.25e-4 + 0.015625e-2)
    >>> round(float(u), 6)
    0.013463
    """

    a: float
    b_ml: float
    c: float
    covariance: np.ndarray
    volumes_ml: tuple[float, ...] = ()
    rc_measured: tuple[float, ...] = ()
    rc_uncertainty: tuple[float, ...] = ()
    chi2: float = math.nan
    dof: int = 0
    covariance_scaled: bool = False
    fixed: tuple[str, ...] = ()
    description: str = ""
    model: str = MODEL_NAME
    reference: str = "empirical sigmoid; MIRD Pamphlet 23 (Dewaraja et al. 2012, J Nucl Med 53:1310)"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("a", "b_ml", "c"):
            val = float(getattr(self, name))
            if not (math.isfinite(val) and val > 0):
                raise InputError(f"recovery-curve parameter must be positive and finite, got {val!r}", field=name)
            object.__setattr__(self, name, val)
        cov = np.array(self.covariance, dtype=float)
        if cov.shape != (3, 3) or not np.all(np.isfinite(cov)):
            raise InputError(f"covariance must be a finite 3x3 matrix (a, b_ml, c), got shape {cov.shape}", field="covariance")
        if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-15 * max(1.0, float(np.max(np.abs(cov))))):
            raise InputError("covariance must be symmetric", field="covariance")
        if np.min(np.linalg.eigvalsh(cov)) < -1e-10 * max(1e-300, float(np.max(np.abs(np.diag(cov))))):
            raise InputError("covariance must be positive semi-definite", field="covariance")
        cov.flags.writeable = False
        object.__setattr__(self, "covariance", cov)
        n = len(self.volumes_ml)
        if len(self.rc_measured) != n or (self.rc_uncertainty and len(self.rc_uncertainty) != n):
            raise InputError("volumes_ml, rc_measured and rc_uncertainty must have the same length", field="volumes_ml")
        for name in ("volumes_ml", "rc_measured", "rc_uncertainty"):
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))
        object.__setattr__(self, "fixed", tuple(self.fixed))
        object.__setattr__(self, "metadata", dict(self.metadata))

    # ------------------------------------------------------------------ evaluation

    @property
    def parameters(self) -> np.ndarray:
        return np.array([self.a, self.b_ml, self.c])

    @property
    def fitted_range_ml(self) -> tuple[float, float] | None:
        """Smallest and largest phantom volume the curve was fitted to (None if unknown)."""
        return (min(self.volumes_ml), max(self.volumes_ml)) if self.volumes_ml else None

    def rc(self, volume_ml):
        """RC at ``volume_ml`` (float or array)."""
        v = _volumes(volume_ml)
        out = _rc(v, self.a, self.b_ml, self.c)
        return float(out) if out.ndim == 0 else out

    def gradient(self, volume_ml) -> np.ndarray:
        """dRC/d(a, b_ml, c) at ``volume_ml``, shape ``(..., 3)``."""
        return _grad(_volumes(volume_ml), self.a, self.b_ml, self.c)

    def derivative_volume(self, volume_ml):
        """dRC/dV (per mL) at ``volume_ml``."""
        v = _volumes(volume_ml)
        r = (self.b_ml / v) ** self.c
        out = self.a * self.c * r / (v * (1.0 + r) ** 2)
        return float(out) if out.ndim == 0 else out

    def rc_with_uncertainty(self, volume_ml):
        """``(rc, u_rc)`` at ``volume_ml``: ``u^2 = g^T Sigma g`` (module docstring)."""
        v = _volumes(volume_ml)
        g = _grad(v, self.a, self.b_ml, self.c)
        var = np.einsum("...i,ij,...j->...", g, self.covariance, g)
        rc = _rc(v, self.a, self.b_ml, self.c)
        u = np.sqrt(np.clip(var, 0.0, None))
        if rc.ndim == 0:
            return float(rc), float(u)
        return rc, u

    def is_extrapolation(self, volume_ml) -> np.ndarray | bool:
        """True where ``volume_ml`` lies outside the fitted phantom volumes."""
        rng = self.fitted_range_ml
        v = _volumes(volume_ml)
        out = np.zeros(v.shape, bool) if rng is None else (v < rng[0]) | (v > rng[1])
        return bool(out) if out.ndim == 0 else out

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "reference": self.reference,
            "description": self.description,
            "parameters": {"a": self.a, "b_ml": self.b_ml, "c": self.c},
            "parameter_order": list(PARAMETER_NAMES),
            "covariance": [[float(x) for x in row] for row in self.covariance],
            "fixed": list(self.fixed),
            "fit": {
                "volumes_ml": list(self.volumes_ml),
                "rc_measured": list(self.rc_measured),
                "rc_uncertainty": list(self.rc_uncertainty),
                "chi2": None if not math.isfinite(self.chi2) else float(self.chi2),
                "dof": int(self.dof),
                "covariance_scaled": bool(self.covariance_scaled),
            },
            "metadata": self.metadata,
        }

    @staticmethod
    def from_dict(data: Any, source: str = "<recovery curve>") -> "RecoveryCurve":
        """Validate and build a curve from :meth:`to_dict`'s form; errors name source and field."""
        if not isinstance(data, dict):
            raise InputError("a recovery curve must be a mapping", source=source)

        def need(d: Any, key: str, where: str) -> Any:
            if not isinstance(d, dict) or key not in d:
                raise InputError("required field is missing", source=source, field=f"{where}{key}")
            return d[key]

        if data.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise InputError(f"unsupported format_version {data.get('format_version')!r} (expected {FORMAT_VERSION})",
                             source=source, field="format_version")
        model = data.get("model", MODEL_NAME)
        if model != MODEL_NAME:
            raise InputError(f"unknown model {model!r}; supported: {MODEL_NAME!r}", source=source, field="model")
        pars = need(data, "parameters", "")
        vals = {}
        for k in PARAMETER_NAMES:
            x = need(pars, k, "parameters.")
            try:
                vals[k] = float(x)
            except (TypeError, ValueError):
                raise InputError(f"must be a number, got {x!r}", source=source, field=f"parameters.{k}") from None
        cov = need(data, "covariance", "")
        try:
            cov_arr = np.array(cov, dtype=float)
        except (TypeError, ValueError):
            raise InputError("must be a 3x3 matrix of numbers", source=source, field="covariance") from None
        fit = data.get("fit") or {}
        if not isinstance(fit, dict):
            raise InputError("must be a mapping", source=source, field="fit")
        try:
            vols = tuple(float(x) for x in fit.get("volumes_ml", ()) or ())
            rcm = tuple(float(x) for x in fit.get("rc_measured", ()) or ())
            rcu = tuple(float(x) for x in fit.get("rc_uncertainty", ()) or ())
        except (TypeError, ValueError):
            raise InputError("fit data must be lists of numbers", source=source, field="fit") from None
        chi2 = fit.get("chi2")
        try:
            return RecoveryCurve(
                a=vals["a"], b_ml=vals["b_ml"], c=vals["c"], covariance=cov_arr,
                volumes_ml=vols, rc_measured=rcm, rc_uncertainty=rcu,
                chi2=math.nan if chi2 is None else float(chi2), dof=int(fit.get("dof", 0)),
                covariance_scaled=bool(fit.get("covariance_scaled", False)),
                fixed=tuple(data.get("fixed", ()) or ()), description=str(data.get("description", "")),
                reference=str(data.get("reference", RecoveryCurve.reference)),
                metadata=dict(data.get("metadata") or {}),
            )
        except InputError as exc:
            field_name = exc.field if exc.field in ("covariance", "volumes_ml") else (
                f"parameters.{exc.field}" if exc.field in PARAMETER_NAMES else exc.field)
            raise InputError(exc.detail, source=source, field=field_name) from None

    def dumps(self, fmt: str = "yaml") -> str:
        """The curve as YAML (default) or JSON text."""
        d = self.to_dict()
        if fmt == "json":
            return json.dumps(d, indent=2) + "\n"
        if fmt == "yaml":
            return yaml.safe_dump(d, sort_keys=False)
        raise InputError(f"format must be 'yaml' or 'json', got {fmt!r}", field="fmt")

    def save(self, path: str | Path) -> Path:
        """Write the curve atomically (temporary file + rename) as JSON (``.json``) or YAML."""
        p = Path(path)
        text = self.dumps("json" if p.suffix.lower() == ".json" else "yaml")
        fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=f".{p.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, p)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return p


def load_recovery_curve(path: str | Path) -> RecoveryCurve:
    """Read a curve written by :meth:`RecoveryCurve.save` (YAML or JSON)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("recovery-curve file not found", source=str(p))
    try:
        text = p.read_bytes().decode("utf-8")
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot parse file: {exc}", source=str(p)) from None
    return RecoveryCurve.from_dict(data, source=str(p))


# --------------------------------------------------------------------------- fit


def _initial_guess(v: np.ndarray, rc: np.ndarray, a_fixed: float | None) -> tuple[float, float, float]:
    a0 = a_fixed if a_fixed is not None else max(1.05 * float(np.max(rc)), 1e-3)
    half = 0.5 * a0
    order = np.argsort(v)
    vs, rs = v[order], rc[order]
    if rs[0] >= half:
        b0 = float(vs[0]) / 2.0
    elif rs[-1] <= half:
        b0 = float(vs[-1]) * 2.0
    else:
        k = int(np.argmax(rs >= half))
        lv = np.interp(half, [rs[k - 1], rs[k]], np.log([vs[k - 1], vs[k]]))
        b0 = float(np.exp(lv))
    return a0, b0, 1.0


def fit_recovery_curve(
    volumes_ml: Sequence[float],
    rc_measured: Sequence[float],
    rc_uncertainty: Sequence[float] | None = None,
    *,
    fixed_a: float | None = None,
    scale_covariance: bool = False,
    description: str = "",
    metadata: dict | None = None,
) -> RecoveryCurve:
    """Weighted least-squares fit of ``RC(V) = a / (1 + (b/V)^c)`` to sphere-phantom data.

    Parameters
    ----------
    volumes_ml : sphere (inner) volumes, mL.
    rc_measured : measured recovery coefficients (measured / true activity concentration or
        activity, in the VOI definition used for patients).
    rc_uncertainty : standard uncertainties of ``rc_measured`` (weights ``1/u^2``); if None the
        fit is unweighted and the covariance is scaled by the residual variance.
    fixed_a : fix the asymptote (e.g. 1.0) instead of fitting it (needs >= 2 spheres).
    scale_covariance : multiply the covariance by chi2/dof (when the stated uncertainties are
        not trusted to be complete).

    Raises :class:`InputError` for bad data and :class:`FitError` if the fit fails.
    """
    v = _volumes(volumes_ml, "volumes_ml")
    rc = np.asarray(rc_measured, dtype=float)
    if v.ndim != 1 or rc.shape != v.shape:
        raise InputError(f"volumes_ml and rc_measured must be 1-D of equal length, got {v.shape} and {rc.shape}",
                         field="rc_measured")
    if not np.all(np.isfinite(rc)) or np.any(rc <= 0):
        raise InputError("measured recovery coefficients must be positive finite numbers", field="rc_measured")
    n_par = 3 if fixed_a is None else 2
    if v.size < n_par:
        raise InputError(f"{v.size} spheres cannot determine {n_par} parameters", field="volumes_ml")
    if rc_uncertainty is None:
        u = None
        if v.size <= n_par:
            raise InputError(f"an unweighted fit needs more than {n_par} spheres to estimate the residual variance",
                             field="volumes_ml")
    else:
        u = np.asarray(rc_uncertainty, dtype=float)
        if u.shape != v.shape or not np.all(np.isfinite(u)) or np.any(u <= 0):
            raise InputError("rc_uncertainty must be positive finite numbers, one per sphere", field="rc_uncertainty")
    if fixed_a is not None and not (math.isfinite(fixed_a) and fixed_a > 0):
        raise InputError(f"fixed_a must be positive, got {fixed_a!r}", field="fixed_a")

    a0, b0, c0 = _initial_guess(v, rc, fixed_a)
    # The fit is done in the natural parameters (a, b, c), with trust-region-reflective bounds
    # keeping them positive, so that the covariance is directly that of the stored parameters.
    if fixed_a is None:
        def f(x, a, b, c):
            return _rc(x, a, b, c)

        def jac(x, a, b, c):
            return _grad(x, a, b, c)

        p0, lo, hi = [a0, b0, c0], [1e-9, 1e-9, 1e-3], [np.inf, np.inf, 50.0]
    else:
        def f(x, b, c):
            return _rc(x, fixed_a, b, c)

        def jac(x, b, c):
            return _grad(x, fixed_a, b, c)[:, 1:]

        p0, lo, hi = [b0, c0], [1e-9, 1e-3], [np.inf, 50.0]
    try:
        popt, pcov = curve_fit(
            f, v, rc, p0=p0, sigma=u, absolute_sigma=u is not None, jac=jac,
            bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=20000, ftol=1e-14, xtol=1e-14, gtol=1e-14,
        )
    except (RuntimeError, ValueError) as exc:
        raise FitError(f"recovery-curve fit failed: {exc}") from None
    if not np.all(np.isfinite(pcov)):
        raise FitError("recovery-curve fit: parameter covariance is undetermined (too few or degenerate spheres)")
    resid = rc - f(v, *popt)
    w = np.ones_like(v) if u is None else 1.0 / u**2
    chi2 = float(np.sum(w * resid**2))
    dof = int(v.size - n_par)
    scaled = u is None
    if scale_covariance and u is not None:
        if dof <= 0:
            raise InputError("scale_covariance needs more spheres than parameters", field="scale_covariance")
        pcov = pcov * chi2 / dof
        scaled = True
    cov = np.zeros((3, 3))
    if fixed_a is None:
        a, b, c = popt
        cov[:, :] = pcov
    else:
        a, (b, c) = fixed_a, popt
        cov[1:, 1:] = pcov
    cov = 0.5 * (cov + cov.T)
    return RecoveryCurve(
        a=float(a), b_ml=float(b), c=float(c), covariance=cov,
        volumes_ml=tuple(v), rc_measured=tuple(rc), rc_uncertainty=() if u is None else tuple(u),
        chi2=chi2, dof=dof, covariance_scaled=scaled, fixed=() if fixed_a is None else ("a",),
        description=description, metadata=dict(metadata or {}),
    )


# --------------------------------------------------------------------------- correction


@dataclass(frozen=True)
class RecoveryCorrection:
    """Result of :func:`correct_activity`: corrected activity (with components), the RC used
    and whether the volume lay outside the phantom volumes the curve was fitted to."""

    activity: Quantity
    recovery_coefficient: Quantity
    extrapolated: bool


def correct_activity(
    activity_mbq: float | Quantity,
    volume_ml: float | Quantity,
    curve: RecoveryCurve,
    *,
    activity_uncertainty_mbq: float = 0.0,
    volume_uncertainty_ml: float = 0.0,
    min_rc: float = 0.05,
) -> RecoveryCorrection:
    """Partial-volume-corrected activity ``A / RC(V)`` with its uncertainty components
    (``"activity"``, ``"recovery curve"``, ``"volume"``; module docstring).

    ``activity_mbq`` and ``volume_ml`` may be Quantities (their uncertainties are used) or
    numbers with ``*_uncertainty_*`` given separately. Raises :class:`PhysicsError` when RC is
    below ``min_rc`` (a correction by more than 1/min_rc is not a measurement any more).

    Examples
    --------
    a = 1, b = 2 mL, c = 1, no parameter uncertainty; V = 6 mL: RC = 0.75, A = 3 MBq -> 4 MBq.

    >>> curve = RecoveryCurve(a=1.0, b_ml=2.0, c=1.0, covariance=np.zeros((3, 3)))
    >>> r = correct_activity(3.0, 6.0, curve, activity_uncertainty_mbq=0.3)
    >>> round(r.activity.value, 6), round(r.activity.components["activity"], 6)
    (4.0, 0.4)
    """
    if isinstance(activity_mbq, Quantity):
        if activity_uncertainty_mbq:
            raise InputError("give the activity uncertainty in the Quantity or separately, not both",
                             field="activity_uncertainty_mbq")
        if activity_mbq.unit != "MBq":
            raise InputError(f"activity must be in MBq, got '{activity_mbq.unit}'", field="activity_mbq")
        a_val, a_u = activity_mbq.value, activity_mbq.uncertainty
    else:
        a_val, a_u = float(activity_mbq), float(activity_uncertainty_mbq)
    if isinstance(volume_ml, Quantity):
        if volume_uncertainty_ml:
            raise InputError("give the volume uncertainty in the Quantity or separately, not both",
                             field="volume_uncertainty_ml")
        if volume_ml.unit != "mL":
            raise InputError(f"volume must be in mL, got '{volume_ml.unit}'", field="volume_ml")
        v_val, v_u = volume_ml.value, volume_ml.uncertainty
    else:
        v_val, v_u = float(volume_ml), float(volume_uncertainty_ml)
    if not math.isfinite(a_val) or not (a_u >= 0):
        raise InputError("activity must be finite with a non-negative uncertainty", field="activity_mbq")
    if not (math.isfinite(v_val) and v_val > 0 and v_u >= 0):
        raise InputError("volume must be positive with a non-negative uncertainty", field="volume_ml")
    rc, u_rc = curve.rc_with_uncertainty(v_val)
    if rc < min_rc:
        raise PhysicsError(
            f"RC({v_val:g} mL) = {rc:.3g} is below {min_rc:g}: the object is too small for a partial-volume "
            "correction with this curve"
        )
    corrected = a_val / rc
    c_act = a_u / rc
    c_rc = abs(a_val) * u_rc / rc**2
    c_vol = abs(a_val) * abs(curve.derivative_volume(v_val)) * v_u / rc**2
    extrap = bool(curve.is_extrapolation(v_val))
    method = f"partial-volume correction A / RC(V), {curve.model}" + (
        " (extrapolated beyond the phantom volumes)" if extrap else "")
    return RecoveryCorrection(
        activity=Quantity(corrected, math.sqrt(c_act**2 + c_rc**2 + c_vol**2), "MBq", method,
                          {"activity": c_act, "recovery curve": c_rc, "volume": c_vol}),
        recovery_coefficient=Quantity(rc, u_rc, "1", curve.model),
        extrapolated=extrap,
    )


__all__ = [
    "RecoveryCorrection",
    "RecoveryCurve",
    "correct_activity",
    "fit_recovery_curve",
    "load_recovery_curve",
]
