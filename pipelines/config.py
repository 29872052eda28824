"""A pipeline config from YAML: the file's `pipeline:` key picks the registered pipeline whose
pydantic model validates the rest (keel.pipelines.registry); without the key it is a training config.

Every problem is one line naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from keel.components._common.config import format_validation_error
from keel.components._common.errors import ConfigError
from keel.pipelines import registry
from keel.pipelines.config_files import CONFIG_DIR, DEFAULT_CONFIG, read_yaml

__all__ = ["CONFIG_DIR", "DEFAULT_CONFIG", "load_config", "parse_config", "with_overrides"]


def parse_config(raw: Any, source: str = "config"):
    """The config model of the pipeline `raw` names (`pipeline:`), validated."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (a `pipeline:` key names "
                          f"the pipeline: {', '.join(registry.kinds())}; the default is {registry.DEFAULT_KIND})")
    kind = raw.get("pipeline", registry.DEFAULT_KIND)
    if kind not in registry.kinds():
        raise ConfigError(f"{source}: pipeline: {kind!r} is not a Keel pipeline; use one of {', '.join(registry.kinds())}")
    model = registry.get(kind).config_model
    if "pipeline" not in model.model_fields:  # the default kind's model has no `pipeline` field to hold it
        raw = {k: v for k, v in raw.items() if k != "pipeline"}
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {format_validation_error(err)}") from None


def load_config(path: str | Path):
    """Reads and validates a YAML config."""
    return parse_config(read_yaml(path), str(path))


def with_overrides(config, overrides: dict[str, Any], source: str = "command line"):
    """Applies dotted overrides (`{"target.column": "y"}`) and re-validates."""
    raw = config.model_dump(mode="json")
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_config(raw, source)
