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

**DICOM kernels** (any file name; recognised by the ``DICM`` prefix of PS3.10 7.1, or a
``.dcm``/``.dicom`` name). DICOM has no kernel object, so a kernel is carried by an object that
viewers and toolkits already read as a 3D grid:

* an **RT Dose** (PS3.3 A.18; what :func:`write_kernel_dicom` writes): values = stored pixel x
  Dose Grid Scaling (3004,000E); Dose Units (3004,0002) RELATIVE (a kernel is Gy *per decay*, not
  Gy) or GY (then the stated unit must be in Gy per something, e.g. ``Gy/(Bq s)``);
* or any other single- or multi-frame image (e.g. Secondary Capture, Parametric Map): values =
  stored pixel x Rescale Slope + Rescale Intercept (Modality LUT, C.11.1; or the shared Pixel
  Value Transformation functional group), float pixel data as they are.

Voxel size: Pixel Spacing (0028,0030) = (row spacing = dy, column spacing = dx) (C.7.6.2.1.1),
top level or in the shared Pixel Measures functional group; the slice spacing dz from the Grid
Frame Offset Vector (3004,000C; equally spaced) of an RT Dose, or Spacing Between Slices
(0018,0088), or for a single frame Slice Thickness (0018,0050). Array: frames, rows, columns =
``[k, j, i]`` = ``[z, y, x]``. Orientation and position are not used (the kernel lives in index
space, as for NIfTI); :func:`write_kernel_dicom` puts the source voxel at (0, 0, 0) mm.

The unit, nuclide, medium and layout are not DICOM attributes; each is taken from (and, when
several give it, must agree between) the mrtdose private block (group 0077, Private Creator
``MRTDOSE 1``, :mod:`mrtdose.imaging.rtdose`), ``key: value`` items separated by ``;`` or new
lines in Dose Comment (3004,0006) or Image Comments (0020,4000), e.g. ``unit: mGy/(MBq s);
nuclide: Lu-177; medium: soft_tissue; layout: octant``, and the reader's arguments (the case's
``voxel.kernel.unit``). The unit is required (never assumed); layout ``full`` (default: odd
sizes, source voxel at the centre, which must hold the largest value) or ``octant`` (offsets
``0..n-1`` from the source voxel at index 0, expanded with :func:`expand_octant`). A file whose
private block names another quantity (an mrtdose TIA map) is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from pydicom.uid import RTDoseStorage

