"""Registry of checks: each has a snake_case id used alike in the CLI, config and JSON keys."""

from __future__ import annotations

from splitaudit.checks.base import AuditContext, Check
from splitaudit.checks.duplicates import (
    CrossSplitDuplicates,
    LabelConflicts,
    UnreadableFiles,
    WithinSplitDuplicates,
)
from splitaudit.checks.shift import SHIFT_CHECKS

REGISTRY: dict[str, type[Check]] = {
    c.id: c
    for c in (CrossSplitDuplicates, LabelConflicts, WithinSplitDuplicates, UnreadableFiles,
              *SHIFT_CHECKS)
}


def list_checks() -> list[tuple[str, str]]:
    """(id, first line of the docstring) of every registered check, in run order."""
    return [(cid, (cls.__doc__ or "").strip().splitlines()[0]) for cid, cls in REGISTRY.items()]


__all__ = ["AuditContext", "Check", "REGISTRY", "list_checks"]
