"""The case file: what a physicist writes down about one administration.

A case is a YAML or JSON document validated by the pydantic models below; a validation error
names the file and the dotted path of the field. The JSON Schema published in
``schemas/case.schema.json`` is generated from these models (``mrtdose schema case``).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from mrtdose.errors import InputError, from_validation_error

#: Plausibility limits used to catch unit mistakes (activity in Bq or kBq given as MBq, mass in
#: kg given as g...). The largest single MRT administrations are about 30 GBq (I-131 ablation of
#: metastatic DTC, EANM 2008 guidelines) and whole-body masses are below 300 kg.
MAX_ADMINISTERED_MBQ = 100_000.0
MIN_ADMINISTERED_MBQ = 1.0
MAX_REGION_MASS_G = 300_000.0
MAX_TIME_H = 24.0 * 365.0


def _require_zone(v: datetime) -> datetime:
    if v.tzinfo is None or v.utcoffset() is None:
        raise ValueError(f"'{v.isoformat()}' has no time zone; append e.g. +00:00")
    return v


#: A date-time that must carry its time zone (never guessed).
ZonedDatetime = Annotated[datetime, AfterValidator(_require_zone)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Patient(_Strict):
    id: str = Field(min_length=1, description="Pseudonymous patient identifier (never a name).")
    sex: Literal["male", "female", "other", "unknown"] | None = None
    mass_kg: float | None = Field(default=None, gt=0, le=400)
    height_cm: float | None = Field(default=None, gt=0, le=260)
    birth_year: int | None = Field(default=None, ge=1900, le=2100)


class Administration(_Strict):
    activity_mbq: float = Field(gt=0, description="Administered activity (MBq), residual-corrected.")
    activity_uncertainty_pct: float = Field(
        default=0.0, ge=0, le=100, description="Standard uncertainty of the administered activity (%)"
    )
    time: ZonedDatetime | None = Field(default=None, description="Time of administration, with time zone.")
    cycle: int = Field(default=1, ge=1)
    route: Literal["intravenous", "intra-arterial", "oral", "intracavitary", "other"] | None = None

    @field_validator("activity_mbq")
    @classmethod
    def _plausible(cls, v: float) -> float:
        if v > MAX_ADMINISTERED_MBQ:
            raise ValueError(
                f"{v:g} MBq is more than {MAX_ADMINISTERED_MBQ:g} MBq: is this in kBq or Bq? Give MBq"
            )
        if v < MIN_ADMINISTERED_MBQ:
            raise ValueError(f"{v:g} MBq is implausibly small for a therapy: is this in GBq? Give MBq")
        return v


class PlanarMeasurement(_Strict):
    """Conjugate-view planar quantification of a region (MIRD Pamphlet 16)."""

    anterior_counts: float = Field(gt=0, description="Region counts, anterior view (scatter/background corrected).")
    posterior_counts: float = Field(gt=0, description="Region counts, posterior view.")
    acquisition_duration_s: float = Field(gt=0)
    sensitivity_cps_per_mbq: float = Field(gt=0, description="Planar system sensitivity.")
    sensitivity_uncertainty_pct: float = Field(default=0.0, ge=0, le=100)
    transmission: float | None = Field(default=None, gt=0, le=1, description="Measured transmission factor exp(-mu T).")
    body_thickness_cm: float | None = Field(default=None, gt=0, lt=100)
    body_thickness_uncertainty_cm: float = Field(default=0.0, ge=0)
    mu_per_cm: float | None = Field(default=None, gt=0, lt=2, description="Effective mu; default narrow-beam soft tissue at the main photopeak.")

    @model_validator(mode="after")
    def _check(self) -> "PlanarMeasurement":
        if (self.transmission is None) == (self.body_thickness_cm is None):
            raise ValueError("give transmission or body_thickness_cm (exactly one)")
        return self


class Measurement(_Strict):
    time_h: float | None = Field(default=None, description="Hours after administration.")
    time: datetime | None = Field(default=None, description="Clock time of the measurement, with time zone.")
    activity_mbq: float | None = Field(default=None, description="Activity in the region at that time (MBq), not decay-corrected.")
    planar: PlanarMeasurement | None = Field(default=None, description="Or conjugate-view counts from which the activity is computed.")
    uncertainty_pct: float | None = Field(default=None, ge=0, le=100, description="Standard uncertainty (%).")
    uncertainty_mbq: float | None = Field(default=None, ge=0, description="Standard uncertainty (MBq).")

    @model_validator(mode="after")
    def _check(self) -> "Measurement":
        if (self.time_h is None) == (self.time is None):
            raise ValueError("give exactly one of time_h or time")
        if self.time is not None and (self.time.tzinfo is None or self.time.utcoffset() is None):
            raise ValueError(f"time '{self.time.isoformat()}' has no time zone; append e.g. +00:00")
        if self.time_h is not None and not (0 < self.time_h <= MAX_TIME_H):
            raise ValueError(f"time_h {self.time_h:g} must be after the administration (> 0) and within a year")
        if (self.activity_mbq is None) == (self.planar is None):
            raise ValueError("give activity_mbq or planar (exactly one)")
        if self.planar is not None:
            if self.uncertainty_pct is not None or self.uncertainty_mbq is not None:
                raise ValueError("a planar measurement's uncertainty is computed from its counts; do not give one")
            return self
        if not (self.activity_mbq > 0):
            raise ValueError(f"activity_mbq must be > 0 (got {self.activity_mbq:g}); a region with no activity has no dose to fit")
        if self.uncertainty_pct is not None and self.uncertainty_mbq is not None:
            raise ValueError("give uncertainty_pct or uncertainty_mbq, not both")
        return self


class SinglePoint(_Strict):
    """Single-time-point options for a region with one measurement."""

    method: Literal["hanscheid", "madsen", "prior"] = "hanscheid"
    effective_half_life_h: float | None = Field(default=None, gt=0)
    effective_half_life_sd_h: float | None = Field(default=None, ge=0)


class Region(_Strict):
    kind: Literal["organ", "lesion"] = "organ"
    mass_g: float | None = Field(default=None, gt=0)
    volume_ml: float | None = Field(default=None, gt=0)
    density_g_per_ml: float | None = Field(default=None, gt=0.1, lt=3.0)
    mass_uncertainty_pct: float | None = Field(default=None, ge=0, le=100)
    volume_uncertainty_pct: float | None = Field(default=None, ge=0, le=100)
    measurements: list[Measurement] | None = None
    tia_mbq_h: float | None = Field(default=None, gt=0, description="Time-integrated activity given directly (MBq h).")
    tia_uncertainty_pct: float | None = Field(default=None, ge=0, le=100)
    kinetics: str | None = Field(default=None, description="Kinetic model; default options.kinetics.")
    single_point: SinglePoint | None = None
    recovery_coefficient: float | None = Field(default=None, gt=0, le=1.5)
    recovery_uncertainty: float | None = Field(default=None, ge=0)
    activity_scale_uncertainty_pct: float | None = Field(
        default=None, ge=0, le=100,
        description="Standard uncertainty (%) of a factor common to all of this region's activities (correlated between "
                    "time points; e.g. the SPECT scale of a hybrid planar/SPECT curve); enters the budget once.",
    )
    tissue: str | None = Field(default=None, description="Radiobiology tissue (e.g. kidney); default from the name.")
    effective_half_life_h: float | None = Field(
        default=None, gt=0, description="For a given TIA: effective half-life used for the BED dose-rate shape."
    )
    semi_axes_ratio: tuple[float, float, float] | None = Field(
        default=None, description="Ellipsoid axis ratios for the photon self-absorbed fraction (organs)."
    )

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> "Region":
        from_images = bool((info.context or {}).get("imaging"))
        if self.mass_g is None and self.volume_ml is None and not from_images:
            raise ValueError("give mass_g or volume_ml (with density_g_per_ml; default options.organ_density_g_per_ml / lesion_density_g_per_ml, 1.03)")
        if self.mass_g is not None and self.volume_ml is not None and self.density_g_per_ml is not None:
            implied = self.mass_g / self.volume_ml
            if abs(implied - self.density_g_per_ml) / self.density_g_per_ml > 0.05:
                raise ValueError(
                    f"mass_g / volume_ml = {implied:.3f} g/mL contradicts density_g_per_ml = {self.density_g_per_ml}"
                )
        mass = self.mass_g if self.mass_g is not None else self.volume_ml
        if mass is not None and mass > MAX_REGION_MASS_G:
            raise ValueError(f"{mass:g} g is larger than a whole body: is the mass in mg? Give grams")
        has_meas = bool(self.measurements)
        has_tia = self.tia_mbq_h is not None
        if has_meas == has_tia and not (from_images and not has_meas and not has_tia):
            raise ValueError("give either measurements or tia_mbq_h (exactly one)")
        if self.measurements is not None and len(self.measurements) == 0:
            raise ValueError("measurements is empty")
        if has_tia and (self.kinetics or self.single_point):
            raise ValueError("kinetics/single_point apply to measurements, not to a given tia_mbq_h")
        if self.activity_scale_uncertainty_pct is not None and not self.measurements:
            raise ValueError("activity_scale_uncertainty_pct applies to measured activities")
        if self.recovery_uncertainty is not None and self.recovery_coefficient is None:
            raise ValueError("recovery_uncertainty given without recovery_coefficient")
        return self


class SValueTableOption(_Strict):
    path: str
    phantom: str = Field(min_length=1)
    names: dict[str, str] = Field(default_factory=dict, description="Table region name -> case region name.")
    default_uncertainty_pct: float = Field(default=10.0, ge=0, le=100)


class Options(_Strict):
    kinetics: str = Field(default="auto", description="Default kinetic model for regions with measurements.")
    s_values: Literal["self_sphere", "table", "patient_specific"] = "self_sphere"
    s_value_table: SValueTableOption | None = None
    uncertainty: bool = True
    monte_carlo_samples: int = Field(default=2000, ge=0, le=200_000)
    seed: int = 20180911
    calibration_uncertainty_pct: float | None = Field(
        default=None, ge=0, le=100,
        description="Standard uncertainty of the activity calibration (%), common to all measurements.",
    )
    default_measurement_uncertainty_pct: float = Field(default=5.0, gt=0, le=100)
    allow_below_physical: bool = False
    include_progeny: bool = Field(default=False, description="Add short-lived progeny in equilibrium (e.g. Ra-223).")
    # ICRU Report 46 (1992) adult soft tissue: 1.03 g/cm^3; used when only a volume is given.
    organ_density_g_per_ml: float = Field(default=1.03, gt=0.1, lt=3.0)
    lesion_density_g_per_ml: float = Field(default=1.03, gt=0.1, lt=3.0)

    @model_validator(mode="after")
    def _check(self) -> "Options":
        if self.s_values == "table" and self.s_value_table is None:
            raise ValueError("s_values: table needs s_value_table: {path, phantom}")
        return self


class PreviousCycleRegion(_Strict):
    absorbed_dose_gy: float = Field(ge=0)
    absorbed_dose_uncertainty_gy: float = Field(default=0.0, ge=0)
    bed_gy: float | None = Field(default=None, ge=0)
    bed_uncertainty_gy: float = Field(default=0.0, ge=0)


class PreviousCycle(_Strict):
    cycle: int = Field(ge=1)
    date: str | None = None
    activity_mbq: float | None = Field(default=None, gt=0)
    regions: dict[str, PreviousCycleRegion]


class VoxelMap(_Strict):
    """One quantitative activity map (NIfTI + JSON sidecar with unit and acquisition time)."""

    file: str
    time_h: float | None = Field(default=None, gt=0, description="Hours after administration; default from the sidecar's acquisition time.")


class VoxelLabels(_Strict):
    file: str = Field(description="Integer label map (NIfTI) on the activity maps' grid.")
    regions: dict[str, list[int] | int] = Field(
        min_length=1, description="Region name -> label value(s) in the map (e.g. kidneys: [3, 4])."
    )


class VoxelKernelOption(_Strict):
    file: str | None = Field(
        default=None,
        description="User kernel file: Lanconelli et al. 2012 text table, NIfTI (+ JSON sidecar), Interfile 3.3 or "
                    "DICOM (RT Dose or image; see mrtdose.imaging.kernels_io); default: computed.",
    )
    medium: str = Field(
        default="soft_tissue",
        description="Medium of the computed kernel; with a file, when given, it must agree with the file's medium.",
    )
    unit: str | None = Field(
        default=None,
        description="Unit of a kernel file that does not state it (DICOM, Interfile, NIfTI without it in the sidecar): "
                    "Gy/(Bq s), mGy/(MBq s), Gy/(MBq s) or mGy/(MBq h); must agree with the file where it does.",
    )
    reference_density_g_per_ml: float | None = Field(
        default=None, gt=0.1, lt=3.0, description="Density the kernel is for; default the medium's (computed) or 1.0 (file)."
    )

    @model_validator(mode="after")
    def _check(self) -> "VoxelKernelOption":
        if self.unit is not None and self.file is None:
            raise ValueError("unit applies to a kernel file; give file, or drop unit for a computed kernel")
        return self


class MonteCarloOption(_Strict):
    """Settings of the optional OpenGATE Monte Carlo engine (``voxel.engine: opengate``; extra
    ``mrtdose[montecarlo]`` and the Geant4 data; see docs/monte_carlo.md)."""

    n_decays: int = Field(default=1_000_000, ge=1000, description="Decays simulated (statistical uncertainty ~ 1/sqrt).")
    seed: int = Field(default=20240521, ge=1, lt=2**31)
    threads: int = Field(default=1, ge=1)
    composition: Literal["tissue", "water"] = Field(
        default="tissue", description="tissue: materials from the density map; water: water everywhere (comparisons)."
    )
    production_cut_mm: float = Field(default=0.5, gt=0)


class VoxelOptions(_Strict):
    """Voxel dosimetry from activity maps (kernel convolution), beside the organ-level results."""

    activity_maps: list[VoxelMap] = Field(min_length=1)
    labels: VoxelLabels
    density: str | None = Field(default=None, description="Density map (g/mL, NIfTI); default options.organ_density_g_per_ml.")
    kernel: VoxelKernelOption = Field(default_factory=VoxelKernelOption)
    engine: Literal["kernel_convolution", "local_deposition", "opengate"] = Field(
        default="kernel_convolution",
        description="kernel_convolution (tested default), local_deposition, or opengate: Monte Carlo of the TIA map "
                    "(optional extra; needs OpenGATE and its Geant4 data).",
    )
    monte_carlo: MonteCarloOption = Field(default_factory=MonteCarloOption)
    route: Literal["voxel_kinetics", "dose_rate_integration"] = Field(
        default="voxel_kinetics",
        description="voxel_kinetics: TIA map (voxel fits) then one convolution; dose_rate_integration: convolve each map, integrate dose rates.",
    )
    kinetics: Literal["mono_exp", "trapezoid"] = "mono_exp"
    density_correction: bool = True
    calibration_uncertainty_pct: float | None = Field(
        default=None, ge=0, le=100,
        description="Standard uncertainty of the maps' activity calibration (%); default options.calibration_uncertainty_pct.",
    )
    dvh_thresholds_gy: list[float] = Field(default_factory=lambda: [2.0, 5.0, 10.0, 20.0, 23.0, 40.0])
    patient_specific_s_values: bool = Field(
        default=True, description="Compute S(target <- source) for the labelled regions by convolution."
    )
    eud_alpha_per_gy: float | dict[str, float] | None = Field(
        default=None,
        description="Radiosensitivity alpha (1/Gy) for the Niemierko EUD (and EUBED) of every region, or per region "
                    "name; no EUD without it (no cited default exists).",
    )
    outputs: list[Literal["rtdose", "nifti", "dvh_csv", "dose_rate_maps"]] = Field(
        default_factory=lambda: ["rtdose", "nifti", "dvh_csv"],
        description="rtdose: dose and TIA maps as DICOM RT Dose; nifti: dose and TIA maps as NIfTI; dvh_csv: DVH curves "
                    "and metrics; dose_rate_maps: the absorbed-dose rate map at each time point (NIfTI + sidecar).",
    )

    @model_validator(mode="after")
    def _check(self) -> "VoxelOptions":
        if self.engine == "opengate" and self.route == "dose_rate_integration":
            raise ValueError("engine opengate simulates the TIA map: use route voxel_kinetics")
        if self.engine == "opengate" and "dose_rate_maps" in self.outputs:
            raise ValueError("outputs dose_rate_maps is not available with engine opengate (one simulation of the TIA map)")
        alphas = self.eud_alpha_per_gy
        values = list(alphas.values()) if isinstance(alphas, dict) else ([] if alphas is None else [alphas])
        if any(not (0 < a < 10) for a in values):
            raise ValueError("eud_alpha_per_gy: alpha must be in (0, 10) 1/Gy")
        if isinstance(alphas, dict):
            unknown = sorted(set(alphas) - set(self.labels.regions))
            if unknown:
                raise ValueError(f"eud_alpha_per_gy: {unknown} are not regions of voxel.labels.regions")
        return self


class ImagingTimepoint(_Strict):
    spect: str | list[str] = Field(
        description="Directory (or file) of the quantitative SPECT/PET DICOM series, or a NIfTI (.nii, .nii.gz) or "
        "MetaImage (.mhd, .mha) file with a JSON sidecar (<stem>.json: unit, acquisition_time with UTC offset, "
        "optional acquisition_duration_s, patient_id, frame_of_reference_uid) for images that lost their headers. "
        "A multi-bed study exported as one series per bed position: a LIST of such entries, one per bed (any "
        "order; they are sorted along the slice axis, must touch or overlap, and are joined onto one grid -- "
        "mrtdose.imaging.multibed). An already joined series is a single entry."
    )
    bed_overlap: Literal["linear", "average"] = Field(
        default="linear",
        description="Multi-bed spect only: how overlapping beds are combined -- 'linear' feathering (weights ramp "
        "linearly across the overlap, as vendors' whole-body joins) or 'average' (equal weights).",
    )
    ct: str | None = Field(
        default=None,
        description="CT of the same time point: DICOM directory, or NIfTI/MetaImage file in HU (sidecar unit 'HU').",
    )
    time: ZonedDatetime | None = Field(
        default=None,
        description="Override of the acquisition start time (with time zone); required for a NIfTI/MetaImage SPECT "
        "whose sidecar has no acquisition_time (never guessed).",
    )
    acquisition_duration_s: float | None = Field(
        default=None, gt=0,
        description="Total acquisition time (s) for images in counts; default from the DICOM headers (Actual Frame "
        "Duration) or the sidecar's acquisition_duration_s.",
    )
    series_uid: str | list[str | None] | None = Field(
        default=None,
        description="SeriesInstanceUID when the folder holds several series; for a multi-bed spect a list with one "
        "entry (or null) per bed, e.g. when all beds lie in one folder.",
    )
    observed_count_rate_cps: float | None = Field(
        default=None, gt=0,
        description="Whole-detector observed count rate (counts/s) during this acquisition, as reported by the camera "
        "(the rate the dead time acts on, usually the whole spectrum); needed with imaging.calibration.dead_time. "
        "Not read from DICOM: the standard NM attribute Count Rate (0018,1243) is the maximum rate, not the mean.",
    )

    @model_validator(mode="after")
    def _beds(self) -> "ImagingTimepoint":
        beds = self.spect if isinstance(self.spect, list) else None
        if beds is not None:
            if not beds:
                raise ValueError("spect: the list of beds is empty")
            uids = self.series_uid if isinstance(self.series_uid, list) else [self.series_uid] * len(beds)
            if isinstance(self.series_uid, list) and len(self.series_uid) != len(beds):
                raise ValueError(f"series_uid: {len(self.series_uid)} entries for {len(beds)} beds in spect")
            seen = set()
            for b, key in enumerate(zip(beds, uids)):
                if key in seen:
                    raise ValueError(f"spect.{b}: bed {key[0]!r} is listed twice" + (" with the same series_uid"
                                                                                   if key[1] else ""))
                seen.add(key)
        elif isinstance(self.series_uid, list):
            raise ValueError("series_uid: a list needs a list of beds in spect")
        return self


class ImagingDeadTime(_Strict):
    """Dead-time correction of each time point from its observed count rate (Knoll, Radiation
    Detection and Measurement, 4th ed. 2010, ch. 4): paralysable m = n exp(-n tau) or
    non-paralysable m = n / (1 + n tau); the factor n/m multiplies that time point's activities."""

    model: Literal["paralysable", "non-paralysable"] = Field(
        description="Dead-time model measured for the camera (e.g. Uribe et al. 2018, EJNMMI Phys 5:2)."
    )
    tau_us: float = Field(
        gt=0, le=1000,
        description="Dead time tau (microseconds) measured for the camera; above 1000 us is implausible for a gamma "
        "camera (is it in ns?).",
    )
    tau_uncertainty_pct: float = Field(
        default=0.0, ge=0, le=100,
        description="Standard uncertainty of tau (%); its effect on each time point's factor is folded into that time "
        "point's measurement uncertainty in quadrature.",
    )


