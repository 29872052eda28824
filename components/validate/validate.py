"""Validate logic: check a table against a schema, then decide what the violations mean.

`validate()` only looks: it returns a `ValidationResult` (valid rows,
quarantined rows with their reasons, every violation, the schema) and never
raises for bad data, so the report can always be written. `enforce()` then
decides: column-level problems always fail; row-level ones fail or are
quarantined, as `validation.on_violation` says.

Column-level (the whole column is wrong; no row can be set aside to fix it):
missing target, missing column, extra column, type mismatch, null rate over
`max_null_rate`. An extra column is an error, not a warning: it would flow
into the features and the model, while serving validates requests against
this schema and would never send it. Drop it with `data.drop_columns`, or
re-infer the schema.

Row-level: a value that cannot be converted to the column's type, a null in a
non-nullable column, a number outside [min, max], a string not in `allowed`.

A column is a type mismatch when its dtype cannot hold the schema's type
(numbers in a string column, dates in a number column) or, for object and
string columns whose values are checked one by one, when no value converts;
when only some values fail, those rows are violations.
"""

from __future__ import annotations

import datetime as dt
import decimal
import numbers
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from keel.components._common import dtypes
from keel.components._common.config import TargetSection, ValidationSection
from keel.components._common.errors import ConfigError, DataError
from keel.components.validate.schema import ColumnSchema, Schema, infer_schema

REASON = "_quarantine_reason"
SOURCE_ROW = "_source_row"
INFERRED = "inferred"
FIRST_FEW = 3  # violations named in an error line

# Which dtype families can hold each schema type. "values": object or string
# columns, checked value by value.
_COMPATIBLE = {
    "integer": {"integer", "float", "values"},
    "float": {"integer", "float", "values"},
    "boolean": {"boolean", "values"},
    "datetime": {"datetime", "values"},
    "string": {"values"},
}


@dataclass
class ColumnIssue:
    """A problem with a whole column."""

    column: str
    rule: str  # target_missing | missing_column | extra_column | type_mismatch | null_rate
    message: str


@dataclass
class RowIssue:
    """One rule broken by some rows of one column."""

    column: str
    rule: str  # not_convertible | null | below_min | above_max | not_allowed
    rows: np.ndarray  # positions in the input table (= _source_row)
    values: list  # the offending values, aligned with `rows`
    limit: object = None  # the bound or type the values broke

    def reason(self, value) -> str:
        """The quarantine reason for one row, e.g. "grade: 'Z' not in allowed values"."""
        shown = _show(value)
        return {
            "not_convertible": f"{self.column}: {shown} is not a valid {self.limit}",
            "null": f"{self.column}: null in a non-nullable column",
            "below_min": f"{self.column}: {shown} below min {self.limit}",
            "above_max": f"{self.column}: {shown} above max {self.limit}",
            "not_allowed": f"{self.column}: {shown} not in allowed values",
        }[self.rule]


@dataclass
class ValidationResult:
    """What `validate()` found; `enforce()` decides whether it fails the run."""

    schema: Schema
    schema_source: str
    rows_in: int
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    column_issues: list[ColumnIssue] = field(default_factory=list)
    row_issues: list[RowIssue] = field(default_factory=list)

    @property
    def violations(self) -> int:
        """Column problems plus bad cells (a row breaking two rules counts twice)."""
        return len(self.column_issues) + sum(len(issue.rows) for issue in self.row_issues)

    @property
    def passed(self) -> bool:
        return not self.column_issues and not self.row_issues

    def summary(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": int(len(self.valid)),
            "rows_quarantined": int(len(self.quarantine)),
            "violations": self.violations,
            "schema_source": self.schema_source,
        }


# --- checking --------------------------------------------------------------------------------


