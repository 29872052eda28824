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


def cmd_monitor(args) -> int:
    from keel.components.monitor.__main__ import run

    return run(args)


COMMANDS = {"monitor": cmd_monitor}
