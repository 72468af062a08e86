"""Virtual patients (workflow.virtual_patient): DICOM read-back, quantification against truth,
partial-volume behaviour of lesions, truth consistency, reproducibility, bundle size."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, ndimage

from mrtdose.errors import InputError
from mrtdose.imaging.calibration import counts_to_activity_concentration
from mrtdose.imaging.dicom_series import read_series, read_series_with_info
from mrtdose.imaging.rtstruct import rtstruct_masks
from mrtdose.workflow import virtual_patient as vp

TIMES = vp.DEFAULT_TIMES_H


@pytest.fixture(scope="module")
def default_patient(tmp_path_factory):
    """The default DOTATATE patient (default grid, 4 time points): written once for the module."""
    out = tmp_path_factory.mktemp("vp_default")
    res = vp.simulate_patient(out, seed=3)
    ct = read_series(out / res["truth"]["time_points"][0]["ct_dir"])
    masks = rtstruct_masks(res["rtstruct"], ct)
    cal = res["truth"]["calibration"]
    images = []
    for tp in res["truth"]["time_points"]:
        nm = read_series(out / tp["nm_dir"])
        c = counts_to_activity_concentration(nm, sensitivity_cps_per_mbq=cal["sensitivity_cps_per_mbq"],
                                             acquisition_duration_s=cal["acquisition_duration_s"],
                                             half_life_h=cal["half_life_h"]).array / 1e6  # MBq/mL
        images.append(c)
    return {"out": out, "res": res, "truth": res["truth"], "ct": ct, "masks": masks, "mbq_per_ml": images,
            "voxel_ml": ct.voxel_volume_ml}


def _ball(r: int) -> np.ndarray:
    g = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
    return np.sum(g**2, axis=0) <= r * r


# ----------------------------------------------------------------------------- DICOM read-back


def test_dicom_reads_back_with_geometry_units_and_times(default_patient):
    p = default_patient
    truth = p["truth"]
    grid = vp.grid_volume()
    admin = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
    labels = vp.label_map(grid)
    for tp in truth["time_points"]:
        ct, ct_info = read_series_with_info(p["out"] / tp["ct_dir"])
        nm, nm_info = read_series_with_info(p["out"] / tp["nm_dir"])
        assert ct.same_grid(grid, atol_mm=1e-6) and nm.same_grid(grid, atol_mm=1e-6)
        assert ct.unit == "HU" and nm.unit == "counts" and nm.modality == "NM"
        np.testing.assert_array_equal(ct.array, vp.ct_from_labels(labels))
        acq = admin + timedelta(hours=tp["time_h"])
        assert ct.acquisition_time == acq and nm.acquisition_time == acq
        assert nm_info.timezone_source and "TimezoneOffsetFromUTC" in nm_info.timezone_source
        assert ct_info.frame_of_reference_uid == nm_info.frame_of_reference_uid == tp["frame_of_reference_uid"]
        assert ct_info.study_instance_uid == nm_info.study_instance_uid == tp["study_instance_uid"]
        assert nm_info.patient_id == truth["patient_id"]
        assert nm_info.frame_duration_ms == pytest.approx(truth["calibration"]["acquisition_duration_s"] * 1000.0)
        assert nm_info.injected_activity_bq == pytest.approx(7.4e9)
        assert nm_info.injection_time == admin
        assert nm_info.radionuclide_half_life_s == pytest.approx(vp.LU177_HALF_LIFE_H * 3600.0)
        assert int(nm.array.sum()) == tp["total_counts"]
    # one Frame of Reference per session (default), different between sessions
    assert len({tp["frame_of_reference_uid"] for tp in truth["time_points"]}) == len(TIMES)


def test_rtstruct_contours_give_back_the_label_masks(default_patient):
    labels = vp.label_map(vp.grid_volume())
    masks = default_patient["masks"]
    assert set(default_patient["truth"]["rtstruct"]["rois"]) == set(masks)
    for name, mask in masks.items():
        parts = vp.UNIONS.get(name, (name,))
        np.testing.assert_array_equal(mask, np.isin(labels, [vp.LABELS[q] for q in parts]), err_msg=name)


# ----------------------------------------------------------------------------- quantification


def test_total_activity_in_field_of_view(default_patient):
    # Blur and Poisson noise conserve the total (>= 3e6 counts: noise < 0.06 %); the Gaussian's
    # tail leaving the field of view at its ends loses < 0.5 %. Tolerance 1 %.
    p = default_patient
    for it, tp in enumerate(p["truth"]["time_points"]):
        total = p["mbq_per_ml"][it].sum() * p["voxel_ml"]
        assert total == pytest.approx(tp["true_total_activity_in_fov_mbq"], rel=0.01), tp["time_h"]


def test_large_organs_within_stated_tolerances(default_patient):
    p = default_patient
    m, regions, v = p["masks"], p["truth"]["regions"], p["voxel_ml"]
    ball = _ball(4)  # 4 voxels = 19.2 mm ~ 2 FWHM: a Gaussian's tail beyond 2 FWHM is < 1e-5
    lesion_margin = ndimage.binary_dilation(m["lesion_1"], ball)
    liver_interior = ndimage.binary_erosion(m["liver"], ball) & ~lesion_margin
    liver_far = m["liver"] & ~lesion_margin
    kid = m["kidneys"]
    kid_dil = ndimage.binary_dilation(kid, ball)
    for it, t in enumerate(TIMES):
        c = p["mbq_per_ml"][it]
        c_liver = regions["liver"]["mean_concentration_bq_per_ml"][it] / 1e6
        c_rem = regions["remainder"]["mean_concentration_bq_per_ml"][it] / 1e6
        # (1) Liver interior (> 2 FWHM from any edge, ~4800 voxels): RC = 1; noise of the mean < 0.5 %. 3 %.
        assert c[liver_interior].mean() == pytest.approx(c_liver, rel=0.03), t
        # (2) Liver minus a 2-FWHM margin around its hot lesion: spill-out across the liver surface only,
        #     2-7 % for a 1.7 L organ with a 10 mm FWHM; within 10 % and never above the truth + noise.
        rec = c[liver_far].sum() * v / (c_liver * liver_far.sum() * v)
        assert 0.90 <= rec <= 1.01, (t, rec)
        # (3) Kidneys, exact VOI: spill-out of a ~2.5 cm thick organ is 10-25 % at 10 mm FWHM (the
        #     PyTomography OSEM probe in the shared notes: kidney mean 0.83-0.86): recovered in [0.75, 0.90].
        rec_k = c[kid].sum() * v / regions["kidneys"]["activity_mbq"][it]
        assert 0.75 <= rec_k <= 0.90, (t, rec_k)
    # (4) Kidneys in a VOI dilated by 2 FWHM minus the true remainder concentration times the added
    #     volume: spill-out recovered; within 5 % while the kidneys are the hottest structure around
    #     (4 h, 24 h). Later the spill-in from liver and spleen (longer T_eff) exceeds 5 % -- not asserted.
    for it in (0, 1):
        c = p["mbq_per_ml"][it]
        c_rem = regions["remainder"]["mean_concentration_bq_per_ml"][it] / 1e6
        a = c[kid_dil].sum() * v - c_rem * (kid_dil & ~kid).sum() * v
        assert a == pytest.approx(regions["kidneys"]["activity_mbq"][it], rel=0.05)


def test_lesion_recovery_falls_with_size(default_patient):
    # Partial volume: the fraction of a lesion's activity found inside its own VOI falls as the
    # sphere shrinks relative to the 10 mm FWHM (37 -> 13 mm); all lose activity, the 13 mm one more
    # than half. (Poisson noise on the lesion totals: > 1000 counts each, < 3 %; the gaps between
    # neighbouring sizes are ~0.08-0.1.)
    p = default_patient
    regions, v = p["truth"]["regions"], p["voxel_ml"]
    for it, t in enumerate(TIMES):
        c = p["mbq_per_ml"][it]
        rec = [c[p["masks"][n]].sum() * v / regions[n]["activity_mbq"][it] for n in vp.LESIONS]
        assert all(a > b for a, b in zip(rec, rec[1:])), (t, rec)
        assert rec[0] < 1.0 and rec[0] > 0.6 and rec[-1] < 0.5, (t, rec)


# ----------------------------------------------------------------------------- truth


def test_truth_consistent_with_kinetics(default_patient):
    truth = default_patient["truth"]
    rp = truth["radiopharmaceutical"]
    regions = truth["regions"]
    # activities at each time = the kinetics; TIA = analytic integral = numerical quadrature
    for group, labels in vp.GROUPS.items():
        k = truth["kinetics"][group]
        vol = sum(regions[lab]["volume_ml"] for lab in labels)
        scale = 1.0 if k["terms_unit"] == "MBq" else vol
        for it, t in enumerate(TIMES):
            got = sum(regions[lab]["activity_mbq"][it] for lab in labels)
            assert got == pytest.approx(vp.evaluate_terms(k["terms"], t) * scale, rel=1e-9), (group, t)
        quad = integrate.quad(lambda t: vp.evaluate_terms(k["terms"], t), 0, np.inf, limit=200)[0]
        tia = sum(regions[lab]["tia_mbq_h"] for lab in labels)
        assert tia == pytest.approx(quad * scale, rel=1e-6), group
        assert tia == pytest.approx(sum(c * T / math.log(2) for c, T in k["terms"]) * scale, rel=1e-12)
    # unions add up
    for u, parts in vp.UNIONS.items():
        assert regions[u]["tia_mbq_h"] == pytest.approx(sum(regions[q]["tia_mbq_h"] for q in parts), rel=1e-12)
        assert regions[u]["volume_ml"] == pytest.approx(sum(regions[q]["volume_ml"] for q in parts), rel=1e-12)
    # DOTATATE keeps the demo patient's kinetics (workflow.synthetic.TRUTH)
    from mrtdose.workflow.synthetic import TRUTH, true_activity, true_tia

    assert rp == "Lu-177-DOTATATE"
    for it, t in enumerate(TIMES):
        assert regions["kidneys"]["activity_mbq"][it] == pytest.approx(true_activity(TRUTH["kidneys"]["terms"], t), rel=1e-12)
        assert regions["liver"]["activity_mbq"][it] == pytest.approx(true_activity(TRUTH["liver"]["terms"], t), rel=1e-12)
    assert regions["kidneys"]["tia_mbq_h"] == pytest.approx(true_tia(TRUTH["kidneys"]["terms"]), rel=1e-12)
    assert regions["spleen"]["tia_mbq_h"] == pytest.approx(7000.0, rel=1e-12)
    # cortex twice the medulla's concentration, kidney mean as given
    r = regions
    c_cortex = r["kidney_left_cortex"]["activity_mbq"][0] / r["kidney_left_cortex"]["volume_ml"]
    c_medulla = r["kidney_left_medulla"]["activity_mbq"][0] / r["kidney_left_medulla"]["volume_ml"]
    assert c_cortex / c_medulla == pytest.approx(2.0, rel=1e-12)
    # masses near ICRP 89 reference adult male (liver 1800 g, kidneys 310 g, spleen 150 g): within 15 %
    assert r["liver"]["mass_g"] == pytest.approx(1800, rel=0.15)
    assert r["kidneys"]["mass_g"] == pytest.approx(310, rel=0.15)
    assert r["spleen"]["mass_g"] == pytest.approx(150, rel=0.15)
    # lesion volumes: NEMA spheres, voxelised (4.8 mm voxels): within 10 % (13 mm: within 25 %)
    for n, d in zip(vp.LESIONS, vp.LESION_DIAMETERS_MM):
        assert r[n]["volume_ml"] == pytest.approx(math.pi * d**3 / 6000.0, rel=0.10 if d > 15 else 0.25)
    assert json.loads((default_patient["out"] / "truth.json").read_text()) == json.loads(json.dumps(truth))


def test_bundle_size_under_10_mb(default_patient):
    files = [f for f in Path(default_patient["out"]).rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    print(f"default virtual patient: {len(files)} files, {size / 1e6:.2f} MB")
    assert size < 10e6


def test_lungs_lie_inside_the_body_outline_with_a_chest_wall():
    """The lungs are inside the trunk with >= 10 mm of chest wall everywhere (vp.CHEST_WALL_MIN_MM),
    so the CT body outline (regions.body_mask: threshold + hole filling) keeps them in the body.
    The earlier lungs came within 1.4 mm of the skin: the outline left 43 % of their voxels out."""
    from mrtdose.imaging.regions import body_mask

    trunk = vp.BODY[0]
    bx, by = trunk.semi_axes_mm[:2]
    t = np.linspace(0.0, 2.0 * np.pi, 4000)
    edge = np.stack([bx * np.cos(t), by * np.sin(t)], axis=1)  # the trunk's outline (a cylinder along z)
    for s in vp.STRUCTURES:
        if s.tissue != "lung":
            continue
        (cx, cy, cz), (ax, ay, az) = s.centre_mm, s.semi_axes_mm
        # the widest axial section (z = cz) is the binding one: the others are smaller ellipses, same centre
        u = np.linspace(0.0, 2.0 * np.pi, 720)
        pts = np.stack([cx + ax * np.cos(u), cy + ay * np.sin(u)], axis=1)
        assert np.all((pts[:, 0] / bx) ** 2 + (pts[:, 1] / by) ** 2 < 1.0), s.name
        wall = np.min(np.linalg.norm(pts[:, None, :] - edge[None, :, :], axis=2))
        assert wall >= vp.CHEST_WALL_MIN_MM, (s.name, wall)
        assert trunk.centre_mm[2] + trunk.semi_axes_mm[2] - (cz + az) >= vp.CHEST_WALL_MIN_MM, s.name  # apex
    grid = vp.grid_volume()
    labels = vp.label_map(grid)
    ct = grid.with_array(vp.ct_from_labels(labels), unit="HU", modality="CT")
    lungs = np.isin(labels, [vp.LABELS["lung_left"], vp.LABELS["lung_right"]])
    assert lungs.sum() * grid.voxel_volume_ml > 2000.0  # 2.16 L of lung voxels (bases taken by liver, spleen)
    body = body_mask(ct)
    assert (body & lungs).sum() >= 0.995 * lungs.sum(), (body & lungs).sum() / lungs.sum()
    # voxelised: at least two voxels of soft tissue between every lung voxel and the air (4.8 mm voxels)
    dist = ndimage.distance_transform_edt(labels > 0, sampling=grid.spacing_mm[::-1])
    assert dist[lungs].min() > 2.5 * grid.spacing_mm[0]


def test_constants_match_the_reference_data():
    from mrtdose.imaging.density import density_from_ct
    from mrtdose.imaging.volume import Volume
    from mrtdose.physics.nuclides import get_nuclide
    from mrtdose.workflow.synthetic import voxel_phantom

    lu = get_nuclide("Lu-177")
    assert vp.LU177_HALF_LIFE_H == pytest.approx(lu.half_life_h, rel=1e-9)
    assert vp.LU177_ELECTRON_MEV == pytest.approx(lu.electron_mev, rel=1e-4)
    assert voxel_phantom()["region_voxels"]["remainder"] * 0.110592 == pytest.approx(vp._DEMO_REMAINDER_ML)
    # CT numbers computed from attenuation data map back to the nominal densities through the
    # default HU->density curve within 3 %: above 0 HU the bilinear curve follows the water-bone line
    # (1.0 g/mL at 0 HU, slope 0.92/1559 per HU), so 43-53 HU soft tissues read 1.025-1.03 g/mL
    # instead of 1.05-1.06 (truth.json masses use the curve, as the pipeline would)
    for name in ("soft_tissue", "liver", "kidney", "lung", "urine"):
        hu = vp.tissue_hu(name)
        rho = density_from_ct(Volume(array=np.full((1, 1, 1), hu), spacing_mm=(1, 1, 1), unit="HU")).array[0, 0, 0]
        assert rho == pytest.approx(vp.TISSUES[name].density_g_per_ml, rel=0.03), name
    assert 150 < vp.tissue_hu("marrow_bone") < 400  # spongiosa: a few hundred HU


def test_psma_kinetics_reproduce_the_cited_doses():
    # Concentration amplitudes were derived from published Gy/GBq (electron self-dose); invert.
    k = vp.KINETICS["Lu-177-PSMA-617"]
    e_j = vp.LU177_ELECTRON_MEV * 1.602176634e-13 * 3.6e9
    for group, gy_per_gbq, rho in (("kidneys", 0.53, 1.05), ("salivary_glands", 0.72, 1.05), ("bone_marrow", 0.030, 1.03)):
        tia_per_ml = vp.integrate_terms(k[group]["concentration_mbq_per_ml"])
        assert tia_per_ml * e_j / (rho * 1e-3) / 7.4 == pytest.approx(gy_per_gbq, rel=1e-9), group
        assert k[group]["source"]


# ----------------------------------------------------------------------------- options


SMALL = dict(shape=(24, 64, 64), times_h=(24.0,))


def test_seeded_reproducibility_and_psma(tmp_path):
    a = vp.simulate_patient(tmp_path / "a", radiopharmaceutical="Lu-177-PSMA-617", seed=11, **SMALL)
    b = vp.simulate_patient(tmp_path / "b", radiopharmaceutical="Lu-177-PSMA-617", seed=11, **SMALL)
    c = vp.simulate_patient(tmp_path / "c", radiopharmaceutical="pluvicto", seed=12, **SMALL)
    na, nb, nc = (read_series(r["out_dir"] / r["truth"]["time_points"][0]["nm_dir"]).array for r in (a, b, c))
    np.testing.assert_array_equal(na, nb)
    assert not np.array_equal(na, nc)
    assert a["truth"] == b["truth"]
    assert c["truth"]["radiopharmaceutical"] == "Lu-177-PSMA-617"
    # PSMA: salivary glands far above the DOTATATE-like remainder level (uptake, Hohberg 2016)
    # (the small grid crops the neck; compare the kinetics: 0.73 vs 0.061 MBq/mL at 24 h)
    k = a["truth"]["kinetics"]
    assert vp.evaluate_terms(k["salivary_glands"]["terms"], 24.0) > 5 * vp.evaluate_terms(k["remainder"]["terms"], 24.0)
    assert a["truth"]["regions"]["salivary_glands"]["volume_ml"] == 0.0  # cropped: no voxels, no ROI
    assert "salivary_glands" not in a["truth"]["rtstruct"]["rois"]


def test_shift_moves_one_time_point_only(tmp_path):
    res = vp.simulate_patient(tmp_path, seed=2, shape=(24, 64, 64), times_h=(4.0, 24.0), shift_mm={1: (0.0, 9.6, 0.0)})
    tps = res["truth"]["time_points"]
    ct0 = read_series(tmp_path / tps[0]["ct_dir"]).array
    ct1 = read_series(tmp_path / tps[1]["ct_dir"]).array
    # 9.6 mm = 2 voxels posterior (+y = +j): the anatomy of time point 1 is that of time point 0 moved by 2 rows
    np.testing.assert_array_equal(ct1[:, 2:, :], ct0[:, :-2, :])
    assert tps[1]["patient_shift_mm"] == [0.0, 9.6, 0.0] and tps[0]["patient_shift_mm"] == [0.0, 0.0, 0.0]
    # region totals follow the kinetics whatever the pose
    assert res["truth"]["regions"]["liver"]["activity_mbq"][1] == pytest.approx(
        vp.evaluate_terms(res["truth"]["kinetics"]["liver"]["terms"], 24.0), rel=1e-12)


def test_uncorrected_variant_loses_activity(tmp_path):
    res = vp.simulate_patient(tmp_path, seed=2, attenuation_corrected=False, same_frame_of_reference=True, **SMALL)
    tr = res["truth"]
    assert tr["spect_model"]["attenuation_corrected"] is False
    nm = read_series(tmp_path / tr["time_points"][0]["nm_dir"])
    cal = tr["calibration"]
    c = counts_to_activity_concentration(nm, sensitivity_cps_per_mbq=cal["sensitivity_cps_per_mbq"],
                                         acquisition_duration_s=cal["acquisition_duration_s"],
                                         half_life_h=cal["half_life_h"]).array
    frac = c.sum() * nm.voxel_volume_ml * 1e-6 / tr["time_points"][0]["true_total_activity_in_fov_mbq"]
    # mean transmission at 208 keV through a 28 x 20 cm trunk (mu ~ 0.135 /cm): roughly 0.2-0.5
    assert 0.15 < frac < 0.6


def test_bad_input():
    with pytest.raises(InputError, match="radiopharmaceutical"):
        vp.simulate_patient("/nonexistent-never-written", radiopharmaceutical="I-131-mIBG")
    with pytest.raises(InputError, match="times_h"):
        vp.simulate_patient("/nonexistent-never-written", times_h=(24.0, 4.0))
    with pytest.raises(InputError, match="shift_mm"):
        vp.simulate_patient("/nonexistent-never-written", times_h=(4.0,), shift_mm={3: (1, 2, 3)})
    with pytest.raises(InputError, match="timezone"):
        vp.simulate_patient("/nonexistent-never-written", administration_time=datetime(2026, 1, 1))


def test_backend_options_are_validated_before_anything_is_written(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(InputError, match="backend"):
        vp.simulate_patient(out, backend="monte-carlo")
    with pytest.raises(InputError, match="pytomography backend only"):
        vp.simulate_patient(out, backend_options={"iterations": 2})
    with pytest.raises(InputError, match="unknown backend option"):
        vp.simulate_patient(out, backend="pytomography", backend_options={"iteration": 2})
    with pytest.raises(InputError, match="fwhm_mm"):
        vp.simulate_patient(out, backend="pytomography", fwhm_mm=8.0)
    with pytest.raises(InputError, match="ct_time_points"):
        vp.simulate_patient(out, ct_time_points="last")
    assert not out.exists()


def test_ct_at_the_first_time_point_only(tmp_path):
    res = vp.simulate_patient(tmp_path, seed=2, shape=(24, 64, 64), times_h=(4.0, 24.0), ct_time_points="first")
    tr = res["truth"]
    assert tr["ct_time_points"] == "first" and tr["spect_model"]["backend"] == "light"
    from mrtdose.imaging.spect_model import DEFAULT_FWHM_MM

    assert tr["spect_model"]["parameters"]["fwhm_mm"] == tr["spect_model"]["fwhm_mm"] == DEFAULT_FWHM_MM
    assert (tmp_path / tr["time_points"][0]["ct_dir"]).is_dir() and tr["time_points"][1]["ct_dir"] is None
    seeds = [tp["noise_seed"] for tp in tr["time_points"]]  # each time point's own seed, spawned from seed=2
    assert len(set(seeds)) == 2 and all(isinstance(x, int) for x in seeds)
    assert not (tmp_path / tr["time_points"][1]["name"] / "CT").exists()
    case = vp.imaging_case(tr)
    assert "ct" in case["imaging"]["timepoints"][0] and "ct" not in case["imaging"]["timepoints"][1]
    assert case["imaging"]["registration"] == "none"
    with pytest.raises(InputError, match="CT at every time point"):  # rigid registration needs every CT
        vp.imaging_case(tr, registration="rigid")
    with pytest.raises(InputError, match="registration"):
        vp.imaging_case(tr, registration="deformable")


# ----------------------------------------------------------------------------- the bundled demo patient


def _bundled_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("mrtdose") / "data" / "examples" / "virtual_patient_lu177"))


def test_bundled_example_data_under_20_mb():
    from importlib.resources import files

    root = Path(str(files("mrtdose") / "data" / "examples"))
    files_ = [f for f in root.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files_)
    print(f"bundled example data: {len(files_)} files, {size / 1e6:.2f} MB")
    assert size < 20e6
    vp_files = [f for f in _bundled_dir().rglob("*") if f.is_file()]
    assert len(vp_files) < 500  # a CT (112 slices) at each of the 4 time points: ~460 files


@pytest.fixture(scope="module")
def bundled_results():
    """The bundled virtual patient's case run through the whole pipeline (as ``mrtdose demo`` does)."""
    from mrtdose.workflow.case import load_case
    from mrtdose.workflow.pipeline import run_case

    d = _bundled_dir()
    case, raw = load_case(d / "case.yaml")
    res = run_case(case, source_name="case.yaml", source_bytes=raw, base_dir=d).results
    truth = json.loads((d / "truth.json").read_text(encoding="utf-8"))
    return res, truth


