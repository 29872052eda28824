"""A model version's lineage as one self-contained HTML page: an inline SVG graph, the chain, the stage events.

The layout is computed here (columns by longest path from the source,
rows ordered to keep edges short), so the page needs no script, stylesheet
or font from anywhere: it opens from a file, an e-mail or a sandboxed iframe.
Each node's <title> is its tooltip, with every detail the chain table holds.
"""

from __future__ import annotations

import json
from pathlib import Path

from keel.components._common.report import esc, page, table
from keel.pipelines.records.lineage import Lineage, Node

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 168, 44, 40, 12, 12
MAX_LABEL = 23  # characters of a node's name that fit its box
FILL = {"source": "#dbeafe", "dataset": "#dcfce7", "artifact": "#ffffff", "bundle": "#fde68a", "stage": "#ede9fe",
        "deployment": "#cffafe"}
_CSS = ("body{max-width:none}.lineage-graph{width:max-content;border:1px solid #cbd2d9;padding:4px;background:#f8fafc}"
        ".lineage-graph svg{display:block}.legend span{display:inline-block;margin-right:12px;padding:1px 6px;"
        "border:1px solid #3e4c59;font-size:.8em}")


def render(lineage: Lineage) -> str:
    """The lineage page's HTML."""
    legend = "".join(f'<span style="background:{FILL[k]}">{esc(k)}</span>' for k in FILL)
    graph = f'<div class="lineage-graph">{svg(lineage)}</div><p class="legend">{legend}</p>'
    hidden = len(_implied_edges(lineage))
    graph += ('<p class="muted">Arrows run from parent to child; hover a box for its details. '
              f'{hidden} recorded reference(s) that a longer path already implies (e.g. the bundle records the raw data '
              'too) are not drawn; the chain below lists every parent.</p>')
    sections = [("Graph", graph), ("Chain", _chain_table(lineage)), ("Stage events", _events_table(lineage.events))]
    run = f"registered by run {lineage.run_id}" if lineage.run_id else "the run that registered it is not stored here"
    subtitle = f"{lineage.uri} \u2014 {run}"
    html = page(f"Lineage of {lineage.label}", sections, subtitle=subtitle)
    return html.replace("</style>", _CSS + "</style>", 1)


def write(lineage: Lineage, path: str | Path) -> Path:
    """Writes the page (creating its folder) and returns its path."""
    from keel.components._common.storage import atomic_write_local

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_local(path, render(lineage).encode())
    return path


def layout(lineage: Lineage) -> dict[str, tuple[float, float]]:
    """Each node's top-left corner: columns by longest path, rows ordered by their neighbours' rows."""
    layer = lineage.layers()
    columns: dict[int, list[str]] = {}
    for node in lineage.ordered():
        columns.setdefault(layer[node.id], []).append(node.id)
    parents = {n: [] for n in lineage.nodes}
    children = {n: [] for n in lineage.nodes}
    implied = _implied_edges(lineage)
    for a, b in (e for e in lineage.edges if e not in implied):  # only the drawn edges pull rows together
        parents[b].append(a)
        children[a].append(b)
    # A few barycentre sweeps (Sugiyama): each node moves toward the mean row of its neighbours
    # in the column before (forward) or after (backward), which keeps most edges short and uncrossed.
    for _ in range(3):
        for neighbours, order in ((parents, sorted(columns)), (children, sorted(columns, reverse=True))):
            for col in order:
                rows = {n: i for c in columns.values() for i, n in enumerate(c)}
                current = columns[col]
                columns[col] = sorted(current, key=lambda n: (_mean([rows[m] for m in neighbours[n]], current.index(n)), current.index(n)))
    tallest = max((len(c) for c in columns.values()), default=1)
    where = {}
    for col, ids in columns.items():
        offset = (tallest - len(ids)) * (NODE_H + GAP_Y) / 2
        for row, node_id in enumerate(ids):
            where[node_id] = (PAD + col * (NODE_W + GAP_X), PAD + offset + row * (NODE_H + GAP_Y))
    return where


