"""The HTML page of one local run: what the Kubeflow dashboard shows for a cluster run.

One self-contained file: the outcome, every step with its status and
duration, the metrics and gate verdicts, the evaluation, fairness and
explainability reports embedded (each in a sandboxed <iframe srcdoc>, so
their plots come along), and a link to every artifact and the model card.
Links to local artifacts are relative to the page, so the run directory can
be copied or served as it is; s3:// URIs are shown, not linked.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from keel.components._common.lineage import STAMP_KEYS
from keel.components._common.report import esc, page, table
from keel.pipelines.records.runs import RunRecord

REPORT_FILE = "report.html"
# Steps whose HTML reports are embedded in the page (the others are linked).
EMBEDDED_STEPS = ("evaluate-model", "assess-fairness", "explain-model", "evaluate-image-model")
GATE_NAMES = {"evaluate-model": "evaluation", "evaluate-image-model": "evaluation", "assess-fairness": "fairness",
              "explain-model": "explainability"}
STATUS_CLASS = {"succeeded": "pass", "failed": "fail", "cached": "muted", "skipped": "muted"}
BAR_PX = 220
_CSS = (".bar{background:#3e7cb1;height:10px;display:inline-block}.reports iframe{width:100%;height:640px;"
        "border:1px solid #cbd2d9;background:#fff}details{margin:8px 0}summary{cursor:pointer;font-weight:600}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.85em}")


def default_path(record: RunRecord) -> Path:
    return record.run_dir / REPORT_FILE


def write_report(record: RunRecord, out: str | Path | None = None) -> Path:
    """Writes the run's page (default <run_dir>/report.html) and returns its path."""
    from keel.components._common.storage import atomic_write_local

    path = Path(out) if out else default_path(record)
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_local(path, render(record, path).encode())
    return path


def render(record: RunRecord, out_path: str | Path) -> str:
    """The page's HTML; links are relative to `out_path`'s folder."""
    from keel.pipelines.records.lineage import completeness

    links = _Links(Path(out_path).resolve().parent)
    sections = [
        ("Outcome", _outcome(record, links)),
        ("Steps", _steps(record, links)),
        ("Metrics", _metrics(record)),
        ("Gates", _gates(record)),
        ("Model card", _card(record, links)),
        ("Reports", _reports(record, links)),
        ("Artifacts", _artifacts(record, links)),
        ("Lineage", _lineage(completeness(record))),
    ]
    subtitle = " \u00b7 ".join(x for x in (
        f"config {record.config_name}" if record.config_name else "config not recorded (a run from before run.json)",
        f"pipeline {record.pipeline}", f"code {record.code_version or 'unknown'}", f"by {record.created_by or 'unknown'}",
        f"started {record.started_at or 'unknown'}") if x)
    html = page(f"Run {record.run_id}", sections, subtitle=subtitle)
    return html.replace("</style>", _CSS + "</style>", 1)


class _Links:
    """Hrefs to artifacts, relative to the page's folder (file:// pages resolve them on any machine)."""

    def __init__(self, base: Path):
        self.base = base

    def href(self, uri: str) -> str | None:
        if not uri or "://" in uri:
            return None
        relative = os.path.relpath(Path(uri), self.base)
        return urllib.parse.quote(Path(relative).as_posix())

    def anchor(self, uri: str, text: str | None = None) -> str:
        href = self.href(uri)
        label = esc(text if text is not None else uri)
        return f'<a href="{esc(href)}">{label}</a>' if href else f"<code>{label}</code>"