def validate(frame: pd.DataFrame, schema: Schema, schema_source: str = INFERRED) -> ValidationResult:
    """Checks `frame` against `schema`; never raises for bad data.

    Args:
        frame: the table to check.
        schema: the contract.
        schema_source: "inferred" or the schema's URI, for the report.

    Returns:
        The valid rows (index reset), the quarantined rows (with `_quarantine_reason` and
        `_source_row`, the row's position in `frame`), and every violation.
    """
    column_issues = _column_presence(frame, schema)
    row_issues: list[RowIssue] = []
    converted: dict[str, tuple[pd.Series, str]] = {}
    for name, spec in schema.columns.items():
        if name not in frame.columns:
            continue
        series = frame[name].reset_index(drop=True)
        issue, values, bad = _check_type(series, name, spec)
        if issue:
            column_issues.append(issue)
            continue
        null = series.isna().to_numpy()
        if spec.nullable and len(series) and null.mean() > spec.max_null_rate:
            column_issues.append(ColumnIssue(name, "null_rate", f"{name}: {null.mean():.1%} null, above max_null_rate {spec.max_null_rate:.1%}"))
        row_issues.extend(_row_issues(series, name, spec, values, bad, null))
        if dtypes.family(series) == "values" and spec.type != "string":
            converted[name] = (values, spec.type)
    valid, quarantine = _split(frame, row_issues, converted)
    return ValidationResult(schema, schema_source, int(len(frame)), valid, quarantine, column_issues, row_issues)


def _column_presence(frame: pd.DataFrame, schema: Schema) -> list[ColumnIssue]:
    issues = []
    if schema.target not in frame.columns:
        issues.append(ColumnIssue(schema.target, "target_missing", f"{schema.target}: the target column is missing from the data"))
    for name in schema.columns:
        if name not in frame.columns and name != schema.target:
            issues.append(ColumnIssue(name, "missing_column", f"{name}: in the schema but not in the data"))
    for name in frame.columns:
        if name not in schema.columns:
            issues.append(ColumnIssue(
                str(name), "extra_column",
                f"{name}: in the data but not in the schema; drop it with data.drop_columns or re-infer the schema",
            ))
    return issues


def _check_type(series: pd.Series, name: str, spec: ColumnSchema) -> tuple[ColumnIssue | None, pd.Series, np.ndarray]:
    """(type issue or None, the values converted to the schema type, mask of values that did not convert)."""
    family = dtypes.family(series)
    if family not in _COMPATIBLE[spec.type]:
        return ColumnIssue(name, "type_mismatch", f"{name}: dtype {series.dtype} cannot hold {spec.type} values"), series, np.zeros(len(series), bool)
    values, bad = convert(series, spec.type)
    present = int(series.notna().sum())
    if family == "values" and present and bad.sum() == present:
        example = _show(series[bad].iloc[0])
        return ColumnIssue(name, "type_mismatch", f"{name}: no value is a valid {spec.type} (e.g. {example})"), series, bad
    return None, values, bad


def convert(series: pd.Series, kind: str) -> tuple[pd.Series, np.ndarray]:
    """Converts `series` to the schema type `kind`.

    Returns:
        (converted values, float64 for numbers, NaN/None where null or not convertible;
         boolean mask of non-null values that could not be converted).
    """
    null = series.isna().to_numpy()
    family = dtypes.family(series)
    if kind in ("integer", "float"):
        if family in ("integer", "float"):
            values = series.astype("float64")
        else:
            values = pd.Series([_to_number(v) for v in series.astype(object)], index=series.index, dtype="float64")
        numbers_ = values.to_numpy()
        if kind == "integer":
            with np.errstate(invalid="ignore"):
                return values, ~null & ~(np.isfinite(numbers_) & (numbers_ == np.round(numbers_)))
        return values, ~null & np.isnan(numbers_)
    if family in ("boolean", "datetime"):
        return series, np.zeros(len(series), bool)
    parse = {"boolean": _to_bool, "datetime": _to_datetime, "string": _to_string}[kind]
    parsed = [None if isnull else parse(v) for v, isnull in zip(series.astype(object), null)]
    bad = np.array([p is _BAD for p in parsed], dtype=bool)
    return pd.Series([None if p is _BAD else p for p in parsed], index=series.index, dtype=object), bad


_BAD = object()


