"""make bench-train: does the training component's data path keep the model busy?

The same model, optimizer, precision and batch size are trained twice in this run:
1. the real path: Keel's trainer (`torch_train.train_image`) on real
   Fashion-MNIST images read from an image-set file, batched out of the
   in-memory uint8 tensor, augmented (flip + padded crop) on the device, with
   its per-epoch validation excluded from the figure, as the trainer reports it;
2. the ceiling: one synthetic batch already on the device in its final dtype
   and layout, stepped the same number of times: no indexing, no augmentation,
   no uint8 -> float conversion.
Figure: real images/s vs ceiling images/s. Target on CPU: >= 0.9 (data loading
is not the bottleneck); on a GPU (H100/H200) >= 0.8 of the bf16 ceiling.
The same comparison runs for `loader: dataloader` (pinned batches from worker
processes), the path for sets that cannot sit in memory.

Prints BENCH lines and exits 0 whether or not the targets are met.
Environment: BENCH_TRAIN_STEPS (default 30 per epoch, 2 epochs), BENCH_TRAIN_BATCH (256),
BENCH_TRAIN_REPEATS (3, interleaved; medians), BENCH_TRAIN_ARCH (cnn; resnet18 for a GPU).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from report import bench  # tests/bench is this script's directory

from keel.components._common import image_data
from keel.components._common.deep_model.models import build_image_model
from keel.components.train_deep.spec import TrainSpec
from keel.components.train_deep.torch_train import _DTYPES, resolve_device, resolve_precision, train_image

STEPS = int(os.environ.get("BENCH_TRAIN_STEPS", "30"))
REPEATS = int(os.environ.get("BENCH_TRAIN_REPEATS", "3"))
EPOCHS = 2
BATCH = int(os.environ.get("BENCH_TRAIN_BATCH", "256"))


def ceiling(images: image_data.ImageSet, architecture: str, device, precision: str, channels_last: bool, steps: int) -> float:
    """Images/s of the same training step on one fixed batch already on the device, in its final dtype and layout.

    The batch holds real images: CPU kernels run at data-dependent speeds (random
    pixels measured slower than digits here), so random noise would move the ceiling.
    """
    torch.manual_seed(0)
    shape, n_classes = images.shape, len(images.classes)
    model = build_image_model(architecture, shape, n_classes, {}, [0.5] * shape[2], [0.25] * shape[2]).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.from_numpy(images.images[:BATCH]).permute(0, 3, 1, 2).float().to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(images.labels[:BATCH]).to(device)
    dtype = _DTYPES.get(precision)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up: allocator, kernels
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - start)


def main() -> int:
    device = resolve_device("auto")
    precision = resolve_precision("auto", device)
    architecture = os.environ.get("BENCH_TRAIN_ARCH", "cnn")
    print(f"bench-train: {architecture} on {device.type} ({precision}), batch {BATCH}, {EPOCHS} x {STEPS} steps, "
          f"{torch.get_num_threads()} threads", flush=True)
    work = Path(tempfile.mkdtemp(prefix="keel-bench-train-"))
    sets = image_data.load_source("fashion-mnist")
    n = min(len(sets["train"]), BATCH * STEPS + 1000)
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(sets["train"]))[:n]
    image_data.write_npz(work / "train.npz", sets["train"].take(np.sort(pick[1000:])))
    image_data.write_npz(work / "val.npz", sets["train"].take(np.sort(pick[:1000])))
    sample = sets["train"].take(np.sort(pick[1000:1000 + BATCH]))

    target = ">=0.9" if device.type == "cpu" else ">=0.8"
    for loader in ("tensor", "dataloader"):
        # Interleaved repeats, medians: the real path and the ceiling see the same machine state.
        real, top = [], []
        for rep in range(REPEATS):
            spec = TrainSpec(str(work / "train.npz"), str(work / "val.npz"), str(work / f"model-{loader}-{rep}"),
                             architecture=architecture, epochs=EPOCHS, batch_size=BATCH,
                             augment={"flip": True, "crop_padding": 2}, loader=loader, max_steps_per_epoch=STEPS, workers=2)
            real.append(train_image(spec)["training"]["images_per_second"])
            top.append(ceiling(sample, architecture, device, precision, True, EPOCHS * STEPS))
        bench(f"train_{architecture}_{device.type}_{loader}_images_per_s", statistics.median(real), "img/s",
              f"synthetic_ceiling_{precision}", statistics.median(top), target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
