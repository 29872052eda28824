"""Model card logic: gather the facts about a trained model and render them.

The sections follow Mitchell et al., "Model Cards for Model Reporting", as
Google's Model Card Toolkit lays them out: model details, intended use,
factors, metrics, evaluation data, training data, ethical considerations,
caveats and recommendations, plus the lineage a regulated reader needs to
trace every number back to an artifact.

The card is a pure function of its inputs and `generated_at`: everything is
sorted or kept in input order, so two runs on the same artifacts differ only
in that timestamp.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from pathlib import Path
from typing import Any, Mapping

from keel.components._common import lineage, storage
from keel.components._common.config import ModelCardSection, TargetSection
from keel.components._common.errors import DataError, StorageError

TEMPLATES = Path(__file__).parent
MAX_WARNINGS = 10
TOP_FACTORS = 5
# Counts in a Metrics artifact that describe the evaluation data, not the model.
_COUNT_KEYS = ("test_rows", "rows", "n_rows", "n_test", "support")
# Below these, the card recommends caution instead of leaving it to the reader.
_MINORITY_SHARE = 0.2
_SMALL_TRAIN = 1000
_WEAK_AUC = 0.6


def artifact_lineage(name: str, artifact) -> dict:
    """One input's lineage row: URI, content hash (recorded, else the file's sha256) and stamp."""
    metadata = dict(getattr(artifact, "metadata", {}) or {})
    try:
        digest = lineage.artifact_hash(artifact)
    except StorageError:  # the card documents what is known; register is the step that insists
        digest = "not recorded"
    return {
        "name": name,
        "uri": str(getattr(artifact, "uri", "") or ""),
        "content_hash": digest,
        "code_version": metadata.get("code_version") or "not recorded",
        "created_by": metadata.get("created_by") or "not recorded",
        "created_at": metadata.get("created_at") or "not recorded",
    }


def read_summary(artifact) -> dict:
    path = Path(getattr(artifact, "path", "") or "")
    if not path.is_file():
        raise StorageError(f"profile_summary: {path} is missing; rerun profile_data")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"profile_summary: {path} is not valid JSON ({err}); rerun profile_data") from None
    if not isinstance(summary, dict):
        raise DataError(f"profile_summary: {path} holds a {type(summary).__name__}, expected the profile JSON object")
    return summary


def _number(value):
    """KFP hands metadata numbers back as floats; whole ones read better as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _class_balance(summary: dict) -> list[dict]:
    counts = (summary.get("target") or {}).get("class_balance") or {}
    total = sum(v for v in counts.values() if _is_number(v))
    rows = [
        {"label": str(label), "count": _number(count), "share": (count / total) if total else None}
        for label, count in counts.items()
        if _is_number(count)
    ]
    return sorted(rows, key=lambda r: (-r["count"], r["label"]))


def _top_factors(summary: dict) -> list[dict]:
    rows = [
        {"name": str(c.get("name")), "correlation": c["target_correlation"], "kind": c.get("kind") or c.get("dtype") or ""}
        for c in summary.get("columns_detail") or []
        if isinstance(c, dict) and _is_number(c.get("target_correlation"))
    ]
    return sorted(rows, key=lambda r: (-abs(r["correlation"]), r["name"]))[:TOP_FACTORS]


def _training_params(model_meta: dict) -> list[tuple[str, str]]:
    """(name, JSON value) pairs of the estimator's parameters, sorted by name."""
    params = model_meta.get("params") or {}
    if not isinstance(params, dict):
        return [("params", json.dumps(params, default=str))]
    # The lineage stamp also writes `params`: then it holds the whole `model`
    # config section, whose estimator parameters sit one level down.
    if "family" in params and isinstance(params.get("params"), dict):
        params = {**params["params"], **({"seed": params["seed"]} if "seed" in params else {})}
    return sorted((str(k), json.dumps(_number(v), sort_keys=True, default=str)) for k, v in params.items())


