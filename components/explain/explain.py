"""Explain logic: global feature attributions on the test split, and the explainer the predictor serves.

The model is the trained Pipeline (a fitted ColumnTransformer, then the
estimator), so the estimator sees engineered features: one-hot columns,
missing indicators. A reviewer asks about the columns a request sends, so
every attribution is reported per RAW input column: Shapley values add up,
and the values of the features one raw column produced are summed (the same
feature -> column mapping the predictor's compiled transform uses).

Methods:
- tree: shap's TreeExplainer (forests, histogram boosting, XGBoost): exact, from
  the trees' own statistics, no background data.
- linear: shap's LinearExplainer against the mean training row: exact.
- permutation, for any other model (MLPs): per-row Shapley values from shap's
  PermutationExplainer over the estimator's probabilities (or predictions),
  masking with k-means centroids of the training features (centroids, not
  rows, so no training record travels in the bundle); the global ranking is
  scikit-learn's permutation importance of each raw column on the test rows.

The explainer spec written here (`explainer.json` in the bundle) is read by
keel.components._common.explainer_spec, which builds the same explainer per request.
Kept free of KFP so it runs in tests and in the component alike.
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from keel.components._common import report, storage, tables
from keel.components._common.config import ExplainSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import LABEL
from keel.components._common.explainer_spec import SPEC_FORMAT, Attributions, parse_spec

TOP_COLUMNS = 30  # global attributions kept in the artifact's metadata
PERMUTATIONS = 2  # antithetic permutations per row: each pass is exact in sum, more only lowers the variance
PERMUTATION_ROWS = 100  # rows given per-row permutation attributions (cost: rows x (2 features + 1) x background)
KMEANS_ROWS = 5000  # training rows the centroids are fitted on (a seeded sample above that)
DISCRETE_VALUES = 20  # a feature with at most this many training values keeps them in the centroids
DIRECTION_CORRELATION = 0.2  # |corr(value, attribution)| below this reads as "mixed"


@dataclass
class Explanation:
    """What explain found, in the shapes the artifacts need.

    Attributes:
        method: "tree", "linear" or "permutation".
        reason: why that method (one sentence for the report).
        output: what attributions are measured in: "log_odds", "probability" or "value".
        measure: what the global values are (mean |shap| or permutation importance).
        task: binary, multiclass or regression.
        rows: test rows explained (the seeded sample).
        global_values: raw column -> global value, largest first.
        signed: raw column -> mean signed attribution (single-output models), else None.
        directions: raw column -> "raises", "lowers", "mixed", "by category", "per class" or "unknown".
        per_class: class -> (raw column -> mean |attribution|) for multiclass models, else None.
        importance_std: raw column -> std of the permutation importance (permutation only).
        spec: the explainer spec (JSON-able).
        values: per-row attributions (rows, raw columns, outputs) of `sample`, for the summary plot.
        sample: the raw rows `values` explains.
    """

    method: str
    reason: str
    output: str
    measure: str
    task: str
    rows: int
    global_values: dict[str, float]
    signed: dict[str, float] | None
    directions: dict[str, str]
    per_class: dict[str, dict[str, float]] | None
    importance_std: dict[str, float] | None
    spec: dict
    values: np.ndarray | None = field(default=None, repr=False)
    sample: pd.DataFrame | None = field(default=None, repr=False)

    def metadata(self) -> dict:
        """The explainer artifact's metadata (JSON-able; top columns only)."""
        top = list(self.global_values)[:TOP_COLUMNS]
        meta = {
            "method": self.method,
            "reason": self.reason,
            "output": self.output,
            "measure": self.measure,
            "task": self.task,
            "rows": self.rows,
            "attribution_rows": 0 if self.values is None else int(self.values.shape[0]),
            "global_attributions": {c: self.global_values[c] for c in top},
            "directions": {c: self.directions.get(c, "unknown") for c in top},
        }
        if self.per_class is not None:
            meta["per_class"] = {k: dict(list(v.items())[:10]) for k, v in self.per_class.items()}
        return meta


