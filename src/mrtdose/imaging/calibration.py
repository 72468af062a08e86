"""Camera calibration: from counts to activity, with the calibration's own uncertainty.

What this module owns
---------------------
* :class:`CalibrationRecord` -- one measured system sensitivity (cps/MBq) of one camera,
  collimator, nuclide and energy window, with its standard uncertainty, validity period, method
  and reference. :func:`load_calibrations` reads a YAML/JSON database of them and
  :meth:`CalibrationDatabase.select` returns the one record valid for a scan, or an
  :class:`~mrtdose.errors.InputError` that lists what exists and why each record does not apply.
* :func:`counts_to_activity_concentration` -- reconstructed counts per voxel to Bq/mL at the
  start of the acquisition; :func:`activity_concentration_from_bqml` -- images a vendor already
  quantified (Bq/mL) pass through with their stated uncertainty. Both return an
  :class:`ActivityConcentration` whose calibration uncertainty is a single *relative* number,
  shared (fully correlated) by every voxel and every region of the image; it enters the
  uncertainty budget once, as :meth:`ActivityConcentration.calibration_input`.
* :func:`dead_time_correct` -- paralysable and non-paralysable dead-time models.

Calibration (MIRD Pamphlet 26)
------------------------------
The system sensitivity (volume sensitivity, "calibration factor") ``S`` is the count rate in the
(reconstructed) image per unit activity in the field of view, in cps/MBq, measured for one camera,
collimator, nuclide, energy window and reconstruction (Ljungberg et al. 2016, MIRD Pamphlet 26,
"Joint EANM/MIRD guidelines for quantitative 177Lu SPECT applied for dosimetry of
radiopharmaceutical therapy", J Nucl Med 57:151-162, section "Camera calibration"; Dewaraja et
al. 2012, MIRD Pamphlet 23, J Nucl Med 53:1310-1325). The acquisition duration that divides the
counts must be the one the calibration was defined with (for SPECT usually the total acquisition
time, all projections); the record's ``method`` field should say which.

Counts to activity concentration
--------------------------------
For ``N`` counts in a voxel of volume ``V`` (mL) acquired over ``T`` seconds::

    C_start [Bq/mL] = N / (T S) * 1e6 / V / F(T),   F(T) = (1 - exp(-lambda T)) / (lambda T)

``N / (T S)`` is the mean activity (MBq) during the acquisition; dividing by the mean-activity
factor ``F`` (:func:`mrtdose.physics.decay.mean_activity_factor_during_acquisition`; MIRD
Pamphlet 23, Dewaraja et al. 2012) refers it to the acquisition start. ``1e6`` converts MBq to
Bq. A dead-time correction factor (true / observed count rate, :func:`dead_time_correct`) may be
applied as a further multiplicative factor.

Dead time (Knoll)
-----------------
With ``n`` the true and ``m`` the observed count rate and ``tau`` the dead time (Knoll,
"Radiation Detection and Measurement", 4th ed. 2010, ch. 4, section VII):

* non-paralysable: ``m = n / (1 + n tau)``, so ``n = m / (1 - m tau)`` for ``m tau < 1``;
* paralysable: ``m = n exp(-n tau)``. Its maximum observable rate is ``1 / (e tau)`` (at
  ``n = 1/tau``); below it each ``m`` has two solutions, ``n = -W_k(-m tau) / tau`` with ``W_0``
  (the physical, low-rate branch) and ``W_-1`` (the high-rate branch), where ``W`` is the Lambert
  W function (Corless et al. 1996, Adv Comput Math 5:329; ``scipy.special.lambertw``).

Dead-time losses matter for 177Lu imaging soon after therapy administrations of several GBq
(Uribe et al. 2018, "Deadtime effects in quantification of 177Lu activity for radionuclide
therapy", EJNMMI Phys 5:2; Frezza et al. 2020, "Comprehensive SPECT/CT system characterization
and calibration for 177Lu quantitative SPECT (QSPECT) with dead-time correction", EJNMMI Phys
7:10). Which model fits a given camera is an empirical question (Uribe 2018 found a paralysable
model adequate for the total-spectrum count rate of the cameras studied there); ``tau`` must be
measured for the camera, and the model applied to the count rate the dead time acts on (often the
whole-spectrum rate, not the photopeak rate).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy.special import lambertw

from mrtdose.errors import InputError, PhysicsError, from_validation_error
from mrtdose.imaging.volume import Volume
from mrtdose.physics.decay import mean_activity_factor_during_acquisition, require_aware
from mrtdose.quantities import Quantity
from mrtdose.uncertainty import UncertainInput

#: Reference for the calibration definition, quoted in methods.
MIRD26 = "Ljungberg et al. 2016, MIRD Pamphlet 26, J Nucl Med 57:151"
MIRD23 = "Dewaraja et al. 2012, MIRD Pamphlet 23, J Nucl Med 53:1310"
KNOLL = "Knoll, Radiation Detection and Measurement, 4th ed. 2010, ch. 4"

# --------------------------------------------------------------------------- records


def _canonical_nuclide(name: str) -> str:
    """``Lu-177`` from ``177Lu``, ``lu177``...; names that do not parse are kept as written."""
    # Imported here: mrtdose.physics.nuclides loads the decay-data packages (about 0.2 s), which
    # reading a calibration file does not otherwise need.
    from mrtdose.physics.nuclides import normalise_name

    try:
        return normalise_name(name)
    except InputError:
        return str(name).strip()


def _key(s: str) -> str:
    return " ".join(str(s).split()).casefold()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class EnergyWindow(_Strict):
    """An acquisition energy window: name (e.g. ``"Lu-177 208 keV peak"``) and limits (keV)."""

    name: str = Field(min_length=1)
    lower_kev: float = Field(gt=0, le=2000)
    upper_kev: float = Field(gt=0, le=2000)

    @model_validator(mode="after")
    def _ordered(self) -> "EnergyWindow":
        if not self.upper_kev > self.lower_kev:
            raise ValueError(f"upper_kev ({self.upper_kev:g}) must be above lower_kev ({self.lower_kev:g})")
        return self

    @property
    def width_kev(self) -> float:
        return self.upper_kev - self.lower_kev

    def matches(self, window: "str | EnergyWindow | tuple[float, float]", tol_kev: float = 0.5) -> bool:
        """Same window by name (case-insensitive), by limits (within ``tol_kev``), or both."""
        if isinstance(window, str):
            return _key(window) == _key(self.name)
        if isinstance(window, EnergyWindow):
            return _key(window.name) == _key(self.name) and self.matches((window.lower_kev, window.upper_kev), tol_kev)
        lo, hi = window
        return abs(float(lo) - self.lower_kev) <= tol_kev and abs(float(hi) - self.upper_kev) <= tol_kev

    def __str__(self) -> str:
        return f"'{self.name}' ({self.lower_kev:g}-{self.upper_kev:g} keV)"


class CalibrationRecord(_Strict):
    """One measured system sensitivity (MIRD Pamphlet 26). Immutable.

    Examples
    --------
    >>> r = CalibrationRecord(camera="Intevo-1", collimator="MELP", nuclide="177Lu",
    ...     window={"name": "peak", "lower_kev": 187.2, "upper_kev": 228.8},
    ...     sensitivity_cps_per_mbq=9.6, sensitivity_uncertainty_cps_per_mbq=0.29,
    ...     valid_from="2024-01-01", valid_to="2024-12-31", method="SPECT, cylinder phantom",
    ...     reference="MIRD 26")
    >>> r.nuclide, round(r.relative_uncertainty, 3), r.sensitivity.unit
    ('Lu-177', 0.03, 'cps/MBq')
    """

    camera: str = Field(min_length=1, description="Camera identifier (model and serial/room).")
    collimator: str = Field(min_length=1, description="Collimator (e.g. MELP, MEGP, HEGP).")
    nuclide: str = Field(min_length=1)
    window: EnergyWindow
    sensitivity_cps_per_mbq: float = Field(gt=0, le=1e6)
    sensitivity_uncertainty_cps_per_mbq: float = Field(ge=0)
    valid_from: date
    valid_to: date | None = Field(default=None, description="Last day of validity (inclusive); none: open.")
    method: str = Field(min_length=1, description="How it was measured (geometry, reconstruction, duration convention).")
    reference: str = Field(default=MIRD26, description="Protocol followed, e.g. MIRD Pamphlet 26 / EANM guidance.")
    reconstruction: str | None = None
    notes: str | None = None

    @field_validator("nuclide")
    @classmethod
    def _nuclide(cls, v: str) -> str:
        return _canonical_nuclide(v)

    @model_validator(mode="after")
    def _check(self) -> "CalibrationRecord":
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError(f"valid_to ({self.valid_to}) is before valid_from ({self.valid_from})")
        if self.sensitivity_uncertainty_cps_per_mbq > self.sensitivity_cps_per_mbq:
            raise ValueError(
                "sensitivity_uncertainty_cps_per_mbq exceeds the sensitivity itself: "
                "give a standard uncertainty in cps/MBq, not a percentage"
            )
        return self

    @property
    def relative_uncertainty(self) -> float:
        return self.sensitivity_uncertainty_cps_per_mbq / self.sensitivity_cps_per_mbq

    @property
    def sensitivity(self) -> Quantity:
        return Quantity(
            self.sensitivity_cps_per_mbq,
            self.sensitivity_uncertainty_cps_per_mbq,
            "cps/MBq",
            method=f"calibration: {self.method} ({self.reference})",
        )

    def is_valid_on(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)

    def describe(self) -> str:
        to = self.valid_to.isoformat() if self.valid_to else "open"
        return (
            f"{self.camera} / {self.collimator} / {self.nuclide} / window {self.window}: "
            f"{self.sensitivity_cps_per_mbq:g} ± {self.sensitivity_uncertainty_cps_per_mbq:g} cps/MBq, "
            f"valid {self.valid_from.isoformat()} to {to}"
        )


class _CalibrationFile(_Strict):
    calibrations: list[CalibrationRecord] = Field(min_length=1)


def _as_day(on_date: date | datetime) -> date:
    if isinstance(on_date, datetime):
        return require_aware(on_date, "scan time").date()
    if isinstance(on_date, date):
        return on_date
    raise InputError(f"on_date must be a date or a timezone-aware date-time, got {on_date!r}", field="on_date")


@dataclass(frozen=True)
class CalibrationDatabase:
    """The calibration records of a department, as read by :func:`load_calibrations`."""

    records: tuple[CalibrationRecord, ...]
    source: str = "<calibrations>"

    def __post_init__(self) -> None:
        recs = tuple(self.records)
        object.__setattr__(self, "records", recs)
        # Two records for the same set-up whose validity periods overlap make the choice
        # ambiguous: reject the file rather than pick one silently.
        for i, a in enumerate(recs):
            for j in range(i + 1, len(recs)):
                b = recs[j]
                if (
                    _key(a.camera) == _key(b.camera)
                    and _key(a.collimator) == _key(b.collimator)
                    and a.nuclide == b.nuclide
                    and a.window.matches(b.window)
                    and a.valid_from <= (b.valid_to or date.max)
                    and b.valid_from <= (a.valid_to or date.max)
                ):
                    raise InputError(
                        f"calibrations {i} and {j} are for the same camera, collimator, nuclide and window "
                        f"and their validity periods overlap:\n  [{i}] {a.describe()}\n  [{j}] {b.describe()}",
                        source=self.source,
                        field=f"calibrations.{j}.valid_from",
                    )

    def select(
        self,
        camera: str,
        collimator: str,
        nuclide: str,
        window: str | EnergyWindow | tuple[float, float],
        on_date: date | datetime,
    ) -> CalibrationRecord:
        """The record valid for this camera, collimator, nuclide and window on ``on_date``.

        ``window`` is a window name (case-insensitive) or ``(lower_kev, upper_kev)`` (matched
        within 0.5 keV). ``on_date`` is a date or a timezone-aware date-time (its local date is
        used). If no record applies, the :class:`InputError` lists each record for this camera
        (or, if none, every record) with the reason it does not apply.
        """
        day = _as_day(on_date)
        nuc = _canonical_nuclide(nuclide)
        reasons: list[tuple[CalibrationRecord, list[str]]] = []
        found: list[CalibrationRecord] = []
        for rec in self.records:
            why = []
            if _key(rec.camera) != _key(camera):
                why.append(f"camera '{rec.camera}'")
            if _key(rec.collimator) != _key(collimator):
                why.append(f"collimator '{rec.collimator}'")
            if rec.nuclide != nuc:
                why.append(f"nuclide {rec.nuclide}")
            if not rec.window.matches(window):
                why.append(f"window {rec.window}")
            if day < rec.valid_from:
                why.append(f"not valid until {rec.valid_from.isoformat()}")
            elif rec.valid_to is not None and day > rec.valid_to:
                why.append(f"expired on {rec.valid_to.isoformat()}")
            if not why:
                found.append(rec)
            else:
                reasons.append((rec, why))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            listing = "\n".join(f"  - {r.describe()}" for r in found)
            raise InputError(
                f"{len(found)} calibrations match camera '{camera}', collimator '{collimator}', {nuc}, window "
                f"{window!s} on {day.isoformat()}; select the window by name:\n{listing}",
                source=self.source,
            )
        same_camera = [(r, w) for r, w in reasons if _key(r.camera) == _key(camera)]
        listed = same_camera or reasons
        want_w = window if isinstance(window, str) else (
            str(window) if isinstance(window, EnergyWindow) else f"{window[0]:g}-{window[1]:g} keV")
        head = (
            f"no calibration for camera '{camera}', collimator '{collimator}', {nuc}, window "
            f"{want_w} valid on {day.isoformat()}"
        )
        if not listed:
            raise InputError(head + "; the database is empty", source=self.source)
        body = "\n".join(f"  - {r.describe()}: differs in {', '.join(w)}" for r, w in listed)
        scope = "records for this camera" if same_camera else "no record for this camera; all records"
        raise InputError(f"{head}. Available ({scope}):\n{body}", source=self.source)


def parse_calibrations(data: Any, source: str = "<calibrations>") -> CalibrationDatabase:
    """Validate a calibration document: ``{"calibrations": [record, ...]}`` or a bare list."""
    if isinstance(data, list):
        data = {"calibrations": data}
    if not isinstance(data, dict):
        raise InputError("a calibration file must be a mapping with a 'calibrations' list", source=source)
    try:
        parsed = _CalibrationFile.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, "calibration file", source=source) from None
    return CalibrationDatabase(tuple(parsed.calibrations), source)


def load_calibrations(path: str | Path) -> CalibrationDatabase:
    """Read and validate a YAML (or ``.json``) calibration database.

    Example file::

        calibrations:
          - camera: Intevo-1
            collimator: MELP
            nuclide: Lu-177
            window: {name: Lu-177 208 keV, lower_kev: 187.2, upper_kev: 228.8}
            sensitivity_cps_per_mbq: 9.6
            sensitivity_uncertainty_cps_per_mbq: 0.29
            valid_from: 2024-01-01
            valid_to: 2024-12-31
            method: SPECT of a 6.9 L cylinder, total acquisition time
            reference: MIRD Pamphlet 26 (Ljungberg et al. 2016, J Nucl Med 57:151)
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("calibration file not found", source=str(p))
    try:
        text = p.read_bytes().decode("utf-8")
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot parse file: {exc}", source=str(p)) from None
    return parse_calibrations(data, source=str(p))


