"""KServe's inference CloudEvents, parsed and checked with the cloudevents SDK.

KServe's agent (the InferenceService's `logger`, mode `all`) POSTs one event
for each request and one for each response, in binary mode: `ce-type`
`org.kubeflow.serving.inference.request` or `.response`, the same `ce-id` on
both, the V1 or V2 JSON as the body, and `ce-inferenceservicename`,
`ce-namespace`, `ce-endpoint` and `ce-component` as extensions. Keel's own
predictor (`keel serve --log-to URL`) posts the same events.

Keel's predictor batches them (CloudEvents' batch mode: a JSON array of
structured events, `application/cloudevents-batch+json`, one POST for many
calls); `parse_all` takes either.

Which model and version the traffic belongs to comes from the logger URL's
query (`?model=NAME&version=N`, which the rendered InferenceService sets), or
else from the `inferenceservicename` extension; both become parts of a storage
path, so both are checked against a strict pattern.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

from cloudevents.exceptions import GenericException
from cloudevents.http import from_http

from keel.components._common.payload_logging import BATCH_CONTENT_TYPE, REQUEST_TYPE, RESPONSE_TYPE

KINDS = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
UNKNOWN = "unknown"


class BadEvent(ValueError):
    """An event the receiver refuses (answered 4xx); `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, reason: str = "malformed"):
        super().__init__(message)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class InferenceEvent:
    """One half of a logged inference: what the write-ahead log keeps, and what the rows are built from."""

    kind: str  # "request" or "response"
    id: str
    model: str
    version: str
    time: str  # the event's own time (ISO 8601, UTC); the receiver's when the event has none
    received_at: str
    body: dict
    namespace: str | None = None
    inference_service: str | None = None
    endpoint: str | None = None

    def to_record(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_record(cls, record: bytes) -> "InferenceEvent":
        return cls(**json.loads(record))


def parse(headers: dict[str, str], body: bytes, query: dict[str, str], now: dt.datetime | None = None) -> InferenceEvent:
    """The event in an HTTP request, or BadEvent naming what is wrong with it."""
    try:
        event = from_http(headers, body)
    except GenericException as err:
        raise BadEvent(f"not a CloudEvent: {_first_line(err)}") from None
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise BadEvent(f"not a CloudEvent: {_first_line(err)}") from None
    attributes = event.get_attributes()
    kind = KINDS.get(attributes.get("type", ""))
    if kind is None:
        raise BadEvent(f"ce-type {attributes.get('type')!r}: not an inference event; expected {REQUEST_TYPE} or {RESPONSE_TYPE}",
                       status=422, reason="unknown_type")
    event_id = str(attributes.get("id") or "")
    if not event_id or len(event_id) > 256:
        raise BadEvent("ce-id: missing or longer than 256 characters; KServe joins request and response by it")
    data = event.data
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except ValueError:
            raise BadEvent("body: not JSON; an inference event carries the V1 or V2 request or response") from None
    if not isinstance(data, dict):
        raise BadEvent(f"body: a JSON {type(data).__name__}, not an object; expected the V1 or V2 JSON")
    service = attributes.get("inferenceservicename")
    model = _part("model", query.get("model") or service or UNKNOWN)
    version = _part("version", query.get("version") or UNKNOWN)
    received = (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="microseconds")
    # The SDK fills `time` with the parse time when the event has none; only a sent time is the event's.
    sent = next((v for k, v in headers.items() if k.lower() == "ce-time"), None) or _structured_time(headers, body)
    return InferenceEvent(kind=kind, id=event_id, model=model, version=version, time=_utc(sent) if sent else received,
                          received_at=received, body=data, namespace=attributes.get("namespace"),
                          inference_service=service, endpoint=attributes.get("endpoint"))


STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


def parse_all(headers: dict[str, str], body: bytes, query: dict[str, str], now: dt.datetime | None = None) -> list[InferenceEvent]:
    """The events in an HTTP request: one (binary or structured mode) or a batch; BadEvent names the first bad one."""
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if not content_type.lower().startswith(BATCH_CONTENT_TYPE):
        return [parse(headers, body, query, now)]
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadEvent("body: not JSON; a CloudEvents batch is a JSON array of structured events") from None
    if not isinstance(items, list) or not items:
        raise BadEvent("body: a CloudEvents batch is a non-empty JSON array of structured events")
    events = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadEvent(f"event {i} of the batch: a JSON {type(item).__name__}, not a structured CloudEvent")
        try:
            events.append(parse({"content-type": STRUCTURED_CONTENT_TYPE}, json.dumps(item).encode(), query, now))
        except BadEvent as err:
            raise BadEvent(f"event {i} of the batch: {err}", err.status, err.reason) from None
    return events


def _part(field: str, value: str) -> str:
    if not _PART.match(value):
        raise BadEvent(f"{field} {value[:80]!r}: use 1 to 63 letters, digits, '.', '_' or '-' (it names a storage folder)")
    return value


def _structured_time(headers: dict[str, str], body: bytes) -> str | None:
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if "cloudevents" not in content_type:
        return None
    try:
        return json.loads(body).get("time")
    except (ValueError, AttributeError):
        return None


def _utc(value: str) -> str:
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadEvent(f"ce-time {value[:40]!r}: not an RFC 3339 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
