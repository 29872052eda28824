"""Runs a pipeline on this machine through kfp.local, then summarises it.

The pipeline function is the very one that compiles for a cluster; only the
runner differs. With the `local` runner steps run as subprocesses of this
Python environment (SubprocessRunner without a venv), so nothing is
installed at run time; with `docker` each step runs in its real image
(keel.pipelines.docker_runner).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib
import io
import json
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

from keel.components._common import storage
from keel.components._common.errors import KeelError
from keel.pipelines.config import TrainingConfig
from keel.pipelines.training import PIPELINE_NAME

RUNNERS = ("local", "docker")
# kfp task names, in pipeline order (for progress and summaries).
STEPS = ("ingest-data", "profile-data", "validate-data", "clean-data", "split-data", "engineer-features",
         "train-model", "evaluate-model", "assess-fairness", "explain-model", "write-model-card", "register-model",
         "deploy-model")
# The steps inside the gates' dsl.If (metrics, then fairness): skipped together when either fails.
GATED_STEPS = ("register-model", "deploy-model")
TUNE_STEP = "tune-hyperparameters"
ALL_STEPS = STEPS[:6] + (TUNE_STEP,) + STEPS[6:]  # every step name, in pipeline order
# The vision pipeline (keel.pipelines.vision): its steps, and the one its gate guards.
VISION_STEPS = ("ingest-images", "train-image-model", "compress-model", "evaluate-image-model", "register-image-model",
                "deploy-model")
VISION_GATED_STEPS = ("register-image-model", "deploy-model")


def steps_for(cfg: TrainingConfig) -> tuple[str, ...]:
    """The steps a config runs: the tuned pipeline adds the search after the features step."""
    if cfg.pipeline_name == "vision":
        return VISION_STEPS
    if cfg.pipeline_name == "backfill":
        from keel.pipelines.backfill_run import PARTITION_STEPS

        return ("plan-partitions", *PARTITION_STEPS)
    return ALL_STEPS if cfg.tune is not None else STEPS


def _gated(cfg) -> tuple[str, ...]:
    return {"vision": VISION_GATED_STEPS, "backfill": ()}.get(cfg.pipeline_name, GATED_STEPS)


def _step_order(path: Path) -> int:
    order = ALL_STEPS + VISION_STEPS
    return order.index(path.name) if path.name in order else len(order)


class PipelineFailed(KeelError):
    """A step of the pipeline failed; its own error line is printed above."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([\w-]+)'")
_FINISHED = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
_CACHED = re.compile(r"Task '?([\w-]+?)'? cache hit")
_SKIPPED = re.compile(r"Skipping conditional task '?([\w-]+?)'? \(")


