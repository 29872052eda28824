"""One reading of a column's dtype, shared by the stages that classify columns."""

from __future__ import annotations

import pandas as pd

# pandas.api.types.infer_dtype names -> the value type they mean.
_INFERRED = {
    "boolean": "boolean",
    "integer": "integer",
    "floating": "float",
    "mixed-integer-float": "float",
    "decimal": "float",
    "datetime": "datetime",
    "datetime64": "datetime",
    "date": "datetime",
}


def family(series: pd.Series) -> str:
    """The dtype family: boolean, integer, float, datetime, values (object, string, category) or other."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "values"
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_string_dtype(dtype):
        return "values"
    return "other"


def value_type(series: pd.Series) -> str:
    """For a `values` column, what its values are: boolean, integer, float, datetime or string.

    Object columns hold whatever the reader produced (bools with nulls,
    Decimals, datetime objects), so they are described by their values.
    """
    values = series.cat.categories if isinstance(series.dtype, pd.CategoricalDtype) else series
    return _INFERRED.get(pd.api.types.infer_dtype(values, skipna=True), "string")
