"""Dose-volume histograms and dose-volume metrics of voxel dose maps.

Layer 3: arrays in, frozen results out; the CSV helpers return text and the caller writes it
(atomically). Voxels are taken to have equal volumes (one grid).

Definitions
-----------
Let the region hold n voxels of volume v with doses d_1..d_n.

* Mean dose: the volume-weighted mean (1/n) sum d_i (the mean of the DVH). With a density map
  the mass-weighted mean sum d_i m_i / sum m_i (energy / mass, ICRU Report 85, the mean absorbed
  dose to the region) is given as well.
* D_x (ICRU Report 83, 2010, J ICRU 10(1), "D_V": the minimum absorbed dose received
  by the "hottest" volume V; here V = x % of the region): with the doses sorted in decreasing
  order d_(1) >= d_(2) >= ..., D_x = d_(k) with k = ceil(x n / 100) (k >= 1): the smallest number of
  hottest voxels that together make up at least x % of the volume, and the lowest dose among
  them. So at least x % of the volume receives >= D_x. No interpolation between voxels:
  D_100 = minimum, D_(100/n) = maximum. D_50 is therefore the lower median for even n (the
  ``median`` entry is the usual average of the two middle values).
* V_D (ICRU Report 83): the volume receiving at least D (d_i >= D), in mL and in % of the region.
* EUD (Niemierko A 1997, Med Phys 24:103-110, "Reporting and analyzing dose distributions: a
  concept of equivalent uniform dose"; exponential cell-survival form without fractionation)::

      EUD = -(1/alpha) ln[ (1/n) sum_i exp(-alpha d_i) ]

  the uniform dose giving the same expected clonogen survival; EUD = d for a uniform dose.
  Evaluated as d_min - (1/alpha) ln[(1/n) sum_i exp(-alpha (d_i - d_min))] (log-sum-exp: no
  underflow at high doses).
* BED per voxel (Dale 1985, Br J Radiol 58:515; see :mod:`mrtdose.physics.radiobiology`)::

      BED_i = d_i + G_i d_i^2 / (alpha/beta)

  with one G for the region or a G map. Its distribution gets the same metrics; with
  ``alpha_per_gy`` its EUD is the equivalent uniform BED (EUBED = -(1/alpha) ln[(1/n) sum_i
  exp(-alpha BED_i)]: O'Donoghue JA 1999, J Nucl Med 40:1337-1341, "Implications of nonuniform
  tumor doses for radioimmunotherapy", the LQ form of the EUD for protracted irradiation;
  Prideaux AR et al. 2007, J Nucl Med 48:1008-1016, EUBED for 3D radiobiological dosimetry).

Voxel maps carry no voxel-level uncertainty here; every quantity's uncertainty is therefore
null in JSON, with a note saying so.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mrtdose.errors import InputError
from mrtdose.kinetics.voxel import RegionIndex
from mrtdose.quantities import Quantity

REF_ICRU83 = (
    "ICRU Report 83: Prescribing, recording, and reporting photon-beam intensity-modulated "
    "radiation therapy (IMRT). J ICRU 2010;10(1)"
)
REF_ICRU85 = "ICRU Report 85: Fundamental quantities and units for ionizing radiation. J ICRU 2011;11(1)"
REF_NIEMIERKO = (
    "Niemierko A. Reporting and analyzing dose distributions: a concept of equivalent uniform "
    "dose. Med Phys 1997;24:103-110"
)
REF_ODONOGHUE = (
    "O'Donoghue JA. Implications of nonuniform tumor doses for radioimmunotherapy. J Nucl Med "
    "1999;40:1337-1341"
)
REF_PRIDEAUX = (
    "Prideaux AR, Song H, Hobbs RF, et al. Three-dimensional radiobiologic dosimetry: application "
    "of radiobiologic modeling to patient-specific 3-dimensional imaging-based internal "
    "dosimetry. J Nucl Med 2007;48:1008-1016"
)
REF_DALE = (
    "Dale RG. The application of the linear-quadratic dose-effect equation to fractionated and "
    "protracted radiotherapy. Br J Radiol 1985;58:515-528"
)

#: Default D_x levels (% of the volume).
DEFAULT_D_PERCENTS: tuple[float, ...] = (2.0, 5.0, 50.0, 70.0, 90.0, 98.0)
#: Default V_D thresholds (Gy).
DEFAULT_THRESHOLDS_GY: tuple[float, ...] = (5.0, 10.0, 20.0, 23.0, 30.0, 50.0, 100.0)

_NOTE = "voxel-level uncertainty is not propagated: uncertainties are null"


@dataclass(frozen=True)
class BedParameters:
    """Linear-quadratic parameters for voxel BED.

    alpha_beta_gy : alpha/beta (Gy).
    g_factor : Lea-Catcheside G, one value or a map of the dose map's shape (e.g. from voxel
        kinetics, :func:`mrtdose.physics.radiobiology.g_factor_monoexponential` per voxel).
    alpha_per_gy : alpha (1/Gy) for the EUBED; None: no EUBED.
    tissue : name of the tissue the values are for (reported).
    """

    alpha_beta_gy: float
    g_factor: Any
    alpha_per_gy: float | None = None
    tissue: str = ""

    def __post_init__(self) -> None:
        ab = float(self.alpha_beta_gy)
        if not (ab > 0 and math.isfinite(ab)):
            raise InputError(f"alpha/beta must be a finite number > 0 Gy, got {self.alpha_beta_gy}")
        g = np.asarray(self.g_factor, dtype=np.float64)
        if g.size == 0 or not np.all(np.isfinite(g)) or g.min() < 0 or g.max() > 1 + 1e-12:
            raise InputError("the G factor must lie in [0, 1]")
        if self.alpha_per_gy is not None and not (float(self.alpha_per_gy) > 0):
            raise InputError(f"alpha must be > 0 1/Gy, got {self.alpha_per_gy}")
        object.__setattr__(self, "alpha_beta_gy", ab)


@dataclass(frozen=True)
class DVHMetrics:
    """Dose-volume metrics of one region (see the module docstring for definitions).

    ``quantity`` is "absorbed dose" or "BED"; values are in Gy either way. ``d_percent_gy`` maps
    x (% of volume) to D_x; ``v_ml`` / ``v_percent`` map a threshold (Gy) to V_D.
    """

    quantity: str
    n_voxels: int
    volume_ml: float
    mean_gy: float
    median_gy: float
    min_gy: float
    max_gy: float
    std_gy: float
    d_percent_gy: Mapping[float, float]
    v_ml: Mapping[float, float]
    v_percent: Mapping[float, float]
    mass_weighted_mean_gy: float | None = None
    eud_gy: float | None = None
    eud_alpha_per_gy: float | None = None
    bed: "DVHMetrics | None" = None
    bed_parameters: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = ()
    references: tuple[str, ...] = ()

    def d(self, percent: float) -> float:
        """D_x for a level that was computed."""
        return self.d_percent_gy[float(percent)]

    def to_json(self) -> dict[str, Any]:
        """JSON form; every dose is ``{"value", "uncertainty": null, "unit": "Gy"}``."""
        label = "BED" if self.quantity == "BED" else "absorbed dose"

        def q(x: float | None, method: str = "") -> dict[str, Any] | None:
            if x is None:
                return None
            return Quantity(x, math.nan, "Gy", method=method).to_json()

        out: dict[str, Any] = {
            "quantity": label,
            "n_voxels": self.n_voxels,
            "volume_ml": self.volume_ml,
            "mean": q(self.mean_gy, "volume-weighted mean"),
            "median": q(self.median_gy),
            "min": q(self.min_gy),
            "max": q(self.max_gy),
            "std": q(self.std_gy),
            "D": {f"D{_fmt(k)}": q(v, "ICRU 83 D_x: minimum dose to the hottest x %") for k, v in self.d_percent_gy.items()},
            "V": {
                f"V{_fmt(k)}Gy": {"volume_ml": {"value": self.v_ml[k], "uncertainty": None, "unit": "mL"},
                                  "volume_percent": {"value": self.v_percent[k], "uncertainty": None, "unit": "%"}}
                for k in self.v_ml
            },
            "notes": list(self.notes) or [_NOTE],
            "references": list(self.references),
        }
        if self.mass_weighted_mean_gy is not None:
            out["mass_weighted_mean"] = q(self.mass_weighted_mean_gy, "energy / mass (ICRU 85)")
        if self.eud_gy is not None:
            name = "eubed" if self.quantity == "BED" else "eud"
            out[name] = q(self.eud_gy, f"Niemierko 1997 EUD, alpha = {self.eud_alpha_per_gy} /Gy")
        if self.bed is not None:
            out["bed"] = self.bed.to_json()
            out["bed"]["parameters"] = dict(self.bed_parameters or {})
        return out


def _fmt(x: float) -> str:
    return f"{x:g}"


# ---------------------------------------------------------------------------------------------
# Core (on a 1-D array of the region's voxel values)
# ---------------------------------------------------------------------------------------------


def _dx_ranks(n: int, percents: Sequence[float]) -> list[int]:
    """k = ceil(x n / 100) >= 1 for each x (the number of hottest voxels, see module docstring)."""
    ks = []
    for p in percents:
        p = float(p)
        if not (0 < p <= 100):
            raise InputError(f"D_x levels must lie in (0, 100] %, got {p}")
        # round() guards against x n / 100 landing a hair above an integer
        ks.append(max(1, math.ceil(round(p * n / 100.0, 9))))
    return ks


def d_percent(values: np.ndarray, percents: Sequence[float]) -> dict[float, float]:
    """D_x of ``values`` for each x in ``percents`` (module docstring definition)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = v.size
    if n == 0:
        raise InputError("no voxels")
    ks = _dx_ranks(n, percents)
    part = np.partition(v, sorted({n - k for k in ks}))  # ascending index of the k-th largest
    return {float(p): float(part[n - k]) for p, k in zip(percents, ks)}


