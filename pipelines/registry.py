"""The pipeline registry: every Keel pipeline, found by the `pipeline:` key of its config.

A pipeline is one module that exports a `PIPELINE` descriptor (keel.pipelines.descriptor) and one
line in `PIPELINE_MODULES` below. Nothing else in Keel names a pipeline: the runner, the records,
the compiler and the CLI loop over `all_pipelines()` or look one up with `get`/`for_config`.
`register` adds a descriptor at run time (the registry's own test defines a pipeline inside the test).
"""

from __future__ import annotations

import importlib

from keel.components._common.errors import KeelError
from keel.pipelines.descriptor import PipelineDescriptor

# The one place a pipeline is registered. The first is the default kind: a config without a
# `pipeline:` key (every training config, and the quick path's inferred one) belongs to it.
PIPELINE_MODULES = (
    "keel.pipelines.training", "keel.pipelines.vision", "keel.pipelines.backfill", "keel.pipelines.monitoring",
)
DEFAULT_KIND = "training"

_registered: dict[str, PipelineDescriptor] = {}
_loaded = False


def register(descriptor: PipelineDescriptor) -> PipelineDescriptor:
    """Adds (or replaces) a pipeline; its kind and compiled names must not belong to another one."""
    _load()
    for other in _registered.values():
        clash = set(other.names()) & set(descriptor.names())
        if other.kind != descriptor.kind and clash:
            raise KeelError(f"pipeline {descriptor.kind!r}: compiled name(s) {', '.join(sorted(clash))} "
                            f"already belong to pipeline {other.kind!r}")
    _registered[descriptor.kind] = descriptor
    return descriptor


def unregister(kind: str) -> None:
    _registered.pop(kind, None)


def _load() -> None:
    # Imported on first use, not at import: the modules import kfp and every component's spec
    # (~0.7 s), which commands such as `keel models` never need.
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in PIPELINE_MODULES:
        descriptor = importlib.import_module(name).PIPELINE
        _registered.setdefault(descriptor.kind, descriptor)


def all_pipelines() -> list[PipelineDescriptor]:
    _load()
    return list(_registered.values())


def kinds() -> tuple[str, ...]:
    return tuple(p.kind for p in all_pipelines())


def get(kind: str) -> PipelineDescriptor:
    _load()
    if kind not in _registered:
        raise KeelError(f"pipeline: {kind!r} is not a Keel pipeline; use one of {', '.join(kinds())}")
    return _registered[kind]


def for_config(cfg) -> PipelineDescriptor:
    """The pipeline a validated config belongs to (by its model)."""
    for descriptor in all_pipelines():
        if isinstance(cfg, descriptor.config_model):
            return descriptor
    raise KeelError(f"{type(cfg).__name__}: not the config model of a registered pipeline ({', '.join(kinds())})")


def for_compiled_name(name: str) -> PipelineDescriptor | None:
    """The pipeline one of whose compiled variants is called `name` (training-tuned -> training)."""
    return next((p for p in all_pipelines() if name in p.names()), None)
