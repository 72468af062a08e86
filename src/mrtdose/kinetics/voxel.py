"""Voxel-wise time-integrated activity (TIA) from a stack of activity maps.

Layer 2: arrays in, arrays out; no file formats, no geometry objects. Every method is vectorised
over voxels (numpy operations on arrays of shape ``(n_t, n_voxels)``); there is no Python loop
over voxels. Only voxels inside ``mask`` (e.g. the body outline) are computed; the others get
TIA 0 and method code :data:`METHOD_OUTSIDE`.

Conventions follow :mod:`mrtdose.kinetics.models`: times in hours after administration
(``times_h``), activities per voxel in MBq (any per-voxel quantity per unit time works: the dose
engines reuse :func:`integrate_maps` for dose-rate maps in Gy/h), TIA in MBq h, rates in 1/h.
The maps are the *measured* (not decay-corrected) activities.

Methods
-------
``"trapezoid"``
    Trapezoidal rule over the measured points plus an analytic tail by physical decay after the
    last point, A(t_n)/lambda_phys (MIRD Pamphlet 16, Siegel et al. 1999, J Nucl Med 40:37S,
    section on numerical integration). Before the first point the curve rises linearly from
    (0, 0) (``start="zero"``, the default, as in :mod:`mrtdose.kinetics.models`) or is constant
    at the first value (``start="constant"``). Closed form::

        TIA = S_0 + sum_{i=1}^{n-1} (t_i - t_{i-1}) (A_{i-1} + A_i) / 2 + A_{n-1} / lambda_phys
        S_0 = t_0 A_0 / 2 ("zero")   or   t_0 A_0 ("constant")

``"mono_exp"``
    Mono-exponential fit A(t) = A_f exp(-lambda t) of the last ``n_fit`` points by weighted
    linear least squares on y_i = ln A_i (closed form, below), the rate clamped to
    lambda >= lambda_phys (a tracer cannot outlast its physical decay: Glatting et al. 2007,
    Med Phys 34:4068; Kletting et al. 2013, Med Phys 40:102504; when the rate is clamped the
    amplitude is re-estimated with the slope fixed). With weights w_i the normal equations of
    y = a + b t give (e.g. Bevington & Robinson, Data Reduction and Error Analysis, 3rd ed.
    2003, eq. 6.12 with weights)::

        S = sum w, t_m = sum w t / S, y_m = sum w y / S          (weighted means)
        b = sum w (t - t_m) y / sum w (t - t_m)^2,  a = y_m - b t_m
        lambda = -b,  A_f = exp(a);  with lambda fixed: a = y_m + lambda t_m.

    (the centred form of b = (S Sty - St Sy) / (S Stt - St^2), which avoids the cancellation
    in the denominator when t is large compared with its spread).

    Weights (delta method, var(ln A) = var(A) / A^2): ``"poisson"`` w = A (var(A) proportional
    to A, counting statistics; the default), ``"absolute"`` w = A^2 (constant var(A)),
    ``"uniform"`` w = 1 (constant relative noise).

    TIA: if the fit uses every time point the fitted curve is integrated from t = 0, A_f/lambda
    (the mono-exponential model from administration; exact for noiseless mono-exponential
    voxels). Otherwise the points up to the first fitted time t_j are integrated as in
    ``"trapezoid"`` and the fitted curve from t_j to infinity is added,
    A_f exp(-lambda t_j)/lambda (the hybrid of MIRD Pamphlet 16).

    Fallback rule (stated in the method map, code :data:`METHOD_FIT_FALLBACK`): a voxel is
    integrated by ``"trapezoid"`` (with the physical tail) instead if any fitted point is
    <= ``noise_floor`` (noise-only or empty voxel: ln A undefined or meaningless), or if the
    fitted curve does not decrease (lambda <= 0: rising or flat curve; a clearance phase is not
    seen). A fitted rate in (0, lambda_phys) is clamped (code :data:`METHOD_FIT_CLAMPED`).

``"trapezoid_fit_tail"``
    Trapezoids over every measured point (start rule before the first) and, after the last
    point, the fitted mono-exponential of the last ``n_fit`` points (default 2) instead of
    physical decay: A_f exp(-lambda t_n)/lambda (MIRD Pamphlet 16, tail "by the clearance seen
    in the last points"; :class:`mrtdose.kinetics.models` ``trapezoid_exp_tail``). Same fit,
    clamping and fallback rule as ``"mono_exp"``.

``"region_scaled"``
    Hybrid region/voxel method: the voxel's activity at a reference time point times its
    region's TIA / A(t_ref) (the region's time-activity shape scales the voxel's one-time-point
    distribution), as in hybrid planar/SPECT dosimetry (Sjögreen Gleisner K et al. 2017, as cited
    in the voxel-dosimetry issue; Sundlöv A, Sjögreen Gleisner K, et al. 2017, Eur J Nucl Med
    Mol Imaging 44:1480-1489) and in PyTheranostics' ``compute_voxel_tia`` (region kinetics
    times one time point). Voxels whose label has no ratio fall back to ``"trapezoid"``
    (code :data:`METHOD_REGION_FALLBACK`). Region ratios are computed by the caller from
    region TACs (:func:`region_time_activity`), e.g. with :mod:`mrtdose.kinetics.fitting` or
    with :func:`integrate_curves` applied to the region curves.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping

import numpy as np

from mrtdose.errors import InputError

REF_MIRD16 = (
    "Siegel JA, Thomas SR, Stubbs JB, et al. MIRD Pamphlet No. 16: techniques for quantitative "
    "radiopharmaceutical biodistribution data acquisition and analysis for use in human radiation "
    "dose estimates. J Nucl Med 1999;40:37S-61S"
)
REF_GLATTING = (
    "Glatting G, Kletting P, Reske SN, Hohl K, Ring C. Choosing the optimal fit function: "
    "comparison of the Akaike information criterion and the F-test. Med Phys 2007;34:4068-4071"
)
REF_BEVINGTON = (
    "Bevington PR, Robinson DK. Data Reduction and Error Analysis for the Physical Sciences, "
    "3rd ed. McGraw-Hill 2003, ch. 6 (weighted least-squares fit to a straight line)"
)
REF_HYBRID = (
    "Sundlöv A, Sjögreen Gleisner K, Svensson J, et al. Individualised 177Lu-DOTATATE treatment "
    "of neuroendocrine tumours based on kidney dosimetry. Eur J Nucl Med Mol Imaging "
    "2017;44:1480-1489 (hybrid planar/SPECT: region kinetics scaling one SPECT)"
)

#: Method codes in :attr:`VoxelTIA.method_map`.
METHOD_OUTSIDE = 0
METHOD_TRAPEZOID = 1
METHOD_FIT = 2
METHOD_FIT_CLAMPED = 3
METHOD_FIT_FALLBACK = 4
METHOD_REGION = 5
METHOD_REGION_FALLBACK = 6

METHOD_NAMES: Mapping[int, str] = MappingProxyType(
    {
        METHOD_OUTSIDE: "outside mask (not computed, TIA 0)",
        METHOD_TRAPEZOID: "trapezoid + physical-decay tail",
        METHOD_FIT: "mono-exponential fit",
        METHOD_FIT_CLAMPED: "mono-exponential fit, rate clamped to lambda_phys",
        METHOD_FIT_FALLBACK: "trapezoid + physical tail (fit fallback: rising or noise-only curve)",
        METHOD_REGION: "region-scaled (voxel A(t_ref) x region TIA/A(t_ref))",
        METHOD_REGION_FALLBACK: "trapezoid + physical tail (no region ratio for the voxel's label)",
    }
)

Method = Literal["trapezoid", "mono_exp", "trapezoid_fit_tail", "region_scaled"]
Weighting = Literal["poisson", "absolute", "uniform"]


@dataclass(frozen=True)
class VoxelTIA:
    """A voxel TIA map and how each voxel was integrated.

    Attributes
    ----------
    tia_map_mbq_h : TIA per voxel (MBq h; the unit of the input maps times h).
    method_map : uint8 codes, see :data:`METHOD_NAMES`.
    method : the method asked for.
    decay_constant_per_h : lambda_phys used for tails and clamping.
    counts : number of voxels per method code (codes with no voxel omitted).
    settings : the options used (start rule, n_fit, weighting, ...).
    references : sources of the formulas.
    """

    tia_map_mbq_h: np.ndarray
    method_map: np.ndarray
    method: str
    decay_constant_per_h: float
    counts: Mapping[int, int]
    settings: Mapping[str, Any] = field(default_factory=dict)
    references: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Summary (no arrays): method, settings and voxel counts per method."""
        return {
            "method": self.method,
            "decay_constant_per_h": self.decay_constant_per_h,
            "settings": dict(self.settings),
            "voxels_by_method": {METHOD_NAMES[k]: int(v) for k, v in self.counts.items()},
            "total_tia_mbq_h": {
                "value": float(self.tia_map_mbq_h.sum(dtype=np.float64)),
                "uncertainty": None,
                "unit": "MBq h",
                "note": "voxel-level uncertainty is not propagated",
            },
            "references": list(self.references),
        }


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def _check_times(times_h, n_t: int) -> np.ndarray:
    t = np.asarray(times_h, dtype=np.float64).reshape(-1)
    if t.size != n_t:
        raise InputError(f"need one time per map: {t.size} times for {n_t} maps")
    if t.size < 1 or not np.all(np.isfinite(t)):
        raise InputError("times_h must be finite numbers")
    if t[0] < 0 or np.any(np.diff(t) <= 0):
        raise InputError(f"times_h must be >= 0 and strictly increasing, got {t.tolist()}")
    return t


