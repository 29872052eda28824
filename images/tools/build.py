"""Builds Keel's images with podman: `python -m keel.images.build [NAME ...]` (`make images`).

For each image it builds images/<name>/Dockerfile from a clean copy of the
working tree, then writes the image's SBOM to build/images/<name>.cdx.json,
checks every layer for baked-in secrets (keel.images.scan) and prints the
size and build time. Derived images (serving, torch, tensorflow) build on
keel-base, which builds on a Debian root made with debootstrap when no
registry is reachable (BASE_IMAGE overrides it, e.g. a mirrored debian:bookworm
with python3 installed).
"""

from __future__ import annotations

import argparse
import configparser
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keel.components._common.images import IMAGE_NAMES, KEEL_VERSION, image
from keel.images.podman import PodmanError, image_exists, image_size, podman

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "build" / "images"
ROOT_IMAGE = "localhost/keel-debian:bookworm"
DEBIAN_MIRROR = os.environ.get("KEEL_DEBIAN_MIRROR", "http://deb.debian.org/debian")
ROOT_PACKAGES = "python3,python3-venv,ca-certificates,libgomp1"
# Dropped from the debootstrap root before import: apt's caches and lists,
# docs and translations (~150 MB no step reads).
ROOT_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SOURCE_DIRS = ("components", "pipelines", "images")
SOURCE_FILES = ("setup.cfg", "README.md")


