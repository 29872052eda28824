"""Validate stage: schema inference, column- and row-level checks, fail vs quarantine, schema_uri."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from keel.components._common import tables
from keel.components._common.config import TargetSection, ValidationSection
from keel.components._common.errors import ConfigError, DataError
from keel.components.validate.schema import ColumnSchema, Schema, allowed_null_rate, infer_schema
from keel.components.validate.validate import REASON, SOURCE_ROW, arrow_safe, enforce, validate, validate_dataset

GRADE = TargetSection(column="grade", positive_values=["D", "E", "F", "G"])


def outputs(tmp_path, prefix=""):
    return {k: str(tmp_path / f"{prefix}{k}") for k in ("valid_path", "quarantine_path", "schema_path", "report_path")}


def corrupt(frame):
    """Three bad rows, four violations: an unknown grade, a negative amount and a null state in one row, a huge income."""
    bad = frame.copy()
    bad.loc[3, "grade"] = "Z"
    bad.loc[5, "loan_amount"] = -5
    bad.loc[5, "state"] = None
    bad.loc[7, "annual_income"] = 1e9
    return bad


@pytest.fixture(scope="module")
def loans_schema(loans):
    return infer_schema(loans, "grade", max_categories=50, range_margin=0.1)


def test_inference_on_the_loans_data(loans, loans_schema):
    cols = loans_schema.columns
    assert loans_schema.version == 1 and loans_schema.target == "grade" and list(cols) == list(loans.columns)
    assert cols["grade"] == ColumnSchema(type="string", nullable=False, max_null_rate=0.0, allowed=list("ABCDEFG"))
    assert len(cols["state"].allowed) == 50  # exactly max_categories: still an allowed set
    assert cols["emp_title"].allowed is None  # 4,741 job titles: free text
    assert cols["emp_title"].nullable and cols["emp_title"].max_null_rate == allowed_null_rate(loans["emp_title"].isna().mean()) == 0.11
    # int64 -> integer with whole-number bounds widened by 10% of the range, not below an all-positive zero.
    assert cols["loan_amount"].type == "integer" and isinstance(cols["loan_amount"].min, int)
    span = loans["loan_amount"].max() - loans["loan_amount"].min()
    assert cols["loan_amount"].max == int(np.ceil(loans["loan_amount"].max() + 0.1 * span))
    assert cols["loan_amount"].min == 0
    assert cols["interest_rate"].type == "float" and cols["interest_rate"].min == pytest.approx(5.31 - 0.1 * (30.94 - 5.31))
    assert cols["emp_length"].type == "float" and cols["emp_length"].nullable  # float64: ints with NaN
    result = validate(loans, loans_schema)
    assert result.passed and result.summary() == {"rows_in": 10000, "rows_out": 10000, "rows_quarantined": 0,
                                                  "violations": 0, "schema_source": "inferred"}
    assert list(result.valid.dtypes) == list(loans.dtypes)


def test_max_null_rate_rule():
    assert [allowed_null_rate(r) for r in (0.0, 0.001, 0.07, 0.5, 0.95)] == [0.01, 0.02, 0.09, 0.56, 1.0]
    frame = pd.DataFrame({"y": ["a", "b"] * 5, "x": [1.0, None, None] + [2.0] * 7})
    assert infer_schema(frame, "y").columns["x"].max_null_rate == 0.23  # 0.2 * 1.1 + 0.01 = 0.23
    assert infer_schema(frame, "y").columns["y"].max_null_rate == 0.0


def test_fail_mode_names_columns_rows_and_values_and_still_writes_the_report(loans_sample, tmp_path):
    schema_file = tmp_path / "schema.json"
    schema_file.write_bytes(infer_schema(loans_sample, "grade").to_json())
    paths = outputs(tmp_path)
    with pytest.raises(DataError) as err:
        validate_dataset(corrupt(loans_sample), GRADE, ValidationSection(schema_uri=str(schema_file), on_violation="fail"), **paths)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("4 row-level violation(s) in 3 of 2000 rows")
    assert "row 3: grade: 'Z' not in allowed values" in message
    assert "row 5: state: null in a non-nullable column" in message
    assert "on_violation: quarantine" in message
    report = open(paths["report_path"]).read()
    assert "FAILED: 4 row-level violation(s) in 3 rows" in report
    for text in ("grade: &#x27;Z&#x27; not in allowed values", "loan_amount: -5 below min", "annual_income: 1000000000.0 above max"):
        assert text in report
    assert json.loads(open(paths["schema_path"]).read())["target"] == "grade"
    assert not (tmp_path / "valid_path").exists() and not (tmp_path / "quarantine_path").exists()


def test_quarantine_mode_sets_bad_rows_aside_with_reasons(loans_sample, tmp_path):
    schema_file = tmp_path / "schema.json"
    schema_file.write_bytes(infer_schema(loans_sample, "grade").to_json())
    paths = outputs(tmp_path)
    out = validate_dataset(corrupt(loans_sample), GRADE, ValidationSection(schema_uri=str(schema_file), on_violation="quarantine"), **paths)
    assert out["summary"] == {"rows_in": 2000, "rows_out": 1997, "rows_quarantined": 3, "violations": 4,
                              "schema_source": str(schema_file), "schema_written": ""}
    quarantine = tables.read_parquet(paths["quarantine_path"])
    valid = tables.read_parquet(paths["valid_path"])
    assert len(valid) + len(quarantine) == 2000
    assert quarantine[SOURCE_ROW].tolist() == [3, 5, 7]
    assert quarantine[REASON].tolist() == [
        "grade: 'Z' not in allowed values",
        f"state: null in a non-nullable column; loan_amount: -5 below min {loans_sample['loan_amount'].min()}",
        f"annual_income: 1000000000.0 above max {loans_sample['annual_income'].max()}",
    ]
    assert quarantine.loc[0, "grade"] == "Z"  # the row as it came
    assert valid["grade"].isin(list("ABCDEFG")).all()
    assert not valid["rownames"].isin(loans_sample["rownames"][[3, 5, 7]]).any()
    assert "QUARANTINED: 3 of 2,000 rows" in open(paths["report_path"]).read()


def test_schema_uri_is_inferred_on_the_first_run_then_reused(loans_sample, tmp_path):
    uri = tmp_path / "schemas" / "loans.json"
    cfg = ValidationSection(schema_uri=str(uri), on_violation="fail")
    first = validate_dataset(loans_sample, GRADE, cfg, **outputs(tmp_path, "a-"))
    assert first["summary"]["schema_source"] == "inferred" and first["summary"]["schema_written"] == str(uri)
    stored = Schema.from_json(uri.read_bytes(), str(uri))
    assert stored == infer_schema(loans_sample, "grade")
    assert not list(uri.parent.glob(".*.tmp"))  # atomic write left nothing behind
    # A later run checks against the stored schema, not against itself: a new grade is a violation.
    later = loans_sample.copy()
    later.loc[0, "grade"] = "H"
    with pytest.raises(DataError, match="row 0: grade: 'H' not in allowed values"):
        validate_dataset(later, GRADE, cfg, **outputs(tmp_path, "b-"))
    out = validate_dataset(later, GRADE, cfg.model_copy(update={"on_violation": "quarantine"}), **outputs(tmp_path, "c-"))
    assert out["summary"]["schema_source"] == str(uri) and out["summary"]["rows_quarantined"] == 1
    assert uri.read_bytes() == stored.to_json()  # reused, not rewritten
    with pytest.raises(ConfigError, match="describes target 'grade' but target.column is 'term'"):
        validate_dataset(loans_sample, TargetSection(column="term", task="binary"), cfg, **outputs(tmp_path, "d-"))


def test_a_schema_learned_from_failing_data_is_not_stored(tmp_path):
    uri = tmp_path / "schema.json"
    frame = pd.DataFrame({"y": ["a", "b"] * 3, "code": ["x1", 7, "x2", "x3", "x4", "x5"]})  # an int among strings
    with pytest.raises(DataError, match="row 1: code: 7 is not a valid string"):
        validate_dataset(frame, TargetSection(column="y"), ValidationSection(schema_uri=str(uri)), **outputs(tmp_path))
    assert not uri.exists()
    out = validate_dataset(frame, TargetSection(column="y"), ValidationSection(on_violation="quarantine"), **outputs(tmp_path))
    assert out["summary"]["rows_quarantined"] == 1
    assert tables.read_parquet(str(tmp_path / "quarantine_path"))["code"].tolist() == [7]
    # A quarantine column that still mixes types is written as text rather than failing the write.
    assert arrow_safe(pd.DataFrame({"c": [1, "a", None]}))["c"].tolist() == ["1", "a", None]


def test_type_mismatch_is_column_level_even_in_quarantine_mode(loans_sample):
    schema = infer_schema(loans_sample, "grade")
    bad = loans_sample.copy()
    bad["grade"] = bad["grade"].map(ord)  # numbers where strings belong
    bad["loan_amount"] = "n/a"  # text where integers belong
    bad["term"] = bad["term"] == 36  # booleans are not numbers
    result = validate(bad, schema)
    issues = {i.column: i for i in result.column_issues}
    assert {c: i.rule for c, i in issues.items()} == {"grade": "type_mismatch", "loan_amount": "type_mismatch", "term": "type_mismatch"}
    assert issues["grade"].message == "grade: dtype int64 cannot hold string values"
    assert issues["loan_amount"].message == "loan_amount: no value is a valid integer (e.g. 'n/a')"
    assert not result.row_issues  # no row-by-row noise for a column that is wholly wrong
    with pytest.raises(DataError, match=r"^3 column-level schema violation\(s\) .*grade: dtype int64 cannot hold string values"):
        enforce(result, "quarantine")


def test_missing_extra_and_target_columns(loans_sample):
    schema = infer_schema(loans_sample, "grade")
    result = validate(loans_sample.drop(columns=["state", "grade"]).assign(surprise=1), schema)
    assert [(i.column, i.rule) for i in result.column_issues] == [
        ("grade", "target_missing"), ("state", "missing_column"), ("surprise", "extra_column")]
    with pytest.raises(DataError, match="grade: the target column is missing from the data; state: in the schema but not in the data"):
        enforce(result, "quarantine")
    assert "surprise: in the data but not in the schema; drop it with data.drop_columns" in result.column_issues[2].message


def test_null_rate_limit_fails_the_column_and_non_nullable_nulls_fail_rows():
    schema = Schema(version=1, target="y", columns={
        "y": ColumnSchema(type="string", nullable=False, max_null_rate=0.0),
        "x": ColumnSchema(type="float", nullable=True, max_null_rate=0.1),
    })
    frame = pd.DataFrame({"y": ["a", None, "b", "a"] * 5, "x": [1.0, None, None, 2.0] * 5})
    result = validate(frame, schema)
    assert [(i.column, i.rule, i.message) for i in result.column_issues] == [("x", "null_rate", "x: 50.0% null, above max_null_rate 10.0%")]
    assert [(i.column, i.rule, len(i.rows)) for i in result.row_issues] == [("y", "null", 5)]
    with pytest.raises(DataError, match="x: 50.0% null"):
        enforce(result, "quarantine")
    ok = validate(frame.assign(x=[1.0] * 20), schema)
    enforce(ok, "quarantine")
    assert len(ok.quarantine) == 5 and ok.quarantine[SOURCE_ROW].tolist() == [1, 5, 9, 13, 17]


def test_dtype_edge_cases_infer_and_convert():
    n = 8
    frame = pd.DataFrame({
        "y": ["a", "b"] * (n // 2),
        "nullable_int": pd.array([1, None, 3, 4] * (n // 4), dtype="Int64"),
        "flag": [True, False] * (n // 2),
        "flag_with_nulls": pd.Series([True, None, False, True] * (n // 4), dtype=object),
        "when": pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC"),
        "day": [dt.date(2024, 1, i + 1) for i in range(n)],
        "label": pd.Series(["p", "q", None, "p"] * (n // 4), dtype="string"),
    })
    schema = infer_schema(frame, "y")
    types = {name: (c.type, c.nullable) for name, c in schema.columns.items()}
    assert types == {"y": ("string", False), "nullable_int": ("integer", True), "flag": ("boolean", False),
                     "flag_with_nulls": ("boolean", True), "when": ("datetime", False), "day": ("datetime", False),
                     "label": ("string", True)}
    assert schema.columns["nullable_int"].min == 1 and schema.columns["label"].allowed == ["p", "q"]
    assert schema.columns["when"].min is None  # no numeric range for datetimes
    assert validate(frame, schema).passed

    # Values that arrive in other dtypes: converted one by one; only the unconvertible ones are violations.
    later = pd.DataFrame({
        "y": ["a"] * 5,
        "nullable_int": pd.Series(["2", 3, 2.0, 2.5, "x"], dtype=object),
        "flag": [True] * 5,
        "flag_with_nulls": pd.Series(["true", "FALSE", None, True, "yes"], dtype=object),
        "when": pd.Series(["2024-01-03", "not a date", None, "2024-01-02T10:00:00+00:00", dt.datetime(2024, 1, 5)], dtype=object),
        "day": pd.date_range("2024-01-01", periods=5, freq="D"),
        "label": ["p", "q", "r", None, "p"],
    })
    result = validate(later, schema)
    found = {(i.column, i.rule): i.rows.tolist() for i in result.row_issues}
    assert found == {("nullable_int", "not_convertible"): [3, 4], ("flag_with_nulls", "not_convertible"): [4],
                     ("when", "not_convertible"): [1], ("when", "null"): [2], ("label", "not_allowed"): [2]}
    assert result.quarantine.loc[result.quarantine[SOURCE_ROW] == 3, REASON].item() == "nullable_int: 2.5 is not a valid integer"
    assert result.quarantine[SOURCE_ROW].tolist() == [1, 2, 3, 4]
    # The one valid row leaves with the schema's types, not as objects.
    assert result.valid["nullable_int"].tolist() == [2] and result.valid["nullable_int"].dtype == "int64"
    assert result.valid["flag_with_nulls"].dtype == bool
    assert result.valid["when"].dtype.kind == "M"


def test_integral_floats_pass_an_integer_column_and_fractions_do_not():
    schema = Schema(version=1, target="y", columns={"y": ColumnSchema(type="integer", nullable=True, max_null_rate=0.5, min=0, max=10)})
    result = validate(pd.DataFrame({"y": [1.0, np.nan, 2.5, np.inf, 11.0]}), schema)
    assert {(i.rule, tuple(i.rows)) for i in result.row_issues} == {("not_convertible", (2, 3)), ("above_max", (4,))}


def test_schema_json_round_trip_and_bad_files(loans_schema, tmp_path):
    raw = loans_schema.to_json()
    document = json.loads(raw)
    assert list(document) == ["version", "target", "columns"]
    assert set(document["columns"]["grade"]) == {"type", "nullable", "max_null_rate", "min", "max", "allowed"}
    assert Schema.from_json(raw, "s.json") == loans_schema
    assert Schema.from_json(raw, "s.json").to_json() == raw

    def bad(change, match):
        doc = json.loads(raw)
        change(doc)
        with pytest.raises(ConfigError, match=match):
            Schema.from_json(json.dumps(doc), "s3://b/schema.json")

    bad(lambda d: d.update(version=2), r"s3://b/schema.json: schema version 2 is not supported")
    bad(lambda d: d["columns"]["grade"].update(type="str"), r"columns.grade.type: got 'str'")
    bad(lambda d: d["columns"]["grade"].update(colour="red"), r"columns.grade.colour: unknown key")
    bad(lambda d: d["columns"]["loan_amount"].update(min=10**9), r"columns.loan_amount: .*min \(1000000000\) is above max")
    bad(lambda d: d["columns"]["loan_amount"].update(allowed=["1"]), r"allowed only applies to string columns")
    bad(lambda d: d["columns"]["loan_amount"].update(min="5"), r"columns.loan_amount.min")
    bad(lambda d: d.update(target="nope"), r"target 'nope' is not one of the schema's columns")
    with pytest.raises(ConfigError, match="not a JSON schema"):
        Schema.from_json(b"{not json", "s.json")


def test_inference_refuses_what_it_cannot_describe():
    with pytest.raises(DataError, match="no rows"):
        infer_schema(pd.DataFrame({"y": pd.Series([], dtype=object)}), "y")
    with pytest.raises(DataError, match=r"column 'wait': dtype timedelta64\[ns\] cannot be described"):
        infer_schema(pd.DataFrame({"y": ["a"], "wait": pd.to_timedelta([1], unit="s")}), "y")


def test_component_compiles_and_writes_the_report_before_failing(loans_sample, tmp_path):
    from kfp import compiler, dsl

    from keel.components.validate import validate_data

    compiler.Compiler().compile(validate_data, str(tmp_path / "c.yaml"))
    text = (tmp_path / "c.yaml").read_text()
    for name in ("data", "target", "validation", "valid", "quarantine", "schema", "report", "system.HTML", "system.Dataset"):
        assert name in text

    clean = loans_sample[["grade", "loan_amount", "state", "annual_income"]]
    frame = corrupt(clean)
    data = dsl.Dataset(name="raw", uri=str(tmp_path / "raw.parquet"), metadata={})
    data.metadata.update(tables.write_parquet(frame, data.path))

    def run(prefix, validation):
        arts = {"valid": dsl.Dataset, "quarantine": dsl.Dataset, "schema": dsl.Artifact, "report": dsl.HTML}
        arts = {k: cls(name=k, uri=str(tmp_path / f"{prefix}{k}"), metadata={}) for k, cls in arts.items()}
        validate_data.python_func(data=data, target=GRADE.model_dump(), validation=validation, **arts)
        return arts

    schema_uri = str(tmp_path / "schema.json")
    (tmp_path / "schema.json").write_bytes(infer_schema(clean, "grade").to_json())
    arts = run("q-", {"schema_uri": schema_uri, "on_violation": "quarantine"})
    meta = arts["valid"].metadata
    assert (meta["rows_in"], meta["rows_out"], meta["rows_quarantined"], meta["violations"]) == (2000, 1997, 3, 4)
    assert meta["schema_source"] == schema_uri and meta["parents"][0]["content_hash"] == data.metadata["content_hash"]
    assert arts["quarantine"].metadata["rows"] == 3 and arts["report"].metadata["content_hash"].startswith("sha256:")
    with pytest.raises(SystemExit) as exit_info:
        run("f-", {"schema_uri": schema_uri, "on_violation": "fail"})
    assert exit_info.value.code == 2
    assert "FAILED" in (tmp_path / "f-report").read_text()