def _outcome(record: RunRecord, links: _Links) -> str:
    outcome = record.outcome
    css = "pass" if outcome == "passed" else "fail" if outcome in ("failed gate", "step failed") else "muted"
    registered = record.registered or {}
    version = f"{registered.get('model_name', '')}:{registered.get('version', '')}" if registered else "not registered"
    rows = [
        ("outcome", f'<span class="{css}">{esc(outcome)}</span>'),
        ("registered", links.anchor(registered["registry_uri"], version) if registered.get("registry_uri") else esc(version)),
        ("duration", esc(_seconds(record.seconds))),
        ("steps", esc(", ".join(f"{record.count(s)} {s}" for s in ("succeeded", "cached", "skipped", "failed") if record.count(s)))),
        ("started / finished (UTC)", esc(f"{record.started_at or '?'} / {record.finished_at or '?'}")),
        ("run directory", links.anchor(str(record.run_dir), record.run_id)),
        ("log", links.anchor(str(record.log_path), "keel-run.log") if record.log_path.is_file() else "none"),
        ("config arguments", _arguments(record.arguments)),
    ]
    return "<table><tbody>" + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</tbody></table>"


def _arguments(arguments: dict) -> str:
    import json

    if not arguments:
        return '<span class="muted">not recorded</span>'
    text = json.dumps(arguments, indent=1, sort_keys=True, default=str)
    return f"<details><summary>{len(arguments)} sections</summary><pre>{esc(text)}</pre></details>"


