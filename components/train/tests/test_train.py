"""train_model logic: estimators table, parameter checks, fitting, the saved Pipeline, bad inputs."""

import hashlib
import json
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from keel.components._common import tables
from testkit.models import stage_inputs
from keel.components._common.config import ModelSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import LABEL
from keel.components._common.training.estimators import ESTIMATORS, build, check_params
from keel.components._common.training.fit import fit
from keel.components.train.train import train

BINARY = TargetSection(column="grade", positive_values=["D", "E", "F", "G"])
MULTICLASS = TargetSection(column="grade", task="multiclass")
REGRESSION = TargetSection(column="interest_rate", task="regression")
# Small models: these tests check behaviour, not accuracy.
FAST = {"logistic_regression": {}, "linear_regression": {}, "random_forest": {"n_estimators": 15},
        "gradient_boosting": {"max_iter": 15}, "xgboost": {"n_estimators": 15},
        "torch_mlp": {"epochs": 3, "hidden": [16]}, "keras_mlp": {"epochs": 2, "hidden": [16]}}


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def frame(loans):
    return loans.sample(n=1200, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def binary(frame):
    return stage_inputs(frame, frame["grade"].isin(BINARY.positive_values).astype(int))


@pytest.fixture(scope="module")
def multiclass(frame):
    # A, B, C and "D or worse": four classes, each with enough rows to stratify.
    return stage_inputs(frame, frame["grade"].map({"A": 0, "B": 1, "C": 2}).fillna(3).astype(int))


@pytest.fixture(scope="module")
def regression(frame):
    return stage_inputs(frame, frame["interest_rate"].astype(float))


def _fit(bundle, target, family, params=None, seed=42, classes=None, **frames):
    model = ModelSection(family=family, params=FAST[family] if params is None else params, seed=seed)
    return fit(frames.get("train", bundle["train_features"]), frames.get("validation", bundle["validation_features"]),
               bundle["transformer"], target, model, classes)


# ---- the estimators table and parameter checks -------------------------------------------------


def test_table_covers_every_family_for_the_tasks_it_fits():
    assert {k for k in ESTIMATORS} == {
        ("logistic_regression", "classification"), ("linear_regression", "regression"),
        ("random_forest", "classification"), ("random_forest", "regression"),
        ("gradient_boosting", "classification"), ("gradient_boosting", "regression"),
        ("xgboost", "classification"), ("xgboost", "regression"),
        ("torch_mlp", "classification"), ("torch_mlp", "regression"),
        ("keras_mlp", "classification"), ("keras_mlp", "regression"),
    }
    assert type(build(ModelSection(family="gradient_boosting"), "multiclass")).__name__ == "HistGradientBoostingClassifier"
    assert type(build(ModelSection(family="xgboost"), "regression")).__name__ == "XGBRegressor"


@pytest.mark.parametrize("family, task", [("logistic_regression", "regression"), ("linear_regression", "binary"),
                                          ("linear_regression", "multiclass")])
def test_family_that_does_not_fit_the_task_is_refused(family, task):
    with pytest.raises(ConfigError, match=rf"^model.family: '{family}' cannot be used with target.task '{task}'"):
        check_params(ModelSection(family=family), task)


def test_defaults_are_seeded_and_bounded_and_params_override_them():
    kwargs = check_params(ModelSection(family="xgboost", params={"max_depth": 3}, seed=7), "binary")
    assert kwargs == {"tree_method": "hist", "n_jobs": 2, "random_state": 7, "max_depth": 3}
    forest = check_params(ModelSection(family="random_forest", params={"n_jobs": 1}, seed=3), "regression")
    assert forest == {"n_jobs": 1, "random_state": 3}
    assert check_params(ModelSection(family="logistic_regression", seed=1), "binary")["max_iter"] == 1000


def test_unknown_param_names_the_estimator_and_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        check_params(ModelSection(family="xgboost", params={"max_dept": 3}), "binary")
    message = str(err.value)
    assert message.startswith("model.params.max_dept: not a parameter of XGBClassifier (did you mean 'max_depth'?); valid: ")
    assert "n_estimators" in message and "\n" not in message


def test_random_state_must_come_from_model_seed():
    with pytest.raises(ConfigError, match="^model.params.random_state: set model.seed instead"):
        check_params(ModelSection(family="random_forest", params={"random_state": 1}), "binary")


@pytest.mark.parametrize("family, params, expected", [
    ("logistic_regression", {"C": -1}, r"^model.params.C: must be a float in the range \(0.0, inf\] \(got -1\)$"),
    ("random_forest", {"max_features": "bad"}, r"^model.params.max_features: must be .*\(got 'bad'\)$"),
    ("gradient_boosting", {"learning_rate": 0}, r"^model.params.learning_rate: must be a float in the range \(0.0, inf\) \(got 0\)$"),
    ("xgboost", {"max_depth": -1}, r"^model.params.max_depth: should be greater equal to 0 \(got -1\)$"),
    ("xgboost", {"subsample": 2.0}, r"^model.params.subsample: exceed bound \[0,1\] \(got 2\)$"),
    ("xgboost", {"tree_method": "fast"}, r"^model.params.tree_method: .*'fast'.*hist"),
    ("xgboost", {"n_estimators": 0}, r"^model.params.n_estimators: must be an int in the range \[1, inf\) or None \(got 0\)$"),
])
def test_bad_param_values_are_one_config_line_before_training(family, params, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        check_params(ModelSection(family=family, params=params), "binary")
    assert "\n" not in str(err.value)


def test_whole_numbers_that_kfp_turned_into_floats_become_ints_where_the_estimator_needs_them():
    # A KFP struct parameter carries every number as a double: max_depth: 5 arrives as 5.0.
    forest = check_params(ModelSection(family="random_forest", params={"max_depth": 5.0, "min_samples_split": 2.0,
                                                                       "max_features": 1.0}), "binary")
    assert forest["max_depth"] == 5 and type(forest["max_depth"]) is int and type(forest["min_samples_split"]) is int
    assert type(forest["max_features"]) is float  # 1.0 is a valid fraction (all features), so it keeps that meaning
    boosted = check_params(ModelSection(family="xgboost", params={"n_estimators": 50.0, "max_depth": 3.0, "learning_rate": 0.5}), "binary")
    assert boosted["n_estimators"] == 50 and type(boosted["max_depth"]) is int and boosted["learning_rate"] == 0.5
    with pytest.raises(ConfigError, match=r"^model.params.max_depth: must be an int .* \(got 2.5\)$"):
        check_params(ModelSection(family="random_forest", params={"max_depth": 2.5}), "binary")


def test_xgboost_params_for_a_gpu_pass_the_preflight_on_a_cpu_machine():
    assert check_params(ModelSection(family="xgboost", params={"device": "cuda"}), "multiclass")["device"] == "cuda"


# ---- fitting --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["logistic_regression", "random_forest", "gradient_boosting", "xgboost"])
def test_pipeline_predicts_from_raw_columns_like_transformer_then_estimator(binary, family):
    trained = _fit(binary, BINARY, family, classes=["negative", "positive"])
    raw = binary["test"].drop(columns=[LABEL])
    assert isinstance(trained.pipeline, Pipeline) and [n for n, _ in trained.pipeline.steps] == ["features", "model"]
    direct = trained.estimator.predict(binary["transformer"].transform(raw))
    np.testing.assert_array_equal(trained.pipeline.predict(raw), direct)
    np.testing.assert_allclose(trained.pipeline.predict_proba(raw), trained.estimator.predict_proba(binary["transformer"].transform(raw)))
    meta = trained.metadata
    assert meta["family"] == family and meta["task"] == "binary" and meta["classes"] == ["negative", "positive"]
    assert meta["framework"] == ("xgboost" if family == "xgboost" else "sklearn")
    assert meta["input_columns"] == list(raw.columns)
    assert meta["n_features"] == binary["train_features"].shape[1] - 1
    assert meta["train_rows"] == len(binary["train_features"]) and meta["validation_rows"] == len(binary["validation_features"])
    assert meta["training_seconds"] >= 0 and meta["params"]["random_state"] == 42
    json.dumps(meta, allow_nan=False)  # KFP metadata must be plain JSON
    assert {"train_accuracy", "train_roc_auc", "validation_accuracy", "validation_roc_auc", "validation_log_loss"} <= set(trained.metrics)
    assert all(0 <= trained.metrics[k] <= 1 for k in ("validation_accuracy", "validation_roc_auc"))


@pytest.mark.parametrize("family, task", [(f, k) for f, k in ESTIMATORS])
def test_same_seed_gives_identical_predictions(binary, regression, family, task):
    bundle, target = (regression, REGRESSION) if task == "regression" else (binary, BINARY)
    raw = bundle["test"].drop(columns=[LABEL])
    first, second = (_fit(bundle, target, family, seed=5) for _ in range(2))
    score = (lambda p: p.predict(raw)) if task == "regression" else (lambda p: p.predict_proba(raw))
    np.testing.assert_array_equal(score(first.pipeline), score(second.pipeline))
    assert first.metrics == second.metrics
    if family == "random_forest":  # the seed, not luck, is what makes a randomised family repeat
        assert not np.array_equal(score(_fit(bundle, target, family, seed=6).pipeline), score(first.pipeline))


def test_multiclass_keeps_class_names_and_reports_macro_scores(multiclass):
    trained = _fit(multiclass, MULTICLASS, "gradient_boosting", classes=["A", "B", "C", "D+"])
    assert trained.metadata["classes"] == ["A", "B", "C", "D+"]
    assert trained.pipeline.predict_proba(multiclass["test"].drop(columns=[LABEL])).shape[1] == 4
    assert {"train_f1_macro", "validation_f1_macro", "validation_roc_auc"} <= set(trained.metrics)


def test_classes_default_to_label_indexes_when_the_split_gives_none(multiclass):
    assert _fit(multiclass, MULTICLASS, "logistic_regression").metadata["classes"] == [0, 1, 2, 3]


def test_fit_warnings_are_kept_in_the_metadata(binary):
    with pytest.warns(Warning):
        trained = _fit(binary, BINARY, "logistic_regression", params={"max_iter": 2})
    assert any(line.startswith("ConvergenceWarning: ") for line in trained.metadata["fit_warnings"])


def test_a_gpu_trained_xgboost_model_is_saved_for_cpu_serving(binary):
    # Without a GPU XGBoost falls back to CPU with a warning; the record keeps what was asked.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = _fit(binary, BINARY, "xgboost", params={"n_estimators": 5, "device": "cuda"})
    assert trained.metadata["params"]["device"] == "cuda"
    assert trained.estimator.get_params()["device"] == "cpu"


def test_regression_reports_rmse_and_no_classes(regression):
    trained = _fit(regression, REGRESSION, "linear_regression")
    assert trained.metadata["classes"] is None
    assert {"train_rmse", "train_mae", "train_r2", "validation_rmse", "validation_r2"} <= set(trained.metrics)
    assert trained.metrics["validation_rmse"] > 0


def test_xgboost_early_stopping_uses_the_validation_set(binary):
    trained = _fit(binary, BINARY, "xgboost", params={"n_estimators": 400, "early_stopping_rounds": 5, "learning_rate": 0.3})
    assert trained.metadata["early_stopping"] is True
    assert 1 <= trained.metadata["iterations"] < 400
    assert trained.estimator.best_iteration + 1 == trained.metadata["iterations"]


def test_xgboost_early_stopping_without_validation_rows_is_a_config_error(binary):
    empty = binary["validation_features"].iloc[:0]
    with pytest.raises(ConfigError, match="^model.params.early_stopping_rounds: needs validation rows; set split.validation_size"):
        _fit(binary, BINARY, "xgboost", params={"early_stopping_rounds": 5}, validation=empty)


def test_empty_validation_set_trains_and_reports_train_metrics_only(binary):
    trained = _fit(binary, BINARY, "random_forest", validation=binary["validation_features"].iloc[:0])
    assert trained.metadata["validation_rows"] == 0
    assert trained.metrics and all(k.startswith("train_") for k in trained.metrics)


def test_hist_gradient_boosting_early_stopping_scores_on_the_validation_set(binary):
    trained = _fit(binary, BINARY, "gradient_boosting", params={"early_stopping": True, "max_iter": 300, "n_iter_no_change": 3})
    assert trained.metadata["early_stopping"] is True and trained.metadata["iterations"] < 300
    # The validation score history has one entry per iteration (+ the baseline) from X_val, not a train slice.
    assert len(trained.estimator.validation_score_) == trained.estimator.n_iter_ + 1


def test_xgboost_trains_unnamed_when_feature_names_hold_forbidden_characters():
    # One-hot names come from raw category values, and XGBoost refuses names with [ ] or <.
    rng = np.random.default_rng(0)
    raw = pd.DataFrame({"tenure": rng.choice(["< 1 year", "1-3 years", "[unknown]"], 300), "amount": rng.normal(size=300)})
    label = ((raw["tenure"] == "< 1 year") ^ (raw["amount"] > 1)).astype(int)
    transformer = ColumnTransformer([("cat", OneHotEncoder(sparse_output=False), ["tenure"]), ("num", "passthrough", ["amount"])])
    transformer.set_output(transform="pandas").fit(raw)
    features = transformer.transform(raw).assign(**{LABEL: label.to_numpy()})
    assert any("<" in c for c in features.columns)
    trained = fit(features[:200], features[200:], transformer, BINARY, ModelSection(family="xgboost", params=FAST["xgboost"]), None)
    assert trained.metadata["feature_names_kept"] is False
    unnamed = features[200:].drop(columns=[LABEL]).to_numpy()
    np.testing.assert_array_equal(trained.pipeline.predict(raw[200:]), trained.estimator.predict(unnamed))
    assert trained.metrics["validation_accuracy"] > 0.9


# ---- bad inputs -----------------------------------------------------------------------------


def test_missing_label_column_is_a_data_error(binary):
    with pytest.raises(DataError, match="^train_features: no '__label__' column"):
        _fit(binary, BINARY, "xgboost", train=binary["train_features"].drop(columns=[LABEL]))


def test_missing_values_are_refused_only_by_families_that_cannot_take_them(binary):
    train_frame = binary["train_features"].copy()
    train_frame.loc[:9, "numeric__annual_income"] = np.nan
    expected = r"^train_features: column\(s\) \['numeric__annual_income'\] have missing values, which LogisticRegression cannot take"
    with pytest.raises(DataError, match=expected):
        _fit(binary, BINARY, "logistic_regression", train=train_frame)
    assert _fit(binary, BINARY, "gradient_boosting", train=train_frame).metrics["train_accuracy"] > 0.5


def test_infinite_and_non_numeric_features_are_data_errors(binary):
    infinite = binary["train_features"].copy()
    infinite.loc[0, "numeric__loan_amount"] = np.inf
    with pytest.raises(DataError, match=r"numeric__loan_amount'\] hold infinite values"):
        _fit(binary, BINARY, "xgboost", train=infinite)
    text = binary["validation_features"].astype({"numeric__loan_amount": str})
    with pytest.raises(DataError, match=r"^validation_features: column\(s\) \['numeric__loan_amount'\] are not numeric"):
        _fit(binary, BINARY, "xgboost", validation=text)


def test_features_from_another_run_are_refused(binary):
    other = binary["train_features"].drop(columns=["numeric__loan_amount"])
    with pytest.raises(DataError, match="^validation_features: columns differ from train_features"):
        _fit(binary, BINARY, "xgboost", train=other)
    with pytest.raises(DataError, match="transformer produces"):
        _fit(binary, BINARY, "xgboost", train=other, validation=binary["validation_features"].drop(columns=["numeric__loan_amount"]))


def test_a_class_with_no_training_rows_is_named(multiclass):
    train_frame = multiclass["train_features"]
    train_frame = train_frame[train_frame[LABEL] != 3]
    with pytest.raises(DataError, match=r"^train_features: class\(es\) \['D\+'\] have no training rows"):
        _fit(multiclass, MULTICLASS, "xgboost", train=train_frame, classes=["A", "B", "C", "D+"])


def test_binary_task_with_more_classes_and_unknown_labels_are_refused(multiclass, binary):
    with pytest.raises(DataError, match="lists 4 classes .* but target.task is binary"):
        _fit(multiclass, BINARY, "xgboost")
    with pytest.raises(DataError, match=r"values \[5\] are not indexes into the 2 classes"):
        _fit(binary, BINARY, "xgboost", validation=binary["validation_features"].assign(**{LABEL: 5}), classes=["n", "p"])


def test_fractional_labels_for_a_classifier_are_refused(regression):
    with pytest.raises(DataError, match="must hold integer class indexes for target.task 'binary'"):
        _fit(regression, BINARY, "xgboost")


# ---- files and the component ----------------------------------------------------------------


def test_train_writes_a_loadable_pipeline_and_its_hash(binary, tmp_path):
    paths = {name: str(tmp_path / name) for name in ("train", "validation", "transformer", "model")}
    tables.write_parquet(binary["train_features"], paths["train"])
    tables.write_parquet(binary["validation_features"], paths["validation"])
    joblib.dump(binary["transformer"], paths["transformer"])
    trained = train(paths["train"], paths["validation"], paths["transformer"], paths["model"], BINARY,
                    ModelSection(family="xgboost", params=FAST["xgboost"]), ["negative", "positive"])
    data = (tmp_path / "model").read_bytes()
    assert trained.metadata["content_hash"] == "sha256:" + hashlib.sha256(data).hexdigest()
    loaded = joblib.load(paths["model"])
    raw = binary["test"].drop(columns=[LABEL])
    np.testing.assert_array_equal(loaded.predict_proba(raw), trained.pipeline.predict_proba(raw))


def test_a_transformer_artifact_that_is_not_fitted_is_refused(binary, tmp_path):
    for name, frame in (("train", binary["train_features"]), ("validation", binary["validation_features"])):
        tables.write_parquet(frame, str(tmp_path / name))
    joblib.dump(StandardScaler(), tmp_path / "transformer")
    with pytest.raises(DataError, match="^transformer: StandardScaler is not a fitted transformer"):
        train(str(tmp_path / "train"), str(tmp_path / "validation"), str(tmp_path / "transformer"), str(tmp_path / "model"),
              BINARY, ModelSection(family="xgboost"), None)
    assert not (tmp_path / "model").exists()


def test_component_compiles_with_its_inputs_and_outputs(tmp_path):
    import yaml
    from kfp import compiler

    from keel.components.train import train_model

    compiler.Compiler().compile(train_model, str(tmp_path / "c.yaml"))
    spec = yaml.safe_load((tmp_path / "c.yaml").read_text())["components"]["comp-train-model"]
    assert set(spec["inputDefinitions"]["artifacts"]) == {"train_features", "validation_features", "transformer"}
    assert set(spec["inputDefinitions"]["parameters"]) == {"target", "model"}
    outputs = spec["outputDefinitions"]["artifacts"]
    assert outputs["trained_model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert outputs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"


# ---- neural networks on the same features ----------------------------------------------------------------

@pytest.mark.parametrize("family", ["torch_mlp", "keras_mlp"])
def test_mlps_train_on_the_engineered_features_and_pickle_with_the_pipeline(binary, family, tmp_path):
    trained = _fit(binary, BINARY, family, params={"epochs": 40, "hidden": [32], "patience": 3})
    raw = binary["test"].drop(columns=[LABEL])
    # Early stopping on the validation rows ran and kept its best epoch.
    assert trained.metadata["early_stopping"] is True
    assert trained.estimator.best_iteration < trained.estimator.n_iter_ <= 40
    # Floor on 1,200 real loans, grade D or worse vs better (gradient boosting gets about 0.85 here).
    assert trained.metrics["validation_roc_auc"] > 0.7
    joblib.dump(trained.pipeline, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    np.testing.assert_allclose(loaded.predict_proba(raw), trained.pipeline.predict_proba(raw), rtol=1e-6)


@pytest.mark.parametrize("family", ["torch_mlp", "keras_mlp"])
def test_mlp_params_are_checked_before_training(family):
    with pytest.raises(ConfigError, match="model.params.hiden: not a parameter .*did you mean 'hidden'"):
        check_params(ModelSection(family=family, params={"hiden": [8]}), "binary")
    with pytest.raises(ConfigError, match="model.params.dropout"):
        check_params(ModelSection(family=family, params={"dropout": 1.5}), "binary")
