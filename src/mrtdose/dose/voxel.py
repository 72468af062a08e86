"""Voxel-level absorbed dose: local deposition, dose-kernel convolution, density scaling,
dose-rate integration and patient-specific S matrices.

Layer 3: pure numpy/scipy on arrays; the caller supplies arrays on one grid (the kernel's voxel
size must equal the image's: these functions see no geometry).

Units
-----
TIA maps in MBq h per voxel, activity maps in MBq per voxel, kernels in Gy/(Bq s) (absorbed
dose in a target voxel per decay in the source voxel, the voxel S value of MIRD Pamphlet 17,
Bolch et al. 1999, J Nucl Med 40:11S-36S), doses in Gy, dose rates in Gy/h, densities in g/mL,
voxel volumes in mL. 1 MBq h = 3.6e9 decays (Bq s); 1 MeV = 1.602176634e-13 J (CODATA 2018,
exact since the 2019 SI).

Engines
-------
* :func:`local_deposition` (LDM): all the energy emitted per decay (the non-penetrating part,
  as chosen by the caller) is absorbed in the voxel of decay, D = N E / m (MIRD schema with
  absorbed fraction 1 in the source voxel; used for 90Y by Pasciak AS, Bourgeois AC, Bradley
  YC 2014, Front Oncol 4:121, and for 177Lu by Hänscheid et al. 2018 / Ljungberg et al. 2016,
  MIRD Pamphlet 26, J Nucl Med 57:151).
* :func:`kernel_convolution` / :class:`KernelConvolver`: D(r) = sum_s N(s) k(r - s) (MIRD
  Pamphlet 17; Bolch et al. 1999), evaluated as a *linear* (not circular) convolution by FFT
  (convolution theorem; zero padding prevents wrap-around, see :class:`KernelConvolver`).
* Density correction (``density_map_g_per_ml``): the soft-tissue kernel's dose is scaled by
  rho_ref / rho(r) in each target voxel, so that the energy deposited there (dose x mass) is
  that of the homogeneous calculation ("mass scaling" / density-weighted DVK: Dieudonné A,
  Hobbs RF, Lebtahi R, et al. 2013, J Nucl Med 54:236-243; compared with other corrections by
  Götz TI, Lang EW, Schmidkonz C, Kuwert T, Ludwig B 2019, Phys Med Biol 64:245011). It does not
  change where energy goes (no range scaling); it is a first-order correction whose error grows
  at interfaces (lung, bone), as both papers show.

Three routes to the absorbed dose (each result says which, :attr:`VoxelDose.route`):

(a) ``"tia-convolution"``: a TIA map (from any source) convolved once, :func:`dose_from_tia_map`.
(b) ``"dose-rate-integration"``: each time point's activity map convolved into a dose-rate map,
    the dose-rate maps integrated in time per voxel (trapezoids + a physical or fitted tail),
    :func:`dose_from_activity_maps` / :func:`dose_from_dose_rate_maps`.
(c) ``"voxel-kinetics-convolution"``: voxel kinetics (:mod:`mrtdose.kinetics.voxel`) give the
    TIA map, then (a), :func:`dose_from_voxel_kinetics`.

Because convolution and the trapezoid + physical-tail integral are both linear, (a) on a
trapezoid TIA map and (b) with the physical tail agree to rounding; they differ with fitted
tails (non-linear in the data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import scipy.fft as sfft

from mrtdose.errors import InputError
from mrtdose.kinetics import voxel as vk

#: Decays per (MBq h): 1e6 Bq x 3600 s.
BQ_S_PER_MBQ_H = 3.6e9
#: J per MeV (CODATA 2018; exact since the 2019 SI redefinition of the elementary charge).
J_PER_MEV = 1.602176634e-13

REF_MIRD17 = (
    "Bolch WE, Bouchet LG, Robertson JS, et al. MIRD Pamphlet No. 17: the dosimetry of nonuniform "
    "activity distributions - radionuclide S values at the voxel level. J Nucl Med 1999;40:11S-36S"
)
REF_LDM = (
    "Pasciak AS, Bourgeois AC, Bradley YC. A comparison of techniques for 90Y PET/CT image-based "
    "dosimetry following radioembolization with resin microspheres. Front Oncol 2014;4:121"
)
REF_DIEUDONNE = (
    "Dieudonné A, Hobbs RF, Lebtahi R, et al. Study of the impact of tissue density heterogeneities "
    "on 3-dimensional abdominal dosimetry: comparison between dose kernel convolution and direct "
    "Monte Carlo methods. J Nucl Med 2013;54:236-243"
)
REF_GOTZ = (
    "Götz TI, Lang EW, Schmidkonz C, Kuwert T, Ludwig B. A comparison of methods for adapting "
    "177Lu dose-voxel-kernels to tissue inhomogeneities. Phys Med Biol 2019;64:245011"
)

#: Density of the medium the kernels are usually computed in (soft tissue / water), g/mL.
DEFAULT_REFERENCE_DENSITY_G_PER_ML = 1.0

Route = Literal["tia-convolution", "dose-rate-integration", "voxel-kinetics-convolution"]


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def _positive(x: float, name: str) -> float:
    v = float(x)
    if not (v > 0 and math.isfinite(v)):
        raise InputError(f"{name} must be a finite number > 0, got {x}")
    return v


def _check_map(a, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(a)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise InputError(f"{name} has shape {arr.shape}, expected {tuple(shape)}")
    return arr


def _density(density, shape: tuple[int, ...], name: str = "density_map_g_per_ml") -> np.ndarray | float:
    """A scalar or a map of the grid's shape, all finite and > 0."""
    d = np.asarray(density, dtype=np.float64) if np.ndim(density) == 0 else np.asarray(density)
    if d.ndim == 0:
        return _positive(float(d), name)
    if d.shape != tuple(shape):
        raise InputError(f"{name} has shape {d.shape}, expected the grid shape {tuple(shape)}")
    lo = d.min()
    if not (lo > 0) or not np.isfinite(d.max()):
        raise InputError(f"{name} must be finite and > 0 g/mL everywhere (minimum {lo})")
    return d


