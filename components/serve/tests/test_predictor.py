"""The predictor's logic in-process: compiled features, request checks, settings, auth, bundle URIs."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from kserve.errors import InvalidInput

from keel.components._common.config import FeaturesSection
from keel.components._common.errors import ConfigError, DataError, StorageError
from testkit.models import LOANS_LEAKY, make_bundle
from keel.components.features.features import engineer
from keel.components.serve.auth import Authenticator, authenticator_from_env
from keel.components.serve.http import route_of
from keel.components.serve.inputs import InputSchema, Policy
from keel.components.serve.model import KeelModel
from keel.components.serve.server import ServeSettings, load_model_bundle
from testkit.predictor import plain
from keel.components._common.compiled_features import CompiledFeatures, ServingFeatures, request_frame, self_check


def _columns(frame: pd.DataFrame) -> dict[str, list]:
    return {c: [plain(v) for v in frame[c]] for c in frame.columns}


@pytest.fixture(scope="module")
def loans_frame(loans):
    frame = loans.drop(columns=LOANS_LEAKY).iloc[:1500].reset_index(drop=True)
    return frame.assign(__label__=loans["grade"].iloc[:1500].isin(["D", "E", "F", "G"]).astype(int).to_numpy())


# -- the compiled transform is scikit-learn's, bit for bit -------------------------------------------

@pytest.mark.parametrize("features", [
    FeaturesSection(),
    FeaturesSection.parse({"numeric": {"scale": "minmax", "impute": "mean", "add_missing_indicator": False}}, "features"),
    FeaturesSection.parse({"numeric": {"scale": "robust"}, "categorical": {"encode": "ordinal", "impute": "most_frequent"}}, "features"),
    FeaturesSection.parse({"numeric": {"scale": "none"}, "bucketize": {"annual_income": 5}}, "features"),
], ids=["default", "minmax-mean", "robust-ordinal", "bucketize"])
def test_compiled_features_equal_scikit_learn_exactly(loans_frame, features):
    result = engineer(loans_frame.iloc[:1000], loans_frame.iloc[1000:1100], features)
    transformer, inputs = result.transformer, list(result.input_columns)
    serving_rows = loans_frame[inputs].iloc[1100:1500]
    compiled = CompiledFeatures(transformer, inputs)
    expected = np.asarray(transformer.transform(request_frame(_columns(serving_rows), inputs)), dtype="float64")
    assert np.array_equal(compiled.transform(_columns(serving_rows)), expected, equal_nan=True)
    assert len(compiled.sources) == expected.shape[1]
    assert set(compiled.sources) <= set(inputs)


def test_self_check_catches_a_kernel_that_is_off_by_one_ulp(loans_frame):
    result = engineer(loans_frame.iloc[:1000], loans_frame.iloc[1000:1100], FeaturesSection())
    inputs = list(result.input_columns)
    compiled = CompiledFeatures(result.transformer, inputs)
    probe = _columns(loans_frame[inputs].iloc[1100:1120])
    assert self_check(compiled, result.transformer, probe) == ""
    compiled.parts[0].steps.append(lambda X: np.nextafter(X, np.inf))
    assert "differs from scikit-learn at feature 0" in self_check(compiled, result.transformer, probe)


def test_unknown_steps_fall_back_to_scikit_learn(loans_frame):
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, PowerTransformer

    frame = loans_frame[["annual_income", "loan_amount"]].iloc[:500]
    transformer = ColumnTransformer([("odd", PowerTransformer(), ["annual_income", "loan_amount"]),
                                     ("log", FunctionTransformer(np.log1p), ["loan_amount"])]).fit(frame)
    features = ServingFeatures(transformer, ["annual_income", "loan_amount"], _columns(frame.iloc[:5]))
    assert not features.compiled and "not compilable" in features.reason
    rows = _columns(frame.iloc[5:10])
    assert np.array_equal(features.transform(rows), transformer.transform(request_frame(rows, ["annual_income", "loan_amount"])))


# -- every model family: the served path predicts what the Pipeline predicts ---------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return str(tmp_path_factory.mktemp("registry"))


@pytest.mark.parametrize("family, task", [
    ("gradient_boosting", "multiclass"), ("gradient_boosting", "regression"),
    ("logistic_regression", "binary"), ("random_forest", "binary"), ("xgboost", "binary"),
])
def test_served_predictions_equal_the_pipeline_for_each_family(store, loans, family, task, one_thread):
    uri = make_bundle(store, family=family, task=task, rows=1200, model_name=f"{family.replace('_', '-')}-{task}")
    model = KeelModel("m", load_model_bundle(uri))
    model.load()
    assert model.features.compiled and model._fast, model.features.reason
    inputs = model.bundle.input_columns
    rows = [{k: plain(v) for k, v in r.items()} for r in loans[inputs].iloc[3000:3025].to_dict("records")]
    answer = model.predict({"instances": rows})
    frame = request_frame({c: [r[c] for r in rows] for c in inputs}, inputs)
    if task == "regression":
        assert answer["predictions"] == model.bundle.model.predict(frame).tolist()
        assert "probabilities" not in answer
    else:
        assert answer["predictions"] == [model.classes[int(c)] for c in model.bundle.model.predict(frame)]
        proba = np.array([[p[str(c)] for c in model.classes] for p in answer["probabilities"]])
        assert np.array_equal(proba, model.bundle.model.predict_proba(frame))
    explained = model.explain({"instances": rows[:2]})["explanations"]
    if task == "multiclass":
        assert set(explained[0]["per_class"]) == set(map(str, model.classes))
    else:
        assert set(explained[0]["attributions"]) == set(inputs)
        assert explained[0]["base_value"] + sum(explained[0]["attributions"].values()) == pytest.approx(explained[0]["output"])


# -- request checks -----------------------------------------------------------------------------------

SCHEMA = {"version": 1, "target": "y", "columns": {
    "age": {"type": "integer", "nullable": False, "min": 18, "max": 99},
    "income": {"type": "float", "nullable": True, "min": 0.0, "max": 1e6},
    "city": {"type": "string", "nullable": False, "allowed": ["Oslo", "Lima"]},
    "member": {"type": "boolean", "nullable": True},
}}
ROW = {"age": 30, "income": 50000.0, "city": "Oslo", "member": True}


def _check(row, policy=Policy(), v1=True):
    schema = InputSchema(SCHEMA, list(SCHEMA["columns"]), policy)
    columns = schema.from_v1({"instances": [row]})
    return schema.check(columns, lambda c, r: f"instances[{r}].{c}")


def test_a_good_row_passes_and_integral_floats_count_as_integers():
    assert _check(ROW) == []
    assert _check(dict(ROW, age=30.0, income=None, member=None)) == []


@pytest.mark.parametrize("change, message", [
    ({"age": 17}, "instances[0].age: 17 is outside the training range [18, 99]"),
    ({"age": "30"}, "instances[0].age: expected a number, got str '30'"),
    ({"income": float("inf")}, "instances[0].income: inf is not a finite number"),
    ({"city": "Rome"}, "instances[0].city: category 'Rome' was not seen in training; expected one of Lima, Oslo"),
    ({"member": "yes"}, "instances[0].member: expected true or false"),
    ({"age": None}, "instances[0].age: is null"),
])
def test_each_violation_names_the_field(change, message):
    with pytest.raises(InvalidInput, match=None) as err:
        _check(dict(ROW, **change))
    assert message in str(err.value)


def test_warn_policy_returns_warnings_instead_of_raising():
    warnings = _check(dict(ROW, age=120, city="Rome"), Policy(unseen_category="warn", out_of_range="warn"))
    assert [(w.column, w.kind) for w in warnings] == [("age", "out_of_range"), ("city", "unseen_category")]


def test_probe_rows_cover_every_category_an_unseen_one_and_nulls():
    probe = InputSchema(SCHEMA, list(SCHEMA["columns"]), Policy()).probe()
    assert {"Oslo", "Lima", "__keel_probe_unseen__"} <= set(probe["city"])
    assert None in probe["income"] and None not in probe["age"]
    assert min(probe["age"]) == 18 and max(probe["age"]) == 99


def test_route_labels_are_a_closed_set():
    assert route_of("/v1/models/x:predict") == "v1_predict"
    assert route_of("/v2/models/x/infer") == "v2_infer"
    assert route_of("/v2/models/x/versions/3/infer") == "v2_infer"
    assert route_of("/../../etc/passwd") == "other"


# -- settings and authentication --------------------------------------------------------------------

@pytest.mark.parametrize("env, message", [
    ({"KEEL_SERVE_MAX_ROWS": "ten"}, "KEEL_SERVE_MAX_ROWS: 'ten' is not a positive whole number"),
    ({"KEEL_SERVE_MAX_BODY_BYTES": "0"}, "KEEL_SERVE_MAX_BODY_BYTES: '0'"),
    ({"KEEL_SERVE_UNSEEN_CATEGORY": "ignore"}, "KEEL_SERVE_UNSEEN_CATEGORY: 'ignore' is not one of reject, warn"),
    ({"KEEL_SERVE_LOG_PAYLOADS": "yes"}, "KEEL_SERVE_LOG_PAYLOADS: 'yes' is not one of true, false"),
    ({"KEEL_SERVE_TOKEN": "short"}, "KEEL_SERVE_TOKEN: shorter than 16 characters"),
    ({"KEEL_SERVE_TOKEN": "x" * 20, "KEEL_SERVE_TOKEN_FILE": "/x"}, "both set; keep one"),
    ({"KEEL_SERVE_TOKEN_FILE": "/no/such/file"}, "KEEL_SERVE_TOKEN_FILE: cannot read /no/such/file"),
    ({"KEEL_SERVE_JWT_ISSUER": "https://i"}, "need KEEL_SERVE_JWKS_FILE"),
])
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError) as err:
        ServeSettings.from_env(env)
    assert message in str(err.value)


def test_token_file_and_defaults(tmp_path):
    (tmp_path / "token").write_text("s3cr3t-token-from-a-file\n")
    settings = ServeSettings.from_env({"KEEL_SERVE_TOKEN_FILE": str(tmp_path / "token")})
    assert settings.authenticator.check("Bearer s3cr3t-token-from-a-file").ok
    assert not settings.authenticator.check("Bearer s3cr3t-token-from-a-fil").ok
    assert settings.policy == Policy("reject", "reject", 1000) and settings.max_body_bytes == 1 << 20
    assert not ServeSettings.from_env({}).authenticator.enabled


def test_jwks_file_must_be_a_keyset(tmp_path):
    (tmp_path / "jwks.json").write_text("{not json")
    with pytest.raises(ConfigError, match="KEEL_SERVE_JWKS_FILE: .* is not JSON"):
        authenticator_from_env({"KEEL_SERVE_JWKS_FILE": str(tmp_path / "jwks.json")})
    with pytest.raises(ConfigError, match="not a usable JWKS"):
        Authenticator(jwks={"keys": [{"kty": "nope"}]})


def test_jwt_claims_are_enforced():
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    auth = Authenticator(jwks={"keys": [{**public, "kid": "k1", "alg": "ES256"}]}, issuer="https://i", audience="svc")

    def token(**claims):
        body = {"iss": "https://i", "aud": "svc", "sub": "bob", "exp": int(time.time()) + 60, **claims}
        return "Bearer " + jwt.encode(body, key, algorithm="ES256", headers={"kid": "k1"})

    assert auth.check(token()).subject == "bob"
    assert "expired" in auth.check(token(exp=int(time.time()) - 10)).reason
    assert not auth.check(token(aud="other")).ok
    without_exp = "Bearer " + jwt.encode({"iss": "https://i", "aud": "svc"}, key, algorithm="ES256", headers={"kid": "k1"})
    assert not auth.check(without_exp).ok
    assert auth.check(None).reason.startswith("missing Authorization header")


# -- what can be served ---------------------------------------------------------------------------------

def test_bundle_uris(store, tmp_path):
    uri = make_bundle(store, rows=600, model_name="uri-test")
    assert load_model_bundle(uri).version == 1
    assert load_model_bundle(f"{store}/registry/uri-test").version == 1
    assert load_model_bundle("latest", store, "uri-test").model_name == "uri-test"
    with pytest.raises(StorageError, match="not a model bundle"):
        load_model_bundle(str(tmp_path))
    with pytest.raises(StorageError, match="has no registered version"):
        load_model_bundle("latest", store, "no-such-model")
    with pytest.raises(ConfigError, match="'latest' needs a registry store"):
        load_model_bundle("latest")


def test_s3_bundles_are_served_from_a_real_s3_server(s3_store):
    uri = make_bundle(s3_store, rows=600, model_name="s3-test")
    assert uri.startswith("s3://")
    model = KeelModel("s3", load_model_bundle(uri))
    assert model.load() and model.bundle.version == 1


def test_a_tampered_file_is_refused_before_unpickling(store):
    import shutil
    from pathlib import Path

    uri = make_bundle(store, rows=600, model_name="tamper-test")
    copy = Path(store) / "copy"
    shutil.copytree(uri, copy)
    (copy / "schema.json").write_text((copy / "schema.json").read_text().replace('"integer"', '"float"', 1))
    with pytest.raises(DataError, match="schema.json"):
        load_model_bundle(str(copy))


# -- the compiled gradient-boosting trees are scikit-learn's, bit for bit ----------------------------------

@pytest.mark.filterwarnings("ignore:X does not have valid feature names")  # the reference calls take the bare matrix
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_compiled_trees_equal_scikit_learn_on_real_rows(store, loans, task, one_thread):
    from keel.components.serve.predictors import CompiledHistGradientBoosting, serving_predictor

    uri = make_bundle(store, task=task, rows=1500, model_name=f"trees-{task}")
    model = KeelModel("m", load_model_bundle(uri))
    model.load()
    assert isinstance(model.predictor, CompiledHistGradientBoosting)
    inputs = model.bundle.input_columns
    frame = loans[inputs].iloc[2000:2600]
    X = model.features.transform(_columns(frame))
    estimator = model.bundle.model.steps[-1][1]
    assert np.array_equal(model.predictor.raw(X), estimator._raw_predict(X))
    values, proba = model.predictor.predict(X)
    if task == "regression":
        assert np.array_equal(values, estimator.predict(X)) and proba is None
    else:
        assert np.array_equal(estimator.classes_[values], estimator.predict(X))
        assert np.array_equal(proba, estimator.predict_proba(X))
    assert type(serving_predictor(object(), True)).__name__ == "EstimatorPredictor"
