"""`keel serve --log-to URL` (KEEL_SERVE_LOG_TO): the predictor posts KServe's payload CloudEvents itself.

On a cluster KServe's agent posts them (the InferenceService's `logger`);
locally there is no agent, so the predictor sends the same two events per
call (`org.kubeflow.serving.inference.request` / `.response`, one `ce-id`,
the V1 or V2 JSON) to keel-monitor, with `?model=&version=` as the deploy
step renders it.

A request never waits for this: `send` puts references on a bounded queue and
returns; one thread per worker process serializes and posts. When the
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
import uuid

from prometheus_client import Counter

from keel.components._common.errors import ConfigError
from keel.components._common.payload_logging import REQUEST_TYPE, RESPONSE_TYPE, receiver_url, receiver_url_problem

log = logging.getLogger("keel.serve")

SENT = Counter("keel_serve_payload_events_sent", "Payload CloudEvents the receiver accepted")
DROPPED = Counter("keel_serve_payload_events_dropped", "Payload CloudEvents not delivered, by reason", ["reason"])

RETRY_SECONDS = 1.0  # the pause after a failed post, so a down receiver costs one attempt per second, not per call


def check_url(url: str, where: str = "KEEL_SERVE_LOG_TO") -> str:
    problem = receiver_url_problem(url)
    if problem:
        raise ConfigError(f"{where}: {url!r} is not a receiver URL; {problem}")
    return url.rstrip("/")


class EventSender:
    """A bounded queue and one sending thread (started in the process that first sends: workers fork)."""

    def __init__(self, url: str, model: str, version: str, capacity: int = 10_000, timeout: float = 2.0):
        self.url = receiver_url(check_url(url), model, version)
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
            self.queue.put_nowait((event_id or str(uuid.uuid4()), request, response))
        except queue.Full:
            DROPPED.labels("queue_full").inc(2)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            import requests

            self._session = requests.Session()
            self._thread = threading.Thread(target=self._run, name="keel-payload-events", daemon=True)
            self._pid = os.getpid()
            self._thread.start()
            atexit.register(self.close)

    def close(self, timeout: float = 5.0) -> None:
        """Sends what is queued (for at most `timeout` seconds), then stops the thread."""
        if self._pid != os.getpid() or not self._thread.is_alive():
            return
        self._stopping.set()  # no pause after a failure now: each queued call gets one try
        self.queue.put((None, None, None))
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("payload events: %d calls still queued after %.0f s; dropped", self.queue.qsize(), timeout)

    def _run(self) -> None:
        while True:
            event_id, request, response = self.queue.get()
            if event_id is None:
                return
            try:
                for kind, body in ((REQUEST_TYPE, request), (RESPONSE_TYPE, response)):
                    self._post(kind, event_id, body)
            except Exception as err:  # down, refused, timed out, a 4xx/5xx: this call's events are lost, counted
                DROPPED.labels("send_failed").inc(2)
                log.warning("payload event to %s not delivered (%s); dropping, will retry", self.url, str(err).splitlines()[0][:200])
                self._stopping.wait(RETRY_SECONDS)

    def _post(self, kind: str, event_id: str, body: dict) -> None:
        from cloudevents.conversion import to_binary
        from cloudevents.http import CloudEvent

        # binary mode, as KServe's agent sends them; the SDK stamps ce-time
        event = CloudEvent({"type": kind, "source": "keel-serve", "id": event_id}, json.loads(json.dumps(body, default=str)))
        headers, data = to_binary(event)
        reply = self._session.post(self.url, data=data, headers=headers, timeout=self.timeout)
        if reply.status_code >= 300:
            raise OSError(f"HTTP {reply.status_code}: {reply.text.strip()[:200]}")
        SENT.inc()


def rest_body(message) -> dict:
    """A V1 dict as it is, a kserve InferRequest/InferResponse as its REST JSON."""
    if isinstance(message, dict):
        return message
    body, _ = message.to_rest()
    return json.loads(body) if isinstance(body, (bytes, str)) else body