class ProgressLog(io.TextIOBase):
    """Stands in for stdout while kfp.local runs.

    kfp.local prints every step's full executor input and streamed logs
    (thousands of lines). All of it goes to the run's log file; the terminal
    gets one line per step and any `keel: error:` line a step printed.
    """

    def __init__(self, log_path: Path, terminal, total_steps: int, gated: tuple[str, ...] = GATED_STEPS):
        self.gated = gated
        self.log = open(log_path, "w", encoding="utf-8")
        self.terminal = terminal
        self.total = total_steps
        self.done = 0
        self.partial = ""
        self.started: dict[str, float] = {}
        self.step_errors: list[str] = []
        # Wall-clock times and status per step, for the run record (keel.pipelines.runs).
        self.opened_at = time.time()
        self.closed_at: float | None = None
        self.steps: dict[str, dict] = {}

    def write(self, text: str) -> int:
        self.log.write(text)
        self.partial += text
        *lines, self.partial = self.partial.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def _say(self, message: str) -> None:
        self.terminal.write(message + "\n")
        self.terminal.flush()

    def _line(self, line: str) -> None:
        if match := _STARTED.search(line):
            self.started[match[1]] = time.perf_counter()
            self.steps[match[1]] = {"started_at": time.time(), "status": "running"}
        elif match := _FINISHED.search(line):
            self.steps.setdefault(match[1], {}).update(
                finished_at=time.time(), status="succeeded" if match[2].upper() == "SUCCESS" else "failed")
            self.done += 1
            seconds = time.perf_counter() - self.started.get(match[1], time.perf_counter())
            self._say(f"  [{self.done:>2}/{self.total}] {match[1]:<20} {match[2].lower():<8} {seconds:5.1f} s")
        elif match := _CACHED.search(line):
            self.steps[match[1]] = {"started_at": time.time(), "status": "cached"}
            self.done += 1
            self._say(f"  [{self.done:>2}/{self.total}] {match[1]:<20} cached     (unchanged code and inputs)")
        elif match := _SKIPPED.search(line):
            # kfp names the dsl.If group; the training pipeline's one condition guards registration and deploy.
            names = self.gated if match[1].startswith("condition") else (match[1],)
            for name in names:
                self.steps[name] = {"status": "skipped"}
                self.done += 1
                self._say(f"  [{self.done:>2}/{self.total}] {name:<20} skipped    (a gate did not pass)")
        elif "keel: error:" in line:
            message = line[line.index("keel: error:"):].strip()
            self.step_errors.append(message)
            self._say("  " + message)

    def flush(self) -> None:
        self.log.flush()

    def close(self) -> None:
        self.closed_at = self.closed_at or time.time()
        self.log.close()

    def timings(self) -> dict:
        """When the run started and ended and each step's start, end and status (epoch seconds), for run.json."""
        return {"started_at": self.opened_at, "finished_at": self.closed_at or time.time(), "steps": self.steps}


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

    def artifact(self, step: str, output: str) -> dict | None:
        result = self.steps.get(step)
        return result.outputs.get(output) if result else None

    @property
    def passed(self) -> bool | None:
        """Whether the model passed every gate before registration (metrics, and fairness where the pipeline has it)."""
        metrics, fair = self.metrics_passed, self.fairness_passed
        return None if metrics is None else metrics and fair is not False

    @property
    def metrics_passed(self) -> bool | None:
        value = self.outputs.get("passed")
        for step in ("evaluate-model", "evaluate-image-model"):
            value = self.artifact(step, "Output") if value is None else value
        return None if value is None else bool(value)

    @property
    def fairness_passed(self) -> bool | None:
        value = self.outputs.get("fairness_passed")
        value = self.artifact("assess-fairness", "Output") if value is None else value
        return None if value is None else bool(value)

    @property
    def metrics(self) -> dict:
        metrics = self.outputs.get("metrics") or self.artifact("evaluate-model", "metrics") or self.artifact("evaluate-image-model", "metrics")
        return dict(metrics["metadata"]) if metrics else {}

    @property
    def registered(self) -> dict | None:
        bundle = self.artifact("register-model", "bundle") or self.artifact("register-image-model", "bundle")
        return dict(bundle["metadata"]) if bundle else None

    @property
    def deployment(self) -> dict | None:
        """The deploy step's manifest output: uri plus name, namespace, action, reason."""
        manifest = self.artifact("deploy-model", "manifest")
        return {"uri": manifest["uri"], **manifest["metadata"]} if manifest else None


def pipeline_root_for(cfg: TrainingConfig) -> Path:
    """Step outputs go beside the registry when the store is local, else to ./runs."""
    store = cfg.registry.store
    base = Path("runs") if storage.is_s3(store) else Path(store)
    return (base / "pipeline_root").resolve()


