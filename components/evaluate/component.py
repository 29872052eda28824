"""KFP component: evaluate_model."""

from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from keel.components._common.component import keel_component


@keel_component
def evaluate_model(
    trained_model: Input[Model],
    test: Input[Dataset],
    target: dict,
    evaluation: dict,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
) -> bool:
    """Scores the trained Pipeline on the test set and gates it on evaluation.min / evaluation.max.

    Args:
        trained_model: the joblib Pipeline from train_model; its metadata gives task, classes and input_columns.
        test: raw feature columns + `__label__`, from split_data.
        target: the `target` config section.
        evaluation: the `evaluation` config section (min, max, decision_threshold).
        metrics: one scalar per test metric (binary: accuracy, precision, recall, f1, roc_auc, pr_auc,
            log_loss, brier; multiclass: accuracy, precision/recall/f1 _macro and _weighted, roc_auc,
            log_loss; regression: mae, rmse, r2, mape) and test_rows; metadata `gate` holds
            passed, failures and the thresholds.
        classification_metrics: ROC curve (binary) and confusion matrix (classification). For
            regression it holds no curve or matrix, only the lineage keys.
        report: self-contained HTML: verdict, thresholds, metrics, and plots.

    Returns:
        True when every threshold holds (the pipeline registers the model only then).
    """
    from keel.components._common import lineage
    from keel.components._common.config import EvaluationSection, TargetSection
    from keel.components._common.errors import user_errors
    from keel.components.evaluate.evaluate import evaluate_files

    with user_errors("evaluate_model"):
        target_cfg, eval_cfg = TargetSection.parse(target, "target"), EvaluationSection.parse(evaluation, "evaluation")
        result = evaluate_files(trained_model.path, test.path, target_cfg, eval_cfg, dict(trained_model.metadata), report.path)
        for name, value in result.metrics.items():
            metrics.log_metric(name, value)
        metrics.log_metric("test_rows", result.rows)
        if result.roc is not None:
            classification_metrics.log_roc_curve(*result.roc)
        if result.confusion is not None:
            classification_metrics.log_confusion_matrix(result.class_names, result.confusion)

        parents = [lineage.parent("trained_model", trained_model), lineage.parent("test", test)]
        gate = {"passed": result.passed, "failures": result.failures, "min": eval_cfg.min, "max": eval_cfg.max}
        metrics.metadata["gate"] = gate
        metrics.metadata.update(lineage.stamp(content_hash=lineage.json_hash(result.metrics), parents=parents, params=evaluation))
        curves = {"roc": result.roc, "confusion": result.confusion}
        classification_metrics.metadata.update(lineage.stamp(content_hash=lineage.json_hash(curves), parents=parents, params=evaluation))
        report.metadata.update(gate)
        report.metadata.update(lineage.stamp(content_hash=lineage.file_sha256(report.path), parents=parents, params=evaluation))
        lineage.write_metadata_file(metrics)
        lineage.write_metadata_file(classification_metrics)
        return result.passed
