"""KFP component: explain_model."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Model, Output

from keel.components._common.component import keel_component


@keel_component
def explain_model(
    trained_model: Input[Model],
    train: Input[Dataset],
    test: Input[Dataset],
    target: dict,
    explain: dict,
    explainer: Output[Artifact],
    report: Output[HTML],
):
    """Global feature attributions per raw input column, and the explainer the predictor serves.

    Args:
        trained_model: the joblib Pipeline from train_model; its metadata gives task, classes, input_columns, family.
        train: raw feature columns + `__label__` from split_data: the background (mean row or k-means centroids).
        test: raw feature columns + `__label__` from split_data; a seeded sample of explain.sample_rows is explained.
        target: the `target` config section.
        explain: the `explain` config section (method auto|shap|permutation, sample_rows, background_rows,
            permutation_repeats, seed).
        explainer: JSON spec of the explainer (register puts it into the bundle as explainer.json); metadata:
            method, reason, output, measure, rows, global_attributions (column -> value, largest first,
            top 30), directions, per_class (multiclass), and lineage.
        report: self-contained HTML: the method and why, global and per-row plots, the attribution table.
    """
    from keel.components._common import lineage
    from keel.components._common.config import ExplainSection, TargetSection
    from keel.components._common.errors import user_errors
    from keel.components.explain.explain import explain_files

    with user_errors("explain_model"):
        target_cfg, explain_cfg = TargetSection.parse(target, "target"), ExplainSection.parse(explain, "explain")
        result = explain_files(trained_model.path, train.path, test.path, target_cfg, explain_cfg,
                               dict(trained_model.metadata), explainer.path, report.path)
        parents = [lineage.parent("trained_model", trained_model), lineage.parent("train", train), lineage.parent("test", test)]
        params = explain_cfg.model_dump(mode="json")
        explainer.metadata.update(result.metadata())
        explainer.metadata.update(lineage.stamp(content_hash=lineage.file_sha256(explainer.path), parents=parents, params=params))
        report.metadata.update({"method": result.method, "rows": result.rows})
        report.metadata.update(lineage.stamp(content_hash=lineage.file_sha256(report.path), parents=parents, params=params))
