"""Profile stage: Dataset -> HTML report + summary JSON (read by the model card)."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "profile_data":
        from keel.components.profile.component import profile_data

        return profile_data
    raise AttributeError(name)
