"""Optional deep-learning organ segmentation of a CT with TotalSegmentator.

TotalSegmentator (Wasserthal et al. 2023, "TotalSegmentator: robust segmentation of 104
anatomic structures in CT images", Radiol Artif Intell 5:e230024; ``pip install
TotalSegmentator``, with PyTorch) is an nnU-Net model that labels organs in a CT. It is an
*extra*: mrtdose never requires it, and this module only imports it when asked to run it.

What this module does
---------------------
:func:`segment_ct` writes the CT as NIfTI (:func:`mrtdose.imaging.nifti.write_nifti`), runs
TotalSegmentator on it (its Python API, ``totalsegmentator.python_api.totalsegmentator`` with
``ml=True``: one multilabel NIfTI), reads the result back (:func:`read_totalsegmentator_output`)
and returns one boolean mask per TotalSegmentator class name on the CT's grid.
:func:`read_totalsegmentator_output` also reads an output computed elsewhere (e.g. on a GPU
workstation) in either of TotalSegmentator's documented output forms:

* a **multilabel NIfTI** (``--ml``): integer labels on the input CT's grid. The label-to-class
  table is taken from the file's NIfTI header extension, which TotalSegmentator writes as an XML
  ``CaretExtension`` with a ``LabelTable`` of ``<Label Key="id">class name</Label>`` entries;
  without it, from the installed package's table for the task
  (``totalsegmentator.map_to_binary.class_map[task]``); with neither, the read fails rather than
  guess class numbers.
* a **folder of per-class NIfTI files** (the default output): ``<class name>.nii.gz``, each a
  binary mask on the input grid.

An output that is not on the CT's grid (e.g. made from another export of the same CT) is
resampled onto it with nearest-neighbour sampling in patient coordinates
(:func:`mrtdose.imaging.resample.resample`), and the method text says so.

What is tested, and what is not
-------------------------------
The wiring (writing the CT, calling a runner, reading TotalSegmentator's output format, class
tables, classes to regions) is tested with an injected runner that writes a multilabel NIfTI in
TotalSegmentator's format from a virtual patient's known anatomy, and the error raised when the
package is absent is tested. **The real network run is not tested here** (neither the package
nor its weights are installed in the test environment); its accuracy is the model's, and every
automatic segmentation must be reviewed before it is used for dosimetry.

Runner hook
-----------
``RUNNER`` (module level) or the ``runner=`` argument replaces the real TotalSegmentator: a
callable ``runner(ct_nifti: Path, output: Path, task: str, classes: list[str] | None, fast: bool)``
that writes the multilabel NIfTI (or a folder of per-class files) at ``output``.

Notes for deployment: TotalSegmentator downloads its weights on first use (network access) or
imports them offline (its ``totalseg_import_weights`` command); it may send anonymous usage
statistics unless switched off as its README describes. Only the CT leaves mrtdose, written to a
temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import importlib.util
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from mrtdose.errors import InputError
from mrtdose.imaging.nifti import load_nifti_arrays, write_nifti
from mrtdose.imaging.volume import Volume

#: How to install the extra (quoted in every error about it).
INSTALL_HINT = (
    "pip install TotalSegmentator (it needs PyTorch; the network weights are downloaded on first use, or imported "
    "offline with its totalseg_import_weights command)"
)

#: Reference quoted in the provenance.
REFERENCE = "Wasserthal et al. 2023, TotalSegmentator, Radiol Artif Intell 5:e230024"

Runner = Callable[[Path, Path, str, "list[str] | None", bool], None]

#: Replaces the real TotalSegmentator when set (tests, integrations); see the module docstring.
RUNNER: Runner | None = None


@dataclass(frozen=True)
class Segmentation:
    """Masks by TotalSegmentator class name (boolean, on the CT grid) and how they were made."""

    masks: dict[str, np.ndarray]
    labels: dict[int, str] = field(default_factory=dict)
    method: str = ""
    software: str = ""


def totalsegmentator_version() -> str | None:
    """The installed TotalSegmentator's version, or ``None`` when the package is not installed."""
    if importlib.util.find_spec("totalsegmentator") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("TotalSegmentator")
    except PackageNotFoundError:  # importable but not installed as a distribution (source tree)
        return "unknown version"


def require_totalsegmentator(field: str | None = None) -> str:
    """The installed version, or :class:`InputError` naming ``field`` and how to install it."""
    try:
        v = totalsegmentator_version()
    except (ImportError, ValueError):  # a broken or shadowed installation
        v = None
    if v is None:
        raise InputError(
            f"automatic segmentation needs the optional TotalSegmentator package, which is not installed: {INSTALL_HINT}; "
            "or give the regions as an RTSTRUCT, SEG or label map",
            field=field,
        )
    return v


