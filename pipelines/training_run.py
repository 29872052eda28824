"""The training pipeline's pre-flight, `keel check` line, command-line flags and summary.

Pre-flight checks a config against its data before any step runs. A bad column name or
hyperparameter found here costs a second; found by the train step it costs a whole pipeline run
and leaves a half-finished run directory. The components repeat every check, because a compiled
pipeline can be started from the dashboard without this CLI.
"""

from __future__ import annotations

import pandas as pd

from keel.components._common.errors import ConfigError
from keel.pipelines.descriptor import Checked, Outcome, refuse_flags
from keel.pipelines.model_summary import summary_lines
from keel.pipelines.training_config import TrainingConfig


def check_config(cfg: TrainingConfig) -> None:
    """Config-only checks that need the estimator and metric tables."""
    from keel.components._common.evaluation.metrics import available_metrics
    from keel.components._common.training.estimators import check_params

    check_params(cfg.model, cfg.target.task)
    available = available_metrics(cfg.target.task)
    for bound in ("min", "max"):
        for name in getattr(cfg.evaluation, bound):
            if name not in available:
                raise ConfigError(f"evaluation.{bound}.{name}: not a metric for task {cfg.target.task}; available: {', '.join(available)}")


def check_columns(cfg: TrainingConfig, frame: pd.DataFrame) -> None:
    """Every column the config names exists in the (ingested) data."""
    columns = set(frame.columns)
    named = {
        **{f"clean.missing.columns.{c}": c for c in cfg.clean.missing.columns},
        **{f"clean.outliers.columns[{c}]": c for c in cfg.clean.outliers.columns or []},
        **{f"features.bucketize.{c}": c for c in cfg.features.bucketize},
        **{f"features.types.{c}": c for c in cfg.features.types},
    }
    if cfg.split.time_column:
        named["split.time_column"] = cfg.split.time_column
    for field, column in named.items():
        if column not in columns:
            raise ConfigError(f"{field}: column {column!r} is not in the data (after data.drop_columns)")


def preflight(cfg: TrainingConfig) -> pd.DataFrame:
    """Runs every check the CLI can do up front; returns the loaded table (nothing is stored)."""
    from keel.components.ingest.ingest import load

    check_config(cfg)
    frame = load(cfg.data, cfg.target, store=cfg.registry.store if cfg.data.version else None)
    check_columns(cfg, frame)
    return frame


def preflight_pinned(cfg: TrainingConfig) -> tuple[pd.DataFrame, TrainingConfig]:
    """Pre-flight for a run: the source is read once, stored as a dataset version, and the run pinned to it.

    The ingest step then loads that version instead of reading the source a
    second time, so the step trains on exactly the rows these checks passed
    (a table can change between two reads) and a database is queried once.
    """
    from keel.components.ingest.ingest import load_dataset, prepare

    check_config(cfg)

    def checked(raw):
        frame = prepare(raw, cfg.data, cfg.target)
        check_columns(cfg, frame)
        return frame

    frame, record = load_dataset(cfg.data, cfg.registry.store, checked)
    pinned = cfg.model_copy(update={"data": cfg.data.model_copy(update={"version": record["version"], "name": record["name"]})})
    return frame, pinned


def check(cfg: TrainingConfig) -> str:
    """`keel check`: what the source holds and what will train on it."""
    frame = preflight(cfg)
    return (f"{len(frame):,} rows x {frame.shape[1]} columns from {cfg.data.source}; "
            f"target {cfg.target.column!r} ({cfg.target.task}); model {cfg.model.family}")


def checked_run(cfg: TrainingConfig) -> Checked:
    """`keel run`'s pre-flight: the run is pinned to the dataset version it stored, and ingest is
    served from kfp.local's cache only for the same content, sections and code."""
    from keel.components._common.tables import content_hash

    frame, pinned = preflight_pinned(cfg)
    args = pinned.pipeline_arguments()
    return Checked(pinned, f"{len(frame):,} rows x {frame.shape[1]} columns from {cfg.data.source}; running the training pipeline",
                   cache_material=lambda: {"data": args["data"], "target": args["target"], "content": content_hash(frame)})


def outcome(checked: Checked, run, seconds: float) -> Outcome:
    # A run without a verdict (no evaluate output) is not a registered model either.
    return Outcome(summary_lines(checked.config, run, seconds), bool(run.passed))


# `keel run/check` flag -> the config field it sets.
_FIELDS = {"--data": "data.source", "--table": "data.table", "--query": "data.query", "--param": "data.params",
           "--collection": "data.collection", "--filter": "data.filter", "--data-version": "data.version",
           "--target": "target.column", "--task": "target.task", "--model": "model.family",
           "--store": "registry.store", "--sample-rows": "data.sample_rows"}


def cli_overrides(cfg: TrainingConfig, flags: dict) -> dict:
    """Every flag sets its field; --drop and --sensitive add to the config's lists."""
    refuse_flags(flags, (*_FIELDS, "--drop", "--sensitive"), "training", "sections")
    overrides = {_FIELDS[flag]: value for flag, value in flags.items() if flag in _FIELDS and value is not None}
    if flags.get("--drop"):
        overrides["data.drop_columns"] = sorted(set(cfg.data.drop_columns) | set(flags["--drop"]))
    if flags.get("--sensitive"):
        overrides["fairness.sensitive"] = list(dict.fromkeys([*cfg.fairness.sensitive, *flags["--sensitive"]]))
    return overrides
