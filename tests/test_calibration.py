"""Tests of mrtdose.imaging.calibration: calibration records and their selection, counts to
activity concentration (MIRD Pamphlet 26, Ljungberg et al. 2016, J Nucl Med 57:151; decay during
acquisition as in MIRD Pamphlet 23, Dewaraja et al. 2012, J Nucl Med 53:1310) and dead-time
correction (Knoll, Radiation Detection and Measurement, 4th ed., ch. 4)."""

from __future__ import annotations

import math
from datetime import date, datetime, timezone

import numpy as np
import pytest
from scipy import integrate, optimize

from mrtdose.errors import InputError, PhysicsError
from mrtdose.imaging import calibration as cal
from mrtdose.imaging.volume import Volume
from mrtdose.quantities import Quantity
from mrtdose.uncertainty import UncertainInput, propagate

LU177_HALF_LIFE_H = 6.647 * 24  # ICRP-107: 6.647 d

GOOD_YAML = """\
calibrations:
  - camera: Intevo-1
    collimator: MELP
    nuclide: Lu-177
    window: {name: Lu-177 208 keV, lower_kev: 187.2, upper_kev: 228.8}
    sensitivity_cps_per_mbq: 9.40
    sensitivity_uncertainty_cps_per_mbq: 0.28
    valid_from: 2023-01-01
    valid_to: 2023-12-31
    method: SPECT of a 6.9 L cylinder, total acquisition time
    reference: MIRD Pamphlet 26
  - camera: Intevo-1
    collimator: MELP
    nuclide: 177Lu
    window: {name: Lu-177 208 keV, lower_kev: 187.2, upper_kev: 228.8}
    sensitivity_cps_per_mbq: 9.60
    sensitivity_uncertainty_cps_per_mbq: 0.19
    valid_from: 2024-01-01
    valid_to: 2024-12-31
    method: SPECT of a 6.9 L cylinder, total acquisition time
  - camera: Intevo-1
    collimator: MELP
    nuclide: Lu-177
    window: {name: Lu-177 113 keV, lower_kev: 101.7, upper_kev: 124.3}
    sensitivity_cps_per_mbq: 5.1
    sensitivity_uncertainty_cps_per_mbq: 0.2
    valid_from: 2024-01-01
    method: planar point source in air
"""


