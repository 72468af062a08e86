"""Values with standard uncertainties.

Every reported number in mrtdose is a :class:`Quantity`: a value, its standard uncertainty
(k=1, GUM JCGM 100:2008 section 2.3.1), its unit, the method that produced it and, where the
uncertainty was propagated, the contribution of each input component (EANM guidance, Gear et al.
2018, EJNMMI 45:2456). Contributions are stated in the quantity's own unit as
``|c_i| u(x_i)`` (or ``sqrt(J_i Sigma_i J_i^T)`` for a vector input); for uncorrelated components
their root sum of squares is the combined standard uncertainty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True)
class Quantity:
    """An immutable value with standard uncertainty (k=1) and unit.

    Examples
    --------
    >>> q = Quantity(2.74, 0.21, "Gy", method="MIRD")
    >>> q.to_json()["value"], round(q.relative_uncertainty, 3)
    (2.74, 0.077)
    """

    value: float
    uncertainty: float
    unit: str
    method: str = ""
    components: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        u = float(self.uncertainty)
        if not (u >= 0.0) and not math.isnan(u):
            raise ValueError(f"standard uncertainty must be >= 0, got {u}")
        object.__setattr__(self, "uncertainty", u)
        object.__setattr__(
            self, "components", MappingProxyType({k: float(v) for k, v in self.components.items()})
        )

    @property
    def relative_uncertainty(self) -> float:
        """u/|value| (nan for a zero value)."""
        return self.uncertainty / abs(self.value) if self.value else math.nan

    def to_json(self, *, components: bool = True) -> dict[str, Any]:
        """The stable JSON form ``{"value", "uncertainty", "unit"}`` (plus method/components)."""
        out: dict[str, Any] = {
            "value": _clean(self.value),
            "uncertainty": _clean(self.uncertainty),
            "unit": self.unit,
        }
        if self.method:
            out["method"] = self.method
        if components and self.components:
            out["components"] = {k: _clean(v) for k, v in self.components.items()}
        return out

    def scaled(self, factor: float, unit: str | None = None) -> "Quantity":
        """The same quantity multiplied by an exact factor (e.g. a unit conversion)."""
        f = float(factor)
        return Quantity(
            self.value * f,
            self.uncertainty * abs(f),
            unit or self.unit,
            self.method,
            {k: v * abs(f) for k, v in self.components.items()},
        )

    def __str__(self) -> str:
        return f"{format_value(self.value, self.uncertainty)} {self.unit}"


def _clean(x: float) -> float | None:
    """JSON has no NaN/inf: report them as null."""
    return None if (x is None or not math.isfinite(x)) else float(x)


def format_value(value: float, uncertainty: float, digits: int = 2) -> str:
    """``value ± uncertainty`` rounded to ``digits`` significant figures of the uncertainty.

    >>> format_value(2.7431, 0.2123)
    '2.74 ± 0.21'
    """
    if not math.isfinite(value):
        return "n/a"
    if not (uncertainty > 0 and math.isfinite(uncertainty)):
        return f"{value:.4g}"
    exp = math.floor(math.log10(uncertainty)) - (digits - 1)
    decimals = max(0, -exp)
    return f"{round(value, -exp):.{decimals}f} ± {round(uncertainty, -exp):.{decimals}f}"
