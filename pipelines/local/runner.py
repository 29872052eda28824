"""Runs a pipeline on this machine through kfp.local, then summarises it.

The pipeline function is the very one that compiles for a cluster; only the
runner differs. With the `local` runner steps run as subprocesses of this
Python environment (SubprocessRunner without a venv), so nothing is
installed at run time; with `docker` each step runs in its real image
(keel.pipelines.local.docker_runner).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from keel.components._common import storage
from keel.components._common.errors import KeelError
from keel.pipelines import registry
from keel.pipelines.descriptor import Checked, LocalBuild
from keel.pipelines.local.progress import ProgressLog
from keel.pipelines.records.results import RunSummary, collect, plain

RUNNERS = ("local", "docker")


class PipelineFailed(KeelError):
    """A step of the pipeline failed; its own error line is printed above."""


def steps_for(cfg):
    """The steps a config runs, read from its pipeline (keel.pipelines.descriptor.steps_of)."""
    return registry.for_config(cfg).steps(cfg).names


def pipeline_root_for(cfg) -> Path:
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


def cache_key(material: dict, code: str) -> str:
    """A step's kfp.local cache key: its pipeline's content hashes (Checked.cache_material) and Keel's code."""
    return hashlib.sha256(json.dumps({**material, "code": code}, sort_keys=True).encode()).hexdigest()


def warm_start_enabled() -> bool:
    return os.environ.get("KEEL_WARM_START", "1").lower() not in ("0", "false", "no", "off")


def run_local(
    cfg,
    *,
    runner: str = "local",
    pipeline_root: str | Path | None = None,
    verbose: bool = False,
    warm_start: bool | None = None,
    step_server=None,
    cache: bool = True,
    checked: Checked | None = None,
) -> RunSummary:
    """Runs the config's pipeline with kfp.local and returns what each step produced.

    Progress goes to stdout one line per step; kfp.local's full output goes
    to `<run_dir>/keel-run.log` (or to stdout too when `verbose`). With warm
    start (the default for pipelines that ask for it; see
    keel.pipelines.local.warm_start) steps are forked from a pre-imported
    process instead of importing their libraries from cold. `step_server` is
    an already started StepServer (run_checked starts it before its pre-flight
    so both overlap); it is stopped here.

    With `cache`, kfp.local's cache (under `<pipeline_root>/.kfp_cache`)
    serves every step whose code and inputs are unchanged, so running the same
    command again after a crash resumes after the last finished step. Ingest
    joins the cache only when `checked` (the pipeline's pre-flight) says what
    its content is; register always runs.
    """
    from keel.pipelines.local.warm_start import StepServer

    pipeline = registry.for_config(cfg)
    warm_start = warm_start_enabled() if warm_start is None else warm_start
    warm_start = warm_start and runner == "local" and pipeline.warm_start  # containers start from their image
    if step_server is None and warm_start:
        step_server = StepServer().start()
    try:
        return _run(checked or Checked(cfg), runner=runner, pipeline_root=pipeline_root, verbose=verbose,
                    step_server=step_server, cache=cache)
    finally:
        if step_server is not None:
            step_server.stop()


def run_checked(cfg, *, runner: str = "local", verbose: bool = False, warm_start: bool | None = None,
                cache: bool = True, on_checked=None) -> RunSummary:
    """What `keel run` does: the pipeline's pre-flight, then the local run.

    The warm-start server starts first so that it imports the ML stack while
    pre-flight reads the data; `on_checked(checked)` is called between the two.
    """
    from keel.pipelines.local.warm_start import StepServer

    pipeline = registry.for_config(cfg)
    pipeline.check_runner(runner)
    if runner == "docker":  # no container API: say so before reading the data
        from keel.pipelines.local.docker_runner import connect

        connect().close()
    warm_start = (warm_start_enabled() if warm_start is None else warm_start) and runner == "local" and pipeline.warm_start
    server = StepServer().start() if warm_start else None
    try:
        checked = pipeline.preflight(cfg)
        if on_checked:
            on_checked(checked)
    except BaseException:
        if server:
            server.stop()
        raise
    return run_local(checked.config, runner=runner, verbose=verbose, warm_start=warm_start, step_server=server,
                     cache=cache, checked=checked)


def _run(checked: Checked, *, runner, pipeline_root, verbose, step_server, cache) -> RunSummary:
    from kfp import local

    if runner not in RUNNERS:
        raise KeelError(f"--runner: {runner!r} is not available; choose one of {', '.join(RUNNERS)}")
    cfg = checked.config
    descriptor = registry.for_config(cfg)
    descriptor.check_runner(runner)
    steps = descriptor.steps(cfg)
    step_env = {"KEEL_SOURCE_HASH": source_hash()}
    resources = contextlib.ExitStack()  # for the docker runner: its API client, umask and log timeout
    if runner == "docker":
        cfg, root, kfp_runner = _docker_setup(cfg, steps.names, pipeline_root, step_env, resources)
    else:
        root = Path(pipeline_root or pipeline_root_for(cfg))
        kfp_runner = local.SubprocessRunner(use_venv=False)
    root.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(root))
    local.init(runner=kfp_runner, pipeline_root=str(root), raise_on_error=False,
               enable_caching=cache, cache_root=str(root / ".kfp_cache"))
    key = cache_key(checked.cache_material(), step_env["KEEL_SOURCE_HASH"]) if cache and checked.cache_material else None
    pipeline = descriptor.build(cfg, LocalBuild(step_env, key))
    name = pipeline.name
    log_path = root / f".keel-run-{os.getpid()}.log"
    progress = ProgressLog(log_path, sys.stdout, total_steps=steps.total(checked.loop_iterations), gated=steps.gated,
                           looped=steps.looped, iterations=checked.loop_iterations, live=False if verbose else None)
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
    summary = collect(run_dir, steps.order)
    summary.sources = steps.sources
    summary.outputs = {name: plain(value) for name, value in (task.outputs or {}).items()}
    skipped = set(steps.gated) if summary.passed is False else set()
    if summary.outputs:  # a finished run: steps with no directory here came from the cache
        ran = {name.rsplit("/", 1)[-1] for name in summary.steps}  # a ParallelFor step is "<iteration>/<step>"
        summary.cached = [s for s in steps.names if s not in ran and s not in skipped]
    from keel.pipelines.records.runs import write_record

    write_record(run_dir, cfg, summary, progress.timings(), steps)  # also for a failed run: `keel report` shows where it stopped
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


def _docker_setup(cfg, step_names: tuple[str, ...], pipeline_root, step_env: dict, stack: contextlib.ExitStack):
    """The config, pipeline root and kfp runner of a run whose steps run in their images."""
    from kfp import local

    from keel.components._common.images import COMPONENT_IMAGES
    from keel.pipelines.local import docker_runner
    from keel.pipelines.config import with_overrides

    client = docker_runner.connect()
    stack.callback(client.close)
    # The images of the steps this pipeline runs: a training run must not need keel-torch built.
    docker_runner.check_images(client, {COMPONENT_IMAGES[step.replace("-", "_")] for step in step_names})
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
