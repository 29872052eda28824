"""What KServe's payload logging and Keel's receiver agree on, shared by the predictor (which can post the events
itself), the receiver (which parses them) and the deploy section (which points KServe's logger at the receiver)."""

from __future__ import annotations

import urllib.parse

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
# CloudEvents' batch content mode: a JSON array of structured events (Keel's predictor sends these; KServe's
# agent sends one binary-mode event per POST).
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


def receiver_url_problem(url: str) -> str | None:
    """Why `url` cannot be keel-monitor's base URL (the model and version query is added to it), or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "use an http:// or https:// URL of the keel-monitor Service"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "give the bare service URL (no credentials, query or fragment); the model and version are added to it"
    return None


def receiver_url(base: str, model: str, version) -> str:
    """Where one model version's events go: the receiver partitions what it stores by this query."""
    return f"{base.rstrip('/')}/?{urllib.parse.urlencode({'model': model, 'version': str(version)})}"
