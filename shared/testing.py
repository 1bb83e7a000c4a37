"""Pytest helpers for users' own suites: a parity check that fails with the report's table."""

from __future__ import annotations

from .cli.report import format_table
from .parity import ParityReport, compare


def assert_parity(*args, per_layer: bool = True, **kwargs) -> ParityReport:
    """``compare``, raising AssertionError with the report's table when any framework fails; for pytest suites."""
    report = compare(*args, **kwargs)
    if not report.passed:
        raise AssertionError("\n" + format_table(report, per_layer=per_layer))
    return report
