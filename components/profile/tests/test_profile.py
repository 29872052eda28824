"""Profile stage: the summary contract, association measures, dtype edge cases, the report."""

import datetime as dt
import decimal
import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.stats.contingency import association

from keel.components._common.config import TargetSection
from keel.components._common.errors import DataError
from keel.components.profile.profile import cramers_v, profile, write_profile
from keel.components.profile.render import render_html

GRADE = TargetSection(column="grade", positive_values=["D", "E", "F", "G"])
DETAIL_KEYS = {"name", "dtype", "kind", "null_rate", "cardinality", "min", "max", "mean", "std", "top_values",
               "target_correlation", "correlation_method"}


def by_name(summary):
    return {d["name"]: d for d in summary["columns_detail"]}


@pytest.fixture(scope="module")
def loans_summary(loans):
    return profile(loans, GRADE)


def test_summary_of_the_loans_data_keeps_the_contract(loans, loans_summary):
    s = loans_summary
    assert set(s) == {"rows", "columns", "target", "columns_detail", "warnings"}
    assert (s["rows"], s["columns"]) == (10000, 56)
    assert [d["name"] for d in s["columns_detail"]] == list(loans.columns)
    assert all(set(d) == DETAIL_KEYS for d in s["columns_detail"])
    target = s["target"]
    assert target["column"] == "grade" and target["task"] == "binary" and target["stats"] is None
    assert target["class_balance"] == {k: int(v) for k, v in loans["grade"].value_counts().items()}
    positive = int(loans["grade"].isin(list("DEFG")).sum())
    assert target["binary_balance"] == {"negative": 10000 - positive, "positive": positive}
    # Strict JSON: no NaN or numpy scalars reach the model card.
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_columns_get_kinds_statistics_and_top_values(loans, loans_summary):
    cols = by_name(loans_summary)
    assert cols["annual_income"]["kind"] == "numeric"
    assert cols["annual_income"]["min"] == loans["annual_income"].min()
    assert cols["annual_income"]["mean"] == pytest.approx(loans["annual_income"].mean())
    assert cols["annual_income"]["std"] == pytest.approx(loans["annual_income"].std())
    assert cols["annual_income"]["top_values"] is None
    assert cols["emp_length"]["null_rate"] == pytest.approx(loans["emp_length"].isna().mean())
    assert cols["grade"]["kind"] == "categorical" and cols["grade"]["min"] is None
    assert cols["state"]["cardinality"] == 50 and len(cols["state"]["top_values"]) == 10
    assert cols["state"]["top_values"]["CA"] == int((loans["state"] == "CA").sum())
    assert cols["emp_title"]["kind"] == "text"


def test_warnings_flag_constant_sparse_id_like_and_leaking_columns(loans_summary):
    warnings = "\n".join(loans_summary["warnings"])
    assert "num_accounts_120d_past_due: constant" in warnings
    assert "annual_income_joint: 85% null" in warnings
    assert "rownames: every value is distinct (id-like)" in warnings
    assert "emp_title: high cardinality" in warnings
    # sub_grade determines grade: Cramér's V is exactly 1.
    assert re.search(r"sub_grade: association with the target is 1\.00 \(cramers_v\)", warnings)
    assert "interest_rate: association" not in warnings  # 0.78: strong but below the leak threshold


def test_numeric_association_is_point_biserial_with_the_binarized_target(loans, loans_summary):
    cols = by_name(loans_summary)
    y = loans["grade"].isin(list("DEFG")).astype(int)
    expected = stats.pointbiserialr(y, loans["interest_rate"]).statistic
    assert cols["interest_rate"]["correlation_method"] == "pearson"
    assert cols["interest_rate"]["target_correlation"] == pytest.approx(expected, abs=1e-6)
    assert expected > 0.7  # higher grades letters carry higher rates
    # Pairwise complete rows: emp_length has nulls.
    both = loans["emp_length"].notna()
    expected = stats.pearsonr(loans.loc[both, "emp_length"], y[both]).statistic
    assert cols["emp_length"]["target_correlation"] == pytest.approx(expected, abs=1e-6)
    assert cols["grade"]["target_correlation"] is None  # the target itself
    assert cols["num_accounts_120d_past_due"]["target_correlation"] is None  # constant: undefined


