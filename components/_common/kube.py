"""Reaching a Kubernetes cluster from a step: where the credentials are, and a client configuration.

The deploy step (InferenceService) and the tune step (Katib Experiment) talk to
the API server only when a cluster is configured; locally they do their work
without one. The kubernetes client reads $KUBECONFIG once, at import, so the
file is always named explicitly here.
"""

from __future__ import annotations

import os
from pathlib import Path

from keel.components._common.errors import ConfigError, StorageError

IN_CLUSTER = "in-cluster service account"


def cluster_source(environ=os.environ) -> str | None:
    """Where Kubernetes credentials would come from, or None when no cluster is configured."""
    if environ.get("KUBERNETES_SERVICE_HOST") and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file():
        return IN_CLUSTER
    kubeconfig = environ.get("KUBECONFIG")
    if kubeconfig:
        return f"KUBECONFIG={kubeconfig}" if all(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p) else None
    default = Path(environ.get("HOME", "~")).expanduser() / ".kube" / "config"
    return str(default) if default.is_file() else None


def client_configuration(source: str, field: str):
    """A kubernetes.client.Configuration loaded from `source` (what cluster_source found).

    Raises:
        ConfigError: the credentials cannot be loaded (the message starts with `field`).
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if source == IN_CLUSTER:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=source.removeprefix("KUBECONFIG="), client_configuration=configuration)
    except ConfigException as err:
        raise ConfigError(f"{field}: cannot load Kubernetes credentials from {source} ({err})") from None
    return configuration


def api_refusal(where: str, what: str, status, reason, body, hint: str = "") -> StorageError:
    """One line for an API server's refusal: status, reason, its own message (from the JSON Status body) and a hint."""
    import json

    try:
        message = json.loads(body).get("message", "")
    except (TypeError, ValueError, AttributeError):
        message = str(body or "")
    message = " ".join(str(message).split())[:300]
    return StorageError(f"{where}: the API server refused to {what} ({status} {reason}): {message}{hint}")