from mrtdose.errors import InputError
from mrtdose.imaging.dicom_common import READ_ERRORS, read_dataset
from mrtdose.imaging.nifti import load_nifti_arrays, read_sidecar
from mrtdose.imaging.rtdose import (
    P_LAYOUT,
    P_MEDIUM,
    P_NUCLIDE,
    P_QUANTITY,
    P_SOURCE,
    P_UNIT,
    QUANTITY_KERNEL,
    add_real_world_value_mapping,
    build_rtdose_dataset,
    dataset_bytes,
    private_value,
    set_private,
)
from mrtdose.imaging.volume import Volume
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
    unit: str | None = None,
) -> VoxelKernel:
    """Read one Lanconelli et al. 2012 voxel S-value table (module docstring) as a full kernel.

    ``voxel_size_mm``, ``nuclide`` and ``medium`` are needed only for files whose name and title
    lack them; when given they must agree with the file. ``unit``, when given, must be the
    database's mGy/(MBq s).

    Raises
    ------
    InputError
        Naming the file (and line): unreadable, no or wrong unit header, malformed rows, an
        incomplete or duplicated octant, contradictory voxel size, nuclide or medium.
    """
    p = Path(path)
    src = str(p)
    if unit is not None and _unit_factor(unit, src) != GY_PER_BQ_S_PER_MGY_PER_MBQ_S:
        raise InputError(f"unit {unit!r} contradicts the Lanconelli tables' mGy/(MBq s)", source=src, field="unit")
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
    unit: str | None = None,
) -> VoxelKernel:
    """Read a NIfTI voxel kernel with its sidecar JSON (module docstring). ``unit``,
    ``nuclide`` and ``medium`` may be given as arguments instead; where the sidecar has them
    too, they must agree.

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
    side_unit = doc.get("unit")
    if side_unit is not None and (not isinstance(side_unit, str) or not side_unit.strip()):
        raise InputError(f"unit must be a non-empty string, got {side_unit!r}", source=side_src or src, field="unit")
    if not side_unit and not unit:
        raise InputError(
            'kernel unit unknown: NIfTI does not record it; give a sidecar JSON with {"unit": "Gy/(Bq s)", ...}',
            source=side_src or src,
            field="unit",
        )
    factor = _agree(
        "unit",
        {
            "sidecar": _unit_factor(side_unit, side_src) if side_unit else None,
            "argument": _unit_factor(unit, src) if unit else None,
        },
        src,
        close=True,
    )
    unit = side_unit or unit
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
    unit_text = keys.get("unit") or unit
    if not unit_text:
        raise InputError("kernel unit unknown: Interfile does not record it; add 'unit := Gy/(Bq s)' or pass unit=",
                         source=src, field="unit")
    factor = _agree(
        "unit",
        {"header": _unit_factor(keys["unit"], src) if keys.get("unit") else None,
         "argument": _unit_factor(unit, src) if unit else None},
        src,
        close=True,
    )
    header_nuc = keys.get("nuclide") or keys.get("isotope name")
    nuc = _agree(
        "nuclide",
        {"header": normalise_name(header_nuc) if header_nuc else None,
         "argument": normalise_name(nuclide) if nuclide else None},
        src,
    )
    med = _agree("medium", {"header": keys.get("medium") or None, "argument": medium}, src)
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


# --- DICOM kernels -------------------------------------------------------------------------

#: Unit :func:`write_kernel_dicom` writes by default (the unit of the Lanconelli database), and
#: UCUM codes (PS3.16 Section 8.1) of the units it can write.
DICOM_KERNEL_UNIT = "mGy/(MBq s)"
_UCUM = {"gy/(bqs)": "Gy/(Bq.s)", "mgy/(mbqs)": "mGy/(MBq.s)", "gy/(mbqs)": "Gy/(MBq.s)", "mgy/(mbqh)": "mGy/(MBq.h)"}
#: ``key: value`` items in comments: a value ends at ";", a new line, ". " or the end of the text.
_COMMENT_ITEM_RE = re.compile(r"\b(unit|nuclide|medium|layout)\s*[:=]\s*(.+?)\s*(?=;|\n|\.\s|\.?$)", re.IGNORECASE)
_LAYOUTS = ("full", "octant")


def _unit_key(unit: str) -> str:
    return re.sub(r"[\s*.\u00b7\u22c5]", "", unit).lower()


def _comment_items(ds: Any) -> dict[str, dict[str, str]]:
    """``key: value`` items of Dose Comment and Image Comments: {key: {attribute: value}}."""
    out: dict[str, dict[str, str]] = {}
    for kw, label in (("DoseComment", "Dose Comment"), ("ImageComments", "Image Comments")):
        try:
            text = str(ds.get(kw, "") or "")
        except READ_ERRORS:
            continue
        for m in _COMMENT_ITEM_RE.finditer(text):
            out.setdefault(m.group(1).lower(), {}).setdefault(label, m.group(2).strip())
    return out


def _dicom_float(value: Any, src: str, field: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{value!r} is not a number", source=src, field=field) from None
    if not np.isfinite(v):
        raise InputError(f"{value!r} is not finite", source=src, field=field)
    return v


def _functional(ds: Any, seq: str, kw: str) -> Any:
    """``kw`` at the top level, or in the shared functional group ``seq`` (PS3.3 C.7.6.16)."""
    v = ds.get(kw)
    if v is not None:
        return v
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        inner = shared[0].get(seq)
        if inner:
            return inner[0].get(kw)
    return None


def _dicom_voxel_size(ds: Any, nf: int, is_rtdose: bool, src: str) -> tuple[float, float, float]:
    ps = _functional(ds, "PixelMeasuresSequence", "PixelSpacing")
    try:
        ps_a = [float(x) for x in ps] if ps is not None else []
    except (TypeError, ValueError):
        raise InputError(f"Pixel Spacing {ps!r} is not two numbers", source=src, field="PixelSpacing") from None
    if len(ps_a) != 2 or not all(np.isfinite(ps_a)) or min(ps_a) <= 0:
        raise InputError(
            "Pixel Spacing (0028,0030) missing or not two positive numbers: the kernel's voxel size is unknown",
            source=src, field="PixelSpacing",
        )
    dy, dx = ps_a
    candidates: dict[str, float | None] = {}
    if is_rtdose and nf > 1 and ds.get("GridFrameOffsetVector") is not None:
        try:
            g = np.array([float(x) for x in ds.GridFrameOffsetVector], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError("malformed Grid Frame Offset Vector", source=src, field="GridFrameOffsetVector") from None
        if g.shape != (nf,) or not np.all(np.isfinite(g)):
            raise InputError(f"Grid Frame Offset Vector has {g.size} values for {nf} frames", source=src,
                             field="GridFrameOffsetVector")
        step = (g[-1] - g[0]) / (nf - 1)
        if step == 0 or np.max(np.abs(g - g[0] - step * np.arange(nf))) > 1e-3:
            raise InputError("frames are not equally spaced", source=src, field="GridFrameOffsetVector")
        candidates["Grid Frame Offset Vector"] = abs(float(step))
    sbs = _dicom_float(_functional(ds, "PixelMeasuresSequence", "SpacingBetweenSlices"), src, "SpacingBetweenSlices")
    candidates["Spacing Between Slices"] = abs(sbs) if sbs else None
    if nf == 1:
        st = _dicom_float(_functional(ds, "PixelMeasuresSequence", "SliceThickness"), src, "SliceThickness")
        if not candidates["Spacing Between Slices"]:
            candidates["Slice Thickness"] = st if st and st > 0 else None
    dz = _agree("slice spacing", candidates, src, close=True)
    if not dz or dz <= 0:
        raise InputError(
            "slice spacing unknown: give Spacing Between Slices (0018,0088) (or, for an RT Dose, the Grid Frame "
            "Offset Vector; for one frame, Slice Thickness)",
            source=src, field="SpacingBetweenSlices",
        )
    return (float(dx), float(dy), float(dz))


def read_dicom_kernel(
    path: str | Path,
    *,
    unit: str | None = None,
    nuclide: str | None = None,
    medium: str | None = None,
    layout: str | None = None,
) -> VoxelKernel:
    """Read a voxel kernel from one DICOM file (module docstring, "DICOM kernels").

    ``unit``, ``nuclide``, ``medium`` and ``layout`` (``"full"`` or ``"octant"``) are needed only
    where the file does not state them; where it does, they must agree.

    Raises
    ------
    InputError
        Naming the file: unreadable or truncated DICOM, no pixel data, a TIA map or other
        non-kernel quantity, missing or unknown unit (or Dose Units GY with a unit not in Gy),
        missing Pixel Spacing or slice spacing, even size of a full kernel or its maximum off the
        centre, negative values, missing or contradictory nuclide or medium.
    """
    p = Path(path)
    src = str(p)
    ds, _ = read_dataset(p, "kernel")
    quantity = private_value(ds, P_QUANTITY)
    if quantity is not None and quantity != QUANTITY_KERNEL:
        raise InputError(f"this DICOM file holds {quantity.lower().replace('_', ' ')}, not a voxel kernel", source=src,
                         field="quantity")
    sop = str(ds.get("SOPClassUID", "") or "")
    is_rtdose = sop == RTDoseStorage
    items = _comment_items(ds)

    # unit
    unit_sources: dict[str, Any] = {"private block": private_value(ds, P_UNIT), **items.get("unit", {}), "argument": unit}
    unit_sources = {k: v for k, v in unit_sources.items() if v}
    if not unit_sources:
        raise InputError(
            "kernel unit unknown: state it in Dose Comment or Image Comments ('unit: mGy/(MBq s)') or give it "
            "(voxel.kernel.unit); it is never assumed",
            source=src, field="unit",
        )
    factor = _agree("unit", {k: _unit_factor(v, src) for k, v in unit_sources.items()}, src, close=True)
    unit_text = next(iter(unit_sources.values()))
    dose_units = str(ds.get("DoseUnits", "") or "").strip().upper()
    if is_rtdose:
        if dose_units not in ("GY", "RELATIVE"):
            raise InputError(f"Dose Units {dose_units or 'missing'!r}: expected RELATIVE (or GY)", source=src,
                             field="DoseUnits")
        if dose_units == "GY" and not _unit_key(unit_text).startswith("gy/"):
            raise InputError(
                f"Dose Units GY says the values are in Gy, but the kernel unit is {unit_text!r}: use RELATIVE, or a "
                "unit in Gy per decay (Gy/(Bq s), Gy/(MBq s))",
                source=src, field="DoseUnits",
            )

    # pixel values
    try:
        pix = np.asarray(ds.pixel_array)
        rows, cols = int(ds.Rows), int(ds.Columns)
        nf = int(ds.get("NumberOfFrames", 1) or 1)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
    except READ_ERRORS as exc:
        raise InputError(f"pixel data are missing, truncated or corrupt ({type(exc).__name__}: {exc})", source=src,
                         field="PixelData") from None
    if spp != 1 or pix.size != nf * rows * cols:
        raise InputError(f"pixel data hold {pix.size} values in {spp} sample(s), expected {nf} x {rows} x {cols} grey values",
                         source=src, field="PixelData")
    values = pix.reshape(nf, rows, cols).astype(np.float64)
    if is_rtdose:
        scaling = _dicom_float(ds.get("DoseGridScaling"), src, "DoseGridScaling")
        if scaling is None:
            raise InputError("RT Dose without Dose Grid Scaling (3004,000E)", source=src, field="DoseGridScaling")
        if scaling <= 0:  # 0 would silently make an all-zero kernel, < 0 negative S values
            raise InputError(f"Dose Grid Scaling (3004,000E) must be > 0, got {scaling:g}", source=src,
                             field="DoseGridScaling")
        values *= scaling
    else:
        slope = _dicom_float(_functional(ds, "PixelValueTransformationSequence", "RescaleSlope"), src, "RescaleSlope")
        intercept = _dicom_float(_functional(ds, "PixelValueTransformationSequence", "RescaleIntercept"), src,
                                 "RescaleIntercept")
        values = values * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
    size = _dicom_voxel_size(ds, nf, is_rtdose, src)

    # layout, nuclide, medium
    lay = _agree("layout", {"private block": (private_value(ds, P_LAYOUT) or "").lower() or None,
                            **{k: v.lower() for k, v in items.get("layout", {}).items()},
                            "argument": layout.lower() if layout else None}, src) or "full"
    if lay not in _LAYOUTS:
        raise InputError(f"layout {lay!r} must be 'full' or 'octant'", source=src, field="layout")
    nuc = _agree("nuclide", {k: normalise_name(v) for k, v in
                             {"private block": private_value(ds, P_NUCLIDE), **items.get("nuclide", {}),
                              "argument": nuclide}.items() if v}, src)
    med = _agree("medium", {k: v for k, v in {"private block": private_value(ds, P_MEDIUM), **items.get("medium", {}),
                                                "argument": medium}.items() if v}, src)
    if nuc is None or med is None:
        missing = " and ".join(n for n, v in (("nuclide", nuc), ("medium", med)) if v is None)
        raise InputError(f"{missing} not given: state it in the file ('nuclide: Lu-177; medium: soft_tissue' in Dose or "
                         "Image Comments) or pass it", source=src, field=missing)
    if lay == "octant":
        values = expand_octant(values)
    else:
        if any(n % 2 == 0 for n in values.shape):
            raise InputError(
                f"kernel shape {values.shape} (frames, rows, columns) must be odd along every axis with the source "
                "voxel at the centre; an octant (source voxel first) needs 'layout: octant'",
                source=src, field="layout",
            )
        centre = values[tuple(n // 2 for n in values.shape)]
        if values.size and centre < values.max() * (1 - 1e-9):
            raise InputError(
                "the largest value is not at the centre voxel: not a centred kernel (an octant needs 'layout: octant')",
                source=src, field="layout",
            )
    try:
        return VoxelKernel(
            array_gy_per_bq_s=values * factor,
            voxel_size_mm=size,
            nuclide=nuc,
            medium=str(med),
            source=src,
            description=f"voxel kernel read from DICOM {p.name} ({'RT Dose' if is_rtdose else 'image'}, {unit_text}, "
            f"{lay})" + (f"; written from: {origin}" if (origin := private_value(ds, P_SOURCE)) else ""),
        )
    except InputError as exc:
        raise InputError(exc.detail, source=src, field=exc.field) from None


def write_kernel_dicom(kernel: VoxelKernel, *, unit: str = DICOM_KERNEL_UNIT, content_time: Any = None) -> bytes:
    """The kernel as a DICOM RT Dose file (PS3.10 bytes) that :func:`read_dicom_kernel` reads
    back: Dose Units RELATIVE, stored value x Dose Grid Scaling = S in ``unit`` (default
    mGy/(MBq s)), the full kernel with the source voxel at the centre and at (0, 0, 0) mm, the
    unit, nuclide, medium and layout in Dose Comment / Image Comments and the private block, the
    unit also as UCUM in a Real World Value Mapping item (see :mod:`mrtdose.imaging.rtdose`).
    No patient (empty Patient ID, Type 2) and a new Frame of Reference.

    Stored precision: 32-bit unsigned values with the maximum near 2^32 - 1, so every value is
    within DoseGridScaling / 2 = max / (2 (2^32 - 1)) (1.2e-10 of the maximum) of the original.
    """
    factor = _unit_factor(unit, None)
    nz, ny, nx = kernel.shape
    dx, dy, dz = kernel.voxel_size_mm
    vol = Volume(
        array=kernel.array_gy_per_bq_s / factor,
        spacing_mm=kernel.voxel_size_mm,
        origin_mm=(-(nx // 2) * dx, -(ny // 2) * dy, -(nz // 2) * dz),
        unit=unit,
        modality="RTDOSE",
    )
    keys = f"unit: {unit}; nuclide: {kernel.nuclide}; medium: {kernel.medium}; layout: full"
    long_text = (
        f"Voxel S-value kernel (MIRD Pamphlet 17): mean absorbed dose in a target voxel per decay in the source voxel; "
        f"stored value x Dose Grid Scaling (3004,000E) = S in {unit}. Source voxel at the centre frame, row and column, "
        f"at (0, 0, 0) mm. Not a patient dose.\n{keys}\nSource: {kernel.source}\n"
    )
    ds, scaling = build_rtdose_dataset(
        vol, None, patient_id="", require_patient_id=False,
        series_description=f"mrtdose voxel kernel {kernel.nuclide} {kernel.medium} {dx:g}x{dy:g}x{dz:g} mm",
        dose_units="RELATIVE", value_name="kernel", value_unit=unit, dose_summation_type="PLAN",
        allow_missing_reference=True, dose_comment=f"voxel S-values; unit: {unit}", image_comments=long_text,
        content_time=content_time,
    )
    set_private(ds, {
        P_QUANTITY: ("LO", QUANTITY_KERNEL), P_UNIT: ("LO", unit), P_NUCLIDE: ("LO", kernel.nuclide),
        P_MEDIUM: ("LO", kernel.medium[:64]), P_LAYOUT: ("CS", "FULL"), P_SOURCE: ("LT", kernel.source[:10240]),
    })
    ucum = _UCUM.get(_unit_key(unit))
    if ucum:
        add_real_world_value_mapping(ds, scaling, ucum=ucum, meaning=unit, label="S", explanation="voxel S-value")
    return dataset_bytes(ds)


# --- dispatch ------------------------------------------------------------------------------

#: Kernel file formats, as :func:`kernel_format` names them.
KERNEL_FORMATS = ("lanconelli", "nifti", "interfile", "dicom")


def kernel_format(path: str | Path) -> str:
    """The format of a kernel file: ``"dicom"`` when it has the PS3.10 preamble and ``DICM``
    prefix (whatever its name) or a ``.dcm``/``.dicom`` name; else by extension: ``.txt`` ->
    ``"lanconelli"``, ``.nii``/``.nii.gz`` -> ``"nifti"``, ``.hv``/``.h33`` -> ``"interfile"``."""
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", source=str(p))
    try:
        with p.open("rb") as f:
            head = f.read(132)
    except OSError as exc:
        raise InputError(f"cannot read kernel file: {exc.strerror or exc}", source=str(p)) from None
    if len(head) == 132 and head[128:132] == b"DICM":  # PS3.10 7.1
        return "dicom"
    name = p.name.lower()
    if name.endswith((".dcm", ".dicom")):
        return "dicom"
    if name.endswith(".txt"):
        return "lanconelli"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".hv", ".h33")):
        return "interfile"
    raise InputError(
        "unknown kernel format: expected a Lanconelli .txt table, a NIfTI .nii/.nii.gz, an Interfile .hv/.h33 header "
        "or a DICOM file",
        source=str(p),
    )


def read_voxel_kernel(path: str | Path, **kwargs: Any) -> VoxelKernel:
    """Read a kernel file of any supported format (:func:`kernel_format`: DICOM by content,
    the others by extension); keyword arguments (``unit``, ``nuclide``, ``medium`` for all;
    ``voxel_size_mm`` for Lanconelli tables, ``sidecar`` for NIfTI, ``layout`` for DICOM) go to
    that reader, where each must agree with what the file says."""
    fmt = kernel_format(path)
    reader = {"lanconelli": read_lanconelli_kernel, "nifti": read_nifti_kernel,
              "interfile": read_interfile_kernel, "dicom": read_dicom_kernel}[fmt]
    return reader(path, **kwargs)
