"""`keel tune` for the training pipeline (its descriptor's `tune`): just the hyperparameter search, on this
machine, with a progress bar and a trial table.

The data stages run in-process through the components' own functions (the
same code as the pipeline steps), writing the engineered features under
`{registry.store}/tune/{config name}/`; then the `tune` section's Katib
Experiment runs on its backend, exactly as the pipeline's tune step runs it.
`--emit-experiment` writes that Experiment without running anything: its
trials read the features from the same place.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kfp import dsl

from keel.components._common import storage
from keel.components._common.errors import ConfigError
from keel.pipelines.training_config import TrainingConfig

DEFAULT_SPACES = {
    # A search space per family for the quick path (`keel tune --data ... --target ...`).
    "gradient_boosting": {
        "learning_rate": {"type": "double", "min": 0.01, "max": 0.3, "log": True},
        "max_iter": {"type": "int", "min": 50, "max": 300, "step": 50},
        "max_leaf_nodes": {"type": "int", "min": 15, "max": 63},
        "l2_regularization": {"type": "double", "min": 0.0, "max": 1.0},
    },
    "random_forest": {
        "n_estimators": {"type": "int", "min": 50, "max": 300, "step": 50},
        "max_depth": {"type": "int", "min": 3, "max": 20},
        "min_samples_leaf": {"type": "int", "min": 1, "max": 20},
    },
    "xgboost": {
        "learning_rate": {"type": "double", "min": 0.01, "max": 0.3, "log": True},
        "n_estimators": {"type": "int", "min": 50, "max": 300, "step": 50},
        "max_depth": {"type": "int", "min": 2, "max": 8},
        "subsample": {"type": "double", "min": 0.5, "max": 1.0},
    },
    "logistic_regression": {"C": {"type": "double", "min": 0.001, "max": 100.0, "log": True}},
}


def with_tune_flags(cfg: TrainingConfig, algorithm=None, max_trials=None, parallel_trials=None) -> TrainingConfig:
    """The config's tune section (or the family's default space) with the command-line overrides."""
    from keel.components._common.config import TuneSection

    if cfg.tune is not None:
        raw = cfg.tune.model_dump(mode="json", exclude_none=True)
    elif cfg.model.family in DEFAULT_SPACES:
        raw = {"parameters": DEFAULT_SPACES[cfg.model.family], "objective": {"metric": _default_metric(cfg)}}
    else:
        raise ConfigError(f"tune: the config has no tune section and {cfg.model.family} has no default search space; add tune.parameters")
    for key, value in (("algorithm", algorithm), ("max_trials", max_trials), ("parallel_trials", parallel_trials)):
        if value is not None:
            raw[key] = value
    if max_trials is not None and parallel_trials is None:
        raw["parallel_trials"] = min(raw.get("parallel_trials", 2), max_trials)
    return cfg.model_copy(update={"tune": TuneSection.parse(raw, "tune")})


def _default_metric(cfg: TrainingConfig) -> str:
    return {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}[cfg.target.task]


def work_dir(cfg: TrainingConfig) -> str:
    """Where `keel tune` puts the features the trials read (local or s3://)."""
    return storage.join(cfg.registry.store, "tune", cfg.name)


def prepare_features(cfg: TrainingConfig, workdir: str):
    """Ingest -> validate -> clean -> split -> features, in-process with the components' own functions.

    Returns:
        (train_features, validation_features, transformer) artifacts with their files and metadata.
    """
    import tempfile

    # The stages' own component functions, as the pipeline's steps run them (not through keel.pipelines.training,
    # which registers this module's search as its `tune`).
    from keel.components.clean.component import clean_data
    from keel.components.features.component import engineer_features
    from keel.components.ingest.component import ingest_data
    from keel.components.split.component import split_data
    from keel.components.validate.component import validate_data

    args = cfg.pipeline_arguments()
    local = not storage.is_s3(workdir)
    # With an S3 store the stages write to a scratch directory and the features are uploaded after.
    scratch = Path(workdir) if local else Path(tempfile.mkdtemp(prefix="keel-tune-"))
    scratch.mkdir(parents=True, exist_ok=True)

    def art(cls, name):
        return cls(name=name, uri=str(scratch / name))

    raw = art(dsl.Dataset, "raw")
    ingest_data.python_func(data=args["data"], target=args["target"], registry=args["registry"], raw=raw)
    valid, vq, schema, report = art(dsl.Dataset, "valid"), art(dsl.Dataset, "valid_quarantine"), art(dsl.Artifact, "schema"), art(dsl.HTML, "validation_report")
    validate_data.python_func(data=raw, target=args["target"], validation=args["validation"], valid=valid, quarantine=vq, schema=schema, report=report)
    cleaned, cq, stats = art(dsl.Dataset, "cleaned"), art(dsl.Dataset, "clean_quarantine"), art(dsl.Metrics, "clean_stats")
    clean_data.python_func(data=valid, target=args["target"], clean=args["clean"], cleaned=cleaned, quarantine=cq, stats=stats)
    train, val, test = art(dsl.Dataset, "train"), art(dsl.Dataset, "validation"), art(dsl.Dataset, "test")
    split_data.python_func(data=cleaned, target=args["target"], split=args["split"], train=train, validation=val, test=test)
    transformer, tf, vf = art(dsl.Model, "transformer"), art(dsl.Dataset, "train_features"), art(dsl.Dataset, "validation_features")
    engineer_features.python_func(train=train, validation=val, features=args["features"], transformer=transformer, train_features=tf, validation_features=vf)
    if not local:  # trials in a cluster read them from the store
        for artifact in (tf, vf, transformer):
            storage.write_bytes(storage.join(workdir, artifact.name), Path(artifact.path).read_bytes())
            artifact.uri = storage.join(workdir, artifact.name)
    return tf, vf, transformer


class ProgressBar:
    """One line redrawn per finished trial on a terminal, one line per trial otherwise (logs, CI)."""

    def __init__(self, metric: str, direction: str, stream=None):
        # Looked up now, not at import: tests (and callers) swap sys.stderr.
        self.metric, self.maximize, self.stream = metric, direction == "maximize", stream or sys.stderr
        self.best = None
        self.started = time.perf_counter()

    def __call__(self, record, done: int, total: int) -> None:
        if record.value is not None and record.state == "COMPLETE":
            if self.best is None or (record.value > self.best if self.maximize else record.value < self.best):
                self.best = record.value
        width = 24
        filled = int(width * done / max(total, 1))
        best = "-" if self.best is None else f"{self.best:.4f}"
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} trials  best {self.metric}={best}  "
                f"last: {record.state.lower()}  {time.perf_counter() - self.started:5.1f} s")
        if self.stream.isatty():
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def tune(cfg: TrainingConfig, emit_experiment: str | None = None, out=None):
    """Runs the search (or only writes the Experiment) and prints the trial table; returns the SearchOutcome or None."""
    out = out or sys.stdout
    from keel.components._common.images import COMPONENT_IMAGES
    from keel.components.tune.experiment import TrialData, build_experiment, emit
    from keel.components.tune.local import SearchResult, TrialRecord, trials_table
    from keel.components.tune.search import run_search

    workdir = work_dir(cfg)
    names = ("train_features", "validation_features", "transformer")
    if emit_experiment:
        data = TrialData(*(storage.join(workdir, n) for n in names), classes=None)
        experiment = build_experiment(f"keel-{cfg.model.family}", cfg.tune, cfg.model, cfg.target, data, COMPONENT_IMAGES["tune_trial"])
        emit(experiment, emit_experiment)
        print(f"wrote {emit_experiment}: a Katib Experiment over {', '.join(cfg.tune.parameters)} "
              f"({cfg.tune.algorithm}, {cfg.tune.max_trials} trials); its trials read the features from {workdir}/", file=out)
        return None
    tf, vf, transformer = prepare_features(cfg, workdir)
    classes = next((a.metadata["classes"] for a in (tf, vf, transformer) if a.metadata.get("classes")), None)
    local = cfg.tune.backend == "local"
    data = TrialData(tf.path if local else tf.uri, vf.path if local else vf.uri, transformer.path if local else transformer.uri, classes)
    print(f"keel: tuning {cfg.model.family} on {cfg.data.source}: {cfg.tune.algorithm}, {cfg.tune.max_trials} trials, "
          f"{cfg.tune.parallel_trials} in parallel ({cfg.tune.backend})", file=out, flush=True)
    bar = ProgressBar(cfg.tune.objective.metric, cfg.tune.objective.direction)
    outcome = run_search(f"keel-{cfg.model.family}", data, cfg.tune, cfg.model, cfg.target,
                         workdir=str(Path(workdir) / ".keel_tune") if local else workdir,
                         image=COMPONENT_IMAGES["tune_trial"], on_trial=bar)
    print(trials_table(SearchResult(outcome.best_params, outcome.best_value, [
        TrialRecord(t["number"], t.get("params") or {}, t.get("value"), t["state"], t.get("intermediate") or [],
                    t.get("seconds"), t.get("reason") or "")
        for t in sorted(outcome.trials, key=lambda t: t["number"])
    ])), file=out)
    print(f"best {cfg.tune.objective.metric}={outcome.best_value:.4f}: " +
          ", ".join(f"{k}={v}" for k, v in sorted(outcome.best_params.items())), file=out)
    return outcome


def run_tune(cfg: TrainingConfig, algorithm: str | None = None, max_trials: int | None = None,
             parallel_trials: int | None = None, emit_experiment: str | None = None):
    """The descriptor's `tune`: the config's search (or the family's default space) with the command-line flags."""
    return tune(with_tune_flags(cfg, algorithm, max_trials, parallel_trials), emit_experiment=emit_experiment)
