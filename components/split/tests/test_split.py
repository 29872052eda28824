"""Tests of the split stage: every row in exactly one split, reproducibly, with one label encoding."""

import json

import numpy as np
import pandas as pd
import pytest

from keel.components._common.config import SplitSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import LABEL
from keel.components.split.split import SPLITS, parse_times, split_frame

LOANS_TARGET = TargetSection(column="grade", positive_values=["D", "E", "F", "G"])


def cfg(**values) -> SplitSection:
    return SplitSection.parse(values, "split")


def assert_partition(result, n):
    """Every input row is in exactly one split."""
    every = np.concatenate([result.indices[name] for name in SPLITS])
    assert len(every) == n
    assert np.array_equal(np.sort(every), np.arange(n))
    for name in SPLITS:
        assert len(result.frames[name]) == len(result.indices[name])


@pytest.mark.parametrize("method", ["stratified", "random"])
def test_loans_every_row_lands_in_exactly_one_split(loans_sample, method):
    result = split_frame(loans_sample, LOANS_TARGET, cfg(method=method))
    assert_partition(result, len(loans_sample))
    assert [len(result.frames[s]) for s in SPLITS] == [1400, 200, 400]
    for name in SPLITS:
        frame = result.frames[name]
        assert "grade" not in frame.columns
        assert list(frame.columns) == [c for c in loans_sample.columns if c != "grade"] + [LABEL]
        # Rows are carried whole: features and label both come from the same input row.
        source = loans_sample.iloc[result.indices[name]].reset_index(drop=True)
        pd.testing.assert_series_equal(frame["loan_amount"], source["loan_amount"])
        assert np.array_equal(frame[LABEL], source["grade"].isin(["D", "E", "F", "G"]).astype(int))


def test_stratified_keeps_the_class_balance(loans_sample):
    result = split_frame(loans_sample, LOANS_TARGET, cfg())
    overall = loans_sample["grade"].isin(["D", "E", "F", "G"]).mean()
    for name in SPLITS:
        assert result.frames[name][LABEL].mean() == pytest.approx(overall, abs=0.01)


def test_same_seed_same_split_and_another_seed_another(loans_sample):
    first = split_frame(loans_sample, LOANS_TARGET, cfg(seed=7))
    again = split_frame(loans_sample.copy(), LOANS_TARGET, cfg(seed=7))
    other = split_frame(loans_sample, LOANS_TARGET, cfg(seed=8))
    for name in SPLITS:
        assert np.array_equal(first.indices[name], again.indices[name])
        pd.testing.assert_frame_equal(first.frames[name], again.frames[name])
    assert not np.array_equal(first.indices["test"], other.indices["test"])


def test_metadata_counts_classes_per_split(loans):
    # The whole data: in a 2,000-row sample grade G has 2 rows, too few to stratify.
    result = split_frame(loans, TargetSection(column="grade", task="multiclass"), cfg())
    assert result.classes == ["A", "B", "C", "D", "E", "F", "G"]
    total = {c: 0 for c in result.classes}
    for name in SPLITS:
        meta = result.metadata(name)
        json.dumps(meta)  # KFP metadata must be JSON
        assert meta["rows"] == len(result.frames[name])
        assert meta["classes"] == result.classes and meta["task"] == "multiclass"
        assert sum(meta["class_counts"].values()) == meta["rows"]
        for c, count in meta["class_counts"].items():
            total[c] += count
    assert total == loans["grade"].value_counts().to_dict()
    # The encoding is one mapping for every split: label i means classes[i].
    decoded = result.frames["test"][LABEL].map(dict(enumerate(result.classes)))
    assert decoded.tolist() == loans["grade"].iloc[result.indices["test"]].tolist()


def test_class_set_comes_from_the_whole_data_so_every_split_shares_it():
    frame = pd.DataFrame({"x": range(40), "y": ["a"] * 20 + ["b"] * 17 + ["c"] * 3})
    result = split_frame(frame, TargetSection(column="y", task="multiclass"), cfg(method="random", seed=1))
    for name in SPLITS:
        assert result.metadata(name)["classes"] == ["a", "b", "c"]
        assert set(result.metadata(name)["class_counts"]) == {"a", "b", "c"}


def test_validation_size_zero_gives_an_empty_frame_with_the_same_columns(loans_sample):
    result = split_frame(loans_sample, LOANS_TARGET, cfg(validation_size=0))
    assert_partition(result, len(loans_sample))
    validation = result.frames["validation"]
    assert validation.empty
    assert list(validation.columns) == list(result.frames["train"].columns)
    assert validation.dtypes.equals(result.frames["train"].dtypes)
    assert result.metadata("validation")["class_counts"] == {"negative": 0, "positive": 0}


def test_regression_stratifies_on_target_quantiles(loans_sample):
    target = TargetSection(column="interest_rate", task="regression")
    result = split_frame(loans_sample, target, cfg())
    assert_partition(result, len(loans_sample))
    assert result.method.startswith("stratified on 10 target quantile bins")
    assert result.classes == [] and result.frames["train"][LABEL].dtype == np.float64
    for name in SPLITS:
        assert result.frames[name][LABEL].median() == pytest.approx(loans_sample["interest_rate"].median(), rel=0.05)
        assert "label_mean" in result.metadata(name)


def test_small_regression_falls_back_to_random():
    frame = pd.DataFrame({"x": range(15), "y": np.linspace(0, 1, 15)})
    result = split_frame(frame, TargetSection(column="y", task="regression"), cfg())
    assert result.method.startswith("random")
    assert_partition(result, 15)


# --- time ------------------------------------------------------------------------------------

