"""Elapsed time and decay correction: the one place where clock times become hours.

All clock times are timezone-aware :class:`datetime.datetime`; a naive time is an error, since a
silent assumption of local time or UTC shifts every decay correction (a one-hour error is 0.4 %
for Lu-177 but 1.1 % for I-131 at 8 d and 1.1 % per hour for Y-90's 64 h... per hour of error the
relative error is lambda * 1 h).

Decay law: A(t) = A0 exp(-lambda t), lambda = ln 2 / T1/2 (e.g. Cherry, Sorenson & Phelps,
Physics in Nuclear Medicine, 4th ed., ch. 4).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from mrtdose.errors import InputError


def require_aware(t: datetime, what: str = "time") -> datetime:
    """Return ``t`` if it carries a time zone, else raise a clear :class:`InputError`."""
    if not isinstance(t, datetime):
        raise InputError(f"{what} must be a date-time, got {t!r}")
    if t.tzinfo is None or t.tzinfo.utcoffset(t) is None:
        raise InputError(
            f"{what} '{t.isoformat()}' has no time zone; write it as e.g. "
            f"'{t.isoformat()}+00:00' (UTC) or with the local offset"
        )
    return t


def elapsed_hours(start: datetime, end: datetime, *, what: str = "time") -> float:
    """Hours from ``start`` to ``end`` (both timezone-aware).

    Both times are converted to UTC first: Python subtracts two datetimes that share the same
    ``tzinfo`` object (e.g. one ``ZoneInfo("Europe/London")``) as naive wall-clock times, which
    would be one hour wrong across a daylight-saving change.
    """
    require_aware(start, "reference time")
    require_aware(end, what)
    return (end.astimezone(timezone.utc) - start.astimezone(timezone.utc)) / timedelta(hours=1)


def decay_factor(elapsed_h: float | np.ndarray, half_life_h: float) -> float | np.ndarray:
    """exp(-ln2 t / T1/2)."""
    return np.exp(-np.log(2.0) * np.asarray(elapsed_h, dtype=float) / half_life_h)


def decay_correct(activity: float | np.ndarray, elapsed_h: float | np.ndarray, half_life_h: float):
    """Activity at time 0 from activity measured ``elapsed_h`` later (A0 = A(t) e^{lambda t})."""
    return np.asarray(activity, dtype=float) / decay_factor(elapsed_h, half_life_h)


def mean_activity_factor_during_acquisition(duration_h: float, half_life_h: float) -> float:
    """Ratio of mean activity during an acquisition of length ``duration_h`` to the activity at
    its start: (1 - e^{-lambda T}) / (lambda T) (e.g. EANM/MIRD Pamphlet 23, Dewaraja et al.
    2012, J Nucl Med 53:1310)."""
    if duration_h <= 0:
        return 1.0
    x = np.log(2.0) * duration_h / half_life_h
    return float(-np.expm1(-x) / x)
