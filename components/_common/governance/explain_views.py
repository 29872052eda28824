"""Explanation plots and the model card's rows, each drawn from the explainer's metadata or arrays alone, so the
explain stage's report and the model card render the same views."""

from __future__ import annotations

import numpy as np
import pandas as pd

from keel.components._common.report import esc, figure_img, pyplot

BAR_COLUMNS = 20  # bars in the global plot
SUMMARY_COLUMNS = 10  # rows of the summary (beeswarm-like) plot


def _figure(fig, caption: str) -> str:
    return f"<figure>{figure_img(fig, caption)}<figcaption>{esc(caption)}</figcaption></figure>"


def global_bar_plot(values: dict[str, float], measure: str, caption: str = "Global attributions per input column") -> str:
    """Horizontal bars of the largest global values, largest on top."""
    plt = pyplot()
    top = sorted(values.items(), key=lambda kv: -kv[1])[:BAR_COLUMNS]
    names, heights = [k for k, _ in top][::-1], [v for _, v in top][::-1]
    fig, ax = plt.subplots(figsize=(5.6, 0.8 + 0.28 * max(len(top), 1)))
    ax.barh(range(len(top)), heights, color="#3e7cb1")
    ax.set_yticks(range(len(top)), labels=names)
    ax.set_xlabel(measure)
    ax.axvline(0, c="grey", lw=0.8)
    return _figure(fig, caption)


def summary_plot(values: np.ndarray, sample: pd.DataFrame, output: str) -> str:
    """Each row's attribution per column (x), coloured by the column's value in that row.

    Args:
        values: (rows, columns) attributions, columns in `sample`'s order.
        sample: the raw rows; numeric columns colour low (blue) to high (red) by rank,
            other columns are grey.
        output: what the attributions are measured in (axis label).
    """
    plt = pyplot()
    columns = list(sample.columns)
    order = np.argsort(-np.abs(values).mean(axis=0), kind="stable")[:SUMMARY_COLUMNS][::-1]
    rng = np.random.default_rng(0)  # jitter only: the same report for the same values
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.4 * len(order)))
    for y, j in enumerate(order):
        x = values[:, j]
        jitter = y + rng.uniform(-0.28, 0.28, size=len(x))
        raw = sample[columns[j]]
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            colour = raw.rank(pct=True).to_numpy(dtype=float)
            known = np.isfinite(colour)
            ax.scatter(x[~known], jitter[~known], s=7, c="#9aa5b1", alpha=0.6, lw=0)
            ax.scatter(x[known], jitter[known], s=7, c=colour[known], cmap="coolwarm", vmin=0, vmax=1, alpha=0.8, lw=0)
        else:
            ax.scatter(x, jitter, s=7, c="#9aa5b1", alpha=0.6, lw=0)
    if any(pd.api.types.is_numeric_dtype(sample[columns[j]]) for j in order):
        bar = fig.colorbar(plt.cm.ScalarMappable(cmap="coolwarm", norm=plt.Normalize(0, 1)), ax=ax, fraction=0.04)
        bar.set_ticks([0, 1], labels=["low", "high"])
        bar.set_label("column value (rank)")
    ax.set_yticks(range(len(order)), labels=[columns[j] for j in order])
    ax.axvline(0, c="grey", lw=0.8)
    ax.set_xlabel(f"attribution ({output.replace('_', '-')})")
    return _figure(fig, f"Attributions per row, top {len(order)} columns (grey: categorical or missing)")


def card_figures(metadata: dict) -> list[str]:
    """Figures for the model card from the explainer artifact's metadata alone (no report needed).

    Args:
        metadata: the explainer artifact's metadata (`Explanation.metadata()`).

    Returns:
        One <figure> with an inline PNG bar chart of the global attributions; none when
        the metadata holds no attributions.
    """
    values = metadata.get("global_attributions") or {}
    if not values:
        return []
    measure = metadata.get("measure") or "global attribution"
    caption = f"What the model relies on ({metadata.get('method', 'unknown')} explainer)"
    return [global_bar_plot({str(k): float(v) for k, v in values.items()}, measure, caption)]


def card_summary(metadata: dict) -> list[dict]:
    """Rows for the model card: column, mean_abs (the global value) and direction, largest first.

    Args:
        metadata: the explainer artifact's metadata (`Explanation.metadata()`); `measure`
            there says what mean_abs holds (mean |shap| or permutation importance).
    """
    directions = metadata.get("directions") or {}
    return [{"column": column, "mean_abs": float(value), "direction": directions.get(column, "unknown")}
            for column, value in (metadata.get("global_attributions") or {}).items()]
