"""Voxel dosimetry step of the pipeline: activity maps -> TIA map -> absorbed-dose map -> DVHs.

Reads the maps named in the case's ``voxel`` block (NIfTI with JSON sidecars), computes (or
reads) the voxel S-value kernel for the maps' voxel size, runs the chosen engine and route
(:mod:`mrtdose.dose.voxel`), the DVH metrics per region (:mod:`mrtdose.dose.dvh`) and the
patient-specific S matrix of the labelled regions, and prepares the output files as bytes for
the atomic writer. Output files (``voxel.outputs``), beside ``results.json``:

* ``rtdose``: ``dose_rtdose.dcm`` (absorbed dose, Gy) and ``tia_map_rtdose.dcm`` (the TIA
  concentration, MBq h/mL, Dose Units RELATIVE: see :mod:`mrtdose.imaging.rtdose`), both DICOM
  RT Dose on the activity maps' grid, in one study and frame of reference;
* ``nifti``: ``dose.nii.gz`` and ``tia.nii.gz`` (float32) with JSON sidecars;
* ``dvh_csv``: ``dvh.csv`` (cumulative DVH curves) and ``dvh_metrics.csv``;
* ``dose_rate_maps``: ``dose_rate_<n>_<t>h.nii.gz`` with sidecars, the absorbed-dose rate (Gy/h)
  at each time point: the activity map convolved with the kernel (or locally deposited), with
  the same density scaling and air mask as the dose map; for the ``dose_rate_integration`` route
  these are the maps the dose is integrated from.

``results["voxel"]["output_files"]`` describes each file (quantity, unit, format, DICOM Dose
Units and Dose Grid Scaling with the quantisation bound, SHA-256); ``results["voxel"]["kernel"]``
records the kernel: computed (method) or read (file, format, SHA-256 of every file it consists
of).

Region mean voxel doses carry the calibration and kernel-model uncertainty and region TIAs the
calibration uncertainty; voxel values and the other DVH metrics carry none (null, with a note);
the organ-level results carry the full budget.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from mrtdose.dose import dvh as dvh_mod
from mrtdose.dose import voxel as vdose
from mrtdose.errors import InputError
from mrtdose.imaging.kernels_io import kernel_format, read_voxel_kernel
from mrtdose.imaging.nifti import nifti_sidecar, nifti_sidecar_bytes, read_nifti, sidecar_path_for, write_nifti
from mrtdose.imaging.rtdose import TIA_UNIT, UINT32_MAX, write_rtdose, write_tia_rtdose
from mrtdose.imaging.volume import Volume
from mrtdose.kinetics import voxel as vk
from mrtdose.physics.attenuation import get_material
from mrtdose.physics.decay import elapsed_hours
from mrtdose.physics.nuclides import Nuclide
from mrtdose.physics.voxel_kernel_type import VoxelKernel
from mrtdose.physics.voxel_kernels import compute_voxel_kernel
from mrtdose.quantities import Quantity
from mrtdose.workflow.case import Case, VoxelOptions
from mrtdose.workflow.provenance import files_sha256

#: Activity-concentration units accepted for maps, with the factor to MBq/mL.
_UNITS_TO_MBQ_PER_ML = {"Bq/mL": 1e-6, "kBq/mL": 1e-3, "MBq/mL": 1.0, "Bq/ml": 1e-6, "kBq/ml": 1e-3, "MBq/ml": 1.0}

#: Voxels below this density (g/mL) are air: no dose is reported there.
AIR_DENSITY_G_PER_ML = 0.05

#: Relative standard uncertainty assigned to patient-specific S-values from our kernels: the
#: organ and lesion mean doses of our kernels agree with the Monte Carlo kernels of Lanconelli
#: et al. 2012 within 0.5 % (Y-90) and 2.5-3.5 % (Lu-177, I-131; the reference's own energy
#: normalisation), see tests/test_voxel_kernels.py.
PATIENT_S_MODEL_UNCERTAINTY_REL = 0.03


@dataclass
class VoxelStep:
    """Intermediate state between the two phases of the voxel step."""

    spec: VoxelOptions
    reference: Volume
    times_h: np.ndarray
    region_names: list[str]
    region_map: np.ndarray  # int32, 1..R for the named regions, 0 elsewhere
    density: np.ndarray | float
    density_source: str
    kernel: VoxelKernel | None
    kernel_json: dict[str, Any]
    reference_density: float
    tia_map_mbq_h: np.ndarray
    dose: vdose.VoxelDose
    s_matrix: np.ndarray | None = None
    s_masses_g: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inputs_sha256: dict[str, str] = field(default_factory=dict)
    dose_rate_maps_gy_per_h: np.ndarray | None = None  # (n_t, ...) when voxel.outputs has dose_rate_maps
    dose_uncertainty_gy: np.ndarray | None = None  # Monte Carlo statistical uncertainty per voxel (engine opengate)


def _resolve(base_dir: Path | None, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() or base_dir is None else base_dir / p


def _read_map(path: Path, where: str) -> Volume:
    if not path.is_file():
        raise InputError("file not found", source=str(path), field=where)
    return read_nifti(path)


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kernel_member_files(kpath: Path, fmt: str) -> list[Path]:
    """Every file a kernel consists of: the file itself, a NIfTI's sidecar JSON, an Interfile
    header's data file."""
    files = [kpath]
    if fmt == "nifti" and sidecar_path_for(kpath).is_file():
        files.append(sidecar_path_for(kpath))
    elif fmt == "interfile":
        m = re.search(r"^\s*!?\s*name of data file\s*:=\s*(.+?)\s*$", kpath.read_text(encoding="latin-1"),
                      re.IGNORECASE | re.MULTILINE)
        if m and (kpath.parent / m.group(1)).is_file():
            files.append(kpath.parent / m.group(1))
    return files


