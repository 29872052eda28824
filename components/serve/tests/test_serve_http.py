"""The predictor over real HTTP: a real `python -m keel.components.serve` process per fixture."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from testkit.predictor import TOKEN, start_predictor, v2_body

pytestmark = pytest.mark.slow


def in_process(bundle, rows):
    frame = pd.DataFrame(rows, columns=bundle.input_columns).astype(object)
    frame = frame.where(frame.notna(), None)
    codes = bundle.model.predict(frame)
    return [bundle.classes[int(c)] for c in codes], bundle.model.predict_proba(frame)


# -- protocol round-trips ------------------------------------------------------------------------

def test_v1_predictions_match_in_process_exactly(secured, bundle, rows):
    status, body, _ = secured.post(f"/v1/models/{secured.name}:predict", {"instances": rows})
    assert status == 200, body
    labels, proba = in_process(bundle, rows)
    assert body["predictions"] == labels
    served = np.array([[p[c] for c in bundle.classes] for p in body["probabilities"]])
    assert np.array_equal(served, proba)  # bit for bit: JSON floats round-trip exactly


def test_v1_single_rows_match_in_process_exactly(secured, bundle, rows):
    labels, proba = in_process(bundle, rows[:10])
    for i, row in enumerate(rows[:10]):
        status, body, _ = secured.post(f"/v1/models/{secured.name}:predict", {"instances": [row]})
        assert status == 200, body
        assert body["predictions"] == [labels[i]]
        assert [body["probabilities"][0][c] for c in bundle.classes] == proba[i].tolist()


def test_v2_predictions_match_in_process_exactly(secured, bundle, rows):
    status, body, _ = secured.post(f"/v2/models/{secured.name}/infer", {"id": "req-1", **v2_body(bundle.schema, rows)})
    assert status == 200, body
    outputs = {o["name"]: o for o in body["outputs"]}
    labels, proba = in_process(bundle, rows)
    assert body["id"] == "req-1"
    assert outputs["predictions"]["data"] == labels
    assert outputs["probabilities"]["shape"] == [len(rows), 2]
    assert np.array_equal(np.array(outputs["probabilities"]["data"]).reshape(len(rows), 2), proba)


def test_v2_accepts_column_tensors_of_shape_rows_by_one(secured, bundle, rows):
    body = v2_body(bundle.schema, rows[:3])
    for tensor in body["inputs"]:
        tensor["shape"] = [3, 1]
        tensor["data"] = [[v] for v in tensor["data"]]
    status, answer, _ = secured.post(f"/v2/models/{secured.name}/infer", body)
    assert status == 200, answer
    assert answer["outputs"][0]["data"] == in_process(bundle, rows[:3])[0]


def test_metadata_lists_every_input_feature_with_its_datatype(secured, bundle):
    status, body, _ = secured.get(f"/v2/models/{secured.name}")
    assert status == 200, body
    inputs = {i["name"]: i["datatype"] for i in body["inputs"]}
    assert list(inputs) == bundle.input_columns
    expected = {"integer": "INT64", "float": "FP64", "string": "BYTES"}
    assert all(inputs[c] == expected[bundle.schema["columns"][c]["type"]] for c in inputs)
    assert {o["name"] for o in body["outputs"]} == {"predictions", "probabilities"}
    status, models, _ = secured.get("/v1/models")
    assert status == 200 and models == {"models": [secured.name]}


def test_a_client_can_build_a_v2_request_from_the_metadata(secured, rows):
    _, meta, _ = secured.get(f"/v2/models/{secured.name}")
    request = {"inputs": [{"name": i["name"], "datatype": i["datatype"], "shape": [1], "data": [rows[0][i["name"]]]} for i in meta["inputs"]]}
    status, body, _ = secured.post(f"/v2/models/{secured.name}/infer", request)
    assert status == 200, body


def test_explain_attributions_are_per_raw_column_and_add_up(secured, bundle, rows):
    status, body, _ = secured.post(f"/v1/models/{secured.name}:explain", {"instances": rows[:3]})
    assert status == 200, body
    estimator = bundle.model.steps[-1][1]
    features = bundle.model.steps[0][1].transform(pd.DataFrame(rows[:3]).astype(object).where(pd.DataFrame(rows[:3]).notna(), None))
    raw = estimator.decision_function(features)
    labels, _ = in_process(bundle, rows[:3])
    for i, item in enumerate(body["explanations"]):
        assert set(item["attributions"]) == set(bundle.input_columns)
        total = item["base_value"] + sum(item["attributions"].values())
        assert total == pytest.approx(item["output"], abs=1e-9)
        assert item["output"] == pytest.approx(raw[i], abs=1e-6)  # shap's additivity against the model itself
        assert item["prediction"] == labels[i]
        magnitudes = [abs(v) for v in item["attributions"].values()]
        assert magnitudes == sorted(magnitudes, reverse=True)
    assert body["method"] == "tree" and body["output_space"] == "log-odds"


# -- bad input: 4xx naming the field, never a 500 ------------------------------------------------

def _bad(predictor, rows, mutate, path="v1"):
    row = dict(rows[0])
    mutate(row)
    return predictor.post(f"/v1/models/{predictor.name}:predict", {"instances": [rows[1], row]})


@pytest.mark.parametrize("mutate, status, needle", [
    (lambda r: r.pop("annual_income"), 400, "instances[1]: missing column 'annual_income'"),
    (lambda r: r.update(favourite_colour="blue"), 400, "instances[1]: unknown column 'favourite_colour'"),
    (lambda r: r.update(annual_income="lots"), 400, "instances[1].annual_income: expected a number, got str 'lots'"),
    (lambda r: r.update(annual_income=True), 400, "instances[1].annual_income: expected a number, got bool"),
    (lambda r: r.update(loan_amount=1000.5), 400, "instances[1].loan_amount: expected a whole number"),
    (lambda r: r.update(annual_income=-5.0), 400, "instances[1].annual_income: -5.0 is outside the training range"),
    (lambda r: r.update(state="Atlantis"), 400, "instances[1].state: category 'Atlantis' was not seen in training"),
    (lambda r: r.update(state=7), 400, "instances[1].state: expected a string, got int 7"),
    (lambda r: r.update(state=None), 400, "instances[1].state: is null"),
])
def test_bad_values_are_rejected_naming_the_field(secured, rows, mutate, status, needle):
    code, body, _ = _bad(secured, rows, mutate)
    assert code == status, body
    assert needle in body["error"]


@pytest.mark.parametrize("raw, needle", [
    (b'{"instances": [', "Unrecognized request format"),
    (b'"just a string"', "expected a JSON object"),
    (b'{"instances": []}', "non-empty list"),
    (b'{"instances": {"a": 1}}', "instances"),
    (b'{"instances": [[1, 2, 3]]}', "instances[0]: expected an object keyed by column name"),
    (b'{"rows": []}', "unknown key 'rows'"),
])
def test_malformed_bodies_are_400(secured, raw, needle):
    code, body, _ = secured.post(f"/v1/models/{secured.name}:predict", raw=raw)
    assert code == 400, body
    assert needle in body["error"]


def test_v2_bad_tensors_are_400_naming_the_input(secured, bundle, rows):
    good = v2_body(bundle.schema, rows[:2])

    def variant(change):
        body = json.loads(json.dumps(good))
        change(body["inputs"])
        return secured.post(f"/v2/models/{secured.name}/infer", body)

    code, body, _ = variant(lambda inputs: inputs.__setitem__(0, {**inputs[0], "datatype": "BOOL"}))
    assert code == 400 and f"inputs[{inputs_name(good, 0)}]: datatype BOOL" in body["error"]
    code, body, _ = variant(lambda inputs: inputs[1].update(shape=[3]))
    assert code == 400 and "shape says 3 rows but data has 2" in body["error"]
    code, body, _ = variant(lambda inputs: inputs.append(dict(inputs[0])))
    assert code == 400 and "given more than once" in body["error"]
    code, body, _ = variant(lambda inputs: inputs.pop())
    assert code == 400 and "missing column" in body["error"]
    code, body, _ = variant(lambda inputs: inputs[2].update(shape=[1], data=[inputs[2]["data"][0]]))
    assert code == 400 and "has 1 rows but" in body["error"]
    code, body, _ = secured.post(f"/v2/models/{secured.name}/infer", raw=b'{"inputs": 5}')
    assert 400 <= code < 500


def inputs_name(body, i):
    return body["inputs"][i]["name"]


def test_too_many_rows_and_oversized_bodies_are_refused(secured, rows):
    code, body, _ = secured.post(f"/v1/models/{secured.name}:predict", {"instances": rows[:1] * 51})
    assert code == 400 and "51 rows is over the limit of 50" in body["error"]
    code, body, _ = secured.post(f"/v1/models/{secured.name}:predict", raw=b" " * 200_001)
    assert code == 413 and "KEEL_SERVE_MAX_BODY_BYTES" in body["error"]


def test_unknown_model_is_404(secured, rows):
    code, body, _ = secured.post("/v1/models/no-such-model:predict", {"instances": rows[:1]})
    assert code == 404, body
    code, body, _ = secured.post("/v2/models/no-such-model/infer", {"inputs": []})
    assert code == 404, body


# -- authentication --------------------------------------------------------------------------------

def _jwt(key, **claims):
    import jwt

    payload = {"iss": "https://issuer.keel.test", "aud": "keel-predictor", "sub": "alice", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "test-key"})


def test_missing_or_wrong_credentials_are_401(secured, rows, jwks):
    path, body = f"/v1/models/{secured.name}:predict", {"instances": rows[:1]}
    code, answer, headers = secured.post(path, body, auth=False)
    assert code == 401 and "missing Authorization header" in answer["error"]
    assert headers.get("www-authenticate", headers.get("WWW-Authenticate", "")).startswith("Bearer")
    code, _, _ = secured.post(path, body, auth=False, headers={"authorization": "Bearer not-the-token"})
    assert code == 401
    code, _, _ = secured.post(path, body, auth=False, headers={"authorization": f"Basic {TOKEN}"})
    assert code == 401
    for claims in ({"exp": int(time.time()) - 60}, {"aud": "someone-else"}, {"iss": "https://evil.test"}):
        code, answer, _ = secured.post(path, body, auth=False, headers={"authorization": f"Bearer {_jwt(jwks[0], **claims)}"})
        assert code == 401, (claims, answer)
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    code, _, _ = secured.post(path, body, auth=False, headers={"authorization": f"Bearer {_jwt(stranger)}"})
    assert code == 401
    code, _, _ = secured.get(f"/v2/models/{secured.name}", auth=False)
    assert code == 401  # metadata is not public either


def test_valid_token_or_jwt_is_accepted(secured, rows, jwks):
    path, body = f"/v1/models/{secured.name}:predict", {"instances": rows[:1]}
    assert secured.post(path, body)[0] == 200
    assert secured.post(path, body, auth=False, headers={"authorization": f"Bearer {_jwt(jwks[0])}"})[0] == 200


def test_health_and_metrics_stay_open_for_probes(secured):
    for path in ("/", "/v2/health/live", "/v2/health/ready", f"/v2/models/{secured.name}/ready", "/metrics"):
        code, _, _ = secured.get(path, auth=False)
        assert code == 200, path


def test_metrics_count_requests_by_status_and_latency(secured, rows):
    secured.post(f"/v1/models/{secured.name}:predict", {"instances": rows[:1]})
    secured.post(f"/v1/models/{secured.name}:predict", {"instances": rows[:1]}, auth=False)
    code, text, _ = secured.get("/metrics", auth=False)
    assert code == 200
    assert 'keel_serve_requests_total{method="POST",route="v1_predict",status="200"}' in text
    assert 'keel_serve_requests_total{method="POST",route="v1_predict",status="401"}' in text
    assert 'keel_serve_request_seconds_bucket{le="0.005",route="v1_predict"}' in text


def test_request_logs_hold_no_feature_values(secured, rows):
    row = dict(rows[0], annual_income=123457.0)
    code, _, _ = secured.post(f"/v1/models/{secured.name}:predict", {"instances": [row]}, headers={"x-request-id": "rid-no-values"})
    assert code == 200
    logs = secured.wait_for_log('"request_id": "rid-no-values"')
    line = next(line for line in logs.splitlines() if "rid-no-values" in line)
    assert json.loads(line)["status"] == 200
    assert "123457" not in logs


# -- policies and payload logging (the relaxed server) --------------------------------------------------

def test_warn_policy_serves_and_counts_unseen_values(relaxed, rows):
    row = dict(rows[0], state="Atlantis", annual_income=99_000_000.0)
    code, body, _ = relaxed.post(f"/v1/models/{relaxed.name}:predict", {"instances": [row]}, headers={"x-request-id": "rid-warn"})
    assert code == 200, body
    logs = relaxed.wait_for_log('"request_id": "rid-warn"')
    assert '"event": "input_warning"' in logs
    # Two workers: ask until the worker that served the request answers /metrics.
    texts = [relaxed.get("/metrics")[1] for _ in range(6)]
    assert any('keel_serve_input_warnings_total{column="state",kind="unseen_category",model="relaxed"} 1.0' in t for t in texts)


def test_payload_logging_records_inputs_and_predictions(relaxed, rows):
    row = dict(rows[0], annual_income=765432.0)
    code, body, _ = relaxed.post(f"/v1/models/{relaxed.name}:predict", {"instances": [row]}, headers={"x-request-id": "rid-payload"})
    assert code == 200
    logs = relaxed.wait_for_log('"request_id": "rid-payload"')
    payload = json.loads(next(line for line in logs.splitlines() if '"event": "payload"' in line and "rid-payload" in line))
    assert payload["inputs"]["annual_income"] == [765432.0]
    assert payload["predictions"] == body["predictions"]


def test_two_workers_share_one_port(relaxed, rows):
    # Answers come from the workers, so once one has answered the fork loop (which
    # starts both before either can serve) is done.
    for _ in range(10):
        code, _, _ = relaxed.post(f"/v1/models/{relaxed.name}:predict", {"instances": rows[:1]})
        assert code == 200
    pid = relaxed.process.pid
    children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    assert len(children) == 2  # --workers 2: forked after the model loaded


# -- a tampered bundle never serves -----------------------------------------------------------------

def test_tampered_bundle_is_refused_at_start(tmp_path, bundle_uri):
    import shutil

    copy = tmp_path / "v1"
    shutil.copytree(bundle_uri, copy)
    data = bytearray((copy / "model.joblib").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.joblib").write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=r"exited with 2:[\s\S]*model.joblib"):
        start_predictor(str(copy))
