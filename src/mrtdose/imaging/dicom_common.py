"""What every DICOM object mrtdose writes has in common: file meta information and the SOP
Common module (PS3.10 section 7.1; PS3.3 C.12.1)."""

from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from mrtdose import __version__


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
