"""The payload receiver: CloudEvents in, durable, joined, partitioned Parquet out; every bad event a one-line 4xx.

The server tests start the real `python -m keel.components.monitor` process and talk HTTP to it; the
crash test kills it with SIGKILL after its acknowledgements and checks that a restart stores every
acknowledged event exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.components._common.errors import DataError
from keel.components.monitor.batches import Batcher
from keel.components.monitor.events import BadEvent, parse
from keel.components.monitor.wal import WriteAheadLog
from testkit.monitor import V1_REQUEST, V1_RESPONSE, Server, event, http_parts, stored

# --- events ------------------------------------------------------------------------------------------

def test_a_kserve_binary_event_parses_with_model_and_version_from_the_query():
    headers, body = http_parts(event("request", "abc-1", V1_REQUEST))
    parsed = parse(headers, body, {"model": "loans-high-risk", "version": "3"})
    assert (parsed.kind, parsed.id, parsed.model, parsed.version) == ("request", "abc-1", "loans-high-risk", "3")
    assert parsed.body == V1_REQUEST and parsed.time == "2026-07-01T10:15:00.000000+00:00"
    assert (parsed.namespace, parsed.inference_service, parsed.endpoint) == ("keel-dev", "loans", "default")


def test_the_url_the_deploy_step_renders_names_model_and_version_for_the_receiver():
    from urllib.parse import parse_qsl, urlsplit

    from keel.components._common.config import DeploySection
    from keel.components.deploy.inference_service import logger_url

    url = logger_url(DeploySection(payload_logger="http://keel-monitor.monitoring"), {"model_name": "loans-high-risk", "version": 7})
    headers, body = http_parts(event("request", "d-1", V1_REQUEST))
    parsed_event = parse(headers, body, dict(parse_qsl(urlsplit(url).query)))
    assert (parsed_event.model, parsed_event.version) == ("loans-high-risk", "7")


def test_structured_mode_and_the_service_name_fallback():
    headers, body = http_parts(event("response", "abc-2", V1_RESPONSE), structured=True)
    parsed = parse(headers, body, {})
    assert (parsed.kind, parsed.model, parsed.version, parsed.body) == ("response", "loans", "unknown", V1_RESPONSE)


@pytest.mark.parametrize("change, status, text", [
    (lambda h, b: ({k: v for k, v in h.items() if k != "ce-id"}, b), 400, "not a CloudEvent"),
    (lambda h, b: ({**h, "ce-type": "com.example.other"}, b), 422, "not an inference event"),
    (lambda h, b: (h, b"[1, 2]"), 400, "not an object"),
    (lambda h, b: (h, b"{not json"), 400, "body: not JSON"),
    (lambda h, b: ({**h, "ce-time": "yesterday"}, b), 400, "ce-time 'yesterday'"),
    (lambda h, b: ({**h, "ce-inferenceservicename": "../../etc"}, b), 400, "model '../../etc'"),
])
def test_bad_events_are_refused_with_the_field_named(change, status, text):
    headers, body = change(*http_parts(event("request", "abc-3", V1_REQUEST)))
    with pytest.raises(BadEvent, match=text) as caught:
        parse(headers, body, {})
    assert caught.value.status == status and "\n" not in str(caught.value)


# --- write-ahead log ---------------------------------------------------------------------------------

def test_the_log_replays_what_it_fsynced_and_cuts_a_torn_tail(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append([b"one", b"two"])
    wal.append([b"three"])
    wal.close()
    with open(wal.path(wal.current), "ab") as handle:  # a crash mid-append: half a header and no payload
        handle.write(b"\x09\x00\x00")
    again = WriteAheadLog(tmp_path)
    assert [r for _, r in again.replay()] == [b"one", b"two", b"three"]
    again.append([b"four"])  # the torn bytes are cut before the next record
    assert [r for _, r in WriteAheadLog(tmp_path).replay()] == [b"one", b"two", b"three", b"four"]


def test_damage_inside_a_sealed_segment_is_an_error_not_a_silent_loss(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append([b"first record", b"second record"])
    sealed = wal.seal()
    wal.append([b"newer"])
    data = bytearray(wal.path(sealed).read_bytes())
    data[10] ^= 0xFF
    wal.path(sealed).write_bytes(bytes(data))
    with pytest.raises(DataError, match="damaged"):
        list(WriteAheadLog(tmp_path).replay())


# --- joining and writing ------------------------------------------------------------------------------

@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def parsed(kind, event_id, body, **kw):
    return parse(*http_parts(event(kind, event_id, body, **kw)), {"model": "loans", "version": "2"})


def test_request_and_response_join_into_one_row_per_hour_partition(tmp_path):
    batcher = Batcher(str(tmp_path / "store"), WriteAheadLog(tmp_path / "wal"))
    batcher.commit([parsed("request", "a", V1_REQUEST), parsed("request", "b", V1_REQUEST, time="2026-07-01T11:01:00Z")])
    batcher.commit([parsed("response", "b", V1_RESPONSE, time="2026-07-01T11:01:00Z"), parsed("response", "a", V1_RESPONSE)])
    result = batcher.flush()
    assert result.rows == 2 and result.unmatched == 0
    assert sorted(Path(f).relative_to(tmp_path / "store").parent.as_posix() for f in result.files) == [
        "monitoring/loans/2/date=2026-07-01/hour=10", "monitoring/loans/2/date=2026-07-01/hour=11"]
    rows = sorted(stored(tmp_path / "store"), key=lambda r: r["event_id"])
    assert [(r["event_id"], r["status"]) for r in rows] == [("a", "joined"), ("b", "joined")]
    assert json.loads(rows[0]["request"]) == V1_REQUEST and json.loads(rows[0]["response"]) == V1_RESPONSE
    assert not WriteAheadLog(tmp_path / "wal").segments() or not list(WriteAheadLog(tmp_path / "wal").replay())


def test_a_half_waits_across_flushes_then_is_written_alone_after_join_seconds(tmp_path):
    clock = Clock()
    batcher = Batcher(str(tmp_path / "store"), WriteAheadLog(tmp_path / "wal"), join_seconds=60, clock=clock)
    batcher.commit([parsed("request", "late", V1_REQUEST), parsed("request", "lost", V1_REQUEST)])
    assert batcher.flush().rows == 0  # both still waiting: carried into the next segment
    assert [json.loads(r)["id"] for _, r in WriteAheadLog(tmp_path / "wal").replay()] == ["late", "lost"]
    batcher.commit([parsed("response", "late", V1_RESPONSE)])
    clock.now += 61
    result = batcher.flush()
    assert (result.rows, result.unmatched) == (2, 1)
    assert sorted((r["event_id"], r["status"]) for r in stored(tmp_path / "store")) == [("late", "joined"), ("lost", "request_only")]


def test_a_crash_between_writing_and_dropping_a_segment_stores_each_event_once(tmp_path, monkeypatch):
    store, wal_dir = str(tmp_path / "store"), tmp_path / "wal"
    batcher = Batcher(store, WriteAheadLog(wal_dir))
    batcher.commit([parsed("request", str(i), V1_REQUEST) for i in range(5)] + [parsed("response", str(i), V1_RESPONSE) for i in range(5)])
    # the files are written, then the process dies before the segment is dropped
    monkeypatch.setattr(WriteAheadLog, "drop", lambda self, number: (_ for _ in ()).throw(SystemExit("killed")))
    with pytest.raises(SystemExit):
        batcher.flush()
    monkeypatch.undo()
    first = stored(store)
    again = Batcher(store, WriteAheadLog(wal_dir))
    for segment, record in again.wal.replay():
        from keel.components.monitor.events import InferenceEvent

        again.add(InferenceEvent.from_record(record), segment)
    again.flush()
    rows = stored(store)
    assert len(first) == len(rows) == 5 and sorted(r["event_id"] for r in rows) == [str(i) for i in range(5)]


def test_a_failing_store_keeps_the_rows_for_the_next_flush(tmp_path, monkeypatch):
    from keel.components._common import storage

    batcher = Batcher(str(tmp_path / "store"), WriteAheadLog(tmp_path / "wal"))
    batcher.commit([parsed("request", "x", V1_REQUEST), parsed("response", "x", V1_RESPONSE)])
    real = storage.write_bytes
    monkeypatch.setattr(storage, "write_bytes", lambda *a, **k: (_ for _ in ()).throw(OSError("store down")))
    with pytest.raises(OSError):
        batcher.flush()
    assert batcher.pending_rows() == 1
    monkeypatch.setattr(storage, "write_bytes", real)
    assert batcher.flush().rows == 1 and [r["event_id"] for r in stored(tmp_path / "store")] == ["x"]


def test_open_halves_over_max_open_are_written_alone_so_memory_stays_bounded(tmp_path):
    batcher = Batcher(str(tmp_path / "store"), WriteAheadLog(tmp_path / "wal"), max_open=3)
    batcher.commit([parsed("request", f"r{i}", V1_REQUEST) for i in range(5)])
    assert batcher.due()
    result = batcher.flush()
    assert result.unmatched == 2 and len(batcher.open) == 3
    assert sorted(r["event_id"] for r in stored(tmp_path / "store")) == ["r0", "r1"]  # the oldest go first


# --- the real server ---------------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    started = Server(tmp_path)
    yield started
    if started.process.poll() is None:
        started.stop(signal.SIGKILL)


def test_the_server_acknowledges_joins_and_writes_on_shutdown(server):
    for i in range(3):
        assert server.send(event("request", f"id-{i}", V1_REQUEST)).status_code == 202
        assert server.send(event("response", f"id-{i}", V1_RESPONSE), structured=i == 1).status_code == 202
    metrics = server.session.get(server.url + "/metrics", timeout=10).text
    assert 'keel_monitor_events_total{kind="request"} 3.0' in metrics and "keel_monitor_pending_rows 3.0" in metrics
    assert server.session.get(server.url + "/ready", timeout=10).json() == {"status": "ready"}
    server.stop()
    rows = stored(server.store)
    assert sorted((r["event_id"], r["status"], r["model"], r["version"]) for r in rows) == [
        (f"id-{i}", "joined", "loans", "2") for i in range(3)]


def _batch(*items) -> bytes:
    return json.dumps([{"specversion": "1.0", "id": i, "source": "keel-serve", "type": t, "time": "2026-07-01T10:15:00Z",
                        "datacontenttype": "application/json", "data": d} for i, t, d in items]).encode()


def test_a_cloudevents_batch_is_acknowledged_whole_and_stored_like_single_events(server):
    from keel.components._common.payload_logging import BATCH_CONTENT_TYPE, REQUEST_TYPE, RESPONSE_TYPE

    body = _batch(*[(f"b-{i}", kind, data) for i in range(3)
                    for kind, data in ((REQUEST_TYPE, V1_REQUEST), (RESPONSE_TYPE, V1_RESPONSE))])
    reply = server.session.post(server.url + "/?model=loans&version=2", data=body,
                                headers={"content-type": BATCH_CONTENT_TYPE}, timeout=30)
    assert (reply.status_code, reply.json()) == (202, {"accepted": 6})
    # One bad event refuses the whole batch, naming it: nothing of it is stored.
    bad = _batch(("c-0", REQUEST_TYPE, V1_REQUEST), ("c-0", "com.example.other", V1_RESPONSE))
    refused = server.session.post(server.url + "/?model=loans&version=2", data=bad,
                                  headers={"content-type": BATCH_CONTENT_TYPE}, timeout=30)
    assert refused.status_code == 422 and refused.json()["error"].startswith("event 1 of the batch: ce-type 'com.example.other'")
    for junk, text in ((b"[]", "a non-empty JSON array"), (b"{}", "a non-empty JSON array"), (b"[3]", "event 0 of the batch: a JSON int")):
        answer = server.session.post(server.url + "/", data=junk, headers={"content-type": BATCH_CONTENT_TYPE}, timeout=30)
        assert answer.status_code == 400 and text in answer.json()["error"]
    server.stop()
    assert sorted((r["event_id"], r["status"]) for r in stored(server.store)) == [(f"b-{i}", "joined") for i in range(3)]


def test_bad_requests_get_one_line_4xx_and_the_server_stays_up(server):
    headers, body = http_parts(event("request", "big", {"instances": [[0] * 400_000]}))
    big = server.session.post(server.url + "/", headers=headers, data=body, timeout=30)
    assert big.status_code == 413 and "over the receiver's limit" in big.json()["error"]
    wrong = server.send(event("request", "t", V1_REQUEST), query="?model=../x")
    assert wrong.status_code == 400 and wrong.json()["error"].startswith("model '../x'")
    junk = server.session.post(server.url + "/", data=b"hello", timeout=30)
    assert junk.status_code == 400 and "not a CloudEvent" in junk.json()["error"]
    assert server.session.get(server.url + "/nope", timeout=10).status_code == 404
    assert server.send(event("request", "ok", V1_REQUEST)).status_code == 202
    metrics = server.session.get(server.url + "/metrics", timeout=10).text
    assert 'keel_monitor_rejected_total{reason="oversized"} 1.0' in metrics


def test_sigkill_after_acknowledging_loses_nothing_and_duplicates_nothing(tmp_path):
    first = Server(tmp_path)
    acknowledged = []
    for i in range(20):
        kind = "request" if i % 2 == 0 else "response"
        reply = first.send(event(kind, f"k-{i // 2}", V1_REQUEST if kind == "request" else V1_RESPONSE))
        assert reply.status_code == 202
        acknowledged.append(f"k-{i // 2}")
    first.send(event("request", "k-open", V1_REQUEST))  # its response never comes before the kill
    first.stop(signal.SIGKILL)  # no flush: every acknowledged event is only in the write-ahead log
    assert stored(tmp_path / "store") == []
    second = Server(tmp_path, "--join-seconds", "0.001")
    assert second.replayed == 21
    second.stop()
    rows = stored(tmp_path / "store")
    assert sorted(r["event_id"] for r in rows if r["status"] == "joined") == sorted(set(acknowledged))
    assert [r["event_id"] for r in rows if r["status"] != "joined"] == ["k-open"]
    third = Server(tmp_path)  # a restart after a clean stop replays nothing and writes nothing again
    assert third.replayed == 0
    third.stop()
    assert len(stored(tmp_path / "store")) == 11


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.dictionaries(st.sampled_from(["ce-id", "ce-type", "ce-source", "ce-specversion", "ce-time", "content-type",
                                                "ce-inferenceservicename", "content-length"]),
                               # stripped: the HTTP client itself refuses a header value with leading whitespace
                               st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip), max_size=8),
       body=st.one_of(st.binary(max_size=200), st.builds(lambda v: json.dumps(v).encode(), st.recursive(
           st.none() | st.booleans() | st.integers() | st.text(max_size=10), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8))),
       query=st.sampled_from(["", "?model=loans", "?model=%2e%2e", "?version=", "?model=a&version=1"]))
def test_fuzzed_requests_never_get_a_5xx(server, headers, body, query):
    # A content-length that is not the body's makes any HTTP server wait for bytes that never come (a client
    # fault, not the receiver's): only the true length may be sent.
    headers = {k: v for k, v in headers.items() if k != "content-length" or v == str(len(body))}
    reply = server.session.post(server.url + "/" + query, headers=headers, data=body, timeout=30)
    assert reply.status_code < 500, reply.text
    assert server.process.poll() is None


def test_keel_monitor_serve_is_the_same_receiver(tmp_path):
    keel = str(Path(sys.executable).with_name("keel"))
    local = Server(tmp_path, command=(keel, "monitor", "serve"))
    assert local.send(event("request", "cli-1", V1_REQUEST)).status_code == 202
    assert local.send(event("response", "cli-1", V1_RESPONSE)).status_code == 202
    local.stop(signal.SIGINT)  # Ctrl-C flushes too
    assert [(r["event_id"], r["status"]) for r in stored(local.store)] == [("cli-1", "joined")]


def test_bad_flags_are_one_line_errors(tmp_path):
    done = subprocess.run([sys.executable, "-m", "keel.components.monitor", "--batch-rows", "0", "--wal-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, env={**os.environ})
    assert done.returncode == 2 and done.stderr.strip() == "keel: error: [monitor] --batch-rows: 0; use 1 or more"
