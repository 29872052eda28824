"""Tune-stage logic: one Katib Experiment, run by Katib (cluster) or by Optuna (here).

`search` builds the Experiment once (experiment.py) and hands the same object
to a backend: `katib` submits it and reads the optimal trial back; `local`
executes it with the Optuna sampler and pruner that match the Katib algorithm,
running every trial through the Experiment's own command (the trial entry
point, trial.py). The result is the model section with the best parameters
merged in, ready for train_model, and a record of every trial for lineage and
the model card.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from keel.components._common.config import ModelSection, TargetSection, TuneSection
from keel.components._common.errors import ConfigError


@dataclass
class SearchOutcome:
    """What a search produced, whichever backend ran it."""

    experiment: dict  # the Katib Experiment (camelCase), exactly what ran
    backend: str
    best_params: dict
    best_value: float
    trials: list[dict] = field(default_factory=list)  # number, state, value, params, seconds, reason

    def summary(self, tune: TuneSection) -> dict:
        """JSON-safe record for lineage.json and the model card."""
        states = pd.Series([t["state"] for t in self.trials], dtype=object).value_counts().to_dict()
        return {
            "experiment": self.experiment["metadata"]["name"],
            "backend": self.backend,
            "algorithm": tune.algorithm,
            "objective": {"metric": tune.objective.metric, "direction": tune.objective.direction},
            "best_params": self.best_params,
            "best_value": self.best_value,
            "trials_by_state": {str(k): int(v) for k, v in states.items()},
            "trials": self.trials,
        }


def to_uri(uri: str) -> str:
    """KFP's `minio://bucket/key` artifact URIs are S3 objects; trials read them as s3://."""
    return "s3://" + uri[len("minio://"):] if uri.startswith("minio://") else uri


def run_search(
    name: str, data, tune: TuneSection, model: ModelSection, target: TargetSection, workdir: str | Path,
    image: str, on_trial=None,
) -> SearchOutcome:
    """Builds the Experiment and runs it on tune.backend.

    Args:
        name: base name for the Experiment (made unique per data and space).
        data: experiment.TrialData (the URIs trials read: local paths here, s3:// in a cluster).
        workdir: where the local backend keeps its Optuna journal (a rerun resumes from it).
        image: the trainer image the Katib trial Job runs.
        on_trial: progress callback (record, done, total), local backend.
    """
    from keel.components.tune.experiment import build_experiment, experiment_dict

    experiment = build_experiment(name, tune, model, target, data, image)
    spec = experiment_dict(experiment)
    if tune.backend == "katib":
        from keel.components.tune.katib import run_on_katib

        result = run_on_katib(experiment, tune.namespace, timeout_s=int(os.environ.get("KEEL_TUNE_TIMEOUT_S", "86400")), on_progress=on_trial)
        trials = [dict(t) for t in result.trials]
    else:
        from keel.components.tune.local import run_local

        # Katib takes no seed for sobol or hyperband; the local samplers still need one to repeat.
        result = run_local(spec, workdir, on_trial=on_trial, seed=tune.seed)
        trials = [
            {"number": t.number, "state": t.state, "value": t.value, "params": t.params,
             "intermediate": list(t.intermediate), "seconds": t.seconds, "reason": t.reason}
            for t in result.trials
        ]
    return SearchOutcome(spec, tune.backend, dict(result.best_params), float(result.best_value), trials)


def tuned_model(model: ModelSection, best_params: dict, task: str) -> dict:
    """The model section with the best parameters in model.params, checked like any config."""
    from keel.components._common.training.estimators import check_params

    merged = ModelSection.parse({**model.model_dump(mode="json"), "params": {**model.params, **best_params}}, "model")
    check_params(merged, task)  # a search space outside what the estimator accepts fails here, by name
    return merged.model_dump(mode="json", exclude_none=True)


def trials_frame(outcome: SearchOutcome) -> pd.DataFrame:
    """One row per trial: number, state, value, seconds, reason, then one column per parameter."""
    rows = []
    for trial in outcome.trials:
        row = {k: trial.get(k) for k in ("number", "state", "value", "seconds", "reason")}
        row.update({f"param_{k}": (v if isinstance(v, (int, float)) else str(v)) for k, v in (trial.get("params") or {}).items()})
        rows.append(row)
    if not rows:
        raise ConfigError("tune: the search finished no trial; check tune.max_trials and the trial logs")
    return pd.DataFrame(rows)
