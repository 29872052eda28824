"""The monitoring checks over one window of logged traffic, and the verdict they add up to.

A window is streamed once (`summarize`): every row is counted exactly (rows,
calls, rejections and policy warnings per reason, labelled rows), and a
uniform sample of at most `monitoring.sample_rows` rows (and another of the
labelled rows) is kept by bottom-k random keys, so memory stays bounded
whatever the window's size. Drift is Evidently's DataDriftPreset with its
defaults (KS / chi-squared / z for a reference of 1,000 rows or fewer,
Wasserstein / Jensen-Shannon above) run on the reference against that sample,
each column's method and threshold overridable. The distances Evidently uses
for a large reference converge as 1/sqrt(n), so a 100,000-row sample gives the
full window's verdict except on a column within a hair of its threshold
(tests/bench/README.md measures how often, on a million rows).
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from keel.components.monitor.window import META, PREDICTION, SCORE_PREFIX

if TYPE_CHECKING:
    import pandas as pd

LABEL = "label"
_KEY = "__sample_key"


@dataclass
class Summary:
    rows: int = 0
    calls: int = 0
    rejected: Counter = field(default_factory=Counter)
    warned: Counter = field(default_factory=Counter)  # reason -> values
    warned_rows: int = 0  # answered rows with at least one warning
    labelled_rows: int = 0
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    sample: object = None  # DataFrame: a uniform sample of the answered rows
    labelled: object = None  # DataFrame: a uniform sample of the labelled rows
    per_day: dict = field(default_factory=dict)  # date -> {rows, labelled}


class _Sample:
    """A uniform sample of at most `limit` rows by bottom-k random keys: the rows with the smallest keys so
    far. Rows at or above the k-th smallest key seen so far can never enter, so after the first `limit` rows
    few are copied (about limit * ln(rows / limit) in a whole window); the kept frames are trimmed only when
    they reach twice the limit, so each batch costs a filter and not a sort of the sample."""

    def __init__(self, limit: int, rng):
        self.limit, self.rng = limit, rng
        self.parts: list = []
        self.held = 0
        self.bound = 1.0  # keys at or above it cannot be in the sample

    def add(self, batch) -> None:
        keys = self.rng.random(len(batch))
        under = keys < self.bound
        if not under.any():
            return
        self.parts.append(batch[under].assign(**{_KEY: keys[under]}))
        self.held += int(under.sum())
        if self.held >= 2 * self.limit:
            self._trim()

    def _trim(self) -> None:
        import pandas as pd

        merged = pd.concat(self.parts, ignore_index=True)
        if len(merged) > self.limit:
            merged = merged.nsmallest(self.limit, _KEY)
            self.bound = float(merged[_KEY].max())
        self.parts, self.held = [merged], len(merged)

    def frame(self):
        """The sample in request order, or None when no row was added."""
        if not self.parts:
            return None
        self._trim()
        return self.parts[0].drop(columns=[_KEY]).sort_values(["request_time", "event_id", "row"])


def summarize(batches, schema: dict, columns: list[str], sample_rows: int, attach_labels=None, seed: int = 0) -> Summary:
    """One pass over the window's frames: exact counts, and bounded uniform samples."""
    rng = np.random.default_rng(seed)
    summary = Summary()
    sample, labelled_sample = _Sample(sample_rows, rng), _Sample(sample_rows, rng)
    specs = (schema.get("columns") or {})
    kinds = column_kinds(schema, columns)
    for frame in batches:
        summary.calls += frame["event_id"].nunique()
        when = frame["request_time"]
        summary.first = min(filter(None, [summary.first, when.min()]))
        summary.last = max(filter(None, [summary.last, when.max()]))
        summary.rows += len(frame)
        rejected = frame["rejected"].notna()
        summary.rejected.update(frame.loc[rejected, "rejected"].tolist())
        # The sample needs no `rejected` (answered rows only); an all-None object column only slows every concat.
        answered = (frame.loc[~rejected] if rejected.any() else frame).drop(columns=["rejected"])
        warned = np.zeros(len(answered), dtype=bool)
        for column in columns:
            found, mask = _warnings(answered[column], column, specs.get(column) or {})
            summary.warned.update(found)
            warned |= mask
        summary.warned_rows += int(warned.sum())
        # JSON gives a column ints, floats and strings side by side; the schema's type decides (a value that
        # is not a number becomes missing, as the predictor would have refused or coerced it).
        answered = answered.assign(**_typed(answered, kinds))
        _count_days(summary.per_day, when, "rows")
        sample.add(answered)
        if attach_labels is None:
            continue
        label = attach_labels(answered)
        labelled = answered.loc[label.notna()].assign(**{LABEL: label[label.notna()]})
        _count_days(summary.per_day, labelled["request_time"], "labelled")
        summary.labelled_rows += len(labelled)
        if len(labelled):
            labelled_sample.add(labelled)
    summary.sample, summary.labelled = sample.frame(), labelled_sample.frame()
    return summary


