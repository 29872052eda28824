"""What a pipeline tells the rest of Keel about itself: one `PipelineDescriptor` per pipeline module.

The local runner, the run records, `keel check`, `keel compile`, `keel submit`, `keel schedule` and
the CLI only ever talk to a descriptor (found through keel.pipelines.registry), so adding a pipeline
is one module plus one line in the registry, and nothing outside a pipeline's module knows its name.

The steps are read from the pipeline itself (`steps_of`), never retyped: a step added to a pipeline
function shows up in the progress lines, the run records and the gated set on its own.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable

from keel.components._common.errors import KeelError


@dataclasses.dataclass(frozen=True)
class LocalBuild:
    """What a local run adds to a pipeline it builds (None when compiling for a cluster).

    Attributes:
        step_env: environment for every step (the source hash that keys kfp.local's cache).
        ingest_cache_key: lets the ingest step be served from the cache; ingest names its source, not
            its content, so without a key made of the content it must never be cached.
    """

    step_env: dict[str, str]
    ingest_cache_key: str | None = None


@dataclasses.dataclass
class Checked:
    """A config that passed its pipeline's pre-flight, with what the run needs from that pre-flight.

    Attributes:
        config: the config to run (pre-flight may pin it, e.g. to the dataset version it stored).
        announce: what was found and what will run, for the line printed before the first step.
        cache_material: returns the content hashes that key the ingest step in kfp.local's cache
            (called only when the cache is on: hashing a large table is not free); None: never cached.
        loop_iterations: how many iterations each ParallelFor runs, when pre-flight knows (progress totals).
        detail: whatever the pipeline's summary needs from pre-flight (the backfill's planned partitions).
    """

    config: Any
    announce: str = ""
    cache_material: Callable[[], dict] | None = None
    loop_iterations: int | None = None
    detail: Any = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The end of a local run as its pipeline reports it: the summary lines and the gate's verdict."""

    lines: list[str]
    passed: bool | None = None  # False: the model missed a gate (`keel run` exits 3); None: no gate


@dataclasses.dataclass(frozen=True)
class Steps:
    """A pipeline's kfp task names, read from the pipeline function.

    Attributes:
        pipeline_name: the kfp pipeline name (kfp.local's run directories start with it).
        names: every task, in the order the pipeline function creates them.
        gated: the tasks inside a dsl.If (skipped together when a gate fails).
        looped: the tasks inside a dsl.ParallelFor (run once per iteration).
        sources: pipeline output -> (task, output key) that produces it, so a failed run's record can
            still read an output (the gate's verdict, the metrics) from the step that wrote it.
    """

    pipeline_name: str
    names: tuple[str, ...]
    gated: tuple[str, ...] = ()
    looped: tuple[str, ...] = ()
    sources: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)

    def total(self, iterations: int | None) -> int:
        """Step runs in all: a looped step counts once per iteration (once when that is unknown)."""
        return len(self.names) + len(self.looped) * ((iterations or 1) - 1)

    def order(self, name: str) -> int:
        """Sort key of a task name (a ParallelFor iteration's `<iteration>/<task>` sorts as its task)."""
        name = name.rsplit("/", 1)[-1]
        return self.names.index(name) if name in self.names else len(self.names)


def steps_of(pipeline) -> Steps:
    """Traces a kfp pipeline (a GraphComponent) the way kfp's compiler does, to list its tasks.

    The IR keeps tasks in a map (no order) and condition groups as components; tracing the function
    again inside a kfp pipeline context gives the tasks in definition order and the group each sits in.
    """
    from kfp.dsl import pipeline_channel, pipeline_context

    inputs = pipeline.component_spec.inputs or {}
    args = [pipeline_channel.create_pipeline_channel(name=name, channel_type=inputs[name].type,
                                                     is_artifact_list=inputs[name].is_artifact_list)
            for name in inspect.signature(pipeline.pipeline_func).parameters]
    with pipeline_context.Pipeline(pipeline.component_spec.name) as traced:
        pipeline.pipeline_func(*args)
    gated: list[str] = []
    looped: list[str] = []

    def walk(group, in_condition: bool, in_loop: bool) -> None:
        kind = str(getattr(group.group_type, "value", group.group_type))
        in_condition = in_condition or kind == "condition"
        in_loop = in_loop or kind == "for-loop"
        for task in group.tasks:
            if in_condition:
                gated.append(task.name)
            if in_loop:
                looped.append(task.name)
        for child in group.groups:
            walk(child, in_condition, in_loop)

    walk(traced.groups[0], False, False)
    names = tuple(traced.tasks)
    outputs = pipeline.pipeline_spec.root.dag.outputs
    sources = {key: (value.artifact_selectors[0].producer_subtask, value.artifact_selectors[0].output_artifact_key)
               for key, value in outputs.artifacts.items() if value.artifact_selectors}
    sources.update({key: (value.value_from_parameter.producer_subtask, value.value_from_parameter.output_parameter_key)
                    for key, value in outputs.parameters.items() if value.value_from_parameter.producer_subtask})
    by_order = sorted(gated, key=names.index), sorted(looped, key=names.index)
    return Steps(pipeline.name, names, tuple(by_order[0]), tuple(by_order[1]), dict(sorted(sources.items())))


