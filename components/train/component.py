"""KFP component: train_model."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from keel.components._common.component import keel_component


@keel_component
def train_model(
    train_features: Input[Dataset],
    validation_features: Input[Dataset],
    transformer: Input[Model],
    target: dict,
    model: dict,
    trained_model: Output[Model],
    metrics: Output[Metrics],
):
    """Fits the configured estimator and saves it with its transformer as one sklearn Pipeline.

    Args:
        train_features: engineered numeric features + `__label__`; its metadata `classes` names the labels.
        validation_features: the same columns; used for early stopping and validation metrics.
        transformer: the fitted ColumnTransformer (joblib) from engineer_features.
        target: the `target` config section (task picks classifier or regressor).
        model: the `model` config section (family, params, seed).
        trained_model: joblib `Pipeline([("features", transformer), ("model", estimator)])` that predicts
            from raw feature columns; metadata: framework, family, estimator, task, params, classes,
            input_columns, n_features, train_rows, validation_rows, training_seconds, and lineage.
        metrics: train_<metric> and validation_<metric> scores.
    """
    from keel.components._common import lineage
    from keel.components._common.config import ModelSection, TargetSection
    from keel.components._common.errors import user_errors
    from keel.components._common.training.fit import json_safe
    from keel.components.train.train import train

    with user_errors("train_model"):
        target_cfg, model_cfg = TargetSection.parse(target, "target"), ModelSection.parse(model, "model")
        sources = (train_features, validation_features, transformer)
        classes = next((a.metadata["classes"] for a in sources if a.metadata.get("classes")), None)
        trained = train(
            train_features.path, validation_features.path, transformer.path, trained_model.path,
            target_cfg, model_cfg, classes=classes,
        )
        parents = [
            lineage.parent("train_features", train_features),
            lineage.parent("validation_features", validation_features),
            lineage.parent("transformer", transformer),
        ]
        trained_model.metadata.update(trained.metadata)
        trained_model.metadata.update(
            lineage.stamp(content_hash=trained.metadata["content_hash"], parents=parents, params=trained.metadata["params"])
        )
        for name, value in trained.metrics.items():
            metrics.log_metric(name, value)
        metrics.metadata.update(
            lineage.stamp(content_hash=lineage.json_hash(json_safe(trained.metrics)), parents=[lineage.parent("trained_model", trained_model)], params=model)
        )
        lineage.write_metadata_file(metrics)
