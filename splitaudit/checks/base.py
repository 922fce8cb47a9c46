"""The check protocol and the context every check reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from splitaudit.config import AuditConfig
    from splitaudit.extract import FingerprintTable
    from splitaudit.matching import Matcher, Matches
    from splitaudit.report import CheckResult, DuplicatePair, Unreadable
    from splitaudit.sources.base import SampleSet


@dataclass
class AuditContext:
    """What the pipeline computed once and every check shares (never recomputed by a check).

    Attributes
    ----------
    samples : SampleSet
    table : FingerprintTable
    matcher : Matcher
    cross : dict
        (query split, reference split) -> Matches.
    within : dict
        split -> Matches inside that split.
    pairs : list of DuplicatePair
        ``cross`` as report objects.
    unreadable : list of Unreadable
    config : AuditConfig
    """

    samples: "SampleSet"
    table: "FingerprintTable"
    matcher: "Matcher"
    cross: dict[tuple[str, str], "Matches"]
    within: dict[str, "Matches"]
    pairs: list["DuplicatePair"]
    unreadable: list["Unreadable"]
    config: "AuditConfig"
    notes: list[str] = field(default_factory=list)


class Check:
    """A small, named test of the audit context.

    Subclasses set ``id`` (snake_case, used alike in CLI, config and JSON), ``title`` and a
    docstring saying what they detect and how, and implement :meth:`run`. A check never
    prints and never catches what it cannot handle.
    """

    id: ClassVar[str]
    title: ClassVar[str]
    #: Verdict status a ``fail`` of this check supports (``"shifted"`` or ``"easier"``); None
    #: for checks whose findings the verdict reads elsewhere (leaks) or not at all.
    flags: ClassVar[str | None] = None

    def run(self, context: AuditContext) -> "CheckResult":  # pragma: no cover - abstract
        raise NotImplementedError
