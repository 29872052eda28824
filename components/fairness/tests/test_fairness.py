"""assess_fairness: group metrics on hand-computed cases, intervals, the gate, small groups, mitigation, the component."""

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from keel.components._common import tables
from keel.components._common.config import EvaluationSection, FairnessSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import LABEL
from keel.components.fairness import intervals
from keel.components._common.governance.fairness_views import card_figures, card_summary
from keel.components.fairness.fairness import (
    MISSING_GROUP, assess, group_labels, render_report,
)

BINARY = TargetSection(column="default")
MULTICLASS = TargetSection(column="grade", task="multiclass")
REGRESSION = TargetSection(column="rate", task="regression")
EVAL = EvaluationSection()


# ---- models: real sklearn Pipelines on frames made here -----------------------------------------


def echo_model():
    """A fitted tree whose decision is its `decision` input, so a test sets the predictions row by row."""
    train = pd.DataFrame({"decision": [0, 1] * 10})
    return make_pipeline(DecisionTreeClassifier(max_depth=1)).fit(train, train["decision"])


def echo_frame(groups, y_true, y_pred) -> pd.DataFrame:
    return pd.DataFrame({"decision": y_pred, "home": groups, LABEL: y_true})


def loans(n: int, seed: int, biased: bool) -> pd.DataFrame:
    """Loans with an income score and a home group; when biased, the label (and so the model) favours OWN."""
    rng = np.random.default_rng(seed)
    home = rng.choice(["OWN", "RENT"], n)
    income = rng.normal(size=n)
    lift = 1.5 * (home == "OWN") if biased else 0.0
    label = (income + lift + rng.normal(size=n) > 0.75).astype(int)
    return pd.DataFrame({"income": income, "home": home, LABEL: label})


def fit(frame: pd.DataFrame, columns: list[str]):
    transforms = [(StandardScaler(), ["income"])] + ([(OneHotEncoder(handle_unknown="ignore"), ["home"])] if "home" in columns else [])
    model = make_pipeline(make_column_transformer(*transforms), LogisticRegression())
    return model.fit(frame[columns], frame[LABEL])


@pytest.fixture(scope="module")
def biased():
    """A model that uses the sensitive column itself (fairness.use_in_training), trained on biased labels."""
    model = fit(loans(3000, 0, biased=True), ["income", "home"])
    return {"model": model, "test": loans(2000, 1, biased=True), "validation": loans(1000, 2, biased=True),
            "info": {"task": "binary", "classes": [0, 1], "input_columns": ["income", "home"]}}


@pytest.fixture(scope="module")
def fair():
    """A model that never sees the sensitive column, on labels that do not depend on it."""
    model = fit(loans(3000, 3, biased=False), ["income"])
    return {"model": model, "test": loans(2000, 4, biased=False), "validation": loans(1000, 5, biased=False),
            "info": {"task": "binary", "classes": [0, 1], "input_columns": ["income"]}}


@pytest.fixture(scope="module")
def mitigated(biased):
    """The biased model gated on the four-fifths rule, with ThresholdOptimizer's before/after."""
    section = FairnessSection(sensitive=["home"], min={"demographic_parity_ratio": 0.8},
                              mitigation={"method": "threshold_optimizer"})
    return run(biased, section)


def run(case, section: FairnessSection, test=None, validation=None, target=BINARY):
    return assess(case["model"], case["test"] if test is None else test,
                  case["validation"] if validation is None else validation, target, EVAL, section, case["info"])


# ---- group metrics against hand computation --------------------------------------------------


HAND = echo_frame(["a"] * 4 + ["b"] * 4, [1, 1, 0, 0, 1, 1, 0, 0], [1, 1, 1, 0, 1, 0, 0, 0])


