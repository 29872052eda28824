"""Run records (run.json), `keel runs` and `keel report`: a local run inspected like a dashboard run.

The runs are saved runs (tests/test_lineage.py's save_run: real artifacts in
kfp.local's layout, registered through the real register logic); the page is
checked in headless Chromium. The real pipeline run is in test_lineage.py.
"""

import datetime as dt
import importlib.util
import io
import re
import time
from pathlib import Path

import pytest

from keel.components._common.errors import KeelError
from keel.pipelines.config import DEFAULT_CONFIG, load_config, with_overrides
from keel.pipelines.local.progress import ProgressLog
from keel.pipelines.local.runner import steps_for
from keel.pipelines.records.results import collect
from keel.pipelines.records.runs import list_runs, load_record, load_run, write_record

_spec = importlib.util.spec_from_file_location("keel_test_lineage", Path(__file__).with_name("test_lineage.py"))
saved_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(saved_runs)
browser = saved_runs.browser

EARLIER = "keel-training-2026-01-01-09-00-00-000001"
LATER = "keel-training-2026-01-03-09-00-00-000001"


def _config(store: Path):
    return with_overrides(load_config(DEFAULT_CONFIG), {
        "registry.store": str(store), "registry.model_name": saved_runs.MODEL,
        "data.source": "postgresql://ada:s3cret@db.example:5432/lending", "data.table": "loans"})


def _record(saved, *, cached=(), timings=None):
    """What `_run` does at its end: collect the run directory, then write run.json."""
    summary = collect(saved.run_dir)
    summary.cached = list(cached)
    write_record(saved.run_dir, _config(saved.store), summary, timings)
    return load_record(saved.run_dir)


@pytest.fixture
def recorded(tmp_path):
    """A run whose ingest came from kfp.local's cache (its output lives in an earlier run), with run.json."""
    saved = saved_runs.save_run(tmp_path / "store", ingest_run=EARLIER)
    t0 = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc).timestamp()  # when the run's directory name says
    timings = {"started_at": t0, "finished_at": t0 + 12.5, "steps": {
        "ingest-data": {"started_at": t0 + 0.5, "status": "cached"},
        "validate-data": {"started_at": t0 + 1, "finished_at": t0 + 2.5, "status": "succeeded"},
        "train-model": {"started_at": t0 + 4, "finished_at": t0 + 10, "status": "succeeded"}}}
    return saved, _record(saved, cached=["ingest-data"], timings=timings)


def test_the_run_record_lists_every_step_in_pipeline_order_with_its_status(recorded):
    saved, record = recorded
    cfg = _config(saved.store)
    assert record.recorded and record.run_id == saved_runs.RUN_ID and record.config_name == cfg.name
    assert [s.name for s in record.steps] == list(steps_for(cfg))
    status = {s.name: s.status for s in record.steps}
    assert status["ingest-data"] == "cached" and status["validate-data"] == status["register-model"] == "succeeded"
    assert status["profile-data"] == "skipped" and record.step("profile-data").note == "did not run"
    assert set(status.values()) <= {"succeeded", "failed", "cached", "skipped"}
    assert record.seconds == 12.5 and record.step("validate-data").seconds == 1.5 and record.step("train-model").seconds == 6
    assert record.started_at == "2026-01-02T03:04:05.000+00:00" and record.step("clean-data").seconds is None
    assert (record.outcome, record.passed, record.registered["version"]) == ("passed", True, "v1")
    assert record.code_version and record.created_by


def test_a_cached_step_links_the_outputs_it_reused_from_the_earlier_run(recorded):
    saved, record = recorded
    ingest = record.step("ingest-data")
    assert ingest.cached_from == EARLIER
    assert ingest.outputs["raw"]["uri"] == saved.refs["raw"].uri and EARLIER in ingest.outputs["raw"]["uri"]
    assert ingest.outputs["raw"]["metadata"]["content_hash"] == saved.refs["raw"].metadata["content_hash"]
    # ...so the run's lineage is complete although ingest did not run in it
    from keel.pipelines.records.lineage import completeness

    assert completeness(record)["problems"] == []


def test_the_record_keeps_no_password_from_the_config(recorded):
    saved, record = recorded
    text = (saved.run_dir / "run.json").read_text()
    assert "s3cret" not in text and record.arguments["data"]["source"].startswith("postgresql://ada:")
    assert record.arguments["data"]["table"] == "loans"


