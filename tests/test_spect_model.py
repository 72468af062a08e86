"""Light SPECT model (imaging.spect_model): counts scale, calibration round trip, blur, noise,
Chang weighting, attenuation map from CT."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrtdose.errors import InputError
from mrtdose.imaging.calibration import counts_to_activity_concentration
from mrtdose.imaging.spect_model import (
    DEFAULT_FWHM_MM,
    chang_transmission,
    expected_counts,
    mu_map_from_ct,
    simulate_spect,
)
from mrtdose.imaging.volume import Volume

LU_T12_H = 159.528  # ICRP-107


def _vol(arr, unit="Bq/mL", voxel=4.8, modality="NM"):
    return Volume(array=np.asarray(arr, dtype=float), spacing_mm=(voxel,) * 3, unit=unit, modality=modality)


def _centred_coords(n, voxel):
    c = (np.arange(n) - (n - 1) / 2.0) * voxel
    return np.meshgrid(c, c, c, indexing="ij")


def test_expected_counts_hand_calculation():
    # 1 MBq/mL in a 4.8 mm voxel (0.110592 mL), S = 10 cps/MBq, T = 1800 s, Lu-177:
    # lambda T = ln2 * 0.5 / 159.528 = 0.0021725, F = (1 - e^-x)/x = 0.998914;
    # N = 1 * 0.110592 * 10 * 1800 * 0.998914 = 1988.49 counts.
    n = expected_counts(_vol(np.full((1, 1, 1), 1e6)), sensitivity_cps_per_mbq=10.0, acquisition_duration_s=1800.0,
                        half_life_h=LU_T12_H)
    x = math.log(2) * 0.5 / LU_T12_H
    assert n[0, 0, 0] == pytest.approx(0.110592 * 10 * 1800 * (-math.expm1(-x) / x), rel=1e-12)
    assert n[0, 0, 0] == pytest.approx(1988.49, abs=0.01)


def test_noise_free_unblurred_round_trip_through_calibration():
    # Without blur and noise, counts -> Bq/mL with imaging.calibration gives back the truth up to
    # the rounding of counts (< 0.5 count in ~2000-20000 counts: < 2.5e-4 relative).
    rng = np.random.default_rng(0)
    a = _vol(rng.uniform(1e6, 1e7, size=(4, 5, 6)))
    sim = simulate_spect(a, half_life_h=LU_T12_H, fwhm_mm=0.0, noise=False)
    back = counts_to_activity_concentration(sim.counts, sensitivity_cps_per_mbq=sim.calibration["sensitivity_cps_per_mbq"],
                                            acquisition_duration_s=sim.calibration["acquisition_duration_s"],
                                            half_life_h=sim.calibration["half_life_h"]).array
    np.testing.assert_allclose(back, a.array, rtol=2.5e-4)
    assert sim.counts.unit == "counts" and sim.counts.modality == "NM"
    assert np.issubdtype(sim.counts.array.dtype, np.integer)


def test_blur_conserves_counts_and_matches_recovery_of_pytomography_probe():
    # A 2 cm hot sphere in a cold background, 4.8 mm voxels: the Gaussian keeps the total (source
    # far from the edges, truncation at 4 sigma: < 1e-4 lost) and its RC_mean at the default FWHM is
    # close to the 0.52 of the PyTomography OSEM 4i8s probe (shared notes, section 3.2); the light
    # model is tuned to that (module constant DEFAULT_FWHM_MM), tolerance 0.03.
    n, v = 48, 4.8
    z, y, x = _centred_coords(n, v)
    sphere = np.sqrt(x**2 + y**2 + z**2) <= 10.0
    a = _vol(np.where(sphere, 1e6, 0.0))
    sim = simulate_spect(a, half_life_h=LU_T12_H, noise=False)
    ref = expected_counts(a, sensitivity_cps_per_mbq=10.0, acquisition_duration_s=1800.0, half_life_h=LU_T12_H)
    assert sim.expected_counts.sum() == pytest.approx(ref.sum(), rel=1e-4)
    rc_mean = sim.expected_counts[sphere].mean() / ref[sphere].mean()
    assert DEFAULT_FWHM_MM == 10.0
    assert rc_mean == pytest.approx(0.52, abs=0.03)


def test_fwhm_of_the_blur():
    # A point source: the blurred profile's FWHM equals fwhm_mm (1 mm voxels, 12 mm FWHM: the
    # discrete Gaussian's FWHM from linear interpolation of the half-maximum crossing, within 0.2 mm).
    a = np.zeros((61, 61, 61))
    a[30, 30, 30] = 1e9
    sim = simulate_spect(_vol(a, voxel=1.0), half_life_h=LU_T12_H, fwhm_mm=12.0, noise=False)
    prof = sim.expected_counts[30, 30, :]
    half = prof.max() / 2
    above = np.nonzero(prof >= half)[0]
    lo, hi = above[0], above[-1]
    left = lo - 1 + (half - prof[lo - 1]) / (prof[lo] - prof[lo - 1])
    right = hi + (prof[hi] - half) / (prof[hi] - prof[hi + 1])
    assert right - left == pytest.approx(12.0, abs=0.2)


def test_poisson_noise_is_seeded_and_poisson():
    a = _vol(np.full((20, 20, 20), 1e6 * 100 / 1988.49))  # about 100 expected counts per voxel
    s1 = simulate_spect(a, half_life_h=LU_T12_H, fwhm_mm=0.0, seed=5)
    s2 = simulate_spect(a, half_life_h=LU_T12_H, fwhm_mm=0.0, seed=5)
    s3 = simulate_spect(a, half_life_h=LU_T12_H, fwhm_mm=0.0, seed=6)
    np.testing.assert_array_equal(s1.counts.array, s2.counts.array)
    assert not np.array_equal(s1.counts.array, s3.counts.array)
    c = s1.counts.array.astype(float)
    # 8000 voxels: mean within 4 SE (SE = sqrt(100/8000) = 0.11); variance/mean = 1 within 0.07
    # (SE of the sample variance ratio ~ sqrt(2/8000) = 0.016, ~4 SE).
    assert c.mean() == pytest.approx(100.0, abs=0.45)
    assert c.var(ddof=1) / c.mean() == pytest.approx(1.0, abs=0.07)


def test_chang_transmission_centre_of_uniform_cylinder():
    # Centre of a water-like cylinder of radius R: every ray crosses R of mu, so the mean
    # transmission is exp(-mu R) exactly (Chang 1978); mu = 0.1339 /cm (soft tissue, 208 keV),
    # R = 10 cm: 0.2621. Tolerance 3 %: the voxelised edge (4 mm voxels) and bilinear rotation.
    n, v = 64, 4.0
    z, y, x = _centred_coords(n, v)
    mu = np.where(x**2 + y**2 <= 100.0**2, 0.1339, 0.0)
    t = chang_transmission(_vol(mu, unit="1/cm", voxel=v), n_angles=32)
    c = n // 2
    centre = t[c, c - 1 : c + 1, c - 1 : c + 1].mean()
    assert centre == pytest.approx(math.exp(-0.1339 * 10.0), rel=0.03)
    assert t[c, 0, 0] == pytest.approx(1.0)  # air corner: nothing attenuates
    assert np.all((t > 0) & (t <= 1))


def test_uncorrected_variant_scales_by_chang_weighting():
    n, v = 32, 4.8
    z, y, x = _centred_coords(n, v)
    body = x**2 + y**2 <= 60.0**2
    mu = _vol(np.where(body, 0.1339, 0.0), unit="1/cm")
    a = _vol(np.where(body, 1e5, 0.0))
    ac = simulate_spect(a, half_life_h=LU_T12_H, fwhm_mm=0.0, noise=False)
    nac = simulate_spect(a, half_life_h=LU_T12_H, fwhm_mm=0.0, noise=False, attenuation_corrected=False, mu_per_cm=mu)
    w = chang_transmission(mu)
    ratio = nac.expected_counts[body].sum() / ac.expected_counts[body].sum()
    assert ratio == pytest.approx(float((w * a.array)[body].sum() / a.array[body].sum()), rel=1e-9)
    assert 0.3 < ratio < 0.8  # a 12 cm water cylinder at 208 keV: mean transmission well below 1
    assert nac.calibration["attenuation_corrected"] is False


def test_mu_map_from_ct():
    # 0 HU -> 1.0 g/mL (default curve) x (mu/rho) of ICRU-44 soft tissue at 208.4 keV; NIST XCOM
    # gives 0.137 (200 keV) and 0.1265 cm^2/g (250 keV) for water, so ~0.135 at 208 keV: 1 %.
    ct = _vol(np.array([[[-1000.0, 0.0, 1000.0]]]), unit="HU", modality="CT")
    mu = mu_map_from_ct(ct)
    assert mu.unit == "1/cm"
    assert mu.array[0, 0, 0] == pytest.approx(1.21e-3 * 0.1339, rel=0.01)
    assert mu.array[0, 0, 1] == pytest.approx(0.135, rel=0.01)
    assert mu.array[0, 0, 2] > 1.4 * mu.array[0, 0, 1]


def test_errors():
    a = _vol(np.ones((2, 2, 2)))
    with pytest.raises(InputError, match="needs an attenuation map"):
        simulate_spect(a, half_life_h=LU_T12_H, attenuation_corrected=False)
    with pytest.raises(InputError, match="Bq/mL"):
        simulate_spect(_vol(np.ones((2, 2, 2)), unit="counts"), half_life_h=LU_T12_H)
    with pytest.raises(InputError, match="non-negative"):
        simulate_spect(_vol(-np.ones((2, 2, 2))), half_life_h=LU_T12_H)
    with pytest.raises(InputError, match="fwhm_mm"):
        simulate_spect(a, half_life_h=LU_T12_H, fwhm_mm=-1)
    with pytest.raises(InputError, match="square"):
        chang_transmission(Volume(array=np.zeros((2, 2, 2)), spacing_mm=(1, 2, 1), unit="1/cm"))
    with pytest.raises(InputError, match="1/cm"):
        chang_transmission(_vol(np.zeros((2, 2, 2)), unit="HU"))


def test_calibration_record_is_shared_and_checked():
    # The record both backends write: F for Lu-177 over 30 min = (1 - e^-x)/x, x = ln2 * 0.5 h / 159.528 h
    # (MIRD 23), 0.998914 (see test_expected_counts_hand_calculation).
    from mrtdose.imaging.spect_model import calibration_record

    rec = calibration_record(10.0, 1800.0, LU_T12_H)
    assert rec["mean_activity_factor"] == pytest.approx(0.998914, abs=1e-6)
    assert rec["attenuation_corrected"] is True and rec["reference_time"] == "acquisition start"
    sim = simulate_spect(_vol(np.ones((2, 2, 2)) * 1e6), half_life_h=LU_T12_H, noise=False)
    assert sim.calibration == rec
    with pytest.raises(InputError, match="acquisition_duration_s"):
        calibration_record(10.0, 0.0, LU_T12_H)