def _workers(workers: int | None) -> int:
    """None -> all CPUs of this process (scipy.fft's own default would be 1)."""
    if workers is None:
        return vk.available_cpus()
    w = int(workers)
    if w == 0:
        raise InputError("workers must be a non-zero integer (negative: all CPUs, as in scipy.fft)")
    return w


# ---------------------------------------------------------------------------------------------
# Local deposition
# ---------------------------------------------------------------------------------------------


def local_deposition(
    tia_map_mbq_h,
    voxel_volume_ml: float,
    density_map_g_per_ml,
    energy_per_decay_mev: float,
) -> np.ndarray:
    """Local deposition method (LDM): D = N E / m in every voxel (Gy).

    N = TIA x 3.6e9 decays, E = ``energy_per_decay_mev`` x 1.602176634e-13 J, m = rho V x 1e-3 kg
    (see the module docstring for references). ``density_map_g_per_ml`` is a scalar or a map.

    >>> round(float(local_deposition(np.array([1.0]), 1.0, 1.0, 0.1)[0]), 12)  # 3.6e9 x 0.1 MeV in 1 g
    0.057678358824
    """
    tia = _check_map(tia_map_mbq_h, "tia_map_mbq_h")
    v = _positive(voxel_volume_ml, "voxel_volume_ml")
    e = float(energy_per_decay_mev)
    if not (e >= 0 and math.isfinite(e)):
        raise InputError(f"energy_per_decay_mev must be a finite number >= 0, got {energy_per_decay_mev}")
    rho = _density(density_map_g_per_ml, tia.shape)
    factor = BQ_S_PER_MBQ_H * e * J_PER_MEV / (v * 1e-3)
    return np.asarray(tia, dtype=np.float64) * factor / rho


# ---------------------------------------------------------------------------------------------
# Kernel convolution
# ---------------------------------------------------------------------------------------------


def _check_kernel(kernel, ndim: int) -> np.ndarray:
    # a VoxelKernel (mrtdose.physics.voxel_kernel_type) or any object carrying its array
    k = np.asarray(getattr(kernel, "array_gy_per_bq_s", kernel))
    if not np.issubdtype(k.dtype, np.floating) and not np.issubdtype(k.dtype, np.integer):
        raise InputError(f"kernel must be a numeric array, got dtype {k.dtype}")
    if k.ndim != ndim:
        raise InputError(f"kernel has {k.ndim} dimensions but the grid has {ndim}")
    if any(n % 2 == 0 for n in k.shape):
        raise InputError(
            f"kernel shape {k.shape} must be odd along every axis, with the source voxel at the "
            "centre (index n // 2)"
        )
    if not np.all(np.isfinite(k)):
        raise InputError("kernel contains non-finite values")
    if k.min() < 0:
        raise InputError(f"kernel values must be >= 0 Gy/(Bq s) (minimum {k.min():g})")
    return k