def _label_balance(balance: list[dict], binary: Any, classes: list[str]) -> list[dict]:
    """Shares of the classes the model predicts: the binarized ones when the target was binarized."""
    if isinstance(binary, dict) and _is_number(binary.get("negative")) and _is_number(binary.get("positive")):
        total = binary["negative"] + binary["positive"]
        names = classes if len(classes) == 2 else ["negative", "positive"]
        return [{"label": names[i], "share": binary[key] / total if total else None}
                for i, key in enumerate(("negative", "positive"))]
    return balance


def _gate(gate: Any, scores: dict) -> dict | None:
    """The evaluation gate (thresholds from the evaluation config) as rows of metric, bound, value, result."""
    if not isinstance(gate, dict):
        return None
    rows = []
    for kind, sign in (("min", "≥"), ("max", "≤")):
        for name, bound in sorted((gate.get(kind) or {}).items()):
            value = scores.get(name)
            held = None if value is None else (value >= bound if kind == "min" else value <= bound)
            rows.append({"metric": str(name), "bound": f"{sign} {_fmt(bound)}", "value": value,
                         "result": "not measured" if held is None else ("pass" if held else "fail")})
    return {"passed": bool(gate.get("passed")), "rows": rows, "failures": [str(f) for f in gate.get("failures") or []]}


def _caveats(*, balance: list[dict], train_rows, metrics: dict, task: str) -> list[str]:
    """Caveats that follow from the numbers, so they are stated even when nobody wrote them."""
    notes = []
    shares = [r["share"] for r in balance if r["share"] is not None]
    if task != "regression" and shares and min(shares) < _MINORITY_SHARE:
        smallest = min(balance, key=lambda r: r["share"] if r["share"] is not None else 1)
        notes.append(
            f"The target is imbalanced: class {smallest['label']!r} is {smallest['share']:.1%} of the data. "
            "Read accuracy with care; prefer PR AUC, recall and precision per class."
        )
    if _is_number(train_rows) and train_rows < _SMALL_TRAIN:
        notes.append(f"Trained on only {int(train_rows)} rows; expect the metrics to vary between retrainings.")
    if _is_number(metrics.get("roc_auc")) and metrics["roc_auc"] < _WEAK_AUC:
        notes.append(f"ROC AUC is {metrics['roc_auc']:.3f}, close to chance; do not use the scores for decisions.")
    notes.append("Metrics come from one held-out split of the same data; monitor drift and re-evaluate on new data before relying on them.")
    return notes


