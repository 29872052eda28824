"""The local tuning backend: a Katib Experiment, executed here with Optuna.

The Experiment dict (camelCase, as the Katib SDK serialises it) is the one
definition of a search. On a cluster Katib runs it; here this module reads the
same dict (its parameters, algorithm, early stopping, trial counts, and the
trial container's command and args) and runs every trial as a subprocess of
that very command, parsing its stdout with Katib's StdOut collector rule.
Algorithm names map to the Optuna samplers behind Katib's own suggestion
services (see ARCHITECTURE.md).

Decisions a reader should know:

- Steps. Every metric line a trial prints is one intermediate value; step n
  is the n-th value (1-based), so medianstop's start_step keeps Katib's meaning
  ("results reported before a trial may be stopped"). The objective's
  metricStrategy (latest, max or min) over those values is the trial's result.
- Hyperband. The resource parameter is pinned to r_l (its maximum) in every
  trial, and Optuna's HyperbandPruner stops the weaker ones early, in units of
  reported values (its maximum learnt from the first full trial). That is how
  Hyperband's small budgets appear when a trial reports as it goes.
- Budgets. maxTrialCount counts finished trials (complete + pruned); failed
  ones count against maxFailedTrialCount, and the search stops with a
  DataError once they exceed it (Katib's rule). A missing maxFailedTrialCount
  means maxTrialCount, so a broken trial command cannot loop forever.
- Resume. The study lives in an Optuna journal file in `workdir`, named after
  the Experiment. Running again in the same workdir continues it: finished
  trials are kept, not re-run. Trials cut short by the search itself ending
  (Ctrl-C, an error, the failure budget) are marked FAIL as interrupted, and
  so are trials a killed search left RUNNING; they do not count against
  maxFailedTrialCount (the search died, not the hyperparameters) and their
  parameters run first when the search resumes, so no configuration is lost. A workdir holding a different Experiment (other
  space, objective, algorithm or data) is refused; only the three counts may
  change between runs. A lock file keeps two searches out of one workdir.
- Seeds. algorithmSettings random_state seeds the sampler (run_local's `seed`
  stands in where Katib takes none: sobol, hyperband). With
  parallelTrialCount 1 a fixed seed gives the same trials. A resumed search
  offsets the seed by the trials already in the study, so a seeded random
  sampler does not replay the first trials' parameters.
- The objective goal. Once a complete trial reaches it, no trial is started;
  running ones finish.
- The command. Katib's StdOut collector runs the trial container as
  `sh -c "<command> <args joined by spaces> ..."`, so the Experiment's args are
  shell words (experiment.py quotes the JSON ones); they are split here the
  way that shell would, and the leading `python` becomes this interpreter.
  Each trial's stdout and stderr are kept in `workdir/trials/<number>.*`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from keel.components._common.errors import ConfigError, DataError
from keel.components.tune.plan import Plan, fingerprint

JOURNAL_FILE = "study.journal"
EXPERIMENT_FILE = "experiment.json"
LOCK_FILE = ".search.lock"
TRIAL_LOGS = "trials"
_FINGERPRINT_ATTR = "keel_experiment_sha256"
_INTERRUPTED_ATTR = "keel_interrupted_trials"
_REASON_ATTR = "keel_reason"
_INTERRUPTED = "interrupted: the search stopped before the trial finished; its parameters run again on resume"


@dataclass
class TrialRecord:
    """One trial as the search saw it.

    `value` is the trial's result for COMPLETE; for PRUNED the last value it
    reported; None for FAIL. `reason` says why a trial failed.
    """

    number: int
    params: dict
    value: float | None
    state: str  # COMPLETE, PRUNED, FAIL (RUNNING only while a search runs)
    intermediate: list[float] = field(default_factory=list)
    seconds: float | None = None
    reason: str | None = None


@dataclass
class SearchResult:
    """The search's outcome: the best complete trial and every trial in the study, by number."""

    best_params: dict
    best_value: float
    trials: list[TrialRecord]


