"""The local backend: a Katib Experiment dict executed with Optuna, trial by trial, as subprocesses.

Two kinds of trial command:
- the real one (`python -m keel.components.tune.trial` on engineered loans
  features, Experiments from experiment.build_experiment) for the searches
  whose outcome depends on real training: a search end to end, medianstop
  pruning, a failing hyperparameter;
- a stand-in script (standard library only, ~50 ms a trial, metric values
  fixed by its flags) for the mechanics that need many trials or exact
  control: every algorithm, seeds, budgets, goal, interrupt and resume.
"""

import copy
import fcntl
import json
import os
import textwrap

import joblib
import optuna
import pytest

from keel.components._common import tables
from keel.components._common.config import ModelSection, TargetSection, TuneSection
from keel.components._common.errors import ConfigError, DataError
from testkit.models import stage_inputs
from keel.components.tune import local
from keel.components.tune.experiment import TrialData, build_experiment, experiment_dict
from keel.components.tune.local import SearchResult, TrialRecord, run_local, trials_table

BINARY = TargetSection(column="grade", positive_values=["D", "E", "F", "G"])

STAND_IN = textwrap.dedent('''
    """A stand-in trial: score = 1 - (x - 0.3)^2 - (y - 5)^2 / 100, reported in `steps` rising values."""
    import os, sys

    flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
    if "log" in flags:  # one line per run, so a test can count executions
        with open(flags["log"], "a") as log:
            log.write(" ".join(a for a in sys.argv[1:] if not a.startswith("--log=")) + "\\n")
    mode = flags.get("mode", "ok")
    if mode == "fail":
        print("Traceback (most recent call last):", file=sys.stderr)
        print("boom: this trial cannot train", file=sys.stderr)
        sys.exit(3)
    if mode == "silent":
        sys.exit(0)
    ready, hold = flags.get("ready", ""), flags.get("hold", "")
    if mode == "block" and os.path.exists(hold):
        with open(flags["pidfile"], "w") as out:
            out.write(str(os.getpid()))
        with open(ready, "w") as fifo:  # waits for the "ok" trial to open the other end
            fifo.write("started")
        open(hold).read()  # nobody ever writes: blocks until killed
    elif os.path.exists(ready):
        open(ready).read()  # returns once the "block" trial is running
    x, y, steps = float(flags.get("x", 0.3)), float(flags.get("y", 5)), int(flags.get("steps", 5))
    score = 1 - (x - 0.3) ** 2 - (y - 5) ** 2 / 100
    print("evaluating score on the validation set")  # names the metric, has no value: not a metric line
    for step in range(1, steps + 1):
        print(f"step={step} loss={1 - score:.4f} score={score - (steps - step) * 0.01:.6f}", flush=True)
''')

X = {"parameterType": "double", "feasibleSpace": {"min": "0.0", "max": "1.0", "step": "0.25"}}
Y = {"parameterType": "int", "feasibleSpace": {"min": "1", "max": "9"}}


@pytest.fixture(autouse=True)
def _one_thread_per_trial(monkeypatch):
    # Two pytest workers share the cores; trials keep a user's OMP_NUM_THREADS, and
    # oversubscribed OpenMP (HistGradientBoosting) slows several-fold.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    path = tmp_path_factory.mktemp("stand_in") / "trial.py"
    path.write_text(STAND_IN)
    return str(path)


