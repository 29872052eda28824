"""Compiles every Keel pipeline to KFP IR YAML (uploadable as-is to a Kubeflow dashboard)."""

from __future__ import annotations

from pathlib import Path

from keel.pipelines.config import CONFIG_DIR, DEFAULT_CONFIG, TrainingConfig, load_config

# The tuned pipeline's `tune` defaults when the config has no search of its own.
TUNED_EXAMPLE = CONFIG_DIR / "loans-tuned.yaml"


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
        arguments = {k: v for k, v in cfg.pipeline_arguments().items() if k != "tune"}
        if name == "training-tuned":
            tune = cfg.tune or load_config(TUNED_EXAMPLE).tune
            arguments["tune"] = tune.model_dump(mode="json", exclude_none=True)
        compiler.Compiler().compile(pipeline, str(tmp), pipeline_parameters=arguments)
        tmp.replace(path)
        written.append(path)
    return written
