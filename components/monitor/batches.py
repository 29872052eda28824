"""Joining requests to responses, and writing the joined rows as Parquet, partitioned by model, version and hour.

Every event reaches the batcher after it is durable in the write-ahead log, in
log order, so a replay after a crash rebuilds exactly the state the receiver
had. A row belongs to the log segment of the event that completed it (or, for
a half whose other half never came, the segment holding its newest copy), and
each segment's rows are written as one file per partition named after the
segment: `{store}/monitoring/{model}/{version}/date=YYYY-MM-DD/hour=HH/part-<segment>.parquet`.
A replayed segment rewrites the same files with the same rows, so nothing is
stored twice, and a segment is dropped only after its files are written.

Memory is bounded: a flush is due when `batch_rows` rows wait or the oldest
has waited `flush_seconds`; halves still waiting for their other half after
`join_seconds`, or beyond `max_open`, are written alone (status
`request_only` / `response_only`) instead of waiting forever.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from keel.components._common import storage
from keel.components.monitor.events import InferenceEvent
from keel.components.monitor.wal import WriteAheadLog

_RECENT = 100_000  # completed ids remembered, so a retried or replayed half does not open a new row


def schema():
    import pyarrow as pa

    when = pa.timestamp("us", tz="UTC")
    return pa.schema([("event_id", pa.string()), ("model", pa.string()), ("version", pa.string()), ("status", pa.string()),
                      ("request_time", when), ("response_time", when), ("received_at", when),
                      ("request", pa.string()), ("response", pa.string()), ("namespace", pa.string()),
                      ("inference_service", pa.string()), ("endpoint", pa.string())])


@dataclass
class _Open:
    halves: dict[str, InferenceEvent]
    segment: int
    seen: float  # monotonic time the newest half arrived (replayed halves count from the replay)


@dataclass
class FlushResult:
    segment: int
    rows: int
    files: list[str] = field(default_factory=list)
    unmatched: int = 0


class Batcher:
    """The receiver's state between the log and the store; every method is safe from any thread."""

    def __init__(self, store: str, wal: WriteAheadLog, batch_rows: int = 10_000, flush_seconds: float = 30.0,
                 join_seconds: float = 60.0, max_open: int = 100_000, clock=time.monotonic):
        self.store, self.wal = store, wal
        self.batch_rows, self.flush_seconds, self.join_seconds, self.max_open = batch_rows, flush_seconds, join_seconds, max_open
        self.clock = clock
        self.lock = threading.RLock()
        self.open: OrderedDict[str, _Open] = OrderedDict()
        self.rows: dict[int, list[dict]] = {}
        self.completed: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0
        self._oldest_row: float | None = None

    # --- taking events ---------------------------------------------------------------------------------

    def commit(self, events: list[InferenceEvent]) -> int:
        """Makes the events durable (one fsync) and takes them; returns the segment they are in."""
        with self.lock:
            segment = self.wal.append([e.to_record() for e in events])
            for event in events:
                self.add(event, segment)
            return segment

    def add(self, event: InferenceEvent, segment: int) -> None:
        with self.lock:
            if event.id in self.completed:
                self.duplicates += 1
                return
            waiting = self.open.get(event.id)
            if waiting is None:
                self.open[event.id] = _Open({event.kind: event}, segment, self.clock())
                return
            if event.kind in waiting.halves:  # a retried half, or the carried copy of one, replayed
                self.duplicates += 1
                waiting.segment = max(waiting.segment, segment)
                return
            waiting.halves[event.kind] = event
            del self.open[event.id]
            self._row(waiting.halves, segment)

    def _row(self, halves: dict[str, InferenceEvent], segment: int) -> None:
        self.completed[next(iter(halves.values())).id] = None
        while len(self.completed) > _RECENT:
            self.completed.popitem(last=False)
        self.rows.setdefault(segment, []).append(row(halves))
        if self._oldest_row is None:
            self._oldest_row = self.clock()

    # --- flushing --------------------------------------------------------------------------------------

    def pending_rows(self) -> int:
        with self.lock:
            return sum(len(r) for r in self.rows.values())

    def due(self) -> bool:
        with self.lock:
            if self.pending_rows() >= self.batch_rows or len(self.open) > self.max_open:
                return True
            now = self.clock()
            if self._oldest_row is not None and now - self._oldest_row >= self.flush_seconds:
                return True
            oldest_open = next(iter(self.open.values()), None)
            return oldest_open is not None and now - oldest_open.seen >= self.join_seconds

    def flush(self) -> FlushResult:
        """Seals the log, writes every row of the sealed segments, then drops those segments."""
        with self.lock:
            sealed = self.wal.seal()
            unmatched = self._close_stale(sealed)
            carried = [o for o in self.open.values() if o.segment <= sealed]
            if carried:  # halves still waiting move to the new segment before the old ones go
                new = self.wal.append([h.to_record() for o in carried for h in o.halves.values()])
                for waiting in carried:
                    waiting.segment = new
            batches = {s: self.rows.pop(s) for s in sorted(self.rows) if s <= sealed}
            written_rows = sum(len(r) for r in batches.values())
            self._oldest_row = self.clock() if self.rows else None
            old_segments = [s for s in self.wal.segments() if s <= sealed]
        files = []
        try:
            for segment in list(batches):
                files += write_rows(self.store, segment, batches[segment])
                del batches[segment]
        except Exception:
            with self.lock:  # the store failed: the rows wait for the next flush, their segments stay on disk
                for segment, rows in batches.items():
                    self.rows[segment] = rows + self.rows.get(segment, [])
                self._oldest_row = self._oldest_row or self.clock()
            raise
        with self.lock:
            for segment in old_segments:
                self.wal.drop(segment)
        return FlushResult(sealed, written_rows, files, unmatched)

    def _close_stale(self, sealed: int) -> int:
        now = self.clock()
        stale = [k for k, o in self.open.items() if o.segment <= sealed and now - o.seen >= self.join_seconds]
        # over max_open the oldest go too, whatever their age, so memory stays bounded
        over = len(self.open) - len(stale) - self.max_open
        if over > 0:
            keep = set(stale)
            stale += [k for k, o in self.open.items() if o.segment <= sealed and k not in keep][:over]
        for key in stale:
            waiting = self.open.pop(key)
            self._row(waiting.halves, waiting.segment)
        return len(stale)


