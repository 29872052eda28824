"""What one training run needs, as one JSON-safe record.

The same `TrainSpec` drives every way a model is trained: in-process, each
`torchrun` process locally, each PyTorchJob replica on a cluster (the worker
reads it from the artifact store), and the Keras trainer. Data travel as
paths (`.npz` image sets, local or s3://), never as pickles.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from keel.components._common.errors import ConfigError


@dataclass
class TrainSpec:
    """One training run. Paths may be local or s3:// (the worker stages them)."""

    train_path: str
    validation_path: str
    out_dir: str
    framework: str = "torch"
    architecture: str = "cnn"
    params: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    seed: int = 42
    augment: dict = field(default_factory=lambda: {"flip": False, "crop_padding": 0})
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False
    loader: str = "tensor"  # tensor: whole set in (device) memory; dataloader: pinned batches from worker processes
    workers: int = 2
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None
    early_stopping: dict | None = None  # {"metric": "val_loss"|"val_accuracy", "patience": int, "min_delta": float}
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1
    processes: int = 1
    backend: str = "auto"  # auto | gloo | nccl
    max_steps_per_epoch: int | None = None
    # Not serialised: a hook the component uses to log each epoch as it ends.
    on_epoch: Callable[[dict], None] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> str:
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "on_epoch"}
        return json.dumps(record, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "spec") -> "TrainSpec":
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{where}: not valid JSON ({err})") from None
        known = {f.name for f in dataclasses.fields(cls)} - {"on_epoch"}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        try:
            return cls(**record)
        except TypeError as err:
            raise ConfigError(f"{where}: {err}") from None

    def write(self, path: str | Path) -> None:
        from keel.components._common.storage import write_bytes

        write_bytes(str(path), self.to_json().encode(), content_type="application/json")

    @classmethod
    def read(cls, uri: str) -> "TrainSpec":
        from keel.components._common.storage import read_bytes

        return cls.from_json(read_bytes(uri).decode(), where=uri)

    def fingerprint(self) -> str:
        """The run's identity: its settings and its data's content, not where the data happen to live.

        A checkpoint is resumed only by a run with the same fingerprint.
        """
        import hashlib

        from keel.components._common.lineage import file_sha256
        from keel.components._common.storage import local_copy

        skip = {"out_dir", "on_epoch", "checkpoint_dir", "checkpoint_every", "workers", "threads", "loader"}
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        record["train_path"] = file_sha256(local_copy(self.train_path))
        record["validation_path"] = file_sha256(local_copy(self.validation_path))
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()

    def read_data(self):
        """The train and validation image sets (staged from s3:// when needed), checked to match each other.

        Raises:
            DataError: unreadable sets, or validation images of another shape or other classes.
        """
        from keel.components._common import image_data, storage
        from keel.components._common.errors import DataError

        train = image_data.read_npz(storage.local_copy(self.train_path))
        validation = image_data.read_npz(storage.local_copy(self.validation_path))
        if validation.shape != train.shape:
            raise DataError(f"validation: images are {validation.shape}, train images are {train.shape}; both must match")
        if validation.classes != train.classes:
            raise DataError(f"validation: classes {validation.classes} differ from train's {train.classes}")
        return train, validation
