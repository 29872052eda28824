"""Writes an image's CycloneDX SBOM: its Python environment and its Debian packages.

Runs inside an image build, in a stage of its own, with the image's python
(stdlib only): cyclonedx-bom goes into a throwaway virtual environment (the
pinned version, from the constraints), lists the image's environment, and the
Debian packages of the base root (python3 itself, libc, CA certificates) are
added with `pkg:deb` package URLs read from dpkg's status file.

    python3 sbom.py VENV CONSTRAINTS OUT.json [SITE_DIR ...]
    python3 sbom.py --extend SBOM.json OUT.json SITE_DIR ...

SITE_DIR: a directory installed apart from the environment (keel-base's
/opt/keel/app, where Keel itself lives); its distributions are added too.
--extend adds them to an SBOM made before, without the tools: keel-base makes
the environment's SBOM in a cached stage and adds Keel's entry per build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DPKG_STATUS = "/var/lib/dpkg/status"


def dpkg_packages(status_file: str = DPKG_STATUS) -> list[dict]:
    """(name, version, arch) of every installed package in a dpkg status file."""
    packages, fields = [], {}
    for line in [*Path(status_file).read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip():
            if fields.get("Status", "").endswith(" installed"):
                packages.append({"name": fields["Package"], "version": fields["Version"], "arch": fields.get("Architecture", "all")})
            fields = {}
        elif not line[0].isspace() and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return packages


def debian_component(package: dict) -> dict:
    purl = f"pkg:deb/debian/{package['name']}@{package['version']}?arch={package['arch']}&distro=debian-12"
    return {"type": "library", "bom-ref": purl, "name": package["name"], "version": package["version"], "purl": purl}


def site_components(site_dir: str) -> list[dict]:
    """The Python distributions installed in a directory (their *.dist-info/METADATA)."""
    found = []
    for metadata in sorted(Path(site_dir).glob("*.dist-info/METADATA")):
        fields = dict(line.split(": ", 1) for line in metadata.read_text(encoding="utf-8").splitlines()
                      if ": " in line and line.split(": ", 1)[0] in ("Name", "Version"))
        purl = f"pkg:pypi/{fields['Name'].lower()}@{fields['Version']}"
        found.append({"type": "library", "bom-ref": purl, "name": fields["Name"], "version": fields["Version"], "purl": purl})
    return found


def merge(python_sbom: dict, packages: list[dict], extra: list[dict] = ()) -> dict:
    merged = dict(python_sbom)
    known = {c.get("purl") for c in merged.get("components", [])}
    merged["components"] = list(merged.get("components", [])) + [
        c for c in [*extra, *map(debian_component, packages)] if c["purl"] not in known]
    return merged


def python_sbom(venv: str, constraints: str) -> dict:
    """cyclonedx-py's SBOM of `venv`, made from a throwaway environment that never reaches the image."""
    with tempfile.TemporaryDirectory(prefix="sbom-") as tools:
        subprocess.run([sys.executable, "-m", "venv", tools], check=True)
        subprocess.run([f"{tools}/bin/pip", "install", "--no-cache-dir", "--quiet", "-c", constraints, "cyclonedx-bom"], check=True)
        out = f"{tools}/python.cdx.json"
        subprocess.run([f"{tools}/bin/cyclonedx-py", "environment", "--output-format", "JSON", "--output-file", out, venv], check=True)
        return json.loads(Path(out).read_text(encoding="utf-8"))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--extend"] and len(argv) >= 4:
        source, out, *site_dirs = argv[1:]
        sbom = merge(json.loads(Path(source).read_text(encoding="utf-8")), [], site_dir_components(site_dirs))
    elif len(argv) >= 3 and not argv[0].startswith("-"):
        venv, constraints, out, *site_dirs = argv
        sbom = merge(python_sbom(venv, constraints), dpkg_packages(), site_dir_components(site_dirs))
    else:
        raise SystemExit("usage: python3 sbom.py VENV CONSTRAINTS OUT.json [SITE_DIR ...]\n"
                         "       python3 sbom.py --extend SBOM.json OUT.json SITE_DIR ...")
    tmp = f"{out}.tmp"
    Path(tmp).write_text(json.dumps(sbom, indent=1), encoding="utf-8")
    os.replace(tmp, out)
    print(f"sbom: {len(sbom['components'])} components -> {out}")
    return 0


def site_dir_components(site_dirs: list[str]) -> list[dict]:
    return [c for site_dir in site_dirs for c in site_components(site_dir)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
