"""The monitoring pipeline: collect a window of logged traffic -> check it -> a verdict (ok, drift, degraded, stale, no data).

collect_window reads the receiver's Parquet for the model version in
production (keel.components.monitor.window), once and in bounded memory, with
the labels `keel monitor labels` loaded, and the reference: the dataset
version the model was trained on, from its lineage. check_window runs
Evidently's DataDriftPreset on inputs and predictions, the evaluate gate on
the labelled rows, the staleness limit and the serving invariants, and writes
the HTML report, Evidently's report, KFP Metrics and the verdict JSON.

`execution_date` is a run parameter (the window's end), so `keel schedule`
passes `[[ScheduledTime]]` and each run checks the window that just closed.
"""

from kfp import dsl

from keel.components.monitor.component import check_window, collect_window
from keel.pipelines import credentials, monitoring_run
from keel.pipelines.config_files import CONFIG_DIR
from keel.pipelines.descriptor import PipelineDescriptor
from keel.pipelines.monitoring_config import MonitoringConfig

MONITORING_PIPELINE_NAME = "keel-monitoring"


def build_monitoring_pipeline(step_env: dict[str, str] | None = None):
    @dsl.pipeline(
        name=MONITORING_PIPELINE_NAME,
        description="Keel monitoring: a window of a served model's logged traffic against the data it was trained on: "
        "data and prediction drift (Evidently), performance on labelled rows, staleness and serving invariants -> a verdict.",
    )
    def monitoring_pipeline(monitoring: dict, registry: dict, execution_date: str = ""):
        collect = collect_window(monitoring=monitoring, registry=registry, execution_date=execution_date)
        # The window's traffic and labels keep arriving under the same parameters: never served from the cache.
        collect.set_display_name("collect-window").set_caching_options(enable_caching=False)
        check = check_window(window=collect.outputs["window"], labelled=collect.outputs["labelled"],
                             reference=collect.outputs["reference"], summary=collect.outputs["summary"],
                             monitoring=monitoring).set_display_name("check-window")
        for task in (collect, check):
            # collect loads the bundle: an encrypted or signed one needs the keys a predictor gets.
            credentials.mount(task, keys=credentials.READER_KEYS if task is collect else ())
            for name, value in (step_env or {}).items():
                task.set_env_variable(name, value)

    return monitoring_pipeline


PIPELINE = PipelineDescriptor(
    kind="monitoring",
    config_model=MonitoringConfig,
    build=lambda cfg, local: build_monitoring_pipeline(step_env=local.step_env if local else None),
    example=CONFIG_DIR / "loans-monitoring.yaml",
    check=monitoring_run.check,
    preflight=monitoring_run.checked_run,
    summary=monitoring_run.outcome,
    cli_overrides=monitoring_run.cli_overrides,
    runners=("local",),
    runner_note="the docker runner is not exercised for it yet; on a cluster it runs from the same base image",
)