def _count_days(per_day: dict, when, key: str) -> None:
    """Rows per UTC day (formatting only the distinct days: strftime on a million timestamps takes seconds)."""
    for day, count in when.dt.floor("D").value_counts().items():
        per_day.setdefault(day.strftime("%Y-%m-%d"), {"rows": 0, "labelled": 0})[key] += int(count)


def _warnings(values, column: str, spec: dict) -> tuple[Counter, np.ndarray]:
    """The predictor's `warn`-policy findings, recounted from the schema (out of range, unseen category):
    the count per reason, and which rows."""
    import pandas as pd

    found, mask = Counter(), np.zeros(len(values), dtype=bool)
    if spec.get("type") in ("integer", "float"):
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        low, high = spec.get("min"), spec.get("max")
        if low is not None:
            mask |= numbers < low
        if high is not None:
            mask |= numbers > high
        if mask.any():
            found[f"out_of_range: {column}"] = int(mask.sum())
    elif spec.get("allowed") is not None:
        mask = (values.notna() & ~values.astype(str).isin({str(v) for v in spec["allowed"]})).to_numpy()
        if mask.any():
            found[f"unseen_category: {column}"] = int(mask.sum())
    return found, mask


# -- drift --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    threshold: float
    score: float
    drifted: bool
    kind: str  # "input" or "prediction"


def column_kinds(schema: dict, columns: list[str]) -> dict[str, str]:
    specs = schema.get("columns") or {}
    return {c: "num" if (specs.get(c) or {}).get("type") in ("integer", "float") else "cat" for c in columns}


def drift(reference, current, kinds: dict[str, str], section, prediction_kinds: dict[str, str] | None = None):
    """Evidently's DataDriftPreset per column (inputs, then prediction columns); returns (results, snapshot)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry: nothing may call out
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    prediction_kinds = prediction_kinds or {}
    every = {**kinds, **prediction_kinds}
    definition = DataDefinition(numerical_columns=[c for c, k in every.items() if k == "num"],
                                categorical_columns=[c for c, k in every.items() if k == "cat"])
    methods = {c: o.method for c, o in section.columns.items() if o.method}
    thresholds = {c: o.threshold for c, o in section.columns.items() if o.threshold is not None}
    preset = DataDriftPreset(columns=list(every), drift_share=section.drift_share, method=section.method,
                             threshold=section.threshold, per_column_method=methods or None,
                             per_column_threshold=thresholds or None)
    ref, cur = _typed(reference[list(every)], every), _typed(current[list(every)], every)
    # include_tests: Evidently's own drift decision per column (a p-value test drifts below its threshold, a
    # distance at or above it; which is which is Evidently's to know, not a guess from the method's name).
    snapshot = Report([preset], include_tests=True).run(Dataset.from_pandas(cur, data_definition=definition),
                                                        Dataset.from_pandas(ref, data_definition=definition))
    document = snapshot.dict()
    verdicts = {t["metric_config"]["metric_id"]: t["status"] for t in document["tests"] if t["id"] == "drift"}
    results = []
    for metric in document["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        column = config["column"]
        results.append(ColumnDrift(column, _method_name(config["method"], every[column]), float(config["threshold"]),
                                   float(metric["value"]), verdicts[metric["id"]] == "FAIL",
                                   "prediction" if column in prediction_kinds else "input"))
    return results, snapshot


def _method_name(method: str, kind: str) -> str:
    """Evidently's display name of a stattest (a method set in config arrives as its id, e.g. `ks`)."""
    from evidently.legacy.calculations.stattests import registry
    from evidently.legacy.core import ColumnType

    try:
        return registry.get_registered_stattest(method, ColumnType.Numerical if kind == "num" else ColumnType.Categorical).display_name
    except Exception:  # noqa: BLE001 - already a display name (Evidently's own choice), or a test of no such type
        return method


def _typed(frame, kinds: dict[str, str]):
    """Numbers as float64 and categories as pandas strings, whatever mix of JSON types a column arrived as."""
    import pandas as pd

    out = {}
    for column, kind in kinds.items():
        values = frame[column]
        if kind == "num":
            out[column] = values if values.dtype == "float64" else pd.to_numeric(values, errors="coerce").astype("float64")
        else:
            out[column] = values if values.dtype == "string" else values.astype("string")
    return pd.DataFrame(out, index=frame.index)


def prediction_frame(predictions, proba, classes: list) -> "pd.DataFrame":
    """The prediction columns drift is measured on: the predicted class (or value) and the positive-class score."""
    import pandas as pd

    frame = pd.DataFrame({PREDICTION: list(predictions)})
    if proba is not None and len(classes) == 2:
        frame[f"{SCORE_PREFIX}{classes[1]}"] = np.asarray(proba)[:, 1]
    return frame


