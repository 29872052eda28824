"""The data schema: a versioned JSON contract between training data and serving.

    {"version": 1, "target": "grade",
     "columns": {"loan_amount": {"type": "integer", "nullable": false, "max_null_rate": 0.0,
                                 "min": 1000, "max": 40000, "allowed": null}, ...}}

- `type` is one of integer, float, string, boolean, datetime.
- `nullable: false` makes every null a row-level violation. `max_null_rate`
  applies only to nullable columns: a higher share of nulls fails the whole
  column.
- `min`/`max` bound integer and float columns (inclusive), `allowed` lists
  the values of a string column; they are null where they do not apply.

Inference (`infer_schema`) describes the data it is given:
- types from the pandas dtype; an object column by its values;
- `nullable` when the column has any null. `max_null_rate` is the observed
  rate plus 10% of itself plus one percentage point, rounded up to a whole
  percent and capped at 1. A new batch of the same source varies a little
  (a sample of 500 rows moves a 10% null rate by about 1.3 points), and this
  absorbs that without letting a column that goes mostly null through;
- `min`/`max` are the observed range widened on each side by `range_margin`
  times its width (times the value itself when the column is constant), but
  not below zero when no negative value was seen; integer bounds are rounded
  outwards to whole numbers;
- `allowed` is the sorted set of observed strings when there are at most
  `max_categories` of them, else null (free text, identifiers).
"""

from __future__ import annotations

import json
import math
from typing import Literal, Union

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, model_validator

from keel.components._common import dtypes
from keel.components._common.config import format_validation_error
from keel.components._common.errors import ConfigError, DataError

SCHEMA_VERSION = 1
TYPES = ("integer", "float", "string", "boolean", "datetime")
ColumnType = Literal["integer", "float", "string", "boolean", "datetime"]
Number = Union[StrictInt, StrictFloat]


class ColumnSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ColumnType
    nullable: StrictBool
    max_null_rate: float = Field(ge=0, le=1)
    min: Number | None = None
    max: Number | None = None
    allowed: list[StrictStr] | None = None

    @model_validator(mode="after")
    def _check(self):
        numeric = self.type in ("integer", "float")
        if not numeric and (self.min is not None or self.max is not None):
            raise ValueError(f"min/max only apply to integer and float columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.allowed is not None and self.type != "string":
            raise ValueError(f"allowed only applies to string columns, not {self.type}")
        return self


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    target: str
    columns: dict[str, ColumnSchema] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self):
        if self.target not in self.columns:
            raise ValueError(f"target {self.target!r} is not one of the schema's columns")
        return self

    def to_json(self) -> bytes:
        """Canonical JSON: columns in table order, 2-space indent, no NaN."""
        return json.dumps(self.model_dump(mode="json"), indent=2, allow_nan=False).encode()

    @classmethod
    def from_json(cls, raw: bytes | str, where: str) -> "Schema":
        """Parses a schema file; every problem is one line naming `where` and the field.

        Raises:
            ConfigError: not JSON, a newer version, or a field that is missing or wrong.
        """
        try:
            document = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{where}: not a JSON schema ({err}); fix the file or delete it to infer a new one") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{where}: a schema is a JSON object with version, target and columns")
        version = document.get("version")
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"{where}: schema version {version!r} is not supported (this Keel reads version {SCHEMA_VERSION}); "
                "re-infer it by deleting the file, or upgrade Keel"
            )
        try:
            return cls.model_validate(document)
        except ValidationError as err:
            raise ConfigError(f"{where}: {format_validation_error(err)}") from None


# --- inference -------------------------------------------------------------------------------


def column_type(series: pd.Series) -> str:
    """The schema type of a column, from its dtype (and, for object columns, its values).

    Raises:
        DataError: a dtype the schema cannot describe (timedelta, complex, period, interval).
    """
    kind = dtypes.family(series)
    if kind in ("boolean", "integer", "float", "datetime"):
        return kind
    if kind == "values":  # mixed values come out as "string" and fail as "not a string"
        return dtypes.value_type(series)
    dtype = series.dtype
    raise DataError(
        f"column {series.name!r}: dtype {dtype} cannot be described by a schema "
        f"(types: {', '.join(TYPES)}); convert it at the source or add it to data.drop_columns"
    )


def allowed_null_rate(observed: float) -> float:
    """The inferred max_null_rate for an observed null rate (see the module docstring)."""
    padded = observed * 1.1 + 0.01
    # round() first: 0.07 * 100 is 7.000000000000001 in floating point.
    return min(1.0, math.ceil(round(padded * 100, 6)) / 100)


def _widened(low: float, high: float, margin: float, integer: bool) -> tuple[float | int, float | int]:
    pad = margin * ((high - low) if high > low else abs(low))
    # A column seen only at or above zero (amounts, counts) is taken to be non-negative by nature.
    new_low = max(low - pad, 0.0) if low >= 0 else low - pad
    new_high = high + pad
    if integer:
        return int(math.floor(new_low)), int(math.ceil(new_high))
    return _tidy(new_low, low, outward=-1), _tidy(new_high, high, outward=1)


def _tidy(value: float, observed: float, outward: int) -> float:
    """`value` to 10 significant digits (no 2.746999999999999 in the JSON), never past `observed`."""
    short = float(f"{value:.10g}")
    return short if (short - observed) * outward >= 0 else float(value)


def infer_column(series: pd.Series, max_categories: int, range_margin: float) -> ColumnSchema:
    """Describes one column (see the module docstring for the rules)."""
    kind = column_type(series)
    null_rate = float(series.isna().mean()) if len(series) else 0.0
    spec = {"type": kind, "nullable": null_rate > 0, "max_null_rate": allowed_null_rate(null_rate) if null_rate > 0 else 0.0}
    present = series.dropna()
    if kind in ("integer", "float"):
        numbers = pd.to_numeric(present.astype(object) if kind == "integer" else present, errors="coerce").astype("float64")
        numbers = numbers[np.isfinite(numbers)]
        if len(numbers):
            low, high = float(numbers.min()), float(numbers.max())
            spec["min"], spec["max"] = _widened(low, high, range_margin, integer=kind == "integer")
    elif kind == "string":
        values = sorted({v for v in present.astype(object) if isinstance(v, str)})
        if len(values) <= max_categories:
            spec["allowed"] = values
    return ColumnSchema(**spec)


def infer_schema(frame: pd.DataFrame, target_column: str, max_categories: int = 50, range_margin: float = 0.0) -> Schema:
    """A schema describing `frame` (see the module docstring for the rules).

    Raises:
        DataError: the frame is empty, the target is missing, or a column's dtype has no schema type.
    """
    if len(frame) == 0:
        raise DataError("cannot infer a schema from a table with no rows; point validation.schema_uri at an existing schema")
    if target_column not in frame.columns:
        raise DataError(f"target.column: {target_column!r} is not a column of the data; columns are: {', '.join(map(str, frame.columns[:20]))}")
    columns = {str(name): infer_column(frame[name], max_categories, range_margin) for name in frame.columns}
    return Schema(version=SCHEMA_VERSION, target=target_column, columns=columns)