def _check_lambda(decay_constant_per_h: float) -> float:
    lam = float(decay_constant_per_h)
    if not (lam > 0 and math.isfinite(lam)):
        raise InputError(f"decay_constant_per_h must be a finite number > 0, got {decay_constant_per_h}")
    return lam


def _check_stack(maps, name: str = "activity_maps") -> np.ndarray:
    a = np.asarray(maps)
    if a.ndim < 2:
        raise InputError(f"{name} must have shape (n_t, ...) with at least one voxel axis, got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{name} must be numeric, got dtype {a.dtype}")
    return a


def _mask_index(mask, grid_shape: tuple[int, ...]) -> np.ndarray | None:
    """Flat indices of the voxels to compute (None = all)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != bool:
        raise InputError(f"mask must be a boolean array, got dtype {m.dtype}")
    if m.shape != grid_shape:
        raise InputError(f"mask shape {m.shape} does not match the maps' grid {grid_shape}")
    return np.flatnonzero(m)


# ---------------------------------------------------------------------------------------------
# Curve integration on (n_t, n_voxels) arrays
# ---------------------------------------------------------------------------------------------


def trapezoid_physical_tail(t: np.ndarray, a: np.ndarray, lam_phys: float, start: str = "zero") -> np.ndarray:
    """Trapezoid + physical tail for curves ``a`` of shape (n_t, n) (see module docstring)."""
    if start == "zero":
        s0 = 0.5 * t[0] * a[0]
    elif start == "constant":
        s0 = t[0] * a[0]
    else:
        raise InputError(f"start must be 'zero' or 'constant', got '{start}'")
    dt = np.diff(t)
    body = np.zeros(a.shape[1:], dtype=np.float64)
    for i in range(len(dt)):  # loop over time points (n_t - 1), not voxels
        body += 0.5 * dt[i] * (a[i] + a[i + 1])
    return s0 + body + a[-1] / lam_phys


_WEIGHTINGS = ("poisson", "absolute", "uniform")
#: Stand-in for non-positive activities before the logarithm (their voxels are not fitted);
#: keeps every intermediate finite without a masked copy of the data.
_TINY = 1e-300


def fit_mono_exponential(
    t: np.ndarray, a: np.ndarray, lam_phys: float, weighting: str = "poisson", noise_floor: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form weighted log-linear fit of A_f exp(-lambda t) to curves ``a`` (n_k, n).

    Returns ``(amplitude_at_t0, rate_per_h, clamped, ok)``: A_f (the fitted curve at t = 0),
    lambda (>= lam_phys where ok), whether lambda was clamped, and whether the fit is usable
    (False: a point <= noise_floor, or lambda <= 0; see the module docstring). Values where not
    ok are 0. The sums run over the n_k time points as whole-array operations (a loop over time
    points, not voxels), into preallocated buffers (no per-operation temporaries).
    """
    k = a.shape[0]
    if k < 2:
        raise InputError("a mono-exponential fit needs at least 2 time points")
    if weighting not in _WEIGHTINGS:
        raise InputError(f"weighting must be 'poisson', 'absolute' or 'uniform', got '{weighting}'")
    tt = [float(x) for x in t]
    shape = a.shape[1:]
    positive = a[0] > noise_floor
    for i in range(1, k):
        positive &= a[i] > noise_floor
    ac = [np.maximum(a[i], _TINY) for i in range(k)]
    if weighting == "poisson":
        w = ac
        y = [np.log(x) for x in ac]
    else:
        w = [np.square(x) for x in ac] if weighting == "absolute" else None
        y = [np.log(x, out=x) for x in ac]
    tmp = np.empty(shape)
    # centred normal equations (same solution as b = (S Sty - St Sy) / (S Stt - St^2), with no
    # cancellation): t_m = St/S, y_m = Sy/S, b = sum w (t - t_m) y / sum w (t - t_m)^2
    if w is None:
        t_m = np.full(shape, sum(tt) / k)
        y_m = y[0].copy()
        for i in range(1, k):
            y_m += y[i]
        y_m /= k
    else:
        s = w[0].copy()
        st = w[0] * tt[0]
        sy = w[0] * y[0]
        for i in range(1, k):
            s += w[i]
            st += np.multiply(w[i], tt[i], out=tmp)
            sy += np.multiply(w[i], y[i], out=tmp)
        t_m = np.divide(st, s, out=st)
        y_m = np.divide(sy, s, out=sy)
        del s
    stt = np.zeros(shape)
    sty = np.zeros(shape)
    d = np.empty(shape)
    wd = d if w is None else np.empty(shape)
    for i in range(k):
        np.subtract(tt[i], t_m, out=d)
        if w is not None:
            np.multiply(w[i], d, out=wd)
        stt += np.multiply(wd, d, out=tmp)
        sty += np.multiply(wd, y[i], out=tmp)
    ok = positive
    ok &= stt > 0
    np.copyto(stt, 1.0, where=~ok)
    lam = np.negative(sty, out=sty)
    lam /= stt
    ok &= lam > 0
    clamped = ok & (lam < lam_phys)
    np.maximum(lam, lam_phys, out=lam, where=ok)
    a0 = np.add(y_m, np.multiply(lam, t_m, out=tmp), out=y_m)  # ln A_f = y_m + lambda t_m
    np.minimum(a0, 700.0, out=a0)  # exp stays finite for unusable voxels (zeroed below)
    amp = np.exp(a0, out=a0)
    bad = ~ok
    np.copyto(amp, 0.0, where=bad)
    np.copyto(lam, 0.0, where=bad)
    return amp, lam, clamped, ok


