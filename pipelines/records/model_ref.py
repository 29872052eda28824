"""MODEL_VERSION arguments of the governance commands (`keel lineage`, `approve`, `deploy`, `rollback`, `reproduce`).

Accepted forms, in this order:

* `latest`: the most recently registered version in the store, whichever model
  (so after `keel run --data any.csv --target y`, `latest` is the model it just
  registered, not the default config's);
* `v3`, `3`: a version of the config's `registry.model_name`;
* `NAME:latest`, `NAME:v3`, `NAME:3`: a version of model NAME;
* `NAME`: the latest version of model NAME.

The store is `--store` when given, else the config's `registry.store` (the
embedded default config when no `--config`). A model literally named
`latest` or `v3` must be written `latest:latest` / `v3:latest`.
"""

from __future__ import annotations

import re

from keel.components._common.config import NAME_PATTERN
from keel.components._common.errors import KeelError
from keel.components._common.registry.registry import VersionRef as ModelRef  # noqa: F401 (the name callers import)

_VERSION = re.compile(r"^(latest|v?[1-9][0-9]*)$", re.IGNORECASE)
_NAME = re.compile(NAME_PATTERN)


def split_ref(ref: str, default_model: str) -> tuple[str | None, str]:
    """(model name, version text) of a MODEL_VERSION argument, without touching the registry.

    The name is None for a bare `latest`: the newest version of any model in the store.
    """
    text = (ref or "").strip()
    if not text:
        raise KeelError("MODEL_VERSION: is empty; give latest, v<N>, NAME, or NAME:v<N>")
    if ":" in text:
        name, _, version = text.partition(":")
    elif text.lower() == "latest":
        return None, "latest"
    elif _VERSION.match(text):
        name, version = default_model, text
    else:
        name, version = text, "latest"
    if not _NAME.match(name):
        raise KeelError(f"MODEL_VERSION {ref!r}: model name {name!r} is not valid (lowercase letters, digits, '.', '_', '-')")
    if not _VERSION.match(version):
        raise KeelError(f"MODEL_VERSION {ref!r}: version {version!r} is not valid; use latest, v<N> or <N>")
    return name, version.lower()


def resolve(ref: str, *, store: str | None = None, config: str | None = None) -> ModelRef:
    """The registered version a MODEL_VERSION argument names; it must exist.

    Args:
        ref: the argument as typed.
        store: `--store`, overriding the config's registry.store.
        config: `--config`, the config whose registry section applies (default: the embedded default).

    Raises:
        KeelError: the argument is malformed, or the model or version is not registered (the
            message lists the versions that are).
    """
    from keel.components._common.registry.bundle import parse_version
    from keel.components._common.registry.registry import Registry
    from keel.pipelines.config import DEFAULT_CONFIG, load_config

    registry_section = load_config(config or DEFAULT_CONFIG).registry
    name, version_text = split_ref(ref, registry_section.model_name)
    registry = Registry(store or registry_section.store)
    if name is None:
        return newest(registry)
    versions = registry.versions(name)
    if not versions:
        raise KeelError(f"{registry.model_uri(name)}: model {name!r} has no registered version; "
                        "run the training pipeline, or check --store / --config")
    number = parse_version(version_text) or versions[-1]
    if number not in versions:
        raise KeelError(f"{ref}: {name} has no v{number} in {registry.store} (versions: {', '.join(f'v{v}' for v in versions)})")
    return ModelRef(registry.store, name, number)


def newest(registry) -> ModelRef:
    """The most recently registered version in `registry`, whichever model.

    Raises:
        KeelError: the store holds no registered version (the message says how to register one).
    """
    found = registry.newest()
    if found is None:
        raise KeelError(f"{registry.root}: no model is registered in this store yet; `keel run` (or `make run`) "
                        "trains and registers one, or point --store / --config at the store that holds yours")
    return found
