"""The Keras callbacks of a TensorFlow training run: per-epoch records, and resumable backups.

`EpochRecorder` turns Keras' epoch logs into Keel's history records (the
same keys as the torch trainer) and hands each to the caller as it ends.

`EpochBackup` is `keras.callbacks.BackupAndRestore`, made kill-safe,
chief-only and S3-capable. Keras' callback already does the resume itself:
on train begin it loads the last backup (model and optimizer variables, so
the step count and learning-rate schedule continue too) and sets the
model's initial epoch, so `fit` carries on where the killed run stopped.
What is changed here, each for a failure it would otherwise have:

- Kill-safety: Keras overwrites `latest.weights.h5` and then the epoch file,
  so a SIGKILL between the two resumes the wrong epoch with newer weights,
  and one during the write leaves a truncated file. Here each backup is a
  new `epoch-NNNN.weights.h5`, and then one small `checkpoint.json` (written
  atomically) points at it; older files are removed only after that.
- Distributed: every tf.distribute worker restores, only the chief writes.
- S3: the backup is staged in a local directory and uploaded (the weights
  first, the pointer last), so a `checkpoint_dir` can be `s3://bucket/prefix`
  and a rescheduled pod resumes from it.
- Every N epochs (training.checkpoint_every), not every epoch.

`checkpoint.json` also carries the epoch history so far (so a resumed run
reports every epoch), the dropout layers' random-stream states (which
Keras' weights file leaves out), the early-stopping state (best value, epochs without
improvement, and the best weights as `best-epoch-NNNN.npz`, so a resumed run
stops and restores exactly as the uninterrupted one would), and the run's
fingerprint, so a checkpoint left by another run is refused instead of
silently loaded into this one.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from keel.components._common import storage, tf_import
from keel.components._common.errors import ConfigError, DataError

keras = tf_import.keras()  # the callbacks below subclass Keras's, so this module needs it at import
POINTER = "checkpoint.json"


def read_checkpoint(uri: str) -> dict | None:
    """The last complete backup's record under `uri` (epoch, weights, history, fingerprint), or None."""
    pointer = storage.join(uri, POINTER)
    if not storage.exists(pointer):
        return None
    try:
        return json.loads(storage.read_bytes(pointer))
    except json.JSONDecodeError as err:
        raise DataError(f"{pointer}: not valid JSON ({err}); delete it to start training afresh") from None