def _metrics(
    d: np.ndarray,
    voxel_volume_ml: float,
    d_percents: Sequence[float],
    thresholds: Sequence[float],
    eud_alpha: float | None,
    quantity: str,
    masses: np.ndarray | None = None,
    srt: np.ndarray | None = None,
    ranked: Callable[[int], float] | None = None,
) -> DVHMetrics:
    """Metrics of the values ``d``. The order statistics (D_x, median, minimum, maximum) come
    from one sort of ``d`` (``srt`` if the caller has sorted them already; it also gives V_D by
    binary search), or from ``ranked(i)``, the i-th smallest value (0-based), when the caller
    knows them (BED from the sorted doses)."""
    n = d.size
    if n == 0:
        raise InputError("the mask selects no voxels")
    vol = n * voxel_volume_ml
    ks = _dx_ranks(n, d_percents)
    mid = ((n - 1) // 2, n // 2)
    if ranked is None:
        if srt is None:
            srt = np.sort(d)  # one sort: D_x, median, minimum, maximum and V_D
        values = srt

        def ranked(i: int) -> float:
            return float(values[i])
    else:
        srt = None

    dmin, dmax = ranked(0), ranked(n - 1)
    if not (math.isfinite(dmin) and math.isfinite(dmax)):
        raise InputError("the dose map has non-finite values inside the mask")
    dx = {float(p): ranked(n - k) for p, k in zip(d_percents, ks)}
    median = 0.5 * (ranked(mid[0]) + ranked(mid[1]))
    v_ml: dict[float, float] = {}
    v_pc: dict[float, float] = {}
    for th in thresholds:
        if srt is not None:  # the number of values >= th
            c = n - int(np.searchsorted(srt, th, side="left"))
        else:
            c = int(np.count_nonzero(d >= th))
        v_ml[float(th)] = c * voxel_volume_ml
        v_pc[float(th)] = 100.0 * c / n
    del srt
    mean = float(np.mean(d))
    refs = [REF_ICRU83]
    eud = None
    if eud_alpha is not None:
        a = float(eud_alpha)
        # log-sum-exp about the minimum dose (the largest exponent): no underflow
        e = d - dmin
        e *= -a
        np.exp(e, out=e)
        eud = dmin - math.log(float(np.mean(e))) / a
        del e
        refs.append(REF_NIEMIERKO)
    mw = None
    if masses is not None:
        mw = float(np.dot(d, masses) / masses.sum())
        refs.append(REF_ICRU85)
    return DVHMetrics(
        quantity=quantity,
        n_voxels=int(n),
        volume_ml=float(vol),
        mean_gy=mean,
        median_gy=median,
        min_gy=dmin,
        max_gy=dmax,
        std_gy=float(np.std(d)),
        d_percent_gy=MappingProxyType(dx),
        v_ml=MappingProxyType(v_ml),
        v_percent=MappingProxyType(v_pc),
        mass_weighted_mean_gy=mw,
        eud_gy=eud,
        eud_alpha_per_gy=None if eud_alpha is None else float(eud_alpha),
        notes=(_NOTE,),
        references=tuple(refs),
    )


def _region_metrics(d, g, rho, voxel_volume_ml, d_percents, thresholds, eud_alpha, bed_params) -> DVHMetrics:
    masses = None if rho is None else rho * voxel_volume_ml
    dose_sorted = np.sort(d)  # the one sort of the region's doses (dose and BED metrics)
    m = _metrics(d, voxel_volume_ml, d_percents, thresholds, eud_alpha, "absorbed dose", masses, srt=dose_sorted)
    if bed_params is None:
        return m
    if m.min_gy < 0:
        raise InputError(f"BED needs absorbed doses >= 0 Gy (minimum {m.min_gy:g})")
    ab = bed_params.alpha_beta_gy
    bed_vals = np.multiply(g, d)  # Dale 1985: d + G d^2 / (alpha/beta), in one buffer
    bed_vals *= d
    bed_vals /= ab
    bed_vals += d
    ranked = None
    if np.ndim(g) == 0:
        # With one G >= 0 and doses >= 0, BED(d) = d + G d^2 / (alpha/beta) is non-decreasing in
        # d, also in floating point (each rounded operation is monotone on non-negative
        # operands): the i-th smallest BED is BED(i-th smallest dose), evaluated with the same
        # operations as bed_vals, so no second sort is needed.
        gs = float(g)

        def ranked(i: int) -> float:
            x = float(dose_sorted[i])
            return x + gs * x * x / ab

    b = _metrics(bed_vals, voxel_volume_ml, d_percents, thresholds, bed_params.alpha_per_gy, "BED", ranked=ranked)
    brefs = (REF_DALE,) + ((REF_ODONOGHUE, REF_PRIDEAUX) if bed_params.alpha_per_gy is not None else ())
    b = _replace(b, references=b.references + brefs)
    gp: dict[str, Any] = {"alpha_beta_gy": bed_params.alpha_beta_gy, "tissue": bed_params.tissue}
    if np.ndim(g) == 0:
        gp["g_factor"] = float(g)
    else:
        gp["g_factor"] = "per voxel"
        gp["g_factor_mean"] = float(np.mean(g))
    if bed_params.alpha_per_gy is not None:
        gp["alpha_per_gy"] = float(bed_params.alpha_per_gy)
    return _replace(m, bed=b, bed_parameters=MappingProxyType(gp), references=m.references + brefs)


def _replace(m: DVHMetrics, **kw) -> DVHMetrics:
    from dataclasses import replace

    return replace(m, **kw)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _check_dose(dose_map_gy) -> np.ndarray:
    d = np.asarray(dose_map_gy)
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise InputError(f"dose map must be numeric, got dtype {d.dtype}")
    return d


def _check_volume(v) -> float:
    x = float(v)
    if not (x > 0 and math.isfinite(x)):
        raise InputError(f"voxel_volume_ml must be a finite number > 0, got {v}")
    return x


def _check_alpha(a) -> float | None:
    if a is None:
        return None
    x = float(a)
    if not (x > 0 and math.isfinite(x)):
        raise InputError(f"eud_alpha_per_gy must be a finite number > 0 1/Gy, got {a}")
    return x


def _select(arr, shape, sel: np.ndarray | None, name: str):
    """Scalar, or the selected voxels of a grid-shaped map."""
    if arr is None:
        return None
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 0:
        return float(a)
    if a.shape != shape:
        raise InputError(f"{name} has shape {a.shape}, expected the dose map's {shape}")
    flat = a.reshape(-1)
    return flat if sel is None else flat[sel]


def dvh_metrics(
    dose_map_gy,
    mask,
    voxel_volume_ml: float,
    *,
    thresholds_gy: Sequence[float] = DEFAULT_THRESHOLDS_GY,
    d_percents: Sequence[float] = DEFAULT_D_PERCENTS,
    eud_alpha_per_gy: float | None = None,
    bed_params: BedParameters | None = None,
    density_map_g_per_ml=None,
) -> DVHMetrics:
    """Dose-volume metrics of the voxels of ``dose_map_gy`` selected by ``mask``.

    Parameters
    ----------
    dose_map_gy : absorbed dose per voxel (Gy).
    mask : boolean array of the map's shape, or None for every voxel.
    voxel_volume_ml : volume of one voxel (mL).
    thresholds_gy : doses D for V_D.
    d_percents : levels x (%) for D_x.
    eud_alpha_per_gy : alpha for the Niemierko EUD of the absorbed dose (None: no EUD).
    bed_params : LQ parameters for voxel BED statistics and (with alpha) the EUBED.
    density_map_g_per_ml : optional, for the mass-weighted mean dose.

    Examples
    --------
    >>> d = np.arange(1.0, 11.0)                 # ten voxels, 1..10 Gy
    >>> m = dvh_metrics(d, None, 0.5, thresholds_gy=(5.0,), d_percents=(10, 50, 90))
    >>> m.d(10), m.d(50), m.d(90), m.v_ml[5.0], m.v_percent[5.0]
    (10.0, 6.0, 2.0, 3.0, 60.0)
    """
    d = _check_dose(dose_map_gy)
    v = _check_volume(voxel_volume_ml)
    if mask is None:
        sel = None
        vals = d.reshape(-1)
    else:
        mk = np.asarray(mask)
        if mk.dtype != bool:
            raise InputError(f"mask must be a boolean array, got dtype {mk.dtype}")
        if mk.shape != d.shape:
            raise InputError(f"mask shape {mk.shape} does not match the dose map {d.shape}")
        sel = np.flatnonzero(mk)
        vals = d.reshape(-1)[sel]
    vals = np.asarray(vals, dtype=np.float64)
    g = None if bed_params is None else _select(bed_params.g_factor, d.shape, sel, "G-factor map")
    rho = _select(density_map_g_per_ml, d.shape, sel, "density map")
    if rho is not None and np.ndim(rho) == 0:
        rho = np.full(vals.size, rho)
    if rho is not None and (rho.size and not (rho.min() > 0)):
        raise InputError("density must be > 0 g/mL inside the mask")
    return _region_metrics(vals, g, rho, v, d_percents, tuple(thresholds_gy), _check_alpha(eud_alpha_per_gy), bed_params)


def dvh_metrics_by_label(
    dose_map_gy,
    label_map,
    labels: Sequence[int] | None,
    voxel_volume_ml: float,
    *,
    region_index: RegionIndex | None = None,
    **options: Any,
) -> dict[int, DVHMetrics]:
    """:func:`dvh_metrics` for several labelled regions with one grouping pass (a
    :class:`mrtdose.kinetics.voxel.RegionIndex`: one radix sort of the region index instead of
    one full-grid mask per region). Pass ``region_index`` to reuse a grouping (then
    ``label_map`` and ``labels`` may be None)."""
    d = _check_dose(dose_map_gy)
    if region_index is None:
        lab = np.asarray(label_map)
        if lab.shape != d.shape:
            raise InputError(f"label map shape {lab.shape} does not match the dose map {d.shape}")
        region_index = RegionIndex.build(lab, labels)
    region_index.check(d.shape, "dose map")
    v = _check_volume(voxel_volume_ml)
    order = region_index.order
    dflat = np.asarray(d.reshape(-1)[order], dtype=np.float64)
    bed_params: BedParameters | None = options.pop("bed_params", None)
    rho_map = options.pop("density_map_g_per_ml", None)
    g_all = None if bed_params is None else _select(bed_params.g_factor, d.shape, order, "G-factor map")
    rho_all = _select(rho_map, d.shape, order, "density map")
    thresholds = tuple(options.pop("thresholds_gy", DEFAULT_THRESHOLDS_GY))
    d_percents = tuple(options.pop("d_percents", DEFAULT_D_PERCENTS))
    alpha = _check_alpha(options.pop("eud_alpha_per_gy", None))
    if options:
        raise InputError(f"unknown options: {sorted(options)}")
    out: dict[int, DVHMetrics] = {}
    off = region_index.offsets
    for i, label in enumerate(region_index.labels):  # loop over regions
        lo, hi = int(off[i]), int(off[i + 1])
        if hi == lo:
            raise InputError(f"region {int(label)} has no voxels")
        g = g_all if (g_all is None or np.ndim(g_all) == 0) else g_all[lo:hi]
        rho = None
        if rho_all is not None:
            rho = np.full(hi - lo, rho_all) if np.ndim(rho_all) == 0 else rho_all[lo:hi]
        out[int(label)] = _region_metrics(dflat[lo:hi], g, rho, v, d_percents, thresholds, alpha, bed_params)
    return out


@dataclass(frozen=True)
class CumulativeDVH:
    """Cumulative DVH: fraction of the region's volume receiving at least each dose level."""

    dose_gy: np.ndarray
    volume_fraction: np.ndarray
    volume_ml: np.ndarray
    total_volume_ml: float

    def to_json(self) -> dict[str, Any]:
        return {
            "dose_gy": self.dose_gy.tolist(),
            "volume_fraction": self.volume_fraction.tolist(),
            "total_volume_ml": self.total_volume_ml,
        }


def cumulative_dvh(dose_map_gy, mask, voxel_volume_ml: float, bins: int | Sequence[float] = 200) -> CumulativeDVH:
    """Cumulative DVH V(>= D)/V at dose levels ``bins``: an int n gives n + 1 levels from 0 to
    the maximum dose in the region; an array gives the levels themselves (increasing)."""
    d = _check_dose(dose_map_gy)
    v = _check_volume(voxel_volume_ml)
    if mask is None:
        vals = d.reshape(-1)
    else:
        mk = np.asarray(mask)
        if mk.dtype != bool or mk.shape != d.shape:
            raise InputError(f"mask must be a boolean array of shape {d.shape}")
        vals = d[mk]
    vals = np.sort(np.asarray(vals, dtype=np.float64))
    n = vals.size
    if n == 0:
        raise InputError("the mask selects no voxels")
    if np.ndim(bins) == 0:
        nb = int(bins)
        if nb < 1:
            raise InputError(f"bins must be >= 1, got {bins}")
        levels = np.linspace(0.0, max(float(vals[-1]), 0.0), nb + 1)
    else:
        levels = np.asarray(bins, dtype=np.float64).reshape(-1)
        if levels.size == 0 or not np.all(np.isfinite(levels)) or np.any(np.diff(levels) <= 0):
            raise InputError("dose levels must be finite and strictly increasing")
    frac = (n - np.searchsorted(vals, levels, side="left")) / n
    return CumulativeDVH(levels, frac, frac * n * v, n * v)


# ---------------------------------------------------------------------------------------------
# CSV text (no file IO)
# ---------------------------------------------------------------------------------------------


def metrics_csv(metrics: Mapping[str, DVHMetrics]) -> str:
    """One row per region: volume, mean, median, min, max, D_x..., V_D (mL and %), EUD,
    mass-weighted mean, BED mean and EUBED where computed. Returns CSV text."""
    if not metrics:
        raise InputError("no regions to write")
    first = next(iter(metrics.values()))
    dks = list(first.d_percent_gy)
    vks = list(first.v_ml)
    header = ["region", "n_voxels", "volume_ml", "mean_gy", "median_gy", "min_gy", "max_gy", "std_gy"]
    header += [f"D{_fmt(k)}_gy" for k in dks]
    header += [f"V{_fmt(k)}Gy_ml" for k in vks] + [f"V{_fmt(k)}Gy_percent" for k in vks]
    header += ["eud_gy", "mass_weighted_mean_gy", "bed_mean_gy", "eubed_gy"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)

    def f(x):
        return "" if x is None else repr(float(x))

    for name, m in metrics.items():
        if list(m.d_percent_gy) != dks or list(m.v_ml) != vks:
            raise InputError(f"region {name}: metrics computed with different levels from the first region")
        row = [name, m.n_voxels, f(m.volume_ml), f(m.mean_gy), f(m.median_gy), f(m.min_gy), f(m.max_gy), f(m.std_gy)]
        row += [f(m.d_percent_gy[k]) for k in dks]
        row += [f(m.v_ml[k]) for k in vks] + [f(m.v_percent[k]) for k in vks]
        row += [f(m.eud_gy), f(m.mass_weighted_mean_gy),
                f(m.bed.mean_gy if m.bed else None), f(m.bed.eud_gy if m.bed else None)]
        w.writerow(row)
    return buf.getvalue()


def dvh_csv(curves: Mapping[str, CumulativeDVH]) -> str:
    """Long-format CSV text: region, dose_gy, volume_fraction, volume_ml."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["region", "dose_gy", "volume_fraction", "volume_ml"])
    for name, c in curves.items():
        for d, fr, ml in zip(c.dose_gy, c.volume_fraction, c.volume_ml):
            w.writerow([name, repr(float(d)), repr(float(fr)), repr(float(ml))])
    return buf.getvalue()
