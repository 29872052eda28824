"""The Debian packages the test suite's tiers need, in one place.

`make test` and `.ci/run` both run this file before pytest:

    python3 tests/system_packages.py install            # make test: best effort
    python3 tests/system_packages.py install --require  # .ci/run: a tier that cannot be installed fails CI

As root it apt-installs whatever is missing; as another user it prints what is
missing and which tier that skips, and `make test` goes on. The tests that need
a package skip through `skip_unless` / `missing_reason` with a reason that
starts `system package 'NAME'`, and tests/conftest.py ends the run with one
line per skipped tier and the package that enables it. So the list of
packages, the checks for them and the skip messages cannot drift apart.

Standard library only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# What every skip reason for a missing package starts with; conftest.py reads it back.
REASON = re.compile(r"^system package '([a-z0-9.+-]+)'")


def _which(*names: str) -> bool:
    return all(shutil.which(name) for name in names)


def _can_run_containers() -> str | None:
    """Why podman could not run a container on this machine, or None when it can.

    A container needs new mount namespaces; an unprivileged container (the
    fresh-machine check runs the suite inside one) has podman installable but
    unusable, and every image test would then fail for the machine, not the code.
    """
    if os.geteuid() != 0:
        return None  # rootless podman: its own checks say what is wrong
    probe = subprocess.run(["unshare", "--mount", "--pid", "--fork", "true"], capture_output=True, text=True)
    if probe.returncode:
        return ("this machine cannot make a mount namespace ("
                f"{(probe.stderr.strip().splitlines() or ['unshare failed'])[-1]}); inside a container run it --privileged")
    return None


@dataclass(frozen=True)
class SystemPackage:
    name: str
    apt: tuple[str, ...]
    tier: str
    present: Callable[[], bool]
    # Why the package cannot work here even when installed (None: it can).
    unusable: Callable[[], str | None] = lambda: None

    def missing(self) -> bool:
        return not self.present()


PACKAGES = {p.name: p for p in (
    SystemPackage("chromium", ("chromium",), "HTML reports and pages in a real browser",
                  lambda: _which("chromium") or _which("chromium-browser")),
    SystemPackage("podman", ("podman", "buildah", "runc"), "container images built and run with podman",
                  lambda: _which("podman", "buildah", "runc"), _can_run_containers),
    SystemPackage("debootstrap", ("debootstrap",), "the Debian root every image is built on",
                  lambda: _which("debootstrap"), _can_run_containers),
    SystemPackage("dataset-fashion-mnist", ("dataset-fashion-mnist",), "the vision pipeline on real Fashion-MNIST",
                  FASHION_MNIST_DIR.is_dir),
    SystemPackage("postgresql", ("postgresql",), "Postgres sources, write-back and backfills against a real server",
                  lambda: bool(shutil.which("pg_ctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))),
)}


def missing_reason(name: str) -> str | None:
    """The skip reason when package `name` is missing or unusable here, else None."""
    package = PACKAGES[name]
    why = package.unusable()  # first: installing it would not help
    if why:
        return f"system package '{name}' cannot run here ({package.tier}): {why}"
    if package.missing():
        return (f"system package '{name}' is not installed ({package.tier}): "
                f"`apt-get install {' '.join(package.apt)}`, or run `make test` as root")
    return None


def skip_unless(name: str) -> None:
    """Skips the calling test, with the package named, when `name` is missing or unusable."""
    reason = missing_reason(name)
    if reason:
        import pytest

        pytest.skip(reason)


def mark_needs(name: str):
    """A `pytest.mark.skipif` for a whole module or test that needs package `name`."""
    import pytest

    reason = missing_reason(name)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def skipped_tiers(reasons: list[str]) -> list[str]:
    """One line per package that made tests skip (with its tier, count and how to get it), then the other skips."""
    by_package: dict[str, int] = {}
    others: dict[str, int] = {}
    for reason in reasons:
        match = REASON.match(reason)
        if match and match.group(1) in PACKAGES:
            by_package[match.group(1)] = by_package.get(match.group(1), 0) + 1
        else:
            others[reason] = others.get(reason, 0) + 1
    lines = []
    for name, count in sorted(by_package.items()):
        package = PACKAGES[name]
        why = package.unusable()
        fix = f"cannot run here: {why}" if why else f"enable with `apt-get install {' '.join(package.apt)}` (or `make test` as root)"
        lines.append(f"{package.tier}: {count} test(s) skipped; system package '{name}': {fix}")
    lines += [f"{count} test(s) skipped: {reason}" for reason, count in sorted(others.items())]
    return lines


def install(require: bool) -> int:
    todo = [p for p in PACKAGES.values() if p.missing() and not p.unusable()]
    for p in PACKAGES.values():
        if p.unusable():
            print(f"system packages: {p.name}: {p.unusable()}; the tier '{p.tier}' will be skipped")
    if not todo:
        print("system packages: all present")
        return 0
    names = [apt for p in todo for apt in p.apt]
    if os.geteuid() != 0:
        for p in todo:
            print(f"system packages: '{p.name}' is missing, so '{p.tier}' will be skipped "
                  f"(as root: apt-get install {' '.join(p.apt)})")
        return 1 if require else 0
    if shutil.which("apt-get") is None:
        print(f"system packages: no apt-get on this machine; install {' '.join(names)} by hand")
        return 1 if require else 0
    print(f"system packages: installing {' '.join(names)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *names])
    for cmd in steps:
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            print(f"system packages: `{' '.join(cmd)}` failed (exit {done.returncode}): "
                  f"{done.stderr.strip()[-600:]}", file=sys.stderr)
            return 1 if require else 0
    still = [p.name for p in todo if p.missing()]
    if still:
        print(f"system packages: still missing after apt-get: {', '.join(still)}", file=sys.stderr)
        return 1 if require else 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("install", help="install what is missing (as root), else say what will be skipped")
    run.add_argument("--require", action="store_true", help="exit 1 when a package cannot be installed (CI)")
    sub.add_parser("list", help="print each package, its tier and whether it is here")
    args = parser.parse_args(argv)
    if args.command == "list":
        for p in PACKAGES.values():
            state = "missing" if p.missing() else (p.unusable() and "unusable") or "present"
            print(f"{p.name:24} {state:9} {p.tier}")
        return 0
    return install(args.require)


if __name__ == "__main__":
    sys.exit(main())
