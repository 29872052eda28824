"""The explain logic on small real models: rankings, additivity, method choice, the spec and the component."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from keel.components._common.config import ExplainSection, FeaturesSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import LABEL
from keel.components.explain.explain import (Explanation, bare_estimator, explain, explainer_spec,
                                             kmeans_background, render_report)
from keel.components._common.governance.explain_views import card_figures, card_summary
from keel.components.features.features import engineer
from keel.components._common.explainer_spec import Attributions, parse_spec

INPUTS = ["signal", "noise", "city"]
BINARY = TargetSection(column="y", task="binary")
SMALL = ExplainSection(sample_rows=60, background_rows=8, permutation_repeats=3, seed=3)


@pytest.fixture(scope="module")
def frames():
    """The label depends on `signal` only; `noise` and `city` are noise."""
    rng = np.random.default_rng(0)
    n = 480
    frame = pd.DataFrame({"signal": rng.normal(size=n), "noise": rng.normal(size=n),
                          "city": rng.choice(["Oslo", "Lima", "Pune"], size=n)})
    frame[LABEL] = (frame["signal"] + 0.3 * rng.normal(size=n) > 0).astype(int)
    frame["score"] = 3 * frame["signal"] + 0.1 * rng.normal(size=n)  # a regression target
    frame["band"] = np.digitize(frame["signal"], [-0.5, 0.5])  # three classes
    return frame.iloc[:360].reset_index(drop=True), frame.iloc[360:].reset_index(drop=True)


@pytest.fixture(scope="module")
def features(frames):
    return engineer(frames[0][INPUTS + [LABEL]], frames[0][INPUTS + [LABEL]].iloc[:0], FeaturesSection())


def _pipeline(features, frames, estimator, label=LABEL):
    from sklearn.pipeline import Pipeline

    X = features.train_features.drop(columns=[LABEL])
    return Pipeline([("features", features.transformer), ("model", estimator.fit(X, frames[0][label]))])


def _info(task="binary", classes=("no", "yes")):
    return {"task": task, "classes": list(classes) if classes else None, "input_columns": INPUTS,
            "family": "test", "estimator": "test"}


def _split(frames, label):
    return tuple(f[INPUTS].assign(**{LABEL: f[label]}) for f in frames)


def _served(result: Explanation, pipeline, task="binary", classes=("no", "yes")):
    """The predictor's explainer, built from the spec as it travels (JSON), and the test rows' features."""
    spec = parse_spec(json.dumps(result.spec).encode())
    estimator = bare_estimator(pipeline.steps[1][1])  # as the predictor holds it: numpy features in
    names = [str(n) for n in pipeline.steps[0][1].get_feature_names_out()]
    return Attributions.from_spec(spec, estimator, names, None if task == "regression" else list(classes))


def _additive(explanations, expected):
    for item, want in zip(explanations, expected):
        assert item["base_value"] + sum(item["attributions"].values()) == pytest.approx(item["output"], abs=1e-9)
        assert item["output"] == pytest.approx(want, abs=1e-6)
        assert set(item["attributions"]) == set(INPUTS)


# -- rankings and additivity per method ----------------------------------------------------------------

def test_linear_model_ranks_the_label_column_first_and_adds_up(frames, features, one_thread):
    from sklearn.linear_model import LogisticRegression

    pipeline = _pipeline(features, frames, LogisticRegression())
    result = explain(pipeline, *frames, BINARY, SMALL, _info())
    assert (result.method, result.output) == ("linear", "log_odds")
    assert list(result.global_values)[0] == "signal"
    assert result.global_values["signal"] > 10 * result.global_values["noise"]
    assert result.directions["signal"] == "raises" and result.directions["city"] == "by category"
    assert np.asarray(result.spec["background"]).shape == (1, len(result.spec["feature_names"]))
    rows = frames[1][INPUTS].iloc[:5]
    X = np.asarray(pipeline.steps[0][1].transform(rows), dtype=float)
    _additive(_served(result, pipeline).explain(X, ["no", "yes"]), pipeline.decision_function(rows))


def test_tree_model_ranks_the_label_column_first_and_adds_up(frames, features, one_thread):
    from sklearn.ensemble import HistGradientBoostingClassifier

    pipeline = _pipeline(features, frames, HistGradientBoostingClassifier(max_iter=30, random_state=0))
    result = explain(pipeline, *frames, BINARY, SMALL, _info())
    assert (result.method, result.output, result.spec["background"]) == ("tree", "log_odds", None)
    assert list(result.global_values)[0] == "signal" and list(result.global_values)[-1] != "signal"
    assert result.global_values["signal"] > 10 * max(result.global_values["noise"], result.global_values["city"])
    rows = frames[1][INPUTS].iloc[:5]
    X = np.asarray(pipeline.steps[0][1].transform(rows), dtype=float)
    _additive(_served(result, pipeline).explain(X, ["no", "yes"]), pipeline.decision_function(rows))


def test_random_forest_attributions_are_probabilities(frames, features, one_thread):
    from sklearn.ensemble import RandomForestClassifier

    pipeline = _pipeline(features, frames, RandomForestClassifier(n_estimators=15, max_depth=4, random_state=0))
    result = explain(pipeline, *frames, BINARY, SMALL, _info())
    assert (result.method, result.output) == ("tree", "probability")
    assert list(result.global_values)[0] == "signal"
    rows = frames[1][INPUTS].iloc[:4]
    X = np.asarray(pipeline.steps[0][1].transform(rows), dtype=float)
    _additive(_served(result, pipeline).explain(X, ["no", "yes"]), pipeline.predict_proba(rows)[:, 1])


def test_multiclass_has_attributions_per_class_and_an_overall_mean(frames, features, one_thread):
    from sklearn.ensemble import HistGradientBoostingClassifier

    classes = ["low", "mid", "high"]
    pipeline = _pipeline(features, frames, HistGradientBoostingClassifier(max_iter=20, random_state=0), label="band")
    result = explain(pipeline, *_split(frames, "band"), TargetSection(column="y", task="multiclass"), SMALL,
                     _info("multiclass", classes))
    assert set(result.per_class) == set(classes) and result.signed is None
    assert all(list(per)[0] == "signal" for per in result.per_class.values())
    overall = np.mean([result.per_class[c]["noise"] for c in classes])
    assert result.global_values["noise"] == pytest.approx(overall)
    assert set(result.directions.values()) == {"per class"}
    rows = frames[1][INPUTS].iloc[:3]
    X = np.asarray(pipeline.steps[0][1].transform(rows), dtype=float)
    first = _served(result, pipeline, "multiclass", classes).explain(X, classes)[0]["per_class"]
    assert set(first) == set(classes)
    for k, c in enumerate(classes):  # each class's log-odds (softmax input) adds up
        assert first[c]["base_value"] + sum(first[c]["attributions"].values()) == pytest.approx(first[c]["output"])


def test_linear_regression_attributions_are_in_target_units(frames, features, one_thread):
    from sklearn.linear_model import LinearRegression

    pipeline = _pipeline(features, frames, LinearRegression(), label="score")
    result = explain(pipeline, *_split(frames, "score"), TargetSection(column="y", task="regression"), SMALL,
                     _info("regression", None))
    assert (result.method, result.output, result.spec["classes"]) == ("linear", "value", None)
    assert list(result.global_values)[0] == "signal" and result.directions["signal"] == "raises"
    rows = frames[1][INPUTS].iloc[:4]
    X = np.asarray(pipeline.steps[0][1].transform(rows), dtype=float)
    _additive(_served(result, pipeline, "regression").explain(X, None), pipeline.predict(rows))


# -- models shap cannot handle exactly ------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp(features, frames):
    from sklearn.neural_network import MLPClassifier

    return _pipeline(features, frames, MLPClassifier((8,), max_iter=1500, random_state=0))


def test_an_mlp_falls_back_to_permutation_under_auto(frames, features, mlp, one_thread):
    result = explain(mlp, *frames, BINARY, SMALL, _info())
    assert (result.method, result.output) == ("permutation", "probability")
    assert "MLPClassifier" in result.reason and "permutation importance" in result.measure
    assert list(result.global_values)[0] == "signal"
    assert result.global_values["signal"] > 5 * max(result.global_values["noise"], result.global_values["city"], 1e-6)
    assert set(result.importance_std) == set(INPUTS)
    # per-row attributions by the same explainer the predictor builds: exact in sum
    rows = frames[1][INPUTS].iloc[:4]
    X = np.asarray(mlp.steps[0][1].transform(rows), dtype=float)
    _additive(_served(result, mlp).explain(X, ["no", "yes"]), mlp.predict_proba(rows)[:, 1])


def test_the_permutation_background_is_centroids_not_training_rows(frames, features, mlp, one_thread):
    result = explain(mlp, *frames, BINARY, SMALL, _info())
    background = np.asarray(result.spec["background"])
    X_train = np.asarray(features.train_features.drop(columns=[LABEL]), dtype=float)
    assert background.shape == (SMALL.background_rows, X_train.shape[1])
    assert not any(np.array_equal(row, seen) for row in background for seen in X_train)
    one_hot = [j for j, name in enumerate(result.spec["feature_names"]) if name.startswith("categorical__")]
    assert set(np.unique(background[:, one_hot])) <= {0.0, 1.0}  # snapped to values the model has seen


def test_kmeans_background_is_seeded_and_tolerates_missing_values():
    X = np.random.default_rng(1).normal(size=(200, 3))
    X[::7, 1] = np.nan
    first, again = kmeans_background(X, 5, seed=4), kmeans_background(X, 5, seed=4)
    assert first.shape == (5, 3) and np.isfinite(first).all() and np.array_equal(first, again)


def test_shap_on_a_model_it_cannot_handle_is_refused(frames, mlp):
    with pytest.raises(ConfigError, match=r"explain\.method: shap .*MLPClassifier.*permutation"):
        explain(mlp, *frames, BINARY, ExplainSection(method="shap"), _info())


def test_permutation_can_be_asked_for_on_a_linear_model(frames, features, one_thread):
    from sklearn.linear_model import LogisticRegression

    pipeline = _pipeline(features, frames, LogisticRegression())
    result = explain(pipeline, *frames, BINARY, SMALL.model_copy(update={"method": "permutation"}), _info())
    assert result.method == "permutation" and result.reason.startswith("explain.method is permutation")
    assert list(result.global_values)[0] == "signal"


# -- the spec --------------------------------------------------------------------------------------------

def test_spec_round_trips_through_json_and_explains_the_same(frames, features, mlp, one_thread):
    result = explain(mlp, *frames, BINARY, SMALL, _info())
    text = json.dumps(result.spec)
    assert parse_spec(text.encode()) == result.spec
    assert set(result.spec) >= {"format", "method", "feature_names", "sources", "output", "background", "classes", "seed"}
    assert set(result.spec["sources"]) == set(INPUTS)
    rows = frames[1][INPUTS].iloc[:3]
    X = np.asarray(mlp.steps[0][1].transform(rows), dtype=float)
    assert _served(result, mlp).explain(X, ["no", "yes"]) == _served(result, mlp).explain(X, ["no", "yes"])  # seeded


@pytest.mark.parametrize("change, message", [
    ({"format": 2}, "format 2 is not understood"),
    ({"method": "kernel"}, "method 'kernel' is unknown"),
    ({"output": "logit"}, "output 'logit' is unknown"),
    ({"sources": ["signal"]}, "same, non-zero length"),
    ({"background": [[0.0, 1.0]]}, "background rows of 5 values"),
])
def test_bad_specs_are_refused_naming_the_file(change, message):
    spec = explainer_spec("permutation", ["a", "b", "c", "d", "e"], ["x"] * 5, "probability", np.zeros((2, 5)), ["0", "1"], 0)
    parse_spec(spec, "v1/explainer.json")
    with pytest.raises(DataError, match=rf"^v1/explainer\.json: .*{message}"):
        parse_spec({**spec, **change}, "v1/explainer.json")
    with pytest.raises(DataError, match="not valid JSON"):
        parse_spec(b"{", "v1/explainer.json")


def test_a_spec_for_another_model_is_refused(frames, features, mlp, one_thread):
    result = explain(mlp, *frames, BINARY, SMALL, _info())
    names = [str(n) for n in mlp.steps[0][1].get_feature_names_out()]
    with pytest.raises(DataError, match=r"explainer\.json: lists 5 features but the model has 4"):
        Attributions.from_spec(result.spec, mlp.steps[1][1], names[:4], ["no", "yes"])
    with pytest.raises(DataError, match=r"explainer\.json: classes"):
        Attributions.from_spec(result.spec, mlp.steps[1][1], names, ["a", "b"])


# -- inputs ------------------------------------------------------------------------------------------------

def test_missing_columns_and_task_mismatch_are_named(frames, mlp):
    train, test = frames
    with pytest.raises(DataError, match=r"test: missing feature column\(s\) \['city'\]"):
        explain(mlp, train, test.drop(columns=["city"]), BINARY, SMALL, _info())
    with pytest.raises(ConfigError, match="target.task: is 'regression'"):
        explain(mlp, train, test, TargetSection(column="y", task="regression"), SMALL, _info())


# -- report and model card -----------------------------------------------------------------------------------

def test_report_and_card_helpers(frames, features, one_thread):
    from sklearn.ensemble import HistGradientBoostingClassifier

    pipeline = _pipeline(features, frames, HistGradientBoostingClassifier(max_iter=20, random_state=0))
    result = explain(pipeline, *frames, BINARY, SMALL, _info())
    page = render_report(result, _info())
    assert page.count("data:image/png;base64,") == 2 and "TreeExplainer" in page and "http" not in page
    metadata = result.metadata()
    rows = card_summary(metadata)
    assert [r["column"] for r in rows] == list(result.global_values)
    assert rows[0] == {"column": "signal", "mean_abs": result.global_values["signal"], "direction": "raises"}
    figures = card_figures(json.loads(json.dumps(metadata)))  # as it comes back from KFP metadata
    assert len(figures) == 1 and figures[0].startswith("<figure><img") and "data:image/png;base64," in figures[0]
    assert card_figures({}) == []


# -- the KFP component on saved artifacts ---------------------------------------------------------------------

def test_component_writes_the_explainer_and_the_report(frames, mlp, tmp_path, one_thread):
    import joblib
    from kfp import dsl

    from keel.components._common import tables
    from keel.components.explain.component import explain_model

    joblib.dump(mlp, tmp_path / "model.joblib")
    tables.write_parquet(frames[0], str(tmp_path / "train.parquet"))
    tables.write_parquet(frames[1], str(tmp_path / "test.parquet"))
    inputs = {
        "trained_model": dsl.Model(uri=str(tmp_path / "model.joblib"), metadata={**_info(), "content_hash": "sha256:m"}),
        "train": dsl.Dataset(uri=str(tmp_path / "train.parquet"), metadata={"content_hash": "sha256:tr"}),
        "test": dsl.Dataset(uri=str(tmp_path / "test.parquet"), metadata={"content_hash": "sha256:te"}),
    }
    explainer, report = dsl.Artifact(uri=str(tmp_path / "explainer.json")), dsl.HTML(uri=str(tmp_path / "report.html"))
    explain_model.python_func(**inputs, target=BINARY.model_dump(), explain=SMALL.model_dump(), explainer=explainer, report=report)

    spec = parse_spec((tmp_path / "explainer.json").read_bytes())
    assert spec["method"] == explainer.metadata["method"] == "permutation"
    assert list(explainer.metadata["global_attributions"])[0] == "signal"
    assert explainer.metadata["rows"] == SMALL.sample_rows
    assert explainer.metadata["content_hash"].startswith("sha256:")
    assert [p["name"] for p in explainer.metadata["parents"]] == ["trained_model", "train", "test"]
    assert explainer.metadata["params"]["background_rows"] == SMALL.background_rows
    assert "<img" in (tmp_path / "report.html").read_text() and report.metadata["method"] == "permutation"

    with pytest.raises(SystemExit) as exc:  # one line, exit 2
        explain_model.python_func(**inputs, target=BINARY.model_dump(), explain={"method": "shap"},
                                  explainer=dsl.Artifact(uri=str(tmp_path / "e2.json")), report=dsl.HTML(uri=str(tmp_path / "r2.html")))
    assert exc.value.code == 2


def test_component_compiles_with_its_inputs_and_outputs(tmp_path):
    import yaml
    from kfp import compiler

    from keel.components.explain import explain_model

    out = tmp_path / "c.yaml"
    compiler.Compiler().compile(explain_model, str(out))
    component = next(iter(yaml.safe_load(out.read_text())["components"].values()))
    assert set(component["inputDefinitions"]["artifacts"]) == {"trained_model", "train", "test"}
    assert set(component["inputDefinitions"]["parameters"]) == {"target", "explain"}
    assert set(component["outputDefinitions"]["artifacts"]) == {"explainer", "report"}
