"""Ingest stage: source URI -> Parquet Dataset."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "ingest_data":
        from keel.components.ingest.component import ingest_data

        return ingest_data
    raise AttributeError(name)
