"""evaluate_model logic: metrics on hand-computed cases, the gate, ROC sanitising, the three task paths, the report."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from keel.components._common import tables
from testkit.models import stage_inputs
from keel.components._common.config import EvaluationSection, ModelSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import LABEL
from keel.components._common.evaluation import metrics as m
from keel.components._common.evaluation.scoring import class_names
from keel.components.evaluate.evaluate import evaluate, evaluate_files, render_report

BINARY = TargetSection(column="grade", positive_values=["D", "E", "F", "G"])
MULTICLASS = TargetSection(column="grade", task="multiclass")
REGRESSION = TargetSection(column="interest_rate", task="regression")


# ---- metrics on cases small enough to compute by hand -----------------------------------------


def test_binary_metrics_match_hand_computation():
    y, score = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]  # predicted at 0.5: [0, 1, 0, 1]
    values, skipped = m.binary_metrics(y, score, threshold=0.5)
    assert skipped == {}
    assert list(values) == list(m.BINARY)
    assert values["accuracy"] == 0.5 and values["precision"] == 0.5 and values["recall"] == 0.5 and values["f1"] == 0.5
    assert values["roc_auc"] == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs are ranked right
    assert values["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # AP: recall steps at precision 1, then 2/3
    assert values["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)
    assert values["log_loss"] == pytest.approx(-(2 * math.log(0.9) + 2 * math.log(0.4)) / 4)


def test_decision_threshold_moves_the_hard_predictions_only():
    y, score = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]
    low, _ = m.binary_metrics(y, score, threshold=0.3)  # predicted: [0, 1, 1, 1]
    assert low["precision"] == pytest.approx(2 / 3) and low["recall"] == 1.0
    assert low["roc_auc"] == pytest.approx(0.75)


def test_binary_with_one_class_skips_ranking_metrics_with_a_reason():
    values, skipped = m.binary_metrics([0, 0, 0], [0.2, 0.7, 0.1])
    assert "roc_auc" not in values and "pr_auc" not in values
    assert skipped["roc_auc"] == "needs both classes in the labels"
    assert values["accuracy"] == pytest.approx(2 / 3)


def test_binary_without_probabilities_reports_hard_metrics_only():
    values, skipped = m.binary_metrics([0, 1, 1, 0], None, y_pred=[0, 1, 0, 0])
    assert set(values) == {"accuracy", "precision", "recall", "f1"}
    assert values["precision"] == 1.0 and values["recall"] == 0.5
    assert set(skipped) == {"roc_auc", "pr_auc", "log_loss", "brier"}


def test_multiclass_metrics_match_hand_computation():
    y, pred = [0, 1, 2, 2], [0, 2, 2, 1]
    proba = np.eye(3)[pred] * 0.7 + 0.1  # rows sum to 1
    values, skipped = m.multiclass_metrics(y, pred, proba, n_classes=3)
    assert skipped == {}
    assert values["accuracy"] == 0.5
    assert values["recall_macro"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert values["precision_macro"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert values["recall_weighted"] == pytest.approx((1 * 1 + 0 * 1 + 0.5 * 2) / 4)
    assert values["log_loss"] == pytest.approx(-(2 * math.log(0.8) + 2 * math.log(0.1)) / 4)
    assert 0 <= values["roc_auc"] <= 1
    assert set(values) == set(m.MULTICLASS)


def test_multiclass_roc_auc_is_skipped_when_a_class_has_no_rows():
    values, skipped = m.multiclass_metrics([0, 1, 1], [0, 1, 0], np.full((3, 3), 1 / 3), n_classes=3)
    assert "roc_auc" not in values and "[2]" in skipped["roc_auc"]
    assert m.confusion([0, 1, 1], [0, 1, 0], 3) == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]


def test_regression_metrics_match_hand_computation():
    values, skipped = m.regression_metrics([1, 2, 3, 4], [1, 2, 3, 5])
    assert values == pytest.approx({"mae": 0.25, "rmse": 0.5, "r2": 1 - 1 / 5, "mape": 0.25 / 4})
    assert skipped == {}


def test_mape_is_left_out_when_a_target_is_zero():
    values, skipped = m.regression_metrics([0.0, 2.0, 3.0], [0.1, 2.0, 3.0])
    assert "mape" not in values and "zero" in skipped["mape"]
    assert values["mae"] == pytest.approx(0.1 / 3)


def test_compute_renormalises_float32_probabilities():
    proba = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], dtype=np.float32) * np.float32(1.0000001)
    values, _ = m.compute("multiclass", [2, 0], y_pred=[2, 0], proba=proba, n_classes=3)
    assert values["log_loss"] == pytest.approx(-(math.log(0.5) + math.log(0.6)) / 2, rel=1e-5)


# ---- ROC points for KFP -----------------------------------------------------------------------


def test_roc_points_replace_the_infinite_first_threshold():
    fpr, tpr, thresholds = m.roc_points([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    assert len(fpr) == len(tpr) == len(thresholds)
    assert all(math.isfinite(t) for t in thresholds)
    assert thresholds[0] > 1.0 and thresholds[0] == np.nextafter(1.0, 2.0)  # above every probability, as inf meant
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    json.dumps([fpr, tpr, thresholds], allow_nan=False)


def test_roc_points_are_thinned_to_the_limit_keeping_both_ends():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    score = np.clip(y * 0.2 + rng.random(5000) * 0.8, 0, 1)
    fpr, tpr, thresholds = m.roc_points(y, score)
    assert len(fpr) <= m.MAX_ROC_POINTS and len(fpr) > 100
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert thresholds == sorted(thresholds, reverse=True)


# ---- the gate ---------------------------------------------------------------------------------


def test_gate_passes_and_fails_with_readable_lines():
    values = {"roc_auc": 0.71, "accuracy": 0.9, "log_loss": 0.5}
    assert m.gate(values, EvaluationSection(min={"roc_auc": 0.7}, max={"log_loss": 0.6}), "binary") == (True, [])
    passed, failures = m.gate(values, EvaluationSection(min={"roc_auc": 0.75, "accuracy": 0.8}, max={"log_loss": 0.4}), "binary")
    assert passed is False
    assert failures == ["roc_auc 0.71 < min 0.75", "log_loss 0.5 > max 0.4"]


def test_gate_fails_closed_when_a_gated_metric_could_not_be_computed():
    passed, failures = m.gate({"accuracy": 1.0}, EvaluationSection(min={"roc_auc": 0.5}), "binary",
                              {"roc_auc": "needs both classes in the labels"})
    assert passed is False
    assert failures == ["roc_auc not available (needs both classes in the labels), so min 0.5 cannot be confirmed"]


@pytest.mark.parametrize("task, section, where", [
    ("regression", EvaluationSection(min={"roc_auc": 0.7}), "evaluation.min.roc_auc"),
    ("binary", EvaluationSection(max={"rmse": 2.0}), "evaluation.max.rmse"),
    ("multiclass", EvaluationSection(min={"f1": 0.5}), "evaluation.min.f1"),
])
def test_a_threshold_on_a_metric_the_task_lacks_is_a_config_error(task, section, where):
    with pytest.raises(ConfigError) as err:
        m.gate({}, section, task)
    assert str(err.value) == f"{where}: not a metric for {task}; available: {', '.join(m.available_metrics(task))}"


def test_available_metrics_per_task():
    assert m.available_metrics("binary") == ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier")
    assert {"f1_macro", "f1_weighted", "roc_auc"} <= set(m.available_metrics("multiclass"))
    assert m.available_metrics("regression") == ("mae", "rmse", "r2", "mape")
    with pytest.raises(ConfigError, match="^target.task: 'ranking' is not one of"):
        m.available_metrics("ranking")


# ---- end to end on the real data, through a model train_model built ---------------------------


def _trained(frame: pd.DataFrame, label: pd.Series, target: TargetSection, classes, family="xgboost") -> dict:
    from keel.components._common.training.fit import fit

    inputs = stage_inputs(frame, label, validation=False)
    params = {"n_estimators": 20} if family == "xgboost" else {}
    trained = fit(inputs["train_features"], inputs["validation_features"], inputs["transformer"], target,
                  ModelSection(family=family, params=params), classes)
    return {"pipeline": trained.pipeline, "info": trained.metadata, "test": inputs["test"]}


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def frame(loans):
    return loans.sample(n=1200, random_state=1).reset_index(drop=True)


@pytest.fixture(scope="module")
def binary(frame):
    return _trained(frame, frame["grade"].isin(BINARY.positive_values).astype(int), BINARY, ["good", "risky"])


@pytest.fixture(scope="module")
def multiclass(frame):
    return _trained(frame, frame["grade"].map({"A": 0, "B": 1, "C": 2}).fillna(3).astype(int), MULTICLASS, ["A", "B", "C", "D+"])


@pytest.fixture(scope="module")
def regression(frame):
    return _trained(frame, frame["interest_rate"].astype(float), REGRESSION, None, family="linear_regression")


def test_binary_evaluation_gives_every_metric_curve_and_matrix(binary):
    section = EvaluationSection(min={"roc_auc": 0.5})
    result = evaluate(binary["pipeline"], binary["test"], BINARY, section, binary["info"])
    assert set(result.metrics) == set(m.BINARY) and result.skipped == {}
    assert result.passed is True and result.failures == []
    assert result.class_names == ["good", "risky"]
    assert np.asarray(result.confusion).sum() == len(binary["test"]) == result.rows
    fpr, tpr, thresholds = result.roc
    assert len(fpr) <= m.MAX_ROC_POINTS and all(math.isfinite(t) for t in thresholds)
    # The metrics are those of the Pipeline's own probabilities on the raw test rows.
    proba = binary["pipeline"].predict_proba(binary["test"].drop(columns=[LABEL]))[:, 1]
    expected, _ = m.binary_metrics(binary["test"][LABEL], proba, threshold=0.5)
    assert result.metrics == pytest.approx(expected)


def test_binary_threshold_and_failing_gate(binary):
    section = EvaluationSection(min={"roc_auc": 0.99, "recall": 0.0}, decision_threshold=0.1)
    result = evaluate(binary["pipeline"], binary["test"], BINARY, section, binary["info"])
    assert result.passed is False
    assert len(result.failures) == 1 and result.failures[0].startswith("roc_auc ") and result.failures[0].endswith(" < min 0.99")
    default = evaluate(binary["pipeline"], binary["test"], BINARY, EvaluationSection(), binary["info"])
    assert result.metrics["recall"] > default.metrics["recall"]  # a lower threshold flags more positives
    assert result.metrics["roc_auc"] == default.metrics["roc_auc"]


def test_multiclass_evaluation(multiclass):
    result = evaluate(multiclass["pipeline"], multiclass["test"], MULTICLASS, EvaluationSection(min={"f1_macro": 0.1}),
                      multiclass["info"])
    assert set(result.metrics) == set(m.MULTICLASS)
    assert result.roc is None and result.class_names == ["A", "B", "C", "D+"]
    assert np.asarray(result.confusion).shape == (4, 4) and np.asarray(result.confusion).sum() == result.rows
    html = render_report(result, EvaluationSection(min={"f1_macro": 0.1}), multiclass["info"])
    assert "Per class" in html and "D+" in html and "Confusion matrix" in html


def test_regression_evaluation_has_no_classification_outputs(regression):
    result = evaluate(regression["pipeline"], regression["test"], REGRESSION, EvaluationSection(max={"rmse": 100.0}), regression["info"])
    assert set(result.metrics) == set(m.REGRESSION) and result.passed
    assert result.roc is None and result.confusion is None and result.class_names is None
    assert 0 < result.metrics["rmse"] < 100 and result.metrics["mae"] <= result.metrics["rmse"]
    html = render_report(result, EvaluationSection(max={"rmse": 100.0}), regression["info"])
    assert "Predicted vs actual" in html and "Residuals" in html and "<td>rmse</td>" in html


def test_report_is_self_contained_and_names_metrics_and_failures(binary):
    section = EvaluationSection(min={"roc_auc": 0.99})
    result = evaluate(binary["pipeline"], binary["test"], BINARY, section, binary["info"])
    html = render_report(result, section, binary["info"])
    assert html.startswith("<!doctype html>") and 'class="fail">FAILED' in html
    for name in m.BINARY:
        assert f"<td>{name}</td>" in html
    for caption in ("ROC curve", "Precision-recall curve", "Confusion matrix", "Calibration curve", "Score distribution by class"):
        assert f"<figcaption>{caption}</figcaption>" in html
    assert "&lt; min 0.99" in html  # the failure line, escaped
    assert "http://" not in html and "https://" not in html and html.count("data:image/png;base64,") == 5


def test_evaluate_files_writes_the_report(binary, tmp_path):
    import joblib

    joblib.dump(binary["pipeline"], tmp_path / "model")
    tables.write_parquet(binary["test"], str(tmp_path / "test"))
    result = evaluate_files(str(tmp_path / "model"), str(tmp_path / "test"), BINARY, EvaluationSection(), binary["info"],
                            str(tmp_path / "report.html"))
    assert result.passed and "roc_auc" in (tmp_path / "report.html").read_text()


# ---- bad inputs -------------------------------------------------------------------------------


def test_unknown_threshold_metric_fails_before_scoring(binary):
    with pytest.raises(ConfigError, match="^evaluation.min.rmse: not a metric for binary"):
        evaluate(None, binary["test"], BINARY, EvaluationSection(min={"rmse": 1.0}), binary["info"])


def test_target_task_must_match_the_model(binary):
    with pytest.raises(ConfigError, match="^target.task: is 'multiclass' but the model was trained for 'binary'"):
        evaluate(binary["pipeline"], binary["test"], MULTICLASS, EvaluationSection(), binary["info"])


def test_missing_feature_column_and_label_are_data_errors(binary):
    with pytest.raises(DataError, match=r"^test: missing feature column\(s\) \['annual_income'\]"):
        evaluate(binary["pipeline"], binary["test"].drop(columns=["annual_income"]), BINARY, EvaluationSection(), binary["info"])
    with pytest.raises(DataError, match="^test: no '__label__' column"):
        evaluate(binary["pipeline"], binary["test"].drop(columns=[LABEL]), BINARY, EvaluationSection(), binary["info"])
    with pytest.raises(DataError, match="^test: no rows"):
        evaluate(binary["pipeline"], binary["test"].iloc[:0], BINARY, EvaluationSection(), binary["info"])


def test_labels_outside_the_model_classes_are_data_errors(binary):
    test = binary["test"].assign(**{LABEL: 3})
    with pytest.raises(DataError, match=r"^test: '__label__' values \[3\] are not among the model's 2 classes"):
        evaluate(binary["pipeline"], test, BINARY, EvaluationSection(), binary["info"])


def test_extra_columns_in_the_test_set_are_ignored(binary):
    plain = evaluate(binary["pipeline"], binary["test"], BINARY, EvaluationSection(), binary["info"])
    extra = evaluate(binary["pipeline"], binary["test"].assign(note="x"), BINARY, EvaluationSection(), binary["info"])
    assert extra.metrics == plain.metrics


def test_class_names_undo_kfp_float_metadata():
    assert class_names([1.0, 2.0, "x", 2.5]) == ["1", "2", "x", "2.5"]


# ---- the component ----------------------------------------------------------------------------


def test_component_compiles_with_its_inputs_outputs_and_boolean_result(tmp_path):
    import yaml
    from kfp import compiler

    from keel.components.evaluate import evaluate_model

    compiler.Compiler().compile(evaluate_model, str(tmp_path / "c.yaml"))
    spec = yaml.safe_load((tmp_path / "c.yaml").read_text())["components"]["comp-evaluate-model"]
    assert set(spec["inputDefinitions"]["artifacts"]) == {"trained_model", "test"}
    assert set(spec["inputDefinitions"]["parameters"]) == {"target", "evaluation"}
    outputs = spec["outputDefinitions"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in outputs["artifacts"].items()} == {
        "metrics": "system.Metrics", "classification_metrics": "system.ClassificationMetrics", "report": "system.HTML"}
    assert outputs["parameters"]["Output"]["parameterType"] == "BOOLEAN"
