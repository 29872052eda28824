"""The monitoring pipeline's first step: which model, which window, and the reference it is checked against.

The model version is the one in production per the stage log (or
`monitoring.version`); the window is the `window_days` that end at the run's
execution date; the reference is the exact dataset version the model was
trained on, found through the bundle's lineage and re-hashed on load, with the
model's own predictions on it (the reference for prediction drift).
Everything a later step needs is written to the step's artifacts, so the
check step never reads the store's traffic again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from keel.components._common import storage
from keel.components._common.config import MonitoringSection, RegistrySection
from keel.components._common.errors import ConfigError, DataError
from keel.components.monitor import checks, labels, window


@dataclass(frozen=True)
class Target:
    """The model version a monitoring run checks, and what it needs from the bundle."""

    model: str
    version: int
    bundle: object  # keel.components._common.registry.bundle.Bundle

    @property
    def task(self) -> str:
        return self.bundle.info["task"]

    @property
    def classes(self) -> list:
        return self.bundle.classes


def window_bounds(execution_date: str, window_days: float, *, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC: end is the execution date (a bare date means the end of that day; empty: now)."""
    text = (execution_date or "").strip()
    if not text:
        end = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    else:
        try:
            if len(text) == 10:
                end = dt.datetime.combine(dt.date.fromisoformat(text) + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
            else:
                parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
                end = (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
        except ValueError:
            raise ConfigError(f"execution_date: {execution_date!r} is not a date (YYYY-MM-DD) or an ISO timestamp") from None
    return end - dt.timedelta(days=window_days), end


def resolve(section: MonitoringSection, registry: RegistrySection) -> Target:
    """The version to check (production unless pinned) and its verified bundle; one-line errors otherwise."""
    from keel.components._common.registry import stages
    from keel.components._common.registry.bundle import load_bundle

    model = registry.model_name
    version = section.version or stages.production_version(registry.store, model)
    if version is None:
        raise ConfigError(f"registry.model_name: {model!r} has no version in production in {registry.store}; "
                          f"promote one (`keel deploy {model}:vN`) or set monitoring.version")
    bundle = load_bundle(registry.store, model, version)
    if bundle.modality != "tabular":
        raise ConfigError(f"registry.model_name: {model}:v{version} is an {bundle.modality} model; monitoring checks tabular models")
    unknown = sorted(set(section.columns) - set(bundle.input_columns))
    if unknown:
        raise ConfigError(f"monitoring.columns: {', '.join(map(repr, unknown))} not input column(s) of {model}:v{version} "
                          f"(its schema has {', '.join(bundle.input_columns[:12])}{' ...' if len(bundle.input_columns) > 12 else ''})")
    dataset = (bundle.lineage or {}).get("dataset") or {}
    if not dataset.get("name") or not dataset.get("version"):
        raise ConfigError(f"registry.model_name: {model}:v{version} has no training dataset in its lineage, so there is "
                          "no reference to check drift against; retrain it with Keel's training pipeline")
    return Target(model, int(version), bundle)


def reference_frame(target: Target, store: str, rows: int, seed: int):
    """The reference: rows of the training dataset version (hash-checked), sampled to `rows`, with the
    model's predictions on them; which rows they are ("test split" or "dataset"); and a note when something
    is less than ideal.

    The rows are the model's held-out test split when its lineage still finds it (the split step's artifact,
    hash-checked): they come from the same dataset version, and only on rows it never fitted does a model
    score as it will score new traffic; on its own training rows it is surer, and that alone reads as
    prediction drift. When the split is gone, the whole dataset version is the reference and the note says
    that prediction drift is then measured against optimistic scores.
    """
    from keel.components._common import datasets

    dataset = target.bundle.lineage["dataset"]
    frame, note, source = _held_out(target), None, "test split"
    if frame is None:
        source = "dataset"
        table, _ = datasets.load(store, dataset["name"], dataset["version"])
        frame = table.to_pandas()
        note = ("reference: the whole training dataset (its test split is no longer in the pipeline root), so the "
                "prediction reference includes rows the model was fitted on")
    missing = [c for c in target.bundle.input_columns if c not in frame.columns]
    if missing:
        raise DataError(f"{dataset['name']}@{dataset['version'][:19]}: lacks input column(s) {missing[:5]} of "
                        f"{target.model}:v{target.version}")
    if len(frame) > rows:
        frame = frame.sample(n=rows, random_state=seed)
    frame = frame[target.bundle.input_columns].reset_index(drop=True)
    try:
        predictions, proba = _predict(target, frame)
    except Exception as err:  # noqa: BLE001 - any failure to score only costs prediction drift, and is reported
        return frame, source, f"prediction drift not measured: the model could not score the reference " \
                              f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})"
    scored = checks.prediction_frame(predictions, proba, target.classes)
    return frame.join(scored), source, note