class ImagingCalibration(_Strict):
    """Camera sensitivity for images in counts (images in Bq/mL need none), and dead time."""

    sensitivity_cps_per_mbq: float | None = Field(default=None, gt=0)
    uncertainty_pct: float = Field(default=0.0, ge=0, le=100)
    database: str | None = Field(default=None, description="Calibration database (YAML) to select from.")
    camera: str | None = None
    collimator: str | None = None
    window: str | None = None
    dead_time: ImagingDeadTime | None = Field(
        default=None,
        description="Dead-time correction; every time point then needs observed_count_rate_cps.",
    )

    @model_validator(mode="after")
    def _check(self) -> "ImagingCalibration":
        if self.sensitivity_cps_per_mbq is None and self.database is None and self.dead_time is not None:
            return self  # dead time only: images in Bq/mL
        if (self.sensitivity_cps_per_mbq is None) == (self.database is None):
            raise ValueError("give sensitivity_cps_per_mbq or database (with camera, collimator, window)")
        if self.database is not None and not (self.camera and self.collimator and self.window):
            raise ValueError("a calibration database needs camera, collimator and window")
        return self


class ImagingTotalSegmentator(_Strict):
    """Organ masks from the optional TotalSegmentator network on the first CT (pip install
    TotalSegmentator); review automatic contours before use."""

    names: dict[str, str] = Field(
        min_length=1,
        description="TotalSegmentator class name -> region name (e.g. kidney_left: kidneys, kidney_right: kidneys); "
        "several classes mapped to one region are united.",
    )
    task: str = Field(default="total", min_length=1, description="TotalSegmentator task (default 'total').")
    fast: bool = Field(default=False, description="TotalSegmentator's lower-resolution (3 mm) model.")
    file: str | None = Field(
        default=None,
        description="Output of a TotalSegmentator run already made on the first CT (multilabel NIfTI, or folder of "
        "<class>.nii.gz files): read instead of running the network.",
    )


