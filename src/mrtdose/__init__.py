"""mrtdose: internal dosimetry for molecular radiotherapy.

From measured activities (and, in later layers, quantitative images) to time-integrated
activities, absorbed doses and biologically effective doses, every number with its standard
uncertainty (k=1) and the method that produced it.

Layers (a lower layer never imports a higher one), see ``DESIGN.md``:
0 ``quantities``, ``errors``; 1 ``physics``; 2 ``kinetics``; 3 ``dose``;
5 ``workflow``; 7 ``reports``, ``cli``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mrtdose")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
