"""Fairness logic: group metrics of the trained model on the test split, the fairness gate, and mitigation.

The model is the whole Pipeline, scored exactly as evaluate_model scores it
(same columns, same decision threshold), so the groups are compared on the
decisions that would be served. The sensitive columns ride along in the
splits even when the model never sees them (fairness.use_in_training false):
a model can discriminate through proxies of an attribute it was not given.

Kept free of KFP so it runs in tests and in the component alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from keel.components._common import storage, tables
from keel.components._common.config import EvaluationSection, FairnessSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import LABEL
from keel.components.fairness import intervals
from keel.components._common.governance.fairness_views import FOUR_FIFTHS, render_report

MISSING_GROUP = "(missing)"
NOT_APPLIED = ("Reported only, never applied to the registered model: group-specific thresholds need the protected "
               "attribute at decision time, which fair-lending rules forbid. A person decides what to do with it.")


@dataclass
class FairnessResult:
    """What the assessment found; `to_dict()` is its JSON form (metrics metadata, model card, report)."""

    task: str
    sensitive: list[str]
    attributes: dict[str, dict]  # column -> {"groups", "overall", "disparities", "excluded_groups"}
    passed: bool
    failures: list[str]
    limits: dict[str, dict[str, float]]  # {"min": {...}, "max": {...}}
    four_fifths: dict[str, bool | None]
    mitigation: dict | None
    rows: int
    settings: dict = field(default_factory=dict)

    @property
    def gate(self) -> dict:
        return {"passed": self.passed, "failures": list(self.failures), "min": dict(self.limits["min"]),
                "max": dict(self.limits["max"])}

    def to_dict(self) -> dict:
        """JSON-able: numpy scalars become Python numbers and NaN/inf become None."""
        return _jsonable({"task": self.task, "sensitive": self.sensitive, "rows": self.rows, "settings": self.settings,
                          "attributes": self.attributes, "gate": self.gate, "four_fifths": self.four_fifths,
                          "mitigation": self.mitigation})

    def scalars(self) -> dict[str, float]:
        """One finite number per (column, disparity metric), named `column.metric`, for KFP's Metrics."""
        values = {}
        for column, attribute in self.attributes.items():
            for metric, disparity in attribute["disparities"].items():
                value = disparity.get("value")
                if value is not None and math.isfinite(value):
                    values[f"{column}.{metric}"] = float(value)
        return values


def assess(pipeline, test: pd.DataFrame, validation: pd.DataFrame, target: TargetSection, evaluation: EvaluationSection,
           section: FairnessSection, model_info: dict | None = None) -> FairnessResult:
    """Group fairness of `pipeline` on `test`, checked against fairness.min / fairness.max.

    Args:
        pipeline: the trained sklearn Pipeline (predicts from raw feature columns).
        test: raw feature columns, the sensitive columns and `__label__` (integer class indexes).
        validation: the same columns; ThresholdOptimizer is fitted on it when mitigation is asked for.
        target: the target config section (task).
        evaluation: the evaluation config section (its decision_threshold turns probabilities into decisions).
        section: the fairness config section.
        model_info: the trained model's metadata (task, classes, input_columns).

    Returns:
        The `FairnessResult`; its gate passes when no sensitive column is configured.

    Raises:
        ConfigError: a gate metric or mitigation is set for a non-binary target, or target.task differs from the model's.
        DataError: a sensitive column is missing from the test split, or the test split cannot be scored.
    """
    model_info = model_info or {}
    task = target.task
    check_config(section, task)
    settings = {"decision_threshold": evaluation.decision_threshold if task == "binary" else None,
                "min_group_size": section.min_group_size, "confidence": section.confidence,
                "bootstrap": section.bootstrap, "seed": section.seed}
    limits = {"min": dict(section.min), "max": dict(section.max)}
    if not section.sensitive:
        return FairnessResult(task=task, sensitive=[], attributes={}, passed=True, failures=[], limits=limits,
                              four_fifths={}, mitigation=None, rows=len(test), settings=settings)
    check_columns(test, section.sensitive, "test")
    y_true, y_pred = score(pipeline, test, target, evaluation, model_info)

    attributes = {column: assess_attribute(task, y_true, y_pred, group_labels(test[column]), section)
                  for column in section.sensitive}
    passed, failures = gate(attributes, section)
    four_fifths = {column: _four_fifths(attribute) for column, attribute in attributes.items()}
    mitigation = None
    if section.mitigation.method == "threshold_optimizer":
        mitigation = mitigate(pipeline, test, validation, y_true, y_pred, attributes[section.sensitive[0]], section, model_info)
    return FairnessResult(task=task, sensitive=list(section.sensitive), attributes=attributes, passed=passed,
                          failures=failures, limits=limits, four_fifths=four_fifths, mitigation=mitigation,
                          rows=len(test), settings=settings)