class ImagingRegions(_Strict):
    rtstruct: str | None = Field(default=None, description="RTSTRUCT on the first time point's CT.")
    seg: str | None = Field(default=None, description="Or a DICOM SEG on the first time point's CT.")
    names: dict[str, str] = Field(default_factory=dict, description="ROI / segment name in the file -> region name.")
    labels: VoxelLabels | None = Field(default=None, description="Or a label map (NIfTI) on the first SPECT grid.")
    totalsegmentator: ImagingTotalSegmentator | None = Field(
        default=None, description="Organs segmented automatically on the first CT; may be combined with the above."
    )
    whole_body: str | None = Field(
        default=None, min_length=1,
        description="Name of a region to create with the total activity in the body outline of the first CT "
        "(HU threshold, mrtdose.imaging.regions.body_mask, united with the named regions), or in the whole SPECT "
        "field of view when there is no CT (its mass then from regions.<name>.mass_g or patient.mass_kg).",
    )
    remainder: str | None = Field(
        default=None, min_length=1,
        description="Name of a region to create with the remainder of body: the whole body minus all other regions "
        "(fractional occupancy respected, so remainder + regions = whole body); mass = body mass minus the "
        "regions' masses. The other regions must not overlap.",
    )

    @model_validator(mode="after")
    def _check(self) -> "ImagingRegions":
        if sum(x is not None for x in (self.rtstruct, self.seg, self.labels)) > 1:
            raise ValueError("give at most one of rtstruct, seg or labels")
        if all(x is None for x in (self.rtstruct, self.seg, self.labels, self.totalsegmentator, self.whole_body,
                                   self.remainder)):
            raise ValueError("give rtstruct, seg, labels or totalsegmentator (or whole_body / remainder)")
        if self.whole_body and self.remainder and self.whole_body == self.remainder:
            raise ValueError("whole_body and remainder need different region names")
        return self


