"""The table of samples every source produces: one row per file (or array row), plus skips."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Canonical split order: a pair's "reference" is the earlier split in this order.
CANONICAL_SPLITS: tuple[str, ...] = ("train", "val", "test")

# Folder / manifest names that mean one of the canonical splits (lower-case keys).
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def canonical_split_name(name: str) -> str:
    """Map a split alias to its canonical name (``valid`` -> ``val``); other names unchanged.

    Examples
    --------
    >>> canonical_split_name("validation"), canonical_split_name("holdout")
    ('val', 'holdout')
    """
    return SPLIT_ALIASES.get(name, name)


def order_splits(names: list[str]) -> list[str]:
    """Put split names in comparison order: train, val, test, then the rest as given.

    Examples
    --------
    >>> order_splits(["extra", "test", "train"])
    ['train', 'test', 'extra']
    """
    known = [s for s in CANONICAL_SPLITS if s in names]
    return known + [s for s in names if s not in CANONICAL_SPLITS]


@dataclass(frozen=True, slots=True)  # slots: 0.1 KB less per sample (no instance dict)
class Sample:
    """One sample of a dataset.

    Attributes
    ----------
    split : str
        Split name (``train``, ``val``, ``test`` or a user-given name).
    path : str
        POSIX path relative to the dataset root (the key shown in reports). For array inputs
        this is ``"<split>[<index>]"``.
    abspath : Path or None
        Absolute path of the file to read, or None for in-memory samples.
    label : str or None
        Class label (class folder name or manifest label), None when unknown.
    group : str or None
        Optional group id from a manifest (e.g. patient or video id).
    index : int or None
        Position of the sample in its input, for array / tf.data inputs.
    """

    split: str
    path: str
    abspath: Path | None = None
    label: str | None = None
    group: str | None = None
    index: int | None = None


@dataclass(frozen=True)
class Skipped:
    """A file that was found but could not be used, with the reason."""

    split: str | None
    path: str
    reason: str


@dataclass
class SampleSet:
    """All samples of a dataset, in split order.

    Attributes
    ----------
    root : Path or None
        Dataset root; report paths are relative to it.
    splits : list of str
        Split names in comparison order (train first). Every later split is compared with
        every earlier one.
    samples : list of Sample
        Samples ordered by split, then by path.
    skipped : list of Skipped
        Files found during discovery that were not used (unreadable directories, etc.).
    layout : str
        How the splits were found, for the report: ``"folders"``, ``"folders+classes"``,
        ``"explicit"``, ``"manifest"`` (array sources add their own).
    notes : list of str
        Human-readable remarks from discovery for the report (ignored folders, empty splits,
        duplicate manifest rows, ...). Nothing here stops a scan.
    """

    root: Path | None
    splits: list[str]
    samples: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    layout: str = "folders"
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of samples per split, in split order."""
        out = {s: 0 for s in self.splits}
        for s in self.samples:
            out[s.split] += 1
        return out
