"""The warm-start step server: a step behaves exactly like a fresh interpreter."""

import os
import subprocess
import sys

import pytest

from keel.pipelines.local.warm_start import ENV_SOCKET, StepServer

STEP = """
import os, sys
print("out", os.environ.get("STEP_VAR"), os.getcwd(), os.getpid() != int(sys.argv[2]))
print("err", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def server():
    with StepServer() as srv:
        assert srv.wait_ready()
        yield srv


def _run(server, tmp_path, *args, env=None, script=STEP):
    path = tmp_path / "step.py"
    path.write_text(script)
    environ = {**os.environ, ENV_SOCKET: server.socket_path, "STEP_VAR": "from-env", **(env or {})}
    return subprocess.run([str(server.launcher), str(path), *args], capture_output=True, text=True, cwd=tmp_path, env=environ, timeout=60)


def test_step_gets_argv_env_cwd_stdio_and_exit_status(server, tmp_path):
    result = _run(server, tmp_path, "3", str(server.process.pid))
    assert result.returncode == 3
    assert result.stdout.split() == ["out", "from-env", str(tmp_path), "True"]  # a forked child, not the server
    assert result.stderr.strip() == "err"


def test_an_exception_is_exit_1_with_its_traceback(server, tmp_path):
    result = _run(server, tmp_path, script="raise ValueError('boom')\n")
    assert result.returncode == 1 and "ValueError: boom" in result.stderr


def test_module_mode_runs_like_python_dash_m(server, tmp_path):
    environ = {**os.environ, ENV_SOCKET: server.socket_path}
    result = subprocess.run([str(server.launcher), "-m", "json.tool", "--compact"], input='{"a": [1, 2]}',
                            capture_output=True, text=True, env=environ, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == '{"a":[1,2]}'


def test_without_a_server_the_launcher_execs_the_real_interpreter(server, tmp_path):
    result = _run(server, tmp_path, "0", "0", env={ENV_SOCKET: str(tmp_path / "missing.sock")})
    assert result.returncode == 0 and result.stdout.split()[:2] == ["out", "from-env"]


def test_stop_ends_the_server_and_removes_its_files():
    srv = StepServer().start()
    assert srv.wait_ready()
    srv.stop()
    assert srv.process.returncode is not None and not srv.launcher.exists() and not os.path.exists(srv.socket_path)


def test_serving_swaps_the_interpreter_only_inside_the_block(server):
    before = sys.executable
    with server.serving():
        assert sys.executable == str(server.launcher) and os.environ[ENV_SOCKET] == server.socket_path
    assert sys.executable == before and ENV_SOCKET not in os.environ
