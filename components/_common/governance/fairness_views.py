"""The fairness report, and the summary rows and figures the model card shows.

Everything here reads the JSON form of the result (FairnessResult.to_dict()),
so the model card renders it from the stored metrics metadata alone.
"""

from __future__ import annotations

from keel.components._common import report

# The EEOC four-fifths rule: a group selection rate below 80% of the highest one is evidence of adverse impact.
FOUR_FIFTHS = 0.8
_HOW_TO_CONFIGURE = ("Name the sensitive attribute columns in the config's <code>fairness.sensitive</code> list, or pass "
                     "<code>keel run --sensitive COLUMN</code> (repeatable); add <code>fairness.min</code> / "
                     "<code>fairness.max</code> limits to gate registration on them.")


def card_summary(result: dict) -> list[dict]:
    """One row per (sensitive attribute, disparity metric) for the model card.

    Args:
        result: FairnessResult.to_dict() (the `fairness` key of assess_fairness's metrics metadata).

    Returns:
        Rows with keys attribute, metric, value (a float, or "not computed"), interval ("[low, high]" or ""),
        limit ("min 0.8", "max 0.1" or ""), result ("pass", "FAIL", or "not gated" with the four-fifths status
        for demographic_parity_ratio). Empty when no sensitive attribute was configured.
    """
    rows = []
    limits = {"min": result["gate"].get("min") or {}, "max": result["gate"].get("max") or {}}
    for column, attribute in result["attributes"].items():
        for metric, disparity in attribute["disparities"].items():
            kind = "min" if metric in limits["min"] else "max" if metric in limits["max"] else None
            value = disparity.get("value")
            row = {"attribute": column, "metric": metric,
                   "value": "not computed" if value is None else value,
                   "interval": _interval(disparity), "limit": f"{kind} {limits[kind][metric]:g}" if kind else ""}
            if kind is None:
                row["result"] = "not gated" + _four_fifths_note(metric, value)
            elif value is None:
                row["result"] = f"FAIL (not computed: {disparity.get('skipped', 'undefined')})"
            else:
                ok = value >= limits[kind][metric] if kind == "min" else value <= limits[kind][metric]
                row["result"] = "pass" if ok else "FAIL"
            rows.append(row)
    return rows


def card_figures(result: dict) -> list[str]:
    """HTML <figure> strings with inline PNGs: each attribute's group rates, and mitigation before/after if computed."""
    from keel.components._common.governance import fairness_plots as plots

    figures = [plots.group_rates_plot(column, result["task"], attribute["groups"])
               for column, attribute in result["attributes"].items() if attribute["groups"]]
    mitigation = result.get("mitigation")
    if mitigation and mitigation.get("status") == "computed":
        figures.append(plots.mitigation_plot(mitigation))
    return figures


def render_report(result: dict, model_info: dict | None = None) -> str:
    """The self-contained HTML report: verdict, limits vs values, per-attribute groups and disparities, mitigation."""
    from keel.components._common.governance import fairness_plots as plots

    model_info = model_info or {}
    sections = [("Result", _verdict(result))]
    if result["sensitive"]:
        sections.append(("Limits", _limits(result)))
        sections.append(("Four-fifths rule", _four_fifths(result)))
        for column, attribute in result["attributes"].items():
            sections.append((f"Attribute: {column}", _attribute(column, result["task"], attribute, plots)))
        if result.get("mitigation"):
            sections.append(("Mitigation", _mitigation(result["mitigation"], plots)))
        sections.append(("Method", _method(result)))
    title = f"Fairness: {model_info.get('family', 'model')} ({result['task']})"
    subtitle = f"{result['rows']} test rows; sensitive: {', '.join(result['sensitive']) or 'none configured'}"
    return report.page(title, sections, subtitle=subtitle)


def _verdict(result: dict) -> str:
    gate = result["gate"]
    html = '<p class="pass">PASSED</p>' if gate["passed"] else '<p class="fail">FAILED</p>'
    if gate["failures"]:
        html += "<ul>" + "".join(f"<li>{report.esc(line)}</li>" for line in gate["failures"]) + "</ul>"
    if not result["sensitive"]:
        html += f"<p>No sensitive attribute was configured, so no group fairness was assessed. {_HOW_TO_CONFIGURE}</p>"
    return html


def _limits(result: dict) -> str:
    rows = [r for r in card_summary(result) if r["limit"]]
    if not rows:
        return (f'<p class="muted">No fairness limits configured: the gate passes every model. {_HOW_TO_CONFIGURE}</p>')
    return report.table(rows, ["attribute", "metric", "limit", "value", "interval", "result"])


