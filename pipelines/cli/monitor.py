"""`keel monitor serve`: the payload receiver on this machine, the same server the keel-monitor Deployment runs.

Locally there is no KServe agent; point a logger (or `curl`) at it, and the rows land under
`{store}/monitoring/{model}/{version}/date=.../hour=...` like on a cluster.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    from keel.components.monitor.__main__ import add_arguments

    monitor = sub.add_parser("monitor", help="receive and store served traffic (KServe's payload CloudEvents)", description=(
        "keel monitor serve: accept KServe's inference CloudEvents POSTed to /, join each request with its response by "
        "ce-id, and write them as Parquet partitioned by model, version and hour under {store}/monitoring. An event "
        "is answered 202 only once it is in the write-ahead log on disk."))
    verbs = monitor.add_subparsers(dest="verb", metavar="VERB", required=True)
    serve = verbs.add_parser("serve", help="run the receiver on 127.0.0.1 until Ctrl-C")
    add_arguments(serve)
    labels = verbs.add_parser("labels", help="load ground truth for logged predictions (by request id or entity key)",
                              description="Stores a label table under {store}/monitoring/{model}/labels, joined to the "
                              "logged predictions when a monitoring run reads its window. Ids no logged call has are "
                              "counted and listed (their labels are kept).")
    labels.add_argument("source", help="a CSV or Parquet file, an s3:// object, or a postgresql:// URI with --query")
    labels.add_argument("--model", required=True, help="the registered model name the predictions were logged for")
    labels.add_argument("--store", default="./runs", help="artifact store (local directory or s3://bucket/prefix)")
    labels.add_argument("--key", default="event_id",
                        help="the join key: event_id (the request id; with a `row` column for multi-row calls) or an input column")
    labels.add_argument("--label", default="label", help="the column holding the true label")
    labels.add_argument("--query", help="the SELECT that returns the labels (Postgres sources)")


def cmd_monitor(args) -> int:
    if args.verb == "labels":
        return cmd_labels(args)
    from keel.components.monitor.__main__ import run

    return run(args)


def cmd_labels(args) -> int:
    from keel.components._common.config import NAME_PATTERN
    from keel.components._common.errors import ConfigError
    from keel.components.monitor import labels

    import re

    if not re.fullmatch(NAME_PATTERN, args.model):
        raise ConfigError(f"--model: {args.model!r} is not a model name (lowercase letters, digits, '.', '_', '-')")
    frame = labels.normalize(labels.read_table(args.source, args.query), args.source, key=args.key, label=args.label)
    loaded = labels.load(args.store, args.model, frame)
    stored = "stored" if loaded.new else "already stored (same content)"
    print(f"keel: {loaded.rows:,} label(s) for {args.model} {stored} at {loaded.uri}")
    if loaded.matched is None:
        print(f"  keyed by input column {args.key!r}: matched to logged requests when a monitoring run reads its window")
    else:
        print(f"  {loaded.matched:,} match a logged request; {len(loaded.unknown):,} unknown id(s)"
              + (f", e.g. {', '.join(loaded.unknown[:5])} (kept: their calls may not be stored yet)" if loaded.unknown else ""))
    return 0


COMMANDS = {"monitor": cmd_monitor}