@pytest.fixture
def db_file(tmp_path):
    p = tmp_path / "calibrations.yaml"
    p.write_text(GOOD_YAML, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- database


def test_load_and_select_by_date(db_file):
    db = cal.load_calibrations(db_file)
    assert len(db.records) == 3
    r23 = db.select("Intevo-1", "MELP", "Lu-177", "Lu-177 208 keV", date(2023, 6, 1))
    r24 = db.select("intevo-1", "melp", "177Lu", "lu-177 208 KEV", date(2024, 6, 1))
    assert r23.sensitivity_cps_per_mbq == 9.40 and r24.sensitivity_cps_per_mbq == 9.60
    assert r24.nuclide == "Lu-177"  # "177Lu" normalised
    # validity limits are inclusive
    assert db.select("Intevo-1", "MELP", "Lu-177", "Lu-177 208 keV", date(2023, 12, 31)) is r23
    assert db.select("Intevo-1", "MELP", "Lu-177", "Lu-177 208 keV", date(2024, 1, 1)) is r24


def test_select_by_window_limits_and_aware_datetime(db_file):
    db = cal.load_calibrations(db_file)
    r = db.select("Intevo-1", "MELP", "Lu-177", (101.7, 124.3), datetime(2031, 3, 1, 9, tzinfo=timezone.utc))
    assert r.window.name == "Lu-177 113 keV" and r.valid_to is None  # open-ended record
    with pytest.raises(InputError, match="no time zone"):
        db.select("Intevo-1", "MELP", "Lu-177", (101.7, 124.3), datetime(2031, 3, 1, 9))


def test_select_expired_lists_what_exists(db_file):
    db = cal.load_calibrations(db_file)
    with pytest.raises(InputError) as e:
        db.select("Intevo-1", "MELP", "Lu-177", "Lu-177 208 keV", date(2025, 2, 1))
    msg = str(e.value)
    assert str(db_file) in msg
    assert "expired on 2024-12-31" in msg and "expired on 2023-12-31" in msg
    assert "window 'Lu-177 113 keV'" in msg  # the third record differs in window
    with pytest.raises(InputError, match="not valid until 2023-01-01"):
        db.select("Intevo-1", "MELP", "Lu-177", "Lu-177 208 keV", date(2022, 5, 1))


def test_select_unknown_camera_lists_all_records(db_file):
    db = cal.load_calibrations(db_file)
    with pytest.raises(InputError) as e:
        db.select("Discovery-670", "MEGP", "Lu-177", "Lu-177 208 keV", date(2024, 5, 1))
    msg = str(e.value)
    assert "no record for this camera" in msg and msg.count("camera 'Intevo-1'") == 3
    with pytest.raises(InputError, match="collimator 'MELP'"):
        db.select("Intevo-1", "HEGP", "Lu-177", "Lu-177 208 keV", date(2024, 5, 1))


def test_overlapping_validity_is_rejected(tmp_path):
    text = GOOD_YAML.replace("valid_from: 2024-01-01\n    valid_to: 2024-12-31", "valid_from: 2023-12-01\n    valid_to: 2024-12-31")
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as e:
        cal.load_calibrations(p)
    assert str(p) in str(e.value) and "overlap" in str(e.value)
    assert e.value.field == "calibrations.1.valid_from"


@pytest.mark.parametrize(
    "old,new,field,words",
    [
        ("sensitivity_cps_per_mbq: 9.40", "sensitivity_cps_per_mbq: -9.40", "calibrations.0.sensitivity_cps_per_mbq", "greater than 0"),
        ("valid_to: 2023-12-31", "valid_to: 2022-12-31", "calibrations.0", "before valid_from"),
        ("lower_kev: 187.2, upper_kev: 228.8}\n    sensitivity_cps_per_mbq: 9.40",
         "lower_kev: 228.8, upper_kev: 187.2}\n    sensitivity_cps_per_mbq: 9.40", "calibrations.0.window", "upper_kev"),
        ("    method: planar point source in air\n", "", "calibrations.2.method", "required"),
        ("    reference: MIRD Pamphlet 26\n", "    referense: MIRD Pamphlet 26\n", "calibrations.0.referense", "unknown field"),
        ("sensitivity_uncertainty_cps_per_mbq: 0.28", "sensitivity_uncertainty_cps_per_mbq: 30", "calibrations.0", "percentage"),
        ("valid_from: 2023-01-01", "valid_from: yesterday", "calibrations.0.valid_from", "date"),
    ],
)
def test_bad_yaml_names_file_and_field(tmp_path, old, new, field, words):
    assert old in GOOD_YAML
    p = tmp_path / "bad.yaml"
    p.write_text(GOOD_YAML.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(InputError) as e:
        cal.load_calibrations(p)
    msg = str(e.value)
    assert str(p) in msg and field in msg and words in msg


def test_unparsable_missing_and_empty_files(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("calibrations: [ {camera: x", encoding="utf-8")
    with pytest.raises(InputError, match="cannot parse"):
        cal.load_calibrations(p)
    with pytest.raises(InputError, match="not found"):
        cal.load_calibrations(tmp_path / "nope.yaml")
    p.write_text("calibrations: []\n", encoding="utf-8")
    with pytest.raises(InputError, match="calibrations"):
        cal.load_calibrations(p)
    p.write_text("42\n", encoding="utf-8")
    with pytest.raises(InputError, match="mapping"):
        cal.load_calibrations(p)


def test_json_file_and_bare_list(tmp_path):
    import json

    import yaml

    data = yaml.safe_load(GOOD_YAML)["calibrations"]
    for rec in data:
        for k in ("valid_from", "valid_to"):
            if k in rec:
                rec[k] = rec[k].isoformat()
    p = tmp_path / "c.json"
    p.write_text(json.dumps(data), encoding="utf-8")
    db = cal.load_calibrations(p)
    assert db.source == str(p) and len(db.records) == 3


# --------------------------------------------------------------------------- counts -> Bq/mL


def test_counts_to_concentration_hand_worked():
    """1000 counts, 0.110592 mL voxel (4.8 mm cube), 1800 s, S = 10 cps/MBq, Lu-177:
    lambda T = ln2 * 0.5 h / 159.528 h = 0.00217254; F = (1 - e^-x)/x = 0.99891454;
    C = 1000 / (1800 * 10) / F * 1e6 / 0.110592 = 502 893.3 Bq/mL."""
    x = math.log(2) * 0.5 / LU177_HALF_LIFE_H
    f = (1 - math.exp(-x)) / x
    expected = 1000 / (1800 * 10) / f * 1e6 / 0.110592
    r = cal.counts_to_activity_concentration(
        np.full((2, 2, 2), 1000.0), voxel_volume_ml=0.110592, sensitivity_cps_per_mbq=10.0,
        sensitivity_uncertainty_cps_per_mbq=0.25, acquisition_duration_s=1800, half_life_h=LU177_HALF_LIFE_H)
    assert r.array[1, 1, 1] == pytest.approx(expected, rel=1e-12)
    assert r.array[1, 1, 1] == pytest.approx(502_893.3, abs=0.5)
    assert r.calibration_relative_uncertainty == pytest.approx(0.025)
    assert r.unit == "Bq/mL" and not r.array.flags.writeable
    off = cal.counts_to_activity_concentration(
        np.full((1, 1, 1), 1000.0), voxel_volume_ml=0.110592, sensitivity_cps_per_mbq=10.0,
        acquisition_duration_s=1800, half_life_h=LU177_HALF_LIFE_H, decay_during_acquisition=False)
    assert off.array[0, 0, 0] == pytest.approx(1000 / 18000 * 1e6 / 0.110592, rel=1e-12)


def test_counts_simulated_from_known_concentration_are_inverted_exactly():
    """Analytic ground truth: a voxel of concentration C0 (Bq/mL at scan start) decaying during a
    long acquisition records N = S V C0 1e-6 * integral_0^T e^{-lambda t} dt counts (integral by
    quadrature, independent of the module's closed form). Tc-99m-like half-life, 40 min scan, so
    that decay during acquisition is 7 %."""
    half_life_h, t_s, s, v_ml, c0 = 6.0067, 2400.0, 85.0, 0.0625, 2.5e5
    lam = math.log(2) / (half_life_h * 3600)
    integral, _ = integrate.quad(lambda t: math.exp(-lam * t), 0, t_s)
    counts = s * v_ml * c0 * 1e-6 * integral
    r = cal.counts_to_activity_concentration(np.array([[[counts]]]), voxel_volume_ml=v_ml,
                                             sensitivity_cps_per_mbq=s, acquisition_duration_s=t_s,
                                             half_life_h=half_life_h)
    assert r.array[0, 0, 0] == pytest.approx(c0, rel=1e-10)


def test_volume_in_volume_out_and_dead_time_factor():
    t0 = datetime(2024, 5, 2, 10, 0, tzinfo=timezone.utc)
    vol = Volume(array=np.arange(8.0).reshape(2, 2, 2), spacing_mm=(4.0, 5.0, 5.0), unit="counts",
                 modality="NM", acquisition_time=t0)
    rec = cal.CalibrationRecord(
        camera="c", collimator="MELP", nuclide="Lu-177", window={"name": "peak", "lower_kev": 187.2, "upper_kev": 228.8},
        sensitivity_cps_per_mbq=10.0, sensitivity_uncertainty_cps_per_mbq=0.4, valid_from="2024-01-01", method="m")
    r = cal.counts_to_activity_concentration(vol, sensitivity_cps_per_mbq=rec, acquisition_duration_s=100,
                                             half_life_h=LU177_HALF_LIFE_H, decay_during_acquisition=False,
                                             dead_time_factor=1.1)
    assert isinstance(r.values, Volume) and r.values.unit == "Bq/mL" and r.values.same_grid(vol)
    assert r.values.acquisition_time == t0
    assert r.array[0, 0, 1] == pytest.approx(1.0 / (100 * 10.0) * 1e6 / 0.1 * 1.1, rel=1e-12)
    assert r.calibration_relative_uncertainty == pytest.approx(0.04)
    with pytest.raises(InputError, match="contradicts"):
        cal.counts_to_activity_concentration(vol, voxel_volume_ml=0.2, sensitivity_cps_per_mbq=10.0,
                                             acquisition_duration_s=100, half_life_h=1.0)
    with pytest.raises(InputError, match="not both"):
        cal.counts_to_activity_concentration(vol, sensitivity_cps_per_mbq=rec, sensitivity_uncertainty_cps_per_mbq=0.1,
                                             acquisition_duration_s=100, half_life_h=1.0)
    with pytest.raises(InputError, match="in counts"):
        cal.counts_to_activity_concentration(vol.with_array(vol.array, unit="Bq/mL"), sensitivity_cps_per_mbq=10.0,
                                             acquisition_duration_s=100, half_life_h=1.0)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(voxel_volume_ml=None), "voxel_volume_ml"),
        (dict(acquisition_duration_s=0), "acquisition_duration_s"),
        (dict(sensitivity_cps_per_mbq=-1.0), "sensitivity_cps_per_mbq"),
        (dict(half_life_h=float("nan")), "half_life_h"),
        (dict(dead_time_factor=0.9), "dead_time_factor"),
    ],
)
def test_counts_bad_input(kwargs, field):
    args = dict(voxel_volume_ml=0.1, sensitivity_cps_per_mbq=10.0, acquisition_duration_s=100, half_life_h=6.0)
    args.update(kwargs)
    with pytest.raises(InputError) as e:
        cal.counts_to_activity_concentration(np.ones((1, 1, 1)), **args)
    assert e.value.field == field


