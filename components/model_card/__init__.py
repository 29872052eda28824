"""Model card stage: document a trained model as Markdown and self-contained HTML."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "write_model_card":
        from keel.components.model_card.component import write_model_card

        return write_model_card
    raise AttributeError(name)
