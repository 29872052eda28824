"""The monitoring pipeline's pre-flight, `keel check` line, command-line flags and summary."""

from __future__ import annotations

import json

from keel.components._common import storage
from keel.pipelines.descriptor import Checked, Outcome, refuse_flags
from keel.pipelines.monitoring_config import MonitoringConfig


def preflight_monitoring(cfg: MonitoringConfig):
    """The model version in production (or pinned), its schema against `monitoring.columns`, its reference
    dataset, and the window: a model with no production version or a column the model does not take is
    one line here, before any step runs."""
    from keel.components._common import datasets
    from keel.components.monitor.collect import resolve, window_bounds

    target = resolve(cfg.monitoring, cfg.registry)
    dataset = target.bundle.lineage["dataset"]
    datasets.resolve(cfg.registry.store, dataset["name"], dataset["version"])
    return target, window_bounds(cfg.execution_date, cfg.monitoring.window_days)


def check(cfg: MonitoringConfig) -> str:
    target, (start, end) = preflight_monitoring(cfg)
    return (f"{target.model}:v{target.version} ({len(target.bundle.input_columns)} input columns), window "
            f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC; reference {target.bundle.lineage['dataset']['name']}")


def checked_run(cfg: MonitoringConfig) -> Checked:
    target, (start, end) = preflight_monitoring(cfg)
    return Checked(cfg, f"{target.model}:v{target.version}, traffic logged {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} "
                        "UTC; running the monitoring pipeline")


def summary_lines(cfg: MonitoringConfig, run, seconds: float) -> list[str]:
    lines = [f"keel: {cfg.name} finished in {seconds:.1f} s -> {run.run_dir}"]
    verdict = run.step_output("verdict_json")
    if verdict is None:
        return lines + ["  verdict:    none (the check step did not finish; see its log)"]
    document = json.loads(storage.read_bytes(verdict["uri"]))
    lines.append(f"  verdict:    {document['verdict']}{' -> retrain' if document['retrain'] else ''} "
                 f"({document['model']}:v{document['version']}, {document['rows']:,} rows, "
                 f"{document['labelled_rows']:,} labelled)")
    lines += [f"              {reason}" for reason in document["reasons"]]
    perf = document.get("performance")
    if perf:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in list(perf["metrics"].items())[:6])
        lines.append(f"  labelled:   {shown}")
    for output, label in (("report", "monitoring report"), ("drift_report", "Evidently drift report"), ("verdict_json", "verdict (JSON)")):
        found = run.step_output(output)
        if found:
            lines.append(f"  {label + ':':24} {found['uri']}")
    return lines


def outcome(checked: Checked, run, seconds: float) -> Outcome:
    return Outcome(summary_lines(checked.config, run, seconds))


def cli_overrides(cfg: MonitoringConfig, flags: dict) -> dict:
    """--store and --execution-date; the training flags are refused."""
    refuse_flags(flags, ("--store", "--execution-date"), "monitoring", "monitoring section")
    fields = {"--store": "registry.store", "--execution-date": "execution_date"}
    return {fields[flag]: value for flag, value in flags.items() if flag in fields and value is not None}
