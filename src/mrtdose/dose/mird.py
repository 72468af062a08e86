"""Organ-level MIRD absorbed dose.

D(r_T) = sum_S A~(r_S) S(r_T <- r_S)   (MIRD Pamphlet 21, Bolch et al. 2009, J Nucl Med 50:477)

with A~ in MBq h converted to Bq s (1 MBq h = 1e6 Bq * 3600 s) and S in Gy/(Bq s).
"""

from __future__ import annotations

import numpy as np

#: Bq s per MBq h.
BQ_S_PER_MBQ_H = 1e6 * 3600.0


def absorbed_dose_gy(tia_mbq_h: np.ndarray, s_matrix_gy_per_bq_s: np.ndarray) -> np.ndarray:
    """Absorbed dose to each target: ``S @ A~`` with unit conversion.

    ``s_matrix_gy_per_bq_s[t, s]`` is S(target t <- source s); ``tia_mbq_h[s]`` the TIA of source s.

    >>> float(absorbed_dose_gy(np.array([1.0]), np.array([[1e-9]]))[0])  # 1 MBq h, 1 mGy/(MBq s)
    3.6
    """
    return np.asarray(s_matrix_gy_per_bq_s, dtype=float) @ (np.asarray(tia_mbq_h, dtype=float) * BQ_S_PER_MBQ_H)
