"""Compiled IR: matches the golden files, uploads as-is, and carries the config as defaults."""

from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format

from keel.components._common.images import COMPONENT_IMAGES
from keel.pipelines.kfp.compile import compile_pipelines
from keel.pipelines.config import DEFAULT_CONFIG, load_config, with_overrides

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("ir")
    return {p.stem: p for p in compile_pipelines(out)}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("KEEL_IMAGE_REGISTRY", raising=False)
        yield mp


def test_every_pipeline_matches_its_golden_ir(compiled):
    assert set(compiled) == {p.stem for p in GOLDEN.glob("*.yaml")}, "run `make golden` after adding a pipeline"
    for name, path in compiled.items():
        # Compare documents, not text: kfp's header comment prints struct
        # defaults in protobuf map order, which changes between processes.
        got, want = (list(yaml.safe_load_all(p.read_text())) for p in (path, GOLDEN / f"{name}.yaml"))
        assert got == want, (
            f"{name}: compiled IR differs from tests/golden/{name}.yaml; review the change, then `make golden`"
        )


def test_ir_parses_into_pipeline_spec_and_loads_back(compiled):
    from kfp import components
    from kfp.pipeline_spec import pipeline_spec_pb2

    names = {"training": "keel-training", "training-tuned": "keel-training-tuned", "vision": "keel-vision",
             "backfill": "keel-backfill", "monitoring": "keel-monitoring"}
    for name, path in compiled.items():
        docs = list(yaml.safe_load_all(path.read_text()))
        spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
        assert spec.pipeline_info.name == names[name]
        loaded = components.load_component_from_file(str(path))
        assert loaded.name == names[name]


