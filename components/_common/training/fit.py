"""Fitting: the configured estimator on engineered features, shipped with its transformer. Shared by the train
stage and the tune stage's trials, so a trial fits exactly what train would.

The saved model is `Pipeline([("features", transformer), ("model", estimator)])`,
so whatever loads it (evaluate, batch inference, the KServe sklearn server)
predicts from raw feature columns and cannot pair a model with the wrong
transformer. Kept free of KFP so it runs in tests and in the components alike.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from keel.components._common import storage
from keel.components._common.config import ModelSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import LABEL
from keel.components._common.training.estimators import EstimatorSpec, build, spec_for

# What train reports on the train and validation sets; evaluate reports the full set on test.
TRAIN_METRICS = {
    "binary": ("accuracy", "roc_auc", "pr_auc", "log_loss", "f1"),
    "multiclass": ("accuracy", "f1_macro", "roc_auc", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
_XGBOOST_BAD_NAME_CHARS = ("[", "]", "<")


@dataclass
class Trained:
    """A fitted model and what to record about it."""

    pipeline: object  # sklearn Pipeline: features -> model
    estimator: object
    metrics: dict[str, float]
    metadata: dict = field(default_factory=dict)


def fit(
    train_frame: pd.DataFrame,
    validation_frame: pd.DataFrame,
    transformer,
    target: TargetSection,
    model: ModelSection,
    classes: list | None = None,
) -> Trained:
    """Fits the configured estimator and composes it with the fitted transformer.

    Early stopping uses the validation set: XGBoost when model.params sets
    early_stopping_rounds; HistGradientBoosting whenever its early stopping
    is in effect (its own `early_stopping`, "auto" by default), instead of
    carving a slice out of the training rows.

    Args:
        train_frame: engineered numeric features + `__label__`.
        validation_frame: the same columns; may have no rows (no validation metrics then).
        transformer: the fitted ColumnTransformer that produced the features from raw columns.
        target: the target config section (its task picks classifier or regressor).
        model: the model config section.
        classes: class names, index = label (from the split's metadata); classification only.

    Returns:
        The pipeline, the bare estimator, train/validation metrics and the model metadata.

    Raises:
        ConfigError: model.family / model.params do not fit the task or the estimator.
        DataError: the features or labels cannot be trained on; the message names the column or class.
    """
    task = target.task
    spec = spec_for(model.family, task)
    estimator = build(model, task)  # parameters are checked before any data is touched
    X, y = _split(train_frame, "train_features", task)
    X_val, y_val = _split(validation_frame, "validation_features", task)
    _check_columns(X, X_val, transformer)
    _check_values(X, "train_features", spec)
    if len(X_val):
        _check_values(X_val, "validation_features", spec)
    if len(X) < 2:
        raise DataError(f"train_features: {len(X)} row(s); a model needs at least 2; check split.test_size and the data size")
    classes = _resolve_classes(classes, y, y_val, task)

    # XGBoost refuses feature names holding [ ] <; one-hot names built from
    # raw category values can contain them, so such frames train unnamed.
    as_array = spec.framework == "xgboost" and any(c in str(n) for n in X.columns for c in _XGBOOST_BAD_NAME_CHARS)
    fit_X, fit_X_val = (X.to_numpy(), X_val.to_numpy()) if as_array else (X, X_val)
    fit_kwargs = _early_stopping_args(estimator, spec, fit_X_val, y_val)

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator.fit(fit_X, y, **fit_kwargs)
        except ValueError as err:
            raise ConfigError(
                f"model.params: {spec.class_name} could not train with these parameters: {str(err).splitlines()[0]}"
            ) from err
    seconds = time.perf_counter() - start
    # HistGradientBoosting decides for itself under early_stopping="auto".
    early_stopping = "eval_set" in fit_kwargs or bool(getattr(estimator, "do_early_stopping_", False))
    fit_warnings = _replay(caught)
    params = json_safe(estimator.get_params(deep=False))  # as trained
    if spec.family == "random_forest":
        # A forest sums its trees' outputs across threads in whatever order they
        # finish, so n_jobs > 1 at predict time breaks bit-identical predictions
        # (and costs a thread pool per single-row request when served).
        estimator.set_params(n_jobs=None)
    if spec.framework == "xgboost" and params.get("device") not in (None, "cpu"):
        # Trained on a GPU, served on CPU: a booster left on cuda warns and
        # copies every request's data across devices.
        estimator.set_params(device="cpu")

    from sklearn.pipeline import Pipeline

    pipeline = Pipeline([("features", transformer), ("model", estimator)])
    n_classes = len(classes) if classes is not None else None
    metrics = {f"train_{k}": v for k, v in _scores(estimator, fit_X, y, task, n_classes).items()}
    if len(X_val):
        metrics.update({f"validation_{k}": v for k, v in _scores(estimator, fit_X_val, y_val, task, n_classes).items()})
    metadata = {
        "framework": spec.framework,
        "family": model.family,
        "estimator": spec.class_name,
        "task": task,
        "params": params,
        "seed": model.seed,
        "classes": json_safe(classes),
        "input_columns": [str(c) for c in transformer.feature_names_in_],
        "n_features": int(X.shape[1]),
        "feature_names_kept": not as_array,
        "train_rows": int(len(X)),
        "validation_rows": int(len(X_val)),
        "training_seconds": round(seconds, 3),
        "early_stopping": early_stopping,
        "iterations": _iterations(estimator),
        "fit_warnings": fit_warnings,
        "format": "joblib",
        "library_versions": _versions(spec),
    }
    return Trained(pipeline=pipeline, estimator=estimator, metrics=metrics, metadata=metadata)


def save(pipeline, path: str) -> str:
    """Writes the pipeline with joblib, atomically; returns the file's content hash."""
    import joblib

    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=3)
    data = buffer.getvalue()
    storage.write_bytes(path, data)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def load_transformer(path: str):
    """Loads the engineer_features transformer and checks it is a fitted, named one."""
    import joblib

    transformer = joblib.load(io.BytesIO(storage.read_bytes(path)))
    if not hasattr(transformer, "transform") or not hasattr(transformer, "feature_names_in_"):
        raise DataError(
            f"transformer: {type(transformer).__name__} is not a fitted transformer with named input columns; "
            "re-run engineer_features"
        )
    return transformer


