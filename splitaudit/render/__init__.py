"""Renderings of an AuditReport: pure functions from a report to text."""
