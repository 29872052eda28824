"""Tune stage: a Katib Experiment over model.params, run by Katib on a cluster or by Optuna here."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "tune_hyperparameters":
        from keel.components.tune.component import tune_hyperparameters

        return tune_hyperparameters
    raise AttributeError(name)