class EpochBackup(keras.callbacks.BackupAndRestore):
    """Backs up model + optimizer every `every` epochs to `uri` and restores the latest at train begin.

    Args:
        uri: a local directory or an `s3://bucket/prefix` (training.checkpoint_dir).
        every: back up after every this many epochs (and after the last one).
        epochs: the run's total epochs.
        fingerprint: the run's identity (settings and data hashes); a backup of another run is refused.
        is_chief: only the chief writes; every worker restores.
        history: the list the training loop appends epoch records to; saved with each backup.
        early_stopping: the run's `keras.callbacks.EarlyStopping`, if any; it must come before this
            callback in the list, so its `on_train_begin` reset happens before the restore and its
            `on_epoch_end` update before the backup.
    """

    def __init__(self, uri: str, every: int, epochs: int, fingerprint: str, is_chief: bool, history: list,
                 early_stopping=None):
        self._staging = tempfile.TemporaryDirectory(prefix="keel-ckpt-")
        local = uri if not storage.is_s3(uri) else self._staging.name
        super().__init__(backup_dir=local, save_freq="epoch", delete_checkpoint=False)
        self.uri, self.every, self.epochs = uri, max(1, int(every)), int(epochs)
        self.fingerprint, self.is_chief, self.history = fingerprint, is_chief, history
        self.early_stopping = early_stopping
        self.restored: dict | None = None

    def _load_model(self):
        state = read_checkpoint(self.uri)
        if state is None:
            return
        if state.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"training.checkpoint_dir: {self.uri} holds the checkpoint of another run "
                              f"(run {str(state.get('fingerprint'))[:16]}, this is {self.fingerprint[:16]}); "
                              "use another checkpoint_dir or delete it")
        weights = storage.local_copy(storage.join(self.uri, state["weights"]), self._staging.name)
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(str(weights))
        except (ValueError, OSError) as err:
            raise DataError(f"{storage.join(self.uri, state['weights'])}: cannot restore the checkpoint "
                            f"({str(err).splitlines()[0]}); delete {self.uri} to start afresh") from None
        self.model._initial_epoch = int(state["epoch"])
        self.history[:] = state.get("history", [])
        for variable, value in zip(_seed_states(self.model), state.get("seed_states", [])):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        stopping = state.get("early_stopping")
        if self.early_stopping is not None and stopping:
            es = self.early_stopping
            es.best, es.wait, es.best_epoch = stopping["best"], stopping["wait"], stopping["best_epoch"]
            if stopping.get("best_weights"):
                npz = storage.read_bytes(storage.join(self.uri, stopping["best_weights"]))
                with np.load(io.BytesIO(npz)) as arrays:
                    es.best_weights = [arrays[f"w{i}"] for i in range(len(arrays.files))]
            if stopping["stopped"]:
                # It had already stopped when killed: run no more epochs, only restore the best.
                self.model._initial_epoch = self.epochs
        self.restored = state

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        stopping = self.model.stop_training  # set by EarlyStopping's on_epoch_end, which ran first
        if self._current_epoch % self.every == 0 or self._current_epoch == self.epochs or stopping:
            self._save_model()

    def _save_model(self):
        if not self.is_chief:
            return
        name = f"epoch-{self._current_epoch:04d}.weights.h5"
        staging = Path(self.backup_dir)
        staging.mkdir(parents=True, exist_ok=True)
        # Keras insists on the .weights.h5 suffix, so the partial file is named by prefix.
        partial = staging / f"partial-{name}"
        self.model.save_weights(str(partial), overwrite=True)
        if storage.is_s3(self.uri):
            storage.write_bytes(storage.join(self.uri, name), partial.read_bytes())
            partial.unlink()
        else:
            partial.replace(staging / name)
        state = {"epoch": self._current_epoch, "weights": name, "history": list(self.history),
                 "fingerprint": self.fingerprint, "early_stopping": self._early_stopping_state(),
                 "seed_states": [np.asarray(v).tolist() for v in _seed_states(self.model)]}
        storage.write_bytes(storage.join(self.uri, POINTER), json.dumps(state, indent=1).encode(), "application/json")
        keep = {name, (state["early_stopping"] or {}).get("best_weights")}
        for old in _backup_files(self.uri):
            if old not in keep:
                _remove(storage.join(self.uri, old))

    def _early_stopping_state(self) -> dict | None:
        es = self.early_stopping
        if es is None or es.best is None:
            return None
        best_weights = None
        if es.best_weights is not None:
            best_weights = f"best-epoch-{es.best_epoch + 1:04d}.npz"
            target = storage.join(self.uri, best_weights)
            if not storage.exists(target):  # unchanged since an earlier backup
                buffer = io.BytesIO()
                np.savez(buffer, **{f"w{i}": w for i, w in enumerate(es.best_weights)})
                storage.write_bytes(target, buffer.getvalue())
        return {"best": float(es.best), "wait": int(es.wait), "best_epoch": int(es.best_epoch),
                "stopped": bool(self.model.stop_training), "best_weights": best_weights}

    def clear(self) -> None:
        """Removes the backup once the trained model is safely written (the pointer first)."""
        if not self.is_chief:
            return
        _remove(storage.join(self.uri, POINTER))
        for old in _backup_files(self.uri) + [n for n in storage.list_names(self.uri) if n.startswith("partial-")]:
            _remove(storage.join(self.uri, old))
        if not storage.is_s3(self.uri) and Path(self.uri).is_dir() and not any(Path(self.uri).iterdir()):
            Path(self.uri).rmdir()
        self._staging.cleanup()


def _seed_states(model) -> list:
    """The random streams of dropout layers (Keras seed generators), in layer order.

    `save_weights` leaves them out, so without them a resumed run would draw
    the dropout masks of epoch 1 again instead of those that come next.
    """
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _backup_files(uri: str) -> list[str]:
    return [n for n in storage.list_names(uri)
            if n.startswith(("epoch-", "best-epoch-")) and n.endswith((".weights.h5", ".npz"))]


def _remove(uri: str) -> None:
    if not storage.is_s3(uri):
        Path(uri).unlink(missing_ok=True)
        return
    bucket, key = storage.split_s3(uri)
    storage.s3_client().remove_object(bucket, key)



class EpochRecorder(keras.callbacks.Callback):
    """Appends one history record per epoch and hands it to `report` (the chief's log and on_epoch hook).

    `seconds` is the training phase only (up to validation), as in the torch
    trainer, so images_per_second measures training, not evaluation.
    """

    def __init__(self, history: list, report=None):
        super().__init__()
        self.history, self.report = history, report
        self.train_seconds = 0.0
        self._started = self._validating = None

    def on_epoch_begin(self, epoch, logs=None):
        self._started, self._validating = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self._started is not None and self._validating is None:
            self._validating = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = (self._validating or time.perf_counter()) - self._started
        self.train_seconds += seconds
        rate = self.model.optimizer.learning_rate
        record = {"epoch": epoch + 1, "train_loss": round(float(logs["loss"]), 6),
                  "val_loss": round(float(logs["val_loss"]), 6), "val_accuracy": round(float(logs["val_accuracy"]), 6),
                  "seconds": round(seconds, 3), "learning_rate": float(np.asarray(rate))}
        self.history.append(record)
        if self.report is not None:
            self.report(record)
