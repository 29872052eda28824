"""KFP components of the monitoring pipeline: collect a window of logged traffic, then check it."""

from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from keel.components._common.component import keel_component


@keel_component
def collect_window(monitoring: dict, registry: dict, execution_date: str, window: Output[Dataset],
                   labelled: Output[Dataset], reference: Output[Dataset], summary: Output[Artifact]):
    """Reads a window of the receiver's logged traffic once, in bounded memory, and the model's reference.

    Args:
        monitoring: the `monitoring` section (version, window_days, sample sizes, thresholds).
        registry: the `registry` section: the store holding the registry and the logged traffic, and the model.
        execution_date: the window's end (YYYY-MM-DD: the end of that day; an ISO timestamp; empty: now).
        window: a uniform sample of the answered rows (inputs, prediction, scores, label).
        labelled: a uniform sample of the rows that have a label.
        reference: the training dataset version (from the bundle's lineage) with the model's predictions.
        summary: exact counts of the whole window (rows, calls, rejections and warnings per reason, per day).
    """
    from keel.components._common.config import MonitoringSection, RegistrySection
    from keel.components._common.errors import user_errors
    from keel.components.monitor.collect import collect

    with user_errors("collect_window"):
        record = collect(MonitoringSection.parse(monitoring, "monitoring"), RegistrySection.parse(registry, "registry"),
                         execution_date, window_path=window.path, labelled_path=labelled.path,
                         reference_path=reference.path, summary_path=summary.path)
        for artifact in (window, labelled, reference, summary):
            artifact.metadata.update({"model": record["model"], "version": record["version"], **record["window"]})
        window.metadata["rows"] = record["sample_rows"]
        reference.metadata.update({"dataset": record["reference"]["name"], "dataset_version": record["reference"]["version"]})
        print(f"collect_window: {record['model']}:v{record['version']}, {record['rows']:,} rows in "
              f"{record['calls']:,} calls ({record['labelled_rows']:,} labelled) from {record['window']['start']} "
              f"to {record['window']['end']}")


@keel_component
def check_window(
    window: Input[Dataset],
    labelled: Input[Dataset],
    reference: Input[Dataset],
    summary: Input[Artifact],
    monitoring: dict,
    report: Output[HTML],
    drift_report: Output[HTML],
    metrics: Output[Metrics],
    verdict_json: Output[Artifact],
) -> NamedTuple("Checked", [("verdict", str), ("retrain", bool)]):
    """Drift (Evidently), performance on labelled rows, staleness and serving invariants -> one verdict.

    Args:
        window: collect_window's sample of the window.
        labelled: collect_window's sample of the labelled rows.
        reference: the training data with the model's predictions.
        summary: the window's exact counts.
        monitoring: the `monitoring` section (drift methods and thresholds, limits, retrain_on).
        report: Keel's monitoring report (verdict, per-column drift with plots, performance over time).
        drift_report: Evidently's own report of the same drift run.
        metrics: drift share, rows, labelled rows, the performance metrics.
        verdict_json: the machine-readable verdict (JSON): verdict, reasons, drifted columns, retrain.

    Returns:
        verdict: ok, drift, degraded, stale or no data; retrain: whether the verdict is in monitoring.retrain_on.
    """
    import json
    from collections import namedtuple

    import pandas as pd

    from keel.components._common import storage
    from keel.components._common.config import MonitoringSection
    from keel.components._common.errors import user_errors
    from keel.components.monitor import assess
    from keel.components.monitor import report as monitor_report

    with user_errors("check_window"):
        section = MonitoringSection.parse(monitoring, "monitoring")
        record = json.loads(storage.read_bytes(summary.path))
        frames = [pd.read_parquet(a.path) for a in (window, labelled, reference)]
        result = assess.assess(record, *frames, section)
        document = result.as_dict(record)
        storage.write_bytes(verdict_json.path, json.dumps(document, indent=1, default=str).encode())
        storage.write_bytes(report.path, monitor_report.render(record, result, frames[0], frames[2]).encode())
        if result.snapshot is not None:
            result.snapshot.save_html(drift_report.path)
        else:
            storage.write_bytes(drift_report.path, b"<!doctype html><p>No traffic in the window: nothing to compare.</p>")
        inputs = [d for d in result.drifts if d.kind == "input"]
        metrics.log_metric("rows", record["rows"])
        metrics.log_metric("labelled_rows", record["labelled_rows"])
        metrics.log_metric("drifted_columns", sum(d.drifted for d in inputs))
        metrics.log_metric("drift_share", sum(d.drifted for d in inputs) / len(inputs) if inputs else 0.0)
        for name, value in ((result.performance or {}).get("metrics") or {}).items():
            metrics.log_metric(name, float(value))
        verdict_json.metadata.update({"verdict": result.verdict.verdict, "retrain": result.verdict.retrain,
                                 "drifted_columns": result.verdict.drifted_columns})
        for line in result.verdict.reasons:
            print(f"check_window: {line}")
        return namedtuple("Checked", ["verdict", "retrain"])(result.verdict.verdict, result.verdict.retrain)
