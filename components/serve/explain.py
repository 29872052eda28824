"""Per-request feature attributions with shap, reported per raw input column.

The model sees engineered features (one-hot columns, missing indicators), but
a reviewer asks about the columns they sent. Shapley values add up, so the
attributions of every feature derived from one raw column are summed into
that column's attribution; `base_value + sum(attributions)` still equals the
model's raw output, which the response states next to them.

Tree models (gradient boosting, random forest, XGBoost) use TreeExplainer
with the trees' own cover statistics, so no background data has to ship with
the bundle. Linear models use LinearExplainer against the all-zero feature
row, which for standardised numeric features is the training mean.
"""

from __future__ import annotations

import numpy as np


class NoExplainer(Exception):
    """shap has no explainer for this estimator without background data."""


class Attributions:
    """shap attributions for an estimator, aggregated to raw input columns."""

    def __init__(self, estimator, n_features: int, sources: list[str] | None, feature_names: list[str]):
        import shap

        try:
            self._explainer = shap.TreeExplainer(estimator)
            self.method = "tree"
        except Exception as tree_error:  # noqa: BLE001 - shap raises several types for "not a tree model"
            if not hasattr(estimator, "coef_"):
                raise NoExplainer(f"{type(estimator).__name__}: {tree_error}") from None
            background = shap.maskers.Independent(np.zeros((1, n_features)))
            self._explainer = shap.LinearExplainer(estimator, background)
            self.method = "linear"
        # Without a source per feature (scikit-learn fallback path), report per feature.
        self.columns = sources if sources is not None else feature_names
        self._order = list(dict.fromkeys(self.columns))
        index = {name: i for i, name in enumerate(self._order)}
        self._groups = np.zeros((n_features, len(self._order)))
        for j, column in enumerate(self.columns):
            self._groups[j, index[column]] = 1.0

    def explain(self, X: np.ndarray, classes: list | None) -> list[dict]:
        """One explanation per row: base value, raw output and per-column attributions (largest first)."""
        result = self._explainer(X)
        values, base = np.asarray(result.values), np.asarray(result.base_values)
        out = []
        for i in range(X.shape[0]):
            if values.ndim == 2:  # one output: regression, or a binary model's log-odds
                out.append(self._one(values[i], float(np.ravel(base[i])[0]) if base.ndim else float(base)))
            elif classes is not None and len(classes) == 2:  # binary with one column per class: the positive one
                out.append(self._one(values[i][:, 1], float(base[i][1])))
            else:
                per_class = {str(c): self._one(values[i][:, k], float(base[i][k])) for k, c in enumerate(classes or [])}
                out.append({"per_class": per_class})
        return out

    def _one(self, row: np.ndarray, base: float) -> dict:
        summed = row @ self._groups
        order = np.argsort(-np.abs(summed), kind="stable")
        return {
            "base_value": base,
            "output": float(base + summed.sum()),
            "attributions": {self._order[k]: float(summed[k]) for k in order},
        }