def test_calibration_input_carries_relative_uncertainty_into_propagate():
    r = cal.counts_to_activity_concentration(np.full((1, 1, 1), 1e4), voxel_volume_ml=1.0, sensitivity_cps_per_mbq=10.0,
                                             sensitivity_uncertainty_cps_per_mbq=0.5, acquisition_duration_s=100,
                                             half_life_h=1e9)
    region_bq = float(r.array.sum())
    inp = r.calibration_input()
    assert isinstance(inp, UncertainInput) and inp.component == "calibration"
    p = propagate(lambda x: np.array([region_bq * x["calibration_factor"][0]]), [inp], ["A"])
    assert p.std[0] / p.value[0] == pytest.approx(0.05, rel=1e-9)
    assert p.breakdown("A") == pytest.approx({"calibration": 0.05 * region_bq}, rel=1e-9)


def test_bqml_images_pass_through():
    vol = Volume(array=np.full((1, 2, 2), 3.0), spacing_mm=(1, 1, 1), unit="kBq/mL", modality="NM")
    r = cal.activity_concentration_from_bqml(vol, relative_uncertainty=0.08)
    assert r.values.unit == "Bq/mL" and np.all(r.array == 3000.0) and r.calibration_relative_uncertainty == 0.08
    assert cal.activity_concentration_from_bqml(np.ones((1, 1, 1)), relative_uncertainty=0.0).array[0, 0, 0] == 1.0
    with pytest.raises(InputError, match="activity concentration"):
        cal.activity_concentration_from_bqml(np.ones((1, 1, 1)), unit="counts", relative_uncertainty=0.1)
    with pytest.raises(InputError, match="fraction"):
        cal.activity_concentration_from_bqml(np.ones((1, 1, 1)), relative_uncertainty=8.0)  # 8 % given as 8
    with pytest.raises(InputError, match="contradicts"):
        cal.activity_concentration_from_bqml(vol, unit="Bq/mL", relative_uncertainty=0.1)


