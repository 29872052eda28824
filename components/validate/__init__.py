"""Validate stage: Dataset + schema -> valid Dataset, quarantine Dataset, schema JSON, HTML report."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "validate_data":
        from keel.components.validate.component import validate_data

        return validate_data
    raise AttributeError(name)