# --------------------------------------------------------------------------- counts -> Bq/mL

_BQML_UNITS = {"bq/ml": 1.0, "bqml": 1.0, "bq/cc": 1.0, "kbq/ml": 1e3, "mbq/ml": 1e6}


@dataclass(frozen=True)
class ActivityConcentration:
    """An activity-concentration image (Bq/mL) and the relative standard uncertainty of its
    calibration, which is common to every voxel (a systematic, fully correlated component).

    ``values`` is a :class:`~mrtdose.imaging.volume.Volume` (unit ``Bq/mL``) if one was given,
    else a read-only numpy array. ``reference`` says what time the values refer to.
    """

    values: Volume | np.ndarray
    calibration_relative_uncertainty: float
    method: str
    reference: str = "acquisition start"
    unit: str = "Bq/mL"

    @property
    def array(self) -> np.ndarray:
        return self.values.array if isinstance(self.values, Volume) else self.values

    def calibration_input(self, name: str = "calibration_factor", component: str = "calibration") -> UncertainInput:
        """The calibration as a multiplicative factor ``1 ± u_rel`` for :func:`mrtdose.uncertainty.propagate`:
        multiply any activity derived from this image by it."""
        return UncertainInput.scalar(name, 1.0, self.calibration_relative_uncertainty, component, self.method)


