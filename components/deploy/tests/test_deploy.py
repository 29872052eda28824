"""deploy_model: the rendered InferenceService, the schema check, stage gating, and create-or-patch against an API server.

No Kubernetes API server can run on this machine (no cluster, no envtest
binaries, no network), so `apply` is tested against a small HTTP server that
answers the two calls it makes (POST create, PATCH merge) and records them
(`testkit.kube.KubeApiStandIn`).
Everything else here is real: the kserve SDK models, the schema check, the
kubernetes client and its kubeconfig loading, and the registry with its stage
log on an S3 server (nanio), since a cluster only deploys from a remote store.
"""

from __future__ import annotations


import pytest
import yaml

from keel.components._common.config import DeploySection
from keel.components._common.errors import ConfigError, StorageError
from keel.components._common.k8s_schema import validate_manifest
from keel.components._common.kube import cluster_source
from keel.components.deploy.inference_service import deploy_model, render, service_name, version_ref
from keel.components._common.registry import stages
from keel.components._common.registry.registry import Registry

BUNDLE = {
    "registry_uri": "s3://keel/registry/loans-high-risk/v7",
    "model_name": "loans-high-risk",
    "version": "v7",
    "bundle_hash": "sha256:" + "ab" * 32,
}
NO_CLUSTER = {"HOME": "/nonexistent"}
GATES = {"metrics": {"passed": True, "detail": "roc_auc 0.81 >= 0.7"}}


def registered(store: str, count: int, approval: str = "auto", model: str = "loans-high-risk") -> list[dict]:
    """`count` new versions in the store, each registered with passing gates; their bundle metadata."""
    registry, bundles = Registry(store), []
    for i in range(count):
        version = registry.publish(model, {"model.joblib": f"model-{i}".encode()})
        stages.register_version(store, model, version, GATES, approval)
        bundles.append({"registry_uri": registry.uri(model, version), "model_name": model, "version": f"v{version}",
                        "bundle_hash": registry.verify(model, version)["bundle_hash"]})
    return bundles


def test_render_is_a_valid_inference_service_for_the_bundle():
    manifest = render(BUNDLE, DeploySection())
    assert validate_manifest(manifest) == []
    predictor = manifest["spec"]["predictor"]
    assert manifest["metadata"]["name"] == "loans-high-risk"
    assert manifest["metadata"]["annotations"]["keel.ml/bundle-hash"] == BUNDLE["bundle_hash"]
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert predictor["labels"] == {"keel.ml/role": "predictor"}  # what manifests/base's policies select
    assert predictor["model"]["storageUri"] == BUNDLE["registry_uri"]
    assert predictor["model"]["runtime"] == "keel-predictor" and predictor["model"]["modelFormat"]["name"] == "keel"
    assert predictor["model"]["resources"]["requests"] == predictor["model"]["resources"]["limits"]
    context = predictor["model"]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] and context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {e["name"]: e["value"] for e in predictor["model"]["env"]}["KEEL_SERVE_UNSEEN_CATEGORY"] == "reject"
    assert "canaryTrafficPercent" not in predictor and "tolerations" not in predictor


