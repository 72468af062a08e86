"""Tests of mrtdose.imaging.recovery: recovery-coefficient curve RC(V) = a / (1 + (b/V)^c)
fitted by weighted least squares with full covariance, its uncertainty propagation (GUM, JCGM
100:2008 eq. 13) and the partial-volume correction A / RC(V).

Phantom: NEMA NU 2 / IEC 61675-1 body phantom spheres, inner diameters 10, 13, 17, 22, 28 and
37 mm (volumes computed here as pi d^3 / 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrtdose.errors import FitError, InputError, PhysicsError
from mrtdose.imaging import recovery as rec
from mrtdose.quantities import Quantity
from mrtdose.uncertainty import UncertainInput, monte_carlo, propagate

NEMA_DIAMETERS_MM = np.array([10.0, 13.0, 17.0, 22.0, 28.0, 37.0])
NEMA_VOLUMES_ML = math.pi * (NEMA_DIAMETERS_MM / 10.0) ** 3 / 6.0
TRUE = (0.92, 3.4, 1.3)  # a, b (mL), c: a plausible 177Lu SPECT/CT curve


def rc_true(v, a=TRUE[0], b=TRUE[1], c=TRUE[2]):
    """Independent implementation of the model for generating data."""
    return a / (1.0 + np.power(b / np.asarray(v, float), c))


def test_nema_volumes():
    assert NEMA_VOLUMES_ML == pytest.approx([0.5236, 1.1503, 2.5724, 5.5753, 11.4940, 26.5219], rel=1e-4)


def test_noiseless_fit_recovers_generating_parameters():
    y = rc_true(NEMA_VOLUMES_ML)
    curve = rec.fit_recovery_curve(NEMA_VOLUMES_ML, y, np.full(6, 0.02), description="noiseless")
    assert (curve.a, curve.b_ml, curve.c) == pytest.approx(TRUE, rel=1e-7)
    assert curve.chi2 == pytest.approx(0.0, abs=1e-12) and curve.dof == 3
    assert not curve.covariance_scaled and curve.fixed == ()
    # the covariance is (J^T W J)^-1 at the solution: check against an independent computation
    eps = 1e-7
    jac = np.empty((6, 3))
    for k in range(3):
        p = np.array(TRUE, float)
        h = eps * p[k]
        p[k] += h
        up = rc_true(NEMA_VOLUMES_ML, *p)
        p[k] -= 2 * h
        dn = rc_true(NEMA_VOLUMES_ML, *p)
        jac[:, k] = (up - dn) / (2 * h)
    cov = np.linalg.inv(jac.T @ jac / 0.02**2)
    assert np.allclose(curve.covariance, cov, rtol=1e-5)


def test_noiseless_fit_with_fixed_asymptote():
    y = rc_true(NEMA_VOLUMES_ML, a=1.0)
    curve = rec.fit_recovery_curve(NEMA_VOLUMES_ML, y, np.full(6, 0.02), fixed_a=1.0)
    assert (curve.a, curve.b_ml, curve.c) == pytest.approx((1.0, TRUE[1], TRUE[2]), rel=1e-7)
    assert curve.fixed == ("a",) and curve.dof == 4
    assert np.all(curve.covariance[0] == 0) and np.all(curve.covariance[:, 0] == 0)
    assert curve.covariance[1, 1] > 0


def test_noisy_fits_cover_truth_within_uncertainty():
    """Seeded Monte Carlo of 400 noisy phantom experiments (u = 0.025 per sphere): the 1-sigma
    intervals of b and of RC(2 mL) contain the truth in about 68 % of them, and the mean chi2 is
    about dof = 3. Tolerance: binomial standard deviation sqrt(0.68 * 0.32 / 400) = 0.023, allowed
    +-0.07 (3 sigma), since a nonlinear model is only asymptotically normal."""
    rng = np.random.default_rng(20240611)
    u = np.full(6, 0.025)
    hit_b = hit_rc = 0
    chi2 = []
    n = 400
    rc2_true = float(rc_true(2.0))
    for _ in range(n):
        y = rc_true(NEMA_VOLUMES_ML) + rng.normal(0.0, u)
        curve = rec.fit_recovery_curve(NEMA_VOLUMES_ML, y, u)
        hit_b += abs(curve.b_ml - TRUE[1]) <= math.sqrt(curve.covariance[1, 1])
        r, ur = curve.rc_with_uncertainty(2.0)
        hit_rc += abs(r - rc2_true) <= ur
        chi2.append(curve.chi2)
    assert hit_b / n == pytest.approx(0.683, abs=0.07)
    assert hit_rc / n == pytest.approx(0.683, abs=0.07)
    assert np.mean(chi2) == pytest.approx(3.0, abs=0.5)  # sd of the mean of chi2_3: sqrt(6/400) = 0.12


def test_unweighted_and_scaled_covariance():
    rng = np.random.default_rng(7)
    y = rc_true(NEMA_VOLUMES_ML) + rng.normal(0, 0.02, 6)
    unweighted = rec.fit_recovery_curve(NEMA_VOLUMES_ML, y)
    assert unweighted.covariance_scaled and unweighted.rc_uncertainty == ()
    weighted = rec.fit_recovery_curve(NEMA_VOLUMES_ML, y, np.full(6, 0.01))
    scaled = rec.fit_recovery_curve(NEMA_VOLUMES_ML, y, np.full(6, 0.01), scale_covariance=True)
    assert np.allclose(scaled.covariance, weighted.covariance * weighted.chi2 / 3, rtol=1e-6)
    # equal weights give the same estimate as the unweighted fit, and the residual-variance
    # scaled covariance does not depend on the stated (equal) uncertainty
    assert (unweighted.a, unweighted.b_ml, unweighted.c) == pytest.approx((scaled.a, scaled.b_ml, scaled.c), rel=1e-6)
    assert np.allclose(unweighted.covariance, scaled.covariance, rtol=1e-5)


def test_rc_hand_values_and_gradient():
    """a = 1, b = 2 mL, c = 1: RC(2) = 1/2, RC(6) = 1/(1 + 1/3) = 3/4, RC(18) = 0.9;
    dRC/dV at V = 6: a c r / (V D^2) = (1/3) / (6 * 16/9) = 0.03125."""
    c = rec.RecoveryCurve(a=1.0, b_ml=2.0, c=1.0, covariance=np.zeros((3, 3)))
    assert c.rc([2.0, 6.0, 18.0]) == pytest.approx([0.5, 0.75, 0.9], rel=1e-12)
    assert c.derivative_volume(6.0) == pytest.approx(0.03125, rel=1e-12)
    curve = rec.RecoveryCurve(a=0.9, b_ml=3.0, c=1.7, covariance=np.eye(3) * 1e-4)
    v = np.array([0.4, 1.0, 3.0, 12.0, 40.0])
    g = curve.gradient(v)
    for k, name in enumerate(("a", "b", "c")):
        p = [0.9, 3.0, 1.7]
        h = 1e-6
        p[k] += h
        up = rc_true(v, *p)
        p[k] -= 2 * h
        dn = rc_true(v, *p)
        assert g[:, k] == pytest.approx((up - dn) / (2 * h), rel=1e-6, abs=1e-10), name
    h = 1e-6
    assert curve.derivative_volume(v) == pytest.approx((rc_true(v + h, 0.9, 3.0, 1.7) - rc_true(v - h, 0.9, 3.0, 1.7)) / (2 * h), rel=1e-6)


def test_rc_uncertainty_agrees_with_generic_propagation_and_monte_carlo():
    y = rc_true(NEMA_VOLUMES_ML) + np.random.default_rng(3).normal(0, 0.02, 6)
    curve = rec.fit_recovery_curve(NEMA_VOLUMES_ML, y, np.full(6, 0.02))
    v = np.array([0.8, 4.0, 30.0])
    rc, u = curve.rc_with_uncertainty(v)
    pars = UncertainInput("p", curve.parameters, curve.covariance, "recovery curve")

    def f(x):
        return rc_true(v, *x["p"])

    p = propagate(f, [pars], ["v1", "v2", "v3"])
    assert rc == pytest.approx(p.value, rel=1e-12)
    assert u == pytest.approx(p.std, rel=1e-5)
    mc = monte_carlo(f, [pars], ["v1", "v2", "v3"], n_samples=20000, seed=11, valid=lambda x: bool(np.all(x["p"] > 0)))
    # linearisation adequate to 15 % at these noise levels (MC standard error of a sd ~0.5 %)
    assert mc.std == pytest.approx(u, rel=0.15)


def test_save_and_load_round_trip(tmp_path):
    y = rc_true(NEMA_VOLUMES_ML) + np.random.default_rng(5).normal(0, 0.02, 6)
    curve = rec.fit_recovery_curve(NEMA_VOLUMES_ML, y, np.full(6, 0.02), description="Lu-177, Intevo, OSEM 4x8",
                                   metadata={"nuclide": "Lu-177"})
    for name in ("rc.yaml", "rc.json"):
        p = curve.save(tmp_path / name)
        back = rec.load_recovery_curve(p)
        assert (back.a, back.b_ml, back.c) == (curve.a, curve.b_ml, curve.c)
        assert np.array_equal(back.covariance, curve.covariance)
        assert back.volumes_ml == curve.volumes_ml and back.chi2 == curve.chi2 and back.dof == 3
        assert back.description == curve.description and back.metadata == {"nuclide": "Lu-177"}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["rc.json", "rc.yaml"]  # no temporary files left


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda d: d["parameters"].__setitem__("b_ml", -1.0), "parameters.b_ml"),
        (lambda d: d["parameters"].pop("c"), "parameters.c"),
        (lambda d: d["parameters"].__setitem__("a", "high"), "parameters.a"),
        (lambda d: d.pop("covariance"), "covariance"),
        (lambda d: d.__setitem__("covariance", [[1, 0], [0, 1]]), "covariance"),
        (lambda d: d.__setitem__("covariance", [[1, 2, 0], [2, 1, 0], [0, 0, 1]]), "covariance"),
        (lambda d: d.__setitem__("model", "exponential"), "model"),
    ],
)
def test_bad_curve_files_name_file_and_field(tmp_path, mutate, field):
    import yaml

    curve = rec.RecoveryCurve(a=1.0, b_ml=2.0, c=1.0, covariance=np.eye(3) * 1e-4)
    d = curve.to_dict()
    mutate(d)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d), encoding="utf-8")
    with pytest.raises(InputError) as e:
        rec.load_recovery_curve(p)
    assert e.value.source == str(p) and e.value.field == field
    assert str(p) in str(e.value)


def test_fit_bad_input():
    with pytest.raises(InputError, match="cannot determine"):
        rec.fit_recovery_curve([1.0, 2.0], [0.3, 0.5], [0.01, 0.01])
    with pytest.raises(InputError, match="unweighted"):
        rec.fit_recovery_curve([1.0, 2.0, 4.0], [0.3, 0.5, 0.7])
    with pytest.raises(InputError, match="positive"):
        rec.fit_recovery_curve([1.0, 2.0, 4.0, 8.0], [0.3, -0.5, 0.7, 0.8], [0.01] * 4)
    with pytest.raises(InputError, match="volumes"):
        rec.fit_recovery_curve([1.0, 0.0, 4.0, 8.0], [0.3, 0.5, 0.7, 0.8], [0.01] * 4)
    with pytest.raises(InputError, match="rc_uncertainty"):
        rec.fit_recovery_curve([1.0, 2.0, 4.0, 8.0], [0.3, 0.5, 0.7, 0.8], [0.01] * 3)
    assert issubclass(FitError, Exception)


def test_correct_activity_hand_worked_and_components():
    """a = 1, b = 2 mL, c = 1, Sigma = diag(1e-4, 0.01, 1e-3); V = 6 +- 0.5 mL, A = 3 +- 0.3 MBq.
    RC = 0.75; r = 1/3, D = 4/3; g = (0.75, -0.09375, -(1/3) ln(1/3) / (16/9) = 0.205990);
    u(RC)^2 = 0.5625e-4 + 0.0087891e-2 + 0.0424318e-3 = 1.86572e-4 -> u(RC) = 0.0136592.
    A/RC = 4; activity 0.3/0.75 = 0.4; curve 3 * 0.0136592 / 0.5625 = 0.0728489;
    volume 3 * 0.03125 * 0.5 / 0.5625 = 0.0833333."""
    curve = rec.RecoveryCurve(a=1.0, b_ml=2.0, c=1.0, covariance=np.diag([1e-4, 0.01, 1e-3]))
    r = rec.correct_activity(Quantity(3.0, 0.3, "MBq"), Quantity(6.0, 0.5, "mL"), curve)
    g3 = -(1 / 3) * math.log(1 / 3) / (16 / 9)
    u_rc = math.sqrt(0.75**2 * 1e-4 + 0.09375**2 * 0.01 + g3**2 * 1e-3)
    assert r.recovery_coefficient.value == pytest.approx(0.75)
    assert r.recovery_coefficient.uncertainty == pytest.approx(u_rc, rel=1e-12)
    assert u_rc == pytest.approx(0.0136592, rel=1e-5)
    a = r.activity
    assert a.value == pytest.approx(4.0) and a.unit == "MBq"
    assert a.components["activity"] == pytest.approx(0.4)
    assert a.components["recovery curve"] == pytest.approx(3 * u_rc / 0.5625, rel=1e-12)
    assert a.components["recovery curve"] == pytest.approx(0.0728489, rel=1e-5)
    assert a.components["volume"] == pytest.approx(3 * 0.03125 * 0.5 / 0.5625, rel=1e-12)
    assert a.uncertainty == pytest.approx(math.sqrt(sum(v * v for v in a.components.values())), rel=1e-12)
    assert not r.extrapolated  # hand-entered curve: no phantom range known
    # the same with numbers and separate uncertainties
    r2 = rec.correct_activity(3.0, 6.0, curve, activity_uncertainty_mbq=0.3, volume_uncertainty_ml=0.5)
    assert r2.activity.uncertainty == pytest.approx(a.uncertainty, rel=1e-12)


def test_correct_activity_flags_and_limits():
    curve = rec.fit_recovery_curve(NEMA_VOLUMES_ML, rc_true(NEMA_VOLUMES_ML), np.full(6, 0.02))
    assert rec.correct_activity(10.0, 0.45, curve).extrapolated
    assert not rec.correct_activity(10.0, 3.0, curve).extrapolated
    with pytest.raises(PhysicsError, match="too small"):
        rec.correct_activity(10.0, 0.05, curve)
    with pytest.raises(InputError, match="MBq"):
        rec.correct_activity(Quantity(10.0, 1.0, "kBq"), 3.0, curve)
    with pytest.raises(InputError, match="not both"):
        rec.correct_activity(Quantity(10.0, 1.0, "MBq"), 3.0, curve, activity_uncertainty_mbq=1.0)
    with pytest.raises(InputError):
        rec.correct_activity(10.0, -3.0, curve)