# --------------------------------------------------------------------------- dead time


def test_dead_time_hand_values():
    """tau = 2 us, n = 2e5 cps: non-paralysable m = 2e5 / 1.4 = 142 857.14; paralysable
    m = 2e5 e^-0.4 = 134 064.01 (Knoll ch. 4 models)."""
    assert cal.observed_rate(2e5, 2e-6, "non-paralysable") == pytest.approx(142_857.142857, rel=1e-10)
    assert cal.observed_rate(2e5, 2e-6, "paralysable") == pytest.approx(2e5 * math.exp(-0.4), rel=1e-12)
    assert cal.dead_time_correct(142_857.142857142857, 2e-6, "non-paralysable") == pytest.approx(2e5, rel=1e-12)
    assert cal.dead_time_correct(2e5 * math.exp(-0.4), 2e-6, "paralyzable") == pytest.approx(2e5, rel=1e-12)


@pytest.mark.parametrize("model", ["paralysable", "non-paralysable"])
def test_dead_time_round_trip(model):
    tau = 3.5e-6
    n = np.geomspace(1.0, 0.99 / tau, 200)
    m = cal.observed_rate(n, tau, model)
    assert np.allclose(cal.dead_time_correct(m, tau, model), n, rtol=1e-9, atol=0)


def test_paralysable_high_branch_and_maximum():
    tau = 1e-5
    n_high = np.array([1.5, 3.0, 10.0]) / tau
    m = cal.observed_rate(n_high, tau)
    assert np.allclose(cal.dead_time_correct(m, tau, branch="high"), n_high, rtol=1e-9)
    # at the maximum observable rate 1/(e tau) both branches meet at n = 1/tau
    m_max = 1 / (math.e * tau)
    assert cal.dead_time_correct(m_max, tau) == pytest.approx(1 / tau, rel=1e-6)
    # independent check of the low branch by root finding
    root = optimize.brentq(lambda n: n * math.exp(-n * tau) - 0.3 / tau, 0, 1 / tau)
    assert cal.dead_time_correct(0.3 / tau, tau) == pytest.approx(root, rel=1e-12)


