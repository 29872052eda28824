"""Run records: what a local run did, kept as run.json in its run directory.

A local run leaves a directory per step under `<pipeline_root>/<pipeline>-<timestamp>/`
(kfp.local's layout). `keel run` adds run.json: the config and arguments, the
wall-clock timing and status of every step in pipeline order (steps served
from kfp.local's cache included, with the outputs they reused), the gate
verdict and the registered version. `keel runs` lists these records and
`keel report` renders one; a run directory from before run.json existed is
rebuilt from its executor outputs and log (statuses, no durations).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path

from keel.components._common.errors import KeelError
from keel.pipelines.records.results import RunSummary, collect, executor_outputs

RUN_FILE = "run.json"
LOG_FILE = "keel-run.log"
RECORD_VERSION = 1
STATUSES = ("succeeded", "failed", "cached", "skipped")
_TIMESTAMP = re.compile(r"-(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{6})$")  # kfp.local's run directory suffix
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_CACHED = re.compile(r"Task '?([\w-]+?)'? cache hit")
_LOG_SKIPPED = re.compile(r"Skipping conditional task '?([\w-]+?)'? \(")


@dataclasses.dataclass
class StepRecord:
    """One step of a run.

    Attributes:
        name: the kfp task name (a ParallelFor iteration's is `<iteration>/<task>`).
        status: succeeded, failed, cached or skipped.
        started_at: ISO-8601 UTC wall-clock start, when known.
        seconds: how long it ran, when known.
        outputs: output name -> {"uri", "metadata"} for an artifact, or the parameter value.
        note: why a step was skipped or cached.
        cached_from: for a cached step, the run whose outputs were reused (when found).
    """

    name: str
    status: str
    started_at: str | None = None
    seconds: float | None = None
    outputs: dict = dataclasses.field(default_factory=dict)
    note: str = ""
    cached_from: str | None = None


@dataclasses.dataclass
class RunRecord:
    """A local run, from its run.json (`recorded`) or rebuilt from its step directories."""

    run_id: str
    run_dir: Path
    pipeline: str
    config_name: str | None
    arguments: dict
    started_at: str | None
    finished_at: str | None
    seconds: float | None
    steps: list[StepRecord]
    passed: bool | None
    registered: dict | None
    code_version: str
    created_by: str
    outputs: dict = dataclasses.field(default_factory=dict)
    recorded: bool = True

    @property
    def outcome(self) -> str:
        """passed or failed gate (a pipeline with a gate), succeeded (one without, e.g. a backfill), step failed, or unknown."""
        if any(s.status == "failed" for s in self.steps):
            return "step failed"
        if self.passed is None:
            finished = self.steps and all(s.status in ("succeeded", "cached") for s in self.steps)
            return "succeeded" if finished else "unknown"
        return "passed" if self.passed else "failed gate"

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.name == name), None)

    def count(self, status: str) -> int:
        return sum(1 for s in self.steps if s.status == status)

    def artifacts(self) -> list[tuple[str, str, dict]]:
        """Every output artifact of the run, cached steps' included: (step, output, {"uri", "metadata"})."""
        return [(s.name, output, value) for s in self.steps for output, value in s.outputs.items() if _is_artifact(value)]

    @property
    def metrics(self) -> dict:
        """The evaluation metrics artifact's metadata ({} when the run has none)."""
        metrics = self.outputs.get("metrics")
        for step in ("evaluate-model", "evaluate-image-model"):
            record = self.step(step)
            if not _is_artifact(metrics) and record is not None:
                metrics = record.outputs.get("metrics")
        return dict(metrics["metadata"]) if _is_artifact(metrics) else {}

    def to_json(self) -> dict:
        payload = dataclasses.asdict(self)
        payload["run_dir"] = str(self.run_dir)
        payload.pop("recorded")
        return {"record_version": RECORD_VERSION, **payload}

    @classmethod
    def from_json(cls, payload: dict, run_dir: Path) -> RunRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in payload.items() if k in fields}
        values["steps"] = [StepRecord(**{k: v for k, v in s.items() if k in {f.name for f in dataclasses.fields(StepRecord)}})
                           for s in payload.get("steps", [])]
        values["run_dir"] = run_dir  # where it is now: a copied run directory still reads
        return cls(**{**values, "recorded": True})