def row(halves: dict[str, InferenceEvent]) -> dict:
    request, response = halves.get("request"), halves.get("response")
    first = request or response
    status = "joined" if request and response else "request_only" if request else "response_only"
    return {"event_id": first.id, "model": first.model, "version": first.version, "status": status,
            "request_time": _time(request.time) if request else None, "response_time": _time(response.time) if response else None,
            "received_at": _time(max(h.received_at for h in halves.values())),
            "request": json.dumps(request.body, separators=(",", ":")) if request else None,
            "response": json.dumps(response.body, separators=(",", ":")) if response else None,
            "namespace": first.namespace, "inference_service": first.inference_service, "endpoint": first.endpoint}


def partition(store: str, model: str, version: str, when: dt.datetime) -> str:
    return storage.join(store, "monitoring", model, version, f"date={when:%Y-%m-%d}", f"hour={when:%H}")


def write_rows(store: str, segment: int, rows: list[dict]) -> list[str]:
    """One Parquet file per (model, version, hour) for a segment's rows, each written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups: dict[str, list[dict]] = {}
    for r in rows:
        when = r["request_time"] or r["response_time"]
        groups.setdefault(partition(store, r["model"], r["version"], when), []).append(r)
    written = []
    for folder, group in sorted(groups.items()):
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(group, schema=schema()), buffer, compression="zstd")
        uri = storage.join(folder, f"part-{segment:012d}.parquet")
        storage.write_bytes(uri, buffer.getvalue())
        written.append(uri)
    return written


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)
