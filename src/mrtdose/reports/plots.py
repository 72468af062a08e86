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
