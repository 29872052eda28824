"""Tests of the clean stage: every row is counted, every rule does what it says."""

import pandas as pd
import pytest

from keel.components._common import tables
from keel.components._common.config import CleanSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components.clean import clean as clean_module
from keel.components.clean.clean import REASON, SOURCE_ROW, clean_frame

LOANS_TARGET = TargetSection(column="grade", positive_values=["D", "E", "F", "G"])
Y = TargetSection(column="y", task="binary")


def cfg(**sections) -> CleanSection:
    return CleanSection.parse(sections, "clean")


def assert_accounted(result, frame):
    """rows_in == rows_out + rows_quarantined, and the quarantine holds the rows as they arrived."""
    stats = result.stats
    assert stats["rows_in"] == len(frame) == stats["rows_out"] + stats["rows_quarantined"]
    assert len(result.cleaned) == stats["rows_out"] and len(result.quarantine) == stats["rows_quarantined"]
    source = result.quarantine[SOURCE_ROW].to_numpy()
    assert len(set(source)) == len(source)
    original = frame.reset_index(drop=True).iloc[source].reset_index(drop=True)
    pd.testing.assert_frame_equal(result.quarantine.drop(columns=[REASON, SOURCE_ROW]), original)


def small(**extra) -> pd.DataFrame:
    base = {
        "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
        "c": ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"],
        "y": [0, 1, 0, 1, 0, 1, 0, 1, 0, 1],
    }
    base.update(extra)
    return pd.DataFrame(base)


# --- the real data ---------------------------------------------------------------------------

def test_loans_defaults_clip_outliers_and_leave_missing_for_the_imputer(loans):
    result = clean_frame(loans, LOANS_TARGET, CleanSection())
    assert_accounted(result, loans)
    assert result.stats["rows_quarantined"] == 0  # no duplicates, no null target in this data
    assert result.stats["values_clipped"] > 0
    # impute = leave NaN for the features stage (fitted on train only): nothing was filled here.
    assert result.stats["values_left_for_imputation"] == int(loans.drop(columns="grade").isna().sum().sum())
    assert result.cleaned["emp_title"].isna().sum() == loans["emp_title"].isna().sum()
    income = result.actions["annual_income"]["outliers"]
    assert income["clipped"] > 0
    assert result.cleaned["annual_income"].max() == pytest.approx(income["upper"])
    assert loans["annual_income"].max() > income["upper"]
    # Mostly-zero counts are not fenced at 0 (IQR 0), and the target is untouched.
    assert "skipped" in result.actions["delinq_2y"]["outliers"]
    assert result.cleaned["delinq_2y"].equals(loans["delinq_2y"])
    assert result.cleaned["grade"].equals(loans["grade"])
    # Clipping an integer column keeps it integer.
    assert result.cleaned["total_credit_lines"].dtype == loans["total_credit_lines"].dtype


@pytest.mark.parametrize(
    "sections",
    [
        {},
        {"outliers": {"action": "quarantine"}},
        {"outliers": {"method": "zscore", "action": "quarantine"}, "missing": {"numeric": "drop"}},
        {"missing": {"categorical": "drop", "numeric": "fill"}, "duplicates": "keep"},
        {"outliers": {"method": "none"}, "missing": {"columns": {"emp_title": "drop", "emp_length": "fill"}}},
    ],
)
def test_every_row_is_accounted_for_on_dirty_real_data(loans_sample, sections):
    dirty = pd.concat([loans_sample, loans_sample.iloc[:25]], ignore_index=True)
    dirty.loc[[30, 70], "grade"] = None  # beyond the duplicated head, so the 25 duplicates stay exact
    result = clean_frame(dirty, LOANS_TARGET, cfg(**sections))
    assert_accounted(result, dirty)
    assert result.stats["rows_target_null"] == 2
    assert result.stats["duplicates"] == 25
    reasons = result.quarantine.set_index(SOURCE_ROW)[REASON]
    assert "target grade is null" in reasons[30]
    assert result.cleaned["grade"].notna().all()


