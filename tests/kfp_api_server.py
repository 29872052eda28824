"""A fake Kubeflow Pipelines v2beta1 API server for contract tests of `keel submit` and `keel schedule`.

It implements the handful of endpoints kfp.Client 2.17 calls for them, answers with the JSON
shapes of kfp_server_api's models (snake_case fields, RFC 3339 timestamps, proto3's omitted
empty lists, grpc-gateway error bodies) and records every request: method, path, query,
headers, JSON body and multipart upload. Standard library only; 127.0.0.1, a free port.

By hand: `python tests/kfp_api_server.py` serves until Ctrl-C and prints its URL.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
# google.rpc.Code values in grpc-gateway error bodies.
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}


@dataclass
class Request:
    method: str
    path: str  # without the server's prefix
    query: dict[str, str]  # the first value of each parameter
    headers: dict[str, str]  # lower-case names
    json: Any = None
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # multipart field -> (filename, content)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    def body(self) -> dict:
        return {"error": self.message, "code": _GRPC_CODES.get(self.status, 2), "message": self.message, "details": []}


class FakeKfp:
    """The fake API; `with FakeKfp() as kfp:` serves at kfp.url.

    Args:
        token: when set, every request needs `Authorization: Bearer <token>` (else 401, as an auth proxy answers).
        multi_user: what the health check reports; experiments then need a namespace.
        run_states: the state GET runs/{id} reports on its 1st, 2nd... call (the last one repeats).
        task_states: per call, {task display name: state} reported as run_details.task_details.
        prefix: a path prefix the API lives under, like the dashboard's /pipeline.
        answer_all: (status, headers, body) for every request: a server that is not KFP.
    """

    def __init__(self, *, token: str | None = None, multi_user: bool = False, run_states=("RUNNING", "RUNNING", "SUCCEEDED"),
                 task_states=None, prefix: str = "", answer_all: tuple[int, dict, bytes] | None = None):
        self.token, self.multi_user, self.prefix, self.answer_all = token, multi_user, prefix.rstrip("/"), answer_all
        self.run_states, self.task_states = list(run_states), list(task_states or [])
        self.requests: list[Request] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self.uploads: dict[str, bytes] = {}  # pipeline_version_id -> the uploaded file
        self.fail_next: list[tuple[str, str, int]] = []  # (method, path regex, status), each used once
        self._polls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeKfp:
        fake = self

        class Handler(_Handler):
            kfp = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeKfp:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    def find(self, method: str, path: str) -> list[Request]:
        """The recorded requests to `path` (a regex matched in full, without the prefix)."""
        return [r for r in self.requests if r.method == method and re.fullmatch(path, r.path)]

    # ------------------------------------------------------------------ dispatch

    def handle(self, request: Request) -> tuple[int, dict]:
        with self._lock:
            self.requests.append(request)
            for i, (method, pattern, status) in enumerate(self.fail_next):
                if method == request.method and re.fullmatch(pattern, request.path):
                    del self.fail_next[i]
                    raise ApiError(status, "injected failure")
            if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthenticated: the request has no valid bearer token")
            for method, pattern, name in _ROUTES:
                match = re.fullmatch(API + pattern, request.path)
                if match and method == request.method:
                    return 200, getattr(self, name)(request, **match.groupdict())
            raise ApiError(404, "Not Found")

    def _healthz(self, request: Request) -> dict:
        return {"commit_sha": "fake", "tag_name": "2.5.0", "multi_user": self.multi_user, "pipeline_store": "database"}

    def _list_pipelines(self, request: Request) -> dict:
        namespace = request.query.get("namespace", "")
        found = [p for p in self.pipelines.values() if p.get("namespace", "") == namespace and _matches(p, request)]
        return {"pipelines": found, "total_size": len(found)} if found else {}

    def _upload_pipeline(self, request: Request) -> dict:
        name = request.query.get("name") or request.query.get("display_name")
        if not name or "uploadfile" not in request.files:
            raise ApiError(400, "Invalid input error: a pipeline needs a name and an uploadfile")
        if any(p["display_name"] == name for p in self.pipelines.values()):
            raise ApiError(409, f"Already exist error: pipeline {name} already exists")
        pipeline = {"pipeline_id": str(uuid.uuid4()), "display_name": name, "name": name, "created_at": _now(),
                    "description": request.query.get("description", "")}
        if request.query.get("namespace"):
            pipeline["namespace"] = request.query["namespace"]
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self.versions[pipeline["pipeline_id"]] = []
        self._add_version(pipeline["pipeline_id"], name, request)  # KFP's upload makes a first version, named like the pipeline
        return pipeline

    def _upload_version(self, request: Request) -> dict:
        pipeline_id, name = request.query.get("pipelineid"), request.query.get("name")
        if pipeline_id not in self.pipelines:
            raise ApiError(404, f"Pipeline {pipeline_id} not found")
        if any(v["display_name"] == name for v in self.versions[pipeline_id]):
            raise ApiError(409, f"Already exist error: version {name} already exists")
        return self._add_version(pipeline_id, name, request)

    def _add_version(self, pipeline_id: str, name: str, request: Request) -> dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()), "display_name": name, "name": name,
                   "created_at": _now(), "description": request.query.get("description", "")}
        self.versions[pipeline_id].append(version)
        self.uploads[version["pipeline_version_id"]] = request.files["uploadfile"][1]
        return version

    def _list_versions(self, request: Request, pipeline_id: str) -> dict:
        if pipeline_id not in self.pipelines:
            raise ApiError(404, f"Pipeline {pipeline_id} not found")
        found = [v for v in self.versions[pipeline_id] if _matches(v, request)]
        return {"pipeline_versions": found, "total_size": len(found)} if found else {}

    def _list_experiments(self, request: Request) -> dict:
        namespace = request.query.get("namespace", "")
        found = [e for e in self.experiments.values() if e.get("namespace", "") == namespace and _matches(e, request)]
        return {"experiments": found, "total_size": len(found)} if found else {}

    def _create_experiment(self, request: Request) -> dict:
        body = request.json or {}
        if self.multi_user and not body.get("namespace"):
            raise ApiError(400, "Invalid input error: in multi-user mode, an experiment needs a namespace")
        experiment = {"experiment_id": str(uuid.uuid4()), "display_name": body.get("display_name"), "created_at": _now(),
                      "storage_state": "AVAILABLE", "namespace": body.get("namespace") or ""}
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _check_references(self, body: dict) -> None:
        if body.get("experiment_id") not in self.experiments:
            raise ApiError(404, f"Experiment {body.get('experiment_id')} not found")
        ref = body.get("pipeline_version_reference") or {}
        if not any(v["pipeline_version_id"] == ref.get("pipeline_version_id") for v in self.versions.get(ref.get("pipeline_id"), [])):
            raise ApiError(404, f"Pipeline version {ref} not found")

    def _create_run(self, request: Request) -> dict:
        body = request.json or {}
        self._check_references(body)
        run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": _now(), "storage_state": "AVAILABLE"}
        self.runs[run["run_id"]] = run
        return run

    def _get_run(self, request: Request, run_id: str) -> dict:
        if run_id not in self.runs:
            raise ApiError(404, f"Run {run_id} not found")
        call = self._polls[run_id] = self._polls.get(run_id, -1) + 1
        run = dict(self.runs[run_id], state=self.run_states[min(call, len(self.run_states) - 1)])
        if self.task_states:
            tasks = self.task_states[min(call, len(self.task_states) - 1)]
            run["run_details"] = {"task_details": [
                {"run_id": run_id, "task_id": f"task-{name}", "display_name": name, "state": state, "create_time": run["created_at"]}
                for name, state in tasks.items()]}
        if run["state"] in TERMINAL:
            run["finished_at"] = _now()
        if run["state"] == "FAILED":
            run["error"] = {"code": 2, "message": "task train-model failed: exit status 1", "details": []}
        return run

    def _list_recurring_runs(self, request: Request) -> dict:
        experiment = request.query.get("experiment_id")
        found = [r for r in self.recurring_runs.values()
                 if (not experiment or r.get("experiment_id") == experiment) and _matches(r, request)]
        return {"recurringRuns": found, "total_size": len(found)} if found else {}

    def _create_recurring_run(self, request: Request) -> dict:
        body = request.json or {}
        self._check_references(body)
        recurring = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED", "created_at": _now(), "updated_at": _now()}
        self.recurring_runs[recurring["recurring_run_id"]] = recurring
        return recurring


_ROUTES = (
    ("GET", "/healthz", "_healthz"),
    ("GET", "/pipelines", "_list_pipelines"),
    ("POST", "/pipelines/upload", "_upload_pipeline"),
    ("POST", "/pipelines/upload_version", "_upload_version"),
    ("GET", "/pipelines/(?P<pipeline_id>[^/]+)/versions", "_list_versions"),
    ("GET", "/experiments", "_list_experiments"),
    ("POST", "/experiments", "_create_experiment"),
    ("POST", "/runs", "_create_run"),
    ("GET", "/runs/(?P<run_id>[^/:]+)", "_get_run"),
    ("GET", "/recurringruns", "_list_recurring_runs"),
    ("POST", "/recurringruns", "_create_recurring_run"),
)


def _matches(item: dict, request: Request) -> bool:
    """The API's `filter` query: the SDK sends display_name EQUALS; anything else is a contract change."""
    if "filter" not in request.query:
        return True
    try:
        predicates = json.loads(request.query["filter"])["predicates"]
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, f"Invalid input error: filter {request.query['filter']!r}") from None
    for predicate in predicates:
        value = predicate.get("stringValue", predicate.get("string_value"))
        if predicate.get("key") != "display_name" or predicate.get("operation") not in ("EQUALS", 1) or value is None:
            raise ApiError(400, f"Invalid input error: unsupported predicate {predicate}")
        if item.get("display_name") != value:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    kfp: FakeKfp

    def log_message(self, *args) -> None:  # quiet test output
        pass

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = url.path[len(self.kfp.prefix):] if url.path.startswith(self.kfp.prefix + "/") else None
        request = Request(self.command, path if path is not None else url.path,
                          {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
                          {k.lower(): v for k, v in self.headers.items()})
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("application/json") and raw:
            request.json = json.loads(raw)
        elif content_type.startswith("multipart/form-data"):
            request.files = _multipart(content_type, raw)
        if self.kfp.answer_all:
            status, headers, body = self.kfp.answer_all
            self.kfp.requests.append(request)
            return self._reply(status, body, headers)
        try:
            if path is None:
                self.kfp.requests.append(request)
                raise ApiError(404, "Not Found")
            status, doc = self.kfp.handle(request)
        except ApiError as err:
            status, doc = err.status, err.body()
        self._reply(status, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    def _reply(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = do_PATCH = _serve


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str, bytes]]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    return {part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_payload(decode=True))
            for part in message.iter_parts()}


if __name__ == "__main__":
    with FakeKfp() as server:
        print(f"fake KFP API at {server.url} (Ctrl-C stops it)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