def test_bundled_patient_is_what_its_truth_says(bundled_results):
    res, truth = bundled_results
    assert truth["spect_model"]["backend"] == "pytomography"
    assert truth["ct_time_points"] == "all" and len(truth["time_points"]) == 4
    # a SPECT/CT session per time point, each in its own frame of reference: the demo registers the
    # CTs rigidly (carried to the SPECT) and so does not warn about frames of reference
    assert all(tp["ct_dir"] for tp in truth["time_points"])
    assert len({tp["frame_of_reference_uid"] for tp in truth["time_points"]}) == 4
    reg = res["imaging"]["registration"]
    assert [r["method"] for r in reg] == ["reference"] + ["rigid CT-to-CT"] * 3
    # the patient lies in the same place in every session: the registration finds (nearly) the identity
    for r in reg[1:]:
        assert r["quality"]["body_dice"] > 0.99 and r["quality"]["body_mean_surface_distance_mm"] < 1.0, r
    assert not any("frames of reference" in w for w in res["warnings"])
    assert [round(tp["time_h"], 3) for tp in res["imaging"]["timepoints"]] == [tp["time_h"] for tp in truth["time_points"]]
    assert truth["bundle"]["script"] == "scripts/make_demo_patient.py"
    # the regeneration script exists where the truth says
    assert (Path(__file__).resolve().parents[1] / truth["bundle"]["script"]).is_file()
    # SOP instance UIDs are derived from the file's path (scripts/make_demo_patient.py): reproducible
    import pydicom

    d = _bundled_dir()
    for f in sorted(d.rglob("*.dcm"))[::10]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.SOPInstanceUID == vp._uid(truth["patient_id"], truth["seed"], f.relative_to(d).as_posix(), "SOPInstance")
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_bundled_patient_through_the_pipeline_against_its_truth(bundled_results):
    # Region activities at each time point and TIAs from the pipeline (RTSTRUCT VOIs, calibration,
    # kinetic fit) against truth.json. The reconstruction (OSEM 4i8s with attenuation and the depth-
    # dependent collimator response, 60 views; no scatter) has finite resolution, so activities in the
    # exact VOIs are biased by spill-out/spill-in, as measured in the shared notes' PyTomography probe
    # (pytomography_spect_simulation.md, 3.2) and here (measured ratios in brackets):
    # * liver [1.07-1.09]: spill-in from lesion_1 (37 mm, 37:1 to the liver, inside it; ~24 % of its
    #   activity falls outside its own VOI, mostly into the liver) exceeds the liver's own surface
    #   spill-out (notes: -8 % in the exact VOI): [1.00, 1.15];
    # * kidneys [0.81-0.83]: spill-out of a 2.5-5 cm thick organ (notes 0.83): [0.75, 0.90];
    # * spleen [0.85-0.87]: spill-out, 150 mL: [0.78, 0.95];
    # * lesion_1 [0.76-0.79]: RC_mean of a 37 mm sphere (notes: 0.71 at 3 cm, 0.80 at 4 cm): [0.68, 0.86];
    # * lesion_3 [0.60-0.71]: 22 mm sphere, partial volume larger (notes: 0.52 at 2 cm): [0.45, 0.80], and
    #   below lesion_1 at every time point.
    # Poisson noise on these VOI totals is < 1 % (>= 1e4 counts each). The TIA of a fitted curve carries
    # the same bias as its activities (same bands).
    res, truth = bundled_results
    bands = {"liver": (1.00, 1.15), "kidneys": (0.75, 0.90), "spleen": (0.78, 0.95), "lesion_1": (0.68, 0.86),
             "lesion_3": (0.45, 0.80)}
    regions, im = truth["regions"], res["imaging"]["regions"]
    for n, (lo, hi) in bands.items():
        ratios = [a / b for a, b in zip(im[n]["activities_mbq"], regions[n]["activity_mbq"])]
        assert all(lo <= r <= hi for r in ratios), (n, ratios)
        tia = res["regions"][n]["time_integrated_activity"]["value"] / regions[n]["tia_mbq_h"]
        assert lo <= tia <= hi, (n, tia)
        # masses from the CT (default HU->density curve), as the truth's
        assert res["regions"][n]["mass"]["value"] == pytest.approx(regions[n]["mass_g"], rel=1e-3), n
    assert all(a3 / t3 < a1 / t1 for a1, t1, a3, t3 in zip(im["lesion_1"]["activities_mbq"], regions["lesion_1"]["activity_mbq"],
                                                             im["lesion_3"]["activities_mbq"], regions["lesion_3"]["activity_mbq"]))


def test_cli_simulate_backend_errors_are_user_errors(tmp_path):
    # `mrtdose simulate --backend`: bad choices are one message and exit code 2, nothing written
    import subprocess
    import sys

    exe = [sys.executable, "-c", "from mrtdose.cli import main; main()"]
    r = subprocess.run([*exe, "simulate", str(tmp_path / "a"), "--backend", "monte-carlo"], capture_output=True, text=True,
                       timeout=120)
    err = " ".join(r.stderr.split())  # rich wraps long lines
    assert r.returncode == 2 and "unknown SPECT backend" in err and "light, pytomography" in err
    r = subprocess.run([*exe, "simulate", str(tmp_path / "b"), "--iterations", "2"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "pytomography only" in " ".join(r.stderr.split())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