def ensure_root_image() -> str:
    """The Debian root every image starts from; made once with debootstrap and `podman import`."""
    base = os.environ.get("BASE_IMAGE")
    if base:
        return base
    if image_exists(ROOT_IMAGE):
        return ROOT_IMAGE
    if shutil.which("debootstrap") is None:
        raise PodmanError(f"no {ROOT_IMAGE} image and no debootstrap to make one (apt-get install debootstrap), "
                          "or set BASE_IMAGE to a Debian bookworm image with python3 and python3-venv")
    with tempfile.TemporaryDirectory(prefix="keel-rootfs-", dir=REPO / "build") as tmp:
        root = Path(tmp) / "rootfs"
        started = time.monotonic()
        result = subprocess.run(["debootstrap", "--variant=minbase", f"--include={ROOT_PACKAGES}", "bookworm", str(root), DEBIAN_MIRROR],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise PodmanError(f"debootstrap failed (exit {result.returncode}): {(result.stdout + result.stderr).strip().splitlines()[-1:]}")
        for path in ROOT_TRIM:
            for child in (root / path).glob("*"):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        podman("import", "--change", "CMD [\"/bin/bash\"]", "-", ROOT_IMAGE, stdin=tar.stdout)
        tar.wait()
        print(f"images: made {ROOT_IMAGE} with debootstrap in {time.monotonic() - started:.0f} s", flush=True)
    return ROOT_IMAGE


def stage_context(dest: Path) -> Path:
    """A build context with only the files the Dockerfiles copy (never .venv, runs or secrets)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", *SOURCE_DIRS, *SOURCE_FILES],
                            cwd=REPO, capture_output=True, text=True)
    files = listed.stdout.splitlines() if listed.returncode == 0 else [
        str(p.relative_to(REPO)) for d in SOURCE_DIRS for p in (REPO / d).rglob("*") if p.is_file()] + list(SOURCE_FILES)
    for name in files:
        source = REPO / name
        if source.is_file() and "__pycache__" not in source.parts:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def pip_mounts(workdir: Path) -> list[str]:
    """Read-only mounts that let pip inside a build reach what pip here reaches.

    The host's CA bundle (a TLS-inspecting proxy's root, say) and the host's
    pip index settings, with any file:// index or wheel directory they name.
    Mounted, never copied or passed as build arguments, so none of it lands
    in a layer or in the image history.
    """
    mounts = []
    if CA_BUNDLE.exists():
        mounts += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    settings = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    config = configparser.ConfigParser()
    config["global"] = {}
    for line in settings.splitlines():
        key, _, value = line.partition("=")
        section, _, option = key.partition(".")
        if option in ("index-url", "extra-index-url", "find-links", "cert", "trusted-host"):
            config["global"][option] = value.strip().strip("'")
            for token in config["global"][option].split():
                path = Path(token.removeprefix("file://"))
                if (token.startswith("file://") or token.startswith("/")) and path.exists():
                    top = Path(*path.parts[:3]) if len(path.parts) > 3 else path  # e.g. /opt/pypi
                    mounts += ["-v", f"{top}:{top}:ro"]
    pip_conf = workdir / "pip.conf"
    with open(pip_conf, "w") as handle:
        config.write(handle)
    return [*mounts, "-v", f"{pip_conf}:/etc/pip.conf:ro"]


def revision() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", *SOURCE_DIRS, *SOURCE_FILES], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return (result.stdout.strip() or "unknown") + ("-dirty" if dirty else "")


def created() -> str:
    """The commit's time, not the clock's: the same revision builds the same labels, so its layers stay cached."""
    result = subprocess.run(["git", "log", "-1", "--format=%cI"], cwd=REPO, capture_output=True, text=True)
    if result.returncode == 0 and result.stdout.strip():
        return dt.datetime.fromisoformat(result.stdout.strip()).astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(name: str, *, cache: bool = True) -> dict:
    """Builds one image and returns its figures: {"image", "seconds", "bytes", "sbom_components", "secrets"}."""
    from keel.images.scan import scan_image

    if name not in IMAGE_NAMES:
        raise PodmanError(f"unknown image {name!r}; images/ has {', '.join(IMAGE_NAMES)}")
    base = ensure_root_image() if name == "base" else image("base")
    if name != "base" and not image_exists(base):
        build("base", cache=cache)
    OUT.mkdir(parents=True, exist_ok=True)
    tag = image(name)
    with tempfile.TemporaryDirectory(prefix="keel-build-", dir=REPO / "build") as tmp:
        context = stage_context(Path(tmp) / "context")
        args = ["build", "--network", "host", "-f", str(context / "images" / name / "Dockerfile"), "-t", tag,
                "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"KEEL_VERSION={KEEL_VERSION}",
                "--build-arg", f"KEEL_REVISION={revision()}",
                "--build-arg", f"KEEL_CREATED={created()}",
                *pip_mounts(Path(tmp)), *([] if cache else ["--no-cache"]), str(context)]
        started = time.monotonic()
        log = OUT / f"{name}.build.log"
        with open(log, "w") as handle:
            result = podman(*args, capture=False, check=False, stdout=handle, stderr=subprocess.STDOUT)
        seconds = time.monotonic() - started
        if result.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise PodmanError(f"building {tag} failed (full log: {log}):\n  " + "\n  ".join(tail))
    layers = layer_digest(tag)
    record = OUT / f"{name}.json"
    previous = json.loads(record.read_text()) if record.exists() else {}
    if previous.get("layers") == layers and previous.get("secrets") == 0 and (OUT / f"{name}.cdx.json").exists():
        # The same layers as the last build that passed: its SBOM and scan still hold (labels are not layers).
        sbom, findings = previous["sbom_components"], []
    else:
        sbom = export_sbom(tag, OUT / f"{name}.cdx.json")
        findings = scan_image(tag)
    figures = {"image": tag, "seconds": round(seconds, 1), "bytes": image_size(tag), "sbom_components": sbom,
               "secrets": len(findings), "layers": layers}
    record.write_text(json.dumps(figures, indent=1))
    print(f"images: {tag}: {figures['bytes'] / 1e9:.2f} GB, built in {seconds:.0f} s, SBOM {sbom} components "
          f"-> {OUT / (name + '.cdx.json')}, secrets: {len(findings) or 'none'}", flush=True)
    if findings:
        raise PodmanError(f"{tag} has credentials baked into its layers:\n  " + "\n  ".join(map(str, findings)))
    return figures


def layer_digest(tag: str) -> str:
    """One digest over the image's layers: what a scan and an SBOM depend on."""
    import hashlib

    layers = podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", tag).stdout
    return hashlib.sha256(layers.encode()).hexdigest()


def export_sbom(tag: str, dest: Path) -> int:
    """Copies the image's /opt/keel/sbom.cdx.json out; returns its component count."""
    document = podman("run", "--rm", "--network", "none", "--entrypoint", "cat", tag, "/opt/keel/sbom.cdx.json").stdout
    sbom = json.loads(document)
    dest.write_text(document)
    return len(sbom.get("components", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keel.images.build", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"images to build (default: all of {', '.join(IMAGE_NAMES)})")
    parser.add_argument("--no-cache", dest="cache", action="store_false", help="rebuild every layer (a cold build)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in IMAGE_NAMES]
    if unknown:
        parser.error(f"unknown image {unknown[0]!r}; choose from {', '.join(IMAGE_NAMES)}")
    try:
        for name in args.names or IMAGE_NAMES:
            build(name, cache=args.cache)
    except PodmanError as err:
        print(f"images: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
