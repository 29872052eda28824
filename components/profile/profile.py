"""Profile logic: what is in the table, and how each column relates to the target.

Kept free of KFP so it runs in tests and in the component alike. The summary
is a JSON contract (the model-card stage reads it); the HTML report is for
people (`keel.components.profile.render.render_html`).

Association with the target (`target_correlation`, with the measure named in
`correlation_method`):

| column kind            | binary target              | multiclass target   | regression target   |
|------------------------|----------------------------|---------------------|---------------------|
| numeric                | Pearson r with the 0/1     | correlation ratio   | Pearson r           |
|                        | label (= point-biserial)   | (eta, 0..1)         |                     |
| categorical, boolean   | Cramér's V (0..1)          | Cramér's V          | correlation ratio   |
| text, datetime, target | null                       | null                | null                |

Pearson r is signed (positive: higher values go with the positive class or a
larger target); the others are unsigned strengths in [0, 1]. Cramér's V is
the uncorrected one (as scipy.stats.contingency.association computes it), so
it reads a little high for columns with many categories; text columns (too
many distinct values to mean anything) get none.
Each measure uses the rows where both the column and the target are present.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from keel.components._common import dtypes
from keel.components._common.config import TargetSection
from keel.components._common.target import check_target, classes_for
from keel.components.profile.values import numeric_values

KINDS = ("numeric", "categorical", "boolean", "datetime", "text")
TOP_VALUES = 10
# A string column is "text" (free text or identifiers) once it has more than
# this many distinct values AND they are more than TEXT_SHARE of its rows.
TEXT_MIN_DISTINCT = 50
TEXT_SHARE = 0.05
NULL_WARN = 0.5
LEAK_WARN = 0.9
IMBALANCE_WARN = 0.05
ID_MIN_ROWS = 20


def profile(frame: pd.DataFrame, target: TargetSection) -> dict:
    """Summarises `frame`: shape, the target's distribution, one entry per column, warnings.

    Args:
        frame: the ingested table.
        target: the `target` config section; the column must exist and not be all null.

    Returns:
        The JSON-ready summary: `rows`, `columns`, `target`, `columns_detail`, `warnings`.

    Raises:
        DataError: the target column is missing, all null, or single-class.
    """
    check_target(frame, target, where="the profiled data")
    y, y_kind = encoded_target(frame[target.column], target)
    details, warnings = [], []
    for name in frame.columns:
        detail = _column_detail(frame[name], name)
        if name != target.column:
            value, method = association(frame[name], detail["kind"], y, y_kind)
            detail["target_correlation"], detail["correlation_method"] = value, method
        details.append(detail)
        warnings.extend(_column_warnings(detail, len(frame), is_target=name == target.column))
    target_summary = _target_summary(frame[target.column], target)
    warnings = _target_warnings(target_summary) + warnings
    return {
        "rows": int(len(frame)),
        "columns": int(frame.shape[1]),
        "target": target_summary,
        "columns_detail": details,
        "warnings": warnings,
    }


# --- column kinds and statistics -------------------------------------------------------------


def column_kind(series: pd.Series) -> str:
    """numeric, categorical, boolean, datetime or text, from the dtype and, for objects, the values."""
    kind = dtypes.family(series)
    if kind == "values":
        kind = dtypes.value_type(series)
    if kind in ("integer", "float"):
        return "numeric"
    if kind in ("boolean", "datetime"):
        return kind
    distinct, present = _hashable(series).nunique(), int(series.notna().sum())
    if distinct > TEXT_MIN_DISTINCT and distinct > TEXT_SHARE * present:
        return "text"
    return "categorical"


def _hashable(series: pd.Series) -> pd.Series:
    """The series itself, or its values as text when they cannot be hashed (lists, dicts)."""
    try:
        series.nunique()
        return series
    except TypeError:
        return series.map(lambda v: v if _isnull(v) else str(v))


def _isnull(value) -> bool:
    return value is None or (not isinstance(value, (list, tuple, dict, np.ndarray)) and bool(pd.isna(value)))


def _number(value) -> float | None:
    """A finite float, else None (JSON has no NaN or Infinity)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _column_detail(series: pd.Series, name: str) -> dict:
    kind = column_kind(series)
    values = _hashable(series)
    rows = len(series)
    detail = {
        "name": str(name),
        "dtype": str(series.dtype),
        "kind": kind,
        "null_rate": float(series.isna().mean()) if rows else 0.0,
        "cardinality": int(values.nunique(dropna=True)),
        "min": None, "max": None, "mean": None, "std": None,
        "top_values": None,
        "target_correlation": None,
        "correlation_method": None,
    }
    if kind == "numeric":
        numbers = numeric_values(series)
        finite = numbers[np.isfinite(numbers)]
        if len(finite):
            detail.update(min=_number(finite.min()), max=_number(finite.max()), mean=_number(finite.mean()),
                          std=_number(finite.std()) if len(finite) > 1 else None)
    elif kind in ("categorical", "boolean", "text"):
        counts = values.value_counts(dropna=True).head(TOP_VALUES)
        detail["top_values"] = {str(k): int(v) for k, v in counts.items()}
    return detail


