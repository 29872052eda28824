"""Register logic: assemble a model bundle with its lineage and publish it.

Kept free of KFP: the inputs are anything with `.uri`, `.path` and `.metadata`
(KFP artifacts, or `Ref` in tests and the CLI).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from keel.components._common.uris import redact_all
from keel.components._common import lineage, storage
from keel.components._common.config import RegistrySection, Section
from keel.components._common.errors import DataError, StorageError
from keel.components.register import bundle as b
from keel.components.register.registry import MANIFEST, Registry

# Every input artifact of register_model; each one appears in lineage.json.
INPUT_ARTIFACTS = ("trained_model", "schema", "metrics", "card_md", "card_html",
                   "raw", "valid", "cleaned", "train", "test", "transformer")
# Inputs whose file goes into the bundle, and under which name.
BUNDLED = {"trained_model": b.MODEL_FILE, "schema": b.SCHEMA_FILE, "card_md": b.CARD_MD_FILE, "card_html": b.CARD_HTML_FILE}


@dataclass
class Ref:
    """An artifact outside KFP: a local path, its URI, and its metadata."""

    path: str
    uri: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.uri = self.uri or str(self.path)


@dataclass(frozen=True)
class Registered:
    model_name: str
    version: int
    uri: str
    manifest: dict
    files: dict = field(repr=False)

    @property
    def label(self) -> str:
        return f"v{self.version}"


def artifact_record(artifact) -> dict:
    metadata = dict(getattr(artifact, "metadata", {}) or {})
    return {
        "uri": str(getattr(artifact, "uri", "") or ""),
        "content_hash": lineage.artifact_hash(artifact),
        "parents": list(metadata.get("parents") or []),
        "code_version": metadata.get("code_version", ""),
        "created_by": metadata.get("created_by", ""),
        "created_at": metadata.get("created_at", ""),
    }


def numeric_metrics(metadata: Mapping) -> dict[str, float]:
    """The metric values of a Metrics artifact's metadata (lineage keys and non-numbers left out)."""
    return {
        str(k): float(v)
        for k, v in sorted(dict(metadata or {}).items())
        if k not in lineage.STAMP_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def redact(value: Any) -> Any:
    """Config with any URL password replaced, so no secret reaches the registry."""
    return redact_all(value)


def _intish(value):
    """KFP returns metadata numbers as floats; 1600.0 rows reads better as 1600."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _read_input(name: str, artifact) -> bytes:
    path = Path(getattr(artifact, "path", "") or "")
    if not path.is_file():
        raise StorageError(f"{name}: input artifact file {path} is missing; rerun the step that produces it")
    return path.read_bytes()


def check_inputs(artifacts: Mapping[str, Any]) -> None:
    missing = [n for n in INPUT_ARTIFACTS if n not in artifacts]
    if missing:
        raise StorageError(f"register_model: input artifact(s) {missing} not given; every input is recorded in lineage.json")


def model_info(model_meta: Mapping, model_bytes: bytes, target_task: str) -> dict:
    """What serving needs to know about the model, checked against the pickled pipeline itself."""
    pipeline = b.unpickle_model("trained_model", model_bytes, str(model_meta.get("code_version", "unknown")))
    if not hasattr(pipeline, "predict"):
        raise DataError(f"trained_model: holds a {type(pipeline).__name__}, not a fitted model with predict(); rerun train_model")
    fitted_columns = [str(c) for c in getattr(pipeline, "feature_names_in_", [])]
    declared = [str(c) for c in (model_meta.get("input_columns") or [])]
    if declared and fitted_columns and declared != fitted_columns:
        only_declared = sorted(set(declared) - set(fitted_columns))[:5]
        only_fitted = sorted(set(fitted_columns) - set(declared))[:5]
        raise DataError(
            "trained_model: metadata input_columns differ from the columns the pipeline was fitted on "
            f"(only in metadata: {only_declared}, only in the pipeline: {only_fitted}, or a different order); rerun train_model"
        )
    input_columns = declared or fitted_columns
    if not input_columns:
        raise DataError("trained_model: neither metadata input_columns nor the pipeline name its input columns; rerun train_model")
    classes = list(model_meta.get("classes") or [])
    if not classes and hasattr(pipeline, "classes_"):
        classes = [_intish(c) if isinstance(c, float) else c for c in pipeline.classes_.tolist()]
    return {
        "task": model_meta.get("task") or target_task,
        "classes": classes,
        "input_columns": input_columns,
        "framework": model_meta.get("framework", "sklearn"),
        "family": model_meta.get("family", ""),
        "n_features": _intish(model_meta.get("n_features")),
        "train_rows": _intish(model_meta.get("train_rows")),
    }


def bundle_files(
    *,
    model_name: str,
    version: int,
    created_at: str,
    artifacts: Mapping[str, Any],
    inputs: Mapping[str, bytes],
    info: dict,
    metrics: dict,
    config: Mapping[str, dict],
    search: Mapping | None = None,
) -> dict[str, bytes]:
    """Every file of a version except MANIFEST.json (the registry writes it)."""
    record = {
        "model_name": model_name,
        "version": version,
        "created_at": created_at,
        "created_by": lineage.actor(),
        "code_version": lineage.code_version(),
        "config": dict(config),
        "artifacts": {name: artifact_record(artifacts[name]) for name in INPUT_ARTIFACTS},
        "metrics": metrics,
        # The evaluation verdict that let this model through (absent when evaluate recorded none).
        "evaluation_gate": dict(artifacts["metrics"].metadata or {}).get("gate"),
    }
    if search is not None:
        # The whole hyperparameter search: how it ran and every trial's parameters and value.
        record["search"] = {
            **{k: search.get(k) for k in ("experiment", "backend", "algorithm", "objective", "best_params", "best_value",
                                          "trials_by_state", "content_hash")},
            "trials": list(search.get("trials_json") or []),
        }
    files = {BUNDLED[name]: data for name, data in inputs.items()}
    files[b.METRICS_FILE] = _json_bytes(metrics)
    files[b.LINEAGE_FILE] = _json_bytes(record)
    files[b.INFO_FILE] = _json_bytes({**info, "model_name": model_name, "version": version, "created_at": created_at})
    return files


def register(
    artifacts: Mapping[str, Any],
    config: Mapping[str, Section | dict],
    registry: RegistrySection,
    target_task: str = "binary",
    search: Mapping | None = None,
) -> Registered:
    """Publishes the trained model with its schema, metrics, card and lineage as a new version.

    Args:
        artifacts: every name in INPUT_ARTIFACTS -> an artifact (`.path`, `.uri`, `.metadata`).
        config: section name -> the parsed section (recorded in lineage.json, passwords redacted).
        registry: where to publish and under which model name.
        target_task: the task, used when the model's metadata does not state it.
        search: the tune step's `search` metadata (tuned pipeline), recorded in lineage.json.

    Returns:
        The published version; its files were read back and verified.
    """
    check_inputs(artifacts)
    inputs = {name: _read_input(name, artifacts[name]) for name in BUNDLED}
    try:
        json.loads(inputs["schema"])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"schema: {artifacts['schema'].path} is not valid JSON ({err}); rerun validate_data") from None
    info = model_info(dict(artifacts["trained_model"].metadata or {}), inputs["trained_model"], target_task)
    metrics = numeric_metrics(artifacts["metrics"].metadata)
    if not metrics:
        raise DataError("metrics: the metrics artifact holds no numeric metric; rerun evaluate_model")
    sections = {
        name: redact(value.model_dump(mode="json") if isinstance(value, Section) else dict(value))
        for name, value in config.items()
    }
    created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    store = Registry(registry.store)
    version = store.publish(
        registry.model_name,
        lambda v: bundle_files(
            model_name=registry.model_name, version=v, created_at=created_at, artifacts=artifacts,
            inputs=inputs, info=info, metrics=metrics, config=sections, search=search,
        ),
    )
    # Read back what the store now holds: a registration is only reported once it verifies.
    manifest, files = store.read_verified(registry.model_name, version)
    return Registered(registry.model_name, version, store.uri(registry.model_name, version), manifest, files)


def write_local_copy(registered: Registered, path: str) -> None:
    """Writes the verified version (MANIFEST included) into a local directory, e.g. the KFP output."""
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    for name, data in {**registered.files, MANIFEST: _json_bytes(registered.manifest)}.items():
        storage.atomic_write_local(target / name, data)


def _json_bytes(value) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()

