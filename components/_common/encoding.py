"""The value coercions inside every fitted feature transformer, shared by the features stage (which fits
them) and the compiled serving transform (which recognises them and applies the same coercion in numpy).

They are pickled with the transformer by module and name: models fitted from now on refer to this module;
keel.components.features.features re-imports both so transformers pickled before they moved here still load.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def as_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as float64 (bools and numeric strings included).

    Part of the pickled transformer: keep this name stable.
    """
    return pd.DataFrame({c: pd.to_numeric(frame[c], errors="raise").astype("float64") for c in frame.columns}, index=frame.index)


def as_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as text with NaN for missing, whatever their dtype.

    Scikit-learn's imputer ignores None, rejects bool columns, and its encoders
    reject mixed str/bool values; Parquet gives all three. Integral floats read
    as integers so 3 and 3.0 are one category. Part of the pickled transformer:
    keep this name stable.
    """
    return pd.DataFrame({c: frame[c].map(category_text, na_action="ignore").astype(object).where(frame[c].notna(), np.nan)
                         for c in frame.columns}, index=frame.index)


def category_text(value) -> str:
    """One category's text: integral floats as integers (3.0 -> '3'), so Parquet's int/float round trip is one category."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
