"""Command line: argument parsing, progress on stderr, exit codes. Nothing else.

Exit codes: 0 no leak passes the fail threshold, 1 a leak does, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(
        prog="splitaudit",
        description="Find leaked (duplicated), shifted or easier validation/test splits.",
    )
    parser.add_argument("--version", action="version", version=f"splitaudit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    scan = sub.add_parser("scan", help="audit a dataset directory or manifest",
                          description="Fingerprint every sample, search across splits and print a verdict.")
    scan.add_argument("dataset", nargs="?", metavar="DATASET_DIR",
                      help="folder with train/ and val/ and/or test/ (class subfolders optional), or a CSV manifest")
    scan.add_argument("--split", action="append", default=[], metavar="NAME=PATH",
                      help="explicit split folder (repeatable); paths are relative to DATASET_DIR when given")
    scan.add_argument("--manifest", metavar="CSV", help="CSV with columns path,split[,label][,group]")
    scan.add_argument("--format", choices=("text", "json", "html"), default="text",
                      help="report format (default text); html is one self-contained file, best with --output")
    scan.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout")
    scan.add_argument("--fail-on", choices=("exact", "near", "similar", "never"), default="near",
                      help="exit 1 when matches of this kind or worse exceed --max-leak-rate (default near)")
    scan.add_argument("--max-leak-rate", type=_unit_float, default=0.0, metavar="RATE",
                      help="share of a split's samples allowed to have copies (default 0)")
    scan.add_argument("--no-embeddings", action="store_true",
                      help="hash-only scan: no CNN, TensorFlow is not imported")
    scan.add_argument("--weights", metavar="FILE", help="MobileNetV2 ImageNet no-top weights file (.h5)")
    scan.add_argument("--download-weights", action="store_true",
                      help="let Keras download the ImageNet weights if they are not cached (network)")
    scan.add_argument("--require-embeddings", action="store_true",
                      help="exit 2 instead of falling back to a hash-only scan when weights are missing")
    scan.add_argument("--near-threshold", type=_unit_float, metavar="NCC",
                      help="aligned-NCC threshold for near duplicates (default 0.90)")
    scan.add_argument("--similar-threshold", type=_unit_float, metavar="NCC",
                      help="aligned-NCC threshold for similar pairs (default 0.85)")
    scan.add_argument("--workers", type=_non_negative_int, metavar="N",
                      help="decoding processes (default: cores, less one for the CNN; 0 = in-process)")
    scan.add_argument("--batch-size", type=_non_negative_int, default=64, metavar="N", help="CNN batch size")
    scan.add_argument("--quiet", "-q", action="store_true", help="no progress or notices on stderr")

    demo = sub.add_parser("demo", help="write an example dataset with planted leaks",
                          description="Write a small train/val/test image dataset with planted copies of every kind.")
    demo.add_argument("directory", metavar="DIR", help="where to write it (must not exist or be empty)")
    demo.add_argument("--seed", type=_non_negative_int, default=0)

    sub.add_parser("list-checks", help="list the registered checks and their ids")
    return parser


class _Progress:
    """Progress bars on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = None
        self._tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._bar = Progress("[progress.description]{task.description}", BarColumn(),
                                 MofNCompleteColumn(), TimeRemainingColumn(),
                                 console=Console(file=sys.stderr), transient=True)
            self._bar.start()
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=total)
        self._bar.update(self._tasks[stage], completed=done, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _cmd_scan(args: argparse.Namespace) -> int:
    from splitaudit.api import scan
    from splitaudit.config import AuditConfig
    from splitaudit.matching import MatchConfig
    from splitaudit.sources import parse_split_arg

    if args.dataset is None and not args.split and not args.manifest:
        raise _usage("scan needs DATASET_DIR, --split NAME=PATH or --manifest CSV")
    splits = dict(parse_split_arg(s) for s in args.split) or None
    match_kwargs = {}
    if args.near_threshold is not None:
        match_kwargs["near_threshold"] = args.near_threshold
    if args.similar_threshold is not None:
        match_kwargs["similar_threshold"] = args.similar_threshold
    if args.batch_size < 1:
        raise _usage("--batch-size must be at least 1")
    config = AuditConfig(
        embeddings=not args.no_embeddings, weights=args.weights,
        download_weights=args.download_weights, require_embeddings=args.require_embeddings,
        workers=args.workers, batch_size=args.batch_size, fail_on=args.fail_on,
        max_leak_rate=args.max_leak_rate, match=MatchConfig(**match_kwargs),
    )
    if config.embeddings:
        # The CLI owns stderr: keep TensorFlow's C++ start-up chatter out of it.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    progress = _Progress(not args.quiet)
    notice = None if args.quiet else (lambda text: print(f"splitaudit: {text}", file=sys.stderr))
    try:
        report = scan(args.dataset, splits=splits, manifest=args.manifest, config=config,
                      progress=progress, notice=notice)
    finally:
        progress.close()
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splitaudit.synth import EXACT_FAMILIES, NEAR_FAMILIES, make_dataset

    root = Path(args.directory)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise _usage(f"'{root}' exists and is not an empty directory; demo never overwrites files")
    planted = make_dataset(root, classes=4, train_per_class=40, val_per_class=10, test_per_class=10,
                           size=128, families=EXACT_FAMILIES + NEAR_FAMILIES, seed=args.seed)
    print(f"Wrote a demo dataset to {root}: 4 classes, train/val/test, "
          f"{len(planted)} planted copies of train images in val:")
    for p in planted:
        print(f"  {p.kind:5s} {p.family:10s} {p.query} <- {p.reference}")
    print(f"Now run: splitaudit scan {root}")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
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
        if args.command == "demo":
            return _cmd_demo(args)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
