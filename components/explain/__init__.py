"""Explain stage: trained model + splits -> global attributions per input column, an HTML report, and the
explainer spec (explainer.json) the predictor's :explain uses."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "explain_model":
        from keel.components.explain.component import explain_model

        return explain_model
    raise AttributeError(name)