class ImagingRecovery(_Strict):
    """Partial-volume correction of region activities with a recovery-coefficient curve."""

    curve: str = Field(description="Recovery curve file (YAML/JSON) written by mrtdose.imaging.recovery.")
    regions: list[str] = Field(min_length=1, description="Regions to correct (typically lesions).")


class Imaging(_Strict):
    """Quantitative images at several times: region activities and masses for the core chain."""

    timepoints: list[ImagingTimepoint] = Field(min_length=1)
    calibration: ImagingCalibration | None = None
    regions: ImagingRegions
    registration: Literal["none", "rigid"] = "none"
    recovery: ImagingRecovery | None = None
    timezone: str | None = Field(default=None, description="IANA zone for headers without a UTC offset.")
    activity_uncertainty_pct: float = Field(
        default=5.0, gt=0, le=100,
        description="Standard uncertainty (%) of each region activity from delineation and noise (calibration separate); "
        "a time point's dead-time factor uncertainty is added to it in quadrature.",
    )

    @model_validator(mode="after")
    def _check(self) -> "Imaging":
        dead = self.calibration.dead_time if self.calibration is not None else None
        for i, tp in enumerate(self.timepoints):
            if dead is not None and tp.observed_count_rate_cps is None:
                raise ValueError(f"timepoints.{i}.observed_count_rate_cps: needed by calibration.dead_time")
            if dead is None and tp.observed_count_rate_cps is not None:
                raise ValueError(f"timepoints.{i}.observed_count_rate_cps given without calibration.dead_time "
                                 "(model, tau_us)")
        return self