def test_group_rates_and_disparities_match_hand_computation():
    result = assess(echo_model(), HAND, HAND, BINARY, EVAL, FairnessSection(sensitive=["home"], min_group_size=1), {})
    attribute = result.attributes["home"]
    a, b = attribute["groups"]
    assert (a["group"], a["n"], b["group"], b["n"]) == ("a", 4, "b", 4)
    # a: predicted [1,1,1,0] for labels [1,1,0,0]; b: predicted [1,0,0,0].
    assert a["selection_rate"]["value"] == 0.75 and b["selection_rate"]["value"] == 0.25
    assert a["true_positive_rate"]["value"] == 1.0 and b["true_positive_rate"]["value"] == 0.5
    assert a["false_positive_rate"]["value"] == 0.5 and b["false_positive_rate"]["value"] == 0.0
    assert a["precision"]["value"] == pytest.approx(2 / 3) and b["precision"]["value"] == 1.0
    # Each rate's interval is over its own denominator: precision over the predicted positives.
    assert (a["selection_rate"]["n"], a["true_positive_rate"]["n"], a["false_positive_rate"]["n"], a["precision"]["n"]) == (4, 2, 2, 3)
    assert (a["selection_rate"]["low"], a["selection_rate"]["high"]) == pytest.approx(intervals.wilson(3, 4, 0.95))
    assert attribute["overall"]["selection_rate"]["value"] == 0.5 and attribute["overall"]["n"] == 8
    d = {k: v["value"] for k, v in attribute["disparities"].items()}
    assert d["demographic_parity_difference"] == pytest.approx(0.5)
    assert d["demographic_parity_ratio"] == pytest.approx(1 / 3)
    assert d["equalized_odds_difference"] == pytest.approx(0.5)  # TPR 1 vs 0.5, FPR 0.5 vs 0: both 0.5
    assert d["equalized_odds_ratio"] == pytest.approx(0.0)  # FPR 0 / 0.5
    assert result.four_fifths == {"home": False}


def test_wilson_interval_matches_the_formula_by_hand():
    # p = 0.8, n = 10, z = 1.959964: centre (p + z²/2n) / (1 + z²/n), half-width z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n).
    low, high = intervals.wilson(8, 10, 0.95)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert intervals.wilson(0, 0, 0.95) == (None, None)
    narrow = intervals.wilson(8, 10, 0.80)
    assert low < narrow[0] < narrow[1] < high


def test_a_rate_with_no_denominator_is_none_and_missing_values_are_a_group():
    groups = ["a", "a", None, None]
    frame = echo_frame(groups, [1, 0, 0, 0], [0, 0, 0, 0])
    result = assess(echo_model(), frame, frame, BINARY, EVAL, FairnessSection(sensitive=["home"], min_group_size=1), {})
    rows = {r["group"]: r for r in result.attributes["home"]["groups"]}
    assert set(rows) == {"a", MISSING_GROUP}
    assert rows["a"]["precision"] == {"value": None, "low": None, "high": None, "n": 0}  # nothing predicted positive
    assert rows[MISSING_GROUP]["true_positive_rate"]["value"] is None  # no positive labels
    # With a group lacking positive labels, equalized odds is undefined rather than a spurious gap.
    assert "no positive labels" in result.attributes["home"]["disparities"]["equalized_odds_difference"]["skipped"]
    assert result.attributes["home"]["disparities"]["demographic_parity_difference"]["value"] == 0.0


def test_group_labels_name_integer_floats_as_written():
    assert list(group_labels(pd.Series([1.0, np.nan, 2.0]))) == ["1", MISSING_GROUP, "2"]


def test_vectorised_disparities_equal_fairlearn_and_the_bootstrap_is_seeded():
    from fairlearn import metrics as fm

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 2000), rng.integers(0, 2, 2000)
    g = rng.choice(np.array(["a", "b", "c"], dtype=object), 2000, p=[0.5, 0.3, 0.2])
    cells = intervals.binary_cells(y, p, g, ["a", "b", "c"])
    observed = intervals.binary_disparities(cells)
    for name in intervals.BINARY_DISPARITIES:
        assert float(observed[name]) == pytest.approx(getattr(fm, name)(y, p, sensitive_features=g))
    first = intervals.bootstrap_binary(cells, 500, np.random.default_rng(7))
    again = intervals.bootstrap_binary(cells, 500, np.random.default_rng(7))
    for name in intervals.BINARY_DISPARITIES:
        assert first[name].shape == (500,) and np.array_equal(first[name], again[name])
        low, high = intervals.percentile_interval(first[name], 0.95)
        assert 0 <= low <= high <= 1


# ---- the gate ---------------------------------------------------------------------------------


def test_a_model_biased_on_purpose_is_blocked_by_the_four_fifths_rule(biased):
    result = run(biased, FairnessSection(sensitive=["home"], min={"demographic_parity_ratio": 0.8}))
    assert result.passed is False and len(result.failures) == 1
    line = result.failures[0]
    assert line.startswith("home: demographic_parity_ratio ") and line.endswith(" < 0.8 (four-fifths rule)")
    ratio = result.attributes["home"]["disparities"]["demographic_parity_ratio"]
    assert ratio["value"] < 0.8 and ratio["low"] <= ratio["value"] <= ratio["high"]
    assert result.four_fifths == {"home": False}
    assert result.gate == {"passed": False, "failures": result.failures, "min": {"demographic_parity_ratio": 0.8}, "max": {}}


