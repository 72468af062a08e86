"""Shared test helpers.

Tests may read ``../shared`` (reference data beside the repository). Where it is absent, as on
a user's machine, such tests skip with a clear reason; in CI (``CI=true``) it is always there and
its absence is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{p} is missing in CI, where ../shared must be present")
        pytest.skip(f"reference data {p} not present (../shared is only beside the repo in development and CI)")
    return p


@pytest.fixture
def minimal_case() -> dict:
    return {
        "patient": {"id": "T1"},
        "nuclide": "Lu-177",
        "administration": {"activity_mbq": 7400, "time": "2026-01-05T10:00:00+00:00"},
        "regions": {
            "kidneys": {
                "mass_g": 310,
                "measurements": [
                    {"time_h": 4.0, "activity_mbq": 98.6, "uncertainty_pct": 5},
                    {"time_h": 24.0, "activity_mbq": 73.6, "uncertainty_pct": 5},
                    {"time_h": 96.0, "activity_mbq": 30.1, "uncertainty_pct": 5},
                    {"time_h": 168.0, "activity_mbq": 11.9, "uncertainty_pct": 5},
                ],
            }
        },
        "options": {"monte_carlo_samples": 0},
    }
