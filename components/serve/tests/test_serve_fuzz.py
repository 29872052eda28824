"""Generated requests against a real predictor process: never a 5xx, and the server survives."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

# Deterministic (CI reruns the same cases), no example database on disk, no deadline:
# each example is a real HTTP round-trip.
FUZZ = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _assert_handled(predictor, path, body=None, raw=None):
    status, answer, _ = predictor.post(path, body, raw=raw)
    assert status < 500, (status, answer, body if raw is None else raw[:200])
    if status >= 400:
        assert isinstance(answer, dict) and answer.get("error"), answer


@pytest.fixture(scope="module")
def columns(bundle):
    return bundle.input_columns


@FUZZ
@given(data=st.data())
def test_v1_rows_with_generated_values(secured, rows, columns, data):
    row = dict(rows[data.draw(st.integers(0, len(rows) - 1))])
    for name in data.draw(st.lists(st.sampled_from(columns), max_size=4, unique=True)):
        action = data.draw(st.sampled_from(["value", "drop", "json"]))
        if action == "drop":
            row.pop(name)
        else:
            row[name] = data.draw(scalars if action == "value" else json_values)
    if data.draw(st.booleans()):
        row[data.draw(st.text(min_size=1, max_size=10))] = data.draw(scalars)
    verb = data.draw(st.sampled_from([":predict", ":explain"]))
    _assert_handled(secured, f"/v1/models/{secured.name}{verb}", {"instances": [row]})


@FUZZ
@given(body=json_values)
def test_arbitrary_json_bodies(secured, body):
    _assert_handled(secured, f"/v1/models/{secured.name}:predict", body)
    _assert_handled(secured, f"/v2/models/{secured.name}/infer", body)


@FUZZ
@given(data=st.data())
def test_v2_tensors_with_generated_fields(secured, bundle, columns, data):
    from testkit.predictor import v2_body

    body = v2_body(bundle.schema, [dict(r) for r in data.draw(st.lists(st.sampled_from(list(range(5))), min_size=1, max_size=3))
                                   and [{c: None for c in columns}]])
    body = json.loads(json.dumps(body))
    for tensor in data.draw(st.lists(st.sampled_from(body["inputs"]), max_size=4)):
        field = data.draw(st.sampled_from(["datatype", "shape", "data", "name"]))
        tensor[field] = data.draw({
            "datatype": st.sampled_from(["BOOL", "INT8", "UINT64", "FP16", "FP64", "BYTES", "NOPE"]) | st.text(max_size=5),
            "shape": st.lists(st.integers(-2, 5), max_size=3) | json_values,
            "data": st.lists(scalars, max_size=4) | json_values,
            "name": st.text(max_size=10) | st.sampled_from(columns),
        }[field])
    _assert_handled(secured, f"/v2/models/{secured.name}/infer", body)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_raw_bytes(secured, raw):
    _assert_handled(secured, f"/v1/models/{secured.name}:predict", raw=raw)
    _assert_handled(secured, f"/v2/models/{secured.name}/infer", raw=raw)


def test_server_is_alive_after_the_fuzzing(secured, rows):
    # Named to sort after the fuzz tests in this module; also meaningful on its own.
    assert secured.process.poll() is None
    assert secured.get("/v2/health/ready", auth=False)[0] == 200
    status, body, _ = secured.post(f"/v1/models/{secured.name}:predict", {"instances": rows[:2]})
    assert status == 200 and len(body["predictions"]) == 2