def sensitivity_quantity(sensitivity: float | Quantity | CalibrationRecord, u: float | None) -> Quantity:
    """Sensitivity (cps/MBq) with its standard uncertainty, from a number, Quantity or record."""
    if isinstance(sensitivity, CalibrationRecord):
        q = sensitivity.sensitivity
    elif isinstance(sensitivity, Quantity):
        if sensitivity.unit.replace(" ", "").lower() not in ("cps/mbq", "s^-1/mbq", "1/(smbq)"):
            raise InputError(f"sensitivity must be in cps/MBq, got unit '{sensitivity.unit}'", field="sensitivity_cps_per_mbq")
        q = sensitivity
    else:
        s = float(sensitivity)
        q = Quantity(s, 0.0 if u is None else float(u), "cps/MBq", method="calibration")
    if u is not None and not isinstance(sensitivity, (int, float, np.floating, np.integer)):
        raise InputError("give the sensitivity uncertainty either in the Quantity/record or as a number, not both",
                         field="sensitivity_uncertainty_cps_per_mbq")
    if not (math.isfinite(q.value) and q.value > 0):
        raise InputError(f"sensitivity must be a positive number of cps/MBq, got {q.value!r}", field="sensitivity_cps_per_mbq")
    if not math.isfinite(q.uncertainty):
        raise InputError("sensitivity uncertainty must be finite", field="sensitivity_uncertainty_cps_per_mbq")
    return q


