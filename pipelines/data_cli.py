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
    for verb in (listing, show):
        verb.add_argument("--store", default=DEFAULT_STORE, metavar="URI", help=f"artifact store (default: {DEFAULT_STORE})")
        verb.add_argument("--json", action="store_true", help="print JSON (one record per line for list)")


def cmd_data(args: argparse.Namespace) -> int:
    from keel.components._common import datasets

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
    return f"{source.get('uri', '?')} {detail[:60]}".rstrip()
