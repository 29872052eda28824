"""Evaluate logic: score the trained Pipeline on the held-out test set, gate it, and write the report.

The test set holds raw feature columns + `__label__`, and the model is the
whole Pipeline (transformer + estimator), so this measures exactly what will
be served. Kept free of KFP so it runs in tests and in the component alike.
"""

from __future__ import annotations

from keel.components._common import report, storage, tables
from keel.components._common.config import EvaluationSection, TargetSection
from keel.components._common.evaluation.scoring import Evaluation, evaluate, load_model
from keel.components._common.evaluation.verdict import verdict_html


def evaluate_files(model_path: str, test_path: str, target: TargetSection, section: EvaluationSection,
                   model_info: dict, report_path: str) -> Evaluation:
    """Loads the model and test set, evaluates, and writes the HTML report to `report_path`."""
    pipeline = load_model(model_path)
    test = tables.read_parquet(test_path)
    result = evaluate(pipeline, test, target, section, model_info)
    storage.write_bytes(report_path, render_report(result, section, model_info).encode(), content_type="text/html")
    return result


def render_report(result: Evaluation, section: EvaluationSection, model_info: dict | None = None) -> str:
    """The self-contained HTML report: verdict, thresholds, metrics and plots."""
    model_info = model_info or {}
    verdict = verdict_html(result, section)

    about = [
        {"field": "family", "value": model_info.get("family", "unknown")},
        {"field": "estimator", "value": model_info.get("estimator", "unknown")},
        {"field": "task", "value": result.task},
        {"field": "test rows", "value": result.rows},
    ]
    if result.class_names is not None:
        about.append({"field": "classes", "value": ", ".join(result.class_names)})
    if result.task == "binary":
        about.append({"field": "decision threshold", "value": section.decision_threshold})
    metric_rows = [{"metric": k, "value": v} for k, v in result.metrics.items()]
    metric_rows += [{"metric": k, "value": f"not computed: {why}"} for k, why in result.skipped.items()]
    sections = [("Result", verdict), ("Model", report.table(about)), ("Metrics", report.table(metric_rows))]
    sections.append(("Plots", '<div class="grid">' + "".join(_figures(result, section)) + "</div>"))
    if result.task == "multiclass":
        sections.append(("Per class", _per_class(result)))
    title = f"Evaluation: {model_info.get('family', 'model')} ({result.task})"
    return report.page(title, sections, subtitle=f"{result.rows} test rows")


def _figures(result: Evaluation, section: EvaluationSection) -> list[str]:
    from keel.components._common.evaluation import plots

    y_true, y_pred, proba = result.y_true, result.y_pred, result.proba
    if result.task == "regression":
        return [plots.predicted_vs_actual_plot(y_true, y_pred), plots.residual_plot(y_true, y_pred)]
    figures = []
    if result.task == "binary" and proba is not None:
        score = proba[:, 1]
        if result.roc is not None:
            figures.append(plots.roc_plot(result.roc[0], result.roc[1], result.metrics.get("roc_auc")))
            figures.append(plots.pr_plot(y_true, score, result.metrics.get("pr_auc")))
        figures.append(plots.score_distribution_plot(y_true, score, result.class_names, section.decision_threshold))
        if result.roc is not None:
            figures.append(plots.calibration_plot(y_true, score))
    figures.append(plots.confusion_plot(result.confusion, result.class_names))
    return figures


def _per_class(result: Evaluation) -> str:
    from sklearn.metrics import classification_report

    labels = list(range(len(result.class_names)))
    stats = classification_report(result.y_true, result.y_pred, labels=labels, target_names=result.class_names,
                                  output_dict=True, zero_division=0)
    rows = [{"class": name, **{k: stats[name][k] for k in ("precision", "recall", "f1-score", "support")}}
            for name in result.class_names]
    return report.table(rows, ["class", "precision", "recall", "f1-score", "support"])