def source_hash() -> str:
    """sha256 of the components' code and templates: part of every local cache key.

    Only keel.components: that is all a step imports, and a change to the
    pipeline itself already changes the commands kfp.local keys on.
    """
    digest = hashlib.sha256()
    for package in ("keel.components",):
        base = Path(importlib.import_module(package).__file__).parent
        for path in sorted(base.rglob("*")):
            if path.suffix in (".py", ".j2", ".yaml") and "tests" not in path.relative_to(base).parts:
                digest.update(path.relative_to(base).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ingest_cache_key(cfg: TrainingConfig, data_hash: str, code: str) -> str:
    """Ingest is served from the cache only for the same source content, sections and code."""
    args = cfg.pipeline_arguments()
    material = json.dumps({"data": args["data"], "target": args["target"], "content": data_hash, "code": code}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def vision_ingest_cache_key(cfg, code: str) -> str:
    """Image ingest is served from the cache only for the same source files, data section and code."""
    from keel.components._common.image_data import source_files
    from keel.components._common.lineage import file_sha256

    content = [file_sha256(p) if p.is_file() else f"missing:{p}" for p in source_files(cfg.data.source)]
    material = json.dumps({"data": cfg.pipeline_arguments()["data"], "content": content, "code": code}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def warm_start_enabled() -> bool:
    return os.environ.get("KEEL_WARM_START", "1").lower() not in ("0", "false", "no", "off")


def run_local(
    cfg: TrainingConfig,
    *,
    runner: str = "local",
    pipeline_root: str | Path | None = None,
    verbose: bool = False,
    warm_start: bool | None = None,
    step_server=None,
    cache: bool = True,
    data_hash: str | None = None,
) -> RunSummary:
    """Runs the training pipeline with kfp.local and returns what each step produced.

    Progress goes to stdout one line per step; kfp.local's full output goes
    to `<run_dir>/keel-run.log` (or to stdout too when `verbose`). With warm
    start (the default; see keel.pipelines.warm_start) steps are forked from
    a pre-imported process instead of importing their libraries from cold.
    `step_server` is an already started StepServer (the CLI starts it before
    its pre-flight so both overlap); it is stopped here.

    With `cache`, kfp.local's cache (under `<pipeline_root>/.kfp_cache`)
    serves every step whose code and inputs are unchanged, so running the same
    command again after a crash resumes after the last finished step. Ingest
    joins the cache only when `data_hash` (the content hash of the data, as
    pre-flight read it) is given; register always runs.
    """
    from keel.pipelines.warm_start import StepServer

    warm_start = warm_start_enabled() if warm_start is None else warm_start
    warm_start = warm_start and runner == "local"  # containers start from their image, not from a fork
    if step_server is None and warm_start:
        step_server = StepServer().start()
    try:
        return _run(cfg, runner=runner, pipeline_root=pipeline_root, verbose=verbose, step_server=step_server,
                    cache=cache, data_hash=data_hash)
    finally:
        if step_server is not None:
            step_server.stop()


def run_checked(cfg: TrainingConfig, *, runner: str = "local", verbose: bool = False, warm_start: bool | None = None,
                cache: bool = True, on_checked=None) -> RunSummary:
    """What `keel run` does: pre-flight checks, then the local run.

    The warm-start server starts first so that it imports the ML stack while
    pre-flight reads the data; `on_checked(frame)` is called between the two.
    """
    from keel.components._common.tables import content_hash
    from keel.pipelines.preflight import preflight_pinned
    from keel.pipelines.warm_start import StepServer

    if runner == "docker":  # no container API: say so before reading the data
        from keel.pipelines.docker_runner import connect

        connect().close()
    if cfg.pipeline_name == "vision":
        from keel.pipelines.vision_run import preflight_vision

        if runner != "local":
            raise KeelError("--runner docker: the vision pipeline runs locally with --runner local only "
                            "(its steps need keel-torch, which `make images` builds but the docker runner does not stage yet)")
        preflight_vision(cfg)
        if on_checked:
            on_checked(None)
        # Steps import torch in a few seconds; the warm-start server's fork model is built for the tabular stack.
        return run_local(cfg, runner=runner, verbose=verbose, warm_start=False, cache=cache)
    if cfg.pipeline_name == "backfill":
        from keel.pipelines.backfill_run import preflight_backfill

        if runner != "local":
            raise KeelError("--runner docker: the backfill pipeline runs with --runner local")
        cfg.partitions = preflight_backfill(cfg)
        if on_checked:
            on_checked(cfg.partitions)
        # Partitions are independent steps of a few seconds each; forks of the training stack buy little here.
        return run_local(cfg, runner=runner, verbose=verbose, warm_start=False, cache=cache)
    warm_start = (warm_start_enabled() if warm_start is None else warm_start) and runner == "local"
    server = StepServer().start() if warm_start else None
    try:
        frame, cfg = preflight_pinned(cfg)
        if on_checked:
            on_checked(frame)
    except BaseException:
        if server:
            server.stop()
        raise
    return run_local(cfg, runner=runner, verbose=verbose, warm_start=warm_start, step_server=server,
                     cache=cache, data_hash=content_hash(frame) if cache else None)


def _run(cfg: TrainingConfig, *, runner, pipeline_root, verbose, step_server, cache, data_hash) -> RunSummary:
    from kfp import local

    from keel.pipelines.training import build_training_pipeline

    if runner not in RUNNERS:
        raise KeelError(f"--runner: {runner!r} is not available; choose one of {', '.join(RUNNERS)}")
    step_env = {"KEEL_SOURCE_HASH": source_hash()}
    resources = contextlib.ExitStack()  # for the docker runner: its API client, umask and log timeout
    if runner == "docker":
        cfg, root, kfp_runner = _docker_setup(cfg, pipeline_root, step_env, resources)
    else:
        root = Path(pipeline_root or pipeline_root_for(cfg))
        kfp_runner = local.SubprocessRunner(use_venv=False)
    root.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(root))
    local.init(runner=kfp_runner, pipeline_root=str(root), raise_on_error=False,
               enable_caching=cache, cache_root=str(root / ".kfp_cache"))
    if cfg.pipeline_name == "vision":
        from keel.pipelines.vision import VISION_PIPELINE_NAME, build_vision_pipeline

        # Resources and node pools are a cluster's business; locally the step uses what this machine has.
        key = vision_ingest_cache_key(cfg, step_env["KEEL_SOURCE_HASH"]) if cache else None
        pipeline = build_vision_pipeline(None, cfg.model.framework, step_env=step_env, ingest_cache_key=key)
        name = VISION_PIPELINE_NAME
    elif cfg.pipeline_name == "backfill":
        from keel.pipelines.backfill import BACKFILL_PIPELINE_NAME, build_backfill_pipeline

        pipeline, name = build_backfill_pipeline(cfg.backfill.parallelism, step_env=step_env), BACKFILL_PIPELINE_NAME
    else:
        pipeline = build_training_pipeline(
            tune=cfg.tune is not None,
            ingest_cache_key=ingest_cache_key(cfg, data_hash, step_env["KEEL_SOURCE_HASH"]) if cache and data_hash else None,
            step_env=step_env,
        )
        name = PIPELINE_NAME
    log_path = root / f".keel-run-{os.getpid()}.log"
    total = len(steps_for(cfg))
    if cfg.pipeline_name == "backfill":
        from keel.pipelines.backfill_run import step_count

        total = step_count(len(cfg.partitions))
    progress = ProgressLog(log_path, sys.stdout, total_steps=total, gated=_gated(cfg))
    with resources, _kfp_output_to(progress, verbose) as stack:
        if runner == "local":
            stack.enter_context(_subprocess_runs_keel_steps())
        if step_server is not None:
            if step_server.wait_ready():
                stack.enter_context(step_server.serving())
            else:
                print("keel: warm start unavailable; steps import their libraries from cold", file=sys.stderr)
        task = pipeline(**cfg.pipeline_arguments())
    new = sorted(d for d in set(os.listdir(root)) - before if d.startswith(name))
    # Every step served from the cache: kfp.local made no directory, Keel makes one for the log.
    run_dir = root / new[-1] if new else root / f"{name}-{dt.datetime.now():%Y-%m-%d-%H-%M-%S-%f}"
    run_dir.mkdir(exist_ok=True)
    log_path.replace(run_dir / "keel-run.log")
    summary = collect(run_dir)
    summary.outputs = {name: _plain(value) for name, value in (task.outputs or {}).items()}
    skipped = set(_gated(cfg)) if summary.passed is False else set()
    if summary.outputs:  # a finished run: steps with no directory here came from the cache
        ran = {name.rsplit("/", 1)[-1] for name in summary.steps}  # a ParallelFor step is "<iteration>/<step>"
        summary.cached = [s for s in steps_for(cfg) if s not in ran and s not in skipped]
    from keel.pipelines.runs import write_record

    write_record(run_dir, cfg, summary, progress.timings())  # also for a failed run: `keel report` shows where it stopped
    failed = [s.name for s in summary.steps.values() if s.status != "SUCCESS"]
    if failed:
        cause = progress.step_errors[-1] if progress.step_errors else "see the log"
        raise PipelineFailed(f"step {failed[0]!r} failed: {cause.removeprefix('keel: error: ')} (full log: {run_dir / 'keel-run.log'})")
    return summary


@contextlib.contextmanager
def _kfp_output_to(progress: ProgressLog, verbose: bool):
    """Sends kfp.local's output to `progress` (all of it unless verbose) and quiets its known warnings."""
    import builtins

    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        # kfp.local indents a task's prints by swapping builtins.print in and
        # back out; ParallelFor iterations run in threads whose swaps
        # interleave, which can leave the indenting print installed for good
        # (seen after a backfill run). Put back the one we started with.
        stack.callback(setattr, builtins, "print", builtins.print)
        # kfp warns that a non-"python" image name may not match this
        # interpreter; locally every step deliberately runs in this venv.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
        # display names are for the dashboard; kfp.local says so once per step.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner", category=UserWarning)
        if not verbose:
            stack.enter_context(contextlib.redirect_stdout(progress))
        stack.callback(progress.close)
        # kfp.local logs cache hits and skipped conditions at INFO between
        # steps, when no handler of its own is installed: route them here too.
        handler = logging.StreamHandler(progress)
        root_logger = logging.getLogger()
        stack.callback(root_logger.setLevel, root_logger.level)
        stack.callback(root_logger.removeHandler, handler)
        root_logger.addHandler(handler)
        root_logger.setLevel(logging.INFO)
        yield stack


def _docker_setup(cfg: TrainingConfig, pipeline_root, step_env: dict, stack: contextlib.ExitStack):
    """The config, pipeline root and kfp runner of a run whose steps run in their images."""
    from kfp import local

    from keel.components._common.images import COMPONENT_IMAGES
    from keel.pipelines import docker_runner
    from keel.pipelines.config import with_overrides

    client = docker_runner.connect()
    stack.callback(client.close)
    # The images of the steps this pipeline runs: a training run must not need keel-torch built.
    docker_runner.check_images(client, {COMPONENT_IMAGES[step.replace("-", "_")] for step in steps_for(cfg)})
    # kfp.local mounts only the pipeline root into a step: with a local store, that is the store itself.
    store = cfg.registry.store
    root = Path(pipeline_root or (pipeline_root_for(cfg) if storage.is_s3(store) else store)).resolve()
    overrides = {"data.source": docker_runner.stage_source(cfg.data.source, root)}
    if not storage.is_s3(store):
        overrides["registry.store"] = str(Path(store).resolve())  # a container's cwd is not ours
    step_env.update(docker_runner.forwarded_env())
    stack.enter_context(docker_runner.group_writable(root))
    stack.enter_context(docker_runner.no_log_timeout())
    stack.enter_context(docker_runner.removed_container_is_not_found())
    runner = local.DockerRunner(network_mode="host", user=docker_runner.step_user(client))
    return with_overrides(cfg, overrides), root, runner


@contextlib.contextmanager
def _subprocess_runs_keel_steps():
    """Lets kfp.local's SubprocessRunner run Keel's containerized steps.

    The SubprocessRunner accepts only lightweight components, because a
    containerized component's code normally lives only in its image. Every
    Keel step runs `python3 -m keel.components.executor` from the installed
    `keel` package, which is this very environment, so its guard is widened
    for exactly that command, for the duration of a run; any other container
    component is still refused.
    """
    from kfp.local import subprocess_task_handler

    from keel.components._common.component import EXECUTOR_COMMAND

    handler = subprocess_task_handler.SubprocessTaskHandler
    guard = handler.validate_not_container_component

    def validate(self, full_command):
        if list(full_command[:len(EXECUTOR_COMMAND)]) != EXECUTOR_COMMAND:
            guard(self, full_command)

    handler.validate_not_container_component = validate
    try:
        yield
    finally:
        handler.validate_not_container_component = guard


def _plain(value):
    """A pipeline output as collect() records step outputs: artifacts become {"uri", "metadata"}."""
    if hasattr(value, "uri") and hasattr(value, "metadata"):
        return {"uri": value.uri, "metadata": dict(value.metadata)}
    return value


def collect(run_dir: Path) -> RunSummary:
    """Reads every step's executor_output.json in a kfp.local run directory."""
    steps: dict[str, StepResult] = {}
    for step_dir in _step_dirs(run_dir):
        name = step_dir.relative_to(run_dir).as_posix()
        output_file = step_dir / "executor_output.json"
        if not output_file.exists():
            steps[name] = StepResult(name, "FAILURE", {})
            continue
        payload = json.loads(output_file.read_text())
        outputs: dict = dict(payload.get("parameterValues", {}))
        for output, group in payload.get("artifacts", {}).items():
            first = group["artifacts"][0]
            outputs[output] = {"uri": first.get("uri", ""), "metadata": first.get("metadata", {})}
        steps[name] = StepResult(name, "SUCCESS", outputs)
    return RunSummary(run_dir=run_dir, steps=steps)


def _step_dirs(run_dir: Path) -> list[Path]:
    """Every step's directory; a ParallelFor's iterations (`for-loop-1-iteration-0/`) hold theirs one level down."""
    found = []
    for path in sorted((p for p in run_dir.iterdir() if p.is_dir()), key=_step_order):
        if path.name.startswith("for-loop-") and not (path / "executor_output.json").exists():
            found += sorted((p for p in path.iterdir() if p.is_dir()), key=_step_order)
        else:
            found.append(path)
    return found
