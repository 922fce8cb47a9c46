"""Find a dataset's splits and files on disk: split folders, explicit ``--split`` paths, manifests.

:func:`discover` is the single entry point; it only lists directories (``os.scandir``), never
opens or decodes a file, so 60,000 files take a fraction of a second. Whether a file really is
an image is decided later by the decoder; here only names that are clearly something else
(``.txt``, ``.npy``, ...) are set aside as :class:`~splitaudit.sources.base.Skipped`.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from operator import attrgetter
from pathlib import Path, PurePath

from splitaudit.errors import InvalidInputError, invalid_param
from splitaudit.sources.base import (
    SPLIT_ALIASES,
    Sample,
    SampleSet,
    Skipped,
    canonical_split_name,
    order_splits,
)

__all__ = ["discover", "parse_split_arg"]

SPLIT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# OS / archive droppings that are never data; skipped without a trace (compared lower-case).
JUNK_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini"})

# Extensions that are clearly not images. Anything else (unknown or no extension) is kept and
# left to the decoder, so an odd-but-valid image is never dropped silently.
NON_IMAGE_EXTENSIONS = frozenset(
    {
        ".txt", ".csv", ".tsv", ".json", ".jsonl", ".md", ".rst", ".xml", ".yaml", ".yml",
        ".toml", ".ini", ".cfg", ".log", ".py", ".pyc", ".ipynb", ".sh", ".bat", ".js", ".css",
        ".html", ".htm", ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx",
        ".pkl", ".pickle", ".npy", ".npz", ".pt", ".pth", ".ckpt", ".h5", ".hdf5", ".keras",
        ".pb", ".onnx", ".tflite", ".safetensors", ".mat", ".parquet", ".feather", ".arrow",
        ".tfrecord", ".tfrecords", ".lmdb", ".mdb", ".db", ".sqlite",
        ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar",
        ".mp4", ".avi", ".mov", ".mkv", ".webm", ".mp3", ".wav", ".flac", ".ogg",
        ".exe", ".dll", ".so", ".dylib",
    }
)  # fmt: skip

LAYOUT_HELP = (
    "splitaudit understands: DIR/train/ + DIR/val/ and/or DIR/test/ (aliases training, valid, "
    "validation, dev, testing), each with class subfolders or files; --split NAME=PATH "
    "(repeatable); or a CSV manifest with columns path,split[,label][,group]."
)


# --------------------------------------------------------------------------------------------
# Small helpers shared with the manifest reader
# --------------------------------------------------------------------------------------------


def printable_path(text: str) -> str:
    """Return ``text`` with undecodable file-name bytes written as ``\\xNN``.

    On POSIX, a file name that is not valid UTF-8 comes back from ``os.scandir`` with lone
    surrogates (``surrogateescape``); such a string cannot be printed or written to JSON.

    Examples
    --------
    >>> printable_path("bad\\udcff.jpg")
    'bad\\\\xff.jpg'
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def non_image_reason(name: str) -> str | None:
    """Return a skip reason when ``name`` has an extension that is clearly not an image.

    Examples
    --------
    >>> non_image_reason("notes.TXT")
    'not an image file (.txt)'
    >>> non_image_reason("scan.dcm") is None, non_image_reason("README") is None
    (True, True)
    """
    dot = name.rfind(".")
    if dot <= 0:
        return None
    ext = name[dot:].lower()
    return f"not an image file ({ext})" if ext in NON_IMAGE_EXTENSIONS else None


def check_split_name(name: object) -> str:
    """Validate a user-given split name and return its canonical form (``valid`` -> ``val``)."""
    if not isinstance(name, str) or not SPLIT_NAME_RE.match(name):
        raise invalid_param(
            "split",
            "scan",
            "a snake_case split name (lowercase letters, digits and _, starting with a letter)",
            name,
        )
    return canonical_split_name(name)