def _read_kernel_file(kpath: Path, spec: VoxelOptions, nuclide: Nuclide) -> tuple[VoxelKernel, dict[str, Any]]:
    """A user kernel file (any format of :mod:`mrtdose.imaging.kernels_io`), checked against the
    case: its nuclide must be the case's, its medium the case's ``voxel.kernel.medium`` when
    that is given explicitly, its unit ``voxel.kernel.unit`` when given. Returns the kernel and
    what results.json records of the file (name, format, SHA-256 of each file it consists of)."""
    where = "voxel.kernel.file"
    if not kpath.is_file():
        raise InputError("file not found", source=str(kpath), field=where)
    fmt = kernel_format(kpath)
    kw: dict[str, Any] = {"nuclide": nuclide.name.split("+")[0]}  # "Ra-223+progeny" -> the parent
    if "medium" in spec.kernel.model_fields_set:
        kw["medium"] = spec.kernel.medium
    if spec.kernel.unit:
        kw["unit"] = spec.kernel.unit
    try:
        kernel = read_voxel_kernel(kpath, **kw)
    except InputError as exc:
        raise InputError(exc.detail, source=exc.source or str(kpath), field=exc.field or where) from None
    members = _kernel_member_files(kpath, fmt)
    return kernel, {
        "file": spec.kernel.file,  # as given in the case (relative to the case's directory)
        "format": fmt,
        "sha256": _sha256_file(kpath),
        "files_sha256": {p.name: _sha256_file(p) for p in members},
        "checked_against_case": sorted(kw),
    }


def _dose_rate_maps(stack: np.ndarray, conv: Any, spec: VoxelOptions, nuclide: Nuclide, vox_ml: float,
                    density: np.ndarray | float, dens_arg: Any, rho_ref: float) -> np.ndarray:
    """Absorbed-dose rate (Gy/h) at each time point from the activity maps ``stack`` (MBq per
    voxel), by the engine of the dose map: the kernel convolution (1 MBq for 1 h = 3.6e9 decays,
    so MBq x Gy/(Bq s) x 3.6e9 = Gy/h) with the same density scaling, or local deposition of the
    non-penetrating energy; voxels of air (density < AIR_DENSITY_G_PER_ML) set to 0 as in the
    dose map. For the dose_rate_integration route these are the maps the dose integrates."""
    rates = np.empty(stack.shape, dtype=np.float32)  # written as float32 NIfTI; half the memory
    for i in range(stack.shape[0]):  # one convolution per time point
        if conv is not None:
            r = conv.convolve(stack[i], scale=vdose.BQ_S_PER_MBQ_H)
            if dens_arg is not None:
                vdose.density_scale(r, dens_arg, rho_ref, in_place=True)
        else:
            r = vdose.local_deposition(stack[i], vox_ml, density, nuclide.nonpenetrating_mev)
        rates[i] = r
    if np.ndim(density):
        rates[:, np.asarray(density) < AIR_DENSITY_G_PER_ML] = 0.0
    return rates


