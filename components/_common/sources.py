"""What a dataset was read from, as the dataset record and lineage keep it: shared by the ingest stage and the
backfill stage's partitions, so a partition's record reads like a full snapshot's."""

from __future__ import annotations

import datetime as dt
import urllib.parse

from keel.components._common.config import DataSection
from keel.components._common.uris import redact


def source_kind(uri: str) -> str:
    scheme = urllib.parse.urlsplit(uri).scheme.lower() if "://" in uri else "file"
    return {"postgres": "postgresql", "": "file"}.get(scheme, scheme)


def source_record(data: DataSection) -> dict:
    """What was read, for the dataset record and lineage (never a password)."""
    kind = source_kind(data.source)
    record = {"kind": kind, "uri": redact(data.source), "snapshot_time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if kind == "postgresql":
        record.update({"table": data.table, "query": data.query, "params": data.params})
    elif kind == "mongodb":
        record.update({"collection": data.collection, "filter": data.filter, "projection": data.projection})
    elif kind in ("file", "s3"):
        record.update({"format": data.format, "delimiter": data.delimiter, "encoding": data.encoding})
    return {k: v for k, v in record.items() if v is not None}
