"""Sensible settings for `keel run --data FILE --target COLUMN`, inferred from the table."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from keel.components._common.errors import DataError

_ID_NAME = re.compile(r"(^|_)(id|uuid|guid|rownames?|index)$", re.IGNORECASE)


def infer_task(series: pd.Series) -> str:
    """binary for two values, multiclass for few discrete values, regression otherwise."""
    values = series.dropna()
    n = values.nunique()
    if n <= 2:
        return "binary"
    if pd.api.types.is_float_dtype(values) and not (values == values.round()).all():
        return "regression"
    if pd.api.types.is_numeric_dtype(values) and n > 20:
        return "regression"
    return "multiclass"


def infer_drop_columns(frame: pd.DataFrame, target: str) -> list[str]:
    """Identifier-like and free-text columns: they carry no signal a model should learn."""
    drop = []
    rows = len(frame)
    for column in frame.columns:
        if column == target:
            continue
        series = frame[column]
        unique_share = series.nunique(dropna=True) / max(rows, 1)
        if _ID_NAME.search(column) and unique_share > 0.95:
            drop.append(column)
        elif (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)) and unique_share > 0.5 and rows >= 50:
            drop.append(column)
    return drop


def quick_config(frame: pd.DataFrame, source: str, target: str, task: str | None) -> dict:
    """A full config dict for a table seen for the first time."""
    if target not in frame.columns:
        raise DataError(f"--target: {target!r} is not a column of {source}; columns are: {', '.join(map(str, frame.columns[:20]))}")
    task = task or infer_task(frame[target])
    all_null = [c for c in frame.columns if frame[c].isna().all()]
    name = re.sub(r"[^a-z0-9._-]+", "-", Path(source.rstrip("/")).stem.lower()).strip("-._") or "model"
    return {
        "name": name,
        "data": {"source": source, "drop_columns": sorted(set(infer_drop_columns(frame, target)) - set(all_null))},
        "target": {"column": target, "task": task},
        "validation": {"on_violation": "quarantine"},
        "split": {"method": "random" if task == "regression" else "stratified"},
        "registry": {"model_name": name[:63]},
    }