def explain(pipeline, train: pd.DataFrame, test: pd.DataFrame, target: TargetSection, section: ExplainSection,
            model_info: dict) -> Explanation:
    """Global attributions per raw input column, and the explainer spec for the predictor.

    Args:
        pipeline: the trained sklearn Pipeline ([features, model]; predicts from raw columns).
        train: the training split (raw columns + `__label__`): background for linear and permutation.
        test: the test split (raw columns + `__label__`); a seeded sample of `section.sample_rows` is explained.
        target: the target config section.
        section: the explain config section.
        model_info: the trained model's metadata (task, classes, input_columns, family, estimator).

    Returns:
        The `Explanation`.

    Raises:
        ConfigError: explain.method shap on a model shap has no exact explainer for, or target.task
            differs from the model's.
        DataError: a split lacks the model's columns or rows, or the model is not a [features, model] Pipeline.
    """
    task = target.task
    if model_info.get("task") and model_info["task"] != task:
        raise ConfigError(f"target.task: is {task!r} but the model was trained for {model_info['task']!r}; use the same target section")
    transformer, estimator = _steps(pipeline)
    columns = _input_columns(pipeline, model_info)
    for name, frame in (("train", train), ("test", test)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"{name}: missing feature column(s) {missing[:10]} that the model was trained on; "
                            "explain with the splits of the same split_data run")
        if len(frame) == 0:
            raise DataError(f"{name}: no rows; raise split.test_size or use more data")
    sample = test.sample(n=min(section.sample_rows, len(test)), random_state=section.seed).sort_index()
    feature_names = [str(n) for n in transformer.get_feature_names_out()]
    sources = feature_sources(transformer, columns, feature_names)
    bare = bare_estimator(estimator)
    classes = None if task == "regression" else _classes(pipeline, model_info)
    method, reason = choose_method(bare, section.method, model_info)
    output = output_of(method, bare, task)

    background = None
    if method != "tree":
        X_train = _features(transformer, train[columns])
        if method == "linear":
            background = np.nan_to_num(_column_means(X_train))[None, :]  # an all-missing feature: nothing to integrate over
        else:
            background = kmeans_background(X_train, section.background_rows, section.seed)
    spec = explainer_spec(method, feature_names, sources, output, background, classes, section.seed)
    explainer = Attributions.from_spec(parse_spec(spec), bare, feature_names, classes)

    attributed = sample if method != "permutation" else sample.iloc[:PERMUTATION_ROWS]
    values, _ = explainer.values(_features(transformer, attributed[columns]))
    raw_columns = explainer.raw_columns
    global_values, signed, per_class, std = _shap_globals(values, raw_columns, classes)
    measure = f"mean |shap value| ({output.replace('_', '-')})"
    if method == "permutation":
        global_values, std, measure = _permutation_importance(pipeline, sample, columns, task, section)
    directions = _directions(values, raw_columns, attributed)
    return Explanation(method=method, reason=reason, output=output, measure=measure, task=task, rows=len(sample),
                       global_values=global_values, signed=signed, directions=directions, per_class=per_class,
                       importance_std=std, spec=spec, values=values, sample=attributed[raw_columns].reset_index(drop=True))


def explainer_spec(method: str, feature_names: list[str], sources: list[str], output: str, background: np.ndarray | None,
                   classes: list | None, seed: int, permutations: int = PERMUTATIONS) -> dict:
    """The JSON-able spec the predictor builds its explainer from (`explainer.json` in the bundle).

    Args:
        method: "tree", "linear" or "permutation".
        feature_names: the engineered features, in the model's order.
        sources: the raw input column behind each engineered feature.
        output: "log_odds", "probability" or "value".
        background: linear: the mean training row; permutation: the k-means centroids; tree: None.
        classes: the model's classes (display strings), None for regression.
        seed: seeds the permutations, so the same request gets the same attributions.
        permutations: antithetic permutations per row (permutation only).
    """
    spec = {
        "format": SPEC_FORMAT,
        "method": method,
        "feature_names": [str(n) for n in feature_names],
        "sources": [str(s) for s in sources],
        "output": output,
        "background": None if background is None else np.asarray(background, dtype=float).tolist(),
        "classes": None if classes is None else [str(c) for c in classes],
        "seed": int(seed),
    }
    if method == "permutation":
        spec["permutations"] = int(permutations)
    return spec


