"""`keel models|approve|reject|deploy|rollback`, end to end on a registry (local, and S3 with a stand-in API server)."""

import argparse
import json
import sys

import pytest
import yaml

from keel.components._common.errors import KeelError
from keel.components._common.k8s_schema import validate_manifest
from testkit.kube import kube_api  # noqa: F401 (fixture)
from keel.components._common.registry import stages
from keel.components._common.registry.bundle import INFO_FILE, METRICS_FILE, MODEL_FILE
from keel.components._common.registry.registry import Registry
from keel.pipelines.cli import main as cli
from keel.pipelines.cli import models as models_cli

PASSED = {"metrics": {"passed": True, "detail": "roc_auc 0.81 >= 0.7"},
          "fairness": {"passed": True, "detail": "demographic_parity_ratio 0.91 >= 0.8"}}
UNFAIR = {**PASSED, "fairness": {"passed": False, "detail": "demographic_parity_ratio 0.62 < 0.8"}}


def keel(argv: list[str]) -> int:
    """`keel ARGV`: through cli.main once cli.py wires these commands in, else the same dispatch here."""
    if "approve" in cli.COMMANDS:
        return cli.main(argv)
    parser = argparse.ArgumentParser(prog="keel")
    models_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return models_cli.COMMANDS[args.command](args)
    except KeelError as err:
        print(f"keel: error: {err}", file=sys.stderr)
        return cli.EXIT_USER_ERROR


def user_error(capsys, argv) -> str:
    assert keel(argv) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("keel: error: ") and "\n" not in err
    return err


def register(store: str, gates=PASSED, approval="human", model="loans", roc_auc=0.81) -> int:
    """A registered version with the files `keel models` reads (the registry does not care what the model bytes are)."""
    registry = Registry(store)
    version = registry.publish(model, lambda v: {
        MODEL_FILE: f"model-{v}".encode(),
        METRICS_FILE: json.dumps({"accuracy": 0.84, "roc_auc": roc_auc, "f1": 0.52, "pr_auc": 0.5}).encode(),
        INFO_FILE: json.dumps({"model_name": model, "version": v, "created_at": f"2025-01-0{v}T10:00:00+00:00"}).encode(),
    })
    stages.register_version(store, model, version, gates, approval)
    return version


