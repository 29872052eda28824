"""The monitoring pipeline's check step: drift, performance, staleness and serving invariants -> one verdict.

It reads only what collect_window wrote (the window's sample, its labelled
sample, the reference and the exact counts), so it can be rerun on the same
window with other thresholds without touching the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from keel.components._common.config import EvaluationSection, MonitoringSection, TargetSection
from keel.components.monitor import checks
from keel.components.monitor.window import PREDICTION


@dataclass
class Assessment:
    verdict: checks.Verdict
    drifts: list[checks.ColumnDrift]
    performance: dict | None
    per_day: list[dict]
    snapshot: object = None  # Evidently's snapshot (its own HTML report); None when there was no data

    def as_dict(self, record: dict) -> dict:
        return {**self.verdict.as_dict(), "model": record["model"], "version": record["version"],
                "window": record["window"], "rows": record["rows"], "labelled_rows": record["labelled_rows"],
                "drift": [asdict(d) for d in self.drifts], "performance": self.performance,
                "rejected": record["rejected"], "warned": record["warned"],
                "warned_rows": record["warned_rows"], "age_days": round(record["age_days"], 2)}


def true_classes(labels, target: dict, classes: list):
    """Stored labels as the model's class names: a class name as it is, a raw target value mapped by the
    training config's target rule (positive_values), so a label table may hold either."""
    import pandas as pd

    if not classes:
        return pd.to_numeric(labels, errors="coerce")
    names = {str(c) for c in classes}
    values = labels.astype(str)
    section = TargetSection.model_validate(target) if target.get("column") else None
    if section is not None and section.positive_values is not None:
        positive = {str(v) for v in section.positive_values}
        raw = ~values.isin(names)
        values = values.where(~raw, values.map(lambda v: str(classes[1]) if v in positive else str(classes[0])))
    return values


def assess(record: dict, window, labelled, reference, section: MonitoringSection) -> Assessment:
    summary = checks.Summary(rows=record["rows"], calls=record["calls"], labelled_rows=record["labelled_rows"],
                             warned_rows=record["warned_rows"], sample=window if len(window.columns) else None)
    summary.rejected.update(record["rejected"])
    summary.warned.update(record["warned"])
    if summary.rows == 0 or summary.sample is None or not len(window):
        return Assessment(checks.decide(summary, [], None, record["age_days"], section, section.min_labelled_rows), [], None, [])
    columns, task, classes = record["input_columns"], record["task"], record["classes"]
    kinds = checks.column_kinds(record["schema"], columns)
    prediction_kinds = checks.prediction_kinds(task, classes) if PREDICTION in reference.columns else {}
    drifts, snapshot = checks.drift(reference, window, kinds, section, prediction_kinds)
    perf, per_day = None, []
    evaluation = EvaluationSection.model_validate(record.get("evaluation") or {})
    if len(labelled.columns) and record["labelled_rows"] >= section.min_labelled_rows:
        labelled = labelled.assign(**{checks.LABEL: true_classes(labelled[checks.LABEL], record.get("target") or {}, classes)})
        values, skipped, passed, failures = checks.performance(labelled, task, classes, evaluation, evaluation.decision_threshold)
        perf = {"rows": len(labelled), "metrics": values, "skipped": skipped, "passed": passed, "failures": failures,
                "gate": {"min": evaluation.min, "max": evaluation.max}}
        per_day = _per_day(labelled, task, classes, evaluation)
    verdict = checks.decide(summary, drifts, perf, record["age_days"], section, section.min_labelled_rows)
    return Assessment(verdict, drifts, perf, per_day, snapshot)


def _per_day(labelled, task: str, classes: list, evaluation: EvaluationSection, min_rows: int = 20) -> list[dict]:
    """The gate's metrics per day of requests (days with fewer than `min_rows` labels are left out)."""
    out = []
    days = labelled["request_time"].dt.strftime("%Y-%m-%d")
    for day, rows in labelled.groupby(days):
        if len(rows) < min_rows:
            continue
        values, *_ = checks.performance(rows, task, classes, evaluation, evaluation.decision_threshold)
        out.append({"day": day, "rows": len(rows), **values})
    return out
