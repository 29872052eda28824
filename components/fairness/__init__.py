"""Fairness stage: trained model + test split -> group metrics, disparities with intervals, a gate and a report."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "assess_fairness":
        from keel.components.fairness.component import assess_fairness

        return assess_fairness
    raise AttributeError(name)
