"""The training entry point every replica runs: `python -m keel.components.train_deep.worker --spec URI`.

Locally `torchrun` starts it once per process; on a cluster the training
operator starts it in every PyTorchJob pod. Either way torch.distributed's
env:// variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) say who it is,
and the spec (local path or s3:// URI) says what to train. On a cluster the
spec's out_dir is in the store: the model is trained into a local directory
and rank 0 uploads it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def upload(local: Path, target: str) -> None:
    """Copies the model directory to the store, model.json last: once it is there, every file it lists is too."""
    from keel.components._common import storage

    names = sorted((p.name for p in local.iterdir() if p.is_file()), key=lambda n: (n == "model.json", n))
    for name in names:
        storage.write_bytes(storage.join(target, name), (local / name).read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keel.components.train_deep.worker")
    parser.add_argument("--spec", required=True, help="TrainSpec JSON (path or s3:// URI)")
    args = parser.parse_args(argv)

    from keel.components._common import storage
    from keel.components._common.errors import user_errors
    from keel.components.train_deep.spec import TrainSpec

    with user_errors("train worker"):
        spec = TrainSpec.read(args.spec)
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
        target = spec.out_dir if storage.is_s3(spec.out_dir) else None
        if target:
            spec.out_dir = tempfile.mkdtemp(prefix="keel-model-")
        if world > 1:
            import torch.distributed as dist

            from keel.components.train_deep.torch_train import resolve_device

            backend = spec.backend if spec.backend != "auto" else ("nccl" if resolve_device(spec.device).type == "cuda" else "gloo")
            dist.init_process_group(backend=backend)
        try:
            if spec.framework == "torch":
                from keel.components.train_deep.torch_train import train_image
            else:
                from keel.components.train_deep.tf_train import train_image
            train_image(spec)
        finally:
            if world > 1:
                dist.destroy_process_group()
        if target and rank == 0:
            upload(Path(spec.out_dir), target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
