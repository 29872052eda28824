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
from keel.components._common import lineage
from keel.components._common.config import GovernanceSection, RegistrySection, Section
from keel.components._common.errors import DataError, StorageError
from keel.components._common.registry import bundle as b
from keel.components._common.registry import stages
from keel.components._common.registry.registry import Registry, export_version

# Every input artifact of register_model; each one appears in lineage.json.
INPUT_ARTIFACTS = ("trained_model", "schema", "metrics", "fairness_metrics", "explainer", "card_md", "card_html",
                   "raw", "valid", "cleaned", "train", "test", "transformer")
# Inputs whose file goes into the bundle, and under which name.
BUNDLED = {"trained_model": b.MODEL_FILE, "schema": b.SCHEMA_FILE, "card_md": b.CARD_MD_FILE, "card_html": b.CARD_HTML_FILE,
           "explainer": b.EXPLAINER_FILE}


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
    stage: str = "candidate"
    gates: dict = field(default_factory=dict)

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


def automatic_gates(artifacts: Mapping[str, Any], governance: GovernanceSection) -> dict[str, dict]:
    """The gates a version passed on its way in, as the stage log records them (keel.components._common.registry.stages).

    metrics and fairness: the evaluate and assess_fairness verdicts (the pipeline registers only when
    both passed, so a failure here means a hand-made call). validation: no row quarantined and no
    violation in validate_data, i.e. the data matched its schema (no drift from it).
    """
    valid = dict(artifacts["valid"].metadata or {})
    quarantined, violations = valid.get("rows_quarantined"), valid.get("violations")
    if not governance.require_clean_validation:
        validation = {"passed": True, "detail": "not required (governance.require_clean_validation: false)"}
    elif quarantined is None or violations is None:
        validation = {"passed": False, "detail": "valid: rows_quarantined/violations not recorded; rerun validate_data"}
    else:
        clean = int(quarantined) == 0 and int(violations) == 0
        validation = {"passed": clean, "detail": f"{_intish(quarantined)} row(s) quarantined, {_intish(violations)} violation(s)"
                      + ("" if clean else " by validate_data: the data drifted from its schema")}
    return {"metrics": gate_verdict("metrics", artifacts["metrics"]), "fairness": gate_verdict("fairness_metrics", artifacts["fairness_metrics"]),
            "validation": validation}


def gate_verdict(name: str, artifact) -> dict:
    """A step's recorded gate ({passed, failures} in its metadata) as a stage-log gate {passed, detail}."""
    gate = dict(artifact.metadata or {}).get("gate")
    if not isinstance(gate, Mapping) or "passed" not in gate:
        return {"passed": False, "detail": f"{name}: no gate verdict recorded; rerun the step that produces it"}
    failures = list(gate.get("failures") or [])
    return {"passed": bool(gate["passed"]), "detail": "; ".join(map(str, failures)) or "every limit holds"}


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
    gates: Mapping[str, dict] | None = None,
) -> dict[str, bytes]:
    """Every file of a version except MANIFEST.json (the registry writes it)."""
    record = {
        "model_name": model_name,
        "version": version,
        "created_at": created_at,
        "created_by": lineage.actor(),
        "code_version": lineage.code_version(),
        # What `keel reproduce` needs besides the config: the seeds, and what was installed.
        "seeds": lineage.seeds(config),
        "environment": lineage.environment(),
        "config": dict(config),
        "artifacts": {name: artifact_record(artifacts[name]) for name in INPUT_ARTIFACTS},
        "metrics": metrics,
        # The evaluation verdict that let this model through (absent when evaluate recorded none).
        "evaluation_gate": dict(artifacts["metrics"].metadata or {}).get("gate"),
        "fairness": _fairness_record(artifacts["fairness_metrics"]),
        "explainer": {k: dict(artifacts["explainer"].metadata or {}).get(k) for k in ("method", "reason", "output")},
        # The automatic gates the stage log starts from (stages.register_version).
        "gates": dict(gates or {}),
        "dataset": dict(artifacts["raw"].metadata or {}).get("dataset"),
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


def _fairness_record(artifact) -> dict:
    """The fairness verdict and disparity metrics per sensitive column (the group tables stay in the artifact)."""
    meta = dict(artifact.metadata or {})
    result = meta.get("fairness") or {}
    return {
        "gate": meta.get("gate"),
        "sensitive": result.get("sensitive") or [],
        "disparities": {column: (attribute or {}).get("disparities") for column, attribute in (result.get("attributes") or {}).items()},
        "four_fifths": result.get("four_fifths"),
    }


def register(
    artifacts: Mapping[str, Any],
    config: Mapping[str, Section | dict],
    registry: RegistrySection,
    target_task: str = "binary",
    search: Mapping | None = None,
    governance: GovernanceSection | None = None,
) -> Registered:
    """Publishes the trained model with its schema, metrics, card and lineage as a new version.

    Args:
        artifacts: every name in INPUT_ARTIFACTS -> an artifact (`.path`, `.uri`, `.metadata`).
        config: section name -> the parsed section (recorded in lineage.json, passwords redacted).
        registry: where to publish and under which model name.
        target_task: the task, used when the model's metadata does not state it.
        search: the tune step's `search` metadata (tuned pipeline), recorded in lineage.json.
        governance: how the version becomes approved; its automatic gates are recorded in
            lineage.json and start the version's stage log (candidate, or approved under `approval: auto`).

    Returns:
        The published version, its files read back and verified, with its stage.
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
    try:
        json.loads(inputs["explainer"])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"explainer: {artifacts['explainer'].path} is not valid JSON ({err}); rerun explain_model") from None
    governance = governance or GovernanceSection()
    gates = automatic_gates(artifacts, governance)
    created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    store = Registry(registry.store)
    version = store.publish(
        registry.model_name,
        lambda v: bundle_files(
            model_name=registry.model_name, version=v, created_at=created_at, artifacts=artifacts,
            inputs=inputs, info=info, metrics=metrics, config=sections, search=search, gates=gates,
        ),
    )
    # Read back what the store now holds: a registration is only reported once it verifies.
    manifest, files = store.read_verified(registry.model_name, version)
    stage = stages.register_version(registry.store, registry.model_name, version, gates, governance.approval)
    return Registered(registry.model_name, version, store.uri(registry.model_name, version), manifest, files, stage, gates)


def write_local_copy(registered: Registered, path: str) -> None:
    """Copies the version exactly as stored (MANIFEST.json and MANIFEST.sig included, still encrypted when
    the store's bundles are) into a local directory, e.g. the KFP output: decrypted files must never land in
    the pipeline root, and the copy verifies with load_bundle_dir like the registry itself."""
    export_version(registered.uri, path)


def _json_bytes(value) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()