def _positive(x: float, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise InputError(f"must be a number, got {x!r}", field=name) from None
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"must be a positive finite number, got {x!r}", field=name)
    return v


def counts_to_activity_concentration(
    counts: Volume | np.ndarray,
    *,
    voxel_volume_ml: float | None = None,
    sensitivity_cps_per_mbq: float | Quantity | CalibrationRecord,
    acquisition_duration_s: float,
    half_life_h: float,
    decay_during_acquisition: bool = True,
    sensitivity_uncertainty_cps_per_mbq: float | None = None,
    dead_time_factor: float = 1.0,
) -> ActivityConcentration:
    """Counts per voxel -> activity concentration (Bq/mL) at the start of the acquisition.

    ``C = N / (T S) * 1e6 / V / F(T) * k_DT`` (module docstring; MIRD 26, MIRD 23), with
    ``F`` the mean-activity factor (1 if ``decay_during_acquisition`` is False) and ``k_DT``
    the dead-time correction factor (true/observed rate, >= 1).

    Parameters
    ----------
    counts : reconstructed counts per voxel, a :class:`Volume` (voxel volume from its spacing;
        a given ``voxel_volume_ml`` must agree) or an array (then ``voxel_volume_ml`` is required).
    sensitivity_cps_per_mbq : a number (with ``sensitivity_uncertainty_cps_per_mbq``), a
        :class:`Quantity` in cps/MBq or a :class:`CalibrationRecord`.
    acquisition_duration_s : the duration ``T`` in the calibration's convention.
    half_life_h : physical half-life of the nuclide.

    Returns
    -------
    :class:`ActivityConcentration` with ``calibration_relative_uncertainty = u(S)/S``: the
    calibration enters the budget once, as a factor common to all voxels. (Voxel noise is not
    estimated here: the noise of a reconstructed image is not Poisson.)

    Examples
    --------
    1000 counts in a 4.8 mm voxel (0.110592 mL), 30 min, S = 10 cps/MBq, Lu-177 (159.5 h):
    mean activity 1000 / (1800 * 10) = 0.055556 MBq; lambda T = ln2 * 0.5 / 159.5 = 0.0021729,
    F = (1 - e^{-0.0021729}) / 0.0021729 = 0.998914; C = 0.055556 / 0.998914 * 1e6 / 0.110592
    = 502 893 Bq/mL.

    >>> r = counts_to_activity_concentration(np.full((1, 1, 1), 1000.0), voxel_volume_ml=0.110592,
    ...     sensitivity_cps_per_mbq=10.0, sensitivity_uncertainty_cps_per_mbq=0.3,
    ...     acquisition_duration_s=1800, half_life_h=159.5)
    >>> round(float(r.array[0, 0, 0])), r.calibration_relative_uncertainty
    (502893, 0.03)
    """
    s = sensitivity_quantity(sensitivity_cps_per_mbq, sensitivity_uncertainty_cps_per_mbq)
    t_s = _positive(acquisition_duration_s, "acquisition_duration_s")
    t_half = _positive(half_life_h, "half_life_h")
    k_dt = _positive(dead_time_factor, "dead_time_factor")
    if k_dt < 1.0:
        raise InputError(f"dead-time factor (true/observed rate) cannot be below 1, got {k_dt:g}", field="dead_time_factor")
    if isinstance(counts, Volume):
        v_ml = counts.voxel_volume_ml
        if voxel_volume_ml is not None and not math.isclose(float(voxel_volume_ml), v_ml, rel_tol=1e-6):
            raise InputError(
                f"voxel_volume_ml={voxel_volume_ml:g} contradicts the volume's spacing ({v_ml:g} mL)",
                field="voxel_volume_ml",
            )
        unit = counts.unit.replace(" ", "").lower()
        if unit not in ("counts", "count", "cnts", "1"):
            raise InputError(f"expected an image in counts, got unit '{counts.unit}'", field="counts.unit")
        arr = counts.array
    else:
        if voxel_volume_ml is None:
            raise InputError("voxel_volume_ml is required when counts is an array", field="voxel_volume_ml")
        v_ml = _positive(voxel_volume_ml, "voxel_volume_ml")
        arr = np.asarray(counts)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"counts must be numeric, got dtype {arr.dtype}", field="counts")
    f_mean = mean_activity_factor_during_acquisition(t_s / 3600.0, t_half) if decay_during_acquisition else 1.0
    scale = 1e6 * k_dt / (t_s * s.value * v_ml * f_mean)
    out = np.asarray(arr, dtype=np.float64) * scale
    out.flags.writeable = False
    method = (
        f"counts / (T S V) x 1e6 (MIRD 26; {MIRD26}); S = {s.value:g} ± {s.uncertainty:g} cps/MBq, "
        f"T = {t_s:g} s, V = {v_ml:g} mL; "
        + (f"decay during acquisition F = {f_mean:.6f} ({MIRD23})" if decay_during_acquisition else "no decay correction")
        + (f"; dead-time factor {k_dt:g}" if k_dt != 1.0 else "")
    )
    if isinstance(counts, Volume):
        values: Volume | np.ndarray = counts.with_array(out, unit="Bq/mL", description=method)
    else:
        values = out
    return ActivityConcentration(values, s.uncertainty / s.value, method)