def assess_files(model_path: str, test_path: str, validation_path: str, target: TargetSection, evaluation: EvaluationSection,
                 section: FairnessSection, model_info: dict, report_path: str) -> FairnessResult:
    """Loads the model and splits, assesses, and writes the HTML report to `report_path`."""
    from keel.components._common.evaluation.scoring import load_model

    pipeline = load_model(model_path)
    result = assess(pipeline, tables.read_parquet(test_path), tables.read_parquet(validation_path), target, evaluation,
                    section, model_info)
    html = render_report(result.to_dict(), model_info)
    storage.write_bytes(report_path, html.encode(), content_type="text/html")
    return result


def check_config(section: FairnessSection, task: str) -> None:
    """The gate metrics and ThresholdOptimizer are defined for binary classifiers only; say so before any scoring."""
    if task == "binary":
        return
    for kind in ("min", "max"):
        limits = getattr(section, kind)
        if limits:
            raise ConfigError(f"fairness.{kind}: {', '.join(limits)} gate binary classifiers only, but target.task is "
                              f"{task!r}; remove fairness.{kind} (the per-group table is still reported)")
    if section.mitigation.method != "none":
        raise ConfigError(f"fairness.mitigation.method: {section.mitigation.method} post-processes a binary classifier's "
                          f"scores, but target.task is {task!r}; set it to none")


def check_columns(frame: pd.DataFrame, columns: list[str], split: str) -> None:
    """Every sensitive column must be in the split (they are kept out of the model, not out of the data)."""
    for column in columns:
        if column not in frame.columns:
            present = ", ".join(str(c) for c in frame.columns if c != LABEL)
            raise DataError(f"{split}: sensitive column {column!r} (fairness.sensitive) is not in the {split} split; "
                            f"columns present: {present}. Fix the name, or check data.drop_columns and data.pii")


