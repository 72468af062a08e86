"""Generate mrtdose's photon point-kernel tables: src/mrtdose/data/photon_kernels/<material>.npz.

The tables are our own Monte Carlo results (mrtdose.physics.photon_transport: first-principles
photon transport with xraylib cross sections), deterministic for a given seed, numpy and xraylib.

Usage::

    .venv/bin/python scripts/make_photon_kernels.py [material ...]   # default: all materials
"""

from __future__ import annotations

import sys

import numpy as np

from mrtdose.physics.attenuation import MATERIALS
from mrtdose.physics.photon_transport import HISTORIES, build_kernel_table, save_kernel_table


def main(argv: list[str]) -> int:
    names = argv or list(MATERIALS)
    for name in names:
        table = build_kernel_table(name, histories=HISTORIES)
        path = save_kernel_table(table)
        print(f"{name}: {HISTORIES} histories x {len(table.energies_mev)} energies in "
              f"{table.build_seconds:.0f} s -> {path} ({path.stat().st_size / 1024:.0f} KiB); "
              f"max SEM of C {table.cum_sem.max():.5f}; raw scatter ratio "
              f"{np.abs(table.raw_scatter_ratio - 1).max():.4f} from 1")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
