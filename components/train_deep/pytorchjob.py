"""Distributed training on a cluster: a Kubeflow PyTorchJob, rendered, submitted and followed.

Locally, several training processes run under `torchrun`; on a cluster the
Kubeflow training operator runs them as the replicas of a PyTorchJob (one
Master, processes - 1 Workers) and sets torch.distributed's env:// variables
(MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK) in every pod. Each replica runs
the same entry point, `python3 -m keel.components.train_deep.worker --spec
<spec URI>`, and reads the data and writes the model through the artifact
store, with the S3 credentials of the `keel-s3-credentials` Secret
(manifests/README.md, "The S3 credentials Secret").

The job is built with the kubeflow-training SDK's models (the pods with the
kubernetes client's), so field names and nesting follow the PyTorchJob CRD,
and checked offline against those models plus the rules the operator's
webhook enforces (a container named "pytorch", one Master) before it is sent.

The job's name ends in its spec hash, like the tune step's Katib Experiments:
a retried pipeline step finds its own job already there (409) and follows it
instead of training twice, and a new run (a new spec URI) gets a new job.

Nothing here deletes a job: on a timeout it keeps running, and the error says
how to follow or delete it. Finished pods are kept (cleanPodPolicy None) so
their logs stay readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from keel.components._common.config import Section
from keel.components._common.errors import ConfigError, KeelError, StorageError

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
CONTAINER = "pytorch"  # the operator refuses a PyTorchJob whose replicas have no container of this name
WORKER_COMMAND = ("python3", "-m", "keel.components.train_deep.worker")
# The operator's default rendezvous port (PyTorchJobDefaultPortName/Port); declared so
# the Master's Service and MASTER_PORT agree with what the pod exposes.
PORT_NAME, PORT = "pytorchjob-port", 23456
S3_SECRET = "keel-s3-credentials"  # the Secret manifests/README.md has the operator create
SPEC_HASH_ANNOTATION = "keel.ml/spec-hash"
HASH_CHARS = 8
# The operator names each replica's Service `<job>-worker-<index>`, a DNS-1035 label of at
# most 63 characters: a 41-character prefix + "-" + 8 hash characters leaves room for
# "-worker-" and five digits.
MAX_PREFIX = 41
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
_RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
_RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "runAsUser": 1000,  # the images' user (images/*/Dockerfile: USER 1000:0)
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


class JobFailed(KeelError):
    """The PyTorchJob ran and failed: the message has the operator's reason and where the logs are."""