def test_a_fair_model_passes_and_max_limits_are_checked(fair):
    section = FairnessSection(sensitive=["home"], min={"demographic_parity_ratio": 0.8, "equalized_odds_ratio": 0.5},
                              max={"demographic_parity_difference": 0.1})
    result = run(fair, section)
    assert result.passed is True and result.failures == [] and result.four_fifths == {"home": True}
    strict = run(fair, FairnessSection(sensitive=["home"], max={"equalized_odds_difference": 0.0}))
    assert strict.passed is False and strict.failures[0].startswith("home: equalized_odds_difference ")
    assert strict.failures[0].endswith(" > 0")


def test_without_sensitive_columns_the_gate_passes_and_the_report_says_how_to_configure(fair):
    result = run(fair, FairnessSection())
    assert result.passed is True and result.attributes == {} and result.to_dict()["mitigation"] is None
    html = render_report(result.to_dict())
    assert "No sensitive attribute was configured" in html and "fairness.sensitive" in html and "--sensitive COLUMN" in html
    assert card_summary(result.to_dict()) == [] and card_figures(result.to_dict()) == []


def test_small_groups_are_reported_flagged_and_left_out_of_the_gate(biased):
    from fairlearn.metrics import demographic_parity_ratio

    test = biased["test"].copy()
    test.loc[:9, "home"] = "MORTGAGE"  # 10 rows: below min_group_size 30
    result = run(biased, FairnessSection(sensitive=["home"]), test=test)
    attribute = result.attributes["home"]
    assert attribute["excluded_groups"] == ["MORTGAGE"] and attribute["gate_groups"] == ["OWN", "RENT"]
    rows = {r["group"]: r for r in attribute["groups"]}
    assert rows["MORTGAGE"]["n"] == 10 and rows["MORTGAGE"]["included"] is False and rows["OWN"]["included"] is True
    kept = test["home"] != "MORTGAGE"
    y_pred = (biased["model"].predict_proba(test[["income", "home"]])[:, 1] >= 0.5).astype(int)
    expected = demographic_parity_ratio(test[LABEL][kept], y_pred[kept], sensitive_features=test["home"][kept])
    assert attribute["disparities"]["demographic_parity_ratio"]["value"] == pytest.approx(expected)
    html = render_report(result.to_dict())
    assert "Small groups" in html and "MORTGAGE (n=10)" in html


def test_the_gate_fails_closed_when_fewer_than_two_groups_are_large_enough(biased):
    test = biased["test"].copy()
    test.loc[20:, "home"] = "RENT"  # OWN keeps at most 20 rows
    section = FairnessSection(sensitive=["home"], min={"demographic_parity_ratio": 0.8})
    result = run(biased, section, test=test)
    assert result.passed is False and len(result.failures) == 1
    assert result.failures[0].startswith("home: demographic_parity_ratio not computed (only 1 group ('RENT') of 2 has at least 30")
    assert "lower fairness.min_group_size or gather more data" in result.failures[0]
    assert all("skipped" in d for d in result.attributes["home"]["disparities"].values())
    assert result.four_fifths == {"home": None} and result.scalars() == {}
    ungated = run(biased, FairnessSection(sensitive=["home"]), test=test)
    assert ungated.passed is True  # nothing to gate: reported, not failed


# ---- config and data errors ---------------------------------------------------------------------


def test_gate_metrics_and_mitigation_on_a_non_binary_target_are_config_errors(fair):
    with pytest.raises(ConfigError, match=r"^fairness.min: demographic_parity_ratio gate binary classifiers only, "
                                          r"but target.task is 'regression'"):
        assess(None, fair["test"], fair["validation"], REGRESSION, EVAL,
               FairnessSection(sensitive=["home"], min={"demographic_parity_ratio": 0.8}), {})
    with pytest.raises(ConfigError, match=r"^fairness.max: equalized_odds_difference .* target.task is 'multiclass'"):
        assess(None, fair["test"], fair["validation"], MULTICLASS, EVAL,
               FairnessSection(sensitive=["home"], max={"equalized_odds_difference": 0.1}), {})
    with pytest.raises(ConfigError, match=r"^fairness.mitigation.method: threshold_optimizer .* 'multiclass'; set it to none"):
        assess(None, fair["test"], fair["validation"], MULTICLASS, EVAL,
               FairnessSection(sensitive=["home"], mitigation={"method": "threshold_optimizer"}), {})


def test_a_sensitive_column_missing_from_the_test_split_is_a_data_error(fair):
    with pytest.raises(DataError, match=r"^test: sensitive column 'race' \(fairness.sensitive\) is not in the test split; "
                                        r"columns present: income, home\."):
        run(fair, FairnessSection(sensitive=["race"]))


