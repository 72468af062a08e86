"""Layer 2: imaging. Voxel volumes with their geometry, unit and time, their file formats, and
quantification.

* :mod:`~mrtdose.imaging.volume` -- :class:`~mrtdose.imaging.volume.Volume`, the one in-memory
  image type (array indexed ``[z, y, x]``, geometry in DICOM patient coordinates, LPS, mm).
* Files: :mod:`~mrtdose.imaging.dicom_series` (NM, PT, CT series), :mod:`~mrtdose.imaging.nifti`
  (NIfTI with JSON sidecars), :mod:`~mrtdose.imaging.rtdose` (DICOM RT Dose),
  :mod:`~mrtdose.imaging.rtstruct` and :mod:`~mrtdose.imaging.seg` (regions),
  :mod:`~mrtdose.imaging.kernels_io` (user voxel kernels), :mod:`~mrtdose.imaging.dicom_synth`
  (synthetic DICOM for tests and virtual patients).
* Quantification: :mod:`~mrtdose.imaging.calibration` (calibration database, counts to Bq/mL,
  dead time), :mod:`~mrtdose.imaging.recovery` (recovery-coefficient curves),
  :mod:`~mrtdose.imaging.planar` (conjugate view, TEW, hybrid planar/SPECT).
* Anatomy: :mod:`~mrtdose.imaging.regions` (label maps, statistics, body and lesion masks),
  :mod:`~mrtdose.imaging.density` (HU to density), :mod:`~mrtdose.imaging.resample` (grids).

Writers return ``bytes``: the caller writes them atomically (``mrtdose.workflow.outputs``), so
nothing here leaves a half-written file.
"""

from mrtdose.imaging.volume import Volume

__all__ = ["Volume"]
