"""KFP component: engineer_features."""

from kfp.dsl import Dataset, Input, Model, Output

from keel.components._common.component import keel_component


@keel_component
def engineer_features(
    train: Input[Dataset],
    validation: Input[Dataset],
    features: dict,
    transformer: Output[Model],
    train_features: Output[Dataset],
    validation_features: Output[Dataset],
):
    """Fits imputation, scaling, encoding and binning on the training split only.

    Args:
        train: split_data's `train` (feature columns + `__label__`).
        validation: split_data's `validation`, same columns.
        features: the `features` config section (numeric, categorical, bucketize, types).
        transformer: the fitted scikit-learn ColumnTransformer (joblib) over the raw feature columns;
            metadata: input_columns {name: dtype}, column_types, feature_names, n_features.
        train_features: transformed training rows + `__label__` (Parquet); metadata carries the
            split's task, classes and class_counts.
        validation_features: transformed validation rows + `__label__` (Parquet), same metadata keys.
    """
    from keel.components._common import lineage, tables
    from keel.components._common.config import FeaturesSection
    from keel.components._common.errors import user_errors
    from keel.components.features.features import engineer, save_transformer

    with user_errors("engineer_features"):
        features_cfg = FeaturesSection.parse(features, "features")
        result = engineer(tables.read_parquet(train.path), tables.read_parquet(validation.path), features_cfg)
        params = {"features": features}
        transformer_hash = save_transformer(result.transformer, transformer.path)
        transformer.metadata.update(
            framework="scikit-learn", input_columns=result.input_columns, column_types=result.column_types,
            feature_names=result.feature_names, n_features=len(result.feature_names),
        )
        transformer.metadata.update(lineage.stamp(
            content_hash=transformer_hash, parents=[lineage.parent("train", train)], params=params
        ))
        outputs = (("train", train, train_features, result.train_features),
                   ("validation", validation, validation_features, result.validation_features))
        for name, source, artifact, frame in outputs:
            meta = tables.write_parquet(frame, artifact.path)
            artifact.metadata.update(meta)
            # train_model reads the label names from here: carry split_data's label keys along.
            artifact.metadata.update({k: source.metadata[k] for k in ("task", "classes", "class_counts") if k in source.metadata})
            parents = [lineage.parent(name, source), lineage.parent("transformer", transformer)]
            artifact.metadata.update(lineage.stamp(content_hash=meta["content_hash"], parents=parents, params=params))
