"""The profile's HTML report: self-contained, one small plot per column.

Speed matters here: the report is drawn in every pipeline run, one plot per
column. Matplotlib spends most of its time creating figures and laying out
tick labels, so the per-column plots share one figure and have no axes at
all: a histogram's range is written in the HTML caption under it, and top
values are labelled on their bars.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from keel.components._common import report
from keel.components._common.config import TargetSection
from keel.components.profile.values import numeric_values

_BLUE, _LIGHT, _RED, _GREY = "#3e7cb1", "#9fc5e8", "#c0392b", "#7b8794"
_BINS = 30
_LABEL_CHARS = 24


def render_html(summary: dict, frame: pd.DataFrame, target: TargetSection) -> str:
    """The profile report as one self-contained HTML page.

    Args:
        summary: what `profile()` returned for `frame`.
        frame: the profiled table (the plots need its values).
        target: the `target` config section.
    """
    plt = report.pyplot()
    details = summary["columns_detail"]
    sections = [
        ("Overview", _overview(summary)),
        ("Warnings", _warnings(summary["warnings"])),
        (f"Target: {target.column} ({target.task})", _target_section(plt, summary["target"], frame[target.column], target)),
        ("Association with the target", _association_section(plt, details)),
        ("Columns", _columns_table(details)),
        ("Distributions", _distributions(frame, details)),
    ]
    return report.page("Data profile", sections, subtitle=f"{summary['rows']:,} rows x {summary['columns']} columns")


def _overview(summary: dict) -> str:
    details = summary["columns_detail"]
    kinds = pd.Series([d["kind"] for d in details]).value_counts()
    cells = summary["rows"] * summary["columns"]
    nulls = sum(d["null_rate"] * summary["rows"] for d in details)
    rows = [
        {"what": "rows", "value": f"{summary['rows']:,}"},
        {"what": "columns", "value": summary["columns"]},
        {"what": "column kinds", "value": ", ".join(f"{k}: {n}" for k, n in kinds.items())},
        {"what": "null cells", "value": f"{nulls / cells:.1%}" if cells else "n/a"},
        {"what": "target", "value": f"{summary['target']['column']} ({summary['target']['task']})"},
        {"what": "warnings", "value": len(summary["warnings"])},
    ]
    return report.table(rows, ["what", "value"])


def _warnings(warnings: list[str]) -> str:
    if not warnings:
        return '<p class="pass">No warnings.</p>'
    return "<ul>" + "".join(f"<li>{report.esc(w)}</li>" for w in warnings) + "</ul>"


def _target_section(plt, summary: dict, series: pd.Series, target: TargetSection) -> str:
    if summary["stats"] is not None:
        fig, ax = plt.subplots(figsize=(5, 2.4))
        values = numeric_values(series).dropna()
        ax.hist(values[np.isfinite(values)], bins=_BINS, color=_BLUE)
        ax.set_xlabel(_label(target.column), parse_math=False)
        ax.set_ylabel("rows")
        stats = [{"statistic": k, "value": v} for k, v in summary["stats"].items()]
        return report.figure_img(fig, f"distribution of {target.column}") + report.table(stats)
    balance = summary["class_balance"]
    labels = list(balance)
    positive = {str(v) for v in target.positive_values or []}
    colors = [_RED if label in positive else _BLUE for label in labels]
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * len(labels) + 1), 2.4))
    ax.bar(range(len(labels)), list(balance.values()), color=colors)
    ax.set_xticks(range(len(labels)), [_label(v, 12) for v in labels], rotation=45 if len(labels) > 8 else 0,
                  ha="right" if len(labels) > 8 else "center", parse_math=False)
    ax.set_ylabel("rows")
    ax.set_title("class balance" + (" (red: positive_values)" if positive else ""), fontsize=9)
    total = sum(balance.values())
    rows = [{"class": k, "rows": v, "share": f"{v / total:.1%}"} for k, v in balance.items()]
    body = report.figure_img(fig, "class balance") + report.table(rows)
    if summary["binary_balance"]:
        binary = summary["binary_balance"]
        n = binary["negative"] + binary["positive"]
        names = list(target.labels or ["negative", "positive"])
        body += "<p>Binarized with positive_values " + report.esc(list(target.positive_values)) + ":</p>" + report.table(
            [{"class": f"{name} ({key})", "rows": binary[key], "share": f"{binary[key] / n:.1%}"} for name, key in zip(names, ("negative", "positive"))]
        )
    if summary["nulls"]:
        body += f'<p class="fail">{summary["nulls"]:,} rows have no target value.</p>'
    return body


def _association_section(plt, details: list[dict]) -> str:
    scored = [d for d in details if d["target_correlation"] is not None]
    if not scored:
        return '<p class="muted">No column has a defined association with the target.</p>'
    scored.sort(key=lambda d: abs(d["target_correlation"]))
    fig, ax = plt.subplots(figsize=(6, 0.18 * len(scored) + 0.8))
    colors = {"pearson": _BLUE, "cramers_v": _RED, "correlation_ratio": _GREY}
    names = {"pearson": "Pearson r", "cramers_v": "Cramér's V", "correlation_ratio": "correlation ratio"}
    ax.barh(range(len(scored)), [d["target_correlation"] for d in scored], color=[colors[d["correlation_method"]] for d in scored])
    # Plain texts, not tick labels: 50-odd ticks cost more than the rest of the chart.
    ax.set_yticks([])
    for y, detail in enumerate(scored):
        ax.text(-0.01, y, _label(detail["name"]), transform=ax.get_yaxis_transform(), ha="right", va="center",
                fontsize=7, parse_math=False)
    ax.set_ylim(-0.6, len(scored) - 0.4)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlim(-1.05 if any(d["target_correlation"] < 0 for d in scored) else 0, 1.05)
    ax.tick_params(axis="x", labelsize=7)
    used = [m for m in colors if any(d["correlation_method"] == m for d in scored)]
    ax.legend([plt.Rectangle((0, 0), 1, 1, color=colors[m]) for m in used], [names[m] for m in used], fontsize=7, loc="lower right")
    note = ('<p class="muted">Pearson r is signed; Cramér\'s V and the correlation ratio are strengths in [0, 1]. '
            "Text and datetime columns have none. Values near 1 often mean the column leaks the target.</p>")
    return report.figure_img(fig, "association of each column with the target") + note


def _columns_table(details: list[dict]) -> str:
    columns = ["name", "kind", "dtype", "null_rate", "cardinality", "min", "max", "mean", "std", "target_correlation", "correlation_method"]
    rows = [{c: ("" if d.get(c) is None else d[c]) for c in columns} for d in details]
    for row in rows:
        row["null_rate"] = f"{row['null_rate']:.1%}"
    return report.table(rows, columns)


def _distributions(frame: pd.DataFrame, details: list[dict]) -> str:
    from matplotlib.figure import Figure

    # One figure, redrawn per column: creating a figure and its axes costs more
    # than drawing and encoding a small plot. A Figure made outside pyplot is
    # not registered there, so figure_img's close leaves it usable.
    fig = Figure(figsize=(2.8, 1.5))
    ax = fig.add_subplot()
    ax.set_axis_off()
    figures = []
    for detail in details:
        for artist in [*ax.patches, *ax.texts]:
            artist.remove()
        caption = _small_plot(ax, frame[detail["name"]], detail)
        image = report.figure_img(fig, f"distribution of {detail['name']}")
        figures.append(f"<figure>{image}<figcaption><b>{report.esc(detail['name'])}</b> {report.esc(caption)}</figcaption></figure>")
    return '<div class="grid">' + "".join(figures) + "</div>"


def _small_plot(ax, series: pd.Series, detail: dict) -> str:
    """Draws a histogram or top-values chart on the bare `ax` (see the module docstring); returns the caption."""
    kind = detail["kind"]
    caption = f"{kind}, {detail['null_rate']:.0%} null, {detail['cardinality']:,} distinct"
    if kind in ("numeric", "datetime"):
        values = series.dropna()
        if kind == "datetime":
            values = pd.to_datetime(values)
            low, high = str(values.min())[:19], str(values.max())[:19]
            numbers = values.astype("int64").to_numpy(dtype=float) if len(values) else np.array([])
        else:
            numbers = numeric_values(values).to_numpy()
            numbers = numbers[np.isfinite(numbers)]
            low, high = (f"{numbers.min():.4g}", f"{numbers.max():.4g}") if len(numbers) else ("", "")
        if len(numbers):
            counts, edges = np.histogram(numbers, bins=_BINS)
            ax.stairs(counts, edges, fill=True, color=_BLUE)
            ax.set_xlim(edges[0], edges[-1])
            ax.set_ylim(0, max(counts.max(), 1) * 1.05)
            caption += f", range {low} .. {high}"
        return caption
    top = list((detail["top_values"] or {}).items())[::-1]
    ax.barh(range(len(top)), [count for _, count in top], color=_LIGHT, height=0.8)
    for y, (value, count) in enumerate(top):
        ax.text(0, y, f" {_label(value)}  {count:,}", va="center", fontsize=7, parse_math=False)
    ax.set_xlim(0, max([count for _, count in top], default=1) * 1.02)
    ax.set_ylim(-0.5, max(len(top), 1) - 0.5)
    if detail["cardinality"] > len(top):
        caption += f", top {len(top)} shown"
    return caption


def _label(value, width: int = _LABEL_CHARS) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"
