"""KFP component: assess_fairness."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from keel.components._common.component import keel_component


@keel_component
def assess_fairness(
    trained_model: Input[Model],
    test: Input[Dataset],
    validation: Input[Dataset],
    target: dict,
    evaluation: dict,
    fairness: dict,
    metrics: Output[Metrics],
    report: Output[HTML],
) -> bool:
    """Measures the trained Pipeline's group fairness on the test split and gates it on fairness.min / fairness.max.

    Args:
        trained_model: the joblib Pipeline from train_model; its metadata gives task, classes and input_columns.
        test: raw feature columns, the sensitive columns and `__label__`, from split_data.
        validation: the same columns; ThresholdOptimizer is fitted on it when fairness.mitigation asks.
        target: the `target` config section.
        evaluation: the `evaluation` config section (its decision_threshold makes the decisions).
        fairness: the `fairness` config section (sensitive, min, max, min_group_size, confidence, bootstrap,
            seed, mitigation).
        metrics: one scalar per sensitive column and disparity metric, named `column.metric`; metadata `gate`
            holds passed, failures and the limits, and `fairness` the whole result (groups, intervals, mitigation).
        report: self-contained HTML: verdict, limits, per-attribute groups and disparities, plots, mitigation.

    Returns:
        True when every fairness limit holds (the pipeline registers the model only then).
    """
    from keel.components._common import lineage
    from keel.components._common.config import EvaluationSection, FairnessSection, TargetSection
    from keel.components._common.errors import user_errors
    from keel.components.fairness.fairness import assess_files

    with user_errors("assess_fairness"):
        target_cfg = TargetSection.parse(target, "target")
        eval_cfg = EvaluationSection.parse(evaluation, "evaluation")
        section = FairnessSection.parse(fairness, "fairness")
        result = assess_files(trained_model.path, test.path, validation.path, target_cfg, eval_cfg, section,
                              dict(trained_model.metadata), report.path)
        for name, value in result.scalars().items():
            metrics.log_metric(name, value)

        content = result.to_dict()
        parents = [lineage.parent("trained_model", trained_model), lineage.parent("test", test),
                   lineage.parent("validation", validation)]
        params = section.model_dump(mode="json")
        metrics.metadata["gate"] = result.gate
        metrics.metadata["fairness"] = content
        metrics.metadata.update(lineage.stamp(content_hash=lineage.json_hash(content), parents=parents, params=params))
        report.metadata.update(result.gate)
        report.metadata.update(lineage.stamp(content_hash=lineage.file_sha256(report.path), parents=parents, params=params))
        lineage.write_metadata_file(metrics)
        return result.passed
