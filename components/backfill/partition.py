"""One backfill partition: its query, and publishing its cleaned rows.

Layout under `backfill.output` (Hive-style, so Spark, DuckDB and pyarrow
datasets read it as a partitioned table):

    {output}/{date_column}={key}/part.parquet          the cleaned rows
    {output}/{date_column}={key}/_partition.json       counts, hashes, source, lineage
    {output}/_quarantine/{date_column}={key}/validate.parquet, clean.parquet

`part.parquet` is one object written atomically (a temporary file renamed,
or an S3 temporary key published by copy), so re-running a partition
replaces it whole and a reader sees the old rows or the new ones, never a
mix. Its schema is the source's (the ingested Arrow types; pandas turns an
integer column with nulls into floats on the way through validate and
clean, which would otherwise look like a schema change), and it must match
the partitions already written: a source whose columns changed mid-range
fails the partition that saw the change, naming the columns.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from keel.components._common import lineage, storage, tables
from keel.components._common.config import BackfillSection, DataSection
from keel.components._common.errors import ConfigError, DataError

PART_FILE = "part.parquet"
MANIFEST = "_partition.json"
QUARANTINE = "_quarantine"


def partition_query(data: DataSection, date_column: str, partition: dict) -> str:
    """The source's rows in [start, end) of `date_column`, all values bound by the driver."""
    from keel.components._common import postgres

    if not postgres.is_postgres(data.source):
        raise ConfigError(f"data.source: a backfill reads a postgresql:// source (got {postgres.redact(data.source)})")
    column = postgres.quote_identifier(date_column, "backfill.date_column")
    base = postgres.table_query(data.table) if data.table else data.query.rstrip().rstrip(";")
    where = f"SELECT * FROM ({base}) AS source WHERE {column} >= {{lo}} AND {column} < {{hi}}"
    if isinstance(data.params, dict):
        params = {**data.params, "keel_start": partition["start"], "keel_end": partition["end"]}
        return postgres.bind(where.format(lo="%(keel_start)s::date", hi="%(keel_end)s::date"), params)
    params = [*(data.params or []), partition["start"], partition["end"]]
    return postgres.bind(where.format(lo="%s::date", hi="%s::date"), params)


def output_root(section: BackfillSection, data: DataSection, store: str) -> str:
    return section.output or storage.join(store, "backfill", data.dataset_name())


def partition_dir(root: str, section: BackfillSection, partition: dict) -> str:
    return storage.join(root, f"{section.date_column}={partition['key']}")


def _schema_of(uri: str) -> pa.Schema:
    return tables.plain_schema(pq.read_schema(pa.BufferReader(storage.read_bytes(uri))))


def check_schema(root: str, section: BackfillSection, key: str, schema: pa.Schema) -> None:
    """Compares `schema` with a partition already written (any other one); a difference is a DataError."""
    prefix = f"{section.date_column}="
    others = [n for n in storage.list_names(root) if n.startswith(prefix) and n != f"{prefix}{key}"]
    for name in others:
        part = storage.join(root, name, PART_FILE)
        if not storage.exists(part):
            continue
        before = _schema_of(part)
        if before.equals(schema):
            return
        old, new = dict(zip(before.names, before.types)), dict(zip(schema.names, schema.types))
        changes = [f"{c} added" for c in new if c not in old] + [f"{c} removed" for c in old if c not in new]
        changes += [f"{c} {old[c]} -> {new[c]}" for c in new if c in old and old[c] != new[c]]
        raise DataError(
            f"backfill partition {key}: the source's columns changed since partition {name.removeprefix(prefix)} "
            f"({'; '.join(changes) or 'column order changed'}); migrate the partitions already written "
            f"under {root} or write to a new backfill.output"
        )


def source_typed(cleaned: pa.Table, raw_schema: pa.Schema) -> pa.Table:
    """`cleaned` with each column cast back to its ingested type (an int column pandas made float)."""
    fields = {f.name: f for f in raw_schema}
    columns = []
    for name in cleaned.column_names:
        column = cleaned.column(name)
        if name in fields and column.type != fields[name].type:
            try:
                column = column.cast(fields[name].type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise DataError(f"backfill: column {name!r} no longer fits its source type {fields[name].type} "
                                f"after cleaning ({str(err).splitlines()[0]})") from None
        columns.append(column)
    return pa.table(columns, names=cleaned.column_names)


def publish(*, cleaned_path: str, raw_path: str, quarantines: dict[str, str], section: BackfillSection,
            data: DataSection, store: str, partition: dict, lineage_parents: list[dict], dataset: dict | None = None) -> dict:
    """Writes one partition's cleaned rows, quarantines and manifest; returns the manifest.

    Raises:
        DataError: rows were lost between ingest and publish, or the columns
            changed since the partitions already written.
    """
    root = output_root(section, data, store)
    where = partition_dir(root, section, partition)
    raw_rows = pq.read_metadata(raw_path).num_rows
    quarantined = {name: pq.read_metadata(path).num_rows for name, path in quarantines.items()}
    table = source_typed(pq.read_table(cleaned_path), tables.plain_schema(pq.read_schema(raw_path)))
    if raw_rows != table.num_rows + sum(quarantined.values()):
        raise DataError(f"backfill partition {partition['key']}: {raw_rows} rows ingested but {table.num_rows} published "
                        f"+ {sum(quarantined.values())} quarantined; refusing to publish a partition that lost rows")
    check_schema(root, section, partition["key"], tables.plain_schema(table.schema))
    for name, path in quarantines.items():
        target = storage.join(root, QUARANTINE, f"{section.date_column}={partition['key']}", f"{name}.parquet")
        with open(path, "rb") as handle:
            storage.write_bytes(target, handle.read())
    meta = tables.write_batches(table.to_batches(), storage.join(where, PART_FILE), label=f"backfill partition {partition['key']}") \
        if table.num_rows else _write_empty(table, storage.join(where, PART_FILE))
    manifest = {
        "partition": partition,
        "date_column": section.date_column,
        "uri": storage.join(where, PART_FILE),
        "rows_ingested": raw_rows,
        "rows": meta["rows"],
        "rows_quarantined": quarantined,
        "content_hash": meta["content_hash"],
        "schema": {f.name: str(f.type) for f in table.schema},
        "dataset": dataset,  # the ingested rows' dataset version: its record holds the bound query
        **lineage.stamp(content_hash=meta["content_hash"], parents=lineage_parents),
    }
    if section.write_back is not None:
        manifest["write_back"] = write_back(table, section, data, partition)
    storage.write_bytes(storage.join(where, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True, default=str).encode(),
                        content_type="application/json")
    return manifest


def _write_empty(table: pa.Table, uri: str) -> dict:
    """A partition every row of which was quarantined: an empty file, so the partition reads as empty, not missing."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    storage.write_bytes(uri, sink.getvalue().to_pybytes())
    return {"rows": 0, "content_hash": tables.arrow_hash(table)}


def write_back(table: pa.Table, section: BackfillSection, data: DataSection, partition: dict) -> dict:
    """Replaces the partition's rows in the write-back table (COPY, one transaction)."""
    from keel.components._common import postgres

    target = section.write_back
    keyed = table.append_column(target.partition_column, pa.array([partition["key"]] * table.num_rows, pa.string()))
    return postgres.write_partition(target.uri or data.source, target.table, keyed,
                                    partition_column=target.partition_column, partition_value=partition["key"])
