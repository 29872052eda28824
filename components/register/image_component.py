"""KFP component: register_image_model."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from keel.components._common.component import keel_component


@keel_component
def register_image_model(
    model: Input[Model],
    trained_model: Input[Model],
    metrics: Input[Metrics],
    train: Input[Dataset],
    validation: Input[Dataset],
    test: Input[Dataset],
    data: dict,
    model_config: dict,
    training: dict,
    evaluation: dict,
    compression: dict,
    model_card: dict,
    registry: dict,
    bundle: Output[Model],
) -> str:
    """Publishes an image model (its exports, metrics, model card, lineage) as a new registry version.

    Args:
        model: the model directory to serve (compress_model's output, or train's when compression is off).
        trained_model: the directory train_image_model wrote (recorded in lineage).
        metrics: the test metrics from evaluate_image_model.
        train: the training image set (recorded in lineage).
        validation: the validation image set (recorded in lineage).
        test: the test image set (recorded in lineage).
        data: the vision `data` section; this and the sections below are recorded in lineage.json.
        model_config: the vision `model` section.
        training: the `training` section.
        evaluation: the `evaluation` section.
        compression: the `compression` section.
        model_card: the `model_card` section (owners, intended use, limitations).
        registry: the `registry` section (store, model_name).
        bundle: a verified copy of the registered version's files, MANIFEST.json included.

    Returns:
        The registered version, e.g. "v3".
    """
    from keel.components._common import lineage
    from keel.components._common.config import ModelCardSection, RegistrySection
    from keel.components._common.errors import user_errors
    from keel.components.register.image_register import IMAGE_INPUTS, register_image
    from keel.components.register.register import write_local_copy

    with user_errors("register_image_model"):
        registry_cfg = RegistrySection.parse(registry, "registry")
        card = ModelCardSection.parse(model_card, "model_card").model_dump(mode="json")
        config = {"data": data, "model": model_config, "training": training, "evaluation": evaluation,
                  "compression": compression, "model_card": card, "registry": registry_cfg}
        inputs = {"model": model, "trained_model": trained_model, "metrics": metrics, "train": train,
                  "validation": validation, "test": test}
        registered = register_image(inputs, config, registry_cfg, card)
        write_local_copy(registered, bundle.path)
        bundle.metadata.update({"model_name": registered.model_name, "version": registered.label,
                                "registry_uri": registered.uri, "bundle_hash": registered.manifest["bundle_hash"],
                                "stage": registered.stage, "gates": registered.gates})
        bundle.metadata.update(lineage.stamp(content_hash=registered.manifest["bundle_hash"],
                                             parents=[lineage.parent(n, inputs[n]) for n in IMAGE_INPUTS],
                                             params=registry_cfg.model_dump(mode="json")))
        print(f"registered {registered.model_name} {registered.label} at {registered.uri} ({registered.stage})", flush=True)
        return registered.label
