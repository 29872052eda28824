"""Deep-learning training stage: PyTorch and TensorFlow/Keras models on images (and tabular features).

A GPU node pool when the config asks for one, CPU otherwise; several processes
(torchrun / tf.distribute locally, a PyTorchJob on a cluster) when it asks
for distributed training.
"""


def __getattr__(name):
    # Lazy: inside a running task kfp.dsl is only partly loaded (_KFP_RUNTIME),
    # so the component module must not be imported when the logic is.
    if name == "train_image_model":
        from keel.components.train_deep.component import train_image_model

        return train_image_model
    if name == "submit_pytorchjob":
        from keel.components.train_deep.job_component import submit_pytorchjob

        return submit_pytorchjob
    raise AttributeError(name)
