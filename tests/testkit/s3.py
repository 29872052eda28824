"""A real, signature-checking S3 server for tests: nanio (PyPI, from the dev extras) on 127.0.0.1.

No MinIO server installs here; nanio checks SigV4 signatures and stores on disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.processes import answers, free_port, stop_process

ACCESS_KEY = "keel-test-access"
SECRET_KEY = "keel-test-secret-key-0123456789"
START_TIMEOUT_S = 20.0


@dataclass
class S3Server:
    kind: str  # which server the S3 tests ran against
    endpoint: str


def start_nanio(workdir: Path):
    """nanio, a signature-checking S3 server storing on disk; (process, endpoint) or None with the reason."""
    port = free_port()
    log = open(workdir / "nanio.log", "wb")
    env = {**os.environ, "NANIO_ACCESS_KEY": ACCESS_KEY, "NANIO_SECRET_KEY": SECRET_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanio", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(workdir / "data"), "--no-access-log", "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if answers(port):
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
    proc, endpoint, why = start_nanio(workdir)
    if proc is None:
        pytest.fail(f"the S3 test server did not start: {why}")
    try:
        yield S3Server("nanio", endpoint)
    finally:
        stop_process(proc)


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
