"""The PyTorch training loop: fast by default, seeded, checkpointed, resumable, data-parallel.

Speed (see ../shared/ARCHITECTURE.md's measurements):
  - the whole uint8 image set is one tensor (on the GPU when there is one);
    a step indexes a batch out of it and augments the batch on the device.
    A per-sample Dataset + DataLoader is the measured bottleneck; it stays
    available as `loader: dataloader` (pinned memory, worker processes) for
    sets that must stream;
  - bf16 autocast on GPUs that have it (fp16 with a grad scaler otherwise),
    channels_last for CNNs, optional torch.compile.
Reproducibility: every random choice of an epoch (its permutation, its
augmentation) comes from a generator seeded by (seed, epoch), and the global
RNG (dropout) is saved in each checkpoint, so a resumed run continues
exactly as the uninterrupted one would have on CPU.
Data parallel: under torchrun or a PyTorchJob (WORLD_SIZE > 1) each process
takes its share of every global batch and DDP averages the gradients, so
the optimisation matches one process on the same global batch.
"""

from __future__ import annotations

import copy
import io
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keel.components._common import image_data, storage
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.deep_model import artifact
from keel.components._common.deep_model.models import build_image_model
from keel.components.train_deep.spec import TrainSpec

CHECKPOINT_FILE = "last.pt"


# -- where and how ---------------------------------------------------------------------------------------