def activity_concentration_from_bqml(
    image: Volume | np.ndarray,
    *,
    relative_uncertainty: float,
    unit: str | None = None,
    method: str = "quantitative reconstruction by the vendor (Bq/mL)",
) -> ActivityConcentration:
    """An image already in Bq/mL (or kBq/mL, MBq/mL: converted) passes through with its stated
    relative standard uncertainty (e.g. the vendor's or the department's validation of the
    quantitative reconstruction, MIRD 26).

    >>> r = activity_concentration_from_bqml(np.ones((1, 1, 2)), unit="kBq/mL", relative_uncertainty=0.05)
    >>> r.array.tolist(), r.calibration_relative_uncertainty
    ([[[1000.0, 1000.0]]], 0.05)
    """
    u = float(relative_uncertainty)
    if not (math.isfinite(u) and 0 <= u < 1):
        raise InputError(f"relative uncertainty must be a fraction in [0, 1), got {relative_uncertainty!r}",
                         field="relative_uncertainty")
    if isinstance(image, Volume):
        if unit is not None and unit.replace(" ", "").lower() != image.unit.replace(" ", "").lower():
            raise InputError(f"unit '{unit}' contradicts the volume's unit '{image.unit}'", field="unit")
        unit = image.unit
        arr = image.array
    else:
        if unit is None:
            unit = "Bq/mL"
        arr = np.asarray(image)
    factor = _BQML_UNITS.get(unit.replace(" ", "").lower())
    if factor is None:
        raise InputError(f"expected an activity concentration (Bq/mL, kBq/mL, MBq/mL), got unit '{unit}'", field="unit")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"voxel values must be numeric, got dtype {arr.dtype}", field="image")
    out = np.asarray(arr, dtype=np.float64) * factor
    out.flags.writeable = False
    values: Volume | np.ndarray = image.with_array(out, unit="Bq/mL") if isinstance(image, Volume) else out
    return ActivityConcentration(values, u, method, reference="as stated by the source image")