def prepare(case: Case, nuclide: Nuclide, base_dir: Path | None, say: Callable[[str], None]) -> VoxelStep:
    """Phase 1: maps, kernel, TIA map, dose map and patient-specific S-values."""
    spec = case.voxel
    assert spec is not None
    warnings: list[str] = []
    notes: list[str] = []
    maps: list[Volume] = []
    times: list[float] = []
    for i, m in enumerate(spec.activity_maps):
        where = f"voxel.activity_maps.{i}"
        say(f"voxel: reading activity map {i + 1}/{len(spec.activity_maps)}")
        path = _resolve(base_dir, m.file)
        vol = _read_map(path, where)
        if vol.unit not in _UNITS_TO_MBQ_PER_ML:
            raise InputError(
                f"unit '{vol.unit}' is not an activity concentration (one of {', '.join(sorted(set(_UNITS_TO_MBQ_PER_ML)))})",
                source=str(path), field=where,
            )
        if maps and not vol.same_grid(maps[0]):
            raise InputError("grid (size, spacing, origin or orientation) differs from the first map", source=str(path), field=where)
        if m.time_h is not None:
            t = float(m.time_h)
        elif vol.acquisition_time is not None:
            t = elapsed_hours(case.administration.time, vol.acquisition_time, what=f"{where} acquisition time")  # type: ignore[arg-type]
        else:
            raise InputError("no time: give time_h or an acquisition_time in the sidecar", source=str(path), field=where)
        if t <= 0:
            raise InputError(f"acquired {t:.2f} h after the administration: must be after it", source=str(path), field=where)
        if np.any(vol.array < 0):
            warnings.append(f"{path.name}: negative voxel values set to 0")
        maps.append(vol)
        times.append(t)
    order = np.argsort(times)
    times_h = np.asarray(times)[order]
    if len(np.unique(times_h)) != len(times_h):
        raise InputError("two activity maps at the same time", field="voxel.activity_maps")
    ref = maps[0]
    vox_ml = ref.voxel_volume_ml
    stack = np.stack([np.clip(maps[i].array, 0, None) * _UNITS_TO_MBQ_PER_ML[maps[i].unit] * vox_ml for i in order])

    # Labels -> named regions
    lpath = _resolve(base_dir, spec.labels.file)
    lab_vol = read_nifti(lpath) if sidecar_path_for(lpath).exists() else read_nifti(lpath, unit="1")
    if not lab_vol.same_grid(ref):
        raise InputError("label map is not on the activity maps' grid", source=str(lpath), field="voxel.labels.file")
    lab = np.asarray(lab_vol.array)
    if not np.allclose(lab, np.round(lab)):
        raise InputError("label map must hold integers", source=str(lpath), field="voxel.labels.file")
    lab = np.round(lab).astype(np.int64)
    names = list(spec.labels.regions)
    region_map = np.zeros(lab.shape, dtype=np.int32)
    for r, name in enumerate(names, start=1):
        vals = spec.labels.regions[name]
        vals = [vals] if isinstance(vals, int) else vals
        sel = np.isin(lab, vals)
        if not sel.any():
            raise InputError(f"label(s) {vals} have no voxels in the map", source=str(lpath), field=f"voxel.labels.regions.{name}")
        region_map[sel] = r
        total = float(stack[:, sel].sum())
        if total <= 0:
            raise InputError("region has no activity in any map", source=str(lpath), field=f"voxel.labels.regions.{name}")

    # Density
    if spec.density:
        dpath = _resolve(base_dir, spec.density)
        dvol = read_nifti(dpath)
        if not dvol.same_grid(ref):
            raise InputError("density map is not on the activity maps' grid", source=str(dpath), field="voxel.density")
        if dvol.unit not in ("g/mL", "g/ml", "g/cm3"):
            raise InputError(f"density unit '{dvol.unit}' must be g/mL", source=str(dpath), field="voxel.density")
        density: np.ndarray | float = np.clip(np.asarray(dvol.array, dtype=np.float64), 1e-3, None)
        density_source = f"density map {dpath.name}"
    else:
        density = float(case.options.organ_density_g_per_ml)
        density_source = f"uniform {density:g} g/mL (options.organ_density_g_per_ml)"

    # Kernel
    kernel: VoxelKernel | None = None
    if spec.engine == "kernel_convolution":
        say("voxel: kernel")
        file_json: dict[str, Any] = {}
        if spec.kernel.file:
            kpath = _resolve(base_dir, spec.kernel.file)
            kernel, file_json = _read_kernel_file(kpath, spec, nuclide)
            if not kernel.matches_spacing(ref.spacing_mm):
                raise InputError(
                    f"kernel voxel size {kernel.voxel_size_mm} mm differs from the maps' {ref.spacing_mm} mm",
                    source=str(kpath), field="voxel.kernel.file",
                )
            rho_ref = spec.kernel.reference_density_g_per_ml or 1.0
        else:
            kernel = compute_voxel_kernel(nuclide, tuple(float(s) for s in ref.spacing_mm), spec.kernel.medium)
            rho_ref = spec.kernel.reference_density_g_per_ml or get_material(spec.kernel.medium).density_g_per_ml
            file_json = {"format": "computed"}
        kernel_json = {
            "source": kernel.source, "description": kernel.description, **file_json, "nuclide": kernel.nuclide,
            "medium": kernel.medium, "voxel_size_mm": list(kernel.voxel_size_mm),
            "shape": list(kernel.array_gy_per_bq_s.shape), "reference_density_g_per_ml": rho_ref,
            "centre_s_gy_per_bq_s": float(kernel.centre_gy_per_bq_s),
        }
    elif spec.engine == "opengate":
        rho_ref = 1.0
        kernel_json = {"source": "none: Monte Carlo (OpenGATE)", "description": "", "format": "none"}
    else:
        rho_ref = 1.0
        kernel_json = {"source": "none: local deposition of the non-penetrating energy", "description": "",
                       "format": "none"}

    # TIA and dose maps
    lam = nuclide.decay_constant_per_h
    body = region_map > 0
    body |= stack.max(axis=0) > 0
    say("voxel: voxel kinetics and dose")
    kin_opts: dict[str, Any] = {"mask": body}
    dens_arg = density if (spec.density_correction and spec.density) else None
    mc_json: dict[str, Any] | None = None
    mc_unc: np.ndarray | None = None  # Monte Carlo statistical uncertainty per voxel (Gy)
    if spec.engine == "opengate":
        from mrtdose.dose import monte_carlo

        # availability (OpenGATE and its Geant4 data) is checked before any work
        avail = monte_carlo.gate_availability()
        if not avail.data_ok:
            raise InputError(avail.message(), field="voxel.engine")
        tia = vk.voxel_tia(times_h, stack, lam, method=spec.kinetics, **kin_opts)
        dens_vol = ref.with_array(np.asarray(density, dtype=np.float64) if np.ndim(density)
                                  else np.full(ref.shape, float(density)), unit="g/mL")
        mc = spec.monte_carlo
        res = monte_carlo.gate_dose_map(ref.with_array(tia.tia_map_mbq_h / vox_ml, unit="MBq h/mL"), dens_vol, nuclide,
                                        n_decays=mc.n_decays, seed=mc.seed, threads=mc.threads,
                                        composition=mc.composition, production_cut_mm=mc.production_cut_mm)
        dose = res.as_voxel_dose(route="voxel-kinetics-monte-carlo", method_map=tia.method_map,
                                 settings={"kinetics": spec.kinetics, **dict(tia.settings)})
        tia_map = tia.tia_map_mbq_h
        mc_json = res.to_json()
        mc_unc = np.asarray(res.uncertainty, dtype=np.float64)
        kernel_json["monte_carlo"] = mc_json
    elif spec.engine == "local_deposition":
        tia = vk.voxel_tia(times_h, stack, lam, method=spec.kinetics, **kin_opts)
        mass_g = (density if np.ndim(density) else np.full(stack.shape[1:], density)) * vox_ml
        dose_map = vdose.local_deposition(tia.tia_map_mbq_h, vox_ml, mass_g / vox_ml, nuclide.nonpenetrating_mev)
        dose = vdose.VoxelDose(np.asarray(dose_map, dtype=np.float64), "voxel-kinetics-convolution", "local-deposition",
                               False, tia.method_map, {"kinetics": spec.kinetics}, (vdose.REF_LDM,) + tuple(tia.references))
        tia_map = tia.tia_map_mbq_h
        if nuclide.photon_mev > 0.05 * nuclide.nonpenetrating_mev:
            warnings.append(
                f"voxel: local deposition ignores the photon energy ({nuclide.photon_mev:.3g} MeV per decay, "
                f"{100 * nuclide.photon_mev / (nuclide.photon_mev + nuclide.nonpenetrating_mev):.0f} % of the total)"
            )
    else:
        assert kernel is not None
        conv = vdose.KernelConvolver(kernel.array_gy_per_bq_s, stack.shape[1:])
        if spec.route == "dose_rate_integration":
            dose = vdose.dose_from_activity_maps(times_h, stack, conv, decay_constant_per_h=lam,
                                                 density_map_g_per_ml=dens_arg, reference_density_g_per_ml=rho_ref,
                                                 mask=body)
            tia = vk.voxel_tia(times_h, stack, lam, method="trapezoid", **kin_opts)
        else:
            tia = vk.voxel_tia(times_h, stack, lam, method=spec.kinetics, **kin_opts)
            dose = vdose.dose_from_tia_map(tia.tia_map_mbq_h, conv, density_map_g_per_ml=dens_arg,
                                           reference_density_g_per_ml=rho_ref, method_map=tia.method_map,
                                           route="voxel-kinetics-convolution",
                                           settings={"kinetics": spec.kinetics, **dict(tia.settings)})
        tia_map = tia.tia_map_mbq_h
    if np.ndim(density):
        # Air voxels (e.g. around the body): a density-scaled dose there is energy over a
        # vanishing mass, meaningless for dosimetry; such voxels are set to 0 and said so.
        air = np.asarray(density) < AIR_DENSITY_G_PER_ML
        if air.any():
            dose = vdose.VoxelDose(np.where(air, 0.0, dose.dose_gy), dose.route, dose.engine, dose.density_corrected,
                                   dose.method_map, dose.settings, dose.references)
            if mc_unc is not None:  # a dose set to 0 has no statistical uncertainty
                mc_unc = np.where(air, 0.0, mc_unc)
            notes.append(f"dose set to 0 in {int(air.sum())} voxels of density < {AIR_DENSITY_G_PER_ML} g/mL (air)")
    rates = None
    if "dose_rate_maps" in spec.outputs:
        say("voxel: dose-rate maps")
        rates = _dose_rate_maps(stack, conv if kernel is not None else None, spec, nuclide, vox_ml, density, dens_arg,
                                rho_ref)
    inputs = [_resolve(base_dir, m.file) for m in spec.activity_maps]
    hashes = {"activity_maps": files_sha256(inputs), "labels": files_sha256([lpath])}
    if spec.density:
        hashes["density"] = files_sha256([_resolve(base_dir, spec.density)])
    if spec.kernel.file:
        kfile = _resolve(base_dir, spec.kernel.file)
        # the files themselves (an Interfile data file may lie in another folder than its header)
        fmt = kernel_json.get("format")
        hashes["kernel"] = files_sha256(_kernel_member_files(kfile, fmt) if fmt in ("nifti", "interfile") else [kfile])
    step = VoxelStep(spec, ref, times_h, names, region_map, density, density_source, kernel, kernel_json,
                     rho_ref, np.asarray(tia_map, dtype=np.float64), dose, warnings=warnings, notes=notes,
                     inputs_sha256=hashes, dose_rate_maps_gy_per_h=rates,
                     dose_uncertainty_gy=mc_unc)
    if spec.patient_specific_s_values and kernel is not None:
        say("voxel: patient-specific S-values")
        s, masses = vdose.patient_specific_s_values(
            region_map, conv, vox_ml, density if np.ndim(density) else float(density),
            list(range(1, len(names) + 1)), reference_density_g_per_ml=rho_ref,
        )
        step.s_matrix, step.s_masses_g = s, masses
    return step


