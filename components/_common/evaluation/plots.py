"""Evaluation plots, each returned as an inline <figure> for the self-contained report.

Small figures at the report's 80 dpi, and scatter plots thinned to a seeded
sample, keep the whole report to a second or two on a large test set.
"""

from __future__ import annotations

import numpy as np

from keel.components._common.report import esc, figure_img, pyplot

_SIZE = (4.6, 3.6)
MAX_SCATTER_POINTS = 5000


def _figure(fig, caption: str) -> str:
    return f"<figure>{figure_img(fig, caption)}<figcaption>{esc(caption)}</figcaption></figure>"


def roc_plot(fpr, tpr, auc: float | None) -> str:
    """ROC curve with the chance diagonal."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=_SIZE)
    ax.plot(fpr, tpr, lw=2, label=f"model (AUC {auc:.3f})" if auc is not None else "model")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right")
    return _figure(fig, "ROC curve")


def pr_plot(y_true, score, average_precision: float | None) -> str:
    """Precision-recall curve with the positive rate as the no-skill line."""
    from sklearn.metrics import precision_recall_curve

    plt = pyplot()
    precision, recall, _ = precision_recall_curve(y_true, score)
    fig, ax = plt.subplots(figsize=_SIZE)
    label = f"model (AP {average_precision:.3f})" if average_precision is not None else "model"
    ax.step(recall, precision, where="post", lw=2, label=label)
    ax.axhline(float(np.mean(y_true)), ls="--", c="grey", lw=1, label="no skill")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper right")
    return _figure(fig, "Precision-recall curve")


def confusion_plot(matrix: list[list[int]], names: list[str]) -> str:
    """Confusion-matrix heatmap, counts written in the cells (up to 20 classes)."""
    plt = pyplot()
    data = np.asarray(matrix)
    side = min(3.2 + 0.35 * len(names), 10)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(data, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = range(len(names))
    ax.set_xticks(ticks, labels=names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=names)
    ax.set(xlabel="predicted", ylabel="true")
    if len(names) <= 20:
        midpoint = data.max() / 2 if data.size else 0
        for i in ticks:
            for j in ticks:
                ax.text(j, i, str(data[i, j]), ha="center", va="center", color="white" if data[i, j] > midpoint else "black")
    return _figure(fig, "Confusion matrix")


def score_distribution_plot(y_true, score, names: list[str], threshold: float) -> str:
    """Positive-class probability histograms for each true class, with the decision threshold."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=_SIZE)
    bins = np.linspace(0, 1, 31)
    for label, name in enumerate(names):
        ax.hist(score[y_true == label], bins=bins, alpha=0.55, density=True, label=f"true {name}")
    ax.axvline(threshold, c="black", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set(xlabel=f"predicted probability of {names[1]}", ylabel="density")
    ax.legend()
    return _figure(fig, "Score distribution by class")


def calibration_plot(y_true, score) -> str:
    """Reliability curve: mean predicted probability against the observed positive rate per quantile bin."""
    from sklearn.calibration import calibration_curve

    plt = pyplot()
    observed, predicted = calibration_curve(y_true, score, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=_SIZE)
    ax.plot(predicted, observed, marker="o", lw=2, label="model")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return _figure(fig, "Calibration curve")


def _thin(y_true, y_pred):
    if len(y_true) <= MAX_SCATTER_POINTS:
        return y_true, y_pred
    keep = np.random.default_rng(0).choice(len(y_true), MAX_SCATTER_POINTS, replace=False)
    return y_true[keep], y_pred[keep]


def predicted_vs_actual_plot(y_true, y_pred) -> str:
    """Predicted against actual values, with the identity line."""
    plt = pyplot()
    y_true, y_pred = _thin(np.asarray(y_true, float), np.asarray(y_pred, float))
    fig, ax = plt.subplots(figsize=_SIZE)
    ax.scatter(y_true, y_pred, s=6, alpha=0.4)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], ls="--", c="grey", lw=1)
    ax.set(xlabel="actual", ylabel="predicted")
    return _figure(fig, "Predicted vs actual")


def residual_plot(y_true, y_pred) -> str:
    """Residuals (actual - predicted) against the prediction."""
    plt = pyplot()
    y_true, y_pred = _thin(np.asarray(y_true, float), np.asarray(y_pred, float))
    fig, ax = plt.subplots(figsize=_SIZE)
    ax.scatter(y_pred, y_true - y_pred, s=6, alpha=0.4)
    ax.axhline(0, ls="--", c="grey", lw=1)
    ax.set(xlabel="predicted", ylabel="residual (actual - predicted)")
    return _figure(fig, "Residuals")
