"""The docs: the generated config reference is current, README.md stays a front page, and no relative link is broken."""

import re
from pathlib import Path

import pytest

from keel.pipelines import config_reference

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 260
# README.md and every folder README (tests/bench/README.md included), plus the generated reference.
DOCS = sorted({ROOT / "README.md", *ROOT.glob("*/README.md"), *ROOT.glob("*/*/README.md"),
               ROOT / "pipelines" / "config-reference.md"})
# [text](target) and [text](target "title"); images too. Code spans are removed first.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return LINK.findall(text)


def test_config_reference_is_current():
    committed = config_reference.OUTPUT.read_text(encoding="utf-8")
    assert committed == config_reference.render(), (
        "pipelines/config-reference.md is out of date with the config models: run `make docs` and commit it")


def test_config_reference_covers_every_pipeline_and_field():
    text = config_reference.render()
    models = config_reference.config_models()
    assert set(models) == {"training", "vision", "backfill", "monitoring"}
    for kind, model in models.items():
        assert f"## pipeline: {kind}" in text
        for name in model.model_fields:
            assert f"| `{name}` |" in text, (kind, name)
    # nested sections, list items and dict values are walked too
    for path in ("clean.missing.numeric", "tune.parameters.<key>.type", "resources.gpu.tolerations[].key",
                 "backfill.write_back.table", "monitoring.columns.<key>.method"):
        assert f"| `{path}` |" in text, path
    assert config_reference.render() == text  # deterministic


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail into the folder READMEs")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor in the same page
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)}: links to missing files: {', '.join(broken)}"
