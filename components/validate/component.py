"""KFP component: validate_data."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from keel.components._common.component import keel_component


@keel_component
def validate_data(
    data: Input[Dataset],
    target: dict,
    validation: dict,
    valid: Output[Dataset],
    quarantine: Output[Dataset],
    schema: Output[Artifact],
    report: Output[HTML],
):
    """Checks the table against a schema; column problems fail, row problems fail or are quarantined.

    Args:
        data: the ingested table (Parquet).
        target: the `target` config section; the schema's target must be this column.
        validation: the `validation` config section (schema_uri, on_violation, max_categories, range_margin).
            With schema_uri unset the schema is inferred from this data every run; set and absent, it is
            inferred and written there once the run passes; set and present, it is loaded from there.
        valid: the rows that pass (object columns converted to the schema's types).
        quarantine: the rows that broke a row-level rule, with `_quarantine_reason` and `_source_row`.
        schema: the schema used, as versioned JSON (what serving validates requests against).
        report: HTML with a pass/fail banner and every violation (written even when the run fails).
    """
    from keel.components._common import lineage
    from keel.components._common.config import TargetSection, ValidationSection
    from keel.components._common.errors import user_errors
    from keel.components._common.tables import read_parquet
    from keel.components.validate.validate import validate_dataset

    with user_errors("validate_data"):
        target_cfg, validation_cfg = TargetSection.parse(target, "target"), ValidationSection.parse(validation, "validation")
        out = validate_dataset(read_parquet(data.path), target_cfg, validation_cfg, valid_path=valid.path,
                               quarantine_path=quarantine.path, schema_path=schema.path, report_path=report.path)
        parents, params = [lineage.parent("data", data)], {"target": target, "validation": validation}
        valid.metadata.update(out["valid"])
        quarantine.metadata.update(out["quarantine"])
        for artifact in (valid, quarantine, schema, report):
            artifact.metadata.update(out["summary"])
            content_hash = artifact.metadata.get("content_hash") or lineage.file_sha256(artifact.path)
            artifact.metadata.update(lineage.stamp(content_hash=content_hash, parents=parents, params=params))