def _experiment(stand_in, name="search", *, algorithm="random", params=None, settings=None, fixed=(), early=None,
                goal=None, max_trials=6, parallel=2, max_failed=0) -> dict:
    """A minimal Experiment of the contract's shape whose trial runs the stand-in."""
    params = copy.deepcopy(params or {"x": X, "y": Y})  # tests may change the dict; X and Y are shared
    settings = {"random_state": 7} if settings is None else settings
    spec = {
        "objective": {"type": "maximize", "objectiveMetricName": "score",
                      "metricStrategies": [{"name": "score", "value": "latest"}], **({"goal": goal} if goal is not None else {})},
        "algorithm": {"algorithmName": algorithm, "algorithmSettings": [{"name": k, "value": str(v)} for k, v in settings.items()]},
        "parameters": [{"name": n, **p} for n, p in params.items()],
        "maxTrialCount": max_trials, "parallelTrialCount": parallel, "maxFailedTrialCount": max_failed,
        "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
        "trialTemplate": {
            "primaryContainerName": "training-container",
            "trialParameters": [{"name": n, "reference": n, "description": n} for n in params],
            "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "training-container", "image": "keel:test", "command": ["python"],
                 "args": [stand_in, *fixed, *(f"--{n}=${{trialParameters.{n}}}" for n in params)]}]}}}},
        },
    }
    if early:
        spec["earlyStopping"] = {"algorithmName": "medianstop",
                                 "algorithmSettings": [{"name": k, "value": str(v)} for k, v in early.items()]}
    return {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": name}, "spec": spec}


def _states(result: SearchResult) -> list[str]:
    return [t.state for t in result.trials]


# ---- real trials -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(loans, tmp_path_factory) -> TrialData:
    frame = loans.sample(n=2000, random_state=0).reset_index(drop=True)  # the loans_sample rows, module-scoped
    parts = stage_inputs(frame, frame["grade"].isin(BINARY.positive_values).astype(int))
    folder = tmp_path_factory.mktemp("features")
    tables.write_parquet(parts["train_features"], str(folder / "train.parquet"))
    tables.write_parquet(parts["validation_features"], str(folder / "validation.parquet"))
    joblib.dump(parts["transformer"], folder / "transformer.joblib")
    return TrialData(str(folder / "train.parquet"), str(folder / "validation.parquet"), str(folder / "transformer.joblib"))


def _real(data, tune: dict, params: dict | None = None) -> dict:
    section = TuneSection.parse(tune, "tune")
    model = ModelSection(family="gradient_boosting", params=params or {})
    return experiment_dict(build_experiment("loans", section, model, BINARY, data, "keel-trainer:test"))


def test_search_over_real_trials_returns_the_best_complete_trial(data, tmp_path):
    experiment = _real(data, {"algorithm": "tpe", "max_trials": 4, "parallel_trials": 2, "seed": 3, "parameters": {
        "learning_rate": {"type": "double", "min": 0.02, "max": 0.3, "log": True},
        "max_iter": {"type": "int", "min": 10, "max": 30},
        "max_leaf_nodes": {"type": "categorical", "values": [7, 31]}}})
    progress = []
    result = run_local(experiment, tmp_path, on_trial=lambda record, done, total: progress.append((record.number, done, total)))

    assert _states(result) == ["COMPLETE"] * 4
    assert sorted(done for _, done, _ in progress) == [1, 2, 3, 4] and {total for *_, total in progress} == {4}
    best = max(result.trials, key=lambda t: t.value)
    assert (result.best_value, result.best_params) == (best.value, best.params)
    for record in result.trials:
        assert 0.02 <= record.params["learning_rate"] <= 0.3 and 10 <= record.params["max_iter"] <= 30
        assert record.params["max_leaf_nodes"] in (7, 31)  # categorical values come back typed
        assert len(record.intermediate) == 10 and record.value == record.intermediate[-1]  # latest: the last line
        assert (tmp_path / "trials" / f"{record.number}.stdout").read_text().count("roc_auc=") == 10
    table = trials_table(result).splitlines()
    assert table[0].split() == ["#", "state", "value", "learning_rate", "max_iter", "max_leaf_nodes", "seconds", "reason"]
    assert [line.split()[:2] for line in table[1:]] == [[str(t.number), "COMPLETE"] for t in result.trials]
    assert json.loads((tmp_path / "experiment.json").read_text()) == experiment  # what ran, kept beside the journal


def test_medianstop_prunes_a_trial_far_worse_than_the_median(data, tmp_path):
    # log_loss after a few iterations: learning_rate 0.0001 barely moves from the prior, far above the other two.
    # The grid's order is fixed by its seed (numpy's RandomState shuffle): the bad point runs last.
    experiment = _real(data, {
        "algorithm": "grid", "max_trials": 3, "parallel_trials": 1, "seed": 5,
        "objective": {"metric": "log_loss", "direction": "minimize"},
        "early_stopping": {"min_trials_required": 2, "start_step": 2},
        "parameters": {"learning_rate": {"type": "categorical", "values": [0.3, 0.2, 0.0001]}}}, {"max_iter": 20})
    result = run_local(experiment, tmp_path)

    assert [(t.params["learning_rate"], t.state) for t in result.trials] == [(0.3, "COMPLETE"), (0.2, "COMPLETE"), (0.0001, "PRUNED")]
    pruned = result.trials[2]
    assert len(pruned.intermediate) == 2  # stopped at start_step: the first step it could be
    assert pruned.value == pruned.intermediate[-1]
    assert result.best_value == min(t.value for t in result.trials[:2])  # minimize: pruned trials never count as best


def test_a_failing_real_trial_is_recorded_and_the_search_goes_on(data, tmp_path):
    experiment = _real(data, {"algorithm": "grid", "max_trials": 2, "parallel_trials": 2, "max_failed_trials": 1, "parameters": {
        "max_leaf_nodes": {"type": "categorical", "values": [1, 15]}}}, {"max_iter": 10})
    result = run_local(experiment, tmp_path)

    by_value = {t.params["max_leaf_nodes"]: t for t in result.trials}
    assert by_value[15].state == "COMPLETE" and result.best_params == {"max_leaf_nodes": 15}
    assert by_value[1].state == "FAIL" and by_value[1].value is None
    assert by_value[1].reason.startswith("keel: error: [tune_trial] model.params.max_leaf_nodes: must be an int in the range [2, inf)")


# ---- every algorithm ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["random", "tpe", "multivariate-tpe", "cmaes", "sobol", "grid", "hyperband"])
def test_each_algorithm_searches_the_loans_data(data, tmp_path, algorithm):
    """Every Katib algorithm, run locally, on real features: real trial processes, real scores."""
    space = {"learning_rate": {"type": "double", "min": 0.05, "max": 0.2, "step": 0.05},
             "max_iter": {"type": "int", "min": 10, "max": 30, "step": 10}}
    tune = {"algorithm": algorithm, "max_trials": 2, "parallel_trials": 2, "seed": 1, "parameters": space}
    if algorithm == "hyperband":
        tune["resource"] = "max_iter"
    result = run_local(_real(data, tune), tmp_path)
    assert _states(result) == ["COMPLETE", "COMPLETE"]
    for record in result.trials:
        assert min(abs(record.params["learning_rate"] - v) for v in (0.05, 0.1, 0.15, 0.2)) < 1e-9  # on the step grid
        assert record.params["max_iter"] in (10, 20, 30)
        assert 0.5 < record.value < 1.0  # a real validation ROC-AUC
    assert result.best_value == max(t.value for t in result.trials)


@pytest.mark.parametrize("algorithm", ["random", "tpe", "multivariate-tpe", "cmaes", "sobol", "grid"])
def test_each_algorithm_searches_the_experiments_space(stand_in, tmp_path, algorithm):
    result = run_local(_experiment(stand_in, algorithm=algorithm, max_trials=6), tmp_path)

    assert _states(result) == ["COMPLETE"] * 6
    for record in result.trials:
        assert record.params["x"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # double with step 0.25
        assert type(record.params["y"]) is int and 1 <= record.params["y"] <= 9
        assert record.value == pytest.approx(1 - (record.params["x"] - 0.3) ** 2 - (record.params["y"] - 5) ** 2 / 100, abs=1e-6)
    assert result.best_value == max(t.value for t in result.trials)
    if algorithm == "grid":
        assert len({(t.params["x"], t.params["y"]) for t in result.trials}) == 6  # no point twice


def test_grid_stops_when_every_point_has_run(stand_in, tmp_path):
    params = {"x": {"parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "0.3", "step": "0.1"}},
              "y": {"parameterType": "categorical", "feasibleSpace": {"list": ["4", "5"]}}}
    result = run_local(_experiment(stand_in, algorithm="grid", params=params, max_trials=20), tmp_path)

    # Decimal steps: 0.1, 0.2, 0.3 exactly, not 0.30000000000000004.
    assert sorted((t.params["x"], t.params["y"]) for t in result.trials) == [
        (0.1, 4), (0.1, 5), (0.2, 4), (0.2, 5), (0.3, 4), (0.3, 5)]


def test_sampled_values_reach_the_trial_as_the_flags_katib_would_substitute(stand_in, tmp_path):
    runs = tmp_path / "runs.log"
    params = {"x": {"parameterType": "double", "feasibleSpace": {"min": "0", "max": "1", "step": "0.5"}},
              "z": {"parameterType": "categorical", "feasibleSpace": {"list": ["4", "True", "sqrt"]}}}
    run_local(_experiment(stand_in, algorithm="grid", params=params, fixed=[f"--log={runs}"], max_trials=9), tmp_path / "work", seed=1)
    # Doubles keep their decimal point (the trial would read --x=1 as an int); categorical values go as listed.
    assert sorted(runs.read_text().splitlines()) == sorted(f"--x={x} --z={z}" for x in ("0.0", "0.5", "1.0") for z in ("4", "True", "sqrt"))


def test_hyperband_pins_the_resource_and_stops_weak_trials_early(stand_in, tmp_path):
    params = {"x": X, "y": Y, "steps": {"parameterType": "int", "feasibleSpace": {"min": "1", "max": "9"}}}
    settings = {"resource_name": "steps", "r_l": 9, "eta": 3}
    result = run_local(_experiment(stand_in, algorithm="hyperband", params=params, settings=settings, max_trials=10, parallel=1),
                       tmp_path, seed=5)

    assert {t.params["steps"] for t in result.trials} == {9}  # every trial gets the full budget (r_l)
    pruned = [t for t in result.trials if t.state == "PRUNED"]
    assert pruned and all(len(t.intermediate) < 9 for t in pruned)
    assert all(len(t.intermediate) == 9 for t in result.trials if t.state == "COMPLETE")


@pytest.mark.parametrize("algorithm, sampler, pruner", [
    ("random", "RandomSampler", "NopPruner"), ("tpe", "TPESampler", "NopPruner"),
    ("multivariate-tpe", "TPESampler", "NopPruner"), ("cmaes", "CmaEsSampler", "NopPruner"),
    ("sobol", "QMCSampler", "NopPruner"), ("grid", "GridSampler", "NopPruner"),
    ("hyperband", "RandomSampler", "HyperbandPruner"),
])
def test_katib_algorithms_map_to_the_optuna_samplers_behind_katib(stand_in, algorithm, sampler, pruner):
    params = {"x": X, "y": Y}
    settings = {"random_state": 7}
    if algorithm == "hyperband":
        params["steps"] = Y
        settings = {"resource_name": "steps", "r_l": 9, "eta": 3}
    plan = local.Plan.read(_experiment(stand_in, algorithm=algorithm, params=params, settings=settings))
    built, prune, _ = local._sampler_and_pruner(plan, 7)
    assert (type(built).__name__, type(prune).__name__) == (sampler, pruner)
    if algorithm == "multivariate-tpe":
        assert built._multivariate
    plan = local.Plan.read(_experiment(stand_in, early={"min_trials_required": 4, "start_step": 2}))
    _, median, _ = local._sampler_and_pruner(plan, 7)
    assert type(median).__name__ == "MedianPruner" and (median._n_startup_trials, median._n_warmup_steps) == (4, 2)


def test_bayesianoptimization_without_torch_is_one_clear_line(stand_in, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    with pytest.raises(ConfigError) as caught:
        run_local(_experiment(stand_in, algorithm="bayesianoptimization"), tmp_path)
    assert str(caught.value) == ("tune.algorithm: bayesianoptimization runs locally on Optuna's GPSampler, which needs torch "
                                 "(not installed); install torch or use tpe")
    assert not (tmp_path / "trials").exists()  # refused before any trial ran


# ---- seeds, budgets, goal ----------------------------------------------------------------------


def test_the_same_seed_gives_the_same_trials_one_at_a_time(stand_in, tmp_path):
    def params(workdir, seed):
        experiment = _experiment(stand_in, algorithm="tpe", settings={"random_state": seed, "n_startup_trials": 3},
                                 max_trials=7, parallel=1)
        return [t.params for t in run_local(experiment, tmp_path / workdir).trials]

    first = params("a", 11)
    assert params("b", 11) == first  # past the 3 random start-up trials too: TPE's own choices repeat
    assert params("c", 12) != first


def test_a_trial_that_exits_non_zero_fails_with_its_last_stderr_line(stand_in, tmp_path):
    params = {"x": X, "mode": {"parameterType": "categorical", "feasibleSpace": {"list": ["ok", "fail"]}}}
    result = run_local(_experiment(stand_in, algorithm="grid", params=params, max_trials=10, max_failed=5), tmp_path)

    failed = [t for t in result.trials if t.state == "FAIL"]
    assert len(failed) == 5 and all(t.params["mode"] == "fail" for t in failed)
    assert {t.reason for t in failed} == {"boom: this trial cannot train"}
    assert all(t.params["mode"] == "ok" for t in result.trials if t.state == "COMPLETE")


def test_a_trial_that_prints_no_metric_fails(stand_in, tmp_path):
    with pytest.raises(DataError) as caught:
        run_local(_experiment(stand_in, params={"x": X}, fixed=["--mode=silent"], max_trials=3, parallel=1, max_failed=1), tmp_path)
    assert "; trial 1: printed no score=<value> line; " in str(caught.value)


def test_more_failures_than_allowed_stop_the_search_with_a_data_error(stand_in, tmp_path):
    with pytest.raises(DataError) as caught:
        run_local(_experiment(stand_in, fixed=["--mode=fail"], max_trials=6, parallel=2, max_failed=1), tmp_path)
    assert str(caught.value).startswith("tune: 2 trials failed, more than tune.max_failed_trials (1); trial ")
    assert str(caught.value).endswith(f": boom: this trial cannot train; logs in {tmp_path / 'trials'}")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / local.JOURNAL_FILE)))
    trials = optuna.load_study(study_name="search", storage=storage).trials
    started = [t for t in trials if t.state != optuna.trial.TrialState.WAITING]  # waiting: a killed trial's retry
    assert len(started) <= 3 and all(t.state.is_finished() for t in started)  # stopped at once; nothing left running


def test_the_search_stops_at_the_objective_goal(stand_in, tmp_path):
    result = run_local(_experiment(stand_in, goal=-100, max_trials=5, parallel=1), tmp_path)
    assert _states(result) == ["COMPLETE"]  # the first trial reached it


# ---- interrupt and resume ----------------------------------------------------------------------


def test_resume_after_a_kill_runs_only_the_remaining_trials(stand_in, tmp_path):
    runs = tmp_path / "runs.log"
    workdir = tmp_path / "work"

    def search(max_trials):
        return run_local(_experiment(stand_in, fixed=[f"--log={runs}"], max_trials=max_trials, parallel=1), workdir)

    first = search(3)
    assert len(runs.read_text().splitlines()) == 3
    # A search killed mid-trial leaves that trial RUNNING in the journal.
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(workdir / local.JOURNAL_FILE)))
    study = optuna.load_study(study_name="search", storage=storage)
    study.enqueue_trial({"x": 0.75, "y": 9})  # fixed, so the test does not depend on an unseeded draw
    killed = study.ask(
        {"x": optuna.distributions.FloatDistribution(0.0, 1.0, step=0.25), "y": optuna.distributions.IntDistribution(1, 9)})

    resumed = search(5)  # maxFailedTrialCount 0: the interrupted trial is not counted as a failure
    executed = runs.read_text().splitlines()[3:]
    assert len(executed) == 2  # finished trials are not re-run: one retry, one new trial
    assert [(t.number, t.params, t.value) for t in resumed.trials[:3]] == [(t.number, t.params, t.value) for t in first.trials]
    assert (resumed.trials[3].number, resumed.trials[3].state) == (killed.number, "FAIL")
    assert resumed.trials[3].reason.startswith("interrupted:")
    retry, new = resumed.trials[4:]
    assert retry.params == killed.params and retry.state == new.state == "COMPLETE"
    assert new.params not in [t.params for t in first.trials] + [killed.params]  # the seed moved on, not replayed

    again = search(5)
    assert len(runs.read_text().splitlines()) == 5  # nothing left to run
    assert [t.params for t in again.trials] == [t.params for t in resumed.trials]


