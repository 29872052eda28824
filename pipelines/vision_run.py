"""Pre-flight of a vision config: what can be checked in seconds before any step runs."""

from __future__ import annotations

from keel.components._common import image_data
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
        from keel.components.train_deep.models import build_image_model

        build_image_model(cfg.model.architecture, first.shape, len(first.classes), cfg.model.params, [0.5] * first.shape[2],
                          [0.25] * first.shape[2])
    else:
        from keel.components.train_deep.keras_models import check_image_params

        check_image_params(cfg.model.architecture, first.shape, cfg.model.params)
    return sets
