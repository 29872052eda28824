"""The baseline for make bench-monitor: keel-monitor's own ASGI app and CloudEvent parsing, answering 202
without the write-ahead log, the join or the store (what the receiver costs before durability)."""

from __future__ import annotations

import socket
import sys
from types import SimpleNamespace

import uvicorn

from keel.components.monitor.batches import FlushResult
from keel.components.monitor.receiver import Receiver


class NoWrite:
    """Stands where the Batcher does: takes the events and keeps nothing."""

    batch_rows = 10_000
    open: dict = {}
    wal = SimpleNamespace(close=lambda: None)

    def commit(self, events):
        return 0

    def pending_rows(self):
        return 0

    def due(self):
        return False

    def flush(self):
        return FlushResult(segment=0, rows=0)


def main() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    receiver = Receiver(NoWrite())
    receiver.on_started = lambda: print(f"keel-monitor: listening on http://127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(receiver, lifespan="on", log_level="warning", access_log=False)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
