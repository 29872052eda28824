"""Image ingest stage: an image source -> train, validation and test image sets (.npz)."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME).
    if name == "ingest_images":
        from keel.components.ingest_images.component import ingest_images

        return ingest_images
    raise AttributeError(name)
