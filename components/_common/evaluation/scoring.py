"""Scoring a trained tabular Pipeline on a labelled frame: the split into features and labels, the
predictions, the metrics and the gate.

Shared by the evaluate stage (which reports and gates on it) and the fairness stage (which needs the
same predictions per group), so both measure exactly what will be served, the same way.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from keel.components._common import storage
from keel.components._common.config import EvaluationSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.evaluation import metrics as m
from keel.components._common.target import LABEL


@dataclass
class Evaluation:
    """What evaluate found, in the shapes the KFP outputs need."""

    task: str
    class_names: list[str] | None  # index = label; None for regression
    metrics: dict[str, float]  # finite numbers only
    skipped: dict[str, str]  # metric -> why it could not be computed
    passed: bool
    failures: list[str]
    rows: int
    confusion: list[list[int]] | None = None  # classification
    roc: tuple[list, list, list] | None = None  # binary, both classes present: (fpr, tpr, thresholds)
    y_true: np.ndarray | None = field(default=None, repr=False)
    y_pred: np.ndarray | None = field(default=None, repr=False)
    proba: np.ndarray | None = field(default=None, repr=False)


def evaluate(
    pipeline, test: pd.DataFrame, target: TargetSection, section: EvaluationSection, model_info: dict | None = None
) -> Evaluation:
    """Scores `pipeline` on `test` and checks the thresholds.

    Args:
        pipeline: the trained sklearn Pipeline (predicts from raw feature columns).
        test: raw feature columns + `__label__`.
        target: the target config section.
        section: the evaluation config section (min/max thresholds, decision_threshold).
        model_info: the trained model's metadata (task, classes, input_columns, family).

    Returns:
        The `Evaluation`.

    Raises:
        ConfigError: a threshold names an unknown metric, or target.task differs from the model's task.
        DataError: the test set lacks the label or feature columns, or holds unknown labels.
    """
    model_info = model_info or {}
    task = target.task
    if model_info.get("task") and model_info["task"] != task:
        raise ConfigError(f"target.task: is {task!r} but the model was trained for {model_info['task']!r}; use the same target section")
    m.check_thresholds(section, task)  # before any scoring: a typo should cost nothing
    X, y_true = split(test, pipeline, model_info, task)
    classes = None if task == "regression" else _classes(pipeline, model_info)
    n_classes = None if classes is None else len(classes)
    if classes is not None:
        unknown = sorted(set(np.unique(y_true).tolist()) - set(range(n_classes)))
        if unknown:
            raise DataError(
                f"test: {LABEL!r} values {unknown[:5]} are not among the model's {n_classes} classes; "
                "re-run split_data with the training data"
            )
    y_pred, proba = _predict(pipeline, X, task, n_classes, section.decision_threshold)
    values, skipped = m.compute(task, y_true, y_pred=y_pred, proba=proba, n_classes=n_classes, threshold=section.decision_threshold)
    passed, failures = m.gate(values, section, task, skipped)
    result = Evaluation(task=task, class_names=None if classes is None else class_names(classes), metrics=values, skipped=skipped,
                        passed=passed, failures=failures, rows=len(test), y_true=y_true, y_pred=y_pred, proba=proba)
    if classes is not None:
        result.confusion = m.confusion(y_true, y_pred, n_classes)
    if task == "binary" and proba is not None and len(np.unique(y_true)) == 2:
        result.roc = m.roc_points(y_true, proba[:, 1])
    return result


def load_model(path: str):
    """The joblib Pipeline that train_model wrote (only load artifacts your own pipeline made: joblib is pickle)."""
    import joblib

    model = joblib.load(io.BytesIO(storage.read_bytes(path)))
    if not hasattr(model, "predict"):
        raise DataError(f"trained_model: {type(model).__name__} has no predict(); it must be the Pipeline train_model writes")
    return model


def class_names(classes: list) -> list[str]:
    """Classes as display strings; KFP metadata turns int classes into floats (2 -> 2.0), so those turn back."""
    return [str(int(c)) if isinstance(c, float) and c.is_integer() else str(c) for c in classes]


def split(test: pd.DataFrame, pipeline, model_info: dict, task: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The model's input columns of `test` and its labels, checked (DataError names the column and the fix)."""
    if LABEL not in test.columns:
        raise DataError(f"test: no {LABEL!r} column; the test set must come from split_data")
    if len(test) == 0:
        raise DataError("test: no rows; raise split.test_size or use more data")
    columns = model_info.get("input_columns") or list(getattr(pipeline, "feature_names_in_", []))
    if not columns:
        columns = [c for c in test.columns if c != LABEL]
    missing = [c for c in columns if c not in test.columns]
    if missing:
        raise DataError(
            f"test: missing feature column(s) {missing[:10]} that the model was trained on; "
            "evaluate on data from the same split_data run"
        )
    labels = test[LABEL]
    if labels.isna().any():
        raise DataError(f"test: {LABEL!r} is missing in {int(labels.isna().sum())} row(s); clean_data must drop or quarantine them")
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(labels):
            raise DataError(f"test: {LABEL!r} is {labels.dtype}, not numeric; target.task regression needs a numeric target")
        return test[columns], labels.to_numpy(dtype=float)
    values = labels.to_numpy()
    if not pd.api.types.is_numeric_dtype(labels) or not np.all(np.mod(values, 1) == 0):
        raise DataError(f"test: {LABEL!r} must hold integer class indexes for target.task {task!r}; got {labels.dtype}")
    return test[columns], values.astype(int)


def _classes(pipeline, model_info: dict) -> list:
    if model_info.get("classes"):
        return list(model_info["classes"])
    fitted = getattr(pipeline, "classes_", None)
    if fitted is None:
        raise DataError("trained_model: no classes in its metadata and the model has no classes_; re-run train_model")
    return [int(c) for c in fitted]


def _predict(pipeline, X: pd.DataFrame, task: str, n_classes: int | None, threshold: float):
    try:
        if task == "regression":
            y_pred = np.asarray(pipeline.predict(X), dtype=float)
            bad = int((~np.isfinite(y_pred)).sum())
            if bad:
                raise DataError(f"test: the model predicted {bad} non-finite value(s); check the test rows for extreme feature values")
            return y_pred, None
        if not hasattr(pipeline, "predict_proba"):
            return np.asarray(pipeline.predict(X)).astype(int), None
        raw = np.asarray(pipeline.predict_proba(X), dtype=float)
    except ValueError as err:
        raise DataError(f"test: the model could not score the test rows: {str(err).splitlines()[0]}") from err
    # Columns follow the estimator's classes_; spread them over all known classes.
    proba = np.zeros((len(X), n_classes))
    proba[:, np.asarray(pipeline.classes_).astype(int)] = raw
    if task == "binary":
        return (proba[:, 1] >= threshold).astype(int), proba
    return proba.argmax(axis=1), proba