def test_time_split_on_month_strings_puts_the_oldest_in_train(loans_sample):
    result = split_frame(loans_sample, LOANS_TARGET, cfg(method="time", time_column="issue_month"))
    assert_partition(result, len(loans_sample))
    times = {name: pd.to_datetime(result.frames[name]["issue_month"], format="%b-%Y") for name in SPLITS}
    assert times["train"].max() <= times["validation"].min()
    assert times["validation"].max() <= times["test"].min()
    assert (times["train"] == pd.Timestamp("2018-01-01")).any()
    assert result.metadata("test")["time_range"] == ["2018-03-01 00:00:00", "2018-03-01 00:00:00"]


def test_time_split_orders_datetimes_and_numbers():
    stamps = pd.date_range("2021-01-01", periods=20, freq="D")
    frame = pd.DataFrame({"t": stamps[::-1], "n": np.arange(20)[::-1], "y": [0, 1] * 10})
    for column in ("t", "n"):
        result = split_frame(frame, TargetSection(column="y"), cfg(method="time", time_column=column, test_size=0.25, validation_size=0.25))
        assert sorted(result.frames["test"]["n"]) == list(range(15, 20))
        assert sorted(result.frames["validation"]["n"]) == list(range(10, 15))
        assert sorted(result.frames["train"]["n"]) == list(range(10))


def test_iso_date_strings_parse():
    assert parse_times(pd.Series(["2020-02-01", "2019-12-31"]), "d").iloc[1] == pd.Timestamp("2019-12-31")


# --- bad input -------------------------------------------------------------------------------

def test_rare_class_cannot_be_stratified_and_the_error_names_it():
    frame = pd.DataFrame({"x": range(30), "y": ["a"] * 15 + ["b"] * 13 + ["c"] * 2})
    with pytest.raises(DataError, match=r"class 'c' has only 2 row\(s\).*at least 3"):
        split_frame(frame, TargetSection(column="y", task="multiclass"), cfg())
    # Without a validation split two members are enough.
    result = split_frame(frame, TargetSection(column="y", task="multiclass"), cfg(validation_size=0, test_size=0.5))
    assert result.metadata("test")["class_counts"]["c"] == 1


def test_loans_multiclass_with_a_tiny_class_is_refused_by_name(loans):
    rare = loans[~loans["grade"].isin(["F", "G"])].head(300)
    rare = pd.concat([rare, loans[loans["grade"] == "G"].head(1)], ignore_index=True)
    with pytest.raises(DataError, match="class 'G' has only 1 row"):
        split_frame(rare, TargetSection(column="grade", task="multiclass"), cfg())


def test_too_few_test_rows_for_the_classes_is_a_data_error():
    frame = pd.DataFrame({"x": range(12), "y": ["a", "b", "c"] * 4})
    with pytest.raises(DataError, match="split.method stratified"):
        split_frame(frame, TargetSection(column="y", task="multiclass"), cfg(test_size=0.1, validation_size=0))


def test_time_column_problems_are_data_errors(loans_sample):
    with pytest.raises(DataError, match="split.time_column: 'issued' is not a column"):
        split_frame(loans_sample, LOANS_TARGET, cfg(method="time", time_column="issued"))
    with pytest.raises(DataError, match=rf"not dates or times \(row 0: '{loans_sample.loc[0, 'state']}'\)"):
        split_frame(loans_sample, LOANS_TARGET, cfg(method="time", time_column="state"))
    loans_sample.loc[5, "issue_month"] = None
    with pytest.raises(DataError, match="'issue_month' is null in 1 rows \\(first: row 5\\)"):
        split_frame(loans_sample, LOANS_TARGET, cfg(method="time", time_column="issue_month"))
    with pytest.raises(ConfigError, match="split.time_column: 'grade' is the target"):
        split_frame(loans_sample, LOANS_TARGET, cfg(method="time", time_column="grade"))


def test_null_target_and_reserved_label_column_are_refused(loans_sample):
    loans_sample.loc[9, "grade"] = None
    with pytest.raises(DataError, match="null in 1 rows \\(first: row 9\\); run clean_data"):
        split_frame(loans_sample, LOANS_TARGET, cfg())
    with pytest.raises(DataError, match="'__label__' is reserved"):
        split_frame(pd.DataFrame({LABEL: [1, 2], "y": [0, 1]}), TargetSection(column="y"), cfg())


def test_too_few_rows_for_the_sizes():
    with pytest.raises(DataError, match="3 rows are too few"):
        split_frame(pd.DataFrame({"x": [1, 2, 3], "y": [0, 1, 0]}), TargetSection(column="y"), cfg(test_size=0.5, validation_size=0.4))


def test_bad_split_config_is_a_config_error():
    with pytest.raises(ConfigError, match="method: time needs time_column"):
        SplitSection.parse({"method": "time"}, "split")
    with pytest.raises(ConfigError, match="split.test_size"):
        SplitSection.parse({"test_size": 1.5}, "split")


# --- the component ---------------------------------------------------------------------------

def test_component_compiles_with_its_inputs_and_outputs(tmp_path):
    import yaml
    from kfp import compiler

    from keel.components.split import split_data

    path = tmp_path / "c.yaml"
    compiler.Compiler().compile(split_data, str(path))
    component = yaml.safe_load(path.read_text())["components"]["comp-split-data"]
    assert set(component["inputDefinitions"]["artifacts"]) == {"data"}
    assert set(component["inputDefinitions"]["parameters"]) == {"target", "split"}
    assert set(component["outputDefinitions"]["artifacts"]) == {"train", "validation", "test"}
