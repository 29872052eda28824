"""Loading a registered model bundle, verified before anything is unpickled.

Unpickling runs code, so a bundle's files are checked against its
MANIFEST.json first: a file changed after publishing is refused by name, and
`joblib.load` only ever sees the bytes that were registered.

Two kinds of bundle share the registry: tabular (bundle.json without a
`modality`, a joblib Pipeline and schema.json) and image (bundle.json
`"modality": "image"`, model.json, the trained-model contract of
keel.components._common.deep_model.artifact, and its exported serving file). An image
bundle is verified the same way; its model is opened by the predictor
(serve/image_model.py), which holds the runtime it needs.

Signed and encrypted bundles (keel.components._common.protect) load through
the same path as the registry's reads (registry.open_version): the signature
when a verify key is configured, then every stored file's hash, then
decryption. `Bundle.files` and `Bundle.model` hold the decrypted bytes, so
nothing downstream (serving, image runtimes) knows whether a bundle was
encrypted at rest.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.components._common.errors import DataError, StorageError
from keel.components._common.registry.registry import (
    MANIFEST,
    RESERVED,
    SIGNATURE,
    Registry,
    open_version,
)

MODEL_FILE = "model.joblib"
SCHEMA_FILE = "schema.json"
METRICS_FILE = "metrics.json"
LINEAGE_FILE = "lineage.json"
INFO_FILE = "bundle.json"
# The explain step's explainer spec (keel.components.explain), which the predictor's :explain serves.
EXPLAINER_FILE = "explainer.json"
CARD_MD_FILE = "model_card.md"
CARD_HTML_FILE = "model_card.html"
BUNDLE_FILES = (MODEL_FILE, SCHEMA_FILE, METRICS_FILE, LINEAGE_FILE, CARD_MD_FILE, CARD_HTML_FILE, INFO_FILE)
MODEL_INFO_FILE = "model.json"  # keel.components._common.deep_model.artifact.MODEL_INFO (not imported: it is a torch-side module)
# Plus the serving file model.json names for the bundle's serving_format.
IMAGE_BUNDLE_FILES = (INFO_FILE, MODEL_INFO_FILE, METRICS_FILE, LINEAGE_FILE, CARD_MD_FILE, CARD_HTML_FILE)
IMAGE_MODALITY = "image"
MODALITIES = ("tabular", IMAGE_MODALITY)


@dataclass(frozen=True)
class Bundle:
    """A registered model version, verified and loaded.

    Attributes:
        model: the unpickled scikit-learn Pipeline (raw input columns in, predictions out);
            None for an image bundle (see `image_model_files`).
        schema: the validate stage's schema JSON (the serving input contract); {} for an image bundle.
        metrics: the evaluation metrics (name -> number).
        lineage: the lineage record (config, every input artifact's hash, code version).
        manifest: MANIFEST.json (file hashes and the bundle hash).
        info: bundle.json (task, classes, input_columns, framework, family, version, created_at).
        version: the version number.
        uri: where the version lives (local directory or s3:// prefix).
    """

    model: Any
    schema: dict
    metrics: dict
    lineage: dict
    manifest: dict
    info: dict
    version: int
    uri: str
    model_name: str
    files: dict = field(repr=False, default_factory=dict)

    @property
    def bundle_hash(self) -> str:
        return self.manifest["bundle_hash"]

    @property
    def modality(self) -> str:
        """"tabular" or "image" (bundle.json's `modality`; bundles from before images have none)."""
        return self.info.get("modality") or "tabular"

    @property
    def input_columns(self) -> list[str]:
        return list(self.info.get("input_columns") or [])

    @property
    def classes(self) -> list:
        return list(self.info.get("classes") or [])


def parse_version(version: int | str) -> int | None:
    """`"latest"` -> None; `3`, `"3"`, `"v3"` -> 3."""
    if isinstance(version, int) and not isinstance(version, bool) and version > 0:
        return version
    text = str(version).strip().lower()
    if text == "latest":
        return None
    match = re.fullmatch(r"v?([1-9][0-9]*)", text)
    if not match:
        raise StorageError(f"version {version!r} is not valid; use 'latest', a number, or 'v<number>'")
    return int(match.group(1))


def load_bundle(store: str, model_name: str, version: int | str = "latest") -> Bundle:
    """Loads a registered version after verifying every file's hash.

    Args:
        store: the registry store (local directory or s3://bucket/prefix).
        model_name: the registered model name.
        version: "latest", a number, or "v<number>".

    Raises:
        ConfigError: the bundle is encrypted and KEEL_BUNDLE_KEY is missing or
            another key, or KEEL_REQUIRE_SIGNED is set without a verify key.
        StorageError: no such model or version, or a file is missing.
        DataError: a file does not match MANIFEST.json (the message names it),
            the signature or a decryption fails, or the model cannot be unpickled.
    """
    registry = Registry(store)
    number = parse_version(version)
    if number is None:
        number = registry.latest(model_name)
        if number is None:
            raise StorageError(
                f"{registry.model_uri(model_name)}: model {model_name!r} has no registered version; "
                "run the training pipeline (or check registry.store and registry.model_name)"
            )
    manifest, files = registry.read_verified(model_name, number)
    return _load(registry.uri(model_name, number), model_name, number, manifest, files)


def load_bundle_dir(path: str | Path) -> Bundle:
    """Loads a bundle from a local copy of a version directory (e.g. KServe's /mnt/models).

    The copy is verified against its own MANIFEST.json (and MANIFEST.sig, and
    decrypted), exactly as in the registry.

    Raises:
        as `load_bundle`.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise StorageError(f"{path}: no {MANIFEST}; point at a registered version directory (…/registry/<model>/v<N>)")
    stored = {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest, files = open_version(str(path), manifest_path.read_bytes(), stored.get(SIGNATURE),
                                   {n: d for n, d in stored.items() if n not in RESERVED})
    return _load(str(path), manifest["model_name"], manifest["version"], manifest, files)


def _load(where: str, model_name: str, version: int, manifest: dict, files: dict[str, bytes]) -> Bundle:
    modality = _json(where, INFO_FILE, files).get("modality") if INFO_FILE in files else None
    if modality not in (None, "tabular", IMAGE_MODALITY):
        raise DataError(f"{where}/{INFO_FILE}: modality {modality!r} cannot be served; this predictor serves {', '.join(MODALITIES)}")
    image = modality == IMAGE_MODALITY
    for name in IMAGE_BUNDLE_FILES if image else BUNDLE_FILES:
        if name not in files:
            kind = "image model bundle" if image else "model bundle"
            raise DataError(f"{where}: is not a Keel {kind} (no {name}); publish it with register_model")
    info = _json(where, INFO_FILE, files)
    lineage = _json(where, LINEAGE_FILE, files)
    if image:
        # An image model is loaded by its runtime when served; here: the serving file is there
        # and model.json agrees with bundle.json.
        image_model_files(where, info, files)
        model, schema = None, {}
    else:
        model = unpickle_model(where, files[MODEL_FILE], lineage.get("code_version", "unknown"))
        schema = _json(where, SCHEMA_FILE, files)
    return Bundle(model=model, schema=schema, metrics=_json(where, METRICS_FILE, files), lineage=lineage,
                  manifest=manifest, info=info, version=version, uri=where, model_name=model_name, files=files)


def image_model_files(where: str, info: dict, files: dict[str, bytes]) -> tuple[str, dict, dict[str, bytes]]:
    """What an image bundle serves: (format, model.json, {file name: bytes} to write into a model directory).

    The format is bundle.json's `serving_format` (register may pick another export than
    training's default), else model.json's.

    Raises:
        DataError: model.json is malformed, names no file for the format, the file is not in
            the bundle, or model.json and bundle.json disagree on classes or input size.
    """
    model_info = _json(where, MODEL_INFO_FILE, files)
    missing = [k for k in ("framework", "classes", "input", "files", "serving_format") if k not in model_info]
    if missing:
        raise DataError(f"{where}/{MODEL_INFO_FILE}: missing {', '.join(missing)}; the bundle is inconsistent, register the model again")
    fmt = info.get("serving_format") or model_info["serving_format"]
    name = (model_info.get("files") or {}).get(fmt) if isinstance(model_info.get("files"), dict) else None
    if not name:
        raise DataError(f"{where}/{MODEL_INFO_FILE}: names no file for serving format {fmt!r}")
    if name not in files:
        raise DataError(f"{where}: is not a complete image model bundle (no {name}, the {fmt} model that model.json names)")
    if info.get("classes") is not None and list(info["classes"]) != list(model_info["classes"]):
        raise DataError(f"{where}: {INFO_FILE} and {MODEL_INFO_FILE} list different classes; the bundle is inconsistent")
    served, trained = info.get("input") or {}, model_info["input"]
    if (not isinstance(trained, dict) or trained.get("layout") not in ("NCHW", "NHWC")
            or not all(isinstance(trained.get(k), int) and trained[k] > 0 for k in ("height", "width", "channels"))):
        raise DataError(f"{where}/{MODEL_INFO_FILE}: input must give layout NCHW or NHWC and positive whole height, width "
                        f"and channels, got {trained!r}")
    for key in ("height", "width", "channels", "layout"):
        if key in served and served[key] != trained.get(key):
            raise DataError(f"{where}: {INFO_FILE} input.{key} is {served[key]!r} but {MODEL_INFO_FILE} says {trained.get(key)!r}; "
                            "the bundle is inconsistent")
    return fmt, model_info, {MODEL_INFO_FILE: files[MODEL_INFO_FILE], name: files[name]}


def _json(where: str, name: str, files: dict[str, bytes]) -> dict:
    try:
        value = json.loads(files[name])
    except json.JSONDecodeError as err:
        raise DataError(f"{where}/{name}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}/{name}: expected a JSON object, got {type(value).__name__}")
    return value


def unpickle_model(where: str, data: bytes, code_version: str):
    """joblib-loads verified model bytes; a library mismatch becomes one actionable line."""
    import joblib

    try:
        return joblib.load(io.BytesIO(data))
    except Exception as err:
        # The bytes are verified, so this is not a bad download: usually a
        # library version that differs from the one that trained the model.
        raise DataError(
            f"{where}/{MODEL_FILE}: cannot be unpickled ({type(err).__name__}: {err}); "
            f"load it in the environment that registered it (code version {code_version})"
        ) from err
