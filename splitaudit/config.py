"""AuditConfig: every setting of a scan, validated where it enters."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from splitaudit.errors import invalid_param
from splitaudit.fingerprints.embedder import DEFAULT_BATCH_SIZE
from splitaudit.matching import MatchConfig
from splitaudit.report import FAIL_ON, FAIL_ON_STATUSES, parse_fail_on


@dataclass(frozen=True)
class AuditConfig:
    """Settings of one audit.

    Attributes
    ----------
    embeddings : bool
        Compute CNN embeddings (needs TensorFlow and weights). False = hash-only scan.
    weights : str or None
        Explicit weights file for the CNN.
    download_weights : bool
        Allow Keras to download ImageNet weights when none are cached (network access).
    require_embeddings : bool
        Fail instead of falling back to a hash-only scan when weights cannot be had.
    input_size : int or None
        CNN input side (None: the embedder's default).
    batch_size : int
        CNN batch size (``Embedder.batch_size``).
    workers : int or None
        Decoding processes (None: automatic; 0: in-process).
    max_pixels : int or None
        Decompression-bomb limit (None: Pillow's default).
    fail_on : str
        ``exact``, ``near``, ``similar`` or ``never``: which matches make the exit code 1. A
        comma-separated value may also name ``shifted``, ``easier`` or shift check ids
        (``"near,shifted"``); those move to ``fail_on_findings``.
    fail_on_findings : tuple of str
        Verdict statuses (``shifted``, ``easier``) or shift check ids that also make the exit
        code 1 when they hold (none by default: shift findings are reported, not fatal).
    max_leak_rate : float
        Share of a split's samples that may have copies before it counts as leaked.
    checks : tuple of str or None
        Check ids to run (None: all).
    match : MatchConfig
        Matcher thresholds.
    cache : bool
        Keep fingerprints, embeddings and matches in a persistent cache
        (:mod:`splitaudit.cache`), so a re-scan only fingerprints what changed. The CLI turns
        it on by default; the Python API leaves it off unless asked.
    cache_dir : str or None
        Folder of the cache databases (None: ``$XDG_CACHE_HOME/splitaudit``, else
        ``~/.cache/splitaudit``; one database per dataset root).
    shift : ShiftConfig or None
        Significance level and effect-size thresholds of the shift checks
        (:class:`splitaudit.checks.shift.ShiftConfig`; None: its defaults).
    """

    embeddings: bool = True
    weights: str | None = None
    download_weights: bool = False
    require_embeddings: bool = False
    input_size: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int | None = None
    max_pixels: int | None = None
    fail_on: str = "near"
    max_leak_rate: float = 0.0
    checks: tuple[str, ...] | None = None
    match: MatchConfig = field(default_factory=MatchConfig)
    cache: bool = False
    cache_dir: str | None = None
    fail_on_findings: tuple[str, ...] = ()
    shift: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.fail_on, str) and "," in self.fail_on or self.fail_on in FAIL_ON_STATUSES:
            level, extras = parse_fail_on(self.fail_on)
            object.__setattr__(self, "fail_on", level)
            object.__setattr__(self, "fail_on_findings", (*self.fail_on_findings, *extras))
        if self.fail_on_findings:
            _, extras = parse_fail_on(["never", *self.fail_on_findings])
            object.__setattr__(self, "fail_on_findings", extras)
        if self.shift is not None:
            from splitaudit.checks.shift import ShiftConfig

            if not isinstance(self.shift, ShiftConfig):
                raise invalid_param("shift", "scan", "a ShiftConfig or None", self.shift)
        if not isinstance(self.cache, bool):
            raise invalid_param("cache", "scan", "True or False", self.cache)
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise invalid_param("cache_dir", "scan", "a folder path or None", self.cache_dir)
        if self.fail_on not in FAIL_ON:
            raise invalid_param("fail_on", "scan", f"one of {', '.join(FAIL_ON)}", self.fail_on)
        r = self.max_leak_rate
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0.0 <= r <= 1.0:
            raise invalid_param("max_leak_rate", "scan", "a float in [0, 1]", r)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise invalid_param("batch_size", "scan", "a positive int", self.batch_size)
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise invalid_param("workers", "scan", "a non-negative int", self.workers)
        if self.max_pixels is not None and (not isinstance(self.max_pixels, int) or self.max_pixels < 1):
            raise invalid_param("max_pixels", "scan", "a positive int", self.max_pixels)
        if self.weights is not None and not os.path.isfile(self.weights):
            raise invalid_param("weights", "scan", "an existing weights file", self.weights)
        if self.checks is not None:
            from splitaudit.checks import REGISTRY

            for c in self.checks:
                if c not in REGISTRY:
                    raise invalid_param("checks", "scan", f"check ids from {', '.join(REGISTRY)}", c)

    @property
    def alpha(self) -> float:
        """Significance level of the shift checks and of the verdict (0.05 by default)."""
        return 0.05 if self.shift is None else self.shift.alpha

    def to_dict(self) -> dict:
        """Plain dict of the settings (for the report)."""
        return asdict(self)


def shift_config_from(values: dict[str, Any], owner: str = "scan"):
    """A :class:`~splitaudit.checks.shift.ShiftConfig` from a plain mapping (TOML table, flags).

    Unknown names are an error naming the known ones; values are validated by ShiftConfig.
    """
    from dataclasses import fields

    from splitaudit.checks.shift import ShiftConfig

    known = {f.name: f for f in fields(ShiftConfig)}
    for name in values:
        if name not in known:
            raise invalid_param(name, owner, f"one of the shift settings {', '.join(known)}", values[name])
    kwargs = {}
    for name, value in values.items():
        default = getattr(ShiftConfig(), name)
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            if not value.is_integer():
                raise invalid_param(name, owner, "an integer", value)
            value = int(value)
        kwargs[name] = value
    return ShiftConfig(**kwargs)
