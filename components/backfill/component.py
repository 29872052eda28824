"""KFP components of the backfill pipeline: plan, ingest one partition, publish one partition."""

from kfp.dsl import Artifact, Dataset, Input, Output

from keel.components._common.component import keel_component


@keel_component
def plan_partitions(data: dict, backfill: dict, execution_date: str) -> list:
    """Cuts the backfill's date range into partitions (the ParallelFor's items).

    Args:
        data: the `data` section (a postgresql:// source with table or query).
        backfill: the `backfill` section: date_column, start/end dates, partition size.
        execution_date: the run's logical date (YYYY-MM-DD or ISO timestamp; empty: today, UTC).
            A range that reaches past it is refused.

    Returns:
        The partitions, oldest first: {key, start, end (exclusive), execution_date}.
    """
    from keel.components._common.config import BackfillSection, DataSection
    from keel.components._common.errors import user_errors
    from keel.components.backfill.partition import partition_query
    from keel.components.backfill.plan import plan

    with user_errors("plan_partitions"):
        section, data_cfg = BackfillSection.parse(backfill, "backfill"), DataSection.parse(data, "data")
        partitions = plan(section, execution_date)
        partition_query(data_cfg, section.date_column, partitions[0])  # refuses a non-Postgres source or a bad column now
        print(f"backfill: {len(partitions)} {section.partition} partition(s) {partitions[0]['key']} .. {partitions[-1]['key']}")
        return partitions


@keel_component
def ingest_partition(data: dict, backfill: dict, registry: dict, partition: dict, raw: Output[Dataset]):
    """Reads one partition's rows ([start, end) of backfill.date_column) into a versioned Parquet Dataset.

    Args:
        data: the `data` section (postgresql:// source; the password comes from PGPASSWORD).
        backfill: the `backfill` section.
        registry: the `registry` section; the partition is recorded as a dataset version in its store.
        partition: one item of plan_partitions.
        raw: the partition's rows, with row count, schema, content hash and dataset version.
    """
    from keel.components._common import lineage
    from keel.components._common.config import BackfillSection, DataSection, RegistrySection
    from keel.components._common.errors import user_errors
    from keel.components.backfill.ingest import ingest_partition_rows

    with user_errors("ingest_partition"):
        section, data_cfg = BackfillSection.parse(backfill, "backfill"), DataSection.parse(data, "data")
        meta = ingest_partition_rows(data_cfg, section, RegistrySection.parse(registry, "registry").store, partition, raw.path)
        raw.metadata.update(meta)
        parents = [{"name": "source", "uri": meta["source"]},
                   {"name": "dataset", "uri": meta["dataset"]["uri"], "content_hash": meta["dataset"]["version"]}]
        raw.metadata.update(lineage.stamp(content_hash=meta["content_hash"], parents=parents,
                                          params={"data": data, "backfill": backfill, "partition": partition}))


@keel_component
def publish_partition(
    raw: Input[Dataset],
    cleaned: Input[Dataset],
    validation_quarantine: Input[Dataset],
    clean_quarantine: Input[Dataset],
    data: dict,
    backfill: dict,
    registry: dict,
    partition: dict,
    manifest: Output[Artifact],
):
    """Writes the cleaned partition as date-partitioned Parquet (replacing it atomically) and, if asked, into Postgres.

    Args:
        raw: the partition as ingested (its Arrow types are the partition's schema).
        cleaned: the partition after validate and clean.
        validation_quarantine: rows validate set aside, with reasons.
        clean_quarantine: rows clean set aside, with reasons.
        data: the `data` section.
        backfill: the `backfill` section (output, write_back).
        registry: the `registry` section (the default output lives in its store).
        partition: one item of plan_partitions.
        manifest: the partition's _partition.json: counts, hash, where it went, lineage.
    """
    import json

    from keel.components._common import lineage, storage
    from keel.components._common.config import BackfillSection, DataSection, RegistrySection
    from keel.components._common.errors import user_errors
    from keel.components.backfill.partition import publish

    with user_errors("publish_partition"):
        result = publish(
            cleaned_path=cleaned.path, raw_path=raw.path,
            quarantines={"validate": validation_quarantine.path, "clean": clean_quarantine.path},
            section=BackfillSection.parse(backfill, "backfill"), data=DataSection.parse(data, "data"),
            store=RegistrySection.parse(registry, "registry").store, partition=partition,
            lineage_parents=[lineage.parent("raw", raw), lineage.parent("cleaned", cleaned)],
            dataset=dict(raw.metadata).get("dataset"),
        )
        storage.write_bytes(manifest.path, json.dumps(result, indent=1, sort_keys=True, default=str).encode())
        manifest.metadata.update({k: result[k] for k in ("uri", "rows", "rows_ingested", "rows_quarantined")})
        manifest.metadata.update(lineage.stamp(content_hash=result["content_hash"], parents=result["parents"], params=partition))
