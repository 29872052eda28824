"""Helpers for tests and benchmarks of the predictor: real server processes and request bodies.

The test suite and `make bench-serve` drive the predictor the same way through these.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field

TOKEN = "test-token-0123456789abcdef"


def plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def v2_body(schema: dict, rows: list[dict]) -> dict:
    datatypes = {"integer": "INT64", "float": "FP64", "string": "BYTES", "boolean": "BOOL"}
    columns = list(rows[0])
    return {"inputs": [
        {"name": c, "shape": [len(rows)], "datatype": datatypes[schema["columns"][c]["type"]], "data": [r[c] for r in rows]}
        for c in columns
    ]}


@dataclass
class Predictor:
    """A running `python -m keel.components.serve` process."""

    process: subprocess.Popen
    base: str
    name: str
    token: str | None = None
    reader: LineReader = field(repr=False, default=None)

    def call(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None, auth: bool = True):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if auth and self.token:
            request.add_header("authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, _json(response.read()), dict(response.headers)
        except urllib.error.HTTPError as err:
            return err.code, _json(err.read()), dict(err.headers)

    def post(self, path: str, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def get(self, path: str, **kw):
        return self.call("GET", path, **kw)

    def logs(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self.reader.text()

    def wait_for_log(self, text: str, timeout: float = 30) -> str:
        """Blocks until a stderr line contains `text` (an event wait, not a sleep); returns all logs."""
        if self.reader.wait_for(lambda line: text in line, timeout) is None:
            raise AssertionError(f"server exited before logging {text!r}:\n" + self.logs()[-3000:])
        return self.logs()

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def _json(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")


class LineReader:
    """Reads a child's output stream on a thread, so a caller can wait for a line without
    polling or mixing select() with buffered reads."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.closed = False
        self.changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def text(self) -> str:
        with self.changed:
            return "".join(self.lines)

    def wait_for(self, predicate, timeout: float = 120) -> str | None:
        """The first line for which predicate(line) holds; None if the stream closed first."""
        def found():
            return next((line for line in self.lines if predicate(line)), None)

        with self.changed:
            if not self.changed.wait_for(lambda: found() is not None or self.closed, timeout=timeout):
                raise TimeoutError(f"no such line within {timeout} s:\n" + "".join(self.lines)[-3000:])
            return found()


def start_predictor(model_dir: str, env: dict | None = None, args: tuple = (), python: tuple = ()) -> Predictor:
    """Starts the predictor on a free port and returns once its socket listens (it says so on stderr).

    `python` replaces this interpreter, e.g. with `podman run ... IMAGE python3`
    to start the very same command inside the serving image.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_SERVE_")}
    environment.update(env or {})
    command = [*(python or (sys.executable,)), "-m", "keel.components.serve", "--model_dir", model_dir,
               "--host", "127.0.0.1", "--http_port", "0", *args]
    process = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, start_new_session=True)
    reader = LineReader(process.stderr)
    try:
        line = reader.wait_for(lambda line: line.startswith("keel-serve: listening on "))
    except TimeoutError:
        process.kill()
        raise
    if line is None:
        process.wait()
        raise RuntimeError(f"predictor exited with {process.returncode}:\n" + reader.text())
    address, name = line.split("listening on ", 1)[1].split(" model=")
    return Predictor(process, address.strip(), name.strip(), (env or {}).get("KEEL_SERVE_TOKEN"), reader)
