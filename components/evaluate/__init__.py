"""Evaluate stage: trained model + test set -> metrics, curves, HTML report and a pass/fail gate."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "evaluate_model":
        from keel.components.evaluate.component import evaluate_model

        return evaluate_model
    raise AttributeError(name)
