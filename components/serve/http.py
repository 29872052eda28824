"""The predictor's front door: one ASGI middleware for limits, auth, metrics and request logs.

One layer instead of four keeps the per-request overhead to a few
microseconds. Health endpoints (and /metrics, which holds no feature values
and which the NetworkPolicy restricts to the monitoring namespace) stay open
so that kubelet and Knative probes work without credentials.

Request logs are one JSON line per request (method, route, status, latency,
request id, caller) and never contain feature values; those are logged only by
the model, when payload logging is switched on.
"""

from __future__ import annotations

import json
import logging
import re
import time

from prometheus_client import Counter, Histogram

from keel.components.serve.auth import Authenticator

request_log = logging.getLogger("keel.serve.requests")

REQUESTS = Counter("keel_serve_requests", "Predictor HTTP requests by route and status", ["route", "method", "status"])
LATENCY = Histogram(
    "keel_serve_request_seconds", "Predictor HTTP request latency by route", ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
INPUT_WARNINGS = Counter(
    "keel_serve_input_warnings", "Served values outside the training data (policy 'warn')", ["model", "column", "kind"]
)

OPEN_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready", "/metrics"})
_OPEN_PATTERN = re.compile(r"^/v2/models/[^/]+/ready$")

# Route labels are fixed strings so that arbitrary URLs cannot grow the metric's cardinality.
_ROUTES = (
    (re.compile(r"^/v1/models/[^/]+:predict$"), "v1_predict"),
    (re.compile(r"^/v1/models/[^/]+:explain$"), "v1_explain"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$"), "v2_infer"),
    (re.compile(r"^/v2/models/[^/]+/ready$"), "v2_model_ready"),
    (re.compile(r"^/v2/models/[^/]+$"), "v2_metadata"),
    (re.compile(r"^/v1/models/[^/]+$"), "v1_model"),
    (re.compile(r"^/v1/models$"), "v1_models"),
    (re.compile(r"^/v2/health/(live|ready)$"), "health"),
    (re.compile(r"^/$"), "health"),
    (re.compile(r"^/metrics$"), "metrics"),
    (re.compile(r"^/v2$"), "v2_server"),
)


def route_of(path: str) -> str:
    for pattern, name in _ROUTES:
        if pattern.match(path):
            return name
    return "other"


def record_input_warnings(model: str, warnings) -> None:
    for w in warnings:
        INPUT_WARNINGS.labels(model, w.column, w.kind).inc()
    request_log.warning(json.dumps({"event": "input_warning", "model": model, "count": len(warnings),
                                    "first": {"field": warnings[0].where, "kind": warnings[0].kind}}))


async def invalid_input_response(_request, exc):
    """HTTP 400 for a request that fails validation; the log names the field, not the value."""
    from fastapi.responses import JSONResponse

    message = str(exc)
    request_log.info(json.dumps({"event": "rejected", "field": message.split(":", 1)[0][:120]}))
    return JSONResponse(status_code=400, content={"error": message})


async def request_validation_response(_request, exc):
    """HTTP 422 for a V2 body that does not fit the protocol's model: one line naming the field."""
    from fastapi.responses import JSONResponse

    errors = exc.errors()
    first = errors[0] if errors else {"loc": ["body"], "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = f"{where}: {first.get('msg', 'invalid')}{more}; see the V2 inference request format"
    request_log.info(json.dumps({"event": "rejected", "field": where[:120]}))
    return JSONResponse(status_code=422, content={"error": message})


async def http_error_response(_request, exc):
    """FastAPI/Starlette HTTP errors (e.g. an unparsable body) in the same {"error": ...} shape."""
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)}, headers=getattr(exc, "headers", None))


async def _reply(send, status: int, message: str, extra_headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + (extra_headers or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Gateway:
    """ASGI middleware: body-size limit, authentication, Prometheus metrics, request logs."""

    def __init__(self, app, authenticator: Authenticator, max_body_bytes: int):
        self.app = app
        self.auth = authenticator
        self.max_body = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path, method = scope["path"], scope["method"]
        route = route_of(path)
        status = [500]

        async def send_tracking(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        caller = ""
        try:
            headers = dict(scope["headers"])
            if self.auth.enabled and path not in OPEN_PATHS and not _OPEN_PATTERN.match(path):
                result = self.auth.check(headers.get(b"authorization", b"").decode("latin-1") or None)
                if not result.ok:
                    await _reply(send_tracking, 401, result.reason, [(b"www-authenticate", b'Bearer realm="keel"')])
                    return
                caller = result.subject
            if method in ("POST", "PUT", "PATCH"):
                declared = headers.get(b"content-length")
                if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                    await _reply(send_tracking, 413, f"request body over {self.max_body} bytes (KEEL_SERVE_MAX_BODY_BYTES)")
                    return
                # Read the body here so a chunked upload cannot stream past the limit.
                chunks, size, more = [], 0, True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await _reply(send_tracking, 413, f"request body over {self.max_body} bytes (KEEL_SERVE_MAX_BODY_BYTES)")
                        return
                    chunks.append(chunk)
                    more = message.get("more_body", False)
                body = b"".join(chunks)
                replayed = False

                async def receive_body():
                    nonlocal replayed
                    if replayed:
                        return await receive()
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}

                await self.app(scope, receive_body, send_tracking)
            else:
                await self.app(scope, receive, send_tracking)
        finally:
            elapsed = time.perf_counter() - start
            REQUESTS.labels(route, method, str(status[0])).inc()
            LATENCY.labels(route).observe(elapsed)
            if request_log.isEnabledFor(logging.INFO) and route not in ("health", "metrics"):
                request_log.info(json.dumps({
                    "event": "request", "method": method, "route": route, "status": status[0],
                    "ms": round(elapsed * 1000, 3), "caller": caller,
                    "request_id": dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1") or None,
                }))