class PlanarTimepoint(_Strict):
    """One planar (static or whole-body) conjugate-view acquisition."""

    file: str | list[str] = Field(description="NM file (e.g. one multi-frame file with both views), a directory, or a list of files.")
    time: ZonedDatetime | None = Field(default=None, description="Override of the acquisition start (with time zone).")
    acquisition_duration_s: float | None = Field(
        default=None, gt=0, description="Exposure time (s) overriding the headers' (whole body: the time each point is seen)."
    )


class PlanarRois(_Strict):
    """2D ROI label map (NIfTI, one slice) on the anterior view's pixel grid."""

    file: str = Field(description="Label map (NIfTI) on the anterior view; ROIs are lists of labels and may share labels.")
    regions: dict[str, list[int] | int] = Field(min_length=1, description="Region name -> label value(s) of its ROI.")
    background: int | list[int] | dict[str, list[int] | int] | None = Field(
        default=None, description="Background ROI label(s), for all regions or per region (area-scaled subtraction).")
    organ_thickness_cm: dict[str, float] = Field(
        default_factory=dict,
        description="Region -> AP organ thickness (cm): background factor 1 - t/T (Buijs 1998) and self-attenuation (MIRD 16).")

    @model_validator(mode="after")
    def _check(self) -> "PlanarRois":
        def labs(v: Any) -> list[int]:
            return [v] if isinstance(v, int) else list(v)

        roi_labels = {lab for v in self.regions.values() for lab in labs(v)}
        if any(lab <= 0 for lab in roi_labels):
            raise ValueError("ROI labels must be > 0 (0 is outside every ROI)")
        bk = self.background
        bmap = ({} if bk is None else {n: labs(v) for n, v in bk.items()} if isinstance(bk, dict)
                else {n: labs(bk) for n in self.regions})
        for n, b in bmap.items():
            if n not in self.regions:
                raise ValueError(f"background for '{n}', which is not one of the ROI regions")
            if not b or any(lab <= 0 for lab in b):
                raise ValueError(f"background of '{n}': give label(s) > 0")
            if set(b) & set(labs(self.regions[n])):
                raise ValueError(f"background of '{n}' shares label(s) {sorted(set(b) & set(labs(self.regions[n])))} with its ROI")
        for n, t in self.organ_thickness_cm.items():
            if n not in self.regions:
                raise ValueError(f"organ_thickness_cm for '{n}', which is not one of the ROI regions")
            if not (0 < t < 100):
                raise ValueError(f"organ_thickness_cm.{n} = {t:g} cm is not plausible (0 < t < 100)")
        return self


