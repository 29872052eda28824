"""The predictor with a registered explainer (explainer.json): the same method, background and grouping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keel.components._common.config import ExplainSection, TargetSection
from keel.components._common.errors import DataError
from keel.components._common.target import LABEL
from testkit.models import make_bundle
from keel.components.explain.explain import explain
from keel.components._common.registry.registry import Registry
from keel.components.serve.model import KeelModel
from keel.components.serve.server import load_model_bundle
from testkit.predictor import plain
from keel.components._common.compiled_features import request_frame

BACKGROUND = 5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return str(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def plain_bundle(store, one_thread):
    """A logistic regression on the real loans data, registered without an explainer."""
    return load_model_bundle(make_bundle(store, family="logistic_regression", rows=1200, model_name="loans-plain"))


@pytest.fixture(scope="module")
def permutation_spec(plain_bundle, loans, one_thread) -> dict:
    """The explain step's spec for that model, with method permutation asked for."""
    inputs = plain_bundle.input_columns
    label = loans["grade"].isin(["D", "E", "F", "G"]).astype(int)
    frame = loans[inputs].assign(**{LABEL: label})
    info = {**plain_bundle.info, "classes": plain_bundle.classes}
    section = ExplainSection(method="permutation", sample_rows=10, background_rows=BACKGROUND, permutation_repeats=1)
    result = explain(plain_bundle.model, frame.iloc[:600], frame.iloc[6000:6100], TargetSection(column="grade"), section, info)
    assert result.method == "permutation"
    return result.spec


def _publish(store: str, bundle, name: str, spec: dict) -> str:
    files = {**bundle.files, "explainer.json": json.dumps(spec).encode()}
    registry = Registry(store)
    return registry.uri(name, registry.publish(name, files))


@pytest.fixture(scope="module")
def rows(plain_bundle, loans) -> list[dict]:
    return [{k: plain(v) for k, v in r.items()} for r in loans[plain_bundle.input_columns].iloc[3000:3004].to_dict("records")]


def test_a_registered_permutation_explainer_answers_explain(store, plain_bundle, permutation_spec, rows, one_thread):
    model = KeelModel("m", load_model_bundle(_publish(store, plain_bundle, "loans-permutation", permutation_spec)))
    model.load()
    body = model.explain({"instances": rows})
    assert body["method"] == "permutation" and body["output_space"] == "probability"
    inputs = plain_bundle.input_columns
    proba = plain_bundle.model.predict_proba(request_frame({c: [r[c] for r in rows] for c in inputs}, inputs))[:, 1]
    for item, expected in zip(body["explanations"], proba):
        assert set(item["attributions"]) <= set(inputs)
        assert item["base_value"] + sum(item["attributions"].values()) == pytest.approx(item["output"], abs=1e-9)
        assert item["output"] == pytest.approx(expected, abs=1e-9)  # exact in sum, against the model itself
        assert item["probabilities"][str(plain_bundle.classes[1])] == pytest.approx(expected)
    # the base value is the model's mean output over the registered centroids: the same background
    background = np.asarray(permutation_spec["background"])
    assert background.shape[0] == BACKGROUND
    mean_output = model.estimator.predict_proba(background)[:, 1].mean()
    assert body["explanations"][0]["base_value"] == pytest.approx(mean_output)
    assert model.explain({"instances": rows}) == body  # seeded: the same request, the same answer


def test_a_bundle_without_the_file_keeps_the_old_explainer(plain_bundle, rows, one_thread):
    model = KeelModel("m", plain_bundle)
    model.load()
    body = model.explain({"instances": rows[:1]})
    assert body["method"] == "linear" and body["output_space"] == "log-odds"


@pytest.mark.parametrize("change, message", [
    (lambda s: {**s, "feature_names": s["feature_names"][:-1], "sources": s["sources"][:-1],
                "background": [r[:-1] for r in s["background"]]}, r"explainer\.json: lists \d+ features but the model has \d+"),
    (lambda s: {**s, "format": 9}, r"explainer\.json: format 9 is not understood"),
    (lambda s: {**s, "method": "deep"}, r"explainer\.json: method 'deep' is unknown"),
], ids=["feature-count", "format", "method"])
def test_a_spec_that_does_not_fit_is_refused_at_load(store, plain_bundle, permutation_spec, change, message):
    name = f"loans-bad-{abs(hash(message)) % 10**6}"
    model = KeelModel("m", load_model_bundle(_publish(store, plain_bundle, name, change(permutation_spec))))
    with pytest.raises(DataError, match=message):
        model.load()


@pytest.mark.slow
def test_the_served_predictor_explains_with_the_registered_method(store, plain_bundle, permutation_spec, rows):
    from testkit.predictor import start_predictor

    predictor = start_predictor(_publish(store, plain_bundle, "loans-http", permutation_spec))
    try:
        status, body, _ = predictor.post(f"/v1/models/{predictor.name}:explain", {"instances": rows[:2]})
    finally:
        predictor.stop()
    assert status == 200, body
    assert body["method"] == "permutation" and body["output_space"] == "probability"
    item = body["explanations"][0]
    assert item["base_value"] + sum(item["attributions"].values()) == pytest.approx(item["output"], abs=1e-9)
