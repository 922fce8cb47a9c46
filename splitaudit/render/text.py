"""Terminal rendering of an AuditReport (rich markup, plain text when not a terminal)."""

from __future__ import annotations

import io

from splitaudit.report import AuditReport, DuplicatePair

#: Pairs listed per kind on the terminal; JSON always carries all of them.
MAX_ROWS = 20


def _side(p: DuplicatePair, which: str) -> str:
    ref = getattr(p, which)
    label = f" ({ref.label})" if ref.label is not None else ""
    # Array and tf.data samples have no path: "val[17]" is their position in the input.
    return f"{ref.path}{label}" if ref.path is not None else f"{ref.split}[{ref.index}]{label}"


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
    style = {"ok": "bold green", "leaked": "bold red"}.get(v.status, "bold yellow")
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

    if v.shift_tests:
        console.print()
        t = Table(title=f"Shift and difficulty (alpha {v.alpha:g}, Holm-corrected across "
                        f"{len(v.shift_tests)} tests)", title_justify="left", show_edge=False)
        for col in ("check", "finding", "p", "Holm p", "effect", "threshold", "summary"):
            t.add_column(col, overflow="fold", justify="right" if col in ("p", "Holm p", "effect", "threshold")
                         else "left")
        for st in v.shift_tests:
            mark = f"[yellow]{st.flags}[/]" if st.holds else "-"
            summary = report.checks[st.check].summary if st.check in report.checks else ""
            t.add_row(escape(st.check), mark, f"{st.p_value:.2g}", f"{st.p_adjusted:.2g}",
                      f"{st.effect_size:.3g}", f"{st.effect_threshold:g}", escape(summary))
        console.print(t)
    skipped = [(cid, r) for cid, r in report.checks.items() if r.status == "skipped"]
    for cid, r in skipped:
        console.print(f"[dim]{escape(cid)} skipped: {escape(r.summary)}[/]")
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
    if report.leak_adjusted is not None:
        console.print()
        console.print(leak_adjusted_table(report.leak_adjusted))
    for note in report.notes:
        console.print(f"[dim]note: {escape(note)}[/]")

    console.print()
    console.print("[bold]What to do next[/]")
    for line in next_steps(report):
        console.print(f"  - {escape(line)}")
    return buf.getvalue()


def leak_adjusted_table(adjusted: dict):
    """Rich table of a model's metrics on the whole split and on its leak-free part."""
    from rich.markup import escape
    from rich.table import Table

    split = adjusted.get("split", "val")
    ev = adjusted.get("evaluated", {})
    t = Table(title=f"Leak-adjusted metrics: {adjusted.get('removed', 0)} leaked {split} samples removed",
              title_justify="left", show_edge=False)
    t.add_column("metric")
    t.add_column(f"full {split} ({ev.get('full', '?')})", justify="right")
    t.add_column(f"leak-free ({ev.get('leak_free', '?')})", justify="right")
    t.add_column("change", justify="right")
    full, free = adjusted.get("full") or {}, adjusted.get("leak_free") or {}
    for name, value in full.items():
        other = free.get(name)
        t.add_row(escape(name), f"{value:.4g}", "-" if other is None else f"{other:.4g}",
                  "-" if other is None else f"{other - value:+.4g}")
    return t


def next_steps(report: AuditReport) -> list[str]:
    """Advice that follows from the findings."""
    steps = []
    if report.verdict.status == "leaked":
        steps.append("Remove the listed val/test samples (or move them to train) and re-score your "
                     "model on the leak-free split; scores on copies of training data measure memory.")
        steps.append("Split by group (scene, source video, patient) rather than by file, so copies "
                     "cannot land on both sides.")
    if "shifted" in report.verdict.statuses:
        steps.append("A validation/test split is drawn from a different distribution than train: "
                     "re-split at random (stratified by label, grouped by source), or, if the shift is "
                     "real (new camera, new period), report the score as out-of-distribution.")
    if "easier" in report.verdict.statuses:
        steps.append("Validation samples sit closer to training samples than training samples sit "
                     "to each other: expect the validation score to overstate performance on new data.")
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
