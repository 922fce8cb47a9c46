"""splitaudit: is your validation split leaked, shifted or easier than training?"""

from splitaudit._version import __version__
from splitaudit.errors import (
    InvalidInputError,
    LeakageError,
    MissingWeightsError,
    SplitAuditError,
)

__all__ = [
    "AuditConfig",
    "AuditReport",
    "InvalidInputError",
    "LeakageError",
    "MissingWeightsError",
    "SplitAuditError",
    "__version__",
    "list_checks",
    "scan",
]


def __getattr__(name: str):
    # Lazy: `import splitaudit` stays cheap (no numpy/faiss/PIL) for `splitaudit --version`.
    if name == "scan":
        from splitaudit.api import scan

        return scan
    if name == "AuditReport":
        from splitaudit.report import AuditReport

        return AuditReport
    if name == "AuditConfig":
        from splitaudit.config import AuditConfig

        return AuditConfig
    if name == "list_checks":
        from splitaudit.checks import list_checks

        return list_checks
    raise AttributeError(f"module 'splitaudit' has no attribute {name!r}")
