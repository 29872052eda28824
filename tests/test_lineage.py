"""`keel lineage`: the chain of a registered version, its HTML graph, and the lineage completeness of a run.

The fast tests work on a saved run: a kfp.local-shaped run directory whose
steps wrote real artifacts (Parquet, a fitted scikit-learn pipeline, HTML
reports) stamped exactly as the components stamp them, registered through the
real register logic. The slow test runs the default pipeline on a sample.
"""

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel.components._common import datasets, lineage, tables
from keel.components._common.config import RegistrySection
from keel.components.register import register as reg
from keel.components.register.register import Ref
from testkit import browser


MODEL = "loans-lineage"
SOURCE = "/data/loans.csv"
RUN_ID = "keel-training-2026-01-02-03-04-05-000006"


# -- a saved run ----------------------------------------------------------------------------------


@dataclass
class SavedRun:
    store: Path
    root: Path  # the pipeline root: <store>/pipeline_root
    run_dir: Path
    refs: dict  # register input name -> Ref
    version: int | None


class _Steps:
    """Writes step outputs and each step's executor_output.json, as kfp.local lays them out."""

    def __init__(self, root: Path, run_id: str):
        self.root, self.run_id = root, run_id
        self.outputs: dict[tuple[str, str], dict] = {}  # (run id, step) -> executor output payload

    def path(self, step: str, output: str, run_id: str | None = None) -> Path:
        path = self.root / (run_id or self.run_id) / step / output
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, step: str, output: str, path: Path, meta: dict, parents: list, params: dict | None = None,
            content_hash: str | None = None, run_id: str | None = None) -> Ref:
        digest = content_hash or meta.get("content_hash") or lineage.file_sha256(path)
        references = [p if isinstance(p, dict) else lineage.parent(*p) for p in parents]  # (name, Ref) or a reference
        meta = {**meta, **lineage.stamp(content_hash=digest, parents=references, params=params)}
        payload = self.outputs.setdefault((run_id or self.run_id, step), {"artifacts": {}, "parameterValues": {}})
        payload["artifacts"][output] = {"artifacts": [{"name": output, "uri": str(path), "metadata": meta}]}
        return Ref(str(path), str(path), meta)

    def parameter(self, step: str, name: str, value) -> None:
        self.outputs.setdefault((self.run_id, step), {"artifacts": {}, "parameterValues": {}})["parameterValues"][name] = value

    def finish(self) -> None:
        for (run_id, step), payload in self.outputs.items():
            (self.root / run_id / step / "executor_output.json").write_text(json.dumps(payload))