def _held_out(target: Target):
    """The test split the model was evaluated on, if its lineage names one that still reads and hashes the same."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keel.components._common import tables

    record = ((target.bundle.lineage or {}).get("artifacts") or {}).get("test") or {}
    uri = str(record.get("uri") or "")
    if not uri or not record.get("content_hash"):
        return None
    uri = "s3://" + uri.removeprefix("minio://") if uri.startswith("minio://") else uri  # KFP's name for its bucket
    try:
        table = pq.read_table(pa.BufferReader(storage.read_bytes(uri)))
    except Exception:  # noqa: BLE001 - gone or unreadable: the dataset version is the reference instead
        return None
    return table.to_pandas() if tables.arrow_hash(table) == record["content_hash"] else None


def _predict(target: Target, frame):
    import numpy as np

    model = target.bundle.model
    values = model.predict(frame)
    if target.task == "regression":
        return [float(v) for v in values], None
    proba = np.asarray(model.predict_proba(frame), dtype=float) if hasattr(model, "predict_proba") else None
    return [target.classes[int(c)] for c in values], proba


def collect(section: MonitoringSection, registry: RegistrySection, execution_date: str, *, window_path: str,
            labelled_path: str, reference_path: str, summary_path: str, now: dt.datetime | None = None) -> dict:
    """Reads the window once (counts, samples, labels) and writes the four artifacts; returns the summary."""
    target = resolve(section, registry)
    start, end = window_bounds(execution_date, section.window_days, now=now)
    columns, classes = target.bundle.input_columns, target.classes
    stored = labels.stored_labels(registry.store, target.model)
    attach = (lambda frame: labels.attach(frame, stored)) if stored is not None else None
    types = {c: ((target.bundle.schema.get("columns") or {}).get(c) or {}).get("type") for c in columns}
    frames = window.read_window(registry.store, target.model, str(target.version), start, end, columns, classes, types=types)
    summary = checks.summarize(frames,
                               target.bundle.schema, columns, section.sample_rows, attach, seed=section.seed)
    reference, source, note = reference_frame(target, registry.store, section.reference_rows, section.seed)
    _write_parquet(summary.sample, window_path)
    _write_parquet(summary.labelled, labelled_path)
    _write_parquet(reference, reference_path)
    created = dt.datetime.fromisoformat(target.bundle.info["created_at"])
    record = {
        "model": target.model, "version": target.version, "bundle_hash": target.bundle.bundle_hash,
        "task": target.task, "classes": classes, "input_columns": columns,
        "window": {"start": start.isoformat(), "end": end.isoformat(), "days": section.window_days},
        "rows": summary.rows, "calls": summary.calls, "answered_rows": summary.rows - sum(summary.rejected.values()),
        "rejected": dict(summary.rejected.most_common()), "warned": dict(summary.warned.most_common()),
        "warned_rows": summary.warned_rows,
        "labelled_rows": summary.labelled_rows, "per_day": dict(sorted(summary.per_day.items())),
        "first_request": summary.first.isoformat() if summary.first else None,
        "last_request": summary.last.isoformat() if summary.last else None,
        "sample_rows": 0 if summary.sample is None else len(summary.sample),
        "reference": {**{k: target.bundle.lineage["dataset"][k] for k in ("name", "version")}, "rows": len(reference),
                      "rows_from": source},
        "reference_note": note,
        "age_days": (end - created).total_seconds() / 86400,
        "schema": target.bundle.schema,
        "evaluation": (target.bundle.lineage.get("config") or {}).get("evaluation") or {},
        "target": (target.bundle.lineage.get("config") or {}).get("target") or {},
        "labels_stored": 0 if stored is None else len(stored),
    }
    storage.write_bytes(summary_path, json.dumps(record, indent=1, default=str).encode())
    return record


def _write_parquet(frame, path: str) -> None:
    """A sample as Parquet (an empty file of no columns when there is none: the step's output must exist)."""
    import pandas as pd

    (frame if frame is not None else pd.DataFrame()).to_parquet(path, index=False)
