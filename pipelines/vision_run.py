"""The vision pipeline's pre-flight (what can be checked in seconds before any step runs), `keel check`
line, command-line flags and summary."""

from __future__ import annotations

from keel.components._common import image_data
from keel.pipelines.descriptor import Checked, Outcome, refuse_flags
from keel.pipelines.model_summary import summary_lines
from keel.pipelines.vision_config import VisionConfig


def preflight_vision(cfg: VisionConfig) -> dict[str, image_data.ImageSet]:
    """Reads the image source and builds the model for its image shape, so a bad source,
    architecture or model parameter fails here, naming the field, not minutes into a run.

    Returns:
        The source's image sets (keyed "train"/"test" or "all").
    """
    sets = image_data.load_source(cfg.data.source)
    first = next(iter(sets.values()))
    if cfg.model.framework == "torch":
        from keel.components._common.deep_model.models import build_image_model

        build_image_model(cfg.model.architecture, first.shape, len(first.classes), cfg.model.params, [0.5] * first.shape[2],
                          [0.25] * first.shape[2])
    else:
        from keel.components._common.deep_model.keras_models import check_image_params

        check_image_params(cfg.model.architecture, first.shape, cfg.model.params)
    return sets


def check(cfg: VisionConfig) -> str:
    sets = preflight_vision(cfg)
    first = next(iter(sets.values()))
    return (f"{sum(len(s) for s in sets.values()):,} images of {'x'.join(map(str, first.shape))} in {len(first.classes)} "
            f"classes from {cfg.data.source}; model {cfg.model.framework} {cfg.model.architecture}")


def checked_run(cfg: VisionConfig) -> Checked:
    """Pre-flight; image ingest is served from the cache only for the same source files, data section and code."""
    preflight_vision(cfg)

    def material() -> dict:
        from keel.components._common.image_data import source_files
        from keel.components._common.lineage import file_sha256

        content = [file_sha256(p) if p.is_file() else f"missing:{p}" for p in source_files(cfg.data.source)]
        return {"data": cfg.pipeline_arguments()["data"], "content": content}

    return Checked(cfg, f"images from {cfg.data.source}; training a {cfg.model.framework} {cfg.model.architecture}",
                   cache_material=material)


def outcome(checked: Checked, run, seconds: float) -> Outcome:
    return Outcome(summary_lines(checked.config, run, seconds), bool(run.passed))


def cli_overrides(cfg: VisionConfig, flags: dict) -> dict:
    """--store, and --sample-rows as data.sample_images; the tabular flags are refused."""
    refuse_flags(flags, ("--store", "--sample-rows"), "vision", "data/model sections")
    fields = {"--store": "registry.store", "--sample-rows": "data.sample_images"}
    return {fields[flag]: value for flag, value in flags.items() if flag in fields and value is not None}
