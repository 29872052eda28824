"""`keel lineage`, `keel runs`, `keel report`: inspect local runs and registered versions.

* `keel lineage MODEL_VERSION` prints a version's chain, from the data source
  and its dataset version through every artifact to the bundle, its
  deployment and its stage events, and writes the graph as an HTML page.
* `keel runs` lists the local runs of a store, newest first.
* `keel report RUN` writes a run's HTML page (steps, durations, metrics,
  gates, embedded reports, links to every artifact and the model card).

RUN is `latest`, a run id (`keel runs` lists them) or a run directory;
MODEL_VERSION is read by keel.pipelines.records.model_ref.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub) -> None:
    """Adds the lineage, runs and report sub-commands to the `keel` parser's sub-parsers."""
    lineage = sub.add_parser("lineage", help="a registered version's lineage, as text and as an HTML graph", description=(
        "Print the chain of a registered model version: the data source and dataset version, every artifact the "
        "pipeline made from it (hash, URI, who and when), the bundle, its deployment and its stage events; and write "
        "a self-contained HTML page with the graph."))
    lineage.add_argument("model_version", metavar="MODEL_VERSION",
                         help="latest (the newest version in the store, any model), v<N> (of the config's registry.model_name), NAME, or NAME:v<N>")
    lineage.add_argument("--out", metavar="PATH", help="the HTML page (default: ./lineage-<model>-v<N>.html)")
    runs = sub.add_parser("runs", help="list the local runs, newest first", description=(
        "List the local runs kept beside a store (<store>/pipeline_root, or ./runs/pipeline_root for an s3:// store): "
        "when each started, how long it took, its outcome, the version it registered and how many steps ran or came "
        "from the cache."))
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="show the newest N runs (default: 20)")
    report = sub.add_parser("report", help="write a local run's HTML page", description=(
        "Write one self-contained HTML page for a local run, like the Kubeflow dashboard's run view: steps with "
        "status and duration, metrics, gate verdicts, the evaluation/fairness/explanation reports, and links to every "
        "artifact and the model card. Prints the page's path and how many of the run's artifacts have a complete "
        "lineage (every stamp key, every parent resolved), naming any that do not."))
    report.add_argument("run", metavar="RUN", help="latest, a run id (see `keel runs`) or a run directory")
    report.add_argument("--out", metavar="PATH", help="the HTML page (default: <run directory>/report.html)")
    for parser in (lineage, runs, report):
        parser.add_argument("--store", metavar="URI", help="registry.store (default: the config's)")
        parser.add_argument("--config", metavar="PATH", help="config whose registry section applies (default: the embedded default config)")


def store_of(args: argparse.Namespace) -> str:
    """--store, else the config's registry.store."""
    if args.store:
        return args.store
    from keel.pipelines.config import DEFAULT_CONFIG, load_config

    return load_config(args.config or DEFAULT_CONFIG).registry.store


def cmd_lineage(args: argparse.Namespace) -> int:
    from keel.pipelines.records import lineage_html
    from keel.pipelines.records.lineage import chain
    from keel.pipelines.records.model_ref import resolve

    ref = resolve(args.model_version, store=args.store, config=args.config)
    lineage = chain(ref.store, ref.model_name, ref.version)
    print("\n".join(lineage.lines()))
    path = lineage_html.write(lineage, args.out or Path.cwd() / f"lineage-{ref.model_name}-v{ref.version}.html")
    print(f"wrote {path}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from keel.components._common.errors import KeelError
    from keel.pipelines.records.runs import list_runs, runs_root

    if args.limit < 1:
        raise KeelError(f"--limit: {args.limit}; use 1 or more")
    root = runs_root(store_of(args))
    records = list_runs(root)
    if not records:
        print(f"no local runs under {root}")
        return 0
    print(f"{'run':44} {'started (UTC)':19} {'duration':>9}  {'status':11} {'registered':22} steps ran/cached")
    for record in records[:args.limit]:
        started = (record.started_at or "?")[:19].replace("T", " ")
        duration = f"{record.seconds:.1f} s" if record.seconds is not None else "-"
        registered = record.registered or {}
        version = f"{registered.get('model_name', '')}:{registered.get('version', '')}" if registered else "-"
        ran = record.count("succeeded") + record.count("failed")
        print(f"{record.run_id:44} {started:19} {duration:>9}  {record.outcome:11} {version:22} {ran}/{record.count('cached')}")
    if len(records) > args.limit:
        print(f"... {len(records) - args.limit} older run(s) under {root}; --limit shows more")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from keel.pipelines.records.report import write_report
    from keel.pipelines.records.runs import load_run, runs_root

    from keel.pipelines.records.lineage import completeness

    record = load_run(runs_root(store_of(args)), args.run)
    print(write_report(record, args.out))
    # The audit question a reviewer asks first: can every artifact be traced?
    check = completeness(record)
    print(f"lineage: {check['complete']}/{check['total']} artifacts complete ({check['share']:.0%})")
    for problem in check["problems"]:
        print(f"  {problem}")
    return 0


COMMANDS = {"lineage": cmd_lineage, "runs": cmd_runs, "report": cmd_report}