class PlanarCalibration(_Strict):
    sensitivity_cps_per_mbq: float = Field(gt=0, description="Planar sensitivity in air, per detector (cps/MBq).")
    uncertainty_pct: float = Field(default=0.0, ge=0, le=100)


class PlanarAttenuation(_Strict):
    """Transmission factor exp(-mu T) of the conjugate-view method: exactly one of a body
    thickness, a CT (line integrals of mu along the AP rays through each ROI) or measured values."""

    body_thickness_cm: float | dict[str, float] | None = Field(
        default=None, description="AP body thickness (cm) through the ROIs, for all regions or per region.")
    body_thickness_uncertainty_cm: float = Field(default=0.0, ge=0)
    mu_per_cm: float | None = Field(default=None, gt=0, lt=2, description="Default narrow-beam soft tissue at the photopeak.")
    ct: str | None = Field(default=None, description="CT series (directory) registered to the ROI map's patient coordinates.")
    transmission: float | dict[str, float] | None = Field(default=None, description="Measured I/I0, for all regions or per region.")

    @model_validator(mode="after")
    def _check(self) -> "PlanarAttenuation":
        if sum(x is not None for x in (self.body_thickness_cm, self.ct, self.transmission)) != 1:
            raise ValueError("give exactly one of body_thickness_cm, ct or transmission")
        vals = (list(self.transmission.values()) if isinstance(self.transmission, dict)
                else [] if self.transmission is None else [self.transmission])
        if any(not (0 < v <= 1) for v in vals):
            raise ValueError("transmission factors must be in (0, 1]")
        bt = self.body_thickness_cm
        if any(not (0 < v < 100) for v in (list(bt.values()) if isinstance(bt, dict) else [] if bt is None else [bt])):
            raise ValueError("body thicknesses must be in (0, 100) cm")
        return self


