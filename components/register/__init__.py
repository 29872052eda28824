"""Register stage: publish a verified, versioned model bundle with its lineage."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "register_model":
        from keel.components.register.component import register_model

        return register_model
    raise AttributeError(name)