def test_quarantine_and_cleaned_write_as_parquet(loans_sample, tmp_path):
    result = clean_frame(loans_sample, LOANS_TARGET, cfg(missing={"columns": {"emp_title": "drop"}}))
    for name, frame in (("cleaned", result.cleaned), ("quarantine", result.quarantine)):
        meta = tables.write_parquet(frame, str(tmp_path / name))
        assert meta["rows"] == len(frame)
        back = tables.read_parquet(tmp_path / name)
        assert list(back.columns) == list(frame.columns)
    assert set(result.quarantine[REASON]) == {"missing emp_title"}


def test_empty_quarantine_still_has_its_columns(tmp_path):
    result = clean_frame(small(), Y, cfg(outliers={"method": "none"}))
    assert result.quarantine.empty
    assert list(result.quarantine.columns) == ["x", "c", "y", REASON, SOURCE_ROW]
    tables.write_parquet(result.quarantine, str(tmp_path / "q"))
    assert tables.read_parquet(tmp_path / "q").shape == (0, 5)


# --- missing values --------------------------------------------------------------------------

def test_null_target_is_always_quarantined():
    frame = small(y=[0, 1, None, 1, 0, 1, 0, 1, 0, 1])
    result = clean_frame(frame, Y, CleanSection())
    assert_accounted(result, frame)
    assert result.quarantine[REASON].tolist() == ["target y is null"]
    assert result.quarantine[SOURCE_ROW].tolist() == [2]


