"""Compiles every Keel pipeline to KFP IR YAML (uploadable as-is to a Kubeflow dashboard)."""

from __future__ import annotations

from pathlib import Path

from keel.pipelines.config import DEFAULT_CONFIG, TrainingConfig, load_config


def compile_pipelines(out_dir: str | Path, cfg: TrainingConfig | None = None) -> list[Path]:
    """Writes `<out_dir>/<pipeline>.yaml` for each pipeline, with `cfg` as its parameter defaults."""
    from kfp import compiler

    from keel.pipelines.training import PIPELINES

    cfg = cfg or load_config(DEFAULT_CONFIG)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in PIPELINES.items():
        path = out / f"{name}.yaml"
        tmp = path.with_name(f".{name}.tmp.yaml")  # kfp insists on a .yaml suffix
        compiler.Compiler().compile(pipeline, str(tmp), pipeline_parameters=cfg.pipeline_arguments())
        tmp.replace(path)
        written.append(path)
    return written