# --------------------------------------------------------------------------- dead time

DeadTimeModel = Literal["paralysable", "non-paralysable"]


def _model(model: str) -> str:
    m = str(model).strip().lower().replace("_", "-").replace("paralyzable", "paralysable")
    if m in ("nonparalysable", "non paralysable"):
        m = "non-paralysable"
    if m not in ("paralysable", "non-paralysable"):
        raise InputError(f"dead-time model must be 'paralysable' or 'non-paralysable', got {model!r}", field="model")
    return m


def observed_rate(true_cps, tau_s: float, model: DeadTimeModel | str = "paralysable"):
    """Observed count rate for a true rate ``n`` (Knoll ch. 4): ``n/(1 + n tau)`` or ``n e^{-n tau}``.

    >>> round(observed_rate(1e5, 1e-6, "non-paralysable"), 3), round(observed_rate(1e5, 1e-6), 3)
    (90909.091, 90483.742)
    """
    m = _model(model)
    tau = _positive(tau_s, "tau_s")
    n = np.asarray(true_cps, dtype=float)
    if np.any(n < 0) or not np.all(np.isfinite(n)):
        raise InputError("true count rates must be finite and >= 0", field="true_cps")
    out = n / (1.0 + n * tau) if m == "non-paralysable" else n * np.exp(-n * tau)
    return float(out) if out.ndim == 0 else out


