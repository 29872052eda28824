"""The TensorFlow/Keras training loop: the torch trainer's contract, on tf.data, Keras 3 and tf.distribute.

`train_image(spec)` takes the same `TrainSpec` as torch_train and writes the
same model directory (artifact.py), with a SavedModel as the served format.

Reproducibility: Keras' seed plus TensorFlow's op determinism, and every
random choice of an epoch (its order, its augmentation) comes from
stateless ops keyed by (seed, epoch, step), never from a stateful stream.
So a resumed run builds exactly the batches the killed run would have, from
the resumed epoch on, and continues as the uninterrupted run does.

Data: the whole uint8 set is one tensor; a step gathers a batch of indices
out of it and augments the whole batch (per-image flip and padded crop) with
tf ops inside the tf.data map, prefetched. Like the torch trainer, only
whole global batches are used (`n // batch_size` steps per epoch), so every
replica steps the same number of times.

Precision: "mixed_bfloat16" / "mixed_float16" Keras policies (fp16 with loss
scaling) when asked, or under "auto" on a GPU (bf16 from compute capability
8.0); fp32 on CPU under auto. The export is always float32.

Distributed (processes > 1): MultiWorkerMirroredStrategy over `processes`
OS processes on 127.0.0.1, each told its place by TF_CONFIG (free ports),
gradients all-reduced by collective ops over gRPC (ring), the TensorFlow
equivalent of torchrun + gloo. `batch_size` is the global batch: tf.distribute
splits each one across the replicas, so the optimisation matches one process
on the same batch. The chief (worker 0) writes the checkpoints and the model
directory. The same worker entry point (`python -m
keel.components.train_deep.tf_train --spec URI`) serves a TFJob-style
cluster, where the operator sets TF_CONFIG instead of this launcher.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from keel.components._common import image_data, storage
from keel.components._common.errors import ConfigError, DataError, KeelError
from keel.components._common.deep_model import artifact
from keel.components._common.deep_model.keras_models import check_image_params
from keel.components.train_deep.spec import TrainSpec

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
EPOCH_LOG = "KEEL_TF_EPOCH_LOG"  # where a distributed chief appends its epoch records for the launcher
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same SavedModel zips to the same bytes (content hash)


def train_image(spec: TrainSpec) -> dict:
    """Trains a Keras image classifier as `spec` says and writes the model directory (artifact.py).

    `spec.checkpoint_dir` may be a local directory or an `s3://` prefix; the
    run's checkpoints live under `<checkpoint_dir>/<run id>/` and are removed
    once the model directory is written.

    The torch-only settings (channels_last, compile, loader, workers,
    backend) are ignored; `threads` sizes TensorFlow's intra-op pool.

    Returns:
        model.json's content.

    Raises:
        ConfigError: a setting this trainer or machine cannot honour (the message names it).
        DataError: the data cannot be trained on (the message names the file).
    """
    _check_settings(spec)
    if spec.processes > 1 and "TF_CONFIG" not in os.environ:
        _read_data(spec)  # fail here, in one line, rather than in every worker
        return _launch_workers(spec)
    return _train(spec)


# -- checks ----------------------------------------------------------------------------------------------

def _check_settings(spec: TrainSpec) -> None:
    choices = {"optimizer": ("adamw", "sgd"), "precision": ("auto", *POLICIES), "device": ("auto", "cpu", "cuda")}
    for name, allowed in choices.items():
        if getattr(spec, name) not in allowed:
            raise ConfigError(f"training.{name}: {getattr(spec, name)!r}; use one of {', '.join(allowed)}")
    for name in ("epochs", "batch_size", "checkpoint_every", "processes"):
        if int(getattr(spec, name)) < 1:
            raise ConfigError(f"training.{name}: must be at least 1 (got {getattr(spec, name)})")
    if spec.batch_size % spec.processes:
        raise ConfigError(f"training.batch_size: {spec.batch_size} does not split evenly over {spec.processes} processes")
    if spec.early_stopping:
        metric = spec.early_stopping.get("metric", "val_loss")
        if metric not in ("val_loss", "val_accuracy"):
            raise ConfigError(f"training.early_stopping.metric: {metric!r}; use val_loss or val_accuracy")


def _read_data(spec: TrainSpec) -> tuple[image_data.ImageSet, image_data.ImageSet]:
    train, validation = spec.read_data()
    check_image_params(spec.architecture, train.shape, spec.params)
    if len(train) < spec.batch_size:
        raise DataError(f"train: {len(train)} images is less than one batch of {spec.batch_size}; lower training.batch_size")
    return train, validation


def _configure_runtime(tf, spec: TrainSpec) -> None:
    """Threads and visible devices, which TensorFlow fixes when its runtime starts: a process that has
    already run TensorFlow (a second run in one Python process, as in tests) keeps its settings."""
    try:
        if spec.threads and tf.config.threading.get_intra_op_parallelism_threads() != int(spec.threads):
            tf.config.threading.set_intra_op_parallelism_threads(int(spec.threads))
        if spec.device == "cpu" and tf.config.get_visible_devices("GPU"):
            tf.config.set_visible_devices([], "GPU")
    except RuntimeError as err:
        print(f"keel: TensorFlow is already running in this process; keeping its settings ({err})", flush=True)


def resolve_precision(requested: str, gpus: list) -> str:
    """fp32 on CPU under auto (bf16 on CPUs without AMX is slower); bf16 on Ampere and later, else fp16."""
    if requested != "auto":
        if requested == "fp16" and not gpus:
            raise ConfigError("training.precision: fp16 needs a GPU; use bf16 or fp32 on CPU")
        return requested
    if not gpus:
        return "fp32"
    from keel.components._common.tf_import import tensorflow

    tf = tensorflow()

    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
    return "bf16" if tuple(capability) >= (8, 0) else "fp16"


# -- the loop --------------------------------------------------------------------------------------------

def _train(spec: TrainSpec) -> dict:
    train, validation = _read_data(spec)
    distributed = spec.processes > 1
    is_chief = not distributed or _is_chief()

    from keel.components._common.tf_import import tensorflow

    tf = tensorflow()

    # Device and thread settings must precede the runtime's start, which the
    # strategy triggers: MultiWorkerMirroredStrategy must be the first thing built.
    _configure_runtime(tf, spec)
    gpus = tf.config.get_visible_devices("GPU") if spec.device != "cpu" else []
    if spec.device == "cuda" and not gpus:
        raise ConfigError("training.device: cuda was asked for but TensorFlow sees no GPU; use auto or cpu")
    if distributed:
        ring = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=ring)
    else:
        strategy = tf.distribute.get_strategy()

    from keel.components._common.tf_import import keras as _keras

    keras = _keras()

    from keel.components._common.deep_model.keras_models import build_keras_image_model
    from keel.components.train_deep.tf_callbacks import EpochBackup, EpochRecorder, read_checkpoint

    keras.utils.set_random_seed(spec.seed)
    tf.config.experimental.enable_op_determinism()
    precision = resolve_precision(spec.precision, gpus)

    # Normalisation constants from the training images only, per channel (as the torch trainer).
    pixels = train.images.reshape(-1, train.shape[2]).astype(np.float64) / 255.0
    mean, std = pixels.mean(0).tolist(), np.maximum(pixels.std(0), 1e-3).tolist()
    params = check_image_params(spec.architecture, train.shape, spec.params)
    steps = len(train) // spec.batch_size
    if spec.max_steps_per_epoch:
        steps = min(steps, int(spec.max_steps_per_epoch))

    with strategy.scope():
        model = build_keras_image_model(spec.architecture, train.shape, len(train.classes), params, mean, std,
                                        dtype_policy=POLICIES[precision])
        model.compile(optimizer=_optimizer(keras, spec, steps, precision),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    if distributed:
        _patch_keras_multi_worker(tf, model, strategy)

    run_id = spec.fingerprint()
    history: list[dict] = []
    callbacks = [EpochRecorder(history, report=_reporter(spec) if is_chief else None)]
    stopping = None
    if spec.early_stopping:
        metric = spec.early_stopping.get("metric", "val_loss")
        stopping = keras.callbacks.EarlyStopping(
            monitor=metric, mode="min" if metric == "val_loss" else "max", restore_best_weights=True,
            patience=int(spec.early_stopping.get("patience", 3)), min_delta=float(spec.early_stopping.get("min_delta", 0.0)))
        callbacks.append(stopping)
    checkpoint_uri, backup, start_epoch = None, None, 0
    if spec.checkpoint_dir:
        checkpoint_uri = storage.join(spec.checkpoint_dir, run_id[:16])
        backup = EpochBackup(checkpoint_uri, spec.checkpoint_every, spec.epochs, run_id, is_chief, history, stopping)
        callbacks.append(backup)  # after EarlyStopping: see EpochBackup
        state = read_checkpoint(checkpoint_uri)
        if state is not None and state.get("fingerprint") == run_id:
            # The data must start at the resumed epoch: fit's initial epoch (set by the backup) only skips the count.
            start_epoch = spec.epochs if (state.get("early_stopping") or {}).get("stopped") else int(state["epoch"])
            if is_chief:
                print(f"keel: resuming from {checkpoint_uri} after epoch {state['epoch']}", flush=True)

    options = tf.data.Options()
    # Each worker keeps its replicas' slices of every global batch (an in-memory set has no files to split).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # A run that had already stopped early trains no more epochs; one epoch of data (never read by the
    # training loop) still gives Keras a batch to build the distributed step from.
    train_data = _train_dataset(tf, train, spec, steps, min(start_epoch, spec.epochs - 1)).with_options(options)
    val_data = _eval_dataset(tf, validation, 1024).with_options(options)

    started = time.perf_counter()
    model.fit(train_data, epochs=spec.epochs, steps_per_epoch=steps, validation_data=val_data,
              callbacks=callbacks, shuffle=False, verbose=0)
    wall = time.perf_counter() - started
    recorder, restored = callbacks[0], (backup.restored if backup else None) or {}
    epochs_here = len(history) - len(restored.get("history", []))
    stopped_early = bool(stopping and (stopping.stopped_epoch > 0 or (restored.get("early_stopping") or {}).get("stopped")))
    best_epoch = history[-1]["epoch"] if history else 0
    if stopping is not None and stopping.best_weights is not None:
        best_epoch = int(stopping.best_epoch) + 1
    info = artifact.trained_info(
        framework="tensorflow", layout="NHWC", spec=spec, train=train, mean=mean, std=std, files=("saved_model",),
        serving_format="saved_model", history=history,
        training={
            "device": "cuda" if gpus else "cpu", "precision": precision, "processes": spec.processes,
            "replicas": int(strategy.num_replicas_in_sync), "strategy": type(strategy).__name__,
            "epochs_run": len(history), "best_epoch": best_epoch, "stopped_early": stopped_early,
            "resumed_from_epoch": int(restored["epoch"]) + 1 if restored else 0,
            "images_per_second": (round(epochs_here * steps * spec.batch_size / recorder.train_seconds, 1)
                                  if recorder.train_seconds else None),
            "fit_seconds": round(wall, 3), "train_images": len(train), "validation_images": len(validation),
            "run_id": run_id, "checkpoint": checkpoint_uri,
            "tensorflow": tf.__version__, "keras": keras.__version__,
        },
    )
    if is_chief:
        export(keras, model, params, spec.out_dir, info)
        if backup is not None:
            backup.clear()  # only now: a kill during the export still resumes
    return info


def _patch_keras_multi_worker(tf, model, strategy) -> None:
    """Works around keras-team/keras#20585 (open): Keras 3's `fit` fails under MultiWorkerMirroredStrategy.

    Two cross-worker reductions in its TensorFlow trainer are wrong for this strategy:
    - before training it builds metrics and optimizer from one batch, which it
      "reduces" with `strategy.reduce(MEAN)` on the per-replica batch (fails);
      only the batch's shapes matter there, so the local replica's slice is used;
    - each step's logs (scalar losses and metrics) are reduced with
      `strategy.reduce(MEAN, axis=0)`, an invalid axis for a scalar; the mean
      over replicas (axis=None) is what is meant, and it gives every worker the
      same numbers, so they all stop early at the same epoch.
    Both are patched in the worker process only, which runs nothing else.
    """
    import types

    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)

    original = keras_tf_trainer.reduce_per_replica
    if getattr(original, "keel_patched", False):
        return

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy_, tf.distribute.MultiWorkerMirroredStrategy):
            return tf.nest.map_structure(lambda v: strategy_.reduce("MEAN", v, axis=None), values)
        return original(values, strategy_, reduction)

    reduce_per_replica.keel_patched = True
    keras_tf_trainer.reduce_per_replica = reduce_per_replica


def _optimizer(keras, spec: TrainSpec, steps: int, precision: str):
    """AdamW or Nesterov SGD on a one-cycle-like schedule (warm-up over 15%, cosine down), as the torch trainer.

    Biases and normalisation scales/offsets get no weight decay, as there.
    """
    total = max(1, steps * spec.epochs)
    warmup = max(1, int(0.15 * total))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=spec.learning_rate / 25.0, decay_steps=max(1, total - warmup), alpha=4e-6,
        warmup_target=spec.learning_rate, warmup_steps=warmup)
    if spec.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=spec.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True, weight_decay=spec.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if precision == "fp16":
        # Keras wraps only models whose own policy is mixed_float16; here the layers carry it.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _train_dataset(tf, train: image_data.ImageSet, spec: TrainSpec, steps: int, start_epoch: int):
    """Batches of (float32 pixels, labels) for epochs start_epoch..epochs-1, each epoch's order and
    augmentation keyed by (seed, epoch, step), so any epoch can be rebuilt alone."""
    x, y = tf.constant(train.images), tf.constant(train.labels)
    n, batch = len(train), int(spec.batch_size)
    flip, pad = bool(spec.augment.get("flip")), int(spec.augment.get("crop_padding") or 0)
    fold = tf.random.experimental.stateless_fold_in
    order_seed = fold(tf.constant([spec.seed, 0], tf.int64), 1)
    augment_seed = fold(tf.constant([spec.seed, 0], tf.int64), 2)

    def load(epoch, step, index):
        images = tf.cast(tf.gather(x, index), tf.float32)
        if flip or pad:
            images = augment(tf, images, flip, pad, fold(augment_seed, epoch * steps + step))
        return images, tf.gather(y, index)

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=fold(order_seed, epoch))
        batches = tf.data.Dataset.from_tensor_slices(tf.reshape(order[:steps * batch], [steps, batch]))
        return batches.enumerate().map(lambda step, index: load(epoch, step, index))

    return tf.data.Dataset.range(start_epoch, spec.epochs).flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE)


def augment(tf, images, flip: bool, pad: int, seed):
    """Per-image random horizontal flip and padded random crop of a float NHWC batch, from a stateless seed.

    One offset pair per image, applied with two batched gathers, instead of a
    per-image crop in a Python loop.
    """
    flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if flip:
        images = tf.image.stateless_random_flip_left_right(images, seed=flip_seed)
    if pad:
        n, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        offsets = tf.random.stateless_uniform([n, 2], seed=crop_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
        rows = offsets[:, :1] + tf.range(height)[None, :]
        cols = offsets[:, 1:] + tf.range(width)[None, :]
        images = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    return images


def _eval_dataset(tf, images: image_data.ImageSet, batch: int):
    data = tf.data.Dataset.from_tensor_slices((images.images, images.labels)).batch(batch)
    return data.map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(tf.data.AUTOTUNE)


def _reporter(spec: TrainSpec):
    log = os.environ.get(EPOCH_LOG)

    def report(record: dict) -> None:
        print("keel: epoch " + " ".join(f"{k}={v}" for k, v in record.items()), flush=True)
        if spec.on_epoch:
            spec.on_epoch(record)
        if log:
            with open(log, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    return report


# -- export ----------------------------------------------------------------------------------------------

def export(keras, model, params: dict, out_dir: str | Path, info: dict) -> None:
    """saved_model.zip (float32, taking 0..255 NHWC pixels) and model.json.

    The SavedModel is exported from a fresh float32 copy built outside any
    distribution strategy: it serves on CPUs, where bf16/fp16 compute is slow
    or missing, and carries no device placement from the training cluster.
    """
    from keel.components._common.storage import atomic_write_local
    from keel.components._common.deep_model.keras_models import build_keras_image_model

    shape = (info["input"]["height"], info["input"]["width"], info["input"]["channels"])
    served = build_keras_image_model(info["architecture"], shape, len(info["classes"]), params,
                                     info["normalize"]["mean"], info["normalize"]["std"], dtype_policy="float32")
    served.set_weights(model.get_weights())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="keel-savedmodel-") as tmp:
        served.export(tmp, format="tf_saved_model", verbose=False)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
                entry = zipfile.ZipInfo(str(path.relative_to(tmp)), date_time=_ZIP_TIME)
                entry.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(entry, path.read_bytes())
    atomic_write_local(out / artifact.FILE_NAMES["saved_model"], buffer.getvalue())
    artifact.write_info(out, info)


# -- local multi-worker launch ---------------------------------------------------------------------------

def _task_index() -> int:
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    return int(config.get("task", {}).get("index", 0))


def _is_chief() -> bool:
    """TF_CONFIG's chief: the "chief" task when the cluster has one (a TFJob's), else worker 0."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return int(task.get("index", 0)) == 0


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _launch_workers(spec: TrainSpec) -> dict:
    """Runs `spec.processes` workers as one MultiWorkerMirroredStrategy cluster on 127.0.0.1 and waits.

    The chief's epoch records come back through a file and are handed to
    `spec.on_epoch` as they arrive. If any worker fails the others are
    stopped (a collective would otherwise wait for the dead one forever),
    and its one-line Keel error, or its log's tail, is raised here.
    """
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = spec.threads or max(1, (os.cpu_count() or 1) // spec.processes)
    with tempfile.TemporaryDirectory(prefix="keel-tf-workers-") as tmp:
        spec_path, epoch_log = Path(tmp) / "spec.json", Path(tmp) / "epochs.jsonl"
        replace(spec, threads=threads, on_epoch=None).write(spec_path)
        cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(spec.processes)]}
        procs, logs = [], []
        try:
            for index in range(spec.processes):
                env = {**os.environ, EPOCH_LOG: str(epoch_log),
                       "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
                logs.append(open(Path(tmp) / f"worker-{index}.log", "wb"))
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "keel.components.train_deep.tf_train", "--spec", str(spec_path)],
                    env=env, stdout=None if index == 0 else logs[-1], stderr=logs[-1]))
            relayed = 0
            while True:
                relayed = _relay(epoch_log, relayed, spec.on_epoch)
                codes = [p.poll() for p in procs]
                failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
                if failed is not None:
                    raise _worker_error(Path(tmp), failed, codes[failed], spec.processes)
                if all(code == 0 for code in codes):
                    break
                time.sleep(0.2)
            _relay(epoch_log, relayed, spec.on_epoch)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for log in logs:
                log.close()
    return artifact.read_info(out)


