"""Column coercions that the profile and its HTML report both use."""

from __future__ import annotations

import pandas as pd


def numeric_values(series: pd.Series) -> pd.Series:
    """The column as float64 (NaN for nulls), for numeric-kind columns of any dtype."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    return pd.to_numeric(series, errors="coerce").astype("float64")
