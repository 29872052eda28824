"""Explain stage: trained model + splits -> global attributions per input column, an HTML report, and the
explainer spec (explainer.json) the predictor's :explain uses."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "explain_model":
        from keel.components.explain.component import explain_model

        return explain_model
    if name == "card_summary":
        from keel.components.explain.explain import card_summary

        return card_summary
    if name == "card_figures":
        from keel.components.explain.plots import card_figures

        return card_figures
    raise AttributeError(name)
