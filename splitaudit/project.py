"""Project configuration: the ``[tool.splitaudit]`` table of ``pyproject.toml``.

The CLI reads it from the nearest ``pyproject.toml`` (the current directory, then its parents,
up to the repository root) that has such a table, or from ``--config FILE``; command-line flags
override it. Relative paths in it are relative to the file's folder, except ``splits`` folders,
which are relative to the dataset directory (like ``--split``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitaudit.errors import InvalidInputError

#: Key -> (expected type(s), description). Unknown keys are an error (exit 2).
KNOWN_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "dataset": ((str,), "dataset directory (or CSV manifest)"),
    "splits": ((dict,), "table of split name -> folder, relative to the dataset directory"),
    "manifest": ((str,), "CSV manifest with columns path,split[,label][,group]"),
    "fail_on": ((str, list), "a match kind (exact, near, similar, never) plus optionally shifted, "
                             "easier or shift check ids"),
    "alpha": ((int, float), "significance level of the shift checks, in (0, 1)"),
    "shift": ((dict,), "table of shift-check settings (effect-size thresholds, sample limits)"),
    "max_leak_rate": ((int, float), "share of a split allowed to have copies, in [0, 1]"),
    "near_threshold": ((int, float), "aligned-NCC threshold for near duplicates, in [0, 1]"),
    "similar_threshold": ((int, float), "aligned-NCC threshold for similar pairs, in [0, 1]"),
    "embeddings": ((bool,), "compute CNN embeddings (needs TensorFlow and weights)"),
    "weights": ((str,), "MobileNetV2 weights file"),
    "checks": ((list,), "check ids whose findings count"),
    "baseline": ((str,), "baseline file of accepted findings"),
    "cache_dir": ((str,), "folder of the cache databases"),
    "cache": ((bool,), "use the persistent fingerprint cache"),
    "workers": ((int,), "decoding processes (0 = in-process)"),
}
#: Keys holding paths relative to the configuration file's folder.
PATH_KEYS = ("dataset", "manifest", "weights", "baseline", "cache_dir")


@dataclass
class ProjectConfig:
    """Validated ``[tool.splitaudit]`` values (paths made absolute) and where they came from."""

    path: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path | None:
        """Folder of the configuration file."""
        return self.path.parent if self.path is not None else None

    def get(self, key: str, default: Any = None) -> Any:
        """A value, or ``default`` when the key is not set."""
        return self.values.get(key, default)


def _toml():
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def _has_table(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            data = _toml().load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(data.get("tool"), dict) and "splitaudit" in data["tool"]


def find_config(start: str | os.PathLike | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` with a ``[tool.splitaudit]`` table, from ``start`` (the
    current directory) up to the repository root (a folder holding ``.git``), or None."""
    here = Path(os.path.abspath(start if start is not None else os.getcwd()))
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and _has_table(candidate):
            return candidate
        if (folder / ".git").exists():
            break
    return None


def load_config(path: str | os.PathLike | None) -> ProjectConfig:
    """Read and validate ``[tool.splitaudit]`` of ``path`` (None: an empty configuration).

    Raises
    ------
    InvalidInputError
        Unreadable or invalid TOML, no ``[tool.splitaudit]`` table, an unknown key (the message
        names it and lists the known keys) or a value of the wrong type.
    """
    if path is None:
        return ProjectConfig()
    path = Path(os.path.abspath(path))
    try:
        with open(path, "rb") as fh:
            data = _toml().load(fh)
    except OSError as exc:
        raise InvalidInputError(f"Configuration file {os.fspath(path)!r} cannot be read ({exc.strerror}).") from None
    except ValueError as exc:
        raise InvalidInputError(f"Configuration file {os.fspath(path)!r} is not valid TOML: {exc}.") from None
    tool = data.get("tool")
    table = tool.get("splitaudit") if isinstance(tool, dict) else None
    if not isinstance(table, dict):
        raise InvalidInputError(f"Configuration file {os.fspath(path)!r} has no [tool.splitaudit] table.")
    where = f"[tool.splitaudit] of {os.fspath(path)}"
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in KNOWN_KEYS:
            known = ", ".join(KNOWN_KEYS)
            hint = ""
            alt = key.replace("-", "_")
            if alt in KNOWN_KEYS:
                hint = f" (did you mean {alt!r}?)"
            raise InvalidInputError(f"Unknown key {key!r} in {where}{hint}. Known keys: {known}.")
        types, what = KNOWN_KEYS[key]
        ok = isinstance(value, types) and not (bool not in types and isinstance(value, bool))
        if not ok:
            raise InvalidInputError(f"Key {key!r} in {where} must be {_type_name(types)} ({what}); got {value!r}.")
        values[key] = value
    base = path.parent
    for key in PATH_KEYS:
        if key in values:
            values[key] = os.path.normpath(os.path.join(base, os.path.expanduser(values[key])))
    if "splits" in values:
        for name, folder in values["splits"].items():
            if not isinstance(folder, str):
                raise InvalidInputError(f"Split {name!r} in {where} must be a folder path (a string); got {folder!r}.")
    if "checks" in values:
        from splitaudit.checks import REGISTRY

        for cid in values["checks"]:
            if cid not in REGISTRY:
                raise InvalidInputError(
                    f"Unknown check {cid!r} in {where}. Known checks: {', '.join(REGISTRY)}.")
    for key in ("max_leak_rate", "near_threshold", "similar_threshold"):
        if key in values and not 0.0 <= float(values[key]) <= 1.0:
            raise InvalidInputError(f"Key {key!r} in {where} must be a number in [0, 1]; got {values[key]!r}.")
        if key in values:
            values[key] = float(values[key])
    if "fail_on" in values:
        from splitaudit.report import parse_fail_on

        try:
            parse_fail_on(values["fail_on"], owner=where)
        except InvalidInputError:
            raise InvalidInputError(
                f"Key 'fail_on' in {where} must be a match kind (exact, near, similar, never) plus "
                f"optionally shifted, easier or shift check ids; got {values['fail_on']!r}.") from None
    if "alpha" in values and not 0.0 < float(values["alpha"]) < 1.0:
        raise InvalidInputError(f"Key 'alpha' in {where} must be a number in (0, 1); got {values['alpha']!r}.")
    if "shift" in values:
        from splitaudit.config import shift_config_from

        shift_config_from(values["shift"], owner=f"'shift' in {where}")
    if "workers" in values and values["workers"] < 0:
        raise InvalidInputError(f"Key 'workers' in {where} must be a non-negative integer; got {values['workers']!r}.")
    return ProjectConfig(path, values)


def _type_name(types: tuple[type, ...]) -> str:
    names = {str: "a string", dict: "a table", bool: "true or false", list: "an array of strings",
             int: "a number", float: "a number"}
    return " or ".join(dict.fromkeys(names[t] for t in types))