def score(pipeline, test: pd.DataFrame, target: TargetSection, evaluation: EvaluationSection,
          model_info: dict) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) exactly as evaluate_model computes them: same columns, checks and decision threshold."""
    from keel.components._common.evaluation.scoring import evaluate

    # No min/max: this run only needs the predictions, and evaluate_model gates the metrics already.
    scored = evaluate(pipeline, test, target, EvaluationSection(decision_threshold=evaluation.decision_threshold), model_info)
    return scored.y_true, scored.y_pred


def group_labels(column: pd.Series) -> np.ndarray:
    """Group names as strings; a missing value is its own group, since those rows are decided too."""
    missing = column.isna().to_numpy()
    return np.array([MISSING_GROUP if gone else _label(v) for v, gone in zip(column.astype(object), missing)], dtype=object)


def assess_attribute(task: str, y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, section: FairnessSection) -> dict:
    """Per-group metrics with intervals, and the disparities between the groups with at least min_group_size rows."""
    names, sizes = np.unique(groups, return_counts=True)
    small = [str(name) for name, n in zip(names, sizes) if n < section.min_group_size]
    kept = [str(name) for name, n in zip(names, sizes) if n >= section.min_group_size]
    if task == "binary":
        rows, overall = binary_groups(y_true, y_pred, groups, section.confidence)
    elif task == "multiclass":
        rows, overall = accuracy_groups(y_true, y_pred, groups, section.confidence)
    else:
        rows, overall = mae_groups(y_true, y_pred, groups, section)
    for row in rows:
        row["included"] = row["group"] in kept
    if len(kept) < 2:
        reason = _too_few_groups(kept, small, section.min_group_size)
        disparities = {metric: {"skipped": reason} for metric in disparity_metrics(task)}
    else:
        mask = np.isin(groups, kept)
        disparities = _disparities(task, y_true[mask], y_pred[mask], groups[mask], kept, section)
    return {"groups": rows, "overall": overall, "disparities": disparities, "excluded_groups": small,
            "gate_groups": kept}


def disparity_metrics(task: str) -> tuple[str, ...]:
    """The disparity metrics reported for a task (the binary ones are the gate's)."""
    return {"binary": intervals.BINARY_DISPARITIES, "multiclass": ("accuracy_difference",),
            "regression": ("mae_difference",)}[task]


def binary_groups(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, confidence: float) -> tuple[list[dict], dict]:
    """Per group (fairlearn's MetricFrame): n and the four rates, each with its Wilson interval and denominator."""
    from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import precision_score

    frame = MetricFrame(
        metrics={"n": count, "selection_rate": partial(selection_rate, pos_label=1),
                 "true_positive_rate": partial(true_positive_rate, pos_label=1),
                 "false_positive_rate": partial(false_positive_rate, pos_label=1),
                 "precision": partial(precision_score, pos_label=1, zero_division=0.0)},
        y_true=y_true, y_pred=y_pred, sensitive_features=pd.Series(groups, name="group"),
    )
    names = [str(name) for name in frame.by_group.index]
    cells = intervals.binary_cells(y_true, y_pred, groups, names)
    rows = [_binary_row(name, frame.by_group.loc[name], cells[i], confidence) for i, name in enumerate(names)]
    overall = _binary_row("(all)", frame.overall, cells.sum(axis=0), confidence)
    return rows, overall


def accuracy_groups(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, confidence: float) -> tuple[list[dict], dict]:
    """Per group: n and accuracy with its Wilson interval (multiclass)."""
    from fairlearn.metrics import MetricFrame, count
    from sklearn.metrics import accuracy_score

    frame = MetricFrame(metrics={"n": count, "accuracy": accuracy_score}, y_true=y_true, y_pred=y_pred,
                        sensitive_features=pd.Series(groups, name="group"))
    correct = y_true == y_pred

    def row(name, values, hits):
        n = int(values["n"])
        low, high = intervals.wilson(int(hits.sum()), n, confidence)
        return {"group": name, "n": n, "accuracy": _rate(values["accuracy"], low, high, n)}

    rows = [row(str(name), frame.by_group.loc[name], correct[groups == name]) for name in frame.by_group.index]
    return rows, row("(all)", frame.overall, correct)


def mae_groups(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, section: FairnessSection) -> tuple[list[dict], dict]:
    """Per group: n and mean absolute error with a percentile bootstrap interval (regression)."""
    from fairlearn.metrics import MetricFrame, count
    from sklearn.metrics import mean_absolute_error

    frame = MetricFrame(metrics={"n": count, "mae": mean_absolute_error}, y_true=y_true, y_pred=y_pred,
                        sensitive_features=pd.Series(groups, name="group"))
    errors = np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))
    rng = np.random.default_rng(section.seed)

    def row(name, values, errs):
        low, high = intervals.percentile_interval(intervals.bootstrap_means(errs, section.bootstrap, rng), section.confidence)
        return {"group": name, "n": int(values["n"]), "mae": {"value": float(values["mae"]), "low": low, "high": high}}

    rows = [row(str(name), frame.by_group.loc[name], errors[groups == name]) for name in frame.by_group.index]
    return rows, row("(all)", frame.overall, errors)


def gate(attributes: dict[str, dict], section: FairnessSection) -> tuple[bool, list[str]]:
    """fairness.min (ratios, >=) and fairness.max (differences, <=) per sensitive column; one line per failure.

    A limit whose metric could not be computed fails: the gate cannot confirm what it could not measure.
    """
    failures = []
    for column, attribute in attributes.items():
        for kind, limits in (("min", section.min), ("max", section.max)):
            for metric, limit in limits.items():
                disparity = attribute["disparities"].get(metric, {"skipped": "not computed for this task"})
                value = disparity.get("value")
                if value is None or not math.isfinite(value):
                    failures.append(f"{column}: {metric} not computed ({disparity.get('skipped', 'undefined')}), "
                                    f"so {kind} {limit:g} cannot be confirmed")
                elif kind == "min" and value < limit:
                    rule = " (four-fifths rule)" if metric == "demographic_parity_ratio" and limit == FOUR_FIFTHS else ""
                    failures.append(f"{column}: {metric} {value:.4g} < {limit:g}{rule}")
                elif kind == "max" and value > limit:
                    failures.append(f"{column}: {metric} {value:.4g} > {limit:g}")
    return not failures, failures