def build_context(
    *,
    raw,
    profile_summary,
    trained_model,
    metrics,
    target: TargetSection,
    card: ModelCardSection,
    generated_at: str,
    model_name: str = "",
    search=None,
    fairness=None,
    explainer=None,
) -> dict[str, Any]:
    """Everything the templates show, as plain data (also handy to test or export).

    Args:
        raw: the ingested Dataset (source and content hash in its metadata).
        profile_summary: the profile JSON Artifact.
        trained_model: the trained Model (family, params, classes... in its metadata).
        metrics: the evaluation Metrics (metric name -> number in its metadata).
        target: the target config section.
        card: the model_card config section (owners, intended use, limitations, ethics).
        generated_at: the timestamp printed on the card; the only varying part.
        model_name: the registry name the model is published under (registry.model_name).
        search: the tune stage's `search` Dataset, when the parameters came from a search.
        fairness: assess_fairness's Metrics (group metrics and gate in its metadata), when assessed.
        explainer: explain_model's explainer Artifact (method and global attributions in its metadata).
    """
    summary = read_summary(profile_summary)
    raw_meta = dict(raw.metadata or {})
    model_meta = dict(trained_model.metadata or {})
    metric_meta = dict(metrics.metadata or {})
    values = {k: v for k, v in metric_meta.items() if k not in lineage.STAMP_KEYS and _is_number(v)}
    counts = {k: _number(values.pop(k)) for k in _COUNT_KEYS if k in values}
    scores = {k: float(values[k]) for k in sorted(values)}

    task = str(model_meta.get("task") or target.task)
    family = str(model_meta.get("family") or "unknown family")
    balance = _class_balance(summary)
    target_info = summary.get("target") or {}
    warnings = [str(w) for w in summary.get("warnings") or []]
    input_columns = [str(c) for c in model_meta.get("input_columns") or []]
    train_rows = _number(model_meta.get("train_rows"))

    return {
        "title": f"Model card: {model_name + ', ' if model_name else ''}{family.replace('_', ' ')} ({task}) predicting {target.column!r}",
        "model_name": model_name or "not registered",
        "generated_at": generated_at,
        "model": {
            "family": family,
            "framework": model_meta.get("framework") or "not recorded",
            "task": task,
            "target": target.column,
            "positive_values": [str(v) for v in target.positive_values or []],
            "classes": [str(c) for c in model_meta.get("classes") or []],
            "input_columns": input_columns,
            "n_features": _number(model_meta.get("n_features")),
            "params": _training_params(model_meta),
            "code_version": model_meta.get("code_version") or "not recorded",
            "created_at": model_meta.get("created_at") or "not recorded",
        },
        "owners": list(card.owners),
        "intended_use": card.intended_use,
        "limitations": card.limitations,
        "ethical_considerations": card.ethical_considerations,
        "factors": {"top": _top_factors(summary), "n_inputs": len(input_columns)},
        "metrics": [{"name": k, "value": v} for k, v in scores.items()],
        "gate": _gate(metric_meta.get("gate"), scores),
        "evaluation_data": {"counts": counts},
        "data": {
            "source": raw_meta.get("source") or "not recorded",
            "content_hash": raw_meta.get("content_hash") or "not recorded",
            "rows": _number(raw_meta.get("rows", summary.get("rows"))),
            "columns": _number(raw_meta.get("columns", summary.get("columns"))),
            "train_rows": train_rows,
            "class_balance": balance,
            "binary_balance": target_info.get("binary_balance"),
            "warnings": warnings[:MAX_WARNINGS],
            "warnings_total": len(warnings),
        },
        "caveats": _caveats(
            balance=_label_balance(balance, target_info.get("binary_balance"), [str(c) for c in model_meta.get("classes") or []]),
            train_rows=train_rows, metrics=scores, task=task,
        ),
        "search": search_context(search),
        "fairness": fairness_context(fairness),
        "explainability": explainability_context(explainer),
        "lineage": [
            artifact_lineage(name, art)
            for name, art in (("raw", raw), ("profile_summary", profile_summary), ("trained_model", trained_model), ("metrics", metrics),
                              ("search", search), ("fairness", fairness), ("explainer", explainer))
            if art is not None
        ],
    }


MAX_TRIALS_SHOWN = 10


def search_context(search) -> dict | None:
    """The hyperparameter search as the card shows it: how it ran and its best trials."""
    if search is None:
        return None
    meta = dict(search.metadata or {})
    objective = meta.get("objective") or {}
    trials = [t for t in meta.get("trials_json") or [] if t.get("value") is not None and t.get("state") == "COMPLETE"]
    trials.sort(key=lambda t: t["value"], reverse=objective.get("direction", "maximize") == "maximize")
    return {
        "experiment": meta.get("experiment") or "not recorded",
        "backend": meta.get("backend") or "not recorded",
        "algorithm": meta.get("algorithm") or "not recorded",
        "metric": objective.get("metric", "objective"),
        "direction": objective.get("direction", "maximize"),
        "best_value": meta.get("best_value"),
        "best_params": [(str(k), _fmt(v)) for k, v in sorted((meta.get("best_params") or {}).items())],
        "by_state": {str(k): _number(v) for k, v in (meta.get("trials_by_state") or {}).items()},
        "top": [{"number": _number(t.get("number")), "value": t["value"],
                 "params": ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((t.get("params") or {}).items()))}
                for t in trials[:MAX_TRIALS_SHOWN]],
    }


