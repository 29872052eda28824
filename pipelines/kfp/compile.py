"""Compiles Keel pipelines to KFP IR YAML (uploadable as-is to a Kubeflow dashboard).

Every registered pipeline compiles; the config given sets the defaults of its own pipeline's
parameters (and its compile-time values: resources, node pools, parallelism), and every other
pipeline compiles from its example config.
"""

from __future__ import annotations

from pathlib import Path

from keel.pipelines import registry
from keel.pipelines.config import load_config


def compile_config(out_dir: str | Path, cfg) -> list[Path]:
    """Writes `<out_dir>/<name>.yaml` for each pipeline the config's kind compiles (training: plain and tuned)."""
    from kfp import compiler

    descriptor = registry.for_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, variant in descriptor.compiled_variants(cfg):
        path = out / f"{name}.yaml"
        tmp = path.with_name(f".{name}.tmp.yaml")  # kfp insists on a .yaml suffix; the rename is atomic
        compiler.Compiler().compile(descriptor.build(variant, None), str(tmp), pipeline_parameters=variant.pipeline_arguments())
        tmp.replace(path)
        written.append(path)
    return written


def compile_pipelines(out_dir: str | Path, cfg=None) -> list[Path]:
    """Writes every registered pipeline; `cfg`'s own pipeline with its values, the others with their examples."""
    own = registry.for_config(cfg) if cfg is not None else None
    written = []
    for descriptor in registry.all_pipelines():
        written += compile_config(out_dir, cfg if descriptor is own else load_config(descriptor.example))
    return written