def require_two_splits(splits: list[str], where: str) -> None:
    """Raise when fewer than two splits were found: there is nothing to compare."""
    if len(splits) >= 2:
        return
    found = f"only one split ({splits[0]!r})" if splits else "no split"
    raise InvalidInputError(
        f"Found {found} in {where}; at least two splits are needed to look for leaks "
        f"between them (e.g. train and val or test). {LAYOUT_HELP}"
    )


def parse_split_arg(text: str) -> tuple[str, str]:
    """Parse the CLI's ``--split NAME=PATH`` into ``(name, path)``.

    Only the first ``=`` separates, so paths may contain ``=``. The name is checked later by
    :func:`discover`.

    Examples
    --------
    >>> parse_split_arg("val=data/holdout")
    ('val', 'data/holdout')
    """
    name, sep, path = text.partition("=")
    name = name.strip()
    if not sep or not name or not path.strip():
        raise invalid_param("split", "scan", "NAME=PATH", text)
    return name, path


# --------------------------------------------------------------------------------------------
# Walking one split folder
# --------------------------------------------------------------------------------------------


def _child_path_fallback(parent: Path, name: str) -> Path:
    """Public, slower ``parent / name``."""
    return parent / name


def _pick_child_path() -> Callable[[Path, str], Path]:
    """Fastest way to build ``parent / name``.

    Parsing a full path string is most of the cost of listing 60,000 files (``Path(str)`` is
    ~2.7 us, ``parent / name`` ~1.5 us). CPython's glob uses the private
    ``Path._make_child_relpath`` (~0.4 us), which skips re-parsing; use it while it exists
    and behaves, else fall back to the public operator.
    """
    fast = getattr(Path, "_make_child_relpath", None)
    if fast is None:
        return _child_path_fallback
    try:
        probe = Path(os.path.abspath(os.sep)) / "d"
        made = fast(probe, "a")
        if type(made) is type(probe) and made == probe / "a" and str(made) == str(probe / "a"):
            return fast  # type: ignore[no-any-return]
    except Exception:  # any signature change in a future Python
        pass
    return _child_path_fallback


child_path = _pick_child_path()


class _SplitWalk:
    """Result of walking one split folder."""

    __slots__ = ("samples", "skipped", "n_classes", "n_loose")

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.skipped: list[Skipped] = []
        self.n_classes = 0  # class subfolders directly in the split folder
        self.n_loose = 0  # files directly in the split folder


