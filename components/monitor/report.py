"""The monitoring report: one self-contained HTML page the Kubeflow dashboard renders (no script, no network).

Verdict and reasons first, then the window, per-column drift (a table for
every column, plots of reference against window for the drifted ones and the
closest calls), prediction drift, performance on the labelled rows over time,
and the serving invariants. Evidently's own interactive report is a second
artifact beside it.
"""

from __future__ import annotations

import numpy as np

from keel.components._common.report import esc, figure_img, page, pyplot, table
from keel.components.monitor.assess import Assessment

_SIZE = (4.2, 2.8)
MAX_COLUMN_PLOTS = 12
_TOP_CATEGORIES = 12


def _figure(fig, caption: str) -> str:
    return f"<figure>{figure_img(fig, caption)}<figcaption>{esc(caption)}</figcaption></figure>"


def column_plot(column: str, kind: str, reference, current) -> str:
    """Reference vs window: overlaid density histograms (numbers) or category shares (the rest)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=_SIZE)
    if kind == "num":
        ref = np.asarray(reference.dropna(), dtype=float)
        cur = np.asarray(current.dropna(), dtype=float)
        both = np.concatenate([ref, cur]) if len(ref) + len(cur) else np.zeros(1)
        low, high = np.nanpercentile(both, [0.5, 99.5]) if len(both) > 1 else (both.min(), both.max() + 1)
        bins = np.linspace(low, high if high > low else low + 1, 31)
        ax.hist(np.clip(ref, low, high), bins=bins, density=True, alpha=.55, label="reference")
        ax.hist(np.clip(cur, low, high), bins=bins, density=True, alpha=.55, label="window")
        ax.set(ylabel="density")
    else:
        ref = reference.astype(str).value_counts(normalize=True)
        cur = current.astype(str).value_counts(normalize=True)
        keys = list((ref.add(cur, fill_value=0)).sort_values(ascending=False).index[:_TOP_CATEGORIES])
        x = np.arange(len(keys))
        ax.bar(x - .2, [ref.get(k, 0) for k in keys], .4, label="reference")
        ax.bar(x + .2, [cur.get(k, 0) for k in keys], .4, label="window")
        ax.set_xticks(x, [k[:12] for k in keys], rotation=45, ha="right", fontsize=7)
        ax.set(ylabel="share")
    ax.set_title(column, fontsize=9)
    ax.legend(fontsize=7)
    return _figure(fig, column)


def performance_plot(per_day: list[dict], metric_names: list[str]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    days = [d["day"] for d in per_day]
    for name in metric_names:
        ax.plot(days, [d.get(name) for d in per_day], marker="o", label=name)
    ax.set(ylabel="value")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.legend(fontsize=7)
    return _figure(fig, "Performance per day of requests (labelled rows)")


def traffic_plot(per_day: dict) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.6))
    days = list(per_day)
    ax.bar(days, [per_day[d]["rows"] for d in days], label="rows")
    ax.bar(days, [per_day[d]["labelled"] for d in days], label="labelled", alpha=.8)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.legend(fontsize=7)
    return _figure(fig, "Logged rows per day")


def render(record: dict, result: Assessment, window, reference) -> str:
    verdict = result.verdict
    css = "pass" if verdict.verdict == "ok" else "fail"
    head = (f'<p>Verdict: <span class="{css}">{esc(verdict.verdict)}</span>'
            f"{' &mdash; retraining starts' if verdict.retrain else ''}</p>"
            + "<ul>" + "".join(f"<li>{esc(r)}</li>" for r in verdict.reasons) + "</ul>")
    about = table([
        {"field": "model", "value": f"{record['model']}:v{record['version']} ({record['bundle_hash'][:19]})"},
        {"field": "window", "value": f"{record['window']['start']} .. {record['window']['end']}"},
        {"field": "rows / calls", "value": f"{record['rows']:,} / {record['calls']:,}"},
        {"field": "drift sample", "value": f"{record['sample_rows']:,} rows (uniform)"},
        {"field": "labelled rows", "value": f"{record['labelled_rows']:,}"},
        {"field": "reference", "value": f"{record['reference']['name']}@{record['reference']['version'][:19]} "
                                        f"({record['reference']['rows']:,} rows of its {record['reference']['rows_from']})"},
        {"field": "model age", "value": f"{record['age_days']:.1f} days"},
    ])
    if record.get("reference_note"):
        about += f'<p class="muted">{esc(record["reference_note"])}</p>'
    if record["per_day"]:
        about += traffic_plot(record["per_day"])
    sections = [("Verdict", head), ("Window", about)]
    if result.drifts:
        sections += _drift_sections(record, result, window, reference)
    sections.append(("Performance", _performance(result)))
    serving = [{"finding": reason, "rows": n, "kind": "rejected"} for reason, n in record["rejected"].items()]
    serving += [{"finding": reason, "rows": n, "kind": "warned"} for reason, n in record["warned"].items()]
    sections.append(("Serving invariants", table(serving, ["kind", "finding", "rows"])))
    return page(f"Monitoring: {record['model']} v{record['version']}", sections,
                subtitle=f"window ending {record['window']['end']}")


def _drift_sections(record: dict, result: Assessment, window, reference) -> list[tuple[str, str]]:
    from keel.components.monitor.checks import column_kinds, prediction_kinds

    kinds = {**column_kinds(record["schema"], record["input_columns"]),
             **prediction_kinds(record["task"], record["classes"])}

    def rows(kind: str) -> list[dict]:
        found = sorted((d for d in result.drifts if d.kind == kind), key=lambda d: (not d.drifted, d.column))
        return [{"column": d.column, "drifted": "yes" if d.drifted else "no", "method": d.method,
                 "threshold": d.threshold, "score": d.score} for d in found]

    def margin(d) -> float:  # how close a column came to its threshold (drifted ones first)
        return -1.0 if d.drifted else abs(d.score - d.threshold) / max(d.threshold, 1e-12)

    inputs = [d for d in result.drifts if d.kind == "input"]
    shown = sorted(inputs, key=margin)[:MAX_COLUMN_PLOTS]
    plots = "".join(column_plot(d.column, kinds[d.column], reference[d.column], window[d.column]) for d in shown)
    body = table(rows("input"), ["column", "drifted", "method", "threshold", "score"]) + f'<div class="grid">{plots}</div>'
    out = [("Data drift per input column", body)]
    predictions = [d for d in result.drifts if d.kind == "prediction"]
    if predictions:
        plots = "".join(column_plot(d.column, kinds[d.column], reference[d.column], window[d.column]) for d in predictions)
        out.append(("Prediction drift", table(rows("prediction"), ["column", "drifted", "method", "threshold", "score"])
                    + f'<div class="grid">{plots}</div>'))
    return out


def _performance(result: Assessment) -> str:
    perf = result.performance
    if perf is None:
        return '<p class="muted">Not assessed: too few labelled rows in the window (`keel monitor labels` loads them).</p>'
    gate = perf["gate"]
    rows = [{"metric": name, "value": value,
             "gate": f">= {gate['min'][name]}" if name in gate["min"] else f"<= {gate['max'][name]}" if name in gate["max"] else ""}
            for name, value in perf["metrics"].items()]
    status = ('<p class="pass">passes the evaluate gate</p>' if perf["passed"]
              else f'<p class="fail">below the evaluate gate: {esc("; ".join(perf["failures"]))}</p>')
    body = status + f"<p>{perf['rows']:,} labelled rows</p>" + table(rows, ["metric", "value", "gate"])
    if result.per_day:
        names = [n for n in (*gate["min"], *gate["max"]) if n in perf["metrics"]] or list(perf["metrics"])[:2]
        body += performance_plot(result.per_day, names)
    return body
