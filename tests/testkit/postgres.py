"""Test fixture: a real PostgreSQL server on 127.0.0.1 (Debian's `postgresql` package).

initdb makes a throwaway cluster with password (SCRAM) authentication on TCP,
so tests exercise real credentials; durability is switched off (fsync,
full_page_writes) because the cluster is deleted at the end of the session.
Postgres refuses to run as root, so under root (CI containers) the cluster
belongs to the `postgres` system user the Debian package creates.
tests/testkit/system_packages.py installs the package.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.processes import free_port
from testkit.system_packages import missing_reason

USER = "keel"
PASSWORD = "keel-test-pg-password"
DATABASE = "keel"


@dataclass
class PostgresServer:
    host: str
    port: int

    @property
    def uri(self) -> str:
        """The URI a config holds: no password (that comes from PGPASSWORD)."""
        return f"postgresql://{USER}@{self.host}:{self.port}/{DATABASE}"


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries on this machine."""


@contextlib.contextmanager
def running_postgres():
    """Starts a throwaway PostgreSQL (user `keel`, password PASSWORD, database `keel`) and stops it on exit.

    Shared by the pytest fixture and `make bench-ingest`.

    Raises:
        PostgresUnavailable: no initdb/pg_ctl here.
        RuntimeError: the server did not start (the message carries its log).
    """
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(missing_reason("postgresql"))
    # Not under pytest's basetemp: that is private to the user running pytest, which the server user is not.
    workdir = Path(tempfile.mkdtemp(prefix="keel-pg-"))
    data, pwfile = workdir / "data", workdir / "pw"
    pwfile.write_text(PASSWORD)
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(pwfile, "postgres")
        os.chmod(workdir, 0o700)
    run = lambda cmd: subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        init = run([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                    "--auth-local=trust", "-E", "UTF8", "--no-sync", "--no-instructions"])
        if init.returncode:
            raise RuntimeError(f"initdb failed: {init.stderr[-800:]}")
        port = free_port()
        options = f"-h 127.0.0.1 -p {port} -k {workdir} -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        start = run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(workdir / "log"), "-w", "-t", "60", "start"])
        if start.returncode:
            log = (workdir / "log").read_text()[-800:] if (workdir / "log").exists() else ""
            raise RuntimeError(f"postgres did not start: {start.stderr[-400:]} {log}")
        try:
            made = run([str(bin_dir / "psql"), "-h", str(workdir), "-p", str(port), "-U", USER, "-d", "postgres",
                        "-c", f"CREATE DATABASE {DATABASE}"])
            if made.returncode:
                raise RuntimeError(f"CREATE DATABASE failed: {made.stderr[-400:]}")
            yield PostgresServer("127.0.0.1", port)
        finally:
            run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server with user `keel` (password PASSWORD) and database `keel`, for the session."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture
def pg(postgres_server, monkeypatch):
    """The server's URI with PGPASSWORD set, as a user's shell or a pod with the Secret mounted has it."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    return postgres_server.uri
