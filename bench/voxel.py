#!/usr/bin/env python3
"""Benchmark of the voxel-dosimetry chain (run on demand; never part of the test suite).

Whole chain on N^3 grids (default 128 and 256) of a seeded synthetic phantom with 10 labelled
regions and 4 time points (4, 24, 96, 168 h; Lu-177; 4.7952 mm voxels, the peer baseline's):

  region_index   voxels grouped by region once (one flatnonzero pass per region), reused by
                 TACs and DVHs
  region_tacs    region time-activity curves (one gather + reduceat per time point)
  region_fits    mono-exponential fits of the 10 region TACs (closed form, all 4 points)
  voxel_tia      voxel kinetics: mono-exponential fit of the 4 points of every voxel inside the
                 body, with the physical-decay clamp and trapezoid fallback
  kernel_fft     KernelConvolver and its kernel spectrum on the padded grid the TIA map needs
                 (real, from cosine sums: the kernel is mirror-symmetric)
  convolution    TIA map * kernel (linear FFT convolution, float64, cropped to the body's box
                 + the kernel half-width; spectrum cached)
  density        mass scaling rho_ref / rho
  dvh            DVH metrics (D2..D98, V_D, EUD, BED, EUBED) for the 10 regions
  pipeline       all of the above, end to end, in one call (kernel spectrum included)
  pipeline_region_scaled   the same with the region-scaled voxel TIA instead of voxel fits
                 (the method the peer baseline uses)
  pipeline_f32   the pipeline with the float32 convolver (not the default)
and, in the same process, the floor: a bare scipy.fft rfftn + irfftn (float64, same workers) of
the padded grid of a source filling the grid (next_fast_len(N + c), the convolver's
``padded_shape``), and of the smaller padded grid the convolver actually uses for the bench's
body (``floor_cropped``); for reference also of the "full" linear-convolution grid
next_fast_len(N + K - 1), the peer baseline's floor. Extra: the region-scaled voxel TIA (the
peer's method), route (b) (one convolution per time point), the float32 convolver and its error.

Each stage runs ``--repeats`` times (median wall time reported). Memory: peak traced by
tracemalloc over one pipeline run (numpy reports its buffers to tracemalloc), and the process
peak RSS (resource.getrusage ru_maxrss, and VmHWM reset before the pipeline through
/proc/self/clear_refs where Linux allows). Each grid size runs in its own child process so
that the peak RSS is per size.

Optional peer comparison: ``--peer-python PATH`` runs /work/shared/bench/peer_pytheranostics_voxel.py
(PyTheranostics 0.1, see /work/shared/bench/README.md) with that interpreter (a venv where
``pip install pytheranostics==0.1`` was run), as a subprocess, and prints the ratios.

Usage:
    .venv/bin/python bench/voxel.py                          # 128^3 and 256^3, 3 repeats
    .venv/bin/python bench/voxel.py --sizes 64 --repeats 1   # smoke run
    .venv/bin/python bench/voxel.py --peer-python /tmp/ptbase/bin/python --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import scipy  # noqa: E402
import scipy.fft as sfft  # noqa: E402

from mrtdose.dose import dvh as dvhmod  # noqa: E402
from mrtdose.dose import voxel as dv  # noqa: E402
from mrtdose.kinetics import voxel as vk  # noqa: E402

VOXEL_MM = 4.7952
VOXEL_ML = VOXEL_MM**3 / 1000.0
TIMES_H = np.array([4.0, 24.0, 96.0, 168.0])
LU177_HALF_LIFE_H = 159.528  # 6.647 d (ICRP-107)
LAM_PHYS = math.log(2) / LU177_HALF_LIFE_H
KERNEL_N = 51  # the peer's Lu-177 kernel is 51^3 at 4.7952 mm
RHO_REF = 1.06  # g/mL, the kernel medium (ICRU-44 soft tissue in mrtdose.physics.attenuation)
PEER_SCRIPT = Path("/work/shared/bench/peer_pytheranostics_voxel.py")

# label: (name, centre (fraction of N, z y x), semi-axes (fraction of N), A0 MBq/mL, T_eff h, rho g/mL)
REGIONS = {
    1: ("remainder", None, None, 0.002, 40.0, 1.04),
    2: ("liver", (0.50, 0.45, 0.35), (0.12, 0.10, 0.12), 0.010, 70.0, 1.06),
    3: ("spleen", (0.50, 0.45, 0.68), (0.07, 0.05, 0.05), 0.015, 80.0, 1.06),
    4: ("kidney_l", (0.55, 0.62, 0.62), (0.06, 0.03, 0.03), 0.030, 50.0, 1.05),
    5: ("kidney_r", (0.55, 0.62, 0.38), (0.06, 0.03, 0.03), 0.030, 50.0, 1.05),
    6: ("lung_l", (0.25, 0.50, 0.65), (0.12, 0.08, 0.10), 0.001, 30.0, 0.26),
    7: ("lung_r", (0.25, 0.50, 0.35), (0.12, 0.08, 0.10), 0.001, 30.0, 0.26),
    8: ("lesion_1", (0.45, 0.40, 0.30), (0.03, 0.03, 0.03), 0.100, 110.0, 1.04),
    9: ("lesion_2", (0.60, 0.35, 0.55), (0.02, 0.02, 0.02), 0.080, 100.0, 1.04),
    10: ("lesion_3", (0.35, 0.55, 0.50), (0.015, 0.015, 0.015), 0.120, 120.0, 1.04),
}
BODY = ((0.5, 0.5, 0.5), (0.46, 0.30, 0.40))
AIR_DENSITY = 0.0012


def _ellipsoid(n, centre, semi):
    c = np.array(centre) * n
    a = np.maximum(np.array(semi) * n, 1.0)
    lo = np.maximum(np.floor(c - a).astype(int), 0)
    hi = np.minimum(np.ceil(c + a).astype(int) + 1, n)
    zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    inside = (((zz + 0.5 - c[0]) / a[0]) ** 2 + ((yy + 0.5 - c[1]) / a[1]) ** 2
              + ((xx + 0.5 - c[2]) / a[2]) ** 2) <= 1.0
    m = np.zeros((n, n, n), dtype=bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = inside
    return m


def build_phantom(n: int, seed: int = 20240101) -> dict:
    """Labels (uint8, 0 = air), body mask, density (float32) and 4 activity maps (MBq per voxel,
    float32, measured = not decay corrected) with 5 % Gaussian noise; seeded."""
    rng = np.random.default_rng(seed)
    body = _ellipsoid(n, *BODY)
    label = body.astype(np.uint8)
    for lab, (_, c, s, *_r) in REGIONS.items():
        if c is not None:
            label[_ellipsoid(n, c, s) & body] = lab
    nl = max(REGIONS) + 1
    a0 = np.zeros(nl, np.float32)
    lam = np.full(nl, LAM_PHYS, np.float32)
    rho = np.full(nl, AIR_DENSITY, np.float32)
    for lab, (_, _, _, conc, teff, r) in REGIONS.items():
        a0[lab] = conc * VOXEL_ML
        lam[lab] = math.log(2) / teff
        rho[lab] = r
    maps = np.empty((len(TIMES_H), n, n, n), np.float32)
    for i, t in enumerate(TIMES_H):
        lut = (a0 * np.exp(-lam * t)).astype(np.float32)
        maps[i] = lut[label]
        maps[i] *= 1.0 + 0.05 * rng.standard_normal((n, n, n), dtype=np.float32)
    np.maximum(maps, 0, out=maps)
    truth = {int(lab): float((label == lab).sum() * a0[lab] / lam[lab]) for lab in REGIONS}
    return {"label": label, "body": body, "density": rho[label], "maps": maps, "truth_tia": truth}


def make_kernel(n_side: int = KERNEL_N, synthetic: bool = False) -> tuple[np.ndarray, str]:
    """A Lu-177 kernel of the peer's size (51^3 at 4.7952 mm): from
    mrtdose.physics.voxel_kernels.compute_voxel_kernel where that module exists (computed once,
    in the setup, not timed), else (or with ``synthetic``) a synthetic one with illustrative
    values (the timings do not depend on them): 90 % of 0.1479 MeV per decay in the source voxel,
    the rest of the electron energy in an exponential of 1 mm, and 0.0185 MeV of photons as
    exp(-mu r)/r^2 (mu = 0.1 /cm)."""
    note = ""
    if not synthetic:
        try:
            from mrtdose.physics.voxel_kernels import compute_voxel_kernel  # type: ignore
        except ImportError:
            note = "mrtdose.physics.voxel_kernels not available; "
        else:
            vkern = compute_voxel_kernel("Lu-177", VOXEL_MM, extent_voxels=n_side // 2)
            k = np.asarray(vkern.array_gy_per_bq_s, dtype=np.float64)
            return k, (f"Lu-177 in ICRU-44 soft tissue (1.06 g/mL) {k.shape}, "
                       "mrtdose.physics.voxel_kernels.compute_voxel_kernel")
    h = n_side // 2
    ax = np.arange(-h, h + 1) * VOXEL_MM / 10.0  # cm
    r = np.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2)
    m_kg = RHO_REF * VOXEL_ML * 1e-3
    j_per_mev = dv.J_PER_MEV
    e_el, e_ph = 0.1479, 0.0185
    el = np.exp(-r / 0.1)
    el[h, h, h] = 0.0
    el = el / el.sum() * 0.1 * e_el
    el[h, h, h] = 0.9 * e_el
    with np.errstate(divide="ignore"):
        ph = np.where(r > 0, np.exp(-0.1 * r) / np.maximum(r, 1e-9) ** 2, 0.0)
    ph[h, h, h] = ph[h, h, h + 1]
    ph = ph / ph.sum() * e_ph * 0.5  # about half the photon energy absorbed within the cube
    k = (el + ph) * j_per_mev / m_kg
    return k, note + f"synthetic Lu-177-like kernel {k.shape} (not physics data)"


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


def pipeline(ph: dict, kernel: np.ndarray, workers: int, tia_method: str = "mono_exp",
             dtype=np.float64) -> dict:
    """The whole chain; ``tia_method`` "mono_exp" (voxel fits) or "region_scaled" (region
    kinetics x the 24 h map: the peer's method); ``dtype`` of the convolution."""
    labels = list(REGIONS)
    regions = vk.RegionIndex.build(ph["label"], labels)  # grouped once: region TACs and DVHs
    tacs = vk.region_time_activity(None, ph["maps"], index=regions)
    region_tia, _ = vk.integrate_curves(TIMES_H, tacs, LAM_PHYS, method="mono_exp")
    if tia_method == "mono_exp":
        tia = vk.voxel_tia(TIMES_H, ph["maps"], LAM_PHYS, method="mono_exp", mask=ph["body"], workers=workers)
    else:
        ratios = {lab: region_tia[i] / tacs[1, i] for i, lab in enumerate(labels)}
        tia = vk.voxel_tia(TIMES_H, ph["maps"], LAM_PHYS, method="region_scaled", mask=ph["body"],
                           label_map=ph["label"], region_tia_per_activity_h=ratios, reference_index=1)
    conv = dv.KernelConvolver(kernel, ph["label"].shape, workers=workers, dtype=dtype)
    dose = conv.convolve(tia.tia_map_mbq_h, scale=dv.BQ_S_PER_MBQ_H)
    dv.density_scale(dose, ph["density"], RHO_REF, in_place=True)
    g = 0.05
    metrics = dvhmod.dvh_metrics_by_label(
        dose, None, None, VOXEL_ML, region_index=regions, eud_alpha_per_gy=0.3,
        bed_params=dvhmod.BedParameters(2.6, g, alpha_per_gy=0.3),
    )
    return {"region_tia": region_tia, "tia": tia, "dose": dose, "metrics": metrics}


def _timed(fn, repeats: int) -> tuple[list[float], list[float], object]:
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        out = None
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus, out


def _vmhwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def worker(n: int, repeats: int, workers: int, synthetic: bool = False) -> dict:
    res: dict = {"n": n, "repeats": repeats, "workers": workers, "stages": {}}
    t0 = time.perf_counter()
    ph = build_phantom(n)
    kernel, kernel_note = make_kernel(synthetic=synthetic)
    res["setup_s"] = time.perf_counter() - t0
    res["kernel"] = kernel_note
    res["body_voxels"] = int(ph["body"].sum())
    res["rss_after_inputs_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    labels = list(REGIONS)

    raw: dict[str, tuple[list[float], list[float]]] = {}

    def rec(name, fn, reps=repeats, merge=False):
        w, c, out = _timed(fn, reps)
        if merge and name in raw:
            w, c = raw[name][0] + w, raw[name][1] + c
        raw[name] = (w, c)
        res["stages"][name] = {"median_s": statistics.median(w), "min_s": min(w), "cpu_s": statistics.median(c)}
        return out

    regions = rec("region_index", lambda: vk.RegionIndex.build(ph["label"], labels))
    tacs = rec("region_tacs", lambda: vk.region_time_activity(None, ph["maps"], index=regions))
    rec("region_fits", lambda: vk.integrate_curves(TIMES_H, tacs, LAM_PHYS, method="mono_exp"))
    tia = rec("voxel_tia", lambda: vk.voxel_tia(TIMES_H, ph["maps"], LAM_PHYS, method="mono_exp",
                                                 mask=ph["body"], workers=workers))
    region_tia, _ = vk.integrate_curves(TIMES_H, tacs, LAM_PHYS, method="mono_exp")
    ratios = {lab: region_tia[i] / tacs[1, i] for i, lab in enumerate(labels)}
    rec("voxel_tia_region_scaled", lambda: vk.voxel_tia(
        TIMES_H, ph["maps"], LAM_PHYS, method="region_scaled", mask=ph["body"], label_map=ph["label"],
        region_tia_per_activity_h=ratios, reference_index=1))
    tmap = tia.tia_map_mbq_h
    cropped = dv.KernelConvolver(kernel, (n, n, n), workers=workers).padded_shape_for(tmap)

    def build_convolver():
        c = dv.KernelConvolver(kernel, (n, n, n), workers=workers)
        c.spectrum(cropped)
        return c

    conv = rec("kernel_fft", build_convolver)  # its spectrum is cached for "convolution"
    x = np.asarray(tmap, dtype=np.float64)

    def floor(shape):
        def f():
            s = sfft.rfftn(x, s=shape, workers=workers)
            return sfft.irfftn(s, s=shape, workers=workers, overwrite_x=True)
        return f

    res["padded_shape"] = list(conv.padded_shape)
    res["cropped_padded_shape"] = list(cropped)
    full = tuple(sfft.next_fast_len(n + KERNEL_N - 1, real=True) for _ in range(3))
    res["full_padded_shape"] = list(full)
    # convolution and its floors alternate, so that drifts of the machine hit them alike
    for _ in range(repeats):
        dose = rec("convolution", lambda: conv.convolve(tmap, scale=dv.BQ_S_PER_MBQ_H), reps=1, merge=True)
        rec("floor", floor(conv.padded_shape), reps=1, merge=True)
        rec("floor_cropped", floor(cropped), reps=1, merge=True)  # (s= crops the input: same FFT sizes)
        rec("floor_full_grid", floor(full), reps=1, merge=True)
    dose_w = dose.copy()
    rec("density", lambda: dv.density_scale(dose_w, ph["density"], RHO_REF))
    dose = dv.density_scale(dose_w, ph["density"], RHO_REF)
    metrics = rec("dvh", lambda: dvhmod.dvh_metrics_by_label(
        dose, None, None, VOXEL_ML, region_index=regions, eud_alpha_per_gy=0.3,
        bed_params=dvhmod.BedParameters(2.6, 0.05, alpha_per_gy=0.3)))
    # end to end (kernel FFT included)
    hwm_reset = _reset_hwm()
    out = rec("pipeline", lambda: pipeline(ph, kernel, workers))
    res["pipeline_vmhwm_mb"] = _vmhwm_mb() if hwm_reset else None
    rec("pipeline_region_scaled", lambda: pipeline(ph, kernel, workers, "region_scaled"))
    out32 = rec("pipeline_f32", lambda: pipeline(ph, kernel, workers, dtype=np.float32))
    body = ph["body"]
    d64b = out["dose"][body]
    res["pipeline_f32_dose_max_err_rel_to_peak"] = float(np.max(np.abs(out32["dose"][body] - d64b)) / d64b.max())
    res["pipeline_f32_dose_max_rel_err_in_body"] = float(np.max(np.abs(out32["dose"][body] / d64b - 1.0)))
    del d64b
    res["pipeline_f32_dvh_max_rel_diff"] = float(max(
        abs(getattr(q32, f) / getattr(q64, f) - 1.0)
        for lab in out["metrics"]
        for q64, q32 in ((out["metrics"][lab], out32["metrics"][lab]), (out["metrics"][lab].bed, out32["metrics"][lab].bed))
        for f in ("mean_gy", "median_gy", "min_gy", "max_gy", "eud_gy")))
    del out32
    # float32 convolver: time and error vs float64
    conv32 = dv.KernelConvolver(kernel, (n, n, n), workers=workers, dtype=np.float32)
    conv32.spectrum(cropped)  # cached, as for "convolution"
    d32 = rec("convolution_f32", lambda: conv32.convolve(tmap, scale=dv.BQ_S_PER_MBQ_H))
    d64 = conv.convolve(tmap, scale=dv.BQ_S_PER_MBQ_H)
    res["f32_max_abs_err_rel_to_peak"] = float(np.max(np.abs(d32 - d64)) / d64.max())
    del d32, conv32
    # route (b): convolve each time point, integrate the dose-rate maps
    rec("route_b_dose_rate", lambda: dv.dose_from_activity_maps(
        TIMES_H, ph["maps"], conv, decay_constant_per_h=LAM_PHYS, tail="physical", mask=ph["body"]), reps=1)
    # tracemalloc over one pipeline run
    gc.collect()
    tracemalloc.start()
    pipeline(ph, kernel, workers)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    res["pipeline_tracemalloc_peak_mb"] = peak / 2**20
    res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    # checks
    truth = ph["truth_tia"]
    res["checks"] = {
        "region_tia_fit_over_truth": {REGIONS[lab][0]: float(region_tia[i] / truth[lab]) for i, lab in enumerate(labels)},
        "voxel_tia_methods": {vk.METHOD_NAMES[k]: int(v) for k, v in tia.counts.items()},
        "liver_mean_dose_gy": metrics[2].mean_gy,
        "kidney_l": {"mean_gy": metrics[4].mean_gy, "D2_gy": metrics[4].d(2), "D98_gy": metrics[4].d(98),
                     "bed_mean_gy": metrics[4].bed.mean_gy},
        "lesion_1": {"mean_gy": metrics[8].mean_gy, "eud_gy": metrics[8].eud_gy},
        "pipeline_vs_stagewise_dose_max_rel_diff": float(np.max(np.abs(out["dose"] - dose)) / dose.max()),
    }
    # energy: sum(D m) vs emitted energy x kernel total (the kernel may extend beyond the grid)
    e_kernel_j = float(kernel.sum()) * RHO_REF * VOXEL_ML * 1e-3
    emitted = float(tmap.sum()) * dv.BQ_S_PER_MBQ_H * e_kernel_j
    res["checks"]["energy_absorbed_over_emitted"] = float((dose * ph["density"] * VOXEL_ML * 1e-3).sum() / emitted)
    res["versions"] = {"numpy": np.__version__, "scipy": scipy.__version__, "python": platform.python_version()}
    return res


def summarize(r: dict) -> str:
    st = r["stages"]
    m = {k: v["median_s"] for k, v in st.items()}
    fl = m["floor"]
    lines = [
        f"\n=== {r['n']}^3 @ {VOXEL_MM} mm, {r['repeats']} repeats, scipy.fft workers={r['workers']}; "
        f"padded {tuple(r['padded_shape'])}, cropped to the body {tuple(r['cropped_padded_shape'])} "
        f"(full-linear grid {tuple(r['full_padded_shape'])}); "
        f"body voxels {r['body_voxels']}; setup {r['setup_s']:.1f} s ===",
        f"kernel: {r['kernel']}",
        f"{'stage':<26}{'median s':>10}{'min s':>9}{'cpu s':>8}{'x floor':>9}",
    ]
    for k, v in st.items():
        lines.append(f"{k:<26}{v['median_s']:>10.3f}{v['min_s']:>9.3f}{v['cpu_s']:>8.2f}{v['median_s'] / fl:>9.2f}")
    lines.append(
        f"ratios: convolution/floor = {m['convolution'] / fl:.2f}; "
        f"convolution/floor_cropped = {m['convolution'] / m['floor_cropped']:.2f}; "
        f"(kernel_fft+convolution)/floor = {(m['kernel_fft'] + m['convolution']) / fl:.2f}; "
        f"convolution/floor(full grid) = {m['convolution'] / m['floor_full_grid']:.2f}; "
        f"pipeline/floor = {m['pipeline'] / fl:.2f}; float32 speed-up = {m['convolution'] / m['convolution_f32']:.2f} "
        f"(max error {r['f32_max_abs_err_rel_to_peak']:.1e} of the peak)"
    )
    lines.append(
        f"pipeline_f32 vs pipeline: dose max error in the body {r['pipeline_f32_dose_max_err_rel_to_peak']:.1e} of the "
        f"body's peak, "
        f"{r['pipeline_f32_dose_max_rel_err_in_body']:.1e} relative in the body; region mean/median/min/max/EUD "
        f"(dose and BED) max relative difference {r['pipeline_f32_dvh_max_rel_diff']:.1e}"
    )
    lines.append(
        f"memory: tracemalloc peak over the pipeline {r['pipeline_tracemalloc_peak_mb']:.0f} MB; "
        f"RSS after inputs {r['rss_after_inputs_mb']:.0f} MB; pipeline peak RSS (VmHWM) "
        f"{r['pipeline_vmhwm_mb'] if r['pipeline_vmhwm_mb'] is None else round(r['pipeline_vmhwm_mb'])} MB; "
        f"process maxrss {r['maxrss_mb']:.0f} MB"
    )
    lines.append("checks: " + json.dumps(r["checks"], default=float))
    return "\n".join(lines)


def run_peer(python: str, sizes, repeats: int) -> dict | None:
    if not PEER_SCRIPT.exists():
        print(f"peer script {PEER_SCRIPT} not found; skipping the peer comparison")
        return None
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
        out = tf.name
    cmd = [python, str(PEER_SCRIPT), "--sizes", *map(str, sizes), "--repeats", str(repeats), "--json", out]
    print("peer:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print("peer baseline failed:\n" + proc.stdout[-3000:] + proc.stderr[-3000:])
        return None
    print(proc.stdout)
    with open(out) as fh:
        data = json.load(fh)
    os.unlink(out)
    return data


def _peer_median(run: dict, stage: str) -> float:
    return statistics.median(x["wall_s"] for x in run["stages"][stage])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="scipy.fft workers (default: all CPUs)")
    ap.add_argument("--peer-python", default=None, help="python of a venv with pytheranostics==0.1")
    ap.add_argument("--peer-repeats", type=int, default=None)
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument("--synthetic-kernel", action="store_true", help="do not use mrtdose.physics.voxel_kernels")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    workers = a.workers or len(os.sched_getaffinity(0))
    if a.worker is not None:
        res = worker(a.worker, a.repeats, workers, a.synthetic_kernel)
        with open(a.out, "w") as fh:
            json.dump(res, fh, default=float)
        return 0
    try:
        cpu = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")][0]
    except (OSError, IndexError):
        cpu = platform.processor()
    header = {"date": date.today().isoformat(), "cpu": cpu, "cpus_available": len(os.sched_getaffinity(0)),
              "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__}
    print(json.dumps(header))
    results = {"header": header, "runs": []}
    for n in a.sizes:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
            out = tf.name
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--repeats", str(a.repeats),
               "--workers", str(workers), "--out", out] + (["--synthetic-kernel"] if a.synthetic_kernel else [])
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            raise SystemExit(f"worker for {n}^3 failed")
        with open(out) as fh:
            r = json.load(fh)
        os.unlink(out)
        results["runs"].append(r)
        print(summarize(r), flush=True)
    if a.peer_python:
        peer = run_peer(a.peer_python, a.sizes, a.peer_repeats or a.repeats)
        if peer:
            results["peer"] = peer
            print("\n=== mrtdose vs PyTheranostics 0.1 (same machine, run one after the other) ===")
            for ours, theirs in zip(results["runs"], peer["runs"]):
                pt = sum(_peer_median(theirs, s) for s in ("init", "region_fits", "voxel_tia", "apply_dens"))
                pconv = _peer_median(theirs, "convolution")
                o = ours["stages"]
                print(f"{ours['n']}^3: whole pipeline {o['pipeline']['median_s']:.3f} s vs {pt:.3f} s "
                      f"-> {pt / o['pipeline']['median_s']:.1f}x faster; convolution "
                      f"{o['convolution']['median_s']:.3f} s vs {pconv:.3f} s; "
                      f"peer max RSS {theirs.get('time_v_max_rss_mb', float('nan')):.0f} MB vs ours "
                      f"{ours['maxrss_mb']:.0f} MB")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