def _wrapped_kernel_spectrum(k: np.ndarray, half: Sequence[int], padded: Sequence[int], workers: int) -> np.ndarray:
    """rfftn of the kernel placed in a zero array of shape ``padded`` with its centre at index 0
    (offset o at index o mod L), computed one axis at a time on the non-zero part only: the
    last axis by rfft on the K_0 x ... x K_{d-2} kernel rows, then each earlier axis by fft on
    the rows that are non-zero so far. Same result as ``rfftn`` of the full padded array
    (the multidimensional DFT is separable) at a fraction of the cost for a small kernel."""
    spec: np.ndarray = k
    nd = k.ndim
    for ax in reversed(range(nd)):
        shape = list(spec.shape)
        shape[ax] = padded[ax]
        buf = np.zeros(shape, dtype=spec.dtype)
        pos = (np.arange(k.shape[ax]) - half[ax]) % padded[ax]  # distinct: L >= 2c + 1
        sl: list[Any] = [slice(None)] * nd
        sl[ax] = pos
        buf[tuple(sl)] = spec
        if ax == nd - 1:
            spec = sfft.rfft(buf, axis=ax, workers=workers)
        else:
            spec = sfft.fft(buf, axis=ax, workers=workers, overwrite_x=True)
    return spec


def _is_mirror_symmetric(k: np.ndarray) -> bool:
    """Whether k(-o) = k(o) along every axis separately, exactly (true of radial dose kernels)."""
    return all(np.array_equal(k, np.flip(k, axis=ax)) for ax in range(k.ndim))


def _symmetric_kernel_spectrum(k: np.ndarray, half: Sequence[int], padded: Sequence[int]) -> np.ndarray:
    """The same spectrum as :func:`_wrapped_kernel_spectrum` for a kernel symmetric under the
    reflection of every axis, where it is real: along an axis of length L,
    K(f) = k_0 + 2 sum_{o=1}^{c} k_o cos(2 pi f o / L) (the sine terms cancel pairwise), and the
    d-dimensional transform is the product of these cosine sums, contracted one axis at a time
    as matrix products with the (c+1)-wide corner k[c:, c:, ...] of the kernel (frequencies
    0..L/2 along the last axis, as rfftn; all L along the others). Float64 throughout."""
    nd = k.ndim
    spec = np.ascontiguousarray(k[tuple(slice(c, None) for c in half)], dtype=np.float64)
    for ax in reversed(range(nd)):
        L, c = padded[ax], half[ax]
        nf = L // 2 + 1 if ax == nd - 1 else L
        o = np.arange(c + 1)
        # (nf, c + 1); f o reduced modulo L first (exact integers): arguments within [0, 2 pi)
        cos = np.cos((2.0 * np.pi / L) * (np.outer(np.arange(nf), o) % L))
        cos[:, 1:] *= 2.0
        # contract axis ax of spec with cos: result has nf in place of c + 1 on that axis
        moved = np.moveaxis(spec, ax, -1)
        spec = np.moveaxis(moved @ cos.T, -1, ax)
    return np.ascontiguousarray(spec)