def _steps(record: RunRecord, links: _Links) -> str:
    longest = max((s.seconds or 0 for s in record.steps), default=0) or 1
    head = "".join(f"<th>{h}</th>" for h in ("step", "status", "started (UTC time)", "duration", "", "outputs"))
    body = []
    for step in record.steps:
        status = f'<span class="{STATUS_CLASS.get(step.status, "")}">{esc(step.status)}</span>'
        if step.note:
            status += f' <span class="muted">({esc(step.note)})</span>'
        if step.cached_from:
            status += f' <span class="muted">from {esc(step.cached_from)}</span>'
        bar = f'<span class="bar" style="width:{max(1, round(BAR_PX * step.seconds / longest))}px"></span>' if step.seconds else ""
        outputs = ", ".join(links.anchor(v["uri"], name) for name, v in step.outputs.items() if _is_artifact(v))
        params = ", ".join(f"{esc(name)}={esc(v)}" for name, v in step.outputs.items() if not _is_artifact(v))
        body.append(f"<tr><td>{esc(step.name)}</td><td>{status}</td><td>{esc((step.started_at or '')[11:23])}</td>"
                    f'<td class="num">{esc(_seconds(step.seconds))}</td><td>{bar}</td><td>{outputs}{"; " + params if params else ""}</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _metrics(record: RunRecord) -> str:
    metrics = {k: v for k, v in record.metrics.items()
               if k not in STAMP_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not metrics:
        return '<p class="muted">no evaluation metrics (the run stopped before evaluation)</p>'
    return table([{"metric": k, "value": v} for k, v in sorted(metrics.items())])


def _gates(record: RunRecord) -> str:
    rows = []
    for step in record.steps:
        gate = next((v["metadata"]["gate"] for v in step.outputs.values()
                     if _is_artifact(v) and isinstance(v["metadata"].get("gate"), dict)), None)
        explainer = step.outputs.get("explainer") if step.name == "explain-model" else None
        if gate is None and _is_artifact(explainer):
            # Explanations have no pass/fail limit: the verdict is that they were made, and how.
            meta = explainer["metadata"]
            how = f"method {meta.get('method', '?')}" + (f" ({meta['reason']})" if meta.get("reason") else "")
            rows.append(f"<tr><td>explainability</td><td>{esc(step.name)}</td><td><span class=\"pass\">recorded</span></td>"
                        f"<td>{esc(how)}</td><td></td></tr>")
            continue
        if gate is None:
            continue
        limits = "; ".join(f"{k} {op} {v}" for key, op in (("min", ">="), ("max", "<=")) for k, v in (gate.get(key) or {}).items())
        failures = gate.get("failures") or []
        rows.append(f"<tr><td>{esc(GATE_NAMES.get(step.name, step.name))}</td><td>{esc(step.name)}</td>"
                    f'<td><span class="{"pass" if gate.get("passed") else "fail"}">{"passed" if gate.get("passed") else "FAILED"}</span></td>'
                    f"<td>{esc(limits or 'no thresholds set')}</td><td>{esc('; '.join(map(str, failures)))}</td></tr>")
    if not rows:
        return '<p class="muted">no gate recorded (the run stopped before evaluation)</p>'
    head = "".join(f"<th>{h}</th>" for h in ("gate", "step", "verdict", "limits", "failures"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _card(record: RunRecord, links: _Links) -> str:
    items = []
    step = record.step("write-model-card")
    for name, label in (("card_html", "model card (HTML)"), ("card_md", "model card (Markdown)")):
        value = (step.outputs if step else {}).get(name) or record.outputs.get({"card_html": "model_card_html", "card_md": "model_card"}[name])
        if _is_artifact(value):
            items.append(f"<li>{links.anchor(value['uri'], label)} <code>{esc(value['uri'])}</code></li>")
    registered = record.registered or {}
    if registered.get("registry_uri") and "://" not in registered["registry_uri"]:
        card = Path(registered["registry_uri"]) / "model_card.html"
        if card.is_file():
            items.append(f"<li>{links.anchor(str(card), 'registered model card')} ({esc(registered.get('version', ''))})</li>")
    return f"<ul>{''.join(items)}</ul>" if items else '<p class="muted">no model card (the run stopped before it)</p>'


def _reports(record: RunRecord, links: _Links) -> str:
    parts = []
    for step in record.steps:
        if step.name.rsplit("/", 1)[-1] not in EMBEDDED_STEPS:
            continue
        for name, value in step.outputs.items():
            if not _is_artifact(value):
                continue
            path = Path(value["uri"]) if "://" not in value["uri"] else None
            if path is None or not path.is_file() or not _is_html(path):
                continue
            content = path.read_text(encoding="utf-8", errors="replace")
            title = f"{step.name} / {name}"
            # sandbox="" lets the embedded report run nothing and reach nothing: it is only shown.
            parts.append(f"<details open><summary>{esc(title)}</summary><p>{links.anchor(value['uri'], 'open on its own')}</p>"
                         f'<iframe sandbox="" title="{esc(title)}" srcdoc="{esc(content)}"></iframe></details>')
    if not parts:
        return '<p class="muted">no evaluation, fairness or explanation report in this run</p>'
    return f'<div class="reports">{"".join(parts)}</div>'


def _artifacts(record: RunRecord, links: _Links) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("step", "output", "uri", "content hash", "created (UTC)"))
    rows = []
    for step, output, artifact in record.artifacts():
        meta = artifact["metadata"]
        digest = str(meta.get("content_hash") or "")
        rows.append(f"<tr><td>{esc(step)}</td><td>{esc(output)}</td><td>{links.anchor(artifact['uri'])}</td>"
                    f'<td><code title="{esc(digest)}">{esc(digest.removeprefix("sha256:")[:12])}</code></td>'
                    f"<td>{esc(meta.get('created_at', ''))}</td></tr>")
    if not rows:
        return '<p class="muted">no artifacts</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _lineage(result: dict) -> str:
    share = f"{result['complete']} of {result['total']} artifacts ({100 * result['share']:.0f}%) have a complete lineage"
    css = "pass" if not result["problems"] else "fail"
    problems = "".join(f"<li>{esc(p)}</li>" for p in result["problems"])
    return f'<p class="{css}">{esc(share)}</p>' + (f"<ul>{problems}</ul>" if problems else
                                                   '<p class="muted">every artifact carries every lineage key, and every parent '
                                                   'resolves to an artifact of this run, a dataset version or the source</p>')


def _is_artifact(value) -> bool:
    return isinstance(value, dict) and "uri" in value and "metadata" in value


def _is_html(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(64).lstrip().lower()
    return head.startswith(b"<!doctype html") or head.startswith(b"<html")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if value < 120 else f"{int(value // 60)} min {value % 60:.0f} s"
