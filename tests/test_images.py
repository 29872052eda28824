"""The container images: the image map, the Dockerfiles, and (slow) the real podman builds.

The slow tests build keel-base and keel-serving with podman (layers are
cached between runs), then run a step inside keel-base, serve a model from
keel-serving over HTTP, check the user, labels, SBOM and secret scan, and
run the whole pipeline through kfp.local's DockerRunner on podman's API.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import io
from pathlib import Path

import pytest

from keel.components._common.images import (
    COMPONENT_IMAGES, COMPONENT_MODULES, IMAGE_NAMES, KEEL_VERSION, SERVING_IMAGE, image)
from keel.images import requirements, sbom, scan

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = {name: REPO / "images" / name / "Dockerfile" for name in IMAGE_NAMES}


# --- the image map --------------------------------------------------------------------------------------------

def test_every_component_has_a_module_and_an_image(compiled_ir):
    executors = compiled_ir["deploymentSpec"]["executors"]
    functions = {e["container"]["args"][e["container"]["args"].index("--function_to_execute") + 1] for e in executors.values()}
    # every step of the pipelines, no stale entry; submit_pytorchjob is a standalone component
    # (the train step submits PyTorchJobs itself), compiled in components/train_deep/tests.
    assert functions | {"submit_pytorchjob"} == set(COMPONENT_MODULES)
    assert set(COMPONENT_MODULES) <= set(COMPONENT_IMAGES)
    for executor in executors.values():
        container = executor["container"]
        function = container["args"][container["args"].index("--function_to_execute") + 1]
        assert container["image"] == COMPONENT_IMAGES[function]
        assert container["command"] == ["python3", "-m", "keel.components.executor"]  # containerized: nothing installed at start


def test_tags_are_the_package_version_and_every_image_has_a_dockerfile():
    for ref in set(COMPONENT_IMAGES.values()):
        assert ref.endswith(f":{KEEL_VERSION}") and not ref.endswith(":latest")
        assert DOCKERFILES[ref.rsplit("/keel-", 1)[1].split(":")[0]].exists()
    assert COMPONENT_IMAGES["serve"] == SERVING_IMAGE
    with pytest.raises(ValueError, match="unknown image 'gpu'"):
        image("gpu")


def test_the_executor_runs_a_step_by_name(tmp_path):
    # The same entry point the images run: python -m keel.components.executor, given KFP's executor input.
    import pandas as pd

    source = tmp_path / "t.csv"
    pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", "b", "a", "b"]}).to_csv(source, index=False)
    output = tmp_path / "out" / "raw"
    executor_input = {
        "inputs": {"parameterValues": {"data": {"source": str(source)}, "target": {"column": "y", "task": "binary", "positive_values": ["b"]},
                                       "registry": {"store": str(tmp_path / "store")}}},
        "outputs": {"artifacts": {"raw": {"artifacts": [{"name": "raw", "type": {"schemaTitle": "system.Dataset"}, "uri": str(output)}]}},
                    "outputFile": str(tmp_path / "executor_output.json")},
    }
    result = subprocess.run([_python(), "-m", "keel.components.executor",
                             "--executor_input", json.dumps(executor_input), "--function_to_execute", "ingest_data"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "executor_output.json").read_text())
    assert written["artifacts"]["raw"]["artifacts"][0]["metadata"]["rows"] == 4
    assert (tmp_path / "store" / "datasets" / "t").is_dir()  # the step stored the dataset version
    bad = subprocess.run([_python(), "-m", "keel.components.executor", "--executor_input", "{}", "--function_to_execute", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'nope'" in bad.stderr


def _python() -> str:
    import sys

    return sys.executable


# --- the Dockerfiles --------------------------------------------------------------------------------------------

def test_dockerfiles_are_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(Path(_python()).parent / "hadolint")
    result = subprocess.run([hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_dockerfile_follows_the_image_rules(name):
    text = DOCKERFILES[name].read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM"))
    assert any(line.startswith("ARG BASE_IMAGE") for line in lines[:first_from]), "ARG BASE_IMAGE before the first FROM"
    assert sum(line.startswith("FROM") for line in lines) >= 2, "multi-stage"
    users = [line for line in lines if line.startswith("USER")]
    assert users and re.fullmatch(r"USER 1000(:0)?", users[-1]), "runs as the numeric non-root user"
    assert not any(line.startswith("ENTRYPOINT") for line in lines) and ":latest" not in text
    assert re.search(r'CMD \["python3", "-(m|c)"', text)
    # Dependencies come from the shared pins, and before any source is copied (the layer cache survives code changes).
    installs = [i for i, line in enumerate(lines) if "pip install" in line and "-c /" in line]
    assert installs, "installs with -c constraints"
    copies_source = [i for i, line in enumerate(lines) if line.startswith("COPY components")]
    assert all(i > installs[0] for i in copies_source)


def test_requirements_come_from_setup_cfg():
    base = requirements.requirements(str(REPO / "setup.cfg"), ["cluster"])
    # Governance runs in the base image: fairlearn for the fairness step, shap for explain (and :explain),
    # cryptography for signed and encrypted bundles.
    assert "kfp>=2.17" in base and "kserve" in base and {"fairlearn", "shap", "cryptography"} <= set(base)
    assert {"kserve", "shap", "PyJWT", "uvloop"} <= set(requirements.requirements(str(REPO / "setup.cfg"), ["serving"]))
    # onnxruntime: the predictor serves ONNX image models without torch.
    assert requirements.requirements(str(REPO / "setup.cfg"), ["serving"], only_extras=True) == [
        "kserve", "PyJWT", "uvloop", "onnxruntime"]
    assert "xgboost-cpu" in requirements.requirements(str(REPO / "setup.cfg"), [], replace={"xgboost": "xgboost-cpu"})
    with pytest.raises(SystemExit, match="no such requirement"):
        requirements.requirements(str(REPO / "setup.cfg"), [], replace={"xgb": "x"})
    with pytest.raises(SystemExit, match="no extra 'gpu'"):
        requirements.requirements(str(REPO / "setup.cfg"), ["gpu"])


def test_sbom_adds_debian_packages(tmp_path):
    status = tmp_path / "status"
    status.write_text("Package: python3.11\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.11.2-6\nDescription: x\n y\n\n"
                      "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n")
    merged = sbom.merge({"bomFormat": "CycloneDX", "components": [{"name": "pandas", "purl": "pkg:pypi/pandas@2.2.3"}]},
                        sbom.dpkg_packages(str(status)))
    purls = [c["purl"] for c in merged["components"]]
    assert purls == ["pkg:pypi/pandas@2.2.3", "pkg:deb/debian/python3.11@3.11.2-6?arch=amd64&distro=debian-12"]
    app = tmp_path / "app" / "keel_ml-0.1.0.dist-info"
    app.mkdir(parents=True)
    (app / "METADATA").write_text("Metadata-Version: 2.1\nName: keel-ml\nVersion: 0.1.0\n")
    assert [c["purl"] for c in sbom.site_components(str(tmp_path / "app"))] == ["pkg:pypi/keel-ml@0.1.0"]
    # --extend: Keel's entry added to an SBOM made earlier (keel-base's cached environment SBOM).
    (tmp_path / "env.json").write_text(json.dumps(merged))
    assert sbom.main(["--extend", str(tmp_path / "env.json"), str(tmp_path / "out.json"), str(tmp_path / "app")]) == 0
    assert [c["purl"] for c in json.loads((tmp_path / "out.json").read_text())["components"]][-1] == "pkg:pypi/keel-ml@0.1.0"
    with pytest.raises(SystemExit, match="usage"):
        sbom.main(["--extend", "only-one"])


# --- the secret scan (on archives made here, then on the real images below) ------------------------------------

PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW" * 2


@pytest.mark.parametrize("path, content, reason", [
    ("home/keel/.aws/credentials", "[default]\n", "a credential file"),
    ("root/.ssh/id_ed25519", PRIVATE_KEY, "private key or access token"),
    ("opt/app/settings.py", "KEY = 'AKIAZ7ZQ3ZQ3ZQ3ZQ3ZQ'\n", "AKIAZ7ZQ3ZQ3"),
    ("etc/pip.conf", "[global]\nindex-url = https://ci:s3cr3t@pypi.example.com/simple\n", "a password inside a URL"),
    ("opt/app/ci.sh", "export GH=ghp_" + "a" * 36 + "\n", "ghp_"),
])
def test_scan_finds_a_planted_credential(path, content, reason):
    assert any(reason in r for r in scan.scan_file(path, content.encode()))


def test_scan_passes_documentation_examples():
    assert scan.scan_file("usr/lib/python3/site-packages/botocore/docs.py", b"key AKIAIOSFODNN7EXAMPLE") == []
    assert scan.scan_file("usr/share/doc/x.md", b"see https://user:password@host/") == []  # not a config file


def test_scan_reads_every_layer_and_the_config(tmp_path):
    # A docker-archive whose second layer deletes the credential the first added: it is still found.
    def layer(files: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    config = {"config": {"Env": ["PATH=/usr/bin", "API_TOKEN=abc123", "KEEL_SERVE_TOKEN_FILE=/var/run/token"]},
              "history": [{"created_by": "RUN |1 DB_PASSWORD=hunter2 /bin/sh -c make"}]}
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in {"manifest.json": json.dumps([{"Config": "c.json", "Layers": ["1.tar", "2.tar"]}]).encode(),
                           "c.json": json.dumps(config).encode(),
                           "1.tar": layer({"root/.netrc": b"machine x login y password z\n", "etc/ok": b"fine"}),
                           "2.tar": layer({"root/.wh..netrc": b""})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    found = [str(f) for f in scan.scan_archive(archive)]
    assert "layer 1: /root/.netrc: a credential file" in found
    assert "config: Env: API_TOKEN has a value baked in" in found
    assert any("DB_PASSWORD set to a value" in f for f in found)
    assert not any("KEEL_SERVE_TOKEN_FILE" in f for f in found)  # a path to a mounted secret is fine


def test_push_refuses_missing_registry_or_tag():
    from keel.images.push import main

    assert main(["--tag", "0.1.0"]) == 2
    assert main(["--registry", "registry.example.com/ml"]) == 2
    assert main(["--registry", "registry.example.com/ml", "--tag", "latest"]) == 2
    assert main(["--registry", "https://registry.example.com", "--tag", "0.1.0"]) == 2


@pytest.fixture(scope="module")
def compiled_ir(tmp_path_factory):
    import yaml

    from keel.pipelines.kfp.compile import compile_pipelines

    paths = compile_pipelines(tmp_path_factory.mktemp("ir"))
    # Every step of every pipeline: the tuned training pipeline's, the vision, backfill and monitoring pipelines' executors.
    executors = {}
    for name in ("training-tuned.yaml", "vision.yaml", "backfill.yaml", "monitoring.yaml"):
        ir = next(yaml.safe_load_all(next(p for p in paths if p.name == name).read_text()))
        executors.update(ir["deploymentSpec"]["executors"])
    return {"deploymentSpec": {"executors": executors}}


def test_podmans_no_such_container_reads_as_not_found_during_a_docker_run():
    # kfp.local tolerates NotFound for an auto-removed container; podman answers 500 instead of 404.
    import docker.api.client
    import docker.errors
    import requests

    from keel.pipelines.local.docker_runner import removed_container_is_not_found

    def http_error(status, message):
        response = requests.Response()
        response.status_code, response._content = status, json.dumps({"message": message}).encode()
        return requests.exceptions.HTTPError(response=response)

    gone = http_error(500, "container 77c4 does not exist in database: no such container")
    with removed_container_is_not_found():
        with pytest.raises(docker.errors.NotFound):
            docker.api.client.create_api_error_from_http_exception(gone)
        with pytest.raises(docker.errors.APIError) as other:  # any other 500 stays what it is
            docker.api.client.create_api_error_from_http_exception(http_error(500, "disk full"))
        assert not isinstance(other.value, docker.errors.NotFound)
    with pytest.raises(docker.errors.APIError) as outside:
        docker.api.client.create_api_error_from_http_exception(gone)
    assert not isinstance(outside.value, docker.errors.NotFound)


def test_the_docker_runner_waits_on_a_silent_step():
    # kfp.local makes its client with docker.from_env(): within a docker run, that client has no read timeout.
    import docker

    from keel.pipelines.local.docker_runner import no_log_timeout

    environment = {"DOCKER_HOST": "unix:///nonexistent.sock"}
    assert docker.from_env(version="1.41", environment=environment).api.timeout == 60
    with no_log_timeout():
        assert docker.from_env(version="1.41", environment=environment).api.timeout is None
    assert docker.from_env(version="1.41", environment=environment).api.timeout == 60
