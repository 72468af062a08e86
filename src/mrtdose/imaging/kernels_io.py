"""Read user-supplied voxel S-value kernels into :class:`~mrtdose.physics.voxel_kernel_type.VoxelKernel`.

Formats
-------
**Lanconelli et al. 2012 text tables** (N. Lanconelli et al., "A free database of radionuclide
voxel S values for the dosimetry of nonuniform activity distributions", Phys. Med. Biol. 57
(2012) 517-533; GATE Monte Carlo, seven nuclides, soft tissue and compact bone, cubic voxels
2.21-9.28 mm). One file per nuclide, medium and voxel size, named
``<A><Symbol><size>mm<soft|bone>.txt`` (e.g. ``177Lu4.8mmsoft.txt``); Latin-1 text, CRLF:

* line 1, a title: ``Lu177 - 4.8mm - Soft tissue`` (or ``... - Bone compact``);
* line 2, a header: ``i  j  k  S [mGy/(MBq s)]`` (the dot of "MBq.s" is a non-ASCII byte, which
  differs between files); in some files (4.8 mm bone) just ``i  j  k``: the whole database is in
  mGy/(MBq s), so that unit is used (and said in the description); any other unit is refused;
* then one row ``i j k S`` per voxel of one octant, ``i, j, k = 0..n-1`` (n = 6: 216 rows):
  the S-value from the source voxel (0, 0, 0) to the voxel at offset (i, j, k), in mGy/(MBq s).

The octant is expanded by the symmetry of a point source in a homogeneous medium,
``S(+-i, +-j, +-k) = S(i, j, k)``, to the full ``(2n-1)^3`` kernel (11^3), with ``i, j, k`` along
``x, y, z`` (array ``[k, j, i]``); and converted: 1 mGy/(MBq s) = 1e-3 Gy / 1e6 Bq s = 1e-9 Gy/(Bq s).
The voxel size comes from the title and the file name (which must agree) or, when neither has
it, from ``voxel_size_mm=``; a ``voxel_size_mm=`` that contradicts the file is an error. Note
(reference README, checked in tests/test_kernels_io.py): the tables appear to carry the beta
spectrum and the photons absorbed within the 11^3 box, but not conversion and Auger electrons.

**NIfTI kernels** (``.nii``, ``.nii.gz``): the array (odd size, source voxel at the centre),
voxel size from the transform (pixdim), and a sidecar JSON (``kernel.json`` beside
``kernel.nii.gz``)::

    {"unit": "Gy/(Bq s)", "nuclide": "Lu-177", "medium": "soft_tissue", "description": "..."}

``unit`` is required; accepted: ``Gy/(Bq s)`` (= Gy per decay), ``mGy/(MBq s)`` (x 1e-9),
``Gy/(MBq s)`` (x 1e-6), ``mGy/(MBq h)`` (x 1e-3 / 3.6e9: 1 MBq h = 3.6e9 decays). The kernel is
taken in its index space (array ``[k, j, i]``); its orientation in the patient is irrelevant for
the symmetric kernels of a homogeneous medium.

**Interfile kernels** (``.hv``, ``.h33``; Interfile 3.3, Todd-Pokropek A, Cradduck TD, Deconinck
F. A file format for the exchange of nuclear medicine image data: a specification of Interfile
version 3.3. Nucl Med Commun 1992;13:673-699, as also written by STIR): a text header of
``key := value`` lines (keys case-insensitive, a leading ``!`` ignored) with ``name of data file``,
``matrix size [1..3]`` (x, y, z), ``scaling factor (mm/pixel) [1..3]``, ``number format``
(``float``, ``short float``, ``long float``, ``unsigned integer``, ``signed integer``),
``number of bytes per pixel``, ``imagedata byte order`` and optionally ``data offset in bytes``.
Interfile has no key for the kernel's unit: it is taken from a ``unit`` key in the header (an
mrtdose extension) or the ``unit=`` argument, never assumed. Data are x fastest, then y, then z.

DICOM kernels are not supported (no standard IOD for them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mrtdose.errors import InputError
from mrtdose.imaging.nifti import load_nifti_arrays, read_sidecar
from mrtdose.physics.nuclides import normalise_name
from mrtdose.physics.voxel_kernel_type import VoxelKernel

#: mGy/(MBq s) -> Gy/(Bq s): 1e-3 Gy per 1e6 Bq s.
GY_PER_BQ_S_PER_MGY_PER_MBQ_S = 1e-9

LANCONELLI_2012 = (
    "Lanconelli N, Pacilio M, Lo Meo S, et al. A free database of radionuclide voxel S values for the "
    "dosimetry of nonuniform activity distributions. Phys Med Biol 2012;57:517-533"
)

#: Lanconelli medium labels (file name suffix, title text) -> mrtdose material names
#: (:data:`mrtdose.physics.attenuation.MATERIALS`).
_MEDIA = {"soft": "soft_tissue", "soft tissue": "soft_tissue", "bone": "cortical_bone", "bone compact": "cortical_bone"}

#: Kernel units (normalised: lower case, no spaces, '*' '.' and the middle dot removed) -> factor to Gy/(Bq s).
_UNITS = {
    "gy/(bqs)": 1.0,
    "gy/bq/s": 1.0,
    "gy/decay": 1.0,
    "mgy/(mbqs)": 1e-9,
    "mgy/mbq/s": 1e-9,
    "gy/(mbqs)": 1e-6,
    "mgy/(mbqh)": 1e-3 / 3.6e9,
}

_FILE_RE = re.compile(r"^(\d{1,3})([A-Za-z]{1,2})(\d+(?:\.\d+)?)mm(soft|bone)\.txt$", re.IGNORECASE)
_TITLE_RE = re.compile(r"^([A-Za-z]{1,2}\d{1,3}[a-z]?)\s*-\s*(\d+(?:\.\d+)?)\s*mm\s*-\s*(.+?)\s*$")
_HEADER_RE = re.compile(r"^i\s+j\s+k\b(.*)$", re.IGNORECASE)
_HEADER_UNIT_RE = re.compile(r"mGy\s*/\s*\(\s*MBq.{0,3}?s\s*\)")


def _unit_factor(unit: str, source: str | None) -> float:
    key = re.sub(r"[\s*.\u00b7\u22c5]", "", unit).lower()
    if key not in _UNITS:
        raise InputError(
            f"unknown kernel unit {unit!r}; use 'Gy/(Bq s)', 'mGy/(MBq s)', 'Gy/(MBq s)' or 'mGy/(MBq h)'",
            source=source,
            field="unit",
        )
    return _UNITS[key]


def _agree(name: str, values: dict[str, Any], source: str, close: bool = False) -> Any:
    """The one value that every given origin agrees on (``None`` when none gives one)."""
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return None
    first = next(iter(given.values()))
    for origin, v in given.items():
        same = abs(float(v) - float(first)) <= 1e-9 * abs(float(first)) if close else v == first
        if not same:
            listing = ", ".join(f"{o}: {val!r}" for o, val in given.items())
            raise InputError(f"{name} disagrees between sources ({listing})", source=source, field=name)
    return first


def expand_octant(octant: np.ndarray) -> np.ndarray:
    """Full kernel from its non-negative octant ``octant[k, j, i]`` (offsets ``0..n-1``) by
    ``S(+-i, +-j, +-k) = S(i, j, k)``: shape ``(2n_z-1, 2n_y-1, 2n_x-1)``, source at the centre."""
    o = np.asarray(octant)
    idx = [np.abs(np.arange(-(n - 1), n)) for n in o.shape]
    return o[np.ix_(*idx)]


def read_lanconelli_kernel(
    path: str | Path,
    *,
    voxel_size_mm: float | None = None,
    nuclide: str | None = None,
    medium: str | None = None,
) -> VoxelKernel:
    """Read one Lanconelli et al. 2012 voxel S-value table (module docstring) as a full kernel.

    ``voxel_size_mm``, ``nuclide`` and ``medium`` are needed only for files whose name and title
    lack them; when given they must agree with the file.

    Raises
    ------
    InputError
        Naming the file (and line): unreadable, no or wrong unit header, malformed rows, an
        incomplete or duplicated octant, contradictory voxel size, nuclide or medium.
    """
    p = Path(path)
    src = str(p)
    try:
        text = p.read_bytes().decode("latin-1")  # the header's micro/middle-dot byte is not UTF-8
    except OSError as exc:
        raise InputError(f"cannot read kernel file: {exc.strerror or exc}", source=src) from None
    lines = [(n + 1, ln.strip()) for n, ln in enumerate(text.splitlines()) if ln.strip()]
    if len(lines) < 3:
        raise InputError("too short for a voxel S-value table (title, header, rows)", source=src)
    (_, title), (hline, header) = lines[0], lines[1]
    hm = _HEADER_RE.match(header)
    if not hm:
        raise InputError(
            f"line {hline}: expected a header 'i j k S [mGy/(MBq s)]', got {header[:60]!r}", source=src, field="header"
        )
    unit_note = ""
    if hm.group(1).strip():
        if not _HEADER_UNIT_RE.search(hm.group(1)):
            raise InputError(
                f"line {hline}: S column unit is not mGy/(MBq s): {header[:60]!r}", source=src, field="header"
            )
    else:  # e.g. the 4.8 mm bone tables: 'i j k' only; the database is in mGy/(MBq s) throughout
        unit_note = "; header without unit, mGy/(MBq s), the unit of every other table of the database, applies"
    tm = _TITLE_RE.match(title)
    fm = _FILE_RE.match(p.name)
    size = _agree(
        "voxel_size_mm",
        {
            "title": float(tm.group(2)) if tm else None,
            "file name": float(fm.group(3)) if fm else None,
            "argument": None if voxel_size_mm is None else float(voxel_size_mm),
        },
        src,
        close=True,
    )
    if size is None:
        raise InputError("voxel size not in the title or file name; pass voxel_size_mm=", source=src, field="voxel_size_mm")
    nuc = _agree(
        "nuclide",
        {
            "title": normalise_name(tm.group(1)) if tm else None,
            "file name": normalise_name(fm.group(1) + fm.group(2)) if fm else None,
            "argument": None if nuclide is None else normalise_name(nuclide),
        },
        src,
    )
    if nuc is None:
        raise InputError("nuclide not in the title or file name; pass nuclide=", source=src, field="nuclide")
    med = _agree(
        "medium",
        {
            "title": _MEDIA.get(tm.group(3).lower()) if tm else None,
            "file name": _MEDIA.get(fm.group(4).lower()) if fm else None,
            "argument": medium,
        },
        src,
    )
    if med is None:
        raise InputError("medium not in the title or file name; pass medium=", source=src, field="medium")

    rows = []
    for n, ln in lines[2:]:
        parts = ln.split()
        if len(parts) != 4:
            raise InputError(f"line {n}: expected 4 columns 'i j k S', got {ln[:60]!r}", source=src)
        try:
            i, j, k = (int(x) for x in parts[:3])
            s = float(parts[3])
        except ValueError:
            raise InputError(f"line {n}: not 'integer integer integer number': {ln[:60]!r}", source=src) from None
        if min(i, j, k) < 0 or not np.isfinite(s) or s < 0:
            raise InputError(f"line {n}: indices must be >= 0 and S finite and >= 0: {ln[:60]!r}", source=src)
        rows.append((i, j, k, s))
    idx = np.array([r[:3] for r in rows], dtype=np.int64)
    vals = np.array([r[3] for r in rows], dtype=np.float64)
    nmax = idx.max(axis=0) + 1  # (n_i, n_j, n_k)
    octant = np.full((nmax[2], nmax[1], nmax[0]), np.nan)
    octant[idx[:, 2], idx[:, 1], idx[:, 0]] = vals
    n_unique = len({tuple(r) for r in idx.tolist()})
    if n_unique != len(rows):
        raise InputError(f"{len(rows) - n_unique} duplicated (i, j, k) row(s)", source=src)
    if np.isnan(octant).any():
        raise InputError(
            f"octant incomplete: {int(np.isnan(octant).sum())} of {octant.size} (i, j, k) combinations missing "
            "(file truncated?)",
            source=src,
        )
    full = expand_octant(octant) * GY_PER_BQ_S_PER_MGY_PER_MBQ_S
    return VoxelKernel(
        array_gy_per_bq_s=full,
        voxel_size_mm=(size, size, size),
        nuclide=nuc,
        medium=med,
        source=f"{src} ({LANCONELLI_2012})",
        description=(
            f"{nuc} voxel S-values in {med}, {size:g} mm cubic voxels, {full.shape[0]}^3 kernel expanded by "
            f"symmetry from the published octant (GATE Monte Carlo; the tables appear to include beta "
            f"particles and photons within the kernel but not conversion or Auger electrons); title {title!r}{unit_note}"
        ),
    )


def read_nifti_kernel(
    path: str | Path,
    sidecar: str | Path | Mapping[str, Any] | None = None,
    *,
    nuclide: str | None = None,
    medium: str | None = None,
) -> VoxelKernel:
    """Read a NIfTI voxel kernel with its sidecar JSON (module docstring).

    Raises
    ------
    InputError
        Naming the file: unreadable or corrupt NIfTI, even size, negative or non-finite values,
        missing or unknown unit, missing or contradictory nuclide or medium.
    """
    p = Path(path)
    src = str(p)
    array, lps, _ = load_nifti_arrays(p)
    if array.dtype.kind not in "iuf":
        raise InputError(f"kernel values must be numeric, got dtype {array.dtype}", source=src)
    doc, side_src = read_sidecar(p, sidecar)
    unit = doc.get("unit")
    if not isinstance(unit, str) or not unit.strip():
        raise InputError(
            'kernel unit unknown: NIfTI does not record it; give a sidecar JSON with {"unit": "Gy/(Bq s)", ...}',
            source=side_src or src,
            field="unit",
        )
    factor = _unit_factor(unit, side_src)
    nuc = _agree(
        "nuclide",
        {
            "sidecar": normalise_name(doc["nuclide"]) if doc.get("nuclide") else None,
            "argument": normalise_name(nuclide) if nuclide else None,
        },
        src,
    )
    med = _agree("medium", {"sidecar": doc.get("medium") or None, "argument": medium}, src)
    if nuc is None or med is None:
        missing = " and ".join(n for n, v in (("nuclide", nuc), ("medium", med)) if v is None)
        raise InputError(f"{missing} not given: put it in the sidecar or pass it as an argument", source=src, field=missing)
    spacing = tuple(float(v) for v in np.linalg.norm(lps[:3, :3], axis=0))
    values = np.asarray(array, dtype=np.float64) * factor
    try:
        return VoxelKernel(
            array_gy_per_bq_s=values,
            voxel_size_mm=spacing,
            nuclide=nuc,
            medium=str(med),
            source=src,
            description=str(doc.get("description", "")) or f"voxel kernel read from {p.name} ({unit})",
        )
    except InputError as exc:
        raise InputError(exc.detail, source=src, field=exc.field) from None


_INTERFILE_FORMATS = {
    ("float", 4): "f4", ("short float", 4): "f4", ("float", 8): "f8", ("long float", 8): "f8",
    ("unsigned integer", 1): "u1", ("unsigned integer", 2): "u2", ("unsigned integer", 4): "u4",
    ("signed integer", 1): "i1", ("signed integer", 2): "i2", ("signed integer", 4): "i4",
}


def read_interfile_kernel(
    path: str | Path, *, unit: str | None = None, nuclide: str | None = None, medium: str | None = None
) -> VoxelKernel:
    """Read an Interfile 3.3 voxel kernel (module docstring).

    Raises
    ------
    InputError
        Naming the header: unreadable header, missing keys, missing or short data file, unknown
        number format, missing unit, nuclide or medium.
    """
    p = Path(path)
    src = str(p)
    try:
        text = p.read_text(encoding="latin-1")
    except OSError as exc:
        raise InputError(f"cannot read Interfile header: {exc.strerror}", source=src) from None
    keys: dict[str, str] = {}
    for line in text.splitlines():
        if ":=" not in line:
            continue
        k, v = line.split(":=", 1)
        keys[re.sub(r"\s+", " ", k.strip().lstrip("!").strip().lower())] = v.strip()

    def need(k: str) -> str:
        if not keys.get(k):
            raise InputError(f"Interfile key '{k}' missing", source=src, field=k)
        return keys[k]

    def num(k: str, kind=float):
        v = need(k)
        try:
            return kind(float(v)) if kind is int else kind(v)
        except ValueError:
            raise InputError(f"'{v}' is not a number", source=src, field=k) from None

    shape_xyz = [num(f"matrix size [{i}]", int) for i in (1, 2, 3)]
    size_xyz = tuple(num(f"scaling factor (mm/pixel) [{i}]") for i in (1, 2, 3))
    fmt = (need("number format").lower(), num("number of bytes per pixel", int))
    if fmt not in _INTERFILE_FORMATS:
        raise InputError(f"unsupported number format {fmt[0]!r} with {fmt[1]} bytes per pixel", source=src, field="number format")
    order = keys.get("imagedata byte order", "LITTLEENDIAN").upper()
    if order not in ("LITTLEENDIAN", "BIGENDIAN"):
        raise InputError(f"unknown byte order {order!r}", source=src, field="imagedata byte order")
    dtype = np.dtype(("<" if order == "LITTLEENDIAN" else ">") + _INTERFILE_FORMATS[fmt])
    data_path = p.parent / need("name of data file")
    offset = int(float(keys.get("data offset in bytes", "0")))
    n = int(np.prod(shape_xyz))
    try:
        raw = data_path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read data file {data_path.name}: {exc.strerror}", source=src, field="name of data file") from None
    if len(raw) < offset + n * dtype.itemsize:
        raise InputError(
            f"data file {data_path.name} has {len(raw)} bytes; the header needs {offset + n * dtype.itemsize}",
            source=src, field="matrix size",
        )
    array = np.frombuffer(raw, dtype=dtype, count=n, offset=offset).reshape(shape_xyz[::-1]).astype(np.float64)
    unit_text = unit or keys.get("unit")
    if not unit_text:
        raise InputError("kernel unit unknown: Interfile does not record it; add 'unit := Gy/(Bq s)' or pass unit=",
                         source=src, field="unit")
    factor = _unit_factor(unit_text, src)
    nuc = nuclide or keys.get("nuclide") or keys.get("isotope name")
    med = medium or keys.get("medium")
    if not nuc or not med:
        missing = " and ".join(k for k, v in (("nuclide", nuc), ("medium", med)) if not v)
        raise InputError(f"{missing} not given: add it to the header or pass it as an argument", source=src, field=missing)
    try:
        return VoxelKernel(
            array_gy_per_bq_s=array * factor,
            voxel_size_mm=size_xyz,
            nuclide=normalise_name(nuc),
            medium=str(med),
            source=src,
            description=f"voxel kernel read from Interfile {p.name} ({unit_text})",
        )
    except InputError as exc:
        raise InputError(exc.detail, source=src, field=exc.field) from None


def read_voxel_kernel(path: str | Path, **kwargs: Any) -> VoxelKernel:
    """Read a kernel file, choosing the reader by extension: ``.txt`` -> Lanconelli table,
    ``.nii``/``.nii.gz`` -> NIfTI, ``.hv``/``.h33`` -> Interfile; keyword arguments go to that
    reader."""
    name = Path(path).name.lower()
    if name.endswith(".txt"):
        return read_lanconelli_kernel(path, **kwargs)
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti_kernel(path, **kwargs)
    if name.endswith((".hv", ".h33")):
        return read_interfile_kernel(path, **kwargs)
    raise InputError(
        "unknown kernel format: expected a Lanconelli .txt table, a NIfTI .nii/.nii.gz or an Interfile .hv/.h33 header",
        source=str(path),
    )