def runs_root(store: str) -> Path:
    """The pipeline root of a registry store: local runs keep their steps beside a local store, else in ./runs.

    The same rule as keel.pipelines.local.runner.pipeline_root_for, from the store alone.
    """
    from keel.components._common import storage

    base = Path("runs") if storage.is_s3(store) else Path(store)
    return (base / "pipeline_root").resolve()


def write_record(run_dir: str | Path, cfg, summary, timings: dict | None = None, steps=None) -> Path:
    """Writes run.json into a finished (or failed) local run's directory, atomically.

    Args:
        run_dir: the run directory.
        cfg: the run's config (any registered pipeline's).
        summary: the RunSummary of keel.pipelines.local.runner.
        timings: ProgressLog.timings(): {"started_at", "finished_at" (epoch seconds), "steps": {task:
            {"started_at", "finished_at", "status"}}}; None when no progress was recorded.
        steps: the pipeline's Steps (keel.pipelines.descriptor); None: read from the config's pipeline.

    Returns:
        The path of run.json.
    """
    from keel.components._common import lineage, storage
    from keel.components._common.uris import redact_all
    from keel.pipelines import registry

    run_dir = Path(run_dir)
    steps_of_run = steps or registry.for_config(cfg).steps(cfg)
    timings = timings or {}
    times = timings.get("steps") or {}
    summary.sources = summary.sources or steps_of_run.sources  # a summary collect() read on its own
    gated = set(steps_of_run.gated) if summary.passed is False else set()
    failed_somewhere = any(s.status != "SUCCESS" for s in summary.steps.values())
    steps: list[StepRecord] = []
    seen: set[str] = set()
    for name in steps_of_run.names:
        ran = [key for key in summary.steps if key == name or key.endswith("/" + name)]
        for key in ran:
            result = summary.steps[key]
            status = "succeeded" if result.status == "SUCCESS" else "failed"
            steps.append(StepRecord(key, status, *_timing(times.get(key)), outputs=_plain(result.outputs)))
            seen.add(key)
        if ran:
            continue
        logged = (times.get(name) or {}).get("status")
        # Trust what kfp.local logged when there is a log: RunSummary.cached is every step that made no
        # directory, which also counts a step this pipeline does not have.
        if logged == "cached" or (not times and name in summary.cached):
            outputs, source = _cached_outputs(run_dir, name, summary)
            steps.append(StepRecord(name, "cached", _iso((times.get(name) or {}).get("started_at")), None, outputs,
                                    note="unchanged code and inputs", cached_from=source))
        else:
            note = ("a gate did not pass" if name in gated or logged == "skipped"
                    else "an earlier step failed" if failed_somewhere else "did not run")
            steps.append(StepRecord(name, "skipped", note=note))
        seen.add(name)
    for key, result in summary.steps.items():  # a step the pipeline's step list does not name yet
        if key not in seen:
            steps.append(StepRecord(key, "succeeded" if result.status == "SUCCESS" else "failed",
                                    *_timing(times.get(key)), outputs=_plain(result.outputs)))
    started, finished = timings.get("started_at"), timings.get("finished_at")
    registered = summary.registered
    record = RunRecord(
        run_id=run_dir.name,
        run_dir=run_dir,
        pipeline=cfg.pipeline_name,
        config_name=cfg.name,
        arguments=redact_all(cfg.pipeline_arguments()),
        started_at=_iso(started) or _iso_from_name(run_dir.name),
        finished_at=_iso(finished),
        seconds=round(finished - started, 3) if started and finished else None,
        steps=steps,
        passed=summary.passed,
        registered=_registered(registered),
        code_version=lineage.code_version(),
        created_by=lineage.actor(),
        outputs=_plain(summary.outputs),
    )
    path = run_dir / RUN_FILE
    storage.atomic_write_local(path, (json.dumps(record.to_json(), indent=1, sort_keys=True, default=str) + "\n").encode())
    return path