# ---- multiclass and regression -------------------------------------------------------------------


def test_multiclass_reports_accuracy_per_group_and_its_spread():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"income": rng.normal(size=600), "home": rng.choice(["OWN", "RENT"], 600)})
    frame[LABEL] = np.digitize(frame["income"] + 0.5 * (frame["home"] == "OWN"), [-0.5, 0.5])
    model = fit(frame, ["income"])
    result = assess(model, frame, frame, MULTICLASS, EVAL, FairnessSection(sensitive=["home"]),
                    {"task": "multiclass", "classes": [0, 1, 2], "input_columns": ["income"]})
    attribute = result.attributes["home"]
    pred = model.predict(frame[["income"]])
    own = (frame["home"] == "OWN").to_numpy()
    acc = {g["group"]: g["accuracy"] for g in attribute["groups"]}
    assert acc["OWN"]["value"] == pytest.approx(np.mean(pred[own] == frame[LABEL][own]))
    assert acc["OWN"]["low"] < acc["OWN"]["value"] < acc["OWN"]["high"]
    spread = attribute["disparities"]["accuracy_difference"]
    assert spread["value"] == pytest.approx(abs(acc["OWN"]["value"] - acc["RENT"]["value"]))
    assert result.passed and result.four_fifths == {"home": None} and set(result.scalars()) == {"home.accuracy_difference"}


def test_regression_reports_mae_per_group_with_bootstrap_intervals():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"income": rng.normal(size=400), "home": rng.choice(["OWN", "RENT"], 400)})
    frame[LABEL] = 2 * frame["income"] + rng.normal(size=400) * np.where(frame["home"] == "OWN", 0.1, 1.0)
    model = make_pipeline(LinearRegression()).fit(frame[["income"]], frame[LABEL])
    result = assess(model, frame, frame, REGRESSION, EVAL, FairnessSection(sensitive=["home"]), {"task": "regression"})
    mae = {g["group"]: g["mae"] for g in result.attributes["home"]["groups"]}
    assert mae["OWN"]["value"] < mae["RENT"]["value"]
    assert mae["RENT"]["low"] < mae["RENT"]["value"] < mae["RENT"]["high"]
    assert result.attributes["home"]["disparities"]["mae_difference"]["value"] == pytest.approx(
        mae["RENT"]["value"] - mae["OWN"]["value"])
    assert "Attribute: home" in render_report(result.to_dict())


# ---- mitigation --------------------------------------------------------------------------------


def test_threshold_optimizer_improves_demographic_parity_and_is_only_reported(mitigated):
    result = mitigated
    mitigation = result.mitigation
    assert mitigation["status"] == "computed" and mitigation["applied"] is False and mitigation["attribute"] == "home"
    before = mitigation["before"]["disparities"]["demographic_parity_ratio"]["value"]
    after = mitigation["after"]["disparities"]["demographic_parity_ratio"]["value"]
    assert before < 0.8 <= after
    assert before == result.attributes["home"]["disparities"]["demographic_parity_ratio"]["value"]
    assert 0 < mitigation["after"]["accuracy"] <= 1 and "never applied" in mitigation["note"]
    assert result.passed is False  # the gate judges the model as it will be registered, not the mitigated one
    assert result.to_dict()["mitigation"]["after"]["groups"][0]["group"] == "OWN"


def test_mitigation_is_not_computed_when_the_validation_split_cannot_fit_it(biased):
    section = FairnessSection(sensitive=["home"], mitigation={"method": "threshold_optimizer"})
    only_own = biased["validation"][biased["validation"]["home"] == "OWN"]
    result = run(biased, section, validation=only_own)
    assert result.mitigation["status"] == "not computed"
    assert result.mitigation["reason"].startswith("group(s) ['RENT'] of 'home' are in the test split but not in the validation")
    empty = run(biased, section, validation=biased["validation"].iloc[:0])
    assert empty.mitigation["reason"] == "the validation split has no rows; raise split.validation_size"
    assert "Not computed: the validation split has no rows" in render_report(empty.to_dict())


# ---- JSON, report, card ------------------------------------------------------------------------


