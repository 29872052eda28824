"""KFP component: evaluate_image_model."""

from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from keel.components._common.component import keel_component


@keel_component
def evaluate_image_model(
    trained_model: Input[Model],
    test: Input[Dataset],
    evaluation: dict,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
) -> bool:
    """Scores the trained image model's serving export on the test images and gates it on evaluation.min / evaluation.max.

    Args:
        trained_model: the model directory from train_image_model (model.json + export files); the
            export named by model.json's serving_format is scored, as the predictor will serve it.
        test: the test ImageSet (.npz: uint8 images [N, H, W, C], labels, classes); its image shape
            must equal model.json's input.
        evaluation: the `evaluation` config section (min, max; the metric names are evaluate_model's
            multiclass ones: accuracy, precision/recall/f1 _macro and _weighted, roc_auc, log_loss).
        metrics: one scalar per test metric and test_images; metadata `gate` holds passed, failures
            and the thresholds.
        classification_metrics: the confusion matrix over the model's classes; metadata `per_class`
            holds precision, recall, f1 and support per class.
        report: self-contained HTML: verdict, metrics, training curves, confusion matrix, per-class
            recall and the most confident mistakes.

    Returns:
        True when every threshold holds (the pipeline registers the model only then).
    """
    from keel.components._common import lineage
    from keel.components._common.config import EvaluationSection
    from keel.components._common.errors import user_errors
    from keel.components.evaluate_images.evaluate_images import evaluate_image_files

    with user_errors("evaluate_image_model"):
        section = EvaluationSection.parse(evaluation, "evaluation")
        result = evaluate_image_files(trained_model.path, test.path, section, report.path)
        for name, value in result.metrics.items():
            metrics.log_metric(name, value)
        metrics.log_metric("test_images", result.images)
        classification_metrics.log_confusion_matrix(result.class_names, result.confusion)
        classification_metrics.metadata["per_class"] = result.per_class

        parents = [lineage.parent("trained_model", trained_model), lineage.parent("test", test)]
        gate = {"passed": result.passed, "failures": result.failures, "min": section.min, "max": section.max}
        metrics.metadata["gate"] = gate
        metrics.metadata.update(lineage.stamp(content_hash=lineage.json_hash(result.metrics), parents=parents, params=evaluation,
                                              scored_format=result.fmt))
        scores = {"confusion": result.confusion, "per_class": result.per_class}
        classification_metrics.metadata.update(lineage.stamp(content_hash=lineage.json_hash(scores), parents=parents, params=evaluation))
        report.metadata.update(gate)
        report.metadata.update(lineage.stamp(content_hash=lineage.file_sha256(report.path), parents=parents, params=evaluation))
        lineage.write_metadata_file(metrics)
        lineage.write_metadata_file(classification_metrics)
        return result.passed