def _scandir(path: str, split: str, rel: str, out: _SplitWalk) -> list[os.DirEntry[str]]:
    """List a directory, turning an unreadable one into a Skipped entry instead of an error."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except PermissionError:
        out.skipped.append(Skipped(split, rel + "/", "directory not readable (permission denied)"))
    except OSError as exc:
        out.skipped.append(Skipped(split, rel + "/", f"directory not readable ({exc.strerror})"))
    return []


def _classify(entry: os.DirEntry[str]) -> str:
    """Return ``"dir"``, ``"file"``, ``"dirlink"``, ``"broken"`` or ``"other"``.

    ``is_dir(follow_symlinks=False)`` comes from the directory listing itself, so regular
    trees cost no ``stat``; only symlinks and odd file systems pay for one.
    """
    try:
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        if entry.is_file():  # follows file symlinks on purpose
            return "file"
        if entry.is_symlink():
            return "dirlink" if entry.is_dir() else "broken"
    except OSError:
        return "broken"
    return "other"


_ODD_REASONS = {
    "dirlink": "directory symlink not followed",
    "broken": "broken symlink",
    "other": "not a regular file",
}


def _walk_split(split: str, split_dir: str, prefix: str) -> _SplitWalk:
    """Collect the files of one split folder.

    Parameters
    ----------
    split : str
        Canonical split name.
    split_dir : str
        Absolute path of the split folder (symlinks to it are fine: it is listed, not walked
        through a link below it).
    prefix : str
        Printable POSIX path of the split folder relative to the report root (``"train"``).
    """
    out = _SplitWalk()
    samples = out.samples
    skipped = out.skipped
    # (absolute dir, printable relative dir, label) still to list; only real directories go
    # on it (no directory symlinks), so the walk cannot loop.
    stack: list[tuple[Path, str, str | None]] = []
    split_path = Path(split_dir)
    child = child_path

    for entry in _scandir(split_dir, split, prefix, out):
        name = entry.name
        if name[0] == "." or name.lower() in JUNK_NAMES:
            continue
        rel = prefix + "/" + printable_path(name)
        kind = _classify(entry)
        if kind == "dir":
            out.n_classes += 1
            stack.append((child(split_path, name), rel, printable_path(name)))
        elif kind == "file":
            reason = non_image_reason(name)
            if reason:
                skipped.append(Skipped(split, rel, reason))
            else:
                out.n_loose += 1
                samples.append(Sample(split, rel, child(split_path, name), None))
        else:
            skipped.append(Skipped(split, rel, _ODD_REASONS[kind]))

    while stack:
        dir_path, dir_rel, label = stack.pop()
        for entry in _scandir(str(dir_path), split, dir_rel, out):
            name = entry.name
            if name[0] == "." or name.lower() in JUNK_NAMES:
                continue
            rel = dir_rel + "/" + printable_path(name)
            kind = _classify(entry)
            if kind == "file":
                reason = non_image_reason(name)
                if reason:
                    skipped.append(Skipped(split, rel, reason))
                else:
                    samples.append(Sample(split, rel, child(dir_path, name), label))
            elif kind == "dir":
                stack.append((child(dir_path, name), rel, label))
            else:
                skipped.append(Skipped(split, rel, _ODD_REASONS[kind]))

    samples.sort(key=attrgetter("path"))
    return out


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small acyclic objects.

    Creating 60,000 Samples + Paths triggers repeated full collections that scan every live
    object, which more than doubles discovery time; none of these objects form cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _collect(
    root: str, split_dirs: list[tuple[str, str, str]], layout: str, notes: list[str]
) -> SampleSet:
    """Walk each ``(split, absolute dir, relative prefix)`` and assemble the SampleSet."""
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    any_classes = False
    for split, split_dir, prefix in split_dirs:
        with gc_paused():
            walk = _walk_split(split, split_dir, prefix)
        samples.extend(walk.samples)
        # scandir order differs between file systems; sort so reports are reproducible.
        skipped.extend(sorted(walk.skipped, key=attrgetter("path")))
        if walk.n_classes:
            any_classes = True
            if walk.n_loose:
                notes.append(
                    f"split {split!r}: {walk.n_loose} file(s) directly in {prefix + '/'!r} "
                    f"next to class folders have no label"
                )
        if not walk.samples:
            extra = f" ({len(walk.skipped)} skipped)" if walk.skipped else ""
            notes.append(f"split {split!r} has no usable files{extra}")
    if layout == "folders" and any_classes:
        layout = "folders+classes"
    return SampleSet(
        root=Path(root),
        splits=[s for s, _, _ in split_dirs],
        samples=samples,
        skipped=skipped,
        layout=layout,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# The three layouts
# --------------------------------------------------------------------------------------------


def _discover_folders(root_arg: str, root: str) -> SampleSet:
    """Auto-discover ``root/{train,val,test}/`` (and aliases)."""
    try:
        with os.scandir(root) as it:
            entries = list(it)
    except OSError as exc:
        raise InvalidInputError(
            f"Dataset directory {root_arg!r} cannot be read ({exc.strerror})."
        ) from exc

    found: dict[str, str] = {}  # canonical split -> folder name on disk
    other_dirs: list[str] = []
    top_files: list[str] = []
    for entry in entries:
        name = entry.name
        if name[0] == "." or name.lower() in JUNK_NAMES:
            continue
        try:
            # A symlinked split folder is fine (it is listed, not recursed through).
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            top_files.append(name)
            continue
        split = SPLIT_ALIASES.get(name.lower())
        if split is None:
            other_dirs.append(name)
        elif split in found:
            first, second = sorted([found[split], name])
            raise InvalidInputError(
                f"Both {first!r} and {second!r} found in {root_arg!r}; they name the same split "
                f"({split!r}). Keep one, or pick folders explicitly with --split NAME=PATH."
            )
        else:
            found[split] = name

    other_dirs.sort()
    top_files.sort()
    if not found:
        listed = ", ".join(printable_path(d) for d in other_dirs) or "none"
        msg = f"No splits found in {root_arg!r}. {LAYOUT_HELP} Found folders: {listed}."
        csvs = [printable_path(f) for f in top_files if f.lower().endswith(".csv")]
        if csvs:
            msg += f" Found CSV files: {', '.join(csvs)} (pass one as the manifest)."
        raise InvalidInputError(msg)

    splits = order_splits(list(found))
    require_two_splits(splits, repr(root_arg))

    notes = [f"ignored folder {printable_path(d)!r} (not a split name)" for d in other_dirs]
    if top_files:
        shown = ", ".join(printable_path(f) for f in top_files[:5])
        more = f", ... ({len(top_files)} in all)" if len(top_files) > 5 else ""
        notes.append(f"ignored file(s) at the top of the dataset directory: {shown}{more}")
    split_dirs = [
        (s, os.path.join(root, found[s]), printable_path(found[s])) for s in splits
    ]
    return _collect(root, split_dirs, "folders", notes)


def _rel_prefix(path: str, root: str) -> str:
    """Printable POSIX path of ``path`` relative to ``root``; absolute when outside it."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:  # another drive on Windows
        rel = path
    if rel == os.curdir:
        rel = ""
    elif rel == os.pardir or rel.startswith(os.pardir + os.sep):
        rel = path
    return printable_path(PurePath(rel).as_posix()) if rel else ""