def run_local(
    experiment: dict,
    workdir: str | Path,
    *,
    on_trial: Callable[[TrialRecord, int, int], None] | None = None,
    seed: int | None = None,
) -> SearchResult:
    """Runs the Experiment's trials here, with the Optuna sampler and pruner its algorithm maps to.

    Args:
        experiment: the Katib Experiment as a camelCase dict (tune.experiment.experiment_dict).
        workdir: a local directory for the study journal, the trial logs and a copy of the Experiment;
            run again with the same workdir to resume.
        on_trial: called as on_trial(record, done, total) after each trial of this run finishes;
            done counts finished (complete + pruned) trials, total is the trial budget.
        seed: the sampler's seed where the Experiment's algorithmSettings carry no random_state.

    Returns:
        The best complete trial's parameters and value, and every trial of the study.

    Raises:
        ConfigError: the Experiment cannot run locally (the message names the field), or the workdir
            holds another Experiment or another running search.
        DataError: more trials failed than maxFailedTrialCount allows, or none completed.
    """
    plan = Plan.read(experiment)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with _exclusive(workdir), _quiet_optuna():
        return _Search(plan, experiment, workdir, on_trial, seed).run()


def trials_table(result: SearchResult) -> str:
    """The trials as a plain-text table, one row per trial in number order (the CLI prints the best one apart)."""
    names = sorted({name for record in result.trials for name in record.params})
    header = ["#", "state", "value", *names, "seconds", "reason"]
    rows = [[str(r.number), r.state, _cell(r.value), *(_cell(r.params.get(n)) for n in names),
             "" if r.seconds is None else f"{r.seconds:.1f}", r.reason or ""] for r in result.trials]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows])


# -- the search ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(workdir: Path):
    """An advisory lock on the workdir: the kernel drops it when the process dies, even by SIGKILL,
    which is what lets a new search treat RUNNING trials in the journal as abandoned."""
    import fcntl

    with open(workdir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"workdir {workdir}: another local search is running there; wait for it or use another workdir") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_optuna():
    """Optuna logs a line per trial; the CLI draws its own progress from on_trial instead."""
    import optuna

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