def choose_method(estimator, requested: str, model_info: dict | None = None) -> tuple[str, str]:
    """(method, why) for explain.method: auto, shap or permutation.

    Raises:
        ConfigError: explain.method is shap and shap has no exact explainer for the estimator.
    """
    import shap

    name = type(estimator).__name__
    if requested == "permutation":
        return "permutation", ("explain.method is permutation: per-row Shapley values by permutation over k-means "
                               "centroids of the training features, ranked by permutation importance")
    try:
        shap.TreeExplainer(estimator)
        return "tree", (f"{name} is a tree ensemble, so shap's TreeExplainer gives exact Shapley values from the "
                        "trees' own statistics, with no background data")
    except Exception:  # noqa: BLE001 - shap raises several types for "not a tree model"; the answer is: not a tree
        pass
    if hasattr(estimator, "coef_") and hasattr(estimator, "intercept_"):
        return "linear", f"{name} is linear, so shap's LinearExplainer gives exact Shapley values against the mean training row"
    if requested == "shap":
        family = (model_info or {}).get("family", "unknown")
        raise ConfigError(f"explain.method: shap has no exact explainer for {name} (model.family {family}), which is "
                          "neither a tree ensemble nor a linear model; set explain.method to permutation (or auto)")
    return "permutation", (f"shap has no exact explainer for {name} (neither a tree ensemble nor a linear model), so "
                           "per-row Shapley values are estimated by permutation over k-means centroids of the training "
                           "features, and the global ranking is permutation importance")


def output_of(method: str, estimator, task: str) -> str:
    """What the method's attributions are measured in."""
    if task == "regression":
        return "value"
    if method == "permutation":
        return "probability"
    if method == "tree":
        import shap

        return "probability" if shap.TreeExplainer(estimator).model.tree_output == "probability" else "log_odds"
    return "log_odds"


def feature_sources(transformer, input_columns: list[str], feature_names: list[str]) -> list[str]:
    """The raw input column behind each engineered feature.

    The predictor's compiled transform tracks this step by step; a transformer it
    cannot compile falls back to the feature names (`part__column...`).

    Raises:
        DataError: a feature name names no input column.
    """
    from keel.components._common.compiled_features import CompiledFeatures, NotCompilable

    try:
        sources = CompiledFeatures(transformer, input_columns).sources
        if len(sources) == len(feature_names):
            return [str(s) for s in sources]
    except NotCompilable:
        pass  # the names below still tell
    by_length = sorted(input_columns, key=len, reverse=True)
    sources = []
    for name in feature_names:
        stem = name.split("__", 1)[1] if "__" in name else name
        match = next((c for c in by_length if stem == c or stem.startswith(f"{c}_")), None)
        if match is None:
            raise DataError(f"trained_model: cannot tell which input column feature {name!r} comes from; "
                            "name features <part>__<column>[_<suffix>] (engineer_features does)")
        sources.append(match)
    return sources


def kmeans_background(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means centroids of the training features: what model-agnostic explainers integrate over.

    Centroids average many rows, so no training record ships with the bundle.
    Features with few distinct values (one-hot columns, indicators, ordinal codes)
    are snapped to the nearest value seen, so the model is not asked about a
    half-set one-hot column; continuous features keep the centroid's mean.
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, dtype=float)
    if len(X) > KMEANS_ROWS:
        X = X[np.random.default_rng(seed).choice(len(X), KMEANS_ROWS, replace=False)]
    filled = np.where(np.isfinite(X), X, np.nan_to_num(_column_means(X)))  # k-means needs numbers: missing counts as the mean
    k = min(k, len(np.unique(filled, axis=0)))
    # One thread: a pod sees the node's cores but is throttled to its CPU limit, and an
    # oversubscribed OpenMP pool made a 400-row fit take seconds instead of milliseconds.
    with threadpool_limits(1):
        centroids = KMeans(n_clusters=k, n_init=2, random_state=seed).fit(filled).cluster_centers_
    for j in range(filled.shape[1]):
        seen = np.unique(filled[:, j])
        if len(seen) <= DISCRETE_VALUES:
            centroids[:, j] = seen[np.abs(centroids[:, j][:, None] - seen[None, :]).argmin(axis=1)]
    return centroids