def _four_fifths(result: dict) -> str:
    rows = []
    for column, met in result["four_fifths"].items():
        ratio = result["attributes"][column]["disparities"].get("demographic_parity_ratio", {})
        status = "not computed" if met is None else "met" if met else "NOT met (adverse impact)"
        rows.append({"attribute": column, "demographic_parity_ratio": ratio.get("value", "not computed"),
                     "interval": _interval(ratio), "four-fifths rule": status})
    note = ('<p class="muted">Information, whether or not it is a configured limit: the lowest group selection rate '
            "should be at least 80% of the highest (demographic_parity_ratio &gt;= 0.8).</p>")
    return note + report.table(rows)


def _attribute(column: str, task: str, attribute: dict, plots) -> str:
    rates = plots.TASK_RATES[task]
    rows = [_group_row(group, rates) for group in [*attribute["groups"], attribute["overall"]]]
    parts = [report.table(rows, ["group", "n", "in gate", *rates])]
    parts.append('<div class="grid">' + plots.group_rates_plot(column, task, attribute["groups"]) + "</div>")
    if attribute["excluded_groups"]:
        sizes = {g["group"]: g["n"] for g in attribute["groups"]}
        listed = ", ".join(f"{name} (n={sizes[name]})" for name in attribute["excluded_groups"])
        parts.append(f'<p><b>Small groups</b>: {report.esc(listed)} have fewer test rows than fairness.min_group_size; '
                     "they are reported above but left out of the disparity metrics and the gate, because their rates are "
                     "too uncertain to judge.</p>")
    disparity_rows = [{"metric": metric, "value": d.get("value", f"not computed: {d.get('skipped', '')}"),
                       "interval": _interval(d)} for metric, d in attribute["disparities"].items()]
    parts.append("<h3>Disparities between groups</h3>" + report.table(disparity_rows, ["metric", "value", "interval"]))
    return "".join(parts)


def _mitigation(mitigation: dict, plots) -> str:
    head = (f"<p>{report.esc(mitigation['method'])} with constraint <b>{report.esc(mitigation['constraint'])}</b>, "
            f"{report.esc(mitigation['attribute_note'])}; fitted on the validation split "
            f"({mitigation['validation_rows']} rows) and measured on the test split.</p>"
            f"<p><b>{report.esc(mitigation['note'])}</b></p>")
    if mitigation["status"] != "computed":
        return head + f'<p class="fail">Not computed: {report.esc(mitigation["reason"])}</p>'
    before, after = mitigation["before"], mitigation["after"]
    rows = [{"metric": "accuracy", "before": before["accuracy"], "after": after["accuracy"]}]
    for metric in before["disparities"]:
        rows.append({"metric": metric, "before": before["disparities"][metric].get("value", "not computed"),
                     "after": after["disparities"][metric].get("value", "not computed")})
    groups = [{"group": b["group"], "n": b["n"],
               "selection rate before": _cell(b["selection_rate"]), "selection rate after": _cell(a["selection_rate"]),
               "TPR before": _cell(b["true_positive_rate"]), "TPR after": _cell(a["true_positive_rate"])}
              for b, a in zip(before["groups"], after["groups"])]
    return (head + report.table(rows, ["metric", "before", "after"]) + report.table(groups)
            + '<div class="grid">' + plots.mitigation_plot(mitigation) + "</div>")


def _method(result: dict) -> str:
    s = result.get("settings", {})
    lines = [
        (f"Group rates carry {s.get('confidence', 0.95):.0%} Wilson score intervals (the MAE of a regression target a "
         f"percentile bootstrap); disparities carry percentile bootstrap intervals from {s.get('bootstrap')} resamples "
         f"stratified by group (seed {s.get('seed')})."),
        (f"Disparities and the gate use only groups with at least {s.get('min_group_size')} test rows; a missing value "
         "is its own group, (missing)."),
        ("Disparity metrics follow fairlearn: difference = highest - lowest group rate, ratio = lowest / highest; "
         "equalized odds takes the worse of the true and false positive rates."),
    ]
    if s.get("decision_threshold") is not None:
        lines.append(f"Decisions use the evaluation decision threshold {s['decision_threshold']:g}, as served.")
    return "<ul>" + "".join(f"<li>{report.esc(line)}</li>" for line in lines) + "</ul>"


def _group_row(group: dict, rates: tuple[str, ...]) -> dict:
    row = {"group": group["group"], "n": group["n"], "in gate": "" if "included" not in group else
           "yes" if group["included"] else "no (small)"}
    row.update({rate: _cell(group[rate]) for rate in rates})
    return row


def _cell(rate: dict) -> str:
    if rate["value"] is None:
        return "undefined (denominator 0)"
    if rate.get("low") is None:
        return f"{rate['value']:.3f}"
    return f"{rate['value']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}]"


def _interval(disparity: dict) -> str:
    if disparity.get("low") is None or disparity.get("high") is None:
        return ""
    return f"[{disparity['low']:.3f}, {disparity['high']:.3f}]"


def _four_fifths_note(metric: str, value) -> str:
    if metric != "demographic_parity_ratio" or value is None:
        return ""
    return "; four-fifths rule " + ("met" if value >= FOUR_FIFTHS else "NOT met")