def _to_number(value):
    if isinstance(value, (bool, np.bool_)):
        return np.nan  # True is not 1 in a schema
    if isinstance(value, (numbers.Number, decimal.Decimal)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return np.nan
    return np.nan


def _to_bool(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return _BAD


def _to_datetime(value):
    if isinstance(value, (dt.date, np.datetime64)):
        return pd.Timestamp(value)
    if isinstance(value, str):
        try:
            return pd.Timestamp(value)
        except (ValueError, TypeError):
            return _BAD
    return _BAD


def _to_string(value):
    return value if isinstance(value, str) else _BAD


def _row_issues(series: pd.Series, name: str, spec: ColumnSchema, values: pd.Series, bad: np.ndarray, null: np.ndarray) -> list[RowIssue]:
    issues = []

    def add(rule: str, mask: np.ndarray, limit=None):
        if mask.any():
            rows = np.flatnonzero(mask)
            issues.append(RowIssue(name, rule, rows, series.iloc[rows].tolist(), limit))

    add("not_convertible", bad, spec.type)
    if not spec.nullable:
        add("null", null)
    ok = ~bad & ~null
    if spec.type in ("integer", "float"):
        numbers_ = values.to_numpy(dtype="float64")
        with np.errstate(invalid="ignore"):
            if spec.min is not None:
                add("below_min", ok & (numbers_ < spec.min), spec.min)
            if spec.max is not None:
                add("above_max", ok & (numbers_ > spec.max), spec.max)
    if spec.allowed is not None:
        allowed = set(spec.allowed)
        add("not_allowed", ok & ~values.astype(object).map(lambda v: v in allowed).to_numpy(dtype=bool))
    return issues


def _typed(values: pd.Series, kind: str) -> pd.Series:
    """Converted values of an object column, as the single dtype downstream stages expect."""
    missing = values.isna()
    if kind == "integer":
        return values.astype("float64") if missing.any() else values.astype("int64")
    if kind == "float":
        return values.astype("float64")
    if kind == "boolean":
        return values if missing.any() else values.astype(bool)
    if kind == "datetime":
        try:
            return pd.to_datetime(values)
        except (ValueError, TypeError):  # mixed time zones: keep the Timestamps as they are
            return values
    return values


def _split(frame: pd.DataFrame, row_issues: list[RowIssue], converted: dict[str, tuple[pd.Series, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid rows, quarantined rows with reasons); checks that no row is lost."""
    rows_in = len(frame)
    reasons: dict[int, list[str]] = {}
    for issue in row_issues:
        for row, value in zip(issue.rows.tolist(), issue.values):
            reasons.setdefault(row, []).append(issue.reason(value))
    bad = np.zeros(rows_in, bool)
    bad[list(reasons)] = True
    source = frame.reset_index(drop=True)
    valid = source[~bad].copy()
    for name, (values, kind) in converted.items():
        # Object columns leave with the schema's type; the quarantine keeps values as they came.
        valid[name] = _typed(values[~bad], kind)
    valid = valid.reset_index(drop=True)
    bad_rows = np.flatnonzero(bad)
    quarantine = source[bad].reset_index(drop=True)
    quarantine[REASON] = pd.Series(["; ".join(reasons[row]) for row in bad_rows], dtype=object)
    quarantine[SOURCE_ROW] = bad_rows.astype("int64")
    if rows_in != len(valid) + len(quarantine):
        raise AssertionError(f"rows lost in validation: {rows_in} in, {len(valid)} valid + {len(quarantine)} quarantined")
    return valid, quarantine


def _show(value) -> str:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- deciding --------------------------------------------------------------------------------


def enforce(result: ValidationResult, on_violation: str) -> None:
    """Fails the run as the config says; returns quietly when the result may be used.

    Column problems always fail. Row problems fail with `on_violation: fail` and
    are left in `result.quarantine` with `on_violation: quarantine`.

    Raises:
        DataError: one line with the number of violations and the first few.
    """
    if result.column_issues:
        issues = result.column_issues
        first = "; ".join(issue.message for issue in issues[:FIRST_FEW])
        more = f"; and {len(issues) - FIRST_FEW} more" if len(issues) > FIRST_FEW else ""
        raise DataError(
            f"{len(issues)} column-level schema violation(s) against {_schema_name(result)}: {first}{more} "
            "(column problems cannot be quarantined; fix the data or the schema; the validation report lists all)"
        )
    if result.row_issues and on_violation == "fail":
        cells = [(issue, row, value) for issue in result.row_issues for row, value in zip(issue.rows.tolist(), issue.values)]
        cells.sort(key=lambda cell: cell[1])
        first = "; ".join(f"row {row}: {issue.reason(value)}" for issue, row, value in cells[:FIRST_FEW])
        raise DataError(
            f"{len(cells)} row-level violation(s) in {len(result.quarantine)} of {result.rows_in} rows "
            f"against {_schema_name(result)}: {first}"
            f"{' ...' if len(cells) > FIRST_FEW else ''}; the validation report lists all. "
            "Fix the data, widen the schema, or set validation.on_violation: quarantine to set these rows aside"
        )


def _schema_name(result: ValidationResult) -> str:
    return "the schema inferred from this data" if result.schema_source == INFERRED else f"schema {result.schema_source}"


# --- schema source ---------------------------------------------------------------------------


def resolve_schema(frame: pd.DataFrame, target: TargetSection, config: ValidationSection) -> tuple[Schema, str, bool]:
    """The schema to check against.

    - `schema_uri` set and present: loaded from it;
    - `schema_uri` set and absent: inferred from this data, and written there unless the run
      fails (a schema learned from data that fails its own checks is not kept);
    - unset: inferred from this data, every run.

    Returns:
        (schema, source: the URI or "inferred", whether to write it to `schema_uri`).

    Raises:
        ConfigError: the stored schema is unreadable or is for another target.
    """
    from keel.components._common import storage

    if config.schema_uri and storage.exists(config.schema_uri):
        schema = Schema.from_json(storage.read_bytes(config.schema_uri), where=config.schema_uri)
        if schema.target != target.column:
            raise ConfigError(
                f"validation.schema_uri: {config.schema_uri} describes target {schema.target!r} but target.column is "
                f"{target.column!r}; point schema_uri at this target's schema or delete the file to infer a new one"
            )
        return schema, config.schema_uri, False
    schema = infer_schema(frame, target.column, config.max_categories, config.range_margin)
    return schema, INFERRED, bool(config.schema_uri)


# --- the whole stage -------------------------------------------------------------------------


def validate_dataset(
    frame: pd.DataFrame,
    target: TargetSection,
    config: ValidationSection,
    *,
    valid_path: str,
    quarantine_path: str,
    schema_path: str,
    report_path: str,
) -> dict:
    """Resolves the schema, checks `frame`, writes the report and schema, enforces, writes the datasets.

    The report and the schema are written before `enforce()` may fail the run, so a failed run
    still shows every violation.

    Returns:
        {"summary": rows_in/rows_out/rows_quarantined/violations/schema_source,
         "valid": its table metadata, "quarantine": its table metadata}.

    Raises:
        DataError: a violation that fails the run (see `enforce`).
        ConfigError: a stored schema that cannot be used.
    """
    from keel.components._common import storage, tables
    from keel.components.validate.render import render_html

    schema, source, persist = resolve_schema(frame, target, config)
    result = validate(frame, schema, source)
    storage.write_bytes(report_path, render_html(result, config.on_violation).encode(), "text/html")
    storage.write_bytes(schema_path, schema.to_json(), "application/json")
    enforce(result, config.on_violation)
    if persist:
        storage.write_bytes(config.schema_uri, schema.to_json(), "application/json")
    valid_meta = tables.write_parquet(result.valid, valid_path)
    quarantine_meta = tables.write_parquet(arrow_safe(result.quarantine), quarantine_path)
    summary = result.summary()
    return {"summary": {**summary, "schema_written": config.schema_uri if persist else ""}, "valid": valid_meta, "quarantine": quarantine_meta}


def arrow_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with object columns of mixed value types turned to text, so Parquet can hold them.

    Only the quarantine needs this: it keeps rejected values as they came, and a
    column mixing, say, numbers and strings has no Arrow type.
    """
    import pyarrow as pa

    frame = frame.copy()
    for name in frame.columns:
        if frame[name].dtype != object:
            continue
        try:
            pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            frame[name] = frame[name].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return frame
