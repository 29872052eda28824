"""Compiles every Keel pipeline to KFP IR YAML (uploadable as-is to a Kubeflow dashboard)."""

from __future__ import annotations

from pathlib import Path

from keel.pipelines.config import CONFIG_DIR, DEFAULT_CONFIG, TrainingConfig, load_config

# The tuned pipeline's `tune` defaults when the config has no search of its own.
TUNED_EXAMPLE = CONFIG_DIR / "loans-tuned.yaml"


# The vision pipeline's defaults when the config given is a tabular one.
VISION_EXAMPLE = CONFIG_DIR / "fashion-mnist-torch.yaml"


def compile_vision(out_dir: str | Path, cfg) -> Path:
    """Writes `<out_dir>/vision.yaml` with the config's train resources (GPU pool) and framework image."""
    from kfp import compiler

    from keel.pipelines.vision import build_vision_pipeline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path, tmp = out / "vision.yaml", out / ".vision.tmp.yaml"
    pipeline = build_vision_pipeline(cfg.resources, cfg.model.framework, launcher=cfg.training.distributed.launcher)
    compiler.Compiler().compile(pipeline, str(tmp), pipeline_parameters=cfg.pipeline_arguments())
    tmp.replace(path)
    return path


# The backfill pipeline's defaults when the config given is not a backfill one.
BACKFILL_EXAMPLE = CONFIG_DIR / "flights-backfill.yaml"


def compile_backfill(out_dir: str | Path, cfg) -> Path:
    """Writes `<out_dir>/backfill.yaml` with the config's values as defaults and its parallelism in the IR."""
    from kfp import compiler

    from keel.pipelines.backfill import build_backfill_pipeline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path, tmp = out / "backfill.yaml", out / ".backfill.tmp.yaml"
    compiler.Compiler().compile(build_backfill_pipeline(cfg.backfill.parallelism), str(tmp), pipeline_parameters=cfg.pipeline_arguments())
    tmp.replace(path)
    return path


def compile_pipelines(out_dir: str | Path, cfg: TrainingConfig | None = None) -> list[Path]:
    """Writes `<out_dir>/<pipeline>.yaml` for each pipeline, with `cfg` as its parameter defaults.

    A vision config compiles the vision pipeline only (its resources are part
    of the IR), a backfill config the backfill pipeline only; a training
    config compiles the training pipelines, the vision pipeline of the
    Fashion-MNIST example and the backfill pipeline of the flights example.
    """
    from kfp import compiler

    from keel.pipelines.training import PIPELINES

    cfg = cfg or load_config(DEFAULT_CONFIG)
    if cfg.pipeline_name == "vision":
        return [compile_vision(out_dir, cfg)]
    if cfg.pipeline_name == "backfill":
        return [compile_backfill(out_dir, cfg)]
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
    written.append(compile_vision(out, load_config(VISION_EXAMPLE)))
    written.append(compile_backfill(out, load_config(BACKFILL_EXAMPLE)))
    return written
