"""The shipped wheel: Keel's runtime package and nothing of its test kit.

The wheel is built from a copy of the sources as `pip install .` would build it,
then read: no test helper (tests/testkit, any tests/ folder, conftest.py), and
no shipped module that imports pytest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What setup.cfg's package_dir maps into the wheel, plus the files it reads.
SOURCES = ("components", "pipelines", "images/tools", "setup.cfg", "README.md")
IMPORTS_PYTEST = re.compile(r"^\s*(import pytest|from pytest\b|from _pytest\b)", re.M)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    work = tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        src, dest = ROOT / name, work / name
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest)
    built = subprocess.run([sys.executable, "-c", "from setuptools import build_meta as b; print(b.build_wheel('dist'))"],
                           cwd=work, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    path = work / "dist" / built.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_the_wheel_ships_the_runtime_packages(wheel):
    names = set(wheel.namelist())
    for module in ("keel/components/_common/storage.py", "keel/pipelines/cli/main.py", "keel/images/build.py",
                   "keel/components/serve/predictors.py"):
        assert module in names, f"{module} is missing from the wheel"


def test_the_wheel_holds_no_test_helpers(wheel):
    helpers = [name for name in wheel.namelist()
               if "testkit" in name or "/tests/" in name or name.endswith(("conftest.py", "/testing.py"))
               or Path(name).name.startswith("test_")]
    assert helpers == [], f"test code in the shipped wheel: {helpers[:10]}"


def test_no_shipped_module_imports_pytest(wheel):
    offenders = [name for name in wheel.namelist()
                 if name.endswith(".py") and IMPORTS_PYTEST.search(wheel.read(name).decode())]
    assert offenders == [], f"shipped modules import pytest: {offenders}"