def test_missing_drop_fill_and_impute_per_type_and_per_column():
    frame = small(
        x=[1.0, None, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
        c=["a", "b", None, "b", "a", "b", "a", "b", "a", "b"],
        z=[1.0, 2.0, 3.0, None, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
    )
    sections = {"missing": {"numeric": "fill", "fill_numeric": -1, "categorical": "drop", "columns": {"z": "impute"}},
                "outliers": {"method": "none"}}
    result = clean_frame(frame, Y, cfg(**sections))
    assert_accounted(result, frame)
    assert result.quarantine[REASON].tolist() == ["missing c"]
    assert result.quarantine[SOURCE_ROW].tolist() == [2]
    assert result.cleaned.loc[1, "x"] == -1  # filled
    assert result.cleaned["z"].isna().sum() == 1  # override: left for the features imputer
    assert result.stats["values_filled"] == 1 and result.stats["values_left_for_imputation"] == 1
    assert result.actions["z"]["missing"]["policy"] == "impute"


def test_fill_categorical_constant_also_fills_category_dtype():
    frame = small(c=pd.Categorical(["a", None, "a", "b", "a", "b", "a", "b", "a", "b"]))
    result = clean_frame(frame, Y, cfg(missing={"categorical": "fill", "fill_categorical": "unknown"}))
    assert result.cleaned.loc[1, "c"] == "unknown"
    assert result.stats["values_filled"] == 1


def test_fill_on_a_datetime_column_is_a_config_error():
    frame = small(t=pd.to_datetime(["2020-01-01", None] + ["2020-01-02"] * 8))
    with pytest.raises(ConfigError, match="'t' is a datetime"):
        clean_frame(frame, Y, cfg(missing={"columns": {"t": "fill"}}))


# --- outliers --------------------------------------------------------------------------------

def test_outlier_quarantine_names_column_value_and_bounds():
    frame = small(x=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 1000.0])
    result = clean_frame(frame, Y, cfg(outliers={"action": "quarantine"}))
    assert_accounted(result, frame)
    (reason,) = result.quarantine[REASON]
    lo, hi = result.actions["x"]["outliers"]["lower"], result.actions["x"]["outliers"]["upper"]
    assert reason == f"outlier x=1000 outside [{lo:.6g}, {hi:.6g}]"
    q1, q3 = frame["x"].quantile([0.25, 0.75])
    assert hi == pytest.approx(q3 + 3.0 * (q3 - q1))


def test_outlier_clip_counts_per_column_and_respects_threshold():
    frame = small(x=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 1000.0], w=[-500.0, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    result = clean_frame(frame, Y, cfg(outliers={"threshold": 1.5}))
    assert result.quarantine.empty
    assert result.actions["x"]["outliers"]["clipped"] == 1 and result.actions["w"]["outliers"]["clipped"] == 1
    assert result.stats["values_clipped"] == 2
    assert result.cleaned["x"].max() == pytest.approx(result.actions["x"]["outliers"]["upper"])
    assert result.cleaned["w"].min() == pytest.approx(result.actions["w"]["outliers"]["lower"])


def test_zscore_uses_mean_and_std():
    values = [10.0 + 0.01 * i for i in range(100)] + [500.0]
    frame = pd.DataFrame({"x": values, "y": [0, 1] * 50 + [0]})
    result = clean_frame(frame, Y, cfg(outliers={"method": "zscore", "threshold": 3, "action": "quarantine"}))
    series = pd.Series(values)
    assert result.actions["x"]["outliers"]["upper"] == pytest.approx(series.mean() + 3 * series.std(ddof=0))
    assert result.quarantine[SOURCE_ROW].tolist() == [100]


def test_outliers_skip_binary_and_constant_columns_and_never_touch_the_target():
    frame = pd.DataFrame({
        "flag": [0] * 95 + [1] * 5,
        "const": [7.0] * 100,
        "x": list(range(100)),
        "y": [1.0] * 99 + [1e9],  # a regression target with an extreme value
    })
    result = clean_frame(frame, TargetSection(column="y", task="regression"), cfg(outliers={"action": "quarantine"}))
    assert result.quarantine.empty
    assert result.actions["flag"]["outliers"] == {"skipped": "binary or constant"}
    assert result.actions["const"]["outliers"] == {"skipped": "binary or constant"}
    assert "y" not in result.actions
    assert result.cleaned["y"].max() == 1e9


def test_nullable_integer_columns_are_fenced_and_keep_their_dtype():
    frame = small(n=pd.array([1, 2, 3, 4, None, 6, 7, 8, 9, 1000], dtype="Int64"))
    result = clean_frame(frame, Y, cfg(outliers={"columns": ["n"], "action": "quarantine"}))
    assert result.quarantine[SOURCE_ROW].tolist() == [9]
    clipped = clean_frame(frame, Y, cfg(outliers={"columns": ["n"]}))
    assert clipped.cleaned["n"].dtype == "Int64"
    assert clipped.cleaned["n"].max() == clipped.actions["n"]["outliers"]["upper"]
    assert clipped.cleaned["n"].isna().sum() == 1


def test_outliers_only_on_listed_columns():
    frame = small(x=[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 1000], w=[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 1000])
    result = clean_frame(frame, Y, cfg(outliers={"columns": ["w"]}))
    assert result.cleaned["x"].max() == 1000
    assert result.cleaned["w"].max() < 1000
    assert "outliers" not in result.actions.get("x", {})


# --- duplicates and several reasons ----------------------------------------------------------

def test_duplicates_name_the_first_occurrence_unless_kept():
    frame = pd.concat([small(), small().iloc[[4, 4]]], ignore_index=True)
    result = clean_frame(frame, Y, cfg(outliers={"method": "none"}))
    assert_accounted(result, frame)
    assert result.quarantine[REASON].tolist() == ["duplicate of row 4", "duplicate of row 4"]
    assert result.quarantine[SOURCE_ROW].tolist() == [10, 11]
    kept = clean_frame(frame, Y, cfg(duplicates="keep", outliers={"method": "none"}))
    assert len(kept.cleaned) == 12 and kept.stats["duplicates"] == 2


def test_nulls_count_as_equal_when_finding_duplicates():
    frame = small(x=[None, None, 3, 4, 5, 6, 7, 8, 9, 10.0], c=["a", "a", "a", "b", "a", "b", "a", "b", "a", "b"],
                  y=[0, 0, 0, 1, 0, 1, 0, 1, 0, 1])
    result = clean_frame(frame, Y, cfg(outliers={"method": "none"}))
    assert result.quarantine[REASON].tolist() == ["duplicate of row 0"]


def test_a_row_hit_by_several_rules_has_one_entry_with_all_reasons():
    frame = small(x=[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 1000], c=["a", "b", "a", "b", "a", "b", "a", "b", "a", None],
                  y=[0, 1, 0, 1, 0, 1, 0, 1, 0, None])
    result = clean_frame(frame, Y, cfg(outliers={"action": "quarantine"}, missing={"categorical": "drop"}))
    assert_accounted(result, frame)
    assert len(result.quarantine) == 1
    reason = result.quarantine.loc[0, REASON]
    assert reason.split("; ")[0] == "target y is null"
    assert reason.split("; ")[1] == "missing c"
    assert reason.split("; ")[2].startswith("outlier x=1000 outside [")
    assert result.quarantine.loc[0, "x"] == 1000  # original values, not clipped


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "sections, message",
    [
        ({"missing": {"columns": {"nope": "drop"}}}, "clean.missing.columns: 'nope' is not a column"),
        ({"outliers": {"columns": ["nope"]}}, "clean.outliers.columns: 'nope' is not a column"),
        ({"outliers": {"columns": ["c"]}}, "clean.outliers.columns: 'c' is not numeric"),
        ({"outliers": {"columns": ["y"]}}, "'y' is the target"),
        ({"missing": {"columns": {"y": "fill"}}}, "'y' is the target"),
    ],
)
def test_bad_column_config_names_the_column(sections, message):
    with pytest.raises(ConfigError, match=message):
        clean_frame(small(), Y, cfg(**sections))


def test_bad_section_values_are_config_errors():
    with pytest.raises(ConfigError, match="clean.outliers.method"):
        CleanSection.parse({"outliers": {"method": "mad"}}, "clean")
    with pytest.raises(ConfigError, match="clean.duplicate: unknown key"):
        CleanSection.parse({"duplicate": "keep"}, "clean")


def test_missing_target_column_is_a_data_error():
    with pytest.raises(DataError, match="target.column: 'label' is not a column"):
        clean_frame(small(), TargetSection(column="label"), CleanSection())


def test_reserved_quarantine_columns_in_the_input_are_refused():
    with pytest.raises(DataError, match=r"\['_source_row'\] are reserved"):
        clean_frame(small(_source_row=range(10)), Y, CleanSection())


def test_quarantining_every_row_is_a_data_error_with_the_main_reason():
    frame = small(c=[None] * 10)
    frame.loc[0, "c"] = "a"
    frame = frame.iloc[1:]
    with pytest.raises(DataError, match="all 9 rows were quarantined.*'missing c'"):
        clean_frame(frame, Y, cfg(missing={"categorical": "drop"}))


def test_lost_rows_raise_an_internal_error(monkeypatch):
    real = clean_module._apply_to_kept

    def losing(kept, *args):
        counts = real(kept, *args)
        kept.drop(index=kept.index[0], inplace=True)
        return counts

    monkeypatch.setattr(clean_module, "_apply_to_kept", losing)
    with pytest.raises(RuntimeError, match="internal error: clean lost rows"):
        clean_frame(small(), Y, CleanSection())


# --- the component ---------------------------------------------------------------------------

def test_component_compiles_with_its_inputs_and_outputs(tmp_path):
    import yaml
    from kfp import compiler

    from keel.components.clean import clean_data

    path = tmp_path / "c.yaml"
    compiler.Compiler().compile(clean_data, str(path))
    spec = yaml.safe_load(path.read_text())
    component = spec["components"]["comp-clean-data"]
    assert set(component["inputDefinitions"]["artifacts"]) == {"data"}
    assert set(component["inputDefinitions"]["parameters"]) == {"target", "clean"}
    outputs = component["outputDefinitions"]["artifacts"]
    assert set(outputs) == {"cleaned", "quarantine", "stats"}
    assert outputs["stats"]["artifactType"]["schemaTitle"] == "system.Metrics"