def json_safe(value):
    """Estimator params and class lists as JSON (KFP metadata): numpy scalars to Python, NaN/inf and objects to strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _split(frame: pd.DataFrame, where: str, task: str) -> tuple[pd.DataFrame, np.ndarray]:
    if LABEL not in frame.columns:
        raise DataError(f"{where}: no {LABEL!r} column; it must come from engineer_features (features + encoded target)")
    X = frame.drop(columns=[LABEL])
    labels = frame[LABEL]
    if labels.isna().any():
        rows = labels.index[labels.isna()][:5].tolist()
        raise DataError(
            f"{where}: {LABEL!r} is missing in {int(labels.isna().sum())} row(s), e.g. rows {rows}; "
            "clean_data must drop or quarantine them"
        )
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(labels):
            raise DataError(f"{where}: {LABEL!r} is {labels.dtype}, not numeric; target.task regression needs a numeric target")
        return X, labels.to_numpy(dtype=float)
    values = labels.to_numpy()
    if not pd.api.types.is_numeric_dtype(labels) or not np.all(np.mod(values, 1) == 0):
        raise DataError(
            f"{where}: {LABEL!r} must hold integer class indexes for target.task {task!r}; "
            f"got {labels.dtype} values such as {values[:3].tolist()}"
        )
    return X, values.astype(int)


def _check_columns(X: pd.DataFrame, X_val: pd.DataFrame, transformer) -> None:
    if X.shape[1] == 0:
        raise DataError("train_features: no feature columns besides the label; check features and data.drop_columns")
    if list(X_val.columns) != list(X.columns):
        missing = [c for c in X.columns if c not in X_val.columns]
        extra = [c for c in X_val.columns if c not in X.columns]
        raise DataError(
            f"validation_features: columns differ from train_features (missing {missing[:5]}, extra {extra[:5]}"
            f"{', or another order' if not (missing or extra) else ''}); re-run engineer_features on both"
        )
    if hasattr(transformer, "get_feature_names_out"):
        produced = [str(c) for c in transformer.get_feature_names_out()]
        if produced != [str(c) for c in X.columns]:
            raise DataError(
                f"train_features: its {X.shape[1]} columns are not the {len(produced)} the transformer produces "
                "(the artifacts come from different engineer_features runs); re-run engineer_features"
            )


def _check_values(X: pd.DataFrame, where: str, spec: EstimatorSpec) -> None:
    not_numeric = [c for c in X.columns if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))]
    if not_numeric:
        raise DataError(f"{where}: column(s) {not_numeric[:5]} are not numeric; engineer_features must encode every column")
    values = X.to_numpy(dtype=float)
    infinite = X.columns[np.isinf(values).any(axis=0)].tolist()
    if infinite:
        raise DataError(f"{where}: column(s) {infinite[:5]} hold infinite values; clip or drop them in clean_data")
    missing = X.columns[np.isnan(values).any(axis=0)].tolist()
    if missing and not spec.handles_missing:
        raise DataError(
            f"{where}: column(s) {missing[:5]} have missing values, which {spec.class_name} cannot take; "
            "impute them (features.numeric.impute) or use a family that accepts them (gradient_boosting, xgboost, random_forest)"
        )


def _resolve_classes(classes: list | None, y: np.ndarray, y_val: np.ndarray, task: str) -> list | None:
    if task == "regression":
        return None
    seen = np.concatenate([y, y_val]) if len(y_val) else y
    if classes is None:
        classes = list(range(int(seen.max()) + 1))
    classes = list(classes)
    if task == "binary" and len(classes) != 2:
        raise DataError(
            f"train_features: the split lists {len(classes)} classes {classes[:10]} but target.task is binary; "
            "set target.task: multiclass"
        )
    if len(classes) < 2:
        raise DataError(f"train_features: a single class {classes}; a classifier needs two or more")
    out_of_range = sorted(set(seen[(seen < 0) | (seen >= len(classes))].tolist()))
    if out_of_range:
        raise DataError(
            f"train_features: {LABEL!r} values {out_of_range[:5]} are not indexes into the {len(classes)} classes; "
            "re-run split_data"
        )
    absent = [classes[i] for i in range(len(classes)) if not (y == i).any()]
    if absent:
        raise DataError(
            f"train_features: class(es) {absent[:5]} have no training rows, so the model cannot learn them; "
            "add data, merge them into another class, or drop them"
        )
    return classes


def _early_stopping_args(estimator, spec: EstimatorSpec, X_val, y_val) -> dict:
    has_validation = len(y_val) > 0
    if spec.framework == "xgboost" and estimator.get_params().get("early_stopping_rounds"):
        if not has_validation:
            raise ConfigError("model.params.early_stopping_rounds: needs validation rows; set split.validation_size above 0 or remove it")
        return {"eval_set": [(X_val, y_val)], "verbose": False}
    if spec.framework in ("torch", "tensorflow") and has_validation:
        # The MLPs stop on the validation loss and keep their best epoch (torch_estimator.py).
        return {"eval_set": [(X_val, y_val)]}
    if spec.family == "gradient_boosting" and estimator.get_params().get("early_stopping") is not False and has_validation:
        # sklearn decides whether early stopping is on ("auto": over 10,000 rows);
        # when it is, it scores on these rows instead of a slice of train.
        return {"X_val": X_val, "y_val": y_val}
    return {}


def _scores(estimator, X, y, task: str, n_classes: int | None) -> dict:
    from keel.components._common.evaluation.metrics import compute

    if task == "regression":
        values, _ = compute(task, y, y_pred=estimator.predict(X))
    else:
        proba = estimator.predict_proba(X) if hasattr(estimator, "predict_proba") else None
        values, _ = compute(task, y, y_pred=estimator.predict(X), proba=proba, n_classes=n_classes)
    return {k: values[k] for k in TRAIN_METRICS[task] if k in values}


def _iterations(estimator) -> int | None:
    for attr in ("best_iteration", "n_iter_"):
        try:
            value = getattr(estimator, attr)
        except (AttributeError, ValueError):  # xgboost raises AttributeError without early stopping
            continue
        if value is not None:
            value = np.asarray(value).max()  # LogisticRegression: one count per class
            return int(value) + (1 if attr == "best_iteration" else 0)
    return None


def _replay(caught) -> list[str]:
    """Unique fit warnings as lines for the metadata, re-raised so logs show them too."""
    lines = []
    for item in caught:
        line = f"{item.category.__name__}: {str(item.message).strip().splitlines()[0] if str(item.message).strip() else ''}"
        if line not in lines:
            lines.append(line)
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return lines[:10]


def _versions(spec: EstimatorSpec) -> dict:
    import sklearn

    versions = {"scikit-learn": sklearn.__version__, "numpy": np.__version__}
    if spec.framework == "xgboost":
        import xgboost

        versions["xgboost"] = xgboost.__version__
    return versions