def bare_estimator(estimator):
    """A shallow copy that takes numpy features: the estimator was fitted on a DataFrame, and
    shap passes arrays in the same column order, so the per-call name check only warns."""
    bare = copy.copy(estimator)
    if "feature_names_in_" in vars(bare):  # scikit-learn's; XGBoost's is a read-only property
        del bare.feature_names_in_
    return bare


def explain_files(model_path: str, train_path: str, test_path: str, target: TargetSection, section: ExplainSection,
                  model_info: dict, explainer_path: str, report_path: str) -> Explanation:
    """Loads the model and splits, explains, and writes the spec JSON and the HTML report."""
    import joblib

    pipeline = joblib.load(io.BytesIO(storage.read_bytes(model_path)))  # only artifacts your own pipeline made: joblib is pickle
    result = explain(pipeline, tables.read_parquet(train_path), tables.read_parquet(test_path), target, section, model_info)
    storage.write_bytes(explainer_path, json.dumps(result.spec, indent=1).encode(), content_type="application/json")
    storage.write_bytes(report_path, render_report(result, model_info).encode(), content_type="text/html")
    return result


def render_report(result: Explanation, model_info: dict | None = None) -> str:
    """The self-contained HTML report: method and why, plots and the attribution table."""
    from keel.components._common.governance import explain_views as plots

    model_info = model_info or {}
    about = [
        {"field": "method", "value": result.method},
        {"field": "why", "value": result.reason},
        {"field": "attributions in", "value": result.output.replace("_", "-")},
        {"field": "global values", "value": result.measure},
        {"field": "estimator", "value": model_info.get("estimator", "unknown")},
        {"field": "test rows explained", "value": result.rows},
    ]
    if result.values is not None and result.method == "permutation":
        about.append({"field": "rows with per-row attributions", "value": int(result.values.shape[0])})
    figures = [plots.global_bar_plot(result.global_values, result.measure)]
    if result.values is not None and result.values.shape[2] == 1:
        figures.append(plots.summary_plot(result.values[:, :, 0], result.sample, result.output))
    rows = [{"column": c, "global": v, "mean signed": (result.signed or {}).get(c, ""),
             "std": (result.importance_std or {}).get(c, ""), "direction": result.directions.get(c, "unknown")}
            for c, v in result.global_values.items()]
    keep = ["column", "global"] + (["mean signed"] if result.signed else []) + (["std"] if result.importance_std else []) + ["direction"]
    sections = [("Method", report.table(about)), ("Plots", '<div class="grid">' + "".join(figures) + "</div>"),
                ("Global attributions", report.table(rows, keep))]
    if result.per_class:
        per_class = [{"column": c, **{k: v.get(c, 0.0) for k, v in result.per_class.items()}} for c in result.global_values]
        sections.append(("Per class (mean |attribution|)", report.table(per_class)))
    title = f"Explanations: {model_info.get('family', 'model')} ({result.task})"
    return report.page(title, sections, subtitle=f"{result.rows} test rows, method {result.method}")


# -- helpers ------------------------------------------------------------------------------------------

def _steps(pipeline):
    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 2:
        raise DataError(f"trained_model: {type(pipeline).__name__} is not a [features, model] Pipeline; it must be the one train_model writes")
    return steps[0][1], steps[1][1]


def _input_columns(pipeline, model_info: dict) -> list[str]:
    columns = model_info.get("input_columns") or [str(c) for c in getattr(pipeline, "feature_names_in_", [])]
    if not columns:
        raise DataError("trained_model: its metadata names no input_columns; re-run train_model")
    return list(columns)