def load_record(run_dir: str | Path) -> RunRecord:
    """A run's record: its run.json, or (an older run) rebuilt from its step directories and log."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if path.is_file():
        try:
            return RunRecord.from_json(json.loads(path.read_text()), run_dir)
        except (json.JSONDecodeError, TypeError) as err:
            raise KeelError(f"{path}: is not a valid run record ({err}); delete it to list the run from its step outputs") from None
    return _rebuild(run_dir)


def is_run_dir(path: Path) -> bool:
    """A directory kfp.local or Keel made for one run (not the cache, not a stray folder)."""
    if not path.is_dir() or path.name.startswith("."):
        return False
    if (path / RUN_FILE).is_file() or (path / LOG_FILE).is_file():
        return True
    return any((child / "executor_output.json").is_file() for child in path.iterdir() if child.is_dir())


def list_runs(root: str | Path) -> list[RunRecord]:
    """Every run under a pipeline root, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    records = [load_record(path) for path in root.iterdir() if is_run_dir(path)]
    return sorted(records, key=lambda r: (r.started_at or "", r.run_id), reverse=True)


def load_run(root: str | Path, ref: str) -> RunRecord:
    """The run RUN names: `latest` (newest under root), a run directory name under root, or a path.

    Raises:
        KeelError: no such run (the message lists the newest ones).
    """
    root = Path(root)
    text = str(ref or "").strip()
    if not text:
        raise KeelError("RUN: is empty; give latest, a run id (`keel runs` lists them) or a run directory")
    if text == "latest":
        records = list_runs(root)
        if not records:
            raise KeelError(f"{root}: holds no local run; run `keel run` first, or point --store/--config at the store it used")
        return records[0]
    for candidate in (Path(text), root / text):
        if is_run_dir(candidate):
            return load_record(candidate)
    known = ", ".join(r.run_id for r in list_runs(root)[:5]) or "none"
    raise KeelError(f"RUN {text!r}: no run directory of that name under {root} and no such path (newest: {known}); "
                    "`keel runs` lists them")


# -- helpers -------------------------------------------------------------------


def _is_artifact(value) -> bool:
    return isinstance(value, dict) and "uri" in value and "metadata" in value


def _plain(outputs: dict) -> dict:
    """Outputs as JSON keeps them: artifacts as {"uri", "metadata"}, parameters as values."""
    return json.loads(json.dumps(outputs or {}, default=str))


def _iso(epoch: float | None) -> str | None:
    if not epoch:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds")


def _iso_from_name(name: str) -> str | None:
    """A run directory's start, from kfp.local's local-time name suffix."""
    match = _TIMESTAMP.search(name)
    if not match:
        return None
    local = dt.datetime.strptime(match.group(1), "%Y-%m-%d-%H-%M-%S-%f").astimezone()
    return local.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


def _timing(entry: dict | None) -> tuple[str | None, float | None]:
    if not entry or not entry.get("started_at"):
        return None, None
    finished = entry.get("finished_at")
    seconds = round(finished - entry["started_at"], 3) if finished else None
    return _iso(entry["started_at"]), seconds


def _registered(bundle_meta: dict | None) -> dict | None:
    if not bundle_meta:
        return None
    keys = ("model_name", "version", "registry_uri", "bundle_hash", "content_hash")
    return {k: bundle_meta.get(k) for k in keys if bundle_meta.get(k) is not None}


def _cached_outputs(run_dir: Path, step: str, summary) -> tuple[dict, str | None]:
    """A cached step's outputs, read from the earlier run whose artifacts kfp.local reused.

    kfp.local's cache hands later steps the original artifact URIs, so the
    lineage parents of this run's artifacts, the pipeline outputs and the
    registered bundle's lineage all point into that run's step directory.
    """
    for uri in _known_uris(run_dir, summary):
        path = Path(uri)
        if path.parent.name == step and (path.parent / "executor_output.json").is_file():
            outputs = executor_outputs(path.parent)
            if outputs is not None:
                return outputs, path.parent.parent.name
    return {}, None


