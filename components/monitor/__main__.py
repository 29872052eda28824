"""`python -m keel.components.monitor`: the payload receiver (keel-monitor), as its image and `keel monitor serve` start it.

The store comes from --store or KEEL_MONITOR_STORE (local path or s3://, S3
credentials from the environment as everywhere in Keel); the write-ahead log
lives in --wal-dir, which must survive a restart of the process (in a pod, a
volume), since an acknowledged event may be only there.
"""

from __future__ import annotations

import argparse
import os
import sys


def parser(prog: str = "python -m keel.components.monitor") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Receive KServe's inference CloudEvents and store them as Parquet.")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("KEEL_MONITOR_HOST", "127.0.0.1"), help="address to listen on (0.0.0.0 in a pod)")
    p.add_argument("--port", type=int, default=int(os.environ.get("KEEL_MONITOR_PORT", "8090")), help="port (default 8090; 0 picks a free one)")
    p.add_argument("--store", default=os.environ.get("KEEL_MONITOR_STORE", "./runs"),
                   help="where {store}/monitoring/... goes: the registry store, local or s3:// (default ./runs)")
    p.add_argument("--wal-dir", default=os.environ.get("KEEL_MONITOR_WAL", "./runs/.monitor-wal"),
                   help="the write-ahead log's directory; must persist across restarts")
    p.add_argument("--batch-rows", type=int, default=10_000, help="rows per flush to the store (default 10000)")
    p.add_argument("--flush-seconds", type=float, default=30.0, help="longest a row waits before a flush (default 30)")
    p.add_argument("--join-seconds", type=float, default=60.0, help="how long a request waits for its response (default 60)")
    p.add_argument("--max-event-bytes", type=int, default=1 << 20, help="largest event body accepted (default 1 MiB)")


def check(args) -> None:
    from keel.components._common.errors import ConfigError

    for flag, value, low in (("--port", args.port, 0), ("--batch-rows", args.batch_rows, 1), ("--max-event-bytes", args.max_event_bytes, 1)):
        if value < low:
            raise ConfigError(f"{flag}: {value}; use {low} or more")
    if args.port > 65535:
        raise ConfigError(f"--port: {args.port}; use 0 to 65535")
    for flag, value in (("--flush-seconds", args.flush_seconds), ("--join-seconds", args.join_seconds)):
        if not value > 0:
            raise ConfigError(f"{flag}: {value}; use a number of seconds above 0")


def run(args, on_ready=None) -> int:
    """Replays the log an earlier process left, binds, then serves until SIGTERM/SIGINT."""
    import logging
    import socket

    import uvicorn

    from keel.components.monitor.batches import Batcher
    from keel.components.monitor.receiver import Receiver
    from keel.components.monitor.wal import WriteAheadLog

    check(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    batcher = Batcher(args.store, WriteAheadLog(args.wal_dir), batch_rows=args.batch_rows,
                      flush_seconds=args.flush_seconds, join_seconds=args.join_seconds)
    receiver = Receiver(batcher, max_event_bytes=args.max_event_bytes)
    replayed = receiver.replay()
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    host, port = sock.getsockname()[:2]

    def started():
        # Printed once uvicorn serves (its SIGTERM handler, which flushes, is in place): tests and scripts
        # wait for this line instead of polling.
        print(f"keel-monitor: listening on http://{host}:{port} store={args.store} replayed={replayed}", file=sys.stderr, flush=True)
        if on_ready:
            on_ready(host, port)

    receiver.on_started = started
    config = uvicorn.Config(receiver, lifespan="on", log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> int:
    from keel.components._common.errors import KeelError

    args = parser().parse_args(argv)
    try:
        return run(args)
    except (KeelError, OSError) as err:  # a bad flag, a port in use, an unwritable log directory
        print(f"keel: error: [monitor] {err}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
