"""The backfill pipeline: plan -> for each partition (ParallelFor): ingest -> validate -> clean -> publish.

A date range of a Postgres table or query is cut into day, week or month
partitions (keel.components.backfill.plan). Each partition is read with its
window bound as query parameters, validated and cleaned by the same
components as the training pipeline (rows they refuse are quarantined with
reasons), and written as `{date_column}=<key>/part.parquet`, replacing an
earlier run's file atomically; optionally also into a Postgres table,
replacing that partition's rows in one transaction.

`execution_date` is a run parameter, so a recurring run can pass its
scheduled date (KFP's `[[ScheduledTime]]` macro) and process the partition
that just closed, while a one-off backfill sets start and end dates.
"""

from kfp import dsl

from keel.components.backfill.component import ingest_partition, plan_partitions, publish_partition
from keel.components.clean.component import clean_data
from keel.components.validate.component import validate_data
from keel.pipelines import backfill_run, credentials
from keel.pipelines.backfill_config import BackfillConfig
from keel.pipelines.config_files import CONFIG_DIR
from keel.pipelines.descriptor import PipelineDescriptor

BACKFILL_PIPELINE_NAME = "keel-backfill"
DEFAULT_PARALLELISM = 4


def build_backfill_pipeline(parallelism: int = DEFAULT_PARALLELISM, step_env: dict[str, str] | None = None):
    """The backfill pipeline; `parallelism` caps partitions in flight on a cluster (fixed in the IR by KFP)."""

    @dsl.pipeline(
        name=BACKFILL_PIPELINE_NAME,
        description="Keel backfill: a date range of a Postgres source, partition by partition: ingest, validate, clean, "
        "and date-partitioned Parquet (optionally written back to Postgres), each partition replaced atomically on a rerun.",
    )
    def backfill_pipeline(data: dict, target: dict, validation: dict, clean: dict, backfill: dict, registry: dict,
                          execution_date: str = ""):
        plan = plan_partitions(data=data, backfill=backfill, execution_date=execution_date).set_display_name("plan")
        tasks = [plan]
        with dsl.ParallelFor(plan.output, parallelism=parallelism, name="partitions") as partition:
            ingest = ingest_partition(data=data, backfill=backfill, registry=registry, partition=partition)
            ingest.set_display_name("ingest-partition").set_caching_options(enable_caching=False)  # the source may change
            raw = ingest.outputs["raw"]
            validate = validate_data(data=raw, target=target, validation=validation).set_display_name("validate")
            cleaned = clean_data(data=validate.outputs["valid"], target=target, clean=clean).set_display_name("clean")
            publish = publish_partition(
                raw=raw, cleaned=cleaned.outputs["cleaned"], validation_quarantine=validate.outputs["quarantine"],
                clean_quarantine=cleaned.outputs["quarantine"], data=data, backfill=backfill, registry=registry,
                partition=partition,
            ).set_display_name("publish-partition").set_caching_options(enable_caching=False)  # replaces the output
            tasks += [ingest, validate, cleaned, publish]
        for task in tasks:
            credentials.mount(task, source=task in (ingest, publish), keys=credentials.PII_KEYS if task is ingest else ())
            for name, value in (step_env or {}).items():
                task.set_env_variable(name, value)

    return backfill_pipeline


PIPELINE = PipelineDescriptor(
    kind="backfill",
    config_model=BackfillConfig,
    build=lambda cfg, local: build_backfill_pipeline(cfg.backfill.parallelism, step_env=local.step_env if local else None),
    example=CONFIG_DIR / "flights-backfill.yaml",
    check=backfill_run.check,
    preflight=backfill_run.checked_run,
    summary=backfill_run.outcome,
    cli_overrides=backfill_run.cli_overrides,
    runners=("local",),
)