def test_an_interrupted_search_kills_its_trials_and_a_rerun_retries_them(stand_in, tmp_path):
    ready, hold, pidfile = tmp_path / "ready", tmp_path / "hold", tmp_path / "pid"
    os.mkfifo(ready)
    os.mkfifo(hold)
    params = {"mode": {"parameterType": "categorical", "feasibleSpace": {"list": ["ok", "block"]}}}
    fixed = [f"--ready={ready}", f"--hold={hold}", f"--pidfile={pidfile}"]
    experiment = _experiment(stand_in, algorithm="grid", params=params, fixed=fixed, max_trials=2, parallel=2)

    def stop(record, done, total):
        raise KeyboardInterrupt  # the user pressed Ctrl-C while the "block" trial was running

    with pytest.raises(KeyboardInterrupt):
        run_local(experiment, tmp_path / "work", on_trial=stop)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)  # the blocked trial was killed, not left behind

    os.unlink(ready)
    os.unlink(hold)
    result = run_local(experiment, tmp_path / "work")
    assert sorted((t.params["mode"], t.state) for t in result.trials) == [("block", "COMPLETE"), ("block", "FAIL"), ("ok", "COMPLETE")]
    assert result.trials[-1].params["mode"] == "block" and result.trials[-1].state == "COMPLETE"  # the retry, run on resume
    assert next(t for t in result.trials if t.state == "FAIL").reason.startswith("interrupted:")


