"""Confidence intervals for group rates and for the disparities between groups.

Group rates are proportions, so they get Wilson score intervals (scipy's),
which stay inside 0..1 and behave on small groups where the normal
approximation does not. Disparities (max - min, min / max over groups) have
no closed form, so they get a percentile bootstrap, stratified by group so
every resample keeps each group's size.

The bootstrap is vectorised: a binary classifier's rows in one group fall in
four cells (label x prediction), and resampling n rows with replacement is a
multinomial draw over those cells. So each resample costs O(groups), not
O(rows), and 500 resamples of any test set take milliseconds. (fairlearn's
own MetricFrame bootstrap recomputes a pandas groupby per resample and does
not stratify.)
"""

from __future__ import annotations

import numpy as np

# The cells of a binary confusion matrix, in the order the bootstrap draws them.
CELLS = ("tn", "fp", "fn", "tp")

# Disparity metrics of a binary classifier, as fairlearn defines them (between groups, worst case).
BINARY_DISPARITIES = ("demographic_parity_difference", "demographic_parity_ratio",
                      "equalized_odds_difference", "equalized_odds_ratio")

# Above this many rows x resamples, the MAE bootstrap draws its resamples in blocks (memory, not speed).
_BLOCK_CELLS = 2_000_000


def wilson(successes: int, n: int, confidence: float) -> tuple[float | None, float | None]:
    """Wilson score interval of the proportion successes / n; (None, None) when n is 0."""
    if n <= 0:
        return None, None
    from scipy.stats import binomtest

    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """The percentile interval of bootstrap statistics, ignoring resamples where the statistic is undefined (NaN)."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None, None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def binary_cells(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, names: list) -> np.ndarray:
    """Confusion-matrix counts per group: shape (groups, 4) in CELLS order."""
    cell = 2 * np.asarray(y_true, dtype=int) + np.asarray(y_pred, dtype=int)  # tn=0, fp=1, fn=2, tp=3
    return np.stack([np.bincount(cell[groups == name], minlength=4) for name in names])


def binary_disparities(cells: np.ndarray) -> dict[str, np.ndarray]:
    """fairlearn's four disparity metrics from cell counts of shape (..., groups, 4); NaN where undefined.

    A rate with no rows under it (a group with no positive labels has no true
    positive rate) is undefined, and so is every disparity that needs it,
    rather than counted as 0 as sklearn's normalised confusion matrix would.
    """
    tn, fp, fn, tp = (cells[..., i].astype(float) for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        selection = (fp + tp) / (tn + fp + fn + tp)
        tpr = tp / (tp + fn)
        fpr = fp / (fp + tn)
    dp_difference, dp_ratio = spread(selection)
    tpr_difference, tpr_ratio = spread(tpr)
    fpr_difference, fpr_ratio = spread(fpr)
    return {
        "demographic_parity_difference": dp_difference,
        "demographic_parity_ratio": dp_ratio,
        # Worst case of the two rates, as fairlearn's agg="worst_case".
        "equalized_odds_difference": np.maximum(tpr_difference, fpr_difference),
        "equalized_odds_ratio": np.minimum(tpr_ratio, fpr_ratio),
    }


def bootstrap_binary(cells: np.ndarray, resamples: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each disparity metric over `resamples` stratified bootstrap resamples: arrays of shape (resamples,)."""
    sizes = cells.sum(axis=1)
    draws = np.stack([rng.multinomial(n, counts / n, size=resamples) for n, counts in zip(sizes, cells)], axis=1)
    return binary_disparities(draws)


def bootstrap_proportions(successes: np.ndarray, sizes: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """A per-group proportion (e.g. accuracy) over stratified resamples, shape (resamples, groups): binomial draws."""
    return rng.binomial(sizes, successes / sizes, size=(resamples, len(sizes))) / sizes


def spread(rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max - min, min / max) over the last axis (groups); NaN when a group's rate is undefined or max is 0."""
    high, low = rates.max(axis=-1), rates.min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return high - low, np.where(high > 0, low / np.where(high > 0, high, 1.0), np.nan)



def bootstrap_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The mean of `values` over `resamples` bootstrap resamples (drawn in blocks to bound memory)."""
    n = len(values)
    block = max(1, _BLOCK_CELLS // max(n, 1))
    means = [values[rng.integers(0, n, size=(min(block, resamples - start), n))].mean(axis=1)
             for start in range(0, resamples, block)]
    return np.concatenate(means)
