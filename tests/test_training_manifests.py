"""Tier 5, manifests: the distributed-training folder, manifests/base/training.

Two kustomizations, built with `kubectl kustomize` as tests/test_manifests.py
builds the overlays:

- manifests/base/training: the Role and RoleBinding the submit_pytorchjob
  step needs (what manifests/base composes);
- manifests/base/training/pytorchjob: a PyTorchJob to run by hand, which must
  be the job the step renders.

The pods are held to the same policy checks as the serving manifests (Pod
Security "restricted", requests equal limits, images at the package version,
no secret values): those functions come from tests/test_manifests.py, applied
to each replica's pod template.
"""

from __future__ import annotations

import copy
import importlib.util
import subprocess
from pathlib import Path

import pytest
import yaml

from keel.components._common.k8s_schema import validate_manifest
from keel.components.train_deep.pytorchjob import job_problems, render

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ROOT / "manifests" / "base" / "training"


def _policies():
    spec = importlib.util.spec_from_file_location("keel_manifest_policies", ROOT / "tests" / "test_manifests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POLICIES = _policies()


def build(folder: Path) -> list[dict]:
    result = subprocess.run([POLICIES.kubectl(), "kustomize", str(folder)], capture_output=True, text=True)
    assert result.returncode == 0, f"`kubectl kustomize {folder}` failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@pytest.fixture(scope="module")
def rbac() -> list[dict]:
    return build(TRAINING)


@pytest.fixture(scope="module")
def template() -> dict:
    (job,) = build(TRAINING / "pytorchjob")
    return job


def replica_pods(job: dict) -> list[dict]:
    """Each replica's pod template as a Pod, so the serving policy checks apply to it unchanged."""
    return [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{job['metadata']['name']}-{kind.lower()}"},
             "spec": spec["template"]["spec"]} for kind, spec in job["spec"]["pytorchReplicaSpecs"].items()]


def env_from_problems(job: dict) -> list[str]:
    """envFrom may only name a Secret or ConfigMap (references carry no values)."""
    problems = []
    for pod in replica_pods(job):
        for container in pod["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if set(source) - {"secretRef", "configMapRef", "prefix"}:
                    problems.append(f"{pod['metadata']['name']}: envFrom {sorted(source)}")
    return problems


# --------------------------------------------------------------------------- RBAC


def test_the_training_folder_builds_the_step_role_and_binding(rbac):
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rbac) == [("Role", "keel-trainer"), ("RoleBinding", "keel-trainer")]
    assert [p for doc in rbac for p in validate_manifest(doc)] == []
    assert all(d["metadata"]["labels"]["app.kubernetes.io/component"] == "training" for d in rbac)


def test_the_trainer_role_is_least_privilege(rbac):
    role = next(d for d in rbac if d["kind"] == "Role")
    # Only PyTorchJobs, only in this namespace: no pods, no Secrets, no patch/update.
    assert role["rules"] == [{"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"],
                              "verbs": ["get", "list", "watch", "create", "delete"]}]
    binding = next(d for d in rbac if d["kind"] == "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "keel-trainer"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner"}]


def test_every_overlay_includes_the_trainer_rbac_in_its_namespace_and_no_job():
    for env, namespace in POLICIES.OVERLAYS.items():
        docs = build(ROOT / "manifests" / "overlays" / env)
        assert [p for doc in docs for p in validate_manifest(doc)] == [], env
        binding = POLICIES.find(docs, "RoleBinding", "keel-trainer")
        assert binding["metadata"]["namespace"] == namespace
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": namespace}]
        assert POLICIES.find(docs, "Role", "keel-trainer")["metadata"]["namespace"] == namespace
        assert not any(d["kind"] == "PyTorchJob" for d in docs), "applying an overlay must not start training"


# --------------------------------------------------------------------------- the PyTorchJob template


def test_the_template_is_a_valid_pytorchjob_with_the_pytorch_container(template):
    assert template["apiVersion"] == "kubeflow.org/v1" and template["kind"] == "PyTorchJob"
    assert job_problems(template) == []
    specs = template["spec"]["pytorchReplicaSpecs"]
    assert {kind: s["replicas"] for kind, s in specs.items()} == {"Master": 1, "Worker": 1}
    for spec in specs.values():
        (container,) = spec["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"
        assert container["command"][:3] == ["python3", "-m", "keel.components.train_deep.worker"]


def test_the_template_meets_the_serving_policies(template):
    pods = replica_pods(template)
    assert POLICIES.pod_security_problems(pods) == []
    assert POLICIES.resource_problems(pods) == []
    assert POLICIES.image_problems(pods, POLICIES.package_version()) == []
    assert POLICIES.secret_problems(pods) == [] and env_from_problems(template) == []
    for pod in pods:
        container = pod["spec"]["containers"][0]
        assert container["image"] == f"ghcr.io/keel-ml/keel-torch:{POLICIES.package_version()}"
        # The S3 credentials by reference only: the Secret manifests/base/storage names.
        assert container["envFrom"] == [{"secretRef": {"name": "keel-s3-credentials"}}]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


BROKEN = {
    "privileged": (POLICIES.pod_security_problems, ["securityContext", "privileged"], True),
    "root user": (POLICIES.pod_security_problems, ["securityContext", "runAsUser"], 0),
    "escalation allowed": (POLICIES.pod_security_problems, ["securityContext", "allowPrivilegeEscalation"], True),
    "requests below limits": (POLICIES.resource_problems, ["resources", "requests", "cpu"], "500m"),
    "latest image": (lambda pods: POLICIES.image_problems(pods, POLICIES.package_version()), ["image"],
                     "ghcr.io/keel-ml/keel-torch:latest"),
    "literal key": (POLICIES.secret_problems, ["env", 0], {"name": "AWS_SECRET_ACCESS_KEY", "value": "s3cr3t"}),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_the_policy_checks_catch_a_broken_worker(template, case):
    check, path, value = BROKEN[case]
    job = copy.deepcopy(template)
    target = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert check(replica_pods(job)), f"{case}: the policy check found nothing"


def test_an_env_from_with_values_is_caught(template):
    job = copy.deepcopy(template)
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["envFrom"].append({"value": "x"})
    assert env_from_problems(job) == [f"{template['metadata']['name']}-master: envFrom ['value']"]


def test_the_template_is_the_job_the_pipeline_step_renders(template):
    """Same replicas, pods, policies and run policy: the hand-run job and the step's job cannot drift apart."""
    container = template["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    spec_uri = container["command"][-1]
    rendered = render(spec_uri, "keel-train", "team-a", {"processes": 2, "backoff_limit": 3}, {"cpu": "2", "memory": "8Gi"},
                      image=container["image"])
    assert template["spec"] == rendered["spec"]
    assert template["metadata"]["labels"] == rendered["metadata"]["labels"]
