"""tests/testkit/system_packages.py: one list of the Debian packages the tiers need, the skip
reasons built from it, the closing summary of skipped tiers, and the installer's decisions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testkit import system_packages as sp

SCRIPT = Path(sp.__file__)


def fake(name="fake-pkg", *, present=False, unusable=None) -> sp.SystemPackage:
    return sp.SystemPackage(name, (name, f"{name}-extra"), "a tier that needs it", lambda: present, lambda: unusable)


@pytest.fixture
def only(monkeypatch):
    def install(*packages):
        monkeypatch.setattr(sp, "PACKAGES", {p.name: p for p in packages})
    return install


def test_a_missing_package_gives_a_reason_the_summary_reads_back(only):
    only(fake())
    reason = sp.missing_reason("fake-pkg")
    assert sp.REASON.match(reason).group(1) == "fake-pkg"
    assert "apt-get install fake-pkg fake-pkg-extra" in reason and "a tier that needs it" in reason


def test_an_installed_but_unusable_package_says_why(only):
    only(fake(present=True, unusable="no mount namespace"))
    assert sp.missing_reason("fake-pkg") == "system package 'fake-pkg' cannot run here (a tier that needs it): no mount namespace"
    assert sp.skipped_tiers([sp.missing_reason("fake-pkg")]) == [
        "a tier that needs it: 1 test(s) skipped; system package 'fake-pkg': cannot run here: no mount namespace"]


def test_a_present_package_gives_no_reason(only):
    only(fake(present=True))
    assert sp.missing_reason("fake-pkg") is None


def test_the_summary_counts_each_package_once_and_lists_other_skips(only):
    only(fake())
    reason = sp.missing_reason("fake-pkg")
    lines = sp.skipped_tiers([reason, reason, "nanio is not installed"])
    assert lines == ["a tier that needs it: 2 test(s) skipped; system package 'fake-pkg': enable with "
                     "`apt-get install fake-pkg fake-pkg-extra` (or `make test` as root)",
                     "1 test(s) skipped: nanio is not installed"]


def test_not_as_root_install_names_each_skipped_tier_and_fails_only_when_required(only, monkeypatch, capsys):
    only(fake(), fake("here", present=True))
    monkeypatch.setattr(sp.os, "geteuid", lambda: 1000)
    assert sp.install(require=False) == 0
    out = capsys.readouterr().out
    assert "'fake-pkg' is missing, so 'a tier that needs it' will be skipped" in out and "'here'" not in out
    assert sp.install(require=True) == 1


def test_an_unusable_package_is_not_installed(only, monkeypatch, capsys):
    only(fake(unusable="no mount namespace"))
    monkeypatch.setattr(sp.os, "geteuid", lambda: 0)
    monkeypatch.setattr(sp.subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    assert sp.install(require=True) == 0
    assert "fake-pkg: no mount namespace" in capsys.readouterr().out


def test_the_script_runs_on_the_bare_interpreter_before_any_venv():
    # `make test` and .ci/run call it with python3: it may import only the standard library.
    listed = subprocess.run([sys.base_prefix + "/bin/python3", "-I", str(SCRIPT), "list"], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert {line.split()[0] for line in listed.stdout.splitlines()} == set(sp.PACKAGES)


def test_a_package_that_could_not_run_here_is_reported_so_even_when_missing(only):
    # An unprivileged container: podman is not installed because it could not run, so "apt-get install" is no fix.
    only(fake(present=False, unusable="no mount namespace"))
    assert sp.missing_reason("fake-pkg").startswith("system package 'fake-pkg' cannot run here")
    assert sp.skipped_tiers([sp.missing_reason("fake-pkg")])[0].endswith("cannot run here: no mount namespace")