def test_categorical_association_is_cramers_v(loans, loans_summary):
    y = loans["grade"].isin(list("DEFG"))
    expected = association(pd.crosstab(loans["loan_purpose"], y).to_numpy(), method="cramer")
    col = by_name(loans_summary)["loan_purpose"]
    assert col["correlation_method"] == "cramers_v"
    assert col["target_correlation"] == pytest.approx(expected, abs=1e-6)
    assert cramers_v(pd.Series(["a", "a"]), pd.Series([0, 1])) is None  # one category: undefined


def test_regression_target_reports_stats_and_uses_correlation_ratio_for_categories(loans_sample):
    summary = profile(loans_sample, TargetSection(column="interest_rate", task="regression"))
    target = summary["target"]
    assert target["class_balance"] is None and target["binary_balance"] is None
    assert target["stats"]["count"] == 2000
    assert target["stats"]["50%"] == pytest.approx(loans_sample["interest_rate"].median())
    cols = by_name(summary)
    assert cols["loan_amount"]["correlation_method"] == "pearson"
    # grade explains most of the interest rate: eta^2 = between-group / total sum of squares.
    y = loans_sample["interest_rate"]
    means = y.groupby(loans_sample["grade"]).transform("mean")
    eta = np.sqrt(((means - y.mean()) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    assert cols["grade"]["correlation_method"] == "correlation_ratio"
    assert cols["grade"]["target_correlation"] == pytest.approx(eta, abs=1e-6)
    assert eta > 0.9


def test_multiclass_target_scores_numbers_by_correlation_ratio(loans_sample):
    summary = profile(loans_sample, TargetSection(column="grade", task="multiclass"))
    cols = by_name(summary)
    assert summary["target"]["binary_balance"] is None
    assert sum(summary["target"]["class_balance"].values()) == 2000
    assert cols["interest_rate"]["correlation_method"] == "correlation_ratio"
    assert 0.9 < cols["interest_rate"]["target_correlation"] <= 1.0
    assert cols["homeownership"]["correlation_method"] == "cramers_v"
    assert any("class 'G' is only" in w for w in summary["warnings"])  # 7 G loans in 2,000


def test_binary_target_without_positive_values_uses_the_minority_as_positive():
    frame = pd.DataFrame({"y": ["no"] * 8 + ["yes"] * 4, "x": [0] * 8 + [1] * 4})
    summary = profile(frame, TargetSection(column="y"))
    assert by_name(summary)["x"]["target_correlation"] == pytest.approx(1.0)
    assert summary["target"]["binary_balance"] is None


def test_dtype_edge_cases():
    n = 40
    frame = pd.DataFrame({
        "y": ["a", "b"] * (n // 2),
        "nullable_int": pd.array([1, None, 3, 4] * (n // 4), dtype="Int64"),
        "flag": [True, False] * (n // 2),
        "flag_with_nulls": pd.Series([True, None, False, True] * (n // 4), dtype=object),
        "when": pd.date_range("2024-01-01", periods=n, freq="D"),
        "money": [decimal.Decimal("1.5"), decimal.Decimal("2.5")] * (n // 2),
        "mixed": ["x", 1, "y", 2.5] * (n // 4),
        "dates_as_objects": [dt.date(2024, 1, 1 + i % 28) for i in range(n)],
        "price_label": ["$5", r"$\bogus$"] * (n // 2),  # '$' must not switch matplotlib to mathtext
        "empty": [None] * n,
    })
    summary = profile(frame, TargetSection(column="y"))
    cols = by_name(summary)
    assert cols["nullable_int"]["kind"] == "numeric" and cols["nullable_int"]["null_rate"] == 0.25
    assert cols["nullable_int"]["max"] == 4.0 and cols["nullable_int"]["target_correlation"] is not None
    assert cols["flag"]["kind"] == "boolean" and cols["flag"]["top_values"] == {"True": 20, "False": 20}
    assert cols["flag"]["correlation_method"] == "cramers_v"
    assert cols["flag_with_nulls"]["kind"] == "boolean"
    assert cols["when"]["kind"] == "datetime" and cols["when"]["target_correlation"] is None
    assert cols["money"]["kind"] == "numeric" and cols["money"]["mean"] == 2.0
    assert cols["mixed"]["kind"] == "categorical" and cols["mixed"]["cardinality"] == 4
    assert cols["dates_as_objects"]["kind"] == "datetime"
    assert "empty: entirely null; drop it with data.drop_columns" in summary["warnings"]
    json.dumps(summary, allow_nan=False)
    html = render_html(summary, frame, TargetSection(column="y"))
    assert html.count("<img") == len(frame.columns) + 2  # one per column, class balance, association


def test_missing_or_single_class_target_is_a_data_error(loans_sample):
    with pytest.raises(DataError, match="target.column: 'grde' is not a column"):
        profile(loans_sample, TargetSection(column="grde", positive_values=["D"]))
    with pytest.raises(DataError, match="every row of 'grade' is positive"):
        profile(loans_sample, TargetSection(column="grade", positive_values=list("ABCDEFG")))


def test_report_is_self_contained_with_every_section(loans_sample, tmp_path):
    summary = write_profile(loans_sample, GRADE, str(tmp_path / "r.html"), str(tmp_path / "s.json"))
    assert json.loads((tmp_path / "s.json").read_text()) == summary
    html = (tmp_path / "r.html").read_text()
    for heading in ("Overview", "Warnings", "Target: grade (binary)", "Association with the target", "Columns", "Distributions"):
        assert f"<h2>{heading}</h2>" in html
    assert html.count('src="data:image/png;base64,') == 56 + 2
    assert not re.search(r'(src|href)="(https?:)?//', html)  # the dashboard sandbox has no network
    for name in loans_sample.columns:
        assert f"<b>{name}</b>" in html
    assert "sub_grade: association with the target" in html


def test_component_compiles_and_runs_in_process(loans_sample, tmp_path):
    loans_sample = loans_sample[["grade", "loan_amount", "state", "rownames"]]  # the full report is tested above
    from kfp import compiler, dsl

    from keel.components._common import tables
    from keel.components.profile import profile_data

    compiler.Compiler().compile(profile_data, str(tmp_path / "c.yaml"))
    text = (tmp_path / "c.yaml").read_text()
    for name in ("data", "target", "report", "summary", "system.HTML", "system.Dataset"):
        assert name in text
    data = dsl.Dataset(name="raw", uri=str(tmp_path / "raw.parquet"), metadata={})
    data.metadata.update(tables.write_parquet(loans_sample, data.path))
    report, summary = dsl.HTML(name="report", uri=str(tmp_path / "r.html")), dsl.Artifact(name="summary", uri=str(tmp_path / "s.json"))
    profile_data.python_func(data=data, target=GRADE.model_dump(), report=report, summary=summary)
    assert json.loads((tmp_path / "s.json").read_text())["columns"] == 4
    assert summary.metadata["parents"][0]["content_hash"] == data.metadata["content_hash"]
    assert report.metadata["content_hash"].startswith("sha256:") and summary.metadata["warnings"] > 0
    with pytest.raises(SystemExit) as exit_info:  # a user error is one line and exit 2
        profile_data.python_func(data=data, target={"column": "nope"}, report=report, summary=summary)
    assert exit_info.value.code == 2
