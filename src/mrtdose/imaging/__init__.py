"""Layer 2: imaging. Voxel volumes with their geometry, unit and time, and their file formats.

* :mod:`mrtdose.imaging.volume` -- :class:`~mrtdose.imaging.volume.Volume`, the one in-memory
  image type (array indexed ``[z, y, x]``, geometry in DICOM patient coordinates, LPS, mm).
* :mod:`mrtdose.imaging.nifti` -- NIfTI-1/2 reading and writing (RAS <-> LPS conversion).
* :mod:`mrtdose.imaging.rtdose` -- DICOM RT Dose writing and reading.
* :mod:`mrtdose.imaging.kernels_io` -- user voxel S-value kernels (Lanconelli et al. 2012 text
  tables, NIfTI).

Writers return ``bytes``: the caller writes them atomically (``mrtdose.workflow.outputs``), so
nothing here leaves a half-written file.
"""

from mrtdose.imaging.volume import Volume

__all__ = ["Volume"]
