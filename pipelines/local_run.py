"""Runs a pipeline on this machine through kfp.local, then summarises it.

The pipeline function is the very one that compiles for a cluster; only the
runner differs. Steps run as subprocesses of this Python environment
(SubprocessRunner without a venv), so nothing is installed at run time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

from keel.components._common import storage
from keel.components._common.errors import KeelError
from keel.pipelines.config import TrainingConfig
from keel.pipelines.training import PIPELINE_NAME, training_pipeline

RUNNERS = ("local",)


class PipelineFailed(KeelError):
    """A step of the pipeline failed; its own error line is printed above."""


@dataclasses.dataclass
class StepResult:
    name: str
    status: str
    outputs: dict  # output name -> {"uri": ..., "metadata": {...}} or parameter value


@dataclasses.dataclass
class RunSummary:
    run_dir: Path
    steps: dict[str, StepResult]

    def artifact(self, step: str, output: str) -> dict | None:
        result = self.steps.get(step)
        return result.outputs.get(output) if result else None

    @property
    def passed(self) -> bool | None:
        value = self.artifact("evaluate-model", "Output")
        return None if value is None else bool(value)

    @property
    def metrics(self) -> dict:
        metrics = self.artifact("evaluate-model", "metrics")
        return dict(metrics["metadata"]) if metrics else {}

    @property
    def registered(self) -> dict | None:
        bundle = self.artifact("register-model", "bundle")
        return dict(bundle["metadata"]) if bundle else None


def pipeline_root_for(cfg: TrainingConfig) -> Path:
    """Step outputs go beside the registry when the store is local, else to ./runs."""
    store = cfg.registry.store
    base = Path("runs") if storage.is_s3(store) else Path(store)
    return (base / "pipeline_root").resolve()


def run_local(cfg: TrainingConfig, *, runner: str = "local", pipeline_root: str | Path | None = None) -> RunSummary:
    """Runs the training pipeline with kfp.local and returns what each step produced."""
    from kfp import local

    if runner not in RUNNERS:
        raise KeelError(f"--runner: {runner!r} is not available; choose one of {', '.join(RUNNERS)}")
    root = Path(pipeline_root or pipeline_root_for(cfg))
    root.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(root))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=False)
    with warnings.catch_warnings():
        # kfp warns that a non-"python" image name may not match this
        # interpreter; locally every step deliberately runs in this venv.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
        training_pipeline(**cfg.pipeline_arguments())
    new = sorted(d for d in set(os.listdir(root)) - before if d.startswith(PIPELINE_NAME))
    if not new:
        raise PipelineFailed(f"kfp.local wrote no run directory under {root}")
    summary = collect(root / new[-1])
    failed = [s.name for s in summary.steps.values() if s.status != "SUCCESS"]
    if failed:
        raise PipelineFailed(f"step {failed[0]!r} failed (its error is printed above); outputs so far: {summary.run_dir}")
    return summary


def collect(run_dir: Path) -> RunSummary:
    """Reads every step's executor_output.json in a kfp.local run directory."""
    steps: dict[str, StepResult] = {}
    for step_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        output_file = step_dir / "executor_output.json"
        if not output_file.exists():
            steps[step_dir.name] = StepResult(step_dir.name, "FAILURE", {})
            continue
        payload = json.loads(output_file.read_text())
        outputs: dict = dict(payload.get("parameterValues", {}))
        for name, group in payload.get("artifacts", {}).items():
            first = group["artifacts"][0]
            outputs[name] = {"uri": first.get("uri", ""), "metadata": first.get("metadata", {})}
        steps[step_dir.name] = StepResult(step_dir.name, "SUCCESS", outputs)
    return RunSummary(run_dir=run_dir, steps=steps)