def test_dead_time_beyond_maximum_is_a_clear_error():
    tau = 1e-5
    with pytest.raises(PhysicsError, match=r"maximum observable rate.*1/\(e tau\) = 36787.9"):
        cal.dead_time_correct(40_000.0, tau, "paralysable")
    with pytest.raises(PhysicsError, match="non-paralysable limit"):
        cal.dead_time_correct(100_000.0, tau, "non-paralysable")
    with pytest.raises(InputError, match="model"):
        cal.dead_time_correct(1.0, tau, "extendable")
    with pytest.raises(InputError):
        cal.dead_time_correct(-1.0, tau)


@pytest.mark.parametrize("model", ["paralysable", "non-paralysable"])
def test_dead_time_uncertainty_matches_numerical_propagation(model):
    tau, u_tau = 4e-6, 0.2e-6
    m = Quantity(80_000.0, 400.0, "cps")
    q = cal.dead_time_correct_quantity(m, tau, model, tau_uncertainty_s=u_tau)
    p = propagate(
        lambda x: np.array([cal.dead_time_correct(x["m"][0], x["tau"][0], model)]),
        [UncertainInput.scalar("m", m.value, m.uncertainty, "counting"),
         UncertainInput.scalar("tau", tau, u_tau, "dead time (tau)")],
        ["n"],
    )
    assert q.value == pytest.approx(p.value[0], rel=1e-12)
    assert q.uncertainty == pytest.approx(p.std[0], rel=1e-5)
    assert q.components["counting"] == pytest.approx(p.breakdown("n")["counting"], rel=1e-5)


def test_same_limits_under_two_names_is_ambiguous_when_selected_by_limits(tmp_path):
    text = GOOD_YAML + """\
  - camera: Intevo-1
    collimator: MELP
    nuclide: Lu-177
    window: {name: Lu-177 208 keV (new name), lower_kev: 187.2, upper_kev: 228.8}
    sensitivity_cps_per_mbq: 9.70
    sensitivity_uncertainty_cps_per_mbq: 0.2
    valid_from: 2024-06-01
    method: SPECT of a 6.9 L cylinder
"""
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    db = cal.load_calibrations(p)
    with pytest.raises(InputError, match="2 calibrations match"):
        db.select("Intevo-1", "MELP", "Lu-177", (187.2, 228.8), date(2024, 7, 1))
    assert db.select("Intevo-1", "MELP", "Lu-177", "Lu-177 208 keV (new name)", date(2024, 7, 1)).sensitivity_cps_per_mbq == 9.70