def integrate_curves(
    times_h,
    curves,
    decay_constant_per_h: float,
    *,
    method: Literal["trapezoid", "mono_exp", "trapezoid_fit_tail"] = "trapezoid",
    start: Literal["zero", "constant"] = "zero",
    n_fit: int | None = None,
    weighting: Weighting = "poisson",
    noise_floor: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate curves of shape (n_t, n) from 0 to infinity; returns (integrals, method codes).

    The workhorse of :func:`voxel_tia` (and of the dose-rate integration in
    :mod:`mrtdose.dose.voxel`); also usable on region TACs (n = number of regions). With a fit,
    the trapezoid of the fallback rule is evaluated on the fallback curves only.
    """
    a = np.asarray(curves, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    t = _check_times(times_h, a.shape[0])
    lam_p = _check_lambda(decay_constant_per_h)
    if start not in ("zero", "constant"):
        raise InputError(f"start must be 'zero' or 'constant', got '{start}'")
    if method == "trapezoid":
        trap = trapezoid_physical_tail(t, a, lam_p, start)
        return trap, np.full(a.shape[1:], METHOD_TRAPEZOID, dtype=np.uint8)
    if method not in ("mono_exp", "trapezoid_fit_tail"):
        raise InputError(f"method must be 'trapezoid', 'mono_exp' or 'trapezoid_fit_tail', got '{method}'")
    n_t = a.shape[0]
    default_k = n_t if method == "mono_exp" else 2
    k = default_k if n_fit is None else int(n_fit)
    if not 2 <= k <= n_t:
        raise InputError(f"n_fit must be between 2 and the number of time points ({n_t}), got {n_fit}")
    grid = a.shape[1:]
    a = a.reshape(n_t, -1)
    j = n_t - k
    amp, lam, clamped, ok = fit_mono_exponential(t[j:], a[j:], lam_p, weighting, noise_floor)
    bad = np.flatnonzero(~ok)
    lam_safe = lam
    lam_safe[bad] = 1.0  # (amp is 0 there; these voxels get the trapezoid below)
    if method == "trapezoid_fit_tail":
        # trapezoids over every point, fitted curve after the last one instead of physical decay
        trap = trapezoid_physical_tail(t, a, lam_p, start)
        out = trap - a[-1] / lam_p + amp * np.exp(-lam_safe * t[-1]) / lam_safe
    elif j == 0:
        out = np.divide(amp, lam_safe, out=amp)
    else:
        # trapezoid up to t_j (start rule before t_0), then the fitted curve from t_j on
        head = trapezoid_physical_tail(t[: j + 1], a[: j + 1], lam_p, start) - a[j] / lam_p
        out = head + amp * np.exp(-lam_safe * t[j]) / lam_safe
    codes = np.full(out.shape, METHOD_FIT, dtype=np.uint8)
    codes[clamped] = METHOD_FIT_CLAMPED
    if bad.size:
        out[bad] = trap[bad] if method == "trapezoid_fit_tail" else trapezoid_physical_tail(t, a[:, bad], lam_p, start)
        codes[bad] = METHOD_FIT_FALLBACK
    return out.reshape(grid), codes.reshape(grid)


def integrate_maps(
    times_h,
    maps,
    decay_constant_per_h: float,
    *,
    mask=None,
    method: Literal["trapezoid", "mono_exp", "trapezoid_fit_tail"] = "trapezoid",
    start: Literal["zero", "constant"] = "zero",
    n_fit: int | None = None,
    weighting: Weighting = "poisson",
    noise_floor: float = 0.0,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`integrate_curves` on a stack of maps (n_t, *grid), masked; returns
    (integral map float64, method-code map uint8) on the grid."""
    a = _check_stack(maps)
    grid = a.shape[1:]
    t = _check_times(times_h, a.shape[0])
    idx = _mask_index(mask, grid)
    vals, codes = _integrate_chunked(
        t, a, idx, decay_constant_per_h, workers, method=method, start=start, n_fit=n_fit,
        weighting=weighting, noise_floor=noise_floor,
    )
    return _scatter(vals, codes, idx, grid)


#: Voxels per block in the chunked computations: bounds the float64 temporaries (a few dozen
#: arrays of CHUNK values, 512 kB each) and keeps them in cache.
CHUNK_VOXELS = 1 << 16


def available_cpus() -> int:
    """The CPUs available to this process (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _n_workers(workers: int | None) -> int:
    """None -> the CPUs available to this process."""
    if workers is None:
        return available_cpus()
    w = int(workers)
    if w < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    return w


def _integrate_chunked(t, a, idx, lam, workers: int | None = None, **kw) -> tuple[np.ndarray, np.ndarray]:
    """:func:`integrate_curves` over blocks of voxels (a loop over blocks, not voxels), on
    ``workers`` threads (numpy releases the GIL inside its array operations; every block writes
    its own slice of the output, so the result does not depend on the number of threads)."""
    flat = a.reshape(a.shape[0], -1)
    n = flat.shape[1] if idx is None else idx.size
    vals = np.empty(n, dtype=np.float64)
    codes = np.empty(n, dtype=np.uint8)

    def block(lo: int) -> None:
        hi = min(n, lo + CHUNK_VOXELS)
        sel = flat[:, lo:hi] if idx is None else flat[:, idx[lo:hi]]
        curves = np.asarray(sel, dtype=np.float64)
        if not np.all(np.isfinite(curves)):
            raise InputError("maps contain non-finite values inside the mask")
        vals[lo:hi], codes[lo:hi] = integrate_curves(t, curves, lam, **kw)

    starts = range(0, n, CHUNK_VOXELS)
    nw = min(_n_workers(workers), len(starts))
    if nw <= 1:
        for lo in starts:
            block(lo)
    else:
        with ThreadPoolExecutor(max_workers=nw) as ex:
            for f in [ex.submit(block, lo) for lo in starts]:
                f.result()  # re-raises an InputError from a block
    return vals, codes


def _scatter(vals: np.ndarray, codes: np.ndarray, idx: np.ndarray | None, grid) -> tuple[np.ndarray, np.ndarray]:
    if idx is None:
        return vals.reshape(grid), codes.reshape(grid)
    out = np.zeros(int(np.prod(grid)), dtype=np.float64)
    cmap = np.zeros(out.size, dtype=np.uint8)
    out[idx] = vals
    cmap[idx] = codes
    return out.reshape(grid), cmap.reshape(grid)


# ---------------------------------------------------------------------------------------------
# Region helpers
# ---------------------------------------------------------------------------------------------


#: Up to this many regions, :meth:`RegionIndex.build` makes one pass over the label map per
#: region (cheaper than sorting for a few regions); more regions are grouped by one sort.
PER_REGION_PASSES_MAX = 16


@dataclass(frozen=True)
class RegionIndex:
    """The voxels of labelled regions, grouped by region once and reused (region sums, DVHs).

    ``order`` holds the flat voxel indices sorted by region (in the order of ``labels``; within
    a region in increasing index), region i occupying ``order[offsets[i]:offsets[i + 1]]``.
    Built with one ``flatnonzero`` pass of the label map per region for a few regions (up to
    :data:`PER_REGION_PASSES_MAX`), else one stable radix sort of a small-integer region index
    (O(n) in numpy); both give the same grouping.
    """

    labels: np.ndarray
    order: np.ndarray
    offsets: np.ndarray
    grid_shape: tuple[int, ...]

    @staticmethod
    def build(label_map, labels) -> "RegionIndex":
        lab = np.asarray(label_map)
        if not np.issubdtype(lab.dtype, np.integer):
            raise InputError(f"label map must hold integers, got dtype {lab.dtype}")
        labs = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labs.size <= PER_REGION_PASSES_MAX:
            return RegionIndex._build_by_passes(lab, labs)
        idx = label_index(lab, labs)
        sel = np.flatnonzero(idx < labs.size)
        key = idx[sel].astype(np.uint8 if labs.size < 255 else np.uint16 if labs.size < 65535 else np.intp)
        counts = np.bincount(key, minlength=labs.size)
        order = sel[np.argsort(key, kind="stable")]  # radix sort for 8/16-bit keys
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
        return RegionIndex(labs, order, offsets, tuple(lab.shape))

    @staticmethod
    def _build_by_passes(lab: np.ndarray, labs: np.ndarray) -> "RegionIndex":
        if np.unique(labs).size != labs.size:
            raise InputError(f"region labels must be distinct, got {labs.tolist()}")
        flat = lab.reshape(-1)
        info = np.iinfo(flat.dtype)
        parts = [np.flatnonzero(flat == flat.dtype.type(v)) if info.min <= v <= info.max
                 else np.empty(0, dtype=np.intp) for v in labs.tolist()]
        offsets = np.zeros(labs.size + 1, dtype=np.intp)
        np.cumsum([p.size for p in parts], out=offsets[1:])
        order = np.concatenate(parts) if parts else np.empty(0, dtype=np.intp)
        return RegionIndex(labs, order.astype(np.intp, copy=False), offsets, tuple(lab.shape))

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def check(self, shape: tuple[int, ...], name: str = "map") -> None:
        if tuple(shape) != self.grid_shape:
            raise InputError(f"{name} shape {tuple(shape)} does not match the region index grid {self.grid_shape}")

    def gather(self, grid_map) -> np.ndarray:
        """The map's values in region order (1-D)."""
        m = np.asarray(grid_map)
        self.check(m.shape)
        return m.reshape(-1)[self.order]

    def sums(self, grid_map) -> np.ndarray:
        """Sum of the map over each region (float64; empty regions give 0)."""
        v = self.gather(grid_map)
        out = np.zeros(self.labels.size)
        nz = self.counts > 0
        if v.size:  # accumulated in float64 whatever the map's type
            out[nz] = np.add.reduceat(v, self.offsets[:-1][nz], dtype=np.float64)
        return out


def region_time_activity(label_map, activity_maps, labels=None, *, index: RegionIndex | None = None) -> np.ndarray:
    """Sum of activity per region and time point, shape (n_t, n_labels), over the voxels of the
    listed regions (grouped once, :class:`RegionIndex`; pass ``index`` to reuse a grouping, then
    ``label_map`` and ``labels`` may be None); labels not present give 0."""
    a = _check_stack(activity_maps)
    if index is None:
        lab = np.asarray(label_map)
        if lab.shape != a.shape[1:]:
            raise InputError(f"label map shape {lab.shape} does not match the maps' grid {a.shape[1:]}")
        index = RegionIndex.build(lab, labels)
    index.check(a.shape[1:], "activity maps")
    out = np.empty((a.shape[0], index.labels.size), dtype=np.float64)
    for i in range(a.shape[0]):  # loop over time points
        out[i] = index.sums(a[i])
    return out


def label_index(label_map: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Flat array: position of each voxel's label in ``labels``, or len(labels) if absent."""
    if np.unique(labels).size != labels.size:
        raise InputError(f"region labels must be distinct, got {labels.tolist()}")
    flat = label_map.reshape(-1)
    lo, hi = int(flat.min(initial=0)), int(flat.max(initial=0))
    lo = min(lo, int(labels.min(initial=0)))
    hi = max(hi, int(labels.max(initial=0)))
    if hi - lo <= 1 << 22:  # small label range: a lookup table (one gather)
        lut = np.full(hi - lo + 1, labels.size, dtype=np.intp)
        lut[labels - lo] = np.arange(labels.size)
        return lut[flat.astype(np.intp) - lo]
    order = np.argsort(labels)
    pos = np.searchsorted(labels[order], flat)
    pos = np.clip(pos, 0, labels.size - 1)
    found = labels[order][pos] == flat
    return np.where(found, order[pos], labels.size)


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


def voxel_tia(
    times_h,
    activity_maps_mbq,
    decay_constant_per_h: float,
    *,
    method: Method = "mono_exp",
    mask=None,
    start: Literal["zero", "constant"] = "zero",
    n_fit: int | None = None,
    weighting: Weighting = "poisson",
    noise_floor_mbq: float = 0.0,
    label_map=None,
    region_tia_per_activity_h: Mapping[int, float] | None = None,
    reference_index: int = -1,
    workers: int | None = None,
) -> VoxelTIA:
    """Voxel TIA map from activity maps at ``times_h``; see the module docstring for methods.

    Parameters
    ----------
    times_h : (n_t,) hours after administration, strictly increasing.
    activity_maps_mbq : (n_t, *grid) measured activity per voxel (MBq).
    decay_constant_per_h : lambda_phys (1/h) of the nuclide.
    method : ``"trapezoid"``, ``"mono_exp"`` or ``"region_scaled"``.
    mask : boolean grid; only these voxels are computed (others: TIA 0, code 0).
    start : curve before the first point for trapezoids ("zero" or "constant").
    n_fit : number of last points in the mono-exponential fit (default: all, >= 2).
    weighting : fit weights ("poisson", "absolute", "uniform").
    noise_floor_mbq : fitted points at or below this make a voxel fall back to the trapezoid.
    label_map, region_tia_per_activity_h, reference_index : for ``"region_scaled"``: integer
        region labels on the grid, {label: region TIA / region A(t_ref) in h}, and the index of
        t_ref in ``times_h``.
    workers : threads for the blocks of voxels (None: the CPUs available to the process).

    Examples
    --------
    >>> t = np.array([4.0, 24.0, 96.0])
    >>> a = 10.0 * np.exp(-0.05 * t)[:, None] * np.ones((3, 2))
    >>> r = voxel_tia(t, a, 0.004344, method="mono_exp")
    >>> np.round(r.tia_map_mbq_h, 6).tolist()   # A0 / lambda = 10 / 0.05
    [200.0, 200.0]
    """
    a = _check_stack(activity_maps_mbq)
    grid = a.shape[1:]
    t = _check_times(times_h, a.shape[0])
    lam_p = _check_lambda(decay_constant_per_h)
    idx = _mask_index(mask, grid)
    settings: dict[str, Any] = {"start": start, "masked": idx is not None}
    refs: tuple[str, ...] = (REF_MIRD16,)
    if method in ("trapezoid", "mono_exp", "trapezoid_fit_tail"):
        vals, codes = _integrate_chunked(
            t, a, idx, lam_p, workers, method=method, start=start, n_fit=n_fit, weighting=weighting,
            noise_floor=noise_floor_mbq,
        )
        if method != "trapezoid":
            settings.update(n_fit=n_fit or (a.shape[0] if method == "mono_exp" else 2), weighting=weighting, noise_floor_mbq=noise_floor_mbq)
            refs = refs + (REF_GLATTING, REF_BEVINGTON)
    elif method == "region_scaled":
        vals, codes = _region_scaled(t, a, lam_p, idx, start, label_map, region_tia_per_activity_h, reference_index)
        settings.update(reference_time_h=float(t[reference_index]))
        refs = refs + (REF_HYBRID,)
    else:
        raise InputError(
            "method must be 'trapezoid', 'mono_exp', 'trapezoid_fit_tail' or 'region_scaled', "
            f"got '{method}'"
        )
    tia, cmap = _scatter(vals, codes, idx, grid)
    cnt = np.bincount(codes.reshape(-1), minlength=len(METHOD_NAMES))  # computed voxels
    cnt[METHOD_OUTSIDE] += cmap.size - codes.size  # the others: outside the mask
    return VoxelTIA(
        tia_map_mbq_h=tia,
        method_map=cmap,
        method=method,
        decay_constant_per_h=lam_p,
        counts=MappingProxyType({int(u): int(c) for u, c in enumerate(cnt) if c}),
        settings=MappingProxyType(settings),
        references=refs,
    )


def _region_scaled(t, a, lam_p, idx, start, label_map, ratios, ref_index):
    if label_map is None or ratios is None:
        raise InputError("method 'region_scaled' needs label_map and region_tia_per_activity_h")
    lab = np.asarray(label_map)
    if lab.shape != a.shape[1:]:
        raise InputError(f"label map shape {lab.shape} does not match the maps' grid {a.shape[1:]}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"label map must hold integers, got dtype {lab.dtype}")
    n_t = a.shape[0]
    if not -n_t <= int(ref_index) < n_t:
        raise InputError(f"reference_index {ref_index} is outside the {n_t} time points")
    labels = np.array(sorted(int(k) for k in ratios), dtype=np.int64)
    r = np.array([float(ratios[int(k)]) for k in labels], dtype=np.float64)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise InputError(f"region TIA/A(t_ref) ratios must be finite and >= 0 h, got {r.tolist()}")
    flat_lab = lab.reshape(-1) if idx is None else lab.reshape(-1)[idx]
    pos = label_index(flat_lab, labels)
    has = pos < labels.size
    r_ext = np.append(r, 0.0)
    a_ref = np.asarray(a[int(ref_index)].reshape(-1) if idx is None else a[int(ref_index)].reshape(-1)[idx],
                       dtype=np.float64)
    vals = a_ref * r_ext[pos]
    codes = np.full(vals.shape, METHOD_REGION, dtype=np.uint8)
    if not np.all(has):
        sel = np.flatnonzero(~has)
        flat = a.reshape(n_t, -1)
        src = sel if idx is None else idx[sel]
        curves = np.asarray(flat[:, src], dtype=np.float64)
        vals[sel] = trapezoid_physical_tail(t, curves, lam_p, start)
        codes[sel] = METHOD_REGION_FALLBACK
    return vals, codes