def save_run(store: Path, *, run_id: str = RUN_ID, ingest_run: str | None = None, register: bool = True,
             passed: bool = True, log_lines: tuple[str, ...] = ()) -> SavedRun:
    """A finished training run under <store>/pipeline_root: ingest .. evaluate, card, register, deploy.

    Args:
        ingest_run: write ingest's output into this (earlier) run instead, as kfp.local's cache leaves it.
        register: publish the model (register + deploy steps); False stops after the model card.
        passed: the evaluation gate's verdict.
        log_lines: the run's keel-run.log.
    """
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from keel.components._common.report import page

    root = store / "pipeline_root"
    steps = _Steps(root, run_id)
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"x1": rng.normal(size=80), "x2": rng.normal(size=80), "cat": rng.choice(["a", "b"], size=80)})
    frame["__label__"] = (frame["x1"] + 0.3 * rng.normal(size=80) > 0).astype(int)
    refs: dict[str, Ref] = {}

    def table(step, output, data, parents, run=None, extra=None):
        path = steps.path(step, output, run)
        meta = {**tables.write_parquet(data, str(path)), **(extra or {})}
        return steps.add(step, output, path, meta, parents, run_id=run)

    raw_path = steps.path("ingest-data", "raw", ingest_run)
    raw_meta = tables.write_parquet(frame, str(raw_path))
    record = datasets.publish(str(store), "loans", str(raw_path), raw_meta, {"uri": SOURCE})
    raw_meta.update(source=SOURCE, dataset={k: record[k] for k in ("name", "version", "uri", "rows")})
    # as ingest stamps it: read from the source into a dataset version
    refs["raw"] = steps.add("ingest-data", "raw", raw_path, raw_meta, [
        {"name": "source", "uri": SOURCE}, {"name": "dataset", "uri": record["uri"], "content_hash": record["version"]}],
        run_id=ingest_run)
    refs["valid"] = table("validate-data", "valid", frame, [("data", refs["raw"])],
                          extra={"rows_in": 80, "rows_out": 80, "rows_quarantined": 0, "violations": 0})
    schema = steps.path("validate-data", "schema")
    schema.write_text(json.dumps({"version": 1, "target": "__label__", "columns": {c: {"type": "float"} for c in ("x1", "x2")}}))
    refs["schema"] = steps.add("validate-data", "schema", schema, {}, [("data", refs["raw"])])
    refs["cleaned"] = table("clean-data", "cleaned", frame, [("data", refs["valid"])])
    train, test = frame.iloc[:60].reset_index(drop=True), frame.iloc[60:].reset_index(drop=True)
    refs["train"] = table("split-data", "train", train, [("data", refs["cleaned"])])
    refs["test"] = table("split-data", "test", test, [("data", refs["cleaned"])])

    features = ColumnTransformer([("num", StandardScaler(), ["x1", "x2"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["cat"])])
    model = Pipeline([("features", features), ("model", LogisticRegression())]).fit(train[["x1", "x2", "cat"]], train["__label__"])
    transformer = steps.path("engineer-features", "transformer")
    joblib.dump(model.named_steps["features"], transformer)
    refs["transformer"] = steps.add("engineer-features", "transformer", transformer, {"framework": "sklearn"}, [("train", refs["train"])])
    matrix = pd.DataFrame(model.named_steps["features"].transform(train[["x1", "x2", "cat"]]))
    matrix.columns = [f"f{i}" for i in range(matrix.shape[1])]
    train_features = table("engineer-features", "train_features", matrix,
                           [("train", refs["train"]), ("transformer", refs["transformer"])])
    model_path = steps.path("train-model", "trained_model")
    joblib.dump(model, model_path)
    refs["trained_model"] = steps.add("train-model", "trained_model", model_path, {
        "framework": "sklearn", "family": "logistic_regression", "task": "binary", "classes": [0, 1],
        "input_columns": ["x1", "x2", "cat"]}, [("train_features", train_features), ("transformer", refs["transformer"])],
        params={"C": 1.0})
    gate = {"passed": passed, "failures": [] if passed else ["roc_auc 0.95 < 0.99"], "min": {"roc_auc": 0.5 if passed else 0.99}, "max": {}}
    metrics_path = steps.path("evaluate-model", "metrics")
    metrics_path.write_text(json.dumps({"accuracy": 0.9, "roc_auc": 0.95}))
    evaluated = [("trained_model", refs["trained_model"]), ("test", refs["test"])]
    refs["metrics"] = steps.add("evaluate-model", "metrics", metrics_path, {"accuracy": 0.9, "roc_auc": 0.95, "gate": gate}, evaluated)
    report_path = steps.path("evaluate-model", "report")
    report_path.write_text(page("Evaluation: logistic_regression (binary)", [("Result", '<p class="pass">PASSED</p>')]))
    steps.add("evaluate-model", "report", report_path, dict(gate), evaluated)
    steps.parameter("evaluate-model", "Output", passed)
    fair_gate = {"passed": True, "failures": [], "min": {}, "max": {"cat.demographic_parity_difference": 0.5}}
    fair_path = steps.path("assess-fairness", "metrics")
    fair_path.write_text(json.dumps({"cat.demographic_parity_difference": 0.1}))
    refs["fairness_metrics"] = steps.add("assess-fairness", "metrics", fair_path, {
        "cat.demographic_parity_difference": 0.1, "gate": fair_gate, "fairness": {"sensitive": ["cat"], "attributes": {}}}, evaluated)
    fair_report = steps.path("assess-fairness", "report")
    fair_report.write_text(page("Fairness: cat", [("Result", '<p class="pass">PASSED</p>')]))
    steps.add("assess-fairness", "report", fair_report, dict(fair_gate), evaluated)
    steps.parameter("assess-fairness", "Output", True)
    explainer = steps.path("explain-model", "explainer")
    explainer.write_text(json.dumps({"method": "linear", "features": ["x1", "x2", "cat"]}))
    refs["explainer"] = steps.add("explain-model", "explainer", explainer, {"method": "linear", "reason": "a linear model",
                                                                            "output": "log-odds"},
                                  [("trained_model", refs["trained_model"]), ("train", refs["train"])])
    card_parents = [("raw", refs["raw"]), ("trained_model", refs["trained_model"]), ("metrics", refs["metrics"])]
    for output, text in (("card_md", "# Model card\n"), ("card_html", page("Model card", [("Model", "<p>logistic regression</p>")]))):
        path = steps.path("write-model-card", output)
        path.write_text(text)
        refs[output] = steps.add("write-model-card", output, path, {"title": "Model card"}, card_parents)
    for name in reg.INPUT_ARTIFACTS:  # inputs register gained after this test was written: small stamped JSON
        if name not in refs:
            path = steps.path(f"make-{name}", name)
            path.write_text(json.dumps({"name": name}))
            refs[name] = steps.add(f"make-{name}", name, path, {}, [("trained_model", refs["trained_model"])])
    version = None
    if register:
        registry = RegistrySection.parse({"store": str(store), "model_name": MODEL}, "registry")
        registered = reg.register({n: refs[n] for n in reg.INPUT_ARTIFACTS}, {"data": {"source": SOURCE}}, registry, "binary")
        version = registered.version
        bundle_dir = steps.path("register-model", "bundle")
        reg.write_local_copy(registered, str(bundle_dir))
        bundle_hash = registered.manifest["bundle_hash"]
        bundle = steps.add("register-model", "bundle", bundle_dir, {
            "model_name": MODEL, "version": registered.label, "registry_uri": registered.uri, "bundle_hash": bundle_hash},
            [(n, refs[n]) for n in reg.INPUT_ARTIFACTS], content_hash=bundle_hash)
        steps.parameter("register-model", "Output", registered.label)
        manifest = steps.path("deploy-model", "manifest")
        manifest.write_text(f"apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {{name: {MODEL}}}\n")
        steps.add("deploy-model", "manifest", manifest, {"name": MODEL, "namespace": "keel-dev", "action": "rendered",
                                                         "reason": "deploy.enabled is false"}, [("bundle", bundle)])
        steps.parameter("deploy-model", "Output", "rendered")
    steps.finish()
    run_dir = root / run_id
    (run_dir / "keel-run.log").write_text("".join(line + "\n" for line in log_lines))
    return SavedRun(store, root, run_dir, refs, version)


def keel(*argv: str) -> int:
    """Runs the governance commands as `keel` parses them (keel.pipelines.cli.governance)."""
    from keel.pipelines.cli import governance as governance_cli

    parser = argparse.ArgumentParser(prog="keel")
    governance_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return governance_cli.COMMANDS[args.command](args)


@pytest.fixture
def saved(tmp_path) -> SavedRun:
    return save_run(tmp_path / "store")


# -- the chain ------------------------------------------------------------------------------------


def _by_name(lin):
    return {n.name: n for n in lin.nodes.values()}


def test_the_chain_runs_from_the_source_through_every_artifact_to_the_deployment(saved):
    from keel.pipelines.records.lineage import chain

    lin = chain(str(saved.store), MODEL, "latest")
    nodes = _by_name(lin)
    assert lin.version == 1 and lin.run_id == RUN_ID
    assert {"source", "dataset version", "raw", "valid", "cleaned", "train", "test", "transformer", "train_features",
            "trained_model", "metrics", "fairness_metrics", "explainer", "card_md", "card_html", "schema", "bundle v1",
            "deployment"} <= set(nodes)
    # train_features is not in lineage.json: it comes from the run that registered the version
    assert nodes["train_features"].step == "engineer-features"
    edges = {(lin.nodes[a].name, lin.nodes[b].name) for a, b in lin.edges}
    assert {("source", "dataset version"), ("dataset version", "raw"), ("raw", "valid"), ("valid", "cleaned"),
            ("cleaned", "train"), ("train", "transformer"), ("train_features", "trained_model"),
            ("trained_model", "metrics"), ("trained_model", "bundle v1"), ("bundle v1", "deployment")} <= edges
    dataset = nodes["dataset version"]
    assert dataset.content_hash == saved.refs["raw"].metadata["dataset"]["version"] and nodes["source"].uri == SOURCE
    order = [n.name for n in lin.ordered()]
    assert order[0] == "source" and order[-2:] == ["deployment", "stage: candidate"]  # the run's manifest, then the stage log
    assert order.index("raw") < order.index("cleaned") < order.index("trained_model") < order.index("bundle v1")
    assert nodes["raw"].content_hash == saved.refs["raw"].metadata["content_hash"]
    text = "\n".join(lin.lines())
    assert nodes["trained_model"].short_hash in text and saved.refs["trained_model"].uri in text


def test_without_its_run_the_chain_still_holds_what_the_bundle_recorded(saved, tmp_path):
    from keel.pipelines.records.lineage import chain

    lin = chain(str(saved.store), MODEL, 1, root=tmp_path / "elsewhere")
    nodes = _by_name(lin)
    assert lin.run_id is None and "deployment" not in nodes
    assert {"source", "raw", "trained_model", "bundle v1"} <= set(nodes)
    # the feature matrix is known only by the model's reference to it
    assert nodes["train_features"].detail == "not found in any local run"


def test_stage_events_follow_the_bundle_in_the_chain_and_the_page(saved, tmp_path):
    from keel.components._common.registry import stages
    from keel.pipelines.records import lineage_html
    from keel.pipelines.records.lineage import chain

    store = str(saved.store)
    assert [e["to"] for e in stages.history(store, MODEL, 1)] == ["candidate"]  # registration starts the stage log
    stages.transition(store, MODEL, 1, "approved", "Ada Lovelace", "reviewed the fairness report")
    stages.transition(store, MODEL, 1, "production", "Ada Lovelace", "quarterly release", target="keel-dev/loans-lineage")
    lin = chain(store, MODEL, "v1")
    assert [(e["from"], e["to"]) for e in lin.events] == [(None, "candidate"), ("candidate", "approved"), ("approved", "production")]
    tail = lin.ordered()[-3:]
    assert [n.name for n in tail] == ["stage: candidate", "stage: approved", "deployed: production"]
    assert tail[1].created_by == "Ada Lovelace" and "reviewed the fairness report" in tail[1].detail
    assert tail[2].kind == "deployment" and "keel-dev/loans-lineage" in tail[2].detail
    html = lineage_html.render(lin)
    assert "quarterly release" in html and "Ada Lovelace" in html


def test_the_graph_is_laid_out_left_to_right_without_overlaps(saved):
    from keel.pipelines.records import lineage_html
    from keel.pipelines.records.lineage import chain

    lin = chain(str(saved.store), MODEL, "latest")
    where = lineage_html.layout(lin)
    assert set(where) == set(lin.nodes)
    for a, b in lin.edges:
        assert where[a][0] < where[b][0], (lin.nodes[a].name, lin.nodes[b].name)
    boxes = sorted(where.values())
    assert len(set(boxes)) == len(boxes)
    svg = lineage_html.svg(lin)
    assert svg.count('<g class="node"') == len(lin.nodes) and "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_the_lineage_page_renders_in_chromium_with_no_console_errors(saved, tmp_path):
    from keel.pipelines.records import lineage_html
    from keel.pipelines.records.lineage import chain

    lin = chain(str(saved.store), MODEL, "latest")
    page_path = lineage_html.write(lin, tmp_path / "lineage.html")
    result = browser.render(page_path, browser.artifacts_dir() / "lineage-saved-run.png")
    assert result.console_errors == []
    assert result.title == f"Lineage of {MODEL}:v1"
    for text in ("Graph", "Chain", "Stage events", "trained_model", "train_features", "bundle v1", "deployment",
                 _by_name(lin)["trained_model"].short_hash):
        assert text in result.dom, text
    assert result.screenshot.stat().st_size > 10_000


def test_keel_lineage_prints_the_chain_and_writes_the_page(saved, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert keel("lineage", f"{MODEL}:latest", "--store", str(saved.store)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{MODEL}:v1") and RUN_ID in out[0]
    assert any(line.split()[0] == "trained_model" for line in out[1:-1])
    page_path = tmp_path / f"lineage-{MODEL}-v1.html"
    assert out[-1] == f"wrote {page_path}" and "<svg" in page_path.read_text()


def test_keel_lineage_names_the_versions_there_are(saved):
    from keel.components._common.errors import KeelError

    with pytest.raises(KeelError, match=r"has no v7 .*versions: v1"):
        keel("lineage", f"{MODEL}:v7", "--store", str(saved.store))


# -- completeness ---------------------------------------------------------------------------------


def test_every_artifact_of_the_saved_run_has_a_complete_lineage(saved):
    from keel.pipelines.records.lineage import completeness

    result = completeness(saved.run_dir, store=str(saved.store))
    assert result["problems"] == []
    assert result["total"] == result["complete"] >= 15 and result["share"] == 1.0


def test_completeness_names_a_missing_stamp_key_and_an_orphan_parent(saved):
    from keel.pipelines.records.lineage import completeness

    output_file = saved.run_dir / "train-model" / "executor_output.json"
    payload = json.loads(output_file.read_text())
    meta = payload["artifacts"]["trained_model"]["artifacts"][0]["metadata"]
    del meta["created_by"]
    meta["parents"][0] = {"name": "train_features", "uri": "/elsewhere/features", "content_hash": "sha256:" + "0" * 64}
    output_file.write_text(json.dumps(payload))
    result = completeness(saved.run_dir, store=str(saved.store))
    assert result["complete"] == result["total"] - 1
    assert result["problems"] == [
        "train-model/trained_model: lineage key 'created_by' is missing",
        "train-model/trained_model: parent 'train_features' (/elsewhere/features) is not an artifact of this run, "
        "a dataset version or its source",
    ]


def test_a_dataset_parent_must_be_a_stored_version(saved):
    from keel.pipelines.records.lineage import completeness

    record = datasets.versions(str(saved.store), "loans")[0]
    Path(record["uri"]).parent.joinpath(datasets.RECORD_FILE).unlink()  # the version's record is gone from the store
    problems = completeness(saved.run_dir, store=str(saved.store))["problems"]
    assert problems == [f"ingest-data/raw: parent 'dataset' ({record['uri']}) is not an artifact of this run, "
                        "a dataset version or its source"]


# -- a real run -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_default_run_has_complete_lineage_and_browsable_pages(tmp_path, monkeypatch, capsys):
    from keel.pipelines.config import DEFAULT_CONFIG, load_config, with_overrides
    from keel.pipelines.records.lineage import completeness
    from keel.pipelines.local.runner import run_local, steps_for
    from keel.pipelines.records.runs import load_run

    store = tmp_path / "store"
    cfg = with_overrides(load_config(DEFAULT_CONFIG), {"registry.store": str(store), "data.sample_rows": 600,
                                                      "evaluation.min": {}})
    summary = run_local(cfg, warm_start=False)
    result = completeness(summary)
    with capsys.disabled():  # the measure: the share of a default run's artifacts with complete lineage
        print(f"\nlineage completeness of a default run: {result['complete']}/{result['total']} artifacts")
    assert result["problems"] == [] and result["share"] == 1.0 and result["total"] >= 20
    record = load_run(store / "pipeline_root", "latest")
    assert record.run_id == summary.run_dir.name and record.outcome == "passed"
    assert [s.name for s in record.steps] == list(steps_for(cfg))
    assert all(s.seconds is not None and s.seconds >= 0 for s in record.steps if s.status == "succeeded")
    capsys.readouterr()

    assert keel("runs", "--store", str(store)) == 0
    listing = capsys.readouterr().out
    assert summary.run_dir.name in listing and f"{cfg.registry.model_name}:v1" in listing

    assert keel("report", "latest", "--store", str(store)) == 0
    page, completeness = capsys.readouterr().out.strip().splitlines()
    report_path = Path(page)
    assert report_path == summary.run_dir / "report.html"
    assert re.fullmatch(r"lineage: (\d+)/\1 artifacts complete \(100%\)", completeness), completeness  # none orphaned
    shown = browser.render(report_path, browser.artifacts_dir() / "run-report-default-run.png")
    assert shown.console_errors == [] and shown.title == f"Run {summary.run_dir.name}"
    for text in ("Steps", "Metrics", "Gates", "passed", "v1", "evaluate-model", "register-model", "roc_auc", "100%"):
        assert text in shown.dom, text
    local = [link for link in shown.links if link.startswith("file://")]
    assert local and all(Path(link.removeprefix("file://").replace("%20", " ")).exists() for link in local)

    monkeypatch.chdir(tmp_path)
    assert keel("lineage", "latest", "--store", str(store)) == 0
    out = capsys.readouterr().out
    page_path = Path(out.strip().splitlines()[-1].removeprefix("wrote "))
    shown = browser.render(page_path, browser.artifacts_dir() / "lineage-default-run.png")
    assert shown.console_errors == [] and shown.title == f"Lineage of {cfg.registry.model_name}:v1"
    for text in ("source", "raw", "cleaned", "trained_model", "bundle v1", "deployment"):
        assert text in shown.dom, text
