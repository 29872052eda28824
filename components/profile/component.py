"""KFP component: profile_data."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from keel.components._common.component import keel_component


@keel_component
def profile_data(data: Input[Dataset], target: dict, report: Output[HTML], summary: Output[Artifact]):
    """Profiles the table: per-column statistics, the target's balance, association with the target, warnings.

    Args:
        data: the ingested table (Parquet).
        target: the `target` config section; its column must be present.
        report: a self-contained HTML report (overview, warnings, class balance, association chart,
            column table, one small plot per column).
        summary: the profile as JSON: rows, columns, target (column, task, nulls, class_balance,
            binary_balance, stats), columns_detail (name, dtype, kind, null_rate, cardinality, min, max,
            mean, std, top_values, target_correlation, correlation_method) and warnings.
    """
    from keel.components._common import lineage, tables
    from keel.components._common.config import TargetSection
    from keel.components._common.errors import user_errors
    from keel.components.profile.profile import write_profile

    with user_errors("profile_data"):
        target_cfg = TargetSection.parse(target, "target")
        result = write_profile(tables.read_parquet(data.path), target_cfg, report.path, summary.path)
        parents = [lineage.parent("data", data)]
        counts = {"rows": result["rows"], "columns": result["columns"], "warnings": len(result["warnings"])}
        for artifact in (report, summary):
            artifact.metadata.update(counts)
            artifact.metadata.update(lineage.stamp(content_hash=lineage.file_sha256(artifact.path), parents=parents, params={"target": target}))
