"""`keel serve --log-to URL` (KEEL_SERVE_LOG_TO): the predictor posts KServe's payload CloudEvents itself.

On a cluster KServe's agent posts them (the InferenceService's `logger`);
locally there is no agent, so the predictor sends the same two events per
call (`org.kubeflow.serving.inference.request` / `.response`, one `ce-id`,
the V1 or V2 JSON) to keel-monitor, with `?model=&version=` as the deploy
step renders it.

A request never waits for this: `send` puts the call on a bounded queue and
returns (a V2 call as its JSON, see `_flat`); one thread per worker process
serializes and posts. Every
LINGER_SECONDS the thread takes what is queued and sends it as CloudEvents
batches (a JSON array of structured events), up to BATCH_CALLS calls per
POST: the thread shares the predictor's core, and two POSTs per call cost it
about as much as the call itself, where one POST per batch costs a few
percent (make bench-monitor). KServe's agent sends one event per POST; the
receiver takes both. When the
receiver is down, or the queue is full, events are dropped and counted
(`keel_serve_payload_events_dropped_total{reason}`), the thread waits a
little before the next try, and sending resumes by itself when the receiver
answers again.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import time
import urllib.parse
import uuid

from prometheus_client import Counter

from keel.components._common.errors import ConfigError
from keel.components._common.payload_logging import (BATCH_CONTENT_TYPE, REQUEST_TYPE, RESPONSE_TYPE, receiver_url,
                                                     receiver_url_problem)

log = logging.getLogger("keel.serve")

SENT = Counter("keel_serve_payload_events_sent", "Payload CloudEvents the receiver accepted")
DROPPED = Counter("keel_serve_payload_events_dropped", "Payload CloudEvents not delivered, by reason", ["reason"])

RETRY_SECONDS = 1.0  # the pause after a failed post, so a down receiver costs one attempt per second, not per call
BATCH_CALLS = 64  # calls per POST at most (128 events, ~170 KB for the loans: well under the receiver's 1 MiB)
LINGER_SECONDS = 0.05  # how often the thread sends what is queued: events reach the receiver at most this late


def check_url(url: str, where: str = "KEEL_SERVE_LOG_TO") -> str:
    problem = receiver_url_problem(url)
    if problem:
        raise ConfigError(f"{where}: {url!r} is not a receiver URL; {problem}")
    return url.rstrip("/")


class EventSender:
    """A bounded queue and one sending thread (started in the process that first sends: workers fork)."""

    def __init__(self, url: str, model: str, version: str, capacity: int = 10_000, timeout: float = 2.0):
        self.url = receiver_url(check_url(url), model, version)
        split = urllib.parse.urlsplit(self.url)
        self._address = (split.scheme, split.hostname, split.port)
        self._target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        self.timeout = timeout
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._pid = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def send(self, request: dict, response: dict, event_id: str | None = None) -> None:
        """Queues one call's two events; never blocks."""
        if self._pid != os.getpid():
            self._start()
        try:
            # The call's own time goes with it (the events' `time`): a batch is sent up to LINGER_SECONDS later.
            self.queue.put_nowait((event_id or str(uuid.uuid4()), _flat(request), _flat(response), time.time()))
        except queue.Full:
            DROPPED.labels("queue_full").inc(2)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._connection = None
            self._thread = threading.Thread(target=self._run, name="keel-payload-events", daemon=True)
            self._pid = os.getpid()
            self._thread.start()
            atexit.register(self.close)

    def close(self, timeout: float = 5.0) -> None:
        """Sends what is queued (for at most `timeout` seconds), then stops the thread."""
        if self._pid != os.getpid() or not self._thread.is_alive():
            return
        self._stopping.set()  # no pause after a failure now: each queued call gets one try
        self.queue.put((None, None, None, None))
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("payload events: %d calls still queued after %.0f s; dropped", self.queue.qsize(), timeout)

    def _run(self) -> None:
        # The thread sleeps LINGER_SECONDS, then takes whatever is queued: woken per call instead, it would
        # switch threads on the predictor's core once a request. Once closing, it drains until the sentinel
        # close() queues last, so every call queued before it gets one try.
        while True:
            self._stopping.wait(LINGER_SECONDS)
            calls, ended = [], False
            while not ended:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                ended = item[0] is None
                if not ended:
                    calls.append(item)
            for start in range(0, len(calls), BATCH_CALLS):
                batch = calls[start:start + BATCH_CALLS]
                try:
                    self._post(batch)
                except Exception as err:  # down, refused, timed out, a 4xx/5xx: these calls' events are lost, counted
                    DROPPED.labels("send_failed").inc(2 * len(batch))
                    log.warning("payload events to %s not delivered (%s); dropping %d, will retry", self.url,
                                str(err).splitlines()[0][:200], 2 * len(batch))
                    self._stopping.wait(RETRY_SECONDS)  # no pause once closing
            if ended:
                return

    def _post(self, calls: list[tuple]) -> None:
        import datetime as dt
        import http.client

        # Structured events (CloudEvents 1.0's JSON format) spliced as text around each body's JSON, so a V2
        # body serialized by kserve is not parsed back and serialized again: the SDK's CloudEvent objects cost
        # ~40 us an event on the predictor's core. The receiver parses each one with the SDK
        # (components/monitor/events.py), which is where the format is checked.
        parts = []
        for event_id, request, response, when in calls:
            stamp = dt.datetime.fromtimestamp(when, dt.timezone.utc).isoformat()
            for kind, body in ((REQUEST_TYPE, request), (RESPONSE_TYPE, response)):
                head = json.dumps({"specversion": "1.0", "id": event_id, "source": "keel-serve", "type": kind,
                                   "time": stamp, "datacontenttype": "application/json"})
                parts.append(head[:-1].encode() + b', "data": ' + rest_json(body) + b"}")
        data = b"[" + b",".join(parts) + b"]"
        # http.client on one kept-alive connection, not requests: this thread shares the predictor's core, and a
        # requests.post costs ~550 us of CPU against ~110 us.
        if self._connection is None:
            scheme, host, port = self._address
            kind_of = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            self._connection = kind_of(host, port, timeout=self.timeout)
        try:
            self._connection.request("POST", self._target, body=data, headers={"content-type": BATCH_CONTENT_TYPE})
            reply = self._connection.getresponse()
            text = reply.read()
        except Exception:
            self._connection.close()  # reconnect on the next post
            self._connection = None
            raise
        if reply.status >= 300:
            raise OSError(f"HTTP {reply.status}: {text.decode(errors='replace').strip()[:200]}")
        SENT.inc(len(parts))


def _flat(message):
    """A kserve InferRequest or InferResponse as its JSON now, in the request; a V1 dict as it is.

    Queued as objects, V2 calls cost the predictor a quarter of its throughput, most of it not in the sending
    thread (measured with make bench-monitor: 0.75 of logging off as objects, 0.87 as bytes); the JSON costs
    the request ~60 us. V1 dicts cost nothing like it, and are serialized by the thread."""
    return message if isinstance(message, dict) else rest_json(message)


def rest_json(message) -> bytes:
    """A V1 dict, or a kserve InferRequest/InferResponse, as its REST JSON."""
    if isinstance(message, bytes):
        return message
    if isinstance(message, dict):
        return json.dumps(message, default=str).encode()
    body, _ = message.to_rest()
    if isinstance(body, str):
        return body.encode()
    return body if isinstance(body, bytes) else json.dumps(body, default=str).encode()
