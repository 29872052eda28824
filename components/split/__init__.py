"""Split stage: train / validation / test Datasets with the encoded target in `__label__`."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "split_data":
        from keel.components.split.component import split_data

        return split_data
    raise AttributeError(name)
