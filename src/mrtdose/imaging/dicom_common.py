"""What every DICOM object mrtdose writes has in common: file meta information and the SOP
Common module (PS3.10 section 7.1; PS3.3 C.12.1)."""

from __future__ import annotations

import io
import os
import struct
import tempfile
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from mrtdose import __version__
from mrtdose.errors import InputError

#: What pydicom raises on files that are not DICOM, truncated or corrupt (decoding is untrusted).
READ_ERRORS = (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, struct.error)


def read_dataset(path_or_bytes: str | Path | bytes | bytearray, what: str) -> tuple[Dataset, str]:
    """Read one DICOM file (a path or its bytes); returns the dataset and the name to use in
    messages. An unreadable file is an :class:`InputError` naming it."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        src, fp = f"<{what} bytes>", io.BytesIO(bytes(path_or_bytes))
    else:
        src = str(path_or_bytes)
        if not Path(src).exists():
            raise InputError("file not found", source=src)
        fp = src  # type: ignore[assignment]
    try:
        ds = pydicom.dcmread(fp)
    except READ_ERRORS as exc:
        raise InputError(f"not a readable DICOM file ({type(exc).__name__}: {exc})", source=src) from None
    return ds, src


def new_dataset(sop_class_uid: str) -> tuple[Dataset, str]:
    """A dataset with file meta information (Explicit VR Little Endian), UTF-8 character set and
    the SOP class and a new SOP instance UID set; returns it and the instance UID."""
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MRTDOSE_{__version__}"[:16]
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8 (PS3.3 C.12.1.1.2)
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    return ds, sop_uid


def write_dataset_atomic(ds: Dataset, path: Path, truncate: float | None = None) -> Path:
    """Write ``ds`` as a DICOM file at ``path`` atomically (a temporary file in the same folder,
    renamed into place; the folder is created). ``truncate``: keep only that fraction of the
    bytes (fault injection for tests of corrupt files)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    data = buf.getvalue()
    if truncate is not None:
        data = data[: int(len(data) * truncate)]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix=".dcm")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
