"""The train step's logic: config sections -> a TrainSpec -> a trained model directory and its metrics.

Kept free of KFP (the component is a few lines around `train_step`).
"""

from __future__ import annotations

from keel.components._common import storage
from keel.components._common.config import RegistrySection
from keel.components._common.vision_config import DeepModelSection, ResourcesSection, TrainingSection
from keel.components.train_deep.spec import TrainSpec


def checkpoint_dir(training: TrainingSection, registry: RegistrySection) -> str:
    """Checkpoints live in the artifact store, so a retried pod (or a rerun) finds them."""
    return training.checkpoint_dir or storage.join(registry.store, "checkpoints", registry.model_name)


def build_spec(train_path: str, validation_path: str, out_dir: str, model: DeepModelSection,
               training: TrainingSection, registry: RegistrySection) -> TrainSpec:
    return TrainSpec(
        train_path=train_path, validation_path=validation_path, out_dir=out_dir,
        framework=model.framework, architecture=model.architecture, params=dict(model.params),
        epochs=training.epochs, batch_size=training.batch_size, learning_rate=training.learning_rate,
        weight_decay=training.weight_decay, optimizer=training.optimizer, seed=training.seed,
        augment=training.augment.model_dump(), precision=training.precision, channels_last=training.channels_last,
        compile=training.compile, loader=training.loader, workers=training.workers, device=training.device,
        threads=training.threads,
        early_stopping=training.early_stopping.model_dump() if training.early_stopping else None,
        checkpoint_dir=checkpoint_dir(training, registry), checkpoint_every=training.checkpoint_every,
        processes=training.distributed.processes, backend=training.distributed.backend,
        max_steps_per_epoch=training.max_steps_per_epoch,
    )


def epoch_metrics(history: list[dict]) -> dict[str, float]:
    """Per-epoch figures as flat KFP metric names (the dashboard shows a Metrics artifact as one table)."""
    out = {}
    for record in history:
        for key in ("train_loss", "val_loss", "val_accuracy"):
            out[f"epoch_{record['epoch']:03d}_{key}"] = float(record[key])
    return out


def summary_metrics(info: dict) -> dict[str, float]:
    last = info["history"][-1] if info["history"] else {}
    best = next((r for r in info["history"] if r["epoch"] == info["training"]["best_epoch"]), last)
    out = {"epochs_run": float(info["training"]["epochs_run"]), "best_epoch": float(info["training"]["best_epoch"])}
    for key in ("train_loss", "val_loss", "val_accuracy"):
        if key in best:
            out[key] = float(best[key])
    if info["training"].get("images_per_second"):
        out["train_images_per_second"] = float(info["training"]["images_per_second"])
    return out


def job_settings(training: TrainingSection, resources: ResourcesSection | None) -> tuple[dict, dict]:
    """The PyTorchJob's `training` and `resources` (pytorchjob.JobTraining / JobResources) from the config."""
    d = training.distributed
    job_training = {"processes": d.processes, "timeout_s": d.timeout_minutes * 60}
    job_resources = {}
    if resources is not None:
        job_resources = {"cpu": resources.cpu, "memory": resources.memory}
        if resources.gpu is not None:
            gpu = resources.gpu.model_dump(mode="json", exclude_none=True)
            job_resources.update(accelerator=gpu["accelerator"], count=gpu["count"], node_selector=gpu["node_selector"],
                                 tolerations=gpu["tolerations"])
    return job_training, job_resources


def run_as_pytorchjob(spec: TrainSpec, train_uri: str, validation_uri: str, out_path: str, training: TrainingSection,
                      resources: ResourcesSection | None, registry: RegistrySection, job_prefix: str) -> dict:
    """Trains in a PyTorchJob: every replica reads the spec and data from the store, rank 0 writes the model there.

    The step's own outputs are local files, so the model is copied back into `out_path` afterwards.

    Raises:
        ConfigError: the data or the store is not on S3 (replica pods share nothing else).
    """
    from pathlib import Path

    from keel.components._common.errors import ConfigError
    from keel.components._common.deep_model import artifact
    from keel.components.train_deep.pytorchjob import run_pytorchjob

    for field, uri in (("train", train_uri), ("validation", validation_uri), ("registry.store", registry.store)):
        if not storage.is_s3(uri):
            raise ConfigError(f"training.distributed.launcher pytorchjob: {field} is {uri!r}, but the replicas can only "
                              "read s3:// URIs; run on a cluster whose pipeline root and registry.store are S3")
    run_id = spec.fingerprint()[:16]
    base = storage.join(registry.store, "pytorchjobs", run_id)
    spec.train_path, spec.validation_path, spec.out_dir = train_uri, validation_uri, storage.join(base, "model")
    spec_uri = storage.join(base, "spec.json")
    spec.write(spec_uri)
    job_training, job_resources = job_settings(training, resources)
    run_pytorchjob(spec_uri, job_prefix, training.distributed.namespace, job_training, job_resources,
                   on_change=lambda state: print(f"keel: PyTorchJob {state}", flush=True))
    out = Path(out_path)
    out.mkdir(parents=True, exist_ok=True)
    storage.atomic_write_local(out / artifact.MODEL_INFO, storage.read_bytes(storage.join(spec.out_dir, artifact.MODEL_INFO)))
    info = artifact.read_info(out)
    for name in info["files"].values():
        storage.atomic_write_local(out / name, storage.read_bytes(storage.join(spec.out_dir, name)))
    return info
