"""The PASSED / FAILED verdict block of an evaluation report, shared by the tabular and image evaluate stages."""

from __future__ import annotations

from keel.components._common import report
from keel.components._common.config import EvaluationSection


def verdict_html(result, section: EvaluationSection) -> str:
    """PASSED / FAILED, why, and every threshold against its value (any result with passed, failures, metrics)."""
    verdict = '<p class="pass">PASSED</p>' if result.passed else '<p class="fail">FAILED</p>'
    if result.failures:
        verdict += "<ul>" + "".join(f"<li>{report.esc(line)}</li>" for line in result.failures) + "</ul>"
    bounds = []
    for kind, limits in (("min", section.min), ("max", section.max)):
        for name, limit in limits.items():
            value = result.metrics.get(name)
            ok = value is not None and (value >= limit if kind == "min" else value <= limit)
            bounds.append({"metric": name, "bound": f"{kind} {limit:g}", "value": "not available" if value is None else value,
                           "result": "pass" if ok else "FAIL"})
    if bounds:
        return verdict + report.table(bounds, ["metric", "bound", "value", "result"])
    return verdict + '<p class="muted">No thresholds configured: the gate passes every model.</p>'
