"""Fairness plots, each returned as an inline <figure> for the self-contained report and the model card.

They draw from the JSON form of the result (FairnessResult.to_dict()), so the
model card can redraw them from stored metadata without the model or data.
"""

from __future__ import annotations

import numpy as np

from keel.components._common.report import esc, figure_img, pyplot

# The rate each task's group table shows, in drawing order.
TASK_RATES = {"binary": ("selection_rate", "true_positive_rate", "false_positive_rate", "precision"),
              "multiclass": ("accuracy",), "regression": ("mae",)}
_LABELS = {"selection_rate": "selection rate", "true_positive_rate": "true positive rate",
           "false_positive_rate": "false positive rate", "precision": "precision", "accuracy": "accuracy",
           "mae": "mean absolute error"}


def _figure(fig, caption: str) -> str:
    return f"<figure>{figure_img(fig, caption)}<figcaption>{esc(caption)}</figcaption></figure>"


def _bars(ax, groups: list[dict], metrics: tuple[str, ...], offset_of, width: float, label_of, **style) -> None:
    """One bar per (group, metric), with its interval as an error bar; an undefined rate draws nothing."""
    for j, metric in enumerate(metrics):
        values = np.array([np.nan if g[metric]["value"] is None else g[metric]["value"] for g in groups], dtype=float)
        low = np.array([np.nan if g[metric]["low"] is None else g[metric]["low"] for g in groups], dtype=float)
        high = np.array([np.nan if g[metric]["high"] is None else g[metric]["high"] for g in groups], dtype=float)
        errors = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0).clip(min=0)
        ax.bar(np.arange(len(groups)) + offset_of(j), np.nan_to_num(values), width, yerr=errors, capsize=2,
               label=label_of(metric), **style.get(metric, {}))


def group_rates_plot(column: str, task: str, groups: list[dict]) -> str:
    """Each group's rates (binary) or accuracy / MAE, with interval error bars; groups left out of the gate are hatched."""
    plt = pyplot()
    metrics = TASK_RATES[task]
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(min(3.0 + 0.9 * len(groups) * len(metrics) ** 0.5, 12), 3.8))
    _bars(ax, groups, metrics, lambda j: (j - (len(metrics) - 1) / 2) * width, width, lambda m: _LABELS[m])
    for i, group in enumerate(groups):
        if not group.get("included", True):
            ax.axvspan(i - 0.45, i + 0.45, color="grey", alpha=0.15, hatch="//", lw=0)
    ax.set_xticks(range(len(groups)), labels=[_tick(g) for g in groups], rotation=30 if len(groups) > 4 else 0, ha="right"
                  if len(groups) > 4 else "center")
    ax.set(ylabel="rate" if task != "regression" else _LABELS["mae"], xlabel=column)
    if task != "regression":
        ax.set_ylim(0, 1.05)
    ax.legend(fontsize="small", ncol=2 if len(metrics) > 2 else 1)
    caption = f"{column}: {', '.join(_LABELS[m] for m in metrics)} by group"
    if any(not group.get("included", True) for group in groups):
        caption += " (hatched: too few rows, left out of the gate)"
    return _figure(fig, caption)


def mitigation_plot(mitigation: dict) -> str:
    """Selection rate and true positive rate per group, before and after ThresholdOptimizer."""
    plt = pyplot()
    before, after = mitigation["before"]["groups"], mitigation["after"]["groups"]
    fig, axes = plt.subplots(1, 2, figsize=(min(4.0 + 1.2 * len(before), 12), 3.6), sharey=True)
    for ax, metric in zip(axes, ("selection_rate", "true_positive_rate")):
        for k, (name, rows) in enumerate((("before", before), ("after", after))):
            _bars(ax, rows, (metric,), lambda j, k=k: (k - 0.5) * 0.4, 0.4, lambda m, name=name: name)
        ax.set_xticks(range(len(before)), labels=[g["group"] for g in before], rotation=30 if len(before) > 4 else 0)
        ax.set(title=_LABELS[metric], ylim=(0, 1.05), xlabel=mitigation["attribute"])
    axes[0].legend(fontsize="small")
    return _figure(fig, f"ThresholdOptimizer ({mitigation['constraint']}) on {mitigation['attribute']}: before and after")


def _tick(group: dict) -> str:
    return f"{group['group']}\n(n={group['n']})"
