"""Atomic output writing: every file of a run appears complete, or none of them changes.

Each file is written to a temporary file in the destination directory, flushed and fsync'ed, and
then moved over its final name with :func:`os.replace` (atomic on POSIX and Windows within one
file system). All files are rendered before the first is written, so a failure while preparing
output leaves the directory untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from mrtdose.errors import InputError


def to_json_bytes(doc: Any) -> bytes:
    """Canonical JSON (UTF-8, 2-space indent, no NaN: JSON has none)."""
    return (json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def write_atomic(directory: str | Path, files: Mapping[str, bytes]) -> dict[str, Path]:
    """Write ``files`` (name -> content) into ``directory`` atomically, file by file; temporary
    files are removed if anything fails before the final renames."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory: {exc.strerror}", source=str(d)) from None
    temps: dict[str, str] = {}
    umask = os.umask(0)
    os.umask(umask)
    try:
        for name, content in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=d)
            temps[name] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        out = {}
        for name, tmp in temps.items():
            os.replace(tmp, d / name)
            out[name] = d / name
        temps.clear()
        return out
    except OSError as exc:
        raise InputError(f"cannot write output: {exc.strerror}", source=str(d)) from None
    finally:
        for tmp in temps.values():
            try:
                os.unlink(tmp)
            except OSError:
                pass