def dead_time_correct(observed_cps, tau_s: float, model: DeadTimeModel | str = "paralysable", *, branch: Literal["low", "high"] = "low"):
    """True count rate from an observed one (Knoll ch. 4; module docstring).

    Non-paralysable: ``n = m / (1 - m tau)``, defined for ``m tau < 1``.
    Paralysable: ``n = -W(-m tau) / tau`` with the Lambert W branch ``W_0`` (``branch="low"``,
    the usual, physical solution) or ``W_-1`` (``branch="high"``, a detector beyond its
    throughput maximum); defined for ``m <= 1 / (e tau)``.

    Raises :class:`PhysicsError` for an observed rate at or beyond the model's maximum.

    Examples
    --------
    tau = 1 us, m = 90 483.742 cps observed (paralysable) -> n = 100 000 cps:

    >>> round(dead_time_correct(90483.7418, 1e-6))
    100000
    >>> round(dead_time_correct(90909.0909, 1e-6, "non-paralysable"))
    100000
    """
    m_model = _model(model)
    tau = _positive(tau_s, "tau_s")
    m = np.asarray(observed_cps, dtype=float)
    if np.any(m < 0) or not np.all(np.isfinite(m)):
        raise InputError("observed count rates must be finite and >= 0", field="observed_cps")
    x = m * tau
    if m_model == "non-paralysable":
        if np.any(x >= 1.0):
            raise PhysicsError(
                f"observed rate {float(np.max(m)):.6g} cps reaches the non-paralysable limit 1/tau = {1 / tau:.6g} cps "
                f"(tau = {tau:g} s): the true rate is unbounded"
            )
        n = m / (1.0 - x)
    else:
        limit = 1.0 / (math.e * tau)
        if np.any(x > 1.0 / math.e * (1 + 1e-12)):
            raise PhysicsError(
                f"observed rate {float(np.max(m)):.6g} cps exceeds the maximum observable rate of a paralysable "
                f"detector, 1/(e tau) = {limit:.6g} cps (tau = {tau:g} s): check tau, the model or the rate"
            )
        if branch not in ("low", "high"):
            raise InputError(f"branch must be 'low' or 'high', got {branch!r}", field="branch")
        k = 0 if branch == "low" else -1
        arg = np.maximum(-x, -1.0 / math.e)
        if k == -1 and np.any(x == 0):
            raise PhysicsError("the high-rate branch is undefined for a zero observed rate")
        w = np.real(lambertw(arg, k))
        # At the branch point -1/e, W = -1 on both branches; lambertw returns nan there in
        # floating point, so set it explicitly.
        w = np.where(arg <= -1.0 / math.e + 1e-15, -1.0, w)
        n = -w / tau
    return float(n) if n.ndim == 0 else n