def _is_inside(path: str, folder: str) -> bool:
    """Whether absolute ``path`` lies strictly below absolute ``folder`` (lexically)."""
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def _discover_explicit(
    root: str | None, splits: Mapping[str, str | os.PathLike[str]]
) -> SampleSet:
    """Use the user's ``{name: folder}`` mapping; no auto-discovery."""
    if not isinstance(splits, Mapping) or not splits:
        raise invalid_param("splits", "scan", "a non-empty mapping of split name to folder", splits)

    chosen: dict[str, tuple[str, str]] = {}  # canonical -> (given name, absolute dir)
    for name, given in splits.items():
        split = check_split_name(name)
        if split in chosen:
            raise InvalidInputError(
                f"Splits {chosen[split][0]!r} and {name!r} name the same split ({split!r}); "
                f"give it once."
            )
        try:
            text = os.fspath(given)
        except TypeError:
            raise invalid_param("split", "scan", "NAME=PATH with PATH a folder", given) from None
        full = os.path.abspath(os.path.join(root, text) if root is not None else text)
        if not os.path.exists(full):
            raise InvalidInputError(f"Folder {text!r} of split {name!r} does not exist.")
        if not os.path.isdir(full):
            raise InvalidInputError(f"Path {text!r} of split {name!r} is not a directory.")
        chosen[split] = (name, full)

    order = order_splits(list(chosen))
    require_two_splits(order, "the given --split folders")

    notes: list[str] = []
    dirs = [chosen[s][1] for s in order]
    if root is None:
        try:
            root = os.path.commonpath(dirs)
        except ValueError:  # different drives on Windows: no common parent
            root = os.path.dirname(dirs[0])
        # The report root is a *parent* of the split folders, so every path keeps its split
        # folder name ("train/cat/1.jpg"), even when one split folder contains another.
        if root in dirs:
            root = os.path.dirname(root)
    # Overlapping folders are a guaranteed leak the scan will show; say why up front.
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            da, db = chosen[a][1], chosen[b][1]
            if da == db:
                notes.append(f"splits {a!r} and {b!r} are the same folder")
            elif _is_inside(da, db) or _is_inside(db, da):
                notes.append(f"split folders of {a!r} and {b!r} are nested inside one another")
    split_dirs = [(s, chosen[s][1], _rel_prefix(chosen[s][1], root)) for s in order]
    # A split folder equal to the root would give paths starting with "/"; use its basename.
    split_dirs = [
        (s, d, p or printable_path(os.path.basename(d) or d)) for s, d, p in split_dirs
    ]
    return _collect(root, split_dirs, "explicit", notes)


