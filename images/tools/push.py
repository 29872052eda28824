"""Pushes built images to a registry: `python -m keel.images.push --registry R --tag T [NAME ...]` (`make push`).

Both are required: an image pushed to a guessed registry or with a guessed
tag is worse than no push. The tag is usually the package version (what the
image map names); a registry that wants another (a release candidate, say)
gets it here, and KEEL_IMAGE_REGISTRY at compile time points the pipelines
at the same place.
"""

from __future__ import annotations

import argparse
import re
import sys

from keel.components._common.images import IMAGE_NAMES, image
from keel.images.podman import PodmanError, image_exists, podman

TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # the OCI distribution spec's tag grammar


def push(registry: str, tag: str, names: list[str]) -> list[str]:
    if not registry or "://" in registry or registry.endswith("/"):
        raise PodmanError(f"REGISTRY: {registry!r}; give a host and path without scheme, e.g. registry.example.com/ml")
    if not TAG.match(tag or ""):
        raise PodmanError(f"TAG: {tag!r} is not a valid image tag (letters, digits, _ . -; at most 128)")
    if tag == "latest":
        raise PodmanError("TAG: latest is never pushed; Keel's images are tagged with a version")
    pushed = []
    for name in names:
        local = image(name)
        if not image_exists(local):
            raise PodmanError(f"{local} is not built here; run `make image-{name}` first")
        remote = f"{registry}/keel-{name}:{tag}"
        podman("tag", local, remote)
        podman("push", remote, capture=False)
        pushed.append(remote)
        print(f"pushed {remote}", flush=True)
    return pushed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keel.images.push", description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default="", help="e.g. registry.example.com/ml (required)")
    parser.add_argument("--tag", default="", help="e.g. 0.1.0 (required; never latest)")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"images to push (default: {', '.join(IMAGE_NAMES)})")
    args = parser.parse_args(argv)
    try:
        unknown = [n for n in args.names if n not in IMAGE_NAMES]
        if unknown:
            raise PodmanError(f"unknown image {unknown[0]!r}; choose from {', '.join(IMAGE_NAMES)}")
        push(args.registry, args.tag, args.names or list(IMAGE_NAMES))
    except PodmanError as err:
        print(f"push: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
