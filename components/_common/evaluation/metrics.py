"""Model metrics and the pass/fail gate: pure functions over label and score arrays.

Every number comes from sklearn.metrics. A metric that is undefined on the
data at hand (ROC AUC with one class present, MAPE with a zero target) is left
out of the values and its reason recorded, never reported as NaN: a NaN in a
gate or a dashboard reads as a number and hides the problem.
"""

from __future__ import annotations

import numpy as np

from keel.components._common.config import EvaluationSection
from keel.components._common.errors import ConfigError

BINARY = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier")
MULTICLASS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "roc_auc",
    "log_loss",
)
REGRESSION = ("mae", "rmse", "r2", "mape")

_BY_TASK = {"binary": BINARY, "multiclass": MULTICLASS, "regression": REGRESSION}
MAX_ROC_POINTS = 200


def available_metrics(task: str) -> tuple[str, ...]:
    """The metric names Keel computes for a task (what evaluation.min/max may name).

    Args:
        task: binary, multiclass or regression.

    Returns:
        The metric names, in report order.
    """
    try:
        return _BY_TASK[task]
    except KeyError:
        raise ConfigError(f"target.task: {task!r} is not one of {', '.join(_BY_TASK)}") from None


def binary_metrics(y_true, score=None, *, threshold: float = 0.5, y_pred=None) -> tuple[dict, dict]:
    """Binary metrics from positive-class probabilities (or hard predictions only).

    Args:
        y_true: 0/1 labels.
        score: probability of the positive class per row; None for a model without probabilities.
        threshold: rows with score >= threshold are predicted positive.
        y_pred: hard predictions, used only when `score` is None.

    Returns:
        (values, skipped): metric -> float, and metric -> why it was not computed.
    """
    from sklearn import metrics as skm

    y_true = np.asarray(y_true).astype(int)
    if score is not None:
        score = np.asarray(score, dtype=float)
        y_pred = (score >= threshold).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    # zero_division=0: a model that never predicts positive has precision 0, not an error.
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=[0, 1], average="binary", zero_division=0)
    values = {"accuracy": skm.accuracy_score(y_true, y_pred), "precision": precision, "recall": recall, "f1": f1}
    skipped = {}
    probabilistic = ("roc_auc", "pr_auc", "log_loss", "brier")
    if score is None:
        skipped.update({name: "the model gives no probabilities" for name in probabilistic})
    else:
        both = len(np.unique(y_true)) == 2
        if both:
            values["roc_auc"] = skm.roc_auc_score(y_true, score)
            values["pr_auc"] = skm.average_precision_score(y_true, score)
        else:
            skipped.update({n: "needs both classes in the labels" for n in ("roc_auc", "pr_auc")})
        values["log_loss"] = skm.log_loss(y_true, np.column_stack([1 - score, score]), labels=[0, 1])
        values["brier"] = skm.brier_score_loss(y_true, score, labels=[0, 1])
    return _finite(values, skipped)


def multiclass_metrics(y_true, y_pred, proba=None, *, n_classes: int) -> tuple[dict, dict]:
    """Multiclass metrics: accuracy, macro/weighted precision, recall, F1, one-vs-rest ROC AUC, log loss.

    Args:
        y_true: int labels in [0, n_classes).
        y_pred: predicted int labels.
        proba: (rows, n_classes) class probabilities, or None.
        n_classes: the number of classes the model knows.

    Returns:
        (values, skipped) as in `binary_metrics`.
    """
    from sklearn import metrics as skm

    labels = list(range(n_classes))
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    values = {"accuracy": skm.accuracy_score(y_true, y_pred)}
    for average in ("macro", "weighted"):
        # sklearn's convention: averages run over the classes present in y_true or y_pred.
        scores = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        values.update({f"{name}_{average}": score for name, score in zip(("precision", "recall", "f1"), scores)})
    skipped = {}
    if proba is None:
        skipped.update({n: "the model gives no probabilities" for n in ("roc_auc", "log_loss")})
    else:
        proba = np.asarray(proba, dtype=float)
        present = np.unique(y_true)
        if len(present) == n_classes == 2:  # sklearn's one-vs-rest refuses two columns; the positive column is the score
            values["roc_auc"] = skm.roc_auc_score(y_true, proba[:, 1])
        elif len(present) == n_classes:
            values["roc_auc"] = skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
        else:
            missing = sorted(set(labels) - set(present.tolist()))
            skipped["roc_auc"] = f"one-vs-rest needs every class in the labels; class index(es) {missing} have no rows"
        values["log_loss"] = skm.log_loss(y_true, proba, labels=labels)
    return _finite(values, skipped)


def regression_metrics(y_true, y_pred) -> tuple[dict, dict]:
    """Regression metrics: MAE, RMSE, R², and MAPE when no target value is zero.

    Args:
        y_true: the true values.
        y_pred: the predictions.

    Returns:
        (values, skipped) as in `binary_metrics`.
    """
    from sklearn import metrics as skm

    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    values = {"mae": skm.mean_absolute_error(y_true, y_pred), "rmse": skm.root_mean_squared_error(y_true, y_pred)}
    skipped = {}
    if len(y_true) >= 2:
        values["r2"] = skm.r2_score(y_true, y_pred)
    else:
        skipped["r2"] = "needs at least two rows"
    # sklearn divides by max(|y|, eps), so one zero target turns MAPE into ~1e15: report nothing instead.
    if (np.abs(y_true) > np.finfo(float).eps).all():
        values["mape"] = skm.mean_absolute_percentage_error(y_true, y_pred)
    else:
        skipped["mape"] = "the target has zero values, where percentage error is undefined"
    return _finite(values, skipped)