def dead_time_correct_quantity(
    observed: Quantity,
    tau_s: float,
    model: DeadTimeModel | str = "paralysable",
    *,
    tau_uncertainty_s: float = 0.0,
) -> Quantity:
    """:func:`dead_time_correct` (low branch) for an observed rate ± u, with the uncertainty
    propagated analytically (GUM eq. 10):

    * non-paralysable: ``dn/dm = 1/(1 - m tau)^2``, ``dn/dtau = n^2``;
    * paralysable: from ``m = n e^{-n tau}``, ``dn/dm = e^{n tau}/(1 - n tau)``,
      ``dn/dtau = n^2/(1 - n tau)``.

    Components: ``"counting"`` (from ``u(m)``) and ``"dead time (tau)"``.
    """
    m_model = _model(model)
    m = float(observed.value)
    n = float(dead_time_correct(m, tau_s, m_model))
    if m_model == "non-paralysable":
        dn_dm = 1.0 / (1.0 - m * tau_s) ** 2
        dn_dtau = n * n
    else:
        if n * tau_s >= 1.0 - 1e-9:
            raise PhysicsError("at the paralysable maximum (n tau = 1) the true rate has unbounded uncertainty")
        dn_dm = math.exp(n * tau_s) / (1.0 - n * tau_s)
        dn_dtau = n * n / (1.0 - n * tau_s)
    c_count = abs(dn_dm) * observed.uncertainty
    c_tau = abs(dn_dtau) * float(tau_uncertainty_s)
    return Quantity(
        n,
        math.hypot(c_count, c_tau),
        observed.unit,
        method=f"{m_model} dead-time correction, tau = {tau_s:g} s ({KNOLL})",
        components={"counting": c_count, "dead time (tau)": c_tau},
    )


__all__: Sequence[str] = (
    "ActivityConcentration",
    "CalibrationDatabase",
    "CalibrationRecord",
    "EnergyWindow",
    "activity_concentration_from_bqml",
    "counts_to_activity_concentration",
    "dead_time_correct",
    "dead_time_correct_quantity",
    "load_calibrations",
    "observed_rate",
    "parse_calibrations",
    "sensitivity_quantity",
)
