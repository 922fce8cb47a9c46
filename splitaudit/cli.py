"""Command line: argument parsing, progress on stderr, exit codes. Nothing else.

Exit codes: 0 no leak passes the fail threshold, 1 a leak does, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence

from splitaudit._version import __version__

EXIT_OK, EXIT_LEAK, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback
        self.exit(EXIT_USAGE, f"splitaudit: error: {message} (see '{self.prog} --help')\n")


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


DEFAULT_BASELINE_NAME = "splitaudit-baseline.json"


def _fail_on(text: str) -> tuple[str, tuple[str, ...]]:
    from splitaudit.errors import InvalidInputError
    from splitaudit.report import parse_fail_on

    try:
        return parse_fail_on(text)
    except InvalidInputError:
        raise argparse.ArgumentTypeError(
            "must be a match kind (exact, near, similar, never) and/or shifted, easier or a shift "
            f"check id, comma-separated; got {text!r}") from None


def _open_unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}")
    return value


def _shift_config(pairs: list[str], alpha: float | None, table: dict | None):
    """ShiftConfig from [tool.splitaudit.shift], then --alpha and --shift-threshold on top."""
    from splitaudit.config import shift_config_from

    values = dict(table or {})
    for item in pairs:
        name, sep, value = item.partition("=")
        if not sep:
            raise _usage(f"--shift-threshold expects NAME=VALUE, got {item!r}")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise _usage(f"--shift-threshold {name.strip()} must be a number, got {value!r}") from None
    if alpha is not None:
        values["alpha"] = alpha
    return shift_config_from(values, owner="--shift-threshold") if values else None


def _leak_check_ids() -> tuple[str, ...]:
    # check/baseline report copies and unreadable files only: the shift statistics would read
    # every embedding on each commit and cannot be baselined per file.
    from splitaudit.checks import REGISTRY

    return tuple(cid for cid, cls in REGISTRY.items() if not getattr(cls, "flags", None))


def _check_ids(text: str) -> list[str]:
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise argparse.ArgumentTypeError(f"must be comma-separated check ids, got {text!r}")
    return ids


def _add_dataset_options(p: argparse.ArgumentParser, command: str) -> None:
    """Options shared by scan, check and baseline (all may also come from [tool.splitaudit])."""
    hash_default = "on" if command == "scan" else "off"
    p.add_argument("dataset", nargs="?", metavar="DATASET_DIR",
                   help="folder with train/ and val/ and/or test/ (class subfolders optional), or a CSV "
                        "manifest (default: 'dataset' in [tool.splitaudit])")
    p.add_argument("--split", action="append", default=[], metavar="NAME=PATH",
                   help="explicit split folder (repeatable); paths are relative to DATASET_DIR when given")
    p.add_argument("--manifest", metavar="CSV", help="CSV with columns path,split[,label][,group]")
    p.add_argument("--config", metavar="FILE",
                   help="pyproject.toml (or other TOML file) whose [tool.splitaudit] table to read "
                        "(default: the nearest pyproject.toml with one, from the current directory up "
                        "to the repository root)")
    p.add_argument("--fail-on", type=_fail_on, default=None, metavar="KIND[,STATUS]",
                   help="exit 1 when matches of this kind or worse (exact, near, similar; never) exceed "
                        "--max-leak-rate (default near); add shifted, easier or a shift check id to "
                        "also fail on those, e.g. near,shifted")
    p.add_argument("--alpha", type=_open_unit_float, default=None, metavar="P",
                   help="significance level of the shift checks, Holm-corrected across them (default 0.05)")
    p.add_argument("--shift-threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="override a shift-check setting (repeatable), e.g. domain_threshold=0.6; "
                        "see README 'Shift and easier validation' for the names")
    p.add_argument("--max-leak-rate", type=_unit_float, default=None, metavar="RATE",
                   help="share of a split's samples allowed to have copies (default 0)")
    p.add_argument("--embeddings", dest="embeddings", action="store_const", const=True, default=None,
                   help=f"compute CNN embeddings (needs TensorFlow and weights; default {hash_default})")
    p.add_argument("--no-embeddings", dest="embeddings", action="store_const", const=False,
                   help="hash-only scan: no CNN, TensorFlow is not imported")
    p.add_argument("--weights", metavar="FILE", help="MobileNetV2 ImageNet no-top weights file (.h5)")
    p.add_argument("--near-threshold", type=_unit_float, metavar="NCC",
                   help="aligned-NCC threshold for near duplicates (default 0.96; 0.90 when the CNN agrees)")
    p.add_argument("--similar-threshold", type=_unit_float, metavar="NCC",
                   help="aligned-NCC threshold for similar pairs (default 0.94)")
    p.add_argument("--checks", type=_check_ids, metavar="ID[,ID]",
                   help="check ids to run" + (" (default: all)" if command == "scan" else
                                              " and report (default: cross_split_duplicates,label_conflicts,"
                                              "unreadable_files)"))
    p.add_argument("--workers", type=_non_negative_int, metavar="N",
                   help="decoding processes (default: cores, less one for the CNN; 0 = in-process)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="folder of the fingerprint cache (default $XDG_CACHE_HOME/splitaudit or "
                        "~/.cache/splitaudit; one SQLite database per dataset directory)")
    p.add_argument("--cache", dest="cache", action="store_const", const=True, default=None,
                   help="use the fingerprint cache (default)")
    p.add_argument("--no-cache", dest="cache", action="store_const", const=False,
                   help="neither read nor write the fingerprint cache")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or notices on stderr")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(
        prog="splitaudit",
        description="Find leaked (duplicated), shifted or easier validation/test splits.",
    )
    parser.add_argument("--version", action="version", version=f"splitaudit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    scan = sub.add_parser("scan", help="audit a dataset directory or manifest",
                          description="Fingerprint every sample, search across splits and print a verdict. "
                                      "Settings not given as flags come from [tool.splitaudit] in pyproject.toml.")
    _add_dataset_options(scan, "scan")
    scan.add_argument("--format", choices=("text", "json", "html"), default="text",
                      help="report format (default text); html is one self-contained file, best with --output")
    scan.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout")
    scan.add_argument("--download-weights", action="store_true",
                      help="let Keras download the ImageNet weights if they are not cached (network)")
    scan.add_argument("--require-embeddings", action="store_true",
                      help="exit 2 instead of falling back to a hash-only scan when weights are missing")
    scan.add_argument("--batch-size", type=_non_negative_int, default=None, metavar="N",
                      help="CNN batch size (default 64)")

    check = sub.add_parser(
        "check", help="fail on new leaks (pre-commit hook): one line per problem not in the baseline",
        description="Scan (hash-only and cached unless configured otherwise), print one line per finding "
                    "not accepted in the baseline and one per baseline entry that no longer applies; "
                    "exit 1 when a new finding fails, else 0.")
    _add_dataset_options(check, "check")
    check.add_argument("--baseline", metavar="FILE",
                       help=f"accepted findings (default: {DEFAULT_BASELINE_NAME} next to the pyproject.toml "
                            "holding [tool.splitaudit], else in the dataset directory)")

    base = sub.add_parser(
        "baseline", help="accept the current findings: write the baseline file that check compares against",
        description="Scan like 'check' and write every current finding to a sorted, reviewable JSON "
                    "baseline; 'check' then fails only on findings not in it.")
    _add_dataset_options(base, "baseline")
    base.add_argument("--output", "-o", "--baseline", dest="output", metavar="FILE",
                      help=f"baseline file to write (default as for check: {DEFAULT_BASELINE_NAME})")

    demo = sub.add_parser("demo", help="write an example dataset with planted leaks",
                          description="Write a small train/val/test image dataset with planted copies of every kind.")
    demo.add_argument("directory", metavar="DIR", help="where to write it (must not exist or be empty)")
    demo.add_argument("--seed", type=_non_negative_int, default=0)

    sub.add_parser("list-checks", help="list the registered checks and their ids")

    expl = sub.add_parser(
        "explain", help="why is validation loss/accuracy better than training? ranked reasons",
        description="Rank the known reasons why validation beats training (regularization active only "
                    "in training, epoch-averaged training loss, augmentation, a leaked or easier split, "
                    "over-regularization) with the evidence found in the history, the model and the data.")
    expl.add_argument("history", metavar="HISTORY",
                      help="History.history saved as JSON, or a CSVLogger CSV")
    expl.add_argument("--model", metavar="MODEL", help="the trained model (.keras): inspect its layers; "
                      "with --data, measure the training-only effects")
    expl.add_argument("--data", metavar="DATASET_DIR",
                      help="the dataset (train/ and val/ folders): audited (hash-only) unless --report "
                           "is given, and used with --model to measure")
    expl.add_argument("--report", metavar="REPORT_JSON", help="a JSON report of 'splitaudit scan'")
    expl.add_argument("--plot", metavar="FILE", help="write a PNG of the raw and half-epoch-shifted curves "
                      "(needs matplotlib: pip install 'splitaudit[plot]')")
    expl.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    expl.add_argument("--samples", type=_non_negative_int, default=1024, metavar="N",
                      help="training samples used for the measurement (default 1024)")
    expl.add_argument("--batch-size", type=_non_negative_int, default=32, metavar="N",
                      help="batch size of the measurement; use fit's (default 32)")
    return parser


#: TensorFlow's native log lines: absl's prefix (severity letter I/W/E/F, date, time, thread,
#: file:line]; before absl's initialisation the time is 00:00:<epoch seconds>) and absl's
#: notice that logging started before its initialisation.
_NATIVE_LOG = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+\] ")
_ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


@contextlib.contextmanager
def _tensorflow_stderr() -> Iterator[None]:
    """Hold TensorFlow's native start-up lines to ``TF_CPP_MIN_LOG_LEVEL`` (the CLI owns stderr).

    absl prints every line logged before its initialisation whatever the level says (TF 2.21:
    the oneDNN and CUDA notices, twice per scan, and absl's notice about it). Meanwhile file
    descriptor 2 is a pipe whose lines are forwarded unless they are such log lines below the
    level; Python's ``sys.stderr`` (progress, notices, errors) writes to the real stderr
    directly, so nothing of ours waits on the filter.
    """
    level = {"1": 1, "2": 2, "3": 3}.get(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip(), 0)
    if level == 0 or os.name != "posix":
        yield
        return
    dropped = b"IWEF"[:level]
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    python_stderr = sys.stderr
    sys.stderr = io.TextIOWrapper(io.FileIO(real, "w", closefd=False), encoding=python_stderr.encoding,
                                  errors=python_stderr.errors, line_buffering=True)

    def forward() -> None:
        with open(read_end, "rb", buffering=0) as pipe:
            for line in iter(pipe.readline, b""):
                match = _NATIVE_LOG.match(line)
                if (match and match[1] in dropped) or line.rstrip(b"\r\n") == _ABSL_NOTICE:
                    continue
                os.write(real, line)

    pump = threading.Thread(target=forward, name="splitaudit-stderr", daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = python_stderr
        os.dup2(real, 2)  # closes our write end: the pump sees the end of the pipe
        pump.join(timeout=5.0)  # a child process still holding the pipe must not hang us
        os.close(real)


class _Progress:
    """Progress bars on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = None
        self._tasks: dict[str, int] = {}
        if self.enabled:
            # Imported now, not at the first update: a scan's thread may be importing then.
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._make = lambda: Progress("[progress.description]{task.description}", BarColumn(),
                                          MofNCompleteColumn(), TimeRemainingColumn(),
                                          console=Console(file=sys.stderr), transient=True)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = self._make()
            self._bar.start()
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=total)
        self._bar.update(self._tasks[stage], completed=done, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename, so readers never see half a
    report. Only regular files are replaced that way: ``-o /dev/null``, a FIFO or
    ``/dev/stdout`` are written in place (renaming over them would replace the device node with
    a regular file), and a symlink keeps pointing where it did."""
    import stat

    target = os.path.realpath(path)
    try:
        regular = stat.S_ISREG(os.stat(target).st_mode)
    except FileNotFoundError:
        regular = True
    if not regular:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    tmp = f"{target}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, target)


class _Settings:
    """CLI flags merged over [tool.splitaudit] over the command's defaults."""

    def __init__(self, args: argparse.Namespace, command: str) -> None:
        from splitaudit.project import find_config, load_config

        self.command = command
        self.project = load_config(args.config if args.config else find_config())
        cfg = self.project.get
        # Where the data is: the command line wins as a whole, except that config 'splits'
        # still name the folders inside a DATASET_DIR given on the command line.
        if args.dataset is not None or args.split or args.manifest:
            self.dataset, self.manifest = args.dataset, args.manifest
            if args.split:
                from splitaudit.sources import parse_split_arg

                self.splits = dict(parse_split_arg(s) for s in args.split)
            else:
                self.splits = cfg("splits") if args.dataset is not None and not args.manifest else None
        else:
            self.dataset, self.splits, self.manifest = cfg("dataset"), cfg("splits"), cfg("manifest")
            if self.splits is not None and self.dataset is None and self.project.folder is not None:
                # Split folders relative to the configuration file when no dataset is named.
                self.splits = {k: os.path.join(self.project.folder, v) for k, v in self.splits.items()}
        if self.dataset is None and not self.splits and not self.manifest:
            raise _usage(f"{command} needs DATASET_DIR, --split NAME=PATH or --manifest CSV "
                         "(or 'dataset' in [tool.splitaudit] of pyproject.toml)")

        def pick(flag, key, default):
            return flag if flag is not None else cfg(key, default)

        if args.fail_on is not None:
            self.fail_on, self.fail_on_findings = args.fail_on
        else:
            from splitaudit.report import parse_fail_on

            self.fail_on, self.fail_on_findings = parse_fail_on(cfg("fail_on", "near"))
        self.max_leak_rate = pick(args.max_leak_rate, "max_leak_rate", 0.0)
        self.embeddings = pick(args.embeddings, "embeddings", command == "scan")
        self.checks = pick(args.checks, "checks", None)
        self.baseline = cfg("baseline")
        cache = pick(args.cache, "cache", True)
        cache_dir = pick(args.cache_dir, "cache_dir", None)
        match_kwargs = {}
        for key in ("near_threshold", "similar_threshold"):
            value = pick(getattr(args, key), key, None)
            if value is not None:
                match_kwargs[key] = value
        from splitaudit.config import AuditConfig
        from splitaudit.matching import MatchConfig

        from splitaudit.fingerprints.embedder import DEFAULT_BATCH_SIZE

        batch_size = getattr(args, "batch_size", None)
        if batch_size == 0:
            raise _usage("--batch-size must be at least 1")
        batch_size = batch_size or DEFAULT_BATCH_SIZE
        self.config = AuditConfig(
            embeddings=self.embeddings, weights=pick(args.weights, "weights", None),
            download_weights=getattr(args, "download_weights", False),
            require_embeddings=getattr(args, "require_embeddings", False),
            workers=pick(args.workers, "workers", None), batch_size=batch_size, fail_on=self.fail_on,
            max_leak_rate=self.max_leak_rate, fail_on_findings=self.fail_on_findings,
            shift=_shift_config(args.shift_threshold, pick(args.alpha, "alpha", None), cfg("shift")),
            checks=tuple(self.checks) if self.checks and command == "scan" else (
                None if command == "scan" else _leak_check_ids()),
            match=MatchConfig(**match_kwargs), cache=cache, cache_dir=cache_dir,
        )
        if self.config.embeddings:
            # The CLI owns stderr: keep TensorFlow's C++ start-up chatter out of it.
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            # This process is ours: one thread per op, the batch's parts side by side on the
            # inter-op threads (embedder.PART_SIZE: 640 img/s instead of 446 on 2 cores).
            os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

    def audit(self, args: argparse.Namespace, samples=None):
        """Discover (unless given) and audit, with progress and notices on stderr."""
        from splitaudit.api import audit_samples
        from splitaudit.sources import discover

        if samples is None:
            samples = discover(self.dataset, splits=self.splits, manifest=self.manifest)
        quiet = _tensorflow_stderr() if self.config.embeddings else contextlib.nullcontext()
        with quiet:
            progress = _Progress(not args.quiet)
            notice = None if args.quiet else (lambda text: print(f"splitaudit: {text}", file=sys.stderr))
            try:
                return audit_samples(samples, self.config, progress=progress, notice=notice)
            finally:
                progress.close()

    def baseline_path(self, flag: str | None, samples) -> str:
        """Baseline file: the flag, the config key, next to the config file, else in the dataset."""
        if flag:
            return flag
        if self.baseline:
            return self.baseline
        if self.project.folder is not None:
            return os.path.join(self.project.folder, DEFAULT_BASELINE_NAME)
        return os.path.join(os.fspath(samples.root or "."), DEFAULT_BASELINE_NAME)


def _display(root: str | None):
    """Paths as the user can open them: relative to the working directory when inside it."""
    from pathlib import PurePath

    if root is None:
        return lambda p: p
    cwd = os.path.join(os.path.abspath(os.getcwd()), "")
    absolute = os.path.abspath(root)
    inside = os.path.join(absolute, "").startswith(cwd)  # the working directory itself included
    prefix = os.path.relpath(absolute, cwd) if inside else absolute
    prefix = "" if prefix == os.curdir else PurePath(prefix).as_posix() + "/"
    return lambda p: p if p is None or os.path.isabs(p) else prefix + p


def _cmd_scan(args: argparse.Namespace) -> int:
    settings = _Settings(args, "scan")
    report = settings.audit(args)
    if args.format == "json":
        from splitaudit.render.json import render_json

        text = render_json(report)
    elif args.format == "html":
        from splitaudit.render.html import render_html

        text = render_html(report)
    else:
        from splitaudit.render.text import render_text

        text = render_text(report, color=args.output is None and sys.stdout.isatty())
    if args.output:
        _write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return report.exit_code


def _cmd_check(args: argparse.Namespace) -> int:
    from splitaudit.baseline import compare, findings, load_baseline
    from splitaudit.sources import discover

    settings = _Settings(args, "check")
    samples = discover(settings.dataset, splits=settings.splits, manifest=settings.manifest)
    path = settings.baseline_path(args.baseline, samples)
    baseline = load_baseline(path)  # a malformed baseline fails before the scan
    report = settings.audit(args, samples)
    found = findings(report, fail_on=settings.fail_on, checks=settings.checks)
    result = compare(found, baseline)
    show = _display(report.dataset)
    for f in result.new:
        print(f.line(show))
    name = os.path.basename(path)
    for f in result.stale:
        what = f"{show(f.path)}" if f.kind == "unreadable" else f"{show(f.path)} ~ {show(f.other)} ({f.match})"
        print(f"STALE baseline entry {what}: no longer found; drop it with 'splitaudit baseline'")
    failing = _failing(result.new, report, settings.max_leak_rate)
    if not args.quiet:
        accepted = f"{len(result.accepted)} accepted in {name}" if baseline.exists else f"no {name}"
        if failing:
            where = settings.dataset or settings.manifest or "the dataset"
            print(f"splitaudit: {len(failing)} new problem(s) ({accepted}). Fix them, or accept them "
                  f"with: splitaudit baseline {where}", file=sys.stderr)
        elif result.new:
            print(f"splitaudit: {len(result.new)} new finding(s) within --max-leak-rate "
                  f"{settings.max_leak_rate:g} ({accepted})", file=sys.stderr)
        else:
            print(f"splitaudit: OK, no new problems ({accepted}; {sum(report.splits.values())} samples)",
                  file=sys.stderr)
    return EXIT_LEAK if failing else EXIT_OK


def _failing(new: list, report, max_leak_rate: float) -> list:
    """New findings that fail: leaks beyond ``max_leak_rate`` of their split pair, and every
    other finding."""
    sizes = {(s.query_split, s.reference_split): s.query_samples for s in report.split_pairs}
    leaked: dict[tuple, set] = {}
    for f in new:
        if f.kind == "leak":
            leaked.setdefault((f.split, f.reference_split), set()).add(f.path)
    over = {k for k, paths in leaked.items() if len(paths) / max(sizes.get(k, 0), 1) > max_leak_rate}
    return [f for f in new if f.kind != "leak" or (f.split, f.reference_split) in over]


def _cmd_baseline(args: argparse.Namespace) -> int:
    from splitaudit.baseline import findings, load_baseline, write_baseline
    from splitaudit.errors import InvalidInputError
    from splitaudit.sources import discover

    settings = _Settings(args, "baseline")
    samples = discover(settings.dataset, splits=settings.splits, manifest=settings.manifest)
    path = settings.baseline_path(args.output, samples)
    try:
        previous = load_baseline(path)
    except InvalidInputError as exc:
        print(f"splitaudit: replacing unreadable baseline: {exc}", file=sys.stderr)
        previous = None
    report = settings.audit(args, samples)
    found = findings(report, fail_on=settings.fail_on, checks=settings.checks)
    root = os.fspath(samples.root) if samples.root is not None else None
    dataset = None
    if root is not None:
        try:
            dataset = os.path.relpath(root, os.path.dirname(os.path.abspath(path))).replace(os.sep, "/")
        except ValueError:
            dataset = root
    write_baseline(path, found, dataset)
    keys = {f.key for f in found}
    counts = {k: sum(1 for f in found if f.kind == k) for k in ("leak", "duplicate", "unreadable")}
    change = ""
    if previous is not None and previous.exists:
        added = len(keys - set(previous.entries))
        dropped = len(set(previous.entries) - keys)
        change = f" ({added} added, {dropped} dropped)"
    print(f"Wrote {path}: {counts['leak']} leaks, {counts['duplicate']} within-split duplicates and "
          f"{counts['unreadable']} unreadable files accepted{change}. Review and commit it; "
          "'splitaudit check' now fails only on findings not in it.")
    return EXIT_OK


#: The demo's test split is this much brighter than train: a shift the scan should report.
DEMO_TEST_BRIGHTNESS = 1.3


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splitaudit.synth import EXACT_FAMILIES, NEAR_FAMILIES, make_dataset

    root = Path(args.directory)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise _usage(f"'{root}' exists and is not an empty directory; demo never overwrites files")
    planted = make_dataset(root, classes=4, train_per_class=40, val_per_class=10, test_per_class=10,
                           size=128, families=EXACT_FAMILIES + NEAR_FAMILIES, seed=args.seed,
                           brightness={"test": DEMO_TEST_BRIGHTNESS})
    print(f"Wrote a demo dataset to {root}: 4 classes, train/val/test, "
          f"{len(planted)} planted copies of train images in val:")
    for p in planted:
        print(f"  {p.kind:5s} {p.family:10s} {p.query} <- {p.reference}")
    print(f"and a planted shift: every test image is {100 * (DEMO_TEST_BRIGHTNESS - 1):.0f}% brighter "
          "than train (another camera).")
    print(f"Now run: splitaudit scan {root}")
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    if args.samples < 1 or args.batch_size < 1:
        raise _usage("--samples and --batch-size must be at least 1")
    from splitaudit.diagnosis import load_history

    history = load_history(args.history)  # a bad HISTORY fails before Keras is imported
    if args.model or args.data:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's chatter off stderr
    from splitaudit.diagnosis import explain

    with _tensorflow_stderr() if args.model or args.data else contextlib.nullcontext():
        result = explain(history, model=args.model, report=args.report, data=args.data,
                         max_samples=args.samples, batch_size=args.batch_size)
    if args.plot:
        result.plot(args.plot)
    if args.format == "json":
        import json

        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(result.to_text())
    return EXIT_OK


def _cmd_list_checks() -> int:
    from splitaudit.checks import list_checks

    for cid, summary in list_checks():
        print(f"{cid:26s} {summary}")
    return EXIT_OK


class _UsageError(Exception):
    pass


def _usage(message: str) -> _UsageError:
    return _UsageError(message)


def _limit_malloc_arenas() -> None:
    """One glibc malloc arena for this process (the CLI owns it; the library never does this).

    Each thread that allocates (k-NN query threads, FAISS and BLAS workers) otherwise gets an
    arena of its own, and freed memory stays in them: on a 5,000-image scan that was 18 KB
    per image of peak RSS that no array needed (benchmarks/speed.py). The threads' large
    arrays are mmap'd outside the arenas, so sharing one costs no measurable time.
    """
    if not sys.platform.startswith("linux") or os.environ.get("MALLOC_ARENA_MAX"):
        return  # the user chose; or not glibc's malloc
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # musl and others: no mallopt, nothing to limit


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    _limit_malloc_arenas()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from splitaudit.errors import InvalidInputError, MissingWeightsError

    try:
        if args.command == "scan":
            return _cmd_scan(args)
        if args.command == "check":
            return _cmd_check(args)
        if args.command == "baseline":
            return _cmd_baseline(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "explain":
            return _cmd_explain(args)
        return _cmd_list_checks()
    except (InvalidInputError, _UsageError) as exc:
        print(f"splitaudit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MissingWeightsError as exc:
        print(f"splitaudit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("splitaudit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `splitaudit scan ... | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def run() -> None:
    """Console entry point: :func:`main`, then a fast exit once everything is written.

    Tearing the interpreter down after a scan (freeing every object, unloading scipy,
    scikit-learn, FAISS, TensorFlow) took 0.2 s of a 6.5 s scan of 20,000 images, and there is
    nothing left for it to do: the report is written and closed, the cache closed, the worker
    processes and threads joined. Only the console script and ``python -m`` exit this way;
    :func:`main` stays a plain function for callers.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader left (`... | head`): nothing more can reach it
        pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