def mitigate(pipeline, test: pd.DataFrame, validation: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray,
             before: dict, section: FairnessSection, model_info: dict) -> dict:
    """What fairlearn's ThresholdOptimizer would change, fitted on the validation split, measured on the test split.

    Returns a dict with `status` "computed" (and before/after accuracy, groups and
    disparities) or "not computed" (and the reason). Never applied (NOT_APPLIED).
    """
    from fairlearn.postprocessing import ThresholdOptimizer
    from sklearn.metrics import accuracy_score

    from keel.components._common.evaluation.scoring import split

    column = section.sensitive[0]
    result = {"method": section.mitigation.method, "constraint": section.mitigation.constraint, "attribute": column,
              "applied": False, "note": NOT_APPLIED,
              "attribute_note": f"for the first sensitive column, {column!r}" + (
                  f"; {', '.join(map(repr, section.sensitive[1:]))} not mitigated" if len(section.sensitive) > 1 else ""),
              "fitted_on": "validation", "validation_rows": len(validation), "status": "not computed"}
    reason = _mitigation_blocker(test, validation, column)
    if reason is None and not hasattr(pipeline, "predict_proba"):
        reason = "the model has no predict_proba, and ThresholdOptimizer moves thresholds on its scores"
    if reason:
        return {**result, "reason": reason}
    X_val, y_val = split(validation, pipeline, model_info, "binary")
    X_test, _ = split(test, pipeline, model_info, "binary")
    val_groups, test_groups = group_labels(validation[column]), group_labels(test[column])
    optimizer = ThresholdOptimizer(estimator=pipeline, constraints=section.mitigation.constraint, prefit=True,
                                   predict_method="predict_proba")
    optimizer.fit(X_val, y_val, sensitive_features=val_groups)
    # ThresholdOptimizer randomises between two thresholds per group; a fixed state makes the report reproducible.
    y_fair = np.asarray(optimizer.predict(X_test, sensitive_features=test_groups, random_state=section.seed)).astype(int)
    after = assess_attribute("binary", y_true, y_fair, test_groups, section)
    return {**result, "status": "computed",
            "before": {"accuracy": float(accuracy_score(y_true, y_pred)), **_summary(before)},
            "after": {"accuracy": float(accuracy_score(y_true, y_fair)), **_summary(after)}}


def _mitigation_blocker(test: pd.DataFrame, validation: pd.DataFrame, column: str) -> str | None:
    """Why ThresholdOptimizer cannot be fitted on this validation split, or None."""
    if len(validation) == 0:
        return "the validation split has no rows; raise split.validation_size"
    if column not in validation.columns:
        return f"the validation split has no column {column!r}; re-run split_data with the sensitive column kept"
    if LABEL not in validation.columns:
        return f"the validation split has no {LABEL!r} column; pass split_data's validation output"
    val_groups, test_groups = group_labels(validation[column]), group_labels(test[column])
    unseen = sorted(set(test_groups) - set(val_groups))
    if unseen:
        return (f"group(s) {unseen[:10]} of {column!r} are in the test split but not in the validation split, so no "
                "threshold can be fitted for them; raise split.validation_size or gather more data")
    labels = validation[LABEL].to_numpy()
    one_class = sorted(str(g) for g in np.unique(val_groups) if len(np.unique(labels[val_groups == g])) < 2)
    if one_class:
        return (f"group(s) {one_class[:10]} of {column!r} have only one label class in the validation split, so "
                "ThresholdOptimizer cannot trade errors off within them; raise split.validation_size or gather more data")
    return None


def _summary(attribute: dict) -> dict:
    return {key: attribute[key] for key in ("groups", "disparities", "excluded_groups")}


