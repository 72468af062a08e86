"""Error types.

User errors (bad input) derive from :class:`MrtdoseError`; the CLI prints their message and exits
non-zero without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MrtdoseError(Exception):
    """Base class of all errors that are the user's to fix."""


class InputError(MrtdoseError, ValueError):
    """Input is missing, contradictory or implausible.

    ``source`` names the file (or other origin) and ``field`` the dotted path of the field, so
    that the message tells the user exactly where to look.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        self.detail = message
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class NuclideError(InputError):
    """Unknown radionuclide or radiopharmaceutical, or one without the data needed."""


class FitError(MrtdoseError):
    """A kinetic fit failed or gave an implausible result (negative TIA, increasing tail...)."""


class PhysicsError(MrtdoseError):
    """A physics calculation was asked for outside its domain of validity."""
