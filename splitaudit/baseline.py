"""Findings a team has accepted, and what ``splitaudit check`` reports on top of them.

A *finding* is one line of ``splitaudit check`` output: a cross-split copy (``LEAK``), a copy
inside one split (``DUPLICATE``) or a file that cannot be used (``UNREADABLE``). Which ones
count is set by ``checks`` and ``fail_on``. The *baseline* (``splitaudit-baseline.json``,
written by ``splitaudit baseline``) lists accepted findings by path; ``check`` fails only on
findings not in it, and lists entries that no longer apply (stale) so they can be dropped.

The file is JSON meant for code review: entries sorted by path, one finding per entry,
paths relative to the dataset directory, no scores (they change with thresholds and versions).
A leak accepted as ``near`` that becomes ``exact`` is a new finding (the file was replaced).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from splitaudit._version import __version__
from splitaudit.errors import InvalidInputError
from splitaudit.report import MATCH_KINDS, AuditReport, DuplicatePair

BASELINE_SCHEMA = 1
DEFAULT_BASELINE_NAME = "splitaudit-baseline.json"
#: Checks whose findings ``splitaudit check`` reports when ``checks`` is not configured.
DEFAULT_CHECKS = ("cross_split_duplicates", "label_conflicts", "unreadable_files")
_ABOUT = ("Findings accepted by the team (known duplicates, known bad files). "
          "`splitaudit check` fails only on findings not listed here and reports entries that no "
          "longer apply. Regenerate with `splitaudit baseline DATASET_DIR`; review changes like code.")


@dataclass(frozen=True)
class Finding:
    """One problem, as ``splitaudit check`` prints it.

    Attributes
    ----------
    kind : str
        ``leak`` (cross-split copy), ``duplicate`` (copy inside a split) or ``unreadable``.
    path : str
        Query sample (the later split) or unreadable file, relative to the dataset directory.
    other : str or None
        Reference sample (the earlier split) for copies.
    match : str or None
        ``exact``, ``near`` or ``similar`` for copies.
    detail : str
        Evidence (``ncc 0.97, flip``) or the reason a file is unreadable.
    split : str or None
        Split of ``path``; ``reference_split`` the split of ``other``.
    """

    kind: str
    path: str
    other: str | None = None
    match: str | None = None
    detail: str = ""
    split: str | None = None
    reference_split: str | None = None

    @property
    def key(self) -> tuple:
        """Identity in the baseline (scores and reasons excluded)."""
        if self.kind == "duplicate":
            return ("duplicate", *sorted((self.path, self.other or "")))
        if self.kind == "leak":
            return ("leak", self.path, self.other)
        return (self.kind, self.path)

    def line(self, display=lambda p: p) -> str:
        """The one-line message (paths through ``display``)."""
        if self.kind == "unreadable":
            return f"UNREADABLE {display(self.path)}: {self.detail}"
        word = "LEAK" if self.kind == "leak" else "DUPLICATE"
        return f"{word} {self.match} {display(self.path)} duplicates {display(self.other)} ({self.detail})"

    def to_entry(self) -> dict:
        """Baseline entry."""
        if self.kind == "unreadable":
            return {"path": self.path, "reason": self.detail}
        return {"query": self.path, "reference": self.other, "match": self.match}


def _detail(p: DuplicatePair) -> str:
    if p.evidence in ("same bytes", "same pixels"):
        text = p.evidence
    else:
        text = f"ncc {p.ncc:.2f}" + (f", {p.evidence}" if p.evidence and p.evidence != "identity" else "")
    if p.label_conflict:
        text += f"; labels differ: {p.query.label} vs {p.reference.label}"
    return text


def findings(report: AuditReport, *, fail_on: str, checks: Iterable[str] | None = None) -> list[Finding]:
    """The findings of ``report`` that ``checks`` (default :data:`DEFAULT_CHECKS`) and
    ``fail_on`` make problems, sorted by kind then path.

    * ``cross_split_duplicates``: cross-split pairs at least as severe as ``fail_on``;
    * ``label_conflicts``: exact/near cross-split pairs whose labels differ (whatever
      ``fail_on`` says);
    * ``within_split_duplicates``: exact/near pairs inside a split, at least as severe as
      ``fail_on``;
    * ``unreadable_files``: files that could not be used.
    """
    ids = set(DEFAULT_CHECKS if checks is None else checks)
    levels = MATCH_KINDS[: MATCH_KINDS.index(fail_on) + 1] if fail_on != "never" else ()
    out: dict[tuple, Finding] = {}
    for p in report.cross_split_duplicates:
        if p.query.path is None or p.reference.path is None:
            continue
        counts = ("cross_split_duplicates" in ids and p.match in levels) or (
            "label_conflicts" in ids and p.match != "similar" and p.label_conflict)
        if counts:
            f = Finding("leak", p.query.path, p.reference.path, p.match, _detail(p), p.query.split,
                        p.reference.split)
            out.setdefault(f.key, f)
    if "within_split_duplicates" in ids:
        for p in report.within_split_duplicates:
            if p.match in levels and p.query.path is not None and p.reference.path is not None:
                f = Finding("duplicate", p.query.path, p.reference.path, p.match, _detail(p),
                            p.query.split, p.reference.split)
                out.setdefault(f.key, f)
    if "unreadable_files" in ids:
        for u in report.unreadable:
            f = Finding("unreadable", u.path, detail=u.reason, split=u.split)
            out.setdefault(f.key, f)
    order = {"leak": 0, "duplicate": 1, "unreadable": 2}
    return sorted(out.values(), key=lambda f: (order[f.kind], f.path, f.other or ""))


# ------------------------------------------------------------------------------ the file


@dataclass
class Baseline:
    """Accepted findings read from a baseline file (empty when the file does not exist)."""

    path: Path
    entries: dict[tuple, Finding]
    exists: bool = True

    def __len__(self) -> int:
        return len(self.entries)


def load_baseline(path: str | os.PathLike) -> Baseline:
    """Read a baseline file; a missing file is an empty baseline.

    Raises
    ------
    InvalidInputError
        Not JSON, not a splitaudit baseline, or a newer schema.
    """
    path = Path(path)
    if not path.exists():
        return Baseline(path, {}, exists=False)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"Baseline {os.fspath(path)!r} cannot be read ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"Baseline {os.fspath(path)!r} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise InvalidInputError(f"Baseline {os.fspath(path)!r} is not a splitaudit baseline (no schema_version).")
    if doc["schema_version"] != BASELINE_SCHEMA:
        raise InvalidInputError(f"Baseline {os.fspath(path)!r} has schema_version {doc['schema_version']!r}; "
                                f"this splitaudit reads {BASELINE_SCHEMA}. Regenerate it with `splitaudit baseline`.")
    entries: dict[tuple, Finding] = {}
    try:
        for e in doc.get("leaks", []):
            f = Finding("leak", str(e["query"]), str(e["reference"]), _kind(e.get("match", "near")))
            entries[f.key] = f
        for e in doc.get("duplicates", []):
            f = Finding("duplicate", str(e["query"]), str(e["reference"]), _kind(e.get("match", "near")))
            entries[f.key] = f
        for e in doc.get("unreadable", []):
            f = Finding("unreadable", str(e["path"]), detail=str(e.get("reason", "")))
            entries[f.key] = f
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidInputError(f"Baseline {os.fspath(path)!r} has a malformed entry ({exc!r}).") from None
    return Baseline(path, entries)


def _kind(value: object) -> str:
    if value not in MATCH_KINDS:
        raise KeyError(f"match must be one of {', '.join(MATCH_KINDS)}, got {value!r}")
    return str(value)


def baseline_document(found: Sequence[Finding], dataset: str | None) -> dict:
    """The JSON document of a baseline accepting ``found``."""
    leaks = sorted((f.to_entry() for f in found if f.kind == "leak"), key=lambda e: (e["query"], e["reference"]))
    dups = sorted((f.to_entry() for f in found if f.kind == "duplicate"), key=lambda e: (e["query"], e["reference"]))
    bad = sorted((f.to_entry() for f in found if f.kind == "unreadable"), key=lambda e: e["path"])
    return {
        "schema_version": BASELINE_SCHEMA,
        "generated_by": f"splitaudit {__version__}",
        "about": _ABOUT,
        "dataset": dataset,
        "leaks": leaks,
        "duplicates": dups,
        "unreadable": bad,
    }


def write_baseline(path: str | os.PathLike, found: Sequence[Finding], dataset: str | None) -> None:
    """Write the baseline atomically (temporary file in the same folder, then rename)."""
    import stat

    text = json.dumps(baseline_document(found, dataset), indent=2, ensure_ascii=False) + "\n"
    path = Path(os.path.realpath(path))  # a symlinked baseline stays a symlink
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise InvalidInputError(f"Baseline {os.fspath(path)!r} exists and is not a regular file.")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise InvalidInputError(f"Cannot write baseline {os.fspath(path)!r} ({exc.strerror or exc}).") from None


@dataclass
class Comparison:
    """Current findings against a baseline."""

    new: list[Finding]
    accepted: list[Finding]
    stale: list[Finding]


def compare(found: Sequence[Finding], baseline: Baseline) -> Comparison:
    """Split ``found`` into new and accepted findings; list baseline entries not found any more.

    A copy is accepted when the baseline lists the same pair with a kind at least as severe
    (an accepted ``near`` pair that is now ``exact`` is new).
    """
    new, accepted = [], []
    seen = set()
    for f in found:
        entry = baseline.entries.get(f.key)
        if entry is None:
            new.append(f)
            continue
        seen.add(f.key)
        if f.match is not None and entry.match is not None and \
                MATCH_KINDS.index(f.match) < MATCH_KINDS.index(entry.match):
            new.append(Finding(f.kind, f.path, f.other, f.match,
                               f"{f.detail}; accepted as {entry.match} in the baseline", f.split,
                               f.reference_split))
        else:
            accepted.append(f)
    stale = [e for k, e in baseline.entries.items() if k not in seen]
    stale.sort(key=lambda f: (f.kind, f.path, f.other or ""))
    return Comparison(new, accepted, stale)