def discover(
    root: str | os.PathLike[str] | None = None,
    *,
    splits: Mapping[str, str | os.PathLike[str]] | None = None,
    manifest: str | os.PathLike[str] | None = None,
) -> SampleSet:
    """Find the splits of a dataset and list their files.

    Three layouts are understood:

    * **folders** (default): ``root/train/``, ``root/val/`` and/or ``root/test/`` (aliases
      ``training``; ``valid``, ``validation``, ``dev``; ``testing``; any case). Each split
      folder holds class subfolders (label = subfolder name, files at any depth below it) or
      files directly (label None).
    * **explicit**: ``splits={"train": "a", "val": "b"}``, folders relative to ``root`` when
      given, else to the working directory.
    * **manifest**: a CSV file with columns ``path,split[,label][,group]``, given as
      ``manifest=`` or as ``root`` itself.

    Nothing is opened or decoded: files with a clearly non-image extension are listed in
    ``skipped``, everything else becomes a :class:`Sample` for the decoder to judge.

    Parameters
    ----------
    root : str or PathLike, optional
        Dataset directory, or a ``.csv`` manifest.
    splits : mapping of str to str or PathLike, optional
        Explicit split folders; disables auto-discovery.
    manifest : str or PathLike, optional
        CSV manifest; paths in it are relative to its own directory.

    Returns
    -------
    SampleSet
        Samples sorted by split order (train, val, test, then other names), then by path.
        ``layout`` is ``"folders"``, ``"folders+classes"``, ``"explicit"`` or ``"manifest"``;
        ``notes`` holds remarks for the report.

    Raises
    ------
    InvalidInputError
        Missing root, unknown layout, two aliases of one split, fewer than two splits, bad
        split names or a malformed manifest.
    """
    if root is None and splits is None and manifest is None:
        raise InvalidInputError(
            f"No dataset given: pass a dataset directory, splits or a manifest. {LAYOUT_HELP}"
        )
    root_arg = os.fspath(root) if root is not None else None

    if root_arg is not None and os.path.isfile(root_arg):
        if not root_arg.lower().endswith(".csv"):
            raise InvalidInputError(
                f"{root_arg!r} is a file, not a dataset directory or a .csv manifest. "
                f"{LAYOUT_HELP}"
            )
        if manifest is not None or splits is not None:
            raise InvalidInputError(
                f"{root_arg!r} is a manifest; do not also pass splits or another manifest."
            )
        manifest, root_arg = root_arg, None

    if manifest is not None:
        if root_arg is not None or splits is not None:
            raise InvalidInputError(
                "Give either a manifest or a dataset directory / --split folders, not both: "
                "manifest paths are relative to the manifest's own folder."
            )
        from splitaudit.sources.manifest import read_manifest  # avoids an import cycle

        return read_manifest(manifest)

    root_abs = None
    if root_arg is not None:
        if not os.path.exists(root_arg):
            raise InvalidInputError(f"Dataset directory {root_arg!r} does not exist.")
        if not os.path.isdir(root_arg):
            raise InvalidInputError(f"{root_arg!r} is not a directory. {LAYOUT_HELP}")
        root_abs = os.path.abspath(root_arg)

    if splits is not None:
        return _discover_explicit(root_abs, splits)
    assert root_arg is not None and root_abs is not None
    return _discover_folders(root_arg, root_abs)
