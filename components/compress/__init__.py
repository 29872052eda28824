"""Compress stage: a trained image model -> int8, pruned and ONNX/TFLite variants, measured, one chosen to serve."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "compress_model":
        from keel.components.compress.component import compress_model

        return compress_model
    raise AttributeError(name)
