"""`keel serve`: the CLI starts the same predictor on 127.0.0.1, for a version, a model or 'latest'."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from testkit.models import make_bundle
from testkit.predictor import LineReader

pytestmark = pytest.mark.slow
KEEL = str(Path(sys.executable).with_name("keel"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("store"))
    # The default config's model, then one with another name (what a quick-path run registers):
    # `latest` is the newest version in the store whichever model, not the config's model.
    make_bundle(store, rows=800, model_name="loans-high-risk")
    make_bundle(store, rows=800, model_name="credit-quick", seed=1)
    return store


def _serve(*args, env=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_SERVE_")}
    environment.update(env or {})
    process = subprocess.Popen([KEEL, "serve", *args, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=environment, start_new_session=True)
    out = LineReader(process.stdout)
    if out.wait_for(lambda line: line.strip().startswith("auth:")) is None:
        raise AssertionError("keel serve exited:\n" + out.text())
    return process, out.text()


def _stop(process):
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=20)


def test_latest_is_the_newest_version_in_the_configured_store(store):
    process, banner = _serve("--store", store, env={"KEEL_SERVE_TOKEN": "cli-test-token-0123456789"})
    try:
        assert "serving credit-quick v1" in banner and "auth: on" in banner
        url = banner.split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        request = urllib.request.Request(f"{url}/v1/models", headers={"authorization": "Bearer cli-test-token-0123456789"})
        assert json.loads(urllib.request.urlopen(request, timeout=30).read()) == {"models": ["credit-quick"]}
    finally:
        _stop(process)


def test_a_version_uri_with_a_token_file_and_another_name(store, tmp_path):
    (tmp_path / "token").write_text("file-token-0123456789abcdef")
    process, banner = _serve(f"{store}/registry/loans-high-risk/v1", "--name", "risk", "--token-file", str(tmp_path / "token"))
    try:
        assert "serving loans-high-risk v1" in banner and "as 'risk'" in banner and "auth: on" in banner
        url = banner.split(" at ", 1)[1].split()[0]
        request = urllib.request.Request(f"{url}/v2/models/risk")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == 401
    finally:
        _stop(process)


@pytest.mark.parametrize("args, message", [
    (["latest", "--store", "/nonexistent-store"], "no model is registered in this store yet"),
    (["/tmp"], "not a model bundle"),
])
def test_nothing_to_serve_is_exit_2_with_one_line(args, message):
    result = subprocess.run([KEEL, "serve", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bad_flags_are_exit_2(store):
    result = subprocess.run([KEEL, "serve", "--store", store, "--port", "70000"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--port: 70000 is not a port number" in result.stderr
    result = subprocess.run([KEEL, "serve", "--store", store], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "KEEL_SERVE_MAX_ROWS": "many"})
    assert result.returncode == 2 and "KEEL_SERVE_MAX_ROWS: 'many'" in result.stderr
