"""Plots for the report, as self-contained PNG data URIs.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, never
through ``pyplot``: no global figure registry and no GUI backend, so rendering is safe from
several threads (web, batch) at once. Every plot only *draws* numbers taken from the results
document; nothing here computes a physical quantity.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: PNG metadata without the matplotlib version string, so that the same results give the same
#: report bytes (the report can then be hashed for the record).
_PNG_METADATA = {"Software": None}
_DPI = 110


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def figure_to_data_uri(fig: Figure) -> str:
    """Render ``fig`` to PNG with the Agg canvas and return a ``data:image/png;base64,...`` URI.

    The figure is cleared afterwards (it is not held by any global registry)."""
    try:
        canvas = FigureCanvasAgg(fig)
        buf = io.BytesIO()
        canvas.print_png(buf, metadata=_PNG_METADATA)
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    finally:
        fig.clear()


def _plain(text: str) -> str:
    """User text (region and model names) shown literally: no mathtext."""
    return str(text).replace("$", r"\$")


def _points(measurements: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float], list[float]]:
    t, a, s = [], [], []
    for m in measurements or []:
        act = m.get("activity") if isinstance(m, Mapping) else None
        if not isinstance(act, Mapping):
            continue
        ti, ai = m.get("time_h"), act.get("value")
        if not (_finite(ti) and _finite(ai)):
            continue
        ui = act.get("uncertainty")
        t.append(float(ti))
        a.append(float(ai))
        s.append(float(ui) if _finite(ui) else 0.0)
    return t, a, s


def kinetics_plot(
    measurements: Sequence[Mapping[str, Any]],
    curve: Mapping[str, Any] | None,
    title: str,
    model: str | None = None,
    points_label: str = "measured (±1 u, k=1)",
) -> str | None:
    """Time-activity plot: measurements with ±1 u error bars and the fitted curve (if given),
    on linear and logarithmic activity axes. Returns a PNG data URI, or None when there is
    nothing to draw."""
    t, a, s = _points(measurements)
    ct: list[float] = []
    ca: list[float] = []
    if isinstance(curve, Mapping):
        for x, y in zip(curve.get("time_h") or [], curve.get("activity_mbq") or []):
            if _finite(x) and _finite(y):
                ct.append(float(x))
                ca.append(float(y))
    if not t and not ct:
        return None
    fig = Figure(figsize=(9.0, 3.4), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, log in zip(axes, (False, True)):
        if ct:
            ax.plot(ct, ca, "-", color="#1f5f8b", lw=1.6, label=f"fit: {_plain(model)}" if model else "fitted curve")
        if t:
            ax.errorbar(t, a, yerr=s, fmt="o", ms=5, color="#c0392b", ecolor="#c0392b", capsize=3,
                        label=_plain(points_label))
        ax.set_xlabel("time after administration (h)")
        ax.set_ylabel("activity (MBq)")
        ax.grid(True, alpha=0.3)
        if log:
            positives = [v for v in a + ca if v > 0] + [v - e for v, e in zip(a, s) if v - e > 0]
            if positives:
                ax.set_yscale("log")
                ax.set_ylim(bottom=min(positives) / 2.0)
            ax.set_title("logarithmic activity axis", fontsize=9)
        else:
            ax.set_ylim(bottom=0.0)
            ax.set_title("linear activity axis", fontsize=9)
        ax.set_xlim(left=0.0)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(_plain(title), fontsize=10)
    return figure_to_data_uri(fig)


def budget_plot(contributions: Mapping[str, float], combined: float | None, title: str) -> str | None:
    """Horizontal bar chart of the share of the variance of one quantity per uncertainty
    component (``c_i^2 / u^2``; components of independent input groups add in quadrature).
    Returns a PNG data URI, or None when there is nothing to draw."""
    items = [(k, float(v)) for k, v in contributions.items() if _finite(v) and v > 0]
    if not items or not (_finite(combined) and combined > 0):  # type: ignore[operator]
        return None
    items.sort(key=lambda kv: kv[1])
    total = float(combined) ** 2  # type: ignore[arg-type]
    shares = [100.0 * v * v / total for _, v in items]
    fig = Figure(figsize=(6.5, 0.45 * len(items) + 1.0), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    ax.barh([_plain(k) for k, _ in items], shares, color="#1f5f8b")
    ax.set_xlabel("share of the variance (%)")
    ax.set_xlim(0, max(100.0, max(shares) * 1.05))
    ax.grid(True, axis="x", alpha=0.3)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(_plain(title), fontsize=9)
    return figure_to_data_uri(fig)


#: Line colours of the regions in the DVH plot and outline colours in the dose overlays: the
#: same region has the same colour in both (by its position in the results document).
REGION_COLOURS = (
    "#e41a1c", "#00d7ff", "#ff4fd8", "#ffffff", "#ff9f1c", "#7CFC00", "#b15928", "#9e9ac8",
    "#fdbf6f", "#1f78b4",
)
#: Line colours for the DVH plot (white is invisible on a white background).
_DVH_COLOURS = (
    "#e41a1c", "#1f78b4", "#984ea3", "#4d4d4d", "#ff7f00", "#33a02c", "#b15928", "#6a51a3",
    "#e6ab02", "#17becf",
)


def region_colour(i: int, *, on_dark: bool = True) -> str:
    """Colour of the ``i``-th region (0-based): outline colour on the dose map (``on_dark``) or
    line colour in the DVH plot."""
    palette = REGION_COLOURS if on_dark else _DVH_COLOURS
    return palette[i % len(palette)]


def dvh_plot(curves: Sequence[tuple[str, Sequence[Any], Sequence[Any]]], title: str) -> str | None:
    """Cumulative DVHs of all regions on one plot: volume fraction (in %) receiving at least the
    dose, against the dose in Gy, on linear and logarithmic dose axes (organ and lesion doses
    often differ by one or two orders of magnitude).

    ``curves``: (region name, dose_gy, volume_fraction) as stored in the results document
    (``voxel.regions[name].dvh_curve``); the fraction is only scaled to percent. Returns a PNG
    data URI, or None when there is nothing to draw."""
    lines = []
    for i, (name, dose, frac) in enumerate(curves):
        pts = [(float(d), 100.0 * float(f)) for d, f in zip(dose or [], frac or []) if _finite(d) and _finite(f)]
        if pts:
            lines.append((i, name, pts))
    if not lines:
        return None
    fig = Figure(figsize=(9.0, 3.8), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, log in zip(axes, (False, True)):
        any_line = False
        for i, name, pts in lines:
            xs = [d for d, _ in pts if d > 0] if log else [d for d, _ in pts]
            ys = [v for d, v in pts if d > 0] if log else [v for _, v in pts]
            if not xs:
                continue
            ax.plot(xs, ys, "-", lw=1.6, color=region_colour(i, on_dark=False), label=_plain(name))
            any_line = True
        ax.set_xlabel("absorbed dose (Gy)")
        ax.set_ylabel("volume receiving at least the dose (%)")
        ax.set_ylim(0.0, 102.0)
        ax.grid(True, alpha=0.3)
        if log and any_line:
            ax.set_xscale("log")
            ax.set_title("logarithmic dose axis", fontsize=9)
        else:
            ax.set_xlim(left=0.0)
            ax.set_title("linear dose axis", fontsize=9)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(_plain(title), fontsize=10)
    return figure_to_data_uri(fig)


def dose_overlay(
    dose_gy: Any,
    regions: Any,
    region_names: Sequence[str],
    spacing_mm: Sequence[float] | None,
    title: str,
    vmax_gy: float | None = None,
    decades: float = 2.5,
) -> str | None:
    """One axial slice of the absorbed-dose map with the outlines of the labelled regions.

    ``dose_gy``: 2D array (rows j, columns i) in Gy; ``regions``: 2D integer array of the same
    shape, 1..R for ``region_names`` and 0 elsewhere; ``spacing_mm``: (x, y, z) voxel size, the
    pixel aspect is x:y. The colour scale is logarithmic from ``vmax_gy / 10**decades`` to
    ``vmax_gy`` (pass the same value for all slices so that they share one scale; lower doses
    take the lowest colour, higher ones the highest, marked on the colour bar). Row 0 is drawn
    at the top. Returns a PNG data URI, or None when
    the arrays are not 2D arrays of the same shape."""
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D

    try:
        d = np.asarray(dose_gy, dtype=np.float64)
        lab = np.asarray(regions)
    except (TypeError, ValueError):
        return None
    if d.ndim != 2 or lab.shape != d.shape or d.size == 0:
        return None
    ny, nx = d.shape
    sx, sy = 1.0, 1.0
    if spacing_mm is not None and len(spacing_mm) >= 2 and all(_finite(s) and s > 0 for s in spacing_mm[:2]):
        sx, sy = float(spacing_mm[0]), float(spacing_mm[1])
    finite = d[np.isfinite(d)]
    top = float(vmax_gy) if _finite(vmax_gy) and vmax_gy > 0 else (float(finite.max()) if finite.size else 0.0)  # type: ignore[operator]
    if not top > 0:
        top = 1.0
    norm = LogNorm(vmin=top / 10.0 ** decades, vmax=top, clip=True)
    width_mm, height_mm = nx * sx, ny * sy
    fig_w = 6.4
    fig_h = max(3.0, min(7.5, fig_w * 0.8 * height_mm / width_mm + 1.2))
    fig = Figure(figsize=(fig_w, fig_h), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    shown = np.where(np.isfinite(d), np.clip(d, top / 10.0 ** decades, None), np.nan)
    im = ax.imshow(shown, cmap="viridis", norm=norm, origin="upper", interpolation="nearest",
                   extent=(0.0, width_mm, height_mm, 0.0))
    above = bool(finite.size and float(finite.max()) > top)
    cbar = fig.colorbar(im, ax=ax, shrink=0.9, extend="max" if above else "neither")
    cbar.set_label("absorbed dose (Gy), logarithmic scale")
    xs = (np.arange(nx) + 0.5) * sx
    ys = (np.arange(ny) + 0.5) * sy
    handles = []
    try:
        lab_int = np.rint(lab.astype(np.float64)).astype(np.int64)
    except (TypeError, ValueError):
        lab_int = np.zeros(d.shape, dtype=np.int64)
    for r, name in enumerate(region_names, start=1):
        mask = lab_int == r
        if not mask.any():
            continue
        colour = region_colour(r - 1)
        # pad so that regions touching the edge of the slice are closed
        padded = np.pad(mask.astype(np.float64), 1)
        px = np.concatenate(([xs[0] - sx], xs, [xs[-1] + sx]))
        py = np.concatenate(([ys[0] - sy], ys, [ys[-1] + sy]))
        ax.contour(px, py, padded, levels=[0.5], colors=[colour], linewidths=1.4)
        handles.append(Line2D([], [], color=colour, lw=2.0, label=_plain(name)))
    ax.set_xlim(0.0, width_mm)
    ax.set_ylim(height_mm, 0.0)
    ax.set_xlabel("x (mm, column i)")
    ax.set_ylabel("y (mm, row j)")
    ax.set_facecolor("black")
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                  ncol=min(4, len(handles)), frameon=True, facecolor="#303030",
                  edgecolor="#303030", framealpha=1.0, labelcolor="white")
    ax.set_title(_plain(title), fontsize=9)
    return figure_to_data_uri(fig)


def activity_overlay(
    activity_bq_per_ml: Any,
    regions: Sequence[tuple[str, Any]],
    spacing_mm: Sequence[float] | None,
    title: str,
    vmax_kbq_per_ml: float | None = None,
) -> str | None:
    """One axial slice of a quantitative (activity-concentration) image with region outlines.

    ``activity_bq_per_ml``: 2D array (rows j, columns i) in Bq/mL, drawn in kBq/mL on a linear
    colour scale from 0 to ``vmax_kbq_per_ml`` (default: the slice maximum) with a colour bar;
    ``regions``: (name, 2D fractional occupancy mask of the same shape) in the order of the
    results document: each region's outline is the 0.5 contour of its mask, in the colour
    :func:`region_colour` gives its position, with a legend. ``spacing_mm``: (x, y, z) voxel
    size; the pixel aspect is x:y. Row 0 is drawn at the top. Returns a PNG data URI, or None
    when the image is not a non-empty 2D array."""
    import numpy as np
    from matplotlib.lines import Line2D

    try:
        a = np.asarray(activity_bq_per_ml, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if a.ndim != 2 or a.size == 0:
        return None
    k = a / 1e3  # Bq/mL -> kBq/mL
    ny, nx = k.shape
    sx, sy = 1.0, 1.0
    if spacing_mm is not None and len(spacing_mm) >= 2 and all(_finite(s) and s > 0 for s in spacing_mm[:2]):
        sx, sy = float(spacing_mm[0]), float(spacing_mm[1])
    finite = k[np.isfinite(k)]
    top = float(vmax_kbq_per_ml) if _finite(vmax_kbq_per_ml) and vmax_kbq_per_ml > 0 else (  # type: ignore[operator]
        float(finite.max()) if finite.size else 0.0)
    if not top > 0:
        top = 1.0
    width_mm, height_mm = nx * sx, ny * sy
    fig_w = 6.4
    fig_h = max(3.0, min(7.5, fig_w * 0.8 * height_mm / width_mm + 1.2))
    fig = Figure(figsize=(fig_w, fig_h), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(k, cmap="viridis", vmin=0.0, vmax=top, origin="upper", interpolation="nearest",
                   extent=(0.0, width_mm, height_mm, 0.0))
    above = bool(finite.size and float(finite.max()) > top)
    cbar = fig.colorbar(im, ax=ax, shrink=0.9, extend="max" if above else "neither")
    cbar.set_label("activity concentration (kBq/mL)")
    xs = (np.arange(nx) + 0.5) * sx
    ys = (np.arange(ny) + 0.5) * sy
    px = np.concatenate(([xs[0] - sx], xs, [xs[-1] + sx]))
    py = np.concatenate(([ys[0] - sy], ys, [ys[-1] + sy]))
    handles = []
    for r, (name, frac) in enumerate(regions):
        try:
            m = np.asarray(frac, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if m.shape != k.shape:
            continue
        m = np.where(np.isfinite(m), m, 0.0)
        if not (m >= 0.5).any() or m.max() == m.min():
            continue
        colour = region_colour(r)
        # pad so that regions touching the edge of the slice are closed
        ax.contour(px, py, np.pad(m, 1), levels=[0.5], colors=[colour], linewidths=1.4)
        handles.append(Line2D([], [], color=colour, lw=2.0, label=_plain(name)))
    ax.set_xlim(0.0, width_mm)
    ax.set_ylim(height_mm, 0.0)
    ax.set_xlabel("x (mm, column i)")
    ax.set_ylabel("y (mm, row j)")
    ax.set_facecolor("black")
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                  ncol=min(4, len(handles)), frameon=True, facecolor="#303030",
                  edgecolor="#303030", framealpha=1.0, labelcolor="white")
    ax.set_title(_plain(title), fontsize=9)
    return figure_to_data_uri(fig)
