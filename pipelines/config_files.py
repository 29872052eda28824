"""Config files on disk: where the embedded examples live and how a YAML file is read.

Parsing a file into a pipeline's config model is keel.pipelines.config's job (it needs the
registry); this module needs nothing, so a pipeline module can read its own example configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from keel.components._common.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


def read_yaml(path: str | Path) -> Any:
    """The file's YAML document; a missing file, bad YAML or bad encoding is one line naming the file."""
    path = Path(path)
    if not path.exists():
        examples = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"{path}: config file not found (examples in {CONFIG_DIR}: {examples})")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
