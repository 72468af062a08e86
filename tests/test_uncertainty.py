"""Propagation of uncertainty against analytic results and Monte Carlo (GUM S1)."""

from __future__ import annotations

import numpy as np
import pytest

from mrtdose.uncertainty import UncertainInput, monte_carlo, propagate


def test_product_analytic():
    """y = a b: u_y^2 = (b u_a)^2 + (a u_b)^2 (GUM eq. 10)."""
    a = UncertainInput.scalar("a", 4.0, 0.2, "A")
    b = UncertainInput.scalar("b", 5.0, 0.5, "B")
    p = propagate(lambda x: np.array([x["a"][0] * x["b"][0]]), [a, b], ["y"])
    assert p.value[0] == pytest.approx(20.0)
    assert p.std[0] == pytest.approx(np.hypot(5 * 0.2, 4 * 0.5), rel=1e-9)
    assert p.breakdown("y") == pytest.approx({"A": 1.0, "B": 2.0}, rel=1e-9)


def test_correlated_vector_input():
    """y = x1 + x2 with cov: var = s1^2 + s2^2 + 2 rho s1 s2 (GUM eq. 13)."""
    cov = np.array([[1.0, -0.6], [-0.6, 4.0]])
    x = UncertainInput("x", np.array([1.0, 2.0]), cov, "X")
    p = propagate(lambda d: np.array([d["x"].sum()]), [x], ["y"])
    assert p.std[0] == pytest.approx(np.sqrt(1 + 4 - 1.2), rel=1e-9)


def test_shared_input_correlates_outputs():
    """A common calibration factor c in y1 = c a, y2 = c b gives cov(y1, y2) = a b u_c^2."""
    c = UncertainInput.scalar("c", 1.0, 0.05, "cal")
    p = propagate(lambda d: np.array([3.0 * d["c"][0], 7.0 * d["c"][0]]), [c], ["y1", "y2"])
    assert p.covariance[0, 1] == pytest.approx(3 * 7 * 0.05**2, rel=1e-9)


def test_monte_carlo_agrees_with_first_order_for_mild_nonlinearity():
    """y = a / b with 2 % and 3 % inputs: first order and sampling agree within MC noise
    (2000 samples: relative SE of a SD is 1/sqrt(2(n-1)) = 1.6 %, so 6 % is ~4 SE)."""
    a = UncertainInput.scalar("a", 10.0, 0.2, "A")
    b = UncertainInput.scalar("b", 2.0, 0.06, "B")
    f = lambda d: np.array([d["a"][0] / d["b"][0]])
    p = propagate(f, [a, b], ["y"])
    mc = monte_carlo(f, [a, b], ["y"], n_samples=2000, seed=1)
    assert mc.n_valid == 2000
    assert mc.std[0] == pytest.approx(p.std[0], rel=0.06)
    assert mc.mean[0] == pytest.approx(5.0, rel=0.01)


def test_monte_carlo_reveals_strong_nonlinearity():
    """y = exp(x), x ~ N(0, 1): the true SD is sqrt((e-1) e) = 2.16 while first order gives 1."""
    x = UncertainInput.scalar("x", 0.0, 1.0, "X")
    f = lambda d: np.exp(d["x"])
    p = propagate(f, [x], ["y"])
    mc = monte_carlo(f, [x], ["y"], n_samples=20000, seed=3)
    assert p.std[0] == pytest.approx(1.0, rel=1e-6)
    assert mc.std[0] == pytest.approx(np.sqrt((np.e - 1) * np.e), rel=0.15)


def test_invalid_samples_are_dropped_and_counted():
    x = UncertainInput.scalar("x", 1.0, 1.0, "X")
    mc = monte_carlo(lambda d: np.sqrt(d["x"]), [x], ["y"], n_samples=1000, seed=2, valid=lambda d: d["x"][0] > 0)
    assert 700 < mc.n_valid < 900  # P(x > 0) = 0.841


def test_covariance_shape_checked():
    with pytest.raises(ValueError, match="covariance shape"):
        UncertainInput("x", np.array([1.0, 2.0]), np.eye(3), "X")