def _column_warnings(detail: dict, rows: int, is_target: bool) -> list[str]:
    name, kind, distinct = detail["name"], detail["kind"], detail["cardinality"]
    present = round((1 - detail["null_rate"]) * rows)
    warnings = []
    if present == 0:
        return [f"{name}: entirely null; drop it with data.drop_columns"]
    if distinct == 1:
        warnings.append(f"{name}: constant (a single distinct value); it carries no information, drop it")
    if detail["null_rate"] > NULL_WARN:
        warnings.append(f"{name}: {detail['null_rate']:.0%} null (over {NULL_WARN:.0%}); check the source or drop it")
    if is_target:
        return warnings
    integral = kind == "numeric" and "int" in detail["dtype"].lower()
    if distinct == present and present >= ID_MIN_ROWS and (integral or kind in ("categorical", "text")):
        warnings.append(f"{name}: every value is distinct (id-like); drop it with data.drop_columns")
    elif kind in ("categorical", "text") and distinct > TEXT_MIN_DISTINCT:
        warnings.append(f"{name}: high cardinality ({distinct} distinct values in {present} rows); drop it or encode it deliberately")
    value = detail.get("target_correlation")
    if value is not None and abs(value) >= LEAK_WARN:
        warnings.append(
            f"{name}: association with the target is {value:.2f} ({detail['correlation_method']}); "
            "check it is known at prediction time and does not leak the target"
        )
    return warnings


# --- the target ------------------------------------------------------------------------------


def encoded_target(series: pd.Series, target: TargetSection) -> tuple[pd.Series, str]:
    """The target as association measures need it: 0/1, class codes, or floats (NaN where null).

    Returns:
        (values aligned with `series`, "binary" | "multiclass" | "regression").
    """
    present = series.notna()
    if target.task == "regression":
        return numeric_values(series), "regression"
    if target.positive_values is not None:
        return series.isin(target.positive_values).astype("float64").where(present), "binary"
    if target.task == "binary":
        negative, positive = classes_for(series, target)
        return series.map({negative: 0.0, positive: 1.0}).astype("float64"), "binary"
    return series.where(present).astype("object"), "multiclass"


def _target_summary(series: pd.Series, target: TargetSection) -> dict:
    values = series.dropna()
    summary = {
        "column": target.column,
        "task": target.task,
        "nulls": int(series.isna().sum()),
        "class_balance": None,
        "binary_balance": None,
        "stats": None,
    }
    if target.task == "regression":
        numbers = numeric_values(values)
        described = numbers.describe()
        summary["stats"] = {
            "count": int(described["count"]),
            **{key: _number(described[key]) for key in ("mean", "std", "min", "25%", "50%", "75%", "max")},
        }
        return summary
    summary["class_balance"] = {str(k): int(v) for k, v in values.value_counts().items()}
    if target.positive_values is not None:
        positive = int(values.isin(target.positive_values).sum())
        summary["binary_balance"] = {"negative": int(len(values)) - positive, "positive": positive}
    return summary


