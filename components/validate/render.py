"""The validation report: a pass/fail banner, every violation, and the schema used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.components._common import report

if TYPE_CHECKING:  # an annotation only: validate imports this module to write the report
    from keel.components.validate.validate import ValidationResult

EXAMPLES = 5
# Every violating cell is listed up to this many; beyond it the page would
# stop loading in the dashboard. The quarantine Dataset always has every row.
MAX_LISTED = 5000


def render_html(result: ValidationResult, on_violation: str) -> str:
    """The validation report as one self-contained HTML page.

    Args:
        result: what `validate()` returned.
        on_violation: the configured `validation.on_violation` (fail or quarantine).
    """
    summary = result.summary()
    overview = report.table([{"what": k, "value": v} for k, v in {**summary, "on_violation": on_violation}.items()], ["what", "value"])
    sections = [
        ("Result", _banner(result, on_violation) + overview),
        ("Column-level violations", _column_issues(result)),
        ("Row-level violations", _row_groups(result)),
        ("Every row-level violation", _row_cells(result)),
        ("Schema", _schema_table(result)),
    ]
    return report.page("Data validation", sections, subtitle=f"schema: {result.schema_source}")


def _banner(result: ValidationResult, on_violation: str) -> str:
    if result.passed:
        return f'<p class="pass">PASSED: all {result.rows_in:,} rows match the schema.</p>'
    if result.column_issues:
        return (f'<p class="fail">FAILED: {len(result.column_issues)} column-level violation(s); '
                "these always fail the run (no row can be set aside to fix them).</p>")
    if on_violation == "fail":
        return (f'<p class="fail">FAILED: {result.violations:,} row-level violation(s) in {len(result.quarantine):,} rows '
                "(validation.on_violation: fail).</p>")
    return (f'<p class="fail">QUARANTINED: {len(result.quarantine):,} of {result.rows_in:,} rows set aside for '
            f"{result.violations:,} violation(s); {len(result.valid):,} rows continue.</p>")


def _column_issues(result: ValidationResult) -> str:
    return report.table([{"column": i.column, "rule": i.rule, "problem": i.message} for i in result.column_issues])


def _row_groups(result: ValidationResult) -> str:
    rows = [
        {
            "column": issue.column,
            "rule": issue.rule,
            "count": len(issue.rows),
            "examples": "; ".join(f"row {row}: {issue.reason(value)}" for row, value in zip(issue.rows[:EXAMPLES].tolist(), issue.values[:EXAMPLES])),
        }
        for issue in result.row_issues
    ]
    return report.table(rows, ["column", "rule", "count", "examples"])


def _row_cells(result: ValidationResult) -> str:
    cells = sorted(
        ((row, issue.column, issue.rule, issue.reason(value)) for issue in result.row_issues for row, value in zip(issue.rows.tolist(), issue.values)),
        key=lambda cell: cell[0],
    )
    shown = [{"row": row, "column": column, "rule": rule, "violation": reason} for row, column, rule, reason in cells[:MAX_LISTED]]
    note = ""
    if len(cells) > MAX_LISTED:
        note = (f'<p class="muted">The first {MAX_LISTED:,} of {len(cells):,} are listed; with on_violation: quarantine '
                "the quarantine Dataset holds every row with its reasons.</p>")
    return note + report.table(shown, ["row", "column", "rule", "violation"])


def _schema_table(result: ValidationResult) -> str:
    rows = []
    for name, spec in result.schema.columns.items():
        allowed = spec.allowed
        if allowed is not None and len(allowed) > 12:
            allowed = ", ".join(allowed[:12]) + f", ... ({len(allowed)} values)"
        elif allowed is not None:
            allowed = ", ".join(allowed)
        rows.append({
            "column": name + (" (target)" if name == result.schema.target else ""),
            "type": spec.type,
            "nullable": spec.nullable,
            "max_null_rate": spec.max_null_rate,
            "min": "" if spec.min is None else spec.min,
            "max": "" if spec.max is None else spec.max,
            "allowed": "" if allowed is None else allowed,
        })
    return f'<p class="muted">version {result.schema.version}</p>' + report.table(rows)
