"""deploy_model: a KServe InferenceService for the registered bundle (rendered, and applied when enabled)."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "deploy_model":
        from keel.components.deploy.component import deploy_model

        return deploy_model
    raise AttributeError(name)
