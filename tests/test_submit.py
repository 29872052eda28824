"""`keel submit` and `keel schedule` against a fake KFP v2beta1 API: the exact requests kfp.Client sends
for them, and one `keel: error:` line (exit 2, no traceback) for every network, auth and flag problem.

A contract test, not a cluster test: tests/kfp_api_server.py answers like the KFP API server and
records each request. The commands run in-process through the `keel` CLI's main, and in a subprocess (`python -m
keel.pipelines`) where a traceback could leak.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from keel.components._common.images import BASE_IMAGE, KEEL_VERSION
from keel.components._common.k8s_schema import validate_manifest
from keel.pipelines.config import CONFIG_DIR, DEFAULT_CONFIG, load_config
from keel.pipelines.kfp.connection import IN_CLUSTER_HOST, POLL_ENV, connection_from_args
from keel.pipelines.cli.main import _parser, main
from keel.pipelines.kfp.submit import EXIT_TIMEOUT

# --import-mode=importlib puts nothing on sys.path, so the server module is loaded from its file.
_spec = importlib.util.spec_from_file_location("kfp_api_server", Path(__file__).with_name("kfp_api_server.py"))
kfp_api_server = sys.modules.setdefault("kfp_api_server", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(kfp_api_server)
FakeKfp = kfp_api_server.FakeKfp

API = "/apis/v2beta1"
TUNED_CONFIG = CONFIG_DIR / "loans-tuned.yaml"
UNUSED_HOST = "http://127.0.0.1:9"  # flag errors must be found before any request


@pytest.fixture(autouse=True)
def _environment(monkeypatch, tmp_path):
    for name in ("KF_PIPELINES_TOKEN", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-sa-token"))  # not in a pod, even on a CI runner
    monkeypatch.setenv(POLL_ENV, "0.01")


@pytest.fixture
def kfp():
    with FakeKfp() as server:
        yield server


def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _one_line_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("keel: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _subprocess(*argv, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keel.pipelines", *argv], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


def _run_body(kfp) -> dict:
    [run] = kfp.find("POST", f"{API}/runs")
    return run.json


# --------------------------------------------------------------------------- submit: the requests


def test_submit_uploads_the_compiled_pipeline_and_runs_it_with_the_config(tmp_path, capsys):
    cfg = load_config(DEFAULT_CONFIG)
    arguments = cfg.pipeline_arguments()
    token = _file(tmp_path, "token", "s3cret-token\n")
    cookies = _file(tmp_path, "cookies", "authservice_session=abc123\n")
    with FakeKfp(token="s3cret-token") as kfp:
        assert main(["submit", str(DEFAULT_CONFIG), "--host", kfp.url, "--token-file", token, "--cookie-file", cookies]) == 0

    [upload] = kfp.find("POST", f"{API}/pipelines/upload")
    assert upload.query["name"] == "keel-training" and "namespace" not in upload.query
    doc = next(yaml.safe_load_all(upload.files["uploadfile"][1]))  # then the platform spec (Secrets by name)
    assert doc["pipelineInfo"]["name"] == "keel-training"
    parameters = doc["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == set(arguments) and "tune" not in parameters
    assert {name: parameters[name]["defaultValue"] for name in arguments} == arguments  # the config's values as defaults

    [version] = kfp.find("POST", f"{API}/pipelines/upload_version")
    pipeline_id = next(iter(kfp.pipelines))
    assert version.query["pipelineid"] == pipeline_id
    assert re.fullmatch(rf"{re.escape(KEEL_VERSION)}-[0-9a-f]{{12}}", version.query["name"])
    assert version.files["uploadfile"][1] == upload.files["uploadfile"][1]

    [experiment] = kfp.find("POST", f"{API}/experiments")
    assert experiment.json["display_name"] == cfg.name
    body = _run_body(kfp)
    version_id = kfp.versions[pipeline_id][-1]["pipeline_version_id"]
    assert body["display_name"].startswith(f"{cfg.name}-")
    assert body["experiment_id"] == next(iter(kfp.experiments))
    assert body["pipeline_version_reference"] == {"pipeline_id": pipeline_id, "pipeline_version_id": version_id}
    assert body["runtime_config"]["parameters"] == arguments

    for request in kfp.requests:  # the token from the file and the cookies on every request
        assert request.headers["authorization"] == "Bearer s3cret-token", request.path
        assert request.headers["cookie"] == "authservice_session=abc123", request.path
    out = capsys.readouterr().out
    run_id = next(iter(kfp.runs))
    assert f"{kfp.url}/#/runs/details/{run_id}" in out
    assert "Run details:" not in out and "Experiment details:" not in out  # kfp's own prints are not Keel's output


def test_a_second_submit_reuses_the_pipeline_and_a_changed_config_adds_a_version(kfp, tmp_path):
    assert main(["submit", "--host", kfp.url]) == 0
    assert main(["submit", "--host", kfp.url]) == 0
    assert len(kfp.find("POST", f"{API}/pipelines/upload")) == 1
    assert len(kfp.find("POST", f"{API}/pipelines/upload_version")) == 1
    first, second = (r.json["pipeline_version_reference"] for r in kfp.find("POST", f"{API}/runs"))
    assert first == second
    assert len(kfp.find("POST", f"{API}/experiments")) == 1  # found by name the second time

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["model"]["seed"] = 7
    changed = _file(tmp_path, "changed.yaml", yaml.safe_dump(raw))
    assert main(["submit", changed, "--host", kfp.url]) == 0
    assert len(kfp.find("POST", f"{API}/pipelines/upload")) == 1
    old, new = (r.query["name"] for r in kfp.find("POST", f"{API}/pipelines/upload_version"))
    assert old != new and new.startswith(f"{KEEL_VERSION}-")
    assert kfp.find("POST", f"{API}/runs")[-1].json["runtime_config"]["parameters"]["model"]["seed"] == 7


def test_a_tuned_config_runs_the_tuned_pipeline_with_its_search(kfp):
    cfg = load_config(TUNED_CONFIG)
    assert main(["submit", str(TUNED_CONFIG), "--host", kfp.url, "--experiment", "hpo", "--run-name", "nightly"]) == 0
    [upload] = kfp.find("POST", f"{API}/pipelines/upload")
    assert upload.query["name"] == "keel-training-tuned"
    assert next(yaml.safe_load_all(upload.files["uploadfile"][1]))["pipelineInfo"]["name"] == "keel-training-tuned"
    body = _run_body(kfp)
    assert body["display_name"] == "nightly"
    assert body["runtime_config"]["parameters"] == cfg.pipeline_arguments()
    assert body["runtime_config"]["parameters"]["tune"] == cfg.tune.model_dump(mode="json", exclude_none=True)
    assert kfp.find("POST", f"{API}/experiments")[0].json["display_name"] == "hpo"


def test_the_namespace_reaches_the_upload_the_experiment_and_the_lookups():
    with FakeKfp(multi_user=True) as kfp:
        assert main(["submit", "--host", kfp.url, "--namespace", "team-a"]) == 0
    assert kfp.find("POST", f"{API}/pipelines/upload")[0].query["namespace"] == "team-a"
    assert kfp.find("GET", f"{API}/pipelines")[0].query["namespace"] == "team-a"
    assert kfp.find("GET", f"{API}/experiments")[0].query["namespace"] == "team-a"
    assert kfp.find("POST", f"{API}/experiments")[0].json["namespace"] == "team-a"


def test_multi_user_kfp_needs_a_namespace(capsys):
    with FakeKfp(multi_user=True) as kfp:
        err = _one_line_error(capsys, "submit", "--host", kfp.url)
    assert "--namespace" in err and "multi-user" in err
    assert not kfp.find("POST", f"{API}/pipelines/upload")


def test_a_host_with_a_path_prefix_and_a_trailing_slash(capsys):
    with FakeKfp(prefix="/pipeline") as kfp:  # the Kubeflow dashboard serves the API under /pipeline
        assert main(["submit", "--host", kfp.url + "/"]) == 0
    assert f"{kfp.url}/#/runs/details/{next(iter(kfp.runs))}" in capsys.readouterr().out
    assert all(r.path.startswith(API) for r in kfp.requests)


def test_the_token_from_the_environment_and_a_netscape_cookie_jar(kfp, tmp_path, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "env-token")
    jar = _file(tmp_path, "jar.txt", "# Netscape HTTP Cookie File\n"
                "#HttpOnly_kf.example.com\tFALSE\t/\tTRUE\t0\toauth2_proxy\tp1\n"
                "kf.example.com\tFALSE\t/\tTRUE\t0\tauthservice_session\ts2\n")
    assert main(["submit", "--host", kfp.url, "--cookie-file", jar]) == 0
    assert {r.headers["authorization"] for r in kfp.requests} == {"Bearer env-token"}
    assert {r.headers["cookie"] for r in kfp.requests} == {"oauth2_proxy=p1; authservice_session=s2"}


def test_in_cluster_authenticates_with_the_projected_service_account_token(kfp, tmp_path, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", _file(tmp_path, "sa-token", "projected-token\n"))
    assert main(["submit", "--in-cluster", "--host", kfp.url]) == 0
    assert {r.headers["authorization"] for r in kfp.requests} == {"Bearer projected-token"}


def _parse(*argv):
    return _parser().parse_args(list(argv))


def test_in_a_pod_without_host_the_in_cluster_service_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", _file(tmp_path, "sa-token", "t\n"))
    conn = connection_from_args(_parse("submit"))
    assert conn.host == IN_CLUSTER_HOST and conn.sa_token_path == str(tmp_path / "sa-token") and conn.token is None


# --------------------------------------------------------------------------- submit --wait


def test_wait_prints_each_state_change_and_exits_0(capsys):
    tasks = [{"ingest-data": "RUNNING"}, {"ingest-data": "SUCCEEDED", "train-model": "RUNNING"},
             {"ingest-data": "SUCCEEDED", "train-model": "SUCCEEDED"}]
    with FakeKfp(run_states=("RUNNING", "RUNNING", "SUCCEEDED"), task_states=tasks) as kfp:
        assert main(["submit", "--host", kfp.url, "--wait"]) == 0
    assert len(kfp.find("GET", f"{API}/runs/[^/]+")) == 3
    lines = capsys.readouterr().out.splitlines()
    run_states = [line.rsplit(": ", 1)[-1] for line in lines if re.match(r"keel: run \S+: \w+ \(\d+s\)$", line)]
    assert run_states == ["RUNNING (0s)"]  # one line per change, not one per poll
    assert [line for line in lines if line.startswith("keel:   ")] == [
        "keel:   ingest-data: RUNNING", "keel:   ingest-data: SUCCEEDED", "keel:   train-model: RUNNING", "keel:   train-model: SUCCEEDED"]
    assert "SUCCEEDED in" in lines[-1] and f"{kfp.url}/#/runs/details/" in lines[-1]


def test_a_failed_run_exits_1_with_its_error(capsys):
    with FakeKfp(run_states=("RUNNING", "FAILED")) as kfp:
        assert main(["submit", "--host", kfp.url, "--wait"]) == 1
    err = capsys.readouterr().err
    assert "FAILED: task train-model failed" in err and f"/#/runs/details/{next(iter(kfp.runs))}" in err


def test_a_run_still_going_at_the_timeout_exits_124(capsys):
    with FakeKfp(run_states=("RUNNING",)) as kfp:
        assert main(["submit", "--host", kfp.url, "--wait", "--timeout", "0.05"]) == EXIT_TIMEOUT
    assert "still RUNNING after --timeout 0.05 s" in capsys.readouterr().err


def test_wait_rides_out_a_restarting_api_server_but_not_a_dead_one(kfp, capsys):
    kfp.fail_next += [("GET", f"{API}/runs/.+", 503)] * 2
    assert main(["submit", "--host", kfp.url, "--wait"]) == 0
    assert len(kfp.find("GET", f"{API}/runs/.+")) == 5
    kfp.fail_next += [("GET", f"{API}/runs/.+", 503)] * 4
    err = _one_line_error(capsys, "submit", "--host", kfp.url, "--wait")
    assert "following run" in err and "503" in err


# --------------------------------------------------------------------------- submit: failures are one line


def test_a_refused_port_is_one_line_in_a_subprocess():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed again: nothing listens
    result = _subprocess("submit", "--host", host)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"keel: error: connecting: connection refused by {host}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_rejected_token_is_one_line_in_a_subprocess(tmp_path):
    with FakeKfp(token="right") as kfp:
        result = _subprocess("submit", "--host", kfp.url, "--token-file", _file(tmp_path, "t", "wrong\n"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert f"{kfp.url} rejected the credentials (401" in result.stderr and "--token-file" in result.stderr
    assert [r.headers["authorization"] for r in kfp.requests] == ["Bearer wrong"]  # one request, no retries


@pytest.mark.parametrize("answer, message", [
    ((404, {"Content-Type": "text/html"}, b"<html>Not here</html>"), "has no Kubeflow Pipelines v2 API (404 Not Found); give --host"),
    ((200, {"Content-Type": "text/html"}, b"<html>dashboard</html>"),
     "is not the Kubeflow Pipelines API (GET /apis/v2beta1/healthz answered text/html"),
    ((302, {"Location": "https://kf.example.com/dex/auth?client_id=kubeflow"}, b""), "redirected to https://kf.example.com/dex/auth"),
    ((403, {"Content-Type": "application/json"}, b'{"error": "RBAC: access denied", "code": 7}'), "403 Forbidden: RBAC: access denied"),
    ((503, {"Content-Type": "text/plain"}, b"upstream connect error"), "failed (503 Service Unavailable)"),
], ids=["404-not-kfp", "html-dashboard", "login-redirect", "403", "503"])
def test_a_server_that_is_not_a_working_kfp_api_is_one_line(capsys, answer, message):
    with FakeKfp(answer_all=answer) as kfp:
        err = _one_line_error(capsys, "submit", "--host", kfp.url)
    assert message in err and kfp.url in err
    assert len(kfp.requests) == 1  # the health check, not followed to a login page nor retried


def test_tls_and_dns_failures_are_one_line(kfp, capsys):
    https = kfp.url.replace("http://", "https://")  # TLS to a plain-HTTP server
    err = _one_line_error(capsys, "submit", "--host", https)
    assert f"TLS with {https} failed" in err and "--ca-cert" in err
    err = _one_line_error(capsys, "submit", "--host", "http://kfp.invalid:8888")
    assert "cannot resolve the host name in http://kfp.invalid:8888" in err


@pytest.mark.slow
def test_a_host_that_never_answers_is_one_line(capsys):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        err = _one_line_error(capsys, "submit", "--host", host)
    assert f"{host} accepted the connection but did not answer in time" in err


@pytest.mark.parametrize("argv, files, message", [
    (["--host", "kf.example.com"], {}, "--host: 'kf.example.com' is not an http(s) URL; write the scheme, e.g. https://kf.example.com"),
    (["--host", "http://kf:99999"], {}, "--host: 'http://kf:99999' has an invalid port"),
    ([], {}, "--host: required outside a cluster pod"),
    (["--host", UNUSED_HOST, "--timeout", "0"], {}, "--timeout: 0;"),
    (["--host", UNUSED_HOST, "--token-file", "{missing}"], {}, "--token-file: {missing}: no such file"),
    (["--host", UNUSED_HOST, "--token-file", "{tmp}"], {}, "is a directory"),
    (["--host", UNUSED_HOST, "--token-file", "{token}"], {"token": "\n"}, "--token-file: {token}: empty"),
    (["--host", UNUSED_HOST, "--token-file", "{token}"], {"token": "two words\n"}, "more than one word or line"),
    (["--host", UNUSED_HOST, "--cookie-file", "{cookies}"], {"cookies": "session\n"},
     "--cookie-file: {cookies} line 1: expected name=value"),
    (["--host", UNUSED_HOST, "--namespace", "Team_A"], {}, "--namespace: 'Team_A' is not a Kubernetes namespace name"),
    (["--host", UNUSED_HOST, "--ca-cert", "{missing}"], {}, "--ca-cert: {missing}: no such file"),
    (["--host", UNUSED_HOST, "--experiment", " "], {}, "--experiment: ' '"),
    (["--in-cluster", "--token-file", "{token}"], {"token": "t"}, "--in-cluster: the pod's service-account token authenticates"),
    (["--in-cluster"], {}, "--in-cluster: {tmp}/no-sa-token: no such file; mount a projected service-account token"),
    (["{missing}", "--host", UNUSED_HOST], {}, "{missing}: config file not found"),
], ids=lambda value: None)
def test_bad_flags_are_one_line_before_any_request(capsys, tmp_path, argv, files, message):
    names = {"missing": str(tmp_path / "missing"), "tmp": str(tmp_path)}
    names.update({name: _file(tmp_path, name, text) for name, text in files.items()})
    err = _one_line_error(capsys, "submit", *[arg.format(**names) for arg in argv])
    assert message.format(**names) in err


def test_a_bad_poll_interval_names_its_variable(capsys, monkeypatch):
    monkeypatch.setenv(POLL_ENV, "soon")
    assert f"{POLL_ENV}: 'soon'" in _one_line_error(capsys, "submit", "--host", UNUSED_HOST)


# --------------------------------------------------------------------------- schedule


def test_schedule_creates_a_recurring_run(kfp, capsys):
    cfg = load_config(DEFAULT_CONFIG)
    assert main(["schedule", "--host", kfp.url, "--cron", "0 0 3 * * *", "--max-concurrency", "3", "--catchup",
                 "--start", "2025-01-01T00:00:00+01:00", "--end", "2025-12-31T00:00:00Z"]) == 0
    [request] = kfp.find("POST", f"{API}/recurringruns")
    body = request.json
    pipeline_id = next(iter(kfp.pipelines))
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *", "start_time": "2024-12-31T23:00:00Z",
                                                 "end_time": "2025-12-31T00:00:00Z"}}
    assert body["max_concurrency"] == 3 and body["no_catchup"] is False and body["mode"] == "ENABLE"
    assert body["pipeline_version_reference"] == {"pipeline_id": pipeline_id,
                                                  "pipeline_version_id": kfp.versions[pipeline_id][-1]["pipeline_version_id"]}
    assert body["runtime_config"]["parameters"] == cfg.pipeline_arguments()
    assert body["display_name"] == cfg.name and body["experiment_id"] == next(iter(kfp.experiments))
    assert f"{kfp.url}/#/recurringrun/details/{next(iter(kfp.recurring_runs))}" in capsys.readouterr().out


def test_a_five_field_cron_gets_seconds_and_no_catchup_is_the_default(kfp, capsys):
    assert main(["schedule", "--host", kfp.url, "--cron", "30 2 * * MON-FRI", "--run-name", "weekdays"]) == 0
    body = kfp.find("POST", f"{API}/recurringruns")[0].json
    assert body["trigger"]["cron_schedule"] == {"cron": "0 30 2 * * MON-FRI"}
    assert body["no_catchup"] is True and body["max_concurrency"] == 1 and body["display_name"] == "weekdays"
    assert "runs as '0 30 2 * * MON-FRI'" in capsys.readouterr().out


def test_scheduling_the_same_name_twice_is_refused(kfp, capsys):
    assert main(["schedule", "--host", kfp.url, "--cron", "@daily"]) == 0
    err = _one_line_error(capsys, "schedule", "--host", kfp.url, "--cron", "@daily")
    assert "already has a recurring run 'loans-high-risk'" in err
    assert len(kfp.recurring_runs) == 1


@pytest.mark.parametrize("argv, message", [
    (["--cron", "0 3 * *"], "--cron: '0 3 * *' has 4 fields; KFP's cron has six fields, seconds first"),
    (["--cron", "0 61 3 * * *"], "--cron: '61' is not a valid minutes field (0-59"),
    (["--cron", "0 0 3 * * 7"], "'7' is not a valid day of week field (0-6, or names like SUN"),
    (["--cron", "0 0 3 * FOO *"], "'FOO' is not a valid month field"),
    (["--cron", "*/0 * * * *"], "'*/0' is not a valid minutes field"),
    (["--cron", "@every 5m"], "--cron: '@every 5m' has 2 fields"),
    (["--cron", "@daily", "--max-concurrency", "0"], "--max-concurrency: 0; KFP allows 1 to 10"),
    (["--cron", "@daily", "--max-concurrency", "11"], "--max-concurrency: 11"),
    (["--cron", "@daily", "--start", "tomorrow"], "--start: 'tomorrow' is not an ISO 8601 time"),
    (["--cron", "@daily", "--start", "2025-02-01", "--end", "2025-01-01"], "--end: 2025-01-01 is not after --start 2025-02-01"),
    (["--cron", "@daily", "--service-account", "sa"], "--service-account: only with --emit"),
    (["--cron", "15 0 3 * * *", "--emit", "{tmp}/out.yaml"], "--cron: a Kubernetes CronJob cannot run at second '15'"),
    (["--cron", "30 0 3 * * *", "--emit", "{tmp}/out.yaml"],
     "--cron: a Kubernetes CronJob cannot run at second '30'; with --emit use seconds 0"),
    (["--cron", "@daily", "--emit", "{tmp}/out.yaml", "--token-file", "{tmp}/t"], "--token-file: not with --emit"),
    (["--cron", "@daily", "--emit", "{tmp}/out.yaml", "--start", "2025-01-01"], "--start: not with --emit"),
    (["--cron", "@daily", "--emit", "{tmp}/no/such/dir/out.yaml"], "--emit: {tmp}/no/such/dir is not a directory"),
], ids=lambda value: None)
def test_bad_schedule_flags_are_one_line(capsys, tmp_path, argv, message):
    err = _one_line_error(capsys, "schedule", "--host", UNUSED_HOST, *[a.format(tmp=tmp_path) for a in argv])
    assert message.format(tmp=tmp_path) in err


# --------------------------------------------------------------------------- schedule --emit


def _emit(tmp_path, *argv) -> tuple[str, list[dict]]:
    out = tmp_path / "keel-schedule.yaml"
    assert main(["schedule", str(DEFAULT_CONFIG), "--emit", str(out), *argv]) == 0
    text = out.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the temporary file was renamed
    return text, list(yaml.safe_load_all(text))


def test_emit_writes_a_valid_restricted_cronjob_and_its_config(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "do-not-leak-this-token")
    text, docs = _emit(tmp_path, "--cron", "0 0 3 * * *")
    assert [validate_manifest(doc) for doc in docs] == [[], []]
    config_map, cron_job = docs
    assert [d["kind"] for d in docs] == ["ConfigMap", "CronJob"]
    assert config_map["data"] == {"keel-loans-high-risk.yaml": DEFAULT_CONFIG.read_text()}

    spec = cron_job["spec"]
    assert spec["schedule"] == "0 3 * * *" and spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] == 300
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == "keel-pipeline-runner" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    assert container["image"] == BASE_IMAGE
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["command"] == ["python", "-m", "keel.pipelines", "submit", "/config/keel-loans-high-risk.yaml", "--in-cluster",
                                    "--experiment", "loans-high-risk", "--wait", "--timeout", "3600"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["kfp-token"]["projected"]["sources"] == [
        {"serviceAccountToken": {"path": "token", "audience": "pipelines.kubeflow.org", "expirationSeconds": 7200}}]
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["kfp-token"] == "/var/run/secrets/kubeflow/pipelines" and mounts["config"] == "/config"
    assert "do-not-leak-this-token" not in text and "Secret" not in [d["kind"] for d in docs]
    assert "secretKeyRef" not in text and "Authorization" not in text


def test_emit_with_concurrency_catchup_host_and_namespace(tmp_path):
    text, (config_map, cron_job) = _emit(tmp_path, "--cron", "@hourly", "--max-concurrency", "3", "--catchup", "--namespace", "team-a",
                                         "--host", "https://kf.example.com/pipeline/", "--service-account", "runner",
                                         "--experiment", "nightly", "--timeout", "600")
    assert validate_manifest(cron_job) == [] and validate_manifest(config_map) == []
    spec = cron_job["spec"]
    assert spec["schedule"] == "0 * * * *" and spec["concurrencyPolicy"] == "Allow" and "startingDeadlineSeconds" not in spec
    assert "not enforced" in cron_job["metadata"]["annotations"]["keel.ml/max-concurrency"]
    assert "max concurrency 3 is NOT enforced" in text  # said in the file's header too
    assert cron_job["metadata"]["namespace"] == config_map["metadata"]["namespace"] == "team-a"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "runner"
    command = pod["containers"][0]["command"]
    assert command[-6:] == ["--timeout", "600", "--host", "https://kf.example.com/pipeline", "--namespace", "team-a"]


def test_the_emitted_command_is_a_valid_in_cluster_submit(tmp_path, monkeypatch):
    _, (_, cron_job) = _emit(tmp_path, "--cron", "@daily", "--namespace", "team-a")
    command = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:4] == ["python", "-m", "keel.pipelines", "submit"]
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", _file(tmp_path, "sa-token", "t\n"))  # what the projected volume provides
    args = _parse(*command[3:])
    assert args.wait and args.timeout == 3600 and args.experiment == "loans-high-risk"
    conn = connection_from_args(args)
    assert conn.host == IN_CLUSTER_HOST and conn.namespace == "team-a" and conn.sa_token_path


def test_help_describes_both_commands():
    result = _subprocess("--help")
    assert result.returncode == 0 and "submit" in result.stdout and "schedule" in result.stdout
    assert "--token-file" in _subprocess("submit", "--help").stdout
    assert "--emit" in _subprocess("schedule", "--help").stdout