def _calibration_pct(case: Case) -> float | None:
    v = case.voxel
    return v.calibration_uncertainty_pct if v is not None and v.calibration_uncertainty_pct is not None \
        else case.options.calibration_uncertainty_pct


def _region_tia_quantity(tia_mbq_h: float, case: Case) -> dict[str, Any]:
    """Region sum of the voxel TIA map; it is proportional to the maps' activity calibration,
    whose uncertainty is therefore its (only propagated) component; null without one."""
    cal = _calibration_pct(case)
    method = "sum of the voxel TIA map over the region"
    if not cal:
        return {"value": tia_mbq_h, "uncertainty": None, "unit": "MBq h",
                "method": f"{method}; no calibration uncertainty given: uncertainty not propagated"}
    u = tia_mbq_h * cal / 100.0
    return Quantity(tia_mbq_h, u, "MBq h", f"{method}; uncertainty from the calibration only (voxel kinetics, "
                    "partial-volume effects and image noise not included)", {"calibration": u}).to_json()


def _eud_alpha(spec: VoxelOptions, name: str) -> float | None:
    a = spec.eud_alpha_per_gy
    if isinstance(a, dict):
        return a.get(name)
    return a


def _sidecar(volume: Volume, **extra: Any) -> bytes:
    doc = nifti_sidecar(volume)
    doc.update(extra)
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _rtdose_facts(raw: bytes) -> dict[str, Any]:
    """Dose Units and Dose Grid Scaling of an encoded RT Dose, with the quantisation bound."""
    ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
    scaling = float(ds.DoseGridScaling)
    return {"dicom_dose_units": str(ds.DoseUnits), "dicom_dose_type": str(ds.DoseType),
            "dose_grid_scaling": scaling, "max_quantisation_error": scaling / 2.0,
            "stored_values": f"uint32, 0..{UINT32_MAX}; value = stored x Dose Grid Scaling"}


