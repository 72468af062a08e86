"""Provenance: enough to recompute any result for an incident review.

Software and data versions, the input hash, method choices and the time of the run.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mrtdose
from mrtdose.physics.nuclides import data_versions

_LIBRARIES = ("numpy", "scipy", "pydantic", "xraylib", "matplotlib")


def _v(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_sha256(files: Any) -> str:
    """SHA-256 over the SHA-256 digests of the files in name order: one fingerprint of a series
    for the provenance (any changed, added or removed file changes it)."""
    h = hashlib.sha256()
    for f in sorted(str(x) for x in files):
        h.update(Path(f).name.encode("utf-8"))
        h.update(hashlib.sha256(Path(f).read_bytes()).digest())
    return h.hexdigest()


def provenance(input_bytes: bytes | None, input_name: str | None, methods: dict[str, Any]) -> dict[str, Any]:
    return {
        "software": {"name": "mrtdose", "version": mrtdose.__version__},
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
        "libraries": {p: _v(p) for p in _LIBRARIES},
        "reference_data": data_versions(),
        "input": {
            "file": input_name,
            "sha256": sha256(input_bytes) if input_bytes is not None else None,
        },
        "methods": methods,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
