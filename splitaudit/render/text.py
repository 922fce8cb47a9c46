"""Terminal rendering of an AuditReport (rich markup, plain text when not a terminal)."""

from __future__ import annotations

import io

from splitaudit.report import AuditReport, DuplicatePair

#: Pairs listed per kind on the terminal; JSON always carries all of them.
MAX_ROWS = 20


def _side(p: DuplicatePair, which: str) -> str:
    ref = getattr(p, which)
    where = ref.path if ref.path is not None else f"[{ref.index}]"
    label = f" ({ref.label})" if ref.label is not None else ""
    return f"{ref.split}/{where}{label}" if ref.path is None else f"{where}{label}"


def render_text(report: AuditReport, *, color: bool = False, width: int = 110) -> str:
    """Human-readable report.

    Parameters
    ----------
    report : AuditReport
    color : bool
        Emit ANSI colours (when stdout is a terminal).
    width : int
        Console width for tables.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=color, no_color=not color, width=width,
                      highlight=False, soft_wrap=False)
    v = report.verdict
    style = "bold red" if v.status != "ok" else "bold green"
    console.print(f"[{style}]{v.status.upper()}[/]  splitaudit {escape(str(report.settings.get('version')))}"
                  f" - {escape(report.dataset or '')} ({escape(report.layout)})")
    for reason in v.reasons:
        console.print(f"  - {escape(reason)}")
    console.print()

    t = Table(title="Splits", title_justify="left", show_edge=False)
    t.add_column("split")
    t.add_column("samples", justify="right")
    for name, n in report.splits.items():
        t.add_row(escape(name), str(n))
    console.print(t)
    if report.split_pairs:
        t = Table(title="Leaks (query samples with a copy in the reference split)",
                  title_justify="left", show_edge=False)
        for col in ("query", "reference", "exact", "near", "similar", "leak rate"):
            t.add_column(col, justify="left" if col in ("query", "reference") else "right")
        for s in report.split_pairs:
            t.add_row(escape(s.query_split), escape(s.reference_split), str(s.exact), str(s.near),
                      str(s.similar), f"{100 * s.leak_rate:.2f}%")
        console.print(t)

    for kind in ("exact", "near", "similar"):
        pairs = [p for p in report.cross_split_duplicates if p.match == kind]
        if not pairs:
            continue
        console.print()
        t = Table(title=f"{kind} duplicates: {len(pairs)} pairs", title_justify="left", show_edge=False)
        for col in ("query", "reference", "ncc", "cos", "evidence"):
            t.add_column(col, overflow="fold")
        for p in pairs[:MAX_ROWS]:
            mark = " [red]label conflict[/]" if p.label_conflict else ""
            t.add_row(escape(_side(p, "query")), escape(_side(p, "reference")), f"{p.ncc:.3f}",
                      "-" if p.cosine is None else f"{p.cosine:.3f}", escape(p.evidence) + mark)
        console.print(t)
        if len(pairs) > MAX_ROWS:
            console.print(f"  ... and {len(pairs) - MAX_ROWS} more (use --format json for all)")

    if report.label_conflicts:
        console.print()
        console.print(f"[yellow]Label conflicts:[/] {len(report.label_conflicts)} copied pairs have different labels.")
    if report.within_split_duplicates:
        console.print()
        console.print(f"Within-split duplicates (informational): {len(report.within_split_duplicates)} pairs.")
    if report.unreadable:
        console.print()
        t = Table(title=f"Unreadable files: {len(report.unreadable)}", title_justify="left", show_edge=False)
        t.add_column("path", overflow="fold")
        t.add_column("reason", overflow="fold")
        for u in report.unreadable[:MAX_ROWS]:
            t.add_row(escape(u.path), escape(u.reason))
        console.print(t)
        if len(report.unreadable) > MAX_ROWS:
            console.print(f"  ... and {len(report.unreadable) - MAX_ROWS} more")
    for note in report.notes:
        console.print(f"[dim]note: {escape(note)}[/]")

    console.print()
    console.print("[bold]What to do next[/]")
    for line in next_steps(report):
        console.print(f"  - {escape(line)}")
    return buf.getvalue()


def next_steps(report: AuditReport) -> list[str]:
    """Advice that follows from the findings."""
    steps = []
    if report.verdict.status == "leaked":
        steps.append("Remove the listed val/test samples (or move them to train) and re-score your "
                     "model on the leak-free split; scores on copies of training data measure memory.")
        steps.append("Split by group (scene, source video, patient) rather than by file, so copies "
                     "cannot land on both sides.")
    if report.label_conflicts:
        steps.append("Check the label-conflict pairs: one of the two labels is probably wrong.")
    if report.unreadable:
        steps.append("Fix or delete the unreadable files; they were left out of the audit.")
    if any(p.match == "similar" for p in report.cross_split_duplicates):
        steps.append("Look at the 'similar' pairs: same scene or object is not a copy, but many of "
                     "them make validation easier than real-world data.")
    if not steps:
        steps.append("Nothing to fix: no copies across splits were found.")
    return steps
