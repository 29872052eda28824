"""The end-of-run summary of a pipeline that trains a model (training, vision): metrics, gate,
registered version, where the reports are.

`run` is a keel.pipelines.records.results.RunSummary; `cfg` any config with evaluation and
registry sections.
"""

from __future__ import annotations

# (pipeline output, label) of the documents a reviewer opens first.
DOCUMENTS = [
    ("model_card_html", "model card (HTML)"),
    ("model_card", "model card (Markdown)"),
    ("profile_report", "data profile"),
    ("validation_report", "validation report"),
    ("evaluation_report", "evaluation report"),
    ("fairness_report", "fairness report"),
    ("explanation_report", "explanation report"),
    ("compression_report", "compression trade-off"),
    ("clean_quarantine", "quarantined rows (clean)"),
    ("validation_quarantine", "quarantined rows (validate)"),
]

KEY_METRICS = ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "f1_macro", "mae", "rmse", "r2")


def summary_lines(cfg, run, seconds: float) -> list[str]:
    reused = f", {len(run.cached)} from the cache" if run.cached else ""
    ran = f"{len(run.steps)} step{'' if len(run.steps) == 1 else 's'} run"
    lines = [f"keel: {cfg.name} finished in {seconds:.1f} s ({ran}{reused}) -> {run.run_dir}"]
    metrics = run.metrics
    shown = [f"{k} {metrics[k]:.4f}" for k in KEY_METRICS if isinstance(metrics.get(k), (int, float))]
    lines.append("  metrics:    " + ("  ".join(shown) if shown else "none"))
    if run.metrics_passed:
        lines.append("  gate:       passed " + _bounds(cfg))
    else:
        lines.append("  gate:       FAILED " + _bounds(cfg) + " -> model not registered (see the evaluation report)")
    lines += _fairness_lines(run)
    registered = run.registered
    if registered:
        lines.append(f"  registered: {cfg.registry.model_name} {registered.get('version')} -> {registered.get('registry_uri')}")
        stage = registered.get("stage")
        if stage == "candidate":
            lines.append(f"  stage:      candidate; approve: keel approve {cfg.registry.model_name}:{registered.get('version')} "
                         "--by NAME --reason TEXT")
        elif stage:
            lines.append(f"  stage:      {stage}")
    deployment = run.deployment
    if deployment:
        where = f"{deployment.get('namespace')}/{deployment.get('name')}"
        lines.append(f"  deploy:     InferenceService {where} {deployment.get('action')} ({deployment.get('reason')}) -> {deployment['uri']}")
        lines.append(f"  serve here: keel serve {registered.get('registry_uri') if registered else 'latest'}")
    elif registered:
        lines.append(f"  serve here: keel serve {registered.get('registry_uri')}")
    for output, label in DOCUMENTS:
        artifact = run.outputs.get(output)
        if artifact:
            lines.append(f"  {label + ':':<30}{artifact['uri']}")
    return lines


def _fairness_lines(run) -> list[str]:
    """The fairness verdict: the gate, and the four-fifths rule as information."""
    fairness = run.outputs.get("fairness_metrics") or run.artifact("assess-fairness", "metrics")
    if not fairness:
        return []
    meta = fairness.get("metadata") or {}
    gate, result = meta.get("gate") or {}, meta.get("fairness") or {}
    if not result.get("sensitive"):
        return ["  fairness:   not assessed (no fairness.sensitive column; add one, or keel run --sensitive COLUMN)"]
    verdict = "passed" if gate.get("passed") else "FAILED -> model not registered (see the fairness report)"
    lines = [f"  fairness:   {verdict} on {', '.join(result['sensitive'])}"]
    lines += [f"              {failure}" for failure in gate.get("failures") or []]
    for column, ok in sorted((result.get("four_fifths") or {}).items()):
        if ok is False:
            lines.append(f"              {column}: demographic parity ratio below 0.8 (four-fifths rule): review the report")
    return lines


def _bounds(cfg) -> str:
    parts = [f"{k}>={v}" for k, v in cfg.evaluation.min.items()] + [f"{k}<={v}" for k, v in cfg.evaluation.max.items()]
    return f"({', '.join(parts)})" if parts else "(no thresholds set)"
