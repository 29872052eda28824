"""Running a TrainSpec: in this process, or as several data-parallel processes under torchrun.

Locally, `processes > 1` starts `torchrun --standalone` with the gloo backend
on CPU (nccl on GPUs): a real process group with gradient all-reduce, the
same worker module a PyTorchJob runs on a cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from keel.components._common.errors import DataError
from keel.components._common.deep_model import artifact
from keel.components.train_deep.spec import TrainSpec


def run(spec: TrainSpec) -> dict:
    """Trains as `spec` says and returns model.json's content."""
    if spec.framework == "torch" and spec.processes > 1:
        return _torchrun(spec)
    if spec.framework == "torch":
        from keel.components.train_deep.torch_train import train_image
    else:
        from keel.components.train_deep.tf_train import train_image
    return train_image(spec)


def _torchrun(spec: TrainSpec) -> dict:
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out.parent / f".{out.name}.spec.json"  # beside, not inside, the model directory it describes
    spec.write(spec_path)
    threads = spec.threads or max(1, (os.cpu_count() or 1) // spec.processes)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={spec.processes}",
               "-m", "keel.components.train_deep.worker", "--spec", str(spec_path)]
    # One thread pool per process sized to its share of the cores: torchrun's default
    # OMP_NUM_THREADS=1 would waste them, and the full count would oversubscribe.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        result = subprocess.run(command, env=env, stdout=None, stderr=subprocess.PIPE, text=True)
    finally:
        spec_path.unlink(missing_ok=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        keel_line = next((line for line in reversed(result.stderr.splitlines()) if "keel: error:" in line), "")
        raise DataError(keel_line.split("keel: error:", 1)[-1].strip() if keel_line else
                        f"torchrun with {spec.processes} processes failed (exit {result.returncode}):\n{tail}")
    if result.stderr:
        sys.stderr.write(result.stderr)
    return artifact.read_info(out)
