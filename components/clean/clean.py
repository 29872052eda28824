"""Clean logic: missing values, outliers and exact duplicates, counting every row.

Every rule is judged on the input as it arrived, so a row hit by several rules
gets one quarantine entry that names all of them, and the quarantine frame
holds the row exactly as it was read. Only the rows that stay are changed
(clipped, filled).

Statistical imputation (median, mean, most frequent) deliberately does not
happen here: this stage runs before the split, so any statistic computed here
would be computed over the future test rows too and leak them into training.
`impute` therefore leaves the value missing, and the features stage fits its
imputer on the training split only. Constant fills (`fill`) carry no
statistics and are safe to apply here.

Outlier bounds are the exception this stage accepts: they are data-quality
limits computed on the whole input (quartiles or mean/std), recorded per
column in `actions` so they can be audited and re-applied. With the default
3 x IQR fence they only move extreme values, so the test rows' influence on
training is negligible; set `outliers.method: none` for strictly split-first
preprocessing.

Kept free of KFP so it runs in tests and in the component alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from keel.components._common import dtypes
from keel.components._common.config import CleanSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import check_target

REASON = "_quarantine_reason"
SOURCE_ROW = "_source_row"
DEFAULT_THRESHOLD = {"iqr": 3.0, "zscore": 4.0}


@dataclass
class CleanResult:
    """What `clean_frame` produced.

    Attributes:
        cleaned: the rows that stay, with clipped and filled values, index 0..n-1.
        quarantine: the removed rows as they arrived, plus `_quarantine_reason`
            and `_source_row` (the row's position in the input).
        stats: row and value counts (numbers only, ready for a Metrics artifact).
        actions: per column, what was done and with which bounds.
    """

    cleaned: pd.DataFrame
    quarantine: pd.DataFrame
    stats: dict[str, int]
    actions: dict[str, dict] = field(default_factory=dict)


def column_kind(series: pd.Series) -> str:
    """numeric, datetime or categorical (booleans count as categorical)."""
    kind = dtypes.family(series)
    if kind in ("integer", "float"):
        return "numeric"
    return "datetime" if kind == "datetime" else "categorical"


def clean_frame(frame: pd.DataFrame, target: TargetSection, config: CleanSection) -> CleanResult:
    """Applies the missing-value, outlier and duplicate rules of `config`.

    Args:
        frame: the input table (rows are numbered by position for `_source_row`).
        target: the target section; the target column is never changed, and
            rows whose target is null are always quarantined.
        config: the `clean` section.

    Returns:
        A CleanResult whose cleaned and quarantine frames together hold every input row.

    Raises:
        ConfigError: a configured column is unknown, is the target, or has the wrong type.
        DataError: the target column is missing, or no row survives.
    """
    frame = frame.reset_index(drop=True)
    check_target(frame, target, where="the clean input")
    _check_config(frame, target, config)

    n = len(frame)
    reasons: list[list[str]] = [[] for _ in range(n)]
    actions: dict[str, dict] = {}
    stats = {"rows_in": n}

    target_null = frame[target.column].isna().to_numpy()
    _flag(reasons, target_null, f"target {target.column} is null")
    stats["rows_target_null"] = int(target_null.sum())

    missing_policy = _missing_rules(frame, target, config, reasons, actions)
    bounds = _outlier_rules(frame, target, config, reasons, actions)
    duplicates = _duplicate_rule(frame, config, reasons)
    stats["duplicates"] = int(duplicates.sum())

    quarantined = np.fromiter((bool(r) for r in reasons), dtype=bool, count=n)
    kept = frame.loc[~quarantined].copy()
    value_counts = _apply_to_kept(kept, frame, target, config, missing_policy, bounds, actions)
    cleaned = kept.reset_index(drop=True)

    quarantine = frame.loc[quarantined].copy()
    quarantine[REASON] = pd.Series(["; ".join(r) for r in reasons if r], index=quarantine.index, dtype=object)
    quarantine[SOURCE_ROW] = np.flatnonzero(quarantined).astype("int64")
    quarantine = quarantine.reset_index(drop=True)

    stats.update(
        rows_out=len(cleaned),
        rows_quarantined=len(quarantine),
        rows_missing_dropped=_rows_with(reasons, "missing "),
        rows_outliers_quarantined=_rows_with(reasons, "outlier "),
        rows_duplicates_quarantined=_rows_with(reasons, "duplicate of row "),
        **value_counts,
    )
    if stats["rows_in"] != stats["rows_out"] + stats["rows_quarantined"]:
        raise RuntimeError(
            f"internal error: clean lost rows ({stats['rows_in']} in, {stats['rows_out']} out, "
            f"{stats['rows_quarantined']} quarantined); please report this"
        )
    if cleaned.empty:
        top = quarantine[REASON].str.split("; ").explode().value_counts()
        raise DataError(
            f"clean: all {n} rows were quarantined (most often: {top.index[0]!r}, {int(top.iloc[0])} rows); "
            "relax clean.missing / clean.outliers or fix the data"
        )
    return CleanResult(cleaned=cleaned, quarantine=quarantine, stats=stats, actions=actions)


def _check_config(frame: pd.DataFrame, target: TargetSection, config: CleanSection) -> None:
    reserved = [c for c in (REASON, SOURCE_ROW) if c in frame.columns]
    if reserved:
        raise DataError(f"column(s) {reserved} are reserved for the quarantine; rename or drop them (data.drop_columns)")
    columns = ", ".join(map(str, frame.columns[:30]))
    for name in config.missing.columns:
        if name not in frame.columns:
            raise ConfigError(f"clean.missing.columns: {name!r} is not a column of the data; columns are: {columns}")
        if name == target.column:
            raise ConfigError(
                f"clean.missing.columns: {name!r} is the target; rows with a null target are always quarantined, remove it"
            )
    for name in config.outliers.columns or []:
        if name not in frame.columns:
            raise ConfigError(f"clean.outliers.columns: {name!r} is not a column of the data; columns are: {columns}")
        if name == target.column:
            raise ConfigError(f"clean.outliers.columns: {name!r} is the target, which is never changed; remove it")
        if column_kind(frame[name]) != "numeric":
            raise ConfigError(
                f"clean.outliers.columns: {name!r} is not numeric (dtype {frame[name].dtype}); "
                "outlier rules apply to numbers only, remove it"
            )


def _flag(reasons: list[list[str]], mask: np.ndarray, text: str) -> None:
    for row in np.flatnonzero(mask):
        reasons[row].append(text)


def _rows_with(reasons: list[list[str]], prefix: str) -> int:
    return sum(any(r.startswith(prefix) for r in row) for row in reasons)


def _missing_rules(frame: pd.DataFrame, target: TargetSection, config: CleanSection, reasons, actions) -> dict[str, str]:
    """Flags `drop` rows; returns {column: policy} for every feature column with nulls."""
    rules = config.missing
    policy = {}
    for name in frame.columns:
        if name == target.column:
            continue
        nulls = frame[name].isna().to_numpy()
        if not nulls.any():
            continue
        kind = column_kind(frame[name])
        chosen = rules.columns.get(name) or (rules.numeric if kind == "numeric" else rules.categorical)
        if chosen == "fill" and kind == "datetime":
            raise ConfigError(
                f"clean.missing: column {name!r} is a datetime with {int(nulls.sum())} nulls and no constant fits it; "
                f"set clean.missing.columns: {{{name}: drop}} or impute"
            )
        policy[name] = chosen
        actions.setdefault(name, {})["missing"] = {"policy": chosen, "values": int(nulls.sum())}
        if chosen == "drop":
            _flag(reasons, nulls, f"missing {name}")
    return policy


def _outlier_rules(
    frame: pd.DataFrame, target: TargetSection, config: CleanSection, reasons, actions
) -> dict[str, tuple[float, float]]:
    """Computes bounds per treated column; flags rows when the action is quarantine."""
    rules = config.outliers
    if rules.method == "none":
        return {}
    threshold = rules.threshold or DEFAULT_THRESHOLD[rules.method]
    if rules.columns is not None:
        columns = list(rules.columns)
    else:
        columns = [c for c in frame.columns if c != target.column and column_kind(frame[c]) == "numeric"]
    bounds = {}
    for name in columns:
        values = frame[name].dropna().astype(float)
        skip = _skip_reason(values, rules.method)
        if skip:
            actions.setdefault(name, {})["outliers"] = {"skipped": skip}
            continue
        if rules.method == "iqr":
            q1, q3 = values.quantile([0.25, 0.75])
            lo, hi = q1 - threshold * (q3 - q1), q3 + threshold * (q3 - q1)
        else:
            mean, std = values.mean(), values.std(ddof=0)
            lo, hi = mean - threshold * std, mean + threshold * std
        if pd.api.types.is_integer_dtype(frame[name]):
            # Integer bounds flag exactly the same values and keep the column's dtype when clipping.
            lo, hi = float(np.ceil(lo)), float(np.floor(hi))
        lo, hi = float(lo), float(hi)
        bounds[name] = (lo, hi)
        outside = ((frame[name] < lo) | (frame[name] > hi)).fillna(False).to_numpy(dtype=bool)
        actions.setdefault(name, {})["outliers"] = {
            "method": rules.method, "threshold": threshold, "action": rules.action,
            "lower": lo, "upper": hi, "values_outside": int(outside.sum()),
        }
        if rules.action == "quarantine":
            span = f"[{_num(lo)}, {_num(hi)}]"
            for row in np.flatnonzero(outside):
                reasons[row].append(f"outlier {name}={_num(frame.at[row, name])} outside {span}")
    return bounds


def _skip_reason(values: pd.Series, method: str) -> str | None:
    # Fences on binary, constant or mostly-one-value columns would flag every
    # minority value (IQR 0 turns each non-zero count into an "outlier").
    if values.empty:
        return "all values missing"
    if values.nunique() <= 2:
        return "binary or constant"
    if method == "iqr" and values.quantile(0.75) == values.quantile(0.25):
        return "interquartile range is 0 (most values are equal)"
    if method == "zscore" and values.std(ddof=0) == 0:
        return "standard deviation is 0"
    return None


def _duplicate_rule(frame: pd.DataFrame, config: CleanSection, reasons) -> np.ndarray:
    """Marks exact duplicate rows (all columns, nulls equal); flags them unless `keep`."""
    duplicated = frame.duplicated(keep="first").to_numpy()
    if duplicated.any() and config.duplicates == "quarantine":
        group = frame.groupby(list(frame.columns), dropna=False, sort=False).ngroup().to_numpy()
        first = pd.Series(np.arange(len(frame))).groupby(group).transform("min").to_numpy()
        for row in np.flatnonzero(duplicated):
            reasons[row].append(f"duplicate of row {first[row]}")
    return duplicated


def _apply_to_kept(kept, frame, target, config, missing_policy, bounds, actions) -> dict[str, int]:
    """Clips and fills the kept rows in place; returns the value counts."""
    clipped_total = filled_total = left_total = 0
    for name, (lo, hi) in bounds.items():
        if config.outliers.action != "clip":
            continue
        column = kept[name]
        changed = int(((column < lo) | (column > hi)).sum())
        if changed:
            kept[name] = column.clip(lower=lo, upper=hi)
        actions[name]["outliers"]["clipped"] = changed
        clipped_total += changed
    for name, chosen in missing_policy.items():
        nulls = int(kept[name].isna().sum())
        if chosen == "fill" and nulls:
            value = config.missing.fill_numeric if column_kind(frame[name]) == "numeric" else config.missing.fill_categorical
            kept[name] = _fill(kept[name], value)
            actions[name]["missing"]["filled"] = nulls
            filled_total += nulls
        elif chosen == "impute":
            actions[name]["missing"]["left_for_imputation"] = nulls
            left_total += nulls
    return {"values_clipped": clipped_total, "values_filled": filled_total, "values_left_for_imputation": left_total}


def _fill(series: pd.Series, value):
    if isinstance(series.dtype, pd.CategoricalDtype) and value not in series.cat.categories:
        series = series.cat.add_categories([value])
    if pd.api.types.is_integer_dtype(series) and not float(value).is_integer():
        series = series.astype("Float64")
    return series.fillna(value)


def _num(value) -> str:
    return f"{float(value):.6g}"
