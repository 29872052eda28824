"""The estimator's side of a request: predictions (and probabilities) from the feature matrix.

`serving_predictor` returns the fastest exact way to call the fitted estimator:

- HistGradientBoosting is compiled: scikit-learn makes one Python-level call
  per tree, with OpenMP set-up each time, about 1 ms for a hundred trees on a
  single row. `CompiledHistGradientBoosting` walks all trees at once with
  numpy, adds their leaf values in scikit-learn's order (so the raw score is
  the same double), and then calls the estimator's own loss to turn raw
  scores into probabilities, and its own rule for labels.
- Anything else is called as fitted (`EstimatorPredictor`), with one
  predict_proba call where scikit-learn itself defines the label as the
  argmax of the probabilities (random forests).

KeelModel proves the result identical to the registered Pipeline on probe
rows at load time, and serves through the Pipeline if it is not.
"""

from __future__ import annotations

import numpy as np

# scikit-learn defines these classifiers' predict as classes_[argmax(predict_proba)].
_ARGMAX_CLASSIFIERS = {"RandomForestClassifier", "ExtraTreesClassifier"}


class EstimatorPredictor:
    """The fitted estimator, called directly on the feature matrix."""

    def __init__(self, estimator, classification: bool):
        self.estimator = estimator
        self.classification = classification
        self.argmax = type(estimator).__name__ in _ARGMAX_CLASSIFIERS

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(encoded labels or values, probabilities or None)."""
        if not self.classification:
            return self.estimator.predict(X), None
        proba = self.estimator.predict_proba(X)
        codes = np.argmax(proba, axis=1) if self.argmax else self.estimator.predict(X)
        return codes, proba


class CompiledHistGradientBoosting:
    """A fitted HistGradientBoosting{Classifier,Regressor}'s trees as flat arrays, walked together."""

    def __init__(self, estimator, classification: bool):
        predictors = estimator._predictors
        if not predictors:
            raise ValueError("no trees")
        self.estimator = estimator
        self.classification = classification
        self.n_outputs = estimator.n_trees_per_iteration_
        self.baseline = np.asarray(estimator._baseline_prediction, dtype="float64").reshape(-1)
        columns = {name: [] for name in ("feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf", "value")}
        roots, output_of_tree, offset, depth = [], [], 0, 0
        for iteration in predictors:
            for k, tree in enumerate(iteration):
                nodes = tree.nodes
                if nodes["is_categorical"].any():
                    raise ValueError("native categorical splits")
                for name in columns:
                    values = nodes[name].astype("int64") if name in ("left", "right") else nodes[name]
                    columns[name].append(values + offset if name in ("left", "right") else values)
                roots.append(offset)
                output_of_tree.append(k)
                offset += len(nodes)
                depth = max(depth, int(nodes["depth"].max()))
        flat = {name: np.concatenate(parts) for name, parts in columns.items()}
        self.feature = flat["feature_idx"].astype("int64")
        self.threshold = flat["num_threshold"].astype("float64")
        self.missing_left = flat["missing_go_to_left"].astype(bool)
        self.left, self.right = flat["left"], flat["right"]
        self.is_leaf = flat["is_leaf"].astype(bool)
        self.value = flat["value"].astype("float64")
        self.roots = np.asarray(roots, dtype="int64")
        self.output_of_tree = np.asarray(output_of_tree, dtype="int64")
        self.depth = depth

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The raw scores, shape (rows, outputs): scikit-learn's `_raw_predict`, to the bit."""
        X = np.asarray(X, dtype="float64")
        rows = np.arange(X.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (X.shape[0], len(self.roots))).copy()
        for _ in range(self.depth + 1):
            inner = ~self.is_leaf[node]
            if not inner.any():
                break
            x = X[rows, self.feature[node]]
            # The same rule as scikit-learn's _predict_one_from_raw_data: NaN follows
            # missing_go_to_left, otherwise x <= threshold goes left.
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        leaves = self.value[node]
        raw = np.empty((X.shape[0], self.n_outputs), dtype="float64", order="F")
        for k in range(self.n_outputs):
            # cumsum adds left to right, one tree after another, exactly like
            # scikit-learn's `raw_predictions[:, k] += tree`; np.sum would add pairwise.
            terms = np.column_stack([np.full(X.shape[0], self.baseline[k]), leaves[:, self.output_of_tree == k]])
            raw[:, k] = np.cumsum(terms, axis=1)[:, -1]
        return raw

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raw = self.raw(X)
        loss = self.estimator._loss
        if not self.classification:
            return loss.link.inverse(raw.ravel()), None
        proba = loss.predict_proba(raw)
        # scikit-learn's own label rule: raw > 0 for one output, argmax otherwise.
        codes = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return codes, proba


def serving_predictor(estimator, classification: bool):
    """The compiled predictor when the estimator allows it, else the estimator itself."""
    if type(estimator).__name__ in ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor"):
        try:
            return CompiledHistGradientBoosting(estimator, classification)
        except (AttributeError, ValueError, KeyError):
            pass  # a layout this compiler does not know: the estimator's own predict is exact
    return EstimatorPredictor(estimator, classification)