def _disparities(task: str, y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, names: list[str],
                 section: FairnessSection) -> dict:
    """Each disparity metric over the gated groups: fairlearn's value and a stratified percentile bootstrap interval."""
    rng = np.random.default_rng(section.seed)
    if task == "binary":
        return _binary_disparities(y_true, y_pred, groups, names, section, rng)
    if task == "multiclass":
        from fairlearn.metrics import MetricFrame
        from sklearn.metrics import accuracy_score

        value = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=groups).difference()
        correct = np.array([(y_true[groups == g] == y_pred[groups == g]).sum() for g in names])
        sizes = np.array([(groups == g).sum() for g in names])
        samples = intervals.spread(intervals.bootstrap_proportions(correct, sizes, section.bootstrap, rng))[0]
        return {"accuracy_difference": _estimate(value, samples, section.confidence)}
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import mean_absolute_error

    value = MetricFrame(metrics=mean_absolute_error, y_true=y_true, y_pred=y_pred, sensitive_features=groups).difference()
    errors = np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))
    means = np.stack([intervals.bootstrap_means(errors[groups == g], section.bootstrap, rng) for g in names], axis=1)
    return {"mae_difference": _estimate(value, intervals.spread(means)[0], section.confidence)}


def _binary_disparities(y_true, y_pred, groups, names, section, rng) -> dict:
    from fairlearn import metrics as fm

    cells = intervals.binary_cells(y_true, y_pred, groups, names)
    samples = intervals.bootstrap_binary(cells, section.bootstrap, rng)
    # A group with no positive (or no negative) labels has no true (false) positive rate; fairlearn
    # would count it as 0 and report a spurious gap, so equalized odds is not computed instead.
    no_pos = [n for n, c in zip(names, cells) if c[2] + c[3] == 0]
    no_neg = [n for n, c in zip(names, cells) if c[0] + c[1] == 0]
    eo_reason = None
    if no_pos or no_neg:
        which = f"{no_pos} have no positive labels" if no_pos else f"{no_neg} have no negative labels"
        eo_reason = f"group(s) {which} in the test split, so their error rates are undefined; gather more data"
    functions = {"demographic_parity_difference": fm.demographic_parity_difference,
                 "demographic_parity_ratio": fm.demographic_parity_ratio,
                 "equalized_odds_difference": fm.equalized_odds_difference,
                 "equalized_odds_ratio": fm.equalized_odds_ratio}
    result = {}
    for metric, function in functions.items():
        if eo_reason and metric.startswith("equalized_odds"):
            result[metric] = {"skipped": eo_reason}
            continue
        value = function(y_true, y_pred, sensitive_features=groups)
        if not math.isfinite(value):
            result[metric] = {"skipped": "undefined: every gated group's rate is 0, so the ratio has no denominator"}
            continue
        result[metric] = _estimate(value, samples[metric], section.confidence)
    return result


def _estimate(value: float, samples: np.ndarray, confidence: float) -> dict:
    low, high = intervals.percentile_interval(samples, confidence)
    return {"value": float(value), "low": low, "high": high}


def _binary_row(name: str, values: pd.Series, cells: np.ndarray, confidence: float) -> dict:
    tn, fp, fn, tp = (int(c) for c in cells)
    counts = {"selection_rate": (fp + tp, tn + fp + fn + tp), "true_positive_rate": (tp, tp + fn),
              "false_positive_rate": (fp, fp + tn), "precision": (tp, tp + fp)}
    row = {"group": name, "n": int(values["n"])}
    for metric, (hits, n) in counts.items():
        low, high = intervals.wilson(hits, n, confidence)
        row[metric] = _rate(values[metric], low, high, n)
    return row


def _rate(value, low, high, n: int) -> dict:
    """A rate with its interval and denominator; None where the denominator is 0 (the rate does not exist)."""
    if n == 0:
        return {"value": None, "low": None, "high": None, "n": 0}
    return {"value": float(value), "low": low, "high": high, "n": int(n)}


def _too_few_groups(kept: list[str], small: list[str], min_size: int) -> str:
    having = f"only {len(kept)} group{'' if len(kept) == 1 else 's'}" + (f" ({', '.join(map(repr, kept))})" if kept else "")
    return (f"{having} of {len(kept) + len(small)} ha{'s' if len(kept) == 1 else 've'} at least {min_size} test rows, "
            "and a disparity needs 2; lower fairness.min_group_size or gather more data for the small groups")


def _four_fifths(attribute: dict) -> bool | None:
    ratio = attribute["disparities"].get("demographic_parity_ratio", {}).get("value")
    return None if ratio is None else bool(ratio >= FOUR_FIFTHS)


def _label(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))  # 1.0 -> "1": a float column because of missing values should name groups as written
    return str(value)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
