"""`keel-monitor`: the HTTP receiver KServe's payload logger posts to.

`POST /` takes one CloudEvent (binary or structured mode). The answer is 202
only once the event is in the write-ahead log on disk: concurrent requests
are gathered into one append and one fsync (group commit). A malformed,
oversized or unknown-type event gets a one-line 4xx JSON error and changes
nothing. `GET /metrics` is Prometheus; `GET /healthz` is liveness and
`GET /ready` turns 503 while the store is failing, so a Service stops sending
before the log grows without bound.

A plain ASGI app (no framework) run by uvicorn: the receiver sits on every
request's path through the KServe agent, and each layer of a framework costs
every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from urllib.parse import parse_qsl

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from keel.components.monitor.batches import Batcher
from keel.components.monitor.events import BadEvent, InferenceEvent, parse_all

log = logging.getLogger("keel.monitor")

EVENTS = Counter("keel_monitor_events", "Inference events acknowledged (durable), by kind", ["kind"])
REJECTED = Counter("keel_monitor_rejected", "Events refused with a 4xx, by reason", ["reason"])
ROWS = Counter("keel_monitor_rows_written", "Rows written to the store, by status", ["status"])
FLUSHES = Counter("keel_monitor_flushes", "Flushes to the store, by outcome", ["outcome"])
OPEN = Gauge("keel_monitor_open_halves", "Requests or responses waiting for their other half")
PENDING = Gauge("keel_monitor_pending_rows", "Joined rows waiting for the next flush")
COMMIT = Histogram("keel_monitor_commit_seconds", "Write-ahead log append + fsync per group commit",
                   buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))

_JSON = [(b"content-type", b"application/json")]


class Receiver:
    """The ASGI app: `Receiver(batcher, max_event_bytes)`; `start()` before serving, `stop()` after."""

    def __init__(self, batcher: Batcher, max_event_bytes: int = 1 << 20, max_pending_rows: int | None = None,
                 flush_check_seconds: float = 0.5):
        self.batcher, self.max_event_bytes = batcher, max_event_bytes
        # Past this many unwritten rows (the store is failing), events are refused with 503 instead of held.
        self.max_pending_rows = max_pending_rows or 4 * batcher.batch_rows
        self.flush_check_seconds = flush_check_seconds
        self.store_error: str | None = None
        self._queue: list[tuple[list[InferenceEvent], asyncio.Future]] = []  # one entry per request
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._flushing = threading.Lock()
        self.on_started = None  # called once the app has started (lifespan startup done)

    # --- lifecycle --------------------------------------------------------------------------------------

    def replay(self) -> int:
        """Takes every complete record of the log left by an earlier process, then writes them out."""
        count = 0
        for segment, record in self.batcher.wal.replay():
            self.batcher.add(InferenceEvent.from_record(record), segment)
            count += 1
        if count:
            self._flush()
        return count

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._tasks = [asyncio.create_task(self._committer()), asyncio.create_task(self._flusher())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._flush)
        self.batcher.wal.close()

    # --- ASGI -------------------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/" and method == "POST":
            return await self._post(scope, receive, send)
        if path == "/metrics" and method == "GET":
            OPEN.set(len(self.batcher.open))
            PENDING.set(self.batcher.pending_rows())
            return await _answer(send, 200, generate_latest(), [(b"content-type", CONTENT_TYPE_LATEST.encode())])
        if path == "/healthz" and method == "GET":
            return await _json(send, 200, {"status": "alive"})
        if path == "/ready" and method == "GET":
            if self.store_error:
                return await _json(send, 503, {"status": "store failing", "error": self.store_error})
            return await _json(send, 200, {"status": "ready"})
        return await _json(send, 404 if method in ("GET", "POST") else 405,
                           {"error": f"{method} {path}: the receiver takes POST / (CloudEvents), GET /metrics, /healthz, /ready"})

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
                if self.on_started:
                    self.on_started()
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _post(self, scope, receive, send):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await self._body(headers, receive)
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            events = parse_all(headers, body, query)
        except BadEvent as err:
            REJECTED.labels(err.reason).inc()
            return await _json(send, err.status, {"error": str(err)})
        if self.batcher.pending_rows() >= self.max_pending_rows:
            REJECTED.labels("backlog").inc()
            return await _json(send, 503, {"error": f"store failing ({self.store_error}); retry later"}, [(b"retry-after", b"5")])
        done = asyncio.get_running_loop().create_future()
        self._queue.append((events, done))
        self._wake.set()
        try:
            await done
        except OSError as err:  # the log could not be written: nothing was acknowledged
            return await _json(send, 503, {"error": f"write-ahead log: {err}"})
        for event in events:
            EVENTS.labels(event.kind).inc()
        if len(events) == 1:
            return await _json(send, 202, {"id": events[0].id, "kind": events[0].kind})
        return await _json(send, 202, {"accepted": len(events)})

    async def _body(self, headers, receive) -> bytes:
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_event_bytes:
            raise BadEvent(f"body: {declared} bytes, over the receiver's limit of {self.max_event_bytes}",
                           status=413, reason="oversized")
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_event_bytes:
                raise BadEvent(f"body: over the receiver's limit of {self.max_event_bytes} bytes", status=413, reason="oversized")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    # --- background work --------------------------------------------------------------------------------

    async def _committer(self):
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.batcher.commit, [event for events, _ in batch for event in events])
            except OSError as err:
                log.error("write-ahead log append failed: %s", err)
                for _, done in batch:
                    done.set_exception(err)
                continue
            COMMIT.observe(time.perf_counter() - started)
            for _, done in batch:
                done.set_result(None)

    async def _flusher(self):
        while True:
            await asyncio.sleep(self.flush_check_seconds)
            if self.batcher.due():
                await asyncio.to_thread(self._flush)

    def _flush(self) -> None:
        with self._flushing:
            try:
                result = self.batcher.flush()
            except Exception as err:  # the store: the rows stay in the log and in memory for the next try
                self.store_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
                FLUSHES.labels("failed").inc()
                log.error("flush failed, will retry: %s", self.store_error)
                return
            self.store_error = None
            FLUSHES.labels("ok").inc()
            if result.rows:
                ROWS.labels("joined").inc(result.rows - result.unmatched)
                if result.unmatched:
                    ROWS.labels("unmatched").inc(result.unmatched)
                log.info("flushed segment %d: %d rows (%d unmatched) in %d files", result.segment, result.rows,
                         result.unmatched, len(result.files))


async def _json(send, status: int, payload: dict, extra: list | None = None):
    await _answer(send, status, json.dumps(payload).encode() + b"\n", _JSON + (extra or []))


async def _answer(send, status: int, body: bytes, headers):
    await send({"type": "http.response.start", "status": status, "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