def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: cuda was asked for but this machine has no CUDA device; use auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def resolve_precision(requested: str, device: torch.device) -> str:
    """fp32 on CPU under auto: bf16 autocast on CPUs without AMX is slower, not faster."""
    if requested != "auto":
        if requested == "fp16" and device.type != "cuda":
            raise ConfigError("training.precision: fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# -- data ------------------------------------------------------------------------------------------------

def _as_tensors(images: image_data.ImageSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(images.images).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
    y = torch.from_numpy(images.labels)
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def augment(x: torch.Tensor, settings: dict, generator: torch.Generator) -> torch.Tensor:
    """Per-image random flip and padded random crop of a whole uint8/float NCHW batch, on its device.

    torchvision's per-sample transforms would run once per image on the CPU;
    this draws one offset per image and gathers all of them in one indexing op.
    """
    from torchvision.transforms.v2 import functional as TF

    n, _, h, w = x.shape
    if settings.get("flip"):
        flip = torch.rand(n, generator=generator, device=generator.device) < 0.5
        if flip.any():
            x = x.clone()
            x[flip] = TF.horizontal_flip(x[flip])
    pad = int(settings.get("crop_padding") or 0)
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = padded[torch.arange(n, device=x.device)[:, None, None, None],
                   torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
    return x


class _BatchDataset(torch.utils.data.Dataset):
    """Yields whole batches by index list, so DataLoader workers copy batches, not single images."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        # The sampler yields a whole batch's indexes and batch_size=None turns off collation,
        # so one call copies one batch.
        index = torch.as_tensor(index)
        return self.x[index], self.y[index]


def _collate(batch):
    return batch


def _epoch_batches(spec: TrainSpec, x, y, epoch: int, device: torch.device, rank: int, world: int):
    """This process's share of each global batch of one epoch, in the epoch's seeded order."""
    n = len(y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed * 100_003 + epoch))
    steps = n // spec.batch_size  # whole global batches only, so every replica steps the same number of times
    if spec.max_steps_per_epoch:
        steps = min(steps, spec.max_steps_per_epoch)
    if steps == 0:
        raise DataError(f"train: {n} images is less than one batch of {spec.batch_size}; lower training.batch_size")
    shards = [order[s * spec.batch_size:(s + 1) * spec.batch_size][rank::world] for s in range(steps)]
    if spec.loader == "dataloader":
        loader = torch.utils.data.DataLoader(
            _BatchDataset(x, y), batch_size=None, sampler=shards, collate_fn=_collate,
            num_workers=spec.workers, pin_memory=device.type == "cuda", persistent_workers=False,
            # A worker forked from a process whose other libraries run threads (TensorFlow's pools, a
            # step server) can segfault; forkserver workers start from a clean, single-threaded parent.
            multiprocessing_context="forkserver" if spec.workers else None,
        )
        for bx, by in loader:
            yield bx.to(device, non_blocking=True), by.to(device, non_blocking=True)
    else:
        for index in shards:
            index = index.to(x.device)
            yield x[index], y[index]


# -- the loop --------------------------------------------------------------------------------------------

def _load_checkpoint(uri: str, run_id: str) -> dict | None:
    if not storage.exists(uri):
        return None
    state = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=False)
    if state.get("fingerprint") != run_id:
        # Another run's checkpoint (other data or settings): never continue from it.
        print(f"keel: checkpoint {uri} belongs to another run; starting from epoch 1", flush=True)
        return None
    return state


def _save_checkpoint(uri: str, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    storage.write_bytes(uri, buffer.getvalue())  # atomic: a kill mid-write leaves the previous checkpoint


def _state_on_cpu(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _evaluate(model, x, y, batch_size: int, device, dtype) -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for start in range(0, len(y), batch_size):
            bx, by = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            logits = model(_prepare(bx, True)).float()
            loss_sum += F.cross_entropy(logits, by, reduction="sum").item()
            correct += (logits.argmax(1) == by).sum().item()
    model.train()
    return loss_sum / len(y), correct / len(y)


def _prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = x.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _improved(metric: str, value: float, best: float | None, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if metric == "val_loss" else value > best + min_delta


def train_image(spec: TrainSpec) -> dict:
    """Trains an image classifier as `spec` says and writes the model directory (artifact.py).

    Returns:
        model.json's content (written by rank 0 only; other ranks return it without writing).

    Raises:
        ConfigError: a setting this machine cannot honour (e.g. cuda without a GPU).
        DataError: the data cannot be trained on (the message names the file).
    """
    rank, world = _rank_world()
    device = resolve_device(spec.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    precision = resolve_precision(spec.precision, device)
    dtype = _DTYPES.get(precision)
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed % 2**32)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    train, validation = spec.read_data()
    if spec.batch_size % world:
        raise ConfigError(f"training.batch_size: {spec.batch_size} does not split evenly over {world} processes")

    # Normalisation constants from the training images only, per channel.
    pixels = train.images.reshape(-1, train.shape[2]).astype(np.float64) / 255.0
    mean, std = pixels.mean(0).tolist(), np.maximum(pixels.std(0), 1e-3).tolist()
    model = build_image_model(spec.architecture, train.shape, len(train.classes), spec.params, mean, std).to(device)
    channels_last = spec.channels_last and spec.architecture != "mlp"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    on_device = spec.loader == "tensor"
    # The dataloader path keeps the set on the CPU; its DataLoader pins each batch it hands over.
    x_train, y_train = _as_tensors(train, device if on_device else torch.device("cpu"))
    x_val, y_val = _as_tensors(validation, device if on_device else torch.device("cpu"))

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on biases and norms
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if spec.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=spec.learning_rate)
    elif spec.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=spec.learning_rate, momentum=0.9, nesterov=True)
    else:
        raise ConfigError(f"training.optimizer: {spec.optimizer!r}; use adamw or sgd")
    steps_per_epoch = len(y_train) // spec.batch_size
    if spec.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, spec.max_steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=spec.learning_rate, total_steps=max(1, steps_per_epoch * spec.epochs), pct_start=0.15)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    run_id = spec.fingerprint()
    checkpoint_uri = storage.join(spec.checkpoint_dir, run_id[:16], CHECKPOINT_FILE) if spec.checkpoint_dir else None
    history, best, best_state, bad_epochs, start_epoch, resumed_from = [], None, None, 0, 1, 0
    state = _load_checkpoint(checkpoint_uri, run_id) if checkpoint_uri else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        history, best, best_state, bad_epochs = state["history"], state["best"], state["best_state"], state["bad_epochs"]
        start_epoch = resumed_from = state["epoch"] + 1
        if rank == 0:
            print(f"keel: resuming from {checkpoint_uri} after epoch {state['epoch']}", flush=True)

    step_model = model
    if world > 1:
        step_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if spec.compile:
        step_model = torch.compile(step_model)

    stopping = spec.early_stopping or {}
    metric = stopping.get("metric", "val_loss")
    aug_generator = torch.Generator(device=device)  # both loaders hand over batches already on `device`
    seen, train_seconds = 0, 0.0
    stopped_early = bool(state and state.get("stopped"))
    epoch = start_epoch - 1
    for epoch in range(start_epoch, spec.epochs + 1):
        if stopped_early:
            break
        model.train()
        aug_generator.manual_seed(spec.seed * 7_919 + epoch * 104_729 + rank)
        loss_sum, batches = torch.zeros((), device=device), 0
        started = time.perf_counter()
        for bx, by in _epoch_batches(spec, x_train, y_train, epoch, device, rank, world):
            if spec.augment.get("flip") or spec.augment.get("crop_padding"):
                bx = augment(bx, spec.augment, aug_generator)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(step_model(_prepare(bx, channels_last)).float(), by)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach()
            batches += 1
            seen += len(by) * world
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        train_seconds += seconds
        train_loss = (loss_sum / max(batches, 1)).item()
        if world > 1:  # the mean over replicas, so every rank logs and stops on the same numbers
            t = torch.tensor([train_loss], device=device)
            torch.distributed.all_reduce(t)
            train_loss = t.item() / world
        val_loss, val_accuracy = _evaluate(model, x_val, y_val, 1024, device, dtype)
        record = {"epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
                  "val_accuracy": round(val_accuracy, 6), "seconds": round(seconds, 3),
                  "learning_rate": optimizer.param_groups[0]["lr"]}
        history.append(record)
        value = record[metric]
        if _improved(metric, value, best, float(stopping.get("min_delta", 0.0))):
            best, bad_epochs = value, 0
            if spec.early_stopping:
                best_state = (epoch, _state_on_cpu(model))
        else:
            bad_epochs += 1
        stopped_early = bool(spec.early_stopping) and bad_epochs >= int(stopping.get("patience", 3))
        if rank == 0:
            print("keel: epoch " + " ".join(f"{k}={v}" for k, v in record.items()), flush=True)
            if spec.on_epoch:
                spec.on_epoch(record)
        if rank == 0 and checkpoint_uri and (epoch % spec.checkpoint_every == 0 or epoch == spec.epochs or stopped_early):
            _save_checkpoint(checkpoint_uri, {
                "fingerprint": run_id, "epoch": epoch, "model": _state_on_cpu(model),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": torch.get_rng_state(), "history": history, "best": best, "best_state": best_state,
                "bad_epochs": bad_epochs, "stopped": stopped_early,
            })
        if world > 1:
            torch.distributed.barrier()  # no rank runs ahead of the checkpoint it may resume from

    best_epoch = history[-1]["epoch"] if history else 0
    if spec.early_stopping and best_state is not None:
        best_epoch = best_state[0]
        model.load_state_dict(best_state[1])
    info = artifact.trained_info(
        framework="torch", layout="NCHW", spec=spec, train=train, mean=mean, std=std, files=("weights", "torchscript"),
        serving_format="torchscript", history=history,
        training={
            "device": str(device.type), "precision": precision, "processes": world, "channels_last": channels_last,
            "compiled": spec.compile, "loader": spec.loader, "epochs_run": len(history), "best_epoch": best_epoch,
            "stopped_early": stopped_early, "resumed_from_epoch": resumed_from,
            "images_per_second": round(seen / train_seconds, 1) if train_seconds else None,
            "train_images": len(train), "validation_images": len(validation), "run_id": run_id,
            "checkpoint": checkpoint_uri,
        },
    )
    if rank == 0:
        export(model, spec.out_dir, info)
    return info


def export(model: nn.Module, out_dir: str | Path, info: dict) -> None:
    """weights.pt (state_dict) and model.pt (TorchScript, CPU, fp32, contiguous) and model.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format).float().eval()
    torch.save(model.state_dict(), out / artifact.FILE_NAMES["weights"])
    shape = info["input"]
    example = torch.zeros(2, shape["channels"], shape["height"], shape["width"])
    with torch.inference_mode(), warnings.catch_warnings():
        # torch 2.14 deprecates TorchScript; Keel exports it on purpose for torch-native consumers (components/README.md).
        warnings.filterwarnings("ignore", category=FutureWarning, message="`torch.jit")
        scripted = torch.jit.trace(model, example)
    scripted.save(str(out / artifact.FILE_NAMES["torchscript"]))
    artifact.write_info(out, info)