def _default_runner(ct_nifti: Path, output: Path, task: str, classes: list[str] | None, fast: bool,
                    field: str | None = None) -> None:
    require_totalsegmentator(field)
    try:
        from totalsegmentator.python_api import totalsegmentator
    except ImportError as exc:
        raise InputError(f"TotalSegmentator cannot be imported ({exc}): {INSTALL_HINT}", field=field) from None
    kwargs = {"ml": True, "task": task, "fast": fast, "quiet": True}
    if classes and task == "total":
        kwargs["roi_subset"] = list(classes)
    try:
        totalsegmentator(str(ct_nifti), str(output), **kwargs)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a third-party run: report, do not crash
        raise InputError(
            f"TotalSegmentator failed ({type(exc).__name__}: {exc}); check that its weights for task {task!r} are "
            f"present ({INSTALL_HINT})",
            field=field,
        ) from exc


def label_table_from_extensions(header) -> dict[int, str] | None:
    """The label table TotalSegmentator stores in a NIfTI header extension (module docstring),
    or ``None`` when the header has none."""
    for ext in getattr(header, "extensions", []) or []:
        try:
            content = ext.get_content()
        except Exception:  # noqa: BLE001 - an unrelated, undecodable extension
            continue
        if isinstance(content, (bytes, bytearray)):
            content = bytes(content).decode("utf-8", "replace")
        if not isinstance(content, str) or "LabelTable" not in content:
            continue
        try:
            root = ET.fromstring(content.strip().rstrip("\x00").strip())
        except ET.ParseError:
            continue
        table: dict[int, str] = {}
        for lab in root.iter("Label"):
            key = lab.get("Key")
            name = (lab.text or "").strip()
            if key is None or not name:
                continue
            try:
                table[int(key)] = name
            except ValueError:
                continue
        if table:
            return table
    return None


def _package_class_map(task: str) -> dict[int, str] | None:
    if importlib.util.find_spec("totalsegmentator") is None:
        return None
    try:
        from totalsegmentator.map_to_binary import class_map
    except ImportError:
        return None
    table = class_map.get(task)
    return {int(k): str(v) for k, v in table.items()} if table else None


def _on_grid(array: np.ndarray, lps: np.ndarray, reference: Volume, src: str) -> tuple[np.ndarray, bool]:
    """``array`` (integer labels, geometry ``lps``) on ``reference``'s grid; True when resampled."""
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    vol = Volume(array=array, spacing_mm=tuple(spacing), origin_mm=tuple(lps[:3, 3]), direction=lps[:3, :3] / spacing,
                 unit="1", source_files=(src,))
    if vol.shape == reference.shape and vol.same_grid(reference):
        return np.asarray(array), False
    from mrtdose.imaging.resample import resample

    return np.asarray(resample(vol, reference, interpolation="nearest").array), True


