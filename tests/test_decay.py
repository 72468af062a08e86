"""Tests of mrtdose.physics.decay: elapsed time between timezone-aware clock times and the
decay law A(t) = A0 exp(-ln2 t / T1/2) (Cherry, Sorenson & Phelps, Physics in Nuclear Medicine,
4th ed., ch. 4)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from scipy import integrate

from mrtdose.errors import InputError
from mrtdose.physics import decay


def test_naive_time_is_rejected_with_a_clear_message():
    aware = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)
    naive = datetime(2024, 5, 2, 9, 0)
    with pytest.raises(InputError) as e:
        decay.elapsed_hours(aware, naive, what="scan time")
    msg = str(e.value)
    assert "scan time" in msg and "no time zone" in msg and "+00:00" in msg
    with pytest.raises(InputError, match="reference time"):
        decay.elapsed_hours(naive, aware)
    with pytest.raises(InputError, match="date-time"):
        decay.require_aware("2024-05-01T09:00")  # type: ignore[arg-type]


def test_elapsed_hours_across_spring_dst_change():
    """UK clocks went forward at 01:00 UTC on 31 March 2024: noon to noon is 23 h."""
    london = ZoneInfo("Europe/London")
    start = datetime(2024, 3, 30, 12, 0, tzinfo=london)
    end = datetime(2024, 3, 31, 12, 0, tzinfo=london)
    assert decay.elapsed_hours(start, end) == pytest.approx(23.0, abs=1e-12)


def test_elapsed_hours_across_autumn_dst_change():
    """UK clocks went back at 01:00 UTC on 27 October 2024: noon to noon is 25 h."""
    london = ZoneInfo("Europe/London")
    start = datetime(2024, 10, 26, 12, 0, tzinfo=london)
    end = datetime(2024, 10, 27, 12, 0, tzinfo=london)
    assert decay.elapsed_hours(start, end) == pytest.approx(25.0, abs=1e-12)


def test_elapsed_hours_with_different_offsets():
    # 09:00 BST (+01:00) and 09:00 UTC are one hour apart
    start = datetime(2024, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    end = datetime(2024, 6, 1, 9, 0, tzinfo=timezone.utc)
    assert decay.elapsed_hours(start, end) == pytest.approx(1.0, abs=1e-12)
    # fixed offsets and a named zone give the same answer
    end2 = datetime(2024, 6, 3, 10, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # +02:00
    assert decay.elapsed_hours(start, end2) == pytest.approx(48.5, abs=1e-12)
    # negative when the end precedes the start (e.g. a pre-injection calibration)
    assert decay.elapsed_hours(end, start) == pytest.approx(-1.0, abs=1e-12)


def test_decay_factor_at_half_lives():
    for t_half in (6.0067, 64.1, 159.528):
        assert decay.decay_factor(t_half, t_half) == pytest.approx(0.5, rel=1e-14)
        assert decay.decay_factor(3 * t_half, t_half) == pytest.approx(0.125, rel=1e-14)
    f = decay.decay_factor(np.array([0.0, 64.1, 128.2]), 64.1)
    assert np.allclose(f, [1.0, 0.5, 0.25], rtol=1e-14)


def test_decay_correct_inverts_decay():
    a0 = 7400.0
    t = 24.0
    measured = a0 * math.exp(-math.log(2) * t / 159.528)
    assert decay.decay_correct(measured, t, 159.528) == pytest.approx(a0, rel=1e-14)


@pytest.mark.parametrize("duration_h, half_life_h", [(0.5, 6.0067), (0.25, 159.528), (1.0, 1.8295)])
def test_acquisition_average_factor(duration_h, half_life_h):
    """Mean activity during an acquisition of length T relative to the start:
    (1/T) int_0^T e^{-lambda t} dt = (1 - e^{-lambda T}) / (lambda T). Checked against numerical
    quadrature (tolerance 1e-12, quad's accuracy) and the closed form written out here."""
    lam = math.log(2) / half_life_h
    closed = (1 - math.exp(-lam * duration_h)) / (lam * duration_h)
    numeric = integrate.quad(lambda t: math.exp(-lam * t), 0, duration_h, epsabs=1e-15)[0] / duration_h
    f = decay.mean_activity_factor_during_acquisition(duration_h, half_life_h)
    assert f == pytest.approx(closed, rel=1e-12)
    assert f == pytest.approx(numeric, rel=1e-12)
    assert f < 1.0


def test_acquisition_average_factor_short_limit():
    # For lambda T << 1 the factor is 1 - lambda T / 2 (series); expm1 keeps it accurate.
    lam_t = 1e-9
    f = decay.mean_activity_factor_during_acquisition(lam_t / math.log(2), 1.0)
    assert f == pytest.approx(1 - lam_t / 2, rel=1e-15)
    assert decay.mean_activity_factor_during_acquisition(0.0, 6.0) == 1.0
