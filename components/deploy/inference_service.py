"""Deploy logic: a KServe InferenceService for a registered bundle, rendered and (optionally) applied.

The manifest is built with the kserve SDK's own models, so field names and
nesting follow the InferenceService CRD, then checked against the schema
before it is written or sent. The predictor runs on the `keel-predictor`
ServingRuntime (manifests/base), which carries the image, the Pod Security
"restricted" settings and the auth wiring; the InferenceService names the
bundle, the scaling and the per-model policies.

Applying is a create, or a merge patch when the InferenceService exists
(a new version rolls out; with canary_traffic_percent KServe splits the
traffic between the last ready revision and the new one).

Only an approved version (or the production one, re-deployed) is applied
(keel.components._common.registry.stages): any other is "held", its manifest still
rendered, with the `keel approve` and `keel deploy` commands that release it.
A version applied from approved becomes the production one, and the version
that served before it is archived.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from keel.components._common import lineage
from keel.components._common.config import DeploySection
from keel.components._common.errors import ConfigError, KeelError, StorageError
from keel.components._common.kube import client_configuration, cluster_source
from keel.components._common.registry.registry import VersionRef
from keel.components._common.registry import stages

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
REMOTE_SCHEMES = ("s3://", "gs://", "pvc://", "https://", "hf://", "oci://")
_RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


# Stages the deploy step applies: approved, or production again (a re-deploy of what serves).
DEPLOYABLE = (stages.APPROVED, stages.PRODUCTION)


@dataclass
class DeployResult:
    manifest: dict
    applied: bool
    action: str  # "created" | "updated" | "rendered" | "held"
    reason: str  # why it was (not) applied
    stage: str = ""  # the version's stage after this step; "" when the registry was not consulted


def version_ref(bundle: dict) -> VersionRef:
    """The registered version a bundle's metadata names (registry_uri is `{store}/registry/{model}/v{N}`).

    Raises:
        ConfigError: registry_uri, model_name or version do not name a registry version.
    """
    model, uri = str(bundle.get("model_name") or ""), str(bundle.get("registry_uri") or "")
    store, found, rest = uri.rstrip("/").rpartition(f"/registry/{model}/")
    match = re.fullmatch(r"v?([1-9][0-9]*)", str(bundle.get("version") or "").strip())
    if not model or not found or not store or not match or rest != f"v{match.group(1)}":
        raise ConfigError(f"bundle: registry_uri {uri!r} is not version {bundle.get('version')!r} of model {model!r} "
                          "under <store>/registry/<model>/v<N>; pass register_model's bundle output")
    return VersionRef(store, model, int(match.group(1)))


def held_reason(ref: VersionRef, stage: str) -> str:
    """Why a version is not applied, with the commands that would release it."""
    store = f" --store {ref.store}"
    if stage == stages.CANDIDATE:
        return (f"{ref.label} is a candidate, not approved; run `keel approve {ref.label}{store} --by NAME --reason TEXT` "
                f"then `keel deploy {ref.label}{store}`")
    return (f"{ref.label} is {stage}; only approved versions are deployed (an archived one that served returns with "
            f"`keel rollback {ref.model_name}{store}`)")


def record_production(ref: VersionRef, stage: str, target: str, by: str | None = None, reason: str | None = None) -> str:
    """Records that `target` now serves an approved version (the previous production one is archived).

    A production version re-deployed stays production, with no new event. Returns the stage after.
    """
    if stage == stages.PRODUCTION:
        return stage
    stages.transition(ref.store, ref.model_name, ref.version, stages.PRODUCTION, by or lineage.actor(),
                      reason or "deployed", target=target)
    return stages.PRODUCTION


def service_name(deploy: DeploySection, model_name: str) -> str:
    """DNS-1035 name: the configured one, else the model name with dots and underscores as dashes."""
    if deploy.name:
        return deploy.name
    name = re.sub(r"[^a-z0-9-]", "-", model_name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"m-{name}"
    return name[:45].rstrip("-")


def render(bundle: dict, deploy: DeploySection) -> dict:
    """The InferenceService for a registered bundle (register_model's output metadata).

    Args:
        bundle: needs registry_uri, model_name, version and bundle_hash.
        deploy: the `deploy` section.

    Raises:
        ConfigError: the bundle metadata lacks a field.
    """
    from kserve import ApiClient
    from kserve.models import (V1beta1InferenceService, V1beta1InferenceServiceSpec, V1beta1LoggerSpec, V1beta1ModelFormat,
                               V1beta1ModelSpec, V1beta1PredictorSpec)
    from kubernetes.client import V1EnvVar, V1ObjectMeta, V1ResourceRequirements, V1Toleration

    for key in ("registry_uri", "model_name", "version", "bundle_hash"):
        if not bundle.get(key):
            raise ConfigError(f"bundle: metadata has no {key!r}; pass register_model's bundle output")
    name = service_name(deploy, bundle["model_name"])
    quantity = {"cpu": deploy.cpu, "memory": deploy.memory}
    if deploy.gpus:
        quantity["nvidia.com/gpu"] = str(deploy.gpus)
    env = [
        V1EnvVar(name="KEEL_SERVE_UNSEEN_CATEGORY", value=deploy.unseen_category),
        V1EnvVar(name="KEEL_SERVE_OUT_OF_RANGE", value=deploy.out_of_range),
        V1EnvVar(name="KEEL_SERVE_LOG_PAYLOADS", value=str(deploy.log_payloads).lower()),
    ]
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "keel", "app.kubernetes.io/component": "predictor"}
    isvc = V1beta1InferenceService(
        api_version=f"{GROUP}/{VERSION}",
        kind="InferenceService",
        metadata=V1ObjectMeta(
            name=name,
            namespace=deploy.namespace,
            labels=labels,
            annotations={
                # As manifests/base: Knative mode gives scale-to-zero, concurrency scaling and
                # canaries; the sidecar is what enforces the JWT policies.
                "serving.kserve.io/deploymentMode": "Knative",
                "sidecar.istio.io/inject": "true",
                # Lineage: which registered bytes this service runs.
                "keel.ml/model-name": bundle["model_name"],
                "keel.ml/model-version": str(bundle["version"]),
                "keel.ml/bundle-hash": bundle["bundle_hash"],
                "serving.kserve.io/enable-prometheus-scraping": "true",
            },
        ),
        spec=V1beta1InferenceServiceSpec(
            predictor=V1beta1PredictorSpec(
                # The label manifests/base's auth and network policies select.
                labels={"keel.ml/role": "predictor"},
                min_replicas=deploy.min_replicas,
                max_replicas=deploy.max_replicas,
                scale_metric=deploy.scale_metric,
                scale_target=deploy.scale_target,
                canary_traffic_percent=deploy.canary_traffic_percent,
                logger=_logger(V1beta1LoggerSpec, deploy, bundle),
                service_account_name=deploy.service_account,
                security_context={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                node_selector={"nvidia.com/gpu.present": "true"} if deploy.gpus else None,
                tolerations=[V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")] if deploy.gpus else None,
                model=V1beta1ModelSpec(
                    # The runtime's container is kserve-container; the model spec is merged into it.
                    name="kserve-container",
                    model_format=V1beta1ModelFormat(name="keel", version="1"),
                    runtime=deploy.runtime,
                    storage_uri=bundle["registry_uri"],
                    env=env,
                    resources=V1ResourceRequirements(requests=dict(quantity), limits=dict(quantity)),
                    security_context=dict(_RESTRICTED),
                ),
            )
        ),
    )
    return ApiClient().sanitize_for_serialization(isvc)


def logger_url(deploy: DeploySection, bundle: dict) -> str | None:
    """Where KServe's agent posts the payload events: keel-monitor, told which model and version they belong to."""
    if deploy.payload_logger is None:
        return None
    from keel.components._common.payload_logging import receiver_url

    return receiver_url(deploy.payload_logger, bundle["model_name"], bundle["version"])


def _logger(spec, deploy: DeploySection, bundle: dict):
    url = logger_url(deploy, bundle)
    # mode all: a request event and a response event per call, joined by ce-id in the receiver
    return spec(mode="all", url=url) if url else None


def apply(manifest: dict, source: str, configuration=None) -> str:
    """Creates the InferenceService, or merge-patches it when it exists. Returns 'created' or 'updated'.

    Args:
        manifest: the rendered InferenceService.
        source: what `cluster_source` found (in-cluster, KUBECONFIG=<paths> or a kubeconfig path).
        configuration: the client configuration already loaded from `source` (else it is loaded here).

    Raises:
        ConfigError: the credentials cannot be loaded.
        StorageError: the API server refused it (the message has its status and reason).
    """
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = client.CustomObjectsApi(client.ApiClient(configuration or client_configuration(source, "deploy")))
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
        return "created"
    except ApiException as err:
        if err.status != 409:
            raise StorageError(f"InferenceService {namespace}/{name}: the API server refused it ({err.status} {err.reason}): {_message(err)}") from None
    try:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, manifest)
    except ApiException as err:
        raise StorageError(f"InferenceService {namespace}/{name}: update refused ({err.status} {err.reason}): {_message(err)}") from None
    return "updated"