def test_result_json_report_and_card_pieces(mitigated):
    data = json.loads(json.dumps(mitigated.to_dict(), allow_nan=False))  # as KFP metadata stores it
    assert set(data) >= {"task", "sensitive", "attributes", "gate", "four_fifths", "mitigation"}
    assert set(data["attributes"]["home"]) >= {"groups", "disparities", "excluded_groups"}
    assert data["gate"]["passed"] is False and data["four_fifths"] == {"home": False}

    html = render_report(data, {"family": "logistic_regression"})
    assert html.startswith("<!doctype html>") and 'class="fail">FAILED' in html
    for heading in ("Result", "Limits", "Four-fifths rule", "Attribute: home", "Disparities between groups", "Mitigation", "Method"):
        assert f">{heading}</h" in html
    assert "&lt; 0.8 (four-fifths rule)" in html and "NOT met (adverse impact)" in html
    assert "http://" not in html and "https://" not in html and html.count("data:image/png;base64,") == 2

    rows = card_summary(data)
    assert [r["metric"] for r in rows] == list(intervals.BINARY_DISPARITIES)
    gated = rows[1]
    assert gated["attribute"] == "home" and gated["limit"] == "min 0.8" and gated["result"] == "FAIL"
    assert gated["interval"].startswith("[") and rows[0]["result"] == "not gated"
    figures = card_figures(data)
    assert len(figures) == 2 and all(f.startswith("<figure><img") for f in figures)


def test_scalars_are_named_by_column_and_metric(mitigated):
    assert set(mitigated.scalars()) == {f"home.{m}" for m in intervals.BINARY_DISPARITIES}


# ---- the component ----------------------------------------------------------------------------


def _artifacts(case, tmp_path):
    from kfp import dsl

    joblib.dump(case["model"], tmp_path / "model.joblib")
    tables.write_parquet(case["test"], str(tmp_path / "test.parquet"))
    tables.write_parquet(case["validation"], str(tmp_path / "validation.parquet"))
    return {
        "trained_model": dsl.Model(uri=str(tmp_path / "model.joblib"), metadata={**case["info"], "content_hash": "sha256:m"}),
        "test": dsl.Dataset(uri=str(tmp_path / "test.parquet"), metadata={"content_hash": "sha256:t"}),
        "validation": dsl.Dataset(uri=str(tmp_path / "validation.parquet"), metadata={"content_hash": "sha256:v"}),
        "metrics": dsl.Metrics(uri=str(tmp_path / "out" / "metrics")),
        "report": dsl.HTML(uri=str(tmp_path / "out" / "report.html")),
    }


def test_component_runs_on_saved_artifacts_and_writes_metrics_and_report(biased, tmp_path):
    from keel.components.fairness import assess_fairness

    arts = _artifacts(biased, tmp_path)
    fairness = {"sensitive": ["home"], "min": {"demographic_parity_ratio": 0.8}}
    passed = assess_fairness.python_func(**arts, target=BINARY.model_dump(), evaluation={}, fairness=fairness)
    metrics, report = arts["metrics"], arts["report"]
    assert passed is False
    assert metrics.metadata["gate"]["passed"] is False and metrics.metadata["gate"]["min"] == {"demographic_parity_ratio": 0.8}
    assert metrics.metadata["fairness"]["attributes"]["home"]["excluded_groups"] == []
    assert 0 < metrics.metadata["home.demographic_parity_ratio"] < 0.8
    assert [p["name"] for p in metrics.metadata["parents"]] == ["trained_model", "test", "validation"]
    assert [p["content_hash"] for p in metrics.metadata["parents"]] == ["sha256:m", "sha256:t", "sha256:v"]
    assert metrics.metadata["params"]["min_group_size"] == 30 and metrics.metadata["content_hash"].startswith("sha256:")
    assert json.loads(Path(metrics.path).read_text())["gate"]["passed"] is False  # written for caching and download
    html = Path(report.path).read_text()
    assert "Attribute: home" in html and report.metadata["passed"] is False
    assert report.metadata["content_hash"].startswith("sha256:")

    with pytest.raises(SystemExit) as exc:  # a bad config field is one line and exit 2
        assess_fairness.python_func(**arts, target=BINARY.model_dump(), evaluation={}, fairness={"sensitiv": ["home"]})
    assert exc.value.code == 2


def test_component_compiles_with_its_inputs_outputs_and_boolean_result(tmp_path):
    import yaml
    from kfp import compiler

    from keel.components.fairness import assess_fairness

    compiler.Compiler().compile(assess_fairness, str(tmp_path / "c.yaml"))
    spec = yaml.safe_load((tmp_path / "c.yaml").read_text())["components"]["comp-assess-fairness"]
    assert set(spec["inputDefinitions"]["artifacts"]) == {"trained_model", "test", "validation"}
    assert set(spec["inputDefinitions"]["parameters"]) == {"target", "evaluation", "fairness"}
    outputs = spec["outputDefinitions"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in outputs["artifacts"].items()} == {
        "metrics": "system.Metrics", "report": "system.HTML"}
    assert outputs["parameters"]["Output"]["parameterType"] == "BOOLEAN"