def read_totalsegmentator_output(
    path: str | Path,
    reference: Volume,
    *,
    task: str = "total",
    classes: Iterable[str] | None = None,
    field: str | None = None,
) -> Segmentation:
    """Masks (by class name, on ``reference``'s grid) from TotalSegmentator's output at ``path``:
    a multilabel NIfTI or a folder of ``<class>.nii.gz`` files (module docstring).

    ``classes``: only these (all classes when ``None``). A requested class absent from a folder of
    per-class files gets an empty mask (the caller decides whether that is an error); absent from
    a multilabel file's label table, it is an :class:`InputError`.
    """
    p = Path(path)
    src = str(p)
    wanted = None if classes is None else list(dict.fromkeys(classes))
    resampled = False
    masks: dict[str, np.ndarray] = {}
    if p.is_dir():
        files = {f.name[: -len(".nii.gz")] if f.name.endswith(".nii.gz") else f.stem: f
                 for f in sorted(p.iterdir()) if f.name.endswith((".nii.gz", ".nii"))}
        if not files:
            raise InputError("no NIfTI files in the TotalSegmentator output folder", source=src, field=field)
        for name in wanted if wanted is not None else list(files):
            if name not in files:
                masks[name] = np.zeros(reference.shape, dtype=bool)
                continue
            arr, lps, _ = load_nifti_arrays(files[name])
            on, r = _on_grid(np.asarray(arr) > 0.5, lps, reference, str(files[name]))
            resampled |= r
            masks[name] = np.asarray(on, dtype=bool)
        table: dict[int, str] = {}
        form = "one NIfTI per class"
    else:
        arr, lps, hdr = load_nifti_arrays(p)
        if np.asarray(arr).dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise InputError("the label map has NaN or infinite values", source=src, field=field)
        labels = np.rint(np.asarray(arr)).astype(np.int32)
        table_ext = label_table_from_extensions(hdr)
        table = table_ext or _package_class_map(task) or {}
        if not table:
            raise InputError(
                f"the multilabel file has no label table (TotalSegmentator writes one in the NIfTI header extension) and "
                f"TotalSegmentator is not installed to look up the class numbers of task {task!r}: {INSTALL_HINT}",
                source=src, field=field,
            )
        labels, resampled = _on_grid(labels, lps, reference, src)
        by_name: dict[str, list[int]] = {}
        for k, v in table.items():
            by_name.setdefault(v, []).append(k)
        unknown = [n for n in (wanted or []) if n not in by_name]
        if unknown:
            raise InputError(
                f"class(es) {unknown} are not in the label table of this TotalSegmentator output "
                f"({len(table)} classes, e.g. {sorted(by_name)[:8]}); check the spelling and the task",
                source=src, field=field,
            )
        for name in wanted if wanted is not None else list(by_name):
            masks[name] = np.isin(labels, by_name[name])
        form = "multilabel NIfTI, label table from " + ("the header extension" if table_ext else f"TotalSegmentator's class map of task {task!r}")
    method = f"TotalSegmentator output ({form}); {REFERENCE}" + (
        "; resampled onto the CT grid (nearest neighbour)" if resampled else "")
    return Segmentation(masks=masks, labels=table, method=method)


def segment_ct(
    ct: Volume,
    *,
    task: str = "total",
    classes: Iterable[str] | None = None,
    fast: bool = False,
    runner: Runner | None = None,
    field: str | None = None,
) -> Segmentation:
    """Run TotalSegmentator (or ``runner`` / :data:`RUNNER`) on ``ct`` and return masks by class
    name on the CT's grid.

    Raises :class:`InputError` naming ``field`` when TotalSegmentator is not installed (with how to
    install it), when it fails, or when its output cannot be read. The real network run is not
    covered by mrtdose's tests (module docstring).
    """
    if ct.unit.upper() != "HU":
        raise InputError(f"TotalSegmentator needs a CT in HU, got unit {ct.unit!r}", field=field)
    wanted = None if classes is None else list(dict.fromkeys(classes))
    run = runner or RUNNER
    software = "injected runner (not TotalSegmentator)" if run is not None else f"TotalSegmentator {require_totalsegmentator(field)}"
    with tempfile.TemporaryDirectory(prefix="mrtdose-totalseg-") as tmp:
        ct_path = Path(tmp) / "ct.nii.gz"
        ct_path.write_bytes(write_nifti(ct.with_array(np.asarray(ct.array, dtype=np.float32), unit="HU"), compress=True))
        out = Path(tmp) / "segmentation.nii.gz"
        if run is None:
            _default_runner(ct_path, out, task, wanted, fast, field)
        else:
            run(ct_path, out, task, wanted, fast)
        if not out.exists():
            raise InputError(f"the segmentation run wrote no output at {out.name}", field=field)
        seg = read_totalsegmentator_output(out, ct, task=task, classes=wanted, field=field)
    return Segmentation(masks=seg.masks, labels=seg.labels, method=f"{seg.method}; task {task!r}" + (", fast" if fast else ""),
                        software=software)


def regions_from_classes(seg: Segmentation, names: Mapping[str, str], *, source: str | None = None,
                         field: str | None = None) -> dict[str, np.ndarray]:
    """Region masks from a class -> region mapping; several classes mapped to one region are
    united. A class with no voxel is an :class:`InputError` naming it (an organ the network did
    not find must not silently become an empty region)."""
    out: dict[str, np.ndarray] = {}
    for cls, region in names.items():
        m = seg.masks.get(cls)
        if m is None or not np.any(m):
            raise InputError(f"class {cls!r} has no voxel in the segmentation (not found in this CT?)",
                             source=source, field=f"{field}.{cls}" if field else cls)
        out[region] = m.copy() if region not in out else (out[region] | m)
    return out


__all__ = (
    "INSTALL_HINT",
    "RUNNER",
    "Segmentation",
    "label_table_from_extensions",
    "read_totalsegmentator_output",
    "regions_from_classes",
    "require_totalsegmentator",
    "segment_ct",
    "totalsegmentator_version",
)
