"""Runs podman with Keel's settings (images/containers.conf) and clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CONTAINERS_CONF = Path(__file__).resolve().parent.parent / "containers.conf"


class PodmanError(RuntimeError):
    """podman is missing or a podman command failed; the message says which and why."""


def env() -> dict:
    environment = dict(os.environ)
    # runc and the ulimits this kind of host needs; an operator's own CONTAINERS_CONF wins.
    if CONTAINERS_CONF.exists():
        environment.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return environment


def podman(*args: str, capture: bool = True, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    if shutil.which("podman") is None:
        raise PodmanError("podman is not installed (Debian: apt-get install podman buildah runc)")
    result = subprocess.run(["podman", *args], env=env(), text=True,
                            capture_output=capture, **kwargs)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if capture else []
        raise PodmanError(f"podman {args[0]} failed (exit {result.returncode})" + (f": {detail[0]}" if detail else ""))
    return result


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def image_size(ref: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())