@pytest.fixture
def no_cluster(monkeypatch, tmp_path):
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_models_lists_stage_metrics_gates_and_last_event(tmp_path, capsys):
    store = str(tmp_path / "store")
    register(store, approval="auto")
    register(store, gates=UNFAIR, roc_auc=0.79)
    assert keel(["models", "loans", "--store", store]) == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["model", "version", "stage", "created"]
    assert first.split()[:5] == ["loans", "v1", "approved", "2025-01-01T10:00:00", "roc_auc=0.81"]
    assert "accuracy=0.84 f1=0.52" in first and "metrics:pass fairness:pass" in first
    assert first.endswith("approved by keel-gates at " + stages.history(store, "loans", 1)[-1]["at"][:19])
    assert second.split()[:3] == ["loans", "v2", "candidate"] and "fairness:FAIL" in second and "registered by " in second
    # Every model when none is named; one JSON record per version with --json.
    register(store, model="churn")
    assert keel(["models", "--store", store, "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["model"], r["version"], r["stage"]) for r in records] == [("churn", 1, "candidate"), ("loans", 1, "approved"),
                                                                          ("loans", 2, "candidate")]
    assert records[2]["gates"] == UNFAIR and records[1]["metrics"] == {"roc_auc": 0.81, "accuracy": 0.84, "f1": 0.52}
    assert keel(["models", "--store", str(tmp_path / "empty")]) == 0
    assert "no registered versions in" in capsys.readouterr().out


def test_approve_and_reject_record_who_and_why(tmp_path, capsys):
    store = str(tmp_path / "store")
    v1, v2 = register(store), register(store)
    assert keel(["approve", "loans:v1", "--store", store, "--by", "Ada Lovelace", "--reason", "reviewed the fairness report"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("loans:v1: candidate -> approved by Ada Lovelace at ") and f"keel deploy loans:v1 --store {store}" in out
    event = stages.history(store, "loans", v1)[-1]
    assert (event["to"], event["by"], event["reason"]) == ("approved", "Ada Lovelace", "reviewed the fairness report")
    assert keel(["reject", "loans", "--store", store, "--by", "Ada", "--reason", "overfits"]) == 0  # NAME: its latest
    assert stages.stage(store, "loans", v2) == "archived"
    assert user_error(capsys, ["approve", "loans:v2", "--store", store, "--by", "Ada", "--reason", "changed my mind"]) == (
        "keel: error: loans:v2 is archived, it cannot move to approved; an archived version that never served cannot return; "
        "register a new version")


def test_approval_is_refused_when_a_gate_failed_or_who_and_why_are_missing(tmp_path, capsys):
    store = str(tmp_path / "store")
    register(store, gates=UNFAIR)
    err = user_error(capsys, ["approve", "loans:1", "--store", store, "--by", "Ada", "--reason", "ok"])
    assert "loans:v1: cannot be approved, gate fairness failed (fairness: demographic_parity_ratio 0.62 < 0.8)" in err
    assert "by: is empty" in user_error(capsys, ["approve", "loans:1", "--store", store, "--by", " ", "--reason", "ok"])
    assert "'keel-gates' is reserved" in user_error(capsys, ["approve", "loans:1", "--store", store, "--by", "keel-gates",
                                                             "--reason", "ok"])
    with pytest.raises(SystemExit) as exit_:
        keel(["approve", "loans:1", "--store", store, "--by", "Ada"])  # --reason is required
    assert exit_.value.code == 2 and "the following arguments are required: --reason" in capsys.readouterr().err
    assert "loans has no v7" in user_error(capsys, ["approve", "loans:v7", "--store", store, "--by", "Ada", "--reason", "ok"])
    assert len(stages.history(store, "loans")) == 1


def test_deploy_emits_approved_versions_only_and_rollback_restores(tmp_path, capsys, no_cluster):
    store, out = str(tmp_path / "store"), tmp_path / "gitops" / "isvc.yaml"
    v1 = register(store)
    err = user_error(capsys, ["deploy", "loans:v1", "--store", store, "--emit", str(out)])
    assert f"loans:v1 is a candidate, not approved; run `keel approve loans:v1 --store {store}" in err
    assert not out.exists()
    keel(["approve", "loans:v1", "--store", store, "--by", "Ada", "--reason", "ok"])
    assert keel(["deploy", "loans:v1", "--store", store, "--emit", str(out), "--by", "gitops-bot"]) == 0
    manifest = yaml.safe_load(out.read_text())
    assert validate_manifest(manifest) == []
    assert manifest["spec"]["predictor"]["model"]["storageUri"] == Registry(store).uri("loans", v1)
    event = stages.history(store, "loans", v1)[-1]
    assert (event["to"], event["by"], event["target"]) == ("production", "gitops-bot", f"manifest {out}")

    v2 = register(store, approval="auto")
    assert keel(["deploy", "loans", "--store", store, "--emit", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["metadata"]["annotations"]["keel.ml/model-version"] == "v2"
    assert (stages.production_version(store, "loans"), stages.stage(store, "loans", v1)) == (v2, "archived")
    capsys.readouterr()

    assert keel(["rollback", "loans", "--store", store, "--emit", str(out), "--by", "Ada", "--reason", "v2 drifts"]) == 0
    assert "loans: v1 is back in production" in capsys.readouterr().out
    assert yaml.safe_load(out.read_text())["spec"]["predictor"]["model"]["storageUri"] == Registry(store).uri("loans", v1)
    assert (stages.production_version(store, "loans"), stages.stage(store, "loans", v2)) == (v1, "archived")
    assert stages.history(store, "loans")[-2]["reason"] == "rollback from v2: v2 drifts"
    err = user_error(capsys, ["rollback", "loans", "--store", store, "--emit", str(out)])
    assert "loans:v1 is the first version of loans in production; there is no earlier production version" in err


def test_without_a_cluster_deploy_suggests_emit(tmp_path, capsys, no_cluster):
    store = str(tmp_path / "store")
    register(store, approval="auto")
    err = user_error(capsys, ["deploy", "loans:v1", "--store", store])
    assert "keel deploy loans:v1: no cluster configured" in err and "--emit PATH" in err
    assert stages.stage(store, "loans", 1) == "approved"  # nothing recorded


ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/keel-dev/inferenceservices"


@pytest.mark.slow  # a real S3 server (nanio)
def test_deploy_and_rollback_apply_to_the_cluster(s3_store, kube_api, monkeypatch, capsys):  # noqa: F811 (fixture)
    server, env = kube_api(("POST", ISVC, 201, None),
                           ("POST", ISVC, 409, {"message": "exists"}), ("PATCH", f"{ISVC}/loans", 200, None),
                           ("POST", ISVC, 409, {"message": "exists"}), ("PATCH", f"{ISVC}/loans", 200, None))
    monkeypatch.setenv("KUBECONFIG", env["KUBECONFIG"])
    v1, v2 = register(s3_store, approval="auto"), register(s3_store, approval="auto")
    assert keel(["deploy", "loans:v1", "--store", s3_store, "--by", "ci"]) == 0
    assert "loans:v1: InferenceService keel-dev/loans created" in capsys.readouterr().out
    assert keel(["deploy", "loans:v2", "--store", s3_store]) == 0
    assert stages.production_version(s3_store, "loans") == v2
    assert keel(["rollback", "loans", "--store", s3_store, "--reason", "latency"]) == 0
    assert stages.production_version(s3_store, "loans") == v1 and stages.stage(s3_store, "loans", v2) == "archived"
    storage_uris = [body["spec"]["predictor"]["model"]["storageUri"] for _, _, _, body in server.calls]
    assert [uri.rsplit("/", 1)[1] for uri in storage_uris] == ["v1", "v2", "v2", "v1", "v1"]
    back = stages.history(s3_store, "loans", v1)[-1]
    assert (back["to"], back["target"], back["reason"]) == ("production", "InferenceService keel-dev/loans", "rollback from v2: latency")


# -- `latest` means the latest: the newest version in the store, whichever model ------------------------------


def _age(store: str, model: str, version: int, seconds_ago: float) -> None:
    """Sets when `model` v`version` was registered (its manifest's write time), to order registrations."""
    import os
    import time

    manifest = Registry(store).uri(model, version) + "/MANIFEST.json"
    when = time.time() - seconds_ago
    os.utime(manifest, (when, when))


def test_latest_is_the_most_recently_registered_version_whichever_model(tmp_path, capsys):
    store = str(tmp_path / "store")
    register(store, model="credit-risk")
    register(store, model="credit-risk")
    register(store, model="loans")
    _age(store, "loans", 1, 30)  # loans v1 was registered before credit-risk v2, though its name sorts later
    _age(store, "credit-risk", 1, 60)
    assert keel(["approve", "latest", "--store", store, "--by", "Ada", "--reason", "ok"]) == 0
    assert capsys.readouterr().out.startswith("credit-risk:v2: candidate -> approved")
    _age(store, "credit-risk", 2, 90)  # now loans v1 is the newest
    assert keel(["reject", "latest", "--store", store, "--by", "Ada", "--reason", "no"]) == 0
    assert capsys.readouterr().out.startswith("loans:v1: candidate -> archived")
    # NAME and NAME:latest pick within one model.
    assert keel(["reject", "credit-risk:latest", "--store", store, "--by", "Ada", "--reason", "no"]) == 0
    assert capsys.readouterr().out.startswith("credit-risk:v2: approved -> archived")


def test_latest_in_an_empty_store_says_so_and_how_to_fill_it(tmp_path, capsys):
    store = str(tmp_path / "empty")
    err = user_error(capsys, ["approve", "latest", "--store", store, "--by", "Ada", "--reason", "ok"])
    assert "no model is registered in this store yet" in err and "keel run" in err
    assert keel(["models", "--store", store]) == 0
    assert "no registered versions" in capsys.readouterr().out


def test_models_lists_every_model_in_the_store(tmp_path, capsys):
    store = str(tmp_path / "store")
    register(store, model="credit-risk")
    register(store, model="loans")
    (tmp_path / "store" / "registry" / ".claims").mkdir()  # not a model
    assert keel(["models", "--store", store, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["model"], r["version"]) for r in rows] == [("credit-risk", 1), ("loans", 1)]


@pytest.mark.slow
def test_after_a_quick_path_run_in_a_fresh_directory_latest_is_that_model(tmp_path, monkeypatch, capsys, loans_sample):
    """A user's first session: `keel run --data any.csv --target y`, then every command given `latest`."""
    monkeypatch.chdir(tmp_path)  # a fresh directory: the default store ./runs is created here
    loans_sample[["annual_income", "debt_to_income", "homeownership", "loan_amount", "term", "grade"]].assign(
        risky=loans_sample["grade"].isin(["D", "E", "F", "G"]).map({True: "yes", False: "no"})).drop(
        columns="grade").to_csv("credit.csv", index=False)
    assert cli.main(["run", "--data", "credit.csv", "--target", "risky"]) in (0, cli.EXIT_GATE_FAILED)
    registered = Registry("runs").models()
    assert len(registered) == 1 and registered[0] != "loans-high-risk", registered
    name = registered[0]
    capsys.readouterr()
    assert cli.main(["lineage", "latest"]) == 0
    assert f"{name}:v1" in capsys.readouterr().out
    assert cli.main(["report", "latest"]) == 0
    assert cli.main(["models"]) == 0
    assert name in capsys.readouterr().out
    assert cli.main(["approve", "latest", "--by", "Ada", "--reason", "reviewed"]) in (0, cli.EXIT_USER_ERROR)
    out, err = capsys.readouterr()
    assert f"{name}:v1" in out + err  # approved, or refused naming this model's failed gate: either way, this model