def _known_uris(run_dir: Path, summary) -> list[str]:
    uris: list[str] = []
    values = list(summary.outputs.values()) + [v for s in summary.steps.values() for v in s.outputs.values()]
    for value in values:
        if _is_artifact(value):
            uris.append(value["uri"])
            uris += [p.get("uri", "") for p in value["metadata"].get("parents") or [] if isinstance(p, dict)]
    for bundle_lineage in run_dir.glob("*/bundle/lineage.json"):  # a register step's bundle
        uris += [a.get("uri", "") for a in json.loads(bundle_lineage.read_text()).get("artifacts", {}).values()]
    return [u for u in dict.fromkeys(uris) if u and "://" not in u]


def _pipeline_of(run_dir: Path) -> str:
    return _TIMESTAMP.sub("", run_dir.name).removeprefix("keel-")  # the kfp pipeline name -> its config's pipeline_name


def run_steps(run_dir: str | Path):
    """The Steps of the pipeline a run directory belongs to (by its name), built from that pipeline's example config."""
    from keel.pipelines import registry
    from keel.pipelines.config import load_config
    from keel.pipelines.descriptor import Steps

    pipeline = _pipeline_of(Path(run_dir))
    descriptor = registry.for_compiled_name(pipeline)
    if descriptor is None:
        return Steps(pipeline, ())
    variants = dict(descriptor.compiled_variants(load_config(descriptor.example)))
    return descriptor.steps(variants[pipeline]) if pipeline in variants else Steps(pipeline, ())


def read_summary(run_dir: str | Path) -> RunSummary:
    """A run directory's step outputs, in its pipeline's order, with the pipeline's output sources."""
    steps = run_steps(run_dir)
    summary = collect(Path(run_dir), steps.order)
    summary.sources = steps.sources
    return summary


def _rebuild(run_dir: Path) -> RunRecord:
    """The record of a run that has no run.json: statuses from executor outputs and the log, no durations."""
    pipeline = _pipeline_of(run_dir)
    pipeline_steps = run_steps(run_dir)
    summary = read_summary(run_dir)
    log = _ANSI.sub("", run_dir.joinpath(LOG_FILE).read_text(errors="replace")) if (run_dir / LOG_FILE).is_file() else ""
    cached = _LOG_CACHED.findall(log)
    skipped: list[str] = []
    for name in _LOG_SKIPPED.findall(log):  # kfp names the dsl.If group: the gated steps were skipped together
        skipped += list(pipeline_steps.gated) if name.startswith("condition") else [name]
    steps = [StepRecord(key, "succeeded" if result.status == "SUCCESS" else "failed", outputs=_plain(result.outputs))
             for key, result in summary.steps.items()]
    for name in dict.fromkeys(cached):
        outputs, source = _cached_outputs(run_dir, name, summary)
        steps.append(StepRecord(name, "cached", outputs=outputs, note="unchanged code and inputs", cached_from=source))
    steps += [StepRecord(name, "skipped", note="a gate did not pass") for name in dict.fromkeys(skipped)
              if not any(s.name == name for s in steps)]
    steps.sort(key=lambda s: pipeline_steps.order(s.name))
    artifacts = [v["metadata"] for s in steps for v in s.outputs.values() if _is_artifact(v)]
    passed, bundle = summary.passed, summary.step_output("bundle")
    return RunRecord(
        run_id=run_dir.name,
        run_dir=run_dir,
        pipeline=pipeline,
        config_name=None,
        arguments={},
        started_at=_iso_from_name(run_dir.name),
        finished_at=None,
        seconds=None,
        steps=steps,
        passed=passed,
        registered=_registered(bundle["metadata"]) if _is_artifact(bundle) else None,
        code_version=next((m["code_version"] for m in artifacts if m.get("code_version")), ""),
        created_by=next((m["created_by"] for m in artifacts if m.get("created_by")), ""),
        recorded=False,
    )
