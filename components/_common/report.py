"""Self-contained HTML reports: inline CSS, plots as embedded PNG.

The Kubeflow dashboard renders an `HTML` artifact in a sandboxed iframe with
no network, so nothing may be loaded from elsewhere.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Iterable

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2933;max-width:1200px}
h1{font-size:1.5em;border-bottom:2px solid #3e4c59;padding-bottom:4px}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}th,td{border:1px solid #cbd2d9;padding:4px 8px;text-align:left}
th{background:#f0f4f8}.pass{color:#0b7a0b;font-weight:bold}.fail{color:#b00020;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0}figcaption{font-size:.8em;color:#52606d}
.muted{color:#7b8794;font-size:.85em}
"""


def esc(value) -> str:
    return html.escape(str(value))


def figure_img(fig, alt: str) -> str:
    """A matplotlib figure as an inline <img>; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(rows: Iterable[dict], columns: list[str] | None = None) -> str:
    rows = list(rows)
    if not rows:
        return '<p class="muted">none</p>'
    columns = columns or list(rows[0])
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(_fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def page(title: str, sections: list[tuple[str, str]], subtitle: str = "") -> str:
    """A full HTML page; `sections` are (heading, trusted inner HTML) pairs."""
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    if subtitle:
        parts.append(f'<p class="muted">{esc(subtitle)}</p>')
    for heading, body in sections:
        parts.append(f"<section><h2>{esc(heading)}</h2>{body}</section>")
    parts.append("</body></html>")
    return "".join(parts)


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (imported lazily: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
