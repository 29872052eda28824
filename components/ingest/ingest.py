"""Ingest logic: read a source into a clean-typed table, refusing unusable data early.

Kept free of KFP so it runs in tests, in the CLI's pre-flight check, and in
the component alike.
"""

from __future__ import annotations

import pandas as pd

from keel.components._common import tables
from keel.components._common.config import DataSection, TargetSection
from keel.components._common.errors import DataError
from keel.components._common.target import check_target


def load(data: DataSection, target: TargetSection | None = None) -> pd.DataFrame:
    """Reads `data.source`, drops `data.drop_columns`, samples, and checks the table."""
    frame = tables.read_source(data.source, fmt=data.format, delimiter=data.delimiter, encoding=data.encoding)
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError(f"{data.source}: duplicate column names {duplicated}; rename them at the source")
    missing = [c for c in data.drop_columns if c not in frame.columns]
    if missing:
        raise DataError(f"data.drop_columns: {missing} not in {data.source}; columns are: {', '.join(frame.columns[:30])}")
    frame = frame.drop(columns=data.drop_columns)
    if target is not None and target.column in data.drop_columns:
        raise DataError(f"data.drop_columns: drops the target column {target.column!r}")
    if data.sample_rows is not None and data.sample_rows < len(frame):
        frame = frame.sample(n=data.sample_rows, random_state=data.sample_seed).sort_index()
    frame = frame.reset_index(drop=True)
    all_null = [c for c in frame.columns if frame[c].isna().all()]
    if all_null:
        raise DataError(
            f"{data.source}: column(s) {all_null} are entirely null; add them to data.drop_columns or fix the source"
        )
    if target is not None:
        check_target(frame, target, where=data.source)
    return frame


def ingest(data: DataSection, target: TargetSection | None, out_path: str) -> dict:
    """Loads the source and writes it to `out_path` as Parquet; returns its metadata."""
    frame = load(data, target)
    meta = tables.write_parquet(frame, out_path)
    meta["source"] = data.source
    return meta
