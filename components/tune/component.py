"""KFP component: tune_hyperparameters."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from keel.components._common.component import keel_component


@keel_component
def tune_hyperparameters(
    train_features: Input[Dataset],
    validation_features: Input[Dataset],
    transformer: Input[Model],
    target: dict,
    model: dict,
    tune: dict,
    experiment: Output[Artifact],
    search: Output[Dataset],
    best: Output[Metrics],
) -> dict:
    """Searches model.params with a Katib Experiment (Katib in a cluster, Optuna locally) and returns the tuned model section.

    Args:
        train_features: engineered training rows (trials fit on them).
        validation_features: engineered validation rows (trials report the objective on them).
        transformer: the fitted transformer (each trial composes its model with it, as train_model does).
        target: the `target` config section.
        model: the `model` config section; its params are fixed for every trial.
        tune: the `tune` config section (objective, algorithm, search space, budget, backend).
        experiment: the Katib Experiment YAML that ran (`kubectl apply -f`-able).
        search: every trial (Parquet): number, state, value, seconds, reason, param_<name>.
        best: the best trial's objective value; metadata holds its parameters.

    Returns:
        The `model` section with the best parameters merged into params (train_model's input).
    """
    import os
    from pathlib import Path

    import yaml

    from keel.components._common import lineage, storage, tables
    from keel.components._common.config import ModelSection, TargetSection, TuneSection
    from keel.components._common.errors import user_errors
    from keel.components._common.images import COMPONENT_IMAGES
    from keel.components.tune.experiment import TrialData
    from keel.components.tune.search import run_search, to_uri, trials_frame, tuned_model

    with user_errors("tune_hyperparameters"):
        target_cfg, model_cfg = TargetSection.parse(target, "target"), ModelSection.parse(model, "model")
        tune_cfg = TuneSection.parse(tune, "tune")
        sources = (train_features, validation_features, transformer)
        classes = next((a.metadata["classes"] for a in sources if a.metadata.get("classes")), None)
        local = tune_cfg.backend == "local"
        # Trials read the data by artifact URI: local paths here, S3 objects in a cluster.
        data = TrialData(
            train=train_features.path if local else to_uri(train_features.uri),
            validation=validation_features.path if local else to_uri(validation_features.uri),
            transformer=transformer.path if local else to_uri(transformer.uri),
            classes=classes,
        )
        # Beside the pipeline root, so a rerun over the same (cached) inputs resumes the search.
        workdir = os.environ.get("KEEL_TUNE_DIR") or str(Path(search.path).parents[2] / ".keel_tune")

        def progress(record, done, total):
            value = "-" if record.value is None else f"{record.value:.4f}"
            print(f"tune: trial {done}/{total} {record.state.lower()} {tune_cfg.objective.metric}={value} {record.params}", flush=True)

        outcome = run_search(f"keel-{model_cfg.family}", data, tune_cfg, model_cfg, target_cfg, workdir,
                             image=COMPONENT_IMAGES["tune_trial"], on_trial=progress)
        storage.write_bytes(experiment.path, yaml.safe_dump(outcome.experiment, sort_keys=False).encode())
        parents = [lineage.parent(n, a) for n, a in (("train_features", train_features),
                                                      ("validation_features", validation_features), ("transformer", transformer))]
        experiment.metadata.update(lineage.stamp(content_hash=lineage.file_sha256(experiment.path), parents=parents,
                                                 params={"tune": tune_cfg.model_dump(mode="json")}))
        summary = outcome.summary(tune_cfg)
        meta = tables.write_parquet(trials_frame(outcome), search.path)
        search.metadata.update(meta)
        search.metadata.update({k: v for k, v in summary.items() if k != "trials"})
        search.metadata["trials_json"] = summary["trials"]
        search.metadata.update(lineage.stamp(content_hash=meta["content_hash"], parents=parents,
                                             params={"tune": tune_cfg.model_dump(mode="json")}))
        best.log_metric(tune_cfg.objective.metric, outcome.best_value)
        best.metadata["best_params"] = outcome.best_params
        print(f"tune: best {tune_cfg.objective.metric}={outcome.best_value:.4f} with {outcome.best_params} "
              f"({summary['trials_by_state']}, {outcome.backend})", flush=True)
        return tuned_model(model_cfg, outcome.best_params, target_cfg.task)
