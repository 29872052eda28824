"""Train stage logic: read the engineered splits and the transformer, fit (keel.components._common.training.fit,
which the tune stage's trials share), and write the model Pipeline."""

from __future__ import annotations

from keel.components._common import tables
from keel.components._common.config import ModelSection, TargetSection
from keel.components._common.training.fit import Trained, fit, load_transformer, save


def train(
    train_path: str,
    validation_path: str,
    transformer_path: str,
    model_path: str,
    target: TargetSection,
    model: ModelSection,
    classes: list | None = None,
) -> Trained:
    """Reads the artifacts, fits, and writes the pipeline to `model_path` (joblib).

    Returns:
        The `Trained` result; its metadata also holds the saved file's content_hash.
    """
    train_frame = tables.read_parquet(train_path)
    validation_frame = tables.read_parquet(validation_path)
    transformer = load_transformer(transformer_path)
    trained = fit(train_frame, validation_frame, transformer, target, model, classes)
    trained.metadata["content_hash"] = save(trained.pipeline, model_path)
    return trained
