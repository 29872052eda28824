"""The model card of an image model: what it is, how it trained, how it scores, what compression cost.

Markdown for the registry and the KFP dashboard, and the same content as a
self-contained HTML page. Built from model.json (artifact.py), the
evaluation metrics and the model_card config section.
"""

from __future__ import annotations

import html
from typing import Mapping


def _rows(headers: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def sections(info: Mapping, metrics: Mapping[str, float], card: Mapping, model_name: str) -> list[tuple[str, list[str], list[list]]]:
    """(title, headers, rows) for every table of the card; both renderings use these."""
    training = info.get("training", {})
    shape = info["input"]
    out = [
        ("Model", ["field", "value"], [
            ["name", model_name], ["framework", info["framework"]], ["architecture", info["architecture"]],
            ["input", f"{shape['height']}x{shape['width']}x{shape['channels']} pixels 0..255 ({shape['layout']})"],
            ["classes", ", ".join(info["classes"])], ["served as", info["serving_format"]],
            ["owners", ", ".join(card.get("owners") or []) or "not stated"],
        ]),
        ("Intended use and limitations", ["", ""], [
            ["intended use", card.get("intended_use", "Not stated.")], ["limitations", card.get("limitations", "Not stated.")],
            ["ethical considerations", card.get("ethical_considerations", "Not stated.")],
        ]),
        ("Training", ["field", "value"], [[k, _fmt(training.get(k))] for k in (
            "device", "precision", "processes", "epochs_run", "best_epoch", "stopped_early", "resumed_from_epoch",
            "images_per_second", "train_images", "validation_images") if k in training]),
        ("Per-epoch history", ["epoch", "train_loss", "val_loss", "val_accuracy"],
         [[r["epoch"], _fmt(r["train_loss"]), _fmt(r["val_loss"]), _fmt(r["val_accuracy"])] for r in info.get("history", [])]),
        ("Test metrics", ["metric", "value"], [[k, _fmt(v)] for k, v in sorted(metrics.items())]),
    ]
    compression = info.get("compression") or {}
    table = compression.get("table")  # compress_model: one row per variant (accuracy, latency, size)
    if table:
        headers = list(table[0])
        title = f"Compression: accuracy vs latency vs size (served: {compression.get('served', info['serving_format'])})"
        out.append((title, headers, [[_fmt(row.get(h)) for h in headers] for row in table]))
    return out


def render(info: Mapping, metrics: Mapping[str, float], card: Mapping, model_name: str) -> tuple[str, str]:
    """(markdown, html) of the card."""
    parts = sections(info, metrics, card, model_name)
    md = [f"# Model card: {model_name}", ""]
    for title, headers, rows in parts:
        md += [f"## {title}", ""] + _rows(headers, rows) + [""]
    body = [f"<h1>Model card: {html.escape(model_name)}</h1>"]
    for title, headers, rows in parts:
        body.append(f"<h2>{html.escape(title)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
        body.append("</table>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Model card</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;margin-bottom:1em}"
            "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}</style></head><body>"
            + "\n".join(body) + "</body></html>")
    return "\n".join(md), page