class Toleration(Section):
    """One toleration of the GPU node pool's taints (Kubernetes' V1Toleration)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class JobTraining(Section):
    """How the job runs: how many processes, how often it may restart, how long to wait for it."""

    processes: int = Field(2, ge=1, le=1024, description="Replicas: 1 Master + processes - 1 Workers, one training process each")
    backoff_limit: int = Field(3, ge=0, description="Pod restarts (exit codes 128+, e.g. a preempted node) before the job fails")
    timeout_s: float = Field(6 * 3600.0, gt=0, description="How long the step waits for the job to finish")
    poll_s: float = Field(30.0, gt=0, description="Seconds between status reads")
    s3_secret: str = Field(S3_SECRET, pattern=_DNS_1123.pattern, description="Secret whose keys become the replicas' env")


class JobResources(Section):
    """What each replica gets; requests equal limits (Guaranteed QoS)."""

    cpu: str = Field("2", pattern=_QUANTITY, description="CPU per replica (request = limit)")
    memory: str = Field("8Gi", pattern=_QUANTITY, description="Memory per replica (request = limit)")
    shm: str = Field("1Gi", pattern=_QUANTITY,
                     description="/dev/shm per replica (NCCL and DataLoader workers); counts against memory")
    accelerator: str | None = Field(None, pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$",
                                    description="Extended resource name of the accelerator, e.g. nvidia.com/gpu")
    count: int = Field(0, ge=0, description="Accelerators per replica")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels of the GPU node pool")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations of the node pool's taints")

    @field_validator("count")
    @classmethod
    def _count(cls, count: int, info: ValidationInfo) -> int:
        if count and not info.data.get("accelerator"):
            raise PydanticCustomError("accelerator_missing", "{count} accelerators asked but no resources.accelerator "
                                      "is named; set accelerator (e.g. nvidia.com/gpu) or count: 0", {"count": count})
        if count > 1:
            # One training process per replica (the worker binds one device): extra devices would sit idle.
            raise PydanticCustomError("one_per_replica", "{count} accelerators per replica, but each replica runs one "
                                      "training process on one device; ask for more training.processes instead",
                                      {"count": count})
        return count


@dataclass
class JobResult:
    name: str
    namespace: str
    state: str  # "Succeeded"
    adopted: bool  # an identical job was already there (a retried step) and was followed
    replicas: dict  # status.replicaStatuses as the operator last reported them


def job_name(prefix: str, spec_hash: str) -> str:
    """`<prefix>-<first 8 hex of the spec hash>`: the same spec always gets the same name.

    Raises:
        ConfigError: the prefix is not a DNS-1035 label of at most MAX_PREFIX characters.
    """
    if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX or not _DNS_1035.match(prefix):
        raise ConfigError(f"job_name: {prefix!r} is not a DNS-1035 label of at most {MAX_PREFIX} characters "
                          "(lowercase letters, digits and '-', starting with a letter, not ending with '-'); "
                          "e.g. the model name with '_' and '.' as '-'")
    return f"{prefix}-{spec_hash.removeprefix('sha256:')[:HASH_CHARS]}"


def render(spec_uri: str, prefix: str, namespace: str, training: JobTraining | dict | None = None,
           resources: JobResources | dict | None = None, image: str | None = None) -> dict:
    """The PyTorchJob (dict form) that trains the spec at `spec_uri` on `training.processes` replicas.

    Args:
        spec_uri: s3:// URI of the worker's spec JSON (a cluster cannot read a local path).
        prefix: the job name's prefix (a DNS-1035 label); the spec hash is appended.
        namespace: where the job runs (a Kubeflow profile namespace).
        training: JobTraining or its dict (validated as the `training` section).
        resources: JobResources or its dict (validated as the `resources` section).
        image: the replicas' image; keel-torch at the package version by default.

    Raises:
        ConfigError: a field is invalid; the message names it.
    """
    from kubeflow.training import (
        ApiClient,
        KubeflowOrgV1PyTorchJob,
        KubeflowOrgV1PyTorchJobSpec,
        KubeflowOrgV1ReplicaSpec,
        KubeflowOrgV1RunPolicy,
    )
    from kubernetes.client import (
        V1Container,
        V1ContainerPort,
        V1EmptyDirVolumeSource,
        V1EnvFromSource,
        V1EnvVar,
        V1ObjectMeta,
        V1PodSpec,
        V1PodTemplateSpec,
        V1ResourceRequirements,
        V1SecretEnvSource,
        V1Toleration,
        V1Volume,
        V1VolumeMount,
    )

    from keel.components._common.images import TORCH_IMAGE

    training = JobTraining.parse(training, "training")
    resources = JobResources.parse(resources, "resources")
    if not isinstance(spec_uri, str) or not spec_uri.startswith("s3://") or len(spec_uri) <= len("s3://"):
        raise ConfigError(f"spec_uri: {spec_uri!r} is not an s3:// URI; the replicas read the spec from the "
                          "artifact store, so write it to s3://bucket/... first")
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_1123.match(namespace):
        raise ConfigError(f"namespace: {namespace!r} is not a Kubernetes namespace name (a DNS-1123 label)")
    job_name(prefix, "0" * HASH_CHARS)  # the prefix is checked before anything else is built

    quantity = {"cpu": resources.cpu, "memory": resources.memory}
    if resources.count:
        quantity[resources.accelerator] = str(resources.count)
    labels = {"app.kubernetes.io/part-of": "keel", "app.kubernetes.io/component": "training", "keel.ml/role": "trainer"}

    def replica(count: int) -> KubeflowOrgV1ReplicaSpec:
        return KubeflowOrgV1ReplicaSpec(
            replicas=count,
            # ExitCode: 1-127 (a Python error, a bad config: exit 2) fails the job at once; 128+ (killed:
            # OOM, a preempted node) restarts the pod, up to runPolicy.backoffLimit times.
            restart_policy="ExitCode",
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(
                    labels=dict(labels),
                    # An Istio sidecar keeps a finished pod running (the job never completes) and
                    # intercepts the rendezvous before it is ready; Kubeflow's own examples turn it off.
                    annotations={"sidecar.istio.io/inject": "false"},
                ),
                spec=V1PodSpec(
                    # The replicas read and write S3; they never call the Kubernetes API.
                    automount_service_account_token=False,
                    security_context=dict(_RESTRICTED_POD),
                    node_selector=dict(resources.node_selector) or None,
                    tolerations=[V1Toleration(**t.model_dump(exclude_none=True)) for t in resources.tolerations] or None,
                    containers=[V1Container(
                        name=CONTAINER,
                        image=image or TORCH_IMAGE,
                        command=[*WORKER_COMMAND, "--spec", spec_uri],
                        ports=[V1ContainerPort(name=PORT_NAME, container_port=PORT, protocol="TCP")],
                        # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL, by reference only.
                        env_from=[V1EnvFromSource(secret_ref=V1SecretEnvSource(name=training.s3_secret))],
                        # The root filesystem is read-only: caches under $HOME (torch, Triton's
                        # kernels for torch.compile, matplotlib) go to the writable /tmp.
                        env=[V1EnvVar(name="HOME", value="/tmp")],
                        resources=V1ResourceRequirements(requests=dict(quantity), limits=dict(quantity)),
                        security_context=dict(_RESTRICTED_CONTAINER),
                        volume_mounts=[V1VolumeMount(name="tmp", mount_path="/tmp"),
                                       V1VolumeMount(name="dshm", mount_path="/dev/shm")],
                    )],
                    volumes=[
                        # The root filesystem is read-only; checkpoints and staged data go here.
                        V1Volume(name="tmp", empty_dir=V1EmptyDirVolumeSource()),
                        # A container's default /dev/shm is 64 MiB: too small for NCCL's buffers
                        # and DataLoader workers' shared tensors.
                        V1Volume(name="dshm", empty_dir=V1EmptyDirVolumeSource(medium="Memory", size_limit=resources.shm)),
                    ],
                ),
            ),
        )

    replicas = {"Master": replica(1)}
    if training.processes > 1:
        replicas["Worker"] = replica(training.processes - 1)
    job = KubeflowOrgV1PyTorchJob(
        api_version=f"{GROUP}/{VERSION}",
        kind=KIND,
        metadata=V1ObjectMeta(namespace=namespace, labels=dict(labels)),
        spec=KubeflowOrgV1PyTorchJobSpec(
            pytorch_replica_specs=replicas,
            # None: finished pods stay, so `kubectl logs` works after a failure.
            run_policy=KubeflowOrgV1RunPolicy(clean_pod_policy="None", backoff_limit=training.backoff_limit),
        ),
    )
    body = ApiClient().sanitize_for_serialization(job)
    digest = spec_hash(body)
    body["metadata"]["name"] = job_name(prefix, digest)
    body["metadata"]["annotations"] = {SPEC_HASH_ANNOTATION: digest}
    problems = job_problems(body)
    if problems:  # a rendering bug, not the user's input: say everything
        raise ConfigError("; ".join(problems))
    return body


def spec_hash(job: dict) -> str:
    """sha256 of what the job does (namespace and spec), independent of its name and annotations."""
    record = {"namespace": job["metadata"].get("namespace"), "spec": job["spec"]}
    return "sha256:" + hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def job_problems(job: dict) -> list[str]:
    """What the API server or the training operator would refuse in this PyTorchJob, one line each.

    The walk is k8s_schema's (strict: unknown fields, wrong types, missing
    required fields), over the kubeflow-training SDK's models for the
    kubeflow.org kinds and the kubernetes client's for the pods.
    """
    from keel.components._common.k8s_schema import validate_manifest

    label = f"{KIND} {(job.get('metadata') or {}).get('name') or '<no name>'}"
    if job.get("apiVersion") != f"{GROUP}/{VERSION}" or job.get("kind") != KIND:
        return [f"{label}: apiVersion/kind must be {GROUP}/{VERSION} {KIND}"]
    problems = validate_manifest(job)
    name = (job.get("metadata") or {}).get("name")
    if isinstance(name, str) and (len(name) > 63 or not _DNS_1035.match(name)):
        problems.append(f"{label}: metadata.name: the training operator needs a DNS-1035 label (its Services are named after the job)")
    specs = (job.get("spec") or {}).get("pytorchReplicaSpecs") or {}
    if not isinstance(specs, dict):
        return problems
    if set(specs) - {"Master", "Worker"}:
        problems.append(f"{label}: spec.pytorchReplicaSpecs: unknown replica types {sorted(set(specs) - {'Master', 'Worker'})}")
    master = specs.get("Master")
    if not isinstance(master, dict) or master.get("replicas", 1) != 1:
        problems.append(f"{label}: spec.pytorchReplicaSpecs.Master: exactly one Master replica is needed")
    for kind, spec in specs.items():
        containers = ((spec or {}).get("template") or {}).get("spec", {}).get("containers") or []
        if not any(isinstance(c, dict) and c.get("name") == CONTAINER for c in containers):
            problems.append(f"{label}: spec.pytorchReplicaSpecs.{kind}: no container named {CONTAINER!r} (the operator requires it)")
    return problems


def submit_and_wait(
    job: dict,
    source: str,
    timeout_s: float,
    poll_s: float = 30.0,
    *,
    on_change: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> JobResult:
    """Creates the PyTorchJob and waits until the operator reports it Succeeded or Failed.

    A job of the same name that already exists is followed instead, when it
    carries the same spec hash (a retried step: the name ends in that hash).

    Args:
        job: render()'s PyTorchJob.
        source: where the credentials are (kube.cluster_source's answer).
        timeout_s: how long to wait for it to finish.
        poll_s: seconds between status reads.
        on_change: called with a one-line description whenever the job's state changes.
        sleep, clock: the waiting and the time source (tests pass fakes).

    Returns:
        JobResult of the succeeded job.

    Raises:
        ConfigError: the credentials cannot be loaded.
        JobFailed: the job failed (the operator's reason and message, and where the master's log is).
        StorageError: the API server refused or could not be reached, a different job has the name,
            or the job did not finish within timeout_s (it keeps running).
    """
    from kubernetes import client

    from keel.components._common.kube import client_configuration

    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    where = f"PyTorchJob {namespace}/{name}"
    follow = (f"follow it with `kubectl -n {namespace} get pytorchjob {name}` and "
              f"`kubectl -n {namespace} logs -f {name}-master-0`, or delete it with `kubectl -n {namespace} delete pytorchjob {name}`")
    with client.ApiClient(client_configuration(source, "submit_pytorchjob")) as api_client:
        api = client.CustomObjectsApi(api_client)
        adopted = _create(api, job, where, namespace, name)
        if on_change:
            on_change(f"{where}: {'already submitted, following it' if adopted else 'created'}")
        deadline = clock() + timeout_s
        last = None
        while True:
            current = _get(api, where, "read its status", namespace, name)
            status = current.get("status") or {}
            conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
            state = _state(conditions)
            if on_change and state != last:
                on_change(f"{where}: {state} ({_counts(status)})")
            last = state
            if state == "Succeeded":
                return JobResult(name, namespace, state, adopted, status.get("replicaStatuses") or {})
            if state == "Failed":
                failed = conditions["Failed"]
                raise JobFailed(f"{where} failed ({failed.get('reason')}: {_one_line(failed.get('message'))}); "
                                f"{_counts(status)}; see `kubectl logs -n {namespace} {name}-master-0` "
                                f"and `kubectl -n {namespace} describe pytorchjob {name}`")
            if clock() >= deadline:
                pending = "" if "Running" in conditions else (
                    f"; it never started running: `kubectl -n {namespace} describe pod {name}-master-0` says why "
                    "(no node with the accelerator, an unknown image, a missing Secret)")
                raise StorageError(f"{where} did not finish within {timeout_s:g} s (last state {state}, {_counts(status)}); "
                                   f"it keeps running: {follow}{pending}")
            sleep(poll_s)


def run_pytorchjob(spec_uri: str, prefix: str, namespace: str, training: JobTraining | dict | None = None,
                   resources: JobResources | dict | None = None, *, environ: Mapping[str, str] | None = None,
                   on_change: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> tuple[dict, JobResult]:
    """Renders the job, finds the cluster's credentials, submits the job and waits for it: (job, result).

    Raises:
        ConfigError: a bad field, or no cluster configured; see render and submit_and_wait for the rest.
    """
    from keel.components._common.kube import cluster_source

    training = JobTraining.parse(training, "training")
    job = render(spec_uri, prefix, namespace, training, resources)
    source = cluster_source(os.environ if environ is None else environ)
    if source is None:
        raise ConfigError("submit_pytorchjob needs a cluster, and none is configured (no in-cluster service account, "
                          "KUBECONFIG or ~/.kube/config); train locally with several processes under torchrun instead")
    return job, submit_and_wait(job, source, training.timeout_s, training.poll_s, on_change=on_change,
                                sleep=sleep, clock=clock)


def _create(api, job: dict, where: str, namespace: str, name: str) -> bool:
    """Creates the job; True when an identical one already existed and is adopted."""
    from kubernetes.client.rest import ApiException

    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
        return False
    except ApiException as err:
        if err.status != 409:
            raise _refusal(where, "create it", err) from None
    except Exception as err:  # urllib3 connection errors: the API server is not reachable
        raise _refusal(where, "create it", err) from None
    existing = _get(api, where, "read the existing one", namespace, name)
    ours = job["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    theirs = ((existing.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    if theirs != ours:
        raise StorageError(f"{where} already exists with a different spec ({SPEC_HASH_ANNOTATION} {theirs}, this one {ours}); "
                           f"delete it (`kubectl -n {namespace} delete pytorchjob {name}`) or choose another job_name")
    return True


def _get(api, where: str, what: str, namespace: str, name: str) -> dict:
    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except Exception as err:  # ApiException, or the connection's own errors
        raise _refusal(where, what, err) from None


def _state(conditions: dict) -> str:
    # A finished job keeps its earlier conditions (Created, Running set to False); the final ones win.
    for state in ("Succeeded", "Failed", "Restarting", "Running", "Suspended", "Created"):
        if state in conditions:
            return state
    return "Pending"


def _counts(status: dict) -> str:
    replicas = status.get("replicaStatuses") or {}
    if not replicas:
        return "no replicas reported yet"
    parts = []
    for kind in sorted(replicas):
        counts = replicas[kind] or {}
        parts.append(f"{kind} " + ", ".join(f"{counts.get(k) or 0} {k}" for k in ("active", "succeeded", "failed")))
    return "; ".join(parts)


def _one_line(text) -> str:
    return " ".join(str(text or "").split())[:300]


def _refusal(where: str, what: str, err: Exception) -> StorageError:
    from kubernetes.client.rest import ApiException

    if not isinstance(err, ApiException):
        first = (str(err).splitlines() or [""])[0][:300]
        return StorageError(f"{where}: could not {what} ({type(err).__name__}: {first})")
    from keel.components._common.kube import api_refusal

    hint = ""
    if err.status == 404 and what == "create it":
        hint = "; is the Kubeflow training operator installed in this cluster?"
    elif err.status == 403:
        hint = ("; the step's service account may not manage pytorchjobs.kubeflow.org here "
                "(kubectl apply -k manifests/overlays/<env> grants it)")
    return api_refusal(where, what, err.status, err.reason, err.body, hint)
