"""Fixtures for the register tests: upstream stand-ins (the S3 server fixtures are in components/conftest.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from keel.components._common import lineage, tables

# -- upstream stand-ins ---------------------------------------------------------

FEATURES = ["annual_income", "debt_to_income", "loan_amount", "term", "homeownership", "verified_income"]


@dataclass
class Upstream:
    artifacts: dict  # input name -> Ref, exactly register_model's artifact inputs
    pipeline: object  # the fitted pipeline that trained_model holds
    test: object  # the test frame (features + __label__)


def _stamp(content_hash: str, parents: list | None = None) -> dict:
    return lineage.stamp(content_hash=content_hash, parents=parents or [], params={})


@pytest.fixture
def upstream(tmp_path, loans_sample):
    """Every artifact input of register_model, made from the real loans data."""
    import joblib
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from keel.components.register.register import Ref

    frame = loans_sample[FEATURES + ["grade"]].copy()
    frame["__label__"] = frame.pop("grade").isin(["D", "E", "F", "G"]).astype(int)
    train, test = frame.iloc[:1600].reset_index(drop=True), frame.iloc[1600:].reset_index(drop=True)
    refs = {}

    def dataset(name, data, parents=()):
        path = str(tmp_path / f"{name}.parquet")
        meta = tables.write_parquet(data, path)
        meta.update(_stamp(meta["content_hash"], [{"name": p, "uri": refs[p].uri, "content_hash": refs[p].metadata["content_hash"]} for p in parents]))
        refs[name] = Ref(path, f"s3://pipeline-root/run-1/{name}", meta)

    dataset("raw", loans_sample)
    dataset("valid", loans_sample, ["raw"])
    dataset("cleaned", loans_sample, ["valid"])
    dataset("train", train, ["cleaned"])
    dataset("test", test, ["cleaned"])

    numeric, categorical = FEATURES[:3], FEATURES[3:]
    transformer = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), categorical),
    ])
    pipeline = Pipeline([("features", transformer), ("model", LogisticRegression(max_iter=500))])
    pipeline.fit(train[FEATURES], train["__label__"])
    joblib.dump(pipeline.named_steps["features"], tmp_path / "transformer.joblib")
    # No recorded hash: register must hash the file itself.
    refs["transformer"] = Ref(str(tmp_path / "transformer.joblib"), "s3://pipeline-root/run-1/transformer",
                              {"created_by": "features-step", "parents": [{"name": "train"}]})
    joblib.dump(pipeline, tmp_path / "model.joblib")
    refs["trained_model"] = Ref(str(tmp_path / "model.joblib"), "s3://pipeline-root/run-1/trained_model", {
        **_stamp(lineage.file_sha256(tmp_path / "model.joblib"), [{"name": "transformer"}]),
        "framework": "sklearn", "family": "logistic_regression", "task": "binary",
        "params": {"max_iter": 500.0}, "classes": ["grade_a_to_c", "grade_d_to_g"], "input_columns": FEATURES,
        "n_features": float(len(pipeline.named_steps["features"].get_feature_names_out())), "train_rows": 1600.0,
    })
    schema = {"version": 1, "target": "grade", "columns": {c: {"type": "float", "nullable": True} for c in FEATURES}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    refs["schema"] = Ref(str(tmp_path / "schema.json"), "s3://pipeline-root/run-1/schema", {})
    # KFP keeps Metrics in metadata only: no file at the path.
    refs["metrics"] = Ref(str(tmp_path / "metrics"), "s3://pipeline-root/run-1/metrics",
                          {"accuracy": 0.84, "roc_auc": 0.79, "f1": 0.52, "pr_auc": 0.5,
                           "gate": {"passed": True, "failures": [], "min": {"roc_auc": 0.7}, "max": {}}})
    # The fairness and explain steps' outputs: a gate that passed, and the explainer the real explain logic builds.
    refs["fairness_metrics"] = Ref(str(tmp_path / "fairness"), "s3://pipeline-root/run-1/fairness_metrics", {
        "homeownership.demographic_parity_ratio": 0.86,
        "gate": {"passed": True, "failures": [], "min": {"demographic_parity_ratio": 0.8}, "max": {}},
        "fairness": {"sensitive": ["homeownership"], "four_fifths": {"homeownership": True},
                     "attributes": {"homeownership": {"disparities": {"demographic_parity_ratio": {"value": 0.86}}}}},
        **_stamp("sha256:" + "f" * 64, [{"name": "trained_model"}]),
    })
    from keel.components._common.config import ExplainSection, TargetSection
    from keel.components.explain.explain import explain

    explained = explain(pipeline, train, test, TargetSection(column="grade"), ExplainSection(sample_rows=20),
                        {"task": "binary", "input_columns": FEATURES})
    (tmp_path / "explainer.json").write_text(json.dumps(explained.spec))
    refs["explainer"] = Ref(str(tmp_path / "explainer.json"), "s3://pipeline-root/run-1/explainer",
                            {**explained.metadata(), **_stamp(lineage.file_sha256(tmp_path / "explainer.json"), [{"name": "trained_model"}])})
    (tmp_path / "card.md").write_text("# Model card\n")
    (tmp_path / "card.html").write_text("<!doctype html><title>card</title>")
    for name, file in (("card_md", "card.md"), ("card_html", "card.html")):
        refs[name] = Ref(str(tmp_path / file), f"s3://pipeline-root/run-1/{name}", _stamp(lineage.file_sha256(tmp_path / file)))
    return Upstream(refs, pipeline, test)
