"""Reading one backfill partition from Postgres into a versioned dataset."""

from __future__ import annotations

import tempfile
from pathlib import Path

from keel.components._common import datasets, storage, tables
from keel.components._common.config import BackfillSection, DataSection
from keel.components.backfill.partition import partition_query


def ingest_partition_rows(data: DataSection, section: BackfillSection, store: str, partition: dict, out_path: str) -> dict:
    """Streams the partition's rows into `out_path` and records them as a dataset version; returns the metadata.

    Raises:
        DataError: the partition has no rows (a gap upstream: the message names
            the window and the column), or the query fails.
    """
    from keel.components._common import postgres, privacy
    from keel.components._common.sources import source_record

    sql = partition_query(data, section.date_column, partition)
    label = (f"backfill partition {partition['key']} ({section.date_column} in [{partition['start']}, {partition['end']}) "
             f"of {postgres.redact(data.source)})")
    with tempfile.TemporaryDirectory(prefix="keel-partition-") as tmp:
        local = str(Path(tmp) / "part.parquet")
        # PII is scrubbed batch by batch, before a row reaches a file (as in ingest.snapshot).
        key = privacy.key_for(data.pii)
        scrub = (lambda batch: privacy.scrub_batch(batch, data.pii, label, key)) if data.pii else None
        meta = tables.write_batches(postgres.stream(data.source, sql), local, label=label, transform=scrub)
        source = {**source_record(data), "partition": partition, "date_column": section.date_column}
        record = datasets.publish(store, data.dataset_name(), local, meta, source, pii=privacy.policy(data.pii, key) or None)
        with open(local, "rb") as handle:
            storage.write_bytes(out_path, handle.read())
    meta["source"] = source["uri"]
    meta["dataset"] = {"name": record["name"], "version": record["version"], "uri": record["uri"], "rows": record["rows"]}
    return meta