@dataclasses.dataclass(frozen=True)
class PipelineDescriptor:
    """One pipeline, as the runner, the records, the compiler and the CLI see it.

    Attributes:
        kind: the config's `pipeline:` value (the default kind's configs may leave it out).
        config_model: the pydantic model of its config.
        build: (config, LocalBuild or None) -> the kfp pipeline; None builds it for a cluster (resources,
            node pools and other compile-time values from the config).
        example: the config that compiles this pipeline when `keel compile` is given another kind's config.
        check: `keel check`: reads the config's source and returns what the `ok:` line says about it.
        preflight: what `keel run` checks before any step: returns the Checked config to run.
        summary: (Checked, RunSummary, seconds) -> the Outcome `keel run` prints.
        cli_overrides: (config, {flag: value} of the flags given) -> dotted config overrides; refuses
            a flag that does not apply (see `refuse_flags`).
        variants: config -> [(compiled pipeline name, config)] that `keel compile` writes for this kind
            (default: the config's own pipeline); a config's `pipeline_name` is one of these names.
        variant_names: every name `variants` can return (a run directory's pipeline name finds its kind).
        runners: the `--runner` values it supports, and `runner_note`: why not the others.
        warm_start: steps fork from the pre-imported tabular stack (keel.pipelines.local.warm_start).
        tune: `keel tune`: (config, algorithm, max_trials, parallel_trials, emit_experiment) runs only the
            hyperparameter search; None where the pipeline has no search.
    """

    kind: str
    config_model: type
    build: Callable[[Any, LocalBuild | None], Any]
    example: Path
    check: Callable[[Any], str]
    preflight: Callable[[Any], Checked]
    summary: Callable[[Checked, Any, float], Outcome]
    cli_overrides: Callable[[Any, dict[str, Any]], dict[str, Any]]
    variants: Callable[[Any], list[tuple[str, Any]]] | None = None
    variant_names: tuple[str, ...] = ()
    runners: tuple[str, ...] = ("local", "docker")
    runner_note: str = ""
    warm_start: bool = False
    tune: Callable[..., Any] | None = None

    def names(self) -> tuple[str, ...]:
        return self.variant_names or (self.kind,)

    def compiled_variants(self, cfg) -> list[tuple[str, Any]]:
        return self.variants(cfg) if self.variants else [(cfg.pipeline_name, cfg)]

    def steps(self, cfg) -> Steps:
        """The steps a config runs (the tuned training pipeline has one more than the plain one)."""
        return steps_of(self.build(cfg, LocalBuild({})))

    def check_runner(self, runner: str) -> None:
        if runner not in self.runners:
            note = f" ({self.runner_note})" if self.runner_note else ""
            raise KeelError(f"--runner {runner}: the {self.kind} pipeline runs with --runner "
                            f"{' or '.join(self.runners)} only{note}")


def refuse_flags(flags: dict[str, Any], allowed: tuple[str, ...], kind: str, edit: str) -> None:
    """One error naming every flag given that a pipeline kind does not take."""
    refused = [flag for flag, value in flags.items() if value not in (None, [], False) and flag not in allowed]
    if refused:
        verb = "does" if len(refused) == 1 else "do"
        raise KeelError(f"{', '.join(refused)}: {verb} not apply to a {kind} config; edit its {edit}")