def require_remote(bundle: dict) -> None:
    """Refuses a bundle the cluster cannot download (a local registry path).

    Raises:
        ConfigError: registry_uri is not s3://, gs://, pvc://, https://, hf:// or oci://.
    """
    if not bundle["registry_uri"].startswith(REMOTE_SCHEMES):
        raise ConfigError(
            f"registry.store: {bundle['registry_uri']} is a local path the cluster cannot read; "
            "register to s3://bucket/prefix to deploy, or set deploy.enabled: false"
        )


def _message(err) -> str:
    import json

    try:
        return json.loads(err.body).get("message", "")[:300]
    except (TypeError, ValueError, AttributeError):
        return str(err.body or "")[:300]


def deploy_model(bundle: dict, deploy: DeploySection, environ=os.environ, *, require_enabled: bool = True,
                 by: str | None = None, reason: str | None = None) -> DeployResult:
    """Renders the InferenceService, checks it against the schema, and applies it when allowed.

    It is applied when deploy.enabled is true (or `require_enabled` is false: an explicit
    `keel deploy`), a cluster is configured, and the version is approved or in production;
    an approved version applied becomes the production one.

    Args:
        bundle: register_model's bundle metadata (registry_uri, model_name, version, bundle_hash).
        deploy: the `deploy` section.
        environ: where cluster credentials are looked up.
        require_enabled: honour deploy.enabled (the pipeline step) or not (`keel deploy`).
        by: who deploys, recorded with the production event (default: lineage.actor()).
        reason: why, recorded with the production event.

    Raises:
        ConfigError: enabled with a registry the cluster cannot read (a local path), or
            unreadable cluster credentials.
        StorageError: the API server refused the manifest, or the registry cannot be read.
    """
    from keel.components._common.k8s_schema import check_manifest

    manifest = render(bundle, deploy)
    check_manifest(manifest)
    if require_enabled and not deploy.enabled:
        return DeployResult(manifest, False, "rendered", "deploy.enabled is false")
    source = cluster_source(environ)
    if source is None:
        return DeployResult(manifest, False, "rendered", "no cluster configured (no in-cluster service account, KUBECONFIG or ~/.kube/config)")
    require_remote(bundle)
    configuration = client_configuration(source, "deploy")  # unreadable credentials fail before anything else
    ref = version_ref(bundle)
    current = stages.stage(ref.store, ref.model_name, ref.version)
    if current not in DEPLOYABLE:
        return DeployResult(manifest, False, "held", held_reason(ref, current), current)
    action = apply(manifest, source, configuration)
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    target = f"InferenceService {namespace}/{name}"
    try:
        after = record_production(ref, current, target, by, reason or f"{action} {target} via {source}")
    except KeelError as err:
        # Applied, but the log moved on meanwhile (e.g. the version was rejected): say both.
        raise KeelError(f"{target} was {action} with {ref.label}, but its production stage could not be recorded: {err}") from err
    return DeployResult(manifest, True, action, f"applied via {source}", after)
