"""Features stage: a ColumnTransformer fitted on the training split only."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "engineer_features":
        from keel.components.features.component import engineer_features

        return engineer_features
    raise AttributeError(name)