def test_render_follows_the_deploy_section():
    section = DeploySection.parse({"name": "risk", "namespace": "team-a", "min_replicas": 0, "max_replicas": 9,
                                   "scale_metric": "rps", "scale_target": 50, "canary_traffic_percent": 10,
                                   "gpus": 1, "cpu": "2", "memory": "4Gi", "unseen_category": "warn"}, "deploy")
    manifest = render(BUNDLE, section)
    assert validate_manifest(manifest) == []
    predictor = manifest["spec"]["predictor"]
    assert (manifest["metadata"]["name"], manifest["metadata"]["namespace"]) == ("risk", "team-a")
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["scaleMetric"], predictor["scaleTarget"]) == (0, 9, "rps", 50)
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["model"]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    assert predictor["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_payload_logging_sets_kserves_logger_to_the_receiver_with_model_and_version():
    assert "logger" not in render(BUNDLE, DeploySection())["spec"]["predictor"]  # off unless configured
    section = DeploySection.parse({"payload_logger": "http://keel-monitor.keel-monitoring.svc.cluster.local/"}, "deploy")
    manifest = render(BUNDLE, section)
    assert validate_manifest(manifest) == []
    logger = manifest["spec"]["predictor"]["logger"]
    assert logger["mode"] == "all"
    assert logger["url"] == (f"http://keel-monitor.keel-monitoring.svc.cluster.local/?model={BUNDLE['model_name']}"
                             f"&version={BUNDLE['version']}")


@pytest.mark.parametrize("url, text", [
    ("keel-monitor:8090", "use an http:// or https:// URL"),
    ("ftp://keel-monitor", "use an http:// or https:// URL"),
    ("http://user:pw@keel-monitor", "no credentials, query or fragment"),
    ("http://keel-monitor/?model=x", "no credentials, query or fragment"),
])
def test_a_bad_payload_logger_url_names_the_field(url, text):
    with pytest.raises(ConfigError, match=text) as caught:
        DeploySection.parse({"payload_logger": url}, "deploy")
    assert "deploy" in str(caught.value)


def test_service_names_are_dns_labels():
    assert service_name(DeploySection(), "loans.high_risk") == "loans-high-risk"
    assert service_name(DeploySection(), "7-day-churn") == "m-7-day-churn"
    assert service_name(DeploySection(name="x1"), "anything") == "x1"


@pytest.mark.parametrize("raw, field", [
    ({"min_replicas": 5, "max_replicas": 2}, "max_replicas (2) is below min_replicas (5)"),
    ({"cpu": "lots"}, "deploy.cpu"),
    ({"canary_traffic_percent": 150}, "deploy.canary_traffic_percent"),
    ({"name": "Bad_Name"}, "deploy.name"),
    ({"scale_metric": "vibes"}, "deploy.scale_metric"),
    ({"replicas": 3}, "deploy.replicas"),
])
def test_bad_deploy_values_name_the_field(raw, field):
    with pytest.raises(ConfigError) as err:
        DeploySection.parse(raw, "deploy")
    assert field in str(err.value)


def test_missing_bundle_metadata_is_a_clear_error():
    with pytest.raises(ConfigError, match="bundle: metadata has no 'bundle_hash'"):
        render({k: v for k, v in BUNDLE.items() if k != "bundle_hash"}, DeploySection())


def test_disabled_or_without_a_cluster_it_only_renders():
    result = deploy_model(BUNDLE, DeploySection(), NO_CLUSTER)
    assert (result.applied, result.action, result.reason) == (False, "rendered", "deploy.enabled is false")
    result = deploy_model(BUNDLE, DeploySection(enabled=True), NO_CLUSTER)
    assert result.action == "rendered" and "no cluster configured" in result.reason


# -- applying, against a recording stand-in for the API server ------------------------------------------

ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/{}/inferenceservices"


@pytest.mark.slow  # a real S3 server (nanio)
def test_apply_creates_then_patches_and_records_production(kube_api, s3_store):
    base = ISVC.format("team-a")
    server, env = kube_api(("POST", base, 201, None), ("POST", base, 409, {"message": "already exists"}),
                           ("PATCH", f"{base}/loans-high-risk", 200, None))
    section = DeploySection(enabled=True, namespace="team-a")
    assert cluster_source(env) == f"KUBECONFIG={env['KUBECONFIG']}"
    v1, v2 = registered(s3_store, 2)
    first = deploy_model(v1, section, env)
    assert (first.applied, first.action, first.stage) == (True, "created", "production")
    second = deploy_model(v2, section, env, by="ci-bot")
    assert (second.action, second.stage) == ("updated", "production")
    (m1, p1, _, b1), (m2, _, _, _), (m3, p3, ctype, b3) = server.calls
    assert (m1, p1) == ("POST", "/apis/serving.kserve.io/v1beta1/namespaces/team-a/inferenceservices")
    assert b1["spec"]["predictor"]["model"]["storageUri"].endswith("/v1")
    assert (m3, p3) == ("PATCH", "/apis/serving.kserve.io/v1beta1/namespaces/team-a/inferenceservices/loans-high-risk")
    assert ctype == "application/merge-patch+json"
    assert b3["spec"]["predictor"]["model"]["storageUri"].endswith("/v2")
    # v2 serves now and v1 is archived, both recorded with what was applied.
    assert stages.production_version(s3_store, "loans-high-risk") == 2
    promoted, archived = stages.history(s3_store, "loans-high-risk")[-2:]
    assert (promoted["version"], promoted["from"], promoted["by"]) == (2, "approved", "ci-bot")
    assert promoted["target"] == "InferenceService team-a/loans-high-risk"
    assert promoted["reason"] == f"updated InferenceService team-a/loans-high-risk via KUBECONFIG={env['KUBECONFIG']}"
    assert (archived["version"], archived["from"], archived["to"]) == (1, "production", "archived")


@pytest.mark.slow  # a real S3 server (nanio)
def test_a_candidate_is_held_with_the_commands_that_release_it(kube_api, s3_store):
    server, env = kube_api()
    [candidate] = registered(s3_store, 1, approval="human")
    result = deploy_model(candidate, DeploySection(enabled=True), env)
    assert (result.applied, result.action, result.stage) == (False, "held", "candidate")
    assert result.reason == (f"loans-high-risk:v1 is a candidate, not approved; run `keel approve loans-high-risk:v1 --store "
                             f"{s3_store} --by NAME --reason TEXT` then `keel deploy loans-high-risk:v1 --store {s3_store}`")
    assert validate_manifest(result.manifest) == []  # still rendered, for the artifact
    assert server.calls == [] and stages.stage(s3_store, "loans-high-risk", 1) == "candidate"


@pytest.mark.slow  # a real S3 server (nanio)
def test_production_redeploys_and_archived_is_held(kube_api, s3_store):
    base = ISVC.format("keel-dev")
    server, env = kube_api(("POST", base, 201, None), ("POST", base, 201, None), ("POST", base, 409, {"message": "exists"}),
                           ("PATCH", f"{base}/loans-high-risk", 200, None))
    v1, v2 = registered(s3_store, 2)
    section = DeploySection(enabled=True)
    deploy_model(v1, section, env)
    deploy_model(v2, section, env)
    events = len(stages.history(s3_store, "loans-high-risk"))
    again = deploy_model(v2, section, env)  # what serves, applied again: no stage change
    assert (again.action, again.stage) == ("updated", "production")
    assert len(stages.history(s3_store, "loans-high-risk")) == events
    held = deploy_model(v1, section, env)
    assert (held.action, held.stage) == ("held", "archived")
    assert f"`keel rollback loans-high-risk --store {s3_store}`" in held.reason
    assert len(server.calls) == 4


@pytest.mark.slow  # a real S3 server (nanio)
def test_a_refused_apply_is_one_line_with_the_api_message_and_records_nothing(kube_api, s3_store):
    server, env = kube_api(("POST", ISVC.format("keel-dev"), 403, {"message": "denied by test (403)"}))
    [bundle] = registered(s3_store, 1)
    with pytest.raises(StorageError, match=r"InferenceService keel-dev/loans-high-risk: the API server refused it \(403 .*denied by test"):
        deploy_model(bundle, DeploySection(enabled=True), env)
    assert stages.stage(s3_store, "loans-high-risk", 1) == "approved"


@pytest.mark.parametrize("change", [
    {"registry_uri": "s3://keel/models/loans-high-risk/v7"},
    {"version": "v8"},
    {"model_name": "other"},
])
def test_bundle_metadata_must_name_a_registry_version(change):
    ref = version_ref(BUNDLE)
    assert (ref.store, ref.model_name, ref.version, ref.label) == ("s3://keel", "loans-high-risk", 7, "loans-high-risk:v7")
    with pytest.raises(ConfigError, match="bundle: registry_uri .* is not version .* under <store>/registry/<model>/v<N>"):
        version_ref(dict(BUNDLE, **change))


def test_a_local_registry_cannot_be_deployed_to_a_cluster(kube_api):
    server, env = kube_api()
    with pytest.raises(ConfigError, match="registry.store: /runs/registry/m/v1 is a local path the cluster cannot read"):
        deploy_model(dict(BUNDLE, registry_uri="/runs/registry/m/v1"), DeploySection(enabled=True), env)
    assert server.calls == []


def test_unreadable_credentials_are_a_config_error(tmp_path):
    (tmp_path / "kubeconfig").write_text("kind: Config\nclusters: []\n")
    env = {"KUBECONFIG": str(tmp_path / "kubeconfig"), "HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="deploy: cannot load Kubernetes credentials from KUBECONFIG="):
        deploy_model(BUNDLE, DeploySection(enabled=True), env)


def test_component_compiles_with_its_inputs_and_outputs(tmp_path):
    from kfp import compiler

    from keel.components.deploy.component import deploy_model as component

    compiler.Compiler().compile(component, str(tmp_path / "deploy.yaml"))
    spec = yaml.safe_load((tmp_path / "deploy.yaml").read_text())
    inputs = spec["root"]["inputDefinitions"]
    assert set(inputs["artifacts"]) == {"bundle"} and set(inputs["parameters"]) == {"deploy"}
    assert set(spec["root"]["outputDefinitions"]["artifacts"]) == {"manifest"}
