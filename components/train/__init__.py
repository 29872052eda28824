"""Train stage: engineered features -> fitted model Pipeline (transformer + estimator)."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "train_model":
        from keel.components.train.component import train_model

        return train_model
    raise AttributeError(name)
