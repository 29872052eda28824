"""Distributed training on a cluster: the PyTorchJob (pytorchjob.py) and the step that submits it (job_component.py).

No Kubernetes API server or training operator can run on this machine, so
submission is tested against the `kube_api` stand-in (tests/testkit/kube.py):
a local HTTP server that answers the custom-object calls the real kubernetes
client makes, in order, and records them. Everything else is real: the
kubeflow-training SDK's models, the kubernetes client and its kubeconfig
loading. Waiting uses a fake clock.
"""

from __future__ import annotations

import copy
import importlib
import re

import pytest

from keel.components._common.errors import ConfigError, StorageError
from keel.components._common.images import TORCH_IMAGE
from keel.components.train_deep.pytorchjob import (
    SPEC_HASH_ANNOTATION,
    JobFailed,
    job_problems,
    render,
    run_pytorchjob,
    spec_hash,
    submit_and_wait,
)

SPEC = "s3://keel/runs/mnist-dist-20261126/train_deep/spec.json"
JOBS = "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs"
GPU_POOL = {
    "cpu": "8", "memory": "32Gi", "accelerator": "nvidia.com/gpu", "count": 1,
    "node_selector": {"nvidia.com/gpu.present": "true", "cloud.google.com/gke-nodepool": "gpu-a100"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class FakeClock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def gpu_job(**training) -> dict:
    return render(SPEC, "mnist-cnn", "team-a", {"processes": 4, **training}, GPU_POOL)


def with_status(job: dict, *conditions: tuple, replicas: dict | None = None) -> dict:
    """The job as the operator reports it: (type, status, reason, message) conditions in order."""
    out = copy.deepcopy(job)
    out["status"] = {"conditions": [{"type": t, "status": s, "reason": r, "message": m,
                                     "lastTransitionTime": "2026-11-26T10:00:00Z"} for t, s, r, m in conditions]}
    if replicas:
        out["status"]["replicaStatuses"] = replicas
    return out


CREATED = ("Created", "True", "PyTorchJobCreated", "PyTorchJob mnist-cnn is created.")
RUNNING = ("Running", "True", "PyTorchJobRunning", "PyTorchJob mnist-cnn is running.")
STOPPED = ("Running", "False", "PyTorchJobRunning", "PyTorchJob mnist-cnn is running.")
SUCCEEDED = ("Succeeded", "True", "PyTorchJobSucceeded", "PyTorchJob mnist-cnn is successfully completed.")
FAILED = ("Failed", "True", "PyTorchJobFailed",
          "PyTorchJob mnist-cnn is failed because 1 Worker replica(s) failed.\nWorker 2 exited with code 2")


# --------------------------------------------------------------------------- rendering


def test_one_master_and_three_workers_on_the_gpu_pool():
    job = gpu_job()
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert job["metadata"]["namespace"] == "team-a"
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert {kind: s["replicas"] for kind, s in specs.items()} == {"Master": 1, "Worker": 3}
    for kind, spec in specs.items():
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch", kind
        assert container["image"] == TORCH_IMAGE
        assert container["command"] == ["python3", "-m", "keel.components.train_deep.worker", "--spec", SPEC]
        assert container["envFrom"] == [{"secretRef": {"name": "keel-s3-credentials"}}]
        quantity = {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
        assert container["resources"] == {"requests": quantity, "limits": quantity}
        assert pod["nodeSelector"] == GPU_POOL["node_selector"]
        assert pod["tolerations"] == GPU_POOL["tolerations"]
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert spec["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        assert "emptyDir" in volumes[mounts["/tmp"]]
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "None", "backoffLimit": 3}
    assert job_problems(job) == []


def test_one_process_on_cpu_is_a_master_alone_with_no_accelerator():
    job = render(SPEC, "mnist-cnn", "team-a", {"processes": 1}, {})
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert list(specs) == ["Master"] and specs["Master"]["replicas"] == 1
    pod = specs["Master"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_the_name_ends_in_the_spec_hash_so_a_retry_finds_its_own_job():
    job = gpu_job()
    digest = job["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    assert digest == spec_hash(job) and job["metadata"]["name"] == f"mnist-cnn-{digest[7:15]}"
    assert gpu_job()["metadata"]["name"] == job["metadata"]["name"]  # deterministic
    other_run = render(SPEC.replace("20261126", "20261127"), "mnist-cnn", "team-a", {"processes": 4}, GPU_POOL)
    assert other_run["metadata"]["name"] != job["metadata"]["name"]
    longest = render(SPEC, "m" * 41, "team-a", {"processes": 4}, GPU_POOL)["metadata"]["name"]
    # The operator names Services <job>-worker-<i>: DNS-1035 labels of at most 63 characters.
    assert DNS_1035.match(longest) and len(f"{longest}-worker-99999") <= 63


@pytest.mark.parametrize("kwargs, field", [
    ({"training": {"processes": 0}}, r"^training\.processes: .*greater than or equal to 1"),
    ({"prefix": "MNIST_cnn"}, r"^job_name: 'MNIST_cnn' is not a DNS-1035 label"),
    ({"prefix": "9-mnist"}, r"^job_name: '9-mnist' is not a DNS-1035 label"),
    ({"prefix": "m" * 42}, r"^job_name: .* at most 41 characters"),
    ({"resources": {"count": 1}}, r"^resources\.count: 1 accelerators asked but no resources\.accelerator is named"),
    ({"resources": {"accelerator": "nvidia.com/gpu", "count": 2}}, r"^resources\.count: 2 accelerators per replica.*training\.processes"),
    ({"resources": {"gpus": 1}}, r"^resources\.gpus: unknown key"),
    ({"resources": {"memory": "lots"}}, r"^resources\.memory: "),
    ({"resources": {"tolerations": [{"key": "x", "effect": "NoScheduel"}]}}, r"^resources\.tolerations\.0\.effect: got 'NoScheduel'"),
    ({"spec_uri": "/tmp/spec.json"}, r"^spec_uri: '/tmp/spec.json' is not an s3:// URI"),
    ({"namespace": "Team_A"}, r"^namespace: 'Team_A' is not a Kubernetes namespace name"),
])
def test_bad_input_is_one_config_error_naming_the_field(kwargs, field):
    args = {"spec_uri": SPEC, "prefix": "mnist-cnn", "namespace": "team-a", "training": {"processes": 2}, "resources": {}}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=field) as err:
        render(**args)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("break_it, problem", [
    (lambda j: j["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].update(name="trainer"),
     "spec.pytorchReplicaSpecs.Worker: no container named 'pytorch'"),
    (lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas=2), "exactly one Master replica"),
    (lambda j: j["spec"]["pytorchReplicaSpecs"].pop("Master"), "exactly one Master replica"),
    (lambda j: j["spec"]["runPolicy"].update(cleanPodPolicys="None"),
     "spec.runPolicy.cleanPodPolicys: unknown field (not in KubeflowOrgV1RunPolicy); did you mean 'cleanPodPolicy'?"),
    (lambda j: j["spec"]["pytorchReplicaSpecs"]["Worker"].update(replicas="3"), "spec.pytorchReplicaSpecs.Worker.replicas: expected int"),
    (lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0].update(imagePullPolicy=None),
     "imagePullPolicy: null value"),
    (lambda j: j["spec"].pop("pytorchReplicaSpecs"), "spec.pytorchReplicaSpecs: required field missing"),
    (lambda j: j["metadata"].update(name="mnist.cnn"), "needs a DNS-1035 label"),
])
def test_job_problems_find_what_the_api_server_or_operator_would_refuse(break_it, problem):
    job = gpu_job()
    break_it(job)
    problems = job_problems(job)
    assert any(problem in p for p in problems), problems


# --------------------------------------------------------------------------- submitting and following


def test_created_then_followed_until_it_succeeds(kube_api):
    job = gpu_job()
    name = job["metadata"]["name"]
    replicas = {"Master": {"succeeded": 1}, "Worker": {"succeeded": 3}}
    server, env = kube_api(
        ("POST", JOBS, 201, None),
        ("GET", f"{JOBS}/{name}", 200, with_status(job, CREATED)),
        ("GET", f"{JOBS}/{name}", 200, with_status(job, CREATED, RUNNING, replicas={"Master": {"active": 1}, "Worker": {"active": 3}})),
        ("GET", f"{JOBS}/{name}", 200, with_status(job, CREATED, STOPPED, SUCCEEDED, replicas=replicas)),
    )
    clock, lines = FakeClock(), []
    result = submit_and_wait(job, env["KUBECONFIG"], 3600, 20, on_change=lines.append, sleep=clock.sleep, clock=clock)
    method, path, content_type, sent = server.calls[0]
    assert (method, path) == ("POST", JOBS) and sent == job and content_type == "application/json"
    assert [c[:2] for c in server.calls[1:]] == [("GET", f"{JOBS}/{name}")] * 3
    assert (result.name, result.namespace, result.state, result.adopted) == (name, "team-a", "Succeeded", False)
    assert result.replicas == replicas and clock.sleeps == [20, 20]
    assert lines == [f"PyTorchJob team-a/{name}: created",
                     f"PyTorchJob team-a/{name}: Created (no replicas reported yet)",
                     f"PyTorchJob team-a/{name}: Running (Master 1 active, 0 succeeded, 0 failed; Worker 3 active, 0 succeeded, 0 failed)",
                     f"PyTorchJob team-a/{name}: Succeeded (Master 0 active, 1 succeeded, 0 failed; Worker 0 active, 3 succeeded, 0 failed)"]


def test_a_failed_job_says_why_and_where_the_masters_log_is(kube_api):
    job = gpu_job()
    name = job["metadata"]["name"]
    _, env = kube_api(
        ("POST", JOBS, 201, None),
        ("GET", f"{JOBS}/{name}", 200, with_status(job, CREATED, STOPPED, FAILED, replicas={"Worker": {"failed": 1, "active": 2}})),
    )
    with pytest.raises(JobFailed) as err:
        submit_and_wait(job, env["KUBECONFIG"], 3600, sleep=pytest.fail)
    message = str(err.value)
    assert message.startswith(f"PyTorchJob team-a/{name} failed (PyTorchJobFailed: PyTorchJob mnist-cnn is failed because "
                              "1 Worker replica(s) failed. Worker 2 exited with code 2); Worker 2 active, 0 succeeded, 1 failed")
    assert f"`kubectl logs -n team-a {name}-master-0`" in message and "\n" not in message


def test_a_refused_job_is_one_line_with_the_api_message(kube_api):
    job = gpu_job()
    server, env = kube_api(("POST", JOBS, 403, {"message": 'pytorchjobs.kubeflow.org is forbidden: User '
                                                           '"system:serviceaccount:team-a:pipeline-runner" cannot create resource'}))
    with pytest.raises(StorageError) as err:
        submit_and_wait(job, env["KUBECONFIG"], 60, sleep=pytest.fail)
    message = str(err.value)
    assert re.fullmatch(rf"PyTorchJob team-a/{job['metadata']['name']}: the API server refused to create it \(403 Forbidden\): "
                        r"pytorchjobs\.kubeflow\.org is forbidden: User .*cannot create resource; the step's service account "
                        r"may not manage pytorchjobs\.kubeflow\.org here \(kubectl apply -k manifests/overlays/<env> grants it\)",
                        message), message
    assert len(server.calls) == 1


def test_a_cluster_without_the_training_operator_says_so(kube_api):
    _, env = kube_api(("POST", JOBS, 404, {"message": "the server could not find the requested resource"}))
    with pytest.raises(StorageError, match=r"\(404 Not Found\): the server could not find .*training operator installed"):
        submit_and_wait(gpu_job(), env["KUBECONFIG"], 60, sleep=pytest.fail)


def test_a_job_past_the_timeout_keeps_running_and_the_error_says_how_to_follow_or_delete_it(kube_api):
    job = gpu_job()
    name = job["metadata"]["name"]
    running = with_status(job, CREATED, RUNNING, replicas={"Master": {"active": 1}, "Worker": {"active": 3}})
    server, env = kube_api(("POST", JOBS, 201, None), *[("GET", f"{JOBS}/{name}", 200, running)] * 4)
    clock = FakeClock()
    with pytest.raises(StorageError) as err:
        submit_and_wait(job, env["KUBECONFIG"], 30, 10, sleep=clock.sleep, clock=clock)
    message = str(err.value)
    assert message.startswith(f"PyTorchJob team-a/{name} did not finish within 30 s (last state Running, Master 1 active")
    assert f"it keeps running: follow it with `kubectl -n team-a get pytorchjob {name}`" in message
    assert f"`kubectl -n team-a delete pytorchjob {name}`" in message and "never started" not in message
    assert clock.sleeps == [10, 10, 10] and [c[0] for c in server.calls] == ["POST"] + ["GET"] * 4  # no DELETE


def test_a_job_that_never_started_points_at_scheduling(kube_api):
    job = gpu_job()
    name = job["metadata"]["name"]
    _, env = kube_api(("POST", JOBS, 201, None), *[("GET", f"{JOBS}/{name}", 200, with_status(job, CREATED))] * 2)
    clock = FakeClock()
    with pytest.raises(StorageError, match=rf"last state Created.*never started running: `kubectl -n team-a describe pod "
                                           rf"{name}-master-0` says why \(no node with the accelerator"):
        submit_and_wait(job, env["KUBECONFIG"], 5, 5, sleep=clock.sleep, clock=clock)


def test_the_same_job_already_submitted_is_followed_not_run_twice(kube_api):
    job = gpu_job()
    name = job["metadata"]["name"]
    server, env = kube_api(
        ("POST", JOBS, 409, {"message": f'pytorchjobs.kubeflow.org "{name}" already exists'}),
        ("GET", f"{JOBS}/{name}", 200, with_status(job, CREATED, RUNNING)),
        ("GET", f"{JOBS}/{name}", 200, with_status(job, CREATED, STOPPED, SUCCEEDED)),
    )
    lines = []
    result = submit_and_wait(job, env["KUBECONFIG"], 60, on_change=lines.append, sleep=pytest.fail)
    assert result.adopted is True and result.state == "Succeeded"
    assert [c[:2] for c in server.calls] == [("POST", JOBS), ("GET", f"{JOBS}/{name}"), ("GET", f"{JOBS}/{name}")]
    assert lines[0] == f"PyTorchJob team-a/{name}: already submitted, following it"


def test_a_different_job_under_the_same_name_is_not_adopted(kube_api):
    job = gpu_job()
    name = job["metadata"]["name"]
    theirs = copy.deepcopy(job)
    theirs["metadata"]["annotations"] = {SPEC_HASH_ANNOTATION: "sha256:other"}
    server, env = kube_api(("POST", JOBS, 409, {"message": "already exists"}), ("GET", f"{JOBS}/{name}", 200, theirs))
    with pytest.raises(StorageError, match=rf"already exists with a different spec \({SPEC_HASH_ANNOTATION} sha256:other, "
                                           rf"this one sha256:[0-9a-f]{{64}}\); delete it \(`kubectl -n team-a delete pytorchjob {name}`\)"):
        submit_and_wait(job, env["KUBECONFIG"], 60, sleep=pytest.fail)
    assert len(server.calls) == 2


def test_without_a_cluster_it_is_a_config_error_and_nothing_is_sent(tmp_path):
    with pytest.raises(ConfigError, match="submit_pytorchjob needs a cluster, and none is configured.*torchrun"):
        run_pytorchjob(SPEC, "mnist-cnn", "team-a", {"processes": 2}, {}, environ={"HOME": str(tmp_path)}, sleep=pytest.fail)


def test_bad_input_is_refused_before_the_cluster_is_asked(kube_api):
    server, env = kube_api()
    with pytest.raises(ConfigError, match=r"^training\.processes"):
        run_pytorchjob(SPEC, "mnist-cnn", "team-a", {"processes": 0}, {}, environ=env, sleep=pytest.fail)
    assert server.calls == []


def test_an_unreachable_api_server_is_a_storage_error(kube_api):
    server, env = kube_api()
    server.close()  # nothing listens on that port any more
    with pytest.raises(StorageError, match=r"team-a/mnist-cnn-[0-9a-f]{8}: could not create it \(\w+"):
        run_pytorchjob(SPEC, "mnist-cnn", "team-a", {"processes": 2, "timeout_s": 60}, {}, environ=env, sleep=pytest.fail)


def test_unreadable_credentials_are_a_config_error(tmp_path):
    (tmp_path / "kubeconfig").write_text("kind: Config\nclusters: []\n")
    env = {"KUBECONFIG": str(tmp_path / "kubeconfig"), "HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="submit_pytorchjob: cannot load Kubernetes credentials from KUBECONFIG="):
        run_pytorchjob(SPEC, "mnist-cnn", "team-a", {"processes": 2}, {}, environ=env, sleep=pytest.fail)


# --------------------------------------------------------------------------- the KFP component


@pytest.fixture
def component(monkeypatch):
    """job_component's submit_pytorchjob, registered in the image maps for the test if the lead has not yet."""
    from keel.components._common import images

    monkeypatch.setitem(images.COMPONENT_IMAGES, "submit_pytorchjob", images.COMPONENT_IMAGES.get("submit_pytorchjob", images.BASE_IMAGE))
    monkeypatch.setitem(images.COMPONENT_MODULES, "submit_pytorchjob", "keel.components.train_deep.job_component")
    module = importlib.import_module("keel.components.train_deep.job_component")
    return importlib.reload(module).submit_pytorchjob


def test_the_component_runs_in_the_base_image_and_returns_the_final_state(component, kube_api, monkeypatch, capsys):
    from keel.components._common.images import BASE_IMAGE

    assert component.component_spec.implementation.container.image == BASE_IMAGE
    assert component.component_spec.implementation.container.command == ["python3", "-m", "keel.components.executor"]
    job = render(SPEC, "mnist-cnn", "team-a", {"processes": 3}, GPU_POOL)
    name = job["metadata"]["name"]
    server, env = kube_api(("POST", JOBS, 201, None), ("GET", f"{JOBS}/{name}", 200, with_status(job, CREATED, STOPPED, SUCCEEDED)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    state = component.python_func(spec_uri=SPEC, training={"processes": 3}, resources=GPU_POOL, job_name="mnist-cnn", namespace="team-a")
    assert state == "Succeeded" and server.calls[0][3] == job
    assert f"submit_pytorchjob: PyTorchJob team-a/{name} Succeeded (1 master + 2 workers)" in capsys.readouterr().out


def test_a_failed_job_fails_the_step_with_one_line(component, kube_api, monkeypatch, capsys):
    job = render(SPEC, "mnist-cnn", "team-a", {"processes": 2}, {})
    name = job["metadata"]["name"]
    _, env = kube_api(("POST", JOBS, 201, None), ("GET", f"{JOBS}/{name}", 200, with_status(job, CREATED, STOPPED, FAILED)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_:
        component.python_func(spec_uri=SPEC, training={"processes": 2}, resources={}, job_name="mnist-cnn", namespace="team-a")
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"keel: error: [submit_pytorchjob] PyTorchJob team-a/{name} failed (PyTorchJobFailed:")
