"""Backfill stage: a date range, partition by partition, into date-partitioned Parquet."""


def __getattr__(name):
    # Lazy, as in every stage package: the component module imports kfp.dsl.
    if name in ("plan_partitions", "ingest_partition", "publish_partition"):
        from keel.components.backfill import component

        return getattr(component, name)
    raise AttributeError(name)