def compute(task: str, y_true, *, y_pred=None, proba=None, n_classes: int | None = None, threshold: float = 0.5) -> tuple[dict, dict]:
    """The task's metrics.

    Args:
        task: binary, multiclass or regression.
        y_true: labels (int) or values (float).
        y_pred: hard predictions (multiclass, regression; binary without probabilities).
        proba: (rows, n_classes) class probabilities for classification, or None.
        n_classes: number of classes (classification).
        threshold: binary decision threshold on the positive-class probability.

    Returns:
        (values, skipped): metric -> float, and metric -> why it was not computed.
    """
    available_metrics(task)
    if task == "regression":
        return regression_metrics(y_true, y_pred)
    if proba is not None:
        # XGBoost's float32 probabilities sum to 1 only to float32 precision,
        # which sklearn's log loss flags; renormalising in float64 changes nothing else.
        proba = np.asarray(proba, dtype=float)
        proba = proba / proba.sum(axis=1, keepdims=True)
    if task == "binary":
        score = None if proba is None else np.asarray(proba)[:, 1]
        return binary_metrics(y_true, score, threshold=threshold, y_pred=y_pred)
    return multiclass_metrics(y_true, y_pred, proba, n_classes=n_classes)


def confusion(y_true, y_pred, n_classes: int) -> list[list[int]]:
    """Confusion matrix (rows: true class, columns: predicted), every class present, as plain ints."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int), labels=list(range(n_classes)))
    return matrix.astype(int).tolist()


def roc_points(y_true, score, max_points: int = MAX_ROC_POINTS) -> tuple[list[float], list[float], list[float]]:
    """ROC curve as (fpr, tpr, thresholds) lists fit for KFP metadata.

    sklearn's first threshold is +inf (the point where nothing is predicted
    positive); JSON and the KFP UI cannot carry inf, so it becomes the smallest
    float above every score, which keeps its meaning. Long curves are thinned
    to at most `max_points`, keeping both ends.

    Args:
        y_true: 0/1 labels, both classes present.
        score: positive-class probabilities.
        max_points: the most points to return.

    Returns:
        Three equal-length lists of finite floats.
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(np.asarray(y_true).astype(int), np.asarray(score, dtype=float))
    finite = np.isfinite(thresholds)
    ceiling = max(1.0, float(thresholds[finite].max())) if finite.any() else 1.0
    thresholds = np.where(np.isposinf(thresholds), np.nextafter(ceiling, np.inf), thresholds)
    thresholds = np.where(np.isneginf(thresholds), 0.0, thresholds)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return fpr.tolist(), tpr.tolist(), thresholds.tolist()


def check_thresholds(section: EvaluationSection, task: str) -> None:
    """Rejects a threshold that names a metric Keel does not compute for `task` (the CLI's pre-flight).

    Raises:
        ConfigError: naming evaluation.min.<name> or evaluation.max.<name>.
    """
    names = available_metrics(task)
    for bound_kind, bounds in (("min", section.min), ("max", section.max)):
        for name in bounds:
            if name not in names:
                raise ConfigError(f"evaluation.{bound_kind}.{name}: not a metric for {task}; available: {', '.join(names)}")


def gate(metrics: dict, section: EvaluationSection, task: str, skipped: dict | None = None) -> tuple[bool, list[str]]:
    """Checks metrics against evaluation.min / evaluation.max.

    A threshold whose metric could not be computed on this data fails: an
    unverifiable bound must not let a model through.

    Args:
        metrics: metric -> value, from `compute`.
        section: the evaluation config section.
        task: binary, multiclass or regression.
        skipped: metric -> reason it was not computed, from `compute`.

    Returns:
        (passed, failures), failures being lines like "roc_auc 0.71 < min 0.75".

    Raises:
        ConfigError: a threshold names a metric that does not exist for the task.
    """
    check_thresholds(section, task)
    skipped = skipped or {}
    failures = []
    for bound_kind, bounds in (("min", section.min), ("max", section.max)):
        for name, bound in bounds.items():
            value = metrics.get(name)
            if value is None:
                reason = skipped.get(name, "not computed")
                failures.append(f"{name} not available ({reason}), so {bound_kind} {bound:.4g} cannot be confirmed")
            elif bound_kind == "min" and value < bound:
                failures.append(f"{name} {value:.4g} < min {bound:.4g}")
            elif bound_kind == "max" and value > bound:
                failures.append(f"{name} {value:.4g} > max {bound:.4g}")
    return not failures, failures


def _finite(values: dict, skipped: dict) -> tuple[dict, dict]:
    out = {}
    for name, value in values.items():
        value = float(value)
        if np.isfinite(value):
            out[name] = value
        else:
            skipped[name] = "undefined on this data"
    return out, skipped
