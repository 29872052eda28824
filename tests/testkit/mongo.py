"""Test fixtures: a real MongoDB-wire server (SecantusDB) on 127.0.0.1.

No MongoDB server installs from the reachable registries; SecantusDB is a
WiredTiger-based server that speaks the MongoDB wire protocol, installed in the
venv as `secantusd-py`. Not used at run time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.processes import free_port, stop_process

START_TIMEOUT_S = 20.0
# The user the auth fixture provisions (in the admin database, as mongod deployments usually do).
AUTH_USER = "keel-reader"
AUTH_PASSWORD = "keel-test-mongo-pw-4f9c2a"


@dataclass
class MongoServer:
    kind: str  # which server the MongoDB tests ran against
    uri: str  # mongodb://127.0.0.1:N/?directConnection=true
    port: int

    def uri_for(self, database: str, *, user: str | None = None, options: str = "") -> str:
        """A URI naming `database` (and optionally a user, never a password)."""
        userinfo = f"{user}@" if user else ""
        extra = f"&{options}" if options else ""
        return f"mongodb://{userinfo}127.0.0.1:{self.port}/{database}?directConnection=true{extra}"


def _executable() -> Path:
    return Path(sys.executable).parent / "secantusd-py"


def _ping(port: int):
    """None once the server answers a ping, else the last error (as text)."""
    import pymongo

    client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true",
                                 serverSelectionTimeoutMS=250, connectTimeoutMS=250)
    try:
        client.admin.command("ping")
        return None
    except pymongo.errors.PyMongoError as err:
        return str(err).splitlines()[0][:200]
    finally:
        client.close()


def _start(workdir: Path, *, port: int, auth: bool = False) -> subprocess.Popen:
    """Starts secantusd-py on `port` storing in workdir/data; fails the test run if it does not answer."""
    log_path = workdir / ("secantus-auth.log" if auth else "secantus.log")
    log = open(log_path, "ab")
    command = [str(_executable()), "--host", "127.0.0.1", "--port", str(port),
               "--storage-path", str(workdir / "data"), "--log-level", "WARNING"]
    proc = subprocess.Popen(command + (["--auth"] if auth else []), stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    why = "not started"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"SecantusDB exited with {proc.returncode}: {log_path.read_text()[-500:]}")
        why = _ping(port)  # each try waits up to 250 ms for an answer, so this loop does not spin
        if why is None:
            return proc
    stop_process(proc)
    pytest.fail(f"SecantusDB did not answer on port {port} within {START_TIMEOUT_S:.0f} s ({why})")


def _require_secantus() -> None:
    if not _executable().exists():
        pytest.skip(f"SecantusDB is not installed ({_executable()} is missing; make install puts it in .venv)")


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    """A real MongoDB-wire server (SecantusDB, no auth) on 127.0.0.1; yields a MongoServer."""
    _require_secantus()
    workdir = tmp_path_factory.mktemp("mongo")
    port = free_port()
    proc = _start(workdir, port=port)
    try:
        yield MongoServer("secantusdb", f"mongodb://127.0.0.1:{port}/?directConnection=true", port)
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def mongo_auth_server(tmp_path_factory):
    """SecantusDB with --auth (SCRAM-SHA-256) and one user, AUTH_USER / AUTH_PASSWORD in the admin
    database, allowed to read and write every database."""
    import pymongo

    _require_secantus()
    workdir = tmp_path_factory.mktemp("mongo-auth")
    port = free_port()
    # SecantusDB provisions users the mongod way: create them without --auth, then restart with it.
    proc = _start(workdir, port=port)
    try:
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true")
        client.admin.command("createUser", AUTH_USER, pwd=AUTH_PASSWORD, roles=["readWriteAnyDatabase"])
        client.close()
    finally:
        stop_process(proc)
    proc = _start(workdir, port=port, auth=True)
    try:
        yield MongoServer("secantusdb --auth", f"mongodb://127.0.0.1:{port}/?directConnection=true", port)
    finally:
        stop_process(proc)
