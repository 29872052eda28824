"""Turning the raw target column into model labels, one rule for every stage."""

from __future__ import annotations

import numpy as np
import pandas as pd

from keel.components._common.config import TargetSection
from keel.components._common.errors import DataError

LABEL = "__label__"  # encoded target column written by split_data


def check_target(frame: pd.DataFrame, target: TargetSection, where: str = "data") -> None:
    """Rejects a missing, all-null or single-class target."""
    if target.column not in frame.columns:
        close = [c for c in frame.columns if c.lower() == target.column.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else f"; columns are: {', '.join(map(str, frame.columns[:20]))}"
        raise DataError(f"target.column: {target.column!r} is not a column of {where}{hint}")
    values = frame[target.column].dropna()
    if values.empty:
        raise DataError(f"target.column: {target.column!r} is entirely null in {where}")
    if target.task == "regression":
        if not pd.api.types.is_numeric_dtype(values):
            raise DataError(f"target.column: {target.column!r} is not numeric; use task: binary or multiclass")
        return
    if target.positive_values is not None:
        positive = values.isin(target.positive_values)
        if positive.all() or not positive.any():
            which = "every" if positive.all() else "no"
            raise DataError(
                f"target.positive_values: {which} row of {target.column!r} is positive, so there is a single class; "
                f"values present: {sorted(map(str, values.unique()))[:10]}"
            )
        return
    n = values.nunique()
    if n < 2:
        raise DataError(f"target.column: {target.column!r} has a single class ({values.iloc[0]!r}); a classifier needs two or more")
    if target.task == "binary" and n > 2:
        raise DataError(
            f"target.column: {target.column!r} has {n} classes but task is binary; "
            "set target.task: multiclass or list target.positive_values"
        )


def classes_for(series: pd.Series, target: TargetSection) -> list:
    """The ordered raw classes; index = encoded label. Binary: [negative, positive]."""
    values = series.dropna()
    if target.positive_values is not None:
        return list(target.labels or ["negative", "positive"])
    uniques = sorted(values.unique().tolist(), key=lambda v: (str(type(v)), v))
    if target.task == "binary":
        # 0/1 and False/True already sort negative-first; for strings the
        # minority class is the one worth detecting, so it is the positive.
        if set(map(str, uniques)) in ({"0", "1"}, {"False", "True"}):
            return uniques
        counts = values.value_counts()
        positive = counts.idxmin()
        return [v for v in uniques if v != positive] + [positive]
    return uniques


def encode(series: pd.Series, target: TargetSection, classes: list) -> np.ndarray:
    """Raw target -> int labels (classification) or float (regression)."""
    if target.task == "regression":
        return series.astype(float).to_numpy()
    if target.positive_values is not None:
        return series.isin(target.positive_values).astype(int).to_numpy()
    index = {v: i for i, v in enumerate(classes)}
    unknown = set(series.dropna().unique()) - set(index)
    if unknown:
        raise DataError(f"target {target.column!r} has values not seen in training: {sorted(map(str, unknown))[:5]}")
    return series.map(index).astype(int).to_numpy()
