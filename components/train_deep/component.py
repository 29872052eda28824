"""KFP component: train_image_model."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from keel.components._common.component import keel_component


@keel_component
def train_image_model(
    train: Input[Dataset],
    validation: Input[Dataset],
    model: dict,
    training: dict,
    registry: dict,
    trained_model: Output[Model],
    metrics: Output[Metrics],
    resources: dict = {},  # noqa: B006 (KFP reads the default from the signature; never mutated)
    job_name: str = "keel-train",
):
    """Trains a PyTorch or TensorFlow image classifier; CUDA when the node has it, CPU otherwise.

    With training.distributed.processes > 1 it runs data-parallel: torchrun (gloo on
    CPU, nccl on GPUs) or tf.distribute inside this step, or, with launcher
    pytorchjob, a PyTorchJob on the cluster running the same worker module.
    Checkpoints go to the artifact store every training.checkpoint_every epochs;
    a retried or rerun step resumes from the last one.

    Args:
        train: image set from ingest_images.
        validation: image set for per-epoch validation and early stopping.
        model: the vision `model` section (framework, architecture, params).
        training: the `training` section (epochs, batch size, precision, checkpoints, distributed...).
        registry: the `registry` section (the store holds the checkpoints).
        resources: the `resources` section; with launcher pytorchjob, each replica's requests and GPU pool.
        job_name: PyTorchJob name prefix (launcher pytorchjob).
        trained_model: a directory: model.json (classes, input contract, history, how it trained),
            weights and the framework's export (TorchScript or a zipped SavedModel).
        metrics: best-epoch train_loss / val_loss / val_accuracy, epochs_run, throughput,
            and every epoch's figures (epoch_NNN_<metric>).
    """
    from keel.components._common import lineage
    from keel.components._common.config import RegistrySection
    from keel.components._common.errors import user_errors
    from keel.components._common.vision_config import DeepModelSection, ResourcesSection, TrainingSection
    from keel.components.train_deep import distributed
    from keel.components.train_deep.train_step import build_spec, epoch_metrics, run_as_pytorchjob, summary_metrics

    with user_errors("train_image_model"):
        model_cfg = DeepModelSection.parse(model, "model")
        training_cfg = TrainingSection.parse(training, "training")
        registry_cfg = RegistrySection.parse(registry, "registry")
        spec = build_spec(train.path, validation.path, trained_model.path, model_cfg, training_cfg, registry_cfg)
        if training_cfg.distributed.launcher == "pytorchjob":
            info = run_as_pytorchjob(spec, train.uri, validation.uri, trained_model.path, training_cfg,
                                     ResourcesSection.parse(resources, "resources"), registry_cfg, job_name)
        else:
            info = distributed.run(spec)
        parents = [lineage.parent("train", train), lineage.parent("validation", validation)]
        trained_model.metadata.update({"framework": info["framework"], "architecture": info["architecture"],
                                       "classes": info["classes"], "training": info["training"]})
        trained_model.metadata.update(lineage.stamp(content_hash=lineage.artifact_hash(trained_model), parents=parents,
                                                    params={"model": model, "training": training}))
        for name, value in {**summary_metrics(info), **epoch_metrics(info["history"])}.items():
            metrics.log_metric(name, value)
        metrics.metadata.update(lineage.stamp(content_hash=info["training"]["run_id"],
                                              parents=[lineage.parent("trained_model", trained_model)], params=training))
        lineage.write_metadata_file(metrics)
