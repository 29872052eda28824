"""Clean stage: missing values, outliers and duplicates, with every removed row quarantined."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "clean_data":
        from keel.components.clean.component import clean_data

        return clean_data
    raise AttributeError(name)