class PlanarImaging(_Strict):
    """Planar / whole-body conjugate-view images at several times: region activities (MIRD 16)."""

    timepoints: list[PlanarTimepoint] = Field(min_length=1)
    rois: PlanarRois
    calibration: PlanarCalibration
    attenuation: PlanarAttenuation
    scatter: Literal["tew", "none"] = "tew"
    timezone: str | None = Field(default=None, description="IANA zone for headers without a UTC offset.")
    activity_uncertainty_pct: float = Field(
        default=5.0, ge=0, le=100,
        description="Standard uncertainty (%) of each region activity from delineation, added to the counting uncertainty.",
    )
    hybrid_spect: bool = Field(
        default=False,
        description="Hybrid planar/SPECT (Koral et al. 2000): regions also measured by the imaging block at ONE SPECT time "
                    "point get the planar curve scaled to that SPECT activity (the planar calibration cancels).",
    )


class Case(_Strict):
    patient: Patient
    radiopharmaceutical: str | None = None
    nuclide: str | None = None
    administration: Administration
    regions: dict[str, Region] = Field(default_factory=dict)
    options: Options = Field(default_factory=Options)
    previous_cycles: list[PreviousCycle] = Field(default_factory=list)
    voxel: VoxelOptions | None = None
    imaging: Imaging | None = None
    planar_imaging: PlanarImaging | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "Case":
        if not self.regions and self.imaging is None:
            raise ValueError("regions: give at least one region (or an imaging block that measures them)")
        if self.imaging is not None and self.administration.time is None:
            raise ValueError("imaging needs administration.time (image times come from the headers)")
        if not self.radiopharmaceutical and not self.nuclide:
            raise ValueError("give radiopharmaceutical (e.g. Lu-177-DOTATATE) or nuclide (e.g. Lu-177)")
        for name, r in self.regions.items():
            if r.measurements and any(m.time is not None for m in r.measurements) and self.administration.time is None:
                raise ValueError(
                    f"regions.{name}: measurement times are clock times but administration.time is missing"
                )
        if self.options.s_values == "patient_specific" and (self.voxel is None or not self.voxel.patient_specific_s_values
                                                             or self.voxel.engine != "kernel_convolution"):
            raise ValueError(
                "options.s_values: patient_specific needs a voxel block with kernel_convolution and patient_specific_s_values"
            )
        if self.voxel is not None:
            seen: dict[int, str] = {}
            for name, labs in self.voxel.labels.regions.items():
                for lab in [labs] if isinstance(labs, int) else labs:
                    if lab <= 0:
                        raise ValueError(f"voxel.labels.regions.{name}: label {lab} must be > 0 (0 is background)")
                    if lab in seen:
                        raise ValueError(f"voxel.labels.regions: label {lab} is in both {seen[lab]} and {name}")
                    seen[lab] = name
            times = [m.time_h for m in self.voxel.activity_maps]
            if any(t is None for t in times) and self.administration.time is None:
                raise ValueError(
                    "voxel.activity_maps without time_h take their time from the sidecar; administration.time is needed"
                )
        for c in self.previous_cycles:
            if c.cycle >= self.administration.cycle:
                raise ValueError(
                    f"previous_cycles: cycle {c.cycle} is not before this administration's cycle {self.administration.cycle}"
                )
        return self


def parse_case(data: Any, source: str = "<case>") -> Case:
    """Validate a case document, converting pydantic errors into one clear :class:`InputError`."""
    if not isinstance(data, dict):
        raise InputError("a case must be a mapping (YAML/JSON object) at the top level", source=source)
    try:
        # with an imaging block, regions may be given without measurements: the images measure them
        return Case.model_validate(data, context={"imaging": data.get("imaging") is not None
                                                  or data.get("planar_imaging") is not None})
    except ValidationError as exc:
        raise from_validation_error(
            exc, "case file", source=source, unknown_hint="check spelling; see schemas/case.schema.json"
        ) from None


def load_case(path: str | Path) -> tuple[Case, bytes]:
    """Read and validate a YAML or JSON case file. Returns the case and the raw bytes (for the
    input hash in the provenance)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("case file not found", source=str(p))
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot parse file: {exc}", source=str(p)) from None
    return parse_case(data, source=str(p)), raw


def case_json_schema() -> dict:
    """JSON Schema of the case file, generated from the models."""
    schema = Case.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mrtdose case file"
    return schema