def prediction_kinds(task: str, classes: list) -> dict[str, str]:
    if task == "regression":
        return {PREDICTION: "num"}
    kinds = {PREDICTION: "cat"}
    if len(classes) == 2:
        kinds[f"{SCORE_PREFIX}{classes[1]}"] = "num"
    return kinds


# -- performance ----------------------------------------------------------------------------------


def performance(labelled, task: str, classes: list, evaluation, threshold: float = 0.5):
    """The evaluate step's metrics and gate on the labelled rows: (values, skipped, passed, failures)."""
    from keel.components._common.evaluation import metrics

    if task == "regression":
        y_true = labelled[LABEL].astype(float).to_numpy()
        values, skipped = metrics.compute(task, y_true, y_pred=labelled[PREDICTION].astype(float).to_numpy())
    else:
        index = {str(c): i for i, c in enumerate(classes)}
        known = labelled[LABEL].astype(str).isin(index)
        labelled = labelled[known]
        y_true = labelled[LABEL].astype(str).map(index).to_numpy()
        y_pred = labelled[PREDICTION].astype(str).map(index).fillna(-1).astype(int).to_numpy()
        scores = [f"{SCORE_PREFIX}{c}" for c in classes]
        proba = labelled[scores].to_numpy(dtype=float) if labelled[scores].notna().all().all() else None
        values, skipped = metrics.compute(task, y_true, y_pred=y_pred, proba=proba, n_classes=len(classes),
                                          threshold=threshold)
    passed, failures = metrics.gate(values, evaluation, task, skipped)
    return values, skipped, passed, failures


# -- verdict ---------------------------------------------------------------------------------------


@dataclass
class Verdict:
    verdict: str
    reasons: list[str]
    drifted_columns: list[str]
    retrain: bool

    def as_dict(self) -> dict:
        return asdict(self)


def decide(summary: Summary, drifts: list[ColumnDrift], perf: dict | None, age_days: float, section,
           min_labelled: int) -> Verdict:
    """no data > degraded > drift > stale > ok: the worst finding names the verdict, every finding is a reason."""
    if summary.rows == 0 or summary.sample is None or len(summary.sample) == 0:
        return Verdict("no data", ["no answered request was logged in the window"], [], False)
    reasons, found = [], set()
    inputs = [d for d in drifts if d.kind == "input"]
    drifted = [d.column for d in inputs if d.drifted]
    share = len(drifted) / len(inputs) if inputs else 0.0
    if inputs and share >= section.drift_share:
        found.add("drift")
        reasons.append(f"data drift: {len(drifted)} of {len(inputs)} input columns drifted ({share:.0%} >= "
                       f"drift_share {section.drift_share:.0%}): {', '.join(drifted)}")
    elif drifted:
        reasons.append(f"{len(drifted)} of {len(inputs)} input columns drifted, under drift_share "
                       f"{section.drift_share:.0%}: {', '.join(drifted)}")
    moved = [d.column for d in drifts if d.kind == "prediction" and d.drifted]
    if moved:
        found.add("drift")
        reasons.append(f"prediction drift: {', '.join(moved)}")
    answered = summary.rows - sum(summary.rejected.values())
    rejected_share = sum(summary.rejected.values()) / summary.rows
    if rejected_share > section.max_rejected_share:
        found.add("drift")
        top = ", ".join(f"{reason} ({n})" for reason, n in summary.rejected.most_common(3))
        reasons.append(f"serving: {rejected_share:.1%} of rows rejected (max {section.max_rejected_share:.0%}): {top}")
    if answered and summary.warned_rows / answered > section.max_warned_share:
        found.add("drift")
        top = ", ".join(f"{reason} ({n})" for reason, n in summary.warned.most_common(3))
        reasons.append(f"serving: {summary.warned_rows / answered:.1%} of answered rows have a value outside the "
                       f"training data (max {section.max_warned_share:.0%}): {top}")
    if perf is None:
        reasons.append(f"performance not assessed: {summary.labelled_rows} labelled row(s), fewer than {min_labelled}")
    elif not perf["passed"]:
        found.add("degraded")
        reasons.append(f"performance below the evaluate gate on {perf['rows']} labelled rows: {'; '.join(perf['failures'])}")
    if age_days > section.max_age_days:
        found.add("stale")
        reasons.append(f"stale: the model is {age_days:.0f} days old (max_age_days {section.max_age_days})")
    verdict = next((v for v in ("degraded", "drift", "stale") if v in found), "ok")
    if verdict == "ok":
        reasons.insert(0, "every check passed")
    return Verdict(verdict, reasons, drifted, verdict in section.retrain_on)


__all__ = ["META", "Summary", "summarize", "drift", "performance", "decide", "Verdict", "ColumnDrift"]