def svg(lineage: Lineage) -> str:
    """The graph as an inline <svg>."""
    where = layout(lineage)
    if not where:
        return '<p class="muted">no lineage recorded</p>'
    width = max(x for x, _ in where.values()) + NODE_W + PAD
    height = max(y for _, y in where.values()) + NODE_H + PAD
    implied = _implied_edges(lineage)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="lineage graph of {esc(lineage.label)}" '
             'font-family="system-ui,sans-serif">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
             '<path d="M0,0 L10,5 L0,10 z" fill="#52606d"/></marker></defs>']
    for a, b in lineage.edges:
        if (a, b) in implied:  # drawn, a long implied edge would cut across the boxes between its ends
            continue
        (x1, y1), (x2, y2) = where[a], where[b]
        x1, y1, x2, y2 = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
        bend = max(20.0, (x2 - x1) / 2)
        parts.append(f'<path class="edge" d="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" '
                     f'fill="none" stroke="#52606d" stroke-width="1.2" marker-end="url(#arrow)"/>')
    for node_id, (x, y) in where.items():
        node = lineage.nodes[node_id]
        name = node.name if len(node.name) <= MAX_LABEL else node.name[:MAX_LABEL - 1] + "\u2026"
        second = node.short_hash or (node.created_at[:19].replace("T", " ") if node.created_at else node.kind)
        width_px = 2.5 if node.kind == "bundle" else 1.2
        parts.append(f'<g class="node" data-kind="{esc(node.kind)}"><title>{esc(tooltip(node))}</title>'
                     f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{FILL.get(node.kind, "#fff")}" '
                     f'stroke="#3e4c59" stroke-width="{width_px}"/>'
                     f'<text x="{x + 8:.1f}" y="{y + 19:.1f}" font-size="12" font-weight="600" fill="#1f2933">{esc(name)}</text>'
                     f'<text x="{x + 8:.1f}" y="{y + 37:.1f}" font-size="11" font-family="monospace" fill="#52606d">{esc(second)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def tooltip(node: Node) -> str:
    """Every detail of a node, one per line."""
    lines = [f"{node.name} ({node.kind})"]
    for label, value in (("step", node.step), ("uri", node.uri), ("content hash", node.content_hash),
                         ("created by", node.created_by), ("created at", node.created_at),
                         ("code version", node.code_version), ("detail", node.detail)):
        if value:
            lines.append(f"{label}: {value}")
    return "\n".join(lines)


def _chain_table(lineage: Lineage) -> str:
    rows = [{"#": i, "name": n.name, "kind": n.kind, "step": n.step, "hash": n.short_hash, "uri": n.uri,
             "parents": ", ".join(lineage.nodes[p].name for p in lineage.parents(n.id)),
             "created by": n.created_by, "created at": n.created_at, "code version": n.code_version, "detail": n.detail}
            for i, n in enumerate(lineage.ordered(), 1)]
    return table(rows)


def _events_table(events: list[dict]) -> str:
    if not events:
        return '<p class="muted">no stage events recorded for this version (registered before stages existed)</p>'
    rows = []
    for event in events:
        gates = event.get("gates") or {}
        rows.append({"seq": event.get("seq"), "from": event.get("from") or "(registered)", "to": event.get("to"),
                     "by": event.get("by"), "at": event.get("at"), "reason": event.get("reason"),
                     "target": json.dumps(event["target"], default=str) if isinstance(event.get("target"), dict) else event.get("target") or "",
                     "gates": ", ".join(f"{k}: {'passed' if g.get('passed') else 'FAILED'}" for k, g in gates.items() if isinstance(g, dict))})
    return table(rows)


def _implied_edges(lineage: Lineage) -> set[tuple[str, str]]:
    """Edges a -> b where a is also an ancestor of another parent of b (a longer path says the same)."""
    parents: dict[str, list[str]] = {n: [] for n in lineage.nodes}
    for a, b in lineage.edges:
        parents[b].append(a)
    ancestors: dict[str, set[str]] = {}

    def up(node: str) -> set[str]:
        if node not in ancestors:
            ancestors[node] = set()  # guards a cycle
            ancestors[node] = {p for p in parents[node]} | {q for p in parents[node] for q in up(p)}
        return ancestors[node]

    implied = set()
    for node, direct in parents.items():
        for a in direct:
            if any(a in up(other) for other in direct if other != a):
                implied.add((a, node))
    return implied


def _mean(values: list[int], default: float) -> float:
    return sum(values) / len(values) if values else default
