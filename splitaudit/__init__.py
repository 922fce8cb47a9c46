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
    "OrderedDataWarning",
    "SplitAuditError",
    "__version__",
    "audit",
    "check_validation_split",
    "explain",
    "list_checks",
    "scan",
]


def __getattr__(name: str):
    # Lazy: `import splitaudit` stays cheap (no numpy/faiss/PIL) for `splitaudit --version`.
    if name == "scan":
        from splitaudit.api import scan

        return scan
    if name == "audit":
        from splitaudit.api import audit

        return audit
    if name == "AuditReport":
        from splitaudit.report import AuditReport

        return AuditReport
    if name == "AuditConfig":
        from splitaudit.config import AuditConfig

        return AuditConfig
    if name == "explain":
        from splitaudit.diagnosis import explain

        return explain
    if name in ("check_validation_split", "OrderedDataWarning"):
        # splitaudit.keras imports Keras only when LeakageCheck is used.
        from splitaudit import keras as _keras

        return getattr(_keras, name)
    if name == "list_checks":
        from splitaudit.checks import list_checks

        return list_checks
    raise AttributeError(f"module 'splitaudit' has no attribute {name!r}")
