"""The synthetic voxel phantom carries the stated kinetics exactly (noiseless, unblurred)."""

from __future__ import annotations

import numpy as np
import pytest

from mrtdose.workflow.synthetic import PHANTOM_LABELS, _PHANTOM_TERMS, true_activity, voxel_phantom


def test_phantom_region_activities_match_kinetics():
    p = voxel_phantom(shape=(32, 40, 48), voxel_mm=6.0)
    vml = 0.6**3
    for it, t in enumerate(p["times_h"]):
        a = p["activity_bq_per_ml"][it]
        for name, v in PHANTOM_LABELS.items():
            total_mbq = float(a[p["labels"] == v].sum()) * vml / 1e6
            assert total_mbq == pytest.approx(true_activity(_PHANTOM_TERMS[name], t), rel=1e-5), (name, t)


def test_phantom_blur_conserves_activity_inside_grid():
    """Gaussian blur (mode constant) only loses what spills off the grid; the body is well inside."""
    p0 = voxel_phantom(shape=(32, 40, 48), voxel_mm=6.0)
    p1 = voxel_phantom(shape=(32, 40, 48), voxel_mm=6.0, fwhm_mm=10.0)
    assert p1["activity_bq_per_ml"].sum() == pytest.approx(p0["activity_bq_per_ml"].sum(), rel=1e-3)
    assert np.all(p1["labels"] == p0["labels"])
