"""A stand-in for the Kubernetes API server (mock: no API server, kind or envtest can run here)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
