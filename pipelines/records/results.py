"""What a kfp.local run directory holds: each step's outputs, read from its executor_output.json.

The run's pipeline outputs are the first place to look for its verdict, metrics and reports; a
failed run has none, so `RunSummary` falls back to the step output each pipeline output comes from
(`sources`, read from the pipeline by keel.pipelines.descriptor.steps_of).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Callable


@dataclasses.dataclass
class StepResult:
    name: str
    status: str
    outputs: dict  # output name -> {"uri": ..., "metadata": {...}} or parameter value


@dataclasses.dataclass
class RunSummary:
    run_dir: Path
    steps: dict[str, StepResult]  # the steps that ran in this run (not those served from the cache)
    outputs: dict = dataclasses.field(default_factory=dict)  # the pipeline's outputs, cached or not
    cached: list[str] = dataclasses.field(default_factory=list)
    sources: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # pipeline output -> (step, output)

    def artifact(self, step: str, output: str) -> dict | None:
        result = self.steps.get(step)
        return result.outputs.get(output) if result else None

    def output(self, name: str):
        """A pipeline output, or (a failed run has none) the step output that produces it."""
        value = self.outputs.get(name)
        if value is None and name in self.sources:
            value = self.artifact(*self.sources[name])
        return value

    def step_output(self, name: str):
        """The first step output called `name` (e.g. a register step's "bundle", a deploy step's "manifest")."""
        return next((r.outputs[name] for r in self.steps.values() if name in r.outputs), None)

    @property
    def passed(self) -> bool | None:
        """Whether the model passed every gate before registration (metrics, and fairness where the pipeline has it)."""
        metrics, fair = self.metrics_passed, self.fairness_passed
        return None if metrics is None else metrics and fair is not False

    @property
    def metrics_passed(self) -> bool | None:
        value = self.output("passed")
        return None if value is None else bool(value)

    @property
    def fairness_passed(self) -> bool | None:
        value = self.output("fairness_passed")
        return None if value is None else bool(value)

    @property
    def metrics(self) -> dict:
        metrics = self.output("metrics")
        return dict(metrics["metadata"]) if metrics else {}

    @property
    def registered(self) -> dict | None:
        bundle = self.step_output("bundle")
        return dict(bundle["metadata"]) if bundle else None

    @property
    def deployment(self) -> dict | None:
        """The deploy step's manifest output: uri plus name, namespace, action, reason."""
        manifest = self.step_output("manifest")
        return {"uri": manifest["uri"], **manifest["metadata"]} if manifest else None


def plain(value):
    """A pipeline output as collect() records step outputs: artifacts become {"uri", "metadata"}."""
    if hasattr(value, "uri") and hasattr(value, "metadata"):
        return {"uri": value.uri, "metadata": dict(value.metadata)}
    return value


def executor_outputs(step_dir: Path) -> dict | None:
    """A step's outputs from its executor_output.json (None: the step wrote none, it failed or never ended)."""
    output_file = step_dir / "executor_output.json"
    if not output_file.is_file():
        return None
    payload = json.loads(output_file.read_text())
    outputs: dict = dict(payload.get("parameterValues", {}))
    for output, group in payload.get("artifacts", {}).items():
        first = group["artifacts"][0]
        outputs[output] = {"uri": first.get("uri", ""), "metadata": first.get("metadata", {})}
    return outputs


def collect(run_dir: Path, order: Callable[[str], int] = lambda name: 0) -> RunSummary:
    """Reads every step's executor_output.json in a kfp.local run directory; `order` sorts the steps."""
    steps: dict[str, StepResult] = {}
    for step_dir in _step_dirs(run_dir, order):
        name = step_dir.relative_to(run_dir).as_posix()
        outputs = executor_outputs(step_dir)
        steps[name] = StepResult(name, "FAILURE", {}) if outputs is None else StepResult(name, "SUCCESS", outputs)
    return RunSummary(run_dir=run_dir, steps=steps)


def _step_dirs(run_dir: Path, order: Callable[[str], int]) -> list[Path]:
    """Every step's directory; a ParallelFor's iterations (`for-loop-1-iteration-0/`) hold theirs one level down."""
    found = []

    def by_order(paths):  # iteration-10 after iteration-9
        return sorted(paths, key=lambda p: (order(p.name), [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]))

    for path in by_order(p for p in run_dir.iterdir() if p.is_dir()):
        if path.name.startswith("for-loop-") and not (path / "executor_output.json").exists():
            found += by_order(p for p in path.iterdir() if p.is_dir())
        else:
            found.append(path)
    return found
