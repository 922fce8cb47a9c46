"""Exception hierarchy.

Every error splitaudit raises on purpose derives from :class:`SplitAuditError`, so callers can
catch one type; the CLI turns :class:`InvalidInputError` into exit code 2 with one line.
"""

from __future__ import annotations


class SplitAuditError(Exception):
    """Base class of every error raised by splitaudit."""


class InvalidInputError(SplitAuditError, ValueError):
    """A parameter, path or dataset layout that splitaudit cannot work with."""


class MissingWeightsError(SplitAuditError):
    """CNN weights could not be found locally or downloaded."""


class LeakageError(SplitAuditError):
    """Raised by :meth:`AuditReport.raise_for_leakage` when a leak passes the threshold."""


class DecodeError(SplitAuditError):
    """A file could not be decoded as an image; ``reason`` is a short human-readable cause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def invalid_param(name: str, owner: str, expected: str, got: object) -> InvalidInputError:
    """Build the one message shape used for every bad parameter.

    Examples
    --------
    >>> str(invalid_param("threshold", "scan", "a float in [0, 1]", 1.5))
    "The 'threshold' parameter of scan must be a float in [0, 1]. Got 1.5 instead."
    """
    return InvalidInputError(
        f"The {name!r} parameter of {owner} must be {expected}. Got {got!r} instead."
    )
