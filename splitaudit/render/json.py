"""JSON rendering of an AuditReport."""

from __future__ import annotations

import json

from splitaudit.report import AuditReport


def render_json(report: AuditReport, *, indent: int | None = 2) -> str:
    """The report as JSON text (see README for the shape); ``schema_version`` first."""
    return json.dumps(report.to_dict(), indent=indent, ensure_ascii=True) + "\n"