def _column_means(X: np.ndarray) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column's mean is NaN, and stays so
        return np.nanmean(np.where(np.isfinite(X), X, np.nan), axis=0)


def _features(transformer, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(transformer.transform(frame), dtype=float)


def _classes(pipeline, model_info: dict) -> list[str]:
    from keel.components._common.evaluation.scoring import class_names

    if model_info.get("classes"):
        return class_names(list(model_info["classes"]))
    return [str(c) for c in pipeline.classes_]


def _ranked(values: dict[str, float]) -> dict[str, float]:
    return dict(sorted(values.items(), key=lambda kv: -kv[1]))


def _shap_globals(values: np.ndarray, columns: list[str], classes: list | None):
    """(mean |value| per column, mean signed or None, per class or None, None) from per-row values."""
    magnitude = np.abs(values).mean(axis=0)  # (columns, outputs)
    overall = _ranked({c: float(magnitude[j].mean()) for j, c in enumerate(columns)})
    if values.shape[2] == 1:
        signed = values[:, :, 0].mean(axis=0)
        return overall, {c: float(signed[j]) for j, c in enumerate(columns)}, None, None
    names = classes if classes is not None and len(classes) == values.shape[2] else [str(k) for k in range(values.shape[2])]
    per_class = {str(name): _ranked({c: float(magnitude[j, k]) for j, c in enumerate(columns)}) for k, name in enumerate(names)}
    return overall, None, per_class, None


def _permutation_importance(pipeline, sample: pd.DataFrame, columns: list[str], task: str, section: ExplainSection):
    """(importance per raw column, its std, what it measures): shuffle one raw column of the test rows at a time."""
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import log_loss, mean_squared_error

    if LABEL not in sample.columns:
        raise DataError(f"test: no {LABEL!r} column; permutation importance scores against the labels, so the test "
                        "set must come from split_data")
    y = sample[LABEL]
    if y.isna().any():
        raise DataError(f"test: {LABEL!r} is missing in {int(y.isna().sum())} row(s); clean_data must drop or quarantine them")
    if task == "regression":
        def score(model, X, y_true):
            return -float(np.sqrt(mean_squared_error(y_true, model.predict(X))))
        measure = "permutation importance (increase in RMSE when the column is shuffled)"
        y = y.to_numpy(dtype=float)
    else:
        labels = np.asarray(pipeline.classes_)

        def score(model, X, y_true):
            return -float(log_loss(y_true, model.predict_proba(X), labels=labels))
        measure = "permutation importance (increase in log loss when the column is shuffled)"
        y = y.to_numpy().astype(int)
    result = permutation_importance(pipeline, sample[columns], y, scoring=score, n_repeats=section.permutation_repeats,
                                    random_state=section.seed)
    means = _ranked({c: float(result.importances_mean[j]) for j, c in enumerate(columns)})
    return means, {c: float(result.importances_std[j]) for j, c in enumerate(columns)}, measure


def _directions(values: np.ndarray, columns: list[str], rows: pd.DataFrame) -> dict[str, str]:
    """Which way a column pushes the output: the sign of corr(column value, its attribution)."""
    if values.shape[2] != 1:
        return {c: "per class" for c in columns}
    out = {}
    for j, column in enumerate(columns):
        raw = rows[column]
        if pd.api.types.is_bool_dtype(raw) or not pd.api.types.is_numeric_dtype(raw):
            out[column] = "by category"
            continue
        x, a = raw.to_numpy(dtype=float), values[:, j, 0]
        known = np.isfinite(x)
        if known.sum() < 3 or np.std(x[known]) == 0 or np.std(a[known]) == 0:
            out[column] = "mixed" if np.std(a) > 0 else "none"
            continue
        corr = float(np.corrcoef(x[known], a[known])[0, 1])
        out[column] = "raises" if corr >= DIRECTION_CORRELATION else "lowers" if corr <= -DIRECTION_CORRELATION else "mixed"
    return out
