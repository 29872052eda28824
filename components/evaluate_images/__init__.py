"""Evaluate-images stage: trained image model + test images -> metrics, confusion matrix, HTML report and a pass/fail gate."""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "evaluate_image_model":
        from keel.components.evaluate_images.component import evaluate_image_model

        return evaluate_image_model
    raise AttributeError(name)
