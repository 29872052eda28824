"""Versioned datasets: every ingested table, content-addressed, with its source.

Layout under the artifact store (a local directory or s3://bucket/prefix):

    {store}/datasets/{name}/{sha256 hex}/data.parquet
    {store}/datasets/{name}/{sha256 hex}/record.json

The version *is* the sha256 of the table's Arrow data (tables.ArrowHasher),
so the same rows ingested twice are stored once, and a version can never
change under a reader: `load` re-hashes the data and refuses a mismatch.
record.json is written last and marks the version complete (a crash before
it leaves an invisible directory, which the next identical ingest reuses).
It holds where the rows came from (URI without password, table or query and
its parameters, collection, filter, projection), when they were read, row
count, schema, code version and who ran it: enough to rerun the pipeline
from the lineage record alone by pinning `data.version`. With `data.pii`, the
stored rows are already scrubbed, and the record's `pii` names the columns
dropped or hashed and the hash key's id (keel.components._common.privacy).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from keel.components._common import lineage, storage
from keel.components._common.config import NAME_PATTERN
from keel.components._common.errors import ConfigError, DataError, StorageError

DATA_FILE = "data.parquet"
RECORD_FILE = "record.json"
NAME = re.compile(NAME_PATTERN)
_HASH = re.compile(r"^(sha256:)?([0-9a-f]{8,64})$")


def root(store: str) -> str:
    return storage.join(store, "datasets")


def check_name(name: str, where: str = "data.name") -> str:
    if not NAME.match(name or ""):
        raise ConfigError(f"{where}: {name!r} is not a dataset name (lower-case letters, digits, . _ -; at most 63)")
    return name


def version_dir(store: str, name: str, version: str) -> str:
    return storage.join(root(store), check_name(name), version.removeprefix("sha256:"))


def publish(store: str, name: str, parquet_path: str, meta: dict, source: dict, pii: dict | None = None) -> dict:
    """Records a Parquet file as version `meta["content_hash"]` of `name`; returns its record.

    Idempotent: a version already recorded is left as it is (same hash, same
    rows) and its existing record is returned. `pii`, when given, is the
    privacy.policy the rows were scrubbed with (columns, modes, key id; never
    the key), so that a run pinned to the version knows what is left to do.
    """
    version = meta["content_hash"]
    where = version_dir(store, name, version)
    record_uri = storage.join(where, RECORD_FILE)
    if storage.exists(record_uri):
        return json.loads(storage.read_bytes(record_uri))
    record = {
        "name": name,
        "version": version,
        "rows": meta["rows"],
        "columns": meta["columns"],
        "schema": meta["schema"],
        "source": source,
        "uri": storage.join(where, DATA_FILE),
        "bytes": Path(parquet_path).stat().st_size,
        **({"pii": pii} if pii else {}),
        **{k: v for k, v in lineage.stamp(content_hash=version, parents=[]).items() if k in ("code_version", "created_by", "created_at")},
    }
    storage.upload_file(str(parquet_path), record["uri"])  # atomic on both backends
    storage.write_bytes(record_uri, json.dumps(record, indent=1, sort_keys=True, default=str).encode(), content_type="application/json")
    return record


def versions(store: str, name: str | None = None) -> list[dict]:
    """Every complete version's record (of one dataset, or all), oldest first."""
    base = root(store)
    names = [check_name(name, "dataset name")] if name else storage.list_names(base)
    records = []
    for dataset in names:
        for digest in storage.list_names(storage.join(base, dataset)):
            record_uri = storage.join(base, dataset, digest, RECORD_FILE)
            if storage.exists(record_uri):
                records.append(json.loads(storage.read_bytes(record_uri)))
    return sorted(records, key=lambda r: (r.get("created_at", ""), r["name"]))


def resolve(store: str, name: str, ref: str) -> dict:
    """The record of `name`'s version `ref`: a full `sha256:<hex>` or a unique hex prefix (8+ characters).

    Raises:
        ConfigError: `ref` is not a hash (prefix).
        StorageError: no such version, or the prefix matches several.
    """
    match = _HASH.match(str(ref).strip().lower())
    if not match:
        raise ConfigError(f"data.version: {ref!r} is not a dataset version (sha256:<64 hex>, or its first 8+ hex digits)")
    prefix = match.group(2)
    known = versions(store, name)
    found = [r for r in known if r["version"].removeprefix("sha256:").startswith(prefix)]
    if len(found) == 1:
        return found[0]
    if not found:
        listing = ", ".join(r["version"][:19] for r in known[-5:]) or "none"
        raise StorageError(f"data.version: {ref} is not a version of dataset {name!r} in {root(store)} (latest: {listing}); "
                           "`keel data list` shows them")
    raise StorageError(f"data.version: {ref} matches {len(found)} versions of {name!r}; give more digits")


def load(store: str, name: str, ref: str, out_path: str | None = None):
    """A pinned version as an Arrow table, after checking its content hash; also copied to `out_path` when given.

    Raises:
        DataError: the stored data no longer hashes to its version.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keel.components._common import tables

    record = resolve(store, name, ref)
    raw = storage.read_bytes(record["uri"])
    table = pq.read_table(pa.BufferReader(raw))
    actual = tables.arrow_hash(table)
    if actual != record["version"]:
        raise DataError(f"{record['uri']}: holds data hashing to {actual}, not its version {record['version']}; "
                        "the stored dataset was changed, do not use it")
    if out_path is not None:
        storage.write_bytes(out_path, raw)
    return table, record