def test_a_failed_step_fails_the_run_and_the_steps_after_it_did_not_run(tmp_path):
    saved = saved_runs.save_run(tmp_path / "store", register=False)
    (saved.run_dir / "train-model" / "executor_output.json").unlink()  # kfp.local: the step wrote no outputs
    for later in ("evaluate-model", "write-model-card"):
        for path in sorted((saved.run_dir / later).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (saved.run_dir / later).rmdir()
    record = _record(saved)
    status = {s.name: (s.status, s.note) for s in record.steps}
    assert record.outcome == "step failed" and status["train-model"] == ("failed", "")
    assert status["evaluate-model"] == ("skipped", "an earlier step failed")


def test_runs_are_listed_newest_first_and_an_old_run_reads_from_its_steps(tmp_path):
    store = tmp_path / "store"
    # A run from before run.json: gate failed, so kfp.local skipped the gated group; profile came from the cache.
    saved_runs.save_run(store, run_id=EARLIER, register=False, passed=False, log_lines=(
        "09:00:01.000 - INFO - Task \x1b[96m'profile-data'\x1b[0m cache hit",
        "09:00:09.000 - INFO - Skipping conditional task 'condition-2' (condition not met)"))
    later = saved_runs.save_run(store, run_id=LATER)
    _record(later)
    first, second = list_runs(store / "pipeline_root")
    assert (first.run_id, second.run_id) == (LATER, EARLIER)
    assert first.recorded and not second.recorded and second.seconds is None
    assert first.pipeline == second.pipeline == "training"
    assert second.started_at.startswith("2026-01-01T") and second.outcome == "failed gate"
    status = {s.name: s.status for s in second.steps}
    assert status["profile-data"] == "cached" and status["register-model"] == status["deploy-model"] == "skipped"
    assert status["train-model"] == "succeeded" and second.code_version == first.code_version


def test_load_run_takes_latest_an_id_or_a_path_and_names_the_runs_there_are(tmp_path):
    store = tmp_path / "store"
    saved = saved_runs.save_run(store, run_id=LATER)
    root = store / "pipeline_root"
    assert load_run(root, "latest").run_id == LATER
    assert load_run(root, LATER).run_dir == saved.run_dir
    assert load_run(tmp_path / "elsewhere", str(saved.run_dir)).run_id == LATER
    with pytest.raises(KeelError, match=rf"RUN 'nope': .*under {re.escape(str(root))} .*newest: {LATER}"):
        load_run(root, "nope")
    with pytest.raises(KeelError, match=r"holds no local run; run `keel run` first"):
        load_run(tmp_path / "empty", "latest")


def test_progress_log_times_each_step_and_records_cached_and_skipped_ones(tmp_path):
    terminal = io.StringIO()
    progress = ProgressLog(tmp_path / "run.log", terminal, total_steps=4, gated=("register-model", "deploy-model"))
    before = time.time()
    progress.write("INFO - Executing task \x1b[96m'ingest-data'\x1b[0m\n")
    progress.write("INFO - Task \x1b[96m'ingest-data'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n")
    progress.write("INFO - Task 'split-data' cache hit\nINFO - Skipping conditional task 'condition-2' (x)\n")
    progress.close()
    timings = progress.timings()
    ingest = timings["steps"]["ingest-data"]
    assert ingest["status"] == "succeeded" and before <= ingest["started_at"] <= ingest["finished_at"] <= timings["finished_at"]
    assert timings["steps"]["split-data"]["status"] == "cached"
    assert timings["steps"]["register-model"] == timings["steps"]["deploy-model"] == {"status": "skipped"}
    assert timings["started_at"] <= before


def test_off_a_terminal_the_output_is_plain_lines_and_on_one_a_live_bar_follows_the_running_step(tmp_path, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    lines = ["INFO - Executing task 'train-image-model'\n",
             "    keel: epoch epoch=2 train_loss=0.5 val_loss=0.41 val_accuracy=0.88 seconds=1.2\n",
             "INFO - Task 'train-image-model' finished with status SUCCESS\n",
             "INFO - Executing task 'tune-hyperparameters'\n", "tune: trial 3/8 succeeded f1_macro=0.7 {'max_depth': 3}\n",
             "INFO - Task 'tune-hyperparameters' finished with status SUCCESS\n"]
    plain = io.StringIO()
    progress = ProgressLog(tmp_path / "plain.log", plain, total_steps=2)
    for line in lines:
        progress.write(line)
    progress.close()
    assert progress.bar is None and "\x1b[" not in plain.getvalue()
    assert [line.split()[:2] for line in plain.getvalue().splitlines()] == [["[", "1/2]"], ["[", "2/2]"]]

    tty = Tty()
    monkeypatch.setenv("KEEL_PROGRESS", "plain")  # the way out of the live display, on a terminal too
    ProgressLog(tmp_path / "asked.log", tty, total_steps=2).close()
    monkeypatch.delenv("KEEL_PROGRESS")
    progress = ProgressLog(tmp_path / "live.log", tty, total_steps=2)
    assert progress.bar is not None
    seen = []
    for line in lines:
        progress.write(line)
        seen.append(dict(progress.detail))
    progress.close()
    assert seen[1] == {"train-image-model": "epoch 2 val_loss 0.41 val_accuracy 0.88"} and seen[4] == {
        "tune-hyperparameters": "trial 3/8 succeeded"}
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tty.getvalue())
    assert "train-image-model (epoch 2 val_loss 0.41 val_accuracy 0.88)" in drawn and "tune-hyperparameters (trial 3/8" in drawn
    assert "[ 1/2] train-image-model" in drawn and "[ 2/2] tune-hyperparameters" in drawn  # the plain lines print too
    assert "keel: epoch" in (tmp_path / "live.log").read_text()  # and the log keeps everything


def test_a_live_bar_counts_the_iterations_of_a_parallel_for(tmp_path):
    progress = ProgressLog(tmp_path / "run.log", io.StringIO(), total_steps=5, looped=("ingest-partition", "publish-partition"),
                           iterations=2, live=True)
    for _ in range(2):
        progress.write("Executing task 'publish-partition'\nTask 'publish-partition' finished with status SUCCESS\n")
    assert progress.loops_done == 2 and progress.bar.shown[1].endswith("[2/2 iterations]")
    progress.close()


def test_the_run_page_shows_steps_gates_and_links_in_chromium(recorded):
    from keel.pipelines.records.report import write_report

    saved, record = recorded
    page_path = write_report(record)
    assert page_path == saved.run_dir / "report.html"
    html = page_path.read_text()
    assert 'sandbox="" title="evaluate-model / report" srcdoc="' in html and "Evaluation: logistic_regression" in html
    assert 'title="assess-fairness / report"' in html
    result = browser.render(page_path, browser.artifacts_dir() / "run-report-saved-run.png")
    assert result.console_errors == []
    assert result.title == f"Run {saved_runs.RUN_ID}"
    for text in ("Outcome", "Steps", "Metrics", "Gates", "Model card", "Reports", "Artifacts", "passed",
                 f"{saved_runs.MODEL}:v1", "roc_auc", "cached", f"from {EARLIER}", "12.5 s", "1.5 s", "evaluation",
                 "fairness", "cat.demographic_parity_difference <= 0.5", "explainability", "method linear (a linear model)",
                 "100%", *steps_for(_config(saved.store))):
        assert text in result.dom, text
    local = [link for link in result.links if link.startswith("file://")]
    assert len(local) >= 20 and all(Path(link.removeprefix("file://")).exists() for link in local)
    assert any(link.endswith("/ingest-data/raw") and EARLIER in link for link in local)
    assert any(link.endswith("/write-model-card/card_html") for link in local)


def test_keel_runs_and_keel_report(recorded, tmp_path, capsys):
    saved, _ = recorded
    saved_runs.save_run(saved.store, run_id=LATER, register=False, passed=False)
    assert saved_runs.keel("runs", "--store", str(saved.store)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["run", "started"]
    later, ours = lines[1].split(), lines[2].split()
    assert later[0] == LATER and "failed gate" in lines[1] and later[-2:] == ["-", "10/0"]
    assert ours[0] == saved_runs.RUN_ID and ours[3:5] == ["12.5", "s"] and "passed" in ours
    assert f"{saved_runs.MODEL}:v1" in ours and ours[-1] == "11/1"

    out = tmp_path / "pages" / "run.html"
    assert saved_runs.keel("report", saved_runs.RUN_ID, "--store", str(saved.store), "--out", str(out)) == 0
    page, completeness = capsys.readouterr().out.strip().splitlines()
    assert page == str(out) and completeness == "lineage: 18/18 artifacts complete (100%)"
    hrefs = re.findall(r'href="([^"]+)"', out.read_text())
    assert hrefs and all(not h.startswith("/") and "://" not in h for h in hrefs)  # relative: the page can move with the runs
    assert all((out.parent / h).exists() for h in hrefs)


def test_keel_runs_says_when_there_is_none(tmp_path, capsys):
    assert saved_runs.keel("runs", "--store", str(tmp_path / "empty")) == 0
    assert capsys.readouterr().out.strip() == f"no local runs under {tmp_path / 'empty' / 'pipeline_root'}"


def test_a_record_written_by_hand_wrongly_is_refused_by_name(tmp_path):
    saved = saved_runs.save_run(tmp_path / "store", register=False)
    (saved.run_dir / "run.json").write_text("{not json")
    with pytest.raises(KeelError, match=r"run.json: is not a valid run record .*delete it"):
        load_record(saved.run_dir)