def _relay(epoch_log: Path, done: int, on_epoch) -> int:
    if not epoch_log.exists():
        return done
    lines = epoch_log.read_text().split("\n")[:-1]  # a line still being written has no newline yet
    for line in lines[done:]:
        if on_epoch:
            on_epoch(json.loads(line))
    return len(lines)


def _worker_error(tmp: Path, index: int, code: int, processes: int) -> KeelError | RuntimeError:
    error = tmp / f"error-{index}.json"
    if error.exists():
        record = json.loads(error.read_text())
        cls = {"ConfigError": ConfigError, "DataError": DataError}.get(record["type"], KeelError)
        return cls(record["message"])
    tail = "\n".join((tmp / f"worker-{index}.log").read_text(errors="replace").strip().splitlines()[-15:])
    return RuntimeError(f"tf.distribute worker {index} of {processes} failed (exit {code}):\n{tail}")


def main(argv: list[str] | None = None) -> int:
    """One tf.distribute worker: `python -m keel.components.train_deep.tf_train --spec URI` with TF_CONFIG set."""
    parser = argparse.ArgumentParser(prog="python -m keel.components.train_deep.tf_train")
    parser.add_argument("--spec", required=True, help="TrainSpec JSON (path or s3:// URI)")
    args = parser.parse_args(argv)
    from keel.components._common.errors import user_errors

    with user_errors("train worker"):
        try:
            _train(TrainSpec.read(args.spec))
        except KeelError as err:
            if not storage.is_s3(args.spec):  # tell the local launcher which error, not just the exit code
                record = {"type": type(err).__name__, "message": str(err)}
                (Path(args.spec).parent / f"error-{_task_index()}.json").write_text(json.dumps(record))
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
