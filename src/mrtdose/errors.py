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


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))


def from_validation_error(exc, what: str, *, source: str | None, unknown_hint: str = "check spelling") -> InputError:
    """One :class:`InputError` listing every problem of a pydantic ``ValidationError``, each with
    the dotted path of its field (``regions.kidneys.measurements.1.activity_mbq: ...``);
    ``field`` is set to the first path."""
    lines = []
    errors = exc.errors()
    for err in errors:
        loc = _format_loc(err["loc"]) or "(top level)"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field ({unknown_hint})"
        lines.append(f"  {loc}: {msg}")
    err = InputError(f"invalid {what}:\n" + "\n".join(lines), source=source)
    err.field = _format_loc(errors[0]["loc"]) if errors else None  # the lines already name every field
    return err