def fairness_context(fairness) -> dict | None:
    """The Fairness section: the gate, disparity metrics with intervals, notes and plots."""
    if fairness is None:
        return None
    from keel.components._common.governance.fairness_views import card_figures, card_summary

    meta = dict(fairness.metadata or {})
    result, gate = meta.get("fairness") or {}, meta.get("gate") or {}
    sensitive = [str(c) for c in result.get("sensitive") or []]
    if not sensitive:
        return {"sensitive": [], "passed": True}
    notes = [str(line) for line in gate.get("failures") or []]
    notes += [f"{column}: demographic parity ratio below 0.8 (the four-fifths rule); reported, not a configured limit"
              for column, ok in sorted((result.get("four_fifths") or {}).items()) if ok is False and not gate.get("min", {}).get("demographic_parity_ratio")]
    mitigation = result.get("mitigation") or {}
    if mitigation.get("note"):
        notes.append(str(mitigation["note"]))
    figures = card_figures(result)
    return {
        "sensitive": sensitive, "passed": bool(gate.get("passed")), "confidence": result.get("confidence", 0.95),
        "rows": card_summary(result), "notes": notes, "figures": figures, "figures_md": [figure_markdown(f) for f in figures],
    }


def explainability_context(explainer) -> dict | None:
    """The Explainability section: method, global attributions per input column, and the plot."""
    if explainer is None:
        return None
    from keel.components._common.governance.explain_views import card_figures, card_summary

    meta = dict(explainer.metadata or {})
    figures = card_figures(meta)
    return {
        "method": meta.get("method") or "not recorded", "rows_explained": meta.get("rows"),
        "rows": card_summary(meta), "figures": figures, "figures_md": [figure_markdown(f) for f in figures],
    }


_IMG = re.compile(r'<img[^>]*?alt="([^"]*)"[^>]*?src="(data:image/png;base64,[A-Za-z0-9+/=]+)"')


def figure_markdown(figure_html: str) -> str:
    """An inline-PNG <figure> as a Markdown image (the dashboard's Markdown viewer shows data: URIs)."""
    match = _IMG.search(figure_html)
    if not match:
        raise DataError("model card: a figure holds no inline PNG <img alt=... src=data:...>; it cannot go into the Markdown card")
    alt = html.unescape(match[1]).replace("[", "(").replace("]", ")")
    return f"![{alt}]({match[2]})"


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _md(value) -> str:
    """Prose for Markdown: raw HTML is shown as text, never rendered."""
    return html.escape(str(value), quote=False)


def _md_cell(value) -> str:
    """A Markdown table cell: also no pipes or line breaks, which would break the row."""
    return _md(_fmt(value)).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        # The HTML card shows user-written text (intended use, column names):
        # escape it. Markdown escapes through the md filters instead.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(fmt=_fmt, md=_md, mdcell=_md_cell)
    return env


def render(context: Mapping[str, Any]) -> tuple[str, str]:
    """The card as (Markdown, self-contained HTML)."""
    env = environment()
    return env.get_template("card.md.j2").render(**context), env.get_template("card.html.j2").render(**context)


def write_model_card(
    *,
    raw,
    profile_summary,
    trained_model,
    metrics,
    target: TargetSection,
    card: ModelCardSection,
    md_path: str,
    html_path: str,
    generated_at: str | None = None,
    model_name: str = "",
    search=None,
    fairness=None,
    explainer=None,
) -> dict:
    """Builds and writes the card; returns the title, the inputs' lineage rows and both files' hashes."""
    generated_at = generated_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    context = build_context(
        raw=raw, profile_summary=profile_summary, trained_model=trained_model, metrics=metrics,
        target=target, card=card, generated_at=generated_at, model_name=model_name, search=search,
        fairness=fairness, explainer=explainer,
    )
    markdown, page = render(context)
    storage.write_bytes(md_path, markdown.encode())
    storage.write_bytes(html_path, page.encode())
    return {
        "title": context["title"],
        "lineage": context["lineage"],
        "md_hash": lineage.file_sha256(md_path),
        "html_hash": lineage.file_sha256(html_path),
    }
