"""`KEEL_SERVE_LOG_TO` / `keel serve --log-to`: the predictor posts each call's payload CloudEvents to a real
keel-monitor, never delaying or failing a request when the receiver is down, and resumes when it is back."""

from __future__ import annotations

import json
import signal
import socket

import pytest

from keel.components._common.errors import ConfigError
from keel.components.serve.payload_events import SENT, EventSender, check_url
from testkit.monitor import Server, stored



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_each_call_reaches_the_receiver_as_a_joined_row(tmp_path, predictor_factory, bundle_uri, bundle, rows):
    receiver = Server(tmp_path)
    try:
        predictor = predictor_factory(bundle_uri, {"KEEL_SERVE_LOG_TO": receiver.url})
        status, body, _ = predictor.post(f"/v1/models/{predictor.name}:predict", {"instances": rows[:3]},
                                         headers={"x-request-id": "call-v1"})
        assert status == 200
        from testkit.predictor import v2_body

        status, v2, _ = predictor.post(f"/v2/models/{predictor.name}/infer", {**v2_body(bundle.schema, rows[3:5]), "id": "call-v2"})
        assert status == 200
        predictor.stop()  # SIGTERM: the sender delivers what is queued before the process ends
    finally:
        receiver.stop()
    found = {r["event_id"]: r for r in stored(receiver.store)}
    assert set(found) == {"call-v1", "call-v2"} and {r["status"] for r in found.values()} == {"joined"}
    v1 = found["call-v1"]
    assert (v1["model"], v1["version"]) == (bundle.model_name, str(bundle.version))
    assert json.loads(v1["request"]) == {"instances": rows[:3]} and json.loads(v1["response"]) == body
    assert [i["name"] for i in json.loads(found["call-v2"]["request"])["inputs"]] == [i["name"] for i in v2_body(bundle.schema, rows[3:5])["inputs"]]
    assert json.loads(found["call-v2"]["response"])["outputs"][0]["data"] == v2["outputs"][0]["data"]


def test_every_event_posted_in_a_batch_is_counted_as_sent_once(tmp_path):
    receiver = Server(tmp_path)
    try:
        sender = EventSender(receiver.url, "loans", "3")
        before = SENT._value.get()
        for i in range(5):
            sender.send({"instances": [{"x": i}]}, {"predictions": [i]}, f"count-{i}")
        sender.close()  # delivers what is queued
        assert SENT._value.get() - before == 10  # two events a call, counted by the events in each batch
    finally:
        receiver.stop()
    assert sorted(r["event_id"] for r in stored(receiver.store)) == [f"count-{i}" for i in range(5)]


def test_a_down_receiver_costs_no_request_and_sending_resumes(tmp_path, predictor_factory, bundle_uri, rows):
    port = free_port()
    predictor = predictor_factory(bundle_uri, {"KEEL_SERVE_LOG_TO": f"http://127.0.0.1:{port}"})
    for i in range(5):
        status, _, _ = predictor.post(f"/v1/models/{predictor.name}:predict", {"instances": rows[:1]}, headers={"x-request-id": f"down-{i}"})
        assert status == 200
    predictor.wait_for_log("not delivered")
    _, metrics, _ = predictor.get("/metrics")
    assert 'keel_serve_payload_events_dropped_total{reason="send_failed"}' in metrics
    receiver = Server(tmp_path, "--port", str(port))  # the last --port wins: the receiver comes back where it was
    try:
        for i in range(3):
            status, _, _ = predictor.post(f"/v1/models/{predictor.name}:predict", {"instances": rows[:1]}, headers={"x-request-id": f"up-{i}"})
            assert status == 200
        predictor.stop()
    finally:
        receiver_log = receiver.stop(signal.SIGTERM)
    assert (receiver.store / "monitoring").exists(), receiver_log + predictor.logs()[-300:]
    ids = {r["event_id"] for r in stored(receiver.store)}
    assert {"up-0", "up-1", "up-2"} <= ids


@pytest.mark.parametrize("url", ["keel-monitor:8090", "http://127.0.0.1:8090/?model=x", "http://u:p@host"])
def test_a_bad_log_to_url_is_one_line(url):
    with pytest.raises(ConfigError, match="KEEL_SERVE_LOG_TO: .* is not a receiver URL"):
        check_url(url)