class _Search:
    """One run of run_local: the study, the worker threads, and the counts they share under one lock."""

    def __init__(self, plan: Plan, experiment: dict, workdir: Path, on_trial, seed: int | None):
        self.plan, self.workdir, self.on_trial = plan, workdir, on_trial
        self.lock = threading.Lock()
        self.processes: dict[int, subprocess.Popen | None] = {}  # running trials; None until launched
        self.stopping = False  # start no more trials: the goal, the failure budget or an error
        self.killing = False  # running trials are being killed: record them as interrupted
        self.error: BaseException | None = None  # what run() raises once the workers are done
        self.study = self._open_study(experiment, seed)
        self.total = plan.max_trials if self.grid_size is None else min(plan.max_trials, self.grid_size)

    def _open_study(self, experiment: dict, seed: int | None):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        from optuna.trial import TrialState

        storage = JournalStorage(JournalFileBackend(str(self.workdir / JOURNAL_FILE)))
        digest = fingerprint(experiment)
        existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
        recorded = existing[self.plan.name].user_attrs.get(_FINGERPRINT_ATTR) if self.plan.name in existing else None
        if recorded is not None and recorded != digest:
            raise ConfigError(f"workdir {self.workdir}: holds a search for another version of Experiment {self.plan.name!r} "
                              "(its space, objective, algorithm or data changed); use a new workdir")
        previous = existing[self.plan.name].n_trials if self.plan.name in existing else 0
        base_seed = self.plan.settings.get("random_state", seed)
        base_seed = None if base_seed is None else int(base_seed)
        # The QMC sequence is tied to its seed, so sobol keeps it; the others must not replay their first draws.
        sampler_seed = base_seed if base_seed is None or self.plan.algorithm == "sobol" else base_seed + previous
        self.sampler, pruner, self.grid_size = _sampler_and_pruner(self.plan, sampler_seed)
        study = optuna.create_study(storage=storage, study_name=self.plan.name, direction=self.plan.direction,
                                    sampler=self.sampler, pruner=pruner, load_if_exists=True)
        if recorded is None:  # a new study (or one whose first run died before this point)
            from keel.components._common.storage import atomic_write_local

            study.set_user_attr(_FINGERPRINT_ATTR, digest)
            study.set_user_attr("keel_seed", base_seed)
            atomic_write_local(self.workdir / EXPERIMENT_FILE, json.dumps(experiment, indent=2, sort_keys=True, default=str).encode())
        # The workdir lock is ours, so no other search is running: these trials' process is gone.
        abandoned = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        if abandoned:
            study.set_user_attr(_INTERRUPTED_ATTR, _interrupted(study) + [t.number for t in abandoned])
            for trial in abandoned:
                study.tell(trial.number, state=TrialState.FAIL)
                study.enqueue_trial(trial.params, user_attrs={"keel_retry_of": trial.number})
        return study

    def run(self) -> SearchResult:
        with self.lock:
            self._check()  # a resumed search may be over already
        workers = [threading.Thread(target=self._work, name=f"keel-trial-{i}", daemon=True) for i in range(self.plan.parallel)]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                worker.join()
        except BaseException:  # KeyboardInterrupt: end the trials and record them, then let it through
            self._halt()
            for worker in workers:
                worker.join()
            raise
        if self.error is not None:
            raise self.error
        return self._result()

    def _work(self) -> None:
        while True:
            with self.lock:
                if not self._may_start():
                    return
                trial = self.study.ask({p.name: p.distribution for p in self.plan.params})
                self.processes[trial.number] = None
            try:
                record = self._execute(trial)
            except BaseException as err:  # the command could not start, or a bug: stop the search with it
                with self.lock:
                    self.processes.pop(trial.number, None)
                    self._tell_interrupted(trial)
                    self.error = self.error or err
                self._halt()
                return
            with self.lock:
                self.processes.pop(trial.number, None)
                try:
                    self._finish(trial, record)
                except BaseException as err:  # on_trial raised
                    self.error = self.error or err
            if self.error is not None:
                self._halt()
                return

    def _may_start(self) -> bool:
        from optuna.trial import TrialState

        if self.stopping or self.error is not None:
            return False
        trials = self.study.get_trials(deepcopy=False)
        started = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for t in trials)
        if started >= self.total:
            return False
        if self.grid_size is not None and not any(t.state == TrialState.WAITING for t in trials):
            # GridSampler hands out a used point again once all are taken; stop instead.
            assigned = {t.system_attrs["grid_id"] for t in trials if "grid_id" in t.system_attrs}
            return len(assigned) < self.grid_size
        return True

    def _execute(self, trial) -> TrialRecord:
        """Runs one trial's process, reporting each metric value; kills it when the pruner says so."""
        from optuna.trial import TrialState

        params = dict(trial.params)
        argv = self.plan.argv(params)
        logs = self.workdir / TRIAL_LOGS
        logs.mkdir(exist_ok=True)
        values: list[float] = []
        pruned = False
        prunes = self.plan.early_stopping is not None or self.plan.algorithm == "hyperband"
        start = time.monotonic()
        stderr_path = logs / f"{trial.number}.stderr"
        # stderr goes to a file: a chatty trial cannot fill a pipe nobody reads, and hang.
        with open(stderr_path, "wb") as stderr, open(logs / f"{trial.number}.stdout", "w") as stdout_log:
            try:
                process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                           env=self._environment(), start_new_session=True)
            except OSError as err:
                raise ConfigError(f"experiment trial container command: cannot start {argv[0]!r}: {err.strerror}") from None
            with self.lock:
                self.processes[trial.number] = process
                if self.killing:
                    _kill(process)
            for line in process.stdout:
                stdout_log.write(line)
                for value in self.plan.metric_values(line):
                    values.append(value)
                    with self.lock:
                        trial.report(value, step=len(values))
                        pruned = prunes and trial.should_prune()
                    if pruned:
                        _kill(process)
                        break
                if pruned:
                    break
            process.stdout.close()
            returncode = process.wait()
        seconds = time.monotonic() - start
        if pruned:
            return TrialRecord(trial.number, params, values[-1], TrialState.PRUNED.name, values, seconds)
        if returncode == 0 and values:
            return TrialRecord(trial.number, params, self.plan.result(values), TrialState.COMPLETE.name, values, seconds)
        last = _last_line(stderr_path)
        if returncode != 0:
            reason = last or f"exited with status {returncode} and no message"
        else:
            reason = f"printed no {self.plan.metric}=<value> line" + (f"; stderr: {last}" if last else "")
        return TrialRecord(trial.number, params, None, TrialState.FAIL.name, values, seconds, reason)

    def _environment(self) -> dict:
        env = dict(os.environ)
        # Parallel trials share the cores; OpenMP (HistGradientBoosting) starts a
        # thread per core in each, and oversubscribed OpenMP slows several-fold.
        # A user's own setting wins.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env.setdefault("OMP_NUM_THREADS", str(max(1, cores // self.plan.parallel)))
        return env

    def _finish(self, trial, record: TrialRecord) -> None:
        """Tells the study how the trial ended, then checks the goal and the failure budget (under the lock)."""
        from optuna.trial import TrialState

        if self.killing and record.state == TrialState.FAIL.name:
            self._tell_interrupted(trial)  # we killed it: not the hyperparameters' fault
            return
        if record.state == TrialState.FAIL.name:
            trial.set_user_attr(_REASON_ATTR, record.reason)
            self.study.tell(trial, state=TrialState.FAIL)
        elif record.state == TrialState.PRUNED.name:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, record.value)
        self._check()
        if self.on_trial is not None and self.error is None:
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in self.study.get_trials(deepcopy=False))
            self.on_trial(record, done, self.total)

    def _tell_interrupted(self, trial) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr(_REASON_ATTR, _INTERRUPTED)
        self.study.set_user_attr(_INTERRUPTED_ATTR, _interrupted(self.study) + [trial.number])
        self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        self.study.enqueue_trial(trial.params, user_attrs={"keel_retry_of": trial.number})  # the next run starts with it

    def _check(self) -> None:
        """Stops the search at the objective goal, or with a DataError past the failure budget."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        interrupted = set(_interrupted(self.study))
        failed = [t for t in trials if t.state == TrialState.FAIL and t.number not in interrupted]
        if len(failed) > self.plan.max_failed:
            last = failed[-1]
            self.error = self.error or DataError(
                f"tune: {len(failed)} trials failed, more than tune.max_failed_trials ({self.plan.max_failed}); "
                f"trial {last.number}: {last.user_attrs.get(_REASON_ATTR)}; logs in {self.workdir / TRIAL_LOGS}"
            )
        if any(t.state == TrialState.COMPLETE for t in trials) and self.plan.reached(self.study.best_value):
            self.stopping = True

    def _halt(self) -> None:
        with self.lock:
            self.stopping = self.killing = True
            running = [p for p in self.processes.values() if p is not None]
        for process in running:
            _kill(process)

    def _result(self) -> SearchResult:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        interrupted = set(_interrupted(self.study))
        # A WAITING trial is an interrupted one's retry the budget left no room for.
        records = [_record(t, t.number in interrupted) for t in trials if t.state != TrialState.WAITING]
        if not any(t.state == TrialState.COMPLETE for t in trials):
            tally = ", ".join(f"{n} {s}" for s, n in _tally(records).items())
            raise DataError(f"tune: no trial completed ({tally}); see the trial logs in {self.workdir / TRIAL_LOGS}")
        best = self.study.best_trial
        return SearchResult(best_params=dict(best.params), best_value=float(best.value), trials=records)


def _interrupted(study) -> list[int]:
    return list(study.user_attrs.get(_INTERRUPTED_ATTR, []))


def _sampler_and_pruner(plan: Plan, seed: int | None):
    """The Optuna sampler and pruner for the Katib algorithm (ARCHITECTURE.md's mapping), and the grid size."""
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning

    settings, algorithm = plan.settings, plan.algorithm

    def setting(name, kind=int):
        return None if name not in settings else kind(float(settings[name]))

    grid_size = None
    pruner = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # multivariate TPE, QMC and GP are marked experimental
        if algorithm in ("random", "hyperband"):
            sampler = optuna.samplers.RandomSampler(seed=seed)
        elif algorithm in ("tpe", "multivariate-tpe"):
            extra = {k: setting(k) for k in ("n_startup_trials", "n_ei_candidates") if k in settings}
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=algorithm == "multivariate-tpe", **extra)
        elif algorithm == "cmaes":
            if importlib.util.find_spec("cmaes") is None:
                raise ConfigError("tune.algorithm: cmaes runs locally on Optuna's CmaEsSampler, which needs the cmaes package "
                                  "(pip install cmaes); or use tpe")
            sampler = optuna.samplers.CmaEsSampler(seed=seed, sigma0=setting("sigma", float))
        elif algorithm == "sobol":
            # Scrambled, so the seed matters: unscrambled Sobol starts at the space's lower corner for every seed.
            sampler = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)
        elif algorithm == "grid":
            space = {p.name: p.grid for p in plan.params}
            grid_size = math.prod(len(v) for v in space.values())
            sampler = _grid_sampler(space, seed)
        else:  # bayesianoptimization
            if importlib.util.find_spec("torch") is None:
                raise ConfigError("tune.algorithm: bayesianoptimization runs locally on Optuna's GPSampler, which needs torch "
                                  "(not installed); install torch or use tpe")
            extra = {"n_startup_trials": setting("n_initial_points")} if "n_initial_points" in settings else {}
            sampler = optuna.samplers.GPSampler(seed=seed, **extra)
    if algorithm == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=setting("eta") or 3)
    elif plan.early_stopping is not None:
        early = plan.early_stopping
        pruner = optuna.pruners.MedianPruner(n_startup_trials=int(early.get("min_trials_required", 3)),
                                             n_warmup_steps=int(early.get("start_step", 4)))
    else:
        pruner = optuna.pruners.NopPruner()
    return sampler, pruner, grid_size


def _grid_sampler(space: dict, seed: int | None):
    """Optuna's GridSampler, less its study.stop() after the last point: that call works only inside
    study.optimize, and this search stops by itself once every point has run (_Search._may_start)."""
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            return None

    return GridSampler(space, seed=seed)


def _kill(process: subprocess.Popen) -> None:
    """Kills the trial and anything it started (it leads its own session)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _last_line(path: Path) -> str | None:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 8192))
        lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else None


def _record(trial, interrupted: bool) -> TrialRecord:
    steps = sorted(trial.intermediate_values)
    seconds = None
    if trial.datetime_start and trial.datetime_complete:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    reason = _INTERRUPTED if interrupted else trial.user_attrs.get(_REASON_ATTR)
    return TrialRecord(number=trial.number, params=dict(trial.params), value=trial.value, state=trial.state.name,
                       intermediate=[trial.intermediate_values[s] for s in steps], seconds=seconds, reason=reason)


def _tally(records: list[TrialRecord]) -> dict:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.state] = counts.get(record.state, 0) + 1
    return counts


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
