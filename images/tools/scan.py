"""Checks that no secret or credential is baked into any layer of an image.

Every layer is read, not just the final file system: a file deleted in a
later layer is still in the one that added it. It looks for
- credential files (cloud, registry, git, pip, netrc, SSH and kube configs),
- private keys and well-known token formats inside text files,
- secret-looking environment variables, labels and build history in the
  image config (a `--build-arg TOKEN=...` shows up there).

`python -m keel.images.scan IMAGE` prints one line per finding and exits 1 if any.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from keel.images.podman import podman

CREDENTIAL_FILES = {
    ".aws/credentials", ".netrc", ".pypirc", ".docker/config.json", ".git-credentials", ".kube/config",
    ".config/gcloud/credentials.db", ".ssh/id_rsa", ".ssh/id_ecdsa", ".ssh/id_ed25519", ".ssh/id_dsa",
}
# Text patterns that are credentials wherever they appear.
TOKENS = re.compile(
    rb"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----\s*[A-Za-z0-9+/=\s]{64}"
    rb"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    rb"|aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}"
    rb"|\bgh[pousr]_[A-Za-z0-9]{36}\b"
    rb"|\bxox[baprs]-[0-9A-Za-z-]{10,}"
    rb"|\bglpat-[0-9A-Za-z_-]{20}\b"
)
# Documented placeholders that libraries ship in their docs (AWS's own example key).
PLACEHOLDERS = (b"AKIAIOSFODNN7EXAMPLE", b"EXAMPLEKEY")
# A password inside a URL, checked only in configuration files (docs are full of examples).
URL_PASSWORD = re.compile(rb"[a-z+]+://[^/\s:@'\"]+:[^/\s:@'\"$]+@")
CONFIG_SUFFIXES = (".conf", ".cfg", ".ini", ".toml", ".yaml", ".yml", ".json", ".env")
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.I)
MAX_TEXT_BYTES = 2 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Finding:
    where: str  # "layer 3: /path" or "config: Env"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def scan_file(path: str, data: bytes) -> list[str]:
    """Reasons a file is a credential (empty when clean)."""
    reasons = []
    posix = PurePosixPath("/" + path.lstrip("./"))
    if any(posix.as_posix().endswith("/" + name) for name in CREDENTIAL_FILES):
        reasons.append("a credential file")
    if b"\0" in data[:8192]:
        return reasons  # binary: libraries and wheels carry no readable secrets worth matching
    for match in TOKENS.finditer(data):
        token = match.group(0)
        if not any(placeholder in token for placeholder in PLACEHOLDERS):
            reasons.append(f"contains {token[:12].decode(errors='replace')}... (a private key or access token)")
            break
    if posix.suffix in CONFIG_SUFFIXES or posix.name in ("pip.conf", ".netrc", ".npmrc"):
        if match := URL_PASSWORD.search(data):
            reasons.append(f"a password inside a URL ({match.group(0)[:24].decode(errors='replace')}...)")
    return reasons


def scan_config(config: dict) -> list[Finding]:
    findings = []
    for entry in config.get("config", {}).get("Env") or []:
        name, _, value = entry.partition("=")
        if SECRET_NAME.search(name) and value and not value.startswith("/"):  # a *_FILE path is fine
            findings.append(Finding("config: Env", f"{name} has a value baked in"))
    for name, value in (config.get("config", {}).get("Labels") or {}).items():
        if SECRET_NAME.search(name) and value:
            findings.append(Finding("config: Labels", f"{name} has a value baked in"))
    for step in config.get("history") or []:
        created_by = step.get("created_by", "")
        for match in re.finditer(r"\b([A-Za-z_]*(?:SECRET|TOKEN|PASSWORD|API_?KEY|ACCESS_KEY)[A-Za-z_]*)=(\S+)", created_by, re.I):
            findings.append(Finding("config: history", f"{match[1]} set to a value in a build step"))
    return findings


def scan_archive(archive: Path) -> list[Finding]:
    """Scans a `podman save --format docker-archive` tarball: its config and every layer."""
    findings: list[Finding] = []
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]
        findings += scan_config(json.load(outer.extractfile(manifest["Config"])))
        for number, layer_name in enumerate(manifest["Layers"], 1):
            with tarfile.open(fileobj=outer.extractfile(layer_name)) as layer:
                for member in layer:
                    if not member.isfile() or member.size > MAX_TEXT_BYTES:
                        continue
                    for reason in scan_file(member.name, layer.extractfile(member).read()):
                        findings.append(Finding(f"layer {number}: /{member.name.lstrip('./')}", reason))
    return findings


def scan_image(ref: str) -> list[Finding]:
    with tempfile.TemporaryDirectory(prefix="keel-scan-") as tmp:
        archive = Path(tmp) / "image.tar"
        podman("save", "--format", "docker-archive", "-o", str(archive), ref)
        return scan_archive(archive)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m keel.images.scan IMAGE", file=sys.stderr)
        return 2
    findings = scan_image(argv[0])
    for finding in findings:
        print(f"{argv[0]}: {finding}")
    print(f"{argv[0]}: {len(findings)} finding(s)" if findings else f"{argv[0]}: no secrets found in any layer")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