def finish(step: VoxelStep, case: Case, organ_results: dict[str, Any], say: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Phase 2: DVH metrics (with BED where the organ-level result has a G factor; EUD where
    ``voxel.eud_alpha_per_gy`` gives alpha), JSON and output files."""
    spec = step.spec
    ref = step.reference
    vox_ml = ref.voxel_volume_ml
    dose = step.dose.dose_gy
    say("voxel: DVH metrics")
    regions_json: dict[str, Any] = {}
    curves: dict[str, dvh_mod.CumulativeDVH] = {}
    metrics: dict[str, dvh_mod.DVHMetrics] = {}
    for r, name in enumerate(step.region_names, start=1):
        mask = step.region_map == r
        bed_params = None
        alpha = _eud_alpha(spec, name)
        org = organ_results.get(name)
        if org is not None and org.get("radiobiology"):
            rbj = org["radiobiology"]
            bed_params = dvh_mod.BedParameters(rbj["alpha_beta_gy"], rbj["g_factor"], alpha_per_gy=alpha,
                                               tissue=rbj["tissue"])
        m = dvh_mod.dvh_metrics(dose, mask, vox_ml, thresholds_gy=tuple(spec.dvh_thresholds_gy),
                                eud_alpha_per_gy=alpha, bed_params=bed_params,
                                density_map_g_per_ml=step.density if np.ndim(step.density) else None)
        c = dvh_mod.cumulative_dvh(dose, mask, vox_ml, bins=100)
        metrics[name], curves[name] = m, c
        mass = float((step.density[mask].sum() if np.ndim(step.density) else step.density * mask.sum()) * vox_ml)
        tia_r = float(step.tia_map_mbq_h[mask].sum())
        mj = m.to_json()
        if alpha is None:
            mj["notes"].append("EUD not computed: give voxel.eud_alpha_per_gy (radiosensitivity alpha, 1/Gy); "
                               "mrtdose has no cited default")
        if bed_params is None:
            mj["notes"].append(
                "voxel BED not computed: the region has no organ-level radiobiology (tissue parameters and G factor); "
                "list it under regions with measurements (or tia_mbq_h with effective_half_life_h)"
            )
        regions_json[name] = {
            "volume_ml": float(mask.sum() * vox_ml),
            "mass_g": mass,
            "time_integrated_activity": _region_tia_quantity(tia_r, case),
            "absorbed_dose_voxel": _mean_dose_quantity(m.mean_gy, step, case, mask),
            "dvh_metrics": mj,
            "dvh_curve": c.to_json(),
        }
        if org is not None:
            org["absorbed_dose_voxel"] = regions_json[name]["absorbed_dose_voxel"]
            org["dvh_metrics"] = regions_json[name]["dvh_metrics"]
    out_json: dict[str, Any] = {
        "grid": {"shape_zyx": list(dose.shape), "spacing_mm": list(ref.spacing_mm), "origin_mm": list(ref.origin_mm),
                 "voxel_volume_ml": vox_ml},
        "times_h": step.times_h.tolist(),
        "kernel": step.kernel_json,
        "dose": step.dose.to_json(),
        "density": step.density_source,
        "density_correction": bool(spec.density_correction and spec.density),
        "regions": regions_json,
        "uncertainty_note": ("region mean doses carry the calibration and kernel-model uncertainty and region TIAs the "
                             "calibration uncertainty only; voxel values and the other DVH metrics carry none (null); "
                             "the organ-level results carry the full budget"),
        "warnings": list(step.warnings),
        "notes": list(step.notes),
        "inputs_sha256": step.inputs_sha256,
        "files": {},
        "output_files": {},
    }
    if step.s_matrix is not None:
        out_json["patient_specific_s_values"] = {
            "regions": step.region_names,
            "s_gy_per_bq_s": step.s_matrix.tolist(),
            "masses_g": step.s_masses_g.tolist() if step.s_masses_g is not None else None,
            "method": "uniform unit activity in each source region convolved with the kernel; mean dose per target "
                      "region (MIRD Pamphlet 17)",
            "model_uncertainty_rel": PATIENT_S_MODEL_UNCERTAINTY_REL,
        }
    files: dict[str, bytes] = {}
    described: dict[str, dict[str, Any]] = {}
    say("voxel: output maps")
    # The maps are not acquisitions: no acquisition time (the first map's would mislead).
    dose_vol = ref.with_array(dose.astype(np.float32), unit="Gy", modality="RTDOSE", description="absorbed dose",
                              acquisition_time=None)
    tia_conc = step.tia_map_mbq_h / vox_ml
    tia_vol = ref.with_array(tia_conc.astype(np.float32), unit=TIA_UNIT, modality="OT",
                             description="time-integrated activity concentration", acquisition_time=None)
    if "nifti" in spec.outputs:
        files["dose.nii.gz"] = write_nifti(dose_vol, compress=True)
        files["dose.json"] = nifti_sidecar_bytes(dose_vol)
        files["tia.nii.gz"] = write_nifti(tia_vol, compress=True)
        files["tia.json"] = nifti_sidecar_bytes(tia_vol)
        nifti = {"format": "NIfTI-1 (gzip), float32, JSON sidecar", "sidecar": None}
        described["dose.nii.gz"] = {**nifti, "quantity": "absorbed dose", "unit": "Gy", "sidecar": "dose.json"}
        described["tia.nii.gz"] = {**nifti, "quantity": "time-integrated activity concentration", "unit": TIA_UNIT,
                                   "sidecar": "tia.json"}
    if "rtdose" in spec.outputs:
        # One study and one frame of reference for both objects, so that a viewer overlays them.
        uids = {"study_instance_uid": generate_uid(), "frame_of_reference_uid": generate_uid()}
        files["dose_rtdose.dcm"] = write_rtdose(
            dose_vol, ref, patient_id=case.patient.id, series_description="mrtdose absorbed dose",
            dose_summation_type="PLAN", allow_missing_reference=True, series_number=1, **uids,
        )
        files["tia_map_rtdose.dcm"] = write_tia_rtdose(
            ref.with_array(tia_conc, unit=TIA_UNIT, acquisition_time=None), ref, patient_id=case.patient.id,
            dose_summation_type="PLAN", allow_missing_reference=True, series_number=2, **uids,
        )
        described["dose_rtdose.dcm"] = {"format": "DICOM RT Dose", "quantity": "absorbed dose", "unit": "Gy",
                                        **_rtdose_facts(files["dose_rtdose.dcm"])}
        described["tia_map_rtdose.dcm"] = {
            "format": "DICOM RT Dose", "quantity": "time-integrated activity concentration (not absorbed dose)",
            "unit": TIA_UNIT, **_rtdose_facts(files["tia_map_rtdose.dcm"]),
            "encoding": "Dose Units RELATIVE with the reference value 1 MBq h/mL, stated in Dose Comment, Image "
                        "Comments, a Real World Value Mapping item (UCUM MBq.h/mL) and the private block 'MRTDOSE 1' "
                        "(mrtdose.imaging.rtdose.read_tia_rtdose reads it back)",
        }
    if "dvh_csv" in spec.outputs:
        files["dvh.csv"] = dvh_mod.dvh_csv(curves).encode("utf-8")
        files["dvh_metrics.csv"] = dvh_mod.metrics_csv(metrics).encode("utf-8")
        described["dvh.csv"] = {"format": "CSV", "quantity": "cumulative DVH per region (region, dose_gy, "
                                "volume_fraction, volume_ml)", "unit": "Gy"}
        described["dvh_metrics.csv"] = {"format": "CSV", "quantity": "DVH metrics per region", "unit": "Gy"}
    if step.dose_rate_maps_gy_per_h is not None:
        admin = case.administration.time
        for i, (t, rate) in enumerate(zip(step.times_h, step.dose_rate_maps_gy_per_h), start=1):
            name = f"dose_rate_{i:02d}_{float(t):g}h"
            vol = ref.with_array(rate.astype(np.float32), unit="Gy/h", modality="OT",
                                 description=f"absorbed-dose rate {float(t):g} h after administration",
                                 acquisition_time=(admin + timedelta(hours=float(t))) if admin is not None else None)
            files[f"{name}.nii.gz"] = write_nifti(vol, compress=True)
            files[f"{name}.json"] = _sidecar(vol, time_h=float(t), quantity="absorbed-dose rate",
                                             method=_RATE_METHOD[step.kernel is not None])
            described[f"{name}.nii.gz"] = {"format": "NIfTI-1 (gzip), float32, JSON sidecar", "sidecar": f"{name}.json",
                                           "quantity": "absorbed-dose rate", "unit": "Gy/h", "time_h": float(t)}
    for k, d in described.items():
        d["sha256"] = hashlib.sha256(files[k]).hexdigest()
    out_json["output_files"] = described
    out_json["files"] = {k: f"{d['quantity']} ({d['unit']}), {d['format']}" for k, d in described.items()}
    return out_json, files


_RATE_METHOD = {
    True: "activity map (MBq per voxel) convolved with the voxel S-value kernel, x 3.6e9 decays per MBq h "
          "(MIRD Pamphlet 17), density-scaled as the dose map",
    False: "local deposition of the non-penetrating energy of the activity map",
}


def _mean_dose_quantity(mean_gy: float, step: VoxelStep, case: Case, mask: np.ndarray | None = None) -> dict[str, Any]:
    """Region mean of the voxel dose map with the uncertainty components that scale it as a
    whole: the activity calibration of the maps (the mean dose is proportional to it) and the
    model uncertainty of our computed kernel (PATIENT_S_MODEL_UNCERTAINTY_REL); with the Monte
    Carlo engine, its statistical uncertainty of the region mean, sqrt(sum u_i^2) / N over the
    region's N voxels (voxels treated as independent: neighbouring voxels share histories, so
    this is a lower bound; with 1e6+ decays it is small beside the calibration). Partial-volume
    effects and image noise are not included (stated in the method)."""
    comps: dict[str, float] = {}
    if step.dose_uncertainty_gy is not None and mask is not None and mask.any():
        comps["Monte Carlo statistics"] = float(np.sqrt(np.sum(step.dose_uncertainty_gy[mask] ** 2)) / mask.sum())
    cal = _calibration_pct(case)
    if cal:
        comps["calibration"] = mean_gy * cal / 100.0
    if step.kernel is not None and step.spec.kernel.file is None:  # our computed kernel
        comps["voxel kernel model"] = mean_gy * PATIENT_S_MODEL_UNCERTAINTY_REL
    u = math.sqrt(sum(v * v for v in comps.values()))
    method = (f"mean of the voxel dose map ({step.dose.route}, {step.dose.engine}); uncertainty from the "
              "calibration and the kernel model (or the Monte Carlo statistics) only: partial-volume effects and image noise "
              "not included")
    return Quantity(mean_gy, u, "Gy", method, comps).to_json()


def slices_for_report(step: VoxelStep, n: int = 4) -> dict[str, Any]:
    """Axial slices of the dose map with region outlines, for display only: through the centres
    of the regions, the smallest regions first (small lesions are where voxel and organ-level
    doses differ most), at most ``n``."""
    dose = step.dose.dose_gy
    centres = []
    for r in range(1, len(step.region_names) + 1):
        sel = step.region_map == r
        z = np.nonzero(sel.any(axis=(1, 2)))[0]
        if z.size:
            centres.append((int(sel.sum()), int(np.median(z))))
    zs: list[int] = []
    for _, z in sorted(centres):
        if all(abs(z - other) > 1 for other in zs):
            zs.append(z)
    zs = sorted(zs[:n])
    return {
        "slices": [{"z": z, "dose_gy": dose[z], "regions": step.region_map[z]} for z in zs],
        "region_names": step.region_names,
        "spacing_mm": tuple(step.reference.spacing_mm),
        "max_dose_gy": float(np.max(dose)) if dose.size else 0.0,
    }