def _target_warnings(summary: dict) -> list[str]:
    column, warnings = summary["column"], []
    if summary["nulls"]:
        warnings.append(f"{column} (target): {summary['nulls']} null rows; they cannot be used for training")
    balance = summary["binary_balance"] or summary["class_balance"]
    if balance:
        total = sum(balance.values())
        smallest = min(balance, key=balance.get)
        share = balance[smallest] / total if total else 0.0
        if share < IMBALANCE_WARN:
            warnings.append(
                f"{column} (target): class {smallest!r} is only {share:.1%} of rows; "
                "consider stratified splits and metrics that respect imbalance"
            )
    return warnings


# --- association with the target --------------------------------------------------------------


def association(column: pd.Series, kind: str, y: pd.Series, y_kind: str) -> tuple[float | None, str | None]:
    """The column's association with the encoded target (see the module docstring for the measure).

    Returns:
        (value or None when undefined, the measure's name or None).
    """
    if kind in ("text", "datetime"):
        return None, None
    both = column.notna() & y.notna()
    if kind == "numeric":
        x = numeric_values(column)
        both &= np.isfinite(x)
        if y_kind == "multiclass":
            return _scored(correlation_ratio(y[both], x[both]), "correlation_ratio")
        return _scored(pearson(x[both], y[both]), "pearson")
    x = _hashable(column)[both]
    if y_kind == "regression":
        return _scored(correlation_ratio(x, y[both]), "correlation_ratio")
    return _scored(cramers_v(x, y[both]), "cramers_v")


def _scored(value: float | None, method: str) -> tuple[float | None, str | None]:
    value = None if value is None else _number(round(value, 6))
    return value, (method if value is not None else None)


# pearson and cramers_v are numpy rather than scipy.stats: importing scipy.stats
# takes over a second, paid by every pipeline run; the tests check both against scipy.


def pearson(x: pd.Series, y: pd.Series) -> float | None:
    """Pearson r; None when either side is constant or there are under 3 pairs."""
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return None
    return float(np.corrcoef(x.to_numpy(float), y.to_numpy(float))[0, 1])


def cramers_v(x: pd.Series, y: pd.Series) -> float | None:
    """Cramér's V of two categorical series, uncorrected: sqrt(chi2 / (n * (min(r, c) - 1)))."""
    x_codes, x_levels = pd.factorize(x.astype(str))
    y_codes, y_levels = pd.factorize(y.astype(str))
    rows, cols = len(x_levels), len(y_levels)
    if rows < 2 or cols < 2:
        return None
    observed = np.bincount(x_codes * cols + y_codes, minlength=rows * cols).reshape(rows, cols).astype(float)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    return math.sqrt(min(1.0, chi2 / (observed.sum() * (min(rows, cols) - 1))))


def correlation_ratio(groups: pd.Series, values: pd.Series) -> float | None:
    """Correlation ratio eta: sqrt(between-group / total sum of squares) of `values` by `groups`."""
    values = values.astype("float64")
    if len(values) < 3 or groups.nunique() < 2:
        return None
    total = float(((values - values.mean()) ** 2).sum())
    if total == 0:
        return None
    grouped = values.groupby(groups.astype(str).to_numpy())
    between = float((grouped.count() * (grouped.mean() - values.mean()) ** 2).sum())
    return math.sqrt(min(1.0, between / total))


def write_profile(frame: pd.DataFrame, target: TargetSection, report_path: str, summary_path: str) -> dict:
    """Profiles `frame` and writes the summary JSON and the HTML report (each atomically).

    Returns:
        The summary, as written.
    """
    from keel.components._common import storage
    from keel.components.profile.render import render_html

    summary = profile(frame, target)
    # allow_nan=False: a NaN that slipped through is a bug, and must not reach the JSON contract.
    storage.write_bytes(summary_path, json.dumps(summary, indent=2, allow_nan=False).encode(), "application/json")
    storage.write_bytes(report_path, render_html(summary, frame, target).encode(), "text/html")
    return summary
