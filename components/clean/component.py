"""KFP component: clean_data."""

from kfp.dsl import Dataset, Input, Metrics, Output

from keel.components._common.component import keel_component


@keel_component
def clean_data(
    data: Input[Dataset],
    target: dict,
    clean: dict,
    cleaned: Output[Dataset],
    quarantine: Output[Dataset],
    stats: Output[Metrics],
):
    """Handles missing values, outliers and exact duplicates; quarantines the rows it removes.

    Statistical imputation is left to the features stage, which fits it on the
    training split only; this stage only drops, fills with constants, clips or
    quarantines.

    Args:
        data: the table to clean (Parquet), e.g. ingest_data's `raw` or validate_data's `valid`.
        target: the `target` config section; rows with a null target are quarantined, the target is never changed.
        clean: the `clean` config section (missing, outliers, duplicates).
        cleaned: the rows that stay (Parquet); metadata adds `actions` (per column: policy, bounds, counts).
        quarantine: the removed rows as they arrived, with `_quarantine_reason` and `_source_row` (Parquet).
        stats: row and value counts; rows_in == rows_out + rows_quarantined.
    """
    import hashlib
    import json

    from keel.components._common import lineage, tables
    from keel.components._common.config import CleanSection, TargetSection
    from keel.components._common.errors import user_errors
    from keel.components.clean.clean import clean_frame

    with user_errors("clean_data"):
        target_cfg, clean_cfg = TargetSection.parse(target, "target"), CleanSection.parse(clean, "clean")
        result = clean_frame(tables.read_parquet(data.path), target_cfg, clean_cfg)
        parents = [lineage.parent("data", data)]
        params = {"target": target, "clean": clean}
        for artifact, frame in ((cleaned, result.cleaned), (quarantine, result.quarantine)):
            meta = tables.write_parquet(frame, artifact.path)
            artifact.metadata.update(meta)
            artifact.metadata.update(lineage.stamp(content_hash=meta["content_hash"], parents=parents, params=params))
        cleaned.metadata["actions"] = result.actions
        for name, value in result.stats.items():
            stats.log_metric(name, value)
        digest = "sha256:" + hashlib.sha256(json.dumps(result.stats, sort_keys=True).encode()).hexdigest()
        stats.metadata.update(lineage.stamp(content_hash=digest, parents=parents, params=params))
        lineage.write_metadata_file(stats)
