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
    kind: str  # "nanio" or "moto": which server the S3 tests really ran against
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
    """A real S3 API on 127.0.0.1: nanio, else moto's ThreadedMotoServer (the reason is printed)."""
    workdir = tmp_path_factory.mktemp("s3")
    proc, endpoint, why = _start_nanio(workdir)
    if proc is not None:
        print(f"\nS3 tests: nanio at {endpoint}", file=sys.stderr)
        try:
            yield S3Server("nanio", endpoint)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    print(f"\nS3 tests: falling back to moto ThreadedMotoServer because {why}", file=sys.stderr)
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield S3Server("moto", f"http://127.0.0.1:{port}")
    finally:
        server.stop()


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
