"""Read a CSV manifest: one row per file with its split (and optionally label and group).

The format is the simplest thing a pandas user can write::

    path,split,label,group
    img/0001.jpg,train,cat,patient_7
    img/0002.jpg,test,dog,patient_9

Column names are case-insensitive, extra columns are ignored, paths are relative to the
manifest's own folder (or absolute). Files are only checked for existence, never opened.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from splitaudit.errors import InvalidInputError
from splitaudit.sources.base import Sample, SampleSet, Skipped, canonical_split_name, order_splits
from splitaudit.sources.directory import (
    SPLIT_NAME_RE,
    child_path,
    gc_paused,
    non_image_reason,
    printable_path,
    require_two_splits,
)

__all__ = ["read_manifest"]

REQUIRED_COLUMNS = ("path", "split")
EXPECTED = "Expected a header with columns path,split[,label][,group]."


def _sniff_delimiter(first_line: str) -> str:
    """Comma, unless the header clearly uses ``;`` or tabs (Excel in some locales does)."""
    if "," in first_line:
        return ","
    for delim in ("\t", ";"):
        if delim in first_line:
            return delim
    return ","


def _cell(row: list[str], col: int | None) -> str:
    """Stripped cell ``col`` of ``row``; short rows read as empty cells."""
    if col is None or col >= len(row):
        return ""
    return row[col].strip()


def read_manifest(manifest: str | os.PathLike[str]) -> SampleSet:
    """Read a CSV manifest into a :class:`SampleSet` with ``layout="manifest"``.

    Parameters
    ----------
    manifest : str or PathLike
        CSV file, UTF-8 with or without BOM, with at least the columns ``path`` and ``split``
        (optional ``label`` and ``group``).

    Returns
    -------
    SampleSet
        ``root`` is the manifest's folder; sample paths are relative to it (absolute when
        outside it). Listed files that do not exist are in ``skipped``; a path listed twice
        in one split is kept once (noted); the same path in two splits is kept in both, as
        that is a leak the scan should report.

    Raises
    ------
    InvalidInputError
        Missing or unreadable file, missing required column, no rows, or a row with an empty
        path or split or a split name that is not snake_case; messages give the line number.
    """
    with gc_paused():  # many small acyclic objects; see gc_paused
        return _read_manifest(manifest)


def _read_manifest(manifest: str | os.PathLike[str]) -> SampleSet:
    """Body of :func:`read_manifest`."""
    name = os.fspath(manifest)
    if not os.path.exists(name):
        raise InvalidInputError(f"Manifest {name!r} does not exist.")
    if not os.path.isfile(name):
        raise InvalidInputError(f"Manifest {name!r} is not a file.")
    base = os.path.dirname(os.path.abspath(name))
    base_prefix = base.rstrip(os.sep) + os.sep

    try:
        with open(name, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"Manifest {name!r} is not UTF-8 text (bad byte at offset {exc.start})."
        ) from exc
    except OSError as exc:
        raise InvalidInputError(f"Manifest {name!r} cannot be read ({exc.strerror}).") from exc

    # StringIO(newline="") splits on \n / \r only, as csv expects (str.splitlines would also
    # split on \x0b, \u2028, ... inside quoted fields).
    first_line = text.split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(first_line))
    try:
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)  # leading blank lines
    except csv.Error as exc:
        raise InvalidInputError(f"Manifest {name!r} line {reader.line_num}: {exc}.") from exc
    if header is None:
        raise InvalidInputError(f"Manifest {name!r} is empty (line 1). {EXPECTED}")
    header_line = reader.line_num

    columns = [c.strip().lower() for c in header]
    for required in REQUIRED_COLUMNS:
        if required not in columns:
            found = ", ".join(repr(c) for c in columns if c) or "none"
            raise InvalidInputError(
                f"Manifest {name!r} line {header_line}: missing required column {required!r} "
                f"(found columns: {found}). {EXPECTED}"
            )
    for col in ("path", "split", "label", "group"):
        if columns.count(col) > 1:
            raise InvalidInputError(
                f"Manifest {name!r} line {header_line}: column {col!r} appears twice."
            )
    c_path, c_split = columns.index("path"), columns.index("split")
    c_label = columns.index("label") if "label" in columns else None
    c_group = columns.index("group") if "group" in columns else None

    by_split: dict[str, list[Sample]] = {}
    skipped: list[Skipped] = []
    seen: dict[tuple[str, str], int] = {}  # (split, absolute path) -> first line
    dups: dict[str, list[tuple[str, int, int]]] = {}
    # Manifests list many files per folder: parse each folder's Path once, then add the name
    # (re-parsing every full path string is the slowest step otherwise).
    parents: dict[str, Path] = {}
    n_rows = 0
    try:
        for row in reader:
            line = reader.line_num
            if not any(c.strip() for c in row):
                continue  # blank line
            n_rows += 1
            split_text = _cell(row, c_split)
            if not split_text:
                raise InvalidInputError(f"Manifest {name!r} line {line}: empty split.")
            split = canonical_split_name(split_text.lower())
            if not SPLIT_NAME_RE.match(split):
                raise InvalidInputError(
                    f"Manifest {name!r} line {line}: split {split_text!r} is not a snake_case "
                    f"name (letters, digits and _, starting with a letter)."
                )
            rel_text = _cell(row, c_path)
            if not rel_text:
                raise InvalidInputError(f"Manifest {name!r} line {line}: empty path.")

            full = os.path.normpath(os.path.join(base, rel_text))
            if os.sep == "/" and "\\" in rel_text and not os.path.exists(full):
                # Manifest written on Windows: try its separators before calling it missing.
                alt = os.path.normpath(os.path.join(base, rel_text.replace("\\", "/")))
                if os.path.exists(alt):
                    full = alt
            if full.startswith(base_prefix):
                path = full[len(base_prefix) :]
                if os.sep != "/":
                    path = path.replace(os.sep, "/")
            else:
                path = Path(full).as_posix()
            path = printable_path(path)

            samples = by_split.setdefault(split, [])
            key = (split, full)
            if key in seen:
                dups.setdefault(split, []).append((path, seen[key], line))
                continue
            seen[key] = line

            if not os.path.isfile(full):
                reason = "is a directory, not a file" if os.path.isdir(full) else "file not found"
                skipped.append(Skipped(split, path, reason))
                continue
            reason = non_image_reason(full)
            if reason:
                skipped.append(Skipped(split, path, reason))
                continue
            parent_dir, _, file_name = full.rpartition(os.sep)
            parent = parents.get(parent_dir)
            if parent is None:
                parent = parents[parent_dir] = Path(parent_dir or os.sep)
            samples.append(
                Sample(
                    split,
                    path,
                    child_path(parent, file_name),
                    _cell(row, c_label) or None,
                    _cell(row, c_group) or None,
                )
            )
    except csv.Error as exc:
        raise InvalidInputError(f"Manifest {name!r} line {reader.line_num}: {exc}.") from exc

    if n_rows == 0:
        raise InvalidInputError(
            f"Manifest {name!r} has no rows after the header (line {header_line + 1})."
        )

    splits = order_splits(list(by_split))
    require_two_splits(splits, f"manifest {name!r}")

    notes: list[str] = []
    for split in splits:
        for_split = dups.get(split)
        if for_split:
            path, first, again = for_split[0]
            more = f" and {len(for_split) - 1} more" if len(for_split) > 1 else ""
            notes.append(
                f"manifest lists {path!r} twice in split {split!r} (lines {first} and {again})"
                f"{more}; kept once"
            )
        if not by_split[split]:
            notes.append(f"split {split!r} has no usable files")

    samples_out: list[Sample] = []
    for split in splits:
        samples_out.extend(sorted(by_split[split], key=lambda s: s.path))
    return SampleSet(
        root=Path(base),
        splits=splits,
        samples=samples_out,
        skipped=skipped,
        layout="manifest",
        notes=notes,
    )
