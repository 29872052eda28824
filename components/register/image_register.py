"""Registering an image model: the model directory's files, metrics, card and lineage as one version.

Same registry, same MANIFEST.json verification as tabular bundles
(register.py); bundle.json says `"modality": "image"` so the predictor
loads it with the image runtime instead of unpickling a pipeline.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Mapping

from keel.components._common import lineage
from keel.components._common.config import RegistrySection, Section
from keel.components._common.errors import DataError
from keel.components._common.registry import bundle as b
from keel.components._common.registry import stages
from keel.components.register.image_card import render
from keel.components.register.register import Registered, _json_bytes, artifact_record, gate_verdict, numeric_metrics, redact
from keel.components._common.registry.registry import Registry
from keel.components._common.deep_model.artifact import MODEL_INFO, read_info

# Every input artifact; each appears in lineage.json.
IMAGE_INPUTS = ("model", "trained_model", "metrics", "train", "validation", "test")


def model_files(directory: str | Path) -> tuple[dict, dict[str, bytes]]:
    """model.json and every export it lists (flat files), checked present."""
    info = read_info(directory)
    files = {MODEL_INFO: (Path(directory) / MODEL_INFO).read_bytes()}
    for fmt, name in sorted(info["files"].items()):
        path = Path(directory) / name
        if not path.is_file():
            raise DataError(f"{path}: model.json lists it as the {fmt} export but it is missing; rerun the step that made {directory}")
        files[name] = path.read_bytes()
    if info["serving_format"] not in info["files"]:
        raise DataError(f"{Path(directory) / MODEL_INFO}: serving_format {info['serving_format']!r} is not among its files")
    return info, files


def register_image(artifacts: Mapping[str, Any], config: Mapping[str, Section | dict], registry: RegistrySection,
                   card: Mapping) -> Registered:
    """Publishes the image model as a new version and reads it back verified.

    Args:
        artifacts: every name in IMAGE_INPUTS -> an artifact (`.path`, `.uri`, `.metadata`); `model` is
            the directory that is served (the compressed one when compression ran).
        config: section name -> parsed section (recorded in lineage.json, passwords redacted).
        registry: where to publish and under which model name.
        card: the model_card config section.
    """
    missing = [n for n in IMAGE_INPUTS if n not in artifacts]
    if missing:
        raise DataError(f"register_image_model: input artifact(s) {missing} not given; every input is recorded in lineage.json")
    info, files = model_files(artifacts["model"].path)
    metrics = numeric_metrics(artifacts["metrics"].metadata)
    if not metrics:
        raise DataError("metrics: the metrics artifact holds no numeric metric; rerun evaluate_image_model")
    sections = {name: redact(value.model_dump(mode="json") if isinstance(value, Section) else dict(value))
                for name, value in config.items()}
    created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    card_md, card_html = render(info, metrics, card, registry.model_name)
    bundle_info = {"modality": "image", "task": info.get("task", "multiclass"), "classes": info["classes"],
                   "framework": info["framework"], "family": info["architecture"], "serving_format": info["serving_format"],
                   "input": info["input"]}

    # An image model is assessed on its metrics only (no sensitive attributes in pixels); a human approves it.
    gates = {"metrics": gate_verdict("metrics", artifacts["metrics"])}

    def build(version: int) -> dict[str, bytes]:
        record = {
            "model_name": registry.model_name, "version": version, "created_at": created_at,
            "created_by": lineage.actor(), "code_version": lineage.code_version(), "config": sections,
            "artifacts": {name: artifact_record(artifacts[name]) for name in IMAGE_INPUTS},
            "metrics": metrics, "training": info.get("training", {}), "history": info.get("history", []),
            "evaluation_gate": dict(artifacts["metrics"].metadata or {}).get("gate"),
            "gates": gates, "seeds": lineage.seeds(sections), "environment": lineage.environment(),
        }
        return {**files, b.METRICS_FILE: _json_bytes(metrics), b.LINEAGE_FILE: _json_bytes(record),
                b.CARD_MD_FILE: card_md.encode(), b.CARD_HTML_FILE: card_html.encode(),
                b.INFO_FILE: _json_bytes({**bundle_info, "model_name": registry.model_name, "version": version,
                                          "created_at": created_at})}

    store = Registry(registry.store)
    version = store.publish(registry.model_name, build)
    manifest, published = store.read_verified(registry.model_name, version)
    stage = stages.register_version(registry.store, registry.model_name, version, gates, "human")
    return Registered(registry.model_name, version, store.uri(registry.model_name, version), manifest, published, stage, gates)