def test_ir_wires_every_stage_and_gates_registration(compiled):
    doc = next(yaml.safe_load_all(compiled["training"].read_text()))
    executors = doc["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    assert images <= set(COMPONENT_IMAGES.values()) and not any(i.endswith(":latest") for i in images)
    assert not any("pip install" in " ".join(e["container"]["command"]) for e in executors.values())
    tasks = doc["root"]["dag"]["tasks"]
    assert {"ingest-data", "profile-data", "validate-data", "clean-data", "split-data", "engineer-features",
            "train-model", "evaluate-model", "assess-fairness", "explain-model", "write-model-card"} <= set(tasks)
    # Registration sits inside both gates: the metrics one, then the fairness one.
    gate = tasks["condition-1"]
    assert "evaluate-model" in gate["triggerPolicy"]["condition"]
    fairness_gate = doc["components"][gate["componentRef"]["name"]]["dag"]["tasks"]["condition-2"]
    assert "assess-fairness" in fairness_gate["triggerPolicy"]["condition"]
    inner = doc["components"][fairness_gate["componentRef"]["name"]]["dag"]["tasks"]
    assert {"register-model", "deploy-model"} <= set(inner)
    register_inputs = inner["register-model"]["inputs"]["artifacts"]
    assert register_inputs["fairness_metrics"]["componentInputArtifact"] and register_inputs["explainer"]["componentInputArtifact"]
    # Never served from KFP's cache: ingest reads a source that can change, register publishes a version.
    assert not tasks["ingest-data"]["cachingOptions"].get("enableCache")
    assert not inner["register-model"]["cachingOptions"].get("enableCache")
    assert tasks["train-model"]["cachingOptions"]["enableCache"] is True


def test_config_values_become_the_parameter_defaults(tmp_path):
    cfg = with_overrides(load_config(DEFAULT_CONFIG), {"model.family": "xgboost", "registry.store": "s3://models/keel"})
    path = compile_pipelines(tmp_path, cfg)[0]
    params = next(yaml.safe_load_all(path.read_text()))["root"]["inputDefinitions"]["parameters"]
    assert params["model"]["defaultValue"]["family"] == "xgboost"
    assert params["registry"]["defaultValue"]["store"] == "s3://models/keel"
    assert params["data"]["parameterType"] == "STRUCT"


def test_the_tuned_pipeline_searches_before_training(compiled):
    doc = next(yaml.safe_load_all(compiled["training-tuned"].read_text()))
    tasks = doc["root"]["dag"]["tasks"]
    tune = tasks["tune-hyperparameters"]
    assert set(tune["dependentTasks"]) == {"engineer-features"}
    # train_model takes the tuned model section, the tune step's return value.
    model_input = tasks["train-model"]["inputs"]["parameters"]["model"]
    assert model_input["taskOutputParameter"] == {"outputParameterKey": "Output", "producerTask": "tune-hyperparameters"}
    params = doc["root"]["inputDefinitions"]["parameters"]
    assert params["tune"]["defaultValue"]["algorithm"] == "tpe"  # the loans-tuned example's search
    # The search is recorded: the model card and the registration read the trials.
    assert tasks["write-model-card"]["inputs"]["artifacts"]["search"]["taskOutputArtifact"]["producerTask"] == "tune-hyperparameters"


def _executor_secrets(doc) -> dict[str, dict[str, list]]:
    """Task executor label -> Secret name -> env variables, from the kfp-kubernetes platform spec."""
    executors = doc[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {label: {s["secretName"]: sorted(k["envVar"] for k in s["keyToEnv"]) for s in spec.get("secretAsEnv", [])}
            for label, spec in executors.items()}


def test_credentials_come_from_secrets_by_reference_never_by_value(compiled, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "pg-secret-not-in-ir")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret-not-in-ir")
    for name, path in compiled.items():
        text = path.read_text()
        assert "pg-secret-not-in-ir" not in text and "s3-secret-not-in-ir" not in text
        secrets = _executor_secrets(list(yaml.safe_load_all(text)))
        # Every step gets the S3 keys (optional: a run without an s3:// store needs no Secret) ...
        assert all(s.get("keel-s3-credentials") == ["AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "AWS_SECRET_ACCESS_KEY",
                                                    "KEEL_S3_SSE", "KEEL_S3_SSE_KMS_KEY_ID"]
                   for s in secrets.values()), name
        # ... and only the steps that open a database get its passwords.
        with_source = {label for label, s in secrets.items() if "keel-source-credentials" in s}
        expected = {"training": {"exec-ingest-data"}, "training-tuned": {"exec-ingest-data"}, "vision": set(),
                    "backfill": {"exec-ingest-partition", "exec-publish-partition"}, "monitoring": set()}[name]
        assert with_source == expected, name
        # ... and each governance key reaches only the step that uses it: PII to ingest, bundle keys to register.
        keys = {label: s["keel-governance-keys"] for label, s in secrets.items() if "keel-governance-keys" in s}
        expected = {"training": {"exec-ingest-data": ["KEEL_PII_KEY"], "exec-register-model": ["KEEL_BUNDLE_KEY", "KEEL_SIGNING_KEY"]},
                    "vision": {"exec-register-image-model": ["KEEL_BUNDLE_KEY", "KEEL_SIGNING_KEY"]},
                    "backfill": {"exec-ingest-partition": ["KEEL_PII_KEY"]},
                    # collect_window loads the bundle as a predictor does: decrypt and verify, never sign
                    "monitoring": {"exec-collect-window": ["KEEL_BUNDLE_KEY", "KEEL_VERIFY_KEY"]}}
        assert keys == expected.get(name, expected["training"]), name
    doc = list(yaml.safe_load_all(compiled["backfill"].read_text()))
    source = doc[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-ingest-partition"]["secretAsEnv"]
    assert {s["secretName"]: s["optional"] for s in source} == {"keel-s3-credentials": True, "keel-source-credentials": True,
                                                                "keel-governance-keys": True}


def test_the_backfill_fans_out_over_planned_partitions(compiled):
    doc = next(yaml.safe_load_all(compiled["backfill"].read_text()))
    params = doc["root"]["inputDefinitions"]["parameters"]
    assert params["execution_date"]["parameterType"] == "STRING" and params["execution_date"]["defaultValue"] == "2013-12-31"
    assert params["backfill"]["defaultValue"]["date_column"] == "time_hour"
    loop = doc["root"]["dag"]["tasks"]["for-loop-1"]
    assert loop["iteratorPolicy"]["parallelismLimit"] == 4
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("plan-partitions-Output")
    inner = doc["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"ingest-partition", "validate-data", "clean-data", "publish-partition"}
    assert not inner["ingest-partition"]["cachingOptions"].get("enableCache")
    assert inner["clean-data"]["dependentTasks"] == ["validate-data"]


def test_the_monitoring_window_ends_at_a_run_parameter_and_is_never_cached(compiled):
    doc = next(yaml.safe_load_all(compiled["monitoring"].read_text()))
    assert set(doc["root"]["inputDefinitions"]["parameters"]) == {"monitoring", "registry", "execution_date"}
    tasks = doc["root"]["dag"]["tasks"]
    assert set(tasks) == {"collect-window", "check-window"}
    assert tasks["check-window"]["dependentTasks"] == ["collect-window"]
    # New traffic and labels arrive under the same parameters: a cached collect would check yesterday's window.
    assert tasks["collect-window"]["cachingOptions"] == {}
    outputs = doc["components"]["comp-check-window"]["outputDefinitions"]
    # The returned verdict and retrain are what a condition (dsl.If) reads; the JSON document is an artifact.
    assert set(outputs["parameters"]) == {"verdict", "retrain"}
    assert {"report", "drift_report", "metrics", "verdict_json"} <= set(outputs["artifacts"])