def test_a_workdir_holding_another_search_is_refused(stand_in, tmp_path):
    run_local(_experiment(stand_in, max_trials=1, parallel=1), tmp_path)
    changed = _experiment(stand_in, params={"x": X}, max_trials=1, parallel=1)
    with pytest.raises(ConfigError, match=r"^workdir .*: holds a search for another version of Experiment 'search' "):
        run_local(changed, tmp_path)
    with open(tmp_path / local.LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # another process's search, as far as run_local can tell
        with pytest.raises(ConfigError, match=r"^workdir .*: another local search is running there"):
            run_local(_experiment(stand_in, max_trials=1, parallel=1), tmp_path)


# ---- reading the Experiment --------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    (lambda s: s["algorithm"].update(algorithmName="pbt"), r"spec\.algorithm\.algorithmName: 'pbt' does not run locally"),
    (lambda s: s["algorithm"]["algorithmSettings"].append({"name": "gamma", "value": "0.1"}),
     r"spec\.algorithm\.algorithmSettings: gamma not supported locally for random"),
    (lambda s: s["parameters"][0]["feasibleSpace"].update(distribution="normal"), r"\(x\)\.feasibleSpace\.distribution: 'normal'"),
    (lambda s: s["parameters"][1]["feasibleSpace"].update(min="1.5"), r"\(y\)\.feasibleSpace\.min: '1\.5' is not a whole number"),
    (lambda s: s.pop("maxTrialCount"), r"spec\.maxTrialCount: required for a local search"),
    (lambda s: s["trialTemplate"]["trialParameters"].pop(), r"\$\{trialParameters\.y\} is not in spec\.trialTemplate\.trialParameters"),
    (lambda s: s["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["args"].append("--q='open"),
     r"trial container command/args: No closing quotation"),
])
def test_an_experiment_that_cannot_run_locally_is_one_line_naming_the_field(stand_in, tmp_path, change, message):
    experiment = _experiment(stand_in)
    change(experiment["spec"])
    with pytest.raises(ConfigError, match=rf"^experiment .*{message}"):
        run_local(experiment, tmp_path)


def test_metric_lines_are_read_as_katibs_collector_reads_them(stand_in):
    plan = local.Plan.read(_experiment(stand_in))
    assert plan.metric_values("step=3 loss=0.12 score=0.875") == [0.875]
    assert plan.metric_values("score=-7.5e-05") == [-7.5e-05]
    assert plan.metric_values("score = .98") == [0.98]
    assert plan.metric_values("evaluating score on the validation set") == []
    assert plan.metric_values("score=nan") == []
    assert plan.metric_values("best_score=0.9 other=1") == []  # another metric's name, not a prefix match


def test_the_trials_table_has_a_row_per_trial_and_a_column_per_parameter():
    result = SearchResult({"x": 0.25}, 0.5, [TrialRecord(0, {"x": 0.25}, 0.5, "COMPLETE", [0.4, 0.5], 1.25),
                                             TrialRecord(1, {"x": 1.0}, None, "FAIL", [], 0.5, "boom")])
    assert trials_table(result).splitlines() == [
        "#  state     value  x     seconds  reason",
        "0  COMPLETE  0.5    0.25  1.2",
        "1  FAIL             1     0.5      boom",
    ]