def _support_box(a: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """[lo, hi) along each axis of the smallest box holding every non-zero value of ``a``
    (None if there is none)."""
    nz = a != 0
    if a.ndim == 1:
        w = np.flatnonzero(nz)
        return None if w.size == 0 else ((int(w[0]), int(w[-1]) + 1),)
    last = nz.any(axis=tuple(range(a.ndim - 1)))
    w = np.flatnonzero(last)
    if w.size == 0:
        return None
    head = _support_box(nz.any(axis=-1))  # one pass over the grid, then small projections
    assert head is not None
    return head + ((int(w[0]), int(w[-1]) + 1),)


#: Kernel spectra kept per convolver (one per padded shape; sources with the same support box,
#: e.g. the time points of one patient, share one).
_SPECTRUM_CACHE_SIZE = 3


class KernelConvolver:
    """Linear convolution of maps on a fixed grid with one dose kernel, kernel spectra cached.

    Method: with a kernel of half-widths c_d (shape 2 c_d + 1), the source is cropped to the
    box [lo_d, hi_d) holding its non-zero voxels (B_d = hi_d - lo_d; zero voxels contribute
    nothing, so this is exact), and only the outputs that the kernel can reach are computed,
    the window [o_d, e_d) = [max(lo_d - c_d, 0), min(hi_d + c_d, n_d)) (every other output is
    exactly 0). The box is placed at index s_d = lo_d - o_d of a zero array of length L_d and
    the kernel with its centre at index 0 (negative offsets wrapped to the end); output
    o_d + j is then sample j of the circular convolution, for 0 <= j < M_d = e_d - o_d. That
    sample receives the box voxel i (0 <= i < B_d) through the kernel offset
    delta = j - s_d - i, in [-(s_d + B_d - 1), M_d - 1 - s_d]; an offset congruent to it modulo
    L_d, delta +- L_d, lies in [-c_d, c_d] only if L_d - (s_d + B_d - 1) <= c_d or
    L_d - (M_d - 1 - s_d) <= c_d. So the circular convolution equals the linear one on the
    window whenever

        L_d >= max(s_d + B_d + c_d, M_d - s_d + c_d, 2 c_d + 1)

    (the last term keeps the wrapped kernel offsets distinct), and L_d =
    ``scipy.fft.next_fast_len`` of that (real=True). For a source filling the grid (s = 0,
    B = M = n) this is the n_d + c_d of :attr:`padded_shape`, smaller than the n_d + 2 c_d of a
    "full" linear convolution; for a body that does not fill the grid it is smaller still.
    Kernel offsets beyond n_d - 1 cannot reach any grid voxel and are dropped.

    The kernel spectrum depends only on L (cached per padded shape). For a kernel symmetric
    under the reflection of every axis (radial dose kernels are) it is real and computed as a
    product of cosine sums (:func:`_symmetric_kernel_spectrum`, matrix products); otherwise by
    FFTs of the kernel rows (:func:`_wrapped_kernel_spectrum`).

    Parameters
    ----------
    kernel_gy_per_bq_s : odd-shaped kernel array, source voxel at the centre (or a
        :class:`mrtdose.physics.voxel_kernel_type.VoxelKernel`, whose array is used; its voxel
        size must be the grid's, which the caller checks).
    grid_shape : shape of the maps to convolve.
    workers : threads for ``scipy.fft`` (None: all CPUs available to the process).
    dtype : ``np.float64`` (default) or ``np.float32`` (single-precision FFTs and kernel
        spectrum, up to 2-3x faster; largest error 1.2e-7 to 3.7e-7 of the peak dose on the
        64^3-256^3 phantoms of ``bench/voxel.py``, i.e. up to a few 1e-5 relative in the
        lowest-dose voxels of the body and about 1e-6 relative on region mean doses and DVH
        metrics; results are returned as float64).

    Examples
    --------
    >>> k = np.zeros((3, 3, 3)); k[1, 1, 1] = 2.0; k[1, 1, 2] = 1.0
    >>> conv = KernelConvolver(k, (4, 4, 4))
    >>> src = np.zeros((4, 4, 4)); src[0, 0, 3] = 1.0
    >>> out = conv.convolve(src)
    >>> round(float(out[0, 0, 3]), 12), float(out[0, 0, 0])  # no wrap-around to the other edge
    (2.0, 0.0)
    """

    def __init__(self, kernel_gy_per_bq_s, grid_shape: Sequence[int], *, workers: int | None = None,
                 dtype=np.float64):
        grid = tuple(int(n) for n in grid_shape)
        if not grid or any(n < 1 for n in grid):
            raise InputError(f"grid_shape must be a tuple of positive integers, got {grid_shape}")
        k = _check_kernel(kernel_gy_per_bq_s, len(grid))
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise InputError(f"dtype must be float64 or float32, got {dtype}")
        self.grid_shape = grid
        self.workers = _workers(workers)
        half = [s // 2 for s in k.shape]
        # drop kernel offsets that cannot reach the grid (|offset| > n - 1)
        cut = tuple(slice(c - min(c, n - 1), c + min(c, n - 1) + 1) for c, n in zip(half, grid))
        k = np.array(k[cut], dtype=np.float64)  # own copy: the caller's array may change
        self._kernel = k
        self._half = tuple(s // 2 for s in k.shape)
        self.kernel_shape = k.shape
        #: padded shape for a source filling the whole grid (the largest one :meth:`convolve` uses)
        self.padded_shape = tuple(sfft.next_fast_len(n + c, real=True) for n, c in zip(grid, self._half))
        self.kernel_sum = float(np.sum(k, dtype=np.float64))
        self.symmetric = _is_mirror_symmetric(k)
        self._spectra: dict[tuple[int, ...], np.ndarray] = {}

    @property
    def spectrum_nbytes(self) -> int:
        """Memory held by the cached kernel spectra (bytes)."""
        return int(sum(s.nbytes for s in self._spectra.values()))

    def spectrum(self, padded_shape: Sequence[int]) -> np.ndarray:
        """The kernel spectrum on a padded grid (kernel centred at index 0), cached: real for a
        mirror-symmetric kernel, complex otherwise; of the convolver's dtype."""
        key = tuple(int(x) for x in padded_shape)
        spec = self._spectra.pop(key, None)
        if spec is None:
            if self.symmetric:
                spec = _symmetric_kernel_spectrum(self._kernel, self._half, key).astype(self.dtype, copy=False)
            else:
                spec = _wrapped_kernel_spectrum(self._kernel.astype(self.dtype), self._half, key, self.workers)
            spec.flags.writeable = False
            while len(self._spectra) >= _SPECTRUM_CACHE_SIZE:
                self._spectra.pop(next(iter(self._spectra)))  # least recently used
        self._spectra[key] = spec
        return spec

    def _plan(self, src: np.ndarray):
        """(support box, shift, output window, padded shape) for a source (see the class
        docstring), or None for a source that is 0 everywhere."""
        box = _support_box(src)
        if box is None:
            return None
        shift, window, padded = [], [], []
        for (lo, hi), c, n in zip(box, self._half, self.grid_shape):
            o, e = max(lo - c, 0), min(hi + c, n)
            s, b, m = lo - o, hi - lo, e - o
            shift.append(s)
            window.append((o, e))
            padded.append(sfft.next_fast_len(max(s + b + c, m - s + c, 2 * c + 1), real=True))
        return box, tuple(shift), tuple(window), tuple(padded)

    def padded_shape_for(self, source) -> tuple[int, ...] | None:
        """The padded shape :meth:`convolve` uses for this source (its FFT size; at most
        :attr:`padded_shape`), or None for a source that is 0 everywhere."""
        plan = self._plan(_check_map(source, "source map", self.grid_shape))
        return None if plan is None else plan[3]

    def convolve(self, source, *, scale: float = 1.0, out_dtype=np.float64) -> np.ndarray:
        """``scale`` x (source * kernel), cropped to the grid.

        ``source`` in decays per voxel (Bq s) gives Gy; pass ``scale=3.6e9`` for a TIA map in
        MBq h (or 1e6 x 3600 for an activity map in MBq giving a dose rate in Gy/h).
        A non-negative source gives a non-negative result (round-off below 0 is set to 0).
        """
        src = _check_map(source, "source map", self.grid_shape)
        out = np.zeros(self.grid_shape, dtype=out_dtype)
        plan = self._plan(src)
        if plan is None:
            return out
        box, shift, window, padded = plan
        buf = np.zeros(padded, dtype=self.dtype)
        placed = buf[tuple(slice(s, s + hi - lo) for s, (lo, hi) in zip(shift, box))]
        placed[...] = src[tuple(slice(lo, hi) for lo, hi in box)]
        nonnegative = bool(placed.min() >= 0) and scale >= 0
        del placed
        spec = sfft.rfftn(buf, workers=self.workers, overwrite_x=True)
        del buf
        spec *= self.spectrum(padded)
        if spec.ndim > 1:  # inverse: complex axes in place, then the real axis (no extra copy)
            spec = sfft.ifftn(spec, axes=tuple(range(spec.ndim - 1)), workers=self.workers, overwrite_x=True)
        full = sfft.irfft(spec, n=padded[-1], axis=-1, workers=self.workers)
        del spec
        win = out[tuple(slice(o, e) for o, e in window)]
        np.multiply(full[tuple(slice(0, e - o) for o, e in window)], scale, out=win)
        if nonnegative:
            # FFT round-off leaves values of order 1e-16 x the peak (of either sign) where the
            # exact result is 0; with a non-negative source and kernel the result is >= 0.
            np.maximum(win, 0.0, out=win)
        return out


def density_scale(dose_gy: np.ndarray, density_map_g_per_ml, reference_density_g_per_ml: float =
                  DEFAULT_REFERENCE_DENSITY_G_PER_ML, *, in_place: bool = False) -> np.ndarray:
    """Mass scaling D(r) x rho_ref / rho(r) (Dieudonné et al. 2013; Götz et al. 2019): the
    energy per voxel (dose x rho V) of the homogeneous kernel calculation is kept."""
    rho_ref = _positive(reference_density_g_per_ml, "reference_density_g_per_ml")
    rho = _density(density_map_g_per_ml, dose_gy.shape)
    if in_place:
        dose_gy *= rho_ref
        dose_gy /= rho
        return dose_gy
    return dose_gy / rho * rho_ref  # float64 / (float32 or float64) -> float64


def kernel_convolution(
    tia_map_mbq_h,
    kernel_gy_per_bq_s,
    *,
    workers: int | None = None,
    density_map_g_per_ml=None,
    reference_density_g_per_ml: float = DEFAULT_REFERENCE_DENSITY_G_PER_ML,
    convolver: KernelConvolver | None = None,
) -> np.ndarray:
    """Absorbed dose (Gy) = TIA map (MBq h) convolved with the kernel (Gy/(Bq s)).

    ``kernel_gy_per_bq_s`` may be None when a prepared ``convolver`` (same grid) is given.
    With ``density_map_g_per_ml`` the dose is mass-scaled, see :func:`density_scale`.
    """
    tia = _check_map(tia_map_mbq_h, "tia_map_mbq_h")
    if convolver is None:
        if kernel_gy_per_bq_s is None:
            raise InputError("give a kernel or a KernelConvolver")
        convolver = KernelConvolver(kernel_gy_per_bq_s, tia.shape, workers=workers)
    elif convolver.grid_shape != tia.shape:
        raise InputError(f"convolver grid {convolver.grid_shape} does not match the map {tia.shape}")
    dose = convolver.convolve(tia, scale=BQ_S_PER_MBQ_H)
    if density_map_g_per_ml is not None:
        density_scale(dose, density_map_g_per_ml, reference_density_g_per_ml, in_place=True)
    return dose


# ---------------------------------------------------------------------------------------------
# The three routes
# ---------------------------------------------------------------------------------------------


_ROUTE_TEXT = {
    "tia-convolution": "TIA map convolved once with the dose kernel",
    "dose-rate-integration": "activity map of each time point convolved into a dose-rate map; "
                             "dose-rate maps integrated in time per voxel",
    "voxel-kinetics-convolution": "voxel kinetics (TIA per voxel) then one convolution",
    "ldm": "local deposition of the TIA map",
}


@dataclass(frozen=True)
class VoxelDose:
    """An absorbed-dose map and how it was obtained.

    Attributes
    ----------
    dose_gy : absorbed dose per voxel (Gy), float64.
    route : ``"tia-convolution"``, ``"dose-rate-integration"`` or ``"voxel-kinetics-convolution"``.
    engine : ``"kernel-convolution"``, ``"local-deposition"`` or ``"given dose-rate maps"``.
    density_corrected : whether mass scaling by rho_ref / rho was applied.
    method_map : per-voxel method codes of the time integration
        (:data:`mrtdose.kinetics.voxel.METHOD_NAMES`), or None.
    settings : the options used.
    references : sources.
    """

    dose_gy: np.ndarray
    route: str
    engine: str
    density_corrected: bool
    method_map: np.ndarray | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    references: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return _ROUTE_TEXT.get(self.route, self.route)

    def to_json(self) -> dict[str, Any]:
        """Summary without arrays (the map itself is written by the imaging layer)."""
        out: dict[str, Any] = {
            "route": self.route,
            "description": self.description,
            "engine": self.engine,
            "density_corrected": self.density_corrected,
            "settings": dict(self.settings),
            "max_dose": {"value": float(np.max(self.dose_gy)) if self.dose_gy.size else None,
                         "uncertainty": None, "unit": "Gy",
                         "note": "voxel-level uncertainty is not propagated"},
            "references": list(self.references),
        }
        if self.method_map is not None:
            c = np.bincount(self.method_map.reshape(-1))
            out["voxels_by_time_integration_method"] = {
                vk.METHOD_NAMES.get(k, str(k)): int(n) for k, n in enumerate(c) if n
            }
        return out


def _convolver_for(kernel_or_convolver, shape, workers) -> KernelConvolver:
    if isinstance(kernel_or_convolver, KernelConvolver):
        if kernel_or_convolver.grid_shape != tuple(shape):
            raise InputError(
                f"convolver grid {kernel_or_convolver.grid_shape} does not match the maps {tuple(shape)}"
            )
        return kernel_or_convolver
    return KernelConvolver(kernel_or_convolver, shape, workers=workers)


def dose_from_tia_map(
    tia_map_mbq_h,
    kernel_or_convolver,
    *,
    density_map_g_per_ml=None,
    reference_density_g_per_ml: float = DEFAULT_REFERENCE_DENSITY_G_PER_ML,
    workers: int | None = None,
    method_map=None,
    route: Route = "tia-convolution",
    settings: Mapping[str, Any] | None = None,
) -> VoxelDose:
    """Route (a): one convolution of a TIA map."""
    tia = _check_map(tia_map_mbq_h, "tia_map_mbq_h")
    conv = _convolver_for(kernel_or_convolver, tia.shape, workers)
    dose = kernel_convolution(tia, None, convolver=conv, density_map_g_per_ml=density_map_g_per_ml,
                              reference_density_g_per_ml=reference_density_g_per_ml)
    refs = (REF_MIRD17,) + ((REF_DIEUDONNE, REF_GOTZ) if density_map_g_per_ml is not None else ())
    s = dict(settings or {})
    if density_map_g_per_ml is not None:
        s["reference_density_g_per_ml"] = float(reference_density_g_per_ml)
    return VoxelDose(dose, route, "kernel-convolution", density_map_g_per_ml is not None,
                     method_map, MappingProxyType(s), refs)


def dose_from_dose_rate_maps(
    times_h,
    dose_rate_maps_gy_per_h,
    *,
    tail: Literal["physical", "fitted"] = "physical",
    decay_constant_per_h: float,
    mask=None,
    start: Literal["zero", "constant"] = "zero",
    n_fit: int | None = None,
    weighting: vk.Weighting = "poisson",
) -> VoxelDose:
    """Route (b), time part: integrate dose-rate maps (Gy/h) at ``times_h`` per voxel.

    Trapezoids between the time points, the start rule before the first (see
    :mod:`mrtdose.kinetics.voxel`) and after the last point either the physical-decay tail
    R(t_n)/lambda_phys (``tail="physical"``) or a mono-exponential fitted to the last ``n_fit``
    points (default 2) with the rate clamped to >= lambda_phys and the fallback rule of
    :func:`mrtdose.kinetics.voxel.integrate_curves` (``tail="fitted"``; MIRD Pamphlet 16).
    """
    r = np.asarray(dose_rate_maps_gy_per_h)
    if r.ndim < 2:
        raise InputError(f"dose_rate_maps must have shape (n_t, ...), got {r.shape}")
    if tail == "physical":
        dose, codes = vk.integrate_maps(times_h, r, decay_constant_per_h, mask=mask, method="trapezoid",
                                        start=start)
        s: dict[str, Any] = {"tail": "physical decay", "start": start}
    elif tail == "fitted":
        k = 2 if n_fit is None else int(n_fit)
        dose, codes = vk.integrate_maps(times_h, r, decay_constant_per_h, mask=mask,
                                        method="trapezoid_fit_tail", start=start, n_fit=k,
                                        weighting=weighting)
        s = {"tail": f"mono-exponential fit of the last {k} points (rate >= lambda_phys)",
             "start": start, "weighting": weighting}
    else:
        raise InputError(f"tail must be 'physical' or 'fitted', got '{tail}'")
    s["decay_constant_per_h"] = float(decay_constant_per_h)
    return VoxelDose(dose, "dose-rate-integration", "given dose-rate maps", False, codes,
                     MappingProxyType(s), (vk.REF_MIRD16,))


def dose_from_activity_maps(
    times_h,
    activity_maps_mbq,
    kernel_or_convolver,
    *,
    decay_constant_per_h: float,
    tail: Literal["physical", "fitted"] = "physical",
    density_map_g_per_ml=None,
    reference_density_g_per_ml: float = DEFAULT_REFERENCE_DENSITY_G_PER_ML,
    mask=None,
    start: Literal["zero", "constant"] = "zero",
    n_fit: int | None = None,
    workers: int | None = None,
) -> VoxelDose:
    """Route (b): convolve each activity map (MBq) into a dose-rate map (Gy/h), then
    :func:`dose_from_dose_rate_maps`. The kernel spectrum is computed once."""
    a = np.asarray(activity_maps_mbq)
    if a.ndim < 2:
        raise InputError(f"activity_maps_mbq must have shape (n_t, ...), got {a.shape}")
    conv = _convolver_for(kernel_or_convolver, a.shape[1:], workers)
    rates = np.empty(a.shape, dtype=np.float64)
    for i in range(a.shape[0]):  # one convolution per time point
        # Gy/h = MBq x 1e6 Bq/MBq x kernel Gy/(Bq s) x 3600 s/h
        rates[i] = conv.convolve(a[i], scale=BQ_S_PER_MBQ_H)
        if density_map_g_per_ml is not None:
            density_scale(rates[i], density_map_g_per_ml, reference_density_g_per_ml, in_place=True)
    res = dose_from_dose_rate_maps(times_h, rates, tail=tail, decay_constant_per_h=decay_constant_per_h,
                                   mask=mask, start=start, n_fit=n_fit)
    refs = (REF_MIRD17,) + res.references + ((REF_DIEUDONNE, REF_GOTZ) if density_map_g_per_ml is not None else ())
    s = dict(res.settings)
    if density_map_g_per_ml is not None:
        s["reference_density_g_per_ml"] = float(reference_density_g_per_ml)
    return VoxelDose(res.dose_gy, "dose-rate-integration", "kernel-convolution",
                     density_map_g_per_ml is not None, res.method_map, MappingProxyType(s), refs)


def dose_from_voxel_kinetics(
    times_h,
    activity_maps_mbq,
    kernel_or_convolver,
    *,
    decay_constant_per_h: float,
    kinetics: vk.Method = "mono_exp",
    density_map_g_per_ml=None,
    reference_density_g_per_ml: float = DEFAULT_REFERENCE_DENSITY_G_PER_ML,
    workers: int | None = None,
    **kinetics_options: Any,
) -> VoxelDose:
    """Route (c): :func:`mrtdose.kinetics.voxel.voxel_tia` (method ``kinetics`` and its options,
    e.g. ``mask``, ``n_fit``) then one convolution."""
    tia = vk.voxel_tia(times_h, activity_maps_mbq, decay_constant_per_h, method=kinetics, **kinetics_options)
    res = dose_from_tia_map(
        tia.tia_map_mbq_h, kernel_or_convolver, density_map_g_per_ml=density_map_g_per_ml,
        reference_density_g_per_ml=reference_density_g_per_ml, workers=workers,
        method_map=tia.method_map, route="voxel-kinetics-convolution",
        settings={"kinetics": kinetics, **dict(tia.settings)},
    )
    return VoxelDose(res.dose_gy, res.route, res.engine, res.density_corrected, res.method_map,
                     res.settings, res.references + tia.references)


# ---------------------------------------------------------------------------------------------
# Patient-specific S values
# ---------------------------------------------------------------------------------------------


def patient_specific_s_values(
    label_map,
    kernel,
    voxel_volume_ml: float,
    density_map=None,
    region_labels: Sequence[int] | None = None,
    *,
    reference_density_g_per_ml: float = DEFAULT_REFERENCE_DENSITY_G_PER_ML,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Patient-specific S matrix by kernel convolution (MIRD Pamphlet 17, Bolch et al. 1999).

    For each source region s, a unit of decays (1 Bq s) is spread uniformly over its voxels,
    convolved with the kernel (density-scaled if ``density_map`` is given) and the mean absorbed
    dose in every target region t taken as energy / mass (ICRU Report 85, absorbed dose =
    energy imparted / mass): S(t <- s) = sum_{i in t} D_i m_i / M_t in Gy/(Bq s). One
    convolution per source region, the kernel spectrum computed once.

    For a symmetric kernel in a uniform medium S is symmetric, S(t <- s) = S(s <- t): the
    reciprocity theorem, specific absorbed fractions Phi(t <- s) = phi(t <- s)/m_t are symmetric
    (Loevinger R, Budinger TF, Watson EE, MIRD Primer, 1991; MIRD Pamphlet 21, Bolch et al.
    2009, J Nucl Med 50:477), equivalently phi(t <- s) m_s = phi(s <- t) m_t.

    Parameters
    ----------
    label_map : integer region labels on the grid.
    kernel : odd-shaped kernel (Gy/(Bq s)) or a :class:`KernelConvolver` for this grid.
    voxel_volume_ml : volume of one voxel (mL).
    density_map : None (reference density everywhere), a scalar or a map (g/mL).
    region_labels : the regions (sources and targets), default every non-zero label present.

    Returns
    -------
    (S, masses_g) : S[target, source] in Gy/(Bq s), shape (R, R); region masses in g, (R,).
    """
    lab = np.asarray(label_map)
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"label_map must hold integers, got dtype {lab.dtype}")
    v = _positive(voxel_volume_ml, "voxel_volume_ml")
    rho_ref = _positive(reference_density_g_per_ml, "reference_density_g_per_ml")
    if region_labels is None:
        labels = np.unique(lab)
        labels = labels[labels != 0]
    else:
        labels = np.asarray(region_labels, dtype=np.int64).reshape(-1)
    if labels.size == 0:
        raise InputError("no regions: region_labels is empty (or the label map has only 0)")
    conv = _convolver_for(kernel, lab.shape, workers)
    idx = vk.label_index(lab, labels)
    nreg = labels.size
    counts = np.bincount(idx, minlength=nreg + 1)[:nreg]
    empty = [int(labels[i]) for i in np.flatnonzero(counts == 0)]
    if empty:
        raise InputError(f"regions {empty} have no voxels in the label map")
    rho = rho_ref if density_map is None else _density(density_map, lab.shape, "density_map")
    if np.ndim(rho) == 0:
        masses = counts * float(rho) * v
    else:
        masses = np.bincount(idx, weights=np.asarray(rho, dtype=np.float64).reshape(-1), minlength=nreg + 1)[:nreg] * v
    # Energy per voxel of the density-scaled dose: D_w (rho_ref / rho) x rho V = D_w rho_ref V,
    # so sum_i D_i m_i = rho_ref V sum_i D_w,i whatever the density map.
    s = np.empty((nreg, nreg), dtype=np.float64)
    flat_idx = idx.reshape(lab.shape)
    for j in range(nreg):  # one convolution per source region
        src = (flat_idx == j).astype(np.float64)
        src /= counts[j]
        dw = conv.convolve(src)
        energy = np.bincount(idx, weights=dw.reshape(-1), minlength=nreg + 1)[:nreg] * rho_ref * v
        s[:, j] = energy / masses
    return s, np.asarray(masses, dtype=np.float64)
